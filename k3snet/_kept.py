"""Files k3snet keeps for its next process: read only when trusted, written atomically.

The spec cache (:mod:`k3snet.spec.cache`: parsed spec documents) and the nftables
backend's kept read (:mod:`k3snet.backends.nftables.kept`: its table as the last
process left it) live under k3snet's state directory and share these rules:

* a file is read only if it is a regular file owned by the effective user (root
  on a node), writable by nobody else, in a directory that is the same
  (``os.fstat`` of the file opened with ``O_NOFOLLOW``; ``os.lstat`` of the
  directory): anyone else could have put other contents there;
* writes are atomic (a 0600 temporary file in the same directory, then
  ``os.replace``): a reader sees the old file or the new one, never half of one;
* any failure leaves things as they were: a kept file is only ever a shortcut.

Files a user asks for (a plan file, rendered manifests, a doctor bundle) are
written the same way by :func:`write_output` (:func:`write_output_in` for one in
a subdirectory of the directory given), wherever they go; files a user names
(a spec, an ip-masq-agent config, a plan file, a bundle) are read by
:func:`read_input`: a regular file of bounded size, never waited on.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from k3snet._env import env_switch, env_value
from k3snet._regex import LazyPattern, lazy_pattern

__all__ = ["STATE_ROOT", "code_identity", "input_problem", "make_directory", "prune", "read_input",
           "read_trusted", "refuse_foreign_input", "refuse_foreign_output", "replace_atomically",
           "state_directory",
           "trusted", "untrusted", "write_atomic", "write_output", "write_output_in"]

STATE_ROOT = Path("/run/k3snet")
"""k3snet's state directory when no ``state_dir`` option or ``$K3SNET_STATE_DIR`` names
another: the netlink backend's sysctl records, the iptables backend's made chains, the
spec cache and the nftables backend's kept read live under it (one constant, read by
each of them)."""


def state_directory(name: str, default_root: Path, switch: str) -> Path | None:
    """``$K3SNET_STATE_DIR/name``, else ``default_root/name`` when ``default_root`` is a
    directory; ``None`` (nothing kept) when environment variable ``switch`` is ``off``
    (or ``0``, ``no``, ``false``) or neither applies, or ``$K3SNET_STATE_DIR`` is a
    relative path (the backends refuse it: kept under it, ``k3snet validate`` made
    ``st/spec-cache/`` in whatever directory it ran in)."""
    if not env_switch(switch, default=True):
        return None
    given = env_value("K3SNET_STATE_DIR")
    if given:
        return Path(given) / name if os.path.isabs(given) else None
    return default_root / name if default_root.is_dir() else None


def make_directory(directory: Path, mode: int) -> None:
    """``directory`` made with ``mode`` if missing, its missing parents with ``0755``,
    less the umask each (``Path.mkdir(parents=True)`` gives parents ``0777`` less the
    umask: under umask 0, ``/run/k3snet`` writable by every user, who could then move
    k3snet's locks and records away or plant their own in their place)."""
    missing = []
    for ancestor in (directory, *directory.parents):
        if os.path.lexists(ancestor):
            break
        missing.append(ancestor)
    for ancestor in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile: judged by its caller
            os.mkdir(ancestor, mode if ancestor == directory else 0o755)
    if not missing:
        directory.mkdir(mode=mode, exist_ok=True)  # not a directory: FileExistsError


def code_identity(directories: Iterable[Path]) -> str:
    """Name, size and mtime of every module in ``directories``: a development install
    changes the code without changing the version."""
    parts = []
    for directory in directories:
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.name.endswith(".py"):
                        info = entry.stat()
                        parts.append(f"{directory.name}/{entry.name}:{info.st_size}:"
                                     f"{info.st_mtime_ns}")
        except OSError:
            parts.append(f"{directory}: unreadable")
    return "\0".join(sorted(parts))


def trusted(info: os.stat_result) -> bool:
    """Owned by us (root on a node) and writable by nobody else (:func:`untrusted`)."""
    return untrusted(info) is None


def read_trusted(file: Path, limit: int) -> bytes | None:
    """The bytes of ``file`` (at most ``limit`` + 1 are read), or ``None`` when it is
    missing, unreadable, not a regular file, or it or its directory is not
    :func:`trusted`."""
    try:
        if not trusted(os.lstat(file.parent)):
            return None
        fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or not trusted(info):
                return None
            return handle.read(limit + 1)
    except OSError:
        return None


def read_input(file: str | Path, limit: int, *, follow: bool = True,
               owned: bool = False) -> bytes:
    """The bytes of a file a user named: a regular file of at most ``limit`` bytes.

    Anything else is an :class:`OSError` whose ``strerror`` says why (``a directory``,
    ``not a regular file``, ``larger than N bytes``, ``a symbolic link`` when not
    ``follow``; with ``owned``, a file another user than this one or root owns, or that
    group or others may write: whoever can write it decides what it says; and one whose
    way another user could change, a symbolic link on it of another user's or a directory
    on it that another user owns or may write (not sticky): they could put another file
    in its place, or a link to one, between two reads) and whose
    ``filename`` is ``file``. Only a regular file is ever opened
    for reading: a FIFO is not waited on for a writer, nor does it release one; a
    device is never opened (opening ``/dev/watchdog`` starts the machine's reboot
    countdown, a tape rewinds, a terminal could become this process's controlling
    one), nor read (``/dev/zero`` would not end). One exception: a pipe this process
    holds open, named ``/dev/fd/N`` or ``/proc/self/fd/N`` (bash's ``-f <(cat spec)``),
    is read from that descriptor, to its end and within ``limit``; once, what it gave
    being what a later read of that name returns.
    """
    # An O_PATH handle opens nothing: the file is judged by it, then the very inode it
    # names is opened for reading through /proc/self/fd (no other file swapped in).
    handle = os.O_PATH | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    if owned:
        way = _foreign_way(file, {os.geteuid(), 0})
        if way is not None:
            raise OSError(errno.EPERM, way, str(file))
    where = os.open(file, handle)
    try:
        info = os.fstat(where)
        if stat.S_ISLNK(info.st_mode):  # O_PATH | O_NOFOLLOW names the link itself
            raise OSError(errno.ELOOP, "a symbolic link", str(file))
        if stat.S_ISFIFO(info.st_mode) and (held := _held_pipe(file, info)) is not None:
            if owned:  # a pipe has an owner too: who made it decides what it says
                _refuse_unowned(info, file)
            return _read_held_pipe(held, info, limit, file)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise OSError(errno.EINVAL, kind, str(file))
        if info.st_size > limit:  # refused unread: limit + 1 bytes would be memory
            raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(file))
        if owned:
            _refuse_unowned(info, file)
        fd = _reopen(where, file, info)
    finally:
        os.close(where)
    try:
        with os.fdopen(fd, "rb", closefd=False) as reading:
            data = reading.read(limit + 1)  # more: a file growing, or one of /proc
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(file))
    return data


