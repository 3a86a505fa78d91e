"""A foreign rule's text is held escaped (:func:`k3snet.model.printable`: a backslash
doubled, an ESC as ``\\x1b``); read back from its JSON form (a plan file, a state file)
it is the same text, not escaped once more at every reading."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from k3snet.model import ForwardBlock, NatBlock, object_from_dict
from k3snet.model.drift import ForwardDrift

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
