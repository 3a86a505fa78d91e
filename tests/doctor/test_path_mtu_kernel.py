"""A path MTU below the pods', against the kernel.

The node's route to the database carries ``mtu 1280`` while the pod's interface (and
``cni0``) is at 1500: a pod packet larger than 1280 gets through only once the node's
ICMP error (fragmentation needed, IPv6's Packet Too Big) reached the pod and its kernel
learnt the smaller MTU. A foreign nftables rule dropping that error in the node's output
makes a black hole: the handshake and small packets pass, large ones die. The doctor
traces one first packet, small, and said "reaches" with no finding; it now names the
smaller MTU (``path-mtu``), IPv4 and IPv6. The kernel's own view: the pod's route to the
database (``ip route get``) holds ``mtu 1280`` once the error arrived, never while the
rule drops it.
"""

from __future__ import annotations

import json
import sys
from typing import Literal

import pytest

from k3snet.doctor import Flow, NodeState, Verdict, diagnose
from k3snet.lab.netns import run_in
from tests.dropped import mib
from tests.pmtu import learnt_mtu_in

from .conftest import DEST_NETS, UPLINKS, DoctorLab, Topology, to_v6

pytestmark = [pytest.mark.kernel]

# The node's own ICMP errors telling the path's MTU, dropped in its output hook.
_DROP_PMTU_ERRORS = """table inet h_mtu_hole {
 chain output {
  type filter hook output priority 0; policy accept;
  icmp type destination-unreachable icmp code frag-needed drop
  icmpv6 type packet-too-big drop
 }
}
"""


@pytest.mark.parametrize("family", [4, 6])
def test_a_route_mtu_below_the_pods_is_a_path_mtu_finding_and_a_black_hole_without_icmp(
        doctor_lab: DoctorLab, family: Literal[4, 6]) -> None:
    topology = Topology(family=family)
    doctor_lab.configure(topology)
    node, pod = doctor_lab.node, doctor_lab.names["pod"]
    convert = to_v6 if family == 6 else str
    network, gateway = convert(DEST_NETS["plain"]), convert(UPLINKS["eth0"][1])
    run_in(node, ["ip", f"-{family}", "route", "replace", network, "via", gateway, "dev",
                  "eth0", "mtu", "1280", "proto", "static"])
    run_in(node, ["nft", "-f", "-"], input_text=_DROP_PMTU_ERRORS)
    try:
        # The kernel: the first packet passes, the large ones die unannounced.
        answer, _ = doctor_lab.kernel_and_trace(topology)
        hole = learnt_mtu_in(pod, family, topology.destination)
        d = diagnose(NodeState.from_capture(doctor_lab.capture()),
                     Flow(topology.pod, topology.destination, port=topology.port))
    finally:
        run_in(node, ["nft", "delete", "table", "inet", "h_mtu_hole"], check=False)
    assert answer["ok"], answer
    assert "mtu 1280" not in hole, hole
    # Once the error may pass, the pod learns the path's MTU: the rule made the hole.
    assert "mtu 1280" in learnt_mtu_in(pod, family, topology.destination)
    assert d.verdict is Verdict.REACHES, d.render()  # the first, small packet does
    found = [f for f in d.findings if f.code == "path-mtu"]
    assert len(found) == 1, d.render()
    finding = found[0]
    assert finding.severity == "warning", d.render()
    assert "over 1280 bytes" in finding.what, d.render()
    assert "takes 1500" in finding.what, d.render()
    assert "mtu 1280" in finding.where, d.render()
    kind = "fragmentation needed" if family == 4 else "Packet Too Big"
    assert kind in finding.why, d.render()
    assert "MSS" in (finding.advice or ""), d.render()
    assert not d.fixes.owned, d.render()  # nothing k3snet writes lowers the pods' MTU


def test_a_path_as_large_as_the_pods_has_no_path_mtu_finding(doctor_lab: DoctorLab) -> None:
    topology = Topology()
    doctor_lab.configure(topology)
    d = diagnose(NodeState.from_capture(doctor_lab.capture()),
                 Flow(topology.pod, topology.destination, port=topology.port))
    assert d.verdict is Verdict.REACHES, d.render()
    assert "path-mtu" not in [f.code for f in d.findings], d.render()


_SEND_V6 = """
import socket, sys
sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
sock.connect((sys.argv[1], 9))
for _ in range(int(sys.argv[3])):
    try:
        sock.send(b"x" * int(sys.argv[2]))
    except OSError:
        pass  # the error of the datagram before
"""


def _send_v6(pod: str, destination: object, size: int, times: int) -> None:
    """``times`` UDP datagrams of ``size`` bytes from the pod to ``destination``."""
    run_in(pod, [sys.executable, "-I", "-S", "-c", _SEND_V6, str(destination), str(size),
                 str(times)])


def _snmp6(node: str, counter: str) -> int:
    """The node's IPv6 ``counter``: ``Ip6FragFails`` counts the forwarded packets it
    dropped as too large, ``Icmp6OutPktTooBigs`` the Packet Too Big errors it sent."""
    return mib(run_in(node, ["cat", "/proc/net/snmp6"]).stdout, counter)


