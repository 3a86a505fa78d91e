"""Run every benchmark, one after the other: ``make bench``.

Kernel benchmarks (routes, nftables, iptables) need root and build their own
network namespaces, which they delete at the end; they never touch the root
namespace.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["bench_cli.py", "bench_planner.py", "bench_spec.py", "bench_routes.py",
         "bench_nftables.py",
         "bench_iptables.py"]


def main() -> int:
    failed = []
    for name in ORDER:
        script = HERE / name
        if not script.exists():
            continue
        print(f"\n===== {name}", flush=True)
        if subprocess.run([sys.executable, str(script)], check=False).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
