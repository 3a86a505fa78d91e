"""Calico as Felix behaves: clusters shaped like the ones users post, judged by what Calico does.

Each cluster is seeded from a ``kubectl get ippools -o yaml`` style ``List``
document into the emulated API server, read by the real backend, and planned
against a spec. Every rule of issue 11 (item 1) has a test here that fails
without the code that makes it true.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from k3snet.backends.calico import CalicoBackend, read_calico_hosts, read_felix_nat, read_pool
from k3snet.backends.kit import ALLOW_DISRUPTIVE, disruptive_problems
from k3snet.converge import converge
from k3snet.errors import ConflictError, ModelError, PlanError
from k3snet.model.cidr import parse_network
from k3snet.model.cni import CalicoFelixNat, CalicoPools, IPPool
from k3snet.model.state import State, object_from_dict
from k3snet.planner import Change, Plan, plan
from k3snet.spec import Spec, compile_ippools
from k3snet.spec import compile as compile_spec
from k3snet.testing.kube import EmulatedApiServer

pytestmark = pytest.mark.cluster

CRD = "crd.projectcalico.org/v1/ippools"
V3 = "projectcalico.org/v3/ippools"

# Calico issue #7345: a second pool for the pods, and the destination 192.168.2.0/24
# inside the installation's default pool 192.168.0.0/16.
ISSUE_7345 = """\
apiVersion: v1
kind: List
items:
- apiVersion: crd.projectcalico.org/v1
  kind: IPPool
  metadata:
    name: default-ipv4-ippool
  spec:
    allowedUses: [Workload, Tunnel]
    blockSize: 26
    cidr: 192.168.0.0/16
    ipipMode: Always
    natOutgoing: true
    nodeSelector: all()
    vxlanMode: Never
- apiVersion: crd.projectcalico.org/v1
  kind: IPPool
  metadata:
    name: new-pool
  spec:
    blockSize: 26
    cidr: 10.42.0.0/16
    ipipMode: Always
    natOutgoing: true
    nodeSelector: all()
metadata:
  resourceVersion: ""
"""

# A K3s cluster installed with the tigera operator: VXLAN CrossSubnet on the K3s pod CIDR.
K3S_CROSS_SUBNET = """\
apiVersion: v1
kind: List
items:
- apiVersion: crd.projectcalico.org/v1
  kind: IPPool
  metadata:
    name: default-ipv4-ippool
    labels: {app.kubernetes.io/managed-by: tigera-operator}
  spec:
    allowedUses: [Workload, Tunnel]
    blockSize: 26
    cidr: 10.42.0.0/16
    ipipMode: Never
    natOutgoing: true
    nodeSelector: all()
    vxlanMode: CrossSubnet
"""

SPEC_7345 = """\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
cluster: {podCIDRs: [10.42.0.0/16]}
destinations:
  - cidr: 192.168.2.0/24
cni:
  calico: {}
