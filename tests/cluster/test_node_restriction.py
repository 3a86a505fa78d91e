"""The agent's admission policy (``render_manifests(..., node_restriction=True)``).

RBAC lets every node's agent patch any Node, create any Lease in its namespace and any
ConfigMap in Cilium's; the ValidatingAdmissionPolicy limits it to its own node's objects
by the node name the API server puts in a pod-bound token. The shape is checked always
(and validated with ``kubernetes-validate`` from Kubernetes 1.30, whose API has the
policy's v1); what each CEL expression decides is checked with a CEL evaluator in
Python, ``cel-python`` (``celpy``, in the ``dev`` dependency group): those tests are
skipped only where it is not installed.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
import yaml

from k3snet.agent._lease import LeaderElector
from k3snet.agent._report import RESULT_ANNOTATION, STATUS_ANNOTATION
from k3snet.render import manifests
from k3snet.render.manifests import (
    AGENT_NAME,
    LEASE_NAME,
    NEWEST_KUBERNETES_VERSION,
    NODE_NAME_EXTRA,
    NODE_RESTRICTION_NAME,
    dump_manifests,
    render_manifests,
)
from k3snet.spec import AgentSettings, Destination, Spec

pytestmark = pytest.mark.cluster

# ValidatingAdmissionPolicy's v1 (GA) and the token's node name (beta, on by default)
# both came with Kubernetes 1.30.
SINCE = "1.30"
USER = f"system:serviceaccount:kube-system:{AGENT_NAME}"


def _policy(objs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    (policy,) = [o for o in objs if o["kind"] == "ValidatingAdmissionPolicy"]
    (binding,) = [o for o in objs if o["kind"] == "ValidatingAdmissionPolicyBinding"]
    return policy, binding


def _everything(**options: Any) -> list[dict[str, Any]]:
    spec = Spec(destinations=[Destination("192.168.2.0/24")],
                backends=["netlink", "cilium", "calico"])
    return render_manifests(spec, node_restriction=True, **options)


# ---------------------------------------------------------------- shape


def test_the_policy_is_rendered_only_when_asked_for() -> None:
    kinds = {o["kind"] for o in render_manifests(Spec(backends=["cilium"]))}
    assert not kinds & {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}


@pytest.mark.parametrize("version", [SINCE, NEWEST_KUBERNETES_VERSION])
def test_the_policy_and_its_binding_validate_strictly(version: str) -> None:
    for obj in _policy(_everything()):
        (parsed,) = yaml.safe_load_all(dump_manifests([obj]))
        assert kubernetes_validate.validate(parsed, version, strict=True) == version


def test_the_policy_binds_to_the_agents_service_account_and_denies() -> None:
    policy, binding = _policy(render_manifests(
        Spec(agent=AgentSettings(namespace="k3snet-system")), node_restriction=True))
    assert policy["metadata"]["name"] == binding["metadata"]["name"] == NODE_RESTRICTION_NAME
    assert binding["spec"] == {"policyName": NODE_RESTRICTION_NAME, "validationActions": ["Deny"]}
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert policy["spec"]["matchConditions"] == [{
        "name": "k3snet-agent",
        "expression": f"request.userInfo.username == 'system:serviceaccount:k3snet-system:"
                      f"{AGENT_NAME}'"}]


def _rules(objs: list[dict[str, Any]]) -> dict[str, list[str]]:
    policy, _ = _policy(objs)
    return {r["resources"][0]: r["operations"] for r in policy["spec"]["matchConstraints"]
            ["resourceRules"]}


def test_the_policy_matches_what_the_agents_rbac_lets_it_write_beyond_its_node() -> None:
    assert _rules(_everything()) == {"nodes": ["UPDATE"], "events": ["CREATE"],
                                     "leases": ["CREATE", "UPDATE"], "configmaps": ["CREATE"]}
    # no node report: neither Nodes nor Events; no cluster-wide backend: no Lease
    assert _rules(render_manifests(Spec(backends=["cilium"]), node_report=False,
                                   node_restriction=True)) == {
        "leases": ["CREATE", "UPDATE"], "configmaps": ["CREATE"]}
    assert _rules(render_manifests(Spec(), node_restriction=True)) == {
        "nodes": ["UPDATE"], "events": ["CREATE"]}


def test_an_agent_without_api_access_gets_no_policy() -> None:
    objs = render_manifests(Spec(), node_report=False, node_restriction=True)
    assert [o["kind"] for o in objs] == ["ServiceAccount", "ConfigMap", "DaemonSet"]


def test_the_policys_constants_are_the_agents() -> None:
    assert manifests._REPORT_ANNOTATIONS == (STATUS_ANNOTATION, RESULT_ANNOTATION)
    assert NODE_NAME_EXTRA == "authentication.kubernetes.io/node-name"
    # the Lease's holder is the agent's node name (K3SNET_NODE_NAME, spec.nodeName)
    elector = LeaderElector(object(), "node-a")
    assert elector.identity == "node-a"


def test_the_cli_renders_the_policy(tmp_path: Any) -> None:
    from k3snet.cli import main  # noqa: PLC0415 - only this test runs the CLI

    spec = tmp_path / "spec.yaml"
    spec.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n")
    out = tmp_path / "out"
    assert main(["render", "manifests", "-f", str(spec), "--node-restriction",
                 "-o", str(out)]) == 0
    kinds = [o["kind"] for o in yaml.safe_load_all((out / "k3snet.yaml").read_text())]
    assert "ValidatingAdmissionPolicy" in kinds


# ---------------------------------------------------------------- what the CEL decides


class _Admission:
    """The API server's evaluation of one ValidatingAdmissionPolicy, in celpy: the
    match conditions, the variables, then every validation; an error denies (the
    policy's failurePolicy is Fail)."""

    def __init__(self, policy: dict[str, Any]) -> None:
        self.celpy = pytest.importorskip("celpy")
        self.env = self.celpy.Environment()
        self.spec = policy["spec"]

    def _run(self, expression: str, activation: dict[str, Any]) -> Any:
        program = self.env.program(self.env.compile(expression))
        return program.evaluate(activation)

    def denials(self, request: dict[str, Any], obj: dict[str, Any] | None,
                old: dict[str, Any] | None) -> list[str] | None:
        """``None`` when the policy does not apply; else the messages of the failed
        validations (empty: admitted)."""
        cel = self.celpy.json_to_cel
        rules = {r["resources"][0]: r["operations"]
                 for r in self.spec["matchConstraints"]["resourceRules"]}
        if request["operation"] not in rules.get(request["resource"]["resource"], []):
            return None
        activation: dict[str, Any] = {"request": cel(request), "object": cel(obj),
                                      "oldObject": cel(old)}
        for condition in self.spec["matchConditions"]:
            if not self._run(condition["expression"], activation):
                return None
        variables = {v["name"]: self._run(v["expression"], activation)
                     for v in self.spec["variables"]}
        activation["variables"] = self.celpy.celtypes.MapType(
            {self.celpy.celtypes.StringType(k): v for k, v in variables.items()})
        denied = []
        for check in self.spec["validations"]:
            try:
                passed = self._run(check["expression"], activation)
            except Exception:  # noqa: BLE001 - any evaluation error denies (Fail)
                passed = False
            if not (isinstance(passed, self.celpy.celtypes.BoolType) and bool(passed)):
                denied.append(check["message"])
        return denied


@pytest.fixture(scope="module")
def admission() -> _Admission:
    return _Admission(_policy(_everything())[0])


def _request(resource: str, operation: str, node: str | None = "node-a", user: str = USER,
             group: str = "") -> dict[str, Any]:
    user_info: dict[str, Any] = {"username": user}
    if node is not None:
        user_info["extra"] = {NODE_NAME_EXTRA: [node],
                              "authentication.kubernetes.io/pod-name": ["k3snet-agent-x"]}
    return {"operation": operation, "userInfo": user_info,
            "resource": {"group": group, "version": "v1", "resource": resource}}


NODE: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Node",
    "metadata": {"name": "node-a", "labels": {"kubernetes.io/os": "linux"},
                 "annotations": {"flannel.alpha.coreos.com/public-ip": "192.168.1.10",
                                 STATUS_ANNOTATION: "ok"}},
    "spec": {"podCIDR": "10.42.0.0/24"},
}


