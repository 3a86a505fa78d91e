"""A node's captured state: the raw texts the doctor traces a flow through.

:class:`NodeCapture` holds what ``iptables-save`` (nft and legacy, IPv4 and IPv6),
``nft -j list ruleset`` (and its text, for the tables' flags), ``ip -j route show
table all``, ``ip -j rule``, ``ip -j addr``, ``ipset save`` (the ipsets' members)
and the forwarding (IPv6's ``force_forwarding`` too) / ``rp_filter`` /
``src_valid_mark`` / ``ignore_routes_with_linkdown`` / IPv6 ``mtu`` sysctls print, plus the CNI
settings a backend reads (flannel's ``subnet.env``). It is read live
(:meth:`NodeCapture.read_live`, argv lists, optionally inside a network
namespace) or from a directory (:meth:`NodeCapture.read_dir`), and written to one
(:meth:`NodeCapture.write_dir`), so a node nobody can log in to can be diagnosed
from the files its operator sends. Nothing secret is captured: no counters'
owners, no keys, no process lists; only the files listed in :data:`FILES`.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import attrs

from k3snet._gojson import JsonTextError, load_json
from k3snet._kept import input_problem, read_input, write_output
from k3snet.errors import K3snetError

__all__ = ["AUX_FILES", "CNI_FILES", "EXTRA_FILES", "FILES", "MAX_FILE_BYTES", "NOT_INSTALLED",
           "BundleError", "NodeCapture"]

MAX_FILE_BYTES = 256 * 1024 * 1024
"""The largest bundle file read: ``nft -j list ruleset`` of 50 000 rules is ~35 MB; a
bigger file is not a capture, and reading it whole could take the doctor's memory."""

#: Bundle file name -> the argv that produces it (run inside the namespace).
FILES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType({
    "iptables-nft-v4.save": ("iptables-nft-save",),
    "iptables-nft-v6.save": ("ip6tables-nft-save",),
    "iptables-legacy-v4.save": ("iptables-legacy-save",),
    "iptables-legacy-v6.save": ("ip6tables-legacy-save",),
    "nft-ruleset.json": ("nft", "-j", "list", "ruleset"),
    "routes-v4.json": ("ip", "-4", "-j", "route", "show", "table", "all"),
    "routes-v6.json": ("ip", "-6", "-j", "route", "show", "table", "all"),
    "rules-v4.json": ("ip", "-4", "-j", "rule", "show"),
    "rules-v6.json": ("ip", "-6", "-j", "rule", "show"),
    # -d: a port's master kind (info_slave_kind), whose switch forwards what it receives.
    "addr.json": ("ip", "-j", "-d", "addr", "show"),
    "sysctl.txt": (
        "sysctl", "-a", "-r",
        r"^net\.ipv(4\.ip_forward|4\.conf\..*\.(forwarding|rp_filter|src_valid_mark)"
        r"|6\.conf\..*\.(forwarding|force_forwarding|mtu)"
        r"|[46]\.conf\..*\.ignore_routes_with_linkdown)$",
    ),
})

#: The keys of ``sysctl.txt`` by family: ``net.ipv4.ip_forward`` and, of each
#: ``net.<family>.conf.<device>``, these (what the regex of its command matches). The
#: capture reads them from ``/proc/sys/net`` itself (:func:`_read_sysctls`).
_SYSCTL_CONF: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType({
    "ipv4": ("forwarding", "ignore_routes_with_linkdown", "rp_filter", "src_valid_mark"),
    "ipv6": ("force_forwarding", "forwarding", "ignore_routes_with_linkdown", "mtu"),
})

_SYSCTLS: Final = "sysctl.txt"

#: Files whose command runs in the C locale: sysctl's ``-r`` regex, in a UTF-8 one, matches no
#: name holding a byte that is not UTF-8 (``.*`` stops at it), so such a device's
#: ``rp_filter`` went unread, taken as 0.
_BYTE_LOCALE: Final = frozenset({"sysctl.txt"})

