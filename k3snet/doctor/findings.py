"""Why a flow fails and what would fix it: :func:`diagnose`.

Each blocking step of a trace becomes a :class:`Finding` (what, where, why it
matters) with the k3snet objects that fix it (a :class:`~k3snet.model.Sysctl`,
:class:`~k3snet.model.MasqueradeRule`, :class:`~k3snet.model.ForwardRule` or
:class:`~k3snet.model.Route`). The fix is then applied to a copy of the node
state and the flow traced again, so a node with several problems (forwarding
off *and* no masquerade) gets every finding and one plan; the last trace is the
predicted outcome. Some causes have no k3snet fix (another program's nftables
table dropping, no route at all): their finding says what to change instead, and
that the trace stops there (what lies past it is found once it is fixed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from typing import Any, Literal

import attrs

from k3snet._logline import fs_word, printable_line, shell_join
from k3snet.doctor.packet import PLANNED_ORDER, BaseChain, ChainResult, NatAction, Packet
from k3snet.doctor.routing import RouteEntry, lookup, table_name
from k3snet.doctor.state import NodeState
from k3snet.doctor.trace import (
    PMTU_ERRORS,
    POD_FACING,
    Flow,
    Step,
    Trace,
    Verdict,
    own_pmtu_error_steps,
    pmtu_error_steps,
    shown,
    trace,
)
from k3snet.errors import ModelError
from k3snet.model import ForwardRule, MasqueradeRule, NetObject, Route, State, Sysctl
from k3snet.planner import Plan, plan

__all__ = ["FIX_BACKENDS", "Diagnosis", "Finding", "diagnose"]

#: The backend that applies each kind of fix object: routes and sysctls through
#: netlink, masquerade through k3snet's nftables table, forward accepts through
#: iptables (an accept in another table cannot override a ``DROP`` policy there).
FIX_BACKENDS = {"sysctl": "netlink", "route": "netlink", "nat": "nftables",
                "forward": "iptables"}

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
Severity = Literal["blocking", "warning", "info"]
_MAX_ROUNDS = 8
_STOPS_HERE = ("the trace stops here: problems past this step are not looked for until it "
               "is fixed, so run the doctor again then")


@attrs.frozen
class Finding:
    """One cause: ``code`` (stable, for scripts), ``what`` happens, ``where`` (chain, rule,
    route, sysctl), ``why`` it matters, the ``fix`` objects (possibly none) and
    ``advice`` when k3snet cannot fix it itself."""

    code: str
    what: str
    where: str
    why: str
    severity: Severity = "blocking"
    fix: tuple[NetObject, ...] = ()
    advice: str | None = None

    def render(self, names: Iterable[str] = ()) -> str:
        """A few lines for people (``names``: the node's devices, :attr:`Trace.names`)."""
        # what, where, why and advice quote the node's rules and interface names.
        lines = [f"[{self.severity}] {self.code}: {shown(self.what, names)}",
                 f"    where: {shown(self.where, names)}", f"    why:   {shown(self.why, names)}"]
        lines += [f"    fix:   {printable_line(obj.describe())}" for obj in self.fix]
        if self.advice:
            lines.append(f"    do:    {shown(self.advice, names)}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"code": self.code, "what": self.what, "where": self.where, "why": self.why,
                "severity": self.severity, "fix": [o.to_dict() for o in self.fix],
                "advice": self.advice}


@attrs.frozen
class Diagnosis:
    """A trace, its findings, the fix objects (``fixes``), the state to converge to
    (``desired``: what the backends own now plus the fixes) and its ``plan``, and the
    trace predicted once the fix is applied (``after``)."""

    trace: Trace
    findings: tuple[Finding, ...]
    fixes: State
    desired: State
    plan: Plan
    after: Trace
    warnings: tuple[str, ...] = ()
    """What the fix leaves to be done elsewhere: on a node where k3snet owns objects
    already, the spec keys that keep the fix past the next ``apply -f SPEC``."""

    @property
    def verdict(self) -> Verdict:
        """The verdict of the flow as the node is now."""
        return self.trace.verdict

    def render(self) -> str:
        """Trace, findings, fix plan and the predicted verdict."""
        parts = [self.trace.render(), ""]
        if self.findings:
            parts.append("findings:")
            parts += [f.render(self.trace.names) for f in self.findings]
        else:
            parts.append("findings: none")
        if self.fixes.owned:
            parts += ["", "fix: " + self.plan.render(),
                      f"after the fix: {self.after.verdict.value}" + (
                          f"; the destination sees {self.after.source_seen}"
                          if self.after.source_seen else "")]
        parts += [f"warning: {w}" for w in self.warnings]
        return "\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"trace": self.trace.to_dict(), "findings": [f.to_dict() for f in self.findings],
                "plan": self.plan.to_dict(), "after": {
                    "verdict": self.after.verdict.value,
                    "source_seen": str(self.after.source_seen) if self.after.source_seen
                    else None}, "warnings": list(self.warnings)}


# ---------------------------------------------------------------- what the node knows


def _host(address: IPAddress) -> IPNetwork:
    return ip_network(address)


def pod_network(state: NodeState, tr: Trace) -> IPNetwork:
    """The pod CIDR the flow's source belongs to: the cluster CIDR a CNI file gives,
    else the connected network of the pod's interface, else the address itself."""
    found = state.pod_network(tr.flow.source, tr.ingress)
    return found if found is not None else _host(tr.flow.source)


def destination_network(tr: Trace) -> IPNetwork:
    """The destination prefix fixes name: the route's, unless it is a default route."""
    route = tr.route.route if tr.route else None
    if route is not None and route.destination.prefixlen > 0 and route.type == "unicast" and (
            tr.target in route.destination) and not _pod_facing(route.device, tr):
        return route.destination
    return _host(tr.target)


def _at(step: Step, detail: str | None = None) -> str:
    """``WHERE: DETAIL`` of ``step`` (or of ``detail`` there), its chain named once: an
    nftables rule's text names its chain already."""
    text = step.detail if detail is None else detail
    return f"{step.where}: {text.removeprefix(f'{step.where}: ')}"


def _pod_facing(device: str | None, tr: Trace) -> bool:
    return device is not None and (device == tr.ingress or bool(POD_FACING.match(device)))


# ---------------------------------------------------------------- state changes (simulated fixes)


def _with_sysctls(state: NodeState, values: dict[str, str]) -> NodeState:
    sysctls = dict(state.sysctls)
    for name, value in values.items():
        sysctls[name] = value
        if name == "net.ipv4.ip_forward":  # the kernel sets every interface's switch with it
            for key in list(sysctls):
                if key.startswith("net.ipv4.conf.") and key.endswith(".forwarding"):
                    sysctls[key] = value
    return attrs.evolve(state, sysctls=sysctls)


def _with_route(state: NodeState, entry: RouteEntry) -> NodeState:
    fam = entry.destination.version
    routes = dict(state.routes)
    routes[fam] = (*routes[fam], entry)
    return attrs.evolve(state, routes=routes)


def _with_masquerade(state: NodeState, rule: MasqueradeRule) -> NodeState:
    def evaluate(packet: Packet) -> ChainResult:
        if (packet.src in rule.source and (rule.destination is None
                                           or packet.dst in rule.destination)
                and rule.out_interface in (None, packet.oif)):
            return ChainResult("nat", f"k3snet: {rule.describe()}", NatAction("masquerade"),
                               mark=packet.mark)
        return ChainResult("accept", "policy accept", mark=packet.mark)

    # Created by the fix, k3snet's table is the newest: first of the chains at its priority.
    chain = BaseChain("nft inet k3snet postrouting (planned)", "postrouting", 100, "nat",
                      frozenset({rule.family}), evaluate, order=PLANNED_ORDER)
    return attrs.evolve(state, chains=(*state.chains, chain))


def _with_forward_accept(state: NodeState, where: str, rule: ForwardRule) -> NodeState:
    def wrap(chain: BaseChain) -> BaseChain:
        inner = chain.evaluate

        def evaluate(packet: Packet) -> ChainResult:
            original = (packet.direction == "original" and packet.src in rule.source
                        and packet.dst in rule.destination
                        and rule.out_interface in (None, packet.oif))
            reply = (packet.ctstate == "established" and packet.src in rule.destination
                     and packet.dst in rule.source)
            if original or reply:
                return ChainResult("accept", f"k3snet: {rule.describe()}", mark=packet.mark)
            return inner(packet)

        return attrs.evolve(chain, evaluate=evaluate)

    return attrs.evolve(state, chains=tuple(wrap(c) if c.where == where else c
                                            for c in state.chains))


