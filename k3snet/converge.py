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
from k3snet.model.state import KINDS, State
from k3snet.planner import Plan, plan
from k3snet.spec import NodeFacts, Spec
from k3snet.spec import compile as compile_spec


def compile_for(backend: Backend, spec: Spec, facts: NodeFacts | None = None) -> State:
    """The desired state of ``spec`` for the kinds ``backend`` manages.

    Node kinds come from :func:`k3snet.compile`; flannel's config from
    :func:`k3snet.backends.flannel.compile_flannel` for each flannel backend's
    target (when the spec has ``cni.flannel``; otherwise the spec's pod CIDRs are
    only checked against flannel's ``Network``); Calico pools from
    :func:`k3snet.backends.calico.compile_ippools` (when the spec has ``cni.calico``).
    """
    members = backend.members if isinstance(backend, BackendGroup) else None
    backends = [m.backend for m in members] if members is not None else [backend]
    kinds = backend.capabilities
    parts: list[State] = []
    if kinds & set(KINDS):
        parts.append(compile_spec(spec, facts))
    if "flannel" in kinds:
        from k3snet.backends import flannel  # noqa: PLC0415 - only for flannel users

        for member in backends:
            target = getattr(member, "target", None)
            if "flannel" not in member.capabilities or target is None:
                continue
            settings = spec.cni.flannel
            if settings is None:
                flannel.check_pod_cidr(spec, member.observe())
                continue
            parts.append(flannel.compile_flannel(
                spec, target=target, backend_type=settings.backend_type,
                backend_options=dict(settings.backend_options),
                enable_nftables=settings.enable_nftables))
    if "ippool" in kinds and spec.cni.calico is not None:
        from k3snet.backends.calico import compile_ippools  # noqa: PLC0415 - Calico users only

        c = spec.cni.calico
        parts.append(compile_ippools(spec, ipip_mode=c.ipip_mode, vxlan_mode=c.vxlan_mode,
                                     block_size=c.block_size, node_selector=c.node_selector))
    return State().merge(*parts).only(kinds)

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
