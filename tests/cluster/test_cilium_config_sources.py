"""The cilium backend reads the ``config`` init container's sources and key filters.

Helm's agent pods build their config directory with ``cilium-dbg build-config``: its
``--source`` list (default ``config-map:cilium-config,cilium-node-config:NAMESPACE``) is
read in order, a later source's keys laid over an earlier one's, and every source but
the first keeps only the keys ``--allow-config-keys`` allows (else those
``--deny-config-keys`` does not deny): ``pkg/option/resolver``. k3snet wrote
``cilium-config`` and said converged where the agents do not take the key from it (a
source list without it, or after another one with the key filtered), and judged a
CiliumNodeConfig's key the filter drops.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from k3snet.backends.cilium import CiliumBackend
from k3snet.errors import PlanError
from k3snet.model.cilium import CiliumConfig, CiliumMasquerade
from k3snet.model.state import State
from k3snet.planner import plan
from k3snet.testing.kube import EmulatedApiServer
from tests.cluster.test_cilium_backend import (
    HELM_K3S_DATA,
    NODE_CONFIGS_V2,
    TARGET,
    _cilium_config,
    _data,
    _node_config,
)
from tests.cluster.test_cilium_mount import cilium_daemonset
from tests.cluster.workloads import CONFIGMAPS, DAEMONSETS, configmap

pytestmark = pytest.mark.cluster

MASQUERADE_OFF = State(owned=[CiliumConfig(TARGET,
                                           settings={"enable-ipv4-masquerade": "false"})])


def _building(*args: str, name: str = "cilium") -> dict[str, Any]:
    """Helm's DaemonSet, its ``config`` init container running ``cilium-dbg build-config``
    with ``args``."""
    ds = cilium_daemonset(ip_masq_agent=True, name=name)
    (init,) = ds["spec"]["template"]["spec"]["initContainers"]
    init.update(command=["cilium-dbg", "build-config"], args=list(args), env=[
        {"name": "K8S_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "CILIUM_K8S_NAMESPACE",
         "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}])
    return ds


@pytest.fixture
def backend(api_server: EmulatedApiServer, api_client: Any) -> CiliumBackend:
    api_server.put(CONFIGMAPS, _cilium_config(HELM_K3S_DATA))
    return CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)


@pytest.mark.parametrize(("args", "why"), [
    (["--source=config-map:cilium-base,config-map:cilium-config",
      "--deny-config-keys=enable-ipv4-masquerade"],
     "--deny-config-keys denies it"),
    (["--source", "config-map:kube-system/cilium-base", "--source", "config-map:cilium-config",
      "--allow-config-keys=enable-bpf-masquerade,routing-mode"],
     "--allow-config-keys does not allow it"),
    (["--source=config-map:cilium-config-gpu,cilium-node-config"],
     "its --source names no config-map:kube-system/cilium-config"),
])
def test_a_key_the_config_init_container_does_not_take_from_cilium_config_is_refused(
    args: list[str], why: str, api_server: EmulatedApiServer, backend: CiliumBackend
) -> None:
    api_server.put(DAEMONSETS, _building(*args))
    (refused,) = backend.check(plan(backend.observe(), MASQUERADE_OFF))
    assert ("enable-ipv4-masquerade: k3snet writes it into ConfigMap kube-system/cilium-config, "
            "which the config init container of DaemonSet kube-system/cilium (cilium-dbg "
            "build-config) does not take from there") in refused
    assert why in refused
    assert "the write would have no effect" in refused
    with pytest.raises(PlanError, match="would have no effect"):
        backend.apply(plan(backend.observe(), MASQUERADE_OFF))
    assert _data(api_server)["enable-ipv4-masquerade"] == "true"


def test_a_filter_leaves_the_first_source_s_keys_alone(
    api_server: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # cilium-config first (Helm's default list): its keys are all taken, the filter is of
    # the sources after it.
    for args in (["--deny-config-keys=enable-ipv4-masquerade"],
                 ["--source=config-map:cilium-config,cilium-node-config",
                  "--allow-config-keys=routing-mode"]):
        api_server.put(DAEMONSETS, _building(*args))
        assert backend.check(plan(backend.observe(), MASQUERADE_OFF)) == ()


@pytest.mark.parametrize("args", [
    ["--deny-config-keys=enable-ipv4-masquerade"],
    ["--allow-config-keys=routing-mode"],
    ["--source=config-map:cilium-config"],  # no CiliumNodeConfig read at all
    ["--source=config-map:cilium-config,cilium-node-config:cilium-system"],
])
def test_a_node_config_s_key_the_init_container_drops_is_not_judged(
    args: list[str], api_server: EmulatedApiServer, backend: CiliumBackend,
    caplog: pytest.LogCaptureFixture
) -> None:
    # The agents of the edge nodes keep cilium-config's enable-ipv4-masquerade: the
    # CiliumNodeConfig's is dropped (or not read), and k3snet judged by it.
    api_server.put(NODE_CONFIGS_V2, _node_config("edge", {"enable-ipv4-masquerade": "false"}))
    api_server.put(DAEMONSETS, _building())
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert [o.name for o in foreign.node_overrides] == ["edge"]
    api_server.put(DAEMONSETS, _building(*args))
    with caplog.at_level(logging.WARNING):
        (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.node_overrides == ()
    assert any("CiliumNodeConfig" in r.getMessage() and "edge" in r.getMessage()
               and "DaemonSet kube-system/cilium" in r.getMessage() for r in caplog.records)


def test_a_config_init_container_s_shell_script_is_a_warning(
    api_server: EmulatedApiServer, backend: CiliumBackend, caplog: pytest.LogCaptureFixture
) -> None:
    ds = _building()
    (init,) = ds["spec"]["template"]["spec"]["initContainers"]
    init.update(command=["sh", "-c"], args=["cilium-dbg build-config --source=$SOURCES"])
    api_server.put(DAEMONSETS, ds)
    with caplog.at_level(logging.WARNING):
        assert backend.check(plan(backend.observe(), MASQUERADE_OFF)) == ()
    assert any("through a shell (sh -c ...)" in r.getMessage()
               and "config init container" in r.getMessage() for r in caplog.records)


def test_another_agent_daemonset_not_taking_a_key_k3snet_writes_is_a_warning(
    api_server: EmulatedApiServer, backend: CiliumBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # A copy for a node pool reading its own ConfigMap: k3snet's write reaches the
    # named one's agents; the copy's nodes keep theirs, said.
    api_server.put(DAEMONSETS, _building())
    gpu = _building("--source=config-map:cilium-config-gpu", name="cilium-gpu")
    gpu["spec"]["template"]["spec"]["nodeSelector"] = {"pool": "gpu"}
    api_server.put(DAEMONSETS, gpu)
    backend.apply(plan(backend.observe(), MASQUERADE_OFF))
    with caplog.at_level(logging.WARNING):
        backend.observe()
    assert any(r.getMessage().startswith(
        "cilium: the config init container of DaemonSet kube-system/cilium-gpu (cilium-dbg "
        "build-config) does not take enable-ipv4-masquerade from ConfigMap "
        "kube-system/cilium-config, which k3snet writes") for r in caplog.records)


def test_the_refusal_quotes_the_init_container_s_flags_printable_and_bounded(
    api_server: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # The flags are the cluster's text: an ESC and a line break in them reached the
    # refusal raw (a line break before spaces reads as another problem of the list), and
    # a long one was quoted whole, once for each key.
    api_server.put(DAEMONSETS, _building(
        "--source=config-map:cilium-base\x1b[2J\n  forged: problem" + "x" * 5000
        + ",config-map:cilium-config", "--deny-config-keys=enable-ipv4-masquerade"))
    (refused,) = backend.check(plan(backend.observe(), MASQUERADE_OFF))
    _, *problems = refused.split("\n")
    (problem,) = problems
    assert problem.isprintable()
    assert "cilium-base\\x1b[2J\\n  forged: problem" in problem
    assert len(problem) < 1000
    assert problem.endswith("the write would have no effect")


def test_a_node_config_source_naming_one_reads_it_alone_on_every_node(
    api_server: EmulatedApiServer, backend: CiliumBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # cilium-node-config:NAMESPACE/NAME gets that one CiliumNodeConfig, and the resolver
    # lays it on every node, whatever its nodeSelector; the others are not read. k3snet
    # judged "edge" (a conflict on its nodes) and "gpu" on its own nodes alone.
    api_server.put(NODE_CONFIGS_V2, _node_config("edge", {"enable-ipv4-masquerade": "false"}))
    api_server.put(NODE_CONFIGS_V2, _node_config(
        "gpu", {"enable-bpf-masquerade": "true"}, {"matchLabels": {"pool": "gpu"}}))
    api_server.put(DAEMONSETS, _building(
        "--source=config-map:cilium-config,cilium-node-config:kube-system/gpu"))
    with caplog.at_level(logging.WARNING):
        (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert [(o.name, o.selector) for o in foreign.node_overrides] == [("gpu", "")]
    assert any("CiliumNodeConfig edge" in r.getMessage() and "not read" in r.getMessage()
               for r in caplog.records)


def test_a_node_config_got_by_name_without_a_node_selector_is_laid_on_every_node(
    api_server: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # The resolver matches a nodeSelector only for a list (cilium-node-config:NAMESPACE):
    # one got by name applies on every node, a nodeSelector or none. k3snet left one
    # without a nodeSelector out, judging cilium-config alone.
    edge = _node_config("edge", {"enable-ipv4-masquerade": "false"})
    del edge["spec"]["nodeSelector"]
    api_server.put(NODE_CONFIGS_V2, edge)
    api_server.put(DAEMONSETS, _building(
        "--source=config-map:cilium-config,cilium-node-config:kube-system/edge"))
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert [(o.name, o.selector) for o in foreign.node_overrides] == [("edge", "")]
    # Listed (the default sources), one without a nodeSelector selects no node.
    api_server.put(DAEMONSETS, _building())
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.node_overrides == ()


def test_cilium_config_after_the_node_configs_in_the_sources_is_laid_over_them(
    api_server: EmulatedApiServer, backend: CiliumBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # The resolver lays each source over the ones before it: with the CiliumNodeConfigs
    # first, cilium-config's enable-ipv4-masquerade (Helm writes it) wins on the edge
    # nodes too, and k3snet judged the CiliumNodeConfig's "false" laid over it.
    api_server.put(NODE_CONFIGS_V2, _node_config(
        "edge", {"enable-ipv4-masquerade": "false", "enable-ipv4-egress-gateway": "true"}))
    api_server.put(DAEMONSETS, _building(
        "--source=cilium-node-config:kube-system,config-map:cilium-config"))
    with caplog.at_level(logging.WARNING):
        (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    # A key cilium-config does not hold stays the CiliumNodeConfig's.
    assert [(o.name, dict(o.settings)) for o in foreign.node_overrides] == [
        ("edge", {"enable-ipv4-egress-gateway": "true"})]
    assert any("enable-ipv4-masquerade of CiliumNodeConfig edge" in r.getMessage()
               for r in caplog.records)
    # cilium-config's key filtered out (not the first source): the CiliumNodeConfig's stays.
    api_server.put(DAEMONSETS, _building(
        "--source=cilium-node-config:kube-system,config-map:cilium-config",
        "--deny-config-keys=enable-ipv4-masquerade"))
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert [dict(o.settings) for o in foreign.node_overrides] == [
        {"enable-ipv4-masquerade": "false", "enable-ipv4-egress-gateway": "true"}]


def _mounting(configmap: str, *, name: str = "cilium") -> dict[str, Any]:
    """An agent DaemonSet as Cilium's chart made it before build-config (1.13): the
    ConfigMap ``configmap`` mounted whole at the agent's --config-dir."""
    ds = cilium_daemonset(ip_masq_agent=name == "cilium", name=name)
    pod = ds["spec"]["template"]["spec"]
    pod["initContainers"] = []
    pod["containers"][0]["volumeMounts"].append(
        {"name": "cilium-config-path", "mountPath": "/tmp/cilium/config-map", "readOnly": True})
    pod["volumes"].append({"name": "cilium-config-path", "configMap": {"name": configmap}})
    return ds


