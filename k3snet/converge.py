"""One step of the control loop: observe, plan, check, apply.

:func:`converge` is what ``k3snet apply`` and the agent run; embedding code can
call it too. It refuses a plan with conflicts (a foreign object where ours must
go) unless told otherwise: a half-fulfilled spec should never pass silently.
"""

from __future__ import annotations

import attrs

from k3snet.backends.base import ApplyResult, Backend
from k3snet.backends.group import BackendGroup
from k3snet.errors import CheckError, ConflictError
from k3snet.model.state import State
from k3snet.planner import Plan, plan
from k3snet.spec import NodeFacts, Spec
from k3snet.spec import compile as compile_spec


def compile_for(backend: Backend, spec: Spec, facts: NodeFacts | None = None) -> State:
    """The desired state of ``spec`` for the kinds ``backend`` manages, without observing.

    :func:`k3snet.compile` does the work; this only reads plain attributes of the
    backend: its ``capabilities``, and the ``target`` of each flannel backend
    (the flannel config it manages, passed to compile as a value).
    """
    members = backend.members if isinstance(backend, BackendGroup) else None
    backends = [m.backend for m in members] if members is not None else [backend]
    targets = [target for member in backends if "flannel" in member.capabilities
               and (target := getattr(member, "target", None)) is not None]
    return compile_spec(spec, facts, flannel_targets=targets).only(backend.capabilities)


__all__ = ["Convergence", "compile_for", "converge"]


@attrs.frozen
class Convergence:
    """What one converge step saw and did (``result`` is ``None`` for a dry run or no-op)."""

    observed: State
    plan: Plan
    result: ApplyResult | None


def converge(
    backend: Backend,
    desired: State,
    *,
    dry_run: bool = False,
    allow_conflicts: bool = False,
) -> Convergence:
    """Bring ``backend``'s owned state to ``desired`` (its kinds only).

    Raises :class:`~k3snet.errors.ConflictError` when foreign state blocks part
    of the spec (unless ``allow_conflicts``), :class:`~k3snet.errors.CheckError`
    when the dry run finds problems, and :class:`~k3snet.errors.ApplyError`
    (nothing changed, or rolled back) when the apply fails.
    """
    observed = backend.observe()
    p = plan(observed, desired.only(backend.capabilities))
    if p.conflicts and not allow_conflicts:
        lines = [n.render().replace("\n", " ") for n in p.conflicts]
        raise ConflictError("foreign state conflicts with the spec; nothing was applied:\n  "
                            + "\n  ".join(lines))
    if dry_run or p.empty:
        return Convergence(observed, p, None)
    problems = backend.check(p)
    if problems:
        raise CheckError("the plan would fail; nothing was applied:", problems)
    return Convergence(observed, p, backend.apply(p))
