"""One step of the control loop: observe, plan, apply.

:func:`converge` is what ``k3snet apply`` and the agent run; embedding code can
call it too. It refuses a plan with conflicts (a foreign object where ours must
go) unless told otherwise: a half-fulfilled spec should never pass silently.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence

import attrs

from k3snet.backends.base import ApplyResult, Backend, PendingRestart
from k3snet.backends.group import BackendGroup
from k3snet.backends.kit import committing, held_after_commit
from k3snet.backends.lock import DEFAULT_LOCK_TIMEOUT, namespace_lock, namespaces_of
from k3snet.errors import (
    BackendOptionError,
    CheckError,
    ConflictError,
    K3snetError,
    StalePlanError,
    TeardownError,
)
from k3snet.model import NetObject
from k3snet.model.drift import Drift
from k3snet.model.route import K3SNET_ROUTE_PROTOCOL, Route
from k3snet.model.state import KINDS, State, ensure_state
from k3snet.planner import Plan, plan
from k3snet.spec import NodeFacts, Spec
from k3snet.spec import compile as compile_spec

__all__ = ["NODE_KINDS", "Convergence", "apply_plan", "compile_for", "converge", "destroy",
           "destroy_each", "disruptive_allowed", "facts_namespace", "pending_restarts",
           "reads_node_facts", "refuse_teardown", "removed_before", "restarts_needed",
           "route_protocol", "state_digest", "teardown_emptied", "unmanaged",
           "with_route_protocol"]

log = logging.getLogger(__name__)


def compile_for(backend: Backend, spec: Spec, facts: NodeFacts | None = None, *,
                hold: Iterable[int] = ()) -> State:
    """The desired state of ``spec`` for the kinds ``backend`` manages, without observing.

    :func:`k3snet.compile` does the work; this only reads plain attributes of the
    backend: its ``capabilities``, the ``target`` of each flannel and cilium
    backend (the config it manages, passed to compile as a value), and the route
    ``protocol`` of the one managing routes (:func:`route_protocol`), which the
    routes are given. ``hold``: destinations whose routes are left out (see
    :func:`k3snet.spec.held_destinations`).
    """
    members = backend.members if isinstance(backend, BackendGroup) else None
    backends = [m.backend for m in members] if members is not None else [backend]
    targets = [target for member in backends if "flannel" in member.capabilities
               and (target := getattr(member, "target", None)) is not None]
    cilium = [target for member in backends if "cilium" in member.capabilities
              and (target := getattr(member, "target", None)) is not None]
    state = compile_spec(spec, facts, flannel_targets=targets, cilium_targets=cilium,
                         kinds=backend.capabilities, hold=hold)
    # The backend owns the routes of its protocol only: compiled with 211, every one
    # was refused (and one in place replaced by a copy of protocol 211).
    return with_route_protocol(state, route_protocol(backend))


NODE_KINDS = frozenset({"route", "sysctl", "forward", "nat"})
"""The kinds one node holds, which :func:`unmanaged` counts."""


def unmanaged(backend: Backend, spec: Spec) -> dict[str, int]:
    """How many of the spec's node objects (routes, sysctls, forward and NAT rules) are
    of a kind ``backend`` does not manage, by kind: objects in no plan through it.

    :func:`compile_for` leaves them out (a backend takes its part), so ``k3snet plan
    --backend netlink`` said nothing of the spec's masquerade; ``plan`` and ``apply``
    warn of what this finds. Empty, and nothing compiled, when the backend manages
    every node kind.
    """
    missing = NODE_KINDS - backend.capabilities
    if not missing:
        return {}
    counts: dict[str, int] = {}
    for obj in compile_spec(spec, kinds=missing).owned:
        counts[obj.kind] = counts.get(obj.kind, 0) + 1
    return dict(sorted(counts.items()))


def with_route_protocol(state: State, protocol: int) -> State:
    """``state`` with its routes marked with route ``protocol`` (the same state for 211)."""
    if protocol == K3SNET_ROUTE_PROTOCOL:
        return state
    return State(owned=[attrs.evolve(o, protocol=protocol) if type(o) is Route else o
                        for o in state.owned], foreign=state.foreign)


def route_protocol(backend: Backend) -> int:
    """The route protocol that marks k3snet's routes through ``backend`` (or a group).

    That of the member managing routes when it has an integer ``protocol`` (the
    netlink backend's option, ``backends: {netlink: {protocol: N}}``), else
    :data:`~k3snet.model.route.K3SNET_ROUTE_PROTOCOL` (211).
    """
    members = ([(m.backend, m.kinds) for m in backend.members]
               if isinstance(backend, BackendGroup) else [(backend, backend.capabilities)])
    for member, kinds in members:
        protocol = getattr(member, "protocol", None)
        if "route" in kinds and isinstance(protocol, int) and not isinstance(protocol, bool):
            return protocol
    return K3SNET_ROUTE_PROTOCOL


def reads_node_facts(backend: Backend) -> bool:
    """Whether a spec is checked against this node's facts for ``backend``.

    Facts describe the local node (its interfaces and routes): they are read only
    when ``backend`` acts on it (in a network namespace, :func:`namespaces_of`) and
    manages a node kind, never for remote or cloud backends or the memory backend.
    ``k3snet apply``, the agent and the Ansible module all decide so here.
    """
    return bool(namespaces_of(backend)) and bool(backend.capabilities & set(KINDS))


def facts_namespace(backend: Backend) -> str | None:
    """The network namespace whose facts check a spec for ``backend`` (``None``: the
    caller's own): the one its backends act in (:func:`namespaces_of`), wherever that
    was set (``--netns``, a ``backends:`` or ``--backend-opt`` ``netns``, the Ansible
    module's ``backend_options``). Facts read elsewhere refused the node's gateway as
    outside every prefix of another namespace, or let a missing device through.

    Raises :class:`~k3snet.errors.BackendOptionError` when the backends act in several
    namespaces: there is no one node to check the spec against.
    """
    spaces = namespaces_of(backend)
    if len(spaces) > 1:
        names = ", ".join("the caller's own" if n is None else repr(n) for n in spaces)
        raise BackendOptionError(
            f"the backends act in several network namespaces ({names}): the node facts "
            "that check the spec come from one; give every backend the same netns, or "
            "turn the facts off (--no-facts, the Ansible module's facts: false)")
    return spaces[0] if spaces else None


def _restarts(restarts: Iterable[PendingRestart]) -> tuple[PendingRestart, ...]:
    return tuple(restarts)


@attrs.frozen
class Convergence:
    """What one converge step saw and did (``result`` is ``None`` for a dry run or no-op).

    ``restarts``: the CNI pods that must still restart for k3snet's config changes to
    take effect, read after the step (:func:`pending_restarts`); until they are, the
    node is not converged in fact, whatever the plan says.
    """

    observed: State
    plan: Plan
    result: ApplyResult | None
    restarts: tuple[PendingRestart, ...] = attrs.field(default=(), converter=_restarts)


def _members(backend: Backend) -> list[Backend]:
    members = backend.members if isinstance(backend, BackendGroup) else None
    return [m.backend for m in members] if members is not None else [backend]


def pending_restarts(backend: Backend) -> tuple[PendingRestart, ...]:
    """The restarts k3snet's CNI config changes through ``backend`` (or a group) still
    wait for: each member's optional ``pending_restarts()`` (the cilium and flannel
    backends: the DaemonSet pods started before k3snet last changed the ConfigMap
    they read at start). k3snet never restarts them itself. A member that cannot tell
    (the API refused the read) gives one entry saying so, rather than failing an apply
    already made."""
    found: list[PendingRestart] = []
    for member in _members(backend):
        ask = getattr(member, "pending_restarts", None)
        if not callable(ask):
            continue
        try:
            found += ask()
        except K3snetError as exc:
            log.warning("%s: cannot tell whether a restart is pending: %s", member.name, exc)
            found.append(PendingRestart(f"the pods reading {member.name}'s config",
                                        f"cannot tell: {exc}"))
    return tuple(found)


def restarts_needed(backend: Backend, p: Plan) -> tuple[str, ...]:
    """What must restart for ``p``'s changes to take effect once applied, each once, in
    order: every member's optional ``restart_needed(change)`` (text, a tuple of texts
    for several, or ``None``: nothing; the
    cilium backend names Cilium's DaemonSet for a ``cilium-config`` key, not for the
    ip-masq-agent file, which Cilium reads again when it changes)."""
    needed: list[str] = []
    for member in _members(backend):
        ask = getattr(member, "restart_needed", None)
        if not callable(ask):
            continue
        kinds = member.capabilities
        for change in p.changes:
            if change.kind in kinds:
                what = ask(change)
                for each in (what,) if isinstance(what, str) else what or ():
                    if isinstance(each, str) and each not in needed:
                        needed.append(each)
    return tuple(needed)


def converge(
    backend: Backend,
    desired: State,
    *,
    dry_run: bool = False,
    check: bool = False,
    allow_conflicts: bool = False,
    allow_teardown: bool = False,
    allow_disruptive: bool = False,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    cancelled: Callable[[], bool] | None = None,
    keep: Callable[[NetObject], bool] | None = None,
) -> Convergence:
    """Bring ``backend``'s owned state to ``desired`` (its kinds only).

    Holds the lock of every network namespace the backend acts in (see
    :mod:`k3snet.backends.lock`) from observe to the end of apply, so two k3snet
    processes never apply one plan twice. Raises
    :class:`~k3snet.errors.ConflictError` when foreign state blocks part of the
    spec (unless ``allow_conflicts``), :class:`~k3snet.errors.TeardownError` when
    the plan would delete everything k3snet owns through one backend (unless
    ``allow_teardown``; :func:`destroy` is the way to remove everything),
    :class:`~k3snet.errors.ApplyError` (nothing changed, or rolled back) or a
    :class:`~k3snet.errors.PlanError` (nothing changed) when the apply fails.
    ``dry_run`` returns the plan without applying it; with ``check`` too, the
    backends' own check runs on it (an nftables batch validated by the kernel,
    ``iptables-restore --test`` ...) and :class:`~k3snet.errors.CheckError`
    lists its problems. ``allow_disruptive`` lets every backend that declares that
    option (a CNI backend) make the changes its ``disruptive(change)`` names, for
    this call (as ``cni.allowDisruptive: true`` in the spec and ``--allow-disruptive``
    on the CLI do); they are refused otherwise. ``cancelled``: ends a wait for the
    namespace lock when it turns true (:func:`~k3snet.backends.lock.namespace_lock`).
    ``keep``: the owned objects observed that it accepts are wanted as they are, unless
    ``desired`` has an object of the same key (the plan neither deletes nor replaces
    them: the agent holds the routes of a destination it cannot route to).
    """
    wanted = ensure_state(desired, "desired").only(backend.capabilities)
    _expect(backend, wanted)
    with namespace_lock(namespaces_of(backend), timeout=lock_timeout, cancelled=cancelled):
        observed = backend.observe()
        if keep is not None:
            wanted = _keeping(wanted, observed.only(backend.capabilities), keep)
        p = plan(observed, wanted)
        return _carry_out(backend, observed, p, dry_run=dry_run, check=check,
                          allow_conflicts=allow_conflicts, allow_teardown=allow_teardown,
                          allow_disruptive=allow_disruptive)


def _expect(backend: Backend, wanted: State) -> None:
    """Give ``backend`` the hint of what is wanted before it observes, if it takes it
    (``expect``): it changes no result, except a backend's refusal of a wanted state
    it never writes, whatever is in place (the flannel backend's ``PlanError``;
    docs/custom-backend.md)."""
    expect = getattr(backend, "expect", None)
    if callable(expect):
        expect(wanted)


def _keeping(wanted: State, observed: State, keep: Callable[[NetObject], bool]) -> State:
    """``wanted`` and the owned objects of ``observed`` that ``keep`` accepts (drift
    findings never: they are repaired, and keys ``wanted`` has already excepted)."""
    keys = {o.key for o in wanted.owned}
    kept = [o for o in observed.owned
            if not isinstance(o, Drift) and o.key not in keys and keep(o)]
    if not kept:
        return wanted
    return State(owned=[*wanted.owned, *kept], foreign=wanted.foreign)


def apply_plan(
    backend: Backend,
    p: Plan,
    *,
    desired: State | None = None,
    dry_run: bool = False,
    check: bool = False,
    allow_conflicts: bool = False,
    allow_teardown: bool = False,
    allow_disruptive: bool = False,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    made_from: str | None = None,
) -> Convergence:
    """Apply exactly the plan ``p`` (made earlier, e.g. saved by ``k3snet plan --out``).

    With ``desired`` (the state the plan was made for), the plan is refused with
    :class:`~k3snet.errors.StalePlanError` unless planning again from what the
    backend observes now gives exactly ``p``: a plan is only right for the state
    it was computed from. A change on the node that does not alter the plan (an
    unrelated route, a counter) does not make it stale. ``made_from``: the
    :func:`state_digest` of what the backend observed when ``p`` was made (a plan
    file's ``observed``); when the node still matches it, the refusal says that ``p``
    does not follow from ``desired`` (an edited file) rather than that the node
    changed. The same refusals as :func:`converge` apply.
    """
    if desired is not None:
        # As converge: a desired config a backend refuses whatever is in place (flannel's
        # SubnetLen) is refused here too, not put in force by a plan made before the refusal.
        _expect(backend, desired.only(backend.capabilities))
    with namespace_lock(namespaces_of(backend), timeout=lock_timeout):
        observed = backend.observe()
        if desired is not None:
            now = plan(observed, desired.only(backend.capabilities))
            if now != p and made_from == state_digest(observed.only(backend.capabilities)):
                raise StalePlanError(
                    "the plan does not follow from its own desired state on this node, which "
                    "has not changed since it was planned: the plan file was edited, or made "
                    f"by another k3snet version (planned again now, it would be "
                    f"{len(now.changes)} change(s) and {len(now.notes)} note(s) instead of "
                    f"{len(p.changes)} and {len(p.notes)}); nothing was applied: plan again")
            if now != p and now.empty and not now.conflicts and p.changes:
                # Nothing left to do: "plan again" would find nothing. Applied already (a
                # retry of a run whose end was lost, two applies of one plan at once, the
                # agent), unless foreign state now provides what the plan would make (a
                # route an admin or the CNI added): then nobody applied it.
                provided = set(now.met) - set(p.met)
                why = (f"foreign state now provides what the plan would make ({len(provided)} "
                       "object(s) met that were not)" if provided else
                       "it is already as the plan makes it (applied already, e.g. by an "
                       "earlier apply of this plan, another k3snet run or the agent)")
                raise StalePlanError(
                    f"the node changed since this plan was made: {why}; planned again now, "
                    f"it would be 0 change(s) and {len(now.notes)} note(s) instead of "
                    f"{len(p.changes)} and {len(p.notes)}; nothing was applied, and nothing "
                    "is left to apply")
            if now != p:
                raise StalePlanError(
                    "the node changed since this plan was made: planned again now, it "
                    f"would be {len(now.changes)} change(s) and {len(now.notes)} note(s) "
                    f"instead of {len(p.changes)} and {len(p.notes)}; nothing was applied: "
                    "plan again")
        return _carry_out(backend, observed, p, dry_run=dry_run, check=check,
                          allow_conflicts=allow_conflicts, allow_teardown=allow_teardown,
                          allow_disruptive=allow_disruptive)


def state_digest(state: State) -> str:
    """SHA-256 of a state's JSON form: equal states, equal digests."""
    return hashlib.sha256(state.to_json().encode()).hexdigest()


@contextlib.contextmanager
def disruptive_allowed(backend: Backend, allowed: bool = True) -> Iterator[None]:
    """Within the block, every member of ``backend`` with an ``allow_disruptive``
    attribute allows disruptive changes (when ``allowed``); restored afterwards."""
    backends = _members(backend)
    saved = [(b, b.allow_disruptive) for b in backends if hasattr(b, "allow_disruptive")]
    try:
        if allowed:
            for member, _ in saved:
                member.allow_disruptive = True
        yield
    finally:
        for member, value in saved:
            member.allow_disruptive = value


def _carry_out(backend: Backend, observed: State, p: Plan, *, dry_run: bool,
               allow_conflicts: bool, allow_teardown: bool, check: bool = False,
               allow_disruptive: bool = False) -> Convergence:
    with disruptive_allowed(backend, allow_disruptive):
        done = _carry_out_allowed(backend, observed, p, dry_run=dry_run, check=check,
                                  allow_conflicts=allow_conflicts,
                                  allow_teardown=allow_teardown)
    restarts = pending_restarts(backend)
    return attrs.evolve(done, restarts=restarts) if restarts else done


def _carry_out_allowed(backend: Backend, observed: State, p: Plan, *, dry_run: bool,
                       allow_conflicts: bool, allow_teardown: bool, check: bool
                       ) -> Convergence:
    if p.conflicts and not allow_conflicts:
        lines = [n.render().replace("\n", " ") for n in p.conflicts]
        raise ConflictError("foreign state conflicts with the spec; nothing was applied:\n  "
                            + "\n  ".join(lines))
    if not allow_teardown:
        refuse_teardown(backend, observed, p)
    if dry_run:
        if check and p.changes:
            problems = backend.check(p)
            if problems:
                raise CheckError("the backends' check found problems; nothing was changed:",
                                 problems)
        return Convergence(observed, p, None)
    if p.empty:
        return Convergence(observed, p, None)
    # No dry run first: every backend's apply is all or nothing (the conformance suite
    # injects failures at every position to prove it), so a separate check would only
    # do the kernel's work twice (it cost +60-110 % of an nftables or iptables apply).
    log.info("%s: applying %d change(s)", backend.name, len(p.changes))
    try:
        result = backend.apply(p)
    except Exception as exc:
        if p.conflicts:
            # Applied with its conflicts left out (allow_conflicts): the failure hid them.
            first = p.conflicts[0].render().replace("\n", " ")
            more = f" (and {len(p.conflicts) - 1} more)" if len(p.conflicts) > 1 else ""
            exc.add_note(f"foreign state also conflicts with the spec, left out of this "
                         f"apply: {first}{more}")
        raise
    log.info("%s: applied %d change(s) in %d operation(s)", backend.name, len(result.applied),
             result.operations)
    return Convergence(observed, p, result)


def destroy(backend: Backend, *, dry_run: bool = False, allow_disruptive: bool = False,
            lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> Convergence:
    """Remove everything k3snet owns through ``backend``, and nothing else.

    Owned routes, rules, chains and tables go; owned sysctls get their recorded
    previous values back; foreign objects are not touched (the plan only ever
    names owned ones). ``dry_run`` returns the plan without applying it.
    ``allow_disruptive`` lets the backends make the removals their
    ``disruptive(change)`` names (a CNI config k3snet wrote), as for :func:`converge`.
    """
    return converge(backend, State(), dry_run=dry_run, allow_conflicts=True,
                    allow_teardown=True, allow_disruptive=allow_disruptive,
                    lock_timeout=lock_timeout)


def destroy_each(backends: Sequence[Backend], *, dry_run: bool = False, check: bool = False,
                 allow_disruptive: bool = False,
                 lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
                 confirmed: Plan | None = None) -> Convergence:
    """:func:`destroy` through each of ``backends`` in turn, as one :class:`Convergence`.

    For the groups of a :class:`~k3snet.backends.discover.Discovery` (backends that
    manage the same kind cannot share a group). The plan holds every backend's
    changes in turn, the result every applied change (``None`` when no backend
    applied any), the observed state every backend's owned objects (the first of a
    key two backends hold: a view, never planned from). ``dry_run`` with ``check``
    runs each backend's check on its own part and raises one
    :class:`~k3snet.errors.CheckError` of every problem. Each backend's removal is all
    or nothing; one that fails raises its error, the earlier backends' removals
    staying done (the error's note and a log line name them, and
    :func:`removed_before` of the error gives them). The lock of every
    namespace the backends act in is taken once, for the whole removal: no other k3snet
    process acts between two backends' parts (an apply seeing half a destroy).

    ``confirmed``: the plan a user was shown and approved (an earlier dry run, made in
    another hold of the lock). Unless removing everything now is exactly its changes,
    :class:`~k3snet.errors.StalePlanError` is raised and nothing is removed: read
    again, the removal took what had appeared meanwhile too (an apply, the agent),
    objects nobody had approved removing.
    """
    namespaces: list[str | None] = []
    for backend in backends:
        namespaces += [n for n in namespaces_of(backend) if n not in namespaces]
    with namespace_lock(namespaces, timeout=lock_timeout):
        if confirmed is not None and not dry_run:
            _refuse_unconfirmed(backends, confirmed, allow_disruptive=allow_disruptive,
                                lock_timeout=lock_timeout)
        return _destroy_each_locked(backends, dry_run=dry_run, check=check,
                                    allow_disruptive=allow_disruptive,
                                    lock_timeout=lock_timeout)


_REMOVED_BEFORE = "k3snet_removed_before"


def removed_before(exc: BaseException) -> tuple[str, ...]:
    """What :func:`destroy_each` had removed through the backends before the one whose
    failure (or signal) ``exc`` is, each backend's result summary; that stays removed.
    Empty for any other exception, and when nothing was removed before it: then the
    node is as it was (each backend's removal is all or nothing)."""
    return tuple(vars(exc).get(_REMOVED_BEFORE, ()))


def _refuse_unconfirmed(backends: Sequence[Backend], confirmed: Plan, *,
                        allow_disruptive: bool, lock_timeout: float) -> None:
    """StalePlanError unless removing everything through ``backends`` now is
    ``confirmed``'s changes (the caller holds the namespaces' lock until the removal)."""
    now = _destroy_each_locked(backends, dry_run=True, check=False,
                               allow_disruptive=allow_disruptive, lock_timeout=lock_timeout)
    if set(now.plan.changes) == set(confirmed.changes):
        return
    listed = set(confirmed.changes)
    unlisted = [c for c in now.plan.changes if c not in listed]
    gone = len(listed - set(now.plan.changes))
    shown = "; ".join(map(str, unlisted[:3])) + ("; ..." if len(unlisted) > 3 else "")
    raise StalePlanError(
        "the node changed since the removal you confirmed was listed: removing everything "
        f"now would be {len(now.plan.changes)} change(s) instead of "
        f"{len(confirmed.changes)} ({len(unlisted)} not listed"
        f"{': ' + shown if unlisted else ''}; {gone} listed no longer to make); nothing was "
        "removed: run destroy again to see the list")


def _destroy_each_locked(backends: Sequence[Backend], *, dry_run: bool, check: bool,
                         allow_disruptive: bool, lock_timeout: float) -> Convergence:
    parts: list[Convergence] = []
    problems: list[str] = []
    for position, backend in enumerate(backends):
        try:
            # A signal once the backend's removal is made waits until it is among the
            # parts said (removed_before): raised as its apply returned, the removal
            # was made and `k3snet destroy` said "nothing was changed".
            with held_after_commit():
                part = destroy(backend, dry_run=dry_run, allow_disruptive=allow_disruptive,
                               lock_timeout=lock_timeout)
                parts.append(part)
        except BaseException as exc:  # Ctrl-C and SIGTERM (SystemExit) too
            done = [p.result.summary() for p in parts if p.result and p.result.applied]
            if done:
                # Ctrl-C or a signal stopped it: "failed" named a backend that had not.
                ended = "failed" if isinstance(exc, Exception) else "was stopped"
                # The signal held until this backend's removal was among the parts.
                who = ("the destroy" if len(parts) > position
                       else getattr(backend, "name", backend))
                said = f"removed before {who} {ended}, and not undone: {'; '.join(done)}"
                log.error("destroy: %s", said)
                exc.add_note(said)
                vars(exc)[_REMOVED_BEFORE] = tuple(done)
            raise
        if dry_run and check and part.plan.changes:
            problems += backend.check(part.plan)
    # Every removal made: a signal from now on waits for the caller's own block
    # (``k3snet destroy`` noting what was removed), as a group's apply does. A dry run
    # removed nothing (``k3snet destroy``'s check before it asks): a signal acts at once.
    if not dry_run:
        committing()
    if problems:
        raise CheckError("the backends' check found problems; nothing was changed:", problems)
    return _joined(parts)


def _joined(parts: Sequence[Convergence]) -> Convergence:
    """One Convergence of several backends' (``parts`` itself when there is one)."""
    if len(parts) == 1:
        return parts[0]
    owned: dict[tuple[object, ...], NetObject] = {}
    for part in parts:
        for obj in part.observed.owned:
            owned.setdefault(obj.key, obj)
    results = [p.result for p in parts if p.result is not None]
    result = (ApplyResult("+".join(r.backend for r in results),
                          [c for r in results for c in r.applied],
                          sum(r.operations for r in results)) if results else None)
    return Convergence(State(owned=owned.values()),
                       Plan(changes=[c for p in parts for c in p.plan.changes],
                            notes=[n for p in parts for n in p.plan.notes]), result,
                       [r for p in parts for r in p.restarts])


def refuse_teardown(backend: Backend, observed: State, p: Plan) -> None:
    """Raise TeardownError if ``p`` leaves a backend that owns objects owning none.

    A spec that lost its destinations (an empty or truncated file, a bad merge)
    must not silently remove egress from a node; drift objects do not count as
    something to keep. Nor do sysctls, for a backend managing other kinds too,
    unless the spec still wants one of those kinds (a wanted object foreign state
    meets or blocks: a plan note): a spec without destinations may still want the
    forwarding sysctls (masquerade mode all, sysctls of its own).
    """
    emptied = teardown_emptied(backend, observed, p)
    if emptied:
        raise TeardownError(
            "the plan deletes everything k3snet owns through " + ", ".join(emptied)
            + "; nothing was applied. If that is what you want, run `k3snet destroy` "
            "(k3snet.destroy) or pass allow_teardown=True (--allow-teardown)")


def teardown_emptied(backend: Backend | Mapping[str, Collection[str]], observed: State,
                     p: Plan) -> list[str]:
    """The backends ``p`` leaves owning none of the objects they own (each as ``name (N
    object(s) of KINDS)``): what :func:`refuse_teardown` refuses, for ``plan`` to tell
    before a plan file is saved that ``apply FILE`` would refuse, and ``doctor --fix``
    whether the spec's next apply would. ``backend``: the backend, or each backend's
    name and the kinds it manages."""
    if isinstance(backend, Mapping):
        groups = [(name, frozenset(kinds)) for name, kinds in backend.items()]
    else:
        members = backend.members if isinstance(backend, BackendGroup) else None
        groups = ([(m.backend.name, m.kinds) for m in members] if members is not None
                  else [(backend.name, frozenset(backend.capabilities))])
    deletes = {c.subject for c in p.changes if c.action == "delete"}
    if not deletes:
        return []
    adds = {c.kind for c in p.changes if c.action != "delete"}
    noted = {n.wanted.kind for n in p.notes}
    emptied: list[str] = []
    for name, managed in groups:
        # Sysctls carry no egress: the backend left holding only them has lost every
        # route, unless the spec still wants routes that foreign ones now provide.
        egress = managed - {"sysctl"}
        for kinds, kept in ((managed, adds), (egress, adds | noted)):
            owned = [o for o in observed.owned if o.kind in kinds and not isinstance(o, Drift)]
            if owned and all(o in deletes for o in owned) and not kept & kinds:
                emptied.append(f"{name} ({len(owned)} object(s) of {', '.join(sorted(kinds))})")
                break
    return emptied
