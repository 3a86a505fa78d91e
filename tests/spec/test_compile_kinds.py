"""``compile(spec, kinds=K)`` is ``compile(spec).only(K)``, built without the other kinds."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from k3snet import Spec, SpecError
from k3snet import compile as compile_spec
from k3snet.errors import Problem
from k3snet.model import known_kinds
from k3snet.spec import Cluster, NodeFacts, seed_spec
from k3snet.testing import strategies as ks


@given(spec=ks.specs(), kinds=st.sets(st.sampled_from([*known_kinds(), "unknown"])))
def test_kinds_give_the_same_state_as_only(spec: Spec, kinds: set[str]) -> None:
    try:
        everything = compile_spec(spec)
    except SpecError as exc:
        refused: tuple[Problem, ...] | None = exc.problems
    else:
        refused = None
    if refused is not None:
        # The same spec is refused whatever the kinds, with the same problems.
        with pytest.raises(SpecError) as again:
            compile_spec(spec, kinds=kinds)
        assert again.value.problems == refused
        return
    part = compile_spec(spec, kinds=kinds)
    assert part == everything.only(kinds)
    assert part.to_json() == everything.only(kinds).to_json()


def test_one_kind_builds_only_that_kind() -> None:
    assert {o.kind for o in compile_spec(seed_spec(), kinds={"route"})} == {"route"}
    assert {o.kind for o in compile_spec(seed_spec(), kinds={"nat"})} == {"nat"}
    assert len(compile_spec(seed_spec(), kinds=())) == 0


def test_fact_problems_are_checked_whatever_the_kinds() -> None:
    facts = NodeFacts(interfaces={"eth1": ["10.9.0.5/24"]})
    for kinds in (None, {"nat"}, set()):
        with pytest.raises(SpecError) as refused:
            compile_spec(seed_spec(), facts, kinds=kinds)
        assert any("eth0" in p.message for p in refused.value.problems)


def test_a_sound_spec_is_checked_once_and_an_unsound_one_every_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    checks = importlib.import_module("k3snet.spec.validate")  # the package re-exports the name

    calls: list[Spec] = []
    real: Callable[[Spec], list[Problem]] = checks._validate

    def counted(spec: Spec) -> list[Any]:
        calls.append(spec)
        return real(spec)

    monkeypatch.setattr(checks, "_validate", counted)
    spec = seed_spec()
    assert checks.validate(spec) == []
    assert checks.validate(spec) == []
    assert len(calls) == 1
    assert checks.validate(seed_spec()) == []  # an equal spec, another object: checked
    assert len(calls) == 2
    bad = Spec(cluster=Cluster(pod_cidrs=["10.0.0.0/8"], service_cidrs=["10.1.0.0/16"]))
    assert checks.validate(bad)
    assert checks.validate(bad)
    assert len(calls) == 4
