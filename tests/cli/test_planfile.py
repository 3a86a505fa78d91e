"""Plan files on a lab node: `plan --out` then `apply FILE` applies exactly that plan,
or refuses it when the node changed or is another node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from k3snet.demo import SPEC_PATH
from k3snet.lab import SeedLab
from k3snet.lab.netns import run_in
from tests.in_process import k3snet

pytestmark = [pytest.mark.kernel, pytest.mark.lab, pytest.mark.usefixtures("require_root")]

BACKENDS = ["--backend", "netlink", "--backend", "nftables"]


def _k3snet(*args: str, lab: SeedLab, tmp: Path,
            process: bool = False) -> subprocess.CompletedProcess[str]:
    """``k3snet ARGS`` on the lab's state and lock directories: by main() in this process
    (tests/in_process.py), or, ``process``, as a process of its own (a plan file applied
    by another process than the one that made it, as a node's operator does)."""
    environ = {"K3SNET_STATE_DIR": str(lab.state_dir), "K3SNET_LOCK_DIR": str(tmp)}
    if not process:
        return k3snet(*args, **environ)
    return subprocess.run([sys.executable, "-m", "k3snet.cli", *args],
                          env=dict(os.environ, **environ), capture_output=True, text=True,
                          check=False, timeout=120)


def test_a_saved_plan_is_applied_exactly_then_refused_as_stale(tmp_path: Path) -> None:
    planfile = tmp_path / "node.plan"
    with SeedLab.create() as lab:
        made = _k3snet("plan", "-f", str(SPEC_PATH), *BACKENDS, "--netns", lab.node,
                       "--out", str(planfile), lab=lab, tmp=tmp_path)
        assert made.returncode == 2, made.stderr
        document = json.loads(planfile.read_text())
        assert document["kind"] == "k3snet-planfile"
        assert document["node"]["netns"] == lab.node
        assert document["spec"]["sha256"]
        changes = document["plan"]["changes"]

        # Applied without the spec, as saved; the netns comes from the file.
        applied = _k3snet("apply", str(planfile), "--output", "json", lab=lab, tmp=tmp_path,
                          process=True)
        assert applied.returncode == 0, applied.stderr
        assert json.loads(applied.stdout)["applied"] == changes
        assert lab.tcp_probe(4).ok

        # The node has changed since (the plan was applied): the same file is stale now.
        again = _k3snet("apply", str(planfile), lab=lab, tmp=tmp_path)
        assert again.returncode == 1
        assert "the node changed since this plan was made" in again.stderr
        assert "already as the plan makes it" in again.stderr  # not "plan again"
        assert "plan again" not in again.stderr

        # An unrelated foreign change leaves a fresh plan file good ...
        fresh = tmp_path / "fresh.plan"
        assert _k3snet("plan", "-f", str(SPEC_PATH), *BACKENDS, "--netns", lab.node, "--out",
                       str(fresh), lab=lab, tmp=tmp_path).returncode == 0
        run_in(lab.node, ["ip", "route", "add", "198.51.100.0/24", "via", "192.168.1.1"])
        assert _k3snet("apply", str(fresh), lab=lab, tmp=tmp_path).returncode == 0
        # ... one that changes the plan makes it stale: the administrator's static route,
        # which met the route need, is gone, so the plan would now add k3snet's own.
        run_in(lab.node, ["ip", "route", "del", "192.168.2.0/24"])
        stale = _k3snet("apply", str(fresh), lab=lab, tmp=tmp_path)
        assert stale.returncode == 1
        assert "plan again" in stale.stderr


def test_a_plan_file_for_another_namespace_is_refused(tmp_path: Path) -> None:
    planfile = tmp_path / "node.plan"
    with SeedLab.create() as lab:
        assert _k3snet("plan", "-f", str(SPEC_PATH), *BACKENDS, "--netns", lab.node, "--out",
                       str(planfile), lab=lab, tmp=tmp_path).returncode == 2
        with SeedLab.create() as other:
            refused = _k3snet("apply", str(planfile), "--netns", other.node, lab=other,
                              tmp=tmp_path)
            assert refused.returncode == 1
            assert "was made for another network namespace" in refused.stderr
            assert f"({lab.node}, " in refused.stderr  # named, not only its identity
            assert f"here {other.node}, " in refused.stderr
            assert not other.tcp_probe(4).ok


def test_apply_dry_run_runs_the_backends_check_and_changes_nothing(tmp_path: Path) -> None:
    with SeedLab.create() as lab:
        before = run_in(lab.node, ["nft", "-j", "list", "ruleset"]).stdout
        done = _k3snet("apply", "-f", str(SPEC_PATH), *BACKENDS, "--netns", lab.node,
                       "--dry-run", "--detailed-exitcode", lab=lab, tmp=tmp_path)
        assert done.returncode == 2, done.stderr
        assert "the backends' check found no problem" in done.stdout
        assert run_in(lab.node, ["nft", "-j", "list", "ruleset"]).stdout == before
        assert not lab.tcp_probe(4).ok


def test_node_facts_come_from_the_namespace_a_backend_opt_puts_the_backends_in(
        tmp_path: Path) -> None:
    # --backend-opt netlink.netns=NODE acted in the node's namespace but read the facts
    # of the caller's own: the node's gateway was refused as outside every prefix.
    with SeedLab.create() as lab:
        done = _k3snet("plan", "-f", str(SPEC_PATH), *BACKENDS,
                       "--backend-opt", f"netlink.netns={lab.node}",
                       "--backend-opt", f"netlink.state_dir={lab.state_dir}",
                       "--backend-opt", f"nftables.netns={lab.node}", lab=lab, tmp=tmp_path)
        assert done.returncode == 2, done.stderr  # changes pending, no spec problem
        assert "+ masquerade 10.42.0.0/16 -> 192.168.2.0/24 oif eth0" in done.stdout
