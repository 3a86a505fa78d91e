"""Spec text (YAML, or JSON without PyYAML) to plain data, and spec files to text.

A spec is read as root on every node, possibly from a ConfigMap anyone with
edit rights can change, so reading is bounded whatever the input:

* a file must be a regular file of at most :data:`MAX_BYTES`, and UTF-8 (a FIFO or
  a device is refused unread);
* YAML anchors and aliases are refused (an alias bomb of 525 bytes used to take
  a minute and gigabytes), so are duplicate keys (the last one used to win
  silently, e.g. a second ``destinations: []``), merge keys (``<<``, a second value
  for a key, dropped silently) and nesting deeper than :data:`MAX_DEPTH`;
* NEL, LINE SEPARATOR and PARAGRAPH SEPARATOR (U+0085, U+2028, U+2029), line breaks
  to YAML 1.1 and not to YAML 1.2 or an editor, are refused, named by line and column;
* integers YAML 1.1 (PyYAML) and YAML 1.2 (editors, schema validators) read
  differently, ``0100`` (octal 64 or 100) and ``1:30`` (90 or a text), are refused, and
  so are plain texts YAML 1.2 reads as numbers (``09``, ``0o17``, ``1e3``);
* numbers too long to convert and anything else the parser refuses are one
  :class:`~k3snet.errors.SpecError`, never a traceback.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import sys
from pathlib import Path
from typing import Any

from k3snet._gc import gc_paused
from k3snet._gojson import nests_deeper
from k3snet._kept import input_problem, read_input
from k3snet._regex import lazy_pattern
from k3snet._yamltext import odd_break, yaml_problem
from k3snet.errors import Problem, SpecError
from k3snet.spec.blockstyle import CONTROL as _CONTROL
from k3snet.spec.blockstyle import YAML12_NUMBER as _YAML12_NUMBER
from k3snet.spec.blockstyle import read_block_style

__all__ = ["MAX_BYTES", "MAX_DEPTH", "load_mapping", "read_text", "unique_pairs"]

MAX_BYTES = 4 * 1024 * 1024
"""The largest spec k3snet reads (a 10k-destination spec is about 0.3 MiB)."""
MAX_DEPTH = 32
"""The deepest nesting of mappings and lists a spec may have (a real one has 5)."""


def _error(message: str, source: str | None) -> SpecError:
    return SpecError([Problem("", message)], source=source)


def load_mapping(text: str, source: str | None) -> Any:
    """Parse YAML (JSON when PyYAML is missing); any problem is a :class:`SpecError`.

    The cyclic GC is paused while a large text is parsed (about one object per 64
    characters): the parser's nodes made it collect over and over, 40 % of the
    parse of a 10k-destination spec (docs/performance.md, "The evening of 2026-12-02").
    """
    if len(text) > MAX_BYTES:
        raise _error(f"the spec is {len(text)} characters; at most {MAX_BYTES} are read", source)
    odd = odd_break(text)
    if odd is not None:
        # `a: b<NEL>c: d` is two keys to PyYAML and one to an editor and the JSON Schema.
        raise _error(f"the text holds {odd}: YAML 1.1 (k3snet) reads it as a line break, "
                     "YAML 1.2 (editors, the JSON Schema) as a character within the line, "
                     "so they read different keys and values; remove it (in a "
                     "double-quoted text, write it as an escape: \\x85, \\u2028, "
                     "\\u2029)", source)
    with gc_paused(len(text) // 64):
        data = _parse(text, source)
        _check_depth(data, source)
    return data


def _parse(text: str, source: str | None) -> Any:
    try:
        import yaml  # noqa: PLC0415 - optional dependency (k3snet[spec])
    except ImportError:
        try:
            data = json.loads(text, object_pairs_hook=unique_pairs)
        except _DuplicateKeyError as exc:
            raise _error(str(exc), source) from None
        except (ValueError, RecursionError) as exc:
            raise _error(f"not JSON, and PyYAML is not installed for YAML "
                         f"(pip install 'k3snet[spec]'): {str(exc)[:200]}", source) from None
    else:
        data = _load_yaml(yaml, text, source)
    return data


class _DuplicateKeyError(ValueError):
    pass


def unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's pairs as a dict (``json.loads``'s ``object_pairs_hook``); a key given
    twice is a ValueError, where ``json`` would keep the last value silently."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(f"duplicate key {key[:80]!r}: every key may appear once")
        result[key] = value
    return result


def _json_document(text: str) -> Any:
    """A JSON object's text read by :mod:`json`, where PyYAML would read the same data;
    else ``None``.

    JSON is YAML, and PyYAML reads it like any flow style, ~20x slower than ``json``.
    They agree on objects, arrays, ASCII strings without escapes, integers, ``true``,
    ``false`` and ``null``; numbers with a fraction or an exponent (``1e3`` is a string
    in YAML 1.1), escapes, other characters than printable ASCII and newlines,
    duplicate keys, and keys YAML cannot take as simple keys (the ``:`` on a later
    line, or more than 1024 characters after the key's start) are left to PyYAML.
    """
    if not text.lstrip(" \n").startswith("{") or not text.isascii() or "\\" in text \
            or _CONTROL.search(text) or ("\n" in text and _COLON_AFTER_BREAK.search(text)) \
            or _LONG_GAP_BEFORE_COLON.search(text):
        return None
    try:
        return json.loads(text, object_pairs_hook=_simple_key_pairs, parse_float=_not_here,
                          parse_constant=_not_here)
    except (ValueError, RecursionError):  # a duplicate key, not JSON, a float...
        return None


# YAML takes a flow mapping's key as a simple key only when its ":" is on the same line
# and within 1024 characters of the key's start. A JSON string holds no raw line break,
# so a ":" after one is a key's; keys and gaps each under 500 stay within 1024 (keys
# are measured by _simple_key_pairs). Both patterns are linear: 2-5 ms against the
# 56-62 ms of _json_document on a 10k-destination JSON spec of 1-1.4 MB (timed with
# perf_counter, best of 5, json.dumps of that spec compact and with indent=2).
_COLON_AFTER_BREAK = lazy_pattern(r"\n[ \t\n]*+:")
_LONG_GAP_BEFORE_COLON = lazy_pattern(r'"[ \t]{500,}+:')
_SIMPLE_KEY_MAX = 500


def _simple_key_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if any(len(key) >= _SIMPLE_KEY_MAX for key, _ in pairs):
        raise ValueError("left to PyYAML")
    return unique_pairs(pairs)


def _not_here(_text: str) -> Any:
    raise ValueError("left to PyYAML")


def _load_yaml(yaml: Any, text: str, source: str | None) -> Any:
    # JSON specs and specs in plain block style are read without PyYAML's node objects
    # (the same data, typed as PyYAML types it); anything else, and every error, is
    # PyYAML's.
    data = _json_document(text)
    if data is not None:
        return data
    resolver = yaml.resolver.Resolver()
    data = read_block_style(
        text, lambda value: resolver.resolve(yaml.ScalarNode, value, (True, False)))
    if data is not None:
        return data
    # libyaml's safe loader when PyYAML was built with it: same data, parsing a
    # 10k-destination spec about 3x faster (benchmarks/bench_spec.py, docs/performance.md).
    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class StrictLoader(base):  # type: ignore[misc, valid-type]
        """A safe loader that refuses aliases and duplicate keys."""

        def construct_object(self, node: Any, deep: bool = False) -> Any:
            if node in self.constructed_objects or node in self.recursive_objects:
                raise yaml.constructor.ConstructorError(
                    None, None, "anchors and aliases (&name, *name) are not allowed in a spec",
                    node.start_mark)
            return super().construct_object(node, deep=deep)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _value in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    # YAML 1.1's "<<" gives a key a second value that is dropped silently
                    # (past the duplicate check below); YAML 1.2 reads a key named "<<".
                    raise yaml.constructor.ConstructorError(
                        None, None, "merge keys (<<) are not allowed in a spec",
                        key_node.start_mark)
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else id(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {str(key)[:80]!r}: every key may appear once",
                        key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

        def construct_yaml_int(self, node: Any) -> Any:
            written = self.construct_scalar(node)
            if _AMBIGUOUS_INT.fullmatch(written):
                raise yaml.constructor.ConstructorError(
                    None, None, f"{written[:40]} is an integer that YAML 1.1 and YAML 1.2 read "
                    "differently; write it in decimal without a leading 0 or _ (or quote it "
                    "for a text)", node.start_mark)
            return super().construct_yaml_int(node)

        def construct_yaml_str(self, node: Any) -> Any:
            written = self.construct_scalar(node)
            if (not node.style and _YAML12_NUMBER.fullmatch(written)  # plain: None, or ""
                    and not _tagged(text, node.start_mark)):
                # Text to PyYAML (YAML 1.1), a number to YAML 1.2: 09 is 9 to an editor
                # and the JSON Schema, and k3snet wrote "09" (a sysctl the kernel refused).
                raise yaml.constructor.ConstructorError(
                    None, None, f"{written[:40]} is text to YAML 1.1 (k3snet) and a number "
                    "to YAML 1.2 (editors, the JSON Schema); write the number in decimal "
                    "without a leading 0 or an exponent (or quote it for a text)",
                    node.start_mark)
            return super().construct_yaml_str(node)

        def construct_undefined(self, node: Any) -> Any:
            # !!python/object, !!binary's kin and local !tags: PyYAML's own words were
            # "could not determine a constructor", as if one were missing.
            raise yaml.constructor.ConstructorError(
                None, None, f"the tag {node.tag[:80]!r} is not allowed in a spec (plain "
                "YAML values only: text, numbers, true/false, null, lists, mappings)",
                node.start_mark)

    StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)
    StrictLoader.add_constructor("tag:yaml.org,2002:str", StrictLoader.construct_yaml_str)
    StrictLoader.add_constructor(None, StrictLoader.construct_undefined)

    try:
        return yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as exc:
        raise _error(f"not valid YAML: {yaml_problem(exc, text)[:300]}{_ipv6_hint(text, exc)}",
                     source) from None
    except (ValueError, RecursionError, MemoryError) as exc:  # e.g. a 5000-digit number
        if "integer string conversion" in str(exc):  # Python's advice (set_int_max_str_digits)
            raise _error(f"cannot read the YAML: a number of more than "  # is no spec writer's
                         f"{sys.get_int_max_str_digits()} digits", source) from None
        raise _error(f"cannot read the YAML: {str(exc)[:200]}", source) from None


def _tagged(text: str, mark: Any) -> bool:
    """Whether the node starting at ``mark`` of ``text`` is written with a tag
    (``!!str 09``: a text on purpose; PyYAML's nodes do not keep it), before or after
    its anchor (``&x !!str 09``: the node starts at the anchor)."""
    line: int = mark.line
    column: int = mark.column
    lines = text.removeprefix("\ufeff").split("\n", line + 1)  # marks skip a BOM
    if line >= len(lines):
        return False
    if lines[line][column:column + 1] != "&":
        return lines[line][column:column + 1] == "!"
    rest = "\n".join(lines[line:])  # the anchor's line and what follows it
    return _ANCHOR_THEN_TAG.match(rest, column) is not None


# An anchor, then a tag: separated by spaces, line breaks and comments (YAML's
# s-separate); PyYAML's anchor names are letters, digits, "-" and "_". Each text has
# one way to match (a comment runs to its line's end): no backtracking blow-up.
_ANCHOR_THEN_TAG = lazy_pattern(r"&[-\w]+(?:[ \t\r\n]|#[^\n]*\n)*!")


# Integers PyYAML reads as YAML 1.1 does and YAML 1.2 (editors, the JSON Schema's tools)
# and people read otherwise: 0100 is octal 64 to PyYAML, 100 to them; 1:30 is sexagesimal
# 90 to PyYAML, a text to them; so are 1_000, 0b101 and a signed -0x10 (YAML 1.2's core
# schema has no digit separator, no binary, and hexadecimal without a sign): the schema
# refused what k3snet took. Hexadecimal (0x10) means the same to both and is kept.
_AMBIGUOUS_INT = lazy_pattern(r"[-+]?(?:0[0-9_]+|[0-9][0-9_]*:.*|0b.*)|.*_.*|[-+]0x.*")

IPV6_QUOTE_HINT = ("an IPv6 address that starts or ends with '::' must be quoted in YAML "
                   "('fd00::', '::1'): unquoted, its ':' is read as a mapping's")
"""What a problem adds when an unquoted IPv6 address may be its cause."""
_TOKENS = lazy_pattern(r"[^\s,\[\]{}]+")


def _ipv6_hint(text: str, exc: Any) -> str:
    """The hint for a YAML error on a line holding an unquoted IPv6 address that starts or
    ends with ``::`` (``gateway: 2001:db8::``, ``[::1]``), else ``""``."""
    mark = getattr(exc, "problem_mark", None)
    lines = text.split("\n")
    if mark is None or not 0 <= mark.line < len(lines):
        return ""
    for token in _TOKENS.findall(lines[mark.line]):
        if token.startswith("::") or token.endswith("::"):
            try:
                ipaddress.IPv6Address(token)
            except ValueError:
                continue
            return f"\n  ({IPV6_QUOTE_HINT})"
    return ""


def _check_depth(data: Any, source: str | None) -> None:
    """Refuse nesting deeper than MAX_DEPTH (checked without recursion)."""
    if nests_deeper(data, MAX_DEPTH):
        raise _error(f"the spec nests deeper than {MAX_DEPTH} levels", source)


def read_text(path: str | Path) -> str:
    """A spec file's text: a regular UTF-8 file of at most MAX_BYTES, else a SpecError
    (a FIFO or a device is refused unread, :func:`k3snet._kept.read_input`)."""
    where = str(path)
    try:
        data = read_input(path, MAX_BYTES)
    except OSError as exc:
        if exc.errno == errno.EFBIG:
            raise _error(f"{path} is larger than {MAX_BYTES} bytes; a spec is far smaller",
                         where) from None
        raise _error(f"cannot read {path}: {input_problem(exc)}", where) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _error(f"{path} is not UTF-8 text ({_byte_at(data, exc.start)}: {exc.reason})",
                     where) from None


def _byte_at(data: bytes, start: int) -> str:
    """Where byte ``start`` of ``data`` is, as an editor counts: its line (at line feeds)
    and column (in characters, the line's bytes before it decoded; a byte order mark,
    which an editor does not show and YAML does not count, is none), and its offset."""
    line_start = data.rfind(b"\n", 0, start) + 1
    before = data[line_start:start].decode("utf-8", "replace")
    column = len(before.removeprefix("\ufeff") if line_start == 0 else before) + 1
    line = data.count(b"\n", 0, start) + 1
    return f"byte 0x{data[start]:02X} at line {line}, column {column}, byte {start} of the file"
