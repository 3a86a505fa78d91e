"""The backends' names listed without importing importlib.metadata (issue 9: ``k3snet plan
--help`` paid 21-31 ms of CPU for that import, the scan 9-13 ms more): the same names as
importlib.metadata finds, for every layout it reads, and importlib.metadata itself asked
where the quick reading could differ."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from k3snet.backends import registry
from k3snet.backends.registry import ENTRY_POINT_GROUP, available_backends

ROOT = Path(__file__).resolve().parents[2]


def _metadata_names() -> set[str]:
    return {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _dist(place: Path, directory: str, entry_points_txt: str | None) -> None:
    dist = place / directory
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {directory.partition('-')[0]}\n"
                                   "Version: 1.0\n")
    if entry_points_txt is not None:
        (dist / "entry_points.txt").write_text(entry_points_txt)


@pytest.fixture
def on_path(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Two directories first on ``sys.path``, as two site directories."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    sys.path[:0] = [str(first), str(second)]
    try:
        yield first, second
    finally:
        sys.path.remove(str(first))
        sys.path.remove(str(second))


LAYOUTS: dict[str, list[tuple[int, str, str | None]]] = {
    "one plugin": [(0, "acme-1.0.dist-info", "[k3snet.backends]\nacme = acme:Backend\n")],
    "other groups, comments, spaces, a line before any section": [
        (0, "acme-1.0.dist-info",
         "stray = before:any\n[console_scripts]\nacme = acme:main\n\n# [k3snet.backends]\n"
         "[k3snet.backends]\n  # not = this\n  spaced   =  acme:Backend  \nsecond=acme:B\n"
         "[other]\nx = y\n")],
    "no entry_points.txt, an egg-info, a file that is no metadata": [
        (0, "bare-2.0.dist-info", None),
        (1, "old_style.egg-info", "[k3snet.backends]\nold = old_style:Backend\n"),
        (0, "notes.txt-info", None)],
    # importlib.metadata keeps the first distribution of a normalized name on the path:
    # the later one's backends are not found (an older copy shadowed by a newer install).
    "one project twice on the path": [
        (0, "Acme.Net-2.0.dist-info", "[k3snet.backends]\nnew = acme:New\n"),
        (1, "acme_net-1.0.dist-info", "[k3snet.backends]\nold = acme:Old\n")],
    "the group's name needs its brackets whole": [
        (0, "acme-1.0.dist-info", "[[k3snet.backends]]\nbracketed = acme:B\n"
                                  "[k3snet.backends.more]\nnot_ours = acme:B\n")],
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_quick_reading_finds_the_names_importlib_metadata_finds(
        on_path: tuple[Path, Path], layout: str) -> None:
    for where, directory, text in LAYOUTS[layout]:
        _dist(on_path[where], directory, text)
    quick = registry._entry_point_names()
    assert quick is not None
    assert quick == _metadata_names()
    assert set(available_backends()) == quick | set(registry._BUILTIN)


@pytest.mark.parametrize("shape", ["no '=' in a section", "a name from METADATA alone",
                                   "an upper-case suffix"])
def test_where_the_quick_reading_could_differ_importlib_metadata_is_asked(
        on_path: tuple[Path, Path], shape: str) -> None:
    if shape == "no '=' in a section":
        _dist(on_path[0], "acme-1.0.dist-info", "[other]\nnot a pair\n[k3snet.backends]\n"
                                                "acme = acme:B\n")
    elif shape == "a name from METADATA alone":
        _dist(on_path[0], "-1.0.dist-info", "[k3snet.backends]\nacme = acme:B\n")
    else:
        _dist(on_path[0], "Acme-1.0.DIST-INFO", "[k3snet.backends]\nacme = acme:B\n")
    assert registry._entry_point_names() is None
    if shape == "no '=' in a section":
        with pytest.raises(TypeError):  # importlib.metadata's own error, as before
            available_backends()
    else:
        assert set(available_backends()) == _metadata_names() | set(registry._BUILTIN)


def test_a_zip_on_the_path_or_another_metadata_finder_asks_importlib_metadata(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "plugins.zip"
    archive.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip archive
    monkeypatch.setattr(sys, "path", [str(archive), *sys.path])
    assert registry._entry_point_names() is None

    class Finder:
        @staticmethod
        def find_distributions(*_args: object, **_kwargs: object) -> list[object]:
            return []

    monkeypatch.setattr(sys, "path", sys.path[1:])
    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, Finder])
    assert registry._entry_point_names() is None


def test_plan_help_lists_a_third_party_backend_without_importing_importlib_metadata(
        tmp_path: Path) -> None:
    """The help's list of backends (``--backend``) read from the dist-info directories."""
    _dist(tmp_path, "acme_k3snet-1.0.dist-info", "[k3snet.backends]\nacme = acme:Backend\n")
    code = ("import json, sys\n"
            "from k3snet.cli import main\n"
            "try:\n"
            "    main(['plan', '--help'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "print(json.dumps('importlib.metadata' in sys.modules))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]),
           "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120, env=env)
    *help_text, last = done.stdout.splitlines()
    assert "acme" in "\n".join(help_text)
    assert json.loads(last) is False


def test_an_egg_directory_on_the_path_asks_importlib_metadata(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unzipped egg on ``sys.path`` keeps its metadata in ``EGG-INFO``, which
    importlib.metadata reads for a path entry named ``*.egg`` alone: its backends are
    listed (the quick reading, which does not know that layout, leaves it to
    importlib.metadata)."""
    egg = tmp_path / "acme_egg-1.0-py3.11.egg"
    (egg / "EGG-INFO").mkdir(parents=True)
    (egg / "EGG-INFO" / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: acme-egg\n"
                                               "Version: 1.0\n")
    (egg / "EGG-INFO" / "entry_points.txt").write_text("[k3snet.backends]\negged = acme:B\n")
    monkeypatch.setattr(sys, "path", [str(egg), *sys.path])
    assert "egged" in _metadata_names()
    assert registry._entry_point_names() is None
    assert "egged" in available_backends()


@pytest.mark.parametrize("value", ["", "acme-plugin:Backend", "acme:Backend extra", "acme:"])
def test_a_value_that_is_no_object_reference_asks_importlib_metadata(
        on_path: tuple[Path, Path], value: str) -> None:
    """Newer importlib.metadata (CPython's main branch) refuses such an entry point, of
    any group, when it reads it, with a ValueError; older ones list it. Either way the
    list of backends is importlib.metadata's answer, not one read past it."""
    _dist(on_path[0], "acme-1.0.dist-info",
          f"[console_scripts]\nbroken = {value}\n[k3snet.backends]\nacme = acme:B\n")
    assert registry._entry_point_names() is None
    try:
        expected: object = _metadata_names() | set(registry._BUILTIN)
    except ValueError as exc:
        expected = repr(exc)
    try:
        got: object = set(available_backends())
    except ValueError as exc:
        got = repr(exc)
    assert got == expected
