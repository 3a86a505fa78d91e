"""The agent's Prometheus metrics, in a registry of its own (prometheus_client, imported lazily)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from k3snet.errors import BackendUnavailableError
from k3snet.planner import Change

__all__ = ["FAILURE_REASONS", "SPEC_READ_ERROR_REASONS", "SPEC_REFUSAL_REASONS", "AgentMetrics",
           "spec_read_error_reason"]

FAILURE_REASONS = ("conflict", "teardown", "spec", "unreachable", "refused", "check", "apply",
                   "api", "backend", "error", "internal")
"""The ``reason`` labels of ``k3snet_agent_sync_failures_total`` and
``k3snet_agent_cluster_sync_failures_total``."""

SPEC_REFUSAL_REASONS = ("invalid", "teardown", "unreadable")
"""The ``reason`` labels of ``k3snet_agent_spec_rejected_total``."""

SPEC_READ_ERROR_REASONS = ("timeout", "unreachable", "server", "throttled", "denied", "other")
"""The ``reason`` labels of ``k3snet_agent_spec_read_errors_total``."""


def spec_read_error_reason(exc: BaseException) -> str:
    """The ``reason`` label of a failed read of the spec: ``timeout`` (no answer in
    time), ``unreachable`` (no connection), ``server`` (5xx), ``throttled`` (429),
    ``denied`` (401, 403 for a while from the first in a row: an API server filling its
    caches after a restart), or ``other`` (another status, such as 410, or an
    error of no API request)."""
    status = getattr(exc, "status", None)
    if not hasattr(exc, "status"):
        return "other"
    if status is None:
        return "timeout" if getattr(exc, "reason", None) == "Timeout" else "unreachable"
    if status == 429:
        return "throttled"
    if status in (401, 403):
        return "denied"
    return "server" if status >= 500 else "other"

# Seconds: a no-op pass on a small node takes milliseconds, a first apply of
# thousands of rules seconds.
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""What ``/metrics`` serves: Prometheus's text format 0.0.4."""


