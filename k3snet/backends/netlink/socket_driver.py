"""The default driver: rtnetlink over raw ``AF_NETLINK`` sockets (the stdlib only).

Requests are batched: up to 1024 go out in one ``sendmsg`` and only the last asks
for an acknowledgement (the kernel handles the whole datagram before ``sendmsg``
returns and answers every failure anyway). A second socket listens to route,
link and address notifications, so the backend can keep its route view warm, and to
netconf ones (IPv4's and IPv6's), so it reads the ``forwarding`` switches (and
the sysctls of a change token) only after one changed.
The sockets are created inside the target namespace (by the namespace's worker
thread) and belong to it whatever thread uses them later.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final

from k3snet.backends.netlink.codec import (
    HDR,
    I32,
    MONITOR_GROUPS,
    NETLINK_ADD_MEMBERSHIP,
    NETLINK_CAP_ACK,
    NETLINK_EXT_ACK,
    NETLINK_GET_STRICT_CHK,
    NETLINK_ROUTE,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_DUMP_INTR,
    NLM_F_REQUEST,
    NLMSG,
    NLMSG_DONE,
    NLMSG_ERROR,
    RT_TABLE_LOCAL,
    RTM_DELNETCONF,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETROUTE,
    RTM_GETRULE,
    RTM_NEWNETCONF,
    RTNLGRP_IPV4_NETCONF,
    RTNLGRP_IPV6_NETCONF,
    RTNLGRP_NEXTHOP,
    SO_RCVBUFFORCE,
    SO_SNDBUFFORCE,
    SOL_NETLINK,
    Interface,
    Link,
    LocalRoute,
    LookupRule,
    NetlinkError,
    RouteShape,
    Siblings,
    SourceRoute,
    address_dump_request,
    decode_address,
    decode_link,
    decode_local_route,
    decode_route,
    decode_rule,
    decode_source_route,
    error_of,
    link_dump_request,
    messages,
    route_dump_request,
    route_message,
    rule_dump_request,
)
from k3snet.backends.netlink.driver import DUMP_RETRIES
from k3snet.backends.netns import NetnsRunner
from k3snet.model.route import Route, RouteBlock
from k3snet.planner import Change

__all__ = ["SocketDriver", "open_dump_driver", "open_monitor", "open_socket_driver"]

# The socket driver sends a batch in sendmsg calls of at most _BATCH_BYTES (one, for
# routes as the model has them: a request is at most 92 bytes). The socket buffers
# below are sized so that every failure of a batch fits.
_BATCH_BYTES = 128 * 1024
_SNDBUF = 1 << 20
_RCVBUF = 4 << 20
_MONITOR_RCVBUF = 32 << 20
_NETCONF = frozenset({RTM_NEWNETCONF, RTM_DELNETCONF})


def _set_buffer(sock: socket.socket, force: int, plain: int, size: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size)  # root may exceed rmem_max/wmem_max
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, plain, size)


def open_monitor(buffer: int = _MONITOR_RCVBUF) -> socket.socket:
    """A non-blocking socket that receives the route, link, address and nexthop-object
    notifications of the calling thread's namespace, with a receive buffer of ``buffer``
    bytes."""
    monitor = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                            NETLINK_ROUTE)
    try:
        _set_buffer(monitor, SO_RCVBUFFORCE, socket.SO_RCVBUF, buffer)
        monitor.bind((0, MONITOR_GROUPS))
        # A kernel without the group (before 5.3) has no nexthop objects either.
        with contextlib.suppress(OSError):
            monitor.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, RTNLGRP_NEXTHOP)
        monitor.setblocking(False)
    except BaseException:
        monitor.close()
        raise
    return monitor


def _open_request() -> socket.socket:
    """A request socket, in the calling thread's namespace."""
    request = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                            NETLINK_ROUTE)
    try:
        _set_buffer(request, SO_SNDBUFFORCE, socket.SO_SNDBUF, _SNDBUF)
        _set_buffer(request, SO_RCVBUFFORCE, socket.SO_RCVBUF, _RCVBUF)
        for option in (NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK):
            request.setsockopt(SOL_NETLINK, option, 1)
        request.bind((0, 0))
    except BaseException:
        request.close()
        raise
    return request


