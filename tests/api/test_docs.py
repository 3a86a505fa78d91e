"""Every tutorial page runs as a test.

Each ```` ```python ```` fenced block of a ``docs/*.md`` page is executed, in page
order, in one namespace shared by the whole page (one page = one test). Blocks
whose info string is ``python no-run`` are shown in the docs but not executed.
Pages without a runnable block are not collected.

Blocks are compiled with the page as their file name and their real line
numbers, so a traceback points at the line in the Markdown page. A ```` ```text ````
block that comes next after a runnable block (prose between them, no other block) is
what that block prints: the test compares them.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import NamedTuple

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"

_FENCE_OPEN = re.compile(r"^(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")


class Block(NamedTuple):
    line: int  # 1-based line of the first code line (just after the opening fence)
    code: str
    runs: bool
    prints: str | None = None  # the text block next after it: its output


def python_blocks(text: str) -> list[Block]:
    """The ``python`` fenced blocks of a Markdown text, in order."""
    blocks: list[Block] = []
    last_was_python = False
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE_OPEN.match(lines[i].strip())
        # Fences may be indented (inside a list or an admonition): so is their code.
        indent = len(lines[i]) - len(lines[i].lstrip())
        i += 1
        if opening is None:
            continue
        fence, info = opening["fence"], opening["info"].split()
        start = i
        # A fence closes on a line of the same character, at least as long.
        while i < len(lines) and not (
            lines[i].strip().startswith(fence) and set(lines[i].strip()) == {fence[0]}
        ):
            i += 1
        body = [line[indent:] if not line[:indent].strip() else line for line in lines[start:i]]
        i += 1  # the closing fence
        shown = "\n".join(body) + "\n"
        if info and info[0] == "python":
            blocks.append(Block(start + 1, shown, "no-run" not in info[1:]))
        elif info == ["text"] and last_was_python and blocks[-1].runs:
            blocks[-1] = blocks[-1]._replace(prints=shown)
        last_was_python = bool(info) and info[0] == "python"
    return blocks


def _runnable_pages() -> list[Path]:
    return [
        page
        for page in sorted(DOCS.glob("*.md"))
        if any(block.runs for block in python_blocks(page.read_text(encoding="utf-8")))
    ]


class DocsBlockError(AssertionError):
    """A code block of a documentation page failed."""


RUN_ELSEWHERE = {
    # Its three run_conformance blocks (the page's costliest, ~8 s of CPU) run in a test
    # module of their own there, beside nothing but the import of the page's complete
    # backend, UserWarnings as errors: run here too, they ran twice alike. No later block
    # uses a name they make.
    "custom-backend.md": ("Test it with the conformance suite",
                          "tests/backends/test_custom_backend_page.py"),
}
"""Pages with a section whose blocks another test runs: the page's name, the section's
heading and that test; here they are left out."""


def section_lines(text: str, heading: str) -> range:
    """The lines (1-based) of the ``## heading`` section of a Markdown text."""
    lines = text.splitlines()
    start = lines.index(f"## {heading}") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return range(start, end + 1)


# A page's example that warns shows a reader the weaker practice (run_conformance on a
# system holding no foreign object): it fails here.
@pytest.mark.filterwarnings("error::UserWarning")
@pytest.mark.parametrize("page", _runnable_pages(), ids=lambda page: page.name)
def test_page_runs(page: Path) -> None:
    namespace: dict[str, object] = {"__name__": f"docs.{page.stem.replace('-', '_')}"}
    text = page.read_text(encoding="utf-8")
    elsewhere = (section_lines(text, RUN_ELSEWHERE[page.name][0])
                 if page.name in RUN_ELSEWHERE else range(0))
    for block in python_blocks(text):
        if not block.runs or block.line in elsewhere:
            continue
        # Leading newlines keep the Markdown line numbers in tracebacks.
        source = "\n" * (block.line - 1) + block.code
        where = f"{page.relative_to(DOCS.parent)}, python block at line {block.line}"
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                exec(compile(source, str(page), "exec"), namespace)  # noqa: S102 - our own docs
        except Exception as exc:
            raise DocsBlockError(f"{where} failed: {type(exc).__name__}: {exc}") from exc
        if block.prints is not None and printed.getvalue() != block.prints:
            raise DocsBlockError(f"{where} prints:\n{printed.getvalue()}\nnot what the page "
                                 f"shows after it:\n{block.prints}")


