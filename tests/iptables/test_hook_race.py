"""A foreign rule inserted or deleted between k3snet's read and its commit.

k3snet's jump from a built-in chain goes in by position (``-I FORWARD N``), counted on
its read of the chain right before the apply; ``iptables-restore`` counts N on the
chain as it finds it. kube-router, flannel and kube-proxy insert and delete their
rules at the top of ``FORWARD`` and ``POSTROUTING`` at any time: one deleted
meanwhile put k3snet's jump behind the final ``-j DROP`` (25 applies out of 25 with a
writer doing so in a loop, a lab namespace). The apply reported success while every
pod's forwarded packet was dropped, and from then on every plan read that DROP as a
conflict of k3snet's accept and ``destroy`` found nothing of k3snet's to remove: the
node stayed so. The jump just placed is read back, and moved where it belongs.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence

import pytest

from k3snet import converge, destroy, plan
from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.iptables import backend as backend_module
from k3snet.backends.iptables.driver import Flavour, Libiptc, Processes, RestoreProcess
from k3snet.backends.iptables.table import Op, TableEdit, TableState, revert_ops
from k3snet.lab.netns import run_in
from k3snet.model import ForwardRule, MasqueradeRule, State
from k3snet.render.iptables.rules import format_line

DESIRED = State(owned=[ForwardRule("10.42.0.0/16", "192.168.2.0/24"),
                       MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")])
FOREIGN = ["-s", "10.77.0.0/16", "-j", "ACCEPT"]


class Racing(Processes):
    """The iptables tools, and another program's change of FORWARD right before the
    first restore run reads the chain."""

    def __init__(self, netns: str, mode: str, change: Sequence[str]) -> None:
        super().__init__(netns)
        self._foreign = [f"iptables-{mode}", *change]
        self.raced = False

    def restore(self, family: int, mode: Flavour, *, test: bool = False) -> RestoreProcess:
        if family == 4 and not test and not self.raced:
            self.raced = True
            run_in(self.netns or "", self._foreign)
        return super().restore(family, mode, test=test)


class RacingLibiptc(Libiptc):
    """libiptc's commits, and another program's change of FORWARD right before the
    first commit of the filter table (libiptc reads the table as it commits)."""

    def __init__(self, netns: str, mode: str, change: Sequence[str]) -> None:
        super().__init__(netns)
        self._foreign = [f"iptables-{mode}", *change]
        self.raced = False

    def commit_ops(self, family: int, mode: Flavour, table: str, ops: Sequence[Op], *,
                   test: bool = False) -> None:
        if family == 4 and table == "filter" and not test and not self.raced:
            self.raced = True
            run_in(self.netns or "", self._foreign)
        super().commit_ops(family, mode, table, ops, test=test)


def _forward(ns: str, mode: str) -> list[str]:
    return run_in(ns, [f"iptables-{mode}", "-S", "FORWARD"]).stdout.splitlines()[1:]


@pytest.mark.kernel
@pytest.mark.parametrize(("mode", "driver"), [("nft", "restore"), ("legacy", "restore"),
                                              ("legacy", "libiptc")])
@pytest.mark.parametrize("race", ["deleted", "inserted"])
def test_a_jump_placed_while_another_program_changes_the_chain_ends_before_the_final_drop(
        ns: str, mode: str, driver: str, race: str) -> None:
    if driver == "libiptc":
        pytest.importorskip("iptc")
    tool = f"iptables-{mode}"
    if race == "deleted":
        run_in(ns, [tool, "-A", "FORWARD", *FOREIGN])
    run_in(ns, [tool, "-A", "FORWARD", "-s", "10.99.0.0/16", "-j", "ACCEPT"])
    run_in(ns, [tool, "-A", "FORWARD", "-j", "DROP"])
    change = ["-D", "FORWARD", *FOREIGN] if race == "deleted" else ["-I", "FORWARD", "1",
                                                                     *FOREIGN]
    kernel = (Racing if driver == "restore" else RacingLibiptc)(ns, mode, change)
    with IptablesBackend(ns, mode=mode, kernel=kernel) as backend:  # type: ignore[arg-type]
        converge(backend, DESIRED)
    assert kernel.raced
    jump = "-A FORWARD -m comment --comment k3snet -j K3SNET-FORWARD"
    expected = [*([f"-A FORWARD {' '.join(FOREIGN)}"] if race == "inserted" else []),
                "-A FORWARD -s 10.99.0.0/16 -j ACCEPT", jump, "-A FORWARD -j DROP"]
    assert _forward(ns, mode) == expected
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        assert backend.observe().only({"forward"}).owned == DESIRED.only({"forward"}).owned
        destroy(backend)
    assert "K3SNET" not in run_in(ns, [f"{tool}-save"]).stdout


class Logged(Processes):
    """The iptables tools, logging the reads and the restore runs in order."""

    def __init__(self, netns: str) -> None:
        super().__init__(netns)
        self.log: list[tuple[object, ...]] = []

    def save(self, family: int, mode: Flavour) -> str | None:
        self.log.append(("save", family))
        return super().save(family, mode)

    def list_chain(self, family: int, mode: Flavour, table: str, chain: str) -> str | None:
        self.log.append(("list", family, table, chain))
        return super().list_chain(family, mode, table, chain)

    def restore(self, family: int, mode: Flavour, *, test: bool = False) -> RestoreProcess:
        self.log.append(("restore", family))
        return super().restore(family, mode, test=test)


@pytest.mark.kernel
def test_the_read_back_of_jumps_placed_through_iptables_nft_lists_their_chains_not_a_save(
        ns: str) -> None:
    """The read-back after the commit needs the built-in chains alone: a save of the
    family had iptables-nft translate every rule of every table (a first apply of 1 000
    NAT rules, ~8 % more CPU)."""
    kernel = Logged(ns)
    with IptablesBackend(ns, mode="nft", kernel=kernel) as backend:
        converge(backend, DESIRED)
    last = max(i for i, event in enumerate(kernel.log) if event[0] == "restore")
    after = kernel.log[last + 1:]
    assert ("save", 4) not in after
    assert sorted(after) == [("list", 4, "filter", "FORWARD"), ("list", 4, "nat", "POSTROUTING")]
    jump = "-A FORWARD -m comment --comment k3snet -j K3SNET-FORWARD"
    assert _forward(ns, "nft") == [jump]


def _ctrl_c_after_the_move(base: type[Racing | RacingLibiptc], sent: list[str]
                           ) -> type[Racing | RacingLibiptc]:
    """``base``, and SIGINT to the main thread right after the commit that moved the
    jump (a ``-D FORWARD`` of the filter table once the race is run; put in ``sent``):
    Ctrl-C landing as the kernel took the move, before the backend's view of the chain
    followed it."""

    class Interrupted(base):  # type: ignore[valid-type, misc]
        def commit_ops(self, family: int, mode: Flavour, table: str, ops: Sequence[Op], *,
                       test: bool = False) -> None:
            super().commit_ops(family, mode, table, ops, test=test)
            moved = any(op.kind == "delete" and op.chain == "FORWARD" for op in ops)
            if family == 4 and table == "filter" and not test and moved and not sent:
                sent.append("moved")
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    return Interrupted


@pytest.mark.kernel
@pytest.mark.parametrize(("mode", "driver"), [("nft", "restore"), ("legacy", "restore"),
                                              ("legacy", "libiptc")])
def test_ctrl_c_as_a_jump_is_moved_takes_the_table_back_reading_the_jump_where_it_moved(
        ns: str, mode: str, driver: str, ctrl_c: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A jump placed behind the final DROP (a foreign rule deleted meanwhile), then moved
    where it belongs, and Ctrl-C as the kernel took the move: the undo read the jump where
    it was before the move. libiptc's delete by number found the DROP there and refused:
    the rollback failed, the jump and k3snet's chains stayed. The undo's view of
    ``FORWARD`` is now the kernel's (``iptables -S``), and nothing of k3snet's is left."""
    if driver == "libiptc":
        pytest.importorskip("iptc")
    tool = f"iptables-{mode}"
    for rule in (FOREIGN, ["-s", "10.99.0.0/16", "-j", "ACCEPT"], ["-j", "DROP"]):
        run_in(ns, [tool, "-A", "FORWARD", *rule])
    sent: list[str] = []
    kernel = _ctrl_c_after_the_move(Racing if driver == "restore" else RacingLibiptc, sent)(
        ns, mode, ["-D", "FORWARD", *FOREIGN])
    undone: list[tuple[list[str], list[str]]] = []  # (the undo's FORWARD, the kernel's)

    def seen(state: TableState, edit: TableEdit, *, exact: bool = True) -> list[Op]:
        if state.table == "filter" and state.family == 4:
            undone.append(([f"-A FORWARD {format_line(line)}" for line in state.hook_rules],
                           _forward(ns, mode)))
        return revert_ops(state, edit, exact=exact)

    monkeypatch.setattr(backend_module, "revert_ops", seen)
    with IptablesBackend(ns, mode=mode, kernel=kernel) as backend:  # type: ignore[arg-type]
        p = plan(backend.observe(), DESIRED)
        with pytest.raises(KeyboardInterrupt):
            backend.apply(p)
    assert sent == ["moved"]
    assert len(undone) == 1
    assert undone[0][0] == undone[0][1]
    assert _forward(ns, mode) == ["-A FORWARD -s 10.99.0.0/16 -j ACCEPT", "-A FORWARD -j DROP"]
    assert "K3SNET" not in run_in(ns, [f"{tool}-save"]).stdout