"""


def _seed(server: EmulatedApiServer, document: str, resource: str = CRD) -> None:
    data = yaml.safe_load(document)
    assert data["kind"] == "List"
    for item in data["items"]:
        server.put(resource, item)


def _backend(server: EmulatedApiServer, **options: Any) -> CalicoBackend:
    options.setdefault("api", "crd")
    # No test here waits out the timeout: 2 s failed a list of the emulated server on a
    # machine loaded by other work (a CI run beside other jobs).
    return CalicoBackend(api_client=server.api_client(), timeout=10.0, **options)


def _pool(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
            "metadata": {"name": name}, "spec": spec}


def _plan(backend: CalicoBackend, spec: Spec) -> Plan:
    """Plan as ``k3snet plan`` does: the spec compiled with its ``cni.calico`` settings."""
    return plan(backend.observe(), compile_spec(spec).only(backend.capabilities))


# ---------------------------------------------------------------- destinations inside pools


def test_issue_7345_a_destination_inside_a_pool_is_a_conflict(
    api_server: EmulatedApiServer,
) -> None:
    _seed(api_server, ISSUE_7345)
    backend = _backend(api_server)
    p = _plan(backend, Spec.from_yaml(SPEC_7345))
    assert p.empty  # nothing to write ...
    (conflict,) = p.conflicts  # ... but not "nothing to do"
    assert conflict.wanted.describe() == "calico masquerades pods to 192.168.2.0/24"
    reason = conflict.reason or ""
    assert "inside IPPool default-ipv4-ippool 192.168.0.0/16" in reason
    assert "Calico will not NAT it" in reason
    assert "nftables or iptables backend" in reason  # the fix, both ways out
    assert "make the pool narrower" in reason
    assert "! calico masquerades pods to 192.168.2.0/24" in p.render()
    # The pod CIDR is new-pool: met.
    assert [n.wanted.describe() for n in p.met] == [
        "calico pod CIDR 10.42.0.0/16 is a pool natOutgoing"]
    with pytest.raises(ConflictError, match="Calico will not NAT it"):
        converge(backend, compile_ippools(Spec.from_yaml(SPEC_7345)))


def test_a_disabled_pool_blocks_nat_too(api_server: EmulatedApiServer) -> None:
    _seed(api_server, K3S_CROSS_SUBNET)
    api_server.put(CRD, _pool("lan", cidr="192.168.2.0/25", disabled=True))
    p = _plan(_backend(api_server), Spec.from_yaml(SPEC_7345))
    (conflict,) = p.conflicts
    assert "lan 192.168.2.0/25 (disabled)" in (conflict.reason or "")


def test_a_destination_in_a_loadbalancer_only_pool_says_the_calico_versions_differ(
    api_server: EmulatedApiServer,
) -> None:
    # Before projectcalico/calico#12769 Felix did not NAT to it; since, it does.
    _seed(api_server, K3S_CROSS_SUBNET)
    api_server.put(CRD, _pool("lb", cidr="192.168.2.0/24", allowedUses=["LoadBalancer"]))
    (conflict,) = _plan(_backend(api_server), Spec.from_yaml(SPEC_7345)).conflicts
    assert ("lb 192.168.2.0/24 (LoadBalancer only: Calico before v3.31.6 and v3.32.1 does "
            "not NAT to it, later versions do)") in (conflict.reason or "")


def test_an_excluded_part_inside_a_pool_is_no_conflict(api_server: EmulatedApiServer) -> None:
    _seed(api_server, K3S_CROSS_SUBNET)
    api_server.put(CRD, _pool("lan", cidr="192.168.2.0/25", disabled=True))
    spec = Spec.from_yaml(SPEC_7345.replace("  - cidr: 192.168.2.0/24\n",
                                            "  - cidr: 192.168.2.0/24\n"
                                            "    exclude: [192.168.2.0/25]\n"))
    p = _plan(_backend(api_server), spec)
    assert not p.conflicts  # that part is exempt on purpose, and the pool already exempts it


@pytest.mark.parametrize("inner", [
    "  - {cidr: 192.168.2.0/25, masquerade: false}\n",
    "  - {cidr: 192.168.2.0/25, exclude: [192.168.2.0/26]}\n",
])
def test_a_part_a_destination_inside_keeps_from_nat_is_no_conflict_in_a_pool(
    inner: str, api_server: EmulatedApiServer
) -> None:
    # The most specific destination decides, as in k3snet's own rules: the /24 does not
    # ask Calico to NAT what the /25 inside it keeps, and the user's disabled pool there
    # is that exemption (it was a conflict: "Calico will not NAT it").
    _seed(api_server, K3S_CROSS_SUBNET)
    kept = "192.168.2.0/25" if "masquerade: false" in inner else "192.168.2.0/26"
    api_server.put(CRD, _pool("lan", cidr=kept, disabled=True))
    spec = Spec.from_yaml(SPEC_7345.replace("cni:", inner.rstrip("\n") + "\ncni:"))
    p = _plan(_backend(api_server), spec)
    assert not p.conflicts
    # The rest of the /25 is still the /25's to masquerade: a pool there is a conflict.
    if "exclude" in inner:
        api_server.put(CRD, _pool("lan2", cidr="192.168.2.64/26", disabled=True))
        conflicts = _plan(_backend(api_server), spec).conflicts
        assert sorted(c.wanted.describe() for c in conflicts) == [
            "calico masquerades pods to 192.168.2.0/24 except 192.168.2.0/26",
            "calico masquerades pods to 192.168.2.0/25 except 192.168.2.0/26"]
        assert all("lan2 192.168.2.64/26 (disabled)" in (c.reason or "") for c in conflicts)


@pytest.mark.parametrize("uses", [["LoadBalancer"], ["Tunnel"]])
def test_a_loadbalancer_only_pool_does_not_exempt_a_destination_from_nat(
    api_server: EmulatedApiServer, uses: list[str]
) -> None:
    # Felix's masq manager leaves LoadBalancer-only pools out of the all-ipam-pools set
    # (projectcalico/calico#12769, in v3.31.6 and v3.32.1): traffic to them is
    # masqueraded, so such a pool covering a destination exempts nothing. A pool that
    # also serves workloads still does.
    _seed(api_server, K3S_CROSS_SUBNET)
    api_server.put(CRD, _pool("lb", cidr="172.20.0.0/16", allowedUses=uses))
    exempt = Spec.from_yaml(SPEC_7345.replace("  - cidr: 192.168.2.0/24\n",
                                              "  - cidr: 172.20.0.0/24\n"
                                              "    masquerade: false\n"))
    p = _plan(_backend(api_server), exempt)
    if uses != ["LoadBalancer"]:
        assert (p.changes, p.conflicts) == ((), ())
        return
    assert not p.changes  # never a pool overlapping it
    (conflict,) = p.conflicts
    reason = conflict.reason or ""
    assert "IPPool lb 172.20.0.0/16 is for LoadBalancer addresses only" in reason, reason
    assert "does not exempt 172.20.0.0/24 from NAT" in reason
    assert "#12769" in reason


@pytest.mark.parametrize("twin", ["a-lb", "z-lb"])
def test_a_pool_whose_loadbalancer_only_twin_sorts_first_does_not_exempt_a_destination(
    api_server: EmulatedApiServer, twin: str
) -> None:
    # Of pools of one CIDR Felix takes the one whose name sorts first (libcalico-go's
    # conflictResolvingCache, by name alone, whatever allowedUses say): a-lb. Felix
    # v3.31.6, v3.32.1 and later leave it out of network-ip-pools and masquerade the
    # CIDR, so b-work exempts nothing; it was judged to meet the exemption. Sorting
    # after b-work, the LoadBalancer-only twin is swallowed and b-work exempts. (b-work
    # is Manual: an automatic one sorting before the pod CIDR's pool would give pods
    # its addresses first, untranslated, a conflict of its own.)
    _seed(api_server, K3S_CROSS_SUBNET)
    api_server.put(CRD, _pool(twin, cidr="172.20.0.0/24", allowedUses=["LoadBalancer"]))
    api_server.put(CRD, _pool("b-work", cidr="172.20.0.0/24", assignmentMode="Manual"))
    exempt = Spec.from_yaml(SPEC_7345.replace("  - cidr: 192.168.2.0/24\n",
                                              "  - cidr: 172.20.0.0/24\n"
                                              "    masquerade: false\n"))
    p = _plan(_backend(api_server), exempt)
    assert not p.changes  # never a pool overlapping them
    if twin == "z-lb":
        assert not p.conflicts
        assert "ippool k3snet-nonat-172-20-0-0-24" in " ".join(
            n.wanted.describe() for n in p.met)
        return
    (conflict,) = p.conflicts
    assert "IPPool a-lb 172.20.0.0/24 is for LoadBalancer addresses only" in (
        conflict.reason or "")
    assert "earlier versions do not" in (conflict.reason or "")
    b_work = next(o for o in _backend(api_server).observe().foreign
                  if isinstance(o, IPPool) and o.name == "b-work")
    assert b_work.lb_twin == "a-lb"
    reason = IPPool("k3snet-nonat-x", "172.20.0.0/24", disabled=True).conflict_reason(b_work)
    assert "shares its CIDR with the LoadBalancer-only IPPool a-lb" in (reason or "")


def test_k3snet_s_exemption_pool_in_place_behind_a_loadbalancer_only_twin_is_a_conflict(
    api_server: EmulatedApiServer,
) -> None:
    # k3snet's disabled pool exempts its CIDR until a LoadBalancer-only pool of the same
    # CIDR whose name sorts first ("a-lb" < "k3snet-nonat-...") appears: Felix then
    # takes that one alone, and from v3.31.6 and v3.32.1 masquerades the CIDR. The plan
    # said nothing to do; now a conflict naming the twin, k3snet's pool left in place.
    _seed(api_server, K3S_CROSS_SUBNET)
    exempt = Spec.from_yaml(SPEC_7345.replace("  - cidr: 192.168.2.0/24\n",
                                              "  - cidr: 172.20.0.0/24\n"
                                              "    masquerade: false\n"))
    backend = _backend(api_server)
    converge(backend, compile_ippools(exempt))
    assert _plan(backend, exempt).conflicts == ()
    api_server.put(CRD, _pool("a-lb", cidr="172.20.0.0/24", allowedUses=["LoadBalancer"]))
    p = _plan(_backend(api_server), exempt)
    assert not p.changes  # left as it is: no delete, no re-apply on every pass
    (conflict,) = p.conflicts
    assert conflict.wanted.describe().startswith("ippool k3snet-nonat-172-20-0-0-24")
    assert conflict.owned is not None
    assert "IPPool a-lb 172.20.0.0/24 is for LoadBalancer addresses only" in (
        conflict.reason or "")
    # Sorting after k3snet's pool, the twin is swallowed: in place, nothing to say.
    api_server.delete(CRD, "a-lb")
    api_server.put(CRD, _pool("z-lb", cidr="172.20.0.0/24", allowedUses=["LoadBalancer"]))
    p = _plan(_backend(api_server), exempt)
    assert (p.changes, p.conflicts) == ((), ())


# ---------------------------------------------------------------- pod CIDRs must be pools


def test_a_pod_cidr_whose_masquerading_loadbalancer_only_twin_sorts_first_is_never_met(
    api_server: EmulatedApiServer,
) -> None:
    # Pods get 10.42.x from default-ipv4-ippool, but Felix takes a-lb for the CIDR (its
    # name sorts first): natOutgoing puts 10.42.0.0/16 in its masquerade set, and from
    # v3.31.6 and v3.32.1 on, LoadBalancer-only, not in network-ip-pools, so pods'
    # traffic to pods of other nodes was masqueraded while the plan said met.
    api_server.put(CRD, _pool("default-ipv4-ippool", cidr="10.42.0.0/16", natOutgoing=True))
    api_server.put(CRD, _pool("a-lb", cidr="10.42.0.0/16", natOutgoing=True,
                              allowedUses=["LoadBalancer"]))
    document = SPEC_7345.replace("192.168.2.0/24", "172.30.0.0/24")
    p = _plan(_backend(api_server), Spec.from_yaml(document))
    assert p.met == ()
    (conflict,) = p.conflicts
    reason = conflict.reason or ""
    assert "IPPool a-lb 10.42.0.0/16 is for LoadBalancer addresses only" in reason, reason
    assert "v3.31.6, v3.32.1 and later" in reason
    assert "masquerade pods' traffic to other pods in 10.42.0.0/16" in reason
    # Without natOutgoing the twin masquerades nothing: pods are left untranslated, as a
    # spec with the masquerade mode off wants.
    api_server.put(CRD, _pool("default-ipv4-ippool", cidr="10.42.0.0/16"))
    api_server.put(CRD, _pool("a-lb", cidr="10.42.0.0/16", allowedUses=["LoadBalancer"]))
    off = document.replace("cluster: {podCIDRs: [10.42.0.0/16]}",
                           "cluster: {podCIDRs: [10.42.0.0/16]}\nmasquerade: {mode: 'off'}")
    p = _plan(_backend(api_server), Spec.from_yaml(off))
    assert p.conflicts == (), [c.reason for c in p.conflicts]
    # Sorting after the workload pool, the twin decides nothing: met.
    api_server.put(CRD, _pool("z-lb", cidr="10.42.0.0/16", natOutgoing=True,
                              allowedUses=["LoadBalancer"]))
    api_server.delete(CRD, "a-lb")
    api_server.put(CRD, _pool("default-ipv4-ippool", cidr="10.42.0.0/16", natOutgoing=True))
    assert _plan(_backend(api_server), Spec.from_yaml(document)).conflicts == ()


def test_a_loadbalancer_only_twin_without_nat_sorting_first_is_to_be_deleted_not_masqueraded(
    api_server: EmulatedApiServer,
) -> None:
    # Felix takes a-lb, natOutgoing false, for the pod CIDR: pods leave untranslated.
    # The fix said "set natOutgoing: true on it or delete it"; set, the twin masquerades
    # pods' traffic to other pods (Calico v3.31.6, v3.32.1 and later), the next conflict.
    api_server.put(CRD, _pool("default-ipv4-ippool", cidr="10.42.0.0/16", natOutgoing=True))
    api_server.put(CRD, _pool("a-lb", cidr="10.42.0.0/16", allowedUses=["LoadBalancer"]))
    document = SPEC_7345.replace("192.168.2.0/24", "172.30.0.0/24")
    (conflict,) = _plan(_backend(api_server), Spec.from_yaml(document)).conflicts
    reason = conflict.reason or ""
    assert "IPPool a-lb has pod CIDR 10.42.0.0/16 with natOutgoing false" in reason, reason
    assert "set natOutgoing" not in reason, reason
    assert ": delete it (" in reason, reason
    assert "masquerade pods' traffic to other pods" in reason, reason
    # The tigera-operator's twin: removed from the Installation, not given natOutgoing.
    operator = _pool("a-lb", cidr="10.42.0.0/16", allowedUses=["LoadBalancer"])
    operator["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "tigera-operator"}
    api_server.put(CRD, operator)
    (conflict,) = _plan(_backend(api_server), Spec.from_yaml(document)).conflicts
    reason = conflict.reason or ""
    assert "spec.calicoNetwork.ipPools (cidr 10.42.0.0/16): remove that entry" in reason, reason
    assert "natOutgoing: Enabled" not in reason, reason
    # The advice followed, the pod CIDR is met.
    api_server.delete(CRD, "a-lb")
    assert _plan(_backend(api_server), Spec.from_yaml(document)).conflicts == ()


def test_a_pod_cidr_that_is_not_a_pool_is_a_conflict_never_a_new_pool(
    api_server: EmulatedApiServer,
) -> None:
    _seed(api_server, K3S_CROSS_SUBNET)
    backend = _backend(api_server)
    spec = Spec.from_yaml(SPEC_7345.replace("10.42.0.0/16", "10.52.0.0/16"))
    p = _plan(backend, spec)
    assert not [c for c in p.changes if c.action == "add"]  # no "+ ippool ... natOutgoing"
    (conflict,) = p.conflicts
    assert "pod CIDR 10.52.0.0/16 is not a Calico IPPool" in (conflict.reason or "")
    assert "k3snet does not create an enabled pool" in (conflict.reason or "")
    # With no pool at all it is a conflict too (not silence).
    empty = EmulatedApiServer(resources=[CRD])
    with empty:
        (alone,) = _plan(_backend(empty), spec).conflicts
        assert "no pool overlaps it" in (alone.reason or "")


def test_k3s_cross_subnet_pool_meets_the_pod_cidr_and_its_settings(
    api_server: EmulatedApiServer,
) -> None:
    _seed(api_server, K3S_CROSS_SUBNET)
    backend = _backend(api_server)
    crosssubnet = Spec.from_yaml(SPEC_7345.replace("calico: {}",
                                                   "calico: {vxlanMode: CrossSubnet}"))
    p = _plan(backend, crosssubnet)
    assert (p.empty, p.conflicts) == (True, ())
    # IPIP Always asked of a VXLAN pool: a conflict that says which field differs.
    ipip = Spec.from_yaml(SPEC_7345.replace("calico: {}", "calico: {ipipMode: Always}"))
    (conflict,) = _plan(backend, ipip).conflicts
    assert "ipipMode Never (the spec wants Always)" in (conflict.reason or "")


def test_ipip_always_pool_with_nat_off_disagrees_with_the_mode(
    api_server: EmulatedApiServer,
) -> None:
    api_server.put(CRD, _pool("default-ipv4-ippool", cidr="10.42.0.0/16", ipipMode="Always"))
    p = _plan(_backend(api_server), Spec.from_yaml(SPEC_7345))
    (conflict,) = p.conflicts
    assert "natOutgoing false, the masquerade mode wants true" in (conflict.reason or "")


def test_a_pod_cidr_pool_serving_some_nodes_only_meets_the_pod_cidr_only_if_the_spec_says(
    api_server: EmulatedApiServer,
) -> None:
    # Calico IPAM gives the pool's addresses only to pods of the nodes its nodeSelector
    # selects; those of zone b get 10.50.x from zone-b, natOutgoing false, and reach
    # 172.30.0.0/24 untranslated, which the spec masquerades. It was met.
    api_server.put(CRD, _pool("default-ipv4-ippool", cidr="10.42.0.0/16", natOutgoing=True,
                              nodeSelector="zone == 'a'"))
    api_server.put(CRD, _pool("zone-b", cidr="10.50.0.0/16", nodeSelector="zone == 'b'"))
    document = SPEC_7345.replace("192.168.2.0/24", "172.30.0.0/24")
    p = _plan(_backend(api_server), Spec.from_yaml(document))
    assert not p.met
    (conflict,) = p.conflicts
    reason = conflict.reason or ""
    assert ("IPPool default-ipv4-ippool has pod CIDR 10.42.0.0/16 with nodeSelector "
            "\"zone == 'a'\"") in reason, reason
    assert "set nodeSelector: all() on it" in reason
    assert "cni.calico.nodeSelector" in reason
    # Named in the spec, the selector is meant: met.
    named = document.replace("calico: {}", "calico: {nodeSelector: \"zone == 'a'\"}")
    p = _plan(_backend(api_server), Spec.from_yaml(named))
    assert p.conflicts == ()
    assert [n.wanted.describe() for n in p.met] == [
        "calico pod CIDR 10.42.0.0/16 is a pool natOutgoing nodeSelector=\"zone == 'a'\""]
    # all() with blanks, as Calico's tokenizer takes it, selects every node: met.
    api_server.put(CRD, _pool("default-ipv4-ippool", cidr="10.42.0.0/16", natOutgoing=True,
                              nodeSelector=" all( ) "))
    assert _plan(_backend(api_server), Spec.from_yaml(document)).conflicts == ()


# The spec of two zones' pools, one pod CIDR each (_put_zone_pools).
ZONES_SPEC = SPEC_7345.replace("192.168.2.0/24", "172.30.0.0/24").replace(
    "podCIDRs: [10.42.0.0/16]", "podCIDRs: [10.42.0.0/17, 10.42.128.0/17]")


def _put_zone_pools(api_server: EmulatedApiServer) -> None:
    """K3s's cluster CIDR split into two zones' pools, masquerading, serving every node
    between them (``zone == 'a'`` and ``zone != 'a'``)."""
    api_server.put(CRD, _pool("zone-a", cidr="10.42.0.0/17", natOutgoing=True,
                              nodeSelector="zone == 'a'"))
    api_server.put(CRD, _pool("zone-b", cidr="10.42.128.0/17", natOutgoing=True,
                              nodeSelector="zone != 'a'"))

def test_per_zone_pools_one_pod_cidr_each_meet_their_pod_cidrs_as_no_pod_leaves_them(
    api_server: EmulatedApiServer,
) -> None:
    # Two zones' pools, each a pod CIDR of the spec, serve every node between them:
    # no pod gets an address outside the pod CIDRs, so neither serving some nodes
    # only is a conflict (one cni.calico.nodeSelector cannot name both selectors).
    _put_zone_pools(api_server)
    api_server.put(CRD, _pool("v6", cidr="fd42::/48", natOutgoing=True))  # other family
    api_server.put(CRD, _pool("lb", cidr="10.60.0.0/24", allowedUses=["LoadBalancer"]))
    document = ZONES_SPEC
    p = _plan(_backend(api_server), Spec.from_yaml(document))
    assert p.conflicts == (), [c.reason for c in p.conflicts]
    assert len(p.met) == 2
    # A third pool outside the pod CIDRs may serve a node neither selects: a conflict
    # naming it.
    api_server.put(CRD, _pool("edge", cidr="10.70.0.0/16", nodeSelector="edge == 'true'"))
    conflicts = _plan(_backend(api_server), Spec.from_yaml(document)).conflicts
    assert len(conflicts) == 2
    assert all("outside the pod CIDR (IPPool edge 10.70.0.0/16)" in (c.reason or "")
               for c in conflicts), [c.reason for c in conflicts]


def test_per_zone_pools_beside_a_manual_pool_outside_the_pod_cidrs_meet_them(
    api_server: EmulatedApiServer,
) -> None:
    # A pool with assignmentMode Manual gives addresses only to pods asking for it by
    # name: Calico IPAM never hands it to a pod of a node neither zone's pool selects.
    # It was taken for a pool serving those pods: both zones' pools a conflict with no
    # way out, for a static-address pool beside them.
    _put_zone_pools(api_server)
    api_server.put(CRD, _pool("static", cidr="10.70.0.0/24", assignmentMode="Manual"))
    document = ZONES_SPEC
    p = _plan(_backend(api_server), Spec.from_yaml(document))
    assert p.conflicts == (), [c.reason for c in p.conflicts]
    assert len(p.met) == 2
    # Automatic, it is a pool those pods may get addresses from: a conflict naming it.
    api_server.put(CRD, _pool("static", cidr="10.70.0.0/24", assignmentMode="Automatic"))
    conflicts = _plan(_backend(api_server), Spec.from_yaml(document)).conflicts
    assert len(conflicts) == 2
    assert all("(IPPool static 10.70.0.0/24)" in (c.reason or "") for c in conflicts)


def test_pools_splitting_the_pod_cidr_by_zone_are_named_as_the_pod_cidrs_to_list(
    api_server: EmulatedApiServer,
) -> None:
    # K3s's cluster CIDR split into per-zone pools: no pool is the pod CIDR. The fix
    # said to make cluster.podCIDRs "the pool's CIDR" (which one?); listing both, one
    # pod CIDR each, is met.
    _put_zone_pools(api_server)
    document = SPEC_7345.replace("192.168.2.0/24", "172.30.0.0/24")
    (conflict,) = _plan(_backend(api_server), Spec.from_yaml(document)).conflicts
    assert ("list the CIDRs of the pools inside it (10.42.0.0/17, 10.42.128.0/17) in "
            "cluster.podCIDRs in its place") in (conflict.reason or ""), conflict.reason
    listed = document.replace("podCIDRs: [10.42.0.0/16]",
                              "podCIDRs: [10.42.0.0/17, 10.42.128.0/17]")
    p = _plan(_backend(api_server), Spec.from_yaml(listed))
    assert (p.conflicts, len(p.met)) == ((), 2), [c.reason for c in p.conflicts]


@pytest.mark.parametrize("selector", ["all(\u00a0)", "\u2003all()", "all()\u3000"])
def test_a_pod_cidr_pool_whose_all_selector_has_a_blank_calico_does_not_skip_is_not_met(
    api_server: EmulatedApiServer, selector: str,
) -> None:
    # Calico's selector tokenizer skips spaces and tabs only: another blank (a no-break
    # space) around all() fails the parse, and Calico IPAM fails every automatic
    # assignment (it parses every enabled pool's selectors first). Python's \s took it
    # for every node: met, beside a pool outside the pod CIDR whose natOutgoing false
    # leaves pods untranslated.
    api_server.put(CRD, _pool("default-ipv4-ippool", cidr="10.42.0.0/16", natOutgoing=True,
                              nodeSelector=selector))
    api_server.put(CRD, _pool("zone-b", cidr="10.50.0.0/16"))
    document = SPEC_7345.replace("192.168.2.0/24", "172.30.0.0/24")
    p = _plan(_backend(api_server), Spec.from_yaml(document))
    assert p.met == ()
    (conflict,) = p.conflicts
    assert (f"its nodeSelector {json.dumps(selector)} is no selector Calico can parse"
            in (conflict.reason or ""))


def test_a_pool_with_a_node_selector_keeps_felix_from_nat_on_every_node(
    api_server: EmulatedApiServer,
) -> None:
    # Felix's IPPool (libcalico-go's model.IPPool) has no nodeSelector: every Felix puts
    # every pool in its pool sets, so a destination inside a pool serving some nodes is
    # never NATted anywhere, and such a pool exempts a CIDR everywhere.
    _seed(api_server, K3S_CROSS_SUBNET)
    api_server.put(CRD, _pool("edge", cidr="192.168.2.0/24", nodeSelector="edge == 'true'"))
    (conflict,) = _plan(_backend(api_server), Spec.from_yaml(SPEC_7345)).conflicts
    assert "inside IPPool edge 192.168.2.0/24" in (conflict.reason or "")
    exempt = Spec.from_yaml(SPEC_7345.replace("  - cidr: 192.168.2.0/24\n",
                                              "  - cidr: 192.168.2.0/25\n"
                                              "    masquerade: false\n"))
    p = _plan(_backend(api_server), exempt)
    assert (p.changes, p.conflicts) == ((), ())


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("allowedUses", ["LoadBalancer"], "allowedUses (LoadBalancer) leave out Workload"),
        ("allowedUses", ["Tunnel"], "allowedUses (Tunnel) leave out Workload"),
        ("assignmentMode", "Manual", "assignmentMode is Manual"),
        ("namespaceSelector", "team == 'a'", "namespaceSelector \"team == 'a'\" does not"),
        ("disabled", True, "it is disabled"),
    ],
)
def test_a_pool_workloads_cannot_use_never_meets_the_pod_cidr(
    api_server: EmulatedApiServer, field: str, value: Any, why: str
) -> None:
    api_server.put(CRD, _pool("default-ipv4-ippool", cidr="10.42.0.0/16", natOutgoing=True,
                              **{field: value}))
    p = _plan(_backend(api_server), Spec.from_yaml(SPEC_7345))
    assert not p.met
    (conflict,) = p.conflicts
    assert why in (conflict.reason or "")


@pytest.mark.parametrize("selector", ["all()", ""])
def test_a_namespace_selector_selecting_everything_is_usable(
    api_server: EmulatedApiServer, selector: str
) -> None:
    api_server.put(CRD, _pool("default-ipv4-ippool", cidr="10.42.0.0/16", natOutgoing=True,
                              namespaceSelector=selector, allowedUses=["Workload"]))
    p = _plan(_backend(api_server), Spec.from_yaml(SPEC_7345.replace("192.168.2.0/24",
                                                                      "172.30.0.0/24")))
    assert (len(p.met), p.conflicts) == (1, ())


# ---------------------------------------------------------------- the v3 IPPool spec


def test_calico_defaults_for_every_v3_field() -> None:
    pool, warnings = read_pool(_pool("p", cidr="10.42.0.0/16"))
    assert warnings == ()
    assert (pool.allowed_uses, pool.assignment_mode, pool.namespace_selector) == (
        ("Tunnel", "Workload"), "Automatic", "")
    assert (pool.node_selector, pool.block_size, pool.ipip_mode, pool.vxlan_mode) == (
        "all()", 26, "Never", "Never")
    assert (pool.nat_outgoing, pool.disabled, pool.disable_bgp_export) == (False, False, False)
    assert read_pool(_pool("p", cidr="fd00:42::/56"))[0].block_size == 122
    # An empty allowedUses is the default (Calico: "if not specified or empty").
    assert read_pool(_pool("p", cidr="10.42.0.0/16", allowedUses=[]))[0].workload_usable


def test_the_deprecated_v1_fields_mean_nothing_as_to_calico() -> None:
    # Felix's pool conversion (libcalico-go IPPoolV3ToV1) reads only ipipMode and
    # natOutgoing; the v3 API refuses ipip and nat-outgoing ("Setting this field is not
    # allowed"). A pool spelling only the v1 fields neither tunnels nor masquerades.
    pool, warnings = read_pool(_pool("p", cidr="10.42.0.0/16", ipip={
        "enabled": True, "mode": "cross-subnet"}, **{"nat-outgoing": True}))
    assert (pool.ipip_mode, pool.nat_outgoing) == ("Never", False)
    assert len(warnings) == 2
    assert any("spec.nat-outgoing is Calico's deprecated v1 field, which Calico ignores" in w
               and "spec.natOutgoing" in w for w in warnings), warnings
    assert any("spec.ipip is Calico's deprecated v1 field" in w for w in warnings), warnings


def test_a_pod_pool_with_only_v1_nat_outgoing_does_not_meet_the_mode(
    api_server: EmulatedApiServer,
) -> None:
    api_server.put(CRD, _pool("default-ipv4-ippool", cidr="10.42.0.0/16",
                              **{"nat-outgoing": True}))
    p = _plan(_backend(api_server), Spec.from_yaml(SPEC_7345.replace("192.168.2.0/24",
                                                                      "172.30.0.0/24")))
    assert not p.met
    (conflict,) = p.conflicts
    assert "natOutgoing false, the masquerade mode wants true" in (conflict.reason or "")


def test_node_selector_global_is_refused() -> None:
    with pytest.raises(ModelError, match=r"global\(\) is not a node or namespace selector"):
        IPPool("p", "10.42.0.0/16", node_selector="global()")
    with pytest.raises(ModelError, match="global"):
        read_pool(_pool("p", cidr="10.42.0.0/16", nodeSelector="global()"))


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"cidr": "10.42.0.1/16"}, "'10.42.0.1/16'"),
        ({"cidr": "10.300.0.0/16"}, "'10.300.0.0/16'"),
        ({"cidr": "10.42.0.0/16", "natOutgoing": "true"}, "natOutgoing must be a bool"),
        ({"cidr": "10.42.0.0/16", "nodeSelector": "global()"}, "global()"),
        ({"cidr": "10.42.0.0/16", "blockSize": "26"}, "blockSize must be a int"),
    ],
)
def test_an_unreadable_foreign_pool_is_a_conflict_naming_it_and_never_overlapped(
    api_server: EmulatedApiServer, spec: dict[str, Any], problem: str
) -> None:
    api_server.put(CRD, _pool("odd-pool", **spec))
    backend = _backend(api_server)
    exempt = Spec.from_yaml(SPEC_7345.replace("  - cidr: 192.168.2.0/24\n",
                                              "  - cidr: 172.20.0.0/16\n"
                                              "    masquerade: false\n"))
    p = _plan(backend, exempt)
    assert not p.changes  # no exemption pool goes next to a pool k3snet cannot read
    reasons = [n.reason or "" for n in p.conflicts]
    assert any("IPPool odd-pool" in r and problem in r for r in reasons), reasons
    (pools,) = [o for o in backend.observe().foreign if isinstance(o, CalicoPools)]
    assert [name for name, _ in pools.invalid] == ["odd-pool"]


def test_mis_cased_and_unknown_fields_are_dropped_and_reported(
    api_server: EmulatedApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    api_server.put(CRD, _pool("default-ipv4-ippool", cidr="10.42.0.0/16", natOutgoing=True,
                              blocksize=24, vxlanmode="Always", colour="blue"))
    backend = _backend(api_server)
    (pool,) = [p for p in backend.observe().foreign if isinstance(p, IPPool)]
    # As the API server's structural schema prunes them: Calico's defaults apply.
    assert (pool.block_size, pool.vxlan_mode) == (26, "Never")
    assert len(backend.warnings) == 3
    assert any("spec.blocksize" in w and "Calico spells it blockSize" in w
               for w in backend.warnings)
    assert any("spec.vxlanmode" in w and "Calico spells it vxlanMode" in w
               for w in backend.warnings)
    assert "spec.colour is not part of Calico's IPPool API" in " ".join(backend.warnings)
    assert "spec.blocksize" in caplog.text


# ---------------------------------------------------------------- the API in use


def test_v3_is_used_when_the_calico_api_server_is_there() -> None:
    with EmulatedApiServer(resources=[CRD, V3]) as server:
        assert _backend(server, api="auto").api == ("projectcalico.org", "v3")
        assert CalicoBackend(api_client=server.api_client()).api == ("projectcalico.org", "v3")
    with EmulatedApiServer(resources=[CRD]) as server:
        assert CalicoBackend(api_client=server.api_client()).api == (
            "crd.projectcalico.org", "v1")


def test_an_apply_without_field_manager_is_refused_by_the_emulator(
    api_server: EmulatedApiServer,
) -> None:
    from kubernetes import client  # noqa: PLC0415 - optional dependency
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    api = client.CustomObjectsApi(api_server.api_client())
    body = _pool("p", cidr="10.9.0.0/16")
    with pytest.raises(ApiException) as info:
        api.patch_cluster_custom_object("crd.projectcalico.org", "v1", "ippools", "p", body,
                                        _content_type="application/apply-patch+yaml")
    assert info.value.status == 400
    api.patch_cluster_custom_object(  # a missing object is created (201)
        "crd.projectcalico.org", "v1", "ippools", "p", body, field_manager="me",
        _content_type="application/apply-patch+yaml")
    created = api_server.get(CRD, "p")
    assert created is not None
    assert created["metadata"]["managedFields"][0]["manager"] == "me"
    # The manager leaves a field out: server-side apply removes it.
    smaller = _pool("p", cidr="10.9.0.0/16")
    body["spec"]["natOutgoing"] = True
    api.patch_cluster_custom_object("crd.projectcalico.org", "v1", "ippools", "p", body,
                                    field_manager="me",
                                    _content_type="application/apply-patch+yaml")
    after = api.patch_cluster_custom_object("crd.projectcalico.org", "v1", "ippools", "p",
                                            smaller, field_manager="me",
                                            _content_type="application/apply-patch+yaml")
    assert isinstance(after, dict)
    assert "natOutgoing" not in after["spec"]


# ---------------------------------------------------------------- the disruptive escape hatch


class _Disrupts:
    """A backend of the contract: ``disruptive(change)`` and ``allow_disruptive``."""

    def __init__(self, *, allow_disruptive: bool = False) -> None:
        self.allow_disruptive = allow_disruptive

    def disruptive(self, change: Change) -> str | None:
        return "it re-addresses pods" if change.action == "delete" else None


def test_kit_disruptive_problems_name_the_three_ways() -> None:
    pool = IPPool("p", "10.9.0.0/16")
    p = Plan(changes=[Change.delete(pool), Change.add(IPPool("q", "10.8.0.0/16"))])
    (problem,) = disruptive_problems(_Disrupts(), p)
    assert problem.endswith(ALLOW_DISRUPTIVE)
    assert "it re-addresses pods" in problem
    assert ALLOW_DISRUPTIVE == ("cni.allowDisruptive: true in the spec, --allow-disruptive on "
                                "the CLI, or allow_disruptive=True in the library")
    assert disruptive_problems(_Disrupts(allow_disruptive=True), p) == []
    assert disruptive_problems(object(), p) == []  # no disruptive(): nothing is disruptive


def test_converge_passes_allow_disruptive_to_the_backend(api_server: EmulatedApiServer) -> None:
    backend = _backend(api_server)
    legacy = IPPool("k3snet-pods-10-42-0-0-16", "10.42.0.0/16", nat_outgoing=True)
    backend.apply(plan(backend.observe(), State(owned=[legacy])))
    with pytest.raises(PlanError, match="deleting enabled IPPool"):
        converge(backend, State(), allow_teardown=True)
    assert backend.observe().owned == {legacy}
    converge(backend, State(), allow_teardown=True, allow_disruptive=True)
    assert backend.observe().owned == frozenset()
    assert backend.allow_disruptive is False  # only for that call


@pytest.mark.parametrize("cni", ["cni: {allowDisruptive: true}",
                                 "cni: {calico: {allowDisruptive: true}}"])
def test_the_spec_key_and_its_alias_allow_disruptive(cni: str) -> None:
    spec = Spec.from_yaml(f"apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n{cni}\n")
    assert spec.cni.disruptive_allowed
    assert not Spec.from_yaml("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                              ).cni.disruptive_allowed


def test_a_newer_field_set_back_to_its_default_is_applied_explicitly(
    api_server: EmulatedApiServer,
) -> None:
    backend = _backend(api_server)
    narrow = IPPool("k3snet-nonat-172-20-0-0-16", "172.20.0.0/16", disabled=True,
                    allowed_uses=["Tunnel"])
    backend.apply(plan(backend.observe(), State(owned=[narrow])))
    wide = IPPool("k3snet-nonat-172-20-0-0-16", "172.20.0.0/16", disabled=True)
    backend.apply(plan(backend.observe(), State(owned=[wide])))
    stored = api_server.get(CRD, wide.name)
    assert stored is not None
    assert stored["spec"]["allowedUses"] == ["Tunnel", "Workload"]
    assert backend.observe().owned == {wide}
    assert plan(backend.observe(), State(owned=[wide])).empty


def test_issue_7345_through_the_cli(api_server: EmulatedApiServer, tmp_path: Any,
                                    monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    import json  # noqa: PLC0415

    from k3snet.cli import main  # noqa: PLC0415

    _seed(api_server, ISSUE_7345)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": api_server.url}}],
        "users": [{"name": "lab", "user": {}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab"}}]}))
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_7345)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code = main(["plan", "-f", str(spec), "--backend", "calico", "--no-facts",
                 "--backend-opt", f"calico.kubeconfig={kubeconfig}",
                 "--backend-opt", "calico.api=crd"])
    out = capsys.readouterr().out
    assert code == 4, out  # conflicts, not "No changes"
    assert "! calico masquerades pods to 192.168.2.0/24" in out
    assert "Calico will not NAT it" in out


# ------------------------------------------------------- disabled pools smaller than a block


def test_a_disabled_pool_smaller_than_its_block_is_readable_and_exempts_its_hosts(
    api_server: EmulatedApiServer,
) -> None:
    # Calico's validator checks "IP pool size is too small ... equal to or greater than
    # the block size" only for enabled pools (validateIPPoolSpec: `if !pool.Disabled`),
    # so Calico's documented way to exempt one host from NAT, a disabled /32 pool whose
    # blockSize is defaulted to 26, is a valid pool Felix puts in its all-pools set.
    _seed(api_server, K3S_CROSS_SUBNET)
    api_server.put(CRD, _pool("nas", cidr="192.168.2.10/32", disabled=True, blockSize=26))
    api_server.put(CRD, _pool("nas6", cidr="fd00:2::10/128", disabled=True))
    backend = _backend(api_server)
    (pools,) = [o for o in backend.observe().foreign if isinstance(o, CalicoPools)]
    assert pools.invalid == ()
    assert {(p.name, str(p.cidr), p.block_size) for p in pools.pools} >= {
        ("nas", "192.168.2.10/32", 26), ("nas6", "fd00:2::10/128", 122)}
    # The exemption it already gives is met: no pool of k3snet's, no conflict.
    exempt = Spec.from_yaml(SPEC_7345.replace("  - cidr: 192.168.2.0/24\n",
                                              "  - cidr: 192.168.2.10/32\n"
                                              "    masquerade: false\n"))
    p = _plan(backend, exempt)
    assert (p.changes, p.conflicts) == ((), ())
    # A destination around it is judged as Felix does: that host is not NATted.
    (conflict,) = _plan(backend, Spec.from_yaml(SPEC_7345)).conflicts
    assert "nas 192.168.2.10/32 (disabled)" in (conflict.reason or "")


def test_an_enabled_pool_smaller_than_its_block_stays_unreadable() -> None:
    with pytest.raises(ModelError, match="smaller than one block"):
        read_pool(_pool("tiny", cidr="10.50.0.0/28", blockSize=26))
    with pytest.raises(ModelError, match="smaller than one block"):
        IPPool("tiny", "10.50.0.0/28", block_size=26)


def test_aws_subnet_id_is_a_calico_field_and_no_warning(api_server: EmulatedApiServer) -> None:
    # IPPoolSpec.AWSSubnetID (`awsSubnetID`, Calico's AWS-backed pools) is part of
    # Calico's v3 API: the API server keeps it, so it is no "dropped field".
    api_server.put(CRD, _pool("aws-pool", cidr="10.42.0.0/16", natOutgoing=True,
                              awsSubnetID="subnet-0123456789abcdef0"))
    backend = _backend(api_server)
    (pool,) = [p for p in backend.observe().foreign if isinstance(p, IPPool)]
    assert pool.nat_outgoing is True
    assert backend.warnings == ()


# ---------------------------------------------------------------- overlapping natOutgoing pools

SPEC_NAT_OFF = """\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
cluster: {podCIDRs: [10.42.0.0/16]}
masquerade: {mode: "off"}
cni:
  calico: {}
