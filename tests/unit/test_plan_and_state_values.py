"""Plans and states as values: their JSON forms, defaults, filters and renderings.

Written against mutants the mutation run (``make mutation``) found alive: each
assertion here fails for one of them.
"""

from __future__ import annotations

import pytest

from k3snet import Change, ModelError, Note, Plan, State, plan
from k3snet.model import ForwardRule, MasqueradeRule, Route, Sysctl

_ROUTE = Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0")
_FOREIGN_ROUTE = Route("192.168.3.0/24", gateway="192.168.1.1", device="eth0", protocol=4)
_NAT = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")
_SYSCTL = Sysctl("net.ipv4.ip_forward", 1)


def test_objects_refuse_order_comparisons_with_other_types() -> None:
    for compare in (
        lambda: _ROUTE < 1, lambda: _ROUTE <= 1, lambda: _ROUTE > 1, lambda: _ROUTE >= 1,
    ):
        with pytest.raises(TypeError):
            compare()
    assert _ROUTE != 1
    assert not _ROUTE == 1  # noqa: SIM201 - __eq__ itself is under test


def test_forward_rule_describes_its_interfaces() -> None:
    rule = ForwardRule("10.42.0.0/16", "192.168.2.0/24", in_interface="cni0", out_interface="eth0")
    assert rule.describe() == (
        "forward accept 10.42.0.0/16 -> 192.168.2.0/24 iif cni0 oif eth0 (+ replies)"
    )


def test_state_merge_and_with_owned_keep_foreign_objects() -> None:
    a = State(owned=[_ROUTE], foreign=[_FOREIGN_ROUTE])
    b = State(owned=[_SYSCTL], foreign=[Sysctl("net.ipv4.conf.all.rp_filter", 2)])
    merged = a.merge(b)
    assert merged.owned == {_ROUTE, _SYSCTL}
    assert merged.foreign == a.foreign | b.foreign
    moved = a.with_owned([_NAT])
    assert moved.owned == {_NAT}
    assert moved.foreign == a.foreign


def test_state_and_plan_read_their_json_forms_with_parts_left_out() -> None:
    assert State.from_dict({}) == State()
    assert State.from_dict({"owned": [_ROUTE.to_dict()]}) == State(owned=[_ROUTE])
    assert State.from_dict({"foreign": [_ROUTE.to_dict()]}) == State(foreign=[_ROUTE])
    assert Plan.from_dict({}) == Plan()
    one = Plan(changes=[Change.add(_ROUTE)])
    assert Plan.from_dict({"changes": one.to_dict()["changes"]}) == one
    noted = Plan(notes=[Note("met", _ROUTE, _ROUTE)])
    assert Plan.from_dict({"notes": noted.to_dict()["notes"]}) == noted


def test_plan_refuses_another_format_and_text_that_is_not_json() -> None:
    with pytest.raises(ModelError, match="unsupported plan format 2"):
        Plan.from_dict({"format": 2})
    assert Plan.from_dict({"format": 1}) == Plan()
    with pytest.raises(ModelError, match="not a plan: "):
        Plan.from_json("{")


def test_plan_only_keeps_the_changes_and_notes_of_the_given_kinds() -> None:
    p = Plan(changes=[Change.add(_ROUTE), Change.add(_NAT)],
             notes=[Note("met", _SYSCTL, _SYSCTL), Note("conflict", _ROUTE, _FOREIGN_ROUTE)])
    routes = p.only(["route"])
    assert routes.changes == (Change.add(_ROUTE),)
    assert routes.notes == (Note("conflict", _ROUTE, _FOREIGN_ROUTE),)
    assert p.only(["sysctl"]).notes == (Note("met", _SYSCTL, _SYSCTL),)


def test_an_empty_plan_says_the_system_matches() -> None:
    assert plan(State(), State()).render() == "No changes. The system matches the spec."