# The most of /proc/net/netfilter/nfnetlink_queue a capture reads (65 536 queues of ~56 bytes).
NFQUEUE_BYTES: Final = 4 * 1024 * 1024
# The most of /proc/net/ip_vs a capture reads: some 270 000 real servers' lines.
IPVS_BYTES: Final = 16 * 1024 * 1024

#: Files a capture takes besides :data:`FILES` that the trace can do without (a bundle
#: captured before they were read has none, and is no less complete for it):
#: ``nft-ruleset.txt``, the ruleset's text without set elements, says each table's flags
#: (``dormant``: its chains are unhooked), which libnftables 1.0.6 prints wrong in JSON;
#: ``nexthops.json``, the nexthop objects routes name by ``nhid`` alone when
#: ``net.ipv4.nexthop_compat_mode`` is 0 (a kernel without them fails the command: no gap);
#: ``ipset.save``, the members of the kernel's ipsets, which ``-m set`` rules match (without
#: the ``ipset`` tool those rules stay unknown, as before it was read);
#: ``nfqueue.txt``, the numbers of the queues a program has bound (the namespace's
#: ``/proc/net/netfilter/nfnetlink_queue``, its first 4 MiB, each line's first field):
#: empty when none has or the module is not loaded; a queue no program reads drops what
#: it is given;
#: ``ipvs.txt``, the namespace's ``/proc/net/ip_vs`` (its first 16 MiB): the
#: IPVS virtual servers (kube-proxy's IPVS mode) and their real servers, which take what
#: the node receives for a virtual server's address; empty without IPVS;
#: ``routes-v6.txt``, the IPv6 routes' text, the one listing that says a route's ``mtu
#: lock`` (``ip -j`` prints the mtu alone): the kernel forwards an IPv6 packet up to its
#: device's MTU unless the route's mtu is locked, and sends the node's Packet Too Big for
#: a larger one only after postrouting (without the file: read unlocked, the default).
AUX_FILES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType({
    "nft-ruleset.txt": ("nft", "-t", "list", "ruleset"),
    "nexthops.json": ("ip", "-j", "nexthop", "show"),
    "ipset.save": ("ipset", "save"),
    # Of each line, the queue number alone (the next field is the reader's port id, as a
    # rule its process id).
    "nfqueue.txt": ("sh", "-c", 'f=/proc/net/netfilter/nfnetlink_queue; [ -e "$f" ] || exit 0; '
                    f'head -c {NFQUEUE_BYTES} "$f" | while read -r n _; do echo "$n"; done'),
    "ipvs.txt": ("sh", "-c", f'[ -e /proc/net/ip_vs ] || exit 0; exec head -c {IPVS_BYTES} '
                 '/proc/net/ip_vs'),
    "routes-v6.txt": ("ip", "-6", "route", "show", "table", "all"),
})

#: CNI files read when present (flannel's view of the cluster CIDR).
CNI_FILES: Final[Mapping[str, str]] = MappingProxyType({
    "flannel-subnet.env": "/run/flannel/subnet.env",
})

#: Files only a person adds to a bundle (the node cannot read them itself):
#: ``calico-ippools.json`` is ``kubectl get ippools.crd.projectcalico.org -o json``.
EXTRA_FILES: Final = ("calico-ippools.json",)

NOT_INSTALLED = "not installed"
"""Why a file is missing when its command is not installed (:attr:`NodeCapture.missing`)."""
_MANIFEST = "bundle.json"
_FORMAT = 1
_NETNS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# A name is whatever the kernel takes in an interface's (no space, no slash: sysctl writes
# a dot of it as "/"), bytes that are no UTF-8 too (read as lone surrogates).
_SYSCTL_LINE = re.compile(r"\s*(?P<name>\S+)\s*=\s*(?P<value>.*?)\s*")


_NFT_SAVES: Final = {"iptables-nft-v4.save": "ip", "iptables-nft-v6.save": "ip6"}
_TABLE_LINE = re.compile(r"^\*\S+$", re.MULTILINE)
_XT_TABLES: Final = ("raw", "mangle", "filter", "nat", "security")


