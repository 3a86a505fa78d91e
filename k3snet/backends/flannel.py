"""The ``flannel`` backend: flannel's ``net-conf.json`` as a file or as a ConfigMap.

Two targets, one format:

* a file on a K3s node, the one K3s reads with ``--flannel-conf``
  (``FlannelBackend(path="/etc/k3s/flannel.json")``);
* upstream flannel's ConfigMap, key ``net-conf.json`` of ``kube-flannel-cfg`` in
  ``kube-flannel`` (``FlannelBackend(configmap=("kube-flannel", "kube-flannel-cfg"))``,
  the default).

**Ownership of keys.** Flannel's config is one object that flannel, K3s and the
operator already fill; k3snet owns only the top-level keys it sets. When it
first sets a key it records the key's previous value (its exact text, or
"absent") in an ownership record; removing k3snet's config puts those texts
back. The record lives next to the content and is written in the same atomic
step: in a ConfigMap, the annotation ``k3snet.io/flannel-owned``; in a file, the
reserved top-level key ``"k3snet.io/owned"`` (flannel and K3s parse
``net-conf.json`` with Go's ``encoding/json``, which ignores unknown keys). Beside it
(annotation ``k3snet.io/flannel-written``, file key ``"k3snet.io/written"``) is what
k3snet last wrote for each of its keys: a key whose value differs from it was set by
someone else since, and is theirs again. So ``observe`` reports:

* ``owned``: a :class:`~k3snet.model.cni.FlannelConfig` of the keys k3snet set,
  with their current values;
* ``foreign``: the config as it would be without k3snet (every other key as
  found, owned keys with their recorded previous values), which stays the same
  while k3snet changes its keys, and is what a wanted key is ``met`` by.

``Backend`` is merged key by key (its ``VNI``, ``Port`` ... stay), and the text
is edited byte-minimally (:mod:`k3snet.backends.flannel_text`). The config is
read as flannel reads it (:mod:`k3snet.backends.flannel_read`): mis-cased keys
count as flannel's fields, and a value flannel would refuse or misread (a wrong
type, host bits) is an error, never "no changes".

**Disruptive changes.** Changing ``Network``, ``IPv6Network``,
``EnableIPv4``, ``EnableIPv6``, the backend ``Type`` or vxlan's
``VNI`` or ``Port`` changes what flannel routes and masquerades, stops it on nodes
whose podCIDR the network does not contain, or rebuilds the network between nodes when
flannel restarts:
:meth:`FlannelBackend.disruptive` says why, and ``check``/``apply`` refuse such a
plan unless the backend was built with ``allow_disruptive=True``.

**K3s' own file.** K3s writes ``<data-dir>/agent/etc/flannel/net-conf.json``
(``/var/lib/rancher/k3s/...``) again on every start unless ``--flannel-conf``
names another file, so edits there are refused, with that way out.

**Minimal edits.** ``apply`` rewrites only the text of the values that change
and inserts or removes only the members it adds or removes; every other byte
(unknown keys, their formatting, whitespace, key order) is kept, so removing
k3snet's keys gives back the original text byte for byte. Flannel reads its
config when it starts: restart flannel (K3s, a flanneld of one's own for
``reader="flanneld"``, or the kube-flannel DaemonSet) for
a change to take effect (a ConfigMap's change, a destroy's too, is stamped and followed:
:mod:`~k3snet.backends.cni_restart`; a file's is said once, K3s' start being in no
cluster object); changing ``Network`` of a running cluster renumbers pods. The file
is replaced atomically (temporary file in the same directory, ``fsync``,
``rename``, mode and owner kept; k3snet's writers of one file take turns under
``flock`` on its directory); the ConfigMap is changed with one JSON merge
patch that carries the ``resourceVersion`` read, so a concurrent change makes
the API server answer 409 and nothing is written.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import attrs

from k3snet._kept import read_input
from k3snet.backends.base import ApplyResult, PendingRestart
from k3snet.backends.cni_restart import (
    CHANGED_ANNOTATION,
    RestampError,
    ServerClock,
    Settled,
    changed_stamp,
    restamp,
    stamp_undone,
    take_back,
)
from k3snet.backends.cni_restart import pending as pending_restarts
from k3snet.backends.cni_restart import readers as restart_readers
from k3snet.backends.flannel_read import (
    DISRUPTIVE_KEYS,
    FLANNEL_FIELDS,
    K3S_GENERATED_SUFFIX,
    command_refusals,
    disruptions,
    flannel_values,
    is_k3s_generated,
    option_value_problems,
    start_refusals,
    unread_keys,
    unread_options,
)
from k3snet.backends.flannel_text import (
    ObjectText,
    Record,
    apply_change,
    copy_record,
    parse_record,
    record_text,
)
from k3snet.backends.kit import (
    ALLOW_DISRUPTIVE,
    BackendBase,
    Compensation,
    OptionChecks,
    committing,
    fit_problems,
    option_flag,
    option_seconds,
    translate_errors,
    undo_runs_here,
)
from k3snet.errors import ApplyError, BackendError, BackendOptionError, ModelError, PlanError
from k3snet.kube import (
    API_OPTION_CHECKS,
    DEFAULT_TIMEOUT,
    KUBECONFIG_DEFAULT,
    KubeApiError,
    KubeErrors,
    configmap_ref,
    make_api_client,
)
from k3snet.model.cni import (
    FLANNEL_OWNED_MARKER,
    FLANNEL_WRITTEN_MARKER,
    FlannelConfig,
    canonical_json,
    configmap_target,
    effective_config,
    file_target,
    flannel_nftables_refusal,
    namespace_problem,
    object_name_problem,
)
from k3snet.model.state import State
from k3snet.planner import Change, Plan

__all__ = [
    "ALLOW_DISRUPTIVE_HINT",
    "CONFIGMAP_KEY",
    "DEFAULT_CONFIGMAP",
    "DISRUPTIVE_KEYS",
    "FLANNEL_DAEMONSET",
    "FLANNEL_FIELDS",
    "K3S_GENERATED_SUFFIX",
    "OWNED_ANNOTATION",
    "READERS",
    "WRITTEN_ANNOTATION",
    "FlannelBackend",
    "effective_config",
    "flannel_values",
    "is_k3s_generated",
]

DEFAULT_CONFIGMAP: tuple[str, str] = ("kube-flannel", "kube-flannel-cfg")
"""Upstream flannel's ConfigMap (namespace, name)."""

