"""A call of :func:`k3snet.cli.main` leaves the process of its caller as it found it.

A library, a test or a notebook calls ``k3snet.cli.main([...])`` and goes on. The command
sets, for itself, k3snet's loggers (a handler on the stderr of the moment, the level of
``-v`` / ``-q``, ``propagate`` off), stdout's ``errors`` and ``$PATH``; they stayed so:
the caller's own logging got no k3snet record again (a ``caplog`` test after an
in-process call saw none), and a handler bound to a stderr since replaced or closed
printed "--- Logging error ---".
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import pytest

from k3snet import cli
from k3snet._logline import HANDLER_NAME
from k3snet.agent import LOGGER_NAME
from k3snet.cli import main

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
PLAN = ["plan", "-f", str(SEED), "--backend", "memory", "--no-facts"]
LOGGERS = ("k3snet", LOGGER_NAME)


def _loggers() -> list[tuple[list[logging.Handler], int, bool]]:
    return [(list(lg.handlers), lg.level, lg.propagate)
            for lg in map(logging.getLogger, LOGGERS)]


def _set_loggers(states: list[tuple[list[logging.Handler], int, bool]]) -> None:
    """Give each of k3snet's loggers its (handlers, level, propagate) of ``states``."""
    for logger, (handlers, level, propagate) in zip(
            map(logging.getLogger, LOGGERS), states, strict=True):
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.fixture
def loggers_put_back() -> Iterator[None]:
    """The loggers as they were, whatever the code under test left (not the fixture
    the test relies on: it checks what main() itself puts back)."""
    saved = _loggers()
    yield
    _set_loggers(saved)


@pytest.fixture(autouse=True)
def pristine_loggers() -> Iterator[None]:
    """k3snet's loggers as a fresh process has them (no handler, no level, propagating)
    for each test here, the ones found put back after: an earlier test of the same worker
    may have left the agent's logging set up (``run_from_cli``, ``configure_logging``:
    the process's setting, by design), which these tests of what main() puts back would
    take for main()'s doing."""
    saved = _loggers()
    _set_loggers([([], logging.NOTSET, True)] * len(LOGGERS))
    yield
    _set_loggers(saved)


def test_the_loggers_set_by_the_cli_and_the_agent_are_the_ones_main_puts_back() -> None:
    assert LOGGERS == cli._LOGGERS


@pytest.mark.usefixtures("loggers_put_back")
def test_caplog_gets_k3snet_s_records_after_an_in_process_main(
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-vv", *PLAN]) == cli.EXIT_CHANGES
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="k3snet"):
        logging.getLogger("k3snet.backends").warning("said after the command")
    assert [r.getMessage() for r in caplog.records] == ["said after the command"]
    assert "said after the command" not in capsys.readouterr().err  # not the CLI's handler


@pytest.mark.usefixtures("loggers_put_back")
def test_a_root_handler_of_the_caller_gets_k3snet_s_records_after_main(
        capsys: pytest.CaptureFixture[str]) -> None:
    got: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: got.append(record.getMessage())  # type: ignore[method-assign]
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        assert main(["-q", *PLAN]) == cli.EXIT_CHANGES
        logging.getLogger("k3snet").warning("the caller's to handle")
    finally:
        root.removeHandler(handler)
    assert got == ["the caller's to handle"]


@pytest.mark.usefixtures("loggers_put_back")
def test_no_handler_is_left_on_a_stderr_the_caller_closed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The caller ran the command with stderr a buffer of its own, then closed it.
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert main(PLAN) == cli.EXIT_CHANGES
    err.close()
    errors: list[BaseException | None] = []
    monkeypatch.setattr(logging.Handler, "handleError",
                        lambda self, record: errors.append(sys.exc_info()[1]))
    logging.getLogger("k3snet").error("after the buffer was closed")
    assert errors == []


def _raising(exc: BaseException) -> Callable[[object], int]:
    def run(args: object) -> int:
        logging.getLogger("k3snet").warning("within the command")
        raise exc
    return run


@pytest.mark.usefixtures("loggers_put_back")
@pytest.mark.parametrize("exc", [SystemExit(cli.EXIT_TERMINATED), KeyboardInterrupt(),
                                 RuntimeError("a bug, K3SNET_DEBUG=1")],
                         ids=["SystemExit", "KeyboardInterrupt", "error"])
def test_the_loggers_are_put_back_when_main_raises(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        exc: BaseException) -> None:
    before = _loggers()
    monkeypatch.setattr(cli, "_run", _raising(exc))
    with pytest.raises(type(exc)):
        main(["-v", *PLAN])
    assert _loggers() == before
    assert "within the command" in capsys.readouterr().err  # the command's handler said it


