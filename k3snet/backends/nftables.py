"""The ``nftables`` backend: NAT and forward rules in a table k3snet owns, via libnftables.

What it writes
    One table of its own, ``inet k3snet`` (``ip k3snet`` + ``ip6 k3snet`` with
    ``family="split"``), holding two base chains, ``postrouting`` (type nat, hook
    postrouting, priority srcnat) and ``forward`` (type filter, hook forward,
    priority filter), both with policy accept, and an empty regular chain
    ``handle_marker`` (see *Handles*). Nothing is ever written to another table.
    When k3snet owns no rule any more, its table is deleted.

    ``inet`` is the default: NAT works in ``inet`` tables for both families since
    Linux 5.2 (nftables 0.9.1), so one table, one listing and one transaction
    target cover IPv4 and IPv6, and one ``delete table`` removes everything.
    ``split`` is for older kernels, and for hosts whose tooling expects per-family
    tables; it writes the same rules (``snat to`` instead of ``snat ip to``).

How rules look
    :mod:`k3snet.render.nftables` renders every object (``masquerade`` / ``snat`` in
    ``postrouting``; an accept and a ``ct state established,related`` accept for
    the replies in ``forward``), each rule tagged with a comment
    ``k3snet:<content hash>``. :meth:`NftablesBackend.observe` rebuilds the
    objects from the kernel's JSON, so what it reports is what the kernel does: a
    tag that does not match its rule's content means the rule was edited by hand;
    it is reported as what it now does (so a plan replaces it) and listed in
    :attr:`NftablesBackend.drift`. The next apply, even one of an empty plan,
    repairs the rest, since the table is k3snet's: it deletes rules that map back
    to no object (statements k3snet never writes, a forward rule without its reply
    half, duplicates), resets a base chain policy changed to drop, and rebuilds
    the table (delete, re-create, in the same transaction) when it holds a chain
    k3snet does not use or a base chain with another hook or priority.

    NAT statements are terminal, so among overlapping NAT rules the first match
    wins. Rules are kept in :func:`~k3snet.render.nftables.chain_order_key` order
    (more specific first). When a new rule must precede an existing overlapping
    one, the existing one is deleted and re-added after it in the same
    transaction: positioned inserts would make libnftables read every rule of
    every table first.

Forward rules and other firewalls
    An ``accept`` in k3snet's ``forward`` chain only ends *this* chain: every other
    base chain on the forward hook still sees the packet, and a drop there wins
    (firewalld#527). So a FORWARD policy DROP set through iptables (nft or legacy)
    is **not** opened by this backend; the ``iptables`` backend does that, from
    inside iptables' FORWARD chain. Forward rules here are for hosts whose drop
    comes from an nftables-only setup that defers to k3snet's table, and they
    record the intent (observe, plan and drift work the same).

Transactions
    Each :meth:`~NftablesBackend.apply` sends one libnftables batch, which the
    kernel commits as one transaction: if any command is refused, the kernel keeps
    the ruleset as it was and :class:`~k3snet.errors.ApplyError` is raised with
    ``done=()`` and ``rolled_back=()``. Batches are written in nft's own language
    (``syntax="nft"``, the default) or in libnftables JSON (``syntax="json"``),
    through the same in-process libnftables call; everything k3snet *reads* is
    libnftables JSON. The default is nft text because libnftables parses it about
    1.7x faster than JSON (a 10k-rule batch: 0.28 s against 0.49 s here: with JSON
    a full apply cannot come within 1.5x of ``nft -f``), and its errors quote the
    refused command, which maps the failure to its change. The text is built only
    from validated values (addresses, prefixes, interface names limited to
    ``[A-Za-z0-9_.@+-]``, hex tags), never from free text.
    ``faults.fail_at(N)`` (tests, :class:`~k3snet.backends.kit.FaultHook`) puts a
    command the kernel refuses after the first ``N`` changes' commands (the
    deletion of a rule handle that cannot exist: libnftables lets it through,
    the kernel aborts the whole transaction).

Handles and caching
    Deleting a rule needs its kernel handle. ``observe`` learns the handles of the
    rules it lists. For the rules an apply adds, libnftables' ``--echo`` would
    report them, but it makes libnftables list the *whole* ruleset first
    (kube-proxy's rules included). Instead each transaction that adds rules ends
    by re-creating the empty ``handle_marker`` chain: the kernel numbers a table's
    objects from one counter, in batch order, under the commit mutex, so the
    marker's new handle (one tiny listing) gives the handle of every rule added
    before it.

    What the backend observed and applied is cached, stamped with the ruleset
    generation id (``NFT_MSG_GETGEN``: every committed nftables transaction in
    the namespace bumps it, iptables-nft's included). ``observe`` and ``apply``
    first read the generation id (one small netlink round trip, ~0.1 ms) and read
    k3snet's table again only if anyone committed since; ``observe(refresh=True)``
    reads it anyway. A cold read costs about 80 us per rule (libnftables' listing
    and JSON decoding are half of it); a warm one does not depend on the size.

Foreign state (``observe_foreign=True``)
    Best effort and read-only. One ``list chains`` (names and hooks, no rules),
    then a listing of each base chain hooked at ``postrouting`` (type nat) or
    ``forward`` (type filter) of other tables and of the chains they jump to
    unconditionally, at most 64 chains: on a K3s node with flannel on
    iptables-nft, a handful of small chains; kube-proxy's service chains are never
    read. Simple ``masquerade`` / ``snat`` rules become foreign
    :class:`~k3snet.model.MasqueradeRule` / :class:`~k3snet.model.SnatRule`
    objects, earlier ``return`` rules with a destination become exclusions
    (flannel's ``FLANNEL-POSTRTG`` reads as "masquerade 10.42.0.0/16 except
    10.42.0.0/16, 224.0.0.0/4"), and a rule behind anything not understood is
    left out rather than guessed (leaving out only costs a redundant rule of
    k3snet's; a wrong guess would skip a needed one). A return that only tests a
    set mark (kube-proxy's "masquerade me" mark 0x4000) is ignored: those packets
    are masqueraded by kube-proxy. iptables-nft writes ``-j MASQUERADE`` as a
    compat target whose options libnftables' JSON hides, so its
    ``--random-fully`` reads as ``random_fully=False``; its ``-j SNAT`` is not
    modelled. Forward accepts whose replies are accepted too become foreign
    :class:`~k3snet.model.ForwardRule` objects. ``observe_foreign=False`` reads
    nothing outside k3snet's table.

The backend is not thread-safe: each instance holds one worker thread inside its
network namespace and one libnftables context; use one instance per thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import ipaddress
import json
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from k3snet.backends.base import ApplyResult, ensure_capable
from k3snet.backends.kit import FaultHook
from k3snet.backends.netns import NetnsRunner
from k3snet.errors import ApplyError, BackendError, BackendUnavailableError, ModelError, PlanError
from k3snet.model import NetObject, validate_interface_name
from k3snet.model.cidr import Network, contains, overlaps
from k3snet.model.forward import ForwardRule
from k3snet.model.nat import MasqueradeRule, SnatRule
from k3snet.model.state import State
from k3snet.planner import Plan
from k3snet.render.nftables import (
    FORWARD_CHAIN,
    NAT_CHAIN,
    REPLY_SUFFIX,
    TAG_PREFIX,
    TableFamily,
    chain_order_key,
    nft_rules,
    nft_rules_json,
    table_families,
    validate_table_name,
)

__all__ = ["MARKER_CHAIN", "NftablesBackend", "Syntax"]

MARKER_CHAIN = "handle_marker"
"""The empty chain re-created at the end of every transaction that adds rules."""

Syntax = Literal["json", "nft"]
"""How batches are written: libnftables JSON, or nft's own language."""

