"""Kernel parameters under ``net.`` (``net.ipv4.ip_forward`` ...)."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Final

import attrs

from k3snet._regex import lazy_pattern
from k3snet.errors import ModelError
from k3snet.model._base import NetObject

__all__ = ["ALIASES", "SPREADING", "SPREADING_INVERTED", "Sysctl", "contradicting_aliases",
           "is_secret", "owned_apart", "redact_secrets", "register_redaction", "shown_value",
           "sysctl_name", "sysctl_path", "value_problem"]

# /proc/sys reads and writes at most a page; the longest net.* values are a few words.
_MAX_VALUE = 4096
_COMPONENT = re.compile(r"[A-Za-z0-9_\-@+.]+")
_DOTS_AND_SLASHES = str.maketrans("./", "/.")


SPREADING: Final = {
    "net.ipv4.ip_forward": "net/ipv4/conf",
    "net.ipv4.conf.all.forwarding": "net/ipv4/conf",
    "net.ipv6.conf.all.forwarding": "net/ipv6/conf",
    "net.ipv6.conf.all.disable_ipv6": "net/ipv6/conf",
    "net.ipv6.conf.all.ignore_routes_with_linkdown": "net/ipv6/conf",
}
"""Sysctls whose write the kernel spreads: it sets the same switch (``forwarding`` for
``ip_forward``) of ``default`` and of every interface under the directory named
(``inet_forward_change``, ``addrconf_fixup_forwarding``, ``addrconf_disable_ipv6``,
``addrconf_fixup_linkdown``), whatever they held."""

ALIASES: Final = {
    "net.ipv4.ip_forward": "net.ipv4.conf.all.forwarding",
    "net.ipv4.conf.all.forwarding": "net.ipv4.ip_forward",
}
"""Two names of one kernel value (``ipv4_devconf.data[IPV4_DEVCONF_FORWARDING - 1]``): a
write of either is read back under both."""

# The documented values of the switches pod egress touches, by family and leaf of
# net.<family>.conf.<interface>.<leaf> (net.ipv4.ip_forward is IPv4's forwarding): a
# BOOLEAN (None here) is 0 or any other integer for on; the others are a few levels.
# The kernel stores any integer in all of them (proc_dointvec, no bounds): rp_filter 3
# and -1 are taken and read back, and act as loose and as the other level's value.
_INTEGER = re.compile(r"-?[1-9][0-9]*|0")
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1  # the kernel's int, which proc_dointvec holds
_DOCUMENTED: Final[Mapping[tuple[str, str], tuple[int, int] | None]] = {
    **dict.fromkeys((("ipv4", leaf) for leaf in (
        "forwarding", "accept_redirects", "secure_redirects", "send_redirects",
        "accept_source_route", "accept_local", "route_localnet", "src_valid_mark",
        "proxy_arp", "log_martians", "ignore_routes_with_linkdown")), None),
    ("ipv4", "rp_filter"): (0, 2),
    ("ipv4", "arp_announce"): (0, 2),
    **dict.fromkeys((("ipv6", leaf) for leaf in (
        "forwarding", "disable_ipv6", "accept_redirects", "ignore_routes_with_linkdown")),
                    None),
    ("ipv6", "accept_ra"): (0, 2),
}


def value_problem(name: str, value: str | int) -> str | None:
    """Why ``value`` is none of the documented values of sysctl ``name`` (``None``: it is
    one, or ``name`` is not a switch whose values k3snet knows; ip-sysctl.rst).

    The model takes any value the kernel may show (its current one is read into it)
    but a number it never shows so (:class:`Sysctl`); a spec is checked here too: the
    kernel stores a level out of range as given.

    >>> value_problem("net.ipv4.conf.all.rp_filter", 3)
    "net.ipv4.conf.all.rp_filter takes 0, 1 or 2 (ip-sysctl.rst), got '3'"
    >>> print(value_problem("net.ipv4.ip_forward", 4294967296))  # doctest: +ELLIPSIS
    net.ipv4.ip_forward takes 0 (off) or another integer (on) from ... got '4294967296'
    >>> value_problem("net.ipv4.ip_forward", "1") is None
    True

    A number written otherwise than the kernel writes it back is one in any sysctl
    (the problem :class:`Sysctl` refuses it with):

    >>> value_problem("net.ipv4.tcp_fin_timeout", "0x1e").endswith("in decimal, 30")
    True
    """
    canonical = _name(name)
    normal = _value(value, canonical)
    problem = _number_problem(canonical, normal)
    sysctl = Sysctl(canonical, normal) if problem is None else None
    if sysctl is None or (problem := _refused_list(sysctl.name, sysctl.value)) is not None:
        return problem
    parts = sysctl.path.split("/")
    if parts == ["net", "ipv4", "ip_forward"]:
        key = ("ipv4", "forwarding")
    elif len(parts) == 5 and parts[2] == "conf":
        key = (parts[1], parts[4])
    else:
        return None
    if key not in _DOCUMENTED:
        return None
    span = _DOCUMENTED[key]
    if span is None:
        # Within the kernel's int: 4294967296 passed here, and proc_dointvec refuses it.
        if _INTEGER.fullmatch(sysctl.value) and _INT_MIN <= int(sysctl.value) <= _INT_MAX:
            return None
        takes = f"0 (off) or another integer (on) from {_INT_MIN} to {_INT_MAX}"
    else:
        choices = [str(n) for n in range(span[0], span[1] + 1)]
        if sysctl.value in choices:
            return None
        takes = f"{', '.join(choices[:-1])} or {choices[-1]}"
    return f"{sysctl.name} takes {takes} (ip-sysctl.rst), got {sysctl.value!r}"


# What the kernel's integer handlers (proc_dointvec and its kin: simple_strtoul with base
# 0 after an optional "-") read as a number, or refuse as one: 0x1 is 1 and 010 is 8,
# read back in decimal; +2 and 09 are EINVAL.
_NUMBER_LIKE = lazy_pattern(r"[-+]?(?:0[xX][0-9a-fA-F]+|[0-9]+)")
# The CPU bitmaps, which the kernel reads and shows in hexadecimal (bitmap_parse, %*pb).
# Not every name ending in "mask": net.ipv4.icmp_ratemask is an integer (proc_dointvec)
# that shows 0x1818 as 6168, net.ipv6.icmp.ratemask a list of numbers (01 shown as 1).
_HEXADECIMAL: Final = frozenset({"net.core.rps_default_mask", "net.core.flow_limit_cpu_bitmap"})


# Sysctls holding a fixed number of integers (proc_dointvec and its kin on an array): the
# kernel sets as many as were written, keeps the others as they were and ignores any past
# the last ("10000" in ip_local_port_range is shown "10000 60999"), by name: how many.
_VECTORS: Final = {
    **dict.fromkeys(("net.ipv4.ip_local_port_range", "net.ipv4.ping_group_range"), 2),
    **dict.fromkeys(("net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem", "net.ipv4.tcp_mem",
                     "net.ipv4.udp_mem", "net.sctp.sctp_mem", "net.sctp.sctp_rmem",
                     "net.sctp.sctp_wmem"), 3),
}
# Sets of numbers written and shown as a list of numbers and ranges (proc_do_large_bitmap),
# by name: the highest number. The kernel shows them sorted, the neighbours merged
# ("30000-32767,1000,1001" is "1000-1001,30000-32767"), numbers read as the integer
# handlers read them (0x20 as 32).
_NUMBER_SETS: Final = {"net.ipv4.ip_local_reserved_ports": 65535, "net.ipv6.icmp.ratemask": 255}
_SET_SEPARATORS = lazy_pattern(r"[,-]")
# TCP Fast Open's keys (proc_tcp_fastopen_key: sscanf "%x-%x-%x-%x", a backup key after a
# comma), shown as lower-case groups of 8 digits: "ABCDEF01-2-3-4" is
# "abcdef01-00000002-00000003-00000004".
_FASTOPEN_KEY: Final = "net.ipv4.tcp_fastopen_key"
_FASTOPEN_GROUPS = lazy_pattern(r"(?:0[xX])?([0-9a-fA-F]{1,8})")
# Times the kernel keeps in ticks of its clock (HZ: 100, 250, 300 or 1000 a second) and
# shows converted back, rounded to a tick (1001 ms is 1004 at HZ=250), by the last part of
# the name: the multiple shown as written. proc_dointvec_ms_jiffies (ms: 20 ms is 2, 5, 6
# or 20 ticks; 1010 is 1012 at HZ=250) and proc_dointvec_userhz_jiffies (hundredths of a
# second, USER_HZ: an odd number is half a tick at HZ=250, and at HZ=300
# jiffies_to_clock_t's TICK_NSEC of 3333333 ns shows every one 1 less, 100 as 99). Not
# IPv6's neigh retrans_time: ndisc_ifinfo_sysctl_change keeps it in ticks as written
# (proc_dointvec), shown as written.
_TICKED: Final = {
    **dict.fromkeys(("base_reachable_time_ms", "retrans_time_ms", "interval_probe_time_ms",
                     "icmp_ratelimit", "ratelimit", "gc_min_interval_ms",
                     "tcp_invalid_ratelimit", "mldv1_unsolicited_report_interval",
                     "mldv2_unsolicited_report_interval"), (20, "ms")),
    **dict.fromkeys(("locktime", "anycast_delay", "proxy_delay", "retrans_time"),
                    (2, "hundredths of a second")),
}
_TICKED_PATH = lazy_pattern(
    r"net/ipv[46]/neigh/[^/]+/(?:base_reachable_time_ms|retrans_time_ms|"
    r"interval_probe_time_ms|locktime|anycast_delay|proxy_delay)|"
    r"net/ipv4/neigh/[^/]+/retrans_time|"
    r"net/ipv6/conf/[^/]+/mldv[12]_unsolicited_report_interval|"
    r"net/ipv4/(?:icmp_ratelimit|tcp_invalid_ratelimit|route/gc_min_interval_ms)|"
    r"net/ipv6/icmp/ratelimit|net/ipv6/route/gc_min_interval_ms")
# Sysctls the kernel shows otherwise than written, in a form k3snet cannot foresee, by name:
# the form it takes. Held to a value, each was written again by every plan.
_UNHOLDABLE: Final = {
    "net.ipv4.tcp_allowed_congestion_control": (
        "the kernel shows the allowed algorithms in its own order (that of "
        "tcp_available_congestion_control, in which their modules registered), loaded "
        "ones only, never as written, and takes it in the host's network namespace "
        "alone (read-only in any other)"),
}
_SET_MEMBER = lazy_pattern(r"(0|[1-9][0-9]*)(?:-(0|[1-9][0-9]*))?")


def _number_problem(name: str, value: str) -> str | None:
    """Why the kernel would never show ``value`` (canonical) as written: a number in it
    that is not decimal (see :func:`_not_decimal`), a count of numbers other than a
    vector's (:data:`_VECTORS`), or ``None``. A CPU bitmap
    (``net.core.rps_default_mask``, ``flow_limit_cpu_bitmap``: ``bitmap_parse``) is
    hexadecimal to the kernel, written and shown, and left as it is; a set of numbers
    (:data:`_NUMBER_SETS`) is held as the kernel shows it (:func:`_number_set`)."""
    if name in _HEXADECIMAL or (_INTEGER.fullmatch(value) and name not in _VECTORS):
        return None  # the common case first: one decimal number
    if name == _FASTOPEN_KEY or _stable_secret(name):
        # No number: _key_problem's, which does not quote a secret (a key written as
        # ip-sysctl.rst's "32-digit hexadecimal integer", 0x..., was quoted, in decimal
        # too, with advice to write that decimal, which the kernel refuses).
        return None
    tokens = _SET_SEPARATORS.split(value) if name in _NUMBER_SETS else value.split(" ")
    for token in tokens:
        if _NUMBER_LIKE.fullmatch(token) and not _INTEGER.fullmatch(token):
            return _not_decimal(name, token)
    count = _VECTORS.get(name)
    if count is not None and len(tokens) != count:
        kept = ("keeps the ones not written as they were" if len(tokens) < count
                else f"ignores the ones after the first {count}")
        return (f"{name} holds {count} numbers, got {len(tokens)} ({value!r}): the kernel "
                f"{kept}, and never shows {value!r} (every apply would fail): write {count}")
    return None


def _refused_list(name: str, value: str) -> str | None:
    """Why the kernel refuses ``value`` (as :class:`Sysctl` holds it) of a list sysctl
    (EINVAL: each apply fails, nothing changed), or never shows it as written, or
    ``None``: a set of numbers it cannot read (:func:`_number_set`), an
    ``ip_local_port_range`` ending below its start, a ``ping_group_range`` ending below
    its start other than ``1 0``.

    A spec's problems, not the model's: the kernel shows a ``ping_group_range`` ending
    below its start to a user namespace lacking a mapping of its first group
    (``from_kgid_munged``: ``65534 0``), a value read that the model must hold."""
    problem = _key_problem(name, value)
    if problem is not None:
        return problem
    highest = _NUMBER_SETS.get(name)
    if highest is not None and _number_set(value, highest) is None:
        return (f"{name} takes numbers from 0 to {highest} and ranges LOW-HIGH of them, "
                f"comma-separated with no space (1000,30000-32767), got {value!r}: the "
                "kernel refuses it")
    tokens = value.split(" ")
    if (name == "net.ipv4.ip_local_port_range" and all(_INTEGER.fullmatch(t) for t in tokens)
            and int(tokens[1]) < int(tokens[0])):
        return f"{name} is a range, its end below its start ({value!r}): the kernel refuses it"
    if (name == "net.ipv4.ping_group_range" and all(_INTEGER.fullmatch(t) for t in tokens)
            and int(tokens[1]) < int(tokens[0]) and tokens != ["1", "0"]):
        return (f"{name}: the kernel stores a range whose end is below its start ({value!r}) "
                "as 1 0, no group, and never shows it as written (every apply would fail): "
                "write 1 0 for no group")
    return None


def _key_problem(name: str, value: str) -> str | None:
    """Why k3snet cannot hold a spec's ``value`` of a sysctl the kernel shows in a form of
    its own (:data:`_UNHOLDABLE`), or why the kernel refuses a TCP Fast Open key or a
    ``stable_secret`` (:func:`_fastopen_key`, :func:`_ipv6`), or ``None``."""
    if name in _UNHOLDABLE:
        return (f"{name}: {_UNHOLDABLE[name]}: k3snet cannot hold it to {value!r} (every "
                "plan would write it again); set it in /etc/sysctl.d, outside the spec")
    if name == _FASTOPEN_KEY and _fastopen_key(value) is None:
        return (f"{name} takes one or two keys (the second after a comma), each 4 groups of "
                "up to 8 hexadecimal digits joined by '-' "
                f"(00000001-00000002-00000003-00000004), got {shown_value(name, value)}: the "
                "kernel refuses it")
    if _stable_secret(name) and _ipv6(value) is None:
        return (f"{name} takes an IPv6 address (2001:db8::1), got {shown_value(name, value)}: "
                "the kernel refuses it")
    return _tick_problem(name, value)


def _tick_problem(name: str, value: str) -> str | None:
    """Why the kernel may show a time it keeps in ticks (:data:`_TICKED`) otherwise than
    ``value``, or ``None``."""
    path = sysctl_path(name)
    if not _INTEGER.fullmatch(value) or not _TICKED_PATH.fullmatch(path):
        return None
    leaf = path.rsplit("/", 1)[1]
    step, unit = _TICKED[leaf]
    number = int(value)
    if number < 0 or (number == 0 and leaf == "interval_probe_time_ms"):
        # proc_dointvec_ms_jiffies: EINVAL (interval_probe_time_ms from 1);
        # proc_dointvec_userhz_jiffies stores it and shows -0.
        return (f"{name} is a time in {unit} from {1 if number == 0 else 0}, got "
                f"{value!r}: the kernel refuses it or never shows it as written (every "
                "apply would fail)")
    if number % step == 0:
        return None
    # As a node of HZ=250 shows it: ms rounded up to 4, hundredths of a second down to 2.
    shown = -(-number // 4) * 4 if unit == "ms" else number - number % 2
    every = "HZ 100, 250, 300 and 1000" if unit == "ms" else "HZ 100, 250 and 1000"
    return (f"{name} is kept in ticks of the kernel's clock and shown rounded to one, in "
            f"{unit} ({value!r} is shown {shown} on a node of HZ=250), never as written "
            f"(every apply would fail): write a multiple of {step}, shown as written at "
            f"{every}")


def _number_set(value: str, highest: int) -> str | None:
    """A set of numbers (:data:`_NUMBER_SETS`) as the kernel shows it: sorted, duplicates
    gone, neighbours merged into a range, a range of one number as that number, no
    trailing comma (``30000-32767,1000,1001,1001-1001,`` is ``1000-1001,30000-32767``).
    ``None`` for a value the kernel refuses (a space, a range from high to low, a number
    above ``highest``)."""
    members = value.split(",")
    if len(members) > 1 and members[-1] == "":
        members.pop()  # the kernel takes one trailing comma
    spans = []
    for member in members:
        match = _SET_MEMBER.fullmatch(member)
        if match is None:
            return None
        low = int(match[1])
        high = low if match[2] is None else int(match[2])
        if not low <= high <= highest:
            return None
        spans.append((low, high))
    merged: list[list[int]] = []
    for low, high in sorted(spans):
        if merged and low <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in merged)


def _fastopen_key(value: str) -> str | None:
    """TCP Fast Open's keys as the kernel shows them (:data:`_FASTOPEN_KEY`): each group
    lower-case, 8 digits (``0x1-2-3-4`` is ``00000001-00000002-00000003-00000004``);
    ``None`` for a value it refuses."""
    keys = []
    for key in value.split(","):
        groups = [_FASTOPEN_GROUPS.fullmatch(g) for g in key.split("-")]
        if len(groups) != 4 or None in groups:
            return None
        keys.append("-".join(f"{int(g[1], 16):08x}" for g in groups if g is not None))
    return ",".join(keys) if len(keys) <= 2 else None


def _stable_secret(name: str) -> bool:
    """Whether ``name`` is an interface's IPv6 ``stable_secret`` (RFC 7217's secret),
    dotted or slash-separated (a VLAN's, ``net/ipv6/conf/eth0.100/stable_secret``)."""
    # (Not re.split(r"[./]", ...): a call compiled, or looked up, a pattern each time.)
    return name.endswith("stable_secret") and name[:-len("stable_secret")].endswith((".", "/")) \
        and name.replace("/", ".").split(".", 3)[:3] == ["net", "ipv6", "conf"]


def is_secret(name: str) -> bool:
    """Whether sysctl ``name``'s value is a secret: TCP Fast Open's keys
    (``net.ipv4.tcp_fastopen_key``, whoever knows them forges Fast Open cookies) and an
    interface's IPv6 ``stable_secret`` (RFC 7217: whoever knows it tells the node's
    addresses apart from others' and follows it across networks). k3snet prints such a
    value only as :func:`shown_value` shows it.

    >>> is_secret("net.ipv6.conf.eth0.stable_secret"), is_secret("net.ipv4.ip_forward")
    (True, False)
    """
    try:
        path = sysctl_path(name)
    except ModelError:  # no name k3snet takes: one that still reads as a secret's is one
        return isinstance(name, str) and ("stable_secret" in name or "fastopen_key" in name)
    return path == "net/ipv4/tcp_fastopen_key" or _stable_secret(path)


def shown_value(name: str, value: str) -> str:
    """``value`` of sysctl ``name`` as k3snet prints it: a secret (:func:`is_secret`) as
    ``<secret, N bytes, sha256:XXXXXXXX>``, the size of its key material (16 bytes a
    key or an address) and the first 8 hex digits of the SHA-256 of the value as the
    kernel shows it (a value the kernel refuses: ``<secret, N characters>``): two
    values compare without being shown (32 of a secret's 128 bits: a chosen, guessable secret can be
    confirmed from it, a random one not found); any other value as it is.

    >>> shown_value("net.ipv6.conf.eth0.stable_secret", "2001:db8::1")
    '<secret, 16 bytes, sha256:4b706fbb>'
    >>> shown_value("net.ipv4.ip_forward", "1")
    '1'
    """
    if not is_secret(name):
        return value
    if name.endswith("fastopen_key"):
        held, size = _fastopen_key(value), 16 * (value.count(",") + 1)
    else:
        held, size = _ipv6(value), 16
    if held is None:  # refused by the kernel: its length alone (a short one's digest
        return f"<secret, {len(value)} characters>"  # would give it away)
    digest = hashlib.sha256(held.encode()).hexdigest()[:8]
    return f"<secret, {size} bytes, sha256:{digest}>"


_REDACTIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]] = {}


