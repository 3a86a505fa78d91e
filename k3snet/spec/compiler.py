"""Compile: the spec, node facts and CNI targets (values) to the desired :class:`State`.

``compile`` is the one place a spec becomes objects, for node kinds and CNI
kinds alike. It never observes: what it needs of a node comes in as
:class:`NodeFacts`, what it needs of the CNI as targets (plain strings); a
check against observed state (flannel's ``Network``) is an expectation the
plan judges against what the backend observed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import attrs

from k3snet._gc import gc_paused
from k3snet._regex import lazy_pattern
from k3snet.errors import ModelError, Problem, SpecError
from k3snet.model import NetObject, validate_interface_name
from k3snet.model.calico_selector import selects_everything
from k3snet.model.cidr import (
    Address,
    Network,
    address_text,
    aggregate,
    contains,
    overlaps,
    parse_network,
    subtract,
)
from k3snet.model.cilium import CiliumConfig, CiliumMasquerade
from k3snet.model.cni import (
    BLOCK_SIZE_RANGE,
    DEFAULT_BLOCK_SIZE,
    CalicoNatDestination,
    CalicoPodCIDR,
    CalicoPoolsReadable,
    EncapsulationMode,
    FlannelConfig,
    FlannelNetworks,
    IPPool,
    effective_config,
    pool_name,
    pool_selector_problem,
)
from k3snet.model.forward import ForwardRule
from k3snet.model.nat import MasqueradeRule, SnatRule
from k3snet.model.route import Route
from k3snet.model.state import State
from k3snet.model.sysctl import ALIASES, Sysctl
from k3snet.spec.model import (
    BlockSizes,
    CalicoSettings,
    CiliumSettings,
    Destination,
    MasqueradePolicy,
    Spec,
)
from k3snet.spec.validate import block_size_problems, validate

__all__ = [
    "NodeFacts",
    "check_pod_cidr",
    "compile",
    "compile_cilium",
    "compile_flannel",
    "compile_ippools",
    "held_destinations",
    "nat_exemptions",
    "pod_cidr_problems",
]

LINK_LOCAL = {4: parse_network("169.254.0.0/16"), 6: parse_network("fe80::/10")}
FORWARDING_SYSCTL = {4: "net.ipv4.ip_forward", 6: "net.ipv6.conf.all.forwarding"}


def _networks(values: Iterable[str | Network]) -> tuple[Network, ...]:
    if isinstance(values, str):
        raise ModelError(f"expected a list of CIDRs, got the string {values!r}")
    return tuple(parse_network(v) for v in values)


def _interfaces(
    value: Mapping[str, Iterable[str | ipaddress.IPv4Interface | ipaddress.IPv6Interface]],
) -> Mapping[str, tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...]]:
    # A read-only view of a copy: facts are a value, as frozen as the rest of NodeFacts.
    result = {}
    for name, addresses in value.items():
        validate_interface_name(name)
        try:
            result[name] = tuple(ipaddress.ip_interface(a) for a in addresses)
        except ValueError as exc:
            raise ModelError(f"interface {name}: {exc}") from exc
    return MappingProxyType(result)


@attrs.frozen
class NodeFacts:
    """What compile needs to know about one node.

    ``interfaces`` maps interface names to their addresses *with* prefix
    (``"192.168.1.5/24"``): they give the connected prefixes a gateway must lie
    in. ``routes`` are other prefixes the node already reaches (a gateway may lie
    in one of them). Empty facts skip the checks that need them.
    """

    interfaces: Mapping[str, tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...]] = (
        # Not hashed (a mapping is not hashable): equal facts have equal routes and
        # hostname, so their hashes stay equal.
        attrs.field(factory=dict, converter=_interfaces, hash=False)
    )
    routes: tuple[Network, ...] = attrs.field(default=(), converter=_networks)
    hostname: str | None = None

    def connected(self) -> tuple[Network, ...]:
        """Prefixes of the node's own interface addresses."""
        return tuple(i.network for addrs in self.interfaces.values() for i in addrs)

    def reaches(self, address: Address) -> bool:
        """True when ``address`` is in a connected or routed prefix."""
        # Not one tuple of both: with 10 000 routes, building it for each of 10 000
        # destinations was quadratic (benchmarks/bench_cold.py, routes).
        return (any(contains(n, address) for n in self.connected())
                or any(contains(n, address) for n in self.routes))


