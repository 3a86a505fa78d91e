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

``Backend`` is merged key by key: setting its ``Type`` and ``MTU`` records and
changes only those two members of the object that is there (``VNI``, ``Port``
and other options stay, byte for byte); the record holds them as
``{"Backend": {"Type": ..., "MTU": ...}}``. A ``Backend`` k3snet created, or one
recorded whole by an older k3snet, is owned whole.

**Read as flannel reads it.** Flannel decodes ``net-conf.json`` with Go's
``encoding/json``: a key matches a field case-insensitively (``"network"`` is
``Network``; with two spellings the later one wins). k3snet models a mis-cased
key under flannel's name, refuses a config with two spellings of one key, and
refuses to edit a key it would have to respell (rename it first). Values are
validated on read (types, families, host bits): a config flannel would refuse
or read differently is an error, never "no changes".

**Disruptive changes.** Changing ``Network``, ``IPv6Network``, ``SubnetLen``,
``IPv6SubnetLen``, ``EnableIPv4``, ``EnableIPv6`` or the backend ``Type``
re-addresses pods or rebuilds the network between nodes when flannel restarts:
:meth:`FlannelBackend.disruptive` says why, and ``check``/``apply`` refuse such a
plan unless the backend was built with ``allow_disruptive=True``.

**K3s' own file.** K3s writes ``<data-dir>/agent/etc/flannel/net-conf.json``
(``/var/lib/rancher/k3s/...``) again on every start unless ``--flannel-conf``
names another file, so edits there are refused, with that way out.

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
import ipaddress
import json
import os
import stat
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from k3snet.backends.base import ApplyResult
from k3snet.backends.kit import BackendBase, Compensation, fit_problems, translate_errors
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
    "ALLOW_DISRUPTIVE_HINT",
    "CONFIGMAP_KEY",
    "DEFAULT_CONFIGMAP",
    "DISRUPTIVE_KEYS",
    "FLANNEL_FIELDS",
    "K3S_GENERATED_SUFFIX",
    "OWNED_ANNOTATION",
    "FlannelBackend",
    "effective_config",
    "flannel_values",
    "is_k3s_generated",
]

DEFAULT_CONFIGMAP: tuple[str, str] = ("kube-flannel", "kube-flannel-cfg")
"""Upstream flannel's ConfigMap (namespace, name)."""

CONFIGMAP_KEY = "net-conf.json"
OWNED_ANNOTATION = "k3snet.io/flannel-owned"
"""The ConfigMap annotation holding k3snet's ownership record (JSON: key -> previous text)."""

ALLOW_DISRUPTIVE_HINT = ("cni.allowDisruptive: true in the spec, --allow-disruptive on the CLI, "
                         "or allow_disruptive=True in the library")
"""The three ways to allow a disruptive change, named in every refusal."""

K3S_GENERATED_SUFFIX: tuple[str, ...] = ("agent", "etc", "flannel", "net-conf.json")
"""The end of the path of the net-conf.json K3s writes on every start (under its data dir)."""

FLANNEL_FIELDS: tuple[str, ...] = (
    "EnableIPv4", "EnableIPv6", "EnableNFTables", "Network", "IPv6Network", "Networks",
    "IPv6Networks", "SubnetMin", "SubnetMax", "IPv6SubnetMin", "IPv6SubnetMax", "SubnetLen",
    "IPv6SubnetLen", "Backend",
)
"""The fields of flannel's ``subnet.Config`` (the keys it reads from net-conf.json)."""

DISRUPTIVE_KEYS: Mapping[str, str] = {
    "Network": "re-addresses every pod (flannel hands out pod subnets from it)",
    "IPv6Network": "re-addresses every pod (flannel hands out pod subnets from it)",
    "SubnetLen": "changes every node's pod subnet, so every pod is re-addressed",
    "IPv6SubnetLen": "changes every node's pod subnet, so every pod is re-addressed",
    "EnableIPv4": "adds or removes the pods' IPv4 network on every node",
    "EnableIPv6": "adds or removes the pods' IPv6 network on every node",
    "Backend.Type": ("rebuilds the network between nodes: pods on nodes that restarted flannel "
                     "cannot reach pods on nodes that did not"),
}
"""The keys whose change is disruptive, with why (``Backend.Type``: the backend's type)."""

