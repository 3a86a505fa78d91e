"""Read ``iptables-save`` output (any program's rules) and evaluate packets through it.

:func:`parse_save` turns the text into tables of chains of :class:`Rule` values;
:func:`base_chains` gives the chains netfilter hooks call (``FORWARD``,
``POSTROUTING``, ``PREROUTING``; ``OUTPUT``, for the node's own ICMP errors) as
:class:`~k3snet.doctor.packet.BaseChain` values at their fixed priorities. Matches
understood: ``-s``/``-d``/``-i``/``-o``/``-p``
(with ``!``, ``+`` wildcards), ``--sport``/``--dport``, ``--syn``/``--tcp-flags``, ``multiport``,
``conntrack``/``state`` ``--ctstate``, ``conntrack`` ``--ctdir``, ``comment``, ``mark``,
``addrtype``, ``statistic --mode random`` (a random branch: :attr:`Packet.pick` says which one
is followed), ``rpfilter``. Targets: ``ACCEPT``, ``DROP``, ``REJECT``, ``RETURN``, jumps, gotos,
``MASQUERADE``, ``SNAT``, ``DNAT``, ``MARK``, and the non-terminating ones (``LOG``
...). Anything else makes the rule *unknown*, reported with its text.
"""

from __future__ import annotations

import itertools
import re
import shlex
from collections.abc import Callable, Collection
from ipaddress import ip_address, ip_network
from typing import Final, Literal

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
    Tri,
    Uncertain,
    all_of,
    port_in,
    queue_verdict,
    trial_certain,
)
from k3snet.render.iptables.rules import XT_CONTINUE, save_lines, ttl_expires

__all__ = ["Chain", "Rule", "Table", "base_chains", "parse_save"]

Matcher = Callable[[Packet], Tri]

# (table, chain) -> (hook, priority, kind), as x_tables and iptables-nft register them.
_HOOKS: Final[dict[tuple[str, str], tuple[Hook, int, Literal["filter", "nat"]]]] = {
    ("raw", "PREROUTING"): ("prerouting", -300, "filter"),
    ("mangle", "PREROUTING"): ("prerouting", -150, "filter"),
    ("nat", "PREROUTING"): ("prerouting", -100, "nat"),
    ("mangle", "FORWARD"): ("forward", -150, "filter"),
    ("filter", "FORWARD"): ("forward", 0, "filter"),
    ("security", "FORWARD"): ("forward", 50, "filter"),
    ("raw", "OUTPUT"): ("output", -300, "filter"),
    ("mangle", "OUTPUT"): ("output", -150, "filter"),
    ("nat", "OUTPUT"): ("output", -100, "nat"),
    ("filter", "OUTPUT"): ("output", 0, "filter"),
    ("security", "OUTPUT"): ("output", 50, "filter"),
    ("mangle", "POSTROUTING"): ("postrouting", -150, "filter"),
    ("nat", "POSTROUTING"): ("postrouting", 100, "nat"),
}
# Targets that do not end the chain and change nothing else the doctor follows (the
# backends' list; -j CT without --notrack gives a zone or a helper).
_CONTINUE: Final = (XT_CONTINUE - XT_MARKING) | {"CT", "NOTRACK"}
# A program reading the queue decides; with none the kernel drops (--queue-bypass: goes on).
_QUEUES: Final = frozenset({"NFQUEUE", "QUEUE"})
_MAX_DEPTH = 64
_CT_STATES = {"NEW": "new", "ESTABLISHED": "established", "RELATED": "related",
              "INVALID": "invalid", "UNTRACKED": "untracked", "SNAT": "snat", "DNAT": "dnat"}


@attrs.frozen
class Rule:
    """One ``-A`` line: its text, matches, and target (``target_args`` are its options)."""

    text: str
    matches: tuple[tuple[str, Matcher], ...]
    target: str | None
    target_args: tuple[str, ...] = ()
    goto: bool = False
    problem: str | None = None

    @property
    def random(self) -> bool:
        """The rule is a random branch (``-m statistic --mode random``)."""
        return any(m is _random for _, m in self.matches)

    def match(self, packet: Packet) -> tuple[Tri, str]:
        """The rule's match on ``packet`` (a random branch's other matches) and, when
        unknown, why."""
        if self.problem is not None:
            return None, self.problem
        results = [(name, m(packet)) for name, m in self.matches if m is not _random]
        value = all_of([r for _, r in results])
        why = ", ".join(name for name, r in results if r is None)
        return value, why


