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
    10 000 routes cost about what ``ip -batch`` costs.

Two drivers
    ``driver="socket"`` (the default) speaks rtnetlink through raw ``AF_NETLINK``
    sockets (the stdlib only), batched as above. ``driver="pyroute2"`` makes the
    same requests, with the same semantics, through :class:`pyroute2.IPRoute`
    (:mod:`k3snet.backends._netlink_pyroute2`), one round trip per change.
    Measured with pyroute2 0.9.7 at 10 000 routes (``benchmarks/bench_routes.py``):
    adding them takes 4.4 s with pyroute2, 84 ms with the socket driver and
    155 ms with ``ip -batch``; a dump 1.6 s against 0.17 s; one change among them
    4 s against 27 ms (pyroute2 gets no notifications here, so the backend dumps
    again on every call). pyroute2 0.9's ``IPRoute`` also keeps one socket *per
    thread*: an instance created inside a namespace's worker thread talks to the
    root namespace when used from another thread. The pyroute2 driver therefore
    creates and uses its ``IPRoute`` only inside that worker thread; a raw socket
    is bound to the namespace it was created in, whatever thread uses it later.

Network namespaces
    The socket driver's sockets are created inside the target namespace by a
    :class:`~k3snet.backends.netns.NetnsRunner` worker thread and used from the
    caller's thread afterwards; the pyroute2 driver runs every call in that
    thread. Sysctls are read and written by that worker thread (``/proc/sys/net``
    resolves against the calling thread's namespace). The main thread never
    changes namespace.

Knowing what we wrote
    With the socket driver, a second socket listens to the kernel's route, link and address
    notifications. After a dump, the backend keeps the route view in memory and
    updates it from the notifications its own requests cause (they carry its port
    id and the route *as the kernel stored it*). Any other notification (another
    program's route, a link or address change, a lost notification) throws the
    view away and the next ``observe`` dumps again. So "1 change among 10 000
    routes" costs one netlink request, and drift is never hidden. (The pyroute2
    driver keeps no view: every call that needs routes dumps them.)

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
import fcntl
import ipaddress
import json
import os
import socket
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, NoReturn, Protocol

import attrs

from k3snet.backends.base import ApplyResult, ensure_capable
from k3snet.backends.kit import FaultHook
from k3snet.backends.netns import NetnsRunner, netns_path
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
from k3snet.model.route import K3SNET_ROUTE_PROTOCOL, Route, RouteScope
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

_STATE_FILE = "sysctl.json"
_STATE_FORMAT = 1

# --- rtnetlink, from linux/netlink.h and linux/rtnetlink.h --------------------------
NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33

NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_CAPPED = 0x100  # in acknowledgements: the request is echoed as its header only
NLM_F_ACK_TLVS = 0x200  # in acknowledgements: extended-ack attributes follow
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSGERR_ATTR_MSG = 1

RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26

RTA_DST = 1
RTA_SRC = 2
RTA_IIF = 3
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_MULTIPATH = 9
RTA_TABLE = 15
RTA_VIA = 18
RTA_ENCAP = 22
RTA_NH_ID = 30
IFLA_IFNAME = 3
IFA_ADDRESS = 1
IFA_LOCAL = 2
NLA_TYPE_MASK = 0x3FFF

RTN_UNICAST = 1
RTM_F_CLONED = 0x200
RT_TABLE_LOCAL = 255
IFF_UP = 0x1

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
_MONITOR_GROUPS = (RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE
                   | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE)

_NLMSG = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst_len, src_len, tos, table,
#                                       protocol, scope, type, flags
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_RTATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")
_HDR = _NLMSG.size

_SCOPE_CODES: Final[Mapping[str, int]] = {"universe": 0, "link": 253, "host": 254}
_SCOPE_NAMES: Final[Mapping[int, RouteScope]] = {0: "universe", 253: "link", 254: "host"}
_FAMILY_CODES: Final[Mapping[int, int]] = {4: socket.AF_INET, 6: socket.AF_INET6}
# Routes whose attributes the Route model has no field for.
_UNMODELLED_ATTRS = frozenset({RTA_SRC, RTA_IIF, RTA_MULTIPATH, RTA_VIA, RTA_ENCAP, RTA_NH_ID})

# The backend hands route changes to its driver in batches of at most this many; the
# socket driver sends a batch in sendmsg calls of at most _BATCH_BYTES (one, for
# routes as the model has them: a request is at most 92 bytes). The socket buffers
# below are sized so that every failure of a batch fits.
_BATCH_MESSAGES = 1024
_BATCH_BYTES = 128 * 1024
_SNDBUF = 1 << 20
_RCVBUF = 4 << 20
_MONITOR_RCVBUF = 32 << 20
_DUMP_RETRIES = 5
_MIN_PROTOCOL = 5  # 0..4 are unspec, redirect, kernel, boot and static: never ours


class _NetlinkError(OSError):
    """A negative acknowledgement: errno plus the kernel's extended-ack message."""

    def __init__(self, code: int, detail: str = "") -> None:
        text = os.strerror(code) + (f" ({detail})" if detail else "")
        super().__init__(code, text)
        self.detail = detail

    def __str__(self) -> str:
        return str(self.strerror)  # "Network is unreachable (Nexthop has invalid gateway)"


# --- encoding and decoding ----------------------------------------------------------


def _attr(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return _RTATTR.pack(length, kind) + data + b"\0" * (-length & 3)


def _attr_u32(kind: int, value: int) -> bytes:
    return _RTATTR.pack(8, kind) + _U32.pack(value)


def _attrs(data: bytes, offset: int) -> dict[int, bytes]:
    """The attributes of a message from ``offset`` on, by type (the last one wins)."""
    found: dict[int, bytes] = {}
    end = len(data)
    while offset + 4 <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < 4 or offset + length > end:
            break
        found[kind & NLA_TYPE_MASK] = data[offset + 4:offset + length]
        offset += (length + 3) & ~3
    return found


def _messages(buf: bytes | bytearray, size: int) -> Iterator[tuple[int, int, int, int, int, int]]:
    """(offset, length, type, flags, seq, pid) of each netlink message in ``buf[:size]``."""
    offset = 0
    while offset + _HDR <= size:
        length, kind, flags, seq, pid = _NLMSG.unpack_from(buf, offset)
        if length < _HDR or offset + length > size:
            return
        yield offset, length, kind, flags, seq, pid
        offset += (length + 3) & ~3


def _error_of(msg: bytes) -> tuple[int, str]:
    """errno (0 for an acknowledgement) and extended-ack text of an ``NLMSG_ERROR``."""
    flags = _NLMSG.unpack_from(msg, 0)[2]
    code = -_I32.unpack_from(msg, _HDR)[0]
    detail = ""
    if flags & NLM_F_ACK_TLVS and len(msg) >= _HDR + 4 + _HDR:
        echoed = _NLMSG.unpack_from(msg, _HDR + 4)[0]
        start = _HDR + 4 + (_HDR if flags & NLM_F_CAPPED else (echoed + 3) & ~3)
        text = _attrs(msg, start).get(NLMSGERR_ATTR_MSG, b"")
        detail = text.rstrip(b"\0").decode(errors="replace")
    return code, detail


def _route_request(route: Route, ifindex: int | None) -> bytes:
    """The body (rtmsg and attributes) of an ``RTM_NEWROUTE``/``RTM_DELROUTE`` for ``route``."""
    dst = route.destination
    table = route.table
    parts = [
        _RTMSG.pack(_FAMILY_CODES[dst.version], dst.prefixlen, 0, 0,
                    table if table < 256 else 0,  # RTA_TABLE carries the full value
                    route.protocol, _SCOPE_CODES[str(route.scope)], RTN_UNICAST, 0),
        _attr(RTA_DST, dst.network_address.packed),
        _attr_u32(RTA_TABLE, table),
        _attr_u32(RTA_PRIORITY, int(route.metric or 0)),
    ]
    if route.gateway is not None:
        parts.append(_attr(RTA_GATEWAY, route.gateway.packed))
    if ifindex is not None:
        parts.append(_attr_u32(RTA_OIF, ifindex))
    return b"".join(parts)


def _route_dump_request(family: int, table: int | None, protocol: int = 0) -> bytes:
    """A strict-checking dump filter: the kernel returns only that table (and protocol)."""
    head = _RTMSG.pack(family, 0, 0, 0, 0 if table is None or table >= 256 else table,
                       protocol, 0, 0, 0)
    return head if table is None else head + _attr_u32(RTA_TABLE, table)


def _route_of(*, family: int, dst_len: int, src_len: int, tos: int, kind: int, flags: int,
              scope: int, protocol: int, table: int, dst: int, gateway: Address | None,
              oif: int | None, metric: int, unmodelled: bool,
              names: Mapping[int, str]) -> Route | None:
    """The Route a decoded ``RTM_NEWROUTE`` describes, or ``None`` if it cannot be modelled.

    The one place that says which kernel routes k3snet models; both drivers decode
    their messages into these fields (``dst``: the destination as an integer, 0
    without ``RTA_DST``; ``unmodelled``: an attribute the model has no field for).
    """
    if (kind != RTN_UNICAST or src_len or tos or flags & RTM_F_CLONED or unmodelled
            or family not in (socket.AF_INET, socket.AF_INET6)):
        return None
    scope_name = _SCOPE_NAMES.get(scope)
    if table in (0, RT_TABLE_LOCAL) or scope_name is None:
        return None
    device: str | None = None
    if oif is not None:
        device = names.get(oif)
        if device is None:
            return None
    try:
        destination: Network = (ipaddress.IPv4Network((dst, dst_len)) if family == socket.AF_INET
                                else ipaddress.IPv6Network((dst, dst_len)))
        return Route(destination, gateway=gateway, device=device, table=table, metric=metric,
                     scope=scope_name, protocol=protocol)
    except (ModelError, ValueError):  # a name or value the model refuses: not ours to manage
        return None


def _decode_route(msg: bytes, names: Mapping[int, str]) -> Route | None:
    """The Route a raw ``RTM_NEWROUTE`` message describes, or ``None`` (see :func:`_route_of`)."""
    family, dst_len, src_len, tos, rtm_table, protocol, scope, kind, flags = (
        _RTMSG.unpack_from(msg, _HDR))
    found = _attrs(msg, _HDR + _RTMSG.size)
    raw_gateway = found.get(RTA_GATEWAY)
    gateway: Address | None = None
    if raw_gateway is not None and family in (socket.AF_INET, socket.AF_INET6):
        gateway = (ipaddress.IPv4Address(raw_gateway) if family == socket.AF_INET
                   else ipaddress.IPv6Address(raw_gateway))
    return _route_of(
        family=family, dst_len=dst_len, src_len=src_len, tos=tos, kind=kind, flags=flags,
        scope=scope, protocol=protocol,
        table=_U32.unpack(found[RTA_TABLE])[0] if RTA_TABLE in found else rtm_table,
        dst=int.from_bytes(found.get(RTA_DST, b""), "big"), gateway=gateway,
        oif=_U32.unpack(found[RTA_OIF])[0] if RTA_OIF in found else None,
        metric=_U32.unpack(found[RTA_PRIORITY])[0] if RTA_PRIORITY in found else 0,
        unmodelled=not _UNMODELLED_ATTRS.isdisjoint(found), names=names)


@attrs.frozen
class _Link:
    index: int
    name: str
    up: bool


def _decode_link(msg: bytes) -> _Link | None:
    _family, _kind, index, flags, _change = _IFINFO.unpack_from(msg, _HDR)
    name = _attrs(msg, _HDR + _IFINFO.size).get(IFLA_IFNAME)
    if name is None:
        return None
    return _Link(index, name.rstrip(b"\0").decode(errors="replace"), bool(flags & IFF_UP))


_Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def _decode_address(msg: bytes) -> tuple[int, _Interface] | None:
    family, prefixlen, _flags, _scope, index = _IFADDR.unpack_from(msg, _HDR)
    found = _attrs(msg, _HDR + _IFADDR.size)
    raw = found.get(IFA_LOCAL) or found.get(IFA_ADDRESS)
    if raw is None:
        return None
    if family == socket.AF_INET:
        return index, ipaddress.IPv4Interface((raw, prefixlen))
    if family == socket.AF_INET6:
        return index, ipaddress.IPv6Interface((raw, prefixlen))
    return None


# --- the sockets --------------------------------------------------------------------


def _set_buffer(sock: socket.socket, force: int, plain: int, size: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size)  # root may exceed rmem_max/wmem_max
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, plain, size)


def _open_sockets() -> tuple[socket.socket, socket.socket]:
    """A request socket and a notification socket, in the calling thread's namespace."""
    request = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                            NETLINK_ROUTE)
    monitor = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                            NETLINK_ROUTE)
    try:
        _set_buffer(request, SO_SNDBUFFORCE, socket.SO_SNDBUF, _SNDBUF)
        _set_buffer(request, SO_RCVBUFFORCE, socket.SO_RCVBUF, _RCVBUF)
        for option in (NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK):
            request.setsockopt(SOL_NETLINK, option, 1)
        request.bind((0, 0))
        _set_buffer(monitor, SO_RCVBUFFORCE, socket.SO_RCVBUF, _MONITOR_RCVBUF)
        monitor.bind((0, _MONITOR_GROUPS))
        monitor.setblocking(False)
    except BaseException:
        request.close()
        monitor.close()
        raise
    return request, monitor


