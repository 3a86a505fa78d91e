"""The iptables backend's readers, without root: recorded ``iptables-save`` through a fake seam.

``tests/data/iptables/`` holds what ``iptables-save`` printed in a lab namespace
(``record.py`` there) for both flavours and both families: a K3s node (flannel,
kube-proxy, Docker, an administrator's rule) alone, and with k3snet's chains for
``desired.json``. A :class:`FakeKernel` serves those texts as the backend's I/O
seam and keeps every restore run the backend would have made.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.iptables.driver import Flavour, RunFailedError
from k3snet.backends.iptables.foreign import foreign_forward, foreign_nat
from k3snet.backends.iptables.mode import detect_mode
from k3snet.backends.iptables.save import parse_save
from k3snet.backends.iptables.table import Op, restore_lines
from k3snet.errors import ApplyError, BackendError, PlanError
from k3snet.model import Drift, ForwardRule, MasqueradeRule, NetObject, SnatRule, State
from k3snet.planner import plan
from k3snet.render.iptables import render_iptables_save
from k3snet.render.iptables.rules import clear_caches, render_unit, tokenize

DATA = Path(__file__).resolve().parents[1] / "data" / "iptables"
MODES: tuple[Flavour, ...] = ("nft", "legacy")
DESIRED = State.from_dict(json.loads((DATA / "desired.json").read_text()))

# flannel's pod-to-pod returns before its masquerade spare the cluster CIDR, as the
# nftables reader reads the same chain
FLANNEL_MASQ = MasqueradeRule("10.42.0.0/16", exclude=["10.42.0.0/16", "224.0.0.0/4"],
                              random_fully=True)
FLANNEL_MASQ_V6 = MasqueradeRule("fd42:42::/56", exclude=["ff00::/8"], random_fully=True)
# flannel's pair meets the pods' traffic out; not the other way: its accept of that
# traffic's replies names their source (the pods), which a router's ICMP error does not come from.
FLANNEL_FWD = {ForwardRule("10.42.0.0/16", "0.0.0.0/0")}


def recorded(mode: str, family: int, *, foreign_only: bool = False) -> str:
    return (DATA / f"{mode}-{'foreign-' if foreign_only else ''}v{family}.save").read_text()


class FakeTable:
    """One table of a restore run: the lines it was fed, and whether it was committed."""

    def __init__(self, family: int, mode: str, table: str, refuse: str | None) -> None:
        self.family, self.mode, self.table = family, mode, table
        self.lines: list[str] = []
        self.committed = False
        self.refuse = refuse

    def refused(self) -> bool:
        return self.refuse == "" or (self.refuse is not None
                                     and any(self.refuse in line for line in self.lines))


class FakeRun:
    """One restore run of one family, fed table after table, as the real tool is.

    Like the tool, it stops at the first refused table: the tables before it are
    committed, the rest not.
    """

    def __init__(self, kernel: FakeKernel, family: int, mode: str) -> None:
        self.kernel, self.family, self.mode = kernel, family, mode
        self.tables: list[FakeTable] = []
        self.aborted = False

    def table(self, name: str) -> None:
        refuse = "" if len(self.kernel.tables) in self.kernel.refuse_tables else self.kernel.refuse
        section = FakeTable(self.family, self.mode, name, refuse)
        self.tables.append(section)
        self.kernel.tables.append(section)

    def send(self, lines: list[str]) -> None:
        self.tables[-1].lines += lines

    def commit(self) -> None:
        self.tables[-1].committed = True

    def _outcome(self) -> tuple[str | None, tuple[str, ...]]:
        """(the table refused, the tables committed before it)."""
        done: list[str] = []
        for section in self.tables:
            if not section.committed:
                return section.table, tuple(done)
            if section.refused():
                section.committed = False
                return section.table, tuple(done)
            done.append(section.table)
        return None, tuple(done)

    def wait(self) -> None:
        refused, done = self._outcome()
        if refused is not None:
            raise RunFailedError(f"refused the {refused} table", None, table=refused,
                                 committed=done)

    def abort(self) -> tuple[str, ...] | None:
        self.aborted = True
        return self._outcome()[1]


class FakeKernel:
    """The backend's I/O seam, serving recorded ``iptables-save`` text (and keeping the runs)."""

    streams = True
    where = "a fake kernel"

    def __init__(self, saves: dict[tuple[str, int], str], version: str = "",
                 refuse: str | None = None) -> None:
        self.saves = saves
        self._version = version
        self.refuse = refuse
        self.refuse_tables: set[int] = set()
        """Tables (by number over all runs, from 0) refused whatever they hold."""
        self.runs: list[FakeRun] = []
        self.tables: list[FakeTable] = []
        """Every table of every run, in order."""

    @classmethod
    def recorded(cls, mode: str, *, foreign_only: bool = False) -> FakeKernel:
        return cls({(mode, family): recorded(mode, family, foreign_only=foreign_only)
                    for family in (4, 6)})

    def save(self, family: int, mode: str) -> str | None:
        return self.saves.get((mode, family))

    def version(self) -> str:
        return self._version

    def restore(self, family: int, mode: str) -> FakeRun:
        run = FakeRun(self, family, mode)
        self.runs.append(run)
        return run

    def commit_ops(self, family: int, mode: Flavour, table: str, ops: Sequence[Op], *,
                   test: bool = False) -> None:
        run = self.restore(family, mode)
        run.table(table)
        run.send(restore_lines(ops))
        if not test:
            run.commit()
        else:
            run.tables[-1].committed = not run.tables[-1].refused()
        run.wait()

    def close(self) -> None:
        pass


def backend_on(kernel: FakeKernel, mode: Flavour) -> IptablesBackend:
    return IptablesBackend(mode=mode, kernel=kernel)


