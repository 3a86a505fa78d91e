"""Plans and states as values: their JSON forms, defaults, filters and renderings.

Written against mutants the mutation run (``make mutation``) found alive: each
assertion here fails for one of them.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k3snet import Change, ModelError, Note, Plan, PlanError, State, plan
from k3snet.model import (
    OBJECT_TYPES,
    ForwardBlock,
    ForwardRule,
    MasqueradeRule,
    NatBlock,
    NetObject,
    Route,
    RouteBlock,
    SnatRule,
    Sysctl,
    object_from_dict,
    register_object_type,
)
from k3snet.model.cni import CalicoPools
from k3snet.model.drift import ForwardDrift, NatDrift
from k3snet.model.state import STATE_FORMAT
from tests.examples import examples

_ROUTE = Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0")
_FOREIGN_ROUTE = Route("192.168.3.0/24", gateway="192.168.1.1", device="eth0", protocol=4)
_NAT = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")
_SYSCTL = Sysctl("net.ipv4.ip_forward", 1)


def test_objects_refuse_order_comparisons_with_other_types() -> None:
    compares: list[Callable[[], object]] = [
        lambda: _ROUTE < 1,  # type: ignore[operator]
        lambda: _ROUTE <= 1,  # type: ignore[operator]
        lambda: _ROUTE > 1,  # type: ignore[operator]
        lambda: _ROUTE >= 1,  # type: ignore[operator]
    ]
    for compare in compares:
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


def test_a_plan_or_state_text_nested_too_deep_for_json_is_a_model_error() -> None:
    # Nested deeper than Python's JSON parser goes: a RecursionError, not the documented
    # ModelError (MemoryBackend.load and from_dump read a dump with it).
    deep = '{"changes": ' + "[" * 100000 + "]" * 100000 + "}"
    with pytest.raises(ModelError, match="not a plan: maximum recursion depth"):
        Plan.from_json(deep)
    with pytest.raises(ModelError, match=r"not a k3snet state \(JSON\): maximum recursion"):
        State.from_json(deep)


def test_plan_only_keeps_the_changes_and_notes_of_the_given_kinds() -> None:
    p = Plan(changes=[Change.add(_ROUTE), Change.add(_NAT)],
             notes=[Note("met", _SYSCTL, _SYSCTL), Note("conflict", _ROUTE, _FOREIGN_ROUTE)])
    routes = p.only(["route"])
    assert routes.changes == (Change.add(_ROUTE),)
    assert routes.notes == (Note("conflict", _ROUTE, _FOREIGN_ROUTE),)
    assert p.only(["sysctl"]).notes == (Note("met", _SYSCTL, _SYSCTL),)


def test_an_empty_plan_says_the_system_matches() -> None:
    assert plan(State(), State()).render() == "No changes. The system matches the spec."


def test_plan_json_is_sorted_and_indents_on_request() -> None:
    assert Plan().to_dict()["format"] == 1
    assert Plan().to_json() == '{"changes": [], "format": 1, "notes": []}'
    assert Plan().to_json(indent=2) == '{\n  "changes": [],\n  "format": 1,\n  "notes": []\n}'


def test_route_describe_shows_table_and_scope_only_when_not_the_default() -> None:
    assert Route("192.168.2.0/24", device="eth0").describe() == (
        "route 192.168.2.0/24 dev eth0 table main metric 0 proto k3snet")
    assert Route("192.168.2.0/24", device="eth0", scope="host", table=100).describe() == (
        "route 192.168.2.0/24 dev eth0 table 100 metric 0 scope host proto k3snet")
    assert Route("192.168.2.0/24", gateway="192.168.1.1", scope="universe").describe() == (
        "route 192.168.2.0/24 via 192.168.1.1 table main metric 0 proto k3snet")
    assert Route("fd01:2::/64", device="eth0").describe() == (
        "route fd01:2::/64 dev eth0 table main metric 1024 proto k3snet")


def test_register_object_type_refuses_a_second_class_for_one_tag() -> None:
    class Impostor(Route):
        __slots__ = ()

    with pytest.raises(ModelError, match="'route' is already registered by"):
        register_object_type(Impostor)
    assert register_object_type(Route) is Route
    assert OBJECT_TYPES["route"] is Route
    assert type(object_from_dict(_ROUTE.to_dict())) is Route


def test_objects_read_their_dict_forms_with_the_optional_keys_left_out() -> None:
    assert MasqueradeRule.from_dict({"source": "10.42.0.0/16"}) == MasqueradeRule("10.42.0.0/16")
    assert not MasqueradeRule.from_dict({"source": "10.42.0.0/16"}).random_fully
    assert SnatRule.from_dict({"source": "10.42.0.0/16", "to_address": "192.168.1.5"}) == (
        SnatRule("10.42.0.0/16", to_address="192.168.1.5"))
    route = Route.from_dict({"destination": "192.168.2.0/24", "device": "eth0"})
    assert (route.table, route.protocol) == (254, 211)


def test_objects_order_strictly() -> None:
    low, high = sorted([_ROUTE, _NAT])
    assert low < high
    assert not high < low
    assert not low < low  # noqa: PLR0124 - irreflexivity is what is tested
    assert low <= low  # noqa: PLR0124
    assert high > low
    assert not low > high
    assert not low > low  # noqa: PLR0124
    assert low >= low  # noqa: PLR0124
    assert high >= low
    assert not low >= high
    same = Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0")
    assert same >= _ROUTE
    assert not same > _ROUTE


def test_route_describe_names_unknown_protocols_by_number() -> None:
    assert Route("192.168.2.0/24", device="eth0", protocol=77).describe().endswith("proto 77")
    assert Route("192.168.2.0/24", device="eth0", protocol=99).describe().endswith("proto openr")


def test_object_from_dict_names_what_it_cannot_read() -> None:
    with pytest.raises(ModelError, match=r"unknown object type in \{'type': 'bogus'\}"):
        object_from_dict({"type": "bogus"})


def test_a_replace_prints_on_one_line() -> None:
    moved = Route("192.168.2.0/24", gateway="192.168.1.254", device="eth0")
    assert str(Change.replace(_ROUTE, moved)) == (
        f"~ {moved.describe()} (was: {_ROUTE.describe()})")


def test_ipv6_nat_without_destination_translates_all_of_ipv6_less_its_exclusions() -> None:
    rule = MasqueradeRule("fd42:42::/56", exclude=["fd01:2::/64"])
    assert all(n.version == 6 for n in rule.natted_destinations())
    assert sum(n.num_addresses for n in rule.natted_destinations()) == 2**128 - 2**64
    assert not MasqueradeRule("fd42:42::/56").met_by(rule)


def test_apply_to_takes_a_foreign_sysctl_over_and_keeps_its_value_as_previous() -> None:
    foreign = Sysctl("net.ipv4.ip_forward", 0)
    after = Plan(changes=[Change.add(_SYSCTL)]).apply_to(State(foreign=[foreign]))
    (owned,) = after.owned
    assert owned.previous == "0"
    assert foreign not in after.foreign
    replaced = Plan(changes=[Change.replace(owned, Sysctl("net.ipv4.ip_forward", 2))]).apply_to(
        after)
    (kept,) = replaced.owned
    assert (kept.value, kept.previous) == ("2", "0")
    restored = Plan(changes=[Change.delete(kept)]).apply_to(replaced)
    assert restored.foreign == {foreign}


def test_an_added_sysctl_records_what_the_system_held_not_the_previous_it_carries() -> None:
    """A desired state read from another node carries its sysctls' ``previous``: the memory
    backend (``apply_to``) kept it, and deleting the sysctl later made up a foreign value
    the system never held, where a kernel backend records the value it reads."""
    from k3snet.backends.memory import MemoryBackend  # noqa: PLC0415

    carried = Sysctl("net.ipv4.ip_forward", "1", previous="0")
    backend = MemoryBackend()
    backend.apply(plan(backend.observe(), State(owned=[carried])))
    (owned,) = backend.observe().owned
    assert owned.previous is None
    backend.apply(plan(backend.observe(), State()))
    assert backend.observe() == State()
    held = State(foreign=[Sysctl("net.ipv4.ip_forward", "2")])
    (taken,) = Plan(changes=[Change.add(carried)]).apply_to(held).owned
    assert taken.previous == "2"


def test_one_object_or_change_where_a_list_belongs_is_a_model_error_naming_it() -> None:
    """``State(owned=Sysctl(...))`` raised a bare TypeError ("'Sysctl' object is not
    iterable"), which an embedding program catching ``K3snetError`` did not catch."""
    forwarding = Sysctl("net.ipv4.ip_forward", "1")
    with pytest.raises(ModelError, match="a State holds a list of k3snet objects, not Sysctl"):
        State(owned=forwarding)
    with pytest.raises(ModelError, match="a plan's changes are a list, not Change"):
        Plan(changes=Change.add(forwarding))  # type: ignore[arg-type]


def test_apply_to_says_why_a_change_does_not_fit() -> None:
    with pytest.raises(PlanError, match=r"cannot add .* is already there"):
        Plan(changes=[Change.add(_ROUTE)]).apply_to(State(owned=[_ROUTE]))
    moved = Route("192.168.2.0/24", gateway="192.168.1.254", device="eth0")
    with pytest.raises(PlanError, match=r"cannot replace .*: not in the state \(found route"):
        Plan(changes=[Change.replace(moved, _ROUTE)]).apply_to(State(owned=[_ROUTE]))


def test_a_conflict_note_prints_its_reason_and_keeps_it_through_json() -> None:
    wanted = ForwardRule("10.42.0.0/16", "192.168.2.0/24")
    block = ForwardBlock(4, "drop", "-d 192.168.2.0/24 -j DROP", "iptables IPv4 filter FORWARD",
                         destination="192.168.2.0/24")
    p = plan(State(foreign=[block]), State(owned=[wanted]))
    assert not p
    assert list(p) == []
    (note,) = p.notes
    assert note.render() == (
        "! forward accept 10.42.0.0/16 -> 192.168.2.0/24 (+ replies)\n"
        "    (conflicts with foreign: drop by iptables IPv4 filter FORWARD: "
        "-d 192.168.2.0/24 -j DROP)\n"
        "    (that rule drops some of this traffic and k3snet's accept cannot let it "
        "through (a drop is final in whichever chain of the hook it runs); k3snet does not "
        "place its rules above it)")
    assert note.to_dict()["reason"] == note.reason
    again = Plan.from_json(p.to_json())
    assert again == p
    assert again.notes[0].reason == note.reason
    # A note without a reason has no "reason" key, and prints no third line.
    met = plan(State(foreign=[wanted]), State(owned=[wanted])).notes[0]
    assert "reason" not in met.to_dict()
    assert Note.from_dict(met.to_dict()) == met
    bare = Note("conflict", wanted, block)
    assert bare.render().count("\n") == 1
    assert "reason" not in bare.to_dict()


def test_a_plan_iterates_over_its_changes_and_is_true_when_it_has_some() -> None:
    p = plan(State(), State(owned=[_ROUTE, _NAT]))
    assert p
    assert list(p) == list(p.changes) == [Change.add(_ROUTE), Change.add(_NAT)]


def test_a_state_that_is_not_json_or_not_an_object_says_so() -> None:
    with pytest.raises(ModelError) as not_json:
        State.from_json("{owned")
    assert str(not_json.value) == (
        "not a k3snet state (JSON): Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)")
    with pytest.raises(ModelError) as not_object:
        State.from_json("[]")
    assert str(not_object.value) == "not a k3snet state: expected a JSON object"


def test_a_state_of_another_format_is_refused_naming_both_formats() -> None:
    with pytest.raises(ModelError) as other:
        State.from_dict({"format": STATE_FORMAT + 1})
    assert str(other.value) == (f"unsupported state format {STATE_FORMAT + 1!r} "
                                f"(this k3snet reads {STATE_FORMAT})")
    assert State.from_dict({"format": STATE_FORMAT}) == State()


def test_state_json_is_sorted_and_indents_on_request() -> None:
    state = State(owned=[_ROUTE, _NAT], foreign=[_FOREIGN_ROUTE])
    text = state.to_json(indent=2)
    assert text.startswith('{\n  "foreign": [')
    assert state.to_json().startswith('{"foreign": [')
    assert State.from_json(text) == state


def test_a_state_lists_the_kinds_of_its_owned_and_foreign_objects_in_dependency_order() -> None:
    assert State().kinds() == ()
    assert State(owned=[_NAT, _SYSCTL], foreign=[_FOREIGN_ROUTE]).kinds() == (
        "sysctl", "route", "nat")
    assert State(foreign=[_FOREIGN_ROUTE]).kinds() == ("route",)


def test_a_state_iterates_over_its_owned_objects_in_order() -> None:
    state = State(owned=[_NAT, _ROUTE, _SYSCTL], foreign=[_FOREIGN_ROUTE])
    assert list(state) == list(state.ordered) == [_SYSCTL, _ROUTE, _NAT]


def test_a_sysctl_deleted_then_added_in_one_plan_takes_back_the_value_it_restored() -> None:
    mine = Sysctl("net.ipv4.ip_forward", 1, previous="0")
    again = Plan([Change.delete(mine), Change.add(Sysctl("net.ipv4.ip_forward", 1))])
    after = again.apply_to(State(owned=[mine]))
    assert after == State(owned=[mine])
    assert after.foreign == frozenset()
    assert again.problems(State(owned=[mine])) == []


def test_a_change_of_the_wrong_shape_is_refused_naming_its_action_and_objects() -> None:
    moved = Route("192.168.3.0/24", gateway="192.168.1.1", device="eth0")
    with pytest.raises(ModelError) as shape:
        Change("delete", None, _ROUTE)
    assert str(shape.value) == f"a 'delete' change cannot have before=None, after={_ROUTE}"
    with pytest.raises(ModelError) as key:
        Change("replace", _ROUTE, moved)
    assert str(key.value) == f"a replace keeps the key: {_ROUTE} / {moved}"


def test_a_state_of_something_else_than_k3snet_objects_names_its_type_and_value() -> None:
    with pytest.raises(ModelError) as refused:
        State(owned=[_ROUTE, "10.0.0.0/8"])  # type: ignore[list-item]
    assert str(refused.value) == "a State holds k3snet objects, not str '10.0.0.0/8'"


def test_problems_names_a_lone_change_that_does_not_fit() -> None:
    # One change, so no two share a key: only the fit of each decides (Plan.problems'
    # one-pass answer must not pass these).
    on = Sysctl("net.ipv4.ip_forward", 1)
    off = Sysctl("net.ipv4.ip_forward", 0)
    add = Change.add(_ROUTE)
    assert Plan([add]).problems(State(owned=[_ROUTE])) == [
        (add, f"cannot add {_ROUTE}: {_ROUTE} is already there")]
    for change in (Change.delete(on), Change.replace(on, Sysctl("net.ipv4.ip_forward", 2))):
        assert Plan([change]).problems(State(owned=[off])) == [
            (change, f"cannot {change.action} {on}: not in the state (found {off})")]
    # The same changes fit the state they name.
    assert Plan([add]).problems(State()) == []
    assert Plan([Change.delete(on)]).problems(State(owned=[Sysctl("net.ipv4.ip_forward", 1)])) == []


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["type", "owned", "foreign", "changes", "notes", "action", "before",
                         "after", "status", "wanted", "destination", "format"]) | st.text(
                             max_size=6), inner, max_size=4),
    max_leaves=10)


