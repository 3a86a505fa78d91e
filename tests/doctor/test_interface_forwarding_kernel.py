"""The per-interface forwarding switches against the kernel's.

IPv4 forwards by ``net.ipv4.conf.<in>.forwarding`` of the interface a packet arrives
on (``ip_route_input_slow``): with ``ip_forward = 1`` (written 1 over 1, which sets no
interface's switch), ``cni0`` at 0 drops the pods' packets and the uplink at 0 their
replies. IPv6 forwards by ``net.ipv6.conf.all.forwarding`` alone (``ip6_forward``),
whatever an interface's own ``forwarding`` says.
"""

from __future__ import annotations

import pytest

from k3snet.doctor import Flow, NodeState, Verdict, diagnose
from k3snet.lab.netns import run_in

from .conftest import DoctorLab, Topology

pytestmark = [pytest.mark.kernel]


def _restore(doctor_lab: DoctorLab) -> None:
    # 0 then 1: writing ip_forward 1 over 1 would leave the interfaces' switches as set
    run_in(doctor_lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=0",
                             "net.ipv4.ip_forward=1"], check=False)
    run_in(doctor_lab.node, ["sysctl", "-q", "-w", *(
        f"net.ipv6.conf.{name}.forwarding=1" for name in ("all", "cni0", "eth0"))],
           check=False)


@pytest.mark.parametrize("interface", ["cni0", "eth0"], ids=["pod-side", "uplink"])
def test_an_ipv4_interface_switch_at_0_beside_ip_forward_1_blocks_as_in_the_kernel(
        doctor_lab: DoctorLab, interface: str) -> None:
    topology = Topology(family=4, forwarding=True)
    doctor_lab.configure(topology)
    try:
        run_in(doctor_lab.node, ["sysctl", "-q", "-w",
                                 f"net.ipv4.conf.{interface}.forwarding=0"])
        answer, found = doctor_lab.kernel_and_trace(topology, until_dropped=True)
        assert answer["ok"] is False, answer
        assert found.verdict is Verdict.BLOCKED, found.render()
        d = diagnose(NodeState.from_capture(doctor_lab.capture()),
                     Flow(topology.pod, topology.destination, port=topology.port))
        assert [f.code for f in d.findings][:1] == ["forwarding-off"], d.render()
        assert [str(c) for f in d.findings for c in f.fix] == [
            f"sysctl net.ipv4.conf.{interface}.forwarding = 1"], d.render()
        assert d.after.verdict is Verdict.REACHES, d.render()
    finally:
        _restore(doctor_lab)


def test_ipv6_interface_switches_at_0_do_not_block_as_in_the_kernel(
        doctor_lab: DoctorLab) -> None:
    topology = Topology(family=6, forwarding=True)
    doctor_lab.configure(topology)
    doctor_lab.forget_neighbours()
    try:
        run_in(doctor_lab.node, ["sysctl", "-q", "-w", "net.ipv6.conf.cni0.forwarding=0",
                                 "net.ipv6.conf.eth0.forwarding=0"])
        answer, found = doctor_lab.kernel_and_trace(topology, timeout=3)
        assert answer["ok"] is True, answer
        assert found.verdict is Verdict.REACHES, found.render()
    finally:
        _restore(doctor_lab)
