"""One state root for several namespaces (``K3SNET_STATE_DIR``, the CLI's and the
agent's): each namespace keeps its own sysctl file, so ``destroy`` in one restores
that namespace's previous values whatever was applied in another.

The kernel's own view is read with ``ip netns exec NS cat /proc/sys/...``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet import converge, destroy
from k3snet.backends import netns as netns_module
from k3snet.backends.netlink import NetlinkBackend
from k3snet.backends.netlink.sysctls import namespace_identity
from k3snet.backends.netns import NetnsRunner
from k3snet.errors import ApplyError, RollbackError
from k3snet.lab.netns import create_netns, delete_netns, run_in, temporary_netns
from k3snet.model import State, Sysctl

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

_FORWARD = "net/ipv4/ip_forward"


@pytest.fixture
def two() -> Iterator[tuple[str, str]]:
    with temporary_netns("route") as first, temporary_netns("route") as second:
        yield first, second


def _forwarding(ns: str) -> str:
    return run_in(ns, ["cat", f"/proc/sys/{_FORWARD}"]).stdout.strip()


def _set(ns: str, value: str) -> None:
    run_in(ns, ["sysctl", "-qw", f"net.ipv4.ip_forward={value}"])


_WANTED = State(owned=[Sysctl("net.ipv4.ip_forward", 1)])


def test_destroy_in_one_namespace_restores_its_value_after_an_apply_in_another(
        two: tuple[str, str], tmp_path: Path) -> None:
    first, second = two
    _set(first, "0")
    _set(second, "0")
    with NetlinkBackend(first, state_dir=tmp_path) as a:
        converge(a, _WANTED)
    with NetlinkBackend(second, state_dir=tmp_path) as b:
        converge(b, _WANTED)
    assert (_forwarding(first), _forwarding(second)) == ("1", "1")
    with NetlinkBackend(first, state_dir=tmp_path) as a:
        destroy(a)
    assert (_forwarding(first), _forwarding(second)) == ("0", "1")
    with NetlinkBackend(second, state_dir=tmp_path) as b:
        destroy(b)
    assert (_forwarding(first), _forwarding(second)) == ("0", "0")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first, second])


def _legacy(root: Path, ns: str, previous: str) -> Path:
    """The shared file an older k3snet wrote at ``root/sysctl.json``, naming ``ns``."""
    path = root / "sysctl.json"
    path.write_text(json.dumps({
        "format": 1, "namespace": ns, "identity": namespace_identity(ns),
        "owned": {"net.ipv4.ip_forward": {"value": "1", "previous": previous}},
        "released": []}))
    path.chmod(0o644)
    return path


def test_an_older_shared_file_is_read_once_by_the_namespace_it_names(
        two: tuple[str, str], tmp_path: Path) -> None:
    first, second = two
    _set(first, "1")
    _set(second, "1")
    legacy = _legacy(tmp_path, first, previous="0")
    with NetlinkBackend(second, state_dir=tmp_path) as b:
        assert not b.observe().owned  # another namespace's: never taken for its own
        converge(b, _WANTED)  # a save in another namespace leaves the file alone
    assert legacy.exists()
    with NetlinkBackend(first, state_dir=tmp_path) as a:
        assert a.observe().owned == _WANTED.owned
        destroy(a)
    assert _forwarding(first) == "0"  # the previous value the older file recorded
    assert not legacy.exists()  # read once: the namespace's own file holds it now
    assert (tmp_path / first / "sysctl.json").exists()
    assert _forwarding(second) == "1"


def test_a_full_state_directory_fails_the_apply_cleanly_not_as_a_failed_rollback(
        two: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The record is written before the sysctl: on a full (or read-only) file system that
    # first write fails, nothing is changed, and the rollback's write of the record "as
    # it was" failed the same way: reported as ROLLBACK FAILED, the node half-changed.
    from k3snet.backends.netlink import sysctls  # noqa: PLC0415

    first, _ = two
    _set(first, "0")

    def full(file: Path, *_: object, **__: object) -> None:
        raise OSError(28, "No space left on device", str(file))

    monkeypatch.setattr(sysctls, "replace_atomically", full)
    with NetlinkBackend(first, state_dir=tmp_path) as backend, \
            pytest.raises(ApplyError) as caught:
        converge(backend, _WANTED)
    assert not isinstance(caught.value, RollbackError), caught.value
    assert "No space left on device" in str(caught.value)
    assert _forwarding(first) == "0"
    assert not (tmp_path / first / "sysctl.json").exists()


def run_cmd(argv: list[str]) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def _made_again_in_its_inode(name: str, inode: int) -> bool:
    """Delete namespace ``name`` and make one of that name again until the kernel gives
    it the inode number the deleted one had (it frees that number once the namespace is
    cleaned up, asynchronously, and hands out the lowest free one); whether it did."""
    for _ in range(20):
        run_cmd(["ip", "netns", "delete", name])
        time.sleep(0.1)  # the kernel's cleanup of the namespace, done in a worker
        run_cmd(["ip", "netns", "add", name])
        if os.stat(f"/run/netns/{name}").st_ino == inode:
            return True
    return False


def test_a_deleted_namespaces_record_is_not_taken_by_one_made_again_in_its_inode(
        tmp_path: Path) -> None:
    # An nsfs inode number is reused as soon as its namespace is freed: `ip netns delete
    # NS; ip netns add NS` (a lab, a CNI's sandbox made again) very often gives the new
    # namespace the old one's device and inode, the identity its record was tied to.
    with temporary_netns("route") as ns:
        _set(ns, "0")
        with NetlinkBackend(ns, state_dir=tmp_path) as backend:
            converge(backend, _WANTED)  # records ip_forward as k3snet's, previous 0
        if not _made_again_in_its_inode(ns, os.stat(f"/run/netns/{ns}").st_ino):
            # Others made namespaces meanwhile and took the inode: the record is given
            # the new one's, as the kernel would have (what it was tied to alone).
            record = tmp_path / ns / "sysctl.json"
            data = json.loads(record.read_text())
            data["identity"] = namespace_identity(ns)
            record.write_text(json.dumps(data))
        _set(ns, "1")  # the new namespace's administrator turns forwarding on
        with NetlinkBackend(ns, state_dir=tmp_path) as backend:
            assert not backend.observe().owned  # the deleted namespace's record
            destroy(backend)
        assert _forwarding(ns) == "1"  # not given the deleted namespace's previous 0


def test_each_namespace_has_an_instance_of_its_own_a_named_ones_with_the_boot_id(
        two: tuple[str, str]) -> None:
    from k3snet.backends.netns import boot_id, namespace_instance  # noqa: PLC0415

    first, second = two
    instances = [namespace_instance(first), namespace_instance(second), namespace_instance(None)]
    if None in instances:
        pytest.skip("no netns cookie (Linux before 5.14)")
    assert len(set(instances)) == 3
    assert all(str(i).startswith(f"{boot_id()}:") for i in instances[:2])
    assert namespace_instance(first) == instances[0]


def _entered(ns: str, tmp_path: Path, wanted: State | None) -> None:
    """``ip netns exec NS k3snet apply`` (``None``: ``destroy``) without ``--netns``: a
    backend of the caller's own namespace, made and used in a thread that entered NS."""
    def run() -> None:
        with NetlinkBackend(None, state_dir=tmp_path) as backend:
            if wanted is None:
                destroy(backend)
            else:
                converge(backend, wanted)

    with NetnsRunner(ns) as runner:
        runner.call(run)


