"""An uplink that is down, against the kernel.

Without carrier (the router's end of the node's ``eth0`` set down: the cable pulled,
the switch port dead) the kernel keeps the routes through ``eth0``, flagged
``linkdown``, and still sends the flow there (``ignore_routes_with_linkdown`` is 0 by
default), where it is lost: the doctor said "reaches". Set down on the node itself
(``ip link set eth0 down``) the kernel removes the routes through it: the doctor said
"no route: add a route through the gateway", when the route comes back by itself
once the link is up.
"""

from __future__ import annotations

import pytest

from k3snet.doctor import Flow, NodeState, Verdict, diagnose
from k3snet.lab.netns import run_in

from .conftest import V6, DoctorLab, Topology

pytestmark = [pytest.mark.kernel]


def test_a_route_through_an_uplink_without_carrier_is_blocked_and_says_so(
        doctor_lab: DoctorLab) -> None:
    topology = Topology()
    doctor_lab.configure(topology)
    router = doctor_lab.names["router"]
    run_in(router, ["ip", "link", "set", "eth0", "down"])
    try:
        routes = run_in(doctor_lab.node, ["ip", "-j", "route", "show", "192.168.2.0/24"]).stdout
        assert "linkdown" in routes  # the kernel's own view: the route stays, flagged
        answer, _ = doctor_lab.kernel_and_trace(topology, timeout=3)
        d = diagnose(NodeState.from_capture(doctor_lab.capture()),
                     Flow(topology.pod, topology.destination, port=topology.port))
    finally:
        run_in(router, ["ip", "link", "set", "eth0", "up"])
    assert not answer["ok"], answer
    assert d.verdict is Verdict.BLOCKED, d.render()
    finding = d.findings[0]
    assert finding.code == "link-down", d.render()
    assert "eth0" in finding.what, d.render()
    assert "carrier" in finding.what, d.render()
    assert not d.fixes.owned, d.render()


def test_an_uplink_set_down_is_named_in_the_no_route_finding(doctor_lab: DoctorLab) -> None:
    topology = Topology()
    doctor_lab.configure(topology)
    node = doctor_lab.node
    run_in(node, ["ip", "link", "set", "eth0", "down"])
    try:
        assert "192.168.2.0/24" not in run_in(node, ["ip", "route", "show"]).stdout
        answer, _ = doctor_lab.kernel_and_trace(topology, timeout=3)
        d = diagnose(NodeState.from_capture(doctor_lab.capture()),
                     Flow(topology.pod, topology.destination, port=topology.port))
    finally:
        run_in(node, ["ip", "link", "set", "eth0", "up"])
        # Set down, eth0 lost its IPv6 address (keep_addr_on_down is 0): the lab's again.
        run_in(node, ["ip", "-6", "addr", "replace", f"{V6['192.168.1.5']}/64", "dev", "eth0",
                      "nodad"])
    assert not answer["ok"], answer
    assert d.verdict is Verdict.BLOCKED, d.render()
    finding = d.findings[0]
    assert finding.code == "no-route", d.render()
    assert finding.advice is not None
    assert "eth0 is down" in finding.advice, d.render()
    assert "ip link set eth0 up" in finding.advice, d.render()
