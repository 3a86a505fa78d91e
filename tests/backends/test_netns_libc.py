"""Entering a namespace: libc called directly (no child process), and every failure
handed to the caller.

``ctypes.util.find_library("c")`` ran ``/sbin/ldconfig -p`` in a child process for
each namespace a process entered (and cost a cold CLI its imports); the calls now go
to the libc the process already runs on. Each case runs in a fresh interpreter whose
``subprocess.Popen`` refuses to start anything.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from k3snet.backends import netns
from k3snet.lab.netns import run_in, temporary_netns

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

_SCRIPT = """
import os, subprocess, sys

def refused(*args, **kwargs):
    raise AssertionError(f"a child process: {args!r}")

subprocess.Popen = refused
import k3snet.cli  # what a cold `k3snet apply` imports first
from k3snet.backends.iptables import xtables
from k3snet.backends.netns import NETNS_DIR, NetnsRunner

name = sys.argv[1]
with NetnsRunner(name) as runner:
    inside = runner.call(lambda: os.stat("/proc/thread-self/ns/net").st_ino)
    token = runner.call(xtables.legacy_token)
    tables = runner.call(lambda: open("/proc/thread-self/net/ip_tables_names").read().split())
assert inside == os.stat(NETNS_DIR / name).st_ino, "not in the namespace"
assert inside != os.stat("/proc/self/ns/net").st_ino, "the main thread moved"
print("ctypes.util" in sys.modules, type(token).__name__, "nat" in tables)
"""


def test_entering_a_namespace_and_reading_x_tables_start_no_process() -> None:
    with temporary_netns("libc") as ns:
        # A legacy nat table in the namespace, so that the token reads it (getsockopt).
        run_in(ns, ["iptables-legacy", "-t", "nat", "-A", "POSTROUTING", "-j", "ACCEPT"])
        done = subprocess.run([sys.executable, "-c", _SCRIPT, ns], capture_output=True,
                              text=True, check=False, timeout=60,
                              env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "bytes", "True"]


def test_a_namespace_that_cannot_be_entered_fails_the_call_instead_of_hanging(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker thread handed only a BackendError to the waiting caller: anything else
    # (a libc without setns, a bug) ended the thread and left the caller waiting forever.
    def broken(fd: int) -> None:
        raise AttributeError("undefined symbol: setns")

    monkeypatch.setattr(netns, "_setns", broken)
    outcome: list[BaseException | int] = []

    def call(name: str) -> None:
        try:
            outcome.append(netns.NetnsRunner(name).call(lambda: 42))
        except BaseException as exc:  # noqa: BLE001 - what the test looks at
            outcome.append(exc)

    with temporary_netns("nosetns") as ns:
        caller = threading.Thread(target=call, args=(ns,), daemon=True)
        caller.start()
        caller.join(10)
    assert not caller.is_alive(), "the caller still waits for the namespace"
    (raised,) = outcome
    assert isinstance(raised, AttributeError)
    assert "setns" in str(raised)