# ---------------------------------------------------------------- explaining a blocking step

_Change = Callable[[NodeState], NodeState]


def _explain(state: NodeState, tr: Trace, step: Step) -> tuple[Finding, _Change | None]:
    code = step.code or "blocked"
    explain = _EXPLAINERS.get(code)
    if explain is not None:
        try:
            return explain(state, tr, step)
        except ModelError as exc:  # a name from the capture no fix object can hold
            return Finding(code, f"the flow is dropped at {step.stage}", step.where,
                           step.detail, advice=f"no automatic fix: {_refusal(state, exc)}"), None
    return Finding(code, f"the flow is dropped at {step.stage}", step.where, step.detail,
                   advice="no automatic fix is known for this step"), None


def _refusal(state: NodeState, exc: ModelError) -> str:
    """The model's refusal of a name from the capture, that name as the rest of the
    output words it: the model quotes a name as a Python literal, whose ``\\udcff`` stands
    for a byte that is not UTF-8; the device's own name in its place is printed as the
    shell word of its bytes (:func:`~k3snet.doctor.trace.shown`), ``$'\\xff'``."""
    message = str(exc)
    for name in sorted(state.devices, key=len, reverse=True):
        if not name.isprintable():
            message = message.replace(repr(name), name)
    return message


def _forwarding_off(state: NodeState, tr: Trace, step: Step) -> tuple[Finding, _Change | None]:
    name = "net.ipv4.ip_forward" if tr.flow.family == 4 else "net.ipv6.conf.all.forwarding"
    if step.where not in (name, "net.ipv4.ip_forward") and state.sysctl(name) == 1:
        name = step.where  # one interface's switch is off while the global one is on
    fix = Sysctl(name, 1)
    finding = Finding("forwarding-off", "the node does not forward packets between interfaces",
                      f"sysctl {step.where} = 0",
                      "a pod's packets to anything outside the node are forwarded: with "
                      "forwarding off the kernel drops them before any firewall rule",
                      fix=(fix,))
    return finding, lambda s: _with_sysctls(s, {name: "1"})


def _forward_drop(state: NodeState, tr: Trace, step: Step) -> tuple[Finding, _Change | None]:
    reply = step.direction == "reply"
    what = ("the forward chain drops the replies" if reply
            else "the forward chain drops the flow")
    where = _at(step)
    if step.where.startswith(("iptables", "ip6tables")):
        why = ("a DROP policy (left by Docker, firewalld or a hardening script) or rule in the "
               "iptables FORWARD chain stops pod traffic; an accept for the pod CIDR ahead of "
               "it lets the flow and its replies through")
        rule, conflict = _forward_accept(state, tr, step)
        flavour = step.where.split(maxsplit=1)[0].partition("-")[2]
        mode = state.iptables_mode
        if mode is not None and mode[0] != flavour:
            # Both flavours' chains run; k3snet's accept goes into the other one's, and
            # a drop is final: --fix applied it and the flow stayed dropped.
            why = (f"{why}, but k3snet's iptables backend writes into iptables-{mode[0]} "
                   f"here ({mode[1]}), and iptables-{flavour}'s chain runs as well: a drop "
                   "there is final whatever the other flavour accepts")
            advice = f"remove iptables-{flavour}'s rules, or accept the flow in that chain yourself"
            if mode[1].startswith("mode auto"):
                advice += (f" (if k3snet runs with the iptables backend's mode {flavour}, give "
                           "its spec: `-f SPEC`)")
            elif mode[1].startswith("the spec's mode auto"):
                advice += (f" (if this node's iptables is {flavour}, say so in the spec: "
                           f"backends.iptables.mode: {flavour})")
            finding = Finding("forward-drop", what, where, why, advice=advice)
            return finding, None
        if conflict is not None:
            # k3snet's jump goes after the rules in place (ahead of a final catch-all
            # drop only) and is never moved, and a drop in another table or chain of the
            # path (mangle's POSTROUTING, firewalld's table) is final: its plan names the
            # accept a conflict and applies nothing, and the flow stays dropped.
            why = (f"{why}, but k3snet's plan names its accept ({rule.describe()}) a "
                   f"conflict with {conflict}: {rule.conflict_reason(conflict)}")
            finding = Finding("forward-drop", what, where, why,
                              advice="accept the flow ahead of that rule yourself, or remove "
                                     "or narrow it (k3snet's plan names that accept a "
                                     "conflict and adds nothing)")
            return finding, None
        finding = Finding("forward-drop", what, where, why, fix=(rule,))
        return finding, lambda s: _with_forward_accept(s, step.where, rule)
    finding = Finding(
        "foreign-table-drop", what, where,
        "another program's nftables table drops the flow; a drop in any base chain is final, "
        "so no accept elsewhere (k3snet's included) can let it through",
        advice=f"allow the flow in {step.where.removeprefix('nft ')} (or in the configuration "
               "of the program that owns that table)")
    return finding, None


def _forward_accept(state: NodeState, tr: Trace, step: Step
                    ) -> tuple[ForwardRule, NetObject | None]:
    """The forward accept that fixes ``step`` (a drop in iptables' FORWARD), and the
    foreign rule k3snet's plan would find deciding it first (None: none, the accept is
    planned): for the route's network, else for the destination alone when only that
    one is not decided otherwise. The foreign rules are those k3snet's iptables backend
    reads from the captured tables of the step's flavour and from the nftables tables
    iptables does not show (:meth:`NodeState.forward_blocks`)."""
    flavour = step.where.split(maxsplit=1)[0].partition("-")[2]
    blocks = state.forward_blocks(flavour, tr.flow.family) or set()
    source, destination = pod_network(state, tr), destination_network(tr)
    rules = [ForwardRule(source, destination, out_interface=tr.egress)]
    if destination != _host(tr.target):
        rules.append(ForwardRule(source, _host(tr.target), out_interface=tr.egress))
    first: NetObject | None = None
    for rule in rules:
        conflict = min((b for b in blocks if rule.conflicts_with(b)), key=str, default=None)
        if conflict is None:
            return rule, None
        first = first or conflict
    return rules[0], first


def _hook_drop(state: NodeState, tr: Trace, step: Step) -> tuple[Finding, _Change | None]:
    return Finding(step.code or "dropped", f"a {step.stage} chain drops the "
                   f"{'replies' if step.direction == 'reply' else 'flow'}",
                   _at(step), "a drop in any base chain is final",
                   advice=f"allow the flow in {step.where}"), None


def _untracked(state: NodeState, tr: Trace, step: Step) -> tuple[Finding, _Change | None]:
    """A raw rule exempts the flow (or its replies) from conntrack: NAT never applies, so
    no masquerade k3snet adds could help; only that rule's owner can."""
    exempt = next((s for s in tr.steps if s.code == "untracked"), step)
    side = "replies" if exempt.direction == "reply" else "flow"
    return Finding(
        "untracked", f"a raw rule exempts the {side} from connection tracking",
        _at(exempt, exempt.detail.partition(": exempts")[0]),
        "NAT works on tracked connections only: an untracked packet is never masqueraded "
        "or translated by a Service's DNAT, an untracked reply never translated back to "
        f"the pod; here {step.detail}",
        advice=f"remove the NOTRACK/notrack rule in {exempt.where} or narrow it so it does "
               "not match pod traffic and its replies"), None


def _not_translated(state: NodeState, tr: Trace, step: Step) -> tuple[Finding, _Change | None]:
    if any(s.code == "untracked" and s.direction == "original" for s in tr.steps):
        return _untracked(state, tr, step)
    oif = tr.egress
    rule = MasqueradeRule(pod_network(state, tr), destination=destination_network(tr),
                          out_interface=oif)
    skipped = [s for s in tr.steps if s.stage == "postrouting" and s.code == "nat-accept"]
    if skipped:
        code = "masquerade-skipped"
        what = ("a rule in nat postrouting accepts or returns the flow before anything "
                "masquerades it")
        where = (skipped[0].detail if skipped[0].detail.startswith(f"{skipped[0].where}: ")
                 else f"{skipped[0].where}: {skipped[0].detail}")
    else:
        code = "no-masquerade"
        what = "nothing translates the pod's source address"
        where = "nat postrouting"
    why = (f"the destination sees the pod address {tr.flow.source} and answers it; the network "
           "beyond the node does not route pod CIDRs back, so replies are lost")
    return Finding(code, what, where, why, fix=(rule,)), lambda s: _with_masquerade(s, rule)


