"""Forward rules and the foreign rules that block them, case by case.

Messages, conflict reasons, plan lines and JSON forms are recorded in
``tests/data/model/forward.json`` (see ``tests/model/recorded.py``); which
packets a foreign rule may decide is judged by an independent oracle below.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from k3snet.model import ForwardBlock, ForwardRule, MasqueradeRule
from k3snet.model.state import object_from_dict
from tests.model.recorded import Case, check

WHERE = "iptables IPv4 filter FORWARD"


def _block(rule: str = "-j DROP", **kwargs: Any) -> ForwardBlock:
    return ForwardBlock(kwargs.pop("family", 4), kwargs.pop("verdict", "drop"), rule, WHERE,
                        **kwargs)


CASES: dict[str, Case] = {
    "rule": lambda: ForwardRule("10.42.0.0/16", "192.168.2.0/24"),
    "rule interfaces": lambda: ForwardRule("fd00:42::/56", "fd00:2::/64", in_interface="cni0",
                                           out_interface="eth0"),
    "rule in only": lambda: ForwardRule("10.42.0.0/16", "0.0.0.0/0", in_interface="cni0"),
    "rule families": lambda: ForwardRule("10.42.0.0/16", "fd00::/64"),
    "rule bad interface": lambda: ForwardRule("10.42.0.0/16", "10.0.0.0/8", in_interface="+"),
    "rule family": lambda: [ForwardRule("10.42.0.0/16", "0.0.0.0/0").family,
                            ForwardRule("fd00::/64", "::/0").family],
    "rule from dict": lambda: ForwardRule.from_dict({"source": "10.42.0.0/16",
                                                     "destination": "10.0.0.0/8"}),
    "rule reasons": lambda: [
        ForwardRule("10.42.0.0/16", "10.0.0.0/8").conflict_reason(
            _block(verdict=v, family=4)) for v in ("drop", "reject", "return", "untrack")] + [
        ForwardRule("10.42.0.0/16", "10.0.0.0/8").conflict_reason(
            ForwardRule("10.42.0.0/16", "10.0.0.0/8"))],
    "block": lambda: _block("-s 10.42.0.0/16 -o eth+ -j REJECT", verdict="reject",
                            source="10.42.0.0/16", out_interface="eth+"),
    "block v6": lambda: ForwardBlock(6, "return", "ip6 saddr fd00::/8 return",
                                     "nftables inet fw forward", source="fd00::/8",
                                     destination="fd01::/64", in_interface="cni0"),
    "block family": lambda: _block(family=5),
    "block family text": lambda: _block(family="4"),
    "block verdict": lambda: _block(verdict="accept"),
    "block verdict case": lambda: _block(verdict="DROP"),
    "block text": lambda: _block("  "),
    "block text not a string": lambda: _block(None),  # type: ignore[arg-type]
    "block where": lambda: ForwardBlock(4, "drop", "-j DROP", 7),
    "block text spaces": lambda: _block("-s  10.0.0.0/8\n\t-j   DROP").rule,
    "block text 512": lambda: _block("x" * 512).rule == "x" * 512,
    "block text 513": lambda: _block("x" * 513).rule,
    "block source family": lambda: _block(source="fd00::/64"),
    "block destination family": lambda: _block(family=6, destination="10.0.0.0/8"),
    "block from dict": lambda: ForwardBlock.from_dict({"family": 6, "verdict": "drop",
                                                       "rule": "drop", "where": "nft"}),
    "block family of": lambda: _block(family=6).family,
}


def test_forward_texts() -> None:
    check("forward", CASES)


VARIANTS = [
    ForwardRule("10.42.0.0/16", "10.0.0.0/8"), ForwardRule("10.42.0.0/17", "10.0.0.0/8"),
    ForwardRule("10.42.0.0/16", "10.0.0.0/9"),
    ForwardRule("10.42.0.0/16", "10.0.0.0/8", in_interface="cni0"),
    ForwardRule("10.42.0.0/16", "10.0.0.0/8", out_interface="cni0"),
    ForwardRule("10.42.0.0/16", "10.0.0.0/8", in_interface="cni0", out_interface="eth0"),
    ForwardRule("fd00::/64", "::/0"),
    _block(), _block(verdict="reject"), _block("-j RETURN"), _block(family=6),
    ForwardBlock(4, "drop", "-j DROP", "elsewhere"),
    _block(source="10.0.0.0/8"), _block(destination="10.0.0.0/8"),
    _block(in_interface="eth0"), _block(out_interface="eth0"),
    _block(in_interface="eth+"), _block(out_interface="eth+"),
]


def test_objects_round_trip_and_equality_agrees_with_the_json_form() -> None:
    for obj in VARIANTS:
        assert object_from_dict(json.loads(json.dumps(obj.to_dict()))) == obj
    for a in VARIANTS:
        for b in VARIANTS:
            assert (a == b) == (a.to_dict() == b.to_dict()), (a, b)
    assert len({hash(v) for v in VARIANTS}) == len(VARIANTS)


def _matches(pattern: str | None, device: str) -> bool:
    """iptables' interface match, spelled out: ``+`` at the end is a prefix."""
    if pattern is None:
        return True
    if pattern[-1] == "+":
        return device[: len(pattern) - 1] == pattern[:-1]
    return device == pattern


