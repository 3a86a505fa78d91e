""""Met by foreign" and "conflict" judged by an independent oracle, on sampled packets.

``met_by`` and ``conflicts_with`` are checked against :mod:`oracle`, which evaluates
both objects on every packet that can tell them apart (boundary addresses of
every prefix involved, every interface named and one more) without using
k3snet's containment helpers. The pools are narrow so that wanted and foreign
objects overlap, nest and share slots often.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from ipaddress import ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k3snet import State, plan
from k3snet.model import (
    ForwardBlock,
    ForwardRule,
    MasqueradeRule,
    NatBlock,
    NetObject,
    Route,
    SnatRule,
    Sysctl,
)
from k3snet.model.cidr import Network
from k3snet.testing import strategies as ks
from tests.examples import examples
from tests.planner.oracle import (
    comes_first,
    competes,
    decided_otherwise,
    does_the_job,
    dropped_first,
    packets,
)

_SOURCES = ("10.42.0.0/16", "10.42.0.0/17", "10.0.0.0/8", "fd42:42::/56", "fd42::/32")
_DESTINATIONS = (None, "192.168.2.0/24", "192.168.0.0/16", "192.168.2.0/25", "fd01:2::/64")
# Prefixes inside some of the destinations above (and one outside all of them).
_EXCLUSIONS = ("192.168.2.0/25", "192.168.2.128/26", "192.168.3.0/24", "192.168.2.64/27",
               "10.0.0.0/8", "fd01:2::/65")
_DEVICES = (None, "eth0", "eth1")
_TO = ("192.168.1.5", "192.168.1.6", "fd01:1::5")


@st.composite
def _nat_rules(draw: st.DrawFn) -> MasqueradeRule | SnatRule:
    source = ip_network(draw(st.sampled_from(_SOURCES)))
    destination = draw(st.sampled_from(_DESTINATIONS))
    dest_net = None if destination is None else ip_network(destination)
    if dest_net is not None and dest_net.version != source.version:
        dest_net = None
    candidates = [ip_network(e) for e in _EXCLUSIONS]
    candidates = [e for e in candidates if e.version == source.version and (
        dest_net is None or (e.subnet_of(dest_net) and e != dest_net))]  # type: ignore[arg-type]
    exclude: list[Network] = draw(st.lists(st.sampled_from(candidates), max_size=2)
                                  if candidates else st.just([]))
    out_interface = draw(st.sampled_from(_DEVICES))
    random_fully = draw(st.booleans())
    to = [a for a in _TO if ipaddress.ip_address(a).version == source.version]
    if draw(st.booleans()):
        return SnatRule(source, to_address=draw(st.sampled_from(to)), destination=dest_net,
                        exclude=exclude, out_interface=out_interface, random_fully=random_fully)
    return MasqueradeRule(source, destination=dest_net, exclude=exclude,
                          out_interface=out_interface, random_fully=random_fully)


_fwd_nets = st.sampled_from(["10.42.0.0/16", "10.42.0.0/17", "10.0.0.0/8", "192.168.2.0/24",
                             "192.168.0.0/16", "fd42:42::/56", "fd01:2::/64"]).map(ip_network)
_forward_rules = ks.forward_rules(sources=_fwd_nets, destinations=_fwd_nets, devices=_DEVICES)
# One network address under two prefix lengths, so a clash key that loses the
# prefix length or the table is caught.
# Both default routes (address 0, prefix 0 in either family): a clash key that
# loses the family is caught too.
_route_dest = st.sampled_from(["192.168.2.0/24", "192.168.2.0/23", "fd01:2::/64", "fd01:2::/63",
                               "0.0.0.0/0", "::/0"]).map(ip_network)
_routes = ks.routes(destinations=_route_dest,
                    gateways={"eth0": ["192.168.1.1", "fd01:1::1"], "eth1": ["192.168.1.1"]},
                    devices=("eth0", "eth1"), tables=(254, 100), metrics=(None, 0, 100, 1024),
                    protocols=(211, 4, 3), scopes=(None, "link", "host"))
_sysctls = ks.sysctls(names=("net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter"),
                      values=("0", "1", "2"), previous=(None, "0", "1"))

_OF_KIND: dict[str, st.SearchStrategy[NetObject]] = {
    "nat": _nat_rules(), "forward": _forward_rules, "route": _routes, "sysctl": _sysctls,
}
_any = st.one_of(list(_OF_KIND.values()))
# One test per kind: each kind gets the profile's whole budget of examples.
_kinds = pytest.mark.parametrize("kind", sorted(_OF_KIND))


@_kinds
@given(data=st.data())
def test_met_by_foreign_exactly_when_the_foreign_object_does_our_job_on_every_packet(
    kind: str, data: st.DataObject
) -> None:
    wanted, foreign = data.draw(st.tuples(_OF_KIND[kind], _OF_KIND[kind]))
    assert wanted.met_by(foreign) == does_the_job(wanted, foreign), (
        f"{wanted} met by {foreign}: {wanted.met_by(foreign)}"
    )


@_kinds
@given(data=st.data())
def test_conflict_exactly_when_the_foreign_object_holds_our_place_and_does_something_else(
    kind: str, data: st.DataObject
) -> None:
    wanted, foreign = data.draw(st.tuples(_OF_KIND[kind], _OF_KIND[kind]))
    expected = competes(wanted, foreign) and not does_the_job(wanted, foreign)
    if isinstance(wanted, Sysctl):
        # A foreign sysctl is taken over (its value kept as ``previous``), never a conflict.
        expected = False
    assert wanted.conflicts_with(foreign) == expected


@given(_any, _any)
def test_met_and_conflict_never_both_and_never_across_kinds(a: NetObject, b: NetObject) -> None:
    assert not (a.met_by(b) and a.conflicts_with(b))
    if a.kind != b.kind:
        assert not a.met_by(b)
        assert not a.conflicts_with(b)


@given(_any, _any)
def test_equality_agrees_with_the_serialised_form(a: NetObject, b: NetObject) -> None:
    def compared(obj: NetObject) -> dict[str, object]:
        # Sysctl.previous is bookkeeping a backend records; it is documented as not compared.
        return {k: v for k, v in obj.to_dict().items() if k != "previous"}

    assert (a == b) == (compared(a) == compared(b))
    assert (a != b) == (compared(a) != compared(b))
    if a == b:
        assert hash(a) == hash(b)
        assert a.key == b.key


@given(_sysctls, st.sampled_from((None, "0", "1")))
def test_sysctl_previous_is_the_only_field_left_out_of_equality(
    s: Sysctl, previous: str | None
) -> None:
    other = Sysctl(s.name, s.value, previous=previous)
    assert other == s
    differing = {k for k in {*s.to_dict(), *other.to_dict()}
                 if s.to_dict().get(k) != other.to_dict().get(k)}
    assert differing <= {"previous"}


@_kinds
@given(data=st.data())
def test_planner_leaves_a_need_to_a_foreign_object_exactly_when_one_does_the_job(
    kind: str, data: st.DataObject
) -> None:
    wanted = data.draw(_OF_KIND[kind])
    foreign = data.draw(st.lists(_any | _OF_KIND[kind], max_size=6))
    theirs = [o for o in foreign if o.key != wanted.key]
    p = plan(State(foreign=theirs), State(owned=[wanted]))
    doers = [o for o in theirs if does_the_job(wanted, o)]
    blockers = [o for o in theirs if competes(wanted, o) and not isinstance(wanted, Sysctl)]
    if doers and isinstance(wanted, Route):
        # The kernel takes the doer of the lowest metric only if no other route of the
        # table and destination comes first (a lower metric, or its very slot).
        first = next(d for d in doers if all(comes_first(d, e) for e in doers))
        ahead = [o for o in blockers if not does_the_job(wanted, o) and comes_first(o, first)]
        if ahead:
            doers, blockers = [], ahead
    if doers:
        assert [n.status for n in p.notes] == ["met"]
        assert does_the_job(wanted, p.notes[0].foreign)
        assert not p.changes
    elif blockers:
        assert [n.status for n in p.notes] == ["conflict"]
        assert competes(wanted, p.notes[0].foreign)
        assert not p.changes
    else:
        assert not p.notes
        assert [c.action for c in p.changes] == ["add"]


@given(data=st.data())
def test_a_route_in_place_or_replaced_is_noted_exactly_when_a_foreign_one_comes_first(
    data: st.DataObject
) -> None:
    wanted = data.draw(_routes)
    current = data.draw(st.one_of(st.just(wanted), ks.replacements(wanted)))
    theirs = [o for o in data.draw(st.lists(_any | _routes, max_size=6)) if o != current]
    p = plan(State(owned=[current], foreign=theirs), State(owned=[wanted]))
    ahead = [o for o in theirs if comes_first(o, wanted)]
    others = [o for o in ahead if not does_the_job(wanted, o)]
    if others:
        assert [n.status for n in p.notes] == ["conflict"]
        assert p.notes[0].foreign in others
    elif ahead and current != wanted:
        assert [n.status for n in p.notes] == ["met"]
        assert p.notes[0].foreign in ahead
    else:
        assert not p.notes
        assert [c.action for c in p.changes] == ([] if current == wanted else ["replace"])
    if p.notes:
        assert p.notes[0].owned == current
        assert not p.changes


def test_the_sampled_packets_reach_every_region() -> None:
    # A /25 exclusion in a /24 destination: both halves and both outside neighbours.
    rule = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24",
                          exclude=["192.168.2.128/25"], out_interface="eth0")
    dsts = {p.dst for p in packets(rule) if p.family == 4}
    for address in ("192.168.1.255", "192.168.2.0", "192.168.2.127", "192.168.2.128",
                    "192.168.2.255", "192.168.3.0"):
        assert int(ipaddress.ip_address(address)) in dsts
    assert {p.oif for p in packets(rule)} == {"eth0", "other0"}
    assert any(p.family == 4 for p in packets(ForwardRule("10.0.0.0/8", "10.0.0.0/8")))


_BLOCK_DESTINATIONS = ("192.168.2.0/24", "192.168.0.0/16", "192.168.2.0/25", "192.168.2.128/26",
                       "192.168.3.0/24", "fd01:2::/64", "fd01:2::/65")


@st.composite
def _nat_blocks(draw: st.DrawFn) -> NatBlock:
    """A foreign NAT rule met before k3snet's: the pools above, so it overlaps ours often."""
    family = draw(st.sampled_from((4, 6)))

    def of_family(pool: tuple[str, ...]) -> list[str | None]:
        return [None, *(p for p in pool if ip_network(p).version == family)]

    action = draw(st.sampled_from(("masquerade", "snat", "exempt")))
    to = None
    if action == "snat":
        to = draw(st.sampled_from(
            [None, *(a for a in _TO if ipaddress.ip_address(a).version == family)]))
    return NatBlock(family, action, "-A POSTROUTING ...", "iptables nat",
                    source=draw(st.sampled_from(of_family(_SOURCES))),
                    destination=draw(st.sampled_from(of_family(_BLOCK_DESTINATIONS))),
                    out_interface=draw(st.sampled_from(_DEVICES)), to_address=to)


