"""Cold-start benchmark: what a fresh ``k3snet`` process pays before any kernel work.

Run: ``.venv/bin/python benchmarks/bench_cli.py [--repeat 15]``

Each figure is the median wall time of a fresh process (the way a script or a
cron job runs k3snet), side by side with Python's own start-up and with
``nft --version`` (a raw tool's start-up). The memory backend keeps kernel work
out of the figures: what is left is imports, spec loading, planning and
printing. The 10k-destination spec is validated as a later run finds it (the
spec cache filled) and as a first run does (``K3SNET_SPEC_CACHE=off``: the
file parsed), as YAML and as JSON. Goals (issue 9): ``k3snet --version`` <= 150 ms.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from goals import Figure, record

ROOT = Path(__file__).resolve().parents[1]
# The console script, as users run it (``python -m k3snet`` adds runpy's own imports).
_SCRIPT = Path(sys.executable).parent / "k3snet"
K3SNET = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "k3snet"]
SEED = str(ROOT / "examples" / "seed.yaml")
NO_CACHE = ["env", "K3SNET_SPEC_CACHE=off"]


def median_seconds(argv: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def big_spec(directory: Path, destinations: int, *, as_json: bool = False) -> str:
    cidrs = [f"172.{16 + i // 256}.{i % 256}.0/24" for i in range(destinations)]
    if as_json:  # JSON is YAML: what automation often writes
        path = directory / f"spec-{destinations}.json"
        path.write_text(json.dumps({"apiVersion": "k3snet.io/v1alpha1", "kind": "EgressSpec",
                                    "destinations": [{"cidr": c} for c in cidrs]}, indent=2))
        return str(path)
    path = directory / f"spec-{destinations}.yaml"
    rows = "".join(f"  - cidr: {cidr}\n" for cidr in cidrs)
    path.write_text(f"apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\ndestinations:\n{rows}")
    return str(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="5 runs a case")
    args = parser.parse_args()
    if args.quick:
        args.repeat = 5
    with tempfile.TemporaryDirectory() as tmp:
        cases = [
            ("python -c pass (start-up)", [sys.executable, "-c", "pass"], None),
            ("k3snet --version", [*K3SNET, "--version"], 0.150),
            # Its list of backends reads the installed packages' entry points.
            ("k3snet plan --help", [*K3SNET, "plan", "--help"], None),
            ("k3snet validate seed", [*K3SNET, "validate", "-f", SEED], None),
            ("k3snet plan seed, memory", [*K3SNET, "plan", "-f", SEED, "--backend", "memory",
                                          "--no-facts"], None),
            ("k3snet validate 10k destinations", [*K3SNET, "validate", "-f",
                                                  big_spec(Path(tmp), 10_000)], None),
            # A first run: the spec cache off, so the file is parsed (YAML, then JSON).
            ("k3snet validate 10k, first run", [*NO_CACHE, *K3SNET, "validate", "-f",
                                                big_spec(Path(tmp), 10_000)], None),
            ("k3snet validate 10k, first run, JSON",
             [*NO_CACHE, *K3SNET, "validate", "-f", big_spec(Path(tmp), 10_000, as_json=True)],
             None),
        ]
        nft = shutil.which("nft")
        if nft:
            cases.insert(1, ("nft --version (raw tool start-up)", [nft, "--version"], None))
        print(f"{'case':40} {'median':>10}  goal")
        for label, argv, goal in cases:
            seconds = median_seconds(argv, args.repeat)
            mark = "" if goal is None else ("  ok" if seconds <= goal else f"  ABOVE {goal:.3f}")
            print(f"{label:40} {seconds * 1000:8.1f} ms{mark}")
            if goal is not None:
                record(Figure(label, "-", seconds * 1000, "ms", goal * 1000,
                              detail=f"fresh process, median of {args.repeat}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
