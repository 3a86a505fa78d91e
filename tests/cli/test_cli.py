"""The command line: exit codes, output forms, errors without tracebacks."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import shlex
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k3snet import Plan
from k3snet._argv import common_after_command as _common_after_command
from k3snet.cli import EXIT_BUSY, EXIT_USAGE, _options, build_parser, main, run_main

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
    assert json.loads(capsys.readouterr().out) == {"format": 1, "kind": "state", "owned": [],
                                                   "foreign": []}


def test_bad_spec_exits_1_with_every_problem_and_no_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # In this process: the command's logic (a process's exit code and stderr are
    # tests/cli/test_exit.py's test_the_exit_code_is_the_commands).
    spec = tmp_path / "bad.yaml"
    spec.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                    "destinations:\n  - cidr: 10.42.1.0/24\n  - cidr: 192.168.2.1/24\ntypo: 1\n")
    assert main(["validate", "-f", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "3 problems in" in err
    assert "destinations[1].cidr: '192.168.2.1/24' has host bits set" in err
    assert "overlaps the cluster pod CIDR" in err


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
    spec.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                    "cni:\n  flannel:\n    backend: {type: vxlan, options: {MTU: 1400}}\n")
    monkeypatch.setenv("K3SNET_FLANNEL_CONF", str(conf))
    assert main(["plan", "-f", str(spec), "--backend", "flannel"]) == 2
    assert '"MTU":1400' in capsys.readouterr().out
    assert main(["apply", "-f", str(spec), "--backend", "flannel"]) == 0
    assert '"Backend": {"Type": "vxlan","MTU": 1400}' in conf.read_text()  # merged into it
    assert '"x": [1, 2]' in conf.read_text()  # unknown keys kept byte for byte
    assert main(["plan", "-f", str(spec), "--backend", "flannel"]) == 0
    # A new backend type is disruptive: refused, with the ways to allow it.
    before = conf.read_text()
    spec.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                    "cni:\n  flannel:\n    backend: {type: host-gw}\n")
    capsys.readouterr()
    assert main(["apply", "-f", str(spec), "--backend", "flannel"]) == 1
    err = capsys.readouterr().err
    assert "changing flannel's Backend.Type (\"vxlan\" -> \"host-gw\")" in err
    assert "--allow-disruptive on the CLI" in err
    assert conf.read_text() == before


def test_pod_cidr_disagreeing_with_flannel_is_a_conflict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "net-conf.json"
    before = '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}'
    conf.write_text(before)
    monkeypatch.setenv("K3SNET_FLANNEL_CONF", str(conf))
    reason = "pod CIDR 10.42.0.0/16 disagrees with flannel's Network 10.244.0.0/16"
    assert main(["plan", "-f", str(SEED), "--backend", "flannel"]) == 4  # conflicts
    out = capsys.readouterr().out
    assert "1 conflict(s)" in out
    assert f"! flannel file:{conf} expects Network=10.42.0.0/16" in out
    assert reason in out
    assert main(["apply", "-f", str(SEED), "--backend", "flannel"]) == 4
    assert reason in capsys.readouterr().err
    assert conf.read_text() == before  # an expectation is never written


@pytest.mark.parametrize(
    ("what", "files", "needle"),
    [
        ("iptables", {"k3snet.rules.v4", "k3snet.rules.v6"}, "K3SNET-POSTROUTING"),
        ("nftables", {"k3snet.nft"}, "masquerade"),
        ("ifupdown", {"k3snet-routes"}, "up error=$(ip route add"),
        ("netplan", {"90-k3snet.yaml"}, "routes:"),
        ("networkd", {"90-k3snet-eth0.network"}, "[Route]"),
        ("networkmanager", {"90-k3snet-routes"}, "ip route add 192.168.2.0/24"),
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


@pytest.mark.parametrize(("backends", "refused", "rendered"), [
    ("[netlink, iptables]", "nftables", "iptables"),
    ("[netlink, nftables]", "iptables", "nftables"),
    ("[nftables]", "sysctl", "nftables"),
    ("[nftables]", "networkd", "nftables"),
    ("{calico: {}}", "nftables", "manifests"),
])
def test_render_refuses_a_file_of_a_backend_the_specs_backends_leave_out(
        backends: str, refused: str, rendered: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # With `backends: [netlink, iptables]`, `render nftables` wrote the whole nftables
    # file: loaded at boot, a table no backend in use ever updated nor removed (a
    # destination taken out of the spec kept its masquerade and forward accept).
    spec = tmp_path / "spec.yaml"
    spec.write_text(SEED.read_text() + f"backends: {backends}\n")
    out = tmp_path / "out"
    assert main(["render", refused, "-f", str(spec), "-o", str(out)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"k3snet render {refused}: error: the spec's backends" in err, err
    assert not out.exists()
    assert main(["render", rendered, "-f", str(spec), "-o", str(out)]) == 0
    # --backend chooses other backends than the spec's, for render as for plan
    if rendered != "manifests":
        assert main(["render", refused, "-f", str(spec), "-o", str(out / "flags"),
                     "--backend", refused if refused in ("nftables", "iptables")
                     else "netlink"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize(("umask", "mode"), [(0o000, 0o755), (0o022, 0o755), (0o077, 0o700)])
def test_the_networkmanager_script_is_written_executable_and_writable_by_its_owner_only(
        umask: int, mode: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # NetworkManager's dispatcher runs no script that is not executable, nor one its
    # group or others can write: written 0644 (or 0666 under umask 0), it never ran.
    before = os.umask(umask)
    try:
        assert main(["render", "networkmanager", "-f", str(SEED), "-o", str(tmp_path)]) == 0
    finally:
        os.umask(before)
    capsys.readouterr()
    assert stat.S_IMODE((tmp_path / "90-k3snet-routes").stat().st_mode) == mode


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_the_netplan_file_is_written_readable_by_its_owner_only(
        umask: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # netplan warns about a file of /etc/netplan others can read, at every run.
    (tmp_path / "90-k3snet.yaml").write_text("")
    (tmp_path / "90-k3snet.yaml").chmod(0o644)  # an older render's
    before = os.umask(umask)
    try:
        assert main(["render", "netplan", "-f", str(SEED), "-o", str(tmp_path)]) == 0
    finally:
        os.umask(before)
    capsys.readouterr()
    assert stat.S_IMODE((tmp_path / "90-k3snet.yaml").stat().st_mode) == 0o600


def test_each_boot_file_is_synced_before_its_rename_and_its_directory_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Renamed unsynced, a boot file written just before a crash (a reboot that does
    # not sync, a power cut) could be empty or missing at the boot it was made for.
    synced: list[os.stat_result] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.fstat(fd))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert main(["render", "iptables", "-f", str(SEED), "-o", str(tmp_path)]) == 0
    capsys.readouterr()
    files = {(s.st_dev, s.st_ino) for s in synced if stat.S_ISREG(s.st_mode)}
    directories = {(s.st_dev, s.st_ino) for s in synced if stat.S_ISDIR(s.st_mode)}
    for name in ("k3snet.rules.v4", "k3snet.rules.v6"):
        info = (tmp_path / name).stat()
        assert (info.st_dev, info.st_ino) in files, name
    assert ((tmp_path.stat().st_dev, tmp_path.stat().st_ino)) in directories


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "k3snet.cli", *args], capture_output=True,
                          text=True, check=False, timeout=60)


@functools.cache
def _completion(shell: str) -> str:
    """``k3snet completion SHELL``'s script, printed by main() in this process (what
    ``python -m k3snet.cli`` prints: test_bash_completion_is_valid_bash_and_knows_the_commands)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["completion", shell]) == 0
    return out.getvalue()


