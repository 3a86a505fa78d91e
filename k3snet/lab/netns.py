"""Small, safe helpers around named network namespaces (iproute2's ``ip netns``).

These helpers exist for tests and labs. They never touch the root network
namespace: every command either creates/deletes a *named* namespace or runs
inside one through ``ip netns exec``. Names come from :func:`unique_name`, so
parallel runs and other users of ``ip netns`` never collide with us.

Example::

    with temporary_netns("demo") as ns:
        run_in(ns, ["ip", "link", "set", "lo", "up"])
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from k3snet._env import env_value
from k3snet._kept import STATE_ROOT

__all__ = [
    "DEFAULT_TIMEOUT",
    "NAME_PREFIX",
    "Ipv6NotReadyError",
    "NetnsCommandError",
    "await_ipv6_ready",
    "create_netns",
    "delete_netns",
    "exit_on_signals",
    "forget_netns_state",
    "kill_netns_processes",
    "netns_exists",
    "netns_pids",
    "run_in",
    "temporary_netns",
    "unique_name",
]

NAME_PREFIX = "k3snet-"
"""Every namespace made by :func:`unique_name` starts with this, so a stray one is
easy to recognise (and to clean up by hand) in ``ip netns list``."""

DEFAULT_TIMEOUT = 10.0
"""Default bound, in seconds, for any command run by these helpers: a lab command
that hangs must fail the test rather than hang it."""

# Roles are interpolated into namespace names, which become file names under
# /run/netns: keep them to a tame alphabet.
_ROLE = re.compile(r"[a-z][a-z0-9]{0,7}")
# What iproute2 accepts and what we create: no path separators, no dots-only names.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

_STATE_ROOT = STATE_ROOT  # the backends' default state_dir
# What k3snet's backends keep in a namespace's directory there: the netlink backend's
# sysctl record and its lock, the iptables backend's record of built-in chains it made,
# and the temporaries each is written through.
_RECORDS = frozenset({"sysctl.json", "lock", "iptables-made.json"})
_TEMPORARIES = (".sysctl.json.", ".iptables-made-")
# The records of a namespace named "host", beside the caller's own in host/: the
# iptables backend's (k3snet.backends.iptables.made's _NAMED_HOST) and the netlink
# backend's (k3snet.backends.netlink.sysctls' _NAMED_HOST_FILE).
_NAMED_HOST_RECORDS = ("iptables-made-netns.json", "sysctl-netns.json")


class NetnsCommandError(subprocess.CalledProcessError):
    """A command run by these helpers exited non-zero.

    It is a :class:`subprocess.CalledProcessError` (callers may catch either), whose
    message also carries the command's stderr, since that is what explains it.
    """

    def __str__(self) -> str:
        detail = (self.stderr or "").strip()
        base = super().__str__()
        return f"{base}: {detail}" if detail else base


class Ipv6NotReadyError(TimeoutError):
    """The kernel did not configure IPv6 on every given interface in time
    (:func:`await_ipv6_ready`); the message names the interfaces and what they lack."""


def exit_on_signals() -> None:
    """Make SIGTERM and SIGHUP end the process as Ctrl-C does, unwinding ``finally``
    blocks and ``with`` statements, so :func:`temporary_netns` and the labs delete their
    namespaces (call it first thing in the main thread of a lab script).

    Python's default for both ends the process at once: a ``timeout``, a cancelled CI
    job or a closed terminal left the namespaces, and the servers in them, behind. The
    exit status is ``128 + signal`` (143, 129); Ctrl-C still raises
    :class:`KeyboardInterrupt`. Once one of the three came, further ones wait for the
    clean-up: a second Ctrl-C cut the first one's short and left the namespaces (it
    reaches the terminal's whole process group: ignored, it spares the clean-up's own
    ``ip`` commands too, which inherit that). A
    signal ignored when this is called stays ignored: SIGHUP under ``nohup``, SIGINT in
    a shell's background job.
    """
    endings = [stop for stop in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
               if signal.getsignal(stop) is not signal.SIG_IGN]

    def stopped(signum: int, frame: object) -> None:
        for stop in endings:
            signal.signal(stop, signal.SIG_IGN)  # the clean-up runs to its end
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    for stop in endings:
        signal.signal(stop, stopped)


def unique_name(role: str) -> str:
    """Return a fresh namespace name such as ``k3snet-pod-3fa9c1``.

    ``role`` is a short lowercase word (1-8 of ``[a-z0-9]``, starting with a letter)
    that says what the namespace plays in a lab. Six random hex digits keep
    concurrent runs apart.

    >>> unique_name("pod").startswith("k3snet-pod-")
    True
    """
    if not _ROLE.fullmatch(role):
        msg = f"role must match {_ROLE.pattern!r}, got {role!r}"
        raise ValueError(msg)
    return f"{NAME_PREFIX}{role}-{secrets.token_hex(3)}"


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        msg = f"not a valid network namespace name: {name!r}"
        raise ValueError(msg)
    return name


def _run(
    argv: Sequence[str],
    *,
    check: bool,
    timeout: float,
    input_text: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (never through a shell), capturing text output, bounded in time."""
    result = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        input=input_text,
        env=None if env is None else dict(env),
    )
    if check and result.returncode != 0:
        raise NetnsCommandError(result.returncode, result.args, result.stdout, result.stderr)
    return result


