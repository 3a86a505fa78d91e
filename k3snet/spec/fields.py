"""The machinery of field tables: a YAML key, the attribute it fills, how it is read,
written and checked, each said once in a :class:`Field`.

A :class:`Section` is the table of one mapping (``cluster``, a destination, ...)
and the attrs class it becomes. From it come: the keys a mapping may hold (an
unknown one is reported with its path), the reading of each value (a problem
is reported with its path, and the class default is used instead), the
writing back (:func:`write_section`), and the checks the values must pass
(:func:`check_section`, run by :func:`~k3snet.spec.validate.validate` on
parsed and programmatic specs alike). Defaults are the attrs classes' own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from k3snet._regex import lazy_pattern
from k3snet.errors import K3snetError, Problem
from k3snet.model.cidr import Network, parse_address, parse_network
from k3snet.spec.validators import Check, quoted_hint, schema_of, with_schema

__all__ = [
    "INVALID",
    "Field",
    "Read",
    "Reader",
    "Section",
    "boolean",
    "check_section",
    "converted",
    "items",
    "join",
    "mapping",
    "nested",
    "nested_list",
    "networks",
    "opt_str",
    "pairs",
    "raw",
    "read_section",
    "string",
    "strs",
    "write_section",
    "yaml_type",
]

T = TypeVar("T")


class _Invalid:
    """The result of reading a value that had a problem (already reported)."""

    def __repr__(self) -> str:
        return "INVALID"


INVALID: Any = _Invalid()
"""Returned by a read function that reported a problem: the class default applies."""


_YAML_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
    (bytes, "binary data"), (Mapping, "a mapping"), (list, "a list"), (tuple, "a list"),
    (set, "a set"),
)
# PyYAML's dates, by name: importing datetime for them cost every cold run (the spec
# cache's included) a millisecond.
_YAML_DATES = {("datetime", "datetime"): "a timestamp", ("datetime", "date"): "a date"}


def yaml_type(value: Any) -> str:
    """What ``value`` is in the words of YAML, for a problem's ``got ...``: ``a string``,
    ``a list``, ``a mapping``, ``null`` (Python's ``str``, ``list``, ``dict`` and
    ``NoneType`` are no words of a spec; ``2001-12-14`` is a date to PyYAML)."""
    if value is None:
        return "null"
    for cls, name in _YAML_TYPES:
        if isinstance(value, cls):
            return name
    kind = type(value)
    return _YAML_DATES.get((kind.__module__, kind.__name__), kind.__name__)


def join(path: str, key: str) -> str:
    """``path.key``, or ``key`` at the top."""
    return f"{path}.{key}" if path else key


class Reader:
    """Collects every problem of one document, each with its path."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        # Text already converted in this document, by converter (see converted()).
        self.conversions: dict[tuple[Callable[[Any], Any], str], Any] = {}
        # The document's index of each item read, by the path of a list that lost some
        # (bad items are left out: the spec's destinations[1] may be the document's [2]).
        self.kept: dict[str, tuple[int, ...]] = {}

    def problem(self, path: str, message: str) -> None:
        """Record one problem."""
        self.problems.append(Problem(path, message))

    def mapping(self, value: Any, path: str, allowed: Sequence[str]) -> Mapping[str, Any]:
        """``value`` as a mapping whose keys are all in ``allowed`` ({} when absent)."""
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problem(path, f"expected a mapping, got {yaml_type(value)}")
            return {}
        for key in value:
            if key not in allowed:
                self.problem(join(path, str(key)), f"unknown key (known: {', '.join(allowed)})")
        return value

    def kept_items(self, path: str, result: Sequence[Any], missing: Any) -> tuple[Any, ...]:
        """The items of the list at ``path`` that were read (not ``missing``), noting the
        document's index of each when some were left out (:meth:`document_path`)."""
        read = tuple([item for item in result if item is not missing])
        if len(read) != len(result):  # rare: no index list for 10k good destinations
            self.kept[path] = tuple(i for i, item in enumerate(result) if item is not missing)
        return read

    def document_path(self, path: str) -> str:
        """A path into what was read (``destinations[1].gateway``) as a path into the
        document, whose lists also held the items left out (``destinations[2].gateway``)."""
        if not self.kept:
            return path
        out = ""
        rest = path
        while (match := _INDEX.search(rest)) is not None:
            prefix = out + rest[:match.start()]
            index = int(match.group(1))
            kept = self.kept.get(prefix)
            if kept is not None and index < len(kept):
                index = kept[index]
            out = f"{prefix}[{index}]"
            rest = rest[match.end():]
        return out + rest

    def convert(self, value: Any, path: str, convert: Callable[[Any], T]) -> T | Any:
        """``convert(value)``, or :data:`INVALID` with the error as the problem."""
        try:
            return convert(value)
        except (K3snetError, ValueError, TypeError) as exc:
            self.problem(path, str(exc) + _mapping_hint(value))
            return INVALID

    def sequence(self, value: Any, path: str) -> Sequence[Any]:
        """``value`` as a list (() when absent or not a list)."""
        if value is None:
            return ()
        if isinstance(value, str) or not isinstance(value, Sequence):
            self.problem(path, f"expected a list, got {yaml_type(value)}")
            return ()
        return value

    def networks(self, value: Any, path: str) -> tuple[Network, ...]:
        """A list of CIDRs; a bad entry is reported (``path[i]``) and left out."""
        listed = self.sequence(value, path)
        try:  # the common case: all good, and no path needed
            return tuple([parse_network(v) for v in listed])
        except (K3snetError, ValueError, TypeError):
            pass
        result = [self.convert(v, f"{path}[{i}]", parse_network) for i, v in enumerate(listed)]
        return self.kept_items(path, result, INVALID)


