"""The agent holds the routes of destinations the node cannot route to and converges the rest.

On the memory backend with node facts given to compile as values: the facts say
which devices and gateways the node has, the memory backend keeps what it holds
(a kernel flushes a route whose gateway went; k3snet must not delete one it kept).
"""

from __future__ import annotations

import logging
import threading
import traceback
from pathlib import Path

import pytest

from k3snet.agent import LOG_ITEMS, Agent, AgentMetrics, AgentOptions, FileSpecSource, _loop
from k3snet.agent._loop import NOT_READY_AFTER
from k3snet.backends.group import BackendGroup
from k3snet.backends.memory import MemoryBackend
from k3snet.converge import compile_for
from k3snet.errors import Problem, SpecError
from k3snet.model.state import State
from k3snet.planner import Plan, plan
from k3snet.spec import Destination, NodeFacts, Spec, held_destinations
from k3snet.spec import compile as compile_spec

from .test_loop import MovedWhileObserved

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

    def __init__(self, tmp_path: Path, text: str = SPEC, interval: float = 0.01) -> None:
        self.path = tmp_path / "spec.yaml"
        self.path.write_text(text)
        self.memory = MemoryBackend(capabilities=NODE_KINDS)
        self.metrics = AgentMetrics()
        self.facts = UP

        def desired(spec: Spec, group: BackendGroup, *,
                    hold: frozenset[int] = frozenset()) -> State:
            return compile_for(group, spec, self.facts, hold=hold)

        self.agent = Agent(FileSpecSource(self.path), lambda spec: BackendGroup([self.memory]),
                           # (readiness by failed passes alone, not their time)
                           desired, AgentOptions("node-1", interval=interval,
                                                 not_ready_for=0.0),
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
        value: float | None = self.metrics.registry.get_sample_value(
            "k3snet_agent_sync_failures_total", {"reason": reason})
        return value


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
    # Drift all the same: it counted none, and a fight with another program over the
    # other destinations' objects was never slowed while a route was held.
    assert result.drift == 1
    assert node.metrics.registry.get_sample_value("k3snet_agent_drift_repairs_total") == 1
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
                       desired, AgentOptions("node-1", interval=0.01),
                       metrics=node.metrics)
    node.agent.run_pass()
    node.facts = DOWN
    result = node.agent.run_pass()
    assert result.status == "failed"
    assert node.failures("spec") == 1
    assert not node.failures("internal")


