"""mutmut with a narrower test selection and a time budget, and two judges for what it leaves.

``make mutation`` uses the four commands in turn (docs/testing.md, "Mutation testing").

``run``: mutmut's own ``run`` with ``pytest_add_cli_args_test_selection`` of
``[tool.mutmut]`` replaced by the test paths in ``MUTATION_TESTS`` (space
separated), when that is set. mutmut reads its settings only from
pyproject.toml; this keeps one module group's run to the tests that judge it
without a second copy of the settings. ``MUTATION_BUDGET`` (minutes) stops
mutmut that long after it started judging mutants, as Ctrl-C would: the verdicts
so far are kept, the rest stay "not checked" for ``inproc``.

``inproc``: judges mutants in one long-lived pytest process, as mutmut's workers
do but without mutmut's scheduler (which stalls on mutants reached by hundreds
of tests): for each mutant it sets ``MUTANT_UNDER_TEST`` (mutmut's trampolines
read it on every call), clears k3snet's caches and calls ``pytest.main`` with the
tests that reach the mutated function (mutmut's stats, quickest first, ``-x``).
A kill is pytest failing. The process is a child with a CPU-time limit per
mutant (mutmut's own formula, or ``--timeout``) and a memory limit: a mutant that loops forever is
stopped, counted as a timeout, and a new child takes the next one. By default it
judges every mutant mutmut left unjudged and mutmut's survivors; ``--unjudged``
with globs judges only the unjudged mutants of those (what ``make mutation``
does). The verdicts go to ``mutants/inproc.json``.

``fresh``: judges mutants again, each in a new ``python -m pytest`` process
started with ``MUTANT_UNDER_TEST`` set, so the mutant is active while k3snet is
imported. mutmut's workers (and ``inproc``'s) import k3snet with no mutant
active: a function that runs at import time (building the spec's field table)
keeps its original result there, and its mutants survive whatever the tests
check. By default it judges every survivor and "no tests" mutant of a function
that runs when k3snet's modules are imported (found by importing them all in
``mutants/`` with mutmut's call recording on); ``--all`` judges every survivor.
A kill is pytest failing; the verdicts go to ``mutants/fresh.json``.

``summary``: every mutant's last verdict (mutmut's, then ``inproc``'s, then
``fresh``'s) counted per module, and the survivors listed.

    MUTATION_BUDGET=30 python benchmarks/mutation.py run --max-children 2 'k3snet.spec.*'
    python benchmarks/mutation.py inproc [NAME ...] [--unjudged] [--timeout S] [--tests PATH ...]
    python benchmarks/mutation.py fresh [--jobs 2] [--all] [--tests PATH ...] [NAME ...]
    python benchmarks/mutation.py summary [NAME ...]
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from mutmut.configuration import config
from mutmut.mutation.data import SourceFileMutationData
from mutmut.stats import status_by_exit_code
from mutmut.utils.file_utils import walk_mutatable_files
from mutmut.utils.format_utils import mangled_name_from_mutant_name

MUTANTS = Path("mutants")
VERDICTS = MUTANTS / "fresh.json"
INPROC_VERDICTS = MUTANTS / "inproc.json"
INPROC_LOG = MUTANTS / "inproc.log"
STATS = MUTANTS / "mutmut-stats.json"
# Verdicts mutmut leaves for a mutant it did not judge (stopped before it, or while
# judging it).
UNJUDGED = frozenset({"not checked", "check was interrupted by user"})
# CPU seconds a mutant may take when mutmut collected no stats (and what the control
# runs get on top of mutmut's limit, for importing and collecting).
NO_STATS_LIMIT = 600
# The columns of the summary, in order; any other verdict is counted under "other".
COLUMNS = ("killed", "timeout", "survived", "no tests")
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
    """mutmut's ``run``, tests from MUTATION_TESTS, stopped after MUTATION_BUDGET minutes."""
    import mutmut.__main__ as mutmut_main  # noqa: PLC0415 (heavy: only this command needs it)

    tests = os.environ.get("MUTATION_TESTS", "").split()
    if tests:
        config().pytest_add_cli_args_test_selection = tests
    budget = os.environ.get("MUTATION_BUDGET", "").strip()
    if budget:
        _stop_judging_after(mutmut_main, float(budget) * 60)
    mutmut_main.cli(["run", *argv])


