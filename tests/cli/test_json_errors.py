"""With ``--output json`` every failure is an ``error`` document on stdout, whatever failed.

A script reads stdout as one JSON document and the exit code; a usage error found after
parsing (exit 64), a system error (exit 1: a plan file that cannot be written), an
internal error and a usage error argparse finds printed nothing on stdout, so ``jq``
met an empty input where the error schema promised a document.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from k3snet import MemoryBackend, State, Sysctl, cli, register_backend
from k3snet.backends.kit import Compensation, WarningLog
from k3snet.backends.registry import unregister_backend
from k3snet.cli import main
from k3snet.errors import RollbackError
from k3snet.planner import Change
from k3snet.schemas import load_schema

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
MEMORY = ["--backend", "memory", "--no-facts"]


def _error_document(out: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(out)
    jsonschema.Draft202012Validator(load_schema("error")).validate(document)
    error: dict[str, Any] = document["error"]
    return error


def _fails(argv: list[str]) -> int:
    """The exit code of ``argv``, whether main returns it or argparse exits with it."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(str(exc.code))


@pytest.mark.parametrize("argv", [
    ["plan", "-f", str(SEED), *MEMORY, "--out", str(SEED)],  # --out is the spec
    ["apply", *MEMORY],  # neither a spec nor a plan file
    ["observe", "-f", str(SEED), "--save", "/nonexistent-k3snet-dir"],
    ["plan", *MEMORY],  # argparse: -f is required
    ["plan", "-f", str(SEED), *MEMORY, "--no-such-option"],
    ["apply", "-f", str(SEED), *MEMORY, "--lock-timeout", "nan"],
    ["doctor", "--to", "192.168.2.10"],  # argparse: --from is required
])
def test_a_usage_error_with_output_json_is_an_error_document_exit_64(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    flag = ["-o", "json"] if argv[0] == "doctor" else ["--output", "json"]
    assert _fails([*argv, *flag]) == cli.EXIT_USAGE
    captured = capsys.readouterr()
    error = _error_document(captured.out)
    assert error["type"] == "UsageError"
    assert error["message"] in captured.err  # the same words as on stderr
    assert _fails(argv) == cli.EXIT_USAGE  # as text: stdout stays empty
    assert capsys.readouterr().out == ""


def test_the_json_flag_spelt_as_argparse_takes_it_makes_usage_errors_documents(
    capsys: pytest.CaptureFixture[str]
) -> None:
    for flag in (["--output=json"], ["--outp", "json"], ["-v", "--output", "json"],
                 ["--output", "text", "--output", "json"]):
        assert _fails(["plan", *MEMORY, *flag]) == cli.EXIT_USAGE
        assert _error_document(capsys.readouterr().out)["type"] == "UsageError"
    assert _fails(["doctor", "--to", "192.168.2.10", "-ojson"]) == cli.EXIT_USAGE
    assert _error_document(capsys.readouterr().out)["type"] == "UsageError"
    # The last --output given is the one argparse keeps.
    assert _fails(["plan", *MEMORY, "--output", "json", "--output", "text"]) == cli.EXIT_USAGE
    assert capsys.readouterr().out == ""
    # A command without --output (explain, render's -o is a directory) prints no document.
    assert _fails(["render", "sysctl", "-o", "json"]) == cli.EXIT_USAGE
    assert _fails(["explain", "nope.nope", "--output", "json"]) == cli.EXIT_USAGE
    assert capsys.readouterr().out == ""


def test_a_system_error_with_output_json_is_an_error_document_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "missing" / "node.plan"
    assert main(["plan", "-f", str(SEED), *MEMORY, "--out", str(out), "--output", "json"]) == 1
    captured = capsys.readouterr()
    error = _error_document(captured.out)
    assert error["type"] == "FileNotFoundError"
    assert str(out) in error["message"]
    assert f"k3snet: error: {error['message']}" in captured.err


def test_an_internal_error_with_output_json_is_an_error_document_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("K3SNET_DEBUG", raising=False)

    def broken(*_args: object, **_kwargs: object) -> object:
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "plan", broken)
    assert main(["plan", "-f", str(SEED), *MEMORY, "--output", "json"]) == 1
    captured = capsys.readouterr()
    error = _error_document(captured.out)
    assert error["type"] == "InternalError"
    assert "RuntimeError: a bug" in error["message"]
    assert "internal error" in captured.err


