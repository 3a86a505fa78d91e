"""Every leaf field of the spec, walked from the field table (k3snet/spec/schema.py),
and a document built from the table's examples to put hostile values into.

A field added to the table is fuzzed without touching the tests: its ``example``
goes into :func:`base_document` and its path into :func:`targets`.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from typing import Any, NamedTuple

from k3snet.spec.fields import Section
from k3snet.spec.schema import SPEC

Path = tuple[str | int, ...]

# Overrides of the examples so that the values under test reach an output: NAT and
# forward rules for the destination through a device the lab node has, one CNI only.
_OVERRIDES: dict[Path, Any] = {
    ("apiVersion",): "k3snet.io/v1alpha1", ("kind",): "EgressSpec",
    ("cluster", "podCIDRs"): ["10.42.0.0/16"], ("cluster", "serviceCIDRs"): ["10.43.0.0/16"],
    ("destinations", 0, "masquerade"): True, ("destinations", 0, "forward"): True,
    ("destinations", 0, "device"): "eth0", ("destinations", 0, "gateway"): "192.168.1.1",
    ("masquerade", "mode"): "all", ("forward", "accept"): True,
    ("manageForwarding",): True, ("cni", "calico", "vxlanMode"): "Never",
}


class Target(NamedTuple):
    """Where a hostile value goes: a path, and whether it replaces a mapping's first key."""

    path: Path
    key: bool = False

    def __str__(self) -> str:
        text = ""
        for part in self.path:
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
        return text + ("{key}" if self.key else "")


def _leaves(section: Section = SPEC, prefix: Path = ()) -> Iterator[tuple[Path, Any]]:
    for f in section.fields:
        path = (*prefix, *f.key.split("."))
        if f.child is not None:
            yield from _leaves(f.child, (*path, 0) if f.many else path)
        elif f.attr is not None:
            yield path, f.example


def targets() -> list[Target]:
    """Each leaf field; a list's first item; a mapping's first value and first key."""
    found = []
    for path, example in _leaves():
        found.append(Target(path))
        if isinstance(example, list):
            found.append(Target((*path, 0)))
        elif isinstance(example, dict):
            found += [Target((*path, next(iter(example)))), Target(path, key=True)]
    return found


def put(doc: dict[str, Any], target: Target, value: Any) -> None:
    """Set ``target`` in ``doc``, making the mappings and lists on the way."""
    node: Any = doc
    path = target.path
    for part, after in itertools.pairwise(path):
        empty: Any = [] if isinstance(after, int) else {}
        if isinstance(part, int):
            while len(node) <= part:
                node.append(copy.deepcopy(empty))
        elif not isinstance(node.get(part), dict | list):
            node[part] = empty
        node = node[part]
    last = path[-1]
    if target.key:
        mapping = node[last]
        first = next(iter(mapping))
        node[last] = {**{k: v for k, v in mapping.items() if k != first},
                      value if isinstance(value, str) else str(value): mapping[first]}
    elif isinstance(last, int):
        while len(node) <= last:
            node.append(None)
        node[last] = value
    else:
        node[last] = value


def base_document() -> dict[str, Any]:
    """A valid spec document holding every field's example (see ``_OVERRIDES``);
    only Calico of the CNIs (both at once are refused)."""
    doc: dict[str, Any] = {}
    for path, example in _leaves():
        if example is not None and path[:2] != ("cni", "flannel"):
            put(doc, Target(path), copy.deepcopy(example))
    for path, value in _OVERRIDES.items():
        put(doc, Target(path), copy.deepcopy(value))
    return doc


def hostile_document(target: Target, value: Any) -> dict[str, Any]:
    """:func:`base_document` with ``value`` at ``target`` (a flannel field: flannel's
    examples instead of Calico's, so the value is read, not refused for two CNIs)."""
    doc = base_document()
    if target.path[:2] == ("cni", "flannel"):
        doc["cni"] = {}
        for path, example in _leaves():
            if path[:2] == ("cni", "flannel"):
                put(doc, Target(path), copy.deepcopy(example))
    put(doc, target, value)
    return doc
