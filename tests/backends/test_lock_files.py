"""The namespace lock's directory and files are k3snet's own, or refused untouched.

k3snet takes the lock as root; a lock directory another user can write (or owns), or
a link or foreign file at a lock's name, would let that user make root truncate and
write any file. Each is refused with a :class:`~k3snet.errors.BackendError` naming
the path and what is wrong, and nothing it points to is changed.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from k3snet.backends.lock import namespace_id, namespace_lock
from k3snet.errors import BackendError
from tests.in_process import k3snet

VICTIM_TEXT = "important root-owned config\n"


@pytest.fixture
def locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "locks"
    monkeypatch.setenv("K3SNET_LOCK_DIR", str(directory))
    return directory


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    file = tmp_path / "victim.conf"
    file.write_text(VICTIM_TEXT)
    file.chmod(0o644)
    return file


def _lock_file(directory: Path) -> Path:
    return directory / f"netns-{namespace_id(None)}.lock"


def _nobody() -> int:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user")
    return pwd.getpwnam("nobody").pw_uid


def test_a_missing_directory_is_made_private_and_the_lock_holds_the_pid(locks: Path) -> None:
    with namespace_lock([None]):
        file = _lock_file(locks)
        assert file.read_text() == f"{os.getpid()}\n"
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert stat.S_IMODE(locks.stat().st_mode) == 0o700
    with namespace_lock([None]):  # an existing directory and file of k3snet's
        assert _lock_file(locks).read_text() == f"{os.getpid()}\n"


def test_a_link_at_the_lock_s_name_is_refused_and_its_target_untouched(
        locks: Path, victim: Path) -> None:
    locks.mkdir(mode=0o700)
    _lock_file(locks).symlink_to(victim)
    with pytest.raises(BackendError, match=rf"lock file {_lock_file(locks)} .*link"), \
            namespace_lock([None]):
        pass
    assert victim.read_text() == VICTIM_TEXT


@pytest.mark.parametrize(("mode", "why"), [(0o777, "writable by others"),
                                           (0o1777, "writable by others"),
                                           (0o770, "writable by its group")])
def test_a_directory_others_may_write_is_refused(
        locks: Path, victim: Path, mode: int, why: str) -> None:
    locks.mkdir()
    locks.chmod(mode)
    _lock_file(locks).symlink_to(victim)  # what another user could have planted there
    with pytest.raises(BackendError, match=rf"lock directory {locks} is {why}"), \
            namespace_lock([None]):
        pass
    assert victim.read_text() == VICTIM_TEXT


def test_a_directory_of_another_user_is_refused(locks: Path, victim: Path) -> None:
    nobody = _nobody()
    locks.mkdir(mode=0o700)
    _lock_file(locks).symlink_to(victim)
    os.chown(locks, nobody, -1)
    with pytest.raises(BackendError, match=rf"lock directory {locks} is owned by uid {nobody}"), \
            namespace_lock([None]):
        pass
    assert victim.read_text() == VICTIM_TEXT


def test_a_link_as_the_directory_is_refused(locks: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    locks.symlink_to(elsewhere)
    with pytest.raises(BackendError, match=rf"lock directory {locks} is .*link"), \
            namespace_lock([None]):
        pass
    assert list(elsewhere.iterdir()) == []


def test_a_lock_file_of_another_user_is_refused_and_not_truncated(locks: Path) -> None:
    nobody = _nobody()
    locks.mkdir(mode=0o700)
    file = _lock_file(locks)
    file.write_text("someone else's\n")
    file.chmod(0o600)
    os.chown(file, nobody, -1)
    with pytest.raises(BackendError, match=rf"lock file {file} is owned by uid {nobody}"), \
            namespace_lock([None]):
        pass
    assert file.read_text() == "someone else's\n"


def test_a_lock_that_is_not_a_regular_file_is_refused(locks: Path) -> None:
    locks.mkdir(mode=0o700)
    os.mkfifo(_lock_file(locks), 0o600)
    with pytest.raises(BackendError, match=rf"lock file {_lock_file(locks)} is not a regular"), \
            namespace_lock([None]):
        pass


_FULL_DISK = """
import os, resource, signal, sys, threading
from k3snet.backends.lock import namespace_lock
from k3snet.errors import BackendError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
# No byte may be written to any file from here on: the kernel's refusal of the pid's
# write is the one a full /run gives (ENOSPC), through the same call.
resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
said = []
def other():  # another thread: this one takes its own lock again at once
    try:
        with namespace_lock([None], timeout=0):
            said.append("the lock was not held")
    except BackendError as exc:
        said.append(f"held: {exc}")
with namespace_lock([None], timeout=0):
    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
print(said[0])
"""


def test_a_lock_whose_pid_cannot_be_written_is_still_taken_and_held(locks: Path) -> None:
    """The pid is a courtesy for whoever waits; a full /run (no byte can be written) made
    every apply fail with a bare OSError ('File too large', 'No space left on device')."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    ran = subprocess.run([sys.executable, "-c", _FULL_DISK], capture_output=True, text=True,
                         env=os.environ, check=False)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("held: another k3snet process (pid unknown)"), ran.stdout
    assert _lock_file(locks).read_text() == ""  # truncated: no stale pid is quoted


