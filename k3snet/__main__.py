"""``python -m k3snet`` and the ``k3snet`` console script.

``k3snet --version`` answers before the CLI's modules are imported (they cost
~10x Python's own start-up; measured with
``python benchmarks/bench_cli.py``); everything else goes to :mod:`k3snet.cli`,
and the process then ends without Python's teardown (:func:`end`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys


def main() -> int:
    """Run the ``k3snet`` command (the process ends in :func:`end` once it is done)."""
    if sys.argv[1:] == ["--version"]:
        from k3snet._version import __version__  # noqa: PLC0415 - the whole point

        print(f"k3snet {__version__}")
        return 0
    from k3snet.cli import main as cli_main  # noqa: PLC0415 - only when there is work

    return end(cli_main())


def end(code: int) -> int:
    """Flush the output and the log, then leave the process at once with ``code``.

    A cold ``k3snet apply`` of 10 000 objects holds tens of thousands of values
    when it is done, and Python's teardown frees them one by one: ~160 ms, a
    sixth of the whole run (docs/performance.md, "The end of a cold process").
    By then every file, lock and namespace thread has been closed by the command
    itself. A closed pipe on stdout ends as the CLI ends it (exit 141).
    ``K3SNET_FULL_EXIT=1`` keeps Python's own exit (for a tool that writes its
    data at exit, such as coverage); then this returns ``code``.
    """
    if os.environ.get("K3SNET_FULL_EXIT"):
        return code
    from k3snet.cli import EXIT_BROKEN_PIPE  # noqa: PLC0415 - loaded by the command already

    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = EXIT_BROKEN_PIPE  # the reader went away
    except OSError:
        code = code or 1
    with contextlib.suppress(OSError):
        sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
