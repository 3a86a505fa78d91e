"""Owned routes that a foreign route shadows: the plan says so (``!``), it never says
"No changes" while the traffic goes elsewhere, and never promises a replace that
an apply refuses.

A foreign route at the same table and destination with a metric no higher than
k3snet's takes the traffic (the kernel prefers the lower metric; at an equal one
the two share a slot). IPv6 metric 0 is 1024.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from k3snet import Note, Plan, State, plan
from k3snet.model import MasqueradeRule, NetObject, Route, RouteBlock
from k3snet.testing import strategies as ks

_MINE = Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0", metric=100)
_MINE6 = Route("fd01:2::/64", gateway="fd01:1::1", device="eth0")  # metric 0 = 1024


def _foreign(route: Route, **fields: object) -> Route:
    data = route.to_dict() | {"protocol": "static"} | fields
    return Route.from_dict(data)


@pytest.mark.parametrize(("mine", "metric"), [
    (_MINE, 50), (_MINE, 100), (_MINE, 0),
    (_MINE6, 1000), (_MINE6, 1024), (_MINE6, 0),  # 0 is 1024 for IPv6: the same slot
], ids=["v4-lower", "v4-equal", "v4-zero", "v6-lower", "v6-equal", "v6-zero"])
def test_an_owned_route_a_foreign_route_shadows_is_a_conflict_naming_it(
        mine: Route, metric: int) -> None:
    gateway = "192.168.1.254" if mine.family == 4 else "fd01:1::fe"
    other = _foreign(mine, gateway=gateway, metric=metric)
    observed = State(owned=[mine], foreign=[other])
    p = plan(observed, State(owned=[mine]))
    assert p.empty
    assert p.render() != "No changes. The system matches the spec."
    (note,) = p.conflicts
    assert (note.wanted, note.foreign, note.owned) == (mine, other, mine)
    assert f"! {mine.describe()}" in p.render()
    assert other.describe() in p.render()
    assert p.target(State(owned=[mine])) == {mine}
    assert Plan.from_json(p.to_json()) == p
    assert p.to_dict()["notes"][0]["owned"] == mine.to_dict()
    # A lower metric takes the traffic; the same slot's first route does (IPv4: ip route
    # get names k3snet's when the other program's was appended after it), or IPv6
    # gateways joined as one multipath route share it: the note says both, not "overrides".
    overrides = "the foreign one overrides it" in p.render()
    assert other.metric is not None  # normalised
    assert mine.metric is not None
    assert overrides == (other.metric < mine.metric)
    assert ("the kernel takes the first route ip route show lists there that it can use"
            in p.render()) == (other.metric == mine.metric)
    # IPv6 on a node not forwarding: a first route whose gateway's neighbour failed is
    # passed by (ip -6 route get names the second), said as such.
    assert ("for IPv6 on a node not forwarding one whose gateway's neighbour failed"
            in p.render()) == (other.metric == mine.metric)


def test_a_foreign_route_at_a_higher_metric_or_through_our_next_hop_shadows_nothing() -> None:
    backup = _foreign(_MINE, gateway="192.168.1.254", metric=200)
    same_hop = _foreign(_MINE, metric=10)
    elsewhere = _foreign(_MINE, destination="192.168.3.0/24", gateway="192.168.1.254", metric=0)
    other_table = _foreign(_MINE, gateway="192.168.1.254", metric=0, table=100)
    observed = State(owned=[_MINE], foreign=[backup, same_hop, elsewhere, other_table])
    p = plan(observed, State(owned=[_MINE]))
    assert p.render() == "No changes. The system matches the spec."


def test_a_route_block_in_front_of_an_owned_route_is_a_conflict() -> None:
    block = RouteBlock(_MINE.destination, metric=10, what="blackhole", protocol="static")
    p = plan(State(owned=[_MINE], foreign=[block]), State(owned=[_MINE]))
    (note,) = p.conflicts
    assert note.foreign == block
    behind = RouteBlock(_MINE.destination, metric=500, what="blackhole", protocol="static")
    assert plan(State(owned=[_MINE], foreign=[behind]), State(owned=[_MINE])).notes == ()


def test_a_replace_with_a_foreign_route_in_the_slot_is_a_conflict_not_a_replace() -> None:
    moved = Route("192.168.2.0/24", gateway="192.168.1.2", device="eth0", metric=100)
    appended = _foreign(_MINE, gateway="192.168.1.254")  # ip route append: the same slot
    observed = State(owned=[_MINE], foreign=[appended])
    p = plan(observed, State(owned=[moved]))
    assert p.changes == ()
    (note,) = p.notes
    assert note == Note("conflict", moved, appended, owned=_MINE)
    assert _MINE.describe() in note.render()
    assert p.apply_to(observed).owned == p.target(State(owned=[moved])) == {_MINE}


def test_a_replace_that_a_foreign_route_meets_in_front_is_left_to_it() -> None:
    moved = Route("192.168.2.0/24", gateway="192.168.1.2", device="eth0", metric=100)
    ahead = _foreign(moved, metric=10)
    p = plan(State(owned=[_MINE], foreign=[ahead]), State(owned=[moved]))
    assert p.changes == ()
    assert p.notes == (Note("met", moved, ahead, owned=_MINE),)


def test_a_replace_behind_a_foreign_route_is_still_planned() -> None:
    moved = Route("192.168.2.0/24", gateway="192.168.1.2", device="eth0", metric=100)
    backup = _foreign(_MINE, gateway="192.168.1.254", metric=200)
    p = plan(State(owned=[_MINE], foreign=[backup]), State(owned=[moved]))
    assert [c.action for c in p.changes] == ["replace"]
    assert p.notes == ()


def test_shadow_notes_come_in_the_order_of_the_wanted_objects() -> None:
    routes = [Route(f"10.{i}.0.0/16", device="eth0", metric=100) for i in range(1, 6)]
    nat = MasqueradeRule("10.42.0.0/16", destination="10.1.0.0/16")
    foreign = [_foreign(r, device="eth1", metric=1) for r in routes[::-2]]
    observed = State(owned=[*routes, nat], foreign=foreign)
    p = plan(observed, State(owned=[*routes, nat]))
    assert [n.wanted for n in p.notes] == sorted(r for r in routes[::-2])
    assert plan(State(owned=list(observed.owned)[::-1], foreign=foreign[::-1]),
                State(owned=[nat, *routes])).to_json() == p.to_json()


@given(ks.routes(), st.one_of(ks.routes(), ks.route_blocks(), ks.objects()))
def test_a_routes_shadowed_by_says_what_the_foreign_objects_span_says(
        route: Route, other: NetObject) -> None:
    span = other.shadow_span
    in_span = span is not None and span[0] <= route.sort_key < span[1]
    assert route.shadowed_by(other) == in_span


@pytest.mark.parametrize(("destination", "gw", "other"), [
    ("10.9.1.0/24", "192.0.2.2", "192.0.3.2"),
    ("2001:db8:9::/64", "2001:db8::2", "2001:db8::3"),
])
def test_a_route_is_met_only_by_the_foreign_route_the_kernel_takes_first(
        destination: str, gw: str, other: str) -> None:
    """Met by a foreign route through its gateway only when no route through another
    comes before that one (a lower metric, or the same slot: the kernel may take it)."""
    wanted = Route(destination, gateway=gw, metric=100)
    behind = Route(destination, gateway=gw, metric=200, protocol="static")
    cases = [
        ([Route(destination, gateway=other, metric=10, protocol="static"), behind],
         "conflict", other),
        ([Route(destination, gateway=other, metric=200, protocol="boot"), behind],
         "conflict", other),
        ([Route(destination, gateway=other, metric=300, protocol="static"), behind], "met", gw),
        ([Route(destination, gateway=other, metric=150, protocol="static"), behind,
          Route(destination, gateway=gw, metric=120, protocol="boot")], "met", gw),
    ]
    for foreign, status, via in cases:
        [note] = plan(State(foreign=foreign), State(owned=[wanted])).notes
        assert (note.status, str(getattr(note.foreign, "gateway", None))) == (status, via)