"""


@pytest.mark.parametrize("pool", [
    {"cidr": "10.42.128.0/17", "natOutgoing": True},  # inside the pod CIDR
    {"cidr": "10.42.7.0/24", "natOutgoing": True, "disabled": True},  # disabled counts too
    {"cidr": "10.0.0.0/8", "natOutgoing": True},  # around it
    # a second pool of the same CIDR, whose name sorts first: Felix uses it alone
    {"cidr": "10.42.0.0/16", "natOutgoing": True, "name": "aa-other"},
])
def test_an_overlapping_nat_outgoing_pool_masquerades_pods_the_mode_off_exempts(
    api_server: EmulatedApiServer, pool: dict[str, Any]
) -> None:
    # Felix masquerades when the source is in its masq-ipam-pools set (an ipset hash:net:
    # any address inside any natOutgoing pool, disabled or not) and the destination is
    # in no pool; so pods of a natOutgoing: false pool are masqueraded wherever a
    # natOutgoing pool overlaps it. The CRDs (no Calico API server) accept such pools.
    api_server.put(CRD, _pool("default-ipv4-ippool", cidr="10.42.0.0/16", natOutgoing=False))
    backend = _backend(api_server)
    spec = Spec.from_yaml(SPEC_NAT_OFF)
    before = _plan(backend, spec)
    assert before.conflicts == ()
    assert [n.wanted.describe() for n in before.met] == [
        "calico pod CIDR 10.42.0.0/16 is a pool without natOutgoing"]
    name, fields = pool.get("name", "other"), {k: v for k, v in pool.items() if k != "name"}
    api_server.put(CRD, _pool(name, **fields))
    p = _plan(backend, spec)
    (conflict,) = p.conflicts
    reason = conflict.reason or ""
    assert f"IPPool {name} {pool['cidr']} has natOutgoing: true" in reason, reason
    assert "Felix masquerades traffic from every address inside a natOutgoing pool" in reason
    assert conflict.wanted.describe() == (
        "calico pod CIDR 10.42.0.0/16 is a pool without natOutgoing")


def test_a_nat_outgoing_pool_beside_the_pod_cidr_is_no_conflict_when_the_mode_is_off(
    api_server: EmulatedApiServer,
) -> None:
    api_server.put(CRD, _pool("default-ipv4-ippool", cidr="10.42.0.0/16"))
    api_server.put(CRD, _pool("vms", cidr="10.43.0.0/16", natOutgoing=True))
    api_server.put(CRD, _pool("v6", cidr="fd42::/48", natOutgoing=True))
    assert _plan(_backend(api_server), Spec.from_yaml(SPEC_NAT_OFF)).conflicts == ()


def test_of_two_pools_of_the_pod_cidr_felix_takes_the_one_whose_name_sorts_first(
    api_server: EmulatedApiServer,
) -> None:
    # Felix's syncer keys pools by CIDR and, of pools of one CIDR, passes on only the one
    # whose name sorts first (libcalico-go's conflictResolvingCache): its natOutgoing
    # decides for every pod of the CIDR; the other is swallowed. Here default-ipv4-ippool
    # (natOutgoing: true) sorts before zz-twin: the pods are masqueraded.
    _seed(api_server, K3S_CROSS_SUBNET)
    api_server.put(CRD, _pool("zz-twin", cidr="10.42.0.0/16", vxlanMode="CrossSubnet"))
    p = _plan(_backend(api_server), Spec.from_yaml(SPEC_7345))
    assert [n.wanted.describe() for n in p.met if "pod CIDR" in n.wanted.describe()] == [
        "calico pod CIDR 10.42.0.0/16 is a pool natOutgoing"]
    assert not [n for n in p.conflicts if "pod CIDR" in n.wanted.describe()]


def test_a_pool_of_the_pod_cidr_sorting_first_without_nat_outgoing_is_a_conflict(
    api_server: EmulatedApiServer,
) -> None:
    # aa-twin sorts before default-ipv4-ippool: Felix takes its natOutgoing: false, and
    # the pods of 10.42.0.0/16 leave with their own addresses.
    _seed(api_server, K3S_CROSS_SUBNET)
    api_server.put(CRD, _pool("aa-twin", cidr="10.42.0.0/16", vxlanMode="CrossSubnet"))
    p = _plan(_backend(api_server), Spec.from_yaml(SPEC_7345))
    assert not [n for n in p.met if "pod CIDR" in n.wanted.describe()]
    (conflict,) = [n for n in p.conflicts if "pod CIDR" in n.wanted.describe()]
    reason = conflict.reason or ""
    assert "IPPool aa-twin has pod CIDR 10.42.0.0/16 with natOutgoing false" in reason, reason
    assert "beside default-ipv4-ippool" in reason, reason
    assert "the one whose name sorts first" in reason, reason


def test_a_disabled_pool_sorting_first_decides_nat_for_its_twin_s_pods(
    api_server: EmulatedApiServer,
) -> None:
    # The pods get addresses from the enabled pool (natOutgoing: false), but Felix reads
    # natOutgoing from aa-exempt, the disabled one whose name sorts first: it masquerades
    # them. And with the mode off, that swallowed twin's natOutgoing masquerades nothing.
    api_server.put(CRD, _pool("aa-exempt", cidr="10.42.0.0/16", disabled=True,
                              natOutgoing=True))
    api_server.put(CRD, _pool("default-ipv4-ippool", cidr="10.42.0.0/16"))
    backend = _backend(api_server)
    nat = _plan(backend, Spec.from_yaml(SPEC_7345))
    assert [n.wanted.describe() for n in nat.met if "pod CIDR" in n.wanted.describe()] == [
        "calico pod CIDR 10.42.0.0/16 is a pool natOutgoing"]
    off = _plan(backend, Spec.from_yaml(SPEC_NAT_OFF))
    (conflict,) = off.conflicts
    reason = conflict.reason or ""
    assert "IPPool aa-exempt 10.42.0.0/16 has natOutgoing: true" in reason, reason
    api_server.delete(CRD, "aa-exempt")
    api_server.put(CRD, _pool("zz-exempt", cidr="10.42.0.0/16", disabled=True,
                              natOutgoing=True))
    assert _plan(backend, Spec.from_yaml(SPEC_NAT_OFF)).conflicts == ()



def test_the_encapsulation_of_the_pod_cidr_is_the_one_of_the_pool_felix_takes(
    api_server: EmulatedApiServer,
) -> None:
    # Felix's routes and VXLAN device, and BIRD, take ipipMode and vxlanMode from the one
    # pool of a CIDR the syncer passes on, the one whose name sorts first: aa-twin's
    # vxlanMode Never leaves the pods unencapsulated, whatever default-ipv4-ippool (the
    # pool IPAM serves them from) says.
    spec = Spec.from_yaml(SPEC_7345.replace("calico: {}", "calico: {vxlanMode: CrossSubnet}"))
    api_server.put(CRD, _pool("aa-twin", cidr="10.42.0.0/16", disabled=True,
                              natOutgoing=True))
    api_server.put(CRD, _pool("default-ipv4-ippool", cidr="10.42.0.0/16", natOutgoing=True,
                              vxlanMode="CrossSubnet"))
    backend = _backend(api_server)
    p = _plan(backend, spec)
    assert not [n for n in p.met if "pod CIDR" in n.wanted.describe()]
    (conflict,) = [n for n in p.conflicts if "pod CIDR" in n.wanted.describe()]
    reason = conflict.reason or ""
    assert ("IPPool aa-twin has pod CIDR 10.42.0.0/16 with vxlanMode Never (the spec wants "
            "CrossSubnet) beside default-ipv4-ippool of the same CIDR") in reason, reason
    assert "its ipipMode and vxlanMode decide" in reason, reason
    # Sorting after it, the twin is swallowed: the pod CIDR is met.
    api_server.delete(CRD, "aa-twin")
    api_server.put(CRD, _pool("zz-twin", cidr="10.42.0.0/16", disabled=True,
                              natOutgoing=True))
    assert [n.wanted.describe() for n in _plan(backend, spec).met
            if "pod CIDR" in n.wanted.describe()] == [
        'calico pod CIDR 10.42.0.0/16 is a pool natOutgoing vxlanMode="CrossSubnet"']



def test_an_ipv4_mapped_pool_cidr_is_unreadable_felix_keys_it_as_the_ipv4_one(
    api_server: EmulatedApiServer,
) -> None:
    # The CRDs (before Calico v3.32) take any string. Felix parses ::ffff:10.42.0.0/112
    # with Go's net.ParseCIDR and keys the pool by IPNet.String(), "10.42.0.0/16": to
    # Calico v3.32 and before it is a twin of the pod CIDR's pool, and sorting first its
    # natOutgoing: false decides (later versions drop the pool). k3snet read it as an
    # IPv6 pool beside nothing and said the pods were masqueraded.
    _seed(api_server, K3S_CROSS_SUBNET)
    api_server.put(CRD, _pool("aa-mapped", cidr="::ffff:10.42.0.0/112"))
    p = _plan(_backend(api_server), Spec.from_yaml(SPEC_7345))
    (conflict,) = p.conflicts
    assert conflict.wanted.describe() == "calico every IPPool readable"
    reason = conflict.reason or ""
    assert ("IPPool aa-mapped: spec.cidr ::ffff:a2a:0/112 is an IPv4-mapped IPv6 CIDR, "
            "which Felix takes for the IPv4 CIDR 10.42.0.0/16") in reason, reason
    # An IPv6 pool of other addresses stays one.
    api_server.delete(CRD, "aa-mapped")
    api_server.put(CRD, _pool("aa-v6", cidr="fd00:10:42::/112"))
    assert _plan(_backend(api_server), Spec.from_yaml(SPEC_7345)).conflicts == ()


# ---------------------------------------------------------------- FelixConfiguration

FELIX = "crd.projectcalico.org/v1/felixconfigurations"

SPEC_VIA_ETH1 = """\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
cluster: {podCIDRs: [10.42.0.0/16]}
destinations:
  - cidr: 192.168.50.0/24
    device: eth1
