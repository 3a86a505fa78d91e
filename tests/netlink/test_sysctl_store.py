"""The sysctl state file says which sysctls k3snet owns and what to write back: trusted only
from k3snet's own user, as the spec cache and the kept read are, and written safely.

It is authoritative, not a shortcut: where the spec cache and the kept read skip an
untrusted file, the store refuses to go on, naming the file. No root needed but to
give a file to another user (skipped otherwise).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import pytest

from k3snet.backends.netlink.sysctls import LinkId, SysctlState, SysctlStore
from k3snet.errors import BackendError

IDENTITY = "1:2"


def store(directory: Path) -> SysctlStore:
    return SysctlStore(directory, "lab", IDENTITY)


def planted(directory: Path, owned: Mapping[str, object]) -> Path:
    """A state file with ``owned`` as another writer would put it."""
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / "sysctl.json"
    path.write_text(json.dumps({"format": 1, "identity": IDENTITY, "owned": owned}))
    path.chmod(0o600)
    return path


OWNED = {"net.ipv4.ip_forward": {"value": "1", "previous": "0"}}


def test_a_state_file_round_trips_in_a_directory_of_its_own(tmp_path: Path) -> None:
    kept = store(tmp_path / "state")
    kept.save(SysctlState({"net.ipv4.ip_forward": ("1", "0")}, {"net.ipv4.conf.all.rp_filter"}))
    assert kept.load() == SysctlState({"net.ipv4.ip_forward": ("1", "0")},
                                      {"net.ipv4.conf.all.rp_filter"})
    assert (tmp_path / "state" / "sysctl.json").stat().st_mode & 0o077 == 0
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["sysctl.json"]


@pytest.mark.parametrize("mode", [0o770, 0o777, 0o1777])
def test_a_state_file_in_a_directory_others_can_write_is_refused(tmp_path: Path,
                                                                 mode: int) -> None:
    directory = tmp_path / "shared"
    planted(directory, OWNED)
    directory.chmod(mode)
    with pytest.raises(BackendError, match="writable by"):
        store(directory).load()
    with pytest.raises(BackendError, match="writable by"):
        store(directory).save(SysctlState())
    assert json.loads((directory / "sysctl.json").read_text())["owned"] == OWNED


def test_a_state_file_others_can_write_is_refused(tmp_path: Path) -> None:
    path = planted(tmp_path / "state", OWNED)
    path.chmod(0o666)
    with pytest.raises(BackendError, match="writable by"):
        store(tmp_path / "state").load()


def test_a_state_file_that_is_a_link_is_refused(tmp_path: Path) -> None:
    elsewhere = planted(tmp_path / "elsewhere", OWNED)
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "state" / "sysctl.json").symlink_to(elsewhere)
    with pytest.raises(BackendError, match="not a regular file"):
        store(tmp_path / "state").load()


def test_a_state_file_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user")
    path = planted(tmp_path / "state", OWNED)
    os.chown(path, 65534, 65534)
    with pytest.raises(BackendError, match="owned by uid 65534"):
        store(tmp_path / "state").load()


def test_no_state_file_is_no_sysctl_owned(tmp_path: Path) -> None:
    assert store(tmp_path / "absent").load() == SysctlState()
    (tmp_path / "empty").mkdir(mode=0o700)
    assert store(tmp_path / "empty").load() == SysctlState()


def test_the_switches_a_forwarding_write_overwrote_round_trip_and_an_empty_record_is_left_out(
        tmp_path: Path) -> None:
    kept = store(tmp_path / "state")
    spread = {"net.ipv4.ip_forward": {"net.ipv4.conf.e0.forwarding": "1"}}
    kept.save(SysctlState({"net.ipv4.ip_forward": ("1", "0")}, set(), spread))
    assert kept.load().spread == spread
    kept.save(SysctlState({"net.ipv4.ip_forward": ("1", "0")}, set(),
                          {"net.ipv4.ip_forward": {}}))
    assert "spread" not in json.loads((tmp_path / "state" / "sysctl.json").read_text())


def test_the_interface_index_of_an_owned_sysctl_round_trips_and_a_released_ones_is_dropped(
        tmp_path: Path) -> None:
    kept = store(tmp_path / "state")
    name = "net.ipv4.conf.x0.rp_filter"
    x0 = LinkId(7, "veth", "02:00:00:00:00:07")
    kept.save(SysctlState({name: ("2", "0")}, set(), {},
                          {name: x0, "net.ipv4.conf.y0.rp_filter": LinkId(8)}))
    assert kept.load().links == {name: x0}
    assert kept.load().owns(name, {"x0": x0})
    assert not kept.load().owns(name, {"x0": LinkId(9, "veth", "02:00:00:00:00:07")})
    # Another interface given index 7 (another address, another kind) is not it.
    assert not kept.load().owns(name, {"x0": LinkId(7, "veth", "02:00:00:00:00:08")})
    assert not kept.load().owns(name, {"x0": LinkId(7, "vlan", "02:00:00:00:00:07")})


def test_a_record_of_the_index_alone_is_read_as_an_older_version_s(tmp_path: Path) -> None:
    # As k3snet wrote it before it kept the kind and hardware addresses.
    name = "net.ipv4.conf.x0.rp_filter"
    planted(tmp_path / "state", {name: {"value": "2", "previous": "0"}})
    path = tmp_path / "state" / "sysctl.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "links": {name: 7}}))
    state = store(tmp_path / "state").load()
    assert state.links == {name: LinkId(7, marked=False)}
    now = LinkId(7, "veth", "02:00:00:00:00:07")
    assert state.owns(name, {"x0": now})  # its name and index: as that version judged
    assert state.follow({"x0": now}).links == {name: now}  # completed
    renamed = state.follow({"x9": now})  # renamed, or another interface moved in?
    assert renamed.owned == state.owned
    assert not renamed.owns(name, {"x9": now})
    [doubt] = state.doubts({"x9": now})
    assert doubt.startswith(name)
    assert "x9 (index 7)" in doubt
    assert state.doubts({"x0": now}) == []


def test_a_link_is_told_by_kind_and_address_and_by_a_permanent_address_beyond_them() -> None:
    recorded = LinkId(7, None, "02:00:00:00:00:07", "52:54:00:00:00:07")
    assert recorded.judge(LinkId(7, None, "02:00:00:00:00:07", "52:54:00:00:00:07"))
    # A bond's slave: its address is the bond's, its permanent address its own.
    assert recorded.judge(LinkId(7, None, "02:00:00:00:00:99", "52:54:00:00:00:07"))
    assert recorded.judge(LinkId(7, None, "02:00:00:00:00:07", "52:54:00:00:00:99")) is False
    assert recorded.judge(LinkId(8, None, "02:00:00:00:00:07", "52:54:00:00:00:07")) is False
    assert recorded.judge(None) is False
    unsure = LinkId(7, "veth", "02:00:00:00:00:07")
    assert unsure.judge(LinkId(7, "veth", "02:00:00:00:00:08")) is None  # changed, or another
    assert LinkId(7, marked=False).judge(LinkId(7, "veth", "02:00:00:00:00:08")) is None


def test_the_kind_and_addresses_of_a_record_round_trip_beside_the_index(tmp_path: Path) -> None:
    kept = store(tmp_path / "state")
    secret = "net.ipv6.conf.default.stable_secret"  # noqa: S105 - a sysctl's name
    switch = "net.ipv6.conf.x0.addr_gen_mode"
    x0 = LinkId(7, None, "02:00:00:00:00:07", "52:54:00:00:00:07")
    kept.save(SysctlState({secret: ("::1", None)}, set(), {secret: {switch: "1"}}, {},
                          {secret: {switch: x0}}))
    assert kept.load().spread_links == {secret: {switch: x0}}
    data = json.loads((tmp_path / "state" / "sysctl.json").read_text())
    assert data["spread_links"] == {secret: {switch: 7}}  # where older versions read it


def test_a_namespace_named_host_keeps_its_own_state_file_beside_the_caller_s(
        tmp_path: Path) -> None:
    """Both are kept in ``<state_dir>/host``: the named one used to read the other's file
    as "left by a deleted namespace", and its first save replaced it (reproduced with two
    processes and a namespace named host, in a private mount namespace); then the second
    of them to use the directory was refused, its observe and apply failing until it was
    given another state_dir. The named one has a file of its own, as the iptables
    backend's record."""
    node = SysctlStore(tmp_path / "host", None, "4:1")
    node.save(SysctlState({"net.ipv4.ip_forward": ("1", "0")}))
    named = SysctlStore(tmp_path / "host", "host", "4:2")
    assert named.load() == SysctlState()
    named.save(SysctlState({"net.ipv4.conf.all.rp_filter": ("2", "1")}))
    assert node.load() == SysctlState({"net.ipv4.ip_forward": ("1", "0")})
    assert named.load() == SysctlState({"net.ipv4.conf.all.rp_filter": ("2", "1")})
    assert sorted(p.name for p in (tmp_path / "host").iterdir()) == [
        "sysctl-netns.json", "sysctl.json"]
    assert json.loads((tmp_path / "host" / "sysctl-netns.json").read_text())[
        "namespace"] == "host"
    # Another namespace's file is still refused (a directory given to two of them).
    SysctlStore(tmp_path / "other", "lab", "4:3").save(SysctlState())
    with pytest.raises(BackendError, match="of network namespace 'lab'"):
        SysctlStore(tmp_path / "other", None, "4:1").load()