def test_an_agent_mounting_another_configmap_as_its_config_directory_reads_that_one(
    api_server: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # Without build-config the agent reads the ConfigMap mounted at its --config-dir:
    # a write into cilium-config has no effect where another one is mounted there.
    api_server.put(DAEMONSETS, _mounting("cilium-config"))
    assert backend.check(plan(backend.observe(), MASQUERADE_OFF)) == ()
    api_server.put(DAEMONSETS, _mounting("cilium-config-old"))
    (refused,) = backend.check(plan(backend.observe(), MASQUERADE_OFF))
    assert ("enable-ipv4-masquerade: k3snet writes it into ConfigMap kube-system/cilium-config, "
            "which the cilium-agent container of DaemonSet kube-system/cilium (its config "
            "directory) does not take from there") in refused


def test_a_copy_mounting_its_own_configmap_as_its_config_directory_is_not_judged_by_cilium_config(
    api_server: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # cilium-gpu's agents read cilium-config-gpu, which keeps the ip-masq-agent off: its
    # lack of /etc/config refused turning it on in cilium-config, as if they read that.
    api_server.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=True))
    gpu = _mounting("cilium-config-gpu", name="cilium-gpu")
    gpu["spec"]["template"]["spec"]["nodeSelector"] = {"pool": "gpu"}
    api_server.put(DAEMONSETS, gpu)
    on = State(owned=[CiliumConfig(TARGET, settings={
        "enable-bpf-masquerade": "true", "enable-ip-masq-agent": "true"})])
    assert backend.check(plan(backend.observe(), on)) == ()