def test_namespaces_entered_without_netns_keep_a_record_each_under_their_name(
        two: tuple[str, str], tmp_path: Path) -> None:
    """Entered by ``ip netns exec`` (no ``--netns``), every namespace kept its record as
    the caller's own, in ``host``'s one file: each took another's for a stale one and
    replaced it, and a destroy in the first left ``ip_forward`` at 1 (a lab namespace).
    Each is kept under its name now, the one ``--netns NAME`` reads."""
    first, second = two
    _set(first, "0")
    _set(second, "0")
    _entered(first, tmp_path, _WANTED)
    _entered(second, tmp_path, _WANTED)
    assert (_forwarding(first), _forwarding(second)) == ("1", "1")
    _entered(first, tmp_path, None)
    assert (_forwarding(first), _forwarding(second)) == ("0", "1")
    with NetlinkBackend(second, state_dir=tmp_path) as b:  # --netns NAME: the same record
        destroy(b)
    assert (_forwarding(first), _forwarding(second)) == ("0", "0")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first, second])


def test_a_record_kept_in_host_s_file_by_an_entered_namespace_is_read_under_its_name(
        two: tuple[str, str], tmp_path: Path) -> None:
    """What an earlier k3snet kept in ``host/sysctl.json`` for a namespace entered by
    ``ip netns exec`` is read under the namespace's name, once, and moved there."""
    first, _ = two
    _set(first, "1")
    (tmp_path / "host").mkdir(mode=0o700)
    (tmp_path / "host" / "sysctl.json").write_text(json.dumps({
        "format": 1, "namespace": None, "identity": namespace_identity(first),
        "owned": {"net.ipv4.ip_forward": {"value": "1", "previous": "0"}}, "released": []}))
    with NetlinkBackend(first, state_dir=tmp_path) as a:
        destroy(a)
    assert _forwarding(first) == "0"
    assert not (tmp_path / "host" / "sysctl.json").exists()


