"""``IptablesBackend.prefetch()``: the saves started early, never read stale.

With iptables-nft, a cold ``k3snet apply`` starts the ``iptables-nft-save``
processes of its read before it compiles the spec, outside the namespace lock.
The observe takes their output only while the change token (the nftables
generation id) is the one read before they started, and saves again otherwise.
Kernel tests in a fresh namespace, against the tools' own view.
"""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.iptables.driver import Flavour, Processes, StartedSave
from k3snet.lab.netns import run_in
from k3snet.model import MasqueradeRule, State
from k3snet.planner import plan

pytestmark = pytest.mark.kernel

DESIRED = State(owned=[MasqueradeRule("10.50.0.0/16", destination="192.168.2.0/24"),
                       MasqueradeRule("fd50::/56", destination="fd02::/64", out_interface="eth0"),
                       MasqueradeRule("10.51.0.0/16", destination="192.168.3.0/24")])


class Counting(Processes):
    """The real tools, counting the saves run at once and those started early."""

    def __init__(self, netns: str) -> None:
        super().__init__(netns)
        self.saves = 0
        self.started: list[StartedSave] = []

    def save(self, family: int, mode: Flavour) -> str | None:
        self.saves += 1
        return super().save(family, mode)

    def start_save(self, family: int, mode: Flavour) -> StartedSave:
        self.started.append(super().start_save(family, mode))
        return self.started[-1]




def _backend(ns: str, mode: Flavour = "nft") -> tuple[IptablesBackend, Counting]:
    backend = IptablesBackend(ns, mode=mode)
    counting = Counting(ns)
    backend._kernel = counting  # the real seam, counted
    return backend, counting


def _written(ns: str, mode: Flavour = "nft") -> None:
    with IptablesBackend(ns, mode=mode) as writer:
        writer.apply(plan(writer.observe(), DESIRED))


def _read_now(ns: str, mode: Flavour = "nft") -> State:
    with IptablesBackend(ns, mode=mode) as fresh:
        return fresh.observe()


def _done(counting: Counting) -> None:
    """Wait until the saves started early have ended (their output is then stale for
    any commit that follows)."""
    for save in counting.started:
        process: Any = save._process  # the process still running
        if process is not None:
            process.wait(timeout=30)


def test_an_observe_after_a_prefetch_takes_its_saves(ns: str) -> None:
    _written(ns)
    backend, counting = _backend(ns)
    with backend:
        backend.expect(DESIRED)
        backend.prefetch()
        assert len(counting.started) == 2  # IPv4 and IPv6, running now
        observed = backend.observe()
    assert counting.saves == 0
    assert observed.owned == DESIRED.owned
    assert observed == _read_now(ns)


@pytest.mark.parametrize("commit", ["delete one of k3snet's rules", "add a foreign rule"])
def test_a_commit_after_the_prefetch_is_in_the_next_observe(ns: str, commit: str) -> None:
    _written(ns)
    backend, counting = _backend(ns)
    with backend:
        backend.prefetch()
        _done(counting)
        if commit == "add a foreign rule":
            run_in(ns, ["iptables-nft", "-A", "INPUT", "-j", "ACCEPT"])
        else:
            rule = next(line for line in run_in(ns, ["iptables-nft-save", "-t", "nat"])
                        .stdout.splitlines() if "192.168.3.0/24" in line and "k3snet:" in line)
            run_in(ns, ["iptables-nft", "-t", "nat", *shlex.split(rule.replace("-A ", "-D ", 1))])
        observed = backend.observe()
    assert counting.saves == 2  # saved again: what was started is stale
    assert all(save._process is None for save in counting.started)  # reaped
    assert observed == _read_now(ns)
    gone = MasqueradeRule("10.51.0.0/16", destination="192.168.3.0/24")
    assert (gone in observed.owned) == (commit == "add a foreign rule")


def test_iptables_legacy_starts_nothing(ns: str) -> None:
    _written(ns, "legacy")
    backend, counting = _backend(ns, "legacy")
    with backend:
        backend.prefetch()
        assert backend.observe().owned == DESIRED.owned
    assert counting.started == []


def test_a_prefetch_with_the_last_read_current_starts_nothing(ns: str) -> None:
    _written(ns)
    backend, counting = _backend(ns)
    with backend:
        first = backend.observe()
        backend.prefetch()
        assert counting.started == []
        assert backend.observe() is first


def test_close_ends_the_saves_a_prefetch_started(ns: str) -> None:
    _written(ns)
    backend, counting = _backend(ns)
    backend.prefetch()
    backend.prefetch()  # one set of saves at a time
    processes = [save._process for save in counting.started]
    backend.close()
    assert len(processes) == 2
    assert all(p is not None and p.returncode is not None for p in processes)
