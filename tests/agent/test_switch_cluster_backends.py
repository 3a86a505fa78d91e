"""The agent's spec no longer naming ``calico`` (``backends:`` changed): the Lease holder
says, once, that calico holds k3snet's IPPools and names the ``k3snet destroy`` removing
them; the other nodes do not list the cluster's pools for it, and nothing is removed.
Before, the look for what a switch of backends left went through the node backends only:
the IPPool k3snet created stayed, unsaid, and Calico kept NATting by it."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

import k3snet.backends.flannel as flannel_module
from k3snet._kept import read_input as read_kept
from k3snet.agent import Agent, AgentMetrics, AgentOptions, FileSpecSource, LeaderElector
from k3snet.agent._lease import LeaseSettings
from k3snet.backends.calico import CalicoBackend
from k3snet.backends.discover import _flannel_file_left
from k3snet.backends.flannel import FlannelBackend
from k3snet.backends.group import BackendGroup
from k3snet.backends.memory import MemoryBackend
from k3snet.cli import main
from k3snet.spec import Spec
from k3snet.testing.kube import AGENT_RESOURCES, CALICO_RESOURCES, EmulatedApiServer

from .desired import COMPILED

pytestmark = pytest.mark.cluster

POOLS = "crd.projectcalico.org/v1/ippools"
SETTINGS = LeaseSettings("kube-system", "k3snet-cluster-writer", duration=15.0,
                         renew_deadline=10.0, retry_period=2.0)
SPEC = """\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
destinations:
  - cidr: 192.168.2.0/24
  - cidr: 172.20.0.0/16
    masquerade: false
cni:
  calico: {}
backends: {BACKENDS}
"""


class _Stepped(LeaderElector):
    def start(self) -> LeaderElector:
        return self


def _agent(srv: EmulatedApiServer, name: str, path: Path, flannel: Path | None = None,
           spec_warnings: Callable[[Spec, BackendGroup], Sequence[str]] | None = None
           ) -> Agent:
    memory = MemoryBackend(capabilities=("route", "sysctl", "nat", "forward"))
    api = srv.api_client()

    def make_backend(spec: Spec) -> BackendGroup:
        calico = [CalicoBackend(api_client=api, api="crd")] if "calico" in spec.backends else []
        files = ([FlannelBackend(path=flannel, allow_disruptive=True)]
                 if flannel is not None and "flannel" in spec.backends else [])
        return BackendGroup([memory, *calico, *files])

    def elector(on_change: Callable[[bool], None]) -> LeaderElector:
        return _Stepped(api, name, SETTINGS, on_change=on_change, clock=lambda: 1000.0,
                        random_fraction=lambda: 0.0)

    return Agent(FileSpecSource(path), make_backend,
                 COMPILED,
                 AgentOptions(name, interval=1.0), metrics=AgentMetrics(),
                 elector_factory=elector, spec_warnings=spec_warnings)


def _put_calicos_pool(srv: EmulatedApiServer) -> None:
    """Calico's own pod pool, the one its install made."""
    srv.put(POOLS, {"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
                    "metadata": {"name": "default-ipv4-ippool"},
                    "spec": {"cidr": "10.42.0.0/16", "natOutgoing": True}})


def _pool_lists(srv: EmulatedApiServer) -> int:
    return sum(1 for m, p, _ in srv.requests() if m == "GET" and p.endswith("/ippools"))


def test_the_lease_holder_names_the_ippools_of_calico_dropped_from_the_spec_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.replace("{BACKENDS}", "[netlink, nftables, calico]"))
    with EmulatedApiServer(resources=CALICO_RESOURCES + AGENT_RESOURCES) as srv:
        for name in ("node-a", "node-b"):
            srv.put("v1/nodes", {"metadata": {"name": name}})
        _put_calicos_pool(srv)
        a, b = _agent(srv, "node-a", path), _agent(srv, "node-b", path)
        assert (a.run_pass().status, b.run_pass().status) == ("ok", "ok")
        assert a.is_leader
        assert not b.is_leader
        assert len(srv.objects(POOLS)) == 2  # k3snet's disabled pool beside Calico's
        path.write_text(SPEC.replace("{BACKENDS}", "[netlink, nftables]"))
        caplog.set_level(logging.WARNING, logger="k3snet")
        lists = _pool_lists(srv)
        assert b.run_pass().status == "ok"
        assert _pool_lists(srv) == lists  # not the holder: no look through the cluster
        assert "calico holds" not in caplog.text
        assert a.run_pass().status == "ok"
        said = [r.getMessage() for r in caplog.records if "calico holds" in r.getMessage()]
        assert len(said) == 1, said
        assert said[0].startswith("spec generation 2: calico holds 1 of k3snet's objects in "
                                  "the cluster, and no backend in use is calico")
        assert "`k3snet destroy --backend calico` removes them" in said[0]
        assert len(srv.objects(POOLS)) == 2  # said, not removed
        a.run_pass()
        assert len([r for r in caplog.records if "calico holds" in r.getMessage()]) == 1