_K3S = "K3s (the k3s or k3s-agent service on the node)"
"""What reads a flannel config file (``--flannel-conf``): K3s, when it starts."""

_FLANNELD = "flanneld (the service reading the file on the node)"
"""What reads a file given with ``reader="flanneld"``: a flanneld run beside K3s started
with ``--flannel-backend=none`` (``--kube-subnet-mgr --net-config-path=FILE``)."""

Reader = Literal["k3s", "flanneld"]
"""The values of option ``reader`` (``k3snet explain backends.flannel.reader`` names them)."""

READERS: tuple[str, ...] = get_args(Reader)
"""Who reads a flannel config file (option ``reader``): K3s' embedded flannel
(``--flannel-conf``), or a flanneld of its own (upstream's, reading ``EnableNFTables``)."""

FLANNEL_DAEMONSET = "kube-flannel-ds"
"""The name of upstream flannel's DaemonSet (kube-flannel.yml), in the ConfigMap's namespace."""

CONFIGMAP_KEY = "net-conf.json"
OWNED_ANNOTATION = "k3snet.io/flannel-owned"
"""The ConfigMap annotation holding k3snet's ownership record (JSON: key -> previous text)."""

WRITTEN_ANNOTATION = "k3snet.io/flannel-written"
"""The ConfigMap annotation holding what k3snet last wrote for each key it owns (JSON: key
-> canonical JSON text or null, ``Backend``: member -> text). A key whose value differs
from it was rewritten by someone else since (``kubectl apply -f kube-flannel.yml`` puts
the manifest's text back and leaves annotations alone): it is theirs again."""

ALLOW_DISRUPTIVE_HINT = ALLOW_DISRUPTIVE
"""The three ways to allow a disruptive change (:data:`k3snet.backends.kit.ALLOW_DISRUPTIVE`)."""


# ---------------------------------------------------------------- where the text lives


@attrs.frozen
class _Doc:
    """One read of the target: the text, k3snet's ownership record and a change token.

    ``values`` are the text's keys as flannel reads them (:func:`flannel_values`);
    ``annotations``: a ConfigMap's annotations k3snet writes, as read (None: absent).
    """

    text: str
    record: Record | None
    token: Any
    values: dict[str, Any]
    annotations: dict[str, str | None] = attrs.field(factory=dict)


_MAX_FILE_BYTES = 1 << 20
"""The largest ``net-conf.json`` file read (flannel's is a few hundred bytes); a larger
file, a FIFO or a device is an error, never read whole or waited on."""


def _values(text: str, where: str) -> dict[str, Any]:
    """The keys of a net-conf.json text as flannel reads them (:func:`flannel_values`)."""
    doc = ObjectText(text, where)
    values = dict(doc.values)
    values.pop(FLANNEL_OWNED_MARKER, None)
    values.pop(FLANNEL_WRITTEN_MARKER, None)
    return flannel_values(values, where, raw=doc.raw_texts())


def _read_doc(text: str, record: Record | None, token: Any, where: str, *,
              written: Any, written_name: str, owned_name: str) -> _Doc:
    """The read, its record less the keys someone else set since k3snet wrote them.

    ``written`` is the stored written record as found (``None``: absent).
    """
    doc = _Doc(text=text, record=record, token=token, values=_values(text, where))
    parsed = _parse_written(written, where, written_name, owned_name)
    if record is None or parsed is None:  # written by an older k3snet: all still its
        return doc
    return attrs.evolve(doc, record=_still_written(record, parsed, doc.values))


