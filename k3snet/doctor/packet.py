"""The values the rule evaluators share: a packet, a base chain, what a chain decided.

Both readers (:mod:`k3snet.doctor.iptables` for ``iptables-save``,
:mod:`k3snet.doctor.nftables` for ``nft -j list ruleset``) turn a ruleset into
:class:`BaseChain` values, each evaluating one :class:`Packet` to a
:class:`ChainResult`. The tracer runs the base chains of a hook in priority order
without knowing which reader made them.

Matches are three-valued: ``True``, ``False`` or ``None`` (the rule cannot be
evaluated from the captured state, e.g. an ipset's members). A rule whose match is
unknown is reported, never skipped silently.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Literal

import attrs

from k3snet.doctor.ipset import IPSetMembers
from k3snet.doctor.routing import Fib
from k3snet.render.iptables.rules import XT_TTL as _XT_TTL

__all__ = [
    "ACK",
    "EPHEMERAL_PORTS",
    "MAX_RULE_VISITS",
    "PLANNED_ORDER",
    "PROTOCOLS",
    "SYN",
    "SYN_ACK",
    "TCP_FLAGS",
    "XT_MARKING",
    "XT_TTL",
    "BaseChain",
    "Budget",
    "ChainResult",
    "ChainRun",
    "Hook",
    "NatAction",
    "Packet",
    "Tri",
    "Uncertain",
    "all_of",
    "endpoint_text",
    "port_in",
    "queue_verdict",
    "trial_certain",
]

Tri = bool | None
Hook = Literal["prerouting", "forward", "output", "postrouting"]
IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

#: Protocol names and numbers the evaluators understand.
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "ipv6-icmp": 58, "sctp": 132}


#: iptables targets that go on after setting the packet's mark, which the evaluators
#: follow: ``MARK`` by its options, ``CONNMARK --restore-mark`` and ``HMARK`` to what a
#: capture cannot tell (the rest of :data:`~k3snet.render.iptables.rules.XT_CONTINUE`
#: changes nothing the doctor follows).
XT_MARKING = frozenset({"MARK", "CONNMARK", "HMARK"})

#: iptables targets that go on after setting the packet's TTL (hop limit): set to 1 or 0
#: the forwarded packet expires, at this node before the forward chains (``ip_forward``
#: drops a TTL of 1 or less) or at the next router after them (the backends' list,
#: :data:`~k3snet.render.iptables.rules.XT_TTL`).
XT_TTL = _XT_TTL


#: TCP's flag bits by name (nftables' names; iptables' are these in capitals).
TCP_FLAGS = {"fin": 0x01, "syn": 0x02, "rst": 0x04, "psh": 0x08, "ack": 0x10, "urg": 0x20,
             "ecn": 0x40, "cwr": 0x80}
#: The flags of the packets traced: the connection's first (SYN), its reply (SYN-ACK)
#: and the next ones (ACK; data adds PSH).
SYN, SYN_ACK, ACK = 0x02, 0x12, 0x10

#: Linux's default ``ip_local_port_range``: where a pod's unknown source port lies.
EPHEMERAL_PORTS = (32768, 60999)


def port_in(value: int | None, ranges: list[tuple[int, int]]) -> Tri:
    """Is port ``value`` in one of ``ranges``? None stands for an ephemeral port: known
    not to match ranges outside :data:`EPHEMERAL_PORTS`, to match ranges covering it."""
    if value is not None:
        return any(low <= value <= high for low, high in ranges)
    low_e, high_e = EPHEMERAL_PORTS
    if any(low <= low_e and high_e <= high for low, high in ranges):
        return True
    if all(high < low_e or low > high_e for low, high in ranges):
        return False
    return None


def all_of(values: list[Tri]) -> Tri:
    """Three-valued AND: False wins, then unknown, then True."""
    if any(v is False for v in values):
        return False
    if any(v is None for v in values):
        return None
    return True


@attrs.frozen
class Packet:
    """One packet as the netfilter hooks see it.

    ``mark`` is the packet mark, or None when a rule the doctor cannot follow may
    have set it. ``pick`` chooses among random branches (kube-proxy's
    ``-m statistic --mode random`` rules, nftables ``numgen random``): the n-th
    random branch whose other matches hold is taken, or the fall-through one when
    there are fewer. ``ctstate`` is conntrack's view: ``new`` for a flow's first
    packet, ``established`` for its replies, ``untracked`` once a raw rule exempted it
    (``NOTRACK``, ``CT --notrack``, nftables ``notrack``). ``local`` are the node's own
    addresses (for ``addrtype`` / ``fib daddr type local`` matches); ``ipsets`` the
    members of the ipsets the doctor knows (``ipset save``'s, Calico's pool sets).
    ``nat`` is what conntrack says its connection's translation is (``--ctstate
    SNAT``/``DNAT``): ``dnat`` once its destination was translated, ``snat`` once its
    source was, for the rest of the connection's packets, replies included. ``fib`` is
    the node's routing of the packet's family, for what looks a route up (nftables
    ``fib``, iptables ``-m rpfilter``; None: not known, those rules are unknown).
    ``tcp_flags`` are a TCP packet's flag bits (:data:`TCP_FLAGS`; None: not TCP).
    ``bridged``: the packet as a bridge-family chain sees it, on a port of the bridge
    the capture does not name, conntrack's view there depending on ``br_netfilter``:
    interface and ``ct`` matches are unknown. ``queues`` are the NFQUEUE queues a program
    reads (None: not captured; :func:`queue_verdict`). ``icmp`` is an ICMP (ICMPv6)
    packet's (type, code) (None: not known, matches on them are unknown); ``ctstate``
    ``related`` is an ICMP error conntrack ties to a connection it quotes.
    """

    family: Literal[4, 6]
    src: IPAddress = attrs.field(converter=ip_address)
    dst: IPAddress = attrs.field(converter=ip_address)
    proto: str
    sport: int | None
    dport: int | None
    iif: str | None
    oif: str | None
    ctstate: Literal["new", "established", "related", "invalid", "untracked"] = "new"
    direction: Literal["original", "reply"] = "original"
    mark: int | None = 0
    local: frozenset[IPAddress] = frozenset()
    ipsets: Mapping[str, IPSetMembers] = attrs.field(factory=dict)
    pick: int = 0
    nat: frozenset[str] = frozenset()
    fib: Fib | None = attrs.field(default=None, eq=False, repr=False)
    tcp_flags: int | None = None
    bridged: bool = False
    queues: frozenset[int] | None = None
    icmp: tuple[int, int] | None = None

    @property
    def proto_number(self) -> int:
        """The IP protocol number (``tcp`` -> 6)."""
        return PROTOCOLS.get(self.proto, -1)


@attrs.frozen
class NatAction:
    """A translation: ``masquerade`` (the source, to the outgoing interface's address),
    ``snat`` (the source, to ``address``) or ``dnat`` (the destination, to
    ``address`` and ``port``; None keeps the flow's port)."""

    kind: Literal["masquerade", "snat", "dnat"]
    address: IPAddress | None = None
    port: int | None = None

    def describe(self) -> str:
        """``masquerade``, ``snat to ADDR`` or ``dnat to ADDR[:PORT]``."""
        if self.kind == "masquerade":
            return "masquerade"
        if self.kind == "snat":
            return f"snat to {self.address}"
        return f"dnat to {endpoint_text(self.address, self.port)}"


def endpoint_text(address: IPAddress | None, port: int | None) -> str:
    """``ADDR:PORT``, ``[V6]:PORT`` or ``ADDR``."""
    if port is None:
        return str(address)
    return f"[{address}]:{port}" if address is not None and address.version == 6 else (
        f"{address}:{port}")


def queue_verdict(readers: frozenset[int] | None, numbers: range | None,
                  bypass: bool | None) -> tuple[Literal["accept", "drop"] | None, str, str]:
    """What a queue target (``-j NFQUEUE``, ``-j QUEUE``, nft's ``queue``) does with a packet:
    the verdict when it is certain (None otherwise), why, and its effect when not.

    ``readers`` are the queues a program has bound (None: not captured); ``numbers`` the
    queues the rule spreads packets over (``--queue-num``, ``--queue-balance``; None: not
    known); ``bypass`` whether ``--queue-bypass`` (nft's ``bypass``) is set (None: not
    known). A queue no program reads drops the packet (``nf_queue``: no instance), under
    bypass it is accepted by this chain as an accept would (the next base chain goes on);
    a read queue's program decides.
    """
    unread: Literal["accept", "drop"] = "accept" if bypass else "drop"
    if readers is None or numbers is None or bypass is None:
        why = ("a program reading the queue decides; with none the kernel drops the packet"
               + (" (unless --queue-bypass, not listed)" if bypass is None else "")
               if not bypass else "a program reading the queue decides; with none it goes on")
        if readers is not None and not readers:
            why += "; the capture shows no program reading any queue"
        effect = "drop" if not bypass and not readers else "unknown"
        return None, why, effect
    read = [n for n in numbers if n in readers]
    if not read:
        shown = (f"queue {numbers.start}" if len(numbers) == 1
                 else f"queues {numbers.start}-{numbers[-1]}")
        return unread, (f"no program reads {shown}: the kernel "
                        + ("accepts the packet in this chain (bypass)" if bypass
                           else "drops the packet")), unread
    return None, f"a program reading queue {read[0]} decides", "unknown"


@attrs.frozen
class Uncertain:
    """A rule that could not be evaluated, and what it would do if it matched.

    ``effect`` is ``accept``, ``drop``, ``nat``, ``none`` (nothing decisive: a
    jump to a chain that returns) or ``unknown``.
    """

    rule: str
    reason: str
    effect: str


def trial_certain(result: ChainResult | None, unknowns: Sequence[Uncertain]) -> bool:
    """Whether a trial run (what an unknown rule's jump would do) is known: none of the
    unknown rules it met could have changed its outcome (``result``, or falling off the
    chain's end when None)."""
    outcome = result.verdict if result is not None else "none"
    return all(u.effect in ("none", outcome) for u in unknowns)


@attrs.frozen
class ChainResult:
    """What one base chain did to a packet.

    ``verdict`` is ``accept`` (a rule accepted, or the policy), ``drop`` (a rule
    dropped or rejected, or the policy) or ``nat`` (a rule translated the source
    or the destination: ``nat``). ``rule`` is the text of the deciding rule
    (``policy DROP`` when the policy decided). ``path`` lists the rules that
    matched on the way (jumps, marks), ``unknowns`` every rule that could not be
    evaluated. ``randoms`` counts the random branches met (see :attr:`Packet.pick`)
    and ``random_taken`` says whether the packet took one of them rather than the
    fall-through: while it did, another ``pick`` leads elsewhere. ``untracked`` is
    the rule that exempted the packet from connection tracking in this chain, if any.
    ``clamps`` are the rules that clamped a TCP SYN's MSS on the way (``-j TCPMSS``, nft's
    ``tcp option maxseg size set``), each with the MSS it sets (None: the route's MTU
    less the headers, ``--clamp-mss-to-pmtu`` / ``rt mtu``).
    """

    verdict: Literal["accept", "drop", "nat"]
    rule: str
    nat: NatAction | None = None
    mark: int | None = 0
    path: tuple[str, ...] = ()
    unknowns: tuple[Uncertain, ...] = ()
    randoms: int = 0
    random_taken: bool = False
    untracked: str | None = None
    clamps: tuple[tuple[str, int | None], ...] = ()

    @property
    def certain(self) -> bool:
        """No unknown rule could have changed the verdict."""
        return all(u.effect in ("none", self.verdict) for u in self.unknowns)


PLANNED_ORDER = (2**31, 0)
"""The :attr:`BaseChain.order` of a chain a fix would create: registered after every
chain of the capture (its order is known, whatever order the others may have)."""

MAX_RULE_VISITS = 100_000
"""The rules one walk through a base chain (its jumps and the trials of what unknown
rules would do included) evaluates at most: a ruleset of 50 000 rules is walked in
far fewer, while chains that call each other repeatedly (each calling the next
twice, 40 deep, is a few hundred bytes) would take 2**40."""


@attrs.define
class Budget:
    """What is left of :data:`MAX_RULE_VISITS` for one walk, shared with its trials."""

    #: Read when the walk starts (not when the module was imported): a test of the
    #: budget's stop sets a smaller one rather than spending 100 000 evaluations a walk.
    left: int = attrs.field(factory=lambda: MAX_RULE_VISITS)

    def spend(self) -> bool:
        """Take one rule evaluation; False once none is left (the walk must stop)."""
        self.left -= 1
        return self.left >= 0


@attrs.define
class ChainRun:
    """The mutable state of one evaluation through a base chain, shared by the
    iptables and nftables evaluators: the packet (its mark changes) and the record
    that becomes its :class:`ChainResult`."""

    packet: Packet
    path: list[str] = attrs.field(factory=list)
    unknowns: list[Uncertain] = attrs.field(factory=list)
    randoms: int = 0
    random_taken: bool = False
    budget: Budget = attrs.field(factory=Budget, kw_only=True)
    stopped: bool = attrs.field(default=False, kw_only=True)
    untracked: str | None = attrs.field(default=None, kw_only=True)
    clamps: list[tuple[str, int | None]] = attrs.field(factory=list, kw_only=True)

    def visit(self, where: str) -> bool:
        """Count one rule evaluation; False when the walk's budget is spent, which is
        recorded (once) as an unknown that could change anything."""
        if self.budget.spend():
            return True
        if not self.stopped:  # a trial's record is not the walk's: each says it once
            self.stopped = True
            self.unknowns.append(Uncertain(
                where, f"the walk through the chains' jumps takes more than "
                f"{MAX_RULE_VISITS} rule evaluations (chains calling each other "
                "repeatedly); it stopped there", "unknown"))
        return False

    def result(self, verdict: Literal["accept", "drop", "nat"], rule: str,
               nat: NatAction | None = None) -> ChainResult:
        """The chain's result: ``verdict`` decided by ``rule``, with what was recorded
        (each unknown once: a rule met again through chains that call each other, or
        jumps nesting too deep at each turn of a loop, is one step, not thousands)."""
        return ChainResult(verdict, rule, nat=nat, mark=self.packet.mark, path=tuple(self.path),
                           unknowns=tuple(dict.fromkeys(self.unknowns)), randoms=self.randoms,
                           random_taken=self.random_taken,
                           untracked=self.untracked, clamps=tuple(self.clamps))

    def clamp(self, rule: str, mss: int | None) -> None:
        """``rule`` clamps TCP's MSS to ``mss`` (None: to the route's MTU less the headers)
        and goes on: recorded for a TCP packet with SYN set (a SYN, a SYN-ACK), the only
        ones carrying the option (xt_TCPMSS, nft_exthdr leave the others be)."""
        flags = self.packet.tcp_flags
        if self.packet.proto == "tcp" and flags is not None and flags & SYN:
            self.clamps.append((rule, mss))
        self.path.append(rule)

    def untrack(self, rule: str) -> None:
        """``rule`` exempts the packet from connection tracking (a raw ``NOTRACK``): the
        rules after it see ``ctstate untracked`` (the tracer keeps it only from a chain
        that runs before conntrack, as the kernel does)."""
        if self.untracked is None and self.packet.ctstate != "untracked":
            self.untracked = rule
        self.packet = attrs.evolve(self.packet, ctstate="untracked")
        self.path.append(rule)


@attrs.frozen
class BaseChain:
    """A chain attached to a netfilter hook: where it is, and how to run a packet through it.

    ``kind`` is ``filter`` or ``nat`` (nat chains only see a flow's first packet and
    stop mattering once one of them translated it). ``where`` names it for humans:
    ``iptables-nft filter FORWARD``, ``nft inet firewalld filter_FORWARD``.
    ``order`` is when the chain was registered, as far as the capture says (its
    nftables table and chain handles; None for iptables-legacy): of two chains at
    the same priority the kernel runs the later registered one first. A chain of
    unknown order is taken as the oldest (x_tables tables are set up once, when
    first used; nftables tables come and go with the programs that load them).
    """

    where: str
    hook: Hook
    priority: int
    kind: Literal["filter", "nat"]
    families: frozenset[int]
    evaluate: Callable[[Packet], ChainResult] = attrs.field(eq=False, repr=False)
    order: tuple[int, int] | None = None
    empty: bool = False
    """The chain has no rule and accepts: it decides nothing and is not run, but it is
    registered (a family's first nat chain registered the NAT core)."""

    @property
    def run_key(self) -> tuple[int, int, int, int]:
        """Sort key of the kernel's order on a hook: priority, then (at equal priority)
        the later registered first; chains of unknown order after the others."""
        if self.order is None:
            return (self.priority, 1, 0, 0)
        return (self.priority, 0, -self.order[0], -self.order[1])

    @property
    def other_run_key(self) -> tuple[int, int, int, int]:
        """The other order :attr:`run_key` cannot rule out: at equal priority the tables
        the other way round (chains of unknown order first, then the oldest table's),
        each table's chains as before. Handles are counted per table, so a chain added
        to an older table after a newer table was made runs before the newer table's
        chains, and nothing in the capture tells."""
        if self.order is None:
            return (self.priority, 0, 0, 0)
        if self.order == PLANNED_ORDER:
            return (self.priority, -1, 0, 0)
        return (self.priority, 1, self.order[0], -self.order[1])
