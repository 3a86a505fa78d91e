"""The Kubernetes manifests rendered from a spec (``k3snet.render.manifests``).

Every manifest of several specs validates with ``kubernetes-validate --strict``
for the oldest and newest Kubernetes versions k3snet supports; then the
properties that matter: the agent's least privilege, the exact egress policy,
nothing rendered for absent sections, and byte-identical output.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

import attrs
import kubernetes_validate
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kubernetes_validate.utils import ValidationError

import k3snet
from k3snet import cli
from k3snet.agent import CLEANUP_MARGIN, Agent, FileSpecSource
from k3snet.agent._main import _agent_options
from k3snet.backends.group import BackendGroup
from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.iptables.driver import Processes
from k3snet.backends.memory import MemoryBackend
from k3snet.converge import compile_for
from k3snet.errors import SpecError
from k3snet.kube import TERMINATION_GRACE
from k3snet.model import State
from k3snet.render import manifests
from k3snet.render.manifests import (
    AGENT_NAME,
    AGENT_PORT,
    CONFIGMAP_MAX_BYTES,
    CONNECTIVITY_JOB_NAME,
    COREDNS_CUSTOM_NAME,
    EGRESS_POLICY_NAME,
    FLANNEL_CONFIGMAP_NAME,
    LEASE_NAME,
    MANAGED_BY_LABELS,
    NEWEST_KUBERNETES_VERSION,
    OLDEST_KUBERNETES_VERSION,
    PROFILE_LABEL,
    SPEC_CONFIGMAP_NAME,
    SPEC_PATH,
    dump_manifests,
    render_manifests,
)
from k3snet.spec import (
    AgentSettings,
    Cluster,
    ConnectivityTest,
    Destination,
    DnsZone,
    EgressPolicy,
    Spec,
)
from k3snet.testing import strategies
from tests.examples import examples

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = (OLDEST_KUBERNETES_VERSION, NEWEST_KUBERNETES_VERSION)


@pytest.fixture(autouse=True, scope="module")
def _schemas_read_once() -> Iterator[None]:
    # kubernetes_validate.validate reads and parses a version's _definitions.json (1.4 MB)
    # and the kind's schema at every call: ~40 ms a manifest, most of the ~70 s the
    # validation of every version took. The same files give the same schemas (nothing
    # mutates them), so each is parsed once here; validate itself is unchanged.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kubernetes_validate.utils, "schema_contents",
                      functools.lru_cache(maxsize=None)(kubernetes_validate.utils.schema_contents))
        yield


# ---------------------------------------------------------------- specs

def _dual_stack() -> Spec:
    return k3snet.load_spec(ROOT / "examples" / "seed.yaml")


def _with_exclusions() -> Spec:
    return Spec(destinations=[
        Destination("192.168.2.0/24", gateway="192.168.1.1", device="eth0",
                    exclude=["192.168.2.128/25", "192.168.2.10/32"]),
        Destination("172.20.0.0/16", masquerade=False),
    ], egress_policy=EgressPolicy(restrict=True, namespace="shop", pod_selector={"app": "web"},
                                  deny=["192.168.2.128/25", "192.168.2.10/32"]))


def _with_calico() -> Spec:
    return Spec(destinations=[Destination("192.168.2.0/24")], backends=["calico"])


def _with_cilium(**options: Any) -> Spec:
    return Spec(destinations=[Destination("192.168.2.0/24")], backends=["cilium"],
                backend_options={"cilium": options} if options else {})


def _with_dns_and_test() -> Spec:
    return Spec(
        destinations=[Destination("192.168.2.0/24", gateway="192.168.1.1", device="eth0")],
        dns=[DnsZone("corp.example.", ["192.168.2.53", "192.168.2.54"]),
             DnsZone("db.internal", ["fd01:2::53"])],
        connectivity_test=ConnectivityTest("192.168.2.10", port=5432),
    )


def _everything() -> Spec:
    return Spec(
        cluster=Cluster(["10.42.0.0/16", "fd42:42::/56"], ["10.43.0.0/16", "fd43:43::/112"]),
        destinations=[
            Destination("192.168.2.0/24", gateway="192.168.1.1", device="eth0",
                        exclude=["192.168.2.128/25"]),
            Destination("fd01:2::/64", gateway="fd01:1::1", device="eth0"),
        ],
        backends=["netlink", "iptables", "calico", "flannel"],
        dns=[DnsZone("corp.example", ["192.168.2.53"])],
        egress_policy=EgressPolicy(restrict=True, namespace="shop",
                                   pod_selector={"app": "web", "tier": "frontend"},
                                   deny=["192.168.2.128/25"]),
        connectivity_test=ConnectivityTest("fd01:2::10", port=443, namespace="shop"),
        agent=AgentSettings(image="registry.example/k3snet:1.2.3", namespace="k3snet-system",
                            interval_seconds=60),
    )


SPECS: dict[str, tuple[Spec, dict[str, Any]]] = {
    "seed": (k3snet.seed_spec(), {}),
    "dual-stack": (_dual_stack(), {}),
    "exclusions": (_with_exclusions(), {}),
    "calico": (_with_calico(), {}),
    "cilium": (_with_cilium(), {}),
    "cilium-elsewhere": (_with_cilium(configmap=["cilium-system", "cilium-cfg"],
                                      ip_masq_agent="masq", daemonset="cilium-agent"), {}),
    "dns-and-test": (_with_dns_and_test(), {}),
    "everything-flannel-configmap": (_everything(),
                                     {"flannel_configmap_namespace": "kube-flannel"}),
    "everything-flannel-file": (_everything(), {"flannel_conf": "/etc/k3s/flannel/net-conf.json"}),
    "restrict-dns-only": (Spec(egress_policy=EgressPolicy(restrict=True)), {}),
    "restrict-nothing": (Spec(egress_policy=EgressPolicy(restrict=True, allow_dns=False)), {}),
    "profiles": (k3snet.seed_spec(), {"profiles": {
        "edge": Spec(destinations=[Destination("10.9.0.0/16", gateway="192.168.1.254",
                                               device="eth1")]),
        "gpu": Spec(destinations=[Destination("192.168.2.0/24")])}}),
}


def _render(name: str) -> list[dict[str, Any]]:
    spec, options = SPECS[name]
    return render_manifests(spec, **options)


def _kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def _one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in _kind(objs, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} objects named {name}"
    return found[0]


def _containers(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if obj["kind"] in ("DaemonSet", "Job"):
        pod = obj["spec"]["template"]["spec"]
        yield from pod.get("initContainers", [])
        yield from pod["containers"]


def _agent_container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any]
    (container,) = _one(objs, "DaemonSet", AGENT_NAME)["spec"]["template"]["spec"]["containers"]
    return container


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_manifest_validates_strictly(name: str, version: str) -> None:
    for obj in _render(name):
        # Through YAML, as kubectl would read it.
        (parsed,) = yaml.safe_load_all(dump_manifests([obj]))
        validated = kubernetes_validate.validate(parsed, version, strict=True)
        assert validated == version, f"schema of {validated} used for {version}"


RECORDED = sorted((ROOT / "tests" / "data" / "render").glob("manifests-*.yaml"))


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.stem)
def test_every_recorded_manifest_validates_strictly(path: Path) -> None:
    # The expected files of tests/render/test_manifest_files.py hold what clusters get.
    for obj in yaml.safe_load_all(path.read_text()):
        for version in VERSIONS:
            assert kubernetes_validate.validate(obj, version, strict=True) == version


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")
    return int(major), int(minor)


# Every minor version kubernetes-validate ships between the extremes: a field or an API
# version one of them lacks (or deprecated in between and gone before the newest) is
# caught where it is, not only at 1.25 and 1.37.
BETWEEN = sorted({v.rsplit(".", 1)[0] for v in kubernetes_validate.utils.all_versions()
                  if _minor(OLDEST_KUBERNETES_VERSION) < _minor(v.rsplit(".", 1)[0])
                  < _minor(NEWEST_KUBERNETES_VERSION)}, key=_minor)


@functools.cache
def _rendered_once() -> tuple[tuple[str, str], ...]:
    """Every object the specs render, as its YAML parses back (JSON text), with the first
    spec rendering it; an object several specs render alike is there once. The same for
    every version: rendered, dumped and parsed once, not once per version (two thirds of
    each version's test went to that)."""
    first: dict[str, str] = {}
    for name in sorted(SPECS):
        for obj in _render(name):
            (parsed,) = yaml.safe_load_all(dump_manifests([obj]))
            first.setdefault(json.dumps(parsed, sort_keys=True), name)
    return tuple((name, text) for text, name in first.items())


@pytest.mark.parametrize("version", BETWEEN)
def test_every_manifest_validates_strictly_in_every_version_between(version: str) -> None:
    assert BETWEEN, "kubernetes-validate ships no version between the extremes"
    for name, text in _rendered_once():
        assert kubernetes_validate.validate(json.loads(text), version, strict=True) == version, \
            name
    # The admission policy of node_restriction from the first version serving it (v1).
    if _minor(version) >= (1, 30):
        spec = Spec(destinations=[Destination("192.168.2.0/24")],
                    backends=["netlink", "cilium", "calico"])
        for obj in render_manifests(spec, node_restriction=True):
            (parsed,) = yaml.safe_load_all(dump_manifests([obj]))
            assert kubernetes_validate.validate(parsed, version, strict=True) == version


def test_validated_versions_are_the_extremes_shipped() -> None:
    shipped = sorted({v.rsplit(".", 1)[0] for v in kubernetes_validate.utils.all_versions()},
                     key=lambda v: tuple(map(int, v.split("."))))
    assert shipped[0] == OLDEST_KUBERNETES_VERSION
    assert shipped[-1] == NEWEST_KUBERNETES_VERSION


def test_strict_validation_has_teeth() -> None:
    # An unknown field must fail, or the validation above proves nothing.
    obj = _one(_render("seed"), "DaemonSet")
    obj["spec"]["template"]["spec"]["containers"][0]["privilegd"] = False
    for version in VERSIONS:
        with pytest.raises(ValidationError):
            kubernetes_validate.validate(obj, version, strict=True)


# ---------------------------------------------------------------- common properties

@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_object_is_labelled_as_k3snets(name: str) -> None:
    for obj in _render(name):
        labels = obj["metadata"]["labels"]
        assert {k: labels[k] for k in MANAGED_BY_LABELS} == {
            "app.kubernetes.io/name": "k3snet", "app.kubernetes.io/managed-by": "k3snet"}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_output_is_byte_identical(name: str) -> None:
    assert dump_manifests(_render(name)) == dump_manifests(_render(name))


def test_output_is_byte_identical_across_processes() -> None:
    # Other interpreters with other hash seeds: no set or dict-order accident.
    spec, options = SPECS["everything-flannel-configmap"]
    code = ("import sys\n"
            "from k3snet.spec import Spec\n"
            "from k3snet.render.manifests import dump_manifests, render_manifests\n"
            "spec = Spec.from_yaml(sys.stdin.read())\n"
            "sys.stdout.write(dump_manifests(render_manifests(spec, "
            "flannel_configmap_namespace='kube-flannel')))\n")
    assert options == {"flannel_configmap_namespace": "kube-flannel"}
    outputs = {
        subprocess.run([sys.executable, "-c", code], input=yaml.safe_dump(spec.to_dict()),
                       capture_output=True, text=True, check=True, cwd=ROOT,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2", "3")
    }
    assert outputs == {dump_manifests(_render("everything-flannel-configmap"))}


def test_dump_is_multi_document_yaml_with_literal_blocks() -> None:
    objs = _render("dns-and-test")
    text = dump_manifests(objs)
    assert list(yaml.safe_load_all(text)) == objs
    assert text.count("\n---\n") == len(objs) - 1
    assert text.startswith("---\n")
    assert "&id" not in text
    assert "*id" not in text
    assert "corp.example.server: |" in text  # the Corefile reads as a block
    # apiVersion, kind, metadata lead every document.
    for doc in text.split("---\n")[1:]:
        first, second, third = doc.splitlines()[:3]
        assert first.startswith("apiVersion: ")
        assert second.startswith("kind: ")
        assert third == "metadata:"


def test_invalid_spec_is_refused() -> None:
    bad = Spec(dns=[DnsZone("not a zone!", [])])
    with pytest.raises(SpecError) as info:
        render_manifests(bad)
    assert {p.path for p in info.value.problems} >= {"dns.zones[0].zone", "dns.zones[0].resolvers"}


# ---------------------------------------------------------------- the agent

@pytest.mark.parametrize("name", sorted(SPECS))
def test_agent_has_least_privilege(name: str) -> None:
    objs = _render(name)
    pod = _one(objs, "DaemonSet", AGENT_NAME)["spec"]["template"]["spec"]
    container = _agent_container(objs)
    assert container["securityContext"] == {
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsUser": 0,
        "capabilities": container["securityContext"]["capabilities"],
    }
    # (which capabilities: test_agent_capabilities_are_those_its_backends_use)
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["priorityClassName"] == "system-node-critical"
    assert not {"hostPID", "hostIPC"} & set(pod)
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    # Every container anywhere: never privileged, never escalating, read-only root.
    for obj in objs:
        for c in _containers(obj):
            ctx = c["securityContext"]
            assert ctx["privileged"] is False
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["readOnlyRootFilesystem"] is True
            assert ctx["capabilities"]["drop"] == ["ALL"]
            assert set(ctx["capabilities"].get("add", [])) <= {"NET_ADMIN", "NET_RAW"}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_no_service_of_the_agents_namespace_reaches_its_environment(name: str) -> None:
    # With service links (Kubernetes' default) the kubelet gives the agent the variables
    # of every Service of its namespace, and a Service named "kubernetes" there wins over
    # default's: KUBERNETES_SERVICE_HOST and _PORT, where the agent's in-cluster client
    # sends its token, named whatever address that Service has (kubelet_pods.go,
    # getServiceEnvVarMap). Without them only default's "kubernetes" Service is given.
    for obj in _render(name):
        if obj["kind"] in ("DaemonSet", "Job"):
            assert obj["spec"]["template"]["spec"]["enableServiceLinks"] is False, \
                obj["metadata"]["name"]


@pytest.mark.parametrize(("backends", "options", "added"), [
    # none named: the agent may pick any node backend, iptables (legacy) included
    ([], {}, ["NET_ADMIN", "NET_RAW"]),
    (["netlink", "nftables"], {}, ["NET_ADMIN"]),
    (["nftables", "calico"], {}, ["NET_ADMIN"]),
    (["iptables"], {}, ["NET_ADMIN", "NET_RAW"]),
    (["netlink", "iptables", "cilium"], {}, ["NET_ADMIN", "NET_RAW"]),
    # only the API server (and flannel's file) to write: no capability at all
    (["calico"], {}, []),
    (["cilium"], {}, []),
    (["flannel"], {"flannel_configmap_namespace": "kube-flannel"}, []),
    (["flannel"], {"flannel_conf": "/etc/k3s/flannel/net-conf.json"}, []),
])
def test_agent_capabilities_are_those_its_backends_use(
        backends: list[str], options: dict[str, Any], added: list[str]) -> None:
    # NET_ADMIN is for the node backends (netlink, nftables, iptables: routes, sysctls,
    # rules), NET_RAW for iptables-legacy's raw socket alone (nftables and netlink speak
    # netlink). Both went to every agent, also one that only writes Calico pools or
    # Cilium's ConfigMaps on a node's host network.
    spec = Spec(destinations=[Destination("192.168.2.0/24")], backends=backends)
    objs = render_manifests(spec, **options)
    daemonset = _one(objs, "DaemonSet", AGENT_NAME)
    for version in VERSIONS:
        assert kubernetes_validate.validate(daemonset, version, strict=True) == version
    capabilities = _agent_container(objs)["securityContext"]["capabilities"]
    assert capabilities == ({"add": added, "drop": ["ALL"]} if added else {"drop": ["ALL"]})


@pytest.mark.parametrize("name", sorted(SPECS))
def test_agent_reads_the_spec_from_its_configmap(name: str) -> None:
    spec, _ = SPECS[name]
    objs = _render(name)
    container = _agent_container(objs)
    assert container["command"] == ["k3snet", "agent", "-f", SPEC_PATH,
                                    "--interval", str(spec.agent.interval_seconds),
                                    "--listen", f":{AGENT_PORT}"]
    assert container["image"] == spec.agent.image
    configmap = _one(objs, "ConfigMap", SPEC_CONFIGMAP_NAME)
    assert configmap["metadata"]["namespace"] == spec.agent.namespace
    assert k3snet.Spec.from_yaml(configmap["data"]["spec.yaml"]) == spec
    pod = _one(objs, "DaemonSet", AGENT_NAME)["spec"]["template"]["spec"]
    (spec_volume,) = [v for v in pod["volumes"] if v["name"] == "spec"]
    assert spec_volume["configMap"]["name"] == SPEC_CONFIGMAP_NAME
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "spec"]
    assert mount == {"name": "spec", "mountPath": "/etc/k3snet", "readOnly": True}


def test_spec_text_is_carried_verbatim_and_rolls_the_pods() -> None:
    spec = k3snet.seed_spec()
    text = "# the operator's own file, comments kept\n" + yaml.safe_dump(spec.to_dict())
    plain, verbatim = render_manifests(spec), render_manifests(spec, spec_text=text)
    assert _one(verbatim, "ConfigMap", SPEC_CONFIGMAP_NAME)["data"] == {"spec.yaml": text}

    def spec_hash(objs: list[dict[str, Any]]) -> str:
        template = _one(objs, "DaemonSet", AGENT_NAME)["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        return str(annotations["k3snet.io/spec-sha256"])

    assert spec_hash(plain) != spec_hash(verbatim)


def test_a_spec_configmap_the_api_server_would_refuse_is_refused_at_render() -> None:
    # The API server refuses a ConfigMap whose keys and values exceed 1 MiB; a spec of
    # 10,000 destinations (docs/scale.md) is 1.4 MB in its default text. Rendering it
    # used to succeed, and `kubectl apply` then failed on every node's spec.
    destinations = [Destination(f"10.{100 + i // 256}.{i % 256}.0/24", gateway="192.168.1.1",
                                device="eth0") for i in range(10_000)]
    spec = Spec(destinations=destinations)
    with pytest.raises(SpecError,
                       match=r"ConfigMap kube-system/k3snet-spec would hold \d+ bytes.*\(1 MiB\)"):
        render_manifests(spec)
    # A verbatim text just at the limit passes; one byte more is refused, for a profile too.
    room = CONFIGMAP_MAX_BYTES - len("spec.yaml")
    seed = k3snet.seed_spec()
    text = yaml.safe_dump(seed.to_dict())
    padded = text + "#" * (room - len(text.encode()) - 1) + "\n"
    assert len(padded.encode()) == room
    render_manifests(seed, spec_text=padded)
    with pytest.raises(SpecError, match=r"ConfigMap kube-system/k3snet-spec "):
        render_manifests(seed, spec_text=padded + "#")
    with pytest.raises(SpecError, match=r"profiles\.edge: ConfigMap kube-system/k3snet-spec-edge"):
        render_manifests(seed, profiles={"edge": (seed, padded + "é")})


def test_a_spec_sure_to_be_over_the_configmap_limit_is_refused_before_its_text_is_written(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # render_manifests(spec) without spec_text wrote the whole 1.4 MB text of a 10,000
    # destination spec (over a second) before refusing it as over the limit: a bound on
    # its size refuses it, the same problem, the size said as "or more".
    destinations = [Destination(f"10.{100 + i // 256}.{i % 256}.0/24", gateway="192.168.1.1",
                                device="eth0") for i in range(10_000)]
    spec = Spec(destinations=destinations)

    def not_written(spec: Spec) -> str:
        raise AssertionError("the spec's text was written")

    monkeypatch.setattr(manifests, "_spec_text", not_written)
    with pytest.raises(SpecError, match=r"^1 problem:\n  ConfigMap kube-system/k3snet-spec "
                                        r"would hold \d+ bytes or more, more than the 1048576 "
                                        r"\(1 MiB\)"):
        render_manifests(spec)


def test_a_profile_spec_sure_to_be_over_the_configmap_limit_is_refused_before_its_text_is_written(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A profile given as a Spec (no text) had its whole text written before the refusal
    # (the bound was the base spec's only): refused from the bound too, where it is.
    destinations = [Destination(f"10.{100 + i // 256}.{i % 256}.0/24", gateway="192.168.1.1",
                                device="eth0") for i in range(10_000)]
    seed = k3snet.seed_spec()
    edge = attrs.evolve(seed, destinations=destinations)

    def not_written(spec: Spec) -> str:
        if spec is edge:
            raise AssertionError("the profile spec's text was written")
        return text_of(spec)

    text_of = manifests._spec_text
    monkeypatch.setattr(manifests, "_spec_text", not_written)
    with pytest.raises(SpecError, match=r"^1 problem:\n  profiles\.edge: ConfigMap "
                                        r"kube-system/k3snet-spec-edge would hold \d+ bytes "
                                        r"or more, more than the 1048576 \(1 MiB\)"):
        render_manifests(seed, profiles={"edge": edge})


@settings(deadline=None, max_examples=examples(50))
@given(strategies.specs(max_destinations=6))
def test_the_spec_text_size_bound_is_never_above_the_text_written(spec: Spec) -> None:
    # (the bound refuses a spec early only when its text would be refused anyway)
    text = manifests._spec_text(spec)
    assert manifests._yaml_size_at_least(spec.to_dict()) <= len(text.encode())


# What a spec's dict may hold beyond the drawn specs (free backend options): text needing
# escapes or quotes, block scalars, long and odd keys, empty lists and mappings, floats.
_HOSTILE_TEXT = (st.text(max_size=20)
                 | st.text(st.sampled_from(" \n\t'\"#:-?|>&*!%@`{}[],a\u00e9\u2028\x85\ufeff"),
                           max_size=20))
_HOSTILE_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _HOSTILE_TEXT,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(_HOSTILE_TEXT | st.text(min_size=120, max_size=140), inner, max_size=3),
    max_leaves=12)


@settings(deadline=None, max_examples=examples(60))
@given(st.dictionaries(_HOSTILE_TEXT, _HOSTILE_VALUES, max_size=4))
def test_the_yaml_size_bound_is_never_above_the_yaml_written_for_any_values(
        value: dict[str, Any]) -> None:
    # A false refusal of a spec that fits would be worse than a late refusal.
    assert manifests._yaml_size_at_least(value) <= len(manifests._dump(value).encode())


def _host_paths(objs: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """hostPath -> (type, mountPath) of the agent."""
    pod = _one(objs, "DaemonSet", AGENT_NAME)["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    return {v["hostPath"]["path"]: (v["hostPath"]["type"], mounts[v["name"]]["mountPath"])
            for v in pod["volumes"] if "hostPath" in v}


def _env(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in _agent_container(objs)["env"]}


def test_writable_host_paths_only_where_needed() -> None:
    # No backend named: any node backend may run, so sysctls and the xtables lock.
    assert _host_paths(_render("seed")) == {
        "/run/k3snet": ("DirectoryOrCreate", "/run/k3snet"),
        "/proc/sys/net": ("Directory", "/host/proc/sys/net"),
        "/run/xtables.lock": ("FileOrCreate", "/run/xtables.lock"),
    }
    assert _env(_render("seed"))["K3SNET_PROC_SYS"] == "/host/proc/sys"
    nft_only = render_manifests(attrs.evolve(k3snet.seed_spec(), backends=("nftables",)))
    # every node backend takes the namespace lock, in the host's /run/k3snet/locks
    assert _host_paths(nft_only) == {"/run/k3snet": ("DirectoryOrCreate", "/run/k3snet")}
    assert "K3SNET_PROC_SYS" not in _env(nft_only)
    netlink_only = render_manifests(Spec(backends=["netlink"]))
    assert set(_host_paths(netlink_only)) == {"/run/k3snet", "/proc/sys/net"}
    assert set(_host_paths(render_manifests(Spec(backends=["iptables"])))) == {
        "/run/k3snet", "/run/xtables.lock"}
    # No /lib/modules: the kernel loads netfilter modules with the host's own; a modprobe
    # in the container would need CAP_SYS_MODULE, which no agent gets
    for name in SPECS:
        pod = _one(_render(name), "DaemonSet", AGENT_NAME)["spec"]["template"]["spec"]
        assert not any(v.get("hostPath", {}).get("path", "").startswith("/lib")
                       for v in pod["volumes"])
        assert "SYS_MODULE" not in pod["containers"][0]["securityContext"]["capabilities"].get(
            "add", [])
    # The only writable path inside the container itself is a small memory-backed /tmp.
    pod = _one(nft_only, "DaemonSet", AGENT_NAME)["spec"]["template"]["spec"]
    assert [v for v in pod["volumes"] if "emptyDir" in v] == [
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}]


def test_no_rbac_and_no_token_without_the_api() -> None:
    for name in ("seed", "dual-stack", "exclusions", "dns-and-test"):
        spec, options = SPECS[name]
        objs = render_manifests(spec, **options, node_report=False)
        assert not [o for o in objs if o["kind"] in
                    ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")], name
        assert _one(objs, "ServiceAccount")["automountServiceAccountToken"] is False
        pod = _one(objs, "DaemonSet", AGENT_NAME)["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] == AGENT_NAME
        assert _agent_container(objs)["command"][-1] == "--no-kube"


def _rules(objs: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = _one(objs, kind, name)["rules"]
    return rules


# RBAC matches resourceNames against the name a request carries: get, update, patch and
# delete carry one; create and deletecollection never do, list and watch only with a
# metadata.name field selector (the agent's lists read everything), so a rule of those
# with resourceNames allows nothing the agent sends. The names not known at render time:
# any Node (the node report), and Calico's pools (named after their CIDRs: an earlier
# spec's pool must still be deletable).
NAMED_VERBS = {"get", "update", "patch", "delete"}
NAMES_UNKNOWN = {"nodes", "ippools"}
# The ConfigMaps of Cilium's namespace a variable of its agent container (configMapKeyRef)
# or a copy's config-map: source names, known only in the cluster: read (get) alone.
NAMES_UNKNOWN_READ = {(f"{AGENT_NAME}-cilium", "configmaps")}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_verb_that_names_its_object_is_limited_to_the_objects_the_agent_names(
        name: str) -> None:
    for obj in _render(name):
        if obj["kind"] not in ("Role", "ClusterRole"):
            continue
        for rule in obj["rules"]:
            verbs = set(rule["verbs"])
            assert "*" not in verbs, rule
            assert "*" not in rule["resources"], rule
            if rule.get("resourceNames"):
                # Never beside a verb that names nothing: that verb would be allowed nowhere.
                assert verbs <= NAMED_VERBS, rule
            elif verbs & NAMED_VERBS and not (verbs == {"get"} and {
                    (obj["metadata"]["name"], r) for r in rule["resources"]}
                    <= NAMES_UNKNOWN_READ):
                assert set(rule["resources"]) <= NAMES_UNKNOWN, (obj["metadata"]["name"], rule)


def test_node_report_may_patch_nodes_and_create_events_only() -> None:
    objs = _render("seed")
    assert _rules(objs, "ClusterRole", "k3snet-agent-node-report") == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["patch"]}]
    events = _one(objs, "Role", AGENT_NAME)
    assert events["metadata"]["namespace"] == "default"
    assert events["rules"] == [{"apiGroups": [""], "resources": ["events"],
                                "verbs": ["create"]}]
    assert _one(objs, "RoleBinding", AGENT_NAME)["subjects"] == [
        {"kind": "ServiceAccount", "name": AGENT_NAME, "namespace": "kube-system"}]
    assert _one(objs, "ServiceAccount")["automountServiceAccountToken"] is True
    # no Lease without a cluster-wide backend
    assert not [o for o in objs if o["metadata"]["name"] == "k3snet-agent-lease"]
    assert "K3SNET_NAMESPACE" not in _env(objs)
    assert "--no-kube" not in _agent_container(objs)["command"]
    without = render_manifests(k3snet.seed_spec(), node_report=False)
    assert "--no-kube" in _agent_container(without)["command"]


def test_nodes_are_read_only_by_lease_candidates() -> None:
    # `get` on every Node went to every agent, for --lease-candidates, which the rendered
    # DaemonSet never passed (an edited DaemonSet was put back by the next apply).
    for name in sorted(SPECS):
        for obj in _kind(_render(name), "ClusterRole"):
            assert not [r for r in obj["rules"]
                        if "nodes" in r["resources"] and "get" in r["verbs"]], name
    spec = Spec(destinations=[Destination("192.168.2.0/24")], backends=["calico"])
    for report in (True, False):
        objs = render_manifests(spec, node_report=report,
                                lease_candidates="node-role.kubernetes.io/control-plane")
        command = _agent_container(objs)["command"]
        assert command[command.index("--lease-candidates") + 1] == \
            "node-role.kubernetes.io/control-plane"
        assert _rules(objs, "ClusterRole", "k3snet-agent-lease-candidates") == [
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]
        assert _one(objs, "ClusterRoleBinding", "k3snet-agent-lease-candidates")[
            "subjects"] == [{"kind": "ServiceAccount", "name": AGENT_NAME,
                             "namespace": "kube-system"}]
        for obj in objs:
            for version in VERSIONS:
                assert kubernetes_validate.validate(obj, version, strict=True) == version


def test_the_cli_renders_lease_candidates(tmp_path: Path) -> None:
    from k3snet.cli import main  # noqa: PLC0415 - only this test runs the CLI

    spec = tmp_path / "spec.yaml"
    spec.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\nbackends: [calico]\n")
    out = tmp_path / "out"
    assert main(["render", "manifests", "-f", str(spec), "--lease-candidates", "zone=core",
                 "-o", str(out)]) == 0
    objs = list(yaml.safe_load_all((out / "k3snet.yaml").read_text()))
    assert _agent_container(objs)["command"][-2:] == ["--lease-candidates", "zone=core"]
    # a selector that can match no label is a usage error (exit 64)
    with pytest.raises(SystemExit) as exited:
        main(["render", "manifests", "-f", str(spec), "--lease-candidates", "a b"])
    assert exited.value.code == 64


@pytest.mark.parametrize(("spec", "selector", "fragment"), [
    (Spec(backends=["netlink"]), "zone=edge", "no backend of the spec writes objects"),
    (Spec(backends=["calico"]), "zone=a=b", "lease_candidates"),
    (Spec(backends=["calico"]), "", "lease_candidates"),
])
def test_lease_candidates_are_checked(spec: Spec, selector: str, fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment):
        render_manifests(spec, lease_candidates=selector)


@pytest.mark.parametrize("report", [True, False])
def test_lease_candidates_beside_flannels_file_alone_are_refused(report: bool) -> None:
    # flannel's file (flannel_conf) is each node's own: no agent holds a Lease for it. The
    # name "flannel" among the backends let lease_candidates through: every agent's token
    # could read every Node (the get this option grants) for nothing, and without the
    # node report the DaemonSet passed --no-kube --lease-candidates.
    with pytest.raises(SpecError, match="no backend of the spec writes objects"):
        render_manifests(Spec(backends=["flannel"]), node_report=report,
                         flannel_conf="/etc/k3s/flannel/net-conf.json", lease_candidates="zone=a")
    # through its ConfigMap flannel is cluster-wide: a Lease, and candidates for it
    objs = render_manifests(Spec(backends=["flannel"]), node_report=report,
                            flannel_configmap_namespace="kube-flannel", lease_candidates="zone=a")
    assert _agent_container(objs)["command"][-2:] == ["--lease-candidates", "zone=a"]


@pytest.mark.parametrize("name", ["calico", "everything-flannel-configmap",
                                  "everything-flannel-file", "cilium"])
def test_cluster_wide_writers_get_their_lease(name: str) -> None:
    spec, _ = SPECS[name]
    objs = _render(name)
    namespace = spec.agent.namespace
    role = _one(objs, "Role", "k3snet-agent-lease")
    assert role["metadata"]["namespace"] == namespace
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": [LEASE_NAME], "verbs": ["get", "patch"]}]
    assert _env(objs)["K3SNET_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_calico_gets_ippools_cluster_wide() -> None:
    objs = _render("calico")
    role = _one(objs, "ClusterRole", AGENT_NAME)
    assert role["rules"] == [{
        # Both: the backend finds the API by discovery (v3 with the Calico API server).
        "apiGroups": ["crd.projectcalico.org", "projectcalico.org"],
        "resources": ["ippools"],
        "verbs": ["list", "create", "patch", "delete"],
    }, {
        # Felix's NAT settings, read only.
        "apiGroups": ["crd.projectcalico.org", "projectcalico.org"],
        "resources": ["felixconfigurations"],
        "verbs": ["list"],
    }, {
        # The IPAM blocks the nodes hold, read only (in either group Calico keeps its
        # CRDs in).
        "apiGroups": ["crd.projectcalico.org", "projectcalico.org"],
        "resources": ["blockaffinities"],
        "verbs": ["list"],
    }, {
        # The Calico hosts' addresses (natOutgoingExclusions: IPPoolsAndHostIPs).
        "apiGroups": [""],
        "resources": ["nodes"],
        "verbs": ["list"],
    }, {
        # The pools pods and namespaces name in their annotations (metadata alone).
        "apiGroups": [""],
        "resources": ["namespaces"],
        "verbs": ["list"],
    }, {
        # The pods' are listed once, then their changes watched.
        "apiGroups": [""],
        "resources": ["pods"],
        "verbs": ["list", "watch"],
    }, {
        # The IPPool CRD alone: whether its schema drops disableBGPExport.
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "resourceNames": ["ippools.crd.projectcalico.org"],
        "verbs": ["get"],
    }]
    binding = _one(objs, "ClusterRoleBinding", AGENT_NAME)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": AGENT_NAME}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": AGENT_NAME,
                                    "namespace": "kube-system"}]
    assert {r["metadata"]["name"] for r in _kind(objs, "Role")} == {
        AGENT_NAME, "k3snet-agent-lease"}  # events, the Lease: no flannel Role
    assert _one(objs, "ServiceAccount")["automountServiceAccountToken"] is True


@pytest.mark.parametrize(("name", "namespace", "names", "daemonset"), [
    ("cilium", "kube-system", ["cilium-config", "ip-masq-agent"], "cilium"),
    ("cilium-elsewhere", "cilium-system", ["cilium-cfg", "masq"], "cilium-agent")])
def test_cilium_patches_its_two_configmaps_and_no_host_path(
        name: str, namespace: str, names: list[str], daemonset: str) -> None:
    objs = _render(name)
    role = _one(objs, "Role", f"{AGENT_NAME}-cilium")
    assert role["metadata"]["namespace"] == namespace
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": names,
         "verbs": ["patch"]},
        # Only the ip-masq-agent one is ever deleted: never Cilium's own configuration.
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": names[1:],
         "verbs": ["delete"]},
        # Read, any of them (a configMapKeyRef's), neither listed nor watched: no more
        # than Cilium's chart grants its own agent there (get, list, watch).
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
        {"apiGroups": ["cilium.io"], "resources": ["ciliumnodeconfigs"], "verbs": ["list"]},
        # Cilium's agent DaemonSet, read only: does it mount the ip-masq-agent ConfigMap?
        {"apiGroups": ["apps"], "resources": ["daemonsets"], "resourceNames": [daemonset],
         "verbs": ["get"]},
        *RESTART_RULES]
    binding = _one(objs, "RoleBinding", f"{AGENT_NAME}-cilium")
    assert binding["metadata"]["namespace"] == namespace
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": AGENT_NAME,
                                    "namespace": "kube-system"}]
    # ConfigMaps through the API only: nothing of the host
    assert _host_paths(objs) == {}
    assert {o["metadata"]["name"] for o in _kind(objs, "ClusterRole")} <= {
        "k3snet-agent-node-report", f"{AGENT_NAME}-cilium"}
    cluster_role = _one(objs, "ClusterRole", f"{AGENT_NAME}-cilium")
    assert cluster_role["rules"] == [{"apiGroups": ["cilium.io"],
                                      "resources": ["ciliumegressgatewaypolicies",
                                                    "ciliumnodes"],
                                      "verbs": ["list"]},
                                     {"apiGroups": [""], "resources": ["nodes"],
                                      "verbs": ["list"]}]