def test_a_key_the_agent_s_variable_takes_from_cilium_config_itself_is_taken_whatever_the_sources(
    api_server: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # The config init container drops enable-ipv4-masquerade of cilium-config, but the
    # agent's CILIUM_ENABLE_IPV4_MASQUERADE comes from that very key: the kubelet sets it
    # to what k3snet writes there and viper lays the variable over the config directory.
    # The write was refused as having no effect.
    ds = _building("--source=config-map:cilium-base,config-map:cilium-config",
                   "--deny-config-keys=enable-ipv4-masquerade")
    ds["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "CILIUM_ENABLE_IPV4_MASQUERADE", "valueFrom": {"configMapKeyRef": {
            "name": "cilium-config", "key": "enable-ipv4-masquerade"}}}]
    api_server.put(DAEMONSETS, ds)
    assert backend.check(plan(backend.observe(), MASQUERADE_OFF)) == ()
    # From another key of cilium-config, the key is not taken: refused as before.
    ds["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"][
        "configMapKeyRef"]["key"] = "enable-ipv6-masquerade"
    api_server.put(DAEMONSETS, ds)
    (refused,) = backend.check(plan(backend.observe(), MASQUERADE_OFF))
    assert "enable-ipv4-masquerade: k3snet writes it" in refused


def test_a_node_config_s_key_the_agent_s_variable_takes_from_cilium_config_is_not_judged(
    api_server: EmulatedApiServer, backend: CiliumBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # The agent's CILIUM_ENABLE_IPV4_MASQUERADE comes from cilium-config's own key: viper
    # lays the variable over the config directory, where the CiliumNodeConfig's value is,
    # so the edge nodes' agents take cilium-config's. k3snet judged the CiliumNodeConfig's
    # "false" there: a masquerade expectation was a conflict naming it.
    api_server.put(NODE_CONFIGS_V2, _node_config("edge", {"enable-ipv4-masquerade": "false"}))
    ds = _building()
    ds["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "CILIUM_ENABLE_IPV4_MASQUERADE", "valueFrom": {"configMapKeyRef": {
            "name": "cilium-config", "key": "enable-ipv4-masquerade"}}}]
    api_server.put(DAEMONSETS, ds)
    with caplog.at_level(logging.WARNING):
        (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    assert foreign.node_overrides == ()
    assert any("CiliumNodeConfig edge" in r.getMessage() and "CILIUM_ENABLE_IPV4_MASQUERADE"
               in r.getMessage() for r in caplog.records)
    want = CiliumMasquerade(TARGET, masquerade=[("192.168.2.0/24", "eth0")])
    assert plan(backend.observe(), State(owned=[want])).conflicts == ()
    # An optional ref to a key cilium-config does not hold sets no variable: the
    # CiliumNodeConfig's value is the agents' there.
    ds["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "CILIUM_ENABLE_IPV4_MASQUERADE", "valueFrom": {"configMapKeyRef": {
            "name": "cilium-config", "key": "enable-ipv4-masquerade", "optional": True}}}]
    api_server.put(DAEMONSETS, ds)
    assert _observed_overrides(backend) == ()  # cilium-config holds it
    api_server.put(CONFIGMAPS, _cilium_config(
        {k: v for k, v in HELM_K3S_DATA.items() if k != "enable-ipv4-masquerade"}))
    assert [o.name for o in _observed_overrides(backend)] == ["edge"]