_WS = " \t\n\r"

# key -> the exact JSON text the key had before k3snet set it (None: it was absent); for
# "Backend" merged key by key, a mapping of its members to their previous texts.
Previous = str | None
Record = dict[str, Previous | dict[str, Previous]]


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


def _fold(key: str) -> str:
    """A key as Go's ``encoding/json`` compares it to a field name (case-insensitively).

    Go folds ASCII letters and the two non-ASCII letters whose simple folding
    reaches ASCII: U+017F (long s) is ``s`` and U+212A (Kelvin sign) is ``k``
    (``str.lower`` already maps the Kelvin sign).
    """
    return key.lower().replace("\u017f", "s")


def _respelled(doc: _ObjectText, key: str) -> str | None:
    """A member of ``doc`` that flannel reads as ``key`` but is spelled otherwise."""
    folded = _fold(key)
    return next((m.key for m in doc.members if m.key != key and _fold(m.key) == folded), None)


def _set_value(text: str, key: str, value: Any, where: str) -> str:
    """Set ``key`` to ``value`` unless it already holds an equal value (bytes kept)."""
    doc = _ObjectText(text, where)
    other = _respelled(doc, key)
    if other is not None:
        raise PlanError(f"{where}: cannot set {key}: net-conf.json spells it {other!r}, which "
                        f"flannel reads as {key} (Go's JSON decoding matches keys "
                        f"case-insensitively); rename it to {key!r} and plan again")
    if key in doc.values and canonical_json(doc.values[key]) == canonical_json(value):
        return text
    return doc.set(key, _dump(value))


def _restore(text: str, key: str, previous: Previous | dict[str, Previous], where: str) -> str:
    """Put back the exact text a key had (or remove it if it was absent).

    ``previous`` as a mapping: the key is an object k3snet merged into, and each
    of its members named there is put back the same way.
    """
    doc = _ObjectText(text, where)
    if isinstance(previous, dict):
        inner = doc.raw(key)
        if inner is None or not isinstance(doc.values[key], dict):
            return text  # the object is gone or was replaced: nothing of k3snet's is left in it
        restored = inner
        for member, was in previous.items():
            restored = _restore(restored, member, was, where)
        return text if restored == inner else doc.set(key, restored)
    if previous is None:
        return doc.remove(key)
    if doc.raw(key) == previous:
        return text
    return doc.set(key, previous)


def _previous_text(value: Any, what: str, where: str) -> Previous:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BackendError(f"{where}: ownership record entry {what!r} is not a JSON text")
    try:
        json.loads(value)
    except json.JSONDecodeError as exc:
        raise BackendError(f"{where}: ownership record entry {what!r} holds invalid "
                           f"JSON ({exc.msg})") from exc
    return value


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
        if key == "Backend" and isinstance(previous, dict):
            record[key] = {member: _previous_text(was, f"{key}.{member}", where)
                           for member, was in previous.items()}
        else:
            record[key] = _previous_text(previous, key, where)
    return record


# ---------------------------------------------------------------- reading as flannel reads


