"""Which node backends hold k3snet's objects: what a removal naming no backend goes through.

``k3snet destroy`` without ``-f`` or ``--backend`` (and the Ansible module's
``state: absent`` without a spec or ``backends``) used the default backends,
netlink and nftables: on a node set up with ``backends: [netlink, iptables]`` it
removed the routes and sysctls, said so, and left k3snet's iptables chains (its
masquerade) running. :func:`discover_owners` instead looks with every node backend
k3snet ships (:data:`NODE_BACKENDS`: netlink, nftables, iptables-nft and
iptables-legacy), each through its own ``observe`` (k3snet's objects are told by
the backend's own marks: route protocol 211 and the sysctl state file, the
nftables table's marker chain, the iptables chains' tags), and keeps those owning
something. Nothing is changed by looking. A backend that cannot look (its library
or tool missing) is named in :attr:`Discovery.warnings`, not raised.

Two found backends managing the same kind (nftables and iptables both holding NAT
rules, after a switch of backends) cannot be one
:class:`~k3snet.backends.group.BackendGroup`: :attr:`Discovery.groups` are as few
groups as hold them all, each of distinct kinds, removed one after the other
(:func:`k3snet.converge.destroy_each`).
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import json
import logging
import os
import socket
import struct
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import PurePath
from typing import Any, TypeVar

import attrs

from k3snet._kept import STATE_ROOT
from k3snet._logline import fs_word, shell_word
from k3snet.backends.base import Backend
from k3snet.backends.group import BackendGroup
from k3snet.backends.kit import WarningLog, backend_warnings
from k3snet.backends.netns import NetnsRunner, exec_name, netns_path, xtables_names
from k3snet.backends.registry import backend_options, create_backend
from k3snet.errors import BackendError, BackendUnavailableError, K3snetError
from k3snet.model.route import K3SNET_ROUTE_PROTOCOL

__all__ = ["CLUSTER_BACKENDS", "NODE_BACKENDS", "Discovery", "Owner", "cluster_left_behind",
           "discover_owners", "left_behind"]

log = logging.getLogger(__name__)

NODE_BACKENDS: tuple[tuple[str, str, Mapping[str, Any]], ...] = (
    ("netlink", "netlink", {}),
    ("nftables", "nftables", {}),
    ("iptables-nft", "iptables", {"mode": "nft"}),
    ("iptables-legacy", "iptables", {"mode": "legacy"}),
)
"""``(label, backend name, options)`` of every node backend :func:`discover_owners`
looks through, in that order: both iptables flavours, since their rules run side by
side in the kernel and one flavour's ``-save`` shows nothing of the other's."""


@attrs.frozen
class Owner:
    """A backend that holds ``owned`` of k3snet's objects (``label``: ``iptables-nft`` ...)."""

    label: str
    backend: Backend
    owned: int


