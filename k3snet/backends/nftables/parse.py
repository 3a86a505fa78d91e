"""Reading the kernel's JSON listings: k3snet's own table, and other tables' egress rules.

Pure functions of ``nft -j list`` output (through the :class:`~.kernel.NftKernel`
seam), tested without root on recorded listings.

k3snet's own table
    :func:`read_own` rebuilds the objects from the kernel's listing, so what
    observe reports is what the kernel does: from nft's text when every line of
    it is one k3snet writes (:mod:`.text`, about three times quicker), else from
    the JSON listing, which judges every case. Only rules shaped exactly as
    :mod:`k3snet.render.nftables` writes them map back to an object; everything
    else in k3snet's table is a :class:`~k3snet.model.Drift` (owned, so every
    plan deletes it, and its delete is the repair): a base chain's policy,
    type, hook or priority; a rule or chain k3snet does not write; a forward
    rule without its other half; a duplicate; a tag that is not its rule's
    content's (the rule is also reported as what it now does).

Foreign state
    Best effort and read-only (:class:`ForeignReader`). One ``list chains``
    (names and hooks, no rules), then a listing of each base chain hooked at
    ``postrouting`` (type nat) or ``forward`` (type filter) of other tables and
    of the chains they jump to unconditionally, at most 64 chains: on a K3s node
    with flannel on iptables-nft, a handful of small chains; kube-proxy's
    service chains are never read. Simple ``masquerade`` / ``snat`` rules become
    foreign :class:`~k3snet.model.MasqueradeRule` / :class:`~k3snet.model.SnatRule`
    objects, earlier ``return`` rules with a destination become exclusions
    (flannel's ``FLANNEL-POSTRTG`` reads as "masquerade 10.42.0.0/16 except
    10.42.0.0/16, 224.0.0.0/4"), and a rule behind anything not understood is
    left out rather than guessed (leaving out only costs a redundant rule of
    k3snet's; a wrong guess would skip a needed one). A return that only tests a
    set mark (kube-proxy's "masquerade me" mark 0x4000) is ignored: those packets
    are masqueraded by kube-proxy. iptables-nft writes ``-j MASQUERADE`` as a
    compat target whose options libnftables' JSON hides, so its
    ``--random-fully`` reads as ``random_fully=False``; its ``-j SNAT --to-source ADDR``
    is read from the kernel's target data (``SNAT_TO``) as ``snat to ADDR``; one to a
    range or ports (and ``-j NETMAP``, any compat target k3snet cannot see into) is not
    modelled: in a nat chain met no later than k3snet's it may translate (a block),
    elsewhere it accepts nothing. Forward accepts whose replies are accepted too become foreign
    :class:`~k3snet.model.ForwardRule` objects when nothing may drop their
    packets: no earlier rule of their chain (or of a chain it jumps to), and no
    other base chain on the forward hook, since an accept ends only its own
    chain (firewalld#527): every other one must accept the packets too, or let
    them reach its accept policy. A device's ``ingress`` chain (``netdev`` or
    ``inet``) is read for drops as testing that device (``iifname``), its policy drop
    as one more drop after its rules (conntrack has not run there: a ``ct state``
    accept takes no reply); one on a device the node does not have drops nothing, and is
    said (a doubt; the node's devices read by :class:`~k3snet.backends.routed.RoutedBy`).
    A ``netdev`` chain on a device's ``egress`` hook runs after
    NAT: its policy drop and its stopping rules are a warning for the wanted rules
    leaving by that device whose destination they may name
    (:meth:`ForwardDefaults.leaving`), no block.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import ipaddress
import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import attrs

from k3snet._logline import shell_join
from k3snet.backends.nftables.cache import Cache, Repair, Table
from k3snet.backends.nftables.kernel import (
    CT_FLAGS,
    SLOW_LISTING,
    SNAT_TO,
    TTL_ARGS,
    XT_NO_POD,
    BoundedLister,
    ListingTimeoutError,
    Lists,
    NftKernel,
    TextLists,
    TextUnlistedError,
    UnprintableNameError,
    list_in_child,
)
from k3snet.backends.nftables.text import (
    Lines,
    ListedTable,
    chain_names,
    listed_rules,
    prefix_of,
    table_flags,
    table_marked,
    table_objects,
)
from k3snet.backends.prefixes import Prefixes
from k3snet.backends.replies import ByAddresses
from k3snet.backends.routed import MOST_PREFIXES, RoutedBy
from k3snet.errors import BackendError, ModelError
from k3snet.model import (
    Drift,
    NetObject,
    interfaces_left,
    interfaces_may_meet,
    out_interface_rank,
    validate_interface_name,
)
from k3snet.model.cidr import Network, contains, overlaps
from k3snet.model.forward import ForwardBlock, ForwardRule
from k3snet.model.nat import MasqueradeRule, NatBlock, SnatRule
from k3snet.render.iptables.rules import XT_CONTINUE, XT_TTL, ttl_expires
from k3snet.render.nftables import (
    CHAIN_HOOKS,
    FORWARD_CHAIN,
    MARKER_CHAIN,
    NAT_CHAIN,
    REPLY_SUFFIX,
    TABLE_COMMENT,
    model_ifname,
    nft_rules,
)
from k3snet.render.tag import tag_digest

__all__ = ["Doubt", "EgressDefault", "ForeignRead", "ForeignReader", "ForwardDefault",
           "ForwardDefaults", "Match", "finish_foreign_read", "leftover_drift", "own_object",
           "parse_rule", "read_foreign_within", "read_own", "start_foreign_read", "table_of"]

_MAX_FOREIGN_CHAINS = 64  # bounds the foreign walk; a node's egress path has a handful
_MAX_JUMP_DEPTH = 8
_MAX_WALKED_RULES = 4096  # bounds the walk through conditional jumps (each is followed)
_MAX_VMAP_ELEMENTS = 256  # a verdict map read element by element, up to this size
_MAX_ACCEPTED_BEFORE = 16  # accepts a foreign drop names as met before it (the rest: a doubt)
_TABLE_FLAGS = frozenset({"dormant", "owner", "persist"})  # what nft names
_STOPS = ("drop", "queue")  # what parse_rule makes of drop, reject and queue
_ENDING = ("drop", "reject", "queue")  # the verdicts a forward block is made of
_OWN_NAT_PRIO: int = CHAIN_HOOKS[NAT_CHAIN]["prio"]  # srcnat: 100
_CONNTRACK_PRIO = -200  # NF_IP_PRI_CONNTRACK: a chain before it sees untracked packets
_XT_CT_NOTRACK = 1  # xt_ct_target_info's flag: -j CT --notrack, -j NOTRACK


def table_of(obj: NetObject, families: tuple[str, ...]) -> str:
    """The nft family of the table ``obj``'s rules go in."""
    if families == ("inet",):
        return "inet"
    return "ip" if obj.family == 4 else "ip6"


@dataclass(slots=True)
class Match:
    """What one kernel rule tests and does, as far as k3snet understands it."""

    proto: str | None = None  # "ip" / "ip6": from address matches or meta nfproto
    saddr: list[tuple[Network, bool]] = field(default_factory=list)  # (prefix, negated)
    daddr: list[tuple[Network, bool]] = field(default_factory=list)
    iif: list[tuple[str, bool]] = field(default_factory=list)
    oif: list[tuple[str, bool]] = field(default_factory=list)
    nfproto: int = 0  # explicit "meta nfproto" tests
    # ct state established,related, or ct direction reply: what comes back (either, or
    # both: one test, every reply and the ICMP errors about the connection's packets)
    ct_reply: bool = False
    ct_direction: bool = False  # ... a ct direction reply (k3snet's own rules have none)
    marks: int = 0  # mark tests
    mark_set_only: bool = False  # ... and each of them asks for set bits
    mark_unset_only: bool = False  # ... and a packet without a mark passes each of them
    marked: list[str] = field(default_factory=list)  # ... their words (`meta mark 0x8000`)
    unknown: int = 0  # tests k3snet cannot model
    # ... their words (`tcp dport`, `ip daddr @blocked`, `limit`), and how many of them no
    # packet of a new pod connection or its replies passes (`ct state invalid`, a reverse
    # path filter's `fib saddr . iif oif missing`): a drop testing one meets none of them
    unread: list[str] = field(default_factory=list)
    never_pods: int = 0
    extras: int = 0  # harmless statements k3snet never writes (counter, xt comment ...)
    verdict: str | None = None
    target: str | None = None  # of a jump / goto
    nat_addr: str | None = None
    nat_flags: tuple[str, ...] = ()
    nat_extra: bool = False  # ports, ranges, maps, other flags: not modelled
    # a notrack statement (the packet goes on, untracked): its words in a block's text
    notrack: str | None = None
    # an iptables-nft -j CT whose flags were not read: it may be a --notrack
    ct_doubt: bool = False
    # the one transport protocol a positive test names (`udp dport 53`, `meta l4proto
    # tcp`): still an unmodelled test; a notrack of one protocol is no block (untracked.py)
    l4: str | None = None
    ports: bool = False  # a positive test of a port (`udp dport 53`, `th sport 123`)
    # a TTL (hop limit) set that expires a forwarded packet (`ip ttl set 1`, -j TTL
    # --ttl-set 1): its words; the rule is then a drop (parse_rule)
    expires: str | None = None
    # of the unknown tests, those a router's ICMP error carrying the path's MTU passes
    # (`meta l4proto icmp`, `icmp type destination-unreachable`; IPv6's: `icmpv6 type
    # packet-too-big`; `ct state related`, as conntrack sees that error): a rule whose
    # unknown tests are all these accepts that error
    pmtu4: int = 0
    pmtu6: int = 0
    # a netdev fwd (``fwd to "eth1"``): the packet leaves by that device instead, its
    # path ended as by a drop; its words (still an unknown statement, no verdict, to the
    # forward and ingress readings)
    fwd: str | None = None

    @property
    def conditions(self) -> int:
        """How many tests the rule makes (0: it applies to every packet)."""
        return (len(self.saddr) + len(self.daddr) + len(self.iif) + len(self.oif)
                + self.nfproto + self.ct_reply + self.marks + self.unknown)


def _network(value: Any) -> Network:
    try:
        if isinstance(value, str):
            return prefix_of(value, None)
        if isinstance(value, dict) and "prefix" in value:
            return prefix_of(str(value["prefix"]["addr"]), int(value["prefix"]["len"]))
    except OSError as exc:  # inet_pton: not an address
        raise ValueError(f"not a prefix: {value!r}") from exc
    raise ValueError(f"not a prefix: {value!r}")


def _networks(value: Any, negated: bool = False) -> list[Network]:
    if isinstance(value, dict) and "set" in value:
        return [net for v in value["set"] for net in _range_or_network(v)]
    if negated:  # `daddr != a-b`: nft writes an anonymous set of one range so
        return _range_or_network(value)
    return [_network(value)]


def _range_or_network(value: Any) -> list[Network]:
    """A set element: a prefix, an address, or a range ``{"range": [first, last]}`` (nft
    merges adjacent intervals of an interval set into one) as the prefixes that cover it."""
    if isinstance(value, dict) and "range" in value:
        ends = value["range"]
        if not isinstance(ends, list) or len(ends) != 2:
            raise ValueError(f"not a range: {value!r}")
        first, last = (_network(end) for end in ends)
        if first.prefixlen != first.max_prefixlen or last.prefixlen != last.max_prefixlen:
            raise ValueError(f"not a range of addresses: {value!r}")
        try:
            return list(ipaddress.summarize_address_range(
                first.network_address, last.network_address))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not a range: {value!r}") from exc
    return [_network(value)]


def _mark_value(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value, 0)
    return None


def _parse_mark(op: str, right: Any, out: Match, mask: Any = None) -> None:
    value = _mark_value(right)
    # Whether a packet without a mark (k3snet's pod traffic) passes the test: ``(mark &
    # mask) == value`` holds for mark 0 when value is 0, its ``!=`` when it is not (``meta
    # mark & 0x4000 != 0``: marked packets only); None: a value k3snet does not read (a
    # set of marks, a range), a doubt, neither.
    unmarked = None if value is None or op not in ("==", "!=") else (value == 0) == (op == "==")
    out.mark_set_only = unmarked is False and (out.marks == 0 or out.mark_set_only)
    out.mark_unset_only = unmarked is True and (out.marks == 0 or out.mark_unset_only)
    out.marks += 1
    shown = [f"{v:#x}" if (v := _mark_value(w)) is not None else _mark_words(w)
             for w in (mask, right)]
    out.marked.append(" ".join(["meta mark", *(["&", shown[0]] if mask is not None else []),
                                *(["!="] if op == "!=" else ["=="] if mask is not None else []),
                                shown[1]]))


def _mark_words(value: Any) -> str:
    """A mark value :func:`_mark_value` does not read, in words (``{ 0x1, 0x2 }``)."""
    items = value.get("set") if isinstance(value, dict) else None
    if isinstance(items, list) and all(_mark_value(item) is not None for item in items):
        return "{ " + ", ".join(f"{_mark_value(item):#x}" for item in items) + " }"
    return "?"


def _parse_address(left: dict[str, Any], right: Any, negated: bool, out: Match) -> bool:
    proto, fld = left["payload"].get("protocol"), left["payload"].get("field")
    if proto not in ("ip", "ip6") or fld not in ("saddr", "daddr"):
        return False
    if out.proto not in (None, proto):
        return False
    nets = _networks(right, negated)
    if len(nets) > 1 and not negated:
        return False  # "daddr { a, b }" is not one prefix ("!= { a, b }" is exclusions)
    out.proto = proto
    (out.saddr if fld == "saddr" else out.daddr).extend((n, negated) for n in nets)
    return True


def _parse_meta(left: dict[str, Any], op: str, right: Any, out: Match) -> bool:
    key = left["meta"].get("key")
    # (`"@uplinks"`: a named set not read as its names, no device's name)
    if key in ("iifname", "oifname") and isinstance(right, str) and not right.startswith("@"):
        (out.iif if key == "iifname" else out.oif).append((right, op == "!="))
        return True
    names = _name_set(right) if key in ("iifname", "oifname") and op == "!=" else None
    if names:
        # `oifname != { "eth0", "eth1" }`: the name is none of them, as the kernel looks it
        # up: read as one negated test each (`oifname != "eth0" oifname != "eth1"`).
        (out.iif if key == "iifname" else out.oif).extend((name, True) for name in names)
        return True
    if key == "nfproto" and right in ("ipv4", "ipv6") and op == "==":
        proto = "ip" if right == "ipv4" else "ip6"
        if out.proto not in (None, proto):
            return False
        out.proto = proto
        out.nfproto += 1
        return True
    if key == "mark":
        _parse_mark(op, right, out)
        return True
    return False


def _name_set(right: Any) -> list[str] | None:
    """The names of an anonymous set of interface names (``{ "eth0", "eth1" }``), else
    None (a named set ``@devs``, an element that is no name)."""
    items = right.get("set") if isinstance(right, dict) else None
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        return None
    return items


def _set_test(test: Any) -> str | None:
    """The type of the named set a test may refer to (``oifname != @uplinks``:
    ``ifname``; ``ip daddr @blocked``: ``ipv4_addr``; ``ip6 saddr``: ``ipv6_addr``), when
    k3snet reads such a test against its elements (else None)."""
    left = test.get("left") if isinstance(test, dict) else None
    if not isinstance(left, dict) or test.get("op", "==") not in ("==", "!=", "in"):
        return None
    meta, payload = left.get("meta"), left.get("payload")
    if isinstance(meta, dict) and meta.get("key") in ("iifname", "oifname"):
        return "ifname"
    if isinstance(payload, dict) and payload.get("field") in ("saddr", "daddr"):
        return {"ip": "ipv4_addr", "ip6": "ipv6_addr"}.get(str(payload.get("protocol")))
    return None


def _is_mark_mask(left: dict[str, Any]) -> bool:
    """``meta mark & MASK``: what iptables-nft makes of ``-m mark --mark V/M``."""
    operands = left["&"]
    return (isinstance(operands, list) and len(operands) == 2
            and isinstance(operands[0], dict)
            and operands[0].get("meta", {}).get("key") == "mark")


def _parse_match(m: dict[str, Any], out: Match) -> None:
    op = m.get("op", "==")
    left, right = m.get("left"), m.get("right")
    understood = False
    if op in ("==", "!=", "in") and isinstance(left, dict):
        if "payload" in left:
            understood = _parse_address(left, right, op == "!=", out)
        elif "meta" in left:
            understood = _parse_meta(left, op, right, out)
        elif "&" in left and _is_mark_mask(left):
            _parse_mark(op, right, out, left["&"][1])
            understood = True
        elif "ct" in left and left["ct"].get("key") == "state" and op != "!=":
            if isinstance(right, dict):  # `ct state { established, related }`: a set
                right = right.get("set")
            states = {right} if isinstance(right, str) else {
                v for v in right or () if isinstance(v, str)}
            understood = states == {"established", "related"}
            out.ct_reply = out.ct_reply or understood
            if not understood and "related" in states:  # a router's ICMP error is RELATED
                out.pmtu4 += 1
                out.pmtu6 += 1
        elif "ct" in left and left["ct"].get("key") == "direction":
            understood = _reply_direction(op, right)
            out.ct_reply = out.ct_reply or understood
            out.ct_direction = out.ct_direction or understood
    if not understood:
        out.unknown += 1
        out.unread.append(_test_words(op, left, right))
        out.never_pods += _never_pods(op, left, right)
        if op in ("==", "in") and isinstance(left, dict):
            out.pmtu4 += _admits_pmtu_error(left, right, 4)
            out.pmtu6 += _admits_pmtu_error(left, right, 6)
        if op == "==" and isinstance(left, dict):
            out.l4 = _l4(left, right) or out.l4
            payload = left.get("payload")
            out.ports = out.ports or (isinstance(payload, dict)
                                      and payload.get("field") in ("dport", "sport"))


def _test_words(op: str, left: Any, right: Any) -> str:
    """A test k3snet does not model, named as nft's language does (its value left out,
    but a named set's name): ``tcp dport``, ``ip daddr @blocked``, ``ct state``."""
    def named(side: Any) -> str:
        if not isinstance(side, dict) or len(side) != 1:
            return "a test"
        ((kind, body),) = side.items()
        if kind == "concat" and isinstance(body, list):
            return " . ".join(named(part) for part in body)
        if kind == "&" and isinstance(body, list) and body:
            return named(body[0])
        if not isinstance(body, dict):
            return str(kind)
        if kind == "payload":
            return f"{body.get('protocol')} {body.get('field')}"
        key = body.get("key")
        if kind == "meta" and key in ("iifname", "oifname", "iif", "oif"):
            kind = ""  # as nft writes them, unqualified
        return f"{kind} {key}".lstrip() if kind in ("meta", "ct", "") else str(kind)

    words = named(left)
    if op == "!=":
        words += " !="
    if isinstance(right, str) and right.startswith("@"):
        words += f" {right}"
    return words


