"""The commands an undo runs outlive the SIGTERM and SIGHUP that let the undo run on.

The CLI lets an undo run on through SIGTERM (bounded) and SIGHUP, with a handler: a
child does not inherit a handler (``exec`` sets it back to the default), only an ignored
or blocked signal. systemd stopping a unit, logind ending a session, signal every
process of the cgroup: the ``iptables-restore`` an undo ran after Ctrl-C or SIGHUP died
by the SIGTERM, and that undo step failed (before the SIGTERM bound, SIGTERM was
ignored there, and the child inherited that). The signal here is the tool's own
(``kill -TERM $$``): what reaches it from the cgroup-wide one, with no timing.

The tools are stand-ins on ``PATH`` (no network is touched).
"""

from __future__ import annotations

import _thread
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from k3snet import _deadline
from k3snet.backends import kit
from k3snet.backends.iptables.driver import Processes
from k3snet.backends.kit import undo_running, undo_spares_children
from k3snet.backends.nftables.kernel import list_in_child
from k3snet.cli import sigterm_undoes
from k3snet.errors import BackendError

# Signals itself as the cgroup's SIGTERM and SIGHUP would, then does its work.
_SIGNALLED = textwrap.dedent("""\
    #!/bin/sh
    kill -TERM $$
    kill -HUP $$
    cat > /dev/null
    echo '# survived'
""")
_SELF_SIGNALLED = "kill -TERM $$; kill -HUP $$; echo survived"


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    for name in ("iptables-nft-restore", "iptables-nft-save"):
        tool = directory / name
        tool.write_text(_SIGNALLED)
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("K3SNET_LOCK_DIR", str(tmp_path / "locks"))
    for name in ("iptables-nft-restore", "iptables-nft-save"):
        assert shutil.which(name) == str(directory / name)  # never the real tool
    return directory


def _blocked_here() -> set[int]:
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, ())) & {signal.SIGTERM, signal.SIGHUP}


_RUN_ALONE = "K3SNET_TEST_UNDO_CHILDREN_ALONE"  # set in the pytest of its own


def _in_one_thread(request: pytest.FixtureRequest) -> bool:
    """True where this process runs one thread, as the CLI applying through iptables
    does: :func:`undo_spares_children` ignores SIGTERM and SIGHUP for the tools then,
    and only blocks them beside another thread. A pytest-xdist worker runs execnet's
    threads: there the test has run in a pytest of its own (:func:`_alone`), where it
    must have passed, and this returns False (nothing more to do here)."""
    if len(os.listdir("/proc/self/task")) == 1:  # (the kernel's count: execnet's too)
        return True
    if os.environ.get(_RUN_ALONE):
        assert _threads_ended(), "a pytest of its own runs threads: no rerun"
        return True
    passed, output = _alone(request)
    assert request.node.nodeid in passed, output
    return False


def _threads_ended(bound: float = 10.0) -> bool:
    """Whether this process is down to one thread within ``bound`` seconds: a thread an
    earlier test joined has run its last Python code, but the kernel may count it a while
    longer (it failed a landing CI: the pytest of its own saw two threads)."""
    deadline = time.monotonic() + bound
    while len(os.listdir("/proc/self/task")) > 1:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


_ALONE: dict[str, tuple[frozenset[str], tuple[str, str]]] = {}
""":func:`_alone`'s run of each module, by the module's node id."""


def _alone(request: pytest.FixtureRequest) -> tuple[frozenset[str], tuple[str, str]]:
    """This module's tests run in a pytest of its own (one thread), once for all of them:
    the node ids of those that passed, and the end of its output. A pytest started for
    each test was ten starts of a second or more. Without the plugins these tests use
    none of: kmock's imports aiohttp, most of the start's imports."""
    module = request.node.nodeid.partition("::")[0]
    if module not in _ALONE:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:xdist",
             "-p", "no:cacheprovider", "-p", "no:kmock", "-p", "no:benchmark", module],
            cwd=request.config.rootpath, capture_output=True, text=True, timeout=300,
            # (its session's end would judge the namespaces the other workers' tests hold now)
            check=False, env={**os.environ, _RUN_ALONE: "1", "K3SNET_SKIP_NETNS_CHECK": "1"})
        passed = frozenset(line.split()[1] for line in done.stdout.splitlines()
                           if line.startswith("PASSED "))
        _ALONE[module] = (passed, (done.stdout[-3000:], done.stderr[-3000:]))
    return _ALONE[module]


def test_a_command_an_undo_runs_outlives_sigterm_and_sighup() -> None:
    with undo_running():
        done = Processes(None).run(["sh", "-c", _SELF_SIGNALLED], input_text="")
    assert (done.returncode, done.stdout) == (0, "survived\n")
    assert not _blocked_here()  # k3snet itself takes them as before


