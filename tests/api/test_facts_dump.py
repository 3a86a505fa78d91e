"""``gather_facts`` reads the routes from a netlink dump: the facts are those of ``ip -j``.

Two ``ip -j route show table all`` processes printing 10 000 foreign routes as JSON,
parsed again, were most of an agent pass after each route change (190-340 ms on a
loaded node). The live read now dumps the routes itself and builds again only the
prefixes of messages that changed. Whatever the routes (both families, every table,
type, protocol and prefix length), it must give the facts the captured listings give.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from k3snet import NodeFacts, facts_from_ip_json, gather_facts
from k3snet.lab.netns import run_in, temporary_netns
from tests.netlink.links import wait_for_link_local

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

_TYPES4 = ("unicast", "blackhole", "unreachable", "prohibit", "throw", "local", "broadcast")
_TYPES6 = ("unicast", "blackhole", "unreachable", "prohibit", "throw", "local", "anycast")
_PROTOCOLS = ("static", "boot", "kernel", "bird", "211", "200", "17")
_TABLES = ("main", "local", "100", "70000")


@st.composite
def _route_lines(draw: st.DrawFn) -> str:
    """One ``ip -batch`` line adding a drawn route (some the kernel refuses: skipped)."""
    v6 = draw(st.booleans())
    bits = 128 if v6 else 32
    length = draw(st.integers(0, bits))
    value = draw(st.integers(0, (1 << bits) - 1)) >> (bits - length) << (bits - length)
    if v6:
        import ipaddress  # noqa: PLC0415 - only here
        prefix = f"{ipaddress.IPv6Address(value)}/{length}"
    else:
        prefix = f"{value >> 24}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}/{length}"
    kind = draw(st.sampled_from(_TYPES6 if v6 else _TYPES4))
    device = "" if kind in ("blackhole", "unreachable", "prohibit", "throw") else " dev eth0"
    return (f"route add {kind} {prefix}{device} table {draw(st.sampled_from(_TABLES))} "
            f"proto {draw(st.sampled_from(_PROTOCOLS))} "
            f"metric {draw(st.sampled_from((0, 5)))}\n")


def _from_ip_json(ns: str, protocol: int) -> NodeFacts:
    def listing(*args: str) -> list[object]:
        listed = json.loads(run_in(ns, ["ip", "-j", *args]).stdout, strict=False)
        assert isinstance(listed, list)
        return listed
    return facts_from_ip_json(listing("addr", "show"),
                              [*listing("-4", "route", "show", "table", "all"),
                               *listing("-6", "route", "show", "table", "all")],
                              hostname=ns, protocol=protocol)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(_route_lines(), min_size=5, max_size=60),
       protocol=st.sampled_from((211, 200)),
       removed=st.integers(0, 60))
def test_the_facts_of_a_netlink_dump_equal_the_ip_json_listings_of_any_routes(
        lines: list[str], protocol: int, removed: int) -> None:
    with temporary_netns("facts") as ns:
        for argv in (["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                      "net.ipv6.conf.default.accept_dad=0"],
                     ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "p0"],
                     ["ip", "link", "set", "eth0", "up"], ["ip", "link", "set", "p0", "up"],
                     ["ip", "addr", "add", "192.168.1.5/24", "dev", "eth0"],
                     ["ip", "addr", "add", "fd00::5/64", "dev", "eth0", "nodad"]):
            run_in(ns, argv)
        # The two listings compared are taken one after the other: the kernel must be
        # done adding the links' link-local addresses and routes first (a listing taken
        # before held fewer than the next: failed once under load).
        wait_for_link_local(ns, "eth0", "p0")
        # -force: a route the kernel refuses (a slot taken twice, a type it rejects for
        # that prefix) is left out, the others are added.
        run_in(ns, ["ip", "-force", "-batch", "-"], check=False, input_text="".join(lines))
        assert gather_facts(ns, protocol=protocol) == _from_ip_json(ns, protocol)
        # Again after some are gone: prefixes kept from the dump before are reused.
        gone = "".join(line.replace("route add", "route del", 1) for line in lines[:removed])
        run_in(ns, ["ip", "-force", "-batch", "-"], check=False, input_text=gone)
        assert gather_facts(ns, protocol=protocol) == _from_ip_json(ns, protocol)
