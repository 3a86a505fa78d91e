"""rtnetlink messages as bytes: the constants, the encoders and the decoders.

Pure: nothing here opens a socket or reads the system, so every function is
tested without root from real kernel dumps recorded under ``tests/data/netlink``.
Both drivers (:mod:`.socket_driver`, :mod:`.pyroute2_driver`) build on it, and
:func:`route_of` is the one place that says which kernel routes k3snet models.

Constants come from ``linux/netlink.h``, ``linux/rtnetlink.h``, ``linux/if_link.h``
``linux/if_addr.h`` and ``linux/fib_rules.h``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterable, Iterator, Mapping
from typing import Final

import attrs

from k3snet._logline import shell_word
from k3snet.errors import ModelError
from k3snet.model import is_interface_name
from k3snet.model.cidr import Address, Network, network_text
from k3snet.model.route import Route, RouteBlock, RouteScope
from k3snet.planner import Change

__all__ = [
    "HDR",
    "NLMSG",
    "UNNAMED_DEVICE_ROUTE",
    "Interface",
    "Link",
    "LocalRoute",
    "LookupRule",
    "NetlinkError",
    "RouteShape",
    "Siblings",
    "SourceRoute",
    "address_dump_request",
    "attr",
    "attr_u32",
    "attrs_of",
    "decode_address",
    "decode_link",
    "decode_local_route",
    "decode_route",
    "decode_rule",
    "decode_source_route",
    "error_of",
    "expected_routes",
    "first_hop",
    "header_of",
    "link_dump_request",
    "local_route_matters",
    "local_route_of",
    "message",
    "messages",
    "multipath_down",
    "route_dump_request",
    "route_message",
    "route_of",
    "route_prefix",
    "route_request",
    "rule_dump_request",
]

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33

NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
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
RTM_NEWNEXTHOP = 104
RTM_DELNEXTHOP = 105
RTM_NEWNETCONF = 80
RTM_DELNETCONF = 81

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
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_PERM_ADDRESS = 54
IFLA_INFO_KIND = 1
IFA_ADDRESS = 1
IFA_LOCAL = 2
NLA_TYPE_MASK = 0x3FFF
RTM_GETRULE = 34
FRA_DST = 1
FRA_SRC = 2
FRA_IIFNAME = 3
FRA_PRIORITY = 6
FRA_FWMARK = 10
FRA_TABLE = 15
FRA_OIFNAME = 17
FRA_L3MDEV = 19
FRA_FLOW = 11
FRA_SUPPRESS_IFGROUP = 13
FRA_SUPPRESS_PREFIXLEN = 14
FRA_FWMASK = 16
FRA_PAD = 18
FRA_PROTOCOL = 21
FR_ACT_TO_TBL = 1
FR_ACT_BLACKHOLE = 6
FR_ACT_UNREACHABLE = 7
FR_ACT_PROHIBIT = 8
FIB_RULE_INVERT = 0x2
# A rule's attributes that leave a gateway's lookup matching whatever they hold (its
# mark 0 and suppressors at -1, unset, are read apart); any other (a user id range,
# ports, an IP protocol, a goto's target, suppress_prefixlength ...): it may match.
_PLAIN_RULE_ATTRS = frozenset({FRA_DST, FRA_IIFNAME, FRA_PRIORITY, FRA_FWMARK, FRA_FLOW,
                               FRA_TABLE, FRA_FWMASK, FRA_OIFNAME, FRA_PAD, FRA_PROTOCOL})

RTN_UNICAST = 1
RTN_THROW = 9
RTM_F_CLONED = 0x200
# A route's nexthop flags in rtm_flags: its device gone down (dead), or without carrier
# (linkdown: skipped by a lookup where ignore_routes_with_linkdown is set).
RTNH_F_DEAD = 0x1
RTNH_F_LINKDOWN = 0x10
RT_TABLE_LOCAL = 255
RT_TABLE_MAIN = 254
IFF_UP = 0x1

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
MONITOR_GROUPS: Final = (RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE
                         | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE)
"""The notification groups the socket driver listens to: links, addresses, routes."""
RTNLGRP_NEXTHOP: Final = 32
"""Nexthop objects' notifications: a group number beyond the bind mask (joined with
``NETLINK_ADD_MEMBERSHIP``). Deleting a nexthop object deletes the IPv4 routes
through it without a route notification."""
RTNLGRP_IPV4_NETCONF: Final = 24
"""IPv4 ``RTM_NEWNETCONF`` notifications: the kernel sends one whenever a ``forwarding``
or ``rp_filter`` switch changes (``net.ipv4.ip_forward``: one for ``all``, ``default``
and every interface), and one for each interface registered or gone (joined by the
socket driver's monitor alone: the facts watch has no use for them)."""
RTNLGRP_IPV6_NETCONF: Final = 25
"""IPv6 ``RTM_NEWNETCONF`` notifications: one whenever a ``forwarding`` switch changes
(``net.ipv6.conf.all.forwarding``: one for ``all`` and every interface)."""

NLMSG: Final = struct.Struct("=IHHII")
"""nlmsghdr: length, type, flags, sequence number, port id."""
RTMSG: Final = struct.Struct("=BBBBBBBBI")
"""rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags."""
IFINFO: Final = struct.Struct("=BxHiII")
"""ifinfomsg: family, type, index, flags, change."""
IFADDR: Final = struct.Struct("=BBBBI")
"""ifaddrmsg: family, prefixlen, flags, scope, index."""
FIB_RULE_HDR: Final = struct.Struct("=BBBBBBBBI")
"""fib_rule_hdr: family, dst_len, src_len, tos, table, res1, res2, action, flags."""
RTATTR: Final = struct.Struct("=HH")
RTNEXTHOP: Final = struct.Struct("=HBBi")  # length, flags, hops (weight - 1), ifindex
U32: Final = struct.Struct("=I")
I32: Final = struct.Struct("=i")
HDR: Final = NLMSG.size

SCOPE_CODES: Final[Mapping[str, int]] = {"universe": 0, "link": 253, "host": 254}
SCOPE_NAMES: Final[Mapping[int, RouteScope]] = {0: "universe", 253: "link", 254: "host"}
FAMILY_CODES: Final[Mapping[int, int]] = {4: socket.AF_INET, 6: socket.AF_INET6}
UNMODELLED_ATTRS: Final = frozenset({RTA_SRC, RTA_IIF, RTA_MULTIPATH, RTA_VIA, RTA_ENCAP,
                                     RTA_NH_ID})
"""Route attributes the Route model has no field for: a route carrying one is a
:class:`~k3snet.model.RouteBlock`."""
ROUTE_TYPES: Final[Mapping[int, str]] = {
    2: "local", 3: "broadcast", 4: "anycast", 5: "multicast", 6: "blackhole",
    7: "unreachable", 8: "prohibit", 9: "throw", 10: "nat", 11: "xresolve"}
"""rtnetlink route types other than unicast, by the names ``ip route`` gives them."""


class NetlinkError(OSError):
    """A negative acknowledgement: errno plus the kernel's extended-ack message."""

    def __init__(self, code: int, detail: str = "") -> None:
        text = os.strerror(code) + (f" ({detail})" if detail else "")
        super().__init__(code, text)
        self.detail = detail

    def __str__(self) -> str:
        return str(self.strerror)  # "Network is unreachable (Nexthop has invalid gateway)"


# --- framing --------------------------------------------------------------------------


def attr(kind: int, data: bytes) -> bytes:
    """One route attribute (rtattr), padded to 4 bytes."""
    length = 4 + len(data)
    return RTATTR.pack(length, kind) + data + b"\0" * (-length & 3)


def attr_u32(kind: int, value: int) -> bytes:
    """One route attribute holding a native-endian u32."""
    return RTATTR.pack(8, kind) + U32.pack(value)


def attrs_of(data: bytes, offset: int) -> dict[int, bytes]:
    """The attributes of a message from ``offset`` on, by type (the last one wins)."""
    found: dict[int, bytes] = {}
    end = len(data)
    while offset + 4 <= end:
        length, kind = RTATTR.unpack_from(data, offset)
        if length < 4 or offset + length > end:
            break
        found[kind & NLA_TYPE_MASK] = data[offset + 4:offset + length]
        offset += (length + 3) & ~3
    return found


def message(kind: int, flags: int, seq: int, body: bytes, pid: int = 0) -> bytes:
    """One netlink message: the header, then ``body``."""
    return NLMSG.pack(HDR + len(body), kind, flags, seq, pid) + body


def header_of(msg: bytes) -> tuple[int, int, int, int, int]:
    """(length, type, flags, seq, pid) of the message at the start of ``msg``."""
    length, kind, flags, seq, pid = NLMSG.unpack_from(msg, 0)
    return length, kind, flags, seq, pid


def messages(buf: bytes | bytearray, size: int) -> Iterator[tuple[int, int, int, int, int, int]]:
    """(offset, length, type, flags, seq, pid) of each netlink message in ``buf[:size]``."""
    offset = 0
    while offset + HDR <= size:
        length, kind, flags, seq, pid = NLMSG.unpack_from(buf, offset)
        if length < HDR or offset + length > size:
            return
        yield offset, length, kind, flags, seq, pid
        offset += (length + 3) & ~3


def error_of(msg: bytes) -> tuple[int, str]:
    """errno (0 for an acknowledgement) and extended-ack text of an ``NLMSG_ERROR``."""
    flags = NLMSG.unpack_from(msg, 0)[2]
    code = -I32.unpack_from(msg, HDR)[0]
    detail = ""
    if flags & NLM_F_ACK_TLVS and len(msg) >= HDR + 4 + HDR:
        echoed = NLMSG.unpack_from(msg, HDR + 4)[0]
        start = HDR + 4 + (HDR if flags & NLM_F_CAPPED else (echoed + 3) & ~3)
        text = attrs_of(msg, start).get(NLMSGERR_ATTR_MSG, b"")
        detail = text.rstrip(b"\0").decode(errors="replace")
    return code, detail


# --- requests -------------------------------------------------------------------------


def route_request(route: Route, ifindex: int | None) -> bytes:
    """The body (rtmsg and attributes) of an ``RTM_NEWROUTE``/``RTM_DELROUTE`` for ``route``."""
    dst = route.destination
    table = route.table
    parts = [
        RTMSG.pack(FAMILY_CODES[dst.version], dst.prefixlen, 0, 0,
                   table if table < 256 else 0,  # RTA_TABLE carries the full value
                   route.protocol, SCOPE_CODES[str(route.scope)], RTN_UNICAST, 0),
        attr(RTA_DST, dst.network_address.packed),
        attr_u32(RTA_TABLE, table),
        attr_u32(RTA_PRIORITY, int(route.metric or 0)),
    ]
    if route.gateway is not None:
        parts.append(attr(RTA_GATEWAY, route.gateway.packed))
    if ifindex is not None:
        parts.append(attr_u32(RTA_OIF, ifindex))
    return b"".join(parts)


def route_message(change: Change, indexes: Mapping[str, int], *,
                  restoring: bool = False) -> tuple[int, int, bytes]:
    """The rtnetlink request (type, flags, body) that makes one route change.

    ``indexes`` maps device names to link indexes. An add may not overwrite
    anything; a replace may not create a route that vanished; a delete names
    every field (protocol included), so the kernel never matches a foreign route.

    ``restoring``: the change undoes one of the same apply, so an add puts back a
    route k3snet deleted. It is ``NLM_F_CREATE`` without ``NLM_F_EXCL``: the kernel
    may hold another route in its slot (table, destination, metric: ``ip route
    append``, a route learned from router advertisements), which refuses an
    exclusive add ("File exists": the rollback failed and the route was lost).
    Without ``NLM_F_EXCL`` IPv4 puts it first in its slot again (where k3snet's
    create-exclusive add had put it) and IPv6 after the routes there; neither
    changes the other route, and both refuse a route equal to one they hold. (IPv6
    would join an IPv6 gateway route into a multipath route with another gateway
    route of the same slot; k3snet's route shared its slot with none when it was
    observed, and an apply undoes its changes within moments.)
    """
    route = change.subject
    assert isinstance(route, Route)
    ifindex = None if route.device is None else indexes[route.device]
    if change.action == "add":
        flags = NLM_F_CREATE if restoring else NLM_F_CREATE | NLM_F_EXCL
        return RTM_NEWROUTE, flags, route_request(route, ifindex)
    if change.action == "replace":
        # No NLM_F_CREATE: a replace must fail if the route it replaces vanished.
        return RTM_NEWROUTE, NLM_F_REPLACE, route_request(route, ifindex)
    return RTM_DELROUTE, 0, route_request(route, ifindex)


def route_dump_request(family: int, table: int | None, protocol: int = 0) -> bytes:
    """A strict-checking dump filter: the kernel returns only that table (and protocol)."""
    head = RTMSG.pack(family, 0, 0, 0, 0 if table is None or table >= 256 else table,
                      protocol, 0, 0, 0)
    return head if table is None else head + attr_u32(RTA_TABLE, table)


def link_dump_request() -> bytes:
    """The body of an ``RTM_GETLINK`` dump of every link."""
    return IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)


