"""The I/O seam of the iptables backend: every process it runs, behind one small interface.

The backend reads only through ``iptables-save`` and writes only through
``iptables-restore --noflush`` runs (or libiptc commits): :class:`Kernel` is that
interface, and the backend does no other I/O. :class:`Processes` runs the real
tools (through ``ip netns exec`` into the namespace) and :class:`Libiptc` writes
through python-iptables instead; a test replaces either with a fake that serves
recorded ``iptables-save`` text (as knftables' ``execer`` seam is replaced).

Errors are translated here, at the boundary (:func:`~k3snet.backends.kit.translate_errors`):
a process that cannot be started, or that was refused for lack of privilege,
becomes a :class:`~k3snet.errors.BackendError` naming ``CAP_NET_ADMIN``; a table
the kernel refused becomes :class:`RunFailedError`, with the rule at fault when
the tool said which.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Literal, NoReturn, Protocol

from k3snet.backends.iptables.table import Op, restore_lines
from k3snet.backends.kit import translate_errors
from k3snet.errors import BackendError, BackendUnavailableError
from k3snet.render.iptables.rules import Line, tokenize

if TYPE_CHECKING:
    from k3snet.backends.iptables.libiptc import LibiptcDriver

__all__ = ["CAPABILITY", "Flavour", "Kernel", "Libiptc", "Processes", "RestoreRun",
           "RunFailedError", "tool_name"]

Flavour = Literal["nft", "legacy"]
"""Which iptables: ``nft`` (nf_tables through the xt layer) or ``legacy`` (x_tables)."""

CAPABILITY = "CAP_NET_ADMIN"
WAIT_SECONDS = 10
"""``--wait``: how long a restore run waits for the xtables lock."""
_PIPE_SIZE = 1 << 20
_LINE_NUMBER = re.compile(r"line:? (\d+)")
_NOT_PERMITTED = re.compile(r"permission denied|operation not permitted|must be root",
                            re.IGNORECASE)


def tool_name(family: int, mode: Flavour, kind: str) -> str:
    """``iptables-nft-save``, ``ip6tables-legacy-restore``, ...: the tool for one job."""
    return f"{'ip' if family == 4 else 'ip6'}tables-{mode}-{kind}"


class RunFailedError(BackendError):
    """The kernel (or the tool) refused a table; ``line`` is the rule at fault, if known."""

    def __init__(self, message: str, line: Line | None) -> None:
        self.line = line
        super().__init__(message)


class RestoreRun(Protocol):
    """Protocol: one transaction on one table, fed line by line (``iptables-restore`` input).

    Nothing is applied before :meth:`commit`; :meth:`wait` raises
    :class:`RunFailedError` when the table was refused; :meth:`abort` (before
    ``commit``) applies nothing.
    """

    def send(self, lines: list[str]) -> None:
        """Queue lines (no newlines, no table line, no ``COMMIT``)."""

    def commit(self) -> None:
        """Send ``COMMIT``: the table is applied, or refused."""

    def wait(self) -> None:
        """Wait for the outcome of :meth:`commit`."""

    def abort(self) -> None:
        """Give up before :meth:`commit`: nothing of the table is applied."""


class Kernel(Protocol):
    """Protocol: everything the iptables backend asks of the system.

    ``streams`` says whether :meth:`restore` runs can be fed while the edit is
    computed (``iptables-restore``); otherwise the backend computes every edit
    first and hands each table's ops to :meth:`commit_ops` (libiptc).
    """

    streams: bool

    @property
    def where(self) -> str:
        """The namespace, for messages (``network namespace 'x'``)."""

    def save(self, family: int, mode: Flavour) -> str | None:
        """The ``iptables-save`` text of one family (``None``: that tool is not installed)."""

    def version(self) -> str:
        """What ``iptables --version`` prints (empty when unknown)."""

    def restore(self, family: int, mode: Flavour, table: str) -> RestoreRun:
        """Start a transaction on one table (see :class:`RestoreRun`)."""

    def commit_ops(self, family: int, mode: Flavour, table: str, ops: Sequence[Op], *,
                   test: bool = False) -> None:
        """Apply ``ops`` to one table in one transaction (``test``: only check them)."""

    def close(self) -> None:
        """Release what the kernel access holds."""


class Processes:
    """:class:`Kernel` through the iptables tools, run in the namespace with ``ip netns exec``."""

    streams = True

    def __init__(self, netns: str | None, timeout: float = 30.0) -> None:
        self.netns = netns
        self.timeout = timeout

    @property
    def where(self) -> str:
        """The namespace, for messages."""
        return f"network namespace {self.netns!r}" if self.netns else "the current namespace"

    def tool(self, family: int, mode: Flavour, kind: str) -> str:
        """The tool's name, if it is installed (else BackendUnavailableError)."""
        name = tool_name(family, mode, kind)
        if shutil.which(name) is None:
            raise BackendUnavailableError(f"{name} not found on PATH (install iptables)")
        return name

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as run in the namespace."""
        return [*(("ip", "netns", "exec", self.netns) if self.netns else ()), *argv]

    def save(self, family: int, mode: Flavour) -> str | None:
        """Run ``iptables-save`` of one flavour and family (``None``: not installed)."""
        name = tool_name(family, mode, "save")
        if shutil.which(name) is None:
            return None
        result = self.run([name])
        if result.returncode != 0:
            self._refused(f"run {name} in {self.where}", result.stderr, result.returncode)
        return result.stdout

    def version(self) -> str:
        """``iptables --version`` (empty when there is no ``iptables``)."""
        if shutil.which("iptables") is None:
            return ""
        result = self.run(["iptables", "--version"])
        return result.stdout if result.returncode == 0 else ""

    def restore(self, family: int, mode: Flavour, table: str, *,
                test: bool = False) -> RestoreProcess:
        """Start ``iptables-restore --noflush`` for one table (``test``: ``--test``)."""
        argv = [self.tool(family, mode, "restore"), "--noflush", f"--wait={WAIT_SECONDS}"]
        if test:
            argv.append("--test")
        return RestoreProcess(self, self.argv(argv), table)

    def commit_ops(self, family: int, mode: Flavour, table: str, ops: Sequence[Op], *,
                   test: bool = False) -> None:
        """One restore run holding ``ops``."""
        if not ops:
            return
        run = self.restore(family, mode, table, test=test)
        run.send(restore_lines(ops))
        run.commit()
        run.wait()

    def run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """Run a command in the namespace and capture its output."""
        with translate_errors(f"run {argv[0]} in {self.where}",
                              errors=(OSError, subprocess.TimeoutExpired), capability=CAPABILITY):
            result = subprocess.run(self.argv(argv), capture_output=True, text=True,
                                    timeout=self.timeout, check=False)
        if self.netns and result.returncode != 0 and "network namespace" in result.stderr:
            raise BackendError(f"{self.where} is not usable: {result.stderr.strip()}")
        return result

    def close(self) -> None:
        """Nothing to release: each run is its own process."""

    @staticmethod
    def _refused(doing: str, stderr: str, returncode: int) -> NoReturn:
        """Raise the error for a tool that failed, naming the capability when it was denied."""
        detail = " ".join(stderr.split()) or f"exit status {returncode}"
        with translate_errors(doing, capability=CAPABILITY):
            if _NOT_PERMITTED.search(stderr):
                raise PermissionError(errno.EPERM, detail)
            raise OSError(detail)


class RestoreProcess:
    """One ``iptables-restore --noflush`` process for one table, fed as lines come.

    Nothing is applied before :meth:`commit` sends ``COMMIT``; :meth:`abort`
    kills the process before that. Every line sent is kept, so an error's line
    number points back at the rule.
    """

    def __init__(self, kernel: Processes, argv: list[str], table: str) -> None:
        self._kernel = kernel
        self._timeout = kernel.timeout
        self._argv0 = argv[0]
        self.sent: list[str] = [f"*{table}"]
        self._broken = False
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in wait()
        try:
            # stderr to a file: the process can never block on a full pipe while we write.
            with translate_errors(f"run {argv[0]} in {kernel.where}", capability=CAPABILITY):
                self._process = subprocess.Popen(
                    argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)
        except BackendError:
            self._stderr.close()
            raise
        # A pipe big enough for the whole input (~90 bytes a rule): the writes never wait
        # for the process to start up (a few ms) or to catch up. Best effort.
        with contextlib.suppress(OSError, AttributeError):
            assert self._process.stdin is not None
            fcntl.fcntl(self._process.stdin.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        self._write(self.sent)

    def send(self, lines: list[str]) -> None:
        """Queue rules (the process reads them while we go on)."""
        self.sent += lines
        self._write(lines)

    def commit(self) -> None:
        """Send ``COMMIT`` and close the input: the table is applied, or refused."""
        self.sent.append("COMMIT")
        self._write(["COMMIT"])
        stdin = self._process.stdin
        assert stdin is not None
        with contextlib.suppress(OSError):  # it exited already: wait() says why
            stdin.close()

    def wait(self) -> None:
        """Wait for the process; raise :class:`RunFailedError` if it refused the table."""
        # Popen.wait(timeout) polls with sleeps of up to 50 ms; the end of the (silent)
        # stdout pipe says the process exited, to the microsecond.
        stdout = self._process.stdout
        assert stdout is not None
        deadline = time.monotonic() + self._timeout
        while True:
            remaining = deadline - time.monotonic()
            ready = select.select([stdout], [], [], max(remaining, 0))[0] if remaining > 0 else []
            if not ready:
                self.abort()
                raise BackendError(f"{self._argv0} did not finish within {self._timeout} s in "
                                   f"{self._kernel.where}")
            if not os.read(stdout.fileno(), 1 << 16):
                break
        returncode = self._process.wait()
        stdout.close()
        self._stderr.seek(0)
        stderr = self._stderr.read().decode(errors="replace")
        self._stderr.close()
        if returncode == 0:
            return
        kernel = self._kernel
        if kernel.netns and "network namespace" in stderr:
            raise BackendError(f"{kernel.where} is not usable: {stderr.strip()}")
        if _NOT_PERMITTED.search(stderr):
            kernel._refused(f"run {self._argv0} in {kernel.where}", stderr, returncode)
        message = " ".join(stderr.split()) or f"exit status {returncode}"
        match = _LINE_NUMBER.search(stderr)
        line = None
        if match and 0 < int(match.group(1)) <= len(self.sent):
            line = tokenize(self.sent[int(match.group(1)) - 1])
        raise RunFailedError(message, line)

    def abort(self) -> None:
        """Kill the process before it commits anything."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        for pipe in (self._process.stdin, self._process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self._stderr.close()

    def _write(self, lines: list[str]) -> None:
        if self._broken or not lines:
            return
        stdin = self._process.stdin
        assert stdin is not None
        try:
            stdin.write(("\n".join(lines) + "\n").encode())
            stdin.flush()
        except OSError:  # it stopped reading (a refused line): wait() tells why
            self._broken = True


