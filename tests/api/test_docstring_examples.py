"""Every ``>>>`` example in k3snet's docstrings holds.

The examples are what a reader of the API reference copies first, so each
module that has one is a test: a docstring that drifts from the code (a new
line in a rendered file, a renamed field) fails here, not in a user's session.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import k3snet

_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules_with_examples() -> list[str]:
    found = []
    for info in pkgutil.walk_packages(k3snet.__path__, prefix="k3snet."):
        if info.name.endswith("__main__"):
            continue  # running it is running the CLI
        spec = importlib.util.find_spec(info.name)
        origin = spec.origin if spec is not None else None
        if origin and origin.endswith(".py") and ">>> " in Path(origin).read_text():
            found.append(info.name)
    return sorted(found)


MODULES = _modules_with_examples()


def test_the_examples_are_found() -> None:
    assert "k3snet.planner" in MODULES
    assert "k3snet.render.nftables" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_the_module_examples_hold(name: str) -> None:
    module = importlib.import_module(name)
    failed, tried = doctest.testmod(module, optionflags=_FLAGS, report=True, verbose=False)
    assert failed == 0, f"{failed} of {tried} examples of {name} fail (printed above)"