def register_redaction(type_name: str,
                       redact: Callable[[dict[str, Any]], dict[str, Any] | None]) -> None:
    """Have :func:`redact_secrets` pass each object of ``type_name`` (its ``to_dict``) to
    ``redact``, which returns a copy with its secrets as k3snet prints them, or ``None``
    for an object that holds none (the flannel config's ``Backend.PSK``,
    :mod:`k3snet.model.cni`)."""
    _REDACTIONS[type_name] = redact


def redact_secrets(data: Any) -> Any:
    """JSON-able ``data`` (a plan's, a state's :meth:`~Sysctl.to_dict` ...) where each
    sysctl object's secret ``value`` and ``previous`` are as :func:`shown_value` prints
    them, and each object of a type given to :func:`register_redaction` as its
    redaction gives it (a flannel ``PSK``): what k3snet prints as JSON. ``data`` is not
    changed: what holds a secret is copied, the rest shared (a 10k-destination plan's
    JSON is printed without copying its 20,000 objects). Plan files and the netlink
    backend's records keep the values (written ``0600``), which an apply and a rollback
    need."""
    if isinstance(data, list):
        shown = [_redacted(item) for item in data]
        return data if all(a is b for a, b in zip(shown, data, strict=True)) else shown
    return _redacted(data)


