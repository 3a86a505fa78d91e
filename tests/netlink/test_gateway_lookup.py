"""``check`` judges a route's gateway where the kernel looks it up, and the kernel says so.

The kernel takes a gateway as on-link when a lookup in the route's own table, or
else through the rules (``local``, ``main``, IPv4's ``default``), finds it on a device
route (``fib_check_nh_v4_gw``, ``ip6_route_check_nh``). ``check`` took any device
route of any table: a route of ``main`` through a gateway only table 100 reaches
passed the dry run, and the kernel refused it ("Nexthop has invalid gateway").
Each case is applied too: ``check`` names the gateway exactly when the kernel
refuses the route.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.errors import ApplyError
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import Route, State
from k3snet.planner import Change, Plan, plan

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

# The namespace's foreign routes, as `ip` arguments.
_FOREIGN = (
    ("route", "add", "10.50.0.0/24", "dev", "d0", "table", "100"),
    ("route", "add", "10.70.0.0/24", "dev", "d0", "scope", "global"),
    ("route", "add", "10.90.0.0/24", "dev", "d0", "scope", "host"),
    ("route", "add", "10.93.0.0/24", "dev", "d0", "table", "default"),
    ("route", "add", "10.0.0.0/28", "via", "10.0.0.9", "table", "101"),
    ("route", "add", "10.0.0.128/25", "dev", "e0", "table", "102"),
    ("-6", "route", "add", "fd50::/64", "dev", "e0", "table", "100"),
    ("-6", "route", "add", "fd00::/80", "via", "fd00::fe"),
    ("-6", "route", "add", "fd93::/64", "dev", "d0", "table", "default"),
    ("-6", "route", "add", "fd95::/64", "dev", "d0", "metric", "500"),
    ("-6", "route", "add", "fd95::/64", "via", "fd00:0:0:0:1::fe", "dev", "d0", "metric", "100"),
    ("-6", "route", "add", "unreachable", "fd97::/80"),
    ("-6", "route", "add", "fd97::/64", "dev", "d0"),
)

# (destination, gateway, device, table): each a route k3snet wants.
_CASES = (
    ("10.60.0.0/24", "10.50.0.5", "d0", 254),  # the gateway only table 100 reaches
    ("10.60.1.0/24", "10.50.0.5", None, 254),
    ("10.61.0.0/24", "10.50.0.5", "d0", 100),
    ("10.62.0.0/24", "10.0.0.5", "d0", 200),  # main reaches it
    ("10.63.0.0/24", "10.50.0.5", None, 200),
    ("10.80.0.0/24", "10.70.0.5", "d0", 254),  # a device route of scope global
    ("10.81.0.0/24", "10.71.0.5", "d0", 254),  # an address without its prefix route
    ("10.81.1.0/24", "10.71.0.1", "d0", 254),  # ... and that address itself
    ("10.82.0.0/24", "10.72.0.1", None, 254),  # an address of its own (/32)
    ("10.83.0.0/24", "10.0.0.5", "e0", 254),  # on another device
    ("10.92.0.0/24", "10.9.0.1", "d0", 254),  # e0's address through d0
    ("10.84.0.0/24", "10.0.0.5", "d0", 101),  # table 101 reaches it via a gateway
    ("10.85.0.0/24", "10.0.0.130", "d0", 102),  # table 102 through e0, main through d0
    ("10.85.1.0/24", "10.0.0.130", None, 102),
    ("10.91.0.0/24", "10.90.0.5", "d0", 254),  # a device route of scope host
    ("10.94.0.0/24", "10.93.0.5", "d0", 254),  # the default table, after main
    ("10.94.1.0/24", "10.93.0.5", "d0", 300),
    ("fd60::/64", "fd50::5", "d0", 254),
    ("fd61::/64", "fd50::5", "e0", 100),
    ("fd61:1::/64", "fd50::5", "d0", 100),  # table 100 holds it on e0 only
    ("fd61:2::/64", "fd50::5", None, 100),
    ("fd62::/64", "fd00::5", "d0", 200),
    ("fd70::/64", "fd00::5", "d0", 254),  # the best match is via a gateway
    ("fd70:1::/64", "fd00:0:0:0:1::5", "d0", 254),
    ("fd94::/64", "fd93::5", "d0", 254),  # IPv6 has no default rule
    ("fd96::/64", "fd95::5", "d0", 254),  # the lowest metric there is via a gateway
    ("fd98::/64", "fd97::5", None, 254),  # an unreachable route is the best match
    ("fd98:1::/64", "fd97::5", "d0", 254),  # ... not through d0
    ("fd73::/64", "fd09::5", None, 254),
)


def _ip(ns: str, *args: str) -> None:
    run_in(ns, ["ip", *args])


@pytest.fixture
def ns() -> Iterator[str]:
    with temporary_netns("gwlookup") as name:
        run_in(name, ["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                      "net.ipv6.conf.default.accept_dad=0"])
        _ip(name, "link", "set", "lo", "up")
        for dev, v4, v6 in (("d0", "10.0.0.1/24", "fd00::1/64"),
                            ("e0", "10.9.0.1/24", "fd09::1/64")):
            _ip(name, "link", "add", dev, "type", "veth", "peer", "name", f"{dev}p")
            _ip(name, "link", "set", f"{dev}p", "up")
            _ip(name, "link", "set", dev, "up")
            _ip(name, "addr", "add", v4, "dev", dev)
            _ip(name, "addr", "add", v6, "dev", dev, "nodad")
        _ip(name, "addr", "add", "10.71.0.1/24", "dev", "d0", "noprefixroute")
        _ip(name, "addr", "add", "10.72.0.1/32", "dev", "d0")
        for args in _FOREIGN:
            _ip(name, *args)
        yield name


def _kernel_routes(ns: str) -> list[object]:
    """The kernel's own listing, both families, every table."""
    return [json.loads(run_in(ns, ["ip", family, "-j", "route", "show", "table", "all"]).stdout)
            for family in ("-4", "-6")]


