"""``python -m k3snet`` and the ``k3snet`` console script.

``k3snet --version`` answers before the CLI's modules are imported (they cost
~10x Python's own start-up; measured with
``python benchmarks/bench_cli.py``); everything else goes to :mod:`k3snet.cli`,
and the process then ends without Python's teardown (:func:`end`).
"""

import os
import sys

# Only what Python loaded before k3snet at module level (os, sys): a Ctrl-C while the
# rest loads (logging, contextlib, typing, k3snet's modules) is within main()'s handler.
# Not typing.TYPE_CHECKING, as in k3snet/__init__.py, nor `from __future__ import
# annotations`, which imports the __future__ module: the annotations naming Run are quoted.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from k3snet._argv import Run


def main() -> int:
    """Run the ``k3snet`` command (the process ends in :func:`end` once it is done).

    Every way out goes through :func:`end`, the quick ``--version`` and argparse's
    own exits (``--help``, a usage error) included: its flush is where a closed pipe
    or a full disk shows, and there it is an exit code, not a traceback or Python's
    "Exception ignored" with status 120.
    """
    _open_standard_streams()
    run: Run | None = None
    try:
        from k3snet._stdout import write_whole_streams  # noqa: PLC0415 - see the imports

        write_whole_streams()  # a pipe another holder of it made non-blocking loses nothing
        if sys.argv[1:] == ["--version"]:
            from k3snet._version import __version__  # noqa: PLC0415 - the whole point

            return end(_written(f"k3snet {__version__}\n"))
        from k3snet import _argv  # noqa: PLC0415 - imports nothing

        run = _argv.Run()  # what the command printed: read here if Ctrl-C escapes it
        # Ctrl-C comes most often while the CLI's modules load (~10x Python's start).
        from k3snet.cli import run_main  # noqa: PLC0415 - only when there is work

        code = run_main(None, run)
    except SystemExit as exc:  # argparse's --help and usage errors, SIGTERM's 143
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except KeyboardInterrupt:  # before the command's own handling: its code, 130
        _interrupted_early(sys.argv[1:], run)
        code = 130  # k3snet.cli.EXIT_INTERRUPTED (the module may be half loaded)
    return end(code)


def _interrupted_early(argv: list[str], run: "Run | None") -> None:
    """Say a Ctrl-C that came before the command's own handling (the CLI's modules
    loading, its arguments read), as that handling says one (``k3snet.cli``'s
    ``_report_stopped``): a line on stderr and, with ``--output json``, an ``error``
    document of type ``SIGINT``, unless the command printed its document already. It
    ended with exit 130 and nothing said, and a script reading stdout as one document
    got none. Reads only the tiny :mod:`k3snet._argv` (the CLI may be half loaded)."""
    from k3snet._argv import asks_json, common_after_command  # noqa: PLC0415

    given = common_after_command(argv)
    if given and given[0] == "agent":  # its log says its end (a JSON log: a stray line)
        return
    if run is not None and run.document_printed:
        return
    message = "stopped by SIGINT"
    try:
        print(f"k3snet: error: {message}", file=sys.stderr)
        if asks_json(given):
            import json  # noqa: PLC0415 - only here: --version must stay cheap

            if run is not None and run.document_begun:  # after one a signal cut
                sys.stdout.write("\n")  # on a line of its own, as the CLI's own
            sys.stdout.write(json.dumps({"format": 1, "kind": "error", "error": {  # JSON_FORMAT
                "type": "SIGINT", "message": message, "problems": []}},
                indent=2, sort_keys=True) + "\n")
    except (OSError, KeyboardInterrupt):
        pass


_STANDARD = ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w"))


def _open_standard_streams() -> None:
    """Give a closed standard input, output or error ``/dev/null``, as a daemon does.

    Started with one closed (``k3snet apply ... <&-``, a supervisor), Python's
    ``sys.stdin`` (``stdout``, ``stderr``) is ``None``: asking whether it is a terminal
    was an internal error, then a traceback at the end. And the descriptor would go to
    the next file k3snet opens (a lock or state file), which a tool k3snet runs would
    then write its output into. Closed, it read nothing and took nothing: so does
    ``/dev/null``.
    """
    for fd, name, mode in _STANDARD:
        try:
            os.fstat(fd)
        except OSError:  # closed (EBADF): the lowest free descriptor, so this one
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:  # as Python makes stderr: line by line, any text
            stream = open(fd, mode, closefd=False, buffering=1 if fd == 2 else -1,  # noqa: SIM115
                          errors="backslashreplace" if fd == 2 else "strict")
            setattr(sys, name, stream)


def _written(text: str) -> int:
    """Write ``text`` on stdout: 0, else the code a failed write ends with (see :func:`end`)."""
    try:
        sys.stdout.write(text)
    except OSError as exc:  # unbuffered (PYTHONUNBUFFERED): the write itself fails
        return _failed_write(exc, 0)
    return 0


def end(code: int) -> int:
    """Flush the output and the log, then leave the process at once with ``code``.

    A cold ``k3snet apply`` of 10 000 objects holds tens of thousands of values
    when it is done, and Python's teardown frees them one by one: ~160 ms, a
    sixth of the whole run (docs/performance.md, "The end of a cold process").
    By then every file, lock and namespace thread has been closed by the command
    itself. A closed pipe on stdout ends as the CLI ends it (exit 141).
    ``K3SNET_FULL_EXIT=1`` keeps Python's own exit (for a tool that writes its
    data at exit, such as coverage); then this returns ``code``. ``0``, ``off``, ``no``
    and ``false`` leave it off, as with the other switches.
    """
    from k3snet._env import env_switch  # noqa: PLC0415 - see the imports

    try:
        sys.stdout.flush()
    except OSError as exc:
        code = _failed_write(exc, code)
    if env_switch("K3SNET_FULL_EXIT", default=False):
        return code
    try:  # noqa: SIM105 - contextlib may not be loaded (see the imports)
        sys.stderr.flush()
    except OSError:
        pass
    logging = sys.modules.get("logging")
    if logging is not None:  # never imported (a Ctrl-C as it loaded): nothing logged
        logging.shutdown()
    os._exit(code)


def _failed_write(exc: OSError, code: int) -> int:
    """The exit code once writing stdout failed with ``exc``: the command's own when it
    failed, was refused or stopped (:data:`k3snet.cli.FAILURE_CODES`: a RollbackError's
    5, "the node may be half-changed", must not read as 141 or 1), else 141 for a closed
    pipe (the reader went away), else 1, an error, said on stderr unless the command
    failed already (it said why: a full disk it hit while printing). What was not
    written is dropped, so Python's own exit does not try it again."""
    import contextlib  # noqa: PLC0415 - see the imports

    from k3snet.cli import EXIT_BROKEN_PIPE, EXIT_ERROR, FAILURE_CODES  # noqa: PLC0415

    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if code in FAILURE_CODES:  # it said why on stderr
        return code
    if isinstance(exc, BrokenPipeError):
        return EXIT_BROKEN_PIPE
    if code != EXIT_ERROR:
        with contextlib.suppress(OSError):
            print(f"k3snet: error: cannot write the output: {exc.strerror or exc}",
                  file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
