"""Drops against sets of concatenations naming an address, read element by element.

``ip daddr . tcp dport @s drop`` and ``ip saddr . ip daddr @s drop`` were tests k3snet
did not model: a warning naming the set whatever it held, so a set holding the pods'
destination (the database's port, or every port) was no conflict while the kernel
dropped their connections, and one holding only other addresses a warning of nothing.
The kernel's lookup matches a packet when one element matches it part by part, so each
element is now read as the rule it stands for (``ip daddr 192.168.2.10 tcp dport 5432
drop``), as a drop naming an address and a port written out is: a conflict when its
address meets the pods' traffic, whatever the port (a test k3snet does not model). A
set packets may change, a negated test, or an element k3snet cannot read stays the
warning naming the set.
"""

from __future__ import annotations

from typing import Any

import pytest

from k3snet.lab import SeedLab
from tests.nftables.test_foreign_cases import DROP, jump
from tests.nftables.test_interface_blocks import _applied
from tests.nftables.test_named_address_sets import (
    PODS,
    PODS6,
    daddr,
    fw,
    match,
    read,
    said_where_dropped,
    warned,
)

TCP_DPORT = {"payload": {"protocol": "tcp", "field": "dport"}}
SADDR = {"payload": {"protocol": "ip", "field": "saddr"}}
PORTS = {"s": {"type": ["ipv4_addr", "inet_service"], "flags": ["interval"], "elem": [
    {"concat": [{"prefix": {"addr": "192.168.2.0", "len": 24}}, {"range": [0, 65535]}]},
    {"concat": ["10.30.0.1", 5432]},
    {"elem": {"val": {"concat": [{"range": ["10.31.0.10", "10.31.0.11"]}, 80]},
              "comment": "two hosts"}}]}}


def port_rule(right: Any) -> list[Any]:
    return [match("==", {"concat": [daddr(), TCP_DPORT]}, right), DROP]


def test_a_drop_against_a_named_set_of_address_and_port_is_one_rule_per_element() -> None:
    found, reader = read(fw([port_rule("@s")], PORTS))
    assert {b.rule for b in found} == {
        "ip daddr 192.168.2.0/24 (and 1 more match) drop",
        "ip daddr 10.30.0.1/32 (and 1 more match) drop",
        "ip daddr 10.31.0.10/31 (and 1 more match) drop"}
    assert [b.destination for b in found if b.decides(PODS)] == [PODS.destination]
    assert warned(reader, PODS) == []  # no longer the warning naming the set


def test_a_drop_against_a_named_set_of_address_pairs_is_read_as_both_addresses() -> None:
    pairs = {"p": {"type": ["ipv4_addr", "ipv4_addr"], "flags": ["interval"], "elem": [
        {"concat": [{"prefix": {"addr": "10.42.0.0", "len": 16}}, "192.168.2.10"]}]}}
    found, reader = read(fw([[match("==", {"concat": [SADDR, daddr()]}, "@p"), DROP]], pairs))
    (block,) = found
    assert block.rule == "ip saddr 10.42.0.0/16 ip daddr 192.168.2.10/32 drop"
    assert block.decides(PODS)
    assert warned(reader, PODS) == []


def test_an_anonymous_set_of_concatenations_is_read_so_too() -> None:
    found, _ = read(fw([port_rule({"set": [{"concat": ["192.168.2.10", 5432]}]})], {}))
    (block,) = found
    assert (block.rule, block.decides(PODS)) == ("ip daddr 192.168.2.10/32 (and 1 more "
                                                 "match) drop", True)


def test_a_set_holding_other_addresses_only_is_neither_a_conflict_nor_a_warning() -> None:
    others = {"s": {"type": ["ipv4_addr", "inet_service"], "elem": [
        {"concat": ["10.30.0.1", 5432]}]}}
    found, reader = read(fw([port_rule("@s")], others))
    assert not any(b.decides(rule) for b in found for rule in (PODS, PODS6))
    assert warned(reader, PODS, PODS6) == []


def test_an_empty_set_of_concatenations_matches_nothing() -> None:
    empty = {"s": {"type": ["ipv4_addr", "inet_service"]}}
    found, reader = read(fw([port_rule("@s")], empty))
    assert (found, warned(reader, PODS)) == (set(), [])