T = TypeVar("T")
Key = tuple[Any, ...]

_CHAIN_HOOKS: dict[str, dict[str, Any]] = {
    NAT_CHAIN: {"type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"},
    FORWARD_CHAIN: {"type": "filter", "hook": "forward", "prio": 0, "policy": "accept"},
}
_CHAIN_TEXT: dict[str, str] = {
    NAT_CHAIN: "{ type nat hook postrouting priority srcnat; policy accept; }",
    FORWARD_CHAIN: "{ type filter hook forward priority filter; policy accept; }",
}
# The kernel numbers a table's objects from 1; no table ever gets this far.
_IMPOSSIBLE_HANDLE = 1 << 62
# iptables targets that let the packet go on to the next rule (kube-proxy's MARK ...).
_XT_CONTINUE = frozenset({"MARK", "CONNMARK", "LOG", "NFLOG", "TRACE", "CHECKSUM", "CLASSIFY",
                          "DSCP", "TOS", "TCPMSS"})
_MAX_FOREIGN_CHAINS = 64  # bounds the foreign walk; a node's egress path has a handful
_MAX_JUMP_DEPTH = 8
_REREAD_ATTEMPTS = 3

# Netfilter netlink: NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETGEN, and its answer.
_NETLINK_NETFILTER = 12
_NFT_MSG_GETGEN = (10 << 8) | 16
_NFTA_GEN_ID = 1
_NLMSG_ERROR = 2
_NLM_F_REQUEST = 1


# --------------------------------------------------------------------------- kernel I/O


class _Kernel:
    """A libnftables context and a netfilter netlink socket, used from one thread.

    Made inside the namespace's worker thread, so libnftables' netlink socket and
    ours both belong to that namespace. ``calls`` counts round trips.
    """

    def __init__(self) -> None:
        import nftables  # noqa: PLC0415 - optional dependency, checked by the backend

        try:
            self.nft = nftables.Nftables()
            lib = ctypes.CDLL("libnftables.so.1")
        except OSError as exc:
            raise BackendUnavailableError(
                f"libnftables cannot be loaded ({exc}); install libnftables1"
            ) from exc
        self.nft.set_json_output(True)
        self._set_dry_run = lib.nft_ctx_set_dry_run
        self._set_dry_run.argtypes = [ctypes.c_void_p, ctypes.c_bool]
        self._set_dry_run.restype = None
        # pip-nftables keeps its context private; a dry run (nft -c) needs it.
        self._ctx = self.nft._Nftables__ctx
        try:
            self._sock = socket.socket(
                socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_NETFILTER
            )
            self._sock.bind((0, 0))
        except OSError as exc:
            raise BackendError(f"cannot open a netfilter netlink socket: {exc}") from exc
        self._seq = 0
        self.calls = 0

    def genid(self) -> int:
        """The ruleset generation id: every committed nftables transaction bumps it."""
        self.calls += 1
        self._seq += 1
        body = struct.pack("=BBH", socket.AF_UNSPEC, 0, 0)
        header = struct.pack(
            "=IHHII", 16 + len(body), _NFT_MSG_GETGEN, _NLM_F_REQUEST, self._seq, 0
        )
        try:
            self._sock.send(header + body)
            while True:
                data = self._sock.recv(65536)
                length, kind, _flags, seq = struct.unpack_from("=IHHI", data)
                if seq == self._seq:
                    break  # skip any answer to an earlier, interrupted request
        except OSError as exc:
            raise BackendError(f"cannot read the nftables generation id: {exc}") from exc
        if kind == _NLMSG_ERROR:
            (errno,) = struct.unpack_from("=i", data, 16)
            raise BackendError(f"cannot read the nftables generation id: errno {-errno}")
        offset = 20  # nlmsghdr, then nfgenmsg
        while offset + 8 <= length:
            attr_len, attr_type = struct.unpack_from("=HH", data, offset)
            if attr_type & 0x3FFF == _NFTA_GEN_ID:
                return int(struct.unpack_from(">I", data, offset + 4)[0])
            offset += max(4, (attr_len + 3) & ~3)
        raise BackendError("the kernel's nftables generation answer has no id")

    def run(self, batch: str, *, json_input: bool, dry_run: bool = False) -> tuple[int, str]:
        """Run one libnftables buffer (one transaction); return (rc, error text)."""
        self.calls += 1
        # With JSON output on, libnftables tries its JSON parser first; off for nft text.
        self.nft.set_json_output(json_input)
        self._set_dry_run(self._ctx, dry_run)
        try:
            rc, _output, error = self.nft.cmd(batch)
        finally:
            self._set_dry_run(self._ctx, False)
            self.nft.set_json_output(True)
        return int(rc), str(error)

    def list(self, kind: str, **ref: str) -> list[dict[str, Any]] | None:
        """The objects ``list KIND REF...`` prints; ``None`` if the object does not exist.

        Sent as a JSON command, so any table or chain name, even one nft's own
        language would take for a keyword, is passed as data.
        """
        self.calls += 1
        what = " ".join(["list", kind, *ref.values()])
        command = {"nftables": [{"list": {kind: ref or None}}]}
        rc, output, error = self.nft.cmd(json.dumps(command))
        if rc != 0:
            if "No such file or directory" in error:
                return None
            raise BackendError(f"nft {what!r} failed: {_first_lines(error)}")
        try:
            items = json.loads(output)["nftables"]
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendError(f"nft {what!r} printed unreadable JSON: {exc}") from exc
        return [item for item in items if isinstance(item, dict)]

    def close(self) -> None:
        self._sock.close()


def _first_lines(text: str, count: int = 4) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[:count]) or "no detail"


# --------------------------------------------------------------------------- reading rules


