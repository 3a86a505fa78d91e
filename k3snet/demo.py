"""``make demo``: the seed problem in network namespaces, broken, then fixed by k3snet.

Builds the seed lab (:mod:`k3snet.lab`): a pod behind a K3s node that
reaches the database subnet through a router. Shows the pod failing to connect,
prints the plan k3snet computes from ``examples/seed.yaml``, applies it, proves
the fix with a real TCP exchange and a ping (the database sees the node's
address), plans again to show nothing is left, and then shows a case that
masquerading alone does not fix: a FORWARD policy DROP left by Docker or
firewalld, fixed by k3snet's forward rule. Every namespace is deleted at the end,
also on error. Needs root. It changes no network state outside its own namespaces; like
any k3snet run it leaves its lock files (``/run/k3snet/locks``, one per namespace) and
the nftables read cache (``/run/k3snet/nftables-read``, bounded) on the host.

Run: ``python -m k3snet.demo [--nat-backend nftables|iptables]``; exits non-zero
if anything does not behave as shown. Stopped by Ctrl-C, SIGTERM (a ``timeout``, a CI
job cancelled) or SIGHUP (its terminal closed), it deletes its namespaces before it
exits (130, 143, 129).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from k3snet.backends.base import Backend
from k3snet.backends.group import BackendGroup, Member
from k3snet.backends.registry import create_backend
from k3snet.converge import converge
from k3snet.errors import K3snetError
from k3snet.facts import gather_facts
from k3snet.lab import NODE_ADDRESSES, Family, LabError, ProbeResult, SeedLab
from k3snet.lab.netns import NetnsCommandError, exit_on_signals
from k3snet.planner import plan
from k3snet.spec import ForwardPolicy, Spec, load_spec
from k3snet.spec import compile as compile_spec

__all__ = ["main", "run_demo"]


def _seed_spec() -> Path:
    """``examples/seed.yaml``: the copy the wheel ships in :mod:`k3snet.lab`, else the
    checkout's (``python -m k3snet.demo`` from an installed wheel looked for it in
    ``site-packages/examples/``, where nothing is)."""
    here = Path(__file__).resolve().parent
    shipped = here / "lab" / "seed.yaml"
    return shipped if shipped.is_file() else here.parent / "examples" / "seed.yaml"


SPEC_PATH = _seed_spec()
FAMILIES: tuple[Family, ...] = (4, 6)


class DemoError(Exception):
    """The lab did not behave as the demo claims."""


def _say(text: str = "") -> None:
    print(text, flush=True)


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise DemoError(what)


def _show_probe(label: str, result: ProbeResult) -> None:
    if result.ok:
        _say(f"  {label}: connected, the database saw {result.source_seen}")
    else:
        _say(f"  {label}: FAILED ({result.error})")


def _probe_all(lab: SeedLab, *, expect_ok: bool, expect_source: bool = True) -> None:
    # Both families at once: a probe the story expects to fail waits its whole timeout.
    with ThreadPoolExecutor(len(FAMILIES)) as pool:
        results = list(pool.map(lambda family: lab.tcp_probe(family=family, timeout=2.0),
                                FAMILIES))
    for family, result in zip(FAMILIES, results, strict=True):
        _show_probe(f"pod -> db tcp/5432 IPv{family}", result)
        _expect(result.ok == expect_ok,
                f"IPv{family}: the pod {'could not' if expect_ok else 'could'} reach the database")
        if expect_ok and expect_source:
            _expect(result.source_seen == NODE_ADDRESSES[family],
                    f"IPv{family}: the database saw {result.source_seen}, "
                    f"not the node's {NODE_ADDRESSES[family]}")
    if expect_ok:
        for family in FAMILIES:
            pinged = lab.ping(family=family, count=2)
            _say(f"  pod -> db ping IPv{family}: {'replies' if pinged else 'NO REPLY'}")
            _expect(pinged, f"IPv{family}: ping from the pod got no reply")


def _group(lab: SeedLab, nat_backend: str, *, forward_backend: str | None = None) -> BackendGroup:
    """netlink for routes and sysctls, the NAT backend for NAT (and forward, by default)."""
    node = lab.node
    members = [Member(create_backend("netlink", netns=node, state_dir=lab.state_dir))]
    def build(name: str) -> Backend:  # the iptables backend keeps a record there too
        options = {"state_dir": lab.state_dir} if name == "iptables" else {}
        return create_backend(name, netns=node, **options)

    if forward_backend is None or forward_backend == nat_backend:
        members.append(Member(build(nat_backend), ["nat", "forward"]))
    else:
        members.append(Member(build(nat_backend), ["nat"]))
        members.append(Member(build(forward_backend), ["forward"]))
    return BackendGroup(members)


def _fix(lab: SeedLab, spec: Spec, backend: BackendGroup) -> None:
    desired = compile_spec(spec, gather_facts(lab.node))
    observed = backend.observe()
    p = plan(observed, desired.only(backend.capabilities))
    _say(_indent(p.render()))
    done = converge(backend, desired)
    _expect(done.result is not None, "nothing was applied")
    assert done.result is not None
    _say(_indent(done.result.summary()))


def part_one(spec: Spec, nat_backend: str) -> None:
    """The seed problem, fixed."""
    with SeedLab.create() as lab:
        _say(f"Lab up: pod {lab.pod}, node {lab.node}, router {lab.router}, db {lab.db}")
        _say("\n[1] Before k3snet: the node reaches the database, its pods do not")
        for family in FAMILIES:
            reached = lab.node_probe(family=family)
            _show_probe(f"node -> db tcp/5432 IPv{family}", reached)
            # Else the pod's failure below proves nothing: the lab itself is broken.
            _expect(reached.ok, f"IPv{family}: the node could not reach the database")
        _probe_all(lab, expect_ok=False)

        with _group(lab, nat_backend) as backend:
            _say(f"\n[2] The plan from {SPEC_PATH.name} (backends: netlink + {nat_backend}),"
                 " applied")
            _say("    (= lines: the administrator's static routes already do the job; "
                 "k3snet leaves them alone)")
            _fix(lab, spec, backend)

            _say("\n[3] After k3snet: pods reach the database, masqueraded to the node's address")
            _probe_all(lab, expect_ok=True)

            _say("\n[4] Plan again")
            again = plan(backend.observe(), compile_spec(spec).only(backend.capabilities))
            _say(_indent(again.render().splitlines()[0]))
            _expect(again.empty, "the second plan is not empty")


def part_two(spec: Spec, nat_backend: str) -> None:
    """A FORWARD policy DROP: masquerading alone does not help, the forward rule does."""
    with SeedLab.create() as lab:
        lab.block_forward("iptables-nft")
        _say("\n[5] A node where Docker/firewalld left the iptables FORWARD policy at DROP")
        nat_only = Spec(cluster=spec.cluster, destinations=spec.destinations,
                        masquerade=spec.masquerade, forward=ForwardPolicy(accept=False))
        with _group(lab, nat_backend) as backend:
            _say("    Masquerade and forwarding only (forward.accept: false):")
            _fix(lab, nat_only, backend)
        _probe_all(lab, expect_ok=False)

        _say("\n[6] With k3snet's forward rule. An nftables accept cannot override an iptables")
        _say("    DROP (firewalld#527), so the forward rule goes into the iptables FORWARD path:")
        with _group(lab, nat_backend, forward_backend="iptables") as backend:
            _fix(lab, spec, backend)
        _probe_all(lab, expect_ok=True)


def run_demo(nat_backend: str = "nftables", spec_path: Path = SPEC_PATH) -> None:
    """Run both parts; raise :class:`DemoError` if the lab misbehaves."""
    spec = load_spec(spec_path)
    _say(f"k3snet demo: the seed lab, NAT backend {nat_backend}")
    part_one(spec, nat_backend)
    part_two(spec, nat_backend)
    _say("\nDone: every lab namespace has been deleted.")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m k3snet.demo``."""
    parser = argparse.ArgumentParser(prog="python -m k3snet.demo", description=__doc__)
    parser.add_argument("--nat-backend", choices=("nftables", "iptables"), default="nftables")
    parser.add_argument("-f", "--spec", type=Path, default=SPEC_PATH)
    args = parser.parse_args(argv)
    exit_on_signals()  # a timeout or a closed terminal still deletes the namespaces
    try:
        run_demo(args.nat_backend, args.spec)
    except DemoError as exc:
        print(f"\ndemo FAILED: {exc}", file=sys.stderr)
        return 1
    except K3snetError as exc:
        print(f"\ndemo FAILED: k3snet error: {exc}", file=sys.stderr)
        return 1
    except LabError as exc:  # the lab could not be built, or a probe gave no answer
        print(f"\ndemo FAILED: lab error: {exc}", file=sys.stderr)
        return 1
    except NetnsCommandError as exc:  # `ip netns add` as a user, a tool missing
        hint = "" if os.geteuid() == 0 else " (the demo needs root: run `make demo` as root)"
        print(f"\ndemo FAILED: {exc}{hint}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
