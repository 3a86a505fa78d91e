"""The agent's loop: read the spec, converge this node (and, as leader, the cluster), report.

One pass:

1. read the spec again (a mounted ConfigMap changes in place), and the
   ``ipMasqAgentConfig`` file it imports; a new text or file is parsed and
   validated; an invalid one is *refused* and the last good spec stays in force;
   a read that fails this time (the API server restarting: see
   :class:`~k3snet.agent.SpecSource`) refuses nothing, the spec in force stays;
2. converge the node's own backends (netlink, nftables, iptables, a flannel
   file) with :func:`k3snet.converge`; a new spec that would delete everything
   k3snet owns (:class:`~k3snet.errors.TeardownError`) is refused the same way;
   destinations the node cannot route to (by the node facts) have their routes
   held, the rest converged, and the pass fails (``unreachable``: without the
   failures' back-off; a node part managing no routes holds nothing and goes on);
   wanted objects that foreign state blocks (the plan's ``!`` conflicts: a foreign
   ``DROP`` before k3snet's jump) are left as they are, every other change of the
   plan applied, and the pass fails (``conflict``, with the back-off);
3. converge the cluster-wide backends (Calico IPPools, the flannel ConfigMap,
   Cilium's ConfigMaps) only while this agent holds the Lease
   (:mod:`k3snet.agent._lease`), whether or not step 2 succeeded;
4. record the outcome: a log line, the metrics, the node annotation.

A failed pass never ends the loop: the next one starts after ``interval``.

Between passes the agent looks at the node backends' change tokens every
``watch`` seconds (the nftables generation id, the netlink route view's
version after reading its notifications, and the sysctls it owns or watches:
a small round trip and a few small files, no listing; iptables-legacy's is a
digest of its filter and nat tables, copied from the kernel without a process).
When one moves, someone changed the node: the next pass starts then, not an
interval later, so drift is repaired within about a second; the interval stays
the backstop for what no token covers (a flannel file).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import inspect
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Protocol, TypeAlias, TypeGuard

import attrs

from k3snet._kept import read_input
from k3snet.agent._lease import LeaderElector
from k3snet.agent._logging import LOG_ITEMS, listed
from k3snet.agent._metrics import AgentMetrics, spec_read_error_reason
from k3snet.agent._report import NodeReport, NodeReporter
from k3snet.agent._spec_source import SPEC_SETTLE, SPEC_SETTLE_LIMIT, SettledFile, SpecSource
from k3snet.backends.base import PendingRestart
from k3snet.backends.group import BackendGroup, Member
from k3snet.backends.kit import longest_step, undo_steps
from k3snet.backends.lock import DEFAULT_LOCK_TIMEOUT
from k3snet.converge import Convergence, converge, destroy, pending_restarts
from k3snet.errors import (
    ApplyError,
    BackendError,
    BackendNotFoundError,
    BackendOptionError,
    CheckError,
    ConflictError,
    K3snetError,
    ModelError,
    PlanError,
    Problem,
    SpecError,
    TeardownError,
)
from k3snet.kube import (
    ASSUMED_TERMINATION_GRACE,
    DEFAULT_TIMEOUT,
    Deadline,
    requests_within,
    throttle_waits,
)
from k3snet.model import NetObject
from k3snet.model.route import Route
from k3snet.model.state import State
from k3snet.planner import Change, Note
from k3snet.spec import Spec, held_destinations
from k3snet.spec.load import imported_files, load_mapping
from k3snet.spec.source import MAX_BYTES
from k3snet.spec.validate import flannel_option_problems, flannel_options_left_to_backend

__all__ = ["INTERVAL_JITTER", "NOT_READY_AFTER", "Agent", "AgentOptions", "PassResult",
           "cluster_wide_kinds", "split_cluster_wide"]

_log = logging.getLogger("k3snet.agent")

BackendFactory = Callable[[Spec], BackendGroup]
"""Builds the backends a spec asks for (the CLI's ``--backend`` logic)."""


class HoldingDesiredState(Protocol):
    """Protocol: the desired state of a spec for a group's kinds (``compile_for`` with
    node facts); ``hold``: destinations whose routes are left out (the agent passes it
    only after :func:`~k3snet.spec.held_destinations` named them)."""

    def __call__(self, spec: Spec, group: BackendGroup, /, *,
                 hold: frozenset[int] = ...) -> State: ...


DesiredState: TypeAlias = HoldingDesiredState | Callable[[Spec, BackendGroup], State]
"""What :class:`Agent` takes as ``desired``: a function taking ``hold`` (or any
keyword), or one of two arguments, written before ``hold``, which the agent never hands
one (it reads the function's signature)."""


Status = Literal["ok", "failed", "spec-refused"]
_CLUSTER_KINDS = frozenset({"ippool", "flannel", "cilium"})


def cluster_wide_kinds(member: Member) -> frozenset[str]:
    """The kinds of a group member whose objects are shared by the whole cluster.

    Calico IPPools are one set per cluster, and so are flannel's
    ``kube-flannel-cfg`` ConfigMap and Cilium's ``cilium-config`` and
    ip-masq-agent ConfigMaps; a flannel *file* (K3s ``--flannel-conf``) is the
    node's own, like routes, rules and sysctls.
    """
    kinds = member.kinds & {"ippool", "cilium"}
    target = getattr(member.backend, "target", None)
    if "flannel" in member.kinds and isinstance(target, str) and target.startswith("configmap:"):
        kinds |= {"flannel"}
    return frozenset(kinds)


def split_cluster_wide(group: BackendGroup) -> tuple[BackendGroup | None, BackendGroup | None]:
    """(the node's part, the cluster-wide part) of a group, either may be None.

    A member with both (the memory backend manages every kind) is split by kind.
    """
    node: list[Member] = []
    cluster: list[Member] = []
    for member in group.members:
        shared = cluster_wide_kinds(member)
        if member.kinds - shared:
            node.append(member if not shared else Member(member.backend, member.kinds - shared))
        if shared:
            cluster.append(member if shared == member.kinds else Member(member.backend, shared))
    return (BackendGroup(node) if node else None, BackendGroup(cluster) if cluster else None)


NOT_READY_AFTER = 3
"""Passes in a row whose node part failed after which /readyz says not ready (until a
pass converges the node again), once they have failed for :data:`NOT_READY_FOR` too."""

NOT_READY_FOR = 30.0
"""Seconds from the start of the first of the failed passes in a row after which /readyz
says not ready (with :data:`NOT_READY_AFTER` of them): a failed pass is tried again as
soon as the watch sees a change, a second later on a busy node, and 3 failures then took
3 s. The kubelet's own default takes 3 failed probes 10 s apart."""

CLEANUP_MARGIN = 5.0
"""Seconds of the pod's grace period kept after SIGTERM's last wait: ``--cleanup-on-exit``'s
wait for another k3snet process's namespace lock ends that long before the kubelet's kill
would (one killed mid-removal leaves the node half cleaned), and so do the Lease's release
and the last report, each request's timeout cut to what is left (see ``Agent.shutdown``)."""

INTERVAL_JITTER = 0.1
"""The part of the interval by which each wait for it is shortened at random (0 to 10 %):
agents whose passes ended at one instant (their spec reads, or the leader's API requests,
all answered at once by an API server coming back) otherwise read the spec together, to
the same millisecond, every interval from then on. Never longer: the interval stays the
longest time between two passes, and the liveness limit and the alerts based on it hold."""

FREE_REPAIRS = 2
"""Drift repairs within :attr:`AgentOptions.repair_window` made as soon as the change is
seen; each one more doubles the wait (another program is undoing k3snet's changes)."""


def _not_ready_for(_: object, attribute: attrs.Attribute[float], value: object) -> None:
    """Seconds, 0 or more: NaN compares false with every duration (an agent whose node's
    part failed for days stayed ready), and a string failed at the first failed pass."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{attribute.name} must be a number of seconds, got {value!r}")
    if not value >= 0:  # (NaN too)
        raise ValueError(f"{attribute.name} must be 0 or more seconds, got {value!r}")


_GRACE_LIMIT = 86400.0
"""A grace period must be less than this (a day): a longer one is a mistake (minutes
written as hours), not a shutdown to plan for."""


def termination_grace_problem(value: float) -> str | None:
    """What is wrong with ``value`` as the pod's grace period (``None``: nothing): more
    than :data:`CLEANUP_MARGIN`, which the shutdown keeps of it, and less than a day."""
    if not CLEANUP_MARGIN < value < _GRACE_LIMIT:  # (NaN too)
        return (f"must be more than {CLEANUP_MARGIN:g} s (the clean-up margin) and less "
                f"than {_GRACE_LIMIT:g} s, not {value:g}")
    return None


def grace_shortfalls(grace: float, group: BackendGroup) -> list[str]:
    """What a member's longest bounded step would cut after SIGTERM, in a grace period of
    ``grace`` seconds: the step (its optional ``longest_step``,
    :func:`~k3snet.backends.kit.longest_step`: the iptables backend's ``timeout``, after
    which a restore run is killed), the bounded steps of its undo, each as long (its
    optional ``undo_steps``, :func:`~k3snet.backends.kit.undo_steps`, 1 without one), then
    :data:`CLEANUP_MARGIN`. A ``longest_step`` that is no number of seconds, an
    ``undo_steps`` that is no whole number of 1 or more, or a property of either that
    raises, is a shortfall of its own, naming the backend and what is wrong; the other
    members are judged still (such a backend raised, and the agent skipped the check:
    every other backend's shortfall went unsaid).

    SIGTERM never cuts the pass in progress. The iptables backend's undo after a restore
    run killed at its bound reads back what that run committed and takes back each
    family in one run: three steps after the killed one, 125 s at its 30 s ``timeout``
    with the margin, which the rendered DaemonSet's grace period for a spec with that
    backend holds (130 s: docs/manifests.md). Counted as one undo run, the check let a
    70 s grace period pass while a dual-stack apply whose IPv6 run was killed took back
    one table per run, five runs after it: the kubelet's SIGKILL landed in the undo (the
    node half-changed) and nothing told the operator. The bounded steps of the pass
    before the killed one, and an undo's further runs after a refused table, are not
    counted (docs/agent.md says what they cost)."""
    shortfalls: list[str] = []
    for member in group.members:
        try:
            step = longest_step(member.backend)
            undo = 1 if step is None else undo_steps(member.backend)
        except BackendError as exc:
            shortfalls.append(f"{_one_line(exc)}: its steps are not held against the pod's "
                              f"grace period of {grace:g} s")
            continue
        if step is None:
            continue
        try:
            needed = (1 + undo) * step + CLEANUP_MARGIN
        except OverflowError:  # an undo_steps beyond any float: no grace period holds it
            needed = math.inf
        if needed >= grace:
            # (an undo_steps beyond any float has more digits than str() writes: 4300)
            steps = ("as long" if undo == 1 else f"{undo} steps as long" if needed < math.inf
                     else "more steps as long than a float counts")
            shortfalls.append(
                f"{member.backend.name}: a step of it may take {step:g} s (its timeout) and "
                f"its undo {steps}, {needed:g} s with the {CLEANUP_MARGIN:g} s clean-up "
                f"margin, not within the pod's grace period of {grace:g} s: SIGTERM during "
                "them has the kubelet kill k3snet in the undo, the node half-changed; give "
                "the pod a longer terminationGracePeriodSeconds (and "
                "$K3SNET_TERMINATION_GRACE) than that, or the backend a lower timeout")
    return shortfalls


def _termination_grace(_: object, attribute: attrs.Attribute[float], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{attribute.name} must be a number of seconds, got {value!r}")
    problem = termination_grace_problem(value)
    if problem is not None:
        raise ValueError(f"{attribute.name} {problem}")


@attrs.frozen
class AgentOptions:
    """How the loop runs (see ``k3snet agent --help``)."""

    node_name: str
    interval: float = 30.0
    cleanup_on_exit: bool = False
    """On SIGTERM, remove what k3snet owns on this node (``k3snet destroy``)."""
    watch: float | None = 0.25
    """Seconds between two looks at the backends' change tokens (``None``: only the
    interval starts passes)."""
    watch_gap: float = 1.0
    """A pass started by a change starts at least this long after the previous one
    started: a busy node (kube-proxy committing every second) costs at most one
    pass per ``watch_gap``. While another program keeps undoing what k3snet writes
    (more than :data:`FREE_REPAIRS` passes repairing drift within
    :attr:`repair_window`), the gap doubles with each repair, up to ``interval``."""
    stale_after: float | None = None
    """/healthz fails when no pass has ended for this long (default: 2 x interval
    + 2 x the namespace lock timeout + 60 s)."""
    not_ready_for: float = attrs.field(default=NOT_READY_FOR, validator=_not_ready_for)
    """/readyz fails once the node's part failed :data:`NOT_READY_AFTER` passes in a row
    and for this many seconds (from the start of the first of them; 0 or more, ``inf``:
    by failed passes never; NaN, which no duration reaches, is a ValueError)."""
    termination_grace: float = attrs.field(default=float(ASSUMED_TERMINATION_GRACE),
                                           validator=_termination_grace)
    """The pod's ``terminationGracePeriodSeconds``: after :meth:`Agent.stop`, the seconds
    before the kubelet's kill, which the shutdown plans for (:meth:`Agent.grace_deadline`).
    The rendered DaemonSet says it (``$K3SNET_TERMINATION_GRACE``,
    :data:`~k3snet.kube.TERMINATION_GRACE`); not told, the agent assumes
    :data:`~k3snet.kube.ASSUMED_TERMINATION_GRACE` (30 s: a DaemonSet rendered before
    said 30 s, and an agent planning for more was killed with its Lease held). More than
    :data:`CLEANUP_MARGIN` and less than a day (else a ValueError)."""

    @property
    def repair_window(self) -> float:
        """Seconds over which drift repairs are counted (60 s, or 2 x the interval)."""
        return max(60.0, 2 * self.interval)

    @property
    def liveness_limit(self) -> float:
        """Seconds without a finished pass after which the agent is not healthy."""
        if self.stale_after is not None:
            return self.stale_after
        return 2 * self.interval + 2 * DEFAULT_LOCK_TIMEOUT + 60


@attrs.frozen
class PassResult:
    """What one pass did."""

    status: Status
    message: str
    applied: tuple[Change, ...] = ()
    spec_sha256: str | None = None
    leader: bool = False
    drift: int = 0
    """How many of ``applied`` repaired drift (the spec in force had not changed)."""
    restart_pending: tuple[str, ...] = ()
    """The CNI workloads whose pods must still restart for k3snet's changes to be in force."""


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _file_digest(path: Path) -> str:
    """SHA-256 of what file ``path`` holds (loading says what is wrong with it; what matters
    here is a change)."""
    try:
        return hashlib.sha256(read_input(path, MAX_BYTES)).hexdigest()
    except OSError as exc:
        return f"unreadable: {exc.strerror}"