def _stop_judging_after(mutmut_main: Any, seconds: float) -> None:
    """Interrupt mutmut ``seconds`` after it starts judging mutants.

    The clock starts after mutmut's last check before its judging loop (the forced
    failure run), inside which mutmut handles Ctrl-C by stopping its workers and
    keeping every verdict so far; before it, an interrupt would abort the stats run.
    """
    forced_fail = mutmut_main.run_forced_fail_test

    def start_clock(*args: Any, **kwargs: Any) -> Any:
        result = forced_fail(*args, **kwargs)
        print(f"mutmut judges mutants for {seconds / 60:g} minutes", flush=True)
        timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
        timer.daemon = True
        timer.start()
        return result

    mutmut_main.run_forced_fail_test = start_clock


def _results() -> dict[str, str]:
    """Every mutant's mutmut verdict, by name."""
    verdicts = {}
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        for name, code in data.exit_code_by_key.items():
            verdicts[name] = status_by_exit_code[code]
    return verdicts


def _recorded(path: Path) -> dict[str, str]:
    return json.loads(path.read_text()) if path.exists() else {}


def _verdicts(*judges: Path) -> dict[str, str]:
    """Every mutant's last verdict: mutmut's, replaced by those recorded in ``judges`` in turn."""
    verdicts = _results()
    for path in judges:
        verdicts.update(_recorded(path))
    return verdicts


def _import_time_functions() -> set[str]:
    """The mangled names of the functions that run while k3snet's modules are imported."""
    env = {**os.environ, "MUTANT_UNDER_TEST": "stats"}
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_HITS],
        cwd=MUTANTS,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(done.stdout))


def _judge(name: str, tests: list[str]) -> str:
    """ "killed" or "survived": the tests run in a new process with the mutant active."""
    env = {**os.environ, "MUTANT_UNDER_TEST": name}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
        "--rootdir=.",
        *tests,
        *_pytest_args(),
    ]
    done = subprocess.run(command, cwd=MUTANTS, env=env, capture_output=True, check=False)
    # 5: no test collected; anything else but 0 is a failure of the tests (a kill).
    if done.returncode == 5:
        return "no tests"
    return "survived" if done.returncode == 0 else "killed"


def _pytest_args() -> list[str]:
    return list(config().pytest_add_cli_args)


def fresh(names: list[str], *, tests: list[str], jobs: int, every: bool) -> None:
    """Judge mutants in new processes, print and record each verdict."""
    verdicts = _verdicts(INPROC_VERDICTS)
    if names:
        chosen = sorted(n for n in verdicts if any(fnmatch.fnmatch(n, p) for p in names))
    else:
        chosen = sorted(n for n, v in verdicts.items() if v in ("survived", "no tests"))
        if not every:
            hits = _import_time_functions()
            chosen = [n for n in chosen if mangled_name_from_mutant_name(n) in hits]
    recorded = _recorded(VERDICTS)
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


# ------------------------------------------------------------------ the in-process judge


def inproc_choice(
    verdicts: Mapping[str, str],
    recorded: Mapping[str, str],
    names: list[str],
    *,
    unjudged_only: bool,
) -> list[str]:
    """The mutants ``inproc`` judges.

    With ``unjudged_only``, those of ``names`` (names or globs; empty: every mutant)
    mutmut left unjudged and ``recorded`` (the in-process verdicts so far) does not
    hold. Otherwise every one named, again if recorded; with no names, the unjudged
    ones and mutmut's survivors not recorded yet.
    """
    pool = {
        n: v for n, v in verdicts.items() if not names or any(fnmatch.fnmatch(n, p) for p in names)
    }
    if names and not unjudged_only:
        return sorted(pool)
    wanted = UNJUDGED if unjudged_only else UNJUDGED | {"survived"}
    return sorted(n for n, v in pool.items() if v in wanted and n not in recorded)


