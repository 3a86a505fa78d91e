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


def _k3snet(*args: str, state_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if state_dir is not None:
        env["K3SNET_STATE_DIR"] = str(state_dir)
    return subprocess.run([sys.executable, "-m", "k3snet.cli", *args], env=env,
                          capture_output=True, text=True, check=False, timeout=120)


def test_cli_plan_apply_plan_on_a_lab_node(tmp_path: Path) -> None:
    with SeedLab.create() as lab:
        backends = ["--backend", "netlink", "--backend", "nftables", "--netns", lab.node]
        first = _k3snet("plan", "-f", str(SPEC_PATH), *backends, state_dir=lab.state_dir)
        assert first.returncode == 2, first.stderr
        assert "+ masquerade 10.42.0.0/16 -> 192.168.2.0/24 oif eth0" in first.stdout
        assert not lab.tcp_probe(4).ok

        applied = _k3snet("apply", "-f", str(SPEC_PATH), *backends, "--output", "json",
                          state_dir=lab.state_dir)
        assert applied.returncode == 0, applied.stderr
        assert len(json.loads(applied.stdout)["applied"]) == 6
        probe = lab.tcp_probe(4)
        assert probe.ok
        assert probe.source_seen == NODE_ADDRESSES[4]

        again = _k3snet("plan", "-f", str(SPEC_PATH), *backends, state_dir=lab.state_dir)
        assert again.returncode == 0, again.stdout + again.stderr

        observed = json.loads(_k3snet("observe", *backends, "--output", "json",
                                      state_dir=lab.state_dir).stdout)
        assert any(o["type"] == "masquerade" for o in observed["owned"])
        assert any(o["type"] == "route" and o["protocol"] == "static" for o in observed["foreign"])


def test_cli_reports_a_spec_the_node_cannot_satisfy(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                    "destinations:\n  - {cidr: 192.168.7.0/24, gateway: 10.9.9.9, device: eth9}\n")
    with SeedLab.create() as lab:
        done = _k3snet("plan", "-f", str(spec), "--netns", lab.node, state_dir=lab.state_dir)
        assert done.returncode == 1
        assert "Traceback" not in done.stderr
        assert "no interface 'eth9'" in done.stderr
        assert "gateway 10.9.9.9 is not inside any connected or routed prefix" in done.stderr


def test_cli_names_a_namespace_that_does_not_exist() -> None:
    done = _k3snet("plan", "-f", str(SPEC_PATH), "--netns", "k3snet-no-such-ns", "--no-facts")
    assert done.returncode == 1
    assert "k3snet-no-such-ns" in done.stderr
    assert "Traceback" not in done.stderr


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