def _route_to_pods(state: NodeState, tr: Trace, step: Step) -> tuple[Finding, _Change | None]:
    what = f"{tr.target} is routed towards pods, not out of the node"
    why = (f"{step.detail}; a destination inside or near the pod CIDR is taken for a pod "
           "address")
    shadowed = _unshadow(tr)
    if shadowed is not None:
        fix, change = shadowed
        return Finding("route-shadowed", what, step.where,
                       f"{why}; {fix.describe()} would carry it out", fix=(fix,)), change
    return Finding("route-shadowed", what, step.where, why,
                   advice="route the destination out of the node "
                          "(spec destinations[].gateway, .device) "
                          "or choose a pod CIDR that does not overlap it"), None


def _rp_filter(state: NodeState, tr: Trace, step: Step) -> tuple[Finding, _Change | None]:
    iface = step.where.rsplit(" on ", 1)[-1]
    # The kernel checks the larger of `all`'s and the interface's (IN_DEV_RPFILTER, "the
    # max value from conf/{all,interface}/rp_filter"): strict, both are at most 1, so the
    # interface's 2 alone makes it loose, `all` left as it is. Setting `all` loosened
    # every other interface too (and, with both at 1, both were set). Loose mode's drop
    # (no route back at all) no sysctl short of 0 lifts: none is planned.
    name = f"net.ipv4.conf.{iface.replace('.', '/')}.rp_filter"
    strict = max(state.sysctl("net.ipv4.conf.all.rp_filter"), state.sysctl(name)) == 1
    side = "replies" if step.direction == "reply" else "the pod's packets"
    if strict:
        finding = Finding(
            "rp-filter", f"strict reverse-path filtering drops {side} on {iface}", step.where,
            f"{step.detail}: strict mode drops a packet whose source the node would route out "
            "of another interface (asymmetric or policy routing); loose mode (2) only asks "
            "that a route exists", fix=(Sysctl(name, 2),), advice=_rp_filter_kept(state, name))
    else:
        finding = Finding(
            "rp-filter", f"loose reverse-path filtering drops {side} on {iface}", step.where,
            f"{step.detail}: loose mode (2) drops a packet the node has no route back to its "
            "source for (none, or an unreachable, blackhole or prohibit one), or, on an "
            "interface without an IPv4 address, one whose route back leaves by another",
            advice=f"give the node a route back to the source (the reverse lookup is made as "
                   f"if the packet came in by the interface it leaves by, with mark 0 unless "
                   f"src_valid_mark is set), or {iface} an IPv4 address; rp_filter is loose "
                   f"already, and only 0 on both all and {iface} turns the check off")
    return finding, (lambda s: _with_sysctls(s, {name: "2"})) if strict else None


def _rp_filter_kept(state: NodeState, name: str) -> str | None:
    """What keeps the fix ``name`` = 2 past its interface: one made again under that name
    (a CNI's bridge, a VLAN networkd makes at boot) takes ``default``'s value, strict again
    when the larger of ``all``'s and ``default``'s is 1, and k3snet owns the sysctl with the
    interface it set it on (docs/backends.md): only a spec naming it sets it anew."""
    default = state.sysctl("net.ipv4.conf.default.rp_filter")
    all_ = state.sysctl("net.ipv4.conf.all.rp_filter")
    if max(all_, default) != 1:
        return None
    return (f"the fix lasts as long as the interface: one made again under that name takes "
            f"net.ipv4.conf.default.rp_filter ({default}), strict again beside all's "
            f"({all_}); to keep it, "
            f"add it to the spec's sysctls ({{{name}: 2}}): `k3snet apply` and the agent's "
            "next pass set it on each interface of that name, and `k3snet render sysctl` "
            "writes it to the sysctl.d file, which systemd applies to the interface as it "
            "appears")


def _no_route(state: NodeState, tr: Trace, step: Step) -> tuple[Finding, _Change | None]:
    if tr.dnat is not None:
        return Finding("no-route", f"the node has no route to the Service endpoint "
                       f"{tr.describe_target()} that {tr.flow.destination} is translated to",
                       step.where, step.detail,
                       advice="check the endpoint's node and the CNI's routes to it; if "
                              f"{tr.flow.destination} is a host outside the cluster, see the "
                              "Service finding below"), None
    exempt = next((s for s in tr.steps if s.code == "untracked"
                   and s.direction == "original"), None)
    # An untracked packet gets no DNAT: a Service address is then routed as it is.
    untracked = (f"the flow is exempted from connection tracking ({exempt.where}), so no "
                 f"DNAT applies to it: if {tr.target} is a Service address, remove or "
                 "narrow that NOTRACK/notrack rule; else " if exempt is not None else "")
    down = sorted(name for name, link in state.links.items()
                  if link == "down" and name != "lo" and not POD_FACING.match(name))
    # A link set down loses its routes: the one to the destination may be among them.
    first = (f"{', '.join(down)} {'is' if len(down) == 1 else 'are'} down, and the kernel "
             f"removes the routes through a link while it is down: if one carried "
             f"{tr.target}, bring it up ({'; '.join(_link_up(state, d) for d in down)}) "
             "and see that it comes up at boot; else " if down else "")
    return Finding("no-route", f"the node has no route to {tr.target}",
                   step.where, step.detail,
                   advice=f"{untracked}{first}add a route to {tr.target} through the "
                          "gateway that reaches it (spec destinations[].gateway, .device)"), None


def _link_up(state: NodeState, device: str) -> str:
    """The shell command bringing ``device`` up, its name one shell word: written as it
    is, a name such as ``d;id`` (the kernel takes any but ``/``, ``:`` and spaces) ran a
    second command once pasted, and one of an ESC named another device. In the node's
    namespace (``ip netns exec NS``, its name by its bytes: :func:`fs_word`): without it,
    a doctor given ``--netns`` told to bring up the host's device of that name."""
    where = ("ip", "netns", "exec", fs_word(state.netns)) if state.netns else ()
    return shell_join([*where, "ip", "link", "set", device, "up"])


def _link_down(state: NodeState, tr: Trace, step: Step) -> tuple[Finding, _Change | None]:
    device = step.where.removeprefix("dev ")
    if state.links.get(device) == "down":
        what, advice = (f"{device}, the interface the route uses, is down",
                        f"bring it up ({_link_up(state, device)}) and see that it comes up "
                        "at boot")
    else:
        what, advice = (f"{device}, the interface the route uses, has no carrier",
                        f"check {device}'s cable and switch port (for a VLAN or bond, its "
                        "parent or members; for a veth, its peer); or route the destination "
                        "through another uplink")
        other = next((r for r in (tr.route.candidates if tr.route else ())
                      if r.type == "unicast" and device not in (
                          r.device, *(d for _, d in r.nexthops))), None)
        if other is not None:
            # The failover a node with two uplinks is built for: the kernel keeps using a
            # linkdown route unless told to pass over it.
            advice += (f"; to fail over to {other.describe()} while {device} has no "
                       f"carrier, set net.ipv{tr.flow.family}.conf."
                       f"{device.replace('.', '/')}.ignore_routes_with_linkdown = 1")
    return Finding("link-down", what, step.where,
                   f"{step.detail}; the route through {device} is still chosen, so the flow "
                   "is lost", advice=advice), None


def _unshadow(tr: Trace) -> tuple[Route, _Change] | None:
    """A host route through the best route the chosen one shadows, if one leaves the node."""
    lookup_ = tr.route
    if lookup_ is None or lookup_.route is None:
        return None
    if lookup_.route.destination.prefixlen == lookup_.route.destination.max_prefixlen:
        return None  # nothing is more specific than a host route: it must go
    better = [c for c in lookup_.candidates if c.type == "unicast" and c.device
              and not _pod_facing(c.device, tr)]
    if not better:
        return None
    alt = better[0]
    table = lookup_.route.table if isinstance(lookup_.route.table, int) else 254
    fix = Route(_host(tr.target), gateway=alt.gateway, device=alt.device, table=table)
    entry = RouteEntry(_host(tr.target), table=table, gateway=alt.gateway,
                       device=alt.device)
    return fix, lambda s: _with_route(s, entry)


def _route_rejects(state: NodeState, tr: Trace, step: Step) -> tuple[Finding, _Change | None]:
    lookup_ = tr.route
    shadowed = _unshadow(tr)
    if lookup_ is not None and lookup_.route is not None and shadowed is not None:
        fix, change = shadowed
        return Finding("route-shadowed", f"a {lookup_.route.type} route shadows the route "
                       f"to {tr.target}", step.where,
                       f"{step.detail} is more specific than the route {fix.describe()} "
                       "would follow", fix=(fix,)), change
    return Finding("route-rejects", f"routing refuses {tr.target}", step.where,
                   f"{step.detail}",
                   advice="remove the blackhole/unreachable/prohibit route or rule, or add a "
                          "more specific route"), None


