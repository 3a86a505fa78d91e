"""Foreign NAT rules met before k3snet's that translate the same traffic otherwise."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from k3snet import ModelError, State, plan
from k3snet.backends.iptables.foreign import nat_blocks
from k3snet.backends.iptables.save import parse_save
from k3snet.model import MasqueradeRule, NatBlock, NetObject, SnatRule, object_from_dict

SNAT = NatBlock(4, "snat", "-A POSTROUTING -s 10.42.0.0/16 -d 192.168.2.0/24 -j SNAT "
                "--to-source 192.168.1.99", "iptables IPv4 nat", source="10.42.0.0/16",
                destination="192.168.2.0/24", to_address="192.168.1.99")
MASQ = NatBlock(4, "masquerade", "-A POSTROUTING -s 10.42.0.0/16 -j MASQUERADE",
                "iptables IPv4 nat", source="10.42.0.0/16")


@pytest.mark.parametrize(("block", "wanted", "decided"), [
    (SNAT, MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24"), True),
    (SNAT, MasqueradeRule("10.42.1.0/24"), True),  # part of its traffic
    (SNAT, SnatRule("10.42.0.0/16", to_address="192.168.1.5"), True),  # another address
    (SNAT, SnatRule("10.42.0.0/16", to_address="192.168.1.99"), False),  # the same
    (SNAT, MasqueradeRule("10.42.0.0/16", destination="192.168.3.0/24"), False),
    (SNAT, MasqueradeRule("10.42.0.0/16", destination="192.168.0.0/16",
                          exclude=["192.168.2.0/24"]), False),  # excluded: never NATed
    (SNAT, MasqueradeRule("10.43.0.0/16"), False),
    (SNAT, MasqueradeRule("fd42::/64"), False),  # another family
    (MASQ, MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24"), False),
    (MASQ, SnatRule("10.42.0.0/16", to_address="192.168.1.5"), True),
])
def test_a_nat_block_decides_the_flows_it_translates_otherwise(
    block: NatBlock, wanted: MasqueradeRule | SnatRule, decided: bool
) -> None:
    assert block.decides(wanted) is decided
    assert wanted.conflicts_with(block) is decided


def test_an_out_interface_narrows_a_nat_block() -> None:
    block = NatBlock(4, "masquerade", "-A POSTROUTING -o eth+ -j MASQUERADE", "x",
                     out_interface="eth+")
    assert block.decides(SnatRule("10.0.0.0/8", out_interface="eth1", to_address="192.0.2.1"))
    assert not block.decides(SnatRule("10.0.0.0/8", out_interface="wg0",
                                      to_address="192.0.2.1"))
    assert block.decides(SnatRule("10.0.0.0/8", to_address="192.0.2.1"))  # any: maybe


def test_a_nat_block_through_one_interface_decides_a_rule_through_a_wildcard_holding_it(
) -> None:
    # eth+ holds eth0: what leaves through eth0 is translated by the block first. It
    # was compared with "eth+" as a name, and the conflict went unsaid.
    block = NatBlock(4, "snat", "-A POSTROUTING -o eth0 -j SNAT --to-source 192.0.2.9", "x",
                     out_interface="eth0", to_address="192.0.2.9")
    assert block.decides(MasqueradeRule("10.0.0.0/8", out_interface="eth+"))
    assert block.decides(MasqueradeRule("10.0.0.0/8", out_interface="e+"))
    assert not block.decides(MasqueradeRule("10.0.0.0/8", out_interface="eth1+"))
    assert not block.decides(MasqueradeRule("10.0.0.0/8", out_interface="wg+"))
    wild = NatBlock(4, "masquerade", "-A POSTROUTING -o eth1+ -j MASQUERADE", "x",
                    out_interface="eth1+")
    assert wild.decides(SnatRule("10.0.0.0/8", out_interface="eth+", to_address="192.0.2.1"))
    assert not wild.decides(SnatRule("10.0.0.0/8", out_interface="eth2+",
                                     to_address="192.0.2.1"))


def test_a_nat_block_round_trips_and_refuses_nonsense() -> None:
    for block in (SNAT, MASQ):
        assert object_from_dict(block.to_dict()) == block
    with pytest.raises(ModelError):
        NatBlock(4, "masquerade", "x", "y", to_address="192.0.2.1")
    with pytest.raises(ModelError):
        NatBlock(4, "return", "x", "y")
    with pytest.raises(ModelError):
        NatBlock(6, "snat", "x", "y", source="10.0.0.0/8")
    # An SNAT to an address (or range) k3snet does not model is never the same as ours.
    unknown = NatBlock(4, "snat", "-j SNAT --to-source 192.0.2.1-192.0.2.9", "y")
    assert unknown.decides(SnatRule("10.0.0.0/8", to_address="192.0.2.1"))


def test_the_plan_shows_a_conflict_naming_the_rule_not_an_add() -> None:
    wanted = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")
    p = plan(State(foreign=[SNAT]), State(owned=[wanted]))
    assert p.changes == ()
    [note] = p.conflicts
    assert note.foreign == SNAT
    assert "--to-source 192.168.1.99" in p.render()
    assert "the first NAT rule met decides" in p.render()


def _blocks(rules: str, before: int | None = None) -> set[NetObject]:
    text = ("*nat\n:POSTROUTING ACCEPT [0:0]\n:FLANNEL-POSTRTG - [0:0]\n:KUBE-POSTROUTING - [0:0]\n"
            f"{rules.strip()}\nCOMMIT\n")
    dump = parse_save(text).get("nat")
    assert dump is not None
    return nat_blocks(dump, 4, len(dump.chain("POSTROUTING")) if before is None else before)


def test_the_reader_takes_nat_rules_before_the_jump_one_level_down() -> None:
    found = _blocks("""
