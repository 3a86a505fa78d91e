"""The cilium backend reads Cilium's DaemonSet: is the ip-masq-agent ConfigMap mounted?

Cilium's Helm chart mounts the ``ip-masq-agent`` ConfigMap into the ``cilium-agent``
container (``/etc/config``, its key ``config`` as the file ``ip-masq-agent``) only with
``ipMasqAgent.enabled=true``. Without the mount the agent reads no file and uses its
default non-masquerade list (RFC 1918 and more), whatever the ConfigMap says: k3snet
judged the ConfigMap it wrote, and said converged, while pods reached 192.168.0.0/16
unmasqueraded.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pytest

from k3snet.backends import kit
from k3snet.backends.cilium import CiliumBackend
from k3snet.backends.cilium_mount import agent_directory_missing, agent_file_mounted
from k3snet.backends.registry import backend_options, option_problems
from k3snet.cli import main
from k3snet.converge import compile_for, restarts_needed
from k3snet.errors import ApplyError, ModelError, PlanError, SpecError
from k3snet.kube import KubeApiError
from k3snet.model.cilium import CiliumConfig
from k3snet.planner import plan
from k3snet.render.manifests import render_manifests
from k3snet.spec import Destination, Spec, check_backend_options, seed_spec
from k3snet.testing.kube import EmulatedApiServer
from tests.cluster.test_cilium_backend import (
    CILIUM_NODES,
    HELM_K3S_DATA,
    NODE_CONFIGS_V2,
    NODES,
    _cilium_config,
    _cilium_node,
    _data,
    _ip_masq_agent,
    _node,
    _node_config,
)
from tests.cluster.workloads import CONFIGMAPS, DAEMONSETS, PODS, configmap, daemonset_pod

pytestmark = pytest.mark.cluster

WHERE = "DaemonSet kube-system/cilium"

# What Cilium's Helm chart renders for eBPF masquerading with its ip-masq-agent.
EBPF_AGENT = {**HELM_K3S_DATA, "enable-bpf-masquerade": "true", "enable-ip-masq-agent": "true"}

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"


def cilium_daemonset(*, ip_masq_agent: bool, name: str = "cilium") -> dict[str, Any]:
    """The part of the chart's agent DaemonSet that matters, with some mounts around it;
    with ``ip_masq_agent`` (Helm ``ipMasqAgent.enabled=true``) its volume and mount."""
    mounts: list[dict[str, Any]] = [
        {"name": "cilium-run", "mountPath": "/var/run/cilium"},
        {"name": "clustermesh-secrets", "mountPath": "/var/lib/cilium/clustermesh",
         "readOnly": True},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "cilium-run", "hostPath": {"path": "/var/run/cilium",
                                            "type": "DirectoryOrCreate"}},
        {"name": "clustermesh-secrets", "projected": {"defaultMode": 256, "sources": [
            {"secret": {"name": "cilium-clustermesh", "optional": True}}]}},
    ]
    if ip_masq_agent:
        mounts.append({"name": "ip-masq-agent", "mountPath": "/etc/config", "readOnly": True})
        volumes.append({"name": "ip-masq-agent", "configMap": {
            "name": "ip-masq-agent", "optional": True,
            "items": [{"key": "config", "path": "ip-masq-agent"}]}})
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": "kube-system",
                     "labels": {"k8s-app": "cilium"}},
        "spec": {"selector": {"matchLabels": {"k8s-app": "cilium"}}, "template": {
            "metadata": {"labels": {"k8s-app": "cilium"}},
            "spec": {
                "containers": [{"name": "cilium-agent", "image": "quay.io/cilium/cilium:v1.18.4",
                                "command": ["cilium-agent"],
                                "args": ["--config-dir=/tmp/cilium/config-map"],
                                "volumeMounts": mounts}],
                "initContainers": [{"name": "config", "image": "quay.io/cilium/cilium:v1.18.4"}],
                "volumes": volumes}}},
    }


def _spec(*, cidrs: list[str] | None = None) -> Spec:
    """The seed spec (192.168.2.0/24 masqueraded), turning on Cilium's eBPF ip-masq-agent
    and giving it ``cidrs`` (none: k3snet writes no ip-masq-agent key)."""
    data = seed_spec().to_dict()
    data["backends"] = ["cilium"]
    data["cni"] = {"cilium": {"bpfMasquerade": True, "ipMasqAgent": True}}
    if cidrs is not None:
        data["cni"]["cilium"]["nonMasqueradeCIDRs"] = cidrs
    return Spec.from_dict(data)


@pytest.fixture
def cilium(api_server: EmulatedApiServer) -> EmulatedApiServer:
    api_server.put(CONFIGMAPS, _cilium_config(EBPF_AGENT))
    return api_server


@pytest.fixture
def backend(cilium: EmulatedApiServer, api_client: Any) -> CiliumBackend:
    return CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)


def _reasons(backend: CiliumBackend, spec: Spec) -> list[str]:
    return [str(n.reason) for n in plan(backend.observe(), compile_for(backend, spec)).conflicts]


def test_nonmasquerade_cidrs_written_into_an_unmounted_configmap_are_not_converged(
    cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # The spec keeps only 10.0.0.0/8 from masquerading; Cilium, reading no file, keeps
    # its default list, 192.168.0.0/16 in it: pods reach 192.168.2.0/24 unmasqueraded.
    cilium.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=False))
    spec = _spec(cidrs=["10.0.0.0/8"])
    (reason,) = _reasons(backend, spec)
    assert ("k3snet writes nonMasqueradeCIDRs into the ip-masq-agent ConfigMap in "
            "kube-system, which Cilium's agents do not read") in reason
    assert f"{WHERE} has no volume of the ConfigMap ip-masq-agent" in reason
    assert "Helm ipMasqAgent.enabled=true" in reason
    assert ("192.168.2.0/24 is inside 192.168.0.0/16, from Cilium's default list (the "
            "ip-masq-agent ConfigMap is not mounted") in reason
    # Written, it stays not converged: the next plan says the same.
    backend.apply(plan(backend.observe(), compile_for(backend, spec)))
    assert "nonMasqueradeCIDRs" in _data(cilium, "ip-masq-agent")["config"]
    assert _reasons(backend, spec) == [reason]
    # Helm's ipMasqAgent.enabled=true mounts it: Cilium reads the list k3snet wrote.
    cilium.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=True))
    assert _reasons(backend, spec) == []


def test_a_list_in_an_unmounted_configmap_is_not_what_cilium_judges_by(
    cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # Someone else's ConfigMap leaves 192.168.0.0/16 out, and no k3snet key is written;
    # unmounted, Cilium's default list holds it still.
    cilium.put(CONFIGMAPS, _ip_masq_agent('{"nonMasqueradeCIDRs":["10.0.0.0/8"]}'))
    cilium.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=False))
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.ip_masq_agent_unmounted == (
        f"{WHERE} has no volume of the ConfigMap ip-masq-agent")
    assert "[ip-masq-agent ConfigMap not mounted: " in foreign.describe()
    (reason,) = _reasons(backend, _spec())
    assert "from Cilium's default list (the ip-masq-agent ConfigMap is not mounted" in reason
    assert "mount the ip-masq-agent ConfigMap into the cilium DaemonSet's agent" in reason
    cilium.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=True))
    assert _reasons(backend, _spec()) == []


def test_an_exemption_in_an_unmounted_configmap_says_to_mount_it(
    cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    cilium.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=False))
    data = _spec(cidrs=["10.0.0.0/8", "8.8.8.0/24"]).to_dict()
    data["destinations"].append({"cidr": "8.8.8.0/24", "gateway": "192.168.1.1",
                                 "masquerade": False})
    reasons = " ".join(_reasons(backend, Spec.from_dict(data)))
    assert ("Cilium masquerades pods' traffic to 8.8.8.0/24, which the spec exempts; the "
            f"ip-masq-agent ConfigMap is not mounted ({WHERE} has no volume") in reasons


def test_a_mounted_configmap_without_its_key_is_cilium_s_default_list(
    cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # Mounted (optional: true), a ConfigMap without the key gives the agent no file:
    # the default list, as an empty one does, and as no ConfigMap at all does.
    cilium.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=True))
    for agent in (configmap("kube-system", "ip-masq-agent", {"other": "x"}),
                  _ip_masq_agent("")):
        cilium.put(CONFIGMAPS, agent)
        (foreign,) = backend.observe().foreign
        assert isinstance(foreign, CiliumConfig)
        assert foreign.ip_masq_agent is None
        assert foreign.ip_masq_agent_unmounted is None
        (reason,) = _reasons(backend, _spec())
        assert "from Cilium's default list (the ip-masq-agent config is empty)" in reason


@pytest.mark.parametrize("status", [403, 404])
def test_a_daemonset_not_to_be_read_is_a_warning_not_a_refusal(
    status: int, cilium: EmulatedApiServer, backend: CiliumBackend,
    caplog: pytest.LogCaptureFixture
) -> None:
    # Another name (Cilium installed otherwise), or a Role without get on it: the
    # ConfigMap is judged as before, and the log says it is not checked.
    if status == 403:
        cilium.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=False))
        cilium.fail(403, plural="daemonsets", times=None)
    with caplog.at_level(logging.WARNING, logger="k3snet.backends.cilium"):
        assert _reasons(backend, _spec(cidrs=["10.0.0.0/8"])) == []
        (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.ip_masq_agent_unmounted is None
    (warned,) = {r.getMessage() for r in caplog.records if "is not checked" in r.getMessage()}
    assert "Helm ipMasqAgent.enabled=true" in warned
    assert ("daemonset option" if status == 404 else "grant get on it") in warned


def test_the_daemonset_option_names_cilium_s_agent_daemonset(
    cilium: EmulatedApiServer, api_client: Any
) -> None:
    cilium.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=False, name="cilium-agent"))
    named = CiliumBackend(api_client=api_client, daemonset="cilium-agent")
    (foreign,) = named.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.ip_masq_agent_unmounted == (
        "DaemonSet kube-system/cilium-agent has no volume of the ConfigMap ip-masq-agent")
    assert CiliumBackend.check_options({"daemonset": "Cilium/x"})
    with pytest.raises(SpecError, match=r"backends\.cilium\.daemonset: 'Cilium/x' is not a "
                                        "valid DaemonSet name"):
        render_manifests(Spec(destinations=[Destination("192.168.2.0/24")],
                              backends=["cilium"],
                              backend_options={"cilium": {"daemonset": "Cilium/x"}}))


def test_a_bad_daemonset_option_is_named_as_the_daemonset_option_not_a_configmap(
    capsys: pytest.CaptureFixture[str]
) -> None:
    why = ("daemonset 'Bad_Name' is not a valid DaemonSet name (a DNS-1123 subdomain")
    ((option, message),) = CiliumBackend.check_options({"daemonset": "Bad_Name"})
    assert option == "daemonset"
    assert message.startswith(why)
    assert "configmap:" not in message
    spec = Spec(destinations=[Destination("192.168.2.0/24")], backends=["cilium"],
                backend_options={"cilium": {"daemonset": "Bad_Name"}})
    with pytest.raises(SpecError) as info:
        check_backend_options(spec, backend_options, values=option_problems)
    ((path, said),) = [(p.path, p.message) for p in info.value.problems]
    assert path == "backends.cilium.daemonset"
    assert why in said
    assert "configmap:" not in said
    with pytest.raises(ModelError, match=r"^daemonset 'Bad_Name' is not a valid DaemonSet"):
        CiliumBackend(api_client=object(), daemonset="Bad_Name")
    assert main(["plan", "-f", str(SEED), "--backend", "cilium", "--backend-opt",
                 "cilium.daemonset=Bad_Name", "--no-facts"]) == 1
    err = capsys.readouterr().err
    assert why in err
    assert "configmap:" not in err


def test_a_mount_path_of_the_cluster_s_is_one_printable_line(
    cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    odd = cilium_daemonset(ip_masq_agent=True)
    _pod(odd)["containers"][0]["volumeMounts"][-1]["mountPath"] = "/etc/x\n! forged\x1b[2J"
    cilium.put(DAEMONSETS, odd)
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    why = foreign.ip_masq_agent_unmounted
    assert why is not None
    assert "(it is at /etc/x" in why
    assert why.isprintable()


def _pod(ds: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = ds["spec"]["template"]["spec"]
    return pod


def _mounted(ds: dict[str, Any], path: str = "/etc/config/ip-masq-agent") -> tuple[Any, str]:
    return agent_file_mounted(ds, WHERE, "ip-masq-agent", path=path)


def test_the_helm_mount_is_the_agent_s_file() -> None:
    assert _mounted(cilium_daemonset(ip_masq_agent=True)) == (True, "")
    assert _mounted(cilium_daemonset(ip_masq_agent=False)) == (
        False, f"{WHERE} has no volume of the ConfigMap ip-masq-agent")


def test_a_mount_elsewhere_or_of_another_key_is_not_the_agent_s_file() -> None:
    elsewhere = cilium_daemonset(ip_masq_agent=True)
    _pod(elsewhere)["containers"][0]["volumeMounts"][-1]["mountPath"] = "/etc/ipmasq"
    assert _mounted(elsewhere) == (False, (
        f"the cilium-agent container of {WHERE} does not have the key config of the "
        "ConfigMap ip-masq-agent at /etc/config/ip-masq-agent (it is at "
        "/etc/ipmasq/ip-masq-agent)"))
    # Without items, each key is a file of its own name: /etc/config/config.
    whole = cilium_daemonset(ip_masq_agent=True)
    del _pod(whole)["volumes"][-1]["configMap"]["items"]
    assert _mounted(whole)[0] is False
    assert _mounted(whole, "/etc/config/config") == (True, "")
    other_key = cilium_daemonset(ip_masq_agent=True)
    _pod(other_key)["volumes"][-1]["configMap"]["items"][0]["key"] = "masq"
    assert _mounted(other_key) == (
        False, f"no volume of {WHERE} holds the key config of the ConfigMap ip-masq-agent")
    unmounted = cilium_daemonset(ip_masq_agent=True)
    _pod(unmounted)["containers"][0]["volumeMounts"].pop()
    assert _mounted(unmounted)[0] is False


def test_a_projected_volume_and_a_subpath_mount_are_the_agent_s_file() -> None:
    projected = cilium_daemonset(ip_masq_agent=True)
    volume = _pod(projected)["volumes"][-1]
    volume["projected"] = {"sources": [{"secret": {"name": "x"}},
                                       {"configMap": volume.pop("configMap")}]}
    assert _mounted(projected) == (True, "")
    sub = cilium_daemonset(ip_masq_agent=True)
    _pod(sub)["containers"][0]["volumeMounts"][-1].update(
        mountPath="/etc/config/ip-masq-agent", subPath="ip-masq-agent")
    assert _mounted(sub) == (True, "")
    # A path of cilium-config's ip-masq-agent-config-path elsewhere is not mounted there.
    assert _mounted(copy.deepcopy(sub), "/etc/other/ip-masq-agent")[0] is False


def test_pods_without_a_cilium_agent_container_are_not_judged() -> None:
    renamed = cilium_daemonset(ip_masq_agent=False)
    _pod(renamed)["containers"][0]["name"] = "agent"
    mounted, why = _mounted(renamed)
    assert mounted is None
    assert "has no cilium-agent container" in why
    assert _mounted({"spec": None})[0] is None


def test_enabling_the_ip_masq_agent_with_nothing_at_etc_config_is_refused(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    # Helm without ipMasqAgent.enabled=true mounts nothing at /etc/config, which Cilium's
    # image lacks: its ip-masq-agent fails to watch that directory, and every agent
    # exits at its next start ("failed to add \"/etc/config\" dir to fsnotify watcher").
    # k3snet judged the default list there, and wrote enable-ip-masq-agent: "true".
    api_server.put(CONFIGMAPS, _cilium_config(HELM_K3S_DATA))
    api_server.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=False))
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    spec = _spec()
    # The ip-masq-agent off, observe does not read the DaemonSet: the check of a plan
    # turning it on does.
    observed = backend.observe()
    (refused,) = backend.check(plan(observed, compile_for(backend, spec)))
    assert refused.startswith("cilium backend refuses the plan, nothing was changed:\n  "
                              "enable-ip-masq-agent: true where the cilium-agent container "
                              f"has no /etc/config (nothing mounted there: {WHERE} has no "
                              "volume of the ConfigMap ip-masq-agent)")
    assert "Helm ipMasqAgent.enabled=true" in refused
    assert "every Cilium agent would refuse to start with it" in refused
    # Applied anyway (--allow-conflicts), and without an observe before it: refused too.
    fresh = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    with pytest.raises(PlanError, match="has no /etc/config"):
        fresh.apply(plan(observed, compile_for(fresh, spec)))
    assert "enable-ip-masq-agent" not in _data(api_server, "cilium-config")
    # Something at /etc/config (another ConfigMap): the agent starts, with its default
    # list (the file is not there); mounted as Helm does: it reads the file.
    elsewhere = cilium_daemonset(ip_masq_agent=True)
    _pod(elsewhere)["volumes"][-1]["configMap"]["name"] = "other"
    for ds in (elsewhere, cilium_daemonset(ip_masq_agent=True)):
        api_server.put(DAEMONSETS, ds)
        assert backend.check(plan(backend.observe(), compile_for(backend, spec))) == ()
    # Turned on by hand (kubectl edit, Helm's values): observe reads the DaemonSet, and a
    # spec expecting masquerading under it, with nothing at /etc/config, is a conflict.
    api_server.put(CONFIGMAPS, _cilium_config(EBPF_AGENT))
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert not foreign.ip_masq_agent_no_directory
    api_server.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=False))
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.ip_masq_agent_no_directory
    assert _reasons(backend, spec)[0].startswith(
        "enable-ip-masq-agent: true where the cilium-agent container has no /etc/config")


def test_only_nothing_around_etc_config_is_no_directory_for_the_file() -> None:
    def missing(ds: dict[str, Any], path: str = "/etc/config/ip-masq-agent") -> bool:
        return agent_directory_missing(ds, path)

    assert missing(cilium_daemonset(ip_masq_agent=False))
    assert not missing(cilium_daemonset(ip_masq_agent=True))
    for at in ("/etc/config/", "/etc/config/sub", "/etc"):  # at it, inside it, around it
        ds = cilium_daemonset(ip_masq_agent=True)
        _pod(ds)["containers"][0]["volumeMounts"][-1]["mountPath"] = at
        assert not missing(ds), at
    # Another directory may be in Cilium's image; pods without the agent: not judged.
    assert not missing(cilium_daemonset(ip_masq_agent=False), "/tmp/ip-masq-agent")
    renamed = cilium_daemonset(ip_masq_agent=False)
    _pod(renamed)["containers"][0]["name"] = "agent"
    assert not missing(renamed)


@pytest.mark.parametrize("status", [403, 404])
def test_a_daemonset_not_to_be_read_is_warned_of_only_where_the_ip_masq_agent_is_on(
    status: int, api_server: EmulatedApiServer, api_client: Any,
    caplog: pytest.LogCaptureFixture
) -> None:
    # Cilium's iptables masquerading, a spec without the ip-masq-agent: whether the
    # DaemonSet mounts its ConfigMap does not matter, and a Role of an earlier k3snet
    # (no get on the DaemonSet) warned of it on every start.
    api_server.put(CONFIGMAPS, _cilium_config(HELM_K3S_DATA))
    if status == 403:
        api_server.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=False))
        api_server.fail(403, plural="daemonsets", times=None)
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    data = seed_spec().to_dict()
    data["backends"] = ["cilium"]
    plain = Spec.from_dict(data)
    with caplog.at_level(logging.WARNING, logger="k3snet.backends.cilium"):
        assert plan(backend.observe(), compile_for(backend, plain)).conflicts == ()
    assert not [r for r in caplog.records if "is not checked" in r.getMessage()]
    # A spec turning it on: the check of its plan says it (not a refusal).
    with caplog.at_level(logging.WARNING, logger="k3snet.backends.cilium"):
        assert backend.check(plan(backend.observe(), compile_for(backend, _spec()))) == ()
    (warned,) = {r.getMessage() for r in caplog.records if "is not checked" in r.getMessage()}
    assert ("daemonset option" if status == 404 else "grant get on it") in warned


@pytest.mark.parametrize("then", ["check", "apply"])
def test_a_lasting_warning_is_logged_once_where_each_pass_reads_again_after_observe(
    then: str, api_server: EmulatedApiServer, api_client: Any,
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The DaemonSet not to be read (403) with the ip-masq-agent on: observe warns its
    # mount is not checked, on every pass. A check or apply after observe's read expired
    # (another backend's apply between) reads again and started a new pass of the
    # remembered warnings: the next observe logged the same warning again, every pass.
    api_server.put(CONFIGMAPS, _cilium_config(HELM_K3S_DATA))
    api_server.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=True))
    api_server.fail(403, plural="daemonsets", times=None)
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    now = [1000.0]
    monkeypatch.setattr(kit, "_monotonic", lambda: now[0])
    desired = compile_for(backend, _spec())
    with caplog.at_level(logging.WARNING, logger="k3snet.backends.cilium"):
        for _ in range(3):
            p = plan(backend.observe(), desired)
            now[0] += kit.FRESH_READ_AGE
            if then == "check":
                assert backend.check(p) == ()
            else:
                backend.apply(p)
                backend.apply(plan(backend.observe(), compile_for(backend, seed_spec())))
    warned = [r.getMessage() for r in caplog.records if "is not checked" in r.getMessage()]
    assert len(warned) == 1, warned


def test_a_subpath_mount_names_the_restart_an_ip_masq_agent_change_needs(
    cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # A subPath mount is a copy the kubelet does not update: the agents read k3snet's
    # ip-masq-agent keys only when they restart, and a change of those keys alone named
    # no restart (the plan said nothing; the list stayed the old one until some restart).
    sub = cilium_daemonset(ip_masq_agent=True)
    _pod(sub)["containers"][0]["volumeMounts"][-1].update(
        mountPath="/etc/config/ip-masq-agent", subPath="ip-masq-agent")
    cilium.put(DAEMONSETS, sub)
    backend.apply(plan(backend.observe(), compile_for(backend, _spec(cidrs=["10.0.0.0/8"]))))
    wider = _spec(cidrs=["10.0.0.0/8", "100.64.0.0/10"])
    changed = plan(backend.observe(), compile_for(backend, wider))
    assert [c.action for c in changed.changes] == ["replace"]
    assert restarts_needed(backend, changed) == ("DaemonSet kube-system/cilium",)
    # The whole volume mounted (Helm's way): the kubelet updates the file, no restart.
    cilium.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=True))
    changed = plan(backend.observe(), compile_for(backend, wider))
    assert restarts_needed(backend, changed) == ()


def _daemonset_reads(server: EmulatedApiServer) -> int:
    return sum(1 for method, path, _ in server.requests()
               if method == "GET" and "/daemonsets/" in path)


def test_an_observe_reads_the_daemonset_once_and_judges_its_mount_where_the_agent_is_on(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    # Cilium's iptables masquerading: the mount does not matter, and is not judged; the
    # DaemonSet is read all the same, once an observe, for its agent container's flags.
    api_server.put(CONFIGMAPS, _cilium_config(HELM_K3S_DATA))
    api_server.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=False))
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.ip_masq_agent_unmounted is None
    assert _daemonset_reads(api_server) == 1
    # On some nodes (a CiliumNodeConfig), in cilium-config, or by k3snet's own key: read.
    api_server.put(NODE_CONFIGS_V2, _node_config("edge", {"enable-ip-masq-agent": "true"}))
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.ip_masq_agent_unmounted is not None
    assert _daemonset_reads(api_server) == 2
    api_server.delete(NODE_CONFIGS_V2, "edge", namespace="kube-system")
    api_server.put(CONFIGMAPS, _cilium_config(EBPF_AGENT))
    backend.observe()
    assert _daemonset_reads(api_server) == 3
    api_server.put(CONFIGMAPS, _cilium_config({**HELM_K3S_DATA,
                                               "enable-bpf-masquerade": "true"}))
    api_server.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=True))
    backend.apply(plan(backend.observe(), compile_for(backend, _spec())))
    assert _data(api_server)["enable-ip-masq-agent"] == "true"
    (owned,) = backend.observe().owned
    assert isinstance(owned, CiliumConfig)
    assert owned.flag("enable-ip-masq-agent")
    # The apply turning it on judges the DaemonSet its observe read: the observes' alone.
    assert _daemonset_reads(api_server) == 5


@pytest.mark.parametrize("status", [500, 401, 503])
def test_a_failed_daemonset_read_fails_nothing_where_the_ip_masq_agent_stays_off(
    status: int, api_server: EmulatedApiServer, api_client: Any,
    caplog: pytest.LogCaptureFixture
) -> None:
    # A spec with Cilium's iptables masquerading: a 500 (or a timeout, a 401) reading the
    # DaemonSet failed every observe, plan and apply, the agent's whole cluster pass. Its
    # agent container's flags are then not known: a warning, cilium-config judged alone.
    api_server.put(CONFIGMAPS, _cilium_config(HELM_K3S_DATA))
    api_server.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=False))
    api_server.fail(status, plural="daemonsets", times=None)
    data = seed_spec().to_dict()
    data["backends"] = ["cilium"]
    data["cni"] = {"cilium": {"tunnelProtocol": "geneve"}}
    plain = Spec.from_dict(data)
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    observed = backend.observe()
    assert any("the cilium-agent container's flags and variables are not read"
               in r.getMessage() for r in caplog.records)
    p = plan(observed, compile_for(backend, plain))
    assert p.conflicts == ()
    assert p.changes
    assert backend.check(p) == ()
    # Checked and applied without an observe before (a plan file): each reads it again,
    # and judges as the observe did (the warning, cilium-config alone).
    fresh = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    assert fresh.check(p) == ()
    fresh.apply(p)
    assert _data(api_server)["tunnel-protocol"] == "geneve"
    assert _daemonset_reads(api_server) == 3  # the observe's, the check's, the apply's


def test_a_failed_daemonset_read_refuses_a_plan_turning_the_ip_masq_agent_on(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    # Whether the agents would start with it depends on the mount: not known, nothing is
    # written (the read's error, as a transient one, not a refusal of the plan).
    api_server.put(CONFIGMAPS, _cilium_config(HELM_K3S_DATA))
    api_server.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=True))
    api_server.fail(500, plural="daemonsets", times=None)
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    p = plan(backend.observe(), compile_for(backend, _spec()))
    (problem,) = backend.check(p)
    assert problem.startswith("read DaemonSet kube-system/cilium: the API server failed (500")
    assert problem.endswith("; nothing was changed")
    with pytest.raises(ApplyError, match=r"read DaemonSet kube-system/cilium.*nothing was changed"):
        backend.apply(p)
    assert "enable-ip-masq-agent" not in _data(api_server)
    # Where it is on, the mount judges the ConfigMap: a failed read fails the observe.
    api_server.put(CONFIGMAPS, _cilium_config(EBPF_AGENT))
    with pytest.raises(KubeApiError, match="read DaemonSet kube-system/cilium"):
        backend.observe()
    api_server.clear_faults()
    assert backend.check(plan(backend.observe(), compile_for(backend, _spec()))) == ()


def _masq_daemonset(*, args: list[str] | None = None) -> dict[str, Any]:
    """Helm's DaemonSet with the ip-masq-agent volume mounted at /etc/masq, not /etc/config
    (``args``: more arguments of the agent)."""
    ds = cilium_daemonset(ip_masq_agent=True)
    agent = _pod(ds)["containers"][0]
    agent["volumeMounts"][-1]["mountPath"] = "/etc/masq"
    agent["args"] += args or []
    return ds


def _unmounted(backend: CiliumBackend) -> tuple[str | None, bool]:
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    return foreign.ip_masq_agent_unmounted, foreign.ip_masq_agent_no_directory


def _older_pods_named(why: str | None, count: int, names: str) -> str:
    """``why`` (:func:`_unmounted`'s) naming ``count`` pods on an older template than the
    DaemonSet's own, ``names`` first (``"cilium-a, cilium-b"``); ``why``, to read on."""
    assert why is not None
    assert why.startswith(f"{count} pod(s) of {WHERE} still run an older pod template than "
                          f"its own, without the file ({names};"), why
    return why


@pytest.mark.parametrize("spelled", [["--ip-masq-agent-config-path=/etc/masq/ip-masq-agent"],
                                     ["--ip-masq-agent-config-path", "/etc/masq/ip-masq-agent"]],
                         ids=["flag=value", "flag value"])
def test_the_agent_s_ip_masq_agent_config_path_argument_is_the_file_judged(
    spelled: list[str], cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # The agent started with --ip-masq-agent-config-path reads that file (a flag on the
    # command line wins over cilium-config's key, viper's order): the mount check looked
    # at /etc/config/ip-masq-agent whatever the argument said.
    cilium.put(DAEMONSETS, _masq_daemonset())
    why, no_directory = _unmounted(backend)
    assert why is not None
    assert "at /etc/config/ip-masq-agent (it is at /etc/masq/ip-masq-agent)" in why
    assert no_directory
    cilium.put(DAEMONSETS, _masq_daemonset(args=spelled))
    assert _unmounted(backend) == (None, False)
    assert _reasons(backend, _spec(cidrs=["10.0.0.0/8"])) == []
    # ... over cilium-config's key too; and mounted at /etc/config, the argument
    # elsewhere is not that file.
    cilium.put(CONFIGMAPS, _cilium_config({
        **EBPF_AGENT, "ip-masq-agent-config-path": "/etc/config/ip-masq-agent"}))
    assert _unmounted(backend) == (None, False)
    helm = cilium_daemonset(ip_masq_agent=True)
    _pod(helm)["containers"][0]["args"] += spelled
    cilium.put(DAEMONSETS, helm)
    why, no_directory = _unmounted(backend)
    assert why is not None
    assert "at /etc/masq/ip-masq-agent (it is at /etc/config/ip-masq-agent)" in why
    assert not no_directory
    # After "--" an argument is no flag.
    _pod(helm)["containers"][0]["args"][-len(spelled):-len(spelled)] = ["--"]
    cilium.put(DAEMONSETS, helm)
    assert _unmounted(backend) == (None, False)


@pytest.mark.parametrize("where", ["argument", "cilium-config"])
def test_an_empty_ip_masq_agent_config_path_is_no_file_mounted_and_no_directory_missing(
    where: str, cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # Cilium takes an empty ip-masq-agent-config-path as it is (viper: a flag given, a
    # config-dir value trimmed): its ip-masq-agent watches filepath.Dir("") = "." (the
    # working directory, there: it starts) and reads "" (not found: its default list).
    # k3snet judged /etc/config/ip-masq-agent: mounted there, the ConfigMap counted as
    # read; with nothing there, turning the ip-masq-agent on was refused.
    helm = cilium_daemonset(ip_masq_agent=True)
    if where == "argument":
        _pod(helm)["containers"][0]["args"] += ["--ip-masq-agent-config-path="]
    else:
        cilium.put(CONFIGMAPS, _cilium_config({**EBPF_AGENT,
                                                "ip-masq-agent-config-path": " "}))
    cilium.put(DAEMONSETS, helm)
    why, no_directory = _unmounted(backend)
    assert why is not None
    assert "empty ip-masq-agent-config-path" in why
    assert not no_directory
    (reason,) = _reasons(backend, _spec(cidrs=["10.0.0.0/8"]))
    assert "which Cilium's agents do not read" in reason
    # Nothing at /etc/config: the agent starts all the same (no refusal of that kind).
    bare = cilium_daemonset(ip_masq_agent=False)
    if where == "argument":
        _pod(bare)["containers"][0]["args"] += ["--ip-masq-agent-config-path", ""]
    cilium.put(DAEMONSETS, bare)
    why, no_directory = _unmounted(backend)
    assert why is not None
    assert "empty ip-masq-agent-config-path" in why
    assert not no_directory


def test_the_agent_s_ip_masq_agent_config_path_argument_is_expanded_as_the_kubelet_does(
    cilium: EmulatedApiServer, backend: CiliumBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # The kubelet expands $(NAME) in a container's args from its env: the agent reads
    # /etc/masq/ip-masq-agent, and the literal "$(MASQ_FILE)" was judged unmounted.
    ds = _masq_daemonset(args=["--ip-masq-agent-config-path=$(MASQ_FILE)"])
    agent = _pod(ds)["containers"][0]
    agent["env"] = [*agent.get("env", []), {"name": "MASQ_DIR", "value": "/etc/masq"},
                    {"name": "MASQ_FILE", "value": "$(MASQ_DIR)/ip-masq-agent"}]
    cilium.put(DAEMONSETS, ds)
    assert _unmounted(backend) == (None, False)
    # "$$" is a "$": the agent reads a file named "$(MASQ_FILE)", not mounted.
    agent["args"][-1] = "--ip-masq-agent-config-path=/etc/masq/$$(MASQ_FILE)"
    cilium.put(DAEMONSETS, ds)
    why, _ = _unmounted(backend)
    assert why is not None
    assert "at /etc/masq/$(MASQ_FILE) (it is at /etc/masq/ip-masq-agent)" in why
    # A value only the kubelet knows: not judged, said.
    agent["args"][-1] = "--ip-masq-agent-config-path=$(MASQ_FILE)"
    agent["env"][-1] = {"name": "MASQ_FILE", "valueFrom": {"configMapKeyRef": {
        "name": "masq", "key": "file"}}}
    cilium.put(DAEMONSETS, ds)
    with caplog.at_level(logging.WARNING, logger="k3snet.backends.cilium"):
        assert _unmounted(backend) == (None, False)
    assert any("--ip-masq-agent-config-path of DaemonSet kube-system/cilium's cilium-agent "
               "container: $(MASQ_FILE) is set only where the pod runs" in r.getMessage()
               for r in caplog.records)
    # An env value naming a variable an envFrom source may set: as unknown (the literal
    # "$(MASQ_DIR)/ip-masq-agent" was judged, unmounted, and the default list assumed).
    agent["envFrom"] = [{"configMapRef": {"name": "masq"}}]
    agent["env"][-2:] = [{"name": "MASQ_PATH", "value": "$(MASQ_DIR)/ip-masq-agent"}]
    agent["args"][-1] = "--ip-masq-agent-config-path=$(MASQ_PATH)"
    cilium.put(DAEMONSETS, ds)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="k3snet.backends.cilium"):
        assert _unmounted(backend) == (None, False)
    assert any("$(MASQ_PATH) is set only where the pod runs" in r.getMessage()
               for r in caplog.records)


def test_a_node_config_s_ip_masq_agent_config_path_is_the_file_judged_on_its_nodes(
    cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # A CiliumNodeConfig's ip-masq-agent-config-path is what the agents of its nodes read
    # (laid over cilium-config's): unmounted there, Cilium's default list applies there.
    cilium.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=True))
    assert _unmounted(backend) == (None, False)
    cilium.put(NODE_CONFIGS_V2, _node_config(
        "edge", {"ip-masq-agent-config-path": "/etc/masq/ip-masq-agent"}))
    why, no_directory = _unmounted(backend)
    assert why is not None
    assert "at /etc/masq/ip-masq-agent (it is at /etc/config/ip-masq-agent)" in why
    assert not no_directory
    (reason,) = _reasons(backend, _spec(cidrs=["10.0.0.0/8"]))
    assert "192.168.0.0/16, from Cilium's default list" in reason
    # Where the ip-masq-agent is off on its nodes, its path does not matter.
    cilium.put(NODE_CONFIGS_V2, _node_config(
        "edge", {"ip-masq-agent-config-path": "/etc/masq/ip-masq-agent",
                 "enable-ip-masq-agent": "false"}))
    assert _unmounted(backend) == (None, False)


def test_a_node_config_turning_the_ip_masq_agent_off_leaves_its_path_unjudged_under_k3snet_s_key(
    cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # k3snet's enable-ip-masq-agent in cilium-config is laid under a CiliumNodeConfig's:
    # on the nodes of one turning it off, its ip-masq-agent-config-path is read by no
    # agent, but k3snet's key counted as on everywhere and that file was judged unmounted.
    cilium.put(CONFIGMAPS, _cilium_config({**HELM_K3S_DATA, "enable-bpf-masquerade": "true"}))
    cilium.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=True))
    backend.apply(plan(backend.observe(), compile_for(backend, _spec())))
    cilium.put(NODE_CONFIGS_V2, _node_config(
        "edge", {"ip-masq-agent-config-path": "/etc/masq/ip-masq-agent",
                 "enable-ip-masq-agent": "false"}))
    assert _unmounted(backend) == (None, False)
    # On there (its own key, or none of its own over k3snet's), the file is judged.
    for edge in ({"ip-masq-agent-config-path": "/etc/masq/ip-masq-agent",
                  "enable-ip-masq-agent": "true"},
                 {"ip-masq-agent-config-path": "/etc/masq/ip-masq-agent"}):
        cilium.put(NODE_CONFIGS_V2, _node_config("edge", edge))
        why, _ = _unmounted(backend)
        assert why is not None
        assert "at /etc/masq/ip-masq-agent (it is at /etc/config/ip-masq-agent)" in why


def test_a_plan_turning_the_ip_masq_agent_on_with_nothing_at_etc_config_warns_ahead(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    # The ip-masq-agent off, observe read no DaemonSet: `plan` of a spec turning it on
    # said nothing, and only check and apply refused it. The hint of what the plan wants
    # (expect, as `k3snet plan` and converge give it) has observe judge the DaemonSet then
    # (read once an observe, for its agent container's flags): a warning says the refusal
    # ahead, the observed state the same, and the check right after takes that read (no
    # second GET).
    api_server.put(CONFIGMAPS, _cilium_config(HELM_K3S_DATA))
    api_server.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=False))
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    desired = compile_for(backend, _spec())
    unhinted = backend.observe()
    assert backend.warnings == ()
    backend.expect(desired)
    observed = backend.observe()
    assert observed == unhinted
    said: tuple[str, ...] = backend.warnings  # not narrowed by the == () above
    (warning,) = said
    assert warning.startswith("the plan turns Cilium's ip-masq-agent on, which check and "
                              "apply refuse: enable-ip-masq-agent: true where the "
                              "cilium-agent container has no /etc/config")
    assert "Helm ipMasqAgent.enabled=true" in warning
    assert _daemonset_reads(api_server) == 2
    (refused,) = backend.check(plan(observed, desired))
    assert "has no /etc/config" in refused
    assert _daemonset_reads(api_server) == 2
    # Mounted as Helm does: nothing to warn of; a spec leaving it off reads nothing.
    api_server.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=True))
    backend.observe()
    assert backend.warnings == ()
    data = seed_spec().to_dict()
    data["backends"] = ["cilium"]
    backend.expect(compile_for(backend, Spec.from_dict(data)))
    backend.observe()
    assert _daemonset_reads(api_server) == 4
    # A failed read ahead fails no plan: the check says it.
    api_server.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=False))
    api_server.fail(500, plural="daemonsets", times=1)
    backend.expect(desired)
    assert backend.observe() == unhinted
    assert backend.warnings == ()
    (refused,) = backend.check(plan(unhinted, desired))
    assert "has no /etc/config" in refused