def test_the_agent_s_fatal_error_is_a_json_log_line_with_log_format_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The agent's output is its log: why it did not start (a spec others may write, a
    namespace that is not there) came as plain text over two lines to a collector
    reading one JSON object a line, the one record a crash loop needed read."""
    spec = tmp_path / "egress.yaml"
    spec.write_text(SEED.read_text())
    spec.chmod(0o666)
    argv = ["agent", "-f", str(spec), "--once", "--no-kube", "--backend", "memory"]
    assert main([*argv, "--log-format", "json"]) == 1
    lines = capsys.readouterr().err.splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    jsonschema.Draft202012Validator(load_schema("log")).validate(records[-1])
    assert records[-1]["level"] == "error"
    assert records[-1]["node"]  # the agent's own lines' form
    assert "writable by others" in records[-1]["message"]
    assert main(argv) == 1  # text: the error as every command says it
    assert capsys.readouterr().err.startswith("k3snet: error: 1 problem in ")


def test_the_agent_s_system_or_internal_error_is_a_json_log_line_with_log_format_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only k3snet's own errors became a record of the agent's JSON log: its --listen
    address in use (an OSError, a lab namespace: "k3snet: error: listen on
    127.0.0.1:19444: Address already in use") and an internal error still ended the crash
    loop as plain text its collector could not read."""
    monkeypatch.delenv("K3SNET_DEBUG", raising=False)
    argv = ["agent", "-f", str(SEED), "--once", "--no-kube", "--backend", "memory",
            "--log-format", "json"]
    for error, said in ((OSError(98, "Address already in use"), "Address already in use"),
                        (RuntimeError("a bug"), "internal error: RuntimeError: a bug")):

        def failing(_args: object, error: Exception = error) -> int:
            raise error

        monkeypatch.setitem(cli.COMMANDS, "agent", failing)
        assert main(argv) == 1
        lines = capsys.readouterr().err.splitlines()
        records = [json.loads(line) for line in lines]  # every line is one JSON object
        jsonschema.Draft202012Validator(load_schema("log")).validate(records[-1])
        assert records[-1]["level"] == "error"
        assert said in records[-1]["message"]


@pytest.mark.parametrize(("argv", "environ", "said"), [
    (["agent", "-f", "x", "--log-format", "json", "--interval", "-1"], {}, "--interval"),
    (["agent", "-f", "x"], {"K3SNET_LOG_FORMAT": "json", "K3SNET_LOG_LEVEL": "LOUD"},
     "$K3SNET_LOG_LEVEL"),
    (["agent", "--log-format=json", "--node-name", "node-1"], {}, "-f/--spec"),
    # argparse takes an unambiguous abbreviation of a long option as the option
    (["agent", "--log-form", "json", "--nod", "node-1"], {}, "-f/--spec"),
    (["agent", "--log-f=json", "--node-n=node-1", "--interval", "-1"], {}, "--interval"),
])
def test_the_agent_s_usage_error_is_a_json_log_line_with_log_format_json(
    argv: list[str], environ: dict[str, str], said: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    """A DaemonSet's environment refused ($K3SNET_LOG_LEVEL, $K3SNET_LISTEN) or a flag
    ended the agent with argparse's usage text over several lines, however its log was
    asked for: a collector reading one JSON object a line could not read why."""
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == cli.EXIT_USAGE
    lines = capsys.readouterr().err.splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    jsonschema.Draft202012Validator(load_schema("log")).validate(records[-1])
    assert records[-1]["level"] == "error"
    assert said in records[-1]["message"]
    if "node-1" in " ".join(argv):
        assert records[-1]["node"] == "node-1"


def test_each_shortest_abbreviation_taken_is_of_one_agent_option_and_no_shorter_one() -> None:
    """The shortest abbreviations :func:`cli._agent_logs_json` takes (``--log-f``,
    ``--nod``) are of one agent option each, as argparse reads them, and no shorter one is."""
    parser = cli.build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    options = [o for a in commands.choices["agent"]._actions for o in a.option_strings]
    for full, shortest in (("--log-format", "--log-f"), ("--node-name", "--nod")):
        assert [o for o in options if o.startswith(shortest)] == [full]
        assert len([o for o in options if o.startswith(shortest[:-1])]) > 1


def test_ctrl_c_with_output_json_is_an_error_document_exit_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*_args: object, **_kwargs: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "plan", interrupted)
    assert main(["plan", "-f", str(SEED), *MEMORY, "--output", "json"]) == cli.EXIT_INTERRUPTED
    captured = capsys.readouterr()
    error = _error_document(captured.out)  # was an empty stdout
    assert error == {"type": "SIGINT", "message": "stopped by SIGINT", "problems": []}
    assert "k3snet: error: stopped by SIGINT" in captured.err
    assert main(["plan", "-f", str(SEED), *MEMORY]) == cli.EXIT_INTERRUPTED
    assert capsys.readouterr().out == ""  # as text: said on stderr alone


