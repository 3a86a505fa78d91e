"""Masquerade that gives the pods' connections an address of the pod network.

IPv6 masquerade takes the node's address nearest the destination among every device's
(``ipv6_dev_get_saddr``). On a node whose uplink holds no global IPv6 address (an
unnumbered or link-local-only uplink) the nearest can be the CNI bridge's own,
``fd42:42::1`` inside the pod CIDR: the destination answers it, the network beyond the
node routes it as it routes the pods' (not back), and the connection fails as without
masquerade. The doctor said "reaches; the destination sees fd42:42::1" (the reply taken
to come back on ``cni0``, the interface holding the address).
"""

from __future__ import annotations

import pytest

from k3snet.doctor import Flow, NodeState, Verdict, diagnose
from k3snet.lab.netns import run_in

from .conftest import DoctorLab, Topology

pytestmark = [pytest.mark.kernel]


def test_masquerade_to_an_address_of_the_pod_network_is_no_way_back(
        doctor_lab: DoctorLab) -> None:
    topology = Topology(family=6)
    doctor_lab.configure(topology)
    node = doctor_lab.node
    # The uplinks keep their link-local addresses only; the route to the database stays.
    run_in(node, ["ip", "-6", "addr", "del", "fd01:1::5/64", "dev", "eth0"])
    run_in(node, ["ip", "-6", "addr", "del", "fd01:4::5/64", "dev", "eth1"])
    try:
        run_in(node, ["ip", "-6", "route", "replace", "fd01:2::/64", "via", "fd01:1::1",
                      "dev", "eth0", "onlink", "proto", "static"])
        doctor_lab.forget_neighbours()
        answer, result = doctor_lab.kernel_and_trace(topology, timeout=2)
        assert not answer["ok"], answer  # the database's answer to fd42:42::1 is lost
        assert result.verdict is Verdict.BLOCKED, result.render()
        assert result.blocked_at is not None
        assert result.blocked_at.code == "masquerade-pod-address", result.render()
        assert "fd42:42::1" in result.blocked_at.detail, result.render()
        d = diagnose(NodeState.from_capture(doctor_lab.capture()),
                     Flow(topology.pod, topology.destination, port=topology.port))
        assert [f.code for f in d.findings][:1] == ["masquerade-pod-address"], d.render()
        assert not d.fixes.owned, d.render()  # no rule of k3snet's gives the node an address
    finally:
        run_in(node, ["ip", "-6", "addr", "add", "fd01:1::5/64", "dev", "eth0", "nodad"],
               check=False)
        run_in(node, ["ip", "-6", "addr", "add", "fd01:4::5/64", "dev", "eth1", "nodad"],
               check=False)


def test_masquerade_to_the_uplinks_own_address_inside_a_broad_pod_cidr_reaches(
        doctor_lab: DoctorLab) -> None:
    # A cluster CIDR that also holds the uplink's address (fd00::/8 from a spec or a CNI
    # file, the uplink's fd01:1::5): the masquerade gives the connection the uplink's own
    # address, which the network beyond answers on that link, and the kernel's
    # connection works. Not an address of the pods' side: no masquerade-pod-address.
    topology = Topology(family=6)
    doctor_lab.configure(topology)
    answer, _ = doctor_lab.kernel_and_trace(topology, timeout=2)
    assert answer["ok"], answer
    state = NodeState.from_capture(doctor_lab.capture()).with_cluster(pod_cidrs=["fd00::/8"])
    d = diagnose(state, Flow(topology.pod, topology.destination, port=topology.port))
    assert "masquerade-pod-address" not in [f.code for f in d.findings], d.render()
    assert d.trace.verdict is Verdict.REACHES, d.render()
