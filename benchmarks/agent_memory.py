"""Peak RSS and CPU time of one agent pass at 0, 2k and 10k destinations (docs/agent.md).

Runs ``k3snet agent --once`` in a child process, with the kubernetes client and
prometheus_client imported as in the DaemonSet, on the memory backend (no kernel
needed) and, as root, with the netlink and nftables backends in a fresh network
namespace (``--kernel``): a first pass onto the empty namespace, then a second
agent process on the same node (a restarted agent, which reads every rule the
first wrote). Prints one line per case: peak RSS (MiB) and CPU seconds (its child
processes' included).

    python benchmarks/agent_memory.py [--kernel] [--rules iptables] [--excludes K] [COUNT ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from goals import Figure, record

from k3snet.render.manifests import agent_memory_limit


def limit_mib(count: int) -> float:
    """The memory limit the rendered DaemonSet gives a spec of ``count`` destinations."""
    return float(agent_memory_limit(count).removesuffix("Mi"))


CHILD = """
import sys, kubernetes, prometheus_client, resource
from k3snet.cli import main
status = main(sys.argv[1:])
usage = resource.getrusage(resource.RUSAGE_SELF)
# (the CPU of its children too: iptables-restore, nft, which run in the agent's container)
done = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = usage.ru_utime + usage.ru_stime + done.ru_utime + done.ru_stime
print(usage.ru_maxrss, cpu, file=sys.stderr)
sys.exit(status)
"""


def spec(count: int, excludes: int = 0) -> str:
    """A spec of ``count`` routed destinations (its header as ``k3snet validate`` wants it),
    each with ``excludes`` excludes (every other /29 of its /24: none to aggregate)."""
    lines = ["apiVersion: k3snet.io/v1alpha1", "kind: EgressSpec"]
    lines += ["destinations:"] if count else ["destinations: []"]
    for n in range(count):
        prefix = f"10.{100 + n // 256}.{n % 256}"
        lines += [f"  - cidr: {prefix}.0/24", "    gateway: 192.168.1.1", "    device: eth0"]
        if excludes:
            lines += ["    exclude:"] + [f"      - {prefix}.{16 * j}/29" for j in range(excludes)]
    return "\n".join(lines) + "\n"


def measure(count: int, backend_args: list[str], netns: str | None,
            passes: int = 1, excludes: int = 0) -> list[tuple[float, float]]:
    """(peak RSS MiB, CPU s) of each of ``passes`` agent processes run one after the
    other on the same node (the second: an agent restarted where its rules are)."""
    found = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.yaml"
        path.write_text(spec(count, excludes))
        argv = [sys.executable, "-c", CHILD, "agent", "-f", str(path), "--once", "--no-kube",
                "--listen", "none", "--log-level", "WARNING", *backend_args]
        if netns:
            argv += ["--netns", netns]
        for _ in range(passes):
            done = subprocess.run(argv, capture_output=True, text=True, check=False,
                                  env={"K3SNET_STATE_DIR": tmp, "K3SNET_LOCK_DIR": tmp,
                                       "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
            if done.returncode != 0:
                raise SystemExit(f"agent failed: {done.stderr[-2000:]}")
            rss_kib, cpu = done.stderr.strip().splitlines()[-1].split()
            found.append((int(rss_kib) / 1024, float(cpu)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("counts", nargs="*", type=int, default=[0, 2000, 10000])
    parser.add_argument("--kernel", action="store_true",
                        help="also netlink+nftables in a fresh namespace (root)")
    parser.add_argument("--excludes", type=int, default=0, choices=range(17),
                        metavar="0..16", help="excludes of each destination (default 0)")
    parser.add_argument("--rules", choices=["nftables", "iptables"], default="nftables",
                        help="the rules backend beside netlink with --kernel")
    args = parser.parse_args()
    print(f"{'backend':<30}{'destinations':>13}{'peak RSS MiB':>14}{'CPU s':>8}")
    each = f", {args.excludes} excludes each" if args.excludes else ""
    for count in args.counts:
        [(rss, cpu)] = measure(count, ["--backend", "memory", "--no-facts"], None,
                               excludes=args.excludes)
        print(f"{'memory' + each:<30}{count:>13}{rss:>14.1f}{cpu:>8.2f}")
        record(Figure(f"agent peak RSS, {count} destinations", "memory" + each, rss, "MiB",
                      limit_mib(count),
                      detail=f"one pass, {cpu:.2f} s CPU; goal = the DaemonSet's limit"))
    if args.kernel:
        from k3snet.lab.netns import run_in, temporary_netns  # noqa: PLC0415

        for count in args.counts:
            with temporary_netns("bench") as ns:
                run_in(ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"])
                run_in(ns, ["ip", "link", "set", "eth1", "up"])
                run_in(ns, ["ip", "addr", "add", "192.168.1.5/24", "dev", "eth0"])
                run_in(ns, ["ip", "link", "set", "eth0", "up"])
                runs = measure(count, ["--backend", "netlink", "--backend", args.rules], ns,
                               passes=2, excludes=args.excludes)
            backends = f"netlink+{args.rules}{each}"
            for (rss, cpu), case, what in zip(runs, ("", ", restarted"),
                                              ("one pass", "a second agent's pass where the "
                                               "first left its rules"), strict=True):
                print(f"{backends + case:<30}{count:>13}{rss:>14.1f}{cpu:>8.2f}")
                record(Figure(f"agent peak RSS, {count} destinations{case}", backends,
                              rss, "MiB", limit_mib(count),
                              detail=f"{what}, {cpu:.2f} s CPU; goal = the DaemonSet's limit"))


if __name__ == "__main__":
    from k3snet.lab.netns import exit_on_signals

    exit_on_signals()  # a timeout or a closed terminal still deletes the namespaces
    main()
