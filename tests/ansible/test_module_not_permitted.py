"""The module's ``state: absent`` naming no spec nor backend, run without root or
``CAP_NET_ADMIN`` (a task without ``become``), fails as ``k3snet destroy`` does.

Before, every node backend but netlink (which reads routes unprivileged) could not look
(a task warning each), netlink found nothing, and the task was ``ok``,
``changed=false``: a play took the node as clean, k3snet's nftables table and iptables
chains never looked at. The module's ``main()`` runs as ``nobody`` through ``setpriv``
(util-linux) in a lab namespace.
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

from k3snet.lab.netns import temporary_netns
from tests.ansible.playbooks import MODULE_PATH, REPO

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

_MAIN = f"""
import importlib.util
from ansible.module_utils.testing import patch_module_args
spec = importlib.util.spec_from_file_location("egress", {str(MODULE_PATH)!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
with patch_module_args({{"state": "absent"}}):
    module.main()
"""


def test_state_absent_not_permitted_to_look_fails_the_task_naming_the_backends() -> None:
    pytest.importorskip("ansible.module_utils.testing")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs setpriv")
    uid = pwd.getpwnam("nobody").pw_uid
    with temporary_netns("nobecome") as ns, tempfile.TemporaryDirectory(
            prefix="k3snet-absent-test-") as base:
        Path(base).chmod(0o777)
        done = subprocess.run(
            ["ip", "netns", "exec", ns, setpriv, f"--reuid={uid}", f"--regid={uid}",
             "--clear-groups", sys.executable, "-c", _MAIN],
            capture_output=True, text=True, check=False, timeout=120, cwd="/",
            env={"PATH": "/usr/sbin:/usr/bin:/bin", "K3SNET_LOCK_DIR": f"{base}/locks",
                 "K3SNET_STATE_DIR": f"{base}/state", "HOME": base,
                 "PYTHONPATH": os.pathsep.join([str(REPO)])})
    result = json.loads(done.stdout)
    assert result.get("failed") is True, result
    assert result["changed"] is False
    assert result["rc"] == 1
    assert result["error"]["type"] == "BackendError"
    assert result["error"]["message"].startswith(
        "not permitted to look through nftables, "), result
    assert "(state=absent needs root or CAP_NET_ADMIN)" in result["error"]["message"]
