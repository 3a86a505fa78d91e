"""``destroy`` of a disruptive change: the refusal names three ways to allow it
(:data:`~k3snet.backends.kit.ALLOW_DISRUPTIVE`), and each of them works for
``destroy`` too: ``cni.allowDisruptive: true`` in the spec (``-f``),
``--allow-disruptive`` on the CLI, ``allow_disruptive=True`` in the library.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet import MemoryBackend, State, Sysctl, destroy, register_backend
from k3snet.backends.base import ApplyResult
from k3snet.backends.kit import ALLOW_DISRUPTIVE, disruptive_problems
from k3snet.backends.registry import unregister_backend
from k3snet.cli import build_parser, main
from k3snet.errors import PlanError
from k3snet.planner import Change, Plan

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
_OWNED = Sysctl("net.ipv4.conf.all.rp_filter", "2")


class Cni(MemoryBackend):
    """A CNI-like backend: removing what it owns disrupts pods, refused unless allowed
    (as the calico backend refuses, through the kit)."""

    made: list[Cni] = []  # noqa: RUF012 - every instance, for the test to look at

    def __init__(self, *, allow_disruptive: bool = False) -> None:
        super().__init__(State(owned=[_OWNED]))
        self.allow_disruptive = allow_disruptive
        Cni.made.append(self)

    def disruptive(self, change: Change) -> str | None:
        return "it re-addresses every pod" if change.action == "delete" else None

    def apply(self, plan: Plan) -> ApplyResult:
        problems = disruptive_problems(self, plan)
        if problems:
            raise PlanError("; ".join(problems))
        return super().apply(plan)


@pytest.fixture
def cni() -> Iterator[list[Cni]]:
    Cni.made = []
    register_backend("memory-cni-destroy", Cni)
    try:
        yield Cni.made
    finally:
        unregister_backend("memory-cni-destroy")


_DESTROY = ["destroy", "--backend", "memory-cni-destroy", "--auto-approve"]


def test_destroy_refuses_a_disruptive_removal_naming_the_ways_to_allow_it(
        cni: list[Cni], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_DESTROY) == 1
    captured = capsys.readouterr()
    assert ALLOW_DISRUPTIVE in captured.err
    assert (f"!! disruptive: - sysctl net.ipv4.conf.all.rp_filter = 2: it re-addresses "
            f"every pod; destroy refuses it unless allowed ({ALLOW_DISRUPTIVE})"
            in captured.out)
    assert cni[-1].observe().owned == {_OWNED}


def test_destroy_allow_disruptive_on_the_cli(cni: list[Cni],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert build_parser().parse_args(["destroy", "--allow-disruptive"]).allow_disruptive
    assert main([*_DESTROY, "--allow-disruptive"]) == 0
    assert "re-addresses every pod; allowed" in capsys.readouterr().out
    assert not cni[-1].observe().owned


def test_destroy_with_a_spec_that_allows_disruptive_changes(
        cni: list[Cni], tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SEED.read_text() + "cni:\n  allowDisruptive: true\n")
    assert main([*_DESTROY, "-f", str(spec)]) == 0
    assert not cni[-1].observe().owned


def test_destroy_allow_disruptive_in_the_library(cni: list[Cni]) -> None:
    backend = Cni()
    with pytest.raises(PlanError, match="allow_disruptive=True in the library"):
        destroy(backend)
    assert backend.observe().owned == {_OWNED}
    assert not backend.allow_disruptive
    done = destroy(backend, allow_disruptive=True)
    assert done.result is not None
    assert not backend.observe().owned
    assert not backend.allow_disruptive  # allowed for that call only
