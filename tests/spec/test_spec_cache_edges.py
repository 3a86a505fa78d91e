"""The parsed-spec cache at its edges: where it lives, files it does not take, what it keeps."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from k3snet import SpecError
from k3snet.spec import Spec, load_spec, seed_spec
from k3snet.spec import cache as spec_cache
from k3snet.spec.cache import cache_directory, load_spec_cached
from k3snet.spec.source import MAX_BYTES
from tests.spec.test_spec_cache import holds

HEADER = "apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"


@pytest.mark.parametrize("off", ["0", "off", "OFF", "no", "False"])
def test_the_cache_is_turned_off_by_any_false_word(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path, off: str) -> None:
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("K3SNET_SPEC_CACHE", off)
    assert cache_directory() is None
    monkeypatch.setenv("K3SNET_SPEC_CACHE", "on")
    assert cache_directory() == tmp_path / "spec-cache"


def test_the_default_directory_is_under_run_k3snet_when_it_exists(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("K3SNET_STATE_DIR", raising=False)
    monkeypatch.delenv("K3SNET_SPEC_CACHE", raising=False)
    monkeypatch.setattr(spec_cache, "_DEFAULT_ROOT", tmp_path / "run")
    assert cache_directory() is None
    (tmp_path / "run").mkdir()
    assert cache_directory() == tmp_path / "run" / "spec-cache"
    monkeypatch.setenv("K3SNET_STATE_DIR", "")
    assert cache_directory() == tmp_path / "run" / "spec-cache"


def test_without_a_directory_nothing_is_cached(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setenv("K3SNET_SPEC_CACHE", "off")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(seed_spec().to_dict()))
    assert load_spec_cached(spec_file) == seed_spec()
    assert load_spec_cached(str(spec_file)) == seed_spec()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]
    monkeypatch.setenv("K3SNET_SPEC_CACHE", "on")
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path / "state"))
    assert load_spec_cached(spec_file) == seed_spec()
    (cached,) = (tmp_path / "state" / "spec-cache").iterdir()
    assert holds(cached, seed_spec().to_dict())


def _same_error(path: Path, store: Path) -> str:
    with pytest.raises(SpecError) as plain:
        load_spec(path)
    with pytest.raises(SpecError) as cached:
        load_spec_cached(path, store)
    assert str(cached.value) == str(plain.value)
    assert not store.exists() or not any(store.iterdir())
    return str(plain.value)


def test_files_the_cache_does_not_take_give_the_plain_errors(tmp_path: Path) -> None:
    store = tmp_path / "store"
    big = tmp_path / "big.yaml"
    big.write_bytes(HEADER.encode() + b"#" * MAX_BYTES)
    assert "is larger than" in _same_error(big, store)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(HEADER.encode() + b"# caf\xe9\n")
    assert "is not UTF-8 text" in _same_error(latin, store)
    assert "a directory" in _same_error(tmp_path, store)
    assert "No such file" in _same_error(tmp_path / "missing.yaml", store)
    assert "not valid YAML" in _same_error(_text(tmp_path / "bad.yaml", "a: [\n"), store)
    assert "the spec is empty" in _same_error(_text(tmp_path / "empty.yaml", ""), store)


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_spec_of_exactly_the_largest_size_is_cached(tmp_path: Path) -> None:
    store = tmp_path / "store"
    body = HEADER + "destinations: [{cidr: 192.168.2.0/24}]\n"
    path = _text(tmp_path / "spec.yaml", body + "#" * (MAX_BYTES - len(body)))
    assert path.stat().st_size == MAX_BYTES
    want = Spec.from_yaml(body)
    assert load_spec_cached(path, store) == want
    (cached,) = store.iterdir()
    assert cached.name.endswith(".json")
    assert len(cached.name) == 32 + len(".json")
    assert load_spec_cached(path, store) == want


def test_each_spec_path_has_its_own_file(tmp_path: Path) -> None:
    store = tmp_path / "store"
    one = _text(tmp_path / "one.yaml", HEADER + "destinations: [{cidr: 192.168.2.0/24}]\n")
    two = _text(tmp_path / "two.yaml", HEADER + "destinations: [{cidr: 192.168.3.0/24}]\n")
    first, second = load_spec_cached(one, store), load_spec_cached(two, store)
    assert len(list(store.iterdir())) == 2
    assert load_spec_cached(one, store) == first
    assert load_spec_cached(two, store) == second
    assert first != second


def test_pruning_keeps_the_newest_files_and_the_one_just_written(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 ) -> None:
    monkeypatch.setattr(spec_cache, "MAX_ENTRIES", 2)
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    a, b, c = (f"{digit * 32}.json" for digit in "abc")  # entries: a path's digest
    for i, name in enumerate([a, b, c]):
        (store / name).write_text("{}")
        os.utime(store / name, (100 + i, 100 + i))
    (store / "notes.txt").write_text("not a cache file")
    os.utime(store / "notes.txt", (1, 1))
    keep = store / a  # the oldest, but the one being written: never removed
    spec_cache._prune(store, keep)
    assert sorted(p.name for p in store.iterdir()) == [a, b, c, "notes.txt"]
    spec_cache._prune(store, store / c)
    assert sorted(p.name for p in store.iterdir()) == [b, c, "notes.txt"]
    spec_cache._prune(store, store / "x.json")  # two entries: nothing to do
    assert sorted(p.name for p in store.iterdir()) == [b, c, "notes.txt"]
    spec_cache._prune(tmp_path / "missing", store / "x.json")  # no directory: no error


def test_pruning_removes_only_cache_entries_never_another_file_of_the_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The netlink backend keeps a namespace's sysctl record in <state root>/<netns>/:
    # for a namespace named spec-cache that is this directory, and pruning "the oldest
    # *.json" deleted the record of what k3snet changed (destroy could no longer
    # restore the admin's values).
    monkeypatch.setattr(spec_cache, "MAX_ENTRIES", 1)
    store = tmp_path / "spec-cache"
    store.mkdir(mode=0o700)
    entries = [store / f"{digit * 32}.json" for digit in "ab"]
    for i, path in enumerate([store / "sysctl.json", *entries]):
        path.write_text("{}")
        os.utime(path, (100 + i, 100 + i))
    spec_cache._prune(store, entries[1])
    assert sorted(p.name for p in store.iterdir()) == [entries[1].name, "sysctl.json"]


def test_a_cache_file_is_written_only_into_a_trusted_directory(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    store.chmod(0o770)
    spec_cache._write_cached(store / "x.json", "k", {"a": 1})
    assert list(store.iterdir()) == []
    store.chmod(0o700)
    spec_cache._write_cached(store / "x.json", "k", {"a": 1})
    assert json.loads((store / "x.json").read_text()) == {"key": "k", "document": {"a": 1},
                                                          "sound": True}
    assert [p.name for p in store.iterdir()] == ["x.json"]  # no temporary file left
    assert spec_cache._read_cached(store / "x.json", "k") == ({"a": 1}, True, None)
    (store / "y.json").write_text(json.dumps({"key": "k"}))
    assert spec_cache._read_cached(store / "y.json", "k") == (None, False, None)
    (store / "z.json").write_text(json.dumps({"key": "k", "document": None}))
    assert spec_cache._read_cached(store / "z.json", "k") == (None, False, None)
    (store / "w.json").mkdir()
    assert spec_cache._read_cached(store / "w.json", "k") == (None, False, None)
    # A file in its place that cannot be replaced: the cache stays as it was.
    spec_cache._write_cached(store / "w.json", "k", {"a": 2})
    assert (store / "w.json").is_dir()
    assert sorted(p.name for p in store.iterdir()) == ["w.json", "x.json", "y.json", "z.json"]


def test_a_cache_directory_that_cannot_be_made_is_no_cache(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(seed_spec().to_dict()))
    assert load_spec_cached(spec_file, blocker / "store") == seed_spec()
    assert blocker.read_text() == ""


def test_a_special_file_gives_the_plain_error(tmp_path: Path) -> None:
    assert "not a regular file" in _same_error(Path("/dev/null"), tmp_path / "store")


def _spec_file(tmp_path: Path) -> tuple[Path, Spec]:
    body = HEADER + "destinations: [{cidr: 192.168.2.0/24}]\n"
    return _text(tmp_path / "spec.yaml", body), Spec.from_yaml(body)


def test_the_file_just_written_is_kept_when_pruning_among_newer_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spec_cache, "MAX_ENTRIES", 2)
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    for name in ["a", "b", "c"]:  # dated after the file about to be written
        (store / f"{name}.json").write_text("{}")
        os.utime(store / f"{name}.json", (4_000_000_000, 4_000_000_000))
    path, want = _spec_file(tmp_path)
    assert load_spec_cached(path, store) == want
    written = [p for p in store.iterdir() if p.stem not in {"a", "b", "c"}]
    assert len(written) == 1
    assert holds(written[0], yaml.safe_load(path.read_text()))


def test_cache_files_are_opened_close_on_exec_without_following_links(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "store"
    path, want = _spec_file(tmp_path)
    load_spec_cached(path, store)
    flags: list[int] = []
    real_open = os.open

    def recording_open(file: Any, flag: int, *args: Any, **kwargs: Any) -> int:
        if Path(file).parent == store:
            flags.append(flag)
        return real_open(file, flag, *args, **kwargs)

    monkeypatch.setattr(os, "open", recording_open)
    assert load_spec_cached(path, store) == want
    assert flags == [os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC]


def test_failing_renames_and_removals_leave_loading_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise PermissionError("refused")

    path, want = _spec_file(tmp_path)
    monkeypatch.setattr(os, "unlink", fail)
    monkeypatch.setattr(os, "replace", fail)
    assert load_spec_cached(path, tmp_path / "store") == want  # the temporary file stays
    monkeypatch.undo()
    pruned = tmp_path / "pruned"
    pruned.mkdir(mode=0o700)
    (pruned / f"{'0' * 32}.json").write_text("{}")
    monkeypatch.setattr(spec_cache, "MAX_ENTRIES", 1)
    monkeypatch.setattr(os, "unlink", fail)
    assert load_spec_cached(path, pruned) == want  # old.json could not be pruned
    assert len(list(pruned.iterdir())) == 2
