"""``tests/bytecode.py``: the ``.pyc`` files a session makes for k3snet never run old code."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bytecode import compile_imported, compile_package


def _imported_value(root: Path) -> str:
    """``pkg.VALUE`` as a process a test starts sees it (it writes no bytecode, reads any)."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", "import pkg; print(pkg.VALUE)"], env=env,
                          cwd=root, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_an_edit_of_the_same_size_within_the_same_second_is_never_run_as_the_old_code(
        tmp_path: Path) -> None:
    # A comparison turned around to see a test fail and put back at once: the same size,
    # the same modification time in whole seconds (what a timestamp .pyc compares).
    source = tmp_path / "pkg" / "__init__.py"
    source.parent.mkdir()
    source.write_text('VALUE = "old"\n')
    compile_package(source.parent)
    made = os.stat(source)
    source.write_text('VALUE = "new"\n')
    os.utime(source, ns=(made.st_atime_ns, made.st_mtime_ns))
    compile_package(source.parent)  # the next session's start
    assert _imported_value(tmp_path) == "new"
    # ... and it is the .pyc that is read: of the new source, checked by its hash.
    cache = Path(importlib.util.cache_from_source(str(source)))
    header = cache.read_bytes()[:16]
    assert header[4:8] == (0b11).to_bytes(4, "little")
    assert header[8:] == importlib.util.source_hash(source.read_bytes())


def test_an_up_to_date_pyc_is_not_written_again(tmp_path: Path) -> None:
    source = tmp_path / "pkg" / "__init__.py"
    source.parent.mkdir()
    source.write_text('VALUE = "one"\n')
    compile_package(source.parent)
    cache = Path(importlib.util.cache_from_source(str(source)))
    written = cache.stat().st_mtime_ns
    os.utime(cache, ns=(written - 10**9, written - 10**9))
    compile_package(source.parent)
    assert cache.stat().st_mtime_ns == written - 10**9


def test_a_place_it_cannot_write_or_a_module_it_cannot_compile_is_left_out(
        tmp_path: Path) -> None:
    # No __pycache__ can be made (as in a read-only checkout, which root could still write).
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__pycache__").write_text("not a directory")
    (tmp_path / "pkg" / "__init__.py").write_text('VALUE = "kept"\n')
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "syntax.py").write_text("def (:\n")
    compile_package(tmp_path)
    assert _imported_value(tmp_path) == "kept"
    assert not (tmp_path / "broken" / "__pycache__").exists()


def test_only_a_package_in_the_checkout_is_compiled_never_an_installed_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An installed copy's .pyc files are its installer's (pip's timestamp ones, listed in
    # its RECORD; a system package's): rewriting them as checked-hash ones changed files
    # the session does not own.
    installed = tmp_path / "site-packages" / "k3snet_bytecode_probe"
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text('VALUE = "installed"\n')
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    monkeypatch.syspath_prepend(str(installed.parent))
    compile_imported("k3snet_bytecode_probe", checkout)
    assert not (installed / "__pycache__").exists()
    compile_imported("k3snet_bytecode_probe", tmp_path)  # the same package, in the checkout given
    assert (installed / "__pycache__").is_dir()
