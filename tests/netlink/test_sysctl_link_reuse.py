"""The state file ties a sysctl of one interface (``net.ipv4.conf.d0.rp_filter``) and the
switches a write spread over (a ``stable_secret``'s ``addr_gen_mode``) to the interface,
so that the record follows its rename. It tied them by the link index alone: an interface
deleted and another moved in from a namespace where it had that index (``ip link set X
netns N`` keeps the index when it is free there) took the record over, and ``destroy``
wrote the old interface's values on it. Now the kind and hardware address recorded
beside the index tell the two apart; a record of the index alone (an older version's)
is followed by neither name nor index alone, and the interface is left as it is, with a
warning. Against the kernel: ``/proc/sys`` and ``ip -j link``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import State, Sysctl
from k3snet.planner import plan
from tests.netlink.links import ip

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

INDEX = "42"
RP_FILTER = "net.ipv4.conf.d0.rp_filter"
SECRET = "2001:db8::5"  # noqa: S105 - a test value, not a password


@pytest.fixture
def lab() -> Iterator[tuple[str, str]]:
    """A namespace with veth d0 of index 42, and another to move an interface in from."""
    with temporary_netns("reuse") as ns, temporary_netns("reusesrc") as other:
        ip(ns, "link", "add", "name", "d0", "index", INDEX, "type", "veth", "peer", "name", "d0p")
        yield ns, other


def read(ns: str, path: str) -> str:
    return run_in(ns, ["cat", f"/proc/sys/{path}"]).stdout.strip()


def link(ns: str, name: str) -> dict[str, object]:
    [found] = json.loads(ip(ns, "-j", "link", "show", "dev", name))
    return dict(found)


def move_in_another(ns: str, other: str, name: str) -> None:
    """Delete d0, and move interface ``name`` in from ``other``, where it has d0's index."""
    address = link(ns, "d0")["address"]
    ip(ns, "link", "del", "d0")
    ip(other, "link", "add", "name", name, "index", INDEX, "type", "veth", "peer", "name", "xp")
    ip(other, "link", "set", name, "netns", ns)
    moved = link(ns, name)
    assert (moved["ifindex"], moved["ifname"]) == (int(INDEX), name)  # the index kept
    assert moved["address"] != address


def take_over_rp_filter(ns: str, state_dir: Path) -> None:
    run_in(ns, ["sysctl", "-qw", f"{RP_FILTER}=0"])
    with NetlinkBackend(ns, state_dir=state_dir) as backend:
        backend.apply(plan(backend.observe(), State(owned=[Sysctl(RP_FILTER, 2)])))
    assert read(ns, "net/ipv4/conf/d0/rp_filter") == "2"


@pytest.mark.parametrize("name", ["x1", "d0"])
def test_an_owned_sysctl_is_not_the_interface_s_that_took_its_index_over(
        lab: tuple[str, str], tmp_path: Path, name: str) -> None:
    ns, other = lab
    take_over_rp_filter(ns, tmp_path)
    move_in_another(ns, other, name)
    run_in(ns, ["sysctl", "-qw", f"net.ipv4.conf.{name}.rp_filter=1"])
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        observed = backend.observe()
        # Reported as the foreign value it is, not as k3snet's with d0's previous value.
        assert [o for o in observed.owned if isinstance(o, Sysctl)] == []
        backend.apply(plan(observed, State()))  # destroy
    assert read(ns, f"net/ipv4/conf/{name}/rp_filter") == "1"


def test_default_stable_secret_gives_no_addr_gen_mode_to_the_interface_that_took_an_index_over(
        lab: tuple[str, str], tmp_path: Path) -> None:
    ns, other = lab
    run_in(ns, ["sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/d0/addr_gen_mode"])
    secret = "net.ipv6.conf.default.stable_secret"  # noqa: S105 - a sysctl's name
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        backend.apply(plan(backend.observe(), State(owned=[Sysctl(secret, SECRET)])))
    assert read(ns, "net/ipv6/conf/d0/addr_gen_mode") == "2"  # the kernel's doing
    move_in_another(ns, other, "x1")
    # Made in a namespace whose default has a secret: stable-privacy, as the kernel gives it.
    assert read(ns, "net/ipv6/conf/x1/addr_gen_mode") == "2"
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        backend.apply(plan(backend.observe(), State()))  # destroy
    assert read(ns, "net/ipv6/conf/x1/addr_gen_mode") == "2"  # not d0's 1


