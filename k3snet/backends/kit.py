"""The backend kit: what every backend needs, written once.

A backend is small when the concerns all backends share come from here:

* :class:`BackendBase`: the lifecycle (``close`` and ``with``), a :class:`FaultHook`
  as ``faults``, and :meth:`~BackendBase.ensure_capable` / :meth:`~BackendBase.ensure_fits`;
* :func:`fit_problems`: does a plan fit what the backend owns? Built on the
  planner's own rules (:meth:`k3snet.Plan.problems`), so every backend refuses
  the same plans with the same words, and :func:`taken_slots` (a route add into
  a slot a foreign route holds, which a kernel refuses);
* :func:`disruptive_problems`: the changes a backend's ``disruptive(change)``
  names, refused unless the backend has ``allow_disruptive``, with the one
  wording that names all three ways to allow them (:data:`ALLOW_DISRUPTIVE`);
* :class:`Compensation`: compensating undo for backends without kernel
  transactions. Record each step's undo as it is done; on failure
  :meth:`~Compensation.fail` undoes in reverse and raises
  :class:`~k3snet.errors.ApplyError`, or :class:`~k3snet.errors.RollbackError`
  when an undo fails too;
* :func:`translate_errors`: the one place where a library's exception becomes a
  k3snet error, ``from`` the original: ``OSError`` with the missing capability
  named when the system said "not permitted" (:class:`LibraryErrors`), or through
  an :class:`ErrorClassifier` such as :class:`k3snet.kube.KubeErrors` (the
  Kubernetes client's exceptions, by HTTP status);
* :class:`ObserveCache`: the observe-cache contract (a value kept while the
  system's version token, such as the nftables generation id, stays the same);
* :class:`FaultHook`: the one fault-injection hook, which
  :func:`k3snet.testing.run_conformance` drives at every position of a plan;
* :func:`gc_paused`: the cyclic garbage collector paused while a big read or
  apply allocates (the one place k3snet turns it off);
* :class:`WarningLog` and :meth:`BackendBase.log_warnings`: a backend's ``warnings``
  logged once while each lasts (again once it changed or came back), whoever asks:
  the backend after its read, the agent after every pass
  (:meth:`~k3snet.backends.group.BackendGroup.log_warnings`).

A custom backend that subclasses :class:`BackendBase` gets all of this::

    class JsonFileBackend(BackendBase):
        name = "jsonfile"
        capabilities = frozenset({"nat"})

        def apply(self, plan):
            self.ensure_fits(plan, self.observe())
            undo = Compensation(self.name)
            fail_at = self.faults.take(plan)
            for index, change in enumerate(plan.changes):
                if index == fail_at:
                    undo.fail(change, "injected failure")
                ...
"""

from __future__ import annotations

import contextvars
import errno as errno_codes
import inspect
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, ClassVar, Generic, NoReturn, Protocol, Self, TypeVar

# The GC pause lives with the model (the spec's loading and compile use it too).
from k3snet._gc import GC_PAUSE_MIN, GcPause, gc_paused
from k3snet.backends.base import ensure_capable
from k3snet.errors import (
    ApplyError,
    BackendError,
    K3snetError,
    ModelError,
    PlanError,
    RollbackError,
)
from k3snet.model.route import Route, RouteBlock
from k3snet.model.state import State
from k3snet.planner import Change, Plan

__all__ = [
    "ALLOW_DISRUPTIVE",
    "FRESH_READ_AGE",
    "GC_PAUSE_MIN",
    "BackendBase",
    "Compensation",
    "ErrorClassifier",
    "FaultHook",
    "FreshRead",
    "GcPause",
    "LibraryErrors",
    "ObserveCache",
    "OptionChecks",
    "UndoFailure",
    "WarningLog",
    "backend_warnings",
    "committing",
    "disruptive_problems",
    "ensure_fits",
    "fit_problems",
    "gc_paused",
    "held_after_commit",
    "longest_step",
    "option_flag",
    "option_path",
    "option_seconds",
    "option_text",
    "run_option_checks",
    "stopped",
    "taken_slots",
    "translate_errors",
    "undo_running",
    "undo_runs_here",
    "undo_spares_children",
    "undo_steps",
    "undoing",
    "unwritten_problems",
]

T = TypeVar("T")


# ---------------------------------------------------------------- options
#
# A backend's options come from a spec's ``backends:`` section or ``--backend-opt``
# (JSON, else text): ``"false"`` is text and truthy, ``1e309`` is infinity, ``NaN`` is
# a float. Each option is checked as the backend is built, before it connects to
# anything, with one error naming it.


def option_seconds(name: str, value: object, *, zero: bool = False) -> float:
    """A bound in seconds: a number above 0 (or 0 itself, with ``zero``) and below a day
    (not NaN, not a flag)."""
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not (value >= 0 if zero else value > 0) or not value < 86400):
        bound = ">= 0 and below a day" if zero else "> 0 and below a day"
        raise ModelError(f"{name} must be a number of seconds {bound}, got {value!r}")
    return float(value)


def option_flag(name: str, value: object) -> bool:
    """A yes/no option: only ``true`` or ``false`` (a spec's ``"no"`` is not false)."""
    if not isinstance(value, bool):
        raise ModelError(f"{name} must be true or false, got {value!r}")
    return value


def option_text(name: str, value: object) -> str:
    """A text option: never a number, a list or ``None``."""
    if not isinstance(value, str):
        raise ModelError(f"{name} must be text, got {value!r}")
    return value


def option_path(name: str, value: object) -> str | os.PathLike[str]:
    """A file or directory option: text or a path object, holding no NUL (which no
    system call takes: ``embedded null byte`` at the first use, far from the option)."""
    if not isinstance(value, str | os.PathLike):
        raise ModelError(f"{name} must be a path (text), got {value!r}")
    if "\0" in os.fspath(value):
        raise ModelError(f"{name} must be a path without NUL characters, got {value!r}")
    return value


OptionChecks = Mapping[str, Callable[[Any], object]]
"""``option -> check``: each check takes the option's value and raises a
:class:`~k3snet.errors.K3snetError` saying what is wrong with it (a ``ValueError`` or
``TypeError`` is taken so too; what it returns is ignored); the very function the
backend's constructor calls on it."""


