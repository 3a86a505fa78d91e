"""``k3snet agent``: wires the loop, the probes, the Lease and the report from CLI arguments."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from k3snet._env import env_value
from k3snet.agent._http import HealthServer, parse_listen
from k3snet.agent._lease import LeaderElector, LeaseSettings
from k3snet.agent._logging import configure_logging
from k3snet.agent._loop import (
    Agent,
    AgentOptions,
    BackendFactory,
    DesiredState,
    termination_grace_problem,
)
from k3snet.agent._metrics import AgentMetrics
from k3snet.agent._report import NodeReporter
from k3snet.agent._spec_source import ConfigMapSpecSource, FileSpecSource, SpecSource
from k3snet.errors import BackendUnavailableError, ModelError, Problem, SpecError
from k3snet.kube import (
    ASSUMED_TERMINATION_GRACE,
    DEFAULT_TIMEOUT,
    label_selector_problem,
    name_problem,
    object_ref_problem,
)

if TYPE_CHECKING:
    from k3snet.backends.group import BackendGroup
    from k3snet.spec import Spec

__all__ = ["run_from_cli"]

DEFAULT_LEASE_NAME = "k3snet-cluster-writer"


def _spec_source(args: argparse.Namespace, api: Callable[[], Any]) -> SpecSource:
    if (args.spec is None) == (args.spec_configmap is None):
        raise SpecError([Problem("", "give exactly one of -f/--spec and --spec-configmap")])
    if args.spec is not None:
        return FileSpecSource(args.spec, settle=getattr(args, "spec_settle", None))
    problem = object_ref_problem(args.spec_configmap, key=True)
    if problem is not None:  # the command line checks it too (exit 64); a library caller
        raise SpecError([Problem("", f"--spec-configmap {problem}")])
    where, _, key = args.spec_configmap.partition(":")
    namespace, _, name = where.partition("/")
    return ConfigMapSpecSource(api(), namespace, name, key or "spec.yaml")


def _lease_settings(args: argparse.Namespace) -> LeaseSettings:
    namespace = env_value("K3SNET_NAMESPACE") or "kube-system"
    name = DEFAULT_LEASE_NAME
    if args.lease:
        problem = object_ref_problem(args.lease)
        if problem is not None:  # the command line checks it too (exit 64)
            raise ModelError(f"--lease {problem}")
        namespace, _, name = args.lease.partition("/")
    problem = name_problem(namespace, "namespace")
    if problem is not None:  # $K3SNET_NAMESPACE
        raise ModelError(f"--lease: {problem}")
    return LeaseSettings(namespace, name, duration=args.lease_duration,
                         renew_deadline=args.lease_renew_deadline,
                         retry_period=args.lease_retry_period)


def _agent_options(args: argparse.Namespace) -> AgentOptions:
    grace = getattr(args, "termination_grace", None)
    if grace is None:  # not told (a DaemonSet rendered before it said so): the old 30 s
        grace = float(ASSUMED_TERMINATION_GRACE)
    else:
        problem = termination_grace_problem(grace)
        if problem is not None:  # the command line checks it too (exit 64); a library caller
            raise ModelError(f"--termination-grace {problem}")
    return AgentOptions(args.node_name, args.interval,
                        watch=None if getattr(args, "no_watch", False) else 0.25,
                        cleanup_on_exit=args.cleanup_on_exit, termination_grace=grace)


def _has_label(api_client: Any, node: str, selector: str) -> bool:
    """Whether the Node has label ``KEY`` (or ``KEY=VALUE``): read once, at the first need."""
    from kubernetes import client  # noqa: PLC0415 - optional dependency (k3snet[kube])

    from k3snet.backends.kit import translate_errors  # noqa: PLC0415
    from k3snet.kube import KubeErrors, throttle_waits  # noqa: PLC0415

    key, sep, value = selector.partition("=")
    # A timeout as on every other request: an API server that never answers must not
    # hold the pass (and the node's own rules) for as long as TCP keeps the connection.
    # Nor does a throttled answer, waited inside the request by a client make_api_client
    # made: the agent waits in its own loops alone (throttle_waits(None)).
    with translate_errors(f"read Node {node}", classifier=KubeErrors(timeout=DEFAULT_TIMEOUT)), \
            throttle_waits(None):
        found = client.CoreV1Api(api_client).read_node(node, _request_timeout=DEFAULT_TIMEOUT)
    labels = (found.metadata.labels if found.metadata is not None else None) or {}
    return key in labels and (not sep or labels[key] == value)


def run_from_cli(args: argparse.Namespace, *, make_backend: BackendFactory,
                 desired: DesiredState,
                 spec_warnings: Callable[[Spec, BackendGroup], Sequence[str]] | None = None
                 ) -> int:
    """Run the agent as ``k3snet agent`` was asked to; returns the exit status.

    ``spec_warnings``: what to warn of once a spec is in force (see :class:`Agent`).

    SIGTERM, SIGINT and SIGHUP (unless ignored) end the loop after the pass in progress;
    the rules stay unless ``--cleanup-on-exit``; a held Lease is released.

    The log is the process's: k3snet's loggers are set up by :func:`configure_logging`
    and left so when it returns, as that call leaves them (its own log said the agent's
    end, and a caller's error is logged in its form). A program running the agent in
    its own process calls :func:`k3snet.cli.main` (``["agent", ...]``), which puts them
    back as it found them, or saves and restores them itself around this call.
    """
    configure_logging(args.node_name, args.log_format, args.log_level)
    clients: list[Any] = []

    def api() -> Any:
        if not clients:
            from k3snet.kube import make_api_client  # noqa: PLC0415 - k3snet[kube] only

            client, _ = make_api_client(kubeconfig=args.kubeconfig)
            clients.append(client)
        return clients[0]

    source = _spec_source(args, api)
    settings = _lease_settings(args)
    if args.lease_candidates:
        problem = label_selector_problem(args.lease_candidates)
        if problem is not None:  # the command line checks it too (exit 64); a library caller
            raise ModelError(f"--lease-candidates {problem}")
    options = _agent_options(args)
    use_kube = not args.no_kube
    if use_kube and args.kubeconfig is None and args.spec_configmap is None:
        # A plain host (no kubeconfig, no service account, or no kubernetes client):
        # nothing to report to and no Lease to hold; the spec's own API backends
        # would fail on their own. Say so once and carry on with the node.
        try:
            api()
        except BackendUnavailableError as exc:
            logging.getLogger("k3snet.agent").warning(
                "no Kubernetes API: no node report, no Lease (%s)", exc)
            use_kube = False
    metrics = AgentMetrics() if args.listen != "none" else None
    reporter = NodeReporter(api(), args.node_name) if use_kube and not args.no_node_report \
        else None

    def elector(on_change: Callable[[bool], None]) -> LeaderElector | None:
        if args.lease_candidates and not _has_label(api(), args.node_name,
                                                    args.lease_candidates):
            return None
        return LeaderElector(api(), args.node_name, settings, on_change=on_change)

    agent = Agent(source, make_backend, desired, options,
                  metrics=metrics, reporter=reporter,
                  elector_factory=elector if use_kube else None, spec_warnings=spec_warnings)
    server = None
    if metrics is not None:
        host, port = parse_listen(args.listen)
        server = HealthServer(host, port, healthy=agent.health, ready=agent.readiness,
                              metrics=metrics.exposition).start()
        logging.getLogger("k3snet.agent").info(
            "serving /healthz, /readyz and /metrics on %s", server.address)
    log = logging.getLogger("k3snet.agent")
    try:
        with _stop_on_signals(agent):
            status = agent.run(once=args.once)
        if not args.once:
            log.info("stopped after %d pass(es); %s", agent.passes,
                     "removed what k3snet owned on this node" if agent.cleaned_up
                     else "the rules stay in place (k3snet destroy removes them)")
        return status
    finally:
        if server is not None:
            server.stop()
        for client in clients:
            client.close()


@contextlib.contextmanager
def _stop_on_signals(agent: Agent) -> Iterator[None]:
    """Within the block, SIGTERM, SIGINT and SIGHUP (unless ignored: ``nohup``) call
    ``agent.stop()``; the handlers found come back afterwards.

    The handler itself only writes a byte to a pipe; a thread of its own reads it and
    stops the agent. A Python handler runs in the main thread between two bytecodes,
    where the loop may hold the lock of the Event ``stop()`` sets (in ``Event.wait``
    before it blocks, or ``Event.clear``): calling ``stop()`` there waited on that lock
    for ever, and the kubelet killed the agent, its Lease held. SIGHUP (the terminal or
    SSH session of an agent run by hand went away) ended the process at once, mid-pass.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    endings = [signal.SIGTERM, signal.SIGINT]
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        endings.append(signal.SIGHUP)
    read, write = os.pipe()
    os.set_blocking(write, False)

    def relay() -> None:
        while os.read(read, 1):  # b"": the write end is closed, the block is over
            agent.stop()

    def handler(signum: int, frame: object) -> None:
        with contextlib.suppress(BlockingIOError):  # full: a stop is on its way already
            os.write(write, b"\0")

    thread = threading.Thread(target=relay, name="k3snet-agent-signals", daemon=True)
    thread.start()
    previous = {}
    try:
        for ending in endings:
            previous[ending] = signal.signal(ending, handler)
        yield
    finally:
        for ending, before in previous.items():
            signal.signal(ending, before)
        os.close(write)
        thread.join()
        os.close(read)