# Listed, never written: whether the CNI's pods restarted since k3snet changed its config.
RESTART_RULES = [{"apiGroups": ["apps"], "resources": ["daemonsets"], "verbs": ["list"]},
                 {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]


def _with_flannel_configmap_in_default() -> list[dict[str, Any]]:
    return render_manifests(Spec(backends=["flannel"], backend_options={
        "flannel": {"configmap": "default/kube-flannel-cfg"}}))


@pytest.mark.parametrize("name", [*sorted(SPECS), "flannel-configmap-in-default"])
def test_no_two_objects_share_a_name(name: str) -> None:
    # kubectl apply keeps the last of two objects of one kind, namespace and name: with
    # flannel's ConfigMap in "default", its Role replaced the node report's Role there
    # (both were k3snet-agent), and the agent could no longer create Events.
    objs = (_with_flannel_configmap_in_default() if name == "flannel-configmap-in-default"
            else _render(name))
    keys = [(o["apiVersion"], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
            for o in objs]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)


def test_flannel_configmap_in_default_keeps_the_event_role() -> None:
    objs = _with_flannel_configmap_in_default()
    rules = [r for o in _kind(objs, "Role") if o["metadata"]["namespace"] == "default"
             for r in o["rules"]]
    assert {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]} in rules
    assert _one(objs, "Role", f"{AGENT_NAME}-flannel")["rules"][0]["resourceNames"] == [
        FLANNEL_CONFIGMAP_NAME]