@attrs.define
class Discovery:
    """What :func:`discover_owners` found; close it (or use it as a context manager)
    to close every backend it made."""

    owners: tuple[Owner, ...]
    """The backends holding k3snet's objects, in :data:`NODE_BACKENDS` order."""
    idle: tuple[str, ...]
    """The labels of the backends that looked and hold nothing."""
    unavailable: tuple[str, ...]
    """One line per backend that could not look (``iptables-legacy: ... not found``)."""
    _looked: tuple[Backend, ...] = ()
    refused: tuple[str, ...] = ()
    """The labels of the backends among :attr:`unavailable` the system refused to let look
    ("not permitted": k3snet without root or ``CAP_NET_ADMIN``), which could not remove
    anything either."""
    _unread: dict[int, str] = attrs.field(factory=dict, init=False)
    """Why :meth:`look_again` could not read a backend, by its position in ``_looked``."""

    def refusal(self, command: str) -> BackendError | None:
        """The error a removal naming no backend (``command``: ``k3snet destroy``, the
        Ansible module's ``state: absent``) fails with when the system refused a look
        (:attr:`refused`): nothing it found could be removed either, and "nothing to
        destroy" was said of a node whose nftables table and iptables chains were never
        looked at. None when every look was permitted."""
        if not self.refused:
            return None
        try:
            # Granted CAP_NET_ADMIN instead of root: what it cannot read is root's
            # (iptables-legacy's /proc/net/ip_tables_names, a state file of root's).
            needs = "root (CAP_NET_ADMIN, held, is not enough)" if _holds_net_admin() else (
                "root or CAP_NET_ADMIN")
        except (OSError, ValueError):
            needs = "root or CAP_NET_ADMIN"
        return BackendError(
            f"not permitted to look through {', '.join(self.refused)} ({command} needs "
            f"{needs}); nothing was removed: "
            + "; ".join(u for u in self.unavailable if u.split(":", 1)[0] in self.refused))

    @property
    def groups(self) -> tuple[BackendGroup, ...]:
        """The owners as the fewest groups of distinct kinds, first come first placed
        (netlink and nftables, or netlink and iptables, are one group)."""
        groups: list[list[Backend]] = []
        for owner in self.owners:
            kinds = owner.backend.capabilities
            for group in groups:
                if not any(kinds & member.capabilities for member in group):
                    group.append(owner.backend)
                    break
            else:
                groups.append([owner.backend])
        return tuple(BackendGroup(group) for group in groups)

    @property
    def warnings(self) -> tuple[str, ...]:
        """The backends that could not look, then what every backend that looked found
        worth saying (an iptables chain named ``K3SNET-*`` that is not k3snet's ...),
        each text once.

        Each backend is first told the owners beside it (its ``beside`` hint, as a
        :class:`~k3snet.backends.group.BackendGroup` tells its members): what another
        owner holds is removed by this destroy, not left behind. Read alone, both
        iptables flavours named k3snet's nftables table, which the nftables owner was
        removing in the same plan, as left by a switch of backends, each with the same
        text (``k3snet destroy --dry-run`` after ``apply --backend netlink --backend
        nftables``). iptables-legacy's owner is no hint: the nftables backend's
        warning names the chains in iptables-nft's tables, which it does not remove."""
        found = [f"{line}: not looked through, k3snet's objects there (if any) stay"
                 for line in self.unavailable]
        removing = [o.backend for o in self.owners if o.label != "iptables-legacy"]
        for index, backend in enumerate(self._looked):
            unread = self._unread.get(index)
            if unread is not None:
                found.append(unread)
                continue
            beside = getattr(backend, "beside", None)
            if callable(beside):
                beside(tuple(b for b in removing if b is not backend))
            found += backend_warnings(backend)
        return tuple(dict.fromkeys(found))

    def look_again(self) -> None:
        """Read through every backend that looked once more (``observe``), so that
        :attr:`warnings` says what holds now: call it after a removal. Each backend's
        warnings are those of its last read: after ``k3snet destroy``, the nftables
        backend's, read before the iptables backend's removal, named k3snet's iptables
        chains, and an idle iptables backend's, read before anything was removed,
        k3snet's nftables table, both gone. A backend that cannot read now is named
        in :attr:`warnings` in place of its warnings."""
        self._unread.clear()
        for index, backend in enumerate(self._looked):
            try:
                backend.observe()
            except K3snetError as exc:
                self._unread[index] = (f"{getattr(backend, 'name', backend)}: not read again "
                                       f"after the removal ({exc}); its warnings are not said")

    def summary(self) -> str:
        """``Looked through netlink, nftables, iptables-nft, iptables-legacy: k3snet's
        objects are held by netlink (3), iptables-nft (4).``"""
        looked = [o.label for o in self.owners] + list(self.idle)
        order = [label for label, _, _ in NODE_BACKENDS]
        looked.sort(key=lambda label: order.index(label) if label in order else len(order))
        held = ", ".join(f"{o.label} ({o.owned})" for o in self.owners) or "none of them"
        return (f"Looked through {', '.join(looked) or 'no backend'} (no backend named): "
                f"k3snet's objects are held by {held}.")

    def close(self) -> None:
        """Close every backend made (all of them, even if one fails to close)."""
        for backend in self._looked:
            with contextlib.suppress(Exception):
                backend.close()

    def __enter__(self) -> Discovery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def discover_owners(options: Mapping[str, Mapping[str, Any]] | None = None) -> Discovery:
    """Look for k3snet's objects with every backend of :data:`NODE_BACKENDS`.

    ``options``: keyword options by backend name (``{"netlink": {"netns": "x"}}``,
    as the CLI resolves them: ``--netns``, the environment's ``K3SNET_STATE_DIR``,
    ``--backend-opt``), given to every backend of that name; an ``iptables`` ``mode``
    given there keeps that flavour alone. Changes nothing.

    >>> from k3snet.converge import destroy_each
    >>> with discover_owners({"netlink": {"netns": "lab"}}) as found:  # doctest: +SKIP
    ...     print(found.summary())
    ...     destroy_each(found.groups)
    """
    options = options or {}
    owners: list[Owner] = []
    idle: list[str] = []
    unavailable: list[str] = []
    refused: list[str] = []
    looked: list[Backend] = []
    for label, name, fixed in NODE_BACKENDS:
        given = dict(options.get(name, {}))
        if "mode" in fixed and given.get("mode", "auto") not in ("auto", fixed["mode"]):
            continue  # the flavour asked for is the other one
        try:
            backend = create_backend(name, **{**given, **fixed})
        except BackendUnavailableError as exc:  # a library missing (nftables' bindings)
            unavailable.append(f"{label}: {exc}")
            continue
        looked.append(backend)
        try:
            owned = len(backend.observe().owned)
        except K3snetError as exc:  # a tool missing (iptables-legacy-save), no nf_tables
            log.debug("%s could not look: %s", label, exc)
            unavailable.append(f"{label}: {exc}")
            if _not_permitted(exc) and not (label in _HOST_S_OWN
                                            and _admin_of_own_namespace(given.get("netns"))
                                            and _host_owns_xtables_names(given.get("netns"))):
                refused.append(label)
            looked.pop()
            with contextlib.suppress(Exception):
                backend.close()
            continue
        if owned:
            owners.append(Owner(label, backend, owned))
        else:
            idle.append(label)
    return Discovery(tuple(owners), tuple(idle), tuple(unavailable), tuple(looked),
                     tuple(refused))