def compile(  # noqa: A001 - the name is the concept
    spec: Spec,
    facts: NodeFacts | None = None,
    *,
    flannel_targets: Iterable[str] = (),
    cilium_targets: Iterable[str] = (),
    kinds: Iterable[str] | None = None,
    hold: Iterable[int] = (),
) -> State:
    """The desired state of every kind, from values alone: never observes anything.

    * node kinds: the routes, sysctls, forward and NAT rules one node must own;
      ``facts`` (optional) lets compile check that devices exist and gateways
      are reachable;
    * ``flannel``, for each of ``flannel_targets`` (``file:/path`` or
      ``configmap:ns/name``, the targets of the flannel backends in use): the
      config of ``cni.flannel`` (:func:`compile_flannel`), or, when the spec
      leaves flannel's config alone, the expectation that its networks are the
      pod CIDRs (:class:`~k3snet.model.cni.FlannelNetworks`: the plan reports a
      config that disagrees as a conflict);
    * ``ippool``, when the spec has ``cni.calico`` (:func:`compile_ippools`);
    * ``cilium``, for each of ``cilium_targets`` (``configmap:ns/cilium-config``):
      the keys ``cni.cilium`` sets, and the expectation that Cilium masquerades
      the destinations as the spec says (:func:`compile_cilium`).

    Every problem raises in one :class:`~k3snet.errors.SpecError`. A backend
    takes its part with ``.only(backend.capabilities)``; ``kinds`` gives the same
    result as ``.only(kinds)`` without building the other kinds' objects (every
    check still runs: the same spec is refused whatever the kinds).

    ``hold``: the indices of destinations whose *routes* are left out, their
    device and gateway not checked against ``facts`` (see :func:`held_destinations`:
    the agent converges the rest of a spec while some routes cannot be put on the
    node). Their forward and NAT rules are compiled as usual: they name the
    destination and the device, never the gateway, and match a device by name.

    >>> from k3snet.spec import seed_spec
    >>> state = compile(seed_spec())
    >>> for obj in state: print(obj)
    sysctl net.ipv4.ip_forward = 1
    route 192.168.2.0/24 via 192.168.1.1 dev eth0 table main metric 0 proto k3snet
    forward accept 10.42.0.0/16 -> 192.168.2.0/24 oif eth0 (+ replies)
    masquerade 10.42.0.0/16 -> 192.168.2.0/24 oif eth0
    """
    # Like reading (k3snet.spec.load): tens of thousands of objects, none in a cycle.
    with gc_paused(len(spec.destinations)):
        return _compile(spec, facts, tuple(flannel_targets), cilium_targets, kinds,
                        hold=frozenset(hold))


def held_destinations(spec: Spec, error: SpecError) -> frozenset[int]:
    """The destinations (indices) whose node facts alone made :func:`compile` refuse
    ``spec`` with ``error``: every problem is a destination's missing device or
    unreachable gateway on the node, and the spec is otherwise valid. Empty when any
    other problem is there (the spec is then refused whole).

    Compiled again with ``hold=`` these, the spec gives every object but their routes.
    """
    if not error.problems or validate(spec):
        return frozenset()
    held: set[int] = set()
    for problem in error.problems:
        found = _FACT_PATH.fullmatch(problem.path)
        if found is None or int(found[1]) >= len(spec.destinations):
            return frozenset()
        held.add(int(found[1]))
    return frozenset(held)


# The paths _fact_problems gives a destination's problems.
_FACT_PATH = lazy_pattern(r"destinations\[(\d+)\]\.(?:device|gateway)")


def _compile(spec: Spec, facts: NodeFacts | None, targets: tuple[str, ...],
             cilium_targets: Iterable[str], kinds: Iterable[str] | None, *,
             hold: frozenset[int] = frozenset()) -> State:
    problems = validate(spec)
    if facts is not None:
        problems += _fact_problems(spec, facts, hold)
    cni: list[NetObject] = []
    if targets:
        problems += _flannel_objects(spec, targets, cni)
    if spec.cni.calico is not None and not problems:
        problems += _calico_objects(spec, spec.cni.calico, cni)
    cni += [obj for target in cilium_targets for obj in compile_cilium(spec, target=target)]
    if problems:
        raise SpecError(problems)
    wanted = None if kinds is None else frozenset(kinds)
    owned = cni + _node_objects(spec, wanted, hold)
    if wanted is not None:
        owned = [o for o in owned if o.kind in wanted]
    return State(owned=owned)


