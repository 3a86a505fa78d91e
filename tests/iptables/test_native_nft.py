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
        assert FORWARD in observed.owned  # in place, noted: a destroy deletes it
        assert FORWARD in _conflicts(observed)
        assert plan(observed, DESIRED).changes == ()
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


_POLICY_DROP = """
table inet filter {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
%s  }
}
"""
SEED_FORWARD = ForwardRule("10.42.0.0/16", "192.168.2.0/24", in_interface="cni0",
                           out_interface="eth0")


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_an_iptables_accept_a_native_policy_drop_drops_is_not_met_and_the_warning_names_it(
        require_root: None, mode: str) -> None:
    """The admin's FORWARD accepts the pods' connections (and their replies), and an nft
    table of another name drops them by its policy: the plan said the forward rule was
    met by the admin's accept while no connection went through, and its warning named
    the chain for any traffic. Now the accept meets nothing, and the warning names the
    rule the chain drops (as the nftables backend judges other tables' defaults)."""
    from k3snet.lab import SeedLab  # noqa: PLC0415

    wanted = State(owned=[SEED_FORWARD])
    tool = f"iptables-{mode}"
    with SeedLab.create() as lab:
        run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        run_in(lab.router, ["ip", "route", "add", "10.42.0.0/16", "via", "192.168.1.5"])
        run_in(lab.node, [tool, "-w", "-A", "FORWARD", "-s", "10.42.0.0/16", "-j", "ACCEPT"])
        run_in(lab.node, [tool, "-w", "-A", "FORWARD", "-d", "10.42.0.0/16", "-j", "ACCEPT"])
        run_in(lab.node, ["nft", "-f", "-"], input_text=_POLICY_DROP % "")
        assert not lab.tcp_probe(4, timeout=1.0).ok  # a real connection: dropped
        with IptablesBackend(lab.node, mode=mode) as backend:  # type: ignore[arg-type]
            backend.expect(wanted)
            p = plan(backend.observe(), wanted)
            assert [n.status for n in p.notes if n.wanted == SEED_FORWARD] != ["met"], \
                p.render()
            (said,) = [w for w in backend.warnings if "inet filter chain forward" in w]
            assert f"may drop {SEED_FORWARD.describe()}" in said, said
        # The chain accepting the pods too: the admin's accept meets the rule, no warning.
        run_in(lab.node, ["nft", "delete", "table", "inet", "filter"])
        run_in(lab.node, ["nft", "-f", "-"], input_text=_POLICY_DROP % (
            "    ip saddr 10.42.0.0/16 accept\n"))
        assert lab.tcp_probe(4).ok
        with IptablesBackend(lab.node, mode=mode) as backend:  # type: ignore[arg-type]
            backend.expect(wanted)
            p = plan(backend.observe(), wanted)
            assert [n.status for n in p.notes] == ["met"], p.render()
            assert not [w for w in backend.warnings if "inet filter" in w], backend.warnings
