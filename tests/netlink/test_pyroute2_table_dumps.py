"""The pyroute2 driver's dumps of named tables: pyroute2 0.9 puts a route dump's
``table`` into a filter of its own, applied after decoding every route of the
namespace (thousands of host routes of table ``local`` where kube-proxy's IPVS mode
binds every service address: seconds of a cold plan), unless the request names its
filter (``dump_filter=None``): then the table goes into the request and the kernel,
checking dump requests strictly, sends that table's routes alone. The routes read are
the same as the socket driver's, a table that does not exist (``ENOENT``) none.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.model import Route, State
from k3snet.planner import plan
from tests.netlink.links import d0_namespace, ip

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]


def test_a_dump_of_named_tables_decodes_their_routes_alone_and_reads_what_the_socket_driver_reads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pyroute2")
    with d0_namespace("rp2tab", "192.0.2.1/24", "2001:db8::1/64") as ns:
        ip(ns, "link", "set", "lo", "up")
        subprocess.run(["ip", "-n", ns, "-b", "-"], check=True, input="".join(
            f"addr add 10.7.{i}.1/32 dev d0\n" for i in range(60)).encode())
        ip(ns, "route", "add", "198.51.100.0/24", "dev", "d0", "table", "70000")
        ip(ns, "-6", "route", "add", "2001:db8:7::/48", "dev", "d0", "table", "100")
        wanted = State(owned=[Route("10.9.1.0/24", gateway="192.0.2.2", table=100),
                              Route("2001:db8:9::/48", gateway="2001:db8::2", table=70000)])
        read: dict[str, Any] = {}
        dumped: list[int] = []  # the messages of each route dump pyroute2 hands back
        for driver in ("socket", "pyroute2"):
            with NetlinkBackend(ns, state_dir=tmp_path / driver, driver=driver,
                                tables=[100, 70000]) as backend:
                if driver == "pyroute2":
                    _count_route_dumps(backend, dumped, monkeypatch)
                backend.apply(plan(backend.observe(), wanted))
                state = backend.observe()
                read[driver] = (sorted(map(repr, state.owned)), sorted(map(repr, state.foreign)))
        assert read["socket"] == read["pyroute2"]
        assert len(read["pyroute2"][0]) == 2
        # Each family's tables 100 and 70000 (IPv4's 100 holds one route, created by the
        # apply; before it, none: ENOENT), never the 60 host routes of table local.
        assert dumped
        assert max(dumped) <= 2, dumped


def _count_route_dumps(backend: NetlinkBackend, dumped: list[int],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Append to ``dumped`` the count of route messages pyroute2 decoded for each route
    dump of ``backend``'s pyroute2 driver (those its own filter then dropped too: the
    messages handed back alone were the same count either way)."""
    rtmsg: Any = pytest.importorskip("pyroute2.netlink.rtnl.rtmsg").rtmsg
    driver_object: Any = backend._driver
    dump = driver_object._dump
    decode = rtmsg.decode
    decoded = [0]

    def counting_decode(self: Any) -> Any:
        decoded[0] += 1
        return decode(self)

    def counted(ipr: Any, method: Any, **query: Any) -> list[Any]:
        decoded[0] = 0
        messages: list[Any] = dump(ipr, method, **query)
        if method.args[0].__name__ == "route":  # partial(_run_generic_rtnl, route)
            dumped.append(decoded[0])
        return messages

    monkeypatch.setattr(rtmsg, "decode", counting_decode)
    monkeypatch.setattr(driver_object, "_dump", counted)