def test_with_another_thread_running_no_signal_is_ignored_they_are_blocked() -> None:
    """A signal ignored for the process while a thread not blocking it may take it is
    lost (the agent's SIGTERM from the kubelet, its threads serving health and the
    Lease): the tool gets them blocked then, and k3snet's handlers stay as they are."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP)}
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        with undo_running():
            with undo_spares_children():
                seen = {signum: signal.getsignal(signum) for signum in handlers}
            done = Processes(None).run(["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"])
    finally:
        stop.set()
        other.join()
    assert seen == handlers
    masks = dict(line.split(":\t") for line in done.stdout.splitlines())
    spared = (1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGHUP - 1))
    assert int(masks["SigBlk"], 16) & spared == spared


def test_a_thread_threading_does_not_count_gets_them_blocked_not_ignored() -> None:
    """A thread ``threading`` does not see (a C library's, execnet's under pytest-xdist,
    one of ``_thread``): it may take a signal, so none is ignored for the process."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP)}
    started, stop = _thread.allocate_lock(), _thread.allocate_lock()
    started.acquire()
    stop.acquire()

    def unseen() -> None:
        started.release()
        stop.acquire()

    tasks = len(os.listdir("/proc/self/task"))
    _thread.start_new_thread(unseen, ())
    try:
        started.acquire()  # (it runs)
        with undo_running(), undo_spares_children():
            seen = {signum: signal.getsignal(signum) for signum in handlers}
            assert set(signal.pthread_sigmask(signal.SIG_BLOCK, ())) >= set(handlers)
    finally:
        stop.release()
        while len(os.listdir("/proc/self/task")) > tasks:  # gone before the next test
            time.sleep(0.01)
    assert seen == handlers


def test_without_proc_self_task_threading_s_count_is_taken(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``/proc`` in the container, or one that cannot be read: not an error."""
    def unreadable(path: str) -> list[str]:
        raise PermissionError(13, "Permission denied", path)

    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        monkeypatch.setattr(os, "listdir", unreadable)  # (kit reads it there)
        assert kit._one_thread() is False
        with undo_running(), undo_spares_children():
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN
    finally:
        monkeypatch.undo()
        stop.set()
        other.join()


def test_k3snet_s_handlers_are_back_and_a_signal_within_reaches_them(
        request: pytest.FixtureRequest) -> None:
    if not _in_one_thread(request):
        return
    came: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: came.append(signum))
                for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        handlers = {signum: signal.getsignal(signum) for signum in previous}
        with undo_running(), undo_spares_children():
            os.kill(os.getpid(), signal.SIGTERM)  # while the tool would start
            assert came == []
        assert came == [signal.SIGTERM]  # not lost: blocked, then taken
        assert {signum: signal.getsignal(signum) for signum in previous} == handlers
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _signalled_meanwhile(within: Callable[[], object]) -> list[int]:
    """The signals k3snet's handlers took: a SIGTERM sent within ``within``, run in an
    undo's :func:`undo_spares_children` block."""
    came: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: came.append(signum))
                for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        handlers = {signum: signal.getsignal(signum) for signum in previous}
        with undo_running(), undo_spares_children():
            within()
            assert came == []
        assert {signum: signal.getsignal(signum) for signum in previous} == handlers
        assert not _blocked_here()
        return came
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_a_signal_pending_as_an_inner_block_ignores_it_reaches_k3snet_once(
        request: pytest.FixtureRequest) -> None:
    """Setting SIGTERM ignored discards one pending (POSIX): a nested block did."""
    if not _in_one_thread(request):
        return

    def nested() -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # blocked, pending
        with undo_spares_children():
            pass

    assert _signalled_meanwhile(nested) == [signal.SIGTERM]


def test_a_signal_within_an_inner_block_reaches_k3snet_once(
        request: pytest.FixtureRequest) -> None:
    """The inner block ends by setting SIGTERM back to the outer's ignored: that discards
    one pending (POSIX), which came within the inner block, after its own check."""
    if not _in_one_thread(request):
        return

    def nested() -> None:
        with undo_spares_children():
            os.kill(os.getpid(), signal.SIGTERM)  # blocked, pending

    assert _signalled_meanwhile(nested) == [signal.SIGTERM]


def test_a_signal_within_nested_blocks_and_before_them_reaches_k3snet_once(
        request: pytest.FixtureRequest) -> None:
    """Sent again at the inner end and then pending at the outer's: taken once, not twice."""
    if not _in_one_thread(request):
        return

    def nested() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        with undo_spares_children():
            os.kill(os.getpid(), signal.SIGTERM)
            with undo_spares_children():
                os.kill(os.getpid(), signal.SIGTERM)

    assert _signalled_meanwhile(nested) == [signal.SIGTERM]


