"""The rendered RBAC against what the agent really sends.

The agent runs as the rendered DaemonSet runs it (its command, its environment,
``--once``) against the emulated API server, once with a spec and once with that
spec emptied (creates, patches, deletes); every request it sent is then checked
against the rendered Roles and ClusterRoles bound to its ServiceAccount, as the
API server's RBAC authorizer would: a request no rule allows would be a 403 in a
cluster, and the emulator does not enforce RBAC.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import attrs
import kubernetes_validate
import pytest

from k3snet.backends.calico import CalicoBackend
from k3snet.cli import main
from k3snet.render.manifests import (
    AGENT_NAME,
    NEWEST_KUBERNETES_VERSION,
    SPEC_PATH,
    render_manifests,
)
from k3snet.spec import Spec, load_spec
from k3snet.testing.kube import AGENT_RESOURCES, CALICO_RESOURCES, EmulatedApiServer
from tests.cluster.test_calico_backend import CRDS, ippool_crd
from tests.cluster.test_cilium_mount import cilium_daemonset

pytestmark = pytest.mark.cluster

NODE = "node-a"
CONFIGMAPS = "v1/configmaps"

HEADER = "apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
DESTINATIONS = """\
destinations:
  - cidr: 192.168.2.0/24
  - cidr: 172.20.0.0/16
    masquerade: false
"""


@attrs.frozen
class Request:
    """One API request as RBAC sees it (``namespace``/``name`` None when there is none)."""

    verb: str
    group: str
    resource: str
    namespace: str | None
    name: str | None


_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<namespace>[^/]+))?(?:/(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?)?/?$")


def _request(method: str, path: str) -> Request | None:
    """The RBAC attributes of a request (``None``: discovery, which every account may do)."""
    bare, _, query = path.partition("?")
    found = _PATH.match(bare)
    assert found is not None, f"unexpected request path {path}"
    resource = found["resource"]
    namespace = found["namespace"]
    if resource is None:
        return None  # /api/v1, /apis/GROUP/VERSION: discovery (system:discovery)
    if namespace is None and resource == "namespaces" and found["name"]:
        return Request("get", "", "namespaces", None, found["name"])
    name = found["name"]
    if method == "GET":
        verb = "get" if name else ("watch" if "watch=true" in query else "list")
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete" if name else "deletecollection"}[method]
    return Request(verb, found["group"] or "", resource, namespace, name)


def _granted(objs: Iterable[Mapping[str, Any]], account_namespace: str
             ) -> list[tuple[str | None, Mapping[str, Any]]]:
    """(namespace the rule holds in, or None: cluster-wide; the rule) of every rule bound
    to the agent's ServiceAccount."""
    objs = list(objs)
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o["rules"]
             for o in objs if o["kind"] in ("Role", "ClusterRole")}
    found: list[tuple[str | None, Mapping[str, Any]]] = []
    for binding in objs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        subject = {"kind": "ServiceAccount", "name": AGENT_NAME, "namespace": account_namespace}
        if subject not in binding["subjects"]:
            continue
        scope = binding["metadata"].get("namespace")
        ref = binding["roleRef"]
        rules = roles[(ref["kind"], scope if ref["kind"] == "Role" else None, ref["name"])]
        found += [(scope, rule) for rule in rules]
    return found


def _allows(scope: str | None, rule: Mapping[str, Any], request: Request) -> bool:
    names = rule.get("resourceNames")
    return ((scope is None or scope == request.namespace)
            and request.group in rule["apiGroups"] and request.resource in rule["resources"]
            and request.verb in rule["verbs"]
            and (not names or request.name in names))


def _kubeconfig(server: EmulatedApiServer, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: emu, cluster: {{server: '{server.url}'}}}}]\n"
        "users: [{name: me, user: {}}]\n"
        "contexts: [{name: emu, context: {cluster: emu, user: me}}]\n"
        "current-context: emu\n")
    return path