def address_dump_request(family: int) -> bytes:
    """The body of an ``RTM_GETADDR`` dump of one family's addresses."""
    return IFADDR.pack(family, 0, 0, 0, 0)


# --- decoding -------------------------------------------------------------------------


@attrs.frozen
class Siblings:
    """An IPv6 multipath route as the kernel dumps it: IPv6 keeps each nexthop as a route
    of its own (``ip -6 route append`` of a gateway route to a slot holding one appends
    it), and its dump sends them as one message with ``RTA_MULTIPATH``, carrying the
    first one's protocol. ``first`` is that route (the first nexthop, with the message's
    protocol), ``whole`` the block the message stands for.

    The backend takes ``first`` for its own when its protocol is k3snet's (another
    program appended nexthops to k3snet's route), and ``whole`` as foreign otherwise:
    k3snet's route stays its own, and its delete (naming protocol and gateway) takes
    back that nexthop alone."""

    first: Route
    whole: RouteBlock

    @property
    def table(self) -> int:
        """The table the route is in."""
        return self.whole.table


def first_hop(multipath: bytes) -> tuple[bytes | None, int] | None:
    """The gateway bytes and link index of the first nexthop of an ``RTA_MULTIPATH``
    attribute; ``None`` when it holds none or its nexthop says more than a gateway
    (an encap, a ``via``, a flow: no Route)."""
    if len(multipath) < RTNEXTHOP.size:
        return None
    length, _flags, _hops, ifindex = RTNEXTHOP.unpack_from(multipath)
    if length < RTNEXTHOP.size or length > len(multipath):
        return None
    found = attrs_of(multipath[:length], RTNEXTHOP.size)
    if found.keys() - {RTA_GATEWAY}:
        return None
    return found.get(RTA_GATEWAY), ifindex


