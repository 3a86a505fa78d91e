"""The ``netlink`` backend: routes and ``net.*`` sysctls of one network namespace.

Routes
    k3snet's routes carry a route protocol number of their own
    (:data:`~k3snet.model.route.K3SNET_ROUTE_PROTOCOL`, 211): ``observe`` reports
    those as owned and every other unicast route it can model (``kernel``, ``boot``,
    ``static``, ``bird``, ``dhcp``, flannel's ...) as foreign. A route it cannot
    model (another type than unicast, multipath, nexthop-object, encap, ``via``,
    through a device it cannot name) is a foreign
    :class:`~k3snet.model.RouteBlock` where it stands, so that a wanted route
    there is a conflict; the ``local`` table, cached clones, source-specific and
    TOS routes are left out. An IPv6 multipath route whose first nexthop is k3snet's
    (another program appended nexthops to its route,
    :class:`~k3snet.backends.netlink.codec.Siblings`) is k3snet's route, the other
    nexthops a foreign block in its slot.

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
    done are undone in reverse order with their inverse changes (the kit's
    :class:`~k3snet.backends.kit.Compensation`, one batch of inverses per batch
    of changes), and :class:`~k3snet.errors.ApplyError` names the failed change
    and what was rolled back; if undoing fails too,
    :class:`~k3snet.errors.RollbackError`. Plans are checked before anything is
    sent: the kit's :func:`~k3snet.backends.kit.fit_problems` on what the plan
    touches, plus what only this backend knows (route protocol, tables, a
    foreign route sharing a replace's slot, devices).

A backend instance is not thread-safe; use one per thread.

>>> backend = NetlinkBackend("k3snet-demo")  # doctest: +SKIP
>>> backend.apply(plan(backend.observe(), desired))  # doctest: +SKIP
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import os
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

from k3snet._kept import STATE_ROOT
from k3snet.backends.base import ApplyResult
from k3snet.backends.kit import (
    BackendBase,
    Compensation,
    OptionChecks,
    UndoFailure,
    committing,
    disruptive_problems,
    fit_problems,
    held_after_commit,
    option_flag,
    translate_errors,
)
from k3snet.backends.netlink.codec import (
    FR_ACT_BLACKHOLE,
    FR_ACT_PROHIBIT,
    FR_ACT_TO_TBL,
    FR_ACT_UNREACHABLE,
    UNNAMED_DEVICE_ROUTE,
    Link,
    LocalRoute,
    LookupRule,
    NetlinkError,
    Siblings,
    SourceRoute,
    ipv4_tables_merged,
)
from k3snet.backends.netlink.driver import DriverFactory, RouteDriver
from k3snet.backends.netlink.socket_driver import open_socket_driver
from k3snet.backends.netlink.sysctls import (
    ALIASES,
    SPREADING_INVERTED,
    LinkId,
    SysctlState,
    SysctlStore,
    announced,
    deletes_unannounced,
    interface_of,
    namespace_identity,
    normal,
    on_procfs,
    open_unannounced_switch,
    read_sysctls,
    restore_spread,
    spread_to,
    spread_values,
    unset_secret,
    write_sysctl,
)
from k3snet.backends.netlink.view import RouteCache, RouteView
from k3snet.backends.netns import (
    NetnsRunner,
    earlier_records,
    namespace_instance,
    netns_option,
    netns_where,
    record_netns,
    shown_command,
)
from k3snet.errors import (
    ApplyError,
    BackendError,
    K3snetError,
    ModelError,
    PlanError,
    RollbackError,
)
from k3snet.model import NetObject
from k3snet.model.cidr import Address, Network, network_text, parse_network
from k3snet.model.route import (
    K3SNET_ROUTE_PROTOCOL,
    MAIN_TABLE,
    Route,
    RouteBlock,
    protocol_name,
)
from k3snet.model.state import State
from k3snet.model.sysctl import Sysctl, owned_apart, shown_value, sysctl_name
from k3snet.planner import Change, Plan

__all__ = ["DEFAULT_STATE_ROOT", "WATCHED_SYSCTLS", "NetlinkBackend", "check_route_protocol"]

DEFAULT_STATE_ROOT: Final = STATE_ROOT
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
_RA_PROTOCOL = 9  # RTPROT_RA: routes the kernel learned from router advertisements
_DEFAULT_TABLE = 253  # RT_TABLE_DEFAULT: the IPv4 default rule's, after main
_SHOWN_INTERFACES = 4  # interfaces a forwarding warning names, the oldest
# Devices that receive what arrives on their ports or slaves (skb->dev becomes theirs).
_RECEIVING_MASTERS = frozenset({"bridge", "bond"})
_NO_INDEX = 1 << 32  # an interface the link dump did not hold (gone meanwhile): last
_LOCAL_TABLE = 255
# The rules a namespace starts with, for a driver that reads none (a test's own).
_DEFAULT_RULES = (
    LookupRule(4, 0, _LOCAL_TABLE, None, None, None),
    LookupRule(4, 32766, MAIN_TABLE, None, None, None),
    LookupRule(4, 32767, _DEFAULT_TABLE, None, None, None),
    LookupRule(6, 0, _LOCAL_TABLE, None, None, None),
    LookupRule(6, 32766, MAIN_TABLE, None, None, None),
)
# The statistics of IPv4's tries, of the reading thread's namespace (/proc/net is the
# process's: the namespace's worker thread reads it as its own).
_FIB_TRIESTAT = "/proc/thread-self/net/fib_triestat"
_TRIESTAT_READS = 3  # reads in a row showing IPv4's local and main apart: apart
# Rule actions ending a lookup with an error (the route add: "invalid gateway").
_REJECTING = {FR_ACT_BLACKHOLE: "blackhole", FR_ACT_UNREACHABLE: "unreachable",
              FR_ACT_PROHIBIT: "prohibit"}
# What rtnetlink writes and /proc/sys/net writes need in the namespace's user namespace.
_CAPABILITY = "CAP_NET_ADMIN"


def check_route_protocol(protocol: object) -> int:
    """``protocol`` if the backend can own the routes of that route protocol, else a
    :class:`~k3snet.errors.BackendError` saying why (``k3snet render`` checks the
    protocol it gives the boot files of routes here too)."""
    if isinstance(protocol, bool) or not isinstance(protocol, int) or not (
            _MIN_PROTOCOL <= protocol <= 255):
        raise BackendError(f"route protocol must be {_MIN_PROTOCOL}..255 (0..4 belong to "
                           f"the kernel and the administrator), got {protocol!r}")
    named = protocol_name(protocol)
    if protocol != K3SNET_ROUTE_PROTOCOL and isinstance(named, str):
        # Ownership is the protocol: every route of that program would be k3snet's,
        # replaced or removed (destroy took a node's DHCP default route).
        raise BackendError(
            f"route protocol {protocol} is {named}'s (iproute2's rt_protos): k3snet would "
            f"take every {named} route for its own and remove it; give a number no "
            f"program uses ({K3SNET_ROUTE_PROTOCOL}, k3snet's, by default)")
    return protocol


def _check_driver(driver: object) -> None:
    if not callable(driver) and driver not in ("socket", "pyroute2"):
        raise BackendError(f"driver must be 'socket' or 'pyroute2', got {driver!r}")


def _path_text(option: str, value: object) -> str | os.PathLike[str]:
    """``value`` if it is a path (text or a path object), else a
    :class:`~k3snet.errors.BackendError` naming ``option`` (``state_dir: 5`` was a
    ``TypeError`` from :class:`~pathlib.Path`)."""
    if isinstance(value, str | os.PathLike):
        return value
    raise BackendError(f"{option} must be a path (text), got {value!r}")


def _route_tables(tables: object) -> frozenset[int]:
    """The route tables of option ``tables`` (a list of 1..2**32-1 numbers), else a
    :class:`~k3snet.errors.BackendError` saying why."""
    if isinstance(tables, str | bytes | Mapping) or not isinstance(tables, Iterable):
        raise BackendError(f"tables must be a list of route table numbers, got {tables!r}")
    try:
        return frozenset(Route("0.0.0.0/0", device="lo", table=t).table for t in tables)
    except ModelError as exc:
        raise BackendError(f"tables: {exc}") from exc


def _sysctl_names(names: object) -> tuple[str, ...]:
    """The sysctls of option ``watch_sysctls`` (a list of names), else a
    :class:`~k3snet.errors.BackendError` saying why."""
    if isinstance(names, str | bytes | Mapping) or not isinstance(names, Iterable):
        raise BackendError(f"watch_sysctls must be a list of sysctl names, got {names!r}")
    try:
        return tuple(sysctl_name(n) for n in names)
    except ModelError as exc:
        raise BackendError(f"watch_sysctls: {exc}") from exc


class NetlinkBackend(BackendBase):
    """Routes and ``net.*`` sysctls of one network namespace, through rtnetlink and /proc/sys.

    ``netns``: a namespace name as ``ip netns`` knows it (``None``: the caller's own
    namespace). ``state_dir``: the root of the sysctl state files, one directory per
    namespace: ``state_dir/<netns or 'host'>/sysctl.json`` (default
    ``/run/k3snet``; one record per namespace whatever name reaches it:
    :func:`~k3snet.backends.netns.record_netns`). ``protocol``: the route protocol that marks
    k3snet's routes (5..255, none that iproute2's ``rt_protos`` names for another
    program: ``ra``, ``bird``, ``dhcp``, ``bgp`` ... would make its routes k3snet's).
    ``tables``: the routing tables observed and managed
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

    ``pod_cidrs``: the cluster's pod CIDRs (the spec's ``cluster.podCIDRs``), which the
    warnings judge IPv6 source-specific routes by (:meth:`_source_warnings`; ``None``:
    any source may be a pod's).

    ``allow_disruptive``: make the changes :meth:`disruptive` names (turning
    ``disable_ipv6`` on); ``check`` and ``apply`` refuse them otherwise.

    ``apply`` returns :class:`~k3snet.backends.base.ApplyResult` whose
    ``operations`` counts round trips: netlink batches (socket driver) or
    requests (pyroute2 driver) and dumps, and sysctl reads and writes.
    """

    name = "netlink"
    option_defaults: ClassVar[Mapping[str, str]] = {
        "netns": "the caller's own namespace",
        "state_dir": str(DEFAULT_STATE_ROOT),
        "tables": "every table but local",
        "pod_cidrs": "the spec's cluster.podCIDRs (none: any source may be a pod's)",
    }
    """What an option left out means (``k3snet explain backends.netlink``)."""
    capabilities: frozenset[str] = frozenset({"route", "sysctl"})

    option_checks: ClassVar[OptionChecks] = {
        "netns": netns_option, "driver": _check_driver, "protocol": check_route_protocol,
        "tables": lambda v: v is None or _route_tables(v), "watch_sysctls": _sysctl_names,
        "state_dir": lambda v: v is None or _path_text("state_dir", v),
        "proc_sys": lambda v: _path_text("proc_sys", v),
        "allow_disruptive": lambda v: option_flag("allow_disruptive", v),
        "pod_cidrs": lambda v: v is None or _pod_cidrs(v)}
    """The constructor's checks of option values (whether ``proc_sys`` is a directory is
    the node's to say, when the backend is built)."""

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
        allow_disruptive: bool = False,
        pod_cidrs: Iterable[str | Network] | None = None,
    ) -> None:
        _check_driver(driver)
        self.pod_cidrs = pod_cidrs if pod_cidrs is None else _pod_cidrs(pod_cidrs)
        self.allow_disruptive = option_flag("allow_disruptive", allow_disruptive)
        self.proc_sys = Path(_path_text("proc_sys", proc_sys))
        if not self.proc_sys.is_dir():
            raise BackendError(f"proc_sys {str(proc_sys)!r} is not a directory")
        self.protocol = check_route_protocol(protocol)
        self.netns = netns
        self.tables: frozenset[int] | None = None if tables is None else _route_tables(tables)
        if state_dir is not None:
            _path_text("state_dir", state_dir)
        super().__init__()
        self._watch = frozenset((*_sysctl_names(WATCHED_SYSCTLS), *_sysctl_names(watch_sysctls)))
        self._operations = 0
        self._observed: tuple[tuple[int, int], State] | None = None
        # expect()'s sysctls (name -> value): what the warnings judge forwarding by.
        self._wanted_sysctls: dict[str, str] | None = None
        self._wanted_routes: tuple[Route, ...] | None = None  # expect()'s: what the
        # warnings judge the policy rules by
        # The last warnings of routes a policy rule takes, with what they were read from.
        # (and, without rules of an administrator's, by the routes of table local read).
        # Last: fib_triestat's answer if the judgement asked it (() if not: unread).
        self._rule_warned: tuple[Hashable, tuple[str, ...], Hashable,
                                 tuple[bool | None, ...]] | None = None
        # The last warnings of IPv6 source-specific routes, with what they were read from.
        self._source_warned: tuple[Hashable, tuple[str, ...]] | None = None
        # The state file's records of an interface k3snet cannot tell, as the last
        # observe found them (SysctlState.doubts).
        self._link_doubts: tuple[str, ...] = ()
        # The forwarding switches as last read, with the switches' version then.
        self._switches_read: tuple[int, tuple[str | None, dict[str, str], dict[str, int],
                                              frozenset[str]]] | None = None
        # change_token(): the sysctls observe reports that the kernel does not announce,
        # as of (the netconf and link version, the state file's signature) then.
        self._unheard: tuple[tuple[int, object], list[str]] | None = None
        self.driver: str = driver if isinstance(driver, str) else getattr(
            driver, "__name__", type(driver).__name__)
        self._runner = NetnsRunner(netns)  # raises a clear error if the namespace is missing
        self._silent_fd: int | None = None  # see _deletes_unannounced
        # Not "the host's": under `ip netns exec NS` (no --netns) it is NS, as the
        # commands its messages show name it (shown_command).
        where = netns_where(netns, unnamed="this process's network namespace")
        self._where = where
        try:
            identity = namespace_identity(netns)
            # One record per namespace whatever name reaches it (ip netns exec NAME, a
            # name of the node's own namespace): record_netns.
            keyed = record_netns(netns)
            instance = namespace_instance(netns, self._runner, host=keyed is None)
            self._driver = self._open_driver(driver)
            self._routes = RouteCache(self._driver, protocol, self.tables, where)
            self._silent_fd = self._runner.call(partial(open_unannounced_switch, self.proc_sys))
            self._routes.silent = self._deletes_unannounced
            # Whether the kernel announces each change of the switches read under proc_sys.
            self._announced = (getattr(self._driver, "follows_forwarding", False)
                               and on_procfs(self.proc_sys))
            # Whether it announces each change of the sysctls announced() names, IPv6's too.
            self._netconf = self._announced and getattr(self._driver, "follows_netconf", False)
        except OSError as exc:
            self._close_silent_switch()
            self._runner.close()
            raise BackendError(f"cannot open rtnetlink in {where}: {exc}") from exc
        except BaseException:
            self._close_silent_switch()
            self._runner.close()
            raise
        # One directory per namespace under the root, so that two namespaces never
        # share one file (each would take the other's for a deleted namespace's).
        root = Path(state_dir) if state_dir is not None else DEFAULT_STATE_ROOT
        # Before 2026-12-04 a given state_dir held the file itself, for every namespace:
        # read once by the namespace it names (its identity), then removed.
        legacy = root if state_dir is not None else None
        # Where an earlier k3snet kept the record (host's for a namespace entered by
        # ip netns exec, another of its names) is read while it has none.
        earlier = [root / name for name in earlier_records(netns, keyed)]
        self._store = SysctlStore(root / (keyed or "host"), keyed, identity, legacy=legacy,
                                  earlier=earlier, instance=instance)

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
            self._close_silent_switch()
            self._runner.close()
            super().close()

    # -- observe

    def observe(self) -> State:
        """Routes and sysctls now: k3snet's own as ``owned``, the modellable rest as ``foreign``."""
        self._routes.begin()
        with translate_errors(f"observe {self._where}", capability=_CAPABILITY):
            view = self._routes.view()
            owned_sysctls, foreign_sysctls = self._observe_sysctls()
        state = State(owned=[*view.owned.values(), *owned_sysctls],
                      foreign=[*view.foreign, *foreign_sysctls])
        # Kept for the plan-fit check of the apply that usually follows: putting 10 000
        # routes in order again for it would cost as much as the apply's batches.
        self._observed = (self._routes.version, state)
        return state

    def expect(self, state: State) -> None:
        """A hint: ``state``'s owned routes are likely in the kernel
        (:func:`~k3snet.converge.converge` passes the desired state).

        Changes no result: the next dump (with the socket driver) takes a route whose
        message has exactly one of their fields as that very object instead of building
        it (docs/performance.md, "Expected objects: routes"). Its sysctls are those
        :attr:`warnings` judges the forwarding switches by.
        """
        self._wanted_routes = tuple(o for o in state.owned if type(o) is Route)
        self._routes.expect(self._wanted_routes)
        self._wanted_sysctls = {o.name: o.value for o in state.owned if type(o) is Sysctl}

    @property
    def warnings(self) -> tuple[str, ...]:
        """What the namespace holds that defeats the sysctls k3snet wants
        (``!! warning:`` under ``k3snet plan`` and ``apply``), as the kernel holds it now
        (read again once it announced a change: :meth:`_forwarding_switches`).

        IPv4 forwarding is decided by the switch of the interface a packet *arrives on*
        (``net.ipv4.conf.<if>.forwarding``, ``ip_route_input_slow``), not by
        ``net.ipv4.ip_forward``: that one only sets every interface's switch when its
        value changes. An interface at 0 beside ``ip_forward = 1`` (systemd-networkd
        without ``IPForward=``, an administrator's sysctl) drops the pods' packets
        arriving there (or their replies arriving from the uplink), and ``default``'s
        0 gives every interface created later (a pod's veth, a CNI bridge made again)
        a 0: named here when the wanted sysctls (:meth:`expect`'s, else those owned)
        turn IPv4 forwarding on, the kernel's is on already (a write of it spreads) and
        the spec names no such switch itself. IPv6 forwards by
        ``net.ipv6.conf.all.forwarding`` alone: its interfaces' switches are not named;
        a default route learned from router advertisements that the kernel no longer
        renews under IPv6 forwarding is (:meth:`_advertisement_warnings`).

        A bridge's port or a bond's slave is not named: what arrives on it is received
        by the bridge or the bond, whose switch decides (a flannel node's pod veths).
        The text names the oldest interfaces at 0 (by link index), at most four, "and
        interfaces created after them" beyond: it stays the same while pods come and
        go, so the agent logs it once per real change (an older interface turned off).

        Also named: an owned sysctl or a switch it spread whose interface k3snet cannot
        tell from another given its index (:meth:`~.sysctls.SysctlState.doubts`), left
        alone, as the last observe found them; and a wanted route whose every lookup an
        administrator's policy rule takes before its table (:meth:`_rule_warnings`).
        """
        wanted = self._wanted_sysctls
        if wanted is None:
            observed = self._observed
            if observed is None:
                return ()
            wanted = {o.name: o.value for o in observed[1].owned if type(o) is Sysctl}
        return (self._ipv4_warnings(wanted) + self._advertisement_warnings(wanted)
                + self._link_doubts + self._rule_warnings() + self._source_warnings())

    def _source_warnings(self) -> tuple[str, ...]:
        """The IPv6 source-specific routes (``ip -6 route add DST from SRC ...``) that take
        the pods' packets off a route k3snet wants (:meth:`expect`'s, else those owned),
        in its table. The kernel keeps them in a subtree of their destination's node,
        looked up by the packet's source (``fib6_node_lookup_1``): the longest destination
        first, then the longest ``from`` holding the source in that node's subtree; a
        destination with a subtree and no ``from`` holding the source is passed over for a
        shorter prefix, its routes without ``from`` too. So, beside k3snet's route to D:

        * one at D itself takes the packets from its ``from``, and the others (the pods'
          outside every ``from`` at D) pass k3snet's route by (a shorter prefix, a
          default route, or none: "Network is unreachable"): named with what it takes
          and what is passed by, unless its ``from`` holds no pod's address and the
          other ``from`` prefixes at D hold every pod (then it changes nothing for them);
        * one inside D takes the packets to its destination from its ``from``: named when
          that overlaps a pod CIDR (``pod_cidrs``; unknown: any);
        * one of a shorter prefix than D never beats k3snet's longer one: not named.

        A policy rule sending the pods' packets to another table (``ip -6 rule add from
        POD lookup 100``) is not judged here (:meth:`_rule_warnings` names one whose
        ``from`` holds every pod CIDR). IPv4 has no
        source-specific routes. Read with a dump of IPv6's routes, only when a wanted
        route is IPv6."""
        routes = self._wanted_routes
        if routes is None:
            observed = self._observed
            routes = () if observed is None else tuple(
                o for o in observed[1].owned if type(o) is Route)
        read: Callable[[Mapping[int, str]], Sequence[SourceRoute]] | None = getattr(
            self._driver, "source_routes", None)
        ours = [r for r in routes if r.destination.version == 6]
        if not ours or read is None:
            return ()
        with translate_errors(f"inspect {self._where}", capability=_CAPABILITY):
            names = {index: link.name for index, link in self._routes.links().items()}
            # The same routes, pod CIDRs and route version: the same answer, no dump (the
            # agent asks every pass; the version moves with any route another changed).
            key = (tuple(ours), self.pod_cidrs, self._routes.version,
                   self._driver.follows_changes)
            if key[3] and self._source_warned is not None and self._source_warned[0] == key:
                return self._source_warned[1]
            try:
                sourced = [s for s in read(names) if self._routes.in_scope(s.table)]
            except OSError as exc:
                return (f"netlink: {_reason(exc, f'read the IPv6 routes of {self._where}')}: "
                        "a source-specific route taking the pods' packets off a route of "
                        "k3snet's is not named here (ip -6 route show table all)",)
        pods = None if self.pod_cidrs is None else [p for p in self.pod_cidrs
                                                     if p.version == 6]
        # Each source route is weighed against k3snet's routes at its destination or a
        # shorter one holding it (the others it cannot touch), found by their (table,
        # destination): 129 look-ups a source route, not one per route of k3snet's (the
        # agent's 10 000 beside 200 source routes were 8 s a pass).
        at: dict[tuple[int, Network], list[Route]] = {}
        for route in ours:
            at.setdefault((route.table, route.destination), []).append(route)
        froms: dict[tuple[int, Network], list[Network]] = {}
        for other in sourced:
            froms.setdefault((other.table, other.destination), []).append(other.source)
        judged: list[tuple[Any, str, str]] = []
        for other in sourced:
            dst = other.destination
            for length in range(dst.prefixlen, -1, -1):
                slot = (other.table, dst.supernet(new_prefix=length))
                for route in at.get(slot, ()):
                    said = _source_taking(route, other, pods, froms.get(slot, ()))
                    if said is not None:
                        judged.append((route.sort_key, other.text, (
                            f"netlink: the IPv6 source-specific route `{other.text}` in "
                            f"{self._where} {said}: {_SOURCE_FIX}")))
        found = [said for _key, _text, said in sorted(judged, key=lambda j: j[:2])]
        self._source_warned = (key, tuple(found))
        return self._source_warned[1]

    def _rule_warnings(self) -> tuple[str, ...]:
        """The routes k3snet wants (:meth:`expect`'s, else those owned) whose traffic an
        administrator's policy rule takes before the kernel's lookup reaches their table:
        ``ip rule add to 10.9.0.0/24 lookup 200`` (priority 100, before ``main``'s 32766)
        with a route of table 200 holding the whole destination, or ``ip rule add
        prohibit to 10.9.0.0/24``. The route is in place and carries nothing; a plan, an
        apply and the agent said nothing of it.

        Only a rule every forwarded packet to the destination meets counts: its ``to``
        holding the whole destination, no other selector (a source prefix, a mark, an
        interface: a rule that *may* match before one to the route's own table leaves
        the route in doubt, not named), nor a ``goto`` or ``nop`` before it; or, for the
        pods' packets, a rule whose ``from`` holds every pod CIDR of the family
        (``pod_cidrs``) and no other selector (``ip rule add from 10.42.0.0/16 lookup
        100``). A ``throw``
        route of the table sends the lookup on, as the kernel does. The text says what the
        rule does with every lookup reaching it and names the earlier rules that may take
        some first (an inverted one, one of a source, a table holding part of the
        destination). A route of table ``local`` holding the whole destination (an AnyIP
        route, ``ip route add local 10.9.0.0/16 dev lo table local``: the node takes the
        packets as its own) is named as the ``local`` rule's (priority 0): IPv6 always
        looks there first; IPv4 keeps ``local`` and ``main`` merged until a policy rule is
        first added or deleted (a longer prefix of ``main`` then wins, the same prefix
        loses), so while ``fib_triestat`` shows them merged (or cannot be read; it is read
        only when a judgement hangs on it) only a
        ``local`` route of the destination's own prefix is sure to take it (table
        ``local`` is read once per change of the routes, by a dump of that table alone).
        The rules are read at
        every call (the kernel announces no rule change to the route view); a dump the
        kernel refuses is a warning saying so, not an error ending the plan. The routes
        are those the last observe or apply read (with a driver following no change)."""
        routes = self._wanted_routes
        if routes is None:
            observed = self._observed
            routes = () if observed is None else tuple(
                o for o in observed[1].owned if type(o) is Route)
        read_rules: Callable[[], Sequence[LookupRule]] | None = getattr(
            self._driver, "rules", None)
        if not routes or read_rules is None:
            return ()
        # The routes as the pass's observe or apply left the view, no begin(): with a
        # driver that follows no change (pyroute2) it dumped every route again, all of
        # them decoded anew (the expected ones are the observe's), at each look.
        try:
            rules = list(read_rules())
        except OSError as exc:
            # Read for a warning only: a kernel refusing the dump ended plan and apply
            # after their read, here a warning. (IPv6 off at boot is no IPv6 rules: the
            # drivers read the IPv4 ones alone.)
            return (f"netlink: {_reason(exc, f'read the policy rules of {self._where}')}: "
                    "a route of k3snet's whose every lookup an administrator's rule takes "
                    "before its table is not named here (ip rule)",)
        read_local: Callable[[Mapping[int, str], Mapping[int, int]],
                             Sequence[LocalRoute]] | None = getattr(
            self._driver, "local_routes", None)
        custom = not all(rule in _DEFAULT_RULES for rule in rules)
        if not custom and read_local is None:
            return ()  # a namespace's own rules: each table's lookup as ip route says
        # IPv4 keeps tables local and main merged until a policy rule is first added or
        # deleted (fib_unmerge): one now present (other than the three a namespace starts
        # with) proves them apart; else the kernel's statistics of its tries say (one
        # added and deleted again, or a default one deleted, left them apart unseen in
        # the rules), read only when a judgement hangs on it (_Merge).
        split = any(rule.family == 4 and rule not in _DEFAULT_RULES for rule in rules)
        with translate_errors(f"inspect {self._where}", capability=_CAPABILITY):
            if custom:
                view = self._routes.view()
            else:
                self._routes.sync()  # its version alone: no table but local is looked in
            tables = frozenset(rule.table for rule in rules if rule.action == FR_ACT_TO_TBL
                               and rule.table not in (0, _LOCAL_TABLE)) if custom else frozenset()
            # The same rules, routes and view: the same answer (the agent asks every pass;
            # 10 000 routes in the lookup again would cost more than the pass). Not kept
            # when a table is dumped apart: the view's version does not follow it. (A
            # change of table local, an address's or another program's route, moves it.)
            # An answer that asked fib_triestat holds while it says the same (a rule added
            # and deleted again between two calls leaves the same rules, tables apart).
            key = (tuple(rules), split, routes, self._routes.version, self.pod_cidrs)
            last = self._rule_warned
            if last is not None and last[0] == key and self._same_merge(last[3]):
                return last[1]
            lookup = (self._fill(_GatewayTables(tables), view, tables) if custom
                      else _GatewayTables(tables))
        local = self._local_table(read_local, routes)
        if isinstance(local, str):
            return (local,)
        # Without rules of an administrator's the answer is the routes' and table local's
        # alone: a driver following no change (pyroute2: the version moves every pass)
        # reads the same table again, and 10 000 routes are not looked up again.
        again = ((tuple(rules), split, routes, local.routes, self.pod_cidrs) if not custom
                 else None)
        if (again is not None and last is not None and last[2] == again
                and self._same_merge(last[3])):
            said, asked = last[1], last[3]
        else:
            merge = _Merge(self._runner, split=split)
            said = self._taken_routes(routes, rules, lookup, local, custom=custom, merge=merge)
            asked = merge.read
        kept = all(self._routes.in_scope(table) for table in tables)
        self._rule_warned = (key, said, again, asked) if kept else None
        return said

    def _same_merge(self, asked: tuple[bool | None, ...]) -> bool:
        """Whether ``fib_triestat`` says what it said when a judgement asked it
        (``asked``; ``()``: none did, and none does on the same routes and rules). One
        read: a route changed while the kernel walks shows merged tables apart, a change
        judged anew with every read :func:`_ipv4_tables_merged` takes; tables apart never
        merge again, nor show merged statistics while routes change."""
        return not asked or self._runner.call(partial(_ipv4_tables_merged, 1)) == asked[0]

    def _taken_routes(self, routes: Sequence[Route], rules: Sequence[LookupRule],
                      lookup: _GatewayTables, local: _LocalTable, *, custom: bool,
                      merge: _Merge) -> tuple[str, ...]:
        """The warnings of :meth:`_rule_warnings`, each route judged anew (``merge``:
        whether IPv4's tables local and main are merged, read when first asked)."""
        found: list[str] = []
        # Without rules of an administrator's only table local may take a route: one look
        # each, no walk of the rules (nor a sort of 10 000 routes none of it holds). A
        # throw at a route of table default's prefix sends it on merged or apart: unread.
        judged = routes if custom else [
            route for route in routes if local.holder(route.destination) is not None
            or (route.destination.version == 4 and route.table != _DEFAULT_TABLE
                and local.throw_at(route.destination) is not None and merge.merged)]
        for route in sorted(judged, key=lambda r: r.sort_key):
            taken = _taken_by_rule(route, rules, lookup, local, merge=merge,
                                   pods=self.pod_cidrs)
            if taken is not None:
                rule, holder, earlier, passed = taken
                # A rule no pod's packet meets passed by: said of the pods' packets alone.
                pods = [p for p in self.pod_cidrs or () if p.version == rule.family
                        ] if passed else []
                what = ("no traffic" if rule.source is None and not pods
                        else "none of the pods' traffic")
                found.append(f"netlink: the {route.describe()} carries {what} in "
                             f"{self._where}: {_why_taken(route, rule, holder, earlier, pods)}")
        return tuple(found)

    def _local_table(self, read: Callable[[Mapping[int, str], Mapping[int, int]],
                                          Sequence[LocalRoute]] | None,
                     routes: Sequence[Route]) -> _LocalTable | str:
        """The routes of table ``local`` that matter to ``routes`` (none without
        ``read``), or the warning saying the kernel refused their dump (read for a
        warning only, as the rules). The host routes of the node's addresses, longer
        than any of ``routes``, are not decoded: thousands of service addresses
        (kube-proxy's IPVS mode) cost a cold plan a dump, not their decoding."""
        if read is None:
            return _LocalTable(())
        names = {index: link.name for index, link in self._routes.links().items()}
        longest: dict[int, int] = {}
        for route in routes:
            dst = route.destination
            longest[dst.version] = max(longest.get(dst.version, 0), dst.prefixlen)
        try:
            return _LocalTable(read(names, longest))
        except OSError as exc:
            return (f"netlink: {_reason(exc, f'read table local of {self._where}')}: a "
                    "route of k3snet's whose every lookup a route of table local takes "
                    "first is not named here (ip route show table local)")

    def _advertisement_warnings(self, wanted: Mapping[str, str]) -> tuple[str, ...]:
        """The default routes learned from router advertisements that the kernel no longer
        renews while IPv6 forwarding is wanted on: an interface whose IPv6 ``forwarding``
        is on ignores advertisements unless its ``accept_ra`` is 2 (``ipv6_accept_ra``).
        ``check`` refuses turning forwarding on over such a route; an ``accept_ra``
        changed from 2 to 1 afterwards (netplan's ``accept-ra: true``, an administrator)
        is announced by no notification, and the route then expires within its lifetime
        (1800 s by default) and is not learned again: read at every call while such a
        route is in the last observe's view."""
        if wanted.get("net.ipv6.conf.all.forwarding") in (None, "0"):
            return ()
        observed = self._observed
        if observed is None or not self._routes.in_scope(MAIN_TABLE):
            return ()
        learned = sorted((r for r in observed[1].foreign if isinstance(r, Route)
                          and r.family == 6 and r.protocol == _RA_PROTOCOL
                          and r.destination.prefixlen == 0 and r.device is not None
                          and r.table == MAIN_TABLE), key=lambda r: r.sort_key)
        if not learned:
            return ()
        names: dict[str, tuple[str, str]] = {}
        for route in learned:
            assert route.device is not None
            with contextlib.suppress(ModelError):  # a name no sysctl can spell: not judged
                names[route.device] = (
                    Sysctl(f"net/ipv6/conf/{route.device}/accept_ra", "0").name,
                    Sysctl(f"net/ipv6/conf/{route.device}/forwarding", "0").name)
        root = self.proc_sys
        values = self._runner.call(lambda: read_sysctls(
            root, [name for pair in names.values() for name in pair]))
        found: list[str] = []
        for route in learned:
            pair = names.get(str(route.device))
            if pair is None:
                continue
            accept, forwarding = (normal(name, values.get(name)) for name in pair)
            if forwarding in (None, "0") or accept in (None, "2"):
                continue
            found.append(
                f"netlink: {pair[0]} is {accept} in {self._where} while IPv6 forwarding is "
                f"on there: the kernel ignores the router advertisements arriving on "
                f"{route.device}, so the {route.describe()} learned from them expires and is "
                f"not learned again (the node loses its IPv6 default route); name it in the "
                f"spec's sysctls ({pair[0]}: 2)")
        return tuple(found)

    def _ipv4_warnings(self, wanted: Mapping[str, str]) -> tuple[str, ...]:
        """The IPv4 forwarding switches at 0 (see :attr:`warnings`)."""
        on = wanted.get("net.ipv4.ip_forward", wanted.get("net.ipv4.conf.all.forwarding"))
        if on in (None, "0"):
            return ()
        now, switches, order, ports = self._forwarding_switches()
        if normal("net.ipv4.ip_forward", now) in (None, "0"):
            return ()  # the plan writes it: the kernel sets every switch, default's too
        off = [switch for switch, value in switches.items() if value == "0"
               and switch.endswith(".forwarding") and switch not in wanted
               and switch != "net.ipv4.conf.lo.forwarding" and interface_of(switch) not in ports]
        found: list[str] = []
        # Oldest first (by link index), a few named: a pod's veth, new, comes last and
        # changes no text (with default's switch at 0 each one is off: its warning was
        # logged again at every pod start). An older interface turned off is named.
        interfaces = sorted(((name, switch) for switch in off
                             if (name := interface_of(switch)) is not None),
                            key=lambda each: (order.get(each[0], _NO_INDEX), each[0]))
        if interfaces:
            shown = ", ".join(name for name, _ in interfaces[:_SHOWN_INTERFACES]) + (
                " and interfaces created after them" if len(interfaces) > _SHOWN_INTERFACES
                else "")
            first = interfaces[0][1]
            found.append(
                f"netlink: IPv4 forwarding is off on {shown} in {self._where} "
                f"({first} = 0 ...) although net.ipv4.ip_forward is 1: the kernel forwards "
                "no IPv4 packet arriving on such an interface (the switch of the interface "
                "a packet arrives on decides), so pods' traffic arriving there, or its "
                "replies arriving there from a destination, is dropped; name the switch in "
                f"the spec's sysctls ({first}: 1) for k3snet to turn it on and keep it on")
        if "net.ipv4.conf.default.forwarding" in off:
            found.append(
                f"netlink: net.ipv4.conf.default.forwarding is 0 in {self._where} although "
                "net.ipv4.ip_forward is 1: every interface created from now on (a pod's "
                "veth, a CNI bridge made again) starts with IPv4 forwarding off, and the "
                "kernel forwards no IPv4 packet arriving on it; name it in the spec's "
                "sysctls (net.ipv4.conf.default.forwarding: 1)")
        return tuple(found)

    def _forwarding_switches(self) -> tuple[str | None, dict[str, str], dict[str, int],
                                            frozenset[str]]:
        """``net.ipv4.ip_forward`` as read, the IPv4 ``forwarding`` switches of ``default``
        and of each interface (:func:`spread_values`), the link indexes by name, and the
        names of a bridge's ports and a bond's slaves: what arrives on those is received
        by the bridge or the bond (``skb->dev``), whose switch decides, never theirs (a
        flannel node's pod veths, cni0's ports, each at 0 with ``default`` at 0, drop
        nothing while cni0 is at 1).

        Read from the kernel again only when it may have changed one: a netconf
        notification (the kernel sends one for each switch that changes), a link one
        (an interface came, went or was renamed) or a lost one arrived since the last
        read (the socket driver, ``proc_sys`` on a proc file system). Read on every
        agent pass, the switches of 100 pods' veths were 100 file reads of a pass that
        had nothing else to do (docs/performance.md, "The forwarding switches").
        """
        version: int | None = None
        with translate_errors(f"read the forwarding switches of {self._where}",
                              capability=_CAPABILITY):
            if self._announced:
                self._routes.sync()
                version = self._routes.switches_version
                kept = self._switches_read
                if kept is not None and kept[0] == version:
                    return kept[1]
            root = self.proc_sys
            now, switches = self._runner.call(lambda: (
                read_sysctls(root, ["net.ipv4.ip_forward"])["net.ipv4.ip_forward"],
                spread_values(root, "net.ipv4.ip_forward")))
            self._count()
            links = self._routes.links()
            order = {link.name: link.index for link in links.values()}
            ports = frozenset(link.name for link in links.values()
                              if link.master is not None and link.master in links
                              and links[link.master].kind in _RECEIVING_MASTERS)
        read = (now, switches, order, ports)
        if version is not None:
            self._switches_read = (version, read)
        return read

    def route_dumps(self) -> list[list[bytes]] | None:
        """Each family's raw route messages of every table, IPv4's then IPv6's, for
        :func:`k3snet.gather_facts` (given this backend); ``None`` with a driver that
        cannot (pyroute2). When the backend observes every table (no ``tables``), its
        next observe reads them instead of dumping again, unless a route, link, address
        or nexthop object changed in between: a cold ``k3snet apply`` dumped the routes
        twice (docs/performance.md, "One route dump for the facts and the observe")."""
        dumps = getattr(self._driver, "route_dumps", None)
        if dumps is None:
            return None
        with translate_errors(f"read the routes of {self._where}", capability=_CAPABILITY):
            self._routes.sync()  # what came before the dump is no reason to drop it
            found: list[list[bytes]] = dumps(keep=self.tables is None)
        return found

    def change_token(self) -> Hashable | None:
        """The route view's version after reading the pending notifications (no dump),
        and what moves with the sysctls ``observe`` reports (:meth:`_sysctls_token`).

        It changes with any route, link, address or nexthop-object change in the
        namespace, ours included; ``None`` with a driver that reads no notifications (pyroute2).
        """
        version = self.route_token()
        if version is None:
            return None
        with translate_errors(f"read the sysctls of {self._where}", capability=_CAPABILITY):
            return version, self._sysctls_token()

    def _sysctls_token(self) -> Hashable:
        """What moves whenever the sysctls ``observe`` reports may have changed.

        With the socket driver and ``proc_sys`` on a proc file system, the kernel
        announces each change of the forwarding and ``rp_filter`` switches
        (:func:`~.sysctls.announced`: :data:`WATCHED_SYSCTLS` and what most specs own):
        those are not read, the netconf and link notifications' version stands for them,
        and the state file's signature for what is owned. Only the others (an
        ``accept_ra``, a ``watch_sysctls`` entry) are read: a no-op agent pass read every
        reported sysctl's file and the state file, through the namespace's thread
        (docs/performance.md, "The change token's sysctls"). Otherwise every one is read.
        """
        if not self._netconf:
            owned, foreign = self._observe_sysctls()
            return tuple(owned), tuple(foreign)
        self._routes.sync()
        key = (self._routes.switches_version, self._store.signature())
        kept = self._unheard
        if kept is None or kept[0] != key:
            data, _indexes = self._load_sysctls()
            names = self._watch | data.released | set(data.owned)
            kept = self._unheard = (key, sorted(n for n in names if not announced(n)))
        unheard = kept[1]
        if not unheard:
            return key
        root = self.proc_sys
        values = self._runner.call(lambda: read_sysctls(root, unheard))
        return key, tuple(values.items())

    def route_token(self) -> tuple[int, int] | None:
        """The route view's version after reading the pending notifications (no dump):
        it changes with any route, link, address or nexthop-object change in the
        namespace, ours included, and with nothing else (:meth:`facts_token` leaves
        ours out). ``None`` with a driver that reads no notifications (pyroute2).
        """
        return self._routes.version if self._read_notifications() else None

    def facts_token(self) -> int | None:
        """As :meth:`route_token`, but still when only k3snet's own routes changed (its
        protocol, or 211), which the node facts leave out; a route of k3snet's that
        replaced another moves it. The agent reads the node facts again only when it
        moved. ``None`` with a driver that reads no notifications (pyroute2).
        """
        return self._routes.facts_version if self._read_notifications() else None

    def _read_notifications(self) -> bool:
        """Bring the route view up to the pending notifications (no dump); False with a
        driver that reads none (pyroute2), or while the kernel may delete routes without
        one (:meth:`_deletes_unannounced`)."""
        if not self._driver.follows_changes or self._deletes_unannounced():
            return False
        with translate_errors(f"read the notifications of {self._where}",
                              capability=_CAPABILITY):
            self._routes.sync()
        return True

    def _close_silent_switch(self) -> None:
        fd, self._silent_fd = self._silent_fd, None
        if fd is not None:
            os.close(fd)

    def _deletes_unannounced(self) -> bool:
        """Whether the kernel may now delete IPv6 routes without a notification:
        ``net.ipv6.route.skip_notify_on_dev_down = 1`` (FRR's advice for nodes of many
        routes), and ``disable_ipv6`` turned on for an interface without an IPv6 address
        (a WireGuard tunnel) then deletes the routes through it with no notification at
        all. The route view is then dumped at every public call, and the tokens are
        ``None`` (cannot tell), as with the pyroute2 driver. Read through a file kept
        open in the namespace (``pread``: a few µs, no thread hop)."""
        return deletes_unannounced(self._silent_fd)

    def _count(self) -> None:
        self._operations += 1

    def _link_indexes(self, data: SysctlState) -> dict[str, LinkId]:
        """The namespace's links by name, when ``data`` ties a sysctl to one."""
        if not data.links and not data.spread_links:
            return {}
        return self._link_ids()

    def _link_ids(self) -> dict[str, LinkId]:
        """The namespace's links by name, as a record of the state file ties to one."""
        return {link.name: LinkId(link.index, link.kind, link.address, link.permanent)
                for link in self._routes.links().values()}

    def _load_sysctls(self) -> tuple[SysctlState, dict[str, LinkId]]:
        """The sysctl state file, with owned sysctls of renamed interfaces under their new
        names (:meth:`SysctlState.follow`), and the links by name it needs."""
        data = self._store.load()
        indexes = self._link_indexes(data)
        return data.follow(indexes), indexes

    def _observe_sysctls(self) -> tuple[list[Sysctl], list[Sysctl]]:
        loaded = self._store.load()
        indexes = self._link_indexes(loaded)
        data = loaded.follow(indexes)
        # One of an interface deleted and created again is the new interface's: foreign.
        mine = {name: entry for name, entry in data.owned.items()
                if data.owns(name, indexes)}
        others = sorted((self._watch | data.released | set(data.owned)) - set(mine))
        root = self.proc_sys
        values = self._runner.call(lambda: read_sysctls(root, [*mine, *others]))
        # The records of interfaces k3snet cannot tell, for the warnings (as loaded: a
        # doubted one is neither followed nor held).
        self._link_doubts = tuple(loaded.doubts(
            indexes, lambda names: self._runner.call(lambda: read_sysctls(root, names))))
        owned: list[Sysctl] = []
        for name, (_value, previous) in sorted(mine.items()):
            current = normal(name, values.get(name))
            if current is not None:  # gone with its interface: nothing left to own
                # An empty previous value (no port reserved) is none the model holds.
                owned.append(Sysctl(name, current, previous=previous or None))
        foreign = [Sysctl(name, value) for name in others
                   if (value := normal(name, values.get(name))) is not None]
        return owned, foreign

    # -- check

    def check(self, plan: Plan) -> tuple[str, ...]:
        """Dry run: what applying ``plan`` would hit. Nothing is changed.

        Every change must fit what k3snet owns (:func:`~k3snet.backends.kit.fit_problems`:
        no add over an owned object, no delete or replace of anything but the owned
        object as named). Routes: the table is managed and the protocol ours; a
        replace shares its slot with no foreign route; an add's slot (table,
        destination, metric) is free of foreign routes too; the device exists and
        is up; the gateway is on-link where the kernel looks it up (a device route of
        the route's own table, else of ``main``, IPv4's ``default`` or a table an
        administrator's policy rule may send the lookup to, the plan's
        earlier changes counted; or link-local with a device: see
        :meth:`_GatewayTables.reachable`), not a local address (IPv6 refuses it; IPv4
        takes it and ignores the gateway), for IPv4 not the broadcast address of a local
        prefix. Sysctls: the parameter exists.
        """
        self._routes.begin()
        try:
            with translate_errors(f"inspect {self._where}", capability=_CAPABILITY):
                return tuple(self._check(plan))
        except K3snetError as exc:
            return (str(exc),)

    def _check(self, plan: Plan) -> list[str]:
        route_changes = _of_kind(plan, "route")
        view = self._routes.view() if route_changes else None
        problems, missing = self._fit(plan, view)
        problems += [problem for _change, problem in missing]
        if route_changes:
            assert view is not None
            problems += self._check_routes(route_changes, view)
        problems += self._advertised_route_problems(plan)
        problems += disruptive_problems(self, plan)
        return problems

    def disruptive(self, change: Change) -> str | None:
        """Why ``change`` cannot be taken back, or ``None``: a write turning
        ``disable_ipv6`` on for ``all`` or an interface (a take-over, a replace, or the
        give-back of a previous value that was on).

        The kernel then deletes every IPv6 address and route of the interfaces
        (``addrconf_ifdown``); writing 0 again, in a rollback or when k3snet gives the
        sysctl back, brings back only the link-local address: the node's static
        addresses and the routes through them, the administrator's too, stay gone.
        """
        written = (change.after if change.after is not None
                   else getattr(change.before, "previous", None))
        subject = change.subject
        if not isinstance(subject, Sysctl):
            return None
        value = written.value if isinstance(written, Sysctl) else written
        parts = subject.path.split("/")
        if (value in (None, "0") or len(parts) != 5 or parts[:3] != ["net", "ipv6", "conf"]
                or parts[4] != "disable_ipv6" or parts[3] == "default"):
            return None
        where = "every interface" if parts[3] == "all" else f"interface {parts[3]}"
        return (f"turning IPv6 off deletes the IPv6 addresses and routes of {where}, "
                "the administrator's too; neither a rollback nor giving the sysctl back "
                "brings them back")

    def _advertised_route_problems(self, plan: Plan) -> list[str]:
        """The changes turning IPv6 forwarding on while that would drop a default route
        learned from router advertisements.

        A non-zero write to ``net.ipv6.conf.all.forwarding`` or to an interface's makes
        the kernel delete, in the whole namespace, every such route whose interface's
        ``accept_ra`` is not 2 (``rt6_purge_dflt_routers``), and with forwarding on an
        ``accept_ra`` of 1 ignores the next advertisements: the node loses its IPv6
        default route. An ``accept_ra`` the plan writes before counts.
        """
        sysctls = _of_kind(plan, "sysctl")
        if not any(_enables_ipv6_forwarding(c) for c in sysctls):
            return []
        if self._routes.in_scope(MAIN_TABLE):  # where the kernel puts them
            routes: Iterable[Route | RouteBlock] = self._routes.view().foreign
        else:
            names = {index: link.name for index, link in self._routes.links().items()}
            routes = [r for r in self._driver.routes(frozenset({MAIN_TABLE}), names)
                      if not isinstance(r, Siblings)]  # never learned from advertisements
        learned = sorted((r for r in routes if isinstance(r, Route) and r.family == 6
                          and r.protocol == _RA_PROTOCOL and r.destination.prefixlen == 0
                          and r.device is not None), key=lambda r: r.sort_key)
        if not learned:
            return []
        switches: dict[str, str] = {}
        for route in learned:
            assert route.device is not None
            with contextlib.suppress(ModelError):  # a name no sysctl can spell: not judged
                switches[route.device] = Sysctl(f"net/ipv6/conf/{route.device}/accept_ra",
                                                "0").name
        root = self.proc_sys
        values = self._runner.call(lambda: read_sysctls(root, list(switches.values())))
        self._count()
        accept = {name: normal(name, value) for name, value in values.items()}
        # Sysctls go in name order: all.forwarding before any interface's accept_ra.
        later = {str(c.subject.key[1]) for c in sysctls if isinstance(c.after, Sysctl)
                 and c.after.value == "2" and str(c.subject.key[1]) in accept}
        problems: list[str] = []
        for change in sysctls:
            subject = change.subject
            assert isinstance(subject, Sysctl)
            if subject.name in accept:  # written before the forwarding switch: it counts
                accept[subject.name] = (str(subject.value) if change.after is not None
                                        else getattr(change.before, "previous", None))
            if not _enables_ipv6_forwarding(change):
                continue
            for route in learned:
                switch = switches.get(str(route.device))
                if switch is None or accept.get(switch) == "2":
                    continue
                # Run where k3snet read: pasted alone, it set the node's own sysctl.
                fix = shown_command(["sysctl", "-w", f"{switch}=2"], self.netns)
                problems.append(
                    f"{change}: turning IPv6 forwarding on makes the kernel drop the "
                    f"{route.describe()} (learned from router advertisements; {switch} is "
                    f"{accept.get(switch)}, not 2) and, with accept_ra 1, ignore the next "
                    f"ones: the node would lose its IPv6 default route. Set {switch} to 2 "
                    f"first (`{fix}`: advertisements are then accepted with forwarding "
                    "on)" + (" before applying: this plan sets it only after this change"
                             if switch in later else ""))
        return problems

    def _check_routes(self, changes: Sequence[Change], view: RouteView) -> list[str]:
        """What the kernel would refuse: taken slots, missing or down devices, gateways."""
        problems: list[str] = []
        by_index = self._routes.links()
        links = {link.name: link for link in by_index.values()}
        owned = dict(view.owned)
        taken = {_slot(r): r for r in view.foreign}
        gateways = [r for c in changes if isinstance(r := c.after, Route)
                    and r.gateway is not None]
        lookup = self._gateway_tables(gateways, view) if gateways else _GatewayTables(frozenset())
        for change in changes:
            after = change.after
            if change.action == "add" and isinstance(after, Route):
                clash = taken.get(after.key)
                if clash is not None and owned.get(after.key) is None:
                    problems.append(f"{change}: the slot (table, destination, metric) is "
                                    f"taken by {clash}")
            if isinstance(after, Route):
                problems += _route_problems(change, after, links, lookup)
            # The plan's earlier changes count: a device route it adds first, or deletes.
            if isinstance(change.before, Route):
                lookup.remove(change.before)
            if isinstance(after, Route):
                lookup.add(after)
            _simulate(owned, change)
        return problems

    def _gateway_tables(self, gateways: Sequence[Route], view: RouteView) -> _GatewayTables:
        """Where the kernel looks the ``gateways`` up: their routes' tables, then (the default
        rules) ``main`` and ``default`` (dumped when not managed), and the local addresses."""
        by_index = self._routes.links()
        local: dict[Address, set[str]] = {}
        broadcasts: set[Address] = set()
        for index, ifaces in self._driver.addresses().items():
            name = by_index[index].name if index in by_index else None
            for iface in ifaces:
                local.setdefault(iface.ip, set()).update(() if name is None else (name,))
                if iface.version == 4 and iface.network.prefixlen < 31:
                    broadcasts.add(iface.network.broadcast_address)
        # The policy rules in the kernel's order (optional of a driver: without it, the
        # rules a namespace starts with).
        read_rules: Callable[[], Sequence[LookupRule]] | None = getattr(
            self._driver, "rules", None)
        rules = list(_DEFAULT_RULES)
        if read_rules is not None:
            # A dump the kernel refuses ended the check, and with it
            # plan and apply: judged by the rules a namespace starts with, as a driver
            # reading none is (the warnings say the rules could not be read).
            with contextlib.suppress(OSError):
                rules = [rule for rule in read_rules() if rule.gateway_lookup]
        tables = frozenset({r.table for r in gateways} | {MAIN_TABLE, _DEFAULT_TABLE}
                           | {rule.table for rule in rules if rule.action == FR_ACT_TO_TBL
                              and rule.table != _LOCAL_TABLE})
        lookup = _GatewayTables(tables, local, frozenset(broadcasts), rules)
        return self._fill(lookup, view, tables - {r.table for r in gateways})

    def _fill(self, lookup: _GatewayTables, view: RouteView, tables: frozenset[int]
              ) -> _GatewayTables:
        """``lookup`` with the routes of ``view`` and those of ``tables`` it lacks (not
        managed: dumped)."""
        for route in (*view.owned.values(), *view.foreign):
            lookup.add(route)
        unseen = frozenset(t for t in tables if not self._routes.in_scope(t))
        if unseen:
            names = {index: link.name for index, link in self._routes.links().items()}
            for dumped in self._driver.routes(unseen, names):
                lookup.add(dumped.whole if isinstance(dumped, Siblings) else dumped)
        return lookup

    def _fit(self, plan: Plan, view: RouteView | None
             ) -> tuple[list[str], list[tuple[Change, str]]]:
        """Why ``plan`` is not this backend's to apply, and the changes of absent sysctls.

        The ownership rules are the kit's (:func:`~k3snet.backends.kit.fit_problems`),
        judged against the part of the observed state the plan touches (cheap at
        10 000 changes). ``view``: the route view, or ``None`` when no route change
        names an existing route (adds are then left to the kernel's create-exclusive
        check). Then what only this backend knows: route protocol, managed tables,
        foreign routes sharing the slot of a replace.
        """
        routes = _of_kind(plan, "route")
        sysctls = _of_kind(plan, "sysctl")
        owned: list[NetObject] = []
        foreign: list[NetObject] = []
        problems: list[str] = []
        shared: dict[tuple[Any, ...], Route | RouteBlock] = {}
        observed = self._observed
        if (view is not None and not sysctls and observed is not None
                and observed[0] == self._routes.version):
            # The routes are what the last observe saw: its State answers for them.
            problems += fit_problems(self, plan, observed[1], slots=False)
            if any(c.action == "replace" for c in routes):
                keys = {c.subject.key for c in routes}
                shared = {_slot(r): r for r in view.foreign if _slot(r) in keys}
            for change in routes:
                problems += self._refusal(change, shared)
            return problems, []
        if view is not None:
            keys = {c.subject.key for c in routes}
            owned += [view.owned[key] for key in keys if key in view.owned]
            foreign += [c.before for c in routes
                        if c.before is not None and c.before in view.foreign]
            if any(c.action == "replace" for c in routes):
                shared = {_slot(r): r for r in view.foreign if _slot(r) in keys}
        missing: list[tuple[Change, str]] = []
        if sysctls:
            found_owned, found_foreign, missing, contradictions = self._touched_sysctls(sysctls)
            owned += found_owned
            foreign += found_foreign
            problems += contradictions
        problems += fit_problems(self, plan, State(owned=owned, foreign=foreign),
                                 slots=False)
        for change in routes:
            problems += self._refusal(change, shared)
        return problems, missing

    def _refusal(self, change: Change,
                 shared: Mapping[tuple[Any, ...], Route | RouteBlock]) -> list[str]:
        """What only this backend refuses in a route change (empty when it is fine)."""
        problems: list[str] = []
        clash = shared.get(change.subject.key) if change.action == "replace" else None
        if clash is not None:
            # NLM_F_REPLACE picks a route by slot, whatever its protocol: it could hit this one.
            problems.append(f"{change}: the foreign {clash.describe()} shares the slot "
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
        return problems

    def _touched_sysctls(self, changes: Sequence[Change]) -> tuple[
            list[Sysctl], list[Sysctl], list[tuple[Change, str]], list[str]]:
        """The sysctls ``changes`` name as observe reports them (owned, foreign), the
        changes of sysctls the kernel does not have, and the two names of one kernel
        value (:data:`ALIASES`) the plan would leave owned with different values."""
        data, indexes = self._load_sysctls()
        names = sorted({str(c.subject.key[1]) for c in changes})
        # The other name of a value the plan writes, owned and left as it is: the write
        # changes it too, behind the plan's back.
        kept = sorted({alias for name in names if (alias := ALIASES.get(name)) is not None
                       and alias not in names and data.owns(alias, indexes)})
        root = self.proc_sys
        values = self._runner.call(lambda: read_sysctls(root, [*names, *kept]))
        self._count()
        owned: list[Sysctl] = []
        foreign: list[Sysctl] = []
        for name in names:
            current = normal(name, values.get(name))
            if current is None:
                continue
            if data.owns(name, indexes):
                owned.append(Sysctl(name, current, previous=data.owned[name][1] or None))
            else:
                foreign.append(Sysctl(name, current))
        missing: list[tuple[Change, str]] = []
        for change in changes:
            subject = change.subject
            assert isinstance(subject, Sysctl)
            if values.get(subject.name) is None:
                missing.append((change, f"{change}: no such sysctl in {self._where} "
                                        f"({root / subject.path})"))
        return owned, foreign, missing, _alias_problems(changes, {
            name: value for name in [*names, *kept] if data.owns(name, indexes)
            and (value := normal(name, values.get(name))) is not None})

    # -- apply

    def apply(self, plan: Plan) -> ApplyResult:
        """Apply every change of ``plan`` in order, or none (see the module docs)."""
        self.ensure_capable(plan)
        fail_at = self.faults.take(plan)
        if not plan.changes:
            return ApplyResult(self.name, (), 0)
        start = self._operations
        self._routes.begin()
        has_sysctls = "sysctl" in plan.kinds
        lock = self._store.locked() if has_sysctls else contextlib.nullcontext()
        try:
            with lock:
                with translate_errors(f"read the state of {self._where}", into=ApplyError,
                                      capability=_CAPABILITY):
                    indexes = self._prepare(plan)
                done = self._execute(plan, indexes, fail_at)
        except BaseException:  # an ApplyError, or an interruption (taken back too)
            self._routes.forget()  # what the kernel holds now is read again
            raise
        return ApplyResult(self.name, plan.changes, self._operations - start,
                           undo=partial(self._take_back, done, has_sysctls))

    def _take_back(self, done: Compensation, has_sysctls: bool) -> tuple[Change, ...]:
        """Undo a successful apply exactly, as its own failure would have (a group's
        later member failed): values written back with the switches their write
        spread to, the sysctl state file as it was (see :attr:`ApplyResult.undo`)."""
        made = list(done.done)
        lock = self._store.locked() if has_sysctls else contextlib.nullcontext()
        try:
            with lock:
                undone, problems = done.rollback()
        finally:
            self._routes.forget()  # what the kernel holds now is read again
        if problems:
            raise RollbackError(
                f"{self.name} backend, {self._where}: undoing its applied changes failed, "
                "the system may be half-changed:\n    " + "\n    ".join(problems),
                failed=None, done=made, rolled_back=undone)
        return tuple(undone)

    def _prepare(self, plan: Plan) -> dict[str, int]:
        """Refuse what is not ours (PlanError) and resolve devices; nothing is changed yet."""
        routes = _of_kind(plan, "route")
        view = self._routes.view() if any(c.before is not None for c in routes) else None
        problems, missing = self._fit(plan, view)
        problems += self._advertised_route_problems(plan)
        problems += disruptive_problems(self, plan)
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

    def _execute(self, plan: Plan, indexes: Mapping[str, int], fail_at: int | None
                 ) -> Compensation:
        """Make the changes in order; on a failure undo what was done (Compensation).

        Returns the compensation of the changes made, to take them back later."""
        changes = plan.changes
        stop = len(changes) if fail_at is None else fail_at
        undo = Compensation(self.name, self._where)
        mixed = "sysctl" in plan.kinds
        if mixed:
            undo.record((), partial(self._restore_store, self._store.load()))
        with undo.guarding():
            position = 0
            while position < stop:
                if mixed and changes[position].kind != "route":
                    self._execute_sysctl(changes[position], undo)
                    position += 1
                    continue
                # A batch: the routes from here up to the next sysctl, at most _BATCH_MESSAGES.
                end = min(stop, position + _BATCH_MESSAGES)
                if mixed:
                    end = next((i for i in range(position, end)
                                if changes[i].kind != "route"), end)
                batch = changes[position:end]
                try:
                    # A signal from the send to the record waits for the record: raised
                    # in between (the socket's answers read in the main thread, where
                    # Ctrl-C lands), the routes were made and never among those undone.
                    with _held_until_recorded():
                        failures = self._driver.send(batch, indexes)
                        made = [change for i, change in enumerate(batch) if i not in failures]
                        if made:
                            undo.record(made, partial(self._undo_routes, made))
                except OSError as exc:  # the answers were lost: what the kernel did is unknown
                    undo.fail(batch[0], f"lost the kernel's answers: {exc}", exc,
                              extra_problems=[f"{c}: outcome unknown" for c in batch])
                if failures:
                    first = min(failures)
                    more = (f" ({len(failures) - 1} more change(s) of that batch failed too)"
                            if len(failures) > 1 else "")
                    undo.fail(batch[first], _reason(failures[first], "write routes") + more,
                              failures[first])
                position = end
            if stop < len(changes):
                undo.fail(changes[stop], f"injected failure (fault hook at change {fail_at})")
        return undo

    def _undo_routes(self, made: Sequence[Change]) -> None:
        """Send the inverses of ``made`` as one batch (UndoFailure lists what failed)."""
        inverses = [change.inverse() for change in reversed(made)]
        left: dict[int, str] = {}
        failures: dict[int, object]
        try:
            left = self._behind_other_nexthops(inverses)
            sent = [i for i in range(len(inverses)) if i not in left]
            indexes = {link.name: link.index for link in self._routes.links().values()}
            if getattr(self._driver, "restores", False):
                # A deleted route goes back beside a route that shares its slot.
                failed = self._driver.send([inverses[i] for i in sent],  # type: ignore[call-arg]
                                           indexes, restoring=True)
            else:
                failed = self._driver.send([inverses[i] for i in sent], indexes)
            failures = {sent[i]: exc for i, exc in failed.items()}
        except (OSError, KeyError) as exc:
            failures = dict.fromkeys(range(len(inverses)), NetlinkError(errno.EIO, str(exc)))
        else:
            after, late = self._appended_after_all(
                {i: inverses[i] for i in sent if i not in failures}, indexes,
                {i: inverses[i] for i in left})
            failures.update(after)
            left = {i: why for i, why in left.items() if i not in late}
        failures = {**left, **failures}
        if failures:
            raise UndoFailure([f"{inverses[i]}: {failures[i]}" for i in sorted(failures)],
                              [c for i, c in enumerate(inverses) if i not in failures])

    def _behind_other_nexthops(self, inverses: Sequence[Change]) -> dict[int, str]:
        """The undo's adds of IPv6 gateway routes to a slot holding another program's
        gateway route, by position, each with why it is not put back: the kernel appends
        it as that route's sibling, dumped as one route under the other one's protocol
        (``ip -6 route`` lists it second), where k3snet can no longer tell its own (a
        route k3snet's delete took back from other nexthops appended to it: it stayed
        in place for good, never deleted again). The traffic goes through the other
        route meanwhile."""
        wanted = {i: change.subject for i, change in enumerate(inverses)
                  if change.action == "add" and isinstance(change.subject, Route)
                  and change.subject.family == 6 and change.subject.gateway is not None}
        if not wanted:
            return {}
        names = {index: link.name for index, link in self._routes.links().items()}
        tables = frozenset(route.table for route in wanted.values())
        others: dict[tuple[Any, ...], Route | RouteBlock] = {}
        try:
            dumps = self._driver.routes(tables, names)
        except OSError:
            # Refused (a dump interrupted time after time): put back as sent, the dump
            # after the undo looking again. It gave the whole undo up, nothing sent.
            return {}
        for dumped in dumps:
            if isinstance(dumped, Siblings):
                others.setdefault(dumped.whole.slot, dumped.whole)
            # ``ra``: the kernel's advertised routes take no sibling; a userspace one
            # does, which the dump after the undo finds (_appended_after_all).
            elif (isinstance(dumped, Route) and dumped.family == 6
                  and dumped.gateway is not None
                  and dumped.protocol not in {self.protocol, _RA_PROTOCOL}):
                others.setdefault(dumped.key, dumped)
        return {i: (f"not put back: IPv6 would append it to the {others[route.key].describe()}"
                    " as a nexthop k3snet can no longer tell apart (the kernel lists it "
                    "under that route's protocol); the traffic goes through that route")
                for i, route in wanted.items() if route.key in others}

    def _appended_after_all(self, restored: Mapping[int, Change],
                            indexes: Mapping[str, int],
                            waiting: Mapping[int, Change] | None = None
                            ) -> tuple[dict[int, str], set[int]]:
        """The undo's IPv6 gateway routes put back that the kernel appended behind
        another program's gateway route all the same, taken back out, by position, each
        with why it is not put back; and the positions of ``waiting`` put back. The dump
        before the undo cannot tell them all: a ``proto ra`` route NetworkManager or
        systemd-networkd installs takes appended nexthops where the kernel's own
        (``RTF_ADDRCONF``, the same protocol in a dump) does not, and the other program
        may have added its route meanwhile. k3snet's
        nexthop is taken back (the kernel matches protocol and gateway per sibling);
        left there, k3snet could no longer tell it its own, and no plan deleted it.

        ``waiting``: the adds left out before the undo (:meth:`_behind_other_nexthops`).
        One whose slot this dump finds free (the other program deleted its route
        meanwhile) is sent then, once, and one more dump checks it the same way. No
        further round: the answer is always that of a dump after the last add."""
        wanted = {i: change.subject for i, change in restored.items()
                  if change.action == "add" and isinstance(change.subject, Route)
                  and change.subject.family == 6 and change.subject.gateway is not None}
        late_changes = waiting or {}
        late = {i: change.subject for i, change in late_changes.items()
                if isinstance(change.subject, Route)}
        if not wanted and not late:
            return {}, set()
        tables = frozenset(route.table for route in (*wanted.values(), *late.values()))
        slots = self._slots(tables)
        if slots is None:
            return {}, set()  # not told: put back as sent
        said = self._take_out(wanted, *slots, indexes)
        ours, behind = slots
        free = {i: route for i, route in late.items()
                if route.key not in ours and route.key not in behind}
        if not free:
            return said, set()
        order = sorted(free)
        try:
            if getattr(self._driver, "restores", False):
                failed: Mapping[int, object] = self._driver.send(  # type: ignore[call-arg]
                    [late_changes[i] for i in order], indexes, restoring=True)
            else:
                failed = self._driver.send([late_changes[i] for i in order], indexes)
        except (OSError, KeyError):
            return said, set()  # left out, as the dump before the undo said
        sent = {i: free[i] for n, i in enumerate(order) if n not in failed}
        slots = self._slots(tables)
        if slots is None:
            return said, set(sent)  # not told: put back as sent
        taken = self._take_out(sent, *slots, indexes)
        return {**said, **taken}, {i for i in sent if i not in taken}

    def _slots(self, tables: frozenset[int]) -> tuple[
            set[tuple[Any, ...]], dict[tuple[Any, ...], Route | RouteBlock]] | None:
        """The slots of ``tables`` holding a route of k3snet's first, and the other routes
        by slot (``None``: the dump refused)."""
        names = {index: link.name for index, link in self._routes.links().items()}
        ours: set[tuple[Any, ...]] = set()
        behind: dict[tuple[Any, ...], Route | RouteBlock] = {}
        try:
            dumps = self._driver.routes(tables, names)
        except OSError:
            return None
        for dumped in dumps:
            first = dumped.first if isinstance(dumped, Siblings) else dumped
            if isinstance(first, Route) and first.protocol == self.protocol:
                ours.add(first.key)
            else:
                whole = dumped.whole if isinstance(dumped, Siblings) else dumped
                behind.setdefault(whole.key if isinstance(whole, Route) else whole.slot, whole)
        return ours, behind

    def _take_out(self, wanted: Mapping[int, Route], ours: set[tuple[Any, ...]],
                  behind: Mapping[tuple[Any, ...], Route | RouteBlock],
                  indexes: Mapping[str, int]) -> dict[int, str]:
        """Take back the IPv6 gateway routes of ``wanted`` sent, taken, and k3snet's in
        no dumped route (inside another's: :meth:`_appended_after_all`), saying why each
        is not put back."""
        hidden = {i: route for i, route in wanted.items()
                  if route.family == 6 and route.gateway is not None
                  and route.key not in ours and route.key in behind}
        if not hidden:
            return {}
        order = sorted(hidden)
        try:
            failed: Mapping[int, object] = self._driver.send(
                [Change("delete", route, None) for route in
                 (hidden[i] for i in order)], indexes)
        except (OSError, KeyError) as exc:
            failed = dict.fromkeys(range(len(order)), exc)
        return {i: (f"not put back: IPv6 appended it to the {behind[hidden[i].key].describe()}"
                    " as a nexthop k3snet can no longer tell apart (the kernel lists it under "
                    "that route's protocol), "
                    + (f"and taking it out again failed: {failed[n]}" if n in failed else
                       "and it was taken out again; the traffic goes through that route"))
                for n, i in enumerate(order)}

    def _restore_store(self, snapshot: SysctlState) -> None:
        """Put the sysctl state file back as it was before the apply."""
        with contextlib.suppress(BackendError):
            if self._store.load() == snapshot:
                # Never changed (a full or read-only file system refused the first save):
                # nothing to put back, and writing it again would fail the same way,
                # reported as a failed rollback of a node that is exactly as it was.
                return
        try:
            self._store.save(snapshot)
        except BackendError as exc:
            raise UndoFailure([str(exc)]) from exc

    def _execute_sysctl(self, change: Change, undo: Compensation) -> None:
        """Make one sysctl change and record its undo; a failure is undone at once."""
        restores: list[Callable[[], None]] = []
        recorded = False
        try:
            self._apply_sysctl(change, restores)
            undo.record(change, restores[0] if restores else None)
            recorded = True
        except (OSError, BackendError) as exc:
            problems = []
            for restore in restores:  # it wrote before failing: take that back first
                try:
                    restore()
                except (OSError, BackendError) as again:
                    problems.append(f"restoring {change.subject}: {again}")
            name = getattr(change.subject, "name", "")
            undo.fail(change, _reason(exc, f"write {name}"), exc, extra_problems=problems)
        except BaseException:
            # Interrupted between the write and its record (also as the record began: a
            # signal's handler runs at any call): the value is taken back here, as the
            # state file is by the compensation (which never saw this step).
            if not recorded:
                for restore in restores:
                    with contextlib.suppress(OSError, BackendError):
                        restore()
            raise

    def _record_takeover(self, state: SysctlState, name: str, previous: str | None,
                         switches: Mapping[str, str]) -> None:
        """Record in ``state`` what taking ``name`` over needs besides its previous value."""
        alias = ALIASES.get(name)
        if alias in state.owned:
            # Owned under its other name already: the switches as that take-over found them.
            state.spread[name] = dict(state.spread.get(str(alias), {}))
            state.spread_links[name] = dict(state.spread_links.get(str(alias), {}))
            state.links.pop(name, None)
            return
        # What the spread overwrites and the previous value alone would not give back;
        # an inverted switch always (the previous value never gives it back).
        inverted = SPREADING_INVERTED.get(name, ())
        state.spread[name] = {switch: held for switch, held in switches.items()
                              if held != previous or switch in inverted}
        # The interface taken over on: another one of the same name later is not it.
        # So for a switch of one interface (default's stable_secret: every
        # interface's addr_gen_mode), whose record follows the interface's rename.
        state.links.pop(name, None)
        state.spread_links.pop(name, None)
        interface = interface_of(name)
        on_links = {switch: of for switch in state.spread[name]
                    if (of := interface_of(switch)) is not None}
        if interface is None and not on_links:
            return
        indexes = self._link_ids()
        if interface is not None and interface in indexes:
            state.links[name] = indexes[interface]
        recorded = {switch: indexes[of] for switch, of in on_links.items() if of in indexes}
        if recorded:
            state.spread_links[name] = recorded

    def _apply_sysctl(self, change: Change, restores: list[Callable[[], None]]) -> None:
        """Make one sysctl change; ``restores`` gets its undo before anything is written."""
        subject = change.subject
        assert isinstance(subject, Sysctl)
        name = subject.name
        state, _indexes = self._load_sysctls()  # saved below: a rename followed is kept
        root = self.proc_sys
        # The forwarding switches a write of ``name`` overwrites (none for most sysctls).
        current, switches = self._runner.call(
            lambda: (read_sysctls(root, [name])[name], spread_values(root, name)))
        self._count()
        if current is None:
            raise BackendError(f"no such sysctl in {self._where} ({root / subject.path})")
        restore: str = current

        def undo() -> None:
            def write() -> None:
                if restore:  # "": a stable_secret none set, which no write unsets
                    write_sysctl(root, name, restore)
                restore_spread(root, switches)

            self._runner.call(write)
            self._count()

        alias = ALIASES.get(name)
        if change.action == "delete":
            recorded = state.owned[name][1]
            # Still owned under its other name: the value stays what k3snet wants there,
            # and goes back when that name is given back. A stable_secret none set
            # before (no record: none is unset) still gives back the addr_gen_mode
            # its write set to 2.
            secret = unset_secret(name)
            if (recorded is not None or secret) and alias not in state.owned:
                targets = _given_back_switches(state, name, current, switches, secret=secret)

                def give_back() -> None:
                    # An empty value is written as a newline: a write of nothing
                    # changes nothing (ip_local_reserved_ports kept its ports).
                    if recorded is not None:
                        write_sysctl(root, name, recorded or "\n")
                    restore_spread(root, targets)

                self._write_sysctl(give_back, undo, restores)
            del state.owned[name]
            state.spread.pop(name, None)
            state.spread_links.pop(name, None)
            state.links.pop(name, None)
            state.released.add(name)
            self._store.save(state)
            return
        value = str(subject.value)
        previous = _previous(state, change.action, name, current)
        # The record goes first: a crash after the write must not lose the previous value.
        state.owned[name] = (value, previous)
        if change.action == "add":
            self._record_takeover(state, name, previous, switches)
        state.released.discard(name)
        self._store.save(state)
        self._write_sysctl(lambda: write_sysctl(root, name, value), undo, restores)
        stored = normal(name, self._runner.call(lambda: read_sysctls(root, [name]))[name])
        self._count()
        if stored != value:
            shown = stored if stored is None else shown_value(name, stored)
            raise BackendError(f"the kernel stored {shown!r} for {name}, not "
                               f"{shown_value(name, value)!r}")
        self._keep_owned_switches(state, name, switches)

    def _keep_owned_switches(self, state: SysctlState, name: str,
                             switches: Mapping[str, str]) -> None:
        """Write back the switches k3snet owns that the write of ``name`` spread over
        (``switches``: :func:`spread_values` before it; the write's undo restores them).

        An interface's ``forwarding = 0`` beside ``ip_forward = 1``: a plan writing both
        writes it after the switch, but a repair of the switch alone left it at the
        spread value until the next run."""
        indexes = self._link_indexes(state)
        kept = {switch: state.owned[switch][0] for switch in switches
                if switch != name and state.owns(switch, indexes)}
        if kept:
            root = self.proc_sys
            self._runner.call(lambda: restore_spread(root, kept))
            self._count()

    def _write_sysctl(self, write: Callable[[], None], undo: Callable[[], None],
                      restores: list[Callable[[], None]]) -> None:
        """Run ``write`` (sysctl writes) in the namespace, ``undo`` in ``restores`` from before
        it (an interruption right after it must find it) until the write is refused: a
        write(2) to /proc/sys that fails changed nothing, and its "undo", refused for
        the same reason (no CAP_NET_ADMIN, a read-only /proc/sys), was reported as
        a failed rollback, "the system may be half-changed", of a node left as it was."""
        restores.append(undo)
        try:
            self._runner.call(write)
        except OSError:
            restores.remove(undo)
            raise
        self._count()


def _of_kind(plan: Plan, kind: str) -> Sequence[Change]:
    """The changes of ``plan`` about ``kind``, in order (the plan's own tuple when all are)."""
    if kind not in plan.kinds:
        return ()
    if len(plan.kinds) == 1:
        return plan.changes
    return [c for c in plan.changes if c.kind == kind]


def _given_back_switches(state: SysctlState, name: str, current: str,
                         switches: Mapping[str, str], *, secret: bool) -> dict[str, str]:
    """The switches (:func:`spread_values`: ``switches``, as they are now) the delete of
    owned ``name`` (``current``: its value now) writes back, with their values.

    A switch still at the value the spread gave it goes back to what it held when
    k3snet took over (the previous value, unless recorded otherwise); one changed since
    keeps its value, which the write of ``name`` would overwrite."""
    recorded = state.owned[name][1]
    spread_value = normal(name, current)
    originals = state.spread.get(name, {})
    # An inverted switch is always recorded, and so is a stable_secret's addr_gen_mode
    # (the secret is no mode): without a record (a file of an older version, an
    # interface made since the take-over) the kernel's own spread stands, as it did
    # then. A mode without one keeps its value now: the write of a previous secret
    # sets every one to 2 again (default's), and an interface made since, whose mode
    # an admin set, was left at 2.
    if secret:
        return {switch: originals[switch] if switch in originals
                and value == spread_to(name, switch, "") else value
                for switch, value in switches.items() if switch not in state.owned}
    inverted = SPREADING_INVERTED.get(name, ())
    return {switch: originals.get(switch, recorded or "")
            if spread_value is not None
            and value == spread_to(name, switch, spread_value) else value
            for switch, value in switches.items() if switch not in state.owned
            and (switch in originals or switch not in inverted)}


def _previous(state: SysctlState, action: str, name: str, current: str) -> str | None:
    """What ``name`` held before k3snet took it over: the record when it is owned; for a
    take-over the value now, or the record of its other name (:data:`ALIASES`) when
    k3snet owns that already (the value now is k3snet's own write under that name)."""
    if action != "add":
        return state.owned[name][1]
    alias = ALIASES.get(name)
    if alias in state.owned:
        return state.owned[str(alias)][1]
    if not current and unset_secret(name):
        return None  # a stable_secret none set: nothing to give back (none is unset)
    # An empty value (ip_local_reserved_ports: no port reserved) is recorded as such,
    # not as no record: destroy gives it back.
    return "" if not current.strip() else normal(name, current)


def _alias_problems(changes: Sequence[Change], owned: Mapping[str, str]) -> list[str]:
    """The sysctl ``changes`` that leave two names of one kernel value (:data:`ALIASES`)
    owned with different values (``owned``: the owned values now, by name).

    The kernel holds one value: after the plan one of the two reads back as changed,
    and every apply writes it again, turning forwarding on and off in turn.
    """
    after = dict(owned)
    for change in changes:
        name = str(change.subject.key[1])
        if isinstance(change.after, Sysctl):
            after[name] = change.after.value
        else:
            after.pop(name, None)
    return owned_apart(after, [(str(c.subject.key[1]), c) for c in changes])


def _enables_ipv6_forwarding(change: Change) -> bool:
    """Whether ``change`` writes a non-zero IPv6 ``forwarding`` of ``all`` or of an
    interface (``default``'s only sets what new interfaces start with)."""
    after = change.after
    if not isinstance(after, Sysctl) or after.value == "0":
        return False
    parts = after.path.split("/")
    return (len(parts) == 5 and parts[:3] == ["net", "ipv6", "conf"]
            and parts[4] == "forwarding" and parts[3] != "default")


def _reason(exc: BaseException, doing: str) -> str:
    """``exc`` in the kit's words (:func:`~k3snet.backends.kit.translate_errors`): what
    was being done, and CAP_NET_ADMIN named when the kernel said "not permitted"."""
    try:
        with translate_errors(doing, capability=_CAPABILITY):
            raise exc
    except BackendError as translated:
        return str(translated)
    return str(exc)  # not reached: translate_errors always raises


def _simulate(owned: dict[tuple[Any, ...], Any], change: Change) -> None:
    """What ``change`` does to the owned objects by key (for checks of later changes)."""
    if change.after is not None:
        owned[change.after.key] = change.after
    elif change.before is not None and owned.get(change.before.key) == change.before:
        del owned[change.before.key]


class _GatewayTables:
    """The routes of some tables by table, family, prefix length and destination: where
    the kernel looks a route's gateway up (longest prefix first), and its answers
    (:meth:`reachable`) kept until a route holding that gateway comes or goes."""

    def __init__(self, tables: frozenset[int], local: Mapping[Address, set[str]] | None = None,
                 broadcasts: frozenset[Address] = frozenset(),
                 rules: Sequence[LookupRule] = ()) -> None:
        self.tables = tables
        self.rules = rules or _DEFAULT_RULES  # in the kernel's order
        self.local: Mapping[Address, set[str]] = local or {}  # the devices by local address
        self.broadcasts = broadcasts  # IPv4: of the local addresses' prefixes
        # (table, family) -> prefix length -> the destination's address as an integer.
        self._routes: dict[tuple[int, int], dict[int, dict[int, list[Route | RouteBlock]]]]
        self._routes = {}
        self._lengths: dict[tuple[int, int], list[int]] = {}  # longest first
        # (table, gateway, device) -> the answer, and the rule ending the lookup before a
        # table holding the gateway (None: no rule did): thousands of routes share one.
        self._answers: dict[tuple[int, Address, str | None], tuple[bool, LookupRule | None]]
        self._answers = {}
        # The gateways answered, as sorted integers per family, and their answers' keys:
        # a route's destination finds those it holds by bisection.
        self._answered: dict[int, list[int]] = {4: [], 6: []}
        self._keys: dict[tuple[int, int], list[tuple[int, Address, str | None]]] = {}

    def add(self, route: Route | RouteBlock) -> None:
        if route.table in self.tables:
            dst = route.destination
            lengths = self._routes.setdefault((route.table, dst.version), {})
            if dst.prefixlen not in lengths:
                self._lengths[route.table, dst.version] = sorted(
                    [*lengths, dst.prefixlen], reverse=True)
            (lengths.setdefault(dst.prefixlen, {})
             .setdefault(int(dst.network_address), []).append(route))
            self._forget(route)

    def remove(self, route: Route | RouteBlock) -> None:
        dst = route.destination
        found = self._routes.get((route.table, dst.version), {}).get(dst.prefixlen, {})
        with contextlib.suppress(KeyError, ValueError):
            found[int(dst.network_address)].remove(route)
            self._forget(route)

    def _forget(self, route: Route | RouteBlock) -> None:
        """Drop the answers for the gateways ``route`` holds (whatever their table)."""
        dst = route.destination
        answered = self._answered[dst.version]
        first = int(dst.network_address)
        start = bisect.bisect_left(answered, first)
        end = bisect.bisect_right(answered, first + (1 << (dst.max_prefixlen - dst.prefixlen)) - 1,
                                  lo=start)
        for gateway in answered[start:end]:
            for key in self._keys.pop((dst.version, gateway)):
                del self._answers[key]
        del answered[start:end]

    def covering(self, table: int, address: Address) -> Iterable[list[Route | RouteBlock]]:
        """The routes of ``table`` whose destination holds ``address``, a list per
        destination, the longest prefix first."""
        lengths = self._routes.get((table, address.version), {})
        value, bits = int(address), address.max_prefixlen
        for length in self._lengths.get((table, address.version), ()):
            routes = lengths[length].get(value >> (bits - length) << (bits - length))
            if routes:
                yield routes

    def inside(self, table: int, network: Network, *, taking: bool = False) -> bool:
        """Whether ``table`` holds a route to a longer prefix within ``network``
        (``taking``: one that is no ``throw`` route, which sends its lookups on)."""
        lengths = self._routes.get((table, network.version), {})
        first, bits = int(network.network_address), network.max_prefixlen
        last = first + (1 << (bits - network.prefixlen)) - 1
        return any(first <= value <= last for length, found in lengths.items()
                   if length > network.prefixlen for value, routes in found.items()
                   if routes and not (taking and all(_throw(r) for r in routes)))

    def reachable(self, route: Route) -> bool:
        """Whether the kernel takes ``route``'s gateway as on-link (``fib_check_nh_v4_gw``,
        ``ip6_route_check_nh``, through the policy rules).

        It looks the gateway up in the route's own table (IPv4: unless ``main``), then,
        when that finds nothing fit, through the rules in their order (:meth:`_walk`):
        the first whose table answers decides, a ``blackhole``, ``unreachable`` or
        ``prohibit`` rule matching it ends the lookup refused (:meth:`refused_by`).
        With a device, only routes through it are looked at. IPv4 skips routes of scope
        ``universe`` (those via a gateway) and takes a device route of scope ``link`` or
        ``host``, or a local address (the ``local`` table), never the broadcast address
        of a local prefix (the ``local`` table's broadcast route); IPv6 takes a table's
        best match (longest prefix, then lowest metric) when it is a device route,
        without a gateway, and goes on to the next rule only when the table has none.
        """
        gateway, device = route.gateway, route.device
        assert gateway is not None
        key = (route.table, gateway, device)
        answer = self._answers.get(key)
        if answer is None:
            answer = self._answers[key] = (
                self._reachable4(route.table, gateway, device) if gateway.version == 4
                else self._reachable6(route.table, gateway, device))
            keys = self._keys.setdefault((gateway.version, int(gateway)), [])
            if not keys:
                bisect.insort(self._answered[gateway.version], int(gateway))
            keys.append(key)
        return answer[0]

    def refused_by(self, route: Route) -> LookupRule | None:
        """The rule whose action ended the lookup of ``route``'s gateway before a table
        holding it (after :meth:`reachable` said no), else ``None``."""
        assert route.gateway is not None
        answer = self._answers.get((route.table, route.gateway, route.device))
        return None if answer is None else answer[1]

    def _walk(self, gateway: Address, device: str | None,
              answer: Callable[[int], bool | None]) -> tuple[bool, LookupRule | None]:
        """The kernel's lookup of ``gateway`` through the rules (``fib_rules_lookup``):
        each matching rule in order, its table asked (``answer``: True found fit, False
        found unfit, the lookup ends there; None: nothing there, the next rule) or its
        action ending the lookup. IPv4's lookup comes in by ``lo``, IPv6's by no
        interface; its out-interface is ``device``.

        A rule that only *may* match (not ``exact``), or one met after a ``goto`` or
        ``nop`` (not followed), never ends it refused: a gateway the kernel may take is
        no problem of the dry run (the kernel answers at the apply, taken back whole on
        a refusal)."""
        incoming = "lo" if gateway.version == 4 else None
        sure = True  # every rule before was followed as the kernel does
        for rule in self.rules:
            if not rule.matches(gateway, incoming, device):
                continue
            ends = sure and rule.exact
            if rule.action == FR_ACT_TO_TBL:
                found = answer(rule.table)
                if found:
                    return True, None
                if found is False and ends:
                    return False, None
            elif rule.action in _REJECTING:
                if ends:
                    return False, rule
            else:  # goto, nop, or an action unknown here: where the lookup goes on
                sure = False
        return False, None

    def _reachable4(self, table: int, gateway: Address, device: str | None
                    ) -> tuple[bool, LookupRule | None]:
        def direct(looked: int) -> bool:
            return any((isinstance(r, Route) and r.gateway is None and r.device is not None
                        and r.scope != "universe" and device in (None, r.device))
                       or (device is None and _unnamed_device_route(r))
                       for routes in self.covering(looked, gateway) for r in routes)

        def answer(looked: int) -> bool | None:
            if looked == _LOCAL_TABLE:
                if gateway in self.broadcasts:
                    return False
                local = self.local.get(gateway)
                return True if local is not None and device in (None, *local) else None
            return True if direct(looked) else None

        if table != MAIN_TABLE and direct(table):
            return True, None
        return self._walk(gateway, device, answer)

    def _reachable6(self, table: int, gateway: Address, device: str | None
                    ) -> tuple[bool, LookupRule | None]:
        def answer(looked: int) -> bool | None:
            for routes in self.covering(looked, gateway):
                here = [r for r in routes
                        if device is None or getattr(r, "device", None) == device]
                if here:
                    best = min(here, key=lambda r: r.metric or 0)
                    # A gateway or a reject route: the kernel's answer for this table.
                    return ((isinstance(best, Route) and best.gateway is None)
                            or _unnamed_device_route(best))
            return None

        if answer(table):
            return True, None
        return self._walk(gateway, device, answer)


class _LocalTable:
    """The routes of table ``local`` by family, prefix length and destination."""

    def __init__(self, routes: Iterable[LocalRoute]) -> None:
        self.routes = tuple(routes)
        self._routes: dict[tuple[int, int], dict[int, list[LocalRoute]]] = {}
        # Routes sending some lookups on to the next rule: throw alone. One a lookup may
        # pass by (dead, or without carrier where ignore_routes_with_linkdown is set)
        # sends it back to a shorter prefix of this very table (the kernel's backtrack).
        self._throws: list[LocalRoute] = []
        for route in self.routes:
            dst = route.destination
            (self._routes.setdefault((dst.version, dst.prefixlen), {})
             .setdefault(int(dst.network_address), []).append(route))
            if route.kind == "throw":
                self._throws.append(route)
        self._lengths = {version: sorted((length for v, length in self._routes
                                          if v == version), reverse=True)
                         for version in (4, 6)}

    def throw_at(self, dst: Network) -> LocalRoute | None:
        """A ``throw`` route of ``dst``'s very prefix (``None``: none)."""
        found = self._routes.get((dst.version, dst.prefixlen), {}).get(int(dst.network_address))
        return next((r for r in found or () if r.kind == "throw"), None)

    def holder(self, dst: Network) -> LocalRoute | None:
        """The route a lookup of every address of ``dst`` ends at in this table: the
        longest prefix holding all of it, one flagged ``dead`` or ``linkdown`` passed by
        as the kernel's lookup goes back to a shorter prefix (``None``: none, or a
        ``throw`` route may send some lookups on)."""
        version, prefixlen = dst.version, dst.prefixlen
        value, bits = int(dst.network_address), 32 if version == 4 else 128
        for length in self._lengths[version]:
            if length > prefixlen:
                continue
            routes = self._routes[version, length].get(value >> (bits - length) << (bits - length))
            live = [r for r in routes or () if not (r.down or r.hops_down)]
            if live:
                # The longest prefix wins within the table: a throw route wider than this
                # one sends no lookup of ``dst`` on, one inside ``dst`` some.
                if any(r.kind == "throw" for r in live) or any(
                        r.destination.prefixlen > prefixlen and r.destination.overlaps(dst)
                        for r in self._throws):
                    return None
                return live[0]
        return None


def _taken_by_rule(route: Route, rules: Sequence[LookupRule], lookup: _GatewayTables,
                   local: _LocalTable | None = None, *, merge: _Merge | None = None,
                   pods: Sequence[Network] | None = None,
                   ) -> tuple[LookupRule, Route | RouteBlock | LocalRoute | None,
                              list[LookupRule], bool] | None:
    """The administrator's rule that takes every lookup of ``route``'s destination
    reaching it before its table, with the route of the rule's table holding the
    destination (``None``: a rejecting rule) and the rules before it that may take some
    of those lookups first (to another table or refusing them); ``None`` when none
    surely does (:meth:`NetlinkBackend._rule_warnings`). The ``local`` rule's table
    (``local``) takes them when one of its routes holds the destination: for IPv4, while
    the kernel may keep it merged with ``main`` (``merge`` not surely apart; ``None``:
    apart), only a route of the destination's own prefix surely does (the longest prefix
    of the two wins). A rule of a ``from`` holding every pod CIDR (``pods``) of the
    destination's family (``ip rule add from 10.42.0.0/16 lookup 100``: the pods'
    forwarded packets all meet it) counts as one every lookup meets; one holding part
    of them as one that may take some first; none without ``pods``. The last of the
    answer: whether a rule no pod's packet meets was passed by (``from`` the node's own
    address, ``lookup main``): the answer holds for the pods' packets alone."""
    dst = route.destination
    earlier: list[LookupRule] = []
    mine = [p for p in pods or () if p.version == dst.version]
    passed = False
    for rule in (r for r in rules if r.family == dst.version and (
            r.destination is None or r.destination.overlaps(dst))):
        meet = _pods_meet(rule, mine)
        if meet is None:
            passed = True
            continue
        sure = ((rule.exact or meet is True)
                and not rule.mark_mask and rule.in_interface is None
                and rule.out_interface is None
                and (rule.destination is None
                     or dst.subnet_of(rule.destination)))  # type: ignore[arg-type]
        if rule.action == FR_ACT_TO_TBL:
            if rule.table in (route.table, 0):  # 0: an L3 master device's table
                return None
            # While merged a throw's answer ends the merged lookup, which goes on to table
            # default alone (fib_lookup): a route of that table takes it then.
            held = (_held_locally(dst, local, merge, throw=route.table != _DEFAULT_TABLE)
                    if sure and rule.table == _LOCAL_TABLE else None)
            if held is not None:
                return rule, held, earlier, passed
            if not sure or rule.table == _LOCAL_TABLE:
                if rule not in _DEFAULT_RULES:
                    earlier.append(rule)
                continue
            holder = _holder(lookup, rule.table, dst)
            if holder is None:
                if rule not in _DEFAULT_RULES and _takes_part(lookup, rule.table, dst):
                    earlier.append(rule)
                continue
            return None if rule in _DEFAULT_RULES else (rule, holder, earlier, passed)
        if rule.action in _REJECTING:
            if sure and rule not in _DEFAULT_RULES:
                return rule, None, earlier, passed
            earlier.append(rule)
        else:  # goto, nop: not followed
            return None
    return None


def _pods_meet(rule: LookupRule, pods: Sequence[Network]) -> bool | None:
    """Whether the pods' packets (from ``pods``, of the rule's family) meet ``rule`` by its
    ``from``: all of them (``True``), none (``None``), or some, or it cannot be told
    (``False``: no ``from`` read, or no pod CIDR known)."""
    source = rule.source
    if source is None or not pods:
        return False
    if not any(p.overlaps(source) for p in pods):
        return None
    return all(p.subnet_of(source) for p in pods)  # type: ignore[arg-type]


def _why_taken(route: Route, rule: LookupRule, holder: Route | RouteBlock | LocalRoute | None,
               earlier: Sequence[LookupRule], pods: Sequence[Network] = ()) -> str:
    """What takes the lookups of ``route`` (:func:`_taken_by_rule`'s answer), said of the
    rule and its table alone: an earlier rule (Calico's inverted one) may take the
    lookups before it, which the text claimed went to its table. ``pods``: the pod CIDRs,
    when the answer holds for their packets alone (a rule of another source passed by)."""
    where = f"table {_table_name(route.table)}"
    lookups = f"every lookup of {network_text(route.destination)} reaching it"
    if rule.source is not None or pods:  # the pods' packets alone
        held = [rule.source] if rule.source is not None else pods
        lookups = (f"every lookup of {network_text(route.destination)} from the pods "
                   f"({', '.join(network_text(p) for p in held)}) reaching it")
    if holder is None:
        why = (f"the policy rule at priority {rule.priority} "
               f"({_REJECTING[rule.action]}), before {where}, refuses {lookups}")
    else:
        why = (f"the policy rule at priority {rule.priority}, before {where}, sends "
               f"{lookups} to table {_table_name(rule.table)}, whose "
               f"{holder.describe()} holds it")
    if earlier:
        named = ", ".join(str(r.priority) for r in earlier)
        why += (f"; the rule{'s' if len(earlier) > 1 else ''} at priority {named} "
                "before it may take some first")
    if not isinstance(holder, LocalRoute):
        return f"{why} (ip rule)"
    if holder.kind == "throw":  # only ever said while IPv4's local and main are merged
        return (f"table local, merged with table main while no policy rule was ever added "
                f"or deleted (/proc/net/fib_triestat), holds the {holder.describe()} at its "
                f"very prefix, looked at first: the kernel ends the lookup of "
                f"{network_text(route.destination)} there and looks in table default alone, "
                f"unreachable without a route there (ip route show table local)")
    if holder.kind == "local":
        why += " (the node takes the packets as its own)"
    return f"{why} (ip route show table local)"


def _ipv4_tables_merged(reads: int = _TRIESTAT_READS) -> bool | None:
    """:func:`~.codec.ipv4_tables_merged` of the calling thread's namespace (``None``:
    not to be read, a kernel without ``fib_triestat``). The kernel walks the merged trie
    once per name without holding the routes still: a route added or deleted between
    the two walks shows merged tables apart (one read in a few hundred with routes
    changing a few hundred times a second, one in ten under a flood of changes), so
    apart is said only when ``reads`` reads in a row say so (a long flood still passes
    three, one call in fifty); one read showing them merged is taken as sure (two tries
    apart show the same statistics by chance alone: the same prefixes in both). The
    kernel never merges tables apart again."""
    found: bool | None = None
    for _ in range(reads):
        try:
            with open(_FIB_TRIESTAT, encoding="ascii", errors="replace") as stats:
                found = ipv4_tables_merged(stats.read())
        except OSError:
            return None
        if found is not False:
            return found
    return found


def _held_locally(dst: Network, local: _LocalTable | None, merge: _Merge | None, *,
                  throw: bool = True) -> LocalRoute | None:
    """The route of table ``local`` every lookup of ``dst`` surely ends at: IPv4 keeps
    ``local`` and ``main`` merged until a policy rule is first added or deleted (``merge``
    not surely apart, ``None``: apart; the longer prefix of the two wins, ``local`` on the
    same one; ``throw``: one of table local at ``dst``'s prefix ends the lookup then).
    ``merge`` is asked only when the answer hangs on it: IPv6 has no merged tables."""
    if local is None:
        return None
    if throw and dst.version == 4 and merge is not None:
        # Surely merged: the kernel looks in that one table, table local's routes first
        # in a slot, and after a throw route's answer in table default alone (fib_lookup;
        # unreachable without a route there).
        thrown = local.throw_at(dst)
        if thrown is not None and merge.merged:
            return thrown
    held = local.holder(dst)
    if held is None or (dst.version == 4 and held.destination.prefixlen != dst.prefixlen
                        and merge is not None and not merge.apart):
        return None
    return held


class _Merge:
    """Whether IPv4 keeps tables ``local`` and ``main`` merged in the namespace: apart
    when a policy rule of an administrator's is present (``split``), else as
    :func:`_ipv4_tables_merged` says, read at the first question and only then (the
    kernel walks every IPv4 route for it: a node whose table local holds no route a
    judgement hangs on reads nothing). ``read``: its answer, ``()`` while unread."""

    def __init__(self, runner: NetnsRunner, *, split: bool) -> None:
        self._runner = runner
        self._split = split
        self.read: tuple[bool | None, ...] = ()

    def _state(self) -> bool | None:
        if self._split:
            return False
        if not self.read:
            self.read = (self._runner.call(_ipv4_tables_merged),)
        return self.read[0]

    @property
    def merged(self) -> bool:
        """Surely merged (an unreadable file: not sure)."""
        return self._state() is True

    @property
    def apart(self) -> bool:
        """Surely apart (an unreadable file: taken as merged, a wider route unnamed)."""
        return self._state() is False


def _takes_part(lookup: _GatewayTables, table: int, dst: Network) -> bool:
    """Whether ``table`` may end the lookup of some address of ``dst`` (a route for it
    other than a ``throw`` one, whose lookups go on to the next rule), not of all."""
    if lookup.inside(table, dst, taking=True):
        return True
    for routes in lookup.covering(table, dst.network_address):
        if routes[0].destination.prefixlen <= dst.prefixlen:  # else inside: judged above
            return not _throw(min(routes, key=lambda r: r.metric or 0))
    return False


def _throw(route: Route | RouteBlock) -> bool:
    """Whether ``route`` is a ``throw`` route (its lookups go on to the next rule)."""
    return isinstance(route, RouteBlock) and route.what == "throw"


def _holder(lookup: _GatewayTables, table: int, dst: Network) -> Route | RouteBlock | None:
    """The route of ``table`` a lookup of any address of ``dst`` ends at: the longest
    prefix holding all of it, lowest metric (``None`` when there is none, or a ``throw``
    route sends the lookup on, or a longer prefix holds part of ``dst``)."""
    if lookup.inside(table, dst):
        return None  # part of it goes elsewhere: not every lookup ends at one route
    for routes in lookup.covering(table, dst.network_address):
        best = min(routes, key=lambda r: r.metric or 0)
        return None if _throw(best) else best
    return None


def _unnamed_device_route(route: Route | RouteBlock) -> bool:
    """Whether ``route`` is a device route through a device the model cannot name (a
    route given with a device names one it can: never that one)."""
    return isinstance(route, RouteBlock) and route.what == UNNAMED_DEVICE_ROUTE


def _route_problems(change: Change, route: Route, links: Mapping[str, Link],
                    lookup: _GatewayTables) -> list[str]:
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
    if gateway.version == 6 and (route.device in lookup.local.get(gateway, ())
                                 if gateway.is_link_local else gateway in lookup.local):
        # A link-local one is judged on the route's device alone: `via fe80::1 dev eth1`
        # is taken with fe80::1 on eth0 (the router on eth1's link may have it too).
        problems.append(f"{change}: gateway {gateway} is a local address")
    elif gateway.version == 6 and gateway.is_link_local:
        pass  # on every link; Route itself refuses one without a device
    elif not lookup.reachable(route):
        where = f"device {route.device!r}" if route.device else "any device"
        tables = [_table_name(t) for t in dict.fromkeys(
            (route.table, MAIN_TABLE, *((_DEFAULT_TABLE,) if gateway.version == 4 else ())))]
        named = f"{', '.join(tables[:-1])} or {tables[-1]}" if len(tables) > 1 else tables[0]
        rule = lookup.refused_by(route)
        why = (f"the policy rule at priority {rule.priority} ({_REJECTING[rule.action]}) ends "
               "the kernel's lookup of it before a table holding it"
               if rule is not None else
               ("it is the broadcast address of a local prefix" if gateway in lookup.broadcasts
                else f"no device route of scope link or host in table {named} holds it, nor "
                "is it a local address") if gateway.version == 4 else
               f"its best match in table {named} is no device route (a route via a gateway, "
               "a reject route, or none)")
        problems.append(f"{change}: gateway {gateway} is not on-link on {where}: {why} "
                        "(the kernel looks the gateway up in the route's table, then "
                        "through the policy rules)")
    elif gateway in lookup.local:
        # Taken, and the gateway ignored (`ip route get` shows no `via`: the node asks
        # the link for every destination itself); IPv6 refuses it, above.
        problems.append(f"{change}: gateway {gateway} is a local address (the kernel takes "
                        "such an IPv4 route but ignores the gateway: it sends to every "
                        "destination as if it were on the link)")
    return problems


_SOURCE_FIX = ("the kernel looks up the longest destination first, then the longest `from` "
               "holding the packet's source in that destination's routes; delete that "
               "route (ip -6 route del ...), or narrow its `from` and destination "
               "away from the pods and k3snet's destination")


def _source_taking(route: Route, other: SourceRoute, pods: Sequence[Network] | None,
                   froms: Sequence[Network] = ()) -> str | None:
    """What the source-specific route ``other`` does to the pods' packets that ``route``
    (k3snet's) should carry, or ``None`` (see :meth:`NetlinkBackend._source_warnings`).
    ``froms``: the ``from`` of every source route in ``route``'s table at ``route``'s
    destination (``other``'s among them when it is there): a source none holds passes
    every route there by."""
    dst = route.destination
    if (other.table != route.table or dst.version != 6 or not dst.overlaps(other.destination)
            or other.destination.prefixlen < dst.prefixlen):  # k3snet's longer prefix wins
        return None
    ours = "k3snet's " + route.describe()
    inside = [p for p in pods if p.overlaps(other.source)] if pods is not None else None
    taken = ("takes the pods' packets from " + (
        network_text(other.source) if inside is None
        else ", ".join(network_text(p if p.prefixlen >= other.source.prefixlen
                                    else other.source) for p in inside)))
    if other.destination == dst:
        return _source_at(f"{taken} to {network_text(dst)} instead of {ours}", ours,
                          inside, pods, froms or (other.source,))
    if inside is not None and not inside:
        return None  # a `from` no pod's packet comes from: the rest pass to k3snet's
    return f"{taken} to {network_text(other.destination)} instead of {ours}"


def _source_at(taken: str, ours: str, inside: Sequence[Network] | None,
               pods: Sequence[Network] | None, froms: Sequence[Network]) -> str | None:
    """:func:`_source_taking`'s answer for a source route at k3snet's very destination
    (``taken``: what it takes, ``inside``: the pods its ``from`` overlaps): the sources
    no ``from`` there holds pass every route there by."""
    why = "no `from` at that destination holds them: they go to a shorter prefix, or nowhere"
    if pods is None:
        return f"{taken}, and the packets from any other source pass that route by ({why})"
    left = ", ".join(
        network_text(p) + "".join(f" outside {network_text(f)}" for f in froms
                                  if f.overlaps(p))
        for p in pods if _uncovered(p, froms))
    if not inside:
        # None when another `from` there holds every pod: this one takes none of them.
        return (f"makes the kernel pass by {ours} for the pods' packets from {left} ({why})"
                if left else None)
    return f"{taken}, and the pods' packets from {left} pass that route by ({why})" if left \
        else taken


def _uncovered(pod: Network, froms: Sequence[Network]) -> bool:
    """Whether some address of ``pod`` is in none of ``froms`` (prefixes nest or are
    apart: what is left of ``pod`` is cut by each in turn)."""
    left = [pod]
    for held in froms:
        rest: list[Network] = []
        for part in left:
            if part.version != held.version or not part.overlaps(held):
                rest.append(part)
            elif not part.subnet_of(held):  # type: ignore[arg-type]
                rest.extend(part.address_exclude(held))  # type: ignore[arg-type]
        left = rest
    return bool(left)


def _pod_cidrs(value: Iterable[str | Network]) -> tuple[Network, ...]:
    """The ``pod_cidrs`` option: CIDRs."""
    if isinstance(value, str):
        value = [value]
    try:
        return tuple(parse_network(v) for v in value)
    except (ModelError, ValueError, TypeError) as exc:
        raise BackendError(f"pod_cidrs: {exc}") from exc


def _table_name(table: int) -> str:
    """``table`` as ``ip route`` names it (``main``, ``default``, ``local``, or its
    number)."""
    return {MAIN_TABLE: "main", _DEFAULT_TABLE: "default", _LOCAL_TABLE: "local"}.get(
        table, str(table))


def _slot(route: Route | RouteBlock) -> tuple[Any, ...]:
    """Where the kernel holds ``route`` (table, destination, metric): a Route's key."""
    return route.slot if isinstance(route, RouteBlock) else route.key


@contextlib.contextmanager
def _held_until_recorded() -> Iterator[None]:
    """Within the block (a kernel step and the record of its undo), in the main thread,
    SIGINT, SIGTERM and SIGHUP wait for its end, then act (:func:`held_after_commit`,
    marked at once): the step is among those taken back. Elsewhere (a caller's thread,
    where no handler runs) nothing is held."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with held_after_commit():
        committing()  # this block's own, the innermost of the main thread's
        yield