@attrs.frozen
class Chain:
    """A chain: its policy (None for a user chain) and rules."""

    name: str
    policy: str | None
    rules: list[Rule] = attrs.field(factory=list)


@attrs.frozen
class Table:
    """One ``*table`` section."""

    name: str
    chains: dict[str, Chain] = attrs.field(factory=dict)


_COUNTERS: Final = re.compile(r"\[\d+:\d+\]\s+")


class _UnparsedError(ValueError):
    pass


def parse_save(text: str) -> dict[str, Table]:
    """Parse ``iptables-save`` output into ``{table name: Table}``.

    Lines it cannot parse become rules with a ``problem`` (evaluated as unknown), so
    nothing is dropped silently.
    """
    tables: dict[str, Table] = {}
    table: Table | None = None
    for raw in save_lines(text):  # a comment holding a newline stays in its rule
        line = raw.strip()
        if not line or line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            table = tables.setdefault(line[1:], Table(line[1:]))
            continue
        if table is None:
            continue
        counted = _COUNTERS.match(line)  # ``iptables-save -c``: ``[packets:bytes] -A ...``
        if counted:
            line = line[counted.end():]
        if line.startswith(":"):
            name, _, rest = line[1:].partition(" ")
            policy = rest.split(" ", 1)[0]
            table.chains[name] = Chain(name, None if policy == "-" else policy)
            continue
        if line.startswith("-A "):
            chain_name = line.split()[1]
            chain = table.chains.setdefault(chain_name, Chain(chain_name, None))
            chain.rules.append(_parse_rule(line))
    return tables


