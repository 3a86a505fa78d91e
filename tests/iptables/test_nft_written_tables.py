"""Tables of iptables-nft's names written with nft: what iptables-nft-save cannot show.

An nftables table named as iptables-nft's (``ip filter``, ``ip6 nat``) can hold rules
or base chains written with ``nft`` that the xt layer cannot print. iptables-nft-save
then says so in a comment and exits 0: ``# Table `filter' is incompatible`` (the table
is left out whole) or ``# Table `nat' contains incompatible base-chains`` (the chains
printed are whole, the others run unseen). k3snet read neither comment: it found no
table, wrote its chains into the admin's blind (a drop or an SNAT there, met first, no
conflict), never read them back, and every apply appended one more jump.
"""

from __future__ import annotations

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.iptables.mode import other_flavour_rules
from k3snet.backends.iptables.save import parse_save
from k3snet.errors import PlanError
from k3snet.lab.netns import run_in
from k3snet.model import ForwardRule, MasqueradeRule, State
from k3snet.planner import plan

ADMIN = """
table ip filter {
  chain FORWARD {
    type filter hook forward priority 0; policy accept;
    ip saddr 10.42.0.0/16 ct state new drop
  }
}
table ip6 nat {
  chain admin-post {
    type nat hook postrouting priority 100; policy accept;
    ip6 saddr fd42:42::/56 masquerade
  }
}
"""
FORWARD = ForwardRule("10.42.0.0/16", "0.0.0.0/0")
MASQ = {4: MasqueradeRule("10.42.0.0/16", out_interface="eth0"),
        6: MasqueradeRule("fd42:42::/56", destination="fd01:2::/64")}


def test_the_save_parser_reads_what_iptables_nft_save_says_it_left_out() -> None:
    dump = parse_save(
        "# Table `filter' is incompatible, use 'nft' tool.\n"
        "# Table `nat' contains incompatible base-chains, use 'nft' tool to list them.\n"
        "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -j MASQUERADE\nCOMMIT\n")
    assert dump["filter"].hidden == "table"
    assert dump["filter"].rules == {}
    assert dump["nat"].hidden == "base chains"
    assert dump["nat"].chain("POSTROUTING") == ["-j MASQUERADE"]
    # A rule's comment that spans lines is the rule's, never such a line.
    quoted = parse_save('*nat\n-A POSTROUTING -m comment --comment "x\n'
                        "# Table `nat' is incompatible, use 'nft' tool.\" -j ACCEPT\nCOMMIT\n")
    assert quoted["nat"].hidden is None


def test_what_iptables_nft_save_leaves_out_is_named_when_mode_auto_picked_legacy() -> None:
    """With iptables-legacy picked, the other flavour's warning names it: a drop written
    with nft in ``ip filter`` runs whatever k3snet accepts through iptables-legacy."""
    found = other_flavour_rules({
        4: "# Table `filter' is incompatible, use 'nft' tool.\n",
        6: "# Table `nat' contains incompatible base-chains, use 'nft' tool to list them.\n"
           "*nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n"})
    assert found == [
        "IPv4 filter: rules written with nft that iptables-nft-save cannot show",
        "IPv6 nat: base chains written with nft that iptables-nft-save cannot show"]


@pytest.mark.kernel
def test_a_table_iptables_nft_cannot_show_is_never_written_and_is_named(ns: str) -> None:
    run_in(ns, ["nft", "-f", "-"], input_text=ADMIN)
    before = run_in(ns, ["nft", "list", "table", "ip", "filter"]).stdout
    desired = State(owned=[FORWARD, *MASQ.values()])
    with IptablesBackend(ns, mode="nft") as backend:
        observed = backend.observe()
        warnings = "\n".join(backend.warnings)
        assert "IPv4 filter: iptables-nft cannot read this table" in warnings, warnings
        assert "IPv6 nat: iptables-nft-save leaves out base chains" in warnings, warnings
        for _ in range(2):  # the second apply used to add a second jump
            with pytest.raises(PlanError, match="IPv4 filter: iptables-nft cannot read"):
                backend.apply(plan(backend.observe(), desired))
        assert "cannot read" in " ".join(backend.check(plan(observed, desired)))
        # The NAT tables are readable: written as ever, and read back.
        wanted = State(owned=list(MASQ.values()))
        backend.apply(plan(backend.observe(), wanted))
        assert plan(backend.observe(), wanted).changes == ()
    assert run_in(ns, ["nft", "list", "table", "ip", "filter"]).stdout == before
    saved = run_in(ns, ["iptables-nft-save"]).stdout
    assert "Table `filter' is incompatible" in saved, saved
    assert "K3SNET-F" not in saved, saved
