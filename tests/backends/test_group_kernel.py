"""A group of real kernel backends is all-or-nothing, for any error of any member.

netlink (routes, sysctls) goes first, nftables (NAT, forward) second: a failure
in the nftables part must take the routes and sysctls back. Checked with the
kernel's own listings (``ip -j route``, ``nft -j list ruleset``, /proc/sys).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet import (
    ApplyError,
    ApplyResult,
    ForwardRule,
    MasqueradeRule,
    Plan,
    PlanError,
    Route,
    State,
    Sysctl,
    plan,
)
from k3snet.backends.group import BackendGroup
from k3snet.backends.netlink import NetlinkBackend
from k3snet.backends.nftables import NftablesBackend
from k3snet.lab.netns import run_in, temporary_netns

pytestmark = pytest.mark.kernel

WANTED = State(owned=[
    Sysctl("net.ipv4.ip_forward", "1"),
    Sysctl("net.ipv6.conf.all.forwarding", "1"),
    Route("192.168.2.0/24", gateway="10.0.0.254", device="d0"),
    Route("fd01:2::/64", gateway="fd00::fe", device="d0"),
    MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24", out_interface="d0"),
    MasqueradeRule("fd42:42::/56", destination="fd01:2::/64", out_interface="d0"),
    ForwardRule("10.42.0.0/16", "192.168.2.0/24"),
])


@pytest.fixture
def ns() -> Iterator[str]:
    with temporary_netns("grp") as name:
        for argv in (["ip", "link", "set", "lo", "up"],
                     ["ip", "link", "add", "d0", "type", "veth", "peer", "name", "d0p"],
                     # No link-local addresses: their local routes would appear when
                     # duplicate address detection ends, a second or more later under
                     # load, and change the kernel view between two readings.
                     ["ip", "link", "set", "d0", "addrgenmode", "none"],
                     ["ip", "link", "set", "d0p", "addrgenmode", "none"],
                     ["ip", "link", "set", "d0p", "up"], ["ip", "link", "set", "d0", "up"],
                     ["ip", "addr", "add", "10.0.0.1/24", "dev", "d0"],
                     ["ip", "addr", "add", "fd00::1/64", "dev", "d0", "nodad"],
                     ["nft", "add", "table", "inet", "admin"],
                     ["nft", "add", "chain", "inet", "admin", "forwarding",
                      "{ type filter hook forward priority 10; policy accept; }"],
                     ["nft", "add", "rule", "inet", "admin", "forwarding", "ip", "saddr",
                      "10.99.0.0/16", "drop"]):
            run_in(name, argv)
        yield name


def kernel_view(ns: str) -> tuple[object, ...]:
    """Everything the group could change, as the kernel lists it."""
    routes = json.loads(run_in(ns, ["ip", "-j", "route", "show", "table", "all"]).stdout)
    routes6 = json.loads(run_in(ns, ["ip", "-6", "-j", "route", "show", "table", "all"]).stdout)
    ruleset = json.loads(run_in(ns, ["nft", "-j", "list", "ruleset"]).stdout)["nftables"]
    ruleset = [item for item in ruleset if "metainfo" not in item]
    sysctls = run_in(ns, ["cat", "/proc/sys/net/ipv4/ip_forward",
                          "/proc/sys/net/ipv6/conf/all/forwarding"]).stdout
    return routes, routes6, ruleset, sysctls


@pytest.fixture
def group(ns: str, tmp_path: Path) -> Iterator[BackendGroup]:
    with BackendGroup([NetlinkBackend(ns, state_dir=tmp_path), NftablesBackend(ns)]) as made:
        yield made


def test_an_injected_failure_at_every_position_leaves_the_kernel_as_it_was(
        ns: str, group: BackendGroup) -> None:
    before = kernel_view(ns)
    p = plan(group.observe(), WANTED)
    kinds = [c.kind for c in p.changes]
    assert {"route", "sysctl"} <= set(kinds), p.render()
    assert {"nat", "forward"} <= set(kinds), p.render()
    for index in range(len(p.changes)):
        group.faults.fail_at(index)
        with pytest.raises(ApplyError):
            group.apply(p)
        assert kernel_view(ns) == before, f"failure at change {index}: {p.changes[index]}"
    group.apply(p)
    assert plan(group.observe(), WANTED).empty
    assert kernel_view(ns) != before


class _Refusing(NftablesBackend):
    """An nftables member that refuses its part (or crashes) after netlink applied."""

    error: BaseException = PlanError("refused by a later member")

    def apply(self, plan: Plan) -> ApplyResult:
        raise self.error


@pytest.mark.parametrize("error", [PlanError("refused"), RuntimeError("a bug in a member")],
                         ids=["plan-error", "crash"])
def test_any_error_of_a_later_member_takes_the_earlier_members_back(
        ns: str, tmp_path: Path, error: Exception) -> None:
    before = kernel_view(ns)
    refusing = _Refusing(ns)
    refusing.error = error
    with BackendGroup([NetlinkBackend(ns, state_dir=tmp_path), refusing]) as group:
        p = plan(group.observe(), WANTED)
        with pytest.raises(ApplyError) as caught:
            group.apply(p)
        assert caught.value.__cause__ is error
        assert {c.kind for c in caught.value.rolled_back} == {"route", "sysctl"}
        assert kernel_view(ns) == before
        assert not group.observe().owned


def test_an_interruption_during_a_later_member_takes_the_earlier_members_back(
        ns: str, tmp_path: Path) -> None:
    """Ctrl-C (KeyboardInterrupt) as the nftables part starts: the routes and sysctls
    netlink applied are taken back, and the interruption goes on (the CLI exits 130).
    It used to leave them applied: the group caught only ``Exception``."""
    before = kernel_view(ns)
    refusing = _Refusing(ns)
    interruption = KeyboardInterrupt()
    refusing.error = interruption
    with BackendGroup([NetlinkBackend(ns, state_dir=tmp_path), refusing]) as group:
        p = plan(group.observe(), WANTED)
        with pytest.raises(KeyboardInterrupt) as caught:
            group.apply(p)
        assert caught.value is interruption
        assert kernel_view(ns) == before
        assert not group.observe().owned
