"""What k3snet needs: CAP_NET_ADMIN inside the namespace; CAP_SYS_ADMIN only to enter one.

The processes run as root with every other capability dropped (setpriv), so
what passes here passes in the DaemonSet's least-privilege container.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from k3snet.demo import SPEC_PATH
from k3snet.lab import NODE_ADDRESSES, SeedLab

pytestmark = [pytest.mark.kernel, pytest.mark.lab, pytest.mark.usefixtures("require_root")]

SETPRIV = shutil.which("setpriv")
ONLY_NET_ADMIN = ["--bounding-set", "-all,+net_admin", "--inh-caps", "-all,+net_admin",
                  "--ambient-caps", "-all,+net_admin"]
NOTHING = ["--bounding-set", "-all", "--inh-caps", "-all"]


def _k3snet(prefix: list[str], caps: list[str], *args: str, lab: SeedLab,
            tmp: Path) -> subprocess.CompletedProcess[str]:
    assert SETPRIV is not None
    env = dict(os.environ, K3SNET_STATE_DIR=str(lab.state_dir), K3SNET_LOCK_DIR=str(tmp))
    argv = [*prefix, SETPRIV, *caps, sys.executable, "-m", "k3snet.cli", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=False,
                          timeout=120)


@pytest.mark.skipif(SETPRIV is None, reason="setpriv (util-linux) is not installed")
def test_plan_and_apply_need_only_cap_net_admin_inside_the_namespace(tmp_path: Path) -> None:
    backends = ["--backend", "netlink", "--backend", "nftables"]
    with SeedLab.create() as lab:
        inside = ["ip", "netns", "exec", lab.node]
        planned = _k3snet(inside, ONLY_NET_ADMIN, "plan", "-f", str(SPEC_PATH), *backends,
                          lab=lab, tmp=tmp_path)
        assert planned.returncode == 2, planned.stderr
        applied = _k3snet(inside, ONLY_NET_ADMIN, "apply", "-f", str(SPEC_PATH), *backends,
                          lab=lab, tmp=tmp_path)
        assert applied.returncode == 0, applied.stderr
        probe = lab.tcp_probe(4)
        assert probe.ok
        assert probe.source_seen == NODE_ADDRESSES[4]


@pytest.mark.skipif(SETPRIV is None, reason="setpriv (util-linux) is not installed")
def test_without_capabilities_the_error_names_the_missing_one(tmp_path: Path) -> None:
    with SeedLab.create() as lab:
        entering = _k3snet([], ONLY_NET_ADMIN, "plan", "-f", str(SPEC_PATH), "--backend",
                           "netlink", "--netns", lab.node, "--no-facts", lab=lab, tmp=tmp_path)
        assert entering.returncode == 1
        assert "Traceback" not in entering.stderr
        assert "needs CAP_SYS_ADMIN" in entering.stderr


@pytest.mark.skipif(SETPRIV is None, reason="setpriv (util-linux) is not installed")
def test_a_sysctl_write_refused_for_want_of_cap_net_admin_is_no_failed_rollback(
        tmp_path: Path) -> None:
    # The refused write changed nothing, but its "undo" was tried, refused for the same
    # reason, and reported as "ROLLBACK FAILED, the system may be half-changed".
    with SeedLab.create() as lab:
        inside = ["ip", "netns", "exec", lab.node]
        before = subprocess.run([*inside, "cat", "/proc/sys/net/ipv4/ip_forward"],
                                capture_output=True, text=True, check=True).stdout
        applied = _k3snet(inside, NOTHING, "apply", "-f", str(SPEC_PATH), "--backend",
                          "netlink", lab=lab, tmp=tmp_path)
        after = subprocess.run([*inside, "cat", "/proc/sys/net/ipv4/ip_forward"],
                               capture_output=True, text=True, check=True).stdout
    assert applied.returncode == 1
    assert "needs CAP_NET_ADMIN" in applied.stderr
    assert "ROLLBACK FAILED" not in applied.stderr, applied.stderr
    assert "nothing was changed" in applied.stderr
    assert after == before


@pytest.mark.skipif(SETPRIV is None, reason="setpriv (util-linux) is not installed")
def test_an_error_under_ip_netns_exec_does_not_call_the_namespace_the_hosts(
        tmp_path: Path) -> None:
    # Without --netns the netlink backend called its namespace "the host network
    # namespace", which under `ip netns exec NS` it is not; then "this process's network
    # namespace" beside commands naming NS: it names NS, as --netns NS does.
    with SeedLab.create() as lab:
        applied = _k3snet(["ip", "netns", "exec", lab.node], NOTHING, "apply", "-f",
                          str(SPEC_PATH), "--backend", "netlink", lab=lab, tmp=tmp_path)
    assert applied.returncode == 1
    assert "host network namespace" not in applied.stderr
    assert f"netlink backend, network namespace {lab.node!r}:" in applied.stderr