@pytest.mark.usefixtures("loggers_put_back")
def test_a_usage_error_of_the_agent_s_json_log_puts_the_loggers_back(
        capsys: pytest.CaptureFixture[str]) -> None:
    before = _loggers()
    with pytest.raises(SystemExit):
        main(["agent", "--log-format", "json", "--no-such-option"])
    assert _loggers() == before
    assert '"level": "error"' in capsys.readouterr().err


@pytest.mark.usefixtures("loggers_put_back")
def test_an_in_process_agent_puts_back_the_loggers_it_set(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SEED.read_text())
    before = _loggers()
    assert main(["agent", "-f", str(spec), "--backend", "memory", "--no-kube", "--no-facts",
                 "--once", "--listen", "none"]) == 0
    assert _loggers() == before
    assert "node=" in capsys.readouterr().err  # the agent's own log while it ran


def test_stdout_s_errors_are_put_back(monkeypatch: pytest.MonkeyPatch) -> None:
    # The command prints a byte of an admin's rule that is not UTF-8 as \udcXX
    # (errors="backslashreplace"); the caller's stdout kept raising on none.
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    monkeypatch.setattr(sys, "stdout", out)
    assert main(PLAN) == cli.EXIT_CHANGES
    assert out.errors == "strict"


def test_path_is_put_back(monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # cron's: the command adds the sbin ones
    assert main(PLAN) == cli.EXIT_CHANGES
    assert os.environ["PATH"] == "/usr/bin:/bin"


def _also(monkeypatch: pytest.MonkeyPatch, within: Callable[[], None]) -> None:
    """``within()`` run amid the command (as a plugin it loads, or another thread of the
    caller's, would)."""
    real = cli._run

    def run(args: object) -> int:
        within()
        return real(args)  # type: ignore[arg-type]
    monkeypatch.setattr(cli, "_run", run)


@pytest.mark.usefixtures("loggers_put_back")
def test_a_handler_a_plugin_adds_while_main_runs_stays_open_after_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # All the handlers main() had not found were taken off and closed: the plugin, loaded
    # once by the process, logged to nothing from then on.
    got: list[str] = []
    plugin = logging.Handler()
    plugin.emit = lambda record: got.append(record.getMessage())  # type: ignore[method-assign]
    plugin.close = lambda: got.append("closed")  # type: ignore[method-assign]
    _also(monkeypatch, lambda: logging.getLogger("k3snet").addHandler(plugin))
    assert main(PLAN) == cli.EXIT_CHANGES
    logging.getLogger("k3snet.backends").warning("the plugin's to handle")
    assert got == ["the plugin's to handle"]
    assert all(h.get_name() != HANDLER_NAME for h in logging.getLogger("k3snet").handlers)


def test_path_the_caller_sets_while_main_runs_stays(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    _also(monkeypatch, lambda: os.environ.__setitem__("PATH", "/opt/caller/bin:/usr/bin"))
    assert main(PLAN) == cli.EXIT_CHANGES
    assert os.environ["PATH"] == "/opt/caller/bin:/usr/bin"  # not the one it had before


def test_stdout_s_errors_the_caller_sets_while_main_runs_stay(
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    monkeypatch.setattr(sys, "stdout", out)
    real = cli._run

    def run(args: object) -> int:
        code = real(args)  # type: ignore[arg-type]
        out.reconfigure(errors="replace")
        return code
    monkeypatch.setattr(cli, "_run", run)
    assert main(PLAN) == cli.EXIT_CHANGES
    assert out.errors == "replace"


@pytest.mark.usefixtures("loggers_put_back")
def test_a_ctrl_c_while_main_puts_things_back_is_raised_once_they_are(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Raised amid them (as the command's handler was closed), the Ctrl-C left $PATH and
    # stdout's errors as the command had set them.
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("the tests run outside the main thread: a signal would end the run")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    monkeypatch.setattr(sys, "stdout", out)
    before = _loggers()
    real = logging.StreamHandler.close
    sent: list[int] = []

    def close(self: logging.StreamHandler[TextIO]) -> None:  # the command's, as it ends
        if not sent:
            sent.append(signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # its handler runs at the next bytecode
        real(self)
    monkeypatch.setattr(logging.StreamHandler, "close", close)
    with pytest.raises(KeyboardInterrupt):
        main(PLAN)
    assert sent
    assert (os.environ["PATH"], out.errors, _loggers()) == ("/usr/bin:/bin", "strict", before)
