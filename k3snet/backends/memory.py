"""The reference backend: a state held in memory, transactional.

It is what every other backend is measured against (the conformance suite runs
on it first) and what tests of embedding code use instead of a node. Like
knftables' Fake, it dumps its state as text and loads it back, and it can be told
to fail at the Nth change of the next apply to exercise rollback paths.

>>> from k3snet.model import State, Sysctl
>>> from k3snet.planner import plan
>>> backend = MemoryBackend()
>>> result = backend.apply(plan(backend.observe(), State(owned=[Sysctl("net.ipv4.ip_forward", 1)])))
>>> print(backend.dump())
# k3snet memory state v1
owned {"name": "net.ipv4.ip_forward", "type": "sysctl", "value": "1"}
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from k3snet.backends.base import ApplyResult, ensure_capable
from k3snet.errors import ApplyError, ModelError, PlanError
from k3snet.model._base import NetObject
from k3snet.model.state import State, known_kinds, object_from_dict
from k3snet.planner import Change, Plan

__all__ = ["MemoryBackend"]

_HEADER = "# k3snet memory state v1"


class MemoryBackend:
    """An in-memory system: ``observe`` returns its state, ``apply`` changes it atomically.

    ``capabilities`` defaults to every registered kind; ``fail_at=N`` makes the next apply
    fail at its Nth change (0-based), after which the state is unchanged.
    """

    name = "memory"

    def __init__(
        self,
        state: State | None = None,
        *,
        capabilities: Iterable[str] | None = None,
        fail_at: int | None = None,
    ) -> None:
        self._state = state if state is not None else State()
        known = known_kinds()
        self._capabilities = frozenset(known if capabilities is None else capabilities)
        unknown = self._capabilities - set(known)
        if unknown:
            raise ModelError(f"unknown kinds {sorted(unknown)}; known: {', '.join(known)}")
        self._fail_at = fail_at

    @property
    def capabilities(self) -> frozenset[str]:
        """The kinds this instance manages."""
        return self._capabilities

    @property
    def state(self) -> State:
        """The whole state held (all kinds)."""
        return self._state

    def fail_at(self, index: int | None) -> None:
        """Make the next apply fail at change ``index`` (``None`` to stop failing)."""
        self._fail_at = index

    def observe(self) -> State:
        """The state of the kinds this backend manages."""
        return self._state.only(self._capabilities)

    def check(self, plan: Plan) -> tuple[str, ...]:
        """Problems applying ``plan`` would hit; nothing is changed."""
        try:
            ensure_capable(self, plan)
            plan.apply_to(self._state)
        except PlanError as exc:
            return (str(exc),)
        return ()

    def apply(self, plan: Plan) -> ApplyResult:
        """Apply every change or none; an injected failure rolls back what was done."""
        ensure_capable(self, plan)
        state = self._state
        done: list[Change] = []
        fail_at, self._fail_at = self._fail_at, None
        for index, change in enumerate(plan.changes):
            if index == fail_at:
                raise ApplyError(
                    f"memory backend: injected failure at change {index}",
                    failed=change,
                    done=done,
                    rolled_back=[c.inverse() for c in reversed(done)],
                )
            try:
                state = Plan(changes=[change]).apply_to(state)
            except PlanError as exc:
                raise ApplyError(
                    f"memory backend: {exc}",
                    failed=change,
                    done=done,
                    rolled_back=[c.inverse() for c in reversed(done)],
                ) from exc
            done.append(change)
        self._state = state
        return ApplyResult(self.name, tuple(done), operations=len(done))

    def dump(self) -> str:
        """The state as text: one ``owned`` or ``foreign`` JSON object per line, sorted."""
        lines = [_HEADER]
        lines += [_line("owned", o) for o in sorted(self._state.owned)]
        lines += [_line("foreign", o) for o in sorted(self._state.foreign)]
        return "\n".join(lines)

    def load(self, text: str) -> None:
        """Replace the state by one parsed from :meth:`dump` output."""
        self._state = parse_dump(text)

    @classmethod
    def from_dump(cls, text: str, **options: object) -> MemoryBackend:
        """A backend holding the state of a :meth:`dump`."""
        return cls(parse_dump(text), **options)  # type: ignore[arg-type]


def _line(where: str, obj: NetObject) -> str:
    return f"{where} {json.dumps(obj.to_dict(), sort_keys=True)}"


def parse_dump(text: str) -> State:
    """Parse :meth:`MemoryBackend.dump` output; errors name the line."""
    owned: list[NetObject] = []
    foreign: list[NetObject] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where, _, payload = line.partition(" ")
        target = {"owned": owned, "foreign": foreign}.get(where)
        if target is None:
            raise ModelError(f"dump line {number}: expected 'owned' or 'foreign', got {where!r}")
        try:
            target.append(object_from_dict(json.loads(payload)))
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"dump line {number}: {exc}") from exc
    return State(owned=owned, foreign=foreign)
