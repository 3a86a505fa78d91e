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
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import Route, RouteBlock, State
from k3snet.planner import plan

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
