"""Values at the edges of what a route says, as they reach the kernel through the netlink
backend: each is taken as the kernel takes it (applied, read back equal, planned again
as nothing to do, listed by ``ip -j route``) or refused by the model with the reason,
before any change. A route's ``mtu`` and ``onlink`` are no fields of k3snet's routes:
no message of either driver carries them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.errors import ModelError
from k3snet.model import Route, State
from k3snet.planner import plan
from tests.netlink.links import d0_namespace, ip
from tests.netlink.test_backend import DRIVERS, Driver

_TAKEN = [
    Route("198.51.100.0/24", gateway="192.0.2.2", metric=2**32 - 1),
    Route("2001:db8:9::/64", gateway="2001:db8::2", metric=2**32 - 1),
    Route("2001:db8:8::/64", gateway="2001:db8::2", metric=0),  # stored at 1024
    Route("198.51.101.0/24", gateway="192.0.2.2", table=253),  # default
    Route("2001:db8:7::/64", gateway="2001:db8::2", table=253),
    Route("198.51.102.0/24", gateway="192.0.2.2", table=2**32 - 1),
    Route("2001:db8:6::/64", gateway="2001:db8::2", table=2**32 - 1),
    Route("2001:db8:5::/64", gateway="fe80::2", device="d0"),
    Route("2001:db8:4::/64", gateway="fe80::2%d0"),  # the zone is the device
]


@pytest.mark.kernel
@pytest.mark.usefixtures("require_root")
@pytest.mark.parametrize("driver", DRIVERS)
def test_routes_at_the_edges_of_metric_table_and_gateway_are_taken_as_the_kernel_takes_them(
        tmp_path: Path, driver: Driver) -> None:
    with d0_namespace("rlimits", "192.0.2.1/24", "2001:db8::1/64") as ns, \
            NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        wanted = State(owned=_TAKEN)
        planned = plan(backend.observe(), wanted)
        assert backend.check(planned) == ()
        backend.apply(planned)
        assert len(backend.observe().owned) == len(_TAKEN)  # read back with their device
        assert not plan(backend.observe(), wanted).changes
        listed: list[dict[str, Any]] = [
            route for family in ("-4", "-6")
            for route in json.loads(ip(ns, "-j", family, "route", "show", "table", "all"))
            if route.get("protocol") == "211"]
        assert sorted((r["dst"], str(r.get("table", "main")), r.get("metric", 0),
                       r["gateway"]) for r in listed) == sorted([
            ("198.51.100.0/24", "main", 2**32 - 1, "192.0.2.2"),
            ("2001:db8:9::/64", "main", 2**32 - 1, "2001:db8::2"),
            ("2001:db8:8::/64", "main", 1024, "2001:db8::2"),
            ("198.51.101.0/24", "default", 0, "192.0.2.2"),
            ("2001:db8:7::/64", "default", 1024, "2001:db8::2"),
            ("198.51.102.0/24", str(2**32 - 1), 0, "192.0.2.2"),
            ("2001:db8:6::/64", str(2**32 - 1), 1024, "2001:db8::2"),
            ("2001:db8:5::/64", "main", 1024, "fe80::2"),
            ("2001:db8:4::/64", "main", 1024, "fe80::2")])
        backend.apply(plan(backend.observe(), State()))
        assert not any(route.get("protocol") == "211" for family in ("-4", "-6")
                       for route in json.loads(ip(ns, "-j", family, "route", "show", "table",
                                                  "all")))


@pytest.mark.parametrize(("fields", "said"), [
    ({"table": 0}, "route table must be an integer 1..4294967295, got 0"),
    ({"table": 2**32}, "route table must be an integer 1..4294967295"),
    ({"table": 255}, "route table 255 (local) is the kernel's"),
    ({"metric": 2**32}, "route metric must be an integer 0..4294967295"),
    ({"metric": -1}, "route metric must be an integer 0..4294967295"),
    ({"destination": "2001:db8:9::/64", "gateway": "fe80::2"},
     "link-local gateway fe80::2 needs a device"),
    ({"destination": "2001:db8:9::/64", "gateway": "::ffff:192.0.2.2", "device": "d0"},
     "is an IPv4-mapped address, which the kernel refuses as a next hop"),
    ({"gateway": "2001:db8::2"}, "mixes IPv4 and IPv6"),
    ({"gateway": "0.0.0.0"}, "the unspecified address"),  # noqa: S104 (a gateway)
])
def test_a_route_value_the_kernel_refuses_or_misreads_is_refused_by_the_model_with_why(
        fields: dict[str, Any], said: str) -> None:
    given: dict[str, Any] = {"destination": "198.51.100.0/24", "gateway": "192.0.2.2",
                             **fields}
    with pytest.raises(ModelError) as caught:
        Route(**given)
    assert said in str(caught.value)
