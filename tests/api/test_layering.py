"""The package's layers, read from the imports of its source files (no import runs)."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "k3snet"


@functools.cache  # read and parsed once for the three tests (~3 s of CPU each)
def _imports() -> tuple[tuple[str, str, str], ...]:
    """(file, its package, imported module or name) for every absolute k3snet import."""
    found: list[tuple[str, str, str]] = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = module if parts[-1] == "__init__" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found += [(str(path.relative_to(ROOT.parent)), package, n) for n in names
                      if n.startswith("k3snet")]
    return tuple(found)


def test_no_module_imports_another_packages_private_module() -> None:
    bad = []
    for path, package, name in _imports():
        parts = name.split(".")
        for i, part in enumerate(parts):
            owner = ".".join(parts[:i])
            if (part.startswith("_") and not part.startswith("__")
                    and package != owner and not package.startswith(owner + ".")):
                bad.append(f"{path}: {name}")
    assert not bad, "\n".join(bad)


def test_render_imports_no_backend() -> None:
    bad = [f"{path}: {name}" for path, _package, name in _imports()
           if path.startswith("k3snet/render/") and name.startswith("k3snet.backends")]
    assert not bad, "\n".join(bad)


def test_the_model_and_the_planner_import_no_backend_spec_or_render() -> None:
    layers = ("k3snet/model/", "k3snet/planner.py", "k3snet/errors.py")
    above = ("k3snet.backends", "k3snet.spec", "k3snet.render", "k3snet.converge", "k3snet.cli")
    bad = [f"{path}: {name}" for path, _package, name in _imports()
           if path.startswith(layers) and name.startswith(above)]
    assert not bad, "\n".join(bad)