def test_turning_the_ip_masq_agent_on_is_refused_where_only_a_node_config_s_own_file_is_mounted(
    cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # On the nodes of a CiliumNodeConfig the ip-masq-agent is on, its file at /etc/masq,
    # mounted: observe judged that file. A plan turning it on in cilium-config turns it
    # on everywhere else too, at /etc/config, where the container has nothing: the check
    # took observe's mount of the other file, and let apply write a config the other
    # nodes' agents do not start with.
    cilium.put(CONFIGMAPS, _cilium_config({**HELM_K3S_DATA, "enable-bpf-masquerade": "true"}))
    cilium.put(DAEMONSETS, _masq_daemonset())
    cilium.put(NODE_CONFIGS_V2, _node_config(
        "edge", {"enable-ip-masq-agent": "true",
                 "ip-masq-agent-config-path": "/etc/masq/ip-masq-agent"}))
    assert _unmounted(backend) == (None, False)
    desired = compile_for(backend, _spec())
    (refused,) = backend.check(plan(backend.observe(), desired))
    assert "enable-ip-masq-agent: true where the cilium-agent container has no /etc/config" \
        in refused
    with pytest.raises(PlanError, match="has no /etc/config"):
        backend.apply(plan(backend.observe(), desired))
    assert "enable-ip-masq-agent" not in _data(cilium)


def test_a_plan_turning_the_ip_masq_agent_on_warns_ahead_where_only_a_node_config_s_file_is_mounted(
    cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # As above, but `plan`: observe judged the node config's file (mounted), and the
    # warning ahead was given only where nothing had the ip-masq-agent on, so the plan
    # said nothing of the refusal check and apply give. One DaemonSet read serves both
    # judgements and the check after.
    cilium.put(CONFIGMAPS, _cilium_config({**HELM_K3S_DATA, "enable-bpf-masquerade": "true"}))
    cilium.put(DAEMONSETS, _masq_daemonset())
    cilium.put(NODE_CONFIGS_V2, _node_config(
        "edge", {"enable-ip-masq-agent": "true",
                 "ip-masq-agent-config-path": "/etc/masq/ip-masq-agent"}))
    desired = compile_for(backend, _spec())
    unhinted = backend.observe()
    reads = _daemonset_reads(cilium)
    backend.expect(desired)
    observed = backend.observe()
    assert observed == unhinted
    (warning,) = backend.warnings
    assert warning.startswith("the plan turns Cilium's ip-masq-agent on, which check and "
                              "apply refuse: enable-ip-masq-agent: true where the "
                              "cilium-agent container has no /etc/config")
    (refused,) = backend.check(plan(observed, desired))
    assert "has no /etc/config" in refused
    assert _daemonset_reads(cilium) == reads + 1
    # The node config reading /etc/config/ip-masq-agent too (judged by observe already):
    # warned ahead all the same.
    cilium.put(NODE_CONFIGS_V2, _node_config("edge", {"enable-ip-masq-agent": "true"}))
    cilium.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=False))
    backend.expect(desired)
    backend.observe()
    (warning,) = backend.warnings
    assert "has no /etc/config" in warning
    (refused,) = backend.check(plan(backend.observe(), desired))
    assert "has no /etc/config" in refused


