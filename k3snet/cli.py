"""The ``k3snet`` command: a thin layer over the library.

Every subcommand parses its arguments, calls the library and prints. Bad input
exits 1 with a one-line-per-problem message on stderr, never a traceback.

Exit codes: the ``EXIT_*`` constants below, one table in docs/cli.md.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import logging
import os
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import attrs

from k3snet._admin_path import admin_path, with_admin_path
from k3snet._argv import COMMON_VALUED as _COMMON_VALUED
from k3snet._argv import Run
from k3snet._argv import asks_json as _asks_json
from k3snet._argv import common_after_command as _common_after_command
from k3snet._deadline import ASSUMED_TERMINATION_GRACE, Deadline, requests_within
from k3snet._env import env_switch, env_value
from k3snet._kept import (
    input_problem,
    make_directory,
    read_input,
    refuse_foreign_output,
    write_output_in,
)
from k3snet._logline import (
    HANDLER_NAME,
    fs_word,
    one_line,
    printable,
    printable_line,
    printable_lines,
    shell_join,
    shell_path,
)
from k3snet._logline import bounded as bounded_line
from k3snet._version import __version__
from k3snet._yamltext import yaml_missing, yaml_problem
from k3snet.backends.base import ApplyResult, PendingRestart, restart_command
from k3snet.backends.group import BackendGroup, Member
from k3snet.backends.kit import (
    ALLOW_DISRUPTIVE,
    WarningLog,
    held_after_commit,
    option_seconds,
    undoing,
)
from k3snet.backends.lock import DEFAULT_LOCK_TIMEOUT, namespaces_of
from k3snet.backends.netns import exec_name, validate_netns
from k3snet.backends.options import resolve_backend_options
from k3snet.backends.registry import (
    available_backends,
    backend_options,
    create_backend,
    declared_capabilities,
    load_backend,
    option_defaults,
    option_problems,
    path_options,
    refuse_undeclared,
)
from k3snet.converge import (
    NODE_KINDS,
    Convergence,
    apply_plan,
    compile_for,
    converge,
    destroy_each,
    facts_namespace,
    pending_restarts,
    reads_node_facts,
    removed_before,
    restarts_needed,
    route_protocol,
    teardown_emptied,
    unmanaged,
    with_route_protocol,
)
from k3snet.errors import (
    BackendError,
    BackendOptionError,
    CheckError,
    ConflictError,
    K3snetError,
    LockTimeoutError,
    ModelError,
    PlanError,
    Problem,
    RollbackError,
    SpecError,
    StalePlanError,
)
from k3snet.facts import FactsWatch, gather_facts
from k3snet.model import K3SNET_ROUTE_PROTOCOL, Route, Sysctl
from k3snet.model.state import State
from k3snet.model.sysctl import is_secret, redact_secrets, shown_value, sysctl_name
from k3snet.planner import Change, Plan, plan
from k3snet.spec import NodeFacts, Spec, check_backend_options, load_spec, spec_backend_options
from k3snet.spec import compile as compile_spec
from k3snet.spec import load as spec_load
from k3snet.spec.source import read_text
from k3snet.spec.validate import holds_nul

if TYPE_CHECKING:
    from k3snet.backends.discover import Discovery  # imported by destroy's look
    from k3snet.planfile import PlanFile  # imported by the commands a plan file's

__all__ = ["build_parser", "main", "run_main"]

DEFAULT_BACKENDS = ("netlink", "nftables")
JSON_FORMAT = 1
"""The version of every JSON document the CLI prints or writes (the ``format`` key)."""
EXIT_OK, EXIT_ERROR, EXIT_CHANGES, EXIT_RUNNING, EXIT_CONFLICTS = 0, 1, 2, 3, 4
EXIT_HALF_CHANGED = 5
"""An apply failed and taking it back failed too (a RollbackError): the node may be
half-changed. Not 1, which says nothing was changed or all of it was taken back."""
EXIT_TEST_FAILED = 6
"""``connectivity``: the test Job ran and failed (the pod did not reach the target). Not
1, which a script waiting on the test cannot tell from an API server it cannot reach."""
DEFAULT_LISTEN = ":9743"
"""The agent's ``--listen`` unless ``$K3SNET_LISTEN`` says otherwise (none with ``--once``)."""
EXIT_USAGE = 64  # sysexits' EX_USAGE: argparse's own 2 would read as "changes pending"
EXIT_BUSY = 75
"""sysexits' EX_TEMPFAIL: another k3snet process held the namespace's lock past
``--lock-timeout`` (a LockTimeoutError); nothing was changed, a later run may succeed.
Not 1, which a cron job or CI step cannot tell from a spec or backend failing."""
EXIT_INTERRUPTED = 130  # 128 + SIGINT (Ctrl-C)
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a command killed by it
EXIT_TERMINATED = 143  # 128 + SIGTERM, likewise
EXIT_HANGUP = 129  # 128 + SIGHUP: the terminal or SSH session went away
NODE_COMMANDS = frozenset({"plan", "apply", "destroy", "observe", "agent"})
"""The commands that act on the node with what a spec (``-f``) gives (and ``doctor --fix``):
its file must be one only its owner (this user, root, or the user who ran sudo) may
write."""
UNDONE_ON_SIGTERM = frozenset({"apply", "destroy", "doctor"})
"""The commands that change the node (``doctor`` with ``--fix``): SIGTERM and SIGHUP take
back what they made, as Ctrl-C does."""
UNDO_AFTER_SIGTERM = 75.0
"""Seconds the API requests of the undo SIGTERM starts have, all together
(:func:`sigterm_undoes`): under systemd's 90 s stop timeout (``TimeoutStopSec``), after
which its SIGKILL cut the undo at any point, silently."""
_clock: Callable[[], float] = time.monotonic  # the deadline's clock (a fake in tests)


SPEC_HELP = "spec file (YAML or JSON)"
NOTHING_TO_DESTROY = "Nothing to destroy: k3snet owns nothing here."
"""What ``destroy`` (and the Ansible module's ``state: absent``) says of an empty plan."""


class _UsageExit(SystemExit):
    """argparse's usage error: exit 64, with its message for an ``error`` document."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_USAGE)
        self.message = message


class _Stopped(SystemExit):
    """SIGTERM or SIGHUP ending a command that changes the node (:func:`sigterm_undoes`):
    exit 143 or 129, its signal's name for the error that says so."""

    def __init__(self, code: int, name: str) -> None:
        super().__init__(code)
        self.name = name

    def __str__(self) -> str:
        # What an error it ends in says (a RollbackError's "interrupted (...)", a backend
        # group's failing member), not the exit code alone ("_Stopped: 143", "143").
        return f"stopped by {self.name}"


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors exiting 64, not 2 (2 means "changes pending")."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self._print_message(f"{self.prog}: error: {message}\n", sys.stderr)
        raise _UsageExit(message)


class _Discarded:
    """A text stream that drops what is written (argparse's usage text, logged instead)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def _agent_logs_json(argv: Sequence[str]) -> bool:
    """Whether ``argv`` (the command first) runs the agent with ``--log-format json`` (the
    last given, or ``$K3SNET_LOG_FORMAT``): its usage error, a value of its environment
    refused (``$K3SNET_LOG_LEVEL``, ``$K3SNET_LISTEN``) as much as a flag, is then a record
    of its JSON log, the one line of a crash loop its collector reads."""
    if not argv or argv[0] != "agent":
        return False
    wanted = env_value("K3SNET_LOG_FORMAT") or "text"
    for index, arg in enumerate(argv):
        if arg == "--":
            break
        name, equals, value = arg.partition("=")
        if _agent_option(name, "--log-format", "--log-f"):
            wanted = value if equals else (argv[index + 1] if index + 1 < len(argv) else "")
    return wanted == "json"


def _agent_option(name: str, option: str, shortest: str) -> bool:
    """Whether argparse reads ``name`` as the agent's ``option``: the option or an
    abbreviation of it (``--log-form``), down to ``shortest``, the shortest one no other
    option of the agent starts with (tests/cli/test_json_errors.py checks it)."""
    return len(name) >= len(shortest) and option.startswith(name)


def _log_agent_usage_error(argv: Sequence[str], message: str) -> None:
    """The agent's usage error as one error record of its JSON log, with the node it
    would have named (``--node-name``, ``$K3SNET_NODE_NAME`` or the hostname)."""
    from k3snet.agent import configure_logging  # noqa: PLC0415 - as cmd_agent imports

    node = env_value("K3SNET_NODE_NAME") or socket.gethostname().strip().lower()
    for index, arg in enumerate(argv):
        if arg == "--":
            break
        name, equals, value = arg.partition("=")
        if _agent_option(name, "--node-name", "--nod") and (equals or index + 1 < len(argv)):
            node = value if equals else argv[index + 1]
    configure_logging(node, "json").error("%s", f"usage: {message}")


def _common_options() -> _Parser:
    """Options every subcommand takes: verbosity, log format, colour."""
    common = _Parser(add_help=False)
    group = common.add_argument_group("output")
    # One or the other: with both, -q won and the -v given for a run was silently lost.
    verbosity = group.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="count", default=0,
                           help="log more (-v: info, -vv: debug) on stderr")
    verbosity.add_argument("-q", "--quiet", action="store_true",
                           help="log errors only (not with -v)")
    group.add_argument("--log-format", type=_from_env("K3SNET_LOG_FORMAT", _one_of("text", "json")),
                       metavar="{text,json}",
                       default=env_value("K3SNET_LOG_FORMAT") or "text",
                       help="log lines as text or as one JSON object each "
                            "(default: $K3SNET_LOG_FORMAT or text)")
    group.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                       help="colour the plan (auto: on a terminal, unless NO_COLOR is set)")
    return common


def _add_doctor(add: Callable[[str, str], Any]) -> None:
    """The ``doctor`` subcommand's arguments."""
    doctor = add(
        "doctor", "Explain why a pod cannot reach a destination, and plan the fix. "
                  "Exit 0: the flow reaches, 1: error, 3: blocked, 4: unknown; with --fix also "
                  "5: the fix failed and was not taken back, 75: busy (another k3snet "
                  "process held the lock).")
    doctor.add_argument("--from", dest="source", required=True, metavar="POD_IP",
                        help="the pod's address: the flow's source")
    doctor.add_argument("--to", dest="destination", required=True, metavar="DEST[:PORT]",
                        help="address, address:port, or [IPv6]:port")
    doctor.add_argument("--proto", choices=("tcp", "udp", "icmp"), default="tcp",
                        help="the flow's protocol (default: tcp)")
    where = doctor.add_mutually_exclusive_group()
    where.add_argument("--netns", type=_netns_name,
                       help="read the node state inside this network namespace")
    where.add_argument("--state", type=_read_path, metavar="DIR",
                       help="read a bundle written by `k3snet observe --save DIR`")
    doctor.add_argument("-f", "--spec", type=_read_path,
                        help="spec file: its cluster pod and service CIDRs are checked")
    doctor.add_argument("--service-cidr", action="append", default=[], metavar="CIDR",
                        help="the cluster's service CIDR (repeatable; K3s: 10.43.0.0/16)")
    doctor.add_argument("--kubeconfig", metavar="FILE",
                        help="read Calico's IP pools through the calico backend with this "
                             "kube config (default on a node: $KUBECONFIG, the in-cluster "
                             "account or K3s' /etc/rancher/k3s/k3s.yaml, when present)")
    doctor.add_argument("--context", help="with --kubeconfig: the context to use")
    doctor.add_argument("--fix", action="store_true",
                        help="apply the fix plan (after confirmation)")
    doctor.add_argument("--auto-approve", action="store_true",
                        help="with --fix: apply without asking")
    doctor.add_argument("-o", "--output", choices=("text", "json"), default="text",
                        help="json: one `doctor` document on stdout (default: text)")


def _add_explain(add: Callable[[str, str], Any]) -> None:
    """The ``explain`` subcommand's arguments."""
    explain = add("explain", "Describe a key of the spec (type, default, allowed values, "
                             "meaning), e.g. `k3snet explain destinations.cidr`.")
    explain.add_argument("path", nargs="?", default="", metavar="PATH",
                         help="a dotted key (default: the whole spec)")
    explain.add_argument("--schema", action="store_true",
                         help="print the spec's JSON Schema instead (for editors)")


