"""One ``iptables-restore`` process per family per apply, and still all or nothing.

Lab namespaces, iptables nft and legacy, asserted with ``iptables-save``. The
processes are counted through the driver seam (:class:`Processes` subclassed),
never by timing. The tool commits each table at its ``COMMIT`` line and stops at
the first error, naming its line: a table refused after another was committed
(at parse time, or by the kernel at its commit) must leave both as they were.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.iptables.driver import Flavour, Processes, RestoreProcess, RunFailedError
from k3snet.errors import ApplyError, BackendError, RollbackError
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import ForwardRule, MasqueradeRule, SnatRule, State
from k3snet.planner import Plan, plan

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

MODES = ["nft", "legacy"]
BEFORE = State(owned=[
    ForwardRule("10.1.0.0/16", "192.168.2.0/24"),
    MasqueradeRule("10.1.0.0/16", destination="192.168.2.0/24"),
    ForwardRule("fd42:1::/64", "fd01:2::/64"),
    MasqueradeRule("fd42:1::/64", destination="fd01:2::/64"),
])
# Every table of both families changes: filter and nat, IPv4 and IPv6.
AFTER = State(owned=[
    ForwardRule("10.1.0.0/16", "192.168.2.0/24", out_interface="eth0"),
    SnatRule("10.1.0.0/16", destination="192.168.2.0/24", to_address="192.168.1.5"),
    ForwardRule("10.3.0.0/16", "192.168.2.0/24"),
    MasqueradeRule("10.3.0.0/16", destination="192.168.2.0/24"),
    ForwardRule("fd42:1::/64", "fd01:3::/64"),
    MasqueradeRule("fd42:1::/64", destination="fd01:3::/64"),
])
FOREIGN = ("*filter\n:ADMIN - [0:0]\n-A FORWARD -s 203.0.113.0/24 -j ACCEPT\n"
           "-A ADMIN -j RETURN\nCOMMIT\n*nat\n-A POSTROUTING -s 198.51.100.0/24 -j MASQUERADE\n"
           "COMMIT\n")
# Two chains of ours jumping to each other, reached from POSTROUTING: every line
# parses, and the kernel refuses the loop only when the table is committed.
LOOP = [":K3SNET-LOOP-A - [0:0]", ":K3SNET-LOOP-B - [0:0]", "-A K3SNET-LOOP-A -j K3SNET-LOOP-B",
        "-A K3SNET-LOOP-B -j K3SNET-LOOP-A", "-A POSTROUTING -j K3SNET-LOOP-A"]
_COUNTERS = re.compile(r"\[\d+:\d+\]")


class Counted(Processes):
    """The real tools; every restore run's family and tables are kept."""

    def __init__(self, netns: str, *, loop_in: str | None = None, untold: bool = False) -> None:
        super().__init__(netns)
        self.runs: list[tuple[int, list[str]]] = []
        self.loop_in = loop_in
        """A table (``nat``) whose next commit is made refused by the kernel."""
        self.untold = untold
        """Refusals do not say which tables were committed (as when the tool is killed)."""

    def restore(self, family: int, mode: Flavour, *, test: bool = False) -> RestoreProcess:
        run = super().restore(family, mode, test=test)
        tables: list[str] = []
        self.runs.append((family, tables))
        table, commit, wait = run.table, run.commit, run.wait

        def open_table(name: str) -> None:
            tables.append(name)
            table(name)

        def commit_table() -> None:
            if tables[-1] == self.loop_in:
                self.loop_in = None
                run.send(LOOP)
            commit()

        def wait_for_it() -> None:
            try:
                wait()
            except RunFailedError as exc:
                if self.untold:
                    raise RunFailedError(str(exc), None, committed=None) from exc
                raise

        run.wait = wait_for_it  # type: ignore[method-assign]
        run.table = open_table  # type: ignore[method-assign]
        run.commit = commit_table  # type: ignore[method-assign]
        return run