def _observed_overrides(backend: CiliumBackend) -> tuple[Any, ...]:
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    return tuple(foreign.node_overrides)


def test_a_copy_whose_agent_s_variable_takes_a_cilium_config_key_awaits_its_restart(
    api_server: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # cilium-gpu's config init container reads its own ConfigMap alone, but its agent's
    # CILIUM_ENABLE_IPV4_MASQUERADE comes from cilium-config: the kubelet reads that when
    # the container starts, so k3snet's write reaches its nodes at their next start. Its
    # restart was not said needed nor followed.
    api_server.put(DAEMONSETS, _building())
    gpu = _building("--source=config-map:cilium-config-gpu", name="cilium-gpu")
    gpu["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "CILIUM_ENABLE_IPV4_MASQUERADE", "valueFrom": {"configMapKeyRef": {
            "name": "cilium-config", "key": "enable-ipv4-masquerade"}}}]
    api_server.put(DAEMONSETS, gpu)
    (change,) = plan(backend.observe(), MASQUERADE_OFF).changes
    assert backend.restart_needed(change) == (
        "DaemonSet kube-system/cilium", "DaemonSet kube-system/cilium-gpu")
    # Its own ConfigMap alone, no variable from cilium-config: no restart of its pods.
    del gpu["spec"]["template"]["spec"]["containers"][0]["env"]
    api_server.put(DAEMONSETS, gpu)
    (change,) = plan(backend.observe(), MASQUERADE_OFF).changes
    assert backend.restart_needed(change) == "DaemonSet kube-system/cilium"


@pytest.mark.parametrize("read_gone", ["taken by the check", "a plan file's backend"])
def test_check_and_an_apply_reading_again_judge_the_sources_alike(
    read_gone: str, api_server: EmulatedApiServer, api_client: Any, backend: CiliumBackend
) -> None:
    # The check right after observe takes its read, with the config init container's
    # sources; the apply after it (or one from a plan file) read the two ConfigMaps again
    # without them: check refused the write as having no effect, and apply made it.
    api_server.put(DAEMONSETS, _building(
        "--source=config-map:cilium-config-gpu,cilium-node-config"))
    p = plan(backend.observe(), MASQUERADE_OFF)
    (refused,) = backend.check(p)
    assert "the write would have no effect" in refused
    applying = backend if read_gone == "taken by the check" else CiliumBackend(
        api_client=api_client, timeout=10.0, allow_disruptive=True)
    if applying is not backend:
        assert applying.check(p) == (refused,)
    with pytest.raises(PlanError) as raised:
        applying.apply(p)
    assert str(raised.value) == refused
    assert _data(api_server)["enable-ipv4-masquerade"] == "true"