def _reply_route(state: NodeState, tr: Trace, step: Step) -> tuple[Finding, _Change | None]:
    back = tr.reply_route
    pod_net = pod_network(state, tr)
    table = 254
    if back is not None and back.rule is not None and back.rule.action == "lookup" and (
            isinstance(back.rule.table, int)):
        table = back.rule.table
    fix = Route(pod_net, device=tr.ingress, table=table)
    entry = RouteEntry(pod_net, table=table, device=tr.ingress, scope="link")
    rule_text = back.rule.describe() if back is not None and back.rule else "the main table"
    finding = Finding(
        "reply-misrouted", f"replies to {tr.flow.source} are routed away from the pod",
        f"{step.where}: {step.detail}",
        f"policy routing ({rule_text}) picks table {table_name(table)} for the replies, which "
        f"has no route to the pod network {pod_net} through {tr.ingress}",
        fix=(fix,))
    return finding, lambda s: _with_route(s, entry)


def _masquerade_no_address(state: NodeState, tr: Trace,
                           step: Step) -> tuple[Finding, _Change | None]:
    return Finding("masquerade-no-address", f"masquerade finds no address on {tr.egress}",
                   step.where, step.detail,
                   advice=f"give {tr.egress} an address or SNAT to a fixed one"), None


def _masquerade_pod_address(state: NodeState, tr: Trace,
                            step: Step) -> tuple[Finding, _Change | None]:
    return Finding(
        "masquerade-pod-address",
        f"the pod's source is translated to {tr.source_seen}, an address of the pod network",
        step.where, step.detail,
        advice=f"give {tr.egress} (or lo) a global address the network routes to this node, "
               "nearer the destination than the pod network's, or SNAT the pod CIDR to "
               "such an address"), None


def _onward_route(state: NodeState, tr: Trace, step: Step) -> tuple[Finding, _Change | None]:
    return Finding(
        "onward-route", "the connection's next packets are routed otherwise than its first",
        step.where, f"{step.detail}: the first packet and the replies pass, and the "
        "connection fails all the same",
        advice="mark every packet of the connection alike: save the mark in the connection "
               "when its first packet is marked (nftables ct mark set meta mark, iptables "
               "CONNMARK --save-mark) and restore it on the others (meta mark set ct mark, "
               "CONNMARK --restore-mark), or mark on what every packet carries"), None


_EXPLAINERS: dict[str, Callable[[NodeState, Trace, Step], tuple[Finding, _Change | None]]] = {
    "forwarding-off": _forwarding_off,
    "forward-drop": _forward_drop,
    "prerouting-drop": _hook_drop,
    "postrouting-drop": _hook_drop,
    "not-translated": _not_translated,
    "rp-filter": _rp_filter,
    "route-to-pods": _route_to_pods,
    "no-route": _no_route,
    "route-rejects": _route_rejects,
    "reply-misrouted": _reply_route,
    "reply-no-route": _reply_route,
    "masquerade-no-address": _masquerade_no_address,
    "masquerade-pod-address": _masquerade_pod_address,
    "onward-route": _onward_route,
    "reply-untracked": _untracked,
    "link-down": _link_down,
}


#: Blocking steps decided by netfilter rules (a missing NAT rule included).
_FROM_RULES = frozenset({"not-translated", "forward-drop", "prerouting-drop",
                         "postrouting-drop", "reply-untracked"})


def _rp_filter_elsewhere(tr: Trace) -> list[Finding]:
    """Strict reverse-path filtering that passes the replies on the interface they are
    assumed to come back on and drops them on another the node routes the destination
    through: the verdict is the network's to decide (unknown), this names the interfaces."""
    step = next((s for s in tr.steps if s.code == "rp-filter-elsewhere"), None)
    if step is None:
        return []
    device = step.where.rsplit(" on ", 1)[-1]
    name = f"net.ipv4.conf.{device.replace('.', '/')}.rp_filter"
    return [Finding(
        "rp-filter-elsewhere", f"strict reverse-path filtering drops the replies if they "
        f"come back on {device}", step.where,
        f"{step.detail}; the trace assumed they come back on the interface holding the "
        "address the destination sees, but which interface the network sends them to is "
        "not known on the node",
        severity="warning",
        advice=f"set loose reverse-path filtering on {device} ({name} = 2, spec sysctls: the "
               "kernel takes the larger of all's and the interface's), or make sure the "
               "network routes the replies back to the interface the flow leaves by")]


def _context(state: NodeState, tr: Trace) -> list[Finding]:
    """Findings that explain without blocking by themselves."""
    found = []
    dst = tr.flow.destination
    for cidr in {*state.cluster_cidrs, pod_network(state, tr)}:
        if cidr.version == dst.version and dst in cidr and cidr.prefixlen < cidr.max_prefixlen:
            found.append(Finding(
                "destination-in-pod-cidr", f"{dst} lies inside the pod CIDR {cidr}",
                f"pod CIDR {cidr}",
                "the node and the CNI treat it as a pod address: routed towards pods and left "
                "untranslated by CNI masquerade rules",
                severity="warning",
                advice="choose a cluster CIDR that does not overlap the destination, or route "
                       "and masquerade the destination explicitly"))
            break
    found += _service_findings(state, tr)
    for pool in state.calico_pools:
        if pool.cidr.version != dst.version or dst not in pool.cidr:
            continue
        why = ("Calico masquerades (natOutgoing) only traffic to destinations outside every "
               "pool: to this one the pod's address leaves untranslated")
        if pool.load_balancer_only:
            # Felix v3.31.6, v3.32.1 and later match cali40network-ip-pools, which leaves
            # LoadBalancer-only pools out (projectcalico/calico#12769): they NAT to it.
            sets = state.felix_pool_sets
            if "network-ip-pools" in sets and "all-ipam-pools" not in sets:
                continue
            if not sets:
                why = ("Felix before v3.31.6 and v3.32.1 does not masquerade (natOutgoing) "
                       "traffic to a pool, even a LoadBalancer-only one: there the pod's "
                       "address leaves untranslated (later versions masquerade it; the "
                       "capture holds no Calico NAT rule to tell which)")
        found.append(Finding(
            "destination-in-calico-pool", f"{dst} lies inside the Calico IP pool {pool.cidr}",
            f"IPPool {pool.cidr}" + (" (disabled)" if pool.disabled else "")
            + (" (LoadBalancer only)" if pool.load_balancer_only else ""),
            why, severity="warning",
            advice="shrink or move the pool so it does not cover the destination, or "
                   "masquerade the destination explicitly (the fix above)"))
        break
    exempt = next((s for s in tr.steps if s.code == "untracked"), None)
    if exempt is not None and tr.verdict is not Verdict.REACHES:
        found.append(Finding(
            "untracked-flow", "a raw rule exempts the flow or its replies from connection "
            "tracking", _at(exempt, exempt.detail.partition(": exempts")[0]),
            "no NAT applies to untracked packets (masquerade, a Service's DNAT, translating "
            "replies back) and stateful rules see them as untracked, not new or established",
            severity="warning",
            advice=f"make sure the NOTRACK/notrack rule in {exempt.where} is meant to match "
                   "this flow"))
    found += _forwarding_default(state, tr)
    found += _path_mtu(state, tr)
    found += _pmtu_error(state, tr)
    found += _rp_filter_elsewhere(tr)
    unknown = [s for s in tr.steps if s.outcome == "unknown" and s.code != "rp-filter-elsewhere"]
    if unknown:
        uncertain = [s for s in unknown if not s.certain]
        found.append(Finding(
            "unknown-rules", f"{len(unknown)} rule(s) or value(s) could not be evaluated"
            + (f", {len(uncertain)} of which could change the verdict" if uncertain else ""),
            "; ".join(_at(s) for s in (uncertain or unknown)[:3]),
            "the trace assumes they do not match; each is listed in the trace",
            severity="warning" if uncertain else "info"))
    if state.missing:
        found.append(_capture_incomplete(state))
    return found


_POOL_SETS = ("cali40masq-ipam-pools", "cali40all-ipam-pools", "cali40network-ip-pools")