def _redacted(data: Any) -> Any:
    if isinstance(data, list):
        return redact_secrets(data)
    if not isinstance(data, dict):
        return data
    copy: dict[str, Any] | None = None
    for key, item in data.items():
        if isinstance(item, (dict, list)):
            shown = _redacted(item)
            if shown is not item:
                copy = dict(data) if copy is None else copy
                copy[key] = shown
    name = data.get("name")
    if data.get("type") == "sysctl" and isinstance(name, str) and is_secret(name):
        copy = dict(data) if copy is None else copy
        for field in ("value", "previous"):
            if isinstance(copy.get(field), str):
                copy[field] = shown_value(name, copy[field])
    redact = _REDACTIONS.get(data["type"]) if isinstance(data.get("type"), str) else None
    if redact is not None:
        shown = redact(data if copy is None else copy)
        copy = copy if shown is None else shown
    return data if copy is None else copy


def _ipv6(value: str) -> str | None:
    """An IPv6 address as the kernel shows a ``stable_secret`` (``%pI6``: 8 groups of 4
    lower-case digits, ``2001:db8::1`` is ``2001:0db8:0000:0000:0000:0000:0000:0001``);
    ``None`` for a value it refuses."""
    try:
        address = ipaddress.IPv6Address(value)
    except ValueError:
        return None
    return None if address.scope_id is not None else address.exploded


