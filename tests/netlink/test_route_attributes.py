"""Attributes the route model has no field for, added to k3snet's own route by another.

``ip route change DST via GW dev DEV proto 211 mtu 1300 src ADDR realm 5`` keeps the
route in k3snet's place and protocol: it reads back as the route written (no drift,
nothing repaired), and the administrator's values stay. Without ``proto`` the change
makes the route ``boot``'s: another program's then, met by it. What they do
(docs/backends.md): ``mtu`` holds for forwarded packets too, ``src`` only for the
node's own connections (MASQUERADE picks the out device's address itself), ``realm``
only classifies.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.lab.netns import run_in
from k3snet.model import Route, State
from k3snet.planner import plan
from tests.netlink.links import d0_namespace
from tests.netlink.test_backend import DRIVERS, Driver

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]


def _ip(ns: str, *args: str) -> str:
    return run_in(ns, ["ip", *args]).stdout


@pytest.fixture
def ns() -> Iterator[str]:
    with d0_namespace("rtattrs", "192.168.1.5/24", device="eth0") as name:
        _ip(name, "addr", "add", "192.168.7.5/32", "dev", "eth0p")
        yield name


@pytest.mark.parametrize("driver", DRIVERS)
def test_mtu_src_and_realm_added_to_k3snet_s_route_are_no_drift_and_are_kept(
        ns: str, tmp_path: Path, driver: Driver) -> None:
    if driver == "pyroute2":
        pytest.importorskip("pyroute2")
    wanted = State(owned=[Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0")])
    with NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        backend.apply(plan(backend.observe(), wanted))
        _ip(ns, "route", "change", "192.168.2.0/24", "via", "192.168.1.1", "dev", "eth0",
            "proto", "211", "mtu", "1300", "src", "192.168.7.5", "realm", "5")
        observed = backend.observe()
        assert wanted.owned <= observed.owned
        assert plan(observed, wanted).empty
    [route] = json.loads(_ip(ns, "-d", "-j", "route", "show", "192.168.2.0/24"))
    assert (route["protocol"], route["prefsrc"], route["metrics"]) == (
        "211", "192.168.7.5", [{"mtu": 1300}])
