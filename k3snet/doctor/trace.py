"""Follow one flow through a node's state, as the kernel would: :func:`trace`.

The original packet (the flow's first, conntrack ``new``) crosses the prerouting
chains (where kube-proxy's ``DNAT`` to a Service's endpoint changes its
destination), the routing decision (policy rules, longest prefix), the forwarding
switch, ``rp_filter`` on its input interface, the forward chains and the
postrouting chains, where NAT picks the source the destination sees. The reply
(``established``, addressed to that source and translated back before routing)
crosses prerouting, routing back, forwarding, ``rp_filter`` on the uplink,
forward and postrouting, and must leave through the pod's interface.

Assumptions, stated in the steps they affect: the network beyond the node
delivers the packet and routes the node's own addresses back to it (to the
interface that holds the address), but not the pod addresses (K3s' default: pod
CIDRs are known only inside the cluster; pass ``upstream_routes_pods=True``
otherwise); an interface facing pods leads to no destination beyond its own
networks (a host route to the destination itself is a pod's own); packets start
with mark 0. When a rule picks at random (kube-proxy's
endpoint choice), every branch is traced and the worst is returned, with the
others in :attr:`Trace.endpoints`.

:func:`trace` is pure: it reads a :class:`~k3snet.doctor.state.NodeState` and
never touches the system.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, Final, Literal

import attrs

from k3snet._logline import shell_word
from k3snet.doctor.packet import (
    ACK,
    PLANNED_ORDER,
    SYN,
    SYN_ACK,
    BaseChain,
    ChainResult,
    Hook,
    NatAction,
    Packet,
    endpoint_text,
)
from k3snet.doctor.routing import (
    Lookup,
    RouteEntry,
    lookup,
    masquerade_source,
    rp_filter_check,
    table_name,
)
from k3snet.doctor.state import NodeState
from k3snet.errors import ModelError
from k3snet.model import printable

__all__ = ["Flow", "Step", "Trace", "Verdict", "trace"]

IPAddress = IPv4Address | IPv6Address
Outcome = Literal["pass", "drop", "nat", "unknown", "info"]
Direction = Literal["original", "reply"]

#: Interfaces that face pods (CNI bridges, overlays, veths) rather than the network.
POD_FACING = re.compile(r"^(cni|flannel|cali|vxlan|cilium|kube-|veth|tunl|weave|docker|br-)")

# De-NAT of replies happens in nat prerouting (NF_IP_PRI_NAT_DST): chains before it
# still see the translated destination.
_NAT_DST_PRIORITY = -100
# Conntrack takes a packet in at this priority (NF_IP_PRI_CONNTRACK): a ``notrack`` in a
# chain before it exempts the packet, one after it finds the packet tracked and does nothing.
_CONNTRACK_PRIORITY = -200
# Every nat chain of a hook (nftables and iptables alike) is run from the NAT core's one
# hook, at NF_IP_PRI_NAT_DST / NF_IP_PRI_NAT_SRC whatever its own priority (which only
# orders the nat chains among themselves: nf_nat_register_fn); the translation is made
# there, so every chain after that point sees the translated packet.
_NAT_CORE: Final[Mapping[str, int]] = {"prerouting": _NAT_DST_PRIORITY, "postrouting": 100}
#: The most random branches (a Service's endpoints) followed for one flow.
MAX_BRANCHES = 32


# A word holding a byte that is not UTF-8 (a lone surrogate, as the readers keep such a
# byte of a device's name): up to a space, a character no interface name holds or a
# clause's punctuation, not ending in a sentence's full stop. A space is the kernel's
# (isspace: dev_valid_name refuses these), not Python's ``\s``: a name may hold the
# separators \x1c to \x1f, NEL or U+3000, which split it into three words.
_BYTE_WORD = re.compile(r"[^ \t\n\v\f\r/:(),;'\"`]*[\ud800-\udfff]"
                        r"(?:[^ \t\n\v\f\r/:(),;'\"`]*[^ \t\n\v\f\r/:(),;.'\"`])?")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# What ends a word in prose that a kernel's device name may hold all the same.
_CLAUSE = re.compile(r"[(),;.'\"`]")


def shown(text: str, names: Iterable[str] = ()) -> str:
    """``text`` from the node or a bundle as the doctor prints it: :func:`printable`, a
    word holding a byte that is not UTF-8 (a device's kernel name) written as the shell
    word of its bytes (``$'\\xff\\xfe\\xfd'``), as observe writes such a device, not as
    the escapes of the lone surrogates standing for them (``\\udcff``).

    A word ends at a clause's punctuation (``dev NAME)``, ``NAME,``), which a device's
    name may hold (``ip link add 'a;b' ...``): ``names``, the node's devices
    (:attr:`Trace.names`), are each one word, so that such a name is written whole, as
    one shell word, never ``a;$'\\xff'`` (a second command once pasted)."""
    parts, at = [], 0
    for start, end in _byte_words(text, names):
        parts += [printable(text[at:start]), shell_word(text[start:end])]
        at = end
    return "".join([*parts, printable(text[at:])])


def _byte_words(text: str, names: Iterable[str]) -> Iterator[tuple[int, int]]:
    """Where the words of ``text`` holding a lone surrogate stand: :data:`_BYTE_WORD`'s,
    each grown over a name of ``names`` holding clause punctuation that it meets."""
    # Those the text holds: a bundle's thousands of such names made every line's pattern.
    odd = sorted({n for n in names if n in text and _SURROGATE.search(n) and _CLAUSE.search(n)},
                 key=len, reverse=True)
    if not odd:
        yield from (found.span() for found in _BYTE_WORD.finditer(text))
        return
    known = "|".join(map(re.escape, odd))
    word = re.compile(rf"(?:{known}|[^ \t\n\v\f\r/:(),;'\"`])+")
    for found in word.finditer(text):
        start, end = found.span()
        # A full stop ends a sentence, not a word, unless a name holds it.
        while text[start:end].endswith(".") and not text[start:end].endswith(tuple(odd)):
            end -= 1
        if _SURROGATE.search(text, start, end):
            yield start, end


class Verdict(enum.StrEnum):
    """What happens to the flow: it ``reaches`` the destination and its replies come back,
    it is ``blocked`` (a step says where), or it is ``unknown`` (a rule that could
    not be evaluated might decide it)."""

    REACHES = "reaches"
    BLOCKED = "blocked"
    UNKNOWN = "unknown"


def _address(value: str | IPAddress) -> IPAddress:
    try:
        return ip_address(value)
    except ValueError as exc:
        raise ModelError(f"not an IP address: {value!r}") from exc


@attrs.frozen
class Flow:
    """A pod's connection: ``source`` (the pod address) to ``destination``.

    ``protocol`` is ``tcp``, ``udp`` or ``icmp`` (a ping: echo requests, answered by
    echo replies; ICMPv6's for IPv6); ``port`` the destination port
    (None: rules matching on it are reported unknown). ``source_port`` is the
    pod's port, usually ephemeral and so unknown. ``in_interface`` overrides the
    interface the pod's packets come from (default: where the node routes the
    pod address).

    >>> Flow("10.42.0.10", "192.168.2.10", port=5432).describe()
    'tcp 10.42.0.10 -> 192.168.2.10:5432'
    """

    source: IPAddress = attrs.field(converter=_address)
    destination: IPAddress = attrs.field(converter=_address)
    protocol: Literal["tcp", "udp", "icmp"] = "tcp"
    port: int | None = None
    source_port: int | None = None
    in_interface: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.source.version != self.destination.version:
            raise ModelError(f"{self.source} and {self.destination} are of different families")
        if self.protocol not in ("tcp", "udp", "icmp"):
            raise ModelError(f"protocol must be tcp, udp or icmp, got {self.protocol!r}")
        for port in (self.port, self.source_port):
            if port is not None and not (isinstance(port, int) and 0 < port < 65536):
                raise ModelError(f"port must be 1-65535, got {port!r}")
        if self.protocol == "icmp" and self.port is not None:
            raise ModelError("icmp has no port")

    @property
    def family(self) -> Literal[4, 6]:
        """4 or 6."""
        return 4 if self.source.version == 4 else 6

    def describe(self) -> str:
        """``tcp SRC -> DST:PORT``."""
        dst = str(self.destination) if self.family == 4 else f"[{self.destination}]"
        target = f"{dst}:{self.port}" if self.port is not None else str(self.destination)
        return f"{self.protocol} {self.source} -> {target}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"source": str(self.source), "destination": str(self.destination),
                "protocol": self.protocol, "port": self.port}


@attrs.frozen
class Step:
    """One decision on the flow's way: which stage, what happened, what decided it.

    ``outcome`` is ``pass``, ``drop``, ``nat``, ``unknown`` or ``info``;
    ``where`` names the chain, routing table or sysctl; ``detail`` is the rule,
    route or value that decided; ``code`` tags steps that findings explain
    (``forwarding-off``, ``forward-drop`` ...); ``certain`` is false when a rule
    that could not be evaluated might have decided otherwise.
    """

    direction: Direction
    stage: str
    outcome: Outcome
    where: str
    detail: str
    code: str | None = None
    certain: bool = True

    def describe(self, names: Iterable[str] = ()) -> str:
        """One line: ``[reply] forward   drop  iptables-nft filter FORWARD: policy DROP``
        (``names``: the node's devices, as :func:`shown` takes them)."""
        mark = "" if self.certain else " (uncertain)"
        side = "->" if self.direction == "original" else "<-"
        # An nftables rule's text names its chain: said once when that is the base chain
        # (``nft inet k3snet forward: nft inet k3snet forward: ip saddr ...`` otherwise).
        detail = self.detail.removeprefix(f"{self.where}: ")
        # Rules and interface names come from the node or a bundle: escaped, never
        # control sequences or line breaks on the reader's terminal.
        return (f"{side} {self.stage:<11} {self.outcome:<7} {shown(self.where, names)}: "
                f"{shown(detail, names)}{mark}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"direction": self.direction, "stage": self.stage, "outcome": self.outcome,
                "where": self.where, "detail": self.detail, "code": self.code,
                "certain": self.certain}


@attrs.frozen
class Trace:
    """The steps of one flow through a node and the verdict.

    ``source_seen`` is the address the destination sees (None when the packet does
    not leave the node). ``ingress`` / ``egress`` are the pod's interface and the
    one the packet leaves by; ``route`` / ``reply_route`` the routing decisions;
    ``nat`` the source translation, if any; ``dnat`` the destination translation
    (kube-proxy sending a Service's ClusterIP or NodePort to an endpoint), if any.

    When a rule picks at random (kube-proxy's ``statistic --mode random``,
    nftables' ``numgen random``), ``branch`` is the branch this trace followed and
    ``endpoints`` holds the trace of every branch, this one included; the trace
    :func:`trace` returns is the worst of them (blocked, then unknown).
    """

    flow: Flow
    steps: tuple[Step, ...]
    verdict: Verdict
    source_seen: IPAddress | None = None
    ingress: str | None = None
    egress: str | None = None
    gateway: IPAddress | None = None
    route: Lookup | None = None
    reply_route: Lookup | None = None
    nat: NatAction | None = None
    dnat: NatAction | None = None
    branch: int | None = None
    more_branches: bool = attrs.field(default=False, repr=False)
    endpoints: tuple[Trace, ...] = attrs.field(default=(), repr=False)
    names: frozenset[str] = attrs.field(default=frozenset(), repr=False, eq=False)
    """The node's devices whose names :func:`shown` must keep whole (a byte that is not
    UTF-8 and a clause's punctuation in one name): what the text output words by."""

    @property
    def target(self) -> IPAddress:
        """Where the packet goes once translated: the endpoint, or the flow's destination."""
        if self.dnat is not None and self.dnat.address is not None:
            return self.dnat.address
        return self.flow.destination

    @property
    def target_port(self) -> int | None:
        """The destination port once translated."""
        if self.dnat is not None and self.dnat.port is not None:
            return self.dnat.port
        return self.flow.port

    def describe_target(self) -> str:
        """``ADDR:PORT`` of where the packet goes once translated."""
        return endpoint_text(self.target, self.target_port)

    def describe_branch(self) -> str:
        """``ADDR:PORT`` and, when known, ``via GATEWAY dev DEVICE`` it leaves by."""
        via = f" via {self.gateway}" if self.gateway else ""
        leaves = f" (leaves{via} dev {self.egress})" if self.egress else ""
        return self.describe_target() + leaves

    @property
    def blocked_at(self) -> Step | None:
        """The step that stopped the flow, if any."""
        return next((s for s in self.steps if s.outcome == "drop"), None)

    @property
    def codes(self) -> tuple[str, ...]:
        """The codes of every tagged step, in order."""
        return tuple(s.code for s in self.steps if s.code)

    def render(self) -> str:
        """A human-readable trace, one step per line, then the verdict."""
        lines = [f"flow: {self.flow.describe()}"]
        if len(self.endpoints) > 1:
            what = f"endpoint {self.describe_target()}" if self.dnat else f"branch {self.branch}"
            how = ("picked at random" if self.dnat
                   else "ways a rule or a multipath route sends a connection")
            lines.append(f"  ({what}: one of {len(self.endpoints)} {how}, each "
                         "traced, the first of the worst shown)")
        lines += [f"  {s.describe(self.names)}" for s in self.steps]
        seen = f"; the destination sees {self.source_seen}" if self.source_seen else ""
        to = f" (to {self.describe_target()})" if self.dnat is not None else ""
        lines.append(f"verdict: {self.verdict.value}{to}{seen}")
        if len(self.endpoints) > 1:
            lines.append("endpoints (kube-proxy picks one at random for each connection):"
                         if self.dnat is not None
                         else "branches (a rule or a multipath route picks one for each "
                              "connection):")
            names = self.names
            lines += [f"  {e.describe_target() if self.dnat else shown(e.describe_branch(), names)}"
                      f": {e.verdict.value}" + (
                f"; the destination sees {e.source_seen}" if e.source_seen else "")
                for e in self.endpoints]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        data: dict[str, Any] = {
            "flow": self.flow.to_dict(), "verdict": self.verdict.value,
            "source_seen": str(self.source_seen) if self.source_seen else None,
            "ingress": self.ingress, "egress": self.egress,
            "steps": [s.to_dict() for s in self.steps]}
        if self.dnat is not None:
            data["endpoint"] = self.describe_target()
        if len(self.endpoints) > 1:
            data["endpoints"] = [
                {"endpoint": e.describe_target(), "verdict": e.verdict.value,
                 "source_seen": str(e.source_seen) if e.source_seen else None,
                 "egress": e.egress, "gateway": str(e.gateway) if e.gateway else None}
                for e in self.endpoints]
        return data


@attrs.define
class _Tracer:
    state: NodeState
    flow: Flow
    steps: list[Step] = attrs.field(factory=list)
    uncertain: bool = False
    pick: int = 0
    randoms: int = 0
    random_taken: bool = False
    untracked: bool = False
    route_mark: int | None = 0
    """The mark the flow's first packet was routed with (after prerouting)."""
    other_order: bool = False
    """Run chains of equal priority in the other order the capture cannot rule out
    (:attr:`BaseChain.other_run_key`)."""
    ties: dict[tuple[str, int], tuple[str, ...]] = attrs.field(factory=dict)
    """The chains run on a hook at one priority whose order the capture cannot tell
    (of different tables), by (hook, priority)."""

    def add(self, direction: Direction, stage: str, outcome: Outcome,  # noqa: PLR0917 - a Step
            where: str, detail: str,
            code: str | None = None, *, certain: bool = True) -> None:
        self.steps.append(Step(direction, stage, outcome, where, detail, code, certain))
        self.uncertain = self.uncertain or not certain

    def hook(self, packet: Packet, hook: Hook, *, first: bool,
             part: Literal["before-nat", "after-nat"] | None = None,
             at_nat: Callable[[Packet, ChainResult | None], Packet] | None = None,
             attached: bool = False) -> tuple[Packet, ChainResult | None, str | None]:
        """Run ``packet`` through every base chain of ``hook`` (in the kernel's order).

        Returns the packet (its mark may change, and ``at_nat`` may translate it), the
        NAT result if a nat chain translated it, and the ``where`` of a chain that
        dropped it (else None). ``part`` runs only the chains before (after) the NAT
        core's point of the hook. ``at_nat`` makes the translation there (given what
        the nat chains did, None when none translated): the chains after it see its
        packet, as they see the kernel's translated one. ``attached``: the packet comes
        with its conntrack entry (the node's own ICMP error, given the entry of the
        packet it answers before any output chain runs): the chains before conntrack's
        priority see its state, not ``invalid``, and a notrack there leaves it be (nft's
        ``notrack`` and ``CT --notrack`` skip a packet that has an entry).
        """
        direction: Direction = packet.direction
        core = _core_order(self.state.chains, packet.family,
                           legacy_nat=packet.family in self.state.legacy_nat)
        flip = self.other_order if core == "unknown" else core == "after"
        chains = sorted((c for c in self.state.chains
                         if c.hook == hook and packet.family in c.families),
                        key=lambda c: _run_position(c, other=self.other_order, after_core=flip))
        self.ties.update(_unordered(hook, chains))
        if core == "unknown":
            for key, tied in _tied_with_core(hook, chains).items():
                # after any chains of other tables tied at that priority, the core last
                self.ties[key] = tuple(dict.fromkeys((*self.ties.get(key, ()), *tied)))
        natted: ChainResult | None = None
        translated = at_nat is None
        for chain in chains:
            # The output hook's core (its DNAT point) translates only the node's own
            # packets: a trace of them splits there (``part``), no other trace does.
            past = (chain.kind != "nat" and chain.priority > _NAT_DST_PRIORITY
                    if hook == "output" else _past_nat(chain, after_core=flip))
            if part is not None and past != (part == "after-nat"):
                continue
            if past and not translated:
                assert at_nat is not None
                packet, translated = at_nat(packet, natted), True
            if chain.empty or (chain.kind == "nat" and (not first or natted is not None
                                                        or packet.ctstate == "untracked")):
                # nat chains see only a connection's first packet, until one NATs, and
                # never a packet conntrack does not track (nf_nat_inet_fn finds no entry);
                # a chain with no rule that accepts decides nothing.
                continue
            seen = attrs.evolve(packet, pick=self.pick, fib=self.state.fib(packet.family))
            before_ct = chain.priority < _CONNTRACK_PRIORITY and not attached
            if (hook in ("prerouting", "output") and before_ct
                    and packet.ctstate != "untracked"):
                # Conntrack has not taken the packet in yet: ``ct state`` / ``--ctstate``
                # read ``invalid`` there (nft_ct_get_eval, xt_conntrack without a ct).
                seen = attrs.evolve(seen, ctstate="invalid", nat=frozenset())
            result = chain.evaluate(seen)
            self.randoms += result.randoms
            self.random_taken = self.random_taken or result.random_taken
            packet = attrs.evolve(packet, mark=result.mark)
            if result.untracked is not None and before_ct:
                packet = attrs.evolve(packet, ctstate="untracked")
                self.untracked = self.untracked or direction == "original"
                self.add(direction, hook, "info", chain.where,
                         f"{result.untracked}: exempts the packet from connection tracking, "
                         "so no NAT applies to it (no masquerade, no DNAT, no translation of "
                         "replies back)", "untracked")
            self.clamped(direction, hook, chain.where, result)
            for unknown in result.unknowns:
                self.add(direction, hook, "unknown", chain.where,
                         f"{unknown.rule} ({unknown.reason}; if it matched: {unknown.effect})",
                         "unknown-rule", certain=unknown.effect in ("none", result.verdict))
            certain = result.certain
            if result.verdict == "drop":
                code = "forward-drop" if hook == "forward" else f"{hook}-drop"
                self.add(direction, hook, "drop", chain.where, result.rule, code,
                         certain=certain)
                return packet, natted, chain.where
            if result.verdict == "nat":
                natted = result
                assert result.nat is not None
                self.add(direction, hook, "nat", chain.where,
                         f"{result.rule} ({result.nat.describe()})", certain=certain)
                continue
            early = _nat_accept(chain, result)
            self.add(direction, hook, "pass", chain.where,
                     result.rule if early is None or early == result.rule
                     else f"{early} (returns: {result.rule} decides)",
                     None if early is None else "nat-accept", certain=certain)
        if not translated and part != "before-nat":
            assert at_nat is not None
            packet = at_nat(packet, natted)
        return packet, natted, None

    def clamped(self, direction: Direction, hook: Hook, where: str,
                result: ChainResult) -> None:
        """A step for each rule of ``result`` clamping TCP's MSS (what the path-mtu
        finding reads: its rule, before ``: clamps``, and the MSS, after the last ``to``)."""
        for rule, mss in result.clamps:
            self.add(direction, hook, "info", where,
                     f"{rule}: clamps the MSS of TCP's "
                     f"{'SYN' if direction == 'original' else 'SYN-ACK'} to "
                     + ("the route's MTU less the headers" if mss is None else str(mss)),
                     "mss-clamp")

    def routing(self, packet: Packet) -> Lookup:
        fam = packet.family
        return lookup(self.state.routes[fam], self.state.rules[fam], packet.dst,
                      src=packet.src, iif=packet.iif or "lo", mark=packet.mark,
                      proto=packet.proto_number,
                      ignore_linkdown=self.state.linkdown_ignored(fam))

    def forwarding(self, packet: Packet) -> bool:
        """The forwarding switch for ``packet``'s input interface; False if off."""
        direction: Direction = packet.direction
        if packet.family == 4:
            receiver = self.receiver(packet.iif or "")
            port = (f" (a port of {receiver}, whose switch decides)"
                    if receiver != packet.iif else "")
            iface = receiver.replace(".", "/")
            name = f"net.ipv4.conf.{iface}.forwarding"
            if name not in self.state.sysctls:
                name = "net.ipv4.ip_forward"
        else:
            port = ""
            name = "net.ipv6.conf.all.forwarding"
            # Linux 6.17+: an interface's force_forwarding forwards what arrives on it
            # whatever ``all`` says (ip6_forward).
            forced = f"net.ipv6.conf.{(packet.iif or '').replace('.', '/')}.force_forwarding"
            if self.state.sysctls.get(name, "").strip() == "0" and self.state.sysctl(forced):
                name = forced
        value = self.state.sysctls.get(name)
        if value is None:
            self.add(direction, "forwarding", "unknown", name, "not captured",
                     "sysctl-missing", certain=False)
            return True
        if value.strip() == "0":
            self.add(direction, "forwarding", "drop", name, "0: the node does not forward "
                     f"packets arriving on {packet.iif}{port}", "forwarding-off")
            return False
        self.add(direction, "forwarding", "pass", name, value + port)
        return True

    def receiver(self, iif: str) -> str:
        """The interface the IP stack takes a packet arriving on ``iif`` to come in on:
        a bridge's or bond's port hands what it receives to its master (a pod's veth in
        ``cni0``: ``cni0``'s switch forwards it); a VRF's port stays itself. A master
        whose kind the capture does not say (made without ``ip -d``) is taken as a
        bridge, the master pods' veths have."""
        seen = {iif}
        while (master := self.state.masters.get(iif)) is not None and master[1] in (
                None, "bridge", "bond") and master[0] not in seen:  # a bond in a bridge
            iif = master[0]
            seen.add(iif)
        return iif

    def link_up(self, oif: str) -> bool:
        """Whether ``oif`` can carry the packet; False (a drop step) if it is down or up
        without carrier (the kernel keeps a route through it, flagged ``linkdown``)."""
        link = self.state.links.get(oif)
        if link is None:
            return True
        why = ("is down" if link == "down" else
               "is up but has no carrier (NO-CARRIER: the route is linkdown, yet used)")
        self.add("original", "egress", "drop", f"dev {oif}",
                 f"{oif} {why}: what is sent there goes nowhere", "link-down")
        return False

    def rp_filter(self, packet: Packet, oif: str) -> bool:
        """Reverse-path filtering of ``packet`` on its input interface; False if dropped.

        The reverse lookup uses mark 0, or the packet's mark where ``src_valid_mark``
        is set (on ``all`` or the input interface: the kernel takes either,
        ``IN_DEV_SRC_VMARK``), so ``fwmark`` policy rules see the mark prerouting gave.
        """
        if packet.family != 4 or packet.iif is None:
            return True
        iface = packet.iif.replace(".", "/")
        names = ("net.ipv4.conf.all.rp_filter", f"net.ipv4.conf.{iface}.rp_filter")
        mode = max(self.state.sysctl(n) for n in names)
        if mode == 0:
            return True
        valid_mark = any(self.state.sysctl(f"net.ipv4.conf.{n}.src_valid_mark")
                         for n in ("all", iface))
        mark = packet.mark if valid_mark else 0
        fam = packet.family
        passed, back = rp_filter_check(
            self.state.routes[fam], self.state.rules[fam], self.state.addresses,
            src=packet.src, dst=packet.dst, iif=packet.iif, mode=mode, oif=oif, mark=mark,
            proto=packet.proto_number, ignore_linkdown=self.state.linkdown_ignored(fam))
        kind = "strict" if mode == 1 else "loose"
        where = f"rp_filter={mode} ({kind}) on {packet.iif}"
        marked = (f" (src_valid_mark: looked up with the packet's mark "
                  f"{'unknown' if mark is None else hex(mark)})" if valid_mark else "")
        detail = f"the route back to {packet.src} is {back.describe()}{marked}"
        direction: Direction = packet.direction
        if passed is None:
            self.add(direction, "rp_filter", "unknown", where, detail, certain=False)
            return True
        if not passed:
            self.add(direction, "rp_filter", "drop", where, detail + (
                f", not via {packet.iif}" if mode == 1 else ""), "rp-filter")
            return False
        self.add(direction, "rp_filter", "pass", where, detail)
        return True

    def rp_filter_elsewhere(self, reply: Packet, oif: str, answerer: IPAddress,
                            forward: RouteEntry | None) -> None:
        """A step of unknown outcome when strict reverse-path filtering drops ``reply``
        (passed on the interface it is assumed to come back on) on another interface it
        could come back on: one the node routes ``answerer`` through as well, in another
        table than the request's route ``forward`` (policy rules in play) or by a second
        route to its prefix (a default route beside a more specific one is not such a
        way back). Which one the network sends it to is not known here: the kernel
        drops it there (``IPReversePathFilter``) where a pass was said. A table no rule
        looks up routes nothing, and an interface down or without carrier receives
        nothing: neither is such a way back."""
        if reply.family != 4 or reply.iif is None or forward is None:
            return
        rules = self.state.rules[reply.family]
        tables = ({r.table for r in rules if r.action == "lookup" and r.table is not None}
                  if rules else {255, 254, 253})  # none captured: lookup's defaults
        others = sorted({d for r in self.state.routes[reply.family]
                         if r.type == "unicast" and answerer in r.destination
                         and r.table in tables
                         and (r.table != forward.table or r.destination == forward.destination)
                         for d in (r.device, *(device for _, device in r.nexthops))
                         if d is not None and d != reply.iif and not _pod_facing(d, oif)
                         and d not in self.state.links})
        for device in others:
            iface = device.replace(".", "/")
            mode = max(self.state.sysctl(n) for n in (
                "net.ipv4.conf.all.rp_filter", f"net.ipv4.conf.{iface}.rp_filter"))
            if mode != 1:
                continue
            valid_mark = any(self.state.sysctl(f"net.ipv4.conf.{n}.src_valid_mark")
                             for n in ("all", iface))
            passed, back = rp_filter_check(
                self.state.routes[reply.family], self.state.rules[reply.family],
                self.state.addresses, src=reply.src, dst=reply.dst, iif=device, mode=mode,
                oif=oif, mark=reply.mark if valid_mark else 0, proto=reply.proto_number,
                ignore_linkdown=self.state.linkdown_ignored(reply.family))
            if passed is False:
                self.add("reply", "rp_filter", "unknown", f"rp_filter=1 (strict) on {device}",
                         f"the node routes {answerer} through {reply.iif} and {device}: a "
                         f"reply the network sends to {device} rather than {reply.iif} is "
                         f"dropped there (the route back to {reply.src} is "
                         f"{back.describe()}, not via {device})", "rp-filter-elsewhere",
                         certain=False)
                return


def trace(state: NodeState, flow: Flow, *, upstream_routes_pods: bool = False) -> Trace:
    """Follow ``flow`` through ``state``; every step with what decided it, and a verdict.

    See the module docstring for the path and the assumptions. When a rule picks at
    random (a Service's endpoints), each branch is traced (up to
    :data:`MAX_BRANCHES`) and the worst trace is returned, every branch's trace in
    its ``endpoints``.
    """
    first = _trace_branch(state, flow, upstream_routes_pods, 0)
    if first.branch is None:
        return first
    branches = [first]
    while branches[-1].more_branches and len(branches) < MAX_BRANCHES:
        branches.append(_trace_branch(state, flow, upstream_routes_pods, len(branches)))
    rank = {Verdict.BLOCKED: 0, Verdict.UNKNOWN: 1, Verdict.REACHES: 2}
    worst = min(branches, key=lambda b: rank[b.verdict])  # the first of the worst
    return attrs.evolve(worst, endpoints=tuple(branches))


#: An ``icmp`` flow is a ping: per family, the (type, code) of its echo requests and of
#: the echo replies.
_ECHO: Final = {4: ((8, 0), (0, 0)), 6: ((128, 0), (129, 0))}

#: The ICMP error telling a path's MTU, per family: protocol, (type, code), name.
PMTU_ERRORS: dict[int, tuple[str, tuple[int, int], str]] = {
    4: ("icmp", (3, 4), "fragmentation needed (ICMP type 3 code 4)"),
    6: ("icmpv6", (2, 0), "Packet Too Big (ICMPv6 type 2)"),
}


def pmtu_error_steps(state: NodeState, tr: Trace) -> tuple[Step, ...]:
    """The way back to the pod of the ICMP error a router beyond the node sends for the
    flow's packets too large for its link (:data:`PMTU_ERRORS`), through the node's
    prerouting, forward and postrouting chains: the error path MTU discovery needs.

    Conntrack takes it as ``related`` to the flow's connection (as a reply: ``ct
    direction reply``) and translates it back to the pod as it does the replies (of a
    flow exempted from tracking it finds no connection: ``invalid``; an error a raw rule
    exempts is not translated at all, and is lost at the node where the flow was
    masqueraded, or at the pod where a DNAT translated it: the packet it quotes names
    the endpoint, not the Service's address). It
    comes in by the interface the flow left by and leaves by the pod's. Its source, a
    router on the way, is not known: rules on it are judged on the destination's
    address. Empty where the flow does not leave the node. The node's own ICMP errors
    (its own way out the smaller) go through its output hook:
    :func:`own_pmtu_error_steps`."""
    flow, fam = tr.flow, tr.flow.family
    seen = tr.source_seen
    if seen is None or tr.egress is None or tr.ingress is None:
        return ()
    t = _Tracer(state, flow, pick=tr.branch or 0)
    untracked = _flow_untracked(tr)
    proto, icmp, _ = PMTU_ERRORS[fam]
    nat = frozenset() if untracked else frozenset(
        {"dnat"} if tr.dnat is not None else set()) | ({"snat"} if seen != flow.source else set())
    local = state.local_addresses()
    error = Packet(fam, tr.target, seen, proto, None, None, tr.egress, None,
                   "invalid" if untracked else "related", "reply", 0,
                   local, state.ipsets(), nat=nat,  # type: ignore[arg-type]
                   queues=state.queue_readers, icmp=icmp)
    error, _, dropped = t.hook(error, "prerouting", first=False, part="before-nat")
    if dropped:
        return tuple(t.steps)
    if error.ctstate == "untracked":
        # A raw rule exempted the error itself: no NAT applies to it (nf_nat_inet_fn
        # finds no connection), so it keeps the address the flow was translated to.
        error = attrs.evolve(error, nat=frozenset())
        # Nor is the packet it quotes translated back from a DNAT's endpoint to the
        # Service's address: the pod finds no socket of its own for the error.
        quoted = (tr.target, tr.target_port) != (flow.destination, flow.port)
        if seen != flow.source or quoted:
            exempt = next(s for s in reversed(t.steps) if s.code == "untracked")
            lost = (f"it stays addressed to {seen}, which the pod never sees"
                    if seen != flow.source else
                    f"the packet it quotes stays addressed to {tr.describe_target()}, not "
                    f"{endpoint_text(flow.destination, flow.port)}, and the pod takes it for "
                    "no connection of its own")
            t.add("reply", "prerouting", "drop", exempt.where,
                  f"{exempt.detail.partition(': exempts')[0]}: exempts the ICMP error from "
                  f"connection tracking, so it is not translated back to the pod: {lost}",
                  "untracked", certain=exempt.certain)
            return tuple(t.steps)
    error = attrs.evolve(error, dst=flow.source)  # conntrack translates it back
    error, _, dropped = t.hook(error, "prerouting", first=False, part="after-nat")
    if dropped:
        return tuple(t.steps)
    error = attrs.evolve(error, oif=tr.ingress)
    error, _, dropped = t.hook(error, "forward", first=False)
    if not dropped:
        t.hook(error, "postrouting", first=False)
    return tuple(t.steps)


def _flow_untracked(tr: Trace) -> bool:
    """A raw rule exempted the pod's own packets (the original direction) from connection
    tracking: an ICMP error about them finds no connection. One exempting only the replies
    leaves the connection, made by the pod's first packet, to find: the error is
    ``related`` all the same."""
    return any(s.code == "untracked" and s.direction == "original" for s in tr.steps)


def own_pmtu_error_steps(state: NodeState, tr: Trace, *,
                         after_postrouting: bool = False) -> tuple[Step, ...]:
    """The way to the pod of the ICMP error the node itself sends when the flow's packets
    are too large for its own way out (:data:`PMTU_ERRORS`; the ``path-mtu`` finding):
    made by the node (``icmp_send`` / ``icmp6_send`` from the forward path), it leaves
    through the output chains, then postrouting, never prerouting or forward.

    It is ``related`` to the flow's connection (``ct direction reply``) in every output
    chain, raw's too: the kernel gives it the connection of the packet it answers before
    the output hook (a raw ``ct state invalid drop`` or ``notrack`` leaves it be; the
    kernel's counters in a lab); the error of a flow conntrack does not track has no
    entry (``invalid``). nat chains never see it. It goes from the
    node's address towards the pod (the one source address selection picks on the
    pod's interface) out of the interface the pod's packets came in by. ``tr`` is the
    branch whose way out is the smaller.

    ``after_postrouting``: the packet met the smaller MTU only once through postrouting
    (IPv6, a route's ``mtu`` not locked: ``ip6_forward`` lets it through up to the
    device's MTU, ``ip6_fragment`` answers). A masquerade had translated it then: the
    error goes to the address the pod was given, from that address (the node's own,
    source address selection's first rule), out by ``lo``; the NAT core's point of the
    output hook translates its destination back to the pod, every output chain still
    seeing ``lo`` as its way out, and postrouting the pod's interface (a lab's counters
    on rules matching each candidate). An address not the node's (``snat to`` one the
    upstream routes back): the error goes to it from the node's address on the pods'
    interface, out by the device of its route, until that point; no route, no error."""
    flow, fam = tr.flow, tr.flow.family
    if tr.ingress is None or tr.source_seen is None:
        return ()
    t = _Tracer(state, flow, pick=tr.branch or 0)
    proto, icmp, _ = PMTU_ERRORS[fam]
    untracked = _flow_untracked(tr)
    nat = frozenset() if untracked else frozenset(
        {"dnat"} if tr.dnat is not None else set()) | (
        {"snat"} if tr.source_seen != flow.source else set())
    node = masquerade_source(state.addresses, tr.ingress, flow.source, flow.source)
    if node is None:  # a node without an address sends no error
        return ()
    local = state.local_addresses()
    error = Packet(fam, node, flow.source, proto, None, None, None,
                   tr.ingress, "invalid" if untracked else "related", "reply", 0,
                   local, state.ipsets(), nat=nat,  # type: ignore[arg-type]
                   queues=state.queue_readers, icmp=icmp)
    seen = tr.source_seen
    if after_postrouting and "snat" in nat:
        if seen in local:
            error = attrs.evolve(error, src=seen, dst=seen, oif="lo")
        else:  # an address not the node's (snat to): its route's device, from the pods' side
            way = lookup(state.routes[fam], state.rules[fam], seen, src=node, iif="lo",
                         proto=error.proto_number,
                         ignore_linkdown=state.linkdown_ignored(fam))
            if not way.ok or way.route is None or way.route.device is None:
                return ()  # no route to it: the kernel sends no error
            error = attrs.evolve(error, dst=seen, oif=way.route.device)
        error, _, dropped = t.hook(error, "output", first=False, part="before-nat",
                                   attached=True)
        if dropped:
            return tuple(t.steps)
        error = attrs.evolve(error, dst=flow.source)  # conntrack translates it back
        error, _, dropped = t.hook(error, "output", first=False, part="after-nat",
                                   attached=True)
        error = attrs.evolve(error, oif=tr.ingress)  # routed again, to the pod
    else:
        error, _, dropped = t.hook(error, "output", first=False, attached=not untracked)
    if not dropped:
        t.hook(error, "postrouting", first=False)
    return tuple(t.steps)


def _trace_branch(state: NodeState, flow: Flow, upstream_routes_pods: bool,
                  pick: int, *, other_order: bool = False) -> Trace:
    """One trace, following random branch ``pick`` wherever a rule picks at random.

    Where chains of different tables run at one priority, the flow is traced in the
    other order too (``other_order``): the kernel runs the one registered last first,
    which nftables' handles, counted per table, do not tell across tables. When that
    order ends otherwise, the verdict is unknown; when the destination would only see
    another source, a step says so.
    """
    t = _Tracer(state, flow, pick=pick, other_order=other_order)
    found: dict[str, Any] = {}
    unread = state.unread_rulesets()
    if unread:  # empty is not what they hold: whatever the trace finds may be wrong
        t.add("original", "capture", "unknown", ", ".join(sorted(unread)),
              "could not be read: the rules they hold are not traced", "capture-failed",
              certain=False)
    verdict = _original(t, found)
    if verdict is None and "source_seen" in found:
        verdict = _reply(t, found, upstream_routes_pods)
        if verdict is None and not any(s.outcome == "drop" for s in t.steps):
            _onward(t, found)
    if verdict is None:
        blocked = any(s.outcome == "drop" for s in t.steps)
        if t.uncertain:
            verdict = Verdict.UNKNOWN
        else:
            verdict = Verdict.BLOCKED if blocked else Verdict.REACHES
    if t.randoms:
        found["branch"] = pick
        found["more_branches"] = t.random_taken
    if t.ties and not other_order:
        other = _trace_branch(state, flow, upstream_routes_pods, pick, other_order=True)
        verdict = _other_order(t, verdict, found.get("source_seen"), other)
    return Trace(flow, tuple(t.steps), verdict, names=_kept_whole(state), **found)


def _kept_whole(state: NodeState) -> frozenset[str]:
    """The devices of ``state`` (:attr:`Trace.names`) whose names :func:`shown` would split."""
    return frozenset(n for n in state.devices if _SURROGATE.search(n) and _CLAUSE.search(n))


def _other_order(t: _Tracer, verdict: Verdict, seen: IPAddress | None,
                 other: Trace) -> Verdict:
    """Say what the other order of the tied chains (:func:`_unordered`) changes: the
    verdict (it becomes unknown) or only the source the destination sees."""
    if other.verdict is verdict and other.source_seen == seen:
        return verdict
    hook = next(iter(t.ties))[0]
    tied = "; ".join(f"{', '.join(wheres)} on {on} at priority {priority}"
                     for (on, priority), wheres in t.ties.items())
    core = any("the NAT core" in wheres[-1] for wheres in t.ties.values())
    why = (f"the kernel runs the chain registered last first ({tied}), and the capture "
           "cannot tell which that is (nftables counts handles per table"
           + ("; a nat chain since deleted may have registered the NAT core" if core else "")
           + ")")
    if other.verdict is not verdict:
        t.add("original", hook, "unknown", "chain order",
              f"{why}: the other way round the verdict is {other.verdict.value}"
              + (f" (at {other.blocked_at.where}: {other.blocked_at.detail})"
                 if other.blocked_at is not None else ""), "chain-order", certain=False)
        return Verdict.UNKNOWN
    t.add("original", hook, "info", "chain order",
          f"{why}: the other way round the destination sees {other.source_seen}",
          "chain-order")
    return verdict


def _ingress(t: _Tracer) -> str | None:
    """The interface the pod's packets come from: where the node routes the pod address."""
    flow, fam = t.flow, t.flow.family
    pod_route = lookup(t.state.routes[fam], t.state.rules[fam], flow.source,
                       ignore_linkdown=t.state.linkdown_ignored(fam))
    iif = flow.in_interface or (pod_route.route.device if pod_route.route else None)
    if pod_route.type == "local":
        t.add("original", "ingress", "unknown", "routing",
              f"{flow.source} is an address of this node, not a pod's: only forwarded "
              "flows are traced", "source-is-local")
        return None
    if iif is None:
        t.add("original", "ingress", "unknown", "routing",
              f"{flow.source} is not routed to any interface of this node "
              f"({pod_route.describe()}): is it a pod of this node?", "source-unknown")
        return None
    t.add("original", "ingress", "info", iif,
          f"{flow.source} arrives on {iif} ({pod_route.describe()})")
    receiver = t.receiver(iif)
    if receiver != iif:  # the IP stack (its hooks, routing, forwarding) sees the master
        t.add("original", "ingress", "info", receiver,
              f"{iif} is a port of {receiver}: the node receives the packet on {receiver}")
    return receiver


def _original(t: _Tracer, found: dict[str, Any]) -> Verdict | None:  # noqa: PLR0911 - a stage each
    """The flow's first packet, from the pod to where it leaves the node.

    Fills ``found``; returns a verdict only when the trace cannot go on (else None).
    """
    flow, fam = t.flow, t.flow.family
    iif = _ingress(t)
    if iif is None:
        return Verdict.UNKNOWN
    found["ingress"] = iif
    proto = "icmpv6" if flow.protocol == "icmp" and fam == 6 else flow.protocol
    packet = Packet(fam, flow.source, flow.destination, proto, flow.source_port, flow.port,
                    iif, None, "new", "original", 0, t.state.local_addresses(),  # type: ignore[arg-type]
                    t.state.ipsets(), queues=t.state.queue_readers,
                    tcp_flags=SYN if proto == "tcp" else None,
                    icmp=_ECHO[fam][0] if flow.protocol == "icmp" else None)
    packet, dnat, dropped = t.hook(packet, "prerouting", first=True, at_nat=_translate_dnat)
    if dropped:
        return None
    if dnat is not None and dnat.nat is not None and dnat.nat.kind == "dnat":
        action = found["dnat"] = dnat.nat
        packet = attrs.evolve(packet, dst=action.address or packet.dst,
                              dport=action.port if action.port is not None else packet.dport)
        t.add("original", "dnat", "info", "nat prerouting",
              f"the destination is now {endpoint_text(packet.dst, packet.dport)}"
              + (" (a Service endpoint picked at random: each is traced)"
                 if t.randoms else ""))
    route = t.routing(packet)
    t.route_mark = packet.mark
    multipath = ""
    if route.route is not None and route.route.nexthops:
        # The kernel hashes each flow onto one nexthop: each is a branch, all traced.
        hops = len(route.route.nexthops)
        index = min(t.pick, hops - 1)
        t.randoms += 1
        t.random_taken = t.random_taken or t.pick < hops - 1
        multipath = (f"; multipath: nexthop {index + 1} of {hops} followed (the kernel picks "
                     "one per flow by its hash: each is traced)")
        route = attrs.evolve(route, route=route.route.via(index))
    found["route"] = route
    where = f"table {table_name(route.route.table)}" if route.route else "routing"
    if route.type == "unknown" or (route.type == "unicast" and route.route is not None
                                   and route.route.device is None):
        t.add("original", "routing", "unknown", where, route.describe(), "route-unknown",
              certain=False)
        return None
    if route.type == "local":
        t.add("original", "routing", "info", where,
              f"{route.describe()}: delivered to the node itself (input chains not traced)"
              + _ipvs_note(t.state, packet), "destination-is-local")
        return Verdict.UNKNOWN
    if not route.ok or route.route is None or route.route.device is None:
        code = "no-route" if route.type == "none" else "route-rejects"
        t.add("original", "routing", "drop", where, route.describe(), code)
        return None
    t.add("original", "routing", "pass", where, route.describe() + multipath)
    oif = found["egress"] = route.route.device
    found["gateway"] = route.route.gateway
    if not t.forwarding(packet) or not t.rp_filter(packet, oif):
        return None
    # A host route to the destination itself is a pod's own (Calico's per-pod /32 on its
    # cali interface, which holds no address): the pod answers there.
    pods_own = route.route.destination.prefixlen == route.route.destination.max_prefixlen
    if _pod_facing(oif, iif) and route.route.gateway is None and not pods_own and not any(
            a.device == oif and packet.dst in a.network for a in t.state.addresses):
        t.add("original", "routing", "drop", f"dev {oif}",
              f"{route.describe()}: sends {packet.dst} back towards pods on {oif}, "
              "where nothing answers for it", "route-to-pods")
        return None
    packet = attrs.evolve(packet, oif=oif)
    packet, _, dropped = t.hook(packet, "forward", first=True)
    if dropped:
        return None
    packet, natted, dropped = t.hook(packet, "postrouting", first=True,
                                     at_nat=_snat_by(t, oif, route.route.gateway))
    if dropped or not t.link_up(oif):  # the packet is handed to the device last
        return None
    seen = _source_seen(t, flow, natted, oif, route.route.gateway or packet.dst,
                        destination=packet.dst)
    if seen is None:
        return None
    found["source_seen"] = seen
    found["nat"] = natted.nat if natted else None
    nexthop = f"via {route.route.gateway} " if route.route.gateway else ""
    t.add("original", "egress", "info", oif,
          f"leaves {nexthop}dev {oif}; the destination sees {seen}")
    return None


def _reply(  # noqa: PLR0911 - one return per stage that can stop the reply
        t: _Tracer, found: dict[str, Any], upstream_routes_pods: bool) -> Verdict | None:
    """The reply, addressed to what the destination saw, back to the pod."""
    flow, fam = t.flow, t.flow.family
    seen, iif, oif = found["source_seen"], found["ingress"], found["egress"]
    local = t.state.local_addresses()
    to_pod = _pod_facing(oif, iif)  # a Service endpoint on this node's pod network
    if seen == flow.source and not upstream_routes_pods and not to_pod:
        t.add("reply", "return", "drop", "beyond the node",
              f"the destination answers {seen}, the pod's own address, which the network "
              "beyond this node does not route back to it (the source was not translated)",
              "not-translated")
        return None
    pods = (t.state.pod_network(flow.source, iif)
            if not upstream_routes_pods and not to_pod else None)
    # (Not the egress interface's own address in a pod CIDR broad enough to hold it, fd00::/8
    # beside the uplink's fd01:1::5: the network beyond answers it on that link.)
    if seen != flow.source and pods is not None and seen in pods and not any(
            a.device == oif and a.address == seen for a in t.state.addresses):
        t.add("reply", "return", "drop", "beyond the node",
              f"the destination answers {seen}, the address the source was translated to, "
              f"which lies in the pods' network {pods}: the network beyond this node routes "
              "it as it routes the pods' addresses, not back here (an IPv6 masquerade takes "
              "the node's address nearest the destination, a pod-facing interface's when "
              "the uplink holds no global address)", "masquerade-pod-address")
        return None
    if seen != flow.source and seen not in local:
        t.add("reply", "return", "info", "beyond the node",
              f"{seen} is not an address of this node: the reply comes back only if the "
              "network routes it here", certain=False)
    # The network routes the node's address to the link that holds it; anything else
    # is assumed to come back the way the request left. ``lo`` is no link: an address
    # there (an unnumbered uplink's, which masquerade borrows) is reached through it.
    back_in = next((a.device for a in t.state.addresses
                    if a.address == seen and a.device != "lo"), oif)
    if back_in != oif:
        t.add("reply", "return", "info", back_in,
              f"the reply to {seen} comes back on {back_in}, the interface that holds it")
    proto = "icmpv6" if flow.protocol == "icmp" and fam == 6 else flow.protocol
    # The endpoint answers (a DNAT's source is translated back only in postrouting).
    dnat: NatAction | None = found.get("dnat")
    answerer = dnat.address if dnat is not None and dnat.address is not None else flow.destination
    port = dnat.port if dnat is not None and dnat.port is not None else flow.port
    # A request conntrack did not track has no entry for its reply to be ``established`` in.
    # The connection's translation, as conntrack's SNAT and DNAT states tell it.
    nat = frozenset() if t.untracked else frozenset(
        {"dnat"} if dnat is not None else set()) | ({"snat"} if seen != flow.source else set())
    reply = Packet(fam, answerer, seen, proto, port, flow.source_port, back_in, None,
                   "new" if t.untracked else "established", "reply", 0, local,  # type: ignore[arg-type]
                   t.state.ipsets(), nat=nat, queues=t.state.queue_readers,
                   tcp_flags=SYN_ACK if proto == "tcp" else None,
                   icmp=_ECHO[fam][1] if flow.protocol == "icmp" else None)
    reply, _, dropped = t.hook(reply, "prerouting", first=False, part="before-nat")
    if dropped:
        return None
    # Untracked, not translated back: to the pod (masqueraded), or from the DNAT's
    # endpoint to the Service's address (it reaches the pod from an address and port no
    # socket of the pod is connected to).
    if reply.ctstate == "untracked" and (
            seen != flow.source or (answerer, port) != (flow.destination, flow.port)):
        t.add("reply", "prerouting", "drop", "conntrack",
              f"the reply to {seen} is exempted from connection tracking, so it is not "
              f"translated back to {flow.source}: the node takes it for itself"
              if seen != flow.source else
              f"the reply from {endpoint_text(answerer, port)} is exempted from connection "
              "tracking, so it is not translated back to come from "
              f"{endpoint_text(flow.destination, flow.port)}: {flow.source} takes it for no "
              "connection of its own (a TCP reset, a datagram dropped)", "reply-untracked")
        return None
    reply = attrs.evolve(reply, dst=flow.source)  # conntrack translates the reply back
    reply, _, dropped = t.hook(reply, "prerouting", first=False, part="after-nat")
    if dropped:
        return None
    back = found["reply_route"] = t.routing(reply)
    where = f"table {table_name(back.route.table)}" if back.route else "routing"
    if not back.ok or back.route is None or back.type == "local":
        certain = back.type != "unknown"
        t.add("reply", "routing", "drop" if certain else "unknown", where, back.describe(),
              "reply-no-route", certain=certain)
        return None
    if back.route.device != iif:
        t.add("reply", "routing", "drop", where,
              f"{back.describe()}: the reply to {flow.source} leaves by "
              f"{back.route.device}, not {iif} where the pod is", "reply-misrouted")
        return None
    t.add("reply", "routing", "pass", where, back.describe())
    if not t.forwarding(reply) or not t.rp_filter(reply, iif):
        return None
    t.rp_filter_elsewhere(reply, iif, answerer, found["route"].route)
    reply = attrs.evolve(reply, oif=iif)
    reply, _, dropped = t.hook(reply, "forward", first=False)
    if dropped:
        return None

    def undo_dnat(packet: Packet, _natted: ChainResult | None) -> Packet:
        # A Service's reply takes the ClusterIP (NodePort) back as its source there.
        return attrs.evolve(packet, src=flow.destination, sport=flow.port) if dnat else packet
    reply, _, dropped = t.hook(reply, "postrouting", first=False, at_nat=undo_dnat)
    if dropped:
        return None
    t.add("reply", "delivery", "pass", iif, f"the reply reaches {flow.source}")
    return None


def _run_position(chain: BaseChain, *, other: bool = False,
                  after_core: bool = False) -> tuple[int, ...]:
    """Where ``chain`` runs on its hook: a nat chain at the NAT core's point (after the
    chains of that priority whose registration the capture shows), ordered among the
    nat chains by its own priority and registration; any other chain by its own.
    ``other``: at equal priority, the other order of tables (:attr:`BaseChain.other_run_key`).
    ``after_core``: a chain at exactly the NAT core's priority runs after it (registered
    before it, :func:`_core_order`)."""
    key = chain.other_run_key if other else chain.run_key
    core = _NAT_CORE.get(chain.hook)
    if chain.kind == "nat" and core is not None:
        return (core, 1, 0, 0, *key)
    if after_core and _at_core(chain):
        return (key[0], 2, *key[1:])
    return key


def _at_core(chain: BaseChain) -> bool:
    """``chain`` is no nat chain and runs at exactly the NAT core's priority of its hook
    (``type filter hook postrouting priority srcnat``)."""
    return chain.kind != "nat" and _NAT_CORE.get(chain.hook) == chain.priority


def _core_order(chains: Iterable[BaseChain], family: int, *, legacy_nat: bool = False
                ) -> Literal["before", "after", "unknown"]:
    """Where the chains at exactly the NAT core's priority run, for ``family``: the core's
    hooks are registered with the family's first nat chain (``nf_nat_register_fn``, all
    of its hooks at once, while any nat chain of the family is left), and of two hooks at
    one priority the later registered runs first. With an iptables-legacy nat table
    (``legacy_nat``, rules or not; taken as the oldest, :attr:`BaseChain.run_key`), the
    core is older than any nftables chain: they run ``before`` it; with only a fix's
    planned nat chain, newer than any: ``after``; otherwise the capture cannot tell (a
    nat chain made before or after the filter chain, or one deleted since, registered
    it): ``unknown``."""
    nat = [c for c in chains if c.kind == "nat" and family in c.families]
    captured = [c for c in nat if c.order != PLANNED_ORDER]
    if legacy_nat or any(c.order is None for c in captured) or not nat:
        return "before"
    return "unknown" if captured else "after"


def _tied_with_core(hook: Hook, chains: list[BaseChain]
                    ) -> dict[tuple[str, int], tuple[str, ...]]:
    """The chains of ``hook`` at exactly the NAT core's priority (besides its nat chains),
    when the capture cannot tell whether they were registered before the core."""
    tied = tuple(c.where for c in chains if _at_core(c) and c.order is not None)
    core = _NAT_CORE.get(hook)
    if not tied or core is None:
        return {}
    return {(hook, core): (*tied, "the NAT core (the nat chains' hook, registered with "
                           "the family's first nat chain)")}


def _unordered(hook: Hook, chains: list[BaseChain]) -> dict[tuple[str, int], tuple[str, ...]]:
    """The chains of ``hook`` that run at one priority (nat chains among themselves)
    from different tables, or of unknown registration: the kernel runs the one
    registered last first, and the capture tells that only within a table."""
    groups: dict[tuple[bool, int], list[BaseChain]] = {}
    for chain in chains:
        if chain.order == PLANNED_ORDER:
            continue  # a fix's chain: registered after all of them
        nat = chain.kind == "nat" and chain.hook in _NAT_CORE
        groups.setdefault((nat, chain.priority), []).append(chain)
    return {(hook, priority): tuple(c.where for c in group)
            for (_, priority), group in groups.items()
            if len(group) > 1 and (any(c.order is None for c in group)
                                   or len({c.order[0] for c in group if c.order}) > 1)}


def _past_nat(chain: BaseChain, *, after_core: bool = False) -> bool:
    """``chain`` runs after the NAT core's point of its hook (sees translated packets);
    ``after_core``: one at exactly the core's priority does (:func:`_core_order`)."""
    core = _NAT_CORE.get(chain.hook)
    if after_core and _at_core(chain):
        return True
    return core is not None and chain.kind != "nat" and chain.run_key > (core, 1, 0, 0)


def _ipvs_note(state: NodeState, packet: Packet) -> str:
    """What IPVS does with ``packet``, delivered to the node: a virtual server of its
    address and port (kube-proxy's IPVS mode binds Services' addresses to ``kube-ipvs0``)
    takes it at the input hook and sends it on to a real server, by its own routing and
    the output and postrouting chains; "" when the capture shows none."""
    if state.ipvs is None:
        return ""
    reals = state.ipvs.get((packet.proto, packet.dst, packet.dport or 0))
    if reals is not None:
        shown = ", ".join(reals[:8]) + (f" and {len(reals) - 8} more" if len(reals) > 8 else "")
        return ("; the IPVS virtual server there (kube-proxy's IPVS mode) takes it at the "
                "input hook and sends it to one of its real servers, not traced: "
                + (shown or "none, so it stays with the node"))
    if state.ipvs_fwmarks:
        return ("; an IPVS virtual server taking packets by mark ("
                + ", ".join(f"{m:#x}" for m in sorted(state.ipvs_fwmarks))
                + ") may take it at the input hook")
    if state.ipvs_cut:
        return "; an IPVS virtual server past the part of /proc/net/ip_vs captured may take it"
    return ""


def _translate_dnat(packet: Packet, natted: ChainResult | None) -> Packet:
    """``packet`` with the destination (and port) a nat prerouting chain gave it."""
    return _dnat_to(packet, natted.nat if natted is not None else None)


def _dnat_to(packet: Packet, action: NatAction | None) -> Packet:
    """``packet`` with the destination (and port) of ``action``, a DNAT (else as it is)."""
    if action is None or action.kind != "dnat" or action.address is None:
        return packet
    return attrs.evolve(packet, dst=action.address,
                        dport=action.port if action.port is not None else packet.dport,
                        nat=packet.nat | {"dnat"})


def _snat_by(t: _Tracer, oif: str, gateway: IPAddress | None
             ) -> Callable[[Packet, ChainResult | None], Packet]:
    """The translation of the source a nat postrouting chain decided, for a packet
    leaving by ``oif`` through ``gateway`` (the hook's ``at_nat``)."""
    def snat(packet: Packet, natted: ChainResult | None) -> Packet:
        source = _translated_source(t, natted, oif, gateway or packet.dst, packet.dst)
        if source is None or source == packet.src:
            return packet
        return attrs.evolve(packet, src=source, nat=packet.nat | {"snat"})
    return snat


def _translated_source(t: _Tracer, natted: ChainResult | None, oif: str, nexthop: IPAddress,
                       destination: IPAddress) -> IPAddress | None:
    """The source a nat postrouting chain gave the packet (None: not translated, or
    masquerade found no address)."""
    action = natted.nat if natted is not None else None
    if action is None or action.kind == "dnat":
        return None
    if action.kind == "snat":
        return action.address
    return masquerade_source(t.state.addresses, oif, nexthop, destination)


def _onward(t: _Tracer, found: dict[str, Any]) -> None:
    """The connection's next packets from the pod (its ACK, its data): ``established``
    now, translated by conntrack at the NAT points without any nat chain, through the
    same prerouting, forward and postrouting chains. A rule accepting only ``NEW``
    packets from pods (or one dropping the ``SNAT`` state) lets the first packet through
    and the rest not: the connection fails all the same. Only what stops or may stop
    them is recorded (the route, forwarding and ``rp_filter`` are the first packet's,
    unless prerouting marked them otherwise: :func:`_onward_route`).
    """
    flow, fam = t.flow, t.flow.family
    seen, dnat = found["source_seen"], found.get("dnat")
    nat = frozenset() if t.untracked else frozenset(
        {"dnat"} if dnat is not None else set()) | ({"snat"} if seen != flow.source else set())
    proto = "icmpv6" if flow.protocol == "icmp" and fam == 6 else flow.protocol
    packet = Packet(fam, flow.source, flow.destination, proto, flow.source_port, flow.port,
                    found["ingress"], None, "established", "original", 0,
                    t.state.local_addresses(), t.state.ipsets(), nat=nat,  # type: ignore[arg-type]
                    queues=t.state.queue_readers, tcp_flags=ACK if proto == "tcp" else None,
                    icmp=_ECHO[fam][0] if flow.protocol == "icmp" else None)
    start, randoms, random_taken = len(t.steps), t.randoms, t.random_taken
    packet, _, dropped = t.hook(packet, "prerouting", first=False,
                                at_nat=lambda p, _: _dnat_to(p, dnat))
    oif = None if dropped else _onward_route(t, found, packet)
    if oif is not None:
        packet = attrs.evolve(packet, oif=oif)
        packet, _, dropped = t.hook(packet, "forward", first=False)
    if oif is not None and not dropped:
        t.hook(packet, "postrouting", first=False,
               at_nat=lambda p, _: attrs.evolve(p, src=seen))
    # A random branch of these chains is the first packet's (the same ``pick``).
    t.randoms, t.random_taken = randoms, random_taken
    before = {(s.where, s.detail) for s in t.steps[:start]}
    onward = [attrs.evolve(s, detail=f"the connection's next packets (established): {s.detail}")
              for s in t.steps[start:]
              if s.outcome == "drop" or (s.outcome == "unknown" and not s.certain
                                         and (s.where, s.detail) not in before)]
    t.steps[start:] = onward
    t.uncertain = any(not s.certain for s in t.steps)


def _onward_route(t: _Tracer, found: dict[str, Any], packet: Packet) -> str | None:
    """The interface the connection's next packets leave by (None: they do not leave).

    Routed as the first packet was, unless prerouting marked them otherwise (a rule that
    marks only ``new`` packets for a ``fwmark`` policy rule): they are then routed on
    their own mark, and may find no route, or leave by another interface, where the
    kernel drops a masqueraded connection's packets (``nf_nat_oif_changed``: its
    masquerade holds the interface it was made on) and kills the connection.
    """
    egress: str = found["egress"]
    if packet.mark == t.route_mark:
        return egress
    route = t.routing(packet)
    if route.route is not None and route.route.nexthops:  # the first packet's nexthop
        route = attrs.evolve(route, route=route.route.via(
            min(t.pick, len(route.route.nexthops) - 1)))
    where = f"table {table_name(route.route.table)}" if route.route else "routing"
    first = "unknown" if t.route_mark is None else hex(t.route_mark)
    mark = "unknown" if packet.mark is None else hex(packet.mark)
    why = (f"marked {mark} in prerouting where the first packet was marked {first}, they "
           f"are routed {route.describe()}")
    device = route.route.device if route.route is not None else None
    if route.type == "unknown" or (route.type == "unicast" and device is None):
        t.add("original", "routing", "unknown", where, why, "route-unknown", certain=False)
        return egress
    if not route.ok or route.type == "local" or device is None:
        t.add("original", "routing", "drop", where,
              f"{why}: they do not leave the node, though the first packet did",
              "onward-route")
        return None
    nat: NatAction | None = found.get("nat")
    if device != egress and nat is not None and nat.kind == "masquerade":
        t.add("original", "routing", "drop", where,
              f"{why}: they leave by {device}, not {egress} where the connection was "
              "masqueraded, and conntrack drops a masqueraded connection's packets that "
              "leave by another interface", "onward-route")
        return None
    # Each packet's source is validated again, with its own mark under src_valid_mark.
    if not t.rp_filter(packet, device) or (device != egress and not t.link_up(device)):
        return None
    return device


def _source_seen(t: _Tracer, flow: Flow, natted: ChainResult | None, oif: str,
                 nexthop: IPAddress, *, destination: IPAddress) -> IPAddress | None:
    if natted is None or natted.nat is None:
        t.add("original", "nat", "info", "postrouting",
              f"no rule translates the source: the destination sees {flow.source}",
              "no-nat")
        return flow.source
    if natted.nat.kind == "snat":
        return natted.nat.address
    address = _translated_source(t, natted, oif, nexthop, destination)
    if address is None:
        t.add("original", "nat", "drop", oif,
              f"masquerade finds no address on {oif}", "masquerade-no-address")
    return address


def _nat_accept(chain: BaseChain, result: ChainResult) -> str | None:
    """The rule that ends a nat chain's walk without translating (an accept, or a return
    from the base chain itself, whose policy then decides), if one did: a masquerade
    after it in that chain is skipped. None for a filter chain or the policy alone."""
    if chain.kind != "nat":
        return None
    if not result.rule.startswith("policy "):
        return result.rule
    last = result.path[-1] if result.path else ""
    name = chain.where.rsplit(" ", 1)[-1]
    if last.startswith(f"-A {name} ") and last.split()[-2:] == ["-j", "RETURN"]:
        return last  # iptables-save's text of a rule of that very chain
    if last.startswith(f"{chain.where}: ") and last.endswith(" return"):
        return last  # nftables' rule text names its chain
    return None


def _pod_facing(device: str, ingress: str) -> bool:
    """``device`` leads to pods: the pod's own interface or a CNI's."""
    return device == ingress or bool(POD_FACING.match(device))
