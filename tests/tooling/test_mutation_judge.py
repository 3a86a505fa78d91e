"""The in-process mutation judge of ``benchmarks/mutation.py`` (``make mutation``'s last step).

Root-free: the judge runs against a tiny stand-in for mutmut's ``mutants/`` copy, a
package whose functions read ``MUTANT_UNDER_TEST`` as mutmut's trampolines do.
"""

from __future__ import annotations

import math
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from mutmut.configuration import config

from benchmarks import mutation

FAKE_PACKAGE = """
import functools
import os


def _active(name):
    # As mutmut's trampolines: "fail" makes every mutated function raise.
    if os.environ.get("MUTANT_UNDER_TEST") == "fail":
        raise RuntimeError("fail")
    return os.environ.get("MUTANT_UNDER_TEST") == f"fakepkg.{name}"


def double(x):
    return x + x + (1 if _active("x_double__mutmut_1") else 0)


def halve(x):
    # mutant 1 is equivalent: it only changes a value no test reads
    return x // 2 + 0 * _active("x_halve__mutmut_1")


def spin():
    while _active("x_spin__mutmut_1"):
        pass
    return 1


@functools.lru_cache
def table():
    return 2 if _active("x_table__mutmut_1") else 3
"""

FAKE_TESTS = """
import fakepkg


def test_double():
    assert fakepkg.double(2) == 4


def test_halve():
    assert fakepkg.halve(4) == 2


def test_spin():
    assert fakepkg.spin() == 1


def test_table():
    assert fakepkg.table() == 3
"""


@pytest.fixture
def judge(tmp_path: Path) -> Iterator[mutation.Judge]:
    (tmp_path / "fakepkg").mkdir()
    (tmp_path / "fakepkg" / "__init__.py").write_text(textwrap.dedent(FAKE_PACKAGE))
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_fake.py").write_text(textwrap.dedent(FAKE_TESTS))
    judge = mutation.Judge(
        tmp_path, shadowed=None, package="fakepkg", memory=0, log=tmp_path / "judge.log"
    )
    yield judge
    judge.close()


