"""What ``k3snet plan`` pays for its restart lines with no cluster backend: nothing.

As root, in a fresh network namespace (an ``eth0`` whose veth peer stays inside):
``--count`` destinations applied through the nftables and netlink backends, then
``k3snet plan`` run ``--runs`` times in this process (``k3snet.cli.main``) with one
destination more, each run timing the whole plan and, apart, the two calls that
name restarts (``restarts_needed``: the plan's changes a CNI reads only at start;
``pending_restarts``: the restarts k3snet's earlier changes still wait for). An
audit hook counts what those calls open, connect to or run (a file, a socket, a
process): with no cilium or flannel backend in the group they must do none of it
(docs/performance.md, "Restart lines without a cluster backend"). The namespace is
deleted at the end.

    python benchmarks/bench_pending_restarts.py [--count 1000] [--runs 7] [--netns NAME]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_paths import spec_text

import k3snet.cli
from k3snet.lab.netns import create_netns, delete_netns, exit_on_signals, run_in, unique_name

# What a call to the cluster (or any other I/O) raises: sys.addaudithook's events.
WATCHED = ("open", "socket.__new__", "socket.connect", "subprocess.Popen", "os.exec",
           "os.posix_spawn", "os.fork")


class Watched:
    """Seconds spent in, and audit events raised during, the calls it wraps."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {}
        self.events: Counter[str] = Counter()
        self._inside = 0
        sys.addaudithook(self._hook)

    def _hook(self, event: str, _args: tuple[Any, ...]) -> None:
        if self._inside and event in WATCHED:
            self.events[event] += 1

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._inside += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds.setdefault(name, []).append(time.perf_counter() - start)
                self._inside -= 1
        return timed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--netns", default=None, help="the namespace's name (made and deleted)")
    args = parser.parse_args()
    exit_on_signals()
    ns = create_netns(args.netns or unique_name("restart"))
    try:
        with tempfile.TemporaryDirectory(prefix="k3snet-restart-") as name:
            tmp = Path(name)
            os.environ["K3SNET_STATE_DIR"] = os.environ["K3SNET_LOCK_DIR"] = str(tmp)
            for argv in (["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"],
                         ["ip", "link", "set", "eth1", "up"],
                         ["ip", "addr", "add", "192.168.1.5/24", "dev", "eth0"],
                         ["ip", "link", "set", "eth0", "up"]):
                run_in(ns, argv)
            applied, planned = tmp / "applied.yaml", tmp / "planned.yaml"
            applied.write_text(spec_text(args.count))
            planned.write_text(spec_text(args.count, 1))
            backends = ["--netns", ns, "--backend", "nftables:nat", "--backend", "netlink:route"]
            with contextlib.redirect_stdout(io.StringIO()):
                if k3snet.cli.main(["apply", "-f", str(applied), "--auto-approve", *backends]):
                    raise SystemExit("the apply failed")
            watched = Watched()
            # The hook sees what the wrapped calls do: a file opened inside is counted.
            watched.wrap("check", lambda: Path(os.devnull).open().close())()
            if watched.events["open"] != 1:
                raise SystemExit(f"the audit hook did not count an open: {watched.events}")
            watched.events.clear()
            watched.seconds.clear()
            k3snet.cli.restarts_needed = watched.wrap("restarts_needed",
                                                      k3snet.cli.restarts_needed)
            k3snet.cli.pending_restarts = watched.wrap("pending_restarts",
                                                       k3snet.cli.pending_restarts)
            whole = []
            for _ in range(args.runs):
                start = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    code = k3snet.cli.main(["plan", "-f", str(planned), *backends])
                whole.append(time.perf_counter() - start)
                if code != k3snet.cli.EXIT_CHANGES:
                    raise SystemExit(f"plan exited {code}, not {k3snet.cli.EXIT_CHANGES}")
            print(f"k3snet plan, {args.count} destinations applied (nftables + netlink), "
                  f"one more planned: {statistics.median(whole) * 1000:.1f} ms (median of "
                  f"{args.runs}, in this process)")
            for label, seconds in watched.seconds.items():
                print(f"  {label}: {statistics.median(seconds) * 1e6:.1f} us "
                      f"(max {max(seconds) * 1e6:.1f} us, {len(seconds)} calls)")
            print(f"  I/O inside them: {dict(watched.events) or 'none'}")
    finally:
        delete_netns(ns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
