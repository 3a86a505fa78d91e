"""JSON text read as the Go programs k3snet edits for read it, with bounded nesting.

flannel (net-conf.json) and Cilium (its ip-masq-agent file, when the text starts
with ``{``) decode with Go's ``encoding/json``. Python's :mod:`json` accepts more
(``NaN``, ``Infinity``) and, nested a thousand deep, raises ``RecursionError``;
:func:`load_json` refuses both, and also numbers that k3snet could not write back
unchanged (an integer too long for ``int``, a float beyond double range). :func:`fold`
is how Go matches a key to a field name. Nesting
is measured before parsing, without recursion, by :func:`text_nests_deeper`;
parsed data by :func:`nests_deeper` (the spec reader uses it too).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["GO_SPACE", "MAX_NESTING", "JsonTextError", "fold", "load_json", "nests_deeper",
           "text_nests_deeper"]

MAX_NESTING = 128
"""The deepest nesting of objects and arrays k3snet reads in a Go program's JSON
(flannel's and Cilium's files have 3; Go itself stops at 10000)."""

GO_SPACE = ("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
            "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
"""The characters Go's ``unicode.IsSpace`` reports (``str.isspace`` has more: U+001C-1F)."""

# A string (escapes included) or one bracket; strings are skipped whole so a "[" in a
# key or value does not count. Possessive: linear on any text.
_TOKENS = re.compile(r'"(?:[^"\\]++|\\.)*+"|[\[\]{}]', re.DOTALL)


class JsonTextError(ValueError):
    """The text is not JSON that Go reads (the message says why), or nests too deep."""


def fold(key: str) -> str:
    """A key as Go's ``encoding/json`` compares it to a field name (case-insensitively).

    Go folds ASCII letters and the two non-ASCII letters whose simple folding
    reaches ASCII: U+017F (long s) is ``s`` and U+212A (Kelvin sign) is ``k``
    (``str.lower`` already maps the Kelvin sign).
    """
    return key.lower().replace("\u017f", "s")


def text_nests_deeper(text: str, limit: int = MAX_NESTING) -> bool:
    """Whether JSON ``text`` opens more than ``limit`` objects/arrays inside each other."""
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif token in ("]", "}"):
            depth -= 1
    return False


def nests_deeper(value: Any, limit: int, *, shared: bool = False) -> bool:
    """Whether parsed ``value`` nests dicts/lists more than ``limit`` levels (no recursion).

    ``shared``: containers may be reached more than once (YAML aliases); each is then
    looked into again only when reached deeper than before, so a shared structure costs
    its size, not its number of paths. Without it (JSON, a spec without aliases) no
    bookkeeping is done: a 10k-destination spec is checked about 30 % faster.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    deepest: dict[int, int] = {}  # id -> the deepest level the container was seen at
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            if shared:
                if deepest.get(id(item), 0) >= depth:
                    continue
                deepest[id(item)] = depth
            children: Iterator[Any] = iter(item.values() if isinstance(item, dict) else item)
            stack.extend((child, depth + 1) for child in children)
    return False


def _no_constant(name: str) -> Any:
    raise JsonTextError(f"{name} is not JSON (Go refuses it)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonTextError(f"the number {text[:40]} is beyond double range; k3snet cannot "
                            "write it back unchanged")
    return value


def load_json(text: str, *, limit: int = MAX_NESTING,
              object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None) -> Any:
    """``text`` parsed as Go's ``encoding/json`` would accept it, else :class:`JsonTextError`.

    The message says what is wrong (with line and column for a syntax error).
    """
    if text_nests_deeper(text, limit):
        raise JsonTextError(f"it nests objects and arrays deeper than {limit} levels")
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite,
                          object_pairs_hook=object_pairs_hook)
    except JsonTextError:
        raise
    except json.JSONDecodeError as exc:
        raise JsonTextError(f"{exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of 5000 digits
        raise JsonTextError(f"cannot read a value: {str(exc)[:120]}") from None
