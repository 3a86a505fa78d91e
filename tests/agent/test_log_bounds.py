"""Every agent log record is one line under LOG_LINE_LIMIT bytes, whatever it reports.

containerd (CRI) splits a line over 16 KiB into partial lines: a collector expecting one
JSON object per line got pieces, and a first pass at 10 000 destinations logged its
20 000 changes, megabytes, on one line.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import attrs
import jsonschema
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from k3snet.agent import (
    LOG_ITEMS,
    LOG_LINE_LIMIT,
    Agent,
    AgentOptions,
    FileSpecSource,
    PassResult,
    configure_logging,
)
from k3snet.backends.group import BackendGroup
from k3snet.backends.memory import MemoryBackend
from k3snet.converge import compile_for
from k3snet.model.route import Route
from k3snet.model.state import State
from k3snet.schemas import load_schema
from k3snet.spec import Spec

from .desired import COMPILED

LOG_SCHEMA = jsonschema.Draft202012Validator(load_schema("log"))
NODE_KINDS = ("route", "sysctl", "nat", "forward")
FORMATS = ("text", "json")
# Text as hostile as a foreign error's or a node's names can be: line breaks, a forged
# record, characters of 4 UTF-8 bytes and of 12 JSON bytes, a lone surrogate.
HOSTILE = st.lists(st.sampled_from(
    ["a", " ", "\n", "\r", "\t", '"', "\\", "é", "€", "\U0001f600", "\ud800", "\x00",
     "2026-01-01T00:00:00.000Z ERROR node=x forged"]), max_size=50).map("".join)


def _size(line: str) -> int:
    return len(line.encode("utf-8", "backslashreplace")) + 1


def _check(out: str, fmt: str) -> list[str]:
    # Lines as containerd and a collector of JSON lines cut them: at "\n" alone.
    lines = out.removesuffix("\n").split("\n") if out else []
    for line in lines:
        assert _size(line) <= LOG_LINE_LIMIT, (fmt, _size(line), line[:200])
        assert "\r" not in line
        if fmt == "json":
            LOG_SCHEMA.validate(json.loads(line))
    return lines


@given(message=HOSTILE, sizes=st.tuples(st.integers(0, 5000), st.integers(0, 70_000)),
       node=st.text(max_size=300), extra=HOSTILE, fmt=st.sampled_from(FORMATS))
@example(message="x", sizes=(0, 70_000), node="n", extra="", fmt="json")
@example(message="\U0001f600", sizes=(0, 20_000), node="n", extra="\n", fmt="text")
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_every_log_record_is_one_line_under_the_limit_whatever_it_holds(
        message: str, sizes: tuple[int, int], node: str, extra: str, fmt: str) -> None:
    items, long = sizes
    stream = io.StringIO()
    logger = configure_logging(node, fmt, "DEBUG", stream=stream)  # type: ignore[arg-type]
    try:
        text = message * (long // max(1, len(message)))
        logger.warning("%s: %s", text, "; ".join([extra] * items),
                       extra={"reason": extra * items, "changes": items})
        logging.getLogger("k3snet.backends.nftables").warning("nftables: %s", text + extra)
    finally:
        configure_logging("node-0", "text", stream=io.StringIO())
    assert len(_check(stream.getvalue(), fmt)) == 2


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_huge_traceback_is_cut_under_the_limit_its_lines_indented(fmt: str) -> None:
    stream = io.StringIO()
    logger = configure_logging("node-9", fmt, stream=stream)  # type: ignore[arg-type]
    try:
        try:
            raise ValueError("x\nERROR forged " * 20_000)
        except ValueError as exc:
            logger.error("pass failed with an unexpected error", exc_info=exc)
    finally:
        configure_logging("node-9", "text", stream=io.StringIO())
    out = stream.getvalue()
    assert _size(out.rstrip("\n")) <= LOG_LINE_LIMIT
    assert "more characters)" in out
    if fmt == "json":
        assert len(out.splitlines()) == 1
    else:
        first, *rest = out.splitlines()
        assert first.endswith("pass failed with an unexpected error")
        assert all(line.startswith("    ") for line in rest)


def _agent(tmp_path: Path, text: str) -> tuple[Agent, MemoryBackend]:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    memory = MemoryBackend(capabilities=NODE_KINDS)

    def make_backend(spec: Spec) -> BackendGroup:
        return BackendGroup([memory])

    agent = Agent(FileSpecSource(path), make_backend,
                  COMPILED,
                  AgentOptions("node-1", interval=0.01))
    return agent, memory


def _logged_pass(agent: Agent, fmt: str, level: str = "INFO") -> tuple[PassResult, str]:
    """One pass of ``agent`` and what it logged in ``fmt`` at ``level``."""
    stream = io.StringIO()
    configure_logging("node-1", fmt, level, stream=stream)  # type: ignore[arg-type]
    try:
        return agent.run_pass(), stream.getvalue()
    finally:
        configure_logging("node-1", "text", stream=io.StringIO())


def _spec(count: int, bad: str | None = None) -> str:
    lines = ["apiVersion: k3snet.io/v1alpha1", "kind: EgressSpec", "destinations:"]
    lines += [f"  - cidr: 10.{i // 256}.{i % 256}.0/24" for i in range(count)]
    if bad is not None:
        lines += [f"  - cidr: {json.dumps('x' + bad + str(i))}" for i in range(count)]
    return "\n".join(lines) + "\n"


@given(count=st.integers(0, 700), fmt=st.sampled_from(FORMATS))
@example(count=700, fmt="text")
@example(count=700, fmt="json")
@settings(max_examples=15, suppress_health_check=[HealthCheck.too_slow,
                                                  HealthCheck.function_scoped_fixture])
def test_a_pass_logs_every_record_one_line_under_the_limit_whatever_its_changes(
        tmp_path: Path, count: int, fmt: str) -> None:
    agent, _ = _agent(tmp_path, _spec(count))
    result, logged = _logged_pass(agent, fmt)
    assert result.status == "ok"
    lines = _check(logged, fmt)
    last = lines[-1]
    changes = len(result.applied)
    assert f"{changes} change(s)" in last if changes else "no changes" in last
    more = changes - LOG_ITEMS
    assert (f"... and {more} more" in last) is (more > 0)


@given(count=st.integers(1, 300), fmt=st.sampled_from(FORMATS),
       # JSON's escapes as YAML reads them: of the BMP's characters.
       bad=st.text(alphabet=st.characters(max_codepoint=0xFFFF, exclude_categories=["Cs"]),
                   min_size=1, max_size=400))
@example(count=300, fmt="text", bad="x" * 400)
@settings(max_examples=15, suppress_health_check=[HealthCheck.too_slow,
                                                  HealthCheck.function_scoped_fixture])
def test_a_refused_spec_s_problems_log_one_line_under_the_limit_whatever_their_number(
        tmp_path: Path, count: int, fmt: str, bad: str) -> None:
    agent, _ = _agent(tmp_path, _spec(count, bad))
    result, logged = _logged_pass(agent, fmt)
    assert result.status == "failed"  # no spec in force yet
    problems = count
    assert f"{problems} problem" in result.message
    assert (f"... and {problems - LOG_ITEMS} more" in result.message) is (problems > LOG_ITEMS)
    _check(logged, fmt)


def test_every_change_of_a_long_pass_is_logged_at_debug_level(tmp_path: Path) -> None:
    agent, _ = _agent(tmp_path, _spec(40))
    result, logged = _logged_pass(agent, "text", "DEBUG")
    changes = len(result.applied)
    assert changes > LOG_ITEMS
    debug = [line for line in logged.splitlines()
             if " DEBUG " in line and " change " in line]
    assert len(debug) == changes
    assert all(str(c) in line for c, line in zip(result.applied, debug, strict=True))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_conflict_with_hundreds_of_foreign_routes_logs_the_first_and_counts_the_rest(
        tmp_path: Path, fmt: str) -> None:
    count = 300
    text = "\n".join(["apiVersion: k3snet.io/v1alpha1", "kind: EgressSpec", "destinations:",
                      *(f"  - cidr: 10.{i // 256}.{i % 256}.0/24\n    gateway: 192.168.1.1\n"
                        "    device: eth0" for i in range(count))]) + "\n"
    agent, memory = _agent(tmp_path, text)
    want = compile_for(BackendGroup([memory]), Spec.from_yaml(text))
    # A foreign route where the spec wants each of its own: one conflict per destination.
    memory._restore(State(foreign=[attrs.evolve(o, gateway=None) for o in want.owned
                                   if isinstance(o, Route)]))
    result, logged = _logged_pass(agent, fmt)
    assert result.status == "failed"
    assert result.message.startswith("conflict:")
    assert f"... and {count - LOG_ITEMS} more" in result.message
    assert result.message in _check(logged, fmt)[-1]


def test_a_node_name_s_line_break_begins_no_text_line() -> None:
    # --node-name (or $NODE_NAME) is written on every line: its "\r" or "\n" began one.
    stream = io.StringIO()
    logger = configure_logging("node\n2026-01-01T00:00:00.000Z ERROR node=other forged", "text",
                               stream=stream)
    try:
        logger.info("hello")
    finally:
        configure_logging("node-1", "text", stream=io.StringIO())
    assert len(_check(stream.getvalue(), "text")) == 1


def _excluding_spec(count: int) -> str:
    # /26s every other 64 addresses of 100.64.0.0/10: none merges with the next.
    lines = ["apiVersion: k3snet.io/v1alpha1", "kind: EgressSpec", "destinations:",
             "  - cidr: 100.64.0.0/10", "    exclude:"]
    lines += [f"      - 100.{64 + i // 512}.{(i // 2) % 256}.{(i % 2) * 128}/26"
              for i in range(count)]
    lines += ["  - cidr: 198.51.100.0/24"]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_pass_names_a_rule_of_2000_exclusions_briefly_and_every_change_after_it(
        tmp_path: Path, fmt: str) -> None:
    agent, _ = _agent(tmp_path, _excluding_spec(2000))
    result, logged = _logged_pass(agent, fmt)
    assert result.status == "ok"
    (line,) = [line for line in _check(logged, fmt) if "applied: " in line]
    assert "more characters)" not in line  # said whole, not cut
    assert "100.64.1.0/26,... (2000 prefixes)" in line
    assert "100.64.1.128/26" not in line  # the fourth exclusion on: counted
    # what comes after the long rule is still on the line
    assert "masquerade 10.42.0.0/16 -> 198.51.100.0/24" in line
