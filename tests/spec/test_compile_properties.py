"""``compile_spec(spec)`` judged packet by packet against the spec's documented meaning.

For a drawn spec, the packet oracle evaluates the compiled NAT and forward rules
and routes on every packet that can tell the spec's prefixes apart, and compares
with what the spec says should happen (written here from the spec reference, not
from ``compile``): a destination's ``exclude`` keeps the pod source address in
every masquerade mode; a masqueraded destination does not translate traffic that a
destination inside it keeps (``masquerade: false`` or its ``exclude``: the most
specific destination decides); a destination's device wins over the policy's
``outInterface``; ``forward.inInterface`` limits the accept; SNAT addresses
replace masquerade; routes go to each routed destination's table.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from ipaddress import ip_network

import pytest
from hypothesis import given

from k3snet import Spec, SpecError
from k3snet import compile as compile_spec
from k3snet.model import ForwardRule, MasqueradeRule, Route, SnatRule, Sysctl
from k3snet.model.cidr import Network
from k3snet.spec import Cluster, Destination
from k3snet.testing import strategies as ks
from tests.planner.oracle import (
    OTHER_INTERFACE,
    Packet,
    edge_addresses,
    forward_accepts,
    inside,
    nat_translation,
    next_hop,
    route_slot,
)

_LINK_LOCAL = {4: "169.254.0.0/16", 6: "fe80::/10"}


def _spec_packets(spec: Spec, *, with_in_interface: bool) -> Iterator[Packet]:
    """Packets from around the pod CIDRs to around every prefix the spec names."""
    cluster, policy = spec.cluster, spec.masquerade
    dst_nets: list[Network] = [*cluster.pod_cidrs, *cluster.service_cidrs,
                               *policy.non_masquerade_cidrs,
                               *(ip_network(n) for n in _LINK_LOCAL.values())]
    for dest in spec.destinations:
        dst_nets += [dest.cidr, *dest.exclude]
    outs = {OTHER_INTERFACE, *(d.device for d in spec.destinations if d.device)}
    if policy.out_interface:
        outs.add(policy.out_interface)
    ins = {OTHER_INTERFACE}
    if with_in_interface and spec.forward.in_interface:
        ins.add(spec.forward.in_interface)
    for family in (4, 6):
        for src, dst, iif, oif in itertools.product(
            sorted(edge_addresses(family, cluster.pod_cidrs)),
            sorted(edge_addresses(family, dst_nets)), sorted(ins), sorted(outs),
        ):
            yield Packet(family, src, dst, iif, oif)


def _from_pods(spec: Spec, packet: Packet) -> bool:
    return any(inside(packet.family, packet.src, p) for p in spec.cluster.pod_cidrs)


def _expected_translation(spec: Spec, packet: Packet) -> str | None:
    """The spec reference's meaning of ``masquerade`` and each destination's fields."""
    family, dst = packet.family, packet.dst
    policy = spec.masquerade
    if policy.mode == "off" or not _from_pods(spec, packet):
        return None
    snat = policy.snat_address(family)
    how = "masquerade" if snat is None else f"snat {int(snat)}"
    if policy.mode == "destinations":
        for dest in spec.destinations:
            if not dest.masquerade or not inside(family, dst, dest.cidr):
                continue
            if any(inside(family, dst, e) for e in dest.exclude):
                continue
            if _kept_by_one_inside(spec, dest.cidr, family, dst):
                continue  # the most specific destination decides
            out = dest.device if dest.device is not None else policy.out_interface
            if out is None or out == packet.oif:
                return how
        return None
    kept: list[Network] = [*policy.non_masquerade_cidrs, *spec.cluster.pod_cidrs,
                           *spec.cluster.service_cidrs]
    for dest in spec.destinations:
        kept += dest.exclude
        if not dest.masquerade:
            kept.append(dest.cidr)
    link_local = policy.masq_link_local if family == 4 else policy.masq_link_local_ipv6
    if not link_local:
        kept.append(ip_network(_LINK_LOCAL[family]))
    if any(inside(family, dst, k) for k in kept):
        return None
    if policy.out_interface is not None and policy.out_interface != packet.oif:
        return None
    return how


def _kept_by_one_inside(spec: Spec, outer: Network, family: int, dst: int) -> bool:
    """Whether a destination strictly inside ``outer`` keeps ``dst`` from masquerading
    (``masquerade: false``, or ``dst`` in its ``exclude``)."""
    return any(
        d.cidr.prefixlen > outer.prefixlen and inside(family, int(d.cidr.network_address), outer)
        and inside(family, dst, d.cidr)
        and (not d.masquerade or any(inside(family, dst, e) for e in d.exclude))
        for d in spec.destinations
    )


def _expected_accept(spec: Spec, packet: Packet) -> bool:
    if not spec.forward.accept or not _from_pods(spec, packet):
        return False
    if spec.forward.in_interface not in (None, packet.iif):
        return False
    return any(
        dest.forward and inside(packet.family, packet.dst, dest.cidr)
        and dest.device in (None, packet.oif)
        for dest in spec.destinations
    )


@given(ks.specs())
def test_compiled_nat_translates_exactly_what_the_spec_says(spec: Spec) -> None:
    _assert_nat_as_the_spec_says(spec)


@given(ks.specs(modes=("destinations",), min_destinations=2, max_destinations=5,
                destinations=ks.networks(within="192.168.0.0/16", min_prefix=16,
                                         max_prefix=19)))
def test_compiled_nat_of_destinations_inside_others_is_what_the_most_specific_one_says(
        spec: Spec) -> None:
    # Drawn from a /16 with prefixes up to /19, destinations nest: a masqueraded one
    # translated traffic to one inside it with masquerade: false, or to its exclude,
    # while mode all, Calico and Cilium kept it.
    _assert_nat_as_the_spec_says(spec)


def _assert_nat_as_the_spec_says(spec: Spec) -> None:
    state = compile_spec(spec)
    rules = [o for o in state if isinstance(o, MasqueradeRule | SnatRule)]
    for rule in rules:
        assert rule.random_fully == spec.masquerade.random_fully
    for packet in _spec_packets(spec, with_in_interface=False):
        done = {nat_translation(r, packet) for r in rules} - {None}
        assert len(done) <= 1, f"{packet}: translated differently by {rules}"
        got = next(iter(done), None)
        assert got == _expected_translation(spec, packet), (
            f"{packet}: compiled {got}, spec says {_expected_translation(spec, packet)}"
        )


@given(ks.specs())
def test_compiled_forward_rules_accept_exactly_what_the_spec_says(spec: Spec) -> None:
    rules = [o for o in compile_spec(spec) if isinstance(o, ForwardRule)]
    for packet in _spec_packets(spec, with_in_interface=True):
        got = any(forward_accepts(r, packet) for r in rules)
        assert got == _expected_accept(spec, packet), f"{packet}: compiled {got}"


@given(ks.specs())
def test_compiled_routes_go_where_each_routed_destination_says(spec: Spec) -> None:
    routes = [o for o in compile_spec(spec) if isinstance(o, Route)]
    routed = [d for d in spec.destinations if d.routed]
    assert len(routes) == len(routed)
    for dest in routed:
        slot = (dest.table, str(dest.cidr))
        (route,) = [r for r in routes if route_slot(r) == slot]
        probe = Packet(dest.family, 0, int(dest.cidr.network_address))
        assert next_hop(route, probe) == (dest.gateway, dest.device)
        if dest.metric not in (None, 0):
            assert route.metric == dest.metric


@given(ks.specs())
def test_compiled_forwarding_sysctls_cover_each_family_in_use(spec: Spec) -> None:
    names = {o.name for o in compile_spec(spec) if isinstance(o, Sysctl)}
    families = {d.family for d in spec.destinations}
    if spec.masquerade.mode == "all":
        families |= {p.version for p in spec.cluster.pod_cidrs}
    wanted = {4: "net.ipv4.ip_forward", 6: "net.ipv6.conf.all.forwarding"}
    assert names == {wanted[f] for f in families}


def test_exclusions_covering_the_whole_destination_are_a_spec_problem() -> None:
    spec = Spec(cluster=Cluster(pod_cidrs=["10.42.0.0/16"]),
                destinations=[Destination("192.168.2.0/24", device="eth0",
                                          exclude=["192.168.2.0/25", "192.168.2.128/25"])])
    with pytest.raises(SpecError, match=r"destinations\[0\]\.exclude"):
        compile_spec(spec)