def test_a_signal_that_came_as_the_block_began_reaches_k3snet_once(
        request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """One that came once SIGTERM was blocked, before it was ignored."""
    if not _in_one_thread(request):
        return
    counted = kit._one_thread

    def signalled() -> bool:
        os.kill(os.getpid(), signal.SIGTERM)  # blocked, pending
        return counted()

    monkeypatch.setattr(kit, "_one_thread", signalled)
    assert _signalled_meanwhile(lambda: None) == [signal.SIGTERM]


def test_a_command_outside_an_undo_is_stopped_by_sigterm_as_before() -> None:
    done = Processes(None).run(["sh", "-c", _SELF_SIGNALLED])
    assert done.returncode == -signal.SIGTERM


def test_an_undo_s_iptables_restore_outlives_sigterm_and_sighup(
        tools: Path, request: pytest.FixtureRequest) -> None:
    if not _in_one_thread(request):  # (the stand-in is a dash script: it unblocks them)
        return
    with undo_running():
        Processes(None).commit_ops(4, "nft", "nat", [])  # no ops: nothing started
        run = Processes(None).restore(4, "nft")
        run.table("nat")
        run.commit()
        run.wait()
    assert not _blocked_here()
    run = Processes(None).restore(4, "nft")  # outside an undo, killed as before
    run.table("nat")
    run.commit()
    with pytest.raises(BackendError):
        run.wait()


def test_an_undo_s_iptables_save_outlives_sigterm_and_sighup(
        tools: Path, request: pytest.FixtureRequest) -> None:
    if not _in_one_thread(request):  # (the stand-in is a dash script: it unblocks them)
        return
    with undo_running():
        assert Processes(None).start_save(4, "nft").text() == "# survived\n"
        assert Processes(None).save(4, "nft") == "# survived\n"
    assert not _blocked_here()
    with pytest.raises(BackendError):
        Processes(None).start_save(4, "nft").text()


def test_an_undo_s_nft_listing_outlives_sigterm_and_sighup(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """The ``nft`` an nftables listing runs while libnftables' thread is stuck."""
    if not _in_one_thread(request):  # (the stand-in is a dash script: it unblocks them)
        return
    nft = tmp_path / "nft"
    nft.write_text(_SIGNALLED.replace("'# survived'", "'{\"nftables\": [{\"table\": {}}]}'"))
    nft.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert shutil.which("nft") == str(nft)  # never the real tool
    deadline = time.monotonic() + 300  # a bound, not a timing
    with undo_running():
        assert list_in_child(deadline, "table", family="ip", name="k3snet") == [{"table": {}}]
    assert not _blocked_here()
    with pytest.raises(BackendError):  # outside an undo, killed as before
        list_in_child(deadline, "table", family="ip", name="k3snet")


def test_a_command_past_its_timeout_is_not_waited_for_past_its_kill_by_a_child_it_left(
        tmp_path: Path) -> None:
    """As ``subprocess.run``: the command killed, k3snet waits for it, not for the output
    pipes a child of its still holds (a ``modprobe`` ``iptables`` started)."""
    left = tmp_path / "left"
    script = f"sleep 300 & echo $! > {left}; exec sleep 300"
    try:
        with pytest.raises(BackendError, match="timed out"):
            Processes(None).run(["sh", "-c", script], timeout=0.5)  # a bound, not a timing
        os.kill(int(left.read_text()), 0)  # still there: nobody waited for it
    finally:
        if left.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(left.read_text()), signal.SIGKILL)


@pytest.fixture
def main_thread() -> None:
    """The CLI's handlers are set in the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("the tests run outside the main thread: a signal would end the run")


def _apply_stopped_by(first: signal.Signals) -> tuple[subprocess.CompletedProcess[str], bool]:
    """An apply ``first`` stops, and its undo running a tool: (the tool's run, whether
    the undo is bounded after it)."""
    undone: list[subprocess.CompletedProcess[str]] = []
    bounded: list[bool] = []
    try:
        os.kill(os.getpid(), first)
        time.sleep(10)  # the handler raises within this; a bound, not a timing
        raise AssertionError(f"{first!r} did not interrupt the apply")
    finally:  # the undo, as Compensation's
        with undo_running():
            undone.append(Processes(None).run(
                ["sh", "-c", "kill -TERM $$ $PPID; echo survived"]))
            within = _deadline.WITHIN.get()  # the deadline SIGTERM sets
            bounded.append(within is not None and within() is not None)
        return undone[0], bounded[0]  # noqa: B012 - the interruption is the test's


@pytest.mark.parametrize("first", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "sighup"])
def test_in_the_undo_ctrl_c_or_sighup_started_its_tool_outlives_the_cgroups_sigterm(
        first: signal.Signals, main_thread: None,
        request: pytest.FixtureRequest) -> None:
    """The whole chain as the CLI runs it: Ctrl-C or SIGHUP starts the undo; systemd (or
    logind) then sends SIGTERM to every process of the cgroup, the tool the undo runs and
    k3snet. The tool ends its work; k3snet's SIGTERM bounds the undo from then on."""
    if not _in_one_thread(request):
        return
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGINT, signal.default_int_handler)  # (a runner may set its own)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as in a terminal, not under nohup
    try:
        with sigterm_undoes():
            done, bounded = _apply_stopped_by(first)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert (done.returncode, done.stdout) == (0, "survived\n")
    assert bounded  # k3snet took its SIGTERM