def test_an_apply_reading_again_judges_the_node_configs_its_sources_take(
    api_server: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # The CiliumNodeConfig turns the ip-masq-agent off on every node, but the config init
    # container reads none: turning it on in cilium-config reaches every agent, whose
    # container has no /etc/config (refused). Read again, the apply listed the
    # CiliumNodeConfigs without the sources: judged off everywhere, and written.
    off = _node_config("all", {"enable-ip-masq-agent": "false"})
    off["spec"]["nodeSelector"] = {}
    api_server.put(NODE_CONFIGS_V2, off)
    ds = _building("--source=config-map:cilium-config")
    pod = ds["spec"]["template"]["spec"]
    pod["containers"][0]["volumeMounts"] = [
        m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] != "/etc/config"]
    api_server.put(DAEMONSETS, ds)
    on = State(owned=[CiliumConfig(TARGET, settings={
        "enable-bpf-masquerade": "true", "enable-ip-masq-agent": "true"})])
    p = plan(backend.observe(), on)
    (refused,) = backend.check(p)
    assert "no /etc/config" in refused
    with pytest.raises(PlanError) as raised:
        backend.apply(p)  # the check took observe's read: read again
    assert str(raised.value) == refused
    assert "enable-ip-masq-agent" not in _data(api_server)


def test_a_configmap_source_laid_over_cilium_config_holding_a_key_k3snet_writes_is_refused(
    api_server: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # The resolver lays cilium-overrides (a later --source) over cilium-config: its
    # enable-ipv4-masquerade is the agents', and k3snet's write into cilium-config had no
    # effect, said converged.
    api_server.put(DAEMONSETS, _building(
        "--source=config-map:cilium-config,config-map:cilium-overrides,cilium-node-config"))
    api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-overrides",
                                         {"enable-ipv4-masquerade": "true"}))
    (refused,) = backend.check(plan(backend.observe(), MASQUERADE_OFF))
    assert ("enable-ipv4-masquerade: k3snet writes it into ConfigMap kube-system/cilium-config, "
            "over which the config init container of DaemonSet kube-system/cilium (cilium-dbg "
            "build-config) lays the ConfigMap kube-system/cilium-overrides (after it in "
            "--source: --source=config-map:cilium-config,config-map:cilium-overrides,"
            "cilium-node-config), holding enable-ipv4-masquerade=true: the write would have "
            "no effect") in refused
    with pytest.raises(PlanError, match="would have no effect"):
        backend.apply(plan(backend.observe(), MASQUERADE_OFF))
    assert _data(api_server)["enable-ipv4-masquerade"] == "true"
    # Holding the value asked for (trimmed), or filtered out, or not holding it: written.
    for data, args in ((({"enable-ipv4-masquerade": "false\n"}), ()),
                       ({"enable-ipv4-masquerade": "true"},
                        ("--deny-config-keys=enable-ipv4-masquerade",)),
                       ({"debug": "true"}, ())):
        api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-overrides", data))
        api_server.put(DAEMONSETS, _building(
            "--source=config-map:cilium-config,config-map:cilium-overrides", *args))
        assert backend.check(plan(backend.observe(), MASQUERADE_OFF)) == ()
    # Before cilium-config in --source, cilium-config is laid over it: written.
    api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-overrides",
                                         {"enable-ipv4-masquerade": "true"}))
    api_server.put(DAEMONSETS, _building(
        "--source=config-map:cilium-overrides,config-map:cilium-config"))
    assert backend.check(plan(backend.observe(), MASQUERADE_OFF)) == ()