def test_an_ipv6_route_mtu_below_1280_is_a_hole_no_icmp_closes_and_no_pod_mtu_avoids(
        doctor_lab: DoctorLab) -> None:
    """A route ``mtu 1000`` for IPv6, whose links all carry 1280: the node drops a pod's
    1200-byte packet and answers Packet Too Big, and drops the next one alike (the pod
    takes no MTU below 1280), no rule on ICMP needed. The finding said to make the pods'
    MTU at most 1000, which turns IPv6 off on their interfaces; it now names IPv6's
    minimum and the route's mtu to raise."""
    topology = Topology(family=6)
    doctor_lab.configure(topology)
    node, pod = doctor_lab.node, doctor_lab.names["pod"]
    run_in(node, ["ip", "-6", "route", "replace", to_v6(DEST_NETS["plain"]), "via",
                  to_v6(UPLINKS["eth0"][1]), "dev", "eth0", "mtu", "1000", "proto", "static"])
    answer, _ = doctor_lab.kernel_and_trace(topology)
    assert answer["ok"], answer  # the first, small packet passes
    failed = []
    for _ in range(3):
        _send_v6(pod, topology.destination, 1200, 1)
        failed.append(_snmp6(node, "Ip6FragFails"))
    assert failed[0] < failed[1] < failed[2], failed  # told, the pod still sends 1200
    d = diagnose(NodeState.from_capture(doctor_lab.capture()),
                 Flow(topology.pod, topology.destination, port=topology.port))
    assert d.verdict is Verdict.REACHES, d.render()
    (finding,) = [f for f in d.findings if f.code == "path-mtu"]
    assert "below 1280, the smallest MTU of IPv6" in finding.what, d.render()
    assert "mtu 1000" in finding.where, d.render()
    assert "1001 to 1280 bytes never pass" in finding.why, d.render()
    assert "raise the route's mtu to at least 1280" in (finding.advice or ""), d.render()
    assert "at most 1000" not in (finding.advice or ""), d.render()


_SEND_JUMBO = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER: IP_PMTUDISC_DO
sock.connect((sys.argv[1], 9))
for _ in range(3):
    try:
        sock.send(b"x" * 3000)
    except OSError:
        pass  # the error of the datagram before, were there one
"""


def _unreachables_sent(node: str) -> int:
    """The node's ICMP destination unreachable errors sent (fragmentation needed too)."""
    icmp = [line.split()[1:] for line in
            run_in(node, ["cat", "/proc/net/snmp"]).stdout.splitlines()
            if line.startswith("Icmp:")]
    return int(dict(zip(icmp[0], icmp[1], strict=True))["OutDestUnreachs"])


def _tx_dropped(node: str, device: str) -> int:
    (link,) = json.loads(run_in(node, ["ip", "-s", "-j", "link", "show", device]).stdout)
    return int(link["stats64"]["tx"]["dropped"])


def test_an_ipv4_route_mtu_over_its_device_s_drops_large_packets_with_no_icmp_error(
        doctor_lab: DoctorLab) -> None:
    """Pods at 9000 (jumbo frames on cni0), the route to the database at ``mtu 9000``
    through eth0 at 1500: the kernel checks the forwarded packet against the route's mtu
    and eth0 drops it, with no fragmentation-needed error, no rule on ICMP needed. The
    finding said the node answered with that error; it now says none is sent and that
    the route's mtu is the one to lower."""
    topology = Topology()
    doctor_lab.configure(topology)
    node, pod = doctor_lab.node, doctor_lab.names["pod"]
    run_in(node, ["ip", "route", "replace", DEST_NETS["plain"], "via", UPLINKS["eth0"][1],
                  "dev", "eth0", "mtu", "9000", "proto", "static"])
    try:
        run_in(pod, ["ip", "link", "set", "eth0", "mtu", "9000"])
        run_in(node, ["ip", "link", "set", "cni0", "mtu", "9000"])
        answer, _ = doctor_lab.kernel_and_trace(topology)
        # What an example before left the pod's kernel learnt (mtu 1280) is forgotten.
        run_in(pod, ["ip", "route", "flush", "cache"])
        errors, dropped = _unreachables_sent(node), _tx_dropped(node, "eth0")
        run_in(pod, [sys.executable, "-I", "-S", "-c", _SEND_JUMBO, str(topology.destination)])
        assert _unreachables_sent(node) == errors  # no error told the pod anything
        assert _tx_dropped(node, "eth0") == dropped + 3
        d = diagnose(NodeState.from_capture(doctor_lab.capture()),
                     Flow(topology.pod, topology.destination, port=topology.port))
    finally:
        run_in(pod, ["ip", "link", "set", "eth0", "mtu", "1500"])
        run_in(node, ["ip", "link", "set", "cni0", "mtu", "1500"])
    assert answer["ok"], answer
    assert d.verdict is Verdict.REACHES, d.render()
    (finding,) = [f for f in d.findings if f.code == "path-mtu"]
    assert "route's mtu 9000 is over eth0's" in finding.what, d.render()
    assert "1501 to 9000 bytes are lost with no ICMP error" in finding.why, d.render()
    assert "answers the pod with an ICMP error" not in finding.why, d.render()
    assert "lower the route's mtu to at most 1500" in (finding.advice or ""), d.render()


