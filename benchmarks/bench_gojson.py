"""The JSON nesting check's cost (``k3snet._gojson.text_nests_deeper``), this checkout's
against older ones.

An ``nft -j list ruleset``-like text of ``--rules`` rules (each with strings holding
brackets and escapes, as comments do), then ``text_nests_deeper`` of it by this
checkout's module and by the module of each ``--before`` commit (read with ``git
show``) and ``json.loads`` of it (the raw parse the check comes before), interleaved,
``--runs`` times; prints the CPU medians and their ratios to the parse (docs/performance.md,
"JSON nesting measured before parsing"). No root, no namespace.

    python benchmarks/bench_gojson.py [--rules 10000] [--runs 15] [--before COMMIT ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from _older import older_module  # benchmarks/_older.py

from k3snet import _gojson

MODULE = "k3snet/_gojson.py"




def ruleset_text(rules: int) -> str:
    """A ruleset as ``nft -j`` prints it, ``rules`` rules in one chain, each a match, a
    counter and a comment holding brackets, quotes and a backslash."""
    items: list[dict[str, object]] = [
        {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {"family": "inet", "name": "bench", "handle": 1}},
        {"chain": {"family": "inet", "table": "bench", "name": "c", "handle": 1}}]
    for i in range(rules):
        items.append({"rule": {
            "family": "inet", "table": "bench", "chain": "c", "handle": i + 2,
            "comment": f"rule {i} [{{\"x\\\\\"}}]",
            "expr": [{"match": {"op": "==", "left": {"payload": {
                "protocol": "ip", "field": "daddr"}},
                "right": {"prefix": {"addr": f"10.{i >> 8 & 255}.{i & 255}.0", "len": 24}}}},
                {"counter": {"packets": i, "bytes": i * 60}}, {"accept": None}]}})
    return json.dumps({"nftables": items})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--before", nargs="*", default=["64eb820b"],
                        help="commits whose module to time beside this checkout's")
    args = parser.parse_args()
    text = ruleset_text(args.rules)
    with tempfile.TemporaryDirectory() as tmp:
        checks = {commit: older_module(MODULE, commit, Path(tmp), f"_gojson_{i}").text_nests_deeper
                  for i, commit in enumerate(args.before)}
        checks["this checkout"] = _gojson.text_nests_deeper
        answers = {name: check(text, 512) for name, check in checks.items()}
        if len(set(answers.values())) != 1:
            raise SystemExit(f"the answers differ: {answers}")
        # The raw parse beside it, in the same loop: what the check adds to a read.
        times: dict[str, list[float]] = {name: [] for name in [*checks, "json.loads"]}
        for _ in range(args.runs):
            for name, check in checks.items():
                start = time.process_time()
                check(text, 512)
                times[name].append(time.process_time() - start)
            start = time.process_time()
            json.loads(text)
            times["json.loads"].append(time.process_time() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"text_nests_deeper of a {len(text) / 2**20:.1f} MiB ruleset ({args.rules} rules), "
          f"CPU medians of {args.runs} interleaved runs, and the ratio to json.loads of it:")
    for name, value in medians.items():
        print(f"  {name:>14}: {value * 1000:7.1f} ms  {value / medians['json.loads']:5.2f}x")


if __name__ == "__main__":
    main()