@dataclass(slots=True)
class _Match:
    """What one kernel rule tests and does, as far as k3snet understands it."""

    proto: str | None = None  # "ip" / "ip6": from address matches or meta nfproto
    saddr: list[tuple[Network, bool]] = field(default_factory=list)  # (prefix, negated)
    daddr: list[tuple[Network, bool]] = field(default_factory=list)
    iif: list[tuple[str, bool]] = field(default_factory=list)
    oif: list[tuple[str, bool]] = field(default_factory=list)
    nfproto: int = 0  # explicit "meta nfproto" tests
    ct_reply: bool = False  # ct state established,related
    marks: int = 0  # mark tests
    mark_set_only: bool = False  # ... and each of them asks for set bits
    unknown: int = 0  # tests k3snet cannot model
    extras: int = 0  # harmless statements k3snet never writes (counter, xt comment ...)
    verdict: str | None = None
    target: str | None = None  # of a jump / goto
    nat_addr: str | None = None
    nat_flags: tuple[str, ...] = ()
    nat_extra: bool = False  # ports, ranges, maps, other flags: not modelled

    @property
    def conditions(self) -> int:
        """How many tests the rule makes (0: it applies to every packet)."""
        return (len(self.saddr) + len(self.daddr) + len(self.iif) + len(self.oif)
                + self.nfproto + self.ct_reply + self.marks + self.unknown)


@functools.lru_cache(maxsize=4096)
def _prefix(address: str, length: int | None) -> Network:
    """A prefix from the kernel's text (cached: destinations repeat across rules)."""
    if ":" in address:
        value = int.from_bytes(socket.inet_pton(socket.AF_INET6, address), "big")
        return ipaddress.IPv6Network((value, 128 if length is None else length))
    value = int.from_bytes(socket.inet_pton(socket.AF_INET, address), "big")
    return ipaddress.IPv4Network((value, 32 if length is None else length))


def _network(value: Any) -> Network:
    try:
        if isinstance(value, str):
            return _prefix(value, None)
        if isinstance(value, dict) and "prefix" in value:
            return _prefix(str(value["prefix"]["addr"]), int(value["prefix"]["len"]))
    except OSError as exc:  # inet_pton: not an address
        raise ValueError(f"not a prefix: {value!r}") from exc
    raise ValueError(f"not a prefix: {value!r}")


def _networks(value: Any) -> list[Network]:
    if isinstance(value, dict) and "set" in value:
        return [_network(v) for v in value["set"]]
    return [_network(value)]


def _mark_value(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value, 0)
    return None


def _parse_mark(op: str, right: Any, out: _Match) -> None:
    value = _mark_value(right)
    positive = op == "==" and value is not None and value != 0
    out.mark_set_only = positive and (out.marks == 0 or out.mark_set_only)
    out.marks += 1


def _parse_address(left: dict[str, Any], right: Any, negated: bool, out: _Match) -> bool:
    proto, fld = left["payload"].get("protocol"), left["payload"].get("field")
    if proto not in ("ip", "ip6") or fld not in ("saddr", "daddr"):
        return False
    if out.proto not in (None, proto):
        return False
    nets = _networks(right)
    if len(nets) > 1 and not negated:
        return False  # "daddr { a, b }" is not one prefix ("!= { a, b }" is exclusions)
    out.proto = proto
    (out.saddr if fld == "saddr" else out.daddr).extend((n, negated) for n in nets)
    return True


def _parse_meta(left: dict[str, Any], op: str, right: Any, out: _Match) -> bool:
    key = left["meta"].get("key")
    if key in ("iifname", "oifname") and isinstance(right, str):
        (out.iif if key == "iifname" else out.oif).append((right, op == "!="))
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


def _is_mark_mask(left: dict[str, Any]) -> bool:
    """``meta mark & MASK``: what iptables-nft makes of ``-m mark --mark V/M``."""
    operands = left["&"]
    return (isinstance(operands, list) and len(operands) == 2
            and isinstance(operands[0], dict)
            and operands[0].get("meta", {}).get("key") == "mark")


def _parse_match(m: dict[str, Any], out: _Match) -> None:
    op = m.get("op", "==")
    left, right = m.get("left"), m.get("right")
    understood = False
    if op in ("==", "!=", "in") and isinstance(left, dict):
        if "payload" in left:
            understood = _parse_address(left, right, op == "!=", out)
        elif "meta" in left:
            understood = _parse_meta(left, op, right, out)
        elif "&" in left and _is_mark_mask(left):
            _parse_mark(op, right, out)
            understood = True
        elif "ct" in left and left["ct"].get("key") == "state" and op != "!=":
            states = {right} if isinstance(right, str) else set(right or ())
            out.ct_reply = understood = states == {"established", "related"}
    if not understood:
        out.unknown += 1


def _parse_statement(name: str, body: Any, out: _Match) -> None:
    if name == "match":
        _parse_match(body, out)
    elif name in ("accept", "drop", "return"):
        out.verdict = name
    elif name == "reject":
        out.verdict = "drop"
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
    elif name in ("counter", "log", "mangle"):
        out.extras += 1  # counting, logging, setting a mark: no verdict changes
    elif name == "xt":
        _parse_xt(body, out)
    else:
        out.unknown += 1


def _parse_xt(body: dict[str, Any], out: _Match) -> None:
    """iptables-nft's compat expressions (``-m comment``, ``-j MASQUERADE`` ...)."""
    kind, name = body.get("type"), body.get("name")
    if (kind == "match" and name == "comment") or (kind == "target" and name in _XT_CONTINUE):
        out.extras += 1
    elif kind == "target" and name == "MASQUERADE":
        # libnftables' JSON hides the target's options, so a --random-fully is not
        # seen (it does not change which packets are NATed).
        out.verdict = "masquerade"
        out.extras += 1
    elif kind == "target":
        out.verdict = f"xt {name}"  # an iptables target k3snet cannot see into
    else:
        out.unknown += 1


def _parse_rule(expr: Sequence[Any]) -> _Match:
    """Read a rule's JSON statements into a :class:`_Match`; never raises on odd input."""
    out = _Match()
    for statement in expr:
        if not isinstance(statement, dict) or len(statement) != 1:
            out.unknown += 1
            continue
        ((name, body),) = statement.items()
        try:
            _parse_statement(name, body, out)
        except (ValueError, KeyError, TypeError, AttributeError):
            out.unknown += 1
    return out


def _any_network(proto: str) -> Network:
    return ipaddress.ip_network("0.0.0.0/0" if proto == "ip" else "::/0")


def _own_object(match: _Match, chain: str) -> tuple[NetObject, bool] | None:
    """The object one of k3snet's rules stands for, and whether it is a reply half.

    Strict: only rules shaped as :mod:`k3snet.render.nftables` writes them map
    back; anything more or less (a counter, a mark test ...) makes it a stray rule.
    """
    if (match.unknown or match.extras or match.marks or match.nfproto or match.proto is None
            or len(match.saddr) != 1 or match.saddr[0][1]
            or len(match.iif) > 1 or len(match.oif) > 1
            or any(neg for _, neg in match.iif + match.oif)
            or sum(1 for _, neg in match.daddr if not neg) > 1):
        return None
    if chain == NAT_CHAIN:
        return _own_nat(match)
    if chain == FORWARD_CHAIN:
        return _own_forward(match)
    return None