def test_a_node_part_managing_no_routes_holds_nothing_and_its_passes_stay_ok(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``--backend nftables`` alone (the routes another program's): an unreachable
    gateway failed every pass as ``unreachable``, "routes held" that no backend there
    manages, and the node, its NAT and forward rules all in place, turned not ready."""
    node = Node(tmp_path)
    node.memory = MemoryBackend(capabilities=("nat", "forward", "sysctl"))
    node.agent._make_backend = lambda spec: BackendGroup([node.memory])
    assert node.agent.run_pass().status == "ok"
    node.facts = DOWN
    node.remove("nat", "192.168.2.0/24")
    with caplog.at_level(logging.INFO, logger="k3snet.agent"):
        results = [node.agent.run_pass() for _ in range(NOT_READY_AFTER + 1)]
    assert [r.status for r in results] == ["ok"] * (NOT_READY_AFTER + 1)
    assert results[0].drift == 1
    assert node.owned("nat", "192.168.2.0/24")
    assert node.agent.readiness()[0] is True
    assert not node.failures("unreachable")
    said = [r.getMessage() for r in caplog.records if "cannot route to" in r.getMessage()]
    assert len(said) == 1  # once, not every pass
    assert "172.20.0.0/16" in said[0]
    assert "destinations[1].gateway" in said[0]


def test_passes_holding_routes_do_not_back_off_the_repairs_of_the_rest(
        tmp_path: Path) -> None:
    """A held pass converged everything else: counted as a failure for the back-off, a
    VPN down for minutes left other drift, and the routes once the VPN was back, for
    the interval's pass (the address coming back moves the netlink token at once)."""
    node = Node(tmp_path, interval=30.0)
    node.agent.run_pass()
    node.facts = DOWN
    for _ in range(NOT_READY_AFTER + 4):
        assert node.agent.run_pass().status == "failed"
    assert node.agent.readiness()[0] is False  # readiness counts them still
    assert node.agent.repair_gap() == node.agent.options.watch_gap


def test_the_same_routes_held_again_are_an_error_once_an_interval(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    node = Node(tmp_path)
    node.agent = Agent(FileSpecSource(node.path), lambda spec: BackendGroup([node.memory]),
                       node.agent._desired, AgentOptions("node-1", interval=30.0),
                       metrics=node.metrics, monotonic=lambda: now[0])
    node.agent.run_pass()
    node.facts = DOWN
    with caplog.at_level(logging.INFO, logger="k3snet.agent"):
        for _ in range(5):
            now[0] += 1.0
            node.agent.run_pass()
        now[0] += 30.0
        node.agent.run_pass()
    held = [r for r in caplog.records if "destination(s) held" in r.getMessage()]
    assert [r.levelname for r in held] == ["ERROR", *["INFO"] * 4, "ERROR"]


def test_a_held_pass_finds_the_held_destinations_once_for_one_compile_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a desired-state function that keeps its results (the CLI's hands back the
    same error while the facts stand still), the held destinations are found once:
    finding them validates the whole spec again."""
    node = Node(tmp_path)
    spec = Spec.from_yaml(SPEC)
    with pytest.raises(SpecError) as caught:
        compile_for(BackendGroup([node.memory]), spec, DOWN)
    error = caught.value
    kept = compile_for(BackendGroup([node.memory]), spec, DOWN, hold={1})
    calls = []

    def desired(spec: Spec, group: BackendGroup, *,
                hold: frozenset[int] = frozenset()) -> State:
        if not hold:
            raise error.with_traceback(None)
        return kept

    def counted(spec: Spec, error: SpecError) -> frozenset[int]:
        calls.append(error)
        return held_destinations(spec, error)

    monkeypatch.setattr(_loop, "held_destinations", counted)
    node.agent._desired = desired
    for _ in range(3):
        with pytest.raises(_loop._HeldRoutesError):
            node.agent._converge_one(spec, BackendGroup([node.memory]), "node")
    assert calls == [error]


def test_the_cli_s_desired_state_keeps_a_compile_for_each_part_and_hold(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Kept one, the node's and the cluster-wide part's compiles (a leader), or the
    node's without and with ``hold`` (a route held), took each other's place: every
    pass compiled twice (2k destinations: 250 ms each)."""
    from k3snet import cli  # noqa: PLC0415 - the CLI's own agent wiring

    compiles: list[frozenset[int]] = []

    def counted(backend: BackendGroup, spec: Spec, facts: NodeFacts | None, *,
                hold: frozenset[int] = frozenset()) -> State:
        compiles.append(hold)
        if not hold and facts is None:
            raise SpecError([])
        return compile_for(backend, spec, facts, hold=hold)

    monkeypatch.setattr(cli, "compile_for", counted)
    desired = cli._AgentDesired(cli.build_parser().parse_args(["agent", "-f", "x"]))
    spec = Spec.from_yaml(SPEC)
    node = BackendGroup([MemoryBackend(capabilities=NODE_KINDS)])
    cluster = BackendGroup([MemoryBackend(capabilities=("ippool",))])
    errors = []
    for _ in range(3):
        with pytest.raises(SpecError) as caught:
            desired(spec, node)
        errors.append(caught.value)
        desired(spec, node, hold=frozenset({1}))
        desired(spec, cluster, hold=frozenset({1}))
    assert compiles == [frozenset(), {1}, {1}]
    assert errors[0] is errors[1] is errors[2]
    assert errors[2].__traceback__ is not None
    # One raise's frames each, not every pass's piled up.
    depth = len(list(traceback.walk_tb(errors[2].__traceback__)))
    assert depth <= 3


def test_a_pass_holding_many_destinations_names_the_first_ones_and_counts_the_rest(
        tmp_path: Path) -> None:
    """An uplink losing its address holds every destination through it: the message
    named each (10 000: 170 KB on every pass, in the log, the readiness reason)."""
    extra = "".join(f"  - cidr: 10.{i}.0.0/16\n    gateway: 10.9.0.1\n    device: wg0\n"
                    for i in range(LOG_ITEMS + 5))
    node = Node(tmp_path, SPEC + extra)
    node.agent.run_pass()
    node.facts = DOWN
    result = node.agent.run_pass()
    head = result.message.split(": ", 2)[1]
    assert f"{LOG_ITEMS + 6} destination(s) held" in head
    assert "172.20.0.0/16, 10.0.0.0/16" in head
    assert f"10.{LOG_ITEMS - 2}.0.0/16, ... and 6 more)" in head
    assert f"10.{LOG_ITEMS - 1}.0.0/16" not in result.message.split("converged")[0]


def test_a_change_made_while_a_pass_holding_routes_runs_starts_the_next_pass(
        tmp_path: Path) -> None:
    """The watch's baseline of a pass that held routes was read after it, as for any
    failed pass: a rule removed after that pass observed was in it, and waited for the
    interval (an hour here), though the pass had converged everything else."""
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    memory = MovedWhileObserved()
    facts = [UP]

    def desired(spec: Spec, group: BackendGroup, *,
                hold: frozenset[int] = frozenset()) -> State:
        return compile_for(group, spec, facts[0], hold=hold)

    agent = Agent(FileSpecSource(path), lambda spec: BackendGroup([memory]), desired,
                  AgentOptions("node-1", interval=3600, watch=0.01, watch_gap=0.0))
    assert agent.run_pass().status == "ok"
    facts[0] = DOWN
    assert agent.run_pass().status == "failed"
    runner = threading.Thread(target=agent.run)
    runner.start()
    try:
        wait = threading.Event()
        for _ in range(1000):  # the loop's first pass (held again), at most 10 s
            if agent.passes >= 3:
                break
            wait.wait(0.01)
        wait.wait(0.1)  # quiet
        want = sorted(map(str, memory.state.owned))
        changes = plan(State(), memory.state).changes
        forward = [c.inverse() for c in changes if c.kind == "forward"]
        nat = [c.inverse() for c in changes if c.kind == "nat"]
        memory.strike.append(Plan(changes=nat))  # removed during the repair pass
        memory.apply(Plan(changes=forward))  # drift: starts that pass
        for _ in range(1000):  # at most 10 s, against an interval of an hour
            if sorted(map(str, memory.state.owned)) == want:
                break
            wait.wait(0.01)
        assert sorted(map(str, memory.state.owned)) == want
        assert not memory.strike
    finally:
        agent.stop()
        runner.join()


def test_a_conflict_beside_held_routes_names_both_and_the_rest_is_still_repaired(
        tmp_path: Path) -> None:
    import attrs  # noqa: PLC0415

    from k3snet.model.route import Route  # noqa: PLC0415

    node = Node(tmp_path, SPEC.replace("destinations:", "destinations:\n"
                                       "  - cidr: 10.200.0.0/24\n    gateway: 192.168.1.1"))
    assert node.agent.run_pass().status == "ok"
    route = next(o for o in node.memory.state.owned
                 if isinstance(o, Route) and str(o.destination) == "10.200.0.0/24")
    # Another program's route takes the place of k3snet's (deleted first).
    node.remove("route", "10.200.0.0/24")
    foreign = attrs.evolve(route, gateway=None, device="eth0")
    node.memory._restore(State(owned=node.memory.state.owned, foreign=[foreign]))
    node.facts = DOWN
    node.remove("nat", "192.168.2.0/24")
    result = node.agent.run_pass()
    assert result.status == "failed"
    assert result.message.startswith("conflict: foreign state conflicts with the spec: 1 ")
    # The held destinations named whole (an IPv6 CIDR's colons cut nothing), then the conflict.
    assert ("also 1 destination(s) held, their routes neither added nor deleted until the "
            "node can route to them (172.20.0.0/16): ! route 10.200.0.0/24") in result.message
    assert [str(c.subject.destination) for c in result.applied if c.kind == "nat"] == [
        "192.168.2.0/24"]
    assert node.owned("route", "10.200.0.0/24") == []
    assert list(node.memory.state.foreign) == [foreign]
    assert node.failures("conflict") == 1


def test_held_routes_of_10_000_destinations_make_a_bounded_message_counting_the_rest(
        ) -> None:
    """An uplink losing its address holds every destination through it: the error's
    message joined each one's problem (629 KB for 10 000, built again on every pass), of
    which the log, the Node and the readiness reason say the first LOG_ITEMS."""
    count, shown = 10_000, LOG_ITEMS
    spec = Spec(destinations=[Destination(f"10.{i // 256}.{i % 256}.0/24",
                                          gateway="10.9.0.1", device="wg0")
                              for i in range(count)])
    cause = SpecError([Problem(f"destinations[{i}].gateway", "gateway 10.9.0.1 is not "
                               "inside any connected or routed prefix") for i in range(count)])
    error = _loop._HeldRoutesError(cause, frozenset(range(count)), spec, (), None)
    message = str(error)
    assert len(message) < 4096
    assert message.startswith(f"{count} destination(s) held")
    assert message.count("destinations[") == shown
    # The rest counted, of the destinations named and of the problems.
    assert message.count(f"... and {count - shown} more") == 2
    assert error.cause is cause
    assert error.held == frozenset(range(count))
    said = _loop._one_line(error)  # what the log, the Node and readiness say
    assert said.startswith(f"{count} destination(s) held")
    assert said.count("destinations[") == shown
    assert said.endswith(f"destinations[{shown - 1}].gateway: gateway 10.9.0.1 is not inside "
                         f"any connected or routed prefix ... and {count - shown} more")
