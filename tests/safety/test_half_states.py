"""An apply killed between two iptables tables never breaks traffic that worked before.

Each family's tables go through one ``iptables-restore`` process, which commits
each table at its ``COMMIT`` line (one kernel transaction per table); between
two of them an apply can be SIGKILLed. The apply runs in a child process whose
kernel seam kills it as it opens the next table (after 1, 2 or 3 tables were
sent whole): the restore process then reads the end of its input and commits
the tables sent whole, not the open one. The flow the plan keeps must then
still be accepted (filter) and NATed (nat), read with ``iptables-save``; a
rerun converges.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.lab.netns import netns_pids, run_in, temporary_netns
from k3snet.model import ForwardRule, MasqueradeRule, SnatRule, State
from k3snet.planner import plan

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

KEPT_SOURCE, KEPT_DESTINATION = "10.1.0.0/16", "192.168.2.0/24"
BEFORE = State(owned=[
    ForwardRule(KEPT_SOURCE, KEPT_DESTINATION),
    MasqueradeRule(KEPT_SOURCE, destination=KEPT_DESTINATION),
    ForwardRule("10.2.0.0/16", KEPT_DESTINATION),
    MasqueradeRule("10.2.0.0/16", destination=KEPT_DESTINATION),
    ForwardRule("fd42:1::/64", "fd01:2::/64"),
    MasqueradeRule("fd42:1::/64", destination="fd01:2::/64"),
])
# The kept flow gets another NAT (masquerade -> SNAT) and another forward rule
# (with an out interface); flow 2 goes, flow 3 comes; IPv6 changes too.
AFTER = State(owned=[
    ForwardRule(KEPT_SOURCE, KEPT_DESTINATION, out_interface="eth0"),
    SnatRule(KEPT_SOURCE, destination=KEPT_DESTINATION, to_address="192.168.1.5"),
    ForwardRule("10.3.0.0/16", KEPT_DESTINATION),
    MasqueradeRule("10.3.0.0/16", destination=KEPT_DESTINATION),
    ForwardRule("fd42:1::/64", "fd01:3::/64"),
    MasqueradeRule("fd42:1::/64", destination="fd01:3::/64"),
])

CHILD = """
import os, signal, sys
from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.iptables.driver import Processes
from k3snet.planner import Plan

ns, mode, survive, plan_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]


class KillBetweenTables(Processes):
    # One restore run per family, fed table after table: die as the table after
    # `survive` tables is opened (those before it were sent whole, COMMIT included).
    opened = 0

    def restore(self, family, flavour, **kw):
        run = super().restore(family, flavour, **kw)
        table = run.table

        def open_table(name):
            if KillBetweenTables.opened == survive:
                os.kill(os.getpid(), signal.SIGKILL)
            KillBetweenTables.opened += 1
            table(name)

        run.table = open_table
        return run


backend = IptablesBackend(mode=mode, kernel=KillBetweenTables(ns))
backend.apply(Plan.from_json(open(plan_file).read()))
"""


# Runs argv[1:] as a subreaper: the processes orphaned by its death are reparented
# to this one, which waits for them all; prints the run's exit status.
REAPER = """
import ctypes, os, subprocess, sys
PR_SET_CHILD_SUBREAPER = 36
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
    sys.exit(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")
run = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                     check=False)
sys.stderr.write(run.stderr)
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
print(run.returncode)
"""


@pytest.fixture
def ns(require_root: None) -> Iterator[str]:
    """A fresh, empty network namespace."""
    for tool in ("iptables-nft-restore", "iptables-legacy-restore"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    with temporary_netns("half") as name:
        yield name


def _kept_flow_works(ns: str, mode: str) -> list[str]:
    """What is missing for the kept flow, read from ``iptables-save`` (empty: it works)."""
    text = run_in(ns, [f"iptables-{mode}-save"]).stdout
    nat = text.split("*nat", 1)[1].split("COMMIT", 1)[0] if "*nat" in text else ""
    filt = text.split("*filter", 1)[1].split("COMMIT", 1)[0] if "*filter" in text else ""
    match = f"-s {KEPT_SOURCE} -d {KEPT_DESTINATION}"
    missing = []
    if "-A FORWARD -m comment --comment k3snet -j K3SNET-FORWARD" not in filt:
        missing.append("the FORWARD jump")
    if not any(match in line and line.endswith("-j ACCEPT") for line in filt.splitlines()):
        missing.append("the forward accept")
    if "-A POSTROUTING -m comment --comment k3snet -j K3SNET-POSTROUTING" not in nat:
        missing.append("the POSTROUTING jump")
    if not any(match in line and ("-j MASQUERADE" in line or "-j SNAT" in line)
               for line in nat.splitlines()):
        missing.append("the NAT")
    return missing


def _described(pid: int) -> str:
    """A process's command line, state and kernel stack, for a failure's message."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        state = next((line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if line.startswith(("State:", "PPid:"))), "")
    except OSError:
        return f"{pid} (gone)"
    try:
        stack = " < ".join(line.split()[-1] for line in
                           Path(f"/proc/{pid}/stack").read_text().splitlines()[:6])
    except OSError:
        stack = "(no stack)"
    return f"{pid} {argv.strip()!r} {state} in {stack}"


@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize("survive", [1, 2, 3])
def test_a_kill_between_tables_keeps_the_kept_flow_working_and_a_rerun_converges(
    ns: str, mode: str, survive: int, tmp_path: Path
) -> None:
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), BEFORE))
        assert _kept_flow_works(ns, mode) == []
        change = plan(backend.observe(), AFTER)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(change.to_json())
    # The killed apply's restore process outlives it: it reads the end of its input,
    # commits the tables sent whole and exits. The child runs under a subreaper that
    # reaps that orphan when it exits, so its end is known exactly: an orphan left to
    # PID 1 can stay a zombie for seconds, or longer, where PID 1 reaps slowly (a
    # container's init), and the namespace still lists it.
    try:
        reaper = subprocess.run(
            [sys.executable, "-c", REAPER, sys.executable, "-c", CHILD, ns, mode, str(survive),
             str(plan_file)],
            capture_output=True, text=True, timeout=300, check=False,
            env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])))
    except subprocess.TimeoutExpired:
        left = netns_pids(ns)
        pytest.fail(f"not ended in 5 min in {ns}: {[_described(pid) for pid in left]}")
    assert reaper.returncode == 0, reaper.stderr
    assert int(reaper.stdout) == -signal.SIGKILL, reaper.stderr
    left = netns_pids(ns)
    assert left == (), f"still running in {ns}: {[_described(pid) for pid in left]}"
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        half = backend.observe()
        # Killed half way: neither the old state nor the new one ...
        assert half.owned not in (BEFORE.owned, AFTER.owned)
        # ... and yet the flow both keep is accepted and NATed (the kernel's view).
        assert _kept_flow_works(ns, mode) == []
        backend.apply(plan(half, AFTER))
        assert backend.observe().owned == AFTER.owned
    assert _kept_flow_works(ns, mode) == []
