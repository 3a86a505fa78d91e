"""``plan --out`` of a plan the teardown guard refuses says so when it saves it, and its
hint is the command that applies it (``apply --allow-teardown FILE``), in a lab namespace."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from k3snet.cli import main
from k3snet.lab.netns import run_in, temporary_netns

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

HEAD = "apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"


def _rp_filter(ns: str) -> str:
    return run_in(ns, ["sysctl", "-n", "net.ipv4.conf.all.rp_filter"]).stdout.strip()


def test_plan_out_warns_of_the_teardown_guard_and_hints_allow_teardown(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("K3SNET_LOCK_DIR", str(tmp_path))
    owning, empty = tmp_path / "owning.yaml", tmp_path / "empty.yaml"
    owning.write_text(HEAD + "sysctls:\n  net.ipv4.conf.all.rp_filter: 2\n")
    empty.write_text(HEAD)
    saved = tmp_path / "node.plan"
    node = ["--backend", "netlink", "--no-facts"]
    with temporary_netns("ptear") as ns:
        before = _rp_filter(ns)
        assert before != "2"
        assert main(["apply", "-f", str(owning), *node, "--netns", ns, "--auto-approve"]) == 0
        assert _rp_filter(ns) == "2"
        capsys.readouterr()
        assert main(["plan", "-f", str(empty), *node, "--netns", ns, "--out", str(saved)]) == 2
        out = capsys.readouterr().out
        assert "!! warning: the plan deletes everything k3snet owns through netlink " \
               "(1 object(s) of route, sysctl): `k3snet apply` refuses it" in out, out
        command = out.rstrip().splitlines()[-1].split("`")[1]
        assert shlex.split(command) == ["k3snet", "apply", "--allow-teardown", str(saved)]
        # The guard refuses the plan without the option, as the warning said ...
        assert main(["apply", str(saved), "--auto-approve"]) == 1
        assert _rp_filter(ns) == "2"
        # ... and the hinted command applies it: the sysctl's previous value is back.
        assert main(["apply", "--allow-teardown", str(saved), "--auto-approve"]) == 0
        assert _rp_filter(ns) == before


def test_plan_without_a_teardown_has_no_such_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("K3SNET_LOCK_DIR", str(tmp_path))
    spec = tmp_path / "spec.yaml"
    spec.write_text(HEAD + "sysctls:\n  net.ipv4.conf.all.rp_filter: 2\n")
    saved = tmp_path / "node.plan"
    with temporary_netns("ptear") as ns:
        assert main(["plan", "-f", str(spec), "--backend", "netlink", "--no-facts",
                     "--netns", ns, "--out", str(saved)]) == 2
        out = capsys.readouterr().out
        assert "!! warning" not in out
        command = out.rstrip().splitlines()[-1].split("`")[1]
        assert shlex.split(command) == ["k3snet", "apply", str(saved)]
