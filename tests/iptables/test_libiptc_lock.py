"""The xtables lock the libiptc driver holds is the one iptables takes.

iptables (xshared.c) takes ``$XTABLES_LOCKFILE`` when it is set to a non-empty value,
else ``/run/xtables.lock``. Set empty (a template's ``value: ""``), the driver gave it
to ``open()``: ``No such file or directory: ''``, every change of the libiptc driver
refused. The default here is a temporary file: the host's lock is never taken.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from k3snet.backends.iptables import libiptc
from k3snet.errors import BackendError


def _held(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases it if taken here
    return False


@pytest.mark.parametrize("given", [None, ""])
def test_an_unset_or_empty_xtables_lockfile_takes_the_default_lock_as_iptables_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str | None) -> None:
    default = tmp_path / "xtables.lock"
    monkeypatch.setattr(libiptc, "_XT_LOCK_NAME", str(default))
    if given is None:
        monkeypatch.delenv("XTABLES_LOCKFILE", raising=False)
    else:
        monkeypatch.setenv("XTABLES_LOCKFILE", given)
    with libiptc._xtables_lock():
        assert _held(default)
    assert not _held(default)


def test_a_set_xtables_lockfile_is_the_lock_taken(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default, given = tmp_path / "xtables.lock", tmp_path / "elsewhere.lock"
    monkeypatch.setattr(libiptc, "_XT_LOCK_NAME", str(default))
    monkeypatch.setenv("XTABLES_LOCKFILE", str(given))
    with libiptc._xtables_lock():
        assert _held(given)
    assert not default.exists()


def test_an_xtables_lockfile_that_cannot_be_opened_is_named_as_the_xtables_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A directory in its place: "[Errno 21] Is a directory: '...'" said neither that it
    # is the xtables lock nor where its name comes from.
    given = tmp_path / "xtables.lock"
    given.mkdir()
    monkeypatch.setenv("XTABLES_LOCKFILE", str(given))
    with pytest.raises(BackendError, match=rf"^cannot open the lock file {given} \(the "
                       r"xtables lock, \$XTABLES_LOCKFILE, else /run/xtables.lock, .*\): "
                       r"Is a directory$"), libiptc._xtables_lock():
        pass