@contextlib.contextmanager
def _second_name(ns: str, alias: str) -> Iterator[None]:
    """Namespace ``ns`` also reached as ``alias`` in ``/run/netns`` (a bind mount of its
    handle, as ``ip netns attach`` makes), for the block."""
    name = netns_module.netns_path(alias)
    name.touch()
    try:
        subprocess.run(["mount", "--bind", str(netns_module.netns_path(ns)), str(name)],
                       check=True)
        try:
            yield
        finally:
            subprocess.run(["umount", str(name)], check=False)
    finally:
        name.unlink()


def test_a_name_of_the_node_s_own_namespace_keeps_the_record_of_host(
        two: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--netns NAME`` of PID 1's namespace (``ip netns attach node 1``, a bind mount of
    ``/proc/1/ns/net``) kept a second record beside the one of ``k3snet`` run without
    ``--netns`` (the agent): a destroy through one left what the other had set. Here
    PID 1's namespace is a lab one (``INIT_NETNS``), reached by two names."""
    first, _ = two
    alias = f"{first}-alias"
    monkeypatch.setattr(netns_module, "INIT_NETNS", netns_module.netns_path(first))
    _set(first, "0")
    with _second_name(first, alias):
        with NetlinkBackend(alias, state_dir=tmp_path) as a:
            converge(a, _WANTED)
        assert _forwarding(first) == "1"
        _entered(first, tmp_path, None)  # the agent's, without --netns
        assert _forwarding(first) == "0"
        assert [p.name for p in tmp_path.iterdir()] == ["host"]


def test_two_names_of_one_namespace_keep_one_record(
        two: tuple[str, str], tmp_path: Path) -> None:
    """A namespace of ``/run/netns`` under a second name (a bind mount of its handle):
    applied through one name, destroyed through the other, its value is given back;
    each name kept a record of its own, and the destroy found nothing to give back."""
    first, _ = two
    alias = f"{first}-alias"
    _set(first, "0")
    with _second_name(first, alias):
        with NetlinkBackend(alias, state_dir=tmp_path) as a:
            converge(a, _WANTED)
        assert _forwarding(first) == "1"
        with NetlinkBackend(first, state_dir=tmp_path) as b:
            destroy(b)
        assert _forwarding(first) == "0"
        assert [p.name for p in tmp_path.iterdir()] == [first]


def test_a_namespace_of_no_name_keeps_a_record_apart_from_the_node_s(
        two: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A namespace no name of ``/run/netns`` reaches, nor PID 1's (``nsenter --net`` into
    a pod's or a container's, ``unshare -n``), entered without ``--netns``: its record was
    ``host``'s, taken for a stale one of the node and replaced, and the node's destroy
    then gave nothing back (``ip_forward`` left at 1). Here PID 1's namespace is a lab
    one (``INIT_NETNS``), and the other's name is hidden (``NETNS_DIR`` emptied)."""
    node, other = two
    monkeypatch.setattr(netns_module, "INIT_NETNS", netns_module.netns_path(node))
    _set(node, "0")
    _set(other, "0")
    nameless = tmp_path / "no-names"
    nameless.mkdir()

    def unnamed(wanted: State | None) -> None:
        with NetnsRunner(other) as runner, monkeypatch.context() as hidden:
            runner.call(lambda: None)  # in the namespace before its name is hidden
            # PID 1's, found by its path before the names are hidden (an unreadable
            # PID 1's namespace is the one k3snet runs in: host's records).
            hidden.setattr(netns_module, "INIT_NETNS", netns_module.netns_path(node))
            hidden.setattr(netns_module, "NETNS_DIR", nameless)

            def run() -> None:
                with NetlinkBackend(None, state_dir=tmp_path / "state") as backend:
                    converge(backend, wanted) if wanted is not None else destroy(backend)

            runner.call(run)

    (tmp_path / "state").mkdir(mode=0o755)
    _entered(node, tmp_path / "state", _WANTED)  # the agent's, without --netns
    unnamed(_WANTED)
    assert (_forwarding(node), _forwarding(other)) == ("1", "1")
    _entered(node, tmp_path / "state", None)
    assert (_forwarding(node), _forwarding(other)) == ("0", "1")
    unnamed(None)
    assert (_forwarding(node), _forwarding(other)) == ("0", "0")