def _node_objects(spec: Spec, wanted: frozenset[str] | None,
                  hold: frozenset[int] = frozenset()) -> list[NetObject]:
    """Routes (but those of the destinations in ``hold``), forward and NAT rules,
    sysctls; of the ``wanted`` kinds when given."""
    # A cold `k3snet apply` with one backend needs one kind: building the 20 000 others
    # of a 10k-destination spec was a third of its compile (benchmarks/bench_cold.py).
    routes, forward, nat = (wanted is None or k in wanted for k in ("route", "forward", "nat"))
    owned: list[NetObject] = []
    families_in_use: set[int] = set()
    pods_of = {family: spec.cluster.pods(family) for family in (4, 6)}
    kept = (_kept_inside(spec.destinations)
            if nat and spec.masquerade.mode == "destinations" else {})
    for i, dest in enumerate(spec.destinations):
        pods = pods_of[dest.cidr.version]
        if routes and dest.routed and i not in hold:
            owned.append(Route(dest.cidr, gateway=dest.gateway, device=dest.device,
                               table=dest.table, metric=dest.metric))
        if forward and spec.forward.accept and dest.forward:
            owned += [ForwardRule(pod, dest.cidr, in_interface=spec.forward.in_interface,
                                  out_interface=dest.device) for pod in pods]
        if nat and spec.masquerade.mode == "destinations" and dest.masquerade:
            out = dest.device or spec.masquerade.out_interface
            exclude = dest.exclude
            if i in kept:
                exclude = aggregate([*exclude, *kept[i]])
                if exclude == (dest.cidr,):  # nothing of it is left to masquerade
                    continue
            owned += [_nat_rule(spec.masquerade, pod, dest.cidr, exclude, out) for pod in pods]
        if pods:
            families_in_use.add(dest.family)
    if spec.masquerade.mode == "all":
        for pod in spec.cluster.pod_cidrs:
            rule = _nat_all_rule(spec, pod) if nat else None
            if rule is not None:
                owned.append(rule)
            families_in_use.add(pod.version)
    # The other name of the same kernel value counts too: ip_forward = 1 beside an
    # explicit conf.all.forwarding = 0 was written in turn with it by every apply.
    explicit = {name for s in spec.sysctls for name in (s.name, ALIASES.get(s.name)) if name}
    if spec.manage_forwarding:
        owned += [Sysctl(FORWARDING_SYSCTL[f], "1") for f in sorted(families_in_use)
                  if FORWARDING_SYSCTL[f] not in explicit]
    owned += spec.sysctls
    return owned


def _kept_inside(destinations: Sequence[Destination]) -> dict[int, list[Network]]:
    """For the index of each masqueraded destination, what the destinations strictly
    inside it keep from masquerading: each one's CIDR when it has ``masquerade: false``,
    and every one's ``exclude`` (``{}`` for most specs: none keeps anything).

    Its rule excludes them, so that the most specific destination decides: with
    ``10.1.2.0/24`` (``masquerade: false``, or in the ``exclude`` of ``10.1.0.0/16``)
    inside a masqueraded ``10.1.0.0/16`` (or ``10.0.0.0/8``), the larger one's rule
    translated it, while mode ``all``, Calico (a disabled pool) and Cilium (an exempt
    CIDR) leave it alone. One pass over the destinations sorted by start, larger first,
    with a stack of those around the current one (CIDRs nest or are disjoint).
    """
    if all(d.masquerade and not d.exclude for d in destinations):
        return {}
    spans = sorted((d.cidr.version, int(d.cidr.network_address), d.cidr.prefixlen, i)
                   for i, d in enumerate(destinations))
    found: dict[int, list[Network]] = {}
    around: list[tuple[int, int, int]] = []  # (family, end, index) of the enclosing ones
    for version, start, length, i in spans:
        while around and (around[-1][0] != version or around[-1][1] <= start):
            around.pop()
        dest = destinations[i]
        kept = dest.exclude if dest.masquerade else (dest.cidr,)
        if kept:
            for _, _, outer in around:
                if destinations[outer].masquerade:
                    found.setdefault(outer, []).extend(kept)
        around.append((version, start + (1 << ((32 if version == 4 else 128) - length)), i))
    return found


def _nat_rule(
    policy: MasqueradePolicy,
    source: Network,
    destination: Network | None,
    exclude: Iterable[Network],
    out: str | None,
) -> MasqueradeRule | SnatRule:
    snat = policy.snat_address(source.version)
    if snat is not None:
        return SnatRule(source, destination=destination, exclude=exclude, out_interface=out,
                        random_fully=policy.random_fully, to_address=snat)
    return MasqueradeRule(source, destination=destination, exclude=exclude, out_interface=out,
                          random_fully=policy.random_fully)


def _nat_all_rule(spec: Spec, pod: Network) -> MasqueradeRule | SnatRule | None:
    """The rule of mode ``all`` for one pod CIDR; ``None`` when the exemptions cover every
    destination (ip-masq-agent's ``nonMasqueradeCIDRs: [0.0.0.0/0]``: nothing is NATed)."""
    family = pod.version
    policy = spec.masquerade
    keep = [n for n in policy.non_masquerade_cidrs if n.version == family]
    keep += spec.cluster.own(family)
    keep += [d.cidr for d in spec.destinations if d.family == family and not d.masquerade]
    keep += [e for d in spec.destinations if d.family == family for e in d.exclude]
    link_local = policy.masq_link_local if family == 4 else policy.masq_link_local_ipv6
    if not link_local:
        keep.append(LINK_LOCAL[family])
    if any(n.prefixlen == 0 for n in aggregate(keep)):
        return None
    return _nat_rule(policy, pod, None, keep, policy.out_interface)


