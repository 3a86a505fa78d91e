"""A standing conflict fails the agent's pass, but not the rest of its plan.

A foreign route where the spec wants its own is the plan's ``!`` conflict: the agent
leaves it (and k3snet's object it blocks) as it is, applies every other change, and
fails the pass ``conflict`` (log line, metrics, node report), readiness going as for
any failing pass. The kernel's view of the same, a foreign ``DROP`` before k3snet's
jump: test_conflict_partial_kernel.py.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import attrs

from k3snet.converge import compile_for
from k3snet.model.route import Route
from k3snet.model.state import State
from k3snet.planner import Plan, plan
from k3snet.spec import Spec

from .test_loop import Node

SPEC_ROUTE = ("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
              "destinations:\n  - cidr: 192.168.2.0/24\n    gateway: 192.168.1.1\n"
              "    device: eth0\n  - cidr: 192.168.3.0/24\n    gateway: 192.168.1.1\n"
              "    device: eth0\n")


def _blocked(node: Node) -> State:
    """A foreign route (no gateway) where the spec wants its route to 192.168.2.0/24."""
    want = compile_for(node.agent._make_backend(Spec.from_yaml(SPEC_ROUTE)),
                       Spec.from_yaml(SPEC_ROUTE))
    route = next(o for o in want.owned if isinstance(o, Route)
                 and str(o.destination) == "192.168.2.0/24")
    return State(foreign=[attrs.evolve(route, gateway=None)])


def test_a_conflict_fails_the_pass_but_every_other_change_is_applied(tmp_path: Path) -> None:
    node = Node(tmp_path, SPEC_ROUTE, not_ready_for=0)
    foreign = _blocked(node)
    node.memory._restore(foreign)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("k3snet.agent")
    logger.addHandler(handler)
    try:
        result = node.agent.run_pass()
    finally:
        logger.removeHandler(handler)
    assert result.status == "failed"
    assert result.message.startswith("conflict: foreign state conflicts with the spec: 1 "
                                      "wanted object(s) left as they are")
    assert "192.168.2.0/24" in result.message
    assert f"({len(result.applied)} change(s) applied)" in result.message
    assert result.message.index("192.168.2.0/24") < result.message.index("; applied: ")
    assert "pass failed: conflict: " in stream.getvalue()
    # Everything but the blocked route: the other route, the sysctl, forward and NAT rules.
    kinds = sorted(c.kind for c in result.applied)
    assert kinds.count("route") == 1
    assert {"sysctl", "forward", "nat"} <= set(kinds)
    assert all(c.action == "add" for c in result.applied)
    # The foreign route is untouched, and no route of k3snet's where it stands.
    assert node.memory.state.foreign == foreign.foreign
    assert [str(o.destination) for o in node.memory.state.owned if o.kind == "route"] == [
        "192.168.3.0/24"]
    assert node.sample("k3snet_agent_conflicts_total") == 1
    assert node.sample("k3snet_agent_sync_failures_total", reason="conflict") == 1
    # Drift of another object is repaired while the conflict stands, the pass still failed.
    nat = [c for c in plan(State(), node.memory.state).changes if c.kind == "nat"]
    node.memory.apply(Plan(changes=[c.inverse() for c in nat]))
    again = node.agent.run_pass()
    assert again.status == "failed"
    assert again.message.startswith("conflict: ")
    assert [c.kind for c in again.applied] == ["nat"] * len(nat)
    assert again.drift == len(nat)
    assert node.sample("k3snet_agent_drift_repairs_total") == len(nat)
    third = node.agent.run_pass()
    assert (third.status, third.applied) == ("failed", ())
    assert "nothing else to change" in third.message
    assert node.agent.readiness()[0] is False  # NOT_READY_AFTER failing passes, as before
    assert node.sample("k3snet_agent_conflicts_total") == 3
    # The foreign route gone, the next pass converges the node and makes it ready.
    node.memory._restore(State(owned=node.memory.state.owned))
    done = node.agent.run_pass()
    assert done.status == "ok", done.message
    assert [c.kind for c in done.applied] == ["route"]
    assert node.agent.readiness()[0] is True


def test_a_partial_pass_whose_apply_fails_is_undone_whole(tmp_path: Path) -> None:
    node = Node(tmp_path, SPEC_ROUTE)
    foreign = _blocked(node)
    node.memory._restore(foreign)
    node.memory.faults.fail_at(1)  # the second change of the plan without the conflict
    result = node.agent.run_pass()
    assert result.status == "failed"
    assert result.message.startswith("apply: ")
    # The conflict is said all the same, though the failure is the apply's.
    assert ("foreign state also conflicts with the spec, left out of this apply: ! route "
            "192.168.2.0/24") in result.message
    assert result.applied == ()
    assert node.memory.state == foreign  # rolled back, the foreign route as it was
    assert node.sample("k3snet_agent_conflicts_total") is None or \
        node.sample("k3snet_agent_conflicts_total") == 0
