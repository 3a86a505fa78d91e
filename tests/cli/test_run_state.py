"""Each call of :func:`k3snet.cli.main` keeps its own state, whoever else calls it.

A library calls ``k3snet.cli.main([...])`` from several threads, or again within a run
(a signal handler of its own). What one run printed and made decides what a signal
ending it says: held by the module (two lists each call cleared), another call running
meanwhile emptied the first one's, or filled them for it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from k3snet import cli
from k3snet.cli import main

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
MEMORY = ["--backend", "memory", "--no-facts"]


def _in_a_thread(argv: list[str]) -> int:
    codes: list[int] = []
    other = threading.Thread(target=lambda: codes.append(main(argv)))
    other.start()
    other.join()
    return codes[0]


def _nested(argv: list[str]) -> int:
    return main(argv)  # as a signal handler of the library's would, within the run


OTHER_CALLS: dict[str, Callable[[list[str]], int]] = {
    "thread": _in_a_thread, "nested": _nested}


def _documents(out: str) -> list[dict[str, Any]]:
    """The JSON documents printed one after the other on ``out``."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while out[at:].strip():
        at += len(out[at:]) - len(out[at:].lstrip())
        document, at = decoder.raw_decode(out, at)
        found.append(document)
    return found


@pytest.mark.parametrize("other", OTHER_CALLS.values(), ids=OTHER_CALLS.keys())
def test_another_run_meanwhile_does_not_forget_what_this_run_made(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        other: Callable[[list[str]], int]) -> None:
    # The apply was made, its result printed; Ctrl-C then: what it made stays, and it
    # says so. The other call (a plan) had emptied the list of what was made: "nothing
    # was changed (what it made was taken back)", of 8 changes that stayed.
    printed = cli._print_apply

    def print_then_interrupted(*args: Any, **kwargs: Any) -> None:
        printed(*args, **kwargs)
        assert other(["plan", "-f", str(SEED), *MEMORY]) == cli.EXIT_CHANGES
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_print_apply", print_then_interrupted)
    assert main(["apply", "-f", str(SEED), *MEMORY]) == cli.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "nothing was changed" not in err
    assert ("k3snet: error: stopped by SIGINT after the change was made, which stays: "
            "memory: 8 change(s) applied in 8 operation(s)") in err


@pytest.mark.parametrize("other", OTHER_CALLS.values(), ids=OTHER_CALLS.keys())
def test_another_runs_document_does_not_stand_for_this_runs_error_document(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        other: Callable[[list[str]], int]) -> None:
    # Ctrl-C before this apply printed anything: its error document is due. The other
    # call's plan document was taken as this run's, and a script reading this run's
    # output got no document saying it was stopped.
    def other_then_interrupted(*_args: object, **_kwargs: object) -> None:
        assert other(["plan", "-f", str(SEED), *MEMORY, "--output", "json"]) == 2
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "converge", other_then_interrupted)
    assert main(["apply", "-f", str(SEED), *MEMORY, "--output", "json"]) == 130
    kinds = [d["kind"] for d in _documents(capsys.readouterr().out)]
    assert kinds == ["plan", "error"]


def test_a_run_that_printed_its_document_adds_none_after_another_run_began(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # The other way round: this run's document printed, another run (printing none)
    # begins and ends before Ctrl-C reaches this one; it had cleared "printed", and a
    # second document, this run's error, followed its whole one.
    printed = cli._print_apply

    def print_then_interrupted(*args: Any, **kwargs: Any) -> None:
        printed(*args, **kwargs)
        assert _in_a_thread(["validate", "-f", str(SEED.with_name("no-such.yaml"))]) == 1
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_print_apply", print_then_interrupted)
    assert main(["apply", "-f", str(SEED), *MEMORY, "--output", "json"]) == 130
    kinds = [d["kind"] for d in _documents(capsys.readouterr().out)]
    assert kinds == ["apply"]