_T = TypeVar("_T")


def _in_netns(netns: object, call: Callable[[], _T]) -> _T:
    """``call()`` in network namespace ``netns`` (a name or path; None: the calling
    thread's own), run by a :class:`NetnsRunner` there."""
    if netns is None:
        return call()
    with NetnsRunner(str(netns)) as runner:
        return runner.call(call)


_HOST_S_OWN = frozenset({"iptables-legacy"})
"""The labels whose look root of a user namespace owning the network namespace may be
refused by the host (:func:`_admin_of_own_namespace`): iptables-legacy's
``/proc/net/ip_tables_names`` is the host root's when the namespace was made before its
user namespace's uid map was written (:func:`_host_owns_xtables_names`). Any other look
is permitted there (nftables', netlink's), and one refused (a security module: SELinux,
AppArmor, a seccomp filter) is a refusal: it was a warning, and a destroy naming no
backend said "nothing to destroy" of a table never looked at."""


def _host_owns_xtables_names(netns: object) -> bool:
    """Whether iptables-legacy's ``/proc/net/ip_tables_names`` or ``ip6_tables_names`` of
    network namespace ``netns`` (None: the calling thread's) belongs to a user k3snet's
    user namespace does not map (``stat`` shows the overflow uid, ``nobody``): the host
    root's, a read no privilege of that user namespace lifts. The kernel gives these
    files to the root of the namespace's user namespace when that root is mapped as the
    table's half of x_tables registers them (the network namespace made, or the module
    loaded, after the uid map was written: a rootless container's runtime writes it, then
    makes the network namespace), else to the host's root (``unshare -rn`` makes both
    namespaces in one call, the map written after). A look refused while the files are
    the namespace root's is no host's refusal (a security module's): without this test
    it was a warning, and a destroy naming no backend said "nothing to destroy" of
    iptables-legacy's chains never looked at. False when neither file can be read by
    ``stat`` (x_tables not loaded: then no table to look at is refused by the host)."""
    def unmapped() -> bool:
        try:
            with open("/proc/sys/kernel/overflowuid", encoding="ascii") as file:
                nobody = int(file.read())
        except (OSError, ValueError):
            nobody = 65534  # the kernel's default
        owners = []
        for names in ("ip_tables_names", "ip6_tables_names"):
            with contextlib.suppress(FileNotFoundError):
                owners.append(os.stat(f"/proc/thread-self/net/{names}").st_uid)
        return nobody in owners

    try:
        return _in_netns(netns, unmapped)
    except (OSError, K3snetError):
        return False


#: ioctl(2) of an nsfs file: a descriptor of the user namespace owning that namespace.
_NS_GET_USERNS = 0xB701
_CAP_NET_ADMIN = 12
#: ``/proc/self/uid_map`` of the initial user namespace.
_INITIAL_UID_MAP = ("0", "0", "4294967295")


def _holds_net_admin() -> bool:
    """Whether k3snet's effective capabilities hold ``CAP_NET_ADMIN``."""
    with open("/proc/self/status", encoding="ascii", errors="replace") as status:
        caps = next((line.split()[1] for line in status if line.startswith("CapEff:")), "0")
    return bool(int(caps, 16) >> _CAP_NET_ADMIN & 1)


def _admin_of_own_namespace(netns: object) -> bool:
    """Whether k3snet holds ``CAP_NET_ADMIN`` over network namespace ``netns`` (None: the
    calling thread's) as root of a user namespace of its own, not the initial one, that
    owns it (``unshare -rn``, a rootless container). A "not permitted" there to a look of
    :data:`_HOST_S_OWN` may be the host's, which no privilege of that namespace lifts:
    ``/proc/net/ip_tables_names`` of a namespace made before its user namespace's uid
    map was written (``unshare -rn``) is the host root's (iptables-legacy can neither
    look nor write there, :func:`_host_owns_xtables_names`), not a sign k3snet lacks
    root."""
    try:
        if not _holds_net_admin():
            return False
        with open("/proc/self/uid_map", encoding="ascii") as uid_map:
            if tuple(uid_map.read().split()) == _INITIAL_UID_MAP:
                return False
        path = (netns_path(netns) if isinstance(netns, str) else "/proc/thread-self/ns/net")
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            owner = fcntl.ioctl(fd, _NS_GET_USERNS)
        finally:
            os.close(fd)
        try:
            made = os.fstat(owner)
        finally:
            os.close(owner)
        mine = os.stat("/proc/thread-self/ns/user")
    except (OSError, ValueError):
        return False
    return (made.st_dev, made.st_ino) == (mine.st_dev, mine.st_ino)


def _not_permitted(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) is the system's "not permitted"."""
    cause: BaseException | None = exc
    for _ in range(16):  # a bound on the chain's length
        if cause is None:
            return False
        code = getattr(cause, "errno", None)
        if isinstance(code, int) and abs(code) in (errno.EPERM, errno.EACCES):
            return True
        cause = cause.__cause__
    return False



