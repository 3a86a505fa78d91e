"""The public API is typed for a program that embeds k3snet: its documented uses type-check
under ``mypy --strict`` with the types a reader expects, not ``Any``."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).resolve().parents[2]

EMBEDDING = '''
from typing import assert_type

import k3snet
from k3snet.backends import Backend
from k3snet.backends.memory import MemoryBackend

desired = k3snet.compile(k3snet.seed_spec())
with k3snet.create_backend("memory") as backend:
    assert_type(backend, Backend)
    p = k3snet.plan(backend.observe(), desired)
    assert_type(p, k3snet.Plan)
    assert_type(backend.apply(p), k3snet.ApplyResult)
with MemoryBackend() as memory:
    assert_type(memory, MemoryBackend)
with k3snet.BackendGroup([MemoryBackend()]) as group:
    assert_type(group, k3snet.BackendGroup)
'''


def test_the_documented_embedding_type_checks_with_the_types_a_reader_expects(
        strict_mypy: Callable[[str], str]) -> None:
    """``with k3snet.create_backend(...) as backend:`` (the package's own example) gave
    ``Any``: the protocol's ``__enter__`` returned ``Any``, so nothing in the block was
    checked."""
    assert strict_mypy("embedding") == ""


DESIRED_FUNCTIONS = '''
from pathlib import Path

import k3snet
from k3snet.agent import Agent, AgentOptions, FileSpecSource
from k3snet.converge import compile_for


def backends(spec: k3snet.Spec) -> k3snet.BackendGroup:
    return k3snet.BackendGroup([k3snet.create_backend("memory")])


def compiled(spec: k3snet.Spec, group: k3snet.BackendGroup) -> k3snet.State:
    return compile_for(group, spec)


def holding(spec: k3snet.Spec, group: k3snet.BackendGroup, *,
            hold: frozenset[int] = frozenset()) -> k3snet.State:
    return compile_for(group, spec, hold=hold)


def unfit(spec: k3snet.Spec) -> k3snet.State:
    return k3snet.compile(spec)


source, options = FileSpecSource(Path("spec.yaml")), AgentOptions("node-1")
Agent(source, backends, compiled, options)
Agent(source, backends, holding, options)
Agent(source, backends, lambda spec, group: compile_for(group, spec), options)
Agent(source, backends, unfit, options)  # type: ignore[arg-type]
'''


def test_the_agent_takes_a_desired_function_of_two_arguments_or_with_hold_under_strict_mypy(
        strict_mypy: Callable[[str], str]) -> None:
    """``Agent``'s ``desired`` was typed as a function taking ``hold``, though the agent
    reads the function's signature and calls one of two arguments without it: a program
    passing ``(spec, group) -> State`` failed ``mypy --strict`` (``arg-type``). A
    function of one argument stays refused (strict's ``warn_unused_ignores`` says so
    if its ignore silences nothing)."""
    assert strict_mypy("desired") == ""


PROGRAMS = {"embedding": EMBEDDING, "desired": DESIRED_FUNCTIONS}


@pytest.fixture(scope="module")
def strict_mypy(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], str]:
    """One ``mypy --strict`` run over every program of this module; ``strict_mypy(name)``
    gives what it reported of program ``name``, empty if nothing. Most of a run is checking
    k3snet itself and what it imports, the same for each program: one run shares that."""
    root = tmp_path_factory.mktemp("typed-api")
    paths = {name: root / f"{name}.py" for name in PROGRAMS}
    for name, text in PROGRAMS.items():
        paths[name].write_text(text, encoding="utf-8")
    # A warm start from the cache `make typecheck` leaves (`make test` runs it first): the
    # same options (pyproject's, which these flags repeat), so mypy reuses what it found of
    # k3snet's modules whose source is unchanged and checks the rest and the programs
    # again; the result is the same as cold. Cold, the run took 20 s of CPU, k3snet.agent's
    # imports mostly; warm, about 1 s. Without that cache (`make pytest` alone), cold.
    cache = root / "cache"
    if (ROOT / ".mypy_cache" / "3.11").is_dir():
        shutil.copytree(ROOT / ".mypy_cache" / "3.11", cache / "3.11")
    out, err, status = mypy_api.run([
        "--strict", "--no-error-summary", "--cache-dir", str(cache),
        "--python-version", "3.11", *map(str, paths.values())])
    lines = out.splitlines()
    # Each message line starts with its file's path; a failure naming no program (a
    # crash, a bad option) fails every test.
    assert status == 0 or all(line.startswith(tuple(map(str, paths.values())))
                              for line in lines), out + err
    assert not err, err

    def reported(name: str) -> str:
        return "\n".join(line for line in lines if line.startswith(f"{paths[name]}:"))

    return reported