class _RouteDriver(Protocol):
    """Protocol: how the backend reads and writes routes in its namespace.

    Every method acts on the backend's namespace only, and counts each round trip
    to the kernel through the ``count`` callback the driver was built with.
    """

    @property
    def follows_changes(self) -> bool:
        """Whether ``notifications`` reports route, link and address changes (else the
        backend forgets its route view at the start of every call and dumps again)."""
        ...

    @property
    def portid(self) -> int:
        """The netlink port id the kernel's reports of our own requests carry."""
        ...

    def links(self) -> dict[int, _Link]:
        """The namespace's links by index."""
        ...

    def addresses(self) -> dict[int, list[_Interface]]:
        """The namespace's IPv4 and IPv6 addresses by link index."""
        ...

    def routes(self, tables: frozenset[int] | None, names: Mapping[int, str]) -> list[Route]:
        """The modellable routes of ``tables`` (``None``: all), both families."""
        ...

    def send(self, changes: Sequence[Change],
             indexes: Mapping[str, int]) -> dict[int, _NetlinkError]:
        """Make every route change (all are attempted); the kernel's refusals by position.

        Raises OSError when the kernel's answers were lost (outcome unknown).
        """
        ...

    def notifications(self) -> tuple[list[bytes], bool]:
        """Pending raw notifications, and whether some were lost."""
        ...

    def close(self) -> None:
        """Release the driver's sockets (idempotent)."""
        ...