class _KnownBackends:
    """The known backends' names, listed only when a help text is printed.

    Listing them scans the installed distributions' entry points, 0.1-0.3 s of
    CPU (importlib.metadata's import included) that every cold start paid,
    five times, while building the parser (benchmarks/bench_cli.py).
    """

    def __str__(self) -> str:
        return ", ".join(available_backends())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    from k3snet.backends.discover import NODE_BACKENDS  # noqa: PLC0415 - destroy's help

    common = _common_options()
    parser = _Parser(
        prog="k3snet",
        description="Plan and apply the minimal changes that make pod egress work on this node.",
        epilog="Exit codes: 0 ok / nothing to do, 1 error, 2 changes pending (plan) or made "
               "(--detailed-exitcode), 3 still running (connectivity) or blocked (doctor), "
               "4 conflicts or cannot tell (doctor: also run without root), 5 failed and "
               "not taken back (the node may be half-changed), 6 test failed (connectivity), "
               "64 usage, 75 busy (another k3snet process held the lock past --lock-timeout; "
               "nothing changed).",
    )
    parser.add_argument("--version", action="version", version=f"k3snet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str, help_text: str) -> Any:
        return sub.add_parser(name, help=help_text, description=help_text, parents=[common])

    def node_command(name: str, help_text: str, *, spec_required: bool | None = True,
                     output: bool = True,
                     backends: str = f"else {' + '.join(DEFAULT_BACKENDS)}") -> Any:
        """A command acting on a node; ``spec_required=None``: the caller adds ``-f``;
        ``output=False``: no ``--output`` (the agent's output is its log); ``backends``:
        the backends used without ``--backend`` nor a spec's, as ``--backend`` says."""
        cmd = add(name, help_text)
        if spec_required is not None:
            cmd.add_argument("-f", "--spec", required=spec_required, type=_read_path,
                             help=SPEC_HELP)
        backend = cmd.add_argument(
            "--backend", action=_AppendBackend, default=[], metavar="NAME[:KINDS]",
            type=_backend_entry,
            help="backend to use, repeatable; KINDS limits it, e.g. iptables:forward "
                 f"(default: the spec's, {backends}; "
                 "known: %(known)s)")
        backend.known = _KnownBackends()  # argparse fills %(known)s from the action
        cmd.add_argument("--netns", type=_netns_name, help="act inside this network namespace")
        cmd.add_argument("--backend-opt", action="append", default=[], metavar="NAME.KEY=VALUE",
                         type=_backend_opt,
                         help="an option for backend NAME, repeatable (VALUE is read as JSON "
                              "when it parses, else as text), e.g. nftables.family=split")
        if output:
            cmd.add_argument("--output", choices=("text", "json"), default="text",
                             help="json: one document on stdout, errors too (default: text)")
        cmd.add_argument("--no-facts", action="store_true",
                         help="do not read the node's interfaces to check the spec")
        return cmd

    plan_cmd = node_command("plan", "Print the plan; exit 0 if nothing to do, 2 if changes are "
                            "pending, 4 if foreign state blocks part of the spec.")
    plan_cmd.add_argument("--out", type=_written_path, metavar="FILE",
                          help="also save the plan, with the node and what was observed, for "
                               "`k3snet apply FILE`")
    apply = node_command("apply", "Apply the plan (or a saved plan file) and print what was done.",
                         spec_required=False)
    apply.add_argument("planfile", nargs="?", type=_read_path,
                       help="a plan saved by `k3snet plan --out`: applied exactly, or refused "
                            "if the node changed since")
    apply.add_argument("--allow-conflicts", action="store_true",
                       help="apply the rest of the plan even if foreign state blocks part of it")
    apply.add_argument("--auto-approve", action="store_true",
                       help="do not ask for confirmation on a terminal")
    apply.add_argument("--dry-run", action="store_true",
                       help="run the backends' own check of the plan; change nothing")
    apply.add_argument("--detailed-exitcode", action="store_true",
                       help="exit 2 when changes were made (with --dry-run: when there "
                            "are changes to make), 0 when there was nothing to do")
    for cmd in (plan_cmd, apply):
        _allow_disruptive_flag(cmd)
    apply.add_argument("--allow-teardown", action="store_true",
                       help="apply even a plan that deletes everything k3snet owns through a "
                            "backend (refused by default: see `k3snet destroy`)")
    destroy = node_command("destroy", "Remove everything k3snet owns (rules, routes; owned "
                           "sysctls get their previous values back); nothing else is touched.",
                           spec_required=False,
                           # Not the defaults: those left an iptables node's masquerade.
                           backends="else each of " + ", ".join(
                               label for label, _, _ in NODE_BACKENDS)
                           + " holding k3snet's objects")
    _destroy_arguments(destroy)
    for cmd in (apply, destroy):
        _lock_timeout_flag(cmd)
    _allow_disruptive_flag(destroy)
    observe = node_command("observe", "Print the owned and foreign state the backends see.",
                           spec_required=False)
    observe.add_argument("--save", type=_written_path, metavar="DIR",
                         help="instead, write the node state k3snet doctor reads (routes, rules, "
                              "rulesets, sysctls; nothing secret) to DIR")
    agent = node_command("agent", "Converge now and every --interval seconds (the DaemonSet); "
                         "see docs/agent.md.", spec_required=None, output=False)
    _agent_arguments(agent)

    render = add("render", "Write persistence files or Kubernetes manifests.")
    _render_arguments(render)

    validate = add("validate", "Check a spec; print every problem at once.")
    validate.add_argument("-f", "--spec", required=True, type=_read_path, help=SPEC_HELP)
    validate.add_argument("--output", choices=("text", "json"), default="text",
                          help="json: one `validation` document on stdout, valid or not, "
                               "each problem with its path")
    _add_explain(add)

    _add_doctor(add)

    connectivity = add(
        "connectivity",
        "Read the result of the connectivity test Job (k3snet render manifests). "
        "Exit 0: passed, 6: failed, 3: still running, 1: error reading it.")
    connectivity.add_argument("-f", "--spec", required=True, type=_read_path,
                              help="the spec whose connectivityTest was rendered")
    connectivity.add_argument("--kubeconfig",
                              help="default: in-cluster, $KUBECONFIG, ~/.kube/config")
    connectivity.add_argument("--context", help="with --kubeconfig: the context to use")

    completion = add("completion", "Print a shell completion script: "
                     "`source <(k3snet completion bash)`.")
    completion.add_argument("shell", choices=("bash", "zsh"), help="the shell to complete in")
    return parser


def _destroy_arguments(destroy: argparse.ArgumentParser) -> None:
    destroy.add_argument("--auto-approve", action="store_true",
                         help="do not ask for confirmation (needed when stdin is not a terminal)")
    destroy.add_argument("--dry-run", action="store_true",
                         help="print what would be removed and run the backends' check "
                              "of it; change nothing (exit 2: something to remove)")
    destroy.add_argument("--detailed-exitcode", action="store_true",
                         help="exit 2 when something was removed, 0 when there was nothing")


def _lock_timeout_flag(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--lock-timeout", type=_lock_seconds, default=DEFAULT_LOCK_TIMEOUT,
                     metavar="SECONDS",
                     help="wait at most this long for another k3snet process changing the "
                          "same network namespace (the agent, another run); 0: try once "
                          f"(default: {DEFAULT_LOCK_TIMEOUT:g}); past it, exit {EXIT_BUSY} "
                          "having changed nothing")


def _allow_disruptive_flag(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--allow-disruptive", action="store_true",
                     help="let CNI backends make changes that disrupt running pods (a Calico "
                          "pool deleted and re-created ...); the same as cni.allowDisruptive: "
                          "true in the spec")


def _agent_arguments(agent: argparse.ArgumentParser) -> None:
    _allow_disruptive_flag(agent)
    # A variable set empty or to spaces alone is unset (a template's `value: ""`), as for
    # every other one k3snet reads: refused, K3SNET_LOG_LEVEL="" kept the agent in a crash
    # loop, exit 64.
    env = env_value
    # One source of the spec, exactly: neither or both is a usage error (exit 64).
    source = agent.add_mutually_exclusive_group(required=True)
    source.add_argument("-f", "--spec", type=_read_path, help=SPEC_HELP)
    source.add_argument("--spec-configmap", metavar="NS/NAME[:KEY]", type=_object_ref(key=True),
                        help="read the spec from this ConfigMap through the API each pass "
                             "(default key spec.yaml) instead of -f")
    agent.add_argument("--interval", type=_positive_seconds, default=30.0, metavar="SECONDS",
                       help="seconds between passes (default: 30)")
    agent.add_argument("--spec-settle", type=_settle_seconds, metavar="SECONDS",
                       default=env("K3SNET_SPEC_SETTLE") or None,
                       help="with -f: take a new text of the spec file only once it has "
                            "stayed unchanged this long (default: $K3SNET_SPEC_SETTLE, else "
                            "1; 0: its times make no wait, a file held open for writing "
                            "still does)")
    agent.add_argument("--termination-grace", type=_grace_seconds, metavar="SECONDS",
                       default=env("K3SNET_TERMINATION_GRACE") or None,
                       help="the pod's terminationGracePeriodSeconds: after SIGTERM, the "
                            "seconds before the kubelet's kill, within which the shutdown "
                            "(clean-up, the Lease's release, the last report) is planned "
                            "(default: $K3SNET_TERMINATION_GRACE, which the rendered "
                            f"DaemonSet sets, else {ASSUMED_TERMINATION_GRACE})")
    agent.add_argument("--no-watch", action="store_true",
                       help="pass only every --interval: do not look for changes on the node "
                            "in between (nftables generation id, netlink notifications)")
    agent.add_argument("--once", action="store_true",
                       help="converge once and exit (0: the pass succeeded, 1: it failed)")
    agent.add_argument("--node-name", type=_node_name,
                       default=env("K3SNET_NODE_NAME") or socket.gethostname().strip().lower(),
                       help="this node's name (default: $K3SNET_NODE_NAME, else the hostname "
                            "in lower case, as the kubelet names its Node)")
    agent.add_argument("--listen", default=env("K3SNET_LISTEN") or None, metavar="[HOST]:PORT",
                       type=_from_env("K3SNET_LISTEN", _listen_address),
                       help="serve /healthz, /readyz and /metrics here; 'none' disables it "
                            f"(default: $K3SNET_LISTEN, else {DEFAULT_LISTEN}, and none "
                            "with --once)")
    agent.add_argument("--log-level", default=env("K3SNET_LOG_LEVEL") or "INFO",
                       type=_from_env("K3SNET_LOG_LEVEL",
                                      _one_of("DEBUG", "INFO", "WARNING", "ERROR", fold=True)),
                       metavar="{DEBUG,INFO,WARNING,ERROR}",
                       help="the lowest level logged (default: $K3SNET_LOG_LEVEL or INFO)")
    agent.add_argument("--cleanup-on-exit", action="store_true",
                       help="on SIGTERM/SIGINT remove what k3snet owns on this node (like "
                            "`k3snet destroy`); by default the rules stay")
    agent.add_argument("--kubeconfig", help="for the Lease, the node report and "
                       "--spec-configmap (default: in-cluster, $KUBECONFIG, ~/.kube/config)")
    agent.add_argument("--no-kube", action="store_true",
                       help="never talk to the API server: no node report, no Lease (every "
                            "cluster-wide backend then writes from this agent)")
    agent.add_argument("--no-node-report", action="store_true",
                       help="do not annotate the Node with the last result")
    agent.add_argument("--lease", default=None, metavar="NS/NAME", type=_object_ref(),
                       help="the Lease electing the writer of cluster-wide objects (default: "
                            "$K3SNET_NAMESPACE or kube-system / k3snet-cluster-writer)")
    agent.add_argument("--lease-candidates", metavar="LABEL[=VALUE]",
                       type=_from_env("K3SNET_LEASE_CANDIDATES", _label_selector),
                       default=env("K3SNET_LEASE_CANDIDATES") or None,
                       help="only nodes with this label compete for the Lease (e.g. "
                            "node-role.kubernetes.io/control-plane); others never write "
                            "cluster-wide objects nor read the Lease (default: "
                            "$K3SNET_LEASE_CANDIDATES, else every node)")
    agent.add_argument("--lease-duration", type=_positive_seconds, default=15.0,
                       metavar="SECONDS",
                       help="how long a Lease not renewed stays its holder's (default: 15)")
    agent.add_argument("--lease-renew-deadline", type=_positive_seconds, default=10.0,
                       metavar="SECONDS",
                       help="the holder stops writing when it could not renew for this "
                            "long (default: 10)")
    agent.add_argument("--lease-retry-period", type=_positive_seconds, default=2.0,
                       metavar="SECONDS",
                       help="seconds between the holder's renewals, and a candidate's "
                            "tries after a failed one (default: 2)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``k3snet`` console script.

    No input or output condition ends in a traceback: k3snet's errors and the
    system's (a spec that is a directory, an output file that cannot be
    written) are one line on stderr with exit 1; a closed pipe (``| head``)
    ends quietly. ``K3SNET_DEBUG=1`` shows the traceback of an unexpected error.

    Called in a process that goes on (a library, a test), it leaves that process as it
    found it: k3snet's loggers, ``$PATH``, stdout's ``errors`` and the signal handlers
    the command sets are put back when it returns or raises (see :func:`run_main`).
    """
    return run_main(argv)


def run_main(argv: Sequence[str] | None = None, run: Run | None = None) -> int:
    """Run the ``k3snet`` command with ``argv`` (``None``: ``sys.argv[1:]``) and return
    its exit code, as :func:`main` does. Exits of argparse (``--help``, a usage
    error: 64) are raised as :class:`SystemExit`.

    ``run``: leave it out (a fresh one is made). It is the record of what this call
    alone has printed so far, an internal object; ``python -m k3snet`` makes it before
    the call, so a Ctrl-C escaping the call can still read whether the command printed
    its document.

    A library caller's process goes on as it was: what the command sets for itself
    (:func:`_kept_for_the_caller`) is put back when it returns or raises.
    """
    with _kept_for_the_caller():
        return _run_main(argv, Run() if run is None else run)


def _run_main(argv: Sequence[str] | None, run: Run) -> int:
    """:func:`run_main`, what it sets for the command left as it is."""
    given = _common_after_command(sys.argv[1:] if argv is None else list(argv))
    logged = _agent_logs_json(given)  # argparse's text kept off its log, said there
    try:
        with contextlib.redirect_stderr(_Discarded()) if logged else contextlib.nullcontext():
            args = build_parser().parse_args(given)
    except _UsageExit as exc:
        if logged:
            with _reporting():
                _log_agent_usage_error(given, exc.message)
        elif _asks_json(given):
            with _reporting():
                _print_error_json(run, USAGE_ERROR, exc.message)
        raise
    args.run = run  # read by whatever prints its document or makes its change
    _configure_logging(args)
    _printable_output()
    admin_path()
    changes = args.command in UNDONE_ON_SIGTERM and getattr(args, "fix", True)
    held: _HeldWarnings | None = getattr(args, "held_warnings", None)
    try:
        with sigterm_undoes() if changes else contextlib.nullcontext():
            code = _run(args)
    except _Stopped:  # SIGTERM, SIGHUP (143, 129): a failure as Ctrl-C's 130 is
        if held is not None:
            held.release()
        raise
    if held is not None and code in FAILURE_CODES:
        held.release()  # no `!! warning:` line said them
    return code


_LOGGERS = ("k3snet", "k3snet.agent")
"""The loggers the command sets up: the CLI's (:func:`_configure_logging`) and the
agent's (:func:`k3snet.agent.configure_logging`, whose ``LOGGER_NAME`` is the second)."""


@contextlib.contextmanager
def _kept_for_the_caller() -> Iterator[None]:
    """Within the block, the command sets for itself what it needs of the process: k3snet's
    loggers (a handler on the stderr of the moment, the level of ``-v`` or ``-q``,
    ``propagate`` off), stdout's ``errors`` (:func:`_printable_output`) and ``$PATH``
    (`admin_path`). They are put back as the block ends, however
    it ends (``SystemExit``, Ctrl-C), and the handlers it added are closed: a library's
    or a test's process goes on after :func:`main`, and its own logging got no k3snet
    record again (a ``caplog`` test after an in-process call saw none), or one through
    a handler on a stderr it had since closed ("--- Logging error ---"). The ``k3snet``
    command's process ends with the call (:mod:`k3snet.__main__`): nothing changes there.

    Only what is still as the command set it is put back: a handler a plugin or the
    caller added while it ran stays (the command's are named ``HANDLER_NAME``), and so
    do a ``$PATH`` and an ``errors`` the caller set meanwhile; they were replaced by what
    the caller had before. A signal that comes while they are put back (Ctrl-C) is
    taken once they are (:func:`_signals_wait`): raised amid them, it left the rest
    as the command had set it.
    """
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    found = [(list(logger.handlers), logger.level, logger.propagate) for logger in loggers]
    stdout, errors = sys.stdout, getattr(sys.stdout, "errors", None)
    path = os.environ.get("PATH")
    try:
        yield
    finally:
        with _signals_wait():
            _put_back(loggers, found, stdout, errors, path)


def _put_back(loggers: Sequence[logging.Logger],
              found: Sequence[tuple[list[logging.Handler], int, bool]],
              stdout: TextIO, errors: str | None, path: str | None) -> None:
    """What :func:`_kept_for_the_caller` found, put back where the command's setting is
    still there."""
    for logger, (handlers, level, propagate) in zip(loggers, found, strict=True):
        added = [handler for handler in logger.handlers if handler not in handlers]
        ours = [handler for handler in added if handler.get_name() == HANDLER_NAME]
        logger.handlers[:] = [*handlers, *(h for h in added if h not in ours)]
        logger.setLevel(level)
        logger.propagate = propagate
        for handler in ours:
            handler.close()  # out of logging's list for shutdown; the stream stays open
    if sys.stdout is stdout and isinstance(errors, str) and errors != _PRINTABLE_ERRORS \
            and getattr(stdout, "errors", errors) == _PRINTABLE_ERRORS:
        with contextlib.suppress(ValueError, OSError):
            stdout.reconfigure(errors=errors)  # type: ignore[attr-defined]
    made = with_admin_path(os.defpath if path is None else path)
    if os.environ.get("PATH") == made != path:
        if path is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = path


@contextlib.contextmanager
def sigterm_undoes() -> Iterator[None]:
    """Within the block, SIGTERM (systemd stopping a unit, a timeout, ``kill``) and SIGHUP
    (the terminal or SSH session the command runs in went away) end the command as
    Ctrl-C does: ``SystemExit(143)`` or ``SystemExit(129)`` in the main thread, so an
    apply or destroy in progress takes back what it made (the backends and groups undo
    on any exception) before the process ends; by default either ended the process at
    once, between two backends. Further signals wait for that undo; a SIGTERM in the
    undo SIGHUP or Ctrl-C started bounds it from then on as below, and SIGHUP is
    ignored from Ctrl-C on, by the commands the undo runs too (a second Ctrl-C stops
    it). In the undo of a failure (:func:`~k3snet.backends.kit.undoing`) SIGTERM bounds
    it so and SIGHUP is ignored, and the command ends with the failure's error. An
    ignored SIGHUP (``nohup``) stays ignored. The previous handlers come back afterwards;
    outside the main thread, nothing changes.

    After SIGTERM the undo's API requests (Calico's pools, Cilium's ConfigMaps) are
    within :data:`UNDO_AFTER_SIGTERM` seconds in all (:func:`~k3snet.kube.requests_within`:
    each request's timeout and its throttled answers' waits cut to what is left). Each
    undo request waited up to 25 s of 429s and 503s (``THROTTLE_WAITS``: 5 waits of 5 s
    at most), and 10 s a send besides: four of them outlasted systemd's 90 s stop
    timeout, whose SIGKILL cut the undo where it was, nothing said. Past the deadline
    an undo request fails at once, and the :class:`~k3snet.errors.RollbackError` (exit
    5) lists what is left undone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    codes = {signal.SIGTERM: EXIT_TERMINATED}
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        codes[signal.SIGHUP] = EXIT_HANGUP
    ends: list[Deadline] = []
    ended: list[int] = []  # the signals that ended the command (SIGINT: Ctrl-C), or in an undo

    def terminate(signum: int, frame: object) -> None:
        if signum == signal.SIGTERM:
            ends.append(Deadline(_clock() + UNDO_AFTER_SIGTERM, clock=_clock))
        for ending in codes:  # the undo runs to its end
            if ending != signal.SIGTERM or ends:
                signal.signal(ending, signal.SIG_IGN)
        if ended or undoing():
            # In the undo SIGHUP or Ctrl-C started, or a failure (an API server refusing
            # the apply's last write). SIGTERM (logind ending the session, systemd
            # stopping the scope the command ran in: a SIGKILL follows) bounds it from
            # now on: ignored after SIGHUP, the SIGKILL cut the undo where it was,
            # nothing said. SIGHUP (the terminal closed after Ctrl-C) lets it run on: it
            # cut it, and said so to no one. After a failure's undo the command ends
            # with that failure's error; a signal after it is taken as one in the undo.
            ended.append(signum)
            return
        ended.append(signum)
        raise _Stopped(codes[signal.Signals(signum)], signal.Signals(signum).name)

    def interrupt(signum: int, frame: object) -> None:
        if signal.SIGHUP in codes and not ended:
            # Ignored from now on, not when it comes: the terminal closing sends it to
            # the commands the undo runs (nft, iptables-restore) as well, and a child
            # inherits an ignored signal, not a handler (its SIGHUP at the default, it
            # died, the undo step failed, said to no one).
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
        ended.append(signum)
        raise KeyboardInterrupt  # as Python's own handler: a second Ctrl-C stops the undo

    handlers: dict[signal.Signals, Callable[[int, Any], None]] = dict.fromkeys(
        codes, terminate)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        handlers[signal.SIGINT] = interrupt
    previous = {ending: signal.signal(ending, handler) for ending, handler in handlers.items()}
    try:
        with requests_within(lambda: ends[0] if ends else None):
            yield
    finally:
        for ending, handler in previous.items():
            signal.signal(ending, handler)


def _run(args: argparse.Namespace) -> int:
    """Run the command, each kind of failure as its exit code (see :func:`main`)."""
    try:
        _refuse_foreign_spec(args)
        return int(COMMANDS[args.command](args))
    except K3snetError as exc:
        # The code says the failure even when its report cannot be written (`| head`
        # gone, a full disk): a RollbackError's 5 ended as a traceback and exit 1,
        # "nothing was changed", on a node that may be half-changed. So when Ctrl-C or a
        # signal cuts the report (a slow terminal): it ended 130 or 143, quietly.
        with _reporting(), contextlib.suppress(KeyboardInterrupt, _Stopped):
            _report_error(args, exc)
        return error_code(exc)
    except BrokenPipeError:
        # The reader went away (`k3snet observe | head`): nothing more to say to it.
        _drop_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        with _reporting():
            if not _logged_by_agent(args, _os_error(exc)):
                print(f"k3snet: error: {printable(_os_error(exc))}", file=sys.stderr)
            if _json(args):
                _print_error_json(args.run, type(exc).__name__,
                                  _with_notes(exc, _os_error(exc)))
        return _failed_code(exc)
    except KeyboardInterrupt as exc:
        return _interrupted(args, exc)
    except _Stopped as exc:  # SIGTERM, SIGHUP: sigterm_undoes's SystemExit
        _report_stopped(args, exc.name, exc)
        raise
    except Exception as exc:
        if env_switch("K3SNET_DEBUG", default=False):
            raise
        message = (f"{type(exc).__name__}: {exc} (a bug: please report it; K3SNET_DEBUG=1 "
                   "shows the traceback)")
        with _reporting():
            if not _logged_by_agent(args, f"internal error: {message}"):
                print(f"k3snet: internal error: {printable_lines(message)}",
                      file=sys.stderr)
            if _json(args):
                _print_error_json(args.run, "InternalError", _with_notes(exc, message))
        return _failed_code(exc)


def _failed_code(exc: Exception) -> int:
    """The exit code of a command that failed with ``exc``, not one of k3snet's errors
    (an ``OSError`` a backend let through, a bug): 1, or 5 when a destroy through several
    backends had removed through the earlier ones before it (that stays removed:
    :func:`~k3snet.converge.removed_before`), as :func:`error_code` says of k3snet's."""
    return EXIT_HALF_CHANGED if removed_before(exc) else EXIT_ERROR


def _with_notes(exc: BaseException, message: str) -> str:
    """``message`` and the notes of ``exc`` below it, as the ``error`` document of a
    k3snet error has them (what a destroy through several backends removed before the
    one that failed, which stays)."""
    return "\n".join([message, *getattr(exc, "__notes__", ())])


FAILURE_CODES = frozenset({EXIT_ERROR, EXIT_HALF_CHANGED, EXIT_USAGE, EXIT_BUSY,
                           EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_HANGUP})
"""The codes of a command that failed, or was refused or stopped: an output that cannot
be written afterwards (a closed pipe, a full disk) leaves them as they are
(:mod:`k3snet.__main__`); only a command's result (0, 2, 3, 4) becomes 141 or 1."""


def _drop_stdout() -> None:
    """Send what is left for stdout to /dev/null: a closed pipe or a full disk is not
    written to again (by the next print, or the final flush)."""
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@contextlib.contextmanager
def _reporting() -> Iterator[None]:
    """Within the block, a report of a failure that cannot be written (stdout or stderr
    closed or full) is dropped: the exit code still says the failure."""
    try:
        yield
    except OSError:
        _drop_stdout()


def _refuse_foreign_spec(args: argparse.Namespace) -> None:
    """:func:`refuse_foreign_spec` of a node command's spec file."""
    spec = getattr(args, "spec", None)
    # doctor --fix applies a fix its spec's cluster CIDRs shape (the pods masqueraded).
    changes = args.command in NODE_COMMANDS or getattr(args, "fix", False)
    if changes and spec is not None:
        refuse_foreign_spec(spec)


def refuse_foreign_spec(spec: str | Path) -> None:
    """A SpecError when the spec file ``spec`` may be written by another user than its
    owner (this user, root, or ``$SUDO_UID``, who could run k3snet as root anyway):
    that user could change what root applies, its routes, rules and the paths its
    backends write (a plan file is refused likewise, :mod:`k3snet.planfile`); so with
    a directory on the way they may write, or a file the spec imports
    (:func:`k3snet.spec.load.refuse_foreign_spec`). The node commands and the Ansible
    module's ``spec_path`` call it."""
    spec_load.refuse_foreign_spec(spec, invoker=spec_load.sudo_invoker())


def error_code(exc: K3snetError) -> int:
    """The exit code of a command that failed with ``exc`` (the Ansible module's ``rc``
    for the same failure, so a playbook retries a busy node on 75 as a script does).
    A destroy through several backends whose later one failed, the earlier ones' removals
    staying done (:func:`~k3snet.converge.removed_before`), left the node half-changed as
    an apply whose undo failed does: 5, not 1 ("nothing was applied, or it was rolled
    back")."""
    if isinstance(exc, RollbackError) or removed_before(exc):
        return EXIT_HALF_CHANGED
    if isinstance(exc, LockTimeoutError):
        return EXIT_BUSY
    return EXIT_CONFLICTS if isinstance(exc, ConflictError) else EXIT_ERROR


def _report_error(args: argparse.Namespace, exc: K3snetError) -> None:
    """The error on stderr; with ``--output json`` also as a JSON object on stdout, unless
    the command printed its document already (``doctor --fix``). The agent's output is its
    log: with ``--log-format json`` its error is one record of that log (a collector reading
    one JSON object a line got why it did not start as plain text over several lines)."""
    if _logged_by_agent(args, str(exc)):
        return
    print(f"k3snet: error: {printable_lines(str(exc))}", file=sys.stderr)
    if _json(args) and not getattr(args, "stdout_taken", False):
        # A note (destroy_each's: what the backends before the one failing removed, which
        # stays removed) is on stderr as a log line; the document says it too, as the
        # Ansible module's message does: exit 1 reads "nothing was changed" otherwise.
        message = "\n".join([str(exc), *getattr(exc, "__notes__", ())])
        _print_error_json(args.run, type(exc).__name__, message,
                          getattr(exc, "problems", ()))


def _interrupted(args: argparse.Namespace, exc: KeyboardInterrupt) -> int:
    """Exit 130 for Ctrl-C, said (:func:`_report_stopped`); 5 for one that came as the
    error of a failed undo unwound (the backends closing, the lock let go: a third
    Ctrl-C, after the one the undo followed and the one that cut it), which is reported:
    it was "nothing was changed (what it made was taken back)", exit 130, of a node that
    may be half-changed."""
    cut = _rollback_failed_before(exc)
    if cut is None:
        _report_stopped(args, "SIGINT", exc)
        return EXIT_INTERRUPTED
    with _reporting(), contextlib.suppress(KeyboardInterrupt, _Stopped):
        _report_error(args, cut)
    return EXIT_HALF_CHANGED


def _rollback_failed_before(exc: BaseException) -> RollbackError | None:
    """The :class:`~k3snet.errors.RollbackError` ``exc`` was raised while it propagated
    (``exc``'s context, or theirs), if any."""
    seen: set[int] = set()
    context = exc.__context__
    while context is not None and id(context) not in seen:
        if isinstance(context, RollbackError):
            return context
        seen.add(id(context))
        context = context.__context__
    return None


def _report_stopped(args: argparse.Namespace, name: str, exc: BaseException) -> None:
    """A command ended by signal ``name`` (SIGINT: Ctrl-C; SIGTERM, SIGHUP), said on stderr
    and, with ``--output json``, as an ``error`` document of that type, unless a document
    is on stdout already: a script reading stdout as one document got none (exit 130, 143
    or 129, nothing said). What a removal through several backends had removed before
    (``destroy_each``'s note) stays removed and is named. The agent's log says its end."""
    if args.command == "agent":
        return
    notes = getattr(exc, "__notes__", ())
    changes = args.command in UNDONE_ON_SIGTERM and getattr(args, "fix", True)
    if notes:
        message = f"stopped by {name}: " + "; ".join(notes)
    elif args.run.made:
        # The change was made before the signal came (a destroy reading the backends
        # again, the result being written): nothing takes it back. "Nothing was
        # changed" was said of a node whose changes all stayed.
        message = (f"stopped by {name} after the change was made, which stays: "
                   + "; ".join(args.run.made))
    elif changes:  # stopped before the change was made, or within it: taken back
        message = f"stopped by {name}: nothing was changed (what it made was taken back)"
    else:
        message = f"stopped by {name}"
    with _reporting():
        print(f"k3snet: error: {printable_lines(message)}", file=sys.stderr)
        if _json(args) and not getattr(args, "stdout_taken", False) \
                and not args.run.document_printed:
            _print_error_json(args.run, name, message)


def _made(args: argparse.Namespace, done: Convergence) -> None:
    """Note what ``done``'s change made, if anything (the run's ``made``)."""
    if done.result is not None and done.result.applied:
        args.run.made.append(done.result.summary())


def _logged_by_agent(args: argparse.Namespace, message: str) -> bool:
    """Whether the error ``message`` that ends the agent went to its log, as one error
    record of its lines' form with its node (``--log-format json``), whatever it is: one of
    k3snet's, a system error (its --listen address in use) or an internal error."""
    if args.command != "agent" or args.log_format != "json":
        return False
    from k3snet.agent import configure_logging  # noqa: PLC0415 - as cmd_agent imports

    # Also for an error found before the agent ran (its handler not set yet).
    configure_logging(args.node_name, "json", args.log_level).error("%s", message)
    return True


def _print_error_json(run: Run, kind: str, message: str,
                      problems: Sequence[object] = ()) -> None:
    """An ``error`` document (schema ``error``) on stdout."""
    _print_json(run, {"format": JSON_FORMAT, "kind": "error", "error": {
        "type": kind, "message": message, "problems": [str(p) for p in problems]}})


USAGE_ERROR = "UsageError"
"""The ``error`` document's type of a usage error (exit 64)."""


def _usage_error(args: argparse.Namespace, message: str) -> int:
    """Exit 64 for a usage error found after parsing: said on stderr and, with ``--output
    json``, as an ``error`` document of type ``UsageError``, as argparse's own are."""
    print(f"k3snet {args.command}: error: {message}", file=sys.stderr)
    if _json(args):
        _print_error_json(args.run, USAGE_ERROR, message)
    return EXIT_USAGE


def _json(args: argparse.Namespace) -> bool:
    """Whether the command prints a JSON document (``--output json``)."""
    return getattr(args, "output", "text") == "json"


def _human(args: argparse.Namespace) -> Any:
    """Where the lines for a person go: stdout, or stderr when stdout carries the JSON
    document (a plan shown for approval must not break ``k3snet apply -o json | jq``)."""
    return sys.stderr if _json(args) else sys.stdout


def _asking(args: argparse.Namespace) -> Any:
    """Where a plan shown for approval and its question go: stdout on a terminal, else
    stderr. Redirected (``k3snet apply -f SPEC > apply.log`` on a terminal), they went
    to the file: the command waited for an answer to a question nobody saw."""
    if _json(args) or not sys.stdout.isatty():
        return sys.stderr
    return sys.stdout


NOT_A_TERMINAL = "stdin is not a terminal; pass --auto-approve to confirm"
"""Why a change was not confirmed without a terminal to ask on (:func:`_confirm`)."""


def _not_confirmed(args: argparse.Namespace) -> int:
    """Exit 1 for a change the user did not confirm, said on stderr and, with
    ``--output json``, as an ``error`` document (type ``NotConfirmed``)."""
    print("k3snet: nothing was changed", file=sys.stderr)
    if _json(args):
        message = "nothing was changed: not confirmed"
        if not sys.stdin.isatty():  # why, as stderr said: a script reads the document
            message += f": {NOT_A_TERMINAL}"
        _print_error_json(args.run, "NotConfirmed", message)
    return EXIT_ERROR


class _JsonLogFormatter(logging.Formatter):
    """One JSON object per log record, at most :data:`~k3snet.agent.LOG_LINE_LIMIT` bytes."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "format": JSON_FORMAT,
            "kind": "log",  # the agent's lines too: schema k3snet/schemas/log.json
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # A backend's warning may list thousands of foreign rules: one bounded line, as
        # the agent's (the schema's own fields stay whole: a reader matches on them).
        return bounded_line(entry, lambda cut: json.dumps(cut, sort_keys=True),
                            frozenset({"kind", "time", "level", "logger"}))


class _TextLogFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER: MESSAGE``, one line of at most
    :data:`~k3snet.agent.LOG_LINE_LIMIT` bytes (line breaks in it written ``\\n``)."""

    def format(self, record: logging.LogRecord) -> str:
        head = f"{self.formatTime(record)} {record.levelname} {one_line(record.name)}: "
        fields = {"message": record.getMessage()}
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)

        def render(cut: dict[str, str]) -> str:
            # A traceback's lines indented: none begins at the margin as a record would.
            # The message is k3snet's, quoting others' texts escaped already: not again.
            return head + printable_line(cut["message"]) + "".join(
                f"\n    {printable_line(line)}"
                for line in cut.get("exception", "").splitlines())

        return bounded_line(fields, render)


