"""How the kernel's rule dump grows: one long chain against the same rules in short chains.

Run as root (a fresh network namespace, deleted at the end, also on error)::

    .venv/bin/python benchmarks/bench_chain_dump.py [--sizes 10000 50000] [--chain 1000] [--runs 5]

For each size N, one namespace holds two ``inet`` tables with the same N rules (the
length and shape of k3snet's NAT rules, ``accept`` instead of ``masquerade`` so that no
chain needs a NAT hook): ``one`` with all of them in one chain, ``many`` with them
spread over chains of ``--chain`` rules. Timed in this process through libnftables
(as k3snet lists its table), medians of ``--runs``:

* ``list table inet one``: one dump of one long chain;
* ``list table inet many``: one dump of the whole table (all the short chains);
* ``list chain inet many cK`` for every chain: one dump per chain.

A dump fills 32 KiB messages and, for each message, walks the rules it dumps from the
first again (docs/performance.md, "The kernel's rule dump"): one table-wide dump grows
with the square of the rules, chains or not, while a dump that names its chain walks
only that chain.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from k3snet.backends.netns import NetnsRunner
from k3snet.lab.netns import exit_on_signals, run_in, temporary_netns


def _address(n: int) -> str:
    return f"100.{64 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}"


def _rule(n: int) -> str:
    return (f'\t\tip saddr 10.42.0.0/16 ip daddr {_address(n)} oifname "eth0" accept '
            f'comment "k3snet:{n:016x}"')


def ruleset(size: int, chain: int) -> str:
    """The two tables: ``one`` (one chain of ``size`` rules), ``many`` (chains of ``chain``)."""
    lines = ["table inet one {", "\tchain c0 {", *(_rule(n) for n in range(size)), "\t}", "}",
             "table inet many {"]
    for index, start in enumerate(range(0, size, chain)):
        end = min(size, start + chain)
        lines += [f"\tchain c{index} {{", *(_rule(n) for n in range(start, end)), "\t}"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _timed(runner: NetnsRunner, nft: Any, commands: list[str], runs: int) -> float:
    def once() -> float:
        start = time.perf_counter()
        for command in commands:
            rc, _output, error = nft.cmd(command)
            if rc != 0:
                raise SystemExit(f"nft {command!r} failed: {error}")
        return time.perf_counter() - start

    return statistics.median(runner.call(once) for _ in range(runs))


def measure(size: int, chain: int, runs: int) -> dict[str, float]:
    """Milliseconds of the three listings of ``size`` rules."""
    with temporary_netns("dump") as ns:
        run_in(ns, ["nft", "-f", "-"], input_text=ruleset(size, chain), timeout=600)
        runner = NetnsRunner(ns)
        try:
            import nftables  # noqa: PLC0415 - optional dependency

            nft = runner.call(nftables.Nftables)
            runner.call(lambda: nft.set_handle_output(True))
            chains = [f"list chain inet many c{i}" for i in range(-(-size // chain))]
            return {
                "one chain, table dump": _timed(runner, nft, ["list table inet one"], runs) * 1e3,
                "short chains, table dump": _timed(runner, nft, ["list table inet many"],
                                                   runs) * 1e3,
                "short chains, a dump each": _timed(runner, nft, chains, runs) * 1e3,
            }
        finally:
            runner.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--chain", type=int, default=1000, help="rules per short chain")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.chain < 1 or any(size < 1 for size in args.sizes) or args.runs < 1:
        parser.error("sizes, --chain and --runs must be positive")
    results = {size: measure(size, args.chain, args.runs) for size in args.sizes}
    print(f"medians of {args.runs}, ms (per rule, us); chains of {args.chain} rules")
    for size, figures in results.items():
        one = figures["one chain, table dump"]
        for label, ms in figures.items():
            print(f"{size:>7} rules  {label:28s} {ms:9.1f} ms ({ms * 1e3 / size:6.1f} us)"
                  f"  {ms / one:5.2f}x the one-chain dump")
    if len(results) > 1:
        small, large = min(results), max(results)
        for label in results[small]:
            growth = (results[large][label] / large) / (results[small][label] / small)
            print(f"growth per rule {small} -> {large}, {label}: {growth:.2f}x")
    return 0


if __name__ == "__main__":
    exit_on_signals()  # a timeout or a closed terminal still deletes the namespaces
    sys.exit(main())