def test_a_node_source_is_a_warning_naming_what_k3snet_does_not_read(
    api_server: EmulatedApiServer, backend: CiliumBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # The node: source lays each Node's config.cilium.io/KEY labels and annotations over
    # cilium-config on that node; k3snet reads none of them and said nothing.
    api_server.put(DAEMONSETS, _building("--source=config-map:cilium-config,node"))
    with caplog.at_level(logging.WARNING):
        backend.observe()
    assert any("reads the node: source (--source=config-map:cilium-config,node)"
               in r.getMessage() and "config.cilium.io/KEY" in r.getMessage()
               for r in caplog.records)


def test_a_copy_taking_the_node_configs_otherwise_is_a_warning(
    api_server: EmulatedApiServer, api_client: Any, backend: CiliumBackend,
    caplog: pytest.LogCaptureFixture
) -> None:
    # cilium-gpu's config init container reads no CiliumNodeConfig: on its nodes "edge"
    # sets nothing, yet k3snet judges it there too (by the named DaemonSet's sources),
    # and said nothing.
    api_server.put(NODE_CONFIGS_V2, _node_config("edge", {"enable-ipv4-masquerade": "false"}))
    api_server.put(DAEMONSETS, _building())
    gpu = _building("--source=config-map:cilium-config", name="cilium-gpu")
    gpu["spec"]["template"]["spec"]["nodeSelector"] = {"pool": "gpu"}
    api_server.put(DAEMONSETS, gpu)
    with caplog.at_level(logging.WARNING):
        backend.observe()
    said = [r.getMessage() for r in caplog.records
            if "takes the CiliumNodeConfigs otherwise" in r.getMessage()]
    assert said == ["cilium: the config init container of DaemonSet kube-system/cilium-gpu "
                    "takes the CiliumNodeConfigs otherwise than DaemonSet kube-system/"
                    "cilium's (--source=config-map:cilium-config): k3snet judges them by "
                    "the latter's on every node, its agents' nodes too"]
    # Taken alike (the same flags): nothing said (a backend of its own: one said once).
    caplog.clear()
    api_server.put(DAEMONSETS, _building(name="cilium-gpu"))
    with caplog.at_level(logging.WARNING):
        CiliumBackend(api_client=api_client, timeout=10.0).observe()
    assert not any("takes the CiliumNodeConfigs otherwise" in r.getMessage()
                   for r in caplog.records)


@pytest.mark.parametrize(("key", "wanted", "laid", "refused"), [
    # Read as the agent reads its config directory (trimmed; Go's ParseBool, a value it
    # refuses read as false; a CIDR's host bits masked): the same value, written.
    ("enable-ipv4-masquerade", "false", "False", False),
    ("enable-ipv4-masquerade", "false", " 0\n", False),
    ("enable-ipv4-masquerade", "false", "no", False),
    ("enable-masquerade-to-route-source", "true", "TRUE", False),
    ("ipv4-native-routing-cidr", "10.42.0.0/16", "10.42.7.1/16", False),
    ("ipv6-native-routing-cidr", "fd00:42::/48", "fd00:42:0::/48\n", False),
    # Another value as the agent reads it: refused.
    ("enable-masquerade-to-route-source", "true", "yes", True),
    ("enable-masquerade-to-route-source", "true", "0", True),
    ("ipv6-native-routing-cidr", "fd00:42::/48", "fd00:43::/48", True),
])
def test_a_later_configmap_s_value_is_compared_as_the_agent_reads_it(
    *, key: str, wanted: str, laid: str, refused: bool, api_server: EmulatedApiServer,
    backend: CiliumBackend
) -> None:
    # cilium-overrides' "False" is the agents' false as k3snet's "false" is: the write
    # of enable-ipv4-masquerade=false was refused as having no effect, compared as text.
    api_server.put(DAEMONSETS, _building(
        "--source=config-map:cilium-config,config-map:cilium-overrides"))
    api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-overrides", {key: laid}))
    wants = State(owned=[CiliumConfig(TARGET, settings={key: wanted})])
    found = [p for p in backend.check(plan(backend.observe(), wants))
             if "cilium-overrides" in p]
    assert bool(found) is refused, found


def test_a_later_configmap_setting_a_judged_key_otherwise_is_a_warning_where_nothing_is_written(
    api_server: EmulatedApiServer, api_client: Any, backend: CiliumBackend,
    caplog: pytest.LogCaptureFixture
) -> None:
    # cilium-config holds enable-ipv4-masquerade=true (Helm's), cilium-overrides laid over
    # it false: the agents masquerade nothing, yet the plan was empty (met) and nothing
    # was said, the write that is refused never planned.
    api_server.put(DAEMONSETS, _building(
        "--source=config-map:cilium-config,config-map:cilium-overrides"))
    api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-overrides",
                                         {"enable-ipv4-masquerade": "false", "debug": "true"}))
    masquerade = State(owned=[CiliumConfig(TARGET,
                                           settings={"enable-ipv4-masquerade": "true"})])

    def said(judge: CiliumBackend, wanted: State = masquerade) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert plan(judge.observe(), wanted).changes == ()
        return [r.getMessage() for r in caplog.records if "cilium-overrides" in r.getMessage()]

    def fresh() -> CiliumBackend:  # each warning is said once a backend
        return CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)

    assert said(backend) == [
        "cilium: the config init container of DaemonSet kube-system/cilium (cilium-dbg "
        "build-config) lays the ConfigMap kube-system/cilium-overrides over ConfigMap "
        "kube-system/cilium-config (after it in --source: --source=config-map:cilium-config,"
        "config-map:cilium-overrides), holding enable-ipv4-masquerade=false where "
        "cilium-config gives true: the agents run with false (where no CiliumNodeConfig "
        "after it sets it), k3snet judges enable-ipv4-masquerade by cilium-config's"]
    # k3snet's own key, written before the ConfigMap came: said too.
    api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-overrides", {}))
    backend = fresh()
    backend.apply(plan(backend.observe(), MASQUERADE_OFF))
    assert _data(api_server)["enable-ipv4-masquerade"] == "false"
    api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-overrides",
                                         {"enable-ipv4-masquerade": "1"}))
    (warning,) = said(fresh(), MASQUERADE_OFF)
    assert "holding enable-ipv4-masquerade=1 where cilium-config gives false" in warning
    # Read alike, filtered out, or the agent container's flag setting it: nothing said.
    for value, args in (("False", ()), ("true", ("--allow-config-keys=debug",))):
        api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-overrides",
                                             {"enable-ipv4-masquerade": value}))
        api_server.put(DAEMONSETS, _building(
            "--source=config-map:cilium-config,config-map:cilium-overrides", *args))
        assert said(fresh(), MASQUERADE_OFF) == []
    flagged = _building("--source=config-map:cilium-config,config-map:cilium-overrides")
    flagged["spec"]["template"]["spec"]["containers"][0].setdefault("args", []).append(
        "--enable-ipv4-masquerade=false")
    api_server.put(DAEMONSETS, flagged)
    assert said(fresh(), MASQUERADE_OFF) == []