@settings(max_examples=examples(500), deadline=None)
@given(document=_JSON)
def test_any_json_reads_as_a_state_and_a_plan_or_fails_with_a_model_error(
        document: object) -> None:
    text = json.dumps(document)
    for read in (State.from_json, Plan.from_json):
        with contextlib.suppress(ModelError):
            read(text)


@pytest.mark.parametrize(("document", "message"), [
    ({"owned": [{"type": "route"}]}, "a route object has no 'destination' field"),
    ({"owned": [{"type": "route", "destination": "10.0.0.0/8", "device": []}]},
     "interface name must be a string, got []"),
    ({"owned": "route"}, "a state's 'owned' is a list, not str"),
    ({"foreign": [["route"]]}, "an object is a JSON object, not list"),
    ([], "not a k3snet state: expected a JSON object"),
])
def test_a_malformed_state_names_what_is_wrong(document: object, message: str) -> None:
    with pytest.raises(ModelError, match=re.escape(message)):
        State.from_json(json.dumps(document))


@pytest.mark.parametrize(("document", "message"), [
    ({"changes": [{}]}, "a change has no 'action' field"),
    ({"changes": [{"action": []}]}, "a change is malformed"),
    ({"changes": {}}, "a plan's 'changes' and 'notes' are lists"),
    ({"notes": [{"status": "bogus", "wanted": _NAT.to_dict(), "foreign": _NAT.to_dict()}]},
     "a note's status is 'met' or 'conflict', not 'bogus'"),
    ([1], "a plan is a JSON object, not list"),
    ({"held": {}}, "a plan's 'held' is a list"),
    ({"held": [{"wanted": _ROUTE.to_dict()}]}, "a plan has no 'owned' field"),
    ({"held": [{"wanted": _ROUTE.to_dict(), "owned": _NAT.to_dict()}]},
     "a held object keeps the wanted one's key"),
])
def test_a_malformed_plan_names_what_is_wrong(document: object, message: str) -> None:
    with pytest.raises(ModelError, match=re.escape(message)):
        Plan.from_json(json.dumps(document))