cni:
  calico: {}
"""


def _felix(name: str, annotations: dict[str, str] | None = None, **spec: Any
           ) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "crd.projectcalico.org/v1", "kind": "FelixConfiguration",
            "metadata": metadata, "spec": spec}


def _felix_conflicts(server: EmulatedApiServer, spec: str = SPEC_VIA_ETH1) -> list[str]:
    _seed(server, K3S_CROSS_SUBNET)
    p = _plan(_backend(server), Spec.from_yaml(spec))
    return [c.reason or "" for c in p.conflicts]


def test_an_interface_filter_the_destination_s_device_misses_is_a_conflict(
    api_server: EmulatedApiServer,
) -> None:
    api_server.put(FELIX, _felix("default", iptablesNATOutgoingInterfaceFilter="eth0"))
    (reason,) = _felix_conflicts(api_server)
    assert "interfaces matching eth0 (iptablesNATOutgoingInterfaceFilter in " \
           "FelixConfiguration default)" in reason
    assert "leaves through eth1: Calico will not NAT it" in reason
    with pytest.raises(ConflictError, match="iptablesNATOutgoingInterfaceFilter"):
        converge(_backend(api_server), compile_ippools(Spec.from_yaml(SPEC_VIA_ETH1)))


@pytest.mark.parametrize("allowed", ["eth+", "eth1", "e+", "+", "none"])
def test_an_interface_filter_matching_the_device_is_no_conflict(
    api_server: EmulatedApiServer, allowed: str,
) -> None:
    api_server.put(FELIX, _felix("default", iptablesNATOutgoingInterfaceFilter=allowed))
    assert _felix_conflicts(api_server) == []


def test_masquerade_out_interface_is_judged_when_the_destination_has_no_device(
    api_server: EmulatedApiServer,
) -> None:
    api_server.put(FELIX, _felix("default", iptablesNATOutgoingInterfaceFilter="eth0"))
    spec = SPEC_VIA_ETH1.replace("    device: eth1\n", "") + "masquerade: {outInterface: eth1}\n"
    (reason,) = _felix_conflicts(api_server, spec)
    assert "leaves through eth1" in reason
    # No device and no outInterface: the backend does not see the routes, says nothing.
    api_server.delete(CRD, "default-ipv4-ippool")
    assert _felix_conflicts(api_server, SPEC_VIA_ETH1.replace("    device: eth1\n", "")) == []


def test_a_node_s_own_felix_configuration_overrides_the_default_field_by_field(
    api_server: EmulatedApiServer,
) -> None:
    api_server.put(FELIX, _felix("default", iptablesNATOutgoingInterfaceFilter="eth+"))
    # worker-2 sets only natOutgoingAddress: its filter is still the default's eth+.
    api_server.put(FELIX, _felix("node.worker-2", natOutgoingAddress="192.0.2.7"))
    api_server.put(FELIX, _felix("node.worker-1", iptablesNATOutgoingInterfaceFilter="eth0"))
    api_server.put(FELIX, _felix("not-felix-s", iptablesNATOutgoingInterfaceFilter="eth0"))
    (reason,) = _felix_conflicts(api_server)
    assert "(iptablesNATOutgoingInterfaceFilter in FelixConfiguration node.worker-1)" in reason
    felix = {o.scope: o for o in _backend(api_server).observe().foreign
             if isinstance(o, CalicoFelixNat)}
    assert sorted(felix) == ["default", "node.worker-1", "node.worker-2"]
    assert felix["node.worker-2"].describe() == \
        "calico felix node.worker-2 natOutgoing via eth+ to 192.0.2.7"


def test_an_annotation_overrides_the_felix_field_as_calico_s_config_processor_does(
    api_server: EmulatedApiServer,
) -> None:
    api_server.put(FELIX, _felix(
        "default", {"config.projectcalico.org/IptablesNATOutgoingInterfaceFilter": "eth0"},
        iptablesNATOutgoingInterfaceFilter="eth+"))
    (reason,) = _felix_conflicts(api_server)
    assert "interfaces matching eth0" in reason


def test_an_annotation_calico_s_v3_api_stored_in_the_crd_overrides_the_felix_field(
    api_server: EmulatedApiServer,
) -> None:
    # Written through Calico's v3 API (calicoctl, its API server), a resource's
    # annotations are kept in the CRD inside the projectcalico.org/metadata annotation,
    # which Calico reads back as the resource's (libcalico-go
    # ConvertK8sResourceToCalicoResource), Felix's config processor included. The
    # backend read the override in metadata.annotations alone: through
    # crd.projectcalico.org it missed it, and judged Felix's field instead.
    stored = json.dumps({"annotations": {
        "config.projectcalico.org/IptablesNATOutgoingInterfaceFilter": "eth0"}})
    api_server.put(FELIX, _felix("default", {"projectcalico.org/metadata": stored},
                                 iptablesNATOutgoingInterfaceFilter="eth+"))
    (reason,) = _felix_conflicts(api_server)
    assert "interfaces matching eth0" in reason


def test_a_felix_value_felix_cannot_parse_is_its_default_and_a_warning(
    api_server: EmulatedApiServer,
) -> None:
    api_server.put(FELIX, _felix("default", iptablesNATOutgoingInterfaceFilter="eth0,eth1",
                                 natPortRange="http", natOutgoingExclusions="ippoolsandhostips"))
    assert _felix_conflicts(api_server) == []  # Felix filters nothing
    backend = _backend(api_server)
    (felix,) = [o for o in backend.observe().foreign if isinstance(o, CalicoFelixNat)]
    assert (felix.interface_filter, felix.port_range, felix.exclusions) == (
        None, None, "IPPoolsAndHostIPs")  # Felix's oneof is case-insensitive
    assert [w.split(" is ")[0] for w in backend.warnings] == [
        "FelixConfiguration default: iptablesNATOutgoingInterfaceFilter 'eth0,eth1'",
        "FelixConfiguration default: natPortRange 'http'"]


def test_snat_addresses_felix_does_not_use_are_a_conflict(api_server: EmulatedApiServer) -> None:
    spec = SPEC_VIA_ETH1 + "masquerade: {snatAddresses: [192.0.2.7]}\n"
    (reason,) = _felix_conflicts(api_server, spec)  # no FelixConfiguration: masquerade
    assert "the spec SNATs pods' traffic to 192.168.50.0/24 to 192.0.2.7" in reason
    assert "FelixConfiguration default sets no natOutgoingAddress" in reason
    api_server.put(FELIX, _felix("default", natOutgoingAddress="192.0.2.8"))
    (reason,) = _felix_conflicts(api_server, spec)
    assert "Felix SNATs it to 192.0.2.8 (natOutgoingAddress in FelixConfiguration default)" \
        in reason
    api_server.put(FELIX, _felix("default", natOutgoingAddress="192.0.2.7"))
    assert _felix_conflicts(api_server, spec) == []


def test_a_masquerading_spec_and_a_felix_nat_outgoing_address_are_no_conflict(
    api_server: EmulatedApiServer,
) -> None:
    # Felix still translates the traffic (to a fixed address): what the spec asks.
    api_server.put(FELIX, _felix("default", natOutgoingAddress="192.0.2.7"))
    assert _felix_conflicts(api_server) == []


def test_felix_configurations_the_backend_may_not_list_are_a_conflict(
    api_server: EmulatedApiServer,
) -> None:
    api_server.fail(403, method="GET", plural="felixconfigurations", times=None)
    (reason,) = _felix_conflicts(api_server)
    assert "k3snet cannot read Calico's FelixConfiguration" in reason
    assert "list felixconfigurations" in reason


def test_a_cluster_without_the_felix_crd_runs_felix_s_defaults() -> None:
    with EmulatedApiServer(resources=(CRD,)) as server:
        assert _felix_conflicts(server) == []
        felix = [o for o in _backend(server).observe().foreign if isinstance(o, CalicoFelixNat)]
        assert [f.describe() for f in felix] == ["calico felix default"]


def test_read_felix_nat_reads_each_field_as_felix_parses_it() -> None:
    found, warnings = read_felix_nat([
        _felix("default", natPortRange="32768:65535", natOutgoingExclusions="IPPoolsAndHostIPs",
               natOutgoingAddress="::ffff:192.0.2.1"),
        _felix("node.a", natPortRange=1024, natOutgoingAddress="none"),
        _felix("node.b", natPortRange="0"),  # MaxPort 0: no range
        _felix("node.c", natPortRange="2000:1000", natOutgoingAddress="2001:db8::1"),
        _felix("edge", nodeSelector="edge == 'true'", iptablesNATOutgoingInterfaceFilter="wg0"),
    ])
    described = [f.describe() for f in found]
    assert described == [
        "calico felix default to 192.0.2.1 ports 32768:65535 not to hosts (IPPoolsAndHostIPs)",
        "calico felix edge natOutgoing via wg0 to 192.0.2.1 ports 32768:65535 not to hosts "
        "(IPPoolsAndHostIPs)",
        "calico felix node.a ports 1024:1024 not to hosts (IPPoolsAndHostIPs)",
        "calico felix node.b to 192.0.2.1 not to hosts (IPPoolsAndHostIPs)",
        "calico felix node.c not to hosts (IPPoolsAndHostIPs)",
    ]
    # node.c's range and IPv6 address: Felix's defaults there, over the default's values
    assert len(warnings) == 2
    for felix in found:
        assert object_from_dict(felix.to_dict()) == felix


def test_an_ipv6_snat_address_is_a_conflict_felix_s_ipv4_address_cannot_meet(
    api_server: EmulatedApiServer,
) -> None:
    api_server.put(FELIX, _felix("default", natOutgoingAddress="192.0.2.7"))
    api_server.put(CRD, _pool("v6", cidr="fd42::/48", natOutgoing=True))
    spec = SPEC_VIA_ETH1.replace("podCIDRs: [10.42.0.0/16]", "podCIDRs: [10.42.0.0/16, fd42::/48]")
    spec = spec.replace("  - cidr: 192.168.50.0/24\n", "  - cidr: 2001:db8:50::/64\n")
    spec += "masquerade: {snatAddresses: [192.0.2.7, '2001:db8::7']}\n"
    (reason,) = _felix_conflicts(api_server, spec)
    assert "Felix writes its IPv4 natOutgoingAddress 192.0.2.7 (FelixConfiguration " \
           "default) into its IPv6 NAT rule too" in reason
    api_server.put(FELIX, _felix("default"))  # masquerading, Felix takes no IPv6 address
    (reason,) = _felix_conflicts(api_server, spec)
    assert "to 2001:db8::7 (masquerade.snatAddresses), and Felix takes no IPv6 address to " \
           "SNAT to (its natOutgoingAddress is IPv4 only)" in reason


def test_felix_s_ipv4_nat_outgoing_address_breaks_its_ipv6_masquerade(
    api_server: EmulatedApiServer,
) -> None:
    # felix/rules/nat.go renders the IPv4 natOutgoingAddress into the IPv6
    # cali-nat-outgoing too; ip6tables-restore and nft refuse it ("Bad IP address"), so
    # Felix masquerades no IPv6 traffic. A masquerading spec planned clean.
    api_server.put(FELIX, _felix("default", natOutgoingAddress="192.0.2.7"))
    api_server.put(CRD, _pool("v6", cidr="fd42::/48", natOutgoing=True))
    spec = SPEC_VIA_ETH1.replace("podCIDRs: [10.42.0.0/16]", "podCIDRs: [10.42.0.0/16, fd42::/48]")
    spec = spec.replace("  - cidr: 192.168.50.0/24\n", "  - cidr: 2001:db8:50::/64\n")
    (reason,) = _felix_conflicts(api_server, spec)
    assert "Felix cannot program its IPv6 NAT table" in reason
    assert "pods' traffic to 2001:db8:50::/64 is not masqueraded" in reason
    assert "unset natOutgoingAddress in FelixConfiguration default" in reason
    api_server.put(FELIX, _felix("default"))
    assert _felix_conflicts(api_server, spec) == []


SPEC_ALL_VIA_ETH1 = """\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
cluster: {podCIDRs: [10.42.0.0/16]}
masquerade: {mode: all, outInterface: eth1}
cni:
  calico: {}
