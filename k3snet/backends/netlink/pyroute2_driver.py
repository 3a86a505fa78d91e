"""The ``pyroute2`` driver of the netlink backend: routes through :class:`pyroute2.IPRoute`.

Chosen with ``NetlinkBackend(..., driver="pyroute2")``; the default socket driver is
much faster (figures in docs/performance.md). This one is for those who want the
well-known library doing the netlink work.

One thread, one namespace
    pyroute2 0.9 keeps its socket and event loop per *thread*: an ``IPRoute``
    created in a namespace's worker thread and used from another thread talks to
    that other thread's namespace (the root one, usually). So the ``IPRoute`` is
    created inside the :class:`~k3snet.backends.netns.NetnsRunner` worker thread,
    every use of it is a job run by that thread, and each job first checks that it
    runs in the thread that created it (:class:`~k3snet.errors.BackendError`
    otherwise). Nothing pyroute2 returns leaves the thread undecoded.

Same semantics as the socket driver
    An add is ``route("add")`` (``NLM_F_CREATE | NLM_F_EXCL``); a replace is
    ``route("change")`` (``NLM_F_REPLACE`` without ``NLM_F_CREATE``: pyroute2's
    ``"replace"`` would create a route that vanished); a delete names protocol,
    table, metric, gateway and device; a rollback's add puts a deleted route back
    with ``NLM_F_CREATE`` alone (:func:`~k3snet.backends.netlink.codec.route_message`).
    Every change of a batch is attempted, like
    the kernel does with the socket driver's batched requests, and refusals are
    reported by position with the kernel's extended-ack text. Dumped messages go
    through the same modelling rules (:func:`~k3snet.backends.netlink.codec.route_of`).

What it does not do
    It subscribes to no notifications, so the backend keeps no route view with it:
    every ``observe``, ``check`` and ``apply`` that needs routes dumps them again.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

from pyroute2 import IPRoute
from pyroute2 import NetlinkError as Pyroute2Error

from k3snet.backends.netlink.codec import (
    FAMILY_CODES,
    IFF_UP,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP_INTR,
    NLM_F_REQUEST,
    RT_TABLE_LOCAL,
    RTM_NEWROUTE,
    RTN_UNICAST,
    SCOPE_CODES,
    UNMODELLED_ATTRS,
    Interface,
    Link,
    LocalRoute,
    LookupRule,
    NetlinkError,
    Siblings,
    SourceRoute,
    decode_local_route,
    decode_rule,
    decode_source_route,
    kernel_name,
    route_of,
)
from k3snet.backends.netlink.driver import DUMP_RETRIES
from k3snet.backends.netns import NetnsRunner
from k3snet.errors import BackendError
from k3snet.model.cidr import Address
from k3snet.model.route import Route, RouteBlock
from k3snet.planner import Change

__all__ = ["Pyroute2Driver"]

T = TypeVar("T")

# pyroute2 names the attributes it knows; newer ones (RTA_NH_ID) come as "UNKNOWN"
# with their type number. Either way: the ones the Route model has no field for.
_UNMODELLED_NAMES: Final = frozenset({"RTA_SRC", "RTA_IIF", "RTA_MULTIPATH", "RTA_VIA",
                                      "RTA_ENCAP", "RTA_NH_ID"})
_UNMODELLED_TYPES: Final = UNMODELLED_ATTRS
_COMMANDS: Final[Mapping[str, str]] = {"add": "add", "replace": "change", "delete": "del"}
_REQUEST: Final = NLM_F_REQUEST | NLM_F_ACK  # what pyroute2's named commands carry


def _error(exc: Pyroute2Error) -> NetlinkError:
    """pyroute2's NetlinkError (not an OSError) as the backend's: errno and ext-ack text."""
    code = int(exc.code) if isinstance(exc.code, int) and exc.code > 0 else errno.EIO
    text = str(exc.args[1]) if len(exc.args) > 1 and exc.args[1] else ""
    return NetlinkError(code, "" if text == os.strerror(code) else text)


# The attributes a route is read from (each as get_attr gives it: the first of its name).
_READ_NAMES: Final = frozenset({"RTA_DST", "RTA_TABLE", "RTA_PRIORITY", "RTA_GATEWAY",
                                "RTA_OIF", "RTA_MULTIPATH"})


def _unmodelled_attr(name: str, attr: Any) -> bool:
    if name in _UNMODELLED_NAMES:
        return True
    if name != "UNKNOWN":
        return False
    value = attr[1]
    return (isinstance(value, Mapping)
            and value.get("header", {}).get("type") in _UNMODELLED_TYPES)


def _route_attrs(msg: Any) -> tuple[dict[str, Any], bool]:
    """The attributes of ``_READ_NAMES`` a route message holds (the first of each name,
    as ``msg.get`` gives it) and whether it holds an unmodelled one, in one pass: each
    ``msg.get`` scanned every attribute (and ``msg["attrs"]`` made the list anew), and
    every value was decoded to look for unmodelled ones, the ``UNKNOWN``'s alone needed
    (together a third of the CPU of a dump's reading)."""
    found: dict[str, Any] = {}
    unmodelled = False
    for attr in msg["attrs"]:
        name = attr[0]
        if name in _READ_NAMES:
            if name not in found:
                found[name] = attr[1]
        elif not unmodelled:
            unmodelled = _unmodelled_attr(name, attr)
    return found, unmodelled


def _hardware_address(msg: Any, name: str) -> str | None:
    """A link's hardware address attribute ``name`` as the socket driver spells it (each
    byte in lower-case hex, ``None`` for none). Read from the attribute's own bytes:
    pyroute2 decodes ``IFLA_ADDRESS`` as six bytes whatever its length, the next
    attribute's two first for an IPv4 tunnel's four (ipip, gre, sit) and the first six
    of an IPv6 tunnel's sixteen."""
    if msg.get_attr(name) is None:
        return None
    nla = msg.nla(name)
    start = nla.offset + 4  # past the attribute's header
    return bytes(nla.data[start:nla.offset + nla["header"]["length"]]).hex(":") or None


def _address(family: int, text: str | None) -> Address | None:
    if text is None:
        return None
    return (ipaddress.IPv4Address(text) if family == socket.AF_INET
            else ipaddress.IPv6Address(text))


def _first_hop(hops: Any) -> tuple[Address | None, int] | None:
    """The gateway and link index of the first nexthop of a decoded ``RTA_MULTIPATH``, as
    :func:`~.codec.first_hop` reads it from the bytes."""
    if not hops:
        return None
    hop = hops[0]
    if any(name != "RTA_GATEWAY" for name, *_ in hop["attrs"]):
        return None
    return _address(socket.AF_INET6, hop.get_attr("RTA_GATEWAY")), hop["oif"]


def _route_from(msg: Any, names: Mapping[int, str]) -> Route | RouteBlock | Siblings | None:
    """What a pyroute2 ``rtmsg`` describes, as :func:`~.codec.route_of` says."""
    family = msg["family"]
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    attrs, unmodelled = _route_attrs(msg)
    first: tuple[Address | None, int] | None = None
    hops = attrs.get("RTA_MULTIPATH")
    if hops is not None:
        if not unmodelled and family == socket.AF_INET6:
            first = _first_hop(hops)
        unmodelled = True
    dst = attrs.get("RTA_DST")
    table = attrs.get("RTA_TABLE")
    metric = attrs.get("RTA_PRIORITY")
    return route_of(
        family=family, dst_len=msg["dst_len"], src_len=msg["src_len"], tos=msg["tos"],
        kind=msg["type"], flags=msg["flags"], scope=msg["scope"], protocol=msg["proto"],
        table=msg["table"] if table is None else table,
        dst=0 if dst is None else int(ipaddress.ip_address(dst)),
        gateway=_address(family, attrs.get("RTA_GATEWAY")), oif=attrs.get("RTA_OIF"),
        metric=0 if metric is None else metric, unmodelled=unmodelled, names=names,
        first=first)


def _raw(msg: Any) -> bytes:
    """The bytes of a message pyroute2 read, its netlink header first (as the kernel
    sent them: what the codec's decoders take)."""
    return bytes(msg.data[msg.offset:msg.offset + msg["header"]["length"]])


def _request(route: Route, ifindex: int | None) -> dict[str, Any]:
    """``IPRoute.route`` keywords naming every field of ``route``, as the socket driver does."""
    dst = route.destination
    request: dict[str, Any] = {
        "family": FAMILY_CODES[dst.version],
        "dst": str(dst.network_address),
        "dst_len": dst.prefixlen,
        "table": route.table,
        "priority": int(route.metric or 0),
        "proto": route.protocol,
        "scope": SCOPE_CODES[str(route.scope)],
        "type": RTN_UNICAST,
    }
    if route.gateway is not None:
        request["gateway"] = str(route.gateway)
    if ifindex is not None:
        request["oif"] = ifindex
    return request


class Pyroute2Driver:
    """Routes through one ``pyroute2.IPRoute`` living in the namespace's worker thread.

    ``count`` is called once per round trip (each request, each dump).
    """

    follows_changes: Final = False
    portid: Final = 0  # no notifications are read: no report to recognise

    def __init__(self, runner: NetnsRunner, count: Callable[[], None]) -> None:
        self._runner = runner
        self._count = count
        self._thread: int | None = None
        self._ipr: Any = None
        # Table local's route messages (their bytes) as the last routes() dump of every
        # table met them, decoded by local_routes() alone (decode_local_route).
        self._local: list[bytes] | None = None
        # IPv6's source-specific route messages (their bytes) as the last routes() dump
        # of every table met them, decoded by source_routes() alone (decode_source_route).
        self._sources: list[bytes] | None = None
        runner.call(self._open)

    def _open(self) -> None:
        self._thread = threading.get_ident()
        try:
            self._ipr = IPRoute(ext_ack=True, strict_check=True)
        except Pyroute2Error as exc:
            raise _error(exc) from exc

    def _run(self, job: Callable[[Any], T]) -> T:
        """Run ``job(ipr)`` in the worker thread that created ``ipr``."""

        def guarded() -> T:
            if threading.get_ident() != self._thread:
                # Another thread's pyroute2 socket would be another namespace's.
                raise BackendError("the pyroute2 driver was used outside the thread that "
                                   "created it (one backend per thread)")
            if self._ipr is None:
                raise BackendError("the pyroute2 driver is closed")
            return job(self._ipr)

        return self._runner.call(guarded)

    def close(self) -> None:
        """Close the ``IPRoute`` in its thread (idempotent)."""
        if self._ipr is None:
            return

        def close(ipr: Any) -> None:
            self._ipr = None
            ipr.close()

        self._run(close)

    def _dump(self, ipr: Any, method: Callable[..., Any], **query: Any) -> list[Any]:
        """Every message of a dump; again when the kernel says it was interrupted."""
        for _ in range(DUMP_RETRIES):
            self._count()
            try:
                messages = list(method("dump", **query))
            except Pyroute2Error as exc:
                raise _error(exc) from exc
            if not any(m["header"]["flags"] & NLM_F_DUMP_INTR for m in messages):
                return messages
        raise NetlinkError(errno.EAGAIN, f"dump interrupted {DUMP_RETRIES} times in a row")

    def _table_dump(self, ipr: Any, family: int, table: int) -> list[Any]:
        """The routes of one table of ``family``, filtered by the kernel: pyroute2 takes
        a dump's ``table`` into a filter of its own, applied after decoding every route
        of the namespace, unless given the filter (``dump_filter``); then the table goes
        into the request, which the kernel checks strictly (none: a table that does not
        exist, ``ENOENT``)."""
        try:
            return self._dump(ipr, ipr.route, family=family, table=table, dump_filter=None)
        except NetlinkError as exc:
            if exc.errno == errno.ENOENT:
                return []
            raise

    def links(self) -> dict[int, Link]:
        """The namespace's links by index."""

        def job(ipr: Any) -> dict[int, Link]:
            links: dict[int, Link] = {}
            for msg in self._dump(ipr, ipr.link):
                name = msg.get("ifname")
                if isinstance(name, bytes):  # pyroute2's when it is no UTF-8: as decode_link
                    name = kernel_name(name)
                if name is not None:
                    info = msg.get_attr("IFLA_LINKINFO")
                    links[msg["index"]] = Link(
                        msg["index"], name, bool(msg["flags"] & IFF_UP),
                        msg.get_attr("IFLA_MASTER"),
                        None if info is None else info.get_attr("IFLA_INFO_KIND"),
                        _hardware_address(msg, "IFLA_ADDRESS"),
                        _hardware_address(msg, "IFLA_PERM_ADDRESS"))
            return links

        return self._run(job)

    def addresses(self) -> dict[int, list[Interface]]:
        """The namespace's IPv4 and IPv6 addresses by link index."""

        def job(ipr: Any) -> dict[int, list[Interface]]:
            found: dict[int, list[Interface]] = {}
            for family in (socket.AF_INET, socket.AF_INET6):
                for msg in self._dump(ipr, ipr.addr, family=family):
                    raw = msg.get("local") or msg.get("address")
                    if raw is None or msg["family"] != family:
                        continue
                    interface: Interface = (
                        ipaddress.IPv4Interface(f"{raw}/{msg['prefixlen']}")
                        if family == socket.AF_INET
                        else ipaddress.IPv6Interface(f"{raw}/{msg['prefixlen']}"))
                    found.setdefault(msg["index"], []).append(interface)
            return found

        return self._run(job)

    def routes(self, tables: frozenset[int] | None,
               names: Mapping[int, str]) -> list[Route | RouteBlock | Siblings]:
        """The routes of ``tables`` (``None``: all), one dump per family
        (:meth:`~.driver.RouteDriver.routes`)."""

        def job(ipr: Any) -> list[Route | RouteBlock | Siblings]:
            found: list[Route | RouteBlock | Siblings] = []
            local: list[bytes] = []
            sources: list[bytes] = []
            for family in (socket.AF_INET, socket.AF_INET6):
                if tables is not None:  # the kernel sends each table's alone
                    for table in sorted(tables):
                        for msg in self._table_dump(ipr, family, table):
                            route = _route_from(msg, names)
                            if route is not None and route.table == table:
                                found.append(route)
                    continue
                for msg in self._dump(ipr, ipr.route, family=family):
                    if msg["table"] == RT_TABLE_LOCAL:  # the header's: 255 fits in it
                        local.append(_raw(msg))  # route_of leaves table local out
                        continue
                    if msg["src_len"]:  # route_of leaves them out
                        sources.append(_raw(msg))
                    route = _route_from(msg, names)
                    if route is not None:
                        found.append(route)
            if tables is None:
                self._local, self._sources = local, sources
            return found

        return self._run(job)

    def local_routes(self, names: Mapping[int, str],
                     longest: Mapping[int, int] | None = None) -> list[LocalRoute]:
        """The routes of table ``local``, both families, read from their messages' bytes
        as the socket driver reads them (:func:`~.codec.decode_local_route`, one decoder
        for both): those the last :meth:`routes` of every table met (its dump holds
        table ``local``'s), else a dump of that table alone; those that do not matter to
        destinations of ``longest``'s lengths left undecoded. The routes dump kept each
        one's bytes alone: decoding thousands of host routes of service addresses there
        (kube-proxy's IPVS mode) cost every observe a quarter of its dump's time, read or
        not, and most of them do not matter."""
        kept = self._local
        if kept is None:
            kept = self._run(lambda ipr: [
                _raw(msg) for family in (socket.AF_INET, socket.AF_INET6)
                for msg in self._table_dump(ipr, family, RT_TABLE_LOCAL)])
        return [route for raw in kept
                if (route := decode_local_route(raw, names, longest)) is not None]

    def source_routes(self, names: Mapping[int, str]) -> list[SourceRoute]:
        """The IPv6 source-specific routes of every table but ``local``, read from their
        messages' bytes as the socket driver reads them (:func:`~.codec.decode_source_route`,
        one decoder for both): those the last :meth:`routes` of every table met (as
        :meth:`local_routes` reads table ``local``), else one dump. A dump of every
        IPv6 route at each look, pyroute2 decoding each, cost the warnings of every pass
        as much as the pass's observe (figures in docs/performance.md)."""
        raws = self._sources
        if raws is None:
            raws = self._run(lambda ipr: [
                _raw(msg) for msg in self._dump(ipr, ipr.route, family=socket.AF_INET6)
                if msg["src_len"]])
        return [route for raw in raws if (route := decode_source_route(raw, names)) is not None]

    def rules(self) -> list[LookupRule]:
        """The policy rules of both families, in the kernel's order, as the socket driver
        reads them (:meth:`.SocketDriver.rules`).

        Each dumped message's own bytes go through :func:`~.codec.decode_rule`: which
        rules may match is said in one place for both drivers (without this, ``check``
        judged gateways by the rules a namespace starts with, and refused a gateway an
        administrator's ``ip rule`` makes on-link, which the kernel takes)."""

        def job(ipr: Any) -> list[LookupRule]:
            found: list[LookupRule] = []
            for family in (socket.AF_INET, socket.AF_INET6):
                try:
                    dumped = self._dump(ipr, ipr.rule, family=family)
                except NetlinkError as exc:
                    if exc.errno == errno.ENOENT or (
                            family == socket.AF_INET6 and exc.errno == errno.EAFNOSUPPORT):
                        continue  # IPv6 off: no rules of it (as the socket's)
                    raise
                for msg in dumped:
                    rule = decode_rule(_raw(msg))
                    if rule is not None:
                        found.append(rule)
            return sorted(found, key=lambda rule: rule.priority)

        return self._run(job)

    restores = True
    """:meth:`send` takes ``restoring`` (see :class:`~.driver.RouteDriver`)."""

    def send(self, changes: Sequence[Change], indexes: Mapping[str, int], *,
             restoring: bool = False) -> dict[int, NetlinkError]:
        """One request per change, all attempted; the kernel's refusals by position
        (``restoring``: an add without ``NLM_F_EXCL``, :func:`~.codec.route_message`).

        Raises OSError when pyroute2 fails otherwise (the outcome is unknown).
        """
        requests: list[tuple[Any, dict[str, Any]]] = []
        for change in changes:
            route = change.subject
            assert isinstance(route, Route)
            ifindex = None if route.device is None else indexes[route.device]
            command: Any = _COMMANDS[change.action]
            if restoring and change.action == "add":
                command = (RTM_NEWROUTE, _REQUEST | NLM_F_CREATE)
            requests.append((command, _request(route, ifindex)))

        def job(ipr: Any) -> dict[int, NetlinkError]:
            failures: dict[int, NetlinkError] = {}
            for position, (command, request) in enumerate(requests):
                self._count()
                try:
                    ipr.route(command, **request)
                except Pyroute2Error as exc:
                    failures[position] = _error(exc)
                except OSError:
                    raise
                except Exception as exc:  # pyroute2's own failures: the outcome is unknown
                    raise OSError(errno.EIO, f"pyroute2: {exc!r}") from exc
            return failures

        return self._run(job)

    def notifications(self) -> tuple[list[bytes], bool]:
        """None are read (``follows_changes`` is false): nothing pending, nothing lost."""
        return [], False