_HELD_PIPE = lazy_pattern(r"/(?:dev|proc/self)/fd/([0-9]+)")
_PIPES_READ: dict[tuple[int, int], bytes] = {}
"""What :func:`_read_held_pipe` read of each pipe (device, inode): each later read of
the same name (a spec is read by its checks, its cache and a plan file's digest) gets
those bytes, the pipe having given them once."""


def _held_pipe(file: str | Path, info: os.stat_result) -> int | None:
    """The descriptor ``file`` names when it is ``/dev/fd/N`` or ``/proc/self/fd/N`` of a
    pipe this process holds open (``info``'s): bash's ``-f <(cat spec.yaml)``. Not a
    named FIFO (its writer may never come), not one this process may write itself (its
    end would never come), nor any other path to one."""
    found = _HELD_PIPE.fullmatch(str(file))
    if found is None:
        return None
    fd = int(found.group(1))
    try:
        held = os.fstat(fd)
        # a named FIFO's link reads as its path, an unnamed pipe's as pipe:[inode]
        unnamed = os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
    except (OSError, OverflowError):
        return None
    if (not unnamed or not stat.S_ISFIFO(held.st_mode)
            or (held.st_dev, held.st_ino) != (info.st_dev, info.st_ino)
            or _writes_pipe(held)):  # its end would never come: the read would wait forever
        return None
    return fd


def _writes_pipe(pipe: os.stat_result) -> bool:
    """Whether a descriptor of this process may write the pipe ``pipe`` (an end of it
    opened for writing, or for both): unknown counts as yes."""
    key = (pipe.st_dev, pipe.st_ino)
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return True
    for name in fds:
        try:
            other = os.stat(f"/proc/self/fd/{name}")
        except OSError:
            continue  # closed since, or the listing's own descriptor
        if (other.st_dev, other.st_ino) != key:
            continue
        try:
            with open(f"/proc/self/fdinfo/{name}", encoding="ascii") as fdinfo:
                flags = next((int(line.split()[1], 8) for line in fdinfo
                              if line.startswith("flags:")), None)
        except (OSError, ValueError, IndexError):
            return True
        if flags is None or flags & os.O_ACCMODE != os.O_RDONLY:
            return True
    return False


