"""One writer per network namespace: an advisory lock every k3snet process takes.

Two k3snet processes converging one node at once (the agent and an operator's
``k3snet apply``, or two applies from a script) would each observe the same
state, each plan the same additions and each apply them: duplicates. So
:func:`k3snet.converge` holds :func:`namespace_lock` for every network
namespace its backends act in, from observe to the end of apply.

The lock is ``flock(2)`` on a file named after the namespace's identity (device
and inode of its ``/proc/thread-self/ns/net`` or ``/run/netns`` handle, so two names of
one namespace share a lock), in ``/run/k3snet/locks`` (``K3SNET_LOCK_DIR``
overrides it). The kernel releases it when the process dies, even by SIGKILL.
A thread already holding a namespace's lock takes it again at once (re-entry: a
destroy through several backends holds it for all of them, each backend's own
removal taking it inside); ``flock`` alone would make it wait for itself.
The file holds the holder's pid, quoted when another process has to wait for it
(a warning, once, when the wait begins) and when it waited too long; when it cannot
be written (a full ``/run``) the lock is held all the same and the pid is "unknown".
A writer process k3snet starts while it holds a lock (``iptables-restore``) inherits it
(:func:`inherited_locks`): killed by SIGKILL, k3snet loses its own descriptor at once,
while the tool, at the end of the input already in its pipe, goes on committing; the
lock is free only once that tool has ended too, so another k3snet never reads the node
in the middle of a dead process's transaction.
k3snet runs as root: the directory and every lock file must be its own (owned by
the effective user, writable by nobody else, no link; :func:`k3snet._kept.untrusted`),
else the lock is refused before anything is opened for writing or truncated.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from k3snet._env import env_value
from k3snet._kept import make_directory, untrusted
from k3snet.backends.kit import option_seconds
from k3snet.backends.netns import THREAD_NETNS, netns_path, validate_netns
from k3snet.errors import BackendError, LockTimeoutError

__all__ = ["DEFAULT_LOCK_DIR", "DEFAULT_LOCK_TIMEOUT", "namespace_id", "namespace_lock",
           "namespaces_of"]

DEFAULT_LOCK_DIR = Path("/run/k3snet/locks")
DEFAULT_LOCK_TIMEOUT = 60.0
"""Seconds to wait for another k3snet process before giving up with a typed error."""

_POLL = 0.05

_held = threading.local()
"""``files``: the lock file names this thread holds (re-entry takes them at once)."""

_descriptors: set[int] = set()
"""The descriptors of every lock this process holds (any thread), under ``_guard``."""
_guard = threading.Lock()

log = logging.getLogger(__name__)


def _lock_dir() -> Path:
    override = env_value("K3SNET_LOCK_DIR")
    if not override:
        return DEFAULT_LOCK_DIR
    if not os.path.isabs(override):
        # Relative, it named another directory from each working directory: a cron job
        # run from $HOME and an apply from /etc/k3snet each held a lock of their own,
        # and both changed the namespace at once.
        raise BackendError(f"K3SNET_LOCK_DIR {override!r} is not an absolute path: every "
                           "k3snet process must find the same lock whatever its working "
                           "directory")
    return Path(override)


def _identity(netns: str | None) -> tuple[str, str]:
    """(lock file name, human name) of a namespace: its device and inode."""
    handle = THREAD_NETNS if netns is None else netns_path(validate_netns(netns))
    try:
        info = handle.stat()
    except OSError as exc:
        where = ("this process's network namespace" if netns is None
                 else f"network namespace {netns!r}")
        raise BackendError(f"cannot identify {where}: {exc}") from exc
    return f"netns-{info.st_dev}-{info.st_ino}.lock", netns or "host"


def namespace_id(netns: str | None) -> str:
    """A network namespace's identity, ``<device>-<inode>``: the same for all its names."""
    return _identity(netns)[0].removeprefix("netns-").removesuffix(".lock")


def namespaces_of(backend: object) -> list[str | None]:
    """The network namespaces a backend (or a group's members) acts in.

    A backend says so with a ``netns`` attribute (``None``: the caller's own);
    backends without one (cluster objects, files, memory) need no node lock.
    """
    members = getattr(backend, "members", None)
    backends = [m.backend for m in members] if members is not None else [backend]
    found: list[str | None] = []
    for member in backends:
        if hasattr(member, "netns"):
            netns = member.netns
            if netns not in found:
                found.append(netns)
    return found


@contextlib.contextmanager
def namespace_lock(netns: Iterable[str | None], *,
                   timeout: float = DEFAULT_LOCK_TIMEOUT,
                   cancelled: Callable[[], bool] | None = None) -> Iterator[None]:
    """Hold the k3snet lock of every namespace in ``netns`` (in a fixed order: no deadlock).

    Waits up to ``timeout`` seconds for another k3snet process (``0``: tries once), then
    raises :class:`~k3snet.errors.LockTimeoutError` (a ``BackendError``) naming the
    holder's pid; a ``BackendError`` at once when ``cancelled()`` turns true during the
    wait (the agent's SIGTERM: a wait of a minute outlasted the pod's grace period, and
    the agent was killed before it released its Lease). A timeout that
    is not a number of seconds from 0 to a day (NaN, which no deadline ever reaches, a
    negative one, infinity) is refused with :class:`~k3snet.errors.ModelError` first.
    Re-entrant: the namespaces whose lock the calling thread holds already are taken at
    once (released by the outermost block only).
    """
    timeout = option_seconds("lock_timeout", timeout, zero=True)
    held: set[str] = getattr(_held, "files", None) or set()
    _held.files = held
    # A lock this thread holds already is its own: flock on a second descriptor of the
    # file would wait for this very thread until the timeout.
    wanted = sorted(i for i in {_identity(n) for n in netns} if i[0] not in held)
    with contextlib.ExitStack() as stack:
        if wanted:
            directory = _lock_dir()
            directory_fd = _open_directory(directory)
            stack.callback(os.close, directory_fd)
            for filename, name in wanted:
                stack.enter_context(_flock(directory_fd, directory / filename, name, timeout,
                                           cancelled))
                held.add(filename)
                stack.callback(held.discard, filename)
        yield