_BITMAP = lazy_pattern(r"[0-9a-fA-F]+(?:,[0-9a-fA-F]+)*")


def _bitmap(value: str) -> str:
    """A CPU bitmap (:data:`_HEXADECIMAL`) in one spelling whatever the node's CPUs: the
    kernel shows it padded to its number of possible CPUs in 32-bit groups of 8 digits
    (``%*pb``: ``1`` written, ``01`` on 8 CPUs, ``00000000,00000001`` on 64), never as
    written, and reads any of them (``bitmap_parse``). Here the leading zeros go:
    ``00000000,00000003`` and ``0003`` are ``3``, ``1,00000003`` stays. A value that is
    no bitmap is left as it is (the kernel refuses it)."""
    if not _BITMAP.fullmatch(value) or any(len(g) > 8 for g in value.split(",")[1:]):
        return value
    number = 0
    for group in value.split(","):
        number = number << 32 | int(group, 16)
    groups = []
    while True:
        number, low = divmod(number, 1 << 32)
        groups.append(f"{low:x}" if not number else f"{low:08x}")
        if not number:
            return ",".join(reversed(groups))


def _not_decimal(name: str, token: str) -> str:
    """The problem of ``token``, a number written otherwise than the kernel writes it."""
    sign, digits = ("-", token[1:]) if token[0] in "+-" else ("", token)
    hexadecimal = digits[:2].lower() == "0x"
    octal = not hexadecimal and all(c in "01234567" for c in digits)
    if token[0] == "+" or not (hexadecimal or octal):
        return (f"{name}: the kernel refuses {token!r} (a '+' sign, or a leading 0 before "
                "an 8 or a 9, which it reads as octal): write the number in decimal")
    number = int(sign + digits, 16 if hexadecimal else 8)
    base = "hexadecimal" if hexadecimal else "octal (a leading 0)"
    return (f"{name}: the kernel reads {token!r} as {base}, that is {number}, and shows "
            f"{number}, never what k3snet wrote (the apply fails): write the number in "
            f"decimal, {number}")


