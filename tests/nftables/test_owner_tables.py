"""A table another process owns (``flags owner``) goes with it, the generation id unmoved.

The kernel deletes an owned table when its owner's netlink socket closes, outside any
transaction: ``NFT_MSG_GETGEN`` answers the same id before and after (checked here
against the kernel). A warm backend (the agent's) kept what it read of the other
tables while that id stood: an owned table's masquerade, once met, stayed "met" after
the table was gone, so k3snet wrote no rule and pod egress went out untranslated; and
the change token did not move, so the agent skipped its passes. The tables processes
own are now part of the stamp of the foreign read and of the change token.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from k3snet.backends.netns import NetnsRunner
from k3snet.backends.nfgen import GenerationReader
from k3snet.backends.nftables import NftablesBackend
from k3snet.lab.netns import run_in
from k3snet.model import MasqueradeRule, State
from k3snet.planner import plan

pytestmark = pytest.mark.kernel

WANTED = State(owned=[MasqueradeRule("10.42.0.0/16")])
OWNED_NAT = ("add table inet owned { flags owner; }; "
             "add chain inet owned post { type nat hook postrouting priority srcnat; }; "
             "add rule inet owned post ip saddr 10.42.0.0/16 masquerade")


@contextmanager
def owned_table(ns: str) -> Iterator[subprocess.Popen[str]]:
    """``inet owned`` (a masquerade of the pods) made by another process with ``flags
    owner``; it ends when its stdin closes (or, at the latest, on leaving)."""
    pytest.importorskip("nftables")
    holder = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c",
         "import nftables, sys\n"
         "nft = nftables.Nftables()  # its socket owns the table while it is open\n"
         f"print(nft.cmd({OWNED_NAT!r})[0], flush=True)\n"
         "sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "0\n"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def end(holder: subprocess.Popen[str], ns: str) -> None:
    """End the owner; its table is gone from the kernel's listing."""
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait()
    assert "owned" not in run_in(ns, ["nft", "list", "tables"]).stdout


def test_an_owned_table_goes_without_moving_the_generation_id(ns: str) -> None:
    # What the fix is for: the kernel's own behaviour, and what the reader lists.
    runner = NetnsRunner(ns)
    try:
        reader = runner.call(GenerationReader)
        with owned_table(ns) as holder:
            before = runner.call(reader.read)
            assert {(f, n) for f, n, _ in runner.call(reader.owner_tables)} == {
                ("inet", "owned")}
            end(holder, ns)
            assert runner.call(reader.read) == before
            assert runner.call(reader.owner_tables) == frozenset()
        runner.call(reader.close)
    finally:
        runner.close()


def test_a_foreign_masquerade_gone_with_its_owner_is_no_longer_met(ns: str) -> None:
    with NftablesBackend(ns) as backend, owned_table(ns) as holder:
        token = backend.change_token()
        met = plan(backend.observe(), WANTED)
        assert met.empty
        assert [n.status for n in met.notes] == ["met"]
        end(holder, ns)
        assert backend.change_token() != token  # the agent's watch sees it
        wanted = plan(backend.observe(), WANTED)
        assert [c.action for c in wanted.changes] == ["add"]
        backend.apply(wanted)
        assert "ip saddr 10.42.0.0/16 masquerade" in run_in(
            ns, ["nft", "list", "table", "inet", "k3snet"]).stdout


def test_a_prefetched_read_of_an_owned_table_since_gone_is_not_taken(ns: str) -> None:
    with NftablesBackend(ns) as backend, owned_table(ns) as holder:
        backend.prefetch()  # reads the other tables ahead, the owned one still there
        started = backend._started
        assert started is not None
        assert started.foreign is not None
        started.foreign.future.result(timeout=10)  # read, with the owned table's masquerade
        end(holder, ns)
        assert [c.action for c in plan(backend.observe(), WANTED).changes] == ["add"]


def test_without_owned_tables_the_token_is_the_generation_id(ns: str) -> None:
    with NftablesBackend(ns) as backend:
        runner = NetnsRunner(ns)
        try:
            reader = runner.call(GenerationReader)
            assert backend.change_token() == runner.call(reader.read)
            runner.call(reader.close)
        finally:
            runner.close()
