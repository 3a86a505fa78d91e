"""``-j NETMAP`` in nat PREROUTING and POSTROUTING, the doctor against the kernel.

``NETMAP`` keeps an address's host part under its ``--to`` prefix: of the destination in
PREROUTING (``netmap_tg4``: ``NF_NAT_MANIP_DST``), of the source in POSTROUTING. The nat
chains see a connection's first packet only: a NETMAP that matches the replies' addresses
changes nothing (conntrack translates them back). The doctor read NETMAP in PREROUTING as
a target it did not understand (unknown, while the kernel connected).
"""

from __future__ import annotations

import ipaddress

import pytest

from k3snet.doctor import Flow, NodeState, Verdict, trace
from k3snet.lab.netns import run_in

from .conftest import DoctorLab, Topology

pytestmark = [pytest.mark.kernel]

#: name -> (the nat rule, the address the pod dials, where the connection goes)
_CASES = {
    "prerouting-maps-the-destination": (
        ["PREROUTING", "-s", "10.42.0.0/16", "-d", "192.168.9.0/24", "-j", "NETMAP", "--to",
         "192.168.2.0/24"], "192.168.9.10", "192.168.2.10"),
    "prerouting-matching-the-replies": (
        ["PREROUTING", "-d", "192.168.1.5/32", "-j", "NETMAP", "--to", "10.99.0.5/32"],
        "192.168.2.10", None),
    "postrouting-matching-the-replies": (
        ["POSTROUTING", "-d", "10.42.0.0/16", "-j", "NETMAP", "--to", "10.98.0.0/16"],
        "192.168.2.10", None),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_netmap_translates_a_connections_first_packet_as_the_kernel_does(
        doctor_lab: DoctorLab, case: str) -> None:
    rule, destination, mapped = _CASES[case]
    topology = Topology(nat="masq-nft")
    doctor_lab.configure(topology)
    run_in(doctor_lab.node, ["iptables-nft", "-t", "nat", "-I", *rule])
    probe = doctor_lab.start_probe(destination, 1.5, topology.port)
    state = NodeState.from_capture(doctor_lab.capture())
    answer = probe.answer()
    found = trace(state, Flow(topology.pod, destination, port=topology.port))
    assert answer["ok"] is True, answer
    assert found.verdict is Verdict.REACHES, found.render()
    assert str(found.source_seen) == answer["seen"], found.render()
    if mapped is not None:
        assert found.dnat is not None, found.render()
        assert found.dnat.address == ipaddress.ip_address(mapped), found.render()
