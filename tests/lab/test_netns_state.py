"""A lab's namespace takes the records k3snet's backends kept for it along when deleted.

An in-process backend built without a ``state_dir`` (a benchmark's, a lab script's)
keeps its records under ``/run/k3snet/<namespace>/``: one directory per lab namespace
piled up, and a later namespace of that name given the same inode read them as its own.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from k3snet.backends.iptables import made
from k3snet.backends.iptables.made import Made, MadeRecord
from k3snet.backends.lock import namespace_id
from k3snet.lab import netns as lab_netns
from k3snet.lab.netns import forget_netns_state, temporary_netns

MADE = [Made("ip", "filter", "FORWARD", True)]


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The iptables backend's default root, moved to a directory of this test's."""
    monkeypatch.setattr(made, "DEFAULT_ROOT", tmp_path)
    monkeypatch.delenv("K3SNET_STATE_DIR", raising=False)
    return tmp_path


@pytest.mark.kernel
@pytest.mark.usefixtures("require_root")
def test_a_temporary_namespace_takes_its_records_along(root: Path) -> None:
    with temporary_netns("state") as ns:
        record = MadeRecord(ns, namespace_id(ns))  # as a backend without a state_dir
        record.save(MADE)
        (record.file.parent / "lock").touch()  # the netlink backend's sysctl lock
        assert record.file.parent == root / ns
    assert not (root / ns).exists()


def test_the_default_root_is_the_backends_default_state_dir() -> None:
    from k3snet.backends.netlink import DEFAULT_STATE_ROOT  # noqa: PLC0415

    assert lab_netns._STATE_ROOT == DEFAULT_STATE_ROOT


def _gone(monkeypatch: pytest.MonkeyPatch) -> None:
    """No namespace of any name exists (what ``delete_netns`` leaves)."""
    monkeypatch.setattr(lab_netns, "netns_exists", lambda name: False)


def test_only_the_namespace_s_own_directory_goes(root: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _gone(monkeypatch)
    for name in ("host", "locks", "spec-cache", "odd", "linked", "shared", "plain"):
        (root / name).mkdir(mode=0o700)
    # The caller's own namespace's records: never a deleted namespace's.
    MadeRecord(None, "1-1").save(MADE)
    (root / "host" / "sysctl.json").write_text("{}")
    # Directories of k3snet's that a namespace may be named after.
    (root / "locks" / "netns-1-2.lock").touch()
    (root / "spec-cache" / "0123.json").write_text("{}")
    # Something else beside the records: not only k3snet's.
    MadeRecord("odd", "1-3").save(MADE)
    (root / "odd" / "notes.txt").write_text("mine")
    # A link in a record's place, and a directory writable by others.
    os.symlink(root / "plain", root / "linked" / "sysctl.json")
    MadeRecord("shared", "1-4").save(MADE)
    (root / "shared").chmod(0o777)
    (root / "elsewhere").symlink_to(root / "plain")  # the namespace's directory a link
    (root / "plain" / "keep").write_text("x")
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    for name in ("host", "locks", "spec-cache", "odd", "linked", "shared", "elsewhere",
                 "missing"):
        forget_netns_state(name)
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == before
    # Its records, their temporaries, the sysctl lock: gone with the directory.
    MadeRecord("lab-1", "1-5").save(MADE)
    for extra in ("sysctl.json", "lock", ".iptables-made-x1"):
        (root / "lab-1" / extra).write_text("{}")
    forget_netns_state("lab-1")
    assert not (root / "lab-1").exists()


def test_nothing_goes_while_a_namespace_of_that_name_exists(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab_netns, "netns_exists", lambda name: True)
    MadeRecord("lab-2", "1-6").save(MADE)
    forget_netns_state("lab-2")
    assert MadeRecord("lab-2", "1-6").load() == MADE


@pytest.mark.parametrize("name", ["", "..", ".", "a/b", "../etc", "x" * 65])
def test_a_name_that_is_no_namespace_name_is_refused(root: Path, name: str) -> None:
    with pytest.raises(ValueError, match="not a valid network namespace name"):
        forget_netns_state(name)


def test_the_cli_s_state_dir_is_searched_too(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _gone(monkeypatch)
    monkeypatch.setattr(made, "DEFAULT_ROOT", tmp_path / "default")
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path / "cli"))
    record = MadeRecord("lab-3", "1-7", tmp_path / "cli")
    record.save(MADE)
    forget_netns_state("lab-3")
    assert not record.file.parent.exists()


def test_a_namespace_named_host_takes_its_own_record_along_and_leaves_the_caller_s(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The caller's own namespace keeps its records in host/, and a namespace named
    # "host" its iptables record beside them (iptables-made-netns.json): that one
    # stayed when the namespace was deleted, the directory being the caller's.
    _gone(monkeypatch)
    MadeRecord(None, "1-8").save(MADE)
    named = MadeRecord("host", "1-9")
    named.save(MADE)
    (root / "host" / "sysctl.json").write_text("{}")
    (root / "host" / "sysctl-netns.json").write_text("{}")  # the netlink backend's
    assert named.file == root / "host" / "iptables-made-netns.json"
    forget_netns_state("host")
    assert sorted(p.name for p in (root / "host").iterdir()) == [
        "iptables-made.json", "sysctl.json"]
    assert MadeRecord(None, "1-8").load() == MADE


def test_a_namespace_named_host_that_exists_keeps_its_record(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab_netns, "netns_exists", lambda name: True)
    MadeRecord("host", "1-10").save(MADE)
    forget_netns_state("host")
    assert MadeRecord("host", "1-10").load() == MADE
