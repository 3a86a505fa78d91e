"""Read ``nft -j list ruleset`` (every table, whoever wrote it) and evaluate packets.

:func:`base_chains` gives each chain with a ``prerouting``, ``forward``, ``output``
(the node's own ICMP errors leave by it) or ``postrouting`` hook in the ``ip``, ``ip6``
and ``inet`` families as a :class:`~k3snet.doctor.packet.BaseChain`, and each
``ingress`` (``egress``) chain of the ``netdev`` and ``inet`` families as the first
prerouting (last postrouting) one, run on its devices only; each chain of a ``bridge``
table's prerouting, input, output and postrouting hooks runs for packets on a bridge.
Understood: matches on ``ip``/``ip6``
``saddr``/``daddr``/``protocol``/``nexthdr``, ``tcp``/``udp``/``th`` ports, ``tcp flags``,
``icmp``/``icmpv6`` ``type``/``code`` (by number or nft's names),
``meta`` ``l4proto``/``nfproto``/``iifname``/``oifname``/``mark``, ``ct state`` and
``ct direction``, with prefixes, ranges, anonymous and named sets; verdicts
``accept``, ``drop``, ``reject``, ``jump``, ``goto``, ``return``, verdict maps
(concatenated keys such as kube-proxy's ``ip daddr . meta l4proto . th dport``,
``numgen random`` as a random branch: :attr:`Packet.pick` says which one is
followed); ``masquerade``, ``snat``, ``dnat``, ``meta mark set`` (with ``or``,
``and``, ``xor`` of the mark); ``limit``/``meter`` with the flow under every rate
(``over`` does not match; a limit of bytes whose bucket holds less than 64 KiB is
unknown), a ``quota`` by the bytes it has counted (spent: ``over``
matches, ``until`` does not), a named one (``quota name "q"``, ``limit name "l"``) by
its object (a set element holding its own makes the lookup unknown); ``fib daddr
type`` and ``fib saddr ... oif``/``oifname`` (the route back to the source). Any
other expression makes its rule *unknown*, reported with a readable form of the JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from ipaddress import ip_address, ip_network
from typing import Any, Final, Literal

import attrs

from k3snet.doctor.packet import (
    PROTOCOLS,
    TCP_FLAGS,
    XT_MARKING,
    XT_TTL,
    BaseChain,
    ChainResult,
    ChainRun,
    Hook,
    NatAction,
    Packet,
    Uncertain,
    port_in,
    queue_verdict,
    trial_certain,
)
from k3snet.render.iptables.rules import XT_CONTINUE

__all__ = ["Ruleset", "base_chains", "maybe_dormant", "parse_ruleset"]

_HOOKS: Final = frozenset({"prerouting", "forward", "output", "postrouting"})
_FAMILIES: Final = {"ip": frozenset({4}), "ip6": frozenset({6}), "inet": frozenset({4, 6}),
                     "netdev": frozenset({4, 6})}
#: Device hooks, placed before every prerouting chain (ingress) and after every
#: postrouting one (egress): they run on their devices only.
_DEVICE_HOOKS: Final = {"ingress": ("prerouting", -(1 << 20)), "egress": ("postrouting", 1 << 20)}
#: Bridge-family hooks a routed packet crosses on a bridge (a pod's ``cni0``): arriving,
#: a frame from a port meets the bridge's prerouting and input hooks before the
#: bridge's own ingress; leaving, the bridge's output and postrouting hooks after its
#: egress (the bridge's forward hook sees bridged frames only).
_BRIDGE_HOOKS: Final = {"prerouting": ("prerouting", -(1 << 20) - 2),
                        "input": ("prerouting", -(1 << 20) - 1),
                        "output": ("postrouting", (1 << 20) + 1),
                        "postrouting": ("postrouting", (1 << 20) + 2)}
# Statements that neither match nor decide.
_NEUTRAL: Final = frozenset({"counter", "log", "quota", "limit", "meter"})
# Of those, the ones matching by rate or volume: ``over`` (``inv``) matches only beyond it.
_RATED: Final = frozenset({"limit", "quota", "meter"})
_MAX_DEPTH = 64
#: The table flags nft names; a table's JSON ``flags`` of anything else were misprinted.
_TABLE_FLAGS: Final = frozenset({"dormant", "owner", "persist"})
#: A table's header in ``nft list ruleset``'s text (an owned table's ends in comments)
#: and the flags line nft prints right under it.
_TABLE_HEAD: Final = re.compile(r"table (\S+) (\S+) \{(?: #.*)?")
_TABLE_FLAGS_LINE: Final = re.compile(r"\tflags ([a-z,]+)")
#: Why an ``{"xt": null}`` is not evaluated (libnftables 0.9.8 to 1.0.5 list every compat
#: match and target so: Debian 11, Ubuntu 22.04, RHEL 9 before 9.4).
_UNNAMED_XT: Final = ("an iptables-nft match or target this nft lists without its name "
                      "(libnftables before 1.0.6): iptables-nft-save shows the rule")
#: Tables iptables-nft owns; evaluated from iptables-save when that is captured.
IPTABLES_NFT_TABLES: Final = frozenset({"filter", "nat", "mangle", "raw", "security"})


#: What a statement of an unexpected shape raises where a mapping, a list or a number
#: was expected (a field of another type, a pair of three): such a statement is unknown.
_MALFORMED = (AttributeError, TypeError, KeyError, IndexError, ValueError)


class _Unknown(Exception):  # noqa: N818 - internal control flow, never escapes
    """An expression the evaluator does not understand."""


@attrs.frozen
class NftChain:
    """A chain: base chain attributes (None for a regular chain) and its rules' expressions."""

    family: str
    table: str
    name: str
    hook: str | None = None
    priority: int = 0
    kind: str = "filter"
    policy: str = "accept"
    rules: list[list[Any]] = attrs.field(factory=list)
    handle: int = 0
    devices: tuple[str, ...] | None = None
    """An ingress or egress chain's devices (None: not said, taken as every device)."""


@attrs.frozen
class Ruleset:
    """The chains and named sets of a ruleset, keyed by (family, table, name), its named
    quotas and limits (:attr:`objects`), and the tables' handles (the order they were
    created in), keyed by (family, name).

    ``flags`` holds the JSON ``flags`` of each table that has some, as it was printed;
    ``listed`` every table in the JSON's order; ``text_flags`` each table's flags as the
    ruleset's text says them (:meth:`with_text`), None when no text was read or it
    does not list the JSON's tables.
    """

    chains: dict[tuple[str, str, str], NftChain]
    sets: dict[tuple[str, str, str], list[Any]]
    tables: dict[tuple[str, str], int] = attrs.field(factory=dict)
    flags: dict[tuple[str, str], object] = attrs.field(factory=dict)
    listed: tuple[tuple[str, str], ...] = ()
    text_flags: dict[tuple[str, str], tuple[str, ...]] | None = None
    objects: dict[tuple[str, str, str, str], object] = attrs.field(factory=dict)
    """The named quotas and limits (``quota q { over 100 mbytes }``), keyed by (kind,
    family, table, name): what ``quota name "q"`` counts by."""
    # The texts of rules and statements made so far, by the id of the rule (statement),
    # kept with it: alive while cached, its id names no other. A walk evaluates a rule
    # many times (chains calling each other up to the walk's budget), and made its text
    # each time: half of what 100 000 rule evaluations cost.
    _texts: dict[int, tuple[object, str]] = attrs.field(factory=dict, init=False, eq=False,
                                                        repr=False)

    def text(self, item: Any, make: Callable[[Any], str]) -> str:
        """``make(item)``, the text of ``item`` (a rule of one chain, or a statement), made
        once for this ruleset."""
        cached = self._texts.get(id(item))
        if cached is not None and cached[0] is item:
            return cached[1]
        made = make(item)
        self._texts[id(item)] = (item, made)
        return made

    def with_text(self, text: str) -> Ruleset:
        """This ruleset with its tables' flags read from ``nft list ruleset``'s text
        (``nft -t``): the ``flags`` line under each table's header. The text is taken
        only when its header lines name exactly the JSON's tables, in order: a rule's
        comment holding a line break cannot add a header, and with it a flags line."""
        if not text.strip():
            return self
        lines = text.split("\n")
        heads = [(i, found) for i, line in enumerate(lines)
                 if (found := _TABLE_HEAD.fullmatch(line))]
        if [(found[1], found[2]) for _, found in heads] != list(self.listed):
            return self
        flags = {}
        for i, found in heads:
            named = _TABLE_FLAGS_LINE.fullmatch(lines[i + 1]) if i + 1 < len(lines) else None
            flags[(found[1], found[2])] = tuple(named[1].split(",")) if named else ()
        return attrs.evolve(self, text_flags=flags)

    def dormant(self, family: str, table: str) -> bool | None:
        """Whether the table is dormant (``flags dormant``: none of its chains is hooked,
        no packet sees them); None when it has flags that could not be read (libnftables
        1.0.6 prints another string of its memory as a table's JSON flags, and no text
        said them)."""
        if (family, table) not in self.flags:
            return False
        value = self.flags[(family, table)]
        names = [value] if isinstance(value, str) else value
        if isinstance(names, list) and names and all(
                isinstance(n, str) and n in _TABLE_FLAGS for n in names):
            return "dormant" in names
        said = self.text_flags.get((family, table)) if self.text_flags is not None else None
        return "dormant" in said if said else None

    def order(self, family: str, table: str, chain: str) -> tuple[int, int] | None:
        """(table handle, chain handle) of a chain, None when not in the ruleset."""
        found = self.chains.get((family, table, chain))
        handle = self.tables.get((family, table))
        if found is None or handle is None:
            return None
        return handle, found.handle


