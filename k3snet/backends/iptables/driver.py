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
import functools
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Literal, NoReturn, Protocol

from k3snet._regex import lazy_pattern
from k3snet.backends.iptables.save import stopped_mark, unread_mark
from k3snet.backends.iptables.table import Op, restore_lines
from k3snet.backends.kit import committing, translate_errors, undo_spares_children
from k3snet.backends.lock import inherited_locks
from k3snet.backends.netns import netns_where, shown_command
from k3snet.errors import BackendError, BackendUnavailableError
from k3snet.render.iptables.rules import TABLES, Line, tokenize

if TYPE_CHECKING:
    from k3snet.backends.iptables.libiptc import LibiptcDriver

__all__ = ["CAPABILITY", "Flavour", "Kernel", "Libiptc", "Processes",
           "RestoreRun", "RunFailedError", "SaveStoppedError", "StartedSave", "tool_name"]

Flavour = Literal["nft", "legacy"]
"""Which iptables: ``nft`` (nf_tables through the xt layer) or ``legacy`` (x_tables)."""

CAPABILITY = "CAP_NET_ADMIN"
WAIT_SECONDS = 10
"""``--wait``: how long a restore run waits for the xtables lock."""
_TEXT_ERRORS = "surrogateescape"
"""How the tools' text is decoded and encoded: a rule's comment is bytes to the kernel, and
an admin's need not be UTF-8 (``B\\xfcro``). Each byte that is not reads as a lone
surrogate and is written back as that byte, so a rule read can be deleted by its text
(``-D``) and kept exactly (tests/safety/test_foreign_bytes.py)."""
_PIPE_SIZE = 1 << 20
_LINE_NUMBER = lazy_pattern(r"line:? (\d+)")
_NOT_PERMITTED = lazy_pattern(r"permission denied|operation not permitted|must be root",
                            re.IGNORECASE)


def tool_name(family: int, mode: Flavour, kind: str) -> str:
    """``iptables-nft-save``, ``ip6tables-legacy-restore``, ...: the tool for one job."""
    return f"{'ip' if family == 4 else 'ip6'}tables-{mode}-{kind}"


class SaveStoppedError(BackendError):
    """An ``iptables-save`` that failed after it had begun printing a table: the flavour is
    in use, and a rule of that table is one the tool cannot print.

    iptables-nft-save 1.8.9 and later stop so at a rule written with ``nft`` (or by a
    newer iptables) whose expressions the xt layer reads but cannot decode (``meta mark
    set 3``: "Parsing nftables rule failed", exit status 3), with the tables and rules
    before it printed. Never "this flavour is absent": mode ``auto`` picked
    iptables-legacy over it, and wrote k3snet's rules where no packet of the node's
    iptables-nft rules is decided. Raised for the tables k3snet writes (``filter``,
    ``nat``) alone: a stop in another is read around (:meth:`Processes.save`).
    ``table``: the table it stopped in.
    """

    def __init__(self, message: str, *, table: str | None = None) -> None:
        self.table = table
        super().__init__(message)


def save_stopped(name: str, family: int, stdout: str, stderr: str, *,
                 returncode: int, where: str, netns: str | None) -> SaveStoppedError | None:
    """The error of a ``-save`` run ``name`` that failed after printing part of a table
    (``*TABLE``: the last one it began is where it stopped); ``None`` when it printed none.
    The command it names runs where the save ran, the namespace ``netns`` names
    (:func:`~k3snet.backends.netns.shown_command`)."""
    tables = _TABLE_HEADER.findall(stdout)
    if not tables:
        return None
    table = tables[-1]
    detail = " ".join(stderr.split()) or f"exit status {returncode}"
    if "-nft-" in name:
        shown = shown_command(["nft", "-a", "list", "table", "ip" if family == 4 else "ip6",
                               table], netns)
        nft = f"one written with nft (or by a newer iptables): `{shown}` shows it"
    else:
        shown = shown_command([name.replace("-save", ""), "-t", table, "-S"], netns)
        nft = f"`{shown}` may name it"
    return SaveStoppedError(
        f"{name} stopped in IPv{family} {table} in {where} ({detail}): it cannot print a "
        f"rule there, {nft}; k3snet reads nothing of IPv{family} through this iptables, "
        "and writes nothing there, until that rule is removed or moved to a table of "
        "another name (nft's own tables are read by the nftables backend)", table=table)