def _agent_pod(name: str, ds: dict[str, Any], owner: str = "cilium") -> dict[str, Any]:
    """A pod of the DaemonSet ``owner`` running the pod template of ``ds`` as it is now."""
    return daemonset_pod("kube-system", name, owner, {"k8s-app": "cilium"},
                         spec=copy.deepcopy(_pod(ds)))


def _rolling(ds: dict[str, Any], *, updated: int, desired: int = 3) -> dict[str, Any]:
    ds = copy.deepcopy(ds)
    ds["spec"]["updateStrategy"] = {"type": "OnDelete"}
    ds["metadata"]["generation"] = 2
    ds["status"] = {"observedGeneration": 2, "desiredNumberScheduled": desired,
                    "updatedNumberScheduled": updated}
    return ds


def _pod_reads(server: EmulatedApiServer) -> int:
    return sum(1 for method, path, _ in server.requests()
               if method == "GET" and path.split("?")[0].endswith("/pods"))


def test_pods_still_running_a_template_without_the_mount_are_named(
    cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # Helm's ipMasqAgent.enabled=true added the mount to the template, but under the
    # OnDelete strategy (or mid-rollout) the pods running still have none: their agents
    # read no file and keep Cilium's default list, while the template alone was judged
    # and k3snet said converged.
    old, new = cilium_daemonset(ip_masq_agent=False), cilium_daemonset(ip_masq_agent=True)
    cilium.put(PODS, _agent_pod("cilium-a", new))
    for name in ("cilium-b", "cilium-c"):
        cilium.put(PODS, _agent_pod(name, old))
    cilium.put(PODS, {**_agent_pod("cilium-old", old), "status": {"phase": "Failed"}})
    cilium.put(PODS, _agent_pod("other-x", old, owner="other"))
    cilium.put(DAEMONSETS, _rolling(new, updated=1))
    why, no_directory = _unmounted(backend)
    assert why is not None
    assert why.startswith(f"2 pod(s) of {WHERE} still run an older pod template than its "
                          "own, without the file (cilium-b, cilium-c; they read it once "
                          "replaced): pod kube-system/cilium-b has no volume of the "
                          "ConfigMap ip-masq-agent")
    assert no_directory  # theirs have no /etc/config (those started from now have it)
    (reason,) = _reasons(backend, _spec(cidrs=["10.0.0.0/8"]))
    assert "cilium-b, cilium-c" in reason
    # Replaced (deleted, made again from the template): converged.
    for name in ("cilium-b", "cilium-c"):
        cilium.put(PODS, _agent_pod(name, new))
    assert _unmounted(backend) == (None, False)
    # Every pod on the template: the status says so, and no pod is listed.
    reads = _pod_reads(cilium)
    assert reads == 3  # one list an observe, only where the status says pods lag
    cilium.put(DAEMONSETS, _rolling(new, updated=3))
    assert _unmounted(backend) == (None, False)
    assert _pod_reads(cilium) == reads


def test_pods_on_an_older_template_are_judged_by_the_file_their_own_args_name(
    cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # The old template gave the agent --ip-masq-agent-config-path=/etc/masq/... with the
    # ConfigMap mounted at /etc/config; the new one drops the argument. The old pods read
    # /etc/masq/ip-masq-agent (not there: Cilium's default list), yet were judged by the
    # template's file, /etc/config/ip-masq-agent, which they have: said converged.
    new = cilium_daemonset(ip_masq_agent=True)
    old = copy.deepcopy(new)
    _pod(old)["containers"][0]["args"] += ["--ip-masq-agent-config-path=/etc/masq/ip-masq-agent"]
    cilium.put(PODS, _agent_pod("cilium-a", new))
    cilium.put(PODS, _agent_pod("cilium-b", old))
    cilium.put(DAEMONSETS, _rolling(new, updated=1, desired=2))
    why, _ = _unmounted(backend)
    assert why is not None
    assert "1 pod(s)" in why
    assert "(cilium-b;" in why
    assert "at /etc/masq/ip-masq-agent" in why
    # The other way round: old pods reading /etc/config (no argument), mounted there,
    # under a template whose argument names /etc/masq, mounted too: not lagging.
    cilium.put(DAEMONSETS, _rolling(_masq_daemonset(
        args=["--ip-masq-agent-config-path=/etc/masq/ip-masq-agent"]), updated=1, desired=2))
    cilium.put(PODS, _agent_pod("cilium-a", _masq_daemonset(
        args=["--ip-masq-agent-config-path=/etc/masq/ip-masq-agent"])))
    cilium.put(PODS, _agent_pod("cilium-b", new))
    assert _unmounted(backend) == (None, False)


def test_turning_the_ip_masq_agent_on_is_refused_where_pods_on_an_older_template_have_no_etc_config(
    cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # Helm's mount is in the template, but under OnDelete two pods still run one without
    # anything at /etc/config. Their agents read cilium-config again whenever their
    # container restarts (a crash, a node reboot: the pod's own spec, not the template):
    # with enable-ip-masq-agent: true they exit there, pods without network. The template
    # alone was judged: the check passed and apply wrote the key.
    cilium.put(CONFIGMAPS, _cilium_config({**HELM_K3S_DATA, "enable-bpf-masquerade": "true"}))
    old, new = cilium_daemonset(ip_masq_agent=False), cilium_daemonset(ip_masq_agent=True)
    cilium.put(PODS, _agent_pod("cilium-a", new))
    for name in ("cilium-b", "cilium-c"):
        cilium.put(PODS, _agent_pod(name, old))
    cilium.put(DAEMONSETS, _rolling(new, updated=1))
    desired = compile_for(backend, _spec())
    (refused,) = backend.check(plan(backend.observe(), desired))
    assert "enable-ip-masq-agent: true where the cilium-agent container has no /etc/config" \
        in refused
    assert "cilium-b, cilium-c" in refused
    with pytest.raises(PlanError, match="has no /etc/config"):
        backend.apply(plan(backend.observe(), desired))
    assert "enable-ip-masq-agent" not in _data(cilium)
    # Replaced: allowed.
    for name in ("cilium-b", "cilium-c"):
        cilium.put(PODS, _agent_pod(name, new))
    assert backend.check(plan(backend.observe(), desired)) == ()


def test_pods_on_an_older_template_are_named_when_updated_number_scheduled_is_left_out(
    cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # Just after the template changed under OnDelete no pod runs it yet: a real API server
    # then writes no updatedNumberScheduled at all (omitempty, 0), only
    # desiredNumberScheduled. That was read as "no lag", and the template alone judged.
    old, new = cilium_daemonset(ip_masq_agent=False), cilium_daemonset(ip_masq_agent=True)
    for name in ("cilium-a", "cilium-b"):
        cilium.put(PODS, _agent_pod(name, old))
    ds = _rolling(new, updated=0, desired=2)
    del ds["status"]["updatedNumberScheduled"]
    cilium.put(DAEMONSETS, ds)
    why, _ = _unmounted(backend)
    why = _older_pods_named(why, 2, "cilium-a, cilium-b")

    # A status not yet written by the controller (no desiredNumberScheduled) tells nothing.
    cilium.put(DAEMONSETS, {**new, "status": {}})
    reads = _pod_reads(cilium)
    assert _unmounted(backend) == (None, False)
    assert _pod_reads(cilium) == reads


def test_each_pod_on_an_older_template_is_judged_by_its_own_config_path_argument(
    cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # A pod runs its own spec: its own --ip-masq-agent-config-path, not the template's.
    # The template's argument was used for every older pod: a pod reading a mounted file
    # was refused, and one reading an unmounted file was not seen.
    old = cilium_daemonset(ip_masq_agent=True)
    new = _masq_daemonset(args=["--ip-masq-agent-config-path=/etc/masq/ip-masq-agent"])
    for name in ("cilium-a", "cilium-b"):
        cilium.put(PODS, _agent_pod(name, old))
    cilium.put(DAEMONSETS, _rolling(new, updated=0, desired=2))
    assert _unmounted(backend) == (None, False)
    desired = compile_for(backend, _spec(cidrs=["10.0.0.0/8"]))
    assert backend.check(plan(backend.observe(), desired)) == ()
    # The older template read a file nowhere mounted; the new one drops the argument.
    _pod(old)["containers"][0]["args"] += ["--ip-masq-agent-config-path=/nowhere/ip-masq-agent"]
    for name in ("cilium-a", "cilium-b"):
        cilium.put(PODS, _agent_pod(name, old))
    cilium.put(DAEMONSETS, _rolling(cilium_daemonset(ip_masq_agent=True), updated=0, desired=2))
    why, _ = _unmounted(backend)
    why = _older_pods_named(why, 2, "cilium-a, cilium-b")

    assert "at /nowhere/ip-masq-agent (it is at /etc/config/ip-masq-agent)" in why


def test_a_name_an_env_from_or_a_service_may_define_is_not_judged_but_said(
    cilium: EmulatedApiServer, backend: CiliumBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # The kubelet expands an env value's $(NAME) from envFrom and the service variables
    # too, and args' from the service variables: "$(DIR)/f" was taken as written, judged
    # not mounted, and apply refused.
    ds = _masq_daemonset(args=["--ip-masq-agent-config-path=$(P)"])
    agent = _pod(ds)["containers"][0]
    agent["envFrom"] = [{"configMapRef": {"name": "masq"}}]
    agent["env"] = [{"name": "P", "value": "$(DIR)/ip-masq-agent"}]
    cilium.put(DAEMONSETS, ds)
    with caplog.at_level(logging.WARNING, logger="k3snet.backends.cilium"):
        assert _unmounted(backend) == (None, False)
    assert any("$(P) is set only where the pod runs" in r.getMessage() for r in caplog.records)
    del agent["envFrom"]
    for name in ("KUBERNETES_SERVICE_HOST", "MASQ_SERVICE_PORT", "MASQ_PORT_53_UDP_ADDR"):
        agent["env"] = [{"name": "P", "value": f"/etc/masq/$({name})"}]
        cilium.put(DAEMONSETS, ds)
        assert _unmounted(backend) == (None, False), name  # said once: the $(P) above
        agent["env"] = []
        agent["args"][-1] = f"--ip-masq-agent-config-path=/etc/masq/$({name})"
        cilium.put(DAEMONSETS, ds)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="k3snet.backends.cilium"):
            assert _unmounted(backend) == (None, False)
        assert any(f"$({name}) is set only where the pod runs" in r.getMessage()
                   for r in caplog.records), name
        agent["args"][-1] = "--ip-masq-agent-config-path=$(P)"
    # A name no service nor envFrom gives stays as written: judged.
    agent["env"] = [{"name": "P", "value": "/etc/masq/$(DIR)"}]
    cilium.put(DAEMONSETS, ds)
    why, _ = _unmounted(backend)
    assert why is not None
    assert "at /etc/masq/$(DIR) (it is at /etc/masq/ip-masq-agent)" in why


def test_older_pods_are_listed_by_the_whole_selector_and_by_owner_where_it_cannot_be_read(
    cilium: EmulatedApiServer, backend: CiliumBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pods were listed by matchLabels alone, and none were judged for a selector
    # apimachinery refuses; the restart follow-up lists and falls back by owner.
    from kubernetes import client  # noqa: PLC0415 - optional dependency

    selectors: list[str | None] = []
    listed = client.CoreV1Api.list_namespaced_pod

    def spied(self: Any, namespace: str, **kwargs: Any) -> Any:
        selectors.append(kwargs.get("label_selector"))
        return listed(self, namespace, **kwargs)

    monkeypatch.setattr(client.CoreV1Api, "list_namespaced_pod", spied)
    old, new = cilium_daemonset(ip_masq_agent=False), cilium_daemonset(ip_masq_agent=True)
    cilium.put(PODS, _agent_pod("cilium-a", old))
    ds = _rolling(new, updated=0, desired=1)
    ds["spec"]["selector"]["matchExpressions"] = [
        {"key": "tier", "operator": "NotIn", "values": ["canary"]}]
    cilium.put(DAEMONSETS, ds)
    why, _ = _unmounted(backend)
    assert why is not None
    assert "(cilium-a;" in why
    assert selectors == ["k8s-app=cilium,tier notin (canary)"]
    ds["spec"]["selector"]["matchExpressions"] = [{"key": "tier", "operator": "Bogus"}]
    cilium.put(DAEMONSETS, ds)
    why, _ = _unmounted(backend)
    assert why is not None
    assert "(cilium-a;" in why


def test_an_older_pod_whose_file_is_not_known_is_said_or_named_where_it_reads_no_file(
    cilium: EmulatedApiServer, backend: CiliumBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # An older pod's --ip-masq-agent-config-path naming a value set only where the pod
    # runs (valueFrom) was skipped with nothing said, even where the pod has no volume of
    # the ConfigMap at all, so reads it at no path: no conflict, its agents' default list.
    def older_pods(*, mounted: bool) -> None:
        # Pods of an older template whose path is known only where they run.
        old = cilium_daemonset(ip_masq_agent=mounted)
        agent = _pod(old)["containers"][0]
        agent["args"] += ["--ip-masq-agent-config-path=$(P)"]
        agent["env"] = [{"name": "P",
                         "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
        for name in ("cilium-a", "cilium-b"):
            cilium.put(PODS, _agent_pod(name, old))

    older_pods(mounted=True)
    cilium.put(DAEMONSETS, _rolling(cilium_daemonset(ip_masq_agent=True), updated=0, desired=2))
    with caplog.at_level(logging.WARNING, logger="k3snet.backends.cilium"):
        assert _unmounted(backend) == (None, False)
    said = [r.getMessage() for r in caplog.records if "is not checked" in r.getMessage()]
    assert any("pod kube-system/cilium-a's cilium-agent container" in s for s in said)
    # No volume of the ConfigMap: whatever the path, the file is not read.
    older_pods(mounted=False)
    why, _ = _unmounted(backend)
    why = _older_pods_named(why, 2, "cilium-a, cilium-b")

    assert "has no volume of the ConfigMap ip-masq-agent" in why


def test_service_variables_stay_as_written_where_the_pod_has_no_service_links(
    cilium: EmulatedApiServer, backend: CiliumBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # With enableServiceLinks: false the kubelet sets no variable of the namespace's
    # services, only the API server's KUBERNETES_*: "$(MASQ_SERVICE_HOST)" stays as
    # written (an unset name is), yet it was taken as set only where the pod runs, and
    # the file left unjudged.
    ds = _masq_daemonset(args=["--ip-masq-agent-config-path=/etc/masq/$(MASQ_SERVICE_HOST)"])
    _pod(ds)["enableServiceLinks"] = False
    cilium.put(DAEMONSETS, ds)
    why, _ = _unmounted(backend)
    assert why is not None
    assert "at /etc/masq/$(MASQ_SERVICE_HOST) (it is at /etc/masq/ip-masq-agent)" in why
    # From an env value too.
    agent = _pod(ds)["containers"][0]
    agent["env"] = [{"name": "P", "value": "/etc/masq/$(MASQ_PORT_53_UDP_ADDR)"}]
    agent["args"][-1] = "--ip-masq-agent-config-path=$(P)"
    cilium.put(DAEMONSETS, ds)
    why, _ = _unmounted(backend)
    assert why is not None
    assert "at /etc/masq/$(MASQ_PORT_53_UDP_ADDR) (it" in why
    # The API server's are set all the same: not known.
    agent["env"] = [{"name": "P", "value": "/etc/masq/$(KUBERNETES_SERVICE_HOST)"}]
    cilium.put(DAEMONSETS, ds)
    with caplog.at_level(logging.WARNING, logger="k3snet.backends.cilium"):
        assert _unmounted(backend) == (None, False)
    assert any("$(P) is set only where the pod runs" in r.getMessage() for r in caplog.records)
    # With service links (true, or unset: the default), a service's name is not known.
    for links in (True, None):
        agent["env"] = [{"name": "P", "value": "/etc/masq/$(MASQ_SERVICE_HOST)"}]
        _pod(ds)["enableServiceLinks"] = links
        cilium.put(DAEMONSETS, ds)
        assert _unmounted(backend) == (None, False), links


@pytest.mark.parametrize("value", [" /etc/config/ip-masq-agent", "/etc/config/ip-masq-agent "])
def test_an_ip_masq_agent_config_path_argument_is_taken_with_its_spaces(
    value: str, cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # pflag keeps an argument's spaces, and Cilium reads the path as given: " /etc/..."
    # is a path relative to the agent's working directory, "... " another file name. The
    # argument was trimmed: the ConfigMap, mounted at /etc/config/ip-masq-agent, was
    # judged read.
    helm = cilium_daemonset(ip_masq_agent=True)
    _pod(helm)["containers"][0]["args"] += [f"--ip-masq-agent-config-path={value}"]
    cilium.put(DAEMONSETS, helm)
    why, no_directory = _unmounted(backend)
    assert why is not None
    assert f"at {value} (it is at /etc/config/ip-masq-agent)" in why
    assert not no_directory
    # An older pod's argument too.
    old = copy.deepcopy(helm)
    cilium.put(PODS, _agent_pod("cilium-b", old))
    cilium.put(DAEMONSETS, _rolling(cilium_daemonset(ip_masq_agent=True), updated=0,
                                    desired=1))
    why, _ = _unmounted(backend)
    assert why is not None
    assert "(cilium-b;" in why
    # cilium-config's value is trimmed (ReadDirConfig trims each key's file), also where
    # a plan turns the ip-masq-agent on.
    cilium.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=True))
    cilium.put(CONFIGMAPS, _cilium_config({**HELM_K3S_DATA, "enable-bpf-masquerade": "true",
                                           "ip-masq-agent-config-path": f"{value}\n"}))
    assert backend.check(plan(backend.observe(), compile_for(backend, _spec()))) == ()


def test_a_pod_being_deleted_neither_lags_nor_is_named(
    cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # A pod being deleted (deletionTimestamp set: terminating, or held by a finalizer)
    # restarts no container; the one the DaemonSet makes in its place runs the template,
    # judged already. It counted as lagging: named, and turning the ip-masq-agent on
    # was refused for its missing /etc/config.
    cilium.put(CONFIGMAPS, _cilium_config({**HELM_K3S_DATA, "enable-bpf-masquerade": "true"}))
    old, new = cilium_daemonset(ip_masq_agent=False), cilium_daemonset(ip_masq_agent=True)
    cilium.put(PODS, _agent_pod("cilium-a", new))
    going = _agent_pod("cilium-b", old)
    going["metadata"]["deletionTimestamp"] = "2026-12-06T16:00:00Z"
    going["metadata"]["finalizers"] = ["example.com/hold"]
    cilium.put(PODS, going)
    cilium.put(DAEMONSETS, _rolling(new, updated=1, desired=2))
    desired = compile_for(backend, _spec())
    assert backend.check(plan(backend.observe(), desired)) == ()
    cilium.put(CONFIGMAPS, _cilium_config(EBPF_AGENT))
    assert _unmounted(backend) == (None, False)
    # The same pod not being deleted: named.
    cilium.put(PODS, _agent_pod("cilium-b", old))
    why, no_directory = _unmounted(backend)
    assert why is not None
    assert "(cilium-b;" in why
    assert no_directory


def _on(node: str | None, pod: dict[str, Any]) -> dict[str, Any]:
    """``pod`` scheduled on ``node`` (None: not yet scheduled, as the DaemonSet's
    controller makes it: its node affinity naming no node here)."""
    if node is not None:
        pod["spec"]["nodeName"] = node
    return pod


def _edge_only(server: EmulatedApiServer) -> None:
    """Cilium's ip-masq-agent off in cilium-config, on where a CiliumNodeConfig selects the
    node (zone=edge: edge-1, not server-1), reading /etc/masq/ip-masq-agent there."""
    server.put(CONFIGMAPS, _cilium_config({**HELM_K3S_DATA, "enable-bpf-masquerade": "true"}))
    server.put(NODE_CONFIGS_V2, _node_config(
        "edge", {"enable-ip-masq-agent": "true",
                 "ip-masq-agent-config-path": "/etc/masq/ip-masq-agent"}))
    server.put(NODES, _node("server-1"))
    server.put(NODES, _node("edge-1", zone="edge"))


def test_an_older_pod_is_judged_by_the_file_its_own_node_reads(
    cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # The ip-masq-agent on only on the edge nodes (a CiliumNodeConfig, its own file). An
    # older pod on server-1, where it is off, lacks the edge file's mount: it reads no
    # file there, yet it was judged against every path some node reads, and named.
    _edge_only(cilium)
    new, old = _masq_daemonset(), cilium_daemonset(ip_masq_agent=False)
    cilium.put(PODS, _on("edge-1", _agent_pod("cilium-a", new)))
    cilium.put(PODS, _on("server-1", _agent_pod("cilium-b", old)))
    cilium.put(DAEMONSETS, _rolling(new, updated=1, desired=2))
    assert _unmounted(backend) == (None, False)
    assert _reasons(backend, _spec(cidrs=["10.0.0.0/8"])) == []
    # On an edge node the same pod reads the edge file, not mounted: named.
    cilium.put(PODS, _on("edge-1", _agent_pod("cilium-b", old)))
    why, no_directory = _unmounted(backend)
    why = _older_pods_named(why, 1, "cilium-b")

    assert not no_directory  # /etc/masq is not Cilium's default directory: not judged
    # Not yet scheduled: the node its affinity names (the DaemonSet controller's) is
    # the one it will run on; naming none, it may run on any node: every file counts.
    unscheduled = _agent_pod("cilium-b", old)
    unscheduled["spec"]["affinity"] = {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In",
                              "values": ["server-1"]}]}]}}}
    cilium.put(PODS, unscheduled)
    assert _unmounted(backend) == (None, False)
    cilium.put(PODS, _on(None, _agent_pod("cilium-b", old)))
    why, _ = _unmounted(backend)
    assert why is not None
    assert "(cilium-b;" in why
    # A node not listed (no labels known): every file counts too.
    cilium.put(PODS, _on("gone-1", _agent_pod("cilium-b", old)))
    why, _ = _unmounted(backend)
    assert why is not None
    assert "(cilium-b;" in why


def test_turning_the_ip_masq_agent_on_everywhere_judges_each_older_pod_by_its_node_s_file(
    cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # A plan turning it on in cilium-config turns it on at server-1 too, at /etc/config,
    # which the older pod there lacks: refused (its agent exits at its next start), with
    # the DaemonSet and the pods observe read (no second read).
    _edge_only(cilium)
    new = _masq_daemonset()
    agent = _pod(new)["containers"][0]
    agent["volumeMounts"].append({"name": "ip-masq-agent", "mountPath": "/etc/config"})
    cilium.put(PODS, _on("edge-1", _agent_pod("cilium-a", new)))
    cilium.put(PODS, _on("server-1", _agent_pod("cilium-b", cilium_daemonset(
        ip_masq_agent=False))))
    cilium.put(DAEMONSETS, _rolling(new, updated=1, desired=2))
    desired = compile_for(backend, _spec())
    observed = backend.observe()
    reads = _daemonset_reads(cilium), _pod_reads(cilium)
    (refused,) = backend.check(plan(observed, desired))
    assert "has no /etc/config" in refused
    assert "(cilium-b;" in refused
    assert (_daemonset_reads(cilium), _pod_reads(cilium)) == reads
    # On server-1 a pod with the mount: allowed.
    cilium.put(PODS, _on("server-1", _agent_pod("cilium-b", cilium_daemonset(
        ip_masq_agent=True))))
    assert backend.check(plan(backend.observe(), desired)) == ()


def test_a_hinted_observe_lists_the_pods_once_and_names_the_lagging_ones_once(
    cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # Observe judged the older pods for the CiliumNodeConfig's file, and the hint's
    # judgement (the file the plan turns on in cilium-config) listed them again: two
    # LISTs of the DaemonSet's pods in one pass, and one more in the check after.
    _edge_only(cilium)
    cilium.put(NODE_CONFIGS_V2, _node_config("edge", {"enable-ip-masq-agent": "true"}))
    new, old = cilium_daemonset(ip_masq_agent=True), cilium_daemonset(ip_masq_agent=False)
    cilium.put(PODS, _on("edge-1", _agent_pod("cilium-a", new)))
    cilium.put(PODS, _on("edge-1", _agent_pod("cilium-b", old)))
    cilium.put(DAEMONSETS, _rolling(new, updated=1, desired=2))
    desired = compile_for(backend, _spec())
    backend.expect(desired)
    observed = backend.observe()
    assert _pod_reads(cilium) == 1
    (warning,) = backend.warnings
    assert warning.startswith(
        "the plan turns Cilium's ip-masq-agent on, which check and apply refuse: "
        "enable-ip-masq-agent: true where the cilium-agent container has no /etc/config "
        f"(nothing mounted there: 1 pod(s) of {WHERE} still run an older pod template "
        "than its own, without the file (cilium-b; they read it once replaced): pod "
        "kube-system/cilium-b has no volume of the ConfigMap ip-masq-agent): ")
    assert warning.count("cilium-b") == 2  # the list and the reason, each once
    (refused,) = backend.check(plan(observed, desired))
    assert "(cilium-b;" in refused
    assert _pod_reads(cilium) == 1


@pytest.mark.parametrize("read", ["observed", "read again"])
def test_an_older_pod_is_judged_by_its_node_s_file_also_where_the_check_reads_again(
    read: str, cilium: EmulatedApiServer, backend: CiliumBackend,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ip-masq-agent on only on the edge nodes, reading /etc/masq there (a
    # CiliumNodeConfig); the plan turns it on in cilium-config (server-1: /etc/config).
    # An older pod on edge-1 has /etc/masq alone: its node's file, which the plan does
    # not change. The check right after observe judged it by that file and allowed the
    # plan; one reading again (observe's read too old: another backend's apply between,
    # waiting on a restart) judged every older pod by cilium-config's file, /etc/config,
    # which it lacks: a refusal of the same plan, only for the time between.
    _edge_only(cilium)
    new = _masq_daemonset()
    _pod(new)["containers"][0]["volumeMounts"].append(
        {"name": "ip-masq-agent", "mountPath": "/etc/config"})
    cilium.put(PODS, _on("server-1", _agent_pod("cilium-a", new)))
    cilium.put(PODS, _on("edge-1", _agent_pod("cilium-b", _masq_daemonset())))
    cilium.put(DAEMONSETS, _rolling(new, updated=1, desired=2))
    now = [1000.0]
    monkeypatch.setattr(kit, "_monotonic", lambda: now[0])
    desired = compile_for(backend, _spec())
    p = plan(backend.observe(), desired)
    if read == "read again":
        now[0] += kit.FRESH_READ_AGE
    assert backend.check(p) == ()
    # The same older pod on server-1, where the plan turns the file on: refused, both ways.
    cilium.put(PODS, _on("server-1", _agent_pod("cilium-b", _masq_daemonset())))
    p = plan(backend.observe(), desired)
    if read == "read again":
        now[0] += kit.FRESH_READ_AGE
    (refused,) = backend.check(p)
    assert "has no /etc/config" in refused
    assert "(cilium-b;" in refused


def test_the_agent_s_ip_masq_agent_config_path_variable_is_the_file_judged(
    cilium: EmulatedApiServer, backend: CiliumBackend, api_client: Any,
    caplog: pytest.LogCaptureFixture
) -> None:
    # Cilium binds each option to its environment variable (option.BindEnv), which viper
    # takes over the config directory: an agent given CILIUM_IP_MASQ_AGENT_CONFIG_PATH
    # reads that file, whatever cilium-config says. The check looked at cilium-config's.
    ds = _masq_daemonset()
    agent = _pod(ds)["containers"][0]
    agent["env"] = [{"name": "DIR", "value": "/etc/masq"},
                    {"name": "CILIUM_IP_MASQ_AGENT_CONFIG_PATH",
                     "value": "$(DIR)/ip-masq-agent"}]
    cilium.put(DAEMONSETS, ds)
    assert _unmounted(backend) == (None, False)
    assert _reasons(backend, _spec(cidrs=["10.0.0.0/8"])) == []
    # Mounted at /etc/config, the variable naming another file: not that file.
    helm = cilium_daemonset(ip_masq_agent=True)
    _pod(helm)["containers"][0]["env"] = agent["env"]
    cilium.put(DAEMONSETS, helm)
    why, no_directory = _unmounted(backend)
    assert why is not None
    assert "at /etc/masq/ip-masq-agent (it is at /etc/config/ip-masq-agent)" in why
    assert not no_directory
    # The argument wins over it; an empty variable is unset (viper), the key's file read.
    _pod(helm)["containers"][0]["args"].append(
        "--ip-masq-agent-config-path=/etc/config/ip-masq-agent")
    cilium.put(DAEMONSETS, helm)
    assert _unmounted(backend) == (None, False)
    del _pod(helm)["containers"][0]["args"][-1]
    _pod(helm)["containers"][0]["env"] = [
        {"name": "CILIUM_IP_MASQ_AGENT_CONFIG_PATH", "value": ""}]
    cilium.put(DAEMONSETS, helm)
    assert _unmounted(backend) == (None, False)
    # Known only where the pod runs (valueFrom, or an envFrom that may set it): said.
    for env, env_from in (([{"name": "CILIUM_IP_MASQ_AGENT_CONFIG_PATH", "valueFrom": {
            "configMapKeyRef": {"name": "masq", "key": "path"}}}], None),
            ([], [{"configMapRef": {"name": "masq"}}])):
        _pod(helm)["containers"][0]["env"] = env
        if env_from is not None:
            _pod(helm)["containers"][0]["envFrom"] = env_from
        cilium.put(DAEMONSETS, helm)
        fresh = CiliumBackend(api_client=api_client, timeout=10.0)  # each said once
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="k3snet.backends.cilium"):
            assert _unmounted(fresh) == (None, False)
        assert any("the variable CILIUM_IP_MASQ_AGENT_CONFIG_PATH, which Cilium takes over "
                   "its config directory, is set only where the pod runs" in r.getMessage()
                   for r in caplog.records)


def test_a_template_whose_file_is_not_known_reads_none_without_a_volume_of_the_configmap(
    cilium: EmulatedApiServer, backend: CiliumBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # An envFrom (proxy settings, say) may set CILIUM_IP_MASQ_AGENT_CONFIG_PATH, so which
    # file the agents read is not known; with no volume of the ip-masq-agent ConfigMap
    # they read it at no path whatever the file. It was a warning alone: k3snet said
    # converged on the ConfigMap it wrote while the agents kept Cilium's default list.
    ds = cilium_daemonset(ip_masq_agent=False)
    _pod(ds)["containers"][0]["envFrom"] = [{"configMapRef": {"name": "proxy"}}]
    cilium.put(DAEMONSETS, ds)
    with caplog.at_level(logging.WARNING, logger="k3snet.backends.cilium"):
        why, no_directory = _unmounted(backend)
    assert why == f"{WHERE} has no volume of the ConfigMap ip-masq-agent"
    assert not no_directory  # the variable may name a directory in the image
    assert not any("is not checked" in r.getMessage() for r in caplog.records)
    reasons = _reasons(backend, _spec(cidrs=["10.0.0.0/8"]))
    assert any(r.startswith("k3snet writes nonMasqueradeCIDRs into the ip-masq-agent "
                            "ConfigMap in kube-system, which Cilium's agents do not read")
               for r in reasons), reasons
    # A volume of it there, the file not known: not judged, said.
    masq = _masq_daemonset(args=["--ip-masq-agent-config-path=$(P)"])
    _pod(masq)["containers"][0]["envFrom"] = [{"configMapRef": {"name": "proxy"}}]
    cilium.put(DAEMONSETS, masq)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="k3snet.backends.cilium"):
        assert _unmounted(backend) == (None, False)
    assert any("$(P) is set only where the pod runs" in r.getMessage() for r in caplog.records)


def test_an_env_from_sets_only_names_starting_with_its_prefix(
    cilium: EmulatedApiServer, backend: CiliumBackend, api_client: Any,
    caplog: pytest.LogCaptureFixture
) -> None:
    # The kubelet names each key of an envFrom source prefix + key: one with the prefix
    # HTTP_ cannot set CILIUM_IP_MASQ_AGENT_CONFIG_PATH nor P. Any envFrom left the file
    # not judged, a warning, and a DaemonSet mounting it elsewhere was taken as mounted.
    masq = _masq_daemonset(args=["--ip-masq-agent-config-path=/etc/masq/$(P)"])
    agent = _pod(masq)["containers"][0]
    agent["envFrom"] = [{"prefix": "HTTP_", "configMapRef": {"name": "proxy"}},
                        {"prefix": "NO_", "secretRef": {"name": "proxy"}}]
    cilium.put(DAEMONSETS, masq)
    why, _ = _unmounted(backend)
    assert why is not None
    assert "at /etc/masq/$(P) (it is at /etc/masq/ip-masq-agent)" in why
    agent["args"].pop()
    cilium.put(DAEMONSETS, masq)
    why, _ = _unmounted(backend)
    assert why is not None
    assert "at /etc/config/ip-masq-agent (it is at /etc/masq/ip-masq-agent)" in why
    # A prefix the name starts with (or none) may set it: not judged, said.
    for prefix in ("CILIUM_", "", None):
        agent["envFrom"] = [{"configMapRef": {"name": "proxy"}}]
        if prefix is not None:
            agent["envFrom"][0]["prefix"] = prefix
        cilium.put(DAEMONSETS, masq)
        fresh = CiliumBackend(api_client=api_client, timeout=10.0)  # each said once
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="k3snet.backends.cilium"):
            assert _unmounted(fresh) == (None, False), prefix
        assert any("the variable CILIUM_IP_MASQ_AGENT_CONFIG_PATH" in r.getMessage()
                   for r in caplog.records), prefix


def test_an_older_pod_on_a_node_with_no_cilium_node_yet_is_judged_by_that_node_s_file(
    cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # The ip-masq-agent on only on the edge nodes. server-1 has no CiliumNode yet (its
    # agent not registered: starting, or restarting): it was left out of the Nodes whose
    # file is known, so the older pod there, which reads no file (off there), was judged
    # against the edge file, and named. A pod of the DaemonSet there is an agent there:
    # its Node's labels say what it reads.
    _edge_only(cilium)
    cilium.put(CILIUM_NODES, _cilium_node("edge-1"))
    new, old = _masq_daemonset(), cilium_daemonset(ip_masq_agent=False)
    cilium.put(PODS, _on("edge-1", _agent_pod("cilium-a", new)))
    cilium.put(PODS, _on("server-1", _agent_pod("cilium-b", old)))
    cilium.put(DAEMONSETS, _rolling(new, updated=1, desired=2))
    assert _unmounted(backend) == (None, False)
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.node_groups == (("edge",),)  # server-1 still forms no group
    # The same pod on a node the CiliumNodeConfig selects, no CiliumNode either: named.
    cilium.put(NODES, _node("edge-2", zone="edge"))
    cilium.put(PODS, _on("edge-2", _agent_pod("cilium-b", old)))
    why, _ = _unmounted(backend)
    assert why is not None
    assert "(cilium-b;" in why


def _path_only_on_edge(server: EmulatedApiServer) -> None:
    """Cilium's ip-masq-agent off in cilium-config, reading /etc/masq/ip-masq-agent once on;
    a CiliumNodeConfig gives the edge nodes (edge-1, not server-1) /etc/config/ip-masq-agent
    alone, not the switch: a plan turning it on in cilium-config turns it on there too, at
    that file."""
    server.put(CONFIGMAPS, _cilium_config({
        **HELM_K3S_DATA, "enable-bpf-masquerade": "true",
        "ip-masq-agent-config-path": "/etc/masq/ip-masq-agent"}))
    server.put(NODE_CONFIGS_V2, _node_config(
        "edge", {"ip-masq-agent-config-path": "/etc/config/ip-masq-agent"}))
    server.put(NODES, _node("server-1"))
    server.put(NODES, _node("edge-1", zone="edge"))


def test_turning_the_ip_masq_agent_on_judges_the_template_by_every_file_read_after_it(
    cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # The plan turns the ip-masq-agent on on the edge nodes too, where the agents read
    # the CiliumNodeConfig's /etc/config/ip-masq-agent; the template has nothing at
    # /etc/config, so every agent there exits at its next start. Check and apply judged
    # the template by cilium-config's file alone (/etc/masq, mounted) and allowed it,
    # and `plan` warned of nothing.
    _path_only_on_edge(cilium)
    cilium.put(DAEMONSETS, _masq_daemonset())
    desired = compile_for(backend, _spec())
    backend.expect(desired)
    observed = backend.observe()
    (warning,) = backend.warnings
    assert "has no /etc/config" in warning
    (refused,) = backend.check(plan(observed, desired))
    assert "has no /etc/config" in refused
    with pytest.raises(PlanError, match="has no /etc/config"):
        backend.apply(plan(backend.observe(), desired))
    assert "enable-ip-masq-agent" not in _data(cilium)
    # Mounted at /etc/config too: allowed.
    ds = _masq_daemonset()
    _pod(ds)["containers"][0]["volumeMounts"].append(
        {"name": "ip-masq-agent", "mountPath": "/etc/config"})
    cilium.put(DAEMONSETS, ds)
    assert backend.check(plan(backend.observe(), desired)) == ()


@pytest.mark.parametrize("node", [None, "gone-1"])
def test_an_older_pod_whose_node_is_not_known_is_judged_by_every_file_read_after_the_plan(
    node: str | None, cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # The template has both files; an older pod has /etc/masq alone, and its node is not
    # known (not yet scheduled with no affinity naming one, or not among the Nodes
    # listed): it may run on an edge node, where the plan has its agent read
    # /etc/config/ip-masq-agent, and exit at its next start. It was judged by
    # cilium-config's file alone (/etc/masq), not by every node's as documented: allowed.
    _path_only_on_edge(cilium)
    new = _masq_daemonset()
    _pod(new)["containers"][0]["volumeMounts"].append(
        {"name": "ip-masq-agent", "mountPath": "/etc/config"})
    cilium.put(PODS, _on("server-1", _agent_pod("cilium-a", new)))
    cilium.put(PODS, _on(node, _agent_pod("cilium-b", _masq_daemonset())))
    cilium.put(DAEMONSETS, _rolling(new, updated=1, desired=2))
    desired = compile_for(backend, _spec())
    (refused,) = backend.check(plan(backend.observe(), desired))
    assert "has no /etc/config" in refused
    assert "(cilium-b;" in refused
    backend.expect(desired)
    backend.observe()
    (warning,) = backend.warnings
    assert "(cilium-b;" in warning
    # On server-1, where the plan has it read /etc/masq alone: allowed.
    cilium.put(PODS, _on("server-1", _agent_pod("cilium-b", _masq_daemonset())))
    assert backend.check(plan(backend.observe(), desired)) == ()


def test_turning_the_ip_masq_agent_on_under_a_node_config_turning_it_off_everywhere_is_allowed(
    cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # A CiliumNodeConfig of every node (an empty selector) turns it off over
    # cilium-config's: no agent reads a file or watches /etc/config once k3snet's key is
    # written, yet the template's lack of /etc/config refused the plan.
    cilium.put(CONFIGMAPS, _cilium_config({**HELM_K3S_DATA, "enable-bpf-masquerade": "true"}))
    cilium.put(NODE_CONFIGS_V2, _node_config("all", {"enable-ip-masq-agent": "false"},
                                             selector={}))
    cilium.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=False))
    desired = compile_for(backend, _spec())
    backend.expect(desired)
    observed = backend.observe()
    assert backend.warnings == ()
    assert backend.check(plan(observed, desired)) == ()


def _pool(ds: dict[str, Any], name: str = "cilium-gpu") -> dict[str, Any]:
    """``ds`` as a second agent DaemonSet ``name`` (a copy for the nodes labelled pool=gpu)."""
    ds["metadata"]["name"] = name
    ds["spec"]["template"]["spec"]["nodeSelector"] = {"pool": "gpu"}
    return ds


def test_a_second_agent_daemonset_without_the_mount_is_judged_unmounted(
    cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # cilium mounts the ConfigMap, cilium-gpu (its copy for a node pool) does not: the
    # agents on its nodes keep Cilium's default list, and only cilium's mount was judged.
    cilium.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=True))
    unmounted = cilium_daemonset(ip_masq_agent=True)
    _pod(unmounted)["containers"][0]["volumeMounts"][-1]["mountPath"] = "/etc/other"
    cilium.put(DAEMONSETS, _pool(unmounted))
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.ip_masq_agent_unmounted == (
        "the cilium-agent container of DaemonSet kube-system/cilium-gpu does not have the "
        "key config of the ConfigMap ip-masq-agent at /etc/config/ip-masq-agent (it is at "
        "/etc/other/ip-masq-agent)")
    cilium.put(DAEMONSETS, _pool(cilium_daemonset(ip_masq_agent=True)))
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.ip_masq_agent_unmounted is None


def test_turning_the_ip_masq_agent_on_is_refused_where_a_second_agent_daemonset_has_no_etc_config(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    # Its agents would exit at their next start; cilium's mount alone was judged.
    api_server.put(CONFIGMAPS, _cilium_config(HELM_K3S_DATA))
    api_server.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=True))
    api_server.put(DAEMONSETS, _pool(cilium_daemonset(ip_masq_agent=False)))
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    (refused,) = backend.check(plan(backend.observe(), compile_for(backend, _spec())))
    assert ("enable-ip-masq-agent: true where the cilium-agent container has no /etc/config "
            "(nothing mounted there: DaemonSet kube-system/cilium-gpu has no volume of the "
            "ConfigMap ip-masq-agent)") in refused
    # A check with no observe before it (a plan file's) lists the agent DaemonSets too.
    fresh = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    (refused_too,) = fresh.check(plan(backend.observe(), compile_for(backend, _spec())))
    assert "DaemonSet kube-system/cilium-gpu has no volume" in refused_too


def test_a_second_agent_daemonset_s_subpath_mount_names_the_restart(
    cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # cilium-gpu has the file through subPath, a copy the kubelet never updates: its
    # agents read an ip-masq-agent change only when they restart.
    cilium.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=True))
    sub = cilium_daemonset(ip_masq_agent=True)
    _pod(sub)["containers"][0]["volumeMounts"][-1].update(
        mountPath="/etc/config/ip-masq-agent", subPath="ip-masq-agent")
    cilium.put(DAEMONSETS, _pool(sub))
    backend.apply(plan(backend.observe(), compile_for(backend, _spec(cidrs=["10.0.0.0/8"]))))
    changed = plan(backend.observe(), compile_for(
        backend, _spec(cidrs=["10.0.0.0/8", "100.64.0.0/10"])))
    assert [c.action for c in changed.changes] == ["replace"]
    assert restarts_needed(backend, changed) == (
        "DaemonSet kube-system/cilium", "DaemonSet kube-system/cilium-gpu")


@pytest.mark.parametrize("off", [
    {"args": ["--enable-ip-masq-agent=false"]},
    {"env": [{"name": "CILIUM_ENABLE_IP_MASQ_AGENT", "value": "false"}]},
    {"init": ["--source=config-map:cilium-config-gpu"]},
    {"init": ["--source=config-map:cilium-base,config-map:cilium-config",
              "--deny-config-keys=enable-ip-masq-agent"]},
], ids=["flag", "variable", "own-configmap", "filtered"])
def test_a_second_agent_daemonset_keeping_its_ip_masq_agent_off_is_not_judged(
    off: dict[str, list[Any]], api_server: EmulatedApiServer, api_client: Any
) -> None:
    # cilium-gpu's agents run no ip-masq-agent whatever cilium-config says (their own flag
    # or variable, or a config init container not taking the key from cilium-config):
    # without /etc/config they start all the same, and read no file. Turning it on in
    # cilium-config was refused ("every Cilium agent would refuse to start"), and with it
    # on, the copy was judged unmounted: a conflict.
    api_server.put(CONFIGMAPS, _cilium_config(HELM_K3S_DATA))
    api_server.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=True))
    gpu = _pool(cilium_daemonset(ip_masq_agent=False))
    agent, (init,) = _pod(gpu)["containers"][0], _pod(gpu)["initContainers"]
    agent["args"] += off.get("args", [])
    agent["env"] = off.get("env", [])
    if "init" in off:
        init.update(command=["cilium-dbg", "build-config"], args=off["init"])
    api_server.put(DAEMONSETS, gpu)
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    assert backend.check(plan(backend.observe(), compile_for(backend, _spec()))) == ()
    api_server.put(CONFIGMAPS, _cilium_config(EBPF_AGENT))
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert (foreign.ip_masq_agent_unmounted, foreign.ip_masq_agent_no_directory) == (None, False)
    # Its agents on (its flag true): judged, as before.
    agent["args"][-1:] = ["--enable-ip-masq-agent=true"]
    agent["env"] = []
    init.pop("command", None)
    init.pop("args", None)
    api_server.put(DAEMONSETS, gpu)
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.ip_masq_agent_no_directory


@pytest.mark.parametrize("placed", [
    {"nodeSelector": {"pool": "gpu"}},
    {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "pool", "operator": "In", "values": ["gpu"]}]}]}}}},
], ids=["node-selector", "node-affinity"])
def test_a_second_agent_daemonset_whose_nodes_a_node_config_turns_the_agent_off_on_is_not_judged(
    placed: dict[str, Any], api_server: EmulatedApiServer, api_client: Any
) -> None:
    # cilium-gpu runs on the gpu pool alone, where a CiliumNodeConfig turns the
    # ip-masq-agent off: its agents read no file and start without /etc/config, yet
    # turning it on in cilium-config was refused ("every Cilium agent would refuse to
    # start") for cilium-gpu's lack of /etc/config, as if its nodes ran it.
    api_server.put(CONFIGMAPS, _cilium_config(HELM_K3S_DATA))
    api_server.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=True))
    gpu = _pool(cilium_daemonset(ip_masq_agent=False))
    del _pod(gpu)["nodeSelector"]
    _pod(gpu).update(copy.deepcopy(placed))
    api_server.put(DAEMONSETS, gpu)
    api_server.put(NODES, _node("a"))
    api_server.put(NODES, _node("g1", pool="gpu"))
    api_server.put(NODE_CONFIGS_V2, _node_config(
        "gpu-masq-off", {"enable-ip-masq-agent": "false"},
        selector={"matchLabels": {"pool": "gpu"}}))
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    desired = compile_for(backend, _spec())
    backend.expect(desired)
    observed = backend.observe()
    assert backend.warnings == ()
    assert backend.check(plan(observed, desired)) == ()
    api_server.put(CONFIGMAPS, _cilium_config(EBPF_AGENT))
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert (foreign.ip_masq_agent_unmounted, foreign.ip_masq_agent_no_directory) == (None, False)
    # A gpu node without the CiliumNodeConfig's label: its agent runs it, and exits.
    api_server.put(NODES, _node("g2", pool="gpu", masq="on"))
    api_server.put(NODE_CONFIGS_V2, _node_config(
        "gpu-masq-off", {"enable-ip-masq-agent": "false"},
        selector={"matchLabels": {"pool": "gpu"},
                  "matchExpressions": [{"key": "masq", "operator": "DoesNotExist"}]}))
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.ip_masq_agent_no_directory
    assert "DaemonSet kube-system/cilium-gpu has no volume" in str(foreign.ip_masq_agent_unmounted)