def parse_ruleset(data: object) -> Ruleset:
    """Index ``nft -j list ruleset`` output (already parsed from JSON)."""
    chains: dict[tuple[str, str, str], NftChain] = {}
    sets: dict[tuple[str, str, str], list[Any]] = {}
    tables: dict[tuple[str, str], int] = {}
    flags: dict[tuple[str, str], object] = {}
    listed: list[tuple[str, str]] = []
    objects: dict[tuple[str, str, str, str], object] = {}
    items = data.get("nftables", []) if isinstance(data, Mapping) else []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping):
            continue
        if "table" in item:
            t = item["table"]
            handle = t.get("handle")
            listed.append((t["family"], t["name"]))
            if isinstance(handle, int):
                tables[(t["family"], t["name"])] = handle
            if "flags" in t:
                flags[(t["family"], t["name"])] = t["flags"]
        elif "chain" in item:
            c = item["chain"]
            key = (c["family"], c["table"], c["name"])
            handle = c.get("handle")
            chains[key] = NftChain(c["family"], c["table"], c["name"], c.get("hook"),
                                   _priority(c.get("prio", 0)), c.get("type", "filter"),
                                   c.get("policy", "accept"),
                                   handle=handle if isinstance(handle, int) else 0,
                                   devices=_devices(c.get("dev")))
        elif "rule" in item:
            r = item["rule"]
            key = (r["family"], r["table"], r["chain"])
            chain = chains.setdefault(key, NftChain(r["family"], r["table"], r["chain"]))
            chain.rules.append(list(r.get("expr", [])))
        elif "set" in item or "map" in item:
            s = item.get("set") or item.get("map") or {}
            sets[(s["family"], s["table"], s["name"])] = list(s.get("elem", []))
        elif "quota" in item or "limit" in item:
            kind = "quota" if "quota" in item else "limit"
            o = item[kind]
            # One not read leaves a rule naming it unknown, not the bundle refused.
            if isinstance(o, Mapping) and all(isinstance(o.get(k), str)
                                              for k in ("family", "table", "name")):
                objects[(kind, o["family"], o["table"], o["name"])] = o
    return Ruleset(chains, sets, tables, flags, tuple(listed), objects=objects)


def _devices(value: object) -> tuple[str, ...] | None:
    """A chain's ``dev`` (one name, or a list of them for a multi-device chain)."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def _priority(value: object) -> int:
    if isinstance(value, int):
        return value
    names = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50,
             "srcnat": 100}
    if isinstance(value, str):
        return names.get(value, 0)
    return 0


def rule_text(chain: NftChain, expr: list[Any]) -> str:
    """A readable form of a rule: its chain, then its statements as ``nft list ruleset``
    prints them (a concatenation's ``ip daddr . tcp dport``, a verdict map's ``vmap {
    10.0.0.1 . 80 : drop }``); a statement of a shape not known here as compact JSON."""
    body = " ".join(_statement_text(s, chain.family) for s in expr)
    return f"nft {chain.family} {chain.table} {chain.name}: {body}"


def _statement_text(statement: Any, family: str = "") -> str:
    try:
        return _known_statement_text(statement, family)
    except _MALFORMED:  # a shape of another nft version, or an edited bundle: as it is
        return json.dumps(statement, sort_keys=True, separators=(",", ":"), default=str)


#: ``meta`` keys nft prints without ``meta`` (``iifname "cni0"``).
_BARE_META: Final = frozenset({"iif", "oif", "iifname", "oifname", "iifgroup", "oifgroup"})
#: Kinds of value nft prints in their own way: an interface name (``iif "lo"`` too) or a
#: helper quoted, a mark in hex, a raw payload's value in hex (``@nh,96,32 0xa000001``),
#: a time as ``1m30s``.
_QUOTED: Final = frozenset({"iifname", "oifname", "iifkind", "oifkind", "iif", "oif",
                            "helper"})
_MARKS: Final = frozenset({"mark"})
_RAW: Final = "raw payload"
_TIMES: Final = frozenset({"expiration"})
#: The reject nft prints as a bare ``reject``: each family's default.
_DEFAULT_REJECT: Final = {"ip": ("icmp", "port-unreachable"),
                          "ip6": ("icmpv6", "port-unreachable")}
#: ``log flags``, in the order nft prints them (``flags tcp sequence,options``).
_LOG_FLAGS: Final = ("tcp sequence", "tcp options", "ip options", "skuid", "ether")


def _known_statement_text(statement: Any, family: str = "") -> str:  # noqa: PLR0911 - one return per statement
    (key, value), = statement.items()
    if value is None:
        return str(key)
    if key == "match":
        left, right, op = value["left"], value["right"], value.get("op", "==")
        kind = _kind(left)
        if isinstance(left, Mapping) and "&" in left and isinstance(left["&"][1], list):
            # A flag mask: ``tcp flags syn / fin,syn,rst,ack``.
            masked = _value_text(left["&"][0])
            shown = f"{_value_text(right, kind)} / {','.join(map(str, left['&'][1]))}"
            return f"{masked} {shown}" if op in ("==", "in") else f"{masked} {op} {shown}"
        binop = isinstance(left, Mapping) and any(o in left for o in _BINOPS)
        op_text = "" if op == "in" or (op == "==" and not binop) else f"{op} "
        return f"{_value_text(left)} {op_text}{_value_text(right, kind)}"
    if key == "vmap":
        return (f"{_value_text(value['key'])} vmap "
                f"{_value_text(value['data'], _kind(value['key']))}")
    if key in ("jump", "goto"):
        return f"{key} {value['target']}"
    if key == "counter" and isinstance(value, Mapping):
        return f"counter packets {value['packets']} bytes {value['bytes']}"
    if key == "mangle":
        return (f"{_value_text(value['key'])} set "
                f"{_value_text(value['value'], _kind(value['key']))}")
    if key == "reject":
        if (value.get("type"), value.get("expr")) == _DEFAULT_REJECT.get(
                family, ("icmpx", "port-unreachable")):
            return "reject"
        return f"reject with {value['type']}" + (
            f" {value['expr']}" if value.get("expr") is not None else "")
    if key in ("masquerade", "snat", "dnat", "redirect"):
        return _nat_text(key, value)
    if key in _STATEFUL or (isinstance(value, str) and key in _NAMED_OBJECTS):
        return _stateful_text(key, value)
    if key == "log":
        parts = [f'prefix "{value["prefix"]}"' if "prefix" in value else "",
                 f"level {value['level']}" if value.get("level", "warn") != "warn" else "",
                 f"group {value['group']}" if "group" in value else "",
                 f"snaplen {value['snaplen']}" if "snaplen" in value else "",
                 f"queue-threshold {value['queue-threshold']}"
                 if "queue-threshold" in value else "", _log_flags(value.get("flags"))]
        return " ".join(["log", *filter(None, parts)])
    return json.dumps(statement, sort_keys=True, separators=(",", ":"))


#: Statements that name an object of the table (``counter name "x"``, ``ct helper set
#: "ftp-std"``).
_NAMED_OBJECTS: Final = frozenset({"counter", "quota", "limit", "synproxy", "ct helper"})


_STATEFUL: Final = frozenset({"limit", "quota", "ct count", "synproxy", "meter", "set"})


def _stateful_text(key: str, value: Any) -> str:  # noqa: PLR0911 - one return per statement
    """``limit``, ``quota``, ``ct count``, ``synproxy``, ``meter`` and a set's ``add`` /
    ``update`` as nft prints them: ``limit rate over 10 mbytes/second``, ``quota over
    100 mbytes``, ``ct count over 10``, ``synproxy mss 1460 wscale 7 timestamp
    sack-perm``, ``meter m size 65535 { ip saddr limit rate 10/second }``, ``update @s {
    ip saddr limit rate over 10/second }``, ``add @s { ip saddr timeout 10s }``; a named
    object's (``counter name "x"``, ``quota name "q"``, ``ct helper set "ftp-std"``)."""
    if isinstance(value, str):
        return f'{key} set "{value}"' if key == "ct helper" else f'{key} name "{value}"'
    over = "over " if value.get("inv") else ""
    if key == "limit":
        unit = value.get("rate_unit", "packets")
        if unit == "packets":
            burst = value.get("burst", 5)
            return (f"limit rate {over}{value['rate']}/{value.get('per', 'second')}"
                    + (f" burst {burst} packets" if burst != 5 else ""))
        burst = value.get("burst", 0)  # a byte rate's burst: printed where not 0
        return (f"limit rate {over}{value['rate']} {unit}/{value.get('per', 'second')}"
                + (f" burst {burst} {value.get('burst_unit', 'bytes')}" if burst else ""))
    if key == "quota":
        return (f"quota {over}{value['val']} {value.get('val_unit', 'bytes')}"
                + (f" used {value['used']} {value.get('used_unit', 'bytes')}"
                   if value.get("used") else ""))
    if key == "ct count":
        # nft -j prints the u32 signed: 4294967295 as -1 (nftables 1.0.6).
        count = value["val"]
        return f"ct count {over}{count + 2 ** 32 if _negative_int(count) else count}"
    if key == "synproxy":
        flags = value.get("flags", [])
        return " ".join(["synproxy", *(f"{k} {value[k]}" for k in ("mss", "wscale") if k in value),
                         *([flags] if isinstance(flags, str) else flags)])
    if key == "meter":
        return (f"meter {value['name']}" + (f" size {value['size']}" if "size" in value else "")
                + f" {{ {_value_text(value['key'])} {_statement_text(value['stmt'])} }}")
    elem, stmts = value["elem"], value.get("stmt", [])
    shown = _value_text(elem)
    if isinstance(elem, Mapping) and "elem" in elem:
        shown += "".join(f" {k} {_time_text(elem['elem'][k])}" for k in ("timeout", "expires")
                         if k in elem["elem"])
    return " ".join([f"{value['op']} {value['set']} {{", shown,
                     *(_statement_text(stmt) for stmt in stmts), "}"])


