"""Where the agent reads its spec each pass: a file (the mounted ConfigMap) or a ConfigMap."""

from __future__ import annotations

import functools
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import attrs

from k3snet._kept import UserLookups, users_looked_up_once
from k3snet.backends.kit import translate_errors
from k3snet.errors import K3snetError, Problem, SpecError
from k3snet.kube import DEFAULT_TIMEOUT, KubeApiError, KubeErrors
from k3snet.spec.load import refuse_foreign_spec, sudo_invoker
from k3snet.spec.source import read_text

__all__ = ["SPEC_SETTLE", "SPEC_SETTLE_LIMIT", "ConfigMapSpecSource", "FileSpecSource",
           "SpecSource"]

_log = logging.getLogger("k3snet.agent")

_REFUSING_STATUSES = frozenset({401, 403, 404})
"""Answers of the API server to the spec's read that stay so until someone acts (the
ConfigMap or its namespace deleted, the agent's RBAC or credentials): the spec is
refused as ``unreadable``. Any other failure (no answer, 5xx, 429, 410, ...) is a read
that failed this time: the spec in force stays, not refused, read again next interval."""

_DENIED_STATUSES = frozenset({401, 403})

DENIED_GRACE = 300.0
"""Seconds a 401 or 403 to the spec's read is a read that failed this time rather than a
refusal (counted from the first of them in a row), the agent's first read too.

An API server that has just restarted answers 403 while its RBAC authorizer's caches
fill (kubernetes/kubernetes#121635: minutes, with many RoleBindings; #47525), and its
token authenticator may answer 401 the same way: every node refused the spec at once,
``spec-refused`` with an Event, for a spec and a permission nobody had changed. A real
removal of the agent's permission is refused this much later; either way the spec in
force stays and the node's rules are the same, so only the alert waits.

A new agent (every node's, after a whole-cluster restart) meets the same caches at its
first read: refused at once, each counted a rejected spec. Now that read fails its pass
as any failed read before a spec is in force: at once, with the API server's answer
(``forbidden (403): k3snet's account lacks the RBAC permission ...``), the Node's status
``failed`` and the pod not ready (no pass converged the node), so a Role never granted is
said from the first pass; only the refusal (``unreadable``, counted in
``k3snet_agent_spec_rejected_total``) waits."""


class SpecSource(Protocol):
    """Protocol: the spec's text as it is now.

    ``read`` raises :class:`~k3snet.errors.SpecError` when the source holds no usable
    spec (a file gone, a ConfigMap deleted or without the key: the agent refuses it as
    ``unreadable``), and another :class:`~k3snet.errors.K3snetError` when it could not
    be read this time (an API server restarting, overloaded, unreachable: the agent
    keeps the spec in force, refuses nothing and reads again)."""

    @property
    def where(self) -> str:
        """Where the spec comes from, for messages."""
        ...

    def read(self) -> str:
        """The spec's current text."""
        ...


SPEC_SETTLE = 1.0
"""Seconds a spec file must have stayed as it is before the agent takes a new text of it:
by its modification time, or, when that is in the future (a clock set apart, ``touch
-d``), by how long the agent saw it unchanged.

A file rewritten in place (``cmd > spec.yaml`` with a slow ``cmd``, ``scp``, an editor
writing in place) is first empty, then half written: read then, its first destinations
went in force alone, the others' routes and rules deleted, and put back a pass later."""

SPEC_SETTLE_LIMIT = 10.0
"""Seconds after which a spec file that never settled (held open for writing, or changing,
all along) is taken as it is, with a warning: a program that keeps the file open for
writing (a lock taken through it) must not keep every new spec out of force; also the
longest the first read waits for the file to settle."""

_RECHECK = 0.25
"""Seconds between two looks at a file held open for writing (its writer may close it any
time), and the shortest wait before any look again."""


@attrs.frozen
class _Look:
    """One read of a spec file and what says whether it was a whole one."""

    before: os.stat_result | None
    after: os.stat_result | None
    outcome: str | SpecError
    writing: bool | None
    """Whether a process held the file open for writing (None: cannot tell here)."""

    @property
    def steady(self) -> bool:
        """Whether the same file (size, times, inode) was there before and after the read."""
        return _signature(self.before) == _signature(self.after)


