"""Calico's selector syntax as k3snet reads it, against a small model of Calico's tokenizer.

The model knows only where Calico's tokenizer (libcalico-go ``selector/tokenizer``)
takes blanks: spaces and tabs, anywhere between tokens and inside ``all( )`` and
``has( x )``, never inside ``all(``, ``has(`` or ``==``; a blank inside a quoted string
is part of the string. Each shape is cut at its gaps; a variant fills the gaps with
blanks, and the model says, gap by gap, whether Calico parses it and whether it is
still the same selector.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k3snet.model import calico_selector
from k3snet.model.calico_selector import (
    selector_problem,
    selector_tokens,
    selects_everything,
    selects_nothing,
)
from k3snet.model.cni import CalicoPodCIDR, CalicoPools, IPPool
from tests.examples import examples

# A shape: its pieces, and what a blank does in the gap before each piece and after the
# last: "free" (Calico skips spaces and tabs there), "fatal" (any blank breaks the
# token), "value" (inside a string: the selector stays parseable but is another one).
SHAPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "all()": (("all", "(", ")"), ("free", "fatal", "free", "free")),
    "has(x)": (("has", "(", "x", ")"), ("free", "fatal", "free", "free", "free")),
    "x == 'y'": (("x", "=", "=", "'", "y", "'"),
                 ("free", "free", "fatal", "free", "value", "value", "free")),
}
CALICO_BLANKS = " \t"
OTHER_BLANKS = "\u00a0\u2003\n\r\v\f"  # Python's \s, never Calico's


@st.composite
def variants(draw: st.DrawFn) -> tuple[str, str, bool, bool]:
    """A shape, a spelling of it with blanks in its gaps, and the model's verdict:
    (shape, text, Calico parses it, it is the same selector as the shape)."""
    shape = draw(st.sampled_from(sorted(SHAPES)))
    pieces, gaps = SHAPES[shape]
    fills = [draw(st.text(st.sampled_from(CALICO_BLANKS + OTHER_BLANKS), max_size=3))
             for _ in gaps]
    parses = same = True
    for kind, fill in zip(gaps, fills, strict=True):
        if not fill:
            continue
        if kind == "value":
            same = False
        elif kind == "fatal" or any(c not in CALICO_BLANKS for c in fill):
            parses = False
    text = "".join(fill + piece for fill, piece in zip(fills, pieces, strict=False)) + fills[-1]
    return shape, text, parses, parses and same


@settings(max_examples=examples(300))
@given(variants())
def test_a_selector_spaced_as_calico_s_tokenizer_allows_is_the_same_selector(
    variant: tuple[str, str, bool, bool],
) -> None:
    shape, text, parses, same = variant
    tokens = selector_tokens(text)
    assert (tokens is not None) == parses, (text, selector_problem(text))
    assert (selector_problem(text) is None) == parses
    assert (tokens == selector_tokens(shape)) == same, (text, tokens)
    assert selects_everything(text) == (same and shape == "all()")


@pytest.mark.parametrize(("text", "problem"), [
    ("has(zone", "no closing ')' after has("),
    ("zone == 'a", "unterminated string"),
    ("zone = 'a'", "expected =="),
    ("zone", "unexpected end of string looking for op"),
    ("zone ==", "expected string"),
    ("zone in 'a'", "expected set literal"),
    ("zone in {'a'", "expected }"),
    ("(all()", "expected )"),
    ("a b", "expected operator after label 'a'"),
    ("all() all()", "unexpected content at end of selector"),
    ("a & b", "expected &&"),
    ("a | b", "expected ||"),
    ("all ()", "expected == or != not '('"),
    ("&&", "unexpected token '&&'"),
    ("x" * 513 + " == 'a'", "label too long"),
    ("zone == 'a' ||", "unexpected end of string looking for op"),
])
def test_what_calico_s_parser_refuses_is_a_problem_saying_why(text: str, problem: str) -> None:
    assert problem in (selector_problem(text) or "")
    assert selector_tokens(text) is None


@pytest.mark.parametrize("text", [
    "", "all()", "!all()", "!!has(a)", "a != 'b'", "a in {}", "a in {'b',}", "a not in {'b'}",
    "a notin {'b'}", "a contains 'b'", "a starts with 'b'", "a startswith 'b'",
    "a ends  with \"b\"", "(a == 'b' || c == 'd') && !has(e)", "global()", "x" * 512 + "=='a'",
    "k8s.io/zone-a_1 == 'x'",
    # Where Calico's tokenizer needs no blank: after in, contains and with (a quote or a
    # brace is a word boundary), between the words of not in, and a string with the
    # other quote in it.
    "a in{'b'}", "a contains'b'", "a ends with'b'", "a not\tin {'b' , 'c' }", "x == ''",
    "x == \"a'b\"", "!x == 'a'", "! ! has( x )", "((has(x)))", "!(all())", "global( )",
])
def test_what_calico_s_parser_takes_has_tokens(text: str) -> None:
    assert selector_problem(text) is None
    assert selector_tokens(text) is not None


@pytest.mark.parametrize(("text", "nothing"), [
    ("!all()", True), (" ! all( ) ", True), ("!\t!\t!all()", True),
    ("!!all()", False), ("all()", False), ("", False), ("!has(x)", False),
    ("!all() && has(x)", False), ("!all(", False),
])
def test_only_an_odd_number_of_negations_of_all_selects_nothing(text: str, nothing: bool) -> None:
    # Calico's selector of nothing is !all() (libcalico-go selector.NoMatch); each ! of
    # the parser's leading run flips it (parseOperation). One Calico cannot parse
    # selects nothing either, but IPAM fails on it instead of skipping the pool.
    assert selects_nothing(text) == nothing


def test_a_plan_parses_each_selector_text_at_most_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Judging a pod CIDR asks of every pool's selectors, for each pool of the CIDR
    # (unusable_reason, breaks_ipam, _outside, _ahead): unparsed each time, 300 pools
    # made met_by a hundred times slower than before selectors were parsed at all.
    calls: list[str] = []
    parsed = calico_selector._parsed

    def counting(text: str) -> tuple[tuple[str, str], ...]:
        calls.append(text)
        return parsed(text)

    monkeypatch.setattr(calico_selector, "_parsed", counting)
    pools = [IPPool("default", "10.42.0.0/16", nat_outgoing=True)] + [
        IPPool(f"p{i:02d}", f"10.100.{i}.0/24", nat_outgoing=True, block_size=26,
               node_selector=f"zone == 'once-{i % 3}'", namespace_selector="has(once)")
        for i in range(30)]
    wanted = CalicoPodCIDR("10.42.0.0/16", nat_outgoing=True)
    assert wanted.met_by(CalicoPools(tuple(pools)))
    assert sorted(set(calls)) == sorted(calls)
