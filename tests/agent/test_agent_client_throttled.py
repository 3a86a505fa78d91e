"""The agent's Lease elector, its Lease release and its node report wait no throttled
answer inside the request (``throttle_waits(None)``) with the client the agent really
uses: one :func:`k3snet.kube.make_api_client` made from a kubeconfig, which outside any
block waits :data:`k3snet.kube.THROTTLE_WAITS` (up to 30 s a request).

The other agent tests hand the emulator's own client in (``api_client=``), which since
review17-crosse waits nothing outside a block whatever the agent does: with the
elector's, the release's and the report's ``throttle_waits(None)`` taken out, none of
them failed. Every sleep here is a recorder's: nothing is timed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

import k3snet.kube
from k3snet.agent import LeaderElector, LeaseSettings, NodeReport, NodeReporter
from k3snet.kube import make_api_client
from k3snet.testing.kube import AGENT_RESOURCES, EmulatedApiServer
from tests.kubeclient import write_kubeconfig

pytestmark = pytest.mark.cluster

SETTINGS = LeaseSettings("kube-system", "k3snet-cluster-writer", duration=15.0,
                         renew_deadline=10.0, retry_period=2.0)


class _Stepped(LeaderElector):
    """An elector without its thread: the test steps it."""

    def start(self) -> LeaderElector:
        return self


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits the one-shot commands' THROTTLE_WAITS would sleep, recorded."""
    waits: list[float] = []
    monkeypatch.setattr(k3snet.kube, "THROTTLE_WAITS",
                        attrs.evolve(k3snet.kube.THROTTLE_WAITS, sleep=waits.append))
    return waits


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatedApiServer]:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with EmulatedApiServer(resources=AGENT_RESOURCES) as running:
        running.put("v1/nodes", {"metadata": {"name": "node-a"}})
        yield running


@pytest.fixture
def made(server: EmulatedApiServer, tmp_path: Path) -> Iterator[Any]:
    """A client as the agent's own (k3snet agent makes it from its kubeconfig)."""
    path = write_kubeconfig(tmp_path / "kubeconfig", server.url)
    client, owned = make_api_client(kubeconfig=str(path))
    assert owned
    yield client
    client.close()


def _sent(server: EmulatedApiServer, method: str, part: str) -> int:
    return sum(1 for m, p, _ in server.requests() if m == method and part in p)


def test_a_throttled_lease_step_through_the_agents_own_client_waits_nothing_inside_it(
        server: EmulatedApiServer, made: Any, slept: list[float]) -> None:
    elector = _Stepped(made, "node-a", SETTINGS)
    server.fail(429, method="GET", plural="leases", times=None, retry_after=1)
    assert elector.step() is False
    assert slept == []
    assert _sent(server, "GET", "/leases") == 1


def test_a_throttled_lease_release_through_the_agents_own_client_waits_nothing_inside_it(
        server: EmulatedApiServer, made: Any, slept: list[float]) -> None:
    elector = _Stepped(made, "node-a", SETTINGS)
    assert elector.step() is True
    before = _sent(server, "GET", "/leases")
    server.fail(429, method="GET", plural="leases", times=None, retry_after=1)
    elector.release()
    assert slept == []
    assert _sent(server, "GET", "/leases") == before + 1
    assert not elector.is_leader


def test_a_throttled_node_report_through_the_agents_own_client_waits_nothing_inside_it(
        server: EmulatedApiServer, made: Any, slept: list[float]) -> None:
    reporter = NodeReporter(made, "node-a")
    server.fail(429, method="PATCH", plural="nodes", times=None, retry_after=1)
    reporter.report(NodeReport("ok", "in sync: no changes", None, 1, leader=False))
    assert slept == []
    assert _sent(server, "PATCH", "/nodes/") == 1


def test_a_throttled_read_of_the_candidates_label_through_the_agents_own_client_waits_nothing(
        server: EmulatedApiServer, made: Any, slept: list[float]) -> None:
    # `--lease-candidates`: the agent reads its Node's labels once, at the first need of
    # the Lease; throttled, it waited THROTTLE_WAITS (up to 30 s) inside the request.
    from k3snet.agent._main import _has_label  # noqa: PLC0415
    from k3snet.errors import BackendError  # noqa: PLC0415

    server.fail(429, method="GET", plural="nodes", times=None, retry_after=1)
    with pytest.raises(BackendError):
        _has_label(made, "node-a", "k3snet.io/lease")
    assert slept == []
    assert _sent(server, "GET", "/nodes/node-a") == 1
