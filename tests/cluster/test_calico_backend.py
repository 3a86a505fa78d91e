"""The calico backend: IPPool resources through the real kubernetes client (emulated API)."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import pytest

from k3snet.backends import kit
from k3snet.backends.calico import (
    BGP_EXPORT_RETRY,
    CalicoBackend,
    _Run,
    calico_metadata,
    disruptive_changes,
    disruptive_fields,
    pool_from_resource,
)
from k3snet.errors import ApplyError, BackendError, ModelError, PlanError, RollbackError
from k3snet.model.cni import CalicoNatDestination, CalicoPodCIDR, CalicoPools, IPPool, pool_name
from k3snet.model.state import State, object_from_dict
from k3snet.planner import Change, Plan, plan
from k3snet.spec import (
    Cluster,
    Destination,
    MasqueradePolicy,
    Spec,
    compile_ippools,
    nat_exemptions,
)
from k3snet.spec import compile as compile_spec
from k3snet.testing import run_conformance
from k3snet.testing.kube import CALICO_RESOURCES, EmulatedApiServer, ippools

pytestmark = pytest.mark.cluster

CRD = "crd.projectcalico.org/v1/ippools"
V3 = "projectcalico.org/v3/ippools"
LABEL = {"app.kubernetes.io/managed-by": "k3snet"}


def _pool_resource(name: str, spec: dict[str, Any], *, api: str = "crd.projectcalico.org/v1",
                   labels: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if labels is not None:
        metadata["labels"] = labels
    return {"apiVersion": api, "kind": "IPPool", "metadata": metadata, "spec": spec}


# The pools a K3s cluster with Calico has before k3snet: the default pool, an
# operator-made pool that overlaps addresses the strategies draw, and one k3snet
# cannot model (a CIDR with host bits): all must stay exactly as they are.
FOREIGN = (
    _pool_resource("default-ipv4-ippool", {"cidr": "10.42.0.0/16", "natOutgoing": True,
                                           "ipipMode": "Always", "blockSize": 26,
                                           "nodeSelector": "all()",
                                           "allowedUses": ["Workload", "Tunnel"]},
                   labels={"app.kubernetes.io/managed-by": "tigera-operator"}),
    _pool_resource("legacy-lan", {"cidr": "192.168.2.0/25", "disabled": True}),
    _pool_resource("broken", {"cidr": "10.77.0.1/16", "natOutgoing": True}),
)


@pytest.fixture
def seeded(api_server: EmulatedApiServer) -> EmulatedApiServer:
    """The foreign pools k3snet can read (an unreadable one blocks every new pool)."""
    for resource in FOREIGN[:2]:
        api_server.put(CRD, resource)
    return api_server


@pytest.fixture
def seeded_all(api_server: EmulatedApiServer) -> EmulatedApiServer:
    """Every foreign pool of :data:`FOREIGN`, the unreadable one too."""
    for resource in FOREIGN:
        api_server.put(CRD, resource)
    return api_server


def _foreign_snapshot(server: EmulatedApiServer, resource: str = CRD) -> list[dict[str, Any]]:
    return [o for o in server.objects(resource)
            if (o["metadata"].get("labels") or {}) != LABEL]


def _owned_snapshot(server: EmulatedApiServer, resource: str = CRD) -> dict[str, Any]:
    return {o["metadata"]["name"]: o["spec"] for o in server.objects(resource)
            if (o["metadata"].get("labels") or {}) == LABEL}


def _pools(objects: Iterable[object]) -> dict[str, IPPool]:
    return {p.name: p for p in objects if isinstance(p, IPPool)}


def _backend(client: Any, **options: Any) -> CalicoBackend:
    options.setdefault("api", "crd")  # the emulator serves both APIs; these tests seed the CRDs
    # A generous timeout: on a loaded machine the emulator may take longer than half a
    # second. The timeout test sets a short one for the request it hangs.
    options.setdefault("timeout", 10.0)
    return CalicoBackend(api_client=client, **options)


# ---------------------------------------------------------------- conformance


def test_crd_backend_conforms_and_never_touches_foreign_pools(
    seeded_all: EmulatedApiServer, api_client: Any
) -> None:
    foreign = _foreign_snapshot(seeded_all)
    run_conformance(lambda: _backend(api_client, allow_disruptive=True), objects=ippools(),
                    max_examples=20,
                    reopen=lambda _: _backend(api_client, allow_disruptive=True))
    assert _foreign_snapshot(seeded_all) == foreign  # byte-equal, resourceVersions included
    assert _owned_snapshot(seeded_all) == {}


def test_v3_backend_found_by_discovery_conforms(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    api_server.put(V3, _pool_resource("default-ipv4-ippool", {"cidr": "10.42.0.0/16",
                                                               "natOutgoing": True},
                                      api="projectcalico.org/v3"))
    backend = _backend(api_client, api="auto")
    assert backend.api == ("projectcalico.org", "v3")
    run_conformance(lambda: _backend(api_client, api="auto", allow_disruptive=True),
                    objects=ippools(), max_examples=8)
    assert api_server.objects(CRD) == []


def test_auto_falls_back_to_the_crd_api() -> None:
    with EmulatedApiServer(resources=[CRD]) as server:
        assert _backend(server.api_client(), api="auto").api == ("crd.projectcalico.org", "v1")


def test_missing_calico_api_is_a_clear_error() -> None:
    with EmulatedApiServer(resources=[]) as server:
        backend = _backend(server.api_client())
        with pytest.raises(BackendError, match=r"list IPPools \(crd.projectcalico.org/v1\): not "
                                               r"found \(404\).*is Calico installed\?"):
            backend.observe()


# ---------------------------------------------------------------- the spec as pools


def test_compile_turns_the_masquerade_policy_into_pools() -> None:
    spec = Spec(destinations=[
        Destination("192.168.2.0/24", exclude=["192.168.2.8/29", "192.168.2.16/29"]),
        Destination("172.20.0.0/16", masquerade=False),
    ])
    pools = _pools(compile_ippools(spec))
    # Only exemptions become pools (disabled ones): never an enabled pod pool.
    assert sorted(pools) == [
        "k3snet-nonat-172-20-0-0-16",
        "k3snet-nonat-192-168-2-16-29",
        "k3snet-nonat-192-168-2-8-29",
    ]
    exempt = pools["k3snet-nonat-192-168-2-8-29"]
    assert exempt.disabled
    assert not exempt.nat_outgoing
    assert exempt.block_size == 29  # a pool is at least one block
    expectations = {o.describe() for o in compile_ippools(spec).owned if o.expectation}
    assert expectations == {
        "calico every IPPool readable",
        "calico pod CIDR 10.42.0.0/16 is a pool natOutgoing",
        "calico masquerades pods to 192.168.2.0/24 except 192.168.2.8/29, 192.168.2.16/29",
    }
    assert compile_ippools(spec) == compile_ippools(spec)  # deterministic


def test_compile_mode_all_and_off() -> None:
    spec = Spec(
        cluster=Cluster(pod_cidrs=["10.42.0.0/16", "fd00:42::/56"],
                        service_cidrs=["10.43.0.0/16", "fd00:43::/112"]),
        masquerade=MasqueradePolicy("all", non_masquerade_cidrs=[
            "10.0.0.0/8", "169.254.0.0/16", "fd00::/8"]),
    )
    exempt = nat_exemptions(spec)
    # The pod CIDRs are pools already and link-local cannot be a pool: cut out of the ranges.
    assert all(not e.overlaps(p) for e in exempt for p in spec.cluster.pod_cidrs
               if e.version == p.version)
    assert not any(str(e).startswith("169.254.") for e in exempt)
    assert sum(e.num_addresses for e in exempt if e.version == 4) == 2**24 - 2**16
    assert all(p.disabled for p in _pools(compile_ippools(spec)).values())
    pods = [o for o in compile_ippools(spec) if isinstance(o, CalicoPodCIDR)]
    assert [(str(p.cidr), p.nat_outgoing) for p in pods] == [("10.42.0.0/16", True),
                                                             ("fd00:42::/56", True)]
    off = Spec(destinations=[Destination("192.168.2.0/24", masquerade=False)],
               masquerade=MasqueradePolicy("off"))
    assert _pools(compile_ippools(off)) == {}
    assert [(str(o.cidr), o.nat_outgoing) for o in compile_ippools(off)
            if isinstance(o, CalicoPodCIDR)] == [("10.42.0.0/16", False)]
    # In mode off nothing is masqueraded: no destination expects Calico's NAT.
    assert not [o for o in compile_ippools(off) if isinstance(o, CalicoNatDestination)]


def test_the_default_pool_meets_the_pod_cidr(seeded: EmulatedApiServer,
                                             api_client: Any) -> None:
    backend = _backend(api_client)
    spec = Spec(destinations=[Destination("192.168.3.0/24", masquerade=False)])
    p = plan(backend.observe(), compile_ippools(spec))
    assert [str(c) for c in p] == ["+ ippool k3snet-nonat-192-168-3-0-24 192.168.3.0/24 "
                                   "disabled blockSize=26 disableBGPExport"]
    assert [(n.status, n.wanted.describe()) for n in p.notes] == [
        ("met", "calico pod CIDR 10.42.0.0/16 is a pool natOutgoing")]
    backend.apply(p)
    again = plan(backend.observe(), compile_ippools(spec))
    assert again.empty
    assert not again.conflicts
    # An exemption already covered by a foreign pool is met too, not duplicated.
    covered = Spec(destinations=[Destination("192.168.2.0/24", exclude=["192.168.2.0/26"])])
    notes = plan(backend.observe(), compile_ippools(covered)).notes
    assert ("met", "legacy-lan") in [(n.status, *_pools([n.foreign])) for n in notes]


def test_a_dual_stack_spec_judges_each_pool_by_its_familys_block_size(
        api_server: EmulatedApiServer, api_client: Any) -> None:
    # A dual-stack cluster whose pools were made with blockSize 24 and 120.
    for name, cidr, block in (("default-ipv4-ippool", "10.42.0.0/16", 24),
                              ("default-ipv6-ippool", "fd42::/56", 120)):
        api_server.put(CRD, _pool_resource(name, {"cidr": cidr, "natOutgoing": True,
                                                  "blockSize": block}))
    backend = _backend(api_client)
    spec = Spec.from_dict({"cluster": {"podCIDRs": ["10.42.0.0/16", "fd42::/56"],
                                       "serviceCIDRs": ["10.43.0.0/16", "fd43::/112"]},
                           "cni": {"calico": {"blockSize": {"ipv4": 24, "ipv6": 120}}}})
    wanted = compile_spec(spec).only(backend.capabilities)
    p = plan(backend.observe(), wanted)
    assert p.empty
    assert not p.conflicts
    assert sorted(n.wanted.describe() for n in p.notes if n.status == "met") == [
        "calico pod CIDR 10.42.0.0/16 is a pool natOutgoing blockSize=24",
        "calico pod CIDR fd42::/56 is a pool natOutgoing blockSize=120"]
    # The IPv6 pool with Calico's default block instead: that pool alone is a conflict.
    other = Spec.from_dict({**spec.to_dict(), "cni": {"calico": {"blockSize": {"ipv6": 122}}}})
    (conflict,) = plan(backend.observe(),
                       compile_spec(other).only(backend.capabilities)).conflicts
    assert conflict.wanted.describe() == ("calico pod CIDR fd42::/56 is a pool natOutgoing "
                                          "blockSize=122")
    assert "blockSize 120 (the spec wants 122)" in (conflict.reason or "")


# ---------------------------------------------------------------- minimal writes


def test_a_change_is_a_server_side_apply_by_k3snet(
    seeded: EmulatedApiServer, api_client: Any
) -> None:
    backend = _backend(api_client)
    pool = IPPool("k3snet-pods-a", "10.100.0.0/16", nat_outgoing=True)
    backend.apply(plan(backend.observe(), State(owned=[pool])))
    method, path, body = seeded.requests()[-1]
    assert (method, path) == ("POST", "/apis/crd.projectcalico.org/v1/ippools")  # create: POST
    # Someone (Calico's API server, an admin) adds a field k3snet does not model.
    stored = seeded.get(CRD, "k3snet-pods-a")
    assert stored is not None
    stored["spec"]["someFutureField"] = "kept"
    read_version = seeded.put(CRD, stored)["metadata"]["resourceVersion"]
    changed = IPPool("k3snet-pods-a", "10.100.0.0/16", nat_outgoing=False, vxlan_mode="Always")
    p = plan(backend.observe(), State(owned=[changed]))
    assert [c.action for c in p] == ["replace"]
    assert disruptive_changes(p) == ()
    result = backend.apply(p)
    assert result.operations == 3  # two lists (pools, FelixConfigurations), one apply
    method, path, body = seeded.requests()[-1]
    assert (method, path) == ("PATCH", "/apis/crd.projectcalico.org/v1/ippools/k3snet-pods-a")
    assert body["spec"] == changed.to_spec()  # the whole configuration k3snet manages
    assert body["metadata"]["resourceVersion"] == read_version  # conditional on what was read
    after = seeded.get(CRD, "k3snet-pods-a")
    assert after is not None
    assert after["spec"]["someFutureField"] == "kept"
    managers = {e["manager"]: e for e in after["metadata"]["managedFields"]}
    assert managers["k3snet"]["operation"] == "Apply"
    assert "f:natOutgoing" in managers["k3snet"]["fieldsV1"]["f:spec"]
    assert backend.observe().owned == {changed}


# Another manager takes natOutgoing of a pool k3snet created: with its own server-side
# apply (forced), or with `kubectl edit` (an Update, merge patch).
_TAKEOVERS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "admin": ({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
               "metadata": {"name": "k3snet-pods-a"}, "spec": {"natOutgoing": False}},
              {"force": True, "_content_type": "application/apply-patch+yaml"}),
    "kubectl-edit": ({"spec": {"natOutgoing": False}},
                     {"_content_type": "application/merge-patch+json"}),
}


@pytest.mark.parametrize("manager", sorted(_TAKEOVERS))
def test_a_field_another_manager_took_is_a_conflict_never_forced(
    seeded: EmulatedApiServer, api_client: Any, manager: str
) -> None:
    from kubernetes import client  # noqa: PLC0415 - optional dependency

    backend = _backend(api_client)
    pool = IPPool("k3snet-pods-a", "10.100.0.0/16", nat_outgoing=True)
    backend.apply(plan(backend.observe(), State(owned=[pool])))
    body, how = _TAKEOVERS[manager]
    client.CustomObjectsApi(api_client).patch_cluster_custom_object(
        "crd.projectcalico.org", "v1", "ippools", "k3snet-pods-a", body,
        field_manager=manager, **how)
    taken = backend.observe()
    (owned,) = taken.owned
    p = plan(taken, State(owned=[IPPool("k3snet-pods-a", "10.100.0.0/16", nat_outgoing=True,
                                        vxlan_mode="Always")]))
    with pytest.raises(ApplyError, match=r'apply IPPool k3snet-pods-a .*conflict \(409\).*'
                                         f'conflict with "{manager}": .spec.natOutgoing'):
        backend.apply(p)
    assert backend.observe().owned == {owned}  # nothing changed, never forced


def test_a_pool_k3snet_created_changes_in_place_though_its_create_holds_every_field(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    # The real API server tells managers apart by name and operation: the POST that
    # created the pool left an Update entry for "k3snet", and a non-forced apply by
    # "k3snet" conflicts with it (kubernetes/kubernetes#107417). The emulator does so too.
    backend = _backend(api_client)
    pool = IPPool("k3snet-nonat-192-168-5-0-24", "192.168.5.0/24", disabled=True)
    backend.apply(plan(backend.observe(), State(owned=[pool])))
    stored = api_server.get(CRD, pool.name)
    assert stored is not None
    assert [(e["manager"], e["operation"]) for e in stored["metadata"]["managedFields"]] == [
        ("k3snet", "Update")]
    changed = IPPool(pool.name, "192.168.5.0/24", disabled=True, disable_bgp_export=True)
    backend.apply(plan(backend.observe(), State(owned=[changed])))
    method, path, _ = api_server.requests()[-1]
    assert (method, path) == ("PATCH", f"/apis/crd.projectcalico.org/v1/ippools/{pool.name}")
    assert backend.observe().owned == {changed}
    # Forced once, from k3snet's own create: the next change needs no force.
    again = IPPool(pool.name, "192.168.5.0/24", disabled=True)
    backend.apply(plan(backend.observe(), State(owned=[again])))
    assert backend.observe().owned == {again}


def test_the_emulator_keeps_managers_apart_by_operation_as_the_api_server_does(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    # What the calico backend's force rests on (kubernetes/kubernetes#107417): a create
    # is an Update entry; a forced apply takes only the fields it changes from it.
    from kubernetes import client  # noqa: PLC0415 - optional dependency

    objects = client.CustomObjectsApi(api_client)
    body = _pool_resource("p", {"cidr": "10.9.0.0/16", "natOutgoing": True})
    objects.create_cluster_custom_object("crd.projectcalico.org", "v1", "ippools", body,
                                         field_manager="me")
    applied = {**body, "spec": {"cidr": "10.9.0.0/16", "natOutgoing": False}}
    with pytest.raises(client.ApiException, match=r'conflict with \\"me\\": .spec.natOutgoing'):
        objects.patch_cluster_custom_object(
            "crd.projectcalico.org", "v1", "ippools", "p", applied, field_manager="me",
            _content_type="application/apply-patch+yaml")
    objects.patch_cluster_custom_object(
        "crd.projectcalico.org", "v1", "ippools", "p", applied, field_manager="me",
        force=True, _content_type="application/apply-patch+yaml")
    stored = api_server.get(CRD, "p")
    assert stored is not None
    owned = {(e["manager"], e["operation"]): sorted(e["fieldsV1"]["f:spec"])
             for e in stored["metadata"]["managedFields"]}
    assert owned == {("me", "Update"): ["f:cidr"], ("me", "Apply"): ["f:cidr", "f:natOutgoing"]}


def test_disruptive_replace_is_marked_and_refused_unless_allowed(
    seeded: EmulatedApiServer, api_client: Any
) -> None:
    backend = _backend(api_client)
    old = IPPool("k3snet-pods-a", "10.100.0.0/16", nat_outgoing=True)
    backend.apply(plan(backend.observe(), State(owned=[old])))
    new = IPPool("k3snet-pods-a", "10.101.0.0/24", nat_outgoing=True, block_size=28)
    p = plan(backend.observe(), State(owned=[new]))
    (change,) = disruptive_changes(p)
    assert disruptive_fields(change) == ("cidr", "blockSize")
    reason = backend.disruptive(change)
    assert reason is not None
    assert "changing IPPool k3snet-pods-a's cidr, blockSize" in reason
    (problem,) = backend.check(p)
    assert reason in problem
    # The hint names the three ways that exist, in the contract's exact words.
    assert ("cni.allowDisruptive: true in the spec, --allow-disruptive on the CLI, or "
            "allow_disruptive=True in the library") in problem
    before = _owned_snapshot(seeded)
    with pytest.raises(PlanError, match="changing IPPool k3snet-pods-a's cidr, blockSize"):
        backend.apply(p)
    assert _owned_snapshot(seeded) == before
    allowed = _backend(api_client, allow_disruptive=True)
    assert allowed.check(p) == ()
    allowed.apply(p)
    methods = [m for m, path, _ in seeded.requests()[-3:]]
    assert methods == ["GET", "DELETE", "POST"]  # list, then delete and re-create
    assert allowed.observe().owned == {new}


def test_a_disruptive_replace_keeps_the_labels_and_annotations_others_added(
    seeded: EmulatedApiServer, api_client: Any
) -> None:
    from kubernetes import client  # noqa: PLC0415 - optional dependency (k3snet[kube])

    backend = _backend(api_client, allow_disruptive=True)
    old = IPPool("k3snet-pods-a", "10.100.0.0/16", nat_outgoing=True)
    backend.apply(plan(backend.observe(), State(owned=[old])))
    # An admin labels and annotates k3snet's pool (as kubectl label / annotate do).
    client.CustomObjectsApi(api_client).patch_cluster_custom_object(
        "crd.projectcalico.org", "v1", "ippools", "k3snet-pods-a",
        {"metadata": {"labels": {"team": "net"}, "annotations": {"owner": "ops@example"}}},
        field_manager="kubectl-label")
    new = attrs.evolve(old, block_size=24)
    backend.apply(plan(backend.observe(), State(owned=[new])))
    metadata = (seeded.get(CRD, "k3snet-pods-a") or {})["metadata"]
    assert metadata["labels"] == {**LABEL, "team": "net"}
    assert metadata["annotations"] == {"owner": "ops@example"}
    assert backend.observe().owned == {new}


def test_a_pool_calicoctl_edited_stays_k3snets(
    seeded: EmulatedApiServer, api_client: Any
) -> None:
    # Written through Calico's v3 API (calicoctl, its API server) in CRD mode, a pool
    # keeps its labels and annotations in the projectcalico.org/metadata annotation
    # and none in metadata.labels (libcalico-go ConvertCalicoResourceToK8sResource).
    backend = _backend(api_client, allow_disruptive=True)
    pool = IPPool("k3snet-nonat-b", "192.168.7.0/24", disabled=True)
    stored = json.dumps({"labels": {**LABEL, "team": "net"}, "annotations": {"a": "b"},
                         "creationTimestamp": None})
    seeded.put(CRD, {"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
                     "metadata": {"name": pool.name,
                                  "annotations": {"projectcalico.org/metadata": stored}},
                     "spec": pool.to_spec()})
    assert pool in backend.observe().owned
    # A disruptive change re-creates it with those labels and annotations, the stored
    # metadata (the deleted pool's) left out.
    smaller = attrs.evolve(pool, block_size=28)
    backend.apply(plan(backend.observe(), State(owned=[smaller])))
    metadata = (seeded.get(CRD, pool.name) or {})["metadata"]
    assert metadata["labels"] == {**LABEL, "team": "net"}
    assert metadata["annotations"] == {"a": "b"}


@pytest.mark.parametrize(("labels", "annotations", "named"), [
    ({"bad key!": "x"}, {}, 'label "bad key!": "x"'),
    ({"team": "x y"}, {}, 'label "team": "x y"'),
    ({"team": "a" * 64}, {}, 'label "team"'),
    ({}, {"no spaces please": "fine value"}, 'annotation "no spaces please"'),
])
def test_a_disruptive_replace_refuses_stored_metadata_the_api_server_refuses_before_writing(
    seeded: EmulatedApiServer, api_client: Any, labels: dict[str, str],
    annotations: dict[str, str], named: str,
) -> None:
    # Calico's projectcalico.org/metadata annotation holds labels and annotations
    # unchecked; the re-creation writes them into metadata, which the API server
    # validates (the emulated one does not): refused after the delete, the pool was gone
    # until the undo. Now refused by check and apply, nothing written.
    backend = _backend(api_client, allow_disruptive=True)
    pool = IPPool("k3snet-nonat-b", "192.168.7.0/24", disabled=True)
    stored = json.dumps({"labels": {**LABEL, **labels}, "annotations": annotations})
    seeded.put(CRD, {"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
                     "metadata": {"name": pool.name,
                                  "annotations": {"projectcalico.org/metadata": stored}},
                     "spec": pool.to_spec()})
    before = seeded.get(CRD, pool.name)
    p = plan(backend.observe(), State(owned=[attrs.evolve(pool, block_size=28)]))
    (problem,) = backend.check(p)
    assert named in problem, problem
    assert "remove it from the pool" in problem
    with pytest.raises(PlanError, match="nothing was changed"):
        backend.apply(p)
    assert seeded.get(CRD, pool.name) == before


@pytest.mark.parametrize("stored", [
    "not json", "[1]", '{"labels": ["x"]}',
    '{"labels": {"team": 1, "app.kubernetes.io/managed-by": "k3snet"}}',
    # Nested deeper than Python's parser goes (well within an annotation's 256 KiB):
    # RecursionError, not ValueError, and every observe of the pools failed with it.
    '{"labels": ' + "[" * 100000 + "]" * 100000 + "}"])
def test_calico_metadata_takes_only_string_labels_from_the_stored_metadata(stored: str) -> None:
    item = {"metadata": {"name": "p", "labels": {"a": "b"},
                         "annotations": {"projectcalico.org/metadata": stored, "c": "d"}}}
    labels, annotations = calico_metadata(item)
    assert annotations == {"c": "d"}
    assert labels in ({"a": "b"}, {"a": "b", **LABEL})


def test_deleting_an_enabled_pool_is_disruptive_disabling_it_is_not(
    seeded: EmulatedApiServer, api_client: Any
) -> None:
    backend = _backend(api_client)
    legacy = IPPool("k3snet-pods-10-42-0-0-16", "10.44.0.0/16", nat_outgoing=True)
    backend.apply(plan(backend.observe(), State(owned=[legacy])))
    delete = plan(backend.observe(), State())
    (problem,) = backend.check(delete)
    assert "deleting enabled IPPool k3snet-pods-10-42-0-0-16" in problem
    disable = plan(backend.observe(), State(owned=[attrs.evolve(legacy, disabled=True)]))
    assert backend.check(disable) == ()
    backend.apply(disable)
    assert backend.check(plan(backend.observe(), State())) == ()  # a disabled one may go


def test_plans_naming_foreign_pools_are_refused(
    seeded_all: EmulatedApiServer, api_client: Any
) -> None:
    seeded = seeded_all
    backend = _backend(api_client)
    before = _foreign_snapshot(seeded)
    foreign = _pools(backend.observe().foreign)["default-ipv4-ippool"]
    with pytest.raises(PlanError, match="default-ipv4-ippool exists and is not k3snet's"):
        backend.apply(Plan(changes=[Change.delete(foreign)]))
    unmodelled = IPPool("broken", "10.78.0.0/16")  # same name as a pool k3snet cannot model
    assert "broken exists and is not k3snet's" in backend.check(
        Plan(changes=[Change.add(unmodelled)]))[0]
    assert _foreign_snapshot(seeded) == before


# ---------------------------------------------------------------- bad input and API failures


def test_invalid_cidrs(seeded_all: EmulatedApiServer, api_client: Any) -> None:
    seeded = seeded_all
    backend = _backend(api_client)
    # A foreign pool k3snet cannot model is not modelled as a pool, and is left alone...
    observed = backend.observe()
    assert "broken" not in _pools(observed.foreign)
    # ... but it is never skipped: it is a conflict naming it, and no pool goes next to it.
    (pools,) = [o for o in observed.foreign if isinstance(o, CalicoPools)]
    assert [name for name, _ in pools.invalid] == ["broken"]
    spec = Spec(destinations=[Destination("172.20.0.0/16", masquerade=False)])
    p = plan(observed, compile_ippools(spec))
    assert p.empty
    reasons = [n.reason or "" for n in p.conflicts]
    assert len(reasons) == 2  # the readability expectation, and the exemption pool
    assert all("IPPool broken: '10.77.0.1/16'" in r for r in reasons)
    with pytest.raises(ModelError, match=r"'10.0.0.0/33' is not a valid CIDR"):
        IPPool("x", "10.0.0.0/33")
    # A pool labelled as k3snet's with an invalid CIDR is an error naming it.
    seeded.put(CRD, _pool_resource("k3snet-pods-z", {"cidr": "10.300.0.0/16"}, labels=LABEL))
    with pytest.raises(BackendError, match=r"IPPool k3snet-pods-z: '10.300.0.0/16' is not a "
                                           r"valid CIDR.*labelled as k3snet's"):
        backend.observe()
    p = Plan(changes=[Change.add(IPPool("k3snet-pods-a", "10.100.0.0/16"))])
    assert "k3snet-pods-z" in backend.check(p)[0]
    with pytest.raises(ApplyError, match=r"k3snet-pods-z.*nothing was changed"):
        backend.apply(p)
    assert seeded.get(CRD, "k3snet-pods-a") is None


def _three_pools() -> State:
    return State(owned=[
        IPPool("k3snet-pods-a", "10.100.0.0/16", nat_outgoing=True),
        IPPool("k3snet-pods-b", "10.101.0.0/24", nat_outgoing=True),
        IPPool("k3snet-nonat-c", "192.168.3.0/24", disabled=True),
    ])


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (403, r"create IPPool k3snet-pods-a: forbidden \(403\)"),
        (409, r"create IPPool k3snet-pods-a: conflict \(409\)"),
        (500, r"create IPPool k3snet-pods-a: the API server failed \(500"),
        (422, r"create IPPool k3snet-pods-a: rejected as invalid \(422\): spec.cidr"),
    ],
)
def test_a_failed_create_rolls_back_what_was_done(
    seeded: EmulatedApiServer, api_client: Any, status: int, message: str
) -> None:
    backend = _backend(api_client)
    foreign = _foreign_snapshot(seeded)
    p = plan(backend.observe(), _three_pools())
    assert [name for c in p for name in _pools([c.subject])] == [
        "k3snet-nonat-c", "k3snet-pods-a", "k3snet-pods-b"]
    seeded.fail(status, method="POST", name="k3snet-pods-a",
                message="spec.cidr: Invalid value" if status == 422 else None)
    with pytest.raises(ApplyError, match=message) as info:
        backend.apply(p)
    error = info.value
    assert error.failed == p.changes[1]
    assert error.done == p.changes[:1]
    assert [c.action for c in error.rolled_back] == ["delete"]
    assert "(the 1 change(s) made before it were undone)" in str(error)
    assert _owned_snapshot(seeded) == {}
    assert _foreign_snapshot(seeded) == foreign


def test_a_timeout_in_the_middle_is_undone(seeded: EmulatedApiServer, api_client: Any) -> None:
    backend = _backend(api_client, allow_disruptive=True)  # the plan deletes an enabled pool
    backend.apply(plan(backend.observe(), _three_pools()))
    before = _owned_snapshot(seeded)
    desired = State(owned=[IPPool("k3snet-pods-a", "10.100.0.0/16", nat_outgoing=False),
                           IPPool("k3snet-nonat-c", "192.168.3.0/24", disabled=True)])
    p = plan(backend.observe(), desired)
    assert [c.action for c in p] == ["delete", "replace"]
    seeded.fail(504, method="PATCH", name="k3snet-pods-a", delay=1.5)
    backend.timeout = 0.5
    with pytest.raises(ApplyError, match=r"apply IPPool k3snet-pods-a \(natOutgoing\): no answer "
                                         r"from the API server within 0.5s"):
        backend.apply(p)
    assert _owned_snapshot(seeded) == before  # the deleted pool is back
    assert seeded.get(CRD, "k3snet-pods-b")["metadata"]["labels"] == LABEL  # type: ignore[index]


@pytest.mark.parametrize("read", ["observed", "listed again"])
def test_a_pool_changed_meanwhile_gives_409_and_nothing(
    seeded: EmulatedApiServer, api_client: Any, monkeypatch: pytest.MonkeyPatch, read: str
) -> None:
    # "observed": the apply right after the observe takes its listing (kit.FreshRead),
    # edited since; "listed again": that listing is too old, the apply lists anew.
    backend = _backend(api_client)
    backend.apply(plan(backend.observe(), _three_pools()))
    now = [1000.0]
    monkeypatch.setattr(kit, "_monotonic", lambda: now[0])
    p = plan(backend.observe(), State(owned=[
        IPPool("k3snet-pods-a", "10.100.0.0/16", nat_outgoing=False),
        IPPool("k3snet-pods-b", "10.101.0.0/24", nat_outgoing=False),
        IPPool("k3snet-nonat-c", "192.168.3.0/24", disabled=True),
    ]))
    original = CalicoBackend._list

    def someone_edits() -> None:
        stored = seeded.get(CRD, "k3snet-pods-b")
        assert stored is not None
        stored["spec"]["nodeSelector"] = "zone == 'a'"
        seeded.put(CRD, stored)  # a new resourceVersion

    def someone_edits_after_the_read(self: CalicoBackend) -> Any:
        listing = original(self)
        someone_edits()
        return listing

    if read == "observed":
        someone_edits()
    else:
        now[0] += kit.FRESH_READ_AGE
    monkeypatch.setattr(CalicoBackend, "_list", someone_edits_after_the_read)
    with pytest.raises(ApplyError, match=r"apply IPPool k3snet-pods-b \(natOutgoing\): conflict "
                                         r"\(409\)") as info:
        backend.apply(p)
    assert [c.action for c in info.value.rolled_back] == ["replace"]
    monkeypatch.setattr(CalicoBackend, "_list", original)
    pools = _pools(backend.observe().owned)
    assert pools["k3snet-pods-a"].nat_outgoing  # patched back
    assert pools["k3snet-pods-b"].node_selector == "zone == 'a'"  # the other edit is kept


def test_the_undo_applies_k3snets_fields_back_over_other_fields_changed_meanwhile(
    seeded: EmulatedApiServer, api_client: Any
) -> None:
    # As Cilium's undo of its ConfigMap patch was, before it read a 409 again: a label
    # and an annotation added to k3snet's pool between its apply and the undo (another
    # controller, `kubectl label`) must not block the undo of k3snet's own fields. The
    # apply back names no resourceVersion, and no field of theirs.
    backend = _backend(api_client)
    backend.apply(plan(backend.observe(), _three_pools()))
    p = plan(backend.observe(), State(owned=[
        IPPool("k3snet-pods-a", "10.100.0.0/16", nat_outgoing=False),
        IPPool("k3snet-pods-b", "10.101.0.0/24", nat_outgoing=True),
        IPPool("k3snet-nonat-c", "192.168.3.0/24", disabled=True),
        IPPool("k3snet-pods-d", "10.102.0.0/24", nat_outgoing=True),
    ]))
    assert [c.action for c in p] == ["replace", "add"]
    seeded.fail(500, method="POST", name="k3snet-pods-d")
    real = api_client.rest_client.pool_manager.request

    def request(verb: str, url: str, **kwargs: Any) -> Any:
        if verb == "POST":  # the create about to fail: someone labels pool a meanwhile
            stored = seeded.get(CRD, "k3snet-pods-a")
            assert stored is not None
            stored["metadata"]["labels"] = {**LABEL, "team": "net"}
            stored["metadata"]["annotations"] = {"note": "theirs"}
            seeded.put(CRD, stored)  # a new resourceVersion
        return real(verb, url, **kwargs)

    api_client.rest_client.pool_manager.request = request
    with pytest.raises(ApplyError) as info:
        backend.apply(p)
    assert not isinstance(info.value, RollbackError), info.value
    assert [c.action for c in info.value.rolled_back] == ["replace"]
    stored = seeded.get(CRD, "k3snet-pods-a")
    assert stored is not None
    assert stored["spec"]["natOutgoing"] is True  # k3snet's field, applied back
    assert stored["metadata"]["labels"] == {**LABEL, "team": "net"}
    assert stored["metadata"]["annotations"] == {"note": "theirs"}
    assert seeded.get(CRD, "k3snet-pods-d") is None


def test_the_undo_leaves_a_field_of_k3snets_another_manager_applied_meanwhile(
    seeded: EmulatedApiServer, api_client: Any
) -> None:
    # What docs/backends.md says beside the test above: an admin's forced server-side
    # apply takes natOutgoing (k3snet's field, the value k3snet's apply left) between the
    # apply and its undo. The apply back, not forced, is a 409 conflict: their value
    # stays, and the undo says it failed.
    from kubernetes import client  # noqa: PLC0415 - as the backend imports it

    backend = _backend(api_client)
    backend.apply(plan(backend.observe(), _three_pools()))
    p = plan(backend.observe(), State(owned=[
        IPPool("k3snet-pods-a", "10.100.0.0/16", nat_outgoing=False),
        IPPool("k3snet-pods-b", "10.101.0.0/24", nat_outgoing=True),
        IPPool("k3snet-nonat-c", "192.168.3.0/24", disabled=True),
        IPPool("k3snet-pods-d", "10.102.0.0/24", nat_outgoing=True),
    ]))
    seeded.fail(500, method="POST", name="k3snet-pods-d")
    real = api_client.rest_client.pool_manager.request
    taken: list[str] = []

    def request(verb: str, url: str, **kwargs: Any) -> Any:
        if verb == "POST" and not taken:  # the create about to fail
            taken.append(url)
            client.CustomObjectsApi(api_client).patch_cluster_custom_object(
                "crd.projectcalico.org", "v1", "ippools", "k3snet-pods-a",
                {"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
                 "metadata": {"name": "k3snet-pods-a"}, "spec": {"natOutgoing": False}},
                field_manager="admin", force=True,
                _content_type="application/apply-patch+yaml")
        return real(verb, url, **kwargs)

    api_client.rest_client.pool_manager.request = request
    with pytest.raises(RollbackError, match=r"conflict") as info:
        backend.apply(p)
    assert "apply back IPPool k3snet-pods-a" in str(info.value), info.value
    stored = seeded.get(CRD, "k3snet-pods-a")
    assert stored is not None
    assert stored["spec"]["natOutgoing"] is False  # theirs, not overwritten
    assert seeded.get(CRD, "k3snet-pods-d") is None


def test_a_failed_undo_is_a_rollback_error(seeded: EmulatedApiServer, api_client: Any) -> None:
    backend = _backend(api_client)
    p = plan(backend.observe(), _three_pools())
    seeded.fail(500, method="POST", name="k3snet-pods-a")
    seeded.fail(503, method="DELETE", name="k3snet-nonat-c")
    with pytest.raises(RollbackError, match="may be half-changed"):
        backend.apply(p)


def test_forbidden_listing_is_reported_on_observe_and_check(
    seeded: EmulatedApiServer, api_client: Any
) -> None:
    backend = _backend(api_client)
    seeded.fail(403, method="GET", plural="ippools", times=2)
    with pytest.raises(BackendError, match=r"list IPPools \(crd.projectcalico.org/v1\): "
                                           r"forbidden \(403\)"):
        backend.observe()
    (problem,) = backend.check(plan(State(), _three_pools()))
    assert "forbidden (403)" in problem


# ---------------------------------------------------------------- model


def test_ippool_model_and_resources() -> None:
    pool = IPPool("k3snet-pods-10-42-0-0-16", "10.42.0.0/16", nat_outgoing=True,
                  vxlan_mode="CrossSubnet")
    assert object_from_dict(pool.to_dict()) == pool
    assert pool.block_size == 26
    resource = _pool_resource(pool.name, pool.to_spec(), labels=LABEL)
    assert pool_from_resource(resource) == pool
    # Calico ignores the v1 nat-outgoing (see test_calico_felix); "" is the default mode.
    legacy = _pool_resource("old", {"cidr": "10.9.0.0/16", "nat-outgoing": True,
                                    "ipipMode": ""})
    assert pool_from_resource(legacy) == IPPool("old", "10.9.0.0/16", nat_outgoing=False)
    assert pool_name("pods", "10.42.0.0/16") == "k3snet-pods-10-42-0-0-16"
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: IPPool("Bad_Name", "10.0.0.0/16"), "not a valid Kubernetes name"),
        (lambda: IPPool("x", "10.0.0.0/16", block_size=19), "blockSize must be 20..32"),
        (lambda: IPPool("x", "10.0.0.0/30", block_size=26), "smaller than one block"),
        (lambda: IPPool("x", "fd00::/64", ipip_mode="Always"), "IPv4 only"),
        (lambda: IPPool("x", "10.0.0.0/16", ipip_mode="Always", vxlan_mode="Always"),
         "cannot both"),
        (lambda: IPPool("x", "10.0.0.0/16", nat_outgoing="yes"),  # type: ignore[arg-type]
         "natOutgoing must be true"),
        (lambda: IPPool("x", "10.0.0.0/16", ipip_mode="Sometimes"),
         "ipipMode must be one of"),
    ]
    for bad, match in cases:
        with pytest.raises(ModelError, match=match):
            bad()
    with pytest.raises(ModelError, match=r"IPPool nocidr: spec\.cidr is missing"):
        pool_from_resource(_pool_resource("nocidr", {}))


def test_a_converge_that_writes_lists_the_pools_felix_and_the_nodes_once_each() -> None:
    # The apply listed again every pool, FelixConfiguration and (for IPPoolsAndHostIPs)
    # Node's metadata that the observe right before it had listed: a pass of the Lease
    # holder that changed something asked for all of them twice, a 5 000-node cluster's
    # Nodes 20 requests for 10. Its writes carry the resourceVersions read (409 on a
    # change since), so the observe's listing serves it (and a dry run's check).
    from k3snet.converge import converge  # noqa: PLC0415 - this test alone

    with EmulatedApiServer(resources=(*CALICO_RESOURCES, "v1/nodes",
                                      "crd.projectcalico.org/v1/blockaffinities")) as server:
        for resource in FOREIGN[:2]:
            server.put(CRD, resource)
        server.put("crd.projectcalico.org/v1/felixconfigurations", {
            "apiVersion": "crd.projectcalico.org/v1", "kind": "FelixConfiguration",
            "metadata": {"name": "default"},
            "spec": {"natOutgoingExclusions": "IPPoolsAndHostIPs"}})
        server.put("v1/nodes", {"metadata": {"name": "node-a", "annotations": {
            "projectcalico.org/IPv4Address": "192.168.1.10/24"}}})
        backend = _backend(server.api_client())
        desired = State(owned=[IPPool("k3snet-nonat-c", "192.168.3.0/24", disabled=True)])

        def lists() -> list[str]:
            return sorted(path.split("?")[0].rsplit("/", 1)[-1]
                          for method, path, _ in server.requests() if method == "GET")

        # One pool serving workloads (legacy-lan is disabled, so is k3snet's): no block
        # can decide a verdict (a block counts only in a second such pool of the
        # family, outside the pod CIDRs), so the block affinities are not listed.
        assert converge(backend, desired, dry_run=True, check=True).plan.changes
        assert lists() == ["felixconfigurations", "ippools", "nodes"]
        before = len(server.requests())
        result = converge(backend, desired)
        assert result.result is not None
        assert [c.action for c in result.result.applied] == ["add"]
        made = [(m, p.split("?")[0].rsplit("/", 1)[-1]) for m, p, _ in server.requests()[before:]]
        assert sorted(made) == [("GET", "felixconfigurations"), ("GET", "ippools"),
                                ("GET", "nodes"), ("POST", "ippools")]
        assert server.get(CRD, "k3snet-nonat-c") is not None
        # A second enabled IPv4 pool serving workloads: a block a node holds in it may
        # decide the pod CIDR's verdict, so they are listed, once a pass.
        server.put(CRD, _pool_resource("zz-old", {"cidr": "10.60.0.0/16"}))
        before = len(server.requests())
        converge(backend, desired)
        made = [(m, p.split("?")[0].rsplit("/", 1)[-1]) for m, p, _ in server.requests()[before:]]
        assert sorted(made) == [("GET", "blockaffinities"), ("GET", "felixconfigurations"),
                                ("GET", "ippools"), ("GET", "nodes")]


def test_the_nodes_are_read_from_the_watch_cache_and_a_node_come_or_gone_is_seen_next() -> None:
    # For natOutgoingExclusions: IPPoolsAndHostIPs the Lease holder lists every Node's
    # metadata each interval: with no resourceVersion, a quorum read of every Node
    # object from etcd, 500 a request (a 5 000-node cluster's 10 requests every 30 s,
    # each reading 500 whole Nodes from etcd). resourceVersion=0 is served from the API
    # server's watch cache (client-go's informers list so): no etcd read; a continue
    # page names none (its token carries the list's own). The cache is at most a
    # moment behind: a Node added or deleted shows in the next interval's list.
    from k3snet.kube import LIST_PAGE  # noqa: PLC0415 - this test alone
    from k3snet.model.cni import CalicoFelixNat  # noqa: PLC0415 - this test alone

    with EmulatedApiServer(resources=(*CALICO_RESOURCES, "v1/nodes")) as server:
        server.put("crd.projectcalico.org/v1/felixconfigurations", {
            "apiVersion": "crd.projectcalico.org/v1", "kind": "FelixConfiguration",
            "metadata": {"name": "default"},
            "spec": {"natOutgoingExclusions": "IPPoolsAndHostIPs"}})

        def node(i: int) -> dict[str, Any]:
            return {"metadata": {"name": f"node-{i:04d}", "annotations": {
                "projectcalico.org/IPv4Address": f"10.7.{i // 250}.{i % 250 + 1}/16"}}}

        for i in range(LIST_PAGE + 1):
            server.put("v1/nodes", node(i))
        backend = _backend(server.api_client())

        def hosts() -> set[str]:
            (felix,) = [f for f in backend.observe().foreign if isinstance(f, CalicoFelixNat)]
            return {name for name, _ in felix.hosts}

        before = len(server.requests())
        assert hosts() == {f"node-{i:04d}" for i in range(LIST_PAGE + 1)}
        asked = [params for (_, path, _), params in zip(server.requests()[before:],
                                                        server.params()[before:], strict=True)
                 if path == "/api/v1/nodes"]
        assert [sorted(p) for p in asked] == [["limit", "resourceVersion"],
                                              ["continue", "limit"]]
        assert asked[0]["resourceVersion"] == "0"
        server.put("v1/nodes", node(LIST_PAGE + 1))
        server.delete("v1/nodes", "node-0000")
        assert hosts() == {f"node-{i:04d}" for i in range(1, LIST_PAGE + 2)}


def test_a_foreign_pool_whose_stored_metadata_nests_too_deep_fails_no_observe(
    seeded: EmulatedApiServer, api_client: Any
) -> None:
    # Anyone who may write an IPPool could stop every agent's observe of the pools with
    # an annotation Python's JSON parser cannot nest that deep (RecursionError, taken
    # for a bug); Calico's own parser refuses it as not an ObjectMeta.
    stored = '{"labels": ' + "[" * 100000 + "]" * 100000 + "}"
    pool = IPPool("foreign", "192.168.9.0/24", disabled=True)
    seeded.put(CRD, {"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
                     "metadata": {"name": pool.name,
                                  "annotations": {"projectcalico.org/metadata": stored}},
                     "spec": pool.to_spec()})
    observed = _backend(api_client).observe()
    assert pool not in observed.owned


# ---------------------------------------------------------------- BGP export of exemptions

# Calico's BIRD exports every route inside a pool's CIDR to its BGP peers unless the pool
# has disableBGPExport, disabled pools included (confd's bird_ipam.cfg.template: only
# disableBGPExport rejects), and BIRD imports the host's kernel and interface routes: an
# exemption pool of 192.168.0.0/16 had every node advertise its LAN to its BGP peers.
LAN = Spec(destinations=[Destination("192.168.0.0/16", masquerade=False)])
LAN_POOL = "k3snet-nonat-192-168-0-0-16"
NO_BGP_EXPORT = {CRD: ["disableBGPExport"]}  # Calico's IPPool CRD before v3.21
CRDS = "apiextensions.k8s.io/v1/customresourcedefinitions"


def ippool_crd(*, bgp_export_field: bool, spec_schema: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    """Calico's IPPool CRD, as the API server serves it: its v1 schema declares
    disableBGPExport from v3.21 on (``spec_schema``: another schema of ``spec``)."""
    fields = {"cidr": {"type": "string"}, "disabled": {"type": "boolean"},
              "natOutgoing": {"type": "boolean"}, "blockSize": {"type": "integer"},
              "ipipMode": {"type": "string"}, "vxlanMode": {"type": "string"},
              "nodeSelector": {"type": "string"}}
    if bgp_export_field:
        fields["disableBGPExport"] = {"type": "boolean"}
    schema = {"type": "object", "properties": {
        "apiVersion": {"type": "string"}, "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": spec_schema if spec_schema is not None else {"type": "object",
                                                             "properties": fields}}}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "ippools.crd.projectcalico.org"},
            "spec": {"group": "crd.projectcalico.org", "scope": "Cluster",
                     "names": {"kind": "IPPool", "plural": "ippools"},
                     "versions": [{"name": "v1", "served": True, "storage": True,
                                   "schema": {"openAPIV3Schema": schema}}]}}


def test_an_exemption_pool_is_not_exported_over_bgp(api_server: EmulatedApiServer,
                                                     api_client: Any) -> None:
    (pool,) = _pools(compile_ippools(LAN)).values()
    assert pool.disable_bgp_export
    backend = _backend(api_client)
    backend.apply(plan(backend.observe(), compile_ippools(LAN)))
    stored = api_server.get(CRD, LAN_POOL)
    assert stored is not None
    assert stored["spec"]["disableBGPExport"] is True
    assert plan(backend.observe(), compile_ippools(LAN)).empty
    assert backend.warnings == ()


@pytest.mark.parametrize("api", ["crd", "v3"])
def test_an_exemption_pool_an_older_k3snet_wrote_gets_disable_bgp_export_in_place(
        api_server: EmulatedApiServer, api_client: Any, api: str) -> None:
    # Older k3snet wrote disableBGPExport: false; Calico's API server (v3) answers a
    # false by leaving it out (omitempty). Calico lets the field change in place (its
    # update checks only cidr and blockSize, and allowedUses LoadBalancer): no delete.
    resource, version = (CRD, "crd.projectcalico.org/v1") if api == "crd" else (
        V3, "projectcalico.org/v3")
    spec = IPPool(LAN_POOL, "192.168.0.0/16", disabled=True).to_spec()
    if api == "v3":
        del spec["disableBGPExport"]
    uid = api_server.put(resource, _pool_resource(LAN_POOL, spec, api=version,
                                                  labels=LABEL))["metadata"]["uid"]
    backend = _backend(api_client, api=api)
    p = plan(backend.observe(), compile_ippools(LAN))
    ((before, after),) = [(c.before, c.after) for c in p if c.action == "replace"]
    assert isinstance(before, IPPool) and not before.disable_bgp_export  # noqa: PT018
    assert isinstance(after, IPPool) and after.disable_bgp_export  # noqa: PT018
    assert disruptive_changes(p) == ()
    assert backend.check(p) == ()
    backend.apply(p)
    assert [m for m, _, _ in api_server.requests()[-1:]] == ["PATCH"]
    stored = api_server.get(resource, LAN_POOL)
    assert stored is not None
    assert stored["metadata"]["uid"] == uid  # the same pool, changed in place
    assert stored["spec"]["disableBGPExport"] is True
    assert plan(backend.observe(), compile_ippools(LAN)).empty


@pytest.mark.parametrize("older", [False, True], ids=["new pool", "pool of an older k3snet"])
def test_with_a_crd_without_disable_bgp_export_the_plan_converges_and_says_it_once(
        caplog: pytest.LogCaptureFixture, older: bool) -> None:
    # Calico before v3.21: the IPPool CRD has no disableBGPExport and the API server drops
    # it. No plan can change that: the second plan is empty, and a warning says the pool
    # is still exported (once, while it lasts).
    with EmulatedApiServer(resources=(*CALICO_RESOURCES, CRDS), pruned=NO_BGP_EXPORT) as server:
        server.put(CRDS, ippool_crd(bgp_export_field=False))
        server.put(CRD, FOREIGN[0])  # the pod pool
        if older:
            server.put(CRD, _pool_resource(LAN_POOL, {"cidr": "192.168.0.0/16",
                                                      "disabled": True, "blockSize": 26},
                                           labels=LABEL))
        backend = _backend(server.api_client())
        backend.apply(plan(backend.observe(), compile_ippools(LAN)))
        stored = server.get(CRD, LAN_POOL)
        assert stored is not None
        assert "disableBGPExport" not in stored["spec"]  # dropped, as the old schema does
        with caplog.at_level("WARNING", logger="k3snet"):
            again = plan(backend.observe(), compile_ippools(LAN))
            assert again.empty, again.render()
            assert not again.conflicts
            assert plan(backend.observe(), compile_ippools(LAN)).empty
        (warning,) = backend.warnings
        assert warning.startswith(f"IPPool {LAN_POOL}: the API server drops disableBGPExport")
        assert "exports 192.168.0.0/16 over BGP" in warning
        assert [r.getMessage() for r in caplog.records].count(f"calico: {warning}") == 1
        # A new process (`k3snet plan` after `k3snet apply`) reads it so too.
        fresh = _backend(server.api_client())
        assert plan(fresh.observe(), compile_ippools(LAN)).empty
        assert fresh.warnings == (warning,)


def _writes(server: EmulatedApiServer) -> list[tuple[str, str]]:
    """The writes served (a dry run is none)."""
    return [(method, path) for (method, path, _), query in zip(
        server.requests(), server.params(), strict=True)
        if method in ("POST", "PATCH", "PUT", "DELETE") and "dryRun" not in query]


def _put_v3_pools(server: EmulatedApiServer) -> None:
    """K3s' default pool and k3snet's LAN pool (no disableBGPExport), through the v3 API."""
    server.put(V3, _pool_resource("default-ipv4-ippool", {"cidr": "10.42.0.0/16",
                                                          "natOutgoing": True},
                                  api="projectcalico.org/v3"))
    server.put(V3, _pool_resource(LAN_POOL, {"cidr": "192.168.0.0/16", "disabled": True},
                                  api="projectcalico.org/v3", labels=LABEL))


def test_with_a_v3_api_without_disable_bgp_export_a_dry_run_of_the_write_tells(
        ) -> None:
    # Calico's API server answers a false disableBGPExport by leaving it out, so a pool
    # read without it may be one to change; one of v3.20 (before the field) drops it:
    # the dry run of the write of true, answered without it, says so, nothing written.
    with EmulatedApiServer(pruned={V3: ["disableBGPExport"]}) as server:
        _put_v3_pools(server)
        version = server.get(V3, LAN_POOL)["metadata"]["resourceVersion"]  # type: ignore[index]
        backend = _backend(server.api_client(), api="v3")
        p = plan(backend.observe(), compile_ippools(LAN))
        assert p.empty, p.render()
        (warning,) = backend.warnings
        assert "drops disableBGPExport" in warning
        assert _writes(server) == []
        stored = server.get(V3, LAN_POOL)
        assert stored is not None
        assert stored["metadata"]["resourceVersion"] == version
        # Held for BGP_EXPORT_RETRY seconds: no dry run on every pass.
        requests = len(server.requests())
        assert plan(backend.observe(), compile_ippools(LAN)).empty
        # (the pools and the FelixConfigurations; no block affinities: k3snet's pool
        # is disabled, no pool serves workloads, so no block decides anything)
        assert [m for m, _, _ in server.requests()[requests:]] == ["GET"] * 2


def _dry_runs(server: EmulatedApiServer) -> int:
    return sum(1 for (method, _, _), query in zip(server.requests(), server.params(),
                                                   strict=True)
               if method == "PATCH" and "dryRun" in query)


@pytest.mark.parametrize("status", [403, 400], ids=["403 without patch",
                                                    "a webhook refusing dry runs"])
def test_a_refused_dry_run_is_kept_a_retry_interval_not_sent_on_every_pass(
        status: int) -> None:
    # Through v3, a pool of k3snet's without disableBGPExport is asked about by a dry run
    # of its write. Refused (403 without `patch`, a webhook that refuses dry runs), the
    # same refused request went out on every pass of the agent. Now the refusal is kept,
    # as the CRD's answer is, for BGP_EXPORT_RETRY seconds.
    with EmulatedApiServer(pruned={V3: ["disableBGPExport"]}) as server:
        _put_v3_pools(server)
        server.fail(status, method="PATCH", plural="ippools", param="dryRun", times=None,
                    message="admission webhook does not support dry run")
        backend = _backend(server.api_client(), api="v3")
        now = [1000.0]
        backend._monotonic = lambda: now[0]
        for _ in range(4):  # the agent's passes (not written: a plan, as `--check` makes)
            p = plan(backend.observe(), compile_ippools(LAN))
            assert [c.action for c in p] == ["replace"]  # not known: the write tells
            now[0] += 60
        assert _dry_runs(server) == 1
        assert _writes(server) == []
        now[0] += BGP_EXPORT_RETRY
        backend.observe()
        assert _dry_runs(server) == 2


def test_a_dry_run_that_failed_for_another_reason_is_tried_again_on_the_next_pass() -> None:
    # A 500, a timeout, a pool changed meanwhile (409): no refusal of dry runs, not kept.
    with EmulatedApiServer(pruned={V3: ["disableBGPExport"]}) as server:
        server.put(V3, _pool_resource(LAN_POOL, {"cidr": "192.168.0.0/16", "disabled": True},
                                      api="projectcalico.org/v3", labels=LABEL))
        server.fail(500, method="PATCH", plural="ippools", param="dryRun", times=1)
        server.fail(409, method="PATCH", plural="ippools", param="dryRun", times=1)
        backend = _backend(server.api_client(), api="v3")
        backend.observe()
        backend.observe()
        (pool,) = backend.observe().owned
        assert _dry_runs(server) == 3
        assert isinstance(pool, IPPool)
        assert pool.disable_bgp_export_dropped


def test_a_pool_whose_disable_bgp_export_the_api_drops_holds_the_wanted_pool_and_nothing_else(
        ) -> None:
    wanted = IPPool(LAN_POOL, "192.168.0.0/16", disabled=True, disable_bgp_export=True)
    read = IPPool(LAN_POOL, "192.168.0.0/16", disabled=True, disable_bgp_export_dropped=True)
    assert read != wanted
    assert wanted.held_by(read)
    assert object_from_dict(read.to_dict()) == read
    assert "disable_bgp_export_dropped" not in wanted.to_dict()  # older documents unchanged
    p = plan(State(owned=[read]), State(owned=[wanted]))
    assert p.empty
    assert p.held == ((wanted, read),)
    # Any other difference is still a change, and a pool read with the field is not held.
    assert not attrs.evolve(wanted, block_size=24).held_by(read)
    assert not wanted.held_by(attrs.evolve(read, disable_bgp_export_dropped=False))
    with pytest.raises(ModelError, match="disable_bgp_export_dropped must be true or false"):
        IPPool("x", "10.0.0.0/16", disable_bgp_export_dropped=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("api", ["crd", "v3"])
@pytest.mark.parametrize("process", ["the same process", "a new process"])
def test_a_pool_written_before_calico_s_upgrade_to_3_21_gets_disable_bgp_export_after_it(
        api: str, process: str) -> None:
    # The warning says: upgrade Calico and its CRDs to v3.21. The pool written before
    # still lacks the field (the upgrade rewrites no pool): it was read as dropped from
    # its absence alone and held for ever, still exported, the warning still saying the
    # API drops the field. Now the CRD's schema decides, and the pool is written.
    resource = CRD if api == "crd" else V3
    version = "crd.projectcalico.org/v1" if api == "crd" else "projectcalico.org/v3"
    with EmulatedApiServer(resources=(*CALICO_RESOURCES, CRDS),
                           pruned={resource: ["disableBGPExport"]}) as server:
        server.put(CRDS, ippool_crd(bgp_export_field=False))
        server.put(resource, {**FOREIGN[0], "apiVersion": version})
        backend = _backend(server.api_client(), api=api)
        now = [1000.0]
        backend._monotonic = lambda: now[0]
        backend.apply(plan(backend.observe(), compile_ippools(LAN)))
        assert plan(backend.observe(), compile_ippools(LAN)).empty
        assert len(backend.warnings) == 1
        stored = server.get(resource, LAN_POOL)
        assert stored is not None
        assert "disableBGPExport" not in stored["spec"]
        uid = stored["metadata"]["uid"]
        server.emulator.pruned.clear()  # Calico and its CRDs upgraded to v3.21 or later
        server.put(CRDS, ippool_crd(bgp_export_field=True))
        if process == "a new process":
            backend = _backend(server.api_client(), api=api)
        else:  # the agent read the CRD a pass ago: its answer is kept a while
            assert plan(backend.observe(), compile_ippools(LAN)).empty
            now[0] += BGP_EXPORT_RETRY
        p = plan(backend.observe(), compile_ippools(LAN))
        assert [str(c).split(" (was")[0] for c in p] == [
            f"~ ippool {LAN_POOL} 192.168.0.0/16 disabled blockSize=26 disableBGPExport"]
        assert backend.warnings == ()
        backend.apply(p)
        stored = server.get(resource, LAN_POOL)
        assert stored is not None
        assert stored["spec"]["disableBGPExport"] is True
        assert stored["metadata"]["uid"] == uid  # changed in place
        assert plan(backend.observe(), compile_ippools(LAN)).empty


@pytest.mark.parametrize(("spec_schema", "dropped"), [
    (None, True),  # a structural schema without the field: pruned
    ({"type": "object", "x-kubernetes-preserve-unknown-fields": True}, False),
    ({"type": "object", "properties": {"cidr": {"type": "string"},
                                       "disableBGPExport": {"type": "boolean"}}}, False),
], ids=["schema without it", "unknown fields kept", "schema with it"])
def test_a_pool_of_k3snet_s_without_disable_bgp_export_is_dropped_only_where_the_crd_prunes_it(
        spec_schema: dict[str, Any] | None, dropped: bool) -> None:
    # A pool without the field where the CRD keeps it (removed by hand, or by a writer
    # that left it out) is one to write, not one to leave exported.
    with EmulatedApiServer(resources=(*CALICO_RESOURCES, CRDS)) as server:
        server.put(CRDS, ippool_crd(bgp_export_field=False, spec_schema=spec_schema))
        server.put(CRD, FOREIGN[0])
        server.put(CRD, _pool_resource(LAN_POOL, {"cidr": "192.168.0.0/16", "disabled": True,
                                                  "blockSize": 26}, labels=LABEL))
        backend = _backend(server.api_client())
        (pool,) = backend.observe().owned
        assert isinstance(pool, IPPool)
        assert pool.disable_bgp_export_dropped is dropped
        assert plan(backend.observe(), compile_ippools(LAN)).empty is dropped
        assert len(backend.warnings) == int(dropped)


def _crd_reads(server: EmulatedApiServer) -> int:
    return sum(1 for method, path, _ in server.requests()
               if method == "GET" and "/customresourcedefinitions/" in path)


@pytest.mark.parametrize("crd", ["schema without it", "not readable"])
def test_an_agent_reads_the_ippool_crd_once_a_retry_interval_not_on_every_pass(
        crd: str) -> None:
    # Calico before v3.21: k3snet's pools lack disableBGPExport for good, and every
    # listing of the agent's passes read the IPPool CRD again (some kilobytes a GET) to
    # learn what the last one had learned. Now its answer (a 403 too) is kept for
    # BGP_EXPORT_RETRY seconds.
    with EmulatedApiServer(resources=(*CALICO_RESOURCES, CRDS), pruned=NO_BGP_EXPORT) as server:
        server.put(CRDS, ippool_crd(bgp_export_field=False))
        if crd == "not readable":
            server.fail(403, plural="customresourcedefinitions", times=None)
        server.put(CRD, FOREIGN[0])
        server.put(CRD, _pool_resource(LAN_POOL, {"cidr": "192.168.0.0/16", "disabled": True,
                                                  "blockSize": 26}, labels=LABEL))
        backend = _backend(server.api_client())
        now = [1000.0]
        backend._monotonic = lambda: now[0]
        backend.apply(plan(backend.observe(), compile_ippools(LAN)))
        assert _crd_reads(server) == 1
        for _ in range(3):  # the agent's passes
            now[0] += 60
            assert plan(backend.observe(), compile_ippools(LAN)).empty
            assert len(backend.warnings) == 1
        assert _crd_reads(server) == 1
        now[0] += BGP_EXPORT_RETRY
        backend.observe()
        assert _crd_reads(server) == 2


@pytest.mark.parametrize("crd", ["the CRD keeps it", "the CRD not readable"])
def test_a_hold_learned_from_a_write_is_tried_again_and_a_later_upgrade_sticks(
        crd: str) -> None:
    # Calico upgraded to v3.21: its CRDs first, its API server minutes later (the operator
    # rolls it after the CRDs are applied). A pass between them writes the pool through
    # the old API server, which drops the field: the hold learned from that answer was
    # keyed to the pool's and the CRD's resourceVersions, which the API server's upgrade
    # changes neither of: the pool was held, exported over BGP, until the agent restarted,
    # the warning telling to upgrade what was upgraded. Without the right to read the
    # CRD (manifests rendered before), the same after any upgrade. Now such a hold lasts
    # BGP_EXPORT_RETRY seconds: the pool is written again then, and the upgrade sticks.
    # And the create's hold holds at once: it was keyed to no CRD (the listing before
    # the create read none), so the next listing, reading it, wrote the pool again.
    with EmulatedApiServer(resources=(*CALICO_RESOURCES, CRDS),
                           pruned={V3: ["disableBGPExport"]}) as server:
        if crd == "the CRD keeps it":
            server.put(CRDS, ippool_crd(bgp_export_field=True))
        server.put(V3, {**FOREIGN[0], "apiVersion": "projectcalico.org/v3"})
        backend = _backend(server.api_client(), api="v3")
        now = [1000.0]
        backend._monotonic = lambda: now[0]
        backend.apply(plan(backend.observe(), compile_ippools(LAN)))
        stored = server.get(V3, LAN_POOL)
        assert stored is not None
        assert "disableBGPExport" not in stored["spec"]
        assert plan(backend.observe(), compile_ippools(LAN)).empty  # held, said
        assert len(backend.warnings) == 1
        server.emulator.pruned.clear()  # Calico's API server upgraded too
        now[0] += BGP_EXPORT_RETRY - 1
        assert plan(backend.observe(), compile_ippools(LAN)).empty  # held a while yet
        now[0] += 1
        p = plan(backend.observe(), compile_ippools(LAN))
        assert [str(c).split(" (was")[0] for c in p] == [
            f"~ ippool {LAN_POOL} 192.168.0.0/16 disabled blockSize=26 disableBGPExport"]
        backend.apply(p)
        stored = server.get(V3, LAN_POOL)
        assert stored is not None
        assert stored["spec"]["disableBGPExport"] is True
        assert plan(backend.observe(), compile_ippools(LAN)).empty
        assert not backend.warnings


@pytest.mark.parametrize("api", ["crd", "v3"])
def test_a_write_answered_without_disable_bgp_export_is_warned_of_by_the_apply_that_made_it(
        api: str) -> None:
    # Where the IPPool CRD does not tell (not readable: manifests or a kubeconfig without
    # the right; or, through v3, it keeps the field and Calico's API server drops it),
    # each process writes the pool: `k3snet apply` said it had changed it, and nothing
    # more, on every run, the pool still exported over BGP. Its warning was only
    # read by the next listing, which a CLI run never made. Now the write's answer says it.
    resource = CRD if api == "crd" else V3
    version = "crd.projectcalico.org/v1" if api == "crd" else "projectcalico.org/v3"
    with EmulatedApiServer(pruned={resource: ["disableBGPExport"]}) as server:
        server.put(resource, {**FOREIGN[0], "apiVersion": version})
        backend = _backend(server.api_client(), api=api)  # a new process: a CLI run
        p = plan(backend.observe(), compile_ippools(LAN))
        assert [c.action for c in p] == ["add"]
        assert not backend.warnings
        backend.apply(p)
        (warning,) = backend.warnings
        assert warning.startswith(f"IPPool {LAN_POOL}: the API server drops "
                                  "disableBGPExport")
        assert "exports 192.168.0.0/16 over BGP" in warning
        # what the next listing says, once
        assert plan(backend.observe(), compile_ippools(LAN)).empty
        assert backend.warnings == (warning,)
        # The next run found the pool without the field and wrote it again to learn it
        # (one write a run). Now a dry run of that write tells: nothing written.
        writes = _writes(server)
        backend = _backend(server.api_client(), api=api)
        assert plan(backend.observe(), compile_ippools(LAN)).empty
        assert backend.warnings == (warning,)
        assert _writes(server) == writes


@pytest.mark.parametrize("action", ["add", "delete", "in place"])
def test_ctrl_c_as_a_write_s_answer_is_kept_takes_the_write_back(
        seeded: EmulatedApiServer, api_client: Any, monkeypatch: pytest.MonkeyPatch,
        action: str, ctrl_c: None) -> None:
    """Ctrl-C landing after the API server answered a write, before its undo was kept
    (a signal's handler runs at a call: here, the one keeping the undo): the write was
    among nothing to undo, and stayed while the apply said it had taken back all."""
    backend = _backend(api_client)
    pool = IPPool("k3snet-nonat-c", "192.168.3.0/24", disabled=True)
    if action != "add":
        backend.apply(plan(backend.observe(), State(owned=[pool])))
    before = _owned_snapshot(seeded)
    wanted = {"add": [pool], "delete": [],
              "in place": [attrs.evolve(pool, nat_outgoing=True)]}[action]
    p = plan(backend.observe(), State(owned=wanted))
    assert [c.action for c in p] == [action if action != "in place" else "replace"]
    real = _Run._will_undo
    signalled: list[str] = []

    def will_undo(self: _Run, what: str, undo: Callable[[], object]) -> None:
        if not signalled:  # at the call keeping the first write's undo, before it is kept
            signalled.append(what)
            signal.raise_signal(signal.SIGINT)
        real(self, what, undo)

    monkeypatch.setattr(_Run, "_will_undo", will_undo)
    with pytest.raises(KeyboardInterrupt):
        backend.apply(p)
    undo = {"add": "delete", "delete": "re-create", "in place": "apply back"}[action]
    assert signalled == [f"{undo} IPPool k3snet-nonat-c"  # the write was answered
                         + {"add": " (created)", "delete": " (deleted)"}.get(action, "")]
    assert _owned_snapshot(seeded) == before
