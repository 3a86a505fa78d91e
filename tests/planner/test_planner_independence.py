"""What the plan does not depend on, and what holds on a system rather than on a value.

Each property a hypothesis test, drawn with the strategies k3snet exports
(:mod:`k3snet.testing.strategies`), foreign state as a K3s node holds it
(:func:`~k3snet.testing.strategies.foreign_objects`: routes, route blocks, the CNI's
rules, sysctls) beside objects of every shape.
"""

from __future__ import annotations

from random import Random

from hypothesis import given
from hypothesis import strategies as st

from k3snet import State, plan
from k3snet.backends.memory import MemoryBackend
from k3snet.model import NetObject, Sysctl
from k3snet.model.state import KINDS
from k3snet.testing import strategies as ks

_objects = ks.objects(every_shape=True)
_foreign = st.one_of(ks.foreign_objects(), _objects)
observed_states = ks.states(_objects, foreign=_foreign, max_owned=10, max_foreign=8)
desired_states = ks.states(_objects, max_owned=10, max_foreign=0)


def _of_family(objects: frozenset[NetObject], family: int) -> list[NetObject]:
    """The objects of ``family``, and those of none (sysctls), which either family needs."""
    return [o for o in objects if o.family in (None, family)]


@given(observed_states, desired_states)
def test_kind_independence_the_plan_of_a_kind_is_the_plan_of_that_kinds_part_alone(
        observed: State, desired: State) -> None:
    """A group plans the whole state and hands each member ``plan.only(its kinds)``; a
    backend used alone plans its part: the two must be one plan."""
    whole = plan(observed, desired)
    for kind in KINDS:
        assert whole.only([kind]) == plan(observed.only([kind]), desired.only([kind])), kind


@given(observed_states, desired_states)
def test_ipv4_and_ipv6_alongside_each_family_plans_as_if_it_were_alone(
        observed: State, desired: State) -> None:
    """A dual-stack node's plan is its IPv4 plan and its IPv6 plan together: no object of one
    family is added, kept, met or blocked because of an object of the other."""
    whole = plan(observed, desired)
    parts = [plan(State(owned=_of_family(observed.owned, family),
                        foreign=_of_family(observed.foreign, family)),
                  State(owned=_of_family(desired.owned, family)))
             for family in (4, 6)]
    assert set(whole.changes) == set(parts[0].changes) | set(parts[1].changes)
    assert set(whole.notes) == set(parts[0].notes) | set(parts[1].notes)
    assert set(whole.held) == set(parts[0].held) | set(parts[1].held)


@given(observed_states, desired_states, st.randoms(use_true_random=False))
def test_order_independence_the_order_objects_are_given_in_changes_no_byte_of_the_plan(
        observed: State, desired: State, rng: Random) -> None:
    owned, foreign, wanted = list(observed.owned), list(observed.foreign), list(desired.owned)
    for objects in (owned, foreign, wanted):
        rng.shuffle(objects)
    shuffled = plan(State(owned=reversed(owned), foreign=foreign), State(owned=wanted))
    assert shuffled.to_json() == plan(observed, desired).to_json()


@given(observed_states, desired_states)
def test_idempotence_through_the_memory_backend_planning_again_after_apply_is_empty(
        observed: State, desired: State) -> None:
    """On a system, not a value: apply the plan, observe, plan again."""
    backend = MemoryBackend(observed)
    backend.apply(plan(backend.observe(), desired))
    assert plan(backend.observe(), desired).empty


@given(observed_states, desired_states)
def test_foreign_safety_an_apply_through_the_memory_backend_leaves_every_foreign_object(
        observed: State, desired: State) -> None:
    """Every foreign object is there after the apply, but for the sysctls k3snet took over,
    whose values are then recorded as what deleting them gives back."""
    backend = MemoryBackend(observed)
    backend.apply(plan(backend.observe(), desired))
    after = backend.observe()
    owned = after.by_key
    for obj in observed.foreign - after.foreign:
        assert isinstance(obj, Sysctl), f"the foreign {obj} is gone"
        taken = owned[obj.key]
        assert isinstance(taken, Sysctl)
        assert taken.previous == obj.value
