"""Progress under load: applies succeed while a foreign writer commits all the time.

A foreign program (here a process in the lab namespace using libnftables)
adds and flushes a rule in its own table in a loop, at ~50 transactions/s and
as fast as it can. Each of ten applies, through the nftables backend and
through iptables-nft, must succeed, and the writer must have committed between
every two of them. Nothing is timed: successes are counted, and the writer's
rate is recorded (``-rP`` shows it; docs/reliability.md has the last figures).

Not covered, and known not to hold: a foreign chain on the egress path so big
that listing it takes longer than the writer's period (3000 rules at 50/s)
makes libnftables list it again forever (docs/reliability.md).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.kit import BackendBase
from k3snet.backends.netns import NetnsRunner
from k3snet.backends.nftables import NftablesBackend
from k3snet.backends.nftables.kernel import Libnftables
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import ForwardRule, MasqueradeRule, State
from k3snet.planner import plan
from tests.nftables.scenario import NFT_FOREIGN

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

APPLIES = 10

WRITER = """
import signal, sys, time, nftables
rate, out = float(sys.argv[1]), sys.argv[2]
nft = nftables.Nftables()
nft.cmd("add table inet writer; add chain inet writer c")
count, start, stop = 0, time.monotonic(), []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
next_at = start
print("ready", flush=True)
while not stop:
    rc, _, _ = nft.cmd("flush chain inet writer c" if count % 2 else
                       "add rule inet writer c counter")
    count += rc == 0
    if rate:
        next_at += 1 / rate
        time.sleep(max(0.0, next_at - time.monotonic()))
with open(out, "w") as f:
    f.write(f"{count} {time.monotonic() - start}")
"""


@pytest.fixture
def ns(require_root: None) -> Iterator[str]:
    """A fresh, empty network namespace."""
    pytest.importorskip("nftables")
    if shutil.which("iptables-nft-restore") is None:
        pytest.skip("iptables-nft-restore is not installed")
    with temporary_netns("load") as name:
        yield name


class _Generation:
    """Reads the namespace's ruleset generation id (every committed transaction bumps it)."""

    def __init__(self, ns: str) -> None:
        self.runner = NetnsRunner(ns)
        self.kernel = self.runner.call(Libnftables)

    def __call__(self) -> int:
        return self.runner.call(self.kernel.genid)

    def wait_past(self, since: int, count: int) -> int:
        """Block until the id moved ``count`` past ``since`` (the writer is at it)."""
        while (now := self()) - since < count:
            pass
        return now

    def close(self) -> None:
        self.runner.call(self.kernel.close)
        self.runner.close()


@pytest.mark.parametrize("rate", [50, 0], ids=["50-per-s", "flat-out"])
@pytest.mark.parametrize("backend_name", ["nftables", "iptables-nft"])
def test_applies_succeed_under_a_foreign_writer(
    ns: str, rate: int, backend_name: str, tmp_path: Path,
    record_property: pytest.RecordProperty,
) -> None:
    # A node's other firewalls (foreign tables that observe reads, one rule of each
    # shape), and iptables-nft's FORWARD policy DROP with flannel's accepts.
    run_in(ns, ["nft", "-f", "-"], input_text=NFT_FOREIGN)
    out = tmp_path / "writer"
    writer = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", WRITER, str(rate),
                               str(out)], stdout=subprocess.PIPE, text=True)
    succeeded = 0
    generation = _Generation(ns)
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready"
        mark = generation()
        for index in range(APPLIES):
            mark = generation.wait_past(mark, 2)
            desired = State(owned=[
                MasqueradeRule(f"10.{index}.0.0/16", destination="192.168.2.0/24"),
                ForwardRule(f"10.{index}.0.0/16", "192.168.2.0/24"),
            ])
            backend: BackendBase = (NftablesBackend(ns) if backend_name == "nftables"
                                    else IptablesBackend(ns, mode="nft"))
            with backend:
                backend.apply(plan(backend.observe(), desired))  # type: ignore[attr-defined]
                assert backend.observe().owned == desired.owned  # type: ignore[attr-defined]
            succeeded += 1
            mark = generation()  # then at least two foreign commits before the next one
    finally:
        writer.send_signal(signal.SIGTERM)
        writer.wait(timeout=60)
        generation.close()
    commits, seconds = out.read_text().split()
    record_property("writer_commits", int(commits))
    record_property("writer_rate_per_s", round(int(commits) / float(seconds)))
    sys.stdout.write(f"{backend_name}: {succeeded}/{APPLIES} applies; writer {commits} "
                     f"commits in {float(seconds):.1f} s ({int(commits) / float(seconds):.0f}/s)\n")
    assert succeeded == APPLIES
    assert int(commits) >= 2 * APPLIES
