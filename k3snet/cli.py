"""The ``k3snet`` command: a thin layer over the library.

Every subcommand parses its arguments, calls the library and prints. Bad input
exits 1 with a one-line-per-problem message on stderr, never a traceback.

Exit codes: ``plan`` follows terraform's ``-detailed-exitcode``: 0 nothing to
do, 2 changes pending, 1 error. Everything else: 0 success, 1 error.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from k3snet.backends.group import BackendGroup, Member
from k3snet.backends.registry import available_backends, create_backend, load_backend
from k3snet.converge import compile_for, converge, destroy
from k3snet.errors import K3snetError, Problem, SpecError
from k3snet.facts import gather_facts
from k3snet.model.state import KINDS, State
from k3snet.planner import Plan, plan
from k3snet.spec import Spec, load_spec
from k3snet.spec import compile as compile_spec

__all__ = ["build_parser", "main"]

DEFAULT_BACKENDS = ("netlink", "nftables")
EXIT_OK, EXIT_ERROR, EXIT_CHANGES, EXIT_RUNNING = 0, 1, 2, 3
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a command killed by it


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="k3snet",
        description="Plan and apply the minimal changes that make pod egress work on this node.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    def node_command(name: str, help_text: str, *, spec_required: bool = True) -> Any:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("-f", "--spec", required=spec_required, type=Path,
                         help="spec file (YAML or JSON)")
        cmd.add_argument("--backend", action="append", default=[], metavar="NAME[:KINDS]",
                         help="backend to use, repeatable; KINDS limits it, e.g. iptables:forward "
                              f"(default: the spec's, else {' + '.join(DEFAULT_BACKENDS)}; "
                              f"known: {', '.join(available_backends())})")
        cmd.add_argument("--netns", help="act inside this network namespace")
        cmd.add_argument("--output", choices=("text", "json"), default="text")
        cmd.add_argument("--no-facts", action="store_true",
                         help="do not read the node's interfaces to check the spec")
        return cmd

    node_command("plan", "Print the plan; exit 0 if nothing to do, 2 if changes are pending.")
    apply = node_command("apply", "Apply the plan and print what was done.")
    apply.add_argument("--allow-conflicts", action="store_true",
                       help="apply the rest of the plan even if foreign state blocks part of it")
    apply.add_argument("--allow-teardown", action="store_true",
                       help="apply even a plan that deletes everything k3snet owns through a "
                            "backend (refused by default: see `k3snet destroy`)")
    destroy = node_command("destroy", "Remove everything k3snet owns (rules, routes; owned "
                           "sysctls get their previous values back); nothing else is touched.",
                           spec_required=False)
    destroy.add_argument("--auto-approve", action="store_true",
                         help="do not ask for confirmation (needed when stdin is not a terminal)")
    destroy.add_argument("--dry-run", action="store_true",
                         help="print what would be removed, change nothing")
    node_command("observe", "Print the owned and foreign state the backends see.",
                 spec_required=False)
    agent = node_command("agent", "Converge now and every --interval seconds (the DaemonSet); "
                         "see docs/agent.md.", spec_required=False)
    _agent_arguments(agent)

    render = sub.add_parser("render", help="Write persistence files or Kubernetes manifests.")
    render.add_argument("what", choices=sorted(RENDERERS), help="what to render")
    render.add_argument("-f", "--spec", required=True, type=Path)
    render.add_argument("-o", "--out", type=Path,
                        help="directory to write into (default: print to stdout)")
    render.add_argument("--flannel-conf", metavar="PATH",
                        help="manifests: flannel's net-conf.json on the nodes (K3s --flannel-conf)")
    render.add_argument("--flannel-configmap-namespace", metavar="NS",
                        help="manifests: the namespace of upstream flannel's kube-flannel-cfg")
    render.add_argument("--profile", action="append", default=[], metavar="NAME=SPEC",
                        help="manifests: a per-node override, repeatable: nodes labelled "
                             "k3snet.io/profile=NAME run SPEC instead (its own DaemonSet)")
    render.add_argument("--no-node-report", action="store_true",
                        help="manifests: the agent does not annotate its Node (no API access "
                             "unless a backend needs it)")

    validate = sub.add_parser("validate", help="Check a spec; print every problem at once.")
    validate.add_argument("-f", "--spec", required=True, type=Path)

    connectivity = sub.add_parser(
        "connectivity",
        help="Read the result of the connectivity test Job (k3snet render manifests). "
             "Exit 0: passed, 1: failed or error, 3: still running.")
    connectivity.add_argument("-f", "--spec", required=True, type=Path)
    connectivity.add_argument("--kubeconfig",
                              help="default: in-cluster, $KUBECONFIG, ~/.kube/config")
    connectivity.add_argument("--context")
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("k3snet")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _agent_arguments(agent: argparse.ArgumentParser) -> None:
    env = os.environ.get
    agent.add_argument("--spec-configmap", metavar="NS/NAME[:KEY]",
                       help="read the spec from this ConfigMap through the API each pass "
                            "(default key spec.yaml) instead of -f")
    agent.add_argument("--interval", type=_positive_seconds, default=30.0,
                       help="seconds between passes (default: 30)")
    agent.add_argument("--once", action="store_true",
                       help="converge once and exit (0: the pass succeeded, 1: it failed)")
    agent.add_argument("--node-name", default=env("K3SNET_NODE_NAME") or socket.gethostname(),
                       help="this node's name (default: $K3SNET_NODE_NAME, else the hostname)")
    agent.add_argument("--listen", default=env("K3SNET_LISTEN", ":9743"), metavar="[HOST]:PORT",
                       help="serve /healthz, /readyz and /metrics here; 'none' disables it "
                            "(default: $K3SNET_LISTEN or :9743)")
    agent.add_argument("--log-format", choices=("text", "json"),
                       default=env("K3SNET_LOG_FORMAT", "text"))
    agent.add_argument("--log-level", default=env("K3SNET_LOG_LEVEL", "INFO"),
                       choices=("DEBUG", "INFO", "WARNING", "ERROR"))
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
    agent.add_argument("--lease", default=None, metavar="NS/NAME",
                       help="the Lease electing the writer of cluster-wide objects (default: "
                            "$K3SNET_NAMESPACE or kube-system / k3snet-cluster-writer)")
    agent.add_argument("--lease-candidates", metavar="LABEL[=VALUE]",
                       default=env("K3SNET_LEASE_CANDIDATES"),
                       help="only nodes with this label compete for the Lease (e.g. "
                            "node-role.kubernetes.io/control-plane); others never write "
                            "cluster-wide objects nor read the Lease (default: every node)")
    agent.add_argument("--lease-duration", type=_positive_seconds, default=15.0)
    agent.add_argument("--lease-renew-deadline", type=_positive_seconds, default=10.0)
    agent.add_argument("--lease-retry-period", type=_positive_seconds, default=2.0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``k3snet`` console script.

    No input or output condition ends in a traceback: k3snet's errors and the
    system's (a spec that is a directory, an output file that cannot be
    written) are one line on stderr with exit 1; a closed pipe (``| head``)
    ends quietly. ``K3SNET_DEBUG=1`` shows the traceback of an unexpected error.
    """
    args = build_parser().parse_args(argv)
    try:
        return int(COMMANDS[args.command](args))
    except K3snetError as exc:
        print(f"k3snet: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        # The reader went away (`k3snet observe | head`): nothing more to say to it.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        print(f"k3snet: error: {_os_error(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("K3SNET_DEBUG"):
            raise
        print(f"k3snet: internal error: {type(exc).__name__}: {exc} (a bug: please report it; "
              "K3SNET_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_ERROR


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


# ---------------------------------------------------------------- helpers


def _spec(args: argparse.Namespace) -> Spec:
    return load_spec(args.spec)


# Backend options the agent's DaemonSet passes through its environment
# (see k3snet.render.manifests): (backend, option, variable, parse).
ENV_OPTIONS: tuple[tuple[str, str, str, Callable[[str], Any]], ...] = (
    ("netlink", "proc_sys", "K3SNET_PROC_SYS", Path),
    ("netlink", "state_dir", "K3SNET_STATE_DIR", Path),
    ("flannel", "path", "K3SNET_FLANNEL_CONF", Path),
    ("flannel", "configmap", "K3SNET_FLANNEL_CONFIGMAP", lambda v: tuple(v.split("/", 1))),
)


def _options(name: str, args: argparse.Namespace, spec: Spec | None = None) -> dict[str, Any]:
    """Keyword options for backend ``name``: --netns, the spec's, the agent's environment."""
    wanted: dict[str, Any] = {}
    if args.netns is not None:
        wanted["netns"] = args.netns
    if spec is not None and spec.cni.calico is not None and spec.cni.calico.allow_disruptive:
        wanted["allow_disruptive"] = True
    for backend, option, variable, parse in ENV_OPTIONS:
        if backend == name and os.environ.get(variable):
            wanted[option] = parse(os.environ[variable])
    if not wanted:
        return {}
    accepted = inspect.signature(load_backend(name)).parameters
    return {k: v for k, v in wanted.items() if k in accepted}


def _backend(args: argparse.Namespace, spec: Spec | None) -> BackendGroup:
    names = args.backend or (spec.backends if spec and spec.backends else DEFAULT_BACKENDS)
    members = []
    for entry in names:
        name, _, kinds = entry.partition(":")
        backend = create_backend(name, **_options(name, args, spec))
        members.append(Member(backend, kinds.split(",") if kinds else None))
    return BackendGroup(members)


def _desired(args: argparse.Namespace, spec: Spec, backend: BackendGroup) -> State:
    node_kinds = backend.capabilities & set(KINDS)
    facts = None if args.no_facts or not node_kinds else gather_facts(args.netns)
    return compile_for(backend, spec, facts)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


# ---------------------------------------------------------------- commands


def cmd_plan(args: argparse.Namespace) -> int:
    spec = _spec(args)
    with _backend(args, spec) as backend:
        p = plan(backend.observe(), _desired(args, spec, backend))
    if args.output == "json":
        print(p.to_json(indent=2))
    else:
        print(p.render())
        for line in _disruptive(p):
            print(line)
    return EXIT_CHANGES if p.changes else EXIT_OK


def _disruptive(p: Plan) -> list[str]:
    """Warnings for changes that delete and re-create (a Calico pool's cidr/blockSize)."""
    if not any(c.kind == "ippool" for c in p.changes):
        return []
    from k3snet.backends.calico import disruptive_changes  # noqa: PLC0415 - Calico users only

    return [f"!! disruptive: {c} is a delete and re-create; apply refuses it unless "
            "cni.calico.allowDisruptive is true" for c in disruptive_changes(p)]


def cmd_apply(args: argparse.Namespace) -> int:
    spec = _spec(args)
    with _backend(args, spec) as backend:
        done = converge(backend, _desired(args, spec, backend),
                        allow_conflicts=args.allow_conflicts,
                        allow_teardown=args.allow_teardown)
    if args.output == "json":
        _print_json({
            "plan": done.plan.to_dict(),
            "applied": [c.to_dict() for c in done.result.applied] if done.result else [],
            "operations": done.result.operations if done.result else 0,
        })
    elif done.result is None:
        print(done.plan.render())
    else:
        print(done.plan.render())
        print(done.result.render())
    return EXIT_OK


def cmd_destroy(args: argparse.Namespace) -> int:
    spec = _spec(args) if args.spec else None
    with _backend(args, spec) as backend:
        preview = destroy(backend, dry_run=True)
        if preview.plan.empty:
            print("Nothing to destroy: k3snet owns nothing here.")
            return EXIT_OK
        print(preview.plan.render())
        if args.dry_run:
            return EXIT_CHANGES
        if not args.auto_approve and not _confirm("Remove everything listed above?"):
            print("k3snet: nothing was changed", file=sys.stderr)
            return EXIT_ERROR
        done = destroy(backend)
    if done.result is not None:
        print(done.result.render())
    return EXIT_OK


def _confirm(question: str) -> bool:
    """Ask on a terminal; refuse (never guess) when stdin is not one."""
    if not sys.stdin.isatty():
        print("k3snet: error: stdin is not a terminal; pass --auto-approve to confirm",
              file=sys.stderr)
        return False
    answer = input(f"{question} Only 'yes' is accepted: ")
    return answer.strip() == "yes"


def cmd_observe(args: argparse.Namespace) -> int:
    spec = _spec(args) if args.spec else None
    with _backend(args, spec) as backend:
        state = backend.observe()
    if args.output == "json":
        _print_json(state.to_dict())
    else:
        print(state.render())
    return EXIT_OK


def cmd_agent(args: argparse.Namespace) -> int:
    from k3snet.agent import run_from_cli  # noqa: PLC0415 - agent dependencies only here

    return run_from_cli(args, make_backend=lambda spec: _backend(args, spec),
                        desired=lambda spec, group: _desired(args, spec, group))


def cmd_validate(args: argparse.Namespace) -> int:
    spec = _spec(args)
    compile_spec(spec)
    print(f"{args.spec}: valid ({len(spec.destinations)} destination(s))")
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
    return EXIT_OK if result.succeeded else EXIT_ERROR


def cmd_render(args: argparse.Namespace) -> int:
    spec = _spec(args)
    files = RENDERERS[args.what](spec, args)
    if args.out is None:
        for name, text in files.items():
            if len(files) > 1:
                print(f"# --- {name}")
            print(text, end="" if text.endswith("\n") else "\n")
        return EXIT_OK
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text)
        print(args.out / name)
    return EXIT_OK


# ---------------------------------------------------------------- renderers


def _render_iptables(spec: Spec, args: argparse.Namespace) -> dict[str, str]:
    from k3snet.render.iptables import render_iptables_save  # noqa: PLC0415 - lazy

    state = compile_spec(spec)
    return {"rules.v4": render_iptables_save(state, 4), "rules.v6": render_iptables_save(state, 6)}


def _render_nftables(spec: Spec, args: argparse.Namespace) -> dict[str, str]:
    from k3snet.render.nftables import render_nftables_conf  # noqa: PLC0415 - lazy

    return {"k3snet.nft": render_nftables_conf(compile_spec(spec))}


def _render_ifupdown(spec: Spec, args: argparse.Namespace) -> dict[str, str]:
    from k3snet.render.routes import render_ifupdown  # noqa: PLC0415 - lazy

    return {"k3snet-routes": render_ifupdown(compile_spec(spec))}


def _render_netplan(spec: Spec, args: argparse.Namespace) -> dict[str, str]:
    from k3snet.render.routes import render_netplan  # noqa: PLC0415 - lazy

    return {"90-k3snet.yaml": render_netplan(compile_spec(spec))}


def _render_networkd(spec: Spec, args: argparse.Namespace) -> dict[str, str]:
    from k3snet.render.routes import render_networkd  # noqa: PLC0415 - lazy

    return dict(render_networkd(compile_spec(spec)))


def _render_sysctl(spec: Spec, args: argparse.Namespace) -> dict[str, str]:
    from k3snet.render.sysctl import render_sysctl_d  # noqa: PLC0415 - lazy

    return {"90-k3snet.conf": render_sysctl_d(compile_spec(spec))}


def _render_manifests(spec: Spec, args: argparse.Namespace) -> dict[str, str]:
    from k3snet.render.manifests import dump_manifests, render_manifests  # noqa: PLC0415

    profiles: dict[str, tuple[Spec, str]] = {}
    for entry in args.profile:
        name, sep, path = entry.partition("=")
        if not sep:
            raise SpecError([Problem("", f"--profile must be NAME=SPEC, not {entry!r}")])
        profiles[name] = (load_spec(path), Path(path).read_text())
    objects = render_manifests(
        spec,
        spec_text=args.spec.read_text(),
        flannel_conf=args.flannel_conf,
        flannel_configmap_namespace=args.flannel_configmap_namespace,
        profiles=profiles,
        node_report=not args.no_node_report,
    )
    return {"k3snet.yaml": dump_manifests(objects)}


RENDERERS: dict[str, Callable[[Spec, argparse.Namespace], dict[str, str]]] = {
    "iptables": _render_iptables,
    "nftables": _render_nftables,
    "ifupdown": _render_ifupdown,
    "netplan": _render_netplan,
    "networkd": _render_networkd,
    "sysctl": _render_sysctl,
    "manifests": _render_manifests,
}

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "plan": cmd_plan,
    "apply": cmd_apply,
    "observe": cmd_observe,
    "destroy": cmd_destroy,
    "agent": cmd_agent,
    "validate": cmd_validate,
    "connectivity": cmd_connectivity,
    "render": cmd_render,
}

if __name__ == "__main__":
    sys.exit(main())