def test_a_name_given_later_that_sorts_first_still_finds_the_record(
        two: tuple[str, str], tmp_path: Path) -> None:
    """A namespace given a second name after an apply (``ip netns attach``, a bind mount
    of its handle), one sorting before the first: the record is kept under the first of
    its names, which the new one became, and a destroy through it (or ``ip netns exec``)
    found nothing (``ip_forward`` left at 1). The record kept under another of its names
    is read, and moved by the first save."""
    first, _ = two
    alias = f"0-{first}"
    assert alias < first
    _set(first, "0")
    with NetlinkBackend(first, state_dir=tmp_path) as a:
        converge(a, _WANTED)
    assert _forwarding(first) == "1"
    (tmp_path / "host").mkdir(mode=0o700)  # the node's own record, read first and passed over
    (tmp_path / "host" / "sysctl.json").write_text(json.dumps({
        "format": 1, "namespace": None, "identity": "1:1",
        "owned": {"net.ipv4.ip_forward": {"value": "1", "previous": "1"}}, "released": []}))
    with _second_name(first, alias):
        with NetlinkBackend(alias, state_dir=tmp_path) as b:  # through the new name
            destroy(b)
        assert _forwarding(first) == "0"
        assert not (tmp_path / first / "sysctl.json").exists()
        assert (tmp_path / "host" / "sysctl.json").exists()


def test_an_older_shared_file_is_read_past_the_node_s_own_record(
        two: tuple[str, str], tmp_path: Path) -> None:
    """The older places a namespace's record may be in are read in turn: the node's own
    record in ``host/`` (read first, for ``ip netns exec``'s records of before
    2026-12-05) hid the older shared ``state_dir/sysctl.json`` naming the namespace, and
    its destroy gave nothing back."""
    first, _ = two
    _set(first, "1")
    legacy = _legacy(tmp_path, first, previous="0")
    (tmp_path / "host").mkdir(mode=0o700)
    (tmp_path / "host" / "sysctl.json").write_text(json.dumps({
        "format": 1, "namespace": None, "identity": "1:1",
        "owned": {"net.ipv4.ip_forward": {"value": "1", "previous": "1"}}, "released": []}))
    with NetlinkBackend(first, state_dir=tmp_path) as a:
        destroy(a)
    assert _forwarding(first) == "0"
    assert not legacy.exists()
    assert (tmp_path / "host" / "sysctl.json").exists()