def _open_sockets() -> tuple[socket.socket, socket.socket, bool, bool]:
    """A request socket and a notification socket, in the calling thread's namespace, and
    whether the latter hears IPv4's and IPv6's netconf changes (RTNLGRP_IPV4_NETCONF,
    RTNLGRP_IPV6_NETCONF: the ``forwarding`` switches, IPv4's ``rp_filter``)."""
    request = _open_request()
    try:
        monitor = open_monitor()
    except BaseException:
        request.close()
        raise
    joined = []
    for group in (RTNLGRP_IPV4_NETCONF, RTNLGRP_IPV6_NETCONF):
        try:
            monitor.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
        except OSError:  # a kernel without it (before 3.8): the switches are read every time
            joined.append(False)
        else:
            joined.append(True)
    return request, monitor, joined[0], joined[1]


def open_socket_driver(runner: NetnsRunner, count: Callable[[], None]) -> SocketDriver:
    """A :class:`SocketDriver` whose sockets ``runner`` created in its namespace."""
    request, monitor, netconf4, netconf6 = runner.call(_open_sockets)
    driver = SocketDriver(request, monitor, count)
    driver.follows_forwarding = netconf4
    driver.follows_netconf = netconf4 and netconf6
    return driver


def open_dump_driver(runner: NetnsRunner) -> SocketDriver:
    """A :class:`SocketDriver` for dumps only (links, addresses, routes): its request
    socket, made in ``runner``'s namespace, and no notification socket (another
    backend's look at the routes, which follows no change)."""
    request = runner.call(_open_request)
    return SocketDriver(request, request, lambda: None)


