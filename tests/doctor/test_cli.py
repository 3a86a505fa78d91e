"""``k3snet doctor`` and ``k3snet observe --save``: exit codes, outputs, no tracebacks."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from k3snet.backends.netns import NetnsRunner
from k3snet.cli import build_parser, main
from k3snet.errors import K3snetError
from k3snet.lab.netns import run_in, temporary_netns

from .conftest import DESTINATIONS, POD, PORT, DoctorLab, Topology

GOLDEN = Path(__file__).parent / "golden"


def _doctor(case: str, *extra: str) -> list[str]:
    return ["doctor", "--from", POD, "--to", f"{DESTINATIONS['plain']}:{PORT}",
            "--state", str(GOLDEN / case), *extra]


def test_blocked_flow_exits_3_with_findings_and_the_plan(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_doctor("seed")) == 3
    out = capsys.readouterr().out
    assert "verdict: blocked" in out
    assert "forwarding-off" in out
    assert "+ sysctl net.ipv4.ip_forward = 1" in out
    assert "after the fix: reaches; the destination sees 192.168.1.5" in out


def test_reaching_flow_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_doctor("healthy")) == 0
    assert "verdict: reaches; the destination sees 192.168.1.5" in capsys.readouterr().out


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_doctor("no-masquerade", "-o", "json")) == 3
    data = json.loads(capsys.readouterr().out)
    assert (data["format"], data["kind"]) == (1, "doctor")  # as every document of the CLI
    assert data["trace"]["verdict"] == "blocked"
    assert [f["code"] for f in data["findings"]] == ["no-masquerade"]
    assert data["after"] == {"verdict": "reaches", "source_seen": "192.168.1.5"}
    assert data["plan"]["changes"][0]["after"]["type"] == "masquerade"


@pytest.mark.parametrize("argv", [
    ["doctor", "--from", "nope", "--to", "192.168.2.10", "--state", str(GOLDEN / "seed")],
    ["doctor", "--from", POD, "--to", "192.168.2.10:x", "--state", str(GOLDEN / "seed")],
    ["doctor", "--from", POD, "--to", "192.168.2.10:99999", "--state", str(GOLDEN / "seed")],
    # A port of other digits than 0-9: "²" was an internal error (int() refuses it), and
    # "٥٤٣٢" (Arabic-Indic digits) was traced as port 5432; a trailing ":" with no port
    # was traced as no port at all.
    ["doctor", "--from", POD, "--to", "192.168.2.10:\u00b2", "--state", str(GOLDEN / "seed")],
    ["doctor", "--from", POD, "--to", "192.168.2.10:\u0665\u0664\u0663\u0662",
     "--state", str(GOLDEN / "seed")],
    ["doctor", "--from", POD, "--to", "192.168.2.10:", "--state", str(GOLDEN / "seed")],
    ["doctor", "--from", POD, "--to", "[192.168.2.10]:", "--state", str(GOLDEN / "seed")],
    ["doctor", "--from", POD, "--to", "[192.168.2.10]80", "--state", str(GOLDEN / "seed")],
    ["doctor", "--from", POD, "--to", "fd01::1", "--state", str(GOLDEN / "seed")],
    ["doctor", "--from", POD, "--to", "192.168.2.10", "--state", "/nonexistent/dir"],
    ["doctor", "--from", POD, "--to", "192.168.2.10", "--state", str(GOLDEN)],
    ["doctor", "--from", POD, "--to", "192.168.2.10", "--state", str(GOLDEN / "seed"), "--fix"],
    # --netns ../etc: a usage error now (tests/cli/test_usage_combinations.py).
    ["doctor", "--from", POD, "--to", "192.168.2.10", "--proto", "icmp", "--to", "1.2.3.4:5",
     "--state", str(GOLDEN / "seed")],
])
def test_bad_input_exits_1_without_traceback(argv: list[str],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("k3snet: error:")
    assert "Traceback" not in err


def test_malformed_bundle_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "routes-v4.json").write_text("[{broken")
    argv = ["doctor", "--from", POD, "--to", "192.168.2.10", "--state", str(tmp_path)]
    assert main(argv) == 1
    assert "routes-v4.json" in capsys.readouterr().err


@pytest.mark.kernel
def test_observe_save_writes_a_bundle_doctor_reads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os  # noqa: PLC0415

    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    with temporary_netns("obs") as ns:
        run_in(ns, ["ip", "link", "set", "lo", "up"])
        assert main(["observe", "--save", str(tmp_path), "--netns", ns]) == 0
    written = capsys.readouterr().out.split()
    assert str(tmp_path / "bundle.json") in written
    assert json.loads((tmp_path / "routes-v4.json").read_text()) is not None
    # No pod lives in an empty namespace: the doctor says so (unknown), it does not crash.
    argv = ["doctor", "--from", POD, "--to", "192.168.2.10", "--state", str(tmp_path)]
    assert main(argv) == 4
    assert "not routed to any interface" in capsys.readouterr().out


@pytest.mark.kernel
@pytest.mark.usefixtures("require_root")
def test_observe_save_with_json_output_prints_one_document_naming_the_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with temporary_netns("obsj") as ns:
        assert main(["observe", "--save", str(tmp_path), "--netns", ns,
                     "--output", "json"]) == 0
    document = json.loads(capsys.readouterr().out)  # stdout is that document alone
    assert (document["format"], document["kind"]) == (1, "capture")
    assert document["directory"] == str(tmp_path)
    assert str(tmp_path / "bundle.json") in document["files"]
    assert all(Path(path).exists() for path in document["files"])
    assert isinstance(document["missing"], dict)


@pytest.mark.kernel
def test_fix_applies_the_plan_and_the_flow_then_reaches(
        doctor_lab: DoctorLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The seed node, fixed by ``k3snet doctor --fix``; the kernel's probe then passes."""
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    topology = Topology(forwarding=False, nat="none")
    doctor_lab.configure(topology)
    assert not doctor_lab.probe(topology.destination, until_dropped=True)["ok"]
    argv = ["doctor", "--netns", doctor_lab.node, "--from", POD, "--to",
            f"{topology.destination}:{PORT}", "--fix", "--auto-approve"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "now: reaches" in out
    answer = doctor_lab.probe(topology.destination)
    assert answer == {"ok": True, "seen": "192.168.1.5", "error": None}


_SPEC_HEAD = "apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\nsysctls:\n"


def _apply_spec(node: str, spec: Path) -> None:
    assert main(["apply", "-f", str(spec), "--netns", node, "--backend", "netlink",
                 "--no-facts", "--auto-approve"]) == 0


def _fix_beside_a_spec(doctor_lab: DoctorLab, spec: Path, topology: Topology, sysctl: str,
                       capsys: pytest.CaptureFixture[str], *, output: str = "text"
                       ) -> tuple[int, str]:
    """The lab in ``topology``, a spec owning ``sysctl`` (a line of its ``sysctls``)
    applied on its node through netlink, then ``doctor --fix``: its status and stdout."""
    doctor_lab.configure(topology)
    spec.write_text(_SPEC_HEAD + f"  {sysctl}\n")
    _apply_spec(doctor_lab.node, spec)
    capsys.readouterr()
    status = main(["doctor", "--netns", doctor_lab.node, "--from", POD, "--to",
                   f"{topology.destination}:{PORT}", "--fix", "--auto-approve", "-o", output])
    return status, capsys.readouterr().out


@pytest.mark.kernel
def test_fix_leaves_a_sysctl_the_spec_owns_and_names_the_spec_s_edit(
        doctor_lab: DoctorLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """k3snet's spec owns ``cni0.forwarding = 0``: the fix (1) was dropped from the plan
    while "after the fix: reaches" counted it; now not planned, the finding names the
    spec's value and edit, and nothing predicts a pass the kernel does not give."""
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    topology = Topology()
    status, out = _fix_beside_a_spec(doctor_lab, tmp_path / "spec.yaml", topology,
                                     "net.ipv4.conf.cni0.forwarding: 0", capsys)
    assert status == 3
    assert "k3snet's own spec sets sysctl net.ipv4.conf.cni0.forwarding = 0" in out, out
    assert "sysctls: {net.ipv4.conf.cni0.forwarding: 1}" in out
    assert "after the fix" not in out
    forwarding = ["sysctl", "-n", "net.ipv4.conf.cni0.forwarding"]
    assert run_in(doctor_lab.node, forwarding).stdout.strip() == "0"
    assert not doctor_lab.probe(topology.destination, until_dropped=True)["ok"]


@pytest.mark.kernel
def test_fix_beside_a_spec_warns_the_next_apply_takes_it_back_as_it_does(
        doctor_lab: DoctorLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The spec owns ``all.rp_filter = 2``; forwarding is off. ``--fix`` turns it on and
    warns that the spec's next apply deletes it, naming the key to add: the next
    ``apply -f SPEC`` does, and the kernel drops the flow again."""
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    topology = Topology(forwarding=False)
    spec = tmp_path / "spec.yaml"
    status, out = _fix_beside_a_spec(doctor_lab, spec, topology,
                                     "net.ipv4.conf.all.rp_filter: 2", capsys, output="json")
    assert status == 0
    document = json.loads(out)
    assert len(document["warnings"]) == 1
    assert "the next apply of a spec or agent pass deletes this fix again" in (
        document["warnings"][0])
    assert "sysctls: {net.ipv4.ip_forward: 1}" in document["warnings"][0]
    assert doctor_lab.probe(topology.destination)["ok"]
    _apply_spec(doctor_lab.node, spec)  # the agent's next pass
    assert run_in(doctor_lab.node, ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() \
        == "0"
    assert not doctor_lab.probe(topology.destination, until_dropped=True)["ok"]


@pytest.mark.kernel
def test_a_route_fix_beside_a_spec_of_sysctls_warns_the_next_apply_is_refused_as_it_is(
        doctor_lab: DoctorLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The spec owns ``all.rp_filter = 2`` through netlink; a policy rule sends the
    replies to a table without the pod network. ``--fix`` adds the route there, which
    is then all k3snet owns of netlink's routes: the spec's next apply would delete
    every route it owns, which the teardown guard refuses (nothing applied). The
    warning said that apply deletes the fix (k3snet owning another object there)."""
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    topology = Topology(reply_rule="misroute", forwarding=False)
    spec = tmp_path / "spec.yaml"
    status, out = _fix_beside_a_spec(doctor_lab, spec, topology,
                                     "net.ipv4.conf.all.rp_filter: 2", capsys, output="json")
    assert status == 0
    document = json.loads(out)
    assert [f["code"] for f in document["findings"]] == ["forwarding-off", "reply-misrouted"]
    assert len(document["warnings"]) == 1, document["warnings"]
    warning = document["warnings"][0]
    assert "the teardown guard refuses" in warning, warning
    assert "deletes this fix again" not in warning
    assert main(["apply", "-f", str(spec), "--netns", doctor_lab.node, "--backend", "netlink",
                 "--no-facts", "--auto-approve"]) == 1  # the agent's next pass: refused
    assert "the plan deletes everything k3snet owns through netlink" in (
        capsys.readouterr().err)
    assert doctor_lab.probe(topology.destination)["ok"]  # the fix stays


@pytest.mark.kernel
@pytest.mark.parametrize("case", [
    (Topology(), "net.ipv4.conf.cni0.forwarding: 0"),  # the fix withheld
    (Topology(forwarding=False), "net.ipv4.conf.all.rp_filter: 2"),  # the warning
])
def test_a_doctor_without_fix_reports_what_fix_then_does_beside_a_spec(
        doctor_lab: DoctorLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], case: tuple[Topology, str]) -> None:
    """A spec applied on the node: the doctor without ``--fix`` read nothing k3snet owns,
    and planned ``cni0.forwarding = 1`` ("after the fix: reaches") that ``--fix`` then
    withheld (the spec's), or left out the warning that the spec's next apply deletes the
    fix. Now it reads what k3snet owns as ``--fix`` does: the two documents are one."""
    topology, sysctl = case
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    doctor_lab.configure(topology)
    spec = tmp_path / "spec.yaml"
    spec.write_text(_SPEC_HEAD + f"  {sysctl}\n")
    _apply_spec(doctor_lab.node, spec)
    capsys.readouterr()
    argv = ["doctor", "--netns", doctor_lab.node, "--from", POD, "--to",
            f"{topology.destination}:{PORT}", "-o", "json"]
    plain = main(argv)
    told = capsys.readouterr()
    assert told.err == ""
    assert main([*argv, "--fix", "--auto-approve"]) == (3 if topology.forwarding else 0)
    assert json.loads(told.out) == json.loads(capsys.readouterr().out)
    assert plain == 3


@pytest.mark.kernel
@pytest.mark.parametrize("error", [K3snetError("nft: not found"), PermissionError(13, "denied")])
def test_a_doctor_without_fix_that_cannot_read_what_k3snet_owns_says_so_and_reports(
        doctor_lab: DoctorLab, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], error: Exception) -> None:
    """The fix's backends cannot be read (a tool missing, no right to): the report is the
    one made against nothing owned, and stderr says what is left out."""
    topology = Topology(forwarding=False)
    doctor_lab.configure(topology)

    def unreadable(*_args: object, **_kwargs: object) -> object:
        raise error

    monkeypatch.setattr("k3snet.cli.create_backend", unreadable)
    assert main(["doctor", "--netns", doctor_lab.node, "--from", POD, "--to",
                 f"{topology.destination}:{PORT}"]) == 3
    told = capsys.readouterr()
    assert "+ sysctl net.ipv4.ip_forward = 1" in told.out
    assert told.err.startswith("k3snet: what k3snet owns here not read (")
    assert "--fix reads it" in told.err


def _apply_line(out: str) -> list[str]:
    """The shell line the text output ends with, split as a shell would."""
    last = out.rstrip("\n").splitlines()
    assert last[-2].startswith("the fix lines above are k3snet's plan, not shell commands"), out
    argv = shlex.split(last[-1])
    assert argv[:2] == ["k3snet", "doctor"], out
    return argv[1:]


def test_a_bundle_s_fix_ends_with_the_shell_line_that_applies_it_on_the_node(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The fix lines (``sysctl net.ipv4.ip_forward = 1``, ``masquerade 10.42.0.0/24 ->
    192.168.2.0/24 oif eth0``) are plan lines: typed into a shell, one reads a sysctl and
    fails on ``=``, the other redirects into a file named by the destination (``->``).
    The output now says so and ends with the one line a shell takes: ``--fix`` without
    ``--state``, keeping what shaped the diagnosis (``-f``, ``--service-cidr``,
    ``--proto``)."""
    spec = tmp_path / "my spec.yaml"
    spec.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                    "cluster:\n  podCIDRs: [10.42.0.0/16]\n")
    assert main(_doctor("seed", "-f", str(spec), "--service-cidr", "10.43.0.0/16",
                        "--proto", "udp")) == 3
    out = capsys.readouterr().out
    assert "on the node, apply them with:" in out
    assert _apply_line(out) == ["doctor", "--from", POD, "--to",
                                f"{DESTINATIONS['plain']}:{PORT}", "--proto", "udp",
                                "-f", str(spec), "--service-cidr", "10.43.0.0/16", "--fix"]


def _words_bash_reads(line: str) -> list[str]:
    """The words bash makes of ``line``, a ``k3snet ...`` command (``k3snet`` stood in by
    a function printing each of its arguments): what the printed line runs, pasted."""
    shown = subprocess.run(
        ["bash", "-c", 'k3snet() { printf "%s\\0" "$@"; }\n' + line],
        capture_output=True, check=True).stdout
    return [os.fsdecode(word) for word in shown.split(b"\0")[:-1]]


@pytest.mark.parametrize("name", [
    "-spec.yaml",  # a leading dash: `-f -spec.yaml` is -f without its argument
    "back\\slash.yaml",  # doubled, 'back\\\\slash.yaml' named another file
    "new\nline.yaml", "tab\t$HOME 'q'.yaml", "\x1b[31mred.yaml", "caf\u00e9 \u202eltr.yaml",
    os.fsdecode(b"latin-\xe9.yaml"),  # not UTF-8: a lone surrogate in argv
])
def test_the_printed_shell_line_gives_k3snet_the_same_values_pasted_into_bash(
        name: str, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Values the shell line must carry as given: a spec path (relative, as typed), a kube
    config and a context, each with a leading dash (given as ``--spec=-x``: printed ``-f
    -x``, argparse took ``-x`` for an option and the line was a usage error), a backslash
    (doubled by the escaping for the terminal, inside single quotes: another path), a
    line break, a terminal escape, a bidirectional override or a byte that is not UTF-8
    (escaped into another path, or printed raw). Pasted into bash, the line is this
    command with ``--fix``, and k3snet's parser reads the same values; the line itself
    holds no character that is not printable."""
    monkeypatch.chdir(tmp_path)
    spec = Path(name)
    try:
        spec.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                        "cluster:\n  podCIDRs: [10.42.0.0/16]\n")
    except (OSError, UnicodeEncodeError):
        pytest.skip(f"this file system takes no file named {name!r}")
    assert main(_doctor("seed", f"--spec={name}", f"--context=-{name}")) == 3
    out = capsys.readouterr().out
    line = out.rstrip("\n").splitlines()[-1]
    assert line.isprintable(), line
    words = _words_bash_reads(line)
    assert words == ["doctor", "--from", POD, "--to", f"{DESTINATIONS['plain']}:{PORT}",
                     *words[5:-1], "--fix"], line
    args = build_parser().parse_args(words)
    assert (args.spec, args.context, args.fix, args.state) == (spec, f"-{name}", True, None)


def test_no_shell_line_without_a_fix_nor_in_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_doctor("healthy")) == 0
    assert "not shell commands" not in capsys.readouterr().out
    assert main(_doctor("seed", "-o", "json")) == 3
    json.loads(capsys.readouterr().out)  # one document, nothing after it


