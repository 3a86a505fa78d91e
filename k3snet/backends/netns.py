"""Run code inside a named network namespace without moving the calling thread.

``setns(2)`` changes the namespace of the calling *thread* only. A
:class:`NetnsRunner` owns one worker thread that enters the namespace once and
stays there; callers hand it functions to run. The main thread never leaves its
namespace, so a failure cannot strand k3snet in the wrong one (or, worse, make it
change the root namespace believing it is in a lab).

Python 3.11 has no ``os.setns``; libc's is called through ctypes.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import os
import platform
import queue
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from k3snet._logline import fs_word, shell_join, shell_word
from k3snet._regex import lazy_pattern
from k3snet.backends.kit import cut_after_commit, translate_errors
from k3snet.errors import BackendError

if TYPE_CHECKING:
    import ctypes

__all__ = ["NETNS_DIR", "THREAD_NETNS", "NetnsRunner", "boot_id", "earlier_records", "exec_name",
           "libc", "namespace_instance", "netns_cookie", "netns_names", "netns_option",
           "netns_path", "netns_where", "nft_json_list", "record_netns", "shown_command",
           "unnamed_record", "validate_netns", "xtables_names"]

NETNS_DIR = Path("/run/netns")
THREAD_NETNS = Path("/proc/thread-self/ns/net")
"""The network namespace of the calling thread, where a ``netns=None`` backend acts
(``/proc/self`` would name the main thread's: setns(2) moves one thread only)."""
INIT_NETNS = Path("/proc/1/ns/net")
"""The namespace of PID 1 as this process sees it: the node's, whose records are ``host``'s."""
CLONE_NEWNET = 0x40000000
T = TypeVar("T")
# SO_NETNS_COOKIE: 71 where the architecture takes asm-generic's socket options (Python
# 3.11 has no constant for it); elsewhere (sparc, parisc, mips, alpha) there is none.
_GENERIC_SOCKOPTS = frozenset({"x86_64", "i686", "i386", "aarch64", "arm64", "armv7l",
                               "armv8l", "riscv64", "ppc64le", "ppc64", "s390x",
                               "loongarch64"})
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def netns_path(name: str) -> Path:
    """The bind-mount ``ip netns add NAME`` creates."""
    validate_netns(name)
    return NETNS_DIR / name


def record_netns(netns: str | None) -> str | None:
    """The name a namespace's records on disk are kept under (``state_dir/<name or
    'host'>``: the netlink backend's sysctl record, the iptables backend's record of the
    chains it made): a namespace has one, whatever name it is reached by.

    ``None`` (``host``) for PID 1's namespace, also reached by a name of
    ``/run/netns`` (``ip netns attach node 1``); the name of ``/run/netns`` of the calling
    thread's namespace when that is another (``ip netns exec NAME k3snet ...`` without
    ``--netns``, as ``--netns NAME``); of several names of ``/run/netns`` (a bind mount
    of one handle at another name), the first in sorted order; ``host/unnamed-INODE``
    (the inode of its nsfs file: :func:`unnamed_record`) for a namespace of no name
    (``nsenter --net`` into a pod's or a container's, ``unshare -n``), whose record was
    ``host``'s: it took the node's record for a stale one and replaced it, and the
    node's ``destroy`` gave nothing back; else ``netns`` as given. They were kept by the
    name given alone: every namespace entered by ``ip netns exec`` wrote the one file of
    ``host``, each taking another's for a stale one and replacing it, and a name of the
    node's own namespace kept a second record; a ``destroy`` reading the other file left
    the sysctls k3snet had set.
    """
    here = _identity(THREAD_NETNS if netns is None else netns_path(netns))
    init = _identity(INIT_NETNS)
    if here is None or here == init:
        return None if here is not None else netns
    names = _names_of(here)
    if names or netns is not None:
        return names[0] if names else netns
    if init is None:
        # PID 1's namespace unreadable (no ptrace right over PID 1: a sandbox, a
        # container of another user namespace): the namespace k3snet runs in, of no
        # name, is taken for the node's, as before names were looked up; else the node's
        # own records would move to host/unnamed-INODE and be lost to its destroy.
        return None
    return unnamed_record(here)


def unnamed_record(here: tuple[int, int]) -> str:
    """Where the records of the namespace of no name ``here`` (device, inode of its nsfs
    file) are kept: ``host/unnamed-INODE``, a place no name of ``/run/netns`` reaches (a
    name holds no ``/``; ``host``'s own files are no directories). Until 2026-12-05
    (unreleased) it was ``unnamed-INODE``, also the directory of a namespace given that
    very name (``ip netns add unnamed-4026532835``): the nameless one took the named
    one's record for a stale one and replaced it, and the named one's ``destroy`` gave
    nothing back."""
    return f"host/unnamed-{here[1]}"


def exec_name(netns: str | None) -> str | None:
    """The name ``ip netns exec`` reaches the namespace ``netns`` names by (``None``: the
    calling thread's), for a command a message tells the user to run where k3snet acts:
    ``netns`` as given, else the first name of ``/run/netns`` of the calling thread's
    namespace when that is not PID 1's (k3snet run as ``ip netns exec NAME k3snet ...``,
    without ``--netns``: the command, run as shown from the shell that ran k3snet, read
    the node's namespace); ``None`` for the node's namespace or one of no name."""
    if netns is not None:
        return netns
    here = _identity(THREAD_NETNS)
    if here is None or here == _identity(INIT_NETNS):
        return None
    names = _names_of(here)
    return names[0] if names else None


def netns_where(netns: str | None, *, unnamed: str) -> str:
    """The namespace ``netns`` (``None``: the calling thread's) as a backend's messages name
    it: ``network namespace 'NS'`` for the name :func:`exec_name` gives, the one the
    commands they show (:func:`shown_command`) run in, so ``ip netns exec NS k3snet ...``
    without ``--netns`` reads as ``--netns NS`` does; ``unnamed`` for one of no name.
    The name as :func:`repr` writes it: one printable line, whatever it holds."""
    name = exec_name(netns)
    return f"network namespace {name!r}" if name else unnamed


def shown_command(argv: Sequence[str], netns: str | None) -> str:
    """``argv`` as the shell command a message tells the user to run where a backend of
    namespace ``netns`` (``None``: the calling thread's) reads and writes: after ``ip
    netns exec NAME`` for the name :func:`exec_name` gives (``--netns NAME``, or k3snet
    started by ``ip netns exec NAME k3snet ...``), where the command alone, run from the
    shell that ran k3snet, read the node's tables; alone in the node's namespace. Every
    backend's messages name their commands through it. A word holding a character that
    is not printable (an interface's or a foreign table's name of an ESC) is written
    ``$'...'`` (:func:`~k3snet._logline.shell_word`): shown as it is, it sent a terminal
    escape; escaped for the terminal, the command pasted named another object.

    An ``nft list table`` or ``nft list chain`` naming a table or chain nft's command
    line refuses (:func:`nft_json_list`: an ESC, a space, ``vé``, a word of nft's
    language such as ``counter``; nft takes them in its JSON input only, and said
    "syntax error" to the command shown) is shown as the same request in that JSON,
    ``printf %s '{"nftables": ...}' | nft -j -f -``: it prints the table or chain as
    JSON, whatever its name."""
    name = exec_name(netns)
    # The name by its file system bytes (fs_word), those of its file under /run/netns:
    # under a Latin-1 locale a byte \xff of it, read as ÿ, was written as its UTF-8.
    where = ("ip", "netns", "exec", fs_word(name)) if name else ()
    request = nft_json_list(argv)
    if request is not None:
        return f"printf %s {shell_word(request)} | {shell_join([*where, 'nft', '-j', '-f', '-'])}"
    return shell_join([*where, *argv])


_NFT_WORD = lazy_pattern(r"[A-Za-z_.][A-Za-z0-9/_.-]*")
"""A name nft's command line reads as one (its scanner's ``string``): any other it
refuses (``syntax error, unexpected junk``), quoted or not; and of these, a word of its
language (:data:`~k3snet.render.nftables.NFT_WORDS`: ``counter``, ``ct``, ``meta``...)."""


def nft_json_list(argv: Sequence[str]) -> str | None:
    """``argv``, an ``nft [OPTIONS] list table|chain FAMILY TABLE [CHAIN]`` naming a
    table or chain nft's command line cannot read, as the same request in nft's JSON
    input (names escaped as JSON escapes them); ``None`` for any other command.

    >>> nft_json_list(["nft", "list", "chain", "inet", "a\\x1bb", "c"])
    '{"nftables": [{"list": {"chain": {"family": "inet", "table": "a\\\\u001bb", "name": "c"}}}]}'
    >>> nft_json_list(["nft", "list", "chain", "ip", "raw", "PREROUTING"]) is None
    True
    >>> nft_json_list(["nft", "list", "table", "inet", "counter"])
    '{"nftables": [{"list": {"table": {"family": "inet", "name": "counter"}}}]}'
    """
    if not argv or argv[0] != "nft" or "list" not in argv:
        return None
    at = list(argv).index("list")
    what, *names = argv[at + 1:] or [""]
    if (what, len(names)) not in (("table", 2), ("chain", 3)):
        return None
    # here only for a command shown: no cold import of the CLI's
    from k3snet.render.nftables import NFT_WORDS  # noqa: PLC0415

    # A keyword (`nft list table inet counter`): "syntax error, unexpected counter".
    if all(_NFT_WORD.fullmatch(word) and word not in NFT_WORDS for word in names[1:]):
        return None
    family, table, *chain = names
    request = ({"family": family, "name": table} if what == "table"
               else {"family": family, "table": table, "name": chain[0]})
    return json.dumps({"nftables": [{"list": {what: request}}]})


def netns_names(netns: str | None) -> list[str]:
    """Every name of ``/run/netns`` of the namespace ``netns`` names (``None``: the calling
    thread's), sorted: the first keeps its records (:func:`record_netns`), and another
    may hold the ones kept before that name was given (``ip netns attach`` of a name
    sorting first), read while the first has none."""
    here = _identity(THREAD_NETNS if netns is None else netns_path(netns))
    return [] if here is None else _names_of(here)


def earlier_records(netns: str | None, kept: str | None) -> list[str]:
    """The directories of ``state_dir`` (names, ``host`` for ``None``) where an earlier
    k3snet may have kept the records of the namespace ``netns`` names, now kept under
    ``kept`` (:func:`record_netns` of ``netns``), in the order they are read while it has
    none: the name given when it is not ``kept``, ``host``'s for a namespace entered by
    ``ip netns exec`` (before 2026-12-05), then its other names (:func:`netns_names`: one
    given later may sort first), then the place it had while it had no name
    (:func:`unnamed_record`: a pod's namespace given a name by ``ip netns attach``). A
    record found there is its own only when its identity and instance say so."""
    places = [netns or "host"] if kept != netns else (
        ["host"] if kept not in (None, "host") else [])
    here = None if kept is None else _identity(
        THREAD_NETNS if netns is None else netns_path(netns))
    others = [] if here is None else _names_of(here)
    if here is not None:
        # Kept before the namespace was given a name (ip netns attach NAME PID of a pod's)
        others.append(unnamed_record(here))
    return places + [name for name in others if name != kept and name not in places]


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _names_of(here: tuple[int, int]) -> list[str]:
    """The names of ``/run/netns`` whose namespace is ``here`` (device, inode), sorted."""
    try:
        names = sorted(os.listdir(NETNS_DIR))
    except OSError:  # no /run/netns (no namespace named yet): none has a name
        return []
    return [name for name in names if _identity(NETNS_DIR / name) == here]


def validate_netns(name: str) -> str:
    """A namespace name ``ip netns`` accepts; raise a clear error otherwise."""
    if not isinstance(name, str):
        raise BackendError(f"a network namespace name is text, got {name!r}")
    if not name or "/" in name or name in {".", ".."} or len(name) > 255 or "\0" in name:
        raise BackendError(f"invalid network namespace name {name[:80]!r}: a name of "
                           f"/run/netns (1 to 255 characters, no '/' nor NUL, not . or ..)")
    return name


def netns_option(value: str | None) -> str | None:
    """The check of a backend's ``netns`` option (``None``: the caller's namespace), as
    its constructor makes it: ``k3snet validate`` runs it on a spec's ``backends:``."""
    return None if value is None else validate_netns(value)


def netns_cookie() -> int | None:
    """The cookie of the calling thread's network namespace (never reused until the
    machine reboots, unlike a name or the inode of its nsfs file), or ``None`` where the
    kernel (before 5.14) or the architecture gives none."""
    option = getattr(socket, "SO_NETNS_COOKIE", None)
    if option is None and platform.machine() in _GENERIC_SOCKOPTS:
        option = 71
    if option is None:
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            raw = sock.getsockopt(socket.SOL_SOCKET, option, 8)
    except OSError:
        return None
    return int.from_bytes(raw, sys.byteorder) if len(raw) == 8 else None


def boot_id() -> str | None:
    """This boot's id (the kernel's random ``boot_id``), ``None`` when unreadable."""
    try:
        return _BOOT_ID.read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def namespace_instance(netns: str | None, runner: NetnsRunner | None = None, *,
                       host: bool | None = None) -> str | None:
    """What tells network namespace ``netns`` from any other of its name, where the
    device and inode of its nsfs file do not: the kernel gives a new namespace the
    inode number of one freed a moment before, so ``ip netns delete NS; ip netns add
    NS`` very often makes a namespace of the same name with the same inode.

    For a named namespace, ``BOOT_ID:COOKIE``: its cookie (never reused until the
    machine reboots) and the boot id (a namespace of ``/run/netns`` is gone after a
    reboot, whatever a ``state_dir`` kept on disk says). For ``None``, the namespace
    k3snet runs in, its cookie alone: the node's own namespace, made first at every
    boot with the same cookie, whose records outlive a reboot when the ``state_dir`` is
    on disk (a destroy after the reboot gives back the values found before k3snet).
    ``runner``: one already in that namespace, else one is started for the call.
    ``host``: whether the namespace's records are ``host``'s (:func:`record_netns` gives
    ``None``), the cookie alone; by default when ``netns`` is ``None``. A namespace
    entered by ``ip netns exec NAME`` keeps the record of ``NAME``, so its instance is
    the named one's, as with ``--netns NAME``.
    ``None`` when the kernel (before 5.14) gives no cookie, or no boot id: only the
    inode tells it then.
    """
    if runner is None and netns is not None:
        with NetnsRunner(netns) as own:
            cookie = own.call(netns_cookie)
    else:
        cookie = netns_cookie() if runner is None else runner.call(netns_cookie)
    if cookie is None:
        return None
    if netns is None if host is None else host:
        return str(cookie)
    boot = boot_id()
    return None if boot is None else f"{boot}:{cookie}"


@functools.cache
def libc() -> ctypes.CDLL:
    """The C library this process already runs on, for the calls Python 3.11 lacks
    (``setns``, and ``getsockopt`` with an input buffer), with ``errno`` kept.

    ``CDLL(None)`` is the process's own symbols, those of the libc it has loaded
    among them. ``ctypes.util.find_library("c")`` imported more modules and ran
    ``/sbin/ldconfig -p`` in a child process on every call (each namespace entered),
    and finds nothing in an image without ``ldconfig``. :mod:`ctypes` is imported here,
    by the first call (~4 ms of CPU after the CLI, ~6 alone): a cold command in the
    node's own namespace enters none and calls none of these.
    """
    import ctypes  # noqa: PLC0415 - see above

    return ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if libc().setns(fd, CLONE_NEWNET) != 0:
        import ctypes  # noqa: PLC0415 - imported by libc() already

        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


# How often the main thread, waiting for a namespace's worker, wakes to run the handlers
# of signals that did not wake it (see _wait_for).
SIGNAL_POLL = 0.2


def _wait_for(future: Future[T]) -> T:
    """``future``'s result, waking every :data:`SIGNAL_POLL` seconds: a signal whose C
    handler ran in another thread (the kernel gives a process's signal to any thread
    not blocking it: the worker's, busy in a kernel call) or in the main thread just
    before it went to sleep on the lock marks its Python handler as due and wakes
    nothing; a wait with no bound ran that handler (Ctrl-C's, SIGTERM's) only as the
    worker ended, which a hung kernel call never does."""
    while not wait([future], timeout=SIGNAL_POLL).done:
        pass
    return future.result()  # (not result(timeout): a TimeoutError fn raised is one too)


class NetnsRunner:
    """Runs callables in the network namespace ``name`` (``None``: the current one).

    >>> runner = NetnsRunner(None)
    >>> runner.call(lambda: 6 * 7)
    42
    >>> runner.close()
    """

    def __init__(self, name: str | None) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[tuple[Callable[[], object], Future[object]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        if name is not None:
            path = netns_path(name)
            if not path.exists():
                raise BackendError(f"network namespace {name!r} does not exist ({path})")

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the namespace and return its result (exceptions propagate).

        Interrupted while it runs (Ctrl-C, a signal's ``SystemExit``), the call waits for
        ``fn`` to end before passing the interruption on (a further one ends the wait; after
        a commit, where the first waits for the block's end, the second passes on at once,
        :func:`~k3snet.backends.kit.held_after_commit`): the worker thread goes on, and
        an apply's commit there was made after the caller had taken nothing back and let
        the namespace's lock go. ``fn`` learns of it at its
        commit (:func:`~k3snet.backends.kit.committing` raises) or its next step
        (:meth:`~k3snet.backends.kit.Compensation.record`).
        """
        if self.name is None:
            return fn()
        self._start()
        future: Future[object] = Future()
        # In the caller's context: the worker's commit marks the caller's block
        # (:func:`~k3snet.backends.kit.committing`), no other thread's.
        self._jobs.put((functools.partial(contextvars.copy_context().run, fn), future))
        try:
            return _wait_for(future)  # type: ignore[return-value]
        except BaseException:
            # Not once a second signal cut the wait after the commit: the thread stuck
            # there (a hung kernel call) kept k3snet until SIGKILL.
            if not future.done() and not cut_after_commit():
                with contextlib.suppress(BaseException):
                    _wait_for(future)  # the worker's end
            raise

    def close(self) -> None:
        """Stop the worker thread (idempotent)."""
        with self._lock:
            if self._thread is not None:
                self._jobs.put(None)
                self._thread.join()
                self._thread = None

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            ready: Future[None] = Future()
            self._thread = threading.Thread(
                target=self._work, args=(ready,), name=f"k3snet-netns-{self.name}", daemon=True
            )
            self._thread.start()
        try:
            ready.result()
        except BaseException:
            self.close()
            raise

    def _work(self, ready: Future[None]) -> None:
        assert self.name is not None  # only started for a named namespace
        try:
            # setns(2) into a network namespace needs CAP_SYS_ADMIN: say so when refused.
            with translate_errors(f"enter network namespace {self.name!r}",
                                  capability="CAP_SYS_ADMIN"):
                fd = os.open(netns_path(self.name), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    _setns(fd)
                finally:
                    os.close(fd)
        except BaseException as exc:  # noqa: BLE001 - raised by the caller, never left waiting
            ready.set_exception(exc)
            return
        ready.set_result(None)
        while (job := self._jobs.get()) is not None:
            fn, future = job
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller as is
                future.set_exception(exc)

    def __enter__(self) -> NetnsRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def xtables_names(names: str) -> frozenset[str]:
    """The iptables-legacy (x_tables) tables of the calling thread's namespace, as
    ``/proc/net/<names>`` lists them (``ip_tables_names``, ``ip6_tables_names``): the
    kernel registers a namespace's table at its first use. None when x_tables (or that
    family's half) is not loaded."""
    try:
        text = (Path("/proc/thread-self/net") / names).read_text()
    except FileNotFoundError:
        return frozenset()
    return frozenset(text.split())
