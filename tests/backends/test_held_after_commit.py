"""Signals around a commit: :func:`~k3snet.backends.kit.held_after_commit`,
:func:`~k3snet.backends.kit.committing`, and the namespace runner's wait for its thread.

A signal's handler runs in the main thread; a backend may commit in a namespace's worker
thread. Before a commit the signal acts at once and no commit begins after it; after the
commit it waits until the result is kept (a group's parts to undo), then acts.
"""

from __future__ import annotations

import contextvars
import functools
import signal
import threading
from collections.abc import Callable

import pytest

from k3snet import MasqueradeRule
from k3snet.backends.kit import Compensation, committing, held_after_commit, undo_running
from k3snet.backends.netns import NetnsRunner
from k3snet.lab.netns import temporary_netns
from k3snet.planner import Change

A = MasqueradeRule("10.42.0.0/16")


def _in_thread(fn: Callable[[], object], *, own: bool = False) -> BaseException | None:
    """What ``fn`` raised in another thread: a namespace's worker, running it in a copy
    of the caller's context as :meth:`NetnsRunner.call` does; ``own``: in a context of
    its own (another apply's thread, an embedding program's pool)."""
    raised: list[BaseException] = []
    if not own:
        fn = functools.partial(contextvars.copy_context().run, fn)

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            raised.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    return raised[0] if raised else None