_SAID_BY: Mapping[str, str] = {"iptables-nft": "nftables", "nftables": "iptables"}
"""The labels whose objects an in-use backend already names as left behind, with the
command removing them (the nftables backend: k3snet's chains in iptables-nft's tables;
the iptables backend: k3snet's nftables table)."""

_MUTED = logging.getLogger(f"{__name__}.left_behind")
"""Where the backends :func:`left_behind` makes log their own warnings after a read:
nowhere (their look is only for what they own; the backends in use say the rest)."""
_MUTED.disabled = True

_DESTROY: Mapping[str, str] = {
    "netlink": "--backend netlink", "nftables": "--backend nftables",
    "iptables-nft": "--backend iptables --backend-opt iptables.mode=nft",
    "iptables-legacy": "--backend iptables --backend-opt iptables.mode=legacy"}


def _labels_in_use(in_use: Sequence[Backend]) -> set[str]:
    """The :data:`NODE_BACKENDS` labels of the backends ``in_use`` (an iptables backend
    whose ``auto`` mode picked no flavour yet: both)."""
    labels: set[str] = set()
    for backend in in_use:
        name = getattr(backend, "name", None)
        if name == "iptables":
            mode = getattr(backend, "mode", "auto")
            labels |= ({f"iptables-{mode}"} if mode in ("nft", "legacy")
                       else {"iptables-nft", "iptables-legacy"})
        elif isinstance(name, str):
            labels.add(name)
    return labels


def left_behind(in_use: Sequence[Backend], options: Mapping[str, Mapping[str, Any]] | None = None,
                netns: str | None = None, *, skip: Collection[str] = ()) -> tuple[str, ...]:
    """A warning for each node backend of :data:`NODE_BACKENDS` that no backend ``in_use``
    is, holding k3snet's objects: what a switch of backends (``--backend`` or the spec's
    ``backends:`` changed, on a running node) left running, with the ``k3snet destroy``
    that removes them. Nothing when no backend in use is a node backend of
    :data:`NODE_BACKENDS` (a custom or the memory backend, a cluster backend alone), and
    nothing of the objects an in-use backend names itself (the nftables backend the
    iptables-nft chains, the iptables backend the nftables table).

    The new backends never read the old ones' objects: the routes k3snet made (protocol
    211) stayed once netlink was no longer named, a masquerade of iptables-legacy ran
    beside the new one of iptables-nft, a forward accept of the old backend still let
    through what the new spec no longer accepts, all unsaid. ``options``: as for
    :func:`discover_owners` (an iptables ``mode`` there is ignored: both flavours are
    looked through); ``netns``: named in the command, unless a backend's options
    name its own namespace (a spec's), which it is looked through and named in; with
    neither, the calling thread's namespace by its name when it is not the node's
    (k3snet run as ``ip netns exec NS k3snet ...``);
    ``skip``: backend names (``iptables``: both flavours) not looked through, whose
    options the caller could not resolve (a relative ``$K3SNET_PROC_SYS`` of netlink's
    beside nftables alone): the others are still looked through. A ``path`` in
    ``options["flannel"]`` (``$K3SNET_FLANNEL_CONF``, the agent's) with no flannel
    backend in use: that node's own ``net-conf.json`` is looked through too, for the
    keys a flannel backend of that file set. Changes nothing."""
    used = _labels_in_use(in_use)
    if not used & {label for label, _, _ in NODE_BACKENDS}:
        return ()
    skipped = frozenset(skip)
    said = used | {label for label, by in _SAID_BY.items() if by in {
        getattr(b, "name", None) for b in in_use}}
    given = {name: {k: v for k, v in opts.items() if not (name == "iptables" and k == "mode")}
             for name, opts in (options or {}).items()}
    found: list[str] = []
    nf_tables: dict[object, frozenset[tuple[str, str]] | None] = {}
    for label, name, fixed in NODE_BACKENDS:
        if label in said or name in skipped:
            continue
        opts = {**given.get(name, {}), **fixed}
        if label == "iptables-legacy" and not _legacy_tables(opts.get("netns")):
            continue  # nothing to read, nor the iptables backend to import (~40 ms cold)
        if label == "netlink" and not _netlink_may_own(opts):
            continue  # no route of its protocol, no sysctl record: no import (~29 ms cold)
        if label in _NF_FAMILIES:
            key = opts.get("netns")
            if key not in nf_tables:
                nf_tables[key] = _nf_tables(key)
            present, families = nf_tables[key], _NF_FAMILIES[label]
            if present is not None and not any(
                    families is None or family in families for family, _ in present):
                continue  # no table to hold k3snet's objects: no import (~40-75 ms cold)
        try:
            backend = create_backend(name, **opts)
        except K3snetError as exc:
            log.debug("%s could not look for objects left behind: %s", label, exc)
            continue
        with contextlib.suppress(AttributeError):  # a backend of the kit's: its log muted
            backend._warning_log = WarningLog(_MUTED)  # type: ignore[attr-defined]
        try:
            owned = len(backend.observe().owned)
        # A tool missing (iptables-legacy-save), no nf_tables; or any other failure of a
        # backend no one asked for: the look only warns, and never ends a plan or a pass.
        except Exception as exc:  # noqa: BLE001
            log.debug("%s could not look for objects left behind: %s", label, exc)
            continue
        finally:
            with contextlib.suppress(Exception):
                backend.close()
        if owned:
            # The namespace looked in: a spec's netns of this backend's alone, else
            # ``netns`` (naming only ``netns``, the destroy acted in another namespace),
            # else the calling thread's by its name (k3snet run as ``ip netns exec NS
            # k3snet ...``: the destroy alone, run from the shell that ran k3snet, acted
            # in the node's namespace).
            ns = exec_name(opts.get("netns") or netns)
            where = f" --netns {shell_word(fs_word(str(ns)))}" if ns else ""
            opts_text = _destroy_options(name, opts)
            found.append(
                f"{label} holds {owned} of k3snet's objects, and no backend in use is "
                f"{label} (left by a switch of backends?): they still run beside what the "
                "backends in use write (a masquerade, a forward accept or a route the spec "
                f"may no longer want), and nothing keeps them up or removes them; "
                f"`k3snet destroy{where} {_DESTROY.get(label, f'--backend {name}')}{opts_text}` "
                "removes them")
    found += _flannel_file_left(in_use, (options or {}).get("flannel", {}), skipped)
    return tuple(found)


