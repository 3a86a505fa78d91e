"""Strict ``rp_filter`` against the kernel's where the route back is multipath.

``fib_validate_source`` passes a packet when *any* nexthop of the route back to its
source leaves by the interface it came in on (``fib_info_nh_uses_dev``). The lab's
node routes the database through both uplinks (``eth1`` first, then ``eth0``) with
strict ``rp_filter`` on them: whichever uplink the kernel hashes the flow onto, the
reply comes back there and passes.
"""

from __future__ import annotations

import pytest

from k3snet.doctor import Verdict
from k3snet.lab.netns import run_in

from .conftest import DoctorLab, Topology

pytestmark = [pytest.mark.kernel]


def test_strict_rp_filter_passes_a_reply_on_any_nexthop_of_a_multipath_route(
        doctor_lab: DoctorLab) -> None:
    topology = Topology(rp_uplink=1)
    doctor_lab.configure(topology)
    run_in(doctor_lab.node, ["ip", "route", "replace", "192.168.2.0/24", "proto", "static",
                             "nexthop", "via", "192.168.4.1", "dev", "eth1",
                             "nexthop", "via", "192.168.1.1", "dev", "eth0"])
    answer, result = doctor_lab.kernel_and_trace(topology, timeout=8)
    assert answer["ok"], answer
    assert [e.verdict for e in result.endpoints] == [Verdict.REACHES] * 2, result.render()
    assert result.verdict is Verdict.REACHES, result.render()


def test_strict_rp_filter_passes_a_reply_on_an_unnumbered_uplink_the_route_back_uses(
        doctor_lab: DoctorLab) -> None:
    """``eth0`` has no IPv4 address (the node's is ``192.168.9.5/32`` on ``lo``): the
    kernel checks the route back before the missing address, and it leaves by
    ``eth0``, so the reply passes (the doctor said any such interface fails)."""
    topology = Topology(rp_uplink=1)
    doctor_lab.configure(topology)
    with doctor_lab.unnumbered_uplink():
        answer, result = doctor_lab.kernel_and_trace(topology, timeout=8)
        assert answer["ok"], answer
        assert result.verdict is Verdict.REACHES, result.render()