# -- the iptables-save parser ----------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("family", [4, 6])
def test_the_save_parser_reads_every_table_chain_policy_and_rule(mode: str, family: int) -> None:
    text = recorded(mode, family)
    dump = parse_save(text)
    assert set(dump) == {"filter", "nat"}
    assert dump["filter"].policies["FORWARD"] == "DROP"
    assert dump["nat"].policies["POSTROUTING"] == "ACCEPT"
    assert dump["nat"].policies["FLANNEL-POSTRTG"] == "-"
    rules = [line for line in text.splitlines() if line.startswith("-A ")]
    assert sum(len(r) for t in dump.values() for r in t.rules.values()) == len(rules)
    # Chains in the order printed, rules as printed (quotes kept for the tokenizer).
    declared = [line[1:].split(" ", 1)[0] for line in text.split("*nat", 1)[1].splitlines()
                if line.startswith(":")]
    assert list(dump["nat"].rules) == declared
    flannel = dump["nat"].chain("FLANNEL-POSTRTG")
    assert flannel[-1 if family == 6 else 4].endswith("-j MASQUERADE --random-fully")
    assert '"flanneld masq"' in flannel[0]
    assert tokenize(dump["nat"].chain("POSTROUTING")[-1])[-2:] == ("-j", "K3SNET-POSTROUTING")


def test_the_save_parser_skips_counters_comments_and_unknown_lines() -> None:
    dump = parse_save("# c\n*nat\n:POSTROUTING ACCEPT [3:180]\n[3:180] -A POSTROUTING -j X\n"
                      "junk\nCOMMIT\n-A POSTROUTING -j Y\n")
    assert dump["nat"].rules == {"POSTROUTING": ["-j X"]}
    assert dump["nat"].chain("MISSING") == []


# -- k3snet's own chains, read back ----------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_our_chains_read_back_as_the_state_applied(mode: Flavour) -> None:
    clear_caches()  # rebuilt from the text alone, as in a fresh process
    kernel = FakeKernel.recorded(mode)
    with backend_on(kernel, mode) as backend:
        observed = backend.observe()
        assert observed.owned == DESIRED.owned
        assert backend.drift == ()
        assert plan(observed, DESIRED).empty
        assert FLANNEL_MASQ in observed.foreign
        assert FLANNEL_MASQ_V6 in observed.foreign
        assert observed.foreign >= FLANNEL_FWD
        nat = [o for o in backend.ordered(4) if not isinstance(o, ForwardRule)]
        assert nat[0] == MasqueradeRule("10.52.0.0/24", destination="192.168.3.0/24")
        assert nat[-1] == MasqueradeRule("10.99.0.0/16", exclude=["10.0.0.0/8"])
    assert kernel.runs == []  # reading never writes


@pytest.mark.parametrize("mode", MODES)
def test_foreign_rules_read_from_a_k3s_node(mode: str) -> None:
    found: set[NetObject] = set()
    for family in (4, 6):
        dump = parse_save(recorded(mode, family, foreign_only=True))
        found |= foreign_nat(dump.get("nat"), family) | foreign_forward(dump.get("filter"), family)
    # kube-proxy's MASQUERADE only sees marked packets, Docker's has `! -o docker0`:
    # neither is modelled; flannel's rules are.
    assert found == {FLANNEL_MASQ, FLANNEL_MASQ_V6, *FLANNEL_FWD}


@pytest.mark.parametrize("mode", MODES)
def test_one_change_is_a_small_edit_of_our_chains_only(mode: Flavour) -> None:
    kernel = FakeKernel.recorded(mode)
    victim = MasqueradeRule("10.51.0.0/16", destination="192.168.2.0/24")
    new = SnatRule("10.51.0.0/16", destination="192.168.2.0/24", to_address="192.168.1.5")
    wanted = State(owned=[new if o == victim else o for o in DESIRED.owned])
    with backend_on(kernel, mode) as backend:
        p = plan(backend.observe(), wanted)
        assert len(p) == 1
        result = backend.apply(p)
    assert result.operations == 1
    [process] = kernel.runs
    [run] = process.tables
    assert (run.family, run.table, run.committed) == (4, "nat", True)
    old, added = render_unit(victim), render_unit(new)
    assert f"-A {added.chain} {' '.join(added.lines[0])}" in run.lines
    assert (f"-D {old.chain} {' '.join(old.lines[0])}" in run.lines
            or f"-X {old.chain}" in run.lines)
    # Only k3snet's chains are named: foreign and built-in chains are never edited.
    assert all(line.split()[0].lstrip(":").startswith("K3SNET-")
               or line.split()[1].startswith("K3SNET-") for line in run.lines), run.lines


@pytest.mark.parametrize("mode", MODES)
def test_a_refused_table_is_rolled_back_through_the_seam(mode: Flavour) -> None:
    # The second table (nat) is refused: the filter table already committed is put back.
    kernel = FakeKernel.recorded(mode)
    kernel.refuse = "K3SNET-N-d16"
    wanted = State(owned=[*DESIRED.owned, ForwardRule("10.60.0.0/16", "192.168.3.0/24"),
                          MasqueradeRule("10.60.0.0/16", destination="192.168.0.0/16")])
    with backend_on(kernel, mode) as backend:
        p = plan(backend.observe(), wanted)
        with pytest.raises(ApplyError) as caught:
            backend.apply(p)
    assert caught.value.done
    assert len(caught.value.rolled_back) == len(caught.value.done)
    # One restore run for both IPv4 tables, then one for the undo of filter.
    assert [[t.table for t in run.tables] for run in kernel.runs] == [["filter", "nat"],
                                                                      ["filter"]]
    filter_run, nat_run, undo = kernel.tables
    assert (filter_run.committed, nat_run.committed, undo.committed) == (True, False, True)
    assert any("K3SNET-F-" in line for line in filter_run.lines)
    assert any(line.startswith(("-F K3SNET-F-", "-D K3SNET-F-", ":K3SNET-F-"))
               for line in undo.lines)


