"""Golden plans: each ``tests/golden/*.yaml`` holds an observed state, a spec and the plan.

To add a case, write the file with ``spec`` and ``observed`` (a state in its
JSON form, ``owned`` and ``foreign`` lists: what ``k3snet observe --output json``
prints) and the expected ``plan`` text; the test shows the actual plan on a mismatch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from k3snet import Plan, Spec, State, plan
from k3snet import compile as compile_spec

CASES = sorted((Path(__file__).resolve().parents[1] / "golden").glob("*.yaml"))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden_plan(path: Path) -> None:
    case = yaml.safe_load(path.read_text())
    observed = State.from_dict(case["observed"])
    p = plan(observed, compile_spec(Spec.from_dict(case["spec"])))
    assert p.render() + "\n" == case["plan"], f"{case['description']}\nactual:\n{p.render()}"
    assert Plan.from_json(p.to_json()) == p


def test_there_are_golden_cases() -> None:
    assert len(CASES) >= 5