def tests_for(mutant: str, paths: list[str], stats: Mapping[str, Any] | None) -> list[str] | None:
    """The tests that judge ``mutant``: those under ``paths`` reaching its function, quickest first.

    Without mutmut's stats (mutmut stopped before it collected them) every test under
    ``paths``; None when the stats say no test under ``paths`` reaches the function.
    """
    if stats is None:
        return list(paths)
    by_function = stats["tests_by_mangled_function_name"]
    reaching = by_function.get(mangled_name_from_mutant_name(mutant), [])
    durations = stats["duration_by_test"]
    chosen = [t for t in reaching if any(_under(t, p) for p in paths)]
    return sorted(chosen, key=lambda t: (durations.get(t, 0.0), t)) or None


def _under(test: str, path: str) -> bool:
    """Whether the test id ``test`` (``tests/x/test_y.py::test_z[p]``) lies under ``path``."""
    path = path.rstrip("/")
    return test == path or test.startswith((f"{path}/", f"{path}::"))


def cpu_limit(tests: Iterable[str], stats: Mapping[str, Any] | None, fixed: float | None) -> int:
    """CPU seconds a mutant may take: ``fixed`` if given, else what mutmut allows its workers.

    mutmut's limit is 30 times the stats' time of the tests, plus 30 s; without
    stats :data:`NO_STATS_LIMIT`.
    """
    if fixed is not None:
        return math.ceil(fixed)
    if stats is None:
        return NO_STATS_LIMIT
    estimate: float = sum(stats["duration_by_test"].get(t, 0.0) for t in tests)
    cfg = config()
    return math.ceil((estimate + cfg.timeout_constant) * cfg.timeout_multiplier * 2)


def clear_caches(package: str) -> None:
    """Clear the ``functools`` caches of ``package``'s modules and call their ``clear_caches``.

    Between mutants, so that no result computed under one mutant (or none) is
    served under the next.
    """
    for name, module in list(sys.modules.items()):
        if name != package and not name.startswith(f"{package}."):
            continue
        for value in list(vars(module).values()):
            owners = [value, *vars(value).values()] if isinstance(value, type) else [value]
            for owner in owners:
                # A static or class method holds its cached function as __func__.
                clear = getattr(getattr(owner, "__func__", owner), "cache_clear", None)
                if callable(clear):
                    clear()
        reset = vars(module).get("clear_caches")
        if callable(reset):
            reset()


def _serve(
    conn: Connection, *, root: str, shadowed: str | None, package: str, memory: int, log: str
) -> None:
    """The judge's child: run pytest in ``root`` once per mutant received, send back its exit code.

    ``shadowed`` is a directory taken off ``sys.path`` (the checkout, whose package
    would hide the mutated copy in ``root``); ``memory`` caps the address space
    (bytes, 0: no cap), so a mutant that allocates without end fails instead of
    taking the machine's memory.
    """
    import resource  # noqa: PLC0415 (the child's business only)

    import pytest  # noqa: PLC0415
    from mutmut.mutation.trampoline import set_mutant_under_test  # noqa: PLC0415

    assert package not in sys.modules, f"{package} was imported before the mutants were reachable"
    if shadowed is not None:
        sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(shadowed)]
    sys.path.insert(0, root)
    os.chdir(root)
    sink = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(sink, 1)
    os.dup2(sink, 2)
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    while (job := conn.recv()) is not None:
        mutant, args, seconds = job
        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = math.ceil(usage.ru_utime + usage.ru_stime + seconds)
        # SIGXCPU at the soft limit ends the process: the parent counts a timeout.
        resource.setrlimit(resource.RLIMIT_CPU, (soft, resource.RLIM_INFINITY))
        set_mutant_under_test(mutant)
        clear_caches(package)
        print(f"=== {mutant or '(no mutant)'}", flush=True)
        conn.send(int(pytest.main(args)))