def _signature(info: os.stat_result | None) -> tuple[int, ...] | None:
    if info is None:
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:  # gone, or not for us to see: the read says why
        return None


_LEASES_MEAN_WRITERS = frozenset({
    0xEF53,  # ext2, ext3, ext4
    0x58465342,  # xfs
    0x9123683E,  # btrfs
    0x01021994,  # tmpfs (a mounted ConfigMap)
    0x858458F6,  # ramfs
    0xF2F52010,  # f2fs
    0x2FC12FC1,  # zfs
    0x4D44,  # vfat, msdos
    0x2011BAB0,  # exfat
    0x794C7630,  # overlayfs: refused exactly while a writer holds the file, an upper or
    # a lower one (seen on Linux 6.18, in a mount namespace of its own)
})
"""File systems (``statfs`` ``f_type``) whose read leases the kernel's own ``generic_setlease``
grants or refuses: refused (EAGAIN) only while a process holds the file open for writing.
Elsewhere EAGAIN may say something else (NFSv4: no read delegation from the server; SMB:
no oplock; others untried, FUSE among them), and read as "open for writing" it made every
new spec wait the whole :data:`SPEC_SETTLE_LIMIT`, then be taken with a false warning. A
lease granted anywhere says no writer is known."""


def _file_system(fd: int) -> int | None:
    """The ``f_type`` of the file system holding open file ``fd`` (None: cannot tell)."""
    fstatfs = _fstatfs()
    if fstatfs is None:
        return None
    import ctypes  # noqa: PLC0415 - only with leases, only here

    # struct statfs begins with f_type on every Linux: a long, an unsigned int on s390x.
    buffer = ctypes.create_string_buffer(256)
    if fstatfs(fd, buffer) != 0:
        return None
    kind = ctypes.c_uint if os.uname().machine == "s390x" else ctypes.c_ulong
    return int(kind.from_buffer(buffer).value) & 0xFFFFFFFF


@functools.cache
def _fstatfs() -> Any:
    """libc's ``fstatfs`` (None: no such function here); looked up once."""
    try:
        import ctypes  # noqa: PLC0415

        return ctypes.CDLL(None, use_errno=True).fstatfs
    except (ImportError, OSError, AttributeError):
        return None


def _open_for_writing(path: Path, info: os.stat_result | None,
                      said: set[int | None]) -> bool | None:
    """Whether any process (of any namespace: the kernel counts the inode's writers) holds
    regular file ``path`` (``info``) open for writing; None when this cannot tell.

    A read lease is granted only on a file no one has open for writing (fcntl(2)), and is
    given back at once. A writer opening the file meanwhile waits for that, and the
    lease-break signal is one that is ignored unless handled (SIGURG), not SIGIO, which
    would end the agent; such a break says a writer is there, as a refusal does.
    Refused otherwise (a file of another user without CAP_LEASE, leases disabled), or
    refused with EAGAIN on a file system where that says something else
    (:data:`_LEASES_MEAN_WRITERS`): None, and the file's times alone decide; the latter
    said once for each file system type not in ``said`` (added to it): on NFS or SMB it
    is so at every look, each pass of the agent."""
    try:
        import fcntl  # noqa: PLC0415 - Linux's leases only, and only here
        import signal  # noqa: PLC0415
    except ImportError:
        return None
    fd = _open_to_read(path, info)
    if fd is None:
        return None
    try:
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
        try:
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        except BlockingIOError:  # EAGAIN: open for writing, where that is what it says
            kind = _file_system(fd)
            if kind in _LEASES_MEAN_WRITERS:
                return True
            if kind not in said:  # said once a file system type: it is so at every look
                said.add(kind)
                _log.debug("%s: read lease refused (EAGAIN) on a file system (statfs type %s) "
                           "where that does not say it is open for writing: settled by "
                           "its times alone", path, "unknown" if kind is None else f"{kind:#x}")
            return None
        # A writer that opened it since waits for the lease: it is being broken then.
        broken = fcntl.fcntl(fd, fcntl.F_GETLEASE) != fcntl.F_RDLCK
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return broken
    except (OSError, AttributeError):  # no leases here (AttributeError: not Linux)
        return None
    finally:
        os.close(fd)  # gives back a lease still held (an exception, a signal's)


