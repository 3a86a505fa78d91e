"""Benchmark the iptables backend against raw ``iptables-restore``, in fresh namespaces.

Run as root from the repository root::

    .venv/bin/python benchmarks/bench_iptables.py [--repeat 5] [--sizes 1000 10000]

For each iptables flavour (nft, legacy) and driver (restore; libiptc on legacy):

* full apply: N masquerade rules into an empty namespace with k3snet
  (``backend.apply(plan)``; observe and plan are timed apart) versus
  ``iptables-restore --noflush`` of the same rules, comment included, in one
  chain of their own (the input prepared beforehand, not timed);
* one change among 10k: one rule replaced (a delete and an add) in a namespace
  holding 10k of our rules: k3snet's apply time and number of restore runs,
  versus a raw ``-D``/``-A`` of one rule in a flat 10k-rule chain.

Medians over ``--repeat`` runs (``--repeat-change`` for the one-change case).
Every namespace is created fresh (``k3snet-bench-*``) and deleted at the end,
also on failure. Nothing is done in the root namespace.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from k3snet.backends.iptables import IptablesBackend
from k3snet.lab.netns import exit_on_signals, run_in, temporary_netns
from k3snet.model import MasqueradeRule, NetObject, SnatRule, State
from k3snet.planner import plan
from k3snet.render.iptables.rules import clear_caches, format_line, render_unit

TARGET_FULL_RATIO = 1.5
TARGET_ONE_CHANGE_MS = 50.0


def rules(count: int) -> list[MasqueradeRule]:
    """``count`` distinct masquerade rules (one /24 of pods each, one destination)."""
    return [MasqueradeRule(f"10.{i // 256}.{i % 256}.0/24", destination="192.168.2.0/24")
            for i in range(count)]


def raw_input(objects: Iterable[NetObject]) -> str:
    """The same rules as plain ``iptables-restore`` input: one flat chain and its jump."""
    lines = ["*nat", ":BENCH-POSTROUTING - [0:0]", "-A POSTROUTING -j BENCH-POSTROUTING"]
    for obj in objects:
        lines.append(f"-A BENCH-POSTROUTING {format_line(render_unit(obj).lines[0])}")
    lines += ["COMMIT", ""]
    return "\n".join(lines)


def _restore_time(ns: str, mode: str, text: str) -> float:
    start = time.perf_counter()
    run_in(ns, [f"iptables-{mode}-restore", "--noflush", "-w"], input_text=text, timeout=120)
    return time.perf_counter() - start


def ms(seconds: float) -> float:
    return seconds * 1000.0


def bench_full(mode: str, driver: str, count: int, repeat: int) -> dict[str, float]:
    desired = State(owned=rules(count))
    text = raw_input(list(desired.owned))
    k3snet, raw, observe, planning = [], [], [], []
    for _ in range(repeat):
        clear_caches()  # no help from an earlier run
        with temporary_netns("bench") as ns, tempfile.TemporaryDirectory() as state, \
                IptablesBackend(ns, mode=mode, driver=driver,  # type: ignore[arg-type]
                                state_dir=state) as backend:
            _ = backend.mode
            start = time.perf_counter()
            observed = backend.observe()
            observe.append(time.perf_counter() - start)
            start = time.perf_counter()
            p = plan(observed, desired)
            planning.append(time.perf_counter() - start)
            start = time.perf_counter()
            backend.apply(p)
            k3snet.append(time.perf_counter() - start)
        with temporary_netns("bench") as ns:
            raw.append(_restore_time(ns, mode, text))
    result = {
        "k3snet": ms(statistics.median(k3snet)),
        "raw": ms(statistics.median(raw)),
        "observe": ms(statistics.median(observe)),
        "plan": ms(statistics.median(planning)),
    }
    result["ratio"] = result["k3snet"] / result["raw"]
    return result


def bench_one_change(mode: str, driver: str, count: int, repeat: int) -> dict[str, float]:
    base = rules(count)
    victim = base[count // 2]
    other = SnatRule(victim.source, destination=victim.destination, to_address="192.168.1.5")
    states = [State(owned=base), State(owned=[*base[: count // 2], other,
                                              *base[count // 2 + 1:]])]
    times, calls = [], []
    with ExitStack() as stack:
        ns = stack.enter_context(temporary_netns("bench"))
        state = stack.enter_context(tempfile.TemporaryDirectory())
        backend = stack.enter_context(
            IptablesBackend(ns, mode=mode, driver=driver,  # type: ignore[arg-type]
                            state_dir=state)
        )
        backend.apply(plan(backend.observe(), states[0]))
        start = time.perf_counter()
        observed = backend.observe()
        observe = time.perf_counter() - start
        current = 0
        for _ in range(repeat):
            p = plan(observed, states[1 - current])  # planned beforehand, not timed
            assert len(p) == 1, p.render()
            start = time.perf_counter()
            result = backend.apply(p)
            times.append(time.perf_counter() - start)
            calls.append(result.operations)
            observed = p.apply_to(observed)
            current = 1 - current
        assert plan(backend.observe(), states[current]).empty

        # The naive alternative: one flat chain of 10k rules, -D and -A of one rule.
        flat = stack.enter_context(temporary_netns("bench"))
        run_in(flat, [f"iptables-{mode}-restore", "--noflush", "-w"],
               input_text=raw_input(base), timeout=120)
        spec = format_line(render_unit(victim).lines[0])
        edit = f"*nat\n-D BENCH-POSTROUTING {spec}\n-A BENCH-POSTROUTING {spec}\nCOMMIT\n"
        naive = [_restore_time(flat, mode, edit) for _ in range(repeat)]
    return {
        "k3snet": ms(statistics.median(times)),
        "calls": statistics.median(calls),
        "observe": ms(observe),
        "naive": ms(statistics.median(naive)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--change-size", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--repeat-change", type=int, default=21)
    parser.add_argument("--modes", nargs="+", default=["nft", "legacy"])
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    configs = [(mode, "restore") for mode in args.modes]
    if "legacy" in args.modes and _has_iptc():
        configs.append(("legacy", "libiptc"))
    for mode, _ in configs:
        if shutil.which(f"iptables-{mode}-restore") is None:
            print(f"iptables-{mode}-restore not found", file=sys.stderr)
            return 2

    print(f"full apply (median of {args.repeat}; observe and plan not included)")
    print(f"{'mode':<7} {'driver':<8} {'rules':>6} {'k3snet ms':>10} {'raw ms':>8} "
          f"{'ratio':>6} {'observe ms':>11} {'plan ms':>8}  target <= {TARGET_FULL_RATIO}x")
    ok = True
    for mode, driver in configs:
        for count in args.sizes:
            r = bench_full(mode, driver, count, args.repeat)
            meets = r["ratio"] <= TARGET_FULL_RATIO
            ok &= meets
            print(f"{mode:<7} {driver:<8} {count:>6} {r['k3snet']:>10.1f} {r['raw']:>8.1f} "
                  f"{r['ratio']:>6.2f} {r['observe']:>11.1f} {r['plan']:>8.1f}  "
                  f"{'ok' if meets else 'MISSED'}")
    print()
    print(f"one change among {args.change_size} (median of {args.repeat_change}; "
          "plan made beforehand)")
    print(f"{'mode':<7} {'driver':<8} {'k3snet ms':>10} {'restore runs':>13} "
          f"{'naive flat -D/-A ms':>20} {'observe ms':>11}  target < {TARGET_ONE_CHANGE_MS} ms")
    for mode, driver in configs:
        r = bench_one_change(mode, driver, args.change_size, args.repeat_change)
        meets = r["k3snet"] < TARGET_ONE_CHANGE_MS
        ok &= meets
        print(f"{mode:<7} {driver:<8} {r['k3snet']:>10.1f} {r['calls']:>13.0f} "
              f"{r['naive']:>20.1f} {r['observe']:>11.1f}  {'ok' if meets else 'MISSED'}")
    if not ok:
        # A target missed is a figure, marked above, not a failed run (`make bench` runs
        # on: the libiptc driver's full apply is known to miss it, docs/performance.md).
        print("\nsome targets above were missed (MISSED)")
    return 0


def _has_iptc() -> bool:
    try:
        import iptc  # noqa: F401, PLC0415 - only to know whether the driver can run
    except (ImportError, OSError):
        return False
    return True


if __name__ == "__main__":
    exit_on_signals()  # a timeout or a closed terminal still deletes the namespaces
    sys.exit(main())
