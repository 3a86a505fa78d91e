"""Both drivers read the same IPv6 multipath routes.

IPv6 keeps each nexthop of a multipath route as a route of its own and dumps them as one
message carrying the first one's protocol: the socket driver reads it from the bytes of
``RTA_MULTIPATH`` (:func:`~k3snet.backends.netlink.codec.first_hop`), the pyroute2 driver
from pyroute2's decoding of it; either way a :class:`~k3snet.backends.netlink.codec.Siblings`
or a :class:`~k3snet.model.RouteBlock`. Random slots are built in a lab namespace with
``ip -6 route append`` (gateways global and link-local, two devices, device routes,
several protocols and metrics), and both drivers read the table alike, and so do their
backends' ``observe`` (k3snet's routes, the foreign ones and blocks).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from k3snet.backends.netlink import NetlinkBackend
from k3snet.lab.netns import run_in
from tests.netlink.links import d0_namespace, ip

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

_TABLE = 100
_HOPS = st.tuples(
    st.sampled_from(["2001:db8:9::/64", "::/0"]),
    st.sampled_from([1024, 100]),
    st.sampled_from(["2001:db8::2", "2001:db8::3", "fe80::1", "fe80::2", None]),
    st.sampled_from(["d0", "e0"]),
    st.sampled_from(["211", "boot", "static", "ra"]),
)


@pytest.fixture(scope="module")
def lab() -> Iterator[str]:
    with d0_namespace("rsibl", "2001:db8::1/64") as ns:
        ip(ns, "link", "add", "e0", "type", "veth", "peer", "name", "e0p")
        ip(ns, "link", "set", "e0p", "up")
        ip(ns, "link", "set", "e0", "up")
        ip(ns, "addr", "add", "2001:db8::5/64", "dev", "e0", "nodad")
        yield ns


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hops=st.lists(_HOPS, max_size=7))
def test_both_drivers_read_any_appended_ipv6_multipath_slot_alike(
        lab: str, hops: list[tuple[str, int, str | None, str, str]]) -> None:
    run_in(lab, ["ip", "-6", "route", "flush", "table", str(_TABLE)], check=False)  # none yet
    for destination, metric, gateway, device, protocol in hops:
        # What the kernel refuses (a second device route, a duplicate nexthop) is skipped.
        run_in(lab, ["ip", "-6", "route", "append", destination,
                     *(["via", gateway] if gateway else []), "dev", device,
                     "proto", protocol, "metric", str(metric), "table", str(_TABLE)],
               check=False)
    read: list[tuple[list[str], ...]] = []
    with tempfile.TemporaryDirectory(prefix="crossrt3-") as state:
        for driver in ("socket", "pyroute2"):
            with NetlinkBackend(lab, state_dir=Path(state) / driver, driver=driver,
                                tables=[_TABLE]) as backend:
                names = {index: link.name for index, link in backend._routes.links().items()}
                observed = backend.observe()
                read.append((sorted(map(repr, backend._driver.routes(
                    frozenset({_TABLE}), names))), sorted(map(repr, observed.owned)),
                    sorted(map(repr, observed.foreign))))
    assert read[0] == read[1]