_TABLE_HEADER = lazy_pattern(r"^\*(\S+)$", re.MULTILINE)
_APART = ("raw", "mangle", "filter", "nat", "security")
"""The tables of a family read one by one when its save stopped in one k3snet does not
write (:meth:`Processes.save_apart`): iptables-nft-save's, in its order."""


class RunFailedError(BackendError):
    """The kernel (or the tool) refused a table; ``line`` is the rule at fault, if known.

    ``table`` is the table refused (``None``: not known) and ``committed`` the
    tables of the same run committed before it (``None``: not known, e.g. the
    process was killed after a ``COMMIT`` was sent).
    """

    def __init__(self, message: str, line: Line | None, *, table: str | None = None,
                 committed: tuple[str, ...] | None = ()) -> None:
        self.line = line
        self.table = table
        self.committed = committed
        super().__init__(message)


class RestoreRun(Protocol):
    """Protocol: one ``iptables-restore`` process for one family, fed table after table.

    Each table is opened with :meth:`table`, fed with :meth:`send` and ended
    with :meth:`commit`; the tool commits each table as it reads its ``COMMIT``
    line (one kernel transaction per table: x_tables and iptables-nft alike),
    and stops at the first refusal. :meth:`wait` raises :class:`RunFailedError`
    naming the refused table and the tables committed before it; :meth:`abort`
    gives up: the open table is not applied, and it returns the tables that were.
    """

    def table(self, name: str) -> None:
        """Open the next table (``*name``)."""

    def send(self, lines: list[str]) -> None:
        """Queue lines of the open table (no newlines, no table line, no ``COMMIT``)."""

    def commit(self) -> None:
        """Send the open table's ``COMMIT``: it is applied, or refused, as the tool reads it."""

    def wait(self) -> None:
        """End the input and wait for the outcome of every :meth:`commit`."""

    def abort(self) -> tuple[str, ...] | None:
        """Give up: the open table is not applied; the tables that were (``None``: unknown)."""


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

    def restore(self, family: int, mode: Flavour) -> RestoreRun:
        """Start one restore run for one family's tables (see :class:`RestoreRun`)."""

    def commit_ops(self, family: int, mode: Flavour, table: str, ops: Sequence[Op], *,
                   test: bool = False) -> None:
        """Apply ``ops`` to one table in one transaction (``test``: only check them),
        calling :func:`~k3snet.backends.kit.committing` right before the commit."""

    def close(self) -> None:
        """Release what the kernel access holds."""