def _flannel_file_left(in_use: Sequence[Backend], opts: Mapping[str, Any],
                       skipped: Collection[str]) -> list[str]:
    """The warning of what a flannel backend of the file ``opts["path"]`` (the node's
    own ``net-conf.json``) holds of k3snet's keys; none when flannel is in use or
    ``skipped``, no ``path`` is given, or the file is missing or unreadable (its read
    says why only at debug: a node of another CNI has no file)."""
    if "flannel" in skipped or "flannel" in {getattr(b, "name", None) for b in in_use}:
        return []
    if opts.get("path") is None or not os.path.exists(opts["path"]):
        return []  # no file: nothing to read, nor the backend to import
    try:
        backend = create_backend("flannel", path=opts["path"])
    except Exception as exc:  # noqa: BLE001 - the look only warns
        log.debug("flannel could not look for objects left behind: %s", exc)
        return []
    with contextlib.suppress(AttributeError):  # a backend of the kit's: its log muted
        backend._warning_log = WarningLog(_MUTED)  # type: ignore[attr-defined]
    try:
        return _cluster_warning("flannel", backend, {"path": opts["path"]})
    finally:
        with contextlib.suppress(Exception):
            backend.close()


CLUSTER_BACKENDS: tuple[str, ...] = ("calico", "cilium", "flannel")
"""The backends writing cluster objects that :func:`cluster_left_behind` looks through:
Calico's IPPools, Cilium's ConfigMaps, flannel's ``net-conf.json``, each told k3snet's
by the backend's own mark (a label, an annotation, the ownership record)."""

_STILL: Mapping[str, str] = {
    "calico": "Calico still gives pods addresses and NATs their traffic by the IPPools "
              "k3snet created",
    "cilium": "Cilium keeps the settings k3snet wrote in its ConfigMaps",
    "flannel": "flannel keeps the keys k3snet set in its net-conf.json"}
"""What a cluster backend's objects left behind keep doing."""

_CLUSTER_OPTIONS = ("kubeconfig", "context", "timeout")
"""The options of an in-use cluster backend the others are looked through with: the
same cluster, reached the same way (and its client, ``api_client``)."""


def cluster_left_behind(in_use: Sequence[Backend],
                        options: Mapping[str, Mapping[str, Any]] | None = None,
                        dropped: Sequence[Backend] = (), *, others: bool = True
                        ) -> tuple[str, ...]:
    """A warning for each backend of :data:`CLUSTER_BACKENDS` no backend ``in_use`` is,
    holding k3snet's objects in the cluster (an IPPool k3snet created, Cilium's or
    flannel's keys it set): what a switch of backends left, with the ``k3snet destroy``
    removing them, as :func:`left_behind` says of the node backends.

    ``dropped``: backends already built that are no longer in use (the agent's previous
    spec's), looked through as they are; with ``others``, every other cluster backend
    not in use is looked through too, only beside an in-use one talking to a cluster, with its
    ``api_client`` and its ``kubeconfig``, ``context`` and ``timeout`` of ``options``
    (by backend name, as for :func:`left_behind`; they go into the destroy named too):
    with none, no cluster is known to reach, and a plan never asks an API server it
    was not given. Nothing is changed; a backend whose look fails is passed over, said once in the
    log (a warning; not of a 404: the backend not installed)."""
    options = options or {}
    used = {getattr(b, "name", None) for b in in_use}
    found: list[str] = []
    looked: set[str] = set()
    for backend in dropped:
        name = getattr(backend, "name", None)
        if isinstance(name, str) and name in CLUSTER_BACKENDS and name not in used | looked:
            looked.add(name)
            found += _cluster_warning(name, backend, options.get(name, {}))
    source = next((b for b in in_use if getattr(b, "name", None) in CLUSTER_BACKENDS
                   and getattr(b, "api_client", None) is not None), None)
    if source is None or not others:
        return tuple(found)
    client = getattr(source, "api_client", None)
    opts = {key: value for key, value in options.get(getattr(source, "name", ""), {}).items()
            if key in _CLUSTER_OPTIONS}
    for name in CLUSTER_BACKENDS:
        if name in used | looked:
            continue
        try:
            backend = create_backend(name, **opts, api_client=client)
        except Exception as exc:  # noqa: BLE001 - a warning no one asked for never fails
            log.debug("%s could not look for objects left behind: %s", name, exc)
            continue
        with contextlib.suppress(AttributeError):  # a backend of the kit's: its log muted
            backend._warning_log = WarningLog(_MUTED)  # type: ignore[attr-defined]
        try:
            found += _cluster_warning(name, backend, opts)
        finally:
            with contextlib.suppress(Exception):
                backend.close()
    return tuple(found)