@pytest.mark.parametrize("driver", ["socket", "pyroute2"])
def test_a_renamed_interface_keeps_its_records_told_by_kind_and_address(
        lab: tuple[str, str], tmp_path: Path, driver: Literal["socket", "pyroute2"]) -> None:
    # Recorded by the socket driver, told by either: both spell the addresses alike.
    ns, _other = lab
    take_over_rp_filter(ns, tmp_path)
    ip(ns, "link", "set", "d0", "name", "d9")
    with NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        observed = backend.observe()
        [owned] = [o for o in observed.owned if isinstance(o, Sysctl)]
        assert (owned.name, owned.previous) == ("net.ipv4.conf.d9.rp_filter", "0")
        assert backend.warnings == ()
        backend.apply(plan(observed, State()))
    assert read(ns, "net/ipv4/conf/d9/rp_filter") == "0"


def older_record(state_dir: Path) -> None:
    """Make the state file one of a version that recorded the index alone."""
    [path] = state_dir.rglob("sysctl.json")
    data = json.loads(path.read_text())
    assert data["links"] == {RP_FILTER: int(INDEX)}
    del data["link_marks"]
    path.write_text(json.dumps(data))


def test_an_older_record_of_the_index_alone_follows_no_other_name_and_is_warned_of(
        lab: tuple[str, str], tmp_path: Path) -> None:
    ns, _other = lab
    take_over_rp_filter(ns, tmp_path)
    older_record(tmp_path)
    # A rename, or another interface moved in with d0's index: the record cannot tell.
    ip(ns, "link", "set", "d0", "name", "d9")
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        observed = backend.observe()
        assert [o for o in observed.owned if isinstance(o, Sysctl)] == []
        [warning] = backend.warnings
        assert RP_FILTER in warning
        assert "d9 (index 42)" in warning
        backend.apply(plan(observed, State()))
    assert read(ns, "net/ipv4/conf/d9/rp_filter") == "2"  # left alone


def test_an_older_record_of_the_index_alone_holds_its_interface_under_its_name(
        lab: tuple[str, str], tmp_path: Path) -> None:
    ns, _other = lab
    take_over_rp_filter(ns, tmp_path)
    older_record(tmp_path)
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        [owned] = [o for o in backend.observe().owned if isinstance(o, Sysctl)]
        assert (owned.name, owned.previous) == (RP_FILTER, "0")
        assert backend.warnings == ()
        # The next save completes the record: a rename after it is followed.
        backend.apply(plan(backend.observe(), State(owned=[Sysctl(RP_FILTER, 1)])))
        ip(ns, "link", "set", "d0", "name", "d9")
        backend.apply(plan(backend.observe(), State()))
    assert read(ns, "net/ipv4/conf/d9/rp_filter") == "0"


def test_a_bridge_whose_address_follows_a_new_port_keeps_its_records(tmp_path: Path) -> None:
    # The kernel gives a bridge its lowest port's address (cni0, as pods come and go):
    # the same bridge, whose sysctl k3snet still owns, not one it cannot tell.
    rp_filter = "net.ipv4.conf.br0.rp_filter"
    with temporary_netns("reusebr") as ns:
        ip(ns, "link", "add", "br0", "type", "bridge")
        run_in(ns, ["sysctl", "-qw", f"{rp_filter}=0"])
        with NetlinkBackend(ns, state_dir=tmp_path) as backend:
            backend.apply(plan(backend.observe(), State(owned=[Sysctl(rp_filter, 2)])))
        before = link(ns, "br0")["address"]
        ip(ns, "link", "add", "v0", "address", "02:00:00:00:00:01", "type", "veth",
           "peer", "name", "v0p")
        ip(ns, "link", "set", "v0", "master", "br0")
        assert link(ns, "br0")["address"] == "02:00:00:00:00:01" != before
        with NetlinkBackend(ns, state_dir=tmp_path) as backend:
            observed = backend.observe()
            [owned] = [o for o in observed.owned if isinstance(o, Sysctl)]
            assert (owned.name, owned.previous) == (rp_filter, "0")
            assert backend.warnings == ()
            backend.apply(plan(observed, State()))  # destroy
        assert read(ns, "net/ipv4/conf/br0/rp_filter") == "0"


