"""The lab's helper programs start under the strictest warning filter a test run may set."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["k3snet.lab._echo_server", "k3snet.lab._probe"])
def test_a_lab_program_starts_when_warnings_are_errors(module: str) -> None:
    # k3snet.lab imported the echo server with the seed lab, so `python -m` ran a module
    # already imported: runpy's RuntimeWarning, fatal under PYTHONWARNINGS=error (which
    # the lab's server inherits), and SeedLab.create() failed "did not start listening".
    done = subprocess.run([sys.executable, "-W", "error", "-m", module, "--help"],
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:")