@contextlib.contextmanager
def inherited_locks() -> Iterator[tuple[int, ...]]:
    """Descriptors of every namespace lock this process holds, for a writer process it
    starts to inherit (``subprocess.Popen(..., pass_fds=fds)`` within the block).

    ``flock`` belongs to the open file, not to the process: a child holding a copy of
    the descriptor keeps the lock held after k3snet itself died (SIGKILL, the OOM
    killer), until the child ends too. The descriptors are copies (``dup``), closed when
    the block ends: start the process inside it, wait for it outside.
    """
    with _guard:
        fds = tuple(os.dup(fd) for fd in sorted(_descriptors))
    try:
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


def _not_permitted(exc: OSError) -> str:
    """What a user who is not root is to do when the lock directory is root's (a wheel
    installed for a user, a capability granted instead of root): it said only "Permission
    denied"."""
    if exc.errno not in (errno.EACCES, errno.EPERM):
        return ""
    return (" (k3snet's lock directory is root's: run k3snet as root, or give every k3snet "
            "process of this node the same K3SNET_LOCK_DIR, a directory of its user's own)")


_DIRECTORY_ROLE = ("$K3SNET_LOCK_DIR, else /run/k3snet/locks: where every k3snet process "
                   "takes the lock of a network namespace it changes")


def _file_role(name: str) -> str:
    """What the lock file of namespace ``name`` is for, said in an error about it."""
    return (f"k3snet's lock of network namespace {name!r}, which every k3snet process "
            "holds while it changes that namespace; $K3SNET_LOCK_DIR, else /run/k3snet/locks")


def _open_directory(directory: Path) -> int:
    """A descriptor of the lock directory (made 0700 if missing), once it is k3snet's own.

    The files are then opened relative to it: the directory checked is the one used.
    """
    try:
        make_directory(directory, 0o700)
    except OSError as exc:
        if exc.errno == errno.EEXIST:  # a file of that name, not a directory
            raise BackendError(f"k3snet's lock directory {directory} ({_DIRECTORY_ROLE}) "
                               "is not a directory") from exc
        raise BackendError(f"cannot create k3snet's lock directory {directory} "
                           f"({_DIRECTORY_ROLE}): {exc}{_not_permitted(exc)}") from exc
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            problem = "a symbolic link" if directory.is_symlink() else "not a directory"
            raise BackendError(f"the lock directory {directory} is {problem}: k3snet takes "
                               "its lock only in a directory of its own") from exc
        raise BackendError(f"cannot open k3snet's lock directory {directory} "
                           f"({_DIRECTORY_ROLE}): {exc}{_not_permitted(exc)}") from exc
    why = untrusted(os.fstat(fd))
    if why is not None:
        os.close(fd)
        raise BackendError(f"the lock directory {directory} is {why}: k3snet takes its lock "
                           "only in a directory of its own")
    return fd


def _open_lock_file(directory_fd: int, path: Path, name: str) -> int:
    """The lock file, opened without following a link, once it is a regular file of k3snet's."""
    # O_NONBLOCK: a FIFO or device at the name is refused below, not waited on.
    flags = (os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK
             | os.O_CLOEXEC)
    try:
        fd = os.open(path.name, flags, 0o600, dir_fd=directory_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BackendError(f"the lock file {path} is a symbolic link: k3snet locks only "
                               "a file of its own") from exc
        raise BackendError(f"cannot open the lock file {path} ({_file_role(name)}): "
                           f"{exc.strerror or exc}{_not_permitted(exc)}") from exc
    info = os.fstat(fd)
    why = "not a regular file" if not stat.S_ISREG(info.st_mode) else untrusted(info)
    if why is not None:
        os.close(fd)
        raise BackendError(f"the lock file {path} is {why}: k3snet locks only a file of "
                           "its own")
    return fd


@contextlib.contextmanager
def _flock(directory_fd: int, path: Path, name: str, timeout: float,
           cancelled: Callable[[], bool] | None = None) -> Iterator[None]:
    fd = _open_lock_file(directory_fd, path, name)
    try:
        deadline = time.monotonic() + timeout
        said = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise BackendError(f"cannot lock {path} ({_file_role(name)}): "
                                       f"{exc.strerror or exc}") from exc
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            if time.monotonic() >= deadline:
                raise LockTimeoutError(
                    f"another k3snet process (pid {holder}) is changing network namespace "
                    f"{name!r}; waited {timeout:g} s for it (lock {path})")
            if cancelled is not None and cancelled():
                raise BackendError(
                    f"stopped while waiting for another k3snet process (pid {holder}) "
                    f"changing network namespace {name!r}; nothing was changed (lock {path})")
            if not said:  # a run that seems to hang up to a minute says whom it waits for
                log.warning("another k3snet process (pid %s) is changing network namespace "
                            "%r; waiting up to %g s for it", holder, name, timeout)
                said = True
            time.sleep(_POLL)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            # The flock is the lock; the pid only tells a waiter whom it waits for. A full
            # /run (ENOSPC) must not stop every apply: the empty file says "pid unknown".
            log.debug("cannot record this pid in the lock file %s: %s", path, exc)
        with _guard:
            _descriptors.add(fd)
        yield
    finally:
        with _guard:  # never closed while inherited_locks() copies it
            _descriptors.discard(fd)
            os.close(fd)  # releases the lock, once no writer it started holds a copy
