"""The agent's loop on the memory backend: spec reloads, the last good spec, drift, clean-up."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import pytest

from k3snet.agent import (
    CLEANUP_MARGIN,
    NOT_READY_AFTER,
    NOT_READY_FOR,
    Agent,
    AgentMetrics,
    AgentOptions,
    FileSpecSource,
    configure_logging,
    split_cluster_wide,
)
from k3snet.agent._metrics import FAILURE_REASONS, SPEC_READ_ERROR_REASONS, SPEC_REFUSAL_REASONS
from k3snet.backends import ApplyResult
from k3snet.backends.group import BackendGroup, Member
from k3snet.backends.lock import namespace_lock
from k3snet.backends.memory import MemoryBackend
from k3snet.converge import compile_for, destroy
from k3snet.errors import ApplyError
from k3snet.model.state import State
from k3snet.planner import Plan, plan
from k3snet.spec import Spec
from tests.agent.clock import FakeClock

from .desired import COMPILED

SPEC = """\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
destinations:
  - cidr: 192.168.2.0/24
"""
SPEC_TWO = SPEC + "  - cidr: 172.20.0.0/16\n"
NODE_KINDS = ("route", "sysctl", "nat", "forward")


class Node:
    """An agent over one MemoryBackend holding the node's kinds, its spec in a file."""

    def __init__(self, tmp_path: Path, text: str = SPEC, *,
                 monotonic: Any = None, **options: object) -> None:
        self.path = tmp_path / "spec.yaml"
        self.path.write_text(text)
        self.memory = MemoryBackend(capabilities=NODE_KINDS)
        self.metrics = AgentMetrics()
        self.built: list[tuple[str, ...]] = []

        def make_backend(spec: Spec) -> BackendGroup:
            self.built.append(tuple(spec.backends))
            return BackendGroup([self.memory])

        self.agent = Agent(FileSpecSource(self.path), make_backend,
                           COMPILED,
                           AgentOptions("node-1", interval=0.01, **options),  # type: ignore[arg-type]
                           metrics=self.metrics,
                           **({} if monotonic is None else {"monotonic": monotonic}))

    def sample(self, name: str, **labels: str) -> float | None:
        value: float | None = self.metrics.registry.get_sample_value(name, labels or None)
        return value

    def owned(self) -> list[str]:
        return sorted(str(o) for o in self.memory.state.owned)


def test_first_pass_applies_and_makes_the_agent_ready(tmp_path: Path) -> None:
    node = Node(tmp_path)
    assert node.agent.readiness()[0] is False
    result = node.agent.run_pass()
    assert result.status == "ok"
    assert len(result.applied) == 3
    assert result.drift == 0
    assert node.agent.readiness()[0] is True
    assert node.agent.generation == 1
    again = node.agent.run_pass()
    assert (again.status, again.applied, again.message) == ("ok", (), "in sync: no changes")


