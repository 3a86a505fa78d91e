"""The agent's refusal of a spec whose secret sysctl is malformed says no secret.

The spec problem, its log line and the pass's message (the Event's) name a secret
sysctl's value the model refuses by its length alone: a YAML list of the two Fast Open
keys, a key written as a number (``0x...``), a ``stable_secret`` pasted with a
zero-width character.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.agent.test_loop import SPEC, Node

KEY, OTHER = "deadbeef-cafebabe-12345678-9abcdef0", "deadbeef-cafebabe-12345678-9abcdef1"
STABLE = "2001:db8:dead:beef:cafe:babe:1234:5678"
FORMS = ("deadbeef", "dead:beef", "cafe:babe", "cafebabe", str(int("deadbeef", 16)))


@pytest.mark.parametrize("sysctls", [
    f"  net.ipv4.tcp_fastopen_key: [{KEY}, {OTHER}]\n",
    "  net.ipv4.tcp_fastopen_key: '0xdeadbeefcafebabe123456789abcdef0'\n",
    "  net.ipv4.tcp_fastopen_key: 0xdeadbeefcafebabe123456789abcdef0\n",
    f'  net.ipv6.conf.eth0.stable_secret: "{STABLE}\\u200b"\n',
    f"  net.ipv6.conf.eth0.stable_secret: {{address: {STABLE}}}\n",
])
def test_a_spec_refused_for_a_malformed_secret_logs_and_reports_no_secret(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, sysctls: str) -> None:
    node = Node(tmp_path)
    assert node.agent.run_pass().status == "ok"
    caplog.set_level(logging.DEBUG)
    node.path.write_text(SPEC + "sysctls:\n" + sysctls)
    result = node.agent.run_pass()
    assert result.status == "spec-refused"
    assert "sysctls.net.ipv" in result.message
    shown = (result.message + "\n" + "\n".join(r.getMessage() for r in caplog.records)).lower()
    assert "net.ipv" in shown
    for form in FORMS:
        assert form not in shown, form


def test_an_agent_starting_on_a_malformed_secret_says_no_secret(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    node = Node(tmp_path, SPEC + f"sysctls:\n  net.ipv4.tcp_fastopen_key: [{KEY}, {OTHER}]\n")
    result = node.agent.run_pass()
    assert result.status != "ok"
    shown = (result.message + "\n" + "\n".join(r.getMessage() for r in caplog.records)).lower()
    assert "tcp_fastopen_key" in shown
    for form in FORMS:
        assert form not in shown, form
