"""A module of this checkout as an older commit had it, for benchmarks that time this
checkout's code beside an earlier version's in one process (``--before COMMIT``)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def older_module(path: str, commit: str, tmp: Path, name: str) -> ModuleType:
    """The file ``path`` (e.g. ``k3snet/_gojson.py``) as ``commit`` had it, written under
    ``tmp`` and imported as ``name`` (``git show``; it must import only what this
    checkout still has)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{path}"],
                            check=True, capture_output=True, text=True).stdout
    file = tmp / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # attrs' classes look their module up
    spec.loader.exec_module(module)
    return module
