"""Pools as Calico reads their selectors and ``allowedUses``: stored through the CRDs
(Calico in Kubernetes datastore mode, written without the Calico API server's
validation), read by the real backend from the emulated API server, judged as
Calico's IPAM and Felix judge them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from kubernetes import client

from k3snet.backends.calico import CalicoBackend
from k3snet.errors import SpecError
from k3snet.kube import list_metadata, watch_metadata
from k3snet.planner import Plan, plan
from k3snet.spec import Spec, compile_ippools
from k3snet.spec import compile as compile_spec
from k3snet.testing.kube import CALICO_RESOURCES, EmulatedApiServer

pytestmark = pytest.mark.cluster

CRD = "crd.projectcalico.org/v1/ippools"

SPEC = """\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
cluster: {podCIDRs: [10.42.0.0/16]}
destinations:
  - cidr: 172.30.0.0/24
cni:
  calico: {}
"""

# The same, with 172.20.0.0/24 exempt from NAT.
EXEMPT_SPEC = SPEC.replace("  - cidr: 172.30.0.0/24\n",
                           "  - cidr: 172.20.0.0/24\n    masquerade: false\n")


def _backend(server: EmulatedApiServer) -> CalicoBackend:
    return CalicoBackend(api_client=server.api_client(), timeout=10.0, api="crd")


def _pool(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
            "metadata": {"name": name}, "spec": spec}


def _put_pod_pool(server: EmulatedApiServer, **spec: Any) -> None:
    server.put(CRD, _pool("default-ipv4-ippool", cidr="10.42.0.0/16", natOutgoing=True,
                          **spec))


def _plan(backend: CalicoBackend, document: str) -> Plan:
    return plan(backend.observe(), compile_spec(Spec.from_yaml(document)).only(
        backend.capabilities))


# ---------------------------------------------------------------- allowedUses


@pytest.mark.parametrize("uses", [["LoadBalancer", "LoadBalancer"],
                                  ["LoadBalancer", "LoadBalancer", "LoadBalancer"]])
def test_a_duplicated_loadbalancer_use_is_no_loadbalancer_only_pool_and_exempts(
    api_server: EmulatedApiServer, uses: list[str]
) -> None:
    # Felix calls a pool LoadBalancer-only when its allowedUses hold LoadBalancer and
    # nothing else: one entry (masq_mgr.go isLoadBalancerOnly, l3_route_resolver.go
    # isLoadBalancerOnlyPool: len == 1). Calico's CRDs before v3.32 (no listType set)
    # and its API server's validator take the duplicate; Felix then puts the pool in
    # network-ip-pools and never masquerades to it. k3snet folded the duplicate and
    # said the pool exempts nothing (a false conflict).
    _put_pod_pool(api_server)
    api_server.put(CRD, _pool("lb", cidr="172.20.0.0/16", allowedUses=uses))
    p = _plan(_backend(api_server), EXEMPT_SPEC)
    assert (p.changes, p.conflicts) == ((), ())
    assert "ippool k3snet-nonat-172-20-0-0-24" in " ".join(n.wanted.describe() for n in p.met)


def test_a_duplicated_workload_use_serves_pods(api_server: EmulatedApiServer) -> None:
    # IPAM asks whether the use is among allowedUses (slices.Contains): a duplicate
    # changes nothing. Judged fine before too; pinned.
    _put_pod_pool(api_server, allowedUses=["Workload", "Workload"])
    p = _plan(_backend(api_server), SPEC)
    assert (p.changes, p.conflicts) == ((), ())
    assert len(p.met) == 1


# ---------------------------------------------------------------- selectors as Calico parses them


@pytest.mark.parametrize("selector", [" all( ) ", "all( )", "  ", "\tall()"])
def test_a_namespace_selector_calico_reads_as_all_serves_every_pod(
    api_server: EmulatedApiServer, selector: str
) -> None:
    # Calico's tokenizer skips spaces and tabs between tokens and inside all( ), and a
    # blank selector parses to all(): the pool serves every namespace. k3snet compared
    # the text with "" and "all()" (a false conflict).
    _put_pod_pool(api_server, namespaceSelector=selector, allowedUses=["Workload"])
    p = _plan(_backend(api_server), SPEC)
    assert (p.changes, p.conflicts) == ((), ())
    assert len(p.met) == 1


@pytest.mark.parametrize(("wanted", "stored"), [
    ("has(zone)", " has( zone ) "),
    ("zone == 'a'", "zone=='a'"),
    ("zone == 'a'", 'zone  ==  "a"'),
    ("zone in {'a', 'b'}", "zone in {'b', 'a'}"),
    ("zone in {'a', 'b'}", "zone == 'b' || zone == 'a'"),
    ("has(zone)", "!!has(zone)"),
    ("zone == 'a' && rack == 'r1'", "(rack == 'r1') && (zone == 'a')"),
    ("zone != 'a'", "!(zone == 'a')"),
])
def test_the_spec_s_node_selector_is_met_by_a_selector_of_the_same_meaning(
    api_server: EmulatedApiServer, wanted: str, stored: str
) -> None:
    # Calico IPAM evaluates the pool's nodeSelector on a node's labels: blanks, quotes,
    # the order of a set's values or of && and || operands, parentheses and !! change
    # nothing. k3snet compared the tokens (earlier the text), and said the pool was not
    # the one the spec wants (a false conflict).
    _put_pod_pool(api_server, nodeSelector=stored)
    document = SPEC.replace("calico: {}", f"calico: {{nodeSelector: {json.dumps(wanted)}}}")
    p = _plan(_backend(api_server), document)
    assert (p.changes, p.conflicts) == ((), ())
    assert len(p.met) == 1
    # Another selector is still another selector.
    _put_pod_pool(api_server, nodeSelector=stored.replace("zone", "rack"))
    assert _plan(_backend(api_server), document).conflicts


@pytest.mark.parametrize("selector", ["!!all()", "(all())", "zone not in {}"])
def test_a_pool_selector_of_every_node_by_meaning_serves_every_node(
    api_server: EmulatedApiServer, selector: str
) -> None:
    # A pool outside the pod CIDR may serve workloads: the pod CIDR's pool must serve
    # every node. Its nodeSelector selects every node's labels; k3snet knew only all()
    # and a blank one (a false conflict: "Calico gives its addresses only to pods of the
    # nodes it selects").
    _put_pod_pool(api_server, nodeSelector=selector)
    api_server.put(CRD, _pool("other", cidr="10.60.0.0/16", natOutgoing=True))
    p = _plan(_backend(api_server), SPEC)
    assert (p.changes, p.conflicts) == ((), ())
    assert len(p.met) == 1


@pytest.mark.parametrize("field", ["nodeSelector", "namespaceSelector"])
@pytest.mark.parametrize("where", ["pod pool", "other pool"])
def test_an_unparseable_selector_is_reported_naming_the_pool_and_never_met(
    api_server: EmulatedApiServer, field: str, where: str
) -> None:
    # Calico IPAM parses the selectors of every enabled automatic pool of the family
    # before it picks one (libcalico-go ipam.determinePools): a selector it cannot parse
    # fails the assignment, so pods get no address, whichever pool they would have had.
    # The CRDs store any text (Calico's API server refuses it on write). k3snet said
    # nothing, and met the pod CIDR.
    bad = "zone == 'a"  # unterminated string
    if where == "pod pool":
        _put_pod_pool(api_server, **{field: bad})
    else:
        _put_pod_pool(api_server)
        api_server.put(CRD, _pool("broken", cidr="10.60.0.0/16", **{field: bad}))
    backend = _backend(api_server)
    p = _plan(backend, SPEC)
    assert p.met == ()
    (conflict,) = p.conflicts
    reason = conflict.reason or ""
    name = "default-ipv4-ippool" if where == "pod pool" else "broken"
    assert f"IPPool {name}" in reason, reason
    assert field in reason
    assert "unterminated string" in reason
    (warning,) = [w for w in backend.warnings if field in w]
    assert warning.startswith(f"IPPool {name}: spec.{field}"), warning
    assert "pods get no address" in warning


def test_an_unparseable_selector_of_a_disabled_or_manual_pool_breaks_nothing(
    api_server: EmulatedApiServer,
) -> None:
    # IPAM reads enabled pools only, and skips Manual ones before their selectors:
    # such a pool is reported, and the pod CIDR is still met.
    _put_pod_pool(api_server)
    api_server.put(CRD, _pool("off", cidr="10.60.0.0/16", disabled=True,
                              nodeSelector="zone ==", namespaceSelector="(x"))
    api_server.put(CRD, _pool("manual", cidr="10.61.0.0/16", assignmentMode="Manual",
                              nodeSelector="zone =="))
    backend = _backend(api_server)
    p = _plan(backend, SPEC)
    assert (p.changes, p.conflicts) == ((), ())
    assert len(p.met) == 1
    assert sorted(w.split(":")[0] for w in backend.warnings) == [
        "IPPool manual", "IPPool off", "IPPool off"]


def test_an_unparseable_node_selector_in_the_spec_is_a_spec_problem() -> None:
    document = SPEC.replace("calico: {}", "calico: {nodeSelector: \"zone == 'a\"}")
    with pytest.raises(SpecError) as info:
        compile_spec(Spec.from_yaml(document))
    (problem,) = info.value.problems
    assert problem.path == "cni.calico.nodeSelector"
    assert "unterminated string" in problem.message


@pytest.mark.parametrize("selector", [" all( ) ", "  "])
def test_a_spec_node_selector_calico_reads_as_all_asks_for_every_node(
    api_server: EmulatedApiServer, selector: str
) -> None:
    _put_pod_pool(api_server)
    document = SPEC.replace("calico: {}", f"calico: {{nodeSelector: {json.dumps(selector)}}}")
    p = _plan(_backend(api_server), document)
    assert (p.changes, p.conflicts) == ((), ())
    assert [n.wanted.describe() for n in p.met] == [
        "calico pod CIDR 10.42.0.0/16 is a pool natOutgoing"]


@pytest.mark.parametrize("selector", [" ", " \t "])
def test_a_blank_node_selector_is_every_node_as_calico_parses_it(
    api_server: EmulatedApiServer, selector: str
) -> None:
    # Calico's API server takes it (it parses), and Calico's parser reads no token as
    # all(). k3snet refused the pool as unreadable (a conflict naming it).
    _put_pod_pool(api_server, nodeSelector=selector)
    backend = _backend(api_server)
    p = _plan(backend, SPEC)
    assert (p.changes, p.conflicts) == ((), ())
    assert len(p.met) == 1
    assert backend.warnings == ()


# ---------------------------------------------------------------- pools outside the pod CIDRs


@pytest.mark.parametrize(("name", "nat", "met"), [
    ("aa-vms", False, False),  # sorts first, translated otherwise: pods get its addresses
    ("aa-vms", True, True),  # sorts first, translated alike: Felix NATs its pods the same
    ("zz-vms", False, True),  # sorts after: only once the pod CIDR's pool is full
])
def test_a_workload_pool_outside_the_pod_cidr_sorting_first_must_translate_alike(
    api_server: EmulatedApiServer, name: str, nat: bool, met: bool
) -> None:
    # Calico IPAM cuts a node's new blocks from the pools selecting it in name order
    # (libcalico-go findUsableBlock): aa-vms gives pods their addresses before the pod
    # CIDR's pool does, and Felix masquerades them as aa-vms says. With natOutgoing
    # false, pods reached 172.30.0.0/24 untranslated while the pod CIDR was judged met.
    _put_pod_pool(api_server)
    api_server.put(CRD, _pool(name, cidr="10.60.0.0/16", natOutgoing=nat))
    p = _plan(_backend(api_server), SPEC)
    assert p.changes == ()
    if met:
        assert (len(p.met), p.conflicts) == (1, ())
        return
    assert p.met == ()
    (conflict,) = p.conflicts
    reason = conflict.reason or ""
    assert reason.startswith("IPPool aa-vms 10.60.0.0/16 (natOutgoing false) serves "
                             "workloads outside the pod CIDRs"), reason
    assert "cluster.podCIDRs" in reason
    # Named as a pod CIDR, it is judged as one (its own conflict: natOutgoing false).
    both = SPEC.replace("[10.42.0.0/16]", "[10.42.0.0/16, 10.60.0.0/16]")
    p = _plan(_backend(api_server), both)
    assert [n.wanted.describe() for n in p.met] == [
        "calico pod CIDR 10.42.0.0/16 is a pool natOutgoing"]
    (conflict,) = p.conflicts
    assert "10.60.0.0/16" in conflict.wanted.describe()


AFFINITIES = "crd.projectcalico.org/v1/blockaffinities"


def _affinity(node: str, cidr: str, state: str = "confirmed", deleted: str = "false"
              ) -> dict[str, Any]:
    return {"apiVersion": "crd.projectcalico.org/v1", "kind": "BlockAffinity",
            "metadata": {"name": f"{node}-{cidr.replace('.', '-').replace('/', '-')}"},
            "spec": {"node": node, "cidr": cidr, "state": state, "deleted": deleted}}


@pytest.mark.parametrize(("nat", "state", "deleted", "met"), [
    (False, "confirmed", "false", False),
    (False, "pending", "false", False),
    (False, "pendingDeletion", "false", True),  # being released: IPAM uses it no more
    (False, "confirmed", "true", True),
    (True, "confirmed", "false", True),  # translated as the spec wants
])
def test_blocks_a_node_holds_in_an_old_pool_sorting_after_the_pod_cidr_s_must_translate_alike(
    nat: bool, state: str, deleted: str, met: bool,
) -> None:
    # Calico IPAM assigns a pod's address from the blocks its node already holds first
    # (libcalico-go findOrClaimBlock: the host's affine blocks in the enabled pools
    # selecting it, whatever their names), and cuts a new block in pool name order only
    # once those are full. A node that took blocks of zz-old (no natOutgoing) before the
    # pod CIDR's pool was made keeps giving its pods addresses there, untranslated;
    # k3snet read no block and judged the pod CIDR met, zz-old sorting after it.
    with EmulatedApiServer(resources=(*CALICO_RESOURCES, AFFINITIES)) as server:
        _put_pod_pool(server)
        server.put(CRD, _pool("zz-old", cidr="10.60.0.0/16", natOutgoing=nat))
        server.put(AFFINITIES, _affinity("node-a", "10.60.3.0/26", state, deleted))
        server.put(AFFINITIES, _affinity("node-b", "10.42.7.0/26"))  # in the pod CIDR
        p = _plan(_backend(server), SPEC)
        assert p.changes == ()
        if met:
            assert (len(p.met), p.conflicts) == (1, ())
            return
        assert p.met == ()
        (conflict,) = p.conflicts
        reason = conflict.reason or ""
        assert reason.startswith("IPPool zz-old 10.60.0.0/16 (natOutgoing false): block "
                                 "10.60.3.0/26 of node node-a: nodes hold IPAM blocks"), reason
        assert "10.42.7.0/26" not in reason
        assert "cluster.podCIDRs" in reason
        # Disabled, IPAM takes no address from its blocks: met.
        server.put(CRD, _pool("zz-old", cidr="10.60.0.0/16", disabled=True))
        p = _plan(_backend(server), SPEC)
        assert (len(p.met), p.conflicts) == (1, ())


@pytest.mark.parametrize(("held", "met"), [(3, True), (4, False)])
def test_a_pool_sorting_after_a_full_pod_cidr_pool_gives_new_blocks_and_must_translate_alike(
    held: int, met: bool,
) -> None:
    # Calico IPAM claims a node's new block in the first pool, in name order, that has
    # one unclaimed (libcalico-go findUsableBlock), so a pool sorting after the pod
    # CIDR's is used once every block of the pod CIDR's pool is claimed: a new node's
    # pods get addresses there, translated as it says. k3snet judged only pools sorting
    # before: a pod CIDR pool of 4 blocks, all held, was met beside zz-old.
    with EmulatedApiServer(resources=(*CALICO_RESOURCES, AFFINITIES)) as server:
        server.put(CRD, _pool("default-ipv4-ippool", cidr="10.42.0.0/24", natOutgoing=True,
                              blockSize=26))
        server.put(CRD, _pool("zz-old", cidr="10.60.0.0/16", natOutgoing=False))
        for n in range(held):
            server.put(AFFINITIES, _affinity(f"node-{n}", f"10.42.0.{64 * n}/26"))
        p = _plan(_backend(server), SPEC.replace("10.42.0.0/16", "10.42.0.0/24"))
        if met:
            assert (len(p.met), p.conflicts) == (1, ())
            return
        (conflict,) = p.conflicts
        reason = conflict.reason or ""
        assert reason.startswith("IPPool zz-old 10.60.0.0/16 (natOutgoing false) serves "
                                 "workloads outside the pod CIDRs"), reason
        assert "every block of IPPool default-ipv4-ippool" in reason, reason


@pytest.mark.parametrize(("middle", "met"), [
    ({}, True),  # new blocks come from m-mid, which translates as the spec wants
    ({"nodeSelector": "zone == 'a'"}, False),  # other nodes go on to zz-old
    ({"disabled": True}, False),
    ({"cidr": "10.50.0.0/26"}, False),  # its one block is held: full too
])
def test_after_a_full_pod_cidr_pool_only_pools_up_to_the_first_with_room_give_new_blocks(
    middle: dict[str, Any], met: bool,
) -> None:
    # Calico IPAM walks the pools selecting the node in name order and claims the first
    # unclaimed block it meets (libcalico-go findUsableBlock): past a full pod CIDR pool,
    # a pool selecting every node with a block unclaimed takes the new blocks, and the
    # pools sorting after it are not reached. k3snet judged every pool sorting after a
    # full pod CIDR pool as giving new blocks: zz-old was a false conflict.
    with EmulatedApiServer(resources=(*CALICO_RESOURCES, AFFINITIES)) as server:
        server.put(CRD, _pool("default-ipv4-ippool", cidr="10.42.0.0/24", natOutgoing=True,
                              blockSize=26))
        server.put(CRD, _pool("m-mid", **{"cidr": "10.50.0.0/16", "natOutgoing": True,
                                          "blockSize": 26, **middle}))
        server.put(CRD, _pool("zz-old", cidr="10.60.0.0/16", natOutgoing=False))
        for n in range(4):
            server.put(AFFINITIES, _affinity(f"node-{n}", f"10.42.0.{64 * n}/26"))
        server.put(AFFINITIES, _affinity("node-0", "10.50.0.0/26"))
        p = _plan(_backend(server), SPEC.replace("10.42.0.0/16", "10.42.0.0/24"))
        if met:
            assert (len(p.met), p.conflicts) == (1, ())
            return
        (conflict,) = p.conflicts
        assert (conflict.reason or "").startswith("IPPool zz-old 10.60.0.0/16"), conflict.reason


def test_a_load_balancer_block_in_an_old_pool_gives_no_pod_an_address() -> None:
    # Calico IPAM keeps the blocks it cuts for LoadBalancer Services' addresses affine
    # to a virtual node (libcalico-go ipam AffinityTypeVirtual: spec.type "virtual",
    # node "load-balancer"); no pod gets an address from them. k3snet counted one in a
    # pool serving both uses as a node's block: a false conflict naming a node that is
    # none.
    with EmulatedApiServer(resources=(*CALICO_RESOURCES, AFFINITIES)) as server:
        _put_pod_pool(server)
        server.put(CRD, _pool("zz-old", cidr="10.60.0.0/16", natOutgoing=False,
                              allowedUses=["Workload", "LoadBalancer"]))
        affinity = _affinity("load-balancer", "10.60.3.0/26")
        affinity["spec"]["type"] = "virtual"
        server.put(AFFINITIES, affinity)
        p = _plan(_backend(server), SPEC)
        assert (len(p.met), p.conflicts) == (1, ())
        # A node's own block (type host) there is judged.
        server.put(AFFINITIES, {**_affinity("node-a", "10.60.4.0/26"),
                                "spec": {**_affinity("node-a", "10.60.4.0/26")["spec"],
                                         "type": "host"}})
        p = _plan(_backend(server), SPEC)
        (conflict,) = p.conflicts
        reason = conflict.reason or ""
        assert "block 10.60.4.0/26 of node node-a" in reason
        assert "load-balancer" not in reason


def test_blocks_held_in_an_old_pool_are_read_where_calico_keeps_its_crds_in_projectcalico_org(
) -> None:
    # Calico in Kubernetes datastore mode may keep its data in projectcalico.org/v3 CRDs,
    # without crd.projectcalico.org at all (libcalico-go backend/k8s UsingV3CRDs: by
    # discovery, or CALICO_API_GROUP): its BlockAffinities are then
    # blockaffinities.projectcalico.org. k3snet listed crd.projectcalico.org/v1 only,
    # took its 404 for an etcd datastore (no blocks), and judged the pod CIDR met.
    v3_only = ("projectcalico.org/v3/ippools", "projectcalico.org/v3/felixconfigurations",
               "projectcalico.org/v3/blockaffinities")
    with EmulatedApiServer(resources=v3_only) as server:
        v3 = "projectcalico.org/v3/ippools"
        server.put(v3, {**_pool("default-ipv4-ippool", cidr="10.42.0.0/16", natOutgoing=True),
                        "apiVersion": "projectcalico.org/v3"})
        server.put(v3, {**_pool("zz-old", cidr="10.60.0.0/16", natOutgoing=False),
                        "apiVersion": "projectcalico.org/v3"})
        affinity = _affinity("node-a", "10.60.3.0/26")
        affinity["apiVersion"] = "projectcalico.org/v3"
        affinity["spec"]["deleted"] = False  # a boolean in projectcalico.org/v3
        server.put("projectcalico.org/v3/blockaffinities", affinity)
        backend = CalicoBackend(api_client=server.api_client(), timeout=10.0, api="auto")
        p = _plan(backend, SPEC)
        assert p.met == ()
        (conflict,) = p.conflicts
        assert "block 10.60.3.0/26 of node node-a" in (conflict.reason or "")


def test_blocks_are_read_through_the_pools_api_where_a_migration_left_the_old_crds(
) -> None:
    # Calico's migration to projectcalico.org/v3 CRDs copies its data and runs
    # calico-node with CALICO_API_GROUP=projectcalico.org/v3, and leaves the
    # crd.projectcalico.org CRDs, locked, until its DatastoreMigration is deleted: their
    # block affinities stay as they were. k3snet, reading the pools in
    # projectcalico.org/v3, asked crd.projectcalico.org first and judged by those: a
    # block a node took in an old pool since was not seen, and the pod CIDR was met.
    resources = ("projectcalico.org/v3/ippools", "projectcalico.org/v3/felixconfigurations",
                 "projectcalico.org/v3/blockaffinities", AFFINITIES)
    with EmulatedApiServer(resources=resources) as server:
        v3 = "projectcalico.org/v3/ippools"
        server.put(v3, {**_pool("default-ipv4-ippool", cidr="10.42.0.0/16", natOutgoing=True),
                        "apiVersion": "projectcalico.org/v3"})
        server.put(v3, {**_pool("zz-old", cidr="10.60.0.0/16", natOutgoing=False),
                        "apiVersion": "projectcalico.org/v3"})
        server.put(AFFINITIES, _affinity("node-a", "10.42.0.0/26"))  # as migrated
        affinity = _affinity("node-a", "10.60.3.0/26")  # taken since, in v3 alone
        affinity["apiVersion"] = "projectcalico.org/v3"
        server.put("projectcalico.org/v3/blockaffinities", affinity)
        backend = CalicoBackend(api_client=server.api_client(), timeout=10.0, api="auto")
        p = _plan(backend, SPEC)
        assert p.met == ()
        (conflict,) = p.conflicts
        assert "block 10.60.3.0/26 of node node-a" in (conflict.reason or "")


def test_block_affinities_not_listable_are_a_warning_and_not_judged(
    api_server: EmulatedApiServer,
) -> None:
    # Without the right to list them (a 403) the blocks are unknown: said, not guessed
    # (with a second pool serving workloads: with one alone no block decides anything,
    # and none is listed).
    _put_pod_pool(api_server)
    api_server.put(CRD, _pool("zz-old", cidr="10.60.0.0/16", natOutgoing=True))
    api_server.fail(403, method="GET", plural="blockaffinities")
    backend = _backend(api_server)
    p = _plan(backend, SPEC)
    assert (len(p.met), p.conflicts) == (1, ())
    (warning,) = [w for w in backend.warnings if "IPAM blocks" in w]
    assert "not judged" in warning


def test_block_affinities_are_listed_only_where_a_family_has_two_pools_serving_workloads(
) -> None:
    # Every pass listed every block affinity of the cluster (some per node: a 5 000-node
    # cluster's thousands of objects from the API server), though a block decides a
    # verdict only in a second pool of its family serving workloads, outside the pod
    # CIDRs. One such pool per family (IPv4 and IPv6 apart; a disabled pool, or one
    # for LoadBalancer addresses only, gives pods none) lists none.
    with EmulatedApiServer(resources=(*CALICO_RESOURCES, AFFINITIES)) as server:
        _put_pod_pool(server)
        server.put(CRD, _pool("v6", cidr="fd00:42::/56", natOutgoing=True))
        server.put(CRD, _pool("zz-off", cidr="10.60.0.0/16", disabled=True))
        server.put(CRD, _pool("zz-lb", cidr="10.61.0.0/16", allowedUses=["LoadBalancer"]))
        server.put(AFFINITIES, _affinity("node-a", "10.60.3.0/26"))

        def listed() -> int:
            return sum(1 for method, path, _ in server.requests()
                       if method == "GET" and "/blockaffinities" in path)

        p = _plan(_backend(server), SPEC)
        assert (len(p.met), p.conflicts, listed()) == (1, (), 0)
        # zz-off enabled: a second IPv4 pool serving workloads, its block judged.
        server.put(CRD, _pool("zz-off", cidr="10.60.0.0/16", natOutgoing=False))
        p = _plan(_backend(server), SPEC)
        assert (p.met, len(p.conflicts), listed()) == ((), 1, 1)
        assert "block 10.60.3.0/26 of node node-a" in (p.conflicts[0].reason or "")


NODES = "v1/nodes"


def _node(name: str, labels: dict[str, str], calico_labels: str | None = None
          ) -> dict[str, Any]:
    annotations = ({"projectcalico.org/labels": calico_labels}
                   if calico_labels is not None else {})
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels, "annotations": annotations}}


@pytest.mark.parametrize(("labels", "calico_labels", "met"), [
    ({"zone": "new"}, None, True),  # the pool selects the node no more
    ({"zone": "old"}, None, False),
    ({}, '{"zone": "old"}', False),  # Calico's own labels of the node
    ({"zone": "new"}, '{"zone": "old"}', True),  # the Node's labels win over them
    ({}, "{not json", True),  # an annotation Calico cannot read adds nothing
    ({}, '{"zone": "old", "n": 1}', True),  # nor one with a value not a string
    # Go's encoding/json reads a null value as "": the other labels count
    ({}, '{"zone": "old", "spare": null}', False),
])
def test_a_block_in_a_pool_whose_node_selector_no_longer_selects_its_node_gives_no_address(
    labels: dict[str, str], calico_labels: str | None, met: bool,
) -> None:
    # Calico IPAM assigns from the blocks a node holds only in the pools that select it
    # now (libcalico-go prepareAffinityBlocksForHost: the affine blocks filtered by the
    # pools whose nodeSelector matches the node's labels; the others are released once
    # empty). k3snet counted every block a node held: a node relabelled out of an old
    # pool's nodeSelector was a conflict, though its new pods get pod CIDR addresses.
    with EmulatedApiServer(resources=(*CALICO_RESOURCES, AFFINITIES, NODES)) as server:
        _put_pod_pool(server)
        server.put(CRD, _pool("zz-old", cidr="10.60.0.0/16", natOutgoing=False,
                              nodeSelector="zone == 'old'"))
        server.put(AFFINITIES, _affinity("node-a", "10.60.3.0/26"))
        server.put(NODES, _node("node-a", labels, calico_labels))
        server.put(NODES, _node("node-b", {"zone": "old"}))  # holds no block there
        p = _plan(_backend(server), SPEC)
        assert p.changes == ()
        if met:
            assert (len(p.met), p.conflicts) == (1, ())
        else:
            (conflict,) = p.conflicts
            assert "block 10.60.3.0/26 of node node-a" in (conflict.reason or "")


def test_the_nodes_are_listed_for_blocks_only_in_a_pool_not_selecting_every_node() -> None:
    # The node's labels decide only for a block in a pool with a nodeSelector; a node
    # not listed (403: said), or gone, keeps its block judged.
    with EmulatedApiServer(resources=(*CALICO_RESOURCES, AFFINITIES, NODES)) as server:
        _put_pod_pool(server)
        server.put(CRD, _pool("zz-old", cidr="10.60.0.0/16", natOutgoing=False))
        server.put(AFFINITIES, _affinity("node-a", "10.60.3.0/26"))
        server.put(NODES, _node("node-a", {"zone": "new"}))

        def listed() -> int:
            return sum(1 for method, path, _ in server.requests()
                       if method == "GET" and path.split("?")[0].endswith("/nodes"))

        p = _plan(_backend(server), SPEC)
        assert (len(p.conflicts), listed()) == (1, 0)
        server.put(CRD, _pool("zz-old", cidr="10.60.0.0/16", natOutgoing=False,
                              nodeSelector="zone == 'old'"))
        p = _plan(_backend(server), SPEC)
        assert (len(p.met), listed()) == (1, 1)
        # Felix's IPPoolsAndHostIPs reads the Nodes too: one list serves both.
        server.put("crd.projectcalico.org/v1/felixconfigurations", {
            "apiVersion": "crd.projectcalico.org/v1", "kind": "FelixConfiguration",
            "metadata": {"name": "default"},
            "spec": {"natOutgoingExclusions": "IPPoolsAndHostIPs"}})
        p = _plan(_backend(server), SPEC)
        assert (len(p.met), listed()) == (1, 2)
        server.put(AFFINITIES, _affinity("node-gone", "10.60.4.0/26"))
        p = _plan(_backend(server), SPEC)
        (conflict,) = p.conflicts
        assert "block 10.60.4.0/26 of node node-gone" in (conflict.reason or "")
        assert "10.60.3.0/26" not in (conflict.reason or "")
        server.fail(403, method="GET", plural="nodes")
        backend = _backend(server)
        p = _plan(backend, SPEC)
        (conflict,) = p.conflicts
        assert "block 10.60.3.0/26 of node node-a" in (conflict.reason or "")
        (warning,) = [w for w in backend.warnings if "labels" in w]
        assert "forbidden (403)" in warning


NAMESPACES = "v1/namespaces"
PODS = "v1/pods"
POOLS_ANNOTATION = "cni.projectcalico.org/ipv4pools"


@pytest.mark.parametrize(("where", "named", "met"), [
    (None, "", True),  # named by nothing: IPAM gives the node no address there
    (NAMESPACES, '["vms"]', False),  # by name, on the namespace
    (PODS, '["10.60.0.0/16"]', False),  # by CIDR, on a pod
    (PODS, '["other"]', True),  # another pool
    (NAMESPACES, "vms", True),  # no JSON list of names: the CNI plugin fails the pod
])
@pytest.mark.parametrize("pool", [
    {"nodeSelector": "zone == 'vms'"},  # selects no node holding the block
    {"nodeSelector": "!all()"},  # selects no node at all: annotations alone use it
    {"assignmentMode": "Manual"},  # pods asking for it by name alone
])
def test_a_block_in_a_pool_a_pods_or_namespaces_annotation_names_gives_addresses(
    where: str | None, named: str, met: bool, pool: dict[str, str],
) -> None:
    # A pod naming pools in its cni.projectcalico.org/ipv4pools annotation (or its
    # namespace's, which the pod's replaces; cni-plugin k8s.go) gets its address from
    # them whatever their nodeSelector, namespaceSelector or assignmentMode: IPAM uses
    # requested pools unconditionally (libcalico-go ipam.determinePools), from the
    # blocks its node holds there first. k3snet dropped such a block when the pool did
    # not select its node, and judged no Manual or "!all()" pool's blocks: pods of an
    # annotated namespace got addresses outside the pod CIDR, untranslated, while the
    # pod CIDR was met.
    resources = (*CALICO_RESOURCES, AFFINITIES, NODES, NAMESPACES, PODS)
    with EmulatedApiServer(resources=resources) as server:
        _put_pod_pool(server)
        server.put(CRD, _pool("vms", cidr="10.60.0.0/16", natOutgoing=False, **pool))
        server.put(AFFINITIES, _affinity("node-a", "10.60.3.0/26"))
        server.put(NODES, _node("node-a", {"zone": "a"}))
        server.put(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": "plain"}})
        if where is not None:
            metadata: dict[str, Any] = {"name": "legacy",
                                        "annotations": {POOLS_ANNOTATION: named}}
            if where == PODS:
                metadata["namespace"] = "plain"
            server.put(where, {"apiVersion": "v1", "kind": "Pod" if where == PODS
                               else "Namespace", "metadata": metadata})
        p = _plan(_backend(server), SPEC)
        assert p.changes == ()
        if met:
            assert (len(p.met), p.conflicts) == (1, ())
            return
        (conflict,) = p.conflicts
        reason = conflict.reason or ""
        assert reason.startswith("IPPool vms 10.60.0.0/16 (natOutgoing false): block "
                                 "10.60.3.0/26 of node node-a"), reason


@pytest.mark.parametrize("pool", [
    {"assignmentMode": "Manual"},  # selects every node, gives none automatically
    {"nodeSelector": "!all()"},  # selects no node
])
@pytest.mark.parametrize(("where", "pods_listed"), [
    (NAMESPACES, 0),  # the namespaces name it already: the pods can only add pools
    (PODS, 1),
])
def test_a_block_in_a_pool_giving_no_node_addresses_lists_the_nodes_never_and_pods_last(
    pool: dict[str, str], where: str, pods_listed: int,
) -> None:
    # Only a pod's or namespace's annotation naming the pool makes such a block one
    # IPAM assigns from: the Nodes' labels decide nothing, and were listed for it (every
    # Node's metadata, each pass) beside the Namespaces and Pods; and the Pods (every
    # one's metadata) were listed where the Namespaces had decided every block.
    resources = (*CALICO_RESOURCES, AFFINITIES, NODES, NAMESPACES, PODS)
    with EmulatedApiServer(resources=resources) as server:
        _put_pod_pool(server)
        server.put(CRD, _pool("vms", cidr="10.60.0.0/16", natOutgoing=False, **pool))
        server.put(AFFINITIES, _affinity("node-a", "10.60.3.0/26"))
        server.put(NODES, _node("node-a", {"zone": "a"}))
        metadata: dict[str, Any] = {"name": "legacy",
                                    "annotations": {POOLS_ANNOTATION: '["vms"]'}}
        if where == PODS:
            metadata["namespace"] = "default"
        server.put(where, {"apiVersion": "v1", "kind": "Pod" if where == PODS
                           else "Namespace", "metadata": metadata})
        p = _plan(_backend(server), SPEC)
        (conflict,) = p.conflicts
        assert "block 10.60.3.0/26 of node node-a" in (conflict.reason or "")
        listed = [path.split("?")[0].rsplit("/", 1)[-1] for method, path, _
                  in server.requests() if method == "GET"]
        assert (listed.count("nodes"), listed.count("namespaces"),
                listed.count("pods")) == (0, 1, pods_listed)


@pytest.mark.parametrize(("entry", "met"), [
    ('["10.60.0.0"]', False),  # no CIDR to Go's net.ParseCIDR: the pool of that name
    ('["10.60.0.0/32"]', True),  # a CIDR: no pool has it, the pod gets no address
    ('["::ffff:10.60.0.0/112"]', False),  # IPv4-mapped: 10.60.0.0/16 to Go
])
def test_an_annotation_entry_names_the_pool_go_reads_it_as(
    entry: str, met: bool,
) -> None:
    # Calico's CNI plugin resolves an entry Go's net.ParseCIDR refuses (a bare address)
    # as a pool's name, and a pool may be named "10.60.0.0"; Python's ip_network took
    # the entry for 10.60.0.0/32 and the block in the pool it names was dropped.
    resources = (*CALICO_RESOURCES, AFFINITIES, NODES, NAMESPACES, PODS)
    with EmulatedApiServer(resources=resources) as server:
        _put_pod_pool(server)
        server.put(CRD, _pool("10.60.0.0", cidr="10.60.0.0/16", natOutgoing=False,
                              nodeSelector="!all()"))
        server.put(AFFINITIES, _affinity("node-a", "10.60.3.0/26"))
        server.put(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": "legacy", "annotations": {POOLS_ANNOTATION: entry}}})
        p = _plan(_backend(server), SPEC)
        if met:
            assert (len(p.met), p.conflicts) == (1, ())
        else:
            (conflict,) = p.conflicts
            assert "block 10.60.3.0/26 of node node-a" in (conflict.reason or "")


def _holds_text(value: Any, text: str, depth: int = 0) -> bool:
    if isinstance(value, str):
        return value == text
    if depth > 6:
        return False
    if isinstance(value, Mapping):
        value = [*value.keys(), *value.values()]
    if isinstance(value, list | tuple | set | frozenset):
        return any(_holds_text(v, text, depth + 1) for v in value)
    return False


def test_the_nodes_listed_for_one_listing_are_not_kept_after_it() -> None:
    # The Nodes' metadata listed for a block in a pool with a nodeSelector is shared
    # by that listing's questions alone: the backend held every Node's metadata (with
    # its managedFields, over 100 MB for 5,000 nodes) from one pass to the next.
    with EmulatedApiServer(resources=(*CALICO_RESOURCES, AFFINITIES, NODES)) as server:
        _put_pod_pool(server)
        server.put(CRD, _pool("zz-old", cidr="10.60.0.0/16", natOutgoing=False,
                              nodeSelector="zone == 'old'"))
        server.put(AFFINITIES, _affinity("node-a", "10.60.3.0/26"))
        server.put(NODES, _node("node-a", {"zone": "new", "marker": "listed-node-label"}))
        backend = _backend(server)
        assert len(_plan(backend, SPEC).met) == 1
        assert not _holds_text(vars(backend), "listed-node-label")


@pytest.mark.parametrize("field", ["nodeSelector", "namespaceSelector"])
def test_a_pool_outside_the_pod_cidr_selecting_nothing_gives_pods_no_address_first(
    api_server: EmulatedApiServer, field: str
) -> None:
    # "!all()" selects nothing: Calico's own spelling of a pool that gives no pod an
    # address (libcalico-go's selector.NoMatch; the operator's tests park a pool so).
    # IPAM skips a pool whose nodeSelector does not select the node, or whose
    # namespaceSelector does not select the namespace (ipam.determinePools), whatever
    # its name: such a pool sorting first gives no pod its addresses, so the pod CIDR
    # is met (k3snet said a conflict).
    _put_pod_pool(api_server)
    api_server.put(CRD, _pool("aa-parked", cidr="10.60.0.0/16", **{field: "!all()"}))
    p = _plan(_backend(api_server), SPEC)
    assert (p.changes, p.conflicts) == ((), ())
    assert len(p.met) == 1
    # Twice negated, it selects everything again: still judged.
    api_server.put(CRD, _pool("aa-parked", cidr="10.60.0.0/16", **{field: "!!all()"}))
    assert _plan(_backend(api_server), SPEC).conflicts


def test_an_unparseable_namespace_selector_of_a_pool_selecting_no_node_breaks_nothing(
    api_server: EmulatedApiServer,
) -> None:
    # IPAM evaluates a pool's nodeSelector first and skips the pool when it does not
    # select the node, before it parses the namespaceSelector (ipam.determinePools):
    # with "!all()" the namespaceSelector is never parsed. Reported, and the pod CIDR
    # is met (k3snet said no pod of the family got an address).
    _put_pod_pool(api_server)
    api_server.put(CRD, _pool("parked", cidr="10.60.0.0/16", nodeSelector="!all()",
                              namespaceSelector="(x"))
    backend = _backend(api_server)
    p = _plan(backend, SPEC)
    assert (p.changes, p.conflicts) == ((), ())
    assert len(p.met) == 1
    (warning,) = backend.warnings
    assert warning.startswith("IPPool parked: spec.namespaceSelector"), warning
    assert "on the nodes its nodeSelector selects" in warning, warning
    # Its nodeSelector unparseable, IPAM fails before it: a conflict.
    api_server.put(CRD, _pool("parked", cidr="10.60.0.0/16", nodeSelector="!all(",
                              namespaceSelector="(x"))
    assert _plan(_backend(api_server), SPEC).conflicts


@pytest.mark.parametrize(("selector", "why"), [
    ("global()", "global()"),
    ("has(x) && global( )", "global()"),
    ("zone == '\x01'", "control character"),
    ("zone == '" + "a" * 1100 + "'", "more than the 1024"),
])
def test_a_spec_node_selector_no_pool_calico_stores_can_have_is_a_spec_problem(
    selector: str, why: str
) -> None:
    # Calico refuses global() in a pool's selectors and a selector over 1024 characters
    # (its IPPool CRD), and k3snet reads no pool with such a selector or a control
    # character in it (IPPool): the spec asked for a pool that can never be there, a
    # conflict on every pass, instead of saying so.
    document = SPEC.replace("calico: {}", f"calico: {{nodeSelector: {json.dumps(selector)}}}")
    with pytest.raises(SpecError) as info:
        compile_spec(Spec.from_yaml(document))
    (problem,) = info.value.problems
    assert problem.path == "cni.calico.nodeSelector"
    assert why in problem.message


def test_compile_ippools_refuses_a_node_selector_no_pool_can_have() -> None:
    # Its node_selector argument was taken as it came (block_size is judged there).
    with pytest.raises(SpecError) as info:
        compile_ippools(Spec.from_yaml(SPEC), node_selector="zone == 'a")
    (problem,) = info.value.problems
    assert problem.path == "cni.calico.nodeSelector"
    assert "unterminated string" in problem.message
    assert compile_ippools(Spec.from_yaml(SPEC), node_selector=" has( zone ) ")


def _pod(name: str, pools: str | None = None) -> dict[str, Any]:
    annotations = {POOLS_ANNOTATION: pools} if pools is not None else {}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": name, "namespace": "apps", "annotations": annotations}}


def _pod_requests(server: EmulatedApiServer, since: int = 0) -> list[dict[str, str]]:
    """The query of each request for the Pods from the ``since``-th request on."""
    return [query for (method, path, _), query
            in list(zip(server.requests(), server.params(), strict=True))[since:]
            if method == "GET" and path.endswith("/pods")]


def test_the_pods_are_listed_once_then_watched_and_a_new_pods_pool_is_seen_within_one_pass(
) -> None:
    # Where the Namespaces do not settle a block, every pass listed every Pod's metadata:
    # 5 000 pods were 10 list requests and every pod's metadata a pass (3.2 s a pass
    # against the emulated server). The pods are listed once, then each pass asks a
    # watch from the list's resourceVersion for the pods changed since (a pod created
    # with an annotation naming the pool is seen in the next pass, one deleted is
    # dropped), and lists again where the watch says the version is too old (410).
    resources = (*CALICO_RESOURCES, AFFINITIES, NODES, NAMESPACES, PODS)
    with EmulatedApiServer(resources=resources) as server:
        _put_pod_pool(server)
        server.put(CRD, _pool("vms", cidr="10.60.0.0/16", natOutgoing=False,
                              assignmentMode="Manual"))
        server.put(AFFINITIES, _affinity("node-a", "10.60.3.0/26"))
        for index in range(3):
            server.put(PODS, _pod(f"web-{index}"))
        backend = _backend(server)

        def pass_() -> tuple[bool, tuple[int, int]]:
            before = len(server.requests())
            p = _plan(backend, SPEC)
            pods = _pod_requests(server, before)
            watched = sum(query.get("watch") == "true" for query in pods)
            return bool(p.conflicts), (len(pods) - watched, watched)

        assert pass_() == (False, (1, 0))  # listed: no pod names vms
        assert pass_() == (False, (0, 1))  # watched: nothing changed
        server.put(PODS, _pod("legacy", '["vms"]'))
        assert pass_() == (True, (0, 1))  # seen within one pass
        assert pass_() == (True, (0, 1))
        server.delete(PODS, "legacy", "apps")
        assert pass_() == (False, (0, 1))
        server.put(PODS, _pod("legacy-2", '["10.60.0.0/16"]'))
        server.compact()
        assert pass_() == (True, (1, 1))  # 410 Expired: listed again
        assert pass_() == (True, (0, 1))


@pytest.mark.parametrize("refused", [True, False])
def test_pods_that_may_not_be_watched_are_listed_on_every_pass(refused: bool) -> None:
    # The watch verb is one more RBAC grant: without it (403) the pods are listed as
    # before, every pass, and nothing is missed. So too where each request's timeout
    # is not above the second the API server holds a watch open: every watch would
    # time out, and every pass fail.
    resources = (*CALICO_RESOURCES, AFFINITIES, NODES, NAMESPACES, PODS)
    with EmulatedApiServer(resources=resources) as server:
        _put_pod_pool(server)
        server.put(CRD, _pool("vms", cidr="10.60.0.0/16", natOutgoing=False,
                              assignmentMode="Manual"))
        server.put(AFFINITIES, _affinity("node-a", "10.60.3.0/26"))
        if refused:
            server.fail(403, method="GET", plural="pods", param="watch", times=None)
            backend = _backend(server)
        else:
            backend = CalicoBackend(api_client=server.api_client(), timeout=1.0, api="crd")
        assert not _plan(backend, SPEC).conflicts
        server.put(PODS, _pod("legacy", '["vms"]'))
        assert _plan(backend, SPEC).conflicts
        server.delete(PODS, "legacy", "apps")
        assert not _plan(backend, SPEC).conflicts
        queries = _pod_requests(server)
        assert sum(query.get("watch") != "true" for query in queries) == 3
        if not refused:
            assert all(query.get("watch") != "true" for query in queries)


@pytest.mark.parametrize("status", [504, 500, 429])
def test_a_failed_watch_of_the_pods_is_answered_by_listing_them_in_the_same_pass(
        status: int) -> None:
    # A watch from the list's resourceVersion can fail where the list did not: with
    # several API servers (K3s' HA servers behind the kubernetes Service), one whose
    # watch cache is behind the version another listed at answers 504 "Too large
    # resource version" after waiting 3 s for it. The pass failed (only 403 and 410
    # listed again): it lists the Pods instead, as before the watch, and watches
    # again from that list's version on the next pass.
    resources = (*CALICO_RESOURCES, AFFINITIES, NODES, NAMESPACES, PODS)
    with EmulatedApiServer(resources=resources) as server:
        _put_pod_pool(server)
        server.put(CRD, _pool("vms", cidr="10.60.0.0/16", natOutgoing=False,
                              assignmentMode="Manual"))
        server.put(AFFINITIES, _affinity("node-a", "10.60.3.0/26"))
        backend = _backend(server)
        assert not _plan(backend, SPEC).conflicts
        server.put(PODS, _pod("legacy", '["vms"]'))
        server.fail(status, method="GET", plural="pods", param="watch", times=1,
                    message="Too large resource version")
        before = len(server.requests())
        assert _plan(backend, SPEC).conflicts
        queries = _pod_requests(server, before)
        assert [query.get("watch") == "true" for query in queries] == [True, False]
        before = len(server.requests())
        server.delete(PODS, "legacy", "apps")
        assert not _plan(backend, SPEC).conflicts
        assert [query.get("watch") for query in _pod_requests(server, before)] == ["true"]


def test_the_emulated_watch_of_one_second_sends_every_change_in_order_and_no_bookmark(
) -> None:
    # The real API server schedules a watch's bookmark two seconds before its
    # timeoutSeconds ends: a watch held one second gets none, and the version to watch
    # from moves on with the pods' own events alone (a change of another resource
    # does not move it). The emulator sent a bookmark at its version, which let the
    # backend's version move where a real server's does not.
    with EmulatedApiServer(resources=(NAMESPACES, PODS)) as server:
        server.put(PODS, _pod("web", '["vms"]'))
        pods = client.CoreV1Api(server.api_client()).list_pod_for_all_namespaces
        versions: list[str] = []
        list_metadata(pods, "list Pods", timeout=10.0, on_version=versions.append)
        server.put(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": "other"}})
        events, version = watch_metadata(pods, "watch Pods", since=versions[-1],
                                         timeout=10.0)
        assert (events, version) == ([], versions[-1])
        # Deleted, then made again under its name: both, in their order.
        server.delete(PODS, "web", "apps")
        server.put(PODS, _pod("web"))
        events, version = watch_metadata(pods, "watch Pods", since=version, timeout=10.0)
        assert [kind for kind, _ in events] == ["DELETED", "MODIFIED"]
        assert version == events[-1][1]["metadata"]["resourceVersion"]
        assert not events[-1][1]["metadata"].get("annotations")