def _capture_incomplete(state: NodeState) -> Finding:
    """What of the node state is missing, why, and what the trace judged without it: a
    ruleset or route table not captured is taken as empty; Calico's IP pools
    (``calico-ippools.json``, or read live) are not: a pool left out is judged without,
    the others deciding Felix's pool sets, and with none read the sets are the kernel's
    (``ipset.save``) or unknown."""
    calico = state.missing.get("calico-ippools.json")
    others = {k: v for k, v in state.missing.items() if k != "calico-ippools.json"}
    parts = []
    if others:
        reasons = [f"{k}: {v}" for k, v in sorted(others.items()) if v != "not in the capture"]
        parts.append("the trace takes the missing rulesets and routes as empty (no rules, "
                     "no routes)" + (f"; {'; '.join(reasons)}" if reasons else ""))
    if calico is not None:
        parts.append(f"calico-ippools.json (Calico's IP pools): {calico}; "
                     + _without_pools(state))
    unread = state.unread_rulesets()
    root = any(word in why for why in unread.values()
               for word in ("Permission denied", "not permitted", "must be root"))
    return Finding("capture-incomplete",
                   "parts of the node state were not captured" if others
                   else "Calico's IP pools were not all read",
                   ", ".join(sorted(state.missing)), "; ".join(parts),
                   severity="warning" if unread else "info",
                   advice="run k3snet doctor (or k3snet observe --save) as root: "
                          "reading the rulesets needs it" if root else None)


def _without_pools(state: NodeState) -> str:
    """What the trace judged Felix's pool sets from, Calico's IP pools being missing (in
    part: those read decide; in whole: the kernel's sets, else nothing)."""
    kernel = [name for name in state.kernel_ipsets if name.startswith(("cali40", "cali60"))
              and name.endswith(("-ipam-pools", "-ip-pools"))]
    if kernel:
        return (f"Felix's pool sets are taken from the kernel's ipset save "
                f"({', '.join(sorted(kernel))}), not from the pools")
    if state.calico_pools:
        return (f"Felix's pool sets are judged from the {len(state.calico_pools)} IP pool(s) "
                "read, without those named here")
    return (f"Felix's pool sets ({', '.join(_POOL_SETS)} and their IPv6 twins) are "
            "unknown: a rule matching one is not evaluated")


def _forwarding_default(state: NodeState, tr: Trace) -> list[Finding]:
    """``net.ipv4.conf.default.forwarding`` at 0 beside ``ip_forward`` at 1: every IPv4
    interface made from now on (a routed CNI's veth for each new pod, a CNI bridge made
    again) starts with its own switch, which decides what arriving packets the kernel
    forwards, at 0; writing ``ip_forward = 1`` over 1 changes none of them."""
    if tr.flow.family != 4 or state.sysctls.get("net.ipv4.ip_forward", "").strip() != "1":
        return []
    if state.sysctls.get("net.ipv4.conf.default.forwarding", "").strip() != "0":
        return []
    bridge = tr.ingress if tr.ingress in {
        master for master, kind in state.masters.values() if kind in (None, "bridge")} else None
    why = ("the kernel forwards an IPv4 packet by the forwarding switch of the interface it "
           "arrives on, and a new interface takes default's 0 while net.ipv4.ip_forward "
           "stays 1: ")
    why += (f"new pods' veths are ports of {bridge}, whose own switch forwards what arrives "
            f"on them, but {bridge} made again (deleted, or made at boot after the sysctls "
            "are set) would drop the connections of every pod behind it" if bridge else
            "new pods' veths with a routed CNI such as Calico or Cilium (a CNI bridge made "
            "again too) drop their connections while this flow's are not")
    return [Finding(
        "forwarding-default-off", "interfaces created from now on will not forward IPv4",
        "sysctl net.ipv4.conf.default.forwarding = 0", why,
        severity="warning",
        advice="set net.ipv4.conf.default.forwarding = 1 and name it in the spec's sysctls, "
               "so k3snet keeps it on")]


def _path_mtu(state: NodeState, tr: Trace) -> list[Finding]:
    """The way out smaller than the pods' interface: the route's ``mtu``, or the outgoing
    interface's, below the MTU of the interface the pod's packets arrive on (a route
    ``mtu 1280``, a 1450 overlay behind 1500 veths). The trace's first packet is small
    and passes; the pods' large ones pass only once the node's ICMP error told them the
    smaller MTU (path MTU discovery), and without it they die: a black hole the verdict
    does not show. Two numbers compared per branch: nothing is traced again.

    A Cilium pod's routes carry Cilium's route MTU, below its veth's where a tunnel
    takes its overhead (:func:`_cilium_route_mtu`): that is the largest packet it sends."""
    pod_mtu = state.mtus.get(tr.ingress) if tr.ingress is not None else None
    if pod_mtu is None or tr.ingress is None:
        return []
    sender = f"the pods' interface {tr.ingress}"
    cilium = _cilium_route_mtu(state, tr.ingress, tr.flow.family)
    if cilium is not None and cilium < pod_mtu:
        pod_mtu = cilium
        sender = (f"the routes of the pods behind {tr.ingress} (Cilium's route MTU, the mtu "
                  "of its routes through cilium_host)")
    found: Finding | None = None  # every branch clamped: said once, for the first
    for branch in tr.endpoints or (tr,):
        route = branch.route.route if branch.route is not None else None
        if branch.egress is None or branch.egress == tr.ingress or route is None:
            continue
        device_mtu = state.device_mtu(branch.egress, tr.flow.family)
        path = min(m for m in (route.mtu, device_mtu, pod_mtu) if m is not None)
        if path >= pod_mtu:
            continue
        where = (f"route {route.describe()}" if route.mtu == path
                 else f"dev {branch.egress} mtu {path}" if state.mtus.get(branch.egress) == path
                 else f"sysctl net.ipv6.conf.{branch.egress.replace('.', '/')}.mtu = {path} "
                      f"(dev {branch.egress} mtu {state.mtus.get(branch.egress)})")
        if tr.flow.family == 6 and path < _IPV6_MIN_MTU:
            return [_below_ipv6_minimum(tr, branch.egress, where, path, pod_mtu, sender=sender)]
        clamps = _mss_clamps(branch, route.mtu or device_mtu, path,
                             reply_mtu=_syn_ack_route_mtu(state, branch))
        if clamps is not None:
            found = found or _clamped(tr, branch.egress, where, path=path, pod_mtu=pod_mtu,
                                     clamps=clamps, sender=sender)
            continue
        if tr.flow.family == 4 and route.mtu is not None and route.mtu > path:
            return [_route_over_its_device(tr, route, branch.egress, path, pod_mtu,
                                            sender=sender)]
        error = ("fragmentation needed (ICMP type 3 code 4)" if tr.flow.family == 4
                 else "Packet Too Big (ICMPv6 type 2)")
        return [Finding(
            "path-mtu", f"packets over {path} bytes cannot leave by {branch.egress}, while "
            f"{sender} takes {pod_mtu}",
            where,
            f"the pod sends packets of up to {pod_mtu} bytes (and TCP segments sized for "
            f"them); the node drops each one over {path} and answers the pod with an ICMP "
            f"error, {error}, from which its kernel learns the smaller MTU"
            + (" (an IPv4 packet without the don't-fragment bit is fragmented instead)"
               if tr.flow.family == 4 else "")
            + ". Where that error is dropped (a firewall rule on ICMP in the node's output "
            "or on its way to the pod), the connection opens and small exchanges work, but "
            "large transfers stall: a black hole this trace of the flow's first, small "
            "packet does not show (the doctor follows that error through the node's output "
            "and postrouting chains: pmtu-error-dropped names a rule dropping it)",
            severity="warning",
            advice=f"make the pods' MTU at most {path}: {_pods_mtu_settings(path)}; or "
                   "clamp TCP's MSS to the path's MTU on the node (nft: tcp flags syn tcp "
                   "option maxseg size set rt mtu, in a forward chain; iptables: -t mangle "
                   "-A FORWARD -p tcp --tcp-flags SYN,RST SYN -j TCPMSS "
                   "--clamp-mss-to-pmtu), which k3snet does not write and which helps TCP "
                   "alone; and let that ICMP error through to the pods"),
            *_own_pmtu_errors(state, tr, branch, path=path, pod_mtu=pod_mtu, route=route,
                             device_mtu=device_mtu)]
    return [found] if found is not None else []