def run_option_checks(checks: OptionChecks, options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(option, why)`` for each of ``options`` whose check in ``checks`` refuses its
    value; options without a check (or unknown) are passed by. A check refuses by
    raising a :class:`~k3snet.errors.K3snetError`, or Python's ``ValueError`` or
    ``TypeError``, as a third-party check may (``os.fspath(5)``): those are the
    value's problem, not an internal error of k3snet's. Not from one of k3snet's own
    checks: those raise a ``K3snetError``, and anything else from them is a bug."""
    problems = []
    for option, value in options.items():
        check = checks.get(option)
        if check is None:
            continue
        try:
            check(value)
        except K3snetError as exc:
            problems.append((option, str(exc)))
        except (ValueError, TypeError) as exc:
            from k3snet.backends.registry import raised_by_third_party  # noqa: PLC0415

            if not raised_by_third_party(check, exc):  # k3snet's own check: a bug
                raise
            problems.append((option, str(exc)))
    return problems


# ---------------------------------------------------------------- fault injection


class FaultHook:
    """The fault-injection hook: make the next apply fail at one change, once.

    ``fail_at(i)`` arms it: the next :meth:`apply` with changes fails *at* change
    ``i`` (0-based; an index past the end means the last change), as if the
    system had refused that change. The changes before it may have been made;
    the backend must leave the system exactly as it was before the apply and
    raise :class:`~k3snet.errors.ApplyError`. The hook disarms itself when an
    apply takes it (:meth:`take`), whether or not the plan had changes.

    Backends honour it where a real failure would happen (an nftables batch gets
    a command the kernel refuses, a netlink batch stops, a file write is not
    renamed into place), so the conformance suite tests the real rollback path.
    """

    __slots__ = ("_at",)

    def __init__(self) -> None:
        self._at: int | None = None

    def fail_at(self, index: int | None) -> None:
        """Arm the hook for change ``index`` of the next apply (``None`` disarms it)."""
        if index is not None and (isinstance(index, bool) or not isinstance(index, int)
                                  or index < 0):
            raise ValueError(f"fail_at takes a change index >= 0 or None, not {index!r}")
        self._at = index

    @property
    def armed(self) -> int | None:
        """The index the next apply will fail at (``None``: it will not fail)."""
        return self._at

    def take(self, plan: Plan) -> int | None:
        """For an apply of ``plan``: the index of the change to fail at (disarms the hook)."""
        at, self._at = self._at, None
        if at is None or not plan.changes:
            return None
        return min(at, len(plan.changes) - 1)


# ---------------------------------------------------------------- plan fit


def fit_problems(backend: object, plan: Plan, observed: State, *,
                 slots: bool = True) -> list[str]:
    """Why ``plan`` does not fit what ``backend`` observed (empty when it fits).

    The plan's kinds must be among the backend's capabilities, and every change
    must fit the owned state as the planner defines it (:meth:`k3snet.Plan.problems`):
    no add over an existing object, no delete or replace of something k3snet
    does not own as named, nothing added that k3snet only observes
    (:func:`unwritten_problems`), no route added where a foreign route stands
    (:func:`taken_slots`). A change naming a foreign object says so.

    ``slots=False`` leaves out :func:`taken_slots`, for a backend that judges the
    slots against its system's own view (the netlink backend reads the kernel's
    routes); every other backend of routes needs it in ``check`` and ``apply``
    alike, and gets it here (and through :meth:`BackendBase.ensure_fits`).
    """
    problems: list[str] = []
    try:
        ensure_capable(backend, plan)  # type: ignore[arg-type]
    except PlanError as exc:
        problems.append(str(exc))
    problems += unwritten_problems(plan)
    foreign = observed.foreign
    for change, problem in plan.problems(observed):
        before = change.before
        if before is not None and before in foreign:
            problems.append(f"cannot {change.action} {before}: it is not k3snet's (foreign); "
                            "k3snet never changes it")
        else:
            problems.append(problem)
    if slots:
        problems += taken_slots(plan, observed)
    return problems


def unwritten_problems(plan: Plan) -> list[str]:
    """One line per change of ``plan`` that would write what k3snet only observes (a
    foreign block, a drift finding: :attr:`~k3snet.model.NetObject.written` false).

    The planner never plans one (such an object in a desired state is a
    :class:`~k3snet.errors.ModelError`); a hand-made or edited plan may hold one, and no
    backend can write it. :func:`fit_problems` includes these.
    """
    return [f"cannot {c.action} {c.after.describe()}: it is what k3snet only observes "
            "(a foreign block or a finding), never written"
            for c in plan.changes if c.after is not None and not c.after.written]


def taken_slots(plan: Plan, observed: State) -> list[str]:
    """The route adds of ``plan`` into a slot (table, destination, metric) that a foreign
    route or :class:`~k3snet.model.RouteBlock` of ``observed`` holds, one line each.

    A kernel holds one route a slot and refuses such an add (with ``NLM_F_REPLACE`` it
    would replace the foreign route): a backend of routes refuses it too, before
    anything is changed. The planner never plans such an add (it notes a conflict);
    a stale or hand-made plan may hold one. :func:`fit_problems` includes these.
    """
    adds = [c.subject for c in plan.changes
            if c.action == "add" and isinstance(c.subject, Route)]
    if not adds:
        return []
    taken = {(o.slot if isinstance(o, RouteBlock) else o.key): o
             for o in observed.foreign if isinstance(o, Route | RouteBlock)}
    return [f"cannot add {route}: the foreign {taken[route.key].describe()} holds its "
            "slot (table, destination, metric); a kernel holds one route a slot"
            for route in adds if route.key in taken]


def ensure_fits(backend: object, plan: Plan, observed: State) -> None:
    """Raise :class:`~k3snet.errors.PlanError` listing every reason ``plan`` does not fit
    (:func:`fit_problems`)."""
    problems = fit_problems(backend, plan, observed)
    if problems:
        name = getattr(backend, "name", type(backend).__name__)
        raise PlanError(f"{name} backend refuses the plan, nothing was changed:\n  "
                        + "\n  ".join(problems))


# ---------------------------------------------------------------- disruptive changes

ALLOW_DISRUPTIVE = ("cni.allowDisruptive: true in the spec, --allow-disruptive on the CLI, or "
                    "allow_disruptive=True in the library")
"""The three ways to allow a disruptive change, as every refusal names them."""


def disruptive_problems(backend: object, plan: Plan) -> list[str]:
    """One line per disruptive change of ``plan`` that ``backend`` does not allow.

    A backend that can make disruptive changes has ``disruptive(change) -> str | None``
    (the reason, or ``None``) and an ``allow_disruptive`` attribute (its
    constructor's keyword); a backend without the method has no disruptive changes.
    """
    judge = getattr(backend, "disruptive", None)
    if judge is None or getattr(backend, "allow_disruptive", False):
        return []
    problems = []
    for change in plan.changes:
        reason = judge(change)
        if reason:
            problems.append(f"{change} is disruptive: {reason}; it is refused unless allowed: "
                            f"{ALLOW_DISRUPTIVE}")
    return problems


# ---------------------------------------------------------------- compensating undo


class UndoFailure(Exception):  # noqa: N818 - raised by undo callables, not a k3snet error
    """Raised by an undo callable that undid only part of its steps.

    ``undone`` are the inverse changes that did take effect, ``problems`` one
    line per inverse that did not.
    """

    def __init__(self, problems: Sequence[str], undone: Sequence[Change] = ()) -> None:
        self.problems = tuple(problems)
        self.undone = tuple(undone)
        super().__init__("; ".join(self.problems))


_UNDOS = [0]  # undos running in this process (Compensation.rollback, a group's)
_UNDOS_LOCK = threading.Lock()
# Whether the undo runs where this work began (a namespace's worker runs its caller's
# context): a commit within it marks no block, and another thread's undo no longer
# kept the main thread's commit from marking its own (committing, stopped).
_UNDO_HERE: contextvars.ContextVar[bool] = contextvars.ContextVar("k3snet_undo",
                                                                   default=False)


def undoing() -> bool:
    """Whether an undo runs in this process now (:meth:`Compensation.rollback`, a backend
    group's undo of its earlier members: :func:`undo_running`). The CLI's SIGTERM and
    SIGHUP let it run on (SIGTERM bounding it), as in the undo they start themselves."""
    return _UNDOS[0] > 0


def undo_runs_here() -> bool:
    """Whether this work is an undo (:func:`undo_running` around it, in this thread or a
    namespace's worker running its caller's context): a backend's apply then gives back
    what was there before the run, which it may refuse to bring in anew (a key an earlier
    k3snet wrote that it no longer writes). Another thread's undo is not this one."""
    return _UNDO_HERE.get()


@contextmanager
def undo_running() -> Iterator[None]:
    """Within the block, an undo runs (:func:`undoing`)."""
    with _UNDOS_LOCK:
        _UNDOS[0] += 1
    token = _UNDO_HERE.set(True)
    try:
        yield
    finally:
        _UNDO_HERE.reset(token)
        with _UNDOS_LOCK:
            _UNDOS[0] -= 1


_SPARED = frozenset({signal.SIGTERM, signal.SIGHUP})


def _one_thread() -> bool:
    """Whether this process runs one thread: the kernel's count (``/proc/self/task``),
    which sees the threads ``threading`` does not (one a C library or
    ``_thread.start_new_thread`` started: pytest-xdist's execnet runs one), else
    ``threading``'s."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return threading.active_count() == 1


@contextmanager
def undo_spares_children() -> Iterator[None]:
    """Within the block, a process started while an undo runs (:func:`undoing`) starts with
    SIGTERM and SIGHUP ignored, as they stay through ``exec``: start it inside the block,
    wait for it outside. k3snet's own handlers are back when the block ends, and a signal
    that came within it (blocked meanwhile, in the main thread) reaches them then.

    The CLI lets an undo run on through SIGTERM and SIGHUP, but with a handler, which a
    child does not inherit (``exec`` sets it back to the default): systemd stopping the
    unit or logind ending the session signals every process of its cgroup, and the
    ``iptables-restore`` an undo ran after Ctrl-C or SIGHUP died by it, the undo step
    failed with it (SIGTERM was ignored there before it bounded the undo, and the child
    inherited that). With another thread running, or outside the main thread (no handler
    can be set there), they are only blocked, which ``exec`` keeps too (``iptables`` and
    ``ip netns exec`` leave the mask as it is): ignored for the process while another
    thread, not blocking them, may take one, a SIGTERM in the block was lost (the agent's,
    from the kubelet). A signal already pending when they are ignored (it came as the
    block began, or within an outer block) would be discarded by that (POSIX), as one
    that came within a nested block would be as it ends, setting back the outer's ignored:
    it is sent again as the block ends, and taken once.
    """
    if not undoing():
        yield
        return
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SPARED)
    handlers: dict[signal.Signals, Any] = {}
    came: list[signal.Signals] = []  # pending: ignoring it discards it, sent again at the end
    try:
        if threading.current_thread() is threading.main_thread() and _one_thread():
            for signum in sorted(_SPARED):
                handler = signal.getsignal(signum)
                if handler is not None:  # None: not set from Python, cannot be put back
                    if signum in signal.sigpending():
                        came.append(signum)
                    handlers[signum] = handler
                    signal.signal(signum, signal.SIG_IGN)
        yield
    finally:
        pending = signal.sigpending()  # an outer block's ignored, set back, discards them too
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
            if signum in came or signum in pending:  # still blocked: taken once, unblocked
                os.kill(os.getpid(), signum)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)


# ---------------------------------------------------------------- signals after a commit

_HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Hold:
    """One :func:`held_after_commit` block: whether what it runs committed, whether a
    signal stopped it before, and what the handlers of the signals after it raised."""

    __slots__ = ("brief", "came", "committed", "cut", "stopped")

    def __init__(self) -> None:
        self.committed = False
        self.brief = False  # a commit that cannot hang: the second signal waits too
        self.stopped = False
        self.cut = False  # a second signal after the commit acted at once
        self.came: list[BaseException] = []


_HOLDS: list[_Hold] = []  # the blocks open in the main thread, innermost last
# The block a commit marks: the innermost one open where the work began. A namespace's
# worker thread runs its jobs in a copy of the caller's context (NetnsRunner.call); any
# other thread (an embedding program's pool running another apply, the agent's) has none.
# _HOLDS[-1] was marked from any thread: an unrelated apply's commit made a Ctrl-C
# before the main thread's own commit wait for its block's end, and a signal stopping
# the main thread's block made the unrelated apply's commit raise.
_CURRENT: contextvars.ContextVar[_Hold | None] = contextvars.ContextVar("k3snet_hold",
                                                                          default=None)
# A backend's worker thread marks its commit; reentrant: the handler may run in the main
# thread while it holds the lock (its own mark, a block beginning or ending).
_HOLDS_LOCK = threading.RLock()
_PREVIOUS: dict[int, Any] = {}  # the handlers the outermost block found


def _held(signum: int, frame: Any) -> None:
    """The handler within :func:`held_after_commit`: the handler found runs at once;
    after a commit what it raises waits for the block's end; before, if it
    raises (Ctrl-C's ``KeyboardInterrupt``, the CLI's ``SystemExit``) the block is
    stopped: no commit begins after it. A handler that returns (one setting a flag to
    end after the pass) stops nothing. It runs holding the lock a worker thread's
    :func:`committing` takes: no commit begins between its start and the stop."""
    with _HOLDS_LOCK:
        hold = _HOLDS[-1] if _HOLDS else None
        handler = _PREVIOUS.get(signum, signal.default_int_handler)
        if hold is not None and hold.committed:
            # The handler runs now, only what it raises waits: called at the block's
            # end, the agent's asked its stop that much later (an nftables commit of
            # thousands of rules), the grace period it counts begun after the
            # kubelet's, and the CLI's SIGTERM bound of the undo too.
            try:
                handler(signum, frame)
            except BaseException as exc:
                if not hold.cut and len(hold.came) < (2 if hold.brief else 1):
                    hold.came.append(exc)  # the first raised as the block ends
                    return
                # A second one (Ctrl-C again) and any after it act at once: held, only
                # SIGKILL ended a block whose rest hung (a namespace's thread stuck
                # after its commit); what was committed is said to stay, not undone.
                # After a brief commit (libiptc's, the xtables lock already held) the
                # second waits too, a third acts: cut as the commit ended, before the
                # backend noted it, the undo read the table as it was before (a jump's
                # move: its delete by number refused, ROLLBACK FAILED).
                hold.cut = True
                hold.came.clear()
                exc.add_note(f"a second {signal.Signals(signum).name} cut k3snet after a "
                             "change was committed, before it was noted: that change may "
                             "stay, not taken back (the node may be half-changed: look "
                             "before running again)")
                raise
            return
        try:
            handler(signum, frame)
        except BaseException:
            if hold is not None:
                hold.stopped = True
            raise


@contextmanager
def held_after_commit() -> Iterator[None]:
    """Within the block, SIGINT, SIGTERM and SIGHUP (those of a Python handler: Ctrl-C's,
    the CLI's) that come once what the block runs has committed (:func:`committing`)
    have their handler run at once, and what it raises (Ctrl-C's ``KeyboardInterrupt``,
    the CLI's ``SystemExit``; the first one's) is raised as the block ends (a second
    one raising acts at once, noting that the change may stay; after a brief commit,
    ``committing(brief=True)``, the second waits too and a third acts); before the
    commit they act at once, as they would have, and a commit not begun yet never
    begins (:func:`committing` raises).

    Who uses the result of a change wraps its call and the keeping of the result in it
    (a backend group, each member's ``apply`` and its entry among the parts to undo;
    ``k3snet apply``, the group's apply and the note of what it made): a signal
    landing after the kernel took a change, within the backend's bookkeeping or its
    worker thread's answer, made the backend's ``apply`` raise with its change made,
    which no one took back, and the command said "nothing was changed". A block within
    a block holds for itself: its end acts on what it held, the outer one holds only
    after a commit marked while it is the innermost. Outside the main thread (no
    handler can be set there) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hold = _Hold()
    outermost = not _HOLDS
    if outermost:
        for signum in _HELD_SIGNALS:
            handler = signal.getsignal(signum)
            # Still _held: an earlier block's end was cut by a signal, its handler kept.
            if callable(handler) and handler is not _held:
                _PREVIOUS[signum] = handler
                signal.signal(signum, _held)
    with _HOLDS_LOCK:
        _HOLDS.append(hold)
        token = _CURRENT.set(hold)
    try:
        yield
    finally:
        handlers = dict(_PREVIOUS)
        with _HOLDS_LOCK:
            _HOLDS.remove(hold)
            _CURRENT.reset(token)
        if outermost:
            for number, handler in handlers.items():
                if signal.getsignal(number) is _held:  # else set since (SIGTERM's SIG_IGN)
                    signal.signal(number, handler)
            _PREVIOUS.clear()  # after: a signal meanwhile finds its handler
        if hold.came:
            raise hold.came[0]


def committing(*, brief: bool = False) -> None:
    """Mark the innermost :func:`held_after_commit` block open where the work began: a
    change is committed from now on, signals wait for the block's end (``brief``: a
    commit that cannot hang, an in-process call with every lock it needs held, after
    which a second signal waits too: what the block has left is the commit's end and
    its note, which a second Ctrl-C cut; a third acts at once). Call it right
    before the kernel (or the API server) is given a change that cannot be taken back by
    raising, in the main thread or a namespace's worker thread (whose jobs run in their
    caller's context); :class:`Compensation` calls it as its guarded steps end. Raises
    ``KeyboardInterrupt`` when a signal stopped the block before (the caller has gone
    on: nothing must be committed); does nothing in an undo (:func:`undo_running`, where
    the work began), outside any block, or in a thread of its own (another apply's,
    which no block of the main thread's is about)."""
    if _UNDO_HERE.get():
        return
    with _HOLDS_LOCK:
        hold = _CURRENT.get()
        if hold is None:
            return
        if hold.stopped:
            raise KeyboardInterrupt("stopped by a signal before the commit")
        hold.committed = True
        hold.brief = hold.brief or brief


def cut_after_commit() -> bool:
    """Whether a second signal cut the innermost :func:`held_after_commit` block after its
    commit (raised at once): waiting for a namespace's thread is waiting in vain then."""
    with _HOLDS_LOCK:
        hold = _CURRENT.get()
        return hold is not None and hold.cut


def stopped() -> bool:
    """Whether a signal stopped the innermost :func:`held_after_commit` block (outside an
    undo): a backend's worker thread, which no signal's exception reaches, ends its
    steps there (:meth:`Compensation.record` raises)."""
    if _UNDO_HERE.get():
        return False
    with _HOLDS_LOCK:
        hold = _CURRENT.get()
        return hold is not None and hold.stopped


class Compensation:
    """The steps an apply has made, and how to take each one back.

    ``record(changes, undo)`` after each step (``undo`` takes the step back, or
    ``None`` when there is nothing to undo); on failure, :meth:`fail` runs the
    undos in reverse order and raises :class:`~k3snet.errors.ApplyError` whose
    ``done`` and ``rolled_back`` say what happened, or
    :class:`~k3snet.errors.RollbackError` if an undo failed (the system may be
    half-changed, and the message says which steps).
    """

    def __init__(self, backend: str, where: str = "") -> None:
        self.backend = backend
        self.where = where
        self._steps: list[tuple[tuple[Change, ...], Callable[[], object] | None]] = []

    @property
    def done(self) -> tuple[Change, ...]:
        """Every change recorded so far, in order."""
        return tuple(c for changes, _ in self._steps for c in changes)

    def record(self, changes: Change | Sequence[Change],
               undo: Callable[[], object] | None = None) -> None:
        """One step done: its change(s), and the callable that takes it back."""
        batch = (changes,) if isinstance(changes, Change) else tuple(changes)
        self._steps.append((batch, undo))
        if threading.current_thread() is not threading.main_thread() and stopped():
            # Ctrl-C or a signal stopped the caller while a worker thread (a namespace's)
            # made this step: no further step, and those made are taken back (guarding).
            # In the main thread the signal's own exception is on its way (a backend
            # recording the write it interrupted): raised here, a KeyboardInterrupt took
            # the place of SIGTERM's SystemExit (exit 130 "stopped by SIGINT", not 143).
            raise KeyboardInterrupt("stopped by a signal during the apply")

    def rollback(self) -> tuple[list[Change], list[str]]:
        """Undo every recorded step in reverse: (inverse changes done, problems). An
        interruption of an undo (``KeyboardInterrupt``, ``SystemExit``) stops there: that
        step and every one after it are problems."""
        with undo_running():
            return self._rollback()

    def _rollback(self) -> tuple[list[Change], list[str]]:
        undone: list[Change] = []
        problems: list[str] = []
        steps = list(reversed(self._steps))
        for index, (changes, undo) in enumerate(steps):
            inverses = [c.inverse() for c in reversed(changes)]
            try:
                if undo is not None:
                    undo()
            except UndoFailure as exc:
                undone += exc.undone
                problems += exc.problems
            except Exception as exc:  # noqa: BLE001 - every undo failure is reported, none hides another
                # A step recorded with no change of its own (a backend's second write
                # of one change, its store's restore) is said too: one line per inverse
                # was none, and the undo's failure went unsaid (a 409 creating back
                # the ConfigMap a cut delete took: exit 143, the node half-changed).
                problems += ([f"{inverse}: {exc}" for inverse in inverses]
                             or [f"an undo step: {exc}"])
            except BaseException as exc:  # noqa: BLE001 - an interruption of the undo is said, then it stops
                # A second Ctrl-C (or a SystemExit a caller's signal handler raises)
                # during the undo stops it, and is said: raised as it came, it was the
                # CLI's quiet exit 130 with this step half-undone and the ones after it
                # never undone.
                problems += ([f"{inverse}: interrupted ({type(exc).__name__}), may be "
                              "half-undone" for inverse in inverses]
                             or [f"an undo step: interrupted ({type(exc).__name__}), may be "
                                 "half-undone"])
                problems += [f"{c.inverse()}: not undone (the undo was interrupted)"
                             for rest, _ in steps[index + 1:] for c in reversed(rest)]
                problems += ["an undo step: not undone (the undo was interrupted)"
                             for rest, later in steps[index + 1:] if not rest and later]
                break
            else:
                undone += inverses
        self._steps.clear()
        return undone, problems

    @staticmethod
    def interruption(exc: BaseException) -> str:
        """What interrupted an apply, as its messages name it: a ``SystemExit`` with words
        of its own, the CLI's for a signal (``stopped by SIGTERM``), by them (the exit
        code of a private class, ``_Stopped: 143``, was said); else its class and text."""
        text = str(exc)
        if isinstance(exc, SystemExit) and text and text != str(exc.code):
            return text
        return f"{type(exc).__name__}{f': {text}' if text else ''}"

    @contextmanager
    def guarding(self) -> Iterator[None]:
        """Within the block, anything raised other than by :meth:`fail` (Ctrl-C's
        ``KeyboardInterrupt``, ``SystemExit``, a bug) takes the recorded steps back
        first, then goes on as it came.

        Without it, only the backend's own errors (:meth:`fail`) undid anything: an
        interruption between two steps left the first ones made. If an undo fails,
        :class:`~k3snet.errors.RollbackError` is raised ``from`` what was raised, as
        :meth:`fail` and a backend group do: the system may be half-changed, and an
        interruption (which the CLI ends quietly) must not hide it.
        """
        try:
            yield
            # Made: a signal from now on waits for the result to be kept (a backend
            # group's list of parts to undo), or ends the steps of a worker thread.
            committing()
        except BaseException as exc:
            # After fail() nothing is recorded any more: no step is undone twice.
            done = list(self.done)
            undone, problems = self.rollback()
            if problems:
                where = f", {self.where}" if self.where else ""
                raise RollbackError(
                    f"{self.backend} backend{where}: interrupted ({self.interruption(exc)})"
                    "\n  ROLLBACK FAILED, the system may be "
                    "half-changed:\n    " + "\n    ".join(problems),
                    failed=None, done=done, rolled_back=undone) from exc
            raise

    def fail(self, failed: Change | None, reason: str,
             cause: BaseException | None = None, *, extra_problems: Sequence[str] = ()
             ) -> NoReturn:
        """Undo everything recorded, then raise ApplyError (RollbackError if an undo failed)."""
        done = list(self.done)
        undone, problems = self.rollback()
        problems = [*extra_problems, *problems]
        where = f", {self.where}" if self.where else ""
        # Briefly (a NAT rule's exclusions past the first three counted): named whole,
        # a rule of 10 000 took 160 KB before why, and a log line was cut before it.
        subject = f"{failed.brief()} failed: " if failed is not None else ""
        message = f"{self.backend} backend{where}: {subject}{reason}"
        if problems:
            message += ("\n  ROLLBACK FAILED, the system may be half-changed:\n    "
                        + "\n    ".join(problems))
            raise RollbackError(message, failed=failed, done=done,
                                rolled_back=undone) from cause
        if done:
            message += f" (the {len(done)} change(s) made before it were undone)"
        else:
            message += " (nothing was changed)"
        raise ApplyError(message, failed=failed, done=done, rolled_back=undone) from cause


# ---------------------------------------------------------------- error mapping

_PRIVILEGE_ERRNOS = frozenset({errno_codes.EPERM, errno_codes.EACCES})


class ErrorClassifier(Protocol):
    """Protocol: how one library's exceptions become typed k3snet errors.

    :func:`translate_errors` catches the types :meth:`catches` returns (asked
    only when something was raised, so a classifier may import its library
    lazily) and raises what :meth:`classify` makes of the exception, ``from`` it.
    """

    def catches(self) -> tuple[type[BaseException], ...]:
        """The exception types this classifier maps; any other passes through."""
        ...

    def classify(self, doing: str, exc: BaseException) -> K3snetError:
        """The k3snet error for ``exc``, raised while k3snet tried to do ``doing``."""
        ...


class LibraryErrors:
    """The classifier of system calls: ``errors`` become ``into("cannot DOING: DETAIL")``.

    When the system answered "not permitted" (``EPERM`` / ``EACCES``) and
    ``capability`` is given, the message names the capability that is missing
    (``CAP_NET_ADMIN``).
    """

    __slots__ = ("capability", "errors", "into")

    def __init__(
        self,
        errors: type[BaseException] | tuple[type[BaseException], ...] = OSError,
        into: Callable[[str], BackendError] = BackendError,
        capability: str | None = None,
    ) -> None:
        self.errors = errors if isinstance(errors, tuple) else (errors,)
        self.into = into
        self.capability = capability

    def catches(self) -> tuple[type[BaseException], ...]:
        """``errors``."""
        return self.errors

    def classify(self, doing: str, exc: BaseException) -> BackendError:
        """``into("cannot DOING: DETAIL")``, naming the missing capability if it was that."""
        detail = str(exc) or type(exc).__name__
        if self.capability is not None and _errno_of(exc) in _PRIVILEGE_ERRNOS:
            detail += (f" (not permitted: this needs {self.capability}; run as root or grant "
                       "the capability)")
        return self.into(f"cannot {doing}: {detail}")


@contextmanager
def translate_errors(
    doing: str,
    *,
    errors: type[BaseException] | tuple[type[BaseException], ...] = OSError,
    into: Callable[[str], BackendError] = BackendError,
    capability: str | None = None,
    classifier: ErrorClassifier | None = None,
) -> Iterator[None]:
    """Turn a library's exception into a k3snet error that says what was being done.

    k3snet's own errors pass through untouched. Without ``classifier``, ``errors``
    become ``into("cannot DOING: DETAIL")`` raised ``from`` the original
    (:class:`LibraryErrors`: ``doing`` completes "cannot ...", as in ``"read the
    nftables generation id"``), naming ``capability`` when the system said "not
    permitted". With a ``classifier`` (which then decides alone: ``errors``,
    ``into`` and ``capability`` are not used), the exceptions it catches become
    the typed error it makes, as :class:`k3snet.kube.KubeErrors` does by HTTP status::

        with translate_errors(f"read ConfigMap {where}", classifier=KubeErrors()):
            core.read_namespaced_config_map(name, namespace)
    """
    try:
        yield
    except K3snetError:
        raise
    except BaseException as exc:
        mapper = classifier if classifier is not None else LibraryErrors(errors, into, capability)
        # The classifier's types are asked for only now: a client library stays
        # unimported until one of its calls has failed.
        if not isinstance(exc, mapper.catches()):
            raise
        raise mapper.classify(doing, exc) from exc


def _errno_of(exc: BaseException) -> int | None:
    code = getattr(exc, "errno", None)
    if isinstance(code, int):
        return abs(code)
    return None


# ---------------------------------------------------------------- observe cache


class ObserveCache(Generic[T]):
    """A value read from the system, kept while the system's version token is unchanged.

    The contract every caching backend keeps:

    * what is cached is stamped with a *version token* that every writer to the
      system changes (the nftables generation id, a count of netlink
      notifications, a resourceVersion), and reading the token is much cheaper
      than reading the value;
    * a read that saw the token change while it read is thrown away and done
      again (at most ``attempts`` times, then :class:`~k3snet.errors.BackendError`);
    * the cache is dropped after any failed apply (:meth:`invalidate`), and
      ``refresh=True`` bypasses it;
    * a token of ``None`` says "cannot tell" (as :meth:`BackendBase.change_token`'s
      default does): nothing read at it is ever given back, every read loads.
    """

    def __init__(self, *, attempts: int = 3) -> None:
        self.attempts = attempts
        self._token: Hashable = None
        self._value: T | None = None

    @property
    def value(self) -> T | None:
        """The cached value, whatever its token (``None`` when empty)."""
        return self._value

    def invalidate(self) -> None:
        """Forget the value: the next read loads it again."""
        self._value = None
        self._token = None

    def put(self, token: Hashable, value: T) -> None:
        """Keep ``value`` as read at version ``token`` (at ``None``, a version that cannot
        be told, it is not kept)."""
        self._token = token
        self._value = None if token is None else value

    def get(self, token: Hashable) -> T | None:
        """The value if it was read at version ``token`` (else ``None``; always ``None``
        for the token ``None``: a cache keyed by "cannot tell" gave the first read back
        for ever)."""
        if token is not None and self._value is not None and self._token == token:
            return self._value
        return None

    def read(self, token: Callable[[], Hashable], load: Callable[[], T], *,
             refresh: bool = False, what: str = "the system") -> T:
        """The cached value if ``token()`` is unchanged, else a stable fresh ``load()``."""
        before = token()
        if not refresh:
            cached = self.get(before)
            if cached is not None:
                return cached
        for _ in range(self.attempts):
            value = load()
            after = token()
            if after == before:
                self.put(after, value)
                return value
            before = after
        self.invalidate()
        raise BackendError(f"{what} kept changing while k3snet read it "
                           f"({self.attempts} attempts); try again")


FRESH_READ_AGE = 5.0
"""Seconds for which what a backend's ``observe`` read serves the ``check`` or ``apply``
right after it (:class:`FreshRead`): a pass plans in milliseconds."""

_monotonic = time.monotonic  # FreshRead's clock (a test moves it)


class FreshRead(Generic[T]):
    """What a backend's ``observe`` read, handed once to the ``check`` or ``apply`` right
    after it, in place of reading all of it again.

    For a system whose every write names the version it was read at, so that a change
    since makes the write fail with nothing done (the Kubernetes API's
    ``resourceVersion`` and ``uid`` preconditions, a ``POST`` refused for a taken
    name): reading again before writing only narrows that window, and cost a second
    read of everything, every Calico IPPool, FelixConfiguration and Node's metadata,
    at each agent pass that changed something. The contract:

    * ``observe`` calls :meth:`drop` before it reads (a failed read leaves nothing
      behind) and :meth:`put` after;
    * ``check`` and ``apply`` call :meth:`take`: the value, at most once and when put
      less than ``age`` seconds ago, else ``None`` (read again);
    * a backend whose writes carry no such precondition must not use it.
    """

    def __init__(self, *, age: float = FRESH_READ_AGE) -> None:
        self.age = age
        self._kept: tuple[float, T] | None = None

    def drop(self) -> None:
        """Forget what was put."""
        self._kept = None

    def put(self, value: T) -> None:
        """Keep ``value``, read now."""
        self._kept = (_monotonic(), value)

    def take(self) -> T | None:
        """What was put, if less than :attr:`age` seconds ago (then forgotten), or ``None``."""
        kept, self._kept = self._kept, None
        if kept is not None and _monotonic() - kept[0] < self.age:
            return kept[1]
        return None


# ---------------------------------------------------------------- warnings in the log


class _Said(str):
    """The format string of :class:`WarningLog`'s records, by which
    :meth:`WarningLog.is_record` knows them (no extra field in the agent's JSON lines)."""

    __slots__ = ()


_SAID, _SAID_BY = _Said("%s"), _Said("%s: %s")


class WarningLog:
    """Log warnings once while each lasts: :meth:`say` is given what is worth saying
    now (a backend's ``warnings``), as often as it is read, and logs at ``WARNING``
    only those it was not given the last time: a warning that stays is logged once,
    not on every agent pass; one that changed (another interface named), or went
    away and came back, is logged again.

    ``logger``: a :class:`logging.Logger` or its name; ``who``: the backend's name,
    put before each warning (``iptables: ...``) unless the warning starts with it.
    :meth:`is_record` tells its records from others' (``k3snet plan``, which prints
    the warnings as ``!! warning:`` lines, holds them back from its stderr).
    """

    @staticmethod
    def is_record(record: logging.LogRecord) -> bool:
        """Whether ``record`` is a warning some :class:`WarningLog` logged."""
        return isinstance(record.msg, _Said)

    def __init__(self, logger: logging.Logger | str, who: str = "") -> None:
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.who = who
        self._said: frozenset[str] = frozenset()
        # The backend after a read in its worker thread, the agent after its pass.
        self._lock = threading.Lock()

    @property
    def said(self) -> frozenset[str]:
        """The warnings given last: each was logged when it first came."""
        return self._said

    def say(self, warnings: Iterable[object]) -> tuple[str, ...]:
        """Log those of ``warnings`` (each as ``str``) not given last time; returns them."""
        now = tuple(dict.fromkeys(str(w) for w in warnings))
        with self._lock:
            new = tuple(w for w in now if w not in self._said)
            self._said = frozenset(now)
        who = self.who
        for warning in new:
            if who and not warning.startswith(f"{who}:"):
                self.logger.warning(_SAID_BY, who, warning)
            else:
                self.logger.warning(_SAID, warning)
        return new


def backend_warnings(backend: object) -> tuple[str, ...]:
    """``backend``'s optional ``warnings`` as texts (``()`` without any).

    The attribute or property the backend protocol names; tolerated besides: a method
    (``def warnings(self)``, called: the group iterated the bound method, a
    ``TypeError`` ending ``k3snet plan`` after its read) and one text (one warning,
    not one per character). Anything else that is no iterable is a
    :class:`~k3snet.errors.BackendError` naming the backend.
    """
    found = getattr(backend, "warnings", None)
    if callable(found) and not isinstance(found, type):
        found = found()
    if not found:
        return ()
    if isinstance(found, str):
        return (found,)
    if not isinstance(found, Iterable):
        name = getattr(backend, "name", "") or type(backend).__name__
        raise BackendError(
            f"{name}.warnings is {type(found).__name__} {found!r}, not a sequence of texts "
            "(a property or attribute: docs/custom-backend.md)")
    return tuple(str(w) for w in found)


def _shown(value: object) -> str:
    """``repr(value)`` for a message, or its type and size when Python writes no digits of
    it (an int of more than 4300 digits: ``ValueError``, raised out of the message)."""
    try:
        return repr(value)
    except ValueError:
        size = value.bit_length() if isinstance(value, int) else 0
        return f"of {size} bits" if size else "that cannot be written"


def _declared(backend: object, attribute: str) -> object:
    """``backend``'s optional ``attribute`` (``None`` without one). A property that
    raises is a :class:`~k3snet.errors.BackendError` naming the backend: ``getattr``'s
    default took one raising ``AttributeError`` for no declaration at all, and anything
    else it raised failed the agent's pass."""
    error: Exception
    try:
        return getattr(backend, attribute)
    except AttributeError as exc:
        try:
            inspect.getattr_static(backend, attribute)
        except AttributeError:
            return None  # not declared
        error = exc
    except Exception as exc:  # noqa: BLE001 - a third party's property: said, whatever it raised
        error = exc
    name = getattr(backend, "name", "") or type(backend).__name__
    raise BackendError(f"{name}.{attribute} cannot be read: {type(error).__name__}: "
                       f"{error}") from error


def longest_step(backend: object) -> float | None:
    """``backend``'s optional ``longest_step``: the seconds the longest bounded step of its
    apply may take (a tool run killed after its timeout: the iptables backend's
    ``timeout``), which the agent holds, with the steps of its undo (:func:`undo_steps`),
    against the pod's grace period (:func:`~k3snet.agent.grace_shortfalls`); ``None``
    without one.

    Anything but a finite number of seconds above 0 (a flag, text, NaN, infinity), or a
    property that raises, is a :class:`~k3snet.errors.BackendError` naming the backend,
    as a ``warnings`` that is no sequence is (:func:`backend_warnings`).
    """
    found = _declared(backend, "longest_step")
    if found is None:
        return None
    seconds = math.nan
    if isinstance(found, int | float) and not isinstance(found, bool):
        try:
            seconds = float(found)
        except OverflowError:  # an int beyond any float
            seconds = math.inf
    if not 0 < seconds < math.inf:  # (NaN too)
        name = getattr(backend, "name", "") or type(backend).__name__
        raise BackendError(
            f"{name}.longest_step is {type(found).__name__} {_shown(found)}, not a finite "
            "number of seconds above 0 (an attribute or property: docs/custom-backend.md)")
    return seconds


def undo_steps(backend: object) -> int:
    """``backend``'s optional ``undo_steps``: how many bounded steps, each at most its
    :func:`longest_step`, may follow the longest one when that one is killed at its bound
    (the iptables backend's read-back of what the killed run committed, then one
    ``iptables-restore`` run for each family taken back); 1 without one (an undo as long
    as the step). The agent holds the step and these against the pod's grace period
    (:func:`~k3snet.agent.grace_shortfalls`).

    Anything but a whole number of 1 or more (a flag, a float, text), or a property that
    raises, is a :class:`~k3snet.errors.BackendError` naming the backend, as a
    ``longest_step`` that is no number of seconds is.
    """
    found = _declared(backend, "undo_steps")
    if found is None:
        return 1
    if isinstance(found, bool) or not isinstance(found, int) or found < 1:
        name = getattr(backend, "name", "") or type(backend).__name__
        raise BackendError(
            f"{name}.undo_steps is {type(found).__name__} {_shown(found)}, not a whole number "
            "of steps of 1 or more (an attribute or property: docs/custom-backend.md)")
    return found


# ---------------------------------------------------------------- the base class


class BackendBase:
    """A base for backends: lifecycle, fault hook and plan-fit checks.

    Subclasses set ``name`` and ``capabilities`` (a class attribute or a
    property) and write ``observe``, ``check``
    and ``apply``; they call ``super().__init__()`` and, if they hold resources,
    override :meth:`close` (calling ``super().close()``). Nothing here touches
    the system.
    """

    name: str = ""
    option_checks: ClassVar[OptionChecks] = {}
    """The checks of option values :meth:`check_options` runs (see :data:`OptionChecks`)."""

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        """``(option, why)`` for each of ``options`` the constructor would refuse for its
        value, found without building anything: no socket, file, kernel or API
        server is touched (``k3snet validate`` runs it on a spec's ``backends:``).
        Runs :attr:`option_checks`; a backend with checks across options extends it."""
        return run_option_checks(cls.option_checks, options)

    @classmethod
    def declared_kinds(cls, options: Mapping[str, Any]) -> frozenset[str] | None:
        """The kinds a backend built with ``options`` would manage, found without building
        it (``k3snet validate`` runs it on a spec's ``backends:`` to find two backends
        managing one kind, as plan, apply and the agent refuse); ``None``: not known
        without building it. By default the class attribute ``capabilities`` when it is a
        set of kinds (a property: ``None``); a backend whose kinds are an option's
        (the memory backend's ``capabilities``) overrides it. It builds nothing, and an
        option value it cannot read is ``None`` (:meth:`check_options` says what is wrong).
        """
        kinds = getattr(cls, "capabilities", None)
        if isinstance(kinds, frozenset | set) and all(isinstance(k, str) for k in kinds):
            return frozenset(kinds)
        return None

    def __init__(self) -> None:
        self.faults = FaultHook()
        self.closed = False

    def close(self) -> None:
        """Release what the backend holds (idempotent)."""
        self.closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def change_token(self) -> Hashable | None:
        """A value that changes whenever what :meth:`observe` reports may have changed.

        Much cheaper to read than an observe (the nftables generation id, a
        count of netlink notifications), so the agent can look for drift every
        fraction of a second and observe only when something moved. ``None``
        (this default): the backend cannot tell; the agent's interval covers it.
        """
        return None

    @property
    def warning_log(self) -> WarningLog:
        """This backend's :class:`WarningLog` (made on first use), which
        :meth:`log_warnings` and the agent's
        :meth:`~k3snet.backends.group.BackendGroup.log_warnings` both give its
        warnings. Its logger is the backend's module's when it is one of k3snet's,
        else ``k3snet.backends.NAME`` (the agent's log shows ``k3snet`` loggers alone)."""
        said: WarningLog | None = self.__dict__.get("_warning_log")
        if said is None:
            module = type(self).__module__
            said = WarningLog(module if module.startswith("k3snet.")
                              else f"k3snet.backends.{self.name or type(self).__name__}",
                              self.name)
            self._warning_log = said
        return said

    def log_warnings(self) -> tuple[str, ...]:
        """Log this backend's ``warnings`` (its attribute or property, when it has one)
        through its own :class:`WarningLog`: each once while it lasts. Call it after a
        read that found them (the nftables, iptables and Calico backends do, for a
        library user's log); the agent calls it after every pass
        (:meth:`~k3snet.backends.group.BackendGroup.log_warnings`), and, the log
        being the backend's own (:attr:`warning_log`), a warning the backend logged
        already is not logged again. Returns the warnings logged now."""
        return self.warning_log.say(backend_warnings(self))

    def ensure_capable(self, plan: Plan) -> None:
        """Refuse a plan with kinds this backend does not manage (PlanError)."""
        ensure_capable(self, plan)  # type: ignore[arg-type]

    def ensure_fits(self, plan: Plan, observed: State) -> None:
        """Refuse a plan that does not fit ``observed`` (PlanError listing every reason)."""
        ensure_fits(self, plan, observed)