@pytest.fixture
def ns(require_root: None) -> Iterator[str]:
    """A fresh namespace holding foreign rules in both tables and families."""
    for tool in ("iptables-nft-restore", "iptables-legacy-restore"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    with temporary_netns("one") as name:
        yield name


def seed(ns: str, mode: str) -> None:
    run_in(ns, [f"iptables-{mode}-restore", "--noflush", "-w"], input_text=FOREIGN)
    run_in(ns, [f"ip6tables-{mode}-restore", "--noflush", "-w"],
           input_text=FOREIGN.replace("203.0.113.0/24", "2001:db8:1::/64")
           .replace("198.51.100.0/24", "2001:db8:2::/64"))


def kernel(ns: str, mode: str) -> dict[int, list[str]]:
    """``iptables-save`` of both families, byte for byte but comments and counters."""
    return {family: [_COUNTERS.sub("[-]", line) for line in run_in(
                ns, [f"{'ip' if family == 4 else 'ip6'}tables-{mode}-save"]).stdout.splitlines()
                if not line.startswith("#")]
            for family in (4, 6)}


def counted(ns: str, mode: str, *, loop_in: str | None = None, untold: bool = False
            ) -> tuple[IptablesBackend, Counted]:
    backend = IptablesBackend(ns, mode=mode)  # type: ignore[arg-type]
    seam = Counted(ns, loop_in=loop_in, untold=untold)
    backend._kernel = seam  # the real seam, counted (the constructor makes a Processes)
    return backend, seam


def the_plan(ns: str, mode: str) -> Plan:
    seed(ns, mode)
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), BEFORE))
        p = plan(backend.observe(), AFTER)
    assert {(c.subject.family, c.kind) for c in p.changes} == {
        (4, "nat"), (4, "forward"), (6, "nat"), (6, "forward")}, p.render()
    return p


@pytest.mark.parametrize("mode", MODES)
def test_an_apply_of_every_table_is_one_restore_run_per_family(ns: str, mode: str) -> None:
    p = the_plan(ns, mode)
    backend, seam = counted(ns, mode)
    with backend:
        result = backend.apply(p)
        assert seam.runs == [(4, ["filter", "nat"]), (6, ["filter", "nat"])]
        assert result.operations == 2
        assert backend.observe().owned == AFTER.owned
        assert plan(backend.observe(), AFTER).empty


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", ["parsed", "committed", "untold"])
def test_a_refused_second_table_leaves_both_tables_as_they_were(
    ns: str, mode: str, fault: str
) -> None:
    p = the_plan(ns, mode)
    before = kernel(ns, mode)
    # untold: refused at commit, and the run does not say how far it got: the
    # backend reads the tables back to know which ones to take back.
    backend, seam = counted(ns, mode, loop_in=None if fault == "parsed" else "nat",
                            untold=fault == "untold")
    with backend:
        observed = backend.observe()
        nat = next(i for i, c in enumerate(p.changes)
                   if c.subject.family == 4 and c.kind == "nat")
        if fault == "parsed":  # a line the tool refuses as it reads the nat table
            backend.faults.fail_at(nat)
        with pytest.raises(ApplyError) as caught:
            backend.apply(p)
        error = caught.value
        assert "IPv4 nat refused the changes" in str(error)
        assert "ROLLBACK FAILED" not in str(error)
        # The filter table was committed before nat was refused: it was taken back.
        assert {c.kind for c in error.done} == {"forward"}
        assert len(error.rolled_back) == len(error.done)
        if fault == "parsed":
            assert error.failed == p.changes[nat]
        # One run for IPv4's two tables (stopped at nat), one for the undo of filter.
        assert seam.runs == [(4, ["filter", "nat"]), (4, ["filter"])]
        assert kernel(ns, mode) == before
        assert backend.observe() == observed
        backend.apply(p)
        assert plan(backend.observe(), AFTER).empty


@pytest.mark.parametrize("mode", MODES)
def test_the_run_says_which_table_was_refused_and_which_were_committed(
    ns: str, mode: str
) -> None:
    seam = Processes(ns)
    run = seam.restore(4, mode)  # type: ignore[arg-type]
    run.table("filter")
    run.send([":K3SNET-ONE - [0:0]"])
    run.commit()
    run.table("nat")
    run.send([":K3SNET-TWO - [0:0]", *LOOP])
    run.commit()
    with pytest.raises(RunFailedError) as caught:
        run.wait()
    assert (caught.value.table, caught.value.committed) == ("nat", ("filter",))
    text = run_in(ns, [f"iptables-{mode}-save"]).stdout
    assert ":K3SNET-ONE - " in text
    assert "K3SNET-TWO" not in text
    assert "K3SNET-LOOP" not in text