class _Stuck(RestoreProcess):
    """A restore run that never reads its input (stuck on the xtables lock), and two
    SIGINTs as k3snet waits for it: the first waits for the end of the block it commits
    in, the second cuts the wait."""

    def _reap(self) -> tuple[int, str]:
        main = threading.main_thread().ident or 0
        signal.pthread_kill(main, signal.SIGINT)
        signal.pthread_kill(main, signal.SIGINT)
        return super()._reap()


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_second_ctrl_c_as_a_jump_is_moved_ends_the_restore_run_it_cuts(
        ns: str, mode: str, ctrl_c: None) -> None:
    """Ctrl-C twice while the restore moving the jump runs (the second one cuts the wait
    at once): that run was left running, not killed, to commit the move whenever it got
    the xtables lock, after the undo and k3snet's exit. It ends with the apply, which
    takes the table back."""
    tool = f"iptables-{mode}"
    for rule in (FOREIGN, ["-s", "10.99.0.0/16", "-j", "ACCEPT"], ["-j", "DROP"]):
        run_in(ns, [tool, "-A", "FORWARD", *rule])
    runs: list[_Stuck] = []

    class StuckMove(Racing):
        writes = 0

        def restore(self, family: int, mode: Flavour, *, test: bool = False) -> RestoreProcess:
            if family == 4 and not test:
                self.writes += 1
                if self.writes == 2:  # after the apply's own run: the move's
                    stuck = _Stuck(self, self.argv(["sleep", "infinity"]), tool="sleep")
                    runs.append(stuck)
                    return stuck
            return super().restore(family, mode, test=test)

    kernel = StuckMove(ns, mode, ["-D", "FORWARD", *FOREIGN])
    try:
        with IptablesBackend(ns, mode=mode, kernel=kernel) as backend:  # type: ignore[arg-type]
            p = plan(backend.observe(), DESIRED)
            with pytest.raises(KeyboardInterrupt) as raised:
                backend.apply(p)
        assert "a second SIGINT cut k3snet" in "".join(raised.value.__notes__)
        assert len(runs) == 1
        assert runs[0]._process.poll() is not None
    finally:
        for run in runs:
            run._kill()
    assert _forward(ns, mode) == ["-A FORWARD -s 10.99.0.0/16 -j ACCEPT", "-A FORWARD -j DROP"]
    assert "K3SNET" not in run_in(ns, [f"{tool}-save"]).stdout


