"""The agent logs its backends' warnings, each once while it lasts (kernel).

Wired as ``k3snet agent --backend netlink`` in a fresh namespace holding a pod bridge
(cni0) and an uplink (eth0): with ``net.ipv4.ip_forward = 1`` and cni0's own IPv4
``forwarding`` switch at 0, the kernel drops the pods' packets arriving there while
every plan is empty; the netlink backend's warning says so (``sysctl`` in the
namespace is the kernel's own view of the switch).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k3snet.lab.netns import run_in, temporary_netns
from tests.netlink.links import count_switch_reads

pytestmark = pytest.mark.kernel

SPEC = """apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
destinations:
  - cidr: 10.100.0.0/24
    gateway: 192.168.1.1
    device: eth0
"""


@contextlib.contextmanager
def _agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    from k3snet import cli  # noqa: PLC0415 - the CLI's own agent wiring, as `k3snet agent`
    from k3snet.agent import Agent, AgentMetrics, AgentOptions, FileSpecSource  # noqa: PLC0415

    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("K3SNET_LOCK_DIR", str(tmp_path))
    with temporary_netns("warnlog") as ns:
        run_in(ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"])
        run_in(ns, ["ip", "link", "set", "eth1", "up"])
        run_in(ns, ["ip", "addr", "add", "192.168.1.5/24", "dev", "eth0"])
        run_in(ns, ["ip", "link", "set", "eth0", "up"])
        run_in(ns, ["ip", "link", "add", "cni0", "type", "bridge"])
        run_in(ns, ["ip", "addr", "add", "10.42.0.1/24", "dev", "cni0"])
        run_in(ns, ["ip", "link", "set", "cni0", "up"])
        spec = tmp_path / "spec.yaml"
        spec.write_text(SPEC)
        args = cli.build_parser().parse_args(["agent", "-f", str(spec), "--netns", ns,
                                              "--backend", "netlink"])
        desired = cli._AgentDesired(args)
        agent = Agent(FileSpecSource(spec), lambda s: cli._backend(args, s), desired,
                      AgentOptions("warnlog", interval=60), metrics=AgentMetrics())
        try:
            yield agent, ns
        finally:
            agent.shutdown()
            desired.close()


def _in_force(agent: Any) -> float | None:
    value: float | None = agent.metrics.registry.get_sample_value(
        "k3snet_agent_backend_warnings", {"part": "node"})
    return value


def _said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "IPv4 forwarding is off on" in r.getMessage()]


def test_a_pod_bridges_forwarding_switch_at_0_is_logged_once_while_it_lasts_kernel(
        require_root: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    with _agent(tmp_path, monkeypatch) as (agent, ns), caplog.at_level(logging.WARNING):
        assert agent.run_pass().status == "ok"  # writes ip_forward = 1: every switch on
        assert run_in(ns, ["sysctl", "-n", "net.ipv4.conf.cni0.forwarding"]).stdout.strip() == "1"
        assert _said(caplog) == []
        assert _in_force(agent) == 0
        run_in(ns, ["sysctl", "-qw", "net.ipv4.conf.cni0.forwarding=0"])
        # Moves no change token (the kernel announces no sysctl change): an interval's
        # pass, with nothing to observe again, still says it.
        first = agent.run_pass()
        assert first.status == "ok"
        assert first.applied == ()
        [warning] = _said(caplog)
        assert "IPv4 forwarding is off on cni0 " in warning
        assert "eth0" not in warning
        for _ in range(3):  # not on every pass while it lasts
            assert agent.run_pass().status == "ok"
        assert _said(caplog) == [warning]
        assert _in_force(agent) == 1  # in the metrics while it lasts
        run_in(ns, ["sysctl", "-qw", "net.ipv4.conf.cni0.forwarding=1"])
        for _ in range(2):
            assert agent.run_pass().status == "ok"
        assert _said(caplog) == [warning]  # gone: nothing more said
        assert _in_force(agent) == 0
        run_in(ns, ["sysctl", "-qw", "net.ipv4.conf.cni0.forwarding=0"])
        assert agent.run_pass().status == "ok"
        assert _said(caplog) == [warning, warning]  # back: said again
        run_in(ns, ["sysctl", "-qw", "net.ipv4.conf.eth0.forwarding=0"])
        assert agent.run_pass().status == "ok"
        *_, changed = _said(caplog)  # changed (another interface named): said again
        assert len(_said(caplog)) == 3
        assert "cni0" in changed
        assert "eth0" in changed


def test_pods_veths_made_while_default_is_off_are_not_logged_again_at_each_start_kernel(
        require_root: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    reads = count_switch_reads(monkeypatch)
    with _agent(tmp_path, monkeypatch) as (agent, ns), caplog.at_level(logging.WARNING):
        assert agent.run_pass().status == "ok"
        run_in(ns, ["sysctl", "-qw", "net.ipv4.conf.default.forwarding=0",
                    "net.ipv4.conf.cni0.forwarding=0"])
        for pod in range(8):
            run_in(ns, ["ip", "link", "add", f"veth{pod}", "type", "veth", "peer", "name",
                        f"p{pod}"])
        assert agent.run_pass().status == "ok"
        said = _said(caplog)
        assert len(said) == 1
        assert "off on cni0, " in said[0]
        reads.clear()
        for _ in range(3):  # a no-op pass reads no switch
            assert agent.run_pass().status == "ok"
        assert reads == []
        for pod in range(8, 12):  # pods start: the same situation, nothing logged again
            run_in(ns, ["ip", "link", "add", f"veth{pod}", "type", "veth", "peer", "name",
                        f"p{pod}"])
            assert agent.run_pass().status == "ok"
        assert _said(caplog) == said
        run_in(ns, ["sysctl", "-qw", "net.ipv4.conf.cni0.forwarding=1"])  # noticed at once
        assert agent.run_pass().status == "ok"
        [now] = _said(caplog)[1:]
        assert "cni0" not in now
