"""The reference backend: a state held in memory, transactional.

It is what every other backend is measured against (the conformance suite runs
on it first) and what tests of embedding code use instead of a node. Like
knftables' Fake, it dumps its state (as k3snet's one JSON form of states) and loads it back, and its
:class:`~k3snet.backends.kit.FaultHook` makes an apply fail at any change to
exercise rollback paths.

>>> from k3snet.model import State, Sysctl
>>> from k3snet.planner import plan
>>> backend = MemoryBackend()
>>> result = backend.apply(plan(backend.observe(), State(owned=[Sysctl("net.ipv4.ip_forward", 1)])))
>>> print(backend.dump())
{
 "foreign": [],
 "format": 1,
 "owned": [
  {
   "name": "net.ipv4.ip_forward",
   "type": "sysctl",
   "value": "1"
  }
 ]
}
"""

from __future__ import annotations

from collections.abc import Iterable

from k3snet.backends.base import ApplyResult
from k3snet.backends.kit import BackendBase, Compensation, fit_problems
from k3snet.errors import ModelError
from k3snet.model.state import State, ensure_state, kind_set, known_kinds
from k3snet.planner import Plan

__all__ = ["MemoryBackend"]

class MemoryBackend(BackendBase):
    """An in-memory system: ``observe`` returns its state, ``apply`` changes it atomically.

    ``capabilities`` defaults to every registered kind (one kind may be given alone,
    ``capabilities="route"``). ``backend.faults.fail_at(N)``
    makes the next apply fail at its change ``N`` (0-based), after which the state
    is unchanged. As a kernel does, it refuses a route add into a slot (table,
    destination, metric) that a foreign route holds.
    """

    name = "memory"

    def __init__(
        self,
        state: State | None = None,
        *,
        capabilities: Iterable[str] | None = None,
    ) -> None:
        super().__init__()
        # A list of objects where a State belongs failed at the first observe, as an
        # AttributeError far from here.
        self._state = ensure_state(state, "MemoryBackend's state") if state is not None else State()
        known = known_kinds()
        self._capabilities = frozenset(known) if capabilities is None else kind_set(capabilities)
        unknown = self._capabilities - set(known)
        if unknown:
            raise ModelError(f"unknown kinds {sorted(unknown)}; known: {', '.join(known)}")

    @property
    def capabilities(self) -> frozenset[str]:
        """The kinds this instance manages."""
        return self._capabilities

    @property
    def state(self) -> State:
        """The whole state held (all kinds)."""
        return self._state

    def observe(self) -> State:
        """The state of the kinds this backend manages."""
        return self._state.only(self._capabilities)

    def check(self, plan: Plan) -> tuple[str, ...]:
        """Problems applying ``plan`` would hit; nothing is changed.

        The kit's :func:`~k3snet.backends.kit.fit_problems`, route adds into a slot a
        foreign route holds among them: a kernel refuses those, and the reference
        refuses them too, or code tested against it never meets the refusal a node gives.
        """
        return tuple(fit_problems(self, plan, self._state))

    def apply(self, plan: Plan) -> ApplyResult:
        """Apply every change or none; an injected failure rolls back what was done.

        The whole plan is applied in one pass (linear in the state's size, whatever
        the number of changes).
        """
        self.ensure_fits(plan, self._state)
        before = self._state
        fail_at = self.faults.take(plan)
        if fail_at is not None:
            # Make the changes before the failing one, as a real system would, then undo them.
            undo = Compensation(self.name)
            self._state = Plan(changes=plan.changes[:fail_at]).apply_to(before)
            undo.record(plan.changes[:fail_at], lambda: self._restore(before))
            undo.fail(plan.changes[fail_at], f"injected failure at change {fail_at}")
        self._state = plan.apply_to(before)
        return ApplyResult(self.name, plan.changes, operations=len(plan.changes))

    def _restore(self, state: State) -> None:
        self._state = state

    def dump(self) -> str:
        """The state as the one JSON form of k3snet states (:meth:`k3snet.State.to_json`)."""
        return self._state.to_json(indent=1)

    def load(self, text: str) -> None:
        """Replace the state by one parsed from :meth:`dump` output."""
        self._state = parse_dump(text)

    @classmethod
    def from_dump(cls, text: str, **options: object) -> MemoryBackend:
        """A backend holding the state of a :meth:`dump`."""
        return cls(parse_dump(text), **options)  # type: ignore[arg-type]


def parse_dump(text: str) -> State:
    """Parse :meth:`MemoryBackend.dump` output (a :meth:`k3snet.State.to_json` text)."""
    return State.from_json(text)
