"""Calico's selector syntax (``nodeSelector``, ``namespaceSelector``) as Calico reads it.

Calico parses a pool's selectors with libcalico-go's own tokenizer and parser, not
Kubernetes' label selectors: blanks are spaces and tabs, ``all(``, ``has(`` and
``global(`` are one token each (blanks allowed inside the parentheses, not before
them), and a blank selector selects everything. k3snet reads them the same way for
four questions: can Calico parse this selector at all (Calico IPAM fails every
automatic assignment that meets a pool whose selector it cannot parse), does it
select everything, does it select nothing (``!all()``), and are two spellings the
same selector
(:func:`selector_tokens` compares them token by token).

>>> selector_tokens(" all( ) ") == selector_tokens("all()")
True
>>> selector_problem("has(zone")
"no closing ')' after has("
"""

from __future__ import annotations

import functools

__all__ = ["selector_problem", "selector_tokens", "selects_everything", "selects_nothing"]

Token = tuple[str, str]
"""One token: its kind and its value (a label or a string; empty for the others)."""

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

    def either(self) -> None:
        self.both()
        while self.kind() == "||":
            self.at += 1
            self.both()

    def both(self) -> None:
        self.operation()
        while self.kind() == "&&":
            self.at += 1
            self.operation()

    def operation(self) -> None:
        while self.kind() == "!":
            self.at += 1
        kind = self.kind()
        if kind in ("has", "all", "global"):
            self.at += 1
        elif kind == "label":
            self.comparison()
        elif kind == "(":
            self.at += 1
            self.either()
            if self.kind() != ")":
                raise _UnparseableError("expected )")
            self.at += 1
        elif kind == "eof":
            raise _UnparseableError("unexpected end of string looking for op")
        else:
            raise _UnparseableError(f"unexpected token {kind!r}")

    def comparison(self) -> None:
        if self.kind(1) == "eof":
            raise _UnparseableError("unexpected end of string looking for op")
        operator = self.kind(1)
        if operator in _COMPARISONS:
            if self.kind(2) != "string":
                raise _UnparseableError("expected string")
            self.at += 3
        elif operator in ("in", "not in"):
            if self.kind(2) != "{":
                raise _UnparseableError("expected set literal")
            self.at += 3
            while self.kind() == "string":
                self.at += 1
                if self.kind() != ",":
                    break
                self.at += 1
            if self.kind() != "}":
                raise _UnparseableError("expected }")
            self.at += 1
        else:
            raise _UnparseableError(f"expected == or != not {operator!r}")


def _parsed(text: str) -> tuple[Token, ...]:
    tokens = _tokenize(text)
    if tokens:
        parser = _Parser(tokens)
        parser.either()
        if parser.kind() != "eof":
            raise _UnparseableError(f"unexpected content at end of selector ({parser.kind()!r})")
    return tuple(tokens)


@functools.lru_cache(maxsize=1024)
def _read(text: str) -> tuple[tuple[Token, ...] | None, str | None]:
    """The tokens of ``text`` or why Calico cannot parse it, once per text: a plan asks
    of each pool's selectors for every pod CIDR, and of every pool for each."""
    try:
        return _parsed(text), None
    except _UnparseableError as exc:
        return None, str(exc)


def selector_tokens(text: str) -> tuple[Token, ...] | None:
    """The tokens of selector ``text`` as Calico reads them, or None when Calico cannot
    parse it. Two selectors with the same tokens are the same selector, however spaced.

    >>> selector_tokens("x=='y'") == selector_tokens(" x  ==  'y' ")
    True
    """
    return _read(text)[0]


def selector_problem(text: str) -> str | None:
    """Why Calico cannot parse selector ``text`` (its parser's reason), or None."""
    return _read(text)[1]


def selects_everything(text: str) -> bool:
    """``text`` is ``all()`` however spaced, or blank: Calico's selector of everything."""
    return selector_tokens(text) in _EVERYTHING


def selects_nothing(text: str) -> bool:
    """``text`` is ``!all()`` however spaced (an odd number of ``!`` before ``all()``):
    Calico's own selector of nothing (libcalico-go's ``selector.NoMatch``), which parks
    a pool so that IPAM gives no pod its addresses.

    >>> selects_nothing(" ! all( ) "), selects_nothing("!!all()"), selects_nothing("has(x")
    (True, False, False)
    """
    tokens = selector_tokens(text)
    if not tokens:
        return False
    negations = 0
    while tokens[negations] == ("!", ""):
        negations += 1
    return negations % 2 == 1 and tokens[negations:] == (("all", ""),)
