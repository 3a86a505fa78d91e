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
``net-conf.json`` with Go's ``encoding/json``, which ignores unknown keys). So
``observe`` reports:

* ``owned``: a :class:`~k3snet.model.cni.FlannelConfig` of the keys k3snet set,
  with their current values;
* ``foreign``: the config as it would be without k3snet (every other key as
  found, owned keys with their recorded previous values), which stays the same
  while k3snet changes its keys, and is what a wanted key is ``met`` by.

**Minimal edits.** ``apply`` rewrites only the text of the values that change
and inserts or removes only the members it adds or removes; every other byte
(unknown keys, their formatting, whitespace, key order) is kept, so removing
k3snet's keys gives back the original text byte for byte. Flannel reads its
config when it starts: restart flannel (K3s, or the kube-flannel DaemonSet) for
a change to take effect; changing ``Network`` of a running cluster renumbers pods. The file
is replaced atomically (temporary file in the same directory, ``fsync``,
``rename``, mode and owner kept); the ConfigMap is changed with one JSON merge
patch that carries the ``resourceVersion`` read, so a concurrent change makes
the API server answer 409 and nothing is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import attrs

from k3snet.backends.base import ApplyResult, ensure_capable
from k3snet.backends.kit import BackendBase
from k3snet.errors import ApplyError, BackendError, ModelError, PlanError
from k3snet.kube import (
    DEFAULT_TIMEOUT,
    KubeApiError,
    kube_call,
    make_api_client,
)
from k3snet.model.cni import (
    FLANNEL_OWNED_MARKER,
    FlannelConfig,
    canonical_json,
    configmap_target,
    effective_config,
    file_target,
)
from k3snet.model.state import State
from k3snet.planner import Change, Plan

__all__ = [
    "CONFIGMAP_KEY",
    "DEFAULT_CONFIGMAP",
    "OWNED_ANNOTATION",
    "FlannelBackend",
    "effective_config",
]

DEFAULT_CONFIGMAP: tuple[str, str] = ("kube-flannel", "kube-flannel-cfg")
"""Upstream flannel's ConfigMap (namespace, name)."""

CONFIGMAP_KEY = "net-conf.json"
OWNED_ANNOTATION = "k3snet.io/flannel-owned"
"""The ConfigMap annotation holding k3snet's ownership record (JSON: key -> previous text)."""

_WS = " \t\n\r"

# key -> the exact JSON text the key had before k3snet set it (None: it was absent).
Record = dict[str, str | None]


# ---------------------------------------------------------------- JSON text editing


@attrs.frozen
class _Member:
    """Where one top-level member sits in the text."""

    key: str
    lead: int  # just after the "{" or "," before it
    key_start: int
    key_end: int
    value_start: int
    value_end: int


def _skip(text: str, index: int) -> int:
    while index < len(text) and text[index] in _WS:
        index += 1
    return index


