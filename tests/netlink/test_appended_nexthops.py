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

import errno
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.backends.netlink.codec import NetlinkError
from k3snet.errors import ApplyError, RollbackError
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import Route, RouteBlock, State
from k3snet.planner import Change, Plan, plan
from tests.netlink.links import d0_namespace, ip
from tests.netlink.test_backend import DRIVERS, Driver
from tests.netlink.test_router_advertisements import (
    _ADVERTISE,
    _link_local_ready,
    _wait,
    defaults,
)

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


@pytest.mark.parametrize("protocol", ["boot", "ra"])
def test_a_rolled_back_delete_leaves_k3snet_s_nexthop_out_of_reach_behind_the_other_s_never(
        tmp_path: Path, driver: Driver, protocol: str) -> None:
    """The undo of that delete (another change of the apply failed) added k3snet's route
    back, and IPv6 appends it behind the other program's: the kernel listed one route
    under that one's protocol, k3snet's nexthop inside it, no longer its own (kept for
    good: no plan deleted it again). It is left out and the rollback says so; the other
    program's route carries the traffic, as ``ip -j -6 route`` shows.

    ``proto ra`` is a route NetworkManager or systemd-networkd installs from a router
    advertisement they read themselves: unlike the kernel's own (``RTF_ADDRCONF``,
    never a sibling), it takes appended nexthops, and k3snet's was put back behind it."""
    destination, ours, theirs = "2001:db8:9::/64", "2001:db8::2", "2001:db8::3"
    with d0_namespace("rappendr", "2001:db8::1/64") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        route = Route(destination, gateway=ours, device="d0")
        other = Route("2001:db8:a::/64", gateway=ours, device="d0")
        backend.apply(plan(backend.observe(), State(owned=[route, other])))
        ip(ns, "-6", "route", "append", destination, "via", theirs, "dev", "d0",
           "proto", protocol)
        teardown = plan(backend.observe(), State())
        assert [c.subject for c in teardown.changes] == [route, other]
        backend.faults.fail_at(len(teardown.changes) - 1)
        with pytest.raises(ApplyError) as caught:
            backend.apply(teardown)
        [left] = _listed(ns, "-6", destination)
        assert (left["gateway"], left.get("protocol", "boot"), "nexthops" in left) == (
            theirs, protocol, False)
        assert backend.observe().owned == {other}
        # proto ra: the dump before the undo took it for the kernel's own (never a
        # sibling); the one after it found k3snet's nexthop appended, and took it out.
        said = {"boot": "not put back: IPv6 would append it to the route",
                "ra": "not put back: IPv6 appended it to the multipath"}[protocol]
        assert said in str(caught.value)
        assert ("it was taken out again" in str(caught.value)) == (protocol == "ra")


def _without_expiry(routes: list[dict[str, object]]) -> list[str]:
    """``routes`` as comparable text, the advertised one's seconds left (``expires``,
    counting down) aside."""
    return sorted(json.dumps({k: v for k, v in r.items() if k != "expires"}, sort_keys=True)
                  for r in routes)


