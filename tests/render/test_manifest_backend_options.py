"""The manifests follow the spec's ``backends:`` options for the backends the agent reaches
through the API (flannel's ConfigMap or file, Cilium's ConfigMaps), and refuse values
the backend or the API server would refuse, naming the option."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest

yaml = pytest.importorskip("yaml")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

import k3snet  # noqa: E402 - after the importorskip
from k3snet.backends.flannel import FlannelBackend  # noqa: E402
from k3snet.planner import plan  # noqa: E402
from k3snet.render.manifests import (  # noqa: E402
    AGENT_NAME,
    NEWEST_KUBERNETES_VERSION,
    OLDEST_KUBERNETES_VERSION,
    render_manifests,
)
from k3snet.spec import ConnectivityTest, Destination, Spec  # noqa: E402
from k3snet.spec.compiler import compile_flannel  # noqa: E402
from k3snet.spec.model import CniSettings, FlannelSettings  # noqa: E402


def _spec(backend: str, **options: Any) -> Spec:
    return Spec(destinations=[Destination("192.168.2.0/24")], backends=[backend],
                backend_options={backend: options})


def _valid(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects, each checked by kubernetes-validate (strict) at both ends of the range."""
    for obj in objs:
        for version in (OLDEST_KUBERNETES_VERSION, NEWEST_KUBERNETES_VERSION):
            parsed = yaml.safe_load(yaml.safe_dump(obj))
            assert kubernetes_validate.validate(parsed, version, strict=True) == version
    return objs


