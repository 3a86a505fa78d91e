"""The ``netlink`` backend: routes and ``net.*`` sysctls of one network namespace.

Routes
    k3snet's routes carry a route protocol number of their own
    (:data:`~k3snet.model.route.K3SNET_ROUTE_PROTOCOL`, 211): ``observe`` reports
    those as owned and every other unicast route it can model (``kernel``, ``boot``,
    ``static``, ``bird``, ``dhcp``, flannel's ...) as foreign. Route types other
    than unicast, the ``local`` table, cached clones, multipath, nexthop-object,
    source-specific and TOS routes cannot be modelled and are skipped.

    Writes are plain rtnetlink requests: an add is ``RTM_NEWROUTE`` with
    ``NLM_F_CREATE | NLM_F_EXCL`` (the kernel refuses to overwrite anything), a
    replace is one ``RTM_NEWROUTE`` with ``NLM_F_REPLACE`` (without ``NLM_F_CREATE``:
    it fails if the route vanished), a delete is ``RTM_DELROUTE`` naming the
    protocol, table, metric, gateway and device, so the kernel never matches a
    foreign route. Many requests go out in one ``sendmsg`` (only the last asks for
    an acknowledgement; the kernel answers failures anyway), which is what makes
    10 000 routes cost less than ``ip -batch``.

Drivers
    Routes, links and addresses are read and written through a
    :class:`~k3snet.backends.netlink.driver.RouteDriver`: ``driver="socket"`` (the
    default, :mod:`~k3snet.backends.netlink.socket_driver`) speaks rtnetlink
    through raw sockets created inside the namespace by a
    :class:`~k3snet.backends.netns.NetnsRunner` worker thread, batched as above,
    and listens to notifications so that its route view stays warm
    (:mod:`~k3snet.backends.netlink.view`); ``driver="pyroute2"``
    (:mod:`~k3snet.backends.netlink.pyroute2_driver`) makes the same requests
    through :class:`pyroute2.IPRoute`, with the same semantics, inside the worker
    thread. The main thread never changes namespace. Figures: docs/performance.md.

Sysctls
    They are files under ``proc_sys`` (default ``/proc/sys``; in a pod whose own
    ``/proc/sys`` is read-only, the host's mounted elsewhere, e.g.
    ``/host/proc/sys``). The kernel cannot tell who set a sysctl. Owned sysctls
    and the values they had before k3snet took them over are kept in a small
    JSON file per namespace
    (default ``/run/k3snet/<netns or 'host'>/sysctl.json``; ``/run`` is a tmpfs,
    cleared at boot just like the kernel's values). Removing an owned sysctl
    writes its previous value back. ``observe`` reports owned sysctls with the
    kernel's *current* value (so a value changed behind k3snet's back is repaired
    by the next plan) and, as foreign, the current value of
    :data:`WATCHED_SYSCTLS`, of ``watch_sysctls`` and of every sysctl k3snet
    owned once and gave back.

All or nothing
    Routes have no kernel transaction. When a change fails, the changes already
    done are undone in reverse order with their inverse changes, and
    :class:`~k3snet.errors.ApplyError` names the failed change and lists what was
    rolled back; if undoing fails too, :class:`~k3snet.errors.RollbackError`.

A backend instance is not thread-safe; use one per thread.

>>> backend = NetlinkBackend("k3snet-demo")  # doctest: +SKIP
>>> backend.apply(plan(backend.observe(), desired))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, NoReturn

import attrs

from k3snet.backends.base import ApplyResult, ensure_capable
from k3snet.backends.kit import FaultHook
from k3snet.backends.netlink.codec import Link, NetlinkError
from k3snet.backends.netlink.driver import DriverFactory, RouteDriver
from k3snet.backends.netlink.socket_driver import open_socket_driver
from k3snet.backends.netlink.sysctls import (
    SysctlState,
    SysctlStore,
    namespace_identity,
    normal,
    read_sysctls,
    write_sysctl,
)
from k3snet.backends.netlink.view import RouteCache
from k3snet.backends.netns import NetnsRunner
from k3snet.errors import (
    ApplyError,
    BackendError,
    K3snetError,
    ModelError,
    PlanError,
    RollbackError,
)
from k3snet.model import NetObject
from k3snet.model.cidr import Address, Network
from k3snet.model.route import K3SNET_ROUTE_PROTOCOL, Route
from k3snet.model.state import State
from k3snet.model.sysctl import Sysctl
from k3snet.planner import Change, Plan

__all__ = ["DEFAULT_STATE_ROOT", "WATCHED_SYSCTLS", "NetlinkBackend"]

DEFAULT_STATE_ROOT: Final = Path("/run/k3snet")
"""Where sysctl state files live by default: ``DEFAULT_STATE_ROOT/<netns or 'host'>/``."""

WATCHED_SYSCTLS: Final = (
    "net.ipv4.ip_forward",
    "net.ipv6.conf.all.forwarding",
    "net.ipv4.conf.all.rp_filter",
    "net.ipv4.conf.default.rp_filter",
)
"""Sysctls always reported (as foreign when k3snet does not own them): the ones pod
egress depends on."""

# The backend hands route changes to its driver in batches of at most this many
# (the socket driver's socket buffers are sized so that every failure of one fits).
_BATCH_MESSAGES = 1024
_MIN_PROTOCOL = 5  # 0..4 are unspec, redirect, kernel, boot and static: never ours


@attrs.define
class _Step:
    """One change being applied, with what undoing it needs."""

    change: Change
    undo: Callable[[], None] | None = None  # sysctls; routes undo through their inverse


def _abbreviate(changes: Sequence[Change], limit: int = 10) -> str:
    lines = [f"    {c}" for c in changes[:limit]]
    if len(changes) > limit:
        lines.append(f"    ... and {len(changes) - limit} more")
    return "\n".join(lines)


class NetlinkBackend:
    """Routes and ``net.*`` sysctls of one network namespace, through rtnetlink and /proc/sys.

    ``netns``: a namespace name as ``ip netns`` knows it (``None``: the caller's own
    namespace). ``state_dir``: the directory of the sysctl state file (default
    ``/run/k3snet/<netns or 'host'>``). ``protocol``: the route protocol that marks
    k3snet's routes. ``tables``: the routing tables observed and managed
    (``None``: all but ``local``); a plan touching another table is refused.
    ``watch_sysctls``: more sysctls to report as foreign besides
    :data:`WATCHED_SYSCTLS`. ``faults`` (:class:`~k3snet.backends.kit.FaultHook`):
    ``faults.fail_at(N)`` makes the next apply fail at change N, for tests, after
    the N changes before it were applied (and are then rolled back).

    ``driver``: how routes are read and written. ``"socket"`` (the default): raw
    rtnetlink sockets, batched requests and a route view kept warm by
    notifications. ``"pyroute2"``: :class:`pyroute2.IPRoute`, one request per
    change and a dump on every call (no kept view), much slower (figures in
    docs/performance.md); it is created and used only inside the namespace's
    worker thread. Both keep the same semantics (ownership by protocol,
    create-exclusive adds, one-request replaces, deletes naming protocol, table,
    metric, gateway and device, rollback). Sysctls do not depend on the driver.
    A callable is used as a :data:`~k3snet.backends.netlink.driver.DriverFactory`
    (``factory(runner, count)`` returning a
    :class:`~k3snet.backends.netlink.driver.RouteDriver`): the I/O seam, for tests.

    ``proc_sys``: the directory sysctls are read and written under (default
    ``/proc/sys``), e.g. ``/host/proc/sys`` in a pod whose own ``/proc/sys`` is
    read-only and that mounts the host's ``/proc/sys/net`` there. Its ``net``
    entries are resolved by the kernel against the network namespace of the
    thread that opens them (the namespace's worker thread), like ``/proc/sys``.

    ``apply`` returns :class:`~k3snet.backends.base.ApplyResult` whose
    ``operations`` counts round trips: netlink batches (socket driver) or
    requests (pyroute2 driver) and dumps, and sysctl reads and writes.
    """

    name = "netlink"
    capabilities: frozenset[str] = frozenset({"route", "sysctl"})

    def __init__(
        self,
        netns: str | None = None,
        *,
        state_dir: str | Path | None = None,
        protocol: int = K3SNET_ROUTE_PROTOCOL,
        tables: Iterable[int] | None = None,
        watch_sysctls: Iterable[str] = (),
        driver: Literal["socket", "pyroute2"] | DriverFactory = "socket",
        proc_sys: str | Path = "/proc/sys",
    ) -> None:
        if not callable(driver) and driver not in ("socket", "pyroute2"):
            raise BackendError(f"driver must be 'socket' or 'pyroute2', got {driver!r}")
        self.proc_sys = Path(proc_sys)
        if not self.proc_sys.is_dir():
            raise BackendError(f"proc_sys {str(proc_sys)!r} is not a directory")
        if isinstance(protocol, bool) or not isinstance(protocol, int) or not (
                _MIN_PROTOCOL <= protocol <= 255):
            raise BackendError(f"route protocol must be {_MIN_PROTOCOL}..255 (0..4 belong to "
                               f"the kernel and the administrator), got {protocol!r}")
        self.netns = netns
        self.protocol = protocol
        self.tables: frozenset[int] | None = None
        if tables is not None:
            try:
                self.tables = frozenset(Route("0.0.0.0/0", device="lo", table=t).table
                                        for t in tables)
            except ModelError as exc:
                raise BackendError(f"tables: {exc}") from exc
        self.faults = FaultHook()
        try:
            self._watch = frozenset(Sysctl(n, "0").name for n in (*WATCHED_SYSCTLS,
                                                                   *watch_sysctls))
        except ModelError as exc:
            raise BackendError(f"watch_sysctls: {exc}") from exc
        self._operations = 0
        self.driver: str = driver if isinstance(driver, str) else getattr(
            driver, "__name__", type(driver).__name__)
        self._runner = NetnsRunner(netns)  # raises a clear error if the namespace is missing
        where = f"network namespace {netns!r}" if netns else "the host network namespace"
        self._where = where
        try:
            identity = namespace_identity(netns)
            self._driver = self._open_driver(driver)
            self._routes = RouteCache(self._driver, protocol, self.tables, where)
        except OSError as exc:
            self._runner.close()
            raise BackendError(f"cannot open rtnetlink in {where}: {exc}") from exc
        except BaseException:
            self._runner.close()
            raise
        directory = (Path(state_dir) if state_dir is not None
                     else DEFAULT_STATE_ROOT / (netns or "host"))
        self._store = SysctlStore(directory, netns, identity)

    def _open_driver(self, driver: str | DriverFactory) -> RouteDriver:
        if callable(driver):
            return driver(self._runner, self._count)
        if driver == "pyroute2":
            # Imported here: pyroute2 is an optional dependency (the netlink extra).
            try:
                from k3snet.backends.netlink.pyroute2_driver import (  # noqa: PLC0415
                    Pyroute2Driver,
                )
            except ImportError as exc:
                raise BackendError("driver='pyroute2' needs pyroute2 "
                                   "(pip install 'k3snet[netlink]')") from exc
            return Pyroute2Driver(self._runner, self._count)
        return open_socket_driver(self._runner, self._count)

    def __repr__(self) -> str:
        return (f"NetlinkBackend({self.netns!r}, protocol={self.protocol}, "
                f"driver={self.driver!r})")

    # -- lifecycle

    def close(self) -> None:
        """Close the sockets and stop the namespace worker thread (idempotent)."""
        try:
            self._driver.close()
        finally:
            self._runner.close()

    def __enter__(self) -> NetlinkBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- observe

    def observe(self) -> State:
        """Routes and sysctls now: k3snet's own as ``owned``, the modellable rest as ``foreign``."""
        self._routes.begin()
        try:
            view = self._routes.view()
            owned_sysctls, foreign_sysctls = self._observe_sysctls()
        except OSError as exc:
            raise BackendError(f"cannot observe {self._where}: {exc}") from exc
        return State(owned=[*view.owned.values(), *owned_sysctls],
                     foreign=[*view.foreign, *foreign_sysctls])

    def _count(self) -> None:
        self._operations += 1

    def _observe_sysctls(self) -> tuple[list[Sysctl], list[Sysctl]]:
        data = self._store.load()
        others = sorted((self._watch | data.released) - set(data.owned))
        root = self.proc_sys
        values = self._runner.call(lambda: read_sysctls(root, [*data.owned, *others]))
        owned: list[Sysctl] = []
        for name, (_value, previous) in sorted(data.owned.items()):
            current = normal(name, values.get(name))
            if current is not None:  # gone with its interface: nothing left to own
                owned.append(Sysctl(name, current, previous=previous))
        foreign = [Sysctl(name, value) for name in others
                   if (value := normal(name, values.get(name))) is not None]
        return owned, foreign

    # -- check

    def check(self, plan: Plan) -> tuple[str, ...]:
        """Dry run: what applying ``plan`` would hit. Nothing is changed.

        Routes: the table is managed and the protocol ours; a delete or replace
        names a route k3snet owns; an add's slot (table, destination, metric) is
        free; the device exists and is up; the gateway is on-link (inside a prefix
        of the device's addresses, or of a link-scope route on it, or link-local
        with a device) and, for IPv6, not a local address. Sysctls: the parameter
        exists; a delete or replace names one k3snet owns, with the kernel's
        current value.
        """
        problems: list[str] = []
        try:
            ensure_capable(self, plan)
        except PlanError as exc:
            problems.append(str(exc))
        self._routes.begin()
        try:
            problems += self._check(plan)
        except (OSError, K3snetError) as exc:
            problems.append(f"cannot inspect {self._where}: {exc}")
        return tuple(problems)

    def _check(self, plan: Plan) -> list[str]:
        problems: list[str] = []
        route_changes = [c for c in plan.changes if c.kind == "route"]
        sysctl_changes = [c for c in plan.changes if c.kind == "sysctl"]
        if route_changes:
            problems += self._check_routes(route_changes)
        if sysctl_changes:
            problems += self._check_sysctls(sysctl_changes)
        return problems

    def _check_routes(self, changes: Sequence[Change]) -> list[str]:
        problems: list[str] = []
        view = self._routes.view()
        by_index = self._routes.links()
        links = {link.name: link for link in by_index.values()}
        addresses = self._driver.addresses()
        owned = dict(view.owned)
        taken = {r.key: r for r in view.foreign}
        local = {iface.ip for ifaces in addresses.values() for iface in ifaces}
        on_link: dict[str, list[Network]] = {}
        for index, ifaces in addresses.items():
            if index in by_index:
                on_link.setdefault(by_index[index].name, []).extend(i.network for i in ifaces)
        for route in (*view.owned.values(), *view.foreign):
            if route.gateway is None and route.device is not None and route.scope != "host":
                on_link.setdefault(route.device, []).append(route.destination)
        for change in changes:
            problems += self._refusal(change, owned, taken)
            after = change.after
            if change.action == "add" and isinstance(after, Route):
                clash = owned.get(after.key) or taken.get(after.key)
                if clash is not None:
                    problems.append(f"{change}: the slot (table, destination, metric) is "
                                    f"taken by {clash}")
            if isinstance(after, Route):
                problems += _route_problems(change, after, links, local, on_link)
                if after.gateway is None and after.device is not None:
                    on_link.setdefault(after.device, []).append(after.destination)
            _simulate(owned, change)
        return problems

    def _refusal(self, change: Change, owned: Mapping[tuple[Any, ...], NetObject],
                 foreign: Mapping[tuple[Any, ...], Route] | None = None) -> list[str]:
        """Why a route change is not this backend's to make (empty when it is)."""
        problems: list[str] = []
        shared = None if foreign is None or change.action != "replace" else foreign.get(
            change.subject.key)
        if shared is not None:
            # NLM_F_REPLACE picks a route by slot, whatever its protocol: it could hit this one.
            problems.append(f"{change}: the foreign {shared.describe()} shares the slot "
                            "(table, destination, metric); a replace could overwrite it")
        for route in (change.before, change.after):
            if not isinstance(route, Route):
                continue
            if route.protocol != self.protocol:
                problems.append(f"{change}: route protocol {route.protocol} is not k3snet's "
                                f"({self.protocol})")
            if not self._routes.in_scope(route.table):
                problems.append(f"{change}: table {route.table} is not managed by this backend "
                                f"(tables={sorted(self.tables or ())})")
        before = change.before
        if before is not None and owned.get(before.key) != before:
            found = owned.get(before.key)
            problems.append(f"{change}: k3snet does not own {before.describe()} "
                            f"(owned in that slot: {found.describe() if found else 'nothing'})")
        return problems

    def _check_sysctls(self, changes: Sequence[Change]) -> list[str]:
        refusals, missing = self._sysctl_problems(changes)
        return [*refusals, *(problem for _change, problem in missing)]

    def _sysctl_problems(
        self, changes: Sequence[Change]
    ) -> tuple[list[str], list[tuple[Change, str]]]:
        """Changes naming sysctls k3snet does not own, and changes of absent sysctls."""
        refusals: list[str] = []
        missing: list[tuple[Change, str]] = []
        data = self._store.load()
        names = sorted({str(c.subject.key[1]) for c in changes})
        root = self.proc_sys
        values = self._runner.call(lambda: read_sysctls(root, names))
        self._count()
        owned = {name: Sysctl(name, current) for name in data.owned
                 if (current := normal(name, values.get(name)))}
        for change in changes:
            subject = change.subject
            assert isinstance(subject, Sysctl)
            if values.get(subject.name) is None:
                missing.append((change, f"{change}: no such sysctl in {self._where} "
                                        f"({root / subject.path})"))
                continue
            if change.action == "add" and subject.name in data.owned:
                refusals.append(f"{change}: k3snet already owns {subject.name}")
            before = change.before
            if before is not None and owned.get(subject.name) != before:
                refusals.append(f"{change}: k3snet does not own {before.describe()}")
        return refusals, missing

    # -- apply

    def apply(self, plan: Plan) -> ApplyResult:
        """Apply every change of ``plan`` in order, or none (see the module docs)."""
        ensure_capable(self, plan)
        if not plan.changes:
            return ApplyResult(self.name, (), 0)
        start = self._operations
        fail_after = self.faults.take(plan)
        self._routes.begin()
        has_sysctls = any(c.kind == "sysctl" for c in plan.changes)
        lock = self._store.locked() if has_sysctls else contextlib.nullcontext()
        try:
            with lock:
                indexes = self._prepare(plan)
                self._execute(plan, indexes, fail_after)
        except OSError as exc:  # reading the kernel's view failed before anything was done
            raise ApplyError(f"netlink backend, {self._where}: {exc}") from exc
        return ApplyResult(self.name, plan.changes, self._operations - start)

    def _prepare(self, plan: Plan) -> dict[str, int]:
        """Refuse what is not ours (PlanError) and resolve devices; nothing is changed yet."""
        routes = [c for c in plan.changes if c.kind == "route"]
        problems: list[str] = []
        if any(c.before is not None for c in routes):
            view = self._routes.view()
            owned: dict[tuple[Any, ...], NetObject] = dict(view.owned)
            foreign = {r.key: r for r in view.foreign}
            for change in routes:
                problems += self._refusal(change, owned, foreign)
                _simulate(owned, change)
        else:
            for change in routes:
                problems += self._refusal(change, {})
        sysctls = [c for c in plan.changes if c.kind == "sysctl"]
        missing: list[tuple[Change, str]] = []
        if sysctls:
            refusals, missing = self._sysctl_problems(sysctls)
            problems += refusals
        if problems:
            raise PlanError("netlink backend refuses the plan, nothing was changed:\n  "
                            + "\n  ".join(problems))
        if missing:
            change, problem = missing[0]
            raise ApplyError(f"{problem}; nothing was changed", failed=change)
        indexes: dict[str, int] = {}
        if routes:
            by_name = {link.name: link.index for link in self._routes.links().values()}
            for change in routes:
                for route in (change.before, change.after):
                    device = getattr(route, "device", None)
                    if device is None:
                        continue
                    if device not in by_name:
                        raise ApplyError(f"device {device!r} does not exist in {self._where}; "
                                         "nothing was changed", failed=change)
                    indexes[device] = by_name[device]
        return indexes

    def _execute(self, plan: Plan, indexes: Mapping[str, int], fail_after: int | None) -> None:
        changes = plan.changes
        stop = len(changes) if fail_after is None else min(fail_after, len(changes))
        done: list[_Step] = []
        snapshot = self._store.load() if any(c.kind == "sysctl" for c in changes) else None
        position = 0
        while position < stop:
            if changes[position].kind == "route":
                end = position
                while (end < stop and changes[end].kind == "route"
                       and end - position < _BATCH_MESSAGES):
                    end += 1
                batch = changes[position:end]
                try:
                    failures = self._driver.send(batch, indexes)
                except OSError as exc:  # the answers were lost: what the kernel did is unknown
                    unknown = changes[position:end]
                    self._fail(changes[position], f"lost the kernel's answers: {exc}", done,
                               snapshot, exc, unknown=unknown)
                done += [_Step(changes[position + i])
                         for i in range(len(batch)) if i not in failures]
                if failures:
                    first = min(failures)
                    more = f" ({len(failures) - 1} more change(s) of that batch failed too)" \
                        if len(failures) > 1 else ""
                    self._fail(changes[position + first], f"{failures[first]}{more}", done,
                               snapshot, failures[first])
                position = end
            else:
                step = _Step(changes[position])
                try:
                    self._apply_sysctl(step)
                except (OSError, BackendError) as exc:
                    self._fail(step.change, str(exc), done, snapshot, exc, partial=step)
                done.append(step)
                position += 1
        if stop < len(changes):
            self._fail(changes[stop], f"injected failure (fault hook at change {fail_after})", done,
                       snapshot, None)

    def _apply_sysctl(self, step: _Step) -> None:
        change = step.change
        subject = change.subject
        assert isinstance(subject, Sysctl)
        name = subject.name
        state = self._store.load()
        root = self.proc_sys
        current = self._runner.call(lambda: read_sysctls(root, [name]))[name]
        self._count()
        if current is None:
            raise BackendError(f"no such sysctl in {self._where} ({root / subject.path})")
        restore: str = current

        def undo() -> None:
            self._runner.call(lambda: write_sysctl(root, name, restore))
            self._count()

        if change.action == "delete":
            recorded = state.owned[name][1]
            if recorded is not None:
                step.undo = undo
                self._runner.call(lambda: write_sysctl(root, name, recorded))
                self._count()
            del state.owned[name]
            state.released.add(name)
            self._store.save(state)
            return
        value = str(subject.value)
        previous = normal(name, current) if change.action == "add" else state.owned[name][1]
        # The record goes first: a crash after the write must not lose the previous value.
        state.owned[name] = (value, previous)
        state.released.discard(name)
        self._store.save(state)
        step.undo = undo
        self._runner.call(lambda: write_sysctl(root, name, value))
        self._count()
        stored = normal(name, self._runner.call(lambda: read_sysctls(root, [name]))[name])
        self._count()
        if stored != value:
            raise BackendError(f"the kernel stored {stored!r} for {name}, not {value!r}")

    def _fail(self, failed: Change, reason: str, done: Sequence[_Step],
              snapshot: SysctlState | None, cause: BaseException | None, *,
              partial: _Step | None = None, unknown: Sequence[Change] = ()) -> NoReturn:
        """Undo ``done`` in reverse, then raise ApplyError (or RollbackError).

        ``partial`` is a failed sysctl step that wrote before failing (its undo runs
        first); ``unknown`` are changes whose outcome the kernel did not report.
        """
        undone: list[Change] = []
        problems = [f"{c}: outcome unknown" for c in unknown]
        if partial is not None and partial.undo is not None:
            try:
                partial.undo()
            except (OSError, BackendError) as exc:
                problems.append(f"restoring {partial.change.subject}: {exc}")
        steps = list(reversed(done))
        position = 0
        while position < len(steps):
            step = steps[position]
            if step.change.kind == "route":
                end = position
                while (end < len(steps) and steps[end].change.kind == "route"
                       and end - position < _BATCH_MESSAGES):
                    end += 1
                self._undo_routes([s.change.inverse() for s in steps[position:end]],
                                  undone, problems)
                position = end
            else:
                inverse = step.change.inverse()
                try:
                    if step.undo is not None:
                        step.undo()
                    undone.append(inverse)
                except (OSError, BackendError) as exc:
                    problems.append(f"{inverse}: {exc}")
                position += 1
        if snapshot is not None:
            try:
                self._store.save(snapshot)
            except BackendError as exc:
                problems.append(str(exc))
        applied = [s.change for s in done]
        message = f"netlink backend, {self._where}: {failed} failed: {reason}"
        if undone:
            message += f"\n  rolled back:\n{_abbreviate(undone)}"
        if problems:
            message += "\n  ROLLBACK FAILED, the system may be half-changed:\n    " + \
                "\n    ".join(problems)
            raise RollbackError(message, failed=failed, done=applied,
                                rolled_back=undone) from cause
        raise ApplyError(message, failed=failed, done=applied, rolled_back=undone) from cause

    def _undo_routes(self, inverses: Sequence[Change], undone: list[Change],
                     problems: list[str]) -> None:
        """Send the inverse route changes as one batch; sort them into undone and problems."""
        try:
            indexes = {link.name: link.index for link in self._routes.links().values()}
            failures = self._driver.send(inverses, indexes)
        except (OSError, KeyError) as exc:
            failures = dict.fromkeys(range(len(inverses)), NetlinkError(errno.EIO, str(exc)))
        for i, inverse in enumerate(inverses):
            if i in failures:
                problems.append(f"{inverse}: {failures[i]}")
            else:
                undone.append(inverse)


def _simulate(owned: dict[tuple[Any, ...], Any], change: Change) -> None:
    """What ``change`` does to the owned objects by key (for checks of later changes)."""
    if change.after is not None:
        owned[change.after.key] = change.after
    elif change.before is not None and owned.get(change.before.key) == change.before:
        del owned[change.before.key]


def _route_problems(change: Change, route: Route, links: Mapping[str, Link],
                    local: set[Address], on_link: Mapping[str, Sequence[Network]]) -> list[str]:
    """What the kernel would refuse in the route ``change`` wants."""
    problems: list[str] = []
    if route.device is not None:
        link = links.get(route.device)
        if link is None:
            return [f"{change}: device {route.device!r} does not exist"]
        if not link.up:
            problems.append(f"{change}: device {route.device!r} is down")
    gateway = route.gateway
    if gateway is None:
        return problems
    if gateway.version == 6 and gateway in local:  # IPv4 accepts its own address
        problems.append(f"{change}: gateway {gateway} is a local address")
    elif gateway.version == 6 and gateway.is_link_local:
        if route.device is None:
            problems.append(f"{change}: link-local gateway {gateway} needs a device")
    else:
        devices = [route.device] if route.device is not None else list(on_link)
        if not any(gateway in net for dev in devices for net in on_link.get(dev, ())
                   if net.version == gateway.version):
            where = f"device {route.device!r}" if route.device else "any device"
            problems.append(f"{change}: gateway {gateway} is not on-link on {where} "
                            "(not inside a connected prefix)")
    return problems
