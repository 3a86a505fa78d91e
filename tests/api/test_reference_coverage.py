"""The API reference (docs/reference.md) covers what the other pages tell a reader to use."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _referenced() -> set[str]:
    text = (DOCS / "reference.md").read_text(encoding="utf-8")
    return set(re.findall(r"^::: (k3snet[\w.]*)$", text, flags=re.MULTILINE))


def test_every_module_a_page_imports_from_is_in_the_api_reference() -> None:
    """docs/custom-backend.md builds a backend from ``k3snet.backends.kit`` (BackendBase,
    fit_problems, Compensation ...), and the reference did not have the module."""
    imported = {module for page in DOCS.glob("*.md")
                for module in re.findall(r"^\s*from (k3snet[\w.]*) import",
                                         page.read_text(encoding="utf-8"), flags=re.MULTILINE)}
    referenced = _referenced()
    missing = sorted(module for module in imported
                     if not any(entry == module or entry.startswith(module + ".")
                                for entry in referenced))
    assert not missing, f"docs/reference.md has no ::: entry for {missing}"


def test_every_class_attribute_a_new_kind_sets_is_documented() -> None:
    """``NetObject.expectation`` had no docstring (its text followed ``written``'s, where
    nothing reads it): the reference said nothing of what a new kind sets it for."""
    griffe = pytest.importorskip("griffe")
    module = griffe.load("k3snet.model._base",
                         search_paths=[str(Path(__file__).resolve().parents[2])])
    members = module["NetObject"].members
    for name in ("kind", "type_name", "rank", "expectation", "written"):
        docstring = members[name].docstring
        assert docstring is not None, f"NetObject.{name} has no docstring"
        assert docstring.value.strip(), f"NetObject.{name} has an empty docstring"
    assert "never writes" in members["expectation"].docstring.value
    assert "only observes" in members["written"].docstring.value