def _open_to_read(path: Path, info: os.stat_result | None) -> int | None:
    """Regular file ``path``, the inode ``info`` says, open for reading (None: not so)."""
    if info is None or not stat.S_ISREG(info.st_mode):
        return None
    try:
        handle = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        found = os.fstat(handle)
        if (found.st_dev, found.st_ino) != (info.st_dev, info.st_ino) \
                or not stat.S_ISREG(found.st_mode):
            return None  # replaced since: the signatures differ anyway
        # That very inode, opened for reading (O_NONBLOCK, O_NOCTTY: as any input is):
        # nothing else swapped in, no FIFO or device opened.
        return os.open(f"/proc/self/fd/{handle}",
                       os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    finally:
        os.close(handle)


class SettledFile:
    """A file whose new text is taken only once it has settled (see
    :class:`FileSpecSource`): the spec file, and each file the spec imports (an
    ``ipMasqAgentConfig``: the agent's loop), judged by this one way.

    ``read_file`` reads it (its text, what stands for it, or why it is unusable); ``what``
    names it in messages; ``settle``, ``settle_limit``, ``clock`` and ``monotonic`` as
    :class:`FileSpecSource` takes them; a read with nothing taken yet waits with
    ``sleep``, until ``stopped`` is set."""

    def __init__(self, path: Path, read_file: Callable[[Path], str | SpecError], *,
                 what: str, settle: float, settle_limit: float,
                 clock: Callable[[], float], monotonic: Callable[[], float],
                 sleep: Callable[[float], object], stopped: threading.Event) -> None:
        self.path, self._read_file, self.what = path, read_file, what
        self.settle, self.settle_limit = settle, settle_limit
        self._clock, self._monotonic = clock, monotonic
        self._sleep, self._stopped = sleep, stopped
        # What the file said when it last settled: its text or why it is unusable, and the
        # file's signature then.
        self._taken: str | SpecError | None = None
        self._taken_as: tuple[int, ...] | None = None
        # (the file's signature, when this source first saw it so); when the looks that
        # found it unsettled began (None: the last one found it settled), and whether they
        # said it open for writing; the signature last said modified in the future.
        self._seen: tuple[tuple[int, ...] | None, float] | None = None
        self._unsettled_since: float | None = None
        self._said_writing = False
        self._said_future: tuple[int, ...] | None = None
        # The file systems (statfs types) said to refuse its lease for another reason.
        self._said_lease: set[int | None] = set()
        # What NSS said (each group's users) over the looks of one settle: a file being
        # written is looked at every 0.25 s, and each look's read listed every user
        # (getpwall: a directory search on a node whose users are in LDAP) when the file
        # or a directory on its way is group-writable. Owners and modes are judged at every
        # look; a user added meanwhile is seen by the next settle's looks.
        self._lookups: UserLookups | None = None
        # Whether what was last taken was taken unsettled, at settle_limit: as the file
        # was then, whether or not it changed since.
        self.taken_unsettled = False

    def read(self, *, wait: bool = True) -> tuple[str | SpecError | None, float | None]:
        """(What the file said when it last settled, None when it has not yet; seconds
        after which it is worth reading again, None when that is what it says now).

        With nothing taken yet, ``wait`` waits for it to settle (``settle_limit`` at
        most), and a :class:`K3snetError` ends that wait once ``stopped`` is set."""
        while True:
            look = self._look()
            pause = self._unsettled(look)
            if pause is None:
                self._taken, self._taken_as = look.outcome, _signature(look.after)
                return self._taken, None
            if self._taken is not None or not wait:  # what was taken stays: look again soon
                return self._taken, pause
            if self._stopped.is_set():
                raise K3snetError(f"{self.path}: not read: stopped while waiting for the "
                                  "file, being written, to settle")
            self._sleep(pause)  # nothing taken yet: wait (settle_limit at most)

    @property
    def taken_unsettled_as(self) -> tuple[int, ...] | None:
        """The file's signature when what was last taken was taken unsettled, at
        ``settle_limit`` (None: taken settled, or nothing taken): one that reads it again
        (loading a spec) may read another text, cut mid-way."""
        return self._taken_as if self.taken_unsettled and self._taken is not None else None

    def unchanged(self) -> bool:
        """Whether the file is still the one (inode, size, times) whose text was taken:
        what read it again meanwhile read that text."""
        return self._taken is not None and _signature(_stat(self.path)) == self._taken_as

    def _look(self) -> _Look:
        before = _stat(self.path)
        if self._lookups is None:
            self._lookups = UserLookups()
        with users_looked_up_once(self._lookups):
            outcome = self._read_file(self.path)
        writing = _open_for_writing(self.path, before, self._said_lease)
        return _Look(before, _stat(self.path), outcome, writing)

    def _unsettled(self, look: _Look) -> float | None:
        """Seconds to wait before looking again at a file not settled in ``look`` (None: it
        settled, or will not within ``settle_limit`` and is taken as it is)."""
        now = self._monotonic()
        signature = _signature(look.after)
        if self._seen is None or self._seen[0] != signature:
            self._seen = (signature, now)
        why, wait = self._why_unsettled(look, now - self._seen[1])
        if why is None:
            self._unsettled_since, self._said_writing = None, False
            self.taken_unsettled, self._lookups = False, None
            return None
        if self._unsettled_since is None:
            self._unsettled_since = now
        waited = now - self._unsettled_since
        if waited >= self.settle_limit:
            _log.warning("the %s %s has not settled for %.0f s (%s): taken as it is",
                         self.what, self.path, waited, why)
            self._unsettled_since, self._said_writing = None, False
            self.taken_unsettled, self._lookups = True, None
            return None
        wait = min(max(wait, _RECHECK), self.settle_limit - waited)
        # Open for writing: said once (a writer may hold it a while); the rest at debug level.
        level = logging.INFO if look.writing and not self._said_writing else logging.DEBUG
        self._said_writing = self._said_writing or bool(look.writing)
        _log.log(level, "the %s %s is being written (%s): %s; read again in %.2f s",
                 self.what, self.path, why, "the spec read before stays"
                 if self._taken is not None else "waiting for it", wait)
        return wait

    def _why_unsettled(self, look: _Look, unchanged: float) -> tuple[str | None, float]:
        """(why the file has not settled, or None; seconds after which it may have), the
        file unchanged for ``unchanged`` seconds as this source saw it."""
        if look.before is None and look.after is None:
            return None, 0.0  # no file (or none to see): the read's error says it
        if look.steady and self._taken is not None \
                and _signature(look.after) == self._taken_as:
            # Nothing new since it was taken, though still open for writing (a program
            # locking through it): not read again every 0.25 s for as long as it holds it.
            return None, 0.0
        if not look.steady:
            return "changed while being read", self.settle
        if look.writing:
            return "open for writing", _RECHECK
        assert look.after is not None
        age = self._clock() - look.after.st_mtime
        if age < -self.settle and self._said_future != _signature(look.after):
            self._said_future = _signature(look.after)
            _log.warning("the %s %s is modified %.0f s in the future of this node's "
                         "clock (a clock set apart, touch -d): judged by how long it stays "
                         "unchanged instead", self.what, self.path, -age)
        settled_for = max(age, unchanged)
        if settled_for >= self.settle:
            return None, 0.0
        why = (f"modified {age:.2f} s ago" if age >= 0
               else f"modified in the future, unchanged for {unchanged:.2f} s")
        return why, self.settle - settled_for


def _read_spec_file(path: Path) -> str | SpecError:
    """A spec file's text, or why it is unusable (see :meth:`FileSpecSource.read`)."""
    try:
        text = refuse_foreign_spec(path, invoker=sudo_invoker())
        return read_text(path) if text is None else text
    except SpecError as exc:
        return exc


class FileSpecSource:
    """A spec file, read again every pass (the kubelet updates a mounted ConfigMap in place).

    A new text is taken only once the file has settled: no process holds it open for
    writing, the same file (inode, size, times) before and after the read, and modified
    at least ``settle`` seconds ago (:data:`SPEC_SETTLE`; by the clock the kernel stamps
    it with, or, a modification time in the future, by how long it stayed unchanged).
    Until then the text taken before stays, and :attr:`read_again_in` says when to look
    again (the agent passes again then, not an interval later); the first read waits for
    it. One that has not settled for ``settle_limit`` seconds (:data:`SPEC_SETTLE_LIMIT`)
    is taken as it is, with a warning. ``settle=0`` asks nothing of the file's times (a
    file open for writing or changing during the read still waits); ``clock``,
    ``monotonic`` and ``sleep`` are the time it judges by (tests give their own).
    :meth:`stop_waiting` ends the first read's wait (the agent stopping). The files the
    spec imports settle the same way (the agent's loop)."""

    remote = False
    """A read costs nothing but a file's: every pass reads it."""

    read_again_in: float | None = None
    """Seconds after which the file is worth reading again, while the last read kept the
    text taken before, the new one not settled (None: the text read is the file's)."""

    settle: float = SPEC_SETTLE
    """Seconds a new text must have stayed as it is (the ``settle`` given, else this)."""

    def __init__(self, path: Path, *, settle: float | None = None,
                 settle_limit: float = SPEC_SETTLE_LIMIT,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.path = path
        self._stopped = threading.Event()
        if settle is not None:
            self.settle = settle
        self.settle_limit = settle_limit
        self._file = SettledFile(path, _read_spec_file, what="spec file", settle=self.settle,
                                 settle_limit=settle_limit, clock=clock, monotonic=monotonic,
                                 sleep=self._stopped.wait if sleep is None else sleep,
                                 stopped=self._stopped)

    @property
    def where(self) -> str:
        """The file's path."""
        return str(self.path)

    def read(self) -> str:
        """The file's text (a regular UTF-8 file of bounded size, as every spec file), or a
        :class:`SpecError` when another user could have changed it or a file it imports
        (:func:`~k3snet.spec.load.refuse_foreign_spec`): judged at every read, as the file,
        its directory or the import may have changed since the agent started. Either only
        once the file has settled (see the class): until then, what it said before."""
        taken, self.read_again_in = self._file.read()
        if isinstance(taken, SpecError):
            raise taken
        assert taken is not None
        return taken

    def stop_waiting(self) -> None:
        """End the wait of a first read for the file to settle, and any such wait after
        (the agent stopping: SIGTERM): that read raises a :class:`K3snetError`, not a
        :class:`SpecError`, and nothing half written is taken. It waited out
        :data:`SPEC_SETTLE_LIMIT`, then put the file in force, a pod being deleted too."""
        self._stopped.set()


_VERSION_NOT_SERVED = frozenset({400, 410, 504})
"""Answers to a read asking for the ConfigMap not older than a version that a quorum read
(no version) does not get for that reason: read again at once without it."""


class ConfigMapSpecSource:
    """One key of a ConfigMap, read through the API (one GET) by every pass the interval
    starts, not by those a change on the node starts (see :attr:`remote`).

    The first read, and one after the API server could not serve the version last read,
    is a quorum read (etcd's); every other asks for the ConfigMap not older than the
    ``resourceVersion`` last read, which the API server serves from its watch cache: at
    5 000 nodes, 167 reads a second etcd no longer serves. Such a read misses a change
    the cache has not received yet (it follows etcd within milliseconds), as a quorum
    read a moment earlier would, and is never older than what this source read before:
    the spec never goes back to one it read earlier, as a read of a cache behind
    (``resourceVersion=0``, any version) could."""

    remote = True
    """A read is an API request: a pass a change on the node started reads no spec
    (unless the last read is an interval old), the spec in force stays."""

    def __init__(self, api_client: Any, namespace: str, name: str, key: str = "spec.yaml",
                 timeout: float = DEFAULT_TIMEOUT, *, denied_grace: float = DENIED_GRACE,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        # The generated client's read names no resourceVersion; the dynamic client's does,
        # and its request() hides ApiClient.call_api, whose arguments changed in 37.
        from kubernetes import dynamic  # noqa: PLC0415 - optional dependency (k3snet[kube])

        dynamic_client: Any = dynamic.DynamicClient  # (untyped)
        self._api: Any = dynamic_client(api_client, discoverer=_NoDiscovery)
        self.namespace, self.name, self.key, self.timeout = namespace, name, key, timeout
        # The resourceVersion of the last read (None: the next read is a quorum read).
        self._version: str | None = None
        self.denied_grace = denied_grace
        self._monotonic = monotonic
        self._denied_since: float | None = None

    @property
    def where(self) -> str:
        """``ConfigMap NS/NAME key KEY``."""
        return f"ConfigMap {self.namespace}/{self.name} key {self.key}"

    def read(self) -> str:
        """The key's text; SpecError when the ConfigMap or the key is missing, or the
        agent may not read it (401, 403, 404: what stays so until someone acts; a 401 or
        403 only once it lasted ``denied_grace`` seconds: ``DENIED_GRACE``); a
        :class:`~k3snet.kube.KubeApiError` when the read failed this time (no answer,
        5xx, 429, 410, ...: a control plane restarting says nothing of the spec)."""
        try:
            configmap = self._get()
        except KubeApiError as exc:
            if exc.status in _REFUSING_STATUSES and not self._denied_for_now(exc):
                message = str(exc)
                if self._denied_since is not None:
                    message += f" (so at every read for {self.denied_grace:g} s)"
                raise SpecError([Problem("", message)], source=self.where) from exc
            if exc.status not in _DENIED_STATUSES:
                # Another answer ends the run of denials: an API server that fails again
                # (a crash loop) fills its caches again when it is back.
                self._denied_since = None
            raise
        self._denied_since = None
        data = configmap.get("data") if isinstance(configmap, dict) else None
        data = data if isinstance(data, dict) else {}
        if self.key not in data:
            raise SpecError([Problem("", f"{self.where}: no such key (keys: "
                                         f"{', '.join(sorted(data)) or 'none'})")],
                            source=self.where)
        return str(data[self.key])

    def _get(self) -> Any:
        """The ConfigMap as JSON data: not older than the last read when there was one
        (from the watch cache), else a quorum read; one whose version the cache did not
        reach in time (504, ``Timeout``: an API server just restarted, another behind the
        one last read) or that version refused (400, 410: a version that API server, or a
        proxy before it, does not take; asked again, every later read failed) is asked
        again at once as a quorum read."""
        if self._version is not None:
            try:
                return self._request(self._version)
            except KubeApiError as exc:
                if exc.status not in _VERSION_NOT_SERVED:
                    raise
                self._version = None
        return self._request(None)

    def _request(self, version: str | None) -> Any:
        path = f"/api/v1/namespaces/{self.namespace}/configmaps/{self.name}"
        with translate_errors(f"read {self.where}", classifier=KubeErrors(timeout=self.timeout)):
            answer = self._api.request("get", path, resource_version=version, serialize=False,
                                       _request_timeout=self.timeout)
        try:
            configmap = json.loads(answer.data)
        except (TypeError, ValueError) as exc:
            raise KubeApiError(f"read {self.where}: the answer is not JSON ({exc})") from exc
        metadata = configmap.get("metadata") if isinstance(configmap, dict) else None
        found = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
        self._version = found if isinstance(found, str) and found else None
        return configmap

    def _denied_for_now(self, exc: KubeApiError) -> bool:
        """Whether a 401 or 403 is a read that failed this time: the first of these answers
        in a row (no other answer, nor failure, between) is younger than
        :attr:`denied_grace`."""
        if exc.status not in _DENIED_STATUSES:
            return False
        now = self._monotonic()
        if self._denied_since is None:
            self._denied_since = now
        return now - self._denied_since < self.denied_grace


class _NoDiscovery:
    """The dynamic client's discoverer, never asked: only its ``request`` is used, and
    its discovery would read every API group of the server."""

    def __init__(self, client: Any, cache_file: Any) -> None:
        del client, cache_file
