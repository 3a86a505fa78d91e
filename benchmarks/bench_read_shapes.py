"""What reading NAT rules by their shape saves: nftables' and iptables' text read, with and
without it, side by side in one run.

Run as root (a fresh network namespace, deleted at the end, also on error)::

    .venv/bin/python benchmarks/bench_read_shapes.py [--sizes 1000 10000] [--runs 7]

For each size N, a namespace holds the N NAT rules of the spec ``bench_paths.py`` writes
(one pod source, a /28 destination each, out through ``eth0``) as k3snet's nftables
backend writes them, another the same with the spec's N forward rules (two rules each),
a third with N masquerade rules that share no shape (an exclusion in each: the case
where the shortcut can only cost), and three more the same as its iptables backend
writes them (nft mode). Their listings (``nft -a list table inet k3snet``,
``iptables-nft-save``) are taken once; what is timed, in this process, is k3snet
reading that text into objects with nothing rendered before (a fresh process, a
library ``observe()`` with no hint):

* nftables: :func:`k3snet.backends.nftables.text.listed_rules`;
* iptables: :func:`k3snet.backends.iptables.save.parse_save` and
  :func:`k3snet.backends.iptables.table.load_table` of the nat and filter tables;

each with the shape shortcut (as k3snet runs) and without it (every line read in full:
for nftables the shape patterns made ones that match nothing, for iptables no shape
found), alternating, the cyclic GC paused as the backends pause it for a read, CPU time,
medians of ``--runs``. Both ways must give the same result (checked). Figures:
docs/performance.md, "Reading by shape".

Last, the iptables read of the first namespace's listing with N one-rule ``KUBE-SEP-*``
chains added to its nat table, as k3snet runs and without the foreign-jump scan (the
search for an admin's ``K3SNET-*`` chains and for the foreign rules jumping into
k3snet's, ``table._foreign_chains``, made to find nothing): what the scan costs.
Figures: docs/performance.md, "Foreign jumps into k3snet's chains".
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import ipaddress
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

from bench_paths import Node, spec_text

from k3snet.backends.iptables import table as ipt_table
from k3snet.backends.iptables.save import parse_save
from k3snet.backends.iptables.table import load_table
from k3snet.backends.kit import GC_PAUSE_MIN, gc_paused
from k3snet.backends.nftables import text as nft_text
from k3snet.lab.netns import exit_on_signals, run_in, temporary_netns
from k3snet.model import MasqueradeRule, State
from k3snet.render.iptables import render_iptables_save
from k3snet.render.iptables import rules as ipt_rules
from k3snet.render.iptables.rules import HOOKS, clear_caches
from k3snet.render.nftables import render_nftables_conf
from k3snet.spec import Spec, compile  # noqa: A004 - the library's name

_NOTHING = re.compile(r"(?!)")


def _nft_full() -> Any:
    return mock.patch.object(nft_text, "_SHAPE", _NOTHING), mock.patch.object(
        nft_text, "_REPLY_SHAPE", _NOTHING)


def _nft_read(text: str) -> Any:
    nft_text.prefix_of.cache_clear()  # as in a fresh process
    read = nft_text.listed_rules(text, "inet", "k3snet")
    assert read is not None, "the text reader did not take the table"
    return read


def _ipt_full() -> Any:
    return (mock.patch.object(ipt_rules, "_shape_of", return_value=None),)


def _no_scan() -> Any:
    return (mock.patch.object(ipt_table, "_foreign_chains", return_value=(set(), [])),)


def _scan_ms(text: str, runs: int) -> float:
    """Median CPU time of the foreign-jump scan alone within :func:`_ipt_read`."""
    scan = ipt_table._foreign_chains  # the function measured
    times = []
    for _ in range(runs):
        spent = [0.0]

        def timed(*args: Any, spent: list[float] = spent) -> Any:
            start = time.process_time()
            try:
                return scan(*args)
            finally:
                spent[0] += time.process_time() - start

        gc.collect()
        with gc_paused(GC_PAUSE_MIN), mock.patch.object(ipt_table, "_foreign_chains", timed):
            _ipt_read(text)
        times.append(spent[0])
    return statistics.median(times) * 1000


def _ipt_read(text: str) -> Any:
    clear_caches()
    dump = parse_save(text)
    states = [load_table(4, HOOKS[table], dump.get(table)) for table in ("nat", "filter")]
    return [(sorted(state.owned.values()), state.findings) for state in states]


def _own_shapes(size: int) -> State:
    """``size`` masquerade rules that share no shape: an exclusion in each (half of its
    destination)."""
    nets = [ipaddress.IPv4Network((0x64400000 + (n << 8), 24)) for n in range(size)]
    return State(owned=[MasqueradeRule("10.42.0.0/16", destination=net,
                                       exclude=[next(net.subnets())]) for net in nets])


def _listing(name: str, size: int) -> str:
    """The listing of ``size`` destinations' rules written by the backend ``name`` (a
    namespace each): NAT rules, with ``-forward`` their forward rules too, with ``-own``
    NAT rules of a shape each, with ``-foreign`` NAT rules and ``size`` foreign chains."""
    backend, _, kind = name.rpartition("-") if name.endswith(("-forward", "-own",
                                                               "-foreign")) \
        else (name, "", "")
    with tempfile.TemporaryDirectory(prefix="k3snet-bench-") as tmp, \
            temporary_netns("shapes") as ns:
        node = Node(ns, Path(tmp), backend)
        if kind in ("", "foreign"):
            node.raw_full(size)()
        if kind == "foreign":  # kube-proxy's endpoint chains: one rule each
            lines = ["*nat", *(f":KUBE-SEP-{n:06d} - [0:0]" for n in range(size)),
                     *(f"-A KUBE-SEP-{n:06d} -s 10.43.{n // 256}.{n % 256}/32 -j RETURN"
                       for n in range(size)), "COMMIT", ""]
            run_in(ns, ["iptables-nft-restore", "--noflush"], input_text="\n".join(lines),
                   timeout=300)
        elif kind:
            state = _own_shapes(size) if kind == "own" else \
                compile(Spec.from_yaml(spec_text(size))).only({"nat", "forward"})
            if backend == "nftables":
                node.nft_text(render_nftables_conf(state))
            else:
                run_in(ns, ["iptables-nft-restore", "--noflush"],
                       input_text=render_iptables_save(state, 4), timeout=300)
        argv = ["iptables-nft-save"] if backend == "iptables-nft" \
            else ["nft", "-a", "list", "table", "inet", "k3snet"]
        return run_in(ns, argv, timeout=300).stdout


def _cpu_ms(fn: Callable[[], Any], runs: int, without: Callable[[], Any]
            ) -> tuple[float, float, Any, Any]:
    """Medians of ``fn`` timed as k3snet runs and inside the patches ``without()`` makes
    (alternating)."""
    times: dict[bool, list[float]] = {True: [], False: []}
    reads: dict[bool, Any] = {}
    for _ in range(runs):
        for shortcut in (True, False):
            reads.pop(shortcut, None)
            gc.collect()
            # The GC paused, as the backends pause it for a read (k3snet.backends.kit).
            with gc_paused(GC_PAUSE_MIN), contextlib.ExitStack() as stack:
                if not shortcut:
                    for patch in without():
                        stack.enter_context(patch)
                start = time.process_time()
                reads[shortcut] = fn()
                times[shortcut].append(time.process_time() - start)
    mine, full = times[True], times[False]
    first, second = reads[True], reads[False]
    return statistics.median(mine) * 1000, statistics.median(full) * 1000, first, second


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    for size in args.sizes:
        texts = {name: _listing(name, size) for name in (
            "nftables", "nftables-forward", "nftables-own", "iptables-nft",
            "iptables-nft-forward", "iptables-nft-own")}
        for name, listing, read, without in (
                ("nftables text read", "nftables", _nft_read, _nft_full),
                ("nftables text read, NAT and forward rules", "nftables-forward", _nft_read,
                 _nft_full),
                ("iptables unhinted read", "iptables-nft", _ipt_read, _ipt_full),
                ("iptables unhinted read, NAT and forward rules", "iptables-nft-forward",
                 _ipt_read, _ipt_full),
                ("nftables text read, every rule a shape of its own", "nftables-own",
                 _nft_read, _nft_full),
                ("iptables unhinted read, every rule a shape of its own", "iptables-nft-own",
                 _ipt_read, _ipt_full)):
            text = texts[listing]
            mine, full, first, second = _cpu_ms(lambda r=read, t=text: r(t), args.runs, without)
            assert first == second, f"{name}: the shortcut read something else"
            print(f"{name}, {size} destinations: by shape {mine:.1f} ms, every line in full "
                  f"{full:.1f} ms ({mine / full:.2f}x; {mine / size * 1000:.1f} against "
                  f"{full / size * 1000:.1f} us a destination)", flush=True)
        text = _listing("iptables-nft-foreign", size)
        mine, without, first, second = _cpu_ms(lambda t=text: _ipt_read(t), args.runs, _no_scan)
        assert first == second, "the foreign-jump scan changed what was read"
        scan = _scan_ms(text, args.runs)
        print(f"iptables unhinted read, {size} destinations and {size} foreign chains in nat: "
              f"{mine:.1f} ms, without the foreign-jump scan {without:.1f} ms "
              f"({mine - without:+.1f} ms); the scan alone {scan:.1f} ms "
              f"({scan / mine:.1%} of the read)", flush=True)
    return 0


if __name__ == "__main__":
    exit_on_signals()  # a timeout or a closed terminal still deletes the namespaces
    sys.exit(main())