def _parse_rule(line: str) -> Rule:
    try:
        words = shlex.split(line)
    except ValueError as exc:
        return Rule(line, (), None, problem=f"cannot split: {exc}")
    try:
        return _rule_from_words(line, words[2:])
    except (_UnparsedError, ValueError, IndexError) as exc:
        # Keep the target, so what the rule would do if it matched is still known.
        target = next((words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-j", "-g")),
                      None)
        return Rule(line, (), target, problem=f"cannot read: {exc}")


def _rule_from_words(text: str, words: list[str]) -> Rule:
    matches: list[tuple[str, Matcher]] = []
    target: str | None = None
    goto = False
    target_args: list[str] = []
    module = ""
    i = 0
    while i < len(words):
        negate = words[i] == "!"
        if negate:
            i += 1
        word = words[i]
        if word in ("-j", "--jump", "-g", "--goto"):
            target, goto = words[i + 1], word in ("-g", "--goto")
            target_args = words[i + 2:]
            break
        if word in ("-m", "--match"):
            module = words[i + 1]
            if module == "rpfilter":
                rpfilter: set[str] = set()  # its options, read below
                matches.append(("-m rpfilter", _rpfilter(rpfilter)))
            elif module not in _MODULES:
                matches.append((f"-m {module}", _unknown))
            i += 2
            continue
        if module == "rpfilter" and word in _RPFILTER_OPTIONS and not negate:
            rpfilter.add(word)
            i += 1
            continue
        arg = words[i + 1] if i + 1 < len(words) else ""
        if module == "statistic" and word == "--mode" and arg == "random" and not negate:
            matches.append(("statistic random", _random))
            i += 2
            continue
        several = _multiword(words, i, module)
        if several is not None:
            shown, taken, used = several
            matches.append((f"{'! ' if negate else ''}{shown}",
                            _negated(taken) if negate else taken))
            i += used
            continue
        matcher, used = _option(word, arg, module)
        if matcher is None:
            raise _UnparsedError(f"option {word}")
        if matcher is _unknown:  # an option we do not know: it takes the words up to the next
            used = 0
            while i + 1 + used < len(words) and not words[i + 1 + used].startswith(("-", "!")):
                used += 1
        name = f"{'! ' if negate else ''}{word} {arg}".strip() if used else word
        matches.append((name, _negated(matcher) if negate else matcher))
        i += 1 + used
    return Rule(text, tuple(matches), target, tuple(target_args), goto)


_MODULES: Final = frozenset({"tcp", "udp", "multiport", "conntrack", "state", "comment",
                             "mark", "addrtype", "icmp", "icmp6", "set", "statistic"})


_RPFILTER_OPTIONS: Final = frozenset({"--loose", "--validmark", "--accept-local", "--invert"})


def _rpfilter(options: set[str]) -> Matcher:
    """``-m rpfilter`` (``xt_rpfilter``): the route back to the source (looked up from
    the loopback, with the packet's mark under ``--validmark``) is unicast and leaves by
    the input interface (any nexthop of an IPv4 multipath route), or only exists under
    ``--loose``; a local one passes under ``--accept-local``; ``--invert`` negates it.
    Calico's raw table drops what fails it from its workloads."""
    def match(packet: Packet) -> Tri:
        mark = packet.mark if "--validmark" in options else 0
        if packet.fib is None or mark is None:
            return None
        if packet.iif == "lo":
            return "--invert" not in options  # looped back: always passes
        back = packet.fib.reverse(packet.src, packet.dst, mark=mark)
        if back.type == "unknown":
            return None
        if back.type == "local":
            passed = "--accept-local" in options
        elif back.type != "unicast" or back.route is None:
            passed = False
        else:
            devices = {back.route.device, *(device for _, device in back.route.nexthops)}
            if packet.family == 6 and len(devices) > 1 and packet.iif in devices:
                return None  # IPv6 hashes the flow onto one path, not followed here
            passed = "--loose" in options or packet.iif in devices
        return passed != ("--invert" in options)
    return match


def _flags(names: str) -> int:
    """``SYN,ACK`` (``ALL``, ``NONE``) as TCP flag bits."""
    if names == "ALL":
        return 0x3F  # what iptables means by it: FIN SYN RST PSH ACK URG
    if names == "NONE":
        return 0
    bits = 0
    for name in names.split(","):
        if name.lower() not in TCP_FLAGS:
            raise ValueError(f"TCP flag {name!r}")  # the rule is unread, so unknown
        bits |= TCP_FLAGS[name.lower()]
    return bits


def _tcp_flags(mask_text: str, comp_text: str) -> Matcher:
    """``--tcp-flags MASK COMP``: of the flags in MASK, exactly those in COMP are set."""
    mask, comp = _flags(mask_text), _flags(comp_text)

    def match(packet: Packet) -> Tri:
        if packet.proto != "tcp":
            return False
        if packet.tcp_flags is None:
            return None
        return packet.tcp_flags & mask == comp
    return match


#: ``--syn``: ``--tcp-flags FIN,SYN,RST,ACK SYN``, a connection's first packet.
_syn = _tcp_flags("FIN,SYN,RST,ACK", "SYN")


def _multiword(words: list[str], i: int, module: str) -> tuple[str, Matcher, int] | None:
    """An option at ``words[i]`` taking other than one argument (``--syn``, ``--tcp-flags
    MASK COMP``, ``--match-set NAME FLAGS``) or read with its match's other options
    (``--ctdir``): its text, its matcher and how many words it takes; None for any other
    option."""
    word = words[i]
    if module in ("", "tcp") and word == "--syn":
        return "--syn", _syn, 1
    if (module == "conntrack" and word == "--ctdir" and i + 1 < len(words)
            and words[i + 1] in ("ORIGINAL", "REPLY")):
        return (f"--ctdir {words[i + 1]}",
                _ctdir(words[i + 1].lower(), _states_too(words, i)), 2)
    if i + 2 >= len(words):
        return None
    if module in ("", "tcp") and word == "--tcp-flags":
        return (f"--tcp-flags {words[i + 1]} {words[i + 2]}",
                _tcp_flags(words[i + 1], words[i + 2]), 3)
    if module == "set" and word == "--match-set":
        name, flags = words[i + 1], words[i + 2]
        return f"--match-set {name} {flags}", _ipset_matcher(name, flags), 3
    return None


def _unknown(_packet: Packet) -> Tri:
    return None


def _random(_packet: Packet) -> Tri:
    """The marker of a random branch; :func:`_evaluate_chain` decides it from ``pick``."""
    return None


def _states_too(words: list[str], at: int) -> bool:
    """The ``-m conntrack`` whose option is ``words[at]`` also tests ``--ctstate``."""
    start = max(i for i, w in enumerate(words[:at]) if w in ("-m", "--match"))
    for word in words[start + 2:]:
        if word in ("-m", "--match", "-j", "--jump", "-g", "--goto"):
            return False
        if word == "--ctstate":
            return True
    return False


def _ctdir(direction: str, states_too: bool) -> Matcher:
    """``--ctdir``: the packet's direction in its connection. A packet of no connection
    (untracked, invalid) has none: xt_conntrack then takes it when the same match tests
    ``--ctstate`` (already passed, the state matcher's to say) and never otherwise."""
    def match(packet: Packet) -> Tri:
        if packet.ctstate in ("invalid", "untracked"):
            return states_too
        return packet.direction == direction
    return match


def _negated(matcher: Matcher) -> Matcher:
    def negated(packet: Packet) -> Tri:
        value = matcher(packet)
        return None if value is None else not value
    return negated


def _option(word: str, arg: str, module: str) -> tuple[Matcher | None, int]:  # noqa: PLR0911, PLR0912 - one return per option
    """A matcher for one option and how many arguments it took (None: unknown option)."""
    if module not in ("", *_MODULES) and word.startswith("--"):
        # An option of a module not read here means what that module says:
        # ``-m connmark --mark`` is the connection's mark, not the packet's.
        return _unknown, 0
    if word in ("-s", "--source", "-d", "--destination"):
        network = ip_network(arg, strict=False)
        source = word in ("-s", "--source")
        return (lambda p: _in(p.src if source else p.dst, network)), 1
    if word in ("-i", "--in-interface", "-o", "--out-interface"):
        inbound = word in ("-i", "--in-interface")
        return (lambda p: _ifname(p.iif if inbound else p.oif, arg)), 1
    if word in ("-p", "--protocol"):
        return (lambda p: _proto(p, arg)), 1
    if word in ("--dport", "--destination-port", "--sport", "--source-port"):
        low, high = _port_range(arg)
        dest = word in ("--dport", "--destination-port")
        return (lambda p: _port(p.dport if dest else p.sport, [(low, high)])), 1
    if module == "multiport" and word in ("--dports", "--sports", "--ports",
                                          "--destination-ports", "--source-ports"):
        ranges = [_port_range(part) for part in arg.split(",")]
        return (lambda p: _multiport(p, word, ranges)), 1
    if word in ("--ctstate", "--state"):
        states = {_CT_STATES.get(s, s.lower()) for s in arg.split(",")}
        # SNAT and DNAT are conntrack's virtual states: the connection was translated.
        return (lambda p: p.ctstate in states or bool(states & p.nat)), 1
    if word == "--comment" or (module == "statistic" and word == "--probability"):
        return (lambda _p: True), 1
    if word == "--mark":
        value, _, mask = arg.partition("/")
        mark, bits = int(value, 0), int(mask, 0) if mask else 0xFFFFFFFF
        return (lambda p: None if p.mark is None else (p.mark & bits) == mark), 1
    if module == "addrtype" and word in ("--src-type", "--dst-type"):
        types = set(arg.split(","))
        source = word == "--src-type"
        return (lambda p: _addrtype(p, source, types)), 1
    if module == "addrtype" and word in ("--limit-iface-in", "--limit-iface-out"):
        return _unknown, 0
    if (module, word) in (("icmp", "--icmp-type"), ("icmp6", "--icmpv6-type")):
        return _icmp_type(arg, module), 1
    if module in ("tcp", "udp", "icmp", "icmp6") or word.startswith("--"):
        return _unknown, 1 if arg and not arg.startswith("-") and arg != "!" else 0
    return None, 0


def _ipset_matcher(name: str, flags: str) -> Matcher:
    """Is the packet's source (``src``) or destination (``dst``) in ipset ``name``?

    Unknown unless the doctor knows the set's members (``ipset save``'s sets of addresses,
    Calico's pool sets from its IP pools). Those sets have one dimension: the kernel
    looks up the first flag's address, whatever flags follow (``ip_set_test``).
    """
    def in_set(packet: Packet) -> Tri:
        members = packet.ipsets.get(name)
        first = flags.split(",", 1)[0]
        if members is None or first not in ("src", "dst"):
            return None
        return (packet.src if first == "src" else packet.dst) in members
    return in_set


def _in(address: object, network: object) -> bool:
    try:
        return address in network  # type: ignore[operator]
    except TypeError:  # another family
        return False


def _ifname(name: str | None, pattern: str) -> Tri:
    if name is None:
        return False
    if pattern.endswith("+"):
        return name.startswith(pattern[:-1])
    return name == pattern


#: The names ``--icmp-type`` / ``--icmpv6-type`` take for the errors telling a path's
#: MTU (iptables-save prints numbers: ``3/4``, ``2``); others are unknown.
_ICMP_TYPES: Final[dict[str, dict[str, tuple[int, int | None]]]] = {
    "icmp": {"destination-unreachable": (3, None), "fragmentation-needed": (3, 4)},
    "icmp6": {"destination-unreachable": (1, None), "packet-too-big": (2, None)},
}


def _icmp_type(arg: str, module: str) -> Matcher:
    """``-m icmp --icmp-type TYPE[/CODE]`` (``-m icmp6 --icmpv6-type``): the ICMP packet's
    type, and its code where given; ``any`` takes every ICMP packet (xt's ``icmp_match``
    and ``icmp6_match`` run only on the protocol, which ``-p`` requires)."""
    proto = "icmp" if module == "icmp" else "icmpv6"
    wanted: tuple[int, int | None] | None
    if arg == "any":
        wanted = None
    elif re.fullmatch(r"\d+(/\d+)?", arg):
        kind, _, code = arg.partition("/")
        wanted = (int(kind), int(code) if code else None)
    else:
        wanted = _ICMP_TYPES[module].get(arg, (-1, None))
    def match(packet: Packet) -> Tri:
        if packet.proto != proto:
            return False
        if wanted is None:
            return True
        if wanted[0] < 0 or packet.icmp is None:
            return None
        return packet.icmp[0] == wanted[0] and wanted[1] in (None, packet.icmp[1])
    return match


def _proto(packet: Packet, arg: str) -> Tri:
    if arg in ("all", "0"):
        return True
    number = PROTOCOLS.get(arg.lower()) if not arg.isdigit() else int(arg)
    if number is None:
        return None
    return packet.proto_number == number


def _port_range(arg: str) -> tuple[int, int]:
    low, _, high = arg.partition(":")
    return int(low or 0), int(high) if high else (int(low) if low else 65535)


def _port(value: int | None, ranges: list[tuple[int, int]]) -> Tri:
    return port_in(value, ranges)


def _multiport(packet: Packet, word: str, ranges: list[tuple[int, int]]) -> Tri:
    if word in ("--dports", "--destination-ports"):
        return _port(packet.dport, ranges)
    if word in ("--sports", "--source-ports"):
        return _port(packet.sport, ranges)
    return bool(_port(packet.dport, ranges) or _port(packet.sport, ranges))


def _addrtype(packet: Packet, source: bool, types: set[str]) -> Tri:
    address = packet.src if source else packet.dst
    kind = "LOCAL" if address in packet.local else "UNICAST"
    if address.is_multicast:
        kind = "MULTICAST"
    if types <= {"LOCAL", "UNICAST", "MULTICAST"}:
        return kind in types
    return None


# ---------------------------------------------------------------- evaluation


_Run = ChainRun


def _evaluate_chain(table: Table, chain: Chain, run: _Run, kind: str,
                    depth: int = 0) -> ChainResult | None:
    """Run ``chain``; a terminal verdict, or None when it returns (falls off its end)."""
    if depth > _MAX_DEPTH:
        run.unknowns.append(Uncertain(f"-A {chain.name}", "jumps nest too deep", "unknown"))
        return None
    for rule in chain.rules:
        if not run.visit(f"-A {chain.name}"):
            return None
        matched, why = rule.match(run.packet)
        if matched is False:
            continue
        if matched is None:
            run.unknowns.append(Uncertain(rule.text, why or "cannot evaluate",
                                          _effect(table, rule, run, kind, depth)))
            continue
        if rule.random:
            # kube-proxy's endpoint choice: follow the branch ``pick`` names.
            run.randoms += 1
            if run.randoms - 1 != run.packet.pick:
                continue
            run.random_taken = True
        outcome = _apply_target(table, rule, run, kind, depth)
        if outcome == "return":
            return None
        if isinstance(outcome, ChainResult):
            return outcome
    return None


def _effect(table: Table, rule: Rule, run: _Run, kind: str,  # noqa: PLR0911 - per target
            depth: int) -> str:
    """What ``rule`` would do if it matched (to judge whether not knowing matters)."""
    target = rule.target
    if target == "RETURN":
        # Returning skips the rest of the chain, where the verdict may be decided.
        return "unknown"
    if target in XT_TTL and ttl_expires(rule.target_args):
        return "drop"
    if target is None or target in _CONTINUE:
        return "none"
    if target == "ACCEPT":
        return "accept"
    if target in ("DROP", "REJECT"):
        return "drop"
    if target in ("MASQUERADE", "SNAT", "DNAT", "NETMAP"):
        return "nat"
    if target in _QUEUES:
        return _queue(run.packet, target, rule.target_args)[2]
    if target in table.chains:
        trial = _Run(run.packet, budget=run.budget)
        result = _evaluate_chain(table, table.chains[target], trial, kind, depth + 1)
        if not trial_certain(result, trial.unknowns):
            return "unknown"
        if result is None:
            return "none" if not rule.goto else "policy"
        return result.verdict
    return "unknown"


def _apply_target(table: Table, rule: Rule, run: _Run, kind: str,  # noqa: PLR0911, PLR0912 - per target
                  depth: int) -> ChainResult | str | None:
    target = rule.target
    mark = run.packet.mark
    if target == "NOTRACK" or (target == "CT" and "--notrack" in rule.target_args):
        run.untrack(rule.text)
        return None
    if target == "MARK" or (target == "CONNMARK" and "--restore-mark" in rule.target_args
                            ) or target == "HMARK":
        run.packet = attrs.evolve(run.packet, mark=_set_mark(mark, rule.target_args)
                                  if target == "MARK" else None)
        run.path.append(rule.text)
        return None
    if target == "TCPMSS":
        run.clamp(rule.text, _mss(rule.target_args))
        return None
    if target in XT_TTL and ttl_expires(rule.target_args):
        run.unknowns.append(Uncertain(
            rule.text, "the TTL (hop limit) it sets expires a forwarded packet, at this node "
            "before the forward chains, else at the next router", "drop"))
        return None
    if target is None or target in _CONTINUE or target == "CONNMARK":
        return None
    if target == "ACCEPT":
        return run.result("accept", rule.text)
    if target in ("DROP", "REJECT"):
        return run.result("drop", rule.text)
    if target == "RETURN":
        run.path.append(rule.text)
        return "return"
    if target in _QUEUES:
        verdict, why, effect = _queue(run.packet, target, rule.target_args)
        if verdict is not None:
            return run.result(verdict, f"{rule.text} ({why})")
        run.unknowns.append(Uncertain(rule.text, f"{why} ({target})", effect))
        return None
    if target == "NETMAP" and kind == "nat":
        action = _netmap(run.packet, rule.target_args)
        if action is None:
            run.unknowns.append(Uncertain(rule.text, "NETMAP target not understood", "nat"))
            return None
        return run.result("nat", rule.text, action)
    if target in ("MASQUERADE", "SNAT", "DNAT") and kind == "nat":
        action = _nat_action(target, rule.target_args)
        if action is None:
            run.unknowns.append(Uncertain(rule.text, f"{target} target not understood", "nat"))
            return None
        return run.result("nat", rule.text, action)
    if target in table.chains:
        run.path.append(rule.text)
        result = _evaluate_chain(table, table.chains[target], run, kind, depth + 1)
        if result is not None or not rule.goto:
            return result
        return "return"  # a goto that falls off returns from the calling chain too
    run.unknowns.append(Uncertain(rule.text, f"target {target} not understood", "unknown"))
    return None


def _queue(packet: Packet, target: str, args: tuple[str, ...]
           ) -> tuple[Literal["accept", "drop"] | None, str, str]:
    """:func:`~k3snet.doctor.packet.queue_verdict` of ``-j QUEUE`` (queue 0) or ``-j NFQUEUE``
    (``--queue-num N``, 0 by default; ``--queue-balance A:B``; ``--queue-bypass``)."""
    numbers: range | None = range(1)
    if target == "NFQUEUE":
        for option, value in itertools.pairwise(args):
            try:
                if option == "--queue-num":
                    numbers = range(int(value), int(value) + 1)
                elif option == "--queue-balance":
                    low, _, high = value.partition(":")
                    numbers = range(int(low), int(high or low) + 1)
            except ValueError:
                numbers = None
    return queue_verdict(packet.queues, numbers, "--queue-bypass" in args)


def _mss(args: tuple[str, ...]) -> int | None:
    """The MSS ``-j TCPMSS`` sets: ``--set-mss N``'s N, None for ``--clamp-mss-to-pmtu``
    (the route's MTU less the headers)."""
    if "--set-mss" in args[:-1]:
        value = args[args.index("--set-mss") + 1]
        if value.isdigit():
            return int(value)
    return None


def _set_mark(mark: int | None, args: tuple[str, ...]) -> int | None:  # noqa: PLR0911 - per option
    if mark is None or len(args) < 2:
        return None
    option, value = args[0], args[1]
    number, _, mask_text = value.partition("/")
    try:
        bits = int(number, 0)
        mask = int(mask_text, 0) if mask_text else 0xFFFFFFFF
    except ValueError:  # not a number iptables prints: the mark is unknown from here
        return None
    if option == "--set-xmark":
        return (mark & ~mask & 0xFFFFFFFF) ^ bits
    if option == "--set-mark":
        return (mark & ~mask & 0xFFFFFFFF) | bits
    if option == "--or-mark":
        return mark | bits
    if option == "--and-mark":
        return mark & bits
    if option == "--xor-mark":
        return mark ^ bits
    return None


def _nat_action(target: str, args: tuple[str, ...]) -> NatAction | None:
    if target == "MASQUERADE":
        return NatAction("masquerade")
    option_name = "--to-source" if target == "SNAT" else "--to-destination"
    for option, value in itertools.pairwise(args):
        if option == option_name:
            # ADDR[-ADDR][:PORT[-PORT]] or [V6][-[V6]][:PORT]: the first address and port.
            port_text = ""
            if value.startswith("["):
                address, _, rest = value[1:].partition("]")
                port_text = rest.removeprefix(":") if rest.startswith(":") else ""
            elif value.count(":") == 1:
                address, _, port_text = value.partition(":")
            else:
                address = value
            address = address.split("-", 1)[0]
            try:
                port = int(port_text.split("-", 1)[0]) if port_text else None
                if target == "SNAT":
                    return NatAction("snat", ip_address(address))
                return NatAction("dnat", ip_address(address), port)
            except ValueError:
                return None
    return None


def _netmap(packet: Packet, args: tuple[str, ...]) -> NatAction | None:
    """``-j NETMAP --to PREFIX``: the host part kept, the network part replaced; of the
    destination in prerouting (no way out chosen yet), of the source in postrouting, as
    ``netmap_tg4`` does by its hook. None: an option not understood."""
    for option, value in itertools.pairwise(args):
        if option == "--to":
            try:
                to = ip_network(value, strict=False)
            except ValueError:
                return None
            if to.version != packet.family:
                return None
            prerouting = packet.oif is None
            host = int(packet.dst if prerouting else packet.src) & int(to.hostmask)
            mapped = type(packet.src)(int(to.network_address) | host)
            return NatAction("dnat", mapped) if prerouting else NatAction("snat", mapped)
    return None


def _base(table: Table, chain: Chain, kind: str) -> Callable[[Packet], ChainResult]:
    def evaluate(packet: Packet) -> ChainResult:
        run = _Run(packet)
        result = _evaluate_chain(table, chain, run, kind)
        if result is not None:
            return result
        policy = (chain.policy or "ACCEPT").upper()
        verdict: Literal["accept", "drop"] = "drop" if policy == "DROP" else "accept"
        return run.result(verdict, f"policy {policy}")
    return evaluate


def base_chains(tables: dict[str, Table], flavour: str, family: int, *,
                empty_nat: Collection[str] = ()) -> list[BaseChain]:
    """The chains of ``tables`` that hooks call, as :class:`BaseChain` values.

    ``flavour`` (``iptables-nft``, ``iptables-legacy``) only names them. A chain
    with the default policy and no rules is left out: it decides nothing. The nat chains
    ``empty_nat`` names are kept all the same: the kernel holds them (iptables-nft-save
    prints the builtin chains a table lacks too), and a family's first nat chain
    registered the NAT core, whose order a filter chain at its priority depends on.
    """
    chains = []
    for (table_name, chain_name), (hook, priority, kind) in _HOOKS.items():
        table = tables.get(table_name)
        chain = table.chains.get(chain_name) if table else None
        if table is None or chain is None:
            continue
        if (not chain.rules and (chain.policy or "ACCEPT") == "ACCEPT"
                and not (kind == "nat" and chain_name in empty_nat)):
            continue
        command = "iptables" if family == 4 else "ip6tables"
        where = f"{command}{flavour.removeprefix('iptables')} {table_name} {chain_name}"
        chains.append(BaseChain(where, hook, priority, kind, frozenset({family}),
                                _base(table, chain, kind), empty=not chain.rules
                                and (chain.policy or "ACCEPT") == "ACCEPT"))
    return chains