def _run_as_rendered(server: EmulatedApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                     texts: tuple[str, ...], between: Callable[[], None] = lambda: None,
                     **options: Any) -> tuple[list[Request], list[dict[str, Any]], str]:
    """Run the agent with each spec text in turn as the rendered DaemonSet runs it; the
    requests it sent, the rendered objects (of the first spec) and the agent's namespace."""
    first = tmp_path / "spec.yaml"
    first.write_text(texts[0])
    objs = render_manifests(load_spec(first), **options)
    (daemonset,) = [o for o in objs if o["kind"] == "DaemonSet"]
    namespace = daemonset["metadata"]["namespace"]
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    for env in container["env"]:
        if "value" in env:
            monkeypatch.setenv(env["name"], env["value"])
        elif env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace":
            monkeypatch.setenv(env["name"], namespace)
    monkeypatch.setenv("K3SNET_NODE_NAME", NODE)
    command = list(container["command"])
    assert command[:2] == ["k3snet", "agent"]
    argv = command[1:]
    argv[argv.index("--listen") + 1] = "none"
    # In the pod the agent and its backends find the API through the service account;
    # here through the default kubeconfig, which they all read the same way (the
    # kubernetes client reads $KUBECONFIG once, when imported).
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION",
                        str(_kubeconfig(server, tmp_path)))
    seen = len(server.requests())
    for i, text in enumerate(texts):
        if i:
            between()
        path = tmp_path / "spec.yaml"
        path.write_text(text)
        argv[argv.index(SPEC_PATH) if SPEC_PATH in argv else argv.index("-f") + 1] = str(path)
        assert main([*argv, "--once"]) == 0
    return _sent(server, seen), objs, namespace


def _sent(server: EmulatedApiServer, seen: int = 0) -> list[Request]:
    """The requests served from the ``seen``-th on, as RBAC sees them (with their query:
    a GET of ``watch=true`` is a watch, not a list)."""
    requests = [_request(method, f"{path}?{urlencode(query)}" if query else path)
                for (method, path, _), query
                in list(zip(server.requests(), server.params(), strict=True))[seen:]]
    return [r for r in requests if r is not None]


def _denied(requests: Iterable[Request], objs: list[dict[str, Any]], namespace: str
            ) -> list[Request]:
    granted = _granted(objs, namespace)
    return sorted({r for r in requests if not any(_allows(s, g, r) for s, g in granted)},
                  key=repr)


def _unused(requests: Iterable[Request], objs: list[dict[str, Any]], namespace: str
            ) -> list[tuple[str | None, str, str] | tuple[str | None, str, str, str]]:
    """(scope, resource, verb), or (scope, resource, verb, name) for a rule limited by
    ``resourceNames``, granted that no request used (in any of the rule's groups:
    Calico's two APIs are alternatives, one of them in use). Each name is judged on its
    own: a verb granted on two names and sent to one is one name too many."""
    requests = list(requests)
    unused: list[tuple[str | None, str, str] | tuple[str | None, str, str, str]] = []
    for scope, rule in _granted(objs, namespace):
        for resource in rule["resources"]:
            for verb in rule["verbs"]:
                for name in rule.get("resourceNames") or [None]:
                    narrowed = {**rule, "resources": [resource], "verbs": [verb]}
                    if name is not None:
                        narrowed["resourceNames"] = [name]
                    if not any(_allows(scope, narrowed, r) for r in requests):
                        unused.append((scope, resource, verb) if name is None
                                      else (scope, resource, verb, name))
    return sorted(unused, key=repr)


CNI_WORKLOADS = ("apps/v1/daemonsets", "v1/pods")
AFFINITIES = "crd.projectcalico.org/v1/blockaffinities"