@given(_nat_rules(), _nat_blocks())
def test_a_nat_block_decides_exactly_when_some_packet_of_ours_is_translated_otherwise_first(
    wanted: MasqueradeRule | SnatRule, block: NatBlock
) -> None:
    expected = decided_otherwise(wanted, block)
    assert block.decides(wanted) == expected, f"{block.describe()} decides {wanted}?"
    assert wanted.conflicts_with(block) == expected
    assert not wanted.met_by(block)


@given(_nat_rules(), st.lists(_nat_blocks(), max_size=4))
def test_planner_reports_a_conflict_exactly_when_some_nat_block_decides_otherwise(
    wanted: MasqueradeRule | SnatRule, blocks: list[NatBlock]
) -> None:
    p = plan(State(foreign=blocks), State(owned=[wanted]))
    if any(decided_otherwise(wanted, b) for b in blocks):
        assert [n.status for n in p.notes] == ["conflict"]
        assert decided_otherwise(wanted, p.notes[0].foreign)
        assert not p.changes
    else:
        assert not p.notes
        assert [c.action for c in p.changes] == ["add"]


_BLOCK_NETS = ("10.42.0.0/16", "10.42.0.0/17", "10.42.128.0/24", "192.168.2.0/24",
               "192.168.2.0/25", "192.168.0.0/16", "fd42:42::/56", "fd01:2::/64")


