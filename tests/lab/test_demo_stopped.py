"""``make demo`` stopped half way: its lab namespaces go with it.

A ``timeout``, a cancelled CI job or a closed terminal sends SIGTERM or SIGHUP, whose
default ends Python at once, without the ``finally`` that deletes the lab: its
namespaces and the servers in them stayed.
"""

from __future__ import annotations

import re
import selectors
import signal
import subprocess
import sys
import time

import pytest

from k3snet.lab.netns import delete_netns, kill_netns_processes, netns_exists

pytestmark = [pytest.mark.kernel, pytest.mark.lab, pytest.mark.usefixtures("require_root")]

LAB_UP = re.compile(r"Lab up: pod (\S+), node (\S+), router (\S+), db (\S+)")


def _read_until(proc: subprocess.Popen[str], pattern: re.Pattern[str],
                timeout: float) -> re.Match[str]:
    assert proc.stdout is not None
    seen = []
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not selector.select(deadline - time.monotonic()):
                break
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            found = pattern.search(line)
            if found:
                return found
    pytest.fail(f"the demo never printed {pattern.pattern!r}: {''.join(seen)}")


def _as_from_a_terminal() -> None:
    # A test worker may ignore SIGINT or SIGHUP, and the demo keeps what it inherits ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_demo_stopped_by_a_signal_deletes_its_namespaces(stop: signal.Signals) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "k3snet.demo"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=_as_from_a_terminal)  # noqa: PLW1509 - no threads here
    names: tuple[str, ...] = ()
    try:
        names = _read_until(proc, LAB_UP, timeout=60).groups()
        assert all(netns_exists(n) for n in names)
        proc.send_signal(stop)
        _, err = proc.communicate(timeout=60)
        # Ctrl-C ends it as it ends Python, by SIGINT (a shell says 130).
        assert proc.returncode == (-stop if stop == signal.SIGINT else 128 + stop), err
        assert [n for n in names if netns_exists(n)] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for name in names:  # what the old code left behind, so the suite stays clean
            if netns_exists(name):
                kill_netns_processes(name)
                delete_netns(name)
