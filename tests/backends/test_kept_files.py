"""k3snet._kept: the files a process keeps for the next one, written atomically and only
where trusted, read only when trusted (the spec cache and the nftables kept read)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from k3snet import _kept


def test_a_written_file_holds_what_was_written_mode_0600_and_leaves_no_temporary(
        tmp_path: Path) -> None:
    directory = tmp_path / "state"
    file = directory / "one.kept"
    assert _kept.write_atomic(file, b"first", ".t-")
    assert _kept.write_atomic(file, "second", ".t-")  # replaced, text encoded
    assert file.read_bytes() == b"second"
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert sorted(p.name for p in directory.iterdir()) == ["one.kept"]
    assert _kept.read_trusted(file, 100) == b"second"


def test_nothing_is_written_into_a_directory_others_could_write(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    directory.chmod(0o777)
    assert not _kept.write_atomic(directory / "one.kept", b"x", ".t-")
    assert list(directory.iterdir()) == []


def test_a_temporary_name_taken_is_never_opened_through_and_another_is_tried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"not to be touched")
    names = iter([b"\x01" * 8, b"\x01" * 8, b"\x02" * 8])
    monkeypatch.setattr(os, "urandom", lambda size: next(names))  # _kept's
    (directory / f".t-{'01' * 8}.tmp").symlink_to(elsewhere)  # someone's planted link
    assert _kept.write_atomic(directory / "one.kept", b"mine", ".t-")
    assert elsewhere.read_bytes() == b"not to be touched"
    assert (directory / "one.kept").read_bytes() == b"mine"
    # Every name taken: no write, and nothing left behind.
    monkeypatch.setattr(os, "urandom", lambda size: b"\x01" * 8)
    assert not _kept.write_atomic(directory / "two.kept", b"x", ".t-")
    assert not (directory / "two.kept").exists()
    assert sorted(p.name for p in directory.iterdir()) == [f".t-{'01' * 8}.tmp", "one.kept"]


def test_a_failed_write_removes_its_temporary(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "state"

    def refused(src: object, dst: object) -> None:
        raise OSError("refused")

    monkeypatch.setattr(os, "replace", refused)  # _kept's
    assert not _kept.write_atomic(directory / "one.kept", b"x", ".t-")
    assert list(directory.iterdir()) == []


def test_reading_refuses_a_symlink_or_a_file_others_could_write(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    file = directory / "one.kept"
    assert _kept.write_atomic(file, b"data", ".t-")
    link = directory / "link.kept"
    link.symlink_to(file)
    assert _kept.read_trusted(link, 100) is None
    file.chmod(0o620)
    assert _kept.read_trusted(file, 100) is None
    assert os.path.exists(file)


def test_temporaries_a_killed_writer_left_are_pruned_and_live_ones_and_others_kept(
        tmp_path: Path) -> None:
    # A writer killed between making its temporary file and renaming it (SIGKILL, the
    # OOM killer) never removes it: every such kill left one more in the cache for ever.
    directory = tmp_path / "state"
    file = directory / "one.kept"
    assert _kept.write_atomic(file, b"x", ".t-")
    old = _kept.STALE_TEMPORARY + 60
    names = {"left": ".t-0123456789abcdef.tmp", "live": ".t-fedcba9876543210.tmp",
             "other prefix": ".u-0123456789abcdef.tmp", "other name": ".t-notours.tmp"}
    for what, name in names.items():
        (directory / name).write_bytes(b"")
        if what != "live":
            os.utime(directory / name, (os.path.getmtime(file) - old,) * 2)
    os.symlink("/nonexistent", directory / ".t-00000000000000ff.tmp")
    _kept.prune(directory, file, 10, ".kept", temporary=".t-")
    assert not (directory / names["left"]).exists()
    kept = {p.name for p in directory.iterdir()}
    assert kept == {"one.kept", ".t-00000000000000ff.tmp"} | set(names.values()) - {names["left"]}


@pytest.mark.parametrize("record", ["sysctl", "iptables-made"])
def test_a_record_is_on_disk_before_it_replaces_the_one_there_and_its_name_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record: str) -> None:
    # The records say what k3snet owns and what to give back: on a state_dir kept on
    # disk (/var/lib/k3snet), a power cut after a rename whose data was not yet written
    # (XFS, ext4 with noauto_da_alloc) left an empty sysctl.json, and every observe
    # failed on a "corrupt" file until an operator removed it, with the values to give
    # back. The caches (spec cache, kept read) need no sync: a damaged one is a miss.
    from k3snet.backends.iptables.made import Made, MadeRecord  # noqa: PLC0415
    from k3snet.backends.netlink.sysctls import SysctlState, SysctlStore  # noqa: PLC0415

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("sync directory" if stat.S_ISDIR(os.fstat(fd).st_mode) else "sync file")
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path, **kwargs: object) -> None:
        events.append("rename")
        real_replace(src, dst, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    if record == "sysctl":
        SysctlStore(tmp_path / "lab", "lab", "1:2").save(
            SysctlState({"net.ipv4.ip_forward": ("1", "0")}))
    else:
        MadeRecord("lab", "1-2", tmp_path).save([Made("ip", "filter", "FORWARD", True)])
    assert events == ["sync file", "rename", "sync directory"]