def _xt_tables(texts: Mapping[str, str], name: str) -> tuple[str, ...]:
    """The tables of iptables-nft's names the captured ``nft -j list ruleset`` holds in the
    family of save ``name`` (all of them when it was not captured or does not read)."""
    try:
        items = json.loads(texts["nft-ruleset.json"])["nftables"]
        held = {(t["family"], t["name"]) for item in items if (t := item.get("table"))}
    except (KeyError, TypeError, ValueError, AttributeError):
        return _XT_TABLES
    return tuple(t for t in _XT_TABLES if (_NFT_SAVES[name], t) in held)


def _save_apart(prefix: Sequence[str], tool: str, tables: Sequence[str],
                timeout: float) -> str | None:
    """An iptables-nft-save that stopped at a rule it cannot decode (1.8.9+, exit 3: one
    written with nft, ``meta mark set 3``; it prints ``mangle`` first, and the tables
    after it were lost), read again table by table (``-t TABLE`` decodes that one's
    rules alone): a table that stops again is marked so
    (:func:`~k3snet.backends.iptables.save.stopped_mark`), and the trace reads it from
    ``nft-ruleset.json``, as an incompatible one. None: a read failed otherwise."""
    from k3snet.backends.iptables.save import stopped_mark  # noqa: PLC0415 - rare

    parts: list[str] = []
    for table in tables:
        try:
            done = subprocess.run([*prefix, tool, "-t", table], capture_output=True,
                                  encoding="utf-8", errors="surrogateescape",
                                  timeout=timeout,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode == 0:
            parts.append(done.stdout)
        elif f"*{table}" in done.stdout.splitlines():
            parts.append(stopped_mark(table, done.stderr))
        else:
            return None
    return "".join(parts)


def _read_apart(stopped: Sequence[str], prefix: Sequence[str], texts: dict[str, str],
                missing: dict[str, str], timeout: float) -> None:
    """Each save of ``stopped`` read table by table (:func:`_save_apart`) into ``texts``,
    and no longer ``missing`` when that read."""
    for name in stopped:
        apart = _save_apart(prefix, FILES[name][0], _xt_tables(texts, name), timeout)
        if apart is not None:
            texts[name] = apart
            missing.pop(name, None)


def _frozen(values: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(values))


def _read_capture(path: Path) -> str:
    """A bundle file's text: a regular file of at most :data:`MAX_FILE_BYTES`, read
    without waiting (:func:`k3snet._kept.read_input`) and never through a link (one
    swapped in after :meth:`NodeCapture.read_dir` looked), else a BundleError. UTF-8, a
    byte that is not (an interface's name, as the capture wrote it) read as the lone
    surrogate standing for it."""
    try:
        return read_input(path, MAX_FILE_BYTES, follow=False).decode(errors="surrogateescape")
    except OSError as exc:
        if exc.errno == errno.EFBIG:
            raise BundleError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB; a capture "
                              "file is far smaller") from None
        raise BundleError(f"{path}: {input_problem(exc)}") from None


def _read_sysctls(root: Path = Path("/proc/sys/net")) -> str:
    """``sysctl.txt`` as its command (:data:`FILES`) prints it, read from ``root`` in the
    calling thread's network namespace (``/proc/sys/net`` is the reader's, not the
    mount's): a process and a walk of every sysctl (~80 ms of CPU) for some ten files a
    device. As procps-ng 4 prints it: ``name = value`` lines, each directory's entries in
    byte order (its ``scandir`` and ``alphasort`` in the C locale), a dot of a device's
    name as ``/``, a byte that is not UTF-8 kept (a lone surrogate here); a file that
    cannot be read (a device gone meanwhile, IPv6 disabled) is left out, as ``-a`` does."""
    lines: list[str] = []
    for family, keys in _SYSCTL_CONF.items():
        base = os.fsencode(root / family)
        try:
            devices = sorted(os.listdir(os.path.join(base, b"conf")))
        except OSError:
            continue
        for device in devices:
            shown = device.replace(b".", b"/").decode(errors="surrogateescape")
            for key in keys:
                value = _sysctl_value(os.path.join(base, b"conf", device, key.encode()))
                if value is not None:
                    lines.append(f"net.{family}.conf.{shown}.{key} = {value}\n")
        if family == "ipv4":  # "conf" sorts before "ip_forward"
            value = _sysctl_value(os.path.join(base, b"ip_forward"))
            if value is not None:
                lines.append(f"net.ipv4.ip_forward = {value}\n")
    return "".join(lines)