def _cidr(version: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        expected = f"an IPv{version} CIDR string"
        if not isinstance(value, str) or "/" not in value:
            return expected
        try:
            net = ipaddress.ip_network(value, strict=False)
        except ValueError:
            return expected
        if net.version != version:
            return expected
        if ipaddress.ip_interface(value).ip != net.network_address:
            # Go's net.ParseCIDR masks them off without a word.
            return f"a network without host bits (flannel would silently use {net})"
        return None
    return check


def _address(version: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        try:
            ok = isinstance(value, str) and ipaddress.ip_address(value).version == version
        except ValueError:
            ok = False
        return None if ok else f"an IPv{version} address string"
    return check


def _list_of(item: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, list):
            return "a list of CIDR strings"
        found = next((p for p in map(item, value) if p is not None), None)
        return None if found is None else f"a list, each item {found}"
    return check


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def _prefix_length(limit: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit
        return None if ok else f"an integer 0..{limit}"
    return check


def _backend(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "an object with a Type"
    kind = value.get("Type")
    if kind is not None and not isinstance(kind, str):
        return "an object whose Type is a string"
    return None


_CHECKS: Mapping[str, Callable[[Any], str | None]] = {
    "EnableIPv4": _boolean, "EnableIPv6": _boolean, "EnableNFTables": _boolean,
    "Network": _cidr(4), "IPv6Network": _cidr(6),
    "Networks": _list_of(_cidr(4)), "IPv6Networks": _list_of(_cidr(6)),
    "SubnetMin": _address(4), "SubnetMax": _address(4),
    "IPv6SubnetMin": _address(6), "IPv6SubnetMax": _address(6),
    "SubnetLen": _prefix_length(32), "IPv6SubnetLen": _prefix_length(128),
    "Backend": _backend,
}
_FIELD_BY_FOLD = {_fold(name): name for name in FLANNEL_FIELDS}


def _folded(values: Mapping[str, Any], names: Mapping[str, str], where: str, inside: str
            ) -> tuple[dict[str, Any], list[str]]:
    """``values`` with each key flannel matches case-insensitively under its field name."""
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    problems: list[str] = []
    for key, value in values.items():
        name = names.get(_fold(key), key)
        if name in spelled:
            problems.append(f"{inside + spelled[name]!r} and {inside + key!r} are both flannel's "
                            f"{name} (Go's JSON decoding matches keys case-insensitively and the "
                            "later one wins); keep one")
            continue
        spelled[name] = key
        out[name] = value
    return out, problems


def flannel_values(values: Mapping[str, Any], where: str = "net-conf.json") -> dict[str, Any]:
    """The top-level keys of a parsed net-conf.json as flannel reads them, validated.

    Keys flannel matches case-insensitively are renamed to its field names
    (``network`` is ``Network``, ``Backend.type`` is ``Backend.Type``); unknown
    keys are kept as they are (flannel ignores them). Raises
    :class:`~k3snet.errors.BackendError` naming every value flannel would refuse or
    read differently (a wrong type or family, host bits, two spellings of one key).

    >>> flannel_values({"network": "10.244.0.0/16", "Backend": {"type": "vxlan", "VNI": 1}})
    {'Network': '10.244.0.0/16', 'Backend': {'Type': 'vxlan', 'VNI': 1}}
    """
    out, problems = _folded(values, _FIELD_BY_FOLD, where, "")
    for key, check in _CHECKS.items():
        if key in out:
            expected = check(out[key])
            if expected is not None:
                problems.append(f"{key} must be {expected}, got {_dump(out[key])}")
    backend = out.get("Backend")
    if isinstance(backend, dict):
        inner, more = _folded(backend, {"type": "Type"}, where, "Backend.")
        problems += more
        if "Type" in inner and not isinstance(inner["Type"], str):
            problems.append(f"Backend.Type must be a string, got {_dump(inner['Type'])}")
        out["Backend"] = inner
    if problems:
        raise BackendError(f"{where}: flannel would not read net-conf.json as written: "
                           + "; ".join(problems))
    return out


def _effective_value(values: Mapping[str, Any], key: str) -> Any:
    """What flannel uses for ``key`` (its defaults where the key is absent)."""
    if key == "EnableIPv4":
        return values.get(key, True)
    if key == "EnableIPv6":
        return values.get(key, False)
    if key == "Backend.Type":
        backend = values.get("Backend")
        return backend.get("Type", "") if isinstance(backend, dict) else "udp"
    return values.get(key)


def _disruptions(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """Why going from config ``before`` to ``after`` disrupts pods (one line per key)."""
    found = []
    enabled = {4: "EnableIPv4", 6: "EnableIPv6"}
    for key, why in DISRUPTIVE_KEYS.items():
        family = 6 if key.startswith("IPv6") else 4 if key in ("Network", "SubnetLen") else 0
        if family and not (_effective_value(before, enabled[family])
                           and _effective_value(after, enabled[family])):
            continue  # the family is off on one side: its Enable key says it all
        old, new = _effective_value(before, key), _effective_value(after, key)
        if canonical_json(old) != canonical_json(new):
            shown = "unset" if old is None else _dump(old)
            found.append(f"changing flannel's {key} ({shown} -> "
                         f"{'unset' if new is None else _dump(new)}) {why}")
    return found


def is_k3s_generated(path: str | Path) -> bool:
    """``path`` is the net-conf.json K3s writes anew on every start (``K3S_GENERATED_SUFFIX``).

    >>> is_k3s_generated("/var/lib/rancher/k3s/agent/etc/flannel/net-conf.json")
    True
    >>> is_k3s_generated("/etc/rancher/k3s/flannel-net-conf.json")
    False
    """
    parts = Path(path).parts
    return tuple(parts[-len(K3S_GENERATED_SUFFIX):]) == K3S_GENERATED_SUFFIX


def _record_text(record: Record) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False)


# ---------------------------------------------------------------- where the text lives


@attrs.frozen
class _Doc:
    """One read of the target: the text, k3snet's ownership record and a change token.

    ``values`` are the text's keys as flannel reads them (:func:`flannel_values`).
    """

    text: str
    record: Record | None
    token: Any
    values: dict[str, Any]


def _read_doc(text: str, record: Record | None, token: Any, where: str) -> _Doc:
    values = dict(_ObjectText(text, where).values)
    values.pop(FLANNEL_OWNED_MARKER, None)
    return _Doc(text=text, record=record, token=token, values=flannel_values(values, where))


class _FileStore:
    """``net-conf.json`` as a file; the ownership record is its ``k3snet.io/owned`` member."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.target = file_target(str(path))
        self.where = f"flannel config file {path}"

    def read(self) -> _Doc | None:
        with translate_errors(f"read {self.where}"):
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                return None
        try:
            text = data.decode()
        except UnicodeDecodeError as exc:
            raise BackendError(f"{self.where}: not UTF-8 text ({exc.reason})") from exc
        doc = _ObjectText(text, self.where)
        record = None
        if FLANNEL_OWNED_MARKER in doc.values:
            record = _parse_record(doc.values[FLANNEL_OWNED_MARKER], self.where)
            text = doc.remove(FLANNEL_OWNED_MARKER)
        return _read_doc(text, record, data, self.where)

    def write(self, doc: _Doc, text: str, record: Record | None) -> int:
        """Replace the file atomically; returns the number of system round trips."""
        if record is not None:
            text = _ObjectText(text, self.where).set(FLANNEL_OWNED_MARKER, _record_text(record))
        with translate_errors(f"read {self.where} again before writing (nothing was "
                              "changed)", into=ApplyError):
            current = self.path.read_bytes()
        if current != doc.token:
            raise ApplyError(f"{self.where}: changed by someone else while k3snet was applying; "
                             "nothing was written, observe and plan again")
        with translate_errors(f"write {self.where} (the file is unchanged)", into=ApplyError):
            _atomic_write(self.path, text.encode())
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
        metadata = configmap.metadata
        annotations = (metadata.annotations if metadata is not None else None) or {}
        record = None
        if OWNED_ANNOTATION in annotations:
            record = _parse_record(annotations[OWNED_ANNOTATION], self.where)
        version = metadata.resource_version if metadata is not None else None
        return _read_doc(text, record, version, self.where)

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


class FlannelBackend(BackendBase):
    """Flannel's ``net-conf.json``, in a file (``path``) or a ConfigMap (``configmap``).

    Give at most one of ``path`` and ``configmap``; with neither, the ConfigMap of
    upstream flannel (:data:`DEFAULT_CONFIGMAP`). For a ConfigMap, ``api_client``
    is a ``kubernetes.client.ApiClient`` (else one is built from ``kubeconfig`` /
    ``context``, or the in-cluster service account); ``timeout`` bounds each request.
    ``allow_disruptive`` lets ``apply`` make changes :meth:`disruptive` names
    (a new ``Network``, ``SubnetLen``, address family or backend type).

    A missing file or ConfigMap is observed as empty; applying to it is refused
    (k3snet edits flannel's config, it does not invent one), and so is applying
    to the file K3s generates (:func:`is_k3s_generated`).
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
        allow_disruptive: bool = False,
    ) -> None:
        super().__init__()
        if path is not None and configmap is not None:
            raise ModelError("flannel backend: give a file path or a ConfigMap, not both")
        self.allow_disruptive = allow_disruptive
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
        return self._state(doc)

    def _state(self, doc: _Doc) -> State:
        owned = _owned(self.target, doc)
        return State(owned=[] if owned is None else [owned],
                     foreign=[_foreign(self.target, doc)])

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
                self._edit(self._read_for_apply(), plan, refuse_disruptive=True)
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
            operations += self._store.write(doc, text, record)
        return ApplyResult(self.name, plan.changes, operations=operations)

    def _refuse_k3s_generated(self) -> None:
        store = self._store
        if isinstance(store, _FileStore) and (is_k3s_generated(store.path)
                                              or is_k3s_generated(store.path.resolve())):
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
        problems = fit_problems(self, plan, self._state(doc))
        if problems:
            raise PlanError(f"{self.name} backend refuses the plan for {self.target}, nothing "
                            "was changed:\n  " + "\n  ".join(problems))
        text, record = doc.text, _copy_record(doc.record)
        values = doc.values
        reasons: list[str] = []
        for change in plan.changes:
            text, record = _apply_change(text, record, change, where)
            after = flannel_values(_ObjectText(text, where).values, where)
            reasons += _disruptions(values, after)
            values = after
        if reasons and refuse_disruptive and not self.allow_disruptive:
            raise PlanError(f"flannel backend refuses a disruptive change to {self.target}: "
                            f"{'; '.join(reasons)}. Allow it with {ALLOW_DISRUPTIVE_HINT}, "
                            "then restart flannel on every node")
        return text, record, reasons

    def close(self) -> None:
        """Release the API client if this backend built it (idempotent)."""
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None
        super().close()


def _copy_record(record: Record | None) -> Record | None:
    if record is None:
        return None
    return {k: dict(v) if isinstance(v, dict) else v for k, v in record.items()}


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
    record = {} if record is None else record
    for key in [k for k in record if k not in wanted]:  # keys the new config gives back
        text = _restore(text, key, record.pop(key), where)
    for key, value in wanted.items():
        doc = _ObjectText(text, where)
        current = doc.values.get(key)
        merge = (key == "Backend" and isinstance(value, dict) and isinstance(current, dict)
                 and isinstance(record.get(key, {}), dict))
        if merge:
            text, record[key] = _merge_object(doc, key, value, record.get(key), where)
            continue
        if isinstance(record.get(key), dict):
            raise PlanError(f"{where}: {key} is no longer an object; k3snet set members of it "
                            "and cannot give them back; restore it by hand")
        if key not in record:
            record[key] = doc.raw(key)
        text = _set_value(text, key, value, where)
    return text, record


def _merge_object(doc: _ObjectText, key: str, value: dict[str, Any],
                  owned: Any, where: str) -> tuple[str, dict[str, Previous]]:
    """Set the members of object ``key`` that ``value`` names; give back those it no longer does."""
    members: dict[str, Previous] = dict(owned or {})
    raw = doc.raw(key)
    assert raw is not None  # the caller found the key
    inner = raw
    for member in [m for m in members if m not in value]:
        inner = _restore(inner, member, members.pop(member), where)
    for member, wanted in value.items():
        if member not in members:
            members[member] = _ObjectText(inner, where).raw(member)
        inner = _set_value(inner, member, wanted, f"{where} (in {key})")
    return (doc.text if inner == raw else doc.set(key, inner)), members