@pytest.mark.parametrize("page", sorted(RUN_ELSEWHERE))
def test_a_section_left_out_of_its_page_s_run_has_runnable_blocks_its_test_runs(
        page: str) -> None:
    heading, test = RUN_ELSEWHERE[page]
    text = (DOCS / page).read_text(encoding="utf-8")
    lines = section_lines(text, heading)
    assert [b for b in python_blocks(text) if b.runs and b.line in lines]
    assert f'"{heading}"' in (DOCS.parent / test).read_text(encoding="utf-8")


def test_python_blocks_parsing() -> None:
    text = (
        "# Title\n"
        "```python\n"
        "a = 1\n"
        "```\n"
        "```sh\n"
        "make test\n"
        "```\n"
        "````python no-run\n"
        "```\n"
        "b = 2\n"
        "````\n"
        "1. step\n"
        "    ```python\n"
        "    if a:\n"
        "        c = 3\n"
        "    ```\n"
    )
    assert python_blocks(text) == [
        Block(3, "a = 1\n", runs=True),
        Block(9, "```\nb = 2\n", runs=False),
        Block(14, "if a:\n    c = 3\n", runs=True),
    ]


def test_a_text_block_after_a_python_block_is_its_output() -> None:
    text = ("```python\nprint(1)\n```\nprints\n```text\n1\n```\n"
            "```python no-run\nprint(2)\n```\n```text\n2\n```\n"
            "```python\nprint(3)\n```\n```sh\nk3snet plan\n```\n```text\n3\n```\n")
    assert [block.prints for block in python_blocks(text)] == ["1\n", None, None]
    page = (DOCS / "getting-started.md").read_text(encoding="utf-8")
    shown = [block.prints for block in python_blocks(page) if block.prints is not None]
    assert len(shown) == 2
    assert shown[0].startswith("sysctl net.ipv4.ip_forward = 1\n")
    assert shown[1].startswith("Plan: 3 to add")


def test_the_readme_example_converges_under_the_lock_and_its_refusals(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's library example runs (memory backends standing in for netlink and
    nftables) and goes through ``converge``: a bare ``plan`` + ``apply`` takes no
    namespace lock and skips the conflict and teardown refusals."""
    import importlib  # noqa: PLC0415

    import k3snet  # noqa: PLC0415
    from k3snet.backends.memory import MemoryBackend  # noqa: PLC0415

    # The module (k3snet.converge, the attribute, is the function).
    converge_module = importlib.import_module("k3snet.converge")

    kinds = {"netlink": ["route", "sysctl"], "nftables": ["nat", "forward"]}
    made: list[MemoryBackend] = []

    def create_backend(name: str) -> MemoryBackend:
        made.append(MemoryBackend(capabilities=kinds[name]))
        return made[-1]

    calls: list[object] = []
    real = converge_module.converge

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(k3snet, "create_backend", create_backend)
    monkeypatch.setattr(converge_module, "converge", spy)
    monkeypatch.chdir(DOCS.parent)
    readme = DOCS.parent / "README.md"
    (block,) = [b for b in python_blocks(readme.read_text(encoding="utf-8")) if b.runs]
    exec(compile("\n" * (block.line - 1) + block.code, str(readme), "exec"),  # noqa: S102
         {"__name__": "docs.readme"})
    assert len(calls) == 1
    desired = k3snet.compile(k3snet.load_spec(DOCS.parent / "examples/seed.yaml"))
    held = made[0].observe().merge(made[1].observe())
    assert held.owned == desired.owned


def _literal_blocks(doc: str) -> list[str]:
    """The ``::`` literal blocks of a reST docstring, dedented."""
    import textwrap  # noqa: PLC0415

    blocks: list[str] = []
    lines = doc.splitlines()
    for index, line in enumerate(lines):
        if not line.rstrip().endswith("::"):
            continue
        body: list[str] = []
        for following in lines[index + 1:]:
            if following.strip() and not following.startswith((" ", "\t")):
                break
            body.append(following)
        blocks.append(textwrap.dedent("\n".join(body)).strip() + "\n")
    return blocks


def test_the_package_docstring_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """``help(k3snet)`` and the API reference open with it; ``k3snet.create_backend("memory")``
    stands in for the node's backends, as its comment says."""
    import k3snet  # noqa: PLC0415

    (block,) = _literal_blocks(k3snet.__doc__ or "")
    exec(compile(block, "k3snet/__init__.py docstring", "exec"), {})  # noqa: S102
    assert "Plan: 4 to add" in capsys.readouterr().out


