"""Progress under load: applies succeed while a foreign writer commits all the time.

A foreign program (here a process in the lab namespace using libnftables)
adds and flushes a rule in its own table in a loop, at ~50 transactions/s and
as fast as it can. Each of ten applies, through the nftables backend and
through iptables-nft, must succeed, and the writer must have committed between
every two of them. Nothing is timed: successes are counted, and the writer's
rate is recorded (``-rP`` shows it; docs/reliability.md has the last figures).

A foreign chain on the egress path so big that listing it takes longer than
the writer's period (3000 rules under 50/s) makes libnftables list it again
forever: the applies then run in a child process with a generous hard timeout,
and must finish: through nftables it succeeds, the big chain reported as
unread; through iptables-nft (whose tools list again the same way) it succeeds
or fails with the typed error naming the tool run's timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.kit import BackendBase
from k3snet.backends.netns import NetnsRunner
from k3snet.backends.nftables import NftablesBackend
from k3snet.backends.nftables.kernel import Libnftables
from k3snet.demo import SPEC_PATH
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
    record_property: Callable[[str, object], None],
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


BIG_RULES = 3000
# iptables-nft's tools list again while the generation moves, like libnftables; each run
# is killed past its timeout (the default 30 s; 2 s here, to keep the test short: a quiet
# save of the big table takes 0.04 s, one under the writer 0.37 s, docs/reliability.md).
IPTABLES_TIMEOUT = 2
# Each nftables apply next to the big chain gives up on it twice (two observes, each
# after foreign_timeout: the default 2 s; 0.5 s here, as for iptables above, ~1 s in
# all; the CLI's plan below keeps the default): four applies show they return.
BIG_APPLIES = 4
FOREIGN_TIMEOUT = 0.5

APPLY = """
import json, sys, time
from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.nftables import NftablesBackend
from k3snet.errors import BackendError
from k3snet.model import ForwardRule, MasqueradeRule, State
from k3snet.planner import plan
ns, name, applies = sys.argv[1], sys.argv[2], int(sys.argv[3])
IPTABLES_TIMEOUT, FOREIGN_TIMEOUT = float(sys.argv[4]), float(sys.argv[5])
state_dir = sys.argv[6]  # the iptables backend's record of chains it made: not /run/k3snet
for index in range(applies):  # each with a backend of its own, as a process of its own
    start = time.monotonic()
    desired = State(owned=[MasqueradeRule(f"10.{index}.0.0/16", destination="192.168.2.0/24"),
                           ForwardRule(f"10.{index}.0.0/16", "192.168.2.0/24")])
    backend = (NftablesBackend(ns, foreign_timeout=FOREIGN_TIMEOUT) if name == "nftables"
               else IptablesBackend(ns, mode="nft", timeout=IPTABLES_TIMEOUT,
                                    state_dir=state_dir))
    with backend:
        try:
            backend.apply(plan(backend.observe(), desired))
            converged, error = backend.observe().owned == desired.owned, None
        except BackendError as exc:  # the typed error, after a stated time
            converged, error = False, str(exc)
        print(json.dumps({"converged": converged, "error": error,
                          "unread": list(getattr(backend, "foreign_unread", ())),
                          "seconds": time.monotonic() - start}), flush=True)
"""


def _big_forward_chain(backend_name: str) -> tuple[list[str], str]:
    """A foreign forward chain of BIG_RULES rules: an nftables table, or iptables-nft's FORWARD."""
    if backend_name == "nftables":
        lines = ["table inet bigfw {", "\tchain forward {",
                 "\t\ttype filter hook forward priority filter; policy accept;"]
        lines += [f"\t\tip saddr 10.{100 + i // 250}.{i % 250}.0/24 tcp dport {1024 + i} "
                  "counter accept" for i in range(BIG_RULES)]
        return ["nft", "-f", "-"], "\n".join([*lines, "\t}", "}", ""])
    lines = ["*filter", ":FORWARD ACCEPT [0:0]"]
    lines += [f"-A FORWARD -s 10.{100 + i // 250}.{i % 250}.0/24 -p tcp --dport {1024 + i} "
              "-j ACCEPT" for i in range(BIG_RULES)]
    return ["iptables-nft-restore"], "\n".join([*lines, "COMMIT", ""])


