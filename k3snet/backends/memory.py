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

from collections.abc import Iterable, Mapping
from typing import ClassVar, TypeGuard

import attrs

from k3snet.backends.base import ApplyResult
from k3snet.backends.kit import BackendBase, Compensation, OptionChecks, fit_problems
from k3snet.errors import ModelError, PlanError
from k3snet.model.state import State, ensure_state, kind_set, known_kinds
from k3snet.model.sysctl import ALIASES, Sysctl, owned_apart
from k3snet.planner import Change, Plan

__all__ = ["MemoryBackend"]

def _kinds_option(capabilities: object) -> frozenset[str]:
    """The ``capabilities`` option: every registered kind for ``None``, else a kind or an
    iterable of kinds, each registered (a :class:`~k3snet.errors.ModelError` saying what
    is wrong: ``capabilities: 5`` in a spec was Python's "'int' object is not iterable")."""
    known = known_kinds()
    if capabilities is None:
        return frozenset(known)
    given = ([capabilities] if isinstance(capabilities, str) else list(capabilities)
             if isinstance(capabilities, Iterable) and not isinstance(capabilities, bytes | Mapping)
             else None)
    if given is None or not all(isinstance(kind, str) for kind in given):
        raise ModelError(f"capabilities must be a kind or a list of kinds ({', '.join(known)}), "
                         f"got {capabilities!r}")
    kinds = kind_set(given)
    unknown = kinds - set(known)
    if unknown:
        raise ModelError(f"unknown kinds {sorted(unknown)}; known: {', '.join(known)}")
    return kinds


class MemoryBackend(BackendBase):
    """An in-memory system: ``observe`` returns its state, ``apply`` changes it atomically.

    ``capabilities`` defaults to every registered kind (one kind may be given alone,
    ``capabilities="route"``). ``backend.faults.fail_at(N)``
    makes the next apply fail at its change ``N`` (0-based), after which the state
    is unchanged. As a kernel does, it refuses a route add into a slot (table,
    destination, metric) that a foreign route holds, and it holds the two names of one
    kernel value (:data:`~k3snet.model.sysctl.ALIASES`: ``net.ipv4.ip_forward`` and
    ``net.ipv4.conf.all.forwarding``) as one: a write under either is read under both,
    taking one over while the other is owned records what k3snet found under the other,
    giving one back while the other is owned writes nothing, and a plan that would own
    both with different values is refused (as the netlink backend does all of it).
    """

    name = "memory"
    option_checks: ClassVar[OptionChecks] = {"capabilities": _kinds_option}

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
        self._capabilities = _kinds_option(capabilities)

    @classmethod
    def declared_kinds(cls, options: Mapping[str, object]) -> frozenset[str] | None:
        """The kinds of its ``capabilities`` option (every registered kind when it is left
        out or ``None``); ``None`` for a value the option refuses (``check_options`` says
        why)."""
        try:
            return _kinds_option(options.get("capabilities"))
        except ModelError:
            return None

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
        return (*fit_problems(self, plan, self._state), *_alias_problems(plan, self._state))

    def apply(self, plan: Plan) -> ApplyResult:
        """Apply every change or none; an injected failure rolls back what was done.

        The whole plan is applied in one pass (linear in the state's size, whatever
        the number of changes).
        """
        self.ensure_fits(plan, self._state)
        aliased = _alias_problems(plan, self._state)
        if aliased:
            raise PlanError(f"{self.name} backend refuses the plan, nothing was changed:\n  "
                            + "\n  ".join(aliased))
        before = self._state
        fail_at = self.faults.take(plan)
        if fail_at is not None:
            # Make the changes before the failing one, as a real system would, then undo them.
            undo = Compensation(self.name)
            made = Plan(changes=plan.changes[:fail_at])
            self._state = _one_value(before, made, made.apply_to(before))
            undo.record(plan.changes[:fail_at], lambda: self._restore(before))
            undo.fail(plan.changes[fail_at], f"injected failure at change {fail_at}")
        self._state = _one_value(before, plan, plan.apply_to(before))
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


def _aliased(obj: object) -> TypeGuard[Sysctl]:
    """Whether ``obj`` is a sysctl with another name (:data:`~k3snet.model.sysctl.ALIASES`)."""
    return isinstance(obj, Sysctl) and obj.name in ALIASES


def _alias_problems(plan: Plan, state: State) -> list[str]:
    """The changes of ``plan`` that leave both names of one kernel value owned with
    different values (the netlink backend refuses them: each write sets the other, and
    every apply would write them again in turn)."""
    aliased = [c for c in plan.changes if _aliased(c.subject)]
    if not aliased:
        return []
    after = {o.name: o.value for o in state.owned if _aliased(o)}
    for change in aliased:
        if isinstance(change.after, Sysctl):
            after[change.after.name] = change.after.value
        else:
            after.pop(change.subject.name, None)
    return owned_apart(after, [(c.subject.name, c) for c in aliased])


def _one_value(before: State, plan: Plan, after: State) -> State:
    """``after`` (``plan.apply_to(before)``) with the two names of one kernel value
    (:data:`~k3snet.model.sysctl.ALIASES`) read as the kernel reads them: every entry of
    either name holds the value written last, and a name taken over records what the
    kernel held, or (its other name owned) what k3snet found under that one."""
    aliased = [c for c in plan.changes if _aliased(c.subject)]
    if not aliased:
        return after
    held = [o for o in (*before.owned, *before.foreign) if _aliased(o)]
    owned = {o.name: o for o in before.owned if _aliased(o)}
    # The kernel's one value: an owned name's (both agree), else what a foreign one reads.
    value = next((o.value for o in held if o.name in owned), None)
    if value is None and held:
        value = held[0].value
    taken: dict[str, str | None] = {}  # a name taken over -> what it records as found
    for change in aliased:
        value = _after_change(change, owned, taken, value)
    if value is None:
        return after

    def read(obj: Sysctl) -> Sysctl:
        previous = taken.get(obj.name, obj.previous) if obj in after.owned else None
        return attrs.evolve(obj, value=value, previous=previous)

    return State(owned=[read(o) if _aliased(o) else o for o in after.owned],
                 foreign=[read(o) if _aliased(o) else o for o in after.foreign])


def _after_change(change: Change, owned: dict[str, Sysctl], taken: dict[str, str | None],
                  value: str | None) -> str | None:
    """The kernel's value of a pair of names after ``change`` (``owned``: the pair's
    owned entries, and ``taken``: what a take-over records, kept up)."""
    subject = change.subject
    assert isinstance(subject, Sysctl)
    name, alias = subject.name, ALIASES[subject.name]
    if change.action == "delete":
        gone = owned.pop(name)
        if alias not in owned and gone.previous is not None:
            return gone.previous  # given back; with the other name owned nothing is written
        return value
    after = change.after
    assert isinstance(after, Sysctl)
    if change.action == "add":
        taken[name] = owned[alias].previous if alias in owned else value
        owned[name] = attrs.evolve(after, previous=taken[name])
    else:  # a replace keeps what was found
        owned[name] = attrs.evolve(after, previous=owned[name].previous)
    return after.value


def parse_dump(text: str) -> State:
    """Parse :meth:`MemoryBackend.dump` output (a :meth:`k3snet.State.to_json` text)."""
    return State.from_json(text)