def test_a_signal_after_the_commit_waits_for_the_end_of_the_block(ctrl_c: None) -> None:
    kept: list[str] = []

    def apply() -> None:
        with held_after_commit():
            assert _in_thread(committing) is None  # the commit, in a worker thread
            signal.raise_signal(signal.SIGINT)
            kept.append("the result")  # reached: the signal waits

    with pytest.raises(KeyboardInterrupt):
        apply()
    assert kept == ["the result"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back


def test_another_thread_s_commit_marks_no_block_of_the_main_thread(ctrl_c: None) -> None:
    """An unrelated apply's commit, in a thread of its own (an embedding program's pool,
    the agent's), marked the main thread's innermost block: a Ctrl-C before the main
    thread's own commit waited for the end of its block instead of acting at once."""
    reached: list[str] = []

    def apply() -> None:
        with held_after_commit():
            assert _in_thread(committing, own=True) is None  # another apply's commit
            signal.raise_signal(signal.SIGINT)
            reached.append("on, as if committed")  # never reached: nothing was committed

    with pytest.raises(KeyboardInterrupt):
        apply()
    assert reached == []


def test_a_signal_stopping_the_main_thread_s_block_stops_no_other_thread_s_commit(
        ctrl_c: None) -> None:
    later: list[BaseException | None] = []
    change = Change.add(A)

    def other() -> None:
        committing()
        Compensation("test").record(change)

    def apply() -> None:
        with held_after_commit():
            try:
                signal.raise_signal(signal.SIGINT)
            finally:
                later.append(_in_thread(other, own=True))

    with pytest.raises(KeyboardInterrupt):
        apply()
    assert later == [None]


def test_another_thread_s_undo_leaves_the_main_thread_s_commit_marked(ctrl_c: None) -> None:
    """An undo running in another thread (another apply's, in an embedding program's
    pool) made the main thread's commit mark nothing: a signal after it acted at once,
    with the change made and never among those to undo."""
    undoing, done = threading.Event(), threading.Event()
    kept: list[str] = []

    def other_undo() -> None:
        with undo_running():
            undoing.set()
            done.wait()

    other = threading.Thread(target=other_undo)
    other.start()
    try:
        assert undoing.wait(timeout=60)

        def apply() -> None:
            with held_after_commit():
                committing()
                signal.raise_signal(signal.SIGINT)
                kept.append("the result")  # reached: the signal waits

        with pytest.raises(KeyboardInterrupt):
            apply()
    finally:
        done.set()
        other.join()
    assert kept == ["the result"]


def test_a_signal_before_the_commit_acts_at_once_and_no_commit_begins_after_it(
        ctrl_c: None) -> None:
    later: list[BaseException | None] = []

    def apply() -> None:
        with held_after_commit():
            try:
                signal.raise_signal(signal.SIGINT)
                later.append(None)  # never reached
            finally:
                # The worker thread, which no signal's exception reaches, comes to its
                # commit after the caller was stopped: refused, nothing is committed.
                later.append(_in_thread(committing))

    with pytest.raises(KeyboardInterrupt):
        apply()
    assert len(later) == 1
    assert isinstance(later[0], KeyboardInterrupt)


def test_an_inner_block_acts_at_its_own_end_and_the_outer_holds_after_its_own_commit(
        ctrl_c: None) -> None:
    """A group's block around a member's apply within ``k3snet apply``'s: the signal
    after the member's commit acts as the member's block ends (the group undoes every
    part); the outer block holds only once it is marked itself (every part made)."""
    steps: list[str] = []

    def member() -> None:
        with held_after_commit():
            committing()
            signal.raise_signal(signal.SIGINT)
            steps.append("member's result kept")

    def command() -> None:
        with held_after_commit():
            with pytest.raises(KeyboardInterrupt):
                member()
            steps.append("the group undoes")
            committing()
            signal.raise_signal(signal.SIGINT)
            steps.append("what was made is noted")

    with pytest.raises(KeyboardInterrupt):
        command()
    assert steps == ["member's result kept", "the group undoes", "what was made is noted"]


def test_an_undo_s_commit_holds_nothing(ctrl_c: None) -> None:
    """The group's undo commits too: a second Ctrl-C must still stop it at once."""
    def undo() -> None:
        with held_after_commit(), undo_running():
            committing()
            signal.raise_signal(signal.SIGINT)
            pytest.fail("the signal waited")

    with pytest.raises(KeyboardInterrupt):
        undo()


def test_a_worker_threads_steps_end_and_are_taken_back_once_the_caller_was_stopped(
        ctrl_c: None) -> None:
    """A backend of several steps (netlink's batches, iptables' tables) in a namespace's
    thread went on with its steps after Ctrl-C had stopped its caller, and made them all:
    its next step's record now raises, and what it made is taken back."""
    undone: list[str] = []
    raised: list[BaseException | None] = []
    change = Change.add(A)

    def steps() -> None:
        undo = Compensation("test")
        with undo.guarding():
            undo.record(change, lambda: undone.append("first"))
            undo.record(change, lambda: undone.append("second"))

    def apply() -> None:
        with held_after_commit():
            try:
                signal.raise_signal(signal.SIGINT)
            finally:
                raised.append(_in_thread(steps))

    with pytest.raises(KeyboardInterrupt):
        apply()
    assert isinstance(raised[0], KeyboardInterrupt)
    assert undone == ["first"]  # the first step recorded raised: no second step


@pytest.mark.kernel
@pytest.mark.usefixtures("require_root")
def test_the_namespace_runner_waits_for_its_worker_before_passing_an_interruption_on(
        ctrl_c: None) -> None:
    """Ctrl-C while the namespace's thread runs a job: the call raised at once while the
    thread went on (an nftables commit made after the group had undone the rest, the
    namespace's lock let go meanwhile). It now waits for the job to end first."""
    handled = threading.Event()

    def handler(signum: int, frame: object) -> None:
        handled.set()
        raise KeyboardInterrupt

    ended: list[str] = []

    def job() -> None:
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        handled.wait(60)  # a bound: the handler runs as the main thread's wait is cut
        ended.append("job")

    signal.signal(signal.SIGINT, handler)
    with temporary_netns("runner") as ns, NetnsRunner(ns) as runner:
        with pytest.raises(KeyboardInterrupt):
            runner.call(job)
        assert ended == ["job"]


def test_a_handler_that_returns_stops_nothing(ctrl_c: None) -> None:
    """The agent's SIGTERM handler sets a flag and returns (the pass ends first): the
    commit after it goes on, in the main thread or a worker."""
    came: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: came.append(signum))
    with held_after_commit():
        signal.raise_signal(signal.SIGINT)
        assert came == [signal.SIGINT]
        assert _in_thread(committing) is None


def test_a_second_signal_after_the_commit_acts_at_once_saying_the_change_may_stay(
        ctrl_c: None) -> None:
    """Ctrl-C twice after the commit: the second was held too (as was every further one),
    so a block whose rest hung (a namespace's thread stuck after its commit) ended only
    by SIGKILL. The second now acts at once, its message saying the change may stay."""
    went_on: list[str] = []

    def apply() -> None:
        with held_after_commit():
            committing()
            signal.raise_signal(signal.SIGINT)  # held
            went_on.append("after the first")
            signal.raise_signal(signal.SIGINT)  # acts
            went_on.append("after the second")

    with pytest.raises(KeyboardInterrupt) as raised:
        apply()
    assert went_on == ["after the first"]
    assert any("may stay, not taken back" in note
               for note in getattr(raised.value, "__notes__", ()))


