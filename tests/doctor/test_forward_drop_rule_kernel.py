"""An administrator's DROP rule in iptables' FORWARD against what k3snet's fix can do.

k3snet's iptables backend puts its jump from ``FORWARD`` after the rules already there
(ahead of a final catch-all ``DROP``/``REJECT`` only) and never moves it: a foreign
drop of some pod traffic met first is a conflict its plan names and never applies. The
doctor planned its forward accept all the same (``forward accept ... (+ replies)``,
"after the fix: reaches"): pasted, or run with ``--fix``, it changed nothing and the
flow stayed dropped. Under a DROP policy, a foreign reject of another host of the
route's network (``-d 192.168.2.99 -j REJECT``) made the plan refuse the accept of the
whole network: the fix is the accept of the destination alone. A final catch-all drop
(RHEL's ``-A FORWARD -j REJECT``) is the default deny k3snet's accept goes ahead of:
there the fix stays, and works.

Both iptables flavours' chains run. k3snet's iptables backend writes into the one
:func:`~k3snet.backends.iptables.mode.detect_mode` picks (``auto``): an iptables-legacy
``DROP`` policy beside iptables-nft's rules got the accept, applied by ``--fix`` to
iptables-nft, and the flow stayed dropped ("now: blocked").
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

from k3snet.cli import main
from k3snet.doctor import Diagnosis, Flow, NodeState, Verdict, diagnose
from k3snet.lab.netns import run_in

from .conftest import DoctorLab, Topology, to_v6

pytestmark = [pytest.mark.kernel]


def _doctor_fix(doctor_lab: DoctorLab, topology: Topology) -> int:
    to = (f"[{topology.destination}]:{topology.port}" if topology.family == 6
          else f"{topology.destination}:{topology.port}")
    return main(["doctor", "--netns", doctor_lab.node, "--from", topology.pod, "--to", to,
                 "--fix", "--auto-approve"])


def _diagnosed(doctor_lab: DoctorLab, topology: Topology) -> Diagnosis:
    """The doctor's diagnosis of ``topology``'s flow on the lab node as it is now."""
    return diagnose(NodeState.from_capture(doctor_lab.capture()),
                    Flow(topology.pod, topology.destination, port=topology.port))


def _connects(doctor_lab: DoctorLab, topology: Topology, *, dropped: bool = False) -> bool:
    """Whether the pod's connection to ``topology``'s destination succeeds, tried after
    the neighbour caches are flushed (an earlier failed IPv6 solicitation fails it).
    ``dropped``: the test expects the node's iptables to drop it, which a DROP counter
    proves as soon as it counts the flow's first packet
    (:meth:`~tests.doctor.conftest.DoctorLab.probe_dropped`), not after the probe's
    timeout."""
    doctor_lab.forget_neighbours()
    probe = doctor_lab.probe_dropped if dropped else doctor_lab.probe
    return bool(probe(topology.destination, port=topology.port)["ok"])
@pytest.mark.parametrize("family", [4, 6])
def test_a_foreign_drop_rule_met_before_k3snets_jump_gets_no_fix_k3snet_would_refuse(
        doctor_lab: DoctorLab, family: Literal[4, 6], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    topology = Topology(family=family)  # masquerade in place, FORWARD's policy ACCEPT
    doctor_lab.configure(topology)
    tool = "ip6tables-nft" if family == 6 else "iptables-nft"
    source = to_v6("10.42.0.0/16") if family == 6 else "10.42.0.0/16"
    run_in(doctor_lab.node, [tool, "-I", "FORWARD", "-s", source, "-j", "DROP"])
    assert not _connects(doctor_lab, topology, dropped=True)
    d = _diagnosed(doctor_lab, topology)
    [finding] = [f for f in d.findings if f.severity == "blocking"]
    assert finding.code == "forward-drop", d.render()
    assert finding.fix == (), d.render()
    assert finding.advice is not None, d.render()
    assert "conflict" in finding.advice, d.render()
    assert f"-s {source} -j DROP" in finding.why, d.render()
    assert not d.fixes.owned, d.render()
    assert d.after.verdict is Verdict.BLOCKED, d.render()
    # What --fix does agrees: nothing to apply, the flow still dropped (exit 3).
    assert _doctor_fix(doctor_lab, topology) == 3
    assert not doctor_lab.probe_dropped(topology.destination, port=topology.port)["ok"]


@pytest.mark.parametrize("family", [4, 6])
def test_a_final_catch_all_drop_keeps_the_fix_and_the_fix_connects(
        doctor_lab: DoctorLab, family: Literal[4, 6], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    topology = Topology(family=family)
    doctor_lab.configure(topology)
    tool = "ip6tables-nft" if family == 6 else "iptables-nft"
    run_in(doctor_lab.node, [tool, "-A", "FORWARD", "-j", "DROP"])
    d = _diagnosed(doctor_lab, topology)
    assert [f.code for f in d.findings if f.fix] == ["forward-drop"], d.render()
    assert d.after.verdict is Verdict.REACHES, d.render()
    assert _doctor_fix(doctor_lab, topology) == 0
    assert "now: reaches" in capsys.readouterr().out
    assert _connects(doctor_lab, topology)


@pytest.mark.parametrize("family", [4, 6])
def test_a_foreign_drop_of_another_host_narrows_the_fix_to_the_destination_which_connects(
        doctor_lab: DoctorLab, family: Literal[4, 6], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    topology = Topology(family=family, forward_policy="drop-nft")
    doctor_lab.configure(topology)
    tool, other = ("ip6tables-nft", "fd01:2::99") if family == 6 else ("iptables-nft",
                                                                       "192.168.2.99")
    run_in(doctor_lab.node, [tool, "-I", "FORWARD", "-d", other, "-j", "REJECT"])
    d = _diagnosed(doctor_lab, topology)
    host = f"{topology.destination}/{128 if family == 6 else 32}"
    assert [str(f.destination) for f in d.fixes.owned] == [host], d.render()
    assert d.after.verdict is Verdict.REACHES, d.render()
    assert _doctor_fix(doctor_lab, topology) == 0
    assert "now: reaches" in capsys.readouterr().out
    assert _connects(doctor_lab, topology)


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("in_use", ["nft", "legacy"])
def test_a_drop_policy_in_the_flavour_k3snet_does_not_write_gets_no_fix(
        doctor_lab: DoctorLab, family: Literal[4, 6], in_use: str, *, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """iptables-legacy's FORWARD policy DROP; kube-proxy's rules in iptables-nft (k3snet
    writes there: no fix) or in iptables-legacy (k3snet writes there: the fix connects)."""
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    topology = Topology(family=family, forward_policy="drop-legacy",
                        kube_proxy="iptables-nft" if in_use == "nft" else "iptables-legacy")
    doctor_lab.configure(topology)
    d = _diagnosed(doctor_lab, topology)
    [finding] = [f for f in d.findings if f.severity == "blocking"]
    assert finding.code == "forward-drop", d.render()
    if in_use == "nft":
        assert finding.fix == (), d.render()
        assert "writes into iptables-nft" in finding.why, d.render()
        assert d.after.verdict is Verdict.BLOCKED, d.render()
        assert _doctor_fix(doctor_lab, topology) == 3
    else:
        assert finding.fix, d.render()
        assert d.after.verdict is Verdict.REACHES, d.render()
        assert _doctor_fix(doctor_lab, topology) == 0
        assert "now: reaches" in capsys.readouterr().out
    assert _connects(doctor_lab, topology, dropped=in_use == "nft") is (in_use == "legacy")


def _beyond_filter(doctor_lab: DoctorLab, where: str, family: Literal[4, 6]) -> None:
    """A drop of the pods' traffic where filter's accept does not reach: mangle's
    POSTROUTING (run after FORWARD), or another nftables table's forward chain."""
    source = to_v6("10.42.0.0/16") if family == 6 else "10.42.0.0/16"
    if where == "mangle":
        tool = "ip6tables-nft" if family == 6 else "iptables-nft"
        run_in(doctor_lab.node, [tool, "-t", "mangle", "-A", "POSTROUTING", "-s", source,
                                 "-j", "DROP"])
    else:
        saddr = "ip6 saddr" if family == 6 else "ip saddr"
        run_in(doctor_lab.node, ["nft", "-f", "-"], input_text=(
            "table inet admin {\n  chain forward {\n"
            "    type filter hook forward priority 10; policy accept;\n"
            f"    {saddr} {source} drop\n  }}\n}}\n"))


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("where", ["mangle", "nftables"])
def test_a_drop_beyond_filter_that_the_plan_names_a_conflict_gets_no_forward_accept_fix(
        doctor_lab: DoctorLab, family: Literal[4, 6], where: str, *, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """FORWARD's policy DROP, and a drop of the pods' traffic in mangle's POSTROUTING or in
    an administrator's nftables table: k3snet's iptables backend reads both (path_blocks,
    read_native) and its plan names the forward accept a conflict. The doctor printed
    that accept as the fix and its plan as `1 to add`; --fix then found `1 conflict(s)`."""
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    topology = Topology(family=family, forward_policy="drop-nft")
    doctor_lab.configure(topology)
    _beyond_filter(doctor_lab, where, family)
    d = _diagnosed(doctor_lab, topology)
    finding = next(f for f in d.findings if f.code == "forward-drop")
    assert finding.fix == (), d.render()
    assert "a conflict with drop by" in finding.why, d.render()
    assert (" mangle: -A POSTROUTING" if where == "mangle" else "inet admin forward") \
        in finding.why, d.render()
    assert not d.fixes.owned, d.render()
    assert d.plan.empty, d.render()
    assert d.after.verdict is Verdict.BLOCKED, d.render()
    # What --fix does agrees: its plan (the backend's own read) has nothing to apply.
    capsys.readouterr()
    assert _doctor_fix(doctor_lab, topology) == 3
    assert "conflict(s)" not in capsys.readouterr().out
    assert not _connects(doctor_lab, topology, dropped=True)


def test_a_foreign_nftables_drop_of_another_host_narrows_the_fix_which_connects(
        doctor_lab: DoctorLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """An administrator's nftables table drops another host of the route's network: the
    fix is the destination's accept alone, which k3snet applies and which connects."""
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    topology = Topology(forward_policy="drop-nft")
    doctor_lab.configure(topology)
    run_in(doctor_lab.node, ["nft", "-f", "-"], input_text=(
        "table inet admin {\n  chain forward {\n"
        "    type filter hook forward priority 10; policy accept;\n"
        "    ip daddr 192.168.2.99 drop\n  }\n}\n"))
    d = _diagnosed(doctor_lab, topology)
    assert [str(f.destination) for f in d.fixes.owned] == ["192.168.2.10/32"], d.render()
    assert d.after.verdict is Verdict.REACHES, d.render()
    assert _doctor_fix(doctor_lab, topology) == 0
    assert "now: reaches" in capsys.readouterr().out
    assert _connects(doctor_lab, topology)


SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"


@pytest.mark.parametrize("given", ["legacy", "nft"])
def test_the_spec_s_iptables_mode_is_the_flavour_the_fix_is_judged_in_and_written_to(
        doctor_lab: DoctorLab, given: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """iptables-legacy's FORWARD policy DROP beside kube-proxy's iptables-nft rules: mode
    auto writes into iptables-nft, where the accept opens nothing. With a spec naming
    ``backends.iptables.mode`` (as `apply -f SPEC` builds the backend), the doctor ignored
    it: `legacy` got no fix (apply would write and open it), and `--fix` wrote into
    iptables-nft, a chain the spec's k3snet never reads."""
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    topology = Topology(forward_policy="drop-legacy", kube_proxy="iptables-nft")
    doctor_lab.configure(topology)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SEED.read_text() + f"backends:\n  iptables: {{mode: {given}}}\n")
    argv = ["doctor", "--netns", doctor_lab.node, "--from", topology.pod, "--to",
            f"{topology.destination}:{topology.port}", "-f", str(spec)]
    assert main(argv) == 3
    out = capsys.readouterr().out
    if given == "nft":
        assert "the spec's backends.iptables.mode" in out, out
        assert "fix:   forward accept" not in out, out
    else:
        assert "fix:   forward accept 10.42.0.0/16 -> 192.168.2.0/24" in out, out
        assert "after the fix: reaches" in out, out
    assert main([*argv, "--fix", "--auto-approve"]) == (0 if given == "legacy" else 3)
    out = capsys.readouterr().out
    assert _connects(doctor_lab, topology, dropped=given == "nft") is (given == "legacy"), out
    written = run_in(doctor_lab.node, ["iptables-nft-save"]).stdout
    assert "K3SNET-" not in written, written  # nothing in the flavour the spec does not use


def test_without_a_spec_the_finding_says_the_flavour_is_mode_auto_s(
        doctor_lab: DoctorLab) -> None:
    topology = Topology(forward_policy="drop-legacy", kube_proxy="iptables-nft")
    doctor_lab.configure(topology)
    d = _diagnosed(doctor_lab, topology)
    [finding] = [f for f in d.findings if f.severity == "blocking"]
    assert "(mode auto: " in finding.why, d.render()
    assert finding.advice is not None
    assert "mode legacy, give its spec: `-f SPEC`" in finding.advice, d.render()


def test_fix_writes_with_the_spec_s_backend_options_as_apply_f_spec_does(
        doctor_lab: DoctorLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``doctor --fix -f SPEC`` built its backends with the spec's iptables mode alone: the
    masquerade went into nftables table ``inet k3snet`` whatever the spec's
    ``backends.nftables.table``, a table the spec's k3snet (its agent) does not manage
    and warns of. It writes as ``apply -f SPEC`` would: the spec's table."""
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    topology = Topology(nat="none")
    doctor_lab.configure(topology)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SEED.read_text() + "backends:\n  nftables: {table: k3snet-spec}\n"
                    "  iptables: {mode: auto}\n")
    argv = ["doctor", "--netns", doctor_lab.node, "--from", topology.pod, "--to",
            f"{topology.destination}:{topology.port}", "-f", str(spec)]
    assert main([*argv, "--fix", "--auto-approve"]) == 0, capsys.readouterr()
    assert "now: reaches" in capsys.readouterr().out
    tables = run_in(doctor_lab.node, ["nft", "list", "tables"]).stdout
    assert "table inet k3snet-spec" in tables, tables
    assert "table inet k3snet\n" not in tables, tables


@pytest.mark.parametrize("backends", ["backends:\n  iptables: {mode: auto}\n",
                                      "backends: [netlink, nftables]\n"])
def test_a_spec_naming_no_flavour_is_said_to_be_mode_auto_and_not_asked_for_again(
        doctor_lab: DoctorLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        backends: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A spec given whose iptables mode is ``auto`` (said so, or not named): the finding
    advised giving the spec (`-f SPEC`), which was given; it says the spec leaves the
    mode to ``auto`` and names the key that would change it."""
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    topology = Topology(forward_policy="drop-legacy", kube_proxy="iptables-nft")
    doctor_lab.configure(topology)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SEED.read_text() + backends)
    assert main(["doctor", "--netns", doctor_lab.node, "--from", topology.pod, "--to",
                 f"{topology.destination}:{topology.port}", "-f", str(spec)]) == 3
    out = capsys.readouterr().out
    assert "(the spec's mode auto: " in out, out
    assert "-f SPEC" not in out, out
    assert "backends.iptables.mode" in out, out
