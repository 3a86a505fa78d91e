"""Spec text (YAML, or JSON without PyYAML) to plain data, and spec files to :class:`Spec`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from k3snet.errors import Problem, SpecError

__all__ = ["load_mapping", "read_text"]


def load_mapping(text: str, source: str | None) -> Any:
    """Parse YAML (JSON when PyYAML is missing); a syntax error is a :class:`SpecError`."""
    try:
        import yaml  # noqa: PLC0415 - optional dependency (k3snet[spec])
    except ImportError:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError([Problem("", f"not JSON, and PyYAML is not installed for YAML "
                                         f"(pip install 'k3snet[spec]'): {exc}")],
                            source=source) from exc
    # libyaml's safe loader when PyYAML was built with it: same data, parsing a
    # 10k-destination spec about 3x faster (benchmarks/bench_spec.py, docs/performance.md).
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader, C or Python
    except yaml.YAMLError as exc:
        raise SpecError([Problem("", f"not valid YAML: {exc}")], source=source) from exc


def read_text(path: Path) -> str:
    """A spec file's text; an unreadable file is a :class:`SpecError`."""
    try:
        return path.read_text()
    except OSError as exc:
        raise SpecError([Problem("", f"cannot read {path}: {exc.strerror}")],
                        source=str(path)) from exc
