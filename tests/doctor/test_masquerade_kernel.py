"""The address IPv6 masquerade gives, against the kernel's.

The lab's healthy IPv6 node gets a second global address on its uplink,
``fd01:2:0:1::5/64``, sharing 63 bits with the database ``fd01:2::10`` where the node's
first address ``fd01:1::5`` shares 30 with it and 64 with the router ``fd01:1::1``
the route goes through. The kernel picks the source for the destination
(``ipv6_dev_get_saddr``); the router routes the second prefix back to the node so
the probe's answer says what the database saw.
"""

from __future__ import annotations

import pytest

from k3snet.lab.netns import run_in

from .conftest import DoctorLab, Topology

pytestmark = [pytest.mark.kernel]

EXTRA = "fd01:2:0:1::5"


def test_ipv6_masquerade_picks_the_address_nearest_the_destination(
        doctor_lab: DoctorLab) -> None:
    topology = Topology(family=6)
    doctor_lab.configure(topology)
    node, router = doctor_lab.node, doctor_lab.names["router"]
    run_in(node, ["ip", "-6", "addr", "add", f"{EXTRA}/64", "dev", "eth0", "nodad"])
    try:
        run_in(router, ["ip", "-6", "route", "add", "fd01:2:0:1::/64", "via", "fd01:1::5"])
        answer, result = doctor_lab.kernel_and_trace(topology, timeout=8)
        assert answer["ok"], answer
        assert answer["seen"] == EXTRA
        assert str(result.source_seen) == answer["seen"], result.render()
    finally:
        run_in(router, ["ip", "-6", "route", "del", "fd01:2:0:1::/64"], check=False)
        run_in(node, ["ip", "-6", "addr", "del", f"{EXTRA}/64", "dev", "eth0"], check=False)


def test_masquerade_on_an_uplink_without_an_ipv4_address_borrows_the_one_on_lo(
        doctor_lab: DoctorLab) -> None:
    """An unnumbered uplink: the node's address is ``192.168.9.5/32`` on ``lo`` and
    ``eth0`` has none; masquerade takes lo's (``inet_select_addr`` goes on to every
    device), where the doctor said "masquerade finds no address" and "blocked"."""
    topology = Topology()
    doctor_lab.configure(topology)
    with doctor_lab.unnumbered_uplink():
        answer, result = doctor_lab.kernel_and_trace(topology, timeout=8)
        assert answer["ok"], answer
        assert answer["seen"] == "192.168.9.5"
        assert str(result.source_seen) == answer["seen"], result.render()
