"""nftables tables of other names beside iptables: base chains k3snet's hooks share.

``iptables-save`` shows only iptables' own tables. An admin's ``table inet filter``
(or firewalld's ``inet firewalld``) has base chains on the forward and postrouting
hooks that the kernel runs besides iptables', with either flavour: a drop there is
final whatever k3snet's FORWARD accepts say, and a nat chain at a priority before
``srcnat`` translates first. The iptables backend did not look: its plan added the
rules and the next one said "No changes" while the pods' traffic was dropped.
"""

from __future__ import annotations

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.lab.netns import run_in
from k3snet.model import ForwardBlock, ForwardRule, MasqueradeRule, NatBlock, State
from k3snet.planner import plan

FORWARD = ForwardRule("10.42.0.0/16", "192.168.2.0/24")
MASQ = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")
MASQ6 = MasqueradeRule("fd42:42::/56", destination="fd01:2::/64")
DESIRED = State(owned=[FORWARD, MASQ, MASQ6])

ADMIN = """
table inet filter {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    ip saddr 10.42.0.0/16 ip daddr 192.168.2.0/24 drop
  }
}
table ip6 before {
  chain post {
    type nat hook postrouting priority 50; policy accept;
    ip6 saddr fd42:42::/56 snat to fd00::1
  }
}
"""


def _conflicts(observed: State) -> dict[object, object]:
    return {
        note.wanted: note.foreign
        for note in plan(observed, DESIRED).notes
        if note.status == "conflict"
    }


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize("lister", ["libnftables", "nft processes"])
def test_drops_and_nat_first_in_nft_tables_of_other_names_are_conflicts(
    ns: str, mode: str, lister: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if lister == "nft processes":  # as without the nftables Python binding
        monkeypatch.setattr("k3snet.backends.iptables.backend.find_spec", lambda name: None)
    run_in(ns, ["nft", "-f", "-"], input_text=ADMIN)
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        observed = backend.observe()
        conflicts = _conflicts(observed)
        assert isinstance(conflicts.get(FORWARD), ForwardBlock), conflicts
        assert conflicts[FORWARD].where == "nftables inet filter forward"  # type: ignore[attr-defined]
        assert isinstance(conflicts.get(MASQ6), NatBlock), conflicts
        assert MASQ not in conflicts  # nothing translates IPv4 first
        warnings = "\n".join(backend.warnings)
        assert "nftables inet filter chain forward" in warnings, warnings
        assert "policy drop" in warnings, warnings
        assert "ip6 before" not in warnings, warnings  # a NAT rule first is a conflict
        backend.apply(plan(observed, DESIRED))
    saved = run_in(ns, [f"iptables-{mode}-save"]).stdout
    assert "K3SNET-F" not in saved, saved  # the forward accept was not written
    assert "K3SNET-N-" in saved, saved  # the masquerade no rule decides first was


@pytest.mark.kernel
def test_a_drop_in_an_nft_table_added_after_k3snets_rule_leaves_it_not_in_place(ns: str) -> None:
    """The iptables rule in place no longer does its job: a conflict, not "No changes"."""
    with IptablesBackend(ns, mode="nft") as backend:
        backend.apply(plan(backend.observe(), DESIRED))
        assert plan(backend.observe(), DESIRED).changes == ()
        assert "K3SNET-F" in run_in(ns, ["iptables-nft-save"]).stdout
        run_in(ns, ["nft", "-f", "-"], input_text=ADMIN)
        observed = backend.observe()
        assert FORWARD not in observed.owned
        assert FORWARD in _conflicts(observed)
    listed = run_in(ns, ["nft", "-j", "list", "table", "inet", "filter"]).stdout
    assert '"policy": "drop"' in listed


@pytest.mark.kernel
def test_nft_tables_that_judge_nothing_k3snet_writes_give_no_warning(ns: str) -> None:
    run_in(
        ns,
        ["nft", "-f", "-"],
        input_text="""
table inet filter {
  chain input { type filter hook input priority 0; policy drop; }
  chain forward { type filter hook forward priority 0; policy accept; }
}
table inet nat {
  chain post { type nat hook postrouting priority 150; ip saddr 10.42.0.0/16 masquerade; }
}
""",
    )
    with IptablesBackend(ns, mode="nft") as backend:
        observed = backend.observe()
        assert backend.warnings == ()
        assert _conflicts(observed) == {}


@pytest.mark.kernel
def test_with_iptables_legacy_watched_a_drop_added_in_an_nft_table_is_seen_by_the_next_observe(
        ns: str) -> None:
    """The agent watches the change token; with iptables-legacy it was a digest of the
    legacy tables alone, so an observe served from the last one's read kept the nftables
    tables as they were: a drop added there (or removed: the conflict stayed, the agent
    failing every pass) was not seen until a legacy rule changed."""
    with IptablesBackend(ns, mode="legacy") as backend:
        backend.change_token()  # watched, as by the agent: observe is cached
        backend.apply(plan(backend.observe(), DESIRED))
        assert plan(backend.observe(), DESIRED).changes == ()
        before = backend.change_token()
        run_in(ns, ["nft", "-f", "-"], input_text=ADMIN)
        assert backend.change_token() != before
        assert FORWARD in _conflicts(backend.observe())
        run_in(ns, ["nft", "delete", "table", "inet", "filter"])
        assert FORWARD not in _conflicts(backend.observe())


@pytest.mark.kernel
@pytest.mark.parametrize("table", ["k3snet", "egress"])
def test_the_nftables_backends_own_table_is_not_read_as_foreign_the_others_still_are(
        ns: str, table: str) -> None:
    """``--backend nftables:nat --backend iptables:forward``: k3snet's nftables table
    (whatever its name) was read by the iptables member as another table: each of its
    masquerade rules a foreign NAT block no plan needs, and with a few thousand the
    listing passed the read's bound, after which no nftables table was read at all
    (firewalld's drops unjudged). The nftables backend judges its own table."""
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415

    nat = State(owned=[MASQ, MASQ6])
    with NftablesBackend(ns, table=table) as nftables:
        nftables.apply(plan(nftables.observe(), nat))
    run_in(ns, ["nft", "-f", "-"], input_text=ADMIN)
    with IptablesBackend(ns, mode="nft") as backend:
        observed = backend.observe()
        mine = [o for o in observed.foreign if f" {table} " in str(getattr(o, "where", ""))]
        assert mine == []
        assert isinstance(_conflicts(observed).get(FORWARD), ForwardBlock)
        assert "nftables inet filter chain forward" in "\n".join(backend.warnings)


@pytest.mark.kernel
def test_with_iptables_legacy_the_token_stays_while_only_iptables_nft_commits(ns: str) -> None:
    """The nftables generation moves the legacy token only while a table of another name
    is there to read: iptables-nft's commits (kube-proxy's, every second) do not."""
    with IptablesBackend(ns, mode="legacy") as backend:
        before = backend.change_token()
        run_in(ns, ["iptables-nft", "-A", "FORWARD", "-d", "192.0.2.0/24", "-j", "DROP"])
        run_in(ns, ["ip6tables-nft", "-t", "nat", "-A", "POSTROUTING", "-j", "RETURN"])
        assert backend.change_token() == before
        run_in(ns, ["nft", "add", "table", "inet", "filter"])
        assert backend.change_token() != before