def route_of(*, family: int, dst_len: int, src_len: int, tos: int, kind: int, flags: int,
             scope: int, protocol: int, table: int, dst: int, gateway: Address | None,
             oif: int | None, metric: int, unmodelled: bool,
             names: Mapping[int, str],
             first: tuple[Address | None, int] | None = None,
             ) -> Route | RouteBlock | Siblings | None:
    """The Route a decoded ``RTM_NEWROUTE`` describes; a RouteBlock when it stands at a
    destination but cannot be modelled; ``None`` when it stands at none k3snet writes.
    ``first``: the gateway and link index of the first nexthop of an IPv6 route whose
    one unmodelled attribute is ``RTA_MULTIPATH`` (:func:`first_hop`): such a route is
    :class:`Siblings` when that nexthop is a Route.

    The one place that says which kernel routes k3snet models; both drivers decode
    their messages into these fields (``dst``: the destination as an integer, 0
    without ``RTA_DST``; ``unmodelled``: an attribute the model has no field for).
    Not modelled, a :class:`~k3snet.model.RouteBlock` (what it is, where it is):
    route types other than unicast, multipath, nexthop-object, encap and ``via``
    routes, routes through a device not in ``names`` or that the model refuses (its
    ``device`` the name the kernel holds: the user is told which device it is).
    Left out: the ``local`` table, cached clones, source-specific and TOS routes
    (each in a place of the kernel's tables no route of k3snet's takes; an IPv6
    source-specific route may still take packets off one of k3snet's, which the
    backend's warnings judge from :func:`decode_source_route`).
    """
    if (src_len or tos or flags & RTM_F_CLONED or table in (0, RT_TABLE_LOCAL)
            or family not in (socket.AF_INET, socket.AF_INET6)):
        return None
    destination = _destination(family, dst, dst_len)
    if destination is None:
        return None
    scope_name = SCOPE_NAMES.get(scope)
    device = None if oif is None else names.get(oif)
    what: str | None = None
    named: str | None = None  # the block's device: one whose name the model refuses
    if kind != RTN_UNICAST:
        what = ROUTE_TYPES.get(kind, f"type {kind}")
    elif unmodelled:
        what = "multipath, nexthop-object, encap or via"
    elif scope_name is None:
        what = f"scope {scope}"
    elif oif is not None and device is None:
        what = "unnamed device"
    else:
        try:
            return Route(destination, gateway=gateway, device=device, table=table,
                         metric=metric, scope=scope_name, protocol=protocol)
        except (ModelError, ValueError):  # a name or value the model refuses
            what = "unmodelled"
            if device is not None and not is_interface_name(device):
                # A name the kernel takes and no spec can (``vé``): such a device
                # route still holds gateways (check's lookup, UNNAMED_DEVICE_ROUTE).
                what = (UNNAMED_DEVICE_ROUTE if gateway is None and (
                    family == socket.AF_INET6 or scope_name in ("link", "host"))
                    else "unnamed device")
                named = device  # kept, shown escaped: the user tells which device it is
    try:
        block = RouteBlock(destination, table=table, metric=metric, what=what,
                           protocol=protocol, device=named)
    except (ModelError, ValueError):
        return None
    if first is not None and family == socket.AF_INET6 and kind == RTN_UNICAST:
        sibling = route_of(
            family=family, dst_len=dst_len, src_len=src_len, tos=tos, kind=kind, flags=flags,
            scope=scope, protocol=protocol, table=table, dst=dst, gateway=first[0],
            oif=first[1], metric=metric, unmodelled=False, names=names)
        if isinstance(sibling, Route):
            return Siblings(sibling, block)
    return block


