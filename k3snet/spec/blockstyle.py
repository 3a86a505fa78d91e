"""A reader for the plain block style specs are written in, agreeing with PyYAML.

PyYAML builds a node object for every scalar, mapping and sequence and then
constructs the data in Python, even with libyaml: most of the time a large spec
takes to load. Specs are written in a small part of YAML (block mappings and
sequences, plain or simply quoted scalars, one-line flow lists, comments), which
:func:`read_block_style` reads line by line. Anything else (anchors, tags,
multi-line scalars, escapes, duplicate keys, tabs, non-ASCII text, a value
PyYAML would read as a float or a date...) makes it answer ``None``, and the
caller parses the text with PyYAML, which then also gives the error with its
line and column.

Scalars are typed by PyYAML's own implicit resolvers (YAML 1.1: ``yes`` is
``True``, ``010`` is not ten), so a document this module reads gives exactly
what PyYAML's safe loader gives; ``tests/spec/test_blockstyle.py`` checks that on
generated documents.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from k3snet._regex import lazy_pattern

__all__ = ["CONTROL", "read_block_style"]

CONTROL = lazy_pattern(r"[\x00-\x09\x0b-\x1f\x7f]")
"""Tabs, carriage returns and other control characters: left to PyYAML (with
non-ASCII text), which refuses some and reads others in ways this reader does not."""
_LINE = lazy_pattern(r"""(\ *)(?:
    (-\ +)?([A-Za-z_][A-Za-z0-9_./-]{0,999}):(?:\ +(.*))?  # key: value, maybe after "- "
    | -\ +((?!-(?:\ |$))[^\#\ ].*)                       # - value (but not "- -" nor "- - x")
    | (?:\#.*)?                                       # blank, or a comment
    )$""", re.VERBOSE)
# YAML 1.2's core schema numbers (editors, the JSON Schema's tools): PyYAML (YAML 1.1) reads
# some as text (09, 0o17, 1e3, 1.0e3), left to PyYAML's loader, which refuses them.
YAML12_NUMBER = lazy_pattern(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+"
                           r"|[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                           r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)")
_PLAIN_START = lazy_pattern(r"[A-Za-z0-9_./~+=<(]|-[A-Za-z0-9_.]")
_DECIMAL = lazy_pattern(r"[-+]?(?:0|[1-9][0-9]{0,17})$")  # longer: PyYAML's (and its limits)
_DEEPEST = 32
"""Blocks nested deeper are PyYAML's (k3snet.spec.source refuses them after reading).
Keys longer than YAML's 1 024 characters for a simple key are PyYAML's too."""
_STR, _INT, _BOOL, _NULL = (f"tag:yaml.org,2002:{name}" for name in ("str", "int", "bool", "null"))
YAML_BOOLS = {"yes": True, "no": False, "true": True, "false": False, "on": True, "off": False}
"""The plain words YAML 1.1 (PyYAML, Ansible) reads as booleans, lower-cased."""


class _NotBlockStyleError(Exception):
    """The text uses YAML this reader leaves to PyYAML."""


def read_block_style(text: str, resolve: Callable[[str], str]) -> dict[str, Any] | None:
    """The mapping a plain block-style YAML ``text`` holds, or ``None``.

    ``resolve`` gives the tag PyYAML's implicit resolvers give a plain scalar
    (:mod:`k3snet.spec.source` passes PyYAML's own). ``None`` means the text is
    not a mapping in the style this reader knows; it says nothing on whether
    the text is valid YAML.
    """
    if not text.isascii() or CONTROL.search(text):
        return None
    reader = _Reader(resolve)
    try:
        reader.tokenize(text[4:] if text.startswith("---\n") else text)
        if not reader.tokens or reader.tokens[0][1]:  # no mapping
            return None
        data, end = reader.mapping(0, reader.tokens[0][0])
        if end != len(reader.tokens):  # a line no block took: deeper than a one-line value...
            return None
    except _NotBlockStyleError:
        return None
    return data


# A token is one meaningful line: (indent, is a sequence item, key or None, the
# value's text or None when the value follows on the next lines). "- key: value"
# is two tokens: the item, then the entry at the column of its key.
_Token = tuple[int, bool, str | None, str | None]


class _Reader:
    def __init__(self, resolve: Callable[[str], str]) -> None:
        self.resolve = resolve
        self.tokens: list[_Token] = []
        self.scalars: dict[str, Any] = {}
        self.keys: set[str] = set()
        self.depth = 0

    def tokenize(self, text: str) -> None:
        tokens = self.tokens
        match = _LINE.compiled().match  # the compiled method: this loop reads every line
        for line in text.split("\n"):
            parts = match(line)
            if parts is None:
                raise _NotBlockStyleError
            indent, dash, key, value, item = parts.groups()
            if key is not None:
                if value and ("#" in value or value[-1] == " "):
                    value = _uncommented(value)
                if dash is None:
                    tokens.append((len(indent), False, key, value or ""))
                else:
                    tokens.append((len(indent), True, None, None))
                    tokens.append((len(indent) + len(dash), False, key, value or ""))
            elif item is not None:
                if "#" in item or item[-1] == " ":
                    item = _uncommented(item)
                tokens.append((len(indent), True, None, item))

    def node(self, at: int, outer: int) -> tuple[Any, int]:
        """The block that starts at token ``at``, nested deeper than column ``outer``."""
        tokens = self.tokens
        if at == len(tokens) or tokens[at][0] <= outer:
            return None, at
        indent, item = tokens[at][0], tokens[at][1]
        return self.sequence(at, indent) if item else self.mapping(at, indent)

    def enter(self) -> None:
        self.depth += 1
        if self.depth > _DEEPEST:
            raise _NotBlockStyleError

    def mapping(self, at: int, indent: int) -> tuple[dict[str, Any], int]:
        tokens, count, keys = self.tokens, len(self.tokens), self.keys
        result: dict[str, Any] = {}
        self.enter()
        while at < count:
            column, item, key, text = tokens[at]
            if column != indent or item or key is None:
                break
            if key not in keys:
                if self.scalar(key) != key:  # e.g. "on", a bool
                    raise _NotBlockStyleError
                keys.add(key)
            if key in result:  # PyYAML's loader refuses it, with the line
                raise _NotBlockStyleError
            at += 1
            if text:
                result[key] = self.value(text)
            elif at < count and tokens[at][0] == indent and tokens[at][1]:
                result[key], at = self.sequence(at, indent)  # a list at the key's own column
            else:
                result[key], at = self.node(at, indent)
        self.depth -= 1
        return result, at

    def sequence(self, at: int, indent: int) -> tuple[list[Any], int]:
        tokens, count = self.tokens, len(self.tokens)
        result: list[Any] = []
        self.enter()
        while at < count:
            column, item, _, text = tokens[at]
            if column != indent or not item:
                break
            at += 1
            if text is None:  # "- key: value": a mapping at the key's column
                value, at = self.mapping(at, tokens[at][0])
                result.append(value)
                continue
            if not text:  # only a comment after the dash
                raise _NotBlockStyleError
            result.append(self.value(text))
        self.depth -= 1
        return result, at

    def value(self, text: str) -> Any:
        first = text[0]
        if first == "[":
            return self.flow_list(text)
        if first == "{":
            if text == "{}":
                return {}
            raise _NotBlockStyleError
        if first in "'\"":
            return _quoted(text)
        if text[-1] == ":" or ": " in text:
            raise _NotBlockStyleError  # PyYAML refuses a mapping here
        return self.scalar(text)

    def flow_list(self, text: str) -> list[Any]:
        if not text.endswith("]") or "[" in text[1:] or "{" in text or "}" in text:
            raise _NotBlockStyleError
        inner = text[1:-1].strip(" ")
        if not inner:
            return []
        result: list[Any] = []
        for part in inner.split(","):
            item = part.strip(" ")
            if not item or item[0] in "'\"":
                if item and "," not in item:
                    result.append(_quoted(item))
                    continue
                raise _NotBlockStyleError
            if item[-1] == ":" or ": " in item or "#" in item or "?" in item or "]" in item:
                raise _NotBlockStyleError  # libyaml and PyYAML differ on some, refuse others
            result.append(self.scalar(item))
        return result

    def scalar(self, text: str) -> Any:
        """A plain scalar typed as PyYAML types it: str, a decimal int, a bool or null."""
        value = self.scalars.get(text, _NotBlockStyleError)
        if value is not _NotBlockStyleError:
            return value
        if _PLAIN_START.match(text) is None:
            raise _NotBlockStyleError
        tag = self.resolve(text)
        if tag == _STR and YAML12_NUMBER.fullmatch(text) is None:
            value = text
        elif tag == _INT and _DECIMAL.match(text):
            value = int(text)
        elif tag == _BOOL:
            value = YAML_BOOLS[text.lower()]
        elif tag == _NULL:
            value = None
        else:
            raise _NotBlockStyleError  # floats, dates, octal or sexagesimal ints...
        self.scalars[text] = value
        return value


def _uncommented(text: str) -> str:
    """A value's text without a trailing comment and spaces."""
    if text[0] in "'\"":  # a quoted scalar may hold " #"
        end = text.find(text[0], 1) + 1
        rest = text[end:].lstrip(" ")
        if end and (not rest or (rest[0] == "#" and text[end] == " ")):
            return text[:end]
        return text.rstrip(" ")  # _quoted() leaves it to PyYAML
    if text[0] == "#":
        return ""
    cut = text.find(" #")
    return (text if cut < 0 else text[:cut]).strip(" ")


def _quoted(text: str) -> str:
    """A quoted scalar on one line with no escapes, else left to PyYAML."""
    quote = text[0]
    end = text.find(quote, 1)
    if end < 0 or (quote == '"' and "\\" in text[1:end]) or text[end + 1:].strip(" "):
        raise _NotBlockStyleError
    return text[1:end]