def netns_exists(name: str) -> bool:
    """Tell whether a named network namespace exists (as ``ip netns list`` shows it)."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, check=False,
                             timeout=DEFAULT_TIMEOUT)
    if listing.returncode != 0:
        raise NetnsCommandError(listing.returncode, listing.args, listing.stdout,
                                os.fsdecode(listing.stderr))
    # Lines look like "name" or "name (id: 3)"; a name is a file name (any bytes but
    # "/" and NUL: someone else's `ip netns add $'x\xff'` must not break the lab), so it
    # is read as one and lines are split at "\n" alone.
    return any(line.split(" ", 1)[0] == name
               for line in os.fsdecode(listing.stdout).split("\n"))


# The sysctls a new namespace copies from the machine's own (IPv4's conf/all and
# conf/default under net.core.devconf_inherit_init_net's default 0, IPv6's too under 1)
# that the labs and the tests depend on, at the kernel's own defaults.
_KERNEL_DEFAULTS = ("net.ipv4.ip_forward=0", "net.ipv4.conf.all.rp_filter=0",
                    "net.ipv4.conf.default.rp_filter=0", "net.ipv6.conf.all.forwarding=0",
                    "net.ipv6.conf.default.forwarding=0")


def create_netns(name: str) -> str:
    """Create the named network namespace and return its name.

    Its IPv4 and IPv6 forwarding and ``rp_filter`` are the kernel's defaults (0),
    whatever the machine's: a new namespace copies IPv4's ``all`` and ``default``
    values from the machine's own, ``ip_forward = 1`` on a Docker host and
    ``rp_filter = 2`` on Ubuntu.

    Fails (:class:`NetnsCommandError`) if it already exists: a lab must own its
    namespaces, never adopt someone else's.
    """
    _run(["ip", "netns", "add", _check_name(name)], check=True, timeout=DEFAULT_TIMEOUT)
    try:
        # -e: a kernel without IPv6 has no net.ipv6 keys.
        run_in(name, ["sysctl", "-q", "-e", "-w", *_KERNEL_DEFAULTS])
    except BaseException:
        _run(["ip", "netns", "delete", name], check=False, timeout=DEFAULT_TIMEOUT)
        raise
    return name


def delete_netns(name: str) -> None:
    """Delete the named network namespace; do nothing if it is already gone.

    Its interfaces (veth ends included) go with it, and the records k3snet's backends
    kept for it (:func:`forget_netns_state`). Processes still running inside
    keep the namespace alive until they exit, so callers stop them first (see
    :func:`netns_pids`).
    """
    _check_name(name)
    if netns_exists(name):
        _run(["ip", "netns", "delete", name], check=True, timeout=DEFAULT_TIMEOUT)
        forget_netns_state(name)


def forget_netns_state(name: str) -> None:
    """Remove the records k3snet's backends kept for the deleted namespace ``name``
    (``/run/k3snet/NAME/``: the netlink backend's sysctl record, the iptables backend's
    record of built-in chains it made), which :func:`delete_netns` does.

    Left behind, they piled up one directory per lab namespace, and a later namespace of
    that name given the same inode read them as its own. The directory goes only when it
    is that namespace's: not ``host`` (the caller's own namespace's), a real directory of
    this user's that nobody else may write, holding k3snet's per-namespace files and
    nothing else (``/run/k3snet/locks`` or ``spec-cache`` of a namespace so named stay);
    of a namespace named ``host`` only the records of its own there
    (``iptables-made-netns.json``, ``sysctl-netns.json``) go;
    nothing is done while a namespace of that name exists. Searched under
    ``/run/k3snet``, the iptables backend's default root when a test moved it, and
    ``$K3SNET_STATE_DIR``.
    """
    _check_name(name)
    if netns_exists(name):
        return
    if name == "host":
        _forget_named_host()
        return
    for root in _state_roots():
        directory = root / name
        try:
            info = os.lstat(directory)
            if (not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid()
                    or info.st_mode & 0o022):
                continue
            entries = [(entry, os.lstat(directory / entry)) for entry in os.listdir(directory)]
        except OSError:  # none there (the usual case), or not ours to read
            continue
        if not entries or not all(
                (entry in _RECORDS or entry.startswith(_TEMPORARIES))
                and stat.S_ISREG(found.st_mode) for entry, found in entries):
            continue
        with suppress(OSError):  # one gone meanwhile, or the directory refilled
            for entry, _ in entries:
                os.unlink(directory / entry)
            os.rmdir(directory)


def _forget_named_host() -> None:
    """Remove the records of a deleted namespace named ``host``, kept in the caller's own
    directory (``host/``) under names of their own (:data:`_NAMED_HOST_RECORDS`); the
    directory and the caller's records stay."""
    for root in _state_roots():
        directory = root / "host"
        try:
            info = os.lstat(directory)
            if (not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid()
                    or info.st_mode & 0o022):
                continue
        except OSError:  # none there (the usual case), or not ours to read
            continue
        for name in _NAMED_HOST_RECORDS:
            record = directory / name
            with suppress(OSError):  # none there, or gone meanwhile
                if stat.S_ISREG(os.lstat(record).st_mode):
                    os.unlink(record)