def test_after_a_brief_commit_the_second_signal_waits_too_and_a_third_acts_at_once(
        ctrl_c: None) -> None:
    """A commit that cannot hang (libiptc's, the xtables lock held): a second Ctrl-C cut
    the block between the commit and its note (the undo then read the table as it was
    before: ROLLBACK FAILED). It waits for the block's end as the first does, the first
    raised there; a third still acts at once."""
    went_on: list[str] = []

    def apply(signals: int) -> None:
        with held_after_commit():
            committing(brief=True)
            for n in range(signals):
                signal.raise_signal(signal.SIGINT)
                went_on.append(f"after {n + 1}")

    with pytest.raises(KeyboardInterrupt) as raised:
        apply(2)
    assert went_on == ["after 1", "after 2"]
    assert not getattr(raised.value, "__notes__", ())
    went_on.clear()
    with pytest.raises(KeyboardInterrupt) as raised:
        apply(3)
    assert went_on == ["after 1", "after 2"]
    assert any("may stay, not taken back" in note
               for note in getattr(raised.value, "__notes__", ()))


@pytest.mark.kernel
@pytest.mark.usefixtures("require_root")
def test_a_second_ctrl_c_ends_the_wait_for_a_namespace_s_thread_stuck_after_its_commit(
        ctrl_c: None) -> None:
    """The namespace's thread commits, then hangs (a kernel call that never returns): the
    first Ctrl-C waits for the block's end, the second ended nothing (the wait for the
    thread held it too); only SIGKILL ended k3snet. It now ends the call."""
    handled = threading.Semaphore(0)
    stuck = threading.Event()
    ended: list[str] = []

    def handler(signum: int, frame: object) -> None:
        handled.release()
        raise KeyboardInterrupt

    def job() -> None:
        committing()
        for _ in range(2):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
            handled.acquire(timeout=60)  # a bound: the handler runs in the main thread
        stuck.wait(60)  # hung, until the test lets it go (the bound: the test never hangs)
        ended.append("job")

    signal.signal(signal.SIGINT, handler)
    with temporary_netns("runner") as ns, NetnsRunner(ns) as runner:
        def apply() -> None:
            with held_after_commit():
                runner.call(job)

        try:
            with pytest.raises(KeyboardInterrupt):
                apply()
            assert ended == []  # ended by the second Ctrl-C, the thread still stuck
        finally:
            stuck.set()


@pytest.mark.kernel
@pytest.mark.usefixtures("require_root")
def test_a_signal_the_worker_thread_took_is_handled_while_the_worker_still_runs(
        ctrl_c: None) -> None:
    """The kernel gives a process's signal to any thread not blocking it, and the main
    thread can also take one just before it sleeps on the worker's answer: either way
    only a flag is set, nothing wakes the main thread. Its handler ran once the worker
    ended (never, with a hung kernel call); the landing CI's second Ctrl-C was lost so,
    the test above waited 120 s."""
    handled = threading.Event()
    seen: list[bool] = []

    def handler(signum: int, frame: object) -> None:
        handled.set()
        raise KeyboardInterrupt

    def job() -> None:
        signal.raise_signal(signal.SIGINT)  # its C handler runs in this thread
        seen.append(handled.wait(10))  # a bound: the test never hangs

    signal.signal(signal.SIGINT, handler)
    with (temporary_netns("runner") as ns, NetnsRunner(ns) as runner,
          pytest.raises(KeyboardInterrupt)):
        runner.call(job)
    assert seen == [True]


def test_a_dry_run_destroy_marks_no_commit_so_a_signal_after_it_acts_at_once(
        ctrl_c: None) -> None:
    # `k3snet destroy` asked to confirm runs the removal as a dry run first, inside the
    # command's block: marked committed by it, a Ctrl-C landing before anything was
    # removed waited until every backend's removal was made.
    from k3snet.backends.memory import MemoryBackend  # noqa: PLC0415 - this test only
    from k3snet.converge import destroy_each  # noqa: PLC0415

    reached: list[str] = []

    def destroy_confirmed() -> None:
        with held_after_commit():
            destroy_each([MemoryBackend()], dry_run=True)
            signal.raise_signal(signal.SIGINT)
            reached.append("after the signal")  # never reached: nothing was committed

    with pytest.raises(KeyboardInterrupt):
        destroy_confirmed()
    assert reached == []
