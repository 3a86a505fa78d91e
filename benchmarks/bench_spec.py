"""Spec loading at scale: a generated spec with N destinations, no root needed.

Run::

    .venv/bin/python benchmarks/bench_spec.py [--destinations 10000] [--runs 7]

Cases (median and best of ``--runs``): ``Spec.from_dict`` on the parsed data
(the field table's reading, then every check), and ``load_spec`` of the same
spec as a YAML file and as a JSON file (parsing included), the same through the parsed-spec cache
(a hit: :mod:`k3snet.spec.cache`; what every run of a cron job's ``k3snet apply``
after the first does), and ``compile`` of the loaded spec. Wall time (median,
best) and CPU time (median) of this process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from goals import Figure, record

from k3snet.spec import Spec, compile, load_spec  # noqa: A004 - k3snet's compile
from k3snet.spec.cache import load_spec_cached


def generated(count: int) -> dict[str, Any]:
    """A valid spec: N /24 destinations, a third with an exclude, a fifth with a metric."""
    destinations: list[dict[str, Any]] = []
    for i in range(count):
        cidr = f"{(i >> 16) + 11}.{(i >> 8) & 255}.{i & 255}.0/24"
        entry: dict[str, Any] = {"cidr": cidr, "gateway": "192.168.1.1", "device": "eth0"}
        if i % 3 == 0:
            entry["exclude"] = [cidr.replace(".0/24", ".8/29")]
        if i % 5 == 0:
            entry["metric"] = 100
        destinations.append(entry)
    return {"apiVersion": "k3snet.io/v1alpha1", "kind": "EgressSpec",
            "cluster": {"podCIDRs": ["10.42.0.0/16"], "serviceCIDRs": ["10.43.0.0/16"]},
            "destinations": destinations, "sysctls": {"net.ipv4.conf.all.rp_filter": 2}}


def timed(runs: int, action: Callable[[], object]) -> tuple[float, float, float]:
    """(median, best) wall seconds and the median CPU seconds (``time.process_time``: on a
    shared machine the wall time measures the load as much as the code)."""
    times, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        action()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(times), min(times), statistics.median(cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--destinations", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = 3
    data = generated(args.destinations)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.yaml"
        path.write_text(yaml.safe_dump(data))
        as_json = Path(tmp) / "spec.json"  # JSON is YAML: what automation often writes
        as_json.write_text(json.dumps(data, indent=2))
        spec = load_spec(path)
        load_spec_cached(path, Path(tmp) / "cache")  # the miss that fills the cache
        cases = [
            ("Spec.from_dict", lambda: Spec.from_dict(data)),
            ("load_spec (YAML file)", lambda: load_spec(path)),
            ("load_spec (JSON file)", lambda: load_spec(as_json)),
            # What a cold `k3snet apply` does from its second run on (k3snet.spec.cache).
            ("cached load (a hit)", lambda: load_spec_cached(path, Path(tmp) / "cache")),
            ("compile", lambda: compile(spec)),
        ]
        print(f"{args.destinations} destinations, {args.runs} runs")
        for name, action in cases:
            median, best, cpu = timed(args.runs, action)
            print(f"  {name:24} median {median * 1000:8.1f} ms   best {best * 1000:8.1f} ms   "
                  f"CPU {cpu * 1000:8.1f} ms")
            if args.destinations != 10_000:
                continue
            # A cron job's first run parses the YAML; every later run is a cache hit.
            if name == "load_spec (YAML file)":
                record(Figure("load a 10k-destination spec, first run", "-", median * 1000,
                              "ms", 100.0, cpu_value=cpu * 1000,
                              detail=f"YAML file parsed, median of {args.runs}"))
            elif name == "load_spec (JSON file)":
                record(Figure("load a 10k-destination spec, first run", "JSON", median * 1000,
                              "ms", 100.0, cpu_value=cpu * 1000,
                              detail=f"JSON file parsed, median of {args.runs}"))
            elif name.startswith("cached load"):
                record(Figure("load a 10k-destination spec, later runs", "-", median * 1000,
                              "ms", 100.0, cpu_value=cpu * 1000,
                              detail=f"spec cache hit, median of {args.runs}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
