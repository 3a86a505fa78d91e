"""The agent holds the routes of destinations the node cannot route to and converges the rest.

On the memory backend with node facts given to compile as values: the facts say
which devices and gateways the node has, the memory backend keeps what it holds
(a kernel flushes a route whose gateway went; k3snet must not delete one it kept).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from k3snet.agent import Agent, AgentMetrics, AgentOptions, FileSpecSource
from k3snet.agent._loop import NOT_READY_AFTER
from k3snet.backends.group import BackendGroup
from k3snet.backends.memory import MemoryBackend
from k3snet.converge import compile_for
from k3snet.errors import SpecError
from k3snet.model.state import State
from k3snet.planner import Plan, plan
from k3snet.spec import NodeFacts, Spec, held_destinations
from k3snet.spec import compile as compile_spec

SPEC = """\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
destinations:
  - cidr: 192.168.2.0/24
    gateway: 192.168.1.1
  - cidr: 172.20.0.0/16
    gateway: 10.9.0.1
    device: wg0
"""
UP = NodeFacts(interfaces={"eth0": ("192.168.1.5/24",), "wg0": ("10.9.0.2/24",)})
# The VPN's device lost its address: 10.9.0.1 is in no connected or routed prefix.
DOWN = NodeFacts(interfaces={"eth0": ("192.168.1.5/24",), "wg0": ()})
NODE_KINDS = ("route", "sysctl", "nat", "forward")


class Node:
    """An agent over one MemoryBackend, compiling with the node facts in ``facts``."""

    def __init__(self, tmp_path: Path, text: str = SPEC) -> None:
        self.path = tmp_path / "spec.yaml"
        self.path.write_text(text)
        self.memory = MemoryBackend(capabilities=NODE_KINDS)
        self.metrics = AgentMetrics()
        self.facts = UP

        def desired(spec: Spec, group: BackendGroup, *,
                    hold: frozenset[int] = frozenset()) -> State:
            return compile_for(group, spec, self.facts, hold=hold)

        self.agent = Agent(FileSpecSource(self.path), lambda spec: BackendGroup([self.memory]),
                           desired, AgentOptions("node-1", interval=0.01),
                           metrics=self.metrics)

    def owned(self, kind: str, where: str) -> list[str]:
        return sorted(str(o) for o in self.memory.state.owned
                      if o.kind == kind and where in str(o))

    def remove(self, kind: str, where: str) -> None:
        """Another program deletes k3snet's objects of ``kind`` naming ``where``."""
        self.memory.apply(Plan(changes=[
            c.inverse() for c in plan(State(), self.memory.state).changes
            if c.kind == kind and where in str(c.subject)]))

    def failures(self, reason: str) -> float | None:
        return self.metrics.registry.get_sample_value("k3snet_agent_sync_failures_total",
                                                      {"reason": reason})


def test_drift_of_another_destination_is_repaired_while_one_gateway_is_unreachable(
        tmp_path: Path) -> None:
    node = Node(tmp_path)
    assert node.agent.run_pass().status == "ok"
    nat = node.owned("nat", "192.168.2.0/24")
    assert nat
    node.facts = DOWN
    node.remove("nat", "192.168.2.0/24")
    result = node.agent.run_pass()
    # Refused whole, nothing converged: the masquerade of 192.168.2.0/24 stayed gone
    # until the VPN was back.
    assert node.owned("nat", "192.168.2.0/24") == nat
    assert result.status == "failed"
    assert len(result.applied) == 1
    assert result.drift == 0  # a failed pass counts no drift
    assert "unreachable: 1 destination(s) held" in result.message
    assert "172.20.0.0/16" in result.message
    assert "destinations[1].gateway: gateway 10.9.0.1 is not inside" in result.message
    assert node.failures("unreachable") == 1
    assert node.failures("spec") == 0


