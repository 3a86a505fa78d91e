"""Example counts follow the hypothesis profile (docs/testing.md, "Hypothesis profiles").

A test naming 50 examples or more names them through ``tests/examples.py``'s
``examples(n)``, so that ``thorough`` scales them up and ``lowest`` and ``mutation`` down,
as they do the tests that name no count. The few counts kept fixed on purpose are listed
here, each with a comment in its file saying why.
"""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import settings

from tests.examples import SCALE, examples

TESTS = Path(__file__).resolve().parents[1]
# A count written as a number: @settings(max_examples=N), settings(...), run_conformance(...).
_LITERAL = re.compile(r"max_examples=(\d+)")
# Tests asserting that every shape of a strategy is drawn: fewer draws miss one.
FIXED = [("api/test_strategies.py", 300), ("api/test_strategies.py", 100),
         ("api/test_strategies.py", 200)]


def test_a_count_of_50_examples_or_more_is_named_through_examples() -> None:
    named = [(path.relative_to(TESTS).as_posix(), int(match[1]))
             for path in sorted(TESTS.rglob("*.py")) if path != TESTS / "conftest.py"
             for match in _LITERAL.finditer(path.read_text()) if int(match[1]) >= 50]
    assert named == FIXED


def test_a_test_naming_the_scale_runs_the_profiles_own_count() -> None:
    profile = settings().max_examples
    assert examples(SCALE) == profile
    assert examples(2 * SCALE) == 2 * profile
    assert examples(SCALE, floor=profile + 1) == profile + 1
