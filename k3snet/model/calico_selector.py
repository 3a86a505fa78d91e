"""Calico's selector syntax (``nodeSelector``, ``namespaceSelector``) as Calico reads it.

Calico parses a pool's selectors with libcalico-go's own tokenizer and parser, not
Kubernetes' label selectors: blanks are spaces and tabs, ``all(``, ``has(`` and
``global(`` are one token each (blanks allowed inside the parentheses, not before
them), and a blank selector selects everything. k3snet reads them the same way for
four questions (and a fifth, whether it selects a given map of labels,
:func:`selects_labels`): can Calico parse this selector at all (Calico IPAM fails every
automatic assignment that meets a pool whose selector it cannot parse), does it
select everything, does it select nothing (``!all()``), and are two spellings the
same selector. The last three are answered by meaning, as far as a cheap normal form
tells it (:func:`selector_normal_form`: ``zone in {'b', 'a'}`` is ``zone in {'a', 'b'}``,
``!!has(x)`` is ``has(x)``, ``a == 'x' && b == 'y'`` is ``b == 'y' && (a == 'x')``);
selectors of different normal forms are taken to differ.

>>> same_selector(" all( ) ", "all()"), same_selector("!!has(x)", "has(x)")
(True, True)
>>> selector_problem("has(zone")
"no closing ')' after has("
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "ALL",
    "NOTHING",
    "canonical_selector",
    "same_selector",
    "selector_normal_form",
    "selector_problem",
    "selector_tokens",
    "selects_everything",
    "selects_labels",
    "selects_nothing",
]

Token = tuple[str, str]
"""One token: its kind and its value (a label or a string; empty for the others)."""
Node = tuple[Any, ...]
"""A node of a parsed selector: its kind first (``"and"``, ``"or"``, ``"not"``, ``"in"``,
``"not in"``, ``"op"``, ``"has"``, ``"all"``, ``"global"``), then its operands."""

_BLANKS = " \t"
_MAX_LABEL = 512
_IDENTIFIER = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-")
_SIMPLE = {"(": "(", ")": ")", "{": "{", "}": "}", ",": ","}
_PAIRS = {"=": ("==", "expected =="), "&": ("&&", "expected &&"), "|": ("||", "expected ||")}
_FUNCTIONS = (("all(", "all"), ("global(", "global"))
_OPERATORS = ((("contains",), "contains"), (("starts", "with"), "starts with"),
              (("ends", "with"), "ends with"), (("not", "in"), "not in"), (("in",), "in"))
_COMPARISONS = frozenset({"==", "!=", "contains", "starts with", "ends with"})
_EVERYTHING: tuple[tuple[Token, ...], ...] = ((), (("all", ""),))


class _UnparseableError(ValueError):
    """Calico's parser refuses the selector (the message is why)."""


def _identifier(text: str) -> tuple[str, str]:
    end = 0
    while end < len(text) and text[end] in _IDENTIFIER:
        end += 1
    if end == 0:
        raise _UnparseableError("expected identifier")
    if end > _MAX_LABEL:
        raise _UnparseableError(f"label too long: {text[:end]}")
    return text[:end], text[end:]


def _word_boundary(text: str) -> bool:
    return not text or text[0] not in _IDENTIFIER


def _cut_words(text: str, words: tuple[str, ...]) -> str | None:
    """``text`` after ``words`` (blanks allowed between them) and a word boundary, or None."""
    rest = text
    for word in words:
        if not rest.startswith(word):
            return None
        rest = rest[len(word):]
        if len(words) > 1:
            # Calico strips the blanks after each word of a two-word operator, the last
            # one's too, before it looks for the word boundary ("starts with x" is none).
            rest = rest.lstrip(_BLANKS)
    return rest if _word_boundary(rest) else None


def _operator(text: str, label: str) -> tuple[Token, str]:
    for words, kind in _OPERATORS:
        rest = _cut_words(text, words)
        if rest is not None:
            return (kind, ""), rest
    raise _UnparseableError(f"expected operator after label {label!r}")


def _closing(text: str, what: str) -> str:
    text = text.lstrip(_BLANKS)
    if not text.startswith(")"):
        raise _UnparseableError(f"no closing ')' after {what}")
    return text[1:]


def _word(text: str) -> tuple[Token, str]:
    """One token that is no punctuation: ``has(x)``, ``all()``, ``global()`` or a label."""
    if text.startswith("has("):
        label, rest = _identifier(text[4:].lstrip(_BLANKS))
        return ("has", label), _closing(rest, "has(")
    for prefix, kind in _FUNCTIONS:
        if text.startswith(prefix):
            return (kind, ""), _closing(text[len(prefix):], prefix)
    label, rest = _identifier(text)
    return ("label", label), rest