def _fact_problems(spec: Spec, facts: NodeFacts, hold: frozenset[int] = frozenset()
                   ) -> list[Problem]:
    problems: list[Problem] = []
    known = set(facts.interfaces)
    # One verdict per distinct gateway and device: 10 000 destinations usually share a
    # few, and each verdict scans every connected and routed prefix of the node.
    verdicts: dict[tuple[Address, str | None], str | None] = {}
    for i, dest in enumerate(spec.destinations):
        if i in hold:
            continue
        path = f"destinations[{i}]"
        if known and dest.device is not None and dest.device not in known:
            problems.append(Problem(f"{path}.device", f"no interface {dest.device!r} on "
                                    f"{facts.hostname or 'the node'} "
                                    f"(has: {', '.join(sorted(known))})"))
        if dest.gateway is None:
            continue
        key = (dest.gateway, dest.device)
        if key not in verdicts:
            verdicts[key] = _gateway_problem(dest.gateway, dest.device, facts)
        message = verdicts[key]
        if message is not None:
            problems.append(Problem(f"{path}.gateway", message))
    out = spec.masquerade.out_interface
    if known and out is not None and out not in known:
        problems.append(Problem("masquerade.outInterface", f"no interface {out!r} on the node"))
    return problems


def _gateway_problem(gateway: Address, device: str | None, facts: NodeFacts) -> str | None:
    """Why ``gateway`` (through ``device``) cannot be used on the node of ``facts``."""
    owner = _owner_of(gateway, device, facts)
    if owner is not None:
        # The kernel takes an IPv4 route via the node's own address and ignores the
        # gateway (`ip route get` shows no `via`: it asks the link for each destination
        # itself, as on a connected network); IPv6 refuses it when applied.
        return (f"gateway {address_text(gateway)} is an address of "
                f"{facts.hostname or 'the node'} itself (on {owner}), never a next hop: the "
                "kernel takes an IPv4 route via it but ignores the gateway and sends to "
                "every destination as if it were on the link, and refuses an IPv6 one "
                "(\"Gateway can not be a local address\"); give the router's address, or "
                "leave the gateway out for a route through the device")
    if (facts.interfaces or facts.routes) and not facts.reaches(gateway):
        return (f"gateway {gateway} is not inside any connected or routed prefix of "
                f"{facts.hostname or 'the node'} ({_prefixes_text(gateway, facts)})")
    if (device is not None and device in facts.interfaces
            and not any(contains(a.network, gateway) for a in facts.interfaces[device])
            and not any(contains(n, gateway) for n in facts.routes)):
        return f"gateway {gateway} is not on {device}'s networks"
    return None


def _owner_of(address: Address, device: str | None, facts: NodeFacts) -> str | None:
    """The interface of ``facts`` that has ``address`` as its own (the first by name):
    a link-local IPv6 one only on the route's ``device`` (or its zone), as the kernel
    judges it (``via fe80::1 dev eth1`` is taken with ``fe80::1`` on ``eth0``: the
    router on eth1's link may have that address too)."""
    value = int(address)
    names: Iterable[str] = sorted(facts.interfaces)
    if isinstance(address, ipaddress.IPv6Address) and address.is_link_local:
        link = device or address.scope_id
        names = [link] if link is not None and link in facts.interfaces else []
    return next((name for name in names
                 if any(i.version == address.version and int(i.ip) == value
                        for i in facts.interfaces[name])), None)


_LISTED_PREFIXES = 8
"""Prefixes of the node a gateway problem names (the rest are counted)."""


def _prefixes_text(gateway: Address, facts: NodeFacts) -> str:
    """The node's prefixes of ``gateway``'s family, each once, the first
    :data:`_LISTED_PREFIXES` named: a router's 10 000 routes made a problem (and the
    agent's message, log line and Node annotation) of 200 KB."""
    prefixes = [str(n) for n in dict.fromkeys((*facts.connected(), *facts.routes))
                if n.version == gateway.version]
    if not prefixes:
        return f"none of IPv{gateway.version}"
    shown = ", ".join(prefixes[:_LISTED_PREFIXES])
    more = len(prefixes) - _LISTED_PREFIXES
    return f"{shown} and {more} more" if more > 0 else shown


# ---------------------------------------------------------------- flannel

SpecOrCidrs = Spec | str | Network | Iterable[str | Network]