@attrs.frozen
class LocalRoute:
    """A route of table ``local`` (255), which the kernel looks in first: ``kind`` as
    ``ip route`` names its type (``local``: the node takes the packets as its own, as
    an AnyIP route ``ip route add local 10.9.0.0/16 dev lo table local`` does;
    ``unicast``, ``throw``, ...) and its device's name (``None``: none, or one not
    known), and whether its nexthop is flagged ``dead`` or ``linkdown`` (``down``: a
    lookup may pass it by). No :class:`~k3snet.model.Route`: that model refuses the
    kernel's table."""

    destination: Network
    kind: str
    device: str | None
    down: bool = False
    # A multipath route's every nexthop flagged down, its header not (multipath_down):
    # passed by at its own prefix; no throw inside a wider route (the lookup goes back to
    # the wider one in this very table), and not read from the header, as ``down`` is.
    hops_down: bool = False

    def describe(self) -> str:
        """``[KIND ]route DST [dev DEV] table local``, as ``ip route`` shows it."""
        kind = "" if self.kind == "unicast" else f"{self.kind} "
        dev = "" if self.device is None else f" dev {shell_word(self.device)}"
        return f"{kind}route {network_text(self.destination)}{dev} table local"

    def matters(self, longest: Mapping[int, int] | None) -> bool:
        """Whether this route may change a lookup of a destination of at most
        ``longest[version]`` bits (:func:`local_route_matters`)."""
        dst = self.destination
        return local_route_matters(
            socket.AF_INET if dst.version == 4 else socket.AF_INET6, dst.prefixlen,
            RTN_THROW if self.kind == "throw" else RTN_UNICAST, longest)


def local_route_matters(family: int, dst_len: int, kind: int,
                        longest: Mapping[int, int] | None) -> bool:
    """Whether a route of table ``local`` (its header's fields) may change what a lookup
    of a destination of at most ``longest[version]`` bits ends at: one no longer than
    that may hold it, a ``throw`` route inside it may send some lookups on to the next
    rule (``None``: every route matters; one flagged ``dead`` or ``linkdown`` inside it
    sends a lookup back to a shorter prefix of the same table: no matter). The host routes of a
    node's addresses (``local 10.0.0.1``, thousands where kube-proxy's IPVS mode binds
    every service address) are longer than a route of k3snet's and are not decoded."""
    if longest is None or kind == RTN_THROW:
        return True
    version = 4 if family == socket.AF_INET else 6 if family == socket.AF_INET6 else 0
    return dst_len <= longest.get(version, -1)


