"""The spec's JSON Schema, generated from its field table (:mod:`k3snet.spec.schema`).

Nothing here restates a key: types come from each field's read function and
checks (:func:`~k3snet.spec.validators.schema_of`), enums and ranges from the
checks, defaults from the attrs classes (written back by the table), meanings
from each :class:`~k3snet.spec.fields.Field`'s ``doc``. A field the generator
knows nothing about is left open (``{}``) rather than guessed.

The schema checks the shape of a spec (keys, types, enums, ranges) for editors
(``# yaml-language-server: $schema=...``) and CI; ``k3snet validate`` checks the
rest (host bits, overlaps, a gateway per family). It is shipped as
``k3snet/schemas/spec.schema.json`` (``k3snet explain --schema`` prints it);
regenerate it with ``make spec-schema`` after changing the table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from k3snet.spec.fields import Field, Section
from k3snet.spec.model import API_VERSION, KIND
from k3snet.spec.schema import SPEC
from k3snet.spec.validators import schema_of

__all__ = ["SCHEMA_ID", "dumps", "field_schema", "section_schema", "spec_json_schema"]

SCHEMA_ID = "https://k3snet.invalid/schemas/spec.schema.json"

# Draft 7: the draft yaml-language-server (VS Code, Neovim, Helix) supports fully.
_DRAFT = "http://json-schema.org/draft-07/schema#"
_TOP_REQUIRED = ("apiVersion", "kind")  # a spec *document* needs them (k3snet.spec.load)


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema of a spec document, as a dict (what the shipped file holds)."""
    schema: dict[str, Any] = {
        "$schema": _DRAFT,
        "$id": SCHEMA_ID,
        "title": f"k3snet {KIND}",
        "description": (f"A k3snet spec ({API_VERSION}): what pod egress on a K3s node needs. "
                        "Generated from the field table (k3snet.spec.schema); `k3snet explain "
                        "PATH` prints the same."),
    }
    schema.update(section_schema(SPEC))
    schema["required"] = [*_TOP_REQUIRED, *schema.get("required", ())]
    return schema


def section_schema(section: Section) -> dict[str, Any]:
    """The object schema of one section: its keys, no others."""
    properties: dict[str, Any] = {}
    for f in section.fields:
        outer, dot, inner = f.key.partition(".")
        if dot:
            group = properties.setdefault(outer, {
                "type": ["object", "null"], "properties": {}, "additionalProperties": False})
            group["properties"][inner] = field_schema(section, f)
        else:
            properties[f.key] = field_schema(section, f)
    for key in section.inputs:
        properties[key] = dict(section.input_schemas.get(key, {}))
    out: dict[str, Any] = {"type": "object", "properties": properties,
                           "additionalProperties": False}
    required = [f.key for f in section.fields if f.required is not None and "." not in f.key]
    if required:
        out["required"] = required
    return out


def field_schema(section: Section, f: Field) -> dict[str, Any]:
    """The schema of one key: its type, values, default, example and meaning."""
    schema: dict[str, Any]
    if f.schema is not None:
        schema = dict(f.schema)
    elif f.child is not None:
        schema = section_schema(f.child)
        if f.many:
            schema = {"type": "array", "items": schema}
    else:
        schema = {}
        for part in (schema_of(f.read), *map(schema_of, f.checks)):
            schema.update(part or {})
    if f.doc:  # the meaning first, then what the value looks like (a CIDR ...)
        hint = schema.get("description")
        schema["description"] = f"{f.doc} Value: {hint}." if hint else f.doc
    default = _default(section, f)
    if default is not None:
        schema["default"] = default
    if f.example is not None:
        schema["examples"] = [f.example]
    if f.required is None and "const" not in schema:
        schema = _nullable(schema)  # `key: null` (or `key:`) means the default
    return schema


def _default(section: Section, f: Field) -> Any:
    """The class default of ``f``'s attribute(s), in the YAML form (``None``: no default)."""
    names = f.spread or ((f.attr,) if f.attr is not None else ())
    if not names or (f.child is not None and not f.many):
        return None  # an object's defaults are its keys'
    found = attrs.fields_dict(section.cls)
    values = []
    for name in names:
        default: Any = found[name].default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]  # attrs' own typing
            default = default.factory()
        if default is attrs.NOTHING or default is None:
            return None
        values.append(default)
    written = f.write(tuple(values) if f.spread else values[0])
    return _jsonable(written)


def _jsonable(value: Any) -> Any:
    """Tuples as lists, everything else as JSON has it."""
    return json.loads(json.dumps(value, default=str))


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kinds = schema.get("type")
    if isinstance(kinds, str):
        schema["type"] = [kinds, "null"]
    elif isinstance(kinds, list) and "null" not in kinds:
        schema["type"] = [*kinds, "null"]
    if "enum" in schema and None not in schema["enum"]:
        schema["enum"] = [*schema["enum"], None]
    if "oneOf" in schema:
        schema["oneOf"] = [*schema["oneOf"], {"type": "null"}]
    return schema


def dumps(schema: Mapping[str, Any]) -> str:
    """The schema as the shipped file spells it (stable, reviewable diffs)."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":  # pragma: no cover - `python -m k3snet.spec.json_schema`
    print(dumps(spec_json_schema()), end="")  # noqa: T201 - the module's output