class _ObjectText:
    """A JSON object's text with the spans of its top-level members, for surgical edits."""

    def __init__(self, text: str, where: str) -> None:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BackendError(f"{where}: net-conf.json is not valid JSON: {exc.msg} "
                               f"(line {exc.lineno}, column {exc.colno})") from exc
        if not isinstance(value, dict):
            raise BackendError(f"{where}: net-conf.json must be a JSON object, "
                               f"not {type(value).__name__}")
        self.text = text
        self.values: dict[str, Any] = value
        self.open, self.members = self._scan(text)
        seen: set[str] = set()
        for member in self.members:
            if member.key in seen:
                raise BackendError(f"{where}: net-conf.json has the key {member.key!r} twice; "
                                   "remove one (which one flannel uses is not obvious)")
            seen.add(member.key)
        self.by_key = {m.key: m for m in self.members}

    @staticmethod
    def _scan(text: str) -> tuple[int, list[_Member]]:
        # The text is known to be a valid JSON object (json.loads accepted it).
        decoder = json.JSONDecoder()
        index = _skip(text, 0)
        opening = index
        index += 1
        lead = index
        members: list[_Member] = []
        index = _skip(text, index)
        if text[index] == "}":
            return opening, members
        while True:
            key_start = index
            key, index = json.decoder.scanstring(text, index + 1)  # type: ignore[attr-defined]
            key_end = index
            index = _skip(text, index) + 1  # the ":"
            value_start = _skip(text, index)
            _, value_end = decoder.raw_decode(text, value_start)
            members.append(_Member(key, lead, key_start, key_end, value_start, value_end))
            index = _skip(text, value_end)
            if text[index] == "}":
                return opening, members
            index += 1  # the ","
            lead = index
            index = _skip(text, index)

    def raw(self, key: str) -> str | None:
        """The exact text of a member's value, or None if absent."""
        member = self.by_key.get(key)
        return None if member is None else self.text[member.value_start:member.value_end]

    def set(self, key: str, value_text: str) -> str:
        """The text with ``key`` set to ``value_text`` (replaced in place, or appended)."""
        text = self.text
        member = self.by_key.get(key)
        if member is not None:
            return text[:member.value_start] + value_text + text[member.value_end:]
        name = json.dumps(key, ensure_ascii=False)
        if not self.members:
            at = self.open + 1
            return f"{text[:at]}{name}: {value_text}{text[at:]}"
        # Copy the layout of the last member, so a pretty-printed file stays pretty.
        last = self.members[-1]
        separator = text[last.lead:last.key_start]
        colon = text[last.key_end:last.value_start]
        insert = f",{separator}{name}{colon}{value_text}"
        return text[:last.value_end] + insert + text[last.value_end:]

    def remove(self, key: str) -> str:
        """The text without ``key`` (the exact inverse of appending it with :meth:`set`)."""
        text = self.text
        member = self.by_key.get(key)
        if member is None:
            return text
        index = self.members.index(member)
        if len(self.members) == 1:
            return text[:member.lead] + text[member.value_end:]
        if index == len(self.members) - 1:
            previous = self.members[index - 1]
            return text[:previous.value_end] + text[member.value_end:]
        following = self.members[index + 1]
        return text[:member.key_start] + text[following.key_start:]


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _set_value(text: str, key: str, value: Any, where: str) -> str:
    """Set ``key`` to ``value`` unless it already holds an equal value (bytes kept)."""
    doc = _ObjectText(text, where)
    if key in doc.values and canonical_json(doc.values[key]) == canonical_json(value):
        return text
    return doc.set(key, _dump(value))


def _restore(text: str, key: str, previous: str | None, where: str) -> str:
    """Put back the exact text a key had (or remove it if it was absent)."""
    doc = _ObjectText(text, where)
    if previous is None:
        return doc.remove(key)
    if doc.raw(key) == previous:
        return text
    return doc.set(key, previous)


def _parse_record(raw: Any, where: str) -> Record:
    """Validate an ownership record (a JSON object: key -> previous JSON text or null)."""
    data = raw
    if isinstance(raw, str):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise BackendError(f"{where}: k3snet's ownership record is not valid JSON "
                               f"({exc.msg}); restore it or remove it by hand") from exc
    if not isinstance(data, dict):
        raise BackendError(f"{where}: k3snet's ownership record must be a JSON object")
    record: Record = {}
    for key, previous in data.items():
        if previous is not None:
            if not isinstance(previous, str):
                raise BackendError(f"{where}: ownership record entry {key!r} is not a JSON text")
            try:
                json.loads(previous)
            except json.JSONDecodeError as exc:
                raise BackendError(f"{where}: ownership record entry {key!r} holds invalid "
                                   f"JSON ({exc.msg})") from exc
        record[key] = previous
    return record


def _record_text(record: Record) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False)


# ---------------------------------------------------------------- where the text lives


@attrs.frozen
class _Doc:
    """One read of the target: the text, k3snet's ownership record and a change token."""

    text: str
    record: Record | None
    token: Any