def ipv4_tables_merged(triestat: str) -> bool | None:
    r"""Whether IPv4 keeps tables ``local`` and ``main`` merged, as ``fib_triestat``
    (``/proc/net/fib_triestat``, of the reading thread's namespace) says: while merged
    both are one trie (``fib_trie_table``'s alias), shown twice with the very same
    statistics under ``Main:`` and ``Local:``; once apart (a policy rule added or
    deleted, ``fib_unmerge``) each shows its own. Equal statistics of two tries apart
    (the same count of leaves, prefixes, nodes, pointers and depths: both holding
    prefixes alike, ``main`` a route for each of table ``local``'s) read as merged: a
    wider ``local`` route left unnamed, and a ``throw`` route of table ``local`` at the
    very prefix of a route of ``main`` named, though it sends the lookup on to ``main``
    then. ``None``: either table missing (no route in it yet), nothing to tell.

    >>> merged = "Main:\n\tLeaves: 6\nLocal:\n\tLeaves: 6\n"
    >>> ipv4_tables_merged(merged), ipv4_tables_merged(merged.replace("6", "5", 1))
    (True, False)
    """
    sections: dict[str, list[str]] = {}
    lines: list[str] | None = None
    for line in triestat.splitlines():
        if line[:1].isspace() or not line.endswith(":"):  # not a table's (or "Counters:")
            if lines is not None:  # before the first: "Basic info: ..."
                lines.append(line)
            continue
        lines = sections.setdefault(line[:-1], [])
    main, local = sections.get("Main"), sections.get("Local")
    if main is None or local is None:
        return None
    return main == local


def multipath_down(multipath: bytes) -> bool:
    """Whether every nexthop of an ``RTA_MULTIPATH`` attribute (one at least) is flagged
    ``dead`` or ``linkdown``: a lookup may pass the route by. The kernel leaves these
    flags out of the header of a multipath route whose nexthops went down one by one
    (IPv4 and IPv6: ``ip route`` shows them on each ``nexthop`` line alone)."""
    offset, seen = 0, False
    while offset + RTNEXTHOP.size <= len(multipath):
        length, flags, _hops, _ifindex = RTNEXTHOP.unpack_from(multipath, offset)
        if length < RTNEXTHOP.size:
            break
        if not flags & (RTNH_F_DEAD | RTNH_F_LINKDOWN):
            return False
        seen = True
        offset += (length + 3) & ~3
    return seen


def _destination(family: int, dst: int, dst_len: int) -> Network | None:
    """A decoded route's destination (``None``: a prefix length the family cannot hold)."""
    try:
        return (ipaddress.IPv4Network((dst, dst_len)) if family == socket.AF_INET
                else ipaddress.IPv6Network((dst, dst_len)))
    except ValueError:
        return None


def local_route_of(*, family: int, dst_len: int, src_len: int, tos: int, kind: int,
                   flags: int, table: int, dst: int, oif: int | None,
                   names: Mapping[int, str], hops_down: bool = False) -> LocalRoute | None:
    """The :class:`LocalRoute` a decoded ``RTM_NEWROUTE`` of table ``local`` describes
    (``None``: another table's, a cached clone, a source-specific or TOS route;
    ``hops_down``: a multipath route's every nexthop flagged down,
    :func:`multipath_down`)."""
    if (table != RT_TABLE_LOCAL or src_len or tos or flags & RTM_F_CLONED
            or family not in (socket.AF_INET, socket.AF_INET6)):
        return None
    destination = _destination(family, dst, dst_len)
    if destination is None:
        return None
    name = "unicast" if kind == RTN_UNICAST else ROUTE_TYPES.get(kind, f"type {kind}")
    return LocalRoute(destination, name, None if oif is None else names.get(oif),
                      down=bool(flags & (RTNH_F_DEAD | RTNH_F_LINKDOWN)), hops_down=hops_down)


def decode_local_route(msg: bytes, names: Mapping[int, str],
                       longest: Mapping[int, int] | None = None) -> LocalRoute | None:
    """What a raw ``RTM_NEWROUTE`` message of table ``local`` describes
    (:func:`local_route_of`; ``None`` too for one that does not matter to destinations
    of ``longest``'s lengths, :func:`local_route_matters`, its attributes not read)."""
    family, dst_len, src_len, tos, rtm_table, _, _, kind, flags = RTMSG.unpack_from(msg, HDR)
    if not local_route_matters(family, dst_len, kind, longest):
        return None
    found = attrs_of(msg, HDR + RTMSG.size)
    return local_route_of(
        family=family, dst_len=dst_len, src_len=src_len, tos=tos, kind=kind, flags=flags,
        table=U32.unpack(found[RTA_TABLE])[0] if RTA_TABLE in found else rtm_table,
        dst=int.from_bytes(found.get(RTA_DST, b""), "big"),
        oif=U32.unpack(found[RTA_OIF])[0] if RTA_OIF in found else None, names=names,
        hops_down=RTA_MULTIPATH in found and multipath_down(found[RTA_MULTIPATH]))


@attrs.frozen
class SourceRoute:
    """An IPv6 source-specific route (``ip -6 route add DST from SRC ...``), which
    :func:`route_of` leaves out of the model: its destination, its ``from`` prefix, its
    table and the route as ``ip -6 route show`` prints it (``text``)."""

    destination: ipaddress.IPv6Network
    source: ipaddress.IPv6Network
    table: int
    text: str