def _own_pmtu_errors(state: NodeState, tr: Trace, branch: Trace, *, path: int, pod_mtu: int,
                     route: RouteEntry, device_mtu: int | None) -> list[Finding]:
    """:func:`_own_pmtu_error` for each error the node sends the pod. An IPv6 route's
    ``mtu`` not locked is met after postrouting, below its device's MTU; where the pod's
    packets are larger than the device's MTU too, ``ip6_forward`` answers them first,
    before postrouting, and the pod sends packets the route's mtu answers only once it
    learnt the device's: a rule dropping either error leaves it without the path's MTU (a
    lab's counters: a drop by cni0 stalls the pod at 1500 with the late error let
    through). A rule dropping both is named once. A bundle that does not say the lock
    (:attr:`NodeState.mtu_locks_known`) is judged both ways (:func:`_lock_unknown`)."""
    egress = branch.egress or ""
    late = (tr.flow.family == 6 and route.mtu == path
            and (device_mtu is None or device_mtu > path))

    def judged(*, late: bool) -> list[Finding]:
        return _own_pmtu_errors_as(state, tr, branch, egress, path=path, pod_mtu=pod_mtu,
                                   device_mtu=device_mtu, late=late)

    if late and not state.mtu_locks_known:  # judged both ways: what differs is said so
        return _lock_unknown(judged(late=True), judged(late=False))
    return judged(late=late and not route.mtu_locked)


def _own_pmtu_errors_as(state: NodeState, tr: Trace, branch: Trace, egress: str, *, path: int,
                        pod_mtu: int, device_mtu: int | None, late: bool) -> list[Finding]:
    """:func:`_own_pmtu_errors` where the route's mtu is not locked (``late``) or is."""
    found = _own_pmtu_error(state, tr, branch, egress, path, late=late)
    if not late or device_mtu is None or device_mtu >= pod_mtu:
        return found
    early = _own_pmtu_error(state, tr, branch, egress, device_mtu)
    return early + [f for f in found if f.where not in {e.where for e in early}]


def _lock_unknown(unlocked: list[Finding], locked: list[Finding]) -> list[Finding]:
    """The findings of a bundle that does not say whether an IPv6 route's mtu is locked
    (no ``routes-v6.txt``: made before k3snet captured it), judged both ways: those of
    both readings as the locked one says them (no word on the lock), and each of one
    reading alone as not judged (info), saying on which lock it depends."""
    def key(f: Finding) -> tuple[str, str, str]:
        return f.code, f.where, f.severity

    unlocked_keys, locked_keys = {key(f) for f in unlocked}, {key(f) for f in locked}
    found = [f for f in locked if key(f) in unlocked_keys]
    for reading, alone in (("not locked", [f for f in unlocked if key(f) not in locked_keys]),
                           ("locked", [f for f in locked if key(f) not in unlocked_keys])):
        found += [attrs.evolve(
            f, severity="info",
            what=f"{f.what}, if the route's mtu is {reading}: the lock is unknown",
            why=f"{f.why}. The bundle does not say whether the route's mtu is locked (it has "
                "no routes-v6.txt, the one listing that says it: made by an older k3snet), "
                "and the finding depends on it",
            advice=(f"{f.advice}; " if f.advice else "")
            + "to judge it, capture the node again (k3snet observe --save) or add "
              "routes-v6.txt (ip -6 route show table all) to the bundle") for f in alone]
    return found


def _cilium_route_mtu(state: NodeState, ingress: str, family: int) -> int | None:
    """Cilium's route MTU where the pod's packets arrive on one of its veths (``lxc*``,
    the pod's ``/32`` or ``/128`` endpoint route with ``enable-endpoint-routes``): the
    ``mtu`` the routes of the family through ``cilium_host`` carry (those to other
    nodes' pods, in tunnel mode), when they carry one and the same. Cilium's CNI
    plugin writes that route MTU into the pod's own default route
    (connector.IPv4Routes / IPv6Routes, ``conf.RouteMTU``), the veth keeping the
    device MTU: in tunnel mode the pod sends at most the tunnel's MTU
    (1450 behind 1500), whatever its interface takes. The main table's routes only:
    with IPsec, those of Cilium's table 200 carry the post-encryption MTU. None: not a
    Cilium pod, or no such single mtu (a pod's routes the capture does not hold are not
    guessed)."""
    if not ingress.startswith("lxc"):
        return None
    mtus = {r.mtu for r in state.routes.get(family, ())
            if r.device == "cilium_host" and r.mtu is not None and r.table == 254}
    return next(iter(mtus)) if len(mtus) == 1 else None


def _pmtu_error(state: NodeState, tr: Trace) -> list[Finding]:
    """The ICMP error path MTU discovery needs (IPv4 fragmentation needed, IPv6 Packet
    Too Big), sent back by a router beyond the node whose link is smaller than the pod's
    packets, dropped by the node's rules on its way to the pod
    (:func:`~k3snet.doctor.trace.pmtu_error_steps`): a black hole for large packets the
    trace of the flow's first, small packet does not show, whatever the node's own
    MTUs. Said as not judged where a rule the doctor cannot evaluate could drop it;
    nothing where the flow is blocked or the rulesets were not read (other findings say
    so), nor where it leaves towards pods (a local endpoint, an overlay: no router of
    the underlay answers the pod there, the node's tunnel takes its errors)."""
    if (tr.verdict is Verdict.BLOCKED or state.unread_rulesets()
            or _pod_facing(tr.egress, tr)):
        return []
    steps = pmtu_error_steps(state, tr)
    _, _, error = PMTU_ERRORS[tr.flow.family]
    why = ("a router on the way whose link is smaller than the pod's packets drops each "
           f"one too large (IPv6 routers never fragment; IPv4 packets of TCP and most UDP "
           f"carry don't-fragment) and answers with {error}, from which the pod's kernel "
           "learns the path's MTU")
    return _error_dropped(
        steps, f"the {error} a router beyond the node sends back", tr.flow.source, why,
        where="wherever the path beyond the node is smaller than the pods' MTU",
        advice="let ICMP errors related to the pods' connections through the forward path before "
        "that rule (nft: ct state related accept; iptables: -m conntrack --ctstate RELATED "
        "-j ACCEPT), or take the ICMP type out of the rule (a raw NOTRACK / notrack one "
        "too: untracked, the error is not translated back to a masqueraded pod); k3snet "
        "writes no such rule")


def _own_pmtu_error(state: NodeState, tr: Trace, branch: Trace, egress: str,
                    path: int, *, late: bool = False) -> list[Finding]:
    """The ICMP error the node itself sends a pod whose packets are too large for its way
    out (``egress``, ``path`` bytes), dropped by a rule of its output path
    (:func:`~k3snet.doctor.trace.own_pmtu_error_steps`): the pod never learns the
    smaller MTU, and its large packets die at the node. Said as not judged where a rule
    the doctor cannot evaluate could drop it; nothing where the flow is blocked or the
    rulesets were not read. ``late``: an IPv6 route's ``mtu`` not locked, met after
    postrouting (a masqueraded packet's error then comes from the address it was given)."""
    if tr.verdict is Verdict.BLOCKED or state.unread_rulesets():
        return []
    _, _, error = PMTU_ERRORS[tr.flow.family]
    why = (f"the node drops each of the pod's packets over {path} bytes that it forwards "
           f"by {egress} and answers the pod with {error}, from which the pod's kernel "
           "learns the smaller MTU; that error is the node's own and leaves by its output "
           "chains, then postrouting")
    if late:
        why += (" (the route's mtu is not locked: IPv6 forwards the packet up to the "
                "device's MTU, and the node answers once it went through postrouting, a "
                "masqueraded one from the address it was given, by lo)")
    return _error_dropped(
        own_pmtu_error_steps(state, branch, after_postrouting=late),
        f"the {error} the node sends", tr.flow.source,
        why, where=f"over {path} bytes by {egress}",
        advice="let ICMP errors related to the pods' connections through the node's output path "
        "before that rule (nft: ct state related accept in the output chain; iptables: -A "
        "OUTPUT -m conntrack --ctstate RELATED -j ACCEPT), or take the ICMP type out of the "
        "rule; or make the pods' MTU at most the way out's (the path-mtu finding); k3snet "
        "writes no such rule")


def _error_dropped(steps: tuple[Step, ...], sent: str, pod: object, why: str, *,
                   where: str, advice: str) -> list[Finding]:
    """``pmtu-error-dropped`` from the steps of a PMTU error's way to the pod: a warning
    naming the rule that drops it, an info naming the rules that could, else nothing.
    ``sent`` says who sends it, ``where`` where the pod's large packets then die."""
    drop = next((s for s in steps if s.outcome == "drop"), None)
    if drop is not None and drop.certain:
        return [Finding(
            "pmtu-error-dropped", f"{sent} for the pod's too large packets is dropped on "
            f"its way to {pod}",
            _at(drop),
            why + "; dropped here, the pod never learns it: the connection opens and small "
            f"exchanges work, but large transfers stall {where} (a black hole the flow's "
            "own, small packets do not show)",
            severity="warning", advice=advice)]
    doubtful = [s for s in steps if s.outcome in ("unknown", "drop") and not s.certain]
    if not doubtful:
        return []
    return [Finding(
        "pmtu-error-dropped", f"whether {sent} reaches {pod} cannot be judged",
        "; ".join(_at(s) for s in doubtful[:3]),
        why + f"; the doctor cannot evaluate {'these rules' if len(doubtful) > 1 else 'this rule'}"
        ", which would drop it if they matched",
        severity="info",
        advice="check that the rule lets ICMP errors related to the pods' connections "
               "through")]