@pytest.mark.parametrize("observed_only", [
    RouteBlock("10.0.0.0/8", what="blackhole"),
    NatBlock(4, "masquerade", "-A POSTROUTING -j MASQUERADE", "nat POSTROUTING"),
    ForwardBlock(4, "drop", "-A FORWARD -j DROP", "filter FORWARD"),
    NatDrift("iptables", "nat K3SNET-POSTROUTING", "a rule changed"),
    ForwardDrift("iptables", "filter K3SNET-FORWARD", "a rule changed"),
    CalicoPools(),
], ids=lambda obj: obj.type_name)
def test_a_desired_state_holding_what_k3snet_only_observes_is_a_model_error(
        observed_only: NetObject) -> None:
    # The plan added a blackhole route (or a finding), and the netlink backend's check
    # passed it to an apply that failed with a bare AssertionError.
    with pytest.raises(ModelError, match="k3snet only observes"):
        plan(State(), State(owned=[observed_only]))
    replaced = State(owned=[Route("10.0.0.0/8", device="eth0")])
    if isinstance(observed_only, RouteBlock):  # in place of a route of k3snet's
        with pytest.raises(ModelError, match="k3snet only observes"):
            plan(replaced, State(owned=[RouteBlock("10.0.0.0/8", what="blackhole")]))
    # Observed and kept as it is, it is no change (a finding is repaired by a delete).
    assert plan(State(owned=[observed_only]), State(owned=[observed_only])).empty
    assert [c.action for c in plan(State(owned=[observed_only]), State())] == ["delete"]


@pytest.mark.parametrize(("text", "message"), [
    ("[1]", "a plan is a JSON object, not list"),
    ('{"changes": [["add"]]}', "a change is a JSON object, not list"),
    ('{"notes": [7]}', "a note is a JSON object, not int"),
])
def test_a_plan_whose_parts_are_no_json_objects_says_so(text: str, message: str) -> None:
    # "a plan is malformed: 'list' object has no attribute 'get'", Python's words.
    with pytest.raises(ModelError) as caught:
        Plan.from_json(text)
    assert str(caught.value) == message