@st.composite
def _forward_blocks(draw: st.DrawFn) -> ForwardBlock:
    """A foreign drop met before k3snet's accept, over the forward rules' pool."""
    family = draw(st.sampled_from((4, 6)))
    nets = [None, *(n for n in _BLOCK_NETS if ip_network(n).version == family)]
    return ForwardBlock(family, draw(st.sampled_from(("drop", "reject", "return"))),
                        "-A FORWARD ...", "iptables filter",
                        source=draw(st.sampled_from(nets)),
                        destination=draw(st.sampled_from(nets)),
                        in_interface=draw(st.sampled_from(_DEVICES)),
                        out_interface=draw(st.sampled_from(_DEVICES)))


@given(_forward_rules, _forward_blocks())
def test_a_forward_block_decides_exactly_when_it_matches_some_packet_we_accept_or_its_reply(
    wanted: ForwardRule, block: ForwardBlock
) -> None:
    expected = dropped_first(wanted, block)
    assert block.decides(wanted) == expected, f"{block.describe()} decides {wanted}?"
    assert wanted.conflicts_with(block) == expected
    assert not wanted.met_by(block)


# One destination per family, two gateways (and a device route) through two devices and
# a few metrics: a wanted route's doers and the routes through another next hop before
# them meet often enough (the property above, drawing from every kind, almost never
# drew a doer with another route before it, and passed on the rule it states broken).
# The kernel's routes name their device: the foreign ones all do.
_SLOT = st.sampled_from(["192.168.2.0/24", "fd01:2::/64"]).map(ip_network)
_SLOT_GATEWAYS: dict[str, Sequence[str]] = {
    "eth0": ["192.168.1.1", "192.168.1.2", "fd01:1::1", "fd01:1::2"],
    "eth1": ["192.168.1.1"]}