def _printable_output() -> None:
    """Standard output that prints any text: a byte of an admin's rule that is not UTF-8
    (read as a lone surrogate, :mod:`k3snet.backends.iptables`) is printed as ``\\udcXX``
    instead of ending the command (stderr does so already)."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        with contextlib.suppress(ValueError, OSError):
            reconfigure(errors=_PRINTABLE_ERRORS)


_PRINTABLE_ERRORS = "backslashreplace"
"""Standard output's ``errors`` while the command runs (:func:`_printable_output`)."""


_SAYS_WARNINGS = frozenset({"plan", "apply", "destroy"})
"""The commands printing the backends' warnings (``!! warning:`` lines, ``warnings``
in their JSON) once they succeed: the backends' logs of them
(:class:`~k3snet.backends.kit.WarningLog`) are held back (:class:`_HeldWarnings`),
as stderr said each twice, and logged only when the command fails."""


class _HeldWarnings(logging.Filter):
    """Holds back the records of :class:`~k3snet.backends.kit.WarningLog` on the CLI's
    handler; :meth:`release` logs them (a command that failed printed no warning)."""

    def __init__(self, handler: logging.Handler) -> None:
        super().__init__()
        self.handler = handler
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if WarningLog.is_record(record):
            self.held.append(record)
            return False
        return True

    def release(self) -> None:
        """Log the records held, each text once: two backends reading the same thing
        (both iptables flavours looked through by ``destroy``, each naming k3snet's
        nftables table) said it twice."""
        self.handler.removeFilter(self)
        held, self.held = self.held, []
        said: set[tuple[int, str]] = set()
        for record in held:
            key = (record.levelno, record.getMessage())
            if key not in said:
                said.add(key)
                self.handler.handle(record)

    def keep_only(self, now: Sequence[str]) -> None:
        """Hold only the warnings of ``now`` (what holds after a change the command made
        before it failed): a record held, read before that change, may name what the
        change took away (k3snet's nftables table, said by the iptables backend as left
        behind, after a ``destroy`` had removed it). Those of ``now`` that no record holds
        (a backend that could not read again) are held too."""
        kept = [record for record in self.held if _said_text(record) in now]
        have = {_said_text(record) for record in kept}
        self.held = kept
        WarningLog(logging.getLogger(__name__)).say(w for w in now if w not in have)

    def label_read_before(self, what: str) -> None:
        """Say of every record held that it was read before ``what`` (not read again)."""
        for record in self.held:
            record.msg, record.args = _READ_BEFORE, (what, record.getMessage())


_READ_BEFORE = "read before %s, which may have changed it: %s"


def _said_text(record: logging.LogRecord) -> str:
    """The warning a :class:`~k3snet.backends.kit.WarningLog` record says (its last
    argument: the text given, without the backend's name put before it)."""
    args = record.args if isinstance(record.args, tuple) else ()
    return str(args[-1]) if args else record.getMessage()


def _configure_logging(args: argparse.Namespace) -> None:
    """stderr logging for the ``k3snet`` logger: -q errors, default warnings, -v info, -vv debug."""
    level = logging.ERROR if args.quiet else (
        logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(HANDLER_NAME)  # the command's: taken off as main() returns
    if args.command in _SAYS_WARNINGS:
        args.held_warnings = _HeldWarnings(handler)
        handler.addFilter(args.held_warnings)
    handler.setFormatter(_JsonLogFormatter() if args.log_format == "json" else
                         _TextLogFormatter())
    logger = logging.getLogger("k3snet")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def _os_error(exc: OSError) -> str:
    """``cannot open PATH: reason``, without Python's ``[Errno N]`` noise."""
    reason = exc.strerror or str(exc)
    if exc.filename is not None:
        return f"{exc.filename}: {reason}"
    return reason


def _positive_seconds(text: str) -> float:
    """argparse type: a number of seconds > 0 (and finite)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (0 < value < 1e7):
        raise argparse.ArgumentTypeError(f"must be more than 0 and less than 1e7 s, not {text}")
    return value


def _settle_seconds(text: str) -> float:
    """argparse type of ``--spec-settle``: 0 or more seconds (and finite)."""
    try:
        value = float(text)
    except ValueError:
        problem = f"not a number of seconds: {text!r}"
    else:
        if 0 <= value < 1e7:
            return value
        problem = f"must be 0 or more and less than 1e7 s, not {text}"
    if os.environ.get("K3SNET_SPEC_SETTLE") == text:
        problem += " (from $K3SNET_SPEC_SETTLE)"
    raise argparse.ArgumentTypeError(problem)


def _grace_seconds(text: str) -> float:
    """argparse type of ``--termination-grace``: more seconds than the agent's clean-up
    margin, less than a day."""
    from k3snet.agent import termination_grace_problem  # noqa: PLC0415 - the agent's only

    try:
        value = float(text)
    except ValueError:
        problem = f"not a number of seconds: {text!r}"
    else:
        found = termination_grace_problem(value)
        if found is None:
            return value
        problem = found
    if os.environ.get("K3SNET_TERMINATION_GRACE") == text:
        problem += " (from $K3SNET_TERMINATION_GRACE)"
    raise argparse.ArgumentTypeError(problem)


def _from_env(variable: str, parse: Callable[[str], str]) -> Callable[[str], str]:
    """argparse type: ``parse``, whose refusal of the value ``$variable`` holds says it came
    from there (set in a cron file or a unit, it was never typed on the command line)."""
    def check(text: str) -> str:
        try:
            return parse(text)
        except argparse.ArgumentTypeError as exc:
            if os.environ.get(variable) != text:
                raise
            raise argparse.ArgumentTypeError(f"{exc} (from ${variable})") from None
    return check


def _one_of(*choices: str, fold: bool = False) -> Callable[[str], str]:
    """argparse type: one of ``choices`` (upper-cased first with ``fold``). Unlike
    ``choices=``, it also checks a default taken from the environment."""
    def parse(text: str) -> str:
        value = text.upper() if fold else text
        if value not in choices:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(choices)}")
        return value
    return parse


def _node_name(text: str) -> str:
    """``--node-name``: a Node's name, a DNS subdomain (what the API server accepts): a
    mistyped one would have its annotation, Events and Lease refused on every pass."""
    from k3snet.kube import name_problem  # noqa: PLC0415 - the agent's option only
    problem = name_problem(text)
    if problem is not None:  # the default (the hostname) included: say how to name it
        raise argparse.ArgumentTypeError(
            f"{problem}; give the Node's name with --node-name or K3SNET_NODE_NAME")
    return text


def _object_ref(*, key: bool = False) -> Callable[[str], str]:
    """``--lease`` (``NS/NAME``) and ``--spec-configmap`` (``NS/NAME[:KEY]``): names the
    API server accepts, checked now (a usage error, not a pass failing for ever)."""
    def parse(text: str) -> str:
        from k3snet.kube import object_ref_problem  # noqa: PLC0415 - the agent's options only
        problem = object_ref_problem(text, key=key)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return text
    return parse


def _label_selector(text: str) -> str:
    """``--lease-candidates LABEL[=VALUE]``: a selector that can match a label, checked now
    (one that matched none made no node a candidate, and nobody wrote the cluster-wide
    objects)."""
    from k3snet.kube import label_selector_problem  # noqa: PLC0415 - the agent's only
    problem = label_selector_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def _netns_name(text: str) -> str:
    """``--netns NAME``: a name ``ip netns`` can give, checked now (a usage error, exit 64,
    as any malformed argument; it ended as an error of the backend, exit 1)."""
    try:
        return validate_netns(text)
    except K3snetError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("invalid network namespace "
                                                               "name ")) from exc


def _backend_opt(text: str) -> str:
    """``--backend-opt NAME.KEY=VALUE``: its shape, checked now (a usage error)."""
    target, dot, rest = text.partition(".")
    key, eq, _ = rest.partition("=")
    if not (dot and eq and target and key.isidentifier()) or "=" in target:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME.KEY=VALUE, e.g. "
                                         "nftables.family=split")
    if holds_nul(_option_value(text.partition("=")[2])):  # JSON's "\u0000"
        raise argparse.ArgumentTypeError(f"{text!r}: the value holds a NUL character, which "
                                         "no path, name or other text a backend takes has")
    return text


def _option_value(text: str) -> Any:
    """A ``--backend-opt`` VALUE: JSON when it parses, else the text."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # (nested deeper than Python's parser goes)
        return text


def _backend_entry(text: str) -> str:
    """``--backend NAME[:KINDS]``: a name, and after a colon one kind or more, checked now (a
    usage error). ``nftables:`` (a template's empty list of kinds) silently gave the
    backend every kind, and ``nftables:nat,`` named a kind ''."""
    name, colon, kinds = text.partition(":")
    if not name or (colon and not all(kinds.split(","))):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected NAME or NAME:KIND[,KIND...], e.g. nftables or "
            "iptables:forward (NAME alone gives it every kind it manages)")
    return text


