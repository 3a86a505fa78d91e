"""JSON text read as the Go programs k3snet edits for read it, with bounded nesting.

flannel (net-conf.json) and Cilium (its ip-masq-agent file, when the text starts
with ``{``) decode with Go's ``encoding/json``. Python's :mod:`json` accepts more
(``NaN``, ``Infinity``) and, nested a thousand deep, raises ``RecursionError``;
:func:`load_json` refuses both, and also numbers that k3snet could not write back
unchanged (an integer too long for ``int``, a float beyond double range). :func:`fold`
is how Go matches a key to a field name. Nesting
is measured before parsing, without recursion, by :func:`text_nests_deeper`;
parsed data by :func:`nests_deeper` (the spec reader uses it too). YAML whose
aliases expand it beyond what Go's YAML decoder accepts is found by
:func:`excessive_aliasing`, in the size of the document, not of its expansion.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from itertools import accumulate
from typing import Any

from k3snet._regex import lazy_pattern

__all__ = ["GO_SPACE", "MAX_NESTING", "JsonTextError", "excessive_aliasing", "fold",
           "load_json", "nests_deeper", "text_nests_deeper"]

MAX_NESTING = 128
"""The deepest nesting of objects and arrays k3snet reads in a Go program's JSON
(flannel's and Cilium's files have 3; Go itself stops at 10000)."""

GO_SPACE = ("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
            "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
"""The characters Go's ``unicode.IsSpace`` reports (``str.isspace`` has more: U+001C-1F)."""

# A string (escapes included), removed whole so a "[" in a key or value does not count
# (an unterminated one is not: its brackets count). Possessive: linear on any text.
_STRING = lazy_pattern(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKET = lazy_pattern(r"[^\[\]{}]++")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


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
    # The brackets outside strings, their running depth summed in C: about twice as fast as a
    # loop over each token (docs/performance.md), the same answer on any text.
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    depths = accumulate(map(_STEP.__getitem__, brackets))
    if limit >= 0:
        # A depth above 0 is first reached by an opening bracket: the deepest is one's.
        return max(depths, default=0) > limit
    return any(depth > limit for depth, bracket in zip(depths, brackets, strict=True)
               if bracket in "[{")


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


# go-yaml's (v2 and v3, under sigs.k8s.io/yaml) limits on alias expansion: its
# decoder fails "document contains excessive aliasing" once more than 100 of more
# than 1000 decoded nodes came from aliases and their share exceeds this ratio.
_ALIAS_RANGE = (400_000, 4_000_000)


def _allowed_alias_ratio(decoded: int) -> float:
    low, high = _ALIAS_RANGE
    if decoded <= low:
        return 0.99
    if decoded >= high:
        return 0.10
    return 0.99 - 0.89 * (decoded - low) / (high - low)


def _members(item: dict[Any, Any] | list[Any]) -> list[Any]:
    """What go-yaml decodes one node at a time: a mapping's keys and values, a list's items."""
    return [*item.keys(), *item.values()] if isinstance(item, dict) else item


def excessive_aliasing(value: Any) -> int | None:
    """The number of nodes go-yaml decodes for parsed YAML ``value`` when it refuses the
    document for excessive aliasing (Cilium reads its files with it); else ``None``.

    A container PyYAML shares between places was written once (its anchor, the
    first place in document order) and referred to by aliases elsewhere; go-yaml
    decodes an alias node and then its target again, counting those nodes as
    aliased. Sizes are memoised per container, so a few lines whose aliases expand
    to 2**40 values are judged in their own size. ``value`` must be known to nest
    at most :data:`MAX_NESTING` levels (:func:`nests_deeper`): the walk recurses.
    The verdict is go-yaml's final one; its running check may stop a document
    earlier, never later.
    """
    aliases: set[tuple[int, int]] = set()  # (container id, member index) of alias nodes
    seen: set[int] = set()

    def classify(item: Any) -> None:
        seen.add(id(item))
        for index, member in enumerate(_members(item)):
            if isinstance(member, dict | list):
                if id(member) in seen:
                    aliases.add((id(item), index))
                else:
                    classify(member)

    costs: dict[int, tuple[int, int]] = {}

    def cost(item: Any) -> tuple[int, int]:
        """(values in the expansion of ``item``, alias nodes decoded in it)."""
        known = costs.get(id(item))
        if known is None:
            size, refs = 1, 0
            for index, member in enumerate(_members(item)):
                if isinstance(member, dict | list):
                    more, inner = cost(member)
                    size, refs = size + more, refs + inner + ((id(item), index) in aliases)
                else:
                    size += 1
            known = costs[id(item)] = (size, refs)
        return known

    def aliased(item: Any) -> int:
        """Nodes decoded inside aliases met outside any alias (below ``item``)."""
        total = 0
        for index, member in enumerate(_members(item)):
            if isinstance(member, dict | list):
                if (id(item), index) in aliases:
                    total += sum(cost(member))
                else:
                    total += aliased(member)
        return total

    if not isinstance(value, dict | list):
        return None
    classify(value)
    size, refs = cost(value)
    decoded = 1 + size + refs  # the document node, every value, every alias node
    via_alias = aliased(value)
    if via_alias > 100 and decoded > 1000 and via_alias / decoded > _allowed_alias_ratio(
            decoded):
        return decoded
    return None


def _no_constant(name: str) -> Any:
    raise JsonTextError(f"{name} is not JSON (Go refuses it)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonTextError(f"the number {text[:40]} is beyond double range; k3snet cannot "
                            "write it back unchanged")
    return value


def load_json(text: str, *, limit: int = MAX_NESTING,
              object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
              strict: bool = True) -> Any:
    """``text`` parsed as Go's ``encoding/json`` would accept it, else :class:`JsonTextError`.

    The message says what is wrong (with line and column for a syntax error).
    ``strict=False`` also takes control characters inside strings, as a tool's output
    holds them (``ip -j`` prints an interface name's ESC as it is).
    """
    if text_nests_deeper(text, limit):
        raise JsonTextError(f"it nests objects and arrays deeper than {limit} levels")
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite,
                          object_pairs_hook=object_pairs_hook, strict=strict)
    except JsonTextError:
        raise
    except json.JSONDecodeError as exc:
        raise JsonTextError(f"{exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of 5000 digits
        raise JsonTextError(f"cannot read a value: {str(exc)[:120]}") from None