@pytest.mark.parametrize("backend_name", ["nftables", "iptables-nft"])
def test_applies_return_next_to_a_big_foreign_chain_under_a_writer(
    ns: str, backend_name: str, tmp_path: Path, record_property: Callable[[str, object], None],
) -> None:
    command, text = _big_forward_chain(backend_name)
    run_in(ns, command, input_text=text)
    # The chain is there, whole, as the kernel lists it (before the writer starts).
    listed = run_in(ns, ["nft", "-j", "list", "ruleset"]).stdout
    rules = [item for item in json.loads(listed)["nftables"] if "rule" in item]
    assert len(rules) >= BIG_RULES
    out = tmp_path / "writer"
    writer = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", WRITER, "50",
                               str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready"
        # The applies one after the other in one child (a Python and k3snet's import
        # each cost more than an apply here), each apply a backend of its own. A hard
        # timeout far above the stated bounds: a hang fails the test, and the child is
        # killed rather than left listing.
        done = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", APPLY, ns, backend_name,
             str(BIG_APPLIES), str(IPTABLES_TIMEOUT), str(FOREIGN_TIMEOUT), str(tmp_path)],
            capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        results = [json.loads(line) for line in done.stdout.splitlines()]
        assert len(results) == BIG_APPLIES, done.stdout
        if backend_name == "nftables":
            # The CLI's plan says the foreign state is incomplete.
            planned = subprocess.run(
                [sys.executable, "-m", "k3snet.cli", "plan", "-f", str(SPEC_PATH), "--backend",
                 "nftables", "--netns", ns, "--no-facts"], capture_output=True, text=True,
                timeout=120, check=False, env=dict(os.environ, K3SNET_LOCK_DIR=str(tmp_path)))
            assert planned.returncode in (0, 2), planned.stderr
            assert "!! warning: nftables: other tables were not read whole" in planned.stdout
            assert "list chain inet bigfw forward" in planned.stdout
    finally:
        writer.send_signal(signal.SIGTERM)
        writer.wait(timeout=60)
    commits, seconds = out.read_text().split()
    durations = sorted(round(r["seconds"], 2) for r in results)
    record_property("apply_seconds", durations)
    record_property("writer_rate_per_s", round(int(commits) / float(seconds)))
    errors = [r["error"] for r in results if r["error"]]
    sys.stdout.write(f"{backend_name} next to {BIG_RULES} foreign rules: "
                     f"{sum(r['converged'] for r in results)}/{BIG_APPLIES} applies converged; "
                     f"seconds {durations}; unread {sum(bool(r['unread']) for r in results)}"
                     f"/{BIG_APPLIES}; errors {errors}; "
                     f"writer {int(commits) / float(seconds):.0f}/s\n")
    assert int(commits) >= 2 * BIG_APPLIES  # the writer was at it all along
    if backend_name == "nftables":
        assert all(r["converged"] for r in results), errors
        # The big chain could not be listed under the writer (reported, not waited
        # for) in at least one apply: the case was exercised. Not in every one: a
        # listing may fall between two of the writer's commits (9 of 10 on a run).
        assert any(any("bigfw" in u for u in r["unread"]) for r in results)
    else:
        # iptables-nft-save and -restore list the big table again while the generation
        # moves, as libnftables does: an apply converges, or fails with the typed error
        # naming the tool run's stated timeout; it never hangs.
        # (a save says "timed out after 5.0 seconds", a restore "did not finish within 5.0 s")
        bounds = (f"timed out after {float(IPTABLES_TIMEOUT)} seconds",
                  f"did not finish within {float(IPTABLES_TIMEOUT)} s")
        assert all(r["converged"] or any(b in (r["error"] or "") for b in bounds)
                   for r in results), errors
