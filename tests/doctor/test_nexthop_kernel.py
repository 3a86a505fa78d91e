"""Routes through nexthop objects (``ip route add ... nhid N``), against the kernel.

With ``net.ipv4.nexthop_compat_mode`` 0 (it covers IPv6 too) the kernel dumps such a
route with its ``nhid`` alone: no gateway, no device. The doctor then said "unknown"
for every flow it carries; the capture now takes ``ip -j nexthop show``
(``nexthops.json``) and the route is read through its object, a group's members as a
multipath route's nexthops.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from k3snet.doctor import Verdict
from k3snet.lab.netns import run_in

from .conftest import DoctorLab, Topology

pytestmark = [pytest.mark.kernel]

_OBJECTS = {
    "single": [["ip", "nexthop", "add", "id", "41", "via", "192.168.1.1", "dev", "eth0"]],
    "group": [["ip", "nexthop", "add", "id", "41", "via", "192.168.1.1", "dev", "eth0"],
              ["ip", "nexthop", "add", "id", "42", "via", "192.168.4.1", "dev", "eth1"],
              ["ip", "nexthop", "add", "id", "43", "group", "41/42"]],
    "blackhole": [["ip", "nexthop", "add", "id", "43", "blackhole"]],
}


@pytest.fixture
def compat_off(doctor_lab: DoctorLab) -> Iterator[DoctorLab]:
    """The node dumping routes through nexthop objects by ``nhid`` alone; its objects
    and the setting undone afterwards (the lab is shared by the module)."""
    node = doctor_lab.node
    run_in(node, ["sysctl", "-q", "-w", "net.ipv4.nexthop_compat_mode=0"])
    try:
        yield doctor_lab
    finally:
        run_in(node, ["ip", "route", "flush", "proto", "static"], check=False)
        run_in(node, ["ip", "nexthop", "flush"], check=False)
        run_in(node, ["sysctl", "-q", "-w", "net.ipv4.nexthop_compat_mode=1"])


@pytest.mark.parametrize("case", list(_OBJECTS))
def test_a_route_through_a_nexthop_object_is_followed_as_in_the_kernel(
        compat_off: DoctorLab, case: str) -> None:
    topology = Topology(route="missing")
    compat_off.configure(topology)
    node = compat_off.node
    for argv in _OBJECTS[case]:
        run_in(node, argv)
    nhid = "43" if case != "single" else "41"
    run_in(node, ["ip", "route", "add", "192.168.2.0/24", "nhid", nhid, "proto", "static"])
    dumped = run_in(node, ["ip", "-j", "route", "show", "192.168.2.0/24"]).stdout
    assert '"dev"' not in dumped, dumped  # the kernel dumps the nhid alone
    reaches = case != "blackhole"
    answer, found = compat_off.kernel_and_trace(topology, timeout=2)
    assert answer["ok"] is reaches, answer
    assert found.verdict is (Verdict.REACHES if reaches else Verdict.BLOCKED), found.render()
    if case == "group":
        assert sorted(e.egress or "" for e in found.endpoints) == ["eth0", "eth1"], (
            found.render())