# Commands a page may show with their output: they only read (a spec, the field table).
_READ_ONLY = ("explain", "validate", "--version")


def shown_sessions(text: str) -> list[tuple[int, str, str]]:
    """(line, command, output) of each ``$ k3snet ...`` line of a ``text`` block whose
    command only reads, with the lines after it up to the next ``$`` or the block's end."""
    sessions: list[tuple[int, str, str]] = []
    in_text = False
    command: tuple[int, str] | None = None
    output: list[str] = []

    def close() -> None:
        if command is not None:
            sessions.append((*command, "".join(output)))

    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith(("```", "$ ")):
            close()
            command, output = None, []
        if line.startswith("```"):
            in_text = not in_text and line.strip() == "```text"
        elif in_text and line.startswith("$ "):
            words = line[2:].split()
            if words[:1] == ["k3snet"] and words[1:2] and words[1] in _READ_ONLY:
                command = (number, line[2:])
        elif command is not None:
            output.append(line + "\n")
    return sessions


_SESSIONS = [(page, *session) for page in sorted(DOCS.glob("*.md"))
             for session in shown_sessions(page.read_text(encoding="utf-8"))]


def test_the_pages_show_sessions() -> None:
    assert {page.name for page, *_ in _SESSIONS} >= {"cli.md"}
    assert len(_SESSIONS) >= 2


@pytest.mark.parametrize(("page", "line", "command", "output"), _SESSIONS,
                         ids=[f"{page.name}:{line}" for page, line, *_ in _SESSIONS])
def test_a_session_a_page_shows_prints_what_it_shows(page: Path, line: int, command: str,
                                                     output: str) -> None:
    """``$ k3snet explain ...`` in docs/cli.md prints, today, what the page shows
    (stdout and stderr together, as on a terminal)."""
    import os  # noqa: PLC0415
    import shlex  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    env = {**os.environ, "K3SNET_SPEC_CACHE": "off", "NO_COLOR": "1"}
    done = subprocess.run([sys.executable, "-m", "k3snet", *shlex.split(command)[1:]],
                          cwd=DOCS.parent, env=env, capture_output=True, text=True,
                          check=False)
    assert done.stdout + done.stderr == output, f"{page.name}:{line}: `{command}`"


def test_getting_started_names_every_extra() -> None:
    """``k3snet[agent]`` (what ``k3snet agent`` needs for its metrics and Lease) was in
    pyproject.toml alone."""
    import tomllib  # noqa: PLC0415

    extras = tomllib.loads((DOCS.parent / "pyproject.toml").read_text(encoding="utf-8"))[
        "project"]["optional-dependencies"]
    page = (DOCS / "getting-started.md").read_text(encoding="utf-8")
    assert not [name for name in extras
                if f"k3snet[{name}]" not in page and f".[{name}]" not in page]