_INDEX = lazy_pattern(r"\[(\d+)\]")


def _mapping_hint(value: Any) -> str:
    """The hint for an unquoted IPv6 address ending in ``::`` that YAML read as a mapping
    (``- fd00::`` is ``{'fd00:': None}``), else ``""``."""
    if isinstance(value, Mapping) and len(value) == 1:
        ((key, inner),) = value.items()
        if inner is None and isinstance(key, str) and key.endswith(":"):
            return f" (YAML reads an unquoted {key}: as a mapping: quote it, '{key}:')"
    return ""

Read = Callable[[Reader, Any, str], Any]
"""``(reader, value, path) -> model value`` (or :data:`INVALID`); never called with ``None``."""


def _same(value: Any) -> Any:
    return value


@attrs.frozen
class Field:
    """One YAML key of a section: the one place it is spelled.

    ``key`` is dotted for a key of a nested mapping (``backend.type``). ``attr``
    is the attribute it fills (``None``: a key that is only checked, like
    ``apiVersion``; :attr:`write` then gets ``None``). A key left out or
    ``null`` takes the class default, or is reported as ``required``.
    ``example`` is a value differing from the default (docs and tests).
    ``doc`` says what the key means (the JSON Schema's description,
    ``k3snet explain``); ``schema`` overrides the JSON Schema that
    :mod:`k3snet.spec.json_schema` derives from ``read`` and ``checks``.
    """

    key: str
    attr: str | None
    read: Read
    write: Callable[[Any], Any] = _same
    checks: tuple[Check, ...] = ()
    required: str | None = None
    example: Any = None
    omit_none: bool = False
    """Written only when set (``cni.flannel``, ``cni.calico``)."""
    child: Section | None = None
    """The section of a nested object (or of each item, when ``many``)."""
    many: bool = False
    doc: str = ""
    schema: Mapping[str, Any] | None = None
    spread: tuple[str, ...] = ()
    """For a key filling several attributes (``attr`` is then ``None``): ``read``
    returns one value per name, and ``write`` gets them as a tuple."""


Prepare = Callable[[Reader, Mapping[str, Any], str], Mapping[str, Any]]