class SocketDriver:
    """Requests, batches and dumps over one raw rtnetlink socket, plus a notification socket.

    The sockets belong to the namespace they were created in, whatever thread
    uses them later: the backend's thread uses them directly.
    """

    follows_changes: Final = True
    follows_forwarding = False
    """Whether :meth:`notifications` also reports IPv4 ``RTM_NEWNETCONF`` (every change of
    a ``forwarding`` switch): :func:`open_socket_driver`'s joins that group (see
    :class:`~.driver.RouteDriver`)."""
    follows_netconf = False
    """Whether it reports IPv6's ``RTM_NEWNETCONF`` too: every change of a sysctl
    :func:`~.sysctls.announced` names."""

    def __init__(self, request: socket.socket, monitor: socket.socket,
                 count: Callable[[], None]) -> None:
        self.request = request
        self.monitor = monitor
        self.portid: int = request.getsockname()[0]
        self._seq = 0
        self._buf = bytearray(1 << 20)
        self._count = count
        # Per set of tables dumped (the view's, and main's for a check): the last dump's
        # messages (without their header), what each decoded to, and the link names it
        # was decoded with. A message the next dump repeats byte for byte, under the same
        # names, is that route again (decode_route is pure): 10 000 foreign routes are
        # not built again after each change of one.
        self._decoded: dict[frozenset[int] | None, tuple[
            dict[int, str], dict[bytes, Route | RouteBlock | Siblings | None]]] = {}
        # route_dumps(keep=True): each family's dump of every table, for the next
        # routes() of every table, until any notification (or a loss) may make it stale.
        self._kept_dumps: dict[int, list[bytes]] = {}
        # The monitor's overrun (ENOBUFS) a peek met: the kernel reports it once, so
        # notifications() says it in its place.
        self._lost_seen = False

    def close(self) -> None:
        """Close both sockets (idempotent)."""
        self.request.close()
        self.monitor.close()

    def links(self) -> dict[int, Link]:
        """The namespace's links by index."""
        links: dict[int, Link] = {}
        for msg in self.dump(RTM_GETLINK, link_dump_request()):
            link = decode_link(msg)
            if link is not None:
                links[link.index] = link
        return links

    def addresses(self) -> dict[int, list[Interface]]:
        """The namespace's IPv4 and IPv6 addresses by link index."""
        found: dict[int, list[Interface]] = {}
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in self.dump(RTM_GETADDR, address_dump_request(family)):
                decoded = decode_address(msg)
                if decoded is not None:
                    found.setdefault(decoded[0], []).append(decoded[1])
        return found

    def route_dumps(self, *, keep: bool = False) -> list[list[bytes]]:
        """Each family's raw route messages of every table, IPv4's then IPv6's (one
        ``RTM_GETROUTE`` dump each). ``keep``: the next :meth:`routes` of every table
        takes them instead of dumping again, unless a notification came in between
        (:meth:`notifications` drops them: the node facts and the observe of one
        ``k3snet apply`` share one dump)."""
        families = (socket.AF_INET, socket.AF_INET6)
        found = [self.dump(RTM_GETROUTE, route_dump_request(family, None))
                 for family in families]
        self._kept_dumps = dict(zip(families, found, strict=True)) if keep else {}
        return found

    def rules(self) -> list[LookupRule]:
        """The policy rules of both families (:func:`~.codec.decode_rule`), ``local``'s,
        ``main``'s and ``default``'s too, in
        the kernel's order: by priority, those of one priority as dumped (optional: see
        :class:`~.driver.RouteDriver`)."""
        found: list[LookupRule] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                dumped = self.dump(RTM_GETRULE, rule_dump_request(family), missing_ok=True)
            except NetlinkError as exc:
                # IPv6 off at boot (ipv6.disable=1): the kernel keeps no IPv6 rules and
                # refuses their dump; the IPv4 ones read before were dropped with it.
                if family == socket.AF_INET6 and exc.errno == errno.EAFNOSUPPORT:
                    continue
                raise
            found.extend(rule for msg in dumped if (rule := decode_rule(msg)) is not None)
        return sorted(found, key=lambda rule: rule.priority)

    def local_routes(self, names: Mapping[int, str],
                     longest: Mapping[int, int] | None = None) -> list[LocalRoute]:
        """The routes of table ``local``, both families (:func:`~.codec.decode_local_route`):
        one dump each, of that table alone (the kernel filters it, strict checking), a
        few routes per address, those that do not matter to destinations of ``longest``'s
        lengths (by IP version) left undecoded (optional: see
        :class:`~.driver.RouteDriver`)."""
        found: list[LocalRoute] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in self.dump(RTM_GETROUTE, route_dump_request(family, RT_TABLE_LOCAL),
                                 missing_ok=True):
                route = decode_local_route(msg, names, longest)
                if route is not None:
                    found.append(route)
        return found

    def source_routes(self, names: Mapping[int, str]) -> list[SourceRoute]:
        """The IPv6 source-specific routes of every table but ``local``
        (:func:`~.codec.decode_source_route`): one dump of IPv6's routes (optional: see
        :class:`~.driver.RouteDriver`)."""
        return [route for msg in self.dump(RTM_GETROUTE,
                                           route_dump_request(socket.AF_INET6, None),
                                           missing_ok=True)
                if (route := decode_source_route(msg, names)) is not None]

    reads_expected = True
    """:meth:`routes` takes ``expected`` (see :class:`~.driver.RouteDriver`)."""

    def routes(self, tables: frozenset[int] | None, names: Mapping[int, str],
               expected: Mapping[RouteShape, Route] | None = None,
               ) -> list[Route | RouteBlock | Siblings]:
        """The routes of ``tables`` (``None``: all), both families
        (:meth:`~.driver.RouteDriver.routes`); a route of ``expected``
        (:func:`~.codec.expected_routes`) is returned as that very object."""
        found: list[Route | RouteBlock | Siblings] = []
        names = dict(names)
        kept_names, previous = self._decoded.get(tables, ({}, {}))
        if kept_names != names:
            previous = {}
        decoded: dict[bytes, Route | RouteBlock | Siblings | None] = {}
        # A route kept from the last dump that one of ``expected`` equals is that one.
        hinted: dict[Route | RouteBlock | Siblings, Route | RouteBlock | Siblings] = (
            {route: route for route in expected.values()} if expected else {})
        # With strict checking the kernel filters by table itself: one dump per table.
        chosen: Iterable[int | None] = sorted(tables) if tables else (None,)
        kept, self._kept_dumps = self._kept_dumps, {}
        if kept and self._pending():
            kept = {}  # a notification not read yet: the kept dump may be stale
        for family in (socket.AF_INET, socket.AF_INET6):
            for table in chosen:
                request = route_dump_request(family, table)
                dumped = kept.get(family) if table is None else None
                if dumped is None:
                    dumped = self.dump(RTM_GETROUTE, request, missing_ok=True)
                for msg in dumped:
                    body = msg[HDR:]
                    if body in previous:
                        route = previous[body]
                        if hinted and route is not None:
                            route = hinted.get(route, route)
                    else:
                        route = decode_route(msg, names, expected)
                    decoded[body] = route
                    if route is not None:
                        found.append(route)
        self._decoded[tables] = names, decoded
        return found

    restores = True
    """:meth:`send` takes ``restoring`` (see :class:`~.driver.RouteDriver`)."""

    def send(self, changes: Sequence[Change], indexes: Mapping[str, int], *,
             restoring: bool = False) -> dict[int, NetlinkError]:
        """Every change as one request, in as few ``sendmsg`` calls as fit; refusals by
        position (``restoring``: :func:`~.codec.route_message`)."""
        requests = [route_message(change, indexes, restoring=restoring) for change in changes]
        failures: dict[int, NetlinkError] = {}
        start = 0
        while start < len(requests):
            end, size = start, 0
            while end < len(requests) and (end == start or size < _BATCH_BYTES):
                size += len(requests[end][2]) + HDR
                end += 1
            for position, failure in self.send_batch(requests[start:end]).items():
                failures[start + position] = failure
            start = end
        return failures

    def _take_seq(self, count: int = 1) -> int:
        first = self._seq + 1
        self._seq = (self._seq + count) & 0x7FFFFFFF
        if self._seq < first:  # wrapped: start again low, away from old answers
            self._seq = count
            return 1
        return first

    def dump(self, kind: int, body: bytes, *, missing_ok: bool = False) -> list[bytes]:
        """Every message of a dump; retried when the kernel says it was interrupted."""
        for _ in range(DUMP_RETRIES):
            seq = self._take_seq()
            self._count()
            self.request.send(NLMSG.pack(HDR + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP,
                                         seq, 0) + body)
            try:
                found, interrupted = self._collect_dump(seq)
            except NetlinkError as exc:
                if missing_ok and exc.errno == errno.ENOENT:
                    return []
                raise
            if not interrupted:
                return found
        raise NetlinkError(errno.EAGAIN, f"dump interrupted {DUMP_RETRIES} times in a row")

    def _collect_dump(self, seq: int) -> tuple[list[bytes], bool]:
        found: list[bytes] = []
        interrupted = False
        buf = self._buf
        while True:
            size = self.request.recv_into(buf)
            for offset, length, kind, flags, mseq, _pid in messages(buf, size):
                if mseq != seq:
                    continue  # a late answer to an abandoned request
                if flags & NLM_F_DUMP_INTR:
                    interrupted = True
                if kind == NLMSG_DONE:
                    code = -I32.unpack_from(buf, offset + HDR)[0] if length >= HDR + 4 else 0
                    if code:
                        raise NetlinkError(code)
                    return found, interrupted
                msg = bytes(buf[offset:offset + length])
                if kind == NLMSG_ERROR:
                    code, detail = error_of(msg)
                    raise NetlinkError(code or errno.EPROTO, detail)
                found.append(msg)

    def send_batch(self, requests: Sequence[tuple[int, int, bytes]]) -> dict[int, NetlinkError]:
        """Send ``(type, flags, body)`` requests in one sendmsg; the failures, by position.

        Only the last request asks for an acknowledgement: the kernel handles the
        whole datagram before ``sendmsg`` returns and answers every failure, so the
        last acknowledgement (or error) closes the batch.
        """
        first = self._take_seq(len(requests))
        last = first + len(requests) - 1
        parts: list[bytes] = []
        for position, (kind, flags, body) in enumerate(requests):
            ack = NLM_F_ACK if position == len(requests) - 1 else 0
            parts.append(NLMSG.pack(HDR + len(body), kind, NLM_F_REQUEST | flags | ack,
                                    first + position, 0))
            parts.append(body)
        self._count()
        try:
            self.request.send(b"".join(parts))
        except OSError as exc:  # refused as a whole: nothing was handled
            failure = NetlinkError(exc.errno or errno.EIO, "the batch was not sent")
            return dict.fromkeys(range(len(requests)), failure)
        failures: dict[int, NetlinkError] = {}
        buf = self._buf
        while True:
            size = self.request.recv_into(buf)
            for offset, length, kind, _flags, mseq, _pid in messages(buf, size):
                if kind != NLMSG_ERROR or not first <= mseq <= last:
                    continue
                code, detail = error_of(bytes(buf[offset:offset + length]))
                if code:
                    failures[mseq - first] = NetlinkError(code, detail)
                if mseq == last:
                    return failures

    def _pending(self) -> bool:
        """Whether a notification (or the news of lost ones) waits on the monitor socket."""
        try:
            self.monitor.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError as exc:
            # ENOBUFS: some were lost. The kernel says so once (the peek took the error):
            # the next notifications() reports it.
            self._lost_seen = self._lost_seen or exc.errno == errno.ENOBUFS
            return True
        return True

    def notifications(self) -> tuple[list[bytes], bool]:
        """Pending notifications, and whether some were lost (the socket overran)."""
        found: list[bytes] = []
        lost, self._lost_seen = self._lost_seen, False
        routes_moved = False
        buf = self._buf
        while True:
            try:
                size = self.monitor.recv_into(buf, 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                if routes_moved or lost:
                    self._kept_dumps = {}  # something changed: a kept dump may be stale
                return found, lost
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                lost = True
                continue
            for offset, length, kind, *_ in messages(buf, size):
                found.append(bytes(buf[offset:offset + length]))
                # A forwarding switch changed: no route did.
                routes_moved = routes_moved or kind not in _NETCONF