def test_flannel_configmap_mode_gets_one_configmap() -> None:
    objs = _render("everything-flannel-configmap")
    (role,) = [r for r in _kind(objs, "Role") if r["metadata"]["namespace"] == "kube-flannel"]
    assert role["metadata"]["name"] == f"{AGENT_NAME}-flannel"
    assert role["metadata"]["namespace"] == "kube-flannel"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                              "resourceNames": [FLANNEL_CONFIGMAP_NAME],
                              "verbs": ["get", "patch"]}, *RESTART_RULES]
    (binding,) = [r for r in _kind(objs, "RoleBinding")
                  if r["metadata"]["namespace"] == "kube-flannel"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": AGENT_NAME,
                                    "namespace": "k3snet-system"}]
    assert _env(objs)["K3SNET_FLANNEL_CONFIGMAP"] == "kube-flannel/kube-flannel-cfg"
    assert "/etc/k3s/flannel" not in _host_paths(objs)


def test_flannel_file_mode_mounts_the_directory_and_needs_no_rbac_for_it() -> None:
    objs = _render("everything-flannel-file")
    assert _host_paths(objs)["/etc/k3s/flannel"] == ("Directory", "/host/etc/k3s/flannel")
    assert _env(objs)["K3SNET_FLANNEL_CONF"] == "/host/etc/k3s/flannel/net-conf.json"
    assert not [r for r in _kind(objs, "Role") if r["metadata"]["namespace"] == "kube-flannel"]
    assert _one(objs, "ClusterRole", AGENT_NAME)["rules"][0]["resources"] == ["ippools"]


