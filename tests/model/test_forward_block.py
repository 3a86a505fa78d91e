"""Foreign rules that decide forwarded traffic otherwise, and where k3snet's jump goes."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k3snet import ModelError, State, plan
from k3snet.backends.iptables.foreign import foreign_blocks
from k3snet.backends.iptables.save import parse_save
from k3snet.model import ForwardBlock, ForwardRule, object_from_dict
from k3snet.render.iptables.rules import hook_position, tokenize
from k3snet.testing.strategies import forward_rules
from tests.examples import examples

DROP = ForwardBlock(4, "drop", "-A FORWARD -s 10.42.0.0/16 -d 192.168.2.0/24 -j DROP",
                    "iptables IPv4 filter", source="10.42.0.0/16", destination="192.168.2.0/24")


@pytest.mark.parametrize(("wanted", "decided"), [
    (ForwardRule("10.42.0.0/16", "192.168.2.0/24"), True),
    (ForwardRule("10.42.1.0/24", "192.168.0.0/16"), True),  # overlaps: part of it
    (ForwardRule("192.168.2.0/24", "10.42.0.0/16"), True),  # its replies are dropped
    (ForwardRule("10.42.0.0/16", "192.168.3.0/24"), False),
    (ForwardRule("10.43.0.0/16", "192.168.2.0/24"), False),
    (ForwardRule("fd42::/64", "fd01::/64"), False),  # another family
])
def test_a_block_decides_the_flows_it_may_match_either_way(wanted: ForwardRule,
                                                           decided: bool) -> None:
    assert DROP.decides(wanted) is decided
    assert wanted.conflicts_with(DROP) is decided


def test_interfaces_narrow_a_block_and_a_plus_is_a_prefix() -> None:
    block = ForwardBlock(4, "reject", "-A FORWARD -o eth+ -j REJECT", "x", out_interface="eth+")
    assert block.decides(ForwardRule("10.0.0.0/8", "0.0.0.0/0", out_interface="eth1"))
    assert not block.decides(ForwardRule("10.0.0.0/8", "0.0.0.0/0", out_interface="wg0",
                                         in_interface="cni0"))
    assert block.decides(ForwardRule("10.0.0.0/8", "0.0.0.0/0"))  # any interface: maybe


def test_a_block_round_trips_and_its_text_is_one_bounded_line() -> None:
    assert object_from_dict(DROP.to_dict()) == DROP
    long = ForwardBlock(6, "drop", "-A FORWARD\n" + "x" * 2000, "w")
    assert "\n" not in long.rule
    assert len(long.rule) == 512
    with pytest.raises(ModelError):
        ForwardBlock(4, "accept", "r", "w")
    with pytest.raises(ModelError):
        ForwardBlock(4, "drop", "r", "w", source="fd00::/8")


# A drop met after an accept of the pods' traffic (and a `ct state established,related
# accept` of every reply): an accept ends the base chain for what it takes.
AFTER_ACCEPTS = ForwardBlock(4, "drop", "ip daddr 192.168.2.0/24 drop",
                             "nftables ip filter FORWARD", destination="192.168.2.0/24",
                             accepted=[ForwardRule("10.42.0.0/16", "0.0.0.0/0")])


@pytest.mark.parametrize(("wanted", "decided"), [
    (ForwardRule("10.42.0.0/16", "192.168.2.0/24"), False),  # taken by the accept first
    (ForwardRule("10.42.1.0/24", "192.168.2.0/25", out_interface="eth0"), False),
    (ForwardRule("10.43.0.0/16", "192.168.2.0/24"), True),  # not the accept's
    (ForwardRule("10.0.0.0/8", "192.168.2.0/24"), True),  # only part of it is the accept's
    (ForwardRule("192.168.2.0/24", "10.42.0.0/16"), False),  # its replies: the accept's
    (ForwardRule("192.168.2.0/24", "10.43.0.0/16"), True),  # its replies: not the accept's
])
def test_a_block_after_accepts_decides_only_what_they_do_not_take(wanted: ForwardRule,
                                                                   decided: bool) -> None:
    assert AFTER_ACCEPTS.decides(wanted) is decided
    assert wanted.conflicts_with(AFTER_ACCEPTS) is decided


def test_a_block_after_an_accept_of_every_reply_decides_new_packets_only() -> None:
    # `ip saddr 192.168.2.0/24 drop` after `ct state established,related accept`: the
    # database's replies to the pods never meet it, its own new connections do.
    block = ForwardBlock(4, "drop", "ip saddr 192.168.2.0/24 drop", "w",
                         source="192.168.2.0/24", replies_accepted=True)
    assert not block.decides(ForwardRule("10.42.0.0/16", "192.168.2.0/24"))
    assert block.decides(ForwardRule("192.168.2.0/24", "10.42.0.0/16"))
    assert attrs.evolve(block, replies_accepted=False).decides(
        ForwardRule("10.42.0.0/16", "192.168.2.0/24"))


@settings(max_examples=examples(200))
@given(block=st.builds(lambda d: ForwardBlock(d.family, "drop", "r", "w", source=d.source,
                                              destination=d.destination,
                                              in_interface=d.in_interface,
                                              out_interface=d.out_interface),
                       forward_rules(4)),
       accepts=st.lists(forward_rules(4), max_size=3), rule=forward_rules(4),
       replies=st.booleans())
def test_property_accepts_before_a_block_only_ever_take_decisions_away(
        block: ForwardBlock, accepts: list[ForwardRule], rule: ForwardRule,
        replies: bool) -> None:
    after = attrs.evolve(block, accepted=accepts, replies_accepted=replies)
    assert not after.decides(rule) or block.decides(rule)
    # An accept of the rule's traffic both ways, or of it and every reply: never decided.
    back = ForwardRule(rule.destination, rule.source, in_interface=rule.out_interface,
                       out_interface=rule.in_interface)
    assert not attrs.evolve(block, accepted=[rule, back]).decides(rule)
    assert not attrs.evolve(block, accepted=[rule], replies_accepted=True).decides(rule)
    assert object_from_dict(after.to_dict()) == after


def test_a_block_s_accepted_traffic_is_of_its_family_and_its_form_unchanged_without_it() -> None:
    with pytest.raises(ModelError, match="is not IPv4"):
        ForwardBlock(4, "drop", "r", "w", accepted=[ForwardRule("fd42::/64", "::/0")])
    with pytest.raises(ModelError, match="ForwardRule objects"):
        ForwardBlock(4, "drop", "r", "w", accepted=["10.42.0.0/16"])
    assert "accepted" not in DROP.to_dict()
    assert "replies_accepted" not in DROP.to_dict()
    assert object_from_dict(AFTER_ACCEPTS.to_dict()) == AFTER_ACCEPTS
    assert attrs.evolve(AFTER_ACCEPTS, accepted=()) != AFTER_ACCEPTS


def test_the_plan_shows_a_conflict_naming_the_rule_instead_of_adding() -> None:
    wanted = ForwardRule("10.42.0.0/16", "192.168.2.0/24")
    p = plan(State(foreign=[DROP]), State(owned=[wanted]))
    assert p.empty
    assert [n.foreign for n in p.conflicts] == [DROP]
    assert "-A FORWARD -s 10.42.0.0/16 -d 192.168.2.0/24 -j DROP" in p.render()


@pytest.mark.parametrize(("rules", "position"), [
    ([], 0),
    (["-j DOCKER-USER", "-s 10.0.0.0/8 -j DROP"], 2),
    (["-j DOCKER-USER", "-j REJECT --reject-with icmp-host-prohibited"], 1),
    (["-j DROP", "-s 10.0.0.0/8 -j ACCEPT", "-m comment --comment deny -j DROP", "-j REJECT"], 2),
    # a goto has no -j, and a rule that only counts decides nothing: neither is a deny
    (["-j DOCKER-USER", "-g FLANNEL-FWD"], 2),
    (["-j DOCKER-USER", "-m comment --comment counted"], 2),
    # a comment `-j` (iptables-save prints it unquoted) is no target: still a catch-all
    (["-j DOCKER-USER", '-m comment --comment "-j" -j DROP'], 1),
    (["-j DOCKER-USER", "-m comment --comment -j -j REJECT"], 1),
    (["-j DOCKER-USER", "-m comment --comment --comment -j DROP"], 1),
])
def test_a_new_jump_goes_after_the_rules_but_a_final_catch_all_deny(
    rules: list[str], position: int
) -> None:
    assert hook_position([tokenize(rule) for rule in rules]) == position


SAVE = """*filter
:FORWARD DROP [0:0]
:GUARD - [0:0]
-A FORWARD -m conntrack --ctstate INVALID -j DROP
-A FORWARD -s 10.99.0.0/16 -j RETURN
-A FORWARD -d 192.168.0.0/16 -j GUARD
-A FORWARD ! -s 10.1.0.0/16 -p tcp --dport 22 -j REJECT
-A FORWARD -m comment --comment k3snet -j K3SNET-FORWARD
-A FORWARD -s 10.42.0.0/16 -j DROP
-A GUARD -d 192.168.3.0/24 -j DROP
-A GUARD -j ACCEPT
COMMIT
"""


def test_iptables_blocks_are_the_denies_met_before_the_jump() -> None:
    dump = parse_save(SAVE)["filter"]
    blocks = foreign_blocks(dump, 4, 4)
    assert {(b.rule, b.source, b.destination) for b in blocks if isinstance(b, ForwardBlock)} == {
        # a RETURN from FORWARD hands the packet to the DROP policy
        ("-A FORWARD -s 10.99.0.0/16 -j RETURN", DROP_NET("10.99.0.0/16"), None),
        # one jump down, narrowed by nothing the inner rule does not say
        ("-A GUARD -d 192.168.3.0/24 -j DROP", None, DROP_NET("192.168.3.0/24")),
        # a negated source counts as any: a doubt is a conflict
        ("-A FORWARD ! -s 10.1.0.0/16 -p tcp --dport 22 -j REJECT", None, None),
    }  # kube-proxy's INVALID drop is left out, and the DROP after the jump decides nothing
    assert foreign_blocks(dump, 4, 0) == set()


def DROP_NET(text: str) -> object:  # noqa: N802 - reads as a constructor in the table above
    import ipaddress  # noqa: PLC0415 - only here

    return ipaddress.ip_network(text)


def test_an_untrack_block_decides_the_whole_flow_unless_both_ways_are_accepted_by_address(
        ) -> None:
    rule = ForwardRule("10.42.0.0/16", "192.168.2.0/24")
    out = ForwardRule("10.42.0.0/16", "192.168.2.0/24")
    back = ForwardRule("192.168.2.0/24", "10.42.0.0/16")

    def untrack(*accepted: ForwardRule, replies: bool = False) -> ForwardBlock:
        return ForwardBlock(4, "untrack", "ip saddr 10.42.0.0/16 notrack", "nftables ip raw pre",
                            source="10.42.0.0/16", accepted=accepted, replies_accepted=replies)

    assert untrack().decides(rule)
    assert untrack(out).decides(rule)  # the replies: a new connection's, not accepted
    assert untrack(out, replies=True).decides(rule)  # conntrack's accept takes none
    assert not untrack(out, back).decides(rule)
    # the block matches the replies' way only: the same, either way decides
    only_back = ForwardBlock(4, "untrack", "ip daddr 10.42.0.0/16 notrack",
                             "nftables ip raw pre", destination="10.42.0.0/16", accepted=[out])
    assert only_back.decides(rule)
    assert not ForwardBlock(4, "untrack", "ip saddr 10.9.0.0/16 notrack", "nftables ip raw pre",
                            source="10.9.0.0/16").decides(rule)