@pytest.mark.parametrize(("rule", "sets"), [
    (port_rule("@s"), {"s": {**PORTS["s"], "flags": ["interval", "dynamic"]}}),
    (port_rule("@s"), {"s": {**PORTS["s"], "size": 65535}}),  # a set a rule adds to
    (port_rule("@s"), {"s": {**PORTS["s"], "type": ["ipv6_addr", "inet_service"]}}),
    (port_rule("@s"), {"s": {"type": ["ipv4_addr", "inet_service"],
                             "elem": [{"concat": ["not an address", 5432]}]}}),
    (port_rule("@s"), {}),  # not listed
    # `!= @s`: not this pair, no test of each part
    ([match("!=", {"concat": [daddr(), TCP_DPORT]}, "@s"), DROP], PORTS),
])
def test_a_concatenated_set_k3snet_cannot_trust_or_read_stays_a_warning_naming_it(
        rule: list[Any], sets: dict[str, Any]) -> None:
    found, reader = read(fw([rule], sets))
    assert found == set()
    (said,) = warned(reader, PODS)
    assert "testing ip daddr . tcp dport" in said
    assert "@s (test k3snet does not model) (handle 2)" in said


def test_a_jump_for_a_concatenated_set_stays_one_jump_as_before() -> None:
    # (one jump per element would be a chain run once per element: only a verdict that
    # ends the chain is read element by element)
    guarded = [match("==", {"concat": [daddr(), TCP_DPORT]}, "@s"), jump("below")]
    found, reader = read(fw([guarded], PORTS, below=[[DROP]]))
    assert found == set()
    assert warned(reader, PODS) == ["a rule that may drop any address (handle 2 of chain "
                                    "below)"]


# Each case: the set, the rule of a forward chain (policy accept) of `table inet fw`;
# whether the kernel drops the pod's IPv4 and IPv6 connections to the database (port
# 5432), and what `plan` says (4: a conflict, "warning": a warning of that chain, 0:
# nothing). Before, each was a warning.
CASES: dict[str, tuple[str, str, tuple[bool, bool], int | str]] = {
    "every port of the static-route subnet": (
        "set s { type ipv4_addr . inet_service; flags interval; "
        "elements = { 192.168.2.0/24 . 0-65535 }; }",
        "ip daddr . tcp dport @s drop", (True, False), 4),
    "the database's port": (
        "set s { type ipv4_addr . inet_service; elements = { 192.168.2.10 . 5432 }; }",
        "ip daddr . tcp dport @s drop", (True, False), 4),
    "another host's port": (
        "set s { type ipv4_addr . inet_service; elements = { 10.30.0.1 . 5432 }; }",
        "ip daddr . tcp dport @s drop", (False, False), 0),
    "the pods to the subnet": (
        "set s { type ipv4_addr . ipv4_addr; flags interval; "
        "elements = { 10.42.0.0/16 . 192.168.2.0/24 }; }",
        "ip saddr . ip daddr @s drop", (True, False), 4),
    "the database's IPv6 port": (
        "set s { type ipv6_addr . inet_service; elements = { fd01:2::10 . 5432 }; }",
        "ip6 daddr . tcp dport @s drop", (False, True), 4),
    "a set packets fill, empty now": (
        "set s { type ipv4_addr . inet_service; flags dynamic,timeout; timeout 1h; }",
        "ip daddr . tcp dport @s drop", (False, False), "warning"),
}


@pytest.mark.kernel
@pytest.mark.lab
def test_concatenated_sets_are_said_exactly_where_the_kernel_drops(
        require_root: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    seen: dict[str, tuple[tuple[bool, bool], int | str]] = {}
    with SeedLab.create() as lab:
        monkeypatch.setenv("K3SNET_STATE_DIR", str(lab.state_dir))
        _applied(lab)
        for case, (sets, rule, *_) in CASES.items():
            rules, dropped, said = said_where_dropped(lab, sets, rule, capsys)
            # The kernel's view: the one rule, against the named set of concatenations
            (rule_listed,) = rules
            assert rule_listed["expr"][0]["match"]["right"] == "@s"
            assert "concat" in rule_listed["expr"][0]["match"]["left"]
            seen[case] = (dropped, said)
    assert seen == {case: (dropped, said) for case, (_, _, dropped, said) in CASES.items()}
