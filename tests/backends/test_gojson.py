"""k3snet._gojson: JSON read as Go reads it, and nesting measured without recursion."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from k3snet._gojson import (
    JsonTextError,
    excessive_aliasing,
    load_json,
    nests_deeper,
    text_nests_deeper,
)


def test_nesting_is_measured_on_the_text_outside_strings() -> None:
    assert not text_nests_deeper('{"a": "[[[[[[[[[["}', 2)
    assert not text_nests_deeper('{"a\\"[[[": ["\\\\", 1]}', 2)
    assert text_nests_deeper('{"a": [[1]]}', 2)
    assert not text_nests_deeper("[" * 128 + "]" * 128)
    assert text_nests_deeper("[" * 129 + "]" * 129)


def _shared(levels: int, fanout: int) -> Any:
    """What YAML aliases make (a: &a [...], b: [*a, *a, ...]): fanout**levels values."""
    level: Any = ["10.0.0.0/8"] * fanout
    for _ in range(levels - 1):
        level = [level] * fanout
    return {"a": level, "masqLinkLocal": True}


def test_excessive_aliasing_is_go_yaml_s_verdict_counted_without_expanding() -> None:
    # go-yaml's reference points: 10**3 aliased values decode, 10**4 do not; 2**40 are
    # sized from 40 shared lists (expanded, they would never end).
    assert excessive_aliasing(_shared(3, 10)) is None
    assert excessive_aliasing(_shared(4, 10)) is not None
    # The document, the mapping, its 2 keys and its value True; 2**40 - 1 lists with
    # 2**40 values at the bottom; an alias node second in each list above the bottom.
    assert excessive_aliasing(_shared(40, 2)) == 1 + 1 + 2 + 1 + (2**41 - 1) + (2**39 - 1)
    # No alias at all is never excessive, however large (a 1 MiB ConfigMap of values).
    assert excessive_aliasing({"a": ["10.0.0.0/8"] * 500_000}) is None


def test_a_shared_structure_is_measured_once_per_depth() -> None:
    # What YAML aliases make (a: &a [...], b: [*a, *a, ...]): 9**9 paths, few objects.
    level: Any = ["x"] * 9
    for _ in range(8):
        level = [level] * 9
    start = time.perf_counter()
    assert not nests_deeper({"bomb": level}, 128, shared=True)
    assert nests_deeper({"bomb": level}, 9, shared=True)
    assert time.perf_counter() - start < 2


def test_a_cycle_is_too_deep() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    assert nests_deeper(cycle, 128, shared=True)
    assert nests_deeper(cycle, 128)


@pytest.mark.parametrize(("text", "reason"), [
    ("[NaN]", "NaN is not JSON"),
    ('{"a": Infinity}', "Infinity is not JSON"),
    ("[1e400]", "beyond double range"),
    ("[" + "1" * 5000 + "]", "cannot read a value"),
    ('{"a": 1,}', "line 1, column 9"),
    ("[" * 200 + "]" * 200, "deeper than 128 levels"),
])
def test_what_go_refuses_is_an_error_saying_why(text: str, reason: str) -> None:
    with pytest.raises(JsonTextError, match=reason):
        load_json(text)


# text_nests_deeper as it was: one token at a time, the running depth in Python.
_TOKENS = re.compile(r'"(?:[^"\\]++|\\.)*+"|[\[\]{}]', re.DOTALL)


def _nests_deeper_token_by_token(text: str, limit: int) -> bool:
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


@given(st.text(alphabet='[]{}"\\ a,:\n\u00e9', max_size=60), st.integers(-3, 6))
def test_text_nests_deeper_answers_as_the_token_by_token_count_on_any_text(
        text: str, limit: int) -> None:
    assert text_nests_deeper(text, limit) == _nests_deeper_token_by_token(text, limit)


@given(st.recursive(st.none() | st.integers() | st.text(alphabet='[]{}"\\a'),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(alphabet='[]{}"\\a', max_size=3), inner,
                                      max_size=3), max_leaves=20), st.integers(0, 6))
def test_text_nests_deeper_answers_as_the_token_by_token_count_on_json(
        value: Any, limit: int) -> None:
    text = json.dumps(value)
    assert text_nests_deeper(text, limit) == _nests_deeper_token_by_token(text, limit)