def _earlier_named_host_file(directory: Path) -> None:
    """host/sysctl.json as a namespace named host wrote it before it had its own file."""
    directory.mkdir(mode=0o755)
    (directory / "sysctl.json").write_text(json.dumps({
        "format": 1, "namespace": "host", "identity": "4:2",
        "owned": {"net.ipv4.ip_forward": {"value": "1", "previous": "0"}}, "released": []}))


def test_a_named_host_s_earlier_file_is_read_and_moved_by_whichever_comes_first(
        tmp_path: Path) -> None:
    named_state = SysctlState({"net.ipv4.ip_forward": ("1", "0")})
    # The namespace named host first: it reads the file, its save moves it.
    _earlier_named_host_file(tmp_path / "a")
    named = SysctlStore(tmp_path / "a", "host", "4:2")
    assert named.load() == named_state
    named.save(named.load())
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["sysctl-netns.json"]
    assert SysctlStore(tmp_path / "a", None, "4:1").load() == SysctlState()
    # The namespace k3snet runs in first: it was refused; it moves the file aside.
    _earlier_named_host_file(tmp_path / "b")
    assert SysctlStore(tmp_path / "b", None, "4:1").load() == SysctlState()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["sysctl-netns.json"]
    assert SysctlStore(tmp_path / "b", "host", "4:2").load() == named_state


