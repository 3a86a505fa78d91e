"""The agent says a CNI config change awaits its pods' restart, until they restarted.

Cilium reads ``cilium-config`` only when its agent starts: after the Lease holder changed
it, each pass's result (the Node annotation's message, the log line) says "restart
pending" with the DaemonSet and its pods still running since before, and
``k3snet_agent_restart_pending`` counts the DaemonSets; both go once every pod restarted,
although the ConfigMap (and so every change token) stayed as it was. Before, the pass
said "applied" then "in sync" while every node ran the old settings.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from k3snet.agent import Agent, AgentMetrics, AgentOptions, FileSpecSource, LeaderElector
from k3snet.agent._lease import LeaseSettings
from k3snet.agent._report import NodeReport
from k3snet.backends.cilium import CiliumBackend
from k3snet.backends.flannel import FlannelBackend
from k3snet.backends.group import BackendGroup
from k3snet.backends.memory import MemoryBackend
from k3snet.spec import Spec
from k3snet.testing.kube import AGENT_RESOURCES, EmulatedApiServer

from .desired import COMPILED

pytestmark = pytest.mark.cluster

SETTINGS = LeaseSettings("kube-system", "k3snet-cluster-writer", duration=15.0,
                         renew_deadline=10.0, retry_period=2.0)
SPEC = ("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\nbackends: [cilium]\n"
        "destinations: []\ncni:\n  cilium:\n    egressMasqueradeInterfaces: eth0\n")
LABELS = {"k8s-app": "cilium"}


class _Stepped(LeaderElector):
    def start(self) -> LeaderElector:
        return self


def _pod(name: str, created: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "kube-system", "labels": LABELS,
                         "creationTimestamp": created,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                                              "name": "cilium", "uid": "u"}]},
            "spec": {"containers": [{"name": "cilium-agent", "image": "x"}]}}


def _agent(srv: EmulatedApiServer, path: Path) -> Agent:
    memory = MemoryBackend(capabilities=("route", "sysctl", "nat", "forward"))
    api = srv.api_client()

    def make_backend(spec: Spec) -> BackendGroup:
        return BackendGroup([memory, CiliumBackend(api_client=api, timeout=10.0)])

    def elector(on_change: Callable[[bool], None]) -> LeaderElector:
        return _Stepped(api, "node-a", SETTINGS, on_change=on_change, clock=lambda: 1000.0,
                        random_fraction=lambda: 0.0)

    return Agent(FileSpecSource(path), make_backend,
                 COMPILED,
                 AgentOptions("node-a", interval=1.0), metrics=AgentMetrics(),
                 elector_factory=elector)


def test_the_lease_holder_says_restart_pending_until_cilium_s_pods_restarted(
        tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    resources = (*AGENT_RESOURCES, "apps/v1/daemonsets", "v1/pods")
    with EmulatedApiServer(resources=resources) as srv:
        srv.put("v1/nodes", {"metadata": {"name": "node-a"}})
        srv.put("v1/configmaps", {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cilium-config", "namespace": "kube-system"},
            "data": {"routing-mode": "tunnel", "enable-ipv4-masquerade": "true"}})
        srv.put("apps/v1/daemonsets", {
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "cilium", "namespace": "kube-system"},
            "spec": {"selector": {"matchLabels": LABELS},
                     "template": {"metadata": {"labels": LABELS},
                                  "spec": {"containers": []}}}})
        srv.put("v1/pods", _pod("cilium-x", "2020-01-01T00:00:00Z"))
        agent = _agent(srv, path)
        assert agent.metrics is not None
        first = agent.run_pass()
        assert first.status == "ok"
        assert first.applied
        assert ("restart pending: DaemonSet kube-system/cilium" in first.message)
        assert "1 pod(s) started before the change: cilium-x" in first.message
        # The command doing it, as `plan` prints it after its `!! restart pending` line.
        assert first.message.endswith(
            "cilium-x): kubectl -n kube-system rollout restart daemonset/cilium")
        assert agent.metrics.registry.get_sample_value("k3snet_agent_restart_pending") == 1
        assert first.restart_pending == ("DaemonSet kube-system/cilium",)
        again = agent.run_pass()  # nothing to apply: still not in force
        assert not again.applied
        assert "in sync: no changes; restart pending: DaemonSet kube-system/cilium" in (
            again.message)
        srv.put("v1/pods", _pod("cilium-x", "2999-01-01T00:00:00Z"))  # restarted
        done = agent.run_pass()
        assert done.message == "in sync: no changes"
        assert done.restart_pending == ()
        assert agent.metrics.registry.get_sample_value("k3snet_agent_restart_pending") == 0


def test_the_node_annotation_names_the_pending_restarts_only_while_some_is() -> None:
    pending = NodeReport("ok", "in sync", None, 1, True, ("DaemonSet kube-system/cilium",))
    assert pending.to_dict()["restart_pending"] == ["DaemonSet kube-system/cilium"]
    assert "restart_pending" not in NodeReport("ok", "in sync", None, 1, True).to_dict()


def test_a_node_s_flannel_file_change_is_said_on_that_node_in_the_pass_that_made_it_alone(
        tmp_path: Path) -> None:
    # docs/agent.md said restart_pending is the Lease holder's alone: a node's flannel
    # file (K3s' --flannel-conf, no Lease here) has it in the pass that changed the file,
    # and not after (no cluster object shows when K3s started).
    conf = tmp_path / "flannel.json"
    conf.write_text('{"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan"}}\n')
    path = tmp_path / "spec.yaml"
    path.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\nbackends: [flannel]\n"
                    "destinations: []\ncni:\n  allowDisruptive: true\n  flannel:\n"
                    "    backend: {type: vxlan, options: {MTU: 1400}}\n")
    memory = MemoryBackend(capabilities=("route", "sysctl", "nat", "forward"))
    flannel = FlannelBackend(path=conf, allow_disruptive=True)
    agent = Agent(FileSpecSource(path), lambda spec: BackendGroup([memory, flannel]),
                  COMPILED, AgentOptions("node-a", interval=1.0), metrics=AgentMetrics())
    assert agent.metrics is not None
    first = agent.run_pass()
    assert first.applied
    assert first.restart_pending == ("K3s (the k3s or k3s-agent service on the node)",)
    assert "k3snet cannot tell when that is done" in first.message
    assert agent.metrics.registry.get_sample_value("k3snet_agent_restart_pending") == 1
    again = agent.run_pass()
    assert (again.message, again.restart_pending) == ("in sync: no changes", ())
    assert agent.metrics.registry.get_sample_value("k3snet_agent_restart_pending") == 0