def contradicting_aliases(values: Mapping[str, str]) -> list[tuple[str, str]]:
    """The pairs of names of one kernel value (:data:`ALIASES`) that ``values`` (canonical
    name to value) gives different values, each pair once, sorted.

    Both cannot hold: whichever is written last sets the other, so a state wanting
    ``net.ipv4.ip_forward = 1`` and ``net.ipv4.conf.all.forwarding = 0`` is never
    reached and every apply turns forwarding on or off again.

    >>> contradicting_aliases({"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.forwarding": "0"})
    [('net.ipv4.conf.all.forwarding', 'net.ipv4.ip_forward')]
    """
    pairs = {(min(name, alias), max(name, alias)) for name, value in values.items()
             if (alias := ALIASES.get(name)) is not None and alias in values
             and values[alias] != value}
    return sorted(pairs)


def owned_apart(after: Mapping[str, str],
                changes: Iterable[tuple[str, object]]) -> list[str]:
    """The problems of a plan leaving two names of one kernel value owned with different
    values (:func:`contradicting_aliases` of ``after``, the owned values by name once its
    changes are made), each naming the first of ``changes`` ((name, change) pairs) that
    touches the pair: the memory and netlink backends refuse such a plan alike.
    """
    touching = list(changes)
    problems = []
    for first, second in contradicting_aliases(after):
        change = next(c for name, c in touching if name in (first, second))
        problems.append(
            f"{change}: {first} and {second} are two names of one kernel value, which k3snet "
            f"would own as {after[first]} and {after[second]}: each write sets the other, "
            "and every apply would write them again in turn; want one of them, or the "
            "same value for both")
    return problems


