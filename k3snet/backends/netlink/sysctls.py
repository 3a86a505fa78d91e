"""Sysctls of one namespace: the files under ``/proc/sys`` and k3snet's state file.

The kernel cannot tell who set a sysctl, so the sysctls k3snet owns, and the
values they had before it took them over, are kept in a small JSON file per
namespace, tied to that namespace's identity (a file left by a deleted namespace
of the same name is ignored). Reads and writes of ``/proc/sys/net`` must run in
the target namespace's worker thread: the kernel resolves them against the
calling thread's namespace.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs

from k3snet._kept import make_directory, replace_atomically, untrusted
from k3snet.backends.netns import THREAD_NETNS, netns_path
from k3snet.errors import BackendError, ModelError
from k3snet.model.sysctl import (
    ALIASES,
    SPREADING,
    SPREADING_INVERTED,
    Sysctl,
    sysctl_name,
    sysctl_path,
)

__all__ = [
    "ALIASES",
    "SPREADING",
    "SPREADING_INVERTED",
    "LinkId",
    "SysctlState",
    "SysctlStore",
    "announced",
    "deletes_unannounced",
    "interface_of",
    "namespace_identity",
    "normal",
    "on_procfs",
    "open_unannounced_switch",
    "read_sysctls",
    "restore_spread",
    "spread_to",
    "spread_values",
    "write_sysctl",
]

_V = TypeVar("_V")

_STATE_FILE = "sysctl.json"
# The file of a namespace named "host", whose directory is that of the namespace k3snet
# runs in (as the iptables backend's iptables-made-netns.json).
_NAMED_HOST_FILE = "sysctl-netns.json"
_STATE_FORMAT = 1
_MAX_STATE_BYTES = 1 << 20  # a few hundred sysctls at most: a bigger file is corrupt

def _sysctl_file(root: Path, name: str) -> Path:
    return root / sysctl_path(name)


def read_sysctls(root: Path, names: Sequence[str]) -> dict[str, str | None]:
    """Current values under ``root`` (``None`` when absent or unreadable; ``""`` for an
    interface's IPv6 ``stable_secret`` none set, whose read the kernel answers EIO:
    present, and holding no value); run in the target namespace."""
    values: dict[str, str | None] = {}
    for name in names:
        try:
            values[name] = _sysctl_file(root, name).read_text()
        except OSError as exc:
            values[name] = "" if exc.errno == errno.EIO and unset_secret(name) else None
    return values


def unset_secret(name: str) -> bool:
    """Whether sysctl ``name`` is an interface's IPv6 ``stable_secret``, which the kernel
    may hold unset (``addrconf_sysctl_stable_secret``: a read is EIO until one is
    written, and none can be unset again: an empty write is refused, EIO; a write sets
    the interface's ``addr_gen_mode`` to 2, ``default``'s every interface's)."""
    path = sysctl_path(name).split("/")
    return path[:3] == ["net", "ipv6", "conf"] and path[-1] == "stable_secret"


def write_sysctl(root: Path, name: str, value: str) -> None:
    """Write ``value`` under ``root``; run in the target namespace.

    No O_CREAT: a sysctl that does not exist is an error, never a new file.
    O_TRUNC is what a shell redirection does (procfs ignores it) and keeps a plain
    file standing in for ``/proc/sys`` exact.
    """
    fd = os.open(_sysctl_file(root, name), os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def interface_of(name: str) -> str | None:
    """The interface a per-interface sysctl belongs to (``net.ipv4.conf.eth0.rp_filter``:
    ``eth0``); ``None`` for ``all``, ``default`` and sysctls of no interface."""
    parts = sysctl_path(name).split("/")
    if (len(parts) == 5 and parts[1] in ("ipv4", "ipv6") and parts[2] in ("conf", "neigh")
            and parts[3] not in ("all", "default")):
        return parts[3]
    return None


@functools.lru_cache(maxsize=4096)
def announced(name: str) -> bool:
    """Whether the kernel announces every change of sysctl ``name`` with a netconf
    notification (``RTM_NEWNETCONF`` to ``RTNLGRP_IPV4_NETCONF`` or
    ``RTNLGRP_IPV6_NETCONF``): the ``forwarding`` switches of both families
    (``net.ipv4.ip_forward`` too) and IPv4's ``rp_filter``, of ``all``, ``default`` and
    each interface (``devinet_conf_proc``, ``addrconf_fixup_forwarding``). Not
    ``accept_ra``, ``disable_ipv6`` nor most others: those are read."""
    if name == "net.ipv4.ip_forward":
        return True
    parts = sysctl_path(name).split("/")
    return (len(parts) == 5 and parts[0] == "net" and parts[2] == "conf"
            and ((parts[1] in ("ipv4", "ipv6") and parts[4] == "forwarding")
                 or (parts[1] == "ipv4" and parts[4] == "rp_filter")))


def open_unannounced_switch(root: Path) -> int | None:
    """``net.ipv6.route.skip_notify_on_dev_down`` under ``root``, opened in the calling
    thread's namespace (a proc file keeps it), or ``None`` (a kernel without it, before
    5.1, or without IPv6: it announces every deletion). Read it with
    :func:`deletes_unannounced`; the caller closes it."""
    try:
        return os.open(root / "net/ipv6/route/skip_notify_on_dev_down",
                       os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def deletes_unannounced(fd: int | None) -> bool:
    """Whether the kernel may now delete IPv6 routes without a notification (``fd``: of
    :func:`open_unannounced_switch`): with ``skip_notify_on_dev_down = 1`` (FRR's advice
    for nodes of many routes), ``disable_ipv6`` turned on for an interface without an
    IPv6 address (a WireGuard tunnel) deletes the routes through it with no notification
    at all, so a view kept from notifications cannot tell. ``pread``: a few µs, no
    thread hop."""
    if fd is None:
        return False
    try:
        return os.pread(fd, 16, 0).strip() not in (b"", b"0")
    except OSError:
        return False


_STABLE_PRIVACY = "2"
"""``IN6_ADDR_GEN_MODE_STABLE_PRIVACY``: the ``addr_gen_mode`` a ``stable_secret``'s write sets."""


def _secret_interface(name: str) -> str | None:
    """The interface (``default`` too) whose IPv6 ``stable_secret`` ``name`` is, else None
    (``all``'s the kernel refuses, EIO)."""
    path = sysctl_path(name).split("/")
    if len(path) == 5 and path[:3] == ["net", "ipv6", "conf"] and path[4] == "stable_secret" \
            and path[3] != "all":
        return path[3]
    return None


def spread_to(name: str, switch: str, value: str) -> str:
    """The value the kernel gives ``switch`` (one of :func:`spread_values`) when ``name``
    is written with ``value`` (a value that changes it)."""
    if _secret_interface(name) is not None:
        return _STABLE_PRIVACY  # whatever the secret
    if switch in SPREADING_INVERTED.get(name, ()):
        return "0" if value != "0" else "1"
    return value


def spread_values(root: Path, name: str) -> dict[str, str]:
    """The switches a write of ``name`` sets, with their values now: the same switch of
    ``default`` and of each interface (:data:`SPREADING`), and those it sets to the
    opposite (:data:`SPREADING_INVERTED`); empty for another sysctl. Run in the target
    namespace. An interface whose name no sysctl name can spell is left out.

    An IPv6 ``stable_secret``'s write sets its interface's ``addr_gen_mode`` to 2
    (``default``'s: every interface's, not ``default``'s own nor ``all``'s;
    ``addrconf_sysctl_stable_secret``), whatever the secret: those modes, recorded at
    the take-over and given back with the secret, are its switches. Without them a
    rollback or ``destroy`` left the interface generating stable-privacy addresses."""
    interface = _secret_interface(name)
    if interface is not None:
        return _secret_modes(root, interface)
    conf = SPREADING.get(name)
    if conf is None:
        return {}
    leaf = "forwarding" if name == "net.ipv4.ip_forward" else name.rsplit(".", 1)[1]
    inverted = SPREADING_INVERTED.get(name, ())
    values = read_sysctls(root, inverted)
    found: dict[str, str] = {switch: value for switch in inverted
                             if (value := normal(switch, values[switch])) is not None}
    try:
        entries = sorted(os.listdir(root / conf))
    except OSError:  # a stand-in for /proc/sys without that directory
        return found
    for entry in entries:
        if entry == "all":  # the switch itself (ip_forward and all.forwarding mirror each other)
            continue
        try:
            switch = sysctl_name(f"{conf}/{entry}/{leaf}")
        except ModelError:
            continue
        value = normal(switch, read_sysctls(root, [switch])[switch])
        if value is not None:
            found[switch] = value
    return found


def _secret_modes(root: Path, interface: str) -> dict[str, str]:
    """The ``addr_gen_mode`` of ``interface`` (``default``: of every interface) with its
    value now, what the write of its ``stable_secret`` sets to 2."""
    if interface != "default":
        # (by path: a VLAN's name holds a dot, eth0.100)
        names = [sysctl_name(f"net/ipv6/conf/{interface}/addr_gen_mode")]
    else:
        try:
            entries = sorted(os.listdir(root / "net/ipv6/conf"))
        except OSError:  # a stand-in for /proc/sys without that directory
            return {}
        names = []
        for entry in entries:
            if entry in ("all", "default"):
                continue
            try:
                names.append(sysctl_name(f"net/ipv6/conf/{entry}/addr_gen_mode"))
            except ModelError:
                continue
    values = read_sysctls(root, names)
    return {switch: value for switch in names
            if (value := normal(switch, values[switch])) is not None}


def on_procfs(root: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> bool:
    """Whether ``root`` lies on a proc file system (``/proc/sys``, a pod's
    ``/host/proc/sys``): its switches are the kernel's, which announces their changes.
    A directory standing in for it (tests) is not: its files change unannounced.
    ``mountinfo``: the mounts to look in (the mount with the longest mount point
    holding ``root`` is the one; the last of a mount point stacked over). Its bytes are
    file names, not text: a mount point of other bytes than UTF-8 (``ip netns add``
    of such a name mounts one under ``/run/netns``) is compared as the path's own
    (``os.fsdecode``), and a line ends at a newline alone (the kernel escapes one in a
    path; ``str.splitlines`` also split at ``\\x85`` or ``\\u2028``), fields at a space."""
    try:
        path = os.path.realpath(root)
        lines = os.fsdecode(mountinfo.read_bytes()).split("\n")
    except OSError:
        return False
    best, kind = -1, ""
    for line in lines:
        fields, _, rest = line.partition(" - ")
        parts = fields.split(" ")  # str.split() also splits at \u2028 in a path
        if len(parts) < 5 or not rest:
            continue
        point = _unescape(parts[4])
        holds = path == point or path.startswith(point.rstrip("/") + "/")
        if holds and len(point) >= best:
            best, kind = len(point), rest.split(" ")[0]
    return kind == "proc"


def _unescape(field: str) -> str:
    """A mountinfo field as the path it names (spaces and such are octal escapes)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def restore_spread(root: Path, values: Mapping[str, str]) -> None:
    """Write back each switch of ``values`` (:func:`spread_values`) that holds another
    value now; one whose interface is gone is skipped. Run in the target namespace."""
    now = read_sysctls(root, list(values))
    for switch, value in values.items():
        if normal(switch, now[switch]) in (None, value):
            continue
        with contextlib.suppress(FileNotFoundError):  # the interface left meanwhile
            write_sysctl(root, switch, value)


def normal(name: str, raw: str | None) -> str | None:
    """The model's spelling of a raw kernel value (``None`` when it has none)."""
    if raw is None:
        return None
    try:
        return Sysctl(name, raw).value
    except ModelError:  # an empty value
        return None


_BORROWED_ADDRESS_KINDS = frozenset({"bridge", "bond", "team", "hsr"})
"""The kinds of interface whose hardware address the kernel takes from another device
and changes with it (a bridge's follows its ports, the lowest port's unless set; a
bond's, team's or HSR device's its first or active slave), and that the kernel never
moves to another namespace (``ip link set X netns N`` refuses them): another one takes
a deleted one's index only when made with ``index N``. Their address tells nothing of
which interface they are; their kind does. Not so a VLAN, an IPVLAN or a MACVLAN (a
passthru one's address follows the device under it): they move between namespaces (a
CNI plugin moves them into pods), and one moved in with a deleted one's index would
be taken for it; their address tells them, and a change of the device under them
leaves a record k3snet cannot tell."""


@attrs.frozen
class LinkId:
    """An interface as a record of the state file is tied to it: its index, and what
    tells it from another interface given that index later.

    A rename keeps an interface's index, kind and hardware addresses; another interface
    can take over a deleted one's index (``ip link set X netns N`` keeps X's index when
    it is free there), and then has another hardware address, unless an administrator
    gave it that one (a tunnel, having none, is told by its kind alone, and so is an
    interface whose address the kernel takes from its ports or slaves:
    :data:`_BORROWED_ADDRESS_KINDS`).
    """

    index: int
    kind: str | None = None
    address: str | None = None
    permanent: str | None = None
    marked: bool = True
    """False for a record of an older version: the index alone."""

    def judge(self, now: LinkId | None) -> bool | None:
        """Whether ``now`` (an interface of the namespace now) is the recorded one:
        ``None`` when that cannot be told (a record of the index alone; the same kind
        with another hardware address: changed, as a bond's slave's, or another
        interface's), save for a kind whose address follows another device's
        (:data:`_BORROWED_ADDRESS_KINDS`), told by its kind alone."""
        if now is None or now.index != self.index or (self.marked and now.kind != self.kind):
            return False
        if not self.marked:
            return None
        if self.permanent is not None and now.permanent is not None:
            return self.permanent == now.permanent  # a NIC's own: what no one changes
        if self.kind in _BORROWED_ADDRESS_KINDS:
            return True  # a bridge given a port of a lower address is the same bridge
        return True if self.address == now.address else None


def _holds(recorded: LinkId, now: LinkId | None, *, same_name: bool) -> bool:
    """Whether ``now`` is the interface ``recorded`` (:meth:`LinkId.judge`); a record of
    the index alone holds an interface of the recorded name and index (as the version
    writing it judged), never one of another name: a rename and another interface
    moved in with that index look alike."""
    judged = recorded.judge(now)
    return judged is True or (judged is None and not recorded.marked and same_name)


@attrs.define
class SysctlState:
    """The state file's content: owned sysctls ``{name: (value, previous)}``, names
    k3snet owned once and gave back (reported as foreign from then on), and, for an
    owned sysctl of :data:`SPREADING`, the switches its write overwrote that held
    another value than its previous one, and those of :data:`SPREADING_INVERTED`
    whatever they held, ``{name: {switch: value}}`` (written back with the previous
    value)."""

    owned: dict[str, tuple[str, str | None]] = attrs.field(factory=dict)
    released: set[str] = attrs.field(factory=set)
    spread: dict[str, dict[str, str]] = attrs.field(factory=dict)
    links: dict[str, LinkId] = attrs.field(factory=dict)
    """For an owned sysctl of one interface (:func:`interface_of`), that interface when
    k3snet took it over: another interface of the same name, or given its index, is not
    it."""
    spread_links: dict[str, dict[str, LinkId]] = attrs.field(factory=dict)
    """For the switches of ``spread`` on one interface, that interface when k3snet took
    ``name`` over, ``{name: {switch: interface}}``: the record follows the interface's
    rename (``default``'s ``stable_secret`` records every interface's ``addr_gen_mode``),
    and another interface given its name or its index since is not it."""

    def copy(self) -> SysctlState:
        """A copy that later changes of this one leave alone."""
        return SysctlState(dict(self.owned), set(self.released),
                           {name: dict(values) for name, values in self.spread.items()},
                           dict(self.links),
                           {name: dict(values) for name, values in self.spread_links.items()})

    def follow(self, indexes: Mapping[str, LinkId]) -> SysctlState:
        """This state with each owned sysctl of an interface renamed since its take-over
        under the interface's new name (``indexes``: the namespace's links by name);
        itself when none was.

        The kernel renames a link that is up too, and the value k3snet wrote stays with
        it: under the old name, k3snet owned a sysctl no interface has, and gave the
        renamed one nothing back. A name another owned sysctl holds on its own
        interface is left alone, and so is an interface that only has the recorded
        index (:meth:`LinkId.judge`). A record of the index alone (an older version's)
        found on its interface is completed with what tells that interface apart.
        """
        names = {link.index: name for name, link in indexes.items()}
        spread, spread_links = self._followed_switches(indexes, names)
        links = {name: indexes[interface] if not recorded.marked
                 and (interface := interface_of(name)) is not None
                 and _holds(recorded, indexes.get(interface), same_name=True) else recorded
                 for name, recorded in self.links.items()}
        moved: dict[str, str] = {}
        for name, recorded in links.items():
            interface = interface_of(name)
            if (name not in self.owned or interface is None
                    or _holds(recorded, indexes.get(interface), same_name=True)
                    or recorded.index not in names):
                continue
            now = names[recorded.index]
            if not _holds(recorded, indexes[now], same_name=False):
                continue  # another interface given its index, or one k3snet cannot tell
            parts = sysctl_path(name).split("/")
            parts[3] = now
            try:
                moved[name] = sysctl_name("/".join(parts))
            except ModelError:  # a name no sysctl can spell: left as it is
                continue
        moved = {old: new for old, new in moved.items()
                 if new not in self.owned or new in moved or not self.owns(new, indexes)}
        if not moved:
            if (spread == self.spread and spread_links == self.spread_links
                    and links == self.links):
                return self
            return SysctlState(dict(self.owned), set(self.released), spread, links,
                               spread_links)

        # The switches of a moved one on its own interface (a stable_secret's
        # addr_gen_mode) move with it: under the old name no interface had them, and
        # the renamed one's mode was not given back. (A record of a switch's interface
        # moved it already: its interface is then no longer the old name's.)
        def switch_moved(name: str, switch: str) -> str:
            if name in moved and interface_of(switch) == interface_of(name):
                return _on_interface(switch, moved[name])
            return switch

        spread = {name: {switch_moved(name, switch): value for switch, value in values.items()}
                  for name, values in spread.items()}
        spread_links = {name: {switch_moved(name, switch): index
                               for switch, index in values.items()}
                        for name, values in spread_links.items()}
        return SysctlState(_renamed(self.owned, moved), self.released - set(moved.values()),
                           _renamed(spread, moved), _renamed(links, moved),
                           _renamed(spread_links, moved))

    def _followed_switches(self, indexes: Mapping[str, LinkId], names: Mapping[int, str],
                           ) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, LinkId]]]:
        """``spread`` and ``spread_links`` with each switch recorded with its interface
        under that interface's name now (``indexes``: the namespace's links by name,
        ``names`` their names by index); the record of a switch whose interface is gone
        is dropped (another interface given its name or its index is not it), and so is
        one whose interface k3snet cannot tell (:func:`_holds`): its switch is left as
        it is."""
        spread: dict[str, dict[str, str]] = {}
        spread_links: dict[str, dict[str, LinkId]] = {}
        for name, values in self.spread.items():
            recorded = self.spread_links.get(name, {})
            kept: dict[str, str] = {}
            kept_links: dict[str, LinkId] = {}
            for switch, value in values.items():
                link = recorded.get(switch)
                interface = interface_of(switch)
                new = switch
                if link is not None and interface is not None:
                    if _holds(link, indexes.get(interface), same_name=True):
                        link = indexes[interface]  # (completes an older version's record)
                    else:
                        now = names.get(link.index)
                        if now is None or not _holds(link, indexes[now], same_name=False):
                            continue  # its interface is gone, or cannot be told
                        parts = sysctl_path(switch).split("/")
                        parts[3] = now
                        try:
                            new = sysctl_name("/".join(parts))
                        except ModelError:  # a name no sysctl can spell
                            continue
                kept[new] = value
                if link is not None:
                    kept_links[new] = link
            spread[name] = kept
            if kept_links:
                spread_links[name] = kept_links
        return spread, spread_links

    def owns(self, name: str, indexes: Mapping[str, LinkId]) -> bool:
        """Whether ``name`` is owned here, on the very interface it was taken over on
        (``indexes``: the namespace's links by name)."""
        if name not in self.owned:
            return False
        recorded = self.links.get(name)
        interface = interface_of(name) if recorded is not None else None
        return (interface is None or recorded is None
                or _holds(recorded, indexes.get(interface), same_name=True))

    def doubts(self, indexes: Mapping[str, LinkId],
               read: Callable[[list[str]], Mapping[str, str | None]] | None = None,
               ) -> list[str]:
        """The records of this state as loaded (not followed) tied to an interface k3snet
        cannot tell (:func:`_holds`), each said in a sentence: the sysctls and switches
        they name are left alone (``indexes``: the namespace's links by name). Each names
        the value to give back by hand, which a take-over anew (the spec asking another
        value) records no more.

        ``read``: reads sysctls' raw values (:func:`read_sysctls`), called once, only when
        an owned sysctl is in doubt. The interface's sysctl that no longer holds k3snet's
        value is left unsaid: given back by hand as the sentence asked, or set by another
        since, it has nothing of k3snet's to give back (said still, the sentence would
        last as long as the record, which nothing else ends)."""
        names = {link.index: name for name, link in indexes.items()}
        found: list[tuple[str, str, LinkId, str | None, str | None]] = [
            (name, name, recorded, self.owned[name][1], self.owned[name][0])
            for name, recorded in self.links.items() if name in self.owned]
        found += [(f"{switch} (spread by {name})", switch, recorded,
                   self.spread.get(name, {}).get(switch), None)
                  for name, switches in self.spread_links.items()
                  for switch, recorded in switches.items() if name in self.owned]
        doubted = []
        for what, sysctl, recorded, previous, mine in sorted(found, key=lambda entry: entry[0]):
            now = names.get(recorded.index)
            if (now is None or recorded.judge(indexes[now]) is not None
                    or _holds(recorded, indexes[now], same_name=now == interface_of(sysctl))):
                continue  # gone, told apart (followed, or another interface), or held
            there = None if mine is None else _at_interface(sysctl, now)
            doubted.append((what, recorded, previous, now, there, mine))
        wanted = [there for *_entry, there, _mine in doubted if there is not None]
        values = read(wanted) if read is not None and wanted else {}
        said = []
        for what, recorded, previous, now, there, mine in doubted:
            if there is not None and there in values and normal(there, values[there]) != mine:
                continue  # k3snet's value is no longer there
            why = ("an older k3snet recorded its index alone" if not recorded.marked
                   else "its hardware address changed since")
            back = ("give it back by hand if it is" if previous is None
                    else f"if it is, give it back its value before k3snet by hand: {previous!r}")
            said.append(f"{what}: k3snet cannot tell whether interface {now} (index "
                        f"{recorded.index}) is the one it recorded ({why}), and leaves it "
                        f"alone; {back}")
        return said


def _at_interface(name: str, interface: str) -> str | None:
    """Sysctl ``name`` (of an interface) on ``interface``; ``None`` if none can spell it."""
    parts = sysctl_path(name).split("/")
    parts[3] = interface
    try:
        return sysctl_name("/".join(parts))
    except ModelError:
        return None


def _on_interface(switch: str, name: str) -> str:
    """``switch`` (a sysctl of an interface) under the interface of sysctl ``name``."""
    parts = sysctl_path(switch).split("/")
    parts[3] = sysctl_path(name).split("/")[3]
    return sysctl_name("/".join(parts))


def _renamed(table: Mapping[str, _V], moved: Mapping[str, str]) -> dict[str, _V]:
    """A copy of ``table`` with the keys of ``moved`` under their new names (all at once:
    two interfaces may have swapped names)."""
    renamed = {name: value for name, value in table.items() if name not in moved}
    renamed.update({moved[name]: value for name, value in table.items() if name in moved})
    return renamed


class SysctlStore:
    """The JSON state file of one namespace, written atomically, tied to that namespace.

    The namespace's identity (device and inode of its nsfs file) and ``instance``
    (:func:`~k3snet.backends.netns.namespace_instance`: the namespace's cookie, and a
    named one's boot id) are stored too: a file left by a deleted namespace of the same
    name is ignored, never trusted, also when the kernel gave the new namespace the old
    one's inode (as it does as soon as that namespace is freed), and a named
    namespace's after a reboot (a ``state_dir`` that is no tmpfs). A file without an
    instance (written by k3snet before 2026-12-05, or where the kernel gives no cookie)
    is judged by the identity alone.
    ``legacy``: a directory whose ``sysctl.json`` older versions shared between
    namespaces; while this namespace has no file of its own, that one is read when
    it names this namespace, and the first save removes it (so it is read once).
    ``earlier``: the directories of the names this namespace was reached by, when its
    records are kept under another (:func:`~k3snet.backends.netns.record_netns`: before
    2026-12-05 ``ip netns exec NAME`` kept them in ``host``'s, a name of the node's own
    namespace in its own; a name given later may sort before the one they are kept
    under); read in turn and removed the same way. In ``host``'s, a namespace's own
    (not the node's) reads the file of a namespace named ``host`` too: one so named
    that was given a name sorting first found nothing.

    A namespace named ``host`` shares its directory with the namespace k3snet runs in
    (``None``): its file is ``sysctl-netns.json`` there. Before 2026-12-05 it was
    ``sysctl.json``, refused to the other: that one is read as a legacy file, and the
    namespace k3snet runs in moves it to ``sysctl-netns.json`` when it meets it.
    """

    def __init__(self, directory: Path, namespace: str | None, identity: str, *,
                 legacy: Path | None = None, shared: bool = False,
                 earlier: Sequence[Path] = (), instance: str | None = None,
                 file: str | None = None) -> None:
        self.directory = directory
        named_host = namespace == "host" and not shared
        self.path = directory / (file or (_NAMED_HOST_FILE if named_host else _STATE_FILE))
        self.namespace = namespace
        self.identity = identity
        self.instance = instance
        self.shared = shared
        """A file several namespaces took turns in (``legacy``): another's is ignored."""
        # Read in turn while this namespace has no file of its own: host/sysctl.json for
        # a namespace named host, then the state_dir's own of before 2026-12-04.
        # In host/ for another namespace, its file as a namespace named host's too: one
        # so named given a name sorting first keeps its records under that one.
        named_elsewhere = namespace not in (None, "host")
        olders = [(place, name) for place in earlier for name in (
            (_STATE_FILE, _NAMED_HOST_FILE) if place.name == "host" and named_elsewhere
            else (_STATE_FILE,))]
        self.legacy: SysctlStore | None = None
        for older, name in reversed([*olders,
                                     *([(directory, _STATE_FILE)] if named_host else []),
                                     *([] if legacy is None else [(legacy, _STATE_FILE)])]):
            store = SysctlStore(older, namespace, identity, shared=True, instance=instance,
                                file=name)
            store.legacy = self.legacy
            self.legacy = store

    def load(self) -> SysctlState:
        """The file's content (empty when absent or left by another namespace).

        It says which sysctls k3snet owns and what to write back into them, so it is
        read only when it and its directory are k3snet's (owned by the effective user,
        writable by nobody else: :func:`k3snet._kept.trusted`), and never through a
        link; otherwise :class:`~k3snet.errors.BackendError` names the file and why.
        """
        text = self._read()
        if text is None:
            # The first older file kept for this namespace: one of another (the node's
            # own record in host's) is passed over.
            legacy = self.legacy
            while legacy is not None:
                older = legacy._read() if os.path.lexists(legacy.path) else None
                state = None if older is None else legacy._parse(older)
                if state is not None:
                    return state
                legacy = legacy.legacy
            return SysctlState()
        state = self._parse(text)
        return SysctlState() if state is None else state

    def _parse(self, text: str) -> SysctlState | None:
        """The state ``text`` holds, ``None`` when it was written for another namespace
        (see :meth:`load`)."""
        try:
            data = json.loads(text)
            if data.get("format") != _STATE_FORMAT:
                raise ValueError(f"unknown format {data.get('format')!r}")
            written_for = data.get("namespace", self.namespace)
            if (written_for == "host" and self.namespace is None and not self.shared
                    and self._hand_over_named_host()):
                return SysctlState()  # the namespace named host's, now in its own file
            if written_for != self.namespace and not self.shared:
                # The namespace k3snet runs in and one named "host" share a directory:
                # taken as a stale file, the other's was replaced by the first save.
                raise BackendError(
                    f"the sysctl state file {self.path} is that of {_describe(written_for)}, "
                    f"not of {_describe(self.namespace)}: both are kept in that "
                    "directory; give one of them another state_dir (K3SNET_STATE_DIR, "
                    "--backend-opt netlink.state_dir=DIR)")
            if not self._mine(data):
                return None  # left by another namespace of the same name
            owned = {str(name): (str(entry["value"]), _recorded_previous(entry))
                     for name, entry in data.get("owned", {}).items()}
            released = {str(name) for name in data.get("released", ())}
            spread = {str(name): {str(switch): str(value) for switch, value in values.items()}
                      for name, values in data.get("spread", {}).items()}
            marks = data.get("link_marks", {})
            links = {str(name): _link_id(index, marks.get(name))
                     for name, index in data.get("links", {}).items()}
            spread_marks = data.get("spread_link_marks", {})
            spread_links = {str(name): {str(switch): _link_id(
                                            index, spread_marks.get(name, {}).get(switch))
                                        for switch, index in values.items()}
                            for name, values in data.get("spread_links", {}).items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BackendError(
                f"the sysctl state file {self.path} is corrupt ({exc}); k3snet cannot tell "
                "which sysctls it owns until it is repaired or removed"
            ) from exc
        return SysctlState(owned, released, spread, links, spread_links)

    def _mine(self, data: Mapping[str, object]) -> bool:
        """Whether the file's document ``data`` was written for this very namespace: its
        identity, and its instance when both it and this store have one."""
        if data.get("identity") != self.identity:
            return False
        written = data.get("instance")
        return written is None or self.instance is None or written == self.instance

    def _hand_over_named_host(self) -> bool:
        """Move this file, written for a namespace named ``host`` before it had a file of
        its own, to that file (``sysctl-netns.json``; never over one): the next save here
        would replace it. False when it cannot be moved."""
        try:
            os.link(self.path, self.directory / _NAMED_HOST_FILE, follow_symlinks=False)
        except OSError:
            return False
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        return True

    def signature(self) -> tuple[object, ...]:
        """What moves whenever :meth:`load` may answer otherwise: the file's (and the
        legacy file's) inode, times, size, mode and owner, its directory's mode and
        owner. Saves replace the file (a new inode), so a save within one clock tick
        moves it too."""
        def of(path: Path, directory: bool = False) -> object:
            try:
                info = os.lstat(path)
            except OSError:
                return None
            if directory:
                return info.st_mode, info.st_uid, info.st_gid
            return (info.st_ino, info.st_dev, info.st_mtime_ns, info.st_ctime_ns,
                    info.st_size, info.st_mode, info.st_uid, info.st_gid)

        olders = []
        legacy = self.legacy
        while legacy is not None:
            olders.append(of(legacy.path))
            legacy = legacy.legacy
        return (of(self.directory, directory=True), of(self.path), *olders)

    def _read(self) -> str | None:
        """The file's text, ``None`` when there is none (see :meth:`load`)."""
        try:
            why = untrusted(os.lstat(self.directory))
            if why is not None:
                raise self._untrusted(f"the directory of the sysctl state file {self.path}", why)
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            problem = "not a regular file (a link)" if exc.errno == errno.ELOOP else str(exc)
            raise BackendError(f"cannot read the sysctl state file {self.path}: "
                               f"{problem}") from exc
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            why = "not a regular file" if not stat.S_ISREG(info.st_mode) else untrusted(info)
            if why is not None:
                raise self._untrusted(f"the sysctl state file {self.path}", why)
            return handle.read(_MAX_STATE_BYTES).decode(errors="replace")

    @staticmethod
    def _untrusted(subject: str, why: str) -> BackendError:
        return BackendError(f"{subject} is {why}: k3snet takes which sysctls it owns only "
                            "from a file of its own")

    def save(self, state: SysctlState) -> None:
        """Write ``state`` atomically (a new temporary file renamed into place), into a
        directory that is k3snet's only (see :meth:`load`)."""
        data: dict[str, object] = {
            "format": _STATE_FORMAT,
            "namespace": self.namespace,
            "identity": self.identity,
            **({} if self.instance is None else {"instance": self.instance}),
            "owned": {name: _previous_entry(value, previous)
                      for name, (value, previous) in sorted(state.owned.items())},
            "released": sorted(state.released),
        }
        spread = {name: dict(sorted(values.items()))
                  for name, values in sorted(state.spread.items()) if values}
        if spread:  # left out when empty: older versions wrote no such key
            data["spread"] = spread
        links = {name: link for name, link in sorted(state.links.items())
                 if name in state.owned}
        if links:
            # The indexes where older versions read them; what tells the interface
            # apart beside them (a key they neither read nor write: see LinkId).
            data["links"] = {name: link.index for name, link in links.items()}
            marks = {name: _link_marks(link) for name, link in links.items() if link.marked}
            if marks:
                data["link_marks"] = marks
        # (a key older versions neither write nor read: they keep to the names)
        spread_links = {name: {switch: link for switch, link in sorted(values.items())
                               if switch in spread.get(name, {})}
                        for name, values in sorted(state.spread_links.items())}
        spread_links = {name: values for name, values in spread_links.items() if values}
        if spread_links:
            data["spread_links"] = {name: {switch: link.index for switch, link in values.items()}
                                    for name, values in spread_links.items()}
            spread_marks = {name: {switch: _link_marks(link)
                                   for switch, link in values.items() if link.marked}
                            for name, values in spread_links.items()}
            spread_marks = {name: values for name, values in spread_marks.items() if values}
            if spread_marks:
                data["spread_link_marks"] = spread_marks
        try:
            replace_atomically(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n",
                               f".{self.path.name}.", mode=0o755, durable=True)
        except OSError as exc:
            raise BackendError(f"cannot write the sysctl state file {self.path}: {exc}") from exc
        legacy = self.legacy
        while legacy is not None:
            if os.path.lexists(legacy.path):
                legacy.retire()
            legacy = legacy.legacy

    def retire(self) -> None:
        """Remove the file when it is this namespace's (read by :meth:`load` from now on
        in its new place); another namespace's is left for that one to read."""
        text = self._read()
        if text is None:
            return
        try:
            data = json.loads(text)
            mine = isinstance(data, dict) and self._mine(data)
        except ValueError:
            return
        if mine:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise applies on this namespace's sysctls (between processes)."""
        try:
            make_directory(self.directory, 0o755)
            fd = os.open(self.directory / "lock",
                         os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise BackendError(f"cannot lock {self.directory}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock


def _link_marks(link: LinkId) -> dict[str, str]:
    """What the state file keeps of ``link`` beside its index (what it has of them)."""
    marks = {"kind": link.kind, "address": link.address, "permanent": link.permanent}
    return {key: value for key, value in marks.items() if value is not None}


def _link_id(index: Any, marks: Any) -> LinkId:
    """The interface a state file's record names: ``index`` (under ``links`` or
    ``spread_links``) and ``marks`` (:func:`_link_marks`; ``None``: an older version's
    record, the index alone)."""
    if marks is None:
        return LinkId(int(index), marked=False)
    if not isinstance(marks, dict):
        raise TypeError(f"the marks of link {index!r} are no mapping")
    kind, address, permanent = (None if marks.get(key) is None else str(marks[key])
                                for key in ("kind", "address", "permanent"))
    return LinkId(int(index), kind, address, permanent)


def _previous_entry(value: str, previous: str | None) -> dict[str, object]:
    """An owned sysctl's entry in the state file. An empty previous value (no port in
    ``ip_local_reserved_ports``) is ``"previous": null`` with ``"previous_empty": true``:
    an older k3snet, whose model refuses an empty value, reads it as no record (it gives
    nothing back, as it always did) instead of failing to observe the namespace."""
    if previous == "":
        return {"value": value, "previous": None, "previous_empty": True}
    return {"value": value, "previous": previous}


def _recorded_previous(entry: Mapping[str, object]) -> str | None:
    """The previous value of a state file's entry (see :func:`_previous_entry`)."""
    previous = entry.get("previous")
    if previous is None:
        return "" if entry.get("previous_empty") is True else None
    return str(previous)


def _describe(namespace: object) -> str:
    return ("the network namespace k3snet runs in" if namespace is None
            else f"network namespace {str(namespace)!r}")


def namespace_identity(netns: str | None) -> str:
    """Device and inode of the namespace's nsfs file: what tells two namespaces apart."""
    path = netns_path(netns) if netns is not None else THREAD_NETNS
    stat = os.stat(path)
    return f"{stat.st_dev}:{stat.st_ino}"
