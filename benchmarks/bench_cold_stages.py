"""Where a cold `k3snet apply` (or `plan`) spends its CPU: each stage timed, two installs A/B.

Run as root (one fresh network namespace per backend, deleted at the end)::

    .venv/bin/python benchmarks/bench_cold_stages.py --before /path/to/old/.venv/bin/python \\
        [--after .venv/bin/python] [--runs 2] [--backends routes nftables]

Like ``bench_cold.py`` (10 000 owned, each version in turn adds one destination
and takes it away again, each version's spec cache filled by earlier runs), but each
``k3snet apply`` runs inside a wrapper (this file, ``--child``) that times the
stages of the same CLI process: import, spec (the cached load and its checks),
node facts, compile, observe, plan, close (the backends'), and the total inside;
then the whole process as this one sees it (``process``: wall, and CPU from ``getrusage`` of
the children) and what lies outside the stages (``outside``: the interpreter's
start and the process's end). Prints the median CPU / wall ms of each.
``--read-timeout`` raises the nftables listing bound for a loaded machine.
``--full`` times a full apply instead (every object added to an empty node, which a
``k3snet destroy`` empties again, untimed, before each run), with two more stages:
``apply`` (the backends' apply) and ``print`` (the output). ``--plan`` times a
``k3snet plan`` of one pending change instead (nothing is applied), and
``--observe`` a ``k3snet observe`` (no spec: the backends read without the hint
of expected objects, as a library ``observe()`` does). What was applied goes
with the namespace.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import goals  # noqa: F401 - imported, it byte-compiles k3snet (goals.compile_bytecode)


def child(argv: list[str]) -> int:
    """Run the CLI with timers around its stages; the times go to stderr's last line."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    import k3snet.backends.group  # noqa: PLC0415 - the import is the first stage timed
    import k3snet.cli  # noqa: PLC0415
    import k3snet.converge  # noqa: PLC0415
    import k3snet.spec.cache  # noqa: PLC0415 - for sys.modules

    times: dict[str, list[float]] = {
        "import": [time.process_time() - cpu0, time.perf_counter() - wall0]}

    def wrap(owner: Any, name: str, stage: str) -> None:
        real: Callable[..., Any] = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            cpu, wall = time.process_time(), time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                spent = times.setdefault(stage, [0.0, 0.0])
                spent[0] += time.process_time() - cpu
                spent[1] += time.perf_counter() - wall

        setattr(owner, name, timed)

    cli = sys.modules["k3snet.cli"]
    wrap(sys.modules["k3snet.spec.cache"], "load_spec_cached", "spec")
    wrap(cli, "gather_facts", "facts")
    wrap(cli, "compile_for", "compile")
    wrap(k3snet.backends.group.BackendGroup, "observe", "observe")
    wrap(sys.modules["k3snet.converge"], "plan", "plan")
    wrap(k3snet.backends.group.BackendGroup, "apply", "apply")
    wrap(cli, "_print_apply", "print")
    wrap(k3snet.backends.group.BackendGroup, "close", "close")
    code = cli.main(argv)
    times["total"] = [time.process_time() - cpu0, time.perf_counter() - wall0]
    print(json.dumps(times), file=sys.stderr)
    # Then the process ends as the console script ends it (a version without
    # k3snet.__main__.end leaves through Python's teardown).
    import k3snet.__main__  # noqa: PLC0415

    end = getattr(k3snet.__main__, "end", None)
    return int(end(int(code or 0)) if end is not None else code or 0)


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2:])
    sys.path.insert(0, str(Path(__file__).parent))
    import bench_paths as paths  # noqa: PLC0415 - needs root, only here

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the other install's python")
    parser.add_argument("--after", default=sys.executable)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--read-timeout", type=float, default=300.0)
    parser.add_argument("--backends", nargs="+", choices=list(paths.BACKENDS),
                        default=["routes", "nftables"])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true",
                      help="a full apply from an empty node instead of one change")
    mode.add_argument("--plan", action="store_true",
                      help="`k3snet plan` of one pending change instead of applying it")
    mode.add_argument("--observe", action="store_true",
                      help="`k3snet observe` (no spec, so no hint) instead of applying")
    args = parser.parse_args()
    versions = {"before": args.before, "after": args.after}
    for name in args.backends:
        extra = (["--backend-opt", f"nftables.read_timeout={args.read_timeout}"]
                 if name == "nftables" else [])
        with paths.node(name) as n:
            base, plus = n.spec(args.count), n.spec(args.count, 1)

            def apply(python: str, spec: Path, n: paths.Node = n, extra: list[str] = extra,
                      command: str = "apply") -> dict[str, list[float]]:
                # Each version its own spec cache: its key holds the modules' mtimes, so
                # the two versions in turn would each parse the other's YAML again.
                state = n.tmp / ("state-before" if python == args.before else "state-after")
                state.mkdir(exist_ok=True)
                cpu, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
                argv = {"plan": ["plan", "-f", str(spec)], "observe": ["observe"]}.get(
                    command, ["apply", "-f", str(spec), "--auto-approve", "--allow-teardown"])
                done = subprocess.run(
                    [python, __file__, "--child", *argv, "--netns", n.ns, *n.args, *extra],
                    check=False, env={**n.env, "K3SNET_STATE_DIR": str(state)},
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                if done.returncode not in ((2,) if command == "plan" else (0,)):
                    raise SystemExit(f"k3snet {command} failed: {done.stderr[-2000:]}")
                wall = time.perf_counter() - wall
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu_s = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
                result: dict[str, list[float]] = json.loads(done.stderr.strip().splitlines()[-1])
                # The whole process as the parent sees it, and what lies outside the
                # stages timed inside: the interpreter's start and the process's end.
                result["process"] = [cpu_s, wall]
                result["outside"] = [cpu_s - result["total"][0], wall - result["total"][1]]
                return result

            for spec in (base, plus, base):  # fill the caches, as earlier runs would
                for python in dict.fromkeys(versions.values()):
                    apply(python, spec)
            results: dict[str, list[dict[str, list[float]]]] = {k: [] for k in versions}
            for _ in range(args.runs):
                for key, python in versions.items():
                    if args.full:
                        n.destroy()
                        paths.settle()
                        results[key].append(apply(python, base))
                        continue
                    if args.plan or args.observe:  # one change pending, as in the apply
                        paths.settle()
                        results[key].append(apply(python, plus, command="plan" if args.plan
                                                  else "observe"))
                        continue
                    for spec in (plus, base):
                        paths.settle()
                        results[key].append(apply(python, spec))
            for key, samples in results.items():
                stages = "  ".join(
                    f"{stage} {statistics.median(s[stage][0] for s in samples) * 1000:.0f}/"
                    f"{statistics.median(s[stage][1] for s in samples) * 1000:.0f}"
                    for stage in samples[0])
                print(f"{name:10} {key:6} CPU/wall ms: {stages}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