def _cni_daemonset(server: EmulatedApiServer, namespace: str, name: str) -> None:
    """The CNI's DaemonSet: its pods are listed to tell whether a change is in force."""
    labels = {"k8s-app": name}
    server.put("apps/v1/daemonsets", {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": []}}}})


@pytest.fixture(params=["crd", "v3"])
def server(request: pytest.FixtureRequest) -> Any:
    # Calico's CRDs alone, or its API server's projectcalico.org/v3 too (then used).
    calico = CALICO_RESOURCES if request.param == "v3" else tuple(
        r for r in CALICO_RESOURCES if r.startswith("crd."))
    with EmulatedApiServer(resources=(*calico, *AGENT_RESOURCES, *CNI_WORKLOADS, CRDS,
                                      AFFINITIES, "v1/namespaces")) as srv:
        srv.calico = calico  # type: ignore[attr-defined]
        srv.put(CRDS, ippool_crd(bgp_export_field=True))
        srv.put("v1/nodes", {"metadata": {"name": NODE}})
        yield srv


# Granted and not sent by these runs: `watch` on pods, which the calico backend sends
# from its second reading of the Pods on (it lists them first), while here the backend
# each spec builds reads them once
# (test_the_calico_backends_watch_of_the_pods_is_granted sends it).
# (`get` on nodes was granted to every agent for --lease-candidates, which the rendered
# DaemonSet did not pass; it now comes with render_manifests(lease_candidates=...) alone.)
NOT_SENT_HERE: set[tuple[str | None, str, str]] = {(None, "pods", "watch")}


def test_the_parser_reads_requests_as_rbac_does() -> None:
    assert _request("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/x") \
        == Request("get", "coordination.k8s.io", "leases", "kube-system", "x")
    assert _request("POST", "/api/v1/namespaces/default/events") \
        == Request("create", "", "events", "default", None)
    assert _request("GET", "/apis/crd.projectcalico.org/v1/ippools?limit=5") \
        == Request("list", "crd.projectcalico.org", "ippools", None, None)
    assert _request("PATCH", "/api/v1/nodes/node-a") == Request("patch", "", "nodes", None,
                                                                 "node-a")
    assert _request("GET", "/apis/projectcalico.org/v3") is None
    # and the authorizer refuses what is not granted
    rule = {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"],
            "verbs": ["get"]}
    assert _allows("ns", rule, Request("get", "", "configmaps", "ns", "a"))
    assert not _allows("ns", rule, Request("get", "", "configmaps", "ns", "b"))
    assert not _allows("ns", rule, Request("get", "", "configmaps", "other", "a"))
    assert not _allows("ns", rule, Request("patch", "", "configmaps", "ns", "a"))
    assert not _allows("ns", rule, Request("list", "", "configmaps", "ns", None))


def test_calico_agent_sends_only_what_its_rbac_grants(
    server: EmulatedApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for resource in server.calico:  # type: ignore[attr-defined]
        group_version = resource.rpartition("/")[0]
        if resource.endswith("/ippools"):
            server.put(resource, {"apiVersion": group_version, "kind": "IPPool",
                                  "metadata": {"name": "default-ipv4-ippool"},
                                  "spec": {"cidr": "10.42.0.0/16", "natOutgoing": True}})
            # A block the node holds in a pool selecting no node: the Namespaces' and
            # Pods' annotations are read (do they name the pool?).
            server.put(resource, {"apiVersion": group_version, "kind": "IPPool",
                                  "metadata": {"name": "parked"},
                                  "spec": {"cidr": "10.70.0.0/16", "nodeSelector": "!all()"}})
        if resource.endswith("/felixconfigurations"):  # the Nodes are listed for it
            server.put(resource, {"apiVersion": group_version, "kind": "FelixConfiguration",
                                  "metadata": {"name": "default"},
                                  "spec": {"natOutgoingExclusions": "IPPoolsAndHostIPs"}})
    server.put(AFFINITIES, {"apiVersion": "crd.projectcalico.org/v1", "kind": "BlockAffinity",
                            "metadata": {"name": "node-10-70-0-0-26"},
                            "spec": {"node": NODE, "cidr": "10.70.0.0/26",
                                     "state": "confirmed"}})
    # The agent in a namespace of its own: its Lease and Role there, Events in default.
    base = (HEADER + "backends: [calico]\ncni:\n  calico: {}\nagent:\n  namespace: k3snet-system\n"
            + DESTINATIONS)
    # Two pools of k3snet's, then one deleted (all of them would be a teardown, refused)
    # and the other, changed meanwhile, repaired.
    # the pools of the API in use (v3 where it is served)
    pools = [r for r in server.calico if r.endswith("/ippools")][-1]  # type: ignore[attr-defined]

    def drift() -> None:
        found = server.objects(pools)
        mine = [p for p in found if p["metadata"]["name"].endswith("-20-0-0-16")]
        assert len(mine) == 1, [p["metadata"]["name"] for p in found]
        pool = mine[0]
        pool["spec"]["disabled"] = False
        # and without disableBGPExport, as before Calico's upgrade to v3.21: the IPPool
        # CRD is read (does its schema drop the field?)
        del pool["spec"]["disableBGPExport"]
        server.put(pools, pool)

    requests, objs, namespace = _run_as_rendered(
        server, tmp_path, monkeypatch,
        (base + "  - cidr: 172.30.0.0/16\n    masquerade: false\n", base), drift)
    assert namespace == "k3snet-system"
    verbs = {(r.resource, r.verb, r.namespace) for r in requests}
    assert {("ippools", "create", None), ("ippools", "delete", None), ("ippools", "patch", None),
            ("felixconfigurations", "list", None), ("blockaffinities", "list", None),
            ("nodes", "list", None), ("customresourcedefinitions", "get", None),
            ("namespaces", "list", None), ("pods", "list", None),
            ("leases", "create", namespace),
            ("nodes", "patch", None), ("events", "create", "default")} <= verbs
    assert _denied(requests, objs, namespace) == []
    assert set(_unused(requests, objs, namespace)) <= NOT_SENT_HERE


def test_cilium_agent_sends_only_what_its_rbac_grants(
    server: EmulatedApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.put(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": "cilium-config", "namespace": "kube-system"},
                            "data": {"enable-ipv4-masquerade": "true",
                                     "cluster-pool-ipv4-cidr": "10.42.0.0/16",
                                     "kube-proxy-replacement": "true",
                                     "enable-ipv4-egress-gateway": "true"}})
    _cni_daemonset(server, "kube-system", "cilium")
    # A CiliumNodeConfig selecting some nodes: the Nodes' labels are listed.
    server.put("cilium.io/v2/ciliumnodeconfigs", {
        "apiVersion": "cilium.io/v2", "kind": "CiliumNodeConfig",
        "metadata": {"name": "edge", "namespace": "kube-system"},
        "spec": {"nodeSelector": {"matchLabels": {"zone": "edge"}},
                 "defaults": {"enable-ipv4-masquerade": "true"}}})
    # Cilium's agent DaemonSet as Helm's ipMasqAgent.enabled=true renders it: read (get).
    server.put("apps/v1/daemonsets", cilium_daemonset(ip_masq_agent=True))
    base = HEADER + "backends: [cilium]\n"
    # eBPF masquerading with an ip-masq-agent list that k3snet creates, changes, then
    # deletes (k3snet keeps its keys of cilium-config: giving all back would be a teardown).
    cni = ("cni:\n  allowDisruptive: true\n  cilium:\n    bpfMasquerade: true\n"
           "    ipMasqAgent: true\n")
    requests, objs, namespace = _run_as_rendered(
        server, tmp_path, monkeypatch,
        (base + DESTINATIONS + cni + "    nonMasqueradeCIDRs: [10.42.0.0/16, 172.20.0.0/16]\n",
         base + DESTINATIONS + cni
         + "    nonMasqueradeCIDRs: [10.42.0.0/16, 172.20.0.0/16, 172.21.0.0/16]\n",
         base + "destinations: []\n" + cni))
    sent = {(r.resource, r.verb, r.name) for r in requests}
    assert {("configmaps", "create", None), ("configmaps", "patch", "ip-masq-agent"),
            ("configmaps", "delete", "ip-masq-agent"), ("daemonsets", "get", "cilium")} <= sent
    assert {("ciliumnodeconfigs", "list"), ("ciliumegressgatewaypolicies", "list"),
            ("nodes", "list"), ("ciliumnodes", "list")} <= {(r.resource, r.verb)
                                                            for r in requests}
    assert _denied(requests, objs, namespace) == []
    assert set(_unused(requests, objs, namespace)) <= NOT_SENT_HERE


def test_flannel_configmap_agent_sends_only_what_its_rbac_grants(
    server: EmulatedApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.put(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": "kube-flannel-cfg", "namespace": "kube-flannel"},
                            "data": {"net-conf.json": '{"Network": "10.42.0.0/16", '
                                                      '"Backend": {"Type": "vxlan"}}'}})
    _cni_daemonset(server, "kube-flannel", "kube-flannel-ds")
    base = (HEADER + "backends:\n  flannel:\n    configmap: kube-flannel/kube-flannel-cfg\n"
            + DESTINATIONS)
    cni = ("cni:\n  allowDisruptive: true\n  flannel:\n    backend:\n      type: vxlan\n"
           "      options: {Port: 4789}\n")
    requests, objs, namespace = _run_as_rendered(
        server, tmp_path, monkeypatch, (base + cni, base + cni.replace("4789", "4790")))
    assert ("configmaps", "get") in {(r.resource, r.verb) for r in requests}
    assert _denied(requests, objs, namespace) == []
    assert set(_unused(requests, objs, namespace)) <= NOT_SENT_HERE


@pytest.mark.parametrize("backend", ["calico", "cilium"])
def test_an_agent_without_the_node_report_sends_only_what_its_rbac_grants(
    server: EmulatedApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    # render_manifests(node_report=False): no Node patch, no Event, and their RBAC gone
    # (--no-node-report in the command); the Lease and the backend's objects remain.
    if backend == "cilium":
        server.put(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": "cilium-config", "namespace": "kube-system"},
                                "data": {"enable-ipv4-masquerade": "true",
                                         "cluster-pool-ipv4-cidr": "10.42.0.0/16"}})
        text = (HEADER + "backends: [cilium]\n" + DESTINATIONS
                + "cni:\n  allowDisruptive: true\n  cilium:\n    bpfMasquerade: true\n"
                  "    ipMasqAgent: true\n    nonMasqueradeCIDRs: [10.42.0.0/16, 172.20.0.0/16]\n")
    else:
        for resource in server.calico:  # type: ignore[attr-defined]
            if resource.endswith("/ippools"):
                server.put(resource, {"apiVersion": resource.rpartition("/")[0],
                                      "kind": "IPPool",
                                      "metadata": {"name": "default-ipv4-ippool"},
                                      "spec": {"cidr": "10.42.0.0/16", "natOutgoing": True}})
        text = HEADER + "backends: [calico]\ncni:\n  calico: {}\n" + DESTINATIONS
    requests, objs, namespace = _run_as_rendered(server, tmp_path, monkeypatch, (text,),
                                                 node_report=False)
    (daemonset,) = [o for o in objs if o["kind"] == "DaemonSet"]
    assert "--no-node-report" in daemonset["spec"]["template"]["spec"]["containers"][0][
        "command"]
    sent = {(r.resource, r.verb) for r in requests}
    assert ("leases", "create") in sent
    assert not {("nodes", "patch"), ("events", "create")} & sent
    assert _denied(requests, objs, namespace) == []
    # One pass deletes nothing and may list no Nodes: what it did not send is the
    # backend's alone, none of the report's (get and patch of Nodes, Events).
    unused = _unused(requests, objs, namespace)
    assert not {u[1:3] for u in unused} & {("nodes", "get"), ("nodes", "patch"),
                                           ("events", "create")}, unused


@pytest.mark.parametrize("labelled", [True, False])
def test_lease_candidates_agent_sends_only_what_its_rbac_grants(
    server: EmulatedApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, labelled: bool
) -> None:
    # render_manifests(lease_candidates=...): the agent reads its own Node's labels
    # (get), and competes for the Lease only where the label is.
    server.put("v1/nodes", {"metadata": {"name": NODE, "labels": (
        {"node-role.kubernetes.io/control-plane": "true"} if labelled else {})}})
    server.put(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": "kube-flannel-cfg", "namespace": "kube-flannel"},
                            "data": {"net-conf.json": '{"Network": "10.42.0.0/16", '
                                                      '"Backend": {"Type": "vxlan"}}'}})
    text = (HEADER + "backends:\n  flannel:\n    configmap: kube-flannel/kube-flannel-cfg\n"
            + DESTINATIONS)
    requests, objs, namespace = _run_as_rendered(
        server, tmp_path, monkeypatch, (text,),
        lease_candidates="node-role.kubernetes.io/control-plane")
    sent = {(r.resource, r.verb, r.name) for r in requests}
    assert ("nodes", "get", NODE) in sent
    assert (("leases", "create", None) in sent) is labelled
    assert _denied(requests, objs, namespace) == []
    unused = _unused(requests, objs, namespace)
    assert (None, "nodes", "get") not in unused


def test_a_configmap_a_cilium_variable_comes_from_is_read_and_a_403_names_the_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A variable of Cilium's agent container from a ConfigMap of its namespace
    # (configMapKeyRef) is read for its value: the rendered Role granted get on Cilium's
    # two ConfigMaps alone, so it was a 403 in a cluster. It now grants get (not list nor
    # watch) on every ConfigMap there, as Cilium's chart grants its own agent get, list
    # and watch (Role cilium-config-agent); of another namespace, none. Refused all the
    # same (a Role of an earlier k3snet), the warning names the one rule that has it read,
    # which a Role of that namespace holds as the API server validates it.
    crds = tuple(r for r in CALICO_RESOURCES if r.startswith("crd."))
    with EmulatedApiServer(resources=(*crds, *AGENT_RESOURCES, *CNI_WORKLOADS)) as server:
        server.put("v1/nodes", {"metadata": {"name": NODE}})
        server.put(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": "cilium-config",
                                             "namespace": "kube-system"},
                                "data": {"enable-ipv4-masquerade": "true",
                                         "cluster-pool-ipv4-cidr": "10.42.0.0/16"}})
        daemonset = cilium_daemonset(ip_masq_agent=False)
        daemonset["spec"]["template"]["spec"]["containers"][0]["env"] = [
            {"name": "CILIUM_ENABLE_IPV4_MASQUERADE", "valueFrom": {"configMapKeyRef": {
                "name": "cilium-extra", "key": "masquerade"}}}]
        server.put("apps/v1/daemonsets", daemonset)
        server.put(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": "cilium-extra", "namespace": "kube-system"},
                                "data": {"masquerade": "true"}})
        extra = Request("get", "", "configmaps", "kube-system", "cilium-extra")
        text = HEADER + "backends: [cilium]\ndestinations:\n  - cidr: 192.168.2.0/24\n"
        requests, objs, namespace = _run_as_rendered(server, tmp_path, monkeypatch, (text,))
        assert extra in requests
        assert _denied(requests, objs, namespace) == []
        for obj in objs:
            if obj["kind"] in ("Role", "RoleBinding"):
                assert kubernetes_validate.validate(obj, NEWEST_KUBERNETES_VERSION,
                                                    strict=True)
        granted = _granted(objs, namespace)
        assert not any(_allows(s, g, other) for s, g in granted for other in (
            Request("list", "", "configmaps", "kube-system", None),
            Request("watch", "", "configmaps", "kube-system", None),
            Request("get", "", "configmaps", "default", "cilium-extra"),
            Request("patch", "", "configmaps", "kube-system", "cilium-extra")))
        server.fail(403, plural="configmaps", name="cilium-extra", times=None)
        capsys.readouterr()
        _run_as_rendered(server, tmp_path, monkeypatch, (text,))
    # The agent's log, as its pod's would be.
    (said,) = [line for line in capsys.readouterr().err.splitlines() if "WARNING" in line]
    found = re.search(r"add the rule (\{.*?\}) to a Role in kube-system bound to the account "
                      r"k3snet runs as", said)
    assert found is not None, said
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "k3snet-agent-cilium-extra", "namespace": "kube-system"},
            "rules": [json.loads(found[1])]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "k3snet-agent-cilium-extra", "namespace": "kube-system"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                           "name": "k3snet-agent-cilium-extra"},
               "subjects": [{"kind": "ServiceAccount", "name": AGENT_NAME,
                             "namespace": namespace}]}
    for obj in (role, binding):
        assert kubernetes_validate.validate(obj, NEWEST_KUBERNETES_VERSION, strict=True)
    granted = _granted([role, binding], namespace)
    assert any(_allows(s, g, extra) for s, g in granted)
    assert not any(_allows(s, g, other) for s, g in granted for other in (
        Request("get", "", "configmaps", "kube-system", "coredns"),
        Request("list", "", "configmaps", "kube-system", None)))