def test_the_agent_command_reads_no_cluster_backend_its_spec_never_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `k3snet agent` beside calico: its spec's warnings look for what a switch of node
    # backends left, not through cilium or flannel (every node would read their
    # ConfigMaps at every new spec, each a 403 under the RBAC rendered for the spec).
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    path = tmp_path / "spec.yaml"
    path.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                    "cluster: {podCIDRs: [10.42.0.0/16]}\ndestinations:\n"
                    "  - cidr: 192.168.2.0/24\n    masquerade: false\ncni:\n  calico: {}\n")
    crd = tuple(r for r in CALICO_RESOURCES if r.startswith("crd."))  # api=auto: the CRDs
    with EmulatedApiServer(resources=crd + AGENT_RESOURCES) as srv:
        _put_calicos_pool(srv)
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "lab",
            "clusters": [{"name": "lab", "cluster": {"server": srv.url}}],
            "users": [{"name": "u", "user": {}}],
            "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "u"}}]}))
        assert main(["agent", "-f", str(path), "--backend", "calico", "--backend-opt",
                     f"calico.kubeconfig={kubeconfig}", "--no-kube", "--no-facts", "--once",
                     "--listen", "none"]) == 0
        paths = [p for m, p, _ in srv.requests()]
        assert any(p.endswith("/ippools") for p in paths), paths  # its own backend's
        assert [p for p in paths if "/configmaps" in p] == []


NET_CONF = '{\n  "Network": "10.42.0.0/16",\n  "Backend": {"Type": "vxlan"}\n}\n'
FLANNEL_SPEC = SPEC.replace("cni:\n  calico: {}\n",
                            "cni:\n  calico: {}\n  flannel: {backend: {type: host-gw}}\n")


def _node_look(conf: Path) -> Callable[[Spec, BackendGroup], Sequence[str]]:
    """The spec's warnings of a node whose environment names flannel's file ``conf``
    ($K3SNET_FLANNEL_CONF): the look for what a switch of backends left in it."""

    def look(spec: Spec, group: BackendGroup) -> list[str]:
        return _flannel_file_left([m.backend for m in group.members], {"path": conf}, ())

    return look


