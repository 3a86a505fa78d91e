"""PyYAML's errors in a reader's words, for every YAML k3snet reads (specs, netplan
files, Cilium's ip-masq-agent config).

PyYAML names text it was handed ``"<unicode string>"``, a word no one writing a file
knows, and prints where on lines of their own; :func:`yaml_problem` says it on one
line, by line and column. YAML 1.1 (PyYAML, libyaml, Go's yaml) also breaks lines at
NEL (U+0085), LINE SEPARATOR (U+2028) and PARAGRAPH SEPARATOR (U+2029), which editors
and YAML 1.2 show inside a line: its line numbers then named a line the file did not
seem to have, so lines are counted at line feeds here and such a character is named
(:func:`odd_break`). :func:`yaml_missing` says which extra brings PyYAML.
"""

from __future__ import annotations

from typing import Any

from k3snet._regex import lazy_pattern
from k3snet.errors import BackendUnavailableError

__all__ = ["ODD_BREAKS", "odd_break", "yaml_missing", "yaml_problem"]

ODD_BREAKS = {"\x85": "NEL, next line", "\u2028": "LINE SEPARATOR",
              "\u2029": "PARAGRAPH SEPARATOR"}
"""The characters YAML 1.1 reads as line breaks and YAML 1.2 and editors do not."""
_ODD_BREAK = lazy_pattern("[\x85\u2028\u2029]")


def yaml_missing(purpose: str, exc: ImportError) -> BackendUnavailableError:
    """The error for ``import yaml`` failing (PyYAML is an optional dependency): it says
    that ``purpose`` needs PyYAML and which extra installs it, where a bare ImportError was
    an internal error of the CLI's. Raise it ``from exc``."""
    return BackendUnavailableError(f"{purpose} needs PyYAML, which is not installed: {exc} "
                                   "(pip install 'k3snet[cli]')")


def odd_break(text: str) -> str | None:
    """Where ``text``'s first :data:`ODD_BREAKS` character is, in words
    (``"U+0085 (NEL, next line) at line 2, column 4"``), or ``None``: there is none."""
    found = None if text.isascii() else _ODD_BREAK.search(text)
    if found is None:
        return None
    line, column = _line_column(text, found.start())
    return (f"U+{ord(found.group()):04X} ({ODD_BREAKS[found.group()]}) at line {line}, "
            f"column {column}")


def yaml_problem(exc: Exception, text: str) -> str:
    """PyYAML's error ``exc`` (from parsing ``text``) as one line that says where, by line
    and column (counted at line feeds, as an editor counts them)."""
    if hasattr(exc, "position") and hasattr(exc, "reason"):  # a ReaderError: a bad character
        line, column = _line_column(text, exc.position)
        character = getattr(exc, "character", "")
        what = f"#x{character:04x}" if isinstance(character, int) else repr(character)
        return f"character {what} at line {line}, column {column}: {exc.reason}"
    context, problem = getattr(exc, "context", None), getattr(exc, "problem", None)
    odd = odd_break(text)
    if context is None and problem is None:
        said = " ".join(str(exc).replace('in "<unicode string>", ', "").split())
    else:
        context_mark = getattr(exc, "context_mark", None)
        problem_mark = getattr(exc, "problem_mark", None)
        parts = []
        if context:
            shown = context_mark is not None and (
                problem_mark is None or (context_mark.line, context_mark.column)
                != (problem_mark.line, problem_mark.column))
            parts.append(context + (_at(context_mark, text, odd) if shown else ""))
        if problem:
            parts.append(problem + (_at(problem_mark, text, odd) if problem_mark is not None
                                    else ""))
        note = getattr(exc, "note", None)
        said = ": ".join(parts) + (f" ({note})" if note else "")
    if odd is not None:
        said += (f" (the text holds {odd}, which YAML 1.1 reads as a line break where an "
                 "editor shows none: remove it, or write it as an escape in a "
                 "double-quoted text)")
    return said


def _at(mark: Any, text: str, odd: str | None) -> str:
    if odd is None or not isinstance(getattr(mark, "index", None), int):
        return f" (line {mark.line + 1}, column {mark.column + 1})"
    # The mark counts lines at the odd breaks too; its index is the character's.
    line, column = _line_column(text, mark.index)
    if line == 1 and text.startswith("\ufeff"):  # a BOM is no column of the text
        column = max(column - 1, 1)
    return f" (line {line}, column {column})"


def _line_column(text: str, position: int) -> tuple[int, int]:
    """The line and column (from 1) of ``text``'s character at ``position``."""
    start = text.rfind("\n", 0, position) + 1
    return text.count("\n", 0, position) + 1, position - start + 1
