"""What `k3snet apply` and `destroy` print: each change once, then what was applied, with the
changes listed again only where they are not the plan printed above."""

from __future__ import annotations

import builtins
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from k3snet import MemoryBackend, Plan, State, Sysctl, register_backend
from k3snet.backends.base import ApplyResult
from k3snet.backends.registry import unregister_backend
from k3snet.cli import EXIT_USAGE, main
from k3snet.planner import Change

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
APPLY = ["apply", "-f", str(SEED), "--no-facts"]


def _change_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line[:2] in {"+ ", "- ", "~ "}]


def test_apply_lists_each_change_once_then_says_it_went_as_planned(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*APPLY, "--backend", "memory"]) == 0
    out = capsys.readouterr().out
    changes = _change_lines(out)
    assert len(changes) == 8
    for line in changes:
        assert out.count(line[2:]) == 1, line  # the changes are never printed again
    assert out.splitlines()[-1] == (
        "memory: 8 change(s) applied in 8 operation(s), as planned above.")


def test_an_approved_apply_shows_its_plan_once(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def answer(question: str) -> str:
        asked.append(question)
        return "yes"

    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # a terminal, both ways
    monkeypatch.setattr(builtins, "input", answer)
    assert main([*APPLY, "--backend", "memory"]) == 0
    out = capsys.readouterr().out
    assert asked == ["Apply these changes? Only 'yes' is accepted: "]
    assert out.count("+ masquerade 10.42.0.0/16 -> 192.168.2.0/24 oif eth0") == 1
    assert out.count("Plan: 8 to add") == 1
    assert out.splitlines()[-1].endswith("as planned above.")


def test_an_approved_apply_of_a_plan_file_applies_that_plan(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The approved preview was re-planned towards nothing (the plan file's desired state
    # was dropped) and always refused as stale.
    saved = tmp_path / "node.plan"
    assert main(["plan", "-f", str(SEED), "--no-facts", "--backend", "memory",
                 "--out", str(saved)]) == 2
    capsys.readouterr()
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setattr(builtins, "input", lambda question: "yes")
    assert main(["apply", str(saved)]) == 0
    out = capsys.readouterr().out
    assert out.count("Plan: 8 to add") == 1
    assert out.splitlines()[-1] == (
        "memory: 8 change(s) applied in 8 operation(s), as planned above.")


def test_backend_with_a_plan_file_is_a_usage_error_not_ignored(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "node.plan"
    assert main(["plan", "-f", str(SEED), "--no-facts", "--backend", "memory",
                 "--out", str(saved)]) == 2
    capsys.readouterr()
    assert main(["apply", str(saved), "--backend", "netlink", "--auto-approve"]) == EXIT_USAGE
    assert "the plan file names its backends (memory)" in capsys.readouterr().err


class _Skewed(MemoryBackend):
    """Reports an apply other than the plan: the first change left out, one more added."""

    def apply(self, plan: Plan) -> ApplyResult:
        done = super().apply(plan)
        other = Sysctl("net.ipv4.conf.all.rp_filter", "2")
        return attrs.evolve(done, applied=(*done.applied[1:], Change("add", None, other)))


@pytest.fixture
def skewed() -> Iterator[str]:
    register_backend("memory-skewed", _Skewed)
    try:
        yield "memory-skewed"
    finally:
        unregister_backend("memory-skewed")


def test_an_apply_other_than_planned_lists_the_difference(
        capsys: pytest.CaptureFixture[str], skewed: str) -> None:
    assert main([*APPLY, "--backend", skewed]) == 0
    out = capsys.readouterr().out.splitlines()
    at = out.index("memory: 8 change(s) applied in 8 operation(s), not as planned above:")
    assert out[at + 1:] == ["  not applied: + sysctl net.ipv4.ip_forward = 1",
                            "  applied, not planned: + sysctl net.ipv4.conf.all.rp_filter = 2"]


def test_destroy_lists_each_change_once(capsys: pytest.CaptureFixture[str]) -> None:
    held = MemoryBackend(State(owned=[Sysctl("net.ipv4.ip_forward", "1"),
                                      Sysctl("net.ipv4.conf.all.rp_filter", "2")]))
    register_backend("memory-held-out", lambda: held)
    try:
        assert main(["destroy", "--backend", "memory-held-out", "--auto-approve"]) == 0
    finally:
        unregister_backend("memory-held-out")
    out = capsys.readouterr().out
    assert out.count("- sysctl net.ipv4.ip_forward = 1") == 1
    assert out.splitlines()[-1] == (
        "memory: 2 change(s) applied in 2 operation(s), as planned above.")
    assert not held.observe().owned



@pytest.mark.parametrize(("command", "answer", "code"), [
    (APPLY, "yes", 0), (APPLY, "no", 1), (["destroy"], "yes", 0), (["destroy"], "no", 1)])
def test_the_plan_shown_for_approval_goes_to_stderr_when_stdout_is_json(
        command: list[str], answer: str, code: int, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # `k3snet apply -f SPEC --output json | jq` on a terminal: the plan and the question
    # were printed on stdout before the document, and jq read no JSON.
    held = MemoryBackend(State(owned=[Sysctl("net.ipv4.conf.all.rp_filter", "2")]))
    register_backend("memory-asked", lambda: held)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(builtins, "input", lambda *prompt: answer if not prompt else "")
    try:
        assert main([*command, "--backend", "memory-asked", "--output", "json"]) == code
    finally:
        unregister_backend("memory-asked")
    out, err = capsys.readouterr()
    document = json.loads(out)  # the whole of stdout is one document
    assert document["kind"] == ({"yes": command[0], "no": "error"}[answer])
    assert "Only 'yes' is accepted" in err
    assert "to delete." in err  # the plan the question is about


@pytest.mark.parametrize("command", [APPLY, ["destroy"]])
def test_with_stdout_redirected_the_plan_to_approve_and_the_question_go_to_the_terminal(
        command: list[str], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # `k3snet apply -f SPEC > apply.log` on a terminal: the plan and the question went to
    # the file, and the command waited for an answer to a question nobody saw.
    held = MemoryBackend(State(owned=[Sysctl("net.ipv4.conf.all.rp_filter", "2")]))
    register_backend("memory-redirected", lambda: held)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(builtins, "input", lambda *prompt: "" if prompt else "yes")
    try:
        assert main([*command, "--backend", "memory-redirected"]) == 0
    finally:
        unregister_backend("memory-redirected")
    out, err = capsys.readouterr()
    assert "Only 'yes' is accepted" in err
    assert "- sysctl net.ipv4.conf.all.rp_filter = 2" in err  # what is approved, seen
    assert "Only 'yes'" not in out
    # The file still gets the plan once, then what was done.
    assert out.count("- sysctl net.ipv4.conf.all.rp_filter = 2") == 1
    assert out.splitlines()[-1].endswith("as planned above.")


def test_a_confirmed_destroy_removes_nothing_when_the_node_changed_since_its_list(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # The list is read in one hold of the lock, the removal in another after the user's
    # answer: an apply meanwhile (or the agent) added an object, and the confirmed
    # destroy removed it too, though the user had approved removing one sysctl.
    held = MemoryBackend(State(owned=[Sysctl("net.ipv4.conf.all.rp_filter", "2")]))
    register_backend("memory-moved", lambda: held)
    added = Sysctl("net.ipv4.ip_forward", "1")

    def answer(*prompt: str) -> str:
        held.apply(Plan(changes=[Change("add", None, added)]))  # while the user reads
        return "yes"

    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setattr(builtins, "input", answer)
    try:
        code = main(["destroy", "--backend", "memory-moved"])
    finally:
        unregister_backend("memory-moved")
    out, err = capsys.readouterr()
    assert code == 1  # nothing was removed
    assert "- sysctl net.ipv4.ip_forward = 1" not in out  # never listed for approval
    assert ("the node changed since the removal you confirmed was listed: removing "
            "everything now would be 2 change(s) instead of 1 (1 not listed: - sysctl "
            "net.ipv4.ip_forward = 1; 0 listed no longer to make); nothing was removed") in err
    assert sorted(map(str, held.observe().owned)) == [
        "sysctl net.ipv4.conf.all.rp_filter = 2", "sysctl net.ipv4.ip_forward = 1"]


def test_json_documents_have_the_same_keys_for_a_change_and_for_nothing_to_do(
        capsys: pytest.CaptureFixture[str]) -> None:
    # `warnings` and `disruptive` were left out when empty: a script reading
    # document["warnings"] failed (KeyError) on a quiet node alone.
    node = MemoryBackend()
    register_backend("memory-kept", lambda: node)
    try:
        documents = []
        for argv in (["plan", "-f", str(SEED)], APPLY, ["plan", "-f", str(SEED)], APPLY,
                     ["destroy", "--auto-approve"], ["destroy", "--auto-approve"]):
            main([*argv, "--backend", "memory-kept", "--no-facts", "--output", "json"])
            documents.append(json.loads(capsys.readouterr().out))
    finally:
        unregister_backend("memory-kept")
    plan, applied, plan_again, applied_again, destroyed, destroyed_again = documents
    assert [bool(plan["changes"]), bool(plan_again["changes"])] == [True, False]
    assert [bool(applied["applied"]), bool(applied_again["applied"])] == [True, False]
    assert [bool(destroyed["applied"]), bool(destroyed_again["applied"])] == [True, False]
    assert set(plan) == set(plan_again) >= {"warnings", "disruptive", "held"}
    assert plan_again["warnings"] == plan_again["disruptive"] == plan_again["held"] == []
    assert set(applied) == set(applied_again) == set(destroyed) == set(destroyed_again)
    assert applied_again["warnings"] == applied_again["plan"]["held"] == []
    assert set(applied["plan"]) == set(plan) - {"kind", "warnings", "disruptive",
                                                "restart_needed", "restart_pending"}
    assert plan_again["restart_needed"] == applied_again["restart_pending"] == []