def test_the_calico_backends_watch_of_the_pods_is_granted(server: EmulatedApiServer) -> None:
    # The agent run once per spec above lists the Pods and never watches them: the
    # watch a long-running agent sends from its second pass on is checked here against
    # the rendered ClusterRole (a GET with watch=true was read as a list).
    for resource in server.calico:  # type: ignore[attr-defined]
        if resource.endswith("/ippools"):
            version = resource.rpartition("/")[0]
            server.put(resource, {"apiVersion": version, "kind": "IPPool",
                                  "metadata": {"name": "default-ipv4-ippool"},
                                  "spec": {"cidr": "10.42.0.0/16", "natOutgoing": True}})
            server.put(resource, {"apiVersion": version, "kind": "IPPool",
                                  "metadata": {"name": "parked"},
                                  "spec": {"cidr": "10.70.0.0/16", "nodeSelector": "!all()"}})
    server.put(AFFINITIES, {"apiVersion": "crd.projectcalico.org/v1", "kind": "BlockAffinity",
                            "metadata": {"name": "node-10-70-0-0-26"},
                            "spec": {"node": NODE, "cidr": "10.70.0.0/26",
                                     "state": "confirmed"}})
    server.put("v1/pods", {"apiVersion": "v1", "kind": "Pod",
                           "metadata": {"name": "web", "namespace": "default"}})
    spec = (HEADER + "backends: [calico]\ncni:\n  calico: {}\n"
            "agent:\n  namespace: k3snet-system\n" + DESTINATIONS)
    objs = render_manifests(Spec.from_yaml(spec))
    seen = len(server.requests())
    backend = CalicoBackend(api_client=server.api_client(), timeout=10.0)
    backend.observe()
    backend.observe()
    requests = _sent(server, seen)
    pods = [r.verb for r in requests if r.resource == "pods"]
    assert pods == ["list", "watch"], pods
    assert _denied(requests, objs, "k3snet-system") == []
