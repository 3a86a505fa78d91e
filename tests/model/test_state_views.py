"""`State.only` and `State.merge` give the state that filtering and uniting its objects give,
whether they build a new one or hand back one they were given."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from k3snet.model import State, Sysctl
from k3snet.model.state import known_kinds
from k3snet.testing.strategies import states
from tests.examples import examples

KINDS = st.frozensets(st.sampled_from(known_kinds()))


def _same(a: State, b: State) -> None:
    assert a == b
    assert a.ordered == b.ordered
    assert dict(a.by_key) == dict(b.by_key)


@given(states(), KINDS)
@settings(max_examples=examples(150))
def test_only_is_the_state_of_the_objects_of_those_kinds(state: State,
                                                        kinds: frozenset[str]) -> None:
    part = state.only(kinds)
    _same(part, State(owned=[o for o in state.owned if o.kind in kinds],
                      foreign=[o for o in state.foreign if o.kind in kinds]))
    _same(part.only(kinds), part)


@given(st.lists(states(max_owned=4, max_foreign=2), max_size=4))
@settings(max_examples=examples(150))
def test_merge_is_the_state_of_the_union_of_their_objects(parts: list[State]) -> None:
    owned = [o for p in parts for o in p.owned]
    if len({o.key for o in owned}) < len(set(owned)):
        return  # two parts hold one slot: merge refuses, as State does
    expected = State(owned=owned, foreign=[o for p in parts for o in p.foreign])
    _same(State().merge(*parts), expected)
    if parts:
        _same(parts[0].merge(*parts[1:]), expected)


def test_a_state_with_only_those_kinds_is_handed_back_and_one_part_is_the_merge() -> None:
    # What saves a sort of every object: converge's, the group's and compile's views of
    # a state that already holds only those kinds.
    empty = State()
    assert empty.only(known_kinds()) is empty
    one = State(owned=[Sysctl("net.ipv4.ip_forward", "1")])
    assert one.only({"sysctl"}) is one
    assert State().merge(one) is one
    assert one.merge(State(), State()) is one
    assert one.only({"route"}) == State()


def test_one_kind_given_alone_is_that_kind_not_its_letters() -> None:
    """``only("nat")`` iterated the string: it kept kinds ``n``, ``a`` and ``t`` (none), and an
    embedding program splitting a state or plan by kind silently got nothing."""
    from k3snet import MasqueradeRule, Plan, Route  # noqa: PLC0415
    from k3snet.planner import Change  # noqa: PLC0415

    rule = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")
    route = Route("192.168.2.0/24", device="eth0")
    state = State(owned=[rule, route], foreign=[Sysctl("net.ipv4.ip_forward", "0")])
    assert state.only("nat") == state.only(["nat"]) == State(owned=[rule])
    p = Plan(changes=[Change.add(route), Change.add(rule)])
    assert p.only("route").changes == (Change.add(route),)
