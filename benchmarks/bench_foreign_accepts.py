"""Reading an administrator's accepts by address: k3snet's observe beside the raw listing, at
growing sizes, to show it grows linearly (issue 9: "observe linear from 1k to 50k").

Run as root (fresh network namespaces, deleted at the end, also on error)::

    .venv/bin/python benchmarks/bench_foreign_accepts.py [--sizes 1000 2000 5000 10000]
                                                         [--runs 3]

For each size N, a namespace holds a firewall script's shape: FORWARD's policy drops,
N accepts of one customer network each (``-s 10.x.y.0/24 -j ACCEPT``; nftables:
``ip saddr 10.x.y.0/24 accept`` in an ``inet`` table's forward chain) and one accept of
the replies (``--ctstate RELATED,ESTABLISHED``; nftables: by address, ``ip daddr
10.0.0.0/8 accept``, so that the replies are looked for among the accepts). Every one of
the N accepts is then a way out for pods in its network, which k3snet reads as a foreign
``ForwardRule``. Timed, each a median of ``--runs``, wall time: the raw listing
(``iptables-nft-save``, ``iptables-legacy-save``, ``nft list ruleset``) and a fresh
backend's ``observe()`` in this process (``IptablesBackend(mode=...)``,
``NftablesBackend``); the ratio, and microseconds an accept (flat when linear). The
nftables backend reads at most 4 096 rules of other tables (a bound of its walk): larger
sizes are left out for it.
Figures: docs/performance.md, "Foreign accepts read by address".
"""

from __future__ import annotations

import argparse
import functools
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.nftables import NftablesBackend
from k3snet.backends.nftables.parse import _MAX_WALKED_RULES
from k3snet.lab.netns import exit_on_signals, run_in, temporary_netns
from k3snet.model import ForwardRule, State


def _networks(count: int) -> list[str]:
    return [f"10.{i // 256}.{i % 256}.0/24" for i in range(count)]


def _iptables(count: int) -> str:
    return "\n".join(["*filter", ":FORWARD DROP [0:0]",
                      *(f"-A FORWARD -s {net} -j ACCEPT" for net in _networks(count)),
                      "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                      "COMMIT", ""])


def _nftables(count: int) -> str:
    return "\n".join(["table inet fw {", "chain pass {",
                      "type filter hook forward priority 0; policy drop;",
                      *(f"ip saddr {net} accept" for net in _networks(count)),
                      "ip daddr 10.0.0.0/8 accept", "}", "}", ""])


def _fresh_nftables(ns: str) -> State:
    return NftablesBackend(ns).observe()


def _fresh_iptables(ns: str, mode: Literal["nft", "legacy"], state: str) -> State:
    return IptablesBackend(netns=ns, mode=mode, state_dir=state).observe()


def _median(runs: int, call: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _found(state: State, count: int) -> None:
    accepts = [o for o in state.foreign if isinstance(o, ForwardRule)]
    if len(accepts) < count:
        raise SystemExit(f"read {len(accepts)} accepts, expected {count}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000, 10000])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    exit_on_signals()
    print(f"{'case':16} {'N':>6} {'raw ms':>9} {'k3snet ms':>10} {'ratio':>7} {'µs/accept':>10}")
    # (the iptables backend's record of built-in chains it made: here, not under /run/k3snet)
    state = tempfile.mkdtemp(prefix="k3snet-bench-state-")
    for count in args.sizes:
        for case in ("iptables-nft", "iptables-legacy", "nftables"):
            if case == "nftables" and count + 1 > _MAX_WALKED_RULES:
                print(f"{case:16} {count:>6} (past the {_MAX_WALKED_RULES} rules the reader walks"
                      " in other tables: not read, by design)")
                continue
            with temporary_netns("faccb") as ns:
                observe: Callable[[], State]
                if case == "nftables":
                    run_in(ns, ["nft", "-f", "-"], input_text=_nftables(count))
                    raw_argv = ["nft", "list", "ruleset"]
                    observe = functools.partial(_fresh_nftables, ns)
                else:
                    mode: Literal["nft", "legacy"] = "nft" if case == "iptables-nft" else "legacy"
                    run_in(ns, [f"iptables-{mode}-restore"], input_text=_iptables(count))
                    raw_argv = [f"iptables-{mode}-save"]
                    observe = functools.partial(_fresh_iptables, ns, mode, state)
                _found(observe(), count)
                raw = _median(args.runs, lambda: run_in(ns, raw_argv))  # noqa: B023
                ours = _median(args.runs, observe)
            print(f"{case:16} {count:>6} {raw * 1000:>9.1f} {ours * 1000:>10.1f} "
                  f"{ours / raw:>6.1f}x {ours / count * 1e6:>10.1f}", flush=True)
    shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
