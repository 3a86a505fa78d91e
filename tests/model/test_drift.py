"""Drift objects: owned findings that every plan deletes."""

from __future__ import annotations

import pytest

from k3snet import ModelError, Plan, State, plan
from k3snet.backends.memory import MemoryBackend
from k3snet.model import Drift, ForwardDrift, MasqueradeRule, NatDrift, object_from_dict

POLICY = Drift.of("forward", backend="nftables", where="inet k3snet forward", what="policy drop")


def test_drift_of_kind_picks_the_class_whose_backend_repairs_it() -> None:
    assert isinstance(POLICY, ForwardDrift)
    assert isinstance(Drift.of("nat", backend="iptables", where="IPv4 nat", what="x"), NatDrift)
    with pytest.raises(ModelError, match="nat or forward"):
        Drift.of("route", backend="netlink", where="main", what="x")


def test_drift_round_trips_through_its_dict_form() -> None:
    assert object_from_dict(POLICY.to_dict()) == POLICY


def test_drift_text_is_one_bounded_line() -> None:
    long = Drift.of("nat", backend="nftables", where="t", what="a\nb " + "x" * 2000)
    assert "\n" not in long.what
    assert len(long.what) == 512
    with pytest.raises(ModelError):
        Drift.of("nat", backend="nftables", where="", what="x")


def test_every_plan_deletes_drift_and_keeps_the_rest() -> None:
    rule = MasqueradeRule("10.42.0.0/16")
    observed = State(owned=[rule, POLICY])
    p = plan(observed, State(owned=[rule]))
    assert [(c.action, c.subject) for c in p.changes] == [("delete", POLICY)]
    assert "drift in nftables inet k3snet forward: policy drop" in p.render()


def test_drift_is_deleted_before_other_changes() -> None:
    rule = MasqueradeRule("10.42.0.0/16")
    p = plan(State(owned=[POLICY]), State(owned=[rule]))
    assert [c.subject for c in p.changes] == [POLICY, rule]


def test_the_memory_backend_repairs_drift_like_any_owned_object() -> None:
    backend = MemoryBackend(State(owned=[POLICY]))
    backend.apply(plan(backend.observe(), State()))
    assert backend.observe() == State()
    assert Plan.from_json(plan(State(owned=[POLICY]), State()).to_json()).changes[0].subject == \
        POLICY


def test_drift_text_of_exactly_the_bound_is_kept_and_one_more_is_cut() -> None:
    exact = "x" * 512
    assert Drift.of("nat", backend="nftables", where="t", what=exact).what == exact
    cut = Drift.of("nat", backend="nftables", where="t", what=exact + "y").what
    assert cut == "x" * 509 + "..."


def test_drift_messages_say_what_to_give() -> None:
    with pytest.raises(ModelError) as bad:
        Drift.of("nat", backend="nftables", where="t", what=7)  # type: ignore[arg-type]
    assert str(bad.value) == "drift fields are non-empty strings, got 7"
    with pytest.raises(ModelError) as kindless:
        Drift("nftables", "t", "x")
    assert str(kindless.value) == "use Drift.of(kind, ...) or NatDrift / ForwardDrift"
