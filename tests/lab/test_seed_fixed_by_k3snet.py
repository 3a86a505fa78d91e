"""The seed lab, broken before and fixed after by k3snet, for each NAT backend.

The demo (``make demo``) is run as a test, so what it shows is checked in CI;
the CLI is also driven against a lab node, as an operator would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from k3snet.backends.netlink import DEFAULT_STATE_ROOT as STATE_ROOT
from k3snet.cli import main
from k3snet.demo import SPEC_PATH, run_demo
from k3snet.lab import NODE_ADDRESSES, SeedLab

pytestmark = [pytest.mark.kernel, pytest.mark.lab, pytest.mark.usefixtures("require_root")]


@pytest.mark.parametrize("nat_backend", ["nftables", "iptables"])
def test_demo_shows_the_failure_the_fix_and_the_forward_drop_case(
    nat_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = set(STATE_ROOT.iterdir()) if STATE_ROOT.exists() else set()
    run_demo(nat_backend)  # raises DemoError if any probe disagrees with the story
    after = set(STATE_ROOT.iterdir()) if STATE_ROOT.exists() else set()
    assert after == before, "the demo left k3snet state files behind"
    out = capsys.readouterr().out
    assert "pod -> db tcp/5432 IPv4: FAILED" in out
    assert "the database saw 192.168.1.5" in out
    assert "No changes" in out or "Plan: 0 to add, 0 to replace, 0 to delete" in out


def _k3snet(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``k3snet ARGS`` run by main() in this process: (exit code, stdout, stderr). The
    command's logic, the function ``python -m k3snet`` calls; a process's exit codes and
    streams are tests/cli/test_exit.py's, and the getting-started test below runs the
    page's commands as processes, as written."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_plan_apply_plan_on_a_lab_node(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    with SeedLab.create() as lab:
        monkeypatch.setenv("K3SNET_STATE_DIR", str(lab.state_dir))
        backends = ["--backend", "netlink", "--backend", "nftables", "--netns", lab.node]
        code, out, err = _k3snet(capsys, "plan", "-f", str(SPEC_PATH), *backends)
        assert code == 2, err
        assert "+ masquerade 10.42.0.0/16 -> 192.168.2.0/24 oif eth0" in out
        assert not lab.tcp_probe(4).ok

        code, out, err = _k3snet(capsys, "apply", "-f", str(SPEC_PATH), *backends,
                                 "--output", "json")
        assert code == 0, err
        assert len(json.loads(out)["applied"]) == 6
        probe = lab.tcp_probe(4)
        assert probe.ok
        assert probe.source_seen == NODE_ADDRESSES[4]

        code, out, err = _k3snet(capsys, "plan", "-f", str(SPEC_PATH), *backends)
        assert code == 0, out + err

        observed = json.loads(_k3snet(capsys, "observe", *backends, "--output", "json")[1])
        assert any(o["type"] == "masquerade" for o in observed["owned"])
        assert any(o["type"] == "route" and o["protocol"] == "static" for o in observed["foreign"])


def test_cli_reports_a_spec_the_node_cannot_satisfy(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                    "destinations:\n  - {cidr: 192.168.7.0/24, gateway: 10.9.9.9, device: eth9}\n")
    with SeedLab.create() as lab:
        monkeypatch.setenv("K3SNET_STATE_DIR", str(lab.state_dir))
        code, _, err = _k3snet(capsys, "plan", "-f", str(spec), "--netns", lab.node)
        assert code == 1
        assert "Traceback" not in err
        assert "no interface 'eth9'" in err
        assert "gateway 10.9.9.9 is not inside any connected or routed prefix" in err


def test_cli_names_a_namespace_that_does_not_exist(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _k3snet(capsys, "plan", "-f", str(SPEC_PATH), "--netns", "k3snet-no-such-ns",
                           "--no-facts")
    assert code == 1
    assert "k3snet-no-such-ns" in err
    assert "Traceback" not in err


def _getting_started_node_commands() -> list[tuple[list[str], int]]:
    """The commands of getting-started's "On a real node" block, each with the exit
    code its comment says (0 when it says none)."""
    import re  # noqa: PLC0415
    import shlex  # noqa: PLC0415

    page = (Path(__file__).resolve().parents[2] / "docs" / "getting-started.md").read_text()
    block = page.split("## On a real node", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.splitlines():
        command, _, comment = line.partition("#")
        said = re.search(r"exit (\d+)", comment)
        commands.append((shlex.split(command), int(said[1]) if said else 0))
    return commands


def test_getting_started_s_node_commands_run_as_written_in_a_lab_namespace() -> None:
    """Each command of the page, with ``--netns`` of a lab node added (the page says so),
    exits as its comment says, and the pod then reaches the database."""
    commands = _getting_started_node_commands()
    assert [words[:2] for words, _ in commands] == [
        ["k3snet", "plan"], ["k3snet", "apply"], ["k3snet", "plan"]]
    root = Path(__file__).resolve().parents[2]
    with SeedLab.create() as lab:
        assert not lab.tcp_probe(4).ok
        for words, code in commands:
            env = {**os.environ, "K3SNET_STATE_DIR": str(lab.state_dir)}
            done = subprocess.run([sys.executable, "-m", "k3snet", *words[1:],
                                   "--netns", lab.node], cwd=root, env=env,
                                  capture_output=True, text=True, check=False, timeout=120)
            assert done.returncode == code, (words, done.stdout, done.stderr)
        assert lab.tcp_probe(4).ok