def _reported(node: dict[str, Any], **annotations: str) -> dict[str, Any]:
    """``node`` after the agent's merge patch of its report's annotations."""
    new = copy.deepcopy(node)
    new["metadata"].setdefault("annotations", {}).update(annotations)
    return new


def test_the_agent_may_write_its_report_on_its_own_node(admission: _Admission) -> None:
    new = _reported(NODE, **{STATUS_ANNOTATION: "failed", RESULT_ANNOTATION: "{}"})
    assert admission.denials(_request("nodes", "UPDATE"), new, NODE) == []
    # a Node without any annotation yet, without labels
    bare = {"metadata": {"name": "node-a"}, "spec": {}}
    assert admission.denials(_request("nodes", "UPDATE"), _reported(bare, **{
        STATUS_ANNOTATION: "ok"}), bare) == []
    # and take it off again
    assert admission.denials(_request("nodes", "UPDATE"), bare, _reported(bare, **{
        STATUS_ANNOTATION: "ok"})) == []


NODE_MESSAGE = ("the k3snet agent may change only its own Node, and there only the "
                f"{STATUS_ANNOTATION} and {RESULT_ANNOTATION} annotations")


def test_the_agent_may_not_patch_another_node(admission: _Admission) -> None:
    other = _reported(NODE, **{STATUS_ANNOTATION: "x"})
    assert admission.denials(_request("nodes", "UPDATE", node="node-b"), other, NODE) == [
        NODE_MESSAGE]