class Libiptc(Processes):
    """:class:`Kernel` that writes through libiptc (python-iptables), legacy tables only.

    It reads through ``iptables-save`` like :class:`Processes` (one parser, one
    drift detector); each table's ops are one libiptc commit, made from a thread
    inside the namespace (see :mod:`k3snet.backends.iptables.libiptc`).
    """

    streams = False

    def __init__(self, netns: str | None, timeout: float = 30.0) -> None:
        super().__init__(netns, timeout)
        from k3snet.backends.iptables.libiptc import LibiptcDriver  # noqa: PLC0415 - optional

        self._driver: LibiptcDriver = LibiptcDriver(netns)

    def commit_ops(self, family: int, mode: Flavour, table: str, ops: Sequence[Op], *,
                   test: bool = False) -> None:
        """One libiptc commit holding ``ops`` (``test``: built and thrown away)."""
        from k3snet.backends.iptables.libiptc import OpFailedError  # noqa: PLC0415 - optional

        if not ops:
            return
        try:
            with translate_errors(f"use libiptc in {self.where}", capability=CAPABILITY):
                self._driver.run(family, table, ops, commit=not test)
        except OpFailedError as exc:
            if _NOT_PERMITTED.search(str(exc)):
                self._refused(f"commit the {table} table with libiptc in {self.where}",
                              str(exc), 1)
            raise RunFailedError(f"libiptc: {exc}", exc.line) from exc

    def close(self) -> None:
        """Stop the namespace worker thread."""
        self._driver.close()
