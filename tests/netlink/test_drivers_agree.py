"""The two drivers of the netlink backend read one namespace alike: the same observed
state, the same plan, the same warnings (policy rules, AnyIP and ``throw`` routes of
table ``local``, host routes of service addresses, IPv6 nexthops appended to another
program's route, a blackhole), IPv4 and IPv6, with every table read or named ones.

The pyroute2 driver keeps table ``local`` from its dump of every table: it decoded
each of those routes there, thousands of host routes of service addresses (kube-proxy's
IPVS mode) on every observe, a quarter of the dump's time whether the warnings read
them or not. It now keeps their bytes and decodes them as the socket driver does
(:func:`~k3snet.backends.netlink.codec.decode_local_route`), only those that matter.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from k3snet.backends.netlink import NetlinkBackend, codec, pyroute2_driver
from k3snet.model import Route, State
from k3snet.planner import plan
from tests.netlink.links import d0_namespace, ip
from tests.netlink.test_backend import DRIVERS

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

_WANTED = State(owned=[
    Route("10.9.1.0/24", gateway="192.0.2.2"),  # inside an AnyIP route of table local
    Route("10.5.1.0/24", gateway="192.0.2.2"),  # a rule sends it to table 100
    Route("10.7.1.0/24", gateway="192.0.2.2"),  # inside a throw route of table local
    Route("10.96.0.7/32", gateway="192.0.2.2"),  # a service address's host route
    Route("10.5.2.0/24", gateway="192.0.2.2", table=100),
    Route("2001:db8:9:1::/64", gateway="2001:db8::2"),
    Route("2001:db8:5:1::/64", gateway="2001:db8::2"),
    Route("2001:db8:7::/48", gateway="2001:db8::2", metric=5),
    Route("2001:db8:8::/48", gateway="2001:db8::2"),  # another program's slot
])


def _lab(ns: str) -> None:
    ip(ns, "link", "set", "lo", "up")
    ip(ns, "link", "add", "sv", "type", "veth", "peer", "name", "svp")
    ip(ns, "link", "set", "sv", "up")
    ip(ns, "link", "set", "svp", "up")
    subprocess.run(["ip", "-n", ns, "-b", "-"], check=True, input="".join(
        f"addr add 10.96.0.{i}/32 dev sv\n" for i in range(1, 41)).encode())
    for args in (("route", "add", "local", "10.9.0.0/16", "dev", "lo", "table", "local"),
                 ("-6", "route", "add", "local", "2001:db8:9::/48", "dev", "lo",
                  "table", "local"),
                 ("route", "add", "throw", "10.7.0.0/16", "table", "local"),
                 ("route", "add", "10.5.0.0/16", "via", "192.0.2.3", "table", "100"),
                 ("rule", "add", "to", "10.5.1.0/24", "lookup", "100", "pref", "100"),
                 ("-6", "route", "add", "2001:db8:5::/48", "via", "2001:db8::3",
                  "table", "100"),
                 ("-6", "rule", "add", "to", "2001:db8:5:1::/64", "lookup", "100",
                  "pref", "100"),
                 ("route", "add", "blackhole", "10.6.0.0/16"),
                 ("-6", "route", "add", "2001:db8:7::/48", "via", "2001:db8::4"),
                 ("-6", "route", "append", "2001:db8:7::/48", "via", "2001:db8::5"),
                 ("-6", "route", "add", "2001:db8:8::/48", "via", "2001:db8::4",
                  "metric", "1024")):
        ip(ns, *args)


def _read(backend: NetlinkBackend) -> tuple[Any, ...]:
    """What a pass reads and says: observe, plan, warnings; after the apply again."""
    backend.expect(_WANTED)
    before = backend.observe()
    changes = plan(before, _WANTED)
    said = backend.warnings
    backend.apply(changes)
    backend.expect(_WANTED)
    after = backend.observe()
    again = backend.warnings
    backend.apply(plan(after, State()))
    return (sorted(map(repr, before.owned)), sorted(map(repr, before.foreign)),
            [str(change) for change in changes.changes], said,
            sorted(map(repr, after.owned)), again)


@pytest.mark.parametrize("tables", [None, (254, 100)])
def test_both_drivers_read_the_same_state_plan_and_warnings_of_one_namespace(
        tmp_path: Path, tables: tuple[int, ...] | None) -> None:
    pytest.importorskip("pyroute2")
    with d0_namespace("ragree", "192.0.2.1/24", "2001:db8::1/64") as ns:
        _lab(ns)
        read = {}
        for driver in DRIVERS:
            with NetlinkBackend(ns, state_dir=tmp_path / driver, driver=driver,
                                tables=tables) as backend:
                read[driver] = _read(backend)
        assert read["socket"] == read["pyroute2"]
        said = read["socket"][5]
        # Table 100's rule (both families), the AnyIP routes (both), the host route of a
        # service address; not the route inside the throw route, nor table 100's own.
        assert len(said) == 5, said
        assert not any("10.7.1.0/24" in text or "10.5.2.0/24" in text for text in said)


def test_both_drivers_read_table_local_alike_and_decode_only_the_routes_that_matter(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pyroute2")
    decoded: list[int] = []
    decode = codec.local_route_of

    def counted(**fields: Any) -> Any:
        decoded.append(fields["dst_len"])
        return decode(**fields)

    with d0_namespace("rlocdec", "192.0.2.1/24", "2001:db8::1/64") as ns:
        _lab(ns)
        read = {}
        for driver in DRIVERS:
            with NetlinkBackend(ns, state_dir=tmp_path / driver, driver=driver) as backend:
                names = {index: link.name for index, link in backend._routes.links().items()}
                reader: Any = backend._driver
                monkeypatch.setattr(codec, "local_route_of", counted)
                if driver == "pyroute2":  # the name it imported (before: decoded all)
                    monkeypatch.setattr(pyroute2_driver, "local_route_of", counted,
                                        raising=False)
                decoded.clear()
                reader.routes(None, names)  # the pyroute2 driver keeps table local's
                shown = {length: sorted(route.describe() for route in
                                        reader.local_routes(names, {4: length, 6: 64}))
                         for length in (24, 32)}
                read[driver] = shown, sorted(decoded)
                monkeypatch.undo()
        assert read["socket"][0] == read["pyroute2"][0]
        shown, lengths = read["pyroute2"]
        assert "local route 10.9.0.0/16 dev lo table local" in shown[24]
        assert "throw route 10.7.0.0/16 table local" in shown[24]
        assert "local route 10.96.0.7/32 dev sv table local" in shown[32]
        assert not any("10.96.0.7" in text for text in shown[24])
        # The 40 host routes of the service addresses decoded for /32 destinations alone
        # (the pyroute2 driver decoded every route of table local in its dump).
        assert lengths.count(32) < 2 * 40, lengths
        assert lengths == read["socket"][1]
