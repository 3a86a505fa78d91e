"""The public API is typed for a program that embeds k3snet: its documented uses type-check
under ``mypy --strict`` with the types a reader expects, not ``Any``."""

from __future__ import annotations

from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).resolve().parents[2]

EMBEDDING = '''
from typing import assert_type

import k3snet
from k3snet.backends import Backend
from k3snet.backends.memory import MemoryBackend

desired = k3snet.compile(k3snet.seed_spec())
with k3snet.create_backend("memory") as backend:
    assert_type(backend, Backend)
    p = k3snet.plan(backend.observe(), desired)
    assert_type(p, k3snet.Plan)
    assert_type(backend.apply(p), k3snet.ApplyResult)
with MemoryBackend() as memory:
    assert_type(memory, MemoryBackend)
with k3snet.BackendGroup([MemoryBackend()]) as group:
    assert_type(group, k3snet.BackendGroup)
'''


def test_the_documented_embedding_type_checks_with_the_types_a_reader_expects(
        tmp_path: Path) -> None:
    """``with k3snet.create_backend(...) as backend:`` (the package's own example) gave
    ``Any``: the protocol's ``__enter__`` returned ``Any``, so nothing in the block was
    checked."""
    program = tmp_path / "embedding.py"
    program.write_text(EMBEDDING, encoding="utf-8")
    out, err, status = mypy_api.run([
        "--strict", "--no-error-summary", "--cache-dir", str(tmp_path / "cache"),
        "--python-version", "3.11", str(program)])
    assert status == 0, out + err