def test_judge_kills_survives_and_times_out(
    judge: mutation.Judge, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mutmut's CPU limit for a mutant whose tests take no time: 6 s instead of 30 s.
    # The mutant after the endless loop runs in a new child, whose imports spend ~2-3 s
    # of CPU on a loaded 2-core machine: a 3 s limit judged it "timeout" in one CI run.
    monkeypatch.setattr(config(), "timeout_multiplier", 3.0)
    stats = {
        "tests_by_mangled_function_name": {
            "fakepkg.x_double": ["tests/test_fake.py::test_double"],
            "fakepkg.x_halve": ["tests/test_fake.py::test_halve"],
            "fakepkg.x_spin": ["tests/test_fake.py::test_spin"],
            "fakepkg.x_table": ["tests/test_fake.py::test_table"],
        },
        "duration_by_test": {},
    }
    verdicts: dict[str, str] = {}
    mutants = [
        "fakepkg.x_table__mutmut_1",
        "fakepkg.x_halve__mutmut_1",
        "fakepkg.x_spin__mutmut_1",
        "fakepkg.x_double__mutmut_1",
        "fakepkg.x_gone__mutmut_1",
    ]
    mutation.judge_in_process(
        judge,
        mutants,
        paths=["tests"],
        stats=stats,
        timeout=None,
        record=verdicts.__setitem__,
        pytest_args=["-p", "no:cacheprovider"],
    )
    # table() cached by the clean run (same process) is computed again under its mutant;
    # the endless loop is stopped by its CPU limit and the next mutant runs in a new child.
    assert list(verdicts.items()) == [
        ("fakepkg.x_table__mutmut_1", "killed"),
        ("fakepkg.x_halve__mutmut_1", "survived"),
        ("fakepkg.x_spin__mutmut_1", "timeout"),
        ("fakepkg.x_double__mutmut_1", "killed"),
        ("fakepkg.x_gone__mutmut_1", "no tests"),
    ]


def test_judge_refuses_tests_that_fail_with_no_mutant(
    judge: mutation.Judge, tmp_path: Path
) -> None:
    (tmp_path / "tests" / "test_broken.py").write_text("def test_broken():\n    assert False\n")
    with pytest.raises(RuntimeError, match="fail with no mutant"):
        mutation.judge_in_process(
            judge,
            ["fakepkg.x_double__mutmut_1"],
            paths=["tests"],
            stats=None,
            timeout=None,
            record=lambda *_: None,
            pytest_args=["-p", "no:cacheprovider"],
        )


def test_verdicts_of_pytest_outcomes() -> None:
    # 4 (test ids not found) after a control run that found them: the mutant broke
    # the collection, a kill.
    assert [mutation.verdict_of(o) for o in (0, 1, 2, 4, 5, "timeout", "crashed")] == [
        "survived",
        "killed",
        "killed",
        "killed",
        "no tests",
        "timeout",
        "crashed",
    ]


def test_cpu_limit_is_mutmuts_unless_fixed() -> None:
    stats = {"duration_by_test": {"t1": 1.5, "t2": 2.5}}
    cfg = config()
    expected = math.ceil((4.0 + cfg.timeout_constant) * cfg.timeout_multiplier * 2)
    assert mutation.cpu_limit(["t1", "t2"], stats, None) == expected
    assert mutation.cpu_limit(["t1", "t2"], stats, 20.5) == 21
    assert mutation.cpu_limit(["tests"], None, None) == mutation.NO_STATS_LIMIT


def test_default_choice_is_the_unjudged_and_the_survivors_not_recorded() -> None:
    verdicts = {
        "m.a__mutmut_1": "killed",
        "m.a__mutmut_2": "survived",
        "m.a__mutmut_3": "not checked",
        "m.b__mutmut_1": "check was interrupted by user",
        "m.b__mutmut_2": "no tests",
        "m.b__mutmut_3": "survived",
    }
    recorded = {"m.b__mutmut_3": "survived"}
    assert mutation.inproc_choice(verdicts, recorded, [], unjudged_only=False) == [
        "m.a__mutmut_2",
        "m.a__mutmut_3",
        "m.b__mutmut_1",
    ]
    assert mutation.inproc_choice(verdicts, recorded, [], unjudged_only=True) == [
        "m.a__mutmut_3",
        "m.b__mutmut_1",
    ]
    # Named ones are judged whatever their verdict, again if recorded ...
    assert mutation.inproc_choice(verdicts, recorded, ["m.b*"], unjudged_only=False) == [
        "m.b__mutmut_1",
        "m.b__mutmut_2",
        "m.b__mutmut_3",
    ]
    # ... unless only the unjudged ones among them are asked for.
    assert mutation.inproc_choice(verdicts, recorded, ["m.b*"], unjudged_only=True) == [
        "m.b__mutmut_1"
    ]


def test_tests_for_a_mutant_are_those_under_the_paths_quickest_first() -> None:
    stats = {
        "tests_by_mangled_function_name": {
            "k3snet.model.cidr.x_parse": [
                "tests/model/test_b.py::test_slow",
                "tests/model/test_a.py::test_quick[1]",
                "tests/cli/test_cli.py::test_c",
                "tests/modelling/test_d.py::test_d",
            ],
        },
        "duration_by_test": {
            "tests/model/test_b.py::test_slow": 2.0,
            "tests/model/test_a.py::test_quick[1]": 0.1,
        },
    }
    name = "k3snet.model.cidr.x_parse__mutmut_7"
    assert mutation.tests_for(name, ["tests/model/"], stats) == [
        "tests/model/test_a.py::test_quick[1]",
        "tests/model/test_b.py::test_slow",
    ]
    assert mutation.tests_for(name, ["tests/planner"], stats) is None
    assert mutation.tests_for(name, ["tests/planner"], None) == ["tests/planner"]


def test_clear_caches_reaches_module_and_class_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    import functools  # noqa: PLC0415
    import types  # noqa: PLC0415

    module = types.ModuleType("fakecached.sub")
    calls: list[int] = []

    @functools.lru_cache
    def cached() -> int:
        calls.append(1)
        return 1

    class Owner:
        @staticmethod
        @functools.cache
        def value() -> int:
            calls.append(2)
            return 2

    module.cached = cached  # type: ignore[attr-defined]
    module.Owner = Owner  # type: ignore[attr-defined]
    module.clear_caches = lambda: calls.append(3)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fakecached.sub", module)
    cached(), Owner.value(), cached(), Owner.value()
    mutation.clear_caches("fakecached")
    cached(), Owner.value()
    assert calls == [1, 2, 3, 1, 2]


def test_summary_counts_per_module() -> None:
    table = mutation.summary_table(
        {
            "k3snet.model.cidr.x_a__mutmut_1": "killed",
            "k3snet.model.cidr.xǁCidrǁb__mutmut_1": "timeout",
            "k3snet.model.cidr.x_a__mutmut_2": "survived",
            "k3snet.planner.x_plan__mutmut_1": "not checked",
            "k3snet.planner.x_plan__mutmut_2": "segfault",
        }
    )
    assert table.splitlines()[2:] == [
        "| k3snet.model.cidr | 1 | 1 | 1 | 0 | 0 | 0 | 66.7 % |",
        "| k3snet.planner | 0 | 0 | 0 | 0 | 1 | 1 | 0.0 % |",
        "| total | 1 | 1 | 1 | 0 | 1 | 1 | 50.0 % |",
    ]