def decode_source_route(msg: bytes, names: Mapping[int, str]) -> SourceRoute | None:
    """The :class:`SourceRoute` of a raw IPv6 ``RTM_NEWROUTE`` message with a ``from``
    prefix (``None`` for any other route, table ``local``'s and cached clones).

    The kernel keeps such routes in a subtree of their destination's node, looked up by
    the packet's source (``fib6_node_lookup_1``): at that destination only the routes
    whose ``from`` holds the source serve, the others (those without ``from`` too) are
    passed over for a shorter prefix."""
    family, dst_len, src_len, _tos, rtm_table, protocol, _scope, kind, flags = (
        RTMSG.unpack_from(msg, HDR))
    if family != socket.AF_INET6 or not src_len or src_len > 128 or dst_len > 128 \
            or flags & RTM_F_CLONED:
        return None
    found = attrs_of(msg, HDR + RTMSG.size)
    table = U32.unpack(found[RTA_TABLE])[0] if RTA_TABLE in found else rtm_table
    if table in (0, RT_TABLE_LOCAL):
        return None
    raw_dst, raw_src = found.get(RTA_DST, bytes(16)), found.get(RTA_SRC)
    if raw_src is None or len(raw_src) != 16 or len(raw_dst) != 16:
        return None
    destination = ipaddress.IPv6Network((raw_dst, dst_len), strict=False)
    source = ipaddress.IPv6Network((raw_src, src_len), strict=False)
    words = [] if kind == RTN_UNICAST else [ROUTE_TYPES.get(kind, f"type {kind}")]
    words += ["default" if not dst_len else network_text(destination),
              "from", network_text(source)]
    gateway = found.get(RTA_GATEWAY)
    if gateway is not None and len(gateway) == 16:
        words += ["via", str(ipaddress.IPv6Address(gateway))]
    if RTA_OIF in found:
        index = U32.unpack(found[RTA_OIF])[0]
        device = names.get(index)
        words += ["dev", shell_word(device) if device is not None else f"if{index}"]
    if RTA_MULTIPATH in found:
        words.append("(multipath)")
    if table != RT_TABLE_MAIN:
        words += ["table", str(table)]
    if protocol not in (0, 3):  # unspec, boot: ip route shows neither
        words += ["proto", str(protocol)]
    words += ["metric", str(U32.unpack(found[RTA_PRIORITY])[0] if RTA_PRIORITY in found
                            else 0)]
    return SourceRoute(destination, source, table, " ".join(words))


RouteShape = tuple[int, int, int, bytes | None, str | None, int, int, int, int]
"""What a route message says of a Route: family, destination length and value, gateway
bytes, device, table, metric, scope and protocol codes (:func:`expected_routes`)."""


def expected_routes(routes: Iterable[Route]) -> dict[RouteShape, Route]:
    """``routes`` by the fields of the message that describes each (for :func:`decode_route`).

    A route whose message has exactly those fields, and nothing :func:`route_of`
    refuses, decodes as that very Route: every field of a Route is one of them (a
    gateway's zone, ``fe80::1%eth0``, is the Route's device already).
    """
    shapes: dict[RouteShape, Route] = {}
    for route in routes:
        dst, gateway = route.destination, route.gateway
        shapes[(FAMILY_CODES[dst.version], dst.prefixlen, int(dst.network_address),
                None if gateway is None else gateway.packed, route.device, route.table,
                int(route.metric or 0), SCOPE_CODES[str(route.scope)], route.protocol)] = route
    return shapes


UNNAMED_DEVICE_ROUTE: Final = "device route, unnamed device"
"""A :class:`~k3snet.model.RouteBlock`'s ``what`` for a device route (no gateway; IPv4: of
scope ``link`` or ``host``) through a device whose name the kernel takes and the model
refuses (UTF-8 beyond ASCII, bytes that are no UTF-8): the kernel takes a gateway it
holds as on-link, and so does the backend's ``check``."""


def decode_route(msg: bytes, names: Mapping[int, str],
                 expected: Mapping[RouteShape, Route] | None = None,
                 ) -> Route | RouteBlock | Siblings | None:
    """What a raw ``RTM_NEWROUTE`` message describes, as :func:`route_of` says.

    With ``expected`` (:func:`expected_routes`), a message that is exactly one of
    those routes' is that Route, taken without building a new one.
    """
    family, dst_len, src_len, tos, rtm_table, protocol, scope, kind, flags = (
        RTMSG.unpack_from(msg, HDR))
    found = attrs_of(msg, HDR + RTMSG.size)
    raw_gateway = found.get(RTA_GATEWAY)
    table = U32.unpack(found[RTA_TABLE])[0] if RTA_TABLE in found else rtm_table
    dst = int.from_bytes(found.get(RTA_DST, b""), "big")
    oif = U32.unpack(found[RTA_OIF])[0] if RTA_OIF in found else None
    metric = U32.unpack(found[RTA_PRIORITY])[0] if RTA_PRIORITY in found else 0
    unmodelled = not UNMODELLED_ATTRS.isdisjoint(found)
    # What route_of refuses and no Route can say (its table is never 0 or local either).
    if expected and kind == RTN_UNICAST and not (src_len or tos or flags & RTM_F_CLONED
                                                  or unmodelled):
        device = None if oif is None else names.get(oif)
        if oif is None or device is not None:
            known = expected.get((family, dst_len, dst, raw_gateway, device, table, metric,
                                  scope, protocol))
            if known is not None:
                return known
    gateway: Address | None = None
    if raw_gateway is not None and family in (socket.AF_INET, socket.AF_INET6):
        gateway = (ipaddress.IPv4Address(raw_gateway) if family == socket.AF_INET
                   else ipaddress.IPv6Address(raw_gateway))
    first: tuple[Address | None, int] | None = None
    if family == socket.AF_INET6 and found.keys() & UNMODELLED_ATTRS == {RTA_MULTIPATH}:
        hop = first_hop(found[RTA_MULTIPATH])
        if hop is not None:
            raw = hop[0]
            if raw is None or len(raw) == 16:  # an IPv6 address's
                first = (None if raw is None else ipaddress.IPv6Address(raw), hop[1])
    return route_of(
        family=family, dst_len=dst_len, src_len=src_len, tos=tos, kind=kind, flags=flags,
        scope=scope, protocol=protocol, table=table, dst=dst, gateway=gateway, oif=oif,
        metric=metric, unmodelled=unmodelled, names=names, first=first)


