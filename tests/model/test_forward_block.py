"""Foreign rules that decide forwarded traffic otherwise, and where k3snet's jump goes."""

from __future__ import annotations

import pytest

from k3snet import ModelError, State, plan
from k3snet.backends.iptables.foreign import foreign_blocks
from k3snet.backends.iptables.save import parse_save
from k3snet.model import ForwardBlock, ForwardRule, object_from_dict
from k3snet.render.iptables.rules import hook_position, tokenize

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
