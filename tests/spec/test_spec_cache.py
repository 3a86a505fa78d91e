"""The parsed-spec cache (k3snet.spec.cache): used when it matches, ignored otherwise.

Each test that checks a cache is *ignored* first plants a cached document of a
different valid spec under the right key: had the cache been trusted, the other
spec would come back, so the test fails if the check goes.
"""

from __future__ import annotations

import datetime
import gc
import importlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from k3snet import SpecError, plan
from k3snet import compile as compile_spec
from k3snet.cli import main
from k3snet.model import State
from k3snet.spec import Spec, load_spec, seed_spec
from k3snet.spec import cache as spec_cache
from k3snet.spec.cache import cache_directory, load_spec_cached
from k3snet.spec.load import spec_from_document
from k3snet.testing import strategies as ks

validate_module = importlib.import_module("k3snet.spec.validate")  # the package names a function so

OTHER = {"apiVersion": "k3snet.io/v1alpha1", "kind": "EgressSpec",
         "destinations": [{"cidr": "203.0.113.0/24", "gateway": "192.168.1.9"}]}


def _write(path: Path, spec: Spec) -> Path:
    path.write_text(yaml.safe_dump(spec.to_dict()))
    return path


def _example_directory(tmp_path: Path) -> Path:
    """A directory of one hypothesis example's own: ``tmp_path`` is one for every example
    of a test, and a cache another example wrote there (an equal spec drawn again, as
    shrinking does) made the first read of a later one a hit."""
    return Path(tempfile.mkdtemp(dir=tmp_path))


def _cached_file(directory: Path) -> Path:
    (file,) = directory.iterdir()
    return file


def holds(file: Path, document: dict[str, Any]) -> bool:
    """Whether cache file ``file`` holds ``document``: as it is, or without its
    destinations and with them as rows (``_rows``: the same destinations)."""
    entry = json.loads(file.read_text())
    if "destinations" not in entry:
        return bool(entry["document"] == document)
    rest = {k: v for k, v in document.items() if k != "destinations"}
    return bool(entry["document"] == rest and spec_cache._destinations(entry["destinations"])
                == Spec.from_dict(document).destinations)


def _plant_other(file: Path) -> None:
    """Replace the cached document with OTHER, keeping the key (and the file's mode)."""
    entry = json.loads(file.read_text())
    entry["document"] = OTHER
    entry.pop("destinations", None)  # the seed's destinations, kept as rows
    file.write_text(json.dumps(entry))


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    return _write(tmp_path / "spec.yaml", seed_spec())


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "state" / "spec-cache"


def test_a_hit_reads_the_cached_document(spec_file: Path, store: Path) -> None:
    assert load_spec_cached(spec_file, store) == seed_spec()
    file = _cached_file(store)
    assert file.stat().st_mode & 0o777 == 0o600
    assert store.stat().st_mode & 0o777 == 0o700
    _plant_other(file)
    # Proof that the store is what answers (the file still holds the seed spec):
    assert load_spec_cached(spec_file, store) == Spec.from_dict(OTHER)


def test_a_hit_on_a_large_spec_collects_once_and_leaves_the_gc_on(tmp_path: Path,
                                                                  store: Path) -> None:
    # The cached document and the spec read from it share one pause of the cyclic GC:
    # one collection at its end walks both (two pauses: two collections).
    entries = [{"cidr": f"10.{n // 256}.{n % 256}.0/24", "gateway": "192.0.2.1"}
               for n in range(3000)]
    path = tmp_path / "large.yaml"
    path.write_text(yaml.safe_dump({**OTHER, "destinations": entries}))
    first = load_spec_cached(path, store)
    ran: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            ran.append(info["generation"])

    gc.collect()  # counts from zero: no collection of its own before the pause
    gc.callbacks.append(count)
    try:
        assert load_spec_cached(path, store) == first
    finally:
        gc.callbacks.remove(count)
    assert len(ran) <= 1
    assert gc.isenabled()


def test_other_spec_bytes_recompute(spec_file: Path, store: Path) -> None:
    load_spec_cached(spec_file, store)
    _plant_other(_cached_file(store))
    spec_file.write_text(spec_file.read_text() + "\n# edited\n")
    assert load_spec_cached(spec_file, store) == seed_spec()
    assert load_spec_cached(spec_file, store) == seed_spec()  # rewritten under the new key