class _FlannelOptions(TypedDict, total=False):
    """The flannel keywords of :func:`render_manifests`, either or both."""

    flannel_conf: str
    flannel_configmap_namespace: str


@pytest.mark.parametrize(("backends", "options", "fragment"), [
    (["flannel"], {}, "needs exactly one of"),
    (["flannel"], {"flannel_conf": "/a/b.json", "flannel_configmap_namespace": "x"},
     "needs exactly one of"),
    (["flannel"], {"flannel_conf": "relative/net-conf.json"}, "absolute"),
    (["flannel"], {"flannel_conf": "/etc/../net-conf.json"}, "absolute"),
    (["flannel"], {"flannel_conf": "/net-conf.json"}, "below a directory"),
    (["flannel"], {"flannel_configmap_namespace": "Kube_Flannel"}, "not a valid namespace"),
    (["flannel"], {"flannel_conf": "/etc/rancher/k3s/net-conf.json"}, "a directory of its own"),
    (["flannel"], {"flannel_conf": "/var/lib/rancher/k3s/agent/net-conf.json"},
     "a directory of its own"),
    (["nftables"], {"flannel_conf": "/etc/flannel/net-conf.json"}, "do not include flannel"),
])
def test_flannel_options_are_checked(
    backends: list[str], options: _FlannelOptions, fragment: str
) -> None:
    with pytest.raises(SpecError, match=fragment):
        render_manifests(Spec(backends=backends), **options)


