"""One backend refusing its part of the spec does not stop the rest of the node's pass.

A backend's ``expect`` refuses a wanted state it never writes, whatever is in place (the
flannel backend: ``EnableNFTables`` in a node's own net-conf.json, which K3s' flannel
ignores). ``converge`` refuses the whole group then, before anything is read: a node
where an older k3snet had written that key (it did not refuse it yet) stopped converging
its routes and NAT rules after an upgrade, the pass failing ``error``. The agent now
leaves what the refusing backend manages as it is, converges the rest, and fails the
pass ``refused`` (log, metrics, Node annotation, ``--once`` exit status, readiness).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from k3snet.agent import Agent, AgentOptions, FileSpecSource, NodeReporter
from k3snet.agent._metrics import AgentMetrics
from k3snet.agent._report import STATUS_ANNOTATION
from k3snet.backends.base import ApplyResult
from k3snet.backends.flannel import FlannelBackend
from k3snet.backends.group import BackendGroup
from k3snet.backends.memory import MemoryBackend
from k3snet.converge import compile_for, converge
from k3snet.errors import PlanError
from k3snet.model.route import Route
from k3snet.model.state import State
from k3snet.model.sysctl import Sysctl
from k3snet.planner import Plan, plan
from k3snet.spec import Spec
from k3snet.testing.kube import AGENT_RESOURCES, EmulatedApiServer
from tests.agent.clock import FakeClock

from .desired import COMPILED

NODE_KINDS = ("route", "sysctl", "nat", "forward")
SPEC = """\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
cluster: {podCIDRs: [10.42.0.0/16]}
destinations:
  - {cidr: 192.168.2.0/24, gateway: 192.168.1.1, device: eth0}
cni:
  flannel: {enableNFTables: true}