def _read_held_pipe(fd: int, info: os.stat_result, limit: int, file: str | Path) -> bytes:
    """The bytes of the pipe open as descriptor ``fd`` up to its end, at most ``limit``
    (else an :class:`OSError` ``EFBIG``, the rest unread): read once, then kept."""
    key = (info.st_dev, info.st_ino)
    if key in _PIPES_READ:
        return _PIPES_READ[key]
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= limit:
            chunk = os.read(fd, min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(file)) from None
    if size > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(file))
    _PIPES_READ[key] = data = b"".join(chunks)
    return data


def _refuse_unowned(info: os.stat_result, file: str | Path) -> None:
    """An :class:`OSError` (``EPERM``) unless this user or root owns the file and neither
    its group nor others may write it."""
    if info.st_uid not in (os.geteuid(), 0):
        raise OSError(errno.EPERM, f"owned by uid {info.st_uid}, not by this user or root",
                      str(file))
    writers = [who for who, bit in (("group", stat.S_IWGRP), ("others", stat.S_IWOTH))
               if info.st_mode & bit]
    if writers:
        raise OSError(errno.EPERM, f"writable by {' and '.join(writers)} (mode "
                      f"{stat.S_IMODE(info.st_mode):04o})", str(file))


def refuse_foreign_input(file: str | Path, *, invoker: int | None = None) -> None:
    """An :class:`OSError` (``EPERM``, ``filename`` ``file``) unless the file ``file`` names
    (links followed, as it is read) is owned by this user, root or ``invoker`` (the user
    who ran sudo) and no other user may write it: not others, and not its group unless
    each user of it is one of those (:func:`_untrusted_users`: the owner's private group,
    where Debian's and Ubuntu's users get files of mode 0664, and ``root``).

    For a file whose contents root acts on, read by name afterwards (a spec): whoever
    else could write it could change what root does. The way to it is judged too (they
    could change it between this check and the read): a symbolic link on it that
    another user owns, and a directory on it that another user owns or may write
    (as the file, unless it has the sticky bit, where nobody may rename or remove
    another's entry, or is on a read-only mount: a Kubernetes ConfigMap volume is
    mode 0777). A missing or unreadable file, or one that is not a regular file, is
    left to the reader to report.
    """
    trusted = {os.geteuid(), 0, invoker}
    way = _foreign_way(file, trusted)
    if way is not None:  # checked, then read by name: that user could swap it between
        raise OSError(errno.EPERM, way, str(file))
    try:
        info = os.stat(file)
    except OSError:
        return
    if not stat.S_ISREG(info.st_mode):  # a device, a FIFO: the reader refuses it unread
        return
    if info.st_uid not in trusted:
        raise OSError(errno.EPERM, f"owned by uid {info.st_uid}, not by this user or root",
                      str(file))
    writers = _other_writers(info, trusted)
    if writers:
        raise OSError(errno.EPERM, f"writable by {writers} (mode "
                      f"{stat.S_IMODE(info.st_mode):04o})", str(file))


def _other_writers(info: os.stat_result, trusted: set[int | None]) -> str | None:
    """``others``, ``group G [of user(s) U, ...]`` or both when they may write the file or
    directory ``info`` describes (its group only when a user of it is not ``trusted``,
    those named: :func:`_untrusted_users`), else ``None``."""
    writers = [who for who, bit in (("others", stat.S_IWOTH),) if info.st_mode & bit]
    if info.st_mode & stat.S_IWGRP and (users := _untrusted_users(info.st_gid, trusted)) \
            is not None:
        # Its users named: "group root" alone reads as root's on a node where other
        # accounts have it as their primary group (RHEL's, Alpine's sync, halt, operator).
        shown = ", ".join(users[:4]) + (", ..." if len(users) > 4 else "")
        writers.insert(0, f"group {_group_name(info.st_gid)}"
                       + (f" of user(s) {shown}" if users else ""))
    return " and ".join(writers) or None


def _foreign_directory(directory: Path, trusted: set[int | None]) -> str | None:
    """Why another user than ``trusted`` could replace an entry of ``directory`` (it is
    theirs, or they may write it and it has no sticky bit), else ``None``."""
    try:
        info = os.lstat(directory)
    except OSError:
        return None  # left to the reader to report
    if info.st_uid not in trusted:
        return f"in directory {directory}, owned by uid {info.st_uid}"
    writers = None if info.st_mode & stat.S_ISVTX else _other_writers(info, trusted)
    if writers is None:
        return None
    with contextlib.suppress(OSError):
        # A read-only mount is written by nobody whatever its modes: a Kubernetes
        # ConfigMap volume, where the agent's spec is, is a directory of mode 0777.
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return None
    return (f"in directory {directory}, writable by {writers} (mode "
            f"{stat.S_IMODE(info.st_mode):04o})")