_MSS_HEADERS = {4: 40, 6: 60}
"""What TCP's MSS leaves out of a packet: the IPv4 (IPv6) and TCP headers."""


def _syn_ack_route_mtu(state: NodeState, branch: Trace) -> int | None:
    """The MTU ``--clamp-mss-to-pmtu`` (nft's ``rt mtu``) clamps the SYN-ACK to: the
    smaller of its own route's (to the pod) and that of the route the node itself takes
    to the SYN-ACK's source, the endpoint (xt_TCPMSS's tcpmss_reverse_mtu, nft_rt's
    get_tcpmss: a lookup by that destination alone, no source, no mark, no ``iif``), each
    the route's ``mtu``, else its device's. Not the pods' route where a policy rule (``iif
    cni0``, ``from`` the pods) alone leads to it: the node's own may carry no ``mtu``.
    None: that lookup finds no route."""
    fam = branch.flow.family
    own = lookup(state.routes[fam], state.rules[fam], branch.target,
                 ignore_linkdown=state.linkdown_ignored(fam))
    if not own.ok or own.route is None or own.route.device is None:
        return None
    mtus = [own.route.mtu or state.device_mtu(own.route.device, fam)]
    back = branch.reply_route.route if branch.reply_route is not None else None
    if back is not None and back.device is not None:
        mtus.append(back.mtu or state.device_mtu(back.device, fam))
    known = [m for m in mtus if m is not None]
    return min(known) if known else None


def _mss_clamps(branch: Trace, route_mtu: int | None, path: int, *,
                reply_mtu: int | None) -> tuple[Step, Step] | None:
    """The rules clamping the MSS of the branch's SYN and of its SYN-ACK to fit ``path``,
    where the trace ran them (in the kernel's order of chains, only where the flow's
    packets matched), or None.

    The pod sends segments of the MSS the SYN-ACK gives it, and the destination those
    of the SYN's: both are needed. ``--clamp-mss-to-pmtu`` (nft's ``rt mtu``) sets the
    route's MTU less the headers once the packet is routed (forward, postrouting; the
    kernel refuses both in prerouting, where the packet has no route yet): the route's
    ``mtu``, else its device's (the kernel's ``dst_mtu``; for the SYN-ACK
    ``reply_mtu``, :func:`_syn_ack_route_mtu`, which the node's own route to the
    endpoint decides), which fits unless the route's mtu is over its device's (IPv4 or
    IPv6: the kernel takes the route's). ``--set-mss N``
    (nft's ``set N``) fits when N and the headers do, in any chain."""
    if branch.flow.protocol != "tcp":
        return None  # clamping helps TCP alone
    headers = _MSS_HEADERS[branch.flow.family]
    found: dict[str, Step] = {}
    for step in branch.steps:
        if step.code != "mss-clamp" or step.direction in found:
            continue
        to = step.detail.rpartition(" to ")[2]
        mtu = route_mtu if step.direction == "original" else reply_mtu
        fits = (int(to) + headers <= path if to.isdigit()
                else step.stage in ("forward", "postrouting")
                and mtu is not None and mtu <= path)
        if fits:
            found[step.direction] = step
    if "original" in found and "reply" in found:
        return found["original"], found["reply"]
    return None


def _clamped(tr: Trace, egress: str | None, where: str, *, path: int, pod_mtu: int,
             clamps: tuple[Step, Step], sender: str) -> Finding:
    """A TCP flow whose SYN and SYN-ACK cross MSS clamps fitting the smaller way out."""
    rules = dict.fromkeys(_at(s, s.detail.partition(": clamps")[0]) for s in clamps)
    return Finding(
        "path-mtu", f"packets over {path} bytes cannot leave by {egress}, while "
        f"{sender} takes {pod_mtu}, and TCP's MSS is clamped to fit "
        f"by {'; '.join(rules)}",
        where,
        "the SYN and its SYN-ACK cross the clamp, so each end sends TCP segments that fit "
        f"{path} bytes and no ICMP error is needed; other protocols (UDP, ICMP) still "
        "send packets of the pods' MTU",
        severity="info")


def _pods_mtu_settings(mtu: int) -> str:
    """Where each CNI takes its pods' MTU from, and the value giving them ``mtu``."""
    return ("the CNI's setting, taken by pods created after the CNI restarts (flannel, "
            "v0.21.3 and later, gives pods its Backend's MTU option less the "
            f"encapsulation's overhead, as subnet.env's FLANNEL_MTU: MTU: {mtu + 50} for "
            f"vxlan, MTU: {mtu + 80} for wireguard, which k3snet writes from the backend's "
            "options (spec cni.flannel.backend.options): check FLANNEL_MTU afterwards; "
            "host-gw takes the interface's MTU and has no such option; Calico: veth_mtu "
            "in the calico-config ConfigMap, or the operator's Installation "
            "spec.calicoNetwork.mtu, whose 0 takes the smallest of FelixConfiguration's "
            "ipipMTU / vxlanMTU / wireguardMTU of the encapsulations in use, else the "
            "host's; Cilium: mtu in the cilium-config ConfigMap, its pods' interfaces' MTU)")


_IPV6_MIN_MTU = 1280
"""The smallest MTU of an IPv6 link (RFC 8200): no IPv6 host takes a smaller path MTU, and
the kernel turns IPv6 off on an interface set below it."""


def _below_ipv6_minimum(tr: Trace, egress: str | None, where: str, path: int,
                        pod_mtu: int, *, sender: str) -> Finding:
    """An IPv6 way out below 1280 (only a route's ``mtu`` can be: an interface under 1280
    has no IPv6): a hole ICMP does not close, and no pods' MTU can go under it."""
    return Finding(
        "path-mtu", f"packets over {path} bytes cannot leave by {egress}, below "
        f"{_IPV6_MIN_MTU}, the smallest MTU of IPv6, while {sender} takes {pod_mtu}",
        where,
        f"every IPv6 link carries {_IPV6_MIN_MTU} bytes (RFC 8200), so no host takes a path "
        f"MTU below it: the node answers each packet over {path} with a Packet Too Big "
        f"(ICMPv6 type 2) the pod cannot follow, and packets of {path + 1} to "
        f"{_IPV6_MIN_MTU} bytes never pass, whether or not that error gets through: the "
        "connection opens and large transfers stall, which this trace of the flow's "
        "first, small packet does not show",
        severity="warning",
        advice=f"raise the route's mtu to at least {_IPV6_MIN_MTU} (ip -6 route change "
               f"... mtu {_IPV6_MIN_MTU}), or route the flow another way; the pods' MTU "
               f"cannot go under {_IPV6_MIN_MTU} (the kernel turns IPv6 off on an "
               "interface below it), and k3snet writes no such route")


def _route_over_its_device(tr: Trace, route: RouteEntry, egress: str, device_mtu: int,
                           pod_mtu: int, *, sender: str) -> Finding:
    """An IPv4 route's ``mtu`` over its device's: a forwarded packet is checked against
    the route's alone and handed to the device, which drops it, so the node sends no
    ICMP error and no pod learns the smaller MTU. (IPv6 checks a forwarded packet against
    the device's unless the route's mtu is locked, which ``ip -j`` does not tell: there,
    the warning of any smaller way out.)"""
    largest = min(pod_mtu, route.mtu or pod_mtu)
    return Finding(
        "path-mtu", f"packets over {device_mtu} bytes cannot leave by {egress}, while "
        f"{sender} takes {pod_mtu}, and the route's mtu "
        f"{route.mtu} is over {egress}'s",
        f"route {route.describe()} (dev {egress} mtu {device_mtu})",
        f"the kernel checks a forwarded IPv4 packet against the route's mtu ({route.mtu}), "
        f"not its device's, and hands {egress} packets it drops: those of {device_mtu + 1} "
        f"to {largest} bytes are lost with no ICMP error (fragmentation needed), so no pod "
        "learns the smaller MTU and no rule letting ICMP through helps; the connection "
        "opens and large transfers stall, which this trace of the flow's first, small "
        "packet does not show",
        severity="warning",
        advice=f"lower the route's mtu to at most {device_mtu}, or leave it out ({egress}'s "
               f"MTU then counts, and the node answers larger packets with the ICMP error), "
               f"or raise {egress}'s MTU if its link carries {largest}; k3snet writes no "
               "such route")


