"""The cilium backend: cilium-config and the ip-masq-agent ConfigMap (emulated API server).

The ConfigMaps are shaped like those of Cilium installed by Helm on K3s
(``--flannel-backend=none``; ``helm install cilium cilium/cilium -n kube-system
--set ipam.operator.clusterPoolIPv4PodCIDRList=10.42.0.0/16``): tunnel mode with
VXLAN, iptables masquerading (no ``enable-bpf-masquerade`` key: the chart leaves
it out), no ip-masq-agent ConfigMap.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from k3snet.backends.cilium import (
    ALLOW_DISRUPTIVE_HINT,
    OWNED_ANNOTATION,
    WRITTEN_ANNOTATION,
    CiliumBackend,
)
from k3snet.backends.cni_restart import CHANGED_ANNOTATION
from k3snet.backends.registry import create_backend
from k3snet.converge import compile_for
from k3snet.errors import ApplyError, BackendError, ModelError, PlanError, RollbackError
from k3snet.model.cilium import (
    CILIUM_CONTEXT_KEYS,
    CILIUM_DEFAULT_TARGET,
    CILIUM_KEYS,
    CiliumConfig,
    CiliumMasquerade,
    startup_problems,
)
from k3snet.model.state import State, object_from_dict
from k3snet.planner import Change, Plan, plan
from k3snet.spec import Spec, seed_spec
from k3snet.testing import run_conformance
from k3snet.testing.kube import EmulatedApiServer
from tests.cluster.workloads import CONFIGMAPS, configmap

pytestmark = pytest.mark.cluster

TARGET = CILIUM_DEFAULT_TARGET

# The masquerade-relevant part of what Helm renders, with some of the other keys
# around it: all of them must survive byte for byte.
HELM_K3S_DATA = {
    "identity-allocation-mode": "crd",
    "debug": "false",
    "enable-ipv4": "true",
    "enable-ipv6": "false",
    "monitor-aggregation": "medium",
    "bpf-map-dynamic-size-ratio": "0.0025",
    "cluster-name": "default",
    "routing-mode": "tunnel",
    "tunnel-protocol": "vxlan",
    "enable-ipv4-masquerade": "true",
    "enable-ipv6-masquerade": "true",
    "enable-masquerade-to-route-source": "false",
    "enable-xt-socket-fallback": "true",
    "auto-direct-node-routes": "false",
    "kube-proxy-replacement": "false",
    "ipam": "cluster-pool",
    "cluster-pool-ipv4-cidr": "10.42.0.0/16",
    "cluster-pool-ipv4-mask-size": "24",
    "write-cni-conf-when-ready": "/host/etc/cni/net.d/05-cilium.conflist",
    "cni-exclusive": "true",
    "extra-config": "  odd  spacing\n kept\n",
}

# Cilium's own example ip-masq-agent ConfigMap (examples/kubernetes-ip-masq-agent/rfc1918.yaml).
RFC1918_YAML = """nonMasqueradeCIDRs:
- 10.0.0.0/8
- 172.16.0.0/12
- 192.168.0.0/16
masqLinkLocal: true
"""


def _cilium_config(data: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cilium-config", "namespace": "kube-system",
                     "labels": {"app.kubernetes.io/managed-by": "Helm"},
                     "annotations": {"meta.helm.sh/release-name": "cilium",
                                     "meta.helm.sh/release-namespace": "kube-system"}},
        "data": dict(HELM_K3S_DATA if data is None else data),
    }


def _ip_masq_agent(text: str) -> dict[str, Any]:
    return configmap("kube-system", "ip-masq-agent", {"config": text})


def _stored(server: EmulatedApiServer, name: str = "cilium-config") -> dict[str, Any] | None:
    return server.get(CONFIGMAPS, name, "kube-system")


def _data(server: EmulatedApiServer, name: str = "cilium-config") -> dict[str, str]:
    stored = _stored(server, name)
    assert stored is not None
    return dict(stored["data"])


def _annotations(server: EmulatedApiServer, name: str = "cilium-config") -> dict[str, str]:
    stored = _stored(server, name)
    assert stored is not None
    return dict(stored["metadata"].get("annotations") or {})


def _converge(backend: CiliumBackend, desired: State) -> Plan:
    p = plan(backend.observe(), desired)
    backend.apply(p)
    return p


@pytest.fixture
def k3s_cilium(api_server: EmulatedApiServer) -> EmulatedApiServer:
    api_server.put(CONFIGMAPS, _cilium_config())
    return api_server


@pytest.fixture
def backend(k3s_cilium: EmulatedApiServer, api_client: Any) -> CiliumBackend:
    return CiliumBackend(api_client=api_client, timeout=10.0)  # generous: a loaded machine


def cilium_configs(target: str = TARGET) -> SearchStrategy[CiliumConfig]:
    """Owned Cilium configs: a random subset of the keys k3snet sets, with valid values."""
    settings = st.fixed_dictionaries({}, optional={
        "routing-mode": st.sampled_from(("tunnel", "native")),
        "tunnel-protocol": st.sampled_from(("vxlan", "geneve")),
        "enable-ipv4-masquerade": st.sampled_from(("true", "false")),
        "enable-bpf-masquerade": st.sampled_from(("true", "false")),
        "enable-ip-masq-agent": st.sampled_from(("true", "false")),
        "ipv4-native-routing-cidr": st.sampled_from(("10.42.0.0/16", "10.0.0.0/8")),
        "egress-masquerade-interfaces": st.sampled_from(("eth0", "eth+")),
    })
    agent = st.none() | st.fixed_dictionaries(
        {"nonMasqueradeCIDRs": st.lists(st.sampled_from(("10.0.0.0/8", "192.168.0.0/16",
                                                         "172.16.0.0/12")),
                                        unique=True, max_size=2)},
        optional={"masqLinkLocal": st.booleans(), "masqLinkLocalIPv6": st.booleans()})
    # Only configs the Cilium agent starts with over the Helm install's keys: the
    # backend refuses the others (test_refuses_a_config_the_cilium_agent_refuses_to_start_with).
    return st.builds(lambda s, a: CiliumConfig(target, settings=s, ip_masq_agent=a),
                     settings.filter(_cilium_starts_with), agent)


def _cilium_starts_with(settings: dict[str, str]) -> bool:
    helm = {k: v for k, v in HELM_K3S_DATA.items() if k in (*CILIUM_KEYS, *CILIUM_CONTEXT_KEYS)}
    return not startup_problems(CiliumConfig(TARGET, settings={**helm, **settings}))


# ---------------------------------------------------------------- conformance


def test_conforms_and_leaves_both_configmaps_as_found(k3s_cilium: EmulatedApiServer,
                                                      api_client: Any) -> None:
    before = _stored(k3s_cilium)
    run_conformance(lambda: CiliumBackend(api_client=api_client, allow_disruptive=True),
                    objects=cilium_configs(), max_examples=15,
                    reopen=lambda _: CiliumBackend(api_client=api_client, allow_disruptive=True))
    after = _stored(k3s_cilium)
    assert before is not None
    assert after is not None
    assert after["data"] == before["data"]
    # The restart stamp alone stays: the settings given back are read at the agents'
    # start too, and that restart is followed (k3snet.io/changed-at).
    annotations = dict(after["metadata"]["annotations"])
    assert annotations.pop(CHANGED_ANNOTATION, None) is not None
    assert annotations == before["metadata"]["annotations"]
    assert after["metadata"]["labels"] == before["metadata"]["labels"]
    assert _stored(k3s_cilium, "ip-masq-agent") is None  # created and deleted again


def test_conforms_with_a_yaml_ip_masq_agent_config_and_gives_its_text_back(
    k3s_cilium: EmulatedApiServer, api_client: Any
) -> None:
    k3s_cilium.put(CONFIGMAPS, _ip_masq_agent(RFC1918_YAML))
    run_conformance(lambda: CiliumBackend(api_client=api_client, allow_disruptive=True),
                    objects=cilium_configs(), max_examples=15)
    assert _data(k3s_cilium, "ip-masq-agent") == {"config": RFC1918_YAML}
    assert OWNED_ANNOTATION not in _annotations(k3s_cilium, "ip-masq-agent")


# ---------------------------------------------------------------- observe, ownership


def test_observes_helm_defaults_on_k3s_as_foreign(backend: CiliumBackend) -> None:
    state = backend.observe()
    assert not state.owned
    (foreign,) = state.foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.value("routing-mode") == "tunnel"
    assert foreign.value("enable-bpf-masquerade") == "false"  # absent: the agent's default
    assert foreign.ip_masq_agent is None  # no ConfigMap: Cilium's default list
    assert "debug" not in foreign.settings  # only the keys that decide masquerading


def test_sets_only_the_asked_key_and_puts_the_found_value_back(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    wanted = CiliumConfig(TARGET, settings={"enable-ipv4-masquerade": "false",
                                            "egress-masquerade-interfaces": "eth0"})
    p = _converge(backend, State(owned=[wanted]))
    assert [c.action for c in p] == ["add"]
    data = _data(k3s_cilium)
    assert data == {**HELM_K3S_DATA, "enable-ipv4-masquerade": "false",
                    "egress-masquerade-interfaces": "eth0"}
    record = json.loads(_annotations(k3s_cilium)[OWNED_ANNOTATION])
    assert record == {"enable-ipv4-masquerade": "true", "egress-masquerade-interfaces": None}
    state = backend.observe()
    assert state.owned == {wanted}
    (foreign,) = state.foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.value("enable-ipv4-masquerade") == "true"  # as it would be without k3snet
    _converge(backend, State())
    assert _data(k3s_cilium) == HELM_K3S_DATA
    assert OWNED_ANNOTATION not in _annotations(k3s_cilium)
    assert _annotations(k3s_cilium)["meta.helm.sh/release-name"] == "cilium"


def test_a_merge_patch_names_only_the_owned_key(k3s_cilium: EmulatedApiServer,
                                                backend: CiliumBackend) -> None:
    _converge(backend, State(owned=[CiliumConfig(TARGET, settings={
        "enable-masquerade-to-route-source": "true"})]))
    patches = [body for method, path, body in k3s_cilium.requests()
               if method == "PATCH" and path.endswith("/cilium-config")]
    assert patches
    assert patches[-1]["data"] == {"enable-masquerade-to-route-source": "true"}


def test_never_changes_a_key_it_did_not_set(backend: CiliumBackend) -> None:
    foreign = next(iter(backend.observe().foreign))
    with pytest.raises(PlanError, match="does not own"):
        backend.apply(Plan(changes=[Change.delete(foreign)]))
    assert backend.check(Plan(changes=[Change.delete(foreign)]))


def test_values_padded_with_whitespace_are_read_trimmed_as_the_cilium_agent_reads_them(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    # The agent reads each file of the mounted ConfigMap trimmed (ReadDirConfig): a
    # block scalar's "native\n" is native. Read raw, the value was "not met", k3snet
    # planned to write it again and refused that as a disruptive routing-mode change.
    api_server.put(CONFIGMAPS, _cilium_config({
        **HELM_K3S_DATA, "routing-mode": "native\n", "tunnel-protocol": " geneve ",
        "ipv4-native-routing-cidr": "10.42.0.0/16\n", "ipam": "cluster-pool\n",
        "cluster-pool-ipv4-cidr": "10.0.0.0/8", "egress-masquerade-interfaces": "eth1\n"}))
    backend = CiliumBackend(api_client=api_client, timeout=10.0)
    wanted = CiliumConfig(TARGET, settings={"routing-mode": "native",
                                            "tunnel-protocol": "geneve",
                                            "egress-masquerade-interfaces": "eth1"})
    p = plan(backend.observe(), State(owned=[wanted]))
    assert p.empty
    assert [n.status for n in p.notes] == ["met"]
    change = Change.add(wanted)
    assert backend.disruptive(change) is None
    assert backend.check(Plan(changes=[change])) == ()
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    expectation = CiliumMasquerade(TARGET, masquerade=[("192.168.2.0/24", "eth0")],
                                   pod_cidrs=["10.42.0.0/16"])
    problems = expectation.problems(foreign)
    # ipam "cluster-pool\n" is the cluster pool: its 10.0.0.0/8 is judged.
    assert any("Cilium gives pods addresses from 10.0.0.0/8" in p for p in problems), problems
    assert any("traffic leaving eth1 (egress-masquerade-interfaces)" in p for p in problems)
    assert not any("\n" in p for p in problems)


def test_a_value_met_by_the_cluster_is_not_written(k3s_cilium: EmulatedApiServer,
                                                   backend: CiliumBackend) -> None:
    wanted = CiliumConfig(TARGET, settings={"routing-mode": "tunnel",
                                            "enable-bpf-masquerade": "false"})
    p = plan(backend.observe(), State(owned=[wanted]))
    assert p.empty
    assert [n.status for n in p.notes] == ["met"]


def test_refuses_to_create_cilium_config(api_server: EmulatedApiServer, api_client: Any) -> None:
    backend = CiliumBackend(api_client=api_client)
    assert backend.observe() == State()
    with pytest.raises(ApplyError, match="does not exist"):
        backend.apply(Plan(changes=[Change.add(CiliumConfig(TARGET, settings={
            "enable-bpf-masquerade": "true"}))]))


def test_a_concurrent_change_undoes_the_first_write(k3s_cilium: EmulatedApiServer,
                                                    api_client: Any) -> None:
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    k3s_cilium.fail(409, method="POST", plural="configmaps")
    # (Cilium's ip-masq-agent runs only with eBPF masquerading: the agent refuses to
    # start with one and not the other.)
    wanted = CiliumConfig(TARGET, settings={"enable-bpf-masquerade": "true",
                                            "enable-ip-masq-agent": "true"},
                          ip_masq_agent={"nonMasqueradeCIDRs": ["10.0.0.0/8"]})
    with pytest.raises(ApplyError, match="409"):
        _converge(backend, State(owned=[wanted]))
    assert _data(k3s_cilium) == HELM_K3S_DATA
    assert OWNED_ANNOTATION not in _annotations(k3s_cilium)
    assert _stored(k3s_cilium, "ip-masq-agent") is None


def _meanwhile(server: EmulatedApiServer, api_client: Any, method: str,
               edit: dict[str, str], *, times: int = 1) -> None:
    """Before each of the next ``times`` ``method`` requests (the first a write of
    k3snet's that fails), someone else (Cilium's operator, ``helm upgrade``) sets
    ``edit`` in cilium-config."""
    real = api_client.rest_client.pool_manager.request
    left = [times]

    def request(verb: str, url: str, **kwargs: Any) -> Any:
        if verb == method and left[0] > 0:
            left[0] -= 1
            stored = _stored(server)
            assert stored is not None
            stored["data"].update(edit)
            server.put(CONFIGMAPS, stored)
        return real(verb, url, **kwargs)

    api_client.rest_client.pool_manager.request = request


def _wanted() -> CiliumConfig:
    # (Cilium's ip-masq-agent runs only with eBPF masquerading.)
    return CiliumConfig(TARGET, settings={"enable-bpf-masquerade": "true",
                                          "enable-ip-masq-agent": "true"},
                        ip_masq_agent={"nonMasqueradeCIDRs": ["10.0.0.0/8"]})


def test_the_undo_puts_k3snets_keys_back_over_another_keys_change_meanwhile(
        k3s_cilium: EmulatedApiServer, api_client: Any) -> None:
    # The ip-masq-agent ConfigMap's create fails after another key of cilium-config
    # changed (Helm's debug): the undo's patch names the version k3snet wrote, 409. It
    # was refused, k3snet's keys left on (RollbackError, exit 5); its keys being as it
    # left them, the undo is sent again over the version read, the other change kept.
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    changes = plan(backend.observe(), State(owned=[_wanted()]))
    k3s_cilium.fail(500, method="POST", plural="configmaps")
    _meanwhile(k3s_cilium, api_client, "POST", {"debug": "true"})
    with pytest.raises(ApplyError) as info:
        backend.apply(changes)
    assert not isinstance(info.value, RollbackError), info.value
    assert _data(k3s_cilium) == {**HELM_K3S_DATA, "debug": "true"}
    assert OWNED_ANNOTATION not in _annotations(k3s_cilium)
    assert WRITTEN_ANNOTATION not in _annotations(k3s_cilium)
    assert not backend.observe().owned


def test_the_undo_leaves_a_key_of_k3snets_changed_meanwhile_and_names_it(
        k3s_cilium: EmulatedApiServer, api_client: Any) -> None:
    # Helm sets one of k3snet's keys (and another) meanwhile: theirs, not overwritten.
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    changes = plan(backend.observe(), State(owned=[_wanted()]))
    k3s_cilium.fail(500, method="POST", plural="configmaps")
    _meanwhile(k3s_cilium, api_client, "POST",
               {"debug": "true", "enable-ip-masq-agent": "false"})
    with pytest.raises(RollbackError) as info:
        backend.apply(changes)
    assert ("take back k3snet's write of ConfigMap kube-system/cilium-config: conflict "
            "(409): changed by someone else since: enable-ip-masq-agent; not overwritten"
            in str(info.value))
    data = _data(k3s_cilium)
    assert data["enable-ip-masq-agent"] == "false"
    assert data["enable-bpf-masquerade"] == "true"  # k3snet's, left with it
    assert data["debug"] == "true"


def test_the_undo_over_other_keys_changing_at_every_send_stops_after_five_tries(
        k3s_cilium: EmulatedApiServer, api_client: Any) -> None:
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    changes = plan(backend.observe(), State(owned=[_wanted()]))
    k3s_cilium.fail(500, method="POST", plural="configmaps")
    # Before the create, then before each of the undo's patches but the first's.
    _meanwhile(k3s_cilium, api_client, "POST", {"debug": "true"})
    sends: list[str] = []
    real = api_client.rest_client.pool_manager.request

    def request(verb: str, url: str, **kwargs: Any) -> Any:
        if verb == "PATCH":
            sends.append(url)
            if len(sends) > 2:  # (the first: k3snet's apply)
                stored = _stored(k3s_cilium)
                assert stored is not None
                stored["data"]["debug"] = str(len(sends))
                k3s_cilium.put(CONFIGMAPS, stored)
        return real(verb, url, **kwargs)

    api_client.rest_client.pool_manager.request = request
    with pytest.raises(RollbackError, match="changed again at each of 5 tries"):
        backend.apply(changes)
    assert len(sends) == 1 + 5
    assert _data(k3s_cilium)["enable-bpf-masquerade"] == "true"


@pytest.mark.parametrize("annotation", [OWNED_ANNOTATION, WRITTEN_ANNOTATION])
def test_the_undo_leaves_k3snets_record_rewritten_meanwhile_and_names_it(
        k3s_cilium: EmulatedApiServer, api_client: Any, annotation: str) -> None:
    # Another k3snet (an apply from another node) or `kubectl annotate --overwrite`
    # rewrites one of k3snet's records of cilium-config meanwhile, no key changed: the
    # undo over it would put back the records as they were before this apply, and
    # overwrite what that other writer says it owns. Refused, named, left theirs.
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    changes = plan(backend.observe(), State(owned=[_wanted()]))
    k3s_cilium.fail(500, method="POST", plural="configmaps")
    real = api_client.rest_client.pool_manager.request
    theirs = json.dumps({"debug": "true"}, sort_keys=True)

    def request(verb: str, url: str, **kwargs: Any) -> Any:
        if verb == "POST":  # the ip-masq-agent create about to fail
            stored = _stored(k3s_cilium)
            assert stored is not None
            stored["metadata"]["annotations"][annotation] = theirs
            k3s_cilium.put(CONFIGMAPS, stored)
        return real(verb, url, **kwargs)

    api_client.rest_client.pool_manager.request = request
    with pytest.raises(RollbackError) as info:
        backend.apply(changes)
    assert (f"changed by someone else since: annotation {annotation}; not overwritten"
            in str(info.value)), info.value
    assert _annotations(k3s_cilium)[annotation] == theirs
    assert _data(k3s_cilium)["enable-ip-masq-agent"] == "true"  # k3snet's, left with it


# ---------------------------------------------------------------- the ip-masq-agent document


def test_edits_the_helm_json_ip_masq_agent_config_and_restores_it(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    helm_text = '{"masqLinkLocal":false,"nonMasqueradeCIDRs":["10.0.0.0/8"],"x-note":"kept"}'
    k3s_cilium.put(CONFIGMAPS, _ip_masq_agent(helm_text))
    wanted = CiliumConfig(TARGET, ip_masq_agent={"nonMasqueradeCIDRs": ["10.0.0.0/8",
                                                                        "172.16.0.0/12"]})
    _converge(backend, State(owned=[wanted]))
    written = _data(k3s_cilium, "ip-masq-agent")["config"]
    assert json.loads(written) == {"masqLinkLocal": False, "x-note": "kept",
                                   "nonMasqueradeCIDRs": ["10.0.0.0/8", "172.16.0.0/12"]}
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.ip_masq_agent is not None
    assert foreign.ip_masq_agent["nonMasqueradeCIDRs"] == ["10.0.0.0/8"]
    _converge(backend, State())
    assert _data(k3s_cilium, "ip-masq-agent") == {"config": helm_text}


def test_a_yaml_ip_masq_agent_config_stays_yaml(k3s_cilium: EmulatedApiServer,
                                                backend: CiliumBackend) -> None:
    k3s_cilium.put(CONFIGMAPS, _ip_masq_agent(RFC1918_YAML))
    _converge(backend, State(owned=[CiliumConfig(TARGET, ip_masq_agent={
        "masqLinkLocal": False})]))
    written = _data(k3s_cilium, "ip-masq-agent")["config"]
    assert written == RFC1918_YAML.replace("masqLinkLocal: true", "masqLinkLocal: false")
    _converge(backend, State())
    assert _data(k3s_cilium, "ip-masq-agent") == {"config": RFC1918_YAML}


@pytest.mark.parametrize("text", [
    "nonMasqueradeCIDRs: 10.0.0.0/8\n",  # a string, not a list
    "nonMasqueradeCIDRs: [10.0.0.0/33]\n",
    "masqLinkLocal: \"yes\"\n",
    "[1, 2]\n",
    "nonMasqueradeCIDRs: [10.0.0.0/8\n",
])
def test_an_ip_masq_agent_config_cilium_refuses_is_an_error_naming_it(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend, text: str
) -> None:
    k3s_cilium.put(CONFIGMAPS, _ip_masq_agent(text))
    with pytest.raises(BackendError, match="ConfigMap kube-system/ip-masq-agent"):
        backend.observe()
    wanted = CiliumConfig(TARGET, settings={"enable-bpf-masquerade": "true"})
    assert backend.check(Plan(changes=[Change.add(wanted)]))


def test_reads_keys_in_any_case_as_cilium_does(k3s_cilium: EmulatedApiServer,
                                               backend: CiliumBackend) -> None:
    k3s_cilium.put(CONFIGMAPS, _ip_masq_agent("nonmasqueradecidrs: [192.168.0.0/16]\n"))
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.ip_masq_agent == {"nonMasqueradeCIDRs": ["192.168.0.0/16"]}


# Cilium reads the file with k8s.io/apimachinery's yaml.ToJSON, then Go's json.Unmarshal
# (pkg/ipmasq/ipmasq.go): a text whose first non-space character is "{" is JSON, taken
# as it is; any other text is YAML.
@pytest.mark.parametrize(("text", "fields"), [
    # Tabs are JSON whitespace (PyYAML refused this text).
    ('{\n\t"nonMasqueradeCIDRs": [\n\t\t"10.0.0.0/8"\n\t],\n\t"masqLinkLocal": true\n}\n',
     {"nonMasqueradeCIDRs": ["10.0.0.0/8"], "masqLinkLocal": True}),
    # Go's encoding/json: the last of duplicate keys wins, whatever their case...
    ('{"masqLinkLocal": false, "masqLinkLocal": true}', {"masqLinkLocal": True}),
    ('{"nonMasqueradeCIDRs": ["10.0.0.0/8"], "NonMasqueradeCIDRs": ["192.168.0.0/16"]}',
     {"nonMasqueradeCIDRs": ["192.168.0.0/16"]}),
    ('{"NONMASQUERADECIDRS": ["10.0.0.0/8"], "nonMasqueradeCIDRs": ["192.168.0.0/16"], '
     '"NONMASQUERADECIDRS": ["172.16.0.0/12"]}', {"nonMasqueradeCIDRs": ["172.16.0.0/12"]}),
    # ...and null leaves a bool as it was, and makes a list empty.
    ('{"masqLinkLocal": true, "masqLinkLocal": null}', {"masqLinkLocal": True}),
    ('{"masqLinkLocal": null, "nonMasqueradeCIDRs": null}', {"nonMasqueradeCIDRs": []}),
    ('\n \t{"nonMasqueradeCIDRs": ["10.0.0.0/8"], "other": {"deep": [1, 2.5]}}',
     {"nonMasqueradeCIDRs": ["10.0.0.0/8"]}),
])
def test_a_json_ip_masq_agent_config_is_read_as_cilium_reads_it(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend, text: str, fields: dict[str, Any]
) -> None:
    k3s_cilium.put(CONFIGMAPS, _ip_masq_agent(text))
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.ip_masq_agent == fields


@pytest.mark.parametrize(("text", "reason"), [
    ("{nonMasqueradeCIDRs: [10.0.0.0/8]}\n", "not JSON"),  # flow YAML: Cilium takes it as JSON
    ("  {'nonMasqueradeCIDRs': ['10.0.0.0/8']}", "not JSON"),
    ('{"nonMasqueradeCIDRs": ["10.0.0.0/8"]}\nmasqLinkLocal: true\n', "not JSON"),
    ('{"nonMasqueradeCIDRs": ["10.0.0.0/8"], "other": NaN}', "NaN is not JSON"),
    ('{"other": -Infinity}', "Infinity is not JSON"),
    # Go's unicode.IsSpace skips U+3000 to find the "{", but JSON has no such space.
    ('\u3000{"nonMasqueradeCIDRs": ["10.0.0.0/8"]}', "not JSON"),
    ('{"a": ' + "[" * 500 + "]" * 500 + "}", "deeper than 128 levels"),
    ("a: " + "[" * 500 + "]" * 500 + "\n", "deeper than 128 levels"),  # YAML
    ("a:\n" + "".join(" " * i + "- \n" for i in range(1, 200)), "deeper than 128 levels"),
])
def test_an_ip_masq_agent_config_cilium_cannot_read_is_an_error_naming_it(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend, text: str, reason: str
) -> None:
    k3s_cilium.put(CONFIGMAPS, _ip_masq_agent(text))
    with pytest.raises(BackendError, match="ConfigMap kube-system/ip-masq-agent") as info:
        backend.observe()
    assert reason in str(info.value)


def _laughs(levels: int, fanout: int, key: str = "unread") -> str:
    """A YAML document whose aliases expand to ``fanout ** levels`` values under ``key``."""
    lines = [f"l0: &l0 [{', '.join(['10.0.0.0/8'] * fanout)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fanout)}]" for i in range(1, levels)]
    return "\n".join([*lines, f"{key}: *l{levels - 1}", "masqLinkLocal: true", ""])


def test_a_yaml_config_sharing_structures_through_aliases_is_judged_in_its_size(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # 9**9 paths through 9 lists: neither the nesting check nor the aliasing check may
    # walk every path. Go's YAML decoder (Cilium's) refuses it: excessive aliasing.
    k3s_cilium.put(CONFIGMAPS, _ip_masq_agent(_laughs(9, 9)))
    start = time.perf_counter()
    with pytest.raises(BackendError, match="excessive aliasing"):
        backend.observe()
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("key", ["unread", "nonMasqueradeCIDRs"])
def test_yaml_aliases_are_read_or_refused_as_go_s_yaml_decoder_does(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend, key: str
) -> None:
    # go-yaml's own reference: 10**3 values through aliases decode, 10**4 are "excessive
    # aliasing". Read as a tree, 2**40 of them under nonMasqueradeCIDRs hung the agent.
    k3s_cilium.put(CONFIGMAPS, _ip_masq_agent(_laughs(3, 10)))
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.ip_masq_agent is not None
    assert foreign.ip_masq_agent["masqLinkLocal"] is True
    k3s_cilium.put(CONFIGMAPS, _ip_masq_agent(_laughs(4, 10, key)))
    with pytest.raises(BackendError, match=r"ConfigMap kube-system/ip-masq-agent: .* "
                                           r"expand it to 2\.58e\+04 nodes, almost all "
                                           r"through aliases: Go's YAML decoder refuses such "
                                           "excessive aliasing"):
        backend.observe()


def test_a_json_config_with_a_key_in_two_spellings_is_edited_where_cilium_reads_it(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    text = ('{"nonMasqueradeCIDRs": ["10.0.0.0/8"], "NonMasqueradeCIDRs": ["192.168.0.0/16"], '
            '"resyncInterval": "60s"}')
    k3s_cilium.put(CONFIGMAPS, _ip_masq_agent(text))
    wanted = CiliumConfig(TARGET, ip_masq_agent={"nonMasqueradeCIDRs": ["172.16.0.0/12"]})
    _converge(backend, State(owned=[wanted]))
    written = _data(k3s_cilium, "ip-masq-agent")["config"]
    # One spelling is left: the one Cilium read (the last).
    assert json.loads(written) == {"NonMasqueradeCIDRs": ["172.16.0.0/12"],
                                   "resyncInterval": "60s"}
    assert set(backend.observe().owned) == {wanted}
    _converge(backend, State())
    assert _data(k3s_cilium, "ip-masq-agent") == {"config": text}


def test_refuses_link_local_alone_over_an_empty_config(backend: CiliumBackend) -> None:
    wanted = CiliumConfig(TARGET, ip_masq_agent={"masqLinkLocal": True})
    p = plan(backend.observe(), State(owned=[wanted]))
    assert p.empty
    (note,) = p.conflicts
    assert "default non-masquerade CIDRs" in str(note.reason)


# ---------------------------------------------------------------- disruptive changes


# What Cilium's agent returns an error for at start (daemon/cmd, 1.17 to main): it exits,
# restarts for ever, and pods on its node have no network.
CILIUM_REFUSES_TO_START = {
    "ip-masq-agent-without-ebpf": ({}, {"enable-ip-masq-agent": "true"},
                                   "enable-ip-masq-agent: true needs enable-bpf-masquerade"),
    "ebpf-with-egress-interfaces": ({"egress-masquerade-interfaces": "eth0"},
                                    {"enable-bpf-masquerade": "true"},
                                    "refuses egress-masquerade-interfaces"),
    "egress-interfaces-under-ebpf": ({"enable-bpf-masquerade": "true"},
                                     {"egress-masquerade-interfaces": "eth0"},
                                     "refuses egress-masquerade-interfaces"),
    "ebpf-with-route-source": ({"enable-masquerade-to-route-source": "true"},
                               {"enable-bpf-masquerade": "true"},
                               "does not support enable-masquerade-to-route-source"),
    "ebpf-without-masquerading": ({"enable-ipv4-masquerade": "false",
                                   "enable-ipv6-masquerade": "false"},
                                  {"enable-bpf-masquerade": "true"},
                                  "enable-bpf-masquerade: true needs enable-ipv4-masquerade"),
    # Helm's enable-ipv6-masquerade: "true" counts for nothing with enable-ipv6: "false".
    "ebpf-with-masquerading-only-for-a-family-that-is-off": (
        {"enable-ipv4-masquerade": "false"}, {"enable-bpf-masquerade": "true"},
        "enable-bpf-masquerade: true needs enable-ipv4-masquerade"),
    # Cilium's checkIPv4NativeRoutingCIDR / checkIPv6NativeRoutingCIDR ("native routing
    # cidr must be configured with option --ipv4-native-routing-cidr in combination with
    # --enable-ipv4=true --enable-ipv4-masquerade=true --enable-ip-masq-agent=false
    # --routing-mode=native").
    "native-routing-without-its-cidr": (
        {}, {"routing-mode": "native"},
        "routing-mode: native with IPv4 masquerading needs ipv4-native-routing-cidr"),
    "masquerading-on-in-native-routing-without-a-cidr": (
        {"routing-mode": "native", "enable-ipv4-masquerade": "false"},
        {"enable-ipv4-masquerade": "true"},
        "routing-mode: native with IPv4 masquerading needs ipv4-native-routing-cidr"),
    "ip-masq-agent-off-in-native-routing-without-a-cidr": (
        {"routing-mode": "native", "enable-bpf-masquerade": "true",
         "enable-ip-masq-agent": "true"},
        {"enable-ip-masq-agent": "false"},
        "routing-mode: native with IPv4 masquerading needs ipv4-native-routing-cidr"),
    "native-routing-ipv6-without-its-cidr": (
        {"enable-ipv6": "true", "ipv4-native-routing-cidr": "10.42.0.0/16",
         "enable-ipv6-masquerade": "false", "routing-mode": "native"},
        {"enable-ipv6-masquerade": "true"},
        "routing-mode: native with IPv6 masquerading needs ipv6-native-routing-cidr"),
}


@pytest.mark.parametrize("case", sorted(CILIUM_REFUSES_TO_START))
def test_refuses_a_config_the_cilium_agent_refuses_to_start_with(
    case: str, api_server: EmulatedApiServer, api_client: Any
) -> None:
    found, wanted, message = CILIUM_REFUSES_TO_START[case]
    api_server.put(CONFIGMAPS, _cilium_config({**HELM_K3S_DATA, **found}))
    before = _stored(api_server)
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    p = plan(backend.observe(), State(owned=[CiliumConfig(TARGET, settings=wanted)]))
    (problem,) = backend.check(p)
    assert message in problem
    assert "every Cilium agent would refuse to start" in problem
    with pytest.raises(PlanError, match=message):
        backend.apply(p)
    assert _stored(api_server) == before  # nothing written


@pytest.mark.parametrize("settings", [
    {"routing-mode": "native", "ipv4-native-routing-cidr": "10.42.0.0/16"},
    {"routing-mode": "native", "enable-ipv4-masquerade": "false"},
    {"routing-mode": "native", "enable-bpf-masquerade": "true", "enable-ip-masq-agent": "true"},
    {"routing-mode": "native", "ipam": "eni"},  # the cloud IPAM derives it
    {"routing-mode": " native\n", "ipv4-native-routing-cidr": " 10.42.0.0/16\n"},
    {"routing-mode": "tunnel"},
])
def test_native_routing_the_cilium_agent_starts_with(settings: dict[str, str]) -> None:
    helm = {k: v for k, v in HELM_K3S_DATA.items() if k in (*CILIUM_KEYS, *CILIUM_CONTEXT_KEYS)}
    assert startup_problems(CiliumConfig(TARGET, settings={**helm, **settings})) == []


def test_a_config_cilium_already_refuses_does_not_block_another_key(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    # Not k3snet's doing: judged by what a change adds, never by what was there.
    api_server.put(CONFIGMAPS, _cilium_config({**HELM_K3S_DATA, "enable-ip-masq-agent": "true"}))
    backend = CiliumBackend(api_client=api_client, timeout=10.0)
    wanted = CiliumConfig(TARGET, settings={"enable-masquerade-to-route-source": "true"})
    _converge(backend, State(owned=[wanted]))
    assert _data(api_server)["enable-masquerade-to-route-source"] == "true"


def test_ebpf_masquerading_with_its_ip_masq_agent_is_written(
    k3s_cilium: EmulatedApiServer, api_client: Any
) -> None:
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    wanted = CiliumConfig(TARGET, settings={"enable-bpf-masquerade": "true",
                                            "enable-ip-masq-agent": "true"})
    _converge(backend, State(owned=[wanted]))
    data = _data(k3s_cilium)
    assert (data["enable-bpf-masquerade"], data["enable-ip-masq-agent"]) == ("true", "true")


def test_changing_the_routing_mode_is_disruptive_and_refused_unless_allowed(
    k3s_cilium: EmulatedApiServer, api_client: Any
) -> None:
    backend = CiliumBackend(api_client=api_client)
    wanted = CiliumConfig(TARGET, settings={"routing-mode": "native",
                                            "ipv4-native-routing-cidr": "10.42.0.0/16"})
    p = plan(backend.observe(), State(owned=[wanted]))
    (change,) = p.changes
    reason = backend.disruptive(change)
    assert reason is not None
    assert "routing-mode" in reason
    (problem,) = backend.check(p)
    assert "routing-mode: tunnel -> native" in problem
    assert ALLOW_DISRUPTIVE_HINT in problem
    assert ("cni.allowDisruptive: true in the spec, --allow-disruptive on the CLI, or "
            "allow_disruptive=True in the library") in problem
    with pytest.raises(PlanError):
        backend.apply(p)
    assert _data(k3s_cilium) == HELM_K3S_DATA
    allowed = create_backend("cilium", api_client=api_client, allow_disruptive=True)
    assert isinstance(allowed, CiliumBackend)
    allowed.apply(p)
    assert _data(k3s_cilium)["routing-mode"] == "native"
    # Giving the keys back is disruptive too (tunnel again), and allowed here.
    assert allowed.disruptive(plan(allowed.observe(), State()).changes[0]) is not None
    _converge(allowed, State())
    assert _data(k3s_cilium) == HELM_K3S_DATA


def test_setting_a_value_cilium_already_runs_with_is_not_disruptive(
    backend: CiliumBackend
) -> None:
    change = Change.add(CiliumConfig(TARGET, settings={"tunnel-protocol": "vxlan",
                                                       "enable-ipv4-masquerade": "false"}))
    assert backend.disruptive(change) is None


@pytest.mark.parametrize("entry", ["10.0.0.0", "10.0.0.0/255.0.0.0", " 10.0.0.0/8"])
def test_a_non_masquerade_cidr_cilium_cannot_parse_is_an_error_not_a_cidr(
    entry: str, k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # Cilium's ip-masq-agent reads each entry with Go's net.ParseCIDR and refuses the
    # file; k3snet read "10.0.0.0" as 10.0.0.0/32 (and judged destinations by it).
    k3s_cilium.put(CONFIGMAPS, _ip_masq_agent(json.dumps({"nonMasqueradeCIDRs": [entry]})))
    with pytest.raises(BackendError, match=r"not a CIDR as Go's net\.ParseCIDR reads it"):
        backend.observe()


def _helm_upgrade(server: EmulatedApiServer, **data: str) -> None:
    """What ``helm upgrade`` does to cilium-config: the chart's keys set, annotations it
    does not render left alone."""
    obj = _stored(server)
    assert obj is not None
    obj["data"].update(data)
    server.put(CONFIGMAPS, obj)


def test_a_key_helm_set_since_is_helm_s_and_removal_keeps_its_value(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    wanted = CiliumConfig(TARGET, settings={"egress-masquerade-interfaces": "eth0",
                                            "enable-masquerade-to-route-source": "true"})
    _converge(backend, State(owned=[wanted]))
    # The chart now sets egress-masquerade-interfaces itself; the other key is untouched.
    _helm_upgrade(k3s_cilium, **{"egress-masquerade-interfaces": "eth1"})
    (owned,) = backend.observe().owned
    assert isinstance(owned, CiliumConfig)
    assert dict(owned.settings) == {"enable-masquerade-to-route-source": "true"}
    p = _converge(backend, State(owned=[wanted]))  # k3snet's value again
    assert [c.action for c in p.changes] == ["replace"]
    assert _data(k3s_cilium)["egress-masquerade-interfaces"] == "eth0"
    _converge(backend, State())
    # Removal gives back the chart's value (it deleted the key: absent before k3snet).
    assert _data(k3s_cilium) == {**HELM_K3S_DATA, "egress-masquerade-interfaces": "eth1"}
    assert OWNED_ANNOTATION not in _annotations(k3s_cilium)
    assert WRITTEN_ANNOTATION not in _annotations(k3s_cilium)


def test_a_record_of_an_older_k3snet_keeps_every_cilium_key_it_names(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    cm = _cilium_config({**HELM_K3S_DATA, "egress-masquerade-interfaces": "eth1"})
    cm["metadata"]["annotations"][OWNED_ANNOTATION] = '{"egress-masquerade-interfaces": null}'
    k3s_cilium.put(CONFIGMAPS, cm)
    (owned,) = backend.observe().owned
    assert isinstance(owned, CiliumConfig)
    assert dict(owned.settings) == {"egress-masquerade-interfaces": "eth1"}


def _kubectl_apply(server: EmulatedApiServer, name: str, text: str) -> None:
    """What ``kubectl apply -f ip-masq-agent.yaml`` does: the manifest's ``config`` text,
    annotations it does not name (k3snet's) left alone."""
    obj = _stored(server, name)
    assert obj is not None
    obj["data"] = {"config": text}
    server.put(CONFIGMAPS, obj)


def test_an_ip_masq_agent_key_set_since_by_kubectl_apply_is_theirs_and_removal_keeps_it(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    k3s_cilium.put(CONFIGMAPS, _ip_masq_agent(RFC1918_YAML))
    wanted = CiliumConfig(TARGET, ip_masq_agent={"nonMasqueradeCIDRs": ["10.0.0.0/8"],
                                                 "masqLinkLocal": False})
    _converge(backend, State(owned=[wanted]))
    # The admin's manifest now sets masqLinkLocal itself (and a new list).
    newer = "nonMasqueradeCIDRs:\n- 10.0.0.0/8\n- 100.64.0.0/10\nmasqLinkLocal: false\n"
    _kubectl_apply(k3s_cilium, "ip-masq-agent", newer)
    (owned,) = backend.observe().owned
    assert isinstance(owned, CiliumConfig)
    assert owned.ip_masq_agent is not None
    assert dict(owned.ip_masq_agent) == {"masqLinkLocal": False}  # the list is theirs
    _converge(backend, State())
    # Removal gives back what k3snet changed and nobody changed since: masqLinkLocal
    # true; the list the manifest set stays, and so does its text otherwise.
    assert _data(k3s_cilium, "ip-masq-agent") == {
        "config": newer.replace("masqLinkLocal: false", "masqLinkLocal: true")}
    assert OWNED_ANNOTATION not in _annotations(k3s_cilium, "ip-masq-agent")
    assert WRITTEN_ANNOTATION not in _annotations(k3s_cilium, "ip-masq-agent")


def test_an_ip_masq_agent_config_rewritten_whole_since_keeps_its_text_on_removal(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    k3s_cilium.put(CONFIGMAPS, _ip_masq_agent(RFC1918_YAML))
    _converge(backend, State(owned=[CiliumConfig(TARGET, ip_masq_agent={
        "nonMasqueradeCIDRs": ["10.0.0.0/8"]})]))
    newer = "# the admin's file\nnonMasqueradeCIDRs: [10.0.0.0/8, 100.64.0.0/10]\n"
    _kubectl_apply(k3s_cilium, "ip-masq-agent", newer)
    _converge(backend, State())
    # Every key k3snet wrote is theirs now: their text stays byte for byte (no
    # reformatting, no old text put back), only k3snet's annotations go.
    assert _data(k3s_cilium, "ip-masq-agent") == {"config": newer}
    assert OWNED_ANNOTATION not in _annotations(k3s_cilium, "ip-masq-agent")
    assert WRITTEN_ANNOTATION not in _annotations(k3s_cilium, "ip-masq-agent")


# ---------------------------------------------------------------- what Cilium will do


def test_a_destination_inside_the_native_routing_cidr_is_a_conflict(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    k3s_cilium.put(CONFIGMAPS, _cilium_config({**HELM_K3S_DATA, "routing-mode": "native",
                                               "ipv4-native-routing-cidr": "192.168.0.0/16"}))
    want = CiliumMasquerade(TARGET, masquerade=[("192.168.2.0/24", "eth0")])
    p = plan(backend.observe(), State(owned=[want]))
    (note,) = p.conflicts
    assert "inside Cilium's ipv4-native-routing-cidr 192.168.0.0/16" in str(note.reason)
    assert "cni.cilium.ipv4NativeRoutingCIDR" in str(note.reason)
    assert p.render().splitlines()[1].startswith("! cilium")


def test_a_native_routing_cidr_cilium_cannot_parse_is_a_conflict_not_a_default(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # Cilium's agent panics on it (cidr.MustParseCIDR); read as unset, k3snet promised the
    # destination masqueraded by a Cilium that does not run.
    k3s_cilium.put(CONFIGMAPS, _cilium_config({**HELM_K3S_DATA,
                                               "ipv4-native-routing-cidr": "10.42.0.0 "
                                                                           "10.43.0.0"}))
    want = CiliumMasquerade(TARGET, masquerade=[("192.168.2.0/24", "eth0")])
    (note,) = plan(backend.observe(), State(owned=[want])).conflicts
    assert "ipv4-native-routing-cidr: '10.42.0.0 10.43.0.0' is not a CIDR" in str(note.reason)
    assert "the Cilium agent panics on it at start" in str(note.reason)


@pytest.mark.parametrize("destinations", [
    [{"cidr": "192.168.0.0/16", "exclude": ["192.168.1.0/24"]}],
    [{"cidr": "192.168.0.0/16"}, {"cidr": "192.168.1.0/24", "masquerade": False}],
])
def test_a_part_the_spec_exempts_inside_a_masqueraded_destination_is_no_conflict(
    destinations: list[dict[str, Any]], k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # Cilium's ip-masq-agent leaves 192.168.1.0/24 alone, as the spec asks; the /16
    # around it was judged whole ("partly inside ... never masquerades"), a conflict.
    k3s_cilium.put(CONFIGMAPS, _cilium_config({**HELM_K3S_DATA, "enable-bpf-masquerade": "true",
                                               "enable-ip-masq-agent": "true"}))
    k3s_cilium.put(CONFIGMAPS, _ip_masq_agent('{"nonMasqueradeCIDRs":["192.168.1.0/24"]}'))
    data = seed_spec().to_dict()
    data["destinations"] = destinations
    p = plan(backend.observe(), compile_for(backend, Spec.from_dict(data)))
    assert not p.conflicts
    # A non-masquerade CIDR reaching past the exempt part is a conflict still.
    k3s_cilium.put(CONFIGMAPS, _ip_masq_agent('{"nonMasqueradeCIDRs":["192.168.0.0/23"]}'))
    (note,) = plan(backend.observe(), compile_for(backend, Spec.from_dict(data))).conflicts
    assert "192.168.0.0/24 is inside 192.168.0.0/23" in str(note.reason)


def test_masquerading_turned_off_by_the_admin_is_a_conflict(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    k3s_cilium.put(CONFIGMAPS, _cilium_config({**HELM_K3S_DATA,
                                               "enable-ipv4-masquerade": "False"}))
    want = CiliumMasquerade(TARGET, masquerade=[("192.168.2.0/24", None)])
    (note,) = plan(backend.observe(), State(owned=[want])).conflicts
    assert "masquerading is off" in str(note.reason)
    assert "cni.cilium.enableIPv4Masquerade" in str(note.reason)


def test_egress_masquerade_interfaces_that_miss_the_device_are_a_conflict(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    k3s_cilium.put(CONFIGMAPS, _cilium_config({**HELM_K3S_DATA,
                                               "egress-masquerade-interfaces": "eth+"}))
    fits = CiliumMasquerade(TARGET, masquerade=[("192.168.2.0/24", "eth1")])
    misses = CiliumMasquerade(TARGET, masquerade=[("192.168.2.0/24", "wg0")])
    assert not plan(backend.observe(), State(owned=[fits])).notes
    (note,) = plan(backend.observe(), State(owned=[misses])).conflicts
    assert "reached via wg0" in str(note.reason)


def test_an_exemption_through_a_device_cilium_does_not_masquerade_on_is_met(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # Cilium masquerades only traffic leaving eth0; the spec exempts a destination (and
    # the exclude of another) reached via eth1: Cilium leaves both alone, as asked. Judged
    # without the device, both were "Cilium masquerades pods' traffic to ..." conflicts.
    k3s_cilium.put(CONFIGMAPS, _cilium_config({**HELM_K3S_DATA,
                                               "egress-masquerade-interfaces": "eth0"}))
    data = seed_spec().to_dict()
    data["destinations"] = [
        {"cidr": "192.168.7.0/24", "masquerade": False, "device": "eth1"},
        {"cidr": "203.0.113.0/24", "device": "eth0", "exclude": ["203.0.113.8/29"]},
        {"cidr": "198.51.100.0/24", "device": "eth1", "gateway": "192.168.1.1",
         "masquerade": False},
    ]
    data["destinations"][1]["gateway"] = "192.168.1.1"
    data["destinations"][0]["gateway"] = "192.168.1.1"
    p = plan(backend.observe(), compile_for(backend, Spec.from_dict(data)))
    (note,) = p.conflicts  # the exclude via eth0 only: Cilium does masquerade there
    assert str(note.reason).count("which the spec exempts") == 1
    assert "traffic to 203.0.113.8/29, which the spec exempts" in str(note.reason)
    # A destination without a device is judged for any interface, as before.
    del data["destinations"][0]["device"]
    p = plan(backend.observe(), compile_for(backend, Spec.from_dict(data)))
    assert "traffic to 192.168.7.0/24, which the spec exempts" in str(p.conflicts[0].reason)


def test_ebpf_masquerading_on_devices_that_miss_the_device_is_a_conflict(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # eBPF masquerading runs only on the devices Cilium attaches its programs to: the
    # `devices` list when it is set (its "eth+" wildcards included), else the ones it
    # detects (which k3snet cannot know: no conflict then), also with
    # force-device-detection.
    bpf = {**HELM_K3S_DATA, "enable-bpf-masquerade": "true", "kube-proxy-replacement": "true"}
    fits = CiliumMasquerade(TARGET, masquerade=[("203.0.113.0/24", "eth1")])
    misses = CiliumMasquerade(TARGET, masquerade=[("203.0.113.0/24", "wg0")])
    anywhere = CiliumMasquerade(TARGET, masquerade=[("203.0.113.0/24", None)])
    k3s_cilium.put(CONFIGMAPS, _cilium_config({**bpf, "devices": "eth+ bond0"}))
    for wanted in (fits, anywhere):
        assert not plan(backend.observe(), State(owned=[wanted])).notes
    (note,) = plan(backend.observe(), State(owned=[misses])).conflicts
    assert "eBPF masquerading runs only on the devices it attaches to (devices: eth+ " \
           "bond0), and 203.0.113.0/24 is reached via wg0" in str(note.reason)
    assert "add wg0 to Cilium's devices (Helm devices; k3snet does not set it)" in \
        str(note.reason)
    for detected in ({**bpf}, {**bpf, "devices": "eth0", "force-device-detection": "true"},
                     {**bpf, "devices": "eth0", "enforce-device-detection": "true"}):
        k3s_cilium.put(CONFIGMAPS, _cilium_config(detected))
        assert not plan(backend.observe(), State(owned=[misses])).notes


def test_an_exempt_destination_cilium_masquerades_is_a_conflict(backend: CiliumBackend) -> None:
    want = CiliumMasquerade(TARGET, exempt=["192.168.7.0/24"])
    (note,) = plan(backend.observe(), State(owned=[want])).conflicts
    assert "Cilium masquerades pods' traffic to 192.168.7.0/24" in str(note.reason)


SEED_WITH_IP_MASQ_AGENT = {**HELM_K3S_DATA, "enable-bpf-masquerade": "true",
                           "enable-ip-masq-agent": "true", "kube-proxy-replacement": "true"}


def test_seed_problem_a_routed_destination_cilium_does_not_masquerade_and_the_fix(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    """Cilium with eBPF masquerading and its ip-masq-agent (Helm ``bpf.masquerade=true``,
    ``ipMasqAgent.enabled=true``, no config): the seed's 192.168.2.0/24, reached via
    a static route to 192.168.1.1 on eth0, is inside the default non-masquerade
    192.168.0.0/16, so pods reach it with their own addresses and replies never
    come back. The plan says so; the spec that names the list fixes it."""
    k3s_cilium.put(CONFIGMAPS, _cilium_config(SEED_WITH_IP_MASQ_AGENT))
    spec = seed_spec()
    p = plan(backend.observe(), compile_for(backend, spec))
    assert p.empty
    (note,) = p.conflicts
    assert str(note.reason).startswith(
        "192.168.2.0/24 is inside 192.168.0.0/16, from Cilium's default list (the "
        "ip-masq-agent config is empty): Cilium's ip-masq-agent never masquerades traffic to it; "
        "set cni.cilium.nonMasqueradeCIDRs")
    assert "! cilium configmap:kube-system/cilium-config expects masquerade to " \
           "192.168.2.0/24 via eth0" in p.render()

    fixed = Spec.from_dict({**spec.to_dict(), "cni": {"cilium": {
        "nonMasqueradeCIDRs": ["10.0.0.0/8", "172.16.0.0/12"]}}})
    p = plan(backend.observe(), compile_for(backend, fixed))
    assert not p.conflicts
    assert p.render() == (
        "Plan: 1 to add, 0 to replace, 0 to delete.\n"
        "+ cilium configmap:kube-system/cilium-config "
        'ip-masq-agent.nonMasqueradeCIDRs=["10.0.0.0/8","172.16.0.0/12"]')
    backend.apply(p)
    assert json.loads(_data(k3s_cilium, "ip-masq-agent")["config"]) == {
        "nonMasqueradeCIDRs": ["10.0.0.0/8", "172.16.0.0/12"]}
    assert _data(k3s_cilium) == SEED_WITH_IP_MASQ_AGENT  # cilium-config untouched
    assert plan(backend.observe(), compile_for(backend, fixed)).empty
    assert not plan(backend.observe(), compile_for(backend, fixed)).notes
    # Without the spec's list, k3snet deletes the ConfigMap it created, and the
    # conflict is back.
    p = plan(backend.observe(), compile_for(backend, spec))
    assert [c.action for c in p.changes] == ["delete"]
    assert p.conflicts
    backend.apply(p)
    assert _stored(k3s_cilium, "ip-masq-agent") is None


def test_the_default_k3s_install_masquerades_the_seed_destination(
    backend: CiliumBackend
) -> None:
    p = plan(backend.observe(), compile_for(backend, seed_spec()))
    assert p.empty
    assert not p.notes


def test_helm_s_default_cluster_pool_outside_the_k3s_pod_cidr_is_a_conflict(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # Helm's default ipam.operator.clusterPoolIPv4PodCIDRList is 10.0.0.0/8: pods get
    # 10.0.x.y addresses, and rules for K3s' 10.42.0.0/16 never see them.
    k3s_cilium.put(CONFIGMAPS, _cilium_config({**HELM_K3S_DATA,
                                               "cluster-pool-ipv4-cidr": "10.0.0.0/8"}))
    (note,) = plan(backend.observe(), compile_for(backend, seed_spec())).conflicts
    assert str(note.reason).startswith(
        "Cilium gives pods addresses from 10.0.0.0/8 (cluster-pool-ipv4-cidr), outside the pod "
        "CIDR 10.42.0.0/16")


def test_objects_round_trip_through_json() -> None:
    wanted = CiliumConfig(TARGET, settings={"enable-bpf-masquerade": "true"},
                          ip_masq_agent={"nonMasqueradeCIDRs": ["10.0.0.0/8"]})
    want = CiliumMasquerade(TARGET, masquerade=[("192.168.2.0/24", "eth0")],
                            exempt=["192.168.7.0/24"], pod_cidrs=["10.42.0.0/16"],
                            wanted=wanted)
    for obj in (wanted, want):
        assert object_from_dict(json.loads(json.dumps(obj.to_dict()))) == obj


@pytest.mark.parametrize("options", [
    {"ip_masq_agent": "cilium-config"},
    {"configmap": "cilium-system/cfg", "ip_masq_agent": "cfg"},
])
def test_an_ip_masq_agent_configmap_named_as_cilium_config_is_refused(
        options: dict[str, str], api_client: Any) -> None:
    # One ConfigMap for both: k3snet's records of the two would overwrite each other (and
    # the ip-masq-agent one is deleted with k3snet's last key).
    with pytest.raises(ModelError, match="is the name of Cilium's configuration"):
        create_backend("cilium", api_client=api_client, **options)


# ---------------------------------------------------------------- CiliumNodeConfigs

NODE_CONFIGS_V2 = "cilium.io/v2/ciliumnodeconfigs"
NODE_CONFIGS_V2ALPHA1 = "cilium.io/v2alpha1/ciliumnodeconfigs"


def _node_config(name: str, defaults: dict[str, Any] | None, selector: Any = None,
                 version: str = "v2") -> dict[str, Any]:
    spec: dict[str, Any] = {"nodeSelector": {"matchLabels": {"zone": "edge"}}
                            if selector is None else selector}
    if defaults is not None:
        spec["defaults"] = defaults
    return {"apiVersion": f"cilium.io/{version}", "kind": "CiliumNodeConfig",
            "metadata": {"name": name, "namespace": "kube-system"}, "spec": spec}


def test_a_node_config_turning_masquerading_off_on_some_nodes_is_a_conflict_naming_it(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # cilium-config masquerades; the CiliumNodeConfig turns it off on the edge nodes, whose
    # agents read it over cilium-config: pods there reach 192.168.2.0/24 unmasqueraded.
    k3s_cilium.put(NODE_CONFIGS_V2, _node_config(
        "edge-no-masq", {"enable-ipv4-masquerade": "false", "bpf-lb-acceleration": "native"}))
    want = CiliumMasquerade(TARGET, masquerade=[("192.168.2.0/24", "eth0")])
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert [o.describe() for o in foreign.node_overrides] == [
        "CiliumNodeConfig edge-no-masq (nodes zone=edge): enable-ipv4-masquerade=false"]
    (note,) = plan(backend.observe(), State(owned=[want])).conflicts
    reason = str(note.reason)
    assert reason.startswith("on the nodes of CiliumNodeConfig edge-no-masq (nodes zone=edge)")
    assert "masquerading is off in Cilium (enable-ipv4-masquerade: 'false')" in reason
    assert object_from_dict(json.loads(json.dumps(foreign.to_dict()))) == foreign


def test_a_node_config_s_native_routing_cidr_is_judged_on_its_nodes(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    k3s_cilium.put(NODE_CONFIGS_V2ALPHA1, _node_config(
        "native", {"routing-mode": "native", "ipv4-native-routing-cidr": "192.168.0.0/16"},
        selector={"matchExpressions": [{"key": "rack", "operator": "In",
                                        "values": ["a", "b"]}]}, version="v2alpha1"))
    want = CiliumMasquerade(TARGET, masquerade=[("192.168.2.0/24", "eth0")])
    (note,) = plan(backend.observe(), State(owned=[want])).conflicts
    assert "on the nodes of CiliumNodeConfig native (nodes rack in (a,b))" in str(note.reason)
    assert "inside Cilium's ipv4-native-routing-cidr 192.168.0.0/16" in str(note.reason)


def test_a_node_config_for_every_node_decides_over_cilium_config(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # cilium-config has masquerading off, but an empty selector turns it on on every
    # node: no node runs cilium-config's value, so there is nothing to report.
    k3s_cilium.put(CONFIGMAPS, _cilium_config({**HELM_K3S_DATA,
                                               "enable-ipv4-masquerade": "false"}))
    want = CiliumMasquerade(TARGET, masquerade=[("192.168.2.0/24", "eth0")])
    assert plan(backend.observe(), State(owned=[want])).conflicts
    k3s_cilium.put(NODE_CONFIGS_V2, _node_config("all", {"enable-ipv4-masquerade": "true"},
                                                 selector={}))
    assert not plan(backend.observe(), State(owned=[want])).notes


NODES = "v1/nodes"


def _node(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


def _native_on_edge(server: EmulatedApiServer) -> None:
    # Native routing on the edge nodes, in two CiliumNodeConfigs: one sets the routing
    # mode, the other the native-routing CIDR that mode needs (alone, the agent exits:
    # "native routing cidr must be configured").
    server.put(NODE_CONFIGS_V2, _node_config("edge-a-native", {"routing-mode": "native"}))
    server.put(NODE_CONFIGS_V2, _node_config(
        "edge-b-cidr", {"ipv4-native-routing-cidr": "10.42.0.0/16"},
        selector={"matchExpressions": [{"key": "zone", "operator": "In",
                                        "values": ["edge", "dmz"]}]}))


def test_node_configs_selecting_one_node_are_laid_together_by_its_labels(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # The agent on edge-1 lays both over cilium-config: native routing with its CIDR. One
    # at a time, the first was a config the agent refuses to start with: a conflict no
    # node has.
    _native_on_edge(k3s_cilium)
    k3s_cilium.put(NODES, _node("server-1"))
    k3s_cilium.put(NODES, _node("edge-1", zone="edge"))
    want = CiliumMasquerade(TARGET, masquerade=[("192.168.2.0/24", "eth0")])
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.node_groups == ((), ("edge-a-native", "edge-b-cidr"))
    (accept,) = [a for (m, p, _), a in zip(k3s_cilium.requests(), k3s_cilium.accepts(),
                                           strict=True) if p == "/api/v1/nodes"]
    assert accept.startswith("application/json;as=PartialObjectMetadataList;")  # labels only
    assert not plan(backend.observe(), State(owned=[want])).notes
    assert object_from_dict(json.loads(json.dumps(foreign.to_dict()))) == foreign
    # A dmz node gets the CIDR alone (tunnel routing): still nothing to report. A node
    # only the first selects would exit.
    k3s_cilium.put(NODES, _node("dmz-1", zone="dmz"))
    assert not plan(backend.observe(), State(owned=[want])).notes
    k3s_cilium.put(NODE_CONFIGS_V2, _node_config(
        "edge-b-cidr", {"ipv4-native-routing-cidr": "10.42.0.0/16"},
        selector={"matchLabels": {"zone": "dmz"}}))
    (note,) = plan(backend.observe(), State(owned=[want])).conflicts
    assert "on the nodes of CiliumNodeConfig edge-a-native (nodes zone=edge)" in str(note.reason)
    assert "the Cilium agent does not run with this config" in str(note.reason)


def test_a_node_config_selecting_no_node_is_not_judged_and_not_in_selects_the_unlabelled(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    k3s_cilium.put(NODE_CONFIGS_V2, _node_config(
        "edge-no-masq", {"enable-ipv4-masquerade": "false"}))
    k3s_cilium.put(NODES, _node("server-1", zone="core"))
    want = CiliumMasquerade(TARGET, masquerade=[("192.168.2.0/24", "eth0")])
    assert not plan(backend.observe(), State(owned=[want])).notes  # no edge node
    k3s_cilium.put(NODE_CONFIGS_V2, _node_config(
        "edge-no-masq", {"enable-ipv4-masquerade": "false"},
        selector={"matchExpressions": [{"key": "zone", "operator": "NotIn",
                                        "values": ["edge"]}]}))
    k3s_cilium.put(NODES, _node("server-1"))  # no zone label: NotIn selects it
    (note,) = plan(backend.observe(), State(owned=[want])).conflicts
    assert "masquerading is off in Cilium" in str(note.reason)


CILIUM_NODES = "cilium.io/v2/ciliumnodes"


def _cilium_node(name: str) -> dict[str, Any]:
    # As the agent registers its Node (pkg/nodediscovery: owned by the Node, its labels).
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNode",
            "metadata": {"name": name, "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": name, "uid": name}]},
            "spec": {}}


def test_a_node_running_no_cilium_agent_forms_no_set_of_node_configs(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # cilium-config masquerades nothing; a CiliumNodeConfig turns it on for every Linux
    # node. The Windows node runs no Cilium agent (the DaemonSet's nodeSelector), reads
    # no CiliumNodeConfig and has no CiliumNode: it formed the set "cilium-config alone",
    # a conflict (masquerading off) no Cilium node has, and the Lease holder's Cilium
    # part was refused. Cilium's own agents read the CiliumNodeConfigs (pkg/option/
    # resolver, in the agent's pod); each registers its Node as a CiliumNode.
    k3s_cilium.put(CONFIGMAPS, _cilium_config({**HELM_K3S_DATA,
                                               "enable-ipv4-masquerade": "false"}))
    k3s_cilium.put(NODE_CONFIGS_V2, _node_config(
        "linux-masq", {"enable-ipv4-masquerade": "true"},
        selector={"matchLabels": {"kubernetes.io/os": "linux"}}))
    k3s_cilium.put(NODES, _node("linux-1", **{"kubernetes.io/os": "linux"}))
    k3s_cilium.put(NODES, _node("windows-1", **{"kubernetes.io/os": "windows"}))
    want = CiliumMasquerade(TARGET, masquerade=[("192.168.2.0/24", "eth0")])
    # No CiliumNode yet (no agent registered, or an older Cilium): every Node counts.
    (note,) = plan(backend.observe(), State(owned=[want])).conflicts
    assert "masquerading is off in Cilium" in str(note.reason)
    k3s_cilium.put(CILIUM_NODES, _cilium_node("linux-1"))
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.node_groups == (("linux-masq",),)
    assert not plan(backend.observe(), State(owned=[want])).notes
    (accept,) = {a for (m, p, _), a in zip(k3s_cilium.requests(), k3s_cilium.accepts(),
                                           strict=True)
                 if p.startswith("/apis/cilium.io/v2/ciliumnodes")}
    assert accept.startswith("application/json;as=PartialObjectMetadataList;")  # names only
    # An agent not allowed to list them (a ClusterRole older than this rule): as before.
    k3s_cilium.fail(403, method="GET", plural="ciliumnodes", times=None)
    assert plan(backend.observe(), State(owned=[want])).conflicts


def test_the_nodes_and_cilium_nodes_are_read_from_the_watch_cache(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # Where a CiliumNodeConfig selects some nodes, the Lease holder lists every Node's
    # labels and every CiliumNode's name each interval: quorum reads from etcd, 500 whole
    # objects a request (20 at 5 000 nodes every 30 s). resourceVersion=0 is served from
    # the API server's watch cache; the names and labels judged are a moment old at most.
    _native_on_edge(k3s_cilium)
    k3s_cilium.put(NODES, _node("server-1"))
    k3s_cilium.put(NODES, _node("edge-1", zone="edge"))
    k3s_cilium.put(CILIUM_NODES, _cilium_node("edge-1"))
    before = len(k3s_cilium.requests())
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.node_groups == (("edge-a-native", "edge-b-cidr"),)
    asked = {path: params for (_, path, _), params in zip(
        k3s_cilium.requests()[before:], k3s_cilium.params()[before:], strict=True)}
    for path in ("/api/v1/nodes", "/apis/cilium.io/v2/ciliumnodes"):
        assert asked[path].get("resourceVersion") == "0", path
    # the CiliumNodeConfigs, read for what is judged of them, stay quorum reads
    configs = "/apis/cilium.io/v2/namespaces/kube-system/ciliumnodeconfigs"
    assert "resourceVersion" not in asked[configs]
    # a Node gone, its CiliumNode with it: the next list no longer has it
    k3s_cilium.delete(NODES, "edge-1")
    k3s_cilium.delete(CILIUM_NODES, "edge-1")
    k3s_cilium.put(CILIUM_NODES, _cilium_node("server-1"))
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.node_groups == ((),)


def test_node_configs_are_judged_one_at_a_time_where_the_nodes_cannot_be_listed(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # An agent whose ClusterRole predates the nodes rule: judged as before, and said
    # once in the log, not on every pass.
    _native_on_edge(k3s_cilium)
    k3s_cilium.put(NODES, _node("edge-1", zone="edge"))
    k3s_cilium.fail(403, method="GET", plural="nodes", times=None)
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.node_groups is None
    want = CiliumMasquerade(TARGET, masquerade=[("192.168.2.0/24", "eth0")])
    assert plan(backend.observe(), State(owned=[want])).conflicts
    warned = [r for r in caplog.records if "judged one at a time" in r.getMessage()]
    assert len(warned) == 1
    assert "forbidden (403)" in warned[0].getMessage()


def test_a_node_selector_apimachinery_refuses_is_judged_alone_with_a_warning(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend, caplog: pytest.LogCaptureFixture
) -> None:
    k3s_cilium.put(NODE_CONFIGS_V2, _node_config(
        "odd", {"enable-ipv4-masquerade": "false"},
        selector={"matchExpressions": [{"key": "zone\x1b[2J", "operator": "Equals"}]}))
    k3s_cilium.put(NODES, _node("server-1"))
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.node_groups is None
    (warned,) = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert "\x1b" not in warned


@pytest.mark.parametrize("expression", [
    {"key": "zone", "operator": ["In"], "values": ["edge"]},  # unhashable: a TypeError
    {"key": "zone", "operator": {"In": None}, "values": ["edge"]},
])
def test_a_node_selector_of_a_hostile_answer_is_judged_alone_not_an_internal_error(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend, caplog: pytest.LogCaptureFixture,
    expression: dict[str, Any],
) -> None:
    k3s_cilium.put(NODE_CONFIGS_V2, _node_config(
        "odd", {"enable-ipv4-masquerade": "false"}, selector={"matchExpressions": [expression]}))
    k3s_cilium.put(NODES, _node("server-1"))
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.node_groups is None
    assert [r for r in caplog.records if "cannot be read" in r.getMessage()]


@pytest.mark.parametrize("selector", [{"matchLabels": []}, {"matchExpressions": ""}])
def test_a_node_selector_with_an_empty_part_of_another_type_is_no_selector_of_every_node(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend, selector: dict[str, Any],
) -> None:
    # Go decodes neither into a LabelSelector; read as "none", it selected every node.
    k3s_cilium.put(NODE_CONFIGS_V2, _node_config(
        "odd", {"enable-ipv4-masquerade": "false"}, selector=selector))
    with pytest.raises(BackendError, match="nodeSelector is not a label selector"):
        backend.observe()


def test_nodes_are_listed_only_for_node_configs_selecting_some_nodes(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    k3s_cilium.put(NODES, _node("edge-1", zone="edge"))
    k3s_cilium.put(NODE_CONFIGS_V2, _node_config("all", {"enable-ipv4-masquerade": "true"},
                                                 selector={}))
    backend.observe()
    assert not [r for r in k3s_cilium.requests() if r[1] == "/api/v1/nodes"]


@pytest.mark.parametrize("item", [
    _node_config("no-defaults", None),
    _node_config("empty-defaults", {}),
    _node_config("other-keys", {"bpf-lb-acceleration": "native"}),
    {**_node_config("no-selector", {"enable-ipv4-masquerade": "false"}),
     "spec": {"defaults": {"enable-ipv4-masquerade": "false"}}},
])
def test_node_configs_that_change_nothing_k3snet_judges_are_left_out(
    item: dict[str, Any], k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # (Cilium's resolver skips one without defaults, and when listing, one without a
    # nodeSelector selects no node.)
    k3s_cilium.put(NODE_CONFIGS_V2, item)
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.node_overrides == ()
    want = CiliumMasquerade(TARGET, masquerade=[("192.168.2.0/24", "eth0")])
    assert not plan(backend.observe(), State(owned=[want])).notes


def test_a_node_config_s_text_is_shown_on_one_printable_line(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    k3s_cilium.put(NODE_CONFIGS_V2, _node_config(
        "x", {"egress-masquerade-interfaces": "eth0\n+ route 0.0.0.0/0 \x1b[2J"},
        selector={"matchLabels": {"a\nb": "c\x1b"}}))
    (foreign,) = backend.observe().foreign
    text = foreign.describe()
    assert "\n" not in text
    assert "\x1b" not in text


def test_node_configs_that_cannot_be_listed_are_an_error_naming_them(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    k3s_cilium.fail(403, method="GET", plural="ciliumnodeconfigs")
    with pytest.raises(BackendError, match=r"list CiliumNodeConfigs \(cilium.io/v2\) in "
                                           r"kube-system: forbidden \(403\)"):
        backend.observe()


@pytest.mark.parametrize("key", ["egress-masquerade-interfaces", "devices"])
def test_a_cilium_config_value_cannot_forge_a_line_of_the_plan(
    key: str, k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # A line break or a terminal escape in cilium-config reached the plan as it was: the
    # foreign config and the reason printed "eth9\n= cilium ...\x1b[31m" as two lines.
    hostile = "eth9\n= cilium masquerades 192.168.2.0/24\x1b[31m"
    k3s_cilium.put(CONFIGMAPS, _cilium_config({**HELM_K3S_DATA, key: hostile,
                                               "enable-bpf-masquerade": str(key == "devices"),
                                               "kube-proxy-replacement": "true"}))
    want = CiliumMasquerade(TARGET, masquerade=[("192.168.2.0/24", "eth0")])
    p = plan(backend.observe(), State(owned=[want]))
    (note,) = p.conflicts
    assert "reached via eth0" in str(note.reason)
    text = p.render()
    assert "\x1b" not in text
    assert not any(line.startswith("=") for line in text.splitlines())


# ---------------------------------------------------------------- egress gateway

EGRESS_POLICIES = "cilium.io/v2/ciliumegressgatewaypolicies"


def _egress_policy(name: str, destinations: list[str], excluded: list[str] | None = None
                   ) -> dict[str, Any]:
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumEgressGatewayPolicy",
            "metadata": {"name": name},
            "spec": {"selectors": [{"podSelector": {"matchLabels": {"app": "legacy"}}}],
                     "destinationCIDRs": destinations, "excludedCIDRs": excluded or [],
                     "egressGateway": {"nodeSelector": {"matchLabels": {"egress": "true"}},
                                       "egressIP": "192.168.1.230"}}}


def test_an_egress_gateway_policy_snatting_an_exempt_destination_is_a_conflict(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # The spec keeps pods' addresses to 172.20.0.0/16 (eBPF masquerading leaves it alone
    # through the ip-masq-agent), but the egress gateway SNATs the selected pods' traffic
    # to everything to 192.168.1.230 on the gateway node.
    k3s_cilium.put(CONFIGMAPS, _cilium_config({
        **HELM_K3S_DATA, "enable-bpf-masquerade": "true", "enable-ip-masq-agent": "true",
        "kube-proxy-replacement": "true", "enable-ipv4-egress-gateway": "true"}))
    k3s_cilium.put(CONFIGMAPS, _ip_masq_agent('{"nonMasqueradeCIDRs":["172.20.0.0/16"]}'))
    k3s_cilium.put(EGRESS_POLICIES, _egress_policy("legacy", ["0.0.0.0/0"]))
    want = CiliumMasquerade(TARGET, masquerade=[("192.168.2.0/24", "eth0")],
                            exempt=["172.20.0.0/16"])
    (note,) = plan(backend.observe(), State(owned=[want])).conflicts
    reason = str(note.reason)
    assert ("CiliumEgressGatewayPolicy legacy: 0.0.0.0/0 through egress=true as "
            "192.168.1.230") in reason
    assert "the spec exempts 172.20.0.0/16" in reason
    assert "excludedCIDRs" in reason
    # Excluded from the policy, the destination keeps the pods' addresses: no conflict.
    k3s_cilium.put(EGRESS_POLICIES, _egress_policy("legacy", ["0.0.0.0/0"],
                                                   ["172.20.0.0/16"]))
    assert not plan(backend.observe(), State(owned=[want])).conflicts
    (foreign,) = backend.observe().foreign
    assert object_from_dict(json.loads(json.dumps(foreign.to_dict()))) == foreign


def test_egress_gateway_policies_are_read_only_where_the_egress_gateway_runs(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    k3s_cilium.put(EGRESS_POLICIES, _egress_policy("legacy", ["0.0.0.0/0"]))
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.egress_gateways == ()
    assert not [r for r in k3s_cilium.requests() if "ciliumegressgatewaypolicies" in r[1]]
    # A CiliumNodeConfig turning it on for some nodes is enough.
    k3s_cilium.put(NODE_CONFIGS_V2, _node_config("egress", {
        "enable-ipv4-egress-gateway": "true"}))
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert [g.name for g in foreign.egress_gateways] == ["legacy"]


@pytest.mark.parametrize("spec", [
    {"destinationCIDRs": "0.0.0.0/0"},
    {"destinationCIDRs": ["not a cidr"]},
    {"destinationCIDRs": [7]},
    {"destinationCIDRs": ["0.0.0.0/0"], "egressGateway": "node-a"},
])
def test_an_egress_gateway_policy_k3snet_cannot_read_is_an_error_naming_it(
    spec: dict[str, Any], k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    k3s_cilium.put(CONFIGMAPS, _cilium_config({**HELM_K3S_DATA,
                                               "enable-ipv4-egress-gateway": "true"}))
    k3s_cilium.put(EGRESS_POLICIES, {"apiVersion": "cilium.io/v2",
                                     "kind": "CiliumEgressGatewayPolicy",
                                     "metadata": {"name": "odd"}, "spec": spec})
    with pytest.raises(BackendError, match="CiliumEgressGatewayPolicies: odd"):
        backend.observe()


def test_node_configs_and_egress_gateway_policies_are_listed_in_pages(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    k3s_cilium.put(CONFIGMAPS, _cilium_config({**HELM_K3S_DATA,
                                               "enable-ipv4-egress-gateway": "true"}))
    for index in range(501):
        k3s_cilium.put(EGRESS_POLICIES, _egress_policy(f"p-{index:03}", ["10.9.0.0/16"]))
        k3s_cilium.put(NODE_CONFIGS_V2, _node_config(f"c-{index:03}", {"debug": "true"}))
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert len(foreign.egress_gateways) == 501
    lists = [p for m, p, _ in k3s_cilium.requests() if m == "GET" and (
        p.endswith(("/ciliumegressgatewaypolicies", "/ciliumnodeconfigs")))]
    assert len(lists) == 4


def test_a_converge_reads_each_configmap_once_and_a_change_after_the_read_gives_409(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # The apply read both ConfigMaps again right after the observe had (four GETs of
    # two objects a pass that changed something). Each write carries the resourceVersion
    # read, so the observe's read serves it: a change since is a 409, nothing changed.
    from k3snet.converge import converge  # noqa: PLC0415 - this test alone

    k3s_cilium.put(CONFIGMAPS, _ip_masq_agent(RFC1918_YAML))
    desired = State(owned=[CiliumConfig(TARGET, ip_masq_agent={
        "nonMasqueradeCIDRs": ["10.0.0.0/8"]})])
    before = len(k3s_cilium.requests())
    converge(backend, desired)
    reads = [p.split("?")[0].rsplit("/", 1)[-1] for m, p, _ in k3s_cilium.requests()[before:]
             if m == "GET" and "/configmaps/" in p]
    assert sorted(reads) == ["cilium-config", "ip-masq-agent"]
    assert "10.0.0.0/8" in _data(k3s_cilium, "ip-masq-agent")["config"]

    p = plan(backend.observe(), State())  # k3snet's keys given back ...
    edited = _stored(k3s_cilium, "ip-masq-agent")
    assert edited is not None
    edited["data"]["config"] += "masqLinkLocalIPv6: true\n"
    k3s_cilium.put(CONFIGMAPS, edited)  # ... after someone edited the file
    with pytest.raises(ApplyError, match="409"):
        backend.apply(p)
    assert _data(k3s_cilium, "ip-masq-agent") == edited["data"]


DEEP = "[" * 100000 + "]" * 100000
"""JSON nested deeper than Python's parser goes (RecursionError, not ValueError), well
within an annotation's 256 KiB."""


@pytest.mark.parametrize(("name", "annotation", "text"), [
    ("cilium-config", OWNED_ANNOTATION, DEEP),
    ("cilium-config", WRITTEN_ANNOTATION, DEEP),
    ("ip-masq-agent", OWNED_ANNOTATION, DEEP),
    ("ip-masq-agent", OWNED_ANNOTATION,
     json.dumps({"keys": {"nonMasqueradeCIDRs": DEEP}, "text": None, "created": False})),
])
def test_a_record_annotation_nested_too_deep_is_reported_as_not_valid(
    k3s_cilium: EmulatedApiServer, backend: CiliumBackend, name: str, annotation: str,
    text: str,
) -> None:
    # k3snet's own annotations are written by anyone who may edit the ConfigMap: one
    # nested deeper than Python's JSON parser goes failed every observe with a
    # RecursionError (an internal error, "a bug: please report it"), not the record's
    # own message saying what to do.
    if name == "ip-masq-agent":
        k3s_cilium.put(CONFIGMAPS, _ip_masq_agent(RFC1918_YAML))
    stored = _stored(k3s_cilium, name)
    assert stored is not None
    stored["metadata"].setdefault("annotations", {})[annotation] = text
    if annotation == WRITTEN_ANNOTATION:  # read only beside an ownership record
        stored["metadata"]["annotations"][OWNED_ANNOTATION] = '{"routing-mode": null}'
    k3s_cilium.put(CONFIGMAPS, stored)
    with pytest.raises(BackendError, match=r"k3snet's ownership record .*is not valid"):
        backend.observe()


def test_ctrl_c_as_the_write_s_answer_is_kept_takes_the_write_back(
        k3s_cilium: EmulatedApiServer, backend: CiliumBackend,
        monkeypatch: pytest.MonkeyPatch, ctrl_c: None) -> None:
    """Ctrl-C landing after the API server answered the cilium-config patch, before its
    undo was kept (a signal's handler runs at any call: here, the answer's bookkeeping):
    the write was among nothing to undo, and stayed while the apply said it had taken
    back all."""
    wanted = CiliumConfig(TARGET, settings={"enable-ipv4-masquerade": "false"})
    p = plan(backend.observe(), State(owned=[wanted]))
    real = CiliumBackend._landed
    signalled: list[bool] = []

    def landed(self: CiliumBackend, left: Any) -> Any:
        if not signalled:  # the write answered, its undo not kept yet
            signalled.append(True)
            signal.raise_signal(signal.SIGINT)
        return real(self, left)

    monkeypatch.setattr(CiliumBackend, "_landed", landed)
    with pytest.raises(KeyboardInterrupt):
        backend.apply(p)
    assert signalled
    assert _data(k3s_cilium) == HELM_K3S_DATA
    assert OWNED_ANNOTATION not in _annotations(k3s_cilium)
