"""Every command's exit code, run as a script runs it (a process of its own), is the one
the table of docs/cli.md ("Exit codes") gives for the case: a usage error, a run without
root, a backend's library missing.

Each case names the code and words its row of the table holds for it: a code a command
returns that the table does not say for that case (``doctor`` without root, 4, said
only as "a rule it cannot evaluate decides") fails here. Without root the commands run
as ``nobody`` (``setpriv``) in a namespace of their own; the library missing is the
``nftables`` Python bindings, shadowed by a module that cannot be imported.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet.cli import EXIT_CONFLICTS, EXIT_ERROR, EXIT_OK, EXIT_USAGE
from k3snet.lab.netns import temporary_netns

_HOME = Path(__file__).resolve().parents[2]
SPEC = str(_HOME / "examples" / "seed.yaml")

COMMANDS: dict[str, tuple[str, ...]] = {
    "plan": ("plan", "-f", SPEC),
    "apply": ("apply", "-f", SPEC, "--auto-approve"),
    "destroy": ("destroy", "--auto-approve"),
    "observe": ("observe",),
    "agent": ("agent", "-f", SPEC, "--once"),
    "validate": ("validate", "-f", SPEC),
    "explain": ("explain", "destinations.cidr"),
    "doctor": ("doctor", "--from", "10.42.0.10", "--to", "192.168.2.10:5432"),
    "completion": ("completion", "bash"),
}
"""Each command as a script would run it (``render`` and ``connectivity``, which read
no node, are in the usage cases)."""


def _table() -> dict[int, str]:
    """The rows of docs/cli.md's exit code table: code -> its meaning."""
    text = (_HOME / "docs" / "cli.md").read_text(encoding="utf-8")
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    return {int(code): meaning for code, meaning in
            re.findall(r"^\| (\d+) \| (.*) \|$", section, re.MULTILINE)}


def _documented(code: int, *words: str) -> None:
    row = _table()[code]
    assert all(word in row for word in words), (code, words, row)


def _said_of(command: str, code: int, words: str) -> None:
    """Row ``code`` names ``command`` (in backquotes: ``agent --once`` too) in the clause
    ending in ``words`` (from the last ``. ``, ``; `` or ``, and `` before them): a row
    that still held the words but no longer named the command passed the table's check."""
    row = _table()[code]
    clauses = [re.split(r"\. |; |, and ", row[:found.start()])[-1]
               for found in re.finditer(re.escape(words), row)]
    assert any(f"`{command}" in clause for clause in clauses), (command, code, words, row)


@pytest.mark.parametrize("command", [*COMMANDS, "render", "connectivity"])
def test_a_usage_error_exits_64_for_every_command(command: str) -> None:
    _documented(EXIT_USAGE, "usage error", "never 2")
    done = subprocess.run([sys.executable, "-m", "k3snet.cli", command, "--no-such-option"],
                          capture_output=True, check=False, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(_HOME)})
    assert done.returncode == EXIT_USAGE, done.stderr


UNPRIVILEGED = {
    "plan": (EXIT_ERROR, "run without root"),
    "apply": (EXIT_ERROR, "run without root"),
    "destroy": (EXIT_ERROR, "run without root"),
    "observe": (EXIT_ERROR, "run without root"),
    "agent": (EXIT_ERROR, "run without root"),
    "doctor": (EXIT_CONFLICTS, "run without root"),
    "validate": (EXIT_OK, "need no root"),
    "explain": (EXIT_OK, "need no root"),
    "completion": (EXIT_OK, "need no root"),
}
"""What each command exits with run without root (no ``CAP_NET_ADMIN``), and the words
of that code's row saying so."""

MISSING_LIBRARY = {
    "plan": (EXIT_ERROR, "library missing"),
    "apply": (EXIT_ERROR, "library missing"),
    "observe": (EXIT_ERROR, "library missing"),
    "agent": (EXIT_ERROR, "library missing"),
    "destroy": (EXIT_OK, "library missing"),  # that backend is not looked through: a warning
    "validate": (EXIT_OK, "need no root"),
}
"""What each command exits with the nftables backend's Python bindings missing."""


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root: a namespace, and a command run as another user")
    with temporary_netns("exits") as ns:
        yield ns


def _run(ns: str, argv: tuple[str, ...], *, user: str | None = None,
         pythonpath: str = str(_HOME)) -> subprocess.CompletedProcess[str]:
    """``k3snet ARGV`` in namespace ``ns``, as ``user`` (``setpriv``) or root, on state
    and lock directories of its own."""
    as_user: list[str] = []
    if user is not None:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("needs setpriv")
        uid = pwd.getpwnam(user).pw_uid
        as_user = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    with tempfile.TemporaryDirectory(prefix="k3snet-exits-") as base:
        Path(base).chmod(0o777)  # the user makes its own directories in it
        return subprocess.run(
            ["ip", "netns", "exec", ns, *as_user, sys.executable, "-m", "k3snet.cli", *argv],
            capture_output=True, text=True, check=False, timeout=120, cwd="/",
            env={**os.environ, "PYTHONPATH": pythonpath, "K3SNET_STATE_DIR": f"{base}/state",
                 "K3SNET_LOCK_DIR": f"{base}/locks"})


@pytest.mark.kernel
@pytest.mark.parametrize("command", list(UNPRIVILEGED))
def test_a_command_run_without_root_exits_with_its_documented_code(
        namespace: str, command: str) -> None:
    code, words = UNPRIVILEGED[command]
    _said_of(command, code, words)
    done = _run(namespace, COMMANDS[command], user="nobody")
    assert done.returncode == code, done.stderr


@pytest.mark.kernel
@pytest.mark.parametrize("command", list(MISSING_LIBRARY))
def test_a_command_missing_a_backend_library_exits_with_its_documented_code(
        namespace: str, command: str, tmp_path: Path) -> None:
    code, words = MISSING_LIBRARY[command]
    _said_of(command, code, words)
    (tmp_path / "nftables.py").write_text('raise ImportError("no nftables bindings")\n')
    done = _run(namespace, COMMANDS[command], pythonpath=f"{tmp_path}{os.pathsep}{_HOME}")
    assert done.returncode == code, done.stderr
    if command != "validate":  # said: an error on stderr, destroy's warning on stdout
        assert "'nftables' Python bindings" in done.stdout + done.stderr, done.stderr


def test_the_top_level_help_says_doctor_s_3_and_4() -> None:
    """``k3snet --help``'s exit codes said 3 "still running (connectivity)" and 4
    "conflicts" alone: a script reading it took a doctor's 4 without root, "cannot tell",
    for conflicts. Each code's words there name the doctor's meaning too."""
    done = subprocess.run([sys.executable, "-m", "k3snet.cli", "--help"], capture_output=True,
                          text=True, check=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(_HOME), "COLUMNS": "1000"})
    (codes,) = re.findall(r"Exit codes: (.*)", done.stdout)
    assert re.search(r"\b3 [^,]*blocked \(doctor\)", codes), codes
    assert re.search(r"\b4 [^,]*cannot tell \(doctor: also run without root\)", codes), codes
