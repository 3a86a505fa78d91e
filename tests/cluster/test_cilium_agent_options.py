"""The cilium backend reads the ``cilium-agent`` container's flags and variables.

Cilium's agent takes each option from its command line (``--enable-ip-masq-agent``) or
its ``CILIUM_...`` variable over ``cilium-config`` and the CiliumNodeConfigs (viper: a
flag set on the command line, then the environment, then the config directory). k3snet
judged by ``cilium-config`` alone: an agent started with ``--enable-ip-masq-agent`` was
judged with its ip-masq-agent off, and k3snet wrote keys a flag overrode, saying
converged.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from k3snet.backends.cilium import CiliumBackend
from k3snet.backends.cni_restart import CHANGED_ANNOTATION
from k3snet.converge import compile_for
from k3snet.errors import PlanError
from k3snet.model.cilium import CiliumAgentOption, CiliumConfig
from k3snet.model.state import State, object_from_dict
from k3snet.planner import Plan, plan
from k3snet.spec import Spec, seed_spec
from k3snet.testing.kube import EmulatedApiServer
from tests.cluster.test_cilium_backend import (
    HELM_K3S_DATA,
    NODE_CONFIGS_V2,
    TARGET,
    _annotations,
    _cilium_config,
    _data,
    _node_config,
)
from tests.cluster.test_cilium_mount import cilium_daemonset
from tests.cluster.workloads import CONFIGMAPS, DAEMONSETS, configmap

pytestmark = pytest.mark.cluster

EBPF = {**HELM_K3S_DATA, "enable-bpf-masquerade": "true"}
NATIVE = {"routing-mode": "native", "ipv4-native-routing-cidr": "10.42.0.0/16"}


def _daemonset(args: list[str] | None = None, env: list[dict[str, Any]] | None = None,
               ) -> dict[str, Any]:
    """Helm's DaemonSet with the ip-masq-agent ConfigMap mounted, its agent container
    given ``args`` more and ``env``."""
    ds = cilium_daemonset(ip_masq_agent=True)
    agent = ds["spec"]["template"]["spec"]["containers"][0]
    agent["args"] += args or []
    if env is not None:
        agent["env"] = env
    return ds


def _spec(**cilium: Any) -> Spec:
    """The seed spec (192.168.2.0/24 masqueraded via eth0) on the cilium backend, with
    ``cilium`` as its cni.cilium."""
    data = seed_spec().to_dict()
    data["backends"] = ["cilium"]
    if cilium:
        data["cni"] = {"cilium": cilium}
    return Spec.from_dict(data)


def _setup(server: EmulatedApiServer, data: dict[str, str], ds: dict[str, Any]) -> None:
    server.put(CONFIGMAPS, _cilium_config(data))
    server.put(DAEMONSETS, ds)


@pytest.fixture
def backend(api_server: EmulatedApiServer, api_client: Any) -> CiliumBackend:
    return CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)


def _foreign(backend: CiliumBackend) -> CiliumConfig:
    (foreign,) = backend.observe().foreign
    assert isinstance(foreign, CiliumConfig)
    return foreign


def _reasons(backend: CiliumBackend, spec: Spec) -> list[str]:
    return [str(n.reason) for n in plan(backend.observe(), compile_for(backend, spec)).conflicts]


def test_a_bare_flag_turns_the_ip_masq_agent_on_over_cilium_config(
    api_server: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # cilium-config leaves it off; the agent runs it, with its default list (the
    # ConfigMap mounted, empty), which holds 192.168.0.0/16: no masquerade to 192.168.2.0/24.
    _setup(api_server, EBPF, _daemonset(["--enable-ip-masq-agent"]))
    foreign = _foreign(backend)
    assert foreign.flag("enable-ip-masq-agent")
    assert foreign.agent_options == (
        CiliumAgentOption("enable-ip-masq-agent", "true", "--enable-ip-masq-agent"),)
    assert foreign.describe().endswith(
        "[the cilium-agent container's --enable-ip-masq-agent=true, over cilium-config]")
    assert object_from_dict(json.loads(json.dumps(foreign.to_dict()))) == foreign
    (reason,) = _reasons(backend, _spec())
    assert reason.startswith(
        "with the cilium-agent container's --enable-ip-masq-agent=true (set over "
        "cilium-config, which k3snet writes; k3snet does not edit the DaemonSet): "
        "192.168.2.0/24 is inside 192.168.0.0/16, from Cilium's default list")


def test_a_write_a_variable_overrides_is_a_conflict_saying_it_has_no_effect(
    api_server: EmulatedApiServer, backend: CiliumBackend
) -> None:
    _setup(api_server, EBPF, _daemonset(env=[
        {"name": "CILIUM_ENABLE_IP_MASQ_AGENT", "value": "false"}]))
    reasons = _reasons(backend, _spec(bpfMasquerade=True, ipMasqAgent=True))
    assert reasons[0].startswith(
        "k3snet writes enable-ip-masq-agent=true into configmap:kube-system/cilium-config, "
        "which has no effect: it is set by the cilium-agent container's "
        "$CILIUM_ENABLE_IP_MASQ_AGENT=false, over cilium-config")
    assert "k3snet does not edit the DaemonSet" in reasons[0]
    # Written all the same, the agent still reads its variable: the conflict stays.
    backend.apply(plan(backend.observe(), compile_for(backend, _spec(
        bpfMasquerade=True, ipMasqAgent=True))))
    assert _data(api_server)["enable-ip-masq-agent"] == "true"
    assert not _foreign(backend).flag("enable-ip-masq-agent")
    assert any("has no effect" in r for r in _reasons(backend, _spec(
        bpfMasquerade=True, ipMasqAgent=True)))
    # One giving the value the spec asks for (as Cilium reads it) is no conflict.
    _setup(api_server, EBPF, _daemonset(env=[
        {"name": "CILIUM_ENABLE_IPV4_MASQUERADE", "value": "True"}]))
    assert _reasons(backend, _spec(enableIPv4Masquerade=True)) == []


def test_a_flag_wins_over_the_variable_and_node_configs_and_the_last_flag_wins(
    api_server: EmulatedApiServer, backend: CiliumBackend
) -> None:
    _setup(api_server, {**EBPF, "enable-ip-masq-agent": "true"}, _daemonset(
        ["--enable-ip-masq-agent=true", "--enable-ip-masq-agent=false"],
        env=[{"name": "CILIUM_ENABLE_IP_MASQ_AGENT", "value": "true"}]))
    api_server.put(NODE_CONFIGS_V2, _node_config("all", {"enable-ip-masq-agent": "true"},
                                                 selector={}))
    foreign = _foreign(backend)
    assert foreign.agent_option("enable-ip-masq-agent") == CiliumAgentOption(
        "enable-ip-masq-agent", "false", "--enable-ip-masq-agent")
    assert [view.flag("enable-ip-masq-agent") for _, view in foreign.on_nodes()] == [False]
    # The variable alone: it wins over cilium-config.
    _setup(api_server, EBPF, _daemonset(env=[
        {"name": "CILIUM_ENABLE_IP_MASQ_AGENT", "value": "true"}]))
    assert [view.flag("enable-ip-masq-agent") for _, view in _foreign(backend).on_nodes()] \
        == [True]


@pytest.mark.parametrize(("form", "on"), [
    *((f, True) for f in ("1", "t", "T", "TRUE", "true", "True")),
    *((f, False) for f in ("0", "f", "F", "FALSE", "false", "False")),
])
def test_a_bool_flag_is_read_as_pflag_parses_it(
    form: str, on: bool, api_server: EmulatedApiServer, backend: CiliumBackend
) -> None:
    _setup(api_server, {**HELM_K3S_DATA, "enable-bpf-masquerade": str(not on).lower()},
           _daemonset([f"--enable-bpf-masquerade={form}"]))
    assert _foreign(backend).flag("enable-bpf-masquerade") is on


def test_a_bool_flag_takes_no_separate_value_and_flags_end_at_the_double_dash(
    api_server: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # `--enable-bpf-masquerade false`: pflag sets the flag (true) and takes "false" as a
    # positional argument. A string flag takes the next argument as its value.
    _setup(api_server, HELM_K3S_DATA, _daemonset(
        ["--enable-bpf-masquerade", "false", "--routing-mode", "native", "--",
         "--enable-ipv4-masquerade=false"]))
    foreign = _foreign(backend)
    assert foreign.flag("enable-bpf-masquerade")
    assert foreign.value("routing-mode") == "native"
    assert foreign.agent_option("enable-ipv4-masquerade") is None
    assert foreign.flag("enable-ipv4-masquerade")


@pytest.mark.parametrize("after", ["false", "true"])
def test_an_argument_after_a_bool_flag_alone_stops_the_agent(
    after: str, api_server: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # cilium-agent is a cobra command with subcommands (cmdref, shell, hive): the
    # positional argument pflag leaves is taken as a command, unknown, and the agent
    # exits at start ('unknown command "false" for "cilium-agent"').
    _setup(api_server, EBPF, _daemonset(["--enable-ip-masq-agent", after]))
    foreign = _foreign(backend)
    option = foreign.agent_option("enable-ip-masq-agent")
    assert option is not None
    assert option.positional == after
    assert object_from_dict(json.loads(json.dumps(foreign.to_dict()))) == foreign
    (reason,) = _reasons(backend, _spec())
    assert (f"the cilium-agent container's --enable-ip-masq-agent is followed by '{after}', "
            "which is not its value") in reason
    assert "the Cilium agent does not run with this config" in reason
    # Another flag after it, or an argument after `--`, is no positional one.
    _setup(api_server, EBPF, _daemonset(["--enable-ip-masq-agent", "--debug", "--", after]))
    assert _foreign(backend).agent_options == (
        CiliumAgentOption("enable-ip-masq-agent", "true", "--enable-ip-masq-agent"),)


def test_a_bool_flag_pflag_refuses_stops_the_agent_and_a_variable_s_is_false(
    api_server: EmulatedApiServer, backend: CiliumBackend
) -> None:
    _setup(api_server, EBPF, _daemonset(["--enable-ip-masq-agent=yes"]))
    (reason,) = _reasons(backend, _spec())
    assert reason.startswith("with the cilium-agent container's --enable-ip-masq-agent=yes")
    assert ("--enable-ip-masq-agent=yes is not a boolean (pflag refuses it at start: the "
            "agent exits): the Cilium agent does not run with this config") in reason
    # A variable's value viper's GetBool refuses is false, and the agent starts.
    _setup(api_server, {**EBPF, "enable-ip-masq-agent": "true"}, _daemonset(env=[
        {"name": "CILIUM_ENABLE_IP_MASQ_AGENT", "value": "yes"}]))
    assert not _foreign(backend).flag("enable-ip-masq-agent")
    assert _reasons(backend, _spec()) == []


def test_a_native_routing_cidr_flag_with_a_separate_value_is_judged(
    api_server: EmulatedApiServer, backend: CiliumBackend
) -> None:
    _setup(api_server, HELM_K3S_DATA, _daemonset(
        ["--ipv4-native-routing-cidr", "$(NATIVE)"],
        env=[{"name": "NATIVE", "value": "192.168.0.0/16"}]))
    (reason,) = _reasons(backend, _spec())
    assert reason.startswith("with the cilium-agent container's "
                             "--ipv4-native-routing-cidr=192.168.0.0/16 (set over")
    assert "192.168.2.0/24 is inside Cilium's ipv4-native-routing-cidr 192.168.0.0/16" in reason


def test_the_devices_variable_and_repeated_devices_flags_are_judged(
    api_server: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # eBPF masquerading runs on the devices Cilium attaches to: eth1 alone leaves eth0's
    # traffic unmasqueraded; string-slice flags add up (eth1 and eth0).
    _setup(api_server, EBPF, _daemonset(env=[{"name": "CILIUM_DEVICES", "value": "eth1"}]))
    (reason,) = _reasons(backend, _spec())
    assert "$CILIUM_DEVICES=eth1" in reason
    assert "(devices: eth1), and 192.168.2.0/24 is reached via eth0" in reason
    _setup(api_server, EBPF, _daemonset(["--devices=eth1", "--devices", "eth0"]))
    assert _foreign(backend).value("devices") == "eth1,eth0"
    assert _reasons(backend, _spec()) == []


@pytest.mark.parametrize(("source", "said"), [
    ({"fieldRef": {"fieldPath": "metadata.annotations['masq']"}},
     "not given, the variable CILIUM_ENABLE_IP_MASQ_AGENT"),
    ({"configMapKeyRef": {"name": "extra", "key": "masq"}},
     "the key masq of ConfigMap kube-system/extra it is taken from is missing"),
], ids=["field", "configmap-missing"])
def test_a_value_known_only_where_the_pod_runs_is_a_warning_and_cilium_config_judges(
    source: dict[str, Any], said: str, api_server: EmulatedApiServer, backend: CiliumBackend,
    caplog: pytest.LogCaptureFixture
) -> None:
    _setup(api_server, EBPF, _daemonset(env=[
        {"name": "CILIUM_ENABLE_IP_MASQ_AGENT", "valueFrom": source}]))
    with caplog.at_level(logging.WARNING):
        foreign = _foreign(backend)
    assert foreign.agent_options == ()
    assert any("$CILIUM_ENABLE_IP_MASQ_AGENT of the cilium-agent container of DaemonSet "
               f"kube-system/cilium: {said}" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("data", "value"), [
    ({"masq": "false"}, "false"), ({"masq": ""}, None), ({}, None)])
def test_a_variable_from_a_configmap_is_read_from_it_as_the_kubelet_sets_it(
    data: dict[str, str], value: str | None, api_server: EmulatedApiServer,
    backend: CiliumBackend
) -> None:
    # The kubelet sets the variable from the ConfigMap's key (optional: none where the
    # key is missing; viper takes an empty one as unset): it was taken as not known, and
    # cilium-config judged the key the agents take from the variable.
    _setup(api_server, EBPF, _daemonset(env=[
        {"name": "CILIUM_ENABLE_IP_MASQ_AGENT", "valueFrom": {"configMapKeyRef": {
            "name": "extra", "key": "masq", "optional": True}}}]))
    api_server.put(CONFIGMAPS, configmap("kube-system", "extra", data))
    options = {o.key: (o.value, o.given) for o in _foreign(backend).agent_options}
    assert options.get("enable-ip-masq-agent") == (
        None if value is None else (value, "$CILIUM_ENABLE_IP_MASQ_AGENT"))


FORBIDDEN_RULE = ('add the rule {"apiGroups": [""], "resources": ["configmaps"], '
                  '"resourceNames": ["extra"], "verbs": ["get"]} to a Role in kube-system '
                  "bound to the account k3snet runs as")


def test_a_variable_from_a_configmap_not_to_be_read_names_the_one_rbac_rule_to_add(
    api_server: EmulatedApiServer, backend: CiliumBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # A Role of an earlier k3snet granted get on Cilium's two ConfigMaps alone: another
    # one a variable comes from was a 403 in a cluster, and the warning said "see the
    # rendered ClusterRole", which grants no ConfigMap, and named no rule.
    _setup(api_server, EBPF, _daemonset(env=[
        {"name": "CILIUM_ENABLE_IP_MASQ_AGENT", "valueFrom": {"configMapKeyRef": {
            "name": "extra", "key": "masq"}}}]))
    api_server.put(CONFIGMAPS, configmap("kube-system", "extra", {"masq": "true"}))
    api_server.fail(403, plural="configmaps", name="extra", times=None)
    with caplog.at_level(logging.WARNING):
        assert _foreign(backend).agent_options == ()
    (warning,) = [r.getMessage() for r in caplog.records if "extra" in r.getMessage()]
    assert warning.startswith(
        "cilium: $CILIUM_ENABLE_IP_MASQ_AGENT of the cilium-agent container of DaemonSet "
        "kube-system/cilium: ConfigMap kube-system/extra (")
    assert ("is not to be read (forbidden, 403): the Role k3snet render manifests makes in "
            "kube-system grants get on every ConfigMap there (an earlier one on Cilium's "
            "two alone: apply the manifests again); ") in warning
    assert FORBIDDEN_RULE in warning
    assert "ClusterRole" not in warning
    assert warning.endswith("which judges enable-ip-masq-agent all the same")  # not cut


def test_check_refuses_a_write_the_agent_s_flags_make_it_refuse_to_start_with(
    api_server: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # cilium-config has iptables masquerading; the agent's flag has eBPF masquerading,
    # which refuses egress-masquerade-interfaces: every agent would crash-loop.
    _setup(api_server, HELM_K3S_DATA, _daemonset(["--enable-bpf-masquerade"]))
    p = plan(backend.observe(), compile_for(backend, _spec(egressMasqueradeInterfaces="eth0")))
    (refused,) = backend.check(p)
    assert "refuses egress-masquerade-interfaces" in refused
    assert "egress-masquerade-interfaces" not in _data(api_server)


def _native_then_given_by_flags(api_server: EmulatedApiServer, api_client: Any
                                ) -> tuple[CiliumBackend, CiliumBackend, Plan, str]:
    """cilium-config given native routing by k3snet (a backend allowed disruptive changes),
    then the agent's DaemonSet the same by flags: that backend, one not allowed, the plan
    giving cilium-config's values back, and the restart stamp k3snet's write left."""
    _setup(api_server, HELM_K3S_DATA, _daemonset())
    allowed = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    allowed.apply(plan(allowed.observe(), State(owned=[CiliumConfig(TARGET, settings=NATIVE)])))
    stamp = _annotations(api_server)[CHANGED_ANNOTATION]
    api_server.put(DAEMONSETS, _daemonset(
        ["--routing-mode=native", "--ipv4-native-routing-cidr", "10.42.0.0/16"]))
    backend = CiliumBackend(api_client=api_client, timeout=10.0)
    return allowed, backend, plan(backend.observe(), State()), stamp


def test_a_key_the_agent_s_flag_sets_is_no_disruptive_change_to_cilium_config(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    # k3snet wrote native routing; the DaemonSet's agent has since been given it by flag.
    # Giving cilium-config's tunnel back changes nothing Cilium runs with (the flags
    # win): no disruptive change, neither in the plan nor in check and apply.
    allowed, backend, p, _ = _native_then_given_by_flags(api_server, api_client)
    (change,) = p.changes
    assert backend.disruptive(change) is None
    assert backend.check(p) == ()
    backend.apply(plan(backend.observe(), State()))
    assert _data(api_server)["routing-mode"] == "tunnel"
    # Without the flags, the same change is disruptive.
    api_server.put(DAEMONSETS, _daemonset())
    allowed.apply(plan(allowed.observe(), State(owned=[CiliumConfig(TARGET, settings=NATIVE)])))
    p = plan(backend.observe(), State())
    (change,) = p.changes
    assert "routing-mode: native -> tunnel" in (backend.disruptive(change) or "")


def test_disruptive_and_apply_judge_by_the_agent_s_flags_as_they_are_now_not_as_observed(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    # observe found routing-mode given by the agent's flags; the DaemonSet lost them
    # since (helm upgrade): giving cilium-config's tunnel back is disruptive again, as the
    # agents read cilium-config at their next start. disruptive() judged by the flags the
    # last observe read (no change named), and the apply right after it, taking
    # observe's read, wrote tunnel with disruptive changes not allowed.
    _, backend, p, _ = _native_then_given_by_flags(api_server, api_client)
    (change,) = p.changes
    api_server.put(DAEMONSETS, _daemonset())
    assert "routing-mode: native -> tunnel" in (backend.disruptive(change) or "")
    with pytest.raises(PlanError, match="refuses a disruptive change"):
        backend.apply(p)
    assert _data(api_server)["routing-mode"] == "native"
    # The reverse: flags given since (or no observe at all), no change is named.
    api_server.put(DAEMONSETS, _daemonset(
        ["--routing-mode=native", "--ipv4-native-routing-cidr", "10.42.0.0/16"]))
    assert backend.disruptive(change) is None
    assert CiliumBackend(api_client=api_client, timeout=10.0).disruptive(change) is None


def test_a_disruptive_refusal_after_a_failed_read_of_the_agent_s_flags_names_that_read(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    # observe found routing-mode given by the agent's flags; reading the DaemonSet again
    # (whether the flags still spare the key) failed: the change is judged by
    # cilium-config alone, a disruptive change, and the refusal said only that: nothing
    # told the operator that the flags, which make it none, could not be read.
    _, backend, p, _ = _native_then_given_by_flags(api_server, api_client)
    (change,) = p.changes
    api_server.fail(500, method="GET", plural="daemonsets", times=100)
    reason = backend.disruptive(change) or ""
    assert "routing-mode: native -> tunnel" in reason
    assert "read DaemonSet kube-system/cilium" in reason, reason
    assert "500" in reason, reason
    with pytest.raises(PlanError, match="refuses a disruptive change") as refused:
        backend.apply(p)
    assert "could not be read again" in str(refused.value)
    assert "500" in str(refused.value)
    assert _data(api_server)["routing-mode"] == "native"


def test_a_change_of_keys_the_agent_s_flags_set_names_no_restart_and_leaves_no_stamp(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    # k3snet wrote native routing; the agent has since been given it by flag. Giving
    # cilium-config's values back changes nothing the agents run with (the flags win over
    # the config directory): no restart to name, no stamp for the follow-up to wait on.
    allowed, backend, p, stamp = _native_then_given_by_flags(api_server, api_client)
    (change,) = p.changes
    assert backend.restart_needed(change) is None
    backend.apply(p)
    assert _data(api_server)["routing-mode"] == "tunnel"
    assert _annotations(api_server).get(CHANGED_ANNOTATION) == stamp
    # One key the flags leave to cilium-config: the restart is named again.
    api_server.put(DAEMONSETS, _daemonset())
    allowed.apply(plan(allowed.observe(), State(owned=[CiliumConfig(TARGET, settings=NATIVE)])))
    api_server.put(DAEMONSETS, _daemonset(["--routing-mode=native"]))
    p = plan(backend.observe(), State())
    (change,) = p.changes
    assert backend.restart_needed(change) == "DaemonSet kube-system/cilium"


def test_restart_needed_and_the_stamp_judge_by_the_agent_s_flags_as_they_are_now(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    # observe found routing-mode given by the agent's flags; the DaemonSet lost them
    # since. The agents read cilium-config's tunnel at their next start: a restart to
    # name, and the write's stamp for the follow-up to wait on. restart_needed() judged
    # by the flags the last observe read (None), and the apply right after it, taking
    # observe's read, left the stamp as it was.
    _native_then_given_by_flags(api_server, api_client)
    stored = api_server.get(CONFIGMAPS, "cilium-config", "kube-system")
    assert stored is not None
    stamp = "2000-01-01T00:00:00Z"  # an earlier write's (stamps count whole seconds)
    stored["metadata"]["annotations"][CHANGED_ANNOTATION] = stamp
    api_server.put(CONFIGMAPS, stored)
    backend = CiliumBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)
    p = plan(backend.observe(), State())
    (change,) = p.changes
    assert backend.restart_needed(change) is None  # the flags as observed: nothing to do
    api_server.put(DAEMONSETS, _daemonset())
    assert backend.restart_needed(change) == "DaemonSet kube-system/cilium"
    backend.apply(p)
    assert _data(api_server)["routing-mode"] == "tunnel"
    assert _annotations(api_server).get(CHANGED_ANNOTATION) not in (None, stamp)


def test_an_apply_reads_the_agent_s_daemonsets_again_once_not_per_judgement(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    # observe found routing-mode given by the agent's flags, which spare the key the
    # plan gives back: the apply judges both whether the change is disruptive and whether
    # its write needs a restart stamp by the DaemonSets as they are now. It read them
    # (the named one and the list of the others) twice over, one after the other.
    _, backend, p, _ = _native_then_given_by_flags(api_server, api_client)
    before = len(api_server.requests())
    backend.apply(p)
    paths = [path for method, path, _ in api_server.requests()[before:] if method == "GET"]
    assert paths.count("/apis/apps/v1/namespaces/kube-system/daemonsets/cilium") == 1
    assert paths.count("/apis/apps/v1/namespaces/kube-system/daemonsets") == 1
    assert _data(api_server)["routing-mode"] == "tunnel"


@pytest.mark.parametrize("key", ["force-device-detection", "enforce-device-detection"])
def test_a_device_detection_bool_flag_pflag_refuses_stops_the_agent(
    key: str, api_server: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # Bool flags as enable-*: pflag refuses `yes` at start, and the agent exits.
    _setup(api_server, EBPF, _daemonset([f"--{key}=yes"]))
    (reason,) = _reasons(backend, _spec())
    assert f"--{key}=yes is not a boolean (pflag refuses it at start" in reason


def test_an_env_from_that_may_set_every_variable_is_one_warning(
    api_server: EmulatedApiServer, backend: CiliumBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # An envFrom without a prefix may set any CILIUM_... variable: each key k3snet judges
    # by is known only where the pod runs; said once, not once a key (18 lines before).
    ds = _daemonset()
    ds["spec"]["template"]["spec"]["containers"][0]["envFrom"] = [
        {"configMapRef": {"name": "extra"}}]
    _setup(api_server, EBPF, ds)
    with caplog.at_level(logging.WARNING):
        foreign = _foreign(backend)
    assert foreign.agent_options == ()
    (warning,) = [r.getMessage() for r in caplog.records
                  if "container of DaemonSet kube-system/cilium" in r.getMessage()]
    assert "options of the cilium-agent container of DaemonSet kube-system/cilium are set " \
           "only where the pod runs" in warning
    assert "$CILIUM_ENABLE_IP_MASQ_AGENT" in warning
    assert "$CILIUM_ROUTING_MODE" in warning


@pytest.mark.parametrize("command", [
    ["sh", "-c"], ["/bin/bash", "-ec"], ["busybox", "sh", "-c"],
    ["bash", "--norc", "-o", "pipefail", "-c"]])
def test_flags_in_a_shell_s_script_are_a_warning_naming_the_daemonset_not_a_guess(
    command: list[str], api_server: EmulatedApiServer, backend: CiliumBackend,
    caplog: pytest.LogCaptureFixture
) -> None:
    # The script's text holds the flags (and may set or drop variables): no option is
    # known, not even the variable beside it, which a flag in the script would override.
    ds = _daemonset(env=[{"name": "CILIUM_ENABLE_IP_MASQ_AGENT", "value": "false"}])
    agent = ds["spec"]["template"]["spec"]["containers"][0]
    agent["command"] = command
    agent["args"] = ["exec cilium-agent --config-dir=/tmp/cilium/config-map "
                     "--enable-ip-masq-agent=true"]
    _setup(api_server, EBPF, ds)
    with caplog.at_level(logging.WARNING):
        foreign = _foreign(backend)
    assert foreign.agent_options == ()
    assert any(r.getMessage().startswith(
        "cilium: the cilium-agent container of DaemonSet kube-system/cilium: the container "
        f"runs its command through a shell ({' '.join(command)} ...), whose script k3snet "
        "does not read") for r in caplog.records)


def test_a_shell_running_a_script_file_is_read_as_its_arguments(
    api_server: EmulatedApiServer, backend: CiliumBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # `sh FILE ARGS` runs no -c script: not said (the variable is read as before).
    ds = _daemonset(env=[{"name": "CILIUM_ENABLE_IP_MASQ_AGENT", "value": "true"}])
    ds["spec"]["template"]["spec"]["containers"][0]["command"] = ["sh", "/start.sh"]
    _setup(api_server, EBPF, ds)
    with caplog.at_level(logging.WARNING):
        foreign = _foreign(backend)
    assert foreign.flag("enable-ip-masq-agent")
    assert not any("through a shell" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("container", "given"), [
    ({"args": ["--config=/etc/cilium/agent.yaml"]}, "--config"),
    ({"args": ["--config", "/etc/cilium/agent.yaml"]}, "--config"),
    ({"env": [{"name": "CILIUM_CONFIG", "value": "/etc/cilium/agent.yaml"}]}, "$CILIUM_CONFIG")])
def test_a_config_file_replacing_cilium_config_is_a_warning_and_flags_still_count(
    container: dict[str, Any], given: str,
    api_server: EmulatedApiServer, backend: CiliumBackend, caplog: pytest.LogCaptureFixture
) -> None:
    args, env = container.get("args", []), container.get("env")
    # Cilium reads its config file after the config directory, and viper's ReadInConfig
    # replaces what the directory gave: cilium-config's keys are not what the agent reads,
    # but for those a flag or variable sets, which win over both.
    _setup(api_server, EBPF, _daemonset([*args, "--enable-bpf-masquerade"], env=env))
    with caplog.at_level(logging.WARNING):
        foreign = _foreign(backend)
    assert foreign.agent_options == (
        CiliumAgentOption("enable-bpf-masquerade", "true", "--enable-bpf-masquerade"),)
    (warning,) = [r.getMessage() for r in caplog.records if "config file" in r.getMessage()]
    assert warning.startswith(
        "cilium: the cilium-agent container of DaemonSet kube-system/cilium: the agent is "
        f"given the config file '/etc/cilium/agent.yaml' ({given}), which replaces its config "
        "directory (cilium-config) and k3snet does not read")
    assert "enable-ip-masq-agent" in warning
    assert "enable-bpf-masquerade," not in warning


def test_an_empty_config_file_option_is_none(
    api_server: EmulatedApiServer, backend: CiliumBackend, caplog: pytest.LogCaptureFixture
) -> None:
    _setup(api_server, EBPF, _daemonset(["--config="]))
    with caplog.at_level(logging.WARNING):
        _foreign(backend)
    assert not any("config file" in r.getMessage() for r in caplog.records)


def _second(args: list[str]) -> dict[str, Any]:
    """A second agent DaemonSet (a copy of Helm's for the nodes labelled pool=gpu), its
    agent container given ``args`` more."""
    ds = _daemonset(args)
    ds["metadata"]["name"] = "cilium-gpu"
    ds["spec"]["template"]["spec"]["nodeSelector"] = {"pool": "gpu"}
    return ds


def test_a_second_agent_daemonset_s_flags_are_read_and_a_key_they_differ_on_is_said(
    api_server: EmulatedApiServer, backend: CiliumBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # The agents of cilium-gpu's nodes run with cilium-config's enable-ip-masq-agent, not
    # with the --enable-ip-masq-agent of cilium's: not laid over every node.
    _setup(api_server, EBPF, _daemonset(["--enable-ip-masq-agent", "--routing-mode=native"]))
    api_server.put(DAEMONSETS, _second(["--routing-mode=native"]))
    envoy = _daemonset(["--enable-ip-masq-agent=false"])
    envoy["metadata"]["name"] = "cilium-envoy"
    envoy["spec"]["template"]["spec"]["containers"][0]["name"] = "cilium-envoy"
    api_server.put(DAEMONSETS, envoy)  # runs no cilium-agent: not read
    with caplog.at_level(logging.WARNING):
        foreign = _foreign(backend)
    assert foreign.agent_options == (
        CiliumAgentOption("routing-mode", "native", "--routing-mode"),)
    assert not foreign.flag("enable-ip-masq-agent")
    (warning,) = [r.getMessage() for r in caplog.records if "cilium-gpu" in r.getMessage()]
    assert warning.startswith(
        "cilium: the DaemonSets cilium, cilium-gpu of kube-system each run a cilium-agent "
        "container, and set otherwise enable-ip-masq-agent (cilium: "
        "--enable-ip-masq-agent=true, cilium-gpu: not set): the agents of each one's nodes "
        "run with its own")
    assert "cilium-envoy" not in warning
    # listed each pass from the API server's watch cache, as the Nodes are
    assert {params.get("resourceVersion") for (m, p, _), params in zip(
        api_server.requests(), api_server.params(), strict=True)
        if m == "GET" and p.split("?")[0].endswith("/daemonsets")} == {"0"}
    # A cilium-config change awaits both DaemonSets' restart.
    (change,) = plan(backend.observe(), State(owned=[CiliumConfig(
        TARGET, settings={"enable-ipv4-masquerade": "false"})])).changes
    assert backend.restart_needed(change) == (
        "DaemonSet kube-system/cilium", "DaemonSet kube-system/cilium-gpu")


def test_agent_daemonsets_setting_a_key_alike_lay_it_over_cilium_config(
    api_server: EmulatedApiServer, backend: CiliumBackend, caplog: pytest.LogCaptureFixture
) -> None:
    _setup(api_server, EBPF, _daemonset(["--enable-ip-masq-agent"]))
    api_server.put(DAEMONSETS, _second(["--enable-ip-masq-agent=true"]))
    with caplog.at_level(logging.WARNING):
        foreign = _foreign(backend)
    assert foreign.agent_options == (
        CiliumAgentOption("enable-ip-masq-agent", "true", "--enable-ip-masq-agent"),)
    assert not any("cilium-gpu" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("status", [403, 500])
def test_agent_daemonsets_not_to_be_listed_leave_the_named_one_s_flags_and_a_warning(
    status: int, api_server: EmulatedApiServer, backend: CiliumBackend,
    caplog: pytest.LogCaptureFixture
) -> None:
    # A Role of an earlier k3snet (no list on daemonsets), or a failed list: as before.
    _setup(api_server, EBPF, _daemonset(["--enable-ip-masq-agent"]))
    api_server.put(DAEMONSETS, _second([]))
    api_server.fail(status, method="GET", plural="daemonsets", param="limit", times=None)
    with caplog.at_level(logging.WARNING):
        foreign = _foreign(backend)
    assert foreign.flag("enable-ip-masq-agent")
    assert any("only DaemonSet kube-system/cilium's cilium-agent container is read"
               in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("args", [[], ["--config-dir="]])
def test_an_agent_given_no_config_directory_is_a_warning_naming_the_daemonset(
    args: list[str], api_server: EmulatedApiServer, backend: CiliumBackend,
    caplog: pytest.LogCaptureFixture
) -> None:
    # Without --config-dir the agent reads no cilium-config at all (Helm gives it
    # /tmp/cilium/config-map); given one, nothing is said.
    ds = _daemonset()
    ds["spec"]["template"]["spec"]["containers"][0]["args"] = args
    _setup(api_server, EBPF, ds)
    with caplog.at_level(logging.WARNING):
        _foreign(backend)
    assert any(r.getMessage().startswith(
        "cilium: the cilium-agent container of DaemonSet kube-system/cilium is given no "
        "config directory") for r in caplog.records)
    caplog.clear()
    api_server.put(DAEMONSETS, _daemonset())
    with caplog.at_level(logging.WARNING):
        _foreign(backend)
    assert not any("config directory" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("command", "args"), [
    (["sleep", "infinity"], []),  # a debug copy of the agent's pods
    (["/bin/bash", "-c", "--"], ["while true; do\n  sleep 30;\ndone\n"]),  # sleepAfterInit
])
def test_a_daemonset_whose_cilium_agent_container_runs_no_agent_is_not_read(
    command: list[str], args: list[str], api_server: EmulatedApiServer,
    backend: CiliumBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # A container named cilium-agent that runs something else (sleep; Helm's
    # sleepAfterInit loop) starts no agent on its nodes: its missing flags are no key set
    # otherwise, and no restart of its pods is awaited.
    _setup(api_server, EBPF, _daemonset(["--enable-ip-masq-agent"]))
    debug = _second([])
    debug["metadata"]["name"] = "cilium-debug"
    container = debug["spec"]["template"]["spec"]["containers"][0]
    container["command"], container["args"] = command, args
    api_server.put(DAEMONSETS, debug)
    with caplog.at_level(logging.WARNING):
        foreign = _foreign(backend)
    assert foreign.flag("enable-ip-masq-agent")
    assert not any("cilium-debug" in r.getMessage() for r in caplog.records)
    (change,) = plan(backend.observe(), State(owned=[CiliumConfig(
        TARGET, settings={"enable-ipv4-masquerade": "false"})])).changes
    assert backend.restart_needed(change) == "DaemonSet kube-system/cilium"


@pytest.mark.parametrize(("command", "args"), [
    (["/usr/bin/cilium-agent"], ["--config-dir=/tmp/cilium/config-map"]),
    (["/bin/sh", "-c"], ["exec cilium-agent --config-dir=/tmp/cilium/config-map"]),
    (None, ["--config-dir=/tmp/cilium/config-map"]),  # the image's entrypoint
])
def test_a_daemonset_whose_cilium_agent_container_may_run_the_agent_is_read(
    command: list[str] | None, args: list[str], api_server: EmulatedApiServer,
    backend: CiliumBackend
) -> None:
    _setup(api_server, EBPF, _daemonset(["--enable-ip-masq-agent"]))
    other = _second([])
    container = other["spec"]["template"]["spec"]["containers"][0]
    container["args"] = args
    if command is None:
        del container["command"]
    else:
        container["command"] = command
    api_server.put(DAEMONSETS, other)
    assert not _foreign(backend).flag("enable-ip-masq-agent")  # cilium-gpu's: not set
    (change,) = plan(backend.observe(), State(owned=[CiliumConfig(
        TARGET, settings={"enable-ipv4-masquerade": "false"})])).changes
    assert backend.restart_needed(change) == (
        "DaemonSet kube-system/cilium", "DaemonSet kube-system/cilium-gpu")


@pytest.mark.parametrize(("status", "read"), [
    # a node pool scaled to zero, a DaemonSet paused by a nodeSelector no node has
    ({"observedGeneration": 3, "desiredNumberScheduled": 0, "currentNumberScheduled": 0,
      "numberMisscheduled": 0}, False),
    # its controller has not seen its latest spec: it may schedule pods
    ({"observedGeneration": 2, "desiredNumberScheduled": 0, "currentNumberScheduled": 0,
      "numberMisscheduled": 0}, True),
    # pods left on nodes it no longer selects still run (the controller deletes them)
    ({"observedGeneration": 3, "desiredNumberScheduled": 0, "currentNumberScheduled": 0,
      "numberMisscheduled": 1}, True),
    ({}, True),  # no status written yet
])
def test_an_agent_daemonset_running_on_no_node_is_not_read(
    status: dict[str, int], read: bool, api_server: EmulatedApiServer,
    backend: CiliumBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # Its flags are no node's: a key the named one's flags set is not 'set otherwise',
    # and a cilium-config change awaits no restart of its (no) pods.
    _setup(api_server, EBPF, _daemonset(["--enable-ip-masq-agent"]))
    pool = _second([])
    pool["metadata"]["generation"] = 3
    pool["status"] = status
    api_server.put(DAEMONSETS, pool)
    with caplog.at_level(logging.WARNING):
        foreign = _foreign(backend)
    assert foreign.flag("enable-ip-masq-agent") is not read
    assert any("cilium-gpu" in r.getMessage() for r in caplog.records) is read
    (change,) = plan(backend.observe(), State(owned=[CiliumConfig(
        TARGET, settings={"enable-ipv4-masquerade": "false"})])).changes
    assert backend.restart_needed(change) == (
        ("DaemonSet kube-system/cilium", "DaemonSet kube-system/cilium-gpu") if read
        else "DaemonSet kube-system/cilium")


def test_a_key_another_agent_daemonset_leaves_unknown_is_said_not_known_not_unset(
    api_server: EmulatedApiServer, backend: CiliumBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # cilium-gpu's flags are in a shell's script: whether it sets enable-ip-masq-agent is
    # not known, which the warning said as "not set".
    _setup(api_server, EBPF, _daemonset(["--enable-ip-masq-agent"]))
    pool = _second([])
    container = pool["spec"]["template"]["spec"]["containers"][0]
    container["command"] = ["/bin/sh", "-c"]
    container["args"] = ["exec cilium-agent --config-dir=/tmp/cilium/config-map"]
    api_server.put(DAEMONSETS, pool)
    with caplog.at_level(logging.WARNING):
        foreign = _foreign(backend)
    assert not foreign.flag("enable-ip-masq-agent")
    (warning,) = [r.getMessage() for r in caplog.records if "set otherwise" in r.getMessage()]
    assert ("enable-ip-masq-agent (cilium: --enable-ip-masq-agent=true, cilium-gpu: not "
            "known)") in warning


@pytest.mark.parametrize("init", [
    ["tini", "--"], ["/usr/bin/tini", "-s", "--"], ["tini", "-p", "SIGTERM", "-g", "--"],
    ["dumb-init"], ["/usr/bin/dumb-init", "--single-child", "--rewrite", "15:2", "--"]])
def test_a_shell_s_script_behind_an_init_process_is_the_same_warning(
    init: list[str], api_server: EmulatedApiServer, backend: CiliumBackend,
    caplog: pytest.LogCaptureFixture
) -> None:
    # `tini -- sh -c '...'` runs the same script: its flags were silently not read, and
    # the variable beside it taken as what the agent runs with.
    ds = _daemonset(env=[{"name": "CILIUM_ENABLE_IP_MASQ_AGENT", "value": "false"}])
    agent = ds["spec"]["template"]["spec"]["containers"][0]
    agent["command"] = [*init, "sh", "-c"]
    agent["args"] = ["exec cilium-agent --config-dir=/tmp/cilium/config-map "
                     "--enable-ip-masq-agent=true"]
    _setup(api_server, EBPF, ds)
    with caplog.at_level(logging.WARNING):
        foreign = _foreign(backend)
    assert foreign.agent_options == ()
    assert any(r.getMessage().startswith(
        "cilium: the cilium-agent container of DaemonSet kube-system/cilium: the container "
        f"runs its command through a shell ({' '.join([*init, 'sh', '-c'])} ...), whose "
        "script k3snet does not read") for r in caplog.records)


@pytest.mark.parametrize("init", [
    ["tini", "--"], ["/usr/bin/tini", "-s", "--"], ["dumb-init", "--"],
    ["tini", "-sp", "SIGTERM", "--"], ["tini", "-gse", "143", "--"], ["tini", "-pSIGTERM", "--"],
    ["dumb-init", "-cr", "15:2", "--"], ["dumb-init", "--rew", "15:2", "--"],
    ["dumb-init", "-r15:2", "--"]])
def test_the_agent_s_flags_behind_an_init_process_are_read(
    init: list[str], api_server: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # The init process's `--` ends its own options, not the agent's: pflag reads the
    # agent's flags after it, where k3snet stopped. And getopt takes `-sp SIGTERM` as -s
    # and -p with the next argument its value (getopt_long `--rew` as --rewrite): k3snet
    # took SIGTERM for the program, and read no flag of the agent after it (an agent
    # "given no config directory" besides).
    ds = _daemonset()
    agent = ds["spec"]["template"]["spec"]["containers"][0]
    agent["command"] = [*init, "cilium-agent"]
    agent["args"] = ["--config-dir=/tmp/cilium/config-map", "--enable-ip-masq-agent"]
    _setup(api_server, EBPF, ds)
    assert _foreign(backend).agent_options == (
        CiliumAgentOption("enable-ip-masq-agent", "true", "--enable-ip-masq-agent"),)


def test_a_variable_from_cilium_config_s_own_key_is_cilium_config_s_value_not_an_override(
    api_server: EmulatedApiServer, backend: CiliumBackend
) -> None:
    # The kubelet sets CILIUM_ENABLE_IPV4_MASQUERADE from cilium-config's own key at each
    # start of the agent: it follows what k3snet writes there. k3snet read the value
    # before the write ("false") as the agent's variable overriding cilium-config, and
    # refused the write turning masquerading on as having no effect on the agents.
    _setup(api_server, {**EBPF, "enable-ipv4-masquerade": "false"}, _daemonset(env=[
        {"name": "CILIUM_ENABLE_IPV4_MASQUERADE", "valueFrom": {"configMapKeyRef": {
            "name": "cilium-config", "key": "enable-ipv4-masquerade"}}}]))
    assert _foreign(backend).agent_options == ()
    assert _reasons(backend, _spec(enableIPv4Masquerade=True)) == []