def _negative_int(value: Any) -> bool:
    """``value`` is an int below 0 and within a u32 written signed (-2 ** 31 on)."""
    return isinstance(value, int) and not isinstance(value, bool) and -2 ** 31 <= value < 0


def _log_flags(flags: Any) -> str:
    """``log``'s flags as nft prints them: ``flags all``, ``flags tcp sequence,options``,
    ``flags ip options``..."""
    named = [flags] if isinstance(flags, str) else flags or []
    if "all" in named:
        return "flags all"
    tcp = [f.removeprefix("tcp ") for f in _LOG_FLAGS[:2] if f in named]
    unknown = [f for f in named if f not in _LOG_FLAGS]
    if unknown:
        raise ValueError(unknown)  # another nft's flag: the statement as JSON
    return " ".join([*(["flags tcp " + ",".join(tcp)] if tcp else []),
                     *(f"flags {f}" for f in _LOG_FLAGS[2:] if f in named)])


def _time_text(seconds: int) -> str:
    """A time as nft prints it: ``1h2m3s``, ``1m30s``, ``5s``."""
    parts = [(seconds // 86400, "d"), (seconds // 3600 % 24, "h"), (seconds // 60 % 60, "m"),
             (seconds % 60, "s")]
    return "".join(f"{n}{unit}" for n, unit in parts if n) or "0s"


def _nat_text(key: str, value: Mapping[str, Any]) -> str:
    """``snat ip to ADDR[:PORT]``, ``masquerade random,persistent``, ``dnat ip to ip daddr
    map { ... }``, ``snat ip prefix to ip saddr map { ... }`` as nft prints them."""
    text = key + (f" {value['family']}" if "family" in value else "")
    kinds = value.get("type_flags")
    text += "".join(f" {k}" for k in ([kinds] if isinstance(kinds, str) else kinds or []))
    address = value.get("addr")
    port = value.get("port")
    if address is not None:
        shown = _value_text(address)
        if isinstance(address, str) and ":" in address and port is not None:
            shown = f"[{address}]"
        text += f" to {shown}" + (f":{_value_text(port)}" if port is not None else "")
    elif port is not None:
        text += f" to :{_value_text(port)}"
    # ``netmap`` goes with ``prefix``: nft does not print it.
    given = value.get("flags")
    flags = [str(f) for f in ([given] if isinstance(given, str) else given or [])
             if f != "netmap"]
    if flags:
        text += " " + ",".join(flags)
    return text


#: nft's binary operators on values (``meta mark & 0xff00``).
_BINOPS: Final = ("&", "|", "^", "<<", ">>")


def _kind(left: Any) -> Any:
    """How the values a match compares ``left`` with are printed: quoted (``_QUOTED``'s
    keys), as a mark (hex), as they are (None); a tuple of them for a concatenation."""
    if not isinstance(left, Mapping):
        return None
    if "concat" in left:
        return tuple(_kind(part) for part in left["concat"])
    for op in _BINOPS:
        if op in left:
            return _kind(left[op][0])
    if isinstance(left.get("payload"), Mapping) and "base" in left["payload"]:
        return _RAW
    key = (left.get("meta") or left.get("ct") or {}).get("key")
    return key if key in _QUOTED or key in _MARKS or key in _TIMES else None


def _value_text(value: Any, kind: Any = None) -> str:  # noqa: PLR0911, PLR0912 - per expression kind
    """``value`` (either side of a match, a map's key or data) as nft prints it."""
    if isinstance(value, Mapping):
        if len(value) == 1 and next(iter(value)) in ("accept", "drop", "continue", "return"):
            return str(next(iter(value)))
        if "jump" in value or "goto" in value:
            verb = "jump" if "jump" in value else "goto"
            return f"{verb} {value[verb]['target']}"
        if "payload" in value:
            payload = value["payload"]
            if "protocol" in payload:
                return f"{payload['protocol']} {payload['field']}"
            return f"@{payload['base']},{payload['offset']},{payload['len']}"
        if "meta" in value:
            key = value["meta"].get("key")
            return str(key) if key in _BARE_META else f"meta {key}"
        if "ct" in value:
            ct = value["ct"]
            return " ".join(str(p) for p in ("ct", ct.get("dir"), ct.get("family"),
                                             ct.get("key")) if p is not None)
        if "concat" in value:
            kinds = kind if isinstance(kind, tuple) else (kind,) * len(value["concat"])
            return " . ".join(_value_text(v, k) for v, k in zip(value["concat"], kinds,
                                                                  strict=False))
        if "prefix" in value:  # a mark's too: ``meta mark 0x00010000/16``
            return f"{_value_text(value['prefix']['addr'], kind)}/{value['prefix']['len']}"
        if "range" in value:
            return "-".join(_value_text(v, kind) for v in value["range"])
        if "set" in value:
            items = value["set"] if isinstance(value["set"], list) else [value["set"]]
            return "{ " + ", ".join(_element_text(v, kind) for v in items) + " }"
        for op in _BINOPS:
            if op in value:
                a, b = value[op]
                return f"{_value_text(a)} {op} {_value_text(b, _kind(a))}"
        if "numgen" in value:
            numgen = value["numgen"]
            offset = numgen.get("offset", 0)
            return (f"numgen {numgen['mode']} mod {numgen['mod']}"
                    + (f" offset {offset}" if offset else ""))
        if "fib" in value:
            fib = value["fib"]
            return f"fib {' . '.join(fib['flags'])} {fib['result']}"
        if "rt" in value:
            return f"rt {value['rt']['key']}"
        if "tcp option" in value:
            option = value["tcp option"]
            return f"tcp option {option['name']}" + (
                f" {option['field']}" if "field" in option else "")
        if "elem" in value:
            return _value_text(value["elem"]["val"], kind)
        if "map" in value:  # a NAT statement's address from a map
            lookup = value["map"]
            return (f"{_value_text(lookup['key'])} map "
                    f"{_value_text(lookup['data'], _kind(lookup['key']))}")
    if isinstance(value, list):
        return ",".join(_value_text(v, kind) for v in value)
    if isinstance(value, bool):
        return "exists" if value else "missing"  # fib ... oif, exthdr/option presence
    if isinstance(value, int) and kind in _MARKS:
        return f"0x{value:08x}"
    if isinstance(value, int) and kind == _RAW:
        return f"0x{value:x}"
    if isinstance(value, int) and kind in _TIMES:
        return _time_text(value)
    if isinstance(value, str):
        return f'"{value}"' if kind in _QUOTED else value
    return json.dumps(value, sort_keys=True)


def _element_text(item: Any, kind: Any) -> str:
    """A set's element, or a map's ``key : data``."""
    if isinstance(item, list) and len(item) == 2:
        return f"{_value_text(item[0], kind)} : {_value_text(item[1])}"
    return _value_text(item, kind)


# ---------------------------------------------------------------- values of a packet


def _field(packet: Packet, left: Any) -> Any:  # noqa: PLR0911, PLR0912 - per expression kind
    """The packet's value for the left side of a match; False if the match cannot apply."""
    if isinstance(left, Mapping) and "concat" in left and isinstance(left["concat"], list):
        parts = tuple(_field(packet, part) for part in left["concat"])
        return _NoMatch if any(v is _NoMatch for v in parts) else _Concat(parts)
    if isinstance(left, Mapping) and "payload" in left:
        proto, field = left["payload"].get("protocol"), left["payload"].get("field")
        if proto in ("ip", "ip6"):
            if (proto == "ip") != (packet.family == 4):
                return _NoMatch
            if field in ("saddr", "daddr"):
                return packet.src if field == "saddr" else packet.dst
            if field in ("protocol", "nexthdr"):
                return packet.proto_number
        if proto in ("icmp", "icmpv6") and packet.proto != proto:
            return _NoMatch  # nft's hidden ``meta l4proto`` dependency breaks the rule
        if proto in ("icmp", "icmpv6") and field in ("type", "code"):
            if packet.icmp is None:
                raise _Unknown
            return _IcmpNumber(packet.icmp[0 if field == "type" else 1],
                               _ICMP_NAMES[proto, field])
        if proto in ("tcp", "udp", "th", "sctp") and field in ("sport", "dport"):
            if packet.proto != proto and not (proto == "th" and packet.proto in (
                    "tcp", "udp", "sctp")):
                return _NoMatch
            value = packet.sport if field == "sport" else packet.dport
            return _EPHEMERAL if value is None else value
        raise _Unknown
    if packet.bridged and isinstance(left, Mapping) and ("ct" in left or (
            "meta" in left and left["meta"].get("key") in ("iif", "iifname", "oif", "oifname"))):
        raise _Unknown  # a port the capture does not name; conntrack per br_netfilter
    if isinstance(left, Mapping) and "meta" in left:
        key = left["meta"].get("key")
        values = {
            "l4proto": packet.proto_number,
            "nfproto": 2 if packet.family == 4 else 10,
            "protocol": 0x0800 if packet.family == 4 else 0x86DD,
            "iifname": packet.iif,
            "oifname": packet.oif,
            "iif": packet.iif,
            "oif": packet.oif,
        }
        if key == "mark":
            if packet.mark is None:
                raise _Unknown
            return packet.mark
        if key in values:
            return values[key]
        raise _Unknown
    if isinstance(left, Mapping) and "ct" in left:
        key = left["ct"].get("key")
        if key == "state":
            return packet.ctstate
        if key == "direction":
            if packet.ctstate in ("invalid", "untracked"):
                return _NoMatch  # no conntrack entry: the expression breaks the rule
            return packet.direction
        raise _Unknown
    if (isinstance(left, Mapping) and isinstance(left.get("tcp option"), Mapping)
            and "field" in left["tcp option"] and packet.proto != "tcp"):
        # nft_exthdr breaks off the rule on a packet that is not TCP (nft puts no ``tcp``
        # match before it); a TCP packet's options (``exists`` / ``missing`` too, which
        # read 0 there instead) are not traced: unknown below.
        return _NoMatch
    if isinstance(left, Mapping) and "&" in left:
        inner, mask = left["&"]
        value = _field(packet, inner)
        if value is _NoMatch:
            return value
        if isinstance(value, _IcmpNumber) and isinstance(mask, int):
            return _IcmpNumber(value & mask, value.names)
        if isinstance(value, int) and isinstance(mask, int):
            return value & mask
    raise _Unknown


class _NoMatchType:
    pass


class _IcmpNumber(int):
    """A packet's ICMP (ICMPv6) type or code, with the ``names`` ``nft -j`` prints for
    such values (``destination-unreachable``, ``frag-needed``): wherever it is compared
    (a literal, a range, an anonymous or named set, a verdict map's key, a part of a
    concatenation) the other side may be a name (:func:`_literal`)."""

    names: Mapping[str, int]

    def __new__(cls, value: int, names: Mapping[str, int]) -> _IcmpNumber:
        number = super().__new__(cls, value)
        number.names = names
        return number


class _EphemeralType:
    """A port the flow leaves open: somewhere in :data:`EPHEMERAL_PORTS`."""


_NoMatch = _NoMatchType()
_EPHEMERAL = _EphemeralType()
_SYMBOLS = {"ipv4": 2, "ipv6": 10, "ip": 0x0800, "ip6": 0x86DD, **PROTOCOLS}


def _contains(  # noqa: PLR0911, PLR0912 - one return per kind of right-hand side
        right: Any, value: Any, ruleset: Ruleset, family: str, table: str) -> bool:
    """Whether ``value`` (a packet field) is in ``right`` (literal, prefix, range, set)."""
    if isinstance(value, _Concat):
        return _contains_concat(right, value, ruleset, family, table)
    if value is _EPHEMERAL:
        found = port_in(None, _port_ranges(right, ruleset, family, table))
        if found is None:
            raise _Unknown
        return found
    if isinstance(right, str) and right.startswith("@"):
        elements = ruleset.sets.get((family, table, right[1:]))
        if elements is None:
            raise _Unknown
        return any(_contains(e, value, ruleset, family, table) for e in elements)
    if isinstance(right, Mapping):
        if "set" in right:
            return any(_contains(e, value, ruleset, family, table) for e in right["set"])
        if "prefix" in right:
            network = ip_network(f"{right['prefix']['addr']}/{right['prefix']['len']}",
                                 strict=False)
            return isinstance(value, type(network.network_address)) and value in network
        if "range" in right:
            low, high = (_literal(v, value) for v in right["range"])
            return bool(low <= value <= high)
        if "elem" in right:
            return _counted(right["elem"], _contains(right["elem"].get("val"), value, ruleset,
                                                     family, table))
        raise _Unknown
    if isinstance(right, list):  # ct state { a, b } with the "in" operator
        return any(_contains(e, value, ruleset, family, table) for e in right)
    if isinstance(value, str) and isinstance(right, str):
        if right.endswith("*") and not right.endswith("\\*"):
            return value.startswith(right[:-1])
        return value == right.replace("\\*", "*")
    return bool(_literal(right, value) == value)


def _counted(elem: Mapping[str, Any], found: bool) -> bool:
    """``found``, the lookup's hit of set element ``elem``, unless the element holds a
    quota or a limit of its own (``elements = { 10.42.0.10 quota over 100 mbytes }``):
    the kernel's lookup counts the packet there and an ``over`` with room left, a spent
    quota, breaks the match (kernel 6.18: the rule passed over), which this reader does
    not judge: :class:`_Unknown`."""
    if found and any(key in elem for key in _OBJECTS):
        raise _Unknown
    return found


def _contains_concat(right: Any, value: Any, ruleset: Ruleset, family: str,
                     table: str) -> bool:
    """Whether the concatenated ``value`` equals an element of ``right`` part by part."""
    if isinstance(right, str) and right.startswith("@"):
        elements = ruleset.sets.get((family, table, right[1:]))
        if elements is None:
            raise _Unknown
        return any(_contains_concat(e, value, ruleset, family, table) for e in elements)
    if isinstance(right, Mapping) and "set" in right:
        return any(_contains_concat(e, value, ruleset, family, table) for e in right["set"])
    if isinstance(right, Mapping) and "elem" in right:
        return _counted(right["elem"], _contains_concat(right["elem"].get("val"), value,
                                                        ruleset, family, table))
    if isinstance(right, Mapping) and "concat" in right:
        parts = right["concat"]
        if not isinstance(parts, list) or len(parts) != len(value.values):
            raise _Unknown
        return all(_contains(p, v, ruleset, family, table)
                   for p, v in zip(parts, value.values, strict=True))
    raise _Unknown


def _port_ranges(right: Any, ruleset: Ruleset, family: str,
                 table: str) -> list[tuple[int, int]]:
    """The port ranges a right-hand side names (for matching an unknown port)."""
    if isinstance(right, int):
        return [(right, right)]
    if isinstance(right, str) and right.startswith("@"):
        elements = ruleset.sets.get((family, table, right[1:]))
        if elements is None:
            raise _Unknown
        return [r for e in elements for r in _port_ranges(e, ruleset, family, table)]
    if isinstance(right, Mapping) and "range" in right:
        low, high = right["range"]
        if isinstance(low, int) and isinstance(high, int):
            return [(low, high)]
    if isinstance(right, Mapping) and "set" in right:
        return [r for e in right["set"] for r in _port_ranges(e, ruleset, family, table)]
    raise _Unknown


def _literal(right: Any, like: Any) -> Any:
    """``right`` converted to ``like``'s kind (an address, a number)."""
    if isinstance(like, str):
        return str(right)
    if isinstance(like, int):
        if isinstance(right, int):
            return right
        if isinstance(like, _IcmpNumber):
            if isinstance(right, str) and right in like.names:
                return like.names[right]
            raise _Unknown  # a name of nft's this table lacks
        if isinstance(right, str) and right in _SYMBOLS:
            return _SYMBOLS[right]
        raise _Unknown
    try:
        return ip_address(right)
    except ValueError as exc:
        raise _Unknown from exc


def _fib(packet: Packet, fib: Mapping[str, Any]) -> str | None:
    """What ``fib`` gives ``packet``: ``fib daddr type`` the destination's address type;
    ``fib saddr [. mark] [. iif] oif`` (``oifname``) the interface the route back to the
    source leaves by, with ``iif`` only when that is the input interface (any nexthop of
    an IPv4 multipath route will do), None when there is none ("missing"): the
    reverse-path check firewalld and others make (``nft_fib4_eval``, ``nft_fib6_eval``)."""
    result, flags = fib.get("result"), fib.get("flags")
    flags = {flags} if isinstance(flags, str) else set(flags) if isinstance(flags, list) else None
    if packet.fib is None or flags is None or packet.bridged:
        raise _Unknown
    if result == "type" and flags == {"daddr"}:
        return packet.fib.address_type(packet.dst)
    if result not in ("oif", "oifname") or "saddr" not in flags or not flags <= {
            "saddr", "mark", "iif"}:
        raise _Unknown
    if "iif" in flags and packet.oif is not None:
        raise _Unknown  # in forward, which interface the lookup takes depends on the kernel
    mark = packet.mark if "mark" in flags else 0
    if mark is None:
        raise _Unknown
    back = packet.fib.reverse(packet.src, packet.dst, mark=mark)
    if back.type == "unknown":
        raise _Unknown
    if back.type != "unicast" or back.route is None:
        return None
    if "iif" not in flags:
        return back.route.device
    devices = {back.route.device, *(device for _, device in back.route.nexthops)}
    if packet.iif not in devices:
        return None
    if packet.family == 6 and len(devices) > 1:
        raise _Unknown  # IPv6 hashes the flow onto one path, which is not followed here
    return packet.iif


def _fib_match(packet: Packet, match: Mapping[str, Any], ruleset: Ruleset,
               chain: NftChain) -> bool:
    """A match on ``fib``: ``oif missing`` / ``exists`` (false / true), or a value."""
    fib, op, right = match["left"]["fib"], match.get("op", "=="), match.get("right")
    if not isinstance(fib, Mapping):
        raise _Unknown
    value = _fib(packet, fib)
    if isinstance(right, bool) and fib.get("result") in ("oif", "oifname"):
        inside = (value is not None) == right
    elif value is None:
        raise _Unknown  # the index 0 or an empty name, as nft stores "missing"
    else:
        inside = _contains(right, value, ruleset, chain.family, chain.table)
    return _by_op(op, inside)


def _is_tcp_flags(left: Any) -> bool:
    """``left`` is ``tcp flags``, or ``tcp flags & MASK``."""
    if isinstance(left, Mapping) and "&" in left and isinstance(left["&"], list) and len(
            left["&"]) == 2:
        left = left["&"][0]
    return (isinstance(left, Mapping) and isinstance(left.get("payload"), Mapping)
            and left["payload"].get("protocol") == "tcp"
            and left["payload"].get("field") == "flags")


def _flag_bits(value: Any) -> int:
    """TCP flags as nft's JSON writes them (``"syn"``, ``["syn", "ack"]``, ``{"|": [...]}``,
    a number) as their bits."""
    if isinstance(value, bool):
        raise _Unknown
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value in TCP_FLAGS:
        return TCP_FLAGS[value]
    if isinstance(value, Mapping) and len(value) == 1 and isinstance(value.get("|"), list):
        value = value["|"]
    if isinstance(value, list) and value:
        bits = 0
        for one in value:
            bits |= _flag_bits(one)
        return bits
    raise _Unknown


def _tcp_flags_match(packet: Packet, match: Mapping[str, Any]) -> bool:
    """A match on ``tcp flags`` (the traced packets': SYN, SYN-ACK, then ACK): ``==`` /
    ``!=`` compare (after ``& MASK``), a bare ``tcp flags syn`` (``in``) asks for any of
    the bits, ``!`` for none."""
    left, op, right = match["left"], match.get("op", "=="), match.get("right")
    if packet.proto != "tcp":
        return False  # the expression's dependency (meta l4proto tcp) fails
    if packet.tcp_flags is None:
        raise _Unknown
    value = packet.tcp_flags
    if "&" in left:
        value &= _flag_bits(left["&"][1])
    if isinstance(right, Mapping) and "set" in right and isinstance(right["set"], list):
        inside = value in [_flag_bits(v) for v in right["set"]]
    elif op == "in":
        return value & _flag_bits(right) != 0
    elif op == "!":
        return value & _flag_bits(right) == 0
    else:
        inside = value == _flag_bits(right)
    return _by_op(op, inside)


def _match(packet: Packet, match: Mapping[str, Any], ruleset: Ruleset,
           chain: NftChain) -> bool:
    left = match.get("left")
    if isinstance(left, Mapping) and "fib" in left:
        return _fib_match(packet, match, ruleset, chain)
    if _is_tcp_flags(left):
        return _tcp_flags_match(packet, match)
    value = _field(packet, match.get("left"))
    if value is _NoMatch:
        return False
    if value is None:  # no such interface on this path
        return match.get("op") == "!="
    op = match.get("op", "==")
    right = match.get("right")
    if op in ("<", ">", "<=", ">="):
        if value is _EPHEMERAL:
            raise _Unknown
        limit = _literal(right, value)
        return bool({"<": value < limit, ">": value > limit, "<=": value <= limit,
                     ">=": value >= limit}[op])
    inside = _contains(right, value, ruleset, chain.family, chain.table)
    return _by_op(op, inside)


#: nft's names of ICMP and ICMPv6 types and codes (``icmp type destination-unreachable
#: icmp code frag-needed``, ``icmpv6 type packet-too-big``), which ``nft -j`` prints
#: (:class:`_IcmpNumber`).
_ICMP_NAMES: dict[tuple[str, str], dict[str, int]] = {
    ("icmp", "type"): {
        "echo-reply": 0, "destination-unreachable": 3, "source-quench": 4, "redirect": 5,
        "echo-request": 8, "router-advertisement": 9, "router-solicitation": 10,
        "time-exceeded": 11, "parameter-problem": 12, "timestamp-request": 13,
        "timestamp-reply": 14, "info-request": 15, "info-reply": 16,
        "address-mask-request": 17, "address-mask-reply": 18},
    ("icmp", "code"): {
        "net-unreachable": 0, "host-unreachable": 1, "prot-unreachable": 2,
        "port-unreachable": 3, "frag-needed": 4, "net-prohibited": 9, "host-prohibited": 10,
        "admin-prohibited": 13},
    ("icmpv6", "type"): {
        "destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3,
        "parameter-problem": 4, "echo-request": 128, "echo-reply": 129,
        "mld-listener-query": 130, "mld-listener-report": 131, "mld-listener-done": 132,
        "mld-listener-reduction": 132, "nd-router-solicit": 133, "nd-router-advert": 134,
        "nd-neighbor-solicit": 135, "nd-neighbor-advert": 136, "nd-redirect": 137,
        "router-renumbering": 138, "ind-neighbor-solicit": 141, "ind-neighbor-advert": 142,
        "mld2-listener-report": 143},
    ("icmpv6", "code"): {
        "no-route": 0, "admin-prohibited": 1, "addr-unreachable": 3, "port-unreachable": 4,
        "policy-fail": 5, "reject-route": 6},
}


def _by_op(op: str, inside: bool) -> bool:
    """A match's result from whether the value is in its right side: ``==`` and ``in``
    as is, ``!=`` the opposite; any other operator is one doctor cannot evaluate."""
    if op == "!=":
        return not inside
    if op in ("==", "in"):
        return inside
    raise _Unknown


# ---------------------------------------------------------------- evaluation


@attrs.define
class _Run(ChainRun):
    """A :class:`ChainRun` that also knows the ruleset (for jumps) and the chain's kind."""

    ruleset: Ruleset = attrs.field(kw_only=True)
    kind: str = attrs.field(default="filter", kw_only=True)


def _run_chain(chain: NftChain, run: _Run, depth: int = 0) -> ChainResult | None:
    if depth > _MAX_DEPTH:
        run.unknowns.append(Uncertain(f"nft chain {chain.name}", "jumps nest too deep",
                                      "unknown"))
        return None
    for expr in chain.rules:
        if not run.visit(f"nft chain {chain.name}"):
            return None
        outcome = _run_rule(chain, expr, run, depth)
        if outcome == "return":
            return None
        if isinstance(outcome, ChainResult):
            return outcome
    return None


def _run_rule(chain: NftChain, expr: list[Any], run: _Run,  # noqa: PLR0911, PLR0912 - per statement
              depth: int) -> ChainResult | str | None:
    text = run.ruleset.text(expr, lambda rule: rule_text(chain, rule))
    for index, statement in enumerate(expr):
        if not isinstance(statement, Mapping) or len(statement) != 1:
            _unknown_rule(chain, expr, index, text, run, depth=depth,
                          reason="malformed statement")
            return None
        (key, value), = statement.items()
        try:
            if key == "match":
                if not _match(run.packet, value, run.ruleset, chain):
                    return None
                continue
            if key in ("snat", "dnat") and _other_family(value, run.packet):
                continue  # ``snat ip to`` in an inet table leaves IPv6 packets be
            if key in _OBJECTS and (not isinstance(value, Mapping) or "map" in value):
                value = _named(chain, key, value, run.ruleset)
            if key == "quota" and isinstance(value, Mapping) and not _quota_left(value):
                # Spent: ``quota over`` matches every packet, ``quota until`` none.
                if value.get("inv") is True:
                    continue
                return None
            if key in _RATED and _over(key, value):
                return None  # the traced flow is one new connection, under every rate
            if key in _NEUTRAL or (key == "xt" and value.get("name") == "comment"):
                continue
            if key == "notrack" or (key == "xt" and _xt_target(value) == "NOTRACK"):
                run.untrack(text)
                continue
            # TTL, HL: the TTL they set is not listed (1 expires the packet): unknown.
            if key == "xt" and _xt_target(value) in XT_CONTINUE - XT_TTL:
                if _xt_target(value) in XT_MARKING:  # its value (or restore) not listed
                    run.packet = attrs.evolve(run.packet, mark=None)
                continue
            if key == "mangle" and _is_maxseg(value.get("key")):
                # MSS clamping changes nothing else the doctor follows, and never drops;
                # nft_exthdr breaks off the rule on a packet that is not TCP (nft puts no
                # ``tcp`` match before a set): what follows is TCP's alone. A value not
                # read is no clamp counted.
                if run.packet.proto != "tcp":
                    return None
                mss = value.get("value")
                if mss == {"rt": {"key": "mtu"}} or (isinstance(mss, int) and not isinstance(
                        mss, bool) and 0 <= mss <= 0xFFFF):  # an edited bundle's -1: no clamp
                    run.clamp(text, mss if isinstance(mss, int) else None)
                continue
            if key == "mangle" and _is_mark(value.get("key")):
                run.packet = attrs.evolve(run.packet,
                                          mark=_mark_value(value.get("value"), run.packet))
                continue
            decided = (_xt_decide(value, text, run) if key == "xt"
                       else _decide(chain, key, value, text, run, depth=depth))
        except (_Unknown, *_MALFORMED):  # a shape this reader does not know: never decides
            _unknown_rule(chain, expr, index, text, run, depth=depth,
                          reason=_UNNAMED_XT if key == "xt" and value is None
                          else "cannot evaluate "
                          + run.ruleset.text(statement, _statement_text))
            return None
        if decided is not None:
            return decided
    return None


def _other_family(value: Any, packet: Packet) -> bool:
    """A nat statement naming the family it translates (``snat ip to`` in an ``inet``
    table), not the packet's: the kernel leaves the packet be (nft_nat_inet_eval)."""
    family = value.get("family") if isinstance(value, Mapping) else None
    return family in ("ip", "ip6") and (family == "ip") != (packet.family == 4)


def _over(key: str, value: Any) -> bool:
    """``limit rate over``, ``quota over`` (or a meter of one): a statement that matches
    only a flow beyond a rate or a volume, which one new flow is taken not to be."""
    if key == "meter":
        value = value.get("stmt")
        if not isinstance(value, Mapping) or len(value) != 1:
            raise _Unknown
        (key, value), = value.items()
        if key not in ("limit", "quota"):
            raise _Unknown
    if key == "limit" and isinstance(value, Mapping):
        _holds_a_packet(value)
    return isinstance(value, Mapping) and value.get("inv") is True


def _holds_a_packet(value: Mapping[str, Any]) -> None:
    """:class:`_Unknown` for a limit of bytes whose bucket, full, holds less than a packet
    of the flow may be (64 KiB): nft_limit takes a packet's length in bytes and the bucket
    holds the rate's and the burst's, so a longer packet is over it always (``limit rate
    over 10 bytes/second drop`` drops every packet, its ``until`` accepts none). A limit of
    packets holds at least one (a burst of 0 is 5)."""
    unit = value.get("rate_unit", "packets")
    if unit == "packets":
        return
    bucket = (_bytes(value.get("rate"), unit)
              + _bytes(value.get("burst", 0), value.get("burst_unit", "bytes")))
    if bucket < _LARGEST_PACKET:
        raise _Unknown


#: Statements that may name an object of the table that counts (``quota name "q"``).
_OBJECTS: Final = frozenset({"quota", "limit"})


def _named(chain: NftChain, key: str, value: Any, ruleset: Ruleset) -> Mapping[str, Any]:
    """The named quota or limit ``value`` (``quota name "q"``) as its statement would
    be, ``over`` and the bytes counted said by the object (``quota q { over 100 bytes
    used 100 bytes }``); :class:`_Unknown` for one that is not listed, or picked by a
    map (``quota name ip saddr map @m``, an object for each source)."""
    if not isinstance(value, str):
        raise _Unknown
    found = ruleset.objects.get((key, chain.family, chain.table, value))
    if not isinstance(found, Mapping):
        raise _Unknown
    if key == "limit":
        return found
    # A quota object's bytes and those counted are listed in bytes (nft: ``bytes``, ``used``).
    return {"val": found.get("bytes"), "used": found.get("used", 0),
            "inv": found.get("inv") is True}


# nft's byte units (nft_quota's JSON: ``val_unit``, ``used_unit``).
_BYTE_UNITS: Final = {"bytes": 1, "kbytes": 1024, "mbytes": 1024 ** 2, "gbytes": 1024 ** 3}
# The largest packet (a GSO one, 64 KiB): a quota with less left may be spent by the
# flow's first packet.
_LARGEST_PACKET = 65536


def _quota_left(value: Mapping[str, Any]) -> bool:
    """Whether quota ``value`` (its ``used`` as listed) is not spent, the flow's packets
    taken within what is left; raises :class:`_Unknown` when a packet may spend it.

    A quota is no rate: its count of bytes only grows (nft_quota: the packet's length is
    added, and the quota is over once the count reaches it). ``quota over 1 mbytes used
    2 mbytes`` drops every packet, while a flow was taken to be under it."""
    val = _bytes(value.get("val"), value.get("val_unit", "bytes"))
    room = val - _bytes(value.get("used", 0), value.get("used_unit", "bytes"))
    if 0 < room <= _LARGEST_PACKET:
        raise _Unknown
    return room > 0


def _bytes(count: Any, unit: Any) -> int:
    """``count`` ``unit`` (``kbytes``) in bytes; :class:`_Unknown` for another shape."""
    if (not isinstance(count, int) or isinstance(count, bool) or count < 0
            or not isinstance(unit, str) or unit not in _BYTE_UNITS):
        raise _Unknown
    return count * _BYTE_UNITS[unit]


def _is_maxseg(key: Any) -> bool:
    """``tcp option maxseg size``: the MSS option of a TCP SYN (set by MSS clamping)."""
    return isinstance(key, Mapping) and key.get("tcp option") == {
        "name": "maxseg", "field": "size"}


def _is_mark(key: Any) -> bool:
    return isinstance(key, Mapping) and key.get("meta", {}).get("key") == "mark"


def _mark_value(value: Any, packet: Packet) -> int | None:
    """The mark ``meta mark set VALUE`` gives: a number, or ``mark OP number`` (kube-proxy's
    ``mark set mark or 0x4000``); None when it depends on something not followed."""
    if isinstance(value, int):
        return value
    if _is_mark(value):
        return packet.mark
    if isinstance(value, Mapping) and len(value) == 1:
        (op, operands), = value.items()
        if op in ("|", "&", "^") and isinstance(operands, list) and len(operands) == 2:
            left, right = (_mark_value(v, packet) for v in operands)
            if left is None or right is None:
                return None
            return {"|": left | right, "&": left & right, "^": left ^ right}[op] & 0xFFFFFFFF
    return None


def _decide(chain: NftChain, key: str, value: Any, text: str, run: _Run,  # noqa: PLR0911, PLR0912 - per statement
            *, depth: int) -> ChainResult | str | None:
    """A verdict or NAT statement; None for a statement that lets the rule go on."""
    if key == "accept":
        return run.result("accept", text)
    if key in ("drop", "reject"):
        return run.result("drop", text)
    if key == "return":
        run.path.append(text)
        return "return"
    if key == "continue":
        return "next"
    if key in ("jump", "goto"):
        return _jump(chain, key, value.get("target"), text, run, depth=depth)
    if key == "vmap":
        verdict = _vmap(run, chain, value)
        if verdict is None:
            return None
        (v_key, v_value), = verdict.items()
        return _decide(chain, v_key, v_value, text, run, depth=depth)
    # A nat statement counts in a chain a nat base chain jumps to (kube-proxy's).
    if key == "masquerade" and run.kind == "nat":
        return run.result("nat", text, NatAction("masquerade"))
    if key == "snat" and run.kind == "nat":
        address = value.get("addr") if isinstance(value, Mapping) else None
        if not isinstance(address, str):
            raise _Unknown
        return run.result("nat", text, NatAction("snat", ip_address(address)))
    if key == "queue":
        queued, why, _ = _queue(value, run.packet)
        if queued is None:
            raise _Unknown  # a program decides (its effect: _effect)
        return run.result(queued, f"{text} ({why})")
    if key == "dnat" and run.kind == "nat":
        address = value.get("addr") if isinstance(value, Mapping) else None
        port = value.get("port") if isinstance(value, Mapping) else None
        if not isinstance(address, str) or not (port is None or isinstance(port, int)):
            raise _Unknown  # a map lookup or a range: not followed
        return run.result("nat", text, NatAction("dnat", ip_address(address), port))
    raise _Unknown


def _jump(chain: NftChain, key: str, target: Any, text: str, run: _Run, *,
          depth: int) -> ChainResult | str | None:
    callee = run.ruleset.chains.get((chain.family, chain.table, str(target)))
    if callee is None:
        raise _Unknown
    run.path.append(text)
    result = _run_chain(callee, run, depth + 1)
    if result is not None:
        return result
    return "return" if key == "goto" else "next"


def _vmap(run: _Run, chain: NftChain, value: Mapping[str, Any]) -> Mapping[str, Any] | None:
    key = value.get("key")
    packet_value: Any
    if isinstance(key, Mapping) and "numgen" in key:
        packet_value = _numgen(run, key["numgen"])
    else:
        packet_value = _field(run.packet, key)
    if packet_value is _NoMatch:
        return None
    data = value.get("data")
    entries: Iterable[Any]
    if isinstance(data, str) and data.startswith("@"):
        entries = run.ruleset.sets.get((chain.family, chain.table, data[1:]), [])
    elif isinstance(data, Mapping) and "set" in data:
        entries = data["set"]
    else:
        raise _Unknown
    for entry in entries:
        pair = entry if isinstance(entry, list) else entry.get("map") if isinstance(
            entry, Mapping) else None
        if not isinstance(pair, list) or len(pair) != 2:
            raise _Unknown
        if _contains(pair[0], packet_value, run.ruleset, chain.family, chain.table):
            verdict = pair[1]
            if not isinstance(verdict, Mapping):
                raise _Unknown
            return verdict
    return None


@attrs.frozen
class _Concat:
    """A packet's values for a concatenated key (``ip daddr . meta l4proto . th dport``)."""

    values: tuple[Any, ...]


def _numgen(run: _Run, numgen: Mapping[str, Any]) -> int:
    """``numgen random mod N``: the branch :attr:`Packet.pick` names (the last when it
    names none), recorded as a random choice."""
    mod, offset = numgen.get("mod"), numgen.get("offset", 0)
    if numgen.get("mode") != "random" or not isinstance(mod, int) or mod < 1 or not isinstance(
            offset, int):
        raise _Unknown
    run.randoms += 1
    # Like the iptables statistic rules: the last branch is the fall-through one.
    run.random_taken = run.random_taken or run.packet.pick < mod - 1
    return offset + min(run.packet.pick, mod - 1)


def _xt_target(value: Any) -> str | None:
    """The name of an iptables-nft compat target (``{"xt": {"type": "target", "name":
    "REJECT"}}``; nft lists no more of it), None for a match or another shape.

    Some do what their name says whatever their options, and are read so: ``REJECT``
    drops (the kernel's ``reject_tg`` answers ``NF_DROP`` after sending its answer),
    ``MASQUERADE`` masquerades (its options choose ports), ``NOTRACK`` exempts. ``CT``
    (iptables-nft writes ``-j NOTRACK`` as ``CT`` too) may exempt the packet or give it
    a zone or a helper, which its hidden options say: it stays unknown, as do ``SNAT``,
    ``DNAT`` (the address) and ``MARK`` (the value)."""
    if isinstance(value, Mapping) and value.get("type") == "target":
        name = value.get("name")
        return name if isinstance(name, str) else None
    return None


def _queue(value: Any, packet: Packet) -> tuple[Literal["accept", "drop"] | None, str, str]:
    """:func:`~k3snet.doctor.packet.queue_verdict` of nft's ``queue`` statement: ``num N``
    or ``num A-B`` (0 when left out; a map or hash: not known), ``flags bypass``."""
    num = value.get("num", 0) if isinstance(value, Mapping) else None
    flags = value.get("flags", []) if isinstance(value, Mapping) else None
    flags = [flags] if isinstance(flags, str) else flags
    numbers: range | None = None
    if isinstance(num, int) and not isinstance(num, bool):
        numbers = range(num, num + 1)
    elif (isinstance(num, Mapping) and isinstance(num.get("range"), list)
          and len(num["range"]) == 2 and all(isinstance(n, int) for n in num["range"])):
        numbers = range(num["range"][0], num["range"][1] + 1)
    bypass = "bypass" in flags if isinstance(flags, list) else None
    return queue_verdict(packet.queues, numbers, bypass)


def _xt_queue(value: Any, packet: Packet) -> tuple[Literal["accept", "drop"] | None, str, str]:
    """A compat ``QUEUE`` (queue 0, no bypass) or ``NFQUEUE``, whose queue numbers and
    bypass nft does not list."""
    if _xt_target(value) == "QUEUE":
        return queue_verdict(packet.queues, range(1), bypass=False)
    return queue_verdict(packet.queues, None, bypass=None)


def _xt_decide(value: Any, text: str, run: _Run) -> ChainResult:
    """What a compat target that says what it does by its name decides (:func:`_xt_target`)."""
    target = _xt_target(value)
    if target in ("NFQUEUE", "QUEUE"):
        verdict, why, _ = _xt_queue(value, run.packet)
        if verdict is not None:
            return run.result(verdict, f"{text} ({why})")
        raise _Unknown
    if target == "REJECT":
        return run.result("drop", text)  # reject_tg: NF_DROP, whatever it answers
    if target == "MASQUERADE" and run.kind == "nat":
        return run.result("nat", text, NatAction("masquerade"))
    raise _Unknown


def _unknown_rule(chain: NftChain, expr: list[Any], index: int, text: str, run: _Run, *,
                  depth: int, reason: str) -> None:
    """Record a rule whose statement ``index`` cannot be evaluated, and what it would do."""
    run.unknowns.append(Uncertain(text, reason, _effect(chain, expr[index:], run, depth)))


def _effect(chain: NftChain, rest: list[Any], run: _Run, depth: int) -> str:  # noqa: PLR0911, PLR0912 - per statement
    for statement in rest:
        if not isinstance(statement, Mapping) or len(statement) != 1:
            return "unknown"
        (key, value), = statement.items()
        if key in ("accept",):
            return "accept"
        if key in ("drop", "reject"):
            return "drop"
        if key in ("masquerade", "snat", "dnat"):
            return "nat"
        if key == "xt" and _xt_target(value) in XT_TTL:
            return "drop"
        if key == "xt" and _xt_target(value) in XT_CONTINUE:
            continue
        if key == "mangle" and isinstance(value, Mapping) and _is_maxseg(value.get("key")):
            if run.packet.proto != "tcp":
                return "none"  # nft_exthdr breaks off the rule (see _run_rule)
            continue  # an MSS clamp decides nothing
        if key == "xt" and _xt_target(value) in ("NFQUEUE", "QUEUE"):
            return _xt_queue(value, run.packet)[2]
        if key == "queue":
            return _queue(value, run.packet)[2]
        if key == "xt" and _xt_target(value) in ("REJECT", "MASQUERADE", "NOTRACK", "NETMAP"):
            return {"REJECT": "drop", "MASQUERADE": "nat", "NETMAP": "nat"}.get(
                str(_xt_target(value)), "none")
        if key in ("jump", "goto"):
            callee = run.ruleset.chains.get((chain.family, chain.table, str(
                value.get("target") if isinstance(value, Mapping) else "")))
            if callee is None:
                return "unknown"
            trial = _Run(run.packet, ruleset=run.ruleset, kind=run.kind, budget=run.budget)
            result = _run_chain(callee, trial, depth + 1)
            if not trial_certain(result, trial.unknowns):
                return "unknown"
            return "none" if result is None and key == "jump" else (
                result.verdict if result else "policy")
        if key in ("vmap", "redirect", "tproxy", "mangle", "xt", "return"):
            # A return skips the rest of the chain, where the verdict may be decided.
            return "unknown"
    return "none"


def _evaluator(chain: NftChain, ruleset: Ruleset) -> Callable[[Packet], ChainResult]:
    def evaluate(packet: Packet) -> ChainResult:
        run = _Run(packet, ruleset=ruleset, kind=chain.kind)
        result = _run_chain(chain, run)
        if result is not None:
            return result
        verdict: Literal["accept", "drop"] = "drop" if chain.policy == "drop" else "accept"
        return run.result(verdict, f"policy {chain.policy}")
    return evaluate


def _device_chain(chain: NftChain, ruleset: Ruleset) -> BaseChain:
    """An ingress (egress) chain as the first prerouting (last postrouting) one, run only
    for packets arriving on (leaving by) one of its devices."""
    hook, priority = _DEVICE_HOOKS[str(chain.hook)]
    evaluate = _evaluator(chain, ruleset)
    where = f"nft {chain.family} {chain.table} {chain.name}"

    def on_devices(packet: Packet) -> ChainResult:
        device = packet.iif if chain.hook == "ingress" else packet.oif
        if chain.devices is not None and device not in chain.devices:
            return ChainResult("accept", f"{chain.hook} of {', '.join(chain.devices)} only",
                               mark=packet.mark)
        if chain.hook == "ingress":  # before conntrack: ``ct state`` reads invalid there
            return evaluate(attrs.evolve(packet, ctstate="invalid"))
        return evaluate(packet)
    hook_name: Hook = hook  # type: ignore[assignment]
    return BaseChain(where, hook_name, priority, "filter", _FAMILIES[chain.family], on_devices,
                     ruleset.order(chain.family, chain.table, chain.name))


def _bridge_chain(chain: NftChain, ruleset: Ruleset, bridges: Collection[str]) -> BaseChain:
    """A bridge-family chain, run for packets arriving on (leaving by) a bridge of
    ``bridges`` (the masters of the kind ``bridge``: a bond's or VRF's ports never meet
    the bridge family's hooks)."""
    hook, priority = _BRIDGE_HOOKS[str(chain.hook)]
    evaluate = _evaluator(chain, ruleset)

    def on_bridges(packet: Packet) -> ChainResult:
        device = packet.iif if hook == "prerouting" else packet.oif
        if device not in bridges:
            return ChainResult("accept", f"bridge {chain.hook}: {device} is no bridge",
                               mark=packet.mark)
        return evaluate(attrs.evolve(packet, bridged=True))
    hook_name: Hook = hook  # type: ignore[assignment]
    return BaseChain(f"nft bridge {chain.table} {chain.name}", hook_name, priority, "filter",
                     frozenset({4, 6}), on_bridges,
                     ruleset.order(chain.family, chain.table, chain.name))


def base_chains(ruleset: Ruleset, *,
                read_from_save: Collection[tuple[str, str, str | None]] = (),
                bridges: Collection[str] = ()) -> list[BaseChain]:
    """The ruleset's base chains on the hooks a forwarded flow crosses.

    The chains ``read_from_save`` names (family, table, chain; a chain of ``None``: the
    whole table) are left out: iptables-nft's, evaluated from ``iptables-save``, which
    says more (``xt`` matches are opaque in JSON). Any other chain is evaluated here:
    iptables-nft-save prints only ``# Table 'filter' is incompatible`` for a table
    written with ``nft``, and leaves out the base chains it does not know (an admin's
    ``nft add chain ip filter ...``), so a drop there was evaluated nowhere and a
    blocked flow read "reaches".
    """
    chains = []
    for chain in ruleset.chains.values():
        if chain.family not in (*_FAMILIES, "bridge"):
            continue
        dormant = ruleset.dormant(chain.family, chain.table)
        if dormant:
            continue  # unhooked: the kernel runs no packet through its chains
        if chain.family == "bridge":
            if chain.hook not in _BRIDGE_HOOKS:
                continue
            found = _bridge_chain(chain, ruleset, bridges)
        elif chain.hook in _DEVICE_HOOKS and chain.family in ("netdev", "inet"):
            found = _device_chain(chain, ruleset)
        elif (chain.hook not in _HOOKS or chain.family == "netdev"
              or (chain.family, chain.table, chain.name) in read_from_save
              or (chain.family, chain.table, None) in read_from_save):
            continue
        else:
            kind: Literal["filter", "nat"] = "nat" if chain.kind == "nat" else "filter"
            hook: Hook = chain.hook  # type: ignore[assignment]
            found = BaseChain(f"nft {chain.family} {chain.table} {chain.name}", hook,
                              chain.priority, kind, _FAMILIES[chain.family],
                              _evaluator(chain, ruleset),
                              ruleset.order(chain.family, chain.table, chain.name))
        chains.append(maybe_dormant(found, chain.family, chain.table)
                      if dormant is None else found)
    return chains


def maybe_dormant(chain: BaseChain, family: str, table: str) -> BaseChain:
    """``chain`` of a table that may be dormant (flags that could not be read): what it
    decides is uncertain, but for an accept that changes nothing (what an unhooked
    chain amounts to)."""
    run = chain.evaluate

    def evaluate(packet: Packet) -> ChainResult:
        result = run(packet)
        if (result.verdict == "accept" and result.mark == packet.mark
                and result.untracked is None):
            return result
        effect = "accept" if result.mark == packet.mark and result.untracked is None else (
            "unknown")
        return attrs.evolve(result, unknowns=(*result.unknowns, Uncertain(
            f"nft table {family} {table}", "its flags could not be read (libnftables 1.0.6 "
            "prints them wrong in JSON, and no ruleset text said them): if it is dormant, "
            "none of its chains sees the packet", effect)))
    return attrs.evolve(chain, evaluate=evaluate)