def test_the_parents_the_lock_and_state_directories_need_are_made_writable_by_root_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Under umask 0 (a service started so), Path.mkdir(parents=True) made /run/k3snet
    # 0777: any user could then move the locks or a namespace's sysctl record away, or
    # plant a directory of their own at a namespace's name.
    from k3snet import _kept  # noqa: PLC0415
    from k3snet.backends.netlink.sysctls import SysctlState, SysctlStore  # noqa: PLC0415

    monkeypatch.setenv("K3SNET_LOCK_DIR", str(tmp_path / "run" / "k3snet" / "locks"))
    old = os.umask(0)
    try:
        with namespace_lock([None], timeout=0):
            pass
        SysctlStore(tmp_path / "var" / "k3snet" / "host", None, "1:2").save(SysctlState())
        assert _kept.write_atomic(tmp_path / "cache" / "k3snet" / "spec-cache" / "a.json",
                                  "{}", ".t-")
    finally:
        os.umask(old)
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode)
             for p in sorted(tmp_path.rglob("*")) if p.is_dir()}
    assert modes == {"run": 0o755, "run/k3snet": 0o755, "run/k3snet/locks": 0o700,
                     "var": 0o755, "var/k3snet": 0o755, "var/k3snet/host": 0o755,
                     "cache": 0o755, "cache/k3snet": 0o755, "cache/k3snet/spec-cache": 0o700}


def test_a_relative_lock_directory_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # From two working directories, K3SNET_LOCK_DIR=locks named two directories: two
    # processes each held "the" lock of one namespace and changed it at once.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("K3SNET_LOCK_DIR", "locks")
    with (pytest.raises(BackendError, match="K3SNET_LOCK_DIR 'locks' is not an absolute path"),
          namespace_lock([None], timeout=0)):
        pass
    assert not (tmp_path / "locks").exists()


@pytest.mark.parametrize("made", [True, False], ids=["open", "create"])
def test_a_user_refused_the_lock_directory_is_told_to_run_as_root_or_set_k3snet_lock_dir(
        made: bool) -> None:
    # k3snet installed for a user (or given CAP_NET_ADMIN instead of root) stopped at
    # "cannot open the lock directory /run/k3snet/locks: Permission denied", nothing more
    uid = _nobody()
    # not under tmp_path: pytest's base directory is root's alone, so nobody reached nothing
    with tempfile.TemporaryDirectory(prefix="k3snet-lock-test-") as base:
        Path(base).chmod(0o755)
        _refused_as(uid, Path(base), made=made)


def _refused_as(uid: int, base: Path, *, made: bool) -> None:
    root_only = base / "root-only"
    root_only.mkdir(mode=0o700)
    directory = root_only / "locks" if not made else root_only
    code = ("import sys\n"
            "from k3snet.backends.lock import namespace_lock\n"
            "from k3snet.errors import BackendError\n"
            "try:\n"
            "    with namespace_lock([None], timeout=0): pass\n"
            "except BackendError as exc: print(exc)\n")
    setpriv = shutil.which("setpriv")  # util-linux; subprocess's user= could not exec
    if setpriv is None:                  # this Python, kept under a directory of root's
        pytest.skip("needs setpriv")
    done = subprocess.run(
        [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", sys.executable, "-c",
         code], capture_output=True, text=True, check=False, timeout=60, cwd="/",
        env={"PATH": "/usr/bin:/bin", "K3SNET_LOCK_DIR": str(directory),
             "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert done.returncode == 0, done.stderr
    said = done.stdout.strip()
    assert said.startswith(f"cannot {'open' if made else 'create'} k3snet's lock directory "
                           f"{directory} ($K3SNET_LOCK_DIR, else /run/k3snet/locks: "), said
    assert said.endswith("run k3snet as root, or give every k3snet process of this node the "
                         "same K3SNET_LOCK_DIR, a directory of its user's own)"), said


def test_a_file_in_the_lock_directory_s_place_is_said_to_be_no_directory(locks: Path) -> None:
    # It said "cannot create the lock directory ...: [Errno 17] File exists".
    locks.write_text("")
    with pytest.raises(BackendError, match=rf"^k3snet's lock directory {locks} \(\$K3SNET_"
                       r"LOCK_DIR, else /run/k3snet/locks: where every k3snet process takes "
                       r"the lock of a network namespace it changes\) is not a directory$"), \
            namespace_lock([None]):
        pass


def test_a_lock_file_that_cannot_be_opened_is_named_with_its_namespace(locks: Path) -> None:
    locks.mkdir(mode=0o700)
    _lock_file(locks).mkdir()  # a directory in its place: open() says EISDIR
    with pytest.raises(BackendError, match=rf"^cannot open the lock file {_lock_file(locks)} "
                       r"\(k3snet's lock of network namespace 'host', which every k3snet "
                       r"process holds while it changes that namespace; .*\): Is a directory$"), \
            namespace_lock([None]):
        pass


def test_the_cli_says_a_lock_directory_that_is_a_file_as_an_error_document_exit_1(
        locks: Path) -> None:
    locks.write_text("")
    # A dry run of the host's namespace: read only, and refused before the read.
    done = k3snet("destroy", "--dry-run", "--backend", "netlink", "--output", "json")
    assert done.returncode == 1, done.stderr
    error = json.loads(done.stdout)["error"]
    assert error["type"] == "BackendError"
    assert error["message"].startswith(f"k3snet's lock directory {locks} ($K3SNET_LOCK_DIR")
