"""One log record, one line of bounded size: shared by the agent's and the CLI's formatters.

A record's text may come from elsewhere (an API server's error, a foreign rule, a name
from the node) and may list thousands of objects; written whole it was a line of
megabytes that containerd and journald split into pieces, and a line break in it began
a line that read as another record.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = ["LOG_LINE_LIMIT", "bounded", "one_line", "printable", "printable_line",
           "printable_lines"]

LOG_LINE_LIMIT = 16_000
"""Bytes (UTF-8, its line break included) at most of one log record, below the 16 KiB at
which containerd (CRI) splits a line into partial ones: a collector expecting one JSON
object per line got pieces, and a first pass at 10 000 destinations logged megabytes."""


def printable(value: str) -> str:
    """``value`` with every character that is not printable (a line break, a terminal
    escape, a bidirectional override, a byte that is not UTF-8 read as a lone
    surrogate) as its Python escape, and a backslash doubled: text someone else wrote,
    safe on a terminal and on a line of its own. The one escape of every printer of such
    text (the plan's foreign objects, the CLI's lines, the logs, a spec problem's path).

    It reads back as the body of a Python string literal: ``\\x1b`` is an ESC and
    ``\\\\x1b`` a backslash someone wrote before ``x1b``, so no text prints as another
    does (a foreign comment holding the four characters ``\\x1b`` read as an escaped
    ESC)."""
    if value.isprintable() and "\\" not in value:
        return value
    return "".join(char if char.isprintable() and char != "\\" else
                   char.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for char in value)


def printable_line(text: str) -> str:
    """``text``, a line k3snet made quoting others' texts each escaped already
    (:func:`printable`: a model's description of a foreign rule), with every character
    that is not printable as its Python escape but a backslash as it is: escaped again,
    an ESC a foreign rule held (``\\x1b`` in its description) read ``\\\\x1b``, a
    backslash someone wrote. A text quoted as it came reaches the terminal as no escape
    sequence, but its backslash is not told from an escape's: quote it with
    :func:`printable`."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else
                   char.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for char in text)


def printable_lines(text: str) -> str:
    """``text`` (an error's, a problem's: a message k3snet made) as lines of
    :func:`printable_line` characters: one quoting another program's text (libnftables',
    an API server's, a foreign table's name) sends no escape sequence to the terminal.
    Only a line break k3snet's messages make is kept, one before an indented line (a
    problem a line, ``\\n  ``); any other is written ``\\n``, so no line begins at the
    margin as another line of the command or another problem would.

    A backslash is kept, and so is a line break before a space in a quoted text: a
    message quoting what others wrote makes each text :func:`printable` (one line, its
    backslashes doubled) as it quotes it, as :class:`k3snet.errors.CheckError` does with
    a backend check's problems and :class:`k3snet.errors.Problem` with a spec's path."""
    first, *rest = text.split("\n")
    return printable_line(first) + "".join(
        ("\n" if line.startswith(" ") else "\\n") + printable_line(line) for line in rest)


def one_line(text: object) -> str:
    """``text`` as :func:`printable` writes it: a message from elsewhere (an API server's
    error, a foreign table's name) must not begin a line that reads as another record
    (``\\n``, but also ``\\v``, ``\\x85``, ``\\u2028``), nor send an escape sequence to
    the terminal of whoever reads the log (``\\x1b``)."""
    return printable(str(text))


def _size(line: str) -> int:
    # As a UTF-8 stream writes it (stderr's lone surrogates escaped), with its line break.
    return len(line.encode("utf-8", "backslashreplace")) + 1


def bounded(
    fields: dict[str, Any],
    render: Callable[[dict[str, Any]], str],
    fixed: frozenset[str] = frozenset(),
) -> str:
    """``render(fields)`` within :data:`LOG_LINE_LIMIT` bytes: the longest text fields
    (but those in ``fixed``) cut, each ending ``... (N more characters)``.

    The last guard for any record (a foreign error's text, a name from the node, a
    traceback); the records that list objects should list a few of them already.
    """
    whole = {k: v for k, v in fields.items() if isinstance(v, str) and k not in fixed}
    # A field longer than the limit in characters is too long in bytes too.
    keep = {k: min(len(v), LOG_LINE_LIMIT) for k, v in whole.items()}

    def cut() -> dict[str, Any]:
        return {
            **fields,
            **{
                k: whole[k]
                if keep[k] == len(whole[k])
                else f"{whole[k][: keep[k]]}... ({len(whole[k]) - keep[k]} more characters)"
                for k in whole
            },
        }

    line = render(cut())
    while (excess := _size(line) - LOG_LINE_LIMIT) > 0 and any(keep.values()):
        longest = max(keep, key=lambda k: keep[k])
        held = keep[longest]
        # The bytes a kept character of that field takes on the line, on average: a
        # character is one byte at least, but six in JSON (\u00e9) past ASCII. Cut as
        # many characters as bytes are over, all of a message that was not ASCII was cut
        # (6 000 characters of it to none, where some 2 600 fit).
        keep[longest] = 0
        per = max(1.0, (_size(line) - _size(render(cut()))) / held)
        keep[longest] = max(0, held - max(1, math.ceil(excess / per)))
        line = render(cut())
    return line