@pytest.mark.kernel
def test_a_second_ctrl_c_as_libiptc_commits_a_jump_s_move_is_held_until_the_move_is_noted(
        ns: str, ctrl_c: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C twice right as libiptc commits the jump's move (in the namespace's thread,
    the main thread waiting for it): the second cut the wait at once, before the
    table's state said where the jump moved, and the undo's delete by number found
    another rule there: ROLLBACK FAILED, the jump and k3snet's chains left. libiptc's
    commit is an in-process call with the xtables lock already held: the second signal
    waits for the move to be noted as the first does, and the table is taken back."""
    iptc = pytest.importorskip("iptc")
    tool = "iptables-legacy"
    for rule in (FOREIGN, ["-s", "10.99.0.0/16", "-j", "ACCEPT"], ["-j", "DROP"]):
        run_in(ns, [tool, "-A", "FORWARD", *rule])
    handled: list[int] = []
    each = [threading.Event(), threading.Event()]  # the first handled, the second

    def interrupted(signum: int, frame: object) -> None:
        handled.append(signum)
        each[len(handled) - 1].set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupted)
    moving: list[bool] = []
    commit = iptc.Table.commit

    def committed_then_twice(table: object) -> None:
        commit(table)
        if moving == [True]:
            moving.append(True)
            for handled_now in each:  # one at a time: two pending SIGINTs are one
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
                handled_now.wait(30)  # (a bound for a broken test alone)

    monkeypatch.setattr(iptc.Table, "commit", committed_then_twice)

    class Moving(RacingLibiptc):
        def commit_ops(self, family: int, mode: Flavour, table: str, ops: Sequence[Op], *,
                       test: bool = False) -> None:
            if (family == 4 and table == "filter" and not test and not moving
                    and any(op.kind == "delete" and op.chain == "FORWARD" for op in ops)):
                moving.append(True)
            super().commit_ops(family, mode, table, ops, test=test)

    kernel = Moving(ns, "legacy", ["-D", "FORWARD", *FOREIGN])
    with IptablesBackend(ns, mode="legacy", kernel=kernel) as backend:
        p = plan(backend.observe(), DESIRED)
        with pytest.raises(KeyboardInterrupt) as raised:
            backend.apply(p)
    assert moving == [True, True]
    assert handled == [signal.SIGINT, signal.SIGINT]
    assert "ROLLBACK FAILED" not in str(raised.value), raised.value
    assert _forward(ns, "legacy") == ["-A FORWARD -s 10.99.0.0/16 -j ACCEPT",
                                      "-A FORWARD -j DROP"]
    assert "K3SNET" not in run_in(ns, [f"{tool}-save"]).stdout