def _judged(backend: NetlinkBackend, route: Route) -> tuple[bool, bool]:
    """(whether check names the gateway, whether the kernel refuses the route)."""
    add = Plan(changes=[Change.add(route)])
    named = any("not on-link" in problem for problem in backend.check(add))
    try:
        backend.apply(add)
    except ApplyError:
        return named, True
    backend.apply(plan(backend.observe(), State()))  # as the kernel stored it
    return named, False


@pytest.mark.parametrize("tables", [None, (100, 101, 102, 200, 300)],
                         ids=["all-tables", "main-not-managed"])
def test_check_names_a_gateway_exactly_when_the_kernel_refuses_it(
        ns: str, tmp_path: Path, tables: tuple[int, ...] | None) -> None:
    routes = [Route(dst, gateway=gateway, device=device, table=table)
              for dst, gateway, device, table in _CASES]
    if tables is not None:
        routes = [r for r in routes if r.table in tables]
    before = _kernel_routes(ns)
    with NetlinkBackend(ns, state_dir=tmp_path, tables=tables) as backend:
        verdicts = {str(route): _judged(backend, route) for route in routes}
    assert _kernel_routes(ns) == before  # each accepted route gone again, nothing else touched
    wrong = {route: verdict for route, verdict in verdicts.items() if len(set(verdict)) > 1}
    assert not wrong, f"(check names it, the kernel refuses it): {wrong}"
    # The kernel's answers the cases were chosen for: both kinds are among them.
    refused = {route for route, (_named, kernel) in verdicts.items() if kernel}
    assert refused
    assert set(verdicts) - refused


def test_a_device_route_the_plan_deletes_first_reaches_no_gateway(
        ns: str, tmp_path: Path) -> None:
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        reach = Route("10.55.0.0/24", device="d0")
        backend.apply(Plan(changes=[Change.add(reach)]))
        through = Route("10.56.0.0/24", gateway="10.55.0.5", device="d0")
        assert not backend.check(Plan(changes=[Change.add(through)]))
        both = Plan(changes=[Change.delete(reach), Change.add(through)])
        assert any("10.55.0.5 is not on-link" in p for p in backend.check(both))
        with pytest.raises(ApplyError):
            backend.apply(both)


def test_check_names_a_local_prefix_broadcast_and_an_own_link_local_gateway(
        ns: str, tmp_path: Path) -> None:
    link_local = "fe80::1:1"
    _ip(ns, "-6", "addr", "add", f"{link_local}/64", "dev", "d0", "nodad")
    cases = {
        # The local table's broadcast route answers before main's device route.
        Route("10.64.0.0/24", gateway="10.0.0.255", device="d0"): "broadcast address",
        Route("10.64.1.0/24", gateway="10.0.0.255", device="d0", table=100): "broadcast address",
        Route("fd64::/64", gateway=link_local, device="d0"): "local address",
    }
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        for route, needle in cases.items():
            _named, refused = _judged(backend, route)
            assert refused, route
            problems = backend.check(Plan(changes=[Change.add(route)]))
            assert any(needle in problem for problem in problems), (route, problems)