@pytest.mark.parametrize("change", [
    "a label", "a label removed", "a taint", "unschedulable", "another annotation",
    "another annotation removed", "a finalizer", "an owner",
])
def test_the_agent_may_change_nothing_but_its_report_on_its_own_node(
        admission: _Admission, change: str) -> None:
    new = _reported(NODE, **{STATUS_ANNOTATION: "failed"})
    meta = new["metadata"]
    if change == "a label":
        meta["labels"]["k3snet.io/profile"] = "edge"
    elif change == "a label removed":
        del meta["labels"]
    elif change == "a taint":
        new["spec"]["taints"] = [{"key": "k", "effect": "NoSchedule"}]
    elif change == "unschedulable":
        new["spec"]["unschedulable"] = True
    elif change == "another annotation":
        meta["annotations"]["flannel.alpha.coreos.com/public-ip"] = "203.0.113.9"
    elif change == "another annotation removed":
        del meta["annotations"]["flannel.alpha.coreos.com/public-ip"]
    elif change == "a finalizer":
        meta["finalizers"] = ["example.com/keep"]
    else:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": "x",
                                    "uid": "1"}]
    assert admission.denials(_request("nodes", "UPDATE"), new, NODE) == [NODE_MESSAGE]


def test_a_token_without_a_node_name_is_refused(admission: _Admission) -> None:
    new = _reported(NODE, **{STATUS_ANNOTATION: "failed"})
    denied = admission.denials(_request("nodes", "UPDATE", node=None), new, NODE)
    assert denied is not None
    assert denied[0].startswith("the k3snet agent's token names no node")


def test_other_users_are_not_judged(admission: _Admission) -> None:
    new = _reported(NODE, **{STATUS_ANNOTATION: "failed"})
    new["spec"]["unschedulable"] = True
    assert admission.denials(_request("nodes", "UPDATE", node=None,
                                      user="system:node:node-b"), new, NODE) is None
    assert admission.denials(_request("nodes", "UPDATE", user=USER.replace(
        "kube-system", "other")), new, NODE) is None


def _event(kind: str, name: str) -> dict[str, Any]:
    return {"metadata": {"name": f"{name}.1", "namespace": "default"},
            "involvedObject": {"apiVersion": "v1", "kind": kind, "name": name, "uid": name},
            "reason": "K3snetOK", "message": "ok"}


def test_the_agent_records_events_about_its_own_node_only(admission: _Admission) -> None:
    request = _request("events", "CREATE")
    assert admission.denials(request, _event("Node", "node-a"), None) == []
    message = ["the k3snet agent may record Events about its own Node only"]
    assert admission.denials(request, _event("Node", "node-b"), None) == message
    assert admission.denials(request, _event("Pod", "node-a"), None) == message


def _lease(holder: str | None, name: str = LEASE_NAME) -> dict[str, Any]:
    spec: dict[str, Any] = {"leaseDurationSeconds": 15}
    if holder is not None:
        spec["holderIdentity"] = holder
    return {"metadata": {"name": name, "namespace": "kube-system"}, "spec": spec}


LEASE_MESSAGE = [f"the k3snet agent may write only the Lease {LEASE_NAME}, as its own node, "
                 "and give it up only when its node holds it"]


@pytest.mark.parametrize(("operation", "old", "new", "allowed"), [
    ("CREATE", None, _lease("node-a"), True),
    ("CREATE", None, _lease("node-b"), False),  # as another node
    ("CREATE", None, _lease("node-a", name="kube-scheduler"), False),  # another Lease
    ("UPDATE", _lease("node-a"), _lease("node-a"), True),  # renewed
    ("UPDATE", _lease("node-b"), _lease("node-a"), True),  # taken over once expired
    ("UPDATE", _lease(None), _lease("node-a"), True),
    ("UPDATE", _lease("node-a"), _lease(None), True),  # given up
    ("UPDATE", _lease("node-a"), _lease(""), True),
    ("UPDATE", _lease("node-b"), _lease(None), False),  # another node's given up
    ("UPDATE", _lease("node-a"), _lease("node-b"), False),  # handed to another node
])
def test_the_agent_holds_the_lease_as_its_own_node_only(
        admission: _Admission, operation: str, old: dict[str, Any] | None,
        new: dict[str, Any], allowed: bool) -> None:
    request = _request("leases", operation, group="coordination.k8s.io")
    assert admission.denials(request, new, old) == ([] if allowed else LEASE_MESSAGE)


def test_the_agent_creates_no_configmap_but_the_ip_masq_agent_one(
        admission: _Admission) -> None:
    request = _request("configmaps", "CREATE")

    def configmap(name: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": "kube-system"}, "data": {}}

    assert admission.denials(request, configmap("ip-masq-agent"), None) == []
    assert admission.denials(request, configmap("coredns-custom"), None) == [
        "the k3snet agent may create the ConfigMap ip-masq-agent only"]
