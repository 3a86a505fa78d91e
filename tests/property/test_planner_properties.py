"""The planner properties of DESIGN.md, each one a hypothesis test.

The ``ci`` profile (``make test``) runs every property with 500 examples.
States are drawn from small pools, so observed and desired often share keys
(replace), objects (keep) and foreign slots (met / conflict).
"""

from __future__ import annotations

import itertools
from ipaddress import ip_network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from k3snet import Change, Plan, PlanError, Spec, State, plan
from k3snet.model import NetObject, Sysctl, object_from_dict
from k3snet.testing import strategies as ks

# Narrow pools so that independent draws collide often.
_dest = st.sampled_from(["192.168.2.0/24", "192.168.3.0/24", "fd01:2::/64", "10.99.0.0/16"])
_pool = st.one_of(
    ks.sysctls(names=("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding",
                      "net.ipv4.conf.all.rp_filter"), values=("0", "1")),
    ks.routes(destinations=_dest.map(ip_network),
              gateways={"eth0": ["192.168.1.1", "fd01:1::1"], "eth1": ["192.168.1.254"]},
              devices=("eth0", "eth1"), tables=(254,), metrics=(None, 100)),
    ks.masquerade_rules(sources=st.sampled_from(["10.42.0.0/16", "fd42:42::/56"]).map(
        ip_network), devices=(None, "eth0")),
    ks.forward_rules(sources=st.just(ip_network("10.42.0.0/16")),
                     devices=(None, "eth0")),
)
observed_states = ks.states(_pool, max_owned=10, max_foreign=6)
desired_states = ks.states(_pool, max_owned=10, max_foreign=0)


@given(observed_states, desired_states)
def test_soundness_plan_applied_to_observed_reaches_desired(
    observed: State, desired: State
) -> None:
    p = plan(observed, desired)
    assert p.apply_to(observed).owned == p.target(desired)


@given(observed_states, desired_states)
def test_soundness_without_foreign_state_the_target_is_exactly_desired(
    observed: State, desired: State
) -> None:
    observed = State(owned=observed.owned)
    p = plan(observed, desired)
    assert not p.notes
    assert p.apply_to(observed).owned == desired.owned


@given(desired_states)
def test_idempotence_plan_of_a_state_against_itself_is_empty(state: State) -> None:
    assert plan(state, state).empty


@given(observed_states, desired_states)
def test_idempotence_second_plan_after_applying_the_first_is_empty(
    observed: State, desired: State
) -> None:
    after = plan(observed, desired).apply_to(observed)
    assert plan(after, desired).empty


@given(observed_states, desired_states)
def test_minimality_every_change_is_needed(observed: State, desired: State) -> None:
    p = plan(observed, desired)
    target = p.target(desired)
    for i in range(len(p.changes)):
        shorter = Plan(changes=p.changes[:i] + p.changes[i + 1:])
        try:
            reached = shorter.apply_to(observed).owned
        except PlanError:
            continue
        assert reached != target, f"change {p.changes[i]} is not needed"


@given(observed_states, desired_states)
def test_minimality_same_key_is_replaced_in_place_never_deleted_and_added(
    observed: State, desired: State
) -> None:
    p = plan(observed, desired)
    deleted = {c.before.key for c in p.changes if c.action == "delete" and c.before}
    added = {c.after.key for c in p.changes if c.action == "add" and c.after}
    assert not deleted & added


@given(observed_states, desired_states)
def test_minimality_unchanged_objects_produce_no_change(observed: State, desired: State) -> None:
    p = plan(observed, desired)
    unchanged = observed.owned & desired.owned
    named = {c.before for c in p.changes} | {c.after for c in p.changes}
    assert not unchanged & named
    assert len(p.changes) <= len(observed.owned ^ desired.owned)


