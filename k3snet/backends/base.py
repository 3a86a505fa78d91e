"""The backend protocol, and the semantics every backend keeps.

A backend manages some *kinds* of objects (its ``capabilities``) on one system:
a node's kernel, a file, a cluster. It is used in three steps::

    observed = backend.observe()              # owned + foreign, read-only
    p = k3snet.plan(observed, desired)        # pure
    problems = backend.check(p)               # dry run, changes nothing
    result = backend.apply(p)                 # all-or-nothing

``apply`` semantics, which :func:`k3snet.testing.run_conformance` checks:

* **all or nothing**: either every change is applied and an :class:`ApplyResult`
  is returned, or :class:`~k3snet.errors.ApplyError` is raised and the system is
  as it was before. Backends with kernel transactions (nftables,
  ``iptables-restore``) get this for free; the others undo what they did and
  report it: ``ApplyError.done`` the changes made, ``rolled_back`` their inverses,
  last first (:class:`~k3snet.errors.ApplyError`). If the undo fails too,
  :class:`~k3snet.errors.RollbackError` says the state is unknown.
* **only owned objects**: a backend never changes, reorders or deletes an
  object it did not create; a plan naming one is refused.
* **capabilities**: a plan with changes of other kinds is refused before
  anything is done (use :meth:`k3snet.Plan.only` to split a plan).
* **lifecycle**: ``close()`` releases what the backend holds, and ``with
  backend:`` closes it.

The concerns every backend shares (lifecycle, plan fit, compensating undo,
error mapping, observe cache, fault injection) are written once in
:mod:`k3snet.backends.kit`; a custom backend can subclass
:class:`~k3snet.backends.kit.BackendBase`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

import attrs

from k3snet._logline import shell_join
from k3snet.errors import PlanError
from k3snet.model.state import State
from k3snet.planner import Change, Plan

__all__ = ["ApplyResult", "Backend", "BackendFactory", "PendingRestart", "ensure_capable",
           "restart_command"]


def _applied(changes: Iterable[Change]) -> tuple[Change, ...]:
    return tuple(changes)


@attrs.frozen
class ApplyResult:
    """What an apply did: the changes applied, in order, and the system calls it took.

    ``operations`` counts round trips to the system (netlink requests, nft
    transactions, ``iptables-restore`` runs): the cost a reader can compare.
    """

    backend: str
    # A tuple whatever it is given as: ApplyResult(name, [change]) was unequal to the same
    # result made from plan.changes, and could not be hashed.
    applied: tuple[Change, ...] = attrs.field(default=(), converter=_applied)
    operations: int = 0
    undo: Callable[[], tuple[Change, ...]] | None = attrs.field(
        default=None, eq=False, repr=False, kw_only=True)
    """How to take this apply back exactly, when the backend knows better than
    applying the inverse changes (``None``: apply them). Called at most once, by a
    :class:`~k3snet.backends.group.BackendGroup` whose later member failed; returns
    the inverse changes made, raises :class:`~k3snet.errors.RollbackError` if it
    could not make them all. The netlink backend gives one: the inverse of giving a
    sysctl back is no new take-over (whose write spreads to every interface's
    switch), but the values and the state file as they were before."""

    def summary(self) -> str:
        """``backend: N change(s) applied in K operation(s)``."""
        return (f"{self.backend}: {len(self.applied)} change(s) applied "
                f"in {self.operations} operation(s)")

    def render(self) -> str:
        """:meth:`summary` and the changes, one a line."""
        return "\n".join([self.summary(), *(f"  {c}" for c in self.applied)])


def _stale(pods: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if pods is None else tuple(pods)


@attrs.frozen
class PendingRestart:
    """A CNI config k3snet changed that takes effect only once ``workload``'s pods restart.

    Cilium reads ``cilium-config`` and flannel its ``net-conf.json`` when they start: the
    ConfigMap changed, the node still runs the old settings until the pods restart
    (``kubectl -n NS rollout restart daemonset/NAME``). ``stale``: the pods still
    running since before the change (``None``: k3snet cannot tell, say why ``reason``).
    Backends that know it give them through an optional ``pending_restarts()``
    (:func:`k3snet.converge.pending_restarts`).
    """

    workload: str
    """What to restart: ``DaemonSet kube-system/cilium``, or the service for a file."""
    reason: str
    """What changed and why it needs the restart."""
    stale: tuple[str, ...] | None = attrs.field(default=None, converter=_stale)
    command: str | None = attrs.field(kw_only=True)
    """The command doing the restart where k3snet knows it, names quoted for a shell:
    a DaemonSet workload's ``kubectl -n NS rollout restart daemonset/NAME``
    (:func:`restart_command`) unless given; ``None`` where it is unknown."""

    @command.default
    def _command(self) -> str | None:
        return restart_command(self.workload)

    def render(self) -> str:
        """``restart pending: WORKLOAD (...)``, one line."""
        if self.stale is None:
            pods = "k3snet cannot tell when that is done"
        else:
            shown = ", ".join(self.stale[:3]) + (", ..." if len(self.stale) > 3 else "")
            pods = f"{len(self.stale)} pod(s) started before the change: {shown}"
        return f"restart pending: {self.workload} ({self.reason}; {pods})"

    def to_dict(self) -> dict[str, object]:
        """The JSON form: ``workload``, ``reason``, ``stale`` (a list, or ``null``),
        ``command`` (a string, or ``null``)."""
        return {"workload": self.workload, "reason": self.reason,
                "stale": None if self.stale is None else list(self.stale),
                "command": self.command}


def restart_command(workload: str, daemonsets: Sequence[str] = ()) -> str | None:
    """The ``kubectl`` command restarting ``workload`` (``DaemonSet NS/NAME``, text may
    follow it: ``DaemonSet NS/NAME (why)``), or, with ``daemonsets``, those DaemonSets
    of the namespace ``workload`` names (``the pods reading ConfigMap NS/NAME``): each
    name a word a shell reads back as that name (``$'...'`` where it must); ``None`` for
    another.

    >>> restart_command("DaemonSet kube-system/cilium")
    'kubectl -n kube-system rollout restart daemonset/cilium'
    >>> restart_command("the pods reading ConfigMap kube-flannel/kube-flannel-cfg",
    ...                 ("kube-flannel-ds",))
    'kubectl -n kube-flannel rollout restart daemonset/kube-flannel-ds'
    >>> restart_command("the pods reading ConfigMap kube-system/cilium-config") is None
    True
    """
    words = workload.split(" ")
    if daemonsets and len(words) >= 2 and "/" in words[-1]:
        namespace, names = words[-1].partition("/")[0], tuple(daemonsets)
    elif len(words) >= 2 and words[0] == "DaemonSet" and "/" in words[1]:
        namespace, _, name = words[1].partition("/")
        names = (name,)
    else:
        return None
    if not namespace or not all(names):
        return None
    return shell_join(["kubectl", "-n", namespace, "rollout", "restart",
                       *(f"daemonset/{name}" for name in names)])


@runtime_checkable
class Backend(Protocol):
    """Protocol: observe, check and apply changes to one system.

    Implementations need no base class; they are found by name through the
    ``k3snet.backends`` entry-point group (see :mod:`k3snet.backends.registry`).
    """

    @property
    def name(self) -> str:
        """Registry name (``memory``, ``netlink``, ``nftables`` ...)."""
        ...

    @property
    def capabilities(self) -> frozenset[str]:
        """The kinds this backend manages (``route``, ``sysctl``, ``nat``, ``forward``)."""
        ...

    def observe(self) -> State:
        """What the system has now, owned and foreign, of this backend's kinds."""
        ...

    def check(self, plan: Plan) -> tuple[str, ...]:
        """Dry run: the problems applying ``plan`` would hit (empty when it would succeed)."""
        ...

    def apply(self, plan: Plan) -> ApplyResult:
        """Apply every change of ``plan``, all or nothing (see the module docs)."""
        ...

    def close(self) -> None:
        """Release sockets, threads, clients (idempotent); the backend is not used after."""
        ...

    def __enter__(self) -> Self:
        """``with backend as b:`` gives the backend itself (typed as it is: ``b`` of
        ``with k3snet.create_backend(...) as b`` is a :class:`Backend`, not ``Any``) and
        closes it at the end."""
        ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Close the backend."""
        ...


BackendFactory = Callable[..., Backend]
"""Anything that builds a backend from keyword options (a class, usually)."""


def ensure_capable(backend: Backend, plan: Plan) -> None:
    """Refuse a plan that has changes of kinds ``backend`` does not manage."""
    foreign_kinds = sorted(plan.kinds - set(backend.capabilities))
    if foreign_kinds:
        raise PlanError(
            f"backend {backend.name!r} manages {', '.join(sorted(backend.capabilities))}; "
            f"the plan also changes {', '.join(foreign_kinds)} (split it with Plan.only)"
        )
