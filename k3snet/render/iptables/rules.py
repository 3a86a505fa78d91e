"""The iptables rule language of k3snet: the layout it writes, and reading it back (pure).

Layout (per family: ``iptables`` for IPv4, ``ip6tables`` for IPv6)::

    nat:    POSTROUTING  -m comment --comment k3snet -j K3SNET-POSTROUTING   (appended)
            K3SNET-POSTROUTING   one jump per non-empty bucket, in group order
            K3SNET-N-d24-s16-o-7 the NAT rules of one group and hash bucket (``o``: out
                                 one interface, ``w3``: a wildcard of 3 characters
                                 such as ``eth+``, ``a``: any interface)
            K3SNET-M-<hash16>    one rule's exclusions (RETURN ...) then its MASQUERADE/SNAT
    filter: FORWARD      -m comment --comment k3snet -j K3SNET-FORWARD      (see below)
            K3SNET-FORWARD       one jump per non-empty bucket
            K3SNET-F-7           the forward accepts (and reply accepts) of one hash bucket

Where the hook jumps go (:func:`hook_position`): when k3snet creates a jump it
goes after every rule already in the built-in chain except a final run of
catch-all ``DROP``/``REJECT`` rules (firewalld's and the RHEL iptables service's
default deny, a policy written as a rule): whatever an admin or another program
decided about specific traffic is met first and decides. Once there, the jump
is never moved: a rule inserted above it later stays above it, and what it
drops of k3snet's traffic is a conflict (docs/reliability.md).

Every rule we write carries ``-m comment --comment k3snet:<digest>``, the
ownership tag of :mod:`k3snet.render.tag` over a canonical text of the object
(the layout version first): the diff key, as in Calico Felix. Reading back, an
object is rebuilt from the rule text, re-hashed and re-rendered; a rule whose
text no longer matches its hash, or that sits in the wrong chain, is drift.

Why buckets: ``iptables-nft-restore`` must load a chain's whole rule cache to
delete or insert by position, which costs ~100 ms for a 10k-rule chain. Rules of
one *group* never overlap (same destination and source prefix lengths and the
same out-interface kind: one name, a wildcard of one length, or any; two such rules
differ in a prefix, or in an interface no device has both of, or are the same
slot), so their order inside a group does not matter, and a group is split in 16
chains by the first hex digit of the hash. One change then touches a chain of
~N/16 rules, appended (``-A``) or deleted by spec (``-D``). Groups are jumped to
most specific first (longer source prefix, then longer destination prefix, then
out interface: one name (``eth0``), then wildcards by longer prefix (``eth1+``,
then ``eth+``), then any): NAT is first match, so a more specific rule wins over
a broader one, whatever order they were added in. Between two rules neither of
which holds the other (source /24 to a /16, source /16 to a /24) either order is
"most specific first", and a packet both match takes the first: the order is the
nftables backend's (:func:`k3snet.render.nftables.chain_order_key`), so the same
State translates a packet the same way through either backend. Before 2026-12-05
the destination came first here. ``-o eth0`` and ``-o eth+``
were one group before (``o``), so the wildcard one could come first and the other
never translate; plain names kept their group names, so their chains did not
change. Forward accepts all have the same verdict: one group.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Final, NamedTuple

import attrs

from k3snet._regex import lazy_pattern
from k3snet.errors import K3snetError
from k3snet.model import NetObject, out_interface_rank
from k3snet.model.cidr import (
    DECIMAL_OCTETS,
    Network,
    address_text,
    ipv4_text,
    network_text,
    parse_network,
)
from k3snet.model.forward import ForwardRule
from k3snet.model.nat import MasqueradeRule, SnatRule
from k3snet.render.shape import Shaped, retarget
from k3snet.render.tag import TAG_PREFIX, content_digest, tag_digest

__all__ = [
    "HOOKS",
    "LAYOUT_VERSION",
    "PREFIX",
    "TABLES",
    "TAG",
    "XT_CONTINUE",
    "XT_TTL",
    "Hook",
    "Line",
    "RuleFields",
    "Unit",
    "bucket_order",
    "bucket_table",
    "clear_caches",
    "comment_digest",
    "content_hash",
    "format_line",
    "hook_line",
    "hook_position",
    "is_bucket_chain",
    "main_lines",
    "normalize",
    "parse_rule",
    "rebuild_unit",
    "remember",
    "render_new",
    "render_unit",
    "rule_verb",
    "save_lines",
    "table_image",
    "table_of",
    "tokenize",
    "ttl_expires",
    "whole_rule",
]

Line = tuple[str, ...]
"""One rule as tokens, without the leading ``-A CHAIN`` (addresses normalised)."""

XT_CONTINUE: Final = frozenset({
    "MARK", "CONNMARK", "LOG", "NFLOG", "TRACE", "CHECKSUM", "CLASSIFY", "DSCP", "TOS",
    "TCPMSS", "AUDIT", "SET", "TEE", "TTL", "HL", "ECN", "HMARK", "IDLETIMER", "LED",
    "RATEEST", "SECMARK", "CONNSECMARK", "TCPOPTSTRIP"})
"""iptables targets after which the packet goes on to the next rule: the kernel's xt
modules whose target returns ``XT_CONTINUE`` (a TCPMSS, ECN or TCPOPTSTRIP that cannot
rewrite a malformed packet drops it). One list for the iptables and nftables backends
(iptables-nft's compat targets) and the doctor; ``-j CT`` and ``-j NOTRACK`` go on too,
each reader handles them apart (an untracked packet)."""

XT_TTL: Final = frozenset({"TTL", "HL"})
"""The targets of :data:`XT_CONTINUE` that set a packet's TTL (IPv6: hop limit): one that
leaves it at 1 or less expires a forwarded packet (:func:`ttl_expires`)."""


def ttl_expires(args: Sequence[str]) -> bool:
    """Whether ``-j TTL`` / ``-j HL`` with options ``args`` expires a forwarded packet: a
    ``--ttl-set N`` (``--hl-set N``) of 1 or less, or a decrement of 63 or more (Linux
    starts at 64). In PREROUTING the kernel's forwarding drops a TTL of 1 or less; after
    it (FORWARD, POSTROUTING) the packet leaves with that TTL, and the next router drops
    it. An option not understood counts as expiring (a doubt counts against the flow).

    >>> ttl_expires(["--ttl-set", "1"]), ttl_expires(["--ttl-set", "64"])
    (True, False)
    >>> ttl_expires(["--hl-dec", "1"]), ttl_expires(["--ttl-inc", "1"])
    (False, False)
    """
    for option, value in itertools.pairwise(args):
        if option in ("--ttl-set", "--hl-set", "--ttl-dec", "--hl-dec"):
            try:
                number = int(value)
            except ValueError:
                return True
            return number <= 1 if option.endswith("-set") else number >= 63
    return not any(a in ("--ttl-inc", "--hl-inc") for a in args)

LAYOUT_VERSION: Final = "1"
TAG: Final = "k3snet"
PREFIX: Final = "K3SNET-"
_CTSTATE: Final = "RELATED,ESTABLISHED"


@attrs.frozen
class Hook:
    """Where a table's traffic enters our chains."""

    table: str
    builtin: str
    main: str
    first: bool
    """Unused since k3snet stopped putting its FORWARD jump first (kept for callers):
    a jump goes where :func:`hook_position` says and is never moved."""


HOOKS: Final[Mapping[str, Hook]] = {
    "nat": Hook("nat", "POSTROUTING", "K3SNET-POSTROUTING", first=False),
    "filter": Hook("filter", "FORWARD", "K3SNET-FORWARD", first=True),
}
TABLES: Final = ("filter", "nat")
"""Tables in apply order (forward accepts before the NAT that relies on them)."""


def table_of(obj: NetObject) -> str:
    """The table an object lives in."""
    if isinstance(obj, ForwardRule):
        return "filter"
    if isinstance(obj, MasqueradeRule | SnatRule):
        return "nat"
    raise K3snetError(f"the iptables backend cannot hold {obj.type_name} objects ({obj})")


def hook_line(hook: Hook) -> Line:
    """The jump from the built-in chain to our main chain."""
    return ("-m", "comment", "--comment", TAG, "-j", hook.main)


_DENY: Final = frozenset({"DROP", "REJECT"})


def hook_position(rules: Sequence[Line]) -> int:
    """Where a new jump goes in a built-in chain holding ``rules`` (0-based index).

    After every rule but a final run of catch-all ``DROP``/``REJECT`` rules (no
    match but comments): those are a default deny, which k3snet's accepts exist
    to open; any rule matching something is somebody's decision and stays first.
    """
    position = len(rules)
    while position and _is_catch_all_deny(rules[position - 1]):
        position -= 1
    return position


def _is_catch_all_deny(line: Line) -> bool:
    flag, at = rule_verb(line)
    if flag != "-j" or at + 1 >= len(line) or line[at + 1] not in _DENY:
        return False
    matches = list(line[:at])
    while "comment" in matches:  # a comment never restricts anything
        index = matches.index("comment") - 1
        del matches[index: index + 4]
    return not matches


def rule_verb(line: Line) -> tuple[str | None, int]:
    """A rule's target flag (``-j``, ``-g``; ``None``: none) and where it is (the rule's
    length: none), a comment's text left out: both flavours of iptables-save print a
    comment of one word unquoted (``--comment -j``, ``--comment --comment``), and a
    word of a comment's is no flag of the rule's."""
    if "--comment" not in line:  # (most rules: the tuple's own search)
        for flag in ("-j", "-g"):
            if flag in line:
                return flag, line.index(flag)
        return None, len(line)
    index, end = 0, len(line)
    while index < end:
        word = line[index]
        if word == "--comment":
            index += 2  # its text, whatever it reads
            continue
        if word in ("-j", "-g"):
            return word, index
        index += 1
    return None, end


def _jump_line(chain: str) -> Line:
    return ("-m", "comment", "--comment", TAG, "-j", chain)


# -- hashing and naming -------------------------------------------------------------


def _canonical(obj: NetObject) -> tuple[str, str, str | None, tuple[str, ...], str | None]:
    """(hash input, source, destination, exclusions, SNAT address) as text, computed once.

    The hash input is ``|``-joined fields (the layout version first); its format is
    what every rule k3snet ever wrote is tagged with, so it must not change.
    """
    if isinstance(obj, ForwardRule):
        src, to_net = network_text(obj.source), network_text(obj.destination)
        key = (f"{LAYOUT_VERSION}|forward|{src}|{to_net}|{obj.in_interface or '-'}|"
               f"{obj.out_interface or '-'}")
        return key, src, to_net, (), None
    if isinstance(obj, MasqueradeRule | SnatRule):
        src = network_text(obj.source)
        dst = None if obj.destination is None else network_text(obj.destination)
        excl = tuple(map(network_text, obj.exclude)) if obj.exclude else ()
        key = (f"{LAYOUT_VERSION}|{obj.type_name}|{src}|{dst or '-'}|{','.join(excl)}|"
               f"{obj.out_interface or '-'}|{'1' if obj.random_fully else '0'}")
        if isinstance(obj, SnatRule):
            to = address_text(obj.to_address)
            return f"{key}|{to}", src, dst, excl, to
        return key, src, dst, excl, None
    raise K3snetError(f"the iptables backend cannot hold {obj.type_name} objects ({obj})")


def content_hash(obj: NetObject) -> str:
    """The digest of the object's ownership tag (its whole content and the layout version)."""
    return content_digest(_canonical(obj)[0])


# A wildcard's prefix has 1 to 14 characters (an interface name at most 15): only
# the names k3snet writes are its buckets, any other K3SNET-N-... chain is foreign.
_NAT_BUCKET = lazy_pattern(r"K3SNET-N-d(\d{1,3})-s(\d{1,3})-(o|a|w(?:[1-9]|1[0-4]))-([0-9a-f])")
_FWD_BUCKET = lazy_pattern(r"K3SNET-F-([0-9a-f])")


def _nat_bucket(obj: MasqueradeRule | SnatRule, digest: str) -> str:
    dplen = 0 if obj.destination is None else obj.destination.prefixlen
    return f"{_nat_group(dplen, obj.source.prefixlen, obj.out_interface)}{digest[0]}"


def _oif_kind(out: str | None) -> str:
    """The out-interface part of a NAT group's name: ``o`` for one name, ``w<n>`` for a
    wildcard whose prefix has n characters (``eth+``: ``w3``), ``a`` for any."""
    if not out:
        return "a"
    return f"w{len(out) - 1}" if out.endswith("+") else "o"


def _kind_match(kind: str) -> str | None:
    """An out-interface match of the kind ``_oif_kind`` names (what it ranks by)."""
    if kind == "a":
        return None
    return "x" * int(kind[1:]) + "+" if kind[0] == "w" else "x"


def bucket_order(chain: str) -> tuple[int, ...] | None:
    """Where a bucket chain's jump goes in the main chain (``None``: not a bucket name)."""
    if match := _NAT_BUCKET.fullmatch(chain):
        dplen, splen, oif, digit = match.groups()
        return (-int(splen), -int(dplen), out_interface_rank(_kind_match(oif)), int(digit, 16))
    if match := _FWD_BUCKET.fullmatch(chain):
        return (int(match.group(1), 16),)
    return None


def is_bucket_chain(chain: str) -> bool:
    """Rules of a bucket chain may come in any order."""
    return bucket_order(chain) is not None


def bucket_table(chain: str) -> str | None:
    """The table k3snet writes a bucket chain of this name in: ``nat`` for ``K3SNET-N-...``,
    ``filter`` for ``K3SNET-F-x`` (``None``: not a bucket name)."""
    if _NAT_BUCKET.fullmatch(chain):
        return "nat"
    return "filter" if _FWD_BUCKET.fullmatch(chain) else None


def main_lines(buckets: Iterable[str]) -> list[Line]:
    """The main chain for these non-empty buckets: one jump each, most specific first."""
    ordered = sorted(buckets, key=lambda c: bucket_order(c) or ())
    return [_jump_line(chain) for chain in ordered]


# -- rendering ----------------------------------------------------------------------


class Unit(NamedTuple):
    """The rules one object turns into (a named tuple: made once per object, fast)."""

    obj: NetObject
    digest: str
    chain: str
    lines: tuple[Line, ...]
    """In the bucket chain (order free)."""
    sub_chain: str | None = None
    sub_lines: tuple[Line, ...] = ()
    """In the object's own exclusion chain (order matters)."""

    @property
    def table(self) -> str:
        """``nat`` or ``filter``."""
        return table_of(self.obj)

    def chains(self) -> Iterator[tuple[str, tuple[Line, ...]]]:
        """Every chain the unit writes to, with its lines."""
        yield self.chain, self.lines
        if self.sub_chain is not None:
            yield self.sub_chain, self.sub_lines


def _addr(flag: str, net: Network | None, text: str | None) -> Line:
    # iptables-save leaves out a /0 match: render what it prints back.
    return () if net is None or text is None or net.prefixlen == 0 else (flag, text)


def _nat_target(obj: MasqueradeRule | SnatRule, to: str | None) -> Line:
    target: Line = ("-j", "MASQUERADE") if to is None else ("-j", "SNAT", "--to-source", to)
    return (*target, "--random-fully") if obj.random_fully else target


_BY_DIGEST: dict[str, Unit] = {}
_UNITS: dict[NetObject, Unit] = {}
_CACHE_MAX = 1 << 17
_new_unit = tuple.__new__  # Unit(...) goes through a Python-level __new__: 70 ns per object


def render_unit(obj: NetObject) -> Unit:
    """The rules of one object (memoised: objects are immutable, and hash cheaply)."""
    unit = _UNITS.get(obj)
    if unit is None:
        unit = _build_unit(obj)
        if len(_UNITS) >= _CACHE_MAX:
            _UNITS.clear()  # a bound, not an LRU: a miss costs a couple of microseconds
        _UNITS[obj] = unit
        if len(_BY_DIGEST) >= _CACHE_MAX:
            _BY_DIGEST.clear()  # it only saves re-parsing rule text
        _BY_DIGEST[unit.digest] = unit
    return unit


def render_new(obj: NetObject) -> Unit:
    """The rules of an object about to be written, without the lookup of :func:`render_unit`.

    A big apply renders each new object once: looking it up and remembering it by
    object (two calls of its Python ``__hash__``, a growing dict) costs a third of
    the rendering. Pass the units written to :func:`remember` (one call for all).
    """
    if type(obj) is MasqueradeRule and not obj.exclude:
        return _build_plain_masquerade(obj)
    return _build_general(obj)


def remember(units: Mapping[str, Unit]) -> None:
    """Remember units by hash (as :func:`render_unit` does), for reading their rules back."""
    if len(_BY_DIGEST) + len(units) > _CACHE_MAX:
        _BY_DIGEST.clear()  # it only saves re-parsing rule text
    _BY_DIGEST.update(units)


def clear_caches() -> None:
    """Forget every rendered unit and rule shape (benchmarks use it to measure a cold start)."""
    _UNITS.clear()
    _BY_DIGEST.clear()
    _SHAPES.clear()


def _build_unit(obj: NetObject) -> Unit:
    if type(obj) is MasqueradeRule and not obj.exclude:
        return _build_plain_masquerade(obj)
    return _build_general(obj)


def _build_general(obj: NetObject) -> Unit:
    """Any object's unit (the reference the fast path below is tested against)."""
    key, src_text, dst_text, excl_text, to = _canonical(obj)
    digest = content_digest(key)
    tag = ("-m", "comment", "--comment", TAG_PREFIX + digest)
    if isinstance(obj, ForwardRule):
        iif = ("-i", obj.in_interface) if obj.in_interface else ()
        oif = ("-o", obj.out_interface) if obj.out_interface else ()
        src = _addr("-s", obj.source, src_text)
        dst = _addr("-d", obj.destination, dst_text)
        # The replies are matched by their destination alone, not by ``-s`` the
        # destination too: conntrack's RELATED answers of a flow (an ICMPv6 Packet Too
        # Big, an ICMP fragmentation needed, a time exceeded) come from a router on the
        # way, and FORWARD's policy drop took them, so path MTU discovery never learnt
        # a smaller MTU and the pods' larger packets were lost. ``--ctdir REPLY``: only
        # what goes back against a connection's first packet, a pod's connection's
        # replies and the errors about its packets (conntrack gives an ICMP error its
        # master's connection and the direction the error travels in, RELATED_REPLY);
        # without it every later packet of a connection from outside to a pod
        # (ESTABLISHED, original direction) was accepted here, whatever the
        # administrator's FORWARD rules after k3snet's jump decide for it.
        back_dst = ("-d", *src[1:]) if src else ()
        back_iif = ("-i", obj.out_interface) if obj.out_interface else ()
        back_oif = ("-o", obj.in_interface) if obj.in_interface else ()
        forward = (*src, *dst, *iif, *oif, *tag, "-j", "ACCEPT")
        reply = (*back_dst, *back_iif, *back_oif,
                 "-m", "conntrack", "--ctstate", _CTSTATE, "--ctdir", "REPLY", *tag,
                 "-j", "ACCEPT")
        return Unit(obj, digest, f"K3SNET-F-{digest[0]}", (forward, reply))
    assert isinstance(obj, MasqueradeRule | SnatRule)  # _canonical refused the rest
    chain = _nat_bucket(obj, digest)
    oif = ("-o", obj.out_interface) if obj.out_interface else ()
    src = _addr("-s", obj.source, src_text)
    dst = _addr("-d", obj.destination, dst_text)
    excl = obj.exclude
    if not excl:
        return Unit(obj, digest, chain, ((*src, *dst, *oif, *tag, *_nat_target(obj, to)),))
    if len(excl) == 1 and excl[0].prefixlen > 0 and not dst:
        # One exclusion and no destination: the single-rule "! -d" form (flannel's).
        line = (*src, "!", "-d", excl_text[0], *oif, *tag, *_nat_target(obj, to))
        return Unit(obj, digest, chain, (line,))
    # Several exclusions (or one within a destination): the rule's own chain, so its
    # RETURNs can never skip another rule.
    sub = f"K3SNET-M-{digest}"
    line = (*src, *dst, *oif, *tag, "-j", sub)
    sub_lines = tuple((*_addr("-d", net, text), *tag, "-j", "RETURN")
                      for net, text in zip(excl, excl_text, strict=True))
    sub_lines += ((*tag, *_nat_target(obj, to)),)
    return Unit(obj, digest, chain, (line,), sub, sub_lines)


def _build_plain_masquerade(obj: MasqueradeRule) -> Unit:
    """The general path above, unrolled for the usual rule (a masquerade, no exclusions).

    A full apply of 10k rules renders 10k of these: every step here is one C call
    or one f-string (same hash input, same tokens as :func:`_canonical` and
    :func:`_build_general`; the tests compare both paths). Addresses come from the
    object's key, plain ints computed once by the model, not from :mod:`ipaddress`
    (whose properties cost a Python call each).
    """
    _, version, saddr, splen, daddr, dplen, out = obj.key  # see _NatBase._nat_key
    if version == 4:
        src = _v4_source(saddr, splen)
        if dplen < 0:  # no destination
            dst, dplen = "-", 0
        else:
            dst = _V4_NET.get((daddr << 6) | dplen) or _v4_destination(daddr, dplen)
    else:
        src = str(obj.source)
        destination = obj.destination
        dst = "-" if destination is None else str(destination)
        dplen = max(dplen, 0)
    random_fully = obj.random_fully
    digest = content_digest(f"{LAYOUT_VERSION}|masquerade|{src}|{dst}||{out or '-'}|"
                            f"{'1' if random_fully else '0'}")
    comment = TAG_PREFIX + digest
    line: Line
    if splen and dplen and not out and not random_fully:  # the usual shape, in one go
        line = ("-s", src, "-d", dst, "-m", "comment", "--comment", comment, "-j", "MASQUERADE")
    else:
        line = ("-m", "comment", "--comment", comment, "-j", "MASQUERADE")
        if random_fully:
            line += ("--random-fully",)
        if out:
            line = ("-o", out, *line)
        if dplen:
            line = ("-d", dst, *line)
        if splen:
            line = ("-s", src, *line)
    # The interface kind takes 5 bits (0: any, 1: a name, 2 + n: a wildcard of n
    # characters, n < 16), a source length 8 (IPv6: up to 128).
    kind = 0 if not out else (len(out) + 1 if out[-1] == "+" else 1)
    group = (dplen << 13) | (splen << 5) | kind
    chains = _NAT_CHAINS.get(group) or _nat_chains(group, dplen, splen, out)
    return _new_unit(Unit, (obj, digest, chains[digest[0]], (line,), None, ()))


_NAT_CHAINS: dict[int, dict[str, str]] = {}
"""The 16 bucket chain names of each NAT group (by prefix lengths and interface), by
the bucket digit: made once, shared by every unit."""


def _nat_chains(group: int, dplen: int, splen: int, out: str | None) -> dict[str, str]:
    prefix = _nat_group(dplen, splen, out)
    chains = _NAT_CHAINS[group] = {digit: f"{prefix}{digit}" for digit in "0123456789abcdef"}
    return chains


_V4_HIGH: dict[int, str] = {}
"""``"a.b."`` by the top 16 bits of an address (pod sources share them)."""
_V4_NET: dict[int, str] = {}
"""``"a.b.c.d/p"`` by ``address << 6 | p`` (destinations repeat a lot)."""


def _v4_source(value: int, prefixlen: int) -> str:
    """``str(network)`` for IPv4, from ints (sources are mostly distinct: built, not kept)."""
    high = _V4_HIGH.get(value >> 16)
    if high is None:
        high = _V4_HIGH[value >> 16] = (f"{DECIMAL_OCTETS[value >> 24]}."
                                         f"{DECIMAL_OCTETS[(value >> 16) & 255]}.")
        if len(_V4_HIGH) >= _CACHE_MAX:
            _V4_HIGH.clear()
    return f"{high}{DECIMAL_OCTETS[(value >> 8) & 255]}.{DECIMAL_OCTETS[value & 255]}/{prefixlen}"


def _v4_destination(value: int, prefixlen: int) -> str:
    """``str(network)`` for IPv4, remembered."""
    if len(_V4_NET) >= _CACHE_MAX:
        _V4_NET.clear()
    text = _V4_NET[(value << 6) | prefixlen] = f"{ipv4_text(value)}/{prefixlen}"
    return text


def _nat_group(dplen: int, splen: int, out: str | None) -> str:
    """The name of a NAT group's bucket chains, without the bucket digit."""
    return f"K3SNET-N-d{dplen}-s{splen}-{_oif_kind(out)}-"


def table_image(objects: Iterable[NetObject]) -> dict[str, list[Line]]:
    """Every chain of one table, deterministic (what a persistence file holds)."""
    chains: dict[str, list[Line]] = {}
    units = sorted((render_unit(o) for o in objects), key=lambda u: u.digest)
    for unit in units:
        for chain, lines in unit.chains():
            chains.setdefault(chain, []).extend(lines)
    buckets = [c for c in chains if is_bucket_chain(c)]
    if not buckets:
        return {}
    hook = HOOKS[units[0].table]
    image = {hook.main: main_lines(buckets)}
    image.update(sorted(chains.items()))
    return image


# -- text ---------------------------------------------------------------------------

_SAFE = lazy_pattern(r"[^\s\"'\\]+")
_UNSAFE = lazy_pattern(r"[\s\"'\\]")


def format_line(tokens: Sequence[str]) -> str:
    """Tokens as one line of ``iptables-restore`` input (quoted only where needed)."""
    joined = " ".join(tokens)
    # Fast path (every rule k3snet writes): no token is empty or holds a blank or a quote.
    if joined.count(" ") == len(tokens) - 1 and all(tokens) and (
        _UNSAFE.search(joined.replace(" ", "")) is None
    ):
        return joined
    return " ".join(t if _SAFE.fullmatch(t) else _quote(t) for t in tokens)


def _quote(token: str) -> str:
    return '"' + token.replace("\\", "\\\\").replace('"', '\\"') + '"'


def save_lines(text: str) -> Iterator[str]:
    """The lines of ``iptables-save`` output, each rule whole.

    A rule is one line, except when a quoted value holds a newline (a comment can,
    and iptables-save prints it as it is): the rule then goes on until its quote
    closes, so that the lines such a comment prints are not read as rules of their
    own (they can read as anyone's, k3snet's too). Lines end at ``\\n`` only: a
    comment's other line breaks (U+2028, ``\\x1c``...) are part of its line, as
    iptables-save prints them (tests/iptables/test_save_comments.py).
    """
    lines = iter(text.split("\n"))
    for line in lines:
        yield whole_rule(line, lines) if line.startswith(("-A ", "[")) else line


def whole_rule(line: str, rest: Iterator[str]) -> str:
    """Rule line ``line`` of ``iptables-save`` output, with the lines taken from ``rest``
    while a quoted value in it goes on (:func:`save_lines`)."""
    if not ((line.count('"') & 1 or "\\" in line) and _open_quote(line)):
        return line
    parts = [line]
    for more in rest:
        parts.append(more)
        if not _open_quote("\n".join(parts)):
            break
    return "\n".join(parts)


def _open_quote(line: str) -> bool:
    """Whether ``line`` ends inside a double quote (iptables-save quotes a value with
    ``"`` and escapes ``"``, ``\\`` and ``'`` in it with ``\\``)."""
    if "\\" not in line:
        return line.count('"') % 2 == 1
    quoted = escaped = False
    for char in line:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
    return quoted


def tokenize(text: str) -> Line:
    """Split one rule of ``iptables-save`` output into tokens (its quoting undone)."""
    if "\\" not in text and "'" not in text:
        if '"' not in text:
            return tuple(text.split())
        # Fast path for the usual `--comment "..."`: odd pieces are quoted words.
        tokens: list[str] = []
        for index, piece in enumerate(text.split('"')):
            if index % 2:
                tokens.append(piece)
            else:
                tokens.extend(piece.split())
        return tuple(tokens)
    return _tokenize_slow(text)


def _tokenize_slow(text: str) -> Line:
    tokens: list[str] = []
    current: list[str] = []
    quote: str | None = None
    started = False
    chars = iter(text)
    for char in chars:
        if quote is not None:
            if char == "\\":
                current.append(next(chars, ""))
            elif char == quote:
                quote = None
            else:
                current.append(char)
        elif char in "\"'":
            quote, started = char, True
        elif char.isspace():
            if started:
                tokens.append("".join(current))
                current, started = [], False
        else:
            current.append(char)
            started = True
    if started:
        tokens.append("".join(current))
    return tuple(tokens)


_ADDRESS_FLAGS: Final = frozenset({"-s", "-d", "--to-source"})


def normalize(tokens: Line) -> Line:
    """Addresses in canonical form (ip6tables-save may print ``::ffff:1.2.3.4``)."""
    if not any(t in _ADDRESS_FLAGS for t in tokens):
        return tokens
    out = list(tokens)
    for index, token in enumerate(tokens[:-1]):
        if token in _ADDRESS_FLAGS:
            value = tokens[index + 1]
            if ":" not in value:
                continue  # IPv4: iptables-save prints it as Python does
            try:
                canonical = (str(ipaddress.ip_network(value, strict=False)) if "/" in value
                             else str(ipaddress.ip_address(value)))
            except ValueError:
                continue  # a port range or something else: leave it as printed
            out[index + 1] = canonical
    return tuple(out)


# -- reading rules back -------------------------------------------------------------


@attrs.define
class RuleFields:
    """The parts of a simple rule (only the matches k3snet writes or models)."""

    source: Network | None = None
    source_neg: bool = False
    destination: Network | None = None
    destination_neg: bool = False
    in_interface: str | None = None
    out_interface: str | None = None
    comment: str | None = None
    ctstate: str | None = None
    ctdir: str | None = None  # conntrack's --ctdir: ORIGINAL or REPLY
    target: str | None = None
    to_source: str | None = None
    random_fully: bool = False


_SAVED_NETWORKS: dict[str, Network] = {}
_SAVED_NETWORKS_MAX: Final = 256


def _saved_network(text: str) -> Network:
    """A ``-s``/``-d`` value as ``ip_network(text, strict=False)`` reads it (a ValueError
    otherwise), through k3snet's parser: ~2 us where ipaddress's own takes ~6, about a
    quarter of an unhinted read of 10k rules. The first values seen are kept (the pod CIDR
    is in every rule of ours; the destinations, each in one, are not worth keeping).
    Figures: docs/performance.md, "The evening of 2026-12-02"."""
    net = _SAVED_NETWORKS.get(text)
    if net is None:
        # k3snet's parser strips the text and refuses a zone id: not what was read before.
        net = (parse_network(text, strict=False) if text == text.strip() and "%" not in text
               else ipaddress.ip_network(text, strict=False))
        if len(_SAVED_NETWORKS) < _SAVED_NETWORKS_MAX:
            _SAVED_NETWORKS[text] = net
    return net


def _once(read: str | None, value: str) -> str:
    """``value``, a conntrack test's, unless the rule tested that field already (a
    ValueError: both tests hold, and the last alone is not what the rule matches)."""
    if read is not None:
        raise ValueError("a conntrack field tested twice")
    return value


def parse_rule(tokens: Line) -> RuleFields | None:  # noqa: PLR0912 - one branch per flag
    """The fields of a rule made only of known matches; ``None`` for anything else."""
    fields = RuleFields()
    i, n, neg = 0, len(tokens), False
    try:
        while i < n:
            tok = tokens[i]
            if tok == "!":
                neg = True
                i += 1
                continue
            if tok in ("-s", "-d"):
                net = _saved_network(tokens[i + 1])
                if tok == "-s":
                    fields.source, fields.source_neg = net, neg
                else:
                    fields.destination, fields.destination_neg = net, neg
                i += 2
            elif tok in ("-i", "-o") and not neg:
                setattr(fields, "in_interface" if tok == "-i" else "out_interface", tokens[i + 1])
                i += 2
            elif tok == "-m" and not neg and tokens[i + 1] == "comment" and tokens[i + 2] == (
                "--comment"
            ):
                fields.comment = tokens[i + 3]
                i += 4
            elif tok == "-m" and not neg and tokens[i + 1] in ("conntrack", "state") and tokens[
                i + 2
            ] in ("--ctstate", "--state"):
                fields.ctstate = _once(fields.ctstate, tokens[i + 3])
                i += 4
                if tokens[i - 3] == "conntrack" and tokens[i: i + 1] == ("--ctdir",):
                    fields.ctdir = _once(fields.ctdir, tokens[i + 1])  # (iptables-save's order)
                    i += 2
            elif tok == "-m" and not neg and tokens[i + 1: i + 3] == ("conntrack", "--ctdir"):
                fields.ctdir = _once(fields.ctdir, tokens[i + 3])
                i += 4
            elif tok == "-j" and not neg:
                fields.target = tokens[i + 1]
                i += 2
            elif tok == "--to-source" and not neg and fields.target == "SNAT":
                fields.to_source = tokens[i + 1]
                i += 2
            elif tok == "--random-fully" and fields.target in ("SNAT", "MASQUERADE"):
                fields.random_fully = True
                i += 1
            else:
                return None
            if neg and tok not in ("-s", "-d"):
                return None
            neg = False
    except (IndexError, ValueError):
        return None
    return None if neg else fields  # a '!' negating nothing is no rule iptables prints


def comment_digest(tokens: Line) -> str | None:
    """The digest of a well-formed ``k3snet:<digest>`` comment in the rule, if any."""
    # tuple.index finds each "--comment" without a Python loop over the words:
    # observe reads one rule of ours per object (docs/performance.md, issue 7).
    start = 0
    while True:
        try:
            start = tokens.index("--comment", start) + 1
        except ValueError:
            return None
        if start < len(tokens):
            digest = tag_digest(tokens[start], _BY_DIGEST)
            if digest is not None:
                return digest


def _zero(version: int) -> Network:
    return ipaddress.ip_network("0.0.0.0/0" if version == 4 else "::/0")


def _destinations(fields: RuleFields, family: int) -> list[Network | None]:
    """Destinations to try: iptables-save prints no match for both ``None`` and ``/0``."""
    if fields.destination is not None and not fields.destination_neg:
        return [fields.destination]
    return [None, _zero(family)]


def rebuild_unit(
    family: int,
    digest: str,
    chain: str,
    lines: Sequence[Line],
    chains: Mapping[str, Sequence[Line]],
) -> Unit | None:
    """The object that ``lines`` (all tagged ``digest``, found in ``chain``) render, or ``None``.

    The object is rebuilt from the rule text, then must hash to ``digest`` and
    render exactly the lines found (in the same bucket chain, with the same
    exclusion chain): anything else is drift. Lines of a shape rebuilt before are
    first tried as that rule's object with their destination (:func:`_by_shape`),
    held to the same test.
    """
    known = _BY_DIGEST.get(digest)
    if known is not None and _matches(known, chain, lines, chains):
        return known  # written (or read) by this process: no need to parse the text again
    shaped = _shape_of(family, lines)
    if shaped is not None:
        unit = _by_shape(shaped, digest, chain, lines, chains)
        if unit is not None:
            return unit
    for obj in _rebuild_objects(family, chain, lines, chains):
        try:
            unit = render_unit(obj)
        except K3snetError:
            continue
        if unit.digest == digest and _matches(unit, chain, lines, chains):
            if shaped is not None:
                _learn_shape(shaped[0], unit)
            return unit
    return None


_Shape = tuple[object, ...]
"""A unit's rule lines without their destination and comment: the family, then for each
line where the destination is in it, the words before it, between it and the comment,
and after the comment."""
_SHAPES: dict[_Shape, Callable[[Network], NetObject] | Shaped] = {}
"""What makes the object of a rule of each shape; until a second rule has the shape, the
first one's object (a rule of a shape of its own costs no rendering of a shape)."""
_SHAPES_MAX: Final = 1024


def _shape_of(family: int, lines: Sequence[Line]) -> tuple[_Shape, str] | None:
    """The shape of a NAT rule's one line or a forward rule's two (the first with a
    destination, ``-d``, the reply half without it), and that destination; ``None`` for
    any other lines."""
    shape: list[object] = [family]
    found = ""
    try:
        for line, flag in zip(lines, ("-d", None) if len(lines) <= 2 else (), strict=False):
            if flag is None:  # the reply half: the same words for every destination
                said = line.index("--comment") + 1
                shape += [line[:said], line[said + 1:]]
                continue
            at = line.index(flag) + 1
            said = line.index("--comment", at) + 1
            if (found and line[at] != found) or (at >= 2 and line[at - 2] == "!"):
                return None  # two destinations, or an exclusion ("! -d")
            found = line[at]
            shape += [at, line[:at], line[at + 1:said], line[said + 1:]]
    except (ValueError, IndexError):
        return None
    return (tuple(shape), found) if found else None


def _by_shape(shaped: tuple[_Shape, str], digest: str, chain: str, lines: Sequence[Line],
              chains: Mapping[str, Sequence[Line]]) -> Unit | None:
    """The unit of ``lines`` read as the rule of a shape seen before (``shaped``: the shape
    and this rule's destination): the object of that rule with this destination, taken
    only if it renders exactly these lines with this digest in this chain (as any rebuilt
    object must), else ``None``.

    Most rules of a table differ from each other in their destination (and so in
    their comment) only: this skips parsing the words of each (docs/performance.md,
    "Reading by shape").
    """
    make = _SHAPES.get(shaped[0])
    if make is None:
        return None
    if isinstance(make, NetObject):  # the second rule of that shape: the shape now
        make = _SHAPES[shaped[0]] = retarget(make)
    try:
        unit = render_unit(make(_saved_network(shaped[1])))
    except (K3snetError, ValueError):
        return None
    return unit if unit.digest == digest and _matches(unit, chain, lines, chains) else None


def _learn_shape(shape: _Shape, unit: Unit) -> None:
    """Keep ``unit``'s object as the first of its shape, for :func:`_by_shape`."""
    obj = unit.obj
    if isinstance(obj, ForwardRule) or (isinstance(obj, MasqueradeRule | SnatRule)
                                        and obj.destination is not None
                                        and unit.sub_chain is None):
        if len(_SHAPES) >= _SHAPES_MAX:
            _SHAPES.clear()  # a bound: a shape not kept costs one full read
        _SHAPES.setdefault(shape, obj)


def _matches(
    unit: Unit, chain: str, lines: Sequence[Line], chains: Mapping[str, Sequence[Line]]
) -> bool:
    """The rules found are exactly the unit's (its bucket chain, its exclusion chain)."""
    if unit.chain != chain or sorted(unit.lines) != sorted(lines):
        return False
    return unit.sub_chain is None or tuple(chains.get(unit.sub_chain, ())) == unit.sub_lines


def _rebuild_objects(
    family: int, chain: str, lines: Sequence[Line], chains: Mapping[str, Sequence[Line]]
) -> Iterator[NetObject]:
    forwards = chain.startswith("K3SNET-F-")
    # A forward rule's reply half (its ``--ctstate``, ``--ctdir``) is not read: the object
    # rebuilt from the accept renders it, and the caller compares every line.
    parsed = [parse_rule(line) for line in lines if not forwards or "--ctstate" not in line]
    if any(p is None for p in parsed):
        return
    rules = [p for p in parsed if p is not None]
    try:
        if forwards:
            forward = [r for r in rules if r.ctstate is None]
            if len(forward) != 1 or len(rules) != 1:
                return
            f = forward[0]
            if f.source_neg or f.destination_neg:
                return
            yield ForwardRule(
                f.source if f.source is not None else _zero(family),
                f.destination if f.destination is not None else _zero(family),
                in_interface=f.in_interface,
                out_interface=f.out_interface,
            )
            return
        if len(rules) != 1:
            return
        yield from _rebuild_nat(family, rules[0], chains)
    except K3snetError:
        return


def _rebuild_nat(
    family: int, rule: RuleFields, chains: Mapping[str, Sequence[Line]]
) -> Iterator[NetObject]:
    exclude: list[Network] = []
    final = rule
    if rule.target is not None and rule.target.startswith("K3SNET-M-"):
        sub = [parse_rule(line) for line in chains.get(rule.target, ())]
        if not sub or any(s is None for s in sub):
            return
        body = [s for s in sub if s is not None]
        *returns, final = body
        for ret in returns:
            if ret.target != "RETURN" or ret.destination_neg:
                return
            exclude.append(ret.destination if ret.destination is not None else _zero(family))
    elif rule.destination is not None and rule.destination_neg:
        exclude.append(rule.destination)
    if final.target not in ("MASQUERADE", "SNAT"):
        return
    if rule.source_neg:
        return
    source = rule.source if rule.source is not None else _zero(family)
    for dest in _destinations(rule, family):
        if final.target == "SNAT":
            if final.to_source is None:
                return
            yield SnatRule(source, destination=dest, exclude=exclude,
                           out_interface=rule.out_interface, random_fully=final.random_fully,
                           to_address=final.to_source)
        else:
            yield MasqueradeRule(source, destination=dest, exclude=exclude,
                                 out_interface=rule.out_interface,
                                 random_fully=final.random_fully)
