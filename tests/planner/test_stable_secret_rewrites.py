"""A written IPv6 ``stable_secret`` sets its interface's ``addr_gen_mode`` to 2 (``default``'s:
every interface's, ``addrconf_sysctl_stable_secret``): a plan writing one writes the
spec's ``addr_gen_mode`` of such an interface after it, also one already in place (the
kernel's own view: tests/netlink/test_sysctl_lists.py)."""

from __future__ import annotations

import pytest

from k3snet.model import State, Sysctl
from k3snet.planner import Change, plan

MODE = Sysctl("net.ipv6.conf.eth0.addr_gen_mode", "3")
OTHER = Sysctl("net.ipv6.conf.eth1.addr_gen_mode", "1")
DEFAULT_MODE = Sysctl("net.ipv6.conf.default.addr_gen_mode", "3")


@pytest.mark.parametrize("iface", ["eth0", "default"])
def test_an_addr_gen_mode_in_place_is_written_again_after_a_new_secret(iface: str) -> None:
    new = Sysctl(f"net.ipv6.conf.{iface}.stable_secret", "2001:db8::1")
    observed = State(owned=[MODE, OTHER, DEFAULT_MODE])
    wanted = State(owned=[MODE, OTHER, DEFAULT_MODE, new])
    changes = list(plan(observed, wanted).changes)
    rewritten = [Change("replace", MODE, MODE)] + (
        [Change("replace", OTHER, OTHER)] if iface == "default" else [])
    # default's own addr_gen_mode is no interface's: a secret leaves it.
    assert changes == [Change("add", None, new), *rewritten]


def test_an_addr_gen_mode_met_by_the_value_found_is_taken_over_after_a_new_secret() -> None:
    new = Sysctl("net.ipv6.conf.eth0.stable_secret", "2001:db8::1")
    found = Sysctl("net.ipv6.conf.eth0.addr_gen_mode", "3")
    result = plan(State(foreign=[found]), State(owned=[MODE, new]))
    assert list(result.changes) == [Change("add", None, new), Change("add", None, MODE)]
    assert result.notes == ()


def test_a_secret_in_place_or_a_mode_of_2_adds_no_rewrite() -> None:
    secret = Sysctl("net.ipv6.conf.eth0.stable_secret", "2001:db8::1")
    assert plan(State(owned=[MODE, secret]), State(owned=[MODE, secret])).changes == ()
    two = Sysctl("net.ipv6.conf.eth0.addr_gen_mode", "2")
    assert list(plan(State(owned=[two]), State(owned=[two, secret])).changes) == [
        Change("add", None, secret)]
    # another interface's secret leaves eth0's mode alone
    eth1 = Sysctl("net.ipv6.conf.eth1.stable_secret", "2001:db8::1")
    assert list(plan(State(owned=[MODE]), State(owned=[MODE, eth1])).changes) == [
        Change("add", None, eth1)]
