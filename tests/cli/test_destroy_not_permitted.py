"""``k3snet destroy`` naming no backend, run without root (no ``CAP_NET_ADMIN``), fails
(exit 1, an ``error`` document) instead of saying there is nothing to destroy.

Before, every node backend but netlink (which reads routes unprivileged) was "not
looked through" (a warning each), netlink found nothing, and the command exited 0 with
a ``destroy`` document: a script took the node as clean, k3snet's nftables table and
iptables chains never looked at. Nothing is removed either way: the look is refused
before any lock or change. Run as ``nobody`` through ``setpriv`` (util-linux).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from k3snet.cli import EXIT_ERROR


def test_a_destroy_not_permitted_to_look_fails_as_an_error_document() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a command as another user")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs setpriv")
    uid = pwd.getpwnam("nobody").pw_uid
    with tempfile.TemporaryDirectory(prefix="k3snet-destroy-test-") as base:
        Path(base).chmod(0o777)
        done = subprocess.run(
            [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", sys.executable,
             "-m", "k3snet", "destroy", "--auto-approve", "--output", "json"],
            capture_output=True, text=True, check=False, timeout=120, cwd="/",
            env={"PATH": "/usr/bin:/bin", "K3SNET_LOCK_DIR": f"{base}/locks",
                 "K3SNET_STATE_DIR": f"{base}/state",
                 "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert done.returncode == EXIT_ERROR, (done.stdout, done.stderr)
    error = json.loads(done.stdout)["error"]
    assert error["type"] == "BackendError"
    assert error["message"].startswith("not permitted to look through nftables, "), error
    assert "nothing was removed" in error["message"]