def test_a_namespace_named_unnamed_inode_keeps_a_record_apart_from_the_nameless_one(
        two: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real name of ``/run/netns`` reading ``unnamed-INODE`` (any name may be given),
    the inode that of a namespace of no name: both kept their records in
    ``state_dir/unnamed-INODE/``, the nameless one took the named one's for a stale
    record and replaced it, and the named one's destroy gave nothing back
    (``ip_forward`` left at 1). A nameless namespace's records are kept where no name
    of ``/run/netns`` can reach (``host/unnamed-INODE``, a name holds no ``/``)."""
    node, other = two
    monkeypatch.setattr(netns_module, "INIT_NETNS", netns_module.netns_path(node))
    named = f"unnamed-{netns_module.netns_path(other).stat().st_ino}"
    nameless = tmp_path / "no-names"
    nameless.mkdir()
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    create_netns(named)
    try:
        _set(named, "0")
        _set(other, "0")
        with NetlinkBackend(named, state_dir=state) as backend:
            converge(backend, _WANTED)
        with NetnsRunner(other) as runner, monkeypatch.context() as hidden:
            runner.call(lambda: None)  # in the namespace before its name is hidden
            hidden.setattr(netns_module, "NETNS_DIR", nameless)

            def run() -> None:
                with NetlinkBackend(None, state_dir=state) as backend:
                    converge(backend, _WANTED)

            runner.call(run)
        assert (_forwarding(named), _forwarding(other)) == ("1", "1")
        with NetlinkBackend(named, state_dir=state) as backend:
            destroy(backend)
        assert (_forwarding(named), _forwarding(other)) == ("0", "1")
    finally:
        delete_netns(named)


def test_a_namespace_given_a_name_after_an_apply_with_none_reads_its_record(
        two: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A namespace of no name (a pod's, entered by ``nsenter --net``) keeps its record
    under ``host/unnamed-INODE``; given a name afterwards (``ip netns attach NAME PID``,
    to clean up after it by name), it kept its records under that name and the old one
    was never read: its destroy gave nothing back (``ip_forward`` left at 1). Here the
    name is hidden for the apply (``NETNS_DIR`` emptied) and seen by the destroy."""
    node, other = two
    monkeypatch.setattr(netns_module, "INIT_NETNS", netns_module.netns_path(node))
    nameless = tmp_path / "no-names"
    nameless.mkdir()
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    _set(other, "0")
    with NetnsRunner(other) as runner, monkeypatch.context() as hidden:
        runner.call(lambda: None)  # in the namespace before its name is hidden
        hidden.setattr(netns_module, "NETNS_DIR", nameless)

        def run() -> None:
            with NetlinkBackend(None, state_dir=state) as backend:
                converge(backend, _WANTED)

        runner.call(run)
    inode = netns_module.netns_path(other).stat().st_ino
    assert (state / "host" / f"unnamed-{inode}" / "sysctl.json").exists()
    assert _forwarding(other) == "1"
    with NetlinkBackend(other, state_dir=state) as backend:
        destroy(backend)
    assert _forwarding(other) == "0"
    assert not (state / "host" / f"unnamed-{inode}" / "sysctl.json").exists()


def test_a_namespace_named_host_given_a_name_sorting_first_reads_its_record(
        two: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A namespace named ``host`` (not the node's) keeps its record as
    ``host/sysctl-netns.json``; given a second name sorting first (``ip netns attach``,
    a bind mount of its handle), it keeps it under that name, and the earlier place
    read was ``host/sysctl.json``, the node's: its destroy through either name gave
    nothing back (``ip_forward`` left at 1). The names are in a ``/run/netns`` of the
    test's own (``NETNS_DIR``), bind mounts of a lab namespace's handle."""
    first, _ = two
    names = tmp_path / "names"
    names.mkdir()
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    handle = netns_module.netns_path(first)
    monkeypatch.setattr(netns_module, "NETNS_DIR", names)
    mounted = []
    try:
        for name in ("host", "0-alias"):
            (names / name).touch()
            subprocess.run(["mount", "--bind", str(handle), str(names / name)], check=True)
            mounted.append(names / name)
            if name == "host":
                _set(first, "0")
                with NetlinkBackend("host", state_dir=state) as backend:
                    converge(backend, _WANTED)
                _set(first, "0")  # set again, entered by ip netns exec host: its own record
                with NetnsRunner("host") as runner:
                    runner.call(lambda: _converge_here(state))
                assert (state / "host" / "sysctl-netns.json").exists()
                assert _forwarding(first) == "1"
        with NetlinkBackend("host", state_dir=state) as backend:
            destroy(backend)
        assert _forwarding(first) == "0"
        assert not (state / "host" / "sysctl-netns.json").exists()
    finally:
        for path in mounted:
            subprocess.run(["umount", str(path)], check=False)


def _converge_here(state: Path) -> None:
    with NetlinkBackend(None, state_dir=state) as backend:
        converge(backend, _WANTED)


def test_the_namespace_k3snet_runs_in_keeps_host_s_record_where_pid_1_s_cannot_be_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # /proc/1/ns/net is unreadable without a ptrace right over PID 1 (a sandbox, a
    # container of another user namespace). The namespace k3snet runs in, of no name,
    # was then taken for a nameless one: the node's own records went to
    # host/unnamed-INODE, and its destroy read nothing of the host/ record kept before.
    monkeypatch.setattr(netns_module, "INIT_NETNS", tmp_path / "unreadable")
    monkeypatch.setattr(netns_module, "NETNS_DIR", tmp_path / "no-names")
    assert netns_module.record_netns(None) is None