"""
CONF = {"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan"}}


@pytest.fixture
def server() -> Iterator[EmulatedApiServer]:
    with EmulatedApiServer(resources=AGENT_RESOURCES) as srv:
        srv.put("v1/nodes", {"metadata": {"name": "node-1"}})
        yield srv


class _Node:
    """An agent of a node whose net-conf.json an older k3snet wrote ``EnableNFTables``
    into (it did not refuse it then: written here by a backend read by a flanneld)."""

    def __init__(self, tmp_path: Path, server: EmulatedApiServer) -> None:
        self.conf = tmp_path / "net-conf.json"
        self.conf.write_text(json.dumps(CONF))
        older = FlannelBackend(path=self.conf, reader="flanneld")
        converge(older, compile_for(older, Spec.from_yaml(SPEC)))
        self.written = self.conf.read_bytes()
        assert b'"EnableNFTables": true' in self.written
        spec = tmp_path / "spec.yaml"
        spec.write_text(SPEC)
        self.memory = MemoryBackend(capabilities=NODE_KINDS)
        self.metrics = AgentMetrics()
        flannel = FlannelBackend(path=self.conf)  # read by K3s' flannel: the default
        self.server = server
        self.agent = Agent(FileSpecSource(spec),
                           lambda _: BackendGroup([self.memory, flannel]), COMPILED,
                           AgentOptions("node-1", interval=1.0, not_ready_for=0.0),
                           metrics=self.metrics,
                           reporter=NodeReporter(server.api_client(), "node-1"),
                           clock=FakeClock())

    def failures(self, reason: str) -> float | None:
        value: float | None = self.metrics.registry.get_sample_value(
            "k3snet_agent_sync_failures_total", {"reason": reason})
        return value

    def node_status(self) -> str:
        node = self.server.get("v1/nodes", "node-1")
        assert node is not None
        status: str = node["metadata"]["annotations"][STATUS_ANNOTATION]
        return status


def test_a_refusing_backend_leaves_its_part_and_the_rest_of_the_node_converges(
        tmp_path: Path, server: EmulatedApiServer) -> None:
    node = _Node(tmp_path, server)
    result = node.agent.run_pass()
    assert result.status == "failed"
    assert result.message.startswith("refused: flannel backend refuses flannel file:"), \
        result.message
    assert "EnableNFTables" in result.message
    assert ("what flannel manages is left as it is, everything else converged "
            f"({len(result.applied)} change(s) applied)") in result.message
    # The routes, NAT and forward rules and sysctls of the node are in place ...
    assert {"route", "nat", "forward", "sysctl"} <= {c.kind for c in result.applied}
    want = compile_for(BackendGroup([node.memory]), Spec.from_yaml(SPEC))
    assert plan(node.memory.observe(), want).empty
    # ... the file as the older k3snet left it, neither rewritten nor given back.
    assert node.conf.read_bytes() == node.written
    assert node.failures("refused") == 1
    assert node.failures("error") == 0
    assert node.node_status() == "failed"
    # Drift of another object is repaired while the refusal stands; the pass still fails.
    nat = [c for c in plan(State(), node.memory.state).changes if c.kind == "nat"]
    node.memory.apply(Plan(changes=[c.inverse() for c in nat]))
    again = node.agent.run_pass()
    assert again.status == "failed"
    assert [c.kind for c in again.applied] == ["nat"] * len(nat)
    assert again.drift == len(nat)
    # Failing passes in a row make the agent not ready, saying why.
    third = node.agent.run_pass()
    assert (third.status, third.applied) == ("failed", ())
    ready, why = node.agent.readiness()
    assert ready is False
    assert "refused: flannel backend refuses" in why
    assert node.failures("refused") == 3


def test_agent_once_exits_1_with_a_refusing_backend(
        tmp_path: Path, server: EmulatedApiServer) -> None:
    node = _Node(tmp_path, server)
    assert node.agent.run(once=True) == 1
    assert node.memory.state.owned  # the rest converged all the same
    assert node.node_status() == "failed"


def test_a_refusal_beside_a_conflict_is_said_after_it(
        tmp_path: Path, server: EmulatedApiServer) -> None:
    node = _Node(tmp_path, server)
    want = compile_for(BackendGroup([node.memory]), Spec.from_yaml(SPEC))
    route = next(o for o in want.owned if isinstance(o, Route))
    node.memory._restore(State(foreign=[attrs.evolve(route, gateway=None)]))
    result = node.agent.run_pass()
    assert result.status == "failed"
    assert result.message.startswith("conflict: "), result.message
    # After a `;`: it read as part of the last change applied (`oif eth0 also refused`).
    assert "oif eth0; also refused: flannel backend refuses flannel file:" in result.message
    assert {"nat", "forward", "sysctl"} <= {c.kind for c in result.applied}
    assert node.conf.read_bytes() == node.written
    # Both counted: the conflict by k3snet_agent_conflicts_total, the pass by its
    # refusal (it was `conflict` alone: an alert on `refused` never saw a refusal that
    # stood beside a foreign rule, and the spec's own fault stayed unsaid there).
    assert node.failures("refused") == 1
    assert node.failures("conflict") == 0
    conflicts = node.metrics.registry.get_sample_value("k3snet_agent_conflicts_total")
    assert conflicts == 1


class _Refusing(MemoryBackend):
    """A member whose ``expect`` refuses its part while ``refuse`` says why (as the
    flannel backend's does), and whose ``apply`` may refuse (a ``PlanError`` once
    planned: nothing changed)."""

    def __init__(self, name: str, kinds: tuple[str, ...], state: State | None = None) -> None:
        super().__init__(state, capabilities=kinds)
        self.name = name
        self.refuse: str | None = None
        self.refuse_apply = False

    def expect(self, state: State) -> None:
        if self.refuse is not None and state.owned:
            raise PlanError(f"{self.name} backend refuses: {self.refuse}")

    def apply(self, plan: Plan) -> ApplyResult:
        if self.refuse_apply:
            raise PlanError(f"{self.name} backend refuses the plan, nothing was changed")
        return super().apply(plan)


def _sysctl_then(spec: Spec, value: str) -> State:
    """The sysctls ``spec`` wants, each at ``value`` (another program's value)."""
    want = compile_for(BackendGroup([MemoryBackend(capabilities=("sysctl",))]), spec)
    return State(owned=[attrs.evolve(o, value=value) for o in want.owned
                        if isinstance(o, Sysctl)])


def _agent(tmp_path: Path, text: str, members: list[MemoryBackend]
           ) -> tuple[Agent, AgentMetrics, Path]:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    metrics = AgentMetrics()
    compiled: dict[tuple[int, int], State] = {}

    def desired(spec: Spec, group: BackendGroup) -> State:
        # The same object for the same spec and group, as the agent's own desired-state
        # function gives (a pass may then find itself "in sync" with the last one).
        return compiled.setdefault((id(spec), id(group)), COMPILED(spec, group))

    agent = Agent(FileSpecSource(path), lambda _: BackendGroup(list(members)), desired,
                  AgentOptions("node-1", interval=1.0, not_ready_for=0.0), metrics=metrics,
                  clock=FakeClock())
    return agent, metrics, path


PLAIN = SPEC.replace("cni:\n  flannel: {enableNFTables: true}\n", "")


def test_two_refusing_members_each_keep_their_objects_unchanged_and_the_rest_converges(
        tmp_path: Path) -> None:
    spec = Spec.from_yaml(PLAIN)
    sysctls = _Refusing("sysctls", ("sysctl",), _sysctl_then(spec, "0"))
    forward = _Refusing("forward", ("forward",))
    sysctls.refuse = forward.refuse = "not here"
    rest = MemoryBackend(capabilities=("route", "nat"))
    before = sysctls.state
    agent, metrics, _ = _agent(tmp_path, PLAIN, [rest, sysctls, forward])
    result = agent.run_pass()
    assert result.status == "failed"
    assert result.message.startswith("refused: sysctls backend refuses: not here; forward "
                                     "backend refuses: not here; what sysctls, forward "
                                     "manages is left as it is"), result.message
    # The refusing members' objects: neither deleted nor given the wanted value.
    assert sysctls.state == before
    assert before.owned
    assert forward.state == State()
    assert {c.kind for c in result.applied} == {"route", "nat"}
    assert metrics.registry.get_sample_value("k3snet_agent_sync_failures_total",
                                             {"reason": "refused"}) == 1


def test_a_member_that_refuses_then_accepts_converges_its_part_on_the_next_pass(
        tmp_path: Path) -> None:
    spec = Spec.from_yaml(PLAIN)
    sysctls = _Refusing("sysctls", ("sysctl",), _sysctl_then(spec, "0"))
    sysctls.refuse = "not yet"
    rest = MemoryBackend(capabilities=("route", "nat", "forward"))
    agent, _, _ = _agent(tmp_path, PLAIN, [rest, sysctls])
    assert agent.run_pass().status == "failed"
    sysctls.refuse = None
    result = agent.run_pass()
    assert result.status == "ok", result.message
    assert {c.kind for c in result.applied} == {"sysctl"}
    want = compile_for(BackendGroup([MemoryBackend(capabilities=("sysctl",))]), spec)
    assert plan(sysctls.observe(), want).empty


def test_a_member_refusing_in_its_apply_fails_the_whole_pass_as_before(
        tmp_path: Path) -> None:
    # Only a refusal before anything is read (expect) leaves the member's part out: one
    # in apply (nothing changed) fails the whole pass, nothing of the rest applied.
    sysctls = _Refusing("sysctls", ("sysctl",))
    sysctls.refuse_apply = True
    rest = MemoryBackend(capabilities=("route", "nat", "forward"))
    agent, metrics, _ = _agent(tmp_path, PLAIN, [rest, sysctls])
    result = agent.run_pass()
    assert result.status == "failed"
    assert "refused" not in result.message.split(":")[0], result.message
    assert rest.state == State()
    assert sysctls.state == State()
    assert metrics.registry.get_sample_value("k3snet_agent_sync_failures_total",
                                             {"reason": "refused"}) == 0


def test_a_refusal_beside_a_failed_apply_of_the_rest_is_said_after_it(
        tmp_path: Path) -> None:
    # The rest's apply failing (nothing changed), the pass failed `apply` with the
    # refusal unsaid: the spec's own fault, which the operator must fix, was hidden for as
    # long as the apply failed. It is said after the apply's failure, which the pass is
    # counted by (the more urgent: nothing of the rest converged).
    sysctls = _Refusing("sysctls", ("sysctl",))
    sysctls.refuse = "not here"
    rest = MemoryBackend(capabilities=("route", "nat", "forward"))
    rest.faults.fail_at(1)
    agent, metrics, _ = _agent(tmp_path, PLAIN, [rest, sysctls])
    result = agent.run_pass()
    assert result.status == "failed"
    assert result.message.startswith("apply: memory backend: "), result.message
    assert result.message.endswith("; also refused: sysctls backend refuses: not here; "
                                   "what sysctls manages is left as it is"), result.message
    assert rest.state == State()
    assert metrics.registry.get_sample_value("k3snet_agent_sync_failures_total",
                                             {"reason": "apply"}) == 1


class _Told(_Refusing):
    """A :class:`_Refusing` that tells a change (its state's identity), as the kernel's
    backends do: a pass finding every token where it was may skip its observe."""

    def change_token(self) -> int:
        return id(self.state)


def test_a_refusal_is_never_taken_as_in_sync_by_the_passes_after_it(tmp_path: Path) -> None:
    # "Nothing to do, the tokens unmoved" skips the next passes' observe and plan ("in
    # sync"): taken while a member refuses, a pass would be 'ok' with the refusal standing.
    sysctls = _Told("sysctls", ("sysctl",))
    sysctls.refuse = "not here"
    rest = _Told("rest", ("route", "nat", "forward"))
    agent, _, _ = _agent(tmp_path, PLAIN, [rest, sysctls])
    results = [agent.run_pass() for _ in range(4)]
    assert [r.status for r in results] == ["failed"] * 4, [r.message for r in results]
    assert all(r.message.startswith("refused: sysctls backend refuses") for r in results)
    assert results[0].applied
    assert not any(r.applied for r in results[1:])


def test_a_refusal_beside_held_routes_is_counted_and_backs_off_as_refused(
        tmp_path: Path) -> None:
    # Beside routes held (the node cannot route to a destination), the refusal was a note
    # of the held routes' failure: counted 'unreachable' alone (an alert on 'refused'
    # never fired), and the pass, taken for one that only held routes, never backed off.
    from tests.agent.test_held_routes import DOWN  # noqa: PLC0415 - its node facts
    from tests.agent.test_held_routes import SPEC as HELD  # noqa: PLC0415

    rest = MemoryBackend(capabilities=("route", "nat", "forward"))
    sysctls = _Refusing("sysctls", ("sysctl",))
    sysctls.refuse = "not here"

    def desired(spec: Spec, group: BackendGroup, *,
                hold: frozenset[int] = frozenset()) -> State:
        return compile_for(group, spec, DOWN, hold=hold)

    path = tmp_path / "spec.yaml"
    path.write_text(HELD)
    metrics = AgentMetrics()
    agent = Agent(FileSpecSource(path), lambda _: BackendGroup([rest, sysctls]), desired,
                  AgentOptions("node-1", interval=60.0, not_ready_for=0.0), metrics=metrics,
                  clock=FakeClock())
    results = [agent.run_pass() for _ in range(3)]
    assert all(r.status == "failed" for r in results)
    message = results[-1].message
    assert message.startswith("refused: sysctls backend refuses: not here"), message
    assert "also 1 destination(s) held" in message
    assert metrics.registry.get_sample_value("k3snet_agent_sync_failures_total",
                                             {"reason": "refused"}) == 3
    assert agent.repair_gap() > agent.options.watch_gap  # backing off, as a conflict does
    assert rest.state.owned  # the rest converged all the same