def _foreign_way(file: str | Path, trusted: set[int | None]) -> str | None:
    """Why a user outside ``trusted`` could change what the way to ``file`` leads to (as
    the kernel follows it): a symbolic link on it that such a user owns (``reached
    through LINK, a symbolic link of uid N``) or a directory on it that such a user owns
    or may write (:func:`_foreign_directory`); else ``None`` (a missing component or too
    many links are left to the reader to report)."""
    path = Path(file)
    pending = list(reversed((path if path.is_absolute() else Path.cwd() / path).parts[1:]))
    current, hops = Path("/"), 0
    judged: set[Path] = set()
    while pending:
        name = pending.pop()
        if name in ("", "."):
            continue
        if name == "..":
            current = current.parent
            continue
        if current not in judged:  # whoever may write it may replace the entry looked up
            judged.add(current)
            why = _foreign_directory(current, trusted)
            if why is not None:
                return why
        candidate = current / name
        try:
            info = os.lstat(candidate)
        except OSError:
            return None
        if not stat.S_ISLNK(info.st_mode):
            current = candidate
            continue
        if info.st_uid not in trusted:
            return f"reached through {candidate}, a symbolic link of uid {info.st_uid}"
        hops += 1
        if hops > 40:  # the kernel's limit: ELOOP, said by the reader
            return None
        target = Path(os.readlink(candidate))
        if target.is_absolute():
            current = Path("/")
        pending.extend(reversed(target.parts[1:] if target.is_absolute() else target.parts))
    return None


def _group_name(gid: int) -> str:
    import grp  # noqa: PLC0415 - only when a file is refused

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


class UserLookups:
    """What NSS said within one :func:`users_looked_up_once`: each group's users by gid,
    and every user's primary group (one ``pwd.getpwall``)."""

    def __init__(self) -> None:
        self.groups: dict[int, dict[str, int | None] | None] = {}
        self.by_primary: dict[int, dict[str, int]] | None = None


_LOOKED_UP: contextvars.ContextVar[UserLookups | None] = contextvars.ContextVar(
    "k3snet_looked_up_users", default=None)


@contextlib.contextmanager
def users_looked_up_once(kept: UserLookups | None = None) -> Iterator[None]:
    """Within it, NSS lists the users once (``pwd.getpwall``) and is asked about each
    group once: a spec read judges its file, each file it imports and every directory
    on their ways, and each group-writable one listed every user again (on a node whose
    users are in LDAP, a directory search a time, each read of the agent). What changes
    meanwhile (a user added) is seen by the next read. Within another, it keeps that
    one's answers; ``kept`` holds them over several (a file's looks until it settles)."""
    token = _LOOKED_UP.set(kept if kept is not None else _LOOKED_UP.get() or UserLookups())
    try:
        yield
    finally:
        _LOOKED_UP.reset(token)


def _untrusted_users(gid: int, trusted: set[int | None]) -> list[str] | None:
    """``None`` when every user of group ``gid`` is ``trusted`` (and it has one): its
    listed members and each user whose primary group it is. An owner's private group
    (Debian's and Ubuntu's users get files of mode 0664 in it) and ``root`` where root is
    its only user are; else the names of its users who are not (empty: a group unknown or
    without a user, where one may be added). ``root`` is not where other accounts have
    it as their primary group (RHEL's and Alpine's ``sync``, ``shutdown``, ``halt``,
    ``operator``). Users NSS does not enumerate (an LDAP directory without
    ``enumerate``) are not seen."""
    members = _group_users(gid)
    if members is None:
        return []
    others = [name for name, uid in members.items() if uid is None or uid not in trusted]
    return others if others or not members else None


def _group_users(gid: int) -> dict[str, int | None] | None:
    """The users of group ``gid`` (its listed members, then each user whose primary group
    it is) by name, with their uids (``None``: a member NSS does not know); ``None`` for
    a group NSS does not know. Once per group within :func:`users_looked_up_once`."""
    import grp  # noqa: PLC0415 - a few files only, and grp/pwd read NSS
    import pwd  # noqa: PLC0415

    looked = _LOOKED_UP.get() or UserLookups()  # outside one: asked afresh
    if gid in looked.groups:
        return looked.groups[gid]
    members: dict[str, int | None] | None
    try:
        listed = grp.getgrgid(gid).gr_mem
    except KeyError:
        members = None
    else:
        members = {}
        for name in listed:
            try:
                members[name] = pwd.getpwnam(name).pw_uid
            except KeyError:
                members[name] = None  # a name NSS does not know: not trusted
        if looked.by_primary is None:
            looked.by_primary = {}
            for user in pwd.getpwall():
                looked.by_primary.setdefault(user.pw_gid, {})[user.pw_name] = user.pw_uid
        members.update(looked.by_primary.get(gid, {}))
    looked.groups[gid] = members
    return members