def _env(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (ds,) = [o for o in objs if o["kind"] == "DaemonSet"]
    (container,) = ds["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}


def _roles(objs: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    return {(o["metadata"]["namespace"], o["metadata"]["name"]): o["rules"]
            for o in objs if o["kind"] == "Role"}


def _problems(spec: Spec, **options: Any) -> list[tuple[str, str]]:
    with pytest.raises(k3snet.SpecError) as info:
        render_manifests(spec, **options)
    return [(p.path, p.message) for p in info.value.problems]


# ---------------------------------------------------------------- flannel


@pytest.mark.parametrize("configmap", ["kube-system/my-flannel", ["kube-system", "my-flannel"]])
def test_the_spec_s_flannel_configmap_is_the_one_the_role_and_env_name(configmap: Any) -> None:
    objs = _valid(render_manifests(_spec("flannel", configmap=configmap), node_report=False))
    assert _env(objs)["K3SNET_FLANNEL_CONFIGMAP"] == "kube-system/my-flannel"
    # the Role for flannel's ConfigMap (the Lease's Role is in the agent's namespace)
    flannel = f"{AGENT_NAME}-flannel"
    roles = {key: rules for key, rules in _roles(objs).items() if key[1] == flannel}
    assert list(roles) == [("kube-system", flannel)]
    # its ConfigMap by name; the restart rules (DaemonSets, Pods) list, never by name
    (rule,) = [r for r in roles["kube-system", flannel] if r["resources"] == ["configmaps"]]
    assert rule["resourceNames"] == ["my-flannel"]
    assert all("resourceNames" not in r and r["verbs"] == ["list"]
               for r in roles["kube-system", flannel] if r is not rule)
    assert [b["metadata"]["namespace"] for b in objs if b["kind"] == "RoleBinding"
            and b["metadata"]["name"] == flannel] == ["kube-system"]


def test_the_render_namespace_agreeing_with_the_spec_s_configmap_is_accepted() -> None:
    spec = _spec("flannel", configmap="kube-flannel/net-conf")
    objs = render_manifests(spec, flannel_configmap_namespace="kube-flannel", node_report=False)
    assert _env(objs)["K3SNET_FLANNEL_CONFIGMAP"] == "kube-flannel/net-conf"


def test_the_spec_s_flannel_path_is_the_file_mounted_and_named() -> None:
    spec = _spec("flannel", path="/etc/rancher/k3s/flannel/net-conf.json")
    objs = _valid(render_manifests(spec, node_report=False))
    assert _env(objs)["K3SNET_FLANNEL_CONF"] == "/host/etc/rancher/k3s/flannel/net-conf.json"
    (ds,) = [o for o in objs if o["kind"] == "DaemonSet"]
    (volume,) = [v for v in ds["spec"]["template"]["spec"]["volumes"]
                 if v["name"] == "flannel-conf"]
    assert volume["hostPath"] == {"path": "/etc/rancher/k3s/flannel", "type": "Directory"}
    assert not _roles(objs)


@pytest.mark.parametrize(("options", "render", "problems"), [
    ({"configmap": "kube-system/my-flannel"}, {"flannel_configmap_namespace": "kube-flannel"},
     [("backends.flannel.configmap", "'kube-system/my-flannel' is in namespace kube-system, "
       "but flannel_configmap_namespace is 'kube-flannel'; give one of them")]),
    ({"path": "/etc/rancher/k3s/flannel/net-conf.json"},
     {"flannel_conf": "/etc/k3s/flannel/net-conf.json"},
     [("backends.flannel.path", "'/etc/rancher/k3s/flannel/net-conf.json' differs from "
       "flannel_conf '/etc/k3s/flannel/net-conf.json'; give one of them")]),
    ({"path": "/etc/rancher/k3s/flannel/net-conf.json", "configmap": "kube-flannel/cfg"}, {},
     [("backends", "the flannel backend needs exactly one of flannel_conf (the net-conf.json "
       "K3s reads with --flannel-conf) or flannel_configmap_namespace (upstream flannel's "
       "kube-flannel-cfg ConfigMap), or the spec's backends.flannel.path or "
       "backends.flannel.configmap")]),
    ({"path": "relative.json"}, {},
     [("backends.flannel.path", "flannel_conf must be an absolute, normalised path of a file "
       "below a directory, got 'relative.json'")]),
    ({"path": 42}, {}, [("backends.flannel.path", "must be a path (text), got 42")]),
    ({"configmap": "Kube-Flannel/cfg"}, {},
     [("backends.flannel.configmap", "'Kube-Flannel' is not a valid namespace name (a DNS-1123 "
       "label: lower-case letters, digits and '-', at most 63)")]),
    ({"configmap": "kube-flannel/a_b"}, {},
     [("backends.flannel.configmap", "'a_b' is not a valid ConfigMap name (a DNS-1123 "
       "subdomain: lower-case letters, digits, '-' and '.', at most 253)")]),
    ({"configmap": "kube-flannel"}, {},
     [("backends.flannel.configmap", "'kube-flannel' is not NAMESPACE/NAME (or a "
       "[namespace, name] pair)")]),
])
def test_spec_flannel_options_render_cannot_follow_are_refused(
    options: dict[str, Any], render: dict[str, Any], problems: list[tuple[str, str]]
) -> None:
    assert _problems(_spec("flannel", **options), **render) == problems


_CONF = "/etc/rancher/k3s/flannel/net-conf.json"
_NFTABLES = CniSettings(flannel=FlannelSettings(enable_nftables=False))


@pytest.mark.parametrize(("options", "render"), [
    ({"path": _CONF}, {}),
    ({"path": _CONF, "reader": "k3s"}, {}),
    ({}, {"flannel_conf": _CONF}),
])
def test_enable_nftables_for_a_file_k3s_reads_is_refused_as_the_agent_refuses_it(
    tmp_path: Path, options: dict[str, Any], render: dict[str, Any]
) -> None:
    """K3s' embedded flannel ignores EnableNFTables in its file: the agent's flannel backend
    refuses to write it there, and render used to make the DaemonSet of an agent that
    refused it on every pass. One judgement for both: the same words."""
    spec = attrs.evolve(_spec("flannel", **options), cni=_NFTABLES)
    ((path, message),) = _problems(spec, **render)
    assert path == "cni.flannel.enableNFTables"
    assert "ignores EnableNFTables" in message
    assert "backends.flannel.reader" in message
    # The backend the agent builds from these options refuses it with the same words.
    conf = tmp_path / "net-conf.json"
    conf.write_text('{"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan"}}')
    backend = FlannelBackend(path=conf, **{k: v for k, v in options.items() if k != "path"})
    desired = compile_flannel("10.42.0.0/16", target=backend.target, enable_nftables=False)
    (refused,) = backend.check(plan(backend.observe(), desired))
    assert refused.endswith(message)


@pytest.mark.parametrize(("options", "render"), [
    ({"path": _CONF, "reader": "flanneld"}, {}),
    ({"configmap": "kube-flannel/kube-flannel-cfg"}, {}),
    ({}, {"flannel_configmap_namespace": "kube-flannel"}),
])
def test_enable_nftables_is_rendered_for_a_reader_of_it(
    options: dict[str, Any], render: dict[str, Any]
) -> None:
    """A flanneld of one's own reading the file, or upstream flanneld's ConfigMap, reads it."""
    spec = attrs.evolve(_spec("flannel", **options), cni=_NFTABLES)
    assert _valid(render_manifests(spec, node_report=False, **render))


# ---------------------------------------------------------------- cilium


def test_the_spec_s_cilium_options_are_the_configmaps_the_role_names() -> None:
    spec = _spec("cilium", configmap="cilium-system/cilium-cfg", ip_masq_agent="masq.v1")
    roles = _roles(_valid(render_manifests(spec, node_report=False)))
    rules = roles["cilium-system", AGENT_NAME + "-cilium"]
    assert rules[1]["resourceNames"] == ["cilium-cfg", "masq.v1"]


@pytest.mark.parametrize(("options", "problems"), [
    ({"configmap": 42},
     [("backends.cilium.configmap", "42 is not NAMESPACE/NAME (or a [namespace, name] pair)")]),
    ({"configmap": ["kube-system"]},
     [("backends.cilium.configmap", "['kube-system'] is not NAMESPACE/NAME (or a "
       "[namespace, name] pair)")]),
    ({"configmap": "a/b/c"},
     [("backends.cilium.configmap", "'a/b/c' is not NAMESPACE/NAME (or a [namespace, name] "
       "pair)")]),
    ({"configmap": ["Cilium", "cilium-config"]},
     [("backends.cilium.configmap", "'Cilium' is not a valid namespace name (a DNS-1123 "
       "label: lower-case letters, digits and '-', at most 63)")]),
    ({"configmap": "k" * 64 + "/cilium-config"},
     [("backends.cilium.configmap", f"{'k' * 64!r} is not a valid namespace name (a DNS-1123 "
       "label: lower-case letters, digits and '-', at most 63)")]),
    ({"configmap": "kube-system/Cilium Config"},
     [("backends.cilium.configmap", "'Cilium Config' is not a valid ConfigMap name (a "
       "DNS-1123 subdomain: lower-case letters, digits, '-' and '.', at most 253)")]),
    ({"ip_masq_agent": None},
     [("backends.cilium.ip_masq_agent", "None is not a valid ConfigMap name (a DNS-1123 "
       "subdomain: lower-case letters, digits, '-' and '.', at most 253)")]),
    ({"ip_masq_agent": "ip_masq_agent", "configmap": "kube-system/"},
     [("backends.cilium.configmap", "'kube-system/' is not NAMESPACE/NAME (or a "
       "[namespace, name] pair)"),
      ("backends.cilium.ip_masq_agent", "'ip_masq_agent' is not a valid ConfigMap name (a "
       "DNS-1123 subdomain: lower-case letters, digits, '-' and '.', at most 253)")]),
    # One ConfigMap for both would be read, recorded and deleted as two.
    ({"ip_masq_agent": "cilium-config"},
     [("backends.cilium.ip_masq_agent", "'cilium-config' is the name of Cilium's configuration "
       "(kube-system/cilium-config); the ip-masq-agent ConfigMap is another one "
       "(ip-masq-agent by default)")]),
    ({"configmap": "cilium-system/cfg", "ip_masq_agent": "cfg"},
     [("backends.cilium.ip_masq_agent", "'cfg' is the name of Cilium's configuration "
       "(cilium-system/cfg); the ip-masq-agent ConfigMap is another one "
       "(ip-masq-agent by default)")]),
])
def test_cilium_options_the_api_server_would_refuse_are_refused_naming_the_option(
    options: dict[str, Any], problems: list[tuple[str, str]]
) -> None:
    assert _problems(_spec("cilium", **options)) == problems


# ---------------------------------------------------------------- the Job's image


def test_a_connectivity_job_image_that_is_no_reference_is_refused() -> None:
    spec = Spec(connectivity_test=ConnectivityTest("192.168.2.10", image="busybox 1.37"))
    assert _problems(spec) == [("connectivityTest.image", (
        "'busybox 1.37' is not an image reference: [REGISTRY[:PORT]/]NAME[:TAG][@DIGEST], "
        "NAME in lower case (the kubelet refuses any other on every node)"))]


# ---------------------------------------------------------------- flannel_conf's directory


@pytest.mark.parametrize(("path", "tree"), [
    ("/var/lib/rancher/k3s/server/tls/net-conf.json", "/var/lib/rancher/k3s/server"),
    ("/var/lib/rancher/k3s/server/cred/net-conf.json", "/var/lib/rancher/k3s/server"),
    ("/var/lib/rancher/k3s/server/tls/etcd/net-conf.json", "/var/lib/rancher/k3s/server"),
    ("/etc/kubernetes/pki/net-conf.json", "/etc/kubernetes"),
    ("/var/lib/kubelet/pki/net-conf.json", "/var/lib/kubelet"),
    ("/var/lib/rancher/k3s/agent/etc/containerd/net-conf.json", "/var/lib/rancher/k3s/agent"),
    ("/var/lib/rancher/k3s/agent/pod-manifests/net-conf.json", "/var/lib/rancher/k3s/agent"),
    ("/etc/rancher/k3s/config.yaml.d/net-conf.json", "/etc/rancher/k3s/config.yaml.d"),
    ("/etc/rancher/node/x/net-conf.json", "/etc/rancher/node"),
    ("/usr/local/bin/net-conf.json", "/usr"),
    ("/root/flannel/net-conf.json", "/root"),
])
def test_a_flannel_conf_below_a_sensitive_directory_is_refused(path: str, tree: str) -> None:
    message = (f"flannel_conf {path!r} is below {tree}, which holds credentials or what runs "
               "as root; the agent mounts the file's directory writable, so give flannel's "
               "config a directory of its own, e.g. /etc/rancher/k3s/flannel/net-conf.json")
    assert _problems(Spec(backends=["flannel"]), flannel_conf=path) == [("backends", message)]
    assert _problems(_spec("flannel", path=path)) == [("backends.flannel.path", message)]


@pytest.mark.parametrize("path", [
    "/etc/rancher/k3s/flannel/net-conf.json",  # what docs/backends.md recommends
    "/var/lib/rancher/k3s/agent/etc/flannel/net-conf.json",  # K3s' own (read only)
    "/etc/k3s/flannel/net-conf.json",
    "/srv/flannel/net-conf.json",
])
def test_a_flannel_conf_in_a_directory_of_its_own_is_mounted(path: str) -> None:
    objs = _valid(render_manifests(_spec("flannel", path=path), node_report=False))
    assert _env(objs)["K3SNET_FLANNEL_CONF"] == "/host" + path