def test_a_second_agent_daemonset_building_its_config_otherwise_is_judged_on_every_node(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    # Its config init container reads cilium-config alone, no CiliumNodeConfig: the one
    # turning the agent off on its nodes does not reach them, which run it and exit.
    api_server.put(CONFIGMAPS, _cilium_config(HELM_K3S_DATA))
    api_server.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=True))
    gpu = _pool(cilium_daemonset(ip_masq_agent=False))
    _pod(gpu)["initContainers"][0].update(
        command=["cilium-dbg", "build-config"], args=["--source=config-map:cilium-config"])
    api_server.put(DAEMONSETS, gpu)
    api_server.put(NODES, _node("a"))
    api_server.put(NODES, _node("g1", pool="gpu"))
    api_server.put(NODE_CONFIGS_V2, _node_config(
        "gpu-masq-off", {"enable-ip-masq-agent": "false"},
        selector={"matchLabels": {"pool": "gpu"}}))
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    (refused,) = backend.check(plan(backend.observe(), compile_for(backend, _spec())))
    assert "DaemonSet kube-system/cilium-gpu has no volume" in refused


def test_a_second_agent_daemonset_being_deleted_is_not_judged(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    # Deleted in the foreground, its pods still there: its controller starts none again
    # and the garbage collector deletes them, yet its lack of /etc/config refused
    # turning the ip-masq-agent on.
    api_server.put(CONFIGMAPS, _cilium_config(HELM_K3S_DATA))
    api_server.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=True))
    gpu = _pool(cilium_daemonset(ip_masq_agent=False))
    gpu["metadata"].update(deletionTimestamp="2026-12-07T05:00:00Z",
                           finalizers=["foregroundDeletion"])
    api_server.put(DAEMONSETS, gpu)
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    assert backend.check(plan(backend.observe(), compile_for(backend, _spec()))) == ()