def _own_nat(match: _Match) -> tuple[NetObject, bool] | None:
    if match.ct_reply or match.iif or match.nat_extra:
        return None
    dst = [n for n, neg in match.daddr if not neg]
    common: dict[str, Any] = {
        "destination": dst[0] if dst else None,
        "exclude": [n for n, neg in match.daddr if neg],
        "out_interface": match.oif[0][0] if match.oif else None,
        "random_fully": "fully-random" in match.nat_flags,
    }
    source = match.saddr[0][0]
    if match.verdict == "masquerade":
        return MasqueradeRule(source, **common), False
    if match.verdict == "snat" and match.nat_addr is not None:
        return SnatRule(source, to_address=match.nat_addr, **common), False
    return None


def _own_forward(match: _Match) -> tuple[NetObject, bool] | None:
    if match.verdict != "accept" or len(match.daddr) != 1 or match.daddr[0][1]:
        return None
    source, destination = match.saddr[0][0], match.daddr[0][0]
    iif = match.iif[0][0] if match.iif else None
    oif = match.oif[0][0] if match.oif else None
    if match.ct_reply:  # the reply half: swapped back to the rule it answers
        return ForwardRule(destination, source, in_interface=oif, out_interface=iif), True
    return ForwardRule(source, destination, in_interface=iif, out_interface=oif), False


# --------------------------------------------------------------------------- foreign rules


