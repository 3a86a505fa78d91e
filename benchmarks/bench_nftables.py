"""Benchmark of the nftables backend against plain ``nft -f``, in a fresh network namespace.

Run as root::

    .venv/bin/python benchmarks/bench_nftables.py [--runs 5] [--sizes 1000 10000]

(a) Full apply from an empty table: N masquerade rules (distinct /32 sources),
    k3snet (observe + plan + apply, JSON and nft-syntax batches) against
    ``ip netns exec NS nft -f FILE`` of the same ruleset, as rendered by
    :func:`k3snet.render.nftables.render_nftables_conf` (same rules, same comments).
(c) A cold observe, foreign rules included, on a node whose nat table also holds
    2N kube-proxy-like rules in a chain no egress hook reaches, against
    ``nft list ruleset`` (what reading everything costs).
(b) One change (one rule added, or one replaced) among N existing owned rules:
    observe (cold: the table is read) + plan + apply; observe (warm: the generation
    id says nothing changed) + plan + apply; plan + apply with the State observed
    before (cached); against ``nft -f`` of the one-line change (raw nft needs the
    handle of the replaced rule, which it is given for free).

Medians of ``--runs`` runs, with ratios k3snet/raw; kernel round trips and
transactions per apply; then the targets (full apply within 1.5x of ``nft -f``,
one change under 50 ms with a warm or cached observe; a cold observe reads the
whole table, ~80 us per rule, and has no target). Before each timed run the
kernel gets 0.2 s to free what the previous one dropped, and Python's garbage is
collected. The namespace is deleted at the end, also on error.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from k3snet.backends.nftables import NftablesBackend, Syntax
from k3snet.lab.netns import exit_on_signals, run_in, temporary_netns
from k3snet.model import MasqueradeRule, State
from k3snet.planner import plan
from k3snet.render.nftables import nft_rules, render_nftables_conf

DESTINATION = "192.168.0.0/16"
FULL_APPLY_TARGET = 1.5
ONE_CHANGE_TARGET_MS = 50.0
SYNTAXES: tuple[Syntax, ...] = ("json", "nft")


def rules(count: int, offset: int = 0) -> list[MasqueradeRule]:
    """``count`` masquerade rules with distinct /32 sources."""
    base = int(ipaddress.IPv4Address("10.0.0.0")) + offset
    return [
        MasqueradeRule(f"{ipaddress.IPv4Address(base + i)}/32", destination=DESTINATION)
        for i in range(count)
    ]


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def nft_file(ns: str, text: str) -> float:
    """Seconds ``nft -f`` takes to load ``text`` in ``ns`` (process start included)."""
    with tempfile.NamedTemporaryFile("w", suffix=".nft", delete=False) as handle:
        handle.write(text)
        path = handle.name
    try:
        start = time.perf_counter()
        run_in(ns, ["nft", "-f", path], timeout=120)
        return time.perf_counter() - start
    finally:
        Path(path).unlink()


def drop_table(ns: str) -> None:
    run_in(ns, ["nft", "delete", "table", "inet", "k3snet"], check=False)
    settle()


def settle() -> None:
    """Untimed: let the kernel free what the last run dropped, and Python collect garbage,
    so neither lands in the next timed run."""
    time.sleep(0.2)
    gc.collect()


def machine_info() -> list[str]:
    cpu = "?"
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    nft = subprocess.run(["nft", "--version"], capture_output=True, text=True, check=False)
    return [
        f"machine: {platform.machine()}, {os.cpu_count()} CPU(s) {cpu}",
        f"kernel: {platform.release()}",
        f"python: {platform.python_version()}; {nft.stdout.strip()}",
    ]


def full_apply(ns: str, size: int, runs: int) -> list[list[str]]:
    wanted = State(owned=rules(size))
    text = render_nftables_conf(wanted)
    rows: list[list[str]] = []
    raw: list[float] = []
    for _ in range(runs):
        drop_table(ns)
        raw.append(nft_file(ns, text))
    raw_ms = median_ms(raw)
    for syntax in SYNTAXES:
        samples: list[float] = []
        operations = 0
        with NftablesBackend(ns, syntax=syntax, observe_foreign=False) as backend:
            for _ in range(runs):
                drop_table(ns)
                start = time.perf_counter()
                result = backend.apply(plan(backend.observe(), wanted))
                samples.append(time.perf_counter() - start)
                operations = result.operations
            assert backend.observe(refresh=True).owned == wanted.owned
        ms = median_ms(samples)
        rows.append([f"full apply {size} rules", f"k3snet ({syntax})", f"{ms:.1f}",
                     f"{raw_ms:.1f}", f"{ms / raw_ms:.2f}", str(operations), "1"])
    drop_table(ns)
    return rows


def one_change(ns: str, size: int, runs: int) -> list[list[str]]:
    base = rules(size)
    extra = rules(len(SYNTAXES) * 3 * runs + 2, offset=size + 1000)
    rows: list[list[str]] = []
    for syntax in SYNTAXES:
        drop_table(ns)
        with NftablesBackend(ns, syntax=syntax, observe_foreign=False) as backend:
            backend.apply(plan(backend.observe(), State(owned=base)))
            current = set(base)
            fresh = iter(extra[: 3 * runs + 1] if syntax == "json" else extra[3 * runs + 1 :])

            def desired_add(current: set[MasqueradeRule],
                            fresh: Iterator[MasqueradeRule] = fresh) -> set[MasqueradeRule]:
                return {*current, next(fresh)}

            def desired_replace(current: set[MasqueradeRule]) -> set[MasqueradeRule]:
                victim = min(current, key=lambda r: r.sort_key)
                new = MasqueradeRule(victim.source, destination=victim.destination,
                                     random_fully=not victim.random_fully)
                return (current - {victim}) | {new}

            for label, make in (("1 added", desired_add), ("1 replaced", desired_replace)):
                for mode in ("observe (cold) + plan + apply", "observe (warm) + plan + apply",
                             "plan + apply (cached State)"):
                    samples = []
                    operations = 0
                    observed = backend.observe()
                    for _ in range(runs):
                        current = make(current)
                        desired = State(owned=current)
                        settle()
                        start = time.perf_counter()
                        if mode.startswith("observe (cold)"):
                            observed = backend.observe(refresh=True)
                        elif mode.startswith("observe (warm)"):
                            observed = backend.observe()
                        p = plan(observed, desired)
                        result = backend.apply(p)
                        samples.append(time.perf_counter() - start)
                        assert len(p) == 1, p.render()
                        operations = result.operations
                        observed = p.apply_to(observed)
                    rows.append([f"{label} among {size}", f"k3snet ({syntax}) {mode}",
                                 f"{median_ms(samples):.1f}", "", "", str(operations), "1"])
            assert backend.observe(refresh=True).owned == frozenset(current)
    rows += raw_one_change(ns, size, runs)
    for row in rows:
        raw_row = next(r for r in rows if r[1] == "raw nft -f" and r[0] == row[0])
        if row is not raw_row:
            row[3] = raw_row[2]
            row[4] = f"{float(row[2]) / float(raw_row[2]):.2f}"
    drop_table(ns)
    return rows


def raw_one_change(ns: str, size: int, runs: int) -> list[list[str]]:
    """``nft -f`` of the one-line change, on a table holding ``size`` rules."""
    drop_table(ns)
    base = rules(size)
    nft_file(ns, render_nftables_conf(State(owned=base)))
    added, replaced = [], []
    for i, rule in enumerate(rules(runs, offset=size + 5000)):
        line = nft_rules(rule)[0]
        text = f'add rule inet k3snet postrouting {line.body} comment "{line.comment}"\n'
        settle()
        added.append(nft_file(ns, text))
        handle = i + 3  # the chains took handles 1 and 2, rules follow in file order
        victim = nft_rules(base[i])[0]
        text = (f"delete rule inet k3snet postrouting handle {handle}\n"
                f"add rule inet k3snet postrouting {victim.body} fully-random "
                f'comment "{victim.comment}"\n')
        settle()
        replaced.append(nft_file(ns, text))
    return [
        [f"1 added among {size}", "raw nft -f", f"{median_ms(added):.1f}", "", "",
         "1 process", "1"],
        [f"1 replaced among {size}", "raw nft -f", f"{median_ms(replaced):.1f}", "", "",
         "1 process", "1"],
    ]


def foreign_observe(ns: str, size: int, runs: int) -> list[list[str]]:
    """A cold observe (foreign rules included) next to ``size`` kube-proxy-like rules.

    The rules sit in a chain no egress hook reaches (like KUBE-SERVICES), so
    k3snet never lists them; ``nft list ruleset`` is what reading everything costs.
    """
    drop_table(ns)
    lines = ["table ip nat {", "\tchain POSTROUTING {",
             "\t\ttype nat hook postrouting priority srcnat; policy accept;",
             "\t\tjump FLANNEL-POSTRTG", "\t}", "\tchain FLANNEL-POSTRTG {",
             "\t\tip saddr 10.42.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
             "\t}", "\tchain KUBE-SERVICES {"]
    lines += [f"\t\tip daddr 10.43.{i >> 8 & 255}.{i & 255} tcp dport {80 + (i >> 16)} "
              "counter accept" for i in range(size)]
    lines += ["\t}", "}"]
    nft_file(ns, "\n".join(lines) + "\n")
    k3snet, raw = [], []
    with NftablesBackend(ns, observe_foreign=True) as backend:
        backend.apply(plan(backend.observe(), State(owned=rules(10))))
        for _ in range(runs):
            settle()
            k3snet.append(timed(lambda: backend.observe(refresh=True)))
            settle()
            raw.append(timed(lambda: run_in(ns, ["nft", "list", "ruleset"], timeout=120)))
        flannel = MasqueradeRule("10.42.0.0/16", exclude=["224.0.0.0/4"], random_fully=True)
        assert flannel in backend.observe().foreign
        backend.apply(plan(backend.observe(), State()))
    run_in(ns, ["nft", "delete", "table", "ip", "nat"])
    k3snet_ms, raw_ms = median_ms(k3snet), median_ms(raw)
    return [[f"observe, {size} foreign rules", "k3snet observe (cold, foreign too)",
             f"{k3snet_ms:.1f}", f"{raw_ms:.1f}", f"{k3snet_ms / raw_ms:.2f}", "", "0"],
            [f"observe, {size} foreign rules", "raw nft list ruleset", f"{raw_ms:.1f}", "", "",
             "1 process", "0"]]


def print_table(rows: list[list[str]]) -> None:
    head = ["case", "how", "median ms", "raw ms", "ratio", "round trips", "transactions"]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    for line in machine_info():
        print(line)
    rows: list[list[str]] = []
    with temporary_netns("bench") as ns:
        print(f"namespace: {ns}, {args.runs} runs per case, medians\n")
        for size in args.sizes:
            rows += full_apply(ns, size, args.runs)
        rows += one_change(ns, max(args.sizes), args.runs)
        rows += foreign_observe(ns, 2 * max(args.sizes), args.runs)
    print_table(rows)
    print()
    for row in rows:
        if row[0].startswith("full apply") and row[1].startswith("k3snet"):
            verdict = "met" if float(row[4]) <= FULL_APPLY_TARGET else "MISSED"
            print(f"target full apply <= {FULL_APPLY_TARGET}x nft -f: {row[0]}, {row[1]}: "
                  f"{row[4]}x {verdict}")
        elif row[1].startswith("k3snet") and "cold" not in row[1] and "among" in row[0]:
            verdict = "met" if float(row[2]) < ONE_CHANGE_TARGET_MS else "MISSED"
            print(f"target 1 change < {ONE_CHANGE_TARGET_MS} ms: {row[0]}, {row[1]}: "
                  f"{row[2]} ms {verdict}")
    return 0


if __name__ == "__main__":
    exit_on_signals()  # a timeout or a closed terminal still deletes the namespaces
    sys.exit(main())