SPREADING_INVERTED: Final = {
    "net.ipv4.ip_forward": ("net.ipv4.conf.all.accept_redirects",),
    "net.ipv4.conf.all.forwarding": ("net.ipv4.conf.all.accept_redirects",),
}
"""Switches a write of the key sets to the opposite of the value written: IPv4 forwarding
turns ``all.accept_redirects`` off, and turning it off again turns them on
(``inet_forward_change``), on a node hardened with ``accept_redirects=0`` too."""


def _name(value: str) -> str:
    """Canonical name: dotted, or slash-separated when a component has a dot.

    sysctl(8) writes ``net/ipv4/conf/eth0.100/rp_filter`` for VLAN interfaces; as in
    sysctl.d(5), a name whose first separator is a dot has its dots and slashes
    interchanged, so ``net.ipv4.conf.eth0/100.rp_filter`` is that same name.
    """
    if not isinstance(value, str):
        raise ModelError(f"sysctl name must be a string, got {value!r}")
    given = value
    if 0 <= value.find(".") < value.find("/"):
        # Else split at its slashes: "net.ipv4.conf.eth0" and "100.rp_filter", refused
        # as a parameter outside net.*.
        value = value.translate(_DOTS_AND_SLASHES)
    parts = value.split("/") if "/" in value else value.split(".")
    if any(not _COMPONENT.fullmatch(p) or p in {".", ".."} for p in parts) or len(parts) < 2:
        raise ModelError(f"sysctl name {given!r} is not valid")
    if parts[0] != "net":
        raise ModelError(f"sysctl {given!r}: k3snet manages only net.* parameters")
    if any("." in p for p in parts):
        return "/".join(parts)
    return ".".join(parts)