def _gpu_copy(api_server: EmulatedApiServer, *, env: list[dict[str, Any]] | None = None,
              init: list[str] | None = None) -> dict[str, Any]:
    """cilium (the ConfigMap mounted) and its copy cilium-gpu without /etc/config, its
    agent's ``env`` and its config init container's ``build-config`` ``init`` flags."""
    api_server.put(CONFIGMAPS, _cilium_config(HELM_K3S_DATA))
    api_server.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=True))
    gpu = _pool(cilium_daemonset(ip_masq_agent=False))
    _pod(gpu)["containers"][0]["env"] = env or []
    if init is not None:
        _pod(gpu)["initContainers"][0].update(command=["cilium-dbg", "build-config"], args=init)
    api_server.put(DAEMONSETS, gpu)
    return gpu


def _masq_from(ref: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": "CILIUM_ENABLE_IP_MASQ_AGENT", "valueFrom": ref}]


def test_a_second_agent_daemonset_s_variable_from_a_configmap_is_read_from_it(
    api_server: EmulatedApiServer, api_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # cilium-gpu's CILIUM_ENABLE_IP_MASQ_AGENT comes from its own ConfigMap, "false": its
    # agents run no ip-masq-agent whatever cilium-config says, yet turning it on in
    # cilium-config was refused for cilium-gpu's lack of /etc/config, the variable taken
    # as not known and cilium-config's value judged in its place.
    _gpu_copy(api_server, env=_masq_from(
        {"configMapKeyRef": {"name": "cilium-gpu-env", "key": "masq"}}))
    api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-gpu-env", {"masq": "false"}))
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    with caplog.at_level(logging.WARNING, logger="k3snet"):
        assert backend.check(plan(backend.observe(), compile_for(backend, _spec()))) == ()
    # Read as the kubelet sets it: a value, as if written in the template.
    assert "cilium-gpu: $CILIUM_ENABLE_IP_MASQ_AGENT=false" in caplog.text
    assert "only where the pod runs" not in caplog.text
    # The ConfigMap saying "true": its agents run it, and would exit without /etc/config.
    api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-gpu-env", {"masq": "true"}))
    (refused,) = backend.check(plan(backend.observe(), compile_for(backend, _spec())))
    assert "DaemonSet kube-system/cilium-gpu has no volume" in refused


@pytest.mark.parametrize("gone", ["key", "configmap"])
def test_an_optional_variable_from_a_configmap_without_it_is_not_set(
    gone: str, api_server: EmulatedApiServer, api_client: Any
) -> None:
    # optional: true, the key (or the whole ConfigMap) missing: the kubelet sets no
    # variable, and the agents take cilium-config's value: judged, refused.
    _gpu_copy(api_server, env=_masq_from({"configMapKeyRef": {
        "name": "cilium-gpu-env", "key": "masq", "optional": True}}))
    if gone == "key":
        api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-gpu-env", {"other": "x"}))
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    (refused,) = backend.check(plan(backend.observe(), compile_for(backend, _spec())))
    assert "DaemonSet kube-system/cilium-gpu has no volume" in refused


@pytest.mark.parametrize("ref", [
    {"fieldRef": {"fieldPath": "metadata.annotations['masq']"}},
    {"secretKeyRef": {"name": "cilium-gpu-env", "key": "masq"}},
    {"configMapKeyRef": {"name": "cilium-gpu-env", "key": "masq"}},
], ids=["field", "secret", "configmap-forbidden"])
def test_a_second_agent_daemonset_s_variable_not_known_is_a_warning_not_a_refusal(
    ref: dict[str, Any], api_server: EmulatedApiServer, api_client: Any,
    caplog: pytest.LogCaptureFixture
) -> None:
    # Its value is known only where the pod runs (or in a ConfigMap k3snet may not read):
    # its agents may run no ip-masq-agent, so its mount is not a reason to refuse.
    _gpu_copy(api_server, env=_masq_from(ref))
    api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-gpu-env", {"masq": "true"}))
    if "configMapKeyRef" in ref:
        api_server.fail(403, plural="configmaps", name="cilium-gpu-env", times=None)
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    with caplog.at_level(logging.WARNING, logger="k3snet"):
        assert backend.check(plan(backend.observe(), compile_for(backend, _spec()))) == ()
    assert "DaemonSet kube-system/cilium-gpu" in caplog.text
    assert "CILIUM_ENABLE_IP_MASQ_AGENT" in caplog.text


def test_a_second_agent_daemonset_s_own_configmap_after_cilium_config_is_read(
    api_server: EmulatedApiServer, api_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Its config init container lays its node pool's ConfigMap over cilium-config, which
    # turns the ip-masq-agent off: cilium-config's value does not reach its agents.
    _gpu_copy(api_server, init=["--source=config-map:cilium-config,config-map:cilium-gpu"])
    api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-gpu",
                                         {"enable-ip-masq-agent": "false"}))
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    assert backend.check(plan(backend.observe(), compile_for(backend, _spec()))) == ()
    # Without the key (or the key filtered), cilium-config's value is theirs: refused.
    api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-gpu", {"debug": "true"}))
    (refused,) = backend.check(plan(backend.observe(), compile_for(backend, _spec())))
    assert "DaemonSet kube-system/cilium-gpu has no volume" in refused
    api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-gpu",
                                         {"enable-ip-masq-agent": "false"}))
    _gpu_copy(api_server, init=["--source=config-map:cilium-config,config-map:cilium-gpu",
                                "--allow-config-keys=debug"])
    (refused,) = backend.check(plan(backend.observe(), compile_for(backend, _spec())))
    assert "DaemonSet kube-system/cilium-gpu has no volume" in refused
    # Not to be read: a warning, not a refusal.
    _gpu_copy(api_server, init=["--source=config-map:cilium-config,config-map:cilium-gpu"])
    api_server.fail(403, plural="configmaps", name="cilium-gpu", times=None)
    with caplog.at_level(logging.WARNING, logger="k3snet"):
        assert backend.check(plan(backend.observe(), compile_for(backend, _spec()))) == ()
    assert "ConfigMap kube-system/cilium-gpu" in caplog.text


