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


@pytest.mark.parametrize("spec", [
    {"cidr": "10.300.0.0/16"},  # no CIDR Go's net.ParseCIDR parses
    {"cidr": " 192.168.2.0/24"},  # blanks around it: Go refuses that too
    {"cidr": "192.168.2.0/24", "blockSize": 99, "natOutgoing": True},  # refused by k3snet
])
def test_a_pool_the_backend_cannot_read_leaves_the_others_judged_and_is_named(
    server: EmulatedApiServer, spec: dict[str, Any],
) -> None:
    # One unreadable pool made every pool unknown, and every flow through Calico's
    # ipsets unknown with it (a hostile or mistyped object outside the flow's addresses
    # was enough). Felix drops a pool whose CIDR Go cannot parse (libcalico-go
    # IPPoolV3ToV1), as the bundle's reader does; one the backend refuses for another
    # reason (a blockSize out of range) keeps its CIDR and natOutgoing in Felix's sets,
    # read as the bundle reads them. Either way the readable pools are judged and the
    # pool the backend cannot model is named.
    server.put(CRD, _pool("broken", spec))
    found = read_calico_pools(api_client=server.api_client(), timeout=5)
    assert found.why is None
    assert found.pools is not None
    cidrs = [str(p.cidr) for p in found.pools]
    assert cidrs[-1] == "10.42.0.0/16"
    (note,) = found.unreadable
    assert note.startswith("IPPool broken: "), note
    state = _state().with_calico_pools(found.pools, "the calico backend",
                                       unreadable=found.unreadable)
    assert "IPPool broken" in state.missing["calico-ippools.json"]
    if spec.get("blockSize"):
        # Felix keeps it: the destination is inside a pool, which Felix never NATs to.
        assert cidrs == ["192.168.2.0/24", "10.42.0.0/16"]
        assert "Felix still puts its CIDR in its sets" in note, note
        assert trace(state, FLOW).verdict is Verdict.BLOCKED
    else:
        assert cidrs == ["10.42.0.0/16"]
        assert "Felix drops it too" in note, note
        assert trace(state, FLOW).verdict is Verdict.REACHES


def test_a_pool_felix_may_take_for_another_cidr_makes_the_pools_unknown(
    server: EmulatedApiServer,
) -> None:
    # An IPv4-mapped IPv6 CIDR is the IPv4 CIDR 10.42.0.0/16 to Felix (v3.32 and
    # before), a twin whose name sorts first: its natOutgoing (none) would decide the
    # pod CIDR's masquerade, and Calico's development branch drops it instead. Judging
    # the others without it could be wrong: unknown, and said why.
    server.put(CRD, _pool("aa-mapped", {"cidr": "::ffff:10.42.0.0/112"}))
    found = read_calico_pools(api_client=server.api_client(), timeout=5)
    assert found.pools is None
    assert "IPPool aa-mapped" in (found.why or "")
    assert "IPv4-mapped" in (found.why or "")


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
    # A pool Felix drops is named, and the others still decide.
    server.put(CRD, _pool("broken", {"cidr": "10.300.0.0/16"}))
    assert main([*argv, "--kubeconfig", str(kubeconfig)]) == 0
    out = capsys.readouterr().out
    assert "verdict: reaches" in out
    assert "IPPool broken" in out, out
    assert "Felix drops it too" in out, out
    server.delete(CRD, "broken")
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