def test_the_held_route_is_neither_deleted_nor_added_again(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.agent.run_pass()
    route = node.owned("route", "172.20.0.0/16")
    assert route
    node.facts = DOWN
    # The facts may be wrong (a gateway only an `ip rule` reaches): the route the node
    # still has is kept.
    result = node.agent.run_pass()
    assert result.status == "failed"
    assert result.applied == ()
    assert node.owned("route", "172.20.0.0/16") == route
    # The kernel flushed it: k3snet does not put it back while it cannot route there.
    node.remove("route", "172.20.0.0/16")
    result = node.agent.run_pass()
    assert result.status == "failed"
    assert result.applied == ()
    assert node.owned("route", "172.20.0.0/16") == []
    # Its NAT and forward rules do not depend on the gateway: they stay.
    assert node.owned("nat", "172.20.0.0/16")
    assert node.owned("forward", "172.20.0.0/16")


def test_the_route_comes_back_once_its_gateway_is_reachable_again(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.agent.run_pass()
    route = node.owned("route", "172.20.0.0/16")
    node.facts = DOWN
    node.remove("route", "172.20.0.0/16")
    for _ in range(NOT_READY_AFTER):
        assert node.agent.run_pass().status == "failed"
    # Readiness as for any failing node part: the node lacks a route the spec wants.
    ready, why = node.agent.readiness()
    assert not ready
    assert "unreachable" in why
    node.facts = UP
    result = node.agent.run_pass()
    assert result.status == "ok"
    assert [str(c.subject) for c in result.applied] == route
    assert node.owned("route", "172.20.0.0/16") == route
    assert node.agent.readiness()[0] is True


def test_a_new_spec_refused_by_the_facts_alone_is_put_in_force(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.agent.run_pass()
    node.facts = DOWN
    node.path.write_text(SPEC + "  - cidr: 10.60.0.0/16\n    gateway: 192.168.1.1\n")
    result = node.agent.run_pass()
    assert result.status == "failed"
    assert node.agent.generation == 2
    assert node.owned("route", "10.60.0.0/16")
    assert node.owned("route", "172.20.0.0/16")  # held
    assert node.metrics.registry.get_sample_value("k3snet_agent_spec_rejected_total",
                                                  {"reason": "invalid"}) == 0


def test_a_spec_with_another_problem_is_still_refused_whole(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.agent.run_pass()
    before = sorted(map(str, node.memory.state.owned))
    node.facts = DOWN
    # One more problem than the unreachable gateway: no such masquerade interface.
    node.path.write_text(SPEC + "masquerade:\n  outInterface: eth9\n")
    result = node.agent.run_pass()
    assert "refused (invalid)" in result.message
    assert "masquerade.outInterface: no interface 'eth9'" in result.message
    assert node.metrics.registry.get_sample_value("k3snet_agent_spec_rejected_total",
                                                  {"reason": "invalid"}) == 1
    # The spec in force holds the same route meanwhile: the pass fails for it.
    assert result.status == "failed"
    assert "unreachable: 1 destination(s) held" in result.message
    assert node.agent.generation == 1
    assert sorted(map(str, node.memory.state.owned)) == before


def test_held_destinations_names_only_a_spec_refused_by_destination_facts() -> None:
    spec = Spec.from_yaml(SPEC)
    with pytest.raises(SpecError) as caught:
        compile_spec(spec, DOWN)
    assert held_destinations(spec, caught.value) == {1}
    state = compile_spec(spec, DOWN, hold={1})
    assert not [o for o in state.owned if o.kind == "route" and "172.20" in str(o)]
    assert [o for o in state.owned if o.kind == "route" and "192.168.2" in str(o)]
    assert [o for o in state.owned if o.kind == "nat" and "172.20" in str(o)]
    assert state.owned == compile_spec(spec, UP).owned - {
        o for o in compile_spec(spec, UP).owned if o.kind == "route" and "172.20" in str(o)}
    bad = Spec.from_yaml(SPEC + "masquerade:\n  outInterface: eth9\n")
    with pytest.raises(SpecError) as caught:
        compile_spec(bad, DOWN)
    assert held_destinations(bad, caught.value) == frozenset()


def test_a_desired_function_without_hold_refuses_the_spec_as_before(tmp_path: Path) -> None:
    """``Agent``'s ``desired`` was ``(spec, group) -> State`` until ``hold``: such a
    function, called with ``hold=``, raised TypeError, and every pass with an
    unreachable destination failed as ``internal`` (a bug, with its traceback)."""
    node = Node(tmp_path)

    def desired(spec: Spec, group: BackendGroup) -> State:
        return compile_for(group, spec, node.facts)

    node.agent = Agent(FileSpecSource(node.path), lambda spec: BackendGroup([node.memory]),
                       desired, AgentOptions("node-1", interval=0.01),  # type: ignore[arg-type]
                       metrics=node.metrics)
    node.agent.run_pass()
    node.facts = DOWN
    result = node.agent.run_pass()
    assert result.status == "failed"
    assert node.failures("spec") == 1
    assert not node.failures("internal")