def test_an_ipv6_mtu_of_the_way_out_below_its_link_s_is_what_the_kernel_forwards_by(
        doctor_lab: DoctorLab) -> None:
    """eth0 at 1500 with its IPv6 MTU at 1400 (``net.ipv6.conf.eth0.mtu``, which a router
    advertisement's MTU lowers): the kernel answers a pod's forwarded packet over 1400
    with Packet Too Big for 1400, as for a 1400 link. The capture read no such sysctl and
    the doctor compared the link's 1500, so the path was as large as the pods' and no
    finding; the capture reads it now, and the doctor names it."""
    topology = Topology(family=6)
    doctor_lab.configure(topology)
    node, pod = doctor_lab.node, doctor_lab.names["pod"]
    run_in(node, ["sysctl", "-w", "net.ipv6.conf.eth0.mtu=1400"])
    try:
        answer, _ = doctor_lab.kernel_and_trace(topology)
        run_in(pod, ["ip", "-6", "route", "flush", "cache"])
        learnt = learnt_mtu_in(pod, 6, str(topology.destination))
        capture = doctor_lab.capture()
    finally:
        run_in(node, ["sysctl", "-w", "net.ipv6.conf.eth0.mtu=1500"])
    assert answer["ok"], answer
    assert "mtu 1400" in learnt, learnt  # the kernel's own view: 1400, not the link's
    assert capture.sysctls()["net.ipv6.conf.eth0.mtu"] == "1400"
    d = diagnose(NodeState.from_capture(capture),
                 Flow(topology.pod, topology.destination, port=topology.port))
    assert d.verdict is Verdict.REACHES, d.render()
    (finding,) = [f for f in d.findings if f.code == "path-mtu"]
    assert finding.where == "sysctl net.ipv6.conf.eth0.mtu = 1400 (dev eth0 mtu 1500)", (
        d.render())
    assert "over 1400 bytes cannot leave by eth0" in finding.what, d.render()


def test_an_ipv6_route_mtu_over_its_device_s_is_told_by_packet_too_big_unlike_ipv4(
        doctor_lab: DoctorLab) -> None:
    """The IPv4 case above for IPv6: pods at 9000, the route ``mtu 9000`` through eth0 at
    1500. IPv6 forwarding checks the packet against the device's (IPv6) MTU, not the
    route's (ip6_forward; a locked route mtu aside), and answers Packet Too Big for
    1500, which the pod learns: the ordinary warning of a smaller way out (the error can
    be dropped), not the IPv4 hole no ICMP closes, nor its advice to lower the route's
    mtu."""
    topology = Topology(family=6)
    doctor_lab.configure(topology)
    node, pod = doctor_lab.node, doctor_lab.names["pod"]
    run_in(node, ["ip", "-6", "route", "replace", to_v6(DEST_NETS["plain"]), "via",
                  to_v6(UPLINKS["eth0"][1]), "dev", "eth0", "mtu", "9000", "proto", "static"])
    try:
        run_in(pod, ["ip", "link", "set", "eth0", "mtu", "9000"])
        run_in(node, ["ip", "link", "set", "cni0", "mtu", "9000"])
        answer, _ = doctor_lab.kernel_and_trace(topology)
        run_in(pod, ["ip", "-6", "route", "flush", "cache"])
        told = _snmp6(node, "Icmp6OutPktTooBigs")
        _send_v6(pod, topology.destination, 3000, 3)
        learnt = run_in(pod, ["ip", "-6", "-o", "route", "get",
                              str(topology.destination)]).stdout
        sent = _snmp6(node, "Icmp6OutPktTooBigs") - told
        d = diagnose(NodeState.from_capture(doctor_lab.capture()),
                     Flow(topology.pod, topology.destination, port=topology.port))
    finally:
        run_in(pod, ["ip", "link", "set", "eth0", "mtu", "1500"])
        run_in(node, ["ip", "link", "set", "cni0", "mtu", "1500"])
    assert answer["ok"], answer
    assert sent >= 1, sent  # the node told the pod
    assert "mtu 1500" in learnt, learnt  # the device's MTU, not the route's 9000
    assert d.verdict is Verdict.REACHES, d.render()
    (finding,) = [f for f in d.findings if f.code == "path-mtu"]
    assert finding.where == "dev eth0 mtu 1500", d.render()
    assert "Packet Too Big" in finding.why, d.render()
    assert "no ICMP error" not in finding.why, d.render()
    assert "lower the route's mtu" not in (finding.advice or ""), d.render()
