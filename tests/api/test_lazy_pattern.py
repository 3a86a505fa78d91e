"""k3snet._regex.lazy_pattern: a pattern compiled on first use answers as ``re.compile``'s."""

from __future__ import annotations

import ast
import copy
import importlib
import pickle
import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

import k3snet
from k3snet._regex import _METHODS, LazyPattern, lazy_pattern

PATTERNS = [r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", r"(0|[1-9][0-9]*)(?:-(0|[1-9][0-9]*))?",
            r"[,-]", r"\\(?:\\|[ntr]|x[0-9a-f]{2})", r"line \d+,? column \d+"]
TEXT = st.text(alphabet="az09-,\\ntrxline column", max_size=30)


@given(st.sampled_from(PATTERNS), TEXT, st.booleans())
def test_every_method_of_a_lazy_pattern_answers_as_the_compiled_patterns(
        pattern: str, text: str, first_use_is_sub: bool) -> None:
    lazy, compiled = lazy_pattern(pattern, re.IGNORECASE), re.compile(pattern, re.IGNORECASE)
    if first_use_is_sub:  # the first call compiles: any method may be it
        assert lazy.sub("<\\g<0>>", text) == compiled.sub("<\\g<0>>", text)

    def spans(matches: list[re.Match[str] | None]) -> list[tuple[int, int] | None]:
        return [m.span() if m else None for m in matches]

    for _ in range(2):  # before and after the compiled methods replace the lazy ones
        assert spans([lazy.fullmatch(text), lazy.match(text), lazy.search(text),
                      lazy.search(text, 1, 5)]) == \
            spans([compiled.fullmatch(text), compiled.match(text), compiled.search(text),
                   compiled.search(text, 1, 5)])
        assert lazy.sub(lambda m: m.group().upper(), text, 1) == \
            compiled.sub(lambda m: m.group().upper(), text, 1)
        assert lazy.subn("", text) == compiled.subn("", text)
        assert lazy.split(text) == compiled.split(text)
        assert lazy.findall(text) == compiled.findall(text)
        assert [m.span() for m in lazy.finditer(text)] == \
            [m.span() for m in compiled.finditer(text)]
    assert lazy.pattern == pattern
    assert lazy.compiled() is lazy.compiled()


def _lazy_names(tree: ast.Module) -> set[str]:
    """The module-level names a module binds to ``lazy_pattern(...)``."""
    return {target.id for node in tree.body if isinstance(node, ast.Assign | ast.AnnAssign)
            and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
            and node.value.func.id == "lazy_pattern"
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name)}


def test_no_method_of_a_lazy_pattern_is_taken_without_being_called() -> None:
    """``match = _LINE.match`` taken before the first call keeps the lazy method, which
    looks the compiled pattern up at every call: a loop over a spec's 40 000 lines ran
    ~25% slower on the cold path (it is the only read there). Take ``.compiled().match``."""
    package = Path(k3snet.__file__).parent
    texts = {path: path.read_text(encoding="utf-8") for path in sorted(package.rglob("*.py"))}
    trees = {path: ast.parse(text) for path, text in texts.items() if "lazy_pattern" in text}
    lazy = {".".join(path.relative_to(package.parent).with_suffix("").parts): _lazy_names(tree)
            for path, tree in trees.items()}
    shared = {name for names in lazy.values() for name in names if not name.startswith("_")}
    trees |= {path: ast.parse(text) for path, text in texts.items()
              if path not in trees and any(name in text for name in shared)}
    taken = []
    for path, tree in trees.items():
        nodes = list(ast.walk(tree))
        names = set(_lazy_names(tree))
        for node in nodes:
            if isinstance(node, ast.ImportFrom) and node.module in lazy:
                names |= {alias.asname or alias.name for alias in node.names
                          if alias.name in lazy[node.module]}
        called = {id(node.func) for node in nodes if isinstance(node, ast.Call)}
        taken += [f"{path.name}:{node.lineno}" for node in nodes
                  if isinstance(node, ast.Attribute) and node.attr in _METHODS
                  and isinstance(node.value, ast.Name) and node.value.id in names
                  and id(node) not in called]
    assert not taken, taken


def test_a_lazy_pattern_pickles_and_copies_before_and_after_its_first_use() -> None:
    """As ``re.compile``'s: by its text and flags, compiled or not."""
    lazy = lazy_pattern(r"[a-z]+", re.IGNORECASE)
    for _ in range(2):
        pickled = pickle.loads(pickle.dumps(lazy))  # noqa: S301 - its own bytes
        for again in (pickled, copy.copy(lazy), copy.deepcopy(lazy)):
            assert (again.pattern, again.fullmatch("AbC") is not None) == (r"[a-z]+", True)
        assert lazy.match("x")  # compiled from here on


def test_every_lazy_pattern_of_k3snet_compiles() -> None:
    """Compiled at import, a broken pattern failed every test that imported its module;
    lazy, it fails only where it is first used (a plan file's certificate, a Go duration),
    maybe never in a test. Every module-level one is compiled here."""
    package = Path(k3snet.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        if "lazy_pattern(" not in path.read_text(encoding="utf-8") or path.name == "_regex.py":
            continue
        module = importlib.import_module(
            ".".join(path.relative_to(package.parent).with_suffix("").parts))
        for name, value in vars(module).items():
            if isinstance(value, LazyPattern):
                found.append(f"{module.__name__}.{name}")
                assert isinstance(value.compiled(), re.Pattern), name
    assert len(found) >= 40, found  # the walk found them
