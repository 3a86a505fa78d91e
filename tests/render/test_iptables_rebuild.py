"""Reading k3snet's iptables rules back, for every shape a NAT or forward rule can take.

Each object is rendered, the process' memory of what it rendered is dropped
(as in a fresh process), and the object must be rebuilt from the rule text
alone, in its own chain; the same lines in another chain, or missing a line,
are not it.
"""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k3snet.errors import K3snetError
from k3snet.model import ForwardRule, MasqueradeRule, NetObject, Route, SnatRule
from k3snet.render.iptables import rules
from k3snet.render.iptables.rules import (
    Unit,
    clear_caches,
    content_hash,
    rebuild_unit,
    render_unit,
)
from k3snet.testing import strategies
from tests.examples import examples

_EXCLUDES: tuple[tuple[str, ...], ...] = ((), ("192.168.2.0/24",),
                                          ("192.168.3.0/24", "192.168.4.0/24"))


def _nat_rules() -> list[NetObject]:
    found: list[NetObject] = []
    for exclude, destination, oif, rnd in itertools.product(
            _EXCLUDES, (None, "192.168.0.0/16", "0.0.0.0/0"), (None, "eth0"), (False, True)):
        common = {"destination": destination, "exclude": list(exclude), "out_interface": oif,
                  "random_fully": rnd}
        found.append(MasqueradeRule("10.42.0.0/16", **common))  # type: ignore[arg-type]
        found.append(SnatRule("10.42.0.0/16", to_address="192.0.2.1",
                              **common))  # type: ignore[arg-type]
    found.append(SnatRule("fd42::/56", destination="fd01::/64", exclude=["fd01::/80"],
                          out_interface="eth0", to_address="fd00::1", random_fully=True))
    return found


def _forward_rules() -> list[NetObject]:
    return [ForwardRule(src, dst, in_interface=iif, out_interface=oif)
            for (src, dst), iif, oif in itertools.product(
                [("10.42.0.0/16", "192.168.2.0/24"), ("0.0.0.0/0", "10.42.0.0/16"),
                 ("fd42::/56", "::/0")], (None, "cni0"), (None, "eth0"))]


def _chains(unit: Unit) -> dict[str, list[tuple[str, ...]]]:
    chains = {unit.chain: list(unit.lines)}
    if unit.sub_chain is not None:
        chains[unit.sub_chain] = list(unit.sub_lines)
    return chains


@pytest.mark.parametrize("obj", [*_nat_rules(), *_forward_rules()], ids=str)
def test_every_shape_is_rebuilt_from_its_rule_text_alone(obj: NetObject) -> None:
    unit = render_unit(obj)
    clear_caches()
    assert obj.family is not None
    rebuilt = rebuild_unit(obj.family, unit.digest, unit.chain, unit.lines, _chains(unit))
    assert rebuilt == unit
    assert rebuilt is not None
    assert rebuilt.obj == obj


@pytest.mark.parametrize("obj", [*_nat_rules()[::5], *_forward_rules()[::3]], ids=str)
def test_the_rules_elsewhere_or_cut_short_are_not_the_object(obj: NetObject) -> None:
    unit = render_unit(obj)
    assert obj.family is not None
    family = obj.family
    for known in (True, False):  # remembered by this process, and from the text alone
        if not known:
            clear_caches()
        other = "K3SNET-F-0" if unit.chain.startswith("K3SNET-N-") else "K3SNET-N-d0-s16-a-0"
        assert rebuild_unit(family, unit.digest, other, unit.lines, _chains(unit)) is None
        if len(unit.lines) > 1:
            assert rebuild_unit(family, unit.digest, unit.chain, unit.lines[:1],
                                _chains(unit)) is None
        if unit.sub_chain is not None:
            cut = {unit.chain: list(unit.lines), unit.sub_chain: list(unit.sub_lines[1:])}
            assert rebuild_unit(family, unit.digest, unit.chain, unit.lines, cut) is None
            gone = {unit.chain: list(unit.lines)}
            assert rebuild_unit(family, unit.digest, unit.chain, unit.lines, gone) is None
        wrong = "0" * 16 if unit.digest != "0" * 16 else "1" * 16
        if not known:
            assert rebuild_unit(family, wrong, unit.chain, unit.lines, _chains(unit)) is None


@pytest.mark.parametrize("obj", [*_nat_rules()[::7], *_forward_rules()[::4]], ids=str)
def test_the_content_hash_is_the_digest_of_the_rules_tag(obj: NetObject) -> None:
    unit = render_unit(obj)
    assert content_hash(obj) == unit.digest
    assert unit.lines[0][unit.lines[0].index("--comment") + 1] == f"k3snet:{unit.digest}"


def test_objects_of_other_kinds_have_no_rules() -> None:
    with pytest.raises(K3snetError, match=r"cannot hold route objects \(route 192\.168\.2\.0/24"):
        render_unit(Route("192.168.2.0/24", gateway="10.0.0.1"))
    with pytest.raises(K3snetError, match="cannot hold route objects"):
        content_hash(Route("192.168.2.0/24", gateway="10.0.0.1"))