def test_a_node_source_named_by_the_pod_s_node_name_keeps_the_sources_known(
    api_server: EmulatedApiServer, backend: CiliumBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # node:$(K8S_NODE_NAME), the variable the node's name (a fieldRef to spec.nodeName,
    # as Helm sets it), names the Node whose labels and annotations k3snet does not read
    # anyway; known only where the pod runs, it made the whole --source list not known:
    # cilium-overrides laid over cilium-config was not judged, the write not refused.
    sources = ("--source=config-map:cilium-config,config-map:cilium-overrides,"
               "node:$(K8S_NODE_NAME)")
    api_server.put(DAEMONSETS, _building(sources))
    api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-overrides",
                                         {"enable-ipv4-masquerade": "true"}))
    with caplog.at_level(logging.WARNING):
        (refused,) = backend.check(plan(backend.observe(), MASQUERADE_OFF))
    assert "lays the ConfigMap kube-system/cilium-overrides" in refused
    assert any("reads the node: source (--source=config-map:cilium-config,config-map:"
               "cilium-overrides,node)" in r.getMessage()
               for r in caplog.records)
    # A variable that may hold anything (another source after a comma) in a node: source,
    # or the node's name elsewhere: not known, as before.
    for given, env in (("node:$(WHERE)", {"name": "WHERE", "valueFrom": {"configMapKeyRef": {
            "name": "where", "key": "node"}}}),
                       ("config-map:cilium-$(K8S_NODE_NAME)", None)):
        ds = _building(f"--source=config-map:cilium-config,{given}")
        if env is not None:
            ds["spec"]["template"]["spec"]["initContainers"][0]["env"].append(env)
        api_server.put(DAEMONSETS, ds)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert backend.check(plan(backend.observe(), MASQUERADE_OFF)) == ()
        assert any("is set only where the pod runs" in r.getMessage()
                   for r in caplog.records), [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize(("key", "given", "laid"), [
    ("ipv4-native-routing-cidr", "", ""),          # one text the agent reads alike
    ("ipv4-native-routing-cidr", None, ""),        # empty: as unset, the agent's ""
    ("egress-masquerade-interfaces", None, ""),
    ("enable-ipv4-egress-gateway", None, "false"),  # the agent's default, false
    # The device detection keys are booleans too (viper's GetBool), not texts.
    ("force-device-detection", "true", "True"),
    ("force-device-detection", None, "false"),
    ("enforce-device-detection", "1", "true"),
])
def test_a_later_configmap_s_value_the_agent_reads_as_cilium_config_s_is_no_warning(
    *, key: str, given: str | None, laid: str, api_server: EmulatedApiServer,
    backend: CiliumBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # ipv4-native-routing-cidr "" in both ConfigMaps (not a CIDR) was a warning that
    # the two differ, never silenced by making them equal; empty or false where
    # cilium-config holds none is the agent's own default.
    data = {k: v for k, v in HELM_K3S_DATA.items() if k != key}
    api_server.put(CONFIGMAPS, _cilium_config(
        data if given is None else {**data, key: given}))
    api_server.put(DAEMONSETS, _building(
        "--source=config-map:cilium-config,config-map:cilium-overrides"))
    api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-overrides", {key: laid}))
    with caplog.at_level(logging.WARNING):
        backend.observe()
    assert [r.getMessage() for r in caplog.records if "cilium-overrides" in r.getMessage()
            ] == []


def test_a_copy_s_later_configmap_setting_a_judged_key_otherwise_is_a_warning(
    api_server: EmulatedApiServer, api_client: Any, backend: CiliumBackend,
    caplog: pytest.LogCaptureFixture
) -> None:
    # A copy for a node pool laying its own ConfigMap over cilium-config (Helm's named
    # DaemonSet taking cilium-config alone): the agents of its nodes masquerade nothing,
    # yet the plan was empty (met) and nothing was said, the named one's alone judged.
    api_server.put(DAEMONSETS, _building())
    gpu = _building("--source=config-map:cilium-config,config-map:cilium-gpu",
                    name="cilium-gpu")
    gpu["spec"]["template"]["spec"]["nodeSelector"] = {"pool": "gpu"}
    api_server.put(DAEMONSETS, gpu)
    api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-gpu",
                                         {"enable-ipv4-masquerade": "false"}))
    masquerade = State(owned=[CiliumConfig(TARGET,
                                           settings={"enable-ipv4-masquerade": "true"})])
    with caplog.at_level(logging.WARNING):
        assert plan(backend.observe(), masquerade).changes == ()
    assert [r.getMessage() for r in caplog.records if "cilium-gpu " in r.getMessage()] == [
        "cilium: the config init container of DaemonSet kube-system/cilium-gpu (cilium-dbg "
        "build-config) lays the ConfigMap kube-system/cilium-gpu over ConfigMap "
        "kube-system/cilium-config (after it in --source: --source=config-map:cilium-config,"
        "config-map:cilium-gpu), holding enable-ipv4-masquerade=false where "
        "cilium-config gives true: the agents run with false (where no CiliumNodeConfig "
        "after it sets it), k3snet judges enable-ipv4-masquerade by cilium-config's"]
    # The copy's agent container setting the key itself: its flag decides, not said.
    gpu["spec"]["template"]["spec"]["containers"][0].setdefault("args", []).append(
        "--enable-ipv4-masquerade=false")
    api_server.put(DAEMONSETS, gpu)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        CiliumBackend(api_client=api_client, timeout=10.0).observe()
    assert not [r for r in caplog.records if "lays the ConfigMap" in r.getMessage()]