class Judge:
    """A child process running pytest once per mutant, restarted after a timeout or a crash.

    ``judge`` returns pytest's exit code, or "timeout" when the mutant ran past its CPU
    limit (or ten times that in wall-clock time, for a mutant that waits forever), or
    "crashed" when the child died otherwise.
    """

    def __init__(
        self, root: Path, *, shadowed: Path | None, package: str, memory: int, log: Path
    ) -> None:
        self._settings = {
            "root": str(root.resolve()),
            "shadowed": None if shadowed is None else str(shadowed.resolve()),
            "package": package,
            "memory": memory,
            "log": str(log.resolve()),
        }
        self._context = multiprocessing.get_context("spawn")
        self._start()

    def _start(self) -> None:
        self._conn, child = self._context.Pipe()
        self._process = self._context.Process(
            target=_serve, args=(child,), kwargs=self._settings, daemon=True
        )
        self._process.start()
        child.close()

    def judge(self, mutant: str, args: list[str], cpu_seconds: int) -> int | str:
        self._conn.send((mutant, args, cpu_seconds))
        if self._conn.poll(10 * cpu_seconds + 60):
            try:
                return int(self._conn.recv())
            except EOFError:  # the child died before answering
                pass
        else:
            self._process.kill()
        self._process.join()
        code = self._process.exitcode
        self._start()
        return "timeout" if code in (-signal.SIGXCPU, -signal.SIGKILL) else "crashed"

    def close(self) -> None:
        """Stop the child: at once if it is idle, killed if it is still judging a mutant."""
        self._conn.send(None)
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


def verdict_of(outcome: int | str) -> str:
    """The verdict of one pytest outcome: a kill is pytest failing (exit code not 0).

    5 (nothing collected) is "no tests". 4, pytest's usage error, is a kill too: the
    control run took the same test ids with no mutant, so the mutant broke their
    collection (a test module that calls the mutated function when imported).
    """
    if isinstance(outcome, str):
        return outcome
    return {0: "survived", 5: "no tests"}.get(outcome, "killed")


def judge_in_process(
    judge: Judge,
    mutants: list[str],
    *,
    paths: list[str],
    stats: Mapping[str, Any] | None,
    timeout: float | None,
    record: Callable[[str, str], None],
    pytest_args: list[str],
) -> None:
    """Check the tests with no mutant and with every trampoline failing, then judge ``mutants``."""

    def args(tests: list[str]) -> list[str]:
        return ["--rootdir=.", "--tb=native", "-x", "-q", "-p", "no:randomly", *tests, *pytest_args]

    jobs = {m: tests_for(m, paths, stats) for m in mutants}
    every = sorted({t for tests in jobs.values() if tests for t in tests}) or paths
    if mutants:
        # Every test runs (no -x stop): mutmut's limit, not ``timeout``, and the first run
        # also imports and collects everything.
        limit = cpu_limit(every, stats, None) + NO_STATS_LIMIT
        clean = judge.judge("", args(every), limit)
        if clean != 0:
            raise RuntimeError(f"the tests fail with no mutant active ({clean}): see {INPROC_LOG}")
        if judge.judge("fail", args(every), limit) == 0:
            raise RuntimeError(
                "the tests pass with every mutated function failing: "
                "they do not reach the mutants' copy"
            )
    for mutant, tests in jobs.items():
        if tests is None:
            verdict = "no tests"
        else:
            verdict = verdict_of(judge.judge(mutant, args(tests), cpu_limit(tests, stats, timeout)))
        record(mutant, verdict)


def inproc(
    names: list[str], *, tests: list[str], unjudged_only: bool, timeout: float | None, memory: int
) -> None:
    """Judge mutants in one pytest process, print and record each verdict, then the summary."""
    recorded = _recorded(INPROC_VERDICTS)
    chosen = inproc_choice(_results(), recorded, names, unjudged_only=unjudged_only)
    stats = json.loads(STATS.read_text()) if STATS.exists() else None
    print(
        f"judging {len(chosen)} mutants in one process with {' '.join(tests)}"
        f"{'' if stats else ' (no mutmut stats: every test for each)'}",
        flush=True,
    )

    if not chosen:
        return

    def record(mutant: str, verdict: str) -> None:
        print(f"{verdict}: {mutant}", flush=True)
        recorded[mutant] = verdict
        INPROC_VERDICTS.write_text(json.dumps(recorded, indent=1, sort_keys=True))

    judge = Judge(MUTANTS, shadowed=Path(), package="k3snet", memory=memory, log=INPROC_LOG)
    # A terminated judge stops its child too (a mutant may run for minutes).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        judge_in_process(
            judge,
            chosen,
            paths=tests,
            stats=stats,
            timeout=timeout,
            record=record,
            pytest_args=_pytest_args(),
        )
    finally:
        judge.close()
    print(summary_table(recorded))


