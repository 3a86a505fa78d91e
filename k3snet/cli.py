"""The ``k3snet`` command: a thin layer over the library.

Every subcommand parses its arguments, calls the library and prints. Bad input
exits 1 with a one-line-per-problem message on stderr, never a traceback.

Exit codes: ``plan`` follows terraform's ``-detailed-exitcode``: 0 nothing to
do, 2 changes pending, 1 error. ``doctor``: 0 the flow reaches, 3 blocked, 4
unknown, 1 error. Everything else: 0 success, 1 error.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from k3snet.backends.group import BackendGroup, Member
from k3snet.backends.registry import available_backends, create_backend, load_backend
from k3snet.converge import compile_for, converge
from k3snet.errors import K3snetError
from k3snet.facts import gather_facts
from k3snet.model.state import KINDS, State
from k3snet.planner import Plan, plan
from k3snet.spec import Spec, load_spec
from k3snet.spec import compile as compile_spec

__all__ = ["build_parser", "main"]

DEFAULT_BACKENDS = ("netlink", "nftables")
EXIT_OK, EXIT_ERROR, EXIT_CHANGES, EXIT_RUNNING = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="k3snet",
        description="Plan and apply the minimal changes that make pod egress work on this node.",
    )
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
    observe = node_command("observe", "Print the owned and foreign state the backends see.",
                           spec_required=False)
    observe.add_argument("--save", type=Path, metavar="DIR",
                         help="instead, write the node state k3snet doctor reads (routes, rules, "
                              "rulesets, sysctls; nothing secret) to DIR")
    agent = node_command("agent", "Converge now and every --interval seconds (the DaemonSet).")
    agent.add_argument("--interval", type=float, default=30.0)
    agent.add_argument("--once", action="store_true", help="converge once and exit")

    render = sub.add_parser("render", help="Write persistence files or Kubernetes manifests.")
    render.add_argument("what", choices=sorted(RENDERERS), help="what to render")
    render.add_argument("-f", "--spec", required=True, type=Path)
    render.add_argument("-o", "--out", type=Path,
                        help="directory to write into (default: print to stdout)")
    render.add_argument("--flannel-conf", metavar="PATH",
                        help="manifests: flannel's net-conf.json on the nodes (K3s --flannel-conf)")
    render.add_argument("--flannel-configmap-namespace", metavar="NS",
                        help="manifests: the namespace of upstream flannel's kube-flannel-cfg")

    validate = sub.add_parser("validate", help="Check a spec; print every problem at once.")
    validate.add_argument("-f", "--spec", required=True, type=Path)

    doctor = sub.add_parser(
        "doctor", help="Explain why a pod cannot reach a destination, and plan the fix. "
                       "Exit 0: the flow reaches, 1: error, 3: blocked, 4: unknown.")
    doctor.add_argument("--from", dest="source", required=True, metavar="POD_IP")
    doctor.add_argument("--to", dest="destination", required=True, metavar="DEST[:PORT]",
                        help="address, address:port, or [IPv6]:port")
    doctor.add_argument("--proto", choices=("tcp", "udp", "icmp"), default="tcp")
    where = doctor.add_mutually_exclusive_group()
    where.add_argument("--netns", help="read the node state inside this network namespace")
    where.add_argument("--state", type=Path, metavar="DIR",
                       help="read a bundle written by `k3snet observe --save DIR`")
    doctor.add_argument("--fix", action="store_true",
                        help="apply the fix plan (after confirmation)")
    doctor.add_argument("--auto-approve", action="store_true",
                        help="with --fix: apply without asking")
    doctor.add_argument("-o", "--output", choices=("text", "json"), default="text")

    connectivity = sub.add_parser(
        "connectivity",
        help="Read the result of the connectivity test Job (k3snet render manifests). "
             "Exit 0: passed, 1: failed or error, 3: still running.")
    connectivity.add_argument("-f", "--spec", required=True, type=Path)
    connectivity.add_argument("--kubeconfig",
                              help="default: in-cluster, $KUBECONFIG, ~/.kube/config")
    connectivity.add_argument("--context")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``k3snet`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(COMMANDS[args.command](args))
    except K3snetError as exc:
        print(f"k3snet: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


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
                        allow_conflicts=args.allow_conflicts)
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


def cmd_observe(args: argparse.Namespace) -> int:
    if args.save is not None:
        from k3snet.doctor import NodeCapture  # noqa: PLC0415 - doctor users only

        capture = NodeCapture.read_live(args.netns)
        for path in capture.write_dir(args.save):
            print(path)
        for name, why in sorted(capture.missing.items()):
            print(f"k3snet: not captured: {name}: {why}", file=sys.stderr)
        return EXIT_OK
    spec = _spec(args) if args.spec else None
    with _backend(args, spec) as backend:
        state = backend.observe()
    if args.output == "json":
        _print_json(state.to_dict())
    else:
        print(state.render())
    return EXIT_OK


def cmd_agent(args: argparse.Namespace) -> int:
    spec = _spec(args)
    with _backend(args, spec) as backend:
        while True:
            try:
                done = converge(backend, _desired(args, spec, backend))
            except K3snetError as exc:
                if args.once:
                    raise
                print(f"k3snet agent: {exc}", file=sys.stderr, flush=True)
            else:
                if done.result is not None:
                    print(done.result.render(), flush=True)
            if args.once:
                return EXIT_OK
            time.sleep(args.interval)


EXIT_BLOCKED, EXIT_UNKNOWN = 3, 4


def cmd_doctor(args: argparse.Namespace) -> int:
    from k3snet.doctor import Flow, NodeCapture, NodeState, diagnose  # noqa: PLC0415
    from k3snet.doctor.findings import FIX_BACKENDS  # noqa: PLC0415

    address, port = _destination(args.destination)
    flow = Flow(args.source, address, protocol=args.proto, port=port)
    if args.fix and args.state is not None:
        raise K3snetError("--fix changes a live node: it cannot be used with --state")
    capture = (NodeCapture.read_dir(args.state) if args.state is not None
               else NodeCapture.read_live(args.netns))
    state = NodeState.from_capture(capture)
    d = diagnose(state, flow)
    if args.fix and d.fixes.owned:
        kinds = {o.kind for o in d.fixes.owned}
        names = sorted({FIX_BACKENDS[k] for k in kinds})
        group = BackendGroup([Member(create_backend(n, **_options(n, args)),
                                     [k for k in kinds if FIX_BACKENDS[k] == n])
                              for n in names])
        with group as backend:
            d = diagnose(state, flow, observed=backend.observe())
            print(d.render() if args.output == "text" else d.plan.to_json(indent=2))
            if d.plan.empty:
                return _doctor_exit(d.verdict)
            if not args.auto_approve and not _confirm():
                print("k3snet: nothing applied", file=sys.stderr)
                return EXIT_ERROR
            done = converge(backend, d.desired)
            if done.result is not None:
                print(done.result.render())
        after = diagnose(NodeState.from_capture(NodeCapture.read_live(args.netns)), flow)
        print(f"now: {after.verdict.value}")
        return _doctor_exit(after.verdict)
    if args.output == "json":
        _print_json(d.to_dict())
    else:
        print(d.render())
    return _doctor_exit(d.verdict)


def _doctor_exit(verdict: str) -> int:
    """0 the flow reaches, 3 blocked, 4 unknown (``verdict`` is a :class:`Verdict`)."""
    return {"reaches": EXIT_OK, "blocked": EXIT_BLOCKED}.get(str(verdict), EXIT_UNKNOWN)


def _destination(text: str) -> tuple[str, int | None]:
    """``ADDR``, ``ADDR:PORT`` or ``[ADDR]:PORT`` -> (address, port)."""
    address, port = text, ""
    if text.startswith("["):
        address, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        address, _, port = text.partition(":")
    if port and not port.isdigit():
        raise K3snetError(f"--to {text!r}: the port must be a number")
    return address, int(port) if port else None


def _confirm() -> bool:
    try:
        answer = input("Apply these changes? Only 'yes' will be accepted: ")
    except EOFError:
        return False
    return answer.strip() == "yes"


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

    objects = render_manifests(
        spec,
        spec_text=args.spec.read_text(),
        flannel_conf=args.flannel_conf,
        flannel_configmap_namespace=args.flannel_configmap_namespace,
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
    "agent": cmd_agent,
    "validate": cmd_validate,
    "connectivity": cmd_connectivity,
    "render": cmd_render,
    "doctor": cmd_doctor,
}

if __name__ == "__main__":
    sys.exit(main())