def _disjoint(cond: _Match, family: int, source: Network, destination: Network | None,
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
    return oif is not None and any((name == oif) == neg for name, neg in cond.oif)


@dataclass
class _ForeignReader:
    """Reads the egress-relevant chains of other tables: read-only, bounded, best effort."""

    kernel: _Kernel
    own_tables: frozenset[tuple[str, str]]
    listed: int = 0
    nat: list[NetObject] = field(default_factory=list)
    accepts: list[ForwardRule] = field(default_factory=list)
    replies_accepted: bool = False

    def read(self) -> frozenset[NetObject]:
        try:
            chains = self.kernel.list("chains") or []
        except BackendError:
            return frozenset()  # best effort: no foreign state rather than no observe
        for item in chains:
            chain = item.get("chain")
            if not isinstance(chain, dict):
                continue
            family, table, name = chain.get("family"), chain.get("table"), chain.get("name")
            where = (str(family), str(table))
            if family not in ("ip", "ip6", "inet") or where in self.own_tables:
                continue
            if chain.get("hook") == "postrouting" and chain.get("type") == "nat":
                self._walk(where, str(name), [], 0, self._nat_rule)
            elif chain.get("hook") == "forward" and chain.get("type") == "filter":
                self._walk(where, str(name), [], 0, self._forward_rule)
        found: set[NetObject] = set(self.nat)
        for rule in self.accepts:
            if self.replies_accepted or any(_answers(other, rule) for other in self.accepts):
                found.add(rule)
        return frozenset(found)

    def _rules(self, where: tuple[str, str], chain: str) -> list[_Match]:
        family, table = where
        if self.listed >= _MAX_FOREIGN_CHAINS:
            return [_Match(unknown=1, verdict="drop")]  # unseen: assume it may drop anything
        self.listed += 1
        try:
            items = self.kernel.list("chain", family=family, table=table, name=chain) or []
        except BackendError:
            return [_Match(unknown=1, verdict="drop")]
        rules = []
        for item in items:
            rule = item.get("rule")
            if isinstance(rule, dict) and isinstance(rule.get("expr"), list):
                match = _parse_rule(rule["expr"])
                if match.proto is None and family in ("ip", "ip6"):
                    match.proto = family
                rules.append(match)
        return rules

    def _walk(self, where: tuple[str, str], chain: str, exits: list[_Match], depth: int,
              visit: Callable[[_Match, list[_Match]], None]) -> tuple[list[_Match], bool]:
        """Walk ``chain`` after the exits seen so far.

        Returns the conditional exits that also end the calling chain, and whether
        every packet stops here. ``exits`` are the earlier rules that take some
        packets away (returns, accepts, drops, jumps k3snet does not follow).
        """
        local = list(exits)
        passed_up: list[_Match] = []
        for match in self._rules(where, chain):
            verdict = match.verdict
            if verdict in ("masquerade", "snat", "accept"):
                visit(match, local)
            if verdict in ("masquerade", "snat", None):
                continue  # NAT ends the chain only for what it translates
            if verdict == "return":
                if not match.conditions:
                    break
                local.append(match)
            elif verdict in ("jump", "goto") and not match.conditions and depth < _MAX_JUMP_DEPTH:
                assert match.target is not None
                sub, stop = self._walk(where, match.target, local, depth + 1, visit)
                local += sub
                passed_up += sub
                if stop:
                    return passed_up, True
                if verdict == "goto":
                    break
            elif not match.conditions and verdict in ("accept", "drop"):
                return [*passed_up, match], True
            else:  # a conditional accept or drop, a jump k3snet does not follow, a target
                local.append(match)
                passed_up.append(match)
        return passed_up, False

    def _nat_rule(self, match: _Match, exits: list[_Match]) -> None:
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
        excluded = [n for n, neg in match.daddr if neg]
        for cond in exits:
            if cond.mark_set_only and cond.marks == cond.conditions:
                continue  # kube-proxy's "masquerade me" mark: those packets are NATed anyway
            if _disjoint(cond, family, source, destination, oif):
                continue
            positive = [n for n, neg in cond.daddr if not neg]
            if cond.unknown or len(positive) != 1 or len(cond.daddr) != 1:
                return  # cannot tell which packets this exit spares: leave the rule out
            excluded.append(positive[0])  # may spare more than it does: errs on "not met"
        whole = destination or _any_network(match.proto)
        excluded = [e for e in excluded if overlaps(e, whole)]
        try:
            if oif is not None:
                validate_interface_name(oif)  # "eth*" wildcards are not modelled
            common: dict[str, Any] = {"destination": destination, "exclude": excluded,
                                      "out_interface": oif,
                                      "random_fully": "fully-random" in match.nat_flags}
            if match.verdict == "masquerade":
                self.nat.append(MasqueradeRule(source, **common))
            elif match.nat_addr is not None:
                self.nat.append(SnatRule(source, to_address=match.nat_addr, **common))
        except ModelError:
            return

    def _forward_rule(self, match: _Match, exits: list[_Match]) -> None:
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
        for cond in exits:
            if cond.verdict != "accept" and not _disjoint(cond, family, source, destination, oif):
                return  # something earlier may drop these packets
        try:
            self.accepts.append(
                ForwardRule(source, destination, in_interface=iif, out_interface=oif)
            )
        except ModelError:
            return


def _answers(other: ForwardRule, rule: ForwardRule) -> bool:
    """``other`` accepts the replies of ``rule``'s traffic."""
    return (other.family == rule.family and contains(other.source, rule.destination)
            and contains(other.destination, rule.source)
            and other.in_interface in (None, rule.out_interface)
            and other.out_interface in (None, rule.in_interface))


# --------------------------------------------------------------------------- the cache


@dataclass
class _Table:
    """What k3snet knows of one of its tables."""

    chains: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> chain JSON
    marker: bool = False


@dataclass
class _Cache:
    """k3snet's table(s) as of ruleset generation ``genid``.

    ``handles[key]`` holds the kernel handle of each rule of the object (in
    :func:`nft_rules` order), ``None`` when not known (then the next change
    that must delete it re-reads the table first).
    """

    genid: int
    objects: dict[Key, NetObject] = field(default_factory=dict)
    handles: dict[Key, list[int | None]] = field(default_factory=dict)
    tables: dict[str, _Table] = field(default_factory=dict)  # nft family -> table
    stray_rules: list[tuple[str, str, int, str]] = field(default_factory=list)
    stray_chains: list[tuple[str, str]] = field(default_factory=list)
    rebuild: set[str] = field(default_factory=set)  # families whose base chains are wrong
    policies: list[tuple[str, str, str]] = field(default_factory=list)  # family, chain, policy
    hooks: list[tuple[str, str]] = field(default_factory=list)  # base chains hooked otherwise
    edited: dict[Key, str] = field(default_factory=dict)  # key -> the tag found
    foreign: frozenset[NetObject] | None = None
    state: State | None = None
    nat_index: dict[tuple[int, int, int], set[Key]] = field(default_factory=dict)

    def put(self, key: Key, obj: NetObject) -> None:
        if key not in self.objects and key[0] == "nat":
            self.nat_index.setdefault((key[1], key[2], key[3]), set()).add(key)
        self.objects[key] = obj

    def drop(self, key: Key) -> None:
        if self.objects.pop(key, None) is not None and key[0] == "nat":
            bucket = self.nat_index[(key[1], key[2], key[3])]
            bucket.discard(key)
            if not bucket:
                del self.nat_index[(key[1], key[2], key[3])]
        self.handles.pop(key, None)
        self.edited.pop(key, None)


def _nat_overlap(a: Key, b: Key) -> bool:
    """Whether NAT rules keyed ``a`` and ``b`` (sources overlapping) can match one packet.

    Exclusions are ignored: a pair that only seems to overlap just costs a re-add.
    """
    a_dst, a_len, b_dst, b_len = a[4], a[5], b[4], b[5]
    if a_len >= 0 and b_len >= 0:
        bits = 32 if a[1] == 4 else 128
        shorter = min(a_len, b_len)
        mask = ((1 << bits) - 1) ^ ((1 << (bits - shorter)) - 1)
        if a_dst & mask != b_dst & mask:
            return False
    return not (a[6] and b[6] and a[6] != b[6])


@dataclass
class _Diff:
    """What a plan does to k3snet's rules: the objects after it, and the rules to touch."""

    objects: dict[Key, NetObject]
    removed: list[Key]  # present before, gone or different after
    added: list[Key]  # new or different after
    moved: list[Key]  # unchanged, but re-added after an added rule that must precede it
    change_of: dict[Key, int]  # key -> index of the first change naming it


def _rule_count(obj: NetObject) -> int:
    """How many kernel rules implement ``obj`` (a forward rule has a reply half)."""
    return 2 if obj.kind == "forward" else 1


# --------------------------------------------------------------------------- the backend


class NftablesBackend:
    """NAT and forward rules in k3snet's own nftables table, one transaction per apply.

    ``netns``: the network namespace to work in (``None``: the current one; a
    missing namespace raises :class:`~k3snet.errors.BackendError` here).
    ``family``: ``"inet"`` (one table) or ``"split"`` (``ip`` and ``ip6`` tables).
    ``table``: the table name. ``faults.fail_at(N)`` (tests): the next apply
    carries, after the first ``N`` changes' commands, one the kernel refuses, so
    the whole transaction is refused. ``observe_foreign``: whether
    :meth:`observe` reads other tables (a few small listings). ``syntax``: batches
    in nft's own language (``"nft"``, the default: about 1.7x less parsing time on
    large batches, and errors quote the refused command) or in libnftables
    ``"json"``, through the same libnftables call.

    Example (``desired`` a :class:`~k3snet.model.State`)::

        with NftablesBackend("k3snet-demo") as backend:
            p = k3snet.plan(backend.observe(), desired.only(backend.capabilities))
            backend.apply(p)
    """

    name = "nftables"

    def __init__(
        self,
        netns: str | None = None,
        *,
        family: TableFamily = "inet",
        table: str = "k3snet",
        observe_foreign: bool = True,
        syntax: Syntax = "nft",
    ) -> None:
        self._families = table_families(family)
        self._table = validate_table_name(table)
        if syntax not in ("json", "nft"):
            raise ModelError(f"syntax must be 'json' or 'nft', got {syntax!r}")
        try:
            import nftables  # noqa: F401, PLC0415 - only checks the optional dependency
        except ImportError as exc:
            raise BackendUnavailableError(
                "the nftables backend needs the 'nftables' Python bindings and libnftables1 "
                "(pip install 'k3snet[nftables]')"
            ) from exc
        self.family: TableFamily = family
        self.faults = FaultHook()
        self.observe_foreign = observe_foreign
        self.syntax: Syntax = syntax
        self.netns = netns
        """The network namespace this backend acts in (``None``: the caller's own)."""
        self._runner = NetnsRunner(netns)
        self._cache: _Cache | None = None
        self._kernel: _Kernel | None = None
        try:
            self._kernel = self._runner.call(_Kernel)
        except BaseException:
            self._runner.close()
            raise

    # ---------------------------------------------------------------- the protocol

    @property
    def capabilities(self) -> frozenset[str]:
        """``nat`` and ``forward``."""
        return frozenset({"nat", "forward"})

    @property
    def table(self) -> str:
        """The name of k3snet's table(s)."""
        return self._table

    @property
    def drift(self) -> tuple[str, ...]:
        """What the last read of k3snet's table found changed outside k3snet.

        Hand-edited rules (tag and content disagree), rules and chains that map to
        nothing k3snet writes, base chains with another hook or priority. Edited
        rules are reported as what they now do, so a plan replaces them; the rest
        is removed or rebuilt by the next apply.
        """
        cache = self._cache
        if cache is None:
            return ()
        notes = [f"{obj.describe()}: edited outside k3snet (tag {cache.edited[key]}, "
                 f"content {nft_rules(obj)[0].comment})"
                 for key, obj in sorted(cache.objects.items(), key=lambda i: i[1].sort_key)
                 if key in cache.edited]
        notes += [f"rule {family} {self._table} {chain} handle {handle}: {why}; "
                  "the next apply removes it" for family, chain, handle, why in cache.stray_rules]
        notes += [f"chain {family} {self._table} {chain}: not k3snet's; the next apply "
                  "rebuilds the table without it" for family, chain in cache.stray_chains]
        notes += [f"chain {family} {self._table} {chain}: policy {policy}; the next apply "
                  "resets it to accept" for family, chain, policy in cache.policies]
        notes += [f"chain {family} {self._table} {chain}: another type, hook or priority; "
                  "the next apply rebuilds the table" for family, chain in cache.hooks]
        return tuple(notes)

    def observe(self, *, refresh: bool = False) -> State:
        """k3snet's rules (owned) and other tables' NAT and forward rules (foreign).

        Served from the cache when no nftables transaction was committed since the
        last observe or apply (one generation-id query); ``refresh=True`` reads
        the kernel anyway.
        """
        return self._call(lambda kernel: self._observe(kernel, refresh=refresh))

    def check(self, plan: Plan) -> tuple[str, ...]:
        """Dry run: the problems applying ``plan`` would hit (the kernel sees the batch,
        nothing is committed)."""
        try:
            ensure_capable(self, plan)
        except PlanError as exc:
            return (str(exc),)
        return self._call(lambda kernel: self._check(kernel, plan))

    def apply(self, plan: Plan) -> ApplyResult:
        """Apply ``plan`` in one nftables transaction: every change, or none.

        ``operations`` counts kernel round trips: the generation check, the
        transaction, the marker listing, the final generation check (plus a table
        read when the cache is stale).
        """
        ensure_capable(self, plan)
        return self._call(lambda kernel: self._apply(kernel, plan))

    def close(self) -> None:
        """Free the libnftables context and stop the namespace worker (idempotent)."""
        kernel, self._kernel = self._kernel, None
        if kernel is not None:
            with contextlib.suppress(BackendError, OSError):
                self._runner.call(kernel.close)
        self._runner.close()

    def __enter__(self) -> NftablesBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- reading

    def _call(self, fn: Callable[[_Kernel], T]) -> T:
        kernel = self._kernel
        if kernel is None:
            raise BackendError("this nftables backend is closed")
        return self._runner.call(lambda: fn(kernel))

    def _table_of(self, obj: NetObject) -> str:
        if self._families == ("inet",):
            return "inet"
        return "ip" if obj.family == 4 else "ip6"

    def _fresh(self, kernel: _Kernel, *, foreign: bool, refresh: bool = False) -> _Cache:
        """The cache, first re-read from the kernel if anyone committed since it was made."""
        genid = kernel.genid()
        cache = self._cache
        if cache is not None and cache.genid == genid and not refresh:
            if not foreign or cache.foreign is not None:
                return cache
            cache.foreign = self._read_foreign(kernel)
            if kernel.genid() == genid:
                return cache
            genid = kernel.genid()
        for _ in range(_REREAD_ATTEMPTS):
            cache = self._read_own(kernel, genid)
            if foreign:
                cache.foreign = self._read_foreign(kernel)
            after = kernel.genid()
            if after == genid:
                self._cache = cache
                return cache
            genid = after
        raise BackendError("the nftables ruleset kept changing while k3snet read it; try again")

    def _observe(self, kernel: _Kernel, *, refresh: bool) -> State:
        cache = self._fresh(kernel, foreign=self.observe_foreign, refresh=refresh)
        if cache.state is None:
            foreign = cache.foreign if self.observe_foreign and cache.foreign else ()
            cache.state = State(owned=cache.objects.values(), foreign=foreign)
        return cache.state

    def _read_foreign(self, kernel: _Kernel) -> frozenset[NetObject]:
        own = frozenset((family, self._table) for family in self._families)
        return _ForeignReader(kernel, own).read()

    def _read_own(self, kernel: _Kernel, genid: int) -> _Cache:
        cache = _Cache(genid=genid)
        for family in self._families:
            items = kernel.list("table", family=family, name=self._table)
            if items is None:
                continue
            table = cache.tables[family] = _Table()
            rules = []
            for item in items:
                if isinstance(item.get("chain"), dict):
                    table.chains[str(item["chain"].get("name"))] = item["chain"]
                elif isinstance(item.get("rule"), dict):
                    rules.append(item["rule"])
            self._read_chains(cache, family, table)
            self._read_rules(cache, family, rules)
        return cache

    def _read_chains(self, cache: _Cache, family: str, table: _Table) -> None:
        for name, chain in table.chains.items():
            if name == MARKER_CHAIN and "hook" not in chain:
                table.marker = True
            elif name in _CHAIN_HOOKS:
                if any(chain.get(k) != _CHAIN_HOOKS[name][k] for k in ("type", "hook", "prio")):
                    cache.hooks.append((family, name))
                    cache.rebuild.add(family)
                elif chain.get("policy") != _CHAIN_HOOKS[name]["policy"]:
                    cache.policies.append((family, name, str(chain.get("policy"))))
            else:
                # Chain names can be nft keywords, which nft's language cannot quote:
                # rebuilding the table is the one removal that works for any name.
                cache.stray_chains.append((family, name))
                cache.rebuild.add(family)

    def _read_rules(self, cache: _Cache, family: str, rules: list[dict[str, Any]]) -> None:
        split_proto = family if family in ("ip", "ip6") else None
        halves: dict[str, tuple[ForwardRule, int]] = {}  # forward rule halves by comment
        for rule in rules:
            chain, handle, comment = rule.get("chain"), rule.get("handle"), rule.get("comment")
            if not isinstance(handle, int):
                continue
            found = None
            if (chain in (NAT_CHAIN, FORWARD_CHAIN) and isinstance(comment, str)
                    and comment.startswith(TAG_PREFIX) and isinstance(rule.get("expr"), list)):
                with contextlib.suppress(ModelError, ValueError, TypeError):
                    found = _own_object(_parse_rule(rule["expr"]), str(chain))
            if found is None or (split_proto and found[0].family != (4 if family == "ip" else 6)):
                cache.stray_rules.append((family, str(chain), handle, "not a rule k3snet writes"))
                continue
            obj, reply = found
            assert isinstance(comment, str)
            if isinstance(obj, ForwardRule):
                if comment.endswith(REPLY_SUFFIX) != reply or comment in halves:
                    cache.stray_rules.append((family, FORWARD_CHAIN, handle,
                                              "a forward rule half out of place"))
                else:
                    halves[comment] = (obj, handle)
            else:
                self._adopt(cache, family, obj, [handle], comment)
        self._pair_halves(cache, family, halves)

    def _pair_halves(self, cache: _Cache, family: str,
                     halves: dict[str, tuple[ForwardRule, int]]) -> None:
        """A forward rule counts only with its reply half (same object, paired tags)."""
        for comment, (obj, handle) in halves.items():
            if comment.endswith(REPLY_SUFFIX):
                main = halves.get(comment[: -len(REPLY_SUFFIX)])
                if main is None or main[0] != obj:
                    cache.stray_rules.append((family, FORWARD_CHAIN, handle,
                                              "a reply rule without its forward rule"))
                continue
            reply_half = halves.get(comment + REPLY_SUFFIX)
            if reply_half is None or reply_half[0] != obj:
                cache.stray_rules.append((family, FORWARD_CHAIN, handle,
                                          "a forward rule without its reply rule"))
            else:
                self._adopt(cache, family, obj, [handle, reply_half[1]], comment)

    def _adopt(self, cache: _Cache, family: str, obj: NetObject, handles: list[int],
               comment: str) -> None:
        """Record an object rebuilt from the kernel (a second one with its key is stray)."""
        if obj.key in cache.objects or self._table_of(obj) != family:
            chain = FORWARD_CHAIN if obj.kind == "forward" else NAT_CHAIN
            cache.stray_rules += [(family, chain, h, "a duplicate") for h in handles]
            return
        if comment != nft_rules(obj)[0].comment:
            cache.edited[obj.key] = comment
        cache.put(obj.key, obj)
        cache.handles[obj.key] = [*handles]

    # ---------------------------------------------------------------- planning a batch

    def _diff(self, cache: _Cache, plan: Plan) -> _Diff:
        """What ``plan`` changes in k3snet's rules; PlanError if it does not fit the table."""
        objects = dict(cache.objects)
        change_of: dict[Key, int] = {}
        for index, change in enumerate(plan.changes):
            key = change.subject.key
            current = objects.get(key)
            if change.action == "add" and current is not None:
                raise PlanError(f"cannot add {change.after}: {current} is already in "
                                "k3snet's nftables table")
            if change.action != "add" and (current is None or current != change.before):
                raise PlanError(f"cannot {change.action} {change.before}: it is not in "
                                f"k3snet's nftables table (found: {current})")
            if change.after is None:
                del objects[key]
            else:
                objects[key] = change.after
            change_of.setdefault(key, index)
        before = cache.objects
        removed = [k for k in change_of if k in before and objects.get(k) != before[k]]
        added = [k for k in change_of if k in objects and before.get(k) != objects[k]]
        # A rule edited by hand that the plan keeps as it now is gets its tag back.
        retag = [k for k in cache.edited if k not in change_of]
        removed += retag
        added += retag
        moved = self._moves(cache, objects, added, set(removed))
        return _Diff(objects, removed, added, moved, change_of)

    def _moves(self, cache: _Cache, objects: dict[Key, NetObject], added: list[Key],
               removed: set[Key]) -> list[Key]:
        """Kept NAT rules that an added rule must precede: they are re-added after it.

        Only rules whose source contains the added rule's source can come after it
        (:func:`chain_order_key` sorts longer sources first), so each added rule
        looks up at most 33 (IPv4) or 129 (IPv6) source prefixes.
        """
        queue = [k for k in added if k[0] == "nat"]
        if not queue or not cache.nat_index:
            return []
        moved: dict[Key, None] = {}
        appended = set(added)
        while queue:
            key = queue.pop()
            version, src, src_len = key[1], key[2], key[3]
            bits = 32 if version == 4 else 128
            order = chain_order_key(objects[key])
            for length in range(src_len, -1, -1):
                masked = src & (((1 << bits) - 1) ^ ((1 << (bits - length)) - 1))
                for other in cache.nat_index.get((version, masked, length), ()):
                    if other in moved or other in appended or other in removed:
                        continue
                    if chain_order_key(objects[other]) > order and _nat_overlap(key, other):
                        moved[other] = None
                        queue.append(other)
        return sorted(moved, key=lambda k: chain_order_key(objects[k]))

    def _batch(self, cache: _Cache, diff: _Diff, inject: int | None) -> _Batch:
        batch = _Batch(self._table, self.syntax)
        families = ({"inet"} if diff.objects else set()) if self._families == ("inet",) else {
            self._table_of(o) for o in diff.objects.values()}
        appended_by_family: dict[str, list[Key]] = {}
        for key in (*diff.added, *diff.moved):
            appended_by_family.setdefault(self._table_of(diff.objects[key]), []).append(key)
        for family in self._families:
            table = cache.tables.get(family)
            if family not in families:
                if table is not None:
                    batch.delete_table(family)
                continue
            if family in cache.rebuild and table is not None:
                batch.delete_table(family)
                table = None
            batch.ensure_table(family, table)
            if table is None:
                appended = [k for k, o in diff.objects.items() if self._table_of(o) == family]
            else:
                self._deletes(batch, cache, diff, family)
                appended = appended_by_family.get(family, [])
            appended.sort(key=lambda k: chain_order_key(diff.objects[k]))
            for key in appended:
                batch.add_object(family, diff.objects[key], diff.change_of.get(key))
            if appended:
                batch.marker(family, exists=table is not None and table.marker)
        if inject is not None:
            batch.inject_failure(inject, self._families[0])
        return batch

    def _deletes(self, batch: _Batch, cache: _Cache, diff: _Diff, family: str) -> None:
        batch.swept.add(family)
        for rule_family, chain, handle, _ in cache.stray_rules:
            if rule_family == family:
                batch.delete_rule(family, chain, handle, None)
        for keys in (diff.removed, diff.moved):
            for key in keys:
                obj = cache.objects[key]
                if self._table_of(obj) != family:
                    continue
                chain = FORWARD_CHAIN if obj.kind == "forward" else NAT_CHAIN
                for known in cache.handles[key]:
                    assert known is not None  # made sure of by _prepare
                    batch.delete_rule(family, chain, known, diff.change_of.get(key))

    def _prepare(self, kernel: _Kernel, plan: Plan, inject: int | None,
                 ) -> tuple[_Cache, _Diff, _Batch]:
        cache = self._fresh(kernel, foreign=False)
        diff = self._diff(cache, plan)
        unknown = any(None in cache.handles[k] for k in (*diff.removed, *diff.moved))
        if unknown:  # added by an apply whose marker could not be read: look them up
            cache = self._fresh(kernel, foreign=False, refresh=True)
            diff = self._diff(cache, plan)
        return cache, diff, self._batch(cache, diff, inject)

    # ---------------------------------------------------------------- check / apply

    def _check(self, kernel: _Kernel, plan: Plan) -> tuple[str, ...]:
        try:
            _, _, batch = self._prepare(kernel, plan, None)
        except PlanError as exc:
            return (str(exc),)
        if batch.empty:
            return ()
        rc, error = kernel.run(batch.text(), json_input=batch.json, dry_run=True)
        if rc != 0:
            return (f"nftables would refuse the transaction: {_first_lines(error)}",)
        return ()

    def _apply(self, kernel: _Kernel, plan: Plan) -> ApplyResult:
        calls = kernel.calls
        inject = self.faults.take(plan)
        cache, diff, batch = self._prepare(kernel, plan, inject)
        if batch.empty:
            return ApplyResult(self.name, plan.changes, operations=kernel.calls - calls)
        genid = cache.genid
        rc, error = kernel.run(batch.text(), json_input=batch.json)
        if rc != 0:
            if kernel.genid() != genid:
                self._cache = None  # someone else committed meanwhile: read again next time
            cause = "injected failure (fault hook)" if inject is not None else "nftables"
            owner = inject if inject is not None else batch.owner_in(error)
            raise ApplyError(
                f"{cause}: the kernel refused the transaction, nothing was changed: "
                f"{_first_lines(error)}",
                failed=plan.changes[owner] if owner is not None else None,
            )
        markers: dict[str, int | None] = {}
        for family in batch.marked:
            items = kernel.list("chain", family=family, table=self._table, name=MARKER_CHAIN) or []
            chains = [i["chain"] for i in items if isinstance(i.get("chain"), dict)]
            found = chains[0].get("handle") if chains else None
            markers[family] = found if isinstance(found, int) else None
        if kernel.genid() == genid + 1:
            self._commit(cache, diff, batch, markers, genid + 1)
        else:
            self._cache = None  # someone else committed too: what we know may be stale
        return ApplyResult(self.name, plan.changes, operations=kernel.calls - calls)

    def _commit(self, cache: _Cache, diff: _Diff, batch: _Batch,
                markers: dict[str, int | None], genid: int) -> None:
        """Make the cache what the committed batch made of the kernel (no re-read)."""
        for family in batch.deleted_tables:
            cache.tables.pop(family, None)
            cache.rebuild.discard(family)
        for family in batch.created_tables:
            cache.tables[family] = _Table()
        for family, chain in batch.created_chains:
            cache.tables[family].chains[chain] = dict(_CHAIN_HOOKS[chain])
        for family in batch.marked:
            cache.tables[family].marker = True
        swept = batch.swept | set(batch.deleted_tables)
        cache.stray_rules = [s for s in cache.stray_rules if s[0] not in swept]
        cache.stray_chains = [s for s in cache.stray_chains if s[0] not in swept]
        cache.policies = [s for s in cache.policies if s[0] not in swept]
        cache.hooks = [s for s in cache.hooks if s[0] not in swept]
        for key in diff.removed:
            cache.drop(key)
        for key in diff.added:
            cache.put(key, diff.objects[key])
        for family, rules in batch.added.items():
            marker = markers.get(family)
            for position, (key, slot) in enumerate(rules):
                # Handles count up in batch order, and the marker was allocated last.
                handle = None if marker is None else marker - (len(rules) - position)
                slots = cache.handles.setdefault(key, [None] * _rule_count(diff.objects[key]))
                slots[slot] = handle
                cache.edited.pop(key, None)
        cache.genid = genid
        cache.state = None


# --------------------------------------------------------------------------- batch text


class _Batch:
    """The commands of one transaction (nft or JSON syntax), and what they do."""

    def __init__(self, table: str, syntax: Syntax) -> None:
        self.table = table
        self.json = syntax == "json"
        self.commands: list[str] = []
        self.owners: list[int | None] = []  # the change each command is for
        self.added: dict[str, list[tuple[Key, int]]] = {}  # family -> (key, rule slot)
        self.marked: list[str] = []
        self.deleted_tables: list[str] = []
        self.created_tables: list[str] = []
        self.created_chains: list[tuple[str, str]] = []
        self.swept: set[str] = set()  # families whose stray rules and chains are deleted

    @property
    def empty(self) -> bool:
        return not self.commands

    def _emit(self, command: str, owner: int | None = None) -> None:
        self.commands.append(command)
        self.owners.append(owner)

    def _ref(self, family: str) -> str:
        return f'"family":"{family}","table":"{self.table}"'

    def delete_table(self, family: str) -> None:
        self.deleted_tables.append(family)
        if self.json:
            self._emit(f'{{"delete":{{"table":{{"family":"{family}","name":"{self.table}"}}}}}}')
        else:
            self._emit(f"delete table {family} {self.table}")

    def ensure_table(self, family: str, table: _Table | None) -> None:
        """Create what is missing of the table and its base chains; reset a changed policy."""
        if table is None:
            self.created_tables.append(family)
            if self.json:
                self._emit(f'{{"add":{{"table":{{"family":"{family}","name":"{self.table}"}}}}}}')
            else:
                self._emit(f"add table {family} {self.table}")
        for chain, hooks in _CHAIN_HOOKS.items():
            present = table.chains.get(chain) if table is not None else None
            if present is not None and present.get("policy") == hooks["policy"]:
                continue
            self.created_chains.append((family, chain))
            if self.json:
                spec = ",".join(f'"{k}":{json.dumps(v)}' for k, v in hooks.items())
                self._emit(f'{{"add":{{"chain":{{{self._ref(family)},"name":"{chain}",{spec}}}}}}}')
            else:
                self._emit(f"add chain {family} {self.table} {chain} {_CHAIN_TEXT[chain]}")

    def delete_rule(self, family: str, chain: str, handle: int, owner: int | None) -> None:
        """Delete a rule of one of k3snet's chains (their names need no quoting)."""
        if self.json:
            self._emit(f'{{"delete":{{"rule":{{{self._ref(family)},"chain":"{chain}",'
                       f'"handle":{handle}}}}}}}', owner)
        else:
            self._emit(f"delete rule {family} {self.table} {chain} handle {handle}", owner)

    def add_object(self, family: str, obj: NetObject, owner: int | None) -> None:
        inet = family == "inet"
        slots = self.added.setdefault(family, [])
        rules = nft_rules(obj, inet=inet)
        exprs = nft_rules_json(obj, inet=inet) if self.json else ()
        for slot, rule in enumerate(rules):
            if self.json:
                self._emit(f'{{"add":{{"rule":{{{self._ref(family)},"chain":"{rule.chain}",'
                           f'"comment":"{rule.comment}","expr":{exprs[slot]}}}}}}}', owner)
            else:
                self._emit(f'add rule {family} {self.table} {rule.chain} {rule.body} '
                           f'comment "{rule.comment}"', owner)
            slots.append((obj.key, slot))

    def marker(self, family: str, *, exists: bool) -> None:
        """Re-create the empty marker chain: its new handle dates the rules added before it."""
        self.marked.append(family)
        if self.json:
            ref = f'{{"chain":{{{self._ref(family)},"name":"{MARKER_CHAIN}"}}}}'
            if exists:
                self._emit(f'{{"delete":{ref}}}')
            self._emit(f'{{"add":{ref}}}')
        else:
            if exists:
                self._emit(f"delete chain {family} {self.table} {MARKER_CHAIN}")
            self._emit(f"add chain {family} {self.table} {MARKER_CHAIN}")

    def inject_failure(self, change: int, family: str) -> None:
        """Insert a command the kernel refuses before the first command of change ``change``.

        Deleting a rule handle that cannot exist passes libnftables (it keeps no
        rule cache to check it against) and is refused by the kernel in the middle
        of the transaction, which then aborts as a whole.
        """
        position = next((i for i, owner in enumerate(self.owners)
                         if owner is not None and owner >= change), len(self.commands))
        if self.json:
            command = (f'{{"delete":{{"rule":{{{self._ref(family)},"chain":"{NAT_CHAIN}",'
                       f'"handle":{_IMPOSSIBLE_HANDLE}}}}}}}')
        else:
            command = f"delete rule {family} {self.table} {NAT_CHAIN} handle {_IMPOSSIBLE_HANDLE}"
        self.commands.insert(position, command)
        self.owners.insert(position, change)

    def owner_in(self, error: str) -> int | None:
        """The change whose command an nft-syntax error message quotes, if any.

        libnftables repeats the refused command under its message; JSON batches
        get no such location, so for them this is ``None``.
        """
        if self.json:
            return None
        quoted = {line.strip() for line in error.splitlines()}
        return next((owner for command, owner in zip(self.commands, self.owners, strict=True)
                     if owner is not None and command.strip() in quoted), None)

    def text(self) -> str:
        if self.json:
            return '{"nftables":[' + ",".join(self.commands) + "]}"
        return "\n".join(self.commands) + "\n"
