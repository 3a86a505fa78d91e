"""Routes through a nexthop object (``ip route add ... nhid N``) and the kept route view.

Deleting a nexthop object deletes the IPv4 routes through it without a route
notification (``fib_flush``; IPv6 sends one): the kept view held the gone route,
as a foreign block, until something else moved. A wanted route there was a
conflict with a route the kernel no longer had (``ip -j route`` shows none), and
the route token (the agent's node facts) stood still.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.errors import ApplyError, RollbackError
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import Route, RouteBlock, State
from k3snet.planner import plan
from tests.netlink.test_backend import Driver

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]


def _ip(ns: str, *args: str) -> str:
    return run_in(ns, ["ip", *args]).stdout


@pytest.fixture
def ns() -> Iterator[str]:
    with temporary_netns("nhid") as name:
        _ip(name, "link", "add", "d0", "type", "veth", "peer", "name", "d0p")
        _ip(name, "link", "set", "d0p", "up")
        _ip(name, "link", "set", "d0", "up")
        _ip(name, "addr", "add", "10.0.0.1/24", "dev", "d0")
        yield name


def test_a_route_gone_with_its_nexthop_object_leaves_the_kept_view(
        ns: str, tmp_path: Path) -> None:
    wanted = Route("10.20.0.0/24", gateway="10.0.0.2", device="d0")
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        _ip(ns, "nexthop", "add", "id", "7", "via", "10.0.0.254", "dev", "d0")
        _ip(ns, "route", "add", "10.20.0.0/24", "nhid", "7", "proto", "static")
        assert any(isinstance(r, RouteBlock) and str(r.destination) == "10.20.0.0/24"
                   for r in backend.observe().foreign)
        token = backend.route_token()
        _ip(ns, "nexthop", "del", "id", "7")
        assert json.loads(_ip(ns, "-j", "route", "show", "10.20.0.0/24")) == []
        assert backend.route_token() != token
        observed = backend.observe()
        assert not any(str(getattr(r, "destination", "")) == "10.20.0.0/24"
                       for r in observed.foreign)
        backend.apply(plan(observed, State(owned=[wanted])))
    shown = json.loads(_ip(ns, "-j", "route", "show", "10.20.0.0/24"))
    assert [(r["gateway"], r["protocol"]) for r in shown] == [("10.0.0.2", "211")]


_FAMILIES = {"ipv4": ("-4", "198.51.100.0/24", "192.0.2.2", "192.0.2.3", "203.0.113.0/24"),
             "ipv6": ("-6", "2001:db8:9::/64", "2001:db8::2", "2001:db8::3", "2001:db8:a::/64")}


def _listed(ns: str, family: str, destination: str) -> list[tuple[str | None, str | None]]:
    """The routes of ``destination`` as ``ip -j`` lists them: (gateway, nexthop object)."""
    return [(r.get("gateway"), None if r.get("nhid") is None else str(r["nhid"]))
            for r in json.loads(_ip(ns, "-j", family, "route", "show", destination))]


@pytest.mark.parametrize("driver", ["socket", "pyroute2"])
@pytest.mark.parametrize("family", sorted(_FAMILIES))
def test_another_program_s_route_through_a_nexthop_object_in_k3snet_s_slot_is_never_touched(
        tmp_path: Path, driver: Driver, family: str) -> None:
    """Another program's route through a nexthop object (``ip route add DST nhid 5``), at
    the destination and metric of a route of k3snet's. Already there: the plan names it
    a conflict and adds nothing (the kernel would refuse the slot). Added beside
    k3snet's (``ip route append``; IPv6 keeps it a route of its own, never a sibling):
    k3snet's delete takes back its own route alone, and a rollback of that delete puts
    it back beside the other one; ``ip -j route`` lists the other program's as it was."""
    flag, destination, ours, theirs, second = _FAMILIES[family]
    metric = "0" if flag == "-4" else "1024"
    with temporary_netns("nhslot") as ns:
        _ip(ns, "link", "add", "d0", "type", "veth", "peer", "name", "d0p")
        run_in(ns, ["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"])
        for link in ("d0p", "d0"):
            _ip(ns, "link", "set", link, "up")
        _ip(ns, "addr", "add", "192.0.2.1/24", "dev", "d0")
        _ip(ns, "addr", "add", "2001:db8::1/64", "dev", "d0", "nodad")
        _ip(ns, "nexthop", "add", "id", "5", "via", theirs, "dev", "d0")
        _ip(ns, flag, "route", "add", destination, "nhid", "5", "metric", metric)
        foreign = [(theirs, "5")]
        route = Route(destination, gateway=ours, device="d0")
        wanted = State(owned=[route, Route(second, gateway=ours, device="d0")])
        with NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
            planned = plan(backend.observe(), wanted)
            [note] = planned.notes
            assert note.status == "conflict"
            assert isinstance(note.foreign, RouteBlock)
            assert "nexthop-object" in note.render()
            assert route not in [c.subject for c in planned.changes]
            backend.apply(planned)
            assert _listed(ns, flag, destination) == foreign
            # Beside k3snet's route instead: its delete, undone, leaves the other alone.
            _ip(ns, flag, "route", "del", destination, "nhid", "5", "metric", metric)
            backend.apply(plan(backend.observe(), wanted))
            _ip(ns, flag, "route", "append", destination, "nhid", "5", "metric", metric)
            teardown = plan(backend.observe(), State())
            assert teardown.changes[0].subject == route
            backend.faults.fail_at(len(teardown.changes) - 1)
            with pytest.raises(ApplyError) as caught:
                backend.apply(teardown)
            assert not isinstance(caught.value, RollbackError)
            assert sorted(_listed(ns, flag, destination), key=str) == sorted(
                [(ours, None), *foreign], key=str)
            assert route in backend.observe().owned
            backend.apply(plan(backend.observe(), State()))
            assert _listed(ns, flag, destination) == foreign