class _FileStore:
    """``net-conf.json`` as a file; the ownership record is its ``k3snet.io/owned`` member."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.target = file_target(str(path))
        self.where = f"flannel config file {path}"

    def read(self) -> _Doc | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BackendError(f"{self.where}: cannot read it: {exc.strerror}") from exc
        try:
            text = data.decode()
        except UnicodeDecodeError as exc:
            raise BackendError(f"{self.where}: not UTF-8 text ({exc.reason})") from exc
        doc = _ObjectText(text, self.where)
        record = None
        if FLANNEL_OWNED_MARKER in doc.values:
            record = _parse_record(doc.values[FLANNEL_OWNED_MARKER], self.where)
            text = doc.remove(FLANNEL_OWNED_MARKER)
        return _Doc(text=text, record=record, token=data)

    def write(self, doc: _Doc, text: str, record: Record | None) -> int:
        """Replace the file atomically; returns the number of system round trips."""
        if record is not None:
            text = _ObjectText(text, self.where).set(FLANNEL_OWNED_MARKER, _record_text(record))
        try:
            current = self.path.read_bytes()
        except OSError as exc:
            raise ApplyError(f"{self.where}: cannot read it again before writing: "
                             f"{exc.strerror}; nothing was changed") from exc
        if current != doc.token:
            raise ApplyError(f"{self.where}: changed by someone else while k3snet was applying; "
                             "nothing was written, observe and plan again")
        try:
            _atomic_write(self.path, text.encode())
        except OSError as exc:
            raise ApplyError(f"{self.where}: cannot write it: {exc.strerror or exc}; the file "
                             "is unchanged") from exc
        return 2


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
                with contextlib.suppress(PermissionError):
                    os.fchown(handle.fileno(), info.st_uid, info.st_gid)
            os.fsync(handle.fileno())
        os.replace(temporary, real)
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

    def read(self) -> _Doc | None:
        try:
            configmap = kube_call(
                f"read {self.where}",
                lambda: self.core.read_namespaced_config_map(
                    self.name, self.namespace, _request_timeout=self.timeout),
                timeout=self.timeout,
            )
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise
        data = configmap.data or {}
        if CONFIGMAP_KEY not in data:
            raise BackendError(f"{self.where} has no {CONFIGMAP_KEY!r} key; is it flannel's "
                               "config? (keys: " + ", ".join(sorted(data)) + ")")
        text = data[CONFIGMAP_KEY]
        _ObjectText(text, self.where)  # refuse invalid JSON now, with the object's name
        metadata = configmap.metadata
        annotations = (metadata.annotations if metadata is not None else None) or {}
        record = None
        if OWNED_ANNOTATION in annotations:
            record = _parse_record(annotations[OWNED_ANNOTATION], self.where)
        version = metadata.resource_version if metadata is not None else None
        return _Doc(text=text, record=record, token=version)

    def write(self, doc: _Doc, text: str, record: Record | None) -> int:
        """One merge patch, conditional on the resourceVersion read."""
        metadata: dict[str, Any] = {}
        if doc.token is not None:
            metadata["resourceVersion"] = doc.token
        body: dict[str, Any] = {"metadata": metadata}
        if text != doc.text:
            body["data"] = {CONFIGMAP_KEY: text}
        if record != doc.record:
            metadata["annotations"] = {
                OWNED_ANNOTATION: None if record is None else _record_text(record)
            }
        kube_call(
            f"patch {self.where}",
            lambda: self.core.patch_namespaced_config_map(
                self.name, self.namespace, body, field_manager="k3snet",
                _content_type="application/merge-patch+json", _request_timeout=self.timeout),
            timeout=self.timeout,
            error=_ApplyKubeError,
        )
        return 1


class _ApplyKubeError(KubeApiError, ApplyError):
    """A failed write: an ApplyError (nothing was changed) that keeps the HTTP status."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        ApplyError.__init__(self, f"{message}; nothing was changed")
        self.status = status


# ---------------------------------------------------------------- the backend


def _content(doc: _Doc) -> dict[str, Any]:
    values = dict(_ObjectText(doc.text, "").values)
    values.pop(FLANNEL_OWNED_MARKER, None)
    return values


def _owned(target: str, doc: _Doc) -> FlannelConfig | None:
    if doc.record is None:
        return None
    values = _content(doc)
    return FlannelConfig.from_members(target, {k: values[k] for k in doc.record if k in values})


def _foreign(target: str, doc: _Doc) -> FlannelConfig:
    """The config as it would be without k3snet: owned keys back at their previous values."""
    values = _content(doc)
    record = doc.record or {}
    underlying = {k: v for k, v in values.items() if k not in record}
    underlying.update({k: json.loads(p) for k, p in record.items() if p is not None})
    return FlannelConfig.from_members(target, underlying)


