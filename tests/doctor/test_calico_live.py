"""Calico's IP pools read live through k3snet's calico backend, against the emulated
API server (:class:`k3snet.testing.kube.EmulatedApiServer`), not from a bundle file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kmock")
pytest.importorskip("kubernetes")

from k3snet.backends.calico import CalicoBackend
from k3snet.cli import main
from k3snet.doctor import Flow, NodeCapture, NodeState, Verdict, diagnose, trace
from k3snet.doctor.cni import calico_pools, read_calico_pools
from k3snet.doctor.state import CalicoPool
from k3snet.testing.kube import EmulatedApiServer

HEALTHY = Path(__file__).parent / "golden" / "healthy"
CALICO_NAT = (Path(__file__).parent / "rulesets" / "calico-nat.save").read_text()
FLOW = Flow("10.42.0.10", "192.168.2.10", port=5432)
CRD = "crd.projectcalico.org/v1/ippools"


def _pool(name: str, spec: dict[str, Any], labels: dict[str, str] | None = None
          ) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, **({"labels": labels} if labels else {})}
    return {"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool", "metadata": metadata,
            "spec": spec}


def _state() -> NodeState:
    """The healthy node with Calico's nat rules instead of its own (no pools in it)."""
    capture = NodeCapture.read_dir(HEALTHY)
    texts = {k: v for k, v in capture.texts.items()
             if not k.startswith("iptables-") and k != "nft-ruleset.json"}
    return NodeState.from_capture(NodeCapture({**texts, "iptables-legacy-v4.save": CALICO_NAT}))


@pytest.fixture
def server() -> Any:
    # Calico without its API server: the pools are the CRDs (the calico backend's
    # discovery picks projectcalico.org/v3 when the API server is there).
    with EmulatedApiServer(resources=(CRD,)) as api_server:
        api_server.put(CRD, _pool("default-ipv4-ippool", {"cidr": "10.42.0.0/16",
                                                          "natOutgoing": True}))
        yield api_server


def test_pools_through_the_backend_decide_calicos_nat(server: EmulatedApiServer) -> None:
    assert trace(_state(), FLOW).verdict is Verdict.UNKNOWN  # ipsets unknown without pools
    backend = CalicoBackend(api_client=server.api_client())
    pools = calico_pools(backend)
    assert pools == (CalicoPool(pools[0].cidr, nat_outgoing=True),)
    state = _state().with_calico_pools(pools, "the calico backend")
    result = trace(state, FLOW)
    assert result.verdict is Verdict.REACHES, result.render()
    assert str(result.source_seen) == "192.168.1.5"
    assert "the calico backend: 1 IP pool(s)" in state.sources


def test_a_pool_covering_the_destination_is_found_live(server: EmulatedApiServer) -> None:
    # k3snet's own pools are read too (owned objects of the backend).
    server.put(CRD, _pool("k3snet-lan", {"cidr": "192.168.2.0/24", "disabled": True},
                          labels={"app.kubernetes.io/managed-by": "k3snet"}))
    found = read_calico_pools(api_client=server.api_client())
    assert found.why is None
    assert found.pools is not None
    assert [str(p.cidr) for p in found.pools] == ["10.42.0.0/16", "192.168.2.0/24"]
    d = diagnose(_state().with_calico_pools(found.pools, "the calico backend"), FLOW)
    assert d.verdict is Verdict.BLOCKED
    assert [f.code for f in d.findings][:2] == ["no-masquerade", "destination-in-calico-pool"]


def test_failures_are_reported_not_raised(server: EmulatedApiServer) -> None:
    server.fail(500, method="GET")
    found = read_calico_pools(api_client=server.api_client(), timeout=5)
    assert found.pools is None
    assert "could not list the IP pools" in (found.why or "")


def test_a_pool_the_backend_cannot_read_makes_the_pools_unknown(
    server: EmulatedApiServer,
) -> None:
    # Calico's ipsets hold every pool: judging them without one would be a guess.
    server.put(CRD, _pool("broken", {"cidr": "10.300.0.0/16"}))
    found = read_calico_pools(api_client=server.api_client(), timeout=5)
    assert found.pools is None
    assert "broken" in (found.why or "")


def test_a_cluster_without_calico_has_no_pools() -> None:
    with EmulatedApiServer(resources=()) as bare:
        found = read_calico_pools(api_client=bare.api_client(), timeout=5)
    assert found == type(found)(())


def test_cli_reads_pools_through_a_kubeconfig(server: EmulatedApiServer, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    bundle = tmp_path / "bundle"
    capture = NodeCapture.read_dir(HEALTHY)
    texts = {k: v for k, v in capture.texts.items()
             if not k.startswith("iptables-") and k != "nft-ruleset.json"}
    NodeCapture({**texts, "iptables-legacy-v4.save": CALICO_NAT}).write_dir(bundle)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: emu, cluster: {{server: '{server.url}'}}}}]\n"
        "users: [{name: me, user: {}}]\n"
        "contexts: [{name: emu, context: {cluster: emu, user: me}}]\n"
        "current-context: emu\n")
    argv = ["doctor", "--from", "10.42.0.10", "--to", "192.168.2.10:5432", "--state", str(bundle)]
    assert main(argv) == 4  # offline, the bundle has no pools: Calico's ipsets are unknown
    capsys.readouterr()
    assert main([*argv, "--kubeconfig", str(kubeconfig)]) == 0
    assert "verdict: reaches; the destination sees 192.168.1.5" in capsys.readouterr().out
    missing = tmp_path / "missing.yaml"
    assert main([*argv, "--kubeconfig", str(missing)]) == 4
    out = capsys.readouterr().out
    assert "calico-ippools.json" in out  # the capture-incomplete finding says why


def test_of_two_pools_of_one_cidr_the_one_whose_name_sorts_first_makes_felix_s_sets(
    server: EmulatedApiServer,
) -> None:
    # Calico's syncer keys pools by CIDR and passes on only the one whose name sorts
    # first (libcalico-go's conflictResolvingCache): aa-twin's natOutgoing: false keeps
    # 10.42.0.0/16 out of cali40masq-ipam-pools, and the pods leave untranslated.
    server.put(CRD, _pool("aa-twin", {"cidr": "10.42.0.0/16"}))
    pools = calico_pools(CalicoBackend(api_client=server.api_client()))
    state = _state().with_calico_pools(pools, "the calico backend")
    assert not state.ipsets()["cali40masq-ipam-pools"].networks
    assert trace(state, FLOW).verdict is Verdict.BLOCKED
    server.delete(CRD, "aa-twin")
    server.put(CRD, _pool("zz-twin", {"cidr": "10.42.0.0/16"}))
    pools = calico_pools(CalicoBackend(api_client=server.api_client()))
    state = _state().with_calico_pools(pools, "the calico backend")
    assert trace(state, FLOW).verdict is Verdict.REACHES