def _reopen(where: int, file: str | Path, info: os.stat_result) -> int:
    """The regular file open as O_PATH handle ``where`` (``info``), open for reading."""
    # O_NOCTTY and O_NONBLOCK as well, should the file have changed kind meanwhile.
    flags = os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        try:
            fd = os.open(f"/proc/self/fd/{where}", flags)
        except FileNotFoundError:  # no /proc: by name again, and it must be that file
            fd = os.open(file, flags)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(file)) from None
    again = os.fstat(fd)
    if (again.st_dev, again.st_ino) != (info.st_dev, info.st_ino) \
            or not stat.S_ISREG(again.st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "replaced while being read", str(file))
    return fd


def input_problem(exc: OSError) -> str:
    """What :func:`read_input` (or ``open``) found wrong, without the errno number."""
    return exc.strerror or str(exc)


def write_atomic(file: Path, text: str | bytes, prefix: str) -> bool:
    """Replace ``file`` by ``text`` atomically (its directory made 0700 if missing, and
    only if it is :func:`trusted`); whether it was written."""
    try:
        replace_atomically(file, text, prefix, mode=0o700)
    except OSError:
        return False
    return True


def replace_atomically(file: Path, text: str | bytes, prefix: str, *, mode: int,
                       durable: bool = False) -> None:
    """Replace ``file`` by ``text`` atomically (a 0600 temporary file, never one that was
    there, then ``os.replace``), its directory made with ``mode`` if missing;
    :class:`PermissionError` naming why when that directory is not :func:`trusted`,
    :class:`OSError` when the write fails (nothing is then changed). ``durable``: the
    file is synced before the rename and its directory after (a record k3snet cannot do
    without: a power cut after a rename whose data was not yet written leaves an empty
    file on XFS, or ext4 with ``noauto_da_alloc``)."""
    make_directory(file.parent, mode)
    why = untrusted(os.lstat(file.parent))
    if why is not None:
        raise PermissionError(f"{file.parent} is {why}")
    if not durable:
        _replace(file, text, prefix, None)
        return
    fd = os.open(file.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        why = untrusted(os.fstat(fd))  # the directory written in: no other swapped in
        if why is not None:
            raise PermissionError(f"{file.parent} is {why}")
        _replace(file, text, prefix, None, dir_fd=fd, durable=True)
    finally:
        os.close(fd)


def write_output(file: Path, text: str | bytes, *, owner_writes_only: bool = False,
                 private: bool = False) -> None:
    """Write a file a user asked for: a new temporary file beside it, then a rename.

    A link standing at ``file`` is replaced, never followed (in a sticky directory
    such as ``/tmp``, replacing another user's link or file is refused to a user
    without ``CAP_FOWNER``, an ``OSError``; root replaces it, and the file is then
    root's); an interrupted write leaves what was there; the file gets the
    permissions of the regular file of the effective user's it replaces (not its
    set-user-ID, set-group-ID or sticky bit), else ``0666`` less the umask, as
    ``open()``'s; with ``owner_writes_only``, never writable by its group or others
    (a plan file: :func:`read_input` ``owned`` refuses such a file); ``private``:
    readable and writable by its owner only (a plan file holding a secret sysctl's value),
    also when the file it replaces was not.

    A FIFO or a character device at ``file`` (or a link to one) is written into, never
    replaced (:func:`_into_stream`): ``--out /dev/stdout``, ``--out >(gpg -e ...)``.
    """
    try:
        before = os.lstat(file)
    except FileNotFoundError:
        before = None
    # A regular file or a directory standing there is replaced at once (the common case:
    # no look at the descriptors this process holds); a link or a special file is looked at.
    if (before is not None and not stat.S_ISREG(before.st_mode)
            and not stat.S_ISDIR(before.st_mode) and _into_stream(file, before, text)):
        return
    mode = _output_mode(before)
    if owner_writes_only:
        mode &= ~0o022
    if private:
        mode &= 0o600
    _replace(file, text, f".{file.name}.", mode)


def write_output_in(directory: Path, name: str, text: str | bytes, *,
                    executable: bool = False, private: bool = False) -> Path:
    """Write ``directory/name`` as :func:`write_output` does, where ``name`` may go
    through subdirectories of ``directory`` (``10-eth0.network.d/90-k3snet.conf``),
    made if missing (``0755`` less the umask); returns the path. The file is writable
    by its owner only, whatever the umask or the mode of the file it replaces (a boot
    file root runs or loads). ``executable``: a script, executable by whoever may read
    it. ``private``: readable and writable by its owner only (netplan warns at every
    run about a file others can read).

    Such a subdirectory that is a symbolic link is followed only when it is the
    effective user's own: root writing into a directory another user can write must
    not put its file wherever that user's link points (:class:`PermissionError`).
    Each directory is opened once and the next one looked up in it, so no link can be
    swapped in between. ``directory`` itself is refused likewise when the way to it
    goes through another user's link or directory (:func:`refuse_foreign_output`).
    """
    refuse_foreign_output(directory)
    file = directory / name
    *subdirectories, leaf = Path(name).parts
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        below = directory
        for part in subdirectories:
            below = below / part
            parent, fd = fd, _subdirectory(fd, part, below)
            os.close(parent)
        try:
            before: os.stat_result | None = os.stat(leaf, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            before = None
        _refuse_special(file, before, lambda: os.stat(leaf, dir_fd=fd))
        # Never group or other write: under umask 0, or over a file of mode 0666, a boot
        # file root runs or loads was every user's to rewrite.
        mode = _output_mode(before) & ~0o022
        if executable:
            mode |= (mode & 0o444) >> 2
        if private:
            mode &= 0o700
        # A boot file: on disk before the rename, and the rename before we return, or a
        # crash soon after (a reboot that does not sync) left an empty file, or none.
        _replace(file, text, f".{leaf}.", mode, dir_fd=fd, durable=True)
    finally:
        os.close(fd)
    return file


def refuse_foreign_output(directory: Path) -> None:
    """A :class:`PermissionError` when another user than this one and root could change
    where ``directory`` leads (:func:`_foreign_way`): it, or a directory on the way to it,
    is theirs or writable by them (without the sticky bit), or a link on the way is
    theirs. ``render -o DIR`` followed another user's link at DIR and wrote root's boot
    files wherever it pointed, or into a directory that user could empty and refill."""
    why = _foreign_way(directory, {os.geteuid(), 0})
    if why is None:
        with contextlib.suppress(OSError):  # the way was judged; the directory itself:
            why = _foreign_directory(directory.resolve(), {os.geteuid(), 0})
    if why is not None:
        raise PermissionError(errno.EPERM, f"{why}: k3snet writes its files only where no "
                              "other user can redirect or replace them", str(directory))


def _subdirectory(parent: int, name: str, path: Path) -> int:
    """A descriptor of directory ``name`` of the one open as ``parent``, made if
    missing, followed through a link only when the link is ours."""
    with contextlib.suppress(FileExistsError):  # writable by its owner only, as the files
        os.mkdir(name, 0o755, dir_fd=parent)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    try:
        return os.open(name, flags | os.O_NOFOLLOW, dir_fd=parent)
    except OSError as exc:
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if not stat.S_ISLNK(info.st_mode):  # (a link is ENOTDIR or ELOOP, by kernel)
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        if info.st_uid != os.geteuid():
            raise PermissionError(
                errno.EPERM, f"a symbolic link of uid {info.st_uid}: k3snet follows only "
                "its own user's links in an output directory", str(path)) from None
        return os.open(name, flags, dir_fd=parent)


_SPECIAL_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                  (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


def _refuse_special(file: Path, before: os.stat_result | None,
                    target: Callable[[], os.stat_result]) -> None:
    """An :class:`OSError` when ``before`` (``file`` as :func:`os.lstat` found it) is a
    device, a FIFO or a socket, or a link to one (``target``: the file it points to):
    :func:`write_output_in`'s rename would replace it with a regular file. A rendered
    boot file is not written into one (:func:`write_output` writes into a FIFO or a
    terminal, :func:`_into_stream`); a link to ``/dev/null`` in ``/etc/sysctl.d`` is
    systemd's mask of a file of its name, which an admin set, and replacing it unmasked
    the file. A link to a regular file, a directory or nothing is replaced as before,
    never followed."""
    if before is None:
        return
    info, through = before, ""
    if stat.S_ISLNK(before.st_mode):
        try:
            info, through = target(), "a link to "
        except OSError:  # dangling, a loop, unreadable: the link alone is replaced
            return
    masked = bool(through) and stat.S_ISCHR(info.st_mode) and info.st_rdev == _NULL_DEVICE
    for test, kind in _SPECIAL_KINDS:
        if test(info.st_mode):
            raise OSError(errno.EINVAL, f"{through}{kind}, not a file: k3snet writes a new "
                          "file and renames it over the path, which would replace it; give "
                          "the path of a file" + (
                              " (a link to /dev/null masks a file of that name for systemd: "
                              "remove the link to have the file read)" if masked else ""),
                          str(file))


_NULL_DEVICE = os.makedev(1, 3)
"""``/dev/null``'s device number (Linux's, devices.txt): known without opening it, which
a chroot or a container may lack."""

_STREAM = os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC
"""How :func:`_into_stream` opens a FIFO or a device: no ``O_CREAT`` or ``O_TRUNC``."""


def _into_stream(file: Path, before: os.stat_result, text: str | bytes) -> bool:
    """Write ``text`` into the FIFO or character device ``file`` names (``before``: it
    as :func:`os.lstat` found it), through links too, as ``> FILE`` in a shell does, and
    return ``True``; ``False`` for a path :func:`write_output` replaces (a regular file,
    a directory, a link to one, a dangling link). Never renamed over, never chmod-ed:
    ``plan --out /dev/stdout`` replaced the node's ``/dev/stdout`` (a link) with a file.

    An :class:`OSError` naming ``file`` refuses: a block device or a socket; a character
    device other than ``/dev/null`` or one this process has open (its stdout, a terminal:
    opening a device can act, ``/dev/watchdog`` starts a reboot countdown); a FIFO not
    open here that another user (than this one and root) owns or could put on the way
    (:func:`_foreign_way`): they would read the plan, a secret sysctl's value in it; a
    link to a regular file this process has open (``--out /dev/stdout > FILE``), which
    only writing through the link could reach, and which the plan text printed on stdout
    too would overwrite.
    """
    info, through = before, ""
    if stat.S_ISLNK(before.st_mode):
        try:
            info, through = os.stat(file), "a link to "
        except OSError:  # dangling, a loop, unreadable: the link alone is replaced
            return False
    opened = _open_here(info)
    if stat.S_ISREG(info.st_mode) and through and opened:
        raise OSError(errno.EINVAL, "a link to a file this process has open (its output "
                      "redirected to it, as /dev/stdout > FILE), which k3snet would replace: "
                      "give the file's own path", str(file))
    if stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode):
        return False
    if stat.S_ISBLK(info.st_mode) or stat.S_ISSOCK(info.st_mode):
        kind = "a block device" if stat.S_ISBLK(info.st_mode) else "a socket"
        raise OSError(errno.EINVAL, f"{through}{kind}, not a file, a FIFO or a terminal: "
                      "give the path of a file", str(file))
    if stat.S_ISCHR(info.st_mode) and not opened and info.st_rdev != _NULL_DEVICE:
        raise OSError(errno.EINVAL, f"{through}a character device that is neither /dev/null "
                      "nor open in this process (its stdout, a terminal): k3snet opens no "
                      "other device (opening one can act, as /dev/watchdog's reboot "
                      "countdown); give the path of a file", str(file))
    if stat.S_ISFIFO(info.st_mode) and not opened:
        why = (f"a FIFO of uid {info.st_uid}" if info.st_uid not in (os.geteuid(), 0)
               else _foreign_way(file, {os.geteuid(), 0}))
        if why is not None:
            raise PermissionError(errno.EPERM, f"{why}: whoever owns it would read what "
                                  "k3snet writes into it", str(file))
    try:
        fd = os.open(file, _STREAM)  # a FIFO: waits for its reader, as a shell's > does
        try:
            now = os.fstat(fd)
            if (now.st_dev, now.st_ino, stat.S_IFMT(now.st_mode)) != \
                    (info.st_dev, info.st_ino, stat.S_IFMT(info.st_mode)):
                raise OSError(errno.EINVAL, "replaced while being opened")
            left = memoryview(text.encode() if isinstance(text, str) else text)
            while left:
                left = left[os.write(fd, left):]
        finally:
            os.close(fd)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(file)) from None
    return True


def _open_here(info: os.stat_result) -> bool:
    """Whether a descriptor of this process has the file ``info`` describes open (the
    shell opened it: ``/dev/stdout``, a ``/dev/fd/63`` of ``>(...)``)."""
    try:
        descriptors = os.listdir("/proc/self/fd")
    except OSError:
        return False
    for name in descriptors:
        with contextlib.suppress(OSError, ValueError):
            held = os.fstat(int(name))
            if (held.st_dev, held.st_ino) == (info.st_dev, info.st_ino):
                return True
    return False


def _output_mode(before: os.stat_result | None) -> int:
    """The mode of an output file replacing ``before``: its permission bits when it is a
    regular file of the effective user's (a set-user-ID bit copied onto a file root
    writes would make a root program of it), else ``0666`` less the umask. Another
    user's file gives nothing: planted at ``/tmp/node.plan`` with mode 0666, it made
    root's plan one that user could rewrite before root applied it."""
    if before is not None and stat.S_ISREG(before.st_mode) and before.st_uid == os.geteuid():
        return stat.S_IMODE(before.st_mode) & 0o777
    return 0o666 & ~_umask()


def _replace(file: Path, text: str | bytes, prefix: str, mode: int | None,
             dir_fd: int | None = None, *, durable: bool = False) -> None:
    """``text`` into a new temporary file beside ``file`` (0600, else ``mode``), renamed
    over it; nothing left behind on failure, whose :class:`OSError` names ``file``.
    ``dir_fd``: the directory of ``file`` as an open descriptor (the names are then
    looked up in it). ``durable`` (with ``dir_fd``): the file is synced before the
    rename and the directory after it."""
    try:
        fd, tmp = _temporary(file.parent, prefix, dir_fd)
    except OSError as exc:  # named after the file asked for, not the temporary one
        raise OSError(exc.errno, exc.strerror, str(file)) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode() if isinstance(text, str) else text)
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        if dir_fd is None:
            os.replace(tmp, file)
        else:
            os.replace(tmp.name, file.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            if durable:
                with contextlib.suppress(OSError):  # some filesystems refuse a directory's
                    os.fsync(dir_fd)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            if dir_fd is None:
                os.unlink(tmp)
            else:
                os.unlink(tmp.name, dir_fd=dir_fd)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror, str(file)) from exc
        raise