@attrs.frozen
class Section:
    """The field table of one mapping and the attrs class it becomes.

    ``inputs`` are keys read only by ``prepare`` (which may rewrite the mapping
    first, as ``masquerade.ipMasqAgentConfig`` does); ``input_schemas`` gives
    their JSON Schemas (with a ``description``).
    """

    cls: type[Any]
    fields: tuple[Field, ...]
    inputs: tuple[str, ...] = ()
    prepare: Prepare | None = None
    input_schemas: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    keys: tuple[str, ...] = attrs.field(init=False)
    nested: Mapping[str, tuple[str, ...]] = attrs.field(init=False)
    _checked: tuple[tuple[str, str, tuple[Check, ...]], ...] = attrs.field(init=False, repr=False)
    _children: tuple[tuple[str, str, Section, bool], ...] = attrs.field(init=False, repr=False)
    _reads: tuple[tuple[Field, str, str], ...] = attrs.field(init=False, repr=False)
    # For read_section's fast path (a section of plain keys, none holding an object of
    # another section: a destination): each key's field, and the keys that must be there.
    _by_key: Mapping[str, Field] | None = attrs.field(init=False, repr=False)
    _required: tuple[Field, ...] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        keys: list[str] = []
        nested: dict[str, list[str]] = {}
        for f in self.fields:
            outer, _, inner = f.key.partition(".")
            if outer not in keys:
                keys.append(outer)
            if inner:
                nested.setdefault(outer, []).append(inner)
        object.__setattr__(self, "keys", (*keys, *self.inputs))
        object.__setattr__(self, "_reads", tuple(
            (f, *f.key.partition(".")[::2]) for f in self.fields))
        object.__setattr__(self, "nested", {k: tuple(v) for k, v in nested.items()})
        plain = not nested and all(f.child is None for f in self.fields)
        object.__setattr__(self, "_by_key", {f.key: f for f in self.fields} if plain else None)
        object.__setattr__(self, "_required", tuple(
            f for f in self.fields if f.required is not None))
        # Precomputed so that checking 10k destinations only touches checked fields.
        object.__setattr__(self, "_checked", tuple(
            (f.attr, f.key, f.checks) for f in self.fields if f.checks and f.attr is not None))
        object.__setattr__(self, "_children", tuple(
            (f.attr, f.key, f.child, f.many) for f in self.fields
            if f.child is not None and f.attr is not None))

    def field(self, key: str) -> Field:
        """The field of one (dotted) key."""
        for f in self.fields:
            if f.key == key:
                return f
        raise KeyError(key)


_NO_NESTED: Mapping[str, Mapping[str, Any]] = {}


def read_section(reader: Reader, section: Section, value: Any, path: str) -> Any:
    """Build ``section.cls`` from a mapping; ``None`` when a required key is missing or bad."""
    data = reader.mapping(value, path, section.keys)
    if section.prepare is not None:
        data = section.prepare(reader, data, path)
    by_key = section._by_key
    if by_key is not None and type(data) is dict:
        # The fast path: only the keys given (a destination has 3-5 of its 8). Any
        # problem sends the item down the full path below, which reports every problem
        # in table order.
        had = len(reader.problems)
        built = _read_given(reader, section, by_key, data, path)
        if built is not None and len(reader.problems) == had:
            return built
        del reader.problems[had:]
    return _read_in_table_order(reader, section, data, path)


def _read_in_table_order(reader: Reader, section: Section, data: Mapping[str, Any],
                         path: str) -> Any:
    """``section.cls`` read field by field, every problem reported in table order."""
    inner = {outer: reader.mapping(data.get(outer), join(path, outer), keys)
             for outer, keys in section.nested.items()} if section.nested else _NO_NESTED
    kwargs: dict[str, Any] = {}
    complete = True
    for f, outer, inner_key in section._reads:
        raw = inner[outer].get(inner_key) if inner_key else data.get(outer)
        if raw is None:
            if f.required is not None:
                reader.problem(join(path, f.key), f.required)
                complete = False
            continue
        result = f.read(reader, raw, f"{path}.{f.key}" if path else f.key)
        if result is INVALID:
            complete = complete and f.required is None
        elif f.attr is not None:
            kwargs[f.attr] = result
        elif f.spread:
            kwargs.update(zip(f.spread, result, strict=True))
    if complete:
        return section.cls(**kwargs)
    # The object cannot be built, so validation will not see it: judge what was read
    # now, so that every problem of the item is reported at once.
    for attr, key, checks in section._checked:
        if attr in kwargs:
            for check in checks:
                message = check(kwargs[attr])
                if message is not None:
                    reader.problem(join(path, key), message)
    return None


