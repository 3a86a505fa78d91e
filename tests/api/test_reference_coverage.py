"""The API reference (docs/reference.md) covers what the other pages tell a reader to use."""

from __future__ import annotations

import functools
import importlib
import re
from pathlib import Path
from typing import Any

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
    # The package griffe loaded once for the reference tests below (a load of the module
    # alone was one more of ~3 s).
    members = _griffe_package()["model._base.NetObject"].members
    for name in ("kind", "type_name", "rank", "expectation", "written"):
        docstring = members[name].docstring
        assert docstring is not None, f"NetObject.{name} has no docstring"
        assert docstring.value.strip(), f"NetObject.{name} has an empty docstring"
    assert "never writes" in members["expectation"].docstring.value
    assert "only observes" in members["written"].docstring.value


# The packages whose __init__ only re-exports (tests/api/test_exported_members.py): every
# name of their __all__ is API.
PUBLIC_PACKAGES = ["k3snet", "k3snet.model", "k3snet.backends", "k3snet.testing", "k3snet.lab",
                   "k3snet.agent"]
# The pages a user reads to use k3snet (the others describe its inside: performance,
# testing, reliability, backends' internals).
USER_PAGES = ["getting-started.md", "spec.md", "cli.md", "schemas.md", "recipes.md",
              "custom-backend.md", "ansible.md", "doctor.md", "manifests.md", "agent.md",
              "architecture.md", "index.md"]


@functools.cache
def _loaded() -> Any:
    import griffe  # noqa: PLC0415 - a docs dependency: the callers skip without it

    return griffe.load("k3snet", search_paths=[str(DOCS.parent)], resolve_aliases=True,
                       resolve_external=False)


def _griffe_package() -> Any:
    pytest.importorskip("griffe")
    return _loaded()


def _lookup(package: Any, path: str) -> Any:
    found = package if path == "k3snet" else package[path.removeprefix("k3snet.")]
    return found.final_target if found.is_alias else found


def _rendered(package: Any) -> set[str]:
    """The paths the reference renders: each ``:::`` module's ``__all__`` (mkdocstrings
    shows what a module exports, and only what has a docstring), by the path it is
    exported under and the one it is defined at, with a class's members."""
    paths: set[str] = set()
    for entry in _referenced():
        module = _lookup(package, entry)
        paths.add(entry)
        for name in module.exports or ():
            target = _lookup(package, f"{entry}.{name}")
            if target.docstring is None and not target.is_module:
                continue
            for where in (f"{entry}.{name}", target.path):
                paths.add(where)
                if target.is_class:
                    paths.update(f"{where}.{member}" for member in target.members)
    return paths


def test_every_name_a_public_package_exports_is_in_the_api_reference() -> None:
    """``k3snet.lab`` (SeedLab, LabError ...) had no entry, and constants without a
    docstring (``k3snet.model.MAIN_TABLE``, ``k3snet.agent.STATUS_ANNOTATION``) were left
    out of the pages of the packages that export them."""
    package = _griffe_package()
    rendered = _rendered(package)
    missing = [f"{name}.{exported}" for name in PUBLIC_PACKAGES
               for exported in importlib.import_module(name).__all__
               if exported != "__version__"
               and _lookup(package, f"{name}.{exported}").path not in rendered]
    assert not missing, f"docs/reference.md does not show {missing}"


def test_every_module_of_the_api_reference_says_what_it_exports() -> None:
    """A ``:::`` module without ``__all__`` would show every name it imports as API."""
    package = _griffe_package()
    assert not [entry for entry in sorted(_referenced())
                if _lookup(package, entry).exports is None]


def test_every_name_a_user_page_names_is_in_the_api_reference() -> None:
    """``k3snet.lab.netns.exit_on_signals`` (getting-started) and
    ``k3snet.schemas.load_schema`` (schemas) were named on pages a user reads, and
    the reference had neither."""
    package = _griffe_package()
    rendered = _rendered(package)
    missing = []
    for page in USER_PAGES:
        text = (DOCS / page).read_text(encoding="utf-8")
        for span in re.findall(r"`[^`\n]+`", text):
            for name in re.findall(r"\bk3snet(?:\.[A-Za-z]\w*)+", span):
                try:
                    target = _lookup(package, name)
                except (KeyError, ValueError, AttributeError):
                    continue  # not a Python name (k3snet.io/agent-status, a file)
                if target.is_module:
                    continue  # a module named for what is in it ("k3snet.spec.model")
                if name not in rendered and target.path not in rendered:
                    missing.append(f"{page}: {name}")
    assert not missing, f"docs/reference.md does not show {sorted(set(missing))}"


def test_every_function_the_console_script_takes_from_the_cli_is_in_the_api_reference() -> None:
    """``python -m k3snet`` (the console script's process) calls ``k3snet.cli.run_main``,
    a public name, and ``k3snet.cli`` had no entry in the reference: neither it nor
    ``main`` and ``build_parser`` (its ``__all__``) were shown."""
    import ast  # noqa: PLC0415 - this test alone

    import k3snet.__main__ as entry  # noqa: PLC0415 - read, not run
    import k3snet.cli  # noqa: PLC0415

    tree = ast.parse(Path(entry.__file__).read_text(encoding="utf-8"))
    taken = {alias.name for node in ast.walk(tree)
             if isinstance(node, ast.ImportFrom) and node.module == "k3snet.cli"
             for alias in node.names}
    functions = {name for name in taken if callable(getattr(k3snet.cli, name))}
    assert "run_main" in functions
    assert functions <= set(k3snet.cli.__all__)
    rendered = _rendered(_griffe_package())
    missing = [f"k3snet.cli.{name}" for name in sorted(k3snet.cli.__all__)
               if f"k3snet.cli.{name}" not in rendered]
    assert not missing, f"docs/reference.md does not show {missing}"