def sysctl_name(name: str) -> str:
    """The canonical spelling of sysctl ``name`` (:class:`Sysctl`'s ``name``), whatever its
    values: ``net/ipv4/ip_forward`` is ``net.ipv4.ip_forward``; a
    :class:`~k3snet.errors.ModelError` when it names none.

    >>> sysctl_name("net/ipv4/ip_local_port_range")
    'net.ipv4.ip_local_port_range'
    """
    return _name(name)


def sysctl_path(name: str) -> str:
    """The path under ``/proc/sys`` of sysctl ``name`` (:attr:`Sysctl.path`).

    >>> sysctl_path("net.ipv4.conf.eth0/100.rp_filter")
    'net/ipv4/conf/eth0.100/rp_filter'
    """
    canonical = _name(name)
    return canonical.replace(".", "/") if "/" not in canonical else canonical


def _value(value: str | int, name: str | None = None) -> str:
    """``value`` as :class:`Sysctl` holds it; a :class:`~k3snet.errors.ModelError`
    quoting it unless sysctl ``name``'s value is a secret (:func:`is_secret`)."""
    normal = _converted(value)
    if isinstance(normal, _Refused):
        raise ModelError(normal.problem(name))
    return normal


class _Refused(str):
    """A value :func:`_converted` refuses: :class:`Sysctl`'s validators raise its
    :meth:`problem` knowing the sysctl's name (the converter is given the value alone),
    so that a secret's is not quoted (a YAML list of two Fast Open keys, a
    ``stable_secret`` pasted with a no-break space were printed whole)."""

    raw: object

    def problem(self, name: str | None) -> str:
        raw, secret = self.raw, name is not None and is_secret(name)
        if not isinstance(raw, str):
            got = f"a {type(raw).__name__}" if secret else repr(raw)
            return f"sysctl value must be a string or integer, got {got}"
        normal = " ".join(raw.split())
        if not normal:
            return "sysctl value must not be empty"
        shown = shown_value(name, normal) if secret and name is not None else \
            repr(normal[:40])
        return f"sysctl value {shown} must be printable ASCII of at most {_MAX_VALUE} characters"


def _refused(value: object) -> _Refused:
    refused = _Refused("")
    refused.raw = value
    return refused


