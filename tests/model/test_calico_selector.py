"""Calico's selector syntax as k3snet reads it, against a small model of Calico's tokenizer.

The model knows only where Calico's tokenizer (libcalico-go ``selector/tokenizer``)
takes blanks: spaces and tabs, anywhere between tokens and inside ``all( )`` and
``has( x )``, never inside ``all(``, ``has(`` or ``==``; a blank inside a quoted string
is part of the string. Each shape is cut at its gaps; a variant fills the gaps with
blanks, and the model says, gap by gap, whether Calico parses it and whether it is
still the same selector.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k3snet.model import calico_selector
from k3snet.model.calico_selector import (
    ALL,
    NOTHING,
    Node,
    canonical_selector,
    same_selector,
    selector_normal_form,
    selector_problem,
    selector_tokens,
    selects_everything,
    selects_labels,
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
    ("!all(", False),
    # By meaning: no map of labels satisfies these either.
    ("!all() && has(x)", True), ("!(all())", True), ("x in {}", True),
    ("has(x) && !has(x)", True), ("x == 'a' && x == 'b'", True),
    ("x == 'a' || !all()", False),
])
def test_only_a_selector_no_labels_satisfy_selects_nothing(text: str, nothing: bool) -> None:
    # Calico's selector of nothing is !all() (libcalico-go selector.NoMatch); each ! of
    # the parser's leading run flips it (parseOperation). IPAM evaluates a pool's
    # selector on the node's labels: one no map of labels satisfies parks the pool as
    # !all() does. One Calico cannot parse selects nothing either, but IPAM fails on it
    # instead of skipping the pool.
    assert selects_nothing(text) == nothing


def test_a_plan_parses_each_selector_text_at_most_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Judging a pod CIDR asks of every pool's selectors, for each pool of the CIDR
    # (unusable_reason, breaks_ipam, _outside, _ahead): unparsed each time, 300 pools
    # made met_by a hundred times slower than before selectors were parsed at all.
    calls: list[str] = []
    parsed = calico_selector._parsed

    def counting(text: str) -> tuple[tuple[tuple[str, str], ...], Node]:
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


# ---------------------------------------------------------------- selectors by meaning
#
# A selector drawn as a tree of this module's own, spelt as Calico's grammar allows
# (parentheses, !!, either quote, blanks), and evaluated here as libcalico-go's selector
# AST evaluates it (parser/ast.go): ==, in, contains, starts with and ends with are false
# for a missing label; != and not in true; all() true. Every map of labels over a small
# vocabulary is tried (a label missing, or each value).

LABELS = ("a", "b", "k8s.io/c")
VALUES = ("", "x", "xy", "it's")
MAPS = [{label: value for label, value in zip(LABELS, values, strict=True) if value is not None}
        for values in itertools.product((None, *VALUES), repeat=len(LABELS))]
COMPARISONS = ("==", "!=", "contains", "starts with", "ends with")

Tree = tuple[Any, ...]


def _leaves() -> st.SearchStrategy[Tree]:
    label, value = st.sampled_from(LABELS), st.sampled_from(VALUES)
    return st.one_of(
        st.just(("all",)),
        st.tuples(st.just("has"), label),
        st.tuples(st.just("cmp"), st.sampled_from(COMPARISONS), label, value),
        st.tuples(st.just("set"), st.sampled_from(("in", "not in")), label,
                  st.lists(value, max_size=3).map(tuple)),
    )


def _trees(leaves: int) -> st.SearchStrategy[Tree]:
    return st.recursive(_leaves(), lambda inner: st.one_of(
        st.tuples(st.just("not"), inner),
        st.tuples(st.just("and"), st.lists(inner, min_size=2, max_size=3).map(tuple)),
        st.tuples(st.just("or"), st.lists(inner, min_size=2, max_size=3).map(tuple)),
    ), max_leaves=leaves)


# Built once: a strategy built at each draw costs more than the test.
TREES = {leaves: _trees(leaves) for leaves in (3, 5)}
BLANKS = st.sampled_from(["", " ", "\t "])
QUOTES = st.sampled_from("'\"")
COIN = st.booleans()


def _truth(tree: Tree, labels: dict[str, str]) -> bool:
    """What Calico's AST says of ``tree`` on ``labels``."""
    kind = tree[0]
    if kind == "not":
        return not _truth(tree[1], labels)
    if kind in ("and", "or"):
        results = [_truth(child, labels) for child in tree[1]]
        return all(results) if kind == "and" else any(results)
    if kind in ("all", "has"):
        return kind == "all" or tree[1] in labels
    _, op, label, value = tree
    if label not in labels:  # only != and not in hold for a missing label
        return op in ("!=", "not in")
    found = labels[label]
    checks: dict[str, Callable[[], bool]] = {
        "==": lambda: found == value, "!=": lambda: found != value,
        "in": lambda: found in value, "not in": lambda: found not in value,
        "contains": lambda: value in found,
        "starts with": lambda: found.startswith(value),
        "ends with": lambda: found.endswith(value)}
    return checks[op]()


def _quote(draw: st.DrawFn, value: str) -> str:
    quote = '"' if "'" in value else draw(QUOTES)
    return f"{quote}{value}{quote}"


