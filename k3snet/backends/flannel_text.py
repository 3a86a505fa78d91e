"""flannel's net-conf.json as text: byte-minimal edits, and k3snet's ownership record.

:class:`ObjectText` finds the spans of an object's members, so a value is
rewritten, inserted or removed without touching any other byte (unknown keys,
spacing, key order). :func:`apply_change` edits a text by one planned change
and keeps the record of what each key held before k3snet set it: its exact
text, ``None`` (absent), or for ``Backend``, merged key by key, the same per member.
Texts are read as flannel's Go reads them (:func:`k3snet._gojson.load_json`: no
``NaN``, nesting bounded without recursion).
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from k3snet._gojson import JsonTextError, fold, load_json
from k3snet.errors import BackendError, PlanError
from k3snet.model.cni import FlannelConfig, canonical_json, flannel_backend_type
from k3snet.planner import Change

__all__ = [
    "ObjectText",
    "Previous",
    "Record",
    "apply_change",
    "copy_record",
    "parse_record",
    "record_text",
]

_WS = " \t\n\r"

# key -> the exact JSON text the key had before k3snet set it (None: it was absent); for
# "Backend" merged key by key, a mapping of its members to their previous texts.
Previous = str | None
Record = dict[str, Previous | dict[str, Previous]]


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


class ObjectText:
    """A JSON object's text with the spans of its top-level members, for surgical edits."""

    def __init__(self, text: str, where: str) -> None:
        if text.startswith("\ufeff"):  # Python's own message advises utf-8-sig
            raise BackendError(f"{where}: net-conf.json starts with a byte order mark "
                               "(U+FEFF), and flannel refuses it too (Go's JSON reader: "
                               "\"invalid character 'ï' looking for beginning of value\"); "
                               "remove it")
        try:
            value = load_json(text)  # as flannel's Go reads it; nesting bounded
        except JsonTextError as exc:
            raise BackendError(f"{where}: net-conf.json is not valid JSON: {exc}") from None
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

    def raw_texts(self) -> dict[str, str]:
        """The exact text of every member's value, by key."""
        return {m.key: self.text[m.value_start:m.value_end] for m in self.members}

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


def _respelled(doc: ObjectText, key: str) -> str | None:
    """A member of ``doc`` that flannel reads as ``key`` but is spelled otherwise."""
    folded = fold(key)
    return next((m.key for m in doc.members if m.key != key and fold(m.key) == folded), None)


def _set_value(text: str, key: str, value: Any, where: str) -> str:
    """Set ``key`` to ``value`` unless it already holds an equal value (bytes kept)."""
    doc = ObjectText(text, where)
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
    doc = ObjectText(text, where)
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
        load_json(value)
    except JsonTextError as exc:
        raise BackendError(f"{where}: ownership record entry {what!r} holds invalid "
                           f"JSON ({exc})") from None
    return value


def parse_record(raw: Any, where: str) -> Record:
    """Validate an ownership record (a JSON object: key -> previous JSON text or null)."""
    data = raw
    if isinstance(raw, str):
        try:
            data = load_json(raw)
        except JsonTextError as exc:
            raise BackendError(f"{where}: k3snet's ownership record is not valid JSON "
                               f"({exc}); restore it or remove it by hand") from None
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


def record_text(record: Record) -> str:
    """The record as stored: JSON with sorted keys."""
    return json.dumps(record, sort_keys=True, ensure_ascii=False)


def copy_record(record: Record | None) -> Record | None:
    """A copy that :func:`apply_change` may change (``Backend`` members copied too)."""
    if record is None:
        return None
    return {k: dict(v) if isinstance(v, dict) else v for k, v in record.items()}


def apply_change(
    text: str, record: Record | None, change: Change, where: str
) -> tuple[str, Record | None]:
    """The text and record after ``change`` (``delete``: every owned key given back).

    Keys the new config no longer sets are given back first; then each key it
    sets is recorded (its text before k3snet, once) and set. ``Backend`` is
    merged member by member into an object already there, unless k3snet owns it whole.
    """
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
        doc = ObjectText(text, where)
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


def _merge_object(doc: ObjectText, key: str, value: dict[str, Any],
                  owned: Any, where: str) -> tuple[str, dict[str, Previous]]:
    """Set the members of object ``key`` that ``value`` names; give back those it no longer does."""
    members: dict[str, Previous] = dict(owned or {})
    raw = doc.raw(key)
    assert raw is not None  # the caller found the key
    inner = raw
    for member in [m for m in members if m not in value]:
        inner = _restore(inner, member, members.pop(member), where)
    for member, wanted in value.items():
        found = ObjectText(inner, where)
        if member not in members:
            members[member] = found.raw(member)
        current = found.values.get(member)
        if (member == "Type" and isinstance(current, str) and isinstance(wanted, str)
                and flannel_backend_type(current) == flannel_backend_type(wanted)):
            continue  # flannel runs the same backend ("VXLAN" is vxlan): keep the bytes
        inner = _set_value(inner, member, wanted, f"{where} (in {key})")
    return (doc.text if inner == raw else doc.set(key, inner)), members
