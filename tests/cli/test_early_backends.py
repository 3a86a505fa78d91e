"""`k3snet plan` and `apply` make their backends before the spec (on a warm spec cache,
its destinations) is read, so that they start reading the node meanwhile (``prefetch``).

Nothing else may change: the backends are those the whole spec asks for (made
again otherwise), the spec's problems are said first, and backends made early
are closed whatever happens.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k3snet import K3snetError, MemoryBackend, cli, register_backend
from k3snet.backends.registry import unregister_backend
from k3snet.cli import main
from k3snet.spec import Spec
from k3snet.spec import cache as spec_cache

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"


class _Recording(MemoryBackend):
    """Records when it is made, told to prefetch and closed, in order."""

    calls: list[str] = []  # noqa: RUF012 - one list for the test that reads it
    made: list[_Recording] = []  # noqa: RUF012

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.closed = False
        self.calls.append("make")
        self.made.append(self)

    def prefetch(self) -> None:
        self.calls.append("prefetch")

    def close(self) -> None:
        self.closed = True
        self.calls.append("close")
        super().close()


@pytest.fixture
def recording(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The recording backend registered, a spec cache of its own, and the spec's
    whole load recorded as "spec"."""
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("K3SNET_SPEC_CACHE", raising=False)
    _Recording.calls = []
    _Recording.made = []
    load = cli._spec

    def loading(args: Any) -> Spec:
        _Recording.calls.append("spec")
        return load(args)

    monkeypatch.setattr(cli, "_spec", loading)
    register_backend("memory-recording", _Recording)
    try:
        yield _Recording.calls
    finally:
        unregister_backend("memory-recording")


ARGS = ["-f", str(SEED), "--no-facts", "--backend", "memory-recording:nat"]


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_the_backends_are_made_and_reading_before_the_spec_is_read(
        recording: list[str], command: str, capsys: pytest.CaptureFixture[str]) -> None:
    # A miss (the YAML parsed): made from the command line's --backend alone; a hit:
    # from the cached spec without its destinations. Each made once, and kept.
    main([command, *ARGS])
    assert recording == ["make", "prefetch", "spec", "close"]
    cold = capsys.readouterr().out
    recording.clear()
    main([command, *ARGS])
    assert recording == ["make", "prefetch", "spec", "close"]
    assert capsys.readouterr().out == cold
    assert "+ masquerade 10.42.0.0/16 -> 192.168.2.0/24 oif eth0" in cold


def test_backends_the_spec_names_are_made_after_it_on_a_miss_before_it_on_a_hit(
        recording: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Without --backend, only the spec says which backends: on a miss nothing is made
    # before it is read (no guess), on a hit they are made from its head.
    spec = tmp_path / "spec.yaml"
    spec.write_text(SEED.read_text() + "backends: [memory-recording]\n")
    argv = ["plan", "-f", str(spec), "--no-facts"]
    main(argv)
    assert recording == ["spec", "make", "prefetch", "close"]
    cold = capsys.readouterr().out
    recording.clear()
    main(argv)
    assert recording == ["make", "prefetch", "spec", "close"]
    assert capsys.readouterr().out == cold


def test_a_guess_from_the_command_line_is_made_again_when_the_spec_gives_options(
        recording: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SEED.read_text()
                    + "backends:\n  memory-recording:\n    capabilities: [nat, route]\n")
    main(["plan", "-f", str(spec), "--no-facts", "--backend", "memory-recording:nat"])
    # A miss: made from --backend, then again with the spec's options.
    assert recording == ["make", "prefetch", "spec", "close", "make", "prefetch", "close"]
    assert _Recording.made[-1].capabilities == {"nat", "route"}
    assert "+ masquerade 10.42.0.0/16 -> 192.168.2.0/24" in capsys.readouterr().out


def test_backends_made_early_are_made_again_when_the_whole_spec_asks_for_others(
        recording: list[str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    main(["plan", *ARGS])
    want = capsys.readouterr().out
    head = spec_cache.load_spec_head_cached
    # The head says other options than the whole spec will (as a spec file replaced
    # between the two reads would).
    other = {"memory-recording": {"capabilities": ["nat", "route"]}}
    def head_asking_others(path: str | Path) -> Spec:
        spec = head(path)
        assert spec is not None  # a hit: the first plan cached the spec
        return Spec.from_dict({**spec.to_dict(), "backends": other})

    monkeypatch.setattr(spec_cache, "load_spec_head_cached", head_asking_others)
    recording.clear()
    assert main(["plan", *ARGS]) == 2
    assert recording == ["make", "prefetch", "spec", "close", "make", "prefetch", "close"]
    early, kept = _Recording.made[-2:]
    assert early.capabilities == {"nat", "route"}
    assert early.closed
    assert kept.capabilities != early.capabilities
    assert capsys.readouterr().out == want


def test_the_spec_s_problem_comes_first_and_the_early_backends_are_closed(
        recording: list[str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    main(["plan", *ARGS])
    capsys.readouterr()

    def broken(args: Any) -> Spec:
        recording.append("spec")
        return Spec.from_dict({"destinations": [{"cidr": "nonsense"}]})

    monkeypatch.setattr(cli, "_spec", broken)
    recording.clear()
    assert main(["plan", *ARGS]) == 1
    assert recording == ["make", "prefetch", "spec", "close"]
    assert "destinations[0].cidr" in capsys.readouterr().err


def test_a_backend_that_cannot_be_made_says_so_after_the_spec_as_without_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("K3SNET_SPEC_CACHE", raising=False)
    argv = ["plan", "-f", str(SEED), "--no-facts", "--backend", "nftables",
            "--netns", "k3snet-no-such-namespace"]
    said = []
    for _ in range(2):  # a miss (the usual order), then a hit (the early way first)
        assert main(argv) == 1
        said.append(capsys.readouterr().err)
    assert said[0] == said[1]
    assert "k3snet-no-such-namespace" in said[0]



def test_backends_made_before_one_that_fails_are_closed(
        recording: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # A group that cannot be made (here: kinds its backend does not have) closes the
    # backends already made; the early way goes on, where the process does not end.
    with pytest.raises(K3snetError):
        cli._group([("memory-recording", None, {}),
                    ("memory-recording", ["nat"], {"capabilities": ["route"]})])
    assert [b.closed for b in _Recording.made] == [True, True]


class _NoPrefetch(_Recording):
    """A backend that cannot start a read early."""

    prefetch = None  # type: ignore[assignment]


def test_no_guess_is_made_for_backends_that_cannot_read_early(
        recording: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # A guess may be thrown away (the spec gives options): it is made only where it
    # can pay (a CNI or cluster backend is not built twice for nothing).
    register_backend("memory-plain", _NoPrefetch)
    try:
        main(["plan", "-f", str(SEED), "--no-facts", "--backend", "memory-plain:nat"])
    finally:
        unregister_backend("memory-plain")
    assert recording == ["spec", "make", "close"]  # a miss: the usual order
    assert "+ masquerade 10.42.0.0/16 -> 192.168.2.0/24 oif eth0" in capsys.readouterr().out