class _FileStore:
    """``net-conf.json`` as a file; the ownership record is its ``k3snet.io/owned`` member,
    what k3snet wrote its ``k3snet.io/written`` member."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.target = file_target(str(path))
        self.where = f"flannel config file {path}"

    def read(self) -> _Doc | None:
        with translate_errors(f"read {self.where}"):
            try:
                data = read_input(self.path, _MAX_FILE_BYTES)
            except FileNotFoundError:
                return None
        try:
            text = data.decode()
        except UnicodeDecodeError as exc:
            raise BackendError(f"{self.where}: not UTF-8 text ({exc.reason})") from exc
        doc = ObjectText(text, self.where)
        written = doc.values.get(FLANNEL_WRITTEN_MARKER)
        if FLANNEL_WRITTEN_MARKER in doc.values:
            text = doc.remove(FLANNEL_WRITTEN_MARKER)
            doc = ObjectText(text, self.where)
        record = None
        if FLANNEL_OWNED_MARKER in doc.values:
            record = parse_record(doc.values[FLANNEL_OWNED_MARKER], self.where)
            text = doc.remove(FLANNEL_OWNED_MARKER)
        return _read_doc(text, record, data, self.where, written=written,
                         written_name=f"key {FLANNEL_WRITTEN_MARKER!r}",
                         owned_name=repr(FLANNEL_OWNED_MARKER))

    def check_writable(self) -> None:
        """ApplyError if the rename would not replace the file as every reader sees it: a
        file of several hard links (the rename gives one name the new text, and K3s
        reading another never sees it)."""
        with translate_errors(f"read {self.where}", into=ApplyError):
            links = self.path.stat().st_nlink
        if links > 1:
            raise ApplyError(f"{self.where} has {links} hard links: the rename that replaces "
                             "it atomically would give only this name the new text; nothing "
                             "was written. Point k3snet and K3s at one name and remove the "
                             "others (or copy the file)")

    def write(self, doc: _Doc, text: str, record: Record | None) -> int:
        """Replace the file atomically; returns the number of system round trips."""
        if record is not None:
            written = _written_text(record, text, self.where)
            text = ObjectText(text, self.where).set(FLANNEL_OWNED_MARKER, record_text(record))
            text = ObjectText(text, self.where).set(FLANNEL_WRITTEN_MARKER, written)
        # The check that the file is as read and the rename are one step for every k3snet
        # writing it (the agent beside an operator's apply): else both pass the check and
        # the later rename drops the earlier one's edit, which it reported as applied.
        with _writers_lock(self.path, self.where):
            with translate_errors(f"read {self.where} again before writing (nothing was "
                                  "changed)", into=ApplyError):
                current = read_input(self.path, _MAX_FILE_BYTES)
            if current != doc.token:
                raise ApplyError(f"{self.where}: changed by someone else while k3snet was "
                                 "applying; nothing was written, observe and plan again")
            self.check_writable()
            # A signal from the rename on waits until a group has this part among those
            # to undo: raised before the apply returned, the file kept the edit, undone
            # by no one ("nothing was changed").
            committing()
            with translate_errors(f"write {self.where} (the file is unchanged)",
                                  into=ApplyError):
                _atomic_write(self.path, text.encode())
        return 2


def _refuse_unwritable(text: str, target: str) -> None:
    """PlanError if ``text`` holds a lone surrogate (a JSON ``"\\ud800"`` escape Python
    read, from a value built in Python): no UTF-8 writes it, and flannel's Go reads such an
    escape as U+FFFD, never as what k3snet compares."""
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise PlanError(f"flannel backend refuses to write {target}: a value holds "
                        f"{text[exc.start:exc.end]!r}, half of a UTF-16 surrogate pair, "
                        "which is not text net-conf.json can hold") from None


_WRITE_LOCK_SECONDS = 10.0
"""How long a write waits for another k3snet writing the same file (a write takes
milliseconds; a holder that long is stuck)."""


@contextlib.contextmanager
def _writers_lock(path: Path, where: str) -> Iterator[None]:
    """Hold ``flock(2)`` on the directory the file is renamed in, for k3snet's writers.

    The directory, not the file: the rename replaces the file's inode, and a lock on the
    old one would let the next writer in on a file no longer there. A directory k3snet
    cannot open or lock (no read permission, a filesystem without ``flock``) is written
    unguarded, as before: the check of the file's bytes still catches a change made
    before it.
    """
    try:
        fd = os.open(path.resolve().parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield
        return
    try:
        deadline = time.monotonic() + _WRITE_LOCK_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ApplyError(
                        f"{where}: another k3snet is writing it (its directory stayed "
                        f"locked for {_WRITE_LOCK_SECONDS:g} s); nothing was written, "
                        "observe and plan again") from None
                time.sleep(0.05)
            except OSError:
                break  # no flock here: unguarded
        yield
    finally:
        os.close(fd)  # releases the lock


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename; keep mode and owner."""
    real = path.resolve()  # replace the file a symlink points to, not the link
    info = real.stat()
    fd, temporary = tempfile.mkstemp(prefix=f".{real.name}.k3snet-", dir=real.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), stat.S_IMODE(info.st_mode))
            if (info.st_uid, info.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(handle.fileno(), info.st_uid, info.st_gid)
                except PermissionError:
                    # The rename would hand the file to k3snet's user (and, with mode 0600,
                    # lock its owner out): leave it as it is.
                    raise PermissionError(
                        errno.EPERM, f"cannot give the rewritten file its owner "
                        f"{info.st_uid}:{info.st_gid} (run k3snet as root or as that "
                        "user)") from None
            os.fsync(handle.fileno())
        try:
            os.replace(temporary, real)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            raise OSError(errno.EBUSY, f"{exc.strerror}: {real} is a mount point (a "
                          "container given the file itself, a hostPath of type File), "
                          "which no rename replaces; mount its directory") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    # Make the rename itself durable (best effort: some filesystems refuse a dir fsync).
    with contextlib.suppress(OSError):
        directory = os.open(real.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


class _ConfigMapStore:
    """``net-conf.json`` in a ConfigMap; the ownership record is an annotation."""

    def __init__(self, api_client: Any, namespace: str, name: str, timeout: float) -> None:
        from kubernetes import client  # noqa: PLC0415 - optional dependency (k3snet[kube])

        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.name = name
        self.timeout = timeout
        self.target = configmap_target(namespace, name)
        self.where = f"ConfigMap {namespace}/{name}"
        self.clock = ServerClock()  # the restart stamp's, by each read's Date header
        self.settled = Settled()  # the stamp whose pods all restarted: not listed again

    def read(self) -> _Doc | None:
        try:
            with translate_errors(f"read {self.where}",
                                  classifier=KubeErrors(timeout=self.timeout)):
                asked = self.clock.asked()
                configmap, _, headers = self.core.read_namespaced_config_map_with_http_info(
                    self.name, self.namespace, _request_timeout=self.timeout)
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise
        self.clock.note(headers, asked)
        data = configmap.data or {}
        if CONFIGMAP_KEY not in data:
            raise BackendError(f"{self.where} has no {CONFIGMAP_KEY!r} key; is it flannel's "
                               "config? (keys: " + ", ".join(sorted(data)) + ")")
        text = data[CONFIGMAP_KEY]
        metadata = configmap.metadata
        annotations = (metadata.annotations if metadata is not None else None) or {}
        record = None
        if OWNED_ANNOTATION in annotations:
            record = parse_record(annotations[OWNED_ANNOTATION], self.where)
        version = metadata.resource_version if metadata is not None else None
        doc = _read_doc(text, record, version, self.where,
                        written=annotations.get(WRITTEN_ANNOTATION),
                        written_name=f"annotation {WRITTEN_ANNOTATION}",
                        owned_name=OWNED_ANNOTATION)
        return attrs.evolve(doc, annotations={
            key: annotations.get(key) for key in _RECORDS})

    def pending_restarts(self) -> tuple[PendingRestart, ...]:
        """:meth:`FlannelBackend.pending_restarts` of this ConfigMap."""
        try:
            with translate_errors(f"read {self.where}",
                                  classifier=KubeErrors(timeout=self.timeout)):
                asked = self.clock.asked()
                configmap, _, headers = self.core.read_namespaced_config_map_with_http_info(
                    self.name, self.namespace, _request_timeout=self.timeout)
        except KubeApiError as exc:
            if exc.status == 404:
                return ()
            raise
        self.clock.note(headers, asked)
        metadata = configmap.metadata
        annotations = (metadata.annotations if metadata is not None else None) or {}
        return pending_restarts(self.core.api_client, self.namespace, self.name,
                                dict(annotations), reason="flannel reads it when it starts",
                                known=(FLANNEL_DAEMONSET,), timeout=self.timeout,
                                settled=self.settled, now=self.clock.now())

    def readers(self) -> tuple[str, ...]:
        """:meth:`FlannelBackend.restart_needed` of this ConfigMap."""
        try:
            found = restart_readers(self.core.api_client, self.namespace, self.name,
                                    known=(FLANNEL_DAEMONSET,), timeout=self.timeout)
        except KubeApiError as exc:
            why = f"DaemonSets not listed: {exc}"
        else:
            if found:
                return tuple(f"DaemonSet {self.namespace}/{name}" for name in found)
            why = f"no DaemonSet in {self.namespace} found reading {self.where}"
        return (f"DaemonSet {self.namespace}/{FLANNEL_DAEMONSET} (upstream flannel's name; "
                f"{why})",)

    def write(self, doc: _Doc, text: str, record: Record | None,
              made: Callable[[Callable[[], object]], object] | None = None) -> int:
        """One merge patch, conditional on the resourceVersion read; a stamped one answered
        gives ``made`` its undo before :func:`restamp` (which raises RestampError)."""
        metadata: dict[str, Any] = {}
        if doc.token is not None:
            metadata["resourceVersion"] = doc.token
        body: dict[str, Any] = {"metadata": metadata}
        # Both annotations with every write: the record as it now is (keys someone else
        # rewrote were dropped on reading) and what k3snet's keys hold after it.
        metadata["annotations"] = {
            OWNED_ANNOTATION: None if record is None else record_text(record),
            WRITTEN_ANNOTATION: None if record is None else _written_text(
                record, text, self.where),
        }
        if text != doc.text:
            body["data"] = {CONFIGMAP_KEY: text}
            self.settled.forget()  # a stamp written in the same second is another one
            # Flannel reads it when it starts: the change awaits its pods' restart, and
            # so does a destroy's giving the keys back (the stamp stays after k3snet's
            # last key, alone: that restart is followed too).
            metadata["annotations"][CHANGED_ANNOTATION] = self.clock.stamp()
        since = self.clock.earliest()  # never after the landing: for an undo's stamp
        # A signal from the patch on waits until a group has this part among those to
        # undo: raised as the answer came, before ``made`` had the undo, the ConfigMap
        # kept the edit, undone by no one.
        committing()
        with translate_errors(f"patch {self.where}",
                              classifier=KubeErrors(timeout=self.timeout, error=_ApplyKubeError)):
            result, _, headers = self.core.patch_namespaced_config_map_with_http_info(
                self.name, self.namespace, body, field_manager="k3snet",
                _content_type="application/merge-patch+json", _request_timeout=self.timeout)
        sent = metadata["annotations"].get(CHANGED_ANNOTATION)
        if sent is not None:
            # Landed in a later second than the stamp (a slow write): the answer's time.
            version = getattr(getattr(result, "metadata", None), "resource_version", None)
            # What the write left, for its undo's compare on a 409 (the stamp: the one
            # the move left, once made).
            left: dict[str, str | None] = {CONFIGMAP_KEY: text, **metadata["annotations"]}
            # Its move refused (RestampError) or interrupted (Ctrl-C, SIGTERM): the write
            # is taken back (all or nothing) by ``made``'s undo, as it was read.
            if made is not None:
                made(lambda: self.write_back(doc, version, since, left))
            left[CHANGED_ANNOTATION], _ = restamp(
                self.core, self.namespace, self.name, sent, headers, version=version,
                timeout=self.timeout, answered=self.clock.stamp())
        return 1

    def write_back(self, doc: _Doc, version: str | None, since: str | None,
                   left: Mapping[str, str | None]) -> None:
        """Take back :meth:`write`'s landed write of ``doc``'s change: its text and
        k3snet's annotations as read, conditional on ``version`` (the write's). A 409
        reads again and compares (:func:`~k3snet.backends.cni_restart.take_back`, as
        cilium's undo): ``net-conf.json`` and k3snet's annotations as the write
        ``left`` them, another key changed since (``cni-conf.json``, a label, ``kubectl
        annotate``) is kept and the undo sent again; one of them changed (a Helm upgrade
        of ``net-conf.json``, another k3snet's write) is named and left, the undo
        failing (it failed at any 409). The stamp put back, the undo is stamped where a
        pod was made since ``since`` (the server's earliest time before the write), which
        may have read the config undone
        (:func:`~k3snet.backends.cni_restart.stamp_undone`)."""
        back: dict[str, str | None] = {CONFIGMAP_KEY: doc.text, **doc.annotations}

        def send(at: str | None) -> str | None:
            metadata: dict[str, Any] = {"annotations": dict(doc.annotations)}
            if at is not None:
                metadata["resourceVersion"] = at
            body = {"metadata": metadata, "data": {CONFIGMAP_KEY: doc.text}}
            with translate_errors(f"take back k3snet's write of {self.where}",
                                  classifier=KubeErrors(timeout=self.timeout)):
                result = self.core.patch_namespaced_config_map(
                    self.name, self.namespace, body, field_manager="k3snet",
                    _content_type="application/merge-patch+json",
                    _request_timeout=self.timeout)
            return getattr(getattr(result, "metadata", None), "resource_version", None)

        undone = take_back(self.where, version, send, self._held, lambda found: found[1],
                           undone=lambda found: _differing(found[0], back),
                           left=lambda found: _differing(found[0], left))
        stamp_undone(self.core.api_client, self.namespace, self.name, since=since,
                     back=doc.annotations.get(CHANGED_ANNOTATION), version=undone,
                     known=(FLANNEL_DAEMONSET,), clock=self.clock, timeout=self.timeout)

    def _held(self) -> tuple[dict[str, str | None], str | None] | None:
        """``net-conf.json`` and k3snet's annotations as the ConfigMap holds them, and its
        resourceVersion (``None``: gone), read as text: an undo compares them, whatever
        another writer left there."""
        try:
            with translate_errors(f"read {self.where}",
                                  classifier=KubeErrors(timeout=self.timeout)):
                found = self.core.read_namespaced_config_map(
                    self.name, self.namespace, _request_timeout=self.timeout)
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise
        metadata = found.metadata
        annotations = (metadata.annotations if metadata is not None else None) or {}
        held: dict[str, str | None] = {CONFIGMAP_KEY: (found.data or {}).get(CONFIGMAP_KEY)}
        held.update({key: annotations.get(key) for key in _RECORDS})
        return held, (metadata.resource_version if metadata is not None else None)


_RECORDS = (OWNED_ANNOTATION, WRITTEN_ANNOTATION, CHANGED_ANNOTATION)
"""k3snet's annotations on flannel's ConfigMap: its two records and the restart stamp."""


def _differing(held: Mapping[str, str | None], wanted: Mapping[str, str | None]) -> list[str]:
    """What ``held`` (``net-conf.json`` and k3snet's annotations, :meth:`_ConfigMapStore.
    _held`) holds otherwise than ``wanted``, by name: the key, ``annotation NAME``."""
    return [key if key == CONFIGMAP_KEY else f"annotation {key}"
            for key in (CONFIGMAP_KEY, *_RECORDS) if held.get(key) != wanted.get(key)]


def _value_text(values: Any, key: str) -> str | None:
    """``values[key]`` as canonical JSON text (``None``: absent, or ``values`` no object)."""
    if not isinstance(values, dict) or key not in values:
        return None
    return canonical_json(values[key])


def _written(record: Record, values: dict[str, Any]) -> dict[str, Any]:
    """What k3snet's keys (and ``Backend`` members) of ``record`` hold in ``values``."""
    return {key: ({m: _value_text(values.get(key), m) for m in previous}
                  if isinstance(previous, dict) else _value_text(values, key))
            for key, previous in record.items()}


def _written_text(record: Record, text: str, where: str) -> str:
    """The written record as stored: what k3snet's keys hold in ``text``, as JSON."""
    return json.dumps(_written(record, _values(text, where)), sort_keys=True,
                      ensure_ascii=False)


def _parse_written(raw: Any, where: str, name: str, owned_name: str) -> dict[str, Any] | None:
    """A stored written record (a JSON text, or the file member's value) checked."""
    if raw is None:
        return None
    data = raw
    if isinstance(raw, str):
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):  # (nested deeper than Python's parser goes)
            data = None
    if not isinstance(data, dict) or not all(
            v is None or isinstance(v, str) or (isinstance(v, dict) and all(
                w is None or isinstance(w, str) for w in v.values()))
            for v in data.values()):
        raise BackendError(f"{where}: k3snet's {name} is not valid; "
                           f"remove it (k3snet then keeps every key {owned_name} names)")
    return data


def _still_written(record: Record, written: dict[str, Any], values: dict[str, Any]) -> Record:
    """``record`` less the keys (``Backend`` members) whose value is no longer what k3snet
    wrote: someone else set them since, so they are theirs, with the value they gave, and
    removing k3snet's config must not put back the text from before k3snet's first write.
    A key the annotation does not name stays k3snet's (never guessed)."""
    kept: Record = {}
    for key, previous in record.items():
        was = written.get(key, _UNKNOWN)
        if isinstance(previous, dict) and isinstance(was, dict):
            members = {m: p for m, p in previous.items()
                       if m not in was or _value_text(values.get(key), m) == was[m]}
            if members:
                kept[key] = members
        elif was is _UNKNOWN or isinstance(was, dict) or _value_text(values, key) == was:
            kept[key] = previous
    return kept


_UNKNOWN = object()


class _ApplyKubeError(KubeApiError, ApplyError):
    """A failed write: an ApplyError (nothing was changed) that keeps the HTTP status."""

    def __init__(self, message: str, *, status: int | None = None,
                 reason: str | None = None) -> None:
        ApplyError.__init__(self, f"{message}; nothing was changed")
        self.status = status
        self.reason = reason


# ---------------------------------------------------------------- the backend


def _owned(target: str, doc: _Doc) -> FlannelConfig | None:
    """The keys k3snet set, with their current values (``Backend``: only its members)."""
    if doc.record is None:
        return None
    members: dict[str, Any] = {}
    for key, previous in doc.record.items():
        if key not in doc.values:
            continue
        current = doc.values[key]
        if isinstance(previous, dict) and isinstance(current, dict):
            current = {k: current[k] for k in ("Type", *previous) if k in current}
        members[key] = current
    return FlannelConfig.from_members(target, members)


def _foreign_values(doc: _Doc) -> dict[str, Any]:
    """The config as it would be without k3snet: owned keys back at their previous values."""
    values = dict(doc.values)
    for key, previous in (doc.record or {}).items():
        if isinstance(previous, dict):
            current = values.get(key)
            if isinstance(current, dict):
                current = dict(current)
                for member, was in previous.items():
                    if was is None:
                        current.pop(member, None)
                    else:
                        current[member] = json.loads(was)
                values[key] = current
        elif previous is None:
            values.pop(key, None)
        else:
            values[key] = json.loads(previous)
    return values


def _foreign(target: str, doc: _Doc) -> FlannelConfig:
    return FlannelConfig.from_members(target, _foreign_values(doc))


_PATH_OR_CONFIGMAP = "flannel backend: give a file path or a ConfigMap, not both"


def _reader(value: object) -> str:
    """Option ``reader``: one of :data:`READERS`, else a
    :class:`~k3snet.errors.BackendOptionError`."""
    if not isinstance(value, str) or value not in READERS:
        raise BackendOptionError(f"reader must be one of {', '.join(READERS)}, got {value!r}")
    return value


def _path(value: object) -> str | os.PathLike[str]:
    """Option ``path``: a path (text), else a :class:`~k3snet.errors.BackendOptionError`."""
    if isinstance(value, str | os.PathLike):
        return value
    raise BackendOptionError(f"path must be a path (text), got {value!r}")


def _configmap(value: Any) -> tuple[str, str]:
    """Option ``configmap``: ``(namespace, name)`` of names the API server takes, else a
    :class:`~k3snet.errors.BackendOptionError` (a name it refuses failed at the first
    request, on every node)."""
    namespace, name = configmap_ref(value)
    problem = namespace_problem(namespace) or object_name_problem(name)
    if problem is not None:
        raise BackendOptionError(f"configmap: {problem}")
    return namespace, name


class FlannelBackend(BackendBase):
    """Flannel's ``net-conf.json``, in a file (``path``) or a ConfigMap (``configmap``).

    Give at most one of ``path`` and ``configmap``; with neither, the ConfigMap of
    upstream flannel (:data:`DEFAULT_CONFIGMAP`). For a ConfigMap, ``api_client``
    is a ``kubernetes.client.ApiClient`` (else one is built from ``kubeconfig`` /
    ``context``, or the in-cluster service account); ``timeout`` bounds each request.
    ``allow_disruptive`` lets ``apply`` make changes :meth:`disruptive` names
    (a new ``Network``, address family, backend type, vxlan VNI or port).
    ``reader`` says who reads the file (:data:`READERS`): K3s' embedded flannel
    (``--flannel-conf``, the default), which ignores ``EnableNFTables`` (refused then),
    or ``"flanneld"``, a flanneld of one's own (K3s started with
    ``--flannel-backend=none``), which reads it; a ConfigMap's readers are the
    DaemonSets mounting it, whatever ``reader`` says (a spec's options may give it for
    the agent's file, ``$K3SNET_FLANNEL_CONF``).

    A missing file or ConfigMap is observed as empty; applying to it is refused
    (k3snet edits flannel's config, it does not invent one), and so is applying
    to the file K3s generates (:func:`is_k3s_generated`), unless ``reader`` is
    ``"flanneld"`` (K3s started with ``--flannel-backend=none`` writes no such file).
    """

    name = "flannel"
    option_defaults: ClassVar[Mapping[str, str]] = {
        "path": "none: the ConfigMap",
        "configmap": "kube-flannel/kube-flannel-cfg (upstream flannel's), unless path is given",
        "kubeconfig": KUBECONFIG_DEFAULT,
        "reader": "k3s: K3s' embedded flannel reads the file (path)",
    }
    """What an option left out means (``k3snet explain backends.flannel``)."""

    option_checks: ClassVar[OptionChecks] = {
        "path": lambda v: v is None or _path(v),
        "configmap": lambda v: v is None or _configmap(v),
        "reader": lambda v: v is None or _reader(v),
        "timeout": lambda v: option_seconds("timeout", v),
        "allow_disruptive": lambda v: option_flag("allow_disruptive", v),
        **API_OPTION_CHECKS}
    """The constructor's checks of option values."""

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The option checks, and ``configmap`` given with ``path``."""
        problems = super().check_options(options)
        if options.get("path") is not None and options.get("configmap") is not None:
            problems.append(("configmap", _PATH_OR_CONFIGMAP))
        return problems

    def __init__(
        self,
        *,
        path: str | Path | None = None,
        configmap: tuple[str, str] | str | None = None,
        api_client: Any = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        allow_disruptive: bool = False,
        reader: Reader | None = None,
    ) -> None:
        super().__init__()
        if path is not None and configmap is not None:
            raise ModelError(_PATH_OR_CONFIGMAP)
        self.reader = _reader("k3s" if reader is None else reader)
        timeout = option_seconds("timeout", timeout)
        self.allow_disruptive = option_flag("allow_disruptive", allow_disruptive)
        self._client: Any = None
        self._owns_client = False
        self._store: _FileStore | _ConfigMapStore
        if path is not None:
            self._store = _FileStore(Path(_path(path)).absolute())
        else:
            # The names checked before connecting.
            namespace, cm_name = (_configmap(configmap) if configmap is not None
                                  else DEFAULT_CONFIGMAP)
            self._client, self._owns_client = make_api_client(
                api_client, kubeconfig=kubeconfig, context=context)
            self._store = _ConfigMapStore(self._client, namespace, cm_name, timeout)
        # When this backend last changed the file's flannel settings (k3snet's clock), not
        # said yet by pending_restarts(); None: nothing to say.
        self._file_changed: str | None = None

    @property
    def capabilities(self) -> frozenset[str]:
        """``{"flannel"}``."""
        return frozenset({"flannel"})

    @classmethod
    def declared_kinds(cls, options: Mapping[str, Any]) -> frozenset[str] | None:
        """``{"flannel"}``, whatever the options (``k3snet validate``: a memory backend of
        every kind beside it manages it too)."""
        return frozenset({"flannel"})

    @property
    def api_client(self) -> Any:
        """The Kubernetes ``ApiClient`` this backend talks to, ``None`` for a file (a plan
        file records which cluster it is, :mod:`k3snet.planfile`)."""
        return self._client

    @property
    def target(self) -> str:
        """The target string of the managed config (``file:...`` or ``configmap:ns/name``)."""
        return self._store.target

    def observe(self) -> State:
        """The keys k3snet owns (owned) and the config as it would be without them (foreign)."""
        doc = self._store.read()
        if doc is None:
            return State()
        return self._state(doc)

    def _state(self, doc: _Doc) -> State:
        owned = _owned(self.target, doc)
        return State(owned=[] if owned is None else [owned],
                     foreign=[_foreign(self.target, doc)])

    def expect(self, state: State) -> None:
        """Refuse, before anything is read, a wanted config of this target that sets what
        flannel would not read as it means (``SubnetLen``, ``Networks``, an option
        no backend type has ...): :class:`~k3snet.errors.PlanError`, as ``check`` and
        ``apply`` refuse writing it. Such a key already in place, written by a k3snet
        before the refusal at the same value, was planned as nothing, with no refusal
        shown, while the spec still asked for it (``converge`` and ``k3snet plan`` call
        this with the desired state before :meth:`observe`). An undo, which gives such a
        key back, never comes here."""
        for wanted in state.owned:
            if isinstance(wanted, FlannelConfig) and wanted.target == self.target:
                refusal = self._wanted_refusal(wanted)
                if refusal is not None:
                    raise PlanError(f"flannel backend refuses {wanted.describe()}: {refusal}")

    def disruptive(self, change: Change) -> str | None:
        """Why ``change`` disrupts pods once flannel restarts, or ``None``.

        Judged against the config as it is now: a change that sets ``Network``
        to the value already there is not disruptive; one that changes it is.
        A change that does not fit the config (``check`` says why) is ``None``.
        """
        try:
            doc = self._store.read()
            if doc is None:
                return None
            _, _, reasons = self._edit(doc, Plan(changes=[change]))
        except (PlanError, BackendError):
            return None
        return "; ".join(reasons) or None

    def check(self, plan: Plan) -> tuple[str, ...]:
        """Problems applying ``plan`` would hit; nothing is written."""
        try:
            if plan.changes:
                self._refuse_k3s_generated()
                doc = self._read_for_apply()
                text, record, _ = self._edit(doc, plan, refuse_disruptive=True)
                if isinstance(self._store, _FileStore) and (text != doc.text
                                                            or record != doc.record):
                    self._store.check_writable()
            else:
                self.ensure_capable(plan)
        except (PlanError, BackendError) as exc:
            return (str(exc),)
        return ()

    def apply(self, plan: Plan) -> ApplyResult:
        """Apply every change in one atomic write of the changed keys, or nothing."""
        self.ensure_capable(plan)
        if not plan.changes:
            return ApplyResult(self.name, (), operations=0)
        self._refuse_k3s_generated()
        doc = self._read_for_apply()
        text, record, _ = self._edit(doc, plan, refuse_disruptive=True)
        undo = Compensation(self.name, self._store.where)  # one write: nothing to undo before it
        fail_at = self.faults.take(plan)
        if fail_at is not None:  # the write below is one step: refused, nothing is written
            undo.fail(plan.changes[fail_at], "injected failure (fault hook)")
        operations = 1
        if text != doc.text or record != doc.record:
            store = self._store
            with undo.guarding():  # an interruption after the write landed takes it back
                try:
                    if isinstance(store, _ConfigMapStore):
                        operations += store.write(
                            doc, text, record,
                            made=lambda back: undo.record(plan.changes, back))
                    else:
                        operations += store.write(doc, text, record)
                except RestampError as exc:
                    undo.fail(plan.changes[-1], str(exc), exc)
            if isinstance(self._store, _FileStore) and text != doc.text:
                self._file_changed = changed_stamp()
        return ApplyResult(self.name, plan.changes, operations=operations)

    def _refuse_k3s_generated(self) -> None:
        # Only K3s' embedded flannel has K3s write the file: started with
        # --flannel-backend=none (reader="flanneld"), K3s prepares no flannel file.
        store = self._store
        if self.reader == "k3s" and isinstance(store, _FileStore) and (
                is_k3s_generated(store.path) or is_k3s_generated(store.path.resolve())):
            raise PlanError(
                f"{store.where} is the net-conf.json K3s generates: K3s writes it again on "
                "every start (from --flannel-backend and --cluster-cidr), so k3snet's edit would "
                "be lost. Copy it to a file you own (for example "
                "/etc/rancher/k3s/flannel-net-conf.json), start K3s with --flannel-conf "
                "naming that file (flannel-conf: in /etc/rancher/k3s/config.yaml), and point "
                "k3snet's flannel backend at it (path=, --backend-opt flannel.path=, or "
                "K3SNET_FLANNEL_CONF)")

    def _read_for_apply(self) -> _Doc:
        try:
            doc = self._store.read()
        except BackendError as exc:
            if isinstance(exc, ApplyError):
                raise
            raise ApplyError(f"{exc}; nothing was changed") from exc
        if doc is None:
            raise ApplyError(f"{self._store.where} does not exist; k3snet changes keys of an "
                             "existing flannel config, it does not create one")
        return doc

    def _refusal(self, doc: _Doc, wanted: FlannelConfig) -> str | None:
        """Why this backend will not write ``wanted`` into ``doc``'s config (``None``: it
        may): extension commands, and keys flannel would not read as the config means."""
        commands = command_refusals(_foreign_values(doc), wanted.members().get("Backend"))
        if commands:
            return ("flannel runs the extension backend's commands as root on every node, "
                    f"so {'; '.join(commands)} (write them by hand if you mean to)")
        return self._wanted_refusal(wanted)

    def _wanted_refusal(self, wanted: FlannelConfig) -> str | None:
        """Why this backend will not write ``wanted``, whatever the config holds: keys
        and options flannel would not read as the config means (``None``: it may)."""
        if undo_runs_here():
            # An undo gives back the config as it was before this run: a key an earlier
            # k3snet wrote, refused below as one brought in, goes back too (refused, the
            # undo failed and left the node half-changed).
            return None
        nftables = flannel_nftables_refusal(file=isinstance(self._store, _FileStore),
                                            reader=self.reader)
        if nftables is not None and wanted.enable_nftables is not None:
            return nftables
        ignored = unread_keys(wanted.members())
        if ignored:
            return (f"{'; '.join(ignored)}. Writing them would change nothing: leave them "
                    "out of the config k3snet sets (one already in the file or ConfigMap "
                    "stays as it is)")
        unread = unread_options(wanted.members().get("Backend"),
                                windows=isinstance(self._store, _ConfigMapStore))
        if unread:
            return (f"{'; '.join(unread)} (Go's JSON decoding drops a key no option "
                    "matches): correct the option's name, or leave it out (an option of a "
                    "newer flannel k3snet does not know: write it into the config by hand; "
                    "k3snet keeps it)")
        bad = option_value_problems(wanted.members().get("Backend"))
        if bad:  # (a secret shown as shown_flannel_secret shows it)
            return (f"{'; '.join(bad)}: flannel's backend stops on it when it starts, so "
                    "k3snet does not write it")
        return None

    def _edit(self, doc: _Doc, plan: Plan, *, refuse_disruptive: bool = False
              ) -> tuple[str, Record | None, list[str]]:
        """The new text and record after every change, and why it is disruptive.

        PlanError if a change does not fit what is owned (:func:`fit_problems`),
        names another target, or (``refuse_disruptive``, unless allowed) is disruptive.
        """
        where = self._store.where
        for change in plan.changes:
            subject = change.subject
            if not isinstance(subject, FlannelConfig):
                raise PlanError(f"flannel backend: cannot apply {change}: not a flannel config")
            if subject.target != self.target:
                raise PlanError(f"flannel backend manages {self.target}; the plan changes "
                                f"{subject.target}")
            wanted = change.after
            if isinstance(wanted, FlannelConfig):
                refusal = self._refusal(doc, wanted)
                if refusal is not None:
                    raise PlanError(f"flannel backend refuses {change} on {self.target}: "
                                    f"{refusal}")
        problems = fit_problems(self, plan, self._state(doc))
        if problems:
            raise PlanError(f"{self.name} backend refuses the plan for {self.target}, nothing "
                            "was changed:\n  " + "\n  ".join(problems))
        text, record = doc.text, copy_record(doc.record)
        values = doc.values
        reasons: list[str] = []
        for change in plan.changes:
            text, record = apply_change(text, record, change, where)
            _refuse_unwritable(text, self.target)
            after = _values(text, where)
            reasons += disruptions(values, after)
            values = after
        # Only what k3snet brings in: not a refusal of the config as found, nor of the
        # config as it was before k3snet (giving that back is always allowed).
        known = {*start_refusals(doc.values), *start_refusals(_foreign_values(doc))}
        refused = [r for r in start_refusals(values) if r not in known]
        if refused and refuse_disruptive:  # (disruptive() still names the disruption)
            # Not a disruption to allow: flannel would not start on any node after it.
            raise PlanError(f"flannel backend refuses to write {self.target}: "
                            f"{'; '.join(refused)}, so flannel would not start (its "
                            "kube subnet manager refuses every node's lease); set the "
                            "family's network, or leave the family off")
        if reasons and refuse_disruptive and not self.allow_disruptive:
            raise PlanError(f"flannel backend refuses a disruptive change to {self.target}: "
                            f"{'; '.join(reasons)}. Allow it with {ALLOW_DISRUPTIVE_HINT}, "
                            "then restart flannel on every node")
        return text, record, reasons

    def restart_needed(self, change: Change) -> str | tuple[str, ...] | None:
        """What must restart for ``change`` to take effect (flannel reads net-conf.json
        only when it starts): for the ConfigMap, each DaemonSet of its namespace reading
        it (as :meth:`pending_restarts` finds them: its pod template names the ConfigMap,
        or it is upstream's ``kube-flannel-ds``), else, none found or none to be listed,
        upstream's DaemonSet by name, said as such; K3s for a file (flanneld with
        ``reader="flanneld"``)."""
        store = self._store
        if isinstance(store, _ConfigMapStore):
            return store.readers()
        return self._file_reader

    def pending_restarts(self) -> tuple[PendingRestart, ...]:
        """The flannel pods still running since before k3snet last changed the
        ConfigMap's ``net-conf.json`` (flannel reads it once, when it starts): one
        :class:`~k3snet.backends.PendingRestart` per DaemonSet with such pods, none once
        all restarted. For a file, K3s reads it when it starts (restart K3s), and no
        cluster object shows when K3s last started (its pods outlive its restart): the
        restart is said pending once, right after this backend's :meth:`apply` changed
        the file, with ``stale`` ``None``, and not followed after."""
        store = self._store
        if isinstance(store, _ConfigMapStore):
            return store.pending_restarts()
        changed, self._file_changed = self._file_changed, None
        if changed is None:
            return ()
        reader = "K3s" if self.reader == "k3s" else "flanneld"
        return (PendingRestart(self._file_reader, f"{store.where} changed at {changed}; "
                               f"{reader} reads it when it starts, and no cluster object "
                               f"shows when {reader} started: not followed after this run"),)

    @property
    def _file_reader(self) -> str:
        """What restarts for a change of the file to take effect."""
        return _K3S if self.reader == "k3s" else _FLANNELD

    def close(self) -> None:
        """Release the API client if this backend built it (idempotent)."""
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None
        super().close()