"""


def test_mode_all_s_pod_wide_masquerade_is_judged_against_felix_s_interface_filter(
    api_server: EmulatedApiServer,
) -> None:
    # Mode all masquerades every destination, not only the spec's: with no destination
    # at all, traffic leaving through eth1 was never judged against a filter of eth0.
    api_server.put(FELIX, _felix("default", iptablesNATOutgoingInterfaceFilter="eth0"))
    (reason,) = _felix_conflicts(api_server, SPEC_ALL_VIA_ETH1)
    assert "pods' traffic to 0.0.0.0/0 (masquerade mode all) leaves through eth1" in reason
    api_server.put(FELIX, _felix("default", iptablesNATOutgoingInterfaceFilter="eth+"))
    assert _felix_conflicts(api_server, SPEC_ALL_VIA_ETH1) == []
    # Its snatAddresses too; the pools the mode leaves out are not its conflict.
    api_server.put(FELIX, _felix("default"))
    spec = SPEC_ALL_VIA_ETH1.replace("outInterface: eth1", "snatAddresses: [192.0.2.7]")
    (reason,) = _felix_conflicts(api_server, spec)
    assert "the spec SNATs pods' traffic to 0.0.0.0/0 (masquerade mode all) to 192.0.2.7" \
        in reason


def test_mode_all_s_ipv6_masquerade_is_broken_by_felix_s_nat_outgoing_address(
    api_server: EmulatedApiServer,
) -> None:
    api_server.put(FELIX, _felix("default", natOutgoingAddress="192.0.2.7"))
    api_server.put(CRD, _pool("v6", cidr="fd42::/48", natOutgoing=True))
    spec = SPEC_ALL_VIA_ETH1.replace("podCIDRs: [10.42.0.0/16]",
                                     "podCIDRs: [10.42.0.0/16, fd42::/48]")
    spec = spec.replace("mode: all, outInterface: eth1", "mode: all")
    (reason,) = _felix_conflicts(api_server, spec)
    assert "pods' traffic to ::/0 (masquerade mode all) is not masqueraded" in reason
    api_server.put(FELIX, _felix("default"))
    assert _felix_conflicts(api_server, spec) == []


# -------------------------------------------- natOutgoingExclusions and externalNodesList

def test_an_external_nodes_cidr_felix_excludes_from_nat_is_a_conflict_naming_it(
    api_server: EmulatedApiServer,
) -> None:
    # Felix's all-hosts set holds externalNodesList: with IPPoolsAndHostIPs it does not
    # NAT traffic to it, so part of 192.168.50.0/24 keeps the pods' addresses.
    api_server.put(FELIX, _felix("default", natOutgoingExclusions="IPPoolsAndHostIPs",
                                 externalNodesList=["10.9.0.0/16", "192.168.50.16/28"]))
    (reason,) = _felix_conflicts(api_server)
    assert "natOutgoingExclusions: IPPoolsAndHostIPs in FelixConfiguration default" in reason
    assert "externalNodesList (FelixConfiguration default) counts 192.168.50.16/28" in reason
    assert "10.9.0.0/16" not in reason
    with pytest.raises(ConflictError, match="externalNodesList"):
        converge(_backend(api_server), compile_ippools(Spec.from_yaml(SPEC_VIA_ETH1)))


def test_external_nodes_are_no_conflict_with_ip_pools_only_or_outside_the_destination(
    api_server: EmulatedApiServer,
) -> None:
    api_server.put(FELIX, _felix("default", externalNodesList=["192.168.50.16/28"]))
    assert _felix_conflicts(api_server) == []  # IPPoolsOnly: Felix NATs to the hosts
    api_server.put(FELIX, _felix("default", natOutgoingExclusions="IPPoolsAndHostIPs",
                                 externalNodesList=["192.168.51.0/24"]))
    assert _felix_conflicts(api_server) == []
    spec = SPEC_VIA_ETH1.replace("    device: eth1\n",
                                 "    device: eth1\n    exclude: [192.168.50.0/25]\n")
    api_server.put(FELIX, _felix("default", natOutgoingExclusions="IPPoolsAndHostIPs",
                                 externalNodesList=["192.168.50.7"]))
    assert _felix_conflicts(api_server, spec) == []  # only the excluded part meets it


def test_external_nodes_and_exclusions_merge_across_scopes_field_by_field(
    api_server: EmulatedApiServer,
) -> None:
    api_server.put(FELIX, _felix("default", externalNodesList=["192.168.50.0/30"]))
    api_server.put(FELIX, _felix("node.a", natOutgoingExclusions="IPPoolsAndHostIPs"))
    (reason,) = _felix_conflicts(api_server)
    assert "(natOutgoingExclusions: IPPoolsAndHostIPs in FelixConfiguration node.a)" in reason
    assert "counts 192.168.50.0/30" in reason


def test_read_felix_nat_parses_external_nodes_as_felix_s_cidr_list() -> None:
    found, warnings = read_felix_nat([
        _felix("default", externalNodesList=["192.168.50.7", " 10.1.2.3/8", ""]),
        # the annotation overrides the field, comma-separated like Felix's env var
        _felix("node.a", {"config.projectcalico.org/ExternalNodesCIDRList": "172.16.0.1/12, ,"},
               externalNodesList=["192.168.50.7"]),
        _felix("node.b", externalNodesList=["192.168.50.7", "bogus"]),
        _felix("node.c", externalNodesList=["2001:db8::/64"]),
    ])
    assert [f.external_nodes for f in found] == [
        (parse_network("192.168.50.7/32"), parse_network("10.0.0.0/8")),
        (parse_network("172.16.0.0/12"),),
        (), ()]  # one bad entry: Felix refuses the whole list (and exits)
    assert [w.split(":")[0:2] for w in warnings] == [
        ["FelixConfiguration node.b", " externalNodesList '192.168.50.7,bogus' is not a list of "
         "IPv4 CIDRs or addresses ('bogus')"],
        ["FelixConfiguration node.c", " externalNodesList '2001"]]
    assert all("Felix refuses it and exits" in w for w in warnings)
    assert found[0].describe() == "calico felix default external nodes 192.168.50.7/32,10.0.0.0/8"
    for felix in found:
        assert object_from_dict(felix.to_dict()) == felix


# -------------------------------------------- natOutgoingExclusions and the nodes' addresses

NODES = "v1/nodes"


def _node(name: str, **annotations: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {
                f"projectcalico.org/{k}": v for k, v in annotations.items()}}}


def test_a_calico_node_address_inside_the_destination_is_a_conflict_naming_the_node(
    api_server: EmulatedApiServer,
) -> None:
    # Felix's all-hosts set holds each calico-node's autodetected address (the Node's
    # projectcalico.org/IPv4Address, prefix dropped): with IPPoolsAndHostIPs, pods'
    # traffic to gw-1's 192.168.50.4 keeps the pods' addresses.
    api_server.put(NODES, _node("worker-1", IPv4Address="192.168.1.10/24"))
    api_server.put(NODES, _node("gw-1", IPv4Address="192.168.50.4/24",
                                IPv6Address="fd00:50::4/64"))
    api_server.put(FELIX, _felix("default", natOutgoingExclusions="IPPoolsAndHostIPs"))
    (reason,) = _felix_conflicts(api_server)
    assert "natOutgoingExclusions: IPPoolsAndHostIPs in FelixConfiguration default" in reason
    assert "the Calico nodes' own addresses in its all-hosts set (gw-1 192.168.50.4) " \
           "are inside 192.168.50.0/24" in reason
    assert "worker-1" not in reason
    with pytest.raises(ConflictError, match=r"gw-1 192\.168\.50\.4"):
        converge(_backend(api_server), compile_ippools(Spec.from_yaml(SPEC_VIA_ETH1)))


def test_calico_node_addresses_are_no_conflict_with_ip_pools_only_excluded_or_outside(
    api_server: EmulatedApiServer,
) -> None:
    api_server.put(NODES, _node("gw-1", IPv4Address="192.168.50.4/24"))
    assert _felix_conflicts(api_server) == []  # IPPoolsOnly: Felix NATs to the hosts
    api_server.put(FELIX, _felix("default", natOutgoingExclusions="IPPoolsAndHostIPs"))
    spec = SPEC_VIA_ETH1.replace("    device: eth1\n",
                                 "    device: eth1\n    exclude: [192.168.50.0/28]\n")
    assert _felix_conflicts(api_server, spec) == []  # only the excluded part holds it
    api_server.put(NODES, _node("gw-1", IPv4Address="192.168.51.4/24"))
    assert _felix_conflicts(api_server) == []


def test_nodes_are_listed_only_for_ip_pools_and_host_ips(api_server: EmulatedApiServer) -> None:
    api_server.put(NODES, _node("gw-1", IPv4Address="192.168.50.4/24"))
    _felix_conflicts(api_server)
    assert not [r for r in api_server.requests() if "/nodes" in r[1]]


def test_nodes_that_cannot_be_listed_are_a_warning_not_a_failure(
    api_server: EmulatedApiServer,
) -> None:
    api_server.put(FELIX, _felix("default", natOutgoingExclusions="IPPoolsAndHostIPs"))
    api_server.fail(403, method="GET", plural="nodes")
    _seed(api_server, K3S_CROSS_SUBNET)
    backend = _backend(api_server)
    assert _plan(backend, Spec.from_yaml(SPEC_VIA_ETH1)).conflicts == ()
    assert any("the Calico nodes' own addresses" in w and "are not judged" in w
               for w in backend.warnings)


def test_read_calico_hosts_reads_the_annotations_as_addresses() -> None:
    hosts, warnings = read_calico_hosts([
        _node("a", IPv4Address="192.168.1.10/24", IPv6Address="fd00::a/64"),
        _node("b", IPv4Address="bogus\n", IPv6Address="192.168.1.11/24"),
        {"metadata": {"name": "c"}}, "junk", {"metadata": {"name": 7}},
    ])
    assert hosts == (("a", parse_network("192.168.1.10/32")), ("a", parse_network("fd00::a/128")))
    (warning,) = warnings
    assert "Node b: projectcalico.org/IPv4Address 'bogus\\n' is not an address" in warning
    felix = CalicoFelixNat("default", exclusions="IPPoolsAndHostIPs", hosts=hosts)
    assert object_from_dict(json.loads(json.dumps(felix.to_dict()))) == felix


def _node_lists(server: EmulatedApiServer) -> int:
    return len([p for m, p, _ in server.requests() if m == "GET" and p == "/api/v1/nodes"])


def test_the_nodes_of_a_large_cluster_are_listed_in_pages_of_500(
    api_server: EmulatedApiServer,
) -> None:
    # One request for every Node of a 5 000-node cluster is tens of megabytes the API
    # server builds at once (past the request timeout on a loaded one); listed 500 at a
    # time, as kubectl does, the gateway on the last page is still judged.
    for index in range(1100):
        api_server.put(NODES, _node(f"worker-{index:04}", IPv4Address="192.168.1.10/24"))
    api_server.put(NODES, _node("zz-gw", IPv4Address="192.168.50.4/24"))
    api_server.put(FELIX, _felix("default", natOutgoingExclusions="IPPoolsAndHostIPs"))
    (reason,) = _felix_conflicts(api_server)
    assert "(zz-gw 192.168.50.4)" in reason
    assert _node_lists(api_server) == 3
    # Their metadata alone: a Node's status (images, conditions) is most of its size.
    accepts = [a for (m, p, _), a in zip(api_server.requests(), api_server.accepts(),
                                         strict=True) if p == "/api/v1/nodes"]
    assert len(accepts) == 3
    assert all(a.startswith("application/json;as=PartialObjectMetadataList;") for a in accepts)


def test_an_expired_continue_token_lists_the_nodes_again_whole(
    api_server: EmulatedApiServer,
) -> None:
    # 410 Gone: the API server compacted the version the list began at; client-go's
    # pager then asks for the whole list in one request.
    for index in range(600):
        api_server.put(NODES, _node(f"worker-{index:04}", IPv4Address="192.168.1.10/24"))
    api_server.put(NODES, _node("zz-gw", IPv4Address="192.168.50.4/24"))
    api_server.put(FELIX, _felix("default", natOutgoingExclusions="IPPoolsAndHostIPs"))
    api_server.fail(410, method="GET", plural="nodes", param="continue")
    (reason,) = _felix_conflicts(api_server)
    assert "(zz-gw 192.168.50.4)" in reason
    assert _node_lists(api_server) == 3  # the first page, the refused second, all at once


def test_ip_pools_and_felix_configurations_are_listed_in_pages(
    api_server: EmulatedApiServer,
) -> None:
    for index in range(501):
        api_server.put(CRD, _pool(f"other-{index:03}", cidr=f"10.{200 + index // 256}."
                                  f"{index % 256}.0/24", disabled=True))
    _seed(api_server, K3S_CROSS_SUBNET)
    backend = _backend(api_server)
    pools = backend.observe().foreign
    assert len([p for p in pools if isinstance(p, IPPool)]) == 501 + 1
    lists = [p for m, p, _ in api_server.requests() if m == "GET" and p.endswith("/ippools")]
    assert len(lists) == 2


# ---------------------------------------------------------------- pools the tigera-operator owns

# The tigera-operator's IP pool controller (tigera/operator pkg/controller/ippool/
# pool_controller.go) takes every pool labelled app.kubernetes.io/managed-by:
# tigera-operator as its own and writes it back from Installation default's
# spec.calicoNetwork.ipPools on each reconcile (a watch on IPPools, and periodically):
# an edit of such a pool is undone, and the conflict comes back on the next plan.


def test_a_pod_pool_the_tigera_operator_owns_is_fixed_in_the_installation(
    api_server: EmulatedApiServer,
) -> None:
    _seed(api_server, K3S_CROSS_SUBNET)
    (conflict,) = _plan(_backend(api_server), Spec.from_yaml(SPEC_NAT_OFF)).conflicts
    reason = conflict.reason or ""
    assert "IPPool default-ipv4-ippool has pod CIDR 10.42.0.0/16 with natOutgoing true" in reason
    assert "set natOutgoing: false on it" not in reason, reason
    assert ("the tigera-operator manages IPPool default-ipv4-ippool and sets it back from "
            "Installation default") in reason, reason
    assert "spec.calicoNetwork.ipPools (cidr 10.42.0.0/16): natOutgoing: Disabled" in reason
    ipip = Spec.from_yaml(SPEC_7345.replace("calico: {}", "calico: {ipipMode: Always}"))
    (conflict,) = _plan(_backend(api_server), ipip).conflicts
    reason = conflict.reason or ""
    assert "ipipMode Never (the spec wants Always)" in reason
    assert "change the pool or" not in reason, reason
    assert "spec.calicoNetwork.ipPools (cidr 10.42.0.0/16): encapsulation, not in" in reason


@pytest.mark.parametrize("operator", [True, False])
def test_a_pod_pool_s_block_size_is_never_advised_to_change(
    api_server: EmulatedApiServer, operator: bool,
) -> None:
    # Calico refuses to change an existing pool's blockSize (libcalico-go: "IPPool
    # BlockSize cannot be modified"): the reason sent the administrator to change it in
    # the Installation's ipPools entry (the operator's update then refused, the operator
    # degraded) or in the pool itself. It says a new pool must replace the pool.
    document = K3S_CROSS_SUBNET if operator else K3S_CROSS_SUBNET.replace(
        "    labels: {app.kubernetes.io/managed-by: tigera-operator}\n", "")
    _seed(api_server, document)
    spec = Spec.from_yaml(SPEC_7345.replace("calico: {}", "calico: {blockSize: 24}"))
    (conflict,) = _plan(_backend(api_server), spec).conflicts
    reason = conflict.reason or ""
    assert "blockSize 26 (the spec wants 24)" in reason
    assert "change the pool or" not in reason, reason
    assert "ipPools (cidr 10.42.0.0/16): blockSize" not in reason, reason
    assert "change the spec's cni.calico" in reason
    assert "cannot change the blockSize of an existing pool" in reason, reason
    both = Spec.from_yaml(SPEC_7345.replace("calico: {}",
                                            "calico: {blockSize: 24, ipipMode: Always}"))
    (conflict,) = _plan(_backend(api_server), both).conflicts
    reason = conflict.reason or ""
    assert "cannot change the blockSize of an existing pool" in reason, reason
    if operator:
        assert "ipPools (cidr 10.42.0.0/16): encapsulation, not in" in reason, reason
    else:
        assert "change the pool or the spec's cni.calico" in reason, reason


def test_a_destination_inside_a_pool_the_tigera_operator_owns_names_the_installation(
    api_server: EmulatedApiServer,
) -> None:
    _seed(api_server, ISSUE_7345.replace(
        "    name: default-ipv4-ippool\n",
        "    name: default-ipv4-ippool\n"
        "    labels: {app.kubernetes.io/managed-by: tigera-operator}\n"))
    (conflict,) = _plan(_backend(api_server), Spec.from_yaml(SPEC_7345)).conflicts
    reason = conflict.reason or ""
    assert "make the pool narrower" in reason
    assert ("the tigera-operator manages IPPool default-ipv4-ippool and sets it back from "
            "Installation default") in reason, reason


def test_a_pool_labelled_through_calico_s_v3_metadata_is_the_operator_s_too() -> None:
    item = _pool("default-ipv4-ippool", cidr="10.42.0.0/16", natOutgoing=True)
    item["metadata"]["annotations"] = {"projectcalico.org/metadata": json.dumps(
        {"labels": {"app.kubernetes.io/managed-by": "tigera-operator"}})}
    pool, _ = read_pool(item)
    assert pool.operator
    assert IPPool.from_dict(pool.to_dict()) == pool
    assert not read_pool(_pool("mine", cidr="10.42.0.0/16"))[0].operator
    assert "operator" not in read_pool(_pool("mine", cidr="10.42.0.0/16"))[0].to_dict()


def test_an_overlapping_nat_outgoing_pool_of_the_operator_is_fixed_in_the_installation(
    api_server: EmulatedApiServer,
) -> None:
    api_server.put(CRD, _pool("default-ipv4-ippool", cidr="10.42.0.0/16", natOutgoing=False))
    operator = _pool("wide", cidr="10.0.0.0/8", natOutgoing=True)
    operator["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "tigera-operator"}
    api_server.put(CRD, operator)
    (conflict,) = _plan(_backend(api_server), Spec.from_yaml(SPEC_NAT_OFF)).conflicts
    reason = conflict.reason or ""
    assert "IPPool wide 10.0.0.0/8 has natOutgoing: true" in reason
    assert "set natOutgoing: false on it" not in reason, reason
    assert ("spec.calicoNetwork.ipPools (cidr 10.0.0.0/8): natOutgoing: Disabled, or a CIDR "
            "leaving the pod CIDR out") in reason, reason
    api_server.put(CRD, _pool("mine", cidr="10.42.128.0/17", natOutgoing=True))
    (conflict,) = _plan(_backend(api_server), Spec.from_yaml(SPEC_NAT_OFF)).conflicts
    reason = conflict.reason or ""
    assert "set natOutgoing: false on it or make it leave the pod CIDR out; the " \
           "tigera-operator manages IPPool wide" in reason, reason


def test_a_pod_cidr_pool_ipam_skips_being_deleted_or_not_allocatable_serves_no_pod(
    api_server: EmulatedApiServer,
) -> None:
    # Calico IPAM (libcalico-go's filterIPPool) skips a pool with a deletionTimestamp
    # (v3.31 and later; from v3.32 kube-controllers' finalizer keeps an active pool until
    # its blocks are released) and one whose condition Allocatable is false (v3.32 and
    # later: the newer of two overlapping pools). Felix still reads it (natOutgoing met).
    deleting = yaml.safe_load(K3S_CROSS_SUBNET)["items"][0]
    deleting["metadata"].update(deletionTimestamp="2026-12-07T05:00:00Z",
                                finalizers=["projectcalico.org/ippool-finalizer"])
    api_server.put(CRD, deleting)
    backend = _backend(api_server)
    spec = Spec.from_yaml(SPEC_7345.replace("calico: {}", "calico: {vxlanMode: CrossSubnet}"))
    p = _plan(backend, spec)
    assert not [n for n in p.met if "pod CIDR" in n.wanted.describe()]
    (conflict,) = [n for n in p.conflicts if "pod CIDR" in n.wanted.describe()]
    reason = conflict.reason or ""
    assert ("IPPool default-ipv4-ippool has pod CIDR 10.42.0.0/16 but pods get no address "
            "from it: it is being deleted") in reason, reason
    # An active twin of one CIDR serves the pods: met, the pool being deleted aside.
    api_server.put(CRD, _pool("new-pool", cidr="10.42.0.0/16", natOutgoing=True,
                              vxlanMode="CrossSubnet"))
    met = _plan(backend, spec)
    assert [n for n in met.met if "pod CIDR" in n.wanted.describe()], met.conflicts
    # ... unless kube-controllers marked it not allocatable (it overlaps the older pool).
    twin = _pool("new-pool", cidr="10.42.0.0/16", natOutgoing=True, vxlanMode="CrossSubnet")
    twin["status"] = {"conditions": [{"type": "Allocatable", "status": "False",
                                      "reason": "CIDROverlap", "message": "overlaps"}]}
    api_server.put(CRD, twin)
    assert not [n for n in _plan(backend, spec).met if "pod CIDR" in n.wanted.describe()]
    api_server.delete(CRD, "default-ipv4-ippool")
    (skipped,) = [n for n in _plan(backend, spec).conflicts
                  if "pod CIDR" in n.wanted.describe()]
    assert ("IPPool new-pool has pod CIDR 10.42.0.0/16 but pods get no address from it: its "
            "status says Allocatable: False (CIDROverlap: overlaps)") in (
        skipped.reason or ""), skipped.reason