def _utf8(value: str) -> str:
    """``value`` as a label value that UTF-8 can write: a lone surrogate (a byte that was
    no UTF-8) as its ``\\udcXX`` escape; generate_latest failed on it, and every
    scrape after with it, the series kept."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _prometheus() -> Any:
    try:
        import prometheus_client  # noqa: PLC0415 - optional dependency (k3snet[agent])
    except ImportError as exc:
        raise BackendUnavailableError(
            f"prometheus_client is not installed: {exc} (pip install 'k3snet[agent]')") from exc
    return prometheus_client


class _WithoutCreated:
    """The registry's families without their ``_created`` samples.

    prometheus_client's text format adds a ``<name>_created`` gauge (the Unix time the
    series was made) for every series of a counter and of the histogram: 32 of the
    agent's 89 series, undocumented, 160 000 series at 5 000 nodes that no alert or
    rate() reads (Prometheus takes them for ordinary gauges from this format). Left
    out here, for this registry alone (``disable_created_metrics`` is the process's).
    """

    def __init__(self, registry: Any) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Any]:
        for family in self._registry.collect():  # families built anew by each collect
            created = f"{family.name}_created"
            family.samples = [s for s in family.samples if s.name != created]
            yield family


class _SpecInForce:
    """``k3snet_agent_spec_generation`` and ``k3snet_agent_spec_info`` from one value,
    replaced whole (``now``): a scrape sees the spec before or the one after, never
    none of them nor the hash of one with the generation of the other.

    The info gauge was cleared, then given the new hash: a scrape in between (the
    HTTP server's thread) had no ``k3snet_agent_spec_info`` series at all.
    """

    def __init__(self) -> None:
        self.now: tuple[str, int] | None = None  # (sha256, generation); None: no spec yet

    def collect(self) -> Iterator[Any]:
        # prometheus_client is there: the registry collecting this was made with it.
        from prometheus_client.metrics_core import (  # noqa: PLC0415 - k3snet[agent]
            GaugeMetricFamily as gauge,  # noqa: N813 - a factory, as p.Gauge above
        )
        now = self.now  # read once: the two families agree
        yield gauge("k3snet_agent_spec_generation",
                    "How many distinct specs this agent has put in force (1: the first).",
                    value=0 if now is None else now[1])
        info = gauge("k3snet_agent_spec_info", "The spec in force (value 1), by its SHA-256.",
                     labels=["sha256"])
        if now is not None:
            info.add_metric([now[0]], 1)
        yield info


class AgentMetrics:
    """Every metric the agent exports (names start with ``k3snet_agent_``).

    ``registry`` is a fresh ``CollectorRegistry``: several agents in one process
    (tests) never share counters.
    """

    def __init__(self) -> None:
        p = _prometheus()
        self.registry = p.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sync_duration = p.Histogram(
            "k3snet_agent_sync_duration_seconds", "Duration of one pass (observe, plan, apply).",
            buckets=_DURATION_BUCKETS, registry=r)
        self.changes = p.Counter(
            "k3snet_agent_changes", "Changes applied, by object kind and action.",
            ["kind", "action"], registry=r)
        self.conflicts = p.Counter(
            "k3snet_agent_conflicts",
            "Passes failed because foreign state blocks part of the spec.", registry=r)
        self.failures = p.Counter(
            "k3snet_agent_sync_failures", "Passes that failed, by reason.", ["reason"],
            registry=r)
        self.cluster_failures = p.Counter(
            "k3snet_agent_cluster_sync_failures",
            "Passes in which this agent, holding the Lease, failed to converge the "
            "cluster-wide objects, by reason.", ["reason"], registry=r)
        self.cluster_last_success = p.Gauge(
            "k3snet_agent_cluster_last_success_timestamp_seconds",
            "Unix time this agent last converged the cluster-wide objects as the Lease "
            "holder (0: never).", registry=r)
        self.drift_repairs = p.Counter(
            "k3snet_agent_drift_repairs",
            "Changes applied although the spec in force did not change (drift repaired).",
            registry=r)
        self.last_success = p.Gauge(
            "k3snet_agent_last_success_timestamp_seconds",
            "Unix time of the end of the last successful pass.", registry=r)
        self._spec = _SpecInForce()
        r.register(self._spec)
        self.spec_rejected = p.Counter(
            "k3snet_agent_spec_rejected",
            "New specs refused (invalid, unreadable, or deleting everything), by reason.",
            ["reason"], registry=r)
        self.spec_read_errors = p.Counter(
            "k3snet_agent_spec_read_errors",
            "Reads of the spec that failed this time (the API server restarting, "
            "overloaded, unreachable), by reason: the spec in force stays, nothing refused.",
            ["reason"], registry=r)
        self.spec_last_read = p.Gauge(
            "k3snet_agent_spec_last_read_timestamp_seconds",
            "Unix time the spec's source was last read (0: never).", registry=r)
        self.spec_kept = p.Gauge(
            "k3snet_agent_spec_last_good_kept",
            "1 while the newest spec is refused and the last good one stays in force.",
            registry=r)
        self.leader = p.Gauge(
            "k3snet_agent_leader",
            "1 while this agent holds the Lease, renewed within its renew deadline: the one "
            "agent whose passes may write the cluster-wide objects (read at each scrape).",
            registry=r)
        self.ready = p.Gauge(
            "k3snet_agent_ready",
            "1 once a pass has converged the node, 0 again once its node part has failed "
            "3 passes in a row and for 30 s by default (what /readyz reports).",
            registry=r)
        # Every reason's series from the start, at 0: a series born at its first failure
        # has no earlier sample, so `increase(...[10m]) > 0` (the alert docs/agent.md
        # gives) and rate() miss that failure.
        for reason in FAILURE_REASONS:
            self.failures.labels(reason=reason)
            self.cluster_failures.labels(reason=reason)
        for reason in SPEC_REFUSAL_REASONS:
            self.spec_rejected.labels(reason=reason)
        for reason in SPEC_READ_ERROR_REASONS:
            self.spec_read_errors.labels(reason=reason)
        self.backend_warnings = p.Gauge(
            "k3snet_agent_backend_warnings",
            "Warnings the backends have now, as the last pass looked (each logged once "
            "while it lasts; part: node, or cluster as the Lease holder).",
            ["part"], registry=r)
        for part in ("node", "cluster"):
            self.backend_warnings.labels(part=part)
        self.restart_pending = p.Gauge(
            "k3snet_agent_restart_pending",
            "CNI DaemonSets whose pods still run since before k3snet changed the config "
            "they read only at start, as the last pass looked (the Lease holder's count; "
            "0 once every pod restarted).",
            registry=r)
        self.repair_gap = p.Gauge(
            "k3snet_agent_repair_gap_seconds",
            "Seconds a pass started by a change waits after the previous pass started "
            "(--watch gap, doubled while another program keeps undoing k3snet's changes "
            "or while passes keep failing).",
            registry=r)

    def count_changes(self, changes: tuple[Change, ...] | list[Change]) -> None:
        """Add applied changes to ``k3snet_agent_changes_total{kind, action}``."""
        for change in changes:
            self.changes.labels(kind=_utf8(change.kind), action=change.action).inc()

    def set_spec(self, sha256: str, generation: int) -> None:
        """Record the spec now in force (the info metric holds exactly one series), in one
        step: a scrape meanwhile sees the one before, with its generation (see
        :class:`_SpecInForce`)."""
        self._spec.now = (sha256, generation)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition format 0.0.4 and its content type (what ``/metrics``
        serves), no ``_created`` series in it (see :class:`_WithoutCreated`)."""
        p = _prometheus()
        # generate_latest writes 0.0.4 (the names escaped to it) and prometheus_client's
        # own server says so unless a scraper asks for another; its CONTENT_TYPE_LATEST
        # is 1.0.0 from 0.22 on, 0.0.4 before: the agent said either, by the version
        # installed.
        return p.generate_latest(_WithoutCreated(self.registry)), CONTENT_TYPE
