"""``net.ipv4.conf.default.forwarding = 0`` beside ``ip_forward = 1``, against the kernel.

A new interface takes default's switch (a veth made in the lab node reads 0), and
IPv4 forwards by the switch of the interface a packet arrives on: the flow traced now
reaches, a pod given a new interface (a routed CNI's veth) would not. The doctor said
nothing of it.
"""

from __future__ import annotations

import pytest

from k3snet.doctor import Flow, NodeState, Verdict, diagnose
from k3snet.lab.netns import run_in

from .conftest import DoctorLab, Topology

pytestmark = [pytest.mark.kernel]


def test_default_forwarding_0_beside_ip_forward_1_is_a_warning_of_new_interfaces(
        doctor_lab: DoctorLab) -> None:
    topology = Topology(family=4, forwarding=True)
    doctor_lab.configure(topology)
    node = doctor_lab.node
    try:
        run_in(node, ["sysctl", "-q", "-w", "net.ipv4.conf.default.forwarding=0"])
        run_in(node, ["ip", "link", "add", "new0", "type", "veth", "peer", "name", "new1"])
        made = run_in(node, ["sysctl", "-n", "net.ipv4.conf.new0.forwarding"]).stdout
        assert made.strip() == "0"  # the kernel's own inheritance
        answer, found = doctor_lab.kernel_and_trace(topology)
        assert answer["ok"] is True, answer
        assert found.verdict is Verdict.REACHES, found.render()
        d = diagnose(NodeState.from_capture(doctor_lab.capture()),
                     Flow(topology.pod, topology.destination, port=topology.port))
        warning = [f for f in d.findings if f.code == "forwarding-default-off"]
        assert warning, d.render()
        assert warning[0].severity == "warning"
        assert "default.forwarding = 0" in warning[0].where
    finally:
        run_in(node, ["ip", "link", "del", "new0"], check=False)
        run_in(node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=0", "net.ipv4.ip_forward=1"],
               check=False)


def test_default_forwarding_0_with_ip_forward_0_is_no_warning_of_its_own(
        doctor_lab: DoctorLab) -> None:
    """Writing ip_forward = 1, the fix of forwarding-off, sets default's switch too."""
    topology = Topology(family=4, forwarding=False)
    doctor_lab.configure(topology)
    d = diagnose(NodeState.from_capture(doctor_lab.capture()),
                 Flow(topology.pod, topology.destination, port=topology.port))
    assert d.findings[0].code == "forwarding-off", d.render()
    assert "forwarding-default-off" not in [f.code for f in d.findings], d.render()
    run_in(doctor_lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