class _SocketDriver:
    """Requests, batches and dumps over one raw rtnetlink socket, plus a notification socket.

    The sockets belong to the namespace they were created in, whatever thread
    uses them later: the backend's thread uses them directly.
    """

    follows_changes: Final = True

    def __init__(self, request: socket.socket, monitor: socket.socket,
                 count: Callable[[], None]) -> None:
        self.request = request
        self.monitor = monitor
        self.portid: int = request.getsockname()[0]
        self._seq = 0
        self._buf = bytearray(1 << 20)
        self._count = count

    def close(self) -> None:
        self.request.close()
        self.monitor.close()

    def links(self) -> dict[int, _Link]:
        links: dict[int, _Link] = {}
        for msg in self.dump(RTM_GETLINK, _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
            link = _decode_link(msg)
            if link is not None:
                links[link.index] = link
        return links

    def addresses(self) -> dict[int, list[_Interface]]:
        found: dict[int, list[_Interface]] = {}
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in self.dump(RTM_GETADDR, _IFADDR.pack(family, 0, 0, 0, 0)):
                decoded = _decode_address(msg)
                if decoded is not None:
                    found.setdefault(decoded[0], []).append(decoded[1])
        return found

    def routes(self, tables: frozenset[int] | None, names: Mapping[int, str]) -> list[Route]:
        found: list[Route] = []
        # With strict checking the kernel filters by table itself: one dump per table.
        chosen: Iterable[int | None] = sorted(tables) if tables else (None,)
        for family in (socket.AF_INET, socket.AF_INET6):
            for table in chosen:
                request = _route_dump_request(family, table)
                for msg in self.dump(RTM_GETROUTE, request, missing_ok=True):
                    route = _decode_route(msg, names)
                    if route is not None:
                        found.append(route)
        return found

    def send(self, changes: Sequence[Change],
             indexes: Mapping[str, int]) -> dict[int, _NetlinkError]:
        requests = [_route_message(change, indexes) for change in changes]
        failures: dict[int, _NetlinkError] = {}
        start = 0
        while start < len(requests):
            end, size = start, 0
            while end < len(requests) and (end == start or size < _BATCH_BYTES):
                size += len(requests[end][2]) + _HDR
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
        for _ in range(_DUMP_RETRIES):
            seq = self._take_seq()
            self._count()
            self.request.send(_NLMSG.pack(_HDR + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP,
                                          seq, 0) + body)
            try:
                found, interrupted = self._collect_dump(seq)
            except _NetlinkError as exc:
                if missing_ok and exc.errno == errno.ENOENT:
                    return []
                raise
            if not interrupted:
                return found
        raise _NetlinkError(errno.EAGAIN, f"dump interrupted {_DUMP_RETRIES} times in a row")

    def _collect_dump(self, seq: int) -> tuple[list[bytes], bool]:
        found: list[bytes] = []
        interrupted = False
        buf = self._buf
        while True:
            size = self.request.recv_into(buf)
            for offset, length, kind, flags, mseq, _pid in _messages(buf, size):
                if mseq != seq:
                    continue  # a late answer to an abandoned request
                if flags & NLM_F_DUMP_INTR:
                    interrupted = True
                if kind == NLMSG_DONE:
                    code = -_I32.unpack_from(buf, offset + _HDR)[0] if length >= _HDR + 4 else 0
                    if code:
                        raise _NetlinkError(code)
                    return found, interrupted
                message = bytes(buf[offset:offset + length])
                if kind == NLMSG_ERROR:
                    code, detail = _error_of(message)
                    raise _NetlinkError(code or errno.EPROTO, detail)
                found.append(message)

    def send_batch(self, requests: Sequence[tuple[int, int, bytes]]) -> dict[int, _NetlinkError]:
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
            parts.append(_NLMSG.pack(_HDR + len(body), kind, NLM_F_REQUEST | flags | ack,
                                     first + position, 0))
            parts.append(body)
        self._count()
        try:
            self.request.send(b"".join(parts))
        except OSError as exc:  # refused as a whole: nothing was handled
            failure = _NetlinkError(exc.errno or errno.EIO, "the batch was not sent")
            return dict.fromkeys(range(len(requests)), failure)
        failures: dict[int, _NetlinkError] = {}
        buf = self._buf
        while True:
            size = self.request.recv_into(buf)
            for offset, length, kind, _flags, mseq, _pid in _messages(buf, size):
                if kind != NLMSG_ERROR or not first <= mseq <= last:
                    continue
                code, detail = _error_of(bytes(buf[offset:offset + length]))
                if code:
                    failures[mseq - first] = _NetlinkError(code, detail)
                if mseq == last:
                    return failures

    def notifications(self) -> tuple[list[bytes], bool]:
        """Pending notifications, and whether some were lost (the socket overran)."""
        found: list[bytes] = []
        lost = False
        buf = self._buf
        while True:
            try:
                size = self.monitor.recv_into(buf, 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return found, lost
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                lost = True
                continue
            found.extend(bytes(buf[offset:offset + length])
                         for offset, length, *_ in _messages(buf, size))


# --- sysctls --------------------------------------------------------------------------


def _sysctl_file(root: Path, name: str) -> Path:
    return root / Sysctl(name, "0").path


def _read_sysctls(root: Path, names: Sequence[str]) -> dict[str, str | None]:
    """Current values under ``root`` (``None`` when absent or unreadable); run in the
    target namespace."""
    values: dict[str, str | None] = {}
    for name in names:
        try:
            values[name] = _sysctl_file(root, name).read_text()
        except OSError:
            values[name] = None
    return values


def _write_sysctl(root: Path, name: str, value: str) -> None:
    """Write ``value`` under ``root``; run in the target namespace.

    No O_CREAT: a sysctl that does not exist is an error, never a new file.
    O_TRUNC is what a shell redirection does (procfs ignores it) and keeps a plain
    file standing in for ``/proc/sys`` exact.
    """
    fd = os.open(_sysctl_file(root, name), os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _normal(name: str, raw: str | None) -> str | None:
    """The model's spelling of a raw kernel value (``None`` when it has none)."""
    if raw is None:
        return None
    try:
        return Sysctl(name, raw).value
    except ModelError:  # an empty value
        return None


@attrs.define
class _SysctlState:
    """The state file's content: owned sysctls ``{name: (value, previous)}`` and names
    k3snet owned once and gave back (reported as foreign from then on)."""

    owned: dict[str, tuple[str, str | None]] = attrs.field(factory=dict)
    released: set[str] = attrs.field(factory=set)

    def copy(self) -> _SysctlState:
        return _SysctlState(dict(self.owned), set(self.released))


class _SysctlStore:
    """The JSON state file of one namespace, written atomically, tied to that namespace.

    The namespace's identity (device and inode of its nsfs file) is stored too: a
    file left by a deleted namespace of the same name is ignored, never trusted.
    """

    def __init__(self, directory: Path, namespace: str | None, identity: str) -> None:
        self.directory = directory
        self.path = directory / _STATE_FILE
        self.namespace = namespace
        self.identity = identity

    def load(self) -> _SysctlState:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return _SysctlState()
        except OSError as exc:
            raise BackendError(f"cannot read the sysctl state file {self.path}: {exc}") from exc
        try:
            data = json.loads(text)
            if data.get("format") != _STATE_FORMAT:
                raise ValueError(f"unknown format {data.get('format')!r}")
            if data.get("identity") != self.identity:
                return _SysctlState()  # left by another namespace of the same name
            owned = {str(name): (str(entry["value"]),
                                 None if entry.get("previous") is None else str(entry["previous"]))
                     for name, entry in data.get("owned", {}).items()}
            released = {str(name) for name in data.get("released", ())}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BackendError(
                f"the sysctl state file {self.path} is corrupt ({exc}); k3snet cannot tell "
                "which sysctls it owns until it is repaired or removed"
            ) from exc
        return _SysctlState(owned, released)

    def save(self, state: _SysctlState) -> None:
        data = {
            "format": _STATE_FORMAT,
            "namespace": self.namespace,
            "identity": self.identity,
            "owned": {name: {"value": value, "previous": previous}
                      for name, (value, previous) in sorted(state.owned.items())},
            "released": sorted(state.released),
        }
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o755)
            temporary = self.path.with_name(f".{_STATE_FILE}.{os.getpid()}.tmp")
            temporary.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
            os.replace(temporary, self.path)
        except OSError as exc:
            raise BackendError(f"cannot write the sysctl state file {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise applies on this namespace's sysctls (between processes)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o755)
            fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise BackendError(f"cannot lock {self.directory}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock


def _namespace_identity(netns: str | None) -> str:
    path = netns_path(netns) if netns is not None else Path("/proc/self/ns/net")
    stat = os.stat(path)
    return f"{stat.st_dev}:{stat.st_ino}"


# --- the backend ----------------------------------------------------------------------


@attrs.define
class _RouteView:
    """Routes in the observed tables: owned by key, foreign as a set."""

    owned: dict[tuple[Any, ...], Route]
    foreign: set[Route]


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
    change and a dump on every call (no kept view), ~50x slower to add 10 000
    routes (``benchmarks/bench_routes.py``); it is created and used only inside
    the namespace's worker thread. Both keep the same semantics (ownership by
    protocol, create-exclusive adds, one-request replaces, deletes naming
    protocol, table, metric, gateway and device, rollback). Sysctls do not
    depend on the driver.

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
        driver: Literal["socket", "pyroute2"] = "socket",
        proc_sys: str | Path = "/proc/sys",
    ) -> None:
        if driver not in ("socket", "pyroute2"):
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
        self._view: _RouteView | None = None
        self._links: dict[int, _Link] | None = None
        self._link_names: dict[int, str] = {}
        self.driver = driver
        self._runner = NetnsRunner(netns)  # raises a clear error if the namespace is missing
        where = f"network namespace {netns!r}" if netns else "the host network namespace"
        self._where = where
        try:
            identity = _namespace_identity(netns)
            self._driver = self._open_driver(driver)
        except OSError as exc:
            self._runner.close()
            raise BackendError(f"cannot open rtnetlink in {where}: {exc}") from exc
        except BaseException:
            self._runner.close()
            raise
        directory = (Path(state_dir) if state_dir is not None
                     else DEFAULT_STATE_ROOT / (netns or "host"))
        self._store = _SysctlStore(directory, netns, identity)

    def _open_driver(self, driver: str) -> _RouteDriver:
        if driver == "pyroute2":
            # Imported here: pyroute2 is an optional dependency (the netlink extra).
            try:
                from k3snet.backends._netlink_pyroute2 import Pyroute2Driver  # noqa: PLC0415
            except ImportError as exc:
                raise BackendError("driver='pyroute2' needs pyroute2 "
                                   "(pip install 'k3snet[netlink]')") from exc
            return Pyroute2Driver(self._runner, self._count)
        request, monitor = self._runner.call(_open_sockets)
        return _SocketDriver(request, monitor, self._count)

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
        self._begin()
        try:
            view = self._route_view()
            owned_sysctls, foreign_sysctls = self._observe_sysctls()
        except OSError as exc:
            raise BackendError(f"cannot observe {self._where}: {exc}") from exc
        return State(owned=[*view.owned.values(), *owned_sysctls],
                     foreign=[*view.foreign, *foreign_sysctls])

    def _count(self) -> None:
        self._operations += 1

    def _begin(self) -> None:
        """Start a public call: a driver that cannot follow changes forgets what it read."""
        if not self._driver.follows_changes:
            self._view = None
            self._links = None

    def _link_table(self) -> dict[int, _Link]:
        self._sync()
        if self._links is None:
            links = self._driver.links()
            self._links = links
            self._link_names = {index: link.name for index, link in links.items()}
        return self._links

    def _route_view(self) -> _RouteView:
        """The routes of the managed tables: kept from notifications, or dumped again."""
        self._sync()
        view = self._view
        if view is None:
            self._link_table()
            view = _RouteView({}, set())
            for route in self._driver.routes(self.tables, self._link_names):
                if self._in_scope(route.table):
                    self._sort_into(view, route)
            self._view = view
            self._sync()  # a change seen while dumping: keep the dump now, dump again next time
        return view

    def _sort_into(self, view: _RouteView, route: Route) -> None:
        if route.protocol == self.protocol and route.key not in view.owned:
            view.owned[route.key] = route
        else:  # foreign, or a second k3snet route in one slot (ip route append): not ours
            view.foreign.add(route)

    def _in_scope(self, table: int) -> bool:
        return self.tables is None or table in self.tables

    def _sync(self) -> None:
        """Apply pending notifications to the kept view; forget it on anyone else's change."""
        messages, lost = self._driver.notifications()
        if lost:
            self._view = None
            self._links = None
            return
        for msg in messages:
            _length, kind, _flags, _seq, pid = _NLMSG.unpack_from(msg, 0)
            if kind in (RTM_NEWLINK, RTM_DELLINK):
                # IPv4 drops routes of a vanished device without a notification.
                self._links = None
                self._view = None
            elif kind in (RTM_NEWADDR, RTM_DELADDR):
                self._view = None  # connected routes come and go without our requests
            elif kind in (RTM_NEWROUTE, RTM_DELROUTE) and self._view is not None:
                self._follow(self._view, kind, pid, msg)

    def _follow(self, view: _RouteView, kind: int, pid: int, msg: bytes) -> None:
        """Update ``view`` from the kernel's report of one of our own requests."""
        if pid != self._driver.portid or self._links is None:
            self._view = None
            return
        # No _link_table() here: it would drain notifications inside this loop.
        route = _decode_route(msg, self._link_names)
        if route is None or route.protocol != self.protocol or not self._in_scope(route.table):
            self._view = None
        elif kind == RTM_NEWROUTE:
            view.owned[route.key] = route
        elif view.owned.get(route.key) == route:
            del view.owned[route.key]
        else:
            self._view = None

    def _observe_sysctls(self) -> tuple[list[Sysctl], list[Sysctl]]:
        data = self._store.load()
        others = sorted((self._watch | data.released) - set(data.owned))
        root = self.proc_sys
        values = self._runner.call(lambda: _read_sysctls(root, [*data.owned, *others]))
        owned: list[Sysctl] = []
        for name, (_value, previous) in sorted(data.owned.items()):
            current = _normal(name, values.get(name))
            if current is not None:  # gone with its interface: nothing left to own
                owned.append(Sysctl(name, current, previous=previous))
        foreign = [Sysctl(name, value) for name in others
                   if (value := _normal(name, values.get(name))) is not None]
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
        self._begin()
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
        view = self._route_view()
        by_index = self._link_table()
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
            if not self._in_scope(route.table):
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
        values = self._runner.call(lambda: _read_sysctls(root, names))
        self._count()
        owned = {name: Sysctl(name, current) for name in data.owned
                 if (current := _normal(name, values.get(name)))}
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
        self._begin()
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
            view = self._route_view()
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
            by_name = {link.name: link.index for link in self._link_table().values()}
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
        current = self._runner.call(lambda: _read_sysctls(root, [name]))[name]
        self._count()
        if current is None:
            raise BackendError(f"no such sysctl in {self._where} ({root / subject.path})")
        restore: str = current

        def undo() -> None:
            self._runner.call(lambda: _write_sysctl(root, name, restore))
            self._count()

        if change.action == "delete":
            recorded = state.owned[name][1]
            if recorded is not None:
                step.undo = undo
                self._runner.call(lambda: _write_sysctl(root, name, recorded))
                self._count()
            del state.owned[name]
            state.released.add(name)
            self._store.save(state)
            return
        value = str(subject.value)
        previous = _normal(name, current) if change.action == "add" else state.owned[name][1]
        # The record goes first: a crash after the write must not lose the previous value.
        state.owned[name] = (value, previous)
        state.released.discard(name)
        self._store.save(state)
        step.undo = undo
        self._runner.call(lambda: _write_sysctl(root, name, value))
        self._count()
        stored = _normal(name, self._runner.call(lambda: _read_sysctls(root, [name]))[name])
        self._count()
        if stored != value:
            raise BackendError(f"the kernel stored {stored!r} for {name}, not {value!r}")

    def _fail(self, failed: Change, reason: str, done: Sequence[_Step],
              snapshot: _SysctlState | None, cause: BaseException | None, *,
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
            indexes = {link.name: link.index for link in self._link_table().values()}
            failures = self._driver.send(inverses, indexes)
        except (OSError, KeyError) as exc:
            failures = dict.fromkeys(range(len(inverses)), _NetlinkError(errno.EIO, str(exc)))
        for i, inverse in enumerate(inverses):
            if i in failures:
                problems.append(f"{inverse}: {failures[i]}")
            else:
                undone.append(inverse)


def _route_message(change: Change, indexes: Mapping[str, int]) -> tuple[int, int, bytes]:
    """The rtnetlink request (type, flags, body) that makes one route change."""
    route = change.subject
    assert isinstance(route, Route)
    ifindex = None if route.device is None else indexes[route.device]
    if change.action == "add":
        return RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, _route_request(route, ifindex)
    if change.action == "replace":
        # No NLM_F_CREATE: a replace must fail if the route it replaces vanished.
        return RTM_NEWROUTE, NLM_F_REPLACE, _route_request(route, ifindex)
    return RTM_DELROUTE, 0, _route_request(route, ifindex)


def _simulate(owned: dict[tuple[Any, ...], Any], change: Change) -> None:
    """What ``change`` does to the owned objects by key (for checks of later changes)."""
    if change.after is not None:
        owned[change.after.key] = change.after
    elif change.before is not None and owned.get(change.before.key) == change.before:
        del owned[change.before.key]


def _route_problems(change: Change, route: Route, links: Mapping[str, _Link],
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
