"""``k3snet ARGS`` run by :func:`k3snet.cli.main` in the test's own process, answered as
``subprocess.run(..., capture_output=True, text=True)`` answers it.

For tests whose subject is what a command does to a node (the kernel's listings after
it) and what it says, not the process: each ``python -m k3snet`` costs a new interpreter
and k3snet's imports (about half a second of CPU). A process's own behaviour (exit
codes, signals, streams, the environment) stays with the tests that run one
(tests/cli/test_exit.py, tests/cli/test_environment.py).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from collections.abc import Iterator

from k3snet.cli import main


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def k3snet(*args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    """``k3snet ARGS`` with ``environ`` added to the environment: its exit code (an
    argparse exit's too), stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with _environment(environ), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse: --help, a usage error
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(["k3snet", *args], code, out.getvalue(), err.getvalue())