class _AppendBackend(argparse.Action):
    """``--backend``, repeatable: a backend given again with a kind in common (``netlink``
    twice, ``netlink`` and ``netlink:route``) is a usage error; it failed later, exit 1,
    saying "both 'netlink' and 'netlink' would manage sysctl". A backend given twice with
    kinds apart (``netlink:route``, ``netlink:sysctl``) is two members, as in the library."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        given: list[str] = list(getattr(namespace, self.dest, None) or [])
        name, _, kinds = str(values).partition(":")
        for other in given:
            other_name, _, other_kinds = other.partition(":")
            shared = (not kinds or not other_kinds
                      or set(kinds.split(",")) & set(other_kinds.split(",")))
            if other_name == name and shared:
                raise argparse.ArgumentError(
                    self, f"backend {name!r} is given twice ({other!r}, {values!r}): give it "
                    f"once, or each time other kinds (e.g. {name}:route and {name}:sysctl)")
        setattr(namespace, self.dest, [*given, values])


def _not_a_stream(text: str, stream: str) -> None:
    """Refuse ``-``, a script's way to say standard input or output (``stream``): k3snet
    reads specs and plan files, and writes plan files, boot files and bundles, as files
    (a spec's path is its cache key and its digest in a plan file), so ``-`` was a file
    named ``-``: not found, or written in the current directory."""
    if text == "-":
        raise argparse.ArgumentTypeError(
            f"'-': k3snet does not use standard {stream} here; give a path (./- for a file "
            "named -)")


def _read_path(text: str) -> Path:
    """argparse type: a file or directory to read (not ``-``, standard input)."""
    _not_a_stream(text, "input")
    return Path(text)


_FORMAT_WORDS = ("json", "text", "yaml")


def _written_path(text: str) -> Path:
    """argparse type: a file or directory to write (not ``-``, standard output; nor an
    output format's name where no such path is: ``render -o json`` made a directory
    ``json`` for someone used to ``doctor -o json`` and ``plan --output json``, and
    ``plan --out json`` saved a plan file ``json``)."""
    _not_a_stream(text, "output")
    if text in _FORMAT_WORDS and not os.path.lexists(text):
        # No command takes --output yaml: the hint named one that is a usage error too.
        formats = ("no command has a yaml format: render manifests without -o prints YAML "
                   "on stdout" if text == "yaml" else
                   f"that is --output {text} of the commands that have one, -o {text} of "
                   "doctor")
        raise argparse.ArgumentTypeError(
            f"{text!r} is where to write (a file or directory named {text} here), not an "
            f"output format ({formats}); give ./{text} for a path of that name")
    return Path(text)


def _lock_seconds(text: str) -> float:
    """argparse type: ``--lock-timeout``, seconds from 0 to a day, as the library takes it."""
    try:
        return option_seconds("--lock-timeout", float(text), zero=True)
    except (ValueError, ModelError) as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of seconds from 0 to below a "
                                         "day") from exc


def _pair(shape: str, meaning: str, *, read: bool = False) -> Callable[[str], str]:
    """An option type for ``KEY=VALUE`` text (``shape``, e.g. ``NAME=SPEC``), both sides
    given, checked when parsed (a usage error naming ``meaning``); ``read``: VALUE is a
    file k3snet reads (not ``-``)."""
    def check(text: str) -> str:
        key, sep, value = text.partition("=")
        if not (sep and key and value):
            raise argparse.ArgumentTypeError(f"expected {shape} ({meaning}), not {text!r}")
        if read:
            _not_a_stream(value, "input")
        return text

    return check


_profile = _pair("NAME=SPEC", "a profile name, a spec file", read=True)
_network_file = _pair("DEV=FILE", "an interface, the .network file that configures it")
_netplan_id = _pair("DEV=ID", "an interface, the netplan definition that configures it")


def _render_arguments(render: argparse.ArgumentParser) -> None:
    """The options of ``k3snet render``."""
    render.add_argument("what", choices=sorted(RENDERERS), help="what to render")
    render.add_argument("-f", "--spec", required=True, type=_read_path, help=SPEC_HELP)
    render.add_argument("-o", "--out", type=_written_path, metavar="DIR",
                        help="directory to write into (default: print to stdout; not a "
                             "format: render has no --output)")
    render.add_argument("--flannel-conf", metavar="PATH",
                        help="manifests: flannel's net-conf.json on the nodes (K3s --flannel-conf; "
                             "default: the spec's backends.flannel.path)")
    render.add_argument("--flannel-configmap-namespace", metavar="NS",
                        help="manifests: the namespace of upstream flannel's kube-flannel-cfg "
                             "(default: the spec's backends.flannel.configmap)")
    render.add_argument("--profile", action="append", default=[], metavar="NAME=SPEC",
                        type=_profile,
                        help="manifests: a per-node override, repeatable: nodes labelled "
                             "k3snet.io/profile=NAME run SPEC instead (its own DaemonSet)")
    render.add_argument("--network-file", action="append", default=[], metavar="DEV=FILE",
                        type=_network_file,
                        help="networkd: the .network file that already configures DEV "
                             "(10-netplan-eth0.network), repeatable: DEV's routes go in a "
                             "drop-in of it (networkd applies only the first file that "
                             "matches a device, so a file of k3snet's own would be ignored "
                             "or replace it); with -o DIR the other .network files there "
                             "are read, and a device one may match needs it")
    render.add_argument("--netplan-id", action="append", default=[], metavar="DEV=ID",
                        type=_netplan_id,
                        help="netplan: the id of the definition that configures DEV, "
                             "repeatable; with -o DIR the other netplan files there are "
                             "read to find it, and a device a match: may configure needs it "
                             "(netplan gives each id a networkd file, networkd applies one)")
    render.add_argument("--backend", action=_AppendBackend, default=[], metavar="NAME[:KINDS]",
                        type=_backend_entry,
                        help="the --backend flags plan and apply use, repeatable: the file "
                             "holds only the kinds they give the backend it is for (nftables, "
                             "iptables; netlink for routes and sysctls), e.g. --backend "
                             "nftables:nat --backend iptables:forward")
    render.add_argument("--backend-opt", action="append", default=[], metavar="NAME.KEY=VALUE",
                        type=_backend_opt,
                        help="the --backend-opt flags plan and apply use, repeatable: the "
                             "file follows its backend's (nftables.table, nftables.family, "
                             "iptables.mode, netlink.protocol) over the spec's")
    render.add_argument("--no-node-report", action="store_true",
                        help="manifests: the agent does not annotate its Node (no API access "
                             "unless a backend needs it)")
    render.add_argument("--node-restriction", action="store_true",
                        help="manifests: a ValidatingAdmissionPolicy limiting the agent's "
                             "ServiceAccount to its own Node (Kubernetes 1.30+)")
    render.add_argument("--lease-candidates", metavar="LABEL[=VALUE]", type=_label_selector,
                        help="manifests: only nodes with this label compete for the Lease "
                             "(the agent's --lease-candidates, and get on Nodes for it)")


def _listen_address(text: str) -> str:
    """``--listen``: ``none``, or an address the agent can serve on (checked now: a port
    above 65535 is a usage error, not a failed start)."""
    if text == "none":
        return text
    from k3snet.agent import parse_listen  # noqa: PLC0415 - the agent's modules only here

    try:
        parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


# ---------------------------------------------------------------- helpers


def _spec(args: argparse.Namespace) -> Spec:
    # A cold process: the parsed document is cached under the state directory
    # (k3snet.spec.cache; it still goes through every check).
    from k3snet.spec.cache import load_spec_cached  # noqa: PLC0415 - only commands with a spec

    return load_spec_cached(args.spec)


def _where(args: argparse.Namespace) -> str | None:
    """The spec's file, for error messages (the agent may read a ConfigMap instead)."""
    spec = getattr(args, "spec", None)
    return None if spec is None else str(spec)


def _options(name: str, args: argparse.Namespace, spec: Spec | None = None) -> dict[str, Any]:
    """Keyword options for backend ``name``: the spec's ``backends:`` options, overridden by
    --netns, the agent's environment, then --backend-opt."""
    return resolve_backend_options(
        name, spec_backend_options(spec, name) if spec is not None else None,
        netns=args.netns, allow_disruptive=_disruptive_allowed(args, spec),
        pod_cidrs=None if spec is None else [str(n) for n in spec.cluster.pod_cidrs],
        explicit=_explicit_options(name, args))


def _disruptive_allowed(args: argparse.Namespace, spec: Spec | None) -> bool:
    """--allow-disruptive, or the spec's ``cni.allowDisruptive``."""
    return bool(getattr(args, "allow_disruptive", False)
                or (spec is not None and spec.cni.disruptive_allowed))


def _explicit_options(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """``--backend-opt NAME.KEY=VALUE`` options for backend ``name``."""
    found: dict[str, Any] = {}
    for entry in getattr(args, "backend_opt", ()):
        target, dot, rest = entry.partition(".")
        key, eq, text = rest.partition("=")
        if not (dot and eq and target and key.isidentifier()):
            raise BackendOptionError(f"--backend-opt {entry!r}: expected NAME.KEY=VALUE")
        if target != name:
            continue
        found[key] = _option_value(text)
    return found


def _backend_names(args: argparse.Namespace, spec: Spec | None) -> list[str]:
    return list(args.backend or (spec.backends if spec and spec.backends else DEFAULT_BACKENDS))


_Recipe = list[tuple[str, "list[str] | None", dict[str, Any]]]
"""The backends to make: each one's name, kinds (``None``: all it has) and options."""


def _backend(args: argparse.Namespace, spec: Spec | None,
             names: Sequence[str] | None = None) -> BackendGroup:
    return _group(_recipe(args, spec, names))


def _recipe(args: argparse.Namespace, spec: Spec | None,
            names: Sequence[str] | None = None) -> _Recipe:
    if names is None:
        names = _backend_names(args, spec)
    used = {entry.partition(":")[0] for entry in names}
    if spec is not None:  # the spec's backends: options, with their paths
        check_backend_options(spec, backend_options,
                              [n for n in sorted(used) if spec_backend_options(spec, n)],
                              source=_where(args), paths=path_options,
                              values=option_problems)
    _check_backend_opt_targets(args, used)
    recipe: _Recipe = []
    for entry in names:
        name, _, kinds = entry.partition(":")
        recipe.append((name, kinds.split(",") if kinds else None, _options(name, args, spec)))
    return recipe


def _check_backend_opt_targets(args: argparse.Namespace, used: set[str]) -> None:
    for entry in getattr(args, "backend_opt", ()):
        target = entry.partition(".")[0]
        if target not in used:
            raise BackendOptionError(f"--backend-opt {entry!r}: no backend {target!r} in use "
                                     f"({', '.join(sorted(used))})")


def _group(recipe: _Recipe) -> BackendGroup:
    made: list[Any] = []
    try:
        members = []
        for name, kinds, options in recipe:
            made.append(create_backend(name, **options))
            members.append(Member(made[-1], kinds))
        return BackendGroup(members)
    except BaseException:
        for backend in made:  # those made before the one that failed
            with contextlib.suppress(Exception):
                backend.close()
        raise


def _prefetching(names: Sequence[str]) -> bool:
    """Whether any backend of ``names`` can start a read early (its class has ``prefetch``):
    only then is a guess from the command line worth making (a guess may be thrown away)."""
    with contextlib.suppress(Exception):  # unknown or unloadable: said in the usual order
        return any(callable(getattr(load_backend(entry.partition(":")[0]), "prefetch", None))
                   for entry in names)
    return False


def _spec_and_backend(args: argparse.Namespace) -> tuple[Spec, BackendGroup]:
    """The spec and its backends, the backends reading already (``prefetch``).

    On a warm spec cache the backends are made from the spec without its
    destinations (their names and options are all in that part), and start
    reading the node while the destinations are read. Otherwise, when the
    command line names the backends and one of them can read early, they are
    made from it alone, and read while the spec's YAML is parsed. Either way
    they are kept only if the whole spec asks for the same ones, else made
    again from it. Anything wrong on the early way is left for the usual order
    to say: the spec's problems first, then the backends'.
    """
    from k3snet.spec.cache import load_spec_head_cached  # noqa: PLC0415 - as in _spec

    early: tuple[_Recipe, BackendGroup] | None = None
    head = load_spec_head_cached(args.spec)
    if head is not None or (args.backend and _prefetching(args.backend)):
        with contextlib.suppress(Exception):  # said again below, in the usual order
            recipe = _recipe(args, head)
            early = (recipe, _group(recipe))
            early[1].prefetch()
    try:
        spec = _spec(args)
        recipe = _recipe(args, spec)
    except BaseException:
        if early is not None:
            early[1].close()
        raise
    if early is not None:
        if early[0] == recipe:
            return spec, early[1]
        early[1].close()
    group = _group(recipe)
    group.prefetch()
    return spec, group


def _desired(args: argparse.Namespace, spec: Spec, backend: BackendGroup) -> State:
    protocol = route_protocol(backend)
    return compile_for(backend, spec, _local_facts(
        args, backend, lambda netns: gather_facts(netns, protocol=protocol, backend=backend)))


def _local_facts(args: argparse.Namespace, backend: BackendGroup,
                 read: Callable[[str | None], NodeFacts]) -> NodeFacts | None:
    if not reads_node_facts(backend) or args.no_facts:
        return None
    return read(facts_namespace(backend))  # --netns, or a --backend-opt/backends: netns


_COMPILES_KEPT = 4
"""Compiles :class:`_AgentDesired` keeps: a pass asks for the node's part and the
cluster-wide part, and while a destination is unreachable for the node's part without
and with ``hold``. Kept one, they took each other's place: a leader compiled twice a
pass, a node holding a route twice a pass (docs/performance.md, "Passes holding
routes")."""


class _AgentDesired:
    """The desired state of each of the agent's passes, ``(spec, group) -> State``.

    Compile is pure, so the same spec, backends and facts give the same state (or the
    same refusal); compiling 2k destinations again cost 250 of a 430 ms no-op pass
    (benchmarks/agent_steady.py). The node facts are kept while a token of what
    they are made of (every route, link and address change in the namespace but
    k3snet's own routes) stands still: the netlink backend's facts token when one is
    in use, else a :class:`~k3snet.facts.FactsWatch` of the agent's own. Read before the facts,
    a token can only make them be read again too often, never too rarely.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args
        # The last compiles' inputs and results (a state, or the SpecError it raised):
        # one for each group and ``hold`` a pass asks for (see _COMPILES_KEPT).
        self._compiled: list[tuple[Spec, list[tuple[Any, frozenset[str]]], NodeFacts | None,
                                   frozenset[int], State | SpecError]] = []
        self._facts: tuple[object, object, NodeFacts] | None = None  # source, token, facts
        self._watch: FactsWatch | None = None
        self._watch_failed = False

    def __call__(self, spec: Spec, backend: BackendGroup, *,
                 hold: frozenset[int] = frozenset()) -> State:
        facts = _local_facts(self._args, backend, lambda netns: self._read_facts(backend, netns))
        # The agent hands a new group object each pass: its members' backends and kinds
        # are what counts (the backends kept alive here, so never another at their id).
        members = [(m.backend, m.kinds) for m in backend.members]
        for kept in self._compiled:
            if (kept[0] is spec and kept[2] == facts and kept[3] == hold
                    and len(kept[1]) == len(members)
                    and all(a is b and k == j for (a, k), (b, j) in zip(kept[1], members,
                                                                         strict=True))):
                break
        else:
            try:
                result: State | SpecError = compile_for(backend, spec, facts, hold=hold)
            except SpecError as exc:
                # Kept too: while some destination is unreachable, the agent compiles
                # each pass without hold first, to see whether it is back.
                result = exc
            kept = (spec, members, facts, hold, result)
            # Of another spec: never asked for again (a spec in force is one object).
            self._compiled = [kept, *(k for k in self._compiled[:_COMPILES_KEPT - 1]
                                      if k[0] is spec)]
        if isinstance(kept[4], SpecError):
            # The same error (the agent finds its held destinations once), without the
            # traceback of the raise before: each raise would add to it.
            raise kept[4].with_traceback(None)
        return kept[4]

    def close(self) -> None:
        """Close the facts watch, if one was opened."""
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def _read_facts(self, backend: BackendGroup, netns: str | None) -> NodeFacts:
        source, token = self._token(backend, netns)
        kept = self._facts
        if source is not None and kept is not None and kept[0] is source and kept[1] == token:
            return kept[2]
        facts = gather_facts(netns, protocol=route_protocol(backend), backend=backend)
        self._facts = None if source is None else (source, token, facts)
        return facts

    def _token(self, backend: BackendGroup, netns: str | None) -> tuple[object, object]:
        """(what keeps the token, the token); (None, None) when nothing can tell."""
        for member in backend.members:
            read = getattr(member.backend, "route_token", None)
            if "route" in member.kinds:
                # facts_token: still while only k3snet's own routes changed, which the
                # facts leave out (211 and this member's protocol: route_protocol); a
                # k3snet route deleted and put back is no reason to read them. Not for a
                # member of other kinds: the facts then hold its protocol's routes.
                read = getattr(member.backend, "facts_token", None) or read
            if getattr(member.backend, "name", None) == "netlink" and read is not None:
                token = read()  # None with a driver that reads no notifications (pyroute2)
                if token is not None:
                    return member.backend, token
        try:
            if self._watch is None and not self._watch_failed:
                self._watch = FactsWatch(netns)
            if self._watch is not None:
                return self._watch, self._watch.token()
        except (OSError, K3snetError) as exc:
            self.close()
            self._watch_failed = True  # the facts are then read every pass
            logging.getLogger("k3snet").debug("no node facts watch: %s", exc)
        return None, None


def _print_json(run: Run, data: Any) -> None:
    """``data`` as a JSON document on stdout, written whole: a signal while it is written
    (Ctrl-C, SIGTERM, SIGHUP within :func:`sigterm_undoes`) acts once it is
    (:func:`_signals_wait`). A document of a few hundred kilobytes into a pipe its reader
    empties slowly was cut where the signal came, and as the document had begun no
    error document followed: a reader of ``--output json`` got half a document. Cut by
    a second signal all the same, the error document that follows begins on a line of
    its own."""
    # A secret sysctl's value as the text shows it (docs/spec.md): stdout ends up in CI
    # logs and tickets; a plan file (--out) keeps it, written 0600.
    text = json.dumps(redact_secrets(data), indent=2, sort_keys=True) + "\n"
    if run.document_begun and not run.document_printed:
        text = "\n" + text  # after a document a second signal cut: on a line of its own
    with _signals_wait():
        run.document_begun = True
        _write_whole(text)  # out now, not at the end: a signal then cuts nothing
        run.document_printed = True


def _write_whole(text: str) -> None:
    """``text`` on stdout, all of it, flushed. A signal whose handler returns (one
    :func:`_signals_wait` holds back) interrupts a write blocked on a full pipe after
    part of it went out: an unbuffered stdout (``PYTHONUNBUFFERED=1``, as container
    images set it; ``python -u``) then returns that short count, and Python's text
    writer drops the rest without a word (64 KiB of a document said to be whole). And
    a stdout another process made non-blocking refuses a write into a full pipe
    (EAGAIN): the document ended at 64 KiB, exit 1. The ``k3snet`` command's stdout
    writes whole itself (:mod:`k3snet._stdout`); a library caller's own, Python's over
    a descriptor, is written through the same :func:`~k3snet._stdout.write_all`. A
    signal that waits for the document (:func:`_signals_wait`) lets a wait for room go
    on; a second one cuts it, as a write blocked on a blocking stdout."""
    stream = sys.stdout
    if stream is None:  # a process started without one (pythonw): print() writes nothing
        return
    binary: Any = getattr(stream, "buffer", None)
    if not isinstance(stream, io.TextIOWrapper) or type(stream).write is not _TEXT_WRITE \
            or type(binary) not in (io.BufferedWriter, io.FileIO):
        # The command's (over WholeWrites), or a library's stdout that is not Python's
        # own (io.StringIO; a tee, whose write copies the text, a buffer beside it or
        # none, no encoding; pytest's tee-sys): its own write, as print()'s.
        stream.write(text)
        stream.flush()
        return
    from k3snet._stdout import flush_all, write_all  # noqa: PLC0415 - the command's already

    flush_all(stream.flush, binary)  # what the text layer holds goes first
    write_all(binary.write, memoryview(text.encode(stream.encoding or "utf-8",
                                                   "backslashreplace")), binary)
    flush_all(binary.flush, binary)


_TEXT_WRITE = io.TextIOWrapper.write


_WAITING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _signals_wait() -> Iterator[None]:
    """Within the block, SIGINT, SIGTERM and SIGHUP whose handler is Python's (Ctrl-C's,
    :func:`sigterm_undoes`'s) wait for its end: the first one's handler runs once the
    block is done, also when it failed (the pipe's reader gone: Ctrl-C's 130, not 141),
    a second one's at once, cutting it (a reader that never empties the pipe holds the
    block: a second Ctrl-C still ends the command).
    Signals left at their default (SIGTERM of ``plan``, ``observe``) end the process as
    before; outside the main thread (which alone runs handlers) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Callable[[int, Any], Any]] = {}
    waiting: list[tuple[int, Any]] = []

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def wait(signum: int, frame: Any) -> None:
        if waiting:  # the second: the block is cut, the first one's handler run no more
            waiting.clear()
            restore()
            previous[signum](signum, frame)
            return
        waiting.append((signum, frame))

    for ending in _WAITING_SIGNALS:
        handler = signal.getsignal(ending)
        if callable(handler):
            previous[ending] = handler
            signal.signal(ending, wait)
    try:
        yield
    finally:
        restore()
        if waiting:
            signum, frame = waiting.pop()
            previous[signum](signum, frame)


# ---------------------------------------------------------------- plan files

def _save_planfile(args: argparse.Namespace, spec: Spec, backend: BackendGroup, *,
                   observed: State, desired: State, p: Plan) -> bool:
    """Write ``--out``; whether the file holds a secret (written 0600)."""
    from k3snet.planfile import RESERVED_OPTIONS, PlanFile, clusters_of  # noqa: PLC0415
    names = _backend_names(args, None) if args.backend else [
        f"{m.backend.name}:{','.join(sorted(m.kinds))}" for m in backend.members]
    # What the spec and --backend-opt gave each backend, so `apply FILE` builds the
    # same ones; the namespace is the node's, the environment is read again.
    options = {name: _absolute_paths(name, {k: v for k, v in {
                   **spec_backend_options(spec, name), **_explicit_options(name, args)}.items()
                   if k not in RESERVED_OPTIONS})
               for name in dict.fromkeys(n.partition(":")[0] for n in names)}
    caps = backend.capabilities
    saved = PlanFile.make(p, desired=desired.only(caps), observed=observed.only(caps),
                          backends=names, netns=_planned_netns(args, backend),
                          spec_path=args.spec, options=options,
                          allow_disruptive=_disruptive_allowed(args, spec),
                          clusters=clusters_of(backend),
                          pod_cidrs=[str(n) for n in spec.cluster.pod_cidrs])
    saved.write(args.out)
    return saved.secret


def _planned_netns(args: argparse.Namespace, backend: BackendGroup) -> str | None:
    """The network namespace a plan file names as its node's: the one its backends act
    in, wherever that was set (``--netns``, a spec's ``backends:`` or a ``--backend-opt``
    ``netns``, which the file records for no backend,
    :data:`~k3snet.planfile.RESERVED_OPTIONS`);
    ``--netns`` for backends acting in none (files, cluster objects). A plan made with
    ``--backend-opt netlink.netns=node1`` named the host, and `apply FILE` made it there.
    A PlanError when they act in several: `apply FILE` builds them all in one."""
    spaces = namespaces_of(backend)
    if len(spaces) > 1:
        names = ", ".join("the caller's own" if n is None else repr(n) for n in spaces)
        raise PlanError(f"cannot save the plan to {args.out}: its backends act in several "
                        f"network namespaces ({names}), and a plan file is applied in the "
                        "one it names; give every backend the same netns (--netns)")
    return spaces[0] if spaces else args.netns