def _never_pods(op: str, left: Any, right: Any) -> bool:
    """Whether no packet of a new pod connection, nor of its replies, passes the test
    ``left op right``: ``ct state invalid`` (conntrack's packets it cannot place), or a
    reverse path filter's ``fib saddr . iif oif missing`` (firewalld's: a pod's source is
    routed back by the device it came in by), ``fib daddr type local`` (an address of
    the node: no forwarded packet's). A drop testing one is no default for them."""
    if op not in ("==", "in") or not isinstance(left, dict):
        return False
    ct, fib = left.get("ct"), left.get("fib")
    if isinstance(ct, dict) and ct.get("key") == "state":
        states = right.get("set") if isinstance(right, dict) else right
        states = {states} if isinstance(states, str) else {
            v for v in states if isinstance(v, str)} if isinstance(states, list) else set()
        return states == {"invalid"}
    if isinstance(fib, dict) and fib.get("result") == "type" and fib.get("flags") in (
            "daddr", ["daddr"]):  # `fib daddr type local`: the node's, never forwarded
        return right == "local" or (isinstance(right, dict) and right.get("set") == ["local"])
    return isinstance(fib, dict) and fib.get("result") == "oif" and right is False


def _reply_direction(op: str, right: Any) -> bool:
    """Whether ``ct direction`` ``op`` ``right`` is a test of the reply direction: a packet
    conntrack saw go back against its connection's first one (a reply, ESTABLISHED, or an
    ICMP error about the connection's packets, RELATED: a router's Packet Too Big). An
    untracked or invalid packet has no direction, and matches neither test. ``original``
    (the later packets of a connection from outside to the pods) is not."""
    if isinstance(right, dict):  # `ct direction { reply }`: a set
        right = right.get("set")
    values = {right} if isinstance(right, str) else {
        v for v in right or () if isinstance(v, str)} if isinstance(right, list) else set()
    if op in ("==", "in"):
        return values == {"reply"}
    return op == "!=" and values == {"original"}


_L4_FIELDS = frozenset({("meta", "l4proto"), ("ip", "protocol"), ("ip6", "nexthdr")})


# What the ICMP error telling a path's MTU is, as a positive test names it, per family:
# (its protocol, its type, its code) as nft's JSON writes them or as their numbers.
_PMTU_ERROR = {
    4: {"l4proto": {"icmp", 1}, "icmp type": {"destination-unreachable", 3},
        "icmp code": {"frag-needed", 4}},
    6: {"l4proto": {"ipv6-icmp", "icmpv6", 58}, "icmpv6 type": {"packet-too-big", 2}},
}


def _admits_pmtu_error(left: dict[str, Any], right: Any, family: int) -> bool:
    """Whether the positive test ``left == right`` passes a router's ICMP error carrying
    the path's MTU (IPv4's fragmentation needed, IPv6's Packet Too Big)."""
    if isinstance(right, dict):  # `icmpv6 type { packet-too-big, ... }`: an anonymous set
        right = right.get("set")
    values = set(right) if isinstance(right, list) else {right}
    values = {v for v in values if isinstance(v, str | int)}
    meta, payload = left.get("meta"), left.get("payload")
    if isinstance(meta, dict) and meta.get("key") == "l4proto":
        key = "l4proto"
    elif isinstance(payload, dict) and (payload.get("protocol"), payload.get("field")) in (
            ("ip", "protocol"), ("ip6", "nexthdr")):
        if (payload["protocol"] == "ip") != (family == 4):
            return False
        key = "l4proto"
    elif isinstance(payload, dict):
        key = f"{payload.get('protocol')} {payload.get('field')}"
    else:
        return False
    wanted = _PMTU_ERROR[family].get(key)
    return wanted is not None and bool(values & wanted)


def _l4(left: dict[str, Any], right: Any) -> str | None:
    """The transport protocol a positive test names: ``udp dport 53`` (a header field of
    that protocol), ``meta l4proto udp``, ``ip protocol udp`` (``None``: another test)."""
    payload = left.get("payload")
    if isinstance(payload, dict) and payload.get("protocol") in (
            "tcp", "udp", "udplite", "sctp", "dccp", "icmp", "icmpv6"):
        return str(payload["protocol"])
    meta = left.get("meta")
    if isinstance(meta, dict) and ("meta", meta.get("key")) in _L4_FIELDS:
        return str(right) if isinstance(right, str | int) else None
    if isinstance(payload, dict) and (payload.get("protocol"), payload.get("field")) in (
            _L4_FIELDS):
        return str(right) if isinstance(right, str | int) else None
    return None


def _parse_statement(name: str, body: Any, out: Match) -> None:
    if name == "match":
        _parse_match(body, out)
    elif name in ("accept", "drop", "return"):
        out.verdict = name
    elif name == "reject":
        out.verdict = "drop"
    elif name == "queue":  # a program (an IPS) decides the packet: it never comes back
        out.verdict = "queue"
    elif name in ("jump", "goto"):
        out.verdict = name
        out.target = str(body["target"])
    elif name in ("masquerade", "snat"):
        out.verdict = name
        body = body or {}
        out.nat_flags = (body.get("flags"),) if isinstance(body.get("flags"), str) else tuple(
            body.get("flags") or ())
        if name == "snat":
            addr = body.get("addr")
            out.nat_addr = addr if isinstance(addr, str) else None
        unmodelled = set(body) - {"flags", "addr", "family"}
        if unmodelled or set(out.nat_flags) - {"fully-random"} or (
                name == "snat" and out.nat_addr is None):
            out.nat_extra = True
    elif name in ("counter", "log", "mangle", "dup"):
        # counting, logging, setting a mark, sending a copy of the packet elsewhere (the
        # packet itself goes on, as it is): no verdict changes
        out.extras += 1
        _parse_mangle(body, out)
    elif name == "notrack":  # iptables-nft's -j NOTRACK too
        out.notrack = "notrack"
        out.extras += 1
    elif name == "xt":
        _parse_xt(body, out)
    else:
        _parse_unknown(name, body, out)


def _parse_unknown(name: str, body: Any, out: Match) -> None:
    """A statement k3snet does not model: one more unknown test (a ``fwd``'s words kept)."""
    if name == "fwd":
        dev = body.get("dev") if isinstance(body, dict) else None
        out.fwd = f"fwd to {dev}" if isinstance(dev, str) else "fwd"
    out.unknown += 1
    out.unread.append(name)


def _parse_xt(body: dict[str, Any], out: Match) -> None:
    """iptables-nft's compat expressions (``-m comment``, ``-j MASQUERADE`` ...)."""
    kind, name = body.get("type"), body.get("name")
    if (kind == "match" and name == "comment") or (kind == "target" and name in XT_CONTINUE):
        out.extras += 1
        _parse_xt_ttl(body, out)
    elif kind == "target" and name == "MASQUERADE":
        # libnftables' JSON hides the target's options, so a --random-fully is not
        # seen (it does not change which packets are NATed).
        out.verdict = "masquerade"
        out.extras += 1
    elif kind == "target" and name == "REJECT":
        # iptables-nft's -j REJECT: a compat target, ending the packet as `reject` does
        # (its options, the ICMP type or TCP reset, are not listed and change nothing).
        out.verdict = "drop"
        out.extras += 1
    elif kind == "target" and name in ("NFQUEUE", "QUEUE"):
        # iptables-nft's -j NFQUEUE: a program decides the packet, as nft's `queue`
        # (read as a target k3snet cannot see into, it was no block of the pods).
        out.verdict = "queue"
        out.extras += 1
    elif kind == "target" and name == "CT":
        # iptables-nft's -j CT (and -j NOTRACK), whose options libnftables' JSON hides:
        # the kernel's flags, when the listing was given them (CT_FLAGS), tell a
        # --notrack from a --zone or a --helper (tracked: nothing changes for NAT);
        # without them, a doubt (said, not a conflict).
        flags = body.get(CT_FLAGS)
        if isinstance(flags, int) and not isinstance(flags, bool):
            if flags & _XT_CT_NOTRACK:
                out.notrack = "xt CT --notrack"
        else:
            out.ct_doubt = True
        out.extras += 1
    elif kind == "target" and name == "SNAT" and _snat_to(body.get(SNAT_TO)) is not None:
        # iptables-nft's -j SNAT --to-source ADDR, whose address the kernel's data gave
        # the listing (SNAT_TO): read as nft's `snat to ADDR` (a range, ports: below).
        to = body[SNAT_TO]
        out.verdict = "snat"
        out.nat_addr = to["addr"]
        out.nat_flags = tuple(to["flags"])
        out.nat_extra = bool(set(out.nat_flags) - {"fully-random"})
        out.extras += 1
    elif kind == "target":
        # An iptables target k3snet cannot see into: in a nat chain it may translate
        # (-j SNAT, -j NETMAP: _translates_opaquely), elsewhere it may drop.
        out.verdict = f"xt {name}"
    else:
        out.unknown += 1
        out.unread.append(f"xt {kind} {name}")
        # iptables-nft's -m conntrack --ctstate INVALID, -m addrtype --dst-type LOCAL, -m rt
        # --rt-type 0, as the kernel's data says (the listing names the match only): no
        # new pod connection passes it, as `ct state invalid` (_never_pods)
        out.never_pods += kind == "match" and body.get(XT_NO_POD) is True


def _snat_to(value: object) -> str | None:
    """The address of an xt ``SNAT``'s :data:`SNAT_TO`, when it is that shape."""
    if not isinstance(value, dict):
        return None
    addr, flags = value.get("addr"), value.get("flags")
    if not isinstance(addr, str) or not isinstance(flags, list) or not all(
            isinstance(flag, str) for flag in flags):
        return None
    return addr


def _vmap_expanded(expr: list[Any]) -> list[list[Any]]:
    """A rule with an anonymous verdict map (``ip daddr vmap { 192.168.2.0/24 : drop }``,
    ``ct state vmap { established : accept, related : accept, invalid : drop }``) as one
    rule per element, in the map's order: a lookup picks at most one element, and the
    elements are disjoint (a set's values, or its intervals, do not overlap), so testing
    them one by one decides as the map does. A ``ct state`` map's elements are one rule per
    verdict (``established, related : accept`` is the reply accept). Anything else (a
    named map, a map of more than :data:`_MAX_VMAP_ELEMENTS`) stays one rule: a statement
    k3snet does not model, no verdict."""
    maps = [i for i, s in enumerate(expr) if isinstance(s, dict) and set(s) == {"vmap"}]
    if len(maps) != 1:
        return [expr]
    at = maps[0]
    body = expr[at]["vmap"]
    data = body.get("data") if isinstance(body, dict) else None
    elements = data.get("set") if isinstance(data, dict) else None
    if (not isinstance(elements, list) or not elements or len(elements) > _MAX_VMAP_ELEMENTS
            or not all(isinstance(e, list) and len(e) == 2 and isinstance(e[1], dict)
                       for e in elements)):
        return [expr]
    key = body.get("key")
    pairs: list[tuple[Any, dict[str, Any]]] = [(e[0], e[1]) for e in elements]
    if isinstance(key, dict) and key.get("ct", {}).get("key") == "state":
        by_verdict: dict[str, tuple[list[Any], dict[str, Any]]] = {}
        for value, verdict in pairs:
            by_verdict.setdefault(repr(sorted(verdict.items(), key=repr)),
                                  ([], verdict))[0].append(value)
        pairs = [(values, verdict) for values, verdict in by_verdict.values()]
    return [[*expr[:at], {"match": {"op": "==", "left": key, "right": value}}, verdict,
             *expr[at + 1:]] for value, verdict in pairs]


def _set_expanded(expr: list[Any]) -> list[list[Any]]:
    """An accept, drop, reject or queue testing an address against an anonymous set or a
    range (``ip daddr { 192.168.2.0/24, 10.9.0.0/16 } drop``, ``ip saddr { 10.42.0.0/16,
    10.50.0.0/16 } accept``, ``ip daddr 192.168.2.0-192.168.2.200 drop``) as one rule per
    prefix it names: the verdict ends the chain for a packet one of them matches, so
    testing them one by one decides as the kernel does. Read whole, the rule named no
    address k3snet models: a drop of the pods' destination was no block at all, an
    accept of the pods took nothing (a policy drop after it warned of as dropping them).
    Any other rule, and one naming more than :data:`_MAX_VMAP_ELEMENTS` prefixes, stays
    as it is."""
    sets: list[tuple[int, list[list[Any]]]] = []
    for at, statement in enumerate(expr):
        items = _set_items(statement)
        if items is not None:
            test = statement["match"]
            sets.append((at, [[{"match": {**test, "right": item}}] for item in items]))
        elif (tests := _concat_items(statement)) is not None:
            sets.append((at, tests))
    if not sets or parse_rule(expr).verdict not in (*_STOPS, "accept"):
        return [expr]
    # Each statement stays at its index until every set is expanded (from the last on).
    exprs: list[list[Any]] = [expr]
    for at, replacements in reversed(sets):
        exprs = [[*e[:at], *tests, *e[at + 1:]] for e in exprs for tests in replacements]
        if len(exprs) > _MAX_VMAP_ELEMENTS:
            return [expr]
    return exprs


def _concat_parts(test: Any) -> list[str | None] | None:
    """For a positive test of a concatenation naming an address (``ip daddr . tcp dport``,
    ``ip saddr . ip daddr``, ``iifname . ip6 daddr``): each part's address type
    (``ipv4_addr``, ``ipv6_addr``), None for a part of another kind; else None (no
    concatenation, a negated one: "not this pair" is no test of each part, or one naming
    no address)."""
    if not isinstance(test, dict) or test.get("op", "==") not in ("==", "in"):
        return None
    left = test.get("left")
    parts = left.get("concat") if isinstance(left, dict) and len(left) == 1 else None
    if not isinstance(parts, list) or len(parts) < 2:
        return None
    kinds: list[str | None] = []
    for part in parts:
        payload = part.get("payload") if isinstance(part, dict) and len(part) == 1 else None
        kinds.append({"ip": "ipv4_addr", "ip6": "ipv6_addr"}.get(str(payload.get(
            "protocol"))) if isinstance(payload, dict) and payload.get("field") in (
                "saddr", "daddr") else None)
    return kinds if any(kinds) else None


def _concat_items(statement: Any) -> list[list[Any]] | None:
    """What a positive test of a concatenation naming an address against an anonymous set
    (``ip daddr . tcp dport { 192.168.2.10 . 5432 }``, a named set's elements as
    :meth:`ForeignReader._named_sets_in` puts them) tests one element at a time: per
    element, one test per part (``ip daddr 192.168.2.10 tcp dport 5432``), an address
    interval or range as one element per prefix that covers it. The kernel's lookup
    matches the packet when one element matches it part by part, so those rules decide
    as the set does. None: no such test, an element k3snet cannot read, more than
    :data:`_MAX_VMAP_ELEMENTS` rules."""
    test = statement.get("match") if isinstance(statement, dict) and len(statement) == 1 else None
    kinds = _concat_parts(test)
    right = test.get("right") if isinstance(test, dict) else None
    elements = right.get("set") if isinstance(right, dict) else None
    if kinds is None or not isinstance(elements, list) or not elements:
        return None
    assert isinstance(test, dict)
    lefts = test["left"]["concat"]
    found: list[list[Any]] = []
    try:
        for item in elements:
            element = item["elem"].get("val") if isinstance(item, dict) and isinstance(
                item.get("elem"), dict) else item  # an element with a comment ...
            values = element.get("concat") if isinstance(element, dict) else None
            if not isinstance(values, list) or len(values) != len(kinds):
                return None
            choices: list[list[Any]] = []
            for kind, value in zip(kinds, values, strict=True):
                if kind is None:
                    choices.append([value])
                    continue
                nets = _element_prefixes(value)
                if any(net.version != (4 if kind == "ipv4_addr" else 6) for net in nets):
                    return None
                choices.append([{"prefix": {"addr": str(net.network_address),
                                            "len": net.prefixlen}} for net in nets])
            for picked in itertools.product(*choices):
                found.append([{"match": {"op": "==", "left": left, "right": value}}
                              for left, value in zip(lefts, picked, strict=True)])
                if len(found) > _MAX_VMAP_ELEMENTS:
                    return None
    except (ValueError, TypeError, KeyError):
        return None
    return found


