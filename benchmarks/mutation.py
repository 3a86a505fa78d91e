"""mutmut with a narrower test selection, and a fresh-process judge for its survivors.

``make mutation`` uses both (docs/testing.md, "Mutation testing").

``run``: mutmut's own ``run`` with ``pytest_add_cli_args_test_selection`` of
``[tool.mutmut]`` replaced by the test paths in ``MUTATION_TESTS`` (space
separated), when that is set. mutmut reads its settings only from
pyproject.toml; this keeps one module group's run to the tests that judge it
without a second copy of the settings.

``fresh``: judges mutants again, each in a new ``python -m pytest`` process
started with ``MUTANT_UNDER_TEST`` set, so the mutant is active while k3snet is
imported. mutmut's workers are forks of a process that imported k3snet with no
mutant active: a function that runs at import time (building the spec's field
table) keeps its original result there, and its mutants survive whatever the
tests check. By default it judges every survivor and "no tests" mutant of a
function that runs when k3snet's modules are imported (found by importing them
all in ``mutants/`` with mutmut's call recording on); ``--all`` judges every
survivor. A kill is pytest failing; the verdicts go to ``mutants/fresh.json``
(the mutmut results are left as they were).

    python benchmarks/mutation.py run --max-children 2 'k3snet.spec.*'
    python benchmarks/mutation.py fresh [--jobs 2] [--all] [--tests PATH ...] [NAME ...]
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mutmut.__main__ import cli
from mutmut.configuration import config
from mutmut.mutation.data import SourceFileMutationData
from mutmut.stats import status_by_exit_code
from mutmut.utils.file_utils import walk_mutatable_files
from mutmut.utils.format_utils import mangled_name_from_mutant_name

MUTANTS = Path("mutants")
VERDICTS = MUTANTS / "fresh.json"
# In mutants/, with mutmut's call recording on ("stats"): import every module of
# k3snet and print the functions that ran.
IMPORT_HITS = """
import importlib, json, pkgutil, sys
import k3snet
from mutmut.state import state
for info in pkgutil.walk_packages(k3snet.__path__, "k3snet."):
    try:
        importlib.import_module(info.name)
    except Exception:  # optional dependencies (nftables bindings, kubernetes ...)
        pass
json.dump(sorted(state()._stats), sys.stdout)
"""


def run(argv: list[str]) -> None:
    """mutmut's ``run`` with the test selection taken from MUTATION_TESTS."""
    tests = os.environ.get("MUTATION_TESTS", "").split()
    if tests:
        config().pytest_add_cli_args_test_selection = tests
    cli(["run", *argv])


def _results() -> dict[str, str]:
    """Every mutant's mutmut verdict, by name."""

    verdicts = {}
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        for name, code in data.exit_code_by_key.items():
            verdicts[name] = status_by_exit_code[code]
    return verdicts


def _import_time_functions() -> set[str]:
    """The mangled names of the functions that run while k3snet's modules are imported."""
    env = {**os.environ, "MUTANT_UNDER_TEST": "stats"}
    done = subprocess.run([sys.executable, "-c", IMPORT_HITS], cwd=MUTANTS, env=env,
                          capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout))


def _judge(name: str, tests: list[str]) -> str:
    """"killed" or "survived": the tests run in a new process with the mutant active."""
    env = {**os.environ, "MUTANT_UNDER_TEST": name}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
               "-p", "no:randomly", "--rootdir=.", *tests, *_pytest_args()]
    done = subprocess.run(command, cwd=MUTANTS, env=env, capture_output=True, check=False)
    # 5: no test collected; anything else but 0 is a failure of the tests (a kill).
    if done.returncode == 5:
        return "no tests"
    return "survived" if done.returncode == 0 else "killed"


def _pytest_args() -> list[str]:
    return list(config().pytest_add_cli_args)


def fresh(names: list[str], *, tests: list[str], jobs: int, every: bool) -> None:
    """Judge mutants in new processes, print and record each verdict."""
    verdicts = _results()
    if names:
        chosen = sorted(n for n in verdicts if any(fnmatch.fnmatch(n, p) for p in names))
    else:
        chosen = sorted(n for n, v in verdicts.items() if v in ("survived", "no tests"))
        if not every:
            hits = _import_time_functions()
            chosen = [n for n in chosen if mangled_name_from_mutant_name(n) in hits]
    recorded = json.loads(VERDICTS.read_text()) if VERDICTS.exists() else {}
    if not names:  # a mutant named again is judged again; the others once
        chosen = [n for n in chosen if n not in recorded]
    print(f"judging {len(chosen)} mutants in new processes with {' '.join(tests)}", flush=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for name, verdict in zip(chosen, pool.map(lambda n: _judge(n, tests), chosen), strict=True):
            print(f"{verdict}: {name}", flush=True)
            recorded[name] = verdict
            VERDICTS.write_text(json.dumps(recorded, indent=1, sort_keys=True))
    counts = {v: list(recorded.values()).count(v) for v in sorted(set(recorded.values()))}
    print(counts)


def main() -> None:
    if sys.argv[1:2] == ["run"]:
        run(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    judge = sub.add_parser("fresh", help="judge mutants in new processes")
    judge.add_argument("names", nargs="*", help="mutant names or globs (default: see --all)")
    judge.add_argument("--all", action="store_true", dest="every",
                       help="every survivor, not only those of functions run at import time")
    judge.add_argument("--tests", nargs="+",
                       default=os.environ.get("MUTATION_TESTS", "").split() or None,
                       help="test paths (default: MUTATION_TESTS, else [tool.mutmut]'s)")
    judge.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    if args.tests is None:
        args.tests = list(config().pytest_add_cli_args_test_selection)
    fresh(args.names, tests=args.tests, jobs=args.jobs, every=args.every)


if __name__ == "__main__":
    main()
