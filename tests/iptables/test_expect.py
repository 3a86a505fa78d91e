"""The iptables backend's ``expect`` hint, without root: it changes no result, and it is used.

``expect(state)`` (what :func:`~k3snet.converge.converge` hands a backend before
observing) makes the next read of the tables render the expected objects first,
so that a tagged rule which is exactly one of theirs is taken as that object
without parsing its text. These tests read the same ``iptables-save`` text
twice, from a fresh render cache each time (as a fresh process would), once
without the hint and once with it, and require the very same reading: owned
objects, drift findings, foreign rules and the order of the rules. The recorded
node of ``test_recorded.py`` (flannel, kube-proxy, Docker, an admin's rule) is
read untouched and with each kind of drift; drawn rule sets are read as k3snet
writes them and after a random edit of one line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from k3snet.backends.group import BackendGroup
from k3snet.backends.iptables.driver import Flavour
from k3snet.converge import converge
from k3snet.model import (
    Drift,
    ForwardRule,
    MasqueradeRule,
    NatBlock,
    NetObject,
    Route,
    SnatRule,
    State,
)
from k3snet.render.iptables import render_iptables_save
from k3snet.render.iptables import rules as iptables_rules
from k3snet.render.iptables.rules import clear_caches, comment_digest
from k3snet.testing import strategies
from tests.examples import examples

from .test_recorded import DESIRED, DRIFTS, MODES, FakeKernel, backend_on, recorded


def _reading(kernel: FakeKernel, mode: Flavour, expected: State | None) -> dict[str, Any]:
    """Everything one observe of a fresh backend says, from a fresh render cache."""
    clear_caches()
    with backend_on(kernel, mode) as backend:
        if expected is not None:
            backend.expect(expected)
        observed = backend.observe()
        return {
            "owned": observed.owned,
            "foreign": observed.foreign,
            "drift": backend.drift,
            "order": [backend.ordered(family) for family in (4, 6)],
        }


def _parsed_tagged_lines(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """The rule lines carrying a k3snet tag that the reader parses from now on."""
    seen: list[tuple[str, ...]] = []
    real: Callable[..., Any] = iptables_rules.parse_rule

    def parse_rule(tokens: tuple[str, ...]) -> Any:
        if comment_digest(tokens) is not None:
            seen.append(tokens)
        return real(tokens)

    monkeypatch.setattr(iptables_rules, "parse_rule", parse_rule)
    return seen


# -- the recorded K3s node --------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["untouched", *sorted(DRIFTS)])
def test_the_hint_changes_no_reading_of_a_recorded_node(mode: Flavour, name: str) -> None:
    text = recorded(mode, 4) if name == "untouched" else DRIFTS[name][0](recorded(mode, 4))
    kernel = FakeKernel({(mode, 4): text, (mode, 6): recorded(mode, 6)})
    plain = _reading(kernel, mode, None)
    assert _reading(kernel, mode, DESIRED) == plain
    if name == "untouched":
        assert plain["drift"] == ()
        assert plain["owned"] == DESIRED.owned
    else:
        assert plain["drift"] != ()


@pytest.mark.parametrize("mode", MODES)
def test_with_the_hint_no_rule_of_the_expected_objects_is_parsed(
    mode: Flavour, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = FakeKernel.recorded(mode)
    parsed = _parsed_tagged_lines(monkeypatch)
    _reading(kernel, mode, DESIRED)
    assert parsed == []
    # Without it, every rule of k3snet's is parsed: the shortcut above is the hint's.
    _reading(kernel, mode, None)
    assert len(parsed) >= len(DESIRED.owned)


@pytest.mark.parametrize("mode", MODES)
def test_a_rule_edited_under_its_tag_is_drift_with_the_hint_too(
    mode: Flavour, monkeypatch: pytest.MonkeyPatch
) -> None:
    edit = DRIFTS["tag-not-of-its-rule"][0]
    kernel = FakeKernel({(mode, 4): edit(recorded(mode, 4)), (mode, 6): recorded(mode, 6)})
    parsed = _parsed_tagged_lines(monkeypatch)
    reading = _reading(kernel, mode, DESIRED)
    # The edited line is not the expected object's rule: it is parsed, and judged.
    assert [line for line in parsed if "10.77.0.0/16" in line]
    assert any("did not write" in finding for finding in reading["drift"])
    assert MasqueradeRule("10.51.0.0/16", destination="192.168.2.0/24") not in reading["owned"]


def test_objects_that_are_no_iptables_rule_are_left_out_of_the_hint() -> None:
    kernel = FakeKernel.recorded("nft")
    plain = _reading(kernel, "nft", None)
    block = NatBlock(4, "masquerade", "-A POSTROUTING -s 10.42.0.0/16 -j MASQUERADE",
                     "iptables IPv4 nat POSTROUTING", source="10.42.0.0/16")
    hint = State(owned=[*DESIRED.owned, block,
                        Route("192.168.9.0/24", gateway="192.168.1.1", device="eth0"),
                        Drift.of("nat", backend="iptables", where="IPv4 nat X", what="y")])
    assert _reading(kernel, "nft", hint) == plain


def test_the_hint_is_spent_by_the_read_it_served(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = FakeKernel.recorded("nft")
    parsed = _parsed_tagged_lines(monkeypatch)
    clear_caches()
    with backend_on(kernel, "nft") as backend:
        backend.expect(DESIRED)
        backend.observe()
        assert parsed == []
        clear_caches()
        backend.observe()  # no token with a fake seam: this reads again, unhinted
        assert len(parsed) >= len(DESIRED.owned)


def test_a_later_hinted_read_renders_nothing_the_process_rendered_already(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    # The agent reads again after any commit in the namespace: the hint must not make
    # each such read render every expected object again.
    kernel = FakeKernel.recorded("nft")
    clear_caches()
    built: list[object] = []
    for name in ("_build_plain_masquerade", "_build_general"):
        real = getattr(iptables_rules, name)

        def building(obj: object, real: Callable[[object], Any] = real) -> Any:
            built.append(obj)
            return real(obj)

        monkeypatch.setattr(iptables_rules, name, building)
    with backend_on(kernel, "nft") as backend:
        backend.expect(DESIRED)
        first = backend.observe()
        assert len(built) >= len(DESIRED.owned)
        built.clear()
        backend.expect(DESIRED)
        assert backend.observe() == first  # no token with a fake seam: read again
        assert built == []


def test_converge_hands_the_iptables_backend_its_part_of_the_desired_state(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = FakeKernel.recorded("nft")
    parsed = _parsed_tagged_lines(monkeypatch)
    clear_caches()
    with backend_on(kernel, "nft") as backend:
        group = BackendGroup([backend])
        done = converge(group, DESIRED, dry_run=True)
    assert done.plan.empty
    assert parsed == []


# -- drawn rule sets, as written and after an edit --------------------------------------

RULES = st.lists(st.one_of(strategies.nat_rules(), strategies.forward_rules()), max_size=12,
                 unique_by=lambda obj: obj.key)  # a state holds one object per slot


def _edit(text: str, data: st.DataObject) -> str:
    """One line of the text dropped, doubled, moved or with one word changed."""
    lines = text.splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith("-A ")]
    if not rules:
        return text
    i = data.draw(st.sampled_from(rules), label="line")
    how = data.draw(st.sampled_from(["drop", "double", "first", "word"]), label="edit")
    if how == "drop":
        del lines[i]
    elif how == "double":
        lines.insert(i, lines[i])
    elif how == "first":
        lines.insert(rules[0], lines.pop(i))
    else:
        words = lines[i].split(" ")
        w = data.draw(st.integers(2, len(words) - 1), label="word")
        words[w] = data.draw(st.sampled_from(
            ["10.99.0.0/16", "fd99::/64", "eth9", "ACCEPT", "MASQUERADE", "RETURN", "!"]),
            label="new word")
        lines[i] = " ".join(words)
    return "\n".join(lines) + "\n"


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(written=RULES, expected=RULES, edited=st.booleans(), data=st.data())
def test_the_hint_changes_no_reading_of_any_rule_set_edited_or_not(
    written: list[NetObject], expected: list[NetObject], edited: bool, data: st.DataObject
) -> None:
    wrote = State(owned=written)
    saves = {}
    for family in (4, 6):
        text = render_iptables_save(wrote, family)
        saves["nft", family] = _edit(text, data) if edited and family == 4 else text
    kernel = FakeKernel(saves)
    plain = _reading(kernel, "nft", None)
    if not edited:
        assert plain["owned"] == wrote.owned
    # The hint may name what was written, something else, or both.
    both = {obj.key: obj for obj in [*expected, *written]}.values()
    for hint in (wrote, State(owned=expected), State(owned=both)):
        assert _reading(kernel, "nft", hint) == plain


@pytest.mark.parametrize("obj", [
    MasqueradeRule("10.42.0.0/16", exclude=["10.0.0.0/8", "192.168.0.0/16"]),
    SnatRule("fd42::/56", destination="fd01::/64", to_address="fd00::5"),
    ForwardRule("10.42.0.0/16", "192.168.2.0/24", in_interface="cni0", out_interface="eth0"),
])
def test_every_shape_of_rule_is_taken_from_the_hint_without_parsing(
    obj: NetObject, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = State(owned=[obj])
    kernel = FakeKernel({("nft", f): render_iptables_save(state, f) for f in (4, 6)})
    parsed = _parsed_tagged_lines(monkeypatch)
    assert _reading(kernel, "nft", state)["owned"] == state.owned
    assert parsed == []