def _state_roots() -> list[Path]:
    """Where backends keep per-namespace records: the default root, the iptables
    backend's when moved (only if its module is loaded: else nothing moved it), and
    ``$K3SNET_STATE_DIR`` (the CLI's, which child processes were given)."""
    roots = [_STATE_ROOT]
    made = sys.modules.get("k3snet.backends.iptables.made")
    moved = getattr(made, "DEFAULT_ROOT", None)
    given = env_value("K3SNET_STATE_DIR")
    for root in (moved, Path(given) if given and os.path.isabs(given) else None):
        if isinstance(root, Path) and root not in roots:
            roots.append(root)
    return roots


def netns_pids(name: str) -> tuple[int, ...]:
    """Return the ids of the processes running inside the named namespace."""
    listing = _run(["ip", "netns", "pids", _check_name(name)], check=True, timeout=DEFAULT_TIMEOUT)
    return tuple(int(field) for field in listing.stdout.split())


def run_in(
    ns: str,
    argv: Sequence[str],
    check: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    input_text: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside namespace ``ns`` with ``ip netns exec`` and return the result.

    Output is captured as text. ``timeout`` bounds the run (the child is killed and
    :class:`subprocess.TimeoutExpired` raised past it). With ``check`` a non-zero exit
    raises :class:`NetnsCommandError`. ``input_text`` is fed on stdin, which is how
    ``nft -f -`` or ``iptables-restore`` get their scripts without a temporary file.
    ``env`` replaces the environment (default: inherit ours).

    Example::

        routes = run_in(ns, ["ip", "-j", "route"]).stdout
    """
    if not argv:
        msg = "argv must name a command"
        raise ValueError(msg)
    command = ["ip", "netns", "exec", _check_name(ns), *argv]
    return _run(command, check=check, timeout=timeout, input_text=input_text, env=env)


def _ipv6_missing(ns: str, interfaces: Iterable[str]) -> dict[str, list[str]]:
    """What each interface of ``interfaces`` in ``ns`` still lacks of its IPv6 local routes
    (see :func:`await_ipv6_ready`); the interfaces lacking nothing are left out."""
    # `ip -n` enters the namespace itself: one process where `ip netns exec` takes two.
    listed = json.loads(_run(["ip", "-n", ns, "-6", "-j", "route", "show", "table", "local"],
                             check=True, timeout=DEFAULT_TIMEOUT).stdout or "[]")
    multicast = {r.get("dev") for r in listed if r.get("type") == "multicast"}
    link_local = {r.get("dev") for r in listed
                  if r.get("type") == "local" and str(r.get("dst", "")).startswith("fe80:")}
    missing: dict[str, list[str]] = {}
    for interface in interfaces:
        lacks = [what for what, devices in (("multicast ff00::/8", multicast),
                                            ("link-local", link_local))
                 if interface not in devices]
        if lacks:
            missing[interface] = lacks
    return missing


# How long a link may lack its IPv6 routes before the wait looks whether it ever can get
# them (absent, down, IPv6 disabled): the kernel's work item is done by then, most times.
_IPV6_JUDGED_AFTER = 0.5
# Bytes the kernel refuses in a link's name (dev_valid_name: '/', ':' and isspace()).
_NO_IFNAME_BYTES = frozenset(b"/: \t\n\v\f\r")


def _check_ifname(name: str) -> str:
    """``name`` if a link can have it, else a :class:`ValueError`: the kernel's own rule
    (dev_valid_name), at most 15 bytes, not ``.`` nor ``..``, no ``/``, ``:`` or blank."""
    raw = name.encode("utf-8", "surrogateescape")
    if not 0 < len(raw) <= 15 or name in {".", ".."} or _NO_IFNAME_BYTES.intersection(raw):
        msg = (f"{name!r}: no link can have this name (1 to 15 bytes, not . nor .., "
               "no /, : or white space)")
        raise ValueError(msg)
    return name


def _ipv6_never(ns: str, interfaces: Iterable[str]) -> dict[str, str]:
    """Why each of ``interfaces`` in ``ns`` will get no IPv6 routes however long it is
    waited for (no such link, the link down, IPv6 disabled on it); the others left out."""
    links = {link.get("ifname"): link for link in json.loads(
        _run(["ip", "-n", ns, "-j", "link", "show"], check=True,
             timeout=DEFAULT_TIMEOUT).stdout or "[]")}
    never: dict[str, str] = {}
    present = []
    for name in interfaces:
        link = links.get(name)
        if link is None:
            never[name] = "no such link"
        elif "UP" not in link.get("flags", ()):
            never[name] = f"the link is down (ip link set {name} up)"
        else:
            present.append(name)
    if present:
        # The reading process's namespace is the one /proc/sys/net shows: read inside.
        paths = [f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6" for name in present]
        # grep -H: each readable file's own line ("PATH:VALUE"); none without IPv6 at all.
        read = run_in(ns, ["grep", "-H", "", *paths], check=False).stdout
        values = dict(line.rpartition(":")[::2] for line in read.splitlines())
        for name, path in zip(present, paths, strict=True):
            if values.get(path, "1").strip() != "0":
                never[name] = (f"IPv6 is disabled on it (net.ipv6.conf.{name}.disable_ipv6 = "
                               f"{values.get(path, 'unset: no IPv6 in this kernel').strip()})")
    return never


def await_ipv6_ready(ns: str, interfaces: Iterable[str],
                     timeout: float = DEFAULT_TIMEOUT) -> None:
    """Return once the kernel lists, in ``ns``'s ``ip -6 route show table local``, the
    ``multicast ff00::/8`` route and a link-local ``local`` route of every interface of
    ``interfaces`` (links just brought up, with carrier: both ends of a veth up).

    The kernel adds them in a work item after a link gets its carrier, a second later or
    more on a busy machine (and the link-local one only once duplicate address detection
    ends: turn ``accept_dad`` off before making the links to skip it). Until then a
    neighbour solicitation arriving on the interface finds no route and is dropped
    (``Ip6InNoRoutes`` in ``nstat -az``), and the first IPv6 connection through it waits
    out the one-second retransmit. A lab that sends IPv6 right after it was built calls
    this first, once per namespace.

    Raises :class:`ValueError` at once for a name no link can have (16 bytes or more,
    a blank, ``/``, ``:``); :class:`Ipv6NotReadyError`, naming each interface and what
    it lacks, past ``timeout`` seconds (a bound against a kernel that never gets there,
    not a delay), or as soon as an interface still lacking them after half a second
    never can get them (no such link, the link down, ``disable_ipv6`` set on it).

    Example::

        run_in(ns, ["ip", "link", "set", "eth0", "up"])
        await_ipv6_ready(ns, ["eth0"])
    """
    waiting = [_check_ifname(name) for name in dict.fromkeys(interfaces)]
    start = time.monotonic()
    deadline = start + timeout
    judged = False
    while True:
        missing = _ipv6_missing(_check_name(ns), waiting)
        if not missing:
            return
        now = time.monotonic()
        if not judged and (now - start >= _IPV6_JUDGED_AFTER or now > deadline):
            # Once: one more process or two, only on a wait already long.
            judged = True
            never = _ipv6_never(ns, missing)
            if never:
                said = "; ".join(f"{name}: {why}" for name, why in never.items())
                msg = f"IPv6 cannot be configured in {ns}: {said}"
                raise Ipv6NotReadyError(msg)
        if now > deadline:
            lacks = "; ".join(f"{name}: no {' and no '.join(what)} route"
                              for name, what in missing.items())
            msg = f"IPv6 not configured in {ns} after {timeout:g} s: {lacks}"
            raise Ipv6NotReadyError(msg)
        waiting = list(missing)
        time.sleep(0.01)


def kill_netns_processes(name: str) -> None:
    """SIGKILL every process still running inside the named namespace.

    Only for namespaces the caller created under a fresh :func:`unique_name`: what
    runs there was started by the caller, and while it runs the namespace outlives
    ``ip netns delete``.
    """
    for pid in netns_pids(name):
        with suppress(ProcessLookupError):  # It exited meanwhile: nothing to do.
            os.kill(pid, signal.SIGKILL)


@contextmanager
def temporary_netns(role: str) -> Iterator[str]:
    """Create a uniquely named namespace for ``role``; delete it on exit, even on error.

    On exit, processes left inside it are killed first (see
    :func:`kill_netns_processes`), so the namespace really goes away.

    Example::

        with temporary_netns("probe") as ns:
            run_in(ns, ["ip", "link", "set", "lo", "up"])
    """
    name = unique_name(role)
    try:
        create_netns(name)
    except NetnsCommandError:
        raise  # `ip` refused: it made nothing, or the name is someone else's
    except BaseException:
        # Stopped (a signal, a timeout) while `ip netns add` ran: it may well have made
        # the namespace already, and only this name tells it apart.
        _remove(name)
        raise
    try:
        yield name
    finally:
        _remove(name)


def _remove(name: str) -> None:
    """Kill what runs in the namespace ``name`` and delete it, if it exists."""
    if netns_exists(name):
        try:
            kill_netns_processes(name)
        finally:
            delete_netns(name)