def route_prefix(msg: bytes) -> Network | None:
    """The destination of a raw ``RTM_NEWROUTE`` message as node facts keep it from
    ``ip -j route show table all``: a unicast route's, never a default route's (no
    destination bits) nor a cached clone's (``ip`` lists none without ``cache``).

    >>> route_prefix(message(RTM_NEWROUTE, 0, 0, RTMSG.pack(2, 24, 0, 0, 254, 4, 0, 1, 0)
    ...                      + attr(RTA_DST, bytes([10, 1, 2, 0]))))
    IPv4Network('10.1.2.0/24')
    """
    family, dst_len, _src_len, _tos, _table, _protocol, _scope, kind, flags = (
        RTMSG.unpack_from(msg, HDR))
    if kind != RTN_UNICAST or not dst_len or flags & RTM_F_CLONED:
        return None
    dst = attrs_of(msg, HDR + RTMSG.size).get(RTA_DST)
    if family == socket.AF_INET and dst is not None and len(dst) == 4 and dst_len <= 32:
        return ipaddress.IPv4Network((int.from_bytes(dst, "big"), dst_len), strict=False)
    if family == socket.AF_INET6 and dst is not None and len(dst) == 16 and dst_len <= 128:
        return ipaddress.IPv6Network((int.from_bytes(dst, "big"), dst_len), strict=False)
    return None


@attrs.frozen
class Link:
    """A network device as rtnetlink reports it."""

    index: int
    name: str
    up: bool
    master: int | None = None
    """The index of the device it is enslaved to (a bridge's port, a bond's slave)."""
    kind: str | None = None
    """Its type as ``ip -d link`` says it (``bridge``, ``veth``, ``bond`` ...), if any."""
    address: str | None = None
    """Its hardware address (``link/ether`` of ``ip link``: ``02:00:0a:00:00:01``), if any."""
    permanent: str | None = None
    """Its permanent hardware address (a NIC's own, which a bond's slave keeps; kernel
    5.6 on), if the kernel reports one."""


def decode_link(msg: bytes) -> Link | None:
    """The link a raw ``RTM_NEWLINK`` message describes (``None`` without a name)."""
    _family, _kind, index, flags, _change = IFINFO.unpack_from(msg, HDR)
    found = attrs_of(msg, HDR + IFINFO.size)
    name = found.get(IFLA_IFNAME)
    if name is None:
        return None
    master = found.get(IFLA_MASTER)
    info = found.get(IFLA_LINKINFO)
    kind = None if info is None else attrs_of(info, 0).get(IFLA_INFO_KIND)
    return Link(index, kernel_name(name), bool(flags & IFF_UP),
                U32.unpack(master)[0] if master is not None and len(master) == 4 else None,
                None if kind is None else kind.rstrip(b"\0").decode(errors="replace"),
                _hardware_address(found.get(IFLA_ADDRESS)),
                _hardware_address(found.get(IFLA_PERM_ADDRESS)))


def _hardware_address(raw: bytes | None) -> str | None:
    """A link's hardware address as ``ip link`` spells it (``None`` for none)."""
    # bytes.hex's separator, as the pyroute2 driver: one C call, where a join of
    # each byte's format took most of what the two addresses added to a link's decode.
    return raw.hex(":") if raw else None


Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def decode_address(msg: bytes) -> tuple[int, Interface] | None:
    """(link index, address with prefix) of a raw ``RTM_NEWADDR`` message."""
    family, prefixlen, _flags, _scope, index = IFADDR.unpack_from(msg, HDR)
    found = attrs_of(msg, HDR + IFADDR.size)
    raw = found.get(IFA_LOCAL) or found.get(IFA_ADDRESS)
    if raw is None:
        return None
    if family == socket.AF_INET:
        return index, ipaddress.IPv4Interface((raw, prefixlen))
    if family == socket.AF_INET6:
        return index, ipaddress.IPv6Interface((raw, prefixlen))
    return None