def test_a_rolled_back_delete_goes_back_beside_the_kernel_s_own_advertised_route(
        tmp_path: Path, driver: Driver) -> None:
    """A default route the kernel learned from a router advertisement (``RTF_ADDRCONF``)
    takes no appended nexthops: k3snet's route of its slot is put back beside it, as
    before the apply, and stays k3snet's (``ip -j -6 route``: two routes, each its own
    protocol)."""
    with temporary_netns("rappendn") as ns, temporary_netns("rappendg") as router:
        run_in(ns, ["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.default.accept_ra=1"])
        run_in(router, ["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                        "net.ipv6.conf.default.accept_dad=0"])
        ip(ns, "link", "add", "d0", "type", "veth", "peer", "name", "r0", "netns", router)
        ip(ns, "link", "set", "d0", "up")
        run_in(router, ["ip", "link", "set", "r0", "up"])
        ip(ns, "addr", "add", "2001:db8::1/64", "dev", "d0", "nodad")
        with NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
            route = Route("::/0", gateway="2001:db8::2", device="d0")
            other = Route("2001:db8:a::/64", gateway="2001:db8::2", device="d0")
            backend.apply(plan(backend.observe(), State(owned=[route, other])))
            _wait("link-local addresses", lambda: _link_local_ready(ns, "d0")
                  and _link_local_ready(router, "r0"))
            run_in(router, [sys.executable, "-c", _ADVERTISE])
            _wait("the advertised default route", lambda: len(defaults(ns)) == 2)
            before = _without_expiry(defaults(ns))
            teardown = plan(backend.observe(), State())
            assert [c.subject for c in teardown.changes] == [route, other]
            backend.faults.fail_at(len(teardown.changes) - 1)
            with pytest.raises(ApplyError) as caught:
                backend.apply(teardown)
            assert "not put back" not in str(caught.value)
            assert "ROLLBACK FAILED" not in str(caught.value)
            after = defaults(ns)
            assert sorted(str(r.get("protocol")) for r in after) == ["211", "ra"]
            assert _without_expiry(after) == before
            assert backend.observe().owned == {route, other}


def test_a_slot_the_undo_cannot_read_leaves_the_rest_of_the_rollback_done(
        tmp_path: Path, driver: Driver) -> None:
    """The dump before the undo (which slots hold another program's gateway route) is
    refused (a dump interrupted time after time by a routing daemon's churn: EAGAIN):
    the whole undo was given up, nothing sent, every change of the apply left made and
    the rollback failed, for a slot that held nothing else. It is put back as before
    that dump existed (a dump after it looks again when it can), and so are the
    others: the kernel lists k3snet's routes as before the apply."""
    destination = "2001:db8:9::/64"
    with d0_namespace("rappendu", "2001:db8::1/64") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        route = Route(destination, gateway="2001:db8::2", device="d0")
        other = Route("2001:db8:a::/64", gateway="2001:db8::2", device="d0")
        backend.apply(plan(backend.observe(), State(owned=[route, other])))
        teardown = plan(backend.observe(), State())
        assert [c.subject for c in teardown.changes] == [route, other]
        backend.faults.fail_at(len(teardown.changes) - 1)

        def refused(*_args: object, **_kwargs: object) -> None:
            raise NetlinkError(errno.EAGAIN, "dump interrupted 5 times in a row")

        _undo_dumping_with(backend, refused)  # every dump of the undo refused
        with pytest.raises(ApplyError) as caught:
            backend.apply(teardown)
        assert not isinstance(caught.value, RollbackError)
        [back] = _listed(ns, "-6", destination)
        assert (back["gateway"], back["protocol"]) == ("2001:db8::2", "211")
        assert backend.observe().owned == {route, other}


def _undo_dumping_with(backend: NetlinkBackend, routes: Any) -> None:
    """Make ``backend``'s undo dump the routes through ``routes`` in place of its
    driver's (the apply's own dumps are the driver's)."""
    driver_object: Any = backend._driver
    real_undo = backend._undo_routes

    def undo(made: Any) -> None:
        driver_object.routes = routes
        try:
            real_undo(made)
        finally:
            del driver_object.routes

    backend._undo_routes = undo  # type: ignore[method-assign]

@pytest.mark.parametrize("again", [False, True])
def test_a_slot_another_program_frees_during_the_undo_gets_k3snet_s_route_back(
        tmp_path: Path, driver: Driver, again: bool) -> None:
    """The dump before the undo finds another program's IPv6 route in the slot of a
    route of k3snet's to put back (it would be appended behind it): left out. The other
    program then deletes its route before the dump after the undo: the slot was free,
    k3snet's route could go back, and the rollback said "not put back ... the traffic
    goes through that route", a route no longer there (``ip -j -6 route``: nothing at
    the destination). It is now put back, once, when the dump after the undo finds the
    slot free, and a dump after that add checks it is k3snet's own: when the other
    program put its route back first (``again``), k3snet's, appended behind it, is taken
    out and said so, with no further round."""
    destination, ours, theirs = "2001:db8:9::/64", "2001:db8::2", "2001:db8::3"
    with d0_namespace("rappendf", "2001:db8::1/64") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        route = Route(destination, gateway=ours, device="d0")
        other = Route("2001:db8:a::/64", gateway=ours, device="d0")
        backend.apply(plan(backend.observe(), State(owned=[route, other])))
        ip(ns, "-6", "route", "append", destination, "via", theirs, "dev", "d0",
           "proto", "boot")
        teardown = plan(backend.observe(), State())
        assert [c.subject for c in teardown.changes] == [route, other]
        backend.faults.fail_at(len(teardown.changes) - 1)
        real_routes = backend._driver.routes
        dumps: list[object] = []

        def routes(*args: Any, **kwargs: Any) -> Any:
            found = real_routes(*args, **kwargs)
            dumps.append(args)
            if len(dumps) == 1:  # right after the dump before the undo
                ip(ns, "-6", "route", "del", destination, "via", theirs, "dev", "d0",
                   "proto", "boot")
            elif len(dumps) == 2 and again:  # before k3snet's route goes back
                ip(ns, "-6", "route", "add", destination, "via", theirs, "dev", "d0",
                   "proto", "boot")
            return found

        _undo_dumping_with(backend, routes)
        with pytest.raises(ApplyError) as caught:
            backend.apply(teardown)
        assert len(dumps) == 3  # before, after the undo, after the one add: no more
        [back] = _listed(ns, "-6", destination)
        if again:
            assert isinstance(caught.value, RollbackError)
            assert ("not put back: IPv6 appended it to the multipath, nexthop-object, "
                    "encap or via route 2001:db8:9::/64 table main metric 1024 proto boot"
                    ) in str(caught.value)
            assert "it was taken out again" in str(caught.value)
            assert (back["gateway"], back.get("protocol", "boot"), "nexthops" in back) == (
                theirs, "boot", False)
            assert backend.observe().owned == {other}
            return
        assert "not put back" not in str(caught.value)
        assert not isinstance(caught.value, RollbackError)
        assert (back["gateway"], back["protocol"], "nexthops" in back) == (ours, "211", False)
        assert backend.observe().owned == {route, other}
