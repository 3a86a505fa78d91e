"""The socket driver builds a route again only when its message changed.

Any foreign route change makes the next observe dump every route; building 10 000
foreign ``Route`` values again after each change of one cost 300-700 ms a pass (a
deleted route of k3snet's was back after 0.9-1.5 s, not within the second the
drift watch promises). A message repeated byte for byte, under the same link
names, is now the route decoded from it the time before. Each observe here must
equal a new backend's, which decodes everything afresh, and the kernel's own
listing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import Route, State
from k3snet.planner import plan

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

FOREIGN = 300


def _ip(ns: str, *args: str) -> str:
    return run_in(ns, ["ip", *args]).stdout


@pytest.fixture
def ns(tmp_path: Path) -> Iterator[str]:
    with temporary_netns("reuse") as name:
        _ip(name, "link", "set", "lo", "up")
        _ip(name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
        _ip(name, "link", "set", "eth1", "up")
        _ip(name, "link", "set", "eth0", "up")
        _ip(name, "addr", "add", "192.168.1.5/24", "dev", "eth0")
        batch = tmp_path / "batch"
        batch.write_text("".join(f"route add 10.200.{i // 256}.{i % 256}/32 via 192.168.1.1 "
                                 "proto static\n" for i in range(FOREIGN)))
        _ip(name, "-batch", str(batch))
        yield name


def _fresh(ns: str, tmp_path: Path) -> State:
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        return backend.observe()


def _devices(ns: str) -> set[str]:
    return {r.get("dev", "") for r in json.loads(_ip(ns, "-j", "route", "show", "proto",
                                                     "static"))}


def test_a_dump_after_a_foreign_change_reuses_unchanged_routes_and_equals_a_fresh_one(
        ns: str, tmp_path: Path) -> None:
    want = Route("10.100.0.0/24", gateway="192.168.1.1", device="eth0")
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        backend.apply(plan(backend.observe(), State(owned=[want])))
        first = backend.observe()
        _ip(ns, "route", "add", "10.201.0.0/24", "via", "192.168.1.1", "proto", "bird")
        backend.expect(State(owned=[want]))
        second = backend.observe()
        assert second == _fresh(ns, tmp_path)
        assert Route("10.201.0.0/24", gateway="192.168.1.1", device="eth0",
                     protocol="bird") in second.foreign
        routes = [r for r in first.foreign if isinstance(r, Route)]
        kept = {id(route) for route in routes}
        assert sum(id(route) in kept for route in second.foreign) == len(routes) > FOREIGN
        # The hinted route is that very object, from the dump before too.
        assert next(r for r in second.owned if r == want) is want


def test_routes_of_a_renamed_link_are_decoded_again(ns: str, tmp_path: Path) -> None:
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        before = backend.observe()
        assert all(r.device == "eth0" for r in before.foreign
                   if isinstance(r, Route) and r.protocol == 4)
        _ip(ns, "link", "set", "eth0", "name", "eth9")  # up: the kernel renames it all the same
        assert _devices(ns) == {"eth9"}
        after = backend.observe()
        assert after == _fresh(ns, tmp_path)
        static = [r for r in after.foreign if isinstance(r, Route) and r.protocol == 4]
        assert len(static) == FOREIGN
        assert {r.device for r in static} == {"eth9"}
