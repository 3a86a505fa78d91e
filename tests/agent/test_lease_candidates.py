"""``--lease-candidates``: the agent reads its own Node's labels once, at the first need."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet.agent import _main
from k3snet.backends.group import BackendGroup
from k3snet.cli import main
from k3snet.errors import ModelError
from k3snet.kube import KubeApiError
from k3snet.model.state import State
from k3snet.testing.kube import AGENT_RESOURCES, EmulatedApiServer

pytestmark = pytest.mark.cluster

LABEL = "k3snet.io/lease-candidate"
SPEC = "apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\ndestinations:\n  - cidr: 192.168.2.0/24\n"


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


@pytest.mark.parametrize("selector", ["node-role==edge", "node-role!=edge", "role in (a,b)",
                                      "node-role.kubernetes.io/control-plane ", "=edge"])
@pytest.mark.parametrize("from_env", [False, True])
def test_a_selector_that_can_match_no_label_is_a_usage_error(
    selector: str, from_env: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `node-role==edge` (kubectl's form) was read as the label "node-role" with the value
    # "=edge": no node matched, every agent was no candidate, and no node ever wrote the
    # cluster-wide objects (Calico pools, flannel's ConfigMap), saying so only at info.
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    option = [] if from_env else ["--lease-candidates", selector]
    if from_env:
        monkeypatch.setenv("K3SNET_LEASE_CANDIDATES", selector)
    with pytest.raises(SystemExit) as done:
        main(["agent", "-f", str(spec), "--backend", "memory", "--no-kube", "--no-facts",
              "--once", "--listen", "none", *option])
    assert done.value.code == 64
    err = capsys.readouterr().err
    assert "is not LABEL or LABEL=VALUE" in err
    assert ("(from $K3SNET_LEASE_CANDIDATES)" in err) is from_env


def test_a_library_caller_s_unmatchable_selector_is_refused_before_anything_starts() -> None:
    args = argparse.Namespace(spec=Path("spec.yaml"), spec_configmap=None, lease=None,
                              lease_duration=15.0, lease_renew_deadline=10.0,
                              lease_retry_period=2.0, lease_candidates="role==edge",
                              node_name="node-a", log_format="text", log_level="INFO")
    with pytest.raises(ModelError, match="--lease-candidates 'role==edge' is not LABEL"):
        _main.run_from_cli(args, make_backend=lambda spec: BackendGroup([]),
                           desired=lambda spec, group: State())
