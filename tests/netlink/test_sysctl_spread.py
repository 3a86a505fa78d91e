"""Forwarding switches the kernel spreads: writing ``net.ipv4.ip_forward`` (or
``net.ipv4.conf.all.forwarding``) or ``net.ipv6.conf.all.forwarding`` sets every
interface's ``forwarding`` and ``default``'s too. Giving one back must leave each
interface as the administrator had it, not at the value the spread left.

The kernel's own view is read with ``ip netns exec NS cat /proc/sys/...``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.errors import ApplyError, PlanError
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import State, Sysctl
from k3snet.planner import plan

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

_SWITCHES = tuple(f"net/{family}/conf/{where}/forwarding" for family in ("ipv4", "ipv6")
                  for where in ("all", "default", "d0", "e0"))
_WANTED = State(owned=[Sysctl("net.ipv4.ip_forward", 1),
                       Sysctl("net.ipv6.conf.all.forwarding", 1)])


@pytest.fixture
def ns() -> Iterator[str]:
    """Two interfaces; the administrator forwards on e0 only (and IPv6 by default)."""
    with temporary_netns("spread") as name:
        for dev in ("d0", "e0"):
            run_in(name, ["ip", "link", "add", dev, "type", "veth", "peer", "name", f"{dev}p"])
        run_in(name, ["sysctl", "-qw", "net.ipv4.conf.e0.forwarding=1",
                      "net.ipv6.conf.e0.forwarding=1", "net.ipv6.conf.default.forwarding=1"])
        yield name


def switches(ns: str) -> dict[str, str]:
    """Every forwarding switch of ``ns``, as the kernel holds it."""
    values = run_in(ns, ["cat", *(f"/proc/sys/{path}" for path in _SWITCHES)]).stdout.split()
    return dict(zip(_SWITCHES, values, strict=True))


def test_giving_forwarding_back_restores_each_interfaces_own_switch(
        ns: str, tmp_path: Path) -> None:
    before = switches(ns)
    assert before["net/ipv4/conf/e0/forwarding"] == "1"
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        backend.apply(plan(backend.observe(), _WANTED))
        assert set(switches(ns).values()) == {"1"}  # the kernel spread them
        backend.apply(plan(backend.observe(), State()))
    assert switches(ns) == before


def test_a_rolled_back_forwarding_change_restores_each_interfaces_own_switch(
        ns: str, tmp_path: Path) -> None:
    before = switches(ns)
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        backend.faults.fail_at(2)
        with pytest.raises(ApplyError):
            backend.apply(plan(backend.observe(), _WANTED))
    assert switches(ns) == before


def test_a_switch_set_while_k3snet_owned_forwarding_is_kept_when_it_gives_it_back(
        ns: str, tmp_path: Path) -> None:
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        backend.apply(plan(backend.observe(), _WANTED))
        run_in(ns, ["sysctl", "-qw", "net.ipv4.conf.e0.forwarding=0"])  # the admin, meanwhile
        backend.apply(plan(backend.observe(), State()))
    after = switches(ns)
    assert after["net/ipv4/conf/e0/forwarding"] == "0"
    assert after["net/ipv6/conf/e0/forwarding"] == "1"


_REDIRECTS = "net/ipv4/conf/all/accept_redirects"


def accept_redirects(ns: str) -> str:
    """``net.ipv4.conf.all.accept_redirects`` as the kernel holds it."""
    return run_in(ns, ["cat", f"/proc/sys/{_REDIRECTS}"]).stdout.strip()


@pytest.mark.parametrize("held", ["0", "1"])
def test_giving_ip_forward_back_leaves_all_accept_redirects_as_it_was(
        ns: str, tmp_path: Path, held: str) -> None:
    # The kernel sets all.accept_redirects to !forwarding on every forwarding write
    # (inet_forward_change): turning forwarding off again turned redirects on, on a
    # node hardened with accept_redirects=0 (CIS), after apply then destroy.
    run_in(ns, ["sysctl", "-qw", f"net.ipv4.conf.all.accept_redirects={held}"])
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        backend.apply(plan(backend.observe(), _WANTED))
        assert accept_redirects(ns) == "0"  # the kernel spread it
        backend.apply(plan(backend.observe(), State()))
    assert accept_redirects(ns) == held


@pytest.mark.parametrize("held", ["0", "1"])
def test_a_rolled_back_ip_forward_change_leaves_all_accept_redirects_as_it_was(
        ns: str, tmp_path: Path, held: str) -> None:
    run_in(ns, ["sysctl", "-qw", f"net.ipv4.conf.all.accept_redirects={held}"])
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        backend.faults.fail_at(1)  # after ip_forward, before IPv6's switch
        with pytest.raises(ApplyError):
            backend.apply(plan(backend.observe(), _WANTED))
    assert accept_redirects(ns) == held


def test_accept_redirects_set_while_k3snet_owned_forwarding_is_kept_when_it_gives_it_back(
        ns: str, tmp_path: Path) -> None:
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        backend.apply(plan(backend.observe(), _WANTED))
        run_in(ns, ["sysctl", "-qw", "net.ipv4.conf.all.accept_redirects=1"])  # the admin
        backend.apply(plan(backend.observe(), State()))
    assert accept_redirects(ns) == "1"


def test_a_state_file_without_accept_redirects_leaves_the_kernels_spread_standing(
        ns: str, tmp_path: Path) -> None:
    # Written by a version that did not record it: what it held is unknown, so the
    # kernel's own spread (the opposite of forwarding) stands, as it did then.
    run_in(ns, ["sysctl", "-qw", "net.ipv4.conf.all.accept_redirects=0"])
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        backend.apply(plan(backend.observe(), _WANTED))
        path = next(tmp_path.rglob("sysctl.json"))
        data = json.loads(path.read_text())
        for values in data.get("spread", {}).values():
            values.pop("net.ipv4.conf.all.accept_redirects", None)
        path.write_text(json.dumps(data))
        backend.apply(plan(backend.observe(), State()))
    assert accept_redirects(ns) == "1"


_IPV6_SPREAD = ("disable_ipv6", "ignore_routes_with_linkdown")


def ipv6_switches(ns: str, leaf: str) -> dict[str, str]:
    """``net.ipv6.conf.*.LEAF`` of all, default and each interface, as the kernel holds it."""
    paths = [f"net/ipv6/conf/{where}/{leaf}" for where in ("all", "default", "d0", "e0")]
    values = run_in(ns, ["cat", *(f"/proc/sys/{path}" for path in paths)]).stdout.split()
    return dict(zip(paths, values, strict=True))


@pytest.mark.parametrize("leaf", _IPV6_SPREAD)
def test_giving_an_ipv6_all_switch_back_restores_each_interfaces_own(
        ns: str, tmp_path: Path, leaf: str) -> None:
    # The kernel writes net.ipv6.conf.all.disable_ipv6 (ignore_routes_with_linkdown)
    # into default and every interface too: giving it back turned IPv6 on again on an
    # interface the administrator had it off for.
    run_in(ns, ["sysctl", "-qw", f"net.ipv6.conf.e0.{leaf}=1"])
    before = ipv6_switches(ns, leaf)
    wanted = State(owned=[Sysctl(f"net.ipv6.conf.all.{leaf}", 1)])
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        backend.apply(plan(backend.observe(), wanted))
        assert set(ipv6_switches(ns, leaf).values()) == {"1"}  # the kernel spread it
        backend.apply(plan(backend.observe(), State()))
    assert ipv6_switches(ns, leaf) == before


@pytest.mark.parametrize("leaf", _IPV6_SPREAD)
def test_a_rolled_back_ipv6_all_switch_restores_each_interfaces_own(
        ns: str, tmp_path: Path, leaf: str) -> None:
    run_in(ns, ["sysctl", "-qw", f"net.ipv6.conf.e0.{leaf}=1"])
    before = ipv6_switches(ns, leaf)
    wanted = State(owned=[Sysctl(f"net.ipv6.conf.all.{leaf}", 1),
                          Sysctl("net.ipv6.conf.d0.hop_limit", 9)])
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        backend.faults.fail_at(1)
        with pytest.raises(ApplyError):
            backend.apply(plan(backend.observe(), wanted))
    assert ipv6_switches(ns, leaf) == before


# One kernel value under two names: guides set both (net.ipv4.ip_forward and
# net.ipv4.conf.all.forwarding); the second take-over read the value the first wrote.
_BOTH = State(owned=[Sysctl("net.ipv4.ip_forward", 1), Sysctl("net.ipv4.conf.all.forwarding", 1)])


def test_giving_back_both_names_of_ipv4_forwarding_restores_what_was_there(
        ns: str, tmp_path: Path) -> None:
    before = switches(ns)
    assert before["net/ipv4/conf/all/forwarding"] == "0"
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        backend.apply(plan(backend.observe(), _BOTH))
        assert sysctl_values(ns, "net/ipv4/ip_forward") == ["1"]
        backend.apply(plan(backend.observe(), State()))
    assert sysctl_values(ns, "net/ipv4/ip_forward") == ["0"]
    assert switches(ns) == before


def test_giving_back_one_name_of_ipv4_forwarding_leaves_the_other_owned_value(
        ns: str, tmp_path: Path) -> None:
    before = switches(ns)
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        backend.apply(plan(backend.observe(), _BOTH))
        one = State(owned=[Sysctl("net.ipv4.ip_forward", 1)])
        backend.apply(plan(backend.observe(), one))
        assert sysctl_values(ns, "net/ipv4/ip_forward") == ["1"]  # never turned off
        assert not plan(backend.observe(), one).changes
        backend.apply(plan(backend.observe(), State()))
    assert sysctl_values(ns, "net/ipv4/ip_forward") == ["0"]
    assert switches(ns) == before


def sysctl_values(ns: str, *paths: str) -> list[str]:
    """The values of ``paths`` under /proc/sys, as the kernel holds them."""
    return run_in(ns, ["cat", *(f"/proc/sys/{path}" for path in paths)]).stdout.split()


def test_one_apply_writes_an_interface_switch_after_the_forwarding_that_spreads_over_it(
        ns: str, tmp_path: Path) -> None:
    """``ip_forward = 1`` sets every interface's ``forwarding`` and turns
    ``all.accept_redirects`` off: written in name order, after ``conf.d0.forwarding = 0``
    and ``conf.all.accept_redirects = 1``, it undid both, and the apply converged only on
    a second pass (two replaces in the next plan)."""
    wanted = State(owned=[Sysctl("net.ipv4.ip_forward", 1),
                          Sysctl("net.ipv4.conf.d0.forwarding", 0),
                          Sysctl("net.ipv4.conf.all.accept_redirects", 1)])
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        backend.apply(plan(backend.observe(), wanted))
        values = run_in(ns, ["cat", "/proc/sys/net/ipv4/ip_forward",
                             "/proc/sys/net/ipv4/conf/d0/forwarding",
                             "/proc/sys/net/ipv4/conf/all/accept_redirects"]).stdout.split()
        assert values == ["1", "0", "1"]
        assert plan(backend.observe(), wanted).empty
        backend.apply(plan(backend.observe(), State()))


_CONTRADICTING = State(owned=[Sysctl("net.ipv4.ip_forward", 1),
                              Sysctl("net.ipv4.conf.all.forwarding", 0)])


def test_both_names_of_ipv4_forwarding_with_different_values_are_refused_unchanged(
        ns: str, tmp_path: Path) -> None:
    """One kernel value cannot hold both: every apply wrote one of the two names again,
    turning the node's forwarding on and off in turn (an agent every 30 s)."""
    before = switches(ns)
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        p = plan(backend.observe(), _CONTRADICTING)
        assert any("two names of one kernel value" in problem for problem in backend.check(p))
        with pytest.raises(PlanError, match="two names of one kernel value"):
            backend.apply(p)
    assert switches(ns) == before
    assert not (tmp_path / ns / "sysctl.json").exists()


def test_a_write_of_one_name_of_ipv4_forwarding_that_the_other_owned_name_would_undo_is_refused(
        ns: str, tmp_path: Path) -> None:
    """ip_forward owned at 1: adding conf.all.forwarding = 0 turns it off behind the plan's
    back, and the next plan turns it on again."""
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        backend.apply(plan(backend.observe(), State(owned=[Sysctl("net.ipv4.ip_forward", 1)])))
        with pytest.raises(PlanError, match="two names of one kernel value"):
            backend.apply(plan(backend.observe(), _CONTRADICTING))
        assert sysctl_values(ns, "net/ipv4/ip_forward") == ["1"]
        # Both names with the same value stay allowed, and so does giving one back.
        backend.apply(plan(backend.observe(), _BOTH))
        backend.apply(plan(backend.observe(), State(owned=[Sysctl(
            "net.ipv4.conf.all.forwarding", 1)])))
        assert plan(backend.observe(), State(owned=[Sysctl(
            "net.ipv4.conf.all.forwarding", 1)])).empty
        backend.apply(plan(backend.observe(), State()))
    assert sysctl_values(ns, "net/ipv4/ip_forward") == ["0"]