def _spell(draw: st.DrawFn, tree: Tree, *, shuffle: random.Random | None = None) -> str:
    """A text Calico parses to ``tree`` (``shuffle``: its operands and set values in
    another order, which means the same), with parentheses and double negations thrown
    in at random."""
    kind = tree[0]
    blank = draw(BLANKS)
    if kind == "all":
        text = "all()"
    elif kind == "has":
        text = f"has({blank}{tree[1]}{blank})"
    elif kind == "not":
        text = f"!({_spell(draw, tree[1], shuffle=shuffle)})"
    elif kind in ("and", "or"):
        children = list(tree[1])
        if shuffle:
            shuffle.shuffle(children)
        text = f"{blank}{'&&' if kind == 'and' else '||'}{blank}".join(
            f"({_spell(draw, child, shuffle=shuffle)})" for child in children)
    elif kind == "set":
        values = list(tree[3])
        if shuffle:
            shuffle.shuffle(values)
        text = (f"{tree[2]} {tree[1]} {{{blank}"
                + ",".join(_quote(draw, v) for v in values) + "}")
    else:
        text = f"{tree[2]}{blank} {tree[1]} {_quote(draw, tree[3])}"
    if draw(COIN):
        text = f"({blank}{text}{blank})"
    if draw(COIN):
        text = f"!!{blank}{text}"
    return text


@st.composite
def spelt(draw: st.DrawFn, leaves: int = 5) -> tuple[Tree, str, str]:
    """A tree, a spelling of it, and a spelling of it with its operands reordered."""
    tree = draw(TREES[leaves])
    return tree, _spell(draw, tree), _spell(draw, tree, shuffle=draw(st.randoms()))


def _evaluate(form: Node, labels: dict[str, str]) -> bool:
    """The module's normal form evaluated (its atoms: all, global, has, in, op)."""
    kind = form[0]
    if kind in ("all", "global"):
        return True
    if kind == "not":
        return not _evaluate(form[1], labels)
    if kind in ("and", "or"):
        results = [_evaluate(child, labels) for child in form[1]]
        return all(results) if kind == "and" else any(results)
    if kind == "has":
        return form[1] in labels
    if kind == "in":
        return form[1] in labels and labels[form[1]] in form[2]
    _, op, label, value = form
    return label in labels and _truth(("cmp", op, label, value), labels)


@settings(max_examples=examples(200))
@given(spelt())
def test_the_normal_form_of_a_selector_selects_the_labels_calico_s_ast_selects(
    case: tuple[Tree, str, str],
) -> None:
    tree, text, shuffled = case
    form = selector_normal_form(text)
    assert form is not None, (text, selector_problem(text))
    for labels in MAPS:
        assert _evaluate(form, labels) == _truth(tree, labels), (text, form, labels)
    # Its spelling reads back to it (so it means the same too), and the operands of
    # && and || and the values of a set, in any order, make the same normal form.
    canonical = canonical_selector(text)
    assert canonical is not None
    assert selector_normal_form(canonical) == form, canonical
    assert same_selector(shuffled, text), (shuffled, text)
    assert selects_everything(text) == (form == ALL)
    assert selects_nothing(text) == (form == NOTHING)
    if form == ALL:
        assert all(_truth(tree, labels) for labels in MAPS)
    if form == NOTHING:
        assert not any(_truth(tree, labels) for labels in MAPS)


@settings(max_examples=examples(100))
@given(spelt())
def test_selects_labels_selects_the_labels_calico_s_ast_selects(
    case: tuple[Tree, str, str],
) -> None:
    # A pool's nodeSelector decides whether Calico IPAM still assigns from the blocks a
    # node holds in the pool (libcalico-go SelectsNode: the selector evaluated on the
    # node's labels): every map of labels gets the AST's answer.
    tree, text, shuffled = case
    for labels in MAPS:
        assert selects_labels(text, labels) == _truth(tree, labels), (text, labels)
        assert selects_labels(shuffled, labels) == _truth(tree, labels), (shuffled, labels)
    assert selects_labels("has(x", {"x": ""}) is None  # Calico cannot parse it


@settings(max_examples=examples(100))
@given(spelt(3), spelt(3))
def test_two_selectors_of_one_normal_form_select_the_same_labels(
    one: tuple[Tree, str, str], other: tuple[Tree, str, str],
) -> None:
    # Drawn from a small vocabulary, two selectors often share a normal form; when they
    # do, Calico's AST must select the same maps with both.
    if same_selector(one[1], other[1]):
        assert all(_truth(one[0], labels) == _truth(other[0], labels) for labels in MAPS)


@pytest.mark.parametrize(("text", "other"), [
    ("zone in {'a','b'}", "zone in {'b','a'}"),
    ("zone in {'a','b'}", "zone == 'b' || zone == 'a'"),
    ("!!has(x)", "has(x)"),
    ("a == 'x' && b == 'y'", "b == 'y' && a == 'x'"),
    ("((a == 'x') && ((b == 'y')))", "a == 'x' && b == 'y'"),
    ("a != 'x'", "!(a == 'x')"),
    ("a not in {'x', 'y'}", "a != 'y' && a != 'x'"),
    ("!(a == 'x' || !has(b))", "has(b) && a != 'x'"),
    ("all()", "  "),
    ("all()", "a not in {}"),
])
def test_spellings_of_one_meaning_are_the_same_selector(text: str, other: str) -> None:
    assert same_selector(text, other)
    assert canonical_selector(text) == canonical_selector(other)


@pytest.mark.parametrize(("text", "other"), [
    # != holds for a missing label, == does not: has(a) is no part of a != 'x'.
    ("a != 'x'", "has(a) && a != 'x'"),
    ("a not in {'x'}", "a in {'y'}"),
    ("a == 'x' && b == 'y'", "a == 'x' || b == 'y'"),
    ("zone in {'a','b'}", "zone in {'a'}"),
    ("!has(a)", "a == ''"),
    ("a contains 'x'", "a starts with 'x'"),
    ("has(x", "has(x"),  # unparseable is never the same
])
def test_selectors_of_other_meanings_are_not_the_same(text: str, other: str) -> None:
    assert not same_selector(text, other)
