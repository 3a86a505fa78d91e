"""A pass a change on the node started that finds nothing to do logs at debug level: on a
node where kube-proxy commits every second, each said "in sync" at info level (86 000
lines a day); the interval's passes keep the heartbeat, and the metrics count every pass."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from k3snet.agent import Agent, AgentMetrics, AgentOptions, FileSpecSource
from k3snet.backends.group import BackendGroup
from k3snet.backends.memory import MemoryBackend
from k3snet.model.state import State
from k3snet.planner import Plan, plan

from .desired import COMPILED

SPEC = """\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
destinations:
  - cidr: 192.168.2.0/24
"""


def _node(tmp_path: Path, text: str = SPEC) -> tuple[Agent, MemoryBackend, AgentMetrics]:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    memory = MemoryBackend(capabilities=("route", "sysctl", "nat", "forward"))
    metrics = AgentMetrics()
    agent = Agent(FileSpecSource(path), lambda spec: BackendGroup([memory]), COMPILED,
                  AgentOptions("node-1", interval=3600.0), metrics=metrics)
    return agent, memory, metrics


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    """(level, message) of each pass's line."""
    return [(r.levelno, r.getMessage()) for r in caplog.records
            if r.name == "k3snet.agent" and hasattr(r, "status")]


def test_a_pass_a_change_started_that_finds_nothing_logs_at_debug_an_interval_pass_at_info(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    agent, _, metrics = _node(tmp_path)
    with caplog.at_level(logging.DEBUG, logger="k3snet.agent"):
        assert agent.run_pass().status == "ok"
        caplog.clear()
        agent._by_change = True  # the watch saw another program's commit
        for _ in range(3):
            assert agent.run_pass().message == "in sync: no changes"
        agent._by_change = False  # the interval's pass: the heartbeat
        assert agent.run_pass().message == "in sync: no changes"
    assert _lines(caplog) == [(logging.DEBUG, "in sync: no changes")] * 3 + [
        (logging.INFO, "in sync: no changes")]
    count = metrics.registry.get_sample_value("k3snet_agent_sync_duration_seconds_count")
    assert count == 5  # every pass counted, the quiet ones too


def test_a_pass_a_change_started_that_repairs_drift_still_warns(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    agent, memory, _ = _node(tmp_path)
    assert agent.run_pass().status == "ok"
    forward = [c for c in plan(State(), memory.state).changes if c.kind == "forward"]
    memory.apply(Plan(changes=[c.inverse() for c in forward]))
    agent._by_change = True
    caplog.clear()  # the first pass's line: captured if the logger was left at INFO
    with caplog.at_level(logging.DEBUG, logger="k3snet.agent"):
        result = agent.run_pass()
    assert result.drift == 1
    assert [level for level, _ in _lines(caplog)] == [logging.WARNING]


def test_a_refused_spec_is_said_when_refused_and_by_the_interval_passes_not_at_each_change(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    agent, _, _ = _node(tmp_path)
    assert agent.run_pass().status == "ok"
    (tmp_path / "spec.yaml").write_text("destinations:\n  - cidr: 999.1.2.0/24\n")
    caplog.clear()  # the first pass's line: captured if the logger was left at INFO
    with caplog.at_level(logging.DEBUG, logger="k3snet.agent"):
        agent._by_change = True
        assert agent.run_pass().status == "spec-refused"  # the refusal: an error, once
        assert agent.run_pass().status == "spec-refused"
        agent._by_change = False
        assert agent.run_pass().status == "spec-refused"
    refusals = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(refusals) == 1
    assert "refused (invalid)" in refusals[0].getMessage()
    assert [level for level, _ in _lines(caplog)] == [logging.DEBUG, logging.DEBUG,
                                                      logging.WARNING]


def test_a_node_whose_every_pass_a_change_starts_still_logs_one_info_line_an_interval(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # kube-proxy committing every second: the wait after each pass ends at its next commit
    # and the interval, counted from the end of each pass, never runs out. With only the
    # interval's passes at INFO, the agent's log stayed silent for good (tested with an
    # agent on a lab namespace where nft committed every 0.5 s: 17 passes in 15 s, no
    # line), a stuck agent and a healthy one looking the same again.
    now = [0.0]
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    memory = MemoryBackend(capabilities=("route", "sysctl", "nat", "forward"))
    agent = Agent(FileSpecSource(path), lambda spec: BackendGroup([memory]), COMPILED,
                  AgentOptions("node-1", interval=30.0), monotonic=lambda: now[0])
    assert agent.run_pass().status == "ok"  # applied: said at INFO
    caplog.clear()  # that line: captured if the logger was left at INFO
    with caplog.at_level(logging.DEBUG, logger="k3snet.agent"):
        for _ in range(100):  # a pass a second, each one a change started
            now[0] += 1.0
            agent._by_change = True
            assert agent.run_pass().message == "in sync: no changes"
    levels = [level for level, _ in _lines(caplog)]
    assert len(levels) == 100
    assert [second for second, level in enumerate(levels, 1) if level == logging.INFO] == [
        30, 60, 90]
    assert set(levels) == {logging.DEBUG, logging.INFO}