_FILES_READ: contextvars.ContextVar[dict[str, int | None] | None] = contextvars.ContextVar(
    "_FILES_READ", default=None)
"""Within :func:`each_file_read_once`: how many of k3snet's keys each flannel file looked
through holds (by its path; ``None``: its read failed, and was said)."""


@contextlib.contextmanager
def each_file_read_once() -> Iterator[None]:
    """Within the block, a flannel file (a node's own ``net-conf.json``) that
    :func:`left_behind` and :func:`cluster_left_behind` both look through is read once:
    the second look warns of what the first read found (in its own words: its options
    in the destroy it names), and a read that failed is said once. The agent, at a new
    spec dropping flannel, looks through the dropped backend and (its spec's warnings)
    through ``$K3SNET_FLANNEL_CONF``, most often one file: it read the file twice, and
    logged a failed read twice, word for word."""
    token = _FILES_READ.set({})
    try:
        yield
    finally:
        _FILES_READ.reset(token)


def _cluster_warning(name: str, backend: Backend, opts: Mapping[str, Any]) -> list[str]:
    """The warning of what cluster backend ``backend`` owns (none when nothing or its
    read fails: see :func:`_owned_count`)."""
    # A flannel backend of a file (``file:PATH``): the node's own, not the cluster's,
    # named in the destroy whatever gave it (a spec's option, $K3SNET_FLANNEL_CONF).
    target = getattr(backend, "target", None) if name == "flannel" else None
    where = "the cluster"
    read = None
    if isinstance(target, str) and target.startswith("file:"):
        where = target.removeprefix("file:")
        opts = {**opts, "path": where}
        read = _FILES_READ.get()
    if read is None:
        owned = _owned_count(name, backend, where, opts)
    else:  # within each_file_read_once: a file already read is not read again
        if where not in read:
            read[where] = _owned_count(name, backend, where, opts)
        owned = read[where]
    if not owned:
        return []
    return [f"{name} holds {owned} of k3snet's objects in {where}, and no backend in "
            f"use is {name} (left by a switch of backends?): {_STILL[name]}, and nothing "
            "keeps them up or removes them; "
            f"`k3snet destroy --backend {name}{_destroy_options(name, opts)}` removes them "
            "(k3snet's alone)"]


def _owned_count(name: str, backend: Backend, where: str, opts: Mapping[str, Any]
                 ) -> int | None:
    """How many of k3snet's objects cluster backend ``backend`` holds in ``where``
    (``None``: its read failed). Its requests wait nothing when throttled
    (``throttle_waits(None)``): a look no one asked for passes a busy API server over,
    where the one-shot commands' waits made a ``plan`` through cilium wait ~25 s and
    print five lines about calico.

    A read that fails (a 403 of RBAC granting no read, a 429, a 5xx, no answer) is
    logged once, as a warning, without failing anything: passed over unsaid, it read as
    "nothing left". A 404 (the backend's API not served: Calico or Cilium not installed)
    is nothing left, unsaid."""
    from k3snet.kube import KubeApiError, throttle_waits  # noqa: PLC0415 - cluster backends

    try:
        with throttle_waits(None):
            return len(backend.observe().owned)
    except KubeApiError as exc:
        # Not installed: nothing of k3snet's there. A 403 too, when discovery (open to
        # every user) serves none of the backend's API groups: RBAC refuses a user a
        # resource no CRD defines before the server finds there is none, so a plan
        # through cilium with a kubeconfig granting no Calico reads said it at every run.
        with throttle_waits(None):
            installed = exc.status != 404 and (exc.status != 403 or _served(name, backend))
        if not installed:
            log.debug("%s could not look for objects left behind: %s", name, exc)
            return 0
        _could_not_look(name, exc, where, opts)
        return None
    except Exception as exc:  # noqa: BLE001 - the look only warns
        _could_not_look(name, exc, where, opts)
        return None


_GROUPS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "calico": (("crd.projectcalico.org", "v1"), ("projectcalico.org", "v3")),
    "cilium": (("cilium.io", "v2"),)}
"""The API groups whose discovery tells a cluster backend installed (flannel: none of
its own, its ConfigMap is the core API's)."""


