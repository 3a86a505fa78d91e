"""A wanted rule in place that a foreign block defeats is a conflict, as if it were added.

A foreign drop, or a NAT rule met first, that another program adds after k3snet's
rule was written defeats that rule as much as one that was there before. The plan
must report the same conflict for it (naming k3snet's rule in place, which it
leaves as it is: no delete, no re-add), never "nothing to do".
"""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings

from k3snet import planner
from k3snet.model import (
    ForwardBlock,
    ForwardRule,
    MasqueradeRule,
    NatBlock,
    NetObject,
    SnatRule,
    State,
)
from k3snet.planner import plan
from tests.planner.test_foreign_index import _states

V4, V6 = ("10.42.0.0/16", "192.168.2.0/24"), ("fd42:42::/56", "fd01:2::/64")
DEFEATS: dict[str, tuple[NetObject, NetObject]] = {
    "IPv4 forward drop": (ForwardRule(*V4, out_interface="eth0"), ForwardBlock(
        4, "drop", "ip saddr 10.42.0.0/16 drop", "nftables inet admin c", source=V4[0])),
    "IPv6 forward drop": (ForwardRule(*V6, out_interface="eth0"), ForwardBlock(
        6, "drop", "ip6 saddr fd42:42::/56 drop", "nftables inet admin c", source=V6[0])),
    "IPv4 NAT met first": (MasqueradeRule(V4[0], destination=V4[1], out_interface="eth0"),
                           NatBlock(4, "snat", "ip saddr 10.42.0.0/16 snat ip to 192.0.2.1",
                                    "nftables inet admin c", source=V4[0])),
    "IPv6 NAT met first": (MasqueradeRule(V6[0], destination=V6[1], out_interface="eth0"),
                           NatBlock(6, "snat", "ip6 saddr fd42:42::/56 snat ip6 to 2001:db8::1",
                                    "nftables inet admin c", source=V6[0])),
}


@pytest.mark.parametrize("case", list(DEFEATS))
def test_a_rule_in_place_a_foreign_block_defeats_is_a_conflict_and_stays(case: str) -> None:
    rule, block = DEFEATS[case]
    desired = State(owned=[rule])
    p = plan(State(owned=[rule], foreign=[block]), desired)
    assert not p.changes
    assert [(n.status, n.wanted, n.foreign, n.owned) for n in p.notes] == [
        ("conflict", rule, block, rule)]
    assert p.target(desired) == frozenset({rule})  # an apply keeps it
    assert block.describe() in p.render()
    # Removing it (destroy, a spec without it) is still planned.
    assert [c.before for c in plan(State(owned=[rule], foreign=[block]), State()).changes] == [
        rule]


@settings(deadline=None)
@given(_states())
def test_in_place_rules_get_the_block_conflicts_their_adds_get_and_no_change(
        states: tuple[State, State]) -> None:
    observed, desired = states
    to_add = plan(observed, desired)
    in_place = plan(State(owned=desired.owned, foreign=observed.foreign), desired)
    assert not in_place.changes

    def blocked(p: planner.Plan) -> list[tuple[NetObject, NetObject]]:
        return [(n.wanted, n.foreign) for n in p.conflicts
                if isinstance(n.foreign, ForwardBlock | NatBlock)]

    assert blocked(in_place) == blocked(to_add)
    assert all(n.owned == n.wanted for n in in_place.conflicts)


