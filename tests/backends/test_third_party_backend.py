"""A backend written the way docs/custom-backend.md tells a third party to write one.

It lives outside the k3snet package and uses only what the page names: ``BackendBase``,
``fit_problems`` in ``check``, ``ensure_fits`` in ``apply``, a ``Compensation`` that
records each step's undo inside ``guarding()``, the fault hook where the step would
fail. Its system makes one step a change and holds foreign objects of every kind,
among them a route standing in a slot, so the conformance suite tests every promise
about foreign state on it.
"""

from __future__ import annotations

import functools

import pytest

from k3snet import ApplyResult, Change, MasqueradeRule, Plan, PlanError, Route, State, Sysctl
from k3snet.backends.kit import BackendBase, Compensation, fit_problems
from k3snet.testing import run_conformance

STATIC = Route("192.0.2.0/24", device="eth0", protocol=4)
FOREIGN = (STATIC, Sysctl("net.ipv4.ip_forward", "0"),
           MasqueradeRule("10.42.0.0/16", destination="198.51.100.0/24"))


class StepSystem:
    """What the backend drives: one step a change; a step can be taken back."""

    def __init__(self, foreign: tuple[Route | Sysctl | MasqueradeRule, ...] = FOREIGN) -> None:
        self.state = State(foreign=foreign)
        self.steps = 0

    def do(self, change: Change) -> State:
        before = self.state
        self.state = Plan(changes=[change]).apply_to(before)
        self.steps += 1
        return before

    def undo(self, before: State) -> None:
        self.state = before


class StepBackend(BackendBase):
    """The page's "several steps" sketch, made whole."""

    name = "steps"
    capabilities = frozenset({"sysctl", "route", "forward", "nat"})

    def __init__(self, system: StepSystem) -> None:
        super().__init__()
        self.system = system

    def observe(self) -> State:
        return self.system.state

    def check(self, plan: Plan) -> tuple[str, ...]:
        return tuple(fit_problems(self, plan, self.observe()))

    def apply(self, plan: Plan) -> ApplyResult:
        self.ensure_fits(plan, self.observe())  # raises before anything is changed
        fail_at = self.faults.take(plan)
        undo = Compensation(self.name)
        with undo.guarding():
            for index, change in enumerate(plan.changes):
                if index == fail_at:
                    undo.fail(change, "injected failure")
                handle = self.system.do(change)
                undo.record(change, functools.partial(self.system.undo, handle))
        return ApplyResult(self.name, plan.changes, operations=len(plan.changes))


def test_a_backend_written_from_the_page_passes_the_conformance_suite_beside_foreign_state(
) -> None:
    """The route add into a foreign route's slot was refused by its ``check`` only when
    the author added ``taken_slots`` there, and taken by its ``apply`` unless the author
    added it there as well: ``fit_problems`` and ``ensure_fits`` left it out."""
    run_conformance(lambda: StepBackend(StepSystem()), max_examples=20,
                    reopen=lambda backend: StepBackend(backend.system))  # type: ignore[attr-defined]


def test_apply_refuses_a_route_add_into_a_foreign_routes_slot_before_any_step() -> None:
    system = StepSystem()
    backend = StepBackend(system)
    mine = Route(STATIC.destination, device="eth1")
    stale = Plan(changes=[Change.add(Sysctl("net.ipv4.ip_forward", "1")), Change.add(mine)])
    assert any("holds its slot" in problem for problem in backend.check(stale))
    with pytest.raises(PlanError, match="holds its slot"):
        backend.apply(stale)
    assert system.steps == 0
    assert system.state == State(foreign=FOREIGN)


def test_a_group_of_the_page_backend_and_the_memory_backend_passes_beside_foreign_state(
) -> None:
    """The group's rollback takes the third-party member back through its own apply of
    the inverse plan, beside foreign objects of every kind in both members."""
    from k3snet.backends.group import BackendGroup, Member  # noqa: PLC0415
    from k3snet.backends.memory import MemoryBackend  # noqa: PLC0415

    docker = MasqueradeRule("172.17.0.0/16")

    def make() -> BackendGroup:
        return BackendGroup([Member(StepBackend(StepSystem()), ["sysctl", "route"]),
                             MemoryBackend(State(foreign=[docker]),
                                           capabilities=["nat", "forward"])])

    run_conformance(make, max_examples=20)
