"""The iptables observe cache: kept while the change token stands still (iptables-nft:
the nftables generation id; iptables-legacy: the filter and nat tables' digest).

Kernel tests in a fresh namespace: the saves the backend runs are counted (the
real tools, through a counting wrapper), and every answer is compared with
``iptables-nft-save``'s own view of the rules.
"""

from __future__ import annotations

import shlex

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.iptables.driver import Flavour, Processes
from k3snet.lab.netns import run_in
from k3snet.model import Drift, MasqueradeRule, State
from k3snet.planner import plan

pytestmark = pytest.mark.kernel

DESIRED = State(owned=[MasqueradeRule("10.50.0.0/16", destination="192.168.2.0/24"),
                       MasqueradeRule("10.51.0.0/16", destination="192.168.3.0/24")])


class CountingProcesses(Processes):
    """The real tools, counting the ``-save`` runs."""

    def __init__(self, netns: str) -> None:
        super().__init__(netns)
        self.saves = 0

    def save(self, family: int, mode: Flavour) -> str | None:
        self.saves += 1
        return super().save(family, mode)




def _backend(ns: str, mode: Flavour) -> tuple[IptablesBackend, CountingProcesses]:
    backend = IptablesBackend(ns, mode=mode)
    counting = CountingProcesses(ns)
    backend._kernel = counting  # the real seam, counted (the constructor makes a Processes)
    return backend, counting


def _our_lines(ns: str) -> list[str]:
    text = run_in(ns, ["iptables-nft-save", "-t", "nat"]).stdout
    return [line for line in text.splitlines()
            if line.startswith("-A K3SNET-") and "k3snet:" in line]


def _ours_in_kernel(ns: str) -> int:
    return len(_our_lines(ns))


def test_nothing_changed_nothing_read_and_any_commit_reads_again(ns: str) -> None:
    backend, counting = _backend(ns, "nft")
    with backend:
        backend.apply(plan(backend.observe(), DESIRED))
        first = backend.observe()
        assert first.owned == DESIRED.owned
        assert _ours_in_kernel(ns) == 2
        read = counting.saves
        assert backend.observe() is first  # the generation id did not move
        assert counting.saves == read
        token = backend.change_token()
        run_in(ns, ["iptables-nft", "-A", "INPUT", "-j", "ACCEPT"])  # anyone's commit
        assert backend.change_token() != token
        assert backend.observe().owned == DESIRED.owned
        assert counting.saves > read
        # Drift by hand is seen: the rule is gone from the kernel and from observe.
        victim = shlex.split(_our_lines(ns)[0])[1:]  # -A CHAIN spec... -> CHAIN spec...
        run_in(ns, ["iptables-nft", "-t", "nat", "-D", *victim])
        drifted = backend.observe()
        assert _ours_in_kernel(ns) < 2
        assert drifted.owned != DESIRED.owned
        repaired = plan(drifted, DESIRED)
        backend.apply(repaired)
        assert backend.observe().owned == DESIRED.owned
        assert not any(isinstance(o, Drift) for o in backend.observe().owned)
        assert _ours_in_kernel(ns) == 2


def test_legacy_observe_is_kept_while_its_tables_stand_still(ns: str) -> None:
    backend, counting = _backend(ns, "legacy")
    with backend:
        backend.apply(plan(backend.observe(), DESIRED))
        read = counting.saves
        assert backend.observe() is not backend.observe()  # nobody watches: each one reads
        assert counting.saves == read + 4
        assert isinstance(backend.change_token(), bytes)  # watched from now on (the agent)
        first = backend.observe()
        assert first.owned == DESIRED.owned
        read = counting.saves
        assert backend.observe() is first  # no rule of filter or nat changed
        assert counting.saves == read
        run_in(ns, ["iptables-legacy", "-t", "mangle", "-A", "OUTPUT", "-j", "ACCEPT"])
        moved = backend.observe()  # mangle is read too (its drops on the forward path)
        assert moved is not first
        assert counting.saves == read + 2
        first, read = moved, counting.saves
        assert backend.observe() is first
        run_in(ns, ["iptables-legacy", "-A", "INPUT", "-j", "ACCEPT"])  # anyone's rule
        again = backend.observe()
        assert again is not first
        assert again.owned == DESIRED.owned
        assert counting.saves == read + 2  # IPv4 and IPv6
        text = run_in(ns, ["iptables-legacy-save", "-t", "nat"]).stdout
        victim = shlex.split(next(line for line in text.splitlines()
                                  if line.startswith("-A K3SNET-") and "k3snet:" in line))[1:]
        run_in(ns, ["iptables-legacy", "-t", "nat", "-D", *victim])  # drift by hand
        assert backend.observe().owned != DESIRED.owned
