"""The agent's text log, its /readyz answer and the CLI's log print what k3snet made of
others' texts (a foreign rule's, escaped by :func:`k3snet.model.printable` as the model
holds it) escaped once, as the CLI's plan and errors do: escaped again, a foreign
rule's ESC was logged as a backslash doubled before ``x1b`` (tests/safety/
test_escapes.py: the CLI's own lines)."""

from __future__ import annotations

import io
import logging
import urllib.error
import urllib.request

from k3snet.agent import HealthServer, configure_logging
from k3snet.model import ForwardBlock

BLOCK = ForwardBlock(4, "drop", '-A FORWARD -m comment --comment "\x1b[2J" -j DROP',
                     "iptables IPv4 filter FORWARD")
MESSAGE = f"apply failed: foreign {BLOCK.describe()}\n  and a raw \x1b"


def test_the_agents_text_log_prints_a_foreign_rules_escape_once() -> None:
    assert "\\x1b[2J" in BLOCK.describe()  # the model holds it escaped
    stream = io.StringIO()
    logger = configure_logging("node-0", "text", stream=stream)
    try:
        logger.warning("%s", MESSAGE)
    finally:
        configure_logging("node-0", "text", stream=io.StringIO())
    line = stream.getvalue().rstrip("\n")
    assert "\n" not in line, line
    assert line.isprintable(), line
    assert '--comment "\\x1b[2J"' in line, line
    assert "\\\\x1b" not in line, line
    assert line.endswith("\\n  and a raw \\x1b"), line


def test_readyz_prints_a_foreign_rules_escape_once() -> None:
    server = HealthServer("127.0.0.1", 0, healthy=lambda: (True, "ok"),
                          ready=lambda: (False, MESSAGE), metrics=None).start()
    try:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz", timeout=10)
            raise AssertionError("ready")
        except urllib.error.HTTPError as exc:
            body = exc.read().decode()
    finally:
        server.stop()
    assert body[:-1].isprintable(), body
    assert '--comment "\\x1b[2J"' in body, body
    assert "\\\\x1b" not in body, body


def test_the_clis_log_prints_a_foreign_rules_escape_once() -> None:
    from k3snet.cli import _TextLogFormatter  # noqa: PLC0415 - the CLI's own formatter

    record = logging.LogRecord("k3snet.backends.iptables", logging.WARNING, __file__, 1,
                               "%s", (MESSAGE,), None)
    line = _TextLogFormatter().format(record)
    assert line.isprintable(), line
    assert '--comment "\\x1b[2J"' in line, line
    assert "\\\\x1b" not in line, line