DEVICES = ["eth0", "eth1", "eth", "et", "cni0", "e"]
PATTERNS = [None, "eth0", "eth+", "e+", "cni0", "eth1"]


@pytest.mark.parametrize("oif_pattern", PATTERNS)
@pytest.mark.parametrize("iif_pattern", PATTERNS)
def test_a_block_decides_a_rule_when_some_packet_of_it_may_match(
    iif_pattern: str | None, oif_pattern: str | None
) -> None:
    # The oracle: try each pair of devices a packet of the rule may use, new or reply.
    block = _block(in_interface=iif_pattern, out_interface=oif_pattern)
    for iif in [None, "eth0", "eth", "et", "cni0"]:
        for oif in [None, "eth1", "eth", "et", "cni0"]:
            rule = ForwardRule("10.42.0.0/16", "10.0.0.0/8", in_interface=iif, out_interface=oif)
            new = [(i, o) for i in ([iif] if iif else DEVICES) for o in ([oif] if oif else DEVICES)]
            replies = [(o, i) for i, o in new]
            expected = any(_matches(iif_pattern, i) and _matches(oif_pattern, o)
                           for i, o in new + replies)
            assert block.decides(rule) == expected, (block, rule)
            assert rule.conflicts_with(block) == expected


RULE_PATTERNS = [None, "eth0", "eth+", "e+", "cni0", "et+"]


@pytest.mark.parametrize("oif_pattern", PATTERNS)
@pytest.mark.parametrize("iif_pattern", PATTERNS)
def test_a_block_decides_a_wildcard_rule_when_some_packet_of_it_may_match(
    iif_pattern: str | None, oif_pattern: str | None
) -> None:
    # The same oracle, with wildcards in the rule too: a block through eth0 decides
    # part of a rule through eth+ (it was compared with "eth+" as a name).
    block = _block(in_interface=iif_pattern, out_interface=oif_pattern)
    for iif in RULE_PATTERNS:
        for oif in RULE_PATTERNS:
            rule = ForwardRule("10.42.0.0/16", "10.0.0.0/8", in_interface=iif, out_interface=oif)
            new = [(i, o) for i in DEVICES if _matches(iif, i)
                   for o in DEVICES if _matches(oif, o)]
            replies = [(o, i) for i, o in new]
            expected = any(_matches(iif_pattern, i) and _matches(oif_pattern, o)
                           for i, o in new + replies)
            assert block.decides(rule) == expected, (block, rule)
            assert rule.conflicts_with(block) == expected


def test_a_block_of_the_other_family_or_other_addresses_decides_nothing() -> None:
    rule = ForwardRule("10.42.0.0/16", "10.0.0.0/8")
    assert not _block(family=6).decides(rule)
    assert not rule.conflicts_with(_block(family=6))
    assert not _block(source="192.168.0.0/16").decides(rule)
    assert _block(source="10.0.0.0/8", destination="10.42.0.0/16").decides(rule)  # replies
    assert not _block(source="10.0.0.0/16", destination="10.1.0.0/16").decides(
        ForwardRule("10.42.0.0/16", "10.1.0.0/16"))
    assert _block(source="10.0.0.0/16", destination="10.1.0.0/16").decides(
        ForwardRule("10.0.0.0/24", "10.1.0.0/24"))
    assert not rule.conflicts_with(MasqueradeRule("10.42.0.0/16"))
