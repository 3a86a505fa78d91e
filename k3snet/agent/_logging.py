"""The agent's logs: stdlib logging with a UTC timestamp and the node name, as text or JSON."""

from __future__ import annotations

import datetime
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any, Literal, TextIO

from k3snet._logline import HANDLER_NAME, LOG_LINE_LIMIT, printable_line
from k3snet._logline import bounded as _bounded
from k3snet._logline import one_line as _one_line

__all__ = ["LOGGER_NAME", "LOG_FORMAT_VERSION", "LOG_ITEMS", "LOG_LINE_LIMIT", "LogFormat",
           "configure_logging", "listed"]

LOGGER_NAME = "k3snet.agent"
"""The logger the agent logs through (:func:`configure_logging` sets it up)."""
LogFormat = Literal["text", "json"]
LOG_FORMAT_VERSION = 1
"""``format`` of every JSON log line (schema ``log`` in :mod:`k3snet.schemas`)."""

LOG_ITEMS = 20
"""Items (changes, conflicts, a spec's problems) one log line lists; the rest are counted."""

# LogRecord attributes every record has: anything else was passed with ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "node"}


def _timestamp(record: logging.LogRecord) -> str:
    when = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z"


class _NodeFilter(logging.Filter):
    """Puts the node name on every record (``%(node)s`` / ``"node"``)."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node
        return True


def listed(items: Sequence[object], separator: str = "; ") -> str:
    """The first :data:`LOG_ITEMS` of ``items`` joined, then ``... and N more``; a change
    or an object named by its ``brief()`` (a NAT rule's exclusions past the first three
    counted): named whole, one rule of 10 000 exclusions took 160 KB, and the line, cut
    at :data:`LOG_LINE_LIMIT` bytes, lost the changes and the restarts said after it."""
    shown = [_named(each) for each in items[:LOG_ITEMS]]
    if len(items) > LOG_ITEMS:
        shown.append(f"... and {len(items) - LOG_ITEMS} more")
    return separator.join(shown)


def _named(item: object) -> str:
    brief = getattr(item, "brief", None)  # a Change's, a NetObject's
    return str(brief()) if callable(brief) else str(item)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # The extras under "=KEY": no extra can then take the node's or message's place.
        fields = {f"={k}": str(v) for k, v in _extra(record).items()}
        fields["node"] = str(getattr(record, "node", "-"))
        fields["message"] = record.getMessage()
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return _bounded(fields, lambda cut: self._render(record, cut))

    @staticmethod
    def _render(record: logging.LogRecord, fields: dict[str, Any]) -> str:
        extra = sorted((k[1:], v) for k, v in fields.items() if k.startswith("="))
        # The message and a traceback's lines are k3snet's, quoting others' texts each
        # escaped already (a foreign rule's, printable): escaped again, a foreign name's
        # ESC was logged as a backslash doubled before x1b where the CLI prints one
        # (printable_line escapes what is still not printable).
        line = (f"{_timestamp(record)} {record.levelname} node={_one_line(fields['node'])} "
                f"{printable_line(fields['message'])}")
        if extra:
            line += " (" + " ".join(f"{k}={_one_line(v)}" for k, v in extra) + ")"
        if "exception" in fields:
            # A bug's traceback spans lines, each indented: its exception's message (an
            # API server's text, a name from the node) could otherwise begin a line at
            # the margin that reads as another record.
            # Each line printable too: no escape sequence reaches the reader's terminal.
            line += "".join(f"\n    {printable_line(each)}"
                            for each in fields["exception"].splitlines())
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "format": LOG_FORMAT_VERSION,
            "kind": "log",
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "node": getattr(record, "node", None),
            "logger": record.name,
            "message": record.getMessage(),
            **{k: v if v is None or isinstance(v, (bool, int, float, str)) else str(v)
               for k, v in _extra(record).items()},
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # The schema's own fields stay whole: a reader matches on them.
        return _bounded(entry, lambda cut: json.dumps(cut, sort_keys=False, default=str),
                        frozenset({"kind", "time", "level", "logger"}))


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


def configure_logging(node: str, fmt: LogFormat = "text", level: str | int = "INFO",
                      stream: TextIO | None = None) -> logging.Logger:
    """Send every ``k3snet`` logger's records to ``stream`` (stderr), one line per record.

    Text: ``2026-01-01T00:00:00.000Z INFO node=NAME message (key=value ...)``;
    JSON: one object per line with ``format`` (1), ``kind`` (``log``), ``time``,
    ``level``, ``node``, ``logger``, ``message`` and the record's extra fields
    (the JSON Schema ``log`` of :mod:`k3snet.schemas`). ``level`` is the threshold
    of the agent's own logger (``k3snet.agent``); the library's loggers (a backend's
    warnings, the namespace lock's wait) log at ``WARNING`` and above, everything
    with ``DEBUG``. Replaces handlers set by an earlier call (or the CLI's), so
    calling it twice does not duplicate lines. Every record is cut to
    :data:`LOG_LINE_LIMIT` bytes (its longest fields end ``... (N more characters)``).
    Returns the agent's logger.

    A setting of the process, as ``logging.basicConfig`` is, and left so: ``k3snet``'s
    records no longer reach the root logger's handlers (``propagate`` off), so the
    agent's log is its lines alone. :func:`k3snet.cli.main` puts back what it found
    when it returns (``k3snet agent`` run in a process that goes on).
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be text or json, not {fmt!r}")
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    # The handler is k3snet's, not only the agent's: a backend's warning (nftables'
    # foreign state read in part, a lock wait) came out in the CLI's format, without
    # the node, with another time format, and a line break in it began a new line.
    library = logging.getLogger(LOGGER_NAME.partition(".")[0])
    for each in (library, logger):
        for handler in list(each.handlers):
            each.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(HANDLER_NAME)  # the command's: taken off by k3snet.cli.main
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    handler.addFilter(_NodeFilter(node))
    library.addHandler(handler)
    library.setLevel(logging.DEBUG if logger.level <= logging.DEBUG
                     else max(logger.level, logging.WARNING))
    library.propagate = False
    logger.propagate = True
    return logger