def _pod_cidrs(spec_or_cidrs: SpecOrCidrs) -> tuple[Network, ...]:
    if isinstance(spec_or_cidrs, Spec):
        return tuple(spec_or_cidrs.cluster.pod_cidrs)
    if isinstance(spec_or_cidrs, str | ipaddress.IPv4Network | ipaddress.IPv6Network):
        return (parse_network(spec_or_cidrs),)
    return tuple(parse_network(c) for c in spec_or_cidrs)


def _one_network_per_family(pods: tuple[Network, ...]) -> list[Problem]:
    v4 = [p for p in pods if p.version == 4]
    v6 = [p for p in pods if p.version == 6]
    return [Problem("cluster.podCIDRs", f"flannel takes one IPv{f} network, the spec has "
                    f"{len(nets)}: {', '.join(map(str, nets))}")
            for f, nets in ((4, v4), (6, v6)) if len(nets) > 1]


def _flannel_objects(spec: Spec, targets: tuple[str, ...], out: list[NetObject]) -> list[Problem]:
    """Per flannel target: what ``cni.flannel`` sets, and the check of flannel's networks.

    The pod CIDRs become ``Network`` / ``IPv6Network`` only with ``setNetworks``;
    otherwise they are an expectation (never written), so a cluster whose
    flannel runs another network is told so instead of being re-addressed.
    """
    settings = spec.cni.flannel
    if settings is None or not targets:
        out += [FlannelNetworks(target, spec.cluster.pod_cidrs) for target in targets]
        return []
    problems = _one_network_per_family(tuple(spec.cluster.pod_cidrs))
    if problems:
        return problems
    if settings.backend_options and settings.backend_type is None:
        return [Problem("cni.flannel.backend.options", "needs cni.flannel.backend.type: k3snet "
                        "sets the options together with the type they belong to")]
    if not settings.set_networks:
        out += [FlannelNetworks(target, spec.cluster.pod_cidrs) for target in targets]
        configs = [FlannelConfig(target, backend_type=settings.backend_type,
                                 backend_options=dict(settings.backend_options),
                                 enable_nftables=settings.enable_nftables)
                   for target in targets]
        out += [config for config in configs if config.keys]  # nothing to set: nothing owned
        return []
    try:
        out += [compile_flannel(spec, target=target, backend_type=settings.backend_type,
                                backend_options=dict(settings.backend_options),
                                enable_nftables=settings.enable_nftables).ordered[0]
                for target in targets]
    except SpecError as exc:
        return list(exc.problems)
    return []


def pod_cidr_problems(
    spec_or_cidrs: SpecOrCidrs, config: FlannelConfig | State
) -> list[Problem]:
    """Every pod CIDR that disagrees with flannel's ``Network`` / ``IPv6Network``.

    ``spec_or_cidrs`` is a :class:`~k3snet.spec.Spec` or pod CIDRs; ``config`` a
    flannel config or an observed state (its effective config is used).
    """
    effective = effective_config(config) if isinstance(config, State) else config
    if effective is None:
        return []
    expected = FlannelNetworks(effective.target, _pod_cidrs(spec_or_cidrs))
    return [Problem(f"cluster.podCIDRs[{index}]", message)
            for index, message in expected.disagreements(effective)]


def check_pod_cidr(spec_or_cidrs: SpecOrCidrs, config: FlannelConfig | State) -> None:
    """Raise :class:`~k3snet.errors.SpecError` if a pod CIDR disagrees with flannel's network.

    >>> cfg = FlannelConfig("file:/etc/flannel.json", network="10.244.0.0/16")
    >>> check_pod_cidr(["10.42.0.0/16"], cfg)
    Traceback (most recent call last):
    ...
    k3snet.errors.SpecError: 1 problem:
      cluster.podCIDRs[0]: pod CIDR 10.42.0.0/16 disagrees with flannel's Network 10.244.0.0/16 \
in file:/etc/flannel.json: flannel gives pods addresses from 10.244.0.0/16, so rules for \
10.42.0.0/16 would miss them; make them equal
    """
    problems = pod_cidr_problems(spec_or_cidrs, config)
    if problems:
        raise SpecError(problems)


def compile_flannel(
    spec_or_cidrs: SpecOrCidrs,
    *,
    target: str,
    backend_type: str | None = None,
    backend_options: Mapping[str, Any] | None = None,
    enable_nftables: bool | None = None,
    extra: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
) -> State:
    """The flannel config k3snet wants on ``target``: the pod CIDRs as ``Network`` /
    ``IPv6Network`` (with ``EnableIPv6`` when there is an IPv6 one, and ``EnableIPv4:
    false`` when there is no IPv4 one: flannel enables IPv4 by default and refuses it
    without a ``Network``), and the given backend settings. Keys left unset stay
    flannel's.
    """
    pods = _pod_cidrs(spec_or_cidrs)
    problems = _one_network_per_family(pods)
    if problems:
        raise SpecError(problems)
    v4 = [p for p in pods if p.version == 4]
    v6 = [p for p in pods if p.version == 6]
    config = FlannelConfig(
        target,
        network=v4[0] if v4 else None,
        ipv6_network=v6[0] if v6 else None,
        enable_ipv4=None if v4 else False,
        enable_ipv6=True if v6 else None,
        enable_nftables=enable_nftables,
        backend_type=backend_type,
        backend_options=backend_options or {},
        extra=extra or {},
    )
    return State(owned=[config])


# ---------------------------------------------------------------- calico


def _exempt_pool(net: Network) -> IPPool:
    # disableBGPExport: Calico's BIRD advertises every route inside any pool's CIDR to its
    # BGP peers unless the pool says not to, disabled pools too, and it imports the host's
    # own routes: exempting 192.168.0.0/16 made every node advertise its LAN.
    low, high = BLOCK_SIZE_RANGE[net.version]
    block = min(high, max(DEFAULT_BLOCK_SIZE[net.version], net.prefixlen, low))
    return IPPool(pool_name("nonat", net), net, disabled=True, nat_outgoing=False,
                  block_size=block, disable_bgp_export=True)


def nat_exemptions(spec: Spec) -> tuple[Network, ...]:
    """The CIDRs the spec's masquerade policy exempts from NAT, as Calico can express them.

    Destinations with ``masquerade: false``, every ``exclude``, and in mode ``all``
    the ``nonMasqueradeCIDRs``; aggregated, without the pod CIDRs (already pools)
    and without link-local ranges (Calico refuses pools there; an explicit link-local
    exemption is a spec problem for the calico backend). Empty in mode ``off``.
    """
    policy = spec.masquerade
    if policy.mode == "off":
        return ()
    wanted: list[Network] = []
    for dest in spec.destinations:
        if not dest.masquerade:
            wanted.append(dest.cidr)
        wanted += dest.exclude
    if policy.mode == "all":
        wanted += policy.non_masquerade_cidrs
    holes = [*spec.cluster.pod_cidrs, *LINK_LOCAL.values()]
    result: list[Network] = []
    for net in aggregate(wanted):
        result += subtract(net, [h for h in holes if h.version == net.version])
    return tuple(aggregate(result))


def _link_local_problems(spec: Spec) -> list[Problem]:
    """Exemptions Calico cannot express: link-local ones (none in mode ``off``).

    Calico refuses IP pools overlapping ``169.254.0.0/16`` or ``fe80::/10``, and Felix
    masquerades pod traffic to every address outside all pools; so pods reach such a
    destination masqueraded whatever the spec says. Only the destinations' own
    exemptions are judged: mode ``all``'s ``nonMasqueradeCIDRs`` and its implicit
    link-local exemption (``masqLinkLocal: false``) are ip-masq-agent style lists,
    their link-local part is left out as before (docs/backends.md).
    """
    policy = spec.masquerade
    if policy.mode == "off":
        return []
    named: list[tuple[str, Network]] = []
    for i, dest in enumerate(spec.destinations):
        if not dest.masquerade:
            named.append((f"destinations[{i}].cidr", dest.cidr))
        named += [(f"destinations[{i}].exclude[{j}]", net) for j, net in enumerate(dest.exclude)]
    return [Problem(path, f"Calico masquerades pod traffic to link-local {LINK_LOCAL[net.version]}"
                          f" whatever the spec says: it refuses IP pools there, and Felix NATs "
                          f"every destination outside all pools, so {net} cannot be exempt; "
                          "leave link-local out, or set masquerade.mode: off (natOutgoing: "
                          "false on the pod pools) and masquerade with the nftables or "
                          "iptables backend")
            for path, net in named if overlaps(net, LINK_LOCAL[net.version])]


def _calico_objects(spec: Spec, settings: CalicoSettings, out: list[NetObject]) -> list[Problem]:
    try:
        out += _pools(spec, settings.ipip_mode, settings.vxlan_mode, settings.block_size,
                      settings.node_selector)
    except SpecError as exc:
        return list(exc.problems)
    return []