@pytest.mark.parametrize("where", ["agent", "init"])
def test_a_second_agent_daemonset_run_through_a_shell_s_script_is_a_warning_not_a_refusal(
    where: str, api_server: EmulatedApiServer, api_client: Any,
    caplog: pytest.LogCaptureFixture
) -> None:
    # Its agent's flags, or its config init container's sources, are in a script k3snet
    # does not run: its agents may run no ip-masq-agent, and turning it on was refused.
    gpu = _gpu_copy(api_server)
    script = ["sh", "-c", "exec cilium-agent --config-dir=/tmp/cilium/config-map"]
    if where == "agent":
        _pod(gpu)["containers"][0].update(command=script, args=[])
    else:
        _pod(gpu)["initContainers"][0].update(
            command=["sh", "-c", "cilium-dbg build-config --source=config-map:cilium-gpu"])
    api_server.put(DAEMONSETS, gpu)
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    with caplog.at_level(logging.WARNING, logger="k3snet"):
        assert backend.check(plan(backend.observe(), compile_for(backend, _spec()))) == ()
    assert any("DaemonSet kube-system/cilium-gpu" in r.getMessage()
               and "is not judged" in r.getMessage() for r in caplog.records)


def test_a_second_agent_daemonset_s_variable_from_a_configmap_is_read_untrimmed(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    # A ConfigMap's value from a YAML block scalar ends in a newline; the kubelet sets the
    # variable so, and viper's GetBool (Go's ParseBool, untrimmed, unlike the files of the
    # config directory) reads "true\n" as false: cilium-gpu's agents run no ip-masq-agent,
    # yet k3snet trimmed it and refused turning it on for cilium-gpu's lack of /etc/config.
    _gpu_copy(api_server, env=_masq_from(
        {"configMapKeyRef": {"name": "cilium-gpu-env", "key": "masq"}}))
    api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-gpu-env", {"masq": "true\n"}))
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    assert backend.check(plan(backend.observe(), compile_for(backend, _spec()))) == ()


def test_a_second_agent_daemonset_s_own_configmap_turning_the_ip_masq_agent_on_is_judged(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    # Its config init container lays cilium-gpu over cilium-config, and cilium-gpu turns
    # the ip-masq-agent on (a block scalar's "true\n": the config directory's files are
    # trimmed): its agents run it and read /etc/config as a variable turning it on makes
    # them do, yet k3snet took any value of the key as keeping it off and judged no mount.
    _gpu_copy(api_server, init=["--source=config-map:cilium-config,config-map:cilium-gpu"])
    api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-gpu",
                                         {"enable-ip-masq-agent": "true\n"}))
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    (refused,) = backend.check(plan(backend.observe(), compile_for(backend, _spec())))
    assert "DaemonSet kube-system/cilium-gpu has no volume" in refused
    # "false" (or a value viper reads as false) keeps it off: not judged.
    api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-gpu",
                                         {"enable-ip-masq-agent": "no"}))
    assert backend.check(plan(backend.observe(), compile_for(backend, _spec()))) == ()