@given(observed_states, desired_states)
def test_foreign_safety_no_change_names_a_foreign_object(observed: State, desired: State) -> None:
    p = plan(observed, desired)
    # Slots a foreign object holds (routes); rules in our own chains hold none, and
    # a sysctl is taken over with its previous value recorded.
    foreign_slots = {o.clash_key for o in observed.foreign if o.clash_key is not None}
    for change in p.changes:
        assert change.before is None or change.before in observed.owned
        if change.action == "add" and not isinstance(change.after, Sysctl):
            assert change.subject.clash_key is None or change.subject.clash_key not in foreign_slots


@given(observed_states, desired_states)
def test_foreign_safety_blocked_or_met_needs_are_reported_not_planned(
    observed: State, desired: State
) -> None:
    p = plan(observed, desired)
    planned = {c.subject.key for c in p.changes}
    for note in p.notes:
        assert note.foreign in observed.foreign
        assert note.wanted.key not in planned
        if note.status == "met":
            assert note.wanted.met_by(note.foreign)
        else:
            assert note.wanted.conflicts_with(note.foreign)


@given(observed_states, desired_states)
def test_determinism_equal_inputs_give_byte_identical_plans(
    observed: State, desired: State
) -> None:
    rebuilt_observed = State(owned=list(observed.owned)[::-1], foreign=list(observed.foreign)[::-1])
    rebuilt_desired = State(owned=sorted(desired.owned, reverse=True))
    assert plan(observed, desired).to_json() == plan(rebuilt_observed, rebuilt_desired).to_json()


@given(observed_states, desired_states)
def test_order_deletes_then_replaces_then_adds_in_dependency_order(
    observed: State, desired: State
) -> None:
    p = plan(observed, desired)
    phases = [{"delete": 0, "replace": 1, "add": 2}[c.action] for c in p.changes]
    assert phases == sorted(phases)
    adds = [c.subject.rank for c in p.changes if c.action == "add"]
    assert adds == sorted(adds), "sysctls and routes come before the rules relying on them"
    deletes = [c.subject.rank for c in p.changes if c.action == "delete"]
    assert deletes == sorted(deletes, reverse=True), "NAT goes first when removing"


@given(observed_states, desired_states)
def test_plan_json_round_trip_is_identity(observed: State, desired: State) -> None:
    p = plan(observed, desired)
    assert Plan.from_json(p.to_json()) == p
    assert Plan.from_json(p.to_json()).to_json() == p.to_json()


@given(observed_states, desired_states)
def test_inverse_changes_undo_a_plan(observed: State, desired: State) -> None:
    p = plan(observed, desired)
    after = p.apply_to(observed)
    undo = Plan(changes=[c.inverse() for c in reversed(p.changes)])
    assert undo.apply_to(after).owned == observed.owned


@given(ks.states(max_owned=20, max_foreign=5), ks.states(max_owned=20, max_foreign=0))
def test_soundness_over_unconstrained_objects(observed: State, desired: State) -> None:
    p = plan(observed, desired)
    assert p.apply_to(observed).owned == p.target(desired)
    assert plan(p.apply_to(observed), desired).empty


@given(ks.objects())
def test_objects_round_trip_through_their_dict_form(obj: NetObject) -> None:
    assert object_from_dict(obj.to_dict()) == obj
    assert hash(object_from_dict(obj.to_dict())) == hash(obj)


@given(st.lists(ks.objects(), max_size=6), st.lists(ks.objects(), max_size=6))
def test_objects_are_totally_ordered_across_kinds_and_families(
    a: list[NetObject], b: list[NetObject]
) -> None:
    merged = sorted(a + b)
    assert all(x <= y for x, y in itertools.pairwise(merged))
    assert sorted(merged, reverse=True) == merged[::-1]


def test_apply_to_refuses_a_delete_of_what_is_not_there() -> None:
    with pytest.raises(PlanError):
        Plan(changes=[Change.delete(Sysctl("net.ipv4.ip_forward", 1))]).apply_to(State())


@given(st.from_type(State), st.from_type(Spec))
def test_type_strategies_are_registered_through_the_hypothesis_entry_point(
    state: State, spec: Spec
) -> None:
    assert isinstance(state, State)
    assert plan(state, state).empty
    assert Spec.from_dict(spec.to_dict()) == spec
