"""``.ci/lowest_pins.py``: the ``==`` pins ``make test-lowest`` installs, one per dependency."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lowest_pins", ROOT / ".ci" / "lowest_pins.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _names(requirements: list[str]) -> set[str]:
    return {re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", r)[0]).lower()  # type: ignore[index]
            for r in requirements}


def test_every_dependency_and_extra_of_pyproject_has_one_pin_at_its_bound() -> None:
    done = subprocess.run([sys.executable, str(ROOT / ".ci" / "lowest_pins.py")],
                          capture_output=True, text=True, check=True)
    pins = done.stdout.split()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted += [r for r in extra if not r.startswith("k3snet[")]
    assert _names(pins) == _names(wanted)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+==[0-9][0-9A-Za-z.]*", pin) for pin in pins), pins
    for pin in pins:  # one of the bounds of its name (the highest: the test below)
        name, version = pin.split("==")
        assert any(_names([r]) == _names([name]) and f">={version}" in r for r in wanted), pin


def test_a_name_in_two_extras_takes_the_higher_bound() -> None:
    pyproject = {"project": {"dependencies": ["attrs>=23.2"], "optional-dependencies": {
        "a": ["PyYAML>=6"], "b": ["pyyaml>=6.0.3", "x[y]>=1.10"], "c": ["X>=1.9, <3"],
        "all": ["me[a,b,c]"]}}}
    assert _script().lowest_pins(pyproject, "me") == ["attrs==23.2", "pyyaml==6.0.3",
                                                      "x==1.10"]


@pytest.mark.parametrize("requirement", ["attrs", "attrs<24", "attrs==23.2", "attrs>=1,>=2"])
def test_a_requirement_without_exactly_one_lower_bound_is_refused(requirement: str) -> None:
    pyproject = {"project": {"dependencies": [requirement]}}
    with pytest.raises(ValueError, match="exactly one >= bound"):
        _script().lowest_pins(pyproject, "me")