# -- which flavour ---------------------------------------------------------------------


def test_mode_detection_from_recorded_outputs() -> None:
    ours = {m: [recorded(m, f) for f in (4, 6)] for m in MODES}
    node = {m: [recorded(m, f, foreign_only=True) for f in (4, 6)] for m in MODES}
    assert detect_mode({"nft": ours["nft"], "legacy": node["legacy"]}, "")[0] == "nft"
    assert detect_mode({"nft": node["nft"], "legacy": ours["legacy"]}, "")[0] == "legacy"
    assert detect_mode({"nft": [], "legacy": node["legacy"]}, "x (nf_tables)") == (
        "legacy", "only iptables-legacy has KUBE-/FLANNEL- chains")
    assert detect_mode({"nft": [], "legacy": []}, "iptables v1.8.9 (legacy)")[0] == "legacy"
    assert detect_mode({"nft": [], "legacy": []}, "iptables v1.8.9 (nf_tables)")[0] == "nft"
    kernel = FakeKernel({("legacy", 4): recorded("legacy", 4)}, version="iptables (nf_tables)")
    assert IptablesBackend(kernel=kernel).mode == "legacy"


class _FailingKernel(FakeKernel):
    """A kernel whose ``-save`` runs of the flavours in ``failing`` fail."""

    def __init__(self, failing: set[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failing = failing

    def save(self, family: int, mode: str) -> str | None:
        if mode in self.failing:
            raise BackendError(f"iptables-{mode}-save failed")
        return super().save(family, mode)


def test_mode_detection_reads_a_flavour_whose_save_fails_as_absent() -> None:
    kernel = _FailingKernel({"nft"}, saves={("legacy", f): recorded("legacy", f, foreign_only=True)
                                            for f in (4, 6)})
    assert IptablesBackend(kernel=kernel).mode == "legacy"
    # Every run failing is the failure (no privilege, the namespace gone), not a guess.
    with pytest.raises(BackendError, match="iptables-nft-save failed"):
        _ = IptablesBackend(kernel=_FailingKernel({"nft", "legacy"}, saves={})).mode


ADMIN_K3SNET_CHAIN = """*filter
:FORWARD ACCEPT [0:0]
:K3SNET-MINE - [0:0]
-A FORWARD -j K3SNET-MINE
-A K3SNET-MINE -s 10.99.0.0/16 -j DROP
COMMIT
"""


def test_an_admins_chain_named_like_k3snets_is_no_evidence_of_k3snet() -> None:
    # The admin's K3SNET-MINE is not k3snet's (load_table says so): in legacy, next to
    # one KUBE- chain in nft, it must not outweigh K3s's use of nft.
    kube = "*nat\n:POSTROUTING ACCEPT [0:0]\n:KUBE-POSTROUTING - [0:0]\nCOMMIT\n"
    assert detect_mode({"nft": [kube], "legacy": [ADMIN_K3SNET_CHAIN]}, "") == (
        "nft", "only iptables-nft has KUBE-/FLANNEL- chains")
    # k3snet's own chains, from an earlier run, still decide first.
    ours = [recorded("legacy", f) for f in (4, 6)]
    assert detect_mode({"nft": [kube], "legacy": ours}, "") == (
        "legacy", "only iptables-legacy has K3SNET- chains")


# -- negated matches are never positive ones -------------------------------------------


def _node_with(nat: list[str] = (), forward: list[str] = ()) -> State:  # type: ignore[assignment]
    """observe() of the recorded K3s node (IPv4, nft) with extra foreign rules."""
    text = recorded("nft", 4, foreign_only=True)
    for table, lines in (("nat", nat), ("filter", forward)):
        head, tail = text.split(f"*{table}\n", 1)
        declared, rest = tail.split("\n-A ", 1)
        chains = sorted({line.split()[1] for line in lines} - {"POSTROUTING", "FORWARD"})
        extra = "".join(f":{c} - [0:0]\n" for c in chains)
        text = f"{head}*{table}\n{declared}\n{extra}" + "\n".join(lines) + "\n-A " + rest
    kernel = FakeKernel({("nft", 4): text, ("nft", 6): recorded("nft", 6, foreign_only=True)})
    with backend_on(kernel, "nft") as backend:
        return backend.observe()


OURS = MasqueradeRule("10.50.0.0/16", destination="192.168.2.0/24")
OURS_FWD = ForwardRule("10.50.0.0/16", "192.168.2.0/24")
REPLY = "-A FORWARD -d 10.50.0.0/16 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"


def test_a_positive_foreign_masquerade_meets_ours() -> None:
    # The control: without the negations below, the same rules do our job.
    observed = _node_with(nat=["-A POSTROUTING -s 10.50.0.0/16 -d 192.168.2.0/24 -j MASQUERADE"],
                          forward=["-A FORWARD -s 10.50.0.0/16 -d 192.168.2.0/24 -j ACCEPT",
                                   REPLY])
    p = plan(observed, State(owned=[OURS, OURS_FWD]))
    assert p.empty
    assert {n.wanted for n in p.met} == {OURS, OURS_FWD}


@pytest.mark.parametrize("rule", [
    "-A POSTROUTING -s 10.50.0.0/16 ! -d 192.168.2.0/24 -j MASQUERADE",
    "-A POSTROUTING ! -s 10.50.0.0/16 -d 192.168.2.0/24 -j MASQUERADE",
    "-A POSTROUTING ! -s 10.50.0.0/16 ! -d 192.168.2.0/24 -j MASQUERADE",
], ids=["not-d", "not-s", "not-both"])
def test_a_foreign_masquerade_that_skips_our_traffic_does_not_meet_ours(rule: str) -> None:
    observed = _node_with(nat=[rule])
    p = plan(observed, State(owned=[OURS]))
    assert [c.subject for c in p.changes] == [OURS], p.render()
    if "! -s" not in rule:  # `! -d` is an exclusion: read as exactly that
        assert MasqueradeRule("10.50.0.0/16", exclude=["192.168.2.0/24"]) in observed.foreign


@pytest.mark.parametrize("accept", [
    "-A FORWARD -s 10.50.0.0/16 ! -d 192.168.2.0/24 -j ACCEPT",
    "-A FORWARD ! -s 10.50.0.0/16 -d 192.168.2.0/24 -j ACCEPT",
], ids=["not-d", "not-s"])
def test_a_foreign_accept_that_skips_our_traffic_does_not_meet_ours(accept: str) -> None:
    observed = _node_with(forward=[accept, REPLY])
    p = plan(observed, State(owned=[OURS_FWD]))
    assert [c.subject for c in p.changes] == [OURS_FWD], p.render()
    assert not [o for o in observed.foreign
                if isinstance(o, ForwardRule) and o.destination.prefixlen in (0, 24)
                and o.source.prefixlen == 16 and str(o.source) == "10.50.0.0/16"]


def test_a_jump_that_skips_our_destination_hides_what_its_chain_does() -> None:
    observed = _node_with(
        nat=["-A POSTROUTING ! -d 192.168.2.0/24 -j SKIPPER", "-A SKIPPER -s 10.50.0.0/16 -j "
             "MASQUERADE"],
        forward=["-A FORWARD ! -d 192.168.2.0/24 -j SKIPPER", "-A SKIPPER -s 10.50.0.0/16 -j "
                 "ACCEPT", "-A SKIPPER -d 10.50.0.0/16 -j ACCEPT"])
    p = plan(observed, State(owned=[OURS, OURS_FWD]))
    assert {c.subject for c in p.changes} == {OURS, OURS_FWD}, p.render()
    assert not p.met


def test_a_reply_accept_must_not_be_negated_either() -> None:
    observed = _node_with(forward=["-A FORWARD -s 10.50.0.0/16 -d 192.168.2.0/24 -j ACCEPT",
                                   "-A FORWARD ! -s 192.168.2.0/24 -d 10.50.0.0/16 -j ACCEPT"])
    assert [c.subject for c in plan(observed, State(owned=[OURS_FWD])).changes] == [OURS_FWD]


def test_a_negated_match_in_our_chain_is_never_read_as_our_rule() -> None:
    # A rule of ours whose `-s` was turned into `! -s` (hash kept) is drift, not our object.
    text = recorded("nft", 4).replace(
        "-A K3SNET-N-d24-s16-a-3 -s 10.51.0.0/16", "-A K3SNET-N-d24-s16-a-3 ! -s 10.51.0.0/16")
    kernel = FakeKernel({("nft", 4): text, ("nft", 6): recorded("nft", 6)})
    with backend_on(kernel, "nft") as backend:
        observed = backend.observe()
        assert MasqueradeRule("10.51.0.0/16", destination="192.168.2.0/24") not in observed.owned
        assert backend.drift


# -- drift: seen by observe, a change in every plan, repaired by apply -----------------

HOOK_NAT = "-A POSTROUTING -m comment --comment k3snet -j K3SNET-POSTROUTING"
HOOK_FWD = "-A FORWARD -m comment --comment k3snet -j K3SNET-FORWARD"
BUCKET = ('-A K3SNET-N-d24-s16-a-3 -s 10.51.0.0/16 -d 192.168.2.0/24 -m comment --comment '
          '"k3snet:397ffea18f7845b1" -j MASQUERADE')
LAST_JUMP = "-A K3SNET-POSTROUTING -m comment --comment k3snet -j K3SNET-N-d0-s16-a-4"


def _after(text: str, line: str, extra: str) -> str:
    assert line in text
    return text.replace(line + "\n", f"{line}\n{extra}\n", 1)


REPLY_F7 = ("-A K3SNET-F-7 -d 10.50.0.0/16 -i eth0 -o cni0 -m conntrack --ctstate "
            "RELATED,ESTABLISHED --ctdir REPLY -m comment --comment k3snet:7d052c43265ec5b7 "
            "-j ACCEPT")


# name: (edit of the recorded IPv4 text, (table, chain) of the drift, a line the repair sends)
DRIFTS: dict[str, tuple[Callable[[str], str], tuple[str, str], str]] = {
    "extra-rule": (lambda t: _after(t, BUCKET, "-A K3SNET-N-d24-s16-a-3 -j ACCEPT"),
                   ("nat", "K3SNET-N-d24-s16-a-3"), "-D K3SNET-N-d24-s16-a-3 -j ACCEPT"),
    "extra-rule-in-main": (lambda t: _after(t, LAST_JUMP, "-A K3SNET-POSTROUTING -j RETURN"),
                           ("nat", "K3SNET-POSTROUTING"), ":K3SNET-POSTROUTING - [0:0]"),
    # An empty chain with a name k3snet writes but does not use (a chain named K3SNET-*
    # that k3snet never writes is someone else's: tests/iptables/test_foreign_chains.py).
    "extra-chain": (lambda t: _after(t, ":K3SNET-POSTROUTING - [0:0]",
                                     ":K3SNET-N-d7-s3-o-f - [0:0]"),
                    ("nat", "K3SNET-N-d7-s3-o-f"), "-X K3SNET-N-d7-s3-o-f"),
    "forged-tag": (lambda t: _after(t, BUCKET, BUCKET.replace("10.51.", "10.77.").replace(
                       "397ffea18f7845b1", "0123456789abcdef")),
                   ("nat", "K3SNET-N-d24-s16-a-3"),
                   "-D K3SNET-N-d24-s16-a-3 -s 10.77.0.0/16 -d 192.168.2.0/24 -m comment "
                   "--comment k3snet:0123456789abcdef -j MASQUERADE"),
    "tag-not-of-its-rule": (lambda t: t.replace(BUCKET, BUCKET.replace("10.51.", "10.77.")),
                            ("nat", "K3SNET-N-d24-s16-a-3"),
                            "-D K3SNET-N-d24-s16-a-3 -s 10.77.0.0/16 -d 192.168.2.0/24 -m comment "
                            "--comment k3snet:397ffea18f7845b1 -j MASQUERADE"),
    "duplicate-rule": (lambda t: _after(t, BUCKET, BUCKET), ("nat", "K3SNET-N-d24-s16-a-3"),
                       "-D " + BUCKET[3:].replace('"', "")),
    "duplicate-hook": (lambda t: _after(t, HOOK_NAT, HOOK_NAT), ("nat", "POSTROUTING"),
                       "-D " + HOOK_NAT[3:]),
    "duplicate-main-jump": (lambda t: _after(t, LAST_JUMP, LAST_JUMP),
                            ("nat", "K3SNET-POSTROUTING"), ":K3SNET-POSTROUTING - [0:0]"),
    "missing-hook": (lambda t: t.replace(HOOK_NAT + "\n", ""), ("nat", "POSTROUTING"),
                     HOOK_NAT),
    # A jump carrying k3snet's comment, edited: repaired where it was (k3snet never
    # moves it above a foreign rule). (Until the admin's own jumps were told apart, this
    # case was a jump without the comment: that is an admin's rule, ADMINS_JUMP below.)
    "edited-hook": (lambda t: t.replace(
                        HOOK_FWD + "\n-A FORWARD -j DOCKER-USER\n",
                        "-A FORWARD -j DOCKER-USER\n-A FORWARD -i eth0 -m comment --comment "
                        "k3snet -j K3SNET-FORWARD\n"),
                    ("filter", "FORWARD"), "-I FORWARD 2 " + HOOK_FWD.split(" ", 2)[2]),
    # k3snet's jump gone, an admin's own (no k3snet comment) in its place: k3snet's is
    # put back where a new one goes, the admin's stays (ADMINS_JUMP below).
    "admins-jump-instead-of-hook": (lambda t: t.replace(
                        HOOK_FWD + "\n-A FORWARD -j DOCKER-USER\n",
                        "-A FORWARD -j DOCKER-USER\n-A FORWARD -j K3SNET-FORWARD\n"),
                    ("filter", "FORWARD"), HOOK_FWD),
    # A reply half as k3snet wrote it before ICMP errors were let through (``-s`` the
    # destination: a router's Packet Too Big dropped): replaced by today's, the upgrade.
    "reply-by-source-of-an-earlier-release": (lambda t: t.replace(
                        "-A K3SNET-F-7 -d 10.50.0.0/16",
                        "-A K3SNET-F-7 -s 192.168.2.0/24 -d 10.50.0.0/16").replace(
                        "ESTABLISHED --ctdir REPLY", "ESTABLISHED"),
                    ("filter", "K3SNET-F-7"), REPLY_F7),
    # A reply half as k3snet wrote it after that, in every direction (no --ctdir REPLY:
    # later packets of connections from outside to the pods accepted): today's, the upgrade.
    "reply-of-every-direction-of-an-earlier-release": (lambda t: t.replace(
                        "ESTABLISHED --ctdir REPLY", "ESTABLISHED"),
                    ("filter", "K3SNET-F-7"), REPLY_F7),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(DRIFTS))
def test_drift_is_an_owned_object_that_every_plan_deletes_and_apply_repairs(
    mode: Flavour, name: str
) -> None:
    edit, (table, chain), repair = DRIFTS[name]
    text = edit(recorded(mode, 4))
    assert text != recorded(mode, 4)
    kernel = FakeKernel({(mode, 4): text, (mode, 6): recorded(mode, 6)})
    clear_caches()
    with backend_on(kernel, mode) as backend:
        observed = backend.observe()
        drift = [o for o in observed.owned if isinstance(o, Drift)]
        assert drift, backend.drift
        assert {(d.backend, d.where.rsplit(" ", 1)[0]) for d in drift} == {
            ("iptables", f"IPv4 {table}")}
        assert any(d.where == f"IPv4 {table} {chain}" for d in drift), drift
        assert all(d.kind == ("nat" if table == "nat" else "forward") for d in drift)
        p = plan(observed, DESIRED)
        assert not p.empty
        assert {c.subject for c in p.changes if c.action == "delete"} >= set(drift)
        assert "drift in iptables IPv4" in p.render()
        backend.apply(p)
        assert {run.table for run in kernel.tables} == {table}
        sent = [line for run in kernel.tables for line in run.lines]
        assert repair in sent, sent
        assert "-D FORWARD -j K3SNET-FORWARD" not in sent  # an admin's jump: never deleted
        # Once applied, what the backend holds is clean: nothing more to do.
        assert backend.drift == ()
        assert plan(p.apply_to(observed), DESIRED).empty


@pytest.mark.parametrize("mode", MODES)
def test_an_admins_own_jump_into_k3snets_chain_is_kept(mode: Flavour) -> None:
    admins = "-A FORWARD -s 10.51.0.0/16 -j K3SNET-FORWARD"
    text = _after(recorded(mode, 4), "-A FORWARD -j DOCKER-USER", admins)
    kernel = FakeKernel({(mode, 4): text, (mode, 6): recorded(mode, 6)})
    clear_caches()
    with backend_on(kernel, mode) as backend:
        observed = backend.observe()
        assert backend.drift == ()
        assert plan(observed, DESIRED).empty
        assert any(admins in warning for warning in backend.warnings), backend.warnings
        # Removing k3snet's forward rules would remove the chain the admin jumps to.
        forward = [o for o in observed.owned if isinstance(o, ForwardRule) and o.family == 4]
        p = plan(observed, State(owned=[o for o in observed.owned if o not in forward]))
        with pytest.raises(PlanError, match="iptables-nft -t filter -D FORWARD -s 10.51.0.0/16 "
                                            "-j K3SNET-FORWARD" if mode == "nft" else
                                            "iptables-legacy -t filter -D FORWARD"):
            backend.apply(p)
        assert backend.check(p)
    assert kernel.runs == []


@pytest.mark.parametrize("mode", MODES)
def test_mode_auto_warns_of_rules_in_the_other_flavour(mode: Flavour) -> None:
    other: Flavour = "legacy" if mode == "nft" else "nft"
    kernel = FakeKernel.recorded(mode)
    kernel.saves[other, 4] = "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j DROP\nCOMMIT\n"
    with IptablesBackend(kernel=kernel) as backend:
        assert backend.mode == mode
        backend.observe()
        assert [w for w in backend.warnings if "mode auto" in w] == [
            f"mode auto picked iptables-{mode} ({backend.mode_reason}), but iptables-{other} "
            "holds rules in the tables k3snet reads, which k3snet does not see and the kernel "
            "runs as well (a DROP there drops what k3snet accepts, and a NAT rule there may "
            "translate k3snet's traffic first: of two nat tables the kernel runs the one made "
            "last first): IPv4 filter: 1 rule; "
            f"remove them, or pass mode='{other}' if that is the flavour in use"]
        kernel.saves[other, 4] = "*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n"
        backend.observe()  # a replaced kernel seam has no change token: read again
        assert not [w for w in backend.warnings if "mode auto" in w]
    with IptablesBackend(kernel=kernel, mode=mode) as backend:
        kernel.saves[other, 4] = "*filter\n:FORWARD DROP [0:0]\nCOMMIT\n"
        backend.observe()
        assert not [w for w in backend.warnings if "mode auto" in w]


def test_drift_of_another_backend_or_table_is_refused() -> None:
    kernel = FakeKernel.recorded("nft")
    with backend_on(kernel, "nft") as backend:
        observed = backend.observe()
        for foreign in (Drift.of("nat", backend="nftables", where="IPv4 nat X", what="y"),
                        Drift.of("forward", backend="iptables", where="IPv4 nat X", what="y"),
                        Drift.of("nat", backend="iptables", where="IPv4 nat X", what="y")):
            p = plan(State(owned=[*observed.owned, foreign]), DESIRED)
            with pytest.raises(PlanError):
                backend.apply(p)
            assert backend.check(p)
    assert kernel.runs == []


def test_a_clean_recording_has_no_drift() -> None:
    for mode in MODES:
        with backend_on(FakeKernel.recorded(mode), mode) as backend:
            assert not [o for o in backend.observe().owned if isinstance(o, Drift)]


# -- the kit: refusals in the kit's words, compensation, errors at the boundary --------


def test_a_plan_that_does_not_fit_is_refused_with_every_reason() -> None:
    kernel = FakeKernel.recorded("nft")
    with backend_on(kernel, "nft") as backend:
        observed = backend.observe()
        stranger = MasqueradeRule("10.66.0.0/16")
        present = MasqueradeRule("10.51.0.0/16", destination="192.168.2.0/24")
        bad = plan(State(owned=[stranger]), State())  # deletes what k3snet does not hold
        bad = type(bad)(changes=(*bad.changes, *plan(State(), State(owned=[present])).changes))
        with pytest.raises(PlanError) as caught:
            backend.apply(bad)
        message = str(caught.value)
        assert message.startswith("iptables backend refuses the plan, nothing was changed")
        assert "10.66.0.0/16" in message
        assert "10.51.0.0/16" in message  # the second problem is named too
        assert backend.check(bad) == (message,)
        assert plan(backend.observe(), DESIRED).empty
    assert observed.owned == DESIRED.owned
    assert kernel.runs == []


def test_a_failed_undo_is_a_rollback_error_naming_what_is_half_done() -> None:
    from k3snet.errors import RollbackError  # noqa: PLC0415 - only here

    kernel = FakeKernel.recorded("nft")
    kernel.refuse_tables = {1, 2}  # the nat table, then the undo of the filter table
    wanted = State(owned=[*DESIRED.owned, ForwardRule("10.60.0.0/16", "192.168.3.0/24"),
                          MasqueradeRule("10.60.0.0/16", destination="192.168.0.0/16")])
    with backend_on(kernel, "nft") as backend:
        p = plan(backend.observe(), wanted)
        with pytest.raises(RollbackError, match="ROLLBACK FAILED") as caught:
            backend.apply(p)
    assert [run.table for run in kernel.tables] == ["filter", "nat", "filter"]
    assert caught.value.done
    assert caught.value.rolled_back == ()


def test_a_process_that_is_not_permitted_names_the_capability(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import errno  # noqa: PLC0415 - only here
    import shutil  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    from k3snet.backends.iptables import driver  # noqa: PLC0415
    from k3snet.errors import BackendError  # noqa: PLC0415

    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/sbin/{name}")  # driver's

    def denied(argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 4, "", "iptables-nft-save v1.8.9: "
                                           "Permission denied (you must be root)\n")

    completed = driver._completed
    monkeypatch.setattr(driver, "_completed", denied)  # its subprocess.run
    with pytest.raises(BackendError, match="CAP_NET_ADMIN") as caught:
        driver.Processes(None).save(4, "nft")
    assert "iptables-nft-save" in str(caught.value)

    def not_permitted(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(driver, "_completed", completed)
    monkeypatch.setattr(subprocess, "Popen", not_permitted)  # driver's
    with pytest.raises(BackendError, match="CAP_NET_ADMIN"):
        IptablesBackend(mode="nft").observe()
    with pytest.raises(BackendError, match="CAP_NET_ADMIN"):
        driver.Processes(None).restore(4, "nft")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("name", "written", "why"), [
    ("reply-by-source-of-an-earlier-release", "-s 192.168.2.0/24 -d 10.50.0.0/16 ",
     "does not come from the destination"),
    ("reply-of-every-direction-of-an-earlier-release", "-d 10.50.0.0/16 ",
     "without --ctdir REPLY")])
def test_an_earlier_releases_reply_accept_is_drift_named_as_the_upgrade(
        mode: Flavour, name: str, written: str, why: str) -> None:
    # The first plan after an upgrade: the admin next door reads what is rewritten and
    # why, not "rules k3snet did not write (edited, forged ...)".
    edit, _, _ = DRIFTS[name]
    kernel = FakeKernel({(mode, 4): edit(recorded(mode, 4)), (mode, 6): recorded(mode, 6)})
    clear_caches()
    with backend_on(kernel, mode) as backend:
        drift = [o for o in backend.observe().owned if isinstance(o, Drift)]
    said = [d.what for d in drift if d.where == "IPv4 filter K3SNET-F-7"
            and d.what.startswith("a forward rule's reply accept as an earlier k3snet release "
                                  f"wrote it ({written}") and why in d.what]
    assert len(said) == 1, drift
    assert not [d for d in drift if "forged" in d.what], drift


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("source", "ctdir"), [
    ("203.0.113.0/24", " --ctdir REPLY"), ("192.168.2.0/24", " --ctdir REPLY"),
    ("203.0.113.0/24", "")])
def test_a_reply_accept_of_another_source_is_drift_named_as_an_edit_not_the_upgrade(
        mode: Flavour, source: str, ctdir: str) -> None:
    # Tagged as k3snet's, its -s not the accept's destination: no release of k3snet wrote
    # that; naming it the upgrade's drift hid an edit (or a forgery) from the admin. Nor
    # did one write -s DEST beside --ctdir REPLY (the release matching -s had no --ctdir).
    # Without --ctdir (the form of the releases that matched -s DEST), another source is
    # an edit all the same.
    kernel = FakeKernel({(mode, 4): recorded(mode, 4).replace(
        "-A K3SNET-F-7 -d 10.50.0.0/16", f"-A K3SNET-F-7 -s {source} -d 10.50.0.0/16").replace(
        "ESTABLISHED --ctdir REPLY", f"ESTABLISHED{ctdir}"),
        (mode, 6): recorded(mode, 6)})
    clear_caches()
    with backend_on(kernel, mode) as backend:
        drift = [o for o in backend.observe().owned if isinstance(o, Drift)]
    said = [d.what for d in drift if d.where == "IPv4 filter K3SNET-F-7"]
    assert said, drift
    assert not [w for w in said if "earlier k3snet release" in w], said
    assert [w for w in said if "did not write (edited, forged" in w], said


def _old_release_table(rules: list[ForwardRule], family: int, *, old: int) -> str:
    """The filter table of a node holding ``rules`` as k3snet writes them, the first
    ``old`` reply accepts as the release before ``--ctdir REPLY`` wrote them."""
    written = render_iptables_save(State(owned=rules), family, mode="nft")
    body = [line for line in written.split("*filter\n", 1)[1].splitlines() if line != "COMMIT"]
    seen = 0
    for index, line in enumerate(body):
        if " --ctdir REPLY" in line and seen < old:
            body[index] = line.replace(" --ctdir REPLY", "")
            seen += 1
    return "\n".join(["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]",
                      ":OUTPUT ACCEPT [0:0]", *body, "COMMIT", ""])


def _upgrade_sends(mode: Flavour, rules: list[ForwardRule], old: int) -> list[str]:
    kernel = FakeKernel({(mode, 4): _old_release_table(rules, 4, old=old),
                         (mode, 6): "*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n"})
    clear_caches()
    with backend_on(kernel, mode) as backend:
        backend.apply(plan(backend.observe(), State(owned=rules)))
    return [line for table in kernel.tables if table.committed for line in table.lines]


@pytest.mark.parametrize("mode", MODES)
def test_the_upgrade_of_many_earlier_reply_accepts_rewrites_their_chains_not_deletes_each(
        mode: Flavour) -> None:
    # iptables-nft-restore finds the rule of each -D by its text through the whole chain:
    # 10 000 earlier reply accepts deleted one by one took 31 s (2 500: 1.3 s; 5 000:
    # 6.1 s), at the restore run's 30 s timeout, past which the upgrade's apply is killed
    # and rolled back pass after pass. Their bucket chains are written again (~1 s).
    rules = [ForwardRule("10.42.0.0/16", f"100.64.{n // 256}.{n % 256}/32",
                         out_interface="eth0") for n in range(400)]
    sent = _upgrade_sends(mode, rules, old=400)
    assert not [line for line in sent if line.startswith("-D ")], sent[:20]
    appended = {line for line in sent if line.startswith("-A K3SNET-F-")}
    assert appended == {f"-A {unit.chain} {' '.join(line)}" for unit in map(render_unit, rules)
                        for line in unit.lines}


@pytest.mark.parametrize("mode", MODES)
def test_the_upgrade_of_one_earlier_reply_accept_among_many_deletes_it_alone(
        mode: Flavour) -> None:
    # A chain's few earlier reply accepts (a node upgraded in part): each deleted by its
    # text and today's appended, the rest of the chain left as it is.
    rules = [ForwardRule("10.42.0.0/16", f"100.64.{n // 256}.{n % 256}/32",
                         out_interface="eth0") for n in range(400)]
    sent = _upgrade_sends(mode, rules, old=1)
    deleted = [line for line in sent if line.startswith("-D ")]
    assert len(deleted) == 1, sent
    assert "--ctstate RELATED,ESTABLISHED -m comment" in deleted[0], sent
    assert len([line for line in sent if line.startswith("-A K3SNET-F-")]) == 1, sent


@pytest.mark.parametrize("mode", MODES)
def test_many_forward_rules_removed_from_a_chain_rewrite_it_not_delete_each(
        mode: Flavour) -> None:
    # The spec that drops half of 10 000 destinations: each rule of theirs deleted by its
    # text, which iptables-nft-restore looks for through the chain, ran past the restore
    # run's 30 s timeout, and the apply failed (nothing changed) on every pass.
    rules = [ForwardRule("10.42.0.0/16", f"100.64.{n // 256}.{n % 256}/32",
                         out_interface="eth0") for n in range(400)]
    table = _old_release_table(rules, 4, old=0)
    kernel = FakeKernel({(mode, 4): table, (mode, 6): "*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n"})
    clear_caches()
    kept = rules[:100]  # each of the 16 bucket chains loses more than 16 rules
    with backend_on(kernel, mode) as backend:
        backend.apply(plan(backend.observe(), State(owned=kept)))
    sent = [line for t in kernel.tables if t.committed for line in t.lines]
    assert not [line for line in sent if line.startswith("-D ")], sent[:20]
    written = [line for line in sent if line.startswith("-A K3SNET-F-")]
    assert sorted(written) == sorted(f"-A {unit.chain} {' '.join(line)}"
                                     for unit in map(render_unit, kept) for line in unit.lines)


@pytest.mark.parametrize("mode", MODES)
def test_one_forward_rule_removed_among_many_is_deleted_alone(mode: Flavour) -> None:
    rules = [ForwardRule("10.42.0.0/16", f"100.64.{n // 256}.{n % 256}/32",
                         out_interface="eth0") for n in range(400)]
    kernel = FakeKernel({(mode, 4): _old_release_table(rules, 4, old=0),
                         (mode, 6): "*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n"})
    clear_caches()
    with backend_on(kernel, mode) as backend:
        backend.apply(plan(backend.observe(), State(owned=rules[1:])))
    sent = [line for t in kernel.tables if t.committed for line in t.lines]
    assert len([line for line in sent if line.startswith("-D ")]) == 2, sent
    assert not [line for line in sent if line.startswith(("-A ", ":"))], sent


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("old", [30, 400])
def test_the_upgrade_names_and_rewrites_the_earlier_reply_accepts_alone(
        mode: Flavour, old: int) -> None:
    # A bucket chain holding only earlier reply accepts is still k3snet's, in use, and
    # jumped to: it was "a chain of k3snet's that no rule of k3snet uses", the main chain
    # "with no rule of k3snet behind it", and its jump stopped the rules reached, so every
    # forward rule in the chains after it was planned again, though in place.
    rules = [ForwardRule("10.42.0.0/16", f"100.64.{n // 256}.{n % 256}/32",
                         out_interface="eth0") for n in range(400)]
    kernel = FakeKernel({(mode, 4): _old_release_table(rules, 4, old=old),
                         (mode, 6): "*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n"})
    clear_caches()
    with backend_on(kernel, mode) as backend:
        p = plan(backend.observe(), State(owned=rules))
    drift = [c.subject.describe() for c in p.changes if isinstance(c.subject, Drift)]
    assert len(drift) == old, drift
    assert all("as an earlier k3snet release wrote it" in d for d in drift), drift
    assert len([c for c in p.changes if c.action == "add"]) == old, p.render()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("conntrack", [
    "-m conntrack --ctdir REPLY", "-m conntrack --ctdir ORIGINAL",
    "-m conntrack --ctstate RELATED,ESTABLISHED --ctdir REPLY"])
def test_an_untagged_direction_accept_in_a_bucket_chain_is_deleted_by_its_text_alone(
        mode: Flavour, conntrack: str) -> None:
    # An admin's accept of one direction put in k3snet's chain reads back as written
    # (parse_rule reads --ctdir): it is deleted by its text, the chain's other rules and
    # their counters left alone. _writable took --ctdir out before asking parse_rule,
    # and what was left (-m conntrack with no option) reads as no rule: the chain was
    # written again, and a rollback leaving out what does not read back left it out.
    rules = [ForwardRule("10.42.0.0/16", f"100.64.0.{n}/32", out_interface="eth0")
             for n in range(40)]
    chain = render_unit(rules[0]).chain
    foreign = f"-A {chain} -d 10.42.0.0/16 {conntrack} -j ACCEPT"
    table = _old_release_table(rules, 4, old=0).replace("COMMIT", f"{foreign}\nCOMMIT")
    kernel = FakeKernel({(mode, 4): table, (mode, 6): "*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n"})
    clear_caches()
    with backend_on(kernel, mode) as backend:
        backend.apply(plan(backend.observe(), State(owned=rules)))
    sent = [line for t in kernel.tables if t.committed for line in t.lines]
    assert sent == [foreign.replace("-A ", "-D ", 1)], sent
