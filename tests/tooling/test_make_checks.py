"""``make test``'s checks run two at a time and still fail it, each with its own message;
``.ci/run`` builds the lowest-version venv beside ``make test`` and fails when that build fails.

The Makefile runs against a venv of stand-ins (``VENV=...``: ruff, mypy, mkdocs and python are
shell scripts writing down what they were asked) with a fresh stamp, so nothing is installed;
``.ci/run`` runs with a stand-in ``make`` first on ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("setsid") is None,
                                reason="needs make and setsid")

# Both mypy runs wait (at most 60 s) until the other has started: run one after the other,
# the first gives up and fails. Each prints two lines around that wait.
_MYPY = """#!/bin/bash
name=typecheck; case "$*" in *tests*) name=typecheck-tests;; esac
echo "mypy $*" >> "$LOG"
echo "$name: first line"
touch "$DIR/started-$name"
for _ in $(seq 600); do
    [ -e "$DIR/started-typecheck" ] && [ -e "$DIR/started-typecheck-tests" ] && break
    sleep 0.1
done
if ! [ -e "$DIR/started-typecheck" ] || ! [ -e "$DIR/started-typecheck-tests" ]; then
    echo "$name ran alone"; exit 3
fi
sleep 0.3
echo "$name: second line"
[ -e "$DIR/fail-$name" ] && { echo "$name: error: wrong-type-marker"; exit 1; }
exit 0
"""

_TOOL = """#!/bin/bash
echo "{name} $*" >> "$LOG"
if [ -e "$DIR/fail-{name}" ]; then
    echo "{name}: E999 {name}-error-marker"; exit "$(cat "$DIR/fail-{name}")"
fi
exit 0
"""


def _outside_make() -> dict[str, str]:
    """Our environment without the flags and variables of a `make test` running this suite."""
    outer = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}
    return {key: value for key, value in os.environ.items() if key not in outer}


def _stand_in_venv(tmp_path: Path) -> Path:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "mypy").write_text(_MYPY)
    for name in ("ruff", "mkdocs", "python"):
        (venv / "bin" / name).write_text(_TOOL.format(name=name))
    for tool in (venv / "bin").iterdir():
        tool.chmod(0o755)
    (venv / ".k3snet-deps").touch()  # newer than pyproject.toml and the Makefile: deps is done
    return venv


def _make_test(tmp_path: Path, *fail: str, code: int = 1) -> subprocess.CompletedProcess[str]:
    venv = _stand_in_venv(tmp_path)
    for name in fail:
        (tmp_path / f"fail-{name}").write_text(str(code))
    env = {**_outside_make(), "LOG": str(tmp_path / "asked.log"), "DIR": str(tmp_path)}
    return subprocess.run(["make", "-C", str(ROOT), "test", f"VENV={venv}"], env=env,
                          capture_output=True, text=True, check=False, timeout=300)


def _asked(tmp_path: Path) -> list[str]:
    log = tmp_path / "asked.log"
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


def test_the_two_mypy_runs_run_at_once_each_output_whole_then_the_suite(tmp_path: Path) -> None:
    done = _make_test(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for name in ("typecheck", "typecheck-tests"):  # printed whole, though run side by side
        first = lines.index(f"{name}: first line")
        assert lines[first + 1] == f"{name}: second line", lines
    for name in ("lint", "typecheck", "typecheck-tests", "docs", "pytest"):
        assert any(line.startswith(f"{name}: ") and " s wall, " in line
                   for line in done.stderr.splitlines()), (name, done.stderr)
    asked = _asked(tmp_path)
    assert sorted(asked[:-1]) == ["mkdocs", "mypy", "mypy", "ruff"]
    assert asked[-1] == "python"  # the suite, after every check


def test_a_lint_error_and_a_type_error_both_fail_make_test_before_the_suite(tmp_path: Path) -> None:
    done = _make_test(tmp_path, "ruff", "typecheck")
    assert done.returncode != 0
    assert "ruff: E999 ruff-error-marker" in done.stdout
    assert "typecheck: error: wrong-type-marker" in done.stdout
    assert "lint] Error 1" in done.stderr
    assert "typecheck] Error 1" in done.stderr
    asked = _asked(tmp_path)
    assert sorted(asked) == ["mkdocs", "mypy", "mypy", "ruff"]  # every check ran, no suite


def test_a_failing_docs_build_alone_fails_make_test(tmp_path: Path) -> None:
    done = _make_test(tmp_path, "mkdocs")
    assert done.returncode != 0
    assert "mkdocs: E999 mkdocs-error-marker" in done.stdout
    assert "docs] Error 1" in done.stderr
    assert "python" not in _asked(tmp_path)


def test_pytest_collecting_nothing_exit_5_fails_make_test(tmp_path: Path) -> None:
    done = _make_test(tmp_path, "python", code=5)
    assert done.returncode != 0
    assert "test] Error 5" in done.stderr
    assert _asked(tmp_path)[-1] == "python"


# .ci/run against a stand-in make: each call is written down; `lowest-deps` writes its pid,
# then fails or waits as told; `test` fails as told.
_MAKE = """#!/bin/bash
echo "$*" >> "$LOG"
case "$1" in
    lowest-deps)
        echo $$ > "$DIR/lowest.pid"
        echo "pip: lowest-install-marker"
        [ -e "$DIR/fail-lowest" ] && exit 2
        [ -e "$DIR/slow-lowest" ] && exec sleep 300
        exit 0;;
    test)
        for _ in $(seq 600); do [ -e "$DIR/lowest.pid" ] && break; sleep 0.1; done
        [ -e "$DIR/fail-test" ] && exit 2
        exit 0;;
esac
exit 0
"""


def _ci_run(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "make").write_text(_MAKE)
    (bin_dir / "make").chmod(0o755)
    for flag in flags:
        (tmp_path / flag).touch()
    env = {**_outside_make(), "LOG": str(tmp_path / "make.log"), "DIR": str(tmp_path),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", str(ROOT / ".ci" / "run")], env=env, capture_output=True,
                          text=True, check=False, timeout=300)


def _gone(pid: int) -> bool:
    for _ in range(100):  # a killed process is reaped by init soon after
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        subprocess.run(["sleep", "0.1"], check=True)
    os.kill(pid, signal.SIGKILL)
    return False


def test_ci_builds_the_lowest_venv_beside_make_test_then_runs_its_tests(tmp_path: Path) -> None:
    done = _ci_run(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    calls = (tmp_path / "make.log").read_text().splitlines()
    assert calls[0] == "deps"
    assert sorted(calls[1:3]) == ["lowest-deps", "test"]
    assert calls[3:] == ["test-lowest QUICK=1"]
    assert "lowest-install-marker" not in done.stdout  # its log is shown when it fails


def test_ci_fails_with_the_log_when_the_lowest_venv_fails(tmp_path: Path) -> None:
    done = _ci_run(tmp_path, "fail-lowest")
    assert done.returncode != 0
    assert "pip: lowest-install-marker" in done.stdout
    assert "ci: building the lowest-version venv failed (make lowest-deps: exit 2)" in done.stderr
    assert "test-lowest QUICK=1" not in (tmp_path / "make.log").read_text()


def test_ci_stops_the_lowest_venv_build_when_make_test_fails(tmp_path: Path) -> None:
    done = _ci_run(tmp_path, "fail-test", "slow-lowest")
    assert done.returncode == 2
    assert "test-lowest QUICK=1" not in (tmp_path / "make.log").read_text()
    assert _gone(int((tmp_path / "lowest.pid").read_text()))
