"""A saved plan (``k3snet plan --out``, :func:`k3snet.converge.apply_plan`) is applied
exactly when it is still the plan of the node as it is, or refused with nothing changed.

The node at apply time is drawn as the one the plan was made from, the state the plan
leads to, or another state altogether; through the memory backend, whose state
includes what ``==`` leaves out (a sysctl's recorded ``previous``: its dump).
"""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from k3snet import MemoryBackend, Route, State, plan
from k3snet.converge import apply_plan, state_digest
from k3snet.errors import StalePlanError
from k3snet.testing import strategies as ks

_dest = st.sampled_from(["192.168.2.0/24", "fd01:2::/64"]).map(ip_network)
_sources = st.sampled_from(["10.42.0.0/16", "fd42:42::/56"]).map(ip_network)
_pool = st.one_of(
    ks.sysctls(names=("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"),
               values=("0", "1"), previous=(None, "0", "1")),
    ks.routes(destinations=_dest, gateways={"eth0": ["192.168.1.1", "fd01:1::1"]},
              devices=("eth0",), tables=(254,), metrics=(None, 100), protocols=(211, 4)),
    ks.masquerade_rules(sources=_sources, devices=(None, "eth0")),
)
_states = ks.states(_pool, max_owned=6, max_foreign=3)
_desired = ks.states(_pool, max_owned=6, max_foreign=0)


@st.composite
def _saved_and_node(draw: st.DrawFn) -> tuple[State, State, State]:
    """(observed when planned, desired, the node when the plan is applied)."""
    observed, desired = draw(_states), draw(_desired)
    later = draw(st.sampled_from(["same", "planned", "provided", "other"]))
    if later == "same":
        node = observed
    elif later == "planned":  # someone applied it already (another run, the agent)
        node = plan(observed, desired).apply_to(observed)
    elif later == "provided":  # foreign state gives what is wanted (an admin, the CNI)
        node = State(foreign=desired.owned)
    else:
        node = draw(_states)
    return observed, desired, node


@given(_saved_and_node())
def test_a_saved_plan_is_applied_exactly_when_planning_again_gives_it_else_nothing_changes(
        drawn: tuple[State, State, State]) -> None:
    observed, desired, node = drawn
    saved = plan(observed, desired)
    backend = MemoryBackend(node)
    before = backend.dump()
    if plan(node, desired) == saved:
        apply_plan(backend, saved, desired=desired, allow_conflicts=True,
                   allow_teardown=True, made_from=state_digest(observed))
        assert backend.state == saved.apply_to(node)
        assert plan(backend.observe(), desired).empty
    else:
        with pytest.raises(StalePlanError) as refused:
            apply_plan(backend, saved, desired=desired, allow_conflicts=True,
                       allow_teardown=True, made_from=state_digest(observed))
        assert backend.dump() == before  # nothing, not even a sysctl's recorded value
        # The refusal says which: the node changed, or the plan does not follow from
        # its own desired state (the node is as it was planned: an edited file).
        unchanged = state_digest(node) == state_digest(observed)
        assert ("does not follow from its own desired state" in str(refused.value)) is unchanged
        # A node the plan was applied to already (a retry, another run, the agent) is said
        # so, not left to read from "it would be 0 change(s)" ...
        again = plan(node, desired)
        said = "already as the plan makes it" in str(refused.value)
        applied = state_digest(node) == state_digest(saved.apply_to(observed))
        if applied and not unchanged and not again.conflicts:
            assert said
        # ... and only a node the plan's changes could have made so: never when the plan
        # had none (nothing was to apply), nor when foreign state now meets what it would
        # make (nobody applied it).
        if said:
            assert saved.changes
            assert again.empty
            assert not again.conflicts
            assert set(again.met) <= set(saved.met)


def test_a_saved_plan_applied_twice_is_refused_the_second_time_as_applied_already() -> None:
    desired = State(owned=[Route(ip_network("192.168.2.0/24"), gateway=ip_address("192.168.1.1"),
                                 device="eth0")])
    saved = plan(State(), desired)
    backend = MemoryBackend(State())
    made = state_digest(State())
    apply_plan(backend, saved, desired=desired, made_from=made)
    after = backend.dump()
    with pytest.raises(StalePlanError, match=r"already as the plan makes it .*nothing was "
                       r"applied, and nothing is left to apply"):
        apply_plan(backend, saved, desired=desired, made_from=made)
    assert backend.dump() == after


_ROUTE = Route(ip_network("192.168.2.0/24"), gateway=ip_address("192.168.1.1"), device="eth0")


def test_a_saved_plan_foreign_state_now_meets_is_not_said_to_be_applied_already() -> None:
    # An admin's (or the CNI's) route now gives what the plan would make: nobody applied it.
    desired = State(owned=[_ROUTE])
    saved = plan(State(), desired)
    backend = MemoryBackend(State(foreign=[_ROUTE]))
    with pytest.raises(StalePlanError) as refused:
        apply_plan(backend, saved, desired=desired, made_from=state_digest(State()))
    assert "already as the plan makes it" not in str(refused.value)
    assert "applied already" not in str(refused.value)
    assert "foreign state now provides what the plan would make (1 object(s) met" in str(
        refused.value)
    assert "nothing is left to apply" in str(refused.value)


def test_a_saved_plan_of_no_changes_is_never_said_to_be_applied_already() -> None:
    # The plan had nothing to apply; only the foreign route meeting it changed.
    desired = State(owned=[_ROUTE])
    observed = State(foreign=[attrs.evolve(_ROUTE, protocol=4)])
    saved = plan(observed, desired)
    assert not saved.changes
    backend = MemoryBackend(State(foreign=[attrs.evolve(_ROUTE, protocol=3)]))
    with pytest.raises(StalePlanError) as refused:
        apply_plan(backend, saved, desired=desired, made_from=state_digest(observed))
    assert "already" not in str(refused.value)
    assert "plan again" in str(refused.value)


@given(_states, _desired, _desired)
def test_a_plan_saved_for_another_desired_state_is_refused_on_an_unchanged_node(
        observed: State, desired: State, edited: State) -> None:
    # A plan file whose `desired` was edited after the plan was made (or whose `plan`
    # was): refused with nothing changed unless the edit plans the same.
    saved = plan(observed, desired)
    backend = MemoryBackend(observed)
    before = backend.dump()
    if plan(observed, edited) == saved:
        return
    with pytest.raises(StalePlanError, match="does not follow from its own desired state"):
        apply_plan(backend, saved, desired=edited, allow_conflicts=True, allow_teardown=True,
                   made_from=state_digest(observed))
    assert backend.dump() == before