-A POSTROUTING -j KUBE-POSTROUTING
-A POSTROUTING -j FLANNEL-POSTRTG
-A POSTROUTING -s 10.50.0.0/16 -d 192.168.2.0/24 -j SNAT --to-source 192.168.1.99
-A POSTROUTING -s 10.60.0.0/16 -j MASQUERADE
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG -s 10.42.0.0/16 -d 10.42.0.0/16 -j RETURN
-A FLANNEL-POSTRTG -s 10.42.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE --random-fully
""", before=3)
    # kube-proxy's masquerade sees marked packets only (cut); the rule at the jump's
    # place and after it are not met first.
    assert {(b.action, str(b.source), str(b.destination), b.to_address and str(b.to_address))
            for b in found if isinstance(b, NatBlock)} == {
        ("masquerade", "10.42.0.0/16", "None", None),
        ("snat", "10.50.0.0/16", "192.168.2.0/24", "192.168.1.99"),
    }
    assert _blocks("-A POSTROUTING -s 10.50.0.0/16 -j MASQUERADE", before=0) == set()


EXEMPT = NatBlock(4, "exempt", "-A POSTROUTING -s 10.42.0.0/16 -d 192.168.2.0/24 -j RETURN",
                  "iptables IPv4 nat", source="10.42.0.0/16", destination="192.168.2.0/24")


@pytest.mark.parametrize(("wanted", "decided"), [
    (MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24"), True),
    (MasqueradeRule("10.42.0.0/16"), True),  # part of its traffic leaves untranslated
    (SnatRule("10.42.0.0/16", to_address="192.168.1.5"), True),
    (MasqueradeRule("10.42.0.0/16", destination="192.168.3.0/24"), False),
    (MasqueradeRule("10.42.0.0/16", destination="192.168.0.0/16",
                    exclude=["192.168.2.0/24"]), False),  # never translated anyway
    (MasqueradeRule("10.43.0.0/16"), False),
    (MasqueradeRule("fd42::/64"), False),
])
def test_an_exemption_decides_every_nat_flow_it_lets_leave_untranslated(
    wanted: MasqueradeRule | SnatRule, decided: bool
) -> None:
    assert EXEMPT.decides(wanted) is decided
    assert wanted.conflicts_with(EXEMPT) is decided


def test_an_exemption_is_a_conflict_saying_the_traffic_leaves_untranslated() -> None:
    wanted = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")
    p = plan(State(foreign=[EXEMPT]), State(owned=[wanted]))
    assert p.changes == ()
    [note] = p.conflicts
    assert note.foreign == EXEMPT
    assert "no NAT by iptables IPv4 nat: -A POSTROUTING" in p.render()
    assert "leave untranslated" in p.render()
    assert object_from_dict(EXEMPT.to_dict()) == EXEMPT
    with pytest.raises(ModelError):
        NatBlock(4, "exempt", "x", "y", to_address="192.0.2.1")


def _exempt(found: set[NetObject]) -> set[tuple[str, str, str]]:
    return {(b.where, str(b.source), str(b.destination)) for b in found
            if isinstance(b, NatBlock) and b.action == "exempt"}


@pytest.mark.parametrize(("rules", "expected"), [
    ("-A POSTROUTING -s 10.42.0.0/16 -d 192.168.2.0/24 -j RETURN",
     {("iptables IPv4 nat", "10.42.0.0/16", "192.168.2.0/24")}),
    ("-A POSTROUTING -d 192.168.2.0/24 -j ACCEPT",
     {("iptables IPv4 nat", "None", "192.168.2.0/24")}),
    # Negated or unmodelled matches count as any: a doubt is a conflict.
    ("-A POSTROUTING ! -d 10.0.0.0/8 -p tcp -j RETURN", {("iptables IPv4 nat", "None", "None")}),
    # An ACCEPT one jump down ends the nat table too (narrowed by the jump) ...
    ("-A POSTROUTING -s 10.42.0.0/16 -j FLANNEL-POSTRTG\n"
     "-A FLANNEL-POSTRTG -d 192.168.2.0/24 -j ACCEPT",
     {("iptables IPv4 nat", "10.42.0.0/16", "192.168.2.0/24")}),
    # ... a RETURN there only goes back to POSTROUTING (flannel's, kube-proxy's) ...
    ("-A POSTROUTING -j FLANNEL-POSTRTG\n-A FLANNEL-POSTRTG -d 192.168.2.0/24 -j RETURN\n"
     "-A POSTROUTING -j KUBE-POSTROUTING\n"
     "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN", set()),
    # ... unless the chain was gone to (-g): then it ends POSTROUTING.
    # (and so does what reaches the end of that chain: the -g itself is an exemption)
    ("-A POSTROUTING -g FLANNEL-POSTRTG\n-A FLANNEL-POSTRTG -d 192.168.2.0/24 -j RETURN",
     {("iptables IPv4 nat", "None", "192.168.2.0/24"), ("iptables IPv4 nat", "None", "None")}),
    # Rules testing for a set mark are another program's traffic.
    ("-A POSTROUTING -m mark --mark 0x1/0x1 -j ACCEPT\n"
     "-A POSTROUTING -m connmark --mark 0x2 -j RETURN\n"
     "-A POSTROUTING -j KUBE-POSTROUTING\n"
     "-A KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -j ACCEPT", set()),
    ("-A POSTROUTING -m mark ! --mark 0x1/0x1 -j ACCEPT", {("iptables IPv4 nat", "None", "None")}),
])
def test_the_reader_takes_exemptions_that_end_the_nat_table_before_the_jump(
    rules: str, expected: set[tuple[str, str, str]]
) -> None:
    assert _exempt(_blocks(rules)) == expected
    assert _exempt(_blocks(rules, before=0)) == set()  # after the jump: k3snet's rule came first


def test_a_masquerade_for_marked_packets_is_not_a_block() -> None:
    # kube-proxy before 1.20 masqueraded marked packets with a positive mark match.
    found = _blocks("-A POSTROUTING -j KUBE-POSTROUTING\n"
                    "-A KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE")
    assert found == set()


def test_a_k3s_node_has_no_exemption_before_the_jump() -> None:
    from k3snet.testing.k3s import NODE_V4, NODE_V6  # noqa: PLC0415

    for family, text in ((4, NODE_V4), (6, NODE_V6)):
        dump = parse_save(text).get("nat")
        assert dump is not None
        found = nat_blocks(dump, family, len(dump.chain("POSTROUTING")))
        assert _exempt(found) == set()
        # flannel's masquerade (and Docker's, of its own bridge) are what decides first.
        assert {b.action for b in found if isinstance(b, NatBlock)} == {"masquerade"}

UNKNOWN = NatBlock(6, "snat", "-A POSTROUTING -o eth0 -j SNAT --to-source fd00::1-fd00::9",
                   "ip6tables nat", out_interface="eth0")


def test_a_nat_block_prints_its_translation_where_it_sits_and_its_rule() -> None:
    assert SNAT.describe() == ("snat to 192.168.1.99 by iptables IPv4 nat: -A POSTROUTING "
                               "-s 10.42.0.0/16 -d 192.168.2.0/24 -j SNAT --to-source 192.168.1.99")
    assert MASQ.describe() == ("masquerade by iptables IPv4 nat: "
                               "-A POSTROUTING -s 10.42.0.0/16 -j MASQUERADE")
    # An SNAT to an address k3snet does not model prints without one.
    assert UNKNOWN.describe() == ("snat by ip6tables nat: "
                                  "-A POSTROUTING -o eth0 -j SNAT --to-source fd00::1-fd00::9")


def test_a_nat_block_json_names_every_match_and_null_for_any() -> None:
    assert SNAT.to_dict() == {
        "type": "nat-block", "family": 4, "action": "snat", "rule": SNAT.rule,
        "where": "iptables IPv4 nat", "source": "10.42.0.0/16",
        "destination": "192.168.2.0/24", "out_interface": None, "to_address": "192.168.1.99",
    }
    assert UNKNOWN.to_dict() == {
        "type": "nat-block", "family": 6, "action": "snat", "rule": UNKNOWN.rule,
        "where": "ip6tables nat", "source": None, "destination": None,
        "out_interface": "eth0", "to_address": None,
    }
    assert NatBlock.from_dict(UNKNOWN.to_dict()).out_interface == "eth0"
    assert object_from_dict(UNKNOWN.to_dict()) == UNKNOWN


def test_a_nat_rule_says_why_a_nat_block_wins_and_nothing_for_other_objects() -> None:
    wanted = MasqueradeRule("10.42.0.0/16")
    assert wanted.conflict_reason(SNAT) == (
        "that rule translates some of this traffic before k3snet's rule is reached (the "
        "first NAT rule met decides); k3snet does not place its rules above it")
    assert wanted.conflict_reason(MasqueradeRule("10.43.0.0/16")) is None


def test_a_nat_block_matching_anything_decides_only_nat_rules_of_its_family() -> None:
    anything = NatBlock(4, "masquerade", "-A POSTROUTING -j MASQUERADE", "iptables IPv4 nat")
    assert anything.decides(SnatRule("10.0.0.0/8", to_address="192.0.2.1"))
    assert not anything.decides(SnatRule("fd00::/8", to_address="fd00::1"))
    assert not UNKNOWN.decides(SnatRule("10.0.0.0/8", to_address="192.0.2.1"))


@pytest.mark.parametrize(("make", "message"), [
    (lambda: NatBlock(4, "masquerade", "x", "y", to_address="192.0.2.1"),
     "foreign rule 'x': only an snat has a to_address"),
    (lambda: NatBlock(6, "snat", "x", "y", source="10.0.0.0/8"),
     "foreign rule 'x': 10.0.0.0/8 is not IPv6"),
    (lambda: NatBlock(4, "return", "x", "y"),
     "a foreign NAT rule's action is one of masquerade, snat, exempt, not 'return'"),
])
def test_a_nonsense_nat_block_is_refused_naming_the_rule_and_what_is_wrong(
    make: Callable[[], NatBlock], message: str
) -> None:
    with pytest.raises(ModelError) as refused:
        make()
    assert str(refused.value) == message