class FlannelBackend(BackendBase):
    """Flannel's ``net-conf.json``, in a file (``path``) or a ConfigMap (``configmap``).

    Give at most one of ``path`` and ``configmap``; with neither, the ConfigMap of
    upstream flannel (:data:`DEFAULT_CONFIGMAP`). For a ConfigMap, ``api_client``
    is a ``kubernetes.client.ApiClient`` (else one is built from ``kubeconfig`` /
    ``context``, or the in-cluster service account); ``timeout`` bounds each request.

    A missing file or ConfigMap is observed as empty; applying to it is refused
    (k3snet edits flannel's config, it does not invent one).
    """

    name = "flannel"

    def __init__(
        self,
        *,
        path: str | Path | None = None,
        configmap: tuple[str, str] | None = None,
        api_client: Any = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__()
        if path is not None and configmap is not None:
            raise ModelError("flannel backend: give a file path or a ConfigMap, not both")
        self._client: Any = None
        self._owns_client = False
        self._store: _FileStore | _ConfigMapStore
        if path is not None:
            self._store = _FileStore(Path(path).absolute())
        else:
            namespace, cm_name = configmap if configmap is not None else DEFAULT_CONFIGMAP
            configmap_target(namespace, cm_name)  # validate the names before connecting
            self._client, self._owns_client = make_api_client(
                api_client, kubeconfig=kubeconfig, context=context)
            self._store = _ConfigMapStore(self._client, namespace, cm_name, timeout)

    @property
    def capabilities(self) -> frozenset[str]:
        """``{"flannel"}``."""
        return frozenset({"flannel"})

    @property
    def target(self) -> str:
        """The target string of the managed config (``file:...`` or ``configmap:ns/name``)."""
        return self._store.target

    def observe(self) -> State:
        """The keys k3snet owns (owned) and the config as it would be without them (foreign)."""
        doc = self._store.read()
        if doc is None:
            return State()
        owned = _owned(self.target, doc)
        return State(owned=[] if owned is None else [owned],
                     foreign=[_foreign(self.target, doc)])

    def check(self, plan: Plan) -> tuple[str, ...]:
        """Problems applying ``plan`` would hit; nothing is written."""
        try:
            ensure_capable(self, plan)
            if plan.changes:
                self._edit(self._read_for_apply(), plan)
        except (PlanError, BackendError) as exc:
            return (str(exc),)
        return ()

    def apply(self, plan: Plan) -> ApplyResult:
        """Apply every change in one atomic write of the changed keys, or nothing."""
        ensure_capable(self, plan)
        if not plan.changes:
            return ApplyResult(self.name, (), operations=0)
        doc = self._read_for_apply()
        text, record = self._edit(doc, plan)
        fail_at = self.faults.take(plan)
        if fail_at is not None:  # the write below is one step: refused, nothing is written
            raise ApplyError(f"{self._store.where}: injected failure (fault hook), nothing was "
                             "changed", failed=plan.changes[fail_at])
        operations = 1
        if text != doc.text or record != doc.record:
            operations += self._store.write(doc, text, record)
        return ApplyResult(self.name, plan.changes, operations=operations)

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

    def _edit(self, doc: _Doc, plan: Plan) -> tuple[str, Record | None]:
        """The new text and record after every change (PlanError if one does not fit)."""
        where = self._store.where
        owned = _owned(self.target, doc)
        text, record = doc.text, None if doc.record is None else dict(doc.record)
        for change in plan.changes:
            subject = change.subject
            if not isinstance(subject, FlannelConfig):
                raise PlanError(f"flannel backend: cannot apply {change}: not a flannel config")
            if subject.target != self.target:
                raise PlanError(f"flannel backend manages {self.target}; the plan changes "
                                f"{subject.target}")
            if change.action == "add" and owned is not None:
                raise PlanError(f"cannot add {subject}: k3snet already owns keys of "
                                f"{self.target} ({owned}); observe and plan again")
            if change.action != "add" and (owned is None or owned != change.before):
                found = "no keys owned by k3snet" if owned is None else str(owned)
                raise PlanError(f"cannot {change.action} {change.before}: k3snet does not own "
                                f"it, found {found}; k3snet never changes keys it did not set")
            text, record = _apply_change(text, record, change, where)
            owned = change.after if isinstance(change.after, FlannelConfig) else None
        return text, record

    def close(self) -> None:
        """Release the API client if this backend built it (idempotent)."""
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None
        super().close()


def _apply_change(
    text: str, record: Record | None, change: Change, where: str
) -> tuple[str, Record | None]:
    if change.action == "delete":
        for key, previous in (record or {}).items():
            text = _restore(text, key, previous, where)
        return text, None
    after = change.after
    assert isinstance(after, FlannelConfig)  # checked by the caller
    wanted = after.members()
    record = {} if record is None else dict(record)
    for key in [k for k in record if k not in wanted]:  # keys the new config gives back
        text = _restore(text, key, record.pop(key), where)
    for key, value in wanted.items():
        if key not in record:
            record[key] = _ObjectText(text, where).raw(key)
        text = _set_value(text, key, value, where)
    return text, record
