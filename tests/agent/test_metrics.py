"""The agent's metrics as a scraper reads them, whatever a scrape falls on."""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from k3snet.agent import AgentMetrics

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
