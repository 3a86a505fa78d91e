"""The nftables foreign reader's exits, found by address (``parse._Exits``).

Each forward accept and each NAT rule of another table asks which earlier exits (drops,
returns, jumps) may take some of its packets. Asking every earlier one is quadratic: N
``ip saddr X drop`` before N accepts asked N squared questions. The index gives only
those whose positive address tests may meet the rule's; these tests check that it
gives every one that matters (against the every-pair reading, with negations, IPv6,
several tests of one field) and that the reader's questions grow linearly.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k3snet.backends.nftables import parse
from k3snet.backends.nftables.parse import Match, _disjoint, _Exits, _spared
from k3snet.model import ForwardRule, SnatRule
from k3snet.model.cidr import Network
from tests.examples import examples
from tests.nftables.test_foreign_cases import (
    ACCEPT,
    CT_REPLY,
    DROP,
    POD,
    RETURN,
    daddr,
    forward,
    meta,
    nat,
    read,
    saddr,
    snat,
)

# a few regions, so that drawn prefixes often nest or overlap
_BASES = {4: [0x0A000000, 0x0A2A0000, 0xC0A80200], 6: [0x20010DB8 << 96, 0xFD00 << 112]}


@st.composite
def networks(draw: Any, family: int) -> Network:
    bits = 32 if family == 4 else 128
    length = draw(st.sampled_from([0, 8, 16, 24, 28, 30, 32] if family == 4
                                  else [0, 32, 48, 64, 120, 128]))
    base = draw(st.sampled_from(_BASES[family]))
    offset = draw(st.integers(0, 1023)) << (bits - max(length, 22 if family == 4 else 118))
    address = (base + offset) % (1 << bits) >> (bits - length) << (bits - length)
    return ipaddress.ip_network((address, length)) if family == 4 else ipaddress.IPv6Network(
        (address, length))


@st.composite
def matches(draw: Any) -> Match:
    family = draw(st.sampled_from([4, 6]))
    tests = st.lists(st.tuples(networks(family), st.booleans()), max_size=3)
    verdict = draw(st.sampled_from(["drop", "return", "accept", "masquerade", "snat", "jump"]))
    return Match(proto=draw(st.sampled_from([None, "ip" if family == 4 else "ip6"])),
                 saddr=draw(tests), daddr=draw(tests),
                 oif=draw(st.lists(st.tuples(st.sampled_from(["eth0", "eth1", "eth*"]),
                                             st.booleans()), max_size=1)),
                 unknown=draw(st.sampled_from([0, 0, 1])), verdict=verdict,
                 nat_addr=draw(st.sampled_from([None, "192.0.2.1"])) if verdict == "snat"
                 else None)


@st.composite
def walks(draw: Any) -> tuple[_Exits, list[Match]]:
    """Exits as a walk files them (a chain, the chains it jumps to, inside one another;
    a caller's exits after the jump are not the callee's), and the every-pair list of
    those the innermost chain reads."""
    exits = _Exits()
    seen: list[Match] = []
    for _ in range(draw(st.integers(1, 3))):
        own = draw(st.lists(matches(), max_size=8))
        for match in own:
            exits.append(match)
        seen += own
        inner = _Exits(exits)
        for match in draw(st.lists(matches(), max_size=3)):  # met after the jump returns
            exits.append(match)
        exits = inner
    return exits, seen


@st.composite
def queries(draw: Any) -> tuple[int, Network, Network | None, str | None]:
    family = draw(st.sampled_from([4, 6]))
    return (family, draw(networks(family)), draw(st.none() | networks(family)),
            draw(st.sampled_from([None, "eth0", "eth+"])))


@settings(max_examples=examples(60), deadline=None)
@given(walks(), queries())
def test_the_exits_found_by_address_are_every_exit_not_disjoint_in_order(
        walk: tuple[_Exits, list[Match]],
        query: tuple[int, Network, Network | None, str | None]) -> None:
    exits, every = walk
    family, source, destination, oif = query
    met = exits.meeting(source, destination)
    assert len({id(m) for m in met}) == len(met)  # each one once
    assert {id(m) for m in met} <= {id(m) for m in every}
    assert [id(m) for m in met] == [id(m) for m in every if id(m) in {id(x) for x in met}]
    assert [id(m) for m in every if not _disjoint(m, family, source, destination, oif)] == [
        id(m) for m in met if not _disjoint(m, family, source, destination, oif)]


@settings(max_examples=examples(60), deadline=None)
@given(walks(), queries(), matches())
def test_nat_and_forward_readings_with_the_index_equal_the_every_pair_reading(
        walk: tuple[_Exits, list[Match]],
        query: tuple[int, Network, Network | None, str | None], rule: Match) -> None:
    exits, every = walk
    family, source, destination, oif = query
    assert _spared(rule, exits.meeting(source, destination), family, source,
                   destination=destination, oif=oif) == _spared(
        rule, every, family, source, destination=destination, oif=oif)
    whole = destination or source.supernet(new_prefix=0)

    def stops(cond: Match) -> bool:
        return cond.verdict != "accept" and not _disjoint(cond, family, source, whole, oif)

    assert exits.any_meeting(source, whole, stops) == any(stops(c) for c in every)


def _counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = parse._disjoint

    def counting(*args: Any, **kwargs: Any) -> bool:
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(parse, "_disjoint", counting)
    return calls


def _net(i: int, base: str, length: int = 32) -> str:
    return f"{ipaddress.ip_address(base) + i}/{length}"


N = 300


def test_n_drops_before_n_accepts_are_read_with_linearly_many_comparisons(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counted(monkeypatch)
    rules = [[saddr(_net(i, "10.100.0.0")), DROP] for i in range(N)]
    rules += [[daddr(_net(i, "10.200.0.0")), RETURN] for i in range(N)]
    rules += [[saddr(POD), daddr(_net(i, "192.168.0.0")), ACCEPT] for i in range(N)]
    rules += [[daddr(POD), ACCEPT], [CT_REPLY, ACCEPT]]
    found = read(forward(("drop", rules)))
    assert ForwardRule(POD, _net(7, "192.168.0.0")) in found
    assert len(found) == N  # (not `ip daddr 10.42.0.0/16 accept`: a drop may take it)
    assert calls[0] <= 4 * N  # every pair: N accepts times 2N exits, 180 000


def test_n_returns_before_n_snat_rules_are_read_with_linearly_many_comparisons(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counted(monkeypatch)
    rules = [[saddr(POD), daddr(_net(i, "10.100.0.0")), RETURN] for i in range(N)]
    rules += [[daddr(_net(i, "10.200.0.0")), RETURN] for i in range(N)]
    rules += [[saddr(POD), daddr(_net(4 * i, "192.168.0.0", 30)), meta("oifname", "eth0"),
               snat(addr="192.0.2.1")] for i in range(N)]
    found = read(nat(*rules))
    assert SnatRule(POD, destination=_net(8, "192.168.0.0", 30), out_interface="eth0",
                    to_address="192.0.2.1") in found
    assert len(found) == N
    assert calls[0] <= 4 * N  # every pair: N NAT rules times 2N exits, 180 000
