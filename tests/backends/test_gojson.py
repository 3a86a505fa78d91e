"""k3snet._gojson: JSON read as Go reads it, and nesting measured without recursion."""

from __future__ import annotations

import time
from typing import Any

import pytest

from k3snet._gojson import JsonTextError, load_json, nests_deeper, text_nests_deeper


def test_nesting_is_measured_on_the_text_outside_strings() -> None:
    assert not text_nests_deeper('{"a": "[[[[[[[[[["}', 2)
    assert not text_nests_deeper('{"a\\"[[[": ["\\\\", 1]}', 2)
    assert text_nests_deeper('{"a": [[1]]}', 2)
    assert not text_nests_deeper("[" * 128 + "]" * 128)
    assert text_nests_deeper("[" * 129 + "]" * 129)


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
