"""A backend's warning is said once by the commands that print it.

``k3snet plan``, ``apply`` and ``destroy`` print the backends' warnings as
``!! warning:`` lines; the nftables, iptables and Calico backends also log each
after their read, and stderr said it a second time. The log is held back, and let
out only when the command fails (then no ``!! warning:`` line says it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet import MemoryBackend, State, register_backend
from k3snet.backends.registry import unregister_backend
from k3snet.cli import main

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
WARNING = "a drop in another table may drop what k3snet accepts"


class _Warns(MemoryBackend):
    """Logs its warning after each read, as the nftables backend does."""

    warnings = (WARNING,)

    def observe(self) -> State:
        found = super().observe()
        self.log_warnings()
        return found


@pytest.fixture
def warns() -> Iterator[_Warns]:
    backend = _Warns()
    register_backend("memory-warns", lambda: backend)
    loggers = [logging.getLogger("k3snet")]
    saved = [(list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    try:
        yield backend
    finally:
        unregister_backend("memory-warns")
        for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate


ARGS = ["-f", str(SEED), "--backend", "memory-warns", "--no-facts"]


@pytest.mark.parametrize("command", [["plan"], ["apply", "--auto-approve"]])
def test_plan_and_apply_say_a_backends_warning_once(
        warns: _Warns, command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, *ARGS]) in (0, 2)
    out, err = capsys.readouterr()
    assert f"!! warning: {WARNING}" in out
    assert WARNING not in err


def test_a_failed_apply_logs_the_warning_no_line_printed(
        warns: _Warns, capsys: pytest.CaptureFixture[str]) -> None:
    warns.faults.fail_at(0)
    assert main(["apply", "--auto-approve", *ARGS]) == 1
    out, err = capsys.readouterr()
    assert WARNING not in out
    assert f"memory: {WARNING}" in err


def test_observe_which_prints_no_warning_logs_it(
        warns: _Warns, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["observe", "--backend", "memory-warns"]) == 0
    assert f"memory: {WARNING}" in capsys.readouterr().err


def test_a_failed_command_logs_a_warning_two_backends_read_once(
        warns: _Warns, capsys: pytest.CaptureFixture[str]) -> None:
    # Both iptables flavours that `destroy` looks through named k3snet's nftables table,
    # and a destroy refused (no terminal, no --auto-approve) said it twice.
    other = _Warns(capabilities=["nat", "forward"])
    register_backend("memory-warns-too", lambda: other)
    try:
        warns.faults.fail_at(0)
        assert main(["apply", "--auto-approve", "-f", str(SEED), "--no-facts",
                     "--backend", "memory-warns:route,sysctl",
                     "--backend", "memory-warns-too"]) == 1
    finally:
        unregister_backend("memory-warns-too")
    out, err = capsys.readouterr()
    assert WARNING not in out
    assert err.count(f"memory: {WARNING}") == 1, err
