"""The node agent (``k3snet agent``): the DaemonSet that keeps every node converged.

* :class:`Agent` -- the loop: re-reads the spec each pass, keeps the last good
  one when a new one is invalid or would delete everything, converges the
  node's backends, and the cluster-wide ones only as the Lease holder;
* :class:`LeaderElector` -- client-go's leader election on a
  ``coordination.k8s.io/v1`` Lease, for the synchronous ``kubernetes`` client;
* :class:`HealthServer` -- ``/healthz``, ``/readyz``, ``/metrics`` (:class:`AgentMetrics`);
* :class:`NodeReporter` -- the last result as Node annotations and Events;
* :func:`configure_logging` -- timestamped log lines with the node name, text or JSON.

Needs ``k3snet[agent]`` (prometheus_client) for metrics and ``k3snet[kube]``
for the Lease, the node report and a spec read from a ConfigMap; all are
imported only when used. See docs/agent.md.
"""

from k3snet.agent._http import HealthServer, parse_listen
from k3snet.agent._lease import LEASE_JITTER, RETRY_AFTER_LIMIT, LeaderElector, LeaseSettings
from k3snet.agent._logging import LOG_ITEMS, LOG_LINE_LIMIT, LOGGER_NAME, configure_logging
from k3snet.agent._loop import (
    CLEANUP_MARGIN,
    INTERVAL_JITTER,
    NOT_READY_AFTER,
    NOT_READY_FOR,
    Agent,
    AgentOptions,
    PassResult,
    cluster_wide_kinds,
    grace_shortfalls,
    split_cluster_wide,
    termination_grace_problem,
)
from k3snet.agent._main import run_from_cli
from k3snet.agent._metrics import AgentMetrics
from k3snet.agent._report import (
    EVENT_BURST,
    EVENT_INTERVAL,
    EVENT_TRIES,
    MESSAGE_LIMIT,
    PATCH_RETRY_LIMIT,
    REASSERT_INTERVAL,
    RESULT_ANNOTATION,
    STATUS_ANNOTATION,
    NodeReport,
    NodeReporter,
)
from k3snet.agent._spec_source import (
    SPEC_SETTLE,
    SPEC_SETTLE_LIMIT,
    ConfigMapSpecSource,
    FileSpecSource,
    SpecSource,
)

__all__ = [
    "CLEANUP_MARGIN",
    "EVENT_BURST",
    "EVENT_INTERVAL",
    "EVENT_TRIES",
    "INTERVAL_JITTER",
    "LEASE_JITTER",
    "LOGGER_NAME",
    "LOG_ITEMS",
    "LOG_LINE_LIMIT",
    "MESSAGE_LIMIT",
    "NOT_READY_AFTER",
    "NOT_READY_FOR",
    "PATCH_RETRY_LIMIT",
    "REASSERT_INTERVAL",
    "RESULT_ANNOTATION",
    "RETRY_AFTER_LIMIT",
    "SPEC_SETTLE",
    "SPEC_SETTLE_LIMIT",
    "STATUS_ANNOTATION",
    "Agent",
    "AgentMetrics",
    "AgentOptions",
    "ConfigMapSpecSource",
    "FileSpecSource",
    "HealthServer",
    "LeaderElector",
    "LeaseSettings",
    "NodeReport",
    "NodeReporter",
    "PassResult",
    "SpecSource",
    "cluster_wide_kinds",
    "configure_logging",
    "grace_shortfalls",
    "parse_listen",
    "run_from_cli",
    "split_cluster_wide",
    "termination_grace_problem",
]
