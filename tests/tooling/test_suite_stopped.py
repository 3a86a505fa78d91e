"""The test suite stopped by SIGTERM deletes its namespaces, as on Ctrl-C.

``timeout 600 make test``, a cancelled CI job: Python's default for SIGTERM ended
pytest at once, without the fixture finalizers, and the lab namespaces stayed
(tests/conftest.py turns it into a KeyboardInterrupt).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from k3snet.lab.netns import delete_netns, kill_netns_processes, netns_exists

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

ROOT = Path(__file__).resolve().parents[2]


def test_a_session_stopped_by_sigterm_deletes_its_namespaces(tmp_path: Path) -> None:
    marker = tmp_path / "namespace"
    env = {**os.environ, "K3SNET_SLEEPER_FILE": str(marker), "K3SNET_SKIP_NETNS_CHECK": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "tests/tooling/_netns_sleeper.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    name = ""
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        name = marker.read_text() if marker.exists() else ""
        assert name, proc.communicate(timeout=60)[0] if proc.poll() is not None else ""
        assert netns_exists(name)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert not netns_exists(name), out
        assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if name and netns_exists(name):  # what the old conftest left behind
            kill_netns_processes(name)
            delete_netns(name)
