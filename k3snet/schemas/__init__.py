"""JSON Schemas of every JSON document k3snet prints or writes.

``object`` (one managed object), ``state`` (``k3snet observe --output json``,
``State.to_dict``, the memory backend's dump), ``plan``, ``apply``, ``error``,
``validation`` (``k3snet validate --output json``),
``capture`` (``k3snet observe --save DIR --output json``), ``doctor`` (``k3snet doctor
--output json``), ``planfile`` and ``log``
(``--log-format json`` lines, the agent's events). Each
document carries ``format`` (1; ``planfile``: 2) and, from the CLI, a ``kind``. ``spec``
(``spec.schema.json``) is the schema of the spec itself, generated from its field
table by :mod:`k3snet.spec.json_schema`, for editors. The files ship in the package::

    from k3snet.schemas import load_schema
    schema = load_schema("plan")        # a dict, for jsonschema or an editor

They reference each other by ``$id`` (``https://k3snet.invalid/schemas/NAME.json``).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

__all__ = ["SCHEMA_NAMES", "load_schema"]

SCHEMA_NAMES = ("object", "state", "plan", "apply", "error", "validation", "capture",
                "doctor", "planfile", "log", "spec")


def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema ``name`` (one of :data:`SCHEMA_NAMES`) as a dict."""
    if name not in SCHEMA_NAMES:
        raise ValueError(f"no schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    file = "spec.schema.json" if name == "spec" else f"{name}.json"  # the name editors know
    text = resources.files(__package__).joinpath(file).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