def test_custom_agent_namespace_is_created_first() -> None:
    objs = _render("everything-flannel-configmap")
    assert objs[0] == {"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": "k3snet-system",
                                    "labels": {**MANAGED_BY_LABELS,
                                               "app.kubernetes.io/component": "agent",
                                               "pod-security.kubernetes.io/enforce":
                                                   "privileged"}}}
    assert not _kind(_render("seed"), "Namespace")  # kube-system exists already


def test_an_existing_agent_namespace_is_left_alone() -> None:
    """``agent.createNamespace: false``: no Namespace object, so ``kubectl apply`` does not
    set an existing namespace's Pod Security level to privileged for all its pods, and
    ``kubectl delete -f`` does not delete it with everything in it."""
    spec, options = SPECS["everything-flannel-configmap"]
    document = spec.to_dict()
    document["agent"]["createNamespace"] = False
    objs = render_manifests(Spec.from_dict(document), **options)
    assert not _kind(objs, "Namespace")
    assert {o["metadata"].get("namespace") for o in _kind(objs, "DaemonSet")} == {
        "k3snet-system"}


# ---------------------------------------------------------------- egress policy

def test_egress_policy_allows_exactly_the_destinations_and_dns() -> None:
    policy = _one(_render("exclusions"), "NetworkPolicy")
    assert policy["metadata"]["name"] == EGRESS_POLICY_NAME
    assert policy["metadata"]["namespace"] == "shop"
    assert policy["spec"] == {
        "podSelector": {"matchLabels": {"app": "web"}},
        "policyTypes": ["Egress"],
        "egress": [
            {"to": [
                {"ipBlock": {"cidr": "192.168.2.0/24",
                             "except": ["192.168.2.128/25", "192.168.2.10/32"]}},
                {"ipBlock": {"cidr": "172.20.0.0/16"}},
            ]},
            {"to": [{"namespaceSelector": {"matchLabels":
                                           {"kubernetes.io/metadata.name": "kube-system"}},
                     "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
             "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        ],
    }


def test_egress_policy_dual_stack_and_selector() -> None:
    policy = _one(_render("everything-flannel-file"), "NetworkPolicy")
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app": "web", "tier": "frontend"}}
    assert policy["spec"]["egress"][0] == {"to": [
        {"ipBlock": {"cidr": "192.168.2.0/24", "except": ["192.168.2.128/25"]}},
        {"ipBlock": {"cidr": "fd01:2::/64"}},
    ]}


def test_nat_exclusions_do_not_block_reachability() -> None:
    # A destination's exclude keeps the pod source address; pods still reach it.
    spec = Spec(destinations=[Destination("192.168.2.0/24", exclude=["192.168.2.128/25"])],
                egress_policy=EgressPolicy(restrict=True))
    policy = next(o for o in render_manifests(spec) if o["kind"] == "NetworkPolicy")
    assert policy["spec"]["egress"][0] == {"to": [{"ipBlock": {"cidr": "192.168.2.0/24"}}]}


@pytest.mark.parametrize("selector", [{}, {"k8s-app": "kube-dns"}])
def test_an_egress_policy_selecting_coredns_is_refused(selector: dict[str, str]) -> None:
    """In kube-system, an empty selector (or CoreDNS's own label) restricts CoreDNS too: it
    could no longer reach its upstream resolvers nor the API server, and DNS would stop
    in every namespace."""
    spec = Spec(destinations=[Destination("192.168.2.0/24")],
                egress_policy=EgressPolicy(restrict=True, namespace="kube-system",
                                           pod_selector=selector))
    with pytest.raises(SpecError, match=r"egressPolicy.podSelector: .*CoreDNS"):
        render_manifests(spec)
    # Other pods of kube-system, or every pod of another namespace, may be restricted.
    for policy in (EgressPolicy(restrict=True, namespace="kube-system",
                                pod_selector={"app": "backup"}),
                   EgressPolicy(restrict=True, namespace="apps")):
        objs = render_manifests(attrs.evolve(spec, egress_policy=policy))
        assert _one(objs, "NetworkPolicy")["metadata"]["namespace"] == policy.namespace


def test_egress_policy_never_has_a_rule_without_peers() -> None:
    # A rule without "to" allows everything: no destinations means no rule at all.
    dns_only = _one(_render("restrict-dns-only"), "NetworkPolicy")["spec"]
    assert dns_only["podSelector"] == {}  # every pod of the namespace
    assert len(dns_only["egress"]) == 1
    assert dns_only["egress"][0]["ports"]
    nothing = _one(_render("restrict-nothing"), "NetworkPolicy")["spec"]
    assert nothing["egress"] == []  # deny all egress: what the spec says
    no_dns = render_manifests(Spec(destinations=[Destination("192.168.2.0/24")],
                                   egress_policy=EgressPolicy(restrict=True, allow_dns=False)))
    assert _one(no_dns, "NetworkPolicy")["spec"]["egress"] == [
        {"to": [{"ipBlock": {"cidr": "192.168.2.0/24"}}]}]
    for name in sorted(SPECS):
        for policy in _kind(_render(name), "NetworkPolicy"):
            assert all(rule.get("to") for rule in policy["spec"]["egress"]), name


# ---------------------------------------------------------------- absent sections

@pytest.mark.parametrize("name", ["seed", "dual-stack", "calico"])
def test_nothing_rendered_for_absent_sections(name: str) -> None:
    objs = _render(name)
    assert not _kind(objs, "NetworkPolicy")
    assert not _kind(objs, "Job")
    assert not [o for o in objs if o["metadata"]["name"] == COREDNS_CUSTOM_NAME]


def test_restrict_false_renders_no_policy_even_with_a_selector() -> None:
    spec = Spec(destinations=[Destination("192.168.2.0/24")],
                egress_policy=EgressPolicy(restrict=False, pod_selector={"app": "web"}))
    assert not _kind(render_manifests(spec), "NetworkPolicy")


def test_seed_renders_the_agent_only() -> None:
    assert [(o["kind"], o["metadata"]["name"]) for o in _render("seed")] == [
        ("ServiceAccount", AGENT_NAME), ("ConfigMap", SPEC_CONFIGMAP_NAME),
        ("ClusterRole", "k3snet-agent-node-report"),
        ("ClusterRoleBinding", "k3snet-agent-node-report"),
        ("Role", AGENT_NAME), ("RoleBinding", AGENT_NAME),
        ("DaemonSet", AGENT_NAME)]
    assert [(o["kind"], o["metadata"]["name"])
            for o in render_manifests(k3snet.seed_spec(), node_report=False)] == [
        ("ServiceAccount", AGENT_NAME), ("ConfigMap", SPEC_CONFIGMAP_NAME),
        ("DaemonSet", AGENT_NAME)]


# ---------------------------------------------------------------- DNS

def test_coredns_custom_forwards_each_zone() -> None:
    configmap = _one(_render("dns-and-test"), "ConfigMap", COREDNS_CUSTOM_NAME)
    assert configmap["metadata"]["namespace"] == "kube-system"
    assert configmap["data"] == {
        "corp.example.server": ("corp.example:53 {\n    errors\n    cache 30\n"
                                "    forward . 192.168.2.53 192.168.2.54\n}\n"),
        "db.internal.server": ("db.internal:53 {\n    errors\n    cache 30\n"
                               "    forward . fd01:2::53\n}\n"),
    }


def test_a_zone_port_is_written_as_coredns_forward_takes_it() -> None:
    """CoreDNS's forward reads IPV4:PORT and [IPV6]:PORT (net.SplitHostPort); 53 is left out."""
    zones = [DnsZone("consul", ["192.168.1.53", "fd00::53"], port=8600),
             DnsZone("corp.example", ["192.168.1.53"], port=53)]
    data = _one(render_manifests(Spec(dns=zones)), "ConfigMap", COREDNS_CUSTOM_NAME)["data"]
    assert data == {
        "consul.server": ("consul:53 {\n    errors\n    cache 30\n"
                          "    forward . 192.168.1.53:8600 [fd00::53]:8600\n}\n"),
        "corp.example.server": ("corp.example:53 {\n    errors\n    cache 30\n"
                                "    forward . 192.168.1.53\n}\n"),
    }


def test_coredns_custom_key_order_does_not_follow_the_spec_order() -> None:
    zones = [DnsZone("b.example", ["10.0.0.1"]), DnsZone("a.example", ["10.0.0.2"])]
    data = _one(render_manifests(Spec(dns=zones)), "ConfigMap", COREDNS_CUSTOM_NAME)["data"]
    assert list(data) == ["a.example.server", "b.example.server"]
    reversed_ = render_manifests(Spec(dns=zones[::-1]))
    assert dump_manifests([_one(reversed_, "ConfigMap", COREDNS_CUSTOM_NAME)]) == dump_manifests(
        [_one(render_manifests(Spec(dns=zones)), "ConfigMap", COREDNS_CUSTOM_NAME)])


# ---------------------------------------------------------------- connectivity test

def test_connectivity_job() -> None:
    job = _one(_render("dns-and-test"), "Job")
    assert job["metadata"]["name"] == CONNECTIVITY_JOB_NAME
    assert job["metadata"]["namespace"] == "default"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert job["spec"]["activeDeadlineSeconds"] > 0
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["image"] == "busybox:1.36"
    command = container["command"]
    assert command[:2] == ["sh", "-c"]
    assert command[3:] == [
        "k3snet-connectivity", "192.168.2.10", "5432"]
    script = command[2]
    assert 'ping -c 4 "$target"' in script
    assert 'nc -z -w 5 "$target" "$port"' in script
    assert "192.168.2.10" not in script  # arguments, never interpolated
    assert container["securityContext"]["capabilities"] == {"add": ["NET_RAW"], "drop": ["ALL"]}


def test_connectivity_pod_is_selected_by_the_egress_policy_of_its_namespace() -> None:
    job = _one(_render("everything-flannel-file"), "Job")
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["app"] == "web"
    assert labels["tier"] == "frontend"
    other_ns = Spec(destinations=[Destination("192.168.2.0/24")],
                    egress_policy=EgressPolicy(restrict=True, namespace="shop",
                                               pod_selector={"app": "web"}),
                    connectivity_test=ConnectivityTest("192.168.2.10"))
    labels = _one(render_manifests(other_ns), "Job")["spec"]["template"]["metadata"]["labels"]
    assert "app" not in labels


def test_connectivity_job_without_port_skips_tcp() -> None:
    spec = Spec(connectivity_test=ConnectivityTest("192.168.2.10"))
    command = _one(render_manifests(spec), "Job")["spec"]["template"]["spec"]["containers"][0][
        "command"]
    assert command[3:] == ["k3snet-connectivity", "192.168.2.10", ""]


# ---------------------------------------------------------------- DaemonSet like the best ones


@pytest.mark.parametrize("name", sorted(SPECS))
def test_daemonset_runs_on_linux_with_probes_on_the_agent_port(name: str) -> None:
    objs = _render(name)
    for daemonset in _kind(objs, "DaemonSet"):
        pod = daemonset["spec"]["template"]["spec"]
        assert pod["nodeSelector"]["kubernetes.io/os"] == "linux"
        (container,) = pod["containers"]
        assert container["ports"] == [{"name": "metrics", "containerPort": AGENT_PORT,
                                       "protocol": "TCP"}]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": AGENT_PORT}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": AGENT_PORT}
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert f":{AGENT_PORT}" in container["command"]
        # the limit is memory only (a CPU limit throttles a first apply of many rules)
        assert set(container["resources"]["limits"]) == {"memory"}
        # The agent's shutdown budgets its Lease release and last report within
        # TERMINATION_GRACE of SIGTERM, or the longer IPTABLES_GRACE with an iptables
        # backend that may run (its undo's runs after a restore killed at its bound):
        # the kubelet must kill it no earlier (a shorter grace period kills it
        # mid-release, a longer one only delays a drain).
        assert pod["terminationGracePeriodSeconds"] == _grace_of(pod)
        # ... and the agent is told so (not told, it assumes 30 s: DaemonSets rendered
        # before said that, and an image updated alone must not plan for more)
        told = [v for v in container["env"] if v["name"] == "K3SNET_TERMINATION_GRACE"]
        assert told == [{"name": "K3SNET_TERMINATION_GRACE",
                         "value": str(pod["terminationGracePeriodSeconds"])}]
        # The node's port is the agent's (host network): a surge pod could not bind it
        # beside the old one, so the rollout replaces pods, a tenth of the nodes at a time.
        assert daemonset["spec"]["updateStrategy"] == {
            "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_daemonset_grace_period_is_the_one_the_agent_it_runs_plans_its_shutdown_for(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The kubelet SIGKILLs the agent terminationGracePeriodSeconds after SIGTERM (after
    # the preStop hook began, when there is one: its time is taken from the same
    # period). The agent's shutdown bound is counted from SIGTERM: its requests end by
    # the grace period it was told (else 30 s) less CLEANUP_MARGIN. The agent is built
    # here from the container's own command and environment: the DaemonSet tells it its
    # period ($K3SNET_TERMINATION_GRACE); told nothing, it planned for 30 s of the 70.
    # The one-shot commands' undo on SIGTERM (apply, destroy: up to UNDO_AFTER_SIGTERM,
    # 75 s, systemd's stop timeout less a margin) is never the agent's: the agent ends
    # its pass and its undo within the grace period, never undoes what is in force. A
    # grace period other than the agent's, a preStop hook, or an agent command SIGTERM
    # undoes, each fails here.
    clock = [1000.0]

    def desired(spec: Spec, group: BackendGroup, /, *, hold: frozenset[int] = frozenset()
                ) -> State:
        return compile_for(group, spec)

    assert "agent" not in cli.UNDONE_ON_SIGTERM
    for daemonset in _kind(_render(name), "DaemonSet"):
        pod = daemonset["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"][:2] == ["k3snet", "agent"]
        assert "lifecycle" not in container  # no preStop taking part of the period
        monkeypatch.delenv("K3SNET_TERMINATION_GRACE", raising=False)
        for variable in container["env"]:
            if "value" in variable:
                monkeypatch.setenv(variable["name"], variable["value"])
        args = cli.build_parser().parse_args(container["command"][1:])
        agent = Agent(FileSpecSource(tmp_path / "spec.yaml"),  # (no pass: never read)
                      lambda spec: BackendGroup([MemoryBackend()]), desired,
                      _agent_options(args), monotonic=lambda: clock[0])
        agent.stop()  # SIGTERM at 1000 s
        deadline = agent.grace_deadline()
        assert deadline is not None
        bound = deadline.at - 1000.0 + CLEANUP_MARGIN  # the agent's, and its margin
        assert 0 < CLEANUP_MARGIN < bound
        assert pod["terminationGracePeriodSeconds"] == bound
        # (and no longer than it needs: it delays a drain and a rolling update)
        assert pod["terminationGracePeriodSeconds"] == _grace_of(pod)


IPTABLES_GRACE = 130
"""The grace period of an agent that may run the iptables backend at its default 30 s
``timeout``: a restore killed at it, the read-back of what it committed and one run per
family taken back (each as long), CLEANUP_MARGIN and 5 s to spare."""


def _grace_of(pod: dict[str, Any]) -> int:
    """The grace period ``pod`` must have: IPTABLES_GRACE if it mounts the xtables lock
    (an iptables backend may run), else TERMINATION_GRACE."""
    volumes = {v["name"] for v in pod["volumes"]}
    return IPTABLES_GRACE if "xtables-lock" in volumes else TERMINATION_GRACE


def test_the_grace_period_outlasts_the_longest_bounded_step_and_its_undo() -> None:
    """SIGTERM never cuts the agent's apply in progress: an iptables restore killed at its
    bound (the backend's ``timeout``), then its undo (the read-back of what the killed
    run committed, one restore per family taken back, each as long), then the Lease's
    release within CLEANUP_MARGIN. At 30 s, the restore's own bound, the kubelet's
    SIGKILL landed in the undo, the node half-changed; at 70 s, counting one undo run,
    in the undo's later runs."""
    restore = inspect.signature(IptablesBackend).parameters["timeout"].default
    assert restore == inspect.signature(Processes).parameters["timeout"].default
    needed = (1 + IptablesBackend().undo_steps) * restore + CLEANUP_MARGIN
    assert needed < IPTABLES_GRACE
    for daemonset in _kind(_render("seed"), "DaemonSet"):
        assert daemonset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > (
            needed)


# Peak RSS of an agent's first pass with netlink and nftables, the heaviest backends
# measured (`python benchmarks/agent_memory.py --kernel 10000 20000 30000`; docs/agent.md).
MEASURED_PEAK_MIB = {10_000: 269, 20_000: 490, 30_000: 708}


@functools.cache
def _many(count: int) -> tuple[Spec, str]:
    """A spec of ``count`` destinations, and its text one destination per line (flow
    style, as docs/manifests.md advises: up to some 40,000 fit a ConfigMap).

    Built once per count (a Spec is frozen): the tests of each count only read it, and
    building 30,000 destinations again for each of them cost a second and more."""
    cidrs = [f"10.{100 + i // 256}.{i % 256}.0/24" for i in range(count)]
    text = "apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\ndestinations:\n" + "".join(
        f"  - {{cidr: {cidr}}}\n" for cidr in cidrs)
    return Spec(destinations=[Destination(cidr) for cidr in cidrs]), text


@functools.cache
def _many_excluding(count: int, each: int) -> tuple[Spec, str]:
    """:func:`_many`'s spec with ``each`` excludes in every destination, every other /29
    of its /24 as measured (none to aggregate), and its text one destination a line in
    flow style (4,000 with 10 excludes each fit a ConfigMap). Built once per shape."""
    spec, _ = _many(count)
    # The /29s at offsets 0, 16, 32 ... of the /24: list(cidr.subnets(29))[::2][:each],
    # written out (making all 32 subnets of each destination cost seconds).
    destinations = [attrs.evolve(d, exclude=[f"{d.cidr.network_address + 16 * k}/29"
                                             for k in range(each)])
                    for d in spec.destinations]
    text = "apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\ndestinations:\n" + "".join(
        f"  - {{cidr: {d.cidr}, exclude: [{', '.join(map(str, d.exclude))}]}}\n"
        for d in destinations)
    return attrs.evolve(spec, destinations=destinations), text


def test_the_excludes_measured_are_every_other_29_of_each_destination() -> None:
    # what _many_excluding writes out is what the measurements drew
    spec, _ = _many_excluding(3, 16)
    for d in spec.destinations:
        assert list(d.exclude) == list(d.cidr.subnets(new_prefix=29))[::2]


def _memory_limit_mib(daemonset: dict[str, Any]) -> int:
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    limit: str = container["resources"]["limits"]["memory"]
    assert limit.endswith("Mi"), limit
    return int(limit.removesuffix("Mi"))


@pytest.mark.parametrize("count", sorted(MEASURED_PEAK_MIB))
def test_agent_memory_limit_covers_the_measured_peak_of_its_own_spec(count: int) -> None:
    # The limit was 384 Mi whatever the spec: a spec of 20,000 destinations fits its
    # ConfigMap and rendered, and every agent was OOM-killed in its first pass (490 MiB
    # measured), again after each restart. The limit now follows the spec's size, and
    # each profile's DaemonSet its own spec's.
    spec, text = _many(count)
    seed = k3snet.seed_spec()
    for objs, name in ((render_manifests(spec, spec_text=text, node_report=False), AGENT_NAME),
                       (render_manifests(seed, node_report=False, profiles={"big": (spec, text)}),
                        f"{AGENT_NAME}-big")):
        daemonset = _one(objs, "DaemonSet", name)
        for version in VERSIONS:
            assert kubernetes_validate.validate(daemonset, version, strict=True) == version
        # At least 25 % above the measured peak (the first pass's data, the kernel's
        # answers and the interpreter vary from node to node).
        assert _memory_limit_mib(daemonset) >= 1.25 * MEASURED_PEAK_MIB[count]
        # A small spec keeps the 384 Mi measured for 10,000 destinations.
        assert _memory_limit_mib(_one(objs, "DaemonSet", AGENT_NAME)) == (
            _memory_limit_mib(daemonset) if name == AGENT_NAME else 384)


# RSS of a running agent (netlink and nftables, --interval 20) through the passes after
# its first one onto an empty node: it stays at that pass's peak while the agent runs
# (VmRSS sampled every 6 s for a minute, 2026-12-05; docs/agent.md, "Memory").
MEASURED_RUNNING_MIB = {10_000: 275, 20_000: 483}


def _memory_request_mib(daemonset: dict[str, Any]) -> int:
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    request: str = container["resources"]["requests"]["memory"]
    assert request.endswith("Mi"), request
    return int(request.removesuffix("Mi"))


@pytest.mark.parametrize("count", sorted(MEASURED_RUNNING_MIB))
def test_agent_memory_request_covers_what_a_running_agent_holds(count: int) -> None:
    # The request was 128 Mi whatever the spec: the agent of 10,000 destinations holds
    # 275 MiB on every node from its first pass on, and the scheduler counted 128.
    spec, text = _many(count)
    seed = k3snet.seed_spec()
    for objs, name in ((render_manifests(spec, spec_text=text, node_report=False), AGENT_NAME),
                       (render_manifests(seed, node_report=False, profiles={"big": (spec, text)}),
                        f"{AGENT_NAME}-big")):
        daemonset = _one(objs, "DaemonSet", name)
        assert MEASURED_RUNNING_MIB[count] <= _memory_request_mib(daemonset) \
            <= _memory_limit_mib(daemonset)
        # the seed's own DaemonSet beside a big profile keeps the least request
        assert _memory_request_mib(_one(objs, "DaemonSet", AGENT_NAME)) == (
            _memory_request_mib(daemonset) if name == AGENT_NAME else 128)


# CPU seconds of a first pass with netlink and nftables onto an empty node (the
# interpreter's start included; benchmarks/agent_memory.py --kernel, 2026-12-07).
MEASURED_FIRST_PASS_CPU_S = {0: 1.03, 2_000: 1.66, 10_000: 6.05, 20_000: 10.17}


def _cpu_request_cores(daemonset: dict[str, Any]) -> float:
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    request: str = container["resources"]["requests"]["cpu"]
    assert request.endswith("m"), request
    return int(request.removesuffix("m")) / 1000


@pytest.mark.parametrize("interval", [1, 30, 600])
@pytest.mark.parametrize("count", sorted(MEASURED_FIRST_PASS_CPU_S))
def test_a_first_pass_at_the_agents_cpu_request_ends_before_the_liveness_probe_kills_it(
        count: int, interval: int) -> None:
    # On a node whose every core is busy the agent gets its request's share of CPU time,
    # and /healthz fails once no pass ended for 2 x interval + 2 x the lock timeout +
    # 60 s (the lock waits budgeted apart). 10m whatever the spec gave a first pass at
    # 10,000 destinations (6 CPU seconds) some 600 s there: restarted, every restart too.
    from k3snet.agent import AgentOptions  # noqa: PLC0415
    from k3snet.backends.lock import DEFAULT_LOCK_TIMEOUT  # noqa: PLC0415

    spec, text = _many(count)
    spec = attrs.evolve(spec, agent=attrs.evolve(spec.agent, interval_seconds=interval))
    daemonset = _one(render_manifests(spec, spec_text=text, node_report=False), "DaemonSet",
                     AGENT_NAME)
    budget = AgentOptions("node-a", interval=interval).liveness_limit - 2 * DEFAULT_LOCK_TIMEOUT
    assert MEASURED_FIRST_PASS_CPU_S[count] / _cpu_request_cores(daemonset) <= budget


# CPU seconds of a first pass of `k3snet agent --once` with netlink and iptables (the
# heavier backend there) onto an empty node, of (destinations, excludes each): the
# driver in docs/agent.md ("Memory"), 2026-12-07.
MEASURED_FIRST_PASS_CPU_S_EXCLUDES = {(1_000, 10): 3.06, (2_000, 10): 4.40}


@pytest.mark.parametrize("interval", [1, 30, 600])
@pytest.mark.parametrize(("count", "each"), sorted(MEASURED_FIRST_PASS_CPU_S_EXCLUDES))
def test_a_first_pass_heavy_in_excludes_at_the_agents_cpu_request_ends_before_the_probe_kills_it(
        count: int, each: int, interval: int) -> None:
    # The request counted the destinations alone: 1,000 of them with 10 excludes each
    # (3 CPU seconds, twice a pass without them) got 20m, 150 s on a busy node, past the
    # 120 s the liveness probe leaves a pass at the default interval.
    from k3snet.agent import AgentOptions  # noqa: PLC0415
    from k3snet.backends.lock import DEFAULT_LOCK_TIMEOUT  # noqa: PLC0415

    spec, text = _many_excluding(count, each)
    spec = attrs.evolve(spec, agent=attrs.evolve(spec.agent, interval_seconds=interval))
    daemonset = _one(render_manifests(spec, spec_text=text, node_report=False), "DaemonSet",
                     AGENT_NAME)
    budget = AgentOptions("node-a", interval=interval).liveness_limit - 2 * DEFAULT_LOCK_TIMEOUT
    measured = MEASURED_FIRST_PASS_CPU_S_EXCLUDES[(count, each)]
    assert measured / _cpu_request_cores(daemonset) <= budget


@given(st.integers(min_value=0, max_value=60_000), st.integers(min_value=1, max_value=86_400))
def test_agent_cpu_request_grows_with_the_destinations_and_never_below_the_least(
        count: int, interval: int) -> None:
    from k3snet.render.manifests import agent_cpu_request  # noqa: PLC0415

    request = int(agent_cpu_request(count, interval).removesuffix("m"))
    assert 10 <= request <= int(agent_cpu_request(count + 1000, interval).removesuffix("m"))


@given(st.integers(min_value=0, max_value=60_000), st.integers(min_value=0, max_value=600_000))
def test_agent_memory_request_is_never_above_its_limit_nor_below_the_least(
        count: int, excludes: int) -> None:
    from k3snet.render.manifests import agent_memory_limit, agent_memory_request  # noqa: PLC0415

    request = int(agent_memory_request(count, excludes=excludes).removesuffix("Mi"))
    assert 128 <= request <= int(agent_memory_limit(count, excludes=excludes).removesuffix("Mi"))


# Peak RSS (MiB) of a first pass of `k3snet agent --once` with netlink and nftables onto
# an empty node, of (destinations, excludes each): 83 / 105 / 144 MiB without excludes
# (docs/agent.md, "Memory"; 2026-12-07).
MEASURED_PEAK_MIB_EXCLUDES = {(1_000, 16): 111, (2_000, 10): 139, (4_000, 10): 218}


@pytest.mark.parametrize(("count", "each"), sorted(MEASURED_PEAK_MIB_EXCLUDES))
def test_agent_memory_request_and_limit_cover_a_first_pass_heavy_in_excludes(
        count: int, each: int) -> None:
    # The memory request and limit counted the destinations alone (the CPU request counts
    # the excludes too): 4,000 destinations with 10 excludes each peak at 218 MiB, and
    # the request was 192 Mi; each exclude adds some 1.8 KiB.
    spec, text = _many_excluding(count, each)
    daemonset = _one(render_manifests(spec, spec_text=text, node_report=False), "DaemonSet",
                     AGENT_NAME)
    measured = MEASURED_PEAK_MIB_EXCLUDES[(count, each)]
    assert _memory_request_mib(daemonset) >= measured
    assert _memory_limit_mib(daemonset) >= 1.25 * measured


def test_the_agent_listens_where_the_probes_look_by_default() -> None:
    from k3snet.agent import parse_listen  # noqa: PLC0415
    from k3snet.cli import DEFAULT_LISTEN, build_parser  # noqa: PLC0415

    args = build_parser().parse_args(["agent", "-f", "x"])
    assert args.listen is None  # then DEFAULT_LISTEN, unless --once
    assert parse_listen(DEFAULT_LISTEN)[1] == AGENT_PORT


def test_never_all_of_the_k3s_directory_writable() -> None:
    for name in SPECS:
        for path in _host_paths(_render(name)):
            assert path not in ("/etc/rancher/k3s", "/etc/rancher", "/etc", "/var/lib/rancher/k3s")


def test_profiles_are_daemonsets_selected_by_node_label() -> None:
    objs = _render("profiles")
    daemonsets = {d["metadata"]["name"]: d for d in _kind(objs, "DaemonSet")}
    assert sorted(daemonsets) == [AGENT_NAME, f"{AGENT_NAME}-edge", f"{AGENT_NAME}-gpu"]
    base = daemonsets[AGENT_NAME]["spec"]["template"]["spec"]
    assert base["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": PROFILE_LABEL, "operator": "NotIn", "values": ["edge", "gpu"]}]}]}
    selectors = []
    for profile in ("edge", "gpu"):
        ds = daemonsets[f"{AGENT_NAME}-{profile}"]
        pod = ds["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"kubernetes.io/os": "linux", PROFILE_LABEL: profile}
        assert "affinity" not in pod
        (volume,) = [v for v in pod["volumes"] if v["name"] == "spec"]
        assert volume["configMap"]["name"] == f"{SPEC_CONFIGMAP_NAME}-{profile}"
        configmap = _one(objs, "ConfigMap", f"{SPEC_CONFIGMAP_NAME}-{profile}")
        assert k3snet.Spec.from_yaml(configmap["data"]["spec.yaml"]) == \
            SPECS["profiles"][1]["profiles"][profile]
        assert ds["spec"]["template"]["metadata"]["labels"][PROFILE_LABEL] == profile
        selectors.append(ds["spec"]["selector"]["matchLabels"])
    selectors.append(daemonsets[AGENT_NAME]["spec"]["selector"]["matchLabels"])
    # no two DaemonSets select each other's pods
    assert len({tuple(sorted(sel.items())) for sel in selectors}) == 3
    assert {sel[PROFILE_LABEL] for sel in selectors} == {"default", "edge", "gpu"}


@pytest.mark.parametrize(("profiles", "fragment"), [
    ({"default": k3snet.seed_spec()}, "profile name"),
    ({"Edge": k3snet.seed_spec()}, "profile name"),
    ({"edge": Spec(destinations=[Destination("192.168.2.0/24")], backends=["nftables"])},
     "must equal the base spec's backends"),
    ({"edge": Spec(destinations=[Destination("192.168.2.0/24")],
                   agent=AgentSettings(interval_seconds=5))}, "must equal the base spec's agent"),
    ({"edge": Spec(destinations=[Destination("192.168.2.0/24", exclude=["10.0.0.0/8"])])},
     "profiles.edge.destinations"),
])
def test_profiles_may_not_change_what_is_shared(profiles: dict[str, Spec], fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment):
        render_manifests(k3snet.seed_spec(), profiles=profiles)


def test_profiles_may_not_change_where_cilium_is_written() -> None:
    moved = _with_cilium(configmap=["cilium-system", "cilium-config"])
    with pytest.raises(SpecError, match=r"profiles\.edge\.backends\.cilium: must equal"):
        render_manifests(_with_cilium(), profiles={"edge": moved})
    same = render_manifests(_with_cilium(), profiles={"edge": _with_cilium()})
    assert len(_kind(same, "DaemonSet")) == 2


# ---------------------------------------------------------------- hostile agent values


def _kubelet_parses(image: str) -> bool:
    """Whether the kubelet can pull ``image``, judged part by part as the reference
    library does (an oracle written apart from the spec's pattern)."""
    name, at, digest = image.partition("@")
    if at:
        algorithm, colon, encoded = digest.partition(":")
        if (not colon or len(encoded) < 32
                or any(c not in "0123456789abcdefABCDEF" for c in encoded)
                or not algorithm[:1].isascii() or not algorithm[:1].isalpha()
                or any(not (c.isascii() and (c.isalnum() or c in "-_+.")) for c in algorithm)
                or any(not part or not part[0].isalpha()
                       for part in algorithm.replace("-", "+").replace("_", "+")
                       .replace(".", "+").split("+"))):
            return False
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, _, tag = name.rpartition(":")
        word = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
        if not tag or len(tag) > 128 or tag[0] not in word or set(tag) - word - {".", "-"}:
            return False
    parts = name.split("/")
    # The first part is a registry when it can be one (else a path part, as the grammar
    # reads "0_registry.example/x").
    first_is_host = len(parts) > 1 and _is_host(parts[0])
    return (all(map(_is_path_part, parts[1:] if first_is_host else parts))
            and len(name) <= 255)


def _is_host(text: str) -> bool:
    host, colon, port = text.rpartition(":") if text.rfind(":") > text.rfind("]") else (
        text, "", "")
    if colon and not (port.isascii() and port.isdigit()):
        return False
    if host.startswith("[") and host.endswith("]"):
        return bool(host[1:-1]) and not set(host[1:-1]) - set("0123456789abcdefABCDEF:")
    return all(lab and lab.isascii() and lab.replace("-", "").isalnum()
               and lab[0] != "-" and lab[-1] != "-" for lab in host.split("."))


def _is_path_part(part: str) -> bool:
    pieces = part.replace("__", ".").replace("_", ".")
    while "--" in pieces:
        pieces = pieces.replace("--", "-")
    return all(p and p.isascii() and p.isalnum() and p == p.lower()
               for p in pieces.replace("-", ".").split("."))


IMAGE_PIECES = st.lists(st.sampled_from(
    ["a", "k3snet", "Reg", "K", "0", ".", "-", "--", "_", "__", "___", "/", ":", "@", "5000",
     "sha256:" + "ab" * 16, "localhost", "registry.example", " ", "\n", "\t", "\x00", '"',
     "'", "#", "&x", "*x", "!", "{", "}", "[", "]", "é", "\u202e", "yes", "null", "~"]),
    min_size=1, max_size=12).map("".join)


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image=IMAGE_PIECES)
@example(image="registry.example/K3snet:1")
@example(image="registry.example:5000/k3snet:1.2@sha256:" + "ab" * 32)
@example(image="k3snet\n---\nkind: ClusterRoleBinding")
def test_an_agent_image_is_refused_or_renders_as_one_the_kubelet_pulls(image: str) -> None:
    """A value the kubelet cannot parse (InvalidImageName on every node) is refused with
    its path; any other renders as itself, read back through YAML and valid Kubernetes."""
    spec = Spec(destinations=[Destination("192.168.2.0/24")],
                agent=AgentSettings(image=image),
                connectivity_test=ConnectivityTest("192.168.2.10", image=image))
    if not _kubelet_parses(image):
        with pytest.raises(SpecError) as refused:
            render_manifests(spec, node_report=False)
        assert {p.path for p in refused.value.problems} == {"agent.image",
                                                            "connectivityTest.image"}
        return
    objs = render_manifests(spec, node_report=False)
    text = dump_manifests(objs)
    assert list(yaml.safe_load_all(text)) == objs
    for obj in objs:
        for container in _containers(obj):
            assert container["image"] == image
        assert kubernetes_validate.validate(obj, NEWEST_KUBERNETES_VERSION, strict=True)


