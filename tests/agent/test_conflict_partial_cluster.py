"""A standing conflict in the cluster-wide part: the rest of that part is written.

The Lease holder's Calico part wants two pools; a foreign pool overlapping one of them
(Calico forbids overlaps) is the plan's ``!`` conflict. The other pool is written, the
foreign one left as it is, and the pass fails ``conflict`` for the cluster-wide
objects, the node's part converged (ready). A pool of k3snet's deleted meanwhile is
put back on the next pass, and counted as drift repaired (the metric, the fight's
count), as it is beside a conflict of the node's part.
"""

from __future__ import annotations

from pathlib import Path

from k3snet.testing.kube import EmulatedApiServer
from tests.agent.clock import FakeClock
from tests.agent.test_cluster_writer import POOLS, _agent, server  # noqa: F401 - a fixture

SPEC = """\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
destinations:
  - cidr: 172.20.0.0/16
    masquerade: false
  - cidr: 172.30.0.0/16
    masquerade: false
cni:
  calico: {}
"""
FOREIGN = {"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
           "metadata": {"name": "admin-pool"},
           "spec": {"cidr": "172.20.5.0/24", "natOutgoing": True}}


def test_a_cluster_wide_conflict_writes_the_rest_and_counts_its_drift(
        server: EmulatedApiServer, tmp_path: Path) -> None:  # noqa: F811 - the fixture
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(SPEC)
    server.put(POOLS, FOREIGN)
    agent, _ = _agent(server, "node-a", spec_path, FakeClock())
    try:
        result = agent.run_pass()
        assert result.status == "failed"
        assert result.leader is True
        assert result.message.startswith("cluster-wide objects: conflict: foreign state "
                                          "conflicts with the spec: 1 wanted object(s)"), \
            result.message
        assert "172.20.0.0/16" in result.message
        assert [str(c) for c in result.applied if c.kind == "ippool"] == [
            "+ ippool k3snet-nonat-172-30-0-0-16 172.30.0.0/16 disabled blockSize=26 "
            "disableBGPExport"]
        names = sorted(p["metadata"]["name"] for p in server.objects(POOLS))
        assert names == ["admin-pool", "default-ipv4-ippool", "k3snet-nonat-172-30-0-0-16"]
        admin = server.get(POOLS, "admin-pool")
        assert admin is not None
        assert admin["spec"] == FOREIGN["spec"]
        assert agent.readiness()[0] is True  # the node's part converged
        # Drift of the rest, repaired beside the standing conflict, is drift.
        assert server.delete(POOLS, "k3snet-nonat-172-30-0-0-16")
        again = agent.run_pass()
        assert again.status == "failed"
        assert [c.kind for c in again.applied] == ["ippool"]
        assert again.drift == 1
        metrics = agent.metrics
        assert metrics is not None
        sample = metrics.registry.get_sample_value
        assert sample("k3snet_agent_drift_repairs_total") == 1
        assert sample("k3snet_agent_cluster_sync_failures_total", {"reason": "conflict"}) == 2
        # The foreign pool gone, the next pass writes the last pool and is ok.
        assert server.delete(POOLS, "admin-pool")
        done = agent.run_pass()
        assert done.status == "ok", done.message
        assert [str(c) for c in done.applied] == [
            "+ ippool k3snet-nonat-172-20-0-0-16 172.20.0.0/16 disabled blockSize=26 "
            "disableBGPExport"]
    finally:
        agent.shutdown()


def test_a_cluster_wide_conflict_beside_a_failed_node_apply_is_a_conflict_counted(
        server: EmulatedApiServer, tmp_path: Path) -> None:  # noqa: F811 - the fixture
    # The pass fails 'apply' (the node's part, said first), and foreign state blocks part
    # of the spec all the same: k3snet_agent_conflicts_total counts it, as it counts a
    # pass whose only failure is that conflict.
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(SPEC)
    server.put(POOLS, FOREIGN)
    agent, memory = _agent(server, "node-a", spec_path, FakeClock())
    try:
        memory.faults.fail_at(0)
        result = agent.run_pass()
        assert result.status == "failed"
        assert result.message.startswith("apply: "), result.message
        assert "cluster-wide objects: conflict: " in result.message
        metrics = agent.metrics
        assert metrics is not None
        sample = metrics.registry.get_sample_value
        assert sample("k3snet_agent_sync_failures_total", {"reason": "apply"}) == 1
        assert sample("k3snet_agent_cluster_sync_failures_total", {"reason": "conflict"}) == 1
        assert sample("k3snet_agent_conflicts_total") == 1
    finally:
        agent.shutdown()
