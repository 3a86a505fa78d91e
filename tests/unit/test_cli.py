"""The command line: exit codes, output forms, errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from k3snet import Plan
from k3snet.cli import _options, build_parser, main

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"


def test_plan_exits_2_when_changes_are_pending(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["plan", "-f", str(SEED), "--backend", "memory", "--no-facts"])
    out = capsys.readouterr().out
    assert code == 2
    assert out.startswith("Plan: 8 to add, 0 to replace, 0 to delete.")
    assert "+ masquerade 10.42.0.0/16 -> 192.168.2.0/24 oif eth0" in out


def test_plan_json_round_trips(capsys: pytest.CaptureFixture[str]) -> None:
    main(["plan", "-f", str(SEED), "--backend", "memory", "--no-facts", "--output", "json"])
    p = Plan.from_json(capsys.readouterr().out)
    assert len(p) == 8


def test_apply_prints_what_was_done(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["apply", "-f", str(SEED), "--backend", "memory", "--no-facts"]) == 0
    out = capsys.readouterr().out
    assert "memory: 8 change(s) applied in 8 operation(s)" in out


def test_observe_prints_owned_and_foreign(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["observe", "--backend", "memory", "--output", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"owned": [], "foreign": []}


def test_bad_spec_exits_1_with_every_problem_and_no_traceback(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("destinations:\n  - cidr: 10.42.1.0/24\n  - cidr: 192.168.2.1/24\ntypo: 1\n")
    done = subprocess.run([sys.executable, "-m", "k3snet.cli", "validate", "-f", str(spec)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "3 problems in" in done.stderr
    assert "destinations[1].cidr: '192.168.2.1/24' has host bits set" in done.stderr
    assert "overlaps the cluster pod CIDR" in done.stderr


def test_unknown_backend_is_an_error_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "-f", str(SEED), "--backend", "nope", "--no-facts"]) == 1
    assert "no backend named 'nope'" in capsys.readouterr().err


def test_backend_kinds_split_one_plan(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["plan", "-f", str(SEED), "--backend", "memory:route,sysctl", "--no-facts"])
    out = capsys.readouterr().out
    assert code == 2
    assert "masquerade" not in out
    assert out.startswith("Plan: 4 to add")


def test_validate_accepts_the_seed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-f", str(SEED)]) == 0
    assert "valid (2 destination(s))" in capsys.readouterr().out


def test_render_manifests_prints_the_objects(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "manifests", "-f", str(SEED)]) == 0
    out = capsys.readouterr().out
    assert "kind: DaemonSet" in out
    assert "podCIDRs" in out  # the spec file itself travels in the ConfigMap


def test_agent_environment_reaches_backend_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K3SNET_PROC_SYS", "/host/proc/sys")
    args = build_parser().parse_args(["plan", "-f", str(SEED), "--netns", "lab"])
    assert _options("memory", args) == {}  # the memory backend takes neither option
    options = _options("netlink", args)
    assert options == {"netns": "lab", "proc_sys": Path("/host/proc/sys")}


def test_flannel_file_through_the_agent_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "net-conf.json"
    conf.write_text('{\n  "Network": "10.42.0.0/16",\n  "Backend": {"Type": "vxlan"},\n'
                    '  "x": [1, 2]\n}\n')
    spec = tmp_path / "spec.yaml"
    spec.write_text("cni:\n  flannel:\n    backend: {type: host-gw}\n")
    monkeypatch.setenv("K3SNET_FLANNEL_CONF", str(conf))
    assert main(["plan", "-f", str(spec), "--backend", "flannel"]) == 2
    assert "host-gw" in capsys.readouterr().out
    assert main(["apply", "-f", str(spec), "--backend", "flannel"]) == 0
    assert '"Type":"host-gw"' in conf.read_text().replace(" ", "")
    assert '"x": [1, 2]' in conf.read_text()  # unknown keys kept byte for byte
    assert main(["plan", "-f", str(spec), "--backend", "flannel"]) == 0


def test_pod_cidr_disagreeing_with_flannel_is_a_conflict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "net-conf.json"
    before = '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}'
    conf.write_text(before)
    monkeypatch.setenv("K3SNET_FLANNEL_CONF", str(conf))
    reason = "pod CIDR 10.42.0.0/16 disagrees with flannel's Network 10.244.0.0/16"
    assert main(["plan", "-f", str(SEED), "--backend", "flannel"]) == 0
    out = capsys.readouterr().out
    assert "1 conflict(s)" in out
    assert f"! flannel file:{conf} expects Network=10.42.0.0/16" in out
    assert reason in out
    assert main(["apply", "-f", str(SEED), "--backend", "flannel"]) == 1
    assert reason in capsys.readouterr().err
    assert conf.read_text() == before  # an expectation is never written


@pytest.mark.parametrize(
    ("what", "files", "needle"),
    [
        ("iptables", {"rules.v4", "rules.v6"}, "K3SNET-POSTROUTING"),
        ("nftables", {"k3snet.nft"}, "masquerade"),
        ("ifupdown", {"k3snet-routes"}, "up ip route"),
        ("netplan", {"90-k3snet.yaml"}, "routes:"),
        ("networkd", {"90-k3snet-eth0.network"}, "[Route]"),
        ("sysctl", {"90-k3snet.conf"}, "net.ipv4.ip_forward = 1"),
        ("manifests", {"k3snet.yaml"}, "kind: DaemonSet"),
    ],
)
def test_render_writes_each_persistence_file(
    what: str, files: set[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", what, "-f", str(SEED), "-o", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} == files
    assert any(needle in p.read_text() for p in tmp_path.iterdir())
    capsys.readouterr()