@pytest.mark.parametrize("kind", ["macvlan", "macvtap"])
@pytest.mark.parametrize("name", ["x1", "m0"])
def test_a_macvlan_moved_in_with_a_deleted_one_s_index_is_not_it(
        tmp_path: Path, kind: str, name: str) -> None:
    # Unlike a bridge, a MACVLAN (a VLAN, an IPVLAN) moves between namespaces, keeping its
    # index where it is free: its kind alone took the record over again, as the index
    # alone did before the link marks.
    rp_filter = "net.ipv4.conf.m0.rp_filter"
    with temporary_netns("reusemv") as ns, temporary_netns("reusemvs") as other:
        for where in (ns, other):
            ip(where, "link", "add", "l0", "type", "veth", "peer", "name", "l0p")
        ip(ns, "link", "add", "m0", "index", INDEX, "link", "l0", "type", kind)
        run_in(ns, ["sysctl", "-qw", f"{rp_filter}=0"])
        with NetlinkBackend(ns, state_dir=tmp_path) as backend:
            backend.apply(plan(backend.observe(), State(owned=[Sysctl(rp_filter, 2)])))
        ip(ns, "link", "del", "m0")
        ip(other, "link", "add", name, "index", INDEX, "link", "l0", "type", kind)
        ip(other, "link", "set", name, "netns", ns)
        assert link(ns, name)["ifindex"] == int(INDEX)  # the index kept
        run_in(ns, ["sysctl", "-qw", f"net.ipv4.conf.{name}.rp_filter=1"])
        with NetlinkBackend(ns, state_dir=tmp_path) as backend:
            observed = backend.observe()
            assert [o for o in observed.owned if isinstance(o, Sysctl)] == []
            backend.apply(plan(observed, State()))  # destroy
        assert read(ns, f"net/ipv4/conf/{name}/rp_filter") == "1"  # not m0's 0


def test_the_warning_of_an_interface_k3snet_cannot_tell_names_the_value_to_give_back(
        lab: tuple[str, str], tmp_path: Path) -> None:
    # An administrator gave veth d0 another address: the same interface or another,
    # k3snet cannot tell. The warning asks to give its value back by hand: which one,
    # since a take-over anew (the spec asking another value) records the value as it is.
    ns, _other = lab
    take_over_rp_filter(ns, tmp_path)
    ip(ns, "link", "set", "d0", "address", "02:00:00:00:00:07")
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        observed = backend.observe()
        [warning] = backend.warnings
        assert "d0 (index 42)" in warning
        assert warning.endswith("by hand: '0'")
        backend.apply(plan(observed, State(owned=[Sysctl(RP_FILTER, 1)])))
    [path] = tmp_path.rglob("sysctl.json")
    assert json.loads(path.read_text())["owned"][RP_FILTER]["previous"] == "2"


@pytest.mark.parametrize("change", ["address", "older record renamed"])
def test_the_warning_of_an_interface_k3snet_cannot_tell_ends_once_the_value_is_given_back(
        lab: tuple[str, str], tmp_path: Path, change: str) -> None:
    # Nothing ends the record of an interface k3snet cannot tell (destroy leaves it, as
    # it leaves the sysctl): the warning lasted for ever, after the value was given back
    # by hand as it asked too.
    ns, _other = lab
    take_over_rp_filter(ns, tmp_path)
    name = "d0"
    if change == "address":
        ip(ns, "link", "set", "d0", "address", "02:00:00:00:00:07")
    else:
        older_record(tmp_path)
        name = "d9"
        ip(ns, "link", "set", "d0", "name", name)
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        backend.apply(plan(backend.observe(), State()))  # destroy
        [_warning] = backend.warnings  # k3snet's value is still there
        run_in(ns, ["sysctl", "-qw", f"net.ipv4.conf.{name}.rp_filter=0"])  # by hand
        backend.observe()
        assert backend.warnings == ()