def compile_ippools(
    spec: Spec,
    *,
    ipip_mode: EncapsulationMode = "Never",
    vxlan_mode: EncapsulationMode = "Never",
    block_size: int | BlockSizes | None = None,
    node_selector: str = "all()",
) -> State:
    """What ``spec``'s masquerade policy needs of a Calico cluster's IP pools.

    Calico masquerades per pool: ``natOutgoing`` NATs pod traffic to anything
    outside every pool, and Felix never NATs to an address inside any pool. So:

    * each pod CIDR must *be* a pool serving every pod, ``natOutgoing`` unless the
      mode is ``off`` (:class:`~k3snet.model.cni.CalicoPodCIDR`, an expectation:
      k3snet never creates an enabled pool). ``ipip_mode``, ``vxlan_mode``,
      ``block_size`` and ``node_selector`` other than their defaults are required
      of that pool too (``block_size``: one integer for a single-stack cluster,
      :class:`~k3snet.spec.model.BlockSizes` for a dual-stack one);
    * each destination to masquerade must lie outside every pool, and leave through an
      interface Felix's NAT filter matches with the source address the spec gives
      (:class:`~k3snet.model.cni.CalicoNatDestination`, an expectation);
    * every pool must be readable (:class:`~k3snet.model.cni.CalicoPoolsReadable`);
    * one disabled pool (``k3snet-nonat-...``, owned, ``disableBGPExport``: not
      advertised to Calico's BGP peers) per CIDR exempt from NAT (see
      :func:`nat_exemptions`), unless a foreign pool covers it already.

    In mode ``destinations`` Calico NATs traffic to other places too; only
    exemptions can be expressed.

    >>> from k3snet.spec import Destination, Spec
    >>> spec = Spec(destinations=[Destination("192.168.2.0/24", exclude=["192.168.2.8/29"])])
    >>> for obj in compile_ippools(spec): print(obj)
    calico masquerades pods to 192.168.2.0/24 except 192.168.2.8/29
    calico pod CIDR 10.42.0.0/16 is a pool natOutgoing
    calico every IPPool readable
    ippool k3snet-nonat-192-168-2-8-29 192.168.2.8/29 disabled blockSize=29 disableBGPExport
    """
    problems = validate(spec)
    if problems:
        raise SpecError(problems)
    return State(owned=_pools(spec, ipip_mode, vxlan_mode, block_size, node_selector))


def _pod_wide_nat(spec: Spec) -> list[NetObject]:
    """Mode ``all`` masquerades every destination, not only the spec's: the interface
    the traffic leaves through and the SNAT address are judged against Felix's for each
    pod family (for IPv4 nothing to judge without either; IPv6 always, Felix's IPv4
    natOutgoingAddress breaking its IPv6 NAT)."""
    out: list[NetObject] = []
    if spec.masquerade.mode != "all":
        return out
    for family in sorted({p.version for p in spec.cluster.pod_cidrs}):
        snat = spec.masquerade.snat_address(family)
        if family == 6 or spec.masquerade.out_interface is not None or snat is not None:
            out.append(CalicoNatDestination(
                "0.0.0.0/0" if family == 4 else "::/0", pod_wide=True,
                out_interface=spec.masquerade.out_interface, snat_address=snat))
    return out


def _pools(spec: Spec, ipip_mode: EncapsulationMode, vxlan_mode: EncapsulationMode,
           block_size: int | BlockSizes | None, node_selector: str) -> list[NetObject]:
    # The spec's own blockSize was judged by validate(); compile_ippools' argument not.
    problems = block_size_problems(block_size, spec.cluster.pod_cidrs)
    problems += _link_local_problems(spec)
    # The spec's own nodeSelector was judged by validate() too; compile_ippools' not.
    selector = pool_selector_problem(node_selector)
    if selector is not None:
        problems.append(Problem("cni.calico.nodeSelector", f"{selector}: {node_selector!r}"))
    if problems:
        raise SpecError(problems)
    nat = spec.masquerade.mode != "off"
    out: list[NetObject] = [CalicoPoolsReadable()]
    for pod in spec.cluster.pod_cidrs:
        requires: dict[str, Any] = {}
        if ipip_mode != "Never" and pod.version == 4:
            requires["ipipMode"] = ipip_mode
        if vxlan_mode != "Never":
            requires["vxlanMode"] = vxlan_mode
        size = block_size.for_family(pod.version) if isinstance(block_size, BlockSizes) \
            else block_size
        if size is not None:
            requires["blockSize"] = size
        if not selects_everything(node_selector):  # all() however spaced, as Calico reads it
            requires["nodeSelector"] = node_selector
        try:
            siblings = [c for c in spec.cluster.pod_cidrs if c.version == pod.version and c != pod]
            out.append(CalicoPodCIDR(pod, nat_outgoing=nat, requires=requires,
                                     siblings=siblings))
        except ModelError as exc:
            raise SpecError([Problem("cluster.podCIDRs", str(exc))]) from exc
    if nat:
        # What destinations inside a masqueraded one keep (masquerade: false, their
        # exclude) is not the larger one's to NAT, as in k3snet's own rules: a foreign
        # disabled pool covering it is the exemption the spec asks for, not a conflict.
        kept = _kept_inside(spec.destinations)
        for i, d in enumerate(spec.destinations):
            if not d.masquerade:
                continue
            exclude = aggregate([*d.exclude, *kept[i]]) if i in kept else d.exclude
            if exclude != (d.cidr,):  # else nothing of it is left to masquerade
                # Judged against Felix's interface filter and natOutgoingAddress.
                out.append(CalicoNatDestination(
                    d.cidr, exclude=exclude,
                    out_interface=d.device or spec.masquerade.out_interface,
                    snat_address=spec.masquerade.snat_address(d.family)))
    out += _pod_wide_nat(spec)
    out += [_exempt_pool(net) for net in nat_exemptions(spec)]
    return out


