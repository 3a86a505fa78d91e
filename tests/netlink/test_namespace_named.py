"""The netlink backend's messages name the namespace as the commands they show do.

Under ``ip netns exec NS k3snet ...`` without ``--netns`` they said "this process's
network namespace" beside commands (``ip netns exec NS ...``) naming ``NS``; the
iptables backend already named ``NS`` there. The kernel's view is ``/proc/sys``: the
sysctl the check finds missing is missing there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from k3snet.lab.netns import run_in, temporary_netns

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

SPEC = """\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
sysctls:
  net.ipv4.conf.nosuch0.rp_filter: 2
"""


def test_the_cli_run_by_ip_netns_exec_names_the_namespace_as_netns_does(
        tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    env = {**os.environ, "K3SNET_STATE_DIR": str(tmp_path / "state")}
    dry_run = [sys.executable, "-m", "k3snet", "apply", "--dry-run", "-f", str(spec),
               "--backend", "netlink", "--no-facts"]
    with temporary_netns("named") as ns:
        assert run_in(ns, ["ls", "/proc/sys/net/ipv4/conf"]).stdout.split() == [
            "all", "default", "lo"]
        inside = run_in(ns, dry_run, check=False, env=env)
        given = subprocess.run([*dry_run, "--netns", ns], capture_output=True, text=True,
                               env=env, check=False)
    assert inside.returncode == given.returncode == 1, (inside, given)
    assert f"no such sysctl in network namespace {ns!r} (" in inside.stdout, inside
    assert "this process's" not in inside.stdout + inside.stderr
    assert inside.stdout == given.stdout
