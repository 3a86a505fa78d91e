"""The conformance suite against deliberately broken backends: each breaks one promise
of :mod:`k3snet.backends.base`, and the suite must fail it.

Each of these backends passed ``run_conformance`` before the check that catches it
was added (second review of the kit, written from a third-party backend's side).
"""

from __future__ import annotations

import pytest

from k3snet import ApplyResult, Plan
from k3snet.backends.memory import MemoryBackend
from k3snet.errors import ApplyError, PlanError
from k3snet.testing import run_conformance

# Hypothesis reports several distinct failures as an ExceptionGroup.
FAILS = (AssertionError, ExceptionGroup)


class _ChecksTheFirstChangeOnly(MemoryBackend):
    """Judges only a plan's first change, in ``check`` and ``apply``; applies the rest
    blindly (an add over what is there overwrites it, a delete of what is gone does nothing)."""

    def check(self, plan: Plan) -> tuple[str, ...]:
        return super().check(Plan(changes=plan.changes[:1]))

    def apply(self, plan: Plan) -> ApplyResult:
        problems = self.check(plan)
        if problems:
            raise PlanError("; ".join(problems))
        fail_at = self.faults.take(plan)
        if fail_at is not None:
            raise ApplyError("injected", failed=plan.changes[fail_at])
        owned = {o.key: o for o in self._state.owned}
        for change in plan.changes:
            owned.pop(change.subject.key, None)
            if change.after is not None:
                owned[change.after.key] = change.after
        self._state = self._state.with_owned(owned.values())
        return ApplyResult(self.name, plan.changes, len(plan.changes))


class _RefusesOnlyWhenItGetsThere(MemoryBackend):
    """Refuses a stale change when it reaches it, keeping the changes made before it: a
    refused plan half-applied (``check`` is right, ``apply`` is not all or nothing)."""

    def apply(self, plan: Plan) -> ApplyResult:
        self.ensure_capable(plan)
        fail_at = self.faults.take(plan)
        before = self._state
        for index, change in enumerate(plan.changes):
            if index == fail_at:
                self._state = before
                raise ApplyError("injected", failed=change)
            step = Plan(changes=[change])
            if step.problems(self._state):
                raise PlanError(f"cannot {change}")
            self._state = step.apply_to(self._state)
        return ApplyResult(self.name, plan.changes, len(plan.changes))


def test_conformance_fails_a_backend_that_judges_only_a_plans_first_change() -> None:
    """Every stale plan the suite made had one change: judging ``plan.changes[0]`` only passed."""
    with pytest.raises(FAILS, match="stale"):
        run_conformance(_ChecksTheFirstChangeOnly, max_examples=30)


def test_conformance_fails_a_backend_that_refuses_a_plan_after_making_part_of_it() -> None:
    """A refused plan must change nothing; with one-change stale plans there was nothing
    before the refused change to keep."""
    with pytest.raises(FAILS, match="changed the state"):
        run_conformance(_RefusesOnlyWhenItGetsThere, max_examples=30)