def _served(name: str, backend: Backend) -> bool:
    """Whether the API server's discovery serves any of cluster backend ``name``'s API
    groups (:data:`_GROUPS`); ``True`` when it cannot tell (an error, no group known)."""
    groups = _GROUPS.get(name)
    client = getattr(backend, "api_client", None)
    if not groups or client is None:
        return True
    from kubernetes import client as kube  # noqa: PLC0415 - cluster backends alone

    timeout = getattr(backend, "timeout", None) or 10.0
    for group, version in groups:
        try:
            kube.CustomObjectsApi(client).get_api_resources(group, version,
                                                            _request_timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - a 404 is "not served", else cannot tell
            if getattr(exc, "status", None) != 404:
                return True
        else:
            return True
    return False


def _could_not_look(name: str, exc: BaseException, where: str,
                    opts: Mapping[str, Any]) -> None:
    """Log once that cluster backend ``name``'s look for what a switch left in
    ``where`` (the cluster, flannel's file) failed, with the destroy that would show it."""
    log.warning("%s: could not look for k3snet's objects a switch of backends may have "
                "left in %s (%s); `k3snet destroy --dry-run --backend %s%s` shows them",
                name, where, " ".join(str(exc).split()), name, _destroy_options(name, opts))


_NOT_NAMED = frozenset({"netns", "mode", "allow_disruptive", "pod_cidrs"})
"""Options :func:`_destroy_options` leaves out: ``--netns`` and ``_DESTROY`` say them, a
destroy is not disruptive, and the pod CIDRs (the spec's, which the netlink backend's
warnings judge by) change nothing of what it removes."""


def _destroy_options(name: str, opts: Mapping[str, Any]) -> str:
    """The ``--backend-opt`` arguments (each shell-quoted, after a space) that give
    backend ``name`` the options ``opts`` it looked with, where they are not its
    defaults: a spec's or the agent's (``nftables.table``, ``netlink.protocol``,
    ``K3SNET_STATE_DIR``). The destroy named without them looked at the default table or
    protocol, removing nothing of what was found, or another table of that name."""
    try:
        declared = backend_options(name)
    except K3snetError:
        declared = {}
    parts: list[str] = []
    for key, given in opts.items():
        param = declared.get(key)
        if key in _NOT_NAMED or (param is not None and param.default == given):
            continue
        value = str(given) if isinstance(given, PurePath) else given
        if isinstance(value, str):
            try:
                json.loads(value)
            except (ValueError, RecursionError):
                text = value  # as --backend-opt reads it: the text, not JSON
            else:
                text = json.dumps(value)  # "1", "true": a string, not a number
        else:
            try:
                text = json.dumps(sorted(value) if isinstance(value, (set, frozenset))
                                  else list(value) if isinstance(value, tuple) else value)
            except (TypeError, ValueError):
                continue  # not writable on a command line: the admin's to give
        # As the bytes the command line gives for it (fs_word): the text k3snet reads
        # back from them is this one (a Latin-1 locale read the UTF-8 of ÿ as Ã¿).
        parts.append(" --backend-opt " + shell_word(fs_word(f"{name}.{key}={text}")))
    return "".join(parts)


_NF_FAMILIES: Mapping[str, frozenset[str] | None] = {
    "nftables": None, "iptables-nft": frozenset({"ip", "ip6"})}
"""The labels read only when the namespace has an nf_tables table (of these families;
``None``: of any): k3snet's nftables table is one, iptables-nft's chains are in its
``ip`` and ``ip6`` tables."""


def _nf_tables(netns: object) -> frozenset[tuple[str, str]] | None:
    """(family, name) of every nf_tables table in namespace ``netns`` (``None``: this
    thread's), one netlink dump; ``None`` when it cannot tell (no nf_tables, a refusal):
    the backend's own read then says what it finds. With only netlink in use, a plan
    imported the nftables and the iptables backends (~115 ms cold) to read a namespace
    holding no table at all."""
    from k3snet.backends.nfgen import GenerationReader  # noqa: PLC0415

    def read() -> frozenset[tuple[str, str]]:
        reader = GenerationReader()
        try:
            return reader.tables()
        finally:
            reader.close()

    try:
        return _in_netns(netns, read)
    except (OSError, K3snetError):
        return None


def _legacy_tables(netns: object) -> bool:
    """Whether namespace ``netns`` (``None``: this thread's) has any iptables-legacy
    table (``/proc/net/ip_tables_names``, ``ip6_tables_names``: the kernel registers a
    namespace's x_tables table at its first use), or cannot tell: a namespace no legacy
    tool ever wrote in holds none of k3snet's legacy chains, and :func:`left_behind`
    then neither imports the iptables backend nor runs ``iptables-legacy-save``, on
    every cold ``plan`` and ``apply --dry-run``."""
    def present() -> bool:
        return any(xtables_names(names) for names in ("ip_tables_names", "ip6_tables_names"))

    try:
        return _in_netns(netns, present)
    except (OSError, K3snetError):
        return True  # cannot tell: the backend's own read says what it finds


def _netlink_may_own(opts: Mapping[str, Any]) -> bool:
    """Whether the netlink backend with options ``opts`` may own anything: a route of its
    ``protocol`` in its namespace (one kernel-filtered dump per family) or a record of
    sysctls k3snet took over under its ``state_dir``; ``True`` when it cannot tell. With
    nftables alone in use, a plan imported and opened the netlink backend (~29 ms cold)
    to read a namespace where k3snet never made a route nor took a sysctl.

    The records are looked for in every namespace's directory (a named one's, ``host``'s
    and, under it, each namespace of no name's) and the ``state_dir`` itself, where
    records were kept before 2026-12-04: the places the backend reads for any
    namespace; one naming another namespace's only costs the backend's read."""
    if opts.get("driver", "socket") != "socket":
        return True  # a driver of the caller's: the kernel's routes are not its view
    root = opts.get("state_dir") or STATE_ROOT
    if not isinstance(root, (str, os.PathLike)) or _sysctl_records(os.fspath(root)):
        return True
    protocol = opts.get("protocol", K3SNET_ROUTE_PROTOCOL)
    if type(protocol) is not int or not 0 < protocol < 256:  # a u8
        return True  # a value the backend refuses: its own making says so
    netns = opts.get("netns")
    try:
        return _in_netns(netns, lambda: _routes_of(protocol))
    except (OSError, K3snetError, ValueError):
        return True  # cannot tell: the backend's own read says what it finds


_RECORD_NAMES = ("sysctl.json", "sysctl-netns.json")
"""The netlink backend's record files (:mod:`k3snet.backends.netlink.sysctls`)."""


def _sysctl_records(root: str) -> bool:
    """Whether any record of sysctls k3snet owns lies in ``root``, a directory in it (one
    per namespace) or a directory in one of those (``host/unnamed-INODE``, a namespace
    of no name's: :func:`~k3snet.backends.netns.unnamed_record`); ``True`` for one that
    cannot be read or parsed: the backend's own read judges it."""
    try:
        places = [root, *_directories(root)]
        places += [inner for place in places[1:] for inner in _directories(place)]
    except OSError:
        return True
    for place in places:
        for name in _RECORD_NAMES:
            path = os.path.join(place, name)
            try:
                with open(path, "rb") as file:
                    data = json.loads(file.read())
            except FileNotFoundError:
                continue
            except (OSError, ValueError):
                return True
            if not isinstance(data, dict) or data.get("owned") != {}:
                return True  # anything but a record owning nothing
    return False


def _directories(place: str) -> list[str]:
    """The directories in ``place`` (a link to one too: the backend follows it); none
    when it is gone (no state directory yet, a namespace's removed meanwhile)."""
    try:
        with os.scandir(place) as entries:
            return [entry.path for entry in entries if entry.is_dir()]
    except FileNotFoundError:
        return []


_NLMSG = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTM_NEWROUTE, _RTM_GETROUTE = 24, 26
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLM_F_REQUEST, _NLM_F_DUMP, _NLM_F_DUMP_INTR = 0x1, 0x300, 0x10
_SOL_NETLINK, _NETLINK_GET_STRICT_CHK = 270, 12


def _routes_of(protocol: int) -> bool:
    """Whether this thread's namespace has a route of ``protocol``, in any table, of
    either family: one ``RTM_GETROUTE`` dump each, which a kernel of strict checking
    (4.20+) filters by protocol itself; each message's protocol is compared too (an
    older kernel sends every route). An interrupted dump counts as one. Written here
    with ``struct``: the netlink backend's codec is imported with the backend."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                       socket.NETLINK_ROUTE) as sock:
        with contextlib.suppress(OSError):  # older kernels: every route comes
            sock.setsockopt(_SOL_NETLINK, _NETLINK_GET_STRICT_CHK, 1)
        sock.bind((0, 0))
        for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), start=1):
            body = _RTMSG.pack(family, 0, 0, 0, 0, protocol, 0, 0, 0)
            sock.send(_NLMSG.pack(_NLMSG.size + len(body), _RTM_GETROUTE,
                                  _NLM_F_REQUEST | _NLM_F_DUMP, seq, 0) + body)
            if _dump_finds(sock, seq, protocol):
                return True
    return False


def _dump_finds(sock: socket.socket, seq: int, protocol: int) -> bool:
    """Read dump ``seq`` to its end: whether a route of ``protocol`` came (or the dump
    was interrupted). A family the kernel lacks (IPv6 off) ends in an error: none."""
    while True:
        data = sock.recv(1 << 16)
        offset = 0
        while offset + _NLMSG.size <= len(data):
            length, kind, flags, got, _pid = _NLMSG.unpack_from(data, offset)
            if length < _NLMSG.size:
                raise ValueError("a netlink message shorter than its header")
            if got == seq:
                if flags & _NLM_F_DUMP_INTR:
                    return True
                if kind == _NLMSG_DONE:
                    return False
                if kind == _NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", data, offset + _NLMSG.size)
                    if -code == errno.EAFNOSUPPORT:
                        return False
                    raise OSError(-code, os.strerror(-code))
                if (kind == _RTM_NEWROUTE and length >= _NLMSG.size + _RTMSG.size
                        and data[offset + _NLMSG.size + 5] == protocol):
                    return True
            offset += (length + 3) & ~3