def _sysctl_value(path: bytes) -> str | None:
    """A sysctl file's value as sysctl prints it (its line break dropped); None: unread."""
    try:
        with open(path, "rb") as file:
            return file.read(4096).decode(errors="surrogateescape").rstrip("\n")
    except OSError:
        return None


def _sysctls_in(netns: str | None, texts: dict[str, str], missing: dict[str, str]) -> None:
    """:func:`_read_sysctls` in network namespace ``netns`` (a thread entering it) into
    ``texts``, or why it could not be entered into ``missing``."""
    if netns is None:
        texts[_SYSCTLS] = _read_sysctls()
        return
    from k3snet.backends.netns import NetnsRunner  # noqa: PLC0415 - loaded by the CLI

    try:
        runner = NetnsRunner(netns)
        try:
            texts[_SYSCTLS] = runner.call(_read_sysctls)
        finally:
            runner.close()
    except K3snetError as exc:
        missing[_SYSCTLS] = f"/proc/sys/net: {exc}"


class BundleError(K3snetError, ValueError):
    """A capture could not be read or written (a missing directory, a malformed file)."""


#: The keys each lightweight tunnel's attributes take in ``ip -j route`` / ``ip -j nexthop``
#: output, which iproute2 (6.1) prints right after ``"encap"`` among the route's own keys:
#: ``"dst"``, ``"tos"`` and ``"id"`` twice in one object.
_ENCAP_KEYS: Final[Mapping[str, frozenset[str]]] = MappingProxyType({
    "ip": frozenset({"id", "src", "dst", "ttl", "tos", "key", "csum", "seq", "geneve_opts",
                     "vxlan_opts", "erspan_opts"}),
    "ip6": frozenset({"id", "src", "dst", "hoplimit", "tc", "key", "csum", "seq",
                      "geneve_opts", "vxlan_opts", "erspan_opts"}),
})
#: Keys whose first value is the route's or the nexthop's own under any other encap: a
#: route prints its ``dst`` and a nexthop object its ``id`` before the encap's attributes.
_OWN_FIRST: Final = frozenset({"dst", "id"})
#: Bundle files of ``ip -j`` route and nexthop listings, read with :func:`_ip_pairs`.
_IP_ROUTE_FILES: Final = frozenset({"routes-v4.json", "routes-v6.json", "nexthops.json"})


def _ip_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """One object of an ``ip -j`` route or nexthop listing (``object_pairs_hook``), its
    encap's attributes moved under ``"encap"`` as ``{"encap_type": "ip6", "dst": ...}``.

    ``ip -6 -j route`` prints ``encap ip6 dst fd05::9`` flat: ``{"dst": "fd19::/64",
    "encap": "ip6", "id": 0, "src": "::", "dst": "fd05::9", ...}``, and a plain dict keeps
    the last ``dst``, the tunnel's endpoint; an IPv4 route's ``tos`` its encap's (printed
    before the route's own), a nexthop object's ``id`` its encap's."""
    item: dict[str, Any] = {}
    index = 0
    while index < len(pairs):
        key, value = pairs[index]
        index += 1
        if key == "encap" and isinstance(value, str):
            own = _ENCAP_KEYS.get(value, frozenset())
            encap: dict[str, Any] = {"encap_type": value}
            while index < len(pairs) and pairs[index][0] in own and pairs[index][0] not in encap:
                encap[pairs[index][0]] = pairs[index][1]
                index += 1
            item["encap"] = encap
        elif key not in item or key not in _OWN_FIRST:
            item[key] = value
    return item