def test_a_state_file_left_by_a_deleted_namespace_of_the_same_name_is_ignored(
        tmp_path: Path) -> None:
    SysctlStore(tmp_path / "lab", "lab", "4:1").save(
        SysctlState({"net.ipv4.ip_forward": ("1", "0")}))
    assert SysctlStore(tmp_path / "lab", "lab", "4:2").load() == SysctlState()


def test_follow_moves_only_records_whose_interface_now_has_another_name() -> None:
    x0, y0, z0 = ("net.ipv4.conf.x0.rp_filter", "net.ipv4.conf.y0.rp_filter",
                  "net.ipv4.conf.z0.rp_filter")
    state = SysctlState(owned={x0: ("2", "0"), y0: ("1", "0"), z0: ("1", "0"),
                               "net.ipv4.ip_forward": ("1", "0")},
                        released={"net.ipv4.conf.x9.rp_filter"},
                        links={x0: LinkId(3), y0: LinkId(4), z0: LinkId(5)})
    three, four, five = LinkId(3), LinkId(4), LinkId(5)
    assert state.follow({"x0": three, "y0": four, "z0": five}) is state  # nothing renamed
    assert state.follow({"y0": four}) is state  # x0 and z0 deleted: nothing to follow
    # x0 renamed x9, z0 renamed w0; y0 as it was.
    moved = state.follow({"x9": three, "y0": four, "w0": five})
    assert moved.owned == {"net.ipv4.conf.x9.rp_filter": ("2", "0"), y0: ("1", "0"),
                           "net.ipv4.conf.w0.rp_filter": ("1", "0"),
                           "net.ipv4.ip_forward": ("1", "0")}
    assert moved.links == {"net.ipv4.conf.x9.rp_filter": three, y0: four,
                           "net.ipv4.conf.w0.rp_filter": five}
    assert moved.released == set()
    assert state.owned[x0] == ("2", "0")  # a copy: the loaded state is left as it was
    clash = state.follow({"y0": three, "q0": four, "z0": five})  # x0 renamed y0, y0 q0
    assert set(clash.owned) >= {y0, "net.ipv4.conf.q0.rp_filter", z0}
    assert clash.owned[y0] == ("2", "0")


def test_a_state_file_of_another_instance_of_the_same_inode_is_ignored(tmp_path: Path) -> None:
    # Another boot, or a namespace deleted and made again in the same inode: the same
    # device and inode, another boot id or cookie. A file of an older k3snet, with no
    # instance, is judged by the inode alone, as that k3snet judged it.
    directory = tmp_path / "state"
    SysctlStore(directory, "lab", IDENTITY, instance="boot:7").save(
        SysctlState({"net.ipv4.ip_forward": ("1", "0")}))
    assert json.loads((directory / "sysctl.json").read_text())["instance"] == "boot:7"
    assert SysctlStore(directory, "lab", IDENTITY, instance="boot:8").load() == SysctlState()
    assert SysctlStore(directory, "lab", IDENTITY, instance="boot:7").load().owned
    planted(directory, OWNED)
    assert SysctlStore(directory, "lab", IDENTITY, instance="boot:8").load().owned
