"""The suite fails when the namespace it runs in changed (tests/conftest.py).

A test that ran k3snet without ``--netns`` by mistake changed the machine's
``ip_forward`` and the run passed. The guarded session here runs inside a lab
namespace, so the namespace it changes is a throwaway one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from k3snet.lab.netns import temporary_netns

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

ROOT = Path(__file__).resolve().parents[2]


def test_a_session_that_changed_its_namespace_fails_and_names_the_change() -> None:
    with temporary_netns("guard") as ns:
        env = {**os.environ, "K3SNET_SKIP_NETNS_CHECK": "1", "K3SNET_FLIP_NETNS": ns}
        done = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "pytest", "-q",
             "-p", "no:cacheprovider", "-p", "no:xdist", "tests/tooling/_flips_forwarding.py"],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout + done.stderr
    assert "1 passed" in done.stdout  # the test itself passed: the guard failed the run
    assert "the machine's network namespace changed" in done.stdout
    assert "net/ipv4/ip_forward: '0' at the start, '1' now" in done.stdout