def _set_items(statement: Any) -> list[Any] | None:
    """What a positive test against an anonymous set of addresses (or a range) or of
    interface names (``oifname { "lo", "cni0" }``) tests one by one: a prefix, or a name
    (else None)."""
    nets = _address_set(statement)
    if nets is not None:
        return [{"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}
                for net in nets]
    test = statement.get("match") if isinstance(statement, dict) and len(statement) == 1 else None
    if not isinstance(test, dict) or test.get("op", "==") not in ("==", "in"):
        return None
    left = test.get("left")
    meta = left.get("meta") if isinstance(left, dict) else None
    if not isinstance(meta, dict) or meta.get("key") not in ("iifname", "oifname"):
        return None
    names = _name_set(test.get("right"))
    return names if names is not None and len(names) <= _MAX_VMAP_ELEMENTS else None


def _address_set(statement: Any) -> list[Network] | None:
    """The prefixes of a positive address test against an anonymous set or a range (else
    None: one prefix, anything else, an element k3snet cannot read)."""
    test = statement.get("match") if isinstance(statement, dict) and len(statement) == 1 else None
    if not isinstance(test, dict) or test.get("op", "==") not in ("==", "in"):
        return None
    left, right = test.get("left"), test.get("right")
    payload = left.get("payload") if isinstance(left, dict) else None
    if (not isinstance(payload, dict) or payload.get("protocol") not in ("ip", "ip6")
            or payload.get("field") not in ("saddr", "daddr") or not isinstance(right, dict)):
        return None
    items = right.get("set") if "set" in right else [right] if "range" in right else None
    if not isinstance(items, list) or not items:
        return None
    nets: list[Network] = []
    try:
        for item in items:
            nets += _element_prefixes(item)
            if len(nets) > _MAX_VMAP_ELEMENTS:
                return None
    except (ValueError, TypeError, KeyError):
        return None
    return nets


def _static_elements(body: dict[str, Any]) -> list[Any] | None:
    """The elements of a listed set ``body`` when no packet can change them (no
    ``dynamic`` or ``timeout`` flag, no timeout or size: the datapath adds none) and
    they are at most :data:`_MAX_VMAP_ELEMENTS`, else None."""
    flags = body.get("flags", [])
    elements = body.get("elem", [])
    if (not isinstance(flags, list) or {"dynamic", "timeout"} & set(flags)
            or "timeout" in body or "size" in body or not isinstance(elements, list)
            or len(elements) > _MAX_VMAP_ELEMENTS):
        return None
    return elements


def _element_prefixes(item: Any) -> list[Network]:
    """The prefixes one set element names (an address, a prefix, a range); raises
    ValueError (or TypeError, KeyError) for anything else."""
    if isinstance(item, dict) and isinstance(item.get("elem"), dict):
        item = item["elem"].get("val")  # an element with a comment, a timeout ...
    if isinstance(item, dict) and "range" in item:
        low, high = (ipaddress.ip_address(str(a)) for a in item["range"])
        return list(ipaddress.summarize_address_range(low, high))
    return [_network(item)]


def parse_rule(expr: Sequence[Any]) -> Match:
    """Read a rule's JSON statements into a :class:`Match`; never raises on odd input."""
    out = Match()
    for statement in expr:
        if not isinstance(statement, dict) or len(statement) != 1:
            out.unknown += 1
            out.unread.append("a statement k3snet cannot read")
            continue
        ((name, body),) = statement.items()
        try:
            _parse_statement(name, body, out)
        except (ValueError, KeyError, TypeError, AttributeError):
            out.unknown += 1
            out.unread.append(_statement_words(name, body))
    if out.expires is not None:
        if out.verdict in (None, "accept", "return", "jump", "goto"):
            # The packet goes on, to expire: dropped all the same, whatever a chain it
            # jumps to does with it.
            out.verdict, out.target = "drop", None
        else:
            out.expires = None  # a drop, a queue ...: read as it is
    return out


def _statement_words(name: str, body: Any) -> str:
    """A statement k3snet could not read, named (a test's words, as :func:`_test_words`)."""
    if name == "match" and isinstance(body, dict):
        return _test_words(str(body.get("op", "==")), body.get("left"), body.get("right"))
    return name


def _partial_notrack(match: Match) -> bool:
    """A notrack of one protocol's packets, no block (:mod:`k3snet.backends.untracked`)."""
    # imported here: a notrack is rare, and the module is no cold import of the CLI's
    from k3snet.backends.untracked import partial_notrack  # noqa: PLC0415

    return partial_notrack(match.l4, match.ports)


def _parse_xt_ttl(body: dict[str, Any], out: Match) -> None:
    """iptables-nft's -j TTL / -j HL, whose options the kernel's data gave the listing
    (:data:`TTL_ARGS`): one expiring a forwarded packet, or whose options were not given
    (a doubt counts against the flow), is read as a drop (:func:`ttl_expires`)."""
    if body.get("type") != "target" or body.get("name") not in XT_TTL:
        return
    args = body.get(TTL_ARGS)
    if not isinstance(args, list) or ttl_expires([str(a) for a in args]):
        out.expires = " ".join(["xt target", str(body["name"]), *map(str, args or ())])


def _parse_mangle(body: Any, out: Match) -> None:
    """A ``mangle`` statement: one setting the TTL (hop limit) to 1 or less expires a
    forwarded packet, dropped by this node's forwarding (prerouting) or by the next
    router (forward, postrouting); a value that is no number is a doubt, read so too."""
    what = _ttl_field(body)
    value = body.get("value") if what is not None else None
    if what is not None and (not isinstance(value, int) or isinstance(value, bool)
                             or value <= 1):
        out.expires = f"{what} set {value}"


def _ttl_field(body: Any) -> str | None:
    """``ip ttl`` or ``ip6 hoplimit`` when ``body`` (a ``mangle`` statement's) sets it."""
    key = body.get("key") if isinstance(body, dict) else None
    payload = key.get("payload") if isinstance(key, dict) else None
    if isinstance(payload, dict) and (payload.get("protocol"), payload.get("field")) in (
            ("ip", "ttl"), ("ip6", "hoplimit")):
        return f"{payload['protocol']} {payload['field']}"
    return None


def _any_network(proto: str) -> Network:
    return ipaddress.ip_network("0.0.0.0/0" if proto == "ip" else "::/0")


def own_object(match: Match, chain: str) -> tuple[NetObject, bool] | None:
    """The object one of k3snet's rules stands for, and whether it is a reply half.

    Strict: only rules shaped as :mod:`k3snet.render.nftables` writes them map
    back; anything more or less (a counter, a mark test ...) makes it a stray rule.
    """
    if (match.unknown or match.extras or match.marks or match.nfproto or match.proto is None
            or match.ct_direction or len(match.saddr) != 1 or match.saddr[0][1]
            or len(match.iif) > 1 or len(match.oif) > 1
            or any(neg for _, neg in match.iif + match.oif)
            or sum(1 for _, neg in match.daddr if not neg) > 1):
        return None
    if chain == NAT_CHAIN:
        return _own_nat(match)
    if chain == FORWARD_CHAIN:
        return _own_forward(match)
    return None


def _own_nat(match: Match) -> tuple[NetObject, bool] | None:
    if match.ct_reply or match.iif or match.nat_extra:
        return None
    dst = [n for n, neg in match.daddr if not neg]
    common: dict[str, Any] = {
        "destination": dst[0] if dst else None,
        "exclude": [n for n, neg in match.daddr if neg],
        "out_interface": model_ifname(match.oif[0][0]) if match.oif else None,
        "random_fully": "fully-random" in match.nat_flags,
    }
    source = match.saddr[0][0]
    if match.verdict == "masquerade":
        return MasqueradeRule(source, **common), False
    if match.verdict == "snat" and match.nat_addr is not None:
        return SnatRule(source, to_address=match.nat_addr, **common), False
    return None


def _own_forward(match: Match) -> tuple[NetObject, bool] | None:
    if match.verdict != "accept" or len(match.daddr) != 1 or match.daddr[0][1]:
        return None
    source, destination = match.saddr[0][0], match.daddr[0][0]
    iif = model_ifname(match.iif[0][0]) if match.iif else None
    oif = model_ifname(match.oif[0][0]) if match.oif else None
    if match.ct_reply:  # the reply half: swapped back to the rule it answers
        return ForwardRule(destination, source, in_interface=oif, out_interface=iif), True
    return ForwardRule(source, destination, in_interface=iif, out_interface=oif), False


# ---------------------------------------------------------------- foreign rules


def _may_name_a_device(name: str) -> bool:
    """Whether the kernel lets a device take ``name`` (``dev_valid_name``: 1 to 15 bytes,
    not ``.`` or ``..``, no ``/``, ``:`` or whitespace)."""
    return (0 < len(name.encode(errors="surrogateescape")) < 16 and name not in (".", "..")
            and not any(c in "/:" or c.isspace() for c in name))


def _some_device(matches: Iterable[Match]) -> Iterator[Match]:
    """``matches`` but those testing for a name no device can have (``iifname
    "INVAL/D"``: iptables-nft's ``! -i +``, which matches no name), which meet no packet;
    a negated test of such a name, which every packet passes, left out."""
    for match in matches:
        if any(not neg and not _may_name_a_device(name) for name, neg in match.iif + match.oif):
            continue
        match.iif = [(n, neg) for n, neg in match.iif if not neg or _may_name_a_device(n)]
        match.oif = [(n, neg) for n, neg in match.oif if not neg or _may_name_a_device(n)]
        yield match


def _may_carry_forwarded(name: str) -> bool:
    """Whether a device ``name`` names may carry forwarded packets, which come in and
    leave by it: a name a device may take (:func:`_may_name_a_device`) but the loopback
    device's, ``lo``, by which only the node's own packets to itself come and go."""
    return name != "lo" and _may_name_a_device(name)


def _disjoint(cond: Match, family: int, source: Network, destination: Network | None,
              oif: str | None) -> bool:
    """True when ``cond`` can never match a packet ``source -> destination`` leaving ``oif``."""
    if cond.proto is not None and (cond.proto == "ip") != (family == 4):
        return True
    for net, neg in cond.saddr:
        if (not neg and not overlaps(net, source)) or (neg and contains(net, source)):
            return True
    if destination is not None:
        for net, neg in cond.daddr:
            if (not neg and not overlaps(net, destination)) or (neg and contains(net, destination)):
                return True
    return _no_interface_passes(cond.oif, oif)


class _Exits:
    """The exits a walk met so far (the earlier rules that take some packets away, in
    order), found by the addresses they may share with a later rule: :meth:`meeting`
    gives a superset of those :func:`_disjoint` keeps, not every one (N ``ip saddr X
    drop`` before N accepts, N ``ip daddr X return`` before N NAT rules: about N
    questions to :func:`_disjoint`, not N squared). Each is filed under a positive
    address test of its own (a source, a destination, or both: one it does not share an
    address with makes it disjoint); one with none (only negated addresses, or no
    address) is given every time. A chain walked from another reads the exits its
    caller met before it (``earlier``, as they were then) and then its own."""

    def __init__(self, earlier: _Exits | None = None) -> None:
        self._earlier = earlier
        self._count: int = 0
        self._upto: int = earlier._count if earlier is not None else 0
        self._any: list[tuple[int, Match]] = []
        self._by_source: Prefixes[tuple[int, Match]] = Prefixes()
        self._by_destination: Prefixes[tuple[int, Match]] = Prefixes()
        # testing both: under each, and looked for under one
        self._both_by_source: Prefixes[tuple[int, Match]] = Prefixes()
        self._both_by_destination: Prefixes[tuple[int, Match]] = Prefixes()

    def append(self, match: Match) -> None:
        item = (self._count, match)
        self._count += 1
        source = next((net for net, neg in match.saddr if not neg), None)
        destination = next((net for net, neg in match.daddr if not neg), None)
        if source is not None and destination is not None:
            self._both_by_source.add(source, item)
            self._both_by_destination.add(destination, item)
        elif source is not None:
            self._by_source.add(source, item)
        elif destination is not None:
            self._by_destination.add(destination, item)
        else:
            self._any.append(item)

    def __iadd__(self, matches: Iterable[Match]) -> _Exits:
        for match in matches:
            self.append(match)
        return self

    def _own(self, source: Network, destination: Network | None,
             upto: int) -> Iterator[tuple[int, Match]]:
        found: list[Iterable[tuple[int, Match]]] = [self._any]
        if self._by_source.everything():  # (an empty index asked nothing: most are)
            found.append(self._by_source.each_overlapping(source))
        if self._by_destination.everything():
            found.append(self._by_destination.everything() if destination is None
                         else self._by_destination.each_overlapping(destination))
        if self._both_by_source.everything():
            found.append(self._both_by_source.each_overlapping(source)
                         if destination is None or source.prefixlen > destination.prefixlen
                         else self._both_by_destination.each_overlapping(destination))
        items = itertools.chain.from_iterable(found)
        return items if upto == self._count else (item for item in items if item[0] < upto)

    def _levels(self) -> Iterator[tuple[_Exits, int]]:
        """This walk's exits and its callers', each with how many of them it reads."""
        level: _Exits | None = self
        upto = self._count
        while level is not None:
            yield level, upto
            upto, level = level._upto, level._earlier

    def meeting(self, source: Network, destination: Network | None) -> list[Match]:
        """In the order met, the exits whose positive address tests may all meet
        ``source`` and ``destination`` (``None``: any), and perhaps a few more."""
        found: list[Match] = []
        for level, upto in reversed(list(self._levels())):
            found += (match for _, match in sorted(level._own(source, destination, upto),
                                                   key=lambda item: item[0]))
        return found

    def any_meeting(self, source: Network, destination: Network,
                    test: Callable[[Match], bool]) -> bool:
        """Whether ``test`` holds for one of the exits :meth:`meeting` gives (in any order:
        it stops at the first)."""
        return any(test(match) for level, upto in self._levels()
                   for _, match in level._own(source, destination, upto))


def _no_interface_passes(tests: list[tuple[str, bool]], device: str | None) -> bool:
    """Whether no interface that ``device`` (a name of k3snet's model, ``eth+`` a prefix;
    ``None``: any) may be passes all of a foreign rule's name ``tests`` (nft's names,
    ``"eth*"`` a prefix): then the rule never matches its packets.

    Compared as the patterns they are, not as strings: ``oifname "eth*"`` holds eth0,
    so an earlier ``oifname "eth*" return`` is no exit that spares eth0's packets.
    """
    if device is None:
        return False
    for name, negated in tests:
        pattern = model_ifname(name)
        if negated:
            # != a pattern: only when every name the device may be matches the pattern.
            if device.startswith(pattern[:-1]) if pattern.endswith("+") else device == pattern:
                return True
        elif not interfaces_may_meet(pattern, device):
            return True
    return False


@attrs.frozen
class _Way:
    """How the foreign walk reached a chain: the conditional jumps' tests on the way
    (``guard``: a rule there is read as testing them too) and the chains passed."""

    guard: Match | None = None
    path: frozenset[tuple[tuple[str, str], str]] = frozenset()

    def into(self, where: tuple[str, str], chain: str) -> _Way:
        return attrs.evolve(self, path=self.path | {(where, chain)})

    def follows(self, where: tuple[str, str], match: Match) -> bool:
        """Whether the walk follows ``match``'s jump or goto: not deeper than
        :data:`_MAX_JUMP_DEPTH`, nor back to a chain on the way (a cycle), nor one whose
        target could not be read (it stays an exit k3snet cannot see through)."""
        return (match.verdict in ("jump", "goto") and match.target is not None
                and len(self.path) <= _MAX_JUMP_DEPTH and (where, match.target) not in self.path)

    def reaching(self, match: Match) -> Match | None:
        """``match`` as the packets that come this way meet it (None: none can)."""
        return match if self.guard is None else _guarded(self.guard, match)


@dataclass
class _Budget:
    """One walk's bound of :data:`_MAX_WALKED_RULES` rules: counted, and said once when
    reached (``what`` names the walk in that message)."""

    what: str
    walked: int = 0
    cut: bool = False

    def take(self, unread: list[str], where: tuple[str, str], chain: str) -> bool:
        """Count one more rule of ``chain``; False once the bound is reached (the first
        time, said in ``unread``)."""
        if self.walked >= _MAX_WALKED_RULES:
            if not self.cut:
                self.cut = True
                unread.append(f"{self.what} stopped after {_MAX_WALKED_RULES} rules (at "
                              f"{where[0]} {where[1]} {chain})")
            return False
        self.walked += 1
        return True


@dataclass(frozen=True)
class Doubt:
    """What a read could not judge whole, said as a warning naming the command that shows
    it: ``before``, the command (argv) and ``after``, joined by :meth:`said` where the
    command runs (a backend in a namespace gives it after ``ip netns exec NAME``)."""

    before: str
    command: tuple[str, ...]
    after: str

    def said(self, shown: Callable[[Sequence[str]], str] = shell_join) -> str:
        """The warning, the command as ``shown`` gives it, in backquotes."""
        return f"{self.before}`{shown(self.command)}`{self.after}"


@dataclass
class ForeignReader:
    """Reads the egress-relevant chains of other tables: read-only, bounded, best effort.

    A listing that raises :class:`~.kernel.ListingTimeoutError` (see
    :func:`read_foreign_within`) is read as "may drop anything" (so no foreign
    accept is taken as meeting a need, and no foreign NAT behind it is seen:
    k3snet then writes its own rule, which is redundant at worst), and named in
    ``unread``.
    """

    kernel: Lists
    own_tables: frozenset[tuple[str, str]]
    # Also pass by every table holding k3snet's marker chain, whatever its name (the
    # iptables backend's read: the nftables backend's table is another backend's own).
    skip_marked: bool = False
    # The tables passed by as k3snet's (skip_marked): the iptables backend names them.
    marked: frozenset[tuple[str, str]] = frozenset()
    # iptables-nft's tables holding the iptables backend's chains (by its hook jump): that
    # jump is passed by (its rules meet nothing: they are k3snet's, left behind or in use
    # beside), (family, table) -> the chain jumped to
    iptables_own: dict[tuple[str, str], str] = field(default_factory=dict)
    unread: list[str] = field(default_factory=list)
    # The node's routes: a drop naming an interface and no address meets what the node
    # routes by it (None: such a drop is read as no block, as with a replaced kernel seam)
    routed: RoutedBy | None = None
    listed: int = 0
    nat: list[NetObject] = field(default_factory=list)
    accepts: list[ForwardRule] = field(default_factory=list)
    replies_accepted: bool = False
    # every forward base chain: (family, table), name, policy; and where each accept was read
    forward_bases: list[tuple[tuple[str, str], str, str]] = field(default_factory=list)
    # filter base chains at prerouting and postrouting: forwarded packets pass them too
    # (where, name, policy), read for drops and defaults
    path_bases: list[tuple[tuple[str, str], str, str]] = field(default_factory=list)
    # filter base chains on a device's ingress hook (a netdev table's, or an inet one's):
    # what arrives by that device passes them before any other hook, (where, name,
    # devices, policy), read for drops, their policy drop as one more at their end
    device_bases: list[tuple[tuple[str, str], str, tuple[str, ...], str]] = field(
        default_factory=list)
    # filter base chains on a device's egress hook (a netdev table's, Linux 5.16+): what
    # leaves by that device passes them after postrouting, its source translated by NAT,
    # (where, name, devices, policy), read for what may drop (ForwardDefaults.leaving)
    egress_bases: list[tuple[tuple[str, str], str, tuple[str, ...], str]] = field(
        default_factory=list)
    # nat base chains there: the first packet of each new connection passes them (a drop
    # there drops it, the connection never starts), read for their defaults only
    nat_bases: list[tuple[tuple[str, str], str, str]] = field(default_factory=list)
    _after_own_nat: set[tuple[tuple[str, str], str]] = field(default_factory=set)
    # filter base chains at prerouting before conntrack (raw's -300): a notrack there
    # takes packets out of NAT
    _before_conntrack: set[tuple[tuple[str, str], str]] = field(default_factory=set)
    # the notracks met there, as the walk reached them (the rule, where, its chain), and
    # each filter base chain on the forward path after conntrack (the forward hook, or
    # prerouting or postrouting) whose default drops what no accept of its own takes (its
    # place, that default, the accepts before it): an untracked flow's replies are no
    # established connection's, its `ct state established,related accept` does not take them
    _notracks: list[tuple[Match, tuple[str, str], str]] = field(default_factory=list)
    _untrack_defaults: list[tuple[tuple[str, str], str, str, list[ForwardRule]]] = field(
        default_factory=list)
    # notracks of one protocol (Match.l4), met as those above: no block, their blocks as
    # they would be in ``partial`` (a warning when they meet k3snet's rules: untracked.py)
    _partial_notracks: list[tuple[Match, tuple[str, str], str]] = field(default_factory=list)
    partial: list[NetObject] = field(default_factory=list)
    # what may leave packets untracked, not known whole (an -j CT whose flags were not
    # read): said as warnings (ForwardDefaults.doubts), no conflict
    doubts: list[Doubt] = field(default_factory=list)
    # the devices chains are hooked on that the node does not have now (_present)
    _absent: list[str] = field(default_factory=list)
    # those it has (when its devices are known): one leaving moves no generation id
    _hooked: list[str] = field(default_factory=list)
    origins: dict[ForwardRule, set[tuple[tuple[str, str], str]]] = field(default_factory=dict)
    _walking: tuple[tuple[str, str], str] | None = None
    _at: tuple[tuple[str, str], str] = (("", ""), "")  # the chain whose rule is visited
    # NAT blocks and "met" candidates, each with the base chain it was read from
    nat_blocks: list[tuple[NatBlock, tuple[tuple[str, str], str] | None]] = field(
        default_factory=list)
    nat_origin: dict[NetObject, tuple[tuple[str, str], str] | None] = field(default_factory=dict)
    _listings: dict[tuple[tuple[str, str], str], list[Match]] = field(default_factory=dict)
    # the named sets listed, as listed (None: not listed)
    _sets: dict[tuple[tuple[str, str], str], dict[str, Any] | None] = field(
        default_factory=dict)
    # each chain's rules that stop any packet (a drop, reject or queue naming no address)
    _catch_alls: dict[tuple[tuple[str, str], str], list[str]] = field(default_factory=dict)
    # ... those of them testing no interface either (no block by the node's routes): a
    # default of a base chain whose rules jump or go to that chain too
    _opaque: dict[tuple[tuple[str, str], str], list[str]] = field(default_factory=dict)
    # each chain's rules that stop packets naming an address: a default of a nat chain
    # after k3snet's (no block: it never sees what k3snet's NAT translates)
    _addressed: dict[tuple[tuple[str, str], str], list[str]] = field(default_factory=dict)
    # the rules walked for NAT and accepts, and those read for forward drops
    _walk_budget: _Budget = field(
        default_factory=lambda: _Budget("the walk of other tables' chains"))
    _block_budget: _Budget = field(
        default_factory=lambda: _Budget("the read of other tables' forward drops"))
    _egress_budget: _Budget = field(
        default_factory=lambda: _Budget("the read of other tables' egress chains"))

    @property
    def walked(self) -> int:
        """Rules walked so far for NAT and accepts (bounded by :data:`_MAX_WALKED_RULES`)."""
        return self._walk_budget.walked

    def read(self) -> frozenset[NetObject]:
        try:
            chains = self._list("chains", {}) or []
        except (ListingTimeoutError, UnprintableNameError) as exc:
            self.unread.append(str(exc))
            return frozenset()
        except BackendError:
            return frozenset()  # best effort: no foreign state rather than no observe
        leftovers = self._leftovers(chains)
        if self.skip_marked:
            self.marked = self._marked(chains)
        passed = self.own_tables | leftovers | self.marked
        for item in chains:
            chain = item.get("chain")
            if isinstance(chain, dict):
                self._base(chain, passed)
        found: set[NetObject] = {leftover_drift(*where) for where in sorted(leftovers)}
        found |= self._met()
        found |= self._blocks()
        found.update(block for block, _ in self.nat_blocks)
        untracking = [b for b in found if isinstance(b, ForwardBlock) and b.verdict == "untrack"]
        # each accept filed by its addresses: the replies of each are looked for among
        # those whose addresses may take them, not among all of them (linear, not quadratic)
        replies: ByAddresses[ForwardRule] = ByAddresses()
        for rule in () if self.replies_accepted else self.accepts:
            replies.add(rule.source, rule.destination, rule,
                        (rule.in_interface, rule.out_interface))
        for rule in self.accepts:
            if not self.replies_accepted and not any(
                    _answers(o, rule) for o in replies.holding(
                        rule.destination, rule.source, (rule.out_interface, rule.in_interface))):
                continue
            # An accept ends only its own chain: every other base chain on the forward
            # hook must let the packets through too (firewalld#527).
            if all(self._lets_through(base, rule) for base in self.forward_bases
                   if (base[0], base[1]) not in self.origins.get(rule, set())) and not any(
                       b.decides(rule) for b in untracking):
                # (Not one whose flow a notrack untracks under a default that drops it: its
                # replies are accepted by conntrack, which no longer takes them.)
                found.add(rule)
        return frozenset(found)

    def _base(self, chain: dict[str, Any], passed: frozenset[tuple[str, str]]) -> None:
        """Read base chain ``chain`` of ``list chains`` as its type and hook ask."""
        family, table, name = chain.get("family"), chain.get("table"), chain.get("name")
        where = (str(family), str(table))
        kind, hook = chain.get("type"), chain.get("hook")
        bases = (self.device_bases if family in ("netdev", "inet") and hook == "ingress"
                 else self.egress_bases if family == "netdev" and hook == "egress" else None)
        if bases is not None and kind == "filter":
            devices = chain.get("dev")
            devices = [devices] if isinstance(devices, str) else devices
            if where not in passed and isinstance(devices, list):
                # (Not the loopback device, nor a name no device can take: recent kernels
                # (6.18 here) hook a chain on a name with no device yet, and one with
                # whitespace, "/" or ":" never gets one.)
                bases.append((where, str(name), tuple(
                    d for d in devices if isinstance(d, str) and _may_carry_forwarded(d)),
                    str(chain.get("policy", "accept"))))
            return
        if family not in ("ip", "ip6", "inet") or where in passed:
            return
        policy = str(chain.get("policy", "accept"))
        if hook == "postrouting" and kind == "nat":
            prio = chain.get("prio")
            first = not isinstance(prio, int) or prio <= _OWN_NAT_PRIO
            self._walking = (where, str(name))
            self._walk(where, str(name), _Exits(), _Way(),
                       self._nat_rule_first if first else self._nat_rule)
            self.nat_bases.append((where, str(name), policy))
            if isinstance(prio, int) and prio > _OWN_NAT_PRIO:
                self._after_own_nat.add((where, str(name)))
        elif hook == "forward" and kind == "filter":
            self.forward_bases.append((where, str(name), policy))
            self._walking = (where, str(name))
            self._walk(where, str(name), _Exits(), _Way(), self._forward_rule)
        elif kind == "filter" and hook in ("prerouting", "postrouting"):
            self.path_bases.append((where, str(name), policy))  # its drops and defaults
            prio = chain.get("prio")
            if hook == "prerouting" and isinstance(prio, int) and prio < _CONNTRACK_PRIO:
                self._before_conntrack.add((where, str(name)))
        elif kind == "nat" and hook == "prerouting":
            # Listed for its catch-all drops (its own rules only: kube-proxy's service
            # chains below it are never read).
            self._rules(where, str(name))
            self.nat_bases.append((where, str(name), policy))

    @staticmethod
    def _marked(chains: list[dict[str, Any]]) -> frozenset[tuple[str, str]]:
        """The tables holding k3snet's marker chain (a chain of that name with no hook)."""
        return frozenset(
            (chain["family"], chain["table"]) for item in chains
            if isinstance(chain := item.get("chain"), dict) and chain.get("name") == MARKER_CHAIN
            and "hook" not in chain and isinstance(chain.get("table"), str)
            and chain.get("family") in ("ip", "ip6", "inet"))

    def _leftovers(self, chains: list[dict[str, Any]]) -> frozenset[tuple[str, str]]:
        """k3snet's tables of the other layout: a table named as k3snet's, of a family
        k3snet's does not use (``ip`` or ``ip6`` beside ``inet``, or the other way), that
        holds k3snet's marker chain (an apply with ``family`` set otherwise wrote it)."""
        names = {table for _, table in self.own_tables}
        found = set()
        for item in chains:
            chain = item.get("chain")
            # A listing's values are read as the strings they must be (another shape is
            # no table of k3snet's, and no error: a list is unhashable).
            if (isinstance(chain, dict) and chain.get("name") == MARKER_CHAIN
                    and "hook" not in chain and isinstance(chain.get("table"), str)
                    and chain["table"] in names
                    and chain.get("family") in ("ip", "ip6", "inet")):
                where = (str(chain["family"]), str(chain["table"]))
                if where not in self.own_tables:
                    found.add(where)
        return frozenset(found)

    def _met(self) -> set[NetObject]:
        """The foreign NAT rules read, each without what a NAT rule of another base chain
        that may run first translates otherwise (it does not do k3snet's job there)."""
        found: set[NetObject] = set()
        for obj in self.nat:
            met: NetObject | None = obj
            for block, base in self.nat_blocks:
                if met is not None and base != self.nat_origin.get(obj) and block.decides(met):
                    met = _spared_by(met, block)
            if met is not None:
                found.add(met)
        return found

    def _blocks(self) -> set[NetObject]:
        """Foreign drops and rejects at the forward hook, and in the filter chains at
        prerouting and postrouting (which forwarded packets pass too), that name addresses.

        An accept in k3snet's chain ends only that chain; a drop in any other base
        chain on the hook, at any priority, or on the hooks before and after it, still
        wins. So such a rule (in a base
        chain or any chain jumped or gone to below it, narrowed by the jumps' tests
        on the way) decides the traffic it names, and a wanted forward rule it may
        match is a conflict. Rules without a positive address match (``ct state
        invalid drop``, a policy) are not read as blocks: they are defaults (see
        docs/reliability.md). Uses the listings already made; the walk is bounded
        (:data:`_MAX_JUMP_DEPTH` chains deep, :data:`_MAX_WALKED_RULES` rules, what
        is past it named in ``unread``) and does not follow a chain already on its way.
        """
        found: set[NetObject] = set()
        # A forwarded packet also passes every filter chain on the prerouting and
        # postrouting hooks: a drop there wins over any accept at the forward hook.
        for where, name, policy in [*self.forward_bases, *self.path_bases]:
            untrack = (where, name) if (where, name) in self._before_conntrack else None
            taken = _Taken()
            # Each chain after conntrack, on any hook a forwarded packet passes, judges
            # untracked flows by its default: its accept by conntrack takes none of them.
            judges = untrack is None
            self._block_walk(where, name, _Way(), found, taken, untrack=untrack,
                             forward=judges)
            if judges and policy != "accept" and not taken.ended:
                self._untrack_defaults.append((where, name, f"policy {policy}",
                                               list(taken.accepted)))
        # What arrives by a device passes its ingress chains first: a drop there is read
        # as one testing that device (`iifname`), one walk per device, and so is a policy
        # drop, after the chain's rules (what they accept, it never sees).
        for where, name, devices, policy in self.device_bases:
            for device in self._present(where, name, devices, "ingress"):
                taken = _Taken(ingress=device)
                self._block_walk(where, name, _Way(guard=Match(iif=[(device, False)])), found,
                                 taken, every=1)
                if policy != "accept" and not taken.ended:
                    found.update(_policy_blocks(device, policy, where, name, taken=taken,
                                                routed=self.routed))
        for match, where, chain in self._notracks:
            for default in self._untrack_defaults:
                found.update(_untrack_forward_blocks(match, where, chain, default))
        for match, where, chain in self._partial_notracks:
            for default in self._untrack_defaults:
                self.partial.extend(_untrack_forward_blocks(match, where, chain, default))
        for where, name, _ in self.nat_bases:
            if (where, name) not in self._after_own_nat:  # else: judged as a default only
                self._nat_chain_blocks(where, name, found)
        return found

    def _nat_chain_blocks(self, where: tuple[str, str], chain: str,
                          found: set[NetObject]) -> None:
        """The drops of a nat base chain on the prerouting or postrouting hook met no later
        than k3snet's: the kernel runs it for a new connection's first packet, so a drop
        there ends the connection; never for a reply (``replies_accepted``). Its own rules
        only, as listed (the chains it jumps to are kube-proxy's services, never read)."""
        taken = _Taken(replies=True)
        for match in self._rules(where, chain):
            if not self._block_budget.take(self.unread, where, chain):
                return
            found.update(_blocks_of(match, where, chain, taken, self.routed))
            if match.verdict in ("accept", "masquerade", "snat"):  # ends the chain for them
                taken.add(match)

    def _block_walk(self, where: tuple[str, str], chain: str, way: _Way,
                    found: set[NetObject], taken: _Taken, *,
                    untrack: tuple[tuple[str, str], str] | None = None,
                    forward: bool = False, every: int = 0) -> None:
        """Walk ``chain`` for blocks; ``taken``: what the accepts met before on the way
        from the base chain take (it never reaches a later rule: an accept, here or in a
        chain jumped to, ends the base chain), added to as the walk meets more.
        ``untrack``: the base chain, when it runs before conntrack (a raw prerouting
        chain): a ``notrack`` there is an exempt :class:`NatBlock` (the nat hooks see
        tracked connections only), unless an accept or drop of every packet came first,
        and is kept for the forward path's defaults. ``forward``: the base chain is on
        the forward path after conntrack (the forward hook, or prerouting or postrouting
        after it): a drop of every packet met is its default for untracked flows.
        ``every``: the tests the way's guard makes that every packet of the walk passes
        (an ingress chain's device): a rule making no more applies to every packet."""
        way = way.into(where, chain)
        for match in self._rules(where, chain):
            if not self._block_budget.take(self.unread, where, chain):
                return
            reached = way.reaching(match)
            if reached is None:
                continue  # no packet that comes this way reaches the rule
            if taken.ingress is not None and reached.fwd and reached.verdict is None:
                # `fwd to "eth0"` on a device's ingress: the packet leaves by eth0 as it
                # came, never forwarded: a drop of what it matches (its words kept).
                reached = dataclasses.replace(reached, verdict="drop",
                                              unknown=reached.unknown - 1)
            found.update(_blocks_of(reached, where, chain, taken, self.routed))
            if (untrack is not None and reached.notrack and not taken.ended
                    and _partial_notrack(reached)):
                self.partial.extend(_untrack_blocks(reached, where, chain))
                self._partial_notracks.append((reached, where, chain))
            elif untrack is not None and reached.notrack and not taken.ended:
                self.nat_blocks.extend((b, untrack) for b in _untrack_blocks(reached, where,
                                                                              chain))
                self._notracks.append((reached, where, chain))
            if untrack is not None and reached.ct_doubt and not taken.ended:
                self.doubts.append(Doubt(
                    f"iptables-nft's -j CT in {where[0]} {where[1]} {chain} "
                    f"({' '.join([*_rule_words(reached)[0], 'xt target CT'])}) was listed "
                    "without its options: if it is a --notrack, what it matches is untracked "
                    "(no NAT, and replies a forward chain accepts by conntrack alone are "
                    "dropped; ",
                    (f"{'ip6' if where[0] == 'ip6' else 'ip'}tables-nft-save", "-t", "raw"),
                    " shows them)"))
            if (forward and reached.verdict in ("drop", "queue") and reached.conditions == 0
                    and not taken.ended):
                self._untrack_defaults.append((
                    where, chain, f"{match.verdict} (a rule of every packet)",
                    list(taken.accepted)))
            if reached.verdict in ("accept", "drop", "queue") and reached.conditions == every:
                taken.ended = True  # every later rule of the base chain is unreached
            if reached.verdict == "accept":
                taken.add(reached)
            if way.follows(where, match):
                assert match.target is not None
                self._block_walk(where, match.target, attrs.evolve(way, guard=reached), found,
                                 taken, untrack=untrack, forward=forward, every=every)

    def defaults(self) -> ForwardDefaults:
        """The base chains read whose default may drop forwarded packets: a policy that is
        not accept, or a rule of the chain's own that stops any address, in a filter chain
        on the forward, prerouting or postrouting hook, or a nat chain on the prerouting
        or postrouting hook (the kernel runs those for the first packet of each new
        connection, conntrack on: a drop there drops it, and the connection never
        starts). In a nat chain on the postrouting hook after k3snet's, a rule of its own
        stopping some addresses is one too: it is no block, since the kernel never runs it
        for a connection k3snet's NAT translated, and drops the others. Call after
        :meth:`read`; judged later without listing anything
        (:meth:`ForwardDefaults.unopened`)."""
        found = []
        bases = [*((b, "filter") for b in (*self.forward_bases, *self.path_bases)),
                 *((b, "nat") for b in self.nat_bases)]
        for (where, name, policy), kind in bases:
            what = [f"policy {policy}"] if policy != "accept" else []
            what += self._catch_alls.get((where, name), [])
            what += [f"{stop.removesuffix(')')} of chain {below})"
                     for below in self._below(where, name)
                     for stop in self._opaque.get((where, below), [])]
            if (where, name) in self._after_own_nat:
                what += self._addressed.get((where, name), [])
            if what:
                found.append(ForwardDefault(
                    where[0], where[1], name, policy, tuple(what), kind=kind,
                    after_own_nat=(where, name) in self._after_own_nat))
        return ForwardDefaults(tuple(found), dict(self._listings) if found else {},
                               egress=tuple(self._egress()),
                               iptables_own=tuple(sorted(self.iptables_own.items())),
                               doubts=tuple(dict.fromkeys(self.doubts)),
                               partial=tuple(self.partial),
                               absent=tuple(dict.fromkeys(self._absent)),
                               present=tuple(dict.fromkeys(self._hooked)),
                               places={_place(where, chain): (*where, chain)
                                       for _, where, chain in self._partial_notracks})

    def _below(self, where: tuple[str, str], base: str) -> list[str]:
        """The chains ``base``'s rules jump or go to, at any depth, that the read listed."""
        found: list[str] = []
        todo = [base]
        while todo:
            for match in self._listings.get((where, todo.pop()), []):
                target = match.target
                if (match.verdict in ("jump", "goto") and target is not None
                        and target != base and target not in found
                        and (where, target) in self._listings):
                    found.append(target)
                    todo.append(target)
        return found

    def _egress(self) -> Iterator[EgressDefault]:
        """Each egress chain read that may drop something: its policy drop, and its own
        rules that may stop a packet (a drop, reject or queue, a fwd to another device) or
        send it to a chain not read (too deep, a cycle), each with the destinations it
        names (none: any) and those the chain's accepts before it took (an accept testing
        one destination alone); an accept of every packet ends the chain (no later rule,
        nor its policy, sees one). A return ends a base chain with its policy: read as an
        accept or a drop, as that is. A jump's or goto's target is read in its place
        (:meth:`_egress_rules`)."""
        for where, name, listed, listed_policy in self.egress_bases:
            devices = self._present(where, name, listed, "egress")
            if not devices:
                continue
            policy = listed_policy
            stops: list[tuple[str, tuple[Network, ...], tuple[Network, ...]]] = []
            accepted: list[Network] = []
            for match, inner, escaped in self._egress_rules(where, name, _Way()):
                verdict = listed_policy if match.verdict == "return" and not inner else (
                    match.verdict)
                if verdict == "accept" and match.conditions == 0 and not escaped:
                    policy = "accept"
                    break
                if (verdict == "accept" and not escaped and match.conditions == 1
                        and len(match.daddr) == 1 and not match.daddr[0][1]):
                    accepted.append(match.daddr[0][0])
                if match.fwd is not None:  # the packet leaves by another device
                    words = " ".join([*_rule_words(dataclasses.replace(
                        match, unknown=match.unknown - 1))[0], match.fwd])
                    stops.append((words, tuple(n for n, neg in match.daddr if not neg),
                                  tuple(accepted)))
                elif verdict in (*_STOPS, "jump", "goto"):
                    words = " ".join([*_rule_words(match)[0], str(match.verdict),
                                      *([match.target] if match.target else [])])
                    stops.append((words, tuple(n for n, neg in match.daddr if not neg),
                                  tuple(accepted)))
            if policy != "accept" or stops:
                # A rule read by several ways, each the same: said once.
                yield EgressDefault(where[1], name, devices, policy,
                                    tuple(dict.fromkeys(stops)))

    def _egress_rules(self, where: tuple[str, str], chain: str, way: _Way, *,
                      inner: bool = False,
                      escaped: bool = False) -> Iterator[tuple[Match, bool, bool]]:
        """The rules an egress base chain runs, as the walk reaches them: a jump's or
        goto's target's rules in its place, each read as testing the jump's tests too
        (not deeper than :data:`_MAX_JUMP_DEPTH`, nor back to a chain on the way: such a
        jump stays a rule that may stop anything). With each, whether it is a target's
        (``inner``: its return goes back to the caller, no policy) and whether some
        packets left the way before it (``escaped``: a target's conditional return, a
        conditional goto, whose packets meet neither its accepts nor the caller's later
        ones: an accept then takes no destination away from a later drop, nor ends the
        chain, for them)."""
        way = way.into(where, chain)
        for match in self._rules(where, chain):
            reached = way.reaching(match)
            if reached is None:
                continue  # no packet that comes this way reaches the rule
            # Each target is read again for each jump to it: bounded, as the other walks
            # (a jump past the bound stays a rule that may stop anything).
            within = self._egress_budget.take(self.unread, where, chain)
            if inner and match.verdict == "return":
                if not match.conditions:
                    return  # back to the caller, every packet
                escaped = True
                continue
            if within and way.follows(where, match):
                assert match.target is not None
                yield from self._egress_rules(where, match.target,
                                              attrs.evolve(way, guard=reached),
                                              inner=True, escaped=escaped)
                if match.verdict == "goto":
                    if not match.conditions:
                        return  # no packet comes back from a goto of every packet
                    escaped = True
                continue
            yield reached, inner, escaped

    def _present(self, where: tuple[str, str], chain: str, devices: tuple[str, ...],
                 hook: str) -> tuple[str, ...]:
        """The ``devices`` of a chain on their ``hook`` that the node has now (by
        :attr:`routed`'s links; every one when they are not known). The kernel hooks a
        chain on a name no device holds yet (Linux 6.16+): it sees no packet, and drops
        none, until a device of that name appears; that is said (a doubt), no block."""
        if self.routed is None:
            return devices
        present = tuple(d for d in devices if self.routed.has_device(d))
        if self.routed.knows_devices:
            self._hooked.extend(present)
        for device in devices:
            if device not in present:
                self._absent.append(device)
                self.doubts.append(Doubt(
                    f"{where[0]} {where[1]} {chain} is hooked on the {hook} of {device}, a "
                    f"device this node does not have now: it drops nothing until a device "
                    f"{device} appears, then its rules and policy apply to what passes it (",
                    ("nft", "list", "chain", where[0], where[1], chain), " shows them)"))
        return present

    def _lets_through(self, base: tuple[tuple[str, str], str, str], rule: ForwardRule, *,
                      defaults: bool = False, reply: bool = False,
                      errors: bool = False) -> bool:
        """Whether base chain ``base`` accepts every packet of ``rule`` (False: it may not).

        ``defaults``: judge only what drops any address (the policy, a catch-all drop or
        reject); drops on tests k3snet does not model and naming no address nor
        interface (``ct state invalid drop``) are passed over. ``reply``: ``rule`` is the
        replies of a connection (``ct state established,related`` matches them all).
        ``errors``: ``rule`` is a router's ICMP errors carrying the path's MTU (an
        accept of them by protocol or type, ``icmpv6 type packet-too-big``, takes them).
        """
        where, name, policy = base
        if where[0] != "inet" and (where[0] == "ip") != (rule.family == 4):
            return True  # a chain of the other address family never sees these packets
        verdict = self._passes(where, name, rule, 0, defaults=defaults, reply=reply,
                               errors=errors)
        return policy == "accept" if verdict is None else verdict

    def _passes(self, where: tuple[str, str], chain: str, rule: ForwardRule,
                depth: int, *, defaults: bool = False, reply: bool = False,
                errors: bool = False) -> bool | None:
        """Walk ``chain`` for ``rule``'s packets: True (all accepted), False (some may be
        dropped, or k3snet cannot tell), None (they all leave the chain unjudged).

        A ``return`` of some of the packets sends those on unjudged (at a base chain, to
        its policy): an accept of the rest after it is then no True but None, for the
        policy (or the calling chain) to judge them all, as the kernel does the returned
        ones (``oifname "eth*" return`` before ``oifname "eth0" accept`` under policy
        drop drops eth0's packets)."""
        escaped = False  # some packets returned before: an accept takes only the rest
        for match in self._rules(where, chain):
            verdict = match.verdict
            if verdict is None or _misses(match, rule):
                continue
            if defaults and verdict in _STOPS and _never_new_pods(match) and not match.target:
                continue  # `ct state invalid drop`: not a default for new pod traffic
            whole = _covers(match, rule, reply=reply, errors=errors)
            if verdict in ("accept", "masquerade", "snat"):  # a nat chain's NAT ends it too
                if whole:
                    return None if escaped else True
            elif verdict == "return":
                if whole:
                    return None
                escaped = True
            elif verdict in ("jump", "goto") and match.target and depth < _MAX_JUMP_DEPTH:
                sub = self._passes(where, match.target, rule, depth + 1, defaults=defaults,
                                   reply=reply, errors=errors)
                # A goto for some packets to a chain that decides nothing: those leave
                # this chain unjudged (at a base chain, for its policy), the others go
                # on, and k3snet cannot tell which ends where.
                if sub is False or (verdict == "goto" and sub is None and not whole):
                    return False
                if whole and (sub is True or verdict == "goto"):
                    return None if escaped and sub is True else sub
            else:  # a drop, a reject, a target k3snet cannot see into, a jump too deep
                return False
        return None

    def _rules(self, where: tuple[str, str], chain: str) -> list[Match]:
        known = self._listings.get((where, chain))
        if known is None:
            known = self._listings[(where, chain)] = self._list_rules(where, chain)
        return known

    def _list_rules(self, where: tuple[str, str], chain: str) -> list[Match]:
        family, table = where
        if self.listed >= _MAX_FOREIGN_CHAINS:
            return [_unseen()]  # unseen: assume it may drop anything
        self.listed += 1
        try:
            items = self._list("chain", {"family": family, "table": table, "name": chain}) or []
        except (ListingTimeoutError, UnprintableNameError) as exc:
            self.unread.append(str(exc))
            return [_unseen()]
        except BackendError:
            return [_unseen()]
        rules = []
        stops = self._catch_alls[(where, chain)] = []
        hook = _xt_hook_chains().get((family, table, chain))
        addressed = self._addressed[(where, chain)] = []
        opaque = self._opaque[(where, chain)] = []
        for item in items:
            rule = item.get("rule")
            if hook is not None and isinstance(rule, dict) and self._iptables_hook(
                    where, rule, hook):
                continue  # the iptables backend's jump to its chains: k3snet's, not foreign
            if isinstance(rule, dict) and isinstance(rule.get("expr"), list):
                named = self._named_sets_in(where, rule["expr"])
                for match in _some_device(parse_rule(one) for whole in (
                        () if named is None else _vmap_expanded(named))
                                          for one in _set_expanded(whole)):
                    if match.verdict in _STOPS and _never_new_pods(match):
                        pass  # `ct state invalid drop`: no default of theirs, not named one
                    elif match.verdict in _STOPS and not any(
                            not neg for _, neg in match.saddr + match.daddr):
                        # What it tests (an interface, a negated address, what k3snet
                        # does not model, named): the address it drops is any that passes.
                        tests = _tested(match)
                        stops.append(f"a rule that may {match.verdict} any address"
                                     f"{f', testing {tests}' if tests else ''} "
                                     f"(handle {rule.get('handle')})")
                        if not (match.iif or match.oif):  # (else a block, by the routes)
                            opaque.append(stops[-1])
                    elif match.verdict in _STOPS:
                        addressed.append(f"a rule that may {match.verdict} "
                                         f"{' '.join(_rule_words(match)[0])} "
                                         f"(handle {rule.get('handle')})")
                    if match.proto is None and family in ("ip", "ip6"):
                        match.proto = family
                    rules.append(match)
        return rules

    def _named_sets_in(self, where: tuple[str, str], expr: list[Any]) -> list[Any] | None:
        """``expr`` with each test against a named set of its table (``oifname !=
        @uplinks``, ``ip daddr @blocked``; nft's JSON writes the reference as
        ``"@uplinks"``) made a test against an anonymous set of the set's elements, as the
        kernel matches it: read as those are (a negated test of each name, of each prefix
        an exclusion; one rule per name or prefix). None: no packet matches ``expr`` (a
        positive test against an empty set). Each set is listed once a read; one whose
        contents may change with no commit (``dynamic`` or ``timeout``: packets add
        elements, or they expire, the generation id unmoved; nft 1.0.6's JSON hides
        ``dynamic``, but a set a rule adds to is listed with a ``size``), holding an
        element of another type, more than :data:`_MAX_VMAP_ELEMENTS`, or not listed (the
        bound of :data:`_MAX_FOREIGN_CHAINS` listings, an error) stays a reference: a test
        k3snet does not model (a drop or reject testing nothing else is then a warning
        naming it, an accept testing it takes nothing). A set of concatenations naming an
        address (``ip daddr . tcp dport @s``) so too (:meth:`_concat_elements`), for a
        verdict :func:`_set_expanded` reads element by element (a jump keeps the name)."""
        found = []
        for statement in expr:
            test = statement.get("match") if isinstance(statement, dict) else None
            right = test.get("right") if isinstance(test, dict) else None
            named = isinstance(right, str) and right.startswith("@")
            kinds = _concat_parts(test) if named else None
            if kinds is not None:
                assert isinstance(right, str)
                assert isinstance(test, dict)
                elements = self._concat_elements(where, right[1:], kinds)
                if elements == ():
                    return None  # an empty set: no packet passes the test
                if elements is not None and parse_rule(expr).verdict in (*_STOPS, "accept"):
                    # Read element by element (_set_expanded); a jump keeps the name.
                    found.append({"match": {**test, "right": {"set": list(elements)}}})
                else:
                    found.append(statement)
                continue
            kind = _set_test(test) if named else None
            if kind is None:
                found.append(statement)
                continue
            assert isinstance(test, dict)
            assert isinstance(right, str)
            elements = self._set_elements(where, right[1:], kind)
            if elements is None:
                found.append(statement)
            elif elements:
                found.append({"match": {**test, "right": {"set": list(elements)}}})
            elif test.get("op", "==") != "!=":
                return None  # a positive test against an empty set: no packet passes it
            # (and `!= @empty`: every packet passes it, a test no more)
        return found

    def _set_elements(self, where: tuple[str, str], name: str,
                      kind: str) -> tuple[Any, ...] | None:
        """The elements of the named set ``name`` of ``where``'s table when they are all of
        ``kind`` (``ifname``: names; ``ipv4_addr``, ``ipv6_addr``: prefixes, as nft's JSON
        writes anonymous sets'), and no packet can change them (:meth:`_named_sets_in`),
        else None."""
        if (where, name) not in self._sets:
            self._sets[(where, name)] = self._listed_set(where, name)
        body = self._sets[(where, name)]
        if body is None or body.get("type") != kind:
            return None
        elements = _static_elements(body)
        if elements is None:
            return None
        if kind == "ifname":
            names = tuple(e for e in elements if isinstance(e, str))
            # (an empty set of names stays a reference, as before it was listed)
            return names if names and len(names) == len(elements) else None
        try:
            nets = [net for e in elements for net in _element_prefixes(e)]
        except (ValueError, TypeError, KeyError):
            return None
        if len(nets) > _MAX_VMAP_ELEMENTS or any(
                net.version != (4 if kind == "ipv4_addr" else 6) for net in nets):
            return None
        return tuple({"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}
                     for net in nets)

    def _concat_elements(self, where: tuple[str, str], name: str,
                         kinds: list[str | None]) -> tuple[Any, ...] | None:
        """The elements of the named set ``name`` of ``where``'s table, a concatenation
        whose parts are ``kinds`` (an address part of that type, None: any other), when
        no packet can change them (as :meth:`_set_elements`) and each is one k3snet reads
        (:func:`_concat_items`), else None."""
        if (where, name) not in self._sets:
            self._sets[(where, name)] = self._listed_set(where, name)
        body = self._sets[(where, name)]
        types = body.get("type") if body is not None else None
        if (body is None or not isinstance(types, list) or len(types) != len(kinds)
                or any(kind is not None and kind != type_
                       for kind, type_ in zip(kinds, types, strict=True))):
            return None
        elements = _static_elements(body)
        if elements is None:
            return None
        if not elements:
            return ()
        parts = [{"payload": {"protocol": "ip" if kind == "ipv4_addr" else "ip6",
                              "field": "daddr"}} if kind else {"meta": {"key": "mark"}}
                 for kind in kinds]
        test = {"match": {"op": "==", "left": {"concat": parts}, "right": {"set": elements}}}
        return tuple(elements) if _concat_items(test) is not None else None

    def _listed_set(self, where: tuple[str, str], name: str) -> dict[str, Any] | None:
        """The named set ``name`` of ``where``'s table, as listed (None: not listed)."""
        if self.listed >= _MAX_FOREIGN_CHAINS:
            return None
        self.listed += 1
        try:
            items = self._list("set", {"family": where[0], "table": where[1],
                                       "name": name}) or []
        except (ListingTimeoutError, UnprintableNameError) as exc:
            self.unread.append(str(exc))
            return None
        except BackendError:
            return None
        for item in items:
            body = item.get("set") if isinstance(item, dict) else None
            if isinstance(body, dict) and body.get("name") == name:
                return body
        return None

    def _list(self, kind: str, ref: dict[str, str]) -> list[dict[str, Any]] | None:
        return self.kernel.list(kind, **ref)

    def _iptables_hook(self, where: tuple[str, str], rule: dict[str, Any], main: str) -> bool:
        """Whether ``rule`` of an iptables-nft built-in chain is the iptables backend's jump
        to its main chain ``main``, as it writes it (``-m comment --comment k3snet -j
        K3SNET-POSTROUTING``: a comment, a counter, the jump), and ``main`` holds only
        what it writes there (each rule such a jump to one of its bucket chains; none:
        every bucket gone). The comment's text libnftables' JSON hides (an ``xt``
        match): the main chain's rules tell k3snet's from an administrator's
        ``K3SNET-*`` chain, whose rules k3snet never writes (a look-alike stays foreign)."""
        if where in self.iptables_own:
            return _tagged_jump(rule) == main
        if _tagged_jump(rule) != main:
            return False
        try:
            items = self._list("chain", {"family": where[0], "table": where[1], "name": main})
        except BackendError:  # unread (a timeout too): read as another's, conservatively
            return False
        inner = [item["rule"] for item in items or () if isinstance(item.get("rule"), dict)]
        from k3snet.render.iptables.rules import bucket_table  # noqa: PLC0415

        # A bucket's name in its own table only (K3SNET-F-x in filter, K3SNET-N-... in
        # nat), as the iptables backend reads its chains: a K3SNET-F-1 in nat is not its.
        if not all(bucket_table(_tagged_jump(r) or "") == where[1] for r in inner):
            return False
        self.iptables_own[where] = main
        return True

    def _walk(self, where: tuple[str, str], chain: str, exits: _Exits, way: _Way,
              visit: Callable[[Match, _Exits], None]) -> tuple[list[Match], bool]:
        """Walk ``chain`` after the exits seen so far, reached by ``way``.

        Returns the conditional exits that also end the calling chain, and whether
        every packet stops here. ``exits`` are the earlier rules that take some
        packets away (returns, accepts, drops, jumps k3snet does not follow). At
        most :data:`_MAX_WALKED_RULES` rules are walked in all (a hostile
        ruleset's conditional jumps could make the walk exponential): past that,
        what is left is unread.
        """
        local = _Exits(exits)
        passed_up: list[Match] = []
        way = way.into(where, chain)
        for match in self._walked_rules(where, chain):
            verdict = match.verdict
            if verdict in ("masquerade", "snat", "accept") or _translates_opaquely(match):
                self._at = (where, chain)
                self._visit(way.reaching(match), local, visit)
            if verdict is None:
                continue
            if verdict in ("masquerade", "snat"):
                # A translation ends the chain (and its callers) for what it matches;
                # with no condition, for everything that reached it.
                local.append(match)
                passed_up.append(match)
                if not match.conditions:
                    break
                continue
            if verdict == "return":
                if not match.conditions or _unmarked_only(match):
                    break  # no packet of k3snet's goes on in this chain
                local.append(match)
            elif way.follows(where, match) and not match.conditions:
                assert match.target is not None
                sub, stop = self._walk(where, match.target, local, way, visit)
                local += sub
                passed_up += sub
                if stop:
                    return passed_up, True
                if verdict == "goto":
                    break
            elif not match.conditions and verdict in ("accept", "drop", "queue"):
                return [*passed_up, match], True
            else:  # a conditional accept, drop or jump, a jump not followed, a target
                self._walk_guarded(where, match, local, way, visit)
                local.append(match)
                passed_up.append(match)
        return passed_up, False

    def _walk_guarded(self, where: tuple[str, str], jump: Match, exits: _Exits, way: _Way,
                      visit: Callable[[Match, _Exits], None]) -> None:
        """Walk the chain a conditional ``jump`` leads to (if followed): what it does
        applies to the packets the jump matches (its NAT is foreign NAT for those). For
        the rest of the calling chain the jump stays an exit k3snet cannot see through
        (a doubt)."""
        if not way.follows(where, jump):
            return
        assert jump.target is not None
        guard = way.reaching(jump)
        if guard is not None:  # else no packet that comes this way passes the jump
            self._walk(where, jump.target, exits, attrs.evolve(way, guard=guard), visit)

    @staticmethod
    def _visit(match: Match | None, exits: _Exits,
               visit: Callable[[Match, _Exits], None]) -> None:
        if match is not None:  # None: no packet that comes this way reaches it
            visit(match, exits)

    def _walked_rules(self, where: tuple[str, str], chain: str) -> Iterator[Match]:
        """The rules of ``chain``, each counted as walked; past the bound, one rule that
        may drop anything instead of the rest (said once in ``unread``)."""
        for match in self._rules(where, chain):
            if not self._walk_budget.take(self.unread, where, chain):
                yield Match(unknown=1, verdict="drop")
                return
            yield match

    def _nat_rule(self, match: Match, exits: _Exits) -> None:
        if match.verdict not in ("masquerade", "snat") or match.proto is None:
            return
        if match.unknown or match.marks or match.iif or match.nat_extra or match.ct_reply:
            return
        dst = [n for n, neg in match.daddr if not neg]
        if (len(match.saddr) > 1 or any(neg for _, neg in match.saddr + match.oif)
                or len(dst) > 1 or len(match.oif) > 1):
            return
        source = match.saddr[0][0] if match.saddr else _any_network(match.proto)
        destination = dst[0] if dst else None
        oif = match.oif[0][0] if match.oif else None
        family = 4 if match.proto == "ip" else 6
        spared = _spared(match, exits.meeting(source, destination), family, source,
                         destination=destination, oif=oif)
        if spared is None:
            return  # cannot tell which packets an exit spares: leave the rule out
        excluded = [n for n, neg in match.daddr if neg] + spared
        whole = destination or _any_network(match.proto)
        excluded = [e for e in excluded if overlaps(e, whole)]
        try:
            if oif is not None:
                validate_interface_name(oif)  # "eth*" wildcards are not modelled
            common: dict[str, Any] = {"destination": destination, "exclude": excluded,
                                      "out_interface": oif,
                                      "random_fully": "fully-random" in match.nat_flags}
            obj: NetObject | None = None
            if match.verdict == "masquerade":
                obj = MasqueradeRule(source, **common)
            elif match.nat_addr is not None:
                obj = SnatRule(source, to_address=match.nat_addr, **common)
            if obj is not None:
                self.nat.append(obj)
                self.nat_origin[obj] = self._walking
        except ModelError:
            return

    def _nat_rule_first(self, match: Match, exits: _Exits) -> None:
        """A NAT rule of a chain met no later than k3snet's: also a :class:`NatBlock`.

        The kernel runs the nat base chains on the postrouting hook in priority
        order, and the first chain that translates a connection decides it; the
        others are not run for it (an ``accept`` or ``return`` only ends its own
        chain: no exemption). Between equal priorities (iptables-nft's ``ip nat``
        sits at ``srcnat`` too) the order is not something to rely on: a doubt
        counts against k3snet, as in the iptables reader. What earlier rules of the
        chain take away is not subtracted (a doubt again), except packets sent away
        unless marked (kube-proxy's ``meta mark & 0x4000 == 0 return``): the NAT
        after it sees marked packets only. A rule testing for a set mark is
        likewise another program's traffic.
        """
        self._nat_rule(match, exits)
        if match.verdict not in ("masquerade", "snat") and not _translates_opaquely(match):
            return
        if match.marks and match.mark_set_only:
            return
        self.nat_blocks.extend((block, self._walking) for block in _nat_blocks_of(match, *self._at))

    def _forward_rule(self, match: Match, exits: _Exits) -> None:
        if match.verdict != "accept":
            return  # (an iptables target k3snet cannot see into accepts nothing)
        if match.ct_reply and match.conditions == 1:
            self.replies_accepted = True
            return
        if match.unknown or match.marks or match.ct_reply or match.proto is None:
            return
        parts = (match.saddr, match.daddr, match.iif, match.oif)
        if any(len(p) > 1 or any(neg for _, neg in p) for p in parts):
            return
        family = 4 if match.proto == "ip" else 6
        source = match.saddr[0][0] if match.saddr else _any_network(match.proto)
        destination = match.daddr[0][0] if match.daddr else _any_network(match.proto)
        iif = match.iif[0][0] if match.iif else None
        oif = match.oif[0][0] if match.oif else None
        if exits.any_meeting(source, destination, lambda cond: cond.verdict != "accept" and not
                             _disjoint(cond, family, source, destination, oif)):
            return  # something earlier may drop these packets (read: those that may meet)
        try:
            rule = ForwardRule(source, destination, in_interface=iif, out_interface=oif)
        except ModelError:
            return
        self.accepts.append(rule)
        if self._walking is not None:
            self.origins.setdefault(rule, set()).add(self._walking)


@attrs.frozen
class ForwardDefault:
    """A base chain of another table whose default may drop forwarded packets (a filter
    chain, or a nat chain on the prerouting or postrouting hook)."""

    family: str
    table: str
    chain: str
    policy: str
    what: tuple[str, ...]
    """``policy drop``, ``a rule that may drop any address (handle 12)``, ``a rule that
    may drop any address, testing oifname eth0 (handle 13)`` (its tests of interfaces or
    addresses said) ..."""
    kind: str = "filter"
    """The chain's type: ``filter``, or ``nat`` (on the prerouting or postrouting hook)."""
    after_own_nat: bool = False
    """A nat chain on the postrouting hook of a priority after k3snet's (srcnat)."""


@attrs.frozen
class EgressDefault:
    """A ``netdev`` chain of another table on the egress hook of ``devices`` that may drop:
    its ``policy``, and ``stops``, its rules that may drop, reject or queue a packet or
    jump elsewhere (their words, the destinations each names: none, any, and those the
    chain accepted before it: what they take, it never sees)."""

    table: str
    chain: str
    devices: tuple[str, ...]
    policy: str
    stops: tuple[tuple[str, tuple[Network, ...], tuple[Network, ...]], ...]

    def may_drop(self, rule: ForwardRule) -> bool:
        """Whether it may drop ``rule``'s packets as they leave by one of its devices
        (``rule.out_interface``; unset: any) or their replies, leaving by the device they
        came in by (``rule.in_interface``). The chain runs after postrouting: the pods'
        packets have the source k3snet's NAT gave them (the node's address), the replies
        their destination given back (the pods'); only a destination is compared, a
        rule naming none may drop them all, unless an accept before it took the
        destination. The policy drop is judged by no accept of a destination: it drops the
        next hop's ARP and neighbour discovery too, which k3snet does not read."""
        for devices_meet, destination in ((rule.out_interface, rule.destination),
                                          (rule.in_interface, rule.source)):
            if not any(interfaces_may_meet(d, devices_meet) for d in self.devices):
                continue
            if self.policy != "accept" or any(
                    (not named or any(overlaps(n, destination) for n in named))
                    and not any(contains(a, destination) for a in accepted)
                    for _, named, accepted in self.stops):
                return True
        return False

    def what(self) -> str:
        """Its policy drop and its stopping rules, in words."""
        said = [f"policy {self.policy}"] if self.policy != "accept" else []
        said += [words for words, *_ in self.stops[:3]]
        if len(self.stops) > 3:
            said.append(f"{len(self.stops) - 3} more")
        return "; ".join(said)


@dataclass(frozen=True)
class ForwardDefaults:
    """What :meth:`ForeignReader.defaults` found, with the rules the read listed (parsed):
    enough to judge wanted forward rules later without listing anything."""

    found: tuple[ForwardDefault, ...] = ()
    listings: dict[tuple[tuple[str, str], str], list[Match]] = field(default_factory=dict)
    egress: tuple[EgressDefault, ...] = ()
    """The ``netdev`` egress chains that may drop (:meth:`leaving`)."""
    iptables_own: tuple[tuple[tuple[str, str], str], ...] = ()
    """The read's other finding: iptables-nft's tables holding the iptables backend's
    chains, each with the chain its hook jumps to (``(("ip", "nat"),
    "K3SNET-POSTROUTING")``), passed by (:attr:`ForeignReader.iptables_own`)."""
    doubts: tuple[Doubt, ...] = ()
    """What the read could not judge whole and says (:attr:`ForeignReader.doubts`)."""
    partial: tuple[NetObject, ...] = ()
    """The blocks, as they would be, of notracks of one protocol, no block
    (:attr:`ForeignReader.partial`, :mod:`k3snet.backends.untracked`)."""
    absent: tuple[str, ...] = ()
    """The devices chains on an ingress or egress hook were read on that the node did not
    have (:meth:`ForeignReader._present`): read as dropping nothing while so."""
    present: tuple[str, ...] = ()
    """The devices such chains were read on that the node had (when it could tell): read
    as dropping what they drop while so, the device leaving moving no generation id."""
    places: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    """Each of :attr:`partial`'s ``where`` (``nftables ip a b early``) with the family,
    table and chain it names (``("ip", "a b", "early")``): a table's name may hold a space,
    which the text cannot tell from the one before the chain's
    (:func:`~k3snet.backends.untracked.nft_list_chain`)."""

    def unopened(self, rules: Sequence[ForwardRule], *,
                 translated: Sequence[NetObject] = ()) -> list[tuple[ForwardDefault,
                                                                    ForwardRule]]:
        """Each default with the first of ``rules`` whose packets it may drop, new ones or
        (in a filter chain) replies: its chain does not accept them before its policy or
        its catch-all drop (a chain jumped to that the read did not list may drop
        anything). A nat chain on the postrouting hook
        after k3snet's (priority above srcnat) never sees a connection a NAT rule of
        ``translated`` (k3snet's) translates whole: the kernel runs no later nat chain for
        a connection an earlier one translated."""
        if not self.found or not rules:
            return []
        judge = ForeignReader(_Unlisted(), frozenset(), _listings=dict(self.listings))
        judge.listed = _MAX_FOREIGN_CHAINS  # never list: what was not read may drop
        found = []
        for default in self.found:
            base = ((default.family, default.table), default.chain, default.policy)
            for rule in rules:
                if default.after_own_nat and any(_translates(n, rule) for n in translated):
                    continue
                # The replies too (k3snet's table accepts them): a filter chain sees them.
                if not judge._lets_through(base, rule, defaults=True) or (
                        default.kind == "filter"
                        and not judge._lets_through(base, _replies(rule), defaults=True,
                                                    reply=True)):
                    found.append((default, rule))
                    break
        return found


    def leaving(self, rules: Sequence[ForwardRule]) -> list[tuple[EgressDefault, ForwardRule]]:
        """Each egress chain with the first of ``rules`` it may drop (packets or replies)
        as they leave (:meth:`EgressDefault.may_drop`)."""
        return [(default, rule) for default in self.egress
                for rule in [next((r for r in rules if default.may_drop(r)), None)]
                if rule is not None]

    def unopened_errors(self, rules: Sequence[ForwardRule]) -> list[tuple[ForwardDefault,
                                                                          ForwardRule]]:
        """Each filter default with the first of ``rules`` whose connections and replies
        its chain accepts but not a router's ICMP error for them (an ICMPv6 Packet Too
        Big, an ICMP fragmentation needed): the error comes from the router's own
        address, RELATED to the connection and given back to the pods, and an accept of
        the replies by their source (``ip saddr DEST ip daddr PODS``) leaves it to the
        default: path MTU discovery never learns a smaller MTU on the way, and the
        pods' larger packets are lost (k3snet's table's own accept ends only its chain)."""
        if not self.found or not rules:
            return []
        judge = ForeignReader(_Unlisted(), frozenset(), _listings=dict(self.listings))
        judge.listed = _MAX_FOREIGN_CHAINS  # never list: what was not read may drop
        found = []
        for default in self.found:
            if default.kind != "filter":
                continue  # a nat chain sees a connection's first packet only
            base = ((default.family, default.table), default.chain, default.policy)
            for rule in rules:
                errors = _errors(rule)
                if errors == _replies(rule):
                    continue  # the replies from anywhere: judged by unopened
                if (judge._lets_through(base, rule, defaults=True)
                        and judge._lets_through(base, _replies(rule), defaults=True,
                                                reply=True)
                        and not judge._lets_through(base, errors, defaults=True,
                                                    reply=True, errors=True)):
                    found.append((default, rule))
                    break
        return found


def _errors(rule: ForwardRule) -> ForwardRule:
    """A router's ICMP errors for ``rule``'s connections: to its source, from anywhere."""
    return ForwardRule(_any_network("ip" if rule.family == 4 else "ip6"), rule.source,
                       in_interface=rule.out_interface, out_interface=rule.in_interface)


def _replies(rule: ForwardRule) -> ForwardRule:
    """The replies of ``rule``'s connections, as a rule of their own way."""
    return ForwardRule(rule.destination, rule.source, in_interface=rule.out_interface,
                       out_interface=rule.in_interface)


def _translates(nat: NetObject, rule: ForwardRule) -> bool:
    """Whether NAT rule ``nat`` translates every new connection of ``rule``."""
    return (isinstance(nat, MasqueradeRule | SnatRule) and nat.family == rule.family
            and contains(nat.source, rule.source)
            and nat.out_interface in (None, rule.out_interface)
            and any(contains(net, rule.destination) for net in nat.natted_destinations()))


class _Unlisted:
    """A :class:`Lists` that lists nothing (``ForwardDefaults`` judges what was read)."""

    def list(self, kind: str, **ref: str) -> list[dict[str, Any]] | None:
        raise BackendError(f"not listed: {kind} {' '.join(ref.values())}")


_Found = tuple[frozenset[NetObject], tuple[str, ...], ForwardDefaults]
"""A read of other tables: (found, unread, defaults)."""


def read_foreign_within(bounded: BoundedLister, own_tables: frozenset[tuple[str, str]],
                        deadline: float, routed: RoutedBy | None = None) -> _Found:
    """Other tables' egress state, read by ``deadline`` (``time.monotonic()``): (found,
    unread, the defaults that may drop forwarded packets: :meth:`ForeignReader.defaults`).

    The whole read runs in the helper's thread, one hand-off. Past the deadline
    it is given up on, and read again from the listings it had completed: what
    it had not is unread. While the helper is stuck in an earlier listing, each
    listing runs ``nft`` in a child process killed at the deadline. ``routed``: see
    :attr:`ForeignReader.routed`.
    """
    done: dict[tuple[str, ...], Any] = {}
    try:
        return bounded.run(deadline, lambda kernel: _whole(kernel, own_tables, done, routed))
    except ListingTimeoutError:
        return _given_up(done, own_tables, deadline, routed)


@dataclass
class ForeignRead:
    """A read of other tables started in a :class:`BoundedLister`'s helper, not waited for
    (:func:`start_foreign_read`, :func:`finish_foreign_read`)."""

    own_tables: frozenset[tuple[str, str]]
    future: Future[_Found]
    done: dict[tuple[str, ...], Any]
    routed: RoutedBy | None = None


def start_foreign_read(bounded: BoundedLister, own_tables: frozenset[tuple[str, str]],
                       routed: RoutedBy | None = None) -> ForeignRead:
    """The read of :func:`read_foreign_within`, queued in the helper thread now."""
    done: dict[tuple[str, ...], Any] = {}
    bounded.calls += 1
    return ForeignRead(own_tables, bounded.submit(lambda k: _whole(k, own_tables, done, routed)),
                       done, routed)


def finish_foreign_read(bounded: BoundedLister, read: ForeignRead, deadline: float) -> _Found:
    """What :func:`read_foreign_within` gives, for a read :func:`start_foreign_read` began:
    waited for until ``deadline``, then what its completed listings say."""
    try:
        return bounded.wait(read.future, deadline)
    except ListingTimeoutError:
        return _given_up(read.done, read.own_tables, deadline, read.routed)


def _given_up(done: dict[tuple[str, ...], Any], own_tables: frozenset[tuple[str, str]],
              deadline: float, routed: RoutedBy | None = None) -> _Found:
    # Copied in one C call: the helper may still be adding to it.
    lister: Lists = _Replay(dict(done)) if _started(done) else _ChildLister(deadline)
    reader = ForeignReader(lister, own_tables, routed=routed)
    found = reader.read()
    defaults = reader.defaults()  # first: what it gave up on is unread too
    return found, tuple(reader.unread), defaults


def _whole(kernel: NftKernel, own_tables: frozenset[tuple[str, str]],
           done: dict[tuple[str, ...], Any],
           routed: RoutedBy | None = None) -> _Found:
    done[("started",)] = True
    reader = ForeignReader(_Recording(kernel, done), own_tables, routed=routed)
    found = reader.read()
    defaults = reader.defaults()  # first: what it gave up on is unread too
    return found, tuple(reader.unread), defaults


def _started(done: dict[tuple[str, ...], Any]) -> bool:
    return ("started",) in done


@dataclass
class _Recording:
    """Lists through ``kernel`` and keeps each answer (or error) in ``done``."""

    kernel: NftKernel
    done: dict[tuple[str, ...], Any]

    def list(self, kind: str, **ref: str) -> list[dict[str, Any]] | None:
        key = (kind, *ref.values())
        try:
            items = self.kernel.list(kind, **ref)
        except BackendError as exc:
            self.done[key] = exc
            raise
        self.done[key] = items
        return items


@dataclass
class _Replay:
    """The listings a read given up on had completed; any other is unread."""

    done: dict[tuple[str, ...], Any]

    def list(self, kind: str, **ref: str) -> list[dict[str, Any]] | None:
        key = (kind, *ref.values())
        if key not in self.done:
            what = " ".join(["list", kind, *ref.values()])
            raise ListingTimeoutError(f"nft {what!r} did not finish within the foreign read's "
                                      f"bound ({SLOW_LISTING})")
        found = self.done[key]
        if isinstance(found, BaseException):
            raise found
        return found  # type: ignore[no-any-return]


@dataclass
class _ChildLister:
    """Listings through ``nft`` in a child process, killed at ``deadline``."""

    deadline: float

    def list(self, kind: str, **ref: str) -> list[dict[str, Any]] | None:
        return list_in_child(self.deadline, kind, **ref)


@functools.cache
def _xt_hook_chains() -> dict[tuple[str, str, str], str]:
    """iptables-nft's built-in chains the iptables backend hooks, by (family, table,
    chain): the main chain its jump goes to. (The iptables renderer is imported at the
    first read of another table, not with the backend: a cold nftables apply on a node
    with no other table never needs it.)"""
    from k3snet.render.iptables.rules import HOOKS  # noqa: PLC0415

    return {(family, hook.table, hook.builtin): hook.main
            for hook in HOOKS.values() for family in ("ip", "ip6")}


def _tagged_jump(rule: dict[str, Any]) -> str | None:
    """The chain ``rule`` jumps to when it is shaped as the iptables backend's jumps are
    through iptables-nft (a comment, counters, a jump; nothing else), else ``None``. The
    comment is an ``xt`` match whose text libnftables' JSON leaves out, or (an
    iptables-nft keeping it as the rule's comment) ``k3snet``."""
    expr = rule.get("expr")
    if not isinstance(expr, list) or not expr:
        return None
    last = expr[-1]
    jump = last.get("jump") if isinstance(last, dict) else None
    if not isinstance(jump, dict) or not isinstance(jump.get("target"), str):
        return None
    comments = 0
    for item in expr[:-1]:
        if not isinstance(item, dict) or len(item) != 1:
            return None
        xt = item.get("xt")
        if isinstance(xt, dict) and xt.get("type") == "match" and xt.get("name") == "comment":
            comments += 1
        elif "counter" not in item:
            return None
    if rule.get("comment") is not None:
        if rule.get("comment") != "k3snet" or comments:
            return None
        comments = 1
    return str(jump["target"]) if comments == 1 else None


def _narrowest(tests: list[tuple[Network, bool]]) -> list[tuple[Network, bool]] | None:
    """Address tests that must all hold, with the positive prefixes cut to the narrowest
    (two prefixes either nest or are disjoint); None when no address passes them all."""
    positive = [net for net, neg in tests if not neg]
    for net in positive:
        if any(not overlaps(net, other) for other in positive):
            return None
    kept = [min(positive, key=lambda n: n.num_addresses)] if positive else []
    if kept and any(neg and contains(net, kept[0]) for net, neg in tests):
        return None  # `!= 10.0.0.0/8` on the way, `10.42.0.0/16` here
    return [(net, False) for net in kept] + [(net, neg) for net, neg in tests if neg]


def _may_pass(tests: list[tuple[str, bool]]) -> bool:
    """Whether some interface passes all these name tests (a packet has one: two plain
    names, or a name and its own negation, leave none; nor does ``oifname "eth0"``
    behind ``oifname != "eth*"``, eth0 being one of eth*), as the kernel compares them
    and the iptables backend reads ``! -o eth+`` (:func:`~k3snet.model.interfaces_left`)."""
    return interfaces_left([model_ifname(name) for name, neg in tests if not neg],
                           [model_ifname(name) for name, neg in tests if neg])


def _guarded(guard: Match, match: Match) -> Match | None:
    """``match`` as reached through a conditional jump testing ``guard``: a rule making
    the tests of both (None: no packet passes both)."""
    if guard.proto is not None and match.proto not in (None, guard.proto):
        return None
    saddr, daddr = _narrowest(guard.saddr + match.saddr), _narrowest(guard.daddr + match.daddr)
    iif, oif = guard.iif + match.iif, guard.oif + match.oif
    if saddr is None or daddr is None or not _may_pass(iif) or not _may_pass(oif):
        return None
    marks = guard.marks + match.marks
    return dataclasses.replace(
        match, proto=match.proto or guard.proto, saddr=saddr, daddr=daddr,
        iif=iif, oif=oif, nfproto=guard.nfproto + match.nfproto,
        ct_reply=guard.ct_reply or match.ct_reply,
        marks=marks, marked=[*guard.marked, *match.marked],
        unknown=guard.unknown + match.unknown, l4=match.l4 or guard.l4,
        unread=[*guard.unread, *match.unread], never_pods=guard.never_pods + match.never_pods,
        ports=match.ports or guard.ports, pmtu4=guard.pmtu4 + match.pmtu4,
        pmtu6=guard.pmtu6 + match.pmtu6,
        mark_set_only=bool(marks) and all(m.mark_set_only for m in (guard, match) if m.marks),
        mark_unset_only=bool(marks) and all(m.mark_unset_only for m in (guard, match)
                                            if m.marks))


def _unseen() -> Match:
    """A rule standing for a chain k3snet did not read: it may drop anything (its
    ``target`` marks it, for :meth:`ForwardDefaults.unopened`)."""
    return Match(unknown=1, verdict="drop", target="(unread)")


def _never_new_pods(match: Match) -> bool:
    """Whether ``match`` tests only what k3snet does not model, besides the address family
    (no address, interface or mark), one of them a test no packet of a new pod connection
    or its replies passes (``ct state invalid``, firewalld's ``meta nfproto ipv6 fib saddr
    . mark . iif oif missing``: :func:`_never_pods`), so no default for new pod traffic.
    One testing only others (``tcp dport 5432``, ``meta l4proto udp``, a named set k3snet
    did not read) may drop the pods' packets: a default (a warning naming it)."""
    return bool(match.never_pods) and not (match.saddr or match.daddr or match.iif
                                           or match.oif or match.marks or match.ct_reply)


def _misses(match: Match, rule: ForwardRule) -> bool:
    """True when ``match`` can never match a packet of ``rule``."""
    if _disjoint(match, rule.family, rule.source, rule.destination, rule.out_interface):
        return True
    return _no_interface_passes(match.iif, rule.in_interface)


def _covers(match: Match, rule: ForwardRule, *, reply: bool = False,
            errors: bool = False) -> bool:
    """True when ``match`` matches every packet of ``rule`` (only tests k3snet understands;
    ``reply``: ``rule``'s packets are replies, all of which a ``ct state
    established,related`` test matches; ``errors``: they are a router's ICMP errors
    carrying the path's MTU, which tests of their protocol and type match)."""
    known = (match.pmtu4 if rule.family == 4 else match.pmtu6) if errors else 0
    if match.unknown > known or match.marks or (match.ct_reply and not reply):
        return False
    if match.proto is not None and (match.proto == "ip") != (rule.family == 4):
        return False
    for nets, subject in ((match.saddr, rule.source), (match.daddr, rule.destination)):
        for net, neg in nets:
            if (neg and overlaps(net, subject)) or (not neg and not contains(net, subject)):
                return False
    for names, device in ((match.iif, rule.in_interface), (match.oif, rule.out_interface)):
        for name, neg in names:
            if device is None or (name == device) == neg:
                return False
    return True


def _answers(other: ForwardRule, rule: ForwardRule) -> bool:
    """``other`` accepts the replies of ``rule``'s traffic."""
    return (other.family == rule.family and contains(other.source, rule.destination)
            and contains(other.destination, rule.source)
            and other.in_interface in (None, rule.out_interface)
            and other.out_interface in (None, rule.in_interface))


# ---------------------------------------------------------------- k3snet's own table


def read_own(kernel: Lists, table_name: str, families: tuple[str, ...], genid: int, *,
             seen: Lines | None = None, expected: Sequence[NetObject] = (),
             mark: bool = True) -> Cache:
    """k3snet's table(s) as the kernel lists them, stamped with ``genid``.

    Every rule shaped as k3snet writes it becomes its object; everything else
    in the table becomes a :class:`~k3snet.model.Drift` with its repair.

    A lister that also lists text (:class:`~.kernel.TextLists`) is asked for
    that first: a table whose text is all k3snet's lines is read from it
    (:mod:`.text`, the same result, about three times quicker); any other is
    listed again as JSON and read from that. ``seen``: the lines an earlier read
    read (its cache's ``lines``), which are not read again; without them,
    ``expected``: objects whose rules' lines are taken as them unread
    (:func:`~.text.listed_rules`). A table's flags are read from its text
    (:func:`~.text.table_flags`): ``dormant`` is drift, any other a
    :class:`~k3snet.errors.BackendError` (see :meth:`_OwnTable.flagged`).

    A table is k3snet's when it carries k3snet's mark (a table comment, seen in
    the text: libnftables 1.0.6's JSON leaves it out), or holds k3snet's marker
    chain or a rule with k3snet's tag (a table an older k3snet wrote; with
    ``mark``, when its text shows no mark, that is drift whose repair rebuilds
    it with the mark). Any other table of that name is another program's:
    :class:`~k3snet.errors.BackendError`, before anything is planned there.
    """
    cache = Cache(genid=genid)
    texts = kernel if isinstance(kernel, TextLists) else None
    for family in families:
        reader = _OwnTable(cache, family, table_name, families)
        text = None
        if texts is not None:
            try:
                text = texts.list_text("table", family=family, name=table_name)
                if text is None:
                    continue  # no such table
                reader.flagged(table_flags(text))
                reader.marked = table_marked(text)
                listed = listed_rules(text, family, table_name, seen, expected)
                if listed is not None and _every_rule_one_line(texts, family, table_name,
                                                               listed, genid):
                    reader.read_listed(listed)
                    reader.judge(mark=mark)
                    cache.lines.update(listed.lines)
                    continue
            except TextUnlistedError:
                pass
        items: list[dict[str, Any]] | None
        if reader.flags and text is not None:
            # libnftables 1.0.6 lists a flagged table's JSON wrong: its chains are listed
            # one by one instead (each listing names no table).
            items = [item for chain in chain_names(text) for item in kernel.list(
                "chain", family=family, table=table_name, name=chain) or ()]
        else:
            items = kernel.list("table", family=family, name=table_name)
        if items is not None:
            reader.read(items)
            if reader.flags and text is not None:  # what the chains' listings leave out
                for kind, name in table_objects(text):
                    reader.object_drift(kind, name)
            reader.judge(mark=mark)
    return cache


def _every_rule_one_line(texts: TextLists, family: str, table: str,
                         listed: ListedTable, genid: int) -> bool:
    """Whether each base chain of the table read from its text holds as many rules as the
    text has lines there, no commit having come between the listing and the counts
    (the generation id is still ``genid``, read before the listing).

    nft prints a comment as it is: one with a newline prints lines that read as
    rules, k3snet's even (a tag, a handle), which no rule holds (a rule of k3snet's
    can be deleted and its line printed by another rule's comment). Each rule prints
    at least one line, so the counts are equal only when no comment there holds a
    newline (tests/nftables/test_text_listing.py); otherwise the JSON listing, where
    a comment is one string, judges the table.
    """
    lines = Counter(rule.chain for rule in listed.rules)
    # Counted after the listing: another program's commit in between (a rule added where
    # a comment printed one line too many) could make them match a text that is not
    # the table; the id read after them says whether one came.
    return (all(texts.chain_rules(family, table, chain) == lines[chain]
                for chain in listed.chains if chain != MARKER_CHAIN)
            and texts.genid() == genid)


LEFTOVER = "k3snet's table of the other layout (another nftables family setting wrote it)"
"""What a :func:`leftover_drift` says (its repair deletes the table)."""


def leftover_drift(family: str, table: str) -> Drift:
    """The drift a table of k3snet's other layout is (:meth:`ForeignReader._leftovers`):
    its rules still translate and accept, k3snet's plans no longer manage them, and its
    NAT would read as meeting the rules k3snet wants (so it wrote none)."""
    return Drift.of("nat", backend="nftables", where=f"{family} {table}",
                    what=f"{LEFTOVER}: its rules still apply (apply deletes it)")


def _chain_kind(chain: str) -> str:
    """The drift kind of a finding in ``chain`` (the table as a whole counts as nat)."""
    return "forward" if chain == FORWARD_CHAIN else "nat"


def _handles(handles: Sequence[int]) -> str:
    return ("rule handle " if len(handles) == 1 else "rules handle ") + ", ".join(
        str(h) for h in handles)


@dataclass
class _OwnTable:
    """Reads one of k3snet's tables into ``cache``: objects, handles and drift."""

    cache: Cache
    family: str
    name: str
    families: tuple[str, ...]
    # forward rule halves by (main tag, is the reply half), in kernel order
    halves: dict[tuple[str, bool], list[tuple[ForwardRule, int]]] = field(default_factory=dict)
    flags: tuple[str, ...] | None = None  # the table's, once read (from its text)
    marked: bool | None = None  # carries k3snet's mark (None: the listing cannot say)
    k3snets: bool = False  # holds k3snet's marker chain or a rule with k3snet's tag
    # NAT rules through a wildcard or any interface read so far, by their prefixes (key[1:6]):
    # empty in a table without them, so the order check costs one test per rule there
    wide: dict[tuple[Any, ...], list[tuple[NetObject, list[int]]]] = field(
        default_factory=dict)

    def judge(self, *, mark: bool) -> None:
        """Refuse another program's table of k3snet's name; an older k3snet's table
        (unmarked) is drift when ``mark`` (its repair rebuilds it with the mark)."""
        if self.marked:
            return
        if not self.k3snets:
            raise BackendError(
                f"nftables table {self.family} {self.name} is not k3snet's: it has neither "
                f'k3snet\'s mark (comment "{TABLE_COMMENT}") nor any chain or rule k3snet '
                "writes, and k3snet rewrites and deletes what is in its table. Give k3snet a "
                "table of its own (--backend-opt nftables.table=NAME, a name no other "
                "program uses; the default is k3snet), or delete this table if nothing "
                "needs it")
        if self.marked is False and mark:
            # (libnftables before 1.0.8 takes no table comment in a JSON batch: k3snet
            # with syntax="json" writes its table so too, read as k3snet's without drift)
            self.drift(None, "no mark of k3snet's (a table an older k3snet, or k3snet with "
                       "syntax json through a libnftables that takes no table comment, "
                       "wrote): apply "
                       f'rebuilds it with its comment "{TABLE_COMMENT}"',
                       Repair(self.family, rebuild=True))

    def flagged(self, flags: tuple[str, ...]) -> None:
        """The table's flags, read: ``dormant`` (every chain unhooked) is drift that the
        rebuild repairs; any other is refused (BackendError), ``owner`` above all:
        only the process that owns the table may change or delete it."""
        self.flags = flags
        others = [f for f in flags if f != "dormant"]
        if others:
            what = ("another process owns it: only that process may change or delete it"
                    if "owner" in others else "k3snet does not know what it does")
            raise BackendError(
                f"nftables table {self.family} {self.name} has flags {','.join(flags)} "
                f"({what}); k3snet writes nothing there. End what made it (an owned table "
                "goes with its process) or delete it, or give k3snet another table "
                "(--backend-opt nftables.table=NAME)")
        if flags:
            self.drift(None, "flags dormant: the table's chains are unhooked, none of its "
                       "rules sees a packet (apply rebuilds the table)",
                       Repair(self.family, rebuild=True))

    def json_flags(self, value: Any) -> None:
        """Flags as libnftables' JSON lists them, when the text did not say: 1.0.6
        prints another string there (``"k3snet"``), read as flags it cannot name."""
        names = [value] if isinstance(value, str) else value
        if isinstance(names, list) and names and all(n in _TABLE_FLAGS for n in names):
            self.flagged(tuple(names))
            return
        self.flags = ("?",)
        self.drift(None, f"flags libnftables printed as {value!r}: a flag such as dormant "
                   "unhooks the table's chains (apply rebuilds the table)",
                   Repair(self.family, rebuild=True))

    def drift(self, chain: str | None, what: str, repair: Repair) -> None:
        where = f"{self.family} {self.name}" + (f" {chain}" if chain else "")
        self.cache.found(Drift.of(_chain_kind(chain or ""), backend="nftables", where=where,
                                  what=what), repair)

    def object_drift(self, kind: str, name: str) -> None:
        """A set, map or named object (``counter``, ``quota`` ...): k3snet writes none,
        and the table's rebuild (any drift's repair may be one) deletes it with the
        table, so it is drift the plan names rather than a loss nobody sees."""
        self.drift(None, f"{kind} {name}: not an object k3snet writes (the table's rebuild "
                   "deletes it)", Repair(self.family, rebuild=True))

    def extra_rules(self, chain: str, handles: Sequence[int], why: str) -> None:
        self.drift(chain, f"{_handles(handles)}: {why}",
                   Repair(self.family, rules=tuple((chain, h) for h in handles)))

    def read(self, items: list[dict[str, Any]]) -> None:
        table = self.cache.tables[self.family] = Table()
        rules = []
        for item in items:
            listed = item.get("table")
            if isinstance(listed, dict) and "flags" in listed and self.flags is None:
                self.json_flags(listed["flags"])
            if isinstance(listed, dict) and "comment" in listed and self.marked is None:
                self.marked = listed["comment"] == TABLE_COMMENT
            if isinstance(item.get("chain"), dict):
                table.chains[str(item["chain"].get("name"))] = item["chain"]
            elif isinstance(item.get("rule"), dict):
                rules.append(item["rule"])
            elif len(item) == 1 and listed is None and "metainfo" not in item:
                ((kind, body),) = item.items()
                if isinstance(body, dict) and isinstance(body.get("name"), str):
                    self.object_drift(kind, body["name"])
        self.read_chains(table)
        for rule in rules:
            self.read_rule(rule, table)
        self.pair_halves()

    def read_chains(self, table: Table) -> None:
        for name, chain in table.chains.items():
            if name == MARKER_CHAIN and "hook" not in chain:
                table.marker = self.k3snets = True
            elif name in CHAIN_HOOKS:
                spec = CHAIN_HOOKS[name]
                if any(chain.get(k) != spec[k] for k in ("type", "hook", "prio")):
                    self.drift(name, f"type {chain.get('type')} hook {chain.get('hook')} "
                               f"priority {chain.get('prio')} (k3snet's: type {spec['type']} "
                               f"hook {spec['hook']} priority {spec['prio']})",
                               Repair(self.family, rebuild=True))
                elif chain.get("policy") != spec["policy"]:
                    self.drift(name, f"policy {chain.get('policy')} (k3snet's: "
                               f"{spec['policy']})", Repair(self.family, chain=name))
            else:
                # Chain names can be nft keywords, which nft's language cannot quote:
                # rebuilding the table is the one removal that works for any name.
                self.drift(None, f"chain {name}: not a chain k3snet writes",
                           Repair(self.family, rebuild=True))
        for name in CHAIN_HOOKS:
            if name not in table.chains:
                self.drift(None, f"base chain {name} is missing", Repair(self.family, chain=name))

    def read_rule(self, rule: dict[str, Any], table: Table) -> None:
        chain, handle, comment = rule.get("chain"), rule.get("handle"), rule.get("comment")
        if not isinstance(handle, int) or not isinstance(chain, str):
            return
        if isinstance(comment, str) and tag_digest(comment.removesuffix(REPLY_SUFFIX)):
            self.k3snets = True
        if chain not in (NAT_CHAIN, FORWARD_CHAIN, MARKER_CHAIN):
            return  # a rule of a chain that is drift itself: the rebuild removes both
        found = None
        if (chain != MARKER_CHAIN and isinstance(comment, str)
                and tag_digest(comment.removesuffix(REPLY_SUFFIX)) is not None
                and isinstance(rule.get("expr"), list)):
            with contextlib.suppress(ModelError, ValueError, TypeError):
                found = own_object(parse_rule(rule["expr"]), chain)
        self.take(chain, handle, comment, found)

    def read_listed(self, listed: ListedTable) -> None:
        """The table as :func:`~.text.listed_rules` read it: k3snet's chains only, both
        base chains with k3snet's hook lines, every rule one k3snet writes."""
        table = self.cache.tables[self.family] = Table()
        for name in listed.chains:
            table.chains[name] = dict(CHAIN_HOOKS.get(name, {}))
        table.marker = MARKER_CHAIN in table.chains
        self.k3snets = table.marker or bool(listed.rules)
        for rule in listed.rules:
            self.take(rule.chain, rule.handle, rule.comment, (rule.obj, rule.reply), rule.tag)
        self.pair_halves()

    def take(self, chain: str, handle: int, comment: Any,
             found: tuple[NetObject, bool] | None, tag: str | None = None) -> None:
        """Rule ``handle`` of ``chain``, read as ``found`` (``None``: not k3snet's);
        ``tag``, when known, is the object's own."""
        if found is None or table_of(found[0], self.families) != self.family:
            self.extra_rules(chain, [handle], "not a rule k3snet writes")
            return
        obj, reply = found
        assert isinstance(comment, str)
        if isinstance(obj, ForwardRule):
            if comment.endswith(REPLY_SUFFIX) != reply:
                self.extra_rules(chain, [handle], "a forward rule half out of place")
            else:
                key = (comment.removesuffix(REPLY_SUFFIX), reply)
                self.halves.setdefault(key, []).append((obj, handle))
        else:
            self.adopt(obj, [handle], comment, tag)

    def pair_halves(self) -> None:
        """A forward rule counts only with its reply half (same object, paired tags)."""
        for (comment, reply), found in self.halves.items():
            if reply:
                continue
            replies = self.halves.get((comment, True), [])
            for obj, handle in found:
                partner = next((r for r in replies if r[0] == obj), None)
                if partner is None:
                    self.extra_rules(FORWARD_CHAIN, [handle],
                                     "a forward rule without its reply rule")
                else:
                    replies.remove(partner)
                    self.adopt(obj, [handle, partner[1]], comment)
        for (_, reply), found in self.halves.items():
            if reply:  # what pairing left over
                for _, handle in found:
                    self.extra_rules(FORWARD_CHAIN, [handle],
                                     "a reply rule without its forward rule")

    def adopt(self, obj: NetObject, handles: list[int], comment: str,
              tag: str | None = None) -> None:
        """Record an object rebuilt from the kernel: a duplicate, or a forged tag, is drift.
        ``tag``: the object's own, when the caller rendered it already."""
        chain = FORWARD_CHAIN if obj.kind == "forward" else NAT_CHAIN
        if obj.key in self.cache.objects:
            self.extra_rules(chain, handles, f"a duplicate of {obj.describe()}")
            return
        if tag is None:
            tag = nft_rules(obj)[0].comment
        if comment != tag:
            # Reported as what the rule does now (so a plan replaces it if it is not
            # wanted), and as drift: the repair writes it again with its own tag.
            self.drift(chain, f"{_handles(handles)}: tag {comment} is not its content's ({tag})",
                       Repair(self.family, retag=obj.key))
        self.cache.put(obj.key, obj)
        self.cache.handles[obj.key] = [*handles]
        if obj.kind != "forward":
            self.nat_order(obj, handles)

    def nat_order(self, obj: NetObject, handles: list[int]) -> None:
        """A NAT rule an earlier one of the same prefixes shadows: NAT takes the first
        match, so a rule whose interface match holds ``obj``'s (``eth+`` before ``eth0``,
        as k3snet before 75c9e31 wrote it) is drift; its repair re-adds it after (the
        apply appends it, moving what must follow it). Rules of other prefixes were in
        :func:`chain_order_key` order already in those versions."""
        key = obj.key
        oif = key[6]
        if self.wide:
            rank = out_interface_rank(oif)
            for earlier, held in self.wide.get(key[1:6], ()):
                other = earlier.key[6]
                if out_interface_rank(other) > rank and interfaces_may_meet(other or None,
                                                                            oif or None):
                    self.drift(NAT_CHAIN, f"{_handles(held)}: {earlier.describe()} comes "
                               f"before {obj.describe()}, which then translates nothing it "
                               "also matches (apply re-adds it after)",
                               Repair(self.family, retag=earlier.key))
        if not oif or oif.endswith("+"):
            self.wide.setdefault(key[1:6], []).append((obj, handles))


def _spared(match: Match, exits: Iterable[Match], family: int, source: Network, *,
            destination: Network | None, oif: str | None) -> list[Network] | None:
    """The destinations earlier exits take from NAT rule ``match``; None: cannot tell.
    ``exits``: those met before it, in order (or those of them :meth:`_Exits.meeting`
    gives: the others are disjoint from it, and skipped here too)."""
    spared = []
    for cond in exits:
        if cond.mark_set_only and cond.marks == cond.conditions:
            continue  # kube-proxy's "masquerade me" mark: those packets are NATed anyway
        if _same_translation(cond, match):
            continue  # translated the same way, whichever rule comes first
        if _disjoint(cond, family, source, destination, oif):
            continue
        positive = [n for n, neg in cond.daddr if not neg]
        if cond.unknown or len(positive) != 1 or len(cond.daddr) != 1:
            return None
        spared.append(positive[0])  # may spare more than it does: errs on "not met"
    return spared


def _spared_by(obj: NetObject, block: NatBlock) -> NetObject | None:
    """``obj`` (a foreign masquerade or SNAT) without the destinations ``block`` translates
    otherwise first; None when the block names no destination (or leaves nothing)."""
    if block.destination is None or not isinstance(obj, MasqueradeRule | SnatRule):
        return None
    try:
        return attrs.evolve(obj, exclude=[*obj.exclude, block.destination])
    except ModelError:
        return None  # nothing of it left


def _translates_opaquely(match: Match) -> bool:
    """An iptables-nft compat target k3snet cannot see into (``xt target SNAT`` whose
    address the kernel's data did not give as one, ``xt target NETMAP``, any other): in
    a nat chain on the postrouting hook it may translate the connection, an SNAT to an
    address k3snet does not model (as the iptables backend reads a target it does not know
    there: a doubt counts against k3snet)."""
    return match.verdict is not None and match.verdict.startswith("xt ")


def _unmarked_only(match: Match) -> bool:
    """A rule that tests only for marks not set (kube-proxy's ``meta mark & 0x4000 == 0
    return``): it matches every packet of k3snet's pod traffic, which carries no mark."""
    return bool(match.marks) and match.marks == match.conditions and match.mark_unset_only


def _same_translation(a: Match, b: Match) -> bool:
    """Two NAT rules that translate a packet the same way (a masquerade each, or an snat
    each to the same address k3snet can read)."""
    if a.verdict != b.verdict or a.nat_extra or b.nat_extra:
        return False
    return a.verdict == "masquerade" or (a.verdict == "snat" and a.nat_addr is not None
                                         and a.nat_addr == b.nat_addr)


def _rule_words(match: Match) -> tuple[list[str], list[Network], list[Network], list[str]]:
    """What a foreign rule matches, as words of nft's language (for a block's text), and
    its positive source and destination prefixes and out-interface names."""
    proto = match.proto or "inet"
    saddr = [net for net, neg in match.saddr if not neg]
    daddr = [net for net, neg in match.daddr if not neg]
    oif = [name for name, neg in match.oif if not neg]
    words = []
    for what, tests in ((f"{proto} saddr", match.saddr), (f"{proto} daddr", match.daddr),
                        ("iifname", match.iif), ("oifname", match.oif)):
        words += [f"{what} {'!= ' if neg else ''}{value}" for value, neg in tests]
    others = match.conditions - len(words)
    if others:
        of = f", of {match.l4}" if match.l4 and match.notrack else ""  # a notrack's protocol
        words.append(f"(and {others} more match{'es' if others > 1 else ''}{of})")
    return words, saddr, daddr, oif


def _tested(match: Match) -> str:
    """What a rule that may stop any address tests, in words: its tests of interfaces and
    negated addresses, and those k3snet does not model, named (``tcp dport``, ``ip daddr
    @blocked``: a named set k3snet did not read), unless one of those is a test no pod
    connection passes (``ct state invalid``); empty when it tests none of those."""
    words = [word for word in _rule_words(match)[0] if not word.startswith("(and ")]
    if match.marked:
        # A mark is set by another rule (kube-proxy's 0x8000 "drop me", kube-router's
        # 0x10000 "a policy allows it"); k3snet's pod traffic carries none.
        words += match.marked
        words.append("(only packets another rule marked so: the pods' traffic to the "
                     "destination carries no mark unless a rule of the node sets one)"
                     if match.mark_set_only else
                     "(every packet without that mark: the pods' traffic to the "
                     "destination carries none, so it meets them)"
                     if match.mark_unset_only else
                     "(a mark test k3snet does not judge: it may meet the pods' traffic)")
    if match.unread and not match.never_pods:  # (one meeting no pod connection: unnamed)
        unread = list(dict.fromkeys(match.unread))
        words.append(f"{', '.join(unread)} (test{'s' if len(unread) > 1 else ''} k3snet "
                     "does not model)")
    return " ".join(words)


def _place(where: tuple[str, str], chain: str) -> str:
    """A block's ``where`` in a chain of another table: ``nftables FAMILY TABLE CHAIN``."""
    return f"nftables {where[0]} {where[1]} {chain}"


def _untrack_blocks(match: Match, where: tuple[str, str], chain: str) -> list[NatBlock]:
    """The exempt :class:`NatBlock` (one per address family it may see) a ``notrack`` in a
    chain run before conntrack makes: its packets are never NATed (the nat hooks see
    tracked connections only), so a masquerade or SNAT rule they may match is not met.
    One testing a mark is none (as the iptables backend reads raw's rules)."""
    if match.marks:
        return []
    words, saddr, daddr, _ = _rule_words(match)
    text = " ".join([*words, match.notrack or "notrack"])
    place = _place(where, chain)
    families = [4 if match.proto == "ip" else 6] if match.proto else [4, 6]
    blocks = []
    for family in families:
        fields: dict[str, Any] = {"source": saddr[0] if len(saddr) == 1 else None,
                                  "destination": daddr[0] if len(daddr) == 1 else None}
        for attempt in (fields, {}):
            try:  # another family's address: read as any
                blocks.append(NatBlock(family, "exempt", text, place, **attempt))
                break
            except ModelError:
                continue
    return blocks


def _untrack_forward_blocks(match: Match, where: tuple[str, str], chain: str,
                            under: tuple[tuple[str, str], str, str, list[ForwardRule]]
                            ) -> list[ForwardBlock]:
    """The ``untrack`` :class:`ForwardBlock` (one per address family both chains may see)
    a ``notrack`` before conntrack (``match`` in ``chain``) makes under ``under``: the default of
    a filter base chain on the forward path after conntrack (on the forward hook, or on
    prerouting or postrouting, which forwarded packets pass too: its table, its name, its
    policy drop or drop of every packet,
    the accepts before it): an untracked packet's reply is a new
    connection's, an untracked reply none's, and that chain's accept of established
    connections takes neither, as iptables' FORWARD policy (the iptables backend's
    untrack block). One testing a mark is none, as for NAT."""
    if match.marks:
        return []
    base, name, default, accepted = under
    words, saddr, daddr, _ = _rule_words(match)
    iif = [name for name, neg in match.iif if not neg]
    text = (f"{' '.join([*words, match.notrack or 'notrack'])} (then nftables {base[0]} "
            f"{base[1]} {name}: {default})")
    place = _place(where, chain)
    families = [4 if match.proto == "ip" else 6] if match.proto else [4, 6]
    if base[0] != "inet":
        families = [f for f in families if f == (4 if base[0] == "ip" else 6)]
    blocks = []
    for family in families:
        fields: dict[str, Any] = {"source": saddr[0] if len(saddr) == 1 else None,
                                  "destination": daddr[0] if len(daddr) == 1 else None,
                                  "in_interface": iif[0] if len(iif) == 1 else None}
        took = [rule for rule in accepted if rule.family == family]
        for attempt in (fields, {}):
            try:  # another family's address, an odd interface: read as any
                blocks.append(ForwardBlock(family, "untrack", text, place, **attempt,
                                           accepted=took))
                break
            except ModelError:
                continue
    return blocks


def _nat_blocks_of(match: Match, where: tuple[str, str], chain: str) -> list[NatBlock]:
    """The :class:`NatBlock` (one per address family it may see) a foreign NAT rule makes."""
    words, saddr, daddr, oif = _rule_words(match)
    to_address = match.nat_addr if match.verdict == "snat" and not match.nat_extra else None
    if match.verdict == "masquerade":
        action, words = "masquerade", [*words, "masquerade"]
    else:
        action = "snat"
        opaque = match.verdict or ""
        if to_address:
            words.append(f"snat to {match.nat_addr}")
        elif opaque.startswith("xt ") and opaque != "xt SNAT":  # -j NETMAP, another
            words.append(f"xt target {opaque[3:]} (a target k3snet cannot see into: it may "
                         "translate, to an address k3snet does not model)")
        else:
            words.append("snat (to an address or range k3snet does not model)")
    text = " ".join(words)
    place = _place(where, chain)
    families = [4 if match.proto == "ip" else 6] if match.proto else [4, 6]
    blocks = []
    for family in families:
        fields: dict[str, Any] = {
            "source": saddr[0] if len(saddr) == 1 else None,
            "destination": daddr[0] if len(daddr) == 1 else None,
            "out_interface": oif[0] if len(oif) == 1 else None,
            "to_address": to_address,
        }
        for attempt in (fields, {**fields, "out_interface": None}, {}):
            try:
                # A value k3snet cannot hold (an "eth*" wildcard, another family's
                # address): read as "any", or as an SNAT to an address it does not model.
                blocks.append(NatBlock(family, action, text, place, **attempt))
                break
            except ModelError:
                continue
    return blocks


@dataclass
class _Taken:
    """What the accepts a walk met take: their traffic, one way, as far as k3snet models
    their tests (an accept with any other test is left out: a doubt counts against
    k3snet), and whether every reply (``ct state established,related accept``)."""

    accepted: list[ForwardRule] = field(default_factory=list)
    replies: bool = False
    ended: bool = False  # a rule accepting or dropping every packet was met
    # The device of an ingress chain's walk: every packet of the walk came by it (an
    # accept's test of it takes no packet away from the walk's blocks, which test it
    # too), and conntrack has not run yet (a `ct state` test there sees no connection,
    # and its `established,related accept` takes no reply).
    ingress: str | None = None

    def add(self, match: Match) -> None:
        """Take accept ``match`` (as the walk reached it) into account."""
        if match.ct_reply:
            if self.ingress is None:
                self.replies = self.replies or match.conditions == 1
            return
        if self.ingress is not None:
            match = dataclasses.replace(
                match, iif=[test for test in match.iif if test != (self.ingress, False)])
        if match.unknown or match.marks:
            return
        tests = (match.saddr, match.daddr, match.iif, match.oif)
        if any(len(t) > 1 or any(neg for _, neg in t) for t in tests):
            return
        protos = [match.proto] if match.proto else ["ip", "ip6"]
        for proto in protos:
            any_net = _any_network(proto)
            try:
                self.accepted.append(ForwardRule(
                    match.saddr[0][0] if match.saddr else any_net,
                    match.daddr[0][0] if match.daddr else any_net,
                    in_interface=match.iif[0][0] if match.iif else None,
                    out_interface=match.oif[0][0] if match.oif else None))
            except ModelError:
                continue  # a wildcard interface (`eth*`): not modelled, left out

    def before(self, family: int, source: Network | None,
               destination: Network | None) -> list[ForwardRule]:
        """The accepted traffic of ``family`` that may meet a rule's (either way), at most
        :data:`_MAX_ACCEPTED_BEFORE` (leaving one out only counts against k3snet)."""
        def meets(a: Network, b: Network) -> bool:
            return ((source is None or overlaps(source, a))
                    and (destination is None or overlaps(destination, b)))

        found = [r for r in self.accepted if r.family == family and (
            meets(r.source, r.destination) or meets(r.destination, r.source))]
        return found[:_MAX_ACCEPTED_BEFORE]


def _blocks_of(match: Match, where: tuple[str, str], chain: str, taken: _Taken | None,
               routed: RoutedBy | None) -> list[ForwardBlock]:
    """The blocks of :func:`_block_of`: in an ``inet`` table, a drop naming no address
    family (``oifname "eth0" drop``) is judged in each, as one in an ``ip`` and one in
    an ``ip6`` table are (by the node's routes of that family)."""
    if match.proto is None and where[0] in ("inet", "netdev"):
        if match.verdict not in _ENDING:
            return []  # no block in either family: not copied to be judged in each
        return [block for proto in ("ip", "ip6")
                for block in _block_of(dataclasses.replace(match, proto=proto), where, chain,
                                       taken, routed)]
    return _block_of(match, where, chain, taken, routed)


def _policy_blocks(device: str, policy: str, where: tuple[str, str], chain: str, *,
                   taken: _Taken, routed: RoutedBy | None) -> list[ForwardBlock]:
    """The blocks of an ingress chain's policy drop on ``device``: a drop of every packet
    arriving by it that the chain's rules did not take (``taken``), in each family."""
    found = _blocks_of(Match(iif=[(device, False)], verdict="drop"), where, chain, taken, routed)
    return [attrs.evolve(block, rule=f"{block.rule.removesuffix(' drop')} policy {policy}")
            for block in found]


def _block_of(match: Match, where: tuple[str, str], chain: str,
              taken: _Taken | None = None,
              routed: RoutedBy | None = None) -> list[ForwardBlock]:
    """The :class:`ForwardBlock` a foreign drop/reject naming addresses makes (else none);
    ``match`` as the walk reached it (with the tests of the jumps on the way), ``taken``
    what the accepts before it on its way take.

    With ``routed`` (the node's routes), a drop naming an interface and no address
    (``iptables -A DOCKER-USER -o eth0 -j DROP``, read through nft) is one too: it meets
    only what the node routes by that interface, as the iptables backend reads it
    (:meth:`~k3snet.backends.routed.RoutedBy.cover`; Docker's ``oifname "docker0"``
    drop: docker0's subnet, not the pods' connections; the uplink's default route: any
    destination). A negated name is judged by the routes of the devices it lets through
    (``iifname "cni0" oifname != "eth0" drop``: what the node routes by cni0 and the
    others, not the pods' connections out by the uplink), one block for each prefix of
    those routes (cni0's and docker0's are two). ``match`` names its family
    (:func:`_blocks_of` gives an ``inet`` table's drop one in each)."""
    if match.verdict not in _ENDING or match.proto is None:
        return []
    if any(any(neg for _, neg in tests) and not _may_pass(tests)
           for tests in (match.iif, match.oif)):
        return []  # `oifname "eth0" oifname != "eth*"`: no packet passes both
    words, saddr, daddr, oif = _rule_words(match)
    # A name tested twice (the jump's `oifname "docker0"`, then the rule's) is that name.
    oif = list(dict.fromkeys(oif))
    iif = list(dict.fromkeys(name for name, neg in match.iif if not neg))
    family = 4 if match.proto == "ip" else 6
    # One prefix each is what a block holds; several (a set) count as any.
    sources: Sequence[Any] = (saddr[0] if len(saddr) == 1 else None,)
    destinations: Sequence[Any] = (daddr[0] if len(daddr) == 1 else None,)
    if not saddr and not daddr:
        # The names of `oifname != "eth0"`: what leaves by another device.
        not_oif = [model_ifname(name) for name, neg in match.oif if neg]
        not_iif = [model_ifname(name) for name, neg in match.iif if neg]
        by_oif = len(oif) == 1 or (not oif and bool(not_oif))
        by_iif = len(iif) == 1 or (not iif and bool(not_iif))
        if routed is None or not (by_oif or by_iif):
            return []
        # A packet leaves by the device its destination is routed by, and comes in by the
        # one its source is (the reverse path): the drop meets only what the node routes
        # by that device, or by the devices a negated name lets through (None: any
        # address).
        if by_oif:
            destinations = routed.cover(
                family, model_ifname(oif[0]) if oif else None, not_oif) or (None,)
        if by_iif:  # at most MOST_PREFIXES pairs of source and destination
            sources = routed.cover(
                family, model_ifname(iif[0]) if iif else None, not_iif,
                most=MOST_PREFIXES // len(destinations)) or (None,)
    words.append(match.expires or match.fwd or match.verdict)
    text = " ".join(words)
    place = _place(where, chain)
    found = []
    for source in sources:
        for destination in destinations:
            fields: dict[str, Any] = {"source": source, "destination": destination}
            if taken is not None:
                fields["accepted"] = taken.before(family, source, destination)
                fields["replies_accepted"] = taken.replies
            try:
                found.append(ForwardBlock(family, match.verdict, text, place, **fields,
                                          in_interface=iif[0] if len(iif) == 1 else None,
                                          out_interface=oif[0] if len(oif) == 1 else None))
            except ModelError:
                found.append(ForwardBlock(family, match.verdict, text, place, **fields))
    return found
