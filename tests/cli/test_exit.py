"""The end of a ``k3snet`` process: everything written arrives, the code is kept, no teardown.

The console script (and ``python -m k3snet``) leaves through ``os._exit`` once the
command is done (:func:`k3snet.__main__.end`), skipping Python's teardown of
every value the command built. These tests run it as users do, as a process
writing into a pipe.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from k3snet import __main__ as entry
from k3snet import cli
from k3snet.cli import JSON_FORMAT, main

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
# k3snet's console script, whatever sys.argv[0] is: __main__.main() reads sys.argv.
RUN = ("import atexit, sys; atexit.register(lambda: print('teardown ran', file=sys.stderr)); "
       "sys.argv = ['k3snet', *sys.argv[1:]]; from k3snet.__main__ import main; "
       "sys.exit(main())")


def _k3snet(*argv: str, full_exit: bool | str = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "K3SNET_FULL_EXIT"}
    if full_exit:
        env["K3SNET_FULL_EXIT"] = "1" if full_exit is True else full_exit
    return subprocess.run([sys.executable, "-c", RUN, *argv], capture_output=True, text=True,
                          check=False, env=env, timeout=300)


def _big_spec(tmp_path: Path, count: int = 3000) -> Path:
    spec = tmp_path / "big.yaml"
    spec.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\ndestinations:\n" + "".join(
        f"  - cidr: 172.{16 + i // 256}.{i % 256}.0/24\n" for i in range(count)))
    return spec


def test_a_big_output_arrives_whole_and_python_teardown_is_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _big_spec(tmp_path)
    argv = ("plan", "-f", str(spec), "--backend", "memory", "--no-facts")
    assert main(list(argv)) == 2
    expected = capsys.readouterr().out
    assert len(expected) > 1 << 17  # more than a pipe and stdout's buffer hold
    done = _k3snet(*argv)
    assert done.returncode == 2
    assert done.stdout == expected
    assert "teardown ran" not in done.stderr  # os._exit: no atexit, no teardown
    kept = _k3snet(*argv, full_exit=True)  # K3SNET_FULL_EXIT=1: Python's own exit
    assert (kept.returncode, kept.stdout) == (2, expected)
    assert "teardown ran" in kept.stderr


@pytest.mark.parametrize(("argv", "code"), [
    (("validate", "-f", str(SEED)), 0),
    (("plan", "-f", str(SEED), "--backend", "memory", "--no-facts"), 2),
    (("plan", "-f", str(SEED), "--backend", "nope", "--no-facts"), 1),
    (("plan", "--no-such-option"), 64),
])
def test_the_exit_code_is_the_commands(argv: tuple[str, ...], code: int) -> None:
    done = _k3snet(*argv)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr


def test_an_error_message_is_flushed_before_the_end() -> None:
    done = _k3snet("plan", "-f", str(SEED), "--backend", "nope", "--no-facts")
    assert "no backend named 'nope'" in done.stderr


def test_a_pipe_closed_after_the_command_is_done_ends_quietly_with_141(tmp_path: Path) -> None:
    spec = _big_spec(tmp_path)
    reader = subprocess.Popen([sys.executable, "-c", RUN, "plan", "-f", str(spec), "--backend",
                               "memory", "--no-facts"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert reader.stdout is not None
    reader.stdout.read(10)
    reader.stdout.close()  # like `| head -c 10`
    _out, err = reader.communicate(timeout=120)
    assert b"Traceback" not in err
    assert reader.returncode == 141


def _k3snet_into(stdout: int, *argv: str, unbuffered: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"K3SNET_FULL_EXIT", "PYTHONUNBUFFERED"}}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    return subprocess.run([sys.executable, "-c", RUN, *argv], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, check=False, env=env, timeout=300)


# Unbuffered (PYTHONUNBUFFERED=1), argparse drops a failed write of its help and
# exits 0: those two cases are left out (argparse's own behaviour).
@pytest.mark.parametrize(("argv", "unbuffered"), [
    (("--version",), False), (("--version",), True), (("--help",), False),
    (("plan", "--help"), False)])
def test_a_pipe_closed_before_the_first_write_ends_with_141_for_every_command(
        argv: tuple[str, ...], unbuffered: bool) -> None:
    # The reader is gone before k3snet writes (`k3snet --version | true`). The quick
    # --version and argparse's --help ended in a traceback or Python's status 120.
    read, write = os.pipe()
    os.close(read)
    try:
        done = _k3snet_into(write, *argv, unbuffered=unbuffered)
    finally:
        os.close(write)
    assert done.returncode == 141, done.stderr
    assert done.stderr == ""


@pytest.mark.parametrize(("argv", "unbuffered"), [
    (("--version",), False), (("--version",), True), (("--help",), False),
    (("validate", "-f", str(SEED)), False), (("validate", "-f", str(SEED)), True)])
def test_an_output_that_cannot_be_written_is_an_error_said_once(
        argv: tuple[str, ...], unbuffered: bool) -> None:
    with open("/dev/full", "w") as full:  # a file descriptor for the child
        done = _k3snet_into(full.fileno(), *argv, unbuffered=unbuffered)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "Exception ignored" not in done.stderr
    assert done.stderr.count("No space left on device") == 1, done.stderr


def _interrupted_loading(module: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """``k3snet argv`` run as a process, Ctrl-C coming as ``module`` is first imported."""
    interrupt = ("import sys\n"
                 "class Interrupt:\n"
                 "    def find_spec(self, name, path=None, target=None):\n"
                 f"        if name == {module!r}:\n"
                 "            sys.meta_path.remove(self)  # one Ctrl-C\n"
                 "            raise KeyboardInterrupt\n"
                 "sys.meta_path.insert(0, Interrupt())\n")
    return subprocess.run([sys.executable, "-c", interrupt + RUN, *argv],
                          capture_output=True, text=True, check=False, timeout=120)


def test_ctrl_c_while_the_cli_loads_ends_with_130_and_no_traceback() -> None:
    # Ctrl-C right after starting lands in the imports of k3snet.cli, before the
    # command's own handler: Python printed a KeyboardInterrupt traceback.
    done = _interrupted_loading("k3snet.cli", "plan", "-f", str(SEED))
    assert done.returncode == 130
    assert done.stderr == "k3snet: error: stopped by SIGINT\n"
    assert done.stdout == ""


@pytest.mark.parametrize("module", ["k3snet.cli", "k3snet.planner"])
@pytest.mark.parametrize("argv", [
    ("apply", "-f", str(SEED), "--output", "json"),
    ("-v", "plan", "--outp=json", "-f", str(SEED)),
    ("doctor", "-ojson"),
], ids=["apply", "common-option-first", "doctor"])
def test_ctrl_c_while_the_cli_loads_is_an_error_document_with_json(
        module: str, argv: tuple[str, ...]) -> None:
    # Exit 130 with nothing on stdout: a script reading it as one document got none,
    # where a Ctrl-C a moment later is an `error` document of type SIGINT.
    done = _interrupted_loading(module, *argv)
    assert done.returncode == 130
    assert json.loads(done.stdout) == {"format": JSON_FORMAT, "kind": "error", "error": {
        "type": "SIGINT", "message": "stopped by SIGINT", "problems": []}}
    assert done.stderr == "k3snet: error: stopped by SIGINT\n"


@pytest.mark.parametrize("module", ["__future__", "contextlib", "logging", "typing",
                                    "k3snet._env", "k3snet._stdout"])
def test_ctrl_c_while_the_entry_point_loads_is_an_error_document_with_json(
        module: str) -> None:
    # The modules the entry point itself imported before its handler: a Ctrl-C there was
    # Python's KeyboardInterrupt traceback, the process killed by SIGINT, no document
    # (__future__ too: `from __future__ import annotations` imports a module).
    done = _interrupted_loading(module, "plan", "-f", str(SEED), "--output", "json")
    assert done.returncode == 130, done.stderr
    assert json.loads(done.stdout)["error"]["type"] == "SIGINT"
    assert done.stderr == "k3snet: error: stopped by SIGINT\n"


def test_ctrl_c_while_the_agent_loads_says_nothing_in_its_log() -> None:
    done = _interrupted_loading("k3snet.cli", "agent", "--log-format", "json")
    assert (done.returncode, done.stdout, done.stderr) == (130, "", "")


def test_ctrl_c_after_loading_before_the_command_runs_is_an_error_document(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # The CLI loaded, its arguments being read: not yet within _run's handlers.
    def interrupted(args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_configure_logging", interrupted)
    monkeypatch.setattr(sys, "argv", ["k3snet", "observe", "--output", "json"])
    monkeypatch.setenv("K3SNET_FULL_EXIT", "1")
    assert entry.main() == cli.EXIT_INTERRUPTED
    out, err = capsys.readouterr()
    assert json.loads(out)["error"]["type"] == "SIGINT"
    assert err == "k3snet: error: stopped by SIGINT\n"


def test_ctrl_c_after_the_document_was_printed_adds_no_second_one(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def printed_then_interrupted(args: Any) -> None:
        cli._print_json(args.run, {"format": JSON_FORMAT, "kind": "observation"})
        raise KeyboardInterrupt  # as one within the print, or once _run returned

    monkeypatch.setattr(cli, "_configure_logging", printed_then_interrupted)
    monkeypatch.setattr(sys, "argv", ["k3snet", "observe", "--output", "json"])
    monkeypatch.setenv("K3SNET_FULL_EXIT", "1")
    assert entry.main() == cli.EXIT_INTERRUPTED
    assert json.loads(capsys.readouterr().out)["kind"] == "observation"


@pytest.mark.parametrize(("closed", "argv", "code"), [
    (0, ("apply", "-f", str(SEED), "--backend", "memory", "--no-facts"), 0),
    (1, ("plan", "-f", str(SEED), "--backend", "memory", "--no-facts"), 2),
    (1, ("--version",), 0),
    (2, ("plan", "-f", "no-such-spec.yaml", "--output", "json"), 1),
], ids=["stdin", "stdout", "stdout-version", "stderr"])
def test_a_closed_standard_stream_is_read_as_dev_null_not_an_internal_error(
        closed: int, argv: tuple[str, ...], code: int) -> None:
    # A supervisor or a script (`k3snet apply ... <&-`, `>&-`) starts k3snet with one of
    # the three closed: Python's sys.stdin (stdout, stderr) is then None, and asking
    # whether it is a terminal was an internal error, then a traceback at the end.
    redirect = {0: "<&-", 1: ">&-", 2: "2>&-"}[closed]
    done = subprocess.run(["sh", "-c", f'exec "$@" {redirect}', "sh", sys.executable, "-c",
                           RUN, *argv], capture_output=True, text=True, check=False,
                          timeout=300)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    assert "internal error" not in done.stderr
    if closed == 2:  # the JSON document alone on stdout, as with stderr open
        assert json.loads(done.stdout)["error"]["type"] == "SpecError"


HALF_CHANGED = ("from k3snet import MemoryBackend, register_backend\n"
                "from k3snet.errors import RollbackError\n"
                "class Half(MemoryBackend):\n"
                "    def apply(self, plan, *args, **kwargs):\n"
                "        raise RollbackError('the undo failed too')\n"
                "register_backend('memory-half', Half)\n")


@pytest.mark.parametrize("output", ["text", "json"])
@pytest.mark.parametrize("unbuffered", [False, True])
@pytest.mark.parametrize("into", ["closed pipe", "/dev/full"])
def test_a_failure_whose_output_cannot_be_written_keeps_its_exit_code(
        output: str, unbuffered: bool, into: str) -> None:
    # `k3snet apply ... -o json | head` whose reader is gone, or a full disk: a RollbackError
    # ("the node may be half-changed", 5) ended as a BrokenPipeError traceback and exit 1
    # ("nothing was changed"), or as 141, and a script looked no further.
    env = {k: v for k, v in os.environ.items()
           if k not in {"K3SNET_FULL_EXIT", "PYTHONUNBUFFERED"}}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    argv = ["apply", "-f", str(SEED), "--backend", "memory-half", "--no-facts",
            "--output", output]
    with contextlib.ExitStack() as stack:
        if into == "closed pipe":
            read, write = os.pipe()
            os.close(read)
            stack.callback(os.close, write)
        else:
            write = stack.enter_context(open("/dev/full", "w")).fileno()
        done = subprocess.run([sys.executable, "-c", HALF_CHANGED + RUN, *argv], stdout=write,
                              stderr=subprocess.PIPE, text=True, check=False, env=env,
                              timeout=300)
    assert done.returncode == 5, done.stderr
    assert "Traceback" not in done.stderr
    assert "Exception ignored" not in done.stderr
    assert "k3snet: error: the undo failed too" in done.stderr


def test_a_refused_command_whose_error_document_cannot_be_written_exits_1_quietly() -> None:
    read, write = os.pipe()
    os.close(read)
    try:
        done = _k3snet_into(write, "plan", "-f", "no-such-spec.yaml", "--output", "json",
                            unbuffered=True)
    finally:
        os.close(write)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "no-such-spec.yaml" in done.stderr


@pytest.mark.parametrize(("debug", "shows"), [
    ("", False), ("0", False), ("off", False), ("FALSE", False), ("no", False),
    ("1", True), ("yes", True)])
def test_k3snet_debug_shows_the_traceback_only_when_switched_on(
        debug: str, shows: bool, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # K3SNET_DEBUG=0 turned tracebacks on: any value did.
    from k3snet import cli  # noqa: PLC0415

    def broken(args: object) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "validate", broken)
    monkeypatch.setenv("K3SNET_DEBUG", debug)
    if shows:
        with pytest.raises(RuntimeError, match="a bug"):
            cli.main(["validate", "-f", "spec.yaml"])
    else:
        assert cli.main(["validate", "-f", "spec.yaml"]) == 1
        assert "internal error: RuntimeError: a bug" in capsys.readouterr().err


@pytest.mark.parametrize(("value", "teardown"), [
    ("0", False), ("off", False), ("No", False), ("false", False), ("1", True), ("yes", True),
])
def test_full_exit_is_a_switch_as_the_others(value: str, teardown: bool) -> None:
    """K3SNET_FULL_EXIT=0 turned Python's own exit on, as any text did, where K3SNET_DEBUG
    and the cache switches read 0, off, no and false as off (docs/cli.md)."""
    done = _k3snet("--version", full_exit=value)
    assert done.returncode == 0
    assert ("teardown ran" in done.stderr) is teardown