@attrs.frozen
class LookupRule:
    """A policy rule the kernel's lookup of a route's gateway may pass through
    (:func:`decode_rule`): its family (4 or 6), priority, table (of an ``action`` sending
    lookups to one), destination prefix (``None``: any) and the interface names it
    requires (``None``: any); its ``action`` (``FR_ACT_TO_TBL``, 1; ``blackhole``,
    ``unreachable`` and ``prohibit``, 6 to 8, end the lookup; ``goto`` and ``nop``, 2
    and 3, go on elsewhere) and whether it is ``exact``: its selectors are only those
    read here (a rule that is not, an inverted one, one with a user id range, ports,
    ``suppress_prefixlength`` ..., *may* match). ``gateway_lookup``: whether the kernel's
    lookup of a route's gateway may meet it at all; a rule with a source prefix, a mark,
    a TOS or an L3 master device is met by a forwarded packet's lookup alone (and is
    never ``exact``). ``mark_mask``: the bits a rule of mark 0 wants clear
    (``fwmark 0/0x4000``), 0 for none: the gateway's lookup (no mark) meets it as its
    other selectors say, a packet marked with one of them does not (kube-proxy marks
    0x4000 what it masquerades). ``source``: the ``from`` prefix of a rule whose other
    selectors are all read here (no mark nor mask, TOS, L3 master device, nor one of
    those that make it not ``exact``): a forwarded packet from inside it meets it as its other
    selectors say (``None``: none, or others too)."""

    family: int
    priority: int
    table: int
    destination: Network | None
    in_interface: str | None
    out_interface: str | None
    action: int = FR_ACT_TO_TBL
    exact: bool = True
    gateway_lookup: bool = True
    mark_mask: int = 0
    source: Network | None = None

    def matches(self, address: Address, incoming: str | None, outgoing: str | None) -> bool:
        """Whether a lookup of ``address`` coming in by ``incoming``, going out by
        ``outgoing`` (``None``: none given) meets what the rule reads (see ``exact``)."""
        return (self.family == address.version
                and (self.destination is None or address in self.destination)
                and self.in_interface in (None, incoming)
                and (self.out_interface is None or self.out_interface == outgoing))


def rule_dump_request(family: int) -> bytes:
    """The body of an ``RTM_GETRULE`` dump of one family's policy rules."""
    return FIB_RULE_HDR.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)


def _name(raw: bytes | None) -> str | None:
    return None if raw is None else kernel_name(raw)


def kernel_name(raw: bytes) -> str:
    """A device name the kernel sent (up to its NUL), a byte that is no UTF-8 as a lone
    surrogate (``surrogateescape``): the name itself, its 15 bytes at most as many
    (U+FFFD, 3 bytes, for each such byte made 6 of them a name no route could be
    read through: the route was lost, and one of k3snet's added again at every pass)."""
    return raw.split(b"\0", 1)[0].decode(errors="surrogateescape")


def decode_rule(msg: bytes) -> LookupRule | None:
    """The rule of a raw ``RTM_NEWRULE`` message of IPv4 or IPv6 (else ``None``).

    One the kernel's own lookup of a route's gateway (``fib_check_nh_v4_gw``,
    ``ip6_route_check_nh``: no source address, mark nor TOS) cannot match (a source
    prefix, a mark, a TOS, an L3 master device) is not for that lookup
    (``gateway_lookup`` false) and not ``exact``: a forwarded packet's may match it. An
    inverted rule, or one with selectors that lookup meets otherwise (a user id range,
    ports, an IP protocol), is not ``exact`` either: it may match."""
    if len(msg) < HDR + FIB_RULE_HDR.size:
        return None
    family, dst_len, src_len, tos, table, _, _, action, flags = FIB_RULE_HDR.unpack_from(
        msg, HDR)
    found = attrs_of(msg, HDR + FIB_RULE_HDR.size)
    inverted = bool(flags & FIB_RULE_INVERT)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    sourced = not inverted and bool(
        src_len or tos or FRA_SRC in found or FRA_L3MDEV in found
        or (FRA_FWMARK in found and U32.unpack(found[FRA_FWMARK][:4])[0]))
    if FRA_TABLE in found:
        table = U32.unpack(found[FRA_TABLE][:4])[0]
    destination: Network | None = None
    raw = found.get(FRA_DST)
    if dst_len and raw is not None:
        destination = (ipaddress.IPv4Network((raw, dst_len)) if family == socket.AF_INET
                       else ipaddress.IPv6Network((raw, dst_len)))
    priority = U32.unpack(found[FRA_PRIORITY][:4])[0] if FRA_PRIORITY in found else 0
    # The kernel sends suppress_prefixlength (and suppress_ifgroup) at -1 when unset.
    unset = {kind for kind in (FRA_SUPPRESS_PREFIXLEN, FRA_SUPPRESS_IFGROUP)
             if found.get(kind, b"")[:4] == b"\xff\xff\xff\xff"}
    exact = not inverted and not sourced and found.keys() - unset <= _PLAIN_RULE_ATTRS
    mask = found.get(FRA_FWMASK, b"")
    mark_mask = 0 if sourced or len(mask) < 4 else U32.unpack(mask[:4])[0]
    if inverted:  # met by what its selectors do not match: any lookup, perhaps
        return LookupRule(4 if family == socket.AF_INET else 6, priority, table, None,
                          None, None, action, exact=False)
    source: Network | None = None
    raw = found.get(FRA_SRC)
    # A mark of 0 under a mask (``fwmark 0/0x4000``) comes as FRA_FWMASK alone (the
    # kernel sends no FRA_FWMARK of 0): a packet marked with one of its bits passes by.
    if src_len and raw is not None and not tos and FRA_L3MDEV not in found and not (
            FRA_FWMARK in found and U32.unpack(found[FRA_FWMARK][:4])[0]) and not (
            len(mask) >= 4 and U32.unpack(mask[:4])[0]) and (
            found.keys() - unset - {FRA_SRC} <= _PLAIN_RULE_ATTRS):
        source = (ipaddress.IPv4Network((raw, src_len)) if family == socket.AF_INET
                  else ipaddress.IPv6Network((raw, src_len)))
    return LookupRule(4 if family == socket.AF_INET else 6, priority, table, destination,
                      _name(found.get(FRA_IIFNAME)), _name(found.get(FRA_OIFNAME)),
                      action, exact, gateway_lookup=not sourced, mark_mask=mark_mask,
                      source=source)