# ------------------------------------------------------------ the image's architectures

@pytest.mark.parametrize("profiles", [False, True], ids=["one", "profiles"])
def test_the_daemonsets_run_only_on_nodes_of_the_architectures_the_image_is_built_for(
        profiles: bool) -> None:
    # make image builds for its machine's architecture alone: without a kubernetes.io/arch
    # term, an arm64 node of an amd64 image ran the agent into "exec format error" on
    # every restart (an image of one platform: ImagePullBackOff).
    spec = attrs.evolve(k3snet.seed_spec(), agent=AgentSettings(architectures=["arm64"]))
    others = {"edge": attrs.evolve(spec, destinations=[Destination("192.168.9.0/24")])}
    objs = render_manifests(spec, node_report=False, profiles=others if profiles else None)
    daemonsets = _kind(objs, "DaemonSet")
    assert len(daemonsets) == (2 if profiles else 1)
    for daemonset in daemonsets:
        pod = daemonset["spec"]["template"]["spec"]
        terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"]
        # One term: terms are ORed, so the profile's NotIn in a second one would have let
        # every node of another architecture in.
        (term,) = terms
        assert {"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]} in \
            term["matchExpressions"]
        if profiles and daemonset["metadata"]["name"] == AGENT_NAME:
            assert {"key": PROFILE_LABEL, "operator": "NotIn", "values": ["edge"]} in \
                term["matchExpressions"]
        for version in VERSIONS:
            assert kubernetes_validate.validate(daemonset, version, strict=True) == version


def test_no_architecture_given_leaves_the_daemonset_on_every_node() -> None:
    (daemonset,) = _kind(render_manifests(k3snet.seed_spec(), node_report=False), "DaemonSet")
    assert "affinity" not in daemonset["spec"]["template"]["spec"]


@pytest.mark.parametrize(("given", "hint"), [
    ("x86_64", "x86_64 is amd64"), ("aarch64", "aarch64 is arm64"), ("armhf", "armhf is arm"),
    ("AMD64", "amd64"), ("", "one of")])
def test_an_architecture_no_node_label_holds_is_refused_with_the_label_s_name(
        given: str, hint: str) -> None:
    text = ("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
            f"destinations: [{{cidr: 192.168.2.0/24}}]\nagent: {{architectures: ['{given}']}}\n")
    with pytest.raises(SpecError, match=r"agent\.architectures") as caught:
        k3snet.Spec.from_yaml(text)
    assert hint in str(caught.value)


def test_an_empty_list_of_architectures_is_refused_not_a_daemonset_the_api_server_refuses(
) -> None:
    # `In` with no value: the API server refuses the whole DaemonSet ("values: Required
    # value: must be specified when `operator` is 'In' or 'NotIn'"), and kubernetes-
    # validate's schema lets it through.
    text = ("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
            "destinations: [{cidr: 192.168.2.0/24}]\nagent: {architectures: []}\n")
    with pytest.raises(SpecError, match=r"agent\.architectures: .*no node"):
        k3snet.Spec.from_yaml(text)
    spec = attrs.evolve(k3snet.seed_spec(), agent=AgentSettings(architectures=[]))
    with pytest.raises(SpecError, match=r"agent\.architectures: .*no node"):
        render_manifests(spec, node_report=False)


def test_an_architecture_in_capitals_is_refused_with_the_label_s_spelling() -> None:
    text = ("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
            "destinations: [{cidr: 192.168.2.0/24}]\nagent: {architectures: [ARM64]}\n")
    with pytest.raises(SpecError, match=r"ARM64 is arm64 there"):
        k3snet.Spec.from_yaml(text)