def _tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    rest = text
    while True:
        rest = rest.lstrip(_BLANKS)
        if not rest:
            return tokens
        first = rest[0]
        token: Token
        if first in _SIMPLE:
            token, rest = (_SIMPLE[first], ""), rest[1:]
        elif first in "\"'":
            end = rest.find(first, 1)
            if end < 0:
                raise _UnparseableError("unterminated string")
            token, rest = ("string", rest[1:end]), rest[end + 1:]
        elif first in _PAIRS:
            pair, problem = _PAIRS[first]
            if not rest.startswith(pair):
                raise _UnparseableError(problem)
            token, rest = (pair, ""), rest[2:]
        elif first == "!":
            token = ("!=", "") if rest.startswith("!=") else ("!", "")
            rest = rest[len(token[0]):]
        elif tokens and tokens[-1][0] == "label":
            token, rest = _operator(rest, tokens[-1][1])
        else:
            token, rest = _word(rest)
        tokens.append(token)


class _Parser:
    """Calico's recursive descent over the tokens: ``||`` over ``&&`` over operations."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.at = 0

    def kind(self, ahead: int = 0) -> str:
        at = self.at + ahead
        return self.tokens[at][0] if at < len(self.tokens) else "eof"

    def value(self, ahead: int = 0) -> str:
        return self.tokens[self.at + ahead][1]

    def either(self) -> Node:
        operands = [self.both()]
        while self.kind() == "||":
            self.at += 1
            operands.append(self.both())
        return operands[0] if len(operands) == 1 else ("or", tuple(operands))

    def both(self) -> Node:
        operands = [self.operation()]
        while self.kind() == "&&":
            self.at += 1
            operands.append(self.operation())
        return operands[0] if len(operands) == 1 else ("and", tuple(operands))

    def operation(self) -> Node:
        negations = 0
        while self.kind() == "!":
            self.at += 1
            negations += 1
        kind = self.kind()
        node: Node
        if kind == "has":
            node = ("has", self.value())
            self.at += 1
        elif kind in ("all", "global"):
            node = (kind,)
            self.at += 1
        elif kind == "label":
            node = self.comparison()
        elif kind == "(":
            self.at += 1
            node = self.either()
            if self.kind() != ")":
                raise _UnparseableError("expected )")
            self.at += 1
        elif kind == "eof":
            raise _UnparseableError("unexpected end of string looking for op")
        else:
            raise _UnparseableError(f"unexpected token {kind!r}")
        for _ in range(negations):
            node = ("not", node)
        return node

    def comparison(self) -> Node:
        if self.kind(1) == "eof":
            raise _UnparseableError("unexpected end of string looking for op")
        label, operator = self.value(), self.kind(1)
        if operator in _COMPARISONS:
            if self.kind(2) != "string":
                raise _UnparseableError("expected string")
            value = self.value(2)
            self.at += 3
            return ("op", operator, label, value)
        if operator in ("in", "not in"):
            if self.kind(2) != "{":
                raise _UnparseableError("expected set literal")
            self.at += 3
            values = []
            while self.kind() == "string":
                values.append(self.value())
                self.at += 1
                if self.kind() != ",":
                    break
                self.at += 1
            if self.kind() != "}":
                raise _UnparseableError("expected }")
            self.at += 1
            return ("in" if operator == "in" else "not in", label, tuple(values))
        raise _UnparseableError(f"expected == or != not {operator!r}")


def _parsed(text: str) -> tuple[tuple[Token, ...], Node]:
    tokens = _tokenize(text)
    if not tokens:
        return (), ALL  # Calico reads a blank selector as all()
    parser = _Parser(tokens)
    tree = parser.either()
    if parser.kind() != "eof":
        raise _UnparseableError(f"unexpected content at end of selector ({parser.kind()!r})")
    return tuple(tokens), tree


# ---------------------------------------------------------------- the normal form
#
# What a selector means, as libcalico-go's selector AST evaluates it on a map of labels:
# ``==``, ``in``, ``contains``, ``starts with`` and ``ends with`` are false for a label
# the map lacks, ``!=`` and ``not in`` true (so ``a != 'x'`` is ``!(a == 'x')`` and
# ``a not in {...}`` is ``!(a in {...})``); ``all()`` and ``global()`` are true. The
# normal form pushes every ``!`` down to an atom (De Morgan; ``!!x`` is ``x``), flattens
# and sorts ``&&`` and ``||`` (parentheses are gone with the tokens), spells ``==`` as a
# set of one value and a set as its sorted values, merges the sets of one label
# (``a in S || a in T`` is ``a in S | T``; ``a in S && a in T`` is ``a in S & T``), and
# applies only identities true of every map of labels: ``x && all()`` is ``x``,
# ``x || all()`` is ``all()``, ``x && !x`` selects nothing, ``x || !x`` everything. It is
# not complete (``has(a) && a == 'x'`` and ``a == 'x'`` stay two forms): two selectors of
# one normal form select the same labels; two of different forms may too.

ALL: Node = ("all",)
"""The normal form of ``all()`` (and of a blank selector): every map of labels."""
NOTHING: Node = ("not", ALL)
"""The normal form of ``!all()``: no map of labels."""


def _negated(atom: Node) -> Node:
    return atom[1] if atom[0] == "not" else ("not", atom)


def _set(label: str, values: Iterable[str]) -> Node:
    ordered = tuple(sorted(set(values)))
    return ("in", label, ordered) if ordered else NOTHING  # in {} holds for no map


def _normal(node: Node, negate: bool = False) -> Node:
    kind = node[0]
    if kind == "not":
        return _normal(node[1], not negate)
    if kind in ("and", "or"):
        flipped = {"and": "or", "or": "and"}[kind] if negate else kind
        return _combine(flipped, [_normal(child, negate) for child in node[1]])
    atom: Node
    if kind == "op" and node[1] in ("==", "!="):
        atom = _set(node[2], (node[3],))
        negate = negate != (node[1] == "!=")
    elif kind in ("in", "not in"):
        atom = _set(node[1], node[2])
        negate = negate != (kind == "not in")
    else:  # all(), global(), has(), contains, starts with, ends with
        atom = node
    return _negated(atom) if negate else atom


def _combine(kind: str, children: list[Node]) -> Node:
    """``&&`` (``kind`` "and") or ``||`` of normal forms, in normal form."""
    identity, absorbing = (ALL, NOTHING) if kind == "and" else (NOTHING, ALL)
    flat: list[Node] = []
    for child in children:
        flat.extend(child[1] if child[0] == kind else (child,))
    # The sets of one label: of "in" atoms (negated or not), "and" takes the
    # intersection of what may hold, "or" the union.
    sets: dict[tuple[bool, str], set[str]] = {}
    rest: list[Node] = []
    for child in flat:
        negative = child[0] == "not"
        atom = child[1] if negative else child
        if atom[0] == "in":
            values = set(atom[2])
            key = (negative, atom[1])
            if key not in sets:
                sets[key] = values
            # a in S && a in T: both; !(a in S) && !(a in T): in neither (the union
            # negated); and the other way round for ||.
            elif (kind == "and") != negative:
                sets[key] &= values
            else:
                sets[key] |= values
        else:
            rest.append(child)
    for (negative, label), values in sets.items():
        atom = _set(label, values)
        rest.append(_negated(atom) if negative else atom)
    found = set(rest) - {identity}
    if absorbing in found or any(_negated(child) in found for child in found):
        return absorbing
    if not found:
        return identity
    if len(found) == 1:
        return found.pop()
    return (kind, tuple(sorted(found, key=repr)))


def _quoted(value: str) -> str:
    return f'"{value}"' if "'" in value else f"'{value}'"


def _set_text(label: str, values: tuple[str, ...], *, negative: bool) -> str:
    if len(values) == 1:
        return f"{label} {'!=' if negative else '=='} {_quoted(values[0])}"
    return f"{label} {'not in' if negative else 'in'} {{{', '.join(map(_quoted, values))}}}"


def _render(node: Node, inner: bool = False) -> str:
    kind = node[0]
    if kind in ("and", "or"):
        text = f" {'&&' if kind == 'and' else '||'} ".join(
            _render(child, inner=kind == "and") for child in node[1])
        return f"({text})" if inner and kind == "or" else text
    negative = kind == "not"
    atom = node[1] if negative else node
    if atom[0] == "in":
        return _set_text(atom[1], atom[2], negative=negative)
    text = {"has": lambda: f"has({atom[1]})",
            "op": lambda: f"{atom[2]} {atom[1]} {_quoted(atom[3])}"}.get(
        atom[0], lambda: f"{atom[0]}()")()
    return "!" + text if negative else text


@functools.lru_cache(maxsize=1024)
def _read(text: str) -> tuple[tuple[Token, ...] | None, Node | None, str | None]:
    """The tokens of ``text`` and its normal form, or why Calico cannot parse it, once per
    text: a plan asks of each pool's selectors for every pod CIDR, and of every pool for
    each."""
    try:
        tokens, tree = _parsed(text)
    except _UnparseableError as exc:
        return None, None, str(exc)
    return tokens, _normal(tree), None


def selector_tokens(text: str) -> tuple[Token, ...] | None:
    """The tokens of selector ``text`` as Calico reads them, or None when Calico cannot
    parse it.

    >>> selector_tokens("x=='y'") == selector_tokens(" x  ==  'y' ")
    True
    """
    return _read(text)[0]


def selector_normal_form(text: str) -> Node | None:
    """The normal form of selector ``text`` (see above), or None when Calico cannot parse
    it: two selectors of one normal form select the same labels.

    >>> selector_normal_form("zone in {'b', 'a'}") == selector_normal_form(
    ...     "(zone == 'a') || !!(zone == 'b')")
    True
    """
    return _read(text)[1]


def canonical_selector(text: str) -> str | None:
    """Selector ``text`` in its normal form, spelt as Calico parses it (None when Calico
    cannot parse ``text``).

    >>> canonical_selector("!(b == 'y' || !has(a))")
    "has(a) && b != 'y'"
    """
    form = selector_normal_form(text)
    return None if form is None else _render(form)


def same_selector(text: str, other: str) -> bool:
    """``text`` and ``other`` are selectors Calico parses, of one normal form: they select
    the same labels (however spaced, parenthesised, ordered or negated twice). One Calico
    cannot parse is never the same as another.

    >>> same_selector("a == 'x' && b == 'y'", "(b == 'y') && a == 'x'")
    True
    """
    form = selector_normal_form(text)
    return form is not None and form == selector_normal_form(other)


def selector_problem(text: str) -> str | None:
    """Why Calico cannot parse selector ``text`` (its parser's reason), or None."""
    return _read(text)[2]


def selects_everything(text: str) -> bool:
    """``text`` selects every map of labels by its normal form: ``all()`` however spaced,
    negated twice or parenthesised, a blank selector (Calico's selector of everything),
    ``a not in {}``, ``has(a) || !has(a)``."""
    return selector_normal_form(text) == ALL


def selects_nothing(text: str) -> bool:
    """``text`` selects no map of labels by its normal form: ``!all()`` (libcalico-go's
    ``selector.NoMatch``, an odd number of ``!`` before ``all()``), ``a in {}``,
    ``x && !x``. Such a pool is parked: IPAM gives no pod its addresses.

    >>> selects_nothing(" ! all( ) "), selects_nothing("!!all()"), selects_nothing("has(x")
    (True, False, False)
    """
    return selector_normal_form(text) == NOTHING


_COMPARE: dict[str, Callable[[str, str], bool]] = {
    "contains": lambda value, wanted: wanted in value,
    "starts with": lambda value, wanted: value.startswith(wanted),
    "ends with": lambda value, wanted: value.endswith(wanted),
    "==": lambda value, wanted: value == wanted,
    "!=": lambda value, wanted: value != wanted}


def _holds(node: Node, labels: Mapping[str, str]) -> bool:
    """Whether parsed selector ``node`` selects ``labels``, as libcalico-go's AST evaluates
    it (see the normal form above: a label the map lacks makes ``!=`` and ``not in``
    true, every other comparison false)."""
    kind = node[0]
    if kind in ("and", "or"):
        results = (_holds(child, labels) for child in node[1])
        return all(results) if kind == "and" else any(results)
    if kind == "not":
        return not _holds(node[1], labels)
    if kind in ("in", "not in"):
        found = node[1] in labels and labels[node[1]] in node[2]
        return bool(found == (kind == "in"))
    if kind != "op":  # all(), global(), has()
        return bool(kind != "has" or node[1] in labels)
    _, operator, label, wanted = node
    if label not in labels:
        return bool(operator == "!=")
    return _COMPARE[operator](labels[label], wanted)


def selects_labels(text: str, labels: Mapping[str, str]) -> bool | None:
    """Whether selector ``text`` selects the map ``labels`` (a node's, as Calico IPAM asks
    of a pool's ``nodeSelector``, libcalico-go ``SelectsNode``), or None when Calico
    cannot parse it (IPAM's answer is then an error, not a verdict).

    >>> selects_labels("zone == 'a' && !has(gpu)", {"zone": "a"})
    True
    >>> selects_labels("zone != 'a'", {}), selects_labels("zone in {'a'}", {})
    (True, False)
    """
    try:
        tree = _parsed(text)[1]
    except _UnparseableError:
        return None
    return _holds(tree, labels)
