"""The netlink backend's logic without root: a fake kernel behind the driver seam.

:class:`FakeDriver` implements :class:`~k3snet.backends.netlink.driver.RouteDriver`
over a small model of the kernel's routing tables that reads the very request
bytes the codec encodes (``RTM_NEWROUTE`` flags included) and reports what it did
as the kernel does, with notifications carrying the requester's port id. Sysctls
live in a directory standing in for ``/proc/sys``.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import subprocess
import sys
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from k3snet.backends import netlink
from k3snet.backends.netlink import NetlinkBackend, codec
from k3snet.backends.netlink.driver import RouteDriver
from k3snet.backends.netns import NetnsRunner
from k3snet.errors import ApplyError, PlanError, RollbackError
from k3snet.model import Route, State, Sysctl
from k3snet.planner import Change, Plan, plan

LINKS = {1: codec.Link(1, "lo", True), 2: codec.Link(2, "d0", True),
         3: codec.Link(3, "e0", True)}
ADDRESSES: dict[int, list[codec.Interface]] = {
    2: [ipaddress.ip_interface("10.0.0.1/24"), ipaddress.ip_interface("fd00::1/64")],
    3: [ipaddress.ip_interface("10.9.0.1/24")],
}
PORTID = 4242


class FakeKernel:
    """Routing tables keyed by slot (family, table, destination, metric), as the kernel's FIB.

    ``refuse`` maps destinations to the errno the kernel answers for them.
    """

    def __init__(self) -> None:
        self.routes: dict[tuple[Any, ...], Route] = {}
        self.refuse: dict[str, int] = {}
        self.pending: list[bytes] = []
        self.names = {index: link.name for index, link in LINKS.items()}

    @staticmethod
    def slot(route: Route) -> tuple[Any, ...]:
        return (route.family, route.table, route.destination, route.metric)

    def handle(self, kind: int, flags: int, body: bytes, pid: int) -> int:
        """Apply one request as the kernel would; 0 or the errno it answers."""
        route = codec.decode_route(codec.message(kind, flags, 0, body), self.names)
        assert isinstance(route, Route), "the codec encoded a route the fake cannot read"
        if str(route.destination) in self.refuse:
            return self.refuse[str(route.destination)]
        slot = self.slot(route)
        found = self.routes.get(slot)
        if kind == codec.RTM_DELROUTE:
            if found is None or found != route:  # every field named must match
                return errno.ESRCH
            del self.routes[slot]
        elif found is not None:
            if flags & codec.NLM_F_EXCL:
                return errno.EEXIST
            if not flags & codec.NLM_F_REPLACE:
                return errno.EEXIST
            self.routes[slot] = route
        else:
            if not flags & codec.NLM_F_CREATE:
                return errno.ENOENT  # replace without create: nothing to replace
            self.routes[slot] = route
        self.notify(kind, route, pid)
        return 0

    def notify(self, kind: int, route: Route, pid: int) -> None:
        index = next((i for i, name in self.names.items() if name == route.device), None)
        self.pending.append(codec.message(kind, 0, 0, codec.route_request(route, index), pid))

    def behind_our_back(self, route: Route, *, notify: bool = True) -> None:
        """Another program adds (or, if present, deletes) ``route``."""
        slot = self.slot(route)
        if slot in self.routes:
            del self.routes[slot]
            kind = codec.RTM_DELROUTE
        else:
            self.routes[slot] = route
            kind = codec.RTM_NEWROUTE
        if notify:
            self.notify(kind, route, 0)


class FakeDriver:
    """A RouteDriver over a FakeKernel: one round trip per dump and per batch."""

    def __init__(self, kernel: FakeKernel, count: Callable[[], None], *,
                 follows_changes: bool = True) -> None:
        self.kernel = kernel
        self.count = count
        self.follows_changes = follows_changes
        self.portid = PORTID
        self.closed = False
        self.sent: list[tuple[int, int, bytes]] = []

    def links(self) -> dict[int, codec.Link]:
        self.count()
        return dict(LINKS)

    def addresses(self) -> dict[int, list[codec.Interface]]:
        self.count()
        return {index: list(found) for index, found in ADDRESSES.items()}

    def routes(self, tables: frozenset[int] | None, names: Mapping[int, str]) -> list[Route]:
        self.count()
        return [r for r in self.kernel.routes.values() if tables is None or r.table in tables]

    def send(self, changes: Sequence[Change],
             indexes: Mapping[str, int]) -> dict[int, codec.NetlinkError]:
        self.count()
        failures = {}
        for position, change in enumerate(changes):
            request = codec.route_message(change, indexes)
            self.sent.append(request)
            code = self.kernel.handle(*request, PORTID)
            if code:
                failures[position] = codec.NetlinkError(code)
        return failures

    def notifications(self) -> tuple[list[bytes], bool]:
        if not self.follows_changes:
            return [], False
        found, self.kernel.pending = self.kernel.pending, []
        return found, False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def kernel() -> FakeKernel:
    return FakeKernel()


@pytest.fixture
def proc_sys(tmp_path: Path) -> Path:
    root = tmp_path / "proc" / "sys"
    for name, value in {"net.ipv4.ip_forward": "0", "net.ipv6.conf.all.forwarding": "0",
                        "net.ipv4.conf.all.rp_filter": "2",
                        "net.ipv4.conf.default.rp_filter": "2"}.items():
        path = root / name.replace(".", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    return root


Made = tuple[NetlinkBackend, list[FakeDriver]]


@pytest.fixture
def make(kernel: FakeKernel, proc_sys: Path, tmp_path: Path) -> Iterator[Callable[..., Made]]:
    made: list[NetlinkBackend] = []

    def build(**options: Any) -> Made:
        drivers: list[FakeDriver] = []
        follows = options.pop("follows_changes", True)

        def factory(_runner: NetnsRunner, count: Callable[[], None]) -> RouteDriver:
            drivers.append(FakeDriver(kernel, count, follows_changes=follows))
            return drivers[-1]

        backend = NetlinkBackend(None, state_dir=tmp_path / "state", proc_sys=proc_sys,
                                 driver=factory, **options)
        made.append(backend)
        return backend, drivers

    yield build
    for backend in made:
        backend.close()


A = Route("10.1.0.0/24", gateway="10.0.0.2", device="d0")
B = Route("10.2.0.0/24", device="e0", table=100)
C = Route("fd01::/64", gateway="fd00::2", device="d0", metric=10)
STATIC = Route("192.168.50.0/24", gateway="10.0.0.254", device="d0", protocol=4)


def test_apply_observe_and_the_warm_view(kernel: FakeKernel, make: Callable[..., Made]) -> None:
    kernel.routes[kernel.slot(STATIC)] = STATIC
    backend, drivers = make()
    observed = backend.observe()
    assert STATIC in observed.foreign
    assert not observed.owned
    desired = State(owned=[A, B, C])
    result = backend.apply(plan(observed, desired))
    assert result.operations == 1  # one batch; the view was warm
    assert set(kernel.routes.values()) == {STATIC, A, B, C}
    assert backend.observe().owned == desired.owned  # from notifications, no dump
    assert backend.apply(plan(backend.observe(), State(owned=[A]))).operations == 1
    assert set(kernel.routes.values()) == {STATIC, A}
    assert drivers[0].sent[-1][0] == codec.RTM_DELROUTE
    backend.close()
    assert drivers[0].closed


def test_changes_by_others_drop_the_view(kernel: FakeKernel, make: Callable[..., Made]) -> None:
    backend, _drivers = make()
    backend.apply(plan(backend.observe(), State(owned=[A])))
    before = backend._operations
    backend.observe()
    assert backend._operations == before  # warm
    kernel.behind_our_back(STATIC)
    assert STATIC in backend.observe().foreign
    assert backend._operations == before + 1  # dumped again
    kernel.behind_our_back(A)  # someone deletes k3snet's route
    assert not backend.observe().owned


def test_a_replace_of_a_vanished_route_fails_and_rolls_back(
        kernel: FakeKernel, make: Callable[..., Made]) -> None:
    """The kernel dropped A without a notification (IPv4 does, when a link goes down):
    the view still shows it. A replace must not bring it back: it fails (ENOENT),
    and the add before it is undone."""
    backend, drivers = make()
    backend.apply(plan(backend.observe(), State(owned=[A])))
    kernel.behind_our_back(A, notify=False)
    moved = Route("10.1.0.0/24", gateway="10.0.0.3", device="d0")
    changes = [Change.add(B), Change.replace(A, moved)]
    with pytest.raises(ApplyError) as caught:
        backend.apply(Plan(changes=changes))
    assert not isinstance(caught.value, RollbackError)
    assert caught.value.failed == changes[1]
    assert "No such file or directory" in str(caught.value)
    assert list(caught.value.done) == [changes[0]]
    assert list(caught.value.rolled_back) == [Change.delete(B)]
    assert kernel.routes == {}  # neither the new route, nor the replaced one re-created
    assert drivers[0].sent[2][:2] == (codec.RTM_NEWROUTE, codec.NLM_F_REPLACE)


def test_a_refused_change_rolls_back_the_whole_batch(
        kernel: FakeKernel, make: Callable[..., Made]) -> None:
    backend, _drivers = make()
    backend.apply(plan(backend.observe(), State(owned=[A])))
    kernel.refuse["10.2.0.0/24"] = errno.ENETUNREACH
    moved = Route("10.1.0.0/24", gateway="10.0.0.3", device="d0")
    changes = [Change.replace(A, moved), Change.add(B), Change.add(C)]
    with pytest.raises(ApplyError) as caught:
        backend.apply(Plan(changes=changes))
    error = caught.value
    assert error.failed == changes[1]
    # The kernel handles the whole batch: the change after the failure was made too.
    assert set(error.done) == {changes[0], changes[2]}
    assert set(error.rolled_back) == {c.inverse() for c in error.done}
    assert set(kernel.routes.values()) == {A}


def test_a_failed_undo_is_a_rollback_error(kernel: FakeKernel,
                                           make: Callable[..., Made]) -> None:
    backend, _drivers = make()
    backend.faults.fail_at(1)
    original_handle = kernel.handle

    def no_deletes(kind: int, flags: int, body: bytes, pid: int) -> int:
        if kind == codec.RTM_DELROUTE:
            return errno.EPERM
        return original_handle(kind, flags, body, pid)

    kernel.handle = no_deletes  # type: ignore[method-assign]
    with pytest.raises(RollbackError) as caught:
        backend.apply(Plan(changes=[Change.add(A), Change.add(B)]))
    assert caught.value.failed == Change.add(B)
    assert list(caught.value.done) == [Change.add(A)]
    assert list(caught.value.rolled_back) == []
    assert "Operation not permitted" in str(caught.value)
    assert "half-changed" in str(caught.value)


def test_injected_failures_leave_routes_and_sysctls_as_they_were(
        kernel: FakeKernel, make: Callable[..., Made], proc_sys: Path) -> None:
    desired = State(owned=[A, Sysctl("net.ipv4.ip_forward", 1), B,
                           Sysctl("net.ipv4.conf.all.rp_filter", 1), C])
    backend, _drivers = make()
    full = plan(backend.observe(), desired)
    for at in range(len(full)):
        backend.faults.fail_at(at)
        with pytest.raises(ApplyError) as caught:
            backend.apply(full)
        assert caught.value.failed == full.changes[at]
        assert list(caught.value.done) == list(full.changes[:at])
        assert kernel.routes == {}
        assert (proc_sys / "net/ipv4/ip_forward").read_text() == "0\n"
        assert (proc_sys / "net/ipv4/conf/all/rp_filter").read_text() == "2\n"
        assert not backend.observe().owned
    backend.apply(full)
    assert backend.observe().owned == desired.owned


def test_plans_that_are_not_ours_are_refused(kernel: FakeKernel,
                                             make: Callable[..., Made]) -> None:
    kernel.routes[kernel.slot(STATIC)] = STATIC
    backend, drivers = make()
    backend.apply(plan(backend.observe(), State(owned=[A])))
    sent = len(drivers[0].sent)
    refused = {
        "not k3snet's (foreign)": Plan(changes=[Change.delete(STATIC)]),
        "not in the state": Plan(changes=[Change.delete(Route("10.9.9.0/24", device="d0"))]),
        "is not k3snet's (211)": Plan(changes=[Change.add(
            Route("10.3.0.0/24", device="d0", protocol=5))]),
        "shares the slot": Plan(changes=[Change.replace(
            Route("192.168.50.0/24", gateway="10.0.0.254", device="d0"),
            Route("192.168.50.0/24", device="e0"))]),
    }
    for needle, bad in refused.items():
        assert any(needle in problem for problem in backend.check(bad)), needle
        with pytest.raises(PlanError, match=re.escape(needle)):
            backend.apply(bad)
    assert len(drivers[0].sent) == sent  # nothing reached the kernel
    with NetlinkBackend(None, state_dir=backend._store.directory.parent, proc_sys=backend.proc_sys,
                        tables=[100],
                        driver=lambda _r, count: FakeDriver(kernel, count)) as narrow:
        with pytest.raises(PlanError, match="not managed"):
            narrow.apply(Plan(changes=[Change.add(Route("10.3.0.0/24", device="d0"))]))
        assert {r.table for r in narrow.observe().foreign if isinstance(r, Route)} <= {100}


def test_check_finds_what_the_kernel_would_refuse(kernel: FakeKernel,
                                                  make: Callable[..., Made]) -> None:
    # The prefix routes the kernel adds with the addresses: where it finds gateways.
    for index, interfaces in ADDRESSES.items():
        for interface in interfaces:
            connected = Route(interface.network, device=LINKS[index].name, protocol=2)
            kernel.routes[kernel.slot(connected)] = connected
    backend, _drivers = make()
    bad = Plan(changes=[
        Change.add(Route("10.8.1.0/24", device="nosuch0")),
        Change.add(Route("10.8.2.0/24", gateway="192.0.2.1", device="d0")),
        Change.add(Route("fd08::/64", gateway="fd00::1", device="d0")),
    ])
    problems = backend.check(bad)
    assert len(problems) == 3
    for needle in ("does not exist", "not on-link", "local address"):
        assert any(needle in problem for problem in problems), needle
    with pytest.raises(ApplyError, match="does not exist"):
        backend.apply(Plan(changes=[Change.add(Route("10.8.1.0/24", device="nosuch0"))]))
    assert backend.check(Plan(changes=[Change.add(A)])) == ()


def test_check_judges_each_gateway_against_the_routes_the_plan_left_before_it(
        make: Callable[..., Made]) -> None:
    # Thousands of routes share a gateway: its answer is kept, until a route holding
    # the gateway comes or goes.
    backend, _drivers = make()
    reach = Route("10.55.0.0/24", device="d0")
    backend.apply(Plan(changes=[Change.add(reach)]))
    first = Route("10.56.0.0/24", gateway="10.55.0.5", device="d0")
    second = Route("10.57.0.0/24", gateway="10.55.0.5", device="d0")
    third = Route("10.58.0.0/24", gateway="10.55.0.5", device="d0")
    problems = backend.check(Plan(changes=[
        Change.add(first), Change.delete(reach), Change.add(second),
        Change.add(Route("10.55.0.0/25", device="d0")), Change.add(third)]))
    assert len(problems) == 1
    assert problems[0].startswith(f"{Change.add(second)}: gateway 10.55.0.5 is not on-link")


def test_a_driver_without_notifications_dumps_every_call(
        kernel: FakeKernel, make: Callable[..., Made]) -> None:
    backend, _drivers = make(follows_changes=False)
    backend.apply(plan(backend.observe(), State(owned=[A])))
    before = backend._operations
    assert backend.observe().owned == {A}
    assert backend._operations == before + 2  # links and routes, dumped again
    kernel.behind_our_back(A, notify=False)
    assert not backend.observe().owned


def test_not_permitted_names_the_capability(kernel: FakeKernel,
                                            make: Callable[..., Made]) -> None:
    backend, _drivers = make()
    kernel.refuse[str(A.destination)] = errno.EPERM
    with pytest.raises(ApplyError, match="CAP_NET_ADMIN") as caught:
        backend.apply(Plan(changes=[Change.add(B), Change.add(A)]))
    assert caught.value.failed == Change.add(A)
    assert "Operation not permitted" in str(caught.value)
    assert kernel.routes == {}
    kernel.refuse[str(A.destination)] = errno.ENETUNREACH
    with pytest.raises(ApplyError) as unreachable:
        backend.apply(Plan(changes=[Change.add(A)]))
    assert "CAP_" not in str(unreachable.value)


def test_the_package_exports_the_backend_only() -> None:
    public = {name for name, value in vars(netlink).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    assert set(netlink.__all__) == public - {"annotations"}
    assert set(netlink.__all__) == {"NetlinkBackend", "WATCHED_SYSCTLS", "DEFAULT_STATE_ROOT"}
    code = ("import sys, k3snet.backends.netlink\n"
            "print('pyroute2' in {m.split('.')[0] for m in sys.modules})\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"  # pyroute2 stays optional


def test_a_route_changing_during_every_dump_neither_fails_observe_nor_stays_unseen(
        kernel: FakeKernel, make: Callable[..., Made]) -> None:
    # A node whose routes change a few times a second: every dump overlaps a change.
    # Each observe must still answer (what the dump read), the route token must move,
    # and the change the dump missed must not stay missed: the next observe dumps again.
    backend, drivers = make()
    driver = drivers[0]
    dump = driver.routes

    def churning(tables: frozenset[int] | None, names: Mapping[int, str]) -> list[Route]:
        found = dump(tables, names)
        kernel.behind_our_back(STATIC)  # after the dump passed its place
        return found

    driver.routes = churning  # type: ignore[method-assign]
    tokens = [backend.route_token()]
    seen = []
    for _ in range(4):
        seen.append(STATIC in backend.observe().foreign)
        tokens.append(backend.route_token())
    assert seen == [False, True, False, True]  # each reading is the dump before the change
    assert len(set(tokens)) == len(tokens)