def test_a_changed_spec_file_is_read_on_the_next_pass(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.agent.run_pass()
    before = node.owned()
    node.path.write_text(SPEC_TWO)
    result = node.agent.run_pass()
    assert result.status == "ok"
    assert result.drift == 0
    assert node.agent.generation == 2
    assert len(node.owned()) > len(before)
    assert any("172.20.0.0/16" in o for o in node.owned())
    assert node.sample("k3snet_agent_spec_generation") == 2


def test_invalid_spec_keeps_the_last_good_one(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.agent.run_pass()
    before = node.owned()
    node.path.write_text("destinations:\n  - cidr: 999.1.2.0/24\n")
    result = node.agent.run_pass()
    assert result.status == "spec-refused"
    assert "refused (invalid)" in result.message
    assert "keeping spec generation 1" in result.message
    assert node.owned() == before
    assert node.agent.generation == 1
    assert node.sample("k3snet_agent_spec_rejected_total", reason="invalid") == 1
    assert node.sample("k3snet_agent_spec_last_good_kept") == 1
    # Refused once, not re-parsed and re-counted every pass while the file stays the same.
    assert node.agent.run_pass().status == "spec-refused"
    assert node.sample("k3snet_agent_spec_rejected_total", reason="invalid") == 1
    # Drift is still repaired under the last good spec.
    node.memory.apply(Plan(changes=[c.inverse() for c in plan(State(), node.memory.state)
                                    .changes if c.kind == "nat"]))
    assert node.agent.run_pass().drift == 1
    node.path.write_text(SPEC_TWO)
    fixed = node.agent.run_pass()
    assert fixed.status == "ok"
    assert node.agent.generation == 2
    assert node.sample("k3snet_agent_spec_last_good_kept") == 0


def test_an_imported_ip_masq_agent_file_that_changes_is_read_on_the_next_pass(
        tmp_path: Path) -> None:
    # ip-masq-agent's ConfigMap, mounted, changes in place while the spec's text stays
    # the same: the agent kept the first file's CIDRs until the spec's text changed, and
    # a spec refused for a bad file stayed refused once the file was fixed.
    config = tmp_path / "ip-masq-agent"
    config.write_text("nonMasqueradeCIDRs: [10.0.0.0/8]\n")
    node = Node(tmp_path, "apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\nmasquerade:\n"
                          f"  ipMasqAgentConfig: {config}\n")

    def nat() -> list[str]:
        return [o for o in node.owned() if o.startswith("masquerade")]

    assert node.agent.run_pass().status == "ok"
    assert nat() == ["masquerade 10.42.0.0/16 -> any except 10.0.0.0/8,169.254.0.0/16"]
    first = node.agent.spec_sha256
    config.write_text("nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12]\n")
    assert node.agent.run_pass().status == "ok"
    assert nat() == [
        "masquerade 10.42.0.0/16 -> any except 10.0.0.0/8,169.254.0.0/16,172.16.0.0/12"]
    assert node.agent.generation == 2
    assert node.agent.spec_sha256 != first
    config.write_text("nonMasqueradeCIDRs: [nope]\n")
    refused = node.agent.run_pass()
    assert refused.status == "spec-refused"
    assert "'nope' is not a valid CIDR" in refused.message
    assert node.agent.generation == 2
    config.write_text("nonMasqueradeCIDRs: [192.168.0.0/16]\n")
    assert node.agent.run_pass().status == "ok"
    assert node.agent.generation == 3
    assert nat() == [
        "masquerade 10.42.0.0/16 -> any except 10.42.0.0/15,169.254.0.0/16,192.168.0.0/16"]
    # Unchanged text and file: nothing read again, nothing applied.
    assert node.agent.run_pass().applied == ()
    assert node.agent.generation == 3


def test_a_spec_deleting_everything_is_refused_and_the_rules_stay(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.agent.run_pass()
    before = node.owned()
    node.path.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\ndestinations: []\n")
    result = node.agent.run_pass()
    assert result.status == "spec-refused"
    assert "refused (teardown)" in result.message
    assert node.owned() == before
    assert node.sample("k3snet_agent_spec_rejected_total", reason="teardown") == 1


EMPTY = "apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\ndestinations: []\n"


def test_a_spec_refused_for_deleting_everything_is_in_force_after_k3snet_destroy(
        tmp_path: Path) -> None:
    # The refusal says "if that is what you want, run `k3snet destroy`". The refused
    # spec was never tried again: the next pass repaired the destroyed node with the
    # last good spec, and everything the operator had removed was back within a second.
    memory = WatchedMemory()
    agent, path = _memoized(tmp_path, memory)
    assert agent.run_pass().status == "ok"
    path.write_text(EMPTY)
    assert agent.run_pass().status == "spec-refused"
    assert agent.run_pass().status == "spec-refused"  # nothing moved: not tried again
    destroy(BackendGroup([memory]))  # what `k3snet destroy` does, from another process
    memory.generation += 1
    result = agent.run_pass()
    assert (result.status, result.applied) == ("ok", ())
    assert agent.generation == 2
    assert memory.state.owned == frozenset()


def test_a_spec_refused_for_deleting_everything_is_said_once_while_the_node_changes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # And not tried again (a compile and a plan) while the node still holds everything
    # it would delete: on a node kube-proxy changes every second, each pass made one.
    memory = WatchedMemory()
    agent, path = _memoized(tmp_path, memory)
    metrics = agent.metrics = AgentMetrics()
    tried: list[Spec] = []
    desired = agent._desired

    def trying(spec: Spec, group: BackendGroup) -> State:
        if not spec.destinations:
            tried.append(spec)
        return desired(spec, group)

    agent._desired = trying
    agent.run_pass()
    before = memory.state.owned
    path.write_text(EMPTY)
    with caplog.at_level(logging.INFO, logger="k3snet.agent"):
        for _ in range(3):
            memory.generation += 1  # kube-proxy committing: tried again, refused again
            result = agent.run_pass()
            assert result.status == "spec-refused"
            assert "refused (teardown)" in result.message
    assert agent.generation == 1
    assert len(tried) == 1
    assert [r.levelno for r in caplog.records if "refused" in r.getMessage()].count(
        logging.ERROR) == 1
    assert metrics.registry.get_sample_value("k3snet_agent_spec_rejected_total",
                                             {"reason": "teardown"}) == 1
    assert memory.state.owned == before


def test_an_unreadable_spec_keeps_the_last_good_one(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.agent.run_pass()
    node.path.unlink()
    result = node.agent.run_pass()
    assert result.status == "spec-refused"
    assert "refused (unreadable)" in result.message
    assert node.sample("k3snet_agent_spec_rejected_total", reason="unreadable") == 1


def test_no_valid_spec_at_start_fails_and_is_not_ready(tmp_path: Path) -> None:
    node = Node(tmp_path, "destinations: 3\n")
    result = node.agent.run_pass()
    assert result.status == "failed"
    assert node.agent.readiness()[0] is False
    assert node.sample("k3snet_agent_sync_failures_total", reason="spec") == 1
    assert node.owned() == []


def test_a_starting_agent_whose_node_part_fails_is_never_ready_however_brief(
        tmp_path: Path) -> None:
    # Readiness is lost only after 3 failures over 30 s, so a blip keeps a ready agent
    # ready; an agent that never converged its node is not ready meanwhile (its rules
    # were never installed), from its first failed pass on, and the gauge says so too.
    clock = FakeClock()
    node = Node(tmp_path, monotonic=clock)
    for _ in range(NOT_READY_AFTER + 1):
        clock.now += 1
        node.memory.faults.fail_at(0)
        assert node.agent.run_pass().status == "failed"
        assert node.agent.readiness() == (False, "not ready: no pass has succeeded yet")
        assert node.sample("k3snet_agent_ready") == 0
    clock.now += NOT_READY_FOR
    node.memory.faults.fail_at(0)
    assert node.agent.run_pass().status == "failed"
    ready, reason = node.agent.readiness()
    assert ready is False
    assert f"failed {NOT_READY_AFTER + 2} passes in a row" in reason
    assert node.agent.run_pass().status == "ok"
    assert node.agent.readiness()[0] is True
    assert node.sample("k3snet_agent_ready") == 1


def test_drift_is_repaired_and_counted(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.agent.run_pass()
    want = node.owned()
    forward = [c for c in plan(State(), node.memory.state).changes if c.kind == "forward"]
    node.memory.apply(Plan(changes=[c.inverse() for c in forward]))
    assert node.owned() != want
    result = node.agent.run_pass()
    assert result.drift == 1
    assert "repaired drift" in result.message
    assert node.owned() == want
    assert node.sample("k3snet_agent_drift_repairs_total") == 1
    assert node.sample("k3snet_agent_changes_total", kind="forward", action="add") == 2


def test_a_failing_backend_does_not_end_the_loop(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.memory.faults.fail_at(0)
    failed = node.agent.run_pass()
    assert failed.status == "failed"
    assert failed.message.startswith("apply:")
    assert node.sample("k3snet_agent_sync_failures_total", reason="apply") == 1
    assert node.agent.run_pass().status == "ok"


def test_readiness_is_lost_once_the_node_part_fails_three_passes_in_a_row_and_comes_back(
        tmp_path: Path) -> None:
    # /readyz said ready for ever once a pass had succeeded: an agent whose every pass
    # failed for days (its rules missing) stayed Ready, hidden from `kubectl get pods`
    # and from every "pod not ready" alert. A blip (one or two failures) keeps it ready.
    # (Failed passes counted here, not their time: not_ready_for=0, see the next test.)
    node = Node(tmp_path, not_ready_for=0.0)
    assert node.agent.run_pass().status == "ok"

    def fail_with_drift() -> str:
        state = node.memory.state
        node.memory._restore(state.with_owned(o for o in state.owned if o.kind != "nat"))
        node.memory.faults.fail_at(0)
        result = node.agent.run_pass()
        assert result.status == "failed"
        return result.message

    for _ in range(NOT_READY_AFTER - 1):
        fail_with_drift()
        assert node.agent.readiness()[0] is True
        assert node.sample("k3snet_agent_ready") == 1
    message = fail_with_drift()
    ready, reason = node.agent.readiness()
    assert ready is False
    assert f"failed {NOT_READY_AFTER} passes in a row" in reason
    assert message in reason
    assert node.sample("k3snet_agent_ready") == 0
    assert node.agent.run_pass().drift == 1  # repaired: ready again
    assert node.agent.readiness() == (True, "ready: spec generation 1 in force")
    assert node.sample("k3snet_agent_ready") == 1


def test_readiness_is_lost_only_once_the_node_part_has_failed_for_not_ready_for_seconds(
        tmp_path: Path) -> None:
    # A failed pass is tried again as soon as the watch sees a change (a second later on
    # a node where kube-proxy commits every second): 3 failures in a row took 3 s, so a
    # blip of a few seconds (a foreign rule in the way, an apply refused once) turned
    # every such agent not ready and back, each counting against the DaemonSet's
    # maxUnavailable. Not ready takes 3 failures in a row over 30 s (the kubelet's own
    # default: 3 probes 10 s apart); the liveness probe is not concerned (passes end).
    clock = FakeClock()
    node = Node(tmp_path, monotonic=clock)
    assert node.agent.run_pass().status == "ok"

    def fail() -> None:
        clock.now += 1
        node.memory.faults.fail_at(0)
        state = node.memory.state
        node.memory._restore(state.with_owned(o for o in state.owned if o.kind != "nat"))
        assert node.agent.run_pass().status == "failed"

    for _ in range(NOT_READY_AFTER + 3):
        fail()
        assert node.agent.readiness()[0] is True
        assert node.agent.health()[0] is True
    assert node.sample("k3snet_agent_ready") == 1
    clock.now += NOT_READY_FOR - (NOT_READY_AFTER + 3)  # the first failure began 1 s in
    fail()
    ready, reason = node.agent.readiness()
    assert ready is False
    assert f"failed {NOT_READY_AFTER + 4} passes in a row" in reason
    assert node.sample("k3snet_agent_ready") == 0
    assert node.agent.health()[0] is True  # passes end: alive, not restarted
    clock.now += 1
    assert node.agent.run_pass().status == "ok"
    assert node.agent.readiness()[0] is True
    # A new run of failures counts from its own first one.
    for _ in range(NOT_READY_AFTER):
        fail()
    assert node.agent.readiness()[0] is True
    # A stuck loop (no pass ends) still fails liveness, whatever readiness says.
    clock.now += node.agent.options.liveness_limit + 1
    assert node.agent.health()[0] is False


def test_the_time_failing_counts_from_the_start_of_the_first_failed_pass(
        tmp_path: Path) -> None:
    # Slow failing passes (the namespace lock held by another writer, an apply the
    # kernel takes long to refuse): 3 passes of 10 s back to back have been failing for
    # 30 s when the third ends, not for the 20 s since the first ended.
    clock = FakeClock()
    node = Node(tmp_path, monotonic=clock)
    assert node.agent.run_pass().status == "ok"
    apply = node.memory.apply

    def slow(plan: Any) -> Any:
        clock.now += NOT_READY_FOR / NOT_READY_AFTER
        return apply(plan)

    node.memory.apply = slow  # type: ignore[method-assign]
    for _ in range(NOT_READY_AFTER):
        node.memory.faults.fail_at(0)
        state = node.memory.state
        node.memory._restore(state.with_owned(o for o in state.owned if o.kind != "nat"))
        assert node.agent.run_pass().status == "failed"
    ready, reason = node.agent.readiness()
    assert ready is False
    assert f"failed {NOT_READY_AFTER} passes in a row, for {NOT_READY_FOR:.0f} s" in reason


@pytest.mark.parametrize("seconds", [float("nan"), -1.0, "30"])
def test_not_ready_for_refuses_what_would_silently_keep_or_drop_readiness(
        seconds: object) -> None:
    # NaN compares false with every duration: an agent whose node's part failed for
    # days stayed ready; a negative one is 0 in disguise; a string failed at the first
    # failed pass, in the loop, instead of where the options were made.
    with pytest.raises((ValueError, TypeError), match="not_ready_for"):
        AgentOptions("node-1", not_ready_for=seconds)  # type: ignore[arg-type]


def test_not_ready_for_takes_zero_and_infinity() -> None:
    assert AgentOptions("node-1", not_ready_for=0).not_ready_for == 0
    assert AgentOptions("node-1", not_ready_for=float("inf")).not_ready_for == float("inf")


def test_readiness_stays_while_a_refused_spec_waits(tmp_path: Path) -> None:
    # The node's rules are those of the last good spec: converged, so ready.
    node = Node(tmp_path)
    node.agent.run_pass()
    node.path.write_text("destinations:\n  - cidr: 999.1.2.0/24\n")
    for _ in range(NOT_READY_AFTER + 1):
        assert node.agent.run_pass().status == "spec-refused"
    assert node.agent.readiness()[0] is True


def test_run_stops_on_request_and_the_rules_stay(tmp_path: Path) -> None:
    node = Node(tmp_path)
    timer = threading.Timer(0.3, node.agent.stop)
    timer.start()
    assert node.agent.run() == 0
    timer.join()
    assert node.agent.passes >= 1
    assert len(node.owned()) == 3


def test_cleanup_on_exit_removes_what_k3snet_owns(tmp_path: Path) -> None:
    node = Node(tmp_path, cleanup_on_exit=True)
    node.agent.run_pass()
    assert node.owned()
    node.agent.shutdown()
    assert node.owned() == []


def test_a_failed_cleanup_on_exit_exits_1_and_is_not_said_done(tmp_path: Path) -> None:
    # The clean-up's failure was logged, but run() returned 0 and `k3snet agent` said
    # "removed what k3snet owned on this node": an uninstall hook took the rules for gone.
    node = Node(tmp_path, cleanup_on_exit=True)
    node.agent.run_pass()
    before = node.owned()
    node.memory.faults.fail_at(0)
    node.agent.stop()  # SIGTERM: the loop ends at once, then the clean-up runs
    assert node.agent.run() == 1
    assert node.agent.cleaned_up is False
    assert node.owned() == before
    (tmp_path / "ok").mkdir()
    done = Node(tmp_path / "ok", cleanup_on_exit=True)
    done.agent.run_pass()
    done.agent.stop()
    assert done.agent.run() == 0
    assert done.agent.cleaned_up is True
    assert done.owned() == []


def test_once_exit_status(tmp_path: Path) -> None:
    assert Node(tmp_path).agent.run(once=True) == 0
    bad = tmp_path / "bad"
    bad.mkdir()
    assert Node(bad, "destinations: 3\n").agent.run(once=True) == 1


def test_backends_are_rebuilt_only_when_the_spec_names_others(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.agent.run_pass()
    node.path.write_text(SPEC_TWO)
    node.agent.run_pass()
    assert node.built == [()]
    node.path.write_text(SPEC_TWO + "backends: [memory]\n")
    node.agent.run_pass()
    assert node.built == [(), ("memory",)]
    # Same names, other options (backends: mapping form): rebuilt too.
    node.path.write_text(SPEC_TWO + "backends:\n  memory: {capabilities: [route]}\n")
    node.agent.run_pass()
    assert node.built == [(), ("memory",), ("memory",)]


def test_health_fails_when_no_pass_finished_for_too_long(tmp_path: Path) -> None:
    now = [100.0]
    node = Node(tmp_path, stale_after=60.0)
    node.agent._monotonic = lambda: now[0]
    node.agent.run_pass()
    assert node.agent.health()[0] is True
    now[0] += 61
    ok, reason = node.agent.health()
    assert not ok
    assert "stuck" in reason


def test_split_puts_cluster_wide_kinds_apart() -> None:
    memory = MemoryBackend()
    node, cluster = split_cluster_wide(BackendGroup([memory]))
    assert node is not None
    assert cluster is not None
    assert cluster.capabilities == {"ippool", "cilium"}
    assert not node.capabilities & {"ippool", "cilium"}
    only_node, none = split_cluster_wide(BackendGroup([Member(memory, NODE_KINDS)]))
    assert none is None
    assert only_node is not None


def test_log_lines_carry_time_and_node(tmp_path: Path) -> None:
    stream = io.StringIO()
    configure_logging("node-7", "json", stream=stream)
    try:
        Node(tmp_path).agent.run_pass()
    finally:
        configure_logging("node-7", "text", stream=io.StringIO())
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert entries
    assert {e["node"] for e in entries} == {"node-7"}
    assert all(e["time"].endswith("Z") for e in entries)
    last = entries[-1]
    assert (last["status"], last["changes"], last["level"]) == ("ok", 3, "info")


def test_text_log_format(tmp_path: Path) -> None:
    stream = io.StringIO()
    logger = configure_logging("node-8", "text", stream=stream)
    logger.warning("hello", extra={"k": 1})
    line = stream.getvalue().strip()
    assert line.endswith("WARNING node=node-8 hello (k=1)")
    assert line[:4].isdigit()
    with pytest.raises(ValueError, match="log format"):
        configure_logging("x", "xml")  # type: ignore[arg-type]
    logging.getLogger("k3snet.agent").handlers.clear()


def test_a_text_log_record_is_one_line_whatever_its_message_holds() -> None:
    # An API server's (or an admission webhook's) error message is logged as it came:
    # a newline in it began a line of its own, which could pass for another record
    # ("... ERROR node=node-9 ..." forged by whoever wrote the message).
    stream = io.StringIO()
    logger = configure_logging("node-9", "text", stream=stream)
    try:
        logger.warning("leader election: %s",
                       "denied\n2026-01-01T00:00:00.000Z ERROR node=other forged\r",
                       extra={"reason": "a\nb"})
    finally:
        configure_logging("node-9", "text", stream=io.StringIO())
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert "denied\\n2026-01-01T00:00:00.000Z ERROR node=other forged\\r" in lines[0]
    assert lines[0].endswith("(reason=a\\nb)")


def test_a_bug_s_traceback_in_a_text_log_begins_no_line_at_the_margin() -> None:
    # A traceback spans lines (only a bug's does); the exception's message, raw in it,
    # began a line that could pass for another record.
    stream = io.StringIO()
    logger = configure_logging("node-9", "text", stream=stream)
    try:
        try:
            raise ValueError("x\n2026-01-01T00:00:00.000Z ERROR node=other forged")
        except ValueError as exc:
            logger.error("pass failed with an unexpected error", exc_info=exc)
    finally:
        configure_logging("node-9", "text", stream=io.StringIO())
    first, *rest = stream.getvalue().splitlines()
    assert first.endswith("ERROR node=node-9 pass failed with an unexpected error")
    assert rest
    assert [line for line in rest if not line.startswith("    ")] == []
    assert "    2026-01-01T00:00:00.000Z ERROR node=other forged" in rest


def test_the_library_s_warnings_are_agent_log_lines_too() -> None:
    # A backend's warning (nftables' foreign state read in part, a lock wait) came out
    # in the CLI's format: no node, another time format, and in text a line break in
    # it began a line of its own. Its info lines stay out (each pass says what it did).
    stream = io.StringIO()
    configure_logging("node-6", "json", stream=stream)
    try:
        backend = logging.getLogger("k3snet.backends.nftables.backend")
        backend.warning("nftables: other tables were not read whole")
        logging.getLogger("k3snet.converge").info("nftables: applying 3 change(s)")
        (entry,) = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert (entry["node"], entry["level"], entry["logger"]) == (
            "node-6", "warning", "k3snet.backends.nftables.backend")
        assert entry["time"].endswith("Z")
        text = io.StringIO()
        configure_logging("node-6", "text", stream=text)
        backend.warning("iptables: chain X\n2026-01-01T00:00:00.000Z ERROR node=other forged")
        (line,) = text.getvalue().splitlines()
        assert " WARNING node=node-6 iptables: chain X\\n2026" in line
        configure_logging("node-6", "text", "DEBUG", stream=text)
        logging.getLogger("k3snet.converge").info("nftables: applying 3 change(s)")
        assert text.getvalue().splitlines()[-1].endswith("applying 3 change(s)")
    finally:
        configure_logging("node-6", "text", stream=io.StringIO())


class WatchedMemory(MemoryBackend):
    """A MemoryBackend whose change token moves with every apply (the kernel's generation)."""

    def __init__(self) -> None:
        super().__init__(capabilities=NODE_KINDS)
        self.generation = 0

    def change_token(self) -> int:
        return self.generation

    def apply(self, p: Plan) -> ApplyResult:
        # Moved once the change is there, as the kernel's generation is after a commit:
        # moved first, a watch looking meanwhile started a pass that saw no change yet
        # and then took the moved token for the quiet state (the drift stayed).
        result = super().apply(p)
        self.generation += 1
        return result


class LookingAgent(Agent):
    """An agent that records each look of its watch between passes: (the pass count
    then, whether it saw a change)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.looks: list[tuple[int, bool]] = []

    def changes_seen(self, token: tuple[Hashable | None, ...] | None
                     ) -> tuple[bool, tuple[Hashable | None, ...] | None]:
        seen = super().changes_seen(token)
        if token is not None:  # a look of the waiting loop, not its first reading
            self.looks.append((self.passes, seen[0]))
        return seen

    def quiet(self, looks: int = 30, timeout: float = 10.0) -> int:
        """The pass count once the watch, from now on, has looked ``looks`` times in a
        row at the same count and seen no change: the loop is idle, waiting for a
        change (no sleep decides it, so a loaded machine only makes it take longer)."""
        start = len(self.looks)
        wait = threading.Event()
        for _ in range(int(timeout / 0.01)):
            recent = self.looks[start:][-looks:]
            if (len(recent) == looks and len({count for count, _ in recent}) == 1
                    and not any(moved for _, moved in recent)):
                return recent[0][0]
            wait.wait(0.01)
        raise AssertionError(f"the loop did not settle: looks {self.looks[start:][-looks:]}")


def _watched(tmp_path: Path, **options: object) -> tuple[LookingAgent, WatchedMemory]:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    memory = WatchedMemory()
    agent = LookingAgent(FileSpecSource(path), lambda spec: BackendGroup([memory]),
                         COMPILED,
                         AgentOptions("node-1", interval=3600, **options))  # type: ignore[arg-type]
    return agent, memory


def test_a_change_on_the_node_starts_a_pass_before_the_interval(tmp_path: Path) -> None:
    agent, memory = _watched(tmp_path, watch=0.01, watch_gap=0.0)
    runner = threading.Thread(target=agent.run)
    runner.start()
    try:
        # Each pass that applied is followed by one that confirms it (its own apply
        # moved the token); then the loop is quiet until the next change.
        assert agent.quiet() == 2  # the first pass applied, the second confirmed
        assert memory.state.owned
        want = sorted(map(str, memory.state.owned))
        forward = [c for c in plan(State(), memory.state).changes if c.kind == "forward"]
        memory.apply(Plan(changes=[c.inverse() for c in forward]))  # drift: token moves
        wait = threading.Event()
        for _ in range(1000):  # at most 10 s, against an interval of an hour
            if sorted(map(str, memory.state.owned)) == want:
                break
            wait.wait(0.01)
        assert sorted(map(str, memory.state.owned)) == want
        assert agent.quiet() == 4  # the third pass repaired, the fourth confirmed
    finally:
        agent.stop()
        runner.join()


class MovedWhileObserved(WatchedMemory):
    """A node where someone removes a rule right after a pass's observe read it."""

    def __init__(self) -> None:
        super().__init__()
        self.strike: list[Plan] = []

    def observe(self) -> State:
        seen = super().observe()
        while self.strike:  # after the read: the pass never sees this change
            super().apply(self.strike.pop())
        return seen


def test_a_change_made_while_a_pass_runs_starts_the_next_pass(tmp_path: Path) -> None:
    # The baseline of the watch used to be read after the pass: a rule removed after the
    # pass observed was in it, and waited for the interval (an hour here).
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    memory = MovedWhileObserved()
    agent = Agent(FileSpecSource(path), lambda spec: BackendGroup([memory]),
                  COMPILED,
                  AgentOptions("node-1", interval=3600, watch=0.01, watch_gap=0.0))
    runner = threading.Thread(target=agent.run)
    runner.start()
    try:
        wait = threading.Event()
        while agent.passes < 1 or not memory.state.owned:
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


def test_a_change_made_while_the_first_pass_runs_starts_the_next_pass(tmp_path: Path) -> None:
    # A fresh agent has no group before its first pass, so the watch's baseline used to
    # be read after that pass: a rule removed after it observed was in the baseline,
    # and waited for the interval (an hour here). The pass's own reading (before its
    # observe) is the baseline now.
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    memory = MovedWhileObserved()

    def started() -> Agent:
        return Agent(FileSpecSource(path), lambda spec: BackendGroup([memory]),
                     COMPILED,
                     AgentOptions("node-1", interval=3600, watch=0.01, watch_gap=0.0))

    assert started().run_pass().applied  # an earlier agent left the node converged
    want = sorted(map(str, memory.state.owned))
    nat = [c.inverse() for c in plan(State(), memory.state).changes if c.kind == "nat"]
    memory.strike.append(Plan(changes=nat))  # removed right after the first observe
    agent = started()
    runner = threading.Thread(target=agent.run)
    runner.start()
    try:
        wait = threading.Event()
        for _ in range(1000):  # at most 10 s, against an interval of an hour
            if agent.passes >= 2 and sorted(map(str, memory.state.owned)) == want:
                break
            wait.wait(0.01)
        assert not memory.strike
        assert sorted(map(str, memory.state.owned)) == want
    finally:
        agent.stop()
        runner.join()


def test_no_change_no_pass_and_no_token_no_watch(tmp_path: Path) -> None:
    agent, memory = _watched(tmp_path, watch=0.01, watch_gap=0.0)
    agent.run_pass()
    moved, token = agent.changes_seen(None)
    assert (moved, token) == (False, (memory.generation,))
    assert agent.changes_seen(token) == (False, token)
    memory.generation += 1
    assert agent.changes_seen(token) == (True, (memory.generation,))
    plain = Node(tmp_path)  # a MemoryBackend cannot tell: nothing to watch
    plain.agent.run_pass()
    assert plain.agent.changes_seen(None) == (False, None)


class CountingMemory(WatchedMemory):
    """A WatchedMemory that counts its observes."""

    def __init__(self) -> None:
        super().__init__()
        self.observes = 0

    def observe(self) -> State:
        self.observes += 1
        return super().observe()


def _memoized(tmp_path: Path, memory: WatchedMemory) -> tuple[Agent, Path]:
    """An agent over ``memory`` whose desired state is the same object for the same spec
    (the CLI's memo), with an interval of an hour; and its spec file."""
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    compiled: dict[int, State] = {}

    def desired(spec: Spec, group: BackendGroup) -> State:
        return compiled.setdefault(id(spec), compile_for(group, spec))

    agent = Agent(FileSpecSource(path), lambda spec: BackendGroup([memory]), desired,
                  AgentOptions("node-1", interval=3600))
    return agent, path


def test_a_pass_with_nothing_moved_observes_nothing(tmp_path: Path) -> None:
    memory = CountingMemory()
    agent, path = _memoized(tmp_path, memory)
    assert len(agent.run_pass().applied) == 3
    assert agent.run_pass().applied == ()  # observed: nothing to do, tokens kept
    seen = memory.observes
    result = agent.run_pass()
    assert (result.status, result.applied) == ("ok", ())
    assert memory.observes == seen  # nothing moved: no observe, no plan
    forward = [c for c in plan(State(), memory.state).changes if c.kind == "forward"]
    memory.apply(Plan(changes=[c.inverse() for c in forward]))  # drift moves the token
    repaired = agent.run_pass()
    assert memory.observes > seen
    assert repaired.drift == 1
    path.write_text(SPEC_TWO)  # a new spec is a new desired state: observed again
    seen = memory.observes
    assert agent.run_pass().applied
    assert memory.observes > seen


def test_a_change_after_a_quiet_pass_observed_is_found_by_the_next_pass(tmp_path: Path) -> None:
    # A pass that finds nothing to do records the tokens as "in sync". Read after its
    # observe, they took in a change made meanwhile, and every later pass skipped
    # observing: the rule stayed missing until something else moved a token.
    memory = MovedWhileObserved()
    agent, _ = _memoized(tmp_path, memory)
    assert len(agent.run_pass().applied) == 3
    assert agent.run_pass().applied == ()
    want = sorted(map(str, memory.state.owned))
    nat = [c.inverse() for c in plan(State(), memory.state).changes if c.kind == "nat"]
    memory.strike.append(Plan(changes=nat))  # removed right after the next observe
    memory.generation += 1  # something moved: the next pass observes (and finds it whole)
    assert agent.run_pass().applied == ()
    assert not memory.strike
    assert sorted(map(str, memory.state.owned)) != want
    repaired = agent.run_pass()
    assert repaired.drift == 1
    assert sorted(map(str, memory.state.owned)) == want


def test_every_failure_and_refusal_reason_is_exported_at_zero_before_the_first_one(
        tmp_path: Path) -> None:
    # A counter's series appeared with its first failure, at 1: with no earlier sample,
    # `increase(k3snet_agent_cluster_sync_failures_total[10m]) > 0` (the alert the docs
    # give) and rate() saw no increase, and missed that failure.
    node = Node(tmp_path)
    assert node.agent.run_pass().status == "ok"
    for reason in FAILURE_REASONS:
        assert node.sample("k3snet_agent_sync_failures_total", reason=reason) == 0
        assert node.sample("k3snet_agent_cluster_sync_failures_total", reason=reason) == 0
    for reason in SPEC_REFUSAL_REASONS:
        assert node.sample("k3snet_agent_spec_rejected_total", reason=reason) == 0
    for reason in SPEC_READ_ERROR_REASONS:
        assert node.sample("k3snet_agent_spec_read_errors_total", reason=reason) == 0


def test_every_failure_reason_the_agent_counts_is_documented() -> None:
    # docs/agent.md's metrics table listed the sync_failures_total reasons without
    # "error" (a k3snet error of no more specific kind): an alert or a dashboard built
    # on the list missed those failures.
    from k3snet.agent._loop import (  # noqa: PLC0415 - the labels
        _HeldRoutesError,
        _reason,
        _RefusedMembersError,
    )
    from k3snet.errors import (  # noqa: PLC0415
        ApplyError,
        BackendError,
        CheckError,
        ConflictError,
        K3snetError,
        ModelError,
        PlanError,
        SpecError,
        TeardownError,
    )
    from k3snet.kube import KubeApiError  # noqa: PLC0415

    failures: list[BaseException] = [
        ConflictError("x"), TeardownError("x"), SpecError([]), CheckError("x"),
        ApplyError("x"), KubeApiError("x", status=500), BackendError("x"), ModelError("x"),
        K3snetError("x"), RuntimeError("x"),
        _HeldRoutesError(SpecError([]), frozenset(), Spec(), (), None),
        _RefusedMembersError([(BackendGroup([MemoryBackend()]).members[0], PlanError("x"))],
                             (), None)]
    reasons = {_reason(failure) for failure in failures}
    assert reasons == set(FAILURE_REASONS)  # each one's series is there from the start
    docs = (Path(__file__).resolve().parents[2] / "docs" / "agent.md").read_text()
    (row,) = [line for line in docs.splitlines()
              if line.startswith("| `k3snet_agent_sync_failures_total{reason}`")]
    assert reasons <= set(re.findall(r"`([a-z]+)`", row))


def test_every_spec_read_error_reason_is_given_and_documented() -> None:
    from k3snet.agent._metrics import spec_read_error_reason  # noqa: PLC0415 - the labels
    from k3snet.errors import K3snetError  # noqa: PLC0415
    from k3snet.kube import KubeApiError  # noqa: PLC0415

    errors = [KubeApiError("x", reason="Timeout"), KubeApiError("x"),
              KubeApiError("x", status=503), KubeApiError("x", status=429),
              KubeApiError("x", status=403), KubeApiError("x", status=410), K3snetError("x")]
    reasons = [spec_read_error_reason(error) for error in errors]
    assert reasons == ["timeout", "unreachable", "server", "throttled", "denied", "other",
                       "other"]
    assert set(reasons) == set(SPEC_READ_ERROR_REASONS)
    docs = (Path(__file__).resolve().parents[2] / "docs" / "agent.md").read_text()
    (row,) = [line for line in docs.splitlines()
              if line.startswith("| `k3snet_agent_spec_read_errors_total{reason}`")]
    assert set(reasons) <= set(re.findall(r"`([a-z]+)`", row))


class HangingReporter:
    """A node report whose API server never answers: each write waits for ``release``."""

    timeout = 0.5

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def report(self, result: object) -> None:
        self.calls += 1
        self.release.wait()

    def finish_by(self, deadline: object) -> None:
        """(NodeReporter's: the deadline of the last report)"""


def test_drift_is_repaired_while_the_node_report_hangs(tmp_path: Path) -> None:
    # The report (a Node patch, an Event) was written by the loop itself: an API server
    # that does not answer held every pass for the request timeout (10 s), each pass
    # trying the failed patch again, and drift waited that long for its repair.
    memory = WatchedMemory()
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    reporter = HangingReporter()
    agent = Agent(FileSpecSource(path), lambda spec: BackendGroup([memory]),
                  COMPILED,
                  AgentOptions("node-1", interval=3600, watch=0.01, watch_gap=0.01),
                  reporter=reporter)  # type: ignore[arg-type]
    loop = threading.Thread(target=agent.run)
    loop.start()
    try:
        deadline = threading.Event()  # bounds a hung agent only: never an assertion on time
        for _ in range(3000):
            if reporter.calls and any(o.kind == "nat" for o in memory.state.owned):
                break
            deadline.wait(0.01)
        assert reporter.calls == 1  # the first pass's report, hanging
        state = memory.state
        memory._restore(state.with_owned(o for o in state.owned if o.kind != "nat"))
        memory.generation += 1
        for _ in range(3000):
            if any(o.kind == "nat" for o in memory.state.owned):
                break
            deadline.wait(0.01)
        assert any(o.kind == "nat" for o in memory.state.owned)
    finally:
        agent.stop()
        reporter.release.set()
        loop.join(timeout=60)
    assert not loop.is_alive()


class ApiSource:
    """A spec read through the API (as ConfigMapSpecSource): each read is a request."""

    remote = True
    where = "ConfigMap kube-system/k3snet-spec key spec.yaml"

    def __init__(self, text: str) -> None:
        self.text = text
        self.reads = 0

    def read(self) -> str:
        self.reads += 1
        return self.text


def _api_agent(memory: WatchedMemory, source: ApiSource, **options: Any) -> Agent:
    return Agent(source, lambda spec: BackendGroup([memory]),
                 COMPILED,
                 AgentOptions("node-1", **options))


def test_passes_a_change_on_the_node_starts_read_no_spec_through_the_api() -> None:
    # Every pass read the spec: with --spec-configmap, a node whose tokens move every
    # second (kube-proxy committing) made a GET a second, every node of the cluster.
    memory, source = WatchedMemory(), ApiSource(SPEC)
    agent = _api_agent(memory, source, interval=3600, watch=0.01, watch_gap=0.01)
    loop = threading.Thread(target=agent.run)
    loop.start()
    try:
        pause = threading.Event()  # bounds a hung agent only
        for _ in range(3000):
            if agent.passes >= 1 and memory.state.owned:
                break
            pause.wait(0.01)
        for churned in range(5):
            passes = agent.passes
            memory.generation += 1  # another program committing
            for _ in range(3000):
                if agent.passes > passes:
                    break
                pause.wait(0.01)
            assert agent.passes > passes, f"change {churned} started no pass"
    finally:
        agent.stop()
        loop.join(timeout=60)
    assert agent.passes >= 6
    assert source.reads == 1


def test_a_pass_a_change_starts_reads_the_spec_once_the_last_read_is_an_interval_old() -> None:
    # Changes every second would otherwise keep the interval's pass, which reads the
    # spec, from ever coming: a new spec in the ConfigMap was never read.
    now = [1000.0]
    memory, source = WatchedMemory(), ApiSource(SPEC)
    agent = _api_agent(memory, source, interval=30)
    agent._monotonic = lambda: now[0]
    agent.run_pass()
    agent._by_change = True
    source.text = SPEC_TWO
    now[0] += 29
    assert agent.run_pass().status == "ok"
    assert (source.reads, agent.generation) == (1, 1)
    now[0] += 2
    assert agent.run_pass().status == "ok"
    assert (source.reads, agent.generation) == (2, 2)
    source.text = SPEC
    agent._by_change = False  # the interval's pass reads it
    agent.run_pass()
    assert (source.reads, agent.generation) == (3, 3)


def test_a_refused_teardown_goes_in_force_after_k3snet_destroy_without_a_spec_read() -> None:
    memory, source = WatchedMemory(), ApiSource(SPEC)
    agent = _api_agent(memory, source, interval=3600)
    agent.run_pass()
    source.text = EMPTY
    assert agent.run_pass().status == "spec-refused"
    destroy(BackendGroup([memory]))
    memory.generation += 1
    agent._by_change = True  # the pass the destroy's change starts
    result = agent.run_pass()
    assert (result.status, agent.generation, source.reads) == ("ok", 2, 2)
    assert memory.state.owned == frozenset()


class LockedMemory(WatchedMemory):
    """A memory backend acting in this process's network namespace: converge takes its
    namespace lock (the memory backend alone takes none)."""

    netns = None


def _locked_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  **options: Any) -> tuple[LockedMemory, Agent]:
    """An agent over a LockedMemory, its spec in a file, its locks under ``tmp_path``."""
    monkeypatch.setenv("K3SNET_LOCK_DIR", str(tmp_path / "locks"))
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    memory = LockedMemory()
    agent = Agent(FileSpecSource(path), lambda spec: BackendGroup([memory]),
                  COMPILED,
                  AgentOptions("node-1", interval=3600, **options))
    return memory, agent


def test_sigterm_ends_a_wait_for_the_namespace_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # Another k3snet process holds the node's lock (an apply by hand): the agent waited
    # up to a minute for it, SIGTERM or not, past the pod's 30 s grace period: killed,
    # it never released its Lease nor wrote its last report.
    memory, agent = _locked_agent(tmp_path, monkeypatch)
    results: list[str] = []
    loop = threading.Thread(target=lambda: results.append(str(agent.run())))
    with namespace_lock([None]), caplog.at_level(logging.WARNING):
        loop.start()
        pause = threading.Event()  # bounds a hung test only
        for _ in range(3000):
            if any("waiting up to" in r.getMessage() for r in caplog.records):
                break
            pause.wait(0.01)
        agent.stop()  # what SIGTERM does
        loop.join(timeout=120)
        held_throughout = not loop.is_alive()
    assert held_throughout
    assert results == ["0"]
    assert any("stopped while waiting for another k3snet process" in r.getMessage()
               for r in caplog.records)
    assert memory.state.owned == frozenset()  # nothing was changed


def test_cleanup_on_exit_waits_for_the_lock_only_within_the_grace_period(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # --cleanup-on-exit after SIGTERM, another k3snet process holding the node's lock:
    # the clean-up waited the full minute for it, so the kubelet killed the agent 30 s
    # after SIGTERM, whatever the removal had reached. It now waits what is left of the
    # grace period, less the removal's own share, and says it did not clean up.
    memory, agent = _locked_agent(tmp_path, monkeypatch, cleanup_on_exit=True)
    assert agent.run_pass().status == "ok"
    owned = memory.state.owned
    assert owned
    now = [1000.0]
    agent._monotonic = lambda: now[0]
    agent.stop()  # SIGTERM at 1000 s
    # the pass and the Lease took the rest
    now[0] += agent.options.termination_grace - CLEANUP_MARGIN - 0.2
    done = threading.Thread(target=agent.shutdown)
    with namespace_lock([None]), caplog.at_level(logging.WARNING):
        done.start()
        done.join(timeout=30)
        ended_within_the_grace_period = not done.is_alive()
    done.join()
    assert ended_within_the_grace_period
    assert any(f"waiting up to {0.2:g} s" in r.getMessage() for r in caplog.records)
    assert agent.cleaned_up is False
    assert memory.state.owned == owned  # nothing removed, and said so


class CountedPools(MemoryBackend):
    """The cluster-wide objects (Calico's IPPools): each observe is a LIST of them."""

    def __init__(self) -> None:
        super().__init__(capabilities=("ippool",))
        self.lists = 0

    def observe(self) -> State:
        self.lists += 1
        return super().observe()


def test_passes_a_change_on_the_node_starts_list_no_cluster_wide_objects() -> None:
    # The leader's node, kube-proxy committing every second: each pass the change
    # started listed every IPPool (a quorum read), once a second, for nothing.
    now = [1000.0]
    memory, pools, source = WatchedMemory(), CountedPools(), ApiSource(SPEC)
    agent = Agent(source, lambda spec: BackendGroup([memory, pools]),
                  COMPILED,
                  AgentOptions("node-1", interval=30))
    agent._monotonic = lambda: now[0]
    assert agent.run_pass().leader is True
    assert pools.lists == 1
    agent._by_change = True
    for _ in range(3):
        now[0] += 1
        memory.generation += 1
        assert agent.run_pass().status == "ok"
    assert pools.lists == 1
    now[0] += 30  # an interval since the last list: listed again, change or not
    agent.run_pass()
    assert pools.lists == 2
    agent._by_change = False  # the interval's pass lists them
    agent.run_pass()
    assert pools.lists == 3


def test_the_spec_s_warnings_are_said_once_for_each_spec_in_force(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    node = Node(tmp_path)
    asked: list[Spec] = []

    def warnings(spec: Spec, group: BackendGroup) -> list[str]:
        asked.append(spec)
        return [f"{len(spec.destinations)} destination(s) in no plan"]

    node.agent._spec_warnings = warnings
    with caplog.at_level(logging.WARNING, logger="k3snet.agent"):
        for _ in range(3):
            assert node.agent.run_pass().status == "ok"
        node.path.write_text(SPEC_TWO)
        for _ in range(2):
            assert node.agent.run_pass().status == "ok"
    said = [r.getMessage() for r in caplog.records if "in no plan" in r.getMessage()]
    assert said == ["spec generation 1: 1 destination(s) in no plan",
                    "spec generation 2: 2 destination(s) in no plan"]
    assert len(asked) == 2


class FailingClose(MemoryBackend):
    """A memory backend whose close() raises (a custom backend's socket already gone)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.closes = 0

    def close(self) -> None:
        self.closes += 1
        raise OSError(9, "Bad file descriptor")


def test_a_backend_failing_to_close_keeps_no_new_spec_out_of_force_nor_leaks_groups(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    built: list[FailingClose] = []

    def make_backend(spec: Spec) -> BackendGroup:
        backend = FailingClose(capabilities=NODE_KINDS)
        built.append(backend)
        return BackendGroup([backend])

    metrics = AgentMetrics()
    def desired(spec: Spec, group: BackendGroup, /, *,
                hold: frozenset[int] = frozenset()) -> State:
        return compile_for(group, spec, hold=hold)

    agent = Agent(FileSpecSource(path), make_backend, desired,
                  AgentOptions("node-1", interval=0.01), metrics=metrics)
    assert agent.run_pass().status == "ok"
    path.write_text(SPEC_TWO + "backends: [memory]\n")  # other backends: a new group
    result = agent.run_pass()
    # The new spec went in force although the old group's close failed (said, not a bug).
    assert result.status == "ok", result.message
    assert agent.generation == 2
    assert agent.run_pass().status == "ok"
    assert len(built) == 2  # no group built again on every pass
    assert built[0].closes == 1
    assert metrics.registry.get_sample_value("k3snet_agent_sync_failures_total",
                                             {"reason": "internal"}) == 0
    assert "cannot close" in caplog.text
    # Nor does a failing close at shutdown escape the loop.
    agent.stop()
    assert agent.run() == 0


class RecordedWaits:
    """An Event stand-in that records how long each wait lasted, on a clock of its own
    that each wait moves on (none waits for real)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.waits.append(timeout)
        self.now += timeout
        return False

    def is_set(self) -> bool:
        return False

    def set(self) -> None:
        pass

    def clear(self) -> None:
        pass


@pytest.mark.parametrize("watch", [None, 0.25])
def test_each_wait_for_the_interval_is_shortened_at_random_by_at_most_a_tenth(
        tmp_path: Path, watch: float | None) -> None:
    # Agents whose passes ended at one instant (their spec reads answered together by an
    # API server coming back) read the spec together every interval after: 5 000
    # requests in one burst. Each draw shortens the wait; none lengthens it.
    from k3snet.agent import INTERVAL_JITTER  # noqa: PLC0415

    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    memory = WatchedMemory()  # a change token: with watch, the wait is the watch's looks
    waits = RecordedWaits()
    agent = Agent(FileSpecSource(path),
                  lambda spec: BackendGroup([memory]),
                  COMPILED,
                  AgentOptions("node-1", interval=30.0, watch=watch),
                  monotonic=lambda: waits.now)
    assert agent.run_pass().status == "ok"
    agent._wake = waits  # type: ignore[assignment]
    lengths = []
    for draw in (0.0, 0.5, 1.0):
        agent._random = lambda draw=draw: draw  # type: ignore[misc]
        waits.waits.clear()
        agent._wait_after(waits.now)
        if watch is not None:
            assert len(waits.waits) > 1  # the watch looked between
        lengths.append(sum(waits.waits))
    assert lengths == pytest.approx([30.0, 30.0 * (1 - INTERVAL_JITTER / 2),
                                     30.0 * (1 - INTERVAL_JITTER)])
    assert INTERVAL_JITTER == 0.1


class FailingPools(CountedPools):
    """IPPools the API server fails to list (503) while ``failing``, each try counted."""

    failing = True

    def observe(self) -> State:
        if not self.failing:
            return super().observe()
        self.lists += 1
        raise ApplyError("the API server answered 503")


def test_a_new_leader_whose_cluster_wide_part_fails_lists_nothing_more_on_change_passes(
        ) -> None:
    # A Lease holder with no good pass yet (its first IPPool list answered 503) listed
    # them again on every pass a change on the node started: once a second on a node
    # kube-proxy keeps changing, against an API server in trouble. Those passes fail
    # with the failure that stands (said "ok", the Node's status flipped each interval).
    now = [1000.0]
    memory, pools, source = WatchedMemory(), FailingPools(), ApiSource(SPEC)
    metrics = AgentMetrics()
    agent = Agent(source, lambda spec: BackendGroup([memory, pools]),
                  COMPILED,
                  AgentOptions("node-1", interval=30), metrics=metrics)
    agent._monotonic = lambda: now[0]
    first = agent.run_pass()
    assert (first.status, first.leader, pools.lists) == ("failed", True, 1)
    agent._by_change = True
    for _ in range(5):
        now[0] += 1
        memory.generation += 1
        result = agent.run_pass()
        assert result.status == "failed"
        assert "503" in result.message
    assert pools.lists == 1
    assert metrics.registry.get_sample_value("k3snet_agent_cluster_sync_failures_total",
                                             {"reason": "apply"}) == 1
    now[0] += 30  # the interval's worth: tried again, change or not
    agent.run_pass()
    assert pools.lists == 2
    # Once it lists them again, the change passes are ok again.
    pools.failing = False
    agent._by_change = False
    assert agent.run_pass().status == "ok"
    agent._by_change = True
    now[0] += 1
    memory.generation += 1
    assert agent.run_pass().status == "ok"
    assert pools.lists == 3


def test_a_leader_again_converges_the_cluster_wide_part_at_once() -> None:
    # A new tenure's first pass converges the cluster-wide part, however recent the
    # last tenure's was.
    now = [1000.0]
    memory, pools, source = WatchedMemory(), CountedPools(), ApiSource(SPEC)
    agent = Agent(source, lambda spec: BackendGroup([memory, pools]),
                  COMPILED,
                  AgentOptions("node-1", interval=30))
    agent._monotonic = lambda: now[0]
    agent.run_pass()
    assert pools.lists == 1
    agent._by_change = True
    agent._leadership_changed(True)
    now[0] += 1
    memory.generation += 1
    agent.run_pass()
    assert pools.lists == 2


def test_a_change_pass_of_a_leader_whose_cluster_wide_part_failed_fails_with_it() -> None:
    # An established leader: the interval's pass failed on the IPPools, the passes a
    # change started in between said "ok", the Node's status flipping at every interval.
    now = [1000.0]
    memory, pools, source = WatchedMemory(), FailingPools(), ApiSource(SPEC)
    pools.failing = False
    agent = Agent(source, lambda spec: BackendGroup([memory, pools]),
                  COMPILED,
                  AgentOptions("node-1", interval=30))
    agent._monotonic = lambda: now[0]
    assert agent.run_pass().status == "ok"
    pools.failing = True
    now[0] += 30
    assert agent.run_pass().status == "failed"  # the interval's pass
    agent._by_change = True
    now[0] += 1
    memory.generation += 1
    changed = agent.run_pass()
    assert (changed.status, pools.lists) == ("failed", 2)
    assert "503" in changed.message


class _RoutesAndSysctls(MemoryBackend):
    """A backend whose class declares its kinds, as netlink's does."""

    capabilities = frozenset({"route", "sysctl"})

    def __init__(self) -> None:
        super().__init__(capabilities=self.capabilities)


class _NatAndForward(MemoryBackend):
    """The kinds of nftables and iptables."""

    capabilities = frozenset({"nat", "forward"})

    def __init__(self, *, table: str = "k3snet") -> None:
        super().__init__(capabilities=self.capabilities)
        self.table = table


@pytest.mark.parametrize(("backends", "says"), [
    ("[crossm-routes, crossm-nat, crossm-nat2]",
     "would manage forward, nat"),
    ("{crossm-routes: {}, crossm-nat: {tabel: x}}", "backends.crossm-nat.tabel: unknown option"),
    ("[crossm-routes, crossm-nat, crossm-nope]", "no backend named 'crossm-nope'"),
])
def test_a_new_spec_whose_backends_cannot_be_made_is_refused_and_the_last_good_one_kept(
        tmp_path: Path, backends: str, says: str) -> None:
    # The agent made a new spec's backends before its refusal's try: two of them managing
    # one kind (what `k3snet validate` now refuses), an unknown option or backend failed
    # every pass for good ("failed", never "spec-refused"), and the spec in force was not
    # converged any more: its drift stayed.
    import argparse  # noqa: PLC0415

    from k3snet.backends.registry import register_backend, unregister_backend  # noqa: PLC0415
    from k3snet.cli import _backend  # noqa: PLC0415

    for name, factory in (("crossm-routes", _RoutesAndSysctls), ("crossm-nat", _NatAndForward),
                          ("crossm-nat2", _NatAndForward)):
        register_backend(name, factory)
    args = argparse.Namespace(backend=[], backend_opt=[], netns=None, allow_disruptive=False,
                              spec=tmp_path / "spec.yaml")
    try:
        node = Node(tmp_path, SPEC + "backends: [crossm-routes, crossm-nat]\n")
        node.agent._make_backend = lambda spec: _backend(args, spec)  # as the CLI's agent
        assert node.agent.run_pass().status == "ok"
        group = node.agent._group
        assert group is not None
        nat = group.members[1].backend
        before = nat.observe()
        node.path.write_text(SPEC_TWO + f"backends: {backends}\n")
        refused = node.agent.run_pass()
        assert refused.status == "spec-refused", refused.message
        assert "refused (invalid)" in refused.message
        assert says in refused.message
        assert "keeping spec generation 1" in refused.message
        assert node.sample("k3snet_agent_spec_rejected_total", reason="invalid") == 1
        # The last good spec is still converged: its drift repaired.
        nat.apply(Plan(changes=[c.inverse() for c in plan(State(), before).changes
                                if c.kind == "nat"]))
        again = node.agent.run_pass()
        assert (again.status, again.drift) == ("spec-refused", 1), again.message
        assert node.sample("k3snet_agent_spec_rejected_total", reason="invalid") == 1
    finally:
        for name in ("crossm-routes", "crossm-nat", "crossm-nat2"):
            unregister_backend(name)
