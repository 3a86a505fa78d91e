"""A sysctl of one interface (``net.ipv4.conf.x0.rp_filter``) belongs to that very
interface: when it is deleted and another one of the same name comes (a CNI bridge
re-created, a VLAN set up again), what k3snet recorded for the old one (ownership,
the value to give back) is not the new one's. The new interface's sysctl is foreign,
and giving back never writes the old interface's previous value into it.

The kernel's own view is read with ``ip netns exec NS cat /proc/sys/...``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import State, Sysctl
from k3snet.planner import plan

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

_NAME = "net.ipv4.conf.x0.rp_filter"


def _link(ns: str) -> None:
    run_in(ns, ["ip", "link", "add", "x0", "type", "veth", "peer", "name", "x0p"])


def rp_filter(ns: str) -> str:
    return run_in(ns, ["cat", "/proc/sys/net/ipv4/conf/x0/rp_filter"]).stdout.strip()


@pytest.fixture
def ns() -> Iterator[str]:
    with temporary_netns("ifsysctl") as name:
        _link(name)
        yield name


def _recreated_by_the_admin(ns: str, value: str) -> None:
    run_in(ns, ["ip", "link", "del", "x0"])
    _link(ns)
    run_in(ns, ["sysctl", "-qw", f"{_NAME}={value}"])


def test_a_recreated_interfaces_sysctl_is_foreign_and_never_given_the_old_ones_value(
        ns: str, tmp_path: Path) -> None:
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        backend.apply(plan(backend.observe(), State(owned=[Sysctl(_NAME, 2)])))
        assert rp_filter(ns) == "2"
        _recreated_by_the_admin(ns, "1")
        observed = backend.observe()
        assert Sysctl(_NAME, 1) in observed.foreign
        assert not any(isinstance(o, Sysctl) and o.name == _NAME for o in observed.owned)
        removal = plan(observed, State())
        assert removal.empty
        backend.apply(removal)
    assert rp_filter(ns) == "1"


def test_taking_a_recreated_interfaces_sysctl_over_records_its_own_previous_value(
        ns: str, tmp_path: Path) -> None:
    wanted = State(owned=[Sysctl(_NAME, 2)])
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        backend.apply(plan(backend.observe(), wanted))
        _recreated_by_the_admin(ns, "1")
        again = plan(backend.observe(), wanted)
        assert [c.action for c in again] == ["add"]
        backend.apply(again)
        assert rp_filter(ns) == "2"
        owned = [o for o in backend.observe().owned if isinstance(o, Sysctl)]
        assert [(o.name, o.value, o.previous) for o in owned] == [(_NAME, "2", "1")]
        backend.apply(plan(backend.observe(), State()))
    assert rp_filter(ns) == "1"


def _value(ns: str, interface: str) -> str:
    return run_in(ns, ["cat", f"/proc/sys/net/ipv4/conf/{interface}/rp_filter"]).stdout.strip()


def test_a_renamed_interfaces_sysctl_stays_owned_under_its_new_name_and_is_given_back(
        ns: str, tmp_path: Path) -> None:
    # The kernel renames a link that is up, too (x0 is down here: both work).
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        backend.apply(plan(backend.observe(), State(owned=[Sysctl(_NAME, 2)])))
        run_in(ns, ["ip", "link", "set", "x0", "name", "x9"])
        owned = [o for o in backend.observe().owned if isinstance(o, Sysctl)]
        assert [(o.name, o.value, o.previous) for o in owned] == [
            ("net.ipv4.conf.x9.rp_filter", "2", "0")]
        backend.apply(plan(backend.observe(), State()))
        assert _value(ns, "x9") == "0"
        assert not [o for o in backend.observe().owned if isinstance(o, Sysctl)]


def test_two_interfaces_that_swapped_names_keep_their_own_sysctls(
        ns: str, tmp_path: Path) -> None:
    run_in(ns, ["ip", "link", "add", "y0", "type", "veth", "peer", "name", "y0p"])
    other = "net.ipv4.conf.y0.rp_filter"
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        backend.apply(plan(backend.observe(), State(owned=[Sysctl(_NAME, 2), Sysctl(other, 1)])))
        for old, new in (("x0", "tmp0"), ("y0", "x0"), ("tmp0", "y0")):
            run_in(ns, ["ip", "link", "set", old, "name", new])
        owned = {o.name: o.value for o in backend.observe().owned if isinstance(o, Sysctl)}
        assert owned == {_NAME: "1", other: "2"}  # each value went with its interface
        backend.apply(plan(backend.observe(), State()))
        assert (_value(ns, "x0"), _value(ns, "y0")) == ("0", "0")
