"""The read lease that tells whether a spec file is open for writing: trusted only where
the kernel's own leases say that, given back on every path, and broken by a writer
opening the file meanwhile, which makes the agent look again."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from k3snet.agent import SPEC_SETTLE, FileSpecSource
from k3snet.agent import _spec_source as spec_source

from .test_spec_settle import HEAD, TAIL, WHOLE, Clocks, Node, _old

NFS, EXT4, OVERLAY, TMPFS = 0x6969, 0xEF53, 0x794C7630, 0x01021994


def _leasing(monkeypatch: pytest.MonkeyPatch,
             on_lease: Callable[[int], None]) -> None:
    """fcntl.fcntl with ``on_lease(fd)`` run once a read lease is granted (the kernel's)."""
    real = fcntl.fcntl

    def fake(fd: int, command: int, arg: Any = 0) -> Any:
        answer = real(fd, command, arg)
        if command == fcntl.F_SETLEASE and arg == fcntl.F_RDLCK:
            on_lease(fd)
        return answer

    monkeypatch.setattr(fcntl, "fcntl", fake)


def _refused(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """Every read lease refused with ``code``, as NFSv4, SMB, FUSE or overlayfs may."""
    real = fcntl.fcntl

    def fake(fd: int, command: int, arg: Any = 0) -> Any:
        if command == fcntl.F_SETLEASE and arg == fcntl.F_RDLCK:
            raise OSError(code, os.strerror(code))
        return real(fd, command, arg)

    monkeypatch.setattr(fcntl, "fcntl", fake)


def _leases_of(path: Path) -> list[str]:
    """The kernel's leases (/proc/locks) on ``path``'s inode."""
    info = path.stat()
    inode = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    return [line for line in Path("/proc/locks").read_text().splitlines()
            if "LEASE" in line and inode in line]


@pytest.mark.parametrize("code", [errno.EAGAIN, errno.EINVAL, errno.ENOLCK, errno.ENOSYS])
def test_a_lease_refused_for_another_reason_than_a_writer_keeps_no_spec_waiting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        code: int) -> None:
    # NFSv4 (no read delegation), SMB (no oplock), FUSE, overlayfs: EAGAIN was read as
    # "open for writing": every new spec waited SPEC_SETTLE_LIMIT, then a false warning.
    path = tmp_path / "spec.yaml"
    then = _old(path, WHOLE)
    clocks = Clocks(then + 3600)
    _refused(monkeypatch, code)
    monkeypatch.setattr(spec_source, "_file_system", lambda fd: NFS, raising=False)
    source = FileSpecSource(path, settle=SPEC_SETTLE, clock=clocks.clock,
                            monotonic=clocks.monotonic, sleep=clocks.sleep)
    node = Node(path, source)
    with caplog.at_level(logging.DEBUG, logger="k3snet.agent"):
        assert node.agent.run_pass().status == "ok"
    assert clocks.slept == []
    assert node.routes() == ["172.20.0.0/16", "192.168.2.0/24"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "being written" not in caplog.text
    if code == errno.EAGAIN:
        assert (f"{path}: read lease refused (EAGAIN) on a file system (statfs type 0x6969) "
                "where that does not say it is open for writing: settled by its times "
                "alone") in caplog.text
    # So at every look, each pass: said once (it was said at every pass).
    with caplog.at_level(logging.DEBUG, logger="k3snet.agent"):
        for _ in range(3):
            assert node.agent.run_pass().status == "ok"
    said = [r for r in caplog.records if "read lease refused" in r.message]
    assert len(said) == (1 if code == errno.EAGAIN else 0)


@pytest.mark.parametrize("kind", [EXT4, OVERLAY, TMPFS])
def test_eagain_on_a_file_system_whose_leases_say_a_writer_is_open_for_writing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: int) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(WHOLE)
    _refused(monkeypatch, errno.EAGAIN)
    monkeypatch.setattr(spec_source, "_file_system", lambda fd: kind)
    assert spec_source._open_for_writing(path, path.stat(), set()) is True


def test_the_file_system_type_is_the_one_statfs_gives(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(WHOLE)
    fd = os.open(path, os.O_RDONLY)
    try:
        found = spec_source._file_system(fd)
    finally:
        os.close(fd)
    said = subprocess.run(["stat", "--file-system", "--format=%t", str(path)],
                          capture_output=True, text=True, check=True).stdout
    assert found == int(said, 16)


class Usr1Error(Exception):
    """What the SIGUSR1 handler raises."""


@pytest.fixture
def raising_usr1() -> Iterator[None]:
    """SIGUSR1 handled by raising (a signal whose handler ends what runs)."""

    def handler(signum: int, frame: object) -> None:
        raise Usr1Error

    before = signal.signal(signal.SIGUSR1, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, before)


@pytest.mark.usefixtures("raising_usr1")
@pytest.mark.parametrize("landing", ["exception", "signal"])
def test_the_lease_is_given_back_whatever_ends_the_look_while_it_is_held(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, landing: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(WHOLE)
    held: list[list[str]] = []

    def on_lease(fd: int) -> None:
        held.append(_leases_of(path))
        if landing == "signal":
            signal.raise_signal(signal.SIGUSR1)  # its handler runs here, and raises
        raise KeyboardInterrupt

    _leasing(monkeypatch, on_lease)
    with pytest.raises(Usr1Error if landing == "signal" else KeyboardInterrupt):
        spec_source._open_for_writing(path, path.stat(), set())
    assert len(held) == 1
    assert len(held[0]) == 1  # the lease was held then
    assert _leases_of(path) == []
    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))  # no lease to break: no EWOULDBLOCK


def test_the_lease_is_given_back_after_every_look(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(WHOLE)
    assert spec_source._open_for_writing(path, path.stat(), set()) is False
    with path.open("a"):
        assert spec_source._open_for_writing(path, path.stat(), set()) is True
    assert _leases_of(path) == []
    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def test_a_writer_opening_the_file_while_the_lease_is_held_makes_the_agent_look_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The writer's open waits for the lease (and SIGURG, ignored, is sent); it was read as
    # "not open for writing", and the text read taken though a writer had come.
    path = tmp_path / "spec.yaml"
    _old(path, HEAD)
    source = FileSpecSource(path)
    node = Node(path, source)
    assert node.agent.run_pass().status == "ok"
    assert node.routes() == ["192.168.2.0/24"]
    _old(path, WHOLE)  # a new text, written long ago: taken at once but for the writer
    writers: list[threading.Thread] = []

    def write() -> None:
        with path.open("a") as writer:
            writer.write("# appended\n")

    def on_lease(fd: int) -> None:
        if writers:
            return
        writers.append(threading.Thread(target=write))
        writers[0].start()
        while fcntl.fcntl(fd, fcntl.F_GETLEASE) == fcntl.F_RDLCK:  # until it is breaking
            threading.Event().wait(0.001)

    _leasing(monkeypatch, on_lease)
    try:
        result = node.agent.run_pass()
    finally:
        for writer in writers:
            writer.join()
    assert result.status == "ok"
    assert (node.agent.generation, node.routes()) == (1, ["192.168.2.0/24"])
    assert source.read_again_in is not None
    assert node.agent.run_pass().status == "ok"  # the writer is done: its text goes in force
    assert (node.agent.generation, node.routes()) == (2, ["172.20.0.0/16", "192.168.2.0/24"])
    assert path.read_text() == WHOLE + "# appended\n"
    assert TAIL in path.read_text()
