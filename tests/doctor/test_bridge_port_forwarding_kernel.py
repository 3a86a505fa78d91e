"""The IPv4 forwarding switch of a bridge port, against the kernel.

What arrives on a port of a bridge (a pod's veth in flannel's ``cni0``) is received by
the bridge: the kernel forwards it by the bridge's switch, not the port's. With
``net.ipv4.conf.default.forwarding = 0`` every pod's veth reads 0 while the pods
connect. The doctor took a flow given the port as its in-interface as dropped by the
port's switch, and its ``forwarding-default-off`` warning said new pods' connections
are dropped where new pods only get new ports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from k3snet.doctor import Flow, NodeState, Verdict, diagnose, trace
from k3snet.lab import _probe
from k3snet.lab.netns import run_in, temporary_netns

from .conftest import DESTINATIONS, PORT, DoctorLab, Topology

pytestmark = [pytest.mark.kernel]

_POD = "10.42.6.10"


@pytest.fixture
def port_at_0(doctor_lab: DoctorLab) -> Iterator[tuple[DoctorLab, str]]:
    """A pod on the node's bridge ``cnifw`` by the port ``vethfw``, made while
    ``default.forwarding`` was 0 (the port reads 0, the bridge is set to 1)."""
    doctor_lab.configure(Topology(forwarding=True))
    node = doctor_lab.node
    with temporary_netns("podfw") as pod:
        run_in(node, ["sysctl", "-q", "-w", "net.ipv4.conf.default.forwarding=0"])
        run_in(node, ["ip", "link", "add", "cnifw", "type", "bridge"])
        try:
            run_in(node, ["ip", "link", "add", "vethfw", "type", "veth", "peer", "name", "eth0",
                          "netns", pod])
            run_in(node, ["ip", "link", "set", "vethfw", "master", "cnifw"])
            run_in(node, ["sysctl", "-q", "-w", "net.ipv4.conf.cnifw.forwarding=1"])
            run_in(node, ["ip", "addr", "add", "10.42.6.1/24", "dev", "cnifw"])
            for device in ("cnifw", "vethfw"):
                run_in(node, ["ip", "link", "set", device, "up"])
            run_in(pod, ["ip", "link", "set", "lo", "up"])
            run_in(pod, ["ip", "addr", "add", f"{_POD}/24", "dev", "eth0"])
            run_in(pod, ["ip", "link", "set", "eth0", "up"])
            run_in(pod, ["ip", "route", "add", "default", "via", "10.42.6.1"])
            assert run_in(node, ["sysctl", "-n", "net.ipv4.conf.vethfw.forwarding"]
                          ).stdout.strip() == "0"
            yield doctor_lab, pod
        finally:
            run_in(node, ["ip", "link", "del", "cnifw"], check=False)
            run_in(node, ["ip", "link", "del", "vethfw"], check=False)
            run_in(node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=0",
                          "net.ipv4.ip_forward=1"], check=False)


def _connects(pod: str, destination: str) -> bool:
    answer = json.loads(subprocess.run(
        ["ip", "netns", "exec", pod, sys.executable, "-I", "-S", _probe.__file__, "tcp",
         "--host", destination, "--port", str(PORT), "--timeout", "2"],
        capture_output=True, text=True, timeout=20, check=False).stdout)
    return answer["ok"] is True


def test_a_flow_in_by_a_bridge_port_at_0_is_forwarded_by_the_bridges_switch(
        port_at_0: tuple[DoctorLab, str]) -> None:
    lab, pod = port_at_0
    destination = DESTINATIONS["plain"]
    assert _connects(pod, destination)
    state = NodeState.from_capture(lab.capture())
    for iif in (None, "vethfw"):
        found = trace(state, Flow(_POD, destination, port=PORT, in_interface=iif))
        assert found.verdict is Verdict.REACHES, found.render()


def test_forwarding_default_off_on_a_bridge_says_new_pods_get_ports(
        port_at_0: tuple[DoctorLab, str]) -> None:
    """Still a warning (the bridge made again takes 0: every pod behind it is dropped),
    but not of new pods' connections: their veths are ports."""
    lab, pod = port_at_0
    assert _connects(pod, DESTINATIONS["plain"])
    d = diagnose(NodeState.from_capture(lab.capture()),
                 Flow(_POD, DESTINATIONS["plain"], port=PORT))
    warning = [f for f in d.findings if f.code == "forwarding-default-off"]
    assert warning, d.render()
    assert "new pods' connections are dropped" not in warning[0].why, d.render()
    assert "ports of cnifw" in warning[0].why, d.render()
