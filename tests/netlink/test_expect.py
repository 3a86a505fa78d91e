"""The netlink backend's ``expect`` hint, without root: it changes no decoded route, and it is used.

``expect(state)`` hands the route view the routes the next dump likely holds;
the socket driver then decodes a message whose fields are exactly one of
theirs as that very object (``codec.expected_routes``, ``decode_route(...,
expected)``). Every message here is decoded with and without the hint, and the
two must be equal: the kernel's own dumps recorded in
``tests/data/netlink/dumps.json`` (every shape ``ip`` listed, modelled or not),
drawn routes as the backend writes them, and the same messages with one field
changed.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from k3snet.backends.group import BackendGroup
from k3snet.backends.netlink import NetlinkBackend, codec
from k3snet.converge import converge
from k3snet.model import Route, RouteBlock, State
from k3snet.testing import strategies

RECORDED: dict[str, Any] = json.loads(
    (Path(__file__).parents[1] / "data" / "netlink" / "dumps.json").read_text())
INDEXES: dict[str, int] = RECORDED["links"]
NAMES = {index: name for name, index in INDEXES.items()}
DUMPS = [bytes.fromhex(text) for name in ("route4", "route6") for text in RECORDED["dumps"][name]]
ROUTES = strategies.routes(devices=("d0", "e0"), tables=(254, 100, 1000, 70000, 2**31, 2**32 - 1),
                           metrics=(None, 0, 100, 2**32 - 1))


def _message(route: Route) -> bytes:
    ifindex = None if route.device is None else INDEXES[route.device]
    return codec.message(codec.RTM_NEWROUTE, 0, 0, codec.route_request(route, ifindex))


def _near(route: Route) -> list[Route]:
    """Routes that differ from ``route`` in one field each."""
    fields = attrs.asdict(route, recurse=False, filter=lambda a, _: a.init)
    others: list[Route] = []
    for name, value in (("metric", (route.metric or 0) + 1), ("table", route.table + 1),
                        ("protocol", (route.protocol + 1) % 256),
                        ("device", "e0" if route.device != "e0" else "d0")):
        try:
            others.append(Route(**{**fields, name: value}))
        except ValueError:
            continue
    if route.destination.version == 4 and route.gateway is None:
        scope = "host" if route.scope != "host" else "link"
        others.append(Route(**{**fields, "scope": scope}))
    return others


def test_the_recorded_dumps_decode_the_same_with_every_route_as_the_hint() -> None:
    plain = [codec.decode_route(msg, NAMES) for msg in DUMPS]
    routes = [route for route in plain if isinstance(route, Route)]
    assert len(routes) >= 10
    expected = codec.expected_routes(routes)
    hinted = [codec.decode_route(msg, NAMES, expected) for msg in DUMPS]
    assert hinted == plain
    # Each modelled route is the expected object itself: nothing was built again.
    assert [id(route) for route in hinted if isinstance(route, Route)] == \
        [id(expected_route) for expected_route in routes]


def test_a_hint_one_field_off_is_never_taken() -> None:
    plain = [codec.decode_route(msg, NAMES) for msg in DUMPS]
    found = {route for route in plain if isinstance(route, Route)}
    # One field off from one route may be exactly another route of the dump: not off then.
    near = [other for route in found for other in _near(route) if other not in found]
    expected = codec.expected_routes(near)
    hinted = [codec.decode_route(msg, NAMES, expected) for msg in DUMPS]
    assert hinted == plain
    assert not {id(route) for route in hinted} & {id(route) for route in near}


@given(route=ROUTES, others=st.lists(ROUTES, max_size=4))
def test_a_drawn_route_decodes_as_its_hint_and_equal_to_the_unhinted_reading(
    route: Route, others: list[Route]
) -> None:
    msg = _message(route)
    plain = codec.decode_route(msg, NAMES)
    assert plain == route
    assert codec.decode_route(msg, NAMES, codec.expected_routes([*others, route])) is route
    hinted = codec.decode_route(msg, NAMES, codec.expected_routes([*others, *_near(route)]))
    assert hinted == plain


# One field of the message changed: (rtmsg offset or attribute, new value). The offsets
# are into the body: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
_RTMSG = codec.HDR
EDITS: dict[str, Callable[[bytes], bytes]] = {
    "source-specific": lambda m: _byte(m, _RTMSG + 2, 8),
    "tos": lambda m: _byte(m, _RTMSG + 3, 4),
    "local-type": lambda m: _byte(m, _RTMSG + 7, 2),
    "blackhole-type": lambda m: _byte(m, _RTMSG + 7, 6),
    "cloned": lambda m: m[:_RTMSG + 8] + struct.pack("=I", codec.RTM_F_CLONED) + m[_RTMSG + 12:],
    "other-protocol": lambda m: _byte(m, _RTMSG + 5, 4),
    "other-scope": lambda m: _byte(m, _RTMSG + 6, 200),
    "local-table": lambda m: _attr(m, codec.RTA_TABLE, struct.pack("=I", 255)),
    "unknown-device": lambda m: _attr(m, codec.RTA_OIF, struct.pack("=I", 999)),
    "unmodelled-attribute": lambda m: _grow(m, codec.attr(codec.RTA_VIA, b"\x02\x00" + bytes(4))),
    "no-metric": lambda m: _drop(m, codec.RTA_PRIORITY),
}


def _byte(msg: bytes, offset: int, value: int) -> bytes:
    return msg[:offset] + bytes([value]) + msg[offset + 1:]


def _grow(msg: bytes, extra: bytes) -> bytes:
    body = msg[codec.HDR:] + extra
    return codec.message(codec.RTM_NEWROUTE, 0, 0, body)


def _attrs(msg: bytes) -> list[tuple[int, bytes]]:
    found = codec.attrs_of(msg, codec.HDR + codec.RTMSG.size)
    return list(found.items())


def _rebuild(msg: bytes, attributes: list[tuple[int, bytes]]) -> bytes:
    head = msg[codec.HDR:codec.HDR + codec.RTMSG.size]
    body = head + b"".join(codec.attr(kind, data) for kind, data in attributes)
    return codec.message(codec.RTM_NEWROUTE, 0, 0, body)


def _attr(msg: bytes, kind: int, data: bytes) -> bytes:
    attributes = [(k, data if k == kind else v) for k, v in _attrs(msg)]
    if kind not in dict(attributes):
        attributes.append((kind, data))
    return _rebuild(msg, attributes)


def _drop(msg: bytes, kind: int) -> bytes:
    return _rebuild(msg, [(k, v) for k, v in _attrs(msg) if k != kind])


@pytest.mark.parametrize("edit", sorted(EDITS))
@given(route=ROUTES)
def test_a_message_with_one_field_changed_decodes_the_same_with_the_hint(
    edit: str, route: Route
) -> None:
    msg = EDITS[edit](_message(route))
    assert msg != _message(route)
    plain = codec.decode_route(msg, NAMES)
    hinted = codec.decode_route(msg, NAMES, codec.expected_routes([route]))
    assert hinted == plain
    if edit != "no-metric":  # an IPv6 route without a metric is the default one, 1024
        assert plain != route


def test_a_link_local_gateway_written_with_its_zone_decodes_as_its_hint() -> None:
    route = Route("fd03::/64", gateway="fe80::1%e0", table=1000)
    assert route.device == "e0"  # the zone is the device: the kernel keeps no zone
    assert codec.decode_route(_message(route), NAMES, codec.expected_routes([route])) is route
    assert codec.decode_route(_message(route), NAMES) == route


class _Driver:
    """A route driver serving recorded dumps, with or without ``expected``."""

    follows_changes = False
    portid = 1

    def __init__(self, reads_expected: bool) -> None:
        self.reads_expected = reads_expected
        self.hints: list[int] = []

    def links(self) -> dict[int, codec.Link]:
        return {index: codec.Link(index, name, True) for index, name in NAMES.items()}

    def addresses(self) -> dict[int, list[codec.Interface]]:
        return {}

    def notifications(self) -> tuple[list[bytes], bool]:
        return [], False

    def routes(self, tables: frozenset[int] | None, names: Any,
               **kw: Any) -> list[Route | RouteBlock | codec.Siblings]:
        expected = kw.get("expected")
        self.hints.append(len(expected or ()))
        return [route for msg in DUMPS
                if (route := codec.decode_route(msg, names, expected)) is not None]

    def close(self) -> None:
        pass


@pytest.mark.parametrize("reads_expected", [True, False])
def test_converge_hands_the_routes_to_a_driver_that_reads_them_and_only_to_it(
    reads_expected: bool, tmp_path: Path
) -> None:
    proc_sys = tmp_path / "proc" / "sys"
    for name in ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding",
                 "net/ipv4/conf/all/rp_filter", "net/ipv4/conf/default/rp_filter"):
        (proc_sys / name).parent.mkdir(parents=True, exist_ok=True)
        (proc_sys / name).write_text("0\n")
    made = _Driver(reads_expected)
    desired = State(owned=[Route("10.77.0.0/24", device="d0"),
                           Route("fd77::/64", gateway="fd00::2", device="e0")])
    with NetlinkBackend(state_dir=tmp_path / "state", proc_sys=proc_sys,
                        driver=lambda _runner, _count: made) as backend:  # type: ignore[arg-type, return-value]
        converge(BackendGroup([backend]), desired, dry_run=True)
    # Only a driver that says it reads them is handed them (a custom driver need not).
    assert made.hints == ([2] if reads_expected else [0])


def test_a_route_through_a_device_k3snet_does_not_know_is_not_a_gatewayed_hint() -> None:
    # The hint names no device; the kernel's route goes out of an unknown link (ifindex 999):
    # route_of reads such a route as a block (it stands there, through a device k3snet cannot
    # name), and the hint must not stand in for it.
    route = Route("10.5.0.0/24", gateway="10.0.0.2")
    msg = _attr(_message(route), codec.RTA_OIF, struct.pack("=I", 999))
    plain = codec.decode_route(msg, NAMES)
    assert isinstance(plain, RouteBlock)
    assert plain.what == "unnamed device"
    assert codec.decode_route(msg, NAMES, codec.expected_routes([route])) == plain