def _terminated(*_args: object, **_kwargs: object) -> object:
    """SIGTERM sent to this process in the middle of a call (sigterm_undoes's handler
    raises at the next bytecode: the loop only waits for it)."""
    os.kill(os.getpid(), signal.SIGTERM)
    while True:
        time.sleep(0.01)


def test_sigterm_during_an_apply_with_output_json_is_an_error_document_exit_143(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "converge", _terminated)
    with pytest.raises(SystemExit) as ended:
        main(["apply", "-f", str(SEED), *MEMORY, "--output", "json"])
    assert ended.value.code == cli.EXIT_TERMINATED
    captured = capsys.readouterr()
    error = _error_document(captured.out)  # was an empty stdout, and nothing on stderr
    assert error["type"] == "SIGTERM"
    assert error["message"] == ("stopped by SIGTERM: nothing was changed (what it made "
                                "was taken back)")
    assert f"k3snet: error: {error['message']}" in captured.err


def test_a_signal_after_the_document_was_printed_adds_no_second_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    printed = cli._print_apply

    def print_then_terminated(*args: Any, **kwargs: Any) -> None:
        printed(*args, **kwargs)
        _terminated()

    monkeypatch.setattr(cli, "_print_apply", print_then_terminated)
    with pytest.raises(SystemExit):
        main(["apply", "-f", str(SEED), *MEMORY, "--output", "json"])
    captured = capsys.readouterr()
    assert json.loads(captured.out)["kind"] == "apply"  # one document, the apply's
    # Applied: no "nothing was changed", what stays instead.
    assert ("k3snet: error: stopped by SIGTERM after the change was made, which stays: "
            "memory: 8 change(s) applied in 8 operation(s)\n") in captured.err


def test_a_signal_after_the_apply_was_made_says_it_stays_not_that_nothing_changed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # SIGTERM while the result is written (a terminal's pipe full, `| less` not read):
    # the apply had returned, nothing takes it back; as text no document is printed, and
    # "nothing was changed (what it made was taken back)" was said of 8 changes made.
    printed = cli._print_apply

    def print_then_terminated(*args: Any, **kwargs: Any) -> None:
        printed(*args, **kwargs)
        _terminated()

    monkeypatch.setattr(cli, "_print_apply", print_then_terminated)
    with pytest.raises(SystemExit) as ended:
        main(["apply", "-f", str(SEED), *MEMORY])
    assert ended.value.code == cli.EXIT_TERMINATED
    err = capsys.readouterr().err
    assert "nothing was changed" not in err
    assert ("k3snet: error: stopped by SIGTERM after the change was made, which stays: "
            "memory: 8 change(s) applied in 8 operation(s)") in err


def test_a_signal_while_destroy_reads_the_backends_again_names_what_stays_removed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # After the removal destroy observes the backends again (for the warnings of what
    # holds now: API reads for Calico or Cilium); stopped there, the error document said
    # "nothing was changed", of a node whose objects were all removed.
    held = MemoryBackend(State(owned=[Sysctl("net.ipv4.ip_forward", "1"),
                                      Sysctl("net.ipv4.conf.all.rp_filter", "2")]))
    register_backend("memory-crossf-removed", lambda: held)
    monkeypatch.setattr(cli, "_look_again", _terminated)
    try:
        with pytest.raises(SystemExit) as ended:
            main(["destroy", "--backend", "memory-crossf-removed", "--auto-approve",
                  "--output", "json"])
    finally:
        unregister_backend("memory-crossf-removed")
    assert ended.value.code == cli.EXIT_TERMINATED
    assert not held.observe().owned  # removed, and not taken back
    captured = capsys.readouterr()
    error = _error_document(captured.out)
    assert error["type"] == "SIGTERM"
    assert error["message"] == ("stopped by SIGTERM after the change was made, which "
                                "stays: memory: 2 change(s) applied in 2 operation(s)")
    assert f"k3snet: error: {error['message']}" in captured.err


