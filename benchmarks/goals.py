"""The figures issue 9 sets goals for: recorded by each benchmark, summed up by ``run.py``.

A benchmark calls :func:`record` for each figure; when ``run.py`` started it,
``K3SNET_BENCH_RESULTS`` names a JSON-lines file the records are appended to,
and ``run.py`` prints them as one table at the end, marking with ✗ every figure
above its goal. Wall time and CPU time (``resource.getrusage``, this process and
its children) are both kept: on a shared machine CPU time moves much less.
"""

from __future__ import annotations

import compileall
import importlib.util
import json
import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS_ENV = "K3SNET_BENCH_RESULTS"


def compile_bytecode() -> list[str]:
    """Byte-compile the k3snet that the benchmarks import, as ``pip install`` does.

    A cold process measured without ``.pyc`` files compiles every module from source:
    with ``PYTHONDONTWRITEBYTECODE=1`` in the caller's environment (a checkout whose
    ``.venv`` has an editable install never gets them), k3snet's imports took about
    300 ms instead of 150, and every cold figure carried that (``make bench`` of
    2026-12-04). ``compileall`` writes the files whatever that variable says. Returns
    the package directories compiled (for the log).
    """
    spec = importlib.util.find_spec("k3snet")
    places = list(spec.submodule_search_locations or []) if spec is not None else []
    for place in places:
        compileall.compile_dir(place, quiet=1)
    return places


# Every benchmark with a goal imports this module: its cold processes load bytecode.
compile_bytecode()


@dataclass
class Sample:
    """Medians of one measured thing: wall seconds and CPU seconds (self + children)."""

    wall: float
    cpu: float


def cpu_now() -> float:
    """CPU seconds used so far by this process and its waited-for children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def measure(fn: Callable[[], object], runs: int, *,
            before: Callable[[], object] | None = None) -> Sample:
    """Medians over ``runs`` calls of ``fn`` (``before`` runs untimed ahead of each)."""
    walls, cpus = [], []
    for _ in range(runs):
        if before is not None:
            before()
        cpu, start = cpu_now(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - start)
        cpus.append(cpu_now() - cpu)
    return Sample(statistics.median(walls), statistics.median(cpus))


@dataclass
class Figure:
    """One row of the summary: k3snet against the raw tool (or an absolute value)."""

    figure: str
    backend: str
    value: float  # the ratio (unit "x"), else the absolute value in ``unit``
    unit: str
    goal: float | None
    cpu_value: float | None = None  # the same ratio in CPU time
    detail: str = ""
    lower_is_better: bool = True

    def missed(self) -> bool:
        """Whether the figure is above its goal (wall time)."""
        return self.goal is not None and self.value > self.goal


def record(figure: Figure) -> None:
    """Print the figure, and append it to the results file when ``run.py`` asked for one."""
    print(f"  {figure.figure} [{figure.backend}]: {fmt(figure.value, figure.unit)}"
          f"{'' if figure.cpu_value is None else f' (CPU {fmt(figure.cpu_value, figure.unit)})'}"
          f"{'' if figure.goal is None else f', goal <= {fmt(figure.goal, figure.unit)}'}"
          f"{' MISSED' if figure.missed() else ''}  {figure.detail}", flush=True)
    path = os.environ.get(RESULTS_ENV)
    if path:
        with Path(path).open("a", encoding="utf-8") as out:
            out.write(json.dumps(asdict(figure)) + "\n")


def ratio(name: str, backend: str, ours: Sample, raw: Sample, *, goal: float | None,
          detail: str = "") -> Figure:
    """Record k3snet / raw (wall, and CPU) as one figure."""
    figure = Figure(name, backend, ours.wall / raw.wall, "x", goal,
                    ours.cpu / raw.cpu if raw.cpu > 0 else None,
                    f"{ours.wall * 1000:.1f} ms vs {raw.wall * 1000:.1f} ms; {detail}".rstrip("; "))
    record(figure)
    return figure


def fmt(value: float, unit: str) -> str:
    """A value with its unit, as the summary prints it."""
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "us":
        return f"{value:.1f} us"
    return f"{value:.1f} {unit}"


def read_results(path: Path) -> list[Figure]:
    """The figures recorded in ``path`` (one JSON object a line)."""
    if not path.exists():
        return []
    return [Figure(**json.loads(line)) for line in path.read_text().splitlines() if line]


def summary(figures: list[Figure]) -> str:
    """The table ``make bench`` ends with: every figure, its goal, ✗ when above it."""
    head = ["figure", "backend", "wall", "CPU", "goal", "", "detail"]
    rows = [[f.figure, f.backend, fmt(f.value, f.unit),
             "" if f.cpu_value is None else fmt(f.cpu_value, f.unit),
             "" if f.goal is None else f"<= {fmt(f.goal, f.unit)}",
             "" if f.goal is None else ("✗" if f.missed() else "✓"), f.detail]
            for f in figures]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [head, ["-" * w for w in widths], *rows]]
    missed = sum(f.missed() for f in figures)
    lines.append(f"\n{len(figures)} figures, {missed} above their goal (✗, by wall time; "
                 "CPU = the same ratio in CPU time, self + children)")
    return "\n".join(lines)