# The tests below run main() in this process, with its output captured: a command's logic,
# the same function `python -m k3snet.cli` calls. A process's exit codes, its stdout and
# stderr apart, and its signals are tests/cli/test_exit.py's.


@pytest.mark.parametrize("spec", ["/tmp", "/dev/null/nope", "/nonexistent/spec.yaml"])
def test_a_spec_path_that_is_not_a_file_is_one_line_not_a_traceback(
        spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-f", spec]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("k3snet: error:")


def test_an_output_directory_that_cannot_be_written_is_one_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "sysctl", "-f", str(SEED), "-o", "/proc/k3snet-nope"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "/proc/k3snet-nope" in err


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    # A plan far larger than a pipe's buffer, so that writing it must meet the closed pipe.
    spec = tmp_path / "big.yaml"
    spec.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\ndestinations:\n" + "".join(
        f"  - cidr: 172.{16 + i // 256}.{i % 256}.0/24\n" for i in range(3000)))
    reader = subprocess.Popen([sys.executable, "-m", "k3snet.cli", "plan", "-f", str(spec),
                               "--backend", "memory", "--no-facts"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert reader.stdout is not None
    reader.stdout.read(10)
    reader.stdout.close()  # like `| head -c 10`
    _out, err = reader.communicate(timeout=120)
    assert err == b""
    assert reader.returncode == 141


@pytest.mark.parametrize("interval", ["-5", "0", "nan", "1e400", "x"])
def test_agent_interval_must_be_a_positive_number(
        interval: str, capsys: pytest.CaptureFixture[str]) -> None:
    # --once, --no-kube and --listen none: were the value taken, the agent would make one
    # pass and end (a failed assertion), not run for ever in the test's process.
    with pytest.raises(SystemExit) as caught:  # argparse's exit, as `python -m` ends
        main(["agent", "-f", str(SEED), "--backend", "memory", "--once", "--no-kube",
              "--listen", "none", "--interval", interval])
    assert caught.value.code == 64  # a usage error, never 2 (which means "changes pending")
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "--interval" in err


# ---------------------------------------------------------------- exit codes, one per case

CONFLICTING = Path(__file__).resolve().parents[1] / "golden" / "conflicting-static-route.yaml"


@pytest.mark.parametrize(("argv", "code"), [
    (["plan", "-f", str(SEED), "--backend", "memory", "--no-facts"], 2),
    (["apply", "-f", str(SEED), "--backend", "memory", "--no-facts"], 0),
    (["apply", "-f", str(SEED), "--backend", "memory", "--no-facts", "--detailed-exitcode"], 2),
    (["apply", "-f", str(SEED), "--backend", "memory", "--no-facts", "--dry-run"], 0),
    (["apply", "-f", str(SEED), "--backend", "memory", "--no-facts", "--dry-run",
      "--detailed-exitcode"], 2),
    (["destroy", "--backend", "memory", "--auto-approve"], 0),
    (["destroy", "--backend", "memory", "--auto-approve", "--detailed-exitcode"], 0),
    (["observe", "--backend", "memory"], 0),
    (["validate", "-f", str(SEED)], 0),
    (["validate", "-f", "/nonexistent.yaml"], 1),
    (["render", "sysctl", "-f", str(SEED)], 0),
    (["completion", "bash"], 0),
    (["apply", "--backend", "memory"], 64),  # neither a spec nor a plan file
])
def test_exit_codes(argv: list[str], code: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == code, capsys.readouterr()


@pytest.mark.parametrize("command", ["plan", "apply", "observe", "destroy", "agent", "render",
                                     "validate", "connectivity", "completion"])
def test_usage_errors_exit_64_for_every_subcommand(command: str) -> None:
    with pytest.raises(SystemExit) as caught:
        main([command, "--no-such-option"])
    assert caught.value.code == 64
    with pytest.raises(SystemExit) as caught:
        main(["no-such-command"])
    assert caught.value.code == 64


def test_conflicts_exit_4_for_plan_and_apply(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from k3snet import MemoryBackend, Route, State, register_backend  # noqa: PLC0415
    from k3snet.backends.registry import unregister_backend  # noqa: PLC0415

    other = Route("192.168.2.0/24", gateway="192.168.1.254", device="eth0", protocol=4)
    register_backend("memory-conflict", lambda: MemoryBackend(State(foreign=[other])))
    try:
        args = ["-f", str(SEED), "--backend", "memory-conflict", "--no-facts"]
        assert main(["plan", *args]) == 4
        assert "! route 192.168.2.0/24" in capsys.readouterr().out
        assert main(["apply", *args]) == 4
        capsys.readouterr()
        # The documented contract (docs/cli.md, apply): conflicts skipped do not change
        # the exit code; a script tells them by the plan's `!` lines or the JSON notes.
        assert main(["apply", *args, "--allow-conflicts"]) == 0
        out = capsys.readouterr().out
        assert "! route 192.168.2.0/24" in out
        assert "1 conflict(s)" in out
        assert main(["apply", *args, "--allow-conflicts", "--output", "json"]) == 0
        notes = json.loads(capsys.readouterr().out)["plan"]["notes"]
        assert [n["status"] for n in notes] == ["conflict"]
    finally:
        unregister_backend("memory-conflict")


def test_errors_are_json_with_output_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "-f", str(SEED), "--backend", "nope", "--no-facts",
                 "--output", "json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["format"] == 1
    assert document["kind"] == "error"
    assert document["error"]["type"] == "BackendNotFoundError"


def test_version_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    import k3snet  # noqa: PLC0415

    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"k3snet {k3snet.__version__}"


def test_colour_only_when_asked_or_on_a_terminal(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["plan", "-f", str(SEED), "--backend", "memory", "--no-facts"]
    main(args)
    assert "\x1b[" not in capsys.readouterr().out  # captured output is not a terminal
    main([*args, "--color", "always"])
    assert "\x1b[32m+ masquerade" in capsys.readouterr().out
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    main(args)
    assert "\x1b[" not in capsys.readouterr().out


def test_verbose_logs_go_to_stderr_as_text_or_json(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["apply", "-f", str(SEED), "--backend", "memory", "--no-facts"]
    main(args)
    assert "applying" not in capsys.readouterr().err  # warnings only by default
    main([*args, "-v"])
    assert "INFO k3snet.converge: memory: applying 8 change(s)" in capsys.readouterr().err
    main([*args, "-v", "--log-format", "json"])
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert records[0]["level"] == "info"
    assert records[0]["logger"] == "k3snet.converge"


def test_bash_completion_is_valid_bash_and_knows_the_commands(tmp_path: Path) -> None:
    done = _cli("completion", "bash")
    script = tmp_path / "k3snet.bash"
    script.write_text(done.stdout)
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    for word in ("plan", "apply", "destroy", "--detailed-exitcode", "--auto-approve"):
        assert word in done.stdout
    assert done.stdout == _completion("bash")  # the script the tests below read
    assert _completion("zsh").startswith("#compdef k3snet")


@pytest.mark.parametrize(("words", "offered"), [
    # The command after common options, as `k3snet -v plan` runs it: nothing was offered.
    (["-v", "pl"], ["plan"]),
    (["--log-format", "json", "ap"], ["apply"]),
    (["-q", "apply", "--dry"], ["--dry-run"]),
    # Values from their choices, and the positional choices: files were offered.
    (["render", "netw"], ["networkd", "networkmanager"]),
    (["completion", ""], ["bash", "zsh"]),
    (["plan", "--backend", "nf"], ["nftables"]),
    (["doctor", "-o", ""], ["text", "json"]),
    (["-v", "plan", "--color", "n"], ["never"]),
    (["--color", ""], ["auto", "always", "never"]),
])
def test_bash_completion_finds_the_command_after_common_options_and_offers_choices(
        tmp_path: Path, words: list[str], offered: list[str]) -> None:
    script = tmp_path / "k3snet.bash"
    script.write_text(_completion("bash"))
    line = " ".join(shlex.quote(w) for w in ["k3snet", *words])
    done = subprocess.run(
        ["bash", "-c", f'source {shlex.quote(str(script))}; COMP_WORDS=({line}); '
         'COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _k3snet; printf "%s\\n" "${COMPREPLY[@]}"'],
        capture_output=True, text=True, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == offered


def test_destroy_without_a_terminal_needs_auto_approve(capsys: pytest.CaptureFixture[str]) -> None:
    from k3snet import MemoryBackend, State, Sysctl, register_backend  # noqa: PLC0415
    from k3snet.backends.registry import unregister_backend  # noqa: PLC0415

    held = MemoryBackend(State(owned=[Sysctl("net.ipv4.ip_forward", "1")]))
    register_backend("memory-held", lambda: held)
    try:
        assert main(["destroy", "--backend", "memory-held"]) == 1
        assert "pass --auto-approve" in capsys.readouterr().err
        assert held.observe().owned
        assert main(["destroy", "--backend", "memory-held", "--auto-approve",
                     "--detailed-exitcode"]) == 2
        assert not held.observe().owned
    finally:
        unregister_backend("memory-held")


# ---------------------------------------------------------------- backend options


@pytest.fixture
def jsonfile() -> Iterator[None]:
    from k3snet import register_backend  # noqa: PLC0415
    from k3snet.backends.registry import unregister_backend  # noqa: PLC0415

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "jsonfile_backend"))
    from k3snet_jsonfile import JsonFileBackend  # noqa: PLC0415

    register_backend("jsonfile", JsonFileBackend)
    yield
    unregister_backend("jsonfile")
    sys.path.pop(0)


@pytest.mark.usefixtures("jsonfile")
def test_backend_options_reach_a_custom_backend(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "nat.json"
    args = ["-f", str(SEED), "--backend", "memory:route,sysctl,forward", "--backend",
            "jsonfile:nat", "--backend-opt", f"jsonfile.path={store}", "--no-facts"]
    assert main(["apply", *args]) == 0, capsys.readouterr().err
    assert "masquerade" in store.read_text()
    capsys.readouterr()
    assert main(["plan", *args]) == 2  # the memory backend starts empty in every run
    assert "masquerade" not in capsys.readouterr().out  # the JSON file kept the NAT rules


@pytest.mark.usefixtures("jsonfile")
@pytest.mark.parametrize(("option", "message"), [
    ("jsonfile.colour=red", "backend 'jsonfile' has no option 'colour'; its options: path"),
    ("nftables.family=split", "no backend 'nftables' in use"),
])
def test_bad_backend_options_are_clear_errors(option: str, message: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["plan", "-f", str(SEED), "--backend", "jsonfile:nat", "--backend-opt",
                 f"jsonfile.path={tmp_path / 'x.json'}", "--backend-opt", option, "--no-facts"])
    assert code == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["plan", "--backend-opt", "jsonfile"],
    ["plan", "--backend-opt", "nftables=x"],
    ["plan", "--backend-opt", "a=b.c=d"],
    ["plan", "--backend-opt", "nftables.=x"],
    ["render", "manifests", "--profile", "edge"],
    ["render", "manifests", "--profile", "=edge.yaml"],
    ["render", "manifests", "--profile", "edge="],
])
def test_a_malformed_backend_opt_or_profile_is_a_usage_error_naming_the_shape(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main([*argv, "-f", str(SEED)])
    assert caught.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"argument {argv[-2]}: " in err
    assert ("expected NAME.KEY=VALUE" if argv[-2] == "--backend-opt"
            else "expected NAME=SPEC") in err


@pytest.mark.usefixtures("jsonfile")
def test_a_missing_required_option_is_named_not_a_traceback(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "-f", str(SEED), "--backend", "jsonfile:nat", "--no-facts"]) == 1
    assert "backend 'jsonfile'" in capsys.readouterr().err


def test_facts_are_read_only_for_backends_acting_on_the_local_node(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from k3snet import cli  # noqa: PLC0415

    def no_facts(*_args: object, **_kw: object) -> None:
        raise AssertionError("facts gathered for a backend that is not on this node")

    monkeypatch.setattr(cli, "gather_facts", no_facts)
    assert main(["plan", "-f", str(SEED), "--backend", "memory"]) == 2


def test_allow_disruptive_flag_spec_key_and_marks(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from k3snet import MemoryBackend, State, Sysctl, register_backend  # noqa: PLC0415
    from k3snet.backends.kit import ALLOW_DISRUPTIVE  # noqa: PLC0415
    from k3snet.backends.registry import unregister_backend  # noqa: PLC0415
    from k3snet.planner import Change  # noqa: PLC0415

    built: list[bool] = []

    class Cni(MemoryBackend):
        """Any backend of the contract (not calico): the CLI asks it, not a calico import."""

        def __init__(self, *, allow_disruptive: bool = False) -> None:
            super().__init__(State(owned=[Sysctl("net.ipv4.conf.all.rp_filter", "2")]))
            self.allow_disruptive = allow_disruptive
            self.warnings = ("IPPool p: field spec.blocksize is dropped",)
            built.append(allow_disruptive)

        def disruptive(self, change: Change) -> str | None:
            return "it re-addresses every pod" if change.action == "delete" else None

    register_backend("memory-cni", Cni)
    try:
        args = ["plan", "-f", str(SEED), "--backend", "memory-cni", "--no-facts"]
        assert main(args) == 2
        out = capsys.readouterr().out
        line = [x for x in out.splitlines() if x.startswith("!! disruptive:")]
        assert line == [f"!! disruptive: - sysctl net.ipv4.conf.all.rp_filter = 2: it "
                        f"re-addresses every pod; apply refuses it unless allowed "
                        f"({ALLOW_DISRUPTIVE})"]
        assert "!! warning: IPPool p: field spec.blocksize is dropped" in out
        assert main([*args, "--allow-disruptive"]) == 2
        assert "re-addresses every pod; allowed" in capsys.readouterr().out
        spec = tmp_path / "spec.yaml"
        spec.write_text(SEED.read_text() + "cni:\n  allowDisruptive: true\n")
        assert main(["plan", "-f", str(spec), "--backend", "memory-cni", "--no-facts"]) == 2
        assert "re-addresses every pod; allowed" in capsys.readouterr().out
        assert built == [False, True, True]
        main([*args, "--output", "json"])
        document = json.loads(capsys.readouterr().out)
        assert document["warnings"] == ["IPPool p: field spec.blocksize is dropped"]
        from tests.cli.test_schemas import validate  # noqa: PLC0415 - the schemas' validator

        validate(document, "plan")
    finally:
        unregister_backend("memory-cni")
    # The flag every hint names exists where it is needed.
    for command in (["plan", "-f", "x"], ["apply", "-f", "x"], ["agent", "-f", "x"]):
        assert build_parser().parse_args([*command, "--allow-disruptive"]).allow_disruptive


@pytest.mark.parametrize(("given", "read"), [
    (["-v", "plan", "-f", "s"], ["plan", "-v", "-f", "s"]),
    (["-vv", "-q", "plan"], ["plan", "-vv", "-q"]),
    (["--color", "never", "--log-format=json", "apply", "x"],
     ["apply", "--color", "never", "--log-format=json", "x"]),
    (["plan", "-v"], ["plan", "-v"]),  # already after it
    (["-v"], ["-v"]),  # no command: argparse says what is missing
    (["-v", "--version"], ["-v", "--version"]),
    (["--color"], ["--color"]),  # its value missing: argparse says so
    (["-x", "plan"], ["-x", "plan"]),  # not a common option: argparse refuses it
    (["plan", "-f", "-v"], ["plan", "-f", "-v"]),  # after the command: never moved
])
def test_common_options_before_the_command_are_read_as_after_it(
        given: list[str], read: list[str]) -> None:
    assert _common_after_command(given) == read


def test_k3snet_dash_v_plan_is_k3snet_plan_dash_v(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["-f", str(SEED), "--backend", "memory", "--no-facts"]
    assert main(["-q", "--color", "never", "plan", *args]) == 2
    before = capsys.readouterr()
    assert main(["plan", "-q", "--color", "never", *args]) == 2
    assert capsys.readouterr() == before
    assert "Plan:" in before.out


def test_plan_json_carries_the_disruptive_marks_the_text_shows(
        capsys: pytest.CaptureFixture[str]) -> None:
    # `plan --output json` dropped the `!! disruptive:` lines: a pipeline gating on the
    # JSON plan could not see that `apply` would refuse a change.
    from k3snet import MemoryBackend, State, Sysctl, register_backend  # noqa: PLC0415
    from k3snet.backends.kit import ALLOW_DISRUPTIVE  # noqa: PLC0415
    from k3snet.backends.registry import unregister_backend  # noqa: PLC0415
    from k3snet.planner import Change  # noqa: PLC0415
    from tests.cli.test_schemas import validate  # noqa: PLC0415 - the schemas' validator

    class Cni(MemoryBackend):
        def __init__(self, *, allow_disruptive: bool = False) -> None:
            super().__init__(State(owned=[Sysctl("net.ipv4.conf.all.rp_filter", "2")]))
            self.allow_disruptive = allow_disruptive

        def disruptive(self, change: Change) -> str | None:
            return "it re-addresses every pod" if change.action == "delete" else None

    register_backend("memory-cni-json", Cni)
    try:
        args = ["plan", "-f", str(SEED), "--backend", "memory-cni-json", "--no-facts"]
        assert main(args) == 2
        text = [line.removeprefix("!! disruptive: ")
                for line in capsys.readouterr().out.splitlines()
                if line.startswith("!! disruptive:")]
        assert main([*args, "--output", "json"]) == 2
        document = json.loads(capsys.readouterr().out)
        validate(document, "plan")
        assert document["disruptive"] == text == [
            "- sysctl net.ipv4.conf.all.rp_filter = 2: it re-addresses every pod; apply "
            f"refuses it unless allowed ({ALLOW_DISRUPTIVE})"]
        assert main([*args, "--output", "json", "--allow-disruptive"]) == 2
        assert json.loads(capsys.readouterr().out)["disruptive"][0].endswith("; allowed")
        assert main(["plan", "-f", str(SEED), "--backend", "memory", "--no-facts",
                     "--output", "json"]) == 2
        assert json.loads(capsys.readouterr().out)["disruptive"] == []  # none: an empty list
    finally:
        unregister_backend("memory-cni-json")


def test_an_apply_whose_undo_failed_too_exits_5_not_the_1_of_nothing_changed(
        capsys: pytest.CaptureFixture[str]) -> None:
    # Exit 1 says "nothing was applied, or it was rolled back": a script retries or
    # moves on. After a RollbackError the node may be half-changed: another code.
    from k3snet import MemoryBackend, register_backend  # noqa: PLC0415
    from k3snet.backends.registry import unregister_backend  # noqa: PLC0415
    from k3snet.errors import ApplyError, RollbackError  # noqa: PLC0415

    class Failing(MemoryBackend):
        rollback = True

        def apply(self, plan: Plan) -> Any:
            error = RollbackError if self.rollback else ApplyError
            raise error("the kernel said no", failed=plan.changes[0], done=plan.changes[:1])

    register_backend("memory-half", Failing)
    try:
        args = ["apply", "-f", str(SEED), "--backend", "memory-half", "--no-facts",
                "--output", "json"]
        assert main(args) == 5
        captured = capsys.readouterr()
        assert json.loads(captured.out)["error"]["type"] == "RollbackError"
        assert "k3snet: error: the kernel said no" in captured.err
        Failing.rollback = False  # a failure taken back whole is still 1
        assert main(args) == 1
        assert json.loads(capsys.readouterr().out)["error"]["type"] == "ApplyError"
    finally:
        unregister_backend("memory-half")


def test_an_apply_whose_later_backend_changed_nothing_says_the_earlier_one_was_taken_back(
        capsys: pytest.CaptureFixture[str]) -> None:
    # Two backends, the second failing at its first change: its "(nothing was changed)"
    # stood beside "rolled back 4 change(s)", the first backend's part the group took
    # back, read as a contradiction. The message says whose part was made and taken
    # back, and which backend changed nothing, in the text and the JSON document.
    from k3snet import MemoryBackend, register_backend  # noqa: PLC0415
    from k3snet.backends.registry import unregister_backend  # noqa: PLC0415
    from tests.cli.test_schemas import validate  # noqa: PLC0415 - the schemas' validator

    class Node(MemoryBackend):
        name = "mem-node"

        def __init__(self) -> None:
            super().__init__(capabilities=["route", "sysctl"])

    class Nat(MemoryBackend):
        name = "mem-nat"

        def __init__(self) -> None:
            super().__init__(capabilities=["nat", "forward"])
            self.faults.fail_at(0)

    register_backend("mem-node", Node)
    register_backend("mem-nat", Nat)
    try:
        args = ["apply", "-f", str(SEED), "--backend", "mem-node", "--backend", "mem-nat",
                "--no-facts"]
        assert main(args) == 1
        err = capsys.readouterr().err
        assert main([*args, "--output", "json"]) == 1
        document = json.loads(capsys.readouterr().out)
        validate(document, "error")
        for message in (err, document["error"]["message"]):
            assert "nothing was changed" not in message, message
            assert "(mem-nat changed nothing)" in message, message
            assert "mem-node's 4 change(s) made before mem-nat failed were taken back" in message
    finally:
        unregister_backend("mem-node")
        unregister_backend("mem-nat")


@pytest.mark.parametrize(("argv", "stream"), [
    (["plan", "-f", "-", "--backend", "memory"], "input"),
    (["apply", "-f", "-", "--backend", "memory"], "input"),
    (["apply", "-"], "input"),
    (["destroy", "-f", "-", "--backend", "memory"], "input"),
    (["observe", "-f", "-", "--backend", "memory"], "input"),
    (["validate", "-f", "-"], "input"),
    (["render", "sysctl", "-f", "-"], "input"),
    (["render", "manifests", "-f", str(SEED), "--profile", "edge=-"], "input"),
    (["doctor", "--from", "10.42.0.5", "--to", "1.1.1.1", "-f", "-"], "input"),
    (["doctor", "--from", "10.42.0.5", "--to", "1.1.1.1", "--state", "-"], "input"),
    (["agent", "--once", "-f", "-"], "input"),
    (["connectivity", "-f", "-"], "input"),
    (["plan", "-f", str(SEED), "--backend", "memory", "--out", "-"], "output"),
    (["render", "sysctl", "-f", str(SEED), "--out", "-"], "output"),
    (["observe", "--backend", "memory", "--save", "-"], "output"),
])
def test_a_dash_for_standard_input_or_output_is_a_usage_error_naming_it(
        argv: list[str], stream: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Scripts write `-` for stdin or stdout; it was read as a file named "-" ("cannot
    # read -: No such file or directory"), and `plan --out -` wrote a file named "-".
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == EXIT_USAGE
    assert f"standard {stream}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written, no file named "-"


def test_a_backend_option_holding_a_nul_is_a_usage_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    """JSON's ``"\u0000"`` in --backend-opt netlink.state_dir reached the backend, and plan
    failed as an internal error ("embedded null byte") at the first file it touched."""
    with pytest.raises(SystemExit) as caught:
        main(["plan", "-f", str(SEED), "--backend", "memory", "--no-facts",
              "--backend-opt", 'netlink.state_dir="/run/a\\u0000b"'])
    assert caught.value.code == EXIT_USAGE
    assert "the value holds a NUL character" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["render", "sysctl", "-f", str(SEED), "-o", "json"],
    ["render", "manifests", "-f", str(SEED), "--out", "yaml"],
    ["plan", "-f", str(SEED), "--backend", "memory", "--no-facts", "--out", "json"],
    ["observe", "--backend", "memory", "--save", "text"],
])
def test_an_output_format_given_as_where_to_write_is_a_usage_error(
        argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``-o`` is doctor's --output (a format) and render's --out (a directory):
    ``render -o json`` made a directory ``json`` of boot files, and ``plan --out json``
    (beside --output) saved a plan file ``json``, both silently."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == EXIT_USAGE
    where = argv[-1]
    err = capsys.readouterr().err
    assert (f"{where!r} is where to write (a file or directory named {where} here), not an "
            f"output format") in err
    assert "--output yaml" not in err  # no command takes it: the hint was a usage error too
    assert list(tmp_path.iterdir()) == []


def test_a_path_named_like_a_format_is_reached_as_written_or_when_it_exists(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["render", "sysctl", "-f", str(SEED), "-o", "./json"]) == 0
    assert [p.name for p in (tmp_path / "json").iterdir()] == ["90-k3snet.conf"]
    assert main(["render", "sysctl", "-f", str(SEED), "-o", "json"]) == 0  # it exists now


def test_a_file_named_dash_is_still_reached_as_dot_slash_dash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-").write_bytes(SEED.read_bytes())
    assert main(["validate", "-f", "./-"]) == 0


@pytest.fixture
def locked_namespace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A memory backend acting in this process's namespace (so it takes that namespace's
    lock, in a lock directory of the test's own), registered as ``memory-locked``, while
    another holder keeps that lock."""
    from k3snet import MemoryBackend, State, Sysctl, register_backend  # noqa: PLC0415
    from k3snet.backends.lock import namespace_lock  # noqa: PLC0415
    from k3snet.backends.registry import unregister_backend  # noqa: PLC0415

    class Locked(MemoryBackend):
        netns = None  # the caller's own namespace: namespaces_of() locks it

    held = Locked(State(owned=[Sysctl("net.ipv4.ip_forward", "1")]))
    monkeypatch.setenv("K3SNET_LOCK_DIR", str(tmp_path / "locks"))
    register_backend("memory-locked", lambda: held)
    taken, release = threading.Event(), threading.Event()

    def holder() -> None:  # another thread: this one would take its own lock again
        with namespace_lock([None], timeout=0):
            taken.set()
            release.wait(60)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert taken.wait(10)
        yield held
    finally:
        release.set()
        thread.join()
        unregister_backend("memory-locked")


@pytest.mark.parametrize("argv", [
    ["apply", "-f", str(SEED), "--no-facts"],
    ["destroy", "--auto-approve"],
])
def test_lock_timeout_bounds_the_wait_for_another_k3snet_and_nothing_changes(
        argv: list[str], locked_namespace: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # A cron job or CI step that must not hang for the default 60 s behind the agent:
    # --lock-timeout 0 tries once; the failure names the holder and changes nothing.
    # Its exit code is 75 (busy, try later), not 1: a script retries on it, and only
    # on it (1 is a spec or a backend failing, which a retry does not mend).
    before = locked_namespace.observe()
    assert main([*argv, "--backend", "memory-locked", "--lock-timeout", "0"]) == EXIT_BUSY == 75
    err = capsys.readouterr().err
    assert f"another k3snet process (pid {os.getpid()})" in err
    assert "waited 0 s" in err
    assert locked_namespace.observe() == before
    assert main([*argv, "--backend", "memory-locked", "--lock-timeout", "0",
                 "--output", "json"]) == EXIT_BUSY
    document = json.loads(capsys.readouterr().out)
    assert document["error"]["type"] == "LockTimeoutError"
    assert locked_namespace.observe() == before


def test_plan_takes_no_lock_and_a_dry_run_waits_for_it_as_the_apply_it_rehearses(
        locked_namespace: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # The decision docs/reliability.md gives reasons for ("Which commands take it"): a
    # monitoring `plan` never waits for the agent (its exit codes have no "busy"), while
    # a dry run reports what apply would, busy included, never a half-applied node.
    plan_args = ["-f", str(SEED), "--no-facts", "--backend", "memory-locked"]
    assert main(["plan", *plan_args]) == 2
    assert "another k3snet process" not in capsys.readouterr().err
    assert main(["apply", *plan_args, "--dry-run", "--lock-timeout", "0"]) == EXIT_BUSY
    assert main(["destroy", "--backend", "memory-locked", "--dry-run",
                 "--lock-timeout", "0"]) == EXIT_BUSY


def test_a_run_waiting_for_the_lock_says_so_on_stderr_at_once(
        locked_namespace: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # A person (or a CI log) saw nothing for up to a minute: say who is waited for.
    assert main(["apply", "-f", str(SEED), "--no-facts", "--backend", "memory-locked",
                 "--lock-timeout", "0.2", "--log-format", "json"]) == EXIT_BUSY
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()
               if line.startswith("{")]
    waiting = [r for r in records if r["level"] == "warning" and "waiting" in r["message"]]
    assert len(waiting) == 1
    assert f"pid {os.getpid()}" in waiting[0]["message"]


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "86400", "soon"])
def test_a_lock_timeout_that_is_not_seconds_from_0_to_a_day_is_a_usage_error(
        value: str) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["apply", "-f", str(SEED), "--backend", "memory", "--lock-timeout", value])
    assert caught.value.code == EXIT_USAGE


def test_the_apply_command_plan_out_suggests_runs_as_pasted_in_a_shell(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "node 1's.plan"
    assert main(["plan", "-f", str(SEED), "--backend", "memory", "--no-facts",
                 "--out", str(out)]) == 2
    command = capsys.readouterr().out.rstrip().splitlines()[-1].split("`")[1]
    assert shlex.split(command) == ["k3snet", "apply", str(out)]


@pytest.mark.parametrize("out", ["spec.yaml", "./spec.yaml", "link.yaml", "hard.yaml"])
def test_plan_out_refuses_to_write_over_its_own_spec(
        out: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # `k3snet plan -f egress.yaml --out egress.yaml` (a completion slip) replaced the
    # spec with the plan file: the only copy of the spec, on many nodes.
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(SEED.read_bytes())
    (tmp_path / "link.yaml").symlink_to("spec.yaml")
    os.link(spec, tmp_path / "hard.yaml")
    assert main(["plan", "-f", "spec.yaml", "--backend", "memory", "--no-facts",
                 "--out", out]) == EXIT_USAGE
    assert "is the spec" in capsys.readouterr().err
    assert spec.read_bytes() == SEED.read_bytes()
    assert (tmp_path / "link.yaml").is_symlink()


def test_apply_says_the_backends_warnings_as_plan_does(
        capsys: pytest.CaptureFixture[str]) -> None:
    # The nftables backend's "other tables were not read whole" reached `plan` only: a
    # cron job running `apply` (text or JSON) never learnt its foreign state was partial.
    from k3snet import MemoryBackend, register_backend  # noqa: PLC0415
    from k3snet.backends.registry import unregister_backend  # noqa: PLC0415

    class Warns(MemoryBackend):
        warnings = ("memory: other tables were not read whole",)

    register_backend("memory-warns", Warns)
    try:
        args = ["-f", str(SEED), "--backend", "memory-warns", "--no-facts"]
        assert main(["apply", *args]) == 0
        assert "!! warning: memory: other tables were not read whole" in capsys.readouterr().out
        for extra in ([], ["--dry-run"]):
            assert main(["apply", *args, *extra, "--output", "json"]) == 0
            document = json.loads(capsys.readouterr().out)
            assert document["warnings"] == ["memory: other tables were not read whole"]
    finally:
        unregister_backend("memory-warns")


def test_destroy_says_the_backends_warnings_as_apply_does(
        capsys: pytest.CaptureFixture[str]) -> None:
    # An iptables chain of k3snet's renamed by an admin goes on running after a destroy,
    # and the backend warns of it: `destroy` said it in a log line only, and its JSON
    # document (schema apply, which has `warnings`) never.
    from k3snet import MemoryBackend, load_spec, register_backend  # noqa: PLC0415
    from k3snet import compile as compile_spec  # noqa: PLC0415
    from k3snet.backends.registry import unregister_backend  # noqa: PLC0415

    said = "memory: chain K3SNET-OLD holds k3snet's rules under another name"

    class Warns(MemoryBackend):
        warnings = (said,)

    class OwnsAndWarns(Warns):
        def __init__(self) -> None:
            super().__init__(compile_spec(load_spec(SEED)))

    register_backend("memory-warns", Warns)
    register_backend("memory-owns", OwnsAndWarns)
    try:
        for name in ("memory-warns", "memory-owns"):  # nothing to destroy, then something
            args = ["destroy", "--backend", name, "--no-facts", "--auto-approve"]
            for extra in ([], ["--dry-run"]):
                assert main([*args, *extra]) in (0, 2)
                assert f"!! warning: {said}" in capsys.readouterr().out
                assert main([*args, *extra, "--output", "json"]) in (0, 2)
                document = json.loads(capsys.readouterr().out)
                assert (document["kind"], document["warnings"]) == ("destroy", [said])
    finally:
        unregister_backend("memory-warns")
        unregister_backend("memory-owns")


@pytest.mark.parametrize("extra", [["-f", str(SEED)], ["--backend", "iptables"],
                                   ["--backend-opt", "nftables.table=other"], ["--no-facts"]])
def test_observe_save_with_an_option_it_ignores_is_a_usage_error(
        extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The bundle is the namespace's whole state, whatever the backends: a script giving
    # --backend or a spec expected them to count, and got an exit 0 that ignored them.
    # A namespace that is not there: whatever happens, no node's state is read.
    assert main(["observe", "--netns", "k3snet-none-here", "--save", str(tmp_path / "bundle"),
                 *extra]) == EXIT_USAGE
    assert "--save" in capsys.readouterr().err
    assert not (tmp_path / "bundle").exists()


def test_every_exit_code_is_in_the_docs_table_and_the_help_epilog() -> None:
    # A script reads the exit code; a code the table does not list (75, busy, was added
    # after it) is one nobody can branch on.
    from k3snet import cli  # noqa: PLC0415

    codes = {value for name, value in vars(cli).items()
             if name.startswith("EXIT_") and isinstance(value, int)}
    table = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    section = table.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(line.split("|")[1]) for line in section.splitlines()
                  if line.startswith("| ") and line.split("|")[1].strip().isdigit()}
    assert codes <= documented, sorted(codes - documented)
    epilog = build_parser().epilog or ""
    # The --help epilog lists the codes a command of its own says (not the signals').
    assert {c for c in codes if c < 128} <= {int(w) for w in epilog.replace(",", " ").split()
                                             if w.isdigit()}


@pytest.mark.parametrize("entry", ["memory:", "memory:route,", "memory:,route", ":route", ""])
@pytest.mark.parametrize("command", [["plan", "-f", str(SEED), "--no-facts"],
                                     ["render", "nftables", "-f", str(SEED)]])
def test_a_backend_flag_with_an_empty_name_or_kind_is_a_usage_error(
        entry: str, command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # `--backend nftables:{{ kinds | join(',') }}` with no kinds gave the backend every
    # kind without a word; `memory:route,` named a kind '' ("cannot manage  ").
    with pytest.raises(SystemExit) as caught:
        main([*command, "--backend", entry])
    assert caught.value.code == EXIT_USAGE
    assert "expected NAME or NAME:KIND[,KIND...]" in capsys.readouterr().err


def test_run_main_takes_argv_alone_as_main_does(capsys: pytest.CaptureFixture[str]) -> None:
    """``run_main`` is public (the API reference shows it) and its ``run`` was required,
    of a private module's type: a caller had to import ``k3snet._argv``."""
    assert run_main(["validate", "-f", str(SEED)]) == 0
    printed = capsys.readouterr().out
    assert main(["validate", "-f", str(SEED)]) == 0
    assert printed == capsys.readouterr().out
    assert printed