def _read_given(reader: Reader, section: Section, by_key: Mapping[str, Field],
                data: dict[str, Any], path: str) -> Any:
    """``section.cls`` from the keys of ``data`` alone, or ``None`` (any problem)."""
    for f in section._required:
        if data.get(f.key) is None:
            return None
    kwargs: dict[str, Any] = {}
    for key, raw in data.items():
        given = by_key.get(key)
        if given is None or raw is None:
            continue  # an unknown key (reported by the caller) or the default
        # The item's own path, not the key's: a read uses its path only for a problem,
        # and any problem sends the item down the full path, which spells each key's.
        result = given.read(reader, raw, path)
        if result is INVALID:
            return None
        if given.attr is not None:
            kwargs[given.attr] = result
        elif given.spread:
            kwargs.update(zip(given.spread, result, strict=True))
    return section.cls(**kwargs)


def write_section(section: Section, obj: Any) -> dict[str, Any]:
    """The YAML/JSON form of ``obj``, in table order."""
    out: dict[str, Any] = {}
    for f in section.fields:
        value: Any
        if f.spread:
            value = tuple(getattr(obj, name) for name in f.spread)
        else:
            value = None if f.attr is None else getattr(obj, f.attr)
        if f.omit_none and value is None:
            continue
        outer, dot, rest = f.key.partition(".")
        if dot:
            out.setdefault(outer, {})[rest] = f.write(value)
        else:
            out[f.key] = f.write(value)
    return out


def check_section(section: Section, obj: Any, path: str, problems: list[Problem]) -> None:
    """Run every field check of ``obj`` (and its nested objects), adding problems with paths."""
    for attr, key, checks in section._checked:
        value = getattr(obj, attr)
        for check in checks:
            message = check(value)
            if message is not None:
                problems.append(Problem(join(path, key), message))
    for attr, key, child, many in section._children:
        value = getattr(obj, attr)
        if value is None:
            continue
        fpath = join(path, key)
        if many:
            for i, item in enumerate(value):
                check_section(child, item, f"{fpath}[{i}]", problems)
        else:
            check_section(child, value, fpath, problems)


# ---------------------------------------------------------------- read / write kit

# Blanks around the value are allowed: the parsers take them off, as they are read.
CIDR_SCHEMA: Mapping[str, Any] = {
    "type": "string", "pattern": "^\\s*[0-9A-Fa-f.:]+(/[0-9]{1,3})?\\s*$",
    "description": "a CIDR, such as 192.168.2.0/24 or fd00::/64"}
ADDRESS_SCHEMA: Mapping[str, Any] = {"type": "string", "pattern": "^\\s*[0-9A-Fa-f.:]+\\s*$",
                                     "description": "an IPv4 or IPv6 address"}
# A link-local IPv6 address may name its interface as a zone id (`fe80::1%eth0`), where
# the model takes one (a route's gateway, the connectivity test's target): an interface
# name, never digits alone (an index), `.`, `..` nor `+`, and nothing after it (the model
# refuses white space there). The ADDRESS_SCHEMA the rest take refused `fe80::1%eth0`,
# which docs/spec.md gives: an editor flagged a spec k3snet takes.
ZONED_ADDRESS_SCHEMA: Mapping[str, Any] = {
    "type": "string",
    "pattern": ("^\\s*([0-9A-Fa-f.:]+\\s*|[Ff][Ee][89ABab][0-9A-Fa-f]:[0-9A-Fa-f.:]*"
                "%[A-Za-z0-9_.+\\-][A-Za-z0-9_.@+\\-]{0,14})$"),
    "not": {"type": "string", "anyOf": [{"pattern": "%(\\.\\.?|\\+|[0-9]+)$"},
                                        {"pattern": "%.*\\s$"}]},
    "description": "an IPv4 or IPv6 address (a link-local one may name its interface: "
                   "fe80::1%eth0)"}
with_schema(parse_network, CIDR_SCHEMA)
with_schema(parse_address, ADDRESS_SCHEMA)