def test_every_node_names_the_keys_k3snet_set_in_its_own_flannel_file_dropped_from_the_spec(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # flannel through each node's own file (its path: a node's, not the cluster's) dropped
    # from the spec beside calico: every node's file keeps k3snet's keys, and each node
    # says so of its own. Before, the look through a dropped backend was the Lease
    # holder's alone, so every other node's file went unsaid (and the holder's was said
    # to be "in the cluster").
    path = tmp_path / "spec.yaml"
    path.write_text(FLANNEL_SPEC.replace("{BACKENDS}", "[netlink, nftables, calico, flannel]"))
    files = {name: tmp_path / name / "net-conf.json" for name in ("node-a", "node-b")}
    with EmulatedApiServer(resources=CALICO_RESOURCES + AGENT_RESOURCES) as srv:
        _put_calicos_pool(srv)
        for name, conf in files.items():
            srv.put("v1/nodes", {"metadata": {"name": name}})
            conf.parent.mkdir()
            conf.write_text(NET_CONF)
        a, b = (_agent(srv, name, path, flannel=files[name]) for name in files)
        assert (a.run_pass().status, b.run_pass().status) == ("ok", "ok")
        assert not b.is_leader
        assert all("host-gw" in conf.read_text() for conf in files.values())
        path.write_text(FLANNEL_SPEC.replace("{BACKENDS}", "[netlink, nftables, calico]"))
        caplog.set_level(logging.WARNING, logger="k3snet")
        assert b.run_pass().status == "ok"
        said = [r.getMessage() for r in caplog.records if "flannel holds" in r.getMessage()]
        assert len(said) == 1, caplog.text
        assert said[0].startswith(f"spec generation 2: flannel holds 1 of k3snet's objects "
                                  f"in {files['node-b']}, and no backend in use is flannel")
        assert (f"`k3snet destroy --backend flannel --backend-opt "
                f"flannel.path={files['node-b']}` removes them") in said[0]
        assert "calico holds" not in caplog.text  # not the holder: not the cluster's
        assert "host-gw" in files["node-b"].read_text()  # said, not removed


def test_the_flannel_file_of_the_agent_s_environment_dropped_is_said_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # $K3SNET_FLANNEL_CONF names the file the spec's flannel backend wrote: once the spec
    # drops flannel, both the spec's warnings (the node look, reading that file) and the
    # look through the dropped backend name it; the agent logs it once.
    path = tmp_path / "spec.yaml"
    path.write_text(FLANNEL_SPEC.replace("{BACKENDS}", "[netlink, nftables, calico, flannel]"))
    conf = tmp_path / "net-conf.json"
    conf.write_text(NET_CONF)

    with EmulatedApiServer(resources=CALICO_RESOURCES + AGENT_RESOURCES) as srv:
        _put_calicos_pool(srv)
        srv.put("v1/nodes", {"metadata": {"name": "node-a"}})
        agent = _agent(srv, "node-a", path, flannel=conf, spec_warnings=_node_look(conf))
        assert agent.run_pass().status == "ok"
        path.write_text(FLANNEL_SPEC.replace("{BACKENDS}", "[netlink, nftables, calico]"))
        caplog.set_level(logging.WARNING, logger="k3snet")
        assert agent.run_pass().status == "ok"
    said = [r.getMessage() for r in caplog.records if "flannel holds" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith(f"spec generation 2: flannel holds 1 of k3snet's objects in "
                              f"{conf}")


def test_a_flannel_file_of_the_agent_s_environment_dropped_and_unreadable_is_said_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # As above, the file no longer readable (not UTF-8): both looks failed on it, and the
    # agent logged "flannel: could not look ... in PATH" twice at the new spec, where the
    # keys found are said once.
    path = tmp_path / "spec.yaml"
    path.write_text(FLANNEL_SPEC.replace("{BACKENDS}", "[netlink, nftables, calico, flannel]"))
    conf = tmp_path / "net-conf.json"
    conf.write_text(NET_CONF)

    with EmulatedApiServer(resources=CALICO_RESOURCES + AGENT_RESOURCES) as srv:
        _put_calicos_pool(srv)
        srv.put("v1/nodes", {"metadata": {"name": "node-a"}})
        agent = _agent(srv, "node-a", path, flannel=conf, spec_warnings=_node_look(conf))
        assert agent.run_pass().status == "ok"
        conf.write_bytes(b"\xff not UTF-8")
        path.write_text(FLANNEL_SPEC.replace("{BACKENDS}", "[netlink, nftables, calico]"))
        caplog.set_level(logging.WARNING, logger="k3snet")
        assert agent.run_pass().status == "ok"
        said = [r.getMessage() for r in caplog.records if "could not look" in r.getMessage()]
        assert len(said) == 1, said
        assert said[0].startswith(f"flannel: could not look for k3snet's objects a switch "
                                  f"of backends may have left in {conf} (")
        # The next new spec's node look says it again: the filter saying it once went
        # with the spec's looks, and swallowed nothing after them.
        caplog.clear()
        path.write_text(FLANNEL_SPEC.replace("{BACKENDS}", "[netlink, nftables, calico]")
                        .replace("172.20.0.0/16", "172.21.0.0/16"))
        assert agent.run_pass().status == "ok"
        assert agent.generation == 3
    said = [r.getMessage() for r in caplog.records if "could not look" in r.getMessage()]
    assert len(said) == 1, said


def test_a_flannel_file_both_looks_of_a_new_spec_go_through_is_read_once_and_said_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The look through the dropped flannel backend and the spec's node look (its file of
    # $K3SNET_FLANNEL_CONF) go through one file: the second look warns of what the first
    # read found. Before, each read it (a filter then hid the second "could not look").
    path = tmp_path / "spec.yaml"
    path.write_text(FLANNEL_SPEC.replace("{BACKENDS}", "[netlink, nftables, calico, flannel]"))
    conf = tmp_path / "net-conf.json"
    conf.write_text(NET_CONF)
    reads: list[Path] = []
    real_read = read_kept  # what the flannel backend reads with, patched there below

    def read_input(file: Path, limit: int) -> bytes:
        reads.append(Path(file))
        return real_read(file, limit)

    monkeypatch.setattr(flannel_module, "read_input", read_input)
    with EmulatedApiServer(resources=CALICO_RESOURCES + AGENT_RESOURCES) as srv:
        _put_calicos_pool(srv)
        srv.put("v1/nodes", {"metadata": {"name": "node-a"}})
        agent = _agent(srv, "node-a", path, flannel=conf, spec_warnings=_node_look(conf))
        assert agent.run_pass().status == "ok"
        path.write_text(FLANNEL_SPEC.replace("{BACKENDS}", "[netlink, nftables, calico]"))
        caplog.set_level(logging.WARNING, logger="k3snet")
        reads.clear()
        assert agent.run_pass().status == "ok"
        assert reads == [conf]
        said = [r.getMessage() for r in caplog.records if "flannel holds" in r.getMessage()]
        assert len(said) == 1, said
        # The spec's own warning, in its words (the destroy with the file's path).
        assert said[0].startswith(f"spec generation 2: flannel holds 1 of k3snet's objects "
                                  f"in {conf}")
        assert f"--backend-opt flannel.path={conf}` removes them" in said[0]
        # A later new spec (flannel still dropped) looks again: the node look alone.
        reads.clear()
        path.write_text(FLANNEL_SPEC.replace("{BACKENDS}", "[netlink, nftables, calico]")
                        .replace("172.20.0.0/16", "172.21.0.0/16"))
        assert agent.run_pass().status == "ok"
        assert reads == [conf]
