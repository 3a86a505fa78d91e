"""The netlink backend against the real kernel, inside namespaces made for each test.

Every check reads the kernel's own view too (``ip -j route show table all``,
``ip netns exec NS cat /proc/sys/...``), not only what ``observe`` says. Foreign
routes seeded the way a K3s node has them (kernel, boot, static, bird, dhcp,
flannel's onlink route on ``flannel.1``, a blackhole and a multipath route that
the model cannot represent) must come out byte-identical.

Route tests run with both drivers (``socket``, the default, and ``pyroute2``):
the semantics are the same, only the number of round trips differs.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import strategies as st

from k3snet.backends.netlink import WATCHED_SYSCTLS, NetlinkBackend, codec
from k3snet.backends.netlink.sysctls import write_sysctl
from k3snet.backends.netns import NetnsRunner
from k3snet.errors import ApplyError, BackendError, K3snetError, PlanError, RollbackError
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import K3SNET_ROUTE_PROTOCOL, Route, RouteBlock, State, Sysctl
from k3snet.planner import Change, Plan, plan
from k3snet.testing import strategies
from tests.examples import examples

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

Driver = Literal["socket", "pyroute2"]
DRIVERS: tuple[Driver, ...] = ("socket", "pyroute2")

# Foreign state of a K3s-like node, as `ip` arguments (run with `ip -n NS`).
_FOREIGN_ROUTES: tuple[tuple[str, ...], ...] = (
    ("route", "add", "192.168.50.0/24", "via", "10.0.0.254", "proto", "static"),
    ("route", "add", "192.168.51.0/24", "via", "10.0.0.254"),  # proto boot
    ("route", "add", "192.168.52.0/24", "via", "10.0.0.254", "proto", "bird", "metric", "32"),
    ("route", "add", "default", "via", "10.0.0.254", "proto", "dhcp", "metric", "100"),
    ("route", "add", "10.42.1.0/24", "via", "10.42.1.0", "dev", "flannel.1", "onlink"),
    ("route", "add", "172.16.0.0/16", "via", "10.9.0.254", "table", "100", "proto", "static"),
    ("route", "add", "blackhole", "198.18.0.0/15"),
    ("route", "add", "198.51.100.0/24", "nexthop", "via", "10.0.0.250", "nexthop", "via",
     "10.9.0.250"),
    ("-6", "route", "add", "fd99::/64", "via", "fd00::fe", "proto", "static"),
)


def _ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def ns() -> Iterator[str]:
    """A namespace with two veth pairs, flannel.1 (vxlan) and K3s-like foreign routes."""
    with temporary_netns("nl") as name:
        # No duplicate address detection in a lab of its own: addresses are usable at once.
        run_in(name, ["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                      "net.ipv6.conf.default.accept_dad=0"])
        _ip(name, "link", "set", "lo", "up")
        for dev, peer in (("d0", "d0p"), ("e0", "e0p")):
            _ip(name, "link", "add", dev, "type", "veth", "peer", "name", peer)
            _ip(name, "link", "set", peer, "up")
            _ip(name, "link", "set", dev, "up")
        _ip(name, "addr", "add", "10.0.0.1/24", "dev", "d0")
        _ip(name, "addr", "add", "fd00::1/64", "dev", "d0", "nodad")
        _ip(name, "addr", "add", "10.9.0.1/24", "dev", "e0")
        _ip(name, "addr", "add", "fd09::1/64", "dev", "e0", "nodad")
        _ip(name, "link", "add", "flannel.1", "type", "vxlan", "id", "1", "dstport", "8472",
            "local", "10.0.0.1", "dev", "d0", "nolearning")
        _ip(name, "addr", "add", "10.42.0.0/32", "dev", "flannel.1")
        _ip(name, "link", "set", "flannel.1", "up")
        for args in _FOREIGN_ROUTES:
            _ip(name, *args)
        _settle_link_local(name, ("d0", "d0p", "e0", "e0p", "flannel.1"))
        yield name


def _settle_link_local(ns: str, devices: tuple[str, ...]) -> None:
    """Wait until each device has its IPv6 link-local address, DAD done.

    The kernel adds those addresses, and their routes in the local table, some
    time after a link comes up; tests that compare the kernel's route listing
    before and after an apply must start once they are there (on a loaded
    machine they used to appear in the middle of a test).
    """
    deadline = time.monotonic() + 60
    while True:
        ready = {entry["ifname"] for entry in json.loads(_ip(ns, "-6", "-j", "addr", "show"))
                 for address in entry.get("addr_info", ())
                 if address.get("scope") == "link" and not address.get("tentative")}
        if set(devices) <= ready:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"no settled link-local address on {set(devices) - ready}")
        time.sleep(0.05)


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> Driver:
    """Each route test runs once per driver."""
    chosen: Driver = request.param
    return chosen


@pytest.fixture
def backend(ns: str, tmp_path: Path, driver: Driver) -> Iterator[NetlinkBackend]:
    with NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as made:
        yield made


def apply_ops(driver: Driver, requests: int, *, dumps: int) -> int:
    """The round trips an apply of ``requests`` route changes (up to 1024) reports.

    The socket driver sends them in one batch and reads the route view it keeps
    warm; the pyroute2 driver sends one request per change and dumps again what
    the apply needs (links: 1; links and both families' routes: 3).
    """
    return 1 if driver == "socket" else requests + dumps


def root_routes() -> list[object]:
    """The root namespace's routes, all tables, both families, as ``ip -j`` reports them."""
    return [json.loads(subprocess.run(["ip", "-j", family, "route", "show", "table", "all"],
                                      check=True, capture_output=True, text=True).stdout)
            for family in ("-4", "-6")]


def kernel_routes(ns: str) -> list[str]:
    """Every route of the namespace as ``ip`` prints it, IPv4 then IPv6, all tables."""
    return [line for family in ("-4", "-6")
            for line in _ip(ns, family, "route", "show", "table", "all").splitlines()]


def foreign_lines(ns: str) -> list[str]:
    return [line for line in kernel_routes(ns) if f"proto {K3SNET_ROUTE_PROTOCOL}" not in line]


def owned_in_kernel(ns: str) -> set[tuple[str, str | None, str | None, int, int]]:
    """k3snet's routes as the kernel reports them: (dst, gateway, dev, table, metric)."""
    found = set()
    for family in ("-4", "-6"):
        for entry in json.loads(_ip(ns, "-j", family, "route", "show", "table", "all")):
            if entry.get("protocol") != str(K3SNET_ROUTE_PROTOCOL):
                continue
            table = entry.get("table", "main")
            table_id = {"main": 254, "default": 253}.get(table) or int(table)
            found.add((entry["dst"], entry.get("gateway"), entry.get("dev"), table_id,
                       int(entry.get("metric", 0))))
    return found


def as_kernel(route: Route) -> tuple[str, str | None, str | None, int, int]:
    dst = str(route.destination)
    if route.destination.prefixlen == route.destination.max_prefixlen:
        dst = str(route.destination.network_address)  # ip prints host routes bare
    elif route.destination.prefixlen == 0:
        dst = "default"
    gateway = None if route.gateway is None else str(route.gateway)
    return (dst, gateway, route.device, route.table, int(route.metric or 0))


def sysctl_in(ns: str, path: str) -> str:
    return run_in(ns, ["cat", f"/proc/sys/{path}"]).stdout.strip()


_WANTED = (
    Route("10.1.0.0/24", gateway="10.0.0.2", device="d0"),
    Route("10.1.1.0/24", gateway="10.0.0.2", device="d0", metric=10),
    Route("10.1.1.0/24", gateway="10.9.0.2", device="e0", metric=200),
    Route("10.2.0.0/16", device="e0", table=100),
    Route("10.3.0.5/32", device="d0", table=100, metric=7),
    Route("0.0.0.0/0", gateway="10.9.0.2", device="e0", table=1000),
    Route("10.4.0.0/24", gateway="10.0.0.3", device="d0", table=70000, metric=5),
    Route("fd01::/64", gateway="fd00::2", device="d0"),
    Route("fd02::/48", device="e0", table=100, metric=300),
    Route("fd03::/64", gateway="fe80::1", device="e0", table=1000, metric=0),
    Route("::/0", gateway="fd09::2", device="e0", table=1000),
)


def test_observe_tells_owned_from_foreign(ns: str, backend: NetlinkBackend) -> None:
    state = backend.observe()
    assert not state.owned
    routes = {r for r in state.foreign if isinstance(r, Route)}
    protocols = {(str(r.destination), r.protocol) for r in routes}
    assert ("192.168.50.0/24", 4) in protocols  # static
    assert ("192.168.51.0/24", 3) in protocols  # boot
    assert ("192.168.52.0/24", 12) in protocols  # bird
    assert ("0.0.0.0/0", 16) in protocols  # dhcp
    assert ("10.0.0.0/24", 2) in protocols  # kernel
    flannel = Route("10.42.1.0/24", gateway="10.42.1.0", device="flannel.1", protocol=3)
    assert flannel in routes
    assert Route("172.16.0.0/16", gateway="10.9.0.254", device="e0", table=100,
                 protocol=4) in routes
    assert Route("fd99::/64", gateway="fd00::fe", device="d0", protocol=4) in routes
    # Blackhole and multipath routes cannot be modelled: skipped, never owned.
    assert not {r for r in routes if str(r.destination) in {"198.18.0.0/15", "198.51.100.0/24"}}
    assert all(r.table != 255 for r in routes)
    sysctls = {s.name for s in state.foreign if isinstance(s, Sysctl)}
    assert sysctls == set(WATCHED_SYSCTLS)


def test_the_expect_hint_changes_no_reading_of_the_kernels_routes(
        ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        backend.apply(plan(backend.observe(), State(owned=_WANTED)))
    # One field off each: never taken for the kernel's route.
    near = [Route(r.destination, gateway=r.gateway, device=r.device, table=r.table,
                  metric=(r.metric or 0) + 1) for r in _WANTED]
    built: list[int] = []  # the protocol of every route built from its message
    real = codec.route_of

    def route_of(**fields: object) -> Route | RouteBlock | codec.Siblings | None:
        built.append(fields["protocol"])  # type: ignore[arg-type]
        return real(**fields)  # type: ignore[arg-type]

    monkeypatch.setattr(codec, "route_of", route_of)
    readings = []
    for hint in ((), _WANTED, near, (*_WANTED, *near)):
        built.clear()
        with NetlinkBackend(ns, state_dir=tmp_path, driver="socket") as fresh:
            fresh.expect(State(owned=hint))
            readings.append(fresh.observe())
        mine = sum(protocol == K3SNET_ROUTE_PROTOCOL for protocol in built)
        # With k3snet's routes in the hint none of them is built again; else each is.
        assert mine == (0 if _WANTED[0] in hint else len(_WANTED)), hint
    assert all(reading == readings[0] for reading in readings)
    assert readings[0].owned == State(owned=_WANTED).owned


def test_apply_routes_and_remove_them(ns: str, backend: NetlinkBackend, tmp_path: Path,
                                      driver: Driver) -> None:
    foreign_before = foreign_lines(ns)
    desired = State(owned=_WANTED)
    first = plan(backend.observe(), desired)
    assert backend.check(first) == ()
    result = backend.apply(first)
    assert result.applied == first.changes
    # Eleven routes: one netlink batch, or eleven pyroute2 requests and a link dump.
    assert result.operations == apply_ops(driver, len(_WANTED), dumps=1)

    assert owned_in_kernel(ns) == {as_kernel(r) for r in _WANTED}
    observed = backend.observe()
    assert observed.owned == desired.owned
    assert plan(observed, desired).empty
    for other in DRIVERS:  # a dump, not the kept view; the other driver decodes the same
        with NetlinkBackend(ns, state_dir=tmp_path, driver=other) as fresh:
            assert fresh.observe() == observed
    assert foreign_lines(ns) == foreign_before

    removal = plan(observed, State())
    expected = apply_ops(driver, len(removal), dumps=3)
    # The socket driver may dump both families again if a notification it did not cause
    # (a link-local address leaving IPv6 DAD) made it drop its view.
    slack = 2 if driver == "socket" else 0
    assert expected <= backend.apply(removal).operations <= expected + slack
    assert owned_in_kernel(ns) == set()
    assert foreign_lines(ns) == foreign_before
    assert not backend.observe().owned


def test_replace_is_one_request(ns: str, backend: NetlinkBackend, driver: Driver) -> None:
    old = Route("10.5.0.0/24", gateway="10.0.0.2", device="d0", table=100)
    new = Route("10.5.0.0/24", gateway="10.9.0.2", device="e0", table=100)
    backend.apply(plan(backend.observe(), State(owned=[old])))
    change = plan(backend.observe(), State(owned=[new]))
    assert [c.action for c in change] == ["replace"]
    assert backend.apply(change).operations == apply_ops(driver, 1, dumps=3)
    assert owned_in_kernel(ns) == {as_kernel(new)}
    v6_old = Route("fd05::/64", gateway="fd00::2", device="d0", metric=50)
    v6_new = Route("fd05::/64", device="e0", metric=50)
    backend.apply(plan(backend.observe(), State(owned=[new, v6_old])))
    change = plan(backend.observe(), State(owned=[new, v6_new]))
    assert [c.action for c in change] == ["replace"]
    backend.apply(change)
    assert owned_in_kernel(ns) == {as_kernel(new), as_kernel(v6_new)}


def test_kernel_refusal_rolls_back(ns: str, backend: NetlinkBackend) -> None:
    keep = Route("10.6.0.0/24", gateway="10.0.0.2", device="d0")
    moved = Route("10.6.1.0/24", gateway="10.0.0.2", device="d0")
    gone = Route("fd06::/64", gateway="fd00::2", device="d0")
    backend.apply(plan(backend.observe(), State(owned=[keep, moved, gone])))
    before = kernel_routes(ns)

    changes = [
        Change.delete(gone),
        Change.replace(moved, Route("10.6.1.0/24", gateway="10.9.0.2", device="e0")),
        Change.add(Route("10.6.2.0/24", device="e0", table=100)),
        Change.add(Route("10.6.3.0/24", gateway="10.77.0.1", device="d0")),  # not on-link
        Change.add(Route("10.6.4.0/24", device="d0")),
    ]
    bad = Plan(changes=changes)
    assert any("not on-link" in p for p in backend.check(bad))
    with pytest.raises(ApplyError) as caught:
        backend.apply(bad)
    error = caught.value
    assert error.failed == changes[3]
    assert "10.6.3.0/24" in str(error)
    # The kernel handles a whole batch: the change after the failure was done and undone too.
    assert set(error.done) == {changes[0], changes[1], changes[2], changes[4]}
    assert set(error.rolled_back) == {c.inverse() for c in error.done}
    assert "were undone" in str(error)
    assert kernel_routes(ns) == before
    assert backend.observe().owned == {keep, moved, gone}


def test_injected_failure_rolls_back_routes_and_sysctls(ns: str, tmp_path: Path,
                                                        driver: Driver) -> None:
    with NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        backend.apply(plan(backend.observe(), State(owned=[Sysctl("net.ipv4.ip_forward", 1)])))
    before_routes = kernel_routes(ns)
    with NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        backend.faults.fail_at(3)
        observed = backend.observe()
        desired = State(owned=[
            Sysctl("net.ipv4.ip_forward", 1),
            Sysctl("net.ipv4.conf.all.rp_filter", 2),
            Sysctl("net.ipv4.conf.d0.rp_filter", 1),
            Route("10.7.0.0/24", device="d0"),
            Route("10.7.1.0/24", gateway="10.9.0.2", device="e0"),
        ])
        bad = plan(observed, desired)
        assert len(bad) == 4
        with pytest.raises(ApplyError) as caught:
            backend.apply(bad)
        assert caught.value.failed == bad.changes[3]
        assert list(caught.value.done) == list(bad.changes[:3])
        assert [c.inverse() for c in reversed(bad.changes[:3])] == list(
            caught.value.rolled_back)
        assert kernel_routes(ns) == before_routes
        assert sysctl_in(ns, "net/ipv4/ip_forward") == "1"
        assert sysctl_in(ns, "net/ipv4/conf/all/rp_filter") == "0"
        assert sysctl_in(ns, "net/ipv4/conf/d0/rp_filter") == "0"
        assert backend.observe() == observed
        assert backend.faults.armed is None  # one shot: the next apply goes through
        backend.apply(bad)
        assert backend.observe().owned == desired.owned


def test_sysctls_are_restored_and_drift_is_repaired(ns: str, backend: NetlinkBackend,
                                                   tmp_path: Path) -> None:
    root_forwarding = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    wanted = State(owned=[Sysctl("net.ipv4.ip_forward", 1),
                          Sysctl("net.ipv4.conf.d0.rp_filter", 2)])
    backend.apply(plan(backend.observe(), wanted))
    assert sysctl_in(ns, "net/ipv4/ip_forward") == "1"
    assert sysctl_in(ns, "net/ipv4/conf/d0/rp_filter") == "2"
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == root_forwarding
    record = json.loads((tmp_path / ns / "sysctl.json").read_text())
    assert record["owned"]["net.ipv4.ip_forward"] == {"value": "1", "previous": "0"}
    observed = backend.observe()
    assert observed.owned == wanted.owned
    assert plan(observed, wanted).empty
    owned = {s.name: s.previous for s in observed.owned if isinstance(s, Sysctl)}
    assert owned == {"net.ipv4.ip_forward": "0", "net.ipv4.conf.d0.rp_filter": "0"}

    run_in(ns, ["sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"])  # drift
    drifted = backend.observe()
    assert Sysctl("net.ipv4.ip_forward", 0) in drifted.owned
    repair = plan(drifted, wanted)
    assert [c.action for c in repair] == ["replace"]
    backend.apply(repair)
    assert sysctl_in(ns, "net/ipv4/ip_forward") == "1"

    removal = plan(backend.observe(), State())
    expected = removal.apply_to(backend.observe())
    backend.apply(removal)
    assert sysctl_in(ns, "net/ipv4/ip_forward") == "0"
    assert sysctl_in(ns, "net/ipv4/conf/d0/rp_filter") == "0"
    after = backend.observe()
    assert after == expected  # the released per-device sysctl is now reported as foreign
    assert Sysctl("net.ipv4.conf.d0.rp_filter", 0) in after.foreign


def test_bad_input_changes_nothing(ns: str, backend: NetlinkBackend, tmp_path: Path,
                                   driver: Driver) -> None:
    before = kernel_routes(ns)
    observed = backend.observe()
    good = Route("10.8.0.0/24", device="d0")
    cases = {
        "does not exist": Route("10.8.1.0/24", device="nosuch0"),
        "not on-link": Route("10.8.2.0/24", gateway="192.0.2.1", device="d0"),
        "local address": Route("fd08::/64", gateway="fd00::1", device="d0"),
    }
    for needle, route in cases.items():
        bad = Plan(changes=[Change.add(good), Change.add(route)])
        assert any(needle in p for p in backend.check(bad)), needle
        with pytest.raises(ApplyError) as caught:
            backend.apply(bad)
        assert caught.value.failed == Change.add(route)
        assert kernel_routes(ns) == before
        assert backend.observe() == observed
    with pytest.raises(ApplyError, match="no such sysctl"):
        backend.apply(Plan(changes=[Change.add(Sysctl("net.ipv4.conf.nosuch0.rp_filter", 1))]))
    assert not (tmp_path / ns / "sysctl.json").exists() or not json.loads(
        (tmp_path / ns / "sysctl.json").read_text())["owned"]

    foreign = Route("192.168.50.0/24", gateway="10.0.0.254", device="d0", protocol=4)
    assert foreign in observed.foreign
    refused = [Plan(changes=[Change.delete(foreign)]),
               Plan(changes=[Change.delete(Route("192.168.50.0/24", gateway="10.0.0.254",
                                                 device="d0"))]),
               Plan(changes=[Change.delete(Sysctl("net.ipv4.ip_forward", 0))])]
    for bad in refused:
        assert backend.check(bad)
        with pytest.raises(PlanError):
            backend.apply(bad)
    assert kernel_routes(ns) == before

    # A foreign route in the very slot of an owned one (ip route append): a replace
    # could overwrite either, so it is refused.
    mine = Route("10.8.5.0/24", gateway="10.0.0.2", device="d0")
    backend.apply(Plan(changes=[Change.add(mine)]))
    _ip(ns, "route", "append", "10.8.5.0/24", "via", "10.9.0.2", "proto", "static")
    shared = Plan(changes=[Change.replace(mine, Route("10.8.5.0/24", device="e0"))])
    assert any("shares the slot" in p for p in backend.check(shared))
    with pytest.raises(PlanError, match="shares the slot"):
        backend.apply(shared)
    backend.apply(Plan(changes=[Change.delete(mine)]))  # the kernel matches the protocol
    _ip(ns, "route", "del", "10.8.5.0/24", "via", "10.9.0.2", "proto", "static")
    assert kernel_routes(ns) == before

    with NetlinkBackend(ns, state_dir=tmp_path, tables=[100], driver=driver) as narrow:
        outside = Plan(changes=[Change.add(good)])
        assert any("not managed" in p for p in narrow.check(outside))
        with pytest.raises(PlanError):
            narrow.apply(outside)
        assert {r.table for r in narrow.observe().foreign if isinstance(r, Route)} == {100}
    assert kernel_routes(ns) == before

    with pytest.raises(BackendError, match="does not exist"):
        NetlinkBackend("k3snet-nl-nosuchns", state_dir=tmp_path, driver=driver)
    assert not Path("/run/netns/k3snet-nl-nosuchns").exists()


def test_changes_behind_our_back_are_seen(ns: str, backend: NetlinkBackend) -> None:
    mine = Route("10.10.0.0/24", gateway="10.0.0.2", device="d0")
    desired = State(owned=[mine])
    backend.apply(plan(backend.observe(), desired))
    assert plan(backend.observe(), desired).empty
    _ip(ns, "route", "add", "10.11.0.0/24", "via", "10.0.0.9", "proto", "static")
    assert Route("10.11.0.0/24", gateway="10.0.0.9", device="d0", protocol=4) in (
        backend.observe().foreign)
    _ip(ns, "route", "del", "10.10.0.0/24", "proto", str(K3SNET_ROUTE_PROTOCOL))
    repair = plan(backend.observe(), desired)
    assert [c.action for c in repair] == ["add"]
    backend.apply(repair)
    assert owned_in_kernel(ns) == {as_kernel(mine)}
    _ip(ns, "link", "set", "e0", "down")  # IPv4 drops routes without a notification
    _ip(ns, "link", "set", "e0", "up")
    assert backend.observe().owned == desired.owned


def test_the_route_token_moves_with_every_foreign_route_change_kept_view_or_not(
        ns: str, tmp_path: Path) -> None:
    # The agent keeps the node facts while the token stands still: a route change the
    # token misses (none is kept before the first observe, nor after a foreign change
    # dropped it) would leave them without it until something else moved.
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        seen = [backend.route_token()]  # no view kept yet
        for octet in range(3):
            if octet == 2:
                backend.observe()  # a kept view, followed from the notifications
            _ip(ns, "route", "add", f"10.12.{octet}.0/24", "via", "10.0.0.9", "proto",
                "static")
            token = backend.route_token()
            assert token not in seen, octet
            seen.append(token)
            assert len(json.loads(_ip(ns, "-j", "route", "show", f"10.12.{octet}.0/24"))) == 1


@pytest.mark.parametrize("protocol", [211, 200])
def test_the_facts_token_stands_still_for_k3snets_own_routes_only_and_moves_for_a_replace(
        ns: str, tmp_path: Path, protocol: int) -> None:
    # The node facts leave out routes of 211 and of the backend's protocol, so the agent
    # need not read them again when only those changed (a deleted route of k3snet's put
    # back); a replace by one of them removed a route the facts may hold, without a
    # notification of that route.
    with NetlinkBackend(ns, state_dir=tmp_path, protocol=protocol) as backend:
        token = backend.facts_token()
        assert token is not None
        for proto in (str(protocol), "211"):
            _ip(ns, "route", "add", "10.13.0.0/24", "via", "10.0.0.9", "proto", proto)
            _ip(ns, "-6", "route", "add", "fd13::/64", "via", "fd00::9", "proto", proto)
            backend.observe()
            _ip(ns, "route", "del", "10.13.0.0/24", "proto", proto)
            _ip(ns, "-6", "route", "del", "fd13::/64", "proto", proto)
            assert backend.facts_token() == token, proto
        moves = (("route", "add", "10.14.0.0/24", "via", "10.0.0.9", "proto", "static"),
                 ("route", "replace", "10.14.0.0/24", "via", "10.0.0.9", "proto",
                  str(protocol)),
                 ("route", "add", "10.15.0.0/24", "via", "10.0.0.9", "proto", "201"),
                 ("addr", "add", "10.16.0.1/24", "dev", "e0"))
        for argv in moves:
            _ip(ns, *argv)
            moved = backend.facts_token()
            assert moved != token, argv
            token = moved
        assert backend.route_token() is not None


# A small pool of destinations besides random ones, so that keys collide and
# plans replace routes (gateway or device changes), default routes included;
# device None: a route via a gateway only, whose device the kernel picks.
_CROWDED = st.sampled_from([ipaddress.ip_network(n) for n in
                            ("10.50.0.0/24", "0.0.0.0/0", "fd50::/64", "::/0")])
_COMMON: dict[str, Any] = {
    "destinations": st.one_of(_CROWDED, strategies.networks()),
    "gateways": {"d0": ["10.0.0.2", "fd00::2"], "e0": ["10.9.0.2", "fd09::2", "fe80::1"]},
    "metrics": (None, 0, 100)}
# Without a device, in the main table only: in another table the kernel binds the
# gateway through that table's routes first, so a device route of k3snet's there
# (0.0.0.0/0 dev d0 table 100) binds 10.9.0.2 to d0; once that route is deleted, the
# route via 10.9.0.2 dev d0 cannot be put back as it was, and the exact undo the suite
# asks of a delete is refused by the kernel ("Nexthop has invalid gateway").
_ROUTES = st.one_of(
    strategies.routes(devices=("d0", "e0"), tables=(254, 100, 1000, 2**32 - 1), **_COMMON),
    strategies.routes(devices=(None,), tables=(254,), **_COMMON))
# One strategy object for both drivers' runs: run_conformance scans it for its edge
# objects (a thousand draws of fixed seed) once per strategy object, not once per run.
CONFORMANCE_OBJECTS = st.one_of(
    _ROUTES, strategies.sysctls(names=WATCHED_SYSCTLS, values=("0", "1")))


def test_conformance(ns: str, tmp_path: Path, driver: Driver) -> None:
    from k3snet.testing import run_conformance  # noqa: PLC0415 - hypothesis-heavy import

    # reopen: the next process's backend reads the routes and the sysctls' recorded values
    # (its state file) as this one holds them. It goes through the socket driver for both
    # drivers: a pyroute2 backend keeps no route view (it follows no notifications) and
    # dumps afresh at every call, so the one under test already reads the kernel anew
    # each time, and the next process's must read the same; a new pyroute2 backend for
    # each check (each dumped message decoded by pyroute2) was a fifth of that run's CPU.
    run_conformance(lambda: NetlinkBackend(ns, state_dir=tmp_path, driver=driver),
                    objects=CONFORMANCE_OBJECTS, max_examples=examples(50),
                    reopen=lambda _: NetlinkBackend(ns, state_dir=tmp_path, driver="socket"))
    assert not {line for line in kernel_routes(ns) if "proto 211" in line}


def test_apply_errors_are_k3snet_errors(backend: NetlinkBackend) -> None:
    stranger = Plan(changes=[Change.add(Route("10.12.0.0/24", device="d0", protocol=5))])
    assert backend.check(stranger)
    with pytest.raises(K3snetError):
        backend.apply(stranger)


def test_drivers_observe_the_same(ns: str, tmp_path: Path) -> None:
    # Besides the K3s-like foreign routes: a route through a nexthop object (pyroute2
    # does not know RTA_NH_ID) and a blackhole in table 100: neither can be modelled.
    _ip(ns, "nexthop", "add", "id", "7", "via", "10.0.0.9", "dev", "d0")
    _ip(ns, "route", "add", "10.70.0.0/24", "nhid", "7", "proto", str(K3SNET_ROUTE_PROTOCOL))
    _ip(ns, "route", "add", "blackhole", "10.71.0.0/24", "table", "100")
    mine = [*_WANTED, Route("10.72.0.1/32", device="d0", scope="host")]
    views = {}
    for name in DRIVERS:
        with NetlinkBackend(ns, state_dir=tmp_path, driver=name) as backend:
            if name == "socket":
                backend.apply(plan(backend.observe(), State(owned=mine)))
            views[name] = backend.observe()
    assert views["socket"] == views["pyroute2"]
    assert views["socket"].owned == frozenset(mine)  # not the nexthop-object route
    modelled = {str(r.destination) for r in views["socket"].foreign if isinstance(r, Route)}
    assert not modelled & {"10.70.0.0/24", "10.71.0.0/24"}
    with NetlinkBackend(ns, state_dir=tmp_path, driver="pyroute2") as backend:
        backend.apply(plan(backend.observe(), State()))
    assert owned_in_kernel(ns) == {("10.70.0.0/24", "10.0.0.9", "d0", 254, 0)}


def test_pyroute2_driver_never_touches_the_root_namespace(ns: str, tmp_path: Path) -> None:
    """pyroute2 sockets are per thread: using the backend from other threads than the one
    that built it must still act on the lab namespace only."""
    root_before = root_routes()
    routes = [Route("10.90.0.0/24", gateway="10.0.0.2", device="d0"),
              Route("0.0.0.0/0", gateway="10.9.0.2", device="e0", table=100),
              Route("fd90::/64", gateway="fd00::2", device="d0")]
    wanted = State(owned=routes)
    with NetlinkBackend(ns, state_dir=tmp_path, driver="pyroute2") as backend, \
            ThreadPoolExecutor(max_workers=1) as pool:
        def converge(desired: State) -> int:
            assert threading.current_thread() is not threading.main_thread()
            return len(backend.apply(plan(backend.observe(), desired)).applied)

        assert pool.submit(converge, wanted).result() == 3
        assert owned_in_kernel(ns) == {as_kernel(r) for r in routes}
        assert root_routes() == root_before
        assert backend.observe().owned == wanted.owned  # and from the main thread
        assert pool.submit(converge, State()).result() == 3
    assert owned_in_kernel(ns) == set()
    assert root_routes() == root_before


def _fake_proc_sys(root: Path, values: dict[str, str]) -> Path:
    for name, value in values.items():
        path = root / name.replace(".", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    return root


def test_proc_sys_root_is_honoured(ns: str, tmp_path: Path) -> None:
    # A tree standing in for the host's /proc/sys mounted at /host/proc/sys in a pod.
    fake = _fake_proc_sys(tmp_path / "host" / "proc" / "sys", {
        "net.ipv4.ip_forward": "0",
        "net.ipv6.conf.all.forwarding": "1",
        "net.ipv4.conf.all.rp_filter": "2",
        "net.ipv4.conf.default.rp_filter": "2",
        "net.ipv4.conf.d0.rp_filter": "2",
    })
    real = {path: sysctl_in(ns, path) for path in ("net/ipv4/ip_forward",
                                                    "net/ipv4/conf/all/rp_filter",
                                                    "net/ipv4/conf/d0/rp_filter")}
    assert real["net/ipv4/conf/all/rp_filter"] != "2"  # so that reading the fake shows
    with NetlinkBackend(ns, state_dir=tmp_path / "state", proc_sys=str(fake)) as backend:
        assert backend.proc_sys == fake
        observed = backend.observe()
        assert Sysctl("net.ipv4.conf.all.rp_filter", 2) in observed.foreign
        assert Sysctl("net.ipv6.conf.all.forwarding", 1) in observed.foreign
        wanted = State(owned=[Sysctl("net.ipv4.ip_forward", 1),
                              Sysctl("net.ipv4.conf.d0.rp_filter", 1)])
        backend.apply(plan(observed, wanted))
        assert (fake / "net/ipv4/ip_forward").read_text() == "1"
        assert (fake / "net/ipv4/conf/d0/rp_filter").read_text() == "1"
        observed = backend.observe()
        assert observed.owned == wanted.owned
        assert {s.name: s.previous for s in observed.owned if isinstance(s, Sysctl)} == {
            "net.ipv4.ip_forward": "0", "net.ipv4.conf.d0.rp_filter": "2"}
        with pytest.raises(ApplyError, match=str(fake / "net/ipv4/conf/e0/rp_filter")):
            backend.apply(Plan(changes=[Change.add(Sysctl("net.ipv4.conf.e0.rp_filter", 1))]))
        backend.apply(plan(backend.observe(), State()))
        assert (fake / "net/ipv4/ip_forward").read_text() == "0"
        assert (fake / "net/ipv4/conf/d0/rp_filter").read_text() == "2"
    assert {path: sysctl_in(ns, path) for path in real} == real  # the kernel's: untouched


def test_default_proc_sys_and_option_errors(ns: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        assert backend.proc_sys == Path("/proc/sys")
        assert backend.driver == "socket"
        forwarding = Sysctl("net.ipv4.ip_forward", sysctl_in(ns, "net/ipv4/ip_forward"))
        assert forwarding in backend.observe().foreign
    with pytest.raises(BackendError, match="not a directory"):
        NetlinkBackend(ns, state_dir=tmp_path, proc_sys=tmp_path / "nosuch")
    with pytest.raises(BackendError, match="driver must be"):
        NetlinkBackend(ns, state_dir=tmp_path, driver="libnl")  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, "k3snet.backends.netlink.pyroute2_driver", None)
    with pytest.raises(BackendError, match=r"pip install 'k3snet\[netlink\]'"):
        NetlinkBackend(ns, state_dir=tmp_path, driver="pyroute2")


@pytest.mark.parametrize("protocol", [9, 12, 16, 186])  # ra (the kernel's), bird, dhcp, bgp
def test_a_route_protocol_another_program_marks_its_routes_with_is_refused(
        ns: str, tmp_path: Path, protocol: int) -> None:
    # Ownership is the protocol: with `backends: {netlink: {protocol: 16}}` every DHCP
    # route was k3snet's, and destroy removed the node's default route.
    _ip(ns, "route", "add", "10.13.0.0/24", "via", "10.0.0.254", "proto", str(protocol))
    before = kernel_routes(ns)
    with (pytest.raises(BackendError, match=f"route protocol {protocol} is "),
          NetlinkBackend(ns, state_dir=tmp_path, protocol=protocol) as backend):
        backend.apply(plan(backend.observe(), State()))  # what destroy does
    assert kernel_routes(ns) == before


def test_pyroute2_driver_refuses_other_threads(ns: str) -> None:
    """The guard behind the test above: a job run by any thread but the one that created
    the IPRoute is refused (pyroute2 would open a socket in that thread's namespace)."""
    from k3snet.backends.netlink.pyroute2_driver import Pyroute2Driver  # noqa: PLC0415

    with NetnsRunner(ns) as runner, NetnsRunner(ns) as other:
        made = Pyroute2Driver(runner, lambda: None)
        assert {link.name for link in made.links().values()} >= {"lo", "d0", "e0"}
        made._runner = other  # simulate a use from a second thread
        with pytest.raises(BackendError, match="outside the thread"):
            made.links()
        made._runner = runner
        made.close()
        made.close()  # idempotent


def test_a_replace_never_recreates_a_vanished_route(ns: str, driver: Driver) -> None:
    """Each driver sends a replace without NLM_F_CREATE: the kernel refuses it (ENOENT)
    when the route it replaces vanished, rather than creating it again."""
    from k3snet.backends.netlink.pyroute2_driver import Pyroute2Driver  # noqa: PLC0415
    from k3snet.backends.netlink.socket_driver import open_socket_driver  # noqa: PLC0415

    gone = Route("10.13.0.0/24", gateway="10.0.0.2", device="d0")
    moved = Route("10.13.0.0/24", gateway="10.9.0.2", device="e0")
    _ip(ns, "route", "add", "10.13.0.0/24", "via", "10.0.0.2", "dev", "d0", "proto",
        str(K3SNET_ROUTE_PROTOCOL))
    _ip(ns, "route", "del", "10.13.0.0/24", "proto", str(K3SNET_ROUTE_PROTOCOL))
    with NetnsRunner(ns) as runner:
        made = (open_socket_driver(runner, lambda: None) if driver == "socket"
                else Pyroute2Driver(runner, lambda: None))
        try:
            indexes = {link.name: link.index for link in made.links().values()}
            failures = made.send([Change.replace(gone, moved)], indexes)
        finally:
            made.close()
    assert list(failures) == [0]
    assert failures[0].errno == errno.ENOENT
    assert owned_in_kernel(ns) == set()


_TRY_APPLY = """
import sys
from k3snet.backends.netlink import NetlinkBackend
from k3snet.errors import K3snetError
from k3snet.model import Route, State
from k3snet.planner import plan
try:
    with NetlinkBackend(sys.argv[1], state_dir=sys.argv[2]) as backend:
        backend.apply(plan(backend.observe(), State(owned=[Route("10.14.0.0/24", device="d0")])))
except K3snetError as exc:
    sys.exit(f"{type(exc).__name__}: {exc}")
"""


def _apply_without(capability: str, ns: str, tmp_path: Path) -> str:
    """Run an apply in a process whose capabilities lack ``capability``; its error."""
    done = subprocess.run(["setpriv", f"--inh-caps=-{capability}",
                           f"--bounding-set=-{capability}", sys.executable, "-c", _TRY_APPLY,
                           ns, str(tmp_path)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1, done.stderr
    return done.stderr


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_missing_capabilities_are_named(ns: str, tmp_path: Path) -> None:
    refused = _apply_without("net_admin", ns, tmp_path)
    assert refused.startswith("ApplyError: ")
    assert "Operation not permitted" in refused
    assert "CAP_NET_ADMIN" in refused
    entered = _apply_without("sys_admin", ns, tmp_path)
    assert entered.startswith("BackendError: cannot enter network namespace")
    assert "CAP_SYS_ADMIN" in entered
    assert owned_in_kernel(ns) == set()


def test_an_interruption_mid_apply_takes_back_the_routes_and_sysctls_made(
        ns: str, tmp_path: Path, driver: Driver) -> None:
    """Ctrl-C (KeyboardInterrupt) as the routes go out, after two sysctls were written:
    the sysctls get their values back and the state file owns nothing, then the
    interruption goes on. It used to leave the sysctls changed: only an error the
    backend raised itself ran the compensation."""
    with NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        observed = backend.observe()
        before = kernel_routes(ns)
        bad = plan(observed, State(owned=[
            Sysctl("net.ipv4.conf.all.rp_filter", 2),
            Sysctl("net.ipv4.conf.d0.rp_filter", 1),
            Route("10.7.0.0/24", device="d0"),
        ]))
        assert [c.kind for c in bad.changes] == ["sysctl", "sysctl", "route"], bad.render()
        interruption = KeyboardInterrupt()

        def interrupted(*_args: object, **_kwargs: object) -> dict[int, codec.NetlinkError]:
            raise interruption

        backend._driver.send = interrupted  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt) as caught:
            backend.apply(bad)
        assert caught.value is interruption
        assert sysctl_in(ns, "net/ipv4/conf/all/rp_filter") == "0"
        assert sysctl_in(ns, "net/ipv4/conf/d0/rp_filter") == "0"
        assert kernel_routes(ns) == before
        assert not backend.observe().owned


def test_an_interruption_right_after_a_sysctl_write_gives_the_value_back(
        ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C between the write of a sysctl and the record of its undo: the value is
    written back and the state file owns nothing (no value left that k3snet no longer
    knows it wrote, no original value lost)."""
    import k3snet.backends.netlink.backend as module  # noqa: PLC0415

    written = write_sysctl

    def write_then_interrupt(root: Path, name: str, value: str) -> None:
        written(root, name, value)
        monkeypatch.setattr(module, "write_sysctl", written)  # the undo writes normally
        raise KeyboardInterrupt

    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        bad = plan(backend.observe(), State(owned=[Sysctl("net.ipv4.conf.all.rp_filter", 2)]))
        monkeypatch.setattr(module, "write_sysctl", write_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            backend.apply(bad)
        assert sysctl_in(ns, "net/ipv4/conf/all/rp_filter") == "0"
        assert not backend.observe().owned


def test_a_route_without_device_converges_to_the_device_the_kernel_chose(
        ns: str, backend: NetlinkBackend) -> None:
    # The kernel picks the device from the gateway and reports it: the route read back
    # names d0 / e0. Once in place, planning again must not replace it (it did, forever).
    wanted = (Route("10.6.0.0/24", gateway="10.0.0.2"), Route("fd06::/64", gateway="fd09::2"))
    desired = State(owned=wanted)
    first = plan(backend.observe(), desired)
    assert [c.action for c in first] == ["add", "add"]
    backend.apply(first)
    assert owned_in_kernel(ns) == {("10.6.0.0/24", "10.0.0.2", "d0", 254, 0),
                                   ("fd06::/64", "fd09::2", "e0", 254, 1024)}
    again = plan(backend.observe(), desired)
    assert again.empty, again.render()
    assert {wanted for wanted, _ in again.held} == set(wanted)
    assert again.target(desired) == backend.observe().owned
    # A device named in the spec is still enforced: the route moves to it.
    moved = Route("10.6.0.0/24", gateway="10.9.0.2", device="e0")
    change = plan(backend.observe(), State(owned=[moved, wanted[1]]))
    assert [c.action for c in change] == ["replace"]
    backend.apply(change)
    assert ("10.6.0.0/24", "10.9.0.2", "e0", 254, 0) in owned_in_kernel(ns)


def test_a_route_via_a_gateway_only_k3snets_device_route_reaches_is_added_and_undone(
        backend: NetlinkBackend, ns: str) -> None:
    # 192.168.9.1 is on no address's network: only k3snet's own device route makes it
    # a gateway, so that route must be added first and deleted last, and an undo (in
    # reverse) must put it back before the route relying on it.
    link = Route("192.168.9.0/24", device="d0", table=200)
    via = [Route("10.77.0.0/16", gateway="192.168.9.1", table=200),
           Route("10.78.0.0/16", gateway="192.168.9.1", device="d0", table=200)]
    empty = backend.observe()
    backend.apply(plan(empty, State(owned=[link, *via])))
    listed = json.loads(_ip(ns, "-j", "route", "show", "table", "200"))
    assert {(r["dst"], r.get("gateway"), r["dev"]) for r in listed} == {
        ("192.168.9.0/24", None, "d0"), ("10.77.0.0/16", "192.168.9.1", "d0"),
        ("10.78.0.0/16", "192.168.9.1", "d0")}
    full = backend.observe()
    teardown = plan(full, empty)
    backend.faults.fail_at(len(teardown.changes) - 1)
    with pytest.raises(ApplyError) as caught:
        backend.apply(teardown)
    assert not isinstance(caught.value, RollbackError), caught.value
    assert backend.observe() == full
    backend.apply(teardown)
    assert json.loads(_ip(ns, "-j", "route", "show", "table", "200")) == []


@pytest.mark.parametrize("family", [4, 6])
def test_a_gateway_moved_behind_a_new_device_route_is_replaced_and_undone(
        backend: NetlinkBackend, ns: str, family: int) -> None:
    # The route via a gateway moves to a gateway only a new device route of k3snet's
    # reaches, and the device route reaching the old one goes: the kernel takes the
    # replace only once the new device route is there, and an undo (in reverse) puts
    # the old gateway back only while the old device route is still there.
    if family == 4:
        old_link, new_link = "192.168.9.0/24", "192.168.8.0/24"
        dst, old_gw, new_gw = "10.77.0.0/16", "192.168.9.1", "192.168.8.1"
    else:
        old_link, new_link = "fd19::/64", "fd18::/64"
        dst, old_gw, new_gw = "fd77::/48", "fd19::1", "fd18::1"
    before = State(owned=[Route(old_link, device="d0", table=200),
                          Route(dst, gateway=old_gw, device="d0", table=200)])
    after = State(owned=[Route(new_link, device="d0", table=200),
                         Route(dst, gateway=new_gw, device="d0", table=200)])
    backend.apply(plan(backend.observe(), before))
    start = backend.observe()
    move = plan(start, after)
    backend.faults.fail_at(len(move.changes) - 1)
    with pytest.raises(ApplyError) as caught:
        backend.apply(move)
    assert not isinstance(caught.value, RollbackError), caught.value
    assert backend.observe() == start
    backend.apply(move)
    flag = "-4" if family == 4 else "-6"
    listed = json.loads(_ip(ns, flag, "-j", "route", "show", "table", "200"))
    assert {(r["dst"], r.get("gateway"), r["dev"]) for r in listed} == {
        (new_link, None, "d0"), (dst, new_gw, "d0")}