# ---------------------------------------------------------------- cilium


def _flag(value: bool | None) -> str | None:
    return None if value is None else ("true" if value else "false")


def _cilium_config(target: str, settings: CiliumSettings | None) -> CiliumConfig | None:
    """The keys ``cni.cilium`` sets (``None`` when it sets none)."""
    if settings is None:
        return None
    values = {
        "routing-mode": settings.routing_mode,
        "tunnel-protocol": settings.tunnel_protocol,
        "ipv4-native-routing-cidr": (None if settings.ipv4_native_routing_cidr is None
                                     else str(settings.ipv4_native_routing_cidr)),
        "ipv6-native-routing-cidr": (None if settings.ipv6_native_routing_cidr is None
                                     else str(settings.ipv6_native_routing_cidr)),
        "enable-ipv4-masquerade": _flag(settings.enable_ipv4_masquerade),
        "enable-ipv6-masquerade": _flag(settings.enable_ipv6_masquerade),
        "enable-bpf-masquerade": _flag(settings.bpf_masquerade),
        "enable-ip-masq-agent": _flag(settings.ip_masq_agent),
        "egress-masquerade-interfaces": settings.egress_masquerade_interfaces,
    }
    agent: dict[str, Any] = {}
    if settings.non_masquerade_cidrs is not None:
        agent["nonMasqueradeCIDRs"] = [str(n) for n in settings.non_masquerade_cidrs]
    if settings.masq_link_local is not None:
        agent["masqLinkLocal"] = settings.masq_link_local
    if settings.masq_link_local_ipv6 is not None:
        agent["masqLinkLocalIPv6"] = settings.masq_link_local_ipv6
    chosen = {k: v for k, v in values.items() if v is not None}
    if not chosen and not agent:
        return None
    return CiliumConfig(target, settings=chosen, ip_masq_agent=agent or None)


def compile_cilium(spec: Spec, *, target: str) -> State:
    """What k3snet wants of the Cilium install whose ``cilium-config`` is ``target``.

    * the keys ``cni.cilium`` sets, as one owned :class:`~k3snet.model.cilium.CiliumConfig`
      (nothing when the spec has no ``cni.cilium``): k3snet never sets a key the
      spec does not name;
    * a :class:`~k3snet.model.cilium.CiliumMasquerade` expectation: Cilium's
      cluster pool lies inside the pod CIDRs, traffic from pods to each
      destination the spec masquerades is masqueraded by Cilium
      (with the settings above laid over what the cluster has), and traffic to
      each exempt CIDR is not. The plan reports every destination Cilium treats
      otherwise as a conflict, with the reason and the way out.

    >>> from k3snet.spec import seed_spec
    >>> for obj in compile_cilium(seed_spec(), target="configmap:kube-system/cilium-config"):
    ...     print(obj)
    cilium configmap:kube-system/cilium-config expects masquerade to 192.168.2.0/24 via eth0
    """
    wanted = _cilium_config(target, spec.cni.cilium)
    policy = spec.masquerade
    masquerade: list[tuple[Network, str | None]] = []
    exempt: list[Network] = []
    # Exemptions whose traffic leaves through the destination's own device: Cilium
    # masquerading only on other interfaces (egress-masquerade-interfaces, devices)
    # leaves it alone, as the spec asks.
    exempt_via: list[tuple[Network, str]] = []
    if policy.mode != "off":
        for dest in spec.destinations:
            if not spec.cluster.pods(dest.family):
                continue
            kept = [*dest.exclude] if dest.masquerade else [dest.cidr, *dest.exclude]
            if dest.masquerade:
                masquerade.append((dest.cidr, dest.device or policy.out_interface))
            if dest.device is None:
                exempt += kept
            else:
                exempt_via += [(net, dest.device) for net in kept]
        if policy.mode == "all":
            exempt += policy.non_masquerade_cidrs
    owned: list[NetObject] = [] if wanted is None else [wanted]
    owned.append(CiliumMasquerade(target, masquerade=masquerade, exempt=aggregate(exempt),
                                  exempt_via=exempt_via, pod_cidrs=spec.cluster.pod_cidrs,
                                  wanted=wanted))
    return State(owned=owned)
