"""An untracked reply or ICMP error of a flow a DNAT translated (a Service's ClusterIP to
an endpoint beyond the node), the pods not masqueraded (routed pod networks: the
router knows the way back), against the kernel.

Conntrack translates the replies of such a flow back to come from the Service's
address, and an ICMP error about it back to name that address in the packet it
quotes. A raw rule exempting them from tracking leaves both as they came: addressed
to the pod, they reach it, but from the endpoint (the reply) or quoting the endpoint
(the error), which no socket of the pod is connected to. The pod drops them: the
connection never opens, the path's MTU is never learnt. The doctor checked only for
a masquerade (an untracked reply addressed to the node), and said "reaches" and
nothing of the error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import pytest

from k3snet.doctor import Flow, NodeState, Verdict, diagnose
from k3snet.lab.netns import run_in
from tests.pmtu import learnt_mtu_in

from .conftest import PORT, V6, DoctorLab, Topology

pytestmark = [pytest.mark.kernel]

_SERVICE = {4: "10.43.0.100", 6: V6["10.43.0.100"]}
_ENDPOINT = {4: "192.168.2.10", 6: V6["192.168.2.10"]}
_TOOL = {4: "iptables-nft", 6: "ip6tables-nft"}


@pytest.fixture
def routed(doctor_lab: DoctorLab) -> Iterator[DoctorLab]:
    """The router routes the pod network to the node (put back afterwards, with the
    router's and database's MTUs and the pod's learnt ones)."""
    router, db, pod = (doctor_lab.names[n] for n in ("router", "db", "pod"))
    routes = {4: ["10.42.0.0/16", "via", "192.168.1.5"],
              6: [V6["10.42.0.0/16"], "via", V6["192.168.1.5"]]}
    for family, route in routes.items():
        run_in(router, ["ip", f"-{family}", "route", "add", *route])
    try:
        yield doctor_lab
    finally:
        for family, route in routes.items():
            run_in(router, ["ip", f"-{family}", "route", "del", *route], check=False)
        run_in(router, ["ip", "link", "set", "eth1", "mtu", "1500"], check=False)
        run_in(db, ["ip", "link", "set", "eth0", "mtu", "1500"], check=False)
        for family_flag in ("-4", "-6"):
            run_in(pod, ["ip", family_flag, "route", "flush", "cache"], check=False)
        doctor_lab.reset()


def _dnat(lab: DoctorLab, family: Literal[4, 6], proto: str, port: int, to_port: int) -> None:
    endpoint = _ENDPOINT[family] if family == 4 else f"[{_ENDPOINT[family]}]"
    run_in(lab.node, [_TOOL[family], "-t", "nat", "-A", "PREROUTING", "-d", _SERVICE[family],
                      "-p", proto, "--dport", str(port), "-j", "DNAT", "--to-destination",
                      f"{endpoint}:{to_port}"])


@pytest.mark.parametrize("family", [4, 6])
def test_an_untracked_reply_of_a_dnat_flow_is_blocked_though_the_pod_is_not_masqueraded(
        routed: DoctorLab, family: Literal[4, 6]) -> None:
    topology = Topology(family=family, nat="none")
    routed.configure(topology)
    _dnat(routed, family, "tcp", 80, PORT)
    # Without the exemption the Service answers.
    assert routed.probe(_SERVICE[family], timeout=3, port=80).get("ok") is True
    run_in(routed.node, [_TOOL[family], "-t", "raw", "-A", "PREROUTING", "-s",
                         _ENDPOINT[family], "-p", "tcp", "-j", "NOTRACK"])
    answer = routed.probe(_SERVICE[family], timeout=3, port=80)
    d = diagnose(NodeState.from_capture(routed.capture()),
                 Flow(topology.pod, _SERVICE[family], port=80), upstream_routes_pods=True)
    assert answer.get("ok") is not True, answer  # the kernel: the pod never takes it
    assert d.verdict is Verdict.BLOCKED, d.render()
    (step,) = [s for s in d.trace.steps if s.code == "reply-untracked"]
    assert _ENDPOINT[family] in step.detail, d.render()
    assert _SERVICE[family] in step.detail, d.render()
    assert "untracked" in [f.code for f in d.findings], d.render()


@pytest.mark.parametrize("family", [4, 6])
def test_an_untracked_pmtu_error_of_a_dnat_flow_is_named_though_the_pod_is_not_masqueraded(
        routed: DoctorLab, family: Literal[4, 6]) -> None:
    topology = Topology(family=family, nat="none")
    routed.configure(topology)
    router, db, pod = (routed.names[n] for n in ("router", "db", "pod"))
    run_in(router, ["ip", "link", "set", "eth1", "mtu", "1280"])
    run_in(db, ["ip", "link", "set", "eth0", "mtu", "1280"])
    _dnat(routed, family, "udp", 9, 9)
    # Tracked, the error is translated back and the pod learns the path's MTU.
    assert "mtu 1280" in learnt_mtu_in(pod, family, _SERVICE[family])
    run_in(pod, ["ip", f"-{family}", "route", "flush", "cache"])
    run_in(routed.node, [_TOOL[family], "-t", "raw", "-A", "PREROUTING", "-p",
                         "icmp" if family == 4 else "ipv6-icmp", "-j", "NOTRACK"])
    hole = learnt_mtu_in(pod, family, _SERVICE[family])
    d = diagnose(NodeState.from_capture(routed.capture()),
                 Flow(topology.pod, _SERVICE[family], "udp", 9), upstream_routes_pods=True)
    assert "mtu 1280" not in hole, hole  # the kernel: the pod never learnt it
    assert d.verdict is Verdict.REACHES, d.render()
    (finding,) = [f for f in d.findings if f.code == "pmtu-error-dropped"]
    assert finding.severity == "warning", d.render()
    assert "NOTRACK" in finding.where, d.render()
    assert _ENDPOINT[family] in finding.where, d.render()
