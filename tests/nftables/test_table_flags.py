"""Flags on k3snet's own table: ``dormant`` is drift that apply repairs, others are refused.

``nft add table inet k3snet '{ flags dormant; }'`` unhooks every base chain of the
table: its rules stay listed but see no packet. libnftables 1.0.6 prints a
flagged table's JSON wrong (``"flags": "k3snet"``, or output that is no JSON), so
the flags are read from the text listing. A table another process owns
(``flags owner``) only that process may change: k3snet refuses it, naming it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from k3snet.backends.nftables import NftablesBackend
from k3snet.backends.nftables.parse import read_own
from k3snet.backends.nftables.text import table_flags
from k3snet.errors import BackendError
from k3snet.lab.netns import run_in
from k3snet.model import Drift, ForwardRule, MasqueradeRule, State
from k3snet.planner import plan
from k3snet.render.nftables import TABLE_COMMENT, TableFamily

WANTED = State(owned=[MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24"),
                      MasqueradeRule("fd42::/64", destination="fd00:b::/64"),
                      ForwardRule("10.42.0.0/16", "192.168.2.0/24")])
DORMANT = ("drift in nftables {family} k3snet: flags dormant: the table's chains are "
           "unhooked, none of its rules sees a packet (apply rebuilds the table)")


def table_text(ns: str, family: str) -> str:
    return run_in(ns, ["nft", "list", "table", family, "k3snet"]).stdout


def test_the_flags_are_read_from_the_tables_text() -> None:
    assert table_flags("table inet k3snet { # handle 1\n\tflags dormant\n\n\tchain x {") == (
        "dormant",)
    assert table_flags("table inet k3snet { # handle 1 progname python\n\tflags owner\n}") == (
        "owner",)
    assert table_flags("table inet k3snet { # handle 1\n\tflags dormant,owner\n}") == (
        "dormant", "owner")
    assert table_flags("table inet k3snet { # handle 1\n\tchain x { # handle 2\n") == ()


class _Json:
    """A JSON-only lister serving a table as libnftables 1.0.6 prints a flagged one."""

    def __init__(self, flags: object) -> None:
        self.flags = flags

    def list(self, kind: str, **ref: str) -> list[dict[str, object]] | None:
        table = {"family": "inet", "name": "k3snet", "handle": 1, "flags": self.flags,
                 "comment": TABLE_COMMENT}
        return [{"table": table}]


@pytest.mark.parametrize(("flags", "shown"), [
    ("dormant", "flags dormant"), (["dormant"], "flags dormant"),
    ("k3snet", "flags libnftables printed as 'k3snet'")])
def test_a_flagged_table_read_from_json_is_drift(flags: object, shown: str) -> None:
    cache = read_own(_Json(flags), "k3snet", ("inet",), 1)
    [(drift, repair)] = [d for d in cache.drift.values() if "flags" in d[0].describe()]
    assert f"inet k3snet: {shown}" in drift.describe()
    assert repair.rebuild


@pytest.mark.kernel
@pytest.mark.parametrize(("family", "extra"), [
    ("inet", ""),
    ("split", ""),
    # a rule the text reader does not take: the table is read from its chains' JSON
    ("inet", "add rule inet k3snet postrouting counter\n"),
])
def test_a_dormant_table_is_drift_that_apply_wakes(ns: str, family: TableFamily,
                                                   extra: str) -> None:
    tables = ("inet",) if family == "inet" else ("ip", "ip6")
    with NftablesBackend(ns, family=family, observe_foreign=False) as backend:
        backend.apply(plan(backend.observe(), WANTED))
        script = "".join(f"add table {t} k3snet {{ flags dormant; }}\n" for t in tables)
        run_in(ns, ["nft", "-f", "-"], input_text=script + extra)
        assert all("flags dormant" in table_text(ns, t) for t in tables)

        observed = backend.observe()
        drift = sorted(d.describe() for d in observed.owned if isinstance(d, Drift))
        assert [d for d in drift if "dormant" in d] == [DORMANT.format(family=t)
                                                        for t in tables]
        assert observed.owned - {d for d in observed.owned if isinstance(d, Drift)} == (
            WANTED.owned)
        p = plan(observed, WANTED)
        assert p.counts() == {"add": 0, "replace": 0, "delete": len(drift)}
        assert "flags dormant" in p.render()
        backend.apply(p)
        assert backend.observe(refresh=True).owned == WANTED.owned
        assert plan(backend.observe(), WANTED).changes == ()
    # The kernel's view: no flag, every chain hooked again, every rule there.
    for t in tables:
        text = table_text(ns, t)
        assert "flags" not in text
        assert "hook postrouting" in text
        assert "counter" not in text
    assert "10.42.0.0/16" in table_text(ns, tables[0])
    assert "fd42::/64" in table_text(ns, tables[-1])


@pytest.fixture
def owned_elsewhere(ns: str) -> Iterator[str]:
    """``inet k3snet`` made with ``flags owner`` by another process, alive meanwhile."""
    pytest.importorskip("nftables")
    holder = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c",
         "import nftables, sys\n"
         "nft = nftables.Nftables()  # its socket owns the table while it is open\n"
         "nft.cmd('add table inet k3snet { flags owner; }')\n"
         "print('ready', flush=True)\n"
         "sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "ready\n"
        yield ns
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.kernel
def test_a_table_another_process_owns_is_refused(owned_elsewhere: str) -> None:
    ns = owned_elsewhere
    before = table_text(ns, "inet")
    with NftablesBackend(ns, observe_foreign=False) as backend, pytest.raises(
            BackendError, match=r"nftables table inet k3snet has flags owner"):
        backend.observe()
    assert table_text(ns, "inet") == before
