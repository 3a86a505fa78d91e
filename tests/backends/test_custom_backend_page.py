"""docs/custom-backend.md's steps as a third-party author takes them: the complete
backend saved as a package's module, and the conformance section's blocks run in a test
module of their own (tests/api/test_docs.py runs the page's blocks in one namespace, where
each block sees the names the blocks before it made)."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.test_docs import python_blocks

PAGE = Path(__file__).resolve().parents[2] / "docs" / "custom-backend.md"


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


@pytest.fixture
def my_package(tmp_path: Path) -> Iterator[str]:
    """The page's complete backend, as written, in ``my_package/__init__.py``."""
    complete = python_blocks(_section(PAGE.read_text(encoding="utf-8"), "A complete backend"))
    package = tmp_path / "my_package"
    package.mkdir()
    (package / "__init__.py").write_text(complete[0].code, encoding="utf-8")
    sys.path.insert(0, str(tmp_path))
    try:
        yield "my_package"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("my_package", None)


def test_the_conformance_blocks_of_the_page_run_in_a_test_module_of_their_own(
        my_package: str) -> None:
    """The page's first block named ``Path``, ``tempfile``, ``json`` and ``k3snet`` and the
    ``store=`` block ``object_from_dict`` without importing them: copied into a test
    module, they stopped at ``NameError: name 'Path' is not defined``."""
    blocks = [b for b in python_blocks(_section(PAGE.read_text(encoding="utf-8"),
                                                "Test it with the conformance suite"))
              if b.runs]
    assert len(blocks) == 3  # run_conformance, with store=, with objects=
    namespace: dict[str, object] = {"__name__": "tests_of_my_package"}
    exec(f"from {my_package} import JsonFileBackend", namespace)  # noqa: S102 - the page's
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the page shows no weaker practice
        for block in blocks:
            exec(compile(block.code, f"{PAGE}:{block.line}", "exec"), namespace)  # noqa: S102
