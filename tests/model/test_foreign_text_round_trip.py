"""A foreign rule's text is held escaped (:func:`k3snet.model.printable`: a backslash
doubled, an ESC as ``\\x1b``); read back from its JSON form (a plan file, a state file)
it is the same text, not escaped once more at every reading."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k3snet._logline import printable
from k3snet.model import ForwardBlock, NatBlock, object_from_dict
from k3snet.model._base import unescaped
from k3snet.model.drift import ForwardDrift
from tests.examples import examples

_TEXTS = [
    r'-A FORWARD -m comment --comment "C:\temp" -j DROP',
    r'-A FORWARD -m comment --comment "\x1b[31m" -j DROP',
    '-A FORWARD -m comment --comment "\x1b[31m\\x1b" -j DROP',
    "ip daddr 10.0.0.1 drop comment \"\u202e\udc80\\\\\"",
    "-A FORWARD " + "\\" * 300 + " -j DROP",  # cut at 512 characters, escapes whole
    "-A FORWARD " + "\x1b" * 200 + " -j DROP",
]


@pytest.mark.parametrize("text", _TEXTS)
def test_a_foreign_rules_text_with_a_backslash_round_trips_through_its_json_form(
        text: str) -> None:
    block = ForwardBlock(4, "drop", text, f"iptables {text}")
    assert object_from_dict(block.to_dict()) == block
    assert object_from_dict(block.to_dict()).rule == block.rule
    nat = NatBlock(4, "masquerade", text, "nftables ip nat POSTROUTING")
    assert object_from_dict(nat.to_dict()) == nat
    drift = ForwardDrift("iptables", text, text)
    assert object_from_dict(drift.to_dict()) == drift


@given(st.text(min_size=1, max_size=700).filter(str.strip))
def test_a_foreign_rules_text_is_the_same_after_any_number_of_json_readings(
        text: str) -> None:
    block = ForwardBlock(6, "drop", text, "nftables ip6 filter FORWARD")
    again = object_from_dict(object_from_dict(block.to_dict()).to_dict())
    assert again == block
    assert len(block.rule) <= 512


# Pieces printable writes as 1, 2, 4, 6 and 10 characters: a backslash, an ESC, a lone
# surrogate (a byte that was not UTF-8), a bidirectional override, a non-BMP format
# character, and a text that already holds what reads as an escape.
_PIECES = st.sampled_from(["a", " ", "\\", "\x1b", "\x85", "\udc80", "\u202e", "\U000e0001",
                           "\\x1b", "\\\\", "\\U000e0001", "é", "\U0001f600"])


@given(st.lists(_PIECES | st.characters(codec=None), max_size=300).map("".join))
def test_unescaped_reads_back_every_text_printable_wrote(text: str) -> None:
    assert unescaped(printable(text)) == text


_ESCAPED = st.sampled_from(["\\", "\x1b", "\x85", "\udc80", "\u202e", "\U000e0001",
                            "\\x1b", "\\U000e0001"])


# Every example is past the cut (260 pieces and more): 100 of them find a cut inside an
# escape as surely as 300, at a third of the time (~9 s at 300). At least 20: a cut made
# at 509 characters, inside or not, went unseen in 1 run of 20 at 10 examples, in none
# of 20 at 16.
@settings(max_examples=examples(100, floor=20))
@given(st.lists(_ESCAPED | _PIECES, min_size=260, max_size=400).map("".join).filter(str.strip))
def test_a_long_foreign_text_is_cut_to_512_characters_between_escapes_and_reads_back_so(
        text: str) -> None:
    # Nearly every text here is longer than 512 characters escaped: the cut is made,
    # and wherever it falls it leaves no escape in two and no more than 512 characters.
    block = ForwardBlock(4, "drop", text, "iptables filter FORWARD")
    assert len(block.rule) <= 512
    assert block.rule.endswith("...") or len(printable(" ".join(text.split()))) <= 512
    assert object_from_dict(block.to_dict()) == block
    assert object_from_dict(block.to_dict()).rule == block.rule
