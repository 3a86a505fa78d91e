"""A route moved to another metric is added at its new metric before it is deleted at the
old one (make before break), and the kernel's own view never lacks it in between.

Table, destination and metric are a route's key: a new metric is a new route, not a
replace (``NLM_F_REPLACE`` keeps the slot). Deleted first, the destination had no
route between the two changes: for the length of a batch, of a round trip each with
the pyroute2 driver, or for good when the run was killed there. The test's driver
sends the changes one at a time and reads ``ip -j route show table all`` after each.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.backends.netlink.codec import NetlinkError
from k3snet.backends.netlink.driver import RouteDriver
from k3snet.backends.netlink.pyroute2_driver import Pyroute2Driver
from k3snet.backends.netlink.socket_driver import open_socket_driver
from k3snet.backends.netns import NetnsRunner
from k3snet.errors import ApplyError
from k3snet.model import Route, State
from k3snet.planner import Change, plan
from tests.netlink.links import d0_namespace, ip

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

Driver = Literal["socket", "pyroute2"]


@pytest.fixture
def ns() -> Iterator[str]:
    with d0_namespace("mbb", "10.0.0.1/24", "fd00::1/64") as name:
        yield name


def kernel_routes(ns: str, destination: str) -> list[dict[str, Any]]:
    """The routes to ``destination`` in every table, as ``ip -j`` reports them."""
    family = "-6" if ":" in destination else "-4"
    listed: list[dict[str, Any]] = json.loads(
        ip(ns, "-j", family, "route", "show", "table", "all"))
    return [r for r in listed if r["dst"] == destination]


class _OneAtATime:
    """A driver sending each change on its own, reading the kernel's view after each."""

    def __init__(self, inner: RouteDriver, after_each: Any) -> None:
        self._inner = inner
        self._after_each = after_each

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def send(self, changes: Sequence[Change], indexes: Mapping[str, int],
             **options: Any) -> dict[int, NetlinkError]:
        failures: dict[int, NetlinkError] = {}
        for position, change in enumerate(changes):
            failed = self._inner.send([change], indexes, **options)
            if failed:
                failures[position] = failed[0]
            self._after_each()
        return failures


def _backend(ns: str, tmp_path: Path, driver: Driver, seen: list[list[dict[str, Any]]],
             destination: str) -> NetlinkBackend:
    def factory(runner: NetnsRunner, count: Any) -> RouteDriver:
        inner: RouteDriver = (open_socket_driver(runner, count) if driver == "socket"
                              else Pyroute2Driver(runner, count))
        return _OneAtATime(inner, lambda: seen.append(kernel_routes(ns, destination)))

    return NetlinkBackend(ns, state_dir=tmp_path, driver=factory)


_MOVES = {4: ("172.16.0.0/16", "10.0.0.2", 100, 200), 6: ("fd16::/64", "fd00::2", 1024, 100)}


@pytest.mark.parametrize("driver", ["socket", "pyroute2"])
@pytest.mark.parametrize("family", [4, 6])
def test_a_route_moved_to_another_metric_is_never_missing_from_the_kernel(
        ns: str, tmp_path: Path, driver: Driver, family: int) -> None:
    destination, gateway, old, new = _MOVES[family]
    before = Route(destination, gateway=gateway, device="d0", metric=old)
    after = Route(destination, gateway=gateway, device="d0", metric=new)
    seen: list[list[dict[str, Any]]] = []
    with _backend(ns, tmp_path, driver, seen, destination) as backend:
        backend.apply(plan(backend.observe(), State(owned=[before])))
        seen.clear()
        p = plan(backend.observe(), State(owned=[after]))
        assert [c.action for c in p.changes] == ["add", "delete"]
        backend.apply(p)
    assert len(seen) == 2
    assert all(routes for routes in seen), f"no route to {destination} after a change: {seen}"
    assert [r["metric"] for r in kernel_routes(ns, destination)] == [new]


@pytest.mark.parametrize("driver", ["socket", "pyroute2"])
def test_a_failed_metric_move_leaves_the_kernel_as_it_was_and_never_without_the_route(
        ns: str, tmp_path: Path, driver: Driver) -> None:
    destination = "172.16.0.0/16"
    before = Route(destination, gateway="10.0.0.2", device="d0", metric=100)
    seen: list[list[dict[str, Any]]] = []
    with _backend(ns, tmp_path, driver, seen, destination) as backend:
        backend.apply(plan(backend.observe(), State(owned=[before])))
        listed = ip(ns, "-j", "route", "show", "table", "all")
        seen.clear()
        backend.faults.fail_at(1)
        with pytest.raises(ApplyError):
            backend.apply(plan(backend.observe(), State(owned=[
                Route(destination, gateway="10.0.0.2", device="d0", metric=200)])))
    assert all(routes for routes in seen), f"no route to {destination} after a change: {seen}"
    assert ip(ns, "-j", "route", "show", "table", "all") == listed
