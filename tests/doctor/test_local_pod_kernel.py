"""A Service's endpoint on this node behind Calico's per-pod route, against the kernel.

Calico routes each pod of the node by a host route on its ``cali*`` interface, which
holds no address (``10.42.1.5 dev caliX scope link``, proxy ARP answering the pod).
The doctor took any route towards a pod-facing interface without an address holding
the destination for one that "sends it back towards pods, where nothing answers" and
said "blocked" for a pod reaching a ClusterIP whose endpoint is such a pod; a host
route to the destination itself is that pod's own, and the flow reaches.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from k3snet.doctor import Verdict
from k3snet.lab.netns import run_in, temporary_netns

from .conftest import ECHO_SERVER, PORT, DoctorLab, Topology

pytestmark = [pytest.mark.kernel]


@pytest.fixture
def calico_pod(doctor_lab: DoctorLab) -> Iterator[DoctorLab]:
    """The Service ``lab/other``'s endpoint ``10.42.1.5`` as a pod of this node, wired as
    Calico wires one, answering on the database's port; undone afterwards."""
    node = doctor_lab.node
    with temporary_netns("podb") as pod:
        run_in(node, ["ip", "link", "add", "calilab", "type", "veth", "peer", "name", "eth0",
                      "netns", pod])
        server = None
        try:
            run_in(pod, ["ip", "link", "set", "lo", "up"])
            run_in(pod, ["ip", "addr", "add", "10.42.1.5/32", "dev", "eth0"])
            run_in(pod, ["ip", "link", "set", "eth0", "up"])
            run_in(pod, ["ip", "route", "add", "default", "dev", "eth0"])
            run_in(node, ["ip", "link", "set", "calilab", "up"])
            run_in(node, ["sysctl", "-q", "-w", "net.ipv4.conf.calilab.proxy_arp=1"])
            run_in(node, ["ip", "route", "add", "10.42.1.5", "dev", "calilab", "scope", "link"])
            server = subprocess.Popen(
                ["ip", "netns", "exec", pod, sys.executable, *ECHO_SERVER, "--port", str(PORT)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)
            assert server.stdout is not None
            assert server.stdout.readline().strip() == "listening"
            yield doctor_lab
        finally:
            if server is not None:
                server.kill()
                server.communicate(timeout=10)
            run_in(node, ["ip", "link", "del", "calilab"], check=False)


@pytest.mark.parametrize("kube_proxy", ["iptables-nft", "nftables"])
def test_a_clusterip_whose_endpoint_is_a_calico_pod_of_this_node_reaches(
        calico_pod: DoctorLab, kube_proxy: str) -> None:
    topology = Topology(dest="service-overlap", kube_proxy=kube_proxy)  # type: ignore[arg-type]
    calico_pod.configure(topology)
    answer, found = calico_pod.kernel_and_trace(topology, timeout=2)
    assert answer["ok"] is True, answer
    assert found.verdict is Verdict.REACHES, found.render()
    assert found.egress == "calilab", found.render()