_slot_routes = ks.routes(destinations=_SLOT, gateways=_SLOT_GATEWAYS,
                         devices=(None, "eth0", "eth1"), tables=(254,),
                         metrics=(None, 100, 200))
_slot_foreign = ks.routes(destinations=_SLOT, gateways=_SLOT_GATEWAYS,
                          devices=("eth0", "eth1"), tables=(254,),
                          metrics=(None, 100, 200), protocols=(4,))


@settings(max_examples=examples(150))  # a few objects of one slot: the cases come early
@given(wanted=_slot_routes, foreign=st.lists(_slot_foreign, max_size=4))
def test_a_route_not_in_place_is_met_only_when_no_other_route_comes_before_its_first_doer(
    wanted: Route, foreign: list[Route]
) -> None:
    theirs = [o for o in foreign if o.key != wanted.key]
    p = plan(State(foreign=theirs), State(owned=[wanted]))
    doers = [o for o in theirs if does_the_job(wanted, o)]
    others = [o for o in theirs if competes(wanted, o) and not does_the_job(wanted, o)]
    first = [d for d in doers if all(comes_first(d, e) for e in doers)]
    ahead = [o for o in others if first and comes_first(o, first[0])]
    if first and not ahead:
        assert [n.status for n in p.notes] == ["met"]
        assert p.notes[0].foreign in first
    elif others:
        assert [n.status for n in p.notes] == ["conflict"]
        assert p.notes[0].foreign in (ahead or others)
    else:
        assert not p.notes
    if p.notes:
        assert not p.changes