def test_remembered_warnings_stay_bounded_as_a_hostile_configmap_changes_every_pass(
    api_server: EmulatedApiServer, backend: CiliumBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # Whoever may edit a ConfigMap the config init container lays over cilium-config
    # gave enable-ipv4-masquerade another value every pass: each warning's text was kept
    # for ever (an agent running for months held every value ever seen). A warning is
    # logged once while it lasts (as the kit's WarningLog does), and only the last
    # passes' are remembered.
    api_server.put(DAEMONSETS, _building(
        "--source=config-map:cilium-config,config-map:cilium-overrides"))
    passes = 40
    for i in range(passes):
        api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-overrides",
                                             {"enable-ipv4-masquerade": f"no-{i}"}))
        backend.observe()
    assert len(backend._api.warned) <= 2, len(backend._api.warned)
    # One that stays is said once, not on every pass; gone and back, it is said again.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            backend.observe()
    assert len([r for r in caplog.records if "cilium-overrides" in r.getMessage()]) == 0
    api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-overrides", {}))
    backend.observe()
    api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-overrides",
                                         {"enable-ipv4-masquerade": f"no-{passes - 1}"}))
    with caplog.at_level(logging.WARNING):
        backend.observe()
    assert len([r for r in caplog.records if "cilium-overrides" in r.getMessage()]) == 1


@pytest.mark.parametrize("image", [
    "quay.io/cilium/cilium:v1.16.5@sha256:" + "0" * 64,
    "rancher/mirrored-cilium-cilium:v1.17.2",
    "registry.local:5000/cilium/cilium:v1.18.0",
    "quay.io/cilium/cilium@sha256:" + "0" * 64,
])
def test_a_v2_node_config_on_helms_source_list_is_judged_in_the_order_given_silently(
    image: str, api_server: EmulatedApiServer, backend: CiliumBackend,
    caplog: pytest.LogCaptureFixture
) -> None:
    # Cilium's resolver (pkg/option/resolver, ResolveConfigurations) takes the sources in
    # the --source order in every release, whatever the CiliumNodeConfig's API version:
    # the change putting the v2 ones first (cilium/cilium#33246) was closed unmerged.
    # Helm's list with the documented v2 CiliumNodeConfig turning masquerading off on
    # the edge nodes is the plainest use; k3snet warned there on every 1.16+ image that
    # cilium-config's true "may" be laid over it.
    api_server.put(NODE_CONFIGS_V2, _node_config("edge", {"enable-ipv4-masquerade": "false"}))
    ds = _building()
    (init,) = ds["spec"]["template"]["spec"]["initContainers"]
    init["image"] = image
    api_server.put(DAEMONSETS, ds)
    with caplog.at_level(logging.WARNING):
        (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    (override,) = foreign.node_overrides
    assert override.name == "edge"
    assert override.settings == {"enable-ipv4-masquerade": "false"}
    assert not [r.getMessage() for r in caplog.records if "edge" in r.getMessage()]