class Processes:
    """:class:`Kernel` through the iptables tools, run in the namespace with ``ip netns exec``."""

    streams = True

    def __init__(self, netns: str | None, timeout: float = 30.0) -> None:
        self.netns = netns
        self.timeout = timeout

    @functools.cached_property
    def where(self) -> str:
        """The namespace, for messages: named as the commands they show name it
        (:func:`~k3snet.backends.netns.netns_where`), so ``ip netns exec NS k3snet ...``
        without ``--netns`` reads ``network namespace 'NS'`` too, not "the current
        namespace" beside a command that runs in ``NS``."""
        return netns_where(self.netns, unnamed="the current namespace")

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
            stopped = save_stopped(name, family, result.stdout, result.stderr,
                                   returncode=result.returncode, where=self.where,
                                   netns=self.netns)
            if stopped is not None:
                return self.save_apart(name, family, stopped)
            self._refused(f"run {name} in {self.where}", result.stderr, result.returncode)
        return result.stdout

    def save_apart(self, name: str, family: int, stopped: SaveStoppedError) -> str:
        """The save of a family whose save ``name`` ``stopped`` in a table: each table read
        alone (``NAME -t TABLE``), the one the tool cannot print marked so
        (:func:`~k3snet.backends.iptables.save.stopped_mark`: ``hidden`` ``"stopped"``, a
        warning); ``stopped`` (or the stop of a table read alone) is raised when it is a
        table k3snet writes (``filter``, ``nat``).

        iptables-nft-save prints ``mangle`` first, and a rule of it written with ``nft``
        that it cannot decode (``meta mark set 3``) stopped the save of every table
        after it: k3snet refused to read or write the node, every agent pass failed,
        for a table it writes nothing in. Asked for one table, it decodes that one's
        rules alone."""
        if stopped.table in TABLES:
            raise stopped
        parts: list[str] = []
        for table in self._apart_tables(name, family, stopped):
            result = self.run([name, "-t", table])
            if result.returncode == 0:
                parts.append(result.stdout)
                continue
            again = save_stopped(name, family, result.stdout, result.stderr,
                                 returncode=result.returncode, where=self.where,
                                 netns=self.netns)
            if table in TABLES:
                if again is not None:
                    raise again
                self._refused(f"run {name} -t {table} in {self.where}", result.stderr,
                              result.returncode)
            detail = result.stderr or f"exit status {result.returncode}"
            # Nothing of it printed is no "not there": asked for a table it does not
            # hold, iptables-nft-save prints its built-in chains (exit status 0). It
            # was left out of the read without a word, whatever the tool said.
            parts.append(stopped_mark(table, detail) if again is not None
                         else unread_mark(table, detail))
        return "".join(parts)

    def _apart_tables(self, name: str, family: int, stopped: SaveStoppedError) -> tuple[str, ...]:
        """The tables :meth:`save_apart` may ask the tool ``name`` for, one by one.

        iptables-nft-save asked for a table nf_tables does not hold prints its built-in
        chains and creates nothing: every one of :data:`_APART`. iptables-legacy-save
        asked for one (``-t TABLE``) has x_tables create it in the namespace (the
        ``iptable_TABLE`` module's table, with its hooks registered: a legacy ``nat``
        beside iptables-nft's, a ``raw`` every packet then crosses): a read that writes.
        It is asked only for the tables the namespace holds, the ones its own save of
        the family iterates (``/proc/net/ip_tables_names``); when they cannot be read,
        ``stopped`` is raised."""
        if "-nft-" in name:
            return _APART
        if "-legacy-" not in name:
            raise stopped
        names = f"/proc/net/{'ip' if family == 4 else 'ip6'}_tables_names"
        result = self.run(["cat", names])
        if result.returncode != 0:
            raise stopped
        held = set(result.stdout.split())
        return tuple(table for table in _APART if table in held)

    def list_chain(self, family: int, mode: Flavour, table: str, chain: str) -> str | None:
        """``iptables -t TABLE -S CHAIN``: the rules of one chain as ``iptables-save`` writes
        them (``-A CHAIN ...`` lines, after its ``-P`` line); ``None`` when the tool is not
        installed or refuses (a table it cannot read): the caller reads a whole save then.

        The read-back of a jump just placed needs the built-in chain alone: a save of the
        family, as it read before, had iptables-nft translate every rule of every table
        (1 000 owned NAT rules: ~7 ms of CPU against ~1 ms for the chain)."""
        name = f"{'ip' if family == 4 else 'ip6'}tables-{mode}"
        if shutil.which(name) is None:
            return None
        result = self.run([name, "-t", table, "-S", chain])
        return result.stdout if result.returncode == 0 else None

    def start_save(self, family: int, mode: Flavour) -> StartedSave:
        """:meth:`save`, its process started now and not waited for (see :class:`StartedSave`)."""
        name = tool_name(family, mode, "save")
        if shutil.which(name) is None:
            return StartedSave(self, name, None)
        with translate_errors(f"run {name} in {self.where}", capability=CAPABILITY
                              ), undo_spares_children():
            process = subprocess.Popen(self.argv([name]), stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, errors=_TEXT_ERRORS)
        return StartedSave(self, name, process)

    def version(self) -> str:
        """``iptables --version`` (empty when there is no ``iptables``)."""
        if shutil.which("iptables") is None:
            return ""
        result = self.run(["iptables", "--version"])
        return result.stdout if result.returncode == 0 else ""

    def restore(self, family: int, mode: Flavour, *, test: bool = False) -> RestoreProcess:
        """Start ``iptables-restore --noflush`` for one family (``test``: ``--test``)."""
        argv = [self.tool(family, mode, "restore"), "--noflush", f"--wait={WAIT_SECONDS}"]
        if test:
            argv.append("--test")
        return RestoreProcess(self, self.argv(argv), tool=argv[0])

    def commit_ops(self, family: int, mode: Flavour, table: str, ops: Sequence[Op], *,
                   test: bool = False) -> None:
        """One restore run holding ``ops``; its ``COMMIT`` marks the commit
        (:func:`~k3snet.backends.kit.committing`: a signal after it waits for the end of the
        caller's :func:`~k3snet.backends.kit.held_after_commit` block), as libiptc's does."""
        if not ops:
            return
        run = self.restore(family, mode, test=test)
        try:
            run.table(table)
            run.send(restore_lines(ops))
            if not test:
                committing()  # raises if a signal stopped the caller: no commit
            run.commit()
        except BaseException:
            run.abort()
            raise
        run.wait()

    def run(self, argv: Sequence[str], *, input_text: str | None = None,
            timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command in the namespace and capture its output (``timeout``: the
        backend's unless given)."""
        # It may write (a -D): it holds the namespace lock with k3snet (inherited_locks).
        with translate_errors(f"run {argv[0]} in {self.where}",
                              errors=(OSError, subprocess.TimeoutExpired), capability=CAPABILITY
                              ), inherited_locks() as locks:
            result = _completed(self.argv(argv), input_text=input_text,
                                timeout=self.timeout if timeout is None else timeout,
                                pass_fds=locks)
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


XTABLES_LOCK = ("the xtables lock, $XTABLES_LOCKFILE, else /run/xtables.lock, which "
                "iptables-legacy and k3snet's libiptc driver hold while they change the "
                "legacy tables")
"""What the file an ``xtables lock`` error names is for: iptables' own message ("Fatal:
can't open lock file /run/xtables.lock: Is a directory") does not say it."""

_LOCK_FILE = lazy_pattern(r"can't open lock file")


class StartedSave:
    """An ``iptables-save`` process running (:meth:`Processes.start_save`).

    :meth:`text` waits for it and gives what :meth:`Processes.save` gives, or raises
    what it raises (the timeout counted from that call); :meth:`cancel` ends it
    unread. Either reaps the process.
    """

    def __init__(self, kernel: Processes, name: str,
                 process: subprocess.Popen[str] | None) -> None:
        self._kernel = kernel
        self._name = name
        self._process = process

    def text(self) -> str | None:
        """The tool's output (``None``: the tool is not installed)."""
        process, self._process = self._process, None
        if process is None:
            return None
        doing = f"run {self._name} in {self._kernel.where}"
        try:
            with translate_errors(doing, errors=(OSError, subprocess.TimeoutExpired),
                                  capability=CAPABILITY):
                stdout, stderr = process.communicate(timeout=self._kernel.timeout)
        except BaseException:
            _end(process)
            raise
        if process.returncode != 0:
            if self._kernel.netns and "network namespace" in stderr:
                raise BackendError(f"{self._kernel.where} is not usable: {stderr.strip()}")
            family = 6 if self._name.startswith("ip6") else 4
            stopped = save_stopped(self._name, family, stdout, stderr,
                                   returncode=process.returncode, where=self._kernel.where,
                                   netns=self._kernel.netns)
            if stopped is not None:
                return self._kernel.save_apart(self._name, family, stopped)
            Processes._refused(doing, stderr, process.returncode)
        return stdout

    def cancel(self) -> None:
        """End the process unread (idempotent)."""
        process, self._process = self._process, None
        if process is not None:
            _end(process)


def _completed(argv: Sequence[str], *, input_text: str | None, timeout: float,
               pass_fds: Sequence[int]) -> subprocess.CompletedProcess[str]:
    """``subprocess.run`` capturing text, its process started within
    :func:`~k3snet.backends.kit.undo_spares_children` (in an undo, SIGTERM and SIGHUP
    blocked for the tool, not for k3snet while it waits)."""
    with undo_spares_children():
        process = subprocess.Popen(
            argv, stdin=None if input_text is None else subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors=_TEXT_ERRORS,
            pass_fds=pass_fds)
    with process:
        try:
            stdout, stderr = process.communicate(input_text, timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()  # (not its pipes: a child it started may hold them on)
            raise
        except BaseException:
            process.kill()
            raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _end(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(OSError):
        process.kill()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        process.communicate(timeout=5)


class RestoreProcess:
    """One ``iptables-restore --noflush`` process for one family's tables, fed as lines come.

    Nothing of a table is applied before :meth:`commit` sends its ``COMMIT``;
    the tool commits each table when it reads that line and stops at the first
    error, naming the line. Every line sent is kept, with where each table starts
    and where its ``COMMIT`` is, so an error's line number tells the rule at
    fault, the table refused and the tables committed before it.
    """

    def __init__(self, kernel: Processes, argv: list[str], *, tool: str | None = None) -> None:
        self._kernel = kernel
        self._timeout = kernel.timeout
        self._argv0 = tool or argv[0]  # for messages: the tool, not `ip netns exec`
        self.sent: list[str] = []
        self._starts: list[tuple[int, str]] = []
        """(line number of ``*table``, table) for each table opened."""
        self._commits: list[tuple[int, str]] = []
        """(line number of ``COMMIT``, table) for each table committed."""
        self._open: str | None = None
        self._broken = False
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in _reap()
        try:
            # stderr to a file: the process can never block on a full pipe while we write.
            # It inherits the namespace lock (inherited_locks): k3snet killed, the tool
            # goes on committing what its pipe holds, and no other k3snet may read
            # the tables until it has ended.
            with translate_errors(f"run {self._argv0} in {kernel.where}", capability=CAPABILITY
                                  ), inherited_locks() as locks, undo_spares_children():
                self._process = subprocess.Popen(
                    argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                    pass_fds=locks)
        except BackendError:
            self._stderr.close()
            raise
        # A pipe big enough for the whole input (~90 bytes a rule): the writes never wait
        # for the process to start up (a few ms) or to catch up. Best effort.
        with contextlib.suppress(OSError, AttributeError):
            assert self._process.stdin is not None
            fcntl.fcntl(self._process.stdin.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)

    @property
    def committed(self) -> tuple[str, ...]:
        """The tables whose ``COMMIT`` was sent, in order."""
        return tuple(table for _, table in self._commits)

    def table(self, name: str) -> None:
        """Open the next table: ``*name``."""
        if self._open is not None:
            raise BackendError(f"the {self._open} table is still open in {self._argv0}")
        self._open = name
        self.sent.append(f"*{name}")
        self._starts.append((len(self.sent), name))
        self._write([f"*{name}"])

    def send(self, lines: list[str]) -> None:
        """Queue rules of the open table (the process reads them while we go on)."""
        self.sent += lines
        self._write(lines)

    def commit(self) -> None:
        """Send the open table's ``COMMIT``: the tool applies it, or refuses it, on reading it."""
        if self._open is None:
            raise BackendError(f"no table is open in {self._argv0}")
        self.sent.append("COMMIT")
        self._commits.append((len(self.sent), self._open))
        self._open = None
        self._write(["COMMIT"])

    def wait(self) -> None:
        """End the input and wait; raise :class:`RunFailedError` if a table was refused."""
        self._close_input()
        try:
            returncode, stderr = self._reap()
        except BackendError as exc:  # killed after the timeout: how far it got is unknown
            raise RunFailedError(str(exc), None,
                                 committed=None if self._commits else ()) from exc
        except BaseException:
            # Interrupted (a second Ctrl-C after the commit, which held_after_commit passes
            # on at once; one in an undo): the run is given up, killed. Left running, a
            # restore stuck on the xtables lock committed once it got it, after k3snet had
            # said what stays and exited, or had its undo wait behind it.
            self._kill()
            raise
        if returncode != 0:
            raise self._refusal(returncode, stderr)

    def abort(self) -> tuple[str, ...] | None:
        """Give up: the open table is not applied; return the tables that were.

        Before any ``COMMIT`` the process is killed. After one, the input is ended
        without the open table's ``COMMIT`` (the tool then refuses that table alone:
        "COMMIT expected") and the process is waited for, so the tables before it
        are known to be in; ``None`` when that cannot be told (the process did not
        end in time, or failed on an earlier table without saying where).
        """
        if not self._commits:
            self._kill()
            return ()
        self._close_input()
        try:
            returncode, stderr = self._reap()
            return self.committed if returncode == 0 else self._refusal(returncode,
                                                                          stderr).committed
        except BackendError:  # not ended in time, or refused for a reason without a line
            return None

    def _close_input(self) -> None:
        stdin = self._process.stdin
        assert stdin is not None
        with contextlib.suppress(OSError):  # it exited already: _reap() says why
            stdin.close()

    def _reap(self) -> tuple[int, str]:
        """Wait for the process to end (killing it after the timeout): (status, stderr)."""
        # Popen.wait(timeout) polls with sleeps of up to 50 ms; the end of the (silent)
        # stdout pipe says the process exited, to the microsecond.
        stdout = self._process.stdout
        assert stdout is not None
        deadline = time.monotonic() + self._timeout
        while True:
            remaining = deadline - time.monotonic()
            ready = select.select([stdout], [], [], max(remaining, 0))[0] if remaining > 0 else []
            if not ready:
                self._kill()
                raise BackendError(f"{self._argv0} did not finish within {self._timeout} s in "
                                   f"{self._kernel.where}")
            if not os.read(stdout.fileno(), 1 << 16):
                break
        returncode = self._process.wait()
        stdout.close()
        self._stderr.seek(0)
        stderr = self._stderr.read().decode(errors="replace")
        self._stderr.close()
        return returncode, stderr

    def _refusal(self, returncode: int, stderr: str) -> RunFailedError:
        """The error for a failed run: the line at fault, its table, the tables before it.

        The tool commits each table at its ``COMMIT`` line and stops at the first
        error, whose line number it prints: the tables whose ``COMMIT`` came before
        that line are in, the one holding it (or the one left open) is refused.
        """
        kernel = self._kernel
        if kernel.netns and "network namespace" in stderr:
            raise BackendError(f"{kernel.where} is not usable: {stderr.strip()}")
        if _NOT_PERMITTED.search(stderr):
            kernel._refused(f"run {self._argv0} in {kernel.where}", stderr, returncode)
        message = " ".join(stderr.split()) or f"exit status {returncode}"
        if _LOCK_FILE.search(stderr):
            message += f" ({XTABLES_LOCK})"
        match = _LINE_NUMBER.search(stderr)
        if match is None:
            # Nothing says how far it got: only "nothing committed" is certain, if no
            # COMMIT was sent.
            return RunFailedError(message, None, table=None,
                                  committed=None if self._commits else ())
        number = int(match.group(1))
        line = tokenize(self.sent[number - 1]) if 0 < number <= len(self.sent) else None
        table = None
        for start, name in self._starts:
            if start <= number:
                table = name
        return RunFailedError(message, line, table=table,
                              committed=tuple(t for at, t in self._commits if at < number))

    def _kill(self) -> None:
        """Kill the process (nothing after its last commit is applied) and free its pipes."""
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
            stdin.write(("\n".join(lines) + "\n").encode(errors=_TEXT_ERRORS))
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
