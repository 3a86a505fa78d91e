"""Pools as Calico reads their selectors and ``allowedUses``: stored through the CRDs
(Calico in Kubernetes datastore mode, written without the Calico API server's
validation), read by the real backend from the emulated API server, judged as
Calico's IPAM and Felix judge them."""

from __future__ import annotations

from typing import Any

import pytest

from k3snet.backends.calico import CalicoBackend
from k3snet.planner import Plan, plan
from k3snet.spec import Spec
from k3snet.spec import compile as compile_spec
from k3snet.testing.kube import EmulatedApiServer

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