def boolean(reader: Reader, value: Any, path: str) -> Any:
    """``true`` or ``false``."""
    if not isinstance(value, bool):
        reader.problem(path, f"expected true or false, got {value!r}"
                       + quoted_hint(value, boolean=True))
        return INVALID
    return value


with_schema(boolean, {"type": "boolean"})


def string(reader: Reader, value: Any, path: str) -> Any:
    """Any string."""
    if not isinstance(value, str):
        reader.problem(path, f"expected a string, got {value!r}")
        return INVALID
    return value


with_schema(string, {"type": "string"})


def raw(reader: Reader, value: Any, path: str) -> Any:
    """The value as given: its field's checks judge it (a range, a choice)."""
    return value


with_schema(raw, {})


def converted(convert: Callable[[Any], Any]) -> Read:
    """A read function applying a model converter (``parse_network`` ...)."""

    def read(reader: Reader, value: Any, path: str) -> Any:
        # A 10k-destination spec names one gateway thousands of times: each text is
        # converted once per document (the results are immutable values; a text that
        # fails is converted again, so each path gets its problem).
        key = (convert, value) if type(value) is str else None
        if key is not None:
            known = reader.conversions.get(key)
            if known is not None:
                return known
        # Reader.convert inlined: this runs for every CIDR of a 10k-destination spec.
        try:
            result = convert(value)
        except (K3snetError, ValueError, TypeError) as exc:
            reader.problem(path, str(exc) + _mapping_hint(value))
            return INVALID
        if key is not None:
            reader.conversions[key] = result
        return result

    return with_schema(read, schema_of(convert) or {})


def networks(reader: Reader, value: Any, path: str) -> Any:
    """A list of CIDRs."""
    return reader.networks(value, path)


with_schema(networks, {"type": "array", "items": CIDR_SCHEMA})


def items(each: Read) -> Read:
    """A list read item by item (``path[i]``); bad items are left out."""

    def read(reader: Reader, value: Any, path: str) -> Any:
        result = [each(reader, v, f"{path}[{i}]")
                  for i, v in enumerate(reader.sequence(value, path))]
        return reader.kept_items(path, result, INVALID)

    return with_schema(read, {"type": "array", "items": schema_of(each) or {}})


def mapping(message: str) -> Read:
    """A mapping of plain keys to values (labels, options), with ``message`` for anything else."""

    def read(reader: Reader, value: Any, path: str) -> Any:
        if not isinstance(value, Mapping):
            reader.problem(path, message)
            return INVALID
        for key in value:
            if not isinstance(key, str):
                # str() of it made `on: web` select the label "True".
                reader.problem(path, f"a key must be text, got {key!r:.80} (YAML reads unquoted "
                                     "yes, no, on, off, true, false and numbers as such: quote "
                                     "the key)")
                return INVALID
        return dict(value)

    return with_schema(read, {"type": "object"})


def strs(values: Iterable[Any]) -> list[str]:
    """Writer: a list of addresses or CIDRs as strings."""
    return [str(v) for v in values]


def opt_str(value: Any) -> str | None:
    """Writer: an optional address as a string."""
    return None if value is None else str(value)


def pairs(value: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Writer: sorted pairs (labels, options) as a mapping."""
    return dict(value)


def nested(key: str, attr: str, child: Section, *, omit_none: bool = False,
           doc: str = "") -> Field:
    """A key holding one object of ``child``'s class."""

    def read(reader: Reader, value: Any, path: str) -> Any:
        result = read_section(reader, child, value, path)
        return INVALID if result is None else result

    def write(value: Any) -> Any:
        return None if value is None else write_section(child, value)

    return Field(key, attr, read, write, child=child, omit_none=omit_none, doc=doc)


def nested_list(key: str, attr: str, child: Section, *, doc: str = "") -> Field:
    """A key holding a list of objects of ``child``'s class (``path[i]``)."""

    def read(reader: Reader, value: Any, path: str) -> Any:
        result = [read_section(reader, child, item, f"{path}[{i}]")
                  for i, item in enumerate(reader.sequence(value, path))]
        return reader.kept_items(path, result, None)

    def write(value: Any) -> Any:
        return [write_section(child, item) for item in value]

    return Field(key, attr, read, write, child=child, many=True, doc=doc)