@pytest.mark.parametrize("length", [1, 8, 32])
def test_one_exclusion_without_a_destination_is_one_negated_rule(length: int) -> None:
    excluded = {1: "128.0.0.0/1", 8: "10.0.0.0/8", 32: "192.0.2.1/32"}[length]
    unit = render_unit(MasqueradeRule("10.42.0.0/16", exclude=[excluded]))
    assert unit.sub_chain is None
    (line,) = unit.lines
    assert line[:5] == ("-s", "10.42.0.0/16", "!", "-d", excluded)


Found = tuple[tuple[tuple[str, ...], ...], str, str]
"""A unit's rule lines as found, the chain they are in, the digest of their tag."""


def _rebuilt(first: NetObject | None, unit: Unit, found: Found) -> Unit | None:
    """``found`` rebuilt from its text, in a process that read ``first``'s rule (from its
    text) just before, or nothing (``None``)."""
    clear_caches()
    if first is not None:
        seen = render_unit(first)
        clear_caches()
        assert first.family is not None
        assert rebuild_unit(first.family, seen.digest, seen.chain, seen.lines,
                            _chains(seen)) == seen
    lines, chain, digest = found
    assert unit.obj.family is not None
    return rebuild_unit(unit.obj.family, digest, chain, lines, _chains(unit))


@settings(max_examples=examples(300))
@given(first=st.one_of(strategies.nat_rules(), strategies.forward_rules()), data=st.data())
def test_a_rule_read_by_the_shape_of_an_earlier_rule_is_what_its_text_alone_gives(
        first: NetObject, data: st.DataObject) -> None:
    assert isinstance(first, MasqueradeRule | SnatRule | ForwardRule)
    # Mostly the same rule with another destination (the shape is taken), else another rule.
    destination = data.draw(st.one_of(strategies.networks(first.family, min_prefix=1),
                                      st.none()))
    try:
        # None drawn for a ForwardRule, whose destination is required, is refused
        # (K3snetError, below) on purpose.
        obj: NetObject = attrs.evolve(first, destination=destination)  # type: ignore[arg-type]
    except K3snetError:
        obj = data.draw(st.one_of(strategies.nat_rules(), strategies.forward_rules()))
    unit = render_unit(obj)
    digest, chain = unit.digest, unit.chain
    lines = unit.lines
    # ...and its text as found, or edited: another word, another chain, another digest.
    edit = data.draw(st.sampled_from(["none", "word", "chain", "digest"]))
    if edit == "word":
        which = data.draw(st.integers(0, len(lines) - 1))
        at = data.draw(st.integers(0, len(lines[which]) - 1))
        word = data.draw(st.sampled_from(["-d", "-s", "10.0.0.0/8", "!", "eth1", "MASQUERADE",
                                          "ACCEPT", ""]))
        edited = (*lines[which][:at], word, *lines[which][at + 1:])
        lines = (*lines[:which], edited, *lines[which + 1:])
    elif edit == "chain":
        chain = "K3SNET-N-d0-s16-a-0"
    elif edit == "digest":
        digest = "0" * 16 if digest != "0" * 16 else "1" * 16
    alone = _rebuilt(None, unit, (lines, chain, digest))
    assert _rebuilt(first, unit, (lines, chain, digest)) == alone
    if edit == "none":
        assert alone == unit


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Every rule line read word by word (``parse_rule``) in this test, in order."""
    read: list[tuple[str, ...]] = []
    real = rules.parse_rule

    def counted(tokens: tuple[str, ...]) -> Any:
        read.append(tokens)
        return real(tokens)

    monkeypatch.setattr(rules, "parse_rule", counted)
    return read


def _read_cold(objects: list[NetObject]) -> list[Unit]:
    """Each object's unit, rebuilt from its rules alone one after the other (as a fresh
    process reads a table)."""
    units = [render_unit(obj) for obj in objects]
    clear_caches()
    for unit in units:
        assert rebuild_unit(4, unit.digest, unit.chain, unit.lines, _chains(unit)) == unit
    return units


def test_rules_of_one_shape_are_rebuilt_without_parsing_their_words(
        parsed: list[tuple[str, ...]]) -> None:
    units = _read_cold([MasqueradeRule("10.42.0.0/16", destination=f"100.64.{n}.0/24",
                                       out_interface="eth0") for n in range(50)])
    assert parsed == [units[0].lines[0]]
    # A rule of that shape whose text is not its object's: read in full, and not it.
    edited = (tuple(w.replace("100.64.7.0/24", "100.64.99.0/24") for w in units[7].lines[0]),)
    assert rebuild_unit(4, units[7].digest, units[7].chain, edited, _chains(units[7])) is None
    assert parsed[-1] == edited[0]


def test_forward_rules_of_one_shape_are_rebuilt_without_parsing_their_words(
        parsed: list[tuple[str, ...]]) -> None:
    units = _read_cold([ForwardRule("10.42.0.0/16", f"100.64.{n}.0/24", out_interface="eth0")
                        for n in range(50)])
    # The first rule's accept alone: its reply half is what the accept's object renders.
    assert parsed == [units[0].lines[0]]
    # The reply half of another destination: the two halves disagree, read in full, not it.
    mixed = (units[7].lines[0], units[8].lines[1])
    assert rebuild_unit(4, units[7].digest, units[7].chain, mixed, _chains(units[7])) is None