@pytest.mark.kernel
def test_the_printed_shell_line_applies_the_fix(
        doctor_lab: DoctorLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """On a live node the line keeps ``--netns`` and is ``--fix`` as it stands: run (with
    ``--auto-approve``, the test answering no prompt), the flow reaches."""
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    topology = Topology(forwarding=False, nat="none")
    doctor_lab.configure(topology)
    argv = ["doctor", "--netns", doctor_lab.node, "--from", POD, "--to",
            f"{topology.destination}:{PORT}"]
    assert main(argv) == 3
    out = capsys.readouterr().out
    assert "; apply them with:" in out
    line = _apply_line(out)
    assert line == [*argv, "--fix"]
    assert main([*line, "--auto-approve"]) == 0
    assert "now: reaches" in capsys.readouterr().out
    assert doctor_lab.probe(topology.destination)["ok"]


@pytest.mark.kernel
def test_the_shell_line_of_a_doctor_started_by_ip_netns_exec_fixes_that_namespace(
        doctor_lab: DoctorLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``ip netns exec NS k3snet doctor ...`` (no ``--netns``) diagnosed ``NS`` and printed
    ``k3snet doctor ... --fix``: run as shown from the shell that ran it, the fix read and
    changed the node's namespace. The line names ``--netns NS`` now; it is checked before
    it is run (here, outside the lab, as shown), and the flow in the lab then reaches."""
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    topology = Topology(forwarding=False, nat="none")
    doctor_lab.configure(topology)
    argv = ["doctor", "--from", POD, "--to", f"{topology.destination}:{PORT}"]
    with NetnsRunner(doctor_lab.node) as runner:
        assert runner.call(lambda: main(argv)) == 3
    line = _apply_line(capsys.readouterr().out)
    assert line == ["doctor", "--netns", doctor_lab.node, *argv[1:], "--fix"]
    assert main([*line, "--auto-approve"]) == 0
    assert "now: reaches" in capsys.readouterr().out
    assert doctor_lab.probe(topology.destination)["ok"]


@pytest.mark.kernel
def test_fix_with_json_output_prints_one_doctor_document_on_stdout(
        doctor_lab: DoctorLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``doctor --fix --output json``: the summary and the verdict after the fix went to
    stdout after the plan's JSON, which then did not parse; they go to stderr. The
    document is the diagnosis, as without ``--fix`` (it was the bare plan)."""
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    topology = Topology(forwarding=False, nat="none")
    doctor_lab.configure(topology)
    argv = ["doctor", "--netns", doctor_lab.node, "--from", POD, "--to",
            f"{topology.destination}:{PORT}", "--fix", "--auto-approve", "--output", "json"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    document = json.loads(out)  # the diagnosis, as without --fix
    assert (document["format"], document["kind"]) == (1, "doctor")
    assert document["plan"]["changes"]
    assert "now: reaches" in err
    assert doctor_lab.probe(topology.destination)["ok"]


@pytest.mark.kernel
def test_fix_repairs_k3snets_own_table_made_dormant(
        doctor_lab: DoctorLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """k3snet's nftables table made dormant after a fix: its masquerade translates
    nothing. The doctor says so, and ``--fix`` planned nothing (the backend's masquerade
    counted as in place, its drift kept as wanted) while it predicted "reaches"; the
    plan now repairs the drift, as apply's does, and the flow reaches."""
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    topology = Topology(nat="none")
    doctor_lab.configure(topology)
    argv = ["doctor", "--netns", doctor_lab.node, "--from", POD, "--to",
            f"{topology.destination}:{PORT}", "--fix", "--auto-approve"]
    assert main(argv) == 0
    run_in(doctor_lab.node, ["nft", "add", "table", "inet", "k3snet", "{ flags dormant; }"])
    assert not doctor_lab.probe(topology.destination, until_dropped=True)["ok"]
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "no-masquerade" in out
    assert "flags dormant" in out  # the drift the plan repairs
    assert "now: reaches" in out
    assert doctor_lab.probe(topology.destination)["ok"]


@pytest.mark.kernel
def test_doctor_without_root_says_the_rulesets_were_unread_not_blocked_by_missing_nat(
        doctor_lab: DoctorLab) -> None:
    """Run without root (the admin forgot sudo), every iptables-save and ``nft list``
    fails with "Permission denied": the doctor took the rulesets as empty, blamed a
    missing masquerade the node has (the FORWARD DROP that blocks went unseen), planned
    it, predicted "reaches" after it and exited 3, with the failures in an info line.
    Rules it could not read make the verdict unknown (4), and the finding says to run
    it as root."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    topology = Topology(forward_policy="drop-nft")  # masquerade in place, FORWARD DROP
    doctor_lab.configure(topology)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(
        ["ip", "netns", "exec", doctor_lab.node, "setpriv", "--reuid=65534", "--regid=65534",
         "--clear-groups", sys.executable, "-m", "k3snet", "doctor", "--from", POD, "--to",
         f"{topology.destination}:{PORT}", "-o", "json"],
        capture_output=True, text=True, env=env, timeout=120, check=False)
    document = json.loads(done.stdout)
    assert done.returncode == 4, done.stdout
    assert document["trace"]["verdict"] == "unknown"
    codes = [f["code"] for f in document["findings"]]
    assert "no-masquerade" not in codes, done.stdout
    incomplete = next(f for f in document["findings"] if f["code"] == "capture-incomplete")
    assert incomplete["severity"] == "warning"
    assert "as root" in incomplete["advice"]


@pytest.mark.kernel
@pytest.mark.usefixtures("require_root")
def test_a_capture_tool_not_installed_is_absent_rules_not_a_failed_capture(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node without iptables-legacy: inside a namespace, ``ip netns exec`` runs and
    fails to start the tool (exit 1), which read as a failed capture, so every
    diagnosis with ``--netns`` on such a node was ``unknown``. A tool that is not
    installed is said so, and its rules are taken as absent."""
    import shutil  # noqa: PLC0415

    from k3snet.doctor import NodeCapture, NodeState  # noqa: PLC0415

    for tool in ("ip", "nft", "sysctl", "iptables-nft-save", "ip6tables-nft-save"):
        found = shutil.which(tool)
        assert found is not None
        (tmp_path / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(tmp_path))
    with temporary_netns("notool") as ns:
        capture = NodeCapture.read_live(ns)
    assert "not installed" in capture.missing["iptables-legacy-v4.save"]
    assert NodeState.from_capture(capture).unread_rulesets() == {}


@pytest.mark.kernel
def test_fix_applies_the_plan_shown_or_nothing_when_the_node_changed_meanwhile(
        doctor_lab: DoctorLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """While the plan waits for ``yes``, another k3snet run (the agent, an apply) adds a
    masquerade of its own. ``--fix`` planned again from what it then observed, against
    the desired state of before: it deleted that masquerade, a change nobody was shown.
    It applies the plan shown, or nothing when the node changed (a stale plan, exit 1)."""
    from k3snet import MasqueradeRule, State, converge  # noqa: PLC0415
    from k3snet.backends.registry import create_backend  # noqa: PLC0415

    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    topology = Topology(nat="none")
    doctor_lab.configure(topology)
    other = MasqueradeRule("10.99.0.0/16", destination="192.168.9.0/24")

    def meanwhile(question: str, stream: object = None) -> bool:
        converge(create_backend("nftables", netns=doctor_lab.node), State(owned=[other]))
        return True

    monkeypatch.setattr("k3snet.cli._confirm", meanwhile)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    argv = ["doctor", "--netns", doctor_lab.node, "--from", POD, "--to",
            f"{topology.destination}:{PORT}", "--fix"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "changed since this plan was made" in err, err
    ruleset = run_in(doctor_lab.node, ["nft", "-j", "list", "ruleset"]).stdout
    assert "10.99.0.0" in ruleset  # the other run's masquerade is still there


@pytest.mark.kernel
def test_a_fix_that_fails_with_json_output_leaves_stdout_one_doctor_document(
        doctor_lab: DoctorLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``doctor --fix -o json`` printed the diagnosis, then an ``error`` document when the
    fix failed: stdout was two JSON documents, which no reader parses. The failure is
    on stderr and in the exit code; stdout is the diagnosis alone."""
    from k3snet import MasqueradeRule, State, converge  # noqa: PLC0415
    from k3snet.backends.registry import create_backend  # noqa: PLC0415

    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    topology = Topology(nat="none")
    doctor_lab.configure(topology)

    def meanwhile(question: str, stream: object = None) -> bool:
        converge(create_backend("nftables", netns=doctor_lab.node),
                 State(owned=[MasqueradeRule("10.99.0.0/16", destination="192.168.9.0/24")]))
        return True

    monkeypatch.setattr("k3snet.cli._confirm", meanwhile)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    argv = ["doctor", "--netns", doctor_lab.node, "--from", POD, "--to",
            f"{topology.destination}:{PORT}", "--fix", "-o", "json"]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    document = json.loads(out)  # one document: the diagnosis
    assert (document["kind"], bool(document["plan"]["changes"])) == ("doctor", True)
    assert "changed since this plan was made" in err, err


def test_the_first_example_of_the_docs_is_what_the_seed_bundle_prints(
        capsys: pytest.CaptureFixture[str]) -> None:
    """docs/doctor.md opens with the seed node's diagnosis; tests/doctor/golden/seed is
    that node's bundle, as the page says."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "doctor.md").read_text()
    shown = page.split("```text\n", 1)[1].split("```", 1)[0]
    assert "tests/doctor/golden/seed" in page
    assert main(["doctor", "--state", str(GOLDEN / "seed"), "--from", "10.42.0.10",
                 "--to", "192.168.2.10:5432"]) == 3
    assert capsys.readouterr().out == shown


def test_a_base_chain_s_own_nft_rule_names_its_chain_once() -> None:
    """``-> forward pass nft inet k3snet forward: nft inet k3snet forward: ip saddr ...``
    printed the chain twice; a rule of a chain the base chain jumps to keeps its name."""
    from k3snet.doctor.trace import Step  # noqa: PLC0415

    where = "nft inet k3snet forward"
    own = Step("original", "forward", "pass", where,
               f"{where}: ip saddr == 10.42.0.0/16 accept")
    assert own.describe() == (f"-> forward     pass    {where}: "
                              "ip saddr == 10.42.0.0/16 accept")
    jumped = Step("original", "forward", "drop", "nft inet firewalld filter_FORWARD",
                  "nft inet firewalld filter_FWD_public: drop")
    assert "filter_FORWARD: nft inet firewalld filter_FWD_public: drop" in jumped.describe()
    assert own.to_dict()["detail"] == f"{where}: ip saddr == 10.42.0.0/16 accept"
