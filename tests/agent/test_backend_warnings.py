"""The agent logs every backend's warnings, each once while it lasts.

A backend's ``warnings`` were said by ``k3snet plan``/``apply`` alone unless the
backend logged them itself after its read (nftables, iptables, Calico, each with its
own copy of that): the netlink backend's, read from the kernel when asked, never
reached the agent's log.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from k3snet.agent import Agent, AgentMetrics, AgentOptions, FileSpecSource
from k3snet.backends.group import BackendGroup, Member
from k3snet.backends.memory import MemoryBackend
from k3snet.model.state import State
from k3snet.spec import Spec

from .desired import COMPILED

SPEC = """\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
destinations:
  - cidr: 192.168.2.0/24
"""


class _Warns(MemoryBackend):
    """A backend whose warnings are read when asked (as netlink's), logging none itself."""

    warnings: tuple[str, ...] = ()


class _SelfLogging(MemoryBackend):
    """A backend logging its warnings after each read itself (as nftables does)."""

    warnings: tuple[str, ...] = ()

    def observe(self) -> State:
        found = super().observe()
        self.log_warnings()
        return found


class _Plain:
    """A third-party backend that is no BackendBase: ``warnings`` and no log_warnings."""

    name = "plain"

    def __init__(self) -> None:
        self._memory = MemoryBackend(capabilities=("nat",))
        self.warnings: tuple[str, ...] = ()

    def __getattr__(self, name: str) -> Any:
        if name in ("log_warnings", "warning_log"):
            raise AttributeError(name)
        return getattr(self._memory, name)


def _agent(tmp_path: Path, *backends: Any, metrics: AgentMetrics | None = None) -> Agent:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)

    def make_backend(spec: Spec) -> BackendGroup:
        return BackendGroup([Member(backends[0], frozenset({"route", "sysctl"})),
                             Member(backends[1], frozenset({"forward"})),
                             Member(backends[2], frozenset({"nat"}))])

    return Agent(FileSpecSource(path), make_backend,
                 COMPILED,
                 AgentOptions("node-1"), metrics=metrics)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
            and r.name.startswith("k3snet.backends")]


def test_every_backends_warning_is_logged_once_while_it_lasts_and_again_when_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    warns = _Warns(capabilities=("route", "sysctl"))
    own = _SelfLogging(capabilities=("forward",))
    plain = _Plain()
    metrics = AgentMetrics()
    agent = _agent(tmp_path, warns, own, plain, metrics=metrics)

    def in_force() -> float | None:
        value: float | None = metrics.registry.get_sample_value(
            "k3snet_agent_backend_warnings", {"part": "node"})
        return value

    assert in_force() == 0
    with caplog.at_level(logging.WARNING):
        assert agent.run_pass().status == "ok"
        assert _warnings(caplog) == []
        warns.warnings = ("cni0's forwarding is 0",)
        own.warnings = ("own: a drop in another table",)
        plain.warnings = ("a pool not read",)
        for _ in range(4):  # every pass after the first finds nothing to do
            assert agent.run_pass().status == "ok"
        assert sorted(_warnings(caplog)) == [
            "memory: cni0's forwarding is 0", "memory: own: a drop in another table",
            "plain: a pool not read"]
        assert in_force() == 3  # in the metrics while they last
        caplog.clear()
        warns.warnings = ()  # gone ...
        plain.warnings = ("a pool not read", "another pool not read")
        assert agent.run_pass().status == "ok"
        assert _warnings(caplog) == ["plain: another pool not read"]  # only what is new
        assert in_force() == 3
        warns.warnings = ("cni0's forwarding is 0",)  # ... and back
        assert agent.run_pass().status == "ok"
        assert _warnings(caplog) == ["plain: another pool not read",
                                     "memory: cni0's forwarding is 0"]
    agent.shutdown()


def test_a_failed_pass_logs_the_warnings_too(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    warns = _Warns(capabilities=("route", "sysctl"))
    warns.warnings = ("cni0's forwarding is 0",)
    agent = _agent(tmp_path, warns, _SelfLogging(capabilities=("forward",)), _Plain())
    warns.faults.fail_at(0)
    with caplog.at_level(logging.WARNING):
        assert agent.run_pass().status != "ok"
    assert "memory: cni0's forwarding is 0" in _warnings(caplog)
    agent.shutdown()
