"""One log record, one line of bounded size: shared by the agent's and the CLI's formatters.

A record's text may come from elsewhere (an API server's error, a foreign rule, a name
from the node) and may list thousands of objects; written whole it was a line of
megabytes that containerd and journald split into pieces, and a line break in it began
a line that read as another record.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from k3snet._regex import lazy_pattern

__all__ = ["HANDLER_NAME", "LOG_LINE_LIMIT", "bounded", "fs_word", "one_line", "printable",
           "printable_line", "printable_lines", "shell_join", "shell_path", "shell_word"]

HANDLER_NAME = "k3snet"
"""The name (:meth:`logging.Handler.get_name`) of the handler the ``k3snet`` command and
the agent set on the ``k3snet`` logger: :func:`k3snet.cli.main` takes off the handlers
so named when it returns, and leaves one a caller or a plugin added while it ran."""

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
    ESC), but for one case. A word :func:`shell_word` wrote in this process, one of the
    4096 it wrote last (``$'x\\x1b'``: a command to run quoting such a text), is kept
    as it is where it stands whole in the text (after a space, a backquote, a slash, an
    equals sign or the start; before a space, a backquote, a closing parenthesis or the
    end), so that the command pasted runs on the very name. A text k3snet did not write
    holding those very characters so placed (a foreign rule's comment ``see $'x\\x1b'``
    once a line named the table ``x`` and ESC) is printed so too, its backslashes not
    doubled: it reads back as the word's escapes (that table's name), not as the text.
    It is still one line of printable characters."""
    if value.isprintable() and "\\" not in value:
        return value
    # A word of a command to run that shell_word wrote ($'...') is kept as it is: it is
    # printable, and its backslashes doubled, the command pasted named another object.
    # The line's own $'...' words are looked up: comparing every word written with each
    # line made a line ~40x slower with the list full. No lock: the agent's threads log.
    parts, at = [], 0
    found = _WORD.search(value)
    while found is not None:
        if found[0] in _SHOWN_WORDS:
            parts += [_escaped(value[at:found.start()]), found[0]]
            at = found.end()
            found = _WORD.search(value, at)
        else:  # another word may begin within it (after a space it holds)
            found = _WORD.search(value, found.start() + 1)
    return "".join(parts) + _escaped(value[at:])


_WORD = lazy_pattern(r"(?<![^\s`/=])\$'(?:[^\\']|\\.)*'(?![^\s`)])", re.DOTALL)
"""A word :func:`shell_word` may have written (``$'...'``, its quotes escaped), whole in a
line, or its end (``daemonset/$'...'``): after a space, a backquote, a slash, an equals
sign or the start, before a space, a backquote, a parenthesis or the end."""


def _escaped(value: str) -> str:
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


def shell_word(word: str) -> str:
    """``word`` as a shell reads it back, on one printable line: shell-quoted
    (:func:`shlex.quote`) when it is printable and holds no backslash; else in ``$'...'``
    (bash, zsh, ksh, busybox and POSIX sh 2024) with each character that is not printable
    as the escapes of its bytes (a terminal escape, a line break, a bidirectional
    override: its UTF-8 bytes; a byte that is not UTF-8, read as a lone surrogate:
    itself), so that the command pasted runs on the very name. Quoted by
    :func:`shlex.quote`, an interface or table name holding an ESC sent it raw to the
    terminal; escaped for the terminal (:func:`printable`) inside single quotes, the
    shell kept the backslash: another name. :func:`printable` keeps such a word as it is
    in a message quoting it (a backend's warning is escaped whole as it is printed).

    A printable character that standard output or error would not write as its UTF-8
    bytes (``é`` under ``PYTHONIOENCODING=ascii`` or ``latin-1``) is escaped as its bytes
    too: written as ``\\xe9`` by their ``backslashreplace``, inside single quotes, the
    command pasted named another file."""
    writable = _writable(word)
    if word.isprintable() and "\\" not in word and writable:
        return shlex.quote(word)
    escaped = []
    for char in word:
        if char in "\\'":
            escaped.append("\\" + char)
        elif char.isprintable() and (writable or _writable(char)):
            escaped.append(char)
        else:  # its bytes in argv: \u escapes are left as they are in bash's C locale
            escaped += [f"\\x{byte:02x}" for byte in _bytes_of(char)]
    quoted = "$'" + "".join(escaped) + "'"
    with _SHOWN_LOCK:  # printable() keeps it (its backslashes single)
        _SHOWN_WORDS.pop(quoted, None)  # written again: the most recent
        _SHOWN_WORDS[quoted] = None
        if len(_SHOWN_WORDS) > _SHOWN_LIMIT:
            del _SHOWN_WORDS[next(iter(_SHOWN_WORDS))]  # the oldest
    return quoted


_SHOWN_WORDS: dict[str, None] = {}
"""The ``$'...'`` words :func:`shell_word` wrote (each holds a backslash), the most recent
last, which :func:`printable` keeps as they are in a message quoting them: a backend's
warning naming a foreign table of an ESC is escaped whole as it is printed, its command
to run too. Changed under :data:`_SHOWN_LOCK`; :func:`printable` only looks words up."""

_SHOWN_LIMIT = 4096  # words kept, the most recent: a long-running agent's names are few
_SHOWN_LOCK = threading.Lock()


def _writable(text: str) -> bool:
    """Whether standard output and standard error both write ``text`` as its UTF-8 bytes
    (a word may be printed on either), by their encodings (``PYTHONIOENCODING``, the
    locale's: ``ascii`` under ``LC_ALL=C`` without UTF-8 mode): written in another
    (``latin-1``), pasted back it is other bytes, another name."""
    if text.isascii():
        return True
    try:
        utf8 = text.encode("utf-8")
        for stream in (sys.stdout, sys.stderr):
            encoding = getattr(stream, "encoding", None) or "utf-8"  # a StringIO: text
            if text.encode(encoding) != utf8:
                return False
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _bytes_of(char: str) -> bytes:
    """The bytes ``char`` stands for: its UTF-8, or the byte a lone surrogate of
    ``surrogateescape`` holds (a name of the kernel that is not UTF-8)."""
    try:
        return char.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no byte stands for (a JSON "\\ud800")
        return char.encode("utf-8", "surrogatepass")


def fs_word(text: str | os.PathLike[str]) -> str:
    """``text`` (a path, or any word of k3snet's command line) by its bytes, the file
    system's encoding's (the locale's), read as UTF-8, a byte that is not as a lone
    surrogate: the text :func:`shell_word` writes as those very bytes. Under a Latin-1
    locale a byte ``\\xff`` of a file's name is read as ``ÿ``, which :func:`shell_word`
    alone wrote as its UTF-8, ``\\xc3\\xbf``: another file once pasted. A text the file
    system's encoding cannot write (not from the command line nor a file's name: ``é``
    under an ASCII one) is kept as it is."""
    try:
        return os.fsencode(text).decode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return os.fspath(text)


def shell_path(path: str | os.PathLike[str]) -> str:
    """:func:`shell_word` of a file's ``path``, by its bytes (:func:`fs_word`): a
    ``$'...'`` word of them names the file in any locale."""
    return shell_word(fs_word(path))


def shell_join(argv: Sequence[str]) -> str:
    """``argv`` as one shell command of :func:`shell_word` words, to be copied and run
    (:func:`shlex.join`, whose words may hold a terminal escape, otherwise)."""
    return " ".join(map(shell_word, argv))


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