def _imported_files(text: str, where: str) -> tuple[str, ...]:
    """The files spec ``text`` imports (none when it cannot be read: it is refused)."""
    if "ipMasqAgentConfig" not in text and "\\" not in text:  # no parse for most specs
        return ()
    try:
        return imported_files(load_mapping(text, where))
    except SpecError:
        return ()


def _spec_options(spec: Spec, backends: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """The options ``spec`` gives ``backends`` (by name), as the agent builds them: the
    ``k3snet destroy`` a warning names carries them."""
    from k3snet.backends.options import resolve_backend_options  # noqa: PLC0415
    from k3snet.spec import spec_backend_options  # noqa: PLC0415

    found: dict[str, dict[str, Any]] = {}
    for name in {getattr(b, "name", "") for b in backends}:
        with contextlib.suppress(K3snetError):  # refused: the destroy is named without them
            found[name] = resolve_backend_options(name, spec_backend_options(spec, name))
    return found


def _holder(warning: str) -> str:
    """What a warning of a switch of backends names (``flannel holds 1 of k3snet's
    objects in PATH``), the same whichever look found it; another warning whole."""
    return warning.partition(", and no backend in use is ")[0]


def _backends_of(spec: Spec) -> tuple[Any, ...]:
    """What the backend group is built from: a change of either rebuilds it."""
    return (spec.backends, spec.backend_options)


def _reason(exc: BaseException) -> str:
    """A short label for a failure (the ``reason`` of the failure metric)."""
    for cls, label in ((_HeldRoutesError, "unreachable"), (_RefusedMembersError, "refused"),
                       (ConflictError, "conflict"),
                       (TeardownError, "teardown"), (SpecError, "spec"), (CheckError, "check"),
                       (ApplyError, "apply")):
        if isinstance(exc, cls):
            return label
    if isinstance(exc, BackendError):
        return "api" if hasattr(exc, "status") else "backend"
    return "error" if isinstance(exc, K3snetError) else "internal"


def _counted(exc: BaseException) -> str:
    """The ``reason`` a failure is counted under in ``k3snet_agent_sync_failures_total``:
    its own, but ``refused`` for conflicts beside a refusal (said first, they are counted
    by ``k3snet_agent_conflicts_total``): an alert on ``refused`` missed such a refusal,
    the spec's own fault, for as long as a foreign rule stood beside it."""
    if isinstance(exc, _ConflictsLeftError) and exc.refused:
        return "refused"
    return _reason(exc)


def _takes_hold(desired: DesiredState) -> TypeGuard[HoldingDesiredState]:
    """Whether ``desired`` takes the ``hold`` keyword (or any keyword)."""
    try:
        parameters = inspect.signature(desired).parameters.values()
    except (TypeError, ValueError):  # no signature to read: assume the protocol's
        return True
    return any((p.name == "hold" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
               or p.kind is p.VAR_KEYWORD for p in parameters)


def _slots_of(spec: Spec, held: frozenset[int]) -> Callable[[NetObject], bool]:
    """Whether an owned object is a route in the place (table, destination) of a route of
    one of the ``held`` destinations."""
    places = {(d.table, d.cidr) for i, d in enumerate(spec.destinations) if i in held}
    return lambda obj: type(obj) is Route and (obj.table, obj.destination) in places


def _log_each(applied: Sequence[Change]) -> None:
    """Each change at debug level when the pass's line names only the first
    :data:`LOG_ITEMS`: the whole list, one bounded line per change."""
    if len(applied) > LOG_ITEMS and _log.isEnabledFor(logging.DEBUG):
        for number, change in enumerate(applied, 1):
            _log.debug("change %d of %d: %s", number, len(applied), change)


def _one_line(exc: BaseException) -> str:
    # An error listing objects (a spec's problems, the conflicts, a dry run's) has one
    # per line after its first: a log line names the first LOG_ITEMS and counts the rest.
    head, *items = str(exc).split("\n")
    # Its notes after it (an apply that failed with the plan's conflicts left out names
    # them there: the pass said "apply" alone, the conflict unsaid).
    notes = [str(n) for n in getattr(exc, "__notes__", ())[:LOG_ITEMS]]
    # Their messages name only the first SHOWN_PROBLEMS / LOG_ITEMS, then count the rest:
    # the problems themselves are counted.
    if isinstance(exc, SpecError):
        said = " ".join([head, listed(exc.problems, "\n")])
    elif isinstance(exc, _HeldRoutesError):
        said = " ".join([head, listed(exc.cause.problems, "\n")])
    else:
        said = " ".join([head, listed(items, "\n")])
    # Each note after a `;` (it read as the last change of the list before it).
    return "; ".join(" ".join(part.split()) for part in [said, *notes])


def _close(group: BackendGroup, what: str) -> None:
    """Close ``group`` (every member: :meth:`BackendGroup.close`), a failure logged, not
    raised: a backend failing to close (a custom backend's socket already gone) kept a
    new spec, converged already, out of force, every pass building and leaking one more
    group and failing as a bug; at shutdown it ended the agent with a traceback."""
    try:
        group.close()
    except Exception as exc:  # noqa: BLE001 - nothing of the pass depends on it
        _log.warning("cannot close the backends of %s: %s", what, _one_line(exc),
                     exc_info=not isinstance(exc, K3snetError))


def _destinations(spec: Spec, indices: frozenset[int]) -> str:
    """The CIDRs of the destinations at ``indices``, the first :data:`LOG_ITEMS` named:
    an uplink losing its address holds every destination through it, and a message
    naming 10 000 was 170 KB, built again on every pass."""
    held = sorted(indices)
    # listed() names the first LOG_ITEMS and counts the rest: only those are made text.
    return listed([*(spec.destinations[i].cidr for i in held[:LOG_ITEMS]),
                   *held[LOG_ITEMS:]], ", ")


class _PartsFailedError(Exception):
    """The node part, the cluster-wide part or both failed (what was applied is kept)."""

    def __init__(self, failures: Sequence[tuple[str, Exception]],
                 applied: tuple[Change, ...], leader: bool) -> None:
        super().__init__(str(failures[0][1]))
        # The first failure is the pass's (the node's when both failed).
        self.failures, self.applied, self.leader = tuple(failures), applied, leader


class _HeldRoutesError(Exception):
    """The node part converged all but the routes of destinations the node cannot route
    to (their device or gateway missing by the node facts): those are held as they are."""

    def __init__(self, cause: SpecError, held: frozenset[int], spec: Spec,
                 applied: Sequence[Change], tokens: tuple[Hashable | None, ...] | None
                 ) -> None:
        names = _destinations(spec, held)
        # The first LOG_ITEMS, the rest counted, as the log and the Node say them (see
        # _one_line): every problem joined was 629 KB for 10 000, built on every pass.
        problems = listed(cause.problems, "\n  ")
        self.summary = (f"{len(held)} destination(s) held, their routes neither added nor "
                        f"deleted until the node can route to them ({names})")
        super().__init__(f"{self.summary}; everything else converged:\n  {problems}")
        self.cause, self.held = cause, held
        self.applied, self.tokens = tuple(applied), tokens


class _ConflictsLeftError(ConflictError):
    """The part converged all but what foreign state blocks (the plan's conflicts, left
    as they are: never forced, nothing foreign touched); what was applied is carried."""

    def __init__(self, conflicts: Sequence[Note], applied: Sequence[Change],
                 tokens: tuple[Hashable | None, ...] | None,
                 held: _HeldRoutesError | None = None) -> None:
        # One line, the conflicts first (the Node's message is cut at MESSAGE_LIMIT: what
        # blocks the spec must be in it), the first LOG_ITEMS of each list rendered.
        blocked = listed([*(n.render().replace("\n", " ") for n in conflicts[:LOG_ITEMS]),
                          *conflicts[LOG_ITEMS:]])
        done = f"applied: {listed(applied)}" if applied else "nothing else to change"
        also = "" if held is None else f"; also {held.summary}"
        super().__init__(f"foreign state conflicts with the spec: {len(conflicts)} wanted "
                         f"object(s) left as they are until it goes, everything else "
                         f"converged ({len(applied)} change(s) applied){also}: {blocked}; "
                         f"{done}")
        self.conflicts, self.applied, self.tokens = tuple(conflicts), tuple(applied), tokens
        # Whether members refused their part in the same pass (said in a note after).
        self.refused = False


class _RefusedMembersError(Exception):
    """Members of the part refuse what the spec wants of them, whatever is in place (their
    ``expect``: the flannel backend's ``EnableNFTables`` of a file K3s reads): their
    objects are left as they are, everything else converged; what was applied is carried."""

    def __init__(self, refusals: Sequence[tuple[Member, PlanError]], applied: Sequence[Change],
                 tokens: tuple[Hashable | None, ...] | None,
                 held: _HeldRoutesError | None = None) -> None:
        said = "; ".join(_one_line(exc) for _, exc in refusals)
        names = ", ".join(dict.fromkeys(m.backend.name for m, _ in refusals))
        # Routes held beside it said after it, as beside a conflict: a note of the held
        # routes' failure, the refusal was counted 'unreachable' and never backed off.
        also = "" if held is None else f"; also {held.summary}"
        super().__init__(f"{said}; what {names} manages is left as it is, everything else "
                         f"converged ({len(applied)} change(s) applied){also}")
        self.refusals, self.applied, self.tokens = tuple(refusals), tuple(applied), tokens

    def note(self) -> str:
        """The refusals said beside another failure of the same pass (a conflict)."""
        return f"also refused: {self}"


def _leaving(desired: State, refusals: Sequence[tuple[Member, PlanError]],
             keep: Callable[[NetObject], bool] | None
             ) -> tuple[State, Callable[[NetObject], bool]]:
    """``desired`` without the kinds of the refusing members, and a ``keep`` (for
    :func:`~k3snet.converge.converge`) that also keeps what they own as it is."""
    kinds = frozenset().union(*(m.kinds for m, _ in refusals))
    rest = State(owned=[o for o in desired.owned if o.kind not in kinds],
                 foreign=desired.foreign)
    return rest, lambda obj: obj.kind in kinds or (keep is not None and keep(obj))


def _refusals(group: BackendGroup, desired: State) -> list[tuple[Member, PlanError]]:
    """The members of ``group`` whose ``expect`` refuses their part of ``desired``."""
    found: list[tuple[Member, PlanError]] = []
    for member in group.members:
        expect = getattr(member.backend, "expect", None)
        if not callable(expect):
            continue
        try:
            expect(desired.only(member.kinds))
        except PlanError as exc:
            found.append((member, exc))
    return found


@attrs.define
class _Holding:
    """What the agent remembers of destinations the node cannot route to."""

    found: tuple[Spec, SpecError, frozenset[int]] | None = None
    """(the spec, the error compiling it, its held destinations) last found."""
    unroutable: tuple[Spec, frozenset[int]] | None = None
    """(the spec, the destinations) last said unroutable with no route to hold."""
    said: tuple[str, float] | None = None
    """(the message, when) of held routes last logged as an error."""


class _RefusedError(Exception):
    """A new spec is refused: invalid or deleting everything (carries the cause)."""

    def __init__(self, reason: str, cause: K3snetError) -> None:
        super().__init__(str(cause))
        self.reason, self.cause = reason, cause


class _ReportWriter:
    """Writes the node report from a thread of its own, the latest result first.

    The report is API writes (a Node patch, an Event), each waiting up to the
    request timeout (10 s): written by the loop, an API server that does not answer
    (a partitioned control plane) held every pass 10-20 s, since a failed patch is
    tried again on the next pass, and drift waited that long for its repair. The
    loop only hands the result over; results handed over while a write is in
    flight are folded into the latest (the annotation shows the latest anyway).
    """

    def __init__(self, reporter: NodeReporter) -> None:
        self._reporter = reporter
        self._latest: NodeReport | None = None
        self._stopping = False
        self._ready = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="k3snet-agent-report",
                                        daemon=True)
        self._thread.start()

    def submit(self, report: NodeReport) -> None:
        """Write ``report`` next (replacing one not yet written)."""
        with self._ready:
            self._latest = report
            self._ready.notify()

    def _run(self) -> None:
        while True:
            with self._ready:
                while self._latest is None and not self._stopping:
                    self._ready.wait()
                report, self._latest = self._latest, None
            if report is None:
                return
            try:
                self._reporter.report(report)
            except Exception:  # noqa: BLE001 - a bug must not end the reporting silently
                _log.exception("the node report failed")

    def finish(self) -> None:
        """Write what is pending, then end (:meth:`join` waits for it)."""
        with self._ready:
            self._stopping = True
            self._ready.notify()

    def join(self, timeout: float) -> None:
        """Wait at most ``timeout`` seconds for the thread to end."""
        self._thread.join(timeout)


class Agent:
    """The node agent. :meth:`run_pass` is one pass; :meth:`run` loops until :meth:`stop`.

    ``make_backend`` builds the backends of a spec, ``desired`` compiles a spec
    for a group: ``(spec, group) -> State``, or a function that also takes the keyword
    ``hold`` (the indices of the destinations whose routes it leaves out, as
    :func:`~k3snet.converge.compile_for`'s ``hold``), which the agent passes to hold the
    routes of destinations the node cannot route to; it reads the function's
    signature and never passes ``hold`` to one of two arguments (such a spec is then
    refused whole). ``elector_factory`` (optional) makes the Lease elector, started
    only once the spec has a cluster-wide backend, or returns None when this
    node is no candidate (it then never writes cluster-wide objects); without a
    factory this agent writes cluster-wide objects itself (``--no-kube``).
    ``spec_warnings`` (optional) says what is wrong with a spec and its backends
    without refusing it (``k3snet agent``: the spec's node objects no backend in use
    manages, as ``plan`` warns); each is logged once, when the spec goes in force.
    """

    _unread: tuple[int, str] | None = None
    """(reads of the spec that failed in a row with a spec in force, what the pass's
    message says of them): not refusals, see :meth:`_read_failed`."""

    _failing_since: float | None = None
    """When the first of the passes in a row whose node part failed began (None: the last
    pass converged the node)."""

    _pass_said_at: float | None = None
    """When a pass last logged its line above debug level (None: none yet): a pass that
    finds nothing to do logs at debug level only within an interval of it (see _record)."""

    _cluster_failure: Exception | None = None
    """How the cluster-wide part last failed, this agent holding the Lease (None: it did
    not): the passes leaving that part to the interval's fail with it too."""

    # (the group, its node part, its cluster-wide part): the parts kept from pass to
    # pass with their group, as what they remember is (the warnings they logged).
    _split: tuple[BackendGroup, BackendGroup | None, BackendGroup | None] | None = None
    # Per part, the CNI restarts k3snet's changes wait for, as its last pass looked
    # (replaced, never changed in place: a class attribute).
    _restarts: Mapping[str, tuple[PendingRestart, ...]] = MappingProxyType({})
    # Each file the spec imports as it settles (as the spec file: see _spec_sha), replaced,
    # never changed in place; the seconds after which one not settled is worth reading
    # again (None: all settled).
    _imported: Mapping[str, SettledFile] = MappingProxyType({})
    _imports_again_in: float | None = None
    # The spec's text as last read from the source (judged again, with the files it
    # imports, by a pass looking again at one being written: _pass).
    _text: str | None = None

    def __init__(self, source: SpecSource, make_backend: BackendFactory, desired: DesiredState,
                 options: AgentOptions, *, metrics: AgentMetrics | None = None,
                 reporter: NodeReporter | None = None,
                 elector_factory: Callable[[Callable[[bool], None]],
                                           LeaderElector | None] | None = None,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 spec_warnings: Callable[[Spec, BackendGroup], Sequence[str]] | None = None
                 ) -> None:
        self.source = source
        self.options = options
        self.metrics = metrics
        self.reporter = reporter
        self._report_writer: _ReportWriter | None = None  # while run loops (see run)
        self._make_backend = make_backend
        self._desired, self._spec_warnings = desired, spec_warnings
        # A desired-state function written before ``hold`` (two arguments) is never
        # handed one (None here): called with it, each pass a destination was
        # unreachable failed as "internal", a bug, instead of refusing the spec.
        self._desired_holding: HoldingDesiredState | None = (
            desired if _takes_hold(desired) else None)
        self._elector_factory = elector_factory
        # (and the draw of INTERVAL_JITTER's part of each interval)
        self._clock, self._monotonic, self._random = clock, monotonic, random.random
        self.elector: LeaderElector | None = None
        self._elector_started = False
        self._spec: Spec | None = None
        self._sha: str | None = None
        self._group: BackendGroup | None = None
        self._group_backends: tuple[Any, ...] | None = None
        self.generation = 0
        self._refused_sha: str | None = None
        self._refusal: str | None = None
        # (the refused spec's SHA-256, the node's change tokens read before its plan) while
        # the spec waits refused for deleting everything: see _retry_teardown.
        # (+ the spec, and the members owning objects then, by identity).
        self._teardown_wait: tuple[str, tuple[Hashable | None, ...] | None, Spec,
                                   frozenset[int]] | None = None
        # Whether a change on the node started the pass in progress (see run), whether the
        # spec source's read_again_in did (a spec file being written: see _wait_after),
        # and when the spec was last read.
        self._by_change = self._rechecking = False
        self._spec_read_at = monotonic()
        # When this agent, holding the Lease since, last converged that part (None: not
        # yet in this tenure).
        self._cluster_at: float | None = None
        # (SHA-256 of a spec text, the files it imports): the last text's, found once.
        self._imports: tuple[str, tuple[str, ...]] | None = None
        # The cluster-wide part's refusal of the spec in force (see _converge), and the
        # (spec, reason) it was said for.
        self._cluster_refusal: str | None = None
        self._cluster_refused: tuple[str, str] | None = None
        self._unreadable: str | None = None
        self._last_ok_sha: str | None = None
        self._last_ok_leader = False
        self.ready = False
        self._heartbeat = monotonic()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._stop_asked_at: float | None = None
        self._once = self._not_candidate = False
        # The elector factory's failures in a row (reading the Node's labels for
        # --lease-candidates), the last one, and when it may be called again.
        self._elector_failures = 0
        self._elector_failure: tuple[K3snetError, float] | None = None
        # "node"/"cluster" -> (the desired state, the change tokens) of the last pass
        # that found nothing to do there: see _converge_part.
        self._synced: dict[str, tuple[State, tuple[Hashable | None, ...]]] = {}
        # (the group, the node part's change tokens read before the last pass observed,
        # whether that pass applied changes there): the watch's baseline after that pass
        # (see run).
        self._observed_at: tuple[BackendGroup, tuple[Hashable | None, ...] | None,
                                 bool] | None = None
        self.passes = 0
        self.cleaned_up: bool | None = None
        """With ``cleanup_on_exit``, after :meth:`shutdown`: whether the node's objects were
        removed (False: the clean-up failed, or no spec was ever in force to say which)."""
        # When the last passes that repaired drift ended (within the repair window), and
        # the gap the last wait used: a fight with another writer slows the repairs.
        self._repairs: collections.deque[float] = collections.deque()
        self._gap = options.watch_gap
        # Passes whose node part failed, in a row: beyond FREE_REPAIRS, a change-started
        # retry waits too; of those, the ones in a row that did not converge the rest (not
        # only routes held by the node facts: see _failed), which alone slow the retries.
        self._failed_in_row = self._stuck_in_row = 0
        # Whether the pass in progress put a new spec in force, and whether it failed by
        # held routes alone.
        self._new_in_pass = self._held_pass = False
        self._holding = _Holding()
        # Why a ready agent is ready no more (None: it never was, or is again).
        self._unready: str | None = None
        if self.metrics is not None:
            self.metrics.repair_gap.set(options.watch_gap)

    # ------------------------------------------------------------ probes

    def health(self) -> tuple[bool, str]:
        """(/healthz) False when no pass has finished for ``liveness_limit`` seconds."""
        age = self._monotonic() - self._heartbeat
        limit = self.options.liveness_limit
        if age > limit:
            return False, f"stuck: no pass finished for {age:.0f} s (limit {limit:.0f} s)"
        return True, f"ok: last pass {age:.0f} s ago"

    def readiness(self) -> tuple[bool, str]:
        """(/readyz) True once a pass has converged the node (rules installed: status
        ``ok``, or ``spec-refused`` with a spec in force), until the node's part fails
        :data:`NOT_READY_AFTER` passes in a row over at least
        :attr:`AgentOptions.not_ready_for` seconds (the next pass that converges it makes
        the agent ready again). The cluster-wide part and the Lease never count: they
        are not the node's rules."""
        if self.ready:
            return True, f"ready: spec generation {self.generation} in force"
        if self._unready is not None:
            return False, self._unready
        return False, "not ready: no pass has succeeded yet"

    @property
    def spec(self) -> Spec | None:
        """The last good spec, in force (None before the first valid one)."""
        return self._spec

    @property
    def spec_sha256(self) -> str | None:
        """SHA-256 of the text of the spec in force (and of the files it imports, when it
        imports an ``ipMasqAgentConfig`` file)."""
        return self._sha

    @property
    def is_leader(self) -> bool:
        """Whether this agent writes the cluster-wide objects now."""
        return self._elector_factory is None or (self.elector is not None
                                                 and self.elector.is_leader)

    # ------------------------------------------------------------ one pass

    def run_pass(self) -> PassResult:
        """Read the spec, converge, record the outcome; never raises for a failed pass.

        Once :meth:`stop` is asked (SIGTERM), each API request of the pass in progress
        (the cluster-wide part's, made by its backends with their own timeout) waits at
        most what is left of :meth:`grace_deadline` (:func:`~k3snet.kube.requests_within`).
        A throttled answer (429, 503) is not waited inside its request
        (:func:`~k3snet.kube.throttle_waits`): the pass fails and the next one tries again.
        """
        started = self._monotonic()
        self.passes += 1
        self._new_in_pass = self._held_pass = False
        try:
            # Flannel options flannel would not read (a misspelt one, a PSK that is no
            # WireGuard key) refuse the spec everywhere else; the flannel backend refuses
            # them itself, so here they are its member refusal (the rest converges).
            with (requests_within(self.grace_deadline), throttle_waits(None),
                  flannel_options_left_to_backend()):
                result = self._pass()
        except Exception as exc:  # noqa: BLE001 - the loop outlives any one failure
            result = self._failed(exc)
        self._heartbeat = self._monotonic()
        self._record(result, self._heartbeat - started)
        return result

    def _pass(self) -> PassResult:
        candidate: tuple[Spec, str] | None = None
        refused: _RefusedError | None = None
        imports_due = (self._rechecking and self._text is not None
                       and getattr(self.source, "read_again_in", None) is None)
        if (self._spec is not None and (self._by_change or imports_due)
                and getattr(self.source, "remote", False)
                and self._monotonic() - self._spec_read_at < self.options.interval):
            # A pass a change on the node started reads no spec through the API (unless
            # the last read is an interval old): the change says nothing about the spec,
            # and on a node whose tokens move every second (kube-proxy committing) that
            # was a GET a second from every node, where the interval's passes make one
            # per interval. Nor does one looking again at a file the spec imports being
            # written: the text last read is judged again with it (a GET every 0.25 s
            # while a program held the file open for writing).
            waiting = self._teardown_wait
            if imports_due:
                assert self._text is not None
                candidate, refused = self._judge(self._text)
            elif waiting is not None and self._retry_teardown(waiting[0]):
                candidate = waiting[2], waiting[0]
        else:
            candidate, refused = self._read_spec()
        if candidate is not None:
            before = self._node_tokens()  # before its plan: a change after it is seen next
            try:
                return self._try_new(*candidate)
            except _RefusedError as exc:
                refused = self._refuse(candidate[1], exc)
                self._teardown_wait = ((candidate[1], before, candidate[0], self._owners())
                                       if exc.reason == "teardown" else None)
        if self._spec is None:
            raise refused.cause if refused is not None else SpecError(
                [Problem("", self._refusal or "no valid spec yet")], source=self.source.where)
        result = self._converge_current(changed=False)
        if self._unread is not None:
            result = attrs.evolve(result, message=f"{result.message}; {self._unread[1]}")
        if refused is not None or self._refusal is not None:
            return attrs.evolve(result, status="spec-refused",
                                message=f"{self._refusal}; {result.message}")
        return result

    def _read_spec(self) -> tuple[tuple[Spec, str] | None, _RefusedError | None]:
        """(a new spec to try and its SHA-256, or None; the refusal of what was read)."""
        candidate: tuple[Spec, str] | None = None
        refused: _RefusedError | None = None
        self._spec_read_at = self._monotonic()
        self._imports_again_in = self._text = None
        try:
            text = self.source.read()
        except SpecError as exc:  # the source holds no usable spec: refused
            self._read_again()
            refused = _RefusedError("unreadable", exc)
            if str(exc) != self._unreadable:  # said once, not every pass
                self._unreadable = str(exc)
                self._refuse(None, refused)
        except K3snetError as exc:  # not read this time: nothing refused
            self._read_failed(exc)
        else:
            self._read_again()
            if self.metrics is not None:
                self.metrics.spec_last_read.set(self._clock())
            self._unreadable = None
            self._text = text
            candidate, refused = self._judge(text)
        return candidate, refused

    def _judge(self, text: str) -> tuple[tuple[Spec, str] | None, _RefusedError | None]:
        """(a new spec to try and its SHA-256, or None; the refusal of it) in the spec's
        ``text``, with the files it imports as they have settled."""
        candidate: tuple[Spec, str] | None = None
        refused: _RefusedError | None = None
        self._imports_again_in = None
        sha = self._spec_sha(text)
        if sha is None:
            pass  # a file it imports is being written: the spec in force stays
        elif sha not in (self._sha, self._refused_sha) or self._retry_teardown(sha):
            try:
                candidate = Spec.from_yaml(text, source=self.source.where), sha
            except SpecError as exc:
                candidate, refused = None, _RefusedError("invalid", exc)
            else:
                self._say_left(candidate[0])
            if not all(file.unchanged() or file.taken_unsettled
                       for file in self._imported.values()):
                # Rewritten since it settled: loading may have read it half written. One
                # taken unsettled, at the settle limit, is taken as it is, as the log said
                # (dropped, one that never stops changing kept every new spec out).
                candidate = refused = None
                self._imports_again_in = 0.0
            elif refused is not None:
                refused = self._refuse(sha, refused)
        elif sha == self._sha:
            self._refusal = None  # the file went back to the spec in force
            self._refused_sha = self._teardown_wait = None
        return candidate, refused

    def _say_left(self, spec: Spec) -> None:
        """Log, as an error, the flannel options of a new spec the flannel backend will
        refuse (:func:`~k3snet.spec.validate.flannel_options_left_to_backend`): the node
        running no flannel backend (the ConfigMap is the leader's) says them too."""
        left = flannel_option_problems(spec)
        if left:
            _log.error("spec from %s: %s; the flannel backend leaves flannel's config as it "
                       "is until they are corrected, everything else converges (k3snet "
                       "validate refuses the spec)", self.source.where,
                       listed([str(p) for p in left], "; "), extra={"reason": "refused"})

    def _read_failed(self, exc: K3snetError) -> None:
        """A read of the spec that failed this time (an API server restarting, overloaded,
        unreachable: :class:`~k3snet.agent.SpecSource`): the spec in force stays, and
        no newer one is refused, since none was read.

        It was a refusal: a control-plane restart made every node report "new spec ...
        refused (unreadable)", ``spec-refused`` on its Node with an Event, and
        ``k3snet_agent_spec_rejected_total`` rise, an alert from every node at once for a
        spec nobody changed. Now the pass's status is the node's (``ok`` when its rules
        are in sync, so no Event), its message says the spec was not read,
        ``k3snet_agent_spec_read_errors_total`` counts it, and the log warns at the 1st,
        2nd, 4th, 8th ... failed read in a row (at debug level in between). With no spec
        in force yet the pass fails with the error.
        """
        reason = spec_read_error_reason(exc)
        if self.metrics is not None:
            self.metrics.spec_read_errors.labels(reason=reason).inc()
        if self._sha is None:
            raise exc
        count = 1 + (self._unread[0] if self._unread is not None else 0)
        # The message names the reason, not the error: the Node's annotation is written
        # when the message changes, and a restart's errors change every pass.
        self._unread = (count, f"spec not read from {self.source.where} ({reason}): keeping "
                               f"spec generation {self.generation} ({self._sha[:12]})")
        level = logging.WARNING if count & (count - 1) == 0 else logging.DEBUG
        _log.log(level, "cannot read the spec from %s (%d read(s) in a row failed; spec "
                 "generation %d stays in force, read again within %.0f s): %s",
                 self.source.where, count, self.generation, self.options.interval,
                 _one_line(exc), extra={"reason": reason})

    def _read_again(self) -> None:
        """The spec's source answered: the failed reads before it are over."""
        if self._unread is not None:
            _log.info("the spec from %s is read again after %d failed read(s)",
                      self.source.where, self._unread[0])
        self._unread = None

    def _spec_sha(self, text: str) -> str | None:
        """SHA-256 of the spec's text, and of the files it imports when it does (None: one
        of them is being written, and was not read whole before).

        An ``ipMasqAgentConfig`` file (ip-masq-agent's ConfigMap, mounted) changes in
        place while the spec's text stays the same: keyed by the text alone, its new
        contents were never read, and a spec refused for a bad one stayed refused
        after the file was fixed. The imports of a text are found once (a parse of a
        text that names one); each pass then reads those files, as loading does.

        Each is taken only once it has settled, as a spec file is
        (:class:`~k3snet.agent.FileSpecSource`): rewritten in place by an editor or
        ``cp`` (a mounted ConfigMap never is), it was read half written, its first
        CIDRs alone, and that spec went in force. Until then what was read of it before
        stays; with no spec in force yet the read waits for it, as the first one of a
        spec file does.
        """
        sha = _sha256(text)
        if self._imports is None or self._imports[0] != sha:
            self._imports = (sha, _imported_files(text, self.source.where))
        files = self._imports[1]
        self._imported = {path: self._imported.get(path) or self._settled_import(path)
                          for path in files}
        if not files:
            return sha
        digest = hashlib.sha256(sha.encode())
        whole = True
        for path in files:
            try:
                taken, again_in = self._imported[path].read(wait=self._spec is None)
            except K3snetError as exc:  # stopped during the first read's wait for it
                self._read_failed(exc)  # counted as the spec file's own wait: it raises
                return None
            if again_in is not None:
                self._imports_again_in = min(again_in, self._imports_again_in or again_in)
            if not isinstance(taken, str):
                whole = False
                continue
            digest.update(b"\0" + os.fsencode(path) + b"\0" + taken.encode())
            if (unsettled := self._imported[path].taken_unsettled_as) is not None:
                # Taken as it is at the settle limit, and read again by loading, which may
                # have read another text (cut mid-way): keyed apart, judged again once it
                # settles (else a cut list stayed in force, or the spec refused, while the
                # file settled at the text taken) and at the next limit.
                digest.update(b"\0unsettled\0" + repr(unsettled).encode())
        return digest.hexdigest() if whole else None

    def _settled_import(self, path: str) -> SettledFile:
        """File ``path`` the spec imports, read as it settles (the spec file's settle time)."""
        return SettledFile(Path(path), _file_digest, what="ipMasqAgentConfig file",
                           settle=getattr(self.source, "settle", SPEC_SETTLE),
                           settle_limit=getattr(self.source, "settle_limit", SPEC_SETTLE_LIMIT),
                           clock=self._clock, monotonic=self._monotonic,
                           sleep=self._stopping.wait, stopped=self._stopping)

    def _retry_teardown(self, sha: str) -> bool:
        """Whether to try again the spec refused for deleting everything: the node changed
        since its plan (or cannot tell), and a backend of the node that owned objects
        then owns none now.

        The refusal says to run ``k3snet destroy`` if the teardown is wanted. Not tried
        again, the spec stayed refused after that destroy, and the next pass repaired
        the node with the last good spec: every object the operator had just removed
        was back within a second. Tried again once such a backend owns nothing, it goes
        in force if its plan deletes nothing there any more. Only then: a
        try is a compile and a plan, and on a node kube-proxy changes every second
        each pass would make one for nothing (the observe is the one the pass makes
        anyway, from the backends' caches).
        """
        waiting = self._teardown_wait
        if waiting is None or waiting[0] != sha or sha != self._refused_sha:
            return False
        if waiting[1] is not None:
            moved, now = self.changes_seen(waiting[1])
            if not moved and now is not None:
                return False
        else:
            now = None
        emptied = bool(waiting[3] - self._owners())
        if not emptied:
            self._teardown_wait = (waiting[0], now, *waiting[2:])  # look again on a move
        return emptied

    def _owners(self) -> frozenset[int]:
        """The node part's members (by identity) that own objects now (read from the
        backends' caches, as the pass's own observe)."""
        node = self._parts(self._group)[0] if self._group is not None else None
        if node is None:
            return frozenset()
        try:
            return frozenset(id(m.backend) for m in node.members
                             if m.backend.observe().only(m.kinds).owned)
        except Exception:  # noqa: BLE001 - the pass's own observe meets (and reports) it
            return frozenset()

    def _node_tokens(self) -> tuple[Hashable | None, ...] | None:
        """The node part's change tokens now (None: no group yet, or none can tell)."""
        return self.changes_seen(None)[1]

    def _refuse(self, sha: str | None, refused: _RefusedError) -> _RefusedError:
        # The spec waiting refused for deleting everything, refused so again on a retry
        # (see _retry_teardown): the message follows the node, said and counted once.
        again = (sha is not None and refused.reason == "teardown"
                 and self._teardown_wait is not None and self._teardown_wait[0] == sha)
        if sha is not None:
            self._refused_sha = sha
        kept = (f"keeping spec generation {self.generation} ({self._sha[:12]})"
                if self._sha else "no spec in force yet")
        self._refusal = (f"new spec from {self.source.where} refused ({refused.reason}): "
                         f"{_one_line(refused.cause)}; {kept}")
        if again:
            return refused
        _log.error("%s", self._refusal, extra={"reason": refused.reason})
        if self.metrics is not None:
            self.metrics.spec_rejected.labels(reason=refused.reason).inc()
        return refused

    def _try_new(self, spec: Spec, sha: str) -> PassResult:
        """Converge a new spec: refused if it would tear everything down or does not compile,
        or its backends cannot be made of it."""
        try:
            group, fresh = self._group_for(spec)
        except (SpecError, ModelError, BackendOptionError, BackendNotFoundError) as exc:
            # The spec's own doing (two backends managing one kind, an unknown option or
            # backend, a value its backend refuses): it failed every pass for good, the
            # spec in force no longer converged (its drift stayed), never "spec-refused".
            # A backend that cannot be made here for now (its namespace, its module) fails
            # the pass and is tried again.
            raise _RefusedError("invalid", exc) from exc
        try:
            applied, leader = self._converge(spec, sha, group, new=True)
        except (TeardownError, SpecError) as exc:
            if fresh:
                _close(group, "the refused spec")
            reason = "teardown" if isinstance(exc, TeardownError) else "invalid"
            raise _RefusedError(reason, exc) from exc
        except BaseException:
            self._accept(spec, sha, group, fresh)  # valid: in force, even if this pass failed
            raise
        self._accept(spec, sha, group, fresh)
        return self._ok(applied, leader, changed=True)

    def _accept(self, spec: Spec, sha: str, group: BackendGroup, fresh: bool) -> None:
        from k3snet.backends.discover import each_file_read_once  # noqa: PLC0415

        # Flannel's file of $K3SNET_FLANNEL_CONF, dropped: both the look through the
        # dropped backend and the spec's node look read it, once (and say a failed read
        # once).
        with each_file_read_once():
            # Before the previous backends are closed: the cluster backends the new spec
            # no longer names are looked through as they were built (the one client there is).
            left = self._dropped_left(group) if fresh else ()
            if fresh and self._group is not None:
                _close(self._group, f"spec generation {self.generation}")
            self._spec, self._sha, self._group = spec, sha, group
            self._group_backends = _backends_of(spec)
            self.generation += 1
            self._new_in_pass = True
            self._refused_sha = self._refusal = self._teardown_wait = None
            _log.info("spec generation %d in force (sha256 %s, from %s)", self.generation,
                      sha[:12], self.source.where)
            warned = self._warn_of(spec, group)
        said = {_holder(w) for w in warned}
        for warning in left:
            # The node look already named it (flannel's file of $K3SNET_FLANNEL_CONF,
            # also the dropped backend's): once, the spec's warning's wording kept.
            if _holder(warning) not in said:
                _log.warning("spec generation %d: %s", self.generation, warning)
        if self.metrics is not None:
            self.metrics.set_spec(sha, self.generation)

    def _dropped_left(self, group: BackendGroup) -> Sequence[str]:
        """As the Lease holder, what the cluster backends of the spec in force that
        ``group`` (the new spec's) no longer has hold of k3snet's
        (:func:`~k3snet.backends.discover.cluster_left_behind`), looked through as they
        were built: an agent whose new spec names no cluster backend has no other client.
        Not the other cluster backends: the RBAC rendered for a spec grants no agent
        their reads (each would be a 403). A flannel backend of a file (each node's own,
        not the cluster's) is looked through on every node, holder or not: before, the
        holder's file alone was said. Nothing when a look fails: a warning must not fail
        the pass."""
        from k3snet.backends.discover import (  # noqa: PLC0415 - cluster specs only
            CLUSTER_BACKENDS,
            cluster_left_behind,
        )

        old, spec = self._group, self._spec
        if old is None or spec is None:
            return ()
        leader = self.is_leader
        names = {getattr(m.backend, "name", None) for m in group.members}
        dropped = [m.backend for m in old.members
                   if getattr(m.backend, "name", None) in set(CLUSTER_BACKENDS) - names
                   # A file (flannel's path): the node's own, looked through on each node.
                   and (leader or getattr(m.backend, "api_client", True) is None)]
        if not dropped:
            return ()
        try:
            return cluster_left_behind([m.backend for m in group.members],
                                       _spec_options(spec, dropped), dropped=dropped,
                                       others=False)
        except K3snetError as exc:
            _log.debug("cannot look for what a switch of backends left: %s", _one_line(exc))
            return ()

    def _warn_of(self, spec: Spec, group: BackendGroup) -> Sequence[str]:
        """Log the spec's warnings (once: the spec just went in force), and return them.
        The agent said none: with ``--backend nftables`` alone its routes were in no
        plan, every pass "in sync", and nothing told the operator that no route was
        ever made."""
        # A warning must not fail the pass (a backend's longest_step that is no number
        # failed the first pass of every spec), nor one that cannot be said hide another.
        warnings = grace_shortfalls(self.options.termination_grace, group)
        try:
            if self._spec_warnings is not None:
                warnings += self._spec_warnings(spec, group)
        except K3snetError as exc:
            _log.debug("cannot say the spec's warnings: %s", _one_line(exc))
        for warning in warnings:
            _log.warning("spec generation %d: %s", self.generation, warning)
        return warnings

    def _group_for(self, spec: Spec) -> tuple[BackendGroup, bool]:
        if self._group is not None and self._group_backends == _backends_of(spec):
            return self._group, False
        return self._make_backend(spec), True

    def _converge_current(self, *, changed: bool) -> PassResult:
        assert self._spec is not None
        assert self._group is not None
        assert self._sha is not None
        applied, leader = self._converge(self._spec, self._sha, self._group)
        return self._ok(applied, leader, changed=changed)

    def _converge(self, spec: Spec, sha: str, group: BackendGroup, *, new: bool = False
                  ) -> tuple[tuple[Change, ...], bool]:
        """Converge the node's part, then (as the Lease holder) the cluster-wide part.

        The two are independent: a failing node part (its nftables apply refused) does
        not keep the leader from writing the cluster-wide objects, which no other node
        writes while it holds the Lease. A failure of either part is raised once both
        ran (:class:`_PartsFailedError`, with what the other applied). Only a ``new``
        spec that the node part refuses (teardown, invalid) is raised at once: it is
        not put in force, so nothing of it is written anywhere.

        The cluster-wide part's own refusal (its plan deletes every object k3snet owns
        there, or it does not compile) never refuses the spec: the other nodes never
        plan that part, so they put the spec in force, and a leader refusing it would
        split the fleet for good. The spec is in force here too; the cluster-wide
        objects are left as they are, and the refusal is reported (see
        :meth:`_refuse_cluster`) until that part converges.
        """
        node, cluster = self._parts(group)
        applied: list[Change] = []
        failures: list[tuple[str, Exception]] = []
        if node is not None:
            try:
                changes, tokens = self._converge_one(spec, node, "node")
            except (_HeldRoutesError, _ConflictsLeftError,
                    _RefusedMembersError) as exc:
                # Not a refusal: what could converge did, and the spec is in force.
                applied += exc.applied
                self._observed_at = (group, exc.tokens, bool(exc.applied))
                failures.append(("node", exc))
            except (TeardownError, SpecError) as exc:
                if new:
                    raise
                failures.append(("node", exc))
            except Exception as exc:  # noqa: BLE001 - raised below, once the cluster part ran
                failures.append(("node", exc))
            else:
                applied += changes
                self._observed_at = (group, tokens, bool(changes))
        changes, leader, failure = self._converge_cluster(spec, sha, cluster, new=new)
        applied += changes
        if failure is not None:
            failures.append(("cluster", failure))
        if failures:
            raise _PartsFailedError(failures, tuple(applied), leader)
        return tuple(applied), leader

    def _parts(self, group: BackendGroup) -> tuple[BackendGroup | None, BackendGroup | None]:
        """:func:`split_cluster_wide` of ``group``, the same parts while it is in use."""
        split = self._split
        if split is None or split[0] is not group:
            split = self._split = (group, *split_cluster_wide(group))
        return split[1], split[2]

    def _converge_cluster(self, spec: Spec, sha: str, cluster: BackendGroup | None, *,
                          new: bool = False
                          ) -> tuple[Sequence[Change], bool, Exception | None]:
        """(what the cluster-wide part applied, whether this agent is its writer, its
        failure); a refusal is recorded, not returned (see :meth:`_converge`)."""
        if cluster is None:
            self._cluster_refusal = self._cluster_refused = None
            self._restarts = {**self._restarts, "cluster": ()}
            return (), False, None
        if self._stopping.is_set():
            # SIGTERM came during the node's part: the cluster-wide part's requests (a
            # list of every IPPool, writes: 10 s each when the API server does not
            # answer) would take the grace period the clean-up and the Lease's release
            # need. The next holder converges that part.
            _log.debug("stopping: the cluster-wide part is left to the next Lease holder")
            return (), self.is_leader, None
        leader = False
        try:
            leader = self._cluster_writer()
            if leader and not new and self._cluster_recent():
                # A change on the node says nothing about the cluster-wide objects: on
                # the leader's node, kube-proxy committing every second made it list
                # them (a quorum read of every IPPool) every second. The interval's
                # passes and a new spec still converge them; so does becoming leader.
                # Their failure stands until then: the pass fails with it again (said
                # "ok" in between, the Node's status flipped at every interval).
                return (), leader, self._cluster_failure
            if leader:
                self._cluster_at = self._monotonic()
            if not leader:  # the Lease holder says what the cluster-wide part awaits
                self._restarts = {**self._restarts, "cluster": ()}
            changes = self._converge_one(spec, cluster, "cluster")[0] if leader else ()
        except (TeardownError, SpecError) as exc:
            self._refuse_cluster(sha, exc)
            self._cluster_synced(exc)
            return (), leader, None
        except Exception as exc:  # noqa: BLE001 - the pass fails with it, once the node's ran
            self._cluster_synced(exc)
            self._cluster_failure = exc if leader else None
            # Foreign state blocking part of it, or a member refusing its own: the rest was
            # applied all the same.
            partial = isinstance(exc, (_ConflictsLeftError, _RefusedMembersError))
            return (getattr(exc, "applied", ()) if partial else ()), leader, exc
        self._cluster_failure = None
        self._cluster_refusal = self._cluster_refused = None
        if leader:
            self._cluster_synced(None)
        return changes, leader, None

    def _cluster_recent(self) -> bool:
        """Whether a change on the node started this pass and this agent, holding the Lease
        since, converged the cluster-wide part (or failed to) less than an interval ago.

        Since, not "leader in the last good pass": a new holder whose cluster-wide part
        failed (its IPPool list answered 503) had no good pass, and listed them again on
        every pass a change started, once a second on a node kube-proxy keeps changing,
        against an API server in trouble."""
        return (self._by_change and self._cluster_at is not None
                and self._monotonic() - self._cluster_at < self.options.interval)

    def _refuse_cluster(self, sha: str, exc: TeardownError | SpecError) -> None:
        """Leave the cluster-wide objects as they are and say why (logged and counted
        once for a spec and a reason, reported on every pass)."""
        reason = "teardown" if isinstance(exc, TeardownError) else "invalid"
        self._cluster_refusal = (
            f"the cluster-wide part of spec {sha[:12]} refused ({reason}): {_one_line(exc)}; "
            "the spec is in force on every node, the cluster-wide objects are left as "
            "they are")
        if self._cluster_refused == (sha, reason):
            return
        self._cluster_refused = (sha, reason)
        _log.error("%s", self._cluster_refusal, extra={"reason": reason})
        if self.metrics is not None:
            self.metrics.spec_rejected.labels(reason=reason).inc()

    def _cluster_synced(self, failure: Exception | None) -> None:
        """Record how the cluster-wide part ended (this agent holding the Lease)."""
        if self.metrics is None:
            return
        if failure is None:
            self.metrics.cluster_last_success.set(self._clock())
        else:
            self.metrics.cluster_failures.labels(reason=_counted(failure)).inc()

    def _converge_one(self, spec: Spec, group: BackendGroup, part: str
                      ) -> tuple[Sequence[Change], tuple[Hashable | None, ...] | None]:
        """:meth:`_converge_part`, then the part's backends' warnings logged, each once
        while it lasts (:meth:`~k3snet.backends.group.BackendGroup.log_warnings`), the
        pass failed or not. Only ``plan`` and ``apply`` printed those of a backend that
        did not log them itself (the netlink backend's forwarding switches at 0, which
        drop the pods' traffic): the agent's log never said them."""
        try:
            return self._converge_part(spec, group, part)
        finally:
            try:
                group.log_warnings()
            except Exception as exc:  # noqa: BLE001 - a warning never fails the pass
                _log.debug("cannot say the backends' warnings: %s", _one_line(exc))
            if self.metrics is not None:
                self.metrics.backend_warnings.labels(part=part).set(len(group.in_force))

    def _converge_part(self, spec: Spec, group: BackendGroup, part: str
                       ) -> tuple[Sequence[Change], tuple[Hashable | None, ...] | None]:
        """What one part applied, and its change tokens as read before it observed
        (``None``: unreadable).

        A spec refused by the node facts alone (:func:`~k3snet.spec.held_destinations`:
        a destination's device is missing, its gateway unreachable) converges without
        those destinations' routes, the routes k3snet owns in their places (destination
        and table) kept as they are; :class:`_HeldRoutesError` then fails the pass with
        what was applied. Refused whole, one unreachable gateway kept every other drift
        on the node unrepaired, and a new spec from the rest of the node. So with the
        plan's conflicts: they are left as they are, the rest applied, and
        :class:`_ConflictsLeftError` fails the pass with what was applied.
        """
        held: tuple[SpecError, frozenset[int]] | None = None
        try:
            desired = self._desired(spec, group)
        except SpecError as exc:
            indices = self._held_of(spec, exc)
            if not indices or self._desired_holding is None:  # (None finds no indices)
                raise
            desired = self._desired_holding(spec, group, hold=indices)
            held = exc, indices
        else:
            self._unroutable(spec, None)
        if held is not None and "route" not in group.capabilities:
            # No member here manages routes: nothing is held, everything converged.
            # Failed "unreachable" all the same, a node whose NAT and forward rules were
            # all in place (its routes another program's) turned not ready.
            self._unroutable(spec, held)
            held = None
        # Read before observing: what is recorded as in sync below is then at most what
        # the observe saw. Read after, it took in a change made after the observe, and
        # every later pass was "in sync" with it, observing nothing until another move.
        tokens = self._tokens(group)
        # Only when every member can tell is "no token moved" the same as "no change".
        whole = tokens is not None and all(t is not None for t in tokens)
        synced = self._synced.get(part)
        if whole and synced is not None and synced[0] is desired and tokens == synced[1]:
            # The last pass found nothing to do for this very desired state and no
            # change token moved since: this one would find nothing either (held
            # routes included: the same desired state holds the same ones).
            # A pod's restart moves no token of the ConfigMap: looked at on every pass.
            self._restarts = {**self._restarts, part: pending_restarts(group)}
            if held is not None:
                raise _HeldRoutesError(*held, spec, (), tokens)
            return (), tokens
        self._synced.pop(part, None)
        # SIGTERM ends a wait for the namespace lock: a minute of it outlasted the pod's
        # grace period (30 s then), and the agent was killed before releasing its Lease.
        # What foreign state blocks is left out of the plan (a `!` note, never forced,
        # nothing foreign named): the rest is applied, and the pass fails with the
        # conflict below. Refused whole, one foreign DROP before k3snet's jump kept
        # every other drift of the node (a route deleted, a sysctl flipped) unrepaired
        # for as long as it stood.
        done, refusals = self._converge_leaving(
            group, desired, None if held is None else _slots_of(spec, held[1]))
        self._restarts = {**self._restarts, part: done.restarts}
        applied = done.result.applied if done.result is not None else ()
        conflicts = done.plan.conflicts
        if done.plan.empty and not conflicts and not refusals and whole and tokens is not None:
            # Nothing to do: until a token moves (or the desired state does), observing
            # and planning again would find nothing either. Not with a conflict or a
            # refusal: the pass would then be "in sync" while it stands.
            self._synced[part] = (desired, tokens)
        holding = None if held is None else _HeldRoutesError(*held, spec, applied, tokens)
        failure: Exception | None = holding
        if conflicts:
            failure = _ConflictsLeftError(conflicts, applied, tokens, holding)
        if refusals:
            if isinstance(failure, _ConflictsLeftError):  # said after the conflicts
                failure.add_note(_RefusedMembersError(refusals, applied, tokens).note())
                failure.refused = True
            else:  # the held routes (if any) said after it
                failure = _RefusedMembersError(refusals, applied, tokens, holding)
        if failure is not None:
            raise failure
        return applied, tokens

    def _converge_leaving(self, group: BackendGroup, desired: State,
                          keep: Callable[[NetObject], bool] | None
                          ) -> tuple[Convergence, list[tuple[Member, PlanError]]]:
        """:func:`~k3snet.converge.converge` of the part, its conflicts left out, and the
        members whose ``expect`` refused their part (left as they are, the rest converged).

        A member refusing its part whatever is in place (before anything is read: the
        flannel backend's ``EnableNFTables`` of a file K3s reads) refused the whole part:
        the routes and NAT rules of a node whose older k3snet wrote that key stopped
        converging after an upgrade."""
        try:
            return converge(group, desired, cancelled=self._stopping.is_set, keep=keep,
                            allow_conflicts=True), []
        except PlanError:
            refusals = _refusals(group, desired)
            if not refusals:
                raise  # an apply's refusal (nothing changed): the pass fails with it
        rest, keeping = _leaving(desired, refusals, keep)
        try:
            return converge(group, rest, cancelled=self._stopping.is_set, keep=keeping,
                            allow_conflicts=True), refusals
        except Exception as exc:
            # Said after the rest's failure (an apply's, nothing changed), which the pass
            # fails and is counted by: it failed `apply` with the refusal unsaid, the
            # spec's own fault hidden for as long as the apply failed.
            names = ", ".join(dict.fromkeys(m.backend.name for m, _ in refusals))
            said = "; ".join(_one_line(error) for _, error in refusals)
            exc.add_note(f"also refused: {said}; what {names} manages is left as it is")
            raise

    def _held_of(self, spec: Spec, error: SpecError) -> frozenset[int]:
        """:func:`~k3snet.spec.held_destinations` of ``spec`` refused with ``error``, found
        again only for another spec or error (a desired-state function that keeps its
        results hands back the same error while the node facts stand still: finding
        them validates the whole spec)."""
        if self._desired_holding is None:
            return frozenset()
        kept = self._holding.found
        if kept is None or kept[0] is not spec or kept[1] is not error:
            kept = self._holding.found = (spec, error, held_destinations(spec, error))
        return kept[2]

    def _unroutable(self, spec: Spec, held: tuple[SpecError, frozenset[int]] | None) -> None:
        """Say once (until it changes) which destinations the node cannot route to while
        the node's backends manage no route (nothing to hold: the pass goes on)."""
        said = None if held is None else (spec, held[1])
        if said == self._holding.unroutable:
            return
        self._holding.unroutable = said
        if held is None:
            return
        names = _destinations(spec, held[1])
        _log.warning("the node cannot route to %d destination(s) (%s); no backend of the "
                     "node manages routes, so there is none to hold: %s", len(held[1]),
                     names, _one_line(held[0]))

    def _tokens(self, group: BackendGroup) -> tuple[Hashable | None, ...] | None:
        """The group's change tokens (``None`` for a member that cannot tell), or ``None``
        when reading them failed."""
        try:
            return group.change_token()
        except Exception:  # noqa: BLE001 - converge will meet (and report) the same failure
            return None

    def _cluster_writer(self) -> bool:
        if self._elector_factory is None:
            return True
        if self.elector is None:
            if self._not_candidate:
                return False
            failed = self._elector_failure
            if failed is not None and self._monotonic() < failed[1]:
                # Said again without a request: called by every pass, a factory failing
                # for good (the Node's labels unreadable: 403) was a GET a second from
                # every node whose kube-proxy commits every second.
                raise failed[0].with_traceback(None)
            try:
                self.elector = self._elector_factory(self._leadership_changed)
            except K3snetError as exc:
                self._elector_failures += 1
                wait = min(max(self.options.interval, self.options.watch_gap),
                           10.0 * 2.0 ** min(self._elector_failures - 1, 30))
                self._elector_failure = (exc, self._monotonic() + wait)
                raise
            self._elector_failures, self._elector_failure = 0, None
            if self.elector is None:
                self._not_candidate = True
                _log.info("not a candidate for the Lease: cluster-wide objects are left to "
                          "the candidates")
                return False
            if self.metrics is not None:
                # Read at each scrape: the holder leads no more once its renew deadline
                # passed, by time alone, and a step waiting for an unanswered request
                # (up to its timeout) told on_change only when it ended: the gauge said
                # 1 meanwhile, beside the next holder's 1.
                elector = self.elector
                self.metrics.leader.set_function(lambda: 1.0 if elector.is_leader else 0.0)
            if self._stop_asked_at is not None:
                # SIGTERM came while the factory ran (it reads the Node's labels, up to
                # its timeout): stop() halted no elector, and this one took the free
                # Lease on the agent's way out, its thread started.
                self._within_grace()
        if self._once:
            self.elector.step()  # --once: one attempt, no thread
        elif not self._elector_started:
            self.elector.step()  # the first attempt now, then every retry period
            self.elector.start()
            self._elector_started = True
        return self.elector.is_leader

    def _leadership_changed(self, leader: bool) -> None:
        # (k3snet_agent_leader reads the elector itself, at each scrape)
        if self.metrics is not None and not leader:
            # the cluster-wide part's are looked at by its writer alone
            self.metrics.backend_warnings.labels(part="cluster").set(0)
        if leader:
            self._cluster_at = None  # a new tenure: its first pass converges that part
            self._wake.set()  # write the cluster-wide objects now, not an interval later

    def _drift(self, applied: Sequence[Change], leader: bool, *, changed: bool) -> int:
        """How many of ``applied`` repaired drift; the pass converged (all but held routes)
        and is the last good one from now on."""
        drift = 0
        if not changed and self._last_ok_sha == self._sha:
            # Same spec as the last good pass: what had to change was drift, except
            # cluster-wide objects written for the first time by a new leader.
            first_lead = leader and not self._last_ok_leader
            drift = sum(1 for c in applied
                        if not (first_lead and c.kind in _CLUSTER_KINDS))
        self._last_ok_sha, self._last_ok_leader = self._sha, leader
        return drift

    def _ok(self, applied: Sequence[Change], leader: bool, *, changed: bool) -> PassResult:
        applied = tuple(applied)
        drift = self._drift(applied, leader, changed=changed)
        if applied:
            what = "repaired drift" if drift else "applied"
            # The first LOG_ITEMS changes: a first pass at 10 000 destinations applies
            # 20 000, megabytes on one line (each change is logged at debug level).
            message = f"{what}: {len(applied)} change(s): {listed(applied)}"
        else:
            message = "in sync: no changes"
        restarts = [r for part in sorted(self._restarts) for r in self._restarts[part]]
        if self.metrics is not None:
            self.metrics.restart_pending.set(len(restarts))
        if restarts:
            # Converged as planned, not yet in force: the CNI reads it when it starts.
            # Each with the command doing it where k3snet knows it, as `plan` prints it.
            message += "; " + "; ".join(
                r.render() if r.command is None else f"{r.render()}: {r.command}"
                for r in restarts)
        pending = tuple(r.workload for r in restarts)
        if self._cluster_refusal is not None:
            return PassResult("spec-refused", f"{self._cluster_refusal}; {message}", applied,
                              self._sha, leader, drift, pending)
        return PassResult("ok", message, applied, self._sha, leader, drift, pending)

    def _failed(self, exc: BaseException) -> PassResult:
        applied: tuple[Change, ...] = ()
        leader = self.is_leader
        parts: Sequence[tuple[str, BaseException]] = (("node", exc),)
        if isinstance(exc, _PartsFailedError):
            applied, leader, parts = exc.applied, exc.leader, exc.failures
        # Only the node's own failures slow the retries: the leader's cluster-wide part
        # failing (the API server down) must not delay the repair of the node's drift.
        # Nor do held routes: everything else converged, and such a pass costs what a
        # pass finding nothing costs (the same desired state, kept by its compile). A
        # device or address coming back moves the netlink token: the routes are put
        # back at the next look, not at the end of a back-off up to the interval, and
        # other drift meanwhile is repaired as soon as it is seen (it was counted as
        # such: a fight with another program still slows the repairs).
        node = [failure for part, failure in parts if part == "node"]
        held = bool(node) and all(isinstance(f, _HeldRoutesError) for f in node)
        self._held_pass = held and len(node) == len(parts)
        self._failed_in_row = self._failed_in_row + 1 if node else 0
        self._stuck_in_row = self._stuck_in_row + 1 if node and not held else 0
        # What a pass left blocked by foreign state applied is drift repaired as well (the
        # metric, the fight's count): the rest converged, as with held routes. So in the
        # cluster-wide part: a pool deleted beside a foreign pool's conflict and put back
        # on every pass was never counted, the fight with its deleter unseen.
        partial = all(isinstance(f, (_HeldRoutesError, _ConflictsLeftError,
                                     _RefusedMembersError))
                      for _, f in parts)
        drift = self._drift(applied, leader, changed=self._new_in_pass) if partial else 0
        reason = _reason(parts[0][1])
        said = []
        for part, failure in parts:
            if _reason(failure) == "internal":
                _log.error("pass failed with an unexpected error (a bug: please report it)",
                           exc_info=failure)
            what = "cluster-wide objects: " if part == "cluster" else ""
            said.append(f"{what}{_reason(failure)}: {_one_line(failure)}")
        if self.metrics is not None:
            self.metrics.failures.labels(reason=_counted(parts[0][1])).inc()
            # Either part's: a cluster-wide conflict beside the node's failed apply (the
            # pass's reason 'apply', said first) is foreign state blocking the spec too.
            if any(isinstance(failure, ConflictError) for _, failure in parts):
                self.metrics.conflicts.inc()
        message = "; ".join(said)
        if self._unread is not None:
            message = f"{message}; {self._unread[1]}"
        if self._cluster_refusal is not None:
            message = f"{message}; {self._cluster_refusal}"
        if self._refusal is not None and reason != "spec":
            message = f"{self._refusal}; {message}"
        return PassResult("failed", message, applied, self._sha, leader, drift)

    def _record(self, result: PassResult, seconds: float) -> None:
        extra = {"status": result.status, "generation": self.generation,
                 "duration_ms": round(seconds * 1000, 1), "changes": len(result.applied),
                 "leader": result.leader}
        if result.status != "failed":
            self._failed_in_row = self._stuck_in_row = 0
        self._settle_readiness(result, seconds)
        _log_each(result.applied)
        if result.drift:
            self._repairs.append(self._monotonic())
        # Forgotten here too, not only by repair_gap: a wait that never calls it
        # (--no-watch, or no member with a change token) let a node with drift at
        # every pass keep one entry per repair for the process's life.
        self._forget_old_repairs()
        now = self._heartbeat  # the end of this pass
        quiet = (result.status != "failed" and not result.applied
                 and (self._by_change or self._rechecking)
                 and self._pass_said_at is not None
                 and now - self._pass_said_at < self.options.interval)
        if not quiet:
            self._pass_said_at = now
        if quiet:
            # A pass a change on the node started (or a spec file being written) that
            # found nothing to do, within an interval of the last pass's line: at debug
            # level. On a node where kube-proxy commits every second, each said "in
            # sync" at info level, 86 000 lines a day. One line an interval stays the
            # heartbeat: there every pass is a change's (the interval, counted from the
            # end of each pass, never runs out), and "the interval's passes" alone left
            # a stuck agent looking like a healthy one (the metrics count every pass,
            # and a refusal was said when it came).
            _log.debug("%s", result.message, extra=extra)
        elif result.status == "ok":
            level = logging.WARNING if result.drift else logging.INFO
            _log.log(level, "%s", result.message, extra=extra)
        elif result.status == "spec-refused":
            _log.warning("%s", result.message, extra=extra)
        elif self._held_pass and not result.drift and self._held_said_recently(result):
            # The same routes held again, nothing else done: said as an error once an
            # interval (as the back-off said it), in between as information.
            _log.info("pass failed: %s", result.message, extra=extra)
        else:
            _log.error("pass failed: %s", result.message, extra=extra)
        if self.metrics is not None:
            self.metrics.sync_duration.observe(seconds)
            self.metrics.count_changes(result.applied)
            self.metrics.drift_repairs.inc(result.drift)
            self.metrics.ready.set(1 if self.ready else 0)
            kept = self._refusal is not None or self._cluster_refusal is not None
            self.metrics.spec_kept.set(1 if kept else 0)
            if result.status != "failed":
                self.metrics.last_success.set(self._clock())
        if self._report_writer is not None:
            self._report_writer.submit(NodeReport(result.status, result.message, self._sha,
                                                  self.generation, result.leader,
                                                  result.restart_pending))
        elif self.reporter is not None:
            self.reporter.report(NodeReport(result.status, result.message, self._sha,
                                            self.generation, result.leader,
                                            result.restart_pending))

    def _settle_readiness(self, result: PassResult, seconds: float) -> None:
        """Ready when the pass converged the node's part; not ready once that part failed
        :data:`NOT_READY_AFTER` passes in a row over :attr:`AgentOptions.not_ready_for`
        seconds; else it stays as it was (``seconds``: how long the pass took)."""
        if self._failed_in_row == 0:
            self._failing_since = None
        elif self._failing_since is None:
            self._failing_since = self._heartbeat - seconds  # when this pass began
        failing = 0.0 if self._failing_since is None else self._heartbeat - self._failing_since
        if self._failed_in_row == 0:
            # The node's part converged: "spec-refused" with the spec in force (a refused
            # newer spec, or the leader's refused cluster-wide part), or "failed" by the
            # leader's cluster-wide part alone (_failed counts only the node's failures).
            # Either leaves the node's rules installed; a leader whose IPPool writes fail
            # (503, no RBAC) was never ready, and a DaemonSet rollout stalled on its node.
            self.ready, self._unready = True, None
        elif (self._failed_in_row >= NOT_READY_AFTER
              and failing >= self.options.not_ready_for):
            # The node's part keeps failing (a conflict, a refused apply, the lock never
            # free): its rules may be wrong or missing, and a pod that stayed Ready hid it
            # from `kubectl get pods` and every "pod not ready" alert. A blip does not:
            # failures retried within seconds (a pass a second on a busy node) must
            # not flap every agent's Ready, each counting against the rollout's
            # maxUnavailable.
            self.ready = False
            self._unready = (f"not ready: the node's part failed {self._failed_in_row} passes "
                             f"in a row, for {failing:.0f} s: {result.message}")

    def _held_said_recently(self, result: PassResult) -> bool:
        """Whether this very message of held routes was logged as an error less than an
        interval ago (else it is now)."""
        now = self._monotonic()
        said = self._holding.said
        if said is not None and said[0] == result.message and now - said[1] < \
                self.options.interval:
            return True
        self._holding.said = (result.message, now)
        return False

    # ------------------------------------------------------------ the loop

    def run(self, *, once: bool = False) -> int:
        """Pass after pass every ``interval`` until :meth:`stop`; then :meth:`shutdown`.

        ``once``: one pass, exit status 0 when it succeeded, else 1.
        """
        self._once = once
        status = 0
        try:
            if once:
                status = 0 if self.run_pass().status == "ok" else 1
            elif self.reporter is not None and self._report_writer is None:
                self._report_writer = _ReportWriter(self.reporter)
            while not once and not self._stopping.is_set():
                started = self._monotonic()
                self._observed_at = None
                result = self.run_pass()
                # A pass that only held routes converged the rest: its baseline holds too
                # (without it, a change made while it ran waited for the interval).
                before, applied = (self._baseline()
                                   if result.status != "failed" or self._held_pass
                                   else (None, False))
                self._by_change = self._wait_after(started, before, applied=applied)
                self._wake.clear()
        finally:
            self.shutdown()
        # A clean-up asked for and not done must not exit 0: whatever ran the agent
        # to remove k3snet's objects (an uninstall hook) would take them for gone.
        return 1 if self.cleaned_up is False else status

    def _baseline(self) -> tuple[tuple[Hashable | None, ...] | None, bool]:
        """The node's change tokens as the last pass read them before it observed, if it
        converged the group now in force (else ``None``), and whether it applied changes.

        A change made while the pass ran, after its observe, must start the next pass,
        not hide in a baseline read after the pass. Read by the pass itself, this also
        holds for an agent's first pass and for a new spec's new group, which no read
        before the pass could cover.
        """
        if self._observed_at is None or self._observed_at[0] is not self._group:
            return None, False
        _, tokens, applied = self._observed_at
        return tokens, applied

    def changes_seen(self, token: tuple[Hashable | None, ...] | None
                     ) -> tuple[bool, tuple[Hashable | None, ...] | None]:
        """(whether the node backends' change tokens moved since ``token``, the tokens now).

        ``None`` when there is nothing to watch (no group yet, or no member can
        tell), or reading failed (the next interval's pass reports the failure).
        """
        if self._group is None:
            return False, None
        node, _ = split_cluster_wide(self._group)
        if node is None:
            return False, None
        try:
            now = node.change_token()
        except Exception as exc:  # noqa: BLE001 - the interval's pass reports it properly
            _log.debug("cannot read the change tokens: %s", _one_line(exc))
            return False, None
        if all(t is None for t in now):
            return False, None
        return token is not None and now != token, now

    def _wait_after(self, started: float,
                    before: tuple[Hashable | None, ...] | None = None, *,
                    applied: bool = False) -> bool:
        """Wait for the interval (from the end of the pass, as before; shortened by up to
        :data:`INTERVAL_JITTER` of it at random), a wake-up, or (watching) a change on the
        node.

        ``before``: the tokens a pass that succeeded read before it observed
        (:meth:`_baseline`). When they moved while it ran, the next pass starts after
        the watch gap: a foreign change made after the pass observed would otherwise
        be in the baseline read now and wait for the interval. The pass's own apply
        moves them too; the pass after it then finds nothing to do (and confirms what
        was applied) unless something else changed. ``applied``: that pass applied
        changes on the node, so the next pass comes after the watch gap even when the
        tokens read now equal ``before``: a token that is the content itself (rather
        than a generation) comes back to ``before`` when another program undoes the
        pass's changes at once, and that undoing must not wait for the interval.

        The source's ``read_again_in`` (a spec file being written, see
        :class:`~k3snet.agent.FileSpecSource`), when shorter, ends the wait instead of the
        interval (``_rechecking``).

        Returns whether a change on the node alone ended the wait (not the interval,
        nor a wake-up).
        """
        # Shortened at random (INTERVAL_JITTER): passes that ended together part again.
        interval = self.options.interval * (1.0 - INTERVAL_JITTER * self._random())
        # A spec file being written (FileSpecSource): the spec in force stayed, and the
        # file is read again as soon as it may have settled, not an interval later.
        recheck = min((again for again in (getattr(self.source, "read_again_in", None),
                                           self._imports_again_in) if again is not None),
                      default=None)
        self._rechecking = recheck is not None and recheck < interval
        if recheck is not None and self._rechecking:
            interval = recheck
        deadline = self._monotonic() + interval
        watch = self.options.watch
        _, token = self.changes_seen(None) if watch else (False, None)
        if watch is None or token is None:
            self._wait_until(deadline)
            return False
        earliest = started + self.repair_gap()
        if before is not None and (token != before or applied):
            _log.debug("the node changed during the pass: passing again")
            self._rechecking = False
            return not self._wait_gap(earliest)
        while True:
            left = deadline - self._monotonic()
            if left <= 0:
                return False
            if self._wake.wait(min(watch, left)):
                self._rechecking = False
                return False
            moved, token = self.changes_seen(token)
            if token is None:
                self._wait_until(deadline)
                return False
            if moved:
                _log.debug("the node changed: passing now, before the interval")
                self._rechecking = False
                return not self._wait_gap(earliest)

    def _wait_until(self, deadline: float) -> None:
        """Wait until ``deadline`` or a wake-up (which no re-check of the spec started)."""
        if self._wake.wait(max(0.0, deadline - self._monotonic())):
            self._rechecking = False

    def _wait_gap(self, earliest: float) -> bool:
        """Wait until ``earliest``; whether a wake-up (becoming leader, stop) came first
        or during the pass (the pass it starts is then no change's alone)."""
        gap = earliest - self._monotonic()
        return self._wake.wait(gap) if gap > 0 else self._wake.is_set()

    def repair_gap(self) -> float:
        """Seconds from the start of a pass to the start of a pass a change starts.

        ``watch_gap``; doubled for each drift repair beyond :data:`FREE_REPAIRS`
        within the repair window, up to the interval: when another program undoes
        k3snet's changes as soon as they are made, the two must not trade them back
        and forth once a second (a warning says so once, and when it stops). Passes
        failing in a row back off the same way (beyond :data:`FREE_REPAIRS` of them,
        until one does not fail): on a node whose tokens keep moving (kube-proxy
        committing), a pass that fails for good was otherwise tried again, with a
        whole observe and plan and an error, once every ``watch_gap``. A pass that
        only held routes (the node cannot route to some destinations) converged the
        rest and does not back off.
        """
        options = self.options
        self._forget_old_repairs()
        drift = self._doubled(len(self._repairs))
        if drift > options.watch_gap and self._gap <= options.watch_gap:
            _log.warning("drift repaired %d times within %.0f s: another program keeps undoing "
                         "what k3snet writes; a change now starts a pass after %.0f s, doubling "
                         "with each repair up to the interval (%.0f s)",
                         len(self._repairs), options.repair_window, drift, options.interval)
        elif drift <= options.watch_gap < self._gap:
            _log.info("no drift repaired for %.0f s: a change starts a pass within %.0f s again",
                      options.repair_window, options.watch_gap)
        self._gap = drift
        gap = drift
        failed = self._doubled(self._stuck_in_row)
        if failed > gap:
            if self._stuck_in_row == FREE_REPAIRS + 1:
                _log.warning("%d passes failed in a row: a change now starts the next try "
                             "after %.0f s, doubling with each failure up to the interval "
                             "(%.0f s), until a pass succeeds",
                             self._stuck_in_row, failed, options.interval)
            gap = failed
        if self.metrics is not None:
            self.metrics.repair_gap.set(gap)
        return gap

    def _forget_old_repairs(self) -> None:
        """Drop the repairs older than the repair window."""
        now = self._monotonic()
        while self._repairs and now - self._repairs[0] > self.options.repair_window:
            self._repairs.popleft()

    def _doubled(self, count: int) -> float:
        """``watch_gap``, doubled for each of ``count`` beyond :data:`FREE_REPAIRS`, up to
        the interval."""
        options = self.options
        extra = count - FREE_REPAIRS
        return options.watch_gap if extra <= 0 else min(
            options.watch_gap * 2.0 ** min(extra, 32), max(options.interval, options.watch_gap))

    def stop(self) -> None:
        """Ask the loop to end after the pass in progress (what SIGTERM does).

        From now on the grace period counts (:meth:`grace_deadline`): the node report's
        requests end within it, and the Lease elector takes no further step.
        """
        if self._stop_asked_at is None:
            self._stop_asked_at = self._monotonic()
        self._stopping.set()
        self._wake.set()
        # A first read waiting for a spec file being written to settle (FileSpecSource).
        stop_waiting = getattr(self.source, "stop_waiting", None)
        if callable(stop_waiting):
            stop_waiting()
        self._within_grace()

    def _within_grace(self) -> None:
        """After :meth:`stop`: the report's requests end by the grace deadline, and the
        elector takes no further step (each may still be running: SIGTERM's thread)."""
        deadline = self.grace_deadline()
        if self.reporter is not None and deadline is not None:
            self.reporter.finish_by(deadline)
        elector = self.elector
        if elector is not None:
            elector.halt(deadline)

    def wake(self) -> None:
        """Start the next pass now instead of after the interval."""
        self._wake.set()

    def shutdown(self) -> None:
        """Clean up if asked, release the Lease, write the last report, close the backends
        (idempotent).

        The node's clean-up comes first: it needs no API server, and after :meth:`stop`
        (SIGTERM) the kubelet kills the agent :attr:`AgentOptions.termination_grace`
        seconds later. The Lease's release and the last report share what is left of
        that less :data:`CLEANUP_MARGIN` (:meth:`grace_deadline`): each request's
        timeout is cut to it. With an API server that accepts connections and never
        answers, the elector's step in flight (~10 s), the release (20 s) and the report
        (10 s) came first and outlasted the grace period: the agent was killed with
        k3snet's rules still on a node being drained.
        """
        deadline = self.grace_deadline()
        self._within_grace()  # (again: stop() may still be setting it, in its own thread)
        elector, self.elector = self.elector, None
        writer, self._report_writer = self._report_writer, None
        if writer is not None:
            writer.finish()  # the last result, if pending, meanwhile (stop() set its deadline)
        try:
            if self._group is not None:
                try:
                    if self.options.cleanup_on_exit:
                        self.cleaned_up = self._clean_up(self._group, deadline)
                finally:
                    _close(self._group, "the spec in force")
                    self._group = None
            elif self.options.cleanup_on_exit and self.cleaned_up is None:
                self.cleaned_up = False
                _log.error("clean-up on exit: nothing removed: no spec was ever in force to "
                           "say which backends hold k3snet's objects (k3snet destroy removes "
                           "them)")
        finally:
            if elector is not None:
                elector.stop(release=True, deadline=deadline)
                self._elector_started = False
            if writer is not None:
                writer.join(getattr(self.reporter, "timeout", DEFAULT_TIMEOUT)
                            if deadline is None else deadline.left())

    def grace_deadline(self) -> Deadline | None:
        """When the shutdown's API requests must be done: the grace period less
        :data:`CLEANUP_MARGIN` from :meth:`stop` (``None`` before any stop was asked)."""
        if self._stop_asked_at is None:
            return None
        return Deadline(self._stop_asked_at + self.options.termination_grace - CLEANUP_MARGIN,
                        self._monotonic)

    def _clean_up(self, group: BackendGroup, deadline: Deadline | None) -> bool:
        """Remove what k3snet owns on the node; whether that succeeded."""
        node, _ = split_cluster_wide(group)
        if node is None:
            return True
        # After SIGTERM, the lock is waited for only within the pod's grace period (the
        # pass in progress took its share of it).
        budget = DEFAULT_LOCK_TIMEOUT if deadline is None else deadline.left()
        try:
            done = destroy(node, lock_timeout=min(budget, DEFAULT_LOCK_TIMEOUT))
        except K3snetError as exc:
            _log.error("clean-up on exit failed: %s", _one_line(exc))
            return False
        removed = len(done.result.applied) if done.result is not None else 0
        _log.warning("clean-up on exit: removed %d object(s) k3snet owned on this node "
                     "(cluster-wide objects stay)", removed)
        return True
