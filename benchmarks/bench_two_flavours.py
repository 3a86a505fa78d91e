"""What ``mode="auto"`` pays to read the iptables flavour it did not pick, per cold observe.

Run as root from the repository root::

    .venv/bin/python benchmarks/bench_two_flavours.py [--rules 200] [--runs 40]

For each flavour picked (a K3s node's rules loaded into it, ``--rules`` masquerade
rules of k3snet's applied, one rule in the other flavour), cold observes of a
``mode="auto"`` backend (which also reads the other flavour's filter and nat) and
of one with the mode given, interleaved with the raw ``-save`` runs of the same
tables (``ip netns exec NS iptables-FLAVOUR-save`` and ``ip6tables-...``, IPv4 and
IPv6): the other flavour's two started together, as the backend starts them, and
one after the other, and the picked flavour's two one after the other; the
medians, and the auto observe's extra against them. Then, in fresh backends, the
mode detection itself (the first use: both flavours' four ``-save`` runs, the
version, the evidence read) against the four raw runs. The namespaces
(``k3snet-ipt-*``) are deleted at the end, also on error; the root namespace is
never touched.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from k3snet.backends.iptables import IptablesBackend
from k3snet.lab.netns import exit_on_signals, run_in, temporary_netns
from k3snet.model import ForwardRule, MasqueradeRule, State
from k3snet.planner import plan
from k3snet.testing.k3s import NODE_V4, NODE_V6


def cold_observe(backend: IptablesBackend) -> float:
    """One observe that reads the kernel (the kept read dropped first), in seconds."""
    backend._observed = None  # a cold read is what is measured
    backend._tables = None
    start = time.perf_counter()
    backend.observe()
    return time.perf_counter() - start


def raw_saves(ns: str, flavour: str, *, together: bool) -> float:
    """The raw ``-save`` runs of one flavour, IPv4 and IPv6, in seconds (``together``:
    both started before either is waited for, as the backend reads the other flavour)."""
    argvs = [["ip", "netns", "exec", ns, f"{tool}-{flavour}-save"]
             for tool in ("iptables", "ip6tables")]
    start = time.perf_counter()
    if together:
        runs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for argv in argvs]
        for run in runs:
            run.communicate()
            assert run.returncode == 0, run.args
    else:
        for argv in argvs:
            subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def detection(ns: str, state: str) -> float:
    """``mode="auto"``'s detection in a fresh backend (its first use), in seconds."""
    with IptablesBackend(ns, state_dir=state) as backend:
        start = time.perf_counter()
        _ = backend.mode
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=200)
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    desired = State(owned=[
        *(MasqueradeRule(f"10.{i // 256}.{i % 256}.0/24", destination="192.168.2.0/24")
          for i in range(args.rules)),
        ForwardRule("10.50.0.0/16", "192.168.2.0/24")])
    for picked in ("nft", "legacy"):
        other = "legacy" if picked == "nft" else "nft"
        with temporary_netns("ipt") as ns, tempfile.TemporaryDirectory() as state:
            run_in(ns, [f"iptables-{picked}-restore", "--noflush"], input_text=NODE_V4)
            run_in(ns, [f"ip6tables-{picked}-restore", "--noflush"], input_text=NODE_V6)
            run_in(ns, [f"iptables-{other}", "-w", "-A", "FORWARD", "-s", "10.50.0.0/16",
                        "-j", "DROP"])
            with IptablesBackend(ns, state_dir=state) as auto, \
                    IptablesBackend(ns, mode=picked, state_dir=state
                                    ) as given:
                assert auto.mode == picked, auto.mode_reason
                auto.apply(plan(auto.observe(), desired))
                times: dict[str, list[float]] = {name: [] for name in (
                    "auto", "given", "other together", "other in turn", "picked in turn")}
                for _ in range(args.runs):
                    times["auto"].append(cold_observe(auto))
                    times["given"].append(cold_observe(given))
                    times["other together"].append(raw_saves(ns, other, together=True))
                    times["other in turn"].append(raw_saves(ns, other, together=False))
                    times["picked in turn"].append(raw_saves(ns, picked, together=False))
                median = {name: 1000 * statistics.median(v) for name, v in times.items()}
                print(f"{picked}: cold observe, {args.runs} runs interleaved, medians: "
                      f"mode auto {median['auto']:.1f} ms, mode={picked!r} "
                      f"{median['given']:.1f} ms, extra {median['auto'] - median['given']:+.1f} ms")
                print(f"{picked}: raw -save of the same tables, IPv4 and IPv6: the other "
                      f"flavour's ({other}) started together {median['other together']:.1f} ms, "
                      f"one after the other {median['other in turn']:.1f} ms; the picked "
                      f"flavour's one after the other {median['picked in turn']:.1f} ms")
            found: dict[str, list[float]] = {"detect": [], "raw": []}
            for _ in range(args.runs):
                found["detect"].append(detection(ns, state))
                found["raw"].append(raw_saves(ns, picked, together=False)
                                    + raw_saves(ns, other, together=False))
            median = {name: 1000 * statistics.median(v) for name, v in found.items()}
            print(f"{picked}: mode detection (first use), {args.runs} runs interleaved, "
                  f"medians: {median['detect']:.1f} ms, the four raw -save runs "
                  f"{median['raw']:.1f} ms, extra {median['detect'] - median['raw']:+.1f} ms")


if __name__ == "__main__":
    exit_on_signals()  # a timeout or a closed terminal still deletes the namespaces
    main()
