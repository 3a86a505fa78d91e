"""The agent's logs: stdlib logging with a UTC timestamp and the node name, as text or JSON."""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any, Literal, TextIO

__all__ = ["LOGGER_NAME", "LOG_FORMAT_VERSION", "LogFormat", "configure_logging"]

LOGGER_NAME = "k3snet.agent"
LogFormat = Literal["text", "json"]
LOG_FORMAT_VERSION = 1
"""``format`` of every JSON log line (schema ``log`` in :mod:`k3snet.schemas`)."""

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


def _one_line(text: object) -> str:
    """``text`` with its line breaks written ``\\n`` and ``\\r``: a message from elsewhere
    (an API server's error) must not begin a line that reads as another record."""
    return str(text).replace("\r", "\\r").replace("\n", "\\n")


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = _extra(record)
        fields = " ".join(f"{k}={_one_line(extra[k])}" for k in sorted(extra))
        line = (f"{_timestamp(record)} {record.levelname} node={getattr(record, 'node', '-')} "
                f"{_one_line(record.getMessage())}")
        if fields:
            line += f" ({fields})"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
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
            **_extra(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, sort_keys=False, default=str)


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


def configure_logging(node: str, fmt: LogFormat = "text", level: str | int = "INFO",
                      stream: TextIO | None = None) -> logging.Logger:
    """Send the ``k3snet.agent`` logger to ``stream`` (stderr), one line per record.

    Text: ``2026-01-01T00:00:00.000Z INFO node=NAME message (key=value ...)``;
    JSON: one object per line with ``format`` (1), ``kind`` (``log``), ``time``,
    ``level``, ``node``, ``logger``, ``message`` and the record's extra fields
    (the JSON Schema ``log`` of :mod:`k3snet.schemas`). Replaces handlers set by an
    earlier call, so calling it twice does not duplicate lines.
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be text or json, not {fmt!r}")
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    handler.addFilter(_NodeFilter(node))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger
