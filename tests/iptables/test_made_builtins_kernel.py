"""Built-in chains and tables iptables-nft made for k3snet's jump go with it, if unused.

On a namespace where nothing used ``ip filter FORWARD`` or ``ip6 nat POSTROUTING``,
iptables-nft creates them (and their tables) for k3snet's jump; a destroy left them,
empty with policy accept (a nat chain keeping connection tracking on). What the apply
made is recorded (:mod:`k3snet.backends.iptables.made`); a destroy deletes it when
still unused, and never a chain or table that existed before, holds another
program's rule, or an admin set to policy drop. Checked with ``nft -j list ruleset``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.iptables.driver import Processes
from k3snet.backends.nfgen import GenerationReader
from k3snet.converge import destroy
from k3snet.errors import ApplyError
from k3snet.lab.netns import run_in
from k3snet.model import ForwardRule, MasqueradeRule, State
from k3snet.planner import Plan, plan

pytestmark = pytest.mark.kernel

WANTED = State(owned=[
    ForwardRule("10.42.0.0/16", "192.168.2.0/24"),
    MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24"),
    ForwardRule("fd42::/56", "fd01:2::/64"),
    MasqueradeRule("fd42::/56", destination="fd01:2::/64"),
])


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("K3SNET_LOCK_DIR", str(tmp_path / "locks"))
    return tmp_path


@pytest.fixture
def backend(ns: str, state_dir: Path) -> Iterator[IptablesBackend]:
    with IptablesBackend(ns, mode="nft", state_dir=state_dir) as made:
        yield made


def _ruleset(ns: str) -> dict[tuple[str, str], dict[str, dict[str, object]]]:
    """{(family, table): {chain: {"policy": ..., "rules": n}}} as nft lists it."""
    listed = json.loads(run_in(ns, ["nft", "-j", "list", "ruleset"]).stdout)["nftables"]
    tables: dict[tuple[str, str], dict[str, dict[str, object]]] = {}
    for item in listed:
        if "table" in item:
            tables[item["table"]["family"], item["table"]["name"]] = {}
        elif "chain" in item:
            chain = item["chain"]
            tables[chain["family"], chain["table"]][chain["name"]] = {
                "policy": chain.get("policy"), "rules": 0}
        elif "rule" in item:
            rule = item["rule"]
            tables[rule["family"], rule["table"]][rule["chain"]]["rules"] += 1  # type: ignore[operator]
    return tables


def test_a_destroy_removes_the_built_in_chains_and_tables_its_apply_made(
        ns: str, backend: IptablesBackend, state_dir: Path) -> None:
    assert _ruleset(ns) == {}
    backend.apply(plan(backend.observe(), WANTED))
    assert set(_ruleset(ns)) == {("ip", "filter"), ("ip", "nat"), ("ip6", "filter"),
                                 ("ip6", "nat")}
    record = json.loads((state_dir / ns / "iptables-made.json").read_text())
    assert sorted((m["family"], m["table"], m["chain"], m["table_made"])
                  for m in record["made"]) == [
        ("ip", "filter", "FORWARD", True), ("ip", "nat", "POSTROUTING", True),
        ("ip6", "filter", "FORWARD", True), ("ip6", "nat", "POSTROUTING", True)]
    destroy(backend)
    assert _ruleset(ns) == {}  # nothing k3snet made is left, empty or not
    assert not (state_dir / ns / "iptables-made.json").exists()
    assert plan(backend.observe(), State()).empty


def test_built_in_chains_that_existed_before_stay(ns: str, backend: IptablesBackend,
                                                  state_dir: Path) -> None:
    # Another program's table and chain, empty with policy accept: not k3snet's to delete.
    run_in(ns, ["iptables-nft", "-w", "-P", "FORWARD", "ACCEPT"])
    before = _ruleset(ns)
    assert before == {("ip", "filter"): {"FORWARD": {"policy": "accept", "rules": 0}}}
    backend.apply(plan(backend.observe(), WANTED))
    destroy(backend)
    assert _ruleset(ns) == before


@pytest.mark.parametrize("meanwhile", [
    ["iptables-nft", "-w", "-A", "FORWARD", "-s", "10.9.0.0/16", "-j", "ACCEPT"],
    ["iptables-nft", "-w", "-P", "FORWARD", "DROP"],
], ids=["another-rule", "policy-drop"])
def test_a_built_in_chain_another_program_uses_since_stays(
        ns: str, backend: IptablesBackend, state_dir: Path, meanwhile: list[str]) -> None:
    backend.apply(plan(backend.observe(), WANTED))
    run_in(ns, meanwhile)  # kube-proxy's rule, an admin's policy: the chain is theirs now
    destroy(backend)
    left = _ruleset(ns)
    assert set(left) == {("ip", "filter")}  # the others went
    (forward,) = left["ip", "filter"].values()
    assert forward == ({"policy": "accept", "rules": 1} if "-A" in meanwhile
                       else {"policy": "drop", "rules": 0})
    assert not (state_dir / ns / "iptables-made.json").exists()  # no longer k3snet's


def test_a_table_holding_another_chain_since_stays_without_the_built_in_chain(
        ns: str, backend: IptablesBackend) -> None:
    backend.apply(plan(backend.observe(), WANTED))
    run_in(ns, ["iptables-nft", "-w", "-N", "ADMIN"])
    destroy(backend)
    left = _ruleset(ns)
    assert left == {("ip", "filter"): {"ADMIN": {"policy": None, "rules": 0}}}


LAST = MasqueradeRule("fd42::/56", destination="fd01:2::/64")  # WANTED's, in ip6 nat


def _failing(backend: IptablesBackend) -> Plan:
    """The plan of WANTED, ``backend`` set to fail at IPv6's masquerade (its nat table,
    after the IPv4 tables and IPv6's filter table were committed, then taken back)."""
    wanted = plan(backend.observe(), WANTED)
    backend.faults.fail_at(next(i for i, change in enumerate(wanted.changes)
                                if change.subject == LAST))
    return wanted


def test_a_failed_apply_takes_back_the_built_in_chains_and_tables_it_made(
        ns: str, backend: IptablesBackend, state_dir: Path) -> None:
    # The undo took k3snet's rules back; the tables and built-in chains iptables-nft had
    # made for them stayed, empty (`ip filter FORWARD`, `ip nat POSTROUTING`, ...).
    with pytest.raises(ApplyError, match="were undone"):
        backend.apply(_failing(backend))
    assert _ruleset(ns) == {}
    assert not (state_dir / ns / "iptables-made.json").exists()


def test_a_failed_apply_leaves_a_table_that_existed_before_and_another_program_s_rule(
        ns: str, backend: IptablesBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    run_in(ns, ["iptables-nft", "-w", "-N", "ADMIN"])  # ip filter, before k3snet's apply
    assert _ruleset(ns) == {("ip", "filter"): {"ADMIN": {"policy": None, "rules": 0}}}
    real = Processes.restore
    added: list[int] = []

    def restore(self: Processes, family: int, *args: Any, **kwargs: Any) -> Any:
        if family == 6 and not added:  # the IPv4 tables committed: a rule in ip6 nat
            added.append(family)
            run_in(ns, ["ip6tables-nft", "-w", "-t", "nat", "-A", "POSTROUTING",
                        "-s", "fd09::/64", "-j", "ACCEPT"])
        return real(self, family, *args, **kwargs)

    monkeypatch.setattr(Processes, "restore", restore)
    with pytest.raises(ApplyError, match="were undone"):
        backend.apply(_failing(backend))
    assert _ruleset(ns) == {
        ("ip", "filter"): {"ADMIN": {"policy": None, "rules": 0}},  # FORWARD taken back
        ("ip6", "nat"): {"POSTROUTING": {"policy": "accept", "rules": 1}},  # theirs
    }


def test_a_built_in_chain_a_failed_apply_could_not_take_back_is_recorded_for_later(
        ns: str, backend: IptablesBackend, state_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Another program writing the ruleset as the failed apply deletes what it made
    # (kube-proxy's periodic sync): the kernel refuses each delete (ERESTART, the
    # generation moved). What stayed was recorded nowhere: the next apply found the
    # chains there, and its destroy left them, empty, for good.
    run_in(ns, ["nft", "add", "table", "inet", "busy"])
    run_in(ns, ["nft", "add", "chain", "inet", "busy", "sync"])
    real = GenerationReader.delete_unchanged

    def delete_unchanged(self: GenerationReader, *args: Any, **kwargs: Any) -> None:
        run_in(ns, ["nft", "add", "rule", "inet", "busy", "sync", "counter"])  # meanwhile
        real(self, *args, **kwargs)

    monkeypatch.setattr(GenerationReader, "delete_unchanged", delete_unchanged)
    with pytest.raises(ApplyError, match="were undone"):
        backend.apply(_failing(backend))
    monkeypatch.undo()
    assert set(_ruleset(ns)) == {("inet", "busy"), ("ip", "filter"), ("ip", "nat"),
                                 ("ip6", "filter")}  # each delete refused
    backend.apply(plan(backend.observe(), WANTED))
    destroy(backend)
    assert set(_ruleset(ns)) == {("inet", "busy")}  # nothing k3snet made is left
    assert not (state_dir / ns / "iptables-made.json").exists()