# ------------------------------------------------------------------ the summary


def module_of(mutant: str) -> str:
    """``k3snet.model.cidr`` of ``k3snet.model.cidr.xǁCidrǁmethod__mutmut_3``."""
    return mutant.rpartition(".")[0]


def summary_table(verdicts: Mapping[str, str]) -> str:
    """A Markdown table of the verdicts counted per module, with a total."""
    by_module: dict[str, Counter[str]] = {}
    for mutant, verdict in verdicts.items():
        by_module.setdefault(module_of(mutant), Counter())[verdict] += 1
    by_module["total"] = sum(by_module.values(), Counter())
    head = ["module", *COLUMNS, "other", "not judged", "score"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for module, counts in sorted(by_module.items(), key=lambda kv: (kv[0] == "total", kv[0])):
        cells = [counts[c] for c in COLUMNS]
        unjudged = sum(counts[v] for v in UNJUDGED)
        other = counts.total() - sum(cells) - unjudged
        judged = counts.total() - unjudged
        score = f"{100 * (counts['killed'] + counts['timeout']) / judged:.1f} %" if judged else "-"
        row = [module, *map(str, [*cells, other, unjudged]), score]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def summary(names: list[str]) -> None:
    """Print each mutant's last verdict (of ``names``, globs) per module, then the survivors."""
    verdicts = {
        n: v
        for n, v in _verdicts(INPROC_VERDICTS, VERDICTS).items()
        if not names or any(fnmatch.fnmatch(n, p) for p in names)
    }
    print(summary_table(verdicts))
    for mutant, verdict in sorted(verdicts.items()):
        if verdict not in ("killed", "timeout"):
            print(f"    {mutant}: {verdict}")


def main() -> None:
    if sys.argv[1:2] == ["run"]:
        run(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tests_help = "test paths (default: MUTATION_TESTS, else [tool.mutmut]'s)"
    default_tests = os.environ.get("MUTATION_TESTS", "").split() or None
    judge = sub.add_parser("fresh", help="judge mutants in new processes")
    judge.add_argument("names", nargs="*", help="mutant names or globs (default: see --all)")
    judge.add_argument(
        "--all",
        action="store_true",
        dest="every",
        help="every survivor, not only those of functions run at import time",
    )
    judge.add_argument("--tests", nargs="+", default=default_tests, help=tests_help)
    judge.add_argument("--jobs", type=int, default=1)
    one = sub.add_parser("inproc", help="judge mutants in one pytest process")
    one.add_argument(
        "names",
        nargs="*",
        help="mutant names or globs (default: the unjudged ones and the survivors)",
    )
    one.add_argument(
        "--unjudged",
        action="store_true",
        dest="unjudged_only",
        help="only those (of the names) mutmut did not judge and not judged yet",
    )
    one.add_argument("--tests", nargs="+", default=default_tests, help=tests_help)
    one.add_argument(
        "--timeout",
        type=float,
        help="CPU seconds per mutant (default: mutmut's limit from its stats, 600 without)",
    )
    one.add_argument(
        "--memory",
        type=float,
        default=4.0,
        help="GiB of address space for the judging process (default: 4, 0: no cap)",
    )
    total = sub.add_parser("summary", help="the last verdict of every mutant, per module")
    total.add_argument("names", nargs="*", help="mutant names or globs (default: every mutant)")
    args = parser.parse_args()
    if args.command == "summary":
        summary(args.names)
        return
    if args.tests is None:
        args.tests = list(config().pytest_add_cli_args_test_selection)
    if args.command == "fresh":
        fresh(args.names, tests=args.tests, jobs=args.jobs, every=args.every)
    else:
        inproc(
            args.names,
            tests=args.tests,
            unjudged_only=args.unjudged_only,
            timeout=args.timeout,
            memory=int(args.memory * 2**30),
        )


if __name__ == "__main__":
    main()