def _umask() -> int:
    """This process's umask, read without changing it (Linux shows it in its status)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def untrusted(info: os.stat_result) -> str | None:
    """Why a file or directory is not :func:`trusted` (``None`` when it is)."""
    if info.st_uid != os.geteuid():
        return f"owned by uid {info.st_uid}, not {os.geteuid()}"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by {'others' if info.st_mode & stat.S_IWOTH else 'its group'}"
    return None


def _temporary(directory: Path, prefix: str, dir_fd: int | None = None) -> tuple[int, Path]:
    """A new file (mode 0600) in ``directory`` (the one open as ``dir_fd`` when given),
    open for writing: what ``tempfile.mkstemp`` makes, without importing
    :mod:`tempfile` (with ``shutil`` and ``random``, ~5 ms of every cold process's
    start)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(16):
        path = directory / f"{prefix}{os.urandom(8).hex()}.tmp"
        try:
            if dir_fd is None:
                return os.open(path, flags, 0o600), path
            return os.open(path.name, flags, 0o600, dir_fd=dir_fd), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {directory}")


STALE_TEMPORARY = 3600.0
"""Seconds after which :func:`prune` removes a temporary file of :func:`write_atomic`'s
left behind: a writer killed (SIGKILL, the OOM killer, a power cut) between making it
and renaming it never removes it, and a live one renames its own within milliseconds."""


