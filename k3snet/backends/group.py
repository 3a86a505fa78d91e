"""Several backends acting as one: each manages its own kinds of one plan.

A node is usually driven by more than one backend (``netlink`` for routes and
sysctls, ``nftables`` or ``iptables`` for NAT and forward rules). A
:class:`BackendGroup` is itself a :class:`~k3snet.backends.Backend`: it splits a
plan by kind, applies the parts in dependency order (the backend whose kinds
come first goes first: sysctls and routes before NAT), and if one part fails,
undoes the parts already applied, so the group keeps the all-or-nothing rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from k3snet.backends.base import ApplyResult, Backend, ensure_capable
from k3snet.errors import ApplyError, ModelError, RollbackError
from k3snet.model.state import State, known_kinds
from k3snet.planner import Change, Plan

__all__ = ["BackendGroup", "Member"]


class Member:
    """One backend of a group, limited to some of its kinds (all of them by default)."""

    def __init__(self, backend: Backend, kinds: Iterable[str] | None = None) -> None:
        self.backend = backend
        self.kinds = frozenset(backend.capabilities if kinds is None else kinds)
        extra = self.kinds - backend.capabilities
        if extra:
            raise ModelError(f"backend {backend.name!r} cannot manage {', '.join(sorted(extra))} "
                             f"(it manages {', '.join(sorted(backend.capabilities))})")

    def order(self) -> int:
        ranks = known_kinds()
        return min(ranks.index(k) for k in self.kinds if k in ranks)


class BackendGroup:
    """A backend made of others, each owning distinct kinds.

    >>> from k3snet.backends.memory import MemoryBackend
    >>> group = BackendGroup([MemoryBackend(capabilities=["route", "sysctl"]),
    ...                       MemoryBackend(capabilities=["nat", "forward"])])
    >>> sorted(group.capabilities)
    ['forward', 'nat', 'route', 'sysctl']
    """

    def __init__(self, members: Sequence[Backend | Member]) -> None:
        self.members = sorted(
            (m if isinstance(m, Member) else Member(m) for m in members), key=Member.order
        )
        seen: dict[str, str] = {}
        for member in self.members:
            for kind in member.kinds:
                if kind in seen:
                    raise ModelError(
                        f"both {seen[kind]!r} and {member.backend.name!r} would manage {kind}; "
                        f"give each kind to one backend (e.g. --backend iptables:forward)"
                    )
                seen[kind] = member.backend.name
        if not self.members:
            raise ModelError("a backend group needs at least one backend")
        self.name = "+".join(m.backend.name for m in self.members)
        """The members' names, in apply order (``netlink+nftables``)."""

    @property
    def capabilities(self) -> frozenset[str]:
        """Every kind some member manages."""
        return frozenset().union(*(m.kinds for m in self.members))

    def observe(self) -> State:
        """The members' observations, each limited to the kinds it manages here."""
        return State().merge(*(m.backend.observe().only(m.kinds) for m in self.members))

    def check(self, plan: Plan) -> tuple[str, ...]:
        """Every member's problems with its part of the plan."""
        problems: list[str] = []
        for member in self.members:
            part = plan.only(member.kinds)
            if part.changes:
                problems += [f"{member.backend.name}: {p}" for p in member.backend.check(part)]
        return tuple(problems)

    def apply(self, plan: Plan) -> ApplyResult:
        """Apply each member's part in order; on failure undo the parts already applied."""
        ensure_capable(self, plan)
        results: list[tuple[Member, ApplyResult]] = []
        for member in self.members:
            part = plan.only(member.kinds)
            if not part.changes:
                continue
            try:
                results.append((member, member.backend.apply(part)))
            except ApplyError as exc:
                undone = self._undo(results, exc)
                raise ApplyError(
                    f"{member.backend.name}: {exc}",
                    failed=exc.failed,
                    done=[],
                    rolled_back=[*exc.rolled_back, *undone],
                ) from exc
        applied = tuple(c for _, r in results for c in r.applied)
        return ApplyResult(self.name, applied, sum(r.operations for _, r in results))

    def close(self) -> None:
        """Close every member that can be closed."""
        for member in self.members:
            close = getattr(member.backend, "close", None)
            if callable(close):
                close()

    @staticmethod
    def _undo(results: list[tuple[Member, ApplyResult]], cause: ApplyError) -> list[Change]:
        undone: list[Change] = []
        for member, result in reversed(results):
            inverse = Plan(changes=[c.inverse() for c in reversed(result.applied)])
            try:
                member.backend.apply(inverse)
            except ApplyError as exc:
                raise RollbackError(
                    f"{cause}; undoing {member.backend.name} failed too: {exc}",
                    failed=cause.failed,
                    done=[c for _, r in results for c in r.applied],
                    rolled_back=undone,
                ) from exc
            undone += inverse.changes
        return undone

    def __enter__(self) -> BackendGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