def _load(name: str, text: str) -> object:
    """A bundle file's JSON, else a BundleError naming it. Nesting is bounded (a file of
    100 000 ``[`` is a RecursionError to :func:`json.loads`, and the doctor's readers
    recurse into what they read: ``nft -j`` nests about 12 deep), and so are numbers
    (a 5000-digit integer is a plain ValueError)."""
    try:
        # strict=False: the tools print a control character of a name as it is (`ip -j`
        # and an interface named with an ESC); the doctor escapes what it prints.
        return load_json(text, strict=False, object_pairs_hook=_ip_pairs
                         if name in _IP_ROUTE_FILES else None)
    except JsonTextError as exc:
        raise BundleError(f"{name}: not JSON the doctor reads ({exc})") from None


@attrs.frozen
class NodeCapture:
    """The raw texts of one node's networking state, keyed by bundle file name.

    ``texts`` maps names from :data:`FILES` / :data:`CNI_FILES` to what the command
    printed; ``missing`` says, for each file not captured, why (a tool not
    installed, a command that failed). Parsers (:mod:`k3snet.doctor.iptables`,
    :mod:`k3snet.doctor.nftables`, :mod:`k3snet.doctor.routing`) read these texts.
    """

    texts: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen)
    missing: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen)

    def text(self, name: str) -> str:
        """The captured text of ``name`` ("" if it was not captured)."""
        return self.texts.get(name, "")

    def json(self, name: str) -> object:
        """``name`` parsed as JSON (None if not captured or empty)."""
        text = self.text(name).strip()
        if not text:
            return None
        return _load(name, text)

    def sysctls(self) -> dict[str, str]:
        """The captured sysctls, ``{"net.ipv4.ip_forward": "1", ...}``."""
        values: dict[str, str] = {}
        for line in self.text("sysctl.txt").splitlines():
            match = _SYSCTL_LINE.fullmatch(line)
            if match:
                values[match["name"]] = match["value"]
        return values

    # -- reading and writing ------------------------------------------------------------

    @classmethod
    def read_live(cls, netns: str | None = None, *, timeout: float = 30.0) -> NodeCapture:
        """Run the capture commands (inside ``netns`` when given) and keep their output.

        A command that is missing or fails is recorded in :attr:`missing`; only a
        namespace that does not exist is an error.
        """
        if netns is not None and not _NETNS.fullmatch(netns):
            raise BundleError(f"not a valid network namespace name: {netns!r}")
        if netns is not None and not Path("/run/netns", netns).exists():
            raise BundleError(f"network namespace {netns!r} does not exist")
        prefix = ("ip", "netns", "exec", netns) if netns is not None else ()
        texts: dict[str, str] = {}
        missing: dict[str, str] = {}
        stopped: list[str] = []  # iptables-nft-saves stopped in a table: read apart
        # The commands are independent: run them at once (a capture in ~0.1 s, not ~0.5 s).
        running: dict[str, subprocess.Popen[str]] = {}
        # sysctl.txt is read below, without a process.
        commands = {n: argv for n, argv in {**FILES, **AUX_FILES}.items() if n != _SYSCTLS}
        for name, argv in commands.items():
            if shutil.which(argv[0]) is None:
                # Said so before ``ip netns exec`` would fail to start it (exit 1): a tool
                # not installed wrote no rules, where a command that failed may hide some.
                missing[name] = f"{argv[0]}: {NOT_INSTALLED}"
                continue
            try:
                # A comment or an interface name is bytes to the kernel: a byte that is
                # not UTF-8 is kept as the lone surrogate standing for it (surrogateescape,
                # as the netlink backend reads a name), written back as that byte: two
                # devices named by as many such bytes stay two (U+FFFD made them one).
                # UTF-8 in any locale, as a bundle's files are read and written: under a
                # Latin-1 one, a device named é (bytes \xc3\xa9) was read as Ã©, whose
                # UTF-8 the bundle wrote and `ip link set` advice named, another device.
                running[name] = subprocess.Popen([*prefix, *argv], stdout=subprocess.PIPE,
                                                 stderr=subprocess.PIPE, encoding="utf-8",
                                                 errors="surrogateescape",
                                                 env=({**os.environ, "LC_ALL": "C"}
                                                      if name in _BYTE_LOCALE else None))
            except OSError as exc:
                missing[name] = f"{argv[0]}: {exc}"
        _sysctls_in(netns, texts, missing)  # while the commands run
        for name, process in running.items():
            argv = commands[name]
            try:
                stdout, stderr = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                missing[name] = f"{' '.join(argv)}: timed out after {timeout} s"
                continue
            if process.returncode != 0:
                if name in _NFT_SAVES and _TABLE_LINE.search(stdout) is not None:
                    stopped.append(name)
                missing[name] = f"{' '.join(argv)}: exit {process.returncode}: {stderr.strip()}"
                continue
            texts[name] = stdout
        _read_apart(stopped, prefix, texts, missing, timeout)
        for name in AUX_FILES:
            missing.pop(name, None)  # what the trace can do without is no capture gap
        for name, path in CNI_FILES.items():
            # CNI files live on the host's file system, which a network namespace shares.
            try:
                texts[name] = read_input(path, MAX_FILE_BYTES).decode()
            except (OSError, UnicodeDecodeError):
                continue
        return cls(texts, missing)

    @classmethod
    def read_dir(cls, directory: str | Path) -> NodeCapture:
        """Read a bundle written by :meth:`write_dir` (or by hand: any of :data:`FILES`)."""
        root = Path(directory)
        if not root.is_dir():
            raise BundleError(f"{root}: not a directory")
        texts: dict[str, str] = {}
        for name in (*FILES, *AUX_FILES, *CNI_FILES, *EXTRA_FILES, _MANIFEST):
            if (root / name).is_symlink():
                # A capture writes regular files: a link points wherever the bundle's
                # sender chose on the machine reading it (as root, any file).
                raise BundleError(f"{root / name}: a symbolic link; a bundle holds the "
                                  "regular files a capture wrote")
        for name in (*FILES, *AUX_FILES, *CNI_FILES, *EXTRA_FILES):
            path = root / name
            if path.is_file():
                texts[name] = _read_capture(path)
        missing: dict[str, str] = {}
        manifest = root / _MANIFEST
        if manifest.is_file():
            data = _load(str(manifest), _read_capture(manifest))
            if isinstance(data, dict) and isinstance(data.get("missing"), dict):
                missing = {str(k): str(v) for k, v in data["missing"].items()}
        if not texts:
            raise BundleError(f"{root}: no capture files ({', '.join(FILES)})")
        return cls(texts, missing)

    def write_dir(self, directory: str | Path) -> list[Path]:
        """Write every captured text and a ``bundle.json`` manifest; return the paths."""
        root = Path(directory)
        try:
            root.mkdir(parents=True, exist_ok=True)
            written = []
            for name in sorted(self.texts):
                path = root / name
                write_output(path, self.texts[name].encode(errors="surrogateescape"))
                written.append(path)
            manifest = root / _MANIFEST
            write_output(manifest, json.dumps({
                "format": _FORMAT,
                "files": sorted(self.texts),
                "missing": dict(sorted(self.missing.items())),
                "commands": {name: list(argv) for name, argv in {**FILES, **AUX_FILES}.items()},
            }, indent=2) + "\n")
        except OSError as exc:
            raise BundleError(f"{root}: {exc}") from exc
        return [*written, manifest]

    @classmethod
    def from_texts(cls, texts: Mapping[str, str], missing: Sequence[str] = ()) -> NodeCapture:
        """A capture built from texts in memory (tests, tools that fetched them elsewhere)."""
        unknown = set(texts) - set(FILES) - set(AUX_FILES) - set(CNI_FILES) - set(EXTRA_FILES)
        if unknown:
            raise BundleError(f"unknown capture files: {', '.join(sorted(unknown))}")
        return cls(texts, dict.fromkeys(missing, "not captured"))
