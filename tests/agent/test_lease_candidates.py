"""``--lease-candidates``: the agent reads its own Node's labels once, at the first need."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from k3snet.agent import _main
from k3snet.kube import KubeApiError
from k3snet.testing.kube import AGENT_RESOURCES, EmulatedApiServer

pytestmark = pytest.mark.cluster

LABEL = "k3snet.io/lease-candidate"


@pytest.fixture
def server() -> Iterator[EmulatedApiServer]:
    with EmulatedApiServer(resources=AGENT_RESOURCES) as srv:
        srv.put("v1/nodes", {"metadata": {"name": "node-a", "labels": {LABEL: "true"}}})
        srv.put("v1/nodes", {"metadata": {"name": "node-b"}})
        yield srv


def test_candidacy_follows_the_node_label(server: EmulatedApiServer) -> None:
    api = server.api_client()
    assert _main._has_label(api, "node-a", LABEL)
    assert _main._has_label(api, "node-a", f"{LABEL}=true")
    assert not _main._has_label(api, "node-a", f"{LABEL}=false")
    assert not _main._has_label(api, "node-b", LABEL)


def test_reading_the_node_has_a_timeout(server: EmulatedApiServer,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # The Node was read without a request timeout: an API server that accepted the
    # connection but never answered held the agent's first pass (and with it the
    # node's own rules) until the kernel gave up on the TCP connection. Every other
    # request of the agent gives up after DEFAULT_TIMEOUT; this one must too.
    monkeypatch.setattr(_main, "DEFAULT_TIMEOUT", 0.5, raising=False)
    server.fail(500, method="GET", plural="nodes", delay=5.0)
    with pytest.raises(KubeApiError) as info:
        _main._has_label(server.api_client(), "node-a", LABEL)
    assert info.value.reason == "Timeout", info.value
    assert "within 0.5s" in str(info.value)
