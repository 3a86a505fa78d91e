"""Turning ``disable_ipv6`` on cannot be taken back: the kernel deletes the interface's
IPv6 addresses and routes, and writing 0 again brings back only the link-local one.

A plan that set it and then failed was "rolled back" to a node without its static
IPv6 address and without the administrator's routes through it. Such a change is
disruptive: ``check`` names it and ``apply`` refuses it unless allowed. The kernel's
own view (``ip -j -6 addr``, ``ip -j -6 route``) is compared.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.errors import ApplyError, PlanError
from k3snet.lab.netns import run_in
from k3snet.model import Route, State, Sysctl
from k3snet.planner import Change, plan
from tests.netlink.links import d0_namespace, ip

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]


@pytest.fixture
def ns() -> Iterator[str]:
    """d0 with a static IPv6 address and the administrator's route through it."""
    with d0_namespace("v6off", "fd00::1/64") as name:
        ip(name, "-6", "route", "add", "fd99::/64", "via", "fd00::fe", "proto", "static")
        yield name


def ipv6_view(ns: str) -> tuple[list[str], list[str]]:
    """d0's global IPv6 addresses and the main table's IPv6 destinations but link-local
    ones, as the kernel holds them."""
    addresses = [a["local"] for entry in json.loads(ip(ns, "-6", "-j", "addr", "show", "dev",
                                                         "d0"))
                 for a in entry["addr_info"] if a.get("scope") == "global"]
    routes = sorted(r["dst"] for r in json.loads(ip(ns, "-6", "-j", "route", "show"))
                    if r["dst"] != "fe80::/64")
    return addresses, routes


_WANTED = State(owned=[Sysctl("net.ipv6.conf.d0.disable_ipv6", 1),
                       Route("fd01::/64", gateway="fd00::2", device="d0")])


def test_turning_ipv6_off_on_an_interface_is_refused_unless_allowed(
        ns: str, tmp_path: Path) -> None:
    before = ipv6_view(ns)
    assert before == (["fd00::1"], ["fd00::/64", "fd99::/64"])
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        p = plan(backend.observe(), _WANTED)
        assert any("disable_ipv6 = 1 is disruptive" in problem for problem in backend.check(p))
        with pytest.raises(PlanError, match="disruptive"):
            backend.apply(p)
    assert ipv6_view(ns) == before
    assert run_in(ns, ["cat", "/proc/sys/net/ipv6/conf/d0/disable_ipv6"]).stdout == "0\n"


def test_a_failed_apply_that_turned_ipv6_off_lost_the_addresses_it_reports_rolled_back(
        ns: str, tmp_path: Path) -> None:
    """Why it is disruptive: allowed, a failure after the write leaves d0 without its
    address and the administrator's route, though the write itself was undone."""
    with NetlinkBackend(ns, state_dir=tmp_path, allow_disruptive=True) as backend:
        backend.faults.fail_at(1)
        with pytest.raises(ApplyError):
            backend.apply(plan(backend.observe(), _WANTED))
    assert run_in(ns, ["cat", "/proc/sys/net/ipv6/conf/d0/disable_ipv6"]).stdout == "0\n"
    assert ipv6_view(ns) == ([], [])


@pytest.mark.parametrize(("change", "disruptive"), [
    (Change.add(Sysctl("net.ipv6.conf.all.disable_ipv6", 1)), True),
    (Change.add(Sysctl("net.ipv6.conf.d0.disable_ipv6", 0)), False),
    (Change.add(Sysctl("net.ipv6.conf.default.disable_ipv6", 1)), False),  # new interfaces
    (Change.replace(Sysctl("net.ipv6.conf.d0.disable_ipv6", 0),
                    Sysctl("net.ipv6.conf.d0.disable_ipv6", 1)), True),
    # Giving it back writes the previous value: IPv6 off again.
    (Change.delete(Sysctl("net.ipv6.conf.d0.disable_ipv6", 0, previous="1")), True),
    (Change.delete(Sysctl("net.ipv6.conf.d0.disable_ipv6", 1, previous="0")), False),
    (Change.add(Sysctl("net.ipv6.conf.all.forwarding", 1)), False),
])
def test_disruptive_names_every_write_turning_ipv6_off_for_an_interface_or_all(
        ns: str, tmp_path: Path, change: Change, disruptive: bool) -> None:
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        assert (backend.disruptive(change) is not None) == disruptive