def _absolute_paths(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with each relative file or directory (``state_dir: st``,
    :func:`~k3snet.backends.registry.path_options`) made absolute from this directory:
    `apply FILE` run elsewhere acts on the same files (a relative ``state_dir`` put the
    sysctl record beside the other directory, and the next run took the sysctl it
    had taken over for a foreign one, never given back)."""
    paths = path_options(name) if options else frozenset()
    return {key: str(Path(value).absolute())
            if key in paths and isinstance(value, str) and value and not os.path.isabs(value)
            else value for key, value in options.items()}


def _saved_backend(args: argparse.Namespace, saved: PlanFile) -> BackendGroup:
    """The backends a plan file was made with: its recorded options, checked as a spec's
    are (names the backend declares; values by the backend), then the namespace from
    the file, the environment and --backend-opt, as with a spec."""
    _check_backend_opt_targets(args, {entry.partition(":")[0] for entry in saved.backends})
    recipe: _Recipe = []
    for entry in saved.backends:
        name, _, kinds = entry.partition(":")
        given = dict(saved.options.get(name, {}))
        declared = backend_options(name)
        unknown = sorted(set(given) - set(declared)) if declared else []
        if unknown:
            raise PlanError(f"{args.planfile}: backend {name!r} has no option "
                            f"{', '.join(map(repr, unknown))}; known: {', '.join(declared)}")
        recipe.append((name, kinds.split(",") if kinds else None, resolve_backend_options(
            name, given, netns=args.netns,
            allow_disruptive=saved.allow_disruptive or bool(args.allow_disruptive),
            pod_cidrs=None if saved.pod_cidrs is None else list(saved.pod_cidrs),
            explicit=_explicit_options(name, args))))
    try:
        group = _group(recipe)
    except LockTimeoutError:  # busy (75), not the file's fault
        raise
    except (BackendError, ModelError) as exc:  # a recorded value the backend refuses
        raise PlanError(f"{args.planfile}: {exc}") from exc
    try:
        # A --backend-opt NAME.netns given to apply overrides the file's namespace; the
        # kubeconfig's current context may have moved to another cluster since.
        saved.refuse_elsewhere(group, args.planfile)
    except BaseException:
        group.close()
        raise
    return group


# ---------------------------------------------------------------- terminal habits

_COLOURS = {"+": "32", "~": "33", "-": "31", "!": "1;31", "=": "2"}


def _colour(text: str, args: argparse.Namespace, stream: Any = None) -> str:
    """Colour a plan's lines by their sign, on a terminal only (NO_COLOR turns it off);
    ``stream``: where the text goes (default stdout)."""
    choice = getattr(args, "color", "auto")
    if choice == "never" or (choice == "auto" and (
            os.environ.get("NO_COLOR") or not (stream or sys.stdout).isatty())):
        return text
    lines = []
    for line in text.splitlines():
        code = _COLOURS.get(line.lstrip()[:1])
        lines.append(f"\x1b[{code}m{line}\x1b[0m" if code else line)
    return "\n".join(lines)


def _completion(shell: str) -> str:
    """A completion script for ``shell``, generated from the parser itself."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands = sorted(sub.choices)
    options = {name: sorted({o for a in cmd._actions for o in a.option_strings})
               for name, cmd in sub.choices.items()}
    if shell == "bash":
        return _bash_completion(sub.choices, commands, options)
    cases = "\n".join(f"        ({name}) _arguments '*:file:_files' "
                      + " ".join(f"'{o}[option]'" for o in opts) + " ;;"
                      for name, opts in sorted(options.items()))
    return f"""#compdef k3snet
# k3snet zsh completion: k3snet completion zsh > "${{fpath[1]}}/_k3snet"
_k3snet() {{
    if (( CURRENT == 2 )); then
        _values 'command' {' '.join(commands)}
        return
    fi
    case $words[2] in
{cases}
    esac
}}
compdef _k3snet k3snet
"""


def _bash_completion(parsers: Mapping[str, argparse.ArgumentParser], commands: list[str],
                     options: Mapping[str, list[str]]) -> str:
    """The bash script: the command is the first word that is no common option (``k3snet
    -v plan``, as :func:`_common_after_command` reads it: the command's options were never
    offered there); an option's value, and ``render WHAT`` and ``completion SHELL``, from
    their choices (``--backend`` from the backends known here), the rest from files."""
    words = {"--backend": " ".join(available_backends())}
    values: list[str] = []
    firsts: list[str] = []
    for name, command in sorted(parsers.items()):
        for action in command._actions:
            choices = " ".join(map(str, action.choices or ()))
            if not action.option_strings and choices and not isinstance(
                    action, argparse._SubParsersAction):
                firsts.append(f'        {name}) COMPREPLY=($(compgen -W "{choices}" -- "$cur"))'
                              "; return ;;")
            for option in action.option_strings:
                if option in _COMMON_VALUED:
                    continue  # every command's: said once, below
                known = choices or words.get(option, "")
                if known:
                    values.append(f'        {name}:{option}) COMPREPLY=($(compgen -W "{known}"'
                                  ' -- "$cur")); return ;;')
    cases = "\n".join(f'        {name}) opts="{" ".join(opts)}" ;;'
                      for name, opts in sorted(options.items()))
    common = " ".join(_COMMON_VALUED)
    skip = "|".join(_COMMON_VALUED)
    return f"""# k3snet bash completion: source <(k3snet completion bash)
_k3snet() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}} cmd="" at=0 i opts
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${{COMP_WORDS[i]}} in
            {skip}) ((i++)) ;;
            -*) ;;
            *) cmd=${{COMP_WORDS[i]}} at=$i; break ;;
        esac
    done
    if [[ -z $cmd ]]; then
        case $prev in
            --log-format) COMPREPLY=($(compgen -W "text json" -- "$cur")); return ;;
            --color) COMPREPLY=($(compgen -W "auto always never" -- "$cur")); return ;;
        esac
        COMPREPLY=($(compgen -W "{' '.join(commands)} --help --version -v -q {common}" -- "$cur"))
        return
    fi
    case $cmd:$prev in
        *:--log-format) COMPREPLY=($(compgen -W "text json" -- "$cur")); return ;;
        *:--color) COMPREPLY=($(compgen -W "auto always never" -- "$cur")); return ;;
{chr(10).join(values)}
    esac
    if [[ $COMP_CWORD -eq $((at + 1)) && $cur != -* ]]; then
        case $cmd in
{chr(10).join(firsts)}
        esac
    fi
    case $cmd in
{cases}
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}}
complete -o filenames -F _k3snet k3snet
"""


def cmd_completion(args: argparse.Namespace) -> int:
    print(_completion(args.shell), end="")
    return EXIT_OK


# ---------------------------------------------------------------- commands


def cmd_plan(args: argparse.Namespace) -> int:
    if args.out is not None and _same_file(args.out, args.spec):
        # `plan -f egress.yaml --out egress.yaml` (a completion slip) replaced the spec.
        return _usage_error(args, f"--out {args.out} is the spec (-f {args.spec}); the plan "
                            "file would replace it: give another path")
    spec, group = _spec_and_backend(args)  # the backends reading already (prefetch)
    with group as backend:
        # Compiled first, so the backends that take the hint (``expect``, as ``converge``
        # gives it) read their own objects back without parsing them.
        desired = _desired(args, spec, backend)
        backend.expect(desired.only(backend.capabilities))
        observed = backend.observe()
        p = plan(observed, desired)
        secret = args.out is not None and _save_planfile(
            args, spec, backend, observed=observed, desired=desired, p=p)
        marks = disruptive_notes(backend, p)
        # Told now, not first by `apply FILE`, which refuses such a plan every time.
        emptied = teardown_emptied(backend, observed, p)
        teardown = [f"the plan deletes everything k3snet owns through {', '.join(emptied)}: "
                    "`k3snet apply` refuses it (the teardown guard) unless given "
                    "--allow-teardown; `k3snet destroy` removes everything on purpose"
                    ] if emptied else []
        warnings = [*_left_out(args, spec, backend), *backend.warnings, *teardown]
        restarts = (restarts_needed(backend, p), pending_restarts(backend))
    # `--out /dev/stdout | gpg -e ...`: the plan file alone on stdout, the plan on stderr.
    shown = contextlib.redirect_stdout(sys.stderr) if args.out is not None and \
        _is_stdout(args.out) else contextlib.nullcontext()
    with shown:
        _print_plan(args, p, marks, warnings, secret, restarts=restarts,
                    teardown=bool(teardown))
    if p.conflicts:
        return EXIT_CONFLICTS
    return EXIT_CHANGES if p.changes else EXIT_OK


def _print_plan(args: argparse.Namespace, p: Plan, marks: list[str], warnings: list[str],
                secret: bool, *,
                restarts: tuple[Sequence[str], Sequence[PendingRestart]] = ((), ()),
                teardown: bool = False) -> None:
    needed, pending = restarts
    if args.output == "json":
        # The lists always (a plan's own dict has `held` only when there is one): a script
        # reads the same keys from every plan document.
        _print_json(args.run, {
            "held": [], **p.to_dict(), "kind": "plan", "warnings": warnings,
            "disruptive": marks, **_restart_fields(needed, pending)})
        return
    print(_colour(p.render(), args))
    for line in marks:
        print(f"!! disruptive: {printable(line)}")
    _print_restarts(needed, pending)
    _print_warnings(warnings)
    if args.out is None:
        return
    if not args.out.is_file():  # a FIFO, a terminal, /dev/null: written into
        print(f"Wrote the plan file into {args.out}; `k3snet apply` reads it from a file.")
        return
    kept = " (mode 0600: it holds a secret sysctl's value)" if secret else ""
    allow = "--allow-teardown " if teardown else ""  # refused without (the warning above)
    print(f"Saved the plan to {args.out}{kept}; apply it with "
          f"`k3snet apply {allow}{shell_path(args.out)}`.")  # pasted into a shell



def _restart_fields(needed: Sequence[str], pending: Sequence[PendingRestart]
                    ) -> dict[str, Any]:
    """The JSON documents' ``restart_needed`` (what the plan's changes need restarted once
    applied) and ``restart_pending`` (what k3snet's changes still wait for)."""
    return {"restart_needed": list(needed),
            "restart_pending": [r.to_dict() for r in pending]}


def _restart_how(workload: str, command: str | None) -> str:
    """``command`` (the one restarting ``workload``), else ``restart WORKLOAD``."""
    return command if command is not None else f"restart {workload}"


def _print_restarts(needed: Sequence[str], pending: Sequence[PendingRestart]) -> None:
    """``!! restart needed`` / ``!! restart pending`` lines: k3snet restarts nothing."""
    for workload in needed:
        how = _restart_how(workload, restart_command(workload))
        print(f"!! restart needed once applied: {printable(workload)} reads the changed "
              f"config only when it starts ({printable(how)})")
    for restart in pending:
        how = _restart_how(restart.workload, restart.command)
        print(f"!! {printable(restart.render())}: {printable(how)}")


def _is_stdout(path: Path) -> bool:
    """Whether ``path`` is this process's stdout (``/dev/stdout``, a link to it)."""
    try:
        given, out = path.stat(), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no such path, stdout closed or replaced
        return False
    return (given.st_dev, given.st_ino) == (out.st_dev, out.st_ino)


_KIND_NAMES = {"route": "route", "sysctl": "sysctl", "forward": "forward accept",
               "nat": "NAT rule"}


def _left_out(args: argparse.Namespace, spec: Spec | None, backend: BackendGroup, *,
              look_behind: bool = True) -> list[str]:
    if spec is None:
        return []
    return [*unmanaged_warnings(backend, spec, args.backend),
            *(_left_behind(args, spec, backend) if look_behind else ())]


def _left_behind(args: argparse.Namespace, spec: Spec | None, backend: BackendGroup,
                 saved: PlanFile | None = None, *, cluster_too: bool = True) -> list[str]:
    """What the node backends not in use hold of k3snet's (a switch of backends left it:
    :func:`~k3snet.backends.discover.left_behind`), with the ``destroy`` removing it;
    ``plan``, ``apply --dry-run`` (of a spec or of a plan file ``saved``) and the agent
    (once a spec is in force) say it. ``cluster_too``: the cluster backends not in use
    too, beside one in use (not the agent's: its Lease holder alone looks, once a spec,
    where every node would list the cluster's objects)."""
    from k3snet.backends.discover import (  # noqa: PLC0415
        CLUSTER_BACKENDS,
        NODE_BACKENDS,
        cluster_left_behind,
        left_behind,
    )

    members = [m.backend for m in backend.members]
    names = {name for b in members if isinstance(name := getattr(b, "name", None), str)}
    node = bool(names & {n for _, n, _ in NODE_BACKENDS})
    cluster = cluster_too and bool(names & set(CLUSTER_BACKENDS))
    if not (node or cluster):
        return []  # no node nor cluster backend in use (memory, a custom one)
    looked = ({n for _, n, _ in NODE_BACKENDS} if node else set()) | (
        names & set(CLUSTER_BACKENDS))
    if node and "flannel" not in names and env_value("K3SNET_FLANNEL_CONF"):
        looked.add("flannel")  # the node's own net-conf.json ($K3SNET_FLANNEL_CONF)
    options: dict[str, dict[str, Any]] = {}
    refused: list[str] = []
    for name in sorted(looked):
        try:
            options[name] = (_options(name, args, spec) if saved is None else
                             # A plan file's recorded options (those of its backends alone).
                             resolve_backend_options(name, saved.options.get(name),
                                                     netns=args.netns,
                                                     explicit=_explicit_options(name, args)))
        except K3snetError as exc:
            # An option of a backend not in use (an in-use one's failed the command
            # already): that backend alone is not looked through, and it is said. One
            # such option (a relative $K3SNET_PROC_SYS beside nftables alone) hid every
            # look, the cluster's too, unsaid.
            refused.append(name)
            logging.getLogger(__name__).warning(
                "cannot look through %s for what a switch of backends left: %s", name,
                " ".join(str(exc).split()))
    return [*(left_behind(members, options, netns=args.netns, skip=refused) if node else ()),
            *(cluster_left_behind(members, options) if cluster else ())]


def unmanaged_warnings(backend: BackendGroup, spec: Spec, entries: Sequence[str] = ()
                       ) -> list[str]:
    """A warning naming the spec's node objects that none of the backends in use manages
    (:func:`~k3snet.converge.unmanaged`), unless one of the ``--backend`` ``entries`` is a
    ``NAME:KINDS`` that split the kinds on purpose, or no backend in use manages a node
    kind (flannel, Calico or Cilium alone: a run for the cluster's CNI settings);
    ``plan``, ``apply`` and the Ansible module say it."""
    if any(":" in entry for entry in entries) or not NODE_KINDS & backend.capabilities:
        return []
    counts = unmanaged(backend, spec)
    if not counts:
        return []
    what = " and ".join(f"{n} {_KIND_NAMES[kind]}{'s' if n > 1 else ''}"
                        for kind, n in counts.items())
    verb = "is" if sum(counts.values()) == 1 else "are"
    names = ", ".join(m.backend.name for m in backend.members)
    return [f"the spec's {what} {verb} in no plan: none of the backends in use ({names}) "
            f"manages {' or '.join(counts)}; add one that does (the default ones, "
            f"{' and '.join(DEFAULT_BACKENDS)}, manage every kind)"]


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one existing file (through links too)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # either is missing (or unreadable): said where it is used
        return False


def _disruptive(backend: BackendGroup, p: Plan, command: str = "apply") -> list[str]:
    """``!! disruptive:`` lines for the changes any backend with ``disruptive(change)`` names
    (``command``: the one that refuses them unless allowed)."""
    return [f"!! disruptive: {note}" for note in disruptive_notes(backend, p, command)]


def disruptive_notes(backend: BackendGroup, p: Plan, command: str = "apply") -> list[str]:
    """What :func:`_disruptive` says of each change, without the ``!! disruptive:`` mark
    (``plan --output json``'s ``disruptive``; the Ansible module's task warnings)."""
    lines = []
    for member in backend.members:
        judge = getattr(member.backend, "disruptive", None)
        if judge is None:
            continue
        allowed = getattr(member.backend, "allow_disruptive", False)
        for change in p.changes:
            reason = judge(change)
            if reason:
                verdict = ("allowed" if allowed else
                           f"{command} refuses it unless allowed ({ALLOW_DISRUPTIVE})")
                lines.append(f"{change}: {reason}; {verdict}")
    return lines




def cmd_apply(args: argparse.Namespace) -> int:
    if (args.planfile is None) == (args.spec is None):
        return _usage_error(args, "give either a spec (-f FILE) or a plan file")
    options = {"allow_conflicts": args.allow_conflicts, "allow_teardown": args.allow_teardown,
               "lock_timeout": args.lock_timeout}
    saved = None
    if args.planfile:
        from k3snet.planfile import PlanFile  # noqa: PLC0415 - a plan file's apply only
        saved = PlanFile.read(args.planfile, netns=args.netns)
    if saved is not None and args.backend:
        return _usage_error(args, f"--backend with a plan file: the plan file names its "
                            f"backends ({', '.join(n.partition(':')[0] for n in saved.backends)}"
                            "), the ones it was made against")
    if saved is not None:
        args.netns = saved.node["netns"]
    if saved is None:
        spec, group = _spec_and_backend(args)  # the backends reading already (prefetch)
    else:
        spec, group = None, _saved_backend(args, saved)
    with group as backend:
        desired = _desired(args, spec, backend) if spec is not None else State()

        def run(p: Plan | None, wanted: State | None, *, dry_run: bool) -> Convergence:
            if p is None:
                return converge(backend, desired, dry_run=dry_run, **options)
            try:
                return apply_plan(backend, p, desired=wanted, dry_run=dry_run,
                                  made_from=saved.observed if saved else None, **options)
            except StalePlanError as exc:
                from k3snet.planfile import build_identity  # noqa: PLC0415 - as PlanFile
                if saved is None or (saved.made_by == __version__
                                     and saved.build == build_identity()):
                    raise
                # Another version or build may read the node or plan otherwise: said
                # first, as the likely reason ("the node changed" may not be true).
                other = ("another build of it" if saved.made_by == __version__
                         else f"k3snet {printable(saved.made_by or 'of an unknown version')}")
                detail = str(exc).removeprefix("the node changed since this plan was made: ")
                raise StalePlanError(
                    f"the plan file was made by {other}, this is k3snet {__version__} "
                    f"(build {build_identity()}), which may read the node or plan otherwise "
                    f"(the node may not have changed): {detail}") from exc

        fixed, wanted = (saved.plan, saved.desired) if saved else (None, None)
        shown: Plan | None = None  # the plan already printed for the user to approve
        if args.dry_run:
            preview = run(fixed, wanted, dry_run=True)
            problems = tuple(backend.check(preview.plan)) if preview.plan.changes else ()
            # A plan file's backends look too: `plan --out` said what a switch of backends
            # left, but the file may be applied later, after another switch.
            left = (_left_out(args, spec, backend) if saved is None
                    else _left_behind(args, None, backend, saved))
            _print_apply(args, preview, problems, warnings=[*left, *backend.warnings],
                         needed=restarts_needed(backend, preview.plan))
            if problems:
                return EXIT_ERROR
            return EXIT_CHANGES if args.detailed_exitcode and preview.plan.changes else EXIT_OK
        if not args.auto_approve and sys.stdin.isatty():
            # What is approved is what is applied: the previewed plan, refused if stale.
            preview = run(fixed, wanted, dry_run=True)
            if preview.plan.changes:
                ask = _asking(args)
                print(_colour(preview.plan.render(), args, ask), file=ask)
                if not _confirm("Apply these changes?", ask):
                    return _not_confirmed(args)
                fixed = preview.plan
                # With a plan file, what it was made for; with a spec, what it compiles to.
                wanted = saved.desired if saved else desired
                # Shown on stdout already, or else printed there with what was applied.
                shown = preview.plan if ask is sys.stdout else None
        # A signal once every part is made (the group's apply returning) waits for what
        # was made to be noted: "stopped ... after the change was made, which stays", not
        # "nothing was changed" of a node holding the change.
        with held_after_commit():
            done = run(fixed, wanted, dry_run=False)
            _made(args, done)
        # What the last observe found worth saying, as plan says; not the look through
        # the node backends not in use (plan and apply --dry-run say it): a script's cold
        # apply pays for its own backends alone (up to ~56 ms of imports and reads else).
        warnings = [*_left_out(args, spec, backend, look_behind=False), *backend.warnings]
    _print_apply(args, done, shown=shown, warnings=warnings)
    changed = done.result is not None and bool(done.result.applied)
    return EXIT_CHANGES if args.detailed_exitcode and changed else EXIT_OK


def _print_apply(args: argparse.Namespace, done: Convergence, problems: Sequence[str] = (),
                 *, shown: Plan | None = None, kind: str = "apply",
                 warnings: Sequence[str] = (), extra: Mapping[str, Any] | None = None,
                 needed: Sequence[str] = ()) -> None:
    """The plan (unless ``shown`` already, for approval), then what was applied, then
    the restarts ``needed`` by the plan (a dry run) and pending (``done.restarts``), then
    the backends' ``warnings`` (``!! warning:`` lines, as plan prints them); with
    ``--output json`` one document of ``kind`` (``apply`` or ``destroy``)."""
    if args.output == "json":
        _print_json(args.run, {
            "format": JSON_FORMAT,
            "kind": kind,
            "dry_run": bool(args.dry_run),
            "plan": {"held": [], **done.plan.to_dict()},  # held: as plan's
            "applied": [c.to_dict() for c in done.result.applied] if done.result else [],
            "operations": done.result.operations if done.result else 0,
            "problems": list(problems),
            "warnings": list(warnings),
            **_restart_fields(needed, done.restarts),
            **(extra or {}),
        })
        return
    if shown is None or not _same_changes(shown.changes, done.plan.changes):
        print(_colour(done.plan.render(), args))
        shown = done.plan
    if done.result is not None:
        print(_result_text(shown, done.result))
    if args.dry_run:
        if problems:
            print("The backends' check found problems; nothing was changed:")
            print("\n".join(f"  {printable(str(p))}" for p in problems))
        elif done.plan.changes:
            print("Dry run: the backends' check found no problem; nothing was changed.")
    _print_restarts(needed, done.restarts)
    _print_warnings(warnings)


def _print_warnings(warnings: Sequence[str]) -> None:
    """The backends' warnings as ``plan`` prints them (``!! warning:`` lines)."""
    for line in warnings:
        # A warning quotes what others named (a foreign table, chain or interface): one
        # line, no escape sequence for the terminal.
        print(f"!! warning: {printable(line)}")


def cmd_destroy(args: argparse.Namespace) -> int:
    spec = _spec(args) if args.spec else None
    if spec is None and not args.backend:
        return _destroy_found(args)
    with _backend(args, spec) as backend:
        return _destroy_through(args, [backend], lambda: backend.warnings,
                                look_again=lambda: _look_again(backend))


def _destroy_found(args: argparse.Namespace) -> int:
    """``destroy`` naming no backend: through every node backend holding k3snet's objects
    (:func:`~k3snet.backends.discover.discover_owners`). The defaults, netlink and
    nftables, left a node set up with ``backends: [netlink, iptables]`` masquerading."""
    from k3snet.backends.discover import NODE_BACKENDS, discover_owners  # noqa: PLC0415

    names = {name for _, name, _ in NODE_BACKENDS}
    _check_backend_opt_targets(args, names)
    with discover_owners({name: _options(name, args) for name in sorted(names)}) as found:
        refusal = found.refusal("k3snet destroy")
        if refusal is not None:
            raise refusal
        print(found.summary(), file=_human(args))
        return _destroy_through(args, found.groups, lambda: found.warnings, found=found,
                                look_again=found.look_again)


def _look_again(backend: BackendGroup) -> None:
    """Observe ``backend`` again after a removal, for warnings of what holds now (see
    :meth:`~k3snet.backends.discover.Discovery.look_again`); one it cannot read says so."""
    try:
        backend.observe()
    except K3snetError as exc:
        logging.getLogger(__name__).warning(
            "the backends could not be read again after the removal (%s): their "
            "warnings below are those read before it", exc)


def _destroy_through(args: argparse.Namespace, groups: Sequence[BackendGroup],
                     warnings: Callable[[], Sequence[str]], *,
                     look_again: Callable[[], None],
                     found: Discovery | None = None) -> int:
    """Remove what ``groups`` own, one after the other; ``warnings()``: what to say after
    each read; ``look_again()``: read the backends again once something was removed (the
    warnings read before it named what the removal took: k3snet's nftables table, said
    by the iptables backend as left behind); ``found``: the discovery the groups come
    from (said in the document)."""
    as_json, human = _json(args), _human(args)
    preview = destroy_each(groups, dry_run=True, lock_timeout=args.lock_timeout)
    if preview.plan.empty:
        if not as_json:
            print(NOTHING_TO_DESTROY)
        _print_destroy(args, preview, warnings=warnings(), found=found)
        return EXIT_OK
    asking = not (args.dry_run or args.auto_approve)
    shown = _asking(args) if asking else human
    if asking or not as_json:  # with JSON, the document holds the plan
        print(preview.plan.render(), file=shown)
    for group in groups:
        for line in _disruptive(group, preview.plan, "destroy"):
            print(line, file=shown)
    if args.dry_run:
        # The backends' own check, as `apply --dry-run` runs it: a destroy that
        # apply would refuse (an admin's jump into an iptables chain of k3snet's)
        # is refused here too.
        problems = _destroy_problems(args, groups, preview)
        needed = list(dict.fromkeys(w for g in groups for w in restarts_needed(g, preview.plan)))
        _print_destroy(args, preview, problems, warnings=warnings(), found=found,
                       needed=needed)
        return EXIT_ERROR if problems else EXIT_CHANGES
    if asking and not _confirm("Remove everything listed above?", shown):
        return _not_confirmed(args)
    # What is approved is what is removed: the listed plan, refused if the node changed.
    # As apply's: a signal once everything is removed waits for it to be noted, and
    # is said as such ("after the change was made, which stays").
    try:
        with held_after_commit():
            done = destroy_each(groups, lock_timeout=args.lock_timeout,
                                confirmed=preview.plan if asking else None)
            _made(args, done)
    except BaseException as exc:
        _warnings_after_failure(args, exc, warnings, look_again)
        raise
    if not as_json and (shown is not sys.stdout
                        or not _same_changes(preview.plan.changes, done.plan.changes)):
        print(done.plan.render())  # not listed on stdout, or the node changed since
    if done.result is not None and not as_json:
        print(_result_text(done.plan, done.result))
    if done.result is not None and done.result.applied:
        look_again()
    _print_destroy(args, done, warnings=warnings(), found=found)
    changed = done.result is not None and bool(done.result.applied)
    return EXIT_CHANGES if args.detailed_exitcode and changed else EXIT_OK


def _warnings_after_failure(args: argparse.Namespace, exc: BaseException,
                            warnings: Callable[[], Sequence[str]],
                            look_again: Callable[[], None]) -> None:
    """The backends' warnings a ``destroy`` that failed with ``exc`` logs (they are held
    until then: :class:`_HeldWarnings`): what holds after the failure. Read before it,
    they named what the removal through an earlier backend took (k3snet's nftables table,
    said by the iptables backend as left behind, gone once ``destroy`` had removed it and
    the iptables part failed). A removal that changed nothing (each backend's is all or
    nothing) leaves them as read; a signal, or one during the new read, has them said as
    read before the removal, not read again."""
    held: _HeldWarnings | None = getattr(args, "held_warnings", None)
    if held is None or not (removed_before(exc) or isinstance(exc, RollbackError)):
        return
    if isinstance(exc, Exception):
        # A signal (or an error) during the read ends it, not the report of ``exc``.
        with contextlib.suppress(BaseException):
            look_again()
            held.keep_only(warnings())
            return
    held.label_read_before("the removal")


def _destroy_problems(args: argparse.Namespace, groups: Sequence[BackendGroup],
                      preview: Convergence) -> tuple[str, ...]:
    """The backends' check of ``preview``'s plan (of each group's own part, read again,
    when there are several: a kind two groups hold cannot be split by kind)."""
    if len(groups) == 1:
        return tuple(groups[0].check(preview.plan))
    try:
        destroy_each(groups, dry_run=True, check=True, lock_timeout=args.lock_timeout)
    except CheckError as exc:
        return exc.problems
    return ()


def _print_destroy(args: argparse.Namespace, done: Convergence, problems: Sequence[str] = (),
                   *, warnings: Sequence[str], found: Discovery | None = None,
                   needed: Sequence[str] = ()) -> None:
    """``destroy``'s document (``--output json``), or the check's ``problems`` and the
    backends' ``warnings`` as text, as ``apply`` says them: an iptables chain of k3snet's
    renamed by an admin, whose rules go on running after the destroy, was said in a log
    line only, and never in the document. ``found``: with ``--output json``, the
    document's ``discovered`` (which backends held what, which could not look)."""
    if _json(args):
        _print_apply(args, done, problems, kind="destroy", warnings=warnings, needed=needed,
                     extra={"discovered": {
                         "held": {o.label: o.owned for o in found.owners},
                         "empty": list(found.idle),
                         "unavailable": list(found.unavailable)}} if found else None)
        return
    if problems:
        print("The backends' check found problems; nothing was changed:")
        print("\n".join(f"  {printable(str(p))}" for p in problems))
    _print_restarts(needed, done.restarts)
    _print_warnings(warnings)


def _same_changes(a: Sequence[Change], b: Sequence[Change]) -> bool:
    """The same changes, in any order (by identity first: an apply returns the plan's own)."""
    if len(a) != len(b):
        return False
    return {id(c) for c in a} == {id(c) for c in b} or set(a) == set(b)


def _result_text(shown: Plan, result: ApplyResult) -> str:
    """``backend: N change(s) applied in K operation(s)``; the changes again only where
    they are not the plan printed above (``shown``): one line per change is what a
    user reads once, and what a 10k-change apply spent ~10 % of its time describing."""
    head = result.summary()
    if _same_changes(shown.changes, result.applied):
        return f"{head}, as planned above."
    applied, planned = set(result.applied), set(shown.changes)
    lines = [f"{head}, not as planned above:"]
    lines += [f"  not applied: {c}" for c in shown.changes if c not in applied]
    lines += [f"  applied, not planned: {c}" for c in result.applied if c not in planned]
    return "\n".join(lines)


def _confirm(question: str, stream: Any = None) -> bool:
    """Ask on a terminal; refuse (never guess) when stdin is not one. The question goes
    to ``stream`` (default stdout; :func:`_asking` says which)."""
    if not sys.stdin.isatty():
        print(f"k3snet: error: {NOT_A_TERMINAL}", file=sys.stderr)
        return False
    prompt = f"{question} Only 'yes' is accepted: "
    try:
        if stream is None or stream is sys.stdout:
            answer = input(prompt)
        else:  # input() writes its prompt on stdout
            print(prompt, end="", file=stream, flush=True)
            answer = input()
    except EOFError:
        return False
    return answer.strip() == "yes"


def cmd_observe(args: argparse.Namespace) -> int:
    ignored = [flag for flag, given in (("-f", args.spec), ("--backend", args.backend),
                                        ("--backend-opt", args.backend_opt),
                                        ("--no-facts", args.no_facts)) if given]
    if args.save is not None and ignored:
        # The bundle is the namespace's whole state, whatever the backends: a script
        # giving a spec or --backend expected them to count.
        return _usage_error(args, f"--save captures the whole namespace; it takes no "
                            f"{', '.join(ignored)}")
    if args.save is not None:
        from k3snet.doctor import NodeCapture  # noqa: PLC0415 - doctor users only

        capture = NodeCapture.read_live(args.netns)
        written = capture.write_dir(args.save)
        if args.output == "json":
            _print_json(args.run, {
                "format": JSON_FORMAT, "kind": "capture", "directory": str(args.save),
                "files": [str(path) for path in written],
                "missing": dict(sorted(capture.missing.items()))})
        else:
            for path in written:
                print(path)
        for name, why in sorted(capture.missing.items()):
            print(f"k3snet: not captured: {name}: {printable(why)}", file=sys.stderr)
        return EXIT_OK
    spec = _spec(args) if args.spec else None
    with _backend(args, spec) as backend:
        state = backend.observe()
    if args.output == "json":
        _print_json(args.run, {**state.to_dict(), "kind": "state"})
    else:
        print(state.render())
    return EXIT_OK


def cmd_agent(args: argparse.Namespace) -> int:
    from k3snet.agent import run_from_cli  # noqa: PLC0415 - agent dependencies only here

    if args.listen is None:  # a one-off pass has no probe to answer (the port may be taken)
        args.listen = "none" if args.once else DEFAULT_LISTEN
    desired = _AgentDesired(args)
    try:
        return run_from_cli(args, make_backend=lambda spec: _backend(args, spec),
                            desired=desired,
                            spec_warnings=lambda spec, group: [
                                *unmanaged_warnings(group, spec, args.backend),
                                *_left_behind(args, spec, group, cluster_too=False)])
    finally:
        desired.close()


EXIT_BLOCKED, EXIT_UNKNOWN = 3, 4  # doctor's own codes (docs/cli.md)


def cmd_doctor(args: argparse.Namespace) -> int:
    from k3snet.doctor import Flow, NodeCapture, NodeState, diagnose  # noqa: PLC0415

    address, port = _destination(args.destination)
    flow = Flow(args.source, address, protocol=args.proto, port=port)
    if args.fix and args.state is not None:
        raise K3snetError("--fix changes a live node: it cannot be used with --state")
    capture = (NodeCapture.read_dir(args.state) if args.state is not None
               else NodeCapture.read_live(args.netns))
    state = _doctor_calico(_doctor_cluster(NodeState.from_capture(capture), args), args)
    state = attrs.evolve(state, netns=_doctor_netns(args))  # where its advice is run
    mode = _doctor_iptables_mode(args)
    if mode is not None:
        state = attrs.evolve(state, iptables_mode=(mode, "the spec's backends.iptables.mode"))
    elif args.spec is not None and state.iptables_mode is not None:
        # The spec leaves it to mode auto: the finding need not ask for the spec again.
        flavour, why = state.iptables_mode
        state = attrs.evolve(state, iptables_mode=(flavour, f"the spec's {why}"))
    d = diagnose(state, flow)
    if args.fix and d.fixes.owned:
        with _doctor_fix_backends(args, d) as backend:
            d = diagnose(state, flow, observed=backend.observe())
            _print_diagnosis(args, d)
            # With JSON, stdout is that document alone: a later failure (a stale plan,
            # an apply or rollback error) is told on stderr and by the exit code.
            args.stdout_taken = _json(args)
            if d.plan.empty:
                return _doctor_exit(d.verdict)
            human = _human(args)  # with JSON, stdout holds the diagnosis alone
            if not args.auto_approve:
                ask = _asking(args)
                if ask is not sys.stdout and sys.stdin.isatty():  # what is to be approved
                    print(_colour(d.plan.render(), args, ask), file=ask)
                if not _confirm("Apply these changes?", ask):
                    print("k3snet: nothing applied", file=sys.stderr)  # stdout: said above
                    return EXIT_ERROR
            # Exactly the plan shown and approved: refused (nothing applied) if the node
            # changed while it waited for approval, never planned again behind the
            # user's back (a masquerade another k3snet run added meanwhile was deleted).
            with held_after_commit():  # as apply's: a late signal says the fix stays
                done = apply_plan(backend, d.plan, desired=d.desired)
                _made(args, done)
            if done.result is not None:
                print(_result_text(d.plan, done.result), file=human)
        after = diagnose(attrs.evolve(
            NodeState.from_capture(NodeCapture.read_live(args.netns)),
            cluster_cidrs=state.cluster_cidrs, service_cidrs=state.service_cidrs,
            calico_pools=state.calico_pools,
            **({"iptables_mode": state.iptables_mode} if mode is not None else {})), flow)
        print(f"now: {after.verdict.value}", file=_human(args))
        return _doctor_exit(after.verdict)
    if args.state is None and d.fixes.owned:
        d = _doctor_as_fix_would(args, state, flow, d)
    _print_diagnosis(args, d)
    if args.output == "text" and not d.plan.empty:
        # The fix lines are plan lines: typed into a shell, `sysctl NAME = 1` only reads
        # NAME and `masquerade SRC -> DST` redirects into a file named DST. The one line
        # a shell takes is the command that applies them.
        on_node = "on the node, " if args.state is not None else ""
        print(f"the fix lines above are k3snet's plan, not shell commands; {on_node}"
              f"apply them with:\n  {shell_join(_doctor_fix_argv(args))}")
    return _doctor_exit(d.verdict)


def _doctor_fix_backends(args: argparse.Namespace, d: Any) -> BackendGroup:
    """The backends that apply the fix of ``d`` (a Diagnosis), each for its kinds of fix
    object (:data:`~k3snet.doctor.findings.FIX_BACKENDS`)."""
    from k3snet.doctor.findings import FIX_BACKENDS  # noqa: PLC0415 - doctor users only

    kinds = {o.kind for o in d.fixes.owned}
    names = sorted({FIX_BACKENDS[k] for k in kinds})
    # Built as `apply -f SPEC` builds them: the spec's options of each (its iptables
    # mode, its nftables table: a masquerade written into `inet k3snet` beside the
    # spec's table was one its agent neither manages nor removes).
    spec = _spec(args) if args.spec is not None else None
    return BackendGroup([Member(create_backend(n, **_options(n, args, spec)),
                                [k for k in kinds if FIX_BACKENDS[k] == n]) for n in names])


def _doctor_as_fix_would(args: argparse.Namespace, state: Any, flow: Any, d: Any) -> Any:
    """``d`` (a live node's Diagnosis of ``flow``) planned against what k3snet owns there,
    as ``--fix`` plans it: a fix object a spec owns with another value is withheld, and the
    warnings of a fix the next apply takes back are given. Read only, through the fix's
    backends; ``d`` as it is, said on stderr, where they cannot read."""
    from k3snet.doctor import diagnose  # noqa: PLC0415 - doctor users only

    try:
        with _doctor_fix_backends(args, d) as backend:
            return diagnose(state, flow, observed=backend.observe())
    except (K3snetError, OSError) as exc:  # a tool missing, no right to read: said, not fatal
        print(f"k3snet: what k3snet owns here not read ({printable(str(exc))}): the fix "
              "below leaves it out; --fix reads it, and withholds a fix object a spec "
              "owns with another value", file=sys.stderr)
        return d


def _doctor_fix_argv(args: argparse.Namespace) -> list[str]:
    """The command line that applies this diagnosis's fix: this one with ``--fix``, on the
    node (``--netns`` kept, or given for the namespace of a k3snet started by ``ip netns
    exec NS``; ``--state`` left out: the fix acts on a live node), with what
    shaped the diagnosis (the spec, service CIDRs, protocol, kube config)."""
    argv = ["k3snet", "doctor"]

    def option(short: str, long: str, value: str) -> None:
        # A value with a leading dash (given as --spec=-x.yaml) joined to its option's
        # long name: `-f -x.yaml` is -f without its argument, for argparse. Written as
        # the bytes the command line gave (a file's name): under a Latin-1 locale -f of
        # a byte \xff, read as ÿ, was written as its UTF-8, another file once pasted.
        value = fs_word(value)
        argv.extend([f"{long}={value}"] if value.startswith("-") else [short, value])

    netns = _doctor_netns(args)
    if netns is not None:
        option("--netns", "--netns", netns)
    argv += ["--from", args.source, "--to", args.destination]
    if args.proto != "tcp":
        argv += ["--proto", args.proto]
    if args.spec is not None:
        option("-f", "--spec", str(args.spec))
    for cidr in args.service_cidr:
        option("--service-cidr", "--service-cidr", cidr)
    if args.kubeconfig is not None:
        option("--kubeconfig", "--kubeconfig", args.kubeconfig)
    if args.context is not None:
        option("--context", "--context", args.context)
    return [*argv, "--fix"]


def _doctor_netns(args: argparse.Namespace) -> str | None:
    """The namespace the node diagnosed is, as the commands the doctor shows name it (its
    fix line's ``--netns``, its advice's ``ip netns exec``): ``--netns``; read live, the
    doctor read its own namespace: one started by ``ip netns exec NS k3snet doctor`` is
    named (exec_name), or a command, run from the shell that ran it, acted in the node's
    namespace, not the one diagnosed."""
    return args.netns if args.state is not None else exec_name(args.netns)


def _print_diagnosis(args: argparse.Namespace, d: Any) -> None:
    """The diagnosis ``d`` as text, or as one ``doctor`` document (``format``, ``kind``,
    then the trace, findings, plan and predicted verdict), with ``--fix`` too."""
    if args.output == "json":
        _print_json(args.run, {"format": JSON_FORMAT, "kind": "doctor", **d.to_dict()})
    else:
        print(d.render())


def _doctor_iptables_mode(args: argparse.Namespace) -> str | None:
    """The flavour the spec (``-f``) gives the iptables backend (``backends.iptables.mode``:
    ``nft`` or ``legacy``), which its forward accept goes into, as ``apply -f SPEC``'s does;
    None: none given (``auto``: the doctor predicts it from the captured ``-save`` texts,
    as the backend does)."""
    if args.spec is None:
        return None
    mode = spec_backend_options(_spec(args), "iptables").get("mode")
    return mode if mode in ("nft", "legacy") else None


def _doctor_cluster(state: Any, args: argparse.Namespace) -> Any:
    """``state`` (a NodeState) with the spec's cluster CIDRs and ``--service-cidr``."""
    pods, services = [], list(args.service_cidr)
    if args.spec is not None:
        cluster = _spec(args).cluster
        pods, services = list(cluster.pod_cidrs), [*cluster.service_cidrs, *services]
    try:
        return state.with_cluster(pod_cidrs=pods, service_cidrs=services)
    except ValueError as exc:
        raise K3snetError(f"--service-cidr: {exc}") from exc


K3S_KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"


def _doctor_calico(state: Any, args: argparse.Namespace) -> Any:
    """``state`` with Calico's IP pools read through the calico backend, when a kube
    config is given (``--kubeconfig``) or, on a live node, available."""
    from k3snet.doctor.cni import read_calico_pools  # noqa: PLC0415 - doctor users only

    kubeconfig, explicit = args.kubeconfig, args.kubeconfig is not None
    if not explicit:
        if args.state is not None:
            return state  # offline: the bundle's calico-ippools.json, if any
        if not (os.environ.get("KUBECONFIG") or os.environ.get("KUBERNETES_SERVICE_HOST")):
            if not Path(K3S_KUBECONFIG).is_file():
                return state
            kubeconfig = K3S_KUBECONFIG
    found = read_calico_pools(kubeconfig=kubeconfig, context=args.context)
    if found.pools is not None:
        return state.with_calico_pools(found.pools, "the calico backend",
                                       unreadable=found.unreadable)
    if explicit or not (found.why or "").startswith("no calico backend"):
        return attrs.evolve(state, missing={**state.missing, "calico-ippools.json": found.why})
    return state


def _doctor_exit(verdict: str) -> int:
    """0 the flow reaches, 3 blocked, 4 unknown (``verdict`` is a :class:`Verdict`)."""
    return {"reaches": EXIT_OK, "blocked": EXIT_BLOCKED}.get(str(verdict), EXIT_UNKNOWN)


def _destination(text: str) -> tuple[str, int | None]:
    """``ADDR``, ``ADDR:PORT`` or ``[ADDR]:PORT`` -> (address, port)."""
    address, sep, port = text, "", ""
    if text.startswith("["):
        address, _, rest = text[1:].partition("]")
        sep, port = rest[:1], rest[1:]
        if sep not in ("", ":"):  # `[ADDR]80`: not the [ADDR]:PORT it was meant to be
            port = ""
    elif text.count(":") == 1:
        address, sep, port = text.partition(":")
    # ASCII digits only: str.isdigit() takes "²" (which int() refuses) and other
    # scripts' digits; "ADDR:" with nothing after it is a port left out by mistake.
    if sep and not (port.isascii() and port.isdigit()):
        raise K3snetError(f"--to {text!r}: the port must be a number")
    return address, int(port) if port else None


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        spec = _spec(args)
        check_backend_options(spec, backend_options, source=str(args.spec), paths=path_options,
                              values=option_problems, kinds=declared_capabilities)
        compile_spec(spec)
    except SpecError as exc:
        if not _json(args):
            raise
        print(f"k3snet: error: {exc}", file=sys.stderr)
        _print_validation(args, exc.problems)
        return EXIT_ERROR
    if _json(args):
        _print_validation(args, (), len(spec.destinations))
    else:
        print(f"{args.spec}: valid ({len(spec.destinations)} destination(s))")
    return EXIT_OK


def _print_validation(args: argparse.Namespace, problems: Sequence[Problem],
                      destinations: int | None = None) -> None:
    """A ``validation`` document (schema ``validation``) on stdout."""
    _print_json(args.run, {"format": JSON_FORMAT, "kind": "validation", "spec": str(args.spec),
                 "valid": not problems, "destinations": destinations,
                 "problems": [{"path": p.path, "message": p.message} for p in problems]})


def cmd_explain(args: argparse.Namespace) -> int:
    from k3snet.errors import UnknownFieldError  # noqa: PLC0415 - explain only
    from k3snet.spec.explain import explain  # noqa: PLC0415 - builds the schema on first use
    from k3snet.spec.json_schema import dumps, spec_json_schema  # noqa: PLC0415

    if args.schema:
        print(dumps(spec_json_schema()), end="")
        return EXIT_OK
    declared = None
    defaults: dict[str, dict[str, str]] = {}
    if args.path.split(".", 1)[0].startswith("backends"):  # loads the backends' modules
        declared = {}
        for name in available_backends():
            with contextlib.suppress(K3snetError):  # cannot be loaded here: not listed
                declared[name] = backend_options(name, resolve=True)
                defaults[name] = option_defaults(name)
    try:
        print(explain(args.path, backends=declared, defaults=defaults))
    except UnknownFieldError as exc:
        print(f"k3snet explain: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def cmd_connectivity(args: argparse.Namespace) -> int:
    spec = _spec(args)
    if spec.connectivity_test is None:
        print(f"k3snet: error: {args.spec} has no connectivityTest", file=sys.stderr)
        return EXIT_ERROR
    from k3snet.kube import make_api_client  # noqa: PLC0415 - k3snet[kube] only
    from k3snet.render.manifests import read_connectivity_result  # noqa: PLC0415

    client, owned = make_api_client(kubeconfig=args.kubeconfig, context=args.context)
    try:
        from kubernetes import client as kube  # noqa: PLC0415 - k3snet[kube] only

        result = read_connectivity_result(kube.BatchV1Api(client), kube.CoreV1Api(client),
                                          spec.connectivity_test.namespace)
    finally:
        if owned:
            client.close()
    print(result.message)
    if result.succeeded is None:
        return EXIT_RUNNING
    return EXIT_OK if result.succeeded else EXIT_TEST_FAILED


def cmd_render(args: argparse.Namespace) -> int:
    for flag, given in (("--backend", args.backend), ("--backend-opt", args.backend_opt)):
        problem = _render_backend_problem(args) if given else None
        if problem is not None:
            print(f"k3snet render {args.what}: error: {flag} {' '.join(given)}: "
                  f"{problem}", file=sys.stderr)
            return EXIT_USAGE
    spec = _spec(args)
    problem = None if args.backend else _spec_backends_problem(spec, args.what)
    if problem is not None:
        print(f"k3snet render {args.what}: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    files = RENDERERS[args.what](spec, args)
    if args.out is None:
        for name, text in files.items():
            if len(files) > 1:
                print(f"# --- {name}")
            print(text, end="" if text.endswith("\n") else "\n")
        return EXIT_OK
    # Judged before anything is made in it; made writable by its owner only (0755).
    refuse_foreign_output(args.out)
    make_directory(args.out, 0o755)
    secret_manifests = getattr(args, "secret_manifests", False)  # set by _render_manifests
    for name, text in files.items():
        # A networkd drop-in is a file in a directory of its own (DEV.network.d/), made
        # below the one given, never through another user's link.
        private = name in PRIVATE_FILES or _holds_secret(name, text) or (
            name == _MANIFESTS_FILE and secret_manifests)
        print(write_output_in(args.out, name, text, executable=name in EXECUTABLE_FILES,
                              private=private))
    if args.what == "networkd":  # the one boot file named after what it holds
        for path in _remove_earlier_networkd(args.out, files):
            print(f"k3snet: removed {path} (an earlier render's, which this one does not "
                  "write: networkd would go on reading it)", file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------- renderers

_RENDERED_BY = {"iptables": "iptables", "nftables": "nftables", "ifupdown": "netlink",
                "netplan": "netlink", "networkd": "netlink", "networkmanager": "netlink",
                "sysctl": "netlink"}
"""The backend that manages, at run time, what each boot file holds."""

def _render_backend_problem(args: argparse.Namespace) -> str | None:
    """Why ``render``'s ``--backend`` flags cannot say what the file holds, or ``None``."""
    rendered_by = _RENDERED_BY.get(args.what)
    if rendered_by is None:
        return "the manifests' agent uses the spec's backends"
    if not args.backend:
        return None  # only --backend-opt: those of other backends are not the file's
    entries = [entry.partition(":") for entry in args.backend]
    if rendered_by not in (name for name, _, _ in entries):
        return f"the file is for the {rendered_by} backend"
    # A misspelt kind (nftables:forwrad) left a file holding nothing, that deletes
    # k3snet's table at boot; plan and apply refuse it too.
    known = frozenset(getattr(load_backend(rendered_by), "capabilities", ()))  # class-level
    wrong = sorted({kind for name, _, kinds in entries if name == rendered_by and kinds
                    for kind in kinds.split(",")} - known)
    if wrong:
        return (f"{rendered_by} manages {', '.join(sorted(known))}, not "
                f"{', '.join(map(repr, wrong))}")
    return None


def _spec_backends_problem(spec: Spec, what: str) -> str | None:
    """Why the spec's ``backends`` (with no ``--backend`` flag) leave out the backend of
    the file ``what``, or ``None``: plan, apply and the agent would run without it, so
    the file's rules, routes or sysctls would belong to no backend in use."""
    rendered_by = _RENDERED_BY.get(what)
    if rendered_by is None or not spec.backends or rendered_by in spec.backends:
        return None
    return (f"the spec's backends ({', '.join(spec.backends)}) do not include "
            f"{rendered_by}, which manages what this file holds: loaded at boot, it would "
            "belong to no backend plan, apply and the agent use, never updated nor "
            "removed. Render the file of the backend the spec names, or give the "
            "--backend flags plan and apply are given")


def _file_options(spec: Spec, args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Backend ``name``'s options that shape a boot file: the spec's, overridden by
    ``--backend-opt`` as in plan and apply (the file then holds what that backend owns)."""
    explicit = _explicit_options(name, args)
    refuse_undeclared(name, explicit)  # a misspelt one would leave the file as the spec has it
    return {**spec_backend_options(spec, name), **explicit}


def _rendered_state(spec: Spec, args: argparse.Namespace) -> State:
    """The compiled spec, limited to the kinds ``--backend NAME:KINDS`` gives the file's
    backend, as plan and apply split the work (loaded beside the other backend's file,
    a kind in both would belong to no backend in use: never updated nor removed)."""
    state = compile_spec(spec)
    # Every flag naming the backend counts, as plan and apply take `nftables:nat
    # --backend nftables:forward`; one without kinds gives it all of them.
    given = [kinds for name, _, kinds in (entry.partition(":") for entry in args.backend)
             if name == _RENDERED_BY[args.what]]
    if not given or not all(given):
        return state
    return state.only(kind for kinds in given for kind in kinds.split(","))


def _render_iptables(spec: Spec, args: argparse.Namespace) -> dict[str, str]:
    from k3snet.render.iptables import RULES_FILES, render_iptables_save  # noqa: PLC0415 - lazy

    # The flavour the backend reads (the spec's `backends.iptables.mode`): loaded into
    # the other one, the chains are not seen and the backend adds a second copy.
    mode = _file_options(spec, args, "iptables").get("mode", "auto")
    state = _rendered_state(spec, args)
    return {name: render_iptables_save(state, family, mode=mode)
            for family, name in RULES_FILES.items()}


def _render_nftables(spec: Spec, args: argparse.Namespace) -> dict[str, str]:
    from k3snet.render.nftables import render_nftables_conf  # noqa: PLC0415 - lazy

    # The table the nftables backend will own after the boot: the spec's table and
    # family, or the file loads a table the backend then reads as another program's
    # (its rules kept for ever beside the backend's own).
    options = _file_options(spec, args, "nftables")
    layout = {key: options[key] for key in ("table", "family") if key in options}
    return {"k3snet.nft": render_nftables_conf(_rendered_state(spec, args), **layout)}


def _boot_routes(spec: Spec, args: argparse.Namespace) -> State:
    """The spec compiled for a boot file of routes (:func:`_rendered_state`): marked with
    the route protocol the spec gives the netlink backend, which owns only that
    protocol's routes (as the nftables file takes the spec's table)."""
    from k3snet.backends.netlink.backend import check_route_protocol  # noqa: PLC0415 - lazy

    # One the backend refuses to own (0..4, dhcp's 16, a name) would bring the routes up
    # at boot as another program's, or as 211 beside a spec whose plan fails.
    protocol = check_route_protocol(
        _file_options(spec, args, "netlink").get("protocol", K3SNET_ROUTE_PROTOCOL))
    return with_route_protocol(_rendered_state(spec, args), protocol)


IFUPDOWN_FILE = "k3snet-routes"
IFUPDOWN_INTERFACES = Path("/etc/network/interfaces")
"""The file ifupdown reads first; ``render ifupdown -o`` judges where it reads the file
written (the tests point it elsewhere)."""
MAX_IFUPDOWN_BYTES = 1 << 20


def _render_ifupdown(spec: Spec, args: argparse.Namespace) -> dict[str, str]:
    from k3snet.render.routes import render_ifupdown  # noqa: PLC0415 - lazy

    state = _boot_routes(spec, args)
    text = render_ifupdown(state)  # its own refusals first (a route without device)
    if args.out is not None:
        devices = {str(o.device) for o in state.owned if isinstance(o, Route)}
        _refuse_ifupdown_order(IFUPDOWN_INTERFACES, args.out / IFUPDOWN_FILE, devices)
    return {IFUPDOWN_FILE: text}


def _refuse_ifupdown_order(interfaces: Path, target: Path, devices: set[str]) -> None:
    """Refuse ``target`` (where ``render ifupdown -o`` writes) when ifupdown, reading
    ``interfaces`` and what it sources, reads it before the ``iface`` stanza of one of
    ``devices`` that configures the device: ifupdown runs an interface's stanzas in the
    order it read them and stops at the first that fails, and k3snet's ``up ip route add
    ... via GW`` fails until the device has its address (Debian sources
    ``interfaces.d/*`` on its first line)."""
    # ("iface", DEV, file, line) and ("ours", "", the file sourcing target, line)
    read: list[tuple[str, str, Path, int]] = []
    _ifupdown_read(interfaces, target.resolve(), read, set())
    ours = next(((file, line) for kind, _, file, line in read if kind == "ours"), None)
    if ours is None:
        return
    for device in sorted(devices):
        stanzas = [(file, line) for kind, name, file, line in read
                   if kind == "iface" and name == device]
        if stanzas and read.index(("ours", "", *ours)) < read.index(
                ("iface", device, *stanzas[0])):
            where = "" if stanzas[0][0] == ours[0] else f" of {stanzas[0][0]}"
            raise ModelError(
                f"{ours[0]} reads {target} (line {ours[1]}) before {device}'s own "
                f"stanza (line {stanzas[0][1]}{where}): ifupdown runs {device}'s stanzas in "
                f"that order and stops at the first that fails, and k3snet's `up ip route "
                f"add ... via GW` fails until {device} has its address, so {device}'s own "
                f"stanza would never run at boot ({device} without its address). Write "
                f"the file elsewhere (/etc/network) and source it at the end of {interfaces}")


def _ifupdown_read(file: Path, target: Path, read: list[tuple[str, str, Path, int]],
                   seen: set[Path]) -> None:
    """What ifupdown reads of ``file``, in order, into ``read``: each ``iface`` stanza's
    device, and where a ``source`` or ``source-directory`` line reads ``target`` (that
    line of ``file``). A file is read once, as ifupdown's config.c does."""
    if file.resolve() in seen:  # resolved: links naming one file in turn end too
        return
    seen.add(file.resolve())
    try:
        text = read_input(file, MAX_IFUPDOWN_BYTES).decode("utf-8", "replace")
    except OSError:
        return  # ifupdown warns and goes on
    for number, line in _ifupdown_lines(text):
        words = line.split()
        if not words:
            continue
        # config.c: "source" exactly, and any word starting with "source-dir"
        # (strlmatch); the rest of the line is one wordexp pattern, only its first
        # word relative to the file's directory (ifup's own, /, for the others).
        kind = "source" if words[0] == "source" else (
            "source-directory" if words[0].startswith("source-dir") else None)
        if kind is not None:
            rest = line.split(None, 1)[1] if len(words) > 1 else ""
            patterns = (rest if rest.startswith("/") else f"{file.parent}/{rest}").split()
            for path in (p for pattern in patterns
                         for p in _ifupdown_sourced(kind, pattern, Path("/"), target)):
                if path.resolve() == target:
                    read.append(("ours", "", file, number))
                else:
                    _ifupdown_read(path, target, read, seen)
        elif words[0] == "iface" and len(words) > 1:
            read.append(("iface", words[1], file, number))


def _ifupdown_lines(text: str) -> Iterator[tuple[int, str]]:
    """The lines of an interfaces file as ifupdown's config.c (get_line) reads them, each
    with the number of its first physical line: leading blanks dropped, a line starting
    with ``#`` skipped (a backslash ending it too continues nothing), one ending with a
    backslash joined to the next (which is then no comment, whatever it starts with)."""
    physical = text.split("\n")
    index = 0
    while index < len(physical):
        number, line = index + 1, physical[index].lstrip()
        index += 1
        if line.startswith("#"):
            continue
        while line.endswith("\\") and index < len(physical):
            line = line[:-1] + physical[index]
            index += 1
        yield number, line.rstrip("\\")


def _ifupdown_sourced(keyword: str, pattern: str, base: Path, target: Path) -> list[Path]:
    """The files a ``source`` (globs) or ``source-directory`` (names of letters, digits,
    ``_`` and ``-``) line's ``pattern`` reads, in order, a relative one of ``base``;
    ``target``, not written yet, among them where it would be."""
    import fnmatch  # noqa: PLC0415 - only render ifupdown -o reads interfaces files
    import glob  # noqa: PLC0415
    import re  # noqa: PLC0415

    pattern = pattern if pattern.startswith("/") else f"{base}/{pattern}"
    if keyword == "source":
        paths = set(glob.glob(pattern))
        if fnmatch.fnmatchcase(target.name, os.path.basename(pattern)) and any(
                Path(d).resolve() == target.parent for d in glob.glob(os.path.dirname(pattern))):
            paths.add(str(target))
        return [Path(p) for p in sorted(paths)]
    found: list[Path] = []
    for directory in map(Path, sorted(glob.glob(pattern))):
        names = {target.name} if directory.resolve() == target.parent else set()
        with contextlib.suppress(OSError):
            names |= set(os.listdir(directory))
        found += [directory / name for name in sorted(names)
                  if re.fullmatch(r"[A-Za-z0-9_-]+", name)]
    return found


NETPLAN_FILE = "90-k3snet.yaml"
_NETPLAN_DIRS = (Path("/lib/netplan"), Path("/etc/netplan"), Path("/run/netplan"))
"""netplan's directories, in the order a file of the same name overrides another's."""
MAX_NETPLAN_BYTES = 1 << 20


PRIVATE_FILES = frozenset({NETPLAN_FILE})
"""Rendered files written readable by their owner only: netplan (0.106 and later) warns
at every run, boot included, about a file of /etc/netplan others can read."""


NETWORKMANAGER_FILE = "90-k3snet-routes"
EXECUTABLE_FILES = frozenset({NETWORKMANAGER_FILE})
"""Rendered files that are scripts: written executable (NetworkManager runs no other)."""


def _render_networkmanager(spec: Spec, args: argparse.Namespace) -> dict[str, str]:
    from k3snet.render.routes import render_networkmanager  # noqa: PLC0415 - lazy

    return {NETWORKMANAGER_FILE: render_networkmanager(_boot_routes(spec, args))}


def _render_netplan(spec: Spec, args: argparse.Namespace) -> dict[str, str]:
    from k3snet.render.routes import (  # noqa: PLC0415 - lazy
        netplan_placement,
        render_netplan,
    )

    state = _rendered_state(spec, args)
    ids: dict[str, str] = {}
    for entry in args.netplan_id:
        device, _, netplan_id = entry.partition("=")
        if ids.setdefault(device, netplan_id) != netplan_id:
            raise ModelError(f"--netplan-id {device}= is given twice, with {ids[device]} "
                             f"and {netplan_id}: one definition per device")
    devices = {str(o.device) for o in state.owned if isinstance(o, Route) and o.device}
    for device in sorted(set(ids) - devices):
        print(f"k3snet: warning: --netplan-id {device}={ids[device]}: no route of the spec "
              f"goes through {device}; ignored", file=sys.stderr)
    documents = _netplan_documents(args.out)
    # In /etc/netplan, or beside other netplan files, those read are the node's: a device
    # none configures is refused. A staging directory holding none cannot tell.
    every_file = args.out is not None and (bool(documents) or _netplan_etc(args.out))
    families: dict[str, set[int]] = {}
    host_scoped: set[str] = set()
    for route in state.owned:
        if isinstance(route, Route) and route.device:
            families.setdefault(str(route.device), set()).add(route.family)
            if route.scope == "host":
                host_scoped.add(str(route.device))
    sections, placed = netplan_placement(documents, devices, ids=ids, every_file=every_file,
                                         route_families=families, host_scoped=host_scoped)
    if args.out is not None and not every_file:
        for device in sorted(devices - set(placed)):
            print(f"k3snet: warning: no netplan file in {args.out} configures {device}: "
                  f"installed where none does, the file makes netplan configure {device} "
                  "with the routes alone at the next boot (no address, no DHCP); written "
                  "with -o /etc/netplan, that is refused", file=sys.stderr)
    return {NETPLAN_FILE: render_netplan(state, sections=sections, ids=placed)}


def _netplan_etc(out: Path) -> bool:
    """Whether ``render netplan -o OUT`` writes where netplan reads: ``/etc/netplan``, or
    ``/run/netplan`` or ``/lib/netplan``, whose files netplan reads with /etc's."""
    return out.resolve() in {directory.resolve() for directory in _NETPLAN_DIRS}


_NETPLAN_PLACES = ("lib", "etc", "run")


def _netplan_dirs(out: Path) -> tuple[tuple[Path, ...], int] | None:
    """netplan's directories whose files it reads with those of ``out``, and ``out``'s
    place among them: the node's three, ``out`` being /lib, /etc or /run/netplan; or
    those of ROOT, ``out`` being ROOT/etc/netplan (or lib/: an image's root staged in
    ROOT), as ``netplan generate --root-dir ROOT`` and the node booted from it read them
    (the node's are not read then: they are the build host's). ROOT/run/netplan is not
    read unless ``out`` is there: /run is empty at boot (a new tmpfs), and a chroot's
    build often binds the build host's /run there. ``None`` for another directory: its
    files alone are read."""
    resolved = [directory.resolve() for directory in _NETPLAN_DIRS]
    if out.resolve() in resolved:
        return _NETPLAN_DIRS, resolved.index(out.resolve())
    where = Path(os.path.abspath(out))
    if where.name == "netplan" and where.parent.name in _NETPLAN_PLACES:
        places = _NETPLAN_PLACES if where.parent.name == "run" else _NETPLAN_PLACES[:2]
        root = where.parent.parent
        return (tuple(root / place / "netplan" for place in places),
                places.index(where.parent.name))
    return None


def _refuse_netplan_shadow(out: Path) -> None:
    """Refuse writing k3snet's netplan file into one of netplan's directories when a
    later one holds a file of its name, which netplan reads in its place."""
    found = _netplan_dirs(out)
    if found is None:
        return
    dirs, place = found
    for shadow in (directory / NETPLAN_FILE for directory in dirs[place + 1:]):
        if shadow.is_symlink() and not shadow.exists():
            # (exists() is False for a loop of links too: netplan cannot stat it either)
            try:
                shadow.stat()
                leads = "which does not exist"
            except OSError as exc:
                leads = ("a loop of links" if exc.errno == errno.ELOOP else
                         "which does not exist")
            raise ModelError(
                f"{shadow} is a link to {os.readlink(shadow)!r}, {leads}: "
                f"netplan reads it in place of {out / NETPLAN_FILE} (a file of run/netplan "
                "replaces etc/'s of the same name, etc/'s lib/'s) and fails for the whole "
                "node (\"Cannot stat\"), every definition with it. Remove the link, or "
                "write there")
        if shadow.exists():
            raise ModelError(
                f"{shadow} replaces {out / NETPLAN_FILE} for netplan (a file of run/netplan "
                "replaces etc/'s of the same name, etc/'s lib/'s): the routes written there "
                f"would not be read. Remove {shadow}, or write there")


class _NetplanNode(Exception):  # noqa: N818 - caught below, never raised further
    """A node of a netplan file k3snet refuses: ``args`` are its key and the mark (line,
    column) it is named by."""

    def said(self, path: Path) -> str:
        """What is wrong, of the file ``path``."""
        raise NotImplementedError

    def where(self) -> str:
        """``line L, column C`` of the node."""
        mark = self.args[1]
        return f"line {mark.line + 1}, column {mark.column + 1}"


class _NetplanKeyTwice(_NetplanNode):
    """A key given twice in one mapping of a netplan file, named at its second one."""

    def said(self, path: Path) -> str:
        return (f"netplan file {path} gives {str(self.args[0])[:80]!r} twice in one mapping "
                f"({self.where()}): netplan reads both, one after the other (an id's two "
                "definitions make one, a renderer of either with it), and k3snet would read "
                "the last alone. Give the key once")


class _NetplanNoMapping(_NetplanNode):
    """A netplan file's ``network:``, section or definition that is not a mapping, named
    at its value."""

    def said(self, path: Path) -> str:
        return (f"netplan file {path}: {str(self.args[0])[:80]!r} ({self.where()}) is not a "
                "mapping (netplan refuses it as well: \"expected mapping\")")


def _first_document(loader: Any, deepest: int) -> object:
    """The first YAML document ``loader`` (a PyYAML loader over a text) reads, ``None``
    for none: netplan reads a file's first document alone (libyaml's
    ``yaml_parser_load``), where ``yaml.load`` refused a second one. One nested deeper
    than ``deepest`` is a :class:`RecursionError`; then a key k3snet reads given twice in
    one mapping, or a definition that is no mapping, is refused
    (:func:`_refuse_netplan_nodes`)."""
    from k3snet._gojson import nests_deeper  # noqa: PLC0415

    try:
        if not loader.check_node():
            return None
        node = loader.get_node()
        document = loader.construct_document(node)
        if nests_deeper(document, deepest, shared=True):  # (aliases share)
            raise RecursionError
        _refuse_netplan_nodes(node, 0)
        return document
    finally:
        loader.dispose()


_NETPLAN_READ: tuple[frozenset[str] | None, ...] = (
    frozenset({"network"}),  # the document
    frozenset({"ethernets", "bonds", "bridges", "vlans", "tunnels", "vrfs", "wifis",
               "modems", "dummy-devices", "virtual-ethernets"}),  # network:'s sections
    None,  # a section: every id, and its renderer (given to the ids after it)
    frozenset({"match", "addresses"}),  # an id's
)
"""The keys of a netplan file k3snet reads whose two values netplan merges, by depth
(``None``: every key): mappings, netplan's addresses (appended), and a section's
renderer, which goes to the definitions after each. Of a text key k3snet reads (a
renderer of network: or of a definition, dhcp4, dhcp6, set-name, match's name) netplan
keeps the last, as PyYAML does: given twice, it is read as netplan reads it."""


def _refuse_netplan_nodes(node: object, depth: int) -> None:
    """Raise :class:`_NetplanKeyTwice` for a key k3snet reads given twice in one mapping
    of the YAML ``node`` (at ``depth`` of :data:`_NETPLAN_READ`) whose values netplan
    merges (an id's two definitions make one, a renderer of either with it), where
    PyYAML keeps the last alone. Another key given twice (two ``nameservers:``, two
    ``dhcp4:``), whose last netplan keeps or which k3snet never reads, is let be. Raise
    :class:`_NetplanNoMapping` for a ``network:``, section or definition that is not a
    mapping, which netplan refuses ("expected mapping"), named by its line here."""
    import yaml  # noqa: PLC0415 - k3snet[cli], imported by the caller already

    if depth >= len(_NETPLAN_READ) or not isinstance(node, yaml.MappingNode):
        return
    read, seen = _NETPLAN_READ[depth], set()
    for key, value in node.value:
        name = key.value if isinstance(key, yaml.ScalarNode) else None
        if name is None or (read is not None and name not in read):
            continue
        if name in seen:
            raise _NetplanKeyTwice(name, key.start_mark)
        seen.add(name)
        if name == "renderer":  # a section's: no mapping
            continue
        if depth < 3 and not isinstance(value, yaml.MappingNode):
            raise _NetplanNoMapping(name, value.start_mark)  # named by line, as netplan does
        _refuse_netplan_nodes(value, depth + 1)


def _dev_null_link(path: Path) -> bool:
    """Whether ``path`` is a link to /dev/null (through other links too), netplan's
    empty file. A loop of links (which ``Path.resolve`` raised ``RuntimeError`` for, an
    internal error) or a dangling link is not: reading it says what is wrong, as netplan
    does ("Cannot stat")."""
    try:
        return path.is_symlink() and path.resolve(strict=True) == Path("/dev/null")
    except (OSError, RuntimeError):
        return False


def _netplan_documents(out: Path | None) -> dict[str, object]:
    """The other netplan files beside the one ``render netplan -o OUT`` writes, parsed:
    those of OUT, and for any of /lib/netplan, /etc/netplan and /run/netplan (or of a
    staged root's: :func:`_netplan_dirs`) those of all three as netplan reads them (a
    name in a later directory replaces it in an earlier one; a hidden ``.NAME.yaml``,
    which netplan's glob leaves out, is not read; a link to /dev/null, which netplan reads
    as an empty file, masks the file of its name). Nothing when printing: the file's
    place is then unknown."""
    if out is None:
        return {}
    paths: dict[str, Path] = {}
    found = _netplan_dirs(out)
    for directory in (out,) if found is None else found[0]:
        if directory.is_dir():
            paths.update((p.name, p) for p in sorted(directory.glob("*.yaml"))
                         if not p.name.startswith("."))
    paths.pop(NETPLAN_FILE, None)  # the file this replaces
    _refuse_netplan_shadow(out)
    # A link to /dev/null masks the file of its name in an earlier directory: netplan reads
    # it as an empty file (a device, read_input refuses to open it).
    paths = {name: path for name, path in paths.items() if not _dev_null_link(path)}
    if not paths:
        return {}
    try:
        import yaml  # noqa: PLC0415 - k3snet[cli]
    except ImportError as exc:  # printing, or no other file, needs none
        raise yaml_missing(f"reading the netplan files beside {out}", exc) from exc
    from k3snet._gojson import MAX_NESTING  # noqa: PLC0415

    documents: dict[str, object] = {}
    for name, path in sorted(paths.items()):
        text = ""
        too_deep = (f"netplan file {path} nests deeper than {MAX_NESTING} levels; k3snet does "
                    "not read it")
        try:
            text = read_input(path, MAX_NETPLAN_BYTES).decode("utf-8")
            # netplan reads every scalar as text (its own booleans in any case, quoted or
            # not: dhcp6: "true", y): so does BaseLoader, where safe_load made a bool of
            # `on:` and a float of `1e3:` (ids), and a string of y and "true".
            documents[name] = _first_document(yaml.BaseLoader(text), MAX_NESTING)
        except RecursionError:  # (Python's parser, or deeper than the placement's walk)
            raise ModelError(too_deep) from None
        except OSError as exc:
            raise ModelError(f"cannot read the netplan file {path}: {input_problem(exc)}") \
                from None
        except UnicodeDecodeError as exc:
            raise ModelError(f"netplan file {path} is not UTF-8 text (byte {exc.start}: "
                             f"{exc.reason})") from None
        except _NetplanNode as exc:
            raise ModelError(exc.said(path)) from None
        except yaml.YAMLError as exc:
            raise ModelError(f"netplan file {path} is not YAML netplan reads: "
                             f"{yaml_problem(exc, text)[:300]}") from None
    return documents


_NETWORKD_DIRS = (Path("/lib/systemd/network"), Path("/usr/lib/systemd/network"),
                  Path("/usr/local/lib/systemd/network"), Path("/run/systemd/network"),
                  Path("/etc/systemd/network"))
"""Where systemd-networkd reads ``.network`` files, a name in a later one replacing it in
an earlier one (``/etc`` wins)."""
MAX_NETWORK_FILE_BYTES = 1 << 20
_NETWORKD_OWN = "# Generated by k3snet"


def _networkd_others(out: Path | None) -> dict[str, str]:
    """The other ``.network`` files beside those ``render networkd -o OUT`` writes (name ->
    text): those of OUT, and for /etc/systemd/network those of every directory networkd
    reads (:data:`_NETWORKD_DIRS`: Flatcar's /usr/lib/systemd/network/zz-default.network,
    netplan's /run/systemd/network/10-netplan-*.network). Files k3snet wrote are left out,
    and so are masked ones (links to /dev/null). Nothing when printing: the files' place
    is then unknown."""
    if out is None:
        return {}
    etc = out.resolve() == _NETWORKD_DIRS[-1]
    paths: dict[str, Path] = {}
    for directory in (_NETWORKD_DIRS if etc else (out,)):
        if directory.is_dir():
            paths.update((p.name, p) for p in sorted(directory.glob("*.network"))
                         if not p.name.startswith("."))
    others: dict[str, str] = {}
    for name, path in sorted(paths.items()):
        if path.is_symlink() and (path.resolve() == Path("/dev/null") or not path.exists()):
            continue  # masked, or a dangling link: networkd reads no file of that name
        try:
            text = read_input(path, MAX_NETWORK_FILE_BYTES).decode("utf-8", "replace")
        except OSError as exc:
            raise ModelError(f"cannot read the networkd file {path}: {input_problem(exc)}") \
                from None
        if not text.startswith(_NETWORKD_OWN):  # an earlier render's: this one replaces it
            others[name] = text
    return others


_NETWORKD_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NETWORKD_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _remove_earlier_networkd(out: Path, written: Mapping[str, str]) -> list[Path]:
    """Remove k3snet's files of an earlier ``render networkd -o OUT`` that ``written`` (this
    render's, by name below OUT) leaves out: a ``90-k3snet-DEV.network`` or a
    ``FILE.network.d/90-k3snet-routes.conf`` starting with k3snet's mark. Left there,
    networkd went on reading them at boot: a drop-in of a file since named no longer (a
    ``Name=*`` file, its routes on every link) beside the new one, a device's file of
    routes the spec no longer has. Links are neither followed nor removed, nor read
    (each directory is opened once, the names looked up in it)."""
    removed: list[Path] = []
    top = os.open(out, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for entry in sorted(os.listdir(top)):
            if entry.startswith("90-k3snet-") and entry.endswith(".network"):
                # Kept as the parent of this render's drop-in (--network-file named it).
                parent = f"{entry}.d/90-k3snet-routes.conf" in written
                if entry not in written and not parent and _networkd_own_file(top, entry):
                    os.unlink(entry, dir_fd=top)
                    removed.append(out / entry)
                continue
            name = f"{entry}/90-k3snet-routes.conf"
            if not entry.endswith(".network.d") or entry.startswith(".") or name in written:
                continue
            try:
                below = os.open(entry, _NETWORKD_DIR_FLAGS, dir_fd=top)
            except OSError:  # a link, or no directory
                continue
            try:
                if _networkd_own_file(below, "90-k3snet-routes.conf"):
                    os.unlink("90-k3snet-routes.conf", dir_fd=below)
                    removed.append(out / name)
            finally:
                os.close(below)
    finally:
        os.close(top)
    return removed


def _networkd_own_file(directory: int, name: str) -> bool:
    """Whether ``name`` in the directory open as ``directory`` is a regular file (no
    link) whose text starts with k3snet's mark."""
    try:
        fd = os.open(name, _NETWORKD_FILE_FLAGS, dir_fd=directory)
    except OSError:
        return False
    try:
        return (stat.S_ISREG(os.fstat(fd).st_mode)
                and os.read(fd, len(_NETWORKD_OWN)) == _NETWORKD_OWN.encode())
    except OSError:
        return False
    finally:
        os.close(fd)


def _render_networkd(spec: Spec, args: argparse.Namespace) -> dict[str, str]:
    from k3snet.render.routes import networkd_doubts, render_networkd  # noqa: PLC0415 - lazy

    state = _boot_routes(spec, args)
    parents: dict[str, str] = {}
    for entry in args.network_file:
        device, _, parent = entry.partition("=")
        if parents.get(device, parent) != parent:
            print(f"k3snet: warning: --network-file {device}= given twice; the last, "
                  f"{parent}, is used", file=sys.stderr)
        parents[device] = parent
    # A misspelt device leaves its routes in 90-k3snet-DEV.network, the file networkd
    # ignores for a device another file configures: said, not silently dropped.
    devices = sorted({str(o.device) for o in state.owned if isinstance(o, Route)})
    for device in sorted(set(parents) - set(devices)):
        print(f"k3snet: warning: --network-file {device}={parents[device]}: no route of the "
              f"spec goes through {device} (its devices: {', '.join(devices) or 'none'}); "
              "ignored", file=sys.stderr)
    others = _networkd_others(args.out)
    for device in sorted(set(parents) & set(devices)):
        if args.out is not None and parents[device] not in others:
            print(f"k3snet: warning: --network-file {device}={parents[device]}: no such "
                  f".network file in {args.out}: networkd reads no drop-in without its "
                  "file, so the routes come up only once it is there", file=sys.stderr)
    files = dict(render_networkd(state, network_files=parents, others=others))
    for doubt in networkd_doubts(state, network_files=parents, others=others):
        print(f"k3snet: warning: {printable(doubt)}", file=sys.stderr)  # quotes others' files
    return files


def _render_sysctl(spec: Spec, args: argparse.Namespace) -> dict[str, str]:
    from k3snet.render.sysctl import (  # noqa: PLC0415 - lazy
        advertisements_ignored_at_boot,
        render_sysctl_d,
    )

    state = _rendered_state(spec, args)
    # The netlink backend refuses IPv6 forwarding while it would drop a default route
    # learned from router advertisements; at boot the file turns it on before there is
    # one to check, and the kernel then ignores the advertisements (accept_ra 1).
    if advertisements_ignored_at_boot(state):
        print("k3snet: warning: the file turns IPv6 forwarding on and gives no interface "
              "accept_ra 2: after a reboot, a node whose kernel learns its IPv6 default "
              "route from router advertisements (no networkd or NetworkManager) comes up "
              "without it; add net.ipv6.conf.IF.accept_ra: 2 to the spec's sysctls for "
              "that interface (see the file's comment)", file=sys.stderr)
    if args.out is not None:
        wanted = {o.name: o.value for o in state.owned if isinstance(o, Sysctl)}
        for later in _sysctl_overrides(args.out, wanted):
            print(f"k3snet: warning: {printable(later)}", file=sys.stderr)  # another's line
    return {SYSCTL_FILE: render_sysctl_d(state)}


SYSCTL_FILE = "90-k3snet.conf"
_MANIFESTS_FILE = "k3snet.yaml"
_SYSCTL_DIRS = (Path("/lib/sysctl.d"), Path("/usr/lib/sysctl.d"),
                Path("/usr/local/lib/sysctl.d"), Path("/run/sysctl.d"), Path("/etc/sysctl.d"))
"""Where systemd-sysctl reads ``*.conf`` files, a name in a later one replacing it in an
earlier one (``/etc`` wins); all of them are applied in name order."""


def _holds_secret(name: str, text: str) -> bool:
    """Whether rendered file ``name`` is k3snet's sysctl.d file setting a secret sysctl
    (:func:`~k3snet.model.sysctl.is_secret`): written 0600 then (systemd-sysctl reads it
    as root); or the manifests whose ConfigMaps hold a spec text naming one, a line
    commented out too (``kubectl apply -f`` reads it as its user)."""
    if name == _MANIFESTS_FILE:
        return "stable_secret" in text or "fastopen_key" in text
    return name == SYSCTL_FILE and any(
        is_secret(line.partition("=")[0].strip()) for line in text.splitlines()
        if "=" in line and not line.startswith("#"))


def _sysctl_overrides(out: Path, wanted: Mapping[str, str]) -> list[str]:
    """The lines of the files systemd-sysctl reads after ``SYSCTL_FILE`` in ``out`` (for
    /etc/sysctl.d, those of every directory it reads) that set one of ``wanted`` (name ->
    k3snet's value) to another value: the last value of a key wins at boot. Masked
    files (links to /dev/null) are none; a key may be a glob, which systemd-sysctl
    applies to no key a file names (k3snet's own), only to the other name of one."""
    import fnmatch  # noqa: PLC0415 - only render sysctl -o reads the other files

    from k3snet.model.sysctl import ALIASES  # noqa: PLC0415

    etc = out.resolve() == _SYSCTL_DIRS[-1]
    paths: dict[str, Path] = {}
    for directory in (_SYSCTL_DIRS if etc else (out,)):
        if directory.is_dir():
            paths.update((p.name, p) for p in directory.glob("*.conf"))
    said = []
    for name, path in sorted(paths.items()):
        if name <= SYSCTL_FILE or path.resolve() == Path("/dev/null"):
            continue
        try:
            text = read_input(path, MAX_NETWORK_FILE_BYTES).decode("utf-8", "replace")
        except OSError:
            continue  # systemd-sysctl says it cannot read it
        for number, line in enumerate(text.splitlines(), 1):
            text_key, sep, value = line.strip().lstrip("-").partition("=")
            key = _sysctl_key(text_key) if sep and not line.lstrip().startswith(
                ("#", ";")) else None
            value = " ".join(value.split())
            if key is None:
                continue
            # systemd-sysctl applies a glob to no key a file names ("Not setting ...
            # (explicit setting exists)"): k3snet's own keys, whatever the file's order.
            glob = any(c in key for c in "*?[")
            for mine, mine_value in sorted(wanted.items()):
                names = [n for n in (mine, ALIASES.get(mine, mine))  # ip_forward: all.forwarding
                         if fnmatch.fnmatchcase(n, key) and not (glob and n in wanted)]
                if names and not _same_sysctl_value(mine, value, mine_value):
                    shown = key if key in names else f"{key} ({names[0]} among them)"
                    said.append(f"{path} (line {number}) sets {shown} = "
                                f"{shown_value(mine, value)}, read after {SYSCTL_FILE}: at "
                                "boot its value wins over k3snet's "
                                f"{shown_value(mine, mine_value)}")
    return said


def _same_sysctl_value(name: str, text: str, value: str) -> bool:
    """Whether a sysctl.d file's ``text`` for sysctl ``name`` is ``value`` (the model's) to
    the kernel: ``30000-32767,1000`` is ``1000,30000-32767`` in
    ``ip_local_reserved_ports``, which the kernel shows sorted."""
    try:
        return Sysctl(name, text).value == value
    except ModelError:  # a value the model refuses is none of k3snet's
        return text == value


def _sysctl_key(text: str) -> str | None:
    """A sysctl.d line's key as k3snet names sysctls (a glob kept as one, dotted), or
    ``None`` for a key outside ``net.*``."""
    key = text.strip()
    if any(c in key for c in "*?["):
        if 0 <= key.find("/") < key.find(".") or "." not in key:
            key = key.translate(str.maketrans("./", "/."))
        return key if key.startswith("net.") else None
    try:
        return sysctl_name(key)
    except ModelError:
        return None


def _render_manifests(spec: Spec, args: argparse.Namespace) -> dict[str, str]:
    from k3snet.render.manifests import dump_manifests, render_manifests  # noqa: PLC0415

    profiles: dict[str, tuple[Spec, str]] = {}
    paths: dict[str, str] = {}
    for entry in args.profile:
        name, sep, path = entry.partition("=")
        if not sep:
            raise SpecError([Problem("", f"--profile must be NAME=SPEC, not {entry!r}")])
        if paths.setdefault(name, path) != path:  # the last one silently won
            raise SpecError([Problem("", f"--profile {name} is given twice, with "
                                         f"{paths[name]} and {path}: one spec per profile")])
        profiles[name] = (load_spec(path), read_text(path))
    secrets = sorted({s.name for given in (spec, *(p for p, _ in profiles.values()))
                      for s in given.sysctls if s.secret})
    # Written 0600 (cmd_render) when a spec sets one, whatever its text: a YAML key written
    # "net.ipv4.tcp_fastopen\x5fkey" names none that _holds_secret reads.
    args.secret_manifests = bool(secrets)
    if secrets:  # the agent reads the spec from a ConfigMap: no Secret of Kubernetes
        print(f"k3snet: warning: the spec sets secret sysctls ({', '.join(secrets)}): the "
              "manifests hold the spec in a ConfigMap, which whoever may read the "
              "namespace's ConfigMaps reads; set it on each node in /etc/sysctl.d "
              "instead (k3snet render sysctl, written 0600)"
              f"{' (--out: the manifests are written 0600)' if args.out else ''}",
              file=sys.stderr)
    objects = render_manifests(
        spec,
        spec_text=read_text(args.spec),
        flannel_conf=args.flannel_conf,
        flannel_configmap_namespace=args.flannel_configmap_namespace,
        profiles=profiles,
        node_report=not args.no_node_report,
        node_restriction=args.node_restriction,
        lease_candidates=args.lease_candidates,
    )
    return {_MANIFESTS_FILE: dump_manifests(objects)}


RENDERERS: dict[str, Callable[[Spec, argparse.Namespace], dict[str, str]]] = {
    "iptables": _render_iptables,
    "nftables": _render_nftables,
    "ifupdown": _render_ifupdown,
    "netplan": _render_netplan,
    "networkd": _render_networkd,
    "networkmanager": _render_networkmanager,
    "sysctl": _render_sysctl,
    "manifests": _render_manifests,
}

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "plan": cmd_plan,
    "apply": cmd_apply,
    "observe": cmd_observe,
    "destroy": cmd_destroy,
    "agent": cmd_agent,
    "explain": cmd_explain,
    "validate": cmd_validate,
    "connectivity": cmd_connectivity,
    "render": cmd_render,
    "completion": cmd_completion,
    "doctor": cmd_doctor,
}

if __name__ == "__main__":
    sys.exit(main())