def _service_findings(state: NodeState, tr: Trace) -> list[Finding]:
    """The destination inside a service CIDR, or translated to a Service's endpoint."""
    dst = tr.flow.destination
    cidr = next((c for c in state.service_cidrs if c.version == dst.version and dst in c), None)
    dnat = next((s for s in tr.steps if s.direction == "original" and s.outcome == "nat"
                 and s.stage == "prerouting"), None)
    if cidr is None and dnat is None:
        return []
    endpoints = tr.endpoints or (tr,)
    to = ", ".join(e.describe_target() for e in endpoints)
    sent = (f"kube-proxy's DNAT sends it to {to}" + (
        " (one endpoint picked at random per connection)" if len(endpoints) > 1 else "")
        if dnat is not None else "")
    if cidr is None:
        assert dnat is not None
        return [Finding(
            "service-dnat", f"{dst} is translated to a Service endpoint: {sent}",
            f"{dnat.where}: {dnat.detail}",
            "the trace follows the endpoint; a host outside the cluster with this address is "
            "never reached while the translation is in place",
            severity="info",
            advice="if you meant a host outside the cluster, the Service's address overlaps it: "
                   "choose a service CIDR that does not (and give it with --service-cidr)")]
    why = (f"{sent}, not to a host with that address outside the cluster" if dnat is not None
           else "no Service uses this address now, but kube-proxy sends any ClusterIP it is "
                "given to the Service's endpoints, and kube-proxy's nftables mode drops traffic "
                "to the range's unallocated addresses")
    return [Finding(
        "destination-in-service-cidr", f"{dst} lies inside the service CIDR {cidr}",
        f"service CIDR {cidr}" + (f"; {dnat.where}: {dnat.detail}" if dnat else ""), why,
        severity="warning",
        advice="choose a service CIDR that does not overlap the destination (K3s "
               "--service-cidr, set when the cluster is created)")]


def diagnose(state: NodeState, flow: Flow, *, observed: State | None = None,
             upstream_routes_pods: bool = False) -> Diagnosis:
    """Trace ``flow``, explain each blocking step, and plan the fix.

    The plan is computed against ``observed`` (what k3snet's backends see on the
    node; default: an empty state, i.e. every fix object is added) with the fix
    objects added to its owned ones.
    """
    first = trace(state, flow, upstream_routes_pods=upstream_routes_pods)
    findings: list[Finding] = []
    changes: list[_Change | None] = []  # each finding's change of the node state
    current, tr = state, first
    seen_codes: set[tuple[str, str]] = set()
    unread = bool(state.unread_rulesets())
    for _ in range(_MAX_ROUNDS):
        step = tr.blocked_at
        # An uncertain trace (unknown verdict) that drops somewhere is explained too.
        if tr.verdict is Verdict.REACHES or step is None:
            break
        if unread and step.code in _FROM_RULES:
            break  # found in rulesets taken as empty, not read: no finding, no fix
        finding, change = _explain(current, tr, step)
        if (finding.code, finding.where) in seen_codes:
            break  # the fix did not help: do not loop
        seen_codes.add((finding.code, finding.where))
        if change is None:
            # Nothing k3snet can make lets the trace go on: what lies past this step
            # (forwarding, NAT, the replies) is not looked at until it is fixed.
            finding = attrs.evolve(finding, why=f"{finding.why}; {_STOPS_HERE}")
        findings.append(finding)
        changes.append(change)
        if change is None:
            break
        current = change(current)
        tr = trace(current, flow, upstream_routes_pods=upstream_routes_pods)
    base = observed if observed is not None else State()
    have = base.by_key
    # A fix object k3snet owns already with another value is its spec's: replaced here,
    # the next `apply -f SPEC` (the agent's pass) put the spec's value back. Not planned:
    # the finding names the spec's value and the edit, and the prediction leaves out the
    # change of its finding, so `after` is never a fix the plan does not carry.
    withheld = {f.key: have[f.key] for finding in findings for f in finding.fix
                if f.key in have and have[f.key].written and have[f.key] != f}
    if withheld:
        held = [any(o.key in withheld for o in f.fix) for f in findings]
        findings = [_owned_by_spec(f, withheld) if h else f for f, h in zip(findings, held,
                                                                           strict=True)]
        current = state
        for change, h in zip(changes, held, strict=True):
            if change is None or h:
                break  # the later changes were found with this one made
            current = change(current)
        tr = trace(current, flow, upstream_routes_pods=upstream_routes_pods)
    fixes: list[NetObject] = []
    for finding in findings:
        fixes += [f for f in finding.fix if f not in fixes]
    exempted = any(f.code == "untracked" for f in findings)  # said already, and blocking
    findings += [f for f in _context(state, first)
                 if not (exempted and f.code == "untracked-flow")]
    # Drift the backends found in their own objects (a rule edited, a table made dormant)
    # is not wanted: the plan repairs it, as apply's does. Kept, a dormant table's
    # masquerade counted as in place, the plan was empty, and the fix changed nothing.
    kept = [o for o in base.owned if o.written]
    added = [f for f in fixes if f.key not in have]
    wanted = State(owned=[*kept, *added])
    return Diagnosis(first, tuple(findings), State(owned=fixes), wanted, plan(base, wanted), tr,
                     _taken_back(kept, added) if observed is not None else ())


#: Where a spec sets each kind of fix object (docs/spec.md).
_SPEC_KEYS = {"sysctl": "sysctls", "route": "destinations[].gateway, .device",
              "nat": "masquerade or destinations[].masquerade",
              "forward": "destinations[].forward or forward"}


def _spec_edit(obj: NetObject) -> str:
    """``obj`` and the spec key that sets it."""
    if isinstance(obj, Sysctl):
        return f"sysctls: {{{obj.name}: {obj.value}}}"
    return f"{obj.describe()} ({_SPEC_KEYS.get(obj.kind, 'the spec')})"


def _owned_by_spec(finding: Finding, withheld: dict[tuple[Any, ...], NetObject]) -> Finding:
    """``finding`` without the fix objects k3snet owns with another value (``withheld``:
    key -> the owned object), its advice naming the owned value and the spec's edit."""
    owned = [withheld[o.key] for o in finding.fix if o.key in withheld]
    wanted = [o for o in finding.fix if o.key in withheld]
    advice = (f"k3snet's own spec sets {'; '.join(o.describe() for o in owned)}, and the "
              "next `k3snet apply -f SPEC` or agent pass puts that back: --fix does not "
              f"replace it; change the spec ({'; '.join(_spec_edit(o) for o in wanted)}) "
              "and apply it")
    return attrs.evolve(finding, fix=tuple(o for o in finding.fix if o.key not in withheld),
                        advice=f"{finding.advice}; {advice}" if finding.advice else advice)


def _taken_back(kept: list[NetObject], added: list[NetObject]) -> tuple[str, ...]:
    """The warning for a fix that adds ``added`` to what k3snet owns through the fix's
    backends (``kept``: from a spec, the agent or an earlier fix): ``apply -f SPEC`` and
    the agent converge to the spec alone and delete what it does not name; where that
    leaves a backend owning nothing, or nothing but sysctls where it owned a route
    (:func:`k3snet.converge.teardown_emptied`), their teardown guard refuses it instead."""
    from k3snet.converge import teardown_emptied  # noqa: PLC0415 - only with --fix

    if not added:
        return ()
    keys = "; ".join(_spec_edit(o) for o in added)
    backends: dict[str, set[str]] = {}
    for obj in (*kept, *added):  # the kinds the fix's backends were read for
        backends.setdefault(FIX_BACKENDS[obj.kind], set()).add(obj.kind)
    fixed = State(owned=[*kept, *added])
    if kept and not teardown_emptied(backends, fixed, plan(fixed, State(owned=kept))):
        return (f"k3snet owns {len(kept)} other object(s) through the same backend(s) here "
                "(from a spec applied by `k3snet apply -f SPEC` or the agent, or an earlier "
                "--fix): the next apply of a spec or agent pass deletes this fix again "
                f"unless the spec carries it: add {keys} to the spec",)
    return ("the fix is all k3snet will own through its backend(s) here (or all its "
            "routes): a spec applied later (`k3snet apply -f SPEC`, the agent) that does "
            "not carry it deletes it, which the teardown guard refuses (nothing applied "
            f"until the spec carries it, or with --allow-teardown): add {keys} to the spec",)
