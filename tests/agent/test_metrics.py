"""The agent's metrics as a scraper reads them, whatever a scrape falls on."""

from __future__ import annotations

import re
import sys
from types import FrameType
from typing import TYPE_CHECKING, Any, cast

from prometheus_client.parser import text_string_to_metric_families

from k3snet.agent import AgentMetrics

if TYPE_CHECKING:
    from k3snet.planner import Change

Labels = tuple[tuple[str, str], ...]


def _samples(metrics: AgentMetrics, name: str) -> list[tuple[Labels, float]]:
    """``name``'s samples in the exposition, as prometheus_client's parser reads them."""
    text = metrics.exposition()[0].decode()
    return [(tuple(sorted(s.labels.items())), s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name]


def _scraped_between_the_lines(metrics: AgentMetrics, call: Any) -> list[tuple[object, ...]]:
    """Run ``call()`` and scrape before each line of ``AgentMetrics.set_spec`` it runs
    and at its return (where the HTTP server's thread may scrape): what each saw."""
    seen: list[tuple[object, ...]] = []
    code = AgentMetrics.set_spec.__code__

    def local(frame: FrameType, event: str, arg: object) -> Any:
        if event in ("line", "return"):
            seen.append((tuple(_samples(metrics, "k3snet_agent_spec_info")),
                         tuple(_samples(metrics, "k3snet_agent_spec_generation"))))
        return local

    def trace(frame: FrameType, event: str, arg: object) -> Any:
        return local if frame.f_code is code else None

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        call()
    finally:
        sys.settrace(previous)
    return seen


def test_a_scrape_during_a_spec_change_sees_the_old_spec_or_the_new_never_none() -> None:
    # set_spec cleared the info metric, then added the new series: a scrape in between
    # (the HTTP server's thread) had no k3snet_agent_spec_info at all, which an alert on
    # its absence or a join on it (`* on() group_left(sha256)`) took for an agent without
    # a spec, and a generation of the new spec beside the old one's hash.
    metrics = AgentMetrics()
    metrics.set_spec("a" * 64, 1)
    old = (((("sha256", "a" * 64),), 1.0),), (((), 1.0),)
    new = (((("sha256", "b" * 64),), 1.0),), (((), 2.0),)
    seen = _scraped_between_the_lines(metrics, lambda: metrics.set_spec("b" * 64, 2))
    assert len(seen) >= 2
    assert set(seen) <= {old, new}
    assert seen[-1] == new


def test_before_any_spec_the_info_metric_has_no_series_and_the_generation_is_0() -> None:
    metrics = AgentMetrics()
    assert _samples(metrics, "k3snet_agent_spec_info") == []
    assert _samples(metrics, "k3snet_agent_spec_generation") == [((), 0.0)]


_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
_SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def _strict_0_0_4(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The samples of ``text`` by family, each line held to the text format 0.0.4 as
    Prometheus reads it (names, HELP and label escapes, TYPE first and once); an
    AssertionError naming the first line it would refuse."""
    assert text.endswith("\n")
    families: dict[str, list[tuple[dict[str, str], float]]] = {}
    kinds: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            assert _NAME.fullmatch(name), line
            assert re.fullmatch(r"(?:[^\\]|\\[\\n])*", doc), line
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert _NAME.fullmatch(name), line
            assert kind in _SUFFIXES, line
            assert name not in kinds, f"a second TYPE: {line}"
            kinds[name] = kind
            families[name] = []
        else:
            sample = re.fullmatch(r"([^{ ]+)(?:\{(.*)\})? (\S+)", line)
            assert sample is not None, line
            name, labels, value = sample.groups()
            family = next((f for f in kinds for s in _SUFFIXES[kinds[f]] if f + s == name), None)
            assert family is not None, f"a sample before its TYPE: {line}"
            pairs = _LABEL.findall(labels or "")
            assert ",".join(f'{k}="{v}"' for k, v in pairs) == (labels or ""), line
            unescaped = {k: re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m[1], m[1]), v)
                         for k, v in pairs}
            families[family].append((unescaped, float(value)))
    return families


HOSTILE = ['a"b', "back\\slash", "new\nline", "\\n", "\u00e9t\u00e9", "x\udcff", ""]


def test_hostile_label_values_are_escaped_and_every_line_is_text_format_0_0_4() -> None:
    # A backend's own object type names its kind (register_object_type takes any
    # string): quotes, backslashes and newlines are escaped, and a lone surrogate (no
    # UTF-8 byte string) made every /metrics a 500 for the process's life, the counter
    # keeping its series.
    metrics = AgentMetrics()
    metrics.set_spec("c" * 64, 3)
    metrics.count_changes([cast("Change", _Changed(kind, "add")) for kind in HOSTILE])
    metrics.sync_duration.observe(0.2)
    body, ctype = metrics.exposition()
    text = body.decode()
    families = _strict_0_0_4(text)
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    kinds = {labels["kind"] for labels, _ in families["k3snet_agent_changes_total"]}
    assert kinds == {k.encode("utf-8", "backslashreplace").decode() for k in HOSTILE}
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    assert {s.labels["kind"] for s in parsed["k3snet_agent_changes"].samples} == kinds
    assert set(families) == {f"{f}_total" if parsed[f].type == "counter" else f
                             for f in parsed}


class _Changed:
    """What count_changes reads of a change."""

    def __init__(self, kind: str, action: str) -> None:
        self.kind = kind
        self.action = action


def test_the_leader_gauges_help_says_what_its_value_reads_the_lease_held_not_writes_made() -> None:
    # The gauge reads the elector (is_leader: the Lease held and renewed within the renew
    # deadline), the condition under which a pass may write the cluster-wide objects. Its
    # HELP said the agent "writes the cluster-wide objects": 1 too while the spec in force
    # names no cluster-wide backend (the election goes on) and after SIGTERM until the
    # release, writing none.
    metrics = AgentMetrics()
    from prometheus_client import generate_latest  # noqa: PLC0415

    text = generate_latest(metrics.registry).decode()
    (help_line,) = [line for line in text.splitlines()
                    if line.startswith("# HELP k3snet_agent_leader ")]
    assert "holds the Lease" in help_line
    assert "renew deadline" in help_line
    assert "writes the cluster-wide" not in help_line