def test_a_second_agent_daemonset_s_variable_from_cilium_config_s_own_key_follows_the_write(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    # cilium-gpu's CILIUM_ENABLE_IP_MASQ_AGENT comes from cilium-config's own
    # enable-ip-masq-agent: the kubelet sets it to the value k3snet writes there at the
    # next start of its pods. k3snet took the value before the write ("false") as keeping
    # the ip-masq-agent off, and did not judge cilium-gpu's lack of /etc/config.
    _gpu_copy(api_server, env=_masq_from({"configMapKeyRef": {
        "name": "cilium-config", "key": "enable-ip-masq-agent", "optional": True}}))
    api_server.put(CONFIGMAPS, _cilium_config({**HELM_K3S_DATA,
                                               "enable-ip-masq-agent": "false"}))
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    (refused,) = backend.check(plan(backend.observe(), compile_for(backend, _spec())))
    assert "DaemonSet kube-system/cilium-gpu has no volume" in refused


def test_a_second_agent_daemonset_s_variable_from_another_cilium_config_key_is_a_warning(
    api_server: EmulatedApiServer, api_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # From another key of cilium-config k3snet writes, the variable takes the value k3snet
    # leaves there at the next start of cilium-gpu's pods: the value read before the write
    # ("false" keeping the ip-masq-agent off) is not theirs then, so it is not known.
    _gpu_copy(api_server, env=_masq_from({"configMapKeyRef": {
        "name": "cilium-config", "key": "enable-bpf-masquerade"}}))
    api_server.put(CONFIGMAPS, _cilium_config({**HELM_K3S_DATA,
                                               "enable-bpf-masquerade": "false"}))
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    with caplog.at_level(logging.WARNING, logger="k3snet"):
        assert backend.check(plan(backend.observe(), compile_for(backend, _spec()))) == ()
    assert "taken from the key enable-bpf-masquerade of ConfigMap kube-system/cilium-config, " \
        "which k3snet writes" in caplog.text


@pytest.mark.parametrize("beside", ["envFrom", "earlier"])
def test_a_second_agent_daemonset_s_variable_from_a_configmap_wins_over_envfrom(
    beside: str, api_server: EmulatedApiServer, api_client: Any,
    caplog: pytest.LogCaptureFixture
) -> None:
    # The kubelet sets the last env entry over an envFrom's (and an earlier entry's) value:
    # cilium-gpu's ConfigMap turns the ip-masq-agent on, and its lack of /etc/config was not
    # judged (the variable taken as not known for the envFrom beside it).
    env = _masq_from({"configMapKeyRef": {
        "name": "cilium-gpu-env", "key": "masq", "optional": True}})
    if beside == "earlier":
        env.insert(0, {"name": "CILIUM_ENABLE_IP_MASQ_AGENT", "value": "false"})
    gpu = _gpu_copy(api_server, env=env)
    if beside == "envFrom":
        _pod(gpu)["containers"][0]["envFrom"] = [
            {"prefix": "CILIUM_ENABLE_", "configMapRef": {"name": "cilium-gpu-all"}}]
        api_server.put(DAEMONSETS, gpu)
    api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-gpu-env", {"masq": "true"}))
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    (refused,) = backend.check(plan(backend.observe(), compile_for(backend, _spec())))
    assert "DaemonSet kube-system/cilium-gpu has no volume" in refused
    # The key missing, the optional ref sets nothing: the envFrom's (or the earlier
    # entry's) value is left, not known here: a warning, not a refusal.
    api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-gpu-env", {}))
    with caplog.at_level(logging.WARNING, logger="k3snet"):
        assert backend.check(plan(backend.observe(), compile_for(backend, _spec()))) == ()
    assert "an envFrom's or an earlier env entry's" in caplog.text


def test_a_copy_s_variable_from_cilium_config_s_own_key_is_judged_whatever_its_sources(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    # cilium-gpu's config init container reads its own ConfigMap alone, but its
    # CILIUM_ENABLE_IP_MASQ_AGENT comes from cilium-config's enable-ip-masq-agent, which
    # k3snet turns on: the variable, over the config directory, runs the ip-masq-agent on
    # its nodes. k3snet took the key as not taken from cilium-config (its agents keeping
    # their own value) and did not judge cilium-gpu's lack of /etc/config.
    _gpu_copy(api_server, env=_masq_from({"configMapKeyRef": {
        "name": "cilium-config", "key": "enable-ip-masq-agent"}}),
        init=["--source=config-map:cilium-gpu"])
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    (refused,) = backend.check(plan(backend.observe(), compile_for(backend, _spec())))
    assert "DaemonSet kube-system/cilium-gpu has no volume" in refused


def _configmap_reads(server: EmulatedApiServer, name: str) -> int:
    return sum(1 for method, path, _ in server.requests()
               if method == "GET" and path.split("?")[0].endswith(f"/configmaps/{name}"))


def test_a_configmap_many_agent_daemonsets_take_a_variable_from_is_read_once_a_pass(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    # Four node pools' copies, each agent's CILIUM_ENABLE_IP_MASQ_AGENT from one
    # ConfigMap: it was read again for every DaemonSet, for its flags and again for its
    # mount, and again by the check after the observe.
    gpu = _gpu_copy(api_server, env=_masq_from(
        {"configMapKeyRef": {"name": "cilium-pools-env", "key": "masq"}}))
    for pool in ("arm", "edge", "big"):
        other = _pool(copy.deepcopy(gpu), f"cilium-{pool}")
        _pod(other)["nodeSelector"] = {"pool": pool}
        api_server.put(DAEMONSETS, other)
    api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-pools-env", {"masq": "false"}))
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    spec = compile_for(backend, _spec())
    assert backend.check(plan(backend.observe(), spec)) == ()
    assert _configmap_reads(api_server, "cilium-pools-env") == 1  # observe's; check's: none
    # The next pass reads it again: a change since is seen.
    api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-pools-env", {"masq": "true"}))
    p = plan(backend.observe(), spec)
    (refused,) = backend.check(p)
    assert "has no volume" in refused
    assert _configmap_reads(api_server, "cilium-pools-env") == 2
    # A check reading the cluster again (the one before took observe's read): once more.
    assert backend.check(p) == (refused,)
    assert _configmap_reads(api_server, "cilium-pools-env") == 3