@pytest.mark.parametrize("mode", MODES)
def test_an_aborted_run_commits_the_tables_sent_whole_and_not_the_open_one(
    ns: str, mode: str
) -> None:
    seam = Processes(ns)
    run = seam.restore(4, mode)  # type: ignore[arg-type]
    run.table("filter")
    run.send([":K3SNET-ONE - [0:0]"])
    run.commit()
    run.table("nat")
    run.send([":K3SNET-TWO - [0:0]"])
    assert run.abort() == ("filter",)
    text = run_in(ns, [f"iptables-{mode}-save"]).stdout
    assert ":K3SNET-ONE - " in text
    assert "K3SNET-TWO" not in text
    # Nothing committed yet: the process is killed, nothing applied.
    again = seam.restore(4, mode)  # type: ignore[arg-type]
    again.table("nat")
    again.send([":K3SNET-THREE - [0:0]"])
    assert again.abort() == ()
    assert "K3SNET-THREE" not in run_in(ns, [f"iptables-{mode}-save"]).stdout


def test_a_run_that_does_not_finish_in_time_is_named_by_its_tool_not_by_ip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # In a namespace the command is `ip netns exec NS iptables-nft-restore ...`: the
    # message must name the tool that hung, not `ip`.
    seam = Processes("k3snet-elsewhere", timeout=0.3)
    monkeypatch.setattr(seam, "tool", lambda *args: "iptables-nft-restore")
    monkeypatch.setattr(seam, "argv", lambda argv: ["sleep", "5"])  # holds stdout open
    run = seam.restore(4, "nft")
    run.table("nat")
    with pytest.raises(RunFailedError) as caught:
        run.wait()
    assert str(caught.value).startswith(
        "iptables-nft-restore did not finish within 0.3 s in network namespace "
        "'k3snet-elsewhere'"), caught.value


class Interrupted(Counted):
    """Ctrl-C lands as the nat table opens, after filter's COMMIT: the run, aborted,
    cannot tell which tables went in, and ``iptables-save`` then fails too."""

    def __init__(self, netns: str) -> None:
        super().__init__(netns)
        self.reads_fail = False

    def restore(self, family: int, mode: Flavour, *, test: bool = False) -> RestoreProcess:
        run = super().restore(family, mode, test=test)
        table, abort = run.table, run.abort

        def open_table(name: str) -> None:
            if name == "nat" and not self.reads_fail:
                self.reads_fail = True
                raise KeyboardInterrupt
            table(name)

        def untold() -> tuple[str, ...] | None:
            abort()
            return None

        run.table = open_table  # type: ignore[method-assign]
        run.abort = untold  # type: ignore[method-assign]
        return run

    def save(self, family: int, mode: Flavour) -> str | None:
        if self.reads_fail:
            raise BackendError("iptables-save: interrupted system call")
        return super().save(family, mode)


@pytest.mark.parametrize("mode", MODES)
def test_an_interruption_whose_committed_tables_cannot_be_told_is_a_rollback_error(
    ns: str, mode: str
) -> None:
    # Ctrl-C (or SIGTERM) after filter's COMMIT, the run unable to say what went in and
    # the read back failing: "cannot tell whether it was committed" was dropped and the
    # interruption went on as it came, exit 130/143 saying nothing (143: "taken back"),
    # the filter table's edit left in the kernel.
    p = the_plan(ns, mode)
    backend = IptablesBackend(ns, mode=mode)  # type: ignore[arg-type]
    backend._kernel = Interrupted(ns)
    with backend:
        backend.observe()
        with pytest.raises(RollbackError) as caught:
            backend.apply(p)
    assert "ROLLBACK FAILED" in str(caught.value)
    assert "IPv4 filter: cannot tell whether it was committed" in str(caught.value)
    assert isinstance(caught.value.__cause__, KeyboardInterrupt)