def prune(directory: Path, keep: Path, entries: int, suffix: str = ".json",
          stem: re.Pattern[str] | LazyPattern[str] | None = None, *,
          temporary: str | None = None) -> None:
    """Keep the ``entries`` newest files of ``directory`` named ``*suffix`` (and ``keep``);
    with ``stem``, only files whose name before ``suffix`` matches it are entries (the
    directory may hold another program's files: a namespace's sysctl record when the
    namespace has the directory's name). ``temporary``: the prefix the directory's
    writers give :func:`write_atomic`; their temporary files older than
    :data:`STALE_TEMPORARY` go too."""
    with contextlib.suppress(OSError):
        listed = list(os.scandir(directory))
        if temporary is not None:
            _prune_temporaries(listed, temporary)
        found = [(e.stat().st_mtime, e.path) for e in listed
                 if e.name.endswith(suffix) and e.is_file(follow_symlinks=False)
                 and (stem is None or stem.fullmatch(e.name.removesuffix(suffix)))]
        if len(found) <= entries:
            return
        for _, old in sorted(found, reverse=True)[entries:]:
            if old != str(keep):
                with contextlib.suppress(OSError):
                    os.unlink(old)


_HEX_DIGITS = frozenset("0123456789abcdef")


def _is_temporary(name: str, prefix: str) -> bool:
    """Whether ``name`` is ``prefix``, 16 lowercase hexadecimal digits and ``.tmp``, as
    :func:`_temporary` names a file (no pattern compiled for each call's prefix)."""
    return (len(name) == len(prefix) + 20 and name.startswith(prefix) and name.endswith(".tmp")
            and _HEX_DIGITS.issuperset(name[len(prefix):-4]))


def _prune_temporaries(listed: Iterable[os.DirEntry[str]], prefix: str) -> None:
    """Remove the temporary files named as :func:`_temporary` names them after ``prefix``
    that are older than :data:`STALE_TEMPORARY` (left by a killed writer)."""
    import time  # noqa: PLC0415 - only when a kept file was just written

    before = time.time() - STALE_TEMPORARY
    for entry in listed:
        with contextlib.suppress(OSError):
            if (_is_temporary(entry.name, prefix) and entry.is_file(follow_symlinks=False)
                    and entry.stat(follow_symlinks=False).st_mtime < before):
                os.unlink(entry.path)
