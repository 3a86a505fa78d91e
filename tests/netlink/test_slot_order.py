"""Two IPv4 routes in one slot (table, destination, metric, TOS): the kernel's lookup
takes the first one its dump lists that it can use (fib_table_lookup walks the leaf's
aliases in the order fn_trie_dump_leaf dumps them), which the planner's note on a
foreign route in the very slot of k3snet's states. Packets prove it: they leave by the
gateway of the first route ``ip -j route`` lists, ``ip route prepend`` putting
another program's before k3snet's, ``ip route append`` after it; each driver's dump
lists the slot in that order.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import Route, State
from k3snet.planner import plan
from tests.netlink.links import ip
from tests.netlink.test_backend import DRIVERS, Driver

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

_SEND = ("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
         "for _ in range(20): s.sendto(b'x', ('10.9.1.7', 9))\n")


def _sent(ns: str) -> dict[str, int]:
    """The packets each of ``ns``'s links g2, g3, g4 sent."""
    return {link["ifname"]: int(link["stats64"]["tx"]["packets"])
            for link in json.loads(ip(ns, "-j", "-s", "link", "show"))
            if link["ifname"] in ("g2", "g3", "g4")}


def _carrier(ns: str) -> str:
    """The link that carried most of 20 datagrams to 10.9.1.7 (ARP, ND: a few more)."""
    before = _sent(ns)
    run_in(ns, ["python3", "-c", _SEND])
    after = _sent(ns)
    [link] = [name for name in after if after[name] - before[name] >= 20]
    return link


def _three_links(ns: str, peer: str) -> None:
    """Links g2, g3, g4 of ``ns`` to ``peer``'s h2, h3, h4: 192.0.{2,3,4}.1/24 to .2."""
    for i in (2, 3, 4):
        ip(ns, "link", "add", f"g{i}", "type", "veth", "peer", "name", f"h{i}",
           "netns", peer)
        ip(ns, "link", "set", f"g{i}", "up")
        ip(peer, "link", "set", f"h{i}", "up")
        ip(ns, "addr", "add", f"192.0.{i}.1/24", "dev", f"g{i}")
        ip(peer, "addr", "add", f"192.0.{i}.2/24", "dev", f"h{i}")


def test_ipv4_takes_the_first_route_of_a_slot_its_dump_lists_and_the_drivers_keep_that_order(
        tmp_path: Path) -> None:
    with temporary_netns("slotord") as ns, temporary_netns("slotpeer") as peer:
        _three_links(ns, peer)
        ip(ns, "route", "add", "10.9.1.0/24", "via", "192.0.2.2", "proto", "211")
        ip(ns, "route", "append", "10.9.1.0/24", "via", "192.0.3.2")
        ip(ns, "route", "prepend", "10.9.1.0/24", "via", "192.0.4.2")
        listed = [r["gateway"] for r in json.loads(ip(ns, "-j", "route", "show", "10.9.1.0/24"))]
        assert listed == ["192.0.4.2", "192.0.2.2", "192.0.3.2"]
        assert _carrier(ns) == "g4"
        for driver in DRIVERS:
            assert _slot_as_dumped(ns, tmp_path / driver, driver) == listed
        ip(ns, "route", "del", "10.9.1.0/24", "via", "192.0.4.2")
        assert _carrier(ns) == "g2"  # k3snet's, first now; the appended one carries none
        ip(ns, "link", "set", "g2", "down")  # k3snet's unusable: the next one listed
        assert _carrier(ns) == "g3"


def _slot_as_dumped(ns: str, state_dir: Path, driver: Driver) -> list[str]:
    """The gateways of the routes to 10.9.1.0/24 in the order ``driver`` dumps them."""
    with NetlinkBackend(ns, state_dir=state_dir, driver=driver) as backend:
        names = {index: link.name for index, link in backend._routes.links().items()}
        dumped = backend._driver.routes(None, names)
    return [str(r.gateway) for r in dumped
            if isinstance(r, Route) and str(r.destination) == "10.9.1.0/24"]


@pytest.mark.parametrize("slot", ["lower metric", "same slot"])
def test_a_route_met_by_a_foreign_one_that_another_gateway_s_route_comes_before_is_a_conflict(
        tmp_path: Path, slot: str) -> None:
    """A foreign route through k3snet's gateway "met" the wanted route whatever came
    before it: with another program's route through another gateway at a lower metric,
    or first in the very slot, the plan said met and added nothing while the packets
    left by that other gateway. It is a conflict with the route that carries them."""
    with temporary_netns("slotmet") as ns, temporary_netns("slotmp") as peer:
        _three_links(ns, peer)
        if slot == "lower metric":
            ip(ns, "route", "add", "10.9.1.0/24", "via", "192.0.3.2", "metric", "10")
            ip(ns, "route", "add", "10.9.1.0/24", "via", "192.0.2.2", "metric", "200")
            wanted = Route("10.9.1.0/24", gateway="192.0.2.2", metric=100)
        else:
            ip(ns, "route", "add", "10.9.1.0/24", "via", "192.0.3.2")
            ip(ns, "route", "append", "10.9.1.0/24", "via", "192.0.2.2")
            wanted = Route("10.9.1.0/24", gateway="192.0.2.2")
        assert _carrier(ns) == "g3"  # not the gateway k3snet's route names
        with NetlinkBackend(ns, state_dir=tmp_path) as backend:
            planned = plan(backend.observe(), State(owned=[wanted]))
        [note] = planned.notes
        assert note.status == "conflict"
        assert isinstance(note.foreign, Route)
        assert str(note.foreign.gateway) == "192.0.3.2"
        assert not planned.changes
        ip(ns, "route", "del", "10.9.1.0/24", "via", "192.0.3.2")  # k3snet's gateway's now
        assert _carrier(ns) == "g2"
        with NetlinkBackend(ns, state_dir=tmp_path) as backend:
            [note] = plan(backend.observe(), State(owned=[wanted])).notes
        assert note.status == "met"