def test_without_foreign_blocks_no_rule_in_place_is_judged(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """The agent's no-op pass: foreign accepts and NAT rules, none of them a block, cost
    nothing per rule in place."""
    judged: list[NetObject] = []
    real = planner._ForeignIndex.judge

    def counted(self: planner._ForeignIndex, wanted: NetObject) -> planner.Note | None:
        judged.append(wanted)
        return real(self, wanted)

    monkeypatch.setattr(planner._ForeignIndex, "judge", counted)
    owned = [ForwardRule(f"10.{i // 256}.{i % 256}.0/24", "192.168.2.0/24") for i in range(500)]
    foreign = [ForwardRule("10.42.0.0/16", "172.16.0.0/12"),
               MasqueradeRule("10.42.0.0/16", destination="172.16.0.0/12")]
    p = plan(State(owned=owned, foreign=foreign), State(owned=owned))
    assert p.empty
    assert not p.notes
    assert judged == []


@pytest.mark.parametrize("case", list(DEFEATS))
def test_a_rule_in_place_a_foreign_block_defeats_stays_when_the_spec_changes_it_to_one_defeated_too(
        case: str) -> None:
    # The spec changed the object at the rule's key (another out interface for a forward
    # rule, random-fully for a masquerade, whose key holds its interface): the block
    # defeats the new one too. The plan notes its conflict, naming k3snet's rule in place,
    # and leaves that rule as it is (a replace wrote a rule the block defeats, no "!"); once
    # the block is gone it is a replace.
    rule, block = DEFEATS[case]
    changed: NetObject = (attrs.evolve(rule, out_interface="eth1") if isinstance(rule, ForwardRule)
                          else attrs.evolve(rule, random_fully=True))  # type: ignore[misc]
    assert changed.key == rule.key
    desired = State(owned=[changed])
    p = plan(State(owned=[rule], foreign=[block]), desired)
    assert not p.changes
    assert [(n.status, n.wanted, n.foreign, n.owned) for n in p.notes] == [
        ("conflict", changed, block, rule)]
    assert p.target(desired) == frozenset({rule})
    assert p.apply_to(State(owned=[rule], foreign=[block])).owned == p.target(desired)
    assert [(c.action, c.before, c.after) for c in plan(State(owned=[rule]), desired).changes] \
        == [("replace", rule, changed)]
    assert [c.before for c in plan(State(owned=[rule], foreign=[block]), State()).changes] == [
        rule]


def test_a_rule_in_place_the_block_leaves_is_not_replaced_by_one_it_defeats() -> None:
    # The drop takes the new out interface's traffic alone: k3snet's rule in place (eth0)
    # is not defeated, the spec's new one (eth1) is. An add of it is a conflict; the
    # replace was planned, with no "!", writing a rule the drop defeats (the next plan had
    # the "!" of it in place, and an apply of this one said it was done).
    rule = ForwardRule(*V4, out_interface="eth0")
    changed = ForwardRule(*V4, out_interface="eth1")
    block = ForwardBlock(4, "drop", "oifname eth1 ip daddr 192.168.2.0/24 drop",
                         "nftables inet admin c", destination=V4[1], out_interface="eth1")
    assert not rule.conflicts_with(block)
    assert changed.conflicts_with(block)
    desired = State(owned=[changed])
    p = plan(State(owned=[rule], foreign=[block]), desired)
    assert not p.changes
    assert [(n.status, n.wanted, n.foreign, n.owned) for n in p.notes] == [
        ("conflict", changed, block, rule)]
    assert p.target(desired) == frozenset({rule})
    assert [(c.action, c.before, c.after) for c in plan(State(owned=[rule]), desired).changes] \
        == [("replace", rule, changed)]


def _changed(obj: NetObject) -> NetObject:
    """Another object at ``obj``'s key: another out interface for a forward rule, a
    masquerade turned SNAT and back (the spec edited)."""
    if isinstance(obj, ForwardRule):
        other = "eth1" if obj.out_interface != "eth1" else "eth0"
        return attrs.evolve(obj, out_interface=other)
    if isinstance(obj, MasqueradeRule):
        return SnatRule(obj.source, to_address="192.0.2.9" if obj.family == 4 else "2001:db8::9",
                        destination=obj.destination, out_interface=obj.out_interface)
    assert isinstance(obj, SnatRule)
    return MasqueradeRule(obj.source, destination=obj.destination,
                          out_interface=obj.out_interface)


@settings(deadline=None)
@given(_states())
def test_changed_rules_in_place_get_the_block_conflicts_their_adds_get_and_no_replace_for_them(
        states: tuple[State, State]) -> None:
    observed, desired = states
    to_add = plan(observed, desired)
    in_place = [_changed(obj) for obj in desired.owned]
    assert all(old.key == new.key and old != new for old, new in zip(in_place, desired.owned,
                                                                      strict=True))
    changed = plan(State(owned=in_place, foreign=observed.foreign), desired)

    def blocked(p: planner.Plan) -> list[tuple[NetObject, NetObject]]:
        return [(n.wanted, n.foreign) for n in p.conflicts
                if isinstance(n.foreign, ForwardBlock | NatBlock)]

    assert blocked(changed) == blocked(to_add)
    by_key = {obj.key: obj for obj in in_place}
    assert all(n.owned == by_key[n.wanted.key] for n in changed.conflicts)
    noted = {n.wanted.key for n in changed.notes}
    assert not any(c.after is not None and c.after.key in noted for c in changed.changes)
