"""The benchmarks keep k3snet's records in their own temporary directories.

An iptables backend built in-process without a ``state_dir`` keeps its record of the
built-in chains it made (and a netlink backend its sysctl record) under
``/run/k3snet/<namespace>/``: every benchmark namespace left a directory there.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).parents[2] / "benchmarks").glob("*.py"))
# The backends that keep per-namespace records under their state_dir.
RECORDING = {"IptablesBackend", "NetlinkBackend"}


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name) and node.func.id in RECORDING]


@pytest.mark.parametrize("script", BENCHMARKS, ids=[p.name for p in BENCHMARKS])
def test_every_recording_backend_a_benchmark_builds_is_given_a_state_dir(
        script: Path) -> None:
    tree = ast.parse(script.read_text(), str(script))
    for call in _calls(tree):
        named = {keyword.arg for keyword in call.keywords}
        spread = any(keyword.arg is None for keyword in call.keywords)  # **options
        assert "state_dir" in named or spread, (
            f"{script.name}:{call.lineno}: {ast.unparse(call)} keeps its records under "
            "/run/k3snet/<namespace>/: give it a state_dir (a temporary directory)")


def test_the_benchmarks_are_found() -> None:
    assert any(_calls(ast.parse(p.read_text())) for p in BENCHMARKS)
