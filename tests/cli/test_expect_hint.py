"""`k3snet plan` and `apply` hand the backends the objects they expect before reading them,
and let them start reading before the spec is compiled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from k3snet import MemoryBackend, State, cli, register_backend
from k3snet.backends.registry import unregister_backend
from k3snet.cli import main
from k3snet.converge import compile_for

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"


class _Recording(MemoryBackend):
    """Records the hint and the reads, in order."""

    calls: list[str] = []  # noqa: RUF012 - one list for the test that reads it
    hinted: list[State] = []  # noqa: RUF012

    def prefetch(self) -> None:
        self.calls.append("prefetch")

    def expect(self, state: State) -> None:
        self.calls.append("expect")
        self.hinted.append(state)

    def observe(self) -> State:
        self.calls.append("observe")
        return super().observe()


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_plan_and_apply_hand_the_expected_objects_over_before_reading(
        command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # A cold `k3snet plan` read (and with iptables parsed) every rule of k3snet's without
    # the hint `converge` gives `apply`: the readers take expected objects unparsed.
    _Recording.calls.clear()
    _Recording.hinted.clear()
    def compiling(*args: Any, **kwargs: Any) -> State:
        _Recording.calls.append("compile")
        return compile_for(*args, **kwargs)

    monkeypatch.setattr(cli, "compile_for", compiling)
    register_backend("memory-recording", _Recording)
    try:
        main([command, "-f", str(SEED), "--no-facts", "--backend", "memory-recording:nat"])
    finally:
        unregister_backend("memory-recording")
    # The backends that list in the background (nftables) start before the compile.
    assert _Recording.calls[:4] == ["prefetch", "compile", "expect", "observe"]
    (hint, *_) = _Recording.hinted
    assert hint.owned
    assert {o.kind for o in hint.owned} == {"nat"}
    assert "+ masquerade 10.42.0.0/16 -> 192.168.2.0/24 oif eth0" in capsys.readouterr().out
