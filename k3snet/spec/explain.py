"""``k3snet explain PATH``: one key of the spec, like ``kubectl explain``.

Read from the spec's JSON Schema (:func:`~k3snet.spec.json_schema.spec_json_schema`),
itself generated from the field table, so what it prints is what editors show
and what the table enforces::

    >>> print(explain("masquerade.mode"))  # doctest: +ELLIPSIS +NORMALIZE_WHITESPACE
    KEY:      masquerade.mode
    TYPE:     one of destinations, all, off
    DEFAULT:  destinations
    EXAMPLE:  off
    <BLANKLINE>
    DESCRIPTION:
        Which pod traffic is masqueraded: ...

Paths are dotted keys; a list's items are reached through it
(``destinations.cidr`` or ``destinations[].cidr``). Under ``backends`` the
options each backend declares are explained when the caller passes them
(the spec never loads a backend): ``explain("backends.nftables", backends=...)``.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import json
import os
import pathlib
import re
import textwrap
import types
import typing
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any

from k3snet.errors import UnknownFieldError
from k3snet.spec.json_schema import spec_json_schema

__all__ = ["explain", "spec_paths"]

Declared = Mapping[str, Mapping[str, inspect.Parameter]]
"""Backend name -> the options its constructor declares (``backend_options``)."""

_INDEX = re.compile(r"\[\d*\]$")


@cache
def _schema() -> Mapping[str, Any]:
    return spec_json_schema()


def _object(node: Mapping[str, Any]) -> Mapping[str, Any]:
    """The object schema a key leads into (a list's items)."""
    items = node.get("items")
    return items if isinstance(items, Mapping) and "properties" in items else node


def _walk(node: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for key, child in _object(node).get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        yield path, child
        yield from _walk(child, path)


def spec_paths() -> list[str]:
    """Every key path of the spec (``destinations.cidr``, ``cni.flannel.backend.type`` ...)."""
    return [path for path, _ in _walk(_schema(), "")]


def _parts(path: str) -> list[str]:
    return [_INDEX.sub("", part) for part in path.strip().strip(".").split(".") if part]


def explain(path: str, *, backends: Declared | None = None,
            defaults: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """What key ``path`` of the spec is: type, default, allowed values, meaning, sub-keys.

    ``backends``: the options each backend declares (name -> parameters,
    :func:`k3snet.backends.registry.backend_options`); ``defaults``: what each does with
    an option left out whose parameter default is ``None``, in words (name -> option ->
    text, :func:`k3snet.backends.registry.option_defaults`), shown instead of ``null``.

    Raises :class:`~k3snet.errors.UnknownFieldError` (with the closest paths as
    ``suggestions``) for a key the spec does not have.
    """
    parts = _parts(path)
    node: Mapping[str, Any] = _schema()
    for i, part in enumerate(parts):
        if parts[:i] == ["backends"] and backends is not None:
            return _explain_backend(parts[i:], backends, defaults or {})
        properties = _object(node).get("properties", {})
        if part not in properties:
            raise _unknown(".".join(parts), backends)
        node = properties[part]
    text = _render(".".join(parts) or "(the spec)", node)
    if parts == ["backends"] and backends is not None:
        # A column as wide as the longest name (a third-party one may be longer).
        width = max((len(name) for name in backends), default=0) + 1
        text += "\n\nBACKENDS (their options):\n" + "\n".join(
            f"    {name:<{max(width, 10)}} {', '.join(options) or '(none)'}"
            for name, options in sorted(backends.items()))
    return text


def _unknown(path: str, backends: Declared | None) -> UnknownFieldError:
    known = spec_paths() + [f"backends.{name}" for name in backends or ()]
    close = difflib.get_close_matches(path, known, n=3, cutoff=0.5)
    if not close:  # a typo of the last key only: match on it
        last = path.rpartition(".")[2]
        close = [p for p in known if difflib.get_close_matches(last, [p.rpartition(".")[2]],
                                                               cutoff=0.7)][:3]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return UnknownFieldError(f"no key {path!r} in the spec{hint}", close)


def _explain_backend(parts: list[str], backends: Declared,
                     defaults: Mapping[str, Mapping[str, str]]) -> str:
    name, *rest = parts
    if name not in backends:
        raise _unknown(".".join(["backends", *parts]), backends)
    options = backends[name]
    said = defaults.get(name, {})
    if not rest:
        meaning = (f"The options of backend {name!r}: its constructor's keyword options. "
                   "--netns, the agent's environment and --backend-opt override them.")
        lines = [f"KEY:      backends.{name}", "TYPE:     mapping of option to value", "",
                 "DESCRIPTION:", textwrap.fill(meaning, 88, initial_indent="    ",
                                               subsequent_indent="    "), "", "FIELDS:"]
        # A required option says so, as the spec's own required keys do.
        lines += [f"    {option:<18} <{_annotation(p)}>"
                  f"{_param_default(p, ' default ', said.get(option)) or '  required'}"
                  for option, p in options.items()]
        return "\n".join(lines)
    if len(rest) > 1 or rest[0] not in options:
        close = difflib.get_close_matches(rest[0], list(options), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownFieldError(f"backend {name!r} has no option {'.'.join(rest)!r}{hint}"
                                f" (known: {', '.join(options)})",
                                [f"backends.{name}.{c}" for c in close])
    p = options[rest[0]]
    lines = [f"KEY:      backends.{name}.{rest[0]}", f"TYPE:     {_annotation(p)}"]
    default = _param_default(p, "", said.get(rest[0]))
    lines.append(f"DEFAULT:  {default}" if default else "REQUIRED: yes")
    return "\n".join(lines)


def _annotation(p: inspect.Parameter) -> str:
    if p.annotation is inspect.Parameter.empty:
        return "any"
    return _type_text(p.annotation)


# A constructor's annotation in a spec's words: a YAML document holds strings, numbers,
# booleans, lists and mappings, and ``str``, ``bool`` or ``Iterable`` are Python's.
_YAML_WORDS: Mapping[Any, str] = {
    bool: "boolean", int: "integer", float: "number", str: "string", dict: "mapping",
    collections.abc.Mapping: "mapping", tuple: "list", list: "list", set: "list",
    frozenset: "list", collections.abc.Set: "list", collections.abc.Sequence: "list",
    collections.abc.Collection: "list", collections.abc.Iterable: "list",
    os.PathLike: "absolute path", type(None): "null", typing.Any: "any",
}


def _type_text(hint: Any) -> str:
    """A type as ``explain`` says it, in a spec's words: ``one of inet, split`` for a
    ``Literal``, ``string or null`` for ``str | None``, ``absolute path`` for
    ``str | Path``; a class no YAML value is (a client, a callable) as ``Python object
    (NAME)``: only a library caller gives one. The text of an unresolved name as is."""
    if isinstance(hint, str):  # an annotation left unresolved: its words, as far as known
        return _union([_TEXT_WORDS.get(part.strip(), part.strip()) for part in hint.split("|")])
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(str(v) for v in typing.get_args(hint))
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return _union([_type_text(arg) for arg in typing.get_args(hint)])
    cls = typing.get_origin(hint) or hint
    if cls in _YAML_WORDS:
        return _YAML_WORDS[cls]
    if isinstance(cls, type) and issubclass(cls, pathlib.PurePath):
        return "absolute path"
    name = getattr(cls, "__name__", None) or str(cls)
    return f"Python object ({name})"


_TEXT_WORDS = {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
               "None": "null", "Path": "absolute path", "Any": "any"}


def _union(words: list[str]) -> str:
    """Alternatives, once each; ``str | Path`` is a path given as text."""
    unique = list(dict.fromkeys(words))
    if "absolute path" in unique and "string" in unique:
        unique.remove("string")
    return " or ".join(unique)


def _param_default(p: inspect.Parameter, prefix: str, said: str | None = None) -> str:
    """An option's default as a spec writes it, as a key's (``inet``, ``null``, ``10.0``;
    Python's ``'inet'`` and ``None`` are no YAML a spec's ``backends:`` takes); ``said``:
    what the backend does instead of a ``null`` default (its ``option_defaults``)."""
    if p.default is inspect.Parameter.empty:
        return ""
    value = p.default
    if value is None and said:
        return f"{prefix}{said}"
    text = value if isinstance(value, str) and value.strip() else json.dumps(value, default=str)
    return f"{prefix}{text}"


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _type(node: Mapping[str, Any]) -> str:
    """A short human name of a schema's type."""
    if "const" in node:
        return f"the string {node['const']}"
    if "enum" in node:
        return "one of " + ", ".join(_value(v) for v in node["enum"] if v is not None)
    if "oneOf" in node:
        return " or ".join(_type(n) for n in node["oneOf"] if n.get("type") != "null")
    return _kind(node)


def _kind(node: Mapping[str, Any]) -> str:
    """The name of a schema's ``type`` (a list, a mapping, a range)."""
    kinds = node.get("type", "any")
    kinds = [k for k in ([kinds] if isinstance(kinds, str) else kinds) if k != "null"] or ["any"]
    if len(kinds) > 1 and "integer" in kinds and ("minimum" in node or "anyOf" in node):
        # An integer's range said with it (blockSize: an integer, or one per family).
        return ", or ".join(_kind({**node, "type": kind}) for kind in kinds)
    kind = "/".join(kinds)
    if kind == "array":
        items = node.get("items", {})
        inner = "object" if "properties" in items else _type(items)
        return f"list of {inner}"
    if kind == "object" and "properties" not in node:
        values = node.get("additionalProperties")
        return (f"mapping of name to {_type(values)}" if isinstance(values, Mapping)
                else "mapping")
    if kind == "integer" and ("minimum" in node or "anyOf" in node):
        ranges = [node, *node.get("anyOf", ())]
        spans = [f"{r['minimum']}..{r.get('maximum', '')}" for r in ranges if "minimum" in r]
        avoid = node.get("not", {}).get("enum", ())
        return f"integer {' or '.join(spans)}" + "".join(f", not {v}" for v in avoid)
    return kind


def _render(path: str, node: Mapping[str, Any]) -> str:
    kind = _type(node)
    if isinstance(node.get("items"), Mapping) and "description" in node["items"]:
        kind += f" ({node['items']['description']})"
    lines = [f"KEY:      {path}", f"TYPE:     {kind}"]
    if _required(path):
        lines.append("REQUIRED: yes")
    if "default" in node:
        lines.append(f"DEFAULT:  {_value(node['default'])}")
    for example in node.get("examples", ())[:1]:
        lines.append(f"EXAMPLE:  {_value(example)}")
    if node.get("description"):
        lines += ["", "DESCRIPTION:",
                  textwrap.fill(node["description"], 88, initial_indent="    ",
                                subsequent_indent="    ")]
    fields = _object(node).get("properties")
    if fields:
        required = set(_object(node).get("required", ()))
        width = max(map(len, fields)) + 2
        lines += ["", "FIELDS:"]
        for key, child in fields.items():
            mark = "  required" if key in required else ""
            lines.append(f"    {key:<{width}}<{_type(child)}>{mark}")
    return "\n".join(lines)


def _required(path: str) -> bool:
    *parents, last = path.split(".")
    node: Mapping[str, Any] = _schema()
    for part in parents:
        node = _object(node).get("properties", {}).get(part, {})
    return last in _object(node).get("required", ())
