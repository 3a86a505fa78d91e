"""Every log record of the command line is one line under LOG_LINE_LIMIT bytes, as the
agent's are (tests/agent/test_log_bounds.py).

A backend's warning lists what it found: the iptables backend names every foreign rule
jumping to a chain that is not k3snet's, on one record. A node with thousands of them
made a ``k3snet plan`` run by cron or a systemd unit write one line of megabytes, which
journald (48 KiB) and containerd (16 KiB) split into pieces: a collector reading
``--log-format json`` one object per line got fragments, and a line break in a foreign
text began a line that read as another record.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from k3snet import MemoryBackend, State, register_backend
from k3snet.agent import LOG_LINE_LIMIT
from k3snet.backends.registry import unregister_backend
from k3snet.cli import main
from k3snet.schemas import load_schema

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
LOG_SCHEMA = jsonschema.Draft202012Validator(load_schema("log"))
JUMPS = 5000


class _NoisyBackend(MemoryBackend):
    """A memory backend whose observe warns as the iptables backend does about a chain
    that thousands of foreign rules jump to (and one foreign text with line breaks)."""

    def observe(self) -> State:
        jumps = "; ".join(
            f"-A FORWARD -s 10.{i // 256}.{i % 256}.0/24 -j KUBE-X" for i in range(JUMPS)
        )
        logging.getLogger("k3snet.backends.iptables").warning(
            "iptables: IPv4 filter: chain KUBE-X is not k3snet's (no rule in it carries "
            "k3snet's tag; jumped to by %s): k3snet leaves it alone",
            jumps,
        )
        logging.getLogger("k3snet.backends.calico").warning(
            "calico: %s", "refused\n2026-01-01 00:00:00 ERROR k3snet.forged: a forged record\r"
        )
        try:
            raise ValueError("x\n2026-01-01 00:00:00 ERROR k3snet.forged: from a traceback")
        except ValueError:
            logging.getLogger("k3snet.backends.calico").warning("calico: read", exc_info=True)
        return super().observe()


@pytest.fixture
def noisy() -> Iterator[str]:
    register_backend("memory-noisy", _NoisyBackend)
    try:
        yield "memory-noisy"
    finally:
        unregister_backend("memory-noisy")


def _size(line: str) -> int:
    return len(line.encode("utf-8", "backslashreplace")) + 1


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_cli_log_record_of_thousands_of_items_is_one_bounded_line(
    noisy: str, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["plan", "-f", str(SEED), "--no-facts", "--backend", noisy, "--log-format", fmt])
    err = capsys.readouterr().err
    # Lines as journald, containerd and a collector of JSON lines cut them: at "\n".
    lines = err.removesuffix("\n").split("\n")
    for line in lines:
        assert _size(line) <= LOG_LINE_LIMIT, (fmt, _size(line), line[:200])
        assert "\r" not in line
    if fmt == "json":
        assert len(lines) == 3, lines  # three records, three lines
        records = [json.loads(line) for line in lines]
        for record in records:
            LOG_SCHEMA.validate(record)
        jumps, forged, _ = (r["message"] for r in records)
        assert "from a traceback" in records[2]["exception"]
    else:
        # Three records, each beginning a line; a traceback's lines are indented.
        heads = [line for line in lines if not line.startswith("    ")]
        assert len(heads) == 3, lines
        jumps, forged, _ = heads
        assert jumps.split(" ", 4)[2:4] == ["WARNING", "k3snet.backends.iptables:"]
        assert any("from a traceback" in line for line in lines if line.startswith("    "))
    # The beginning says what it is about, the end how much was left out.
    assert "chain KUBE-X is not k3snet's" in jumps
    assert jumps.endswith(" more characters)")
    assert "forged record" in forged


@pytest.mark.parametrize("char", ["a", "é", "中", "\x01", "😀", "\n"])
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_long_message_past_ascii_is_cut_to_what_fits_not_to_nothing(
        char: str, fmt: str) -> None:
    """A character takes up to twelve bytes of a JSON line (``\\ud83d\\ude00``); cut one
    character per byte over, a long message of them lost every character."""
    from k3snet.cli import _JsonLogFormatter, _TextLogFormatter  # noqa: PLC0415
    from k3snet.model import printable  # noqa: PLC0415

    formatter = _JsonLogFormatter() if fmt == "json" else _TextLogFormatter()
    record = logging.LogRecord("k3snet.x", logging.WARNING, __file__, 1, "%s",
                               ("<" + char * 30_000,), None)
    line = formatter.format(record)
    assert len(line.encode("utf-8", "backslashreplace")) + 1 <= LOG_LINE_LIMIT
    message = json.loads(line)["message"] if fmt == "json" else line
    # Text writes a character that is not printable as its escape (\x01, \n).
    assert message.count(char if fmt == "json" else printable(char)) > 1000
    assert message.endswith("more characters)")
