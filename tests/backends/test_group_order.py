"""The order a backend group makes a plan's changes in, across its members.

The planner orders a plan so that what depends on another object comes after it on the
way up and goes before it on the way down: deletes of NAT and forward rules first, then
routes and sysctls; adds of sysctls and routes first, then forward and NAT rules. A group
gave each member its whole part in turn (routes and sysctls, then NAT and forward): a
plan removing a destination deleted its route while k3snet's forward accept and
masquerade for it stayed, and the pods' traffic to it was forwarded and masqueraded
through the default route until the next member ran (for good when the run was killed
between the two).
"""

from __future__ import annotations

from ipaddress import ip_network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from k3snet import (
    ApplyError,
    ForwardRule,
    MasqueradeRule,
    Plan,
    Route,
    State,
    Sysctl,
    plan,
)
from k3snet.backends.base import ApplyResult
from k3snet.backends.group import BackendGroup
from k3snet.backends.memory import MemoryBackend
from k3snet.planner import Change
from k3snet.testing import strategies as ks

_dest = st.sampled_from(["192.168.2.0/24", "192.168.3.0/24", "fd01:2::/64"]).map(ip_network)
_sources = st.sampled_from(["10.42.0.0/16", "fd42:42::/56"]).map(ip_network)
_pool = st.one_of(
    ks.sysctls(names=("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding",
                      "net.ipv4.conf.eth0.rp_filter"), values=("0", "1")),
    ks.routes(destinations=_dest, devices=("eth0", "eth1"), tables=(254,),
              metrics=(None, 100)),
    ks.masquerade_rules(sources=_sources, devices=(None, "eth0")),
    ks.forward_rules(sources=_sources, destinations=_dest, devices=(None, "eth0")),
)


class _Recording(MemoryBackend):
    """A memory backend writing each change it makes into a log shared with others."""

    def __init__(self, log: list[Change], state: State, kinds: list[str]) -> None:
        super().__init__(state.only(kinds), capabilities=kinds)
        self.log = log
        self.applies = 0

    def apply(self, plan: Plan) -> ApplyResult:
        result = super().apply(plan)
        self.applies += 1
        self.log.extend(plan.changes)
        return result


def _group(observed: State) -> tuple[BackendGroup, list[Change], _Recording, _Recording]:
    log: list[Change] = []
    node = _Recording(log, observed, ["route", "sysctl"])
    rules = _Recording(log, observed, ["nat", "forward"])
    return BackendGroup([rules, node]), log, node, rules


@given(ks.states(_pool, max_owned=8, max_foreign=0), ks.states(_pool, max_owned=8,
                                                                max_foreign=0))
def test_order_a_group_makes_every_change_in_the_plans_order_across_its_members(
        observed: State, desired: State) -> None:
    group, log, _, _ = _group(observed)
    p = plan(group.observe(), desired)
    group.apply(p)
    assert log == list(p.changes)
    assert group.observe().owned == desired.owned


ROUTE = Route("192.168.2.0/24", gateway="192.168.1.1", device="eth1")
ACCEPT = ForwardRule("10.42.0.0/16", "192.168.2.0/24")
MASQUERADE = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")
FORWARDING = Sysctl("net.ipv4.ip_forward", "1")


def test_a_destination_removed_loses_its_nat_and_forward_rules_before_its_route() -> None:
    observed = State(owned=[FORWARDING, ROUTE, ACCEPT, MASQUERADE])
    group, log, node, rules = _group(observed)
    group.apply(plan(group.observe(), State(owned=[FORWARDING])))
    assert log == [Change.delete(MASQUERADE), Change.delete(ACCEPT), Change.delete(ROUTE)]
    assert (node.applies, rules.applies) == (1, 1)


def test_a_group_splits_a_members_part_only_where_another_members_change_comes_between(
        ) -> None:
    """Adds alone (the usual plan) and deletes alone take one apply a member."""
    group, log, node, rules = _group(State())
    group.apply(plan(group.observe(), State(owned=[FORWARDING, ROUTE, ACCEPT])))
    assert (node.applies, rules.applies) == (1, 1)
    assert log == [Change.add(FORWARDING), Change.add(ROUTE), Change.add(ACCEPT)]
    other = Route("192.168.3.0/24", gateway="192.168.1.1", device="eth1")
    moved = MasqueradeRule("10.42.0.0/16", destination="192.168.3.0/24")
    p = plan(group.observe(), State(owned=[FORWARDING, other, moved]))
    group.apply(p)
    # the accept deleted, then the route swapped, then the new NAT rule
    assert log[3:] == list(p.changes)
    assert (node.applies, rules.applies) == (2, 3)


def _mixed() -> tuple[State, State]:
    other = Route("192.168.3.0/24", gateway="192.168.1.1", device="eth1")
    return (State(owned=[FORWARDING, ROUTE, ACCEPT]),
            State(owned=[FORWARDING, other, MasqueradeRule("10.42.0.0/16")]))


@pytest.mark.parametrize("at", range(4))
def test_an_injected_failure_fails_at_that_very_change_of_a_member_applied_in_two_runs(
        at: int) -> None:
    observed, desired = _mixed()
    group, _, node, rules = _group(observed)
    p = plan(group.observe(), desired)
    assert [c.kind for c in p.changes] == ["forward", "route", "route", "nat"]
    group.faults.fail_at(at)
    with pytest.raises(ApplyError) as caught:
        group.apply(p)
    assert caught.value.failed == p.changes[at]
    assert group.observe().owned == observed.owned
    assert node.faults.armed is None
    assert rules.faults.armed is None


@given(ks.states(_pool, max_owned=8, max_foreign=0), ks.states(_pool, max_owned=8,
                                                                max_foreign=0), st.data())
def test_done_a_failure_anywhere_reports_the_changes_before_it_and_their_inverses_last_first(
        observed: State, desired: State, data: st.DataObject) -> None:
    """``done`` and ``rolled_back`` stay true when a member's part is cut into runs: a
    failure in a member's second run reports the earlier runs of every member, in the
    plan's order, and takes them back last first."""
    group, _, node, rules = _group(observed)
    p = plan(group.observe(), desired)
    if not p.changes:
        return
    at = data.draw(st.integers(0, len(p.changes) - 1), label="failing change")
    group.faults.fail_at(at)
    with pytest.raises(ApplyError) as caught:
        group.apply(p)
    error = caught.value
    assert error.failed == p.changes[at]
    assert list(error.done) == list(p.changes[:at])
    assert list(error.rolled_back) == [c.inverse() for c in reversed(p.changes[:at])]
    assert group.observe().owned == observed.owned
    assert node.faults.armed is None
    assert rules.faults.armed is None