def test_sigterm_whose_undo_fails_is_one_rollback_document_exit_5_naming_the_signal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The undo SIGTERM started failed: exit 5 and the RollbackError's document alone (no
    # SIGTERM document after it). It said "interrupted (_Stopped: 143)": the exit code
    # of a private class, for the signal that stopped the apply.
    def undo() -> None:
        raise OSError("EPERM")

    def converge(*_args: object, **_kwargs: object) -> object:
        steps = Compensation("memory")
        with steps.guarding():
            steps.record(Change.add(Sysctl("net.ipv4.ip_forward", "1")), undo)
            _terminated()
        raise AssertionError("not stopped")

    monkeypatch.setattr(cli, "converge", converge)
    assert main(["apply", "-f", str(SEED), *MEMORY, "--output", "json"]) == 5
    captured = capsys.readouterr()
    error = _error_document(captured.out)  # one document
    assert error["type"] == "RollbackError"
    assert error["message"].startswith(
        "memory backend: interrupted (stopped by SIGTERM)\n  ROLLBACK FAILED"), error
    assert "_Stopped" not in captured.err


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_signal_says_the_backends_warnings_it_held_back_as_any_failure_does(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], stop: str
) -> None:
    # The backends' warnings are held back from stderr for the `!! warning:` lines the
    # result prints; a failure prints none, and they are logged then. Ctrl-C (130) did,
    # SIGTERM and SIGHUP (143, 129, in FAILURE_CODES too) ended past it: never said.
    def converge(*_args: object, **_kwargs: object) -> object:
        WarningLog("k3snet.backends.crossf", "memory").say(["a foreign K3SNET-X chain"])
        if stop == "SIGINT":
            raise KeyboardInterrupt
        return _terminated()

    monkeypatch.setattr(cli, "converge", converge)
    try:
        code = main(["apply", "-f", str(SEED), *MEMORY])
    except SystemExit as exc:
        code = int(str(exc.code))
    assert code == {"SIGINT": cli.EXIT_INTERRUPTED, "SIGTERM": cli.EXIT_TERMINATED}[stop]
    assert "memory: a foreign K3SNET-X chain" in capsys.readouterr().err


def test_ctrl_c_in_validate_is_an_error_document_as_its_schema_says(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*_args: object, **_kwargs: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "compile_spec", interrupted)
    assert main(["validate", "-f", str(SEED), "--output", "json"]) == cli.EXIT_INTERRUPTED
    assert _error_document(capsys.readouterr().out)["type"] == "SIGINT"
    assert "Ctrl-C stops it" in load_schema("error")["description"]


def test_ctrl_c_as_a_failed_undo_unwinds_keeps_its_rollback_error_exit_5(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Ctrl-C, a second one cutting the undo (a RollbackError: the node may be
    # half-changed), and a third as that error unwinds (the backends closed, the lock
    # let go): the third replaced it, and the command said "stopped by SIGINT: nothing
    # was changed (what it made was taken back)", exit 130, of a half-changed node.
    def converge(*_args: object, **_kwargs: object) -> object:
        try:
            raise RollbackError("memory backend: interrupted (KeyboardInterrupt)\n  "
                                "ROLLBACK FAILED, the system may be half-changed:\n    "
                                "- sysctl net.ipv4.ip_forward = 1: interrupted")
        finally:
            raise KeyboardInterrupt  # the third Ctrl-C, as it unwinds

    monkeypatch.setattr(cli, "converge", converge)
    assert main(["apply", "-f", str(SEED), *MEMORY, "--output", "json"]) == 5
    captured = capsys.readouterr()
    error = _error_document(captured.out)
    assert error["type"] == "RollbackError"
    assert "ROLLBACK FAILED" in error["message"]
    assert "nothing was changed" not in captured.err
    assert "ROLLBACK FAILED" in captured.err


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), cli._Stopped(143, "SIGTERM")],
                         ids=["ctrl-c", "sigterm"])
def test_a_signal_while_a_rollback_error_is_reported_keeps_exit_5(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    stop: BaseException
) -> None:
    # Ctrl-C (or systemd's SIGTERM) while the RollbackError's lines were written (a slow
    # terminal, a pipe not read): the process ended 130 (143), quietly, its 5 ("the
    # node may be half-changed") lost, and the lines after the cut never said.
    def converge(*_args: object, **_kwargs: object) -> object:
        raise RollbackError("memory backend: undoing failed, the system may be "
                            "half-changed:\n    - sysctl net.ipv4.ip_forward = 1: EPERM")

    reported = cli._report_error

    def report_then_stopped(*args: Any) -> None:
        reported(*args)
        raise stop

    monkeypatch.setattr(cli, "converge", converge)
    monkeypatch.setattr(cli, "_report_error", report_then_stopped)
    assert main(["apply", "-f", str(SEED), *MEMORY]) == cli.EXIT_HALF_CHANGED
    assert "half-changed" in capsys.readouterr().err