def _converted(value: str | int) -> str:
    """:func:`_value`'s converter: a :class:`_Refused` for a value it refuses."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        return _refused(value)
    normal = " ".join(value.split())  # the kernel prints multi-value entries with tabs
    # Values of net.* parameters are numbers and short words; NUL, escapes and other
    # control or invisible characters would be written verbatim into sysctl.d.
    if not normal or len(normal) > _MAX_VALUE or not normal.isascii() or \
            not normal.isprintable():
        return _refused(value)
    return normal


def _checked_previous(value: str | None) -> str | None:
    return None if value is None else _converted(value)


@attrs.frozen(eq=False)
class Sysctl(NetObject):
    """``name = value``; ``previous`` is the value k3snet found before it took over.

    ``previous`` is recorded by backends (not compared): removing an owned sysctl
    restores it.

    >>> Sysctl("net.ipv4.ip_forward", 1).describe()
    'sysctl net.ipv4.ip_forward = 1'

    A number in ``value`` is written in decimal, as the kernel shows it: it reads
    ``0x1e`` as hexadecimal and ``010`` as octal, shows ``30`` and ``8``, never what
    was written (every apply would fail), and refuses ``+2`` and ``09``; each is a
    :class:`~k3snet.errors.ModelError` naming the decimal to write (a CPU bitmap,
    ``net.core.rps_default_mask``, is hexadecimal to the kernel, shown padded to the
    node's CPUs, and held without its leading zeros, ``0003`` as ``3``):

    >>> Sysctl("net.ipv4.tcp_fin_timeout", "0x1e")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    k3snet.errors.ModelError: net.ipv4.tcp_fin_timeout: the kernel reads '0x1e' as ... 30
    """

    kind: ClassVar[str] = "sysctl"
    type_name: ClassVar[str] = "sysctl"
    rank: ClassVar[int] = 0

    name: str = attrs.field(converter=_name)
    value: str = attrs.field(converter=_converted)

    @value.validator
    def _decimal(self, _attribute: attrs.Attribute[str], value: str) -> None:
        if isinstance(value, _Refused):  # quoted unless a secret's (_Refused)
            raise ModelError(value.problem(self.name))
        problem = _number_problem(self.name, value)
        if problem is not None:
            raise ModelError(problem)

    previous: str | None = attrs.field(default=None, kw_only=True, converter=_checked_previous)

    @previous.validator
    def _printable(self, _attribute: attrs.Attribute[str | None], value: str | None) -> None:
        if isinstance(value, _Refused):
            raise ModelError(value.problem(self.name))

    _key: tuple[Any, ...] = attrs.field(init=False, repr=False)
    _sort: tuple[Any, ...] = attrs.field(init=False, repr=False)
    _hash: int = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.name in _HEXADECIMAL:  # one spelling of a CPU bitmap: see _bitmap
            object.__setattr__(self, "value", _bitmap(self.value))
            if self.previous is not None:
                object.__setattr__(self, "previous", _bitmap(self.previous))
        elif self.name == _FASTOPEN_KEY or _stable_secret(self.name):
            # As the kernel shows it (_fastopen_key, _ipv6); one it refuses as it is.
            shown = _fastopen_key if self.name == _FASTOPEN_KEY else _ipv6
            object.__setattr__(self, "value", shown(self.value) or self.value)
            if self.previous is not None:
                object.__setattr__(self, "previous", shown(self.previous) or self.previous)
        elif self.name in _NUMBER_SETS:  # as the kernel shows it: see _number_set
            # One the kernel refuses is left as it is, for the kernel to refuse.
            highest = _NUMBER_SETS[self.name]
            object.__setattr__(self, "value", _number_set(self.value, highest) or self.value)
            if self.previous is not None:
                object.__setattr__(self, "previous",
                                   _number_set(self.previous, highest) or self.previous)
        self._seal(("sysctl", self.name), (self.value,))

    @property
    def path(self) -> str:
        """Path under ``/proc/sys``: ``net/ipv4/ip_forward``."""
        return sysctl_path(self.name)

    @property
    def family(self) -> int | None:
        """4 for ``net.ipv4.*``, 6 for ``net.ipv6.*``, else ``None``."""
        second = self.path.split("/")[1]
        return {"ipv4": 4, "ipv6": 6}.get(second)

    @property
    def clash_key(self) -> tuple[Any, ...]:
        """The parameter name: there is one value per name."""
        return self._key

    @property
    def tier(self) -> int:
        """0 for a switch whose write the kernel spreads or inverts elsewhere
        (:data:`SPREADING`, :data:`SPREADING_INVERTED`: ``ip_forward`` sets every
        interface's ``forwarding`` and ``all.accept_redirects``), 1 for the others: a
        plan writes ``net.ipv4.conf.eth0.forwarding = 0`` after ``ip_forward = 1``,
        which would overwrite it, and gives it back before. An IPv6 ``stable_secret`` too:
        its write sets the interface's ``addr_gen_mode`` to 2, ``default``'s every
        interface's (``addrconf_sysctl_stable_secret``), so a spec's ``addr_gen_mode``
        is written after it (the apply left 2 where the spec held 3)."""
        if self.name in SPREADING or self.name in SPREADING_INVERTED:
            return 0
        path = self.path
        return 0 if path.startswith("net/ipv6/conf/") and path.endswith("/stable_secret") else 1

    def met_by(self, other: NetObject) -> bool:
        """The parameter already has the value (set by someone else)."""
        return isinstance(other, Sysctl) and other.name == self.name and other.value == self.value

    @property
    def secret(self) -> bool:
        """Whether the value is a secret (:func:`is_secret`), printed redacted."""
        return is_secret(self.name)

    def describe(self) -> str:
        """``sysctl NAME = VALUE``; a secret's value as :func:`shown_value` shows it."""
        return f"sysctl {self.name} = {shown_value(self.name, self.value)}"

    def __repr__(self) -> str:
        previous = "" if self.previous is None else \
            f", previous={shown_value(self.name, self.previous)!r}"
        return f"Sysctl(name={self.name!r}, value={shown_value(self.name, self.value)!r}{previous})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``previous`` included when known)."""
        data: dict[str, Any] = {"type": self.type_name, "name": self.name, "value": self.value}
        if self.previous is not None:
            data["previous"] = self.previous
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sysctl:
        """Inverse of :meth:`to_dict`."""
        return cls(data["name"], data["value"], previous=data.get("previous"))