def test_another_version_recomputes(spec_file: Path, store: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    load_spec_cached(spec_file, store)
    _plant_other(_cached_file(store))
    monkeypatch.setattr(spec_cache, "__version__", "99.0")
    assert load_spec_cached(spec_file, store) == seed_spec()


def test_another_cache_format_recomputes(spec_file: Path, store: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    load_spec_cached(spec_file, store)
    _plant_other(_cached_file(store))
    monkeypatch.setattr(spec_cache, "CACHE_FORMAT", spec_cache.CACHE_FORMAT + 1)
    assert load_spec_cached(spec_file, store) == seed_spec()


@pytest.mark.parametrize("junk", [b"", b"{", b"[1, 2]", b'{"key": 1}', b"\xff\xfe"])
def test_a_corrupt_file_is_ignored_and_rewritten(spec_file: Path, store: Path,
                                                 junk: bytes) -> None:
    load_spec_cached(spec_file, store)
    file = _cached_file(store)
    file.write_bytes(junk)
    assert load_spec_cached(spec_file, store) == seed_spec()
    assert holds(file, yaml.safe_load(spec_file.read_text()))


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_a_file_others_can_write_is_ignored(spec_file: Path, store: Path, mode: int) -> None:
    load_spec_cached(spec_file, store)
    file = _cached_file(store)
    _plant_other(file)
    file.chmod(mode)
    assert load_spec_cached(spec_file, store) == seed_spec()


@pytest.mark.parametrize("mode", [0o720, 0o702, 0o777])
def test_a_directory_others_can_write_is_ignored(spec_file: Path, store: Path,
                                                 mode: int) -> None:
    load_spec_cached(spec_file, store)
    _plant_other(_cached_file(store))
    store.chmod(mode)
    assert load_spec_cached(spec_file, store) == seed_spec()
    assert json.loads(_cached_file(store).read_text())["document"] == OTHER  # not written


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_file_of_another_owner_is_ignored(spec_file: Path, store: Path) -> None:
    load_spec_cached(spec_file, store)
    file = _cached_file(store)
    _plant_other(file)
    os.chown(file, 65534, 65534)
    assert load_spec_cached(spec_file, store) == seed_spec()


def test_a_symlinked_cache_file_is_ignored(spec_file: Path, store: Path, tmp_path: Path) -> None:
    load_spec_cached(spec_file, store)
    file = _cached_file(store)
    _plant_other(file)
    target = tmp_path / "elsewhere.json"
    file.rename(target)
    file.symlink_to(target)
    assert load_spec_cached(spec_file, store) == seed_spec()


def test_errors_are_the_same_and_invalid_specs_are_not_cached(tmp_path: Path,
                                                              store: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                   "destinations: [{cidr: 10.0.0.1/8}]\n")
    with pytest.raises(SpecError) as plain:
        load_spec(bad)
    with pytest.raises(SpecError) as cached:
        load_spec_cached(bad, store)
    assert str(cached.value) == str(plain.value)
    assert not store.exists() or not any(store.iterdir())


def test_a_document_json_cannot_hold_is_not_cached(store: Path) -> None:
    # An int key or a date would come back from JSON as something else: such a
    # document is read from the YAML each time instead.
    file = store / "x.json"
    spec_cache._write_cached(file, "k", {1: "x"})
    spec_cache._write_cached(file, "k", {"when": datetime.date(2026, 1, 1)})
    assert not file.exists()
    spec_cache._write_cached(file, "k", {"a": [1, True, None, "x"]})
    assert spec_cache._read_cached(file, "k") == ({"a": [1, True, None, "x"]}, True, None)
    assert spec_cache._read_cached(file, "other key") == (None, False, None)


def test_the_directory_follows_the_environment(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.delenv("K3SNET_SPEC_CACHE", raising=False)
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    assert cache_directory() == tmp_path / "spec-cache"
    monkeypatch.setenv("K3SNET_SPEC_CACHE", "off")
    assert cache_directory() is None


def test_a_relative_state_directory_keeps_no_cache_in_the_working_directory(
        spec_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The backends refuse a relative $K3SNET_STATE_DIR; `k3snet validate`, which makes
    # none, kept its cache under it: st/spec-cache/ made wherever it ran.
    monkeypatch.delenv("K3SNET_SPEC_CACHE", raising=False)
    monkeypatch.setenv("K3SNET_STATE_DIR", "st")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert cache_directory() is None
    assert main(["validate", "-f", str(spec_file)]) == 0
    assert list(work.iterdir()) == []


def test_the_cli_uses_the_cache(spec_file: Path, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("K3SNET_SPEC_CACHE", raising=False)
    assert main(["validate", "-f", str(spec_file)]) == 0
    file = _cached_file(tmp_path / "state" / "spec-cache")
    _plant_other(file)
    assert main(["render", "nftables", "-f", str(spec_file)]) == 0
    assert "203.0.113.0/24" in capsys.readouterr().out


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(spec=ks.specs())
def test_the_plan_is_the_same_with_and_without_the_cache(spec: Spec, tmp_path: Path) -> None:
    example = _example_directory(tmp_path)
    path = _write(example / "drawn.yaml", spec)
    cache = example / "drawn-cache"
    plain = load_spec(path)
    want = plan(State(), compile_spec(plain)).render()
    for _ in range(2):  # a miss that writes the cache, then a hit that reads it
        cached = load_spec_cached(path, cache)
        assert cached == plain
        assert plan(State(), compile_spec(cached)).render() == want


def test_the_cache_keeps_a_bounded_number_of_specs(tmp_path: Path, store: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spec_cache, "MAX_ENTRIES", 3)
    paths = [_write(tmp_path / f"s{i}.yaml", seed_spec()) for i in range(5)]
    for i, path in enumerate(paths):
        load_spec_cached(path, store)
        # Strictly increasing ages, whatever the clock's grain: the file just written
        # is the only one with a real mtime.
        for entry in store.iterdir():
            if entry.stat().st_mtime > 10:
                os.utime(entry, (i + 1, i + 1))
    kept = {e.name for e in store.iterdir()}
    assert len(kept) == 3
    load_spec_cached(paths[0], store)  # the oldest went; it is parsed and kept again
    assert len(list(store.iterdir())) == 3
    assert {e.name for e in store.iterdir()} != kept


# A readable document the checks refuse: the destination overlaps the pod CIDR.
UNSOUND = {"apiVersion": "k3snet.io/v1alpha1", "kind": "EgressSpec",
           "destinations": [{"cidr": "10.42.7.0/24", "gateway": "192.168.1.9"}]}


def _plant(file: Path, document: dict[str, Any], **fields: Any) -> None:
    """Make the entry hold ``document`` whole (the seed's destination rows dropped)."""
    entry = json.loads(file.read_text())
    entry.pop("destinations", None)
    entry.update(document=document, **fields)
    file.write_text(json.dumps(entry))


@pytest.mark.parametrize("sound", [True, False, None, 1, "yes"])
def test_the_checks_are_skipped_only_on_the_caches_word(spec_file: Path, store: Path,
                                                         sound: object) -> None:
    # The entry's "sound" (written only for a document that made a sound spec) is the
    # only thing that lets a hit skip the checks (validate): with anything but
    # `true` there, the planted unsound document is refused as the file would be.
    load_spec_cached(spec_file, store)
    assert json.loads(_cached_file(store).read_text())["sound"] is True
    _plant(_cached_file(store), UNSOUND, sound=sound)
    if sound is True:
        (planted,) = load_spec_cached(spec_file, store).destinations
        assert str(planted.cidr) == "10.42.7.0/24"
    else:
        with pytest.raises(SpecError, match="overlaps the cluster pod CIDR"):
            load_spec_cached(spec_file, store)


def test_a_hit_is_the_same_spec_and_is_known_sound(spec_file: Path, store: Path) -> None:
    load_spec_cached(spec_file, store)
    hit = load_spec_cached(spec_file, store)
    assert validate_module._sound is not None
    assert validate_module._sound() is hit
    assert hit == load_spec(spec_file)


def test_a_reading_problem_runs_every_check_even_on_the_caches_word(
        spec_file: Path, store: Path) -> None:
    load_spec_cached(spec_file, store)
    broken = {**UNSOUND, "destinations": [*UNSOUND["destinations"], {"cidr": "nonsense"}]}
    _plant(_cached_file(store), broken, sound=True)
    with pytest.raises(SpecError) as caught:
        load_spec_cached(spec_file, store)
    paths = {p.path for p in caught.value.problems}
    assert paths == {"destinations[0].cidr", "destinations[1].cidr"}


def test_a_spec_importing_an_ip_masq_agent_file_is_checked_on_every_hit(
        tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The imported file is read anew on every load and may have changed: such a document
    # is cached as not sound on its own, so a hit of it runs every check.
    agent = tmp_path / "ip-masq-agent"
    agent.write_text("nonMasqueradeCIDRs: [10.0.0.0/8]\n")
    path = tmp_path / "spec.yaml"
    path.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                    f"masquerade: {{ipMasqAgentConfig: {agent}}}\n")
    load_spec_cached(path, store)
    assert json.loads(_cached_file(store).read_text())["sound"] is False
    def parsed_again(*_: object) -> None:
        raise AssertionError("the YAML was parsed again: not a hit")

    monkeypatch.setattr(spec_cache, "load_mapping", parsed_again)
    agent.write_text("nonMasqueradeCIDRs: [10.0.0.0/8, 10.0.0.0/8]\n")
    with pytest.raises(SpecError, match=r"duplicate entry 10\.0\.0\.0/8"):
        load_spec_cached(path, store)


def test_other_code_recomputes(spec_file: Path, store: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    # A development install changes the code that judged a document without changing
    # the version: the key covers each module's size and mtime.
    code = tmp_path / "code"
    code.mkdir()
    (code / "validate.py").write_text("# v1\n")
    monkeypatch.setattr(spec_cache, "_CODE", (code,))
    load_spec_cached(spec_file, store)
    _plant_other(_cached_file(store))
    assert load_spec_cached(spec_file, store) == Spec.from_dict(OTHER)  # same code: a hit
    os.utime(code / "validate.py", ns=(1, 1))
    assert load_spec_cached(spec_file, store) == seed_spec()
    _plant_other(_cached_file(store))
    (code / "validate.py").write_text("# v2, same mtime\n")
    os.utime(code / "validate.py", ns=(1, 1))
    assert load_spec_cached(spec_file, store) == seed_spec()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None,
          max_examples=30)
@given(spec=ks.specs())
def test_the_head_of_a_hit_is_the_spec_without_destinations_and_the_document_read_once(
        spec: Spec, tmp_path: Path) -> None:
    example = _example_directory(tmp_path)
    path = _write(example / "drawn.yaml", spec)
    cache = example / "drawn-cache"
    plain = load_spec(path)
    assert spec_cache.load_spec_head_cached(path, cache) is None  # a miss: no head
    load_spec_cached(path, cache)
    reads = []
    real = spec_cache._read_cached

    def counted(*args: Any) -> Any:
        reads.append(args)
        return real(*args)

    spec_cache._read_cached = counted  # type: ignore[assignment]
    try:
        head = spec_cache.load_spec_head_cached(path, cache)
        whole = load_spec_cached(path, cache)
    finally:
        spec_cache._read_cached = real
    assert len(reads) == 1  # the whole spec took the document the head read
    assert whole == plain
    assert head == Spec.from_dict({**plain.to_dict(), "destinations": []})
    assert (head.backends, head.backend_options, head.cni) == (
        plain.backends, plain.backend_options, plain.cni)


def test_a_spec_changed_after_its_head_was_read_is_read_whole_again(
        spec_file: Path, store: Path) -> None:
    load_spec_cached(spec_file, store)
    assert spec_cache.load_spec_head_cached(spec_file, store) is not None
    spec_file.write_text(yaml.safe_dump(OTHER))  # other bytes: the document handed is not it
    assert load_spec_cached(spec_file, store) == Spec.from_dict(OTHER)


def test_a_head_that_is_no_spec_on_its_own_is_none(tmp_path: Path, store: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(OTHER))
    load_spec_cached(path, store)
    file = _cached_file(store)
    entry = json.loads(file.read_text())
    entry["document"] = {**OTHER, "backends": "not a list"}  # as a planted document would
    file.write_text(json.dumps(entry))
    assert spec_cache.load_spec_head_cached(path, store) is None
    with pytest.raises(SpecError, match="backends"):
        load_spec_cached(path, store)  # and the whole says why, as without the head


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(spec=ks.specs())
def test_destinations_kept_as_rows_read_back_as_the_same_destinations(spec: Spec) -> None:
    rows = spec_cache._rows(spec.destinations)
    if rows is not None:  # None: some destination would not come back equal, none are kept
        assert spec_cache._destinations(json.loads(json.dumps(rows))) == spec.destinations


def test_a_hit_takes_the_destinations_from_their_rows(spec_file: Path, store: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    load_spec_cached(spec_file, store)
    entry = json.loads(_cached_file(store).read_text())
    assert "destinations" not in entry["document"]
    assert len(entry["destinations"]) == len(seed_spec().destinations)
    read: list[Any] = []
    real = spec_from_document  # what the cache module imported, patched below

    def recorded(document: Any, **kwargs: Any) -> Spec:
        read.append(document)
        return real(document, **kwargs)

    monkeypatch.setattr(spec_cache, "spec_from_document", recorded)
    hit = load_spec_cached(spec_file, store)
    assert validate_module._sound is not None
    assert validate_module._sound() is hit
    assert [("destinations" in d) for d in read] == [False]  # the field table read no row
    assert hit == load_spec(spec_file)


@pytest.mark.parametrize(("index", "value"), [
    (0, 5),  # no such IP version
    (1, "10.0.0.0"),  # an address as text
    (2, 33),  # a prefix too long for IPv4
    (3, [4, "x"]),
    (4, "eth0 ; reboot"),  # an interface name no kernel takes
    (5, "main"),  # a table by name
    (6, 1.5),
    (7, 1),  # not a boolean
    (3, [4, True]),  # a boolean for an address
    (9, [[4, 1, 40]]),  # an exclusion that is no network
    (9, [[4, "10.0.0.8", 29]]),
    (9, "nonsense"),
])
def test_rows_that_make_no_destination_are_read_from_the_spec_file_again(
        spec_file: Path, store: Path, index: int, value: Any) -> None:
    load_spec_cached(spec_file, store)
    file = _cached_file(store)
    entry = json.loads(file.read_text())
    entry["destinations"][0][index] = value
    file.write_text(json.dumps(entry))
    assert load_spec_cached(spec_file, store) == seed_spec()
    assert holds(file, yaml.safe_load(spec_file.read_text()))  # and written again


@pytest.mark.parametrize("sound", [False, None, "yes"])
def test_rows_with_a_document_not_found_sound_are_no_hit(spec_file: Path, store: Path,
                                                          sound: object) -> None:
    # The document kept beside rows has no destinations of its own: read without its
    # rows, it would be a spec that wants none (an apply of it removes every route).
    load_spec_cached(spec_file, store)
    file = _cached_file(store)
    entry = json.loads(file.read_text())
    assert "destinations" in entry
    entry["sound"] = sound
    file.write_text(json.dumps(entry))
    assert load_spec_cached(spec_file, store) == seed_spec()


def test_a_miss_prunes_the_temporary_file_a_killed_writer_left(spec_file: Path,
                                                               store: Path) -> None:
    store.mkdir(parents=True, mode=0o700)
    left = store / ".spec-0123456789abcdef.tmp"  # write_atomic's name, never renamed
    left.write_text("{")
    os.utime(left, (1, 1))
    load_spec_cached(spec_file, store)
    assert not left.exists()
    assert len(list(store.iterdir())) == 1


def test_the_key_covers_every_module_that_reads_a_spec_document_and_pyyaml() -> None:
    """A cached document is the parse of a spec the code of then judged sound: the YAML and
    JSON text checks (``k3snet._yamltext``, ``k3snet._gojson``) and PyYAML read it too, and
    a development install or an upgrade of PyYAML changes them without changing the
    version."""
    from k3snet.spec import load, source  # noqa: PLC0415

    used = {getattr(value, "__module__", None) for module in (source, load, spec_cache)
            for value in vars(module).values()}
    files = [Path(str(sys.modules[name].__file__)) for name in used
             if name is not None and name.split(".")[0] == "k3snet"]
    assert {Path(source.__file__).parent.parent / "_yamltext.py",
            Path(source.__file__).parent.parent / "_gojson.py"} <= set(files)
    code = {path.resolve() for path in spec_cache._CODE}
    assert [f for f in files if f.parent.resolve() not in code] == []
    assert Path(str(yaml.__file__)).parent.resolve() in code
