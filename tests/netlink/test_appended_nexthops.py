"""Another program's nexthops appended to a route of k3snet's.

IPv6 keeps each nexthop as a route of its own: ``ip -6 route append`` of a gateway route
to a slot (table, destination, metric) holding k3snet's joins it, and the dump sends both
as one multipath message carrying the first one's protocol, k3snet's. Read as one foreign
block, k3snet's route was no longer its own: it stayed once the spec dropped it. It is
now k3snet's, the other nexthops a foreign block in its slot, and its delete (naming
protocol and gateway) takes back its nexthop alone, the administrator's left as the
kernel's own listing (``ip -j -6 route``) shows. IPv4 merges nothing (``ip route
append`` puts a second route in the slot), which is checked too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.errors import ApplyError
from k3snet.model import Route, RouteBlock, State
from k3snet.planner import Change, Plan, plan
from tests.netlink.links import d0_namespace, ip
from tests.netlink.test_backend import DRIVERS, Driver

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root"),
              pytest.mark.parametrize("driver", DRIVERS)]

_FAMILIES = {
    "ipv4": ("-4", "198.51.100.0/24", "192.0.2.2", "192.0.2.3"),
    "ipv6": ("-6", "2001:db8:9::/64", "2001:db8::2", "2001:db8::3"),
}


def _listed(ns: str, family: str, destination: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(
        ip(ns, "-j", family, "route", "show", destination))
    return found


@pytest.mark.parametrize("family", sorted(_FAMILIES))
def test_dropping_a_route_another_program_appended_to_takes_back_k3snet_s_nexthop_alone(
        tmp_path: Path, driver: Driver, family: str) -> None:
    option, destination, ours, theirs = _FAMILIES[family]
    with d0_namespace("rappend", "192.0.2.1/24", "2001:db8::1/64") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        route = Route(destination, gateway=ours, device="d0")
        wanted = State(owned=[route])
        backend.apply(plan(backend.observe(), wanted))
        ip(ns, option, "route", "append", destination, "via", theirs, "dev", "d0")
        if family == "ipv6":  # the kernel's view: one route, both nexthops, k3snet's first
            [merged] = _listed(ns, option, destination)
            assert merged["protocol"] == "211"
            assert [hop["gateway"] for hop in merged["nexthops"]] == [ours, theirs]
        observed = backend.observe()
        assert route in observed.owned
        # The other nexthops stand in the slot: a replace of the route would drop them.
        [beside] = [o for o in observed.foreign
                    if isinstance(o, Route | RouteBlock) and o.clash_key == route.clash_key]
        assert not (isinstance(beside, Route) and beside.protocol == route.protocol)
        still = plan(observed, wanted)
        assert still.changes == ()
        if family == "ipv6":  # NLM_F_REPLACE would drop the other nexthops with it
            replaced = Plan(changes=(Change("replace", route, Route(
                destination, gateway=theirs.replace("3", "4"), device="d0")),))
            assert any("shares the slot" in problem for problem in backend.check(replaced))
        dropped = plan(observed, State())
        assert [(c.action, c.subject) for c in dropped.changes] == [("delete", route)]
        backend.apply(dropped)
        [left] = _listed(ns, option, destination)
        assert (left["gateway"], left.get("protocol", "boot"), "nexthops" in left) == (
            theirs, "boot", False)
        after = backend.observe()
        assert route not in after.owned
        assert Route(destination, gateway=theirs, device="d0",
                     protocol="boot") in after.foreign  # not the block kept from before


def test_another_program_s_multipath_route_stays_one_foreign_block(
        tmp_path: Path, driver: Driver) -> None:
    """Its first nexthop is no route of k3snet's (another protocol): the whole route is
    one foreign block, as before, and a wanted route there a conflict."""
    with d0_namespace("rappendf", "2001:db8::1/64") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        ip(ns, "-6", "route", "add", "2001:db8:9::/64", "via", "2001:db8::2", "dev", "d0",
           "proto", "static")
        ip(ns, "-6", "route", "append", "2001:db8:9::/64", "via", "2001:db8::3", "dev", "d0")
        observed = backend.observe()
        assert observed.owned == frozenset()
        [block] = [o for o in observed.foreign if isinstance(o, RouteBlock)]
        assert (block.protocol, str(block.destination)) == (4, "2001:db8:9::/64")
        assert not [o for o in observed.foreign
                    if isinstance(o, Route) and str(o.destination) == "2001:db8:9::/64"]
        wanted = State(owned=[Route("2001:db8:9::/64", gateway="2001:db8::2", device="d0")])
        assert [n.status for n in plan(observed, wanted).notes] == ["conflict"]


def test_a_rolled_back_delete_leaves_k3snet_s_nexthop_out_of_reach_behind_the_other_s_never(
        tmp_path: Path, driver: Driver) -> None:
    """The undo of that delete (another change of the apply failed) added k3snet's route
    back, and IPv6 appends it behind the other program's: the kernel listed one route
    under that one's protocol, k3snet's nexthop inside it, no longer its own (kept for
    good: no plan deleted it again). It is left out and the rollback says so; the other
    program's route carries the traffic, as ``ip -j -6 route`` shows."""
    destination, ours, theirs = "2001:db8:9::/64", "2001:db8::2", "2001:db8::3"
    with d0_namespace("rappendr", "2001:db8::1/64") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        route = Route(destination, gateway=ours, device="d0")
        other = Route("2001:db8:a::/64", gateway=ours, device="d0")
        backend.apply(plan(backend.observe(), State(owned=[route, other])))
        ip(ns, "-6", "route", "append", destination, "via", theirs, "dev", "d0")
        teardown = plan(backend.observe(), State())
        assert [c.subject for c in teardown.changes] == [route, other]
        backend.faults.fail_at(len(teardown.changes) - 1)
        with pytest.raises(ApplyError) as caught:
            backend.apply(teardown)
        [left] = _listed(ns, "-6", destination)
        assert (left["gateway"], left.get("protocol", "boot"), "nexthops" in left) == (
            theirs, "boot", False)
        assert backend.observe().owned == {other}
        assert "not put back: IPv6 would append it to the route" in str(caught.value)
