"""The kernel's limit of expressions in one rule, and k3snet's NAT rules that would pass it.

The kernel takes at most 128 expressions in one rule (``NFT_RULE_MAXEXPRS``) and
refuses a longer one with a bare "Invalid argument". k3snet writes each exclusion of a
NAT rule as one ``daddr !=`` match of two or three expressions, so a rule with about
forty exclusions (ip-masq-agent's ``nonMasqueradeCIDRs`` grow so) cannot be written:
the transaction was refused as a whole (nothing changed), but the error quoted the
batch's first command (``create table``) and named no change. Now the backend counts
the expressions of each rule it would add, as libnftables lays them out (checked here
against nft's own netlink debug output), and refuses the rule by name before anything
is sent; the boot file's renderer refuses it too.
"""

from __future__ import annotations

import ipaddress

import pytest

from k3snet.backends.nftables import NftablesBackend
from k3snet.lab.netns import run_in
from k3snet.model import ForwardRule, MasqueradeRule, NetObject, SnatRule, State
from k3snet.planner import plan
from k3snet.render.nftables import (
    NFT_RULE_EXPRESSIONS,
    nft_expressions,
    nft_rules,
    render_nftables_conf,
)
from k3snet.render.nftables_batch import Syntax

FOREIGN = """\
table ip edge {
	chain post {
		type nat hook postrouting priority srcnat - 1; policy accept;
		ip saddr 10.50.0.0/16 masquerade
	}
}
"""


def _excluded(count: int, prefix: int = 17) -> list[str]:
    """``count`` exclusions of ``prefix`` bits in 10.0.0.0/8 that aggregate to nothing."""
    step = 1 << (32 - prefix + 1)
    return [str(ipaddress.ip_network((0x0A000000 + i * step, prefix))) for i in range(count)]


def _largest(count: int) -> MasqueradeRule:
    # inet: meta nfproto (2), saddr /17 (3), 2 per /24 exclusion, masquerade (1)
    return MasqueradeRule("192.168.0.0/17", exclude=_excluded(count, 24))


SHAPES: list[NetObject] = [
    MasqueradeRule("10.42.0.0/16"),
    MasqueradeRule("0.0.0.0/0", destination="192.168.2.0/23", out_interface="eth+",
                   random_fully=True),
    MasqueradeRule("10.42.0.0/17", exclude=["10.0.0.0/8", "172.16.0.5/32", "192.168.0.0/17",
                                            "224.0.0.0/3"]),
    SnatRule("10.44.0.0/15", destination="192.168.3.0/24", to_address="192.168.1.5",
             out_interface="eth0"),
    MasqueradeRule("fd42:42::/57", destination="fd01:2::/64", exclude=["fd01:2::/127"],
                   out_interface="eth0"),
    SnatRule("fd42:43::/56", to_address="fd01:1::5", random_fully=True),
    ForwardRule("10.52.0.0/16", "192.168.2.0/25", in_interface="cni0", out_interface="eth0"),
    ForwardRule("fd42:42::/56", "fd01:2::/64"),
    _largest(62),  # its exclusions in one set: a payload load, a lookup
]


@pytest.mark.kernel
@pytest.mark.parametrize("inet", [True, False], ids=["inet", "split"])
def test_the_counted_expressions_of_each_rule_are_the_ones_nft_sends_the_kernel(
        ns: str, inet: bool) -> None:
    for obj in SHAPES:
        family = "inet" if inet else ("ip" if obj.family == 4 else "ip6")
        rules = "\n".join(f"\t\t{r.body}" for r in nft_rules(obj, inet=inet))
        script = (f"table {family} t {{\n\tchain c {{\n\t\ttype nat hook postrouting "
                  f"priority srcnat;\n{rules}\n\t}}\n}}\n")
        debug = run_in(ns, ["nft", "--debug=netlink", "-c", "-f", "-"], input_text=script).stdout
        sent = [line.count("\n  [ ") for line in ("\n" + debug).split(f"\n{family} t c")[1:]]
        assert max(sent) == nft_expressions(obj, inet=inet), (obj, debug)


@pytest.mark.kernel
@pytest.mark.parametrize("syntax", ["nft", "json"])
def test_a_nat_rule_over_the_kernels_expression_limit_is_written_with_one_set(
        ns: str, syntax: Syntax) -> None:
    # Its exclusions as one anonymous interval set (tests/nftables/test_exclusion_set.py):
    # what was refused before sending now fits; the largest that fits keeps its matches.
    run_in(ns, ["nft", "-f", "-"], input_text=FOREIGN)
    kept = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")
    with NftablesBackend(ns, syntax=syntax, keep_read=False) as backend:
        largest = _largest(61)
        over = MasqueradeRule("172.20.0.0/17", exclude=_excluded(62, 24))
        assert nft_expressions(largest) == NFT_RULE_EXPRESSIONS
        assert "{" not in nft_rules(largest)[0].body
        assert "{" in nft_rules(over)[0].body
        p = plan(backend.observe(), State(owned=[kept, largest, over]))
        assert backend.check(p) == ()
        backend.apply(p)
        assert set(backend.observe(refresh=True).owned) == {kept, largest, over}


def test_the_boot_file_writes_a_rule_the_kernel_would_refuse_as_matches_with_a_set() -> None:
    assert "daddr != {" not in render_nftables_conf(State(owned=[_largest(61)]))
    assert "ip daddr != { " in render_nftables_conf(State(owned=[_largest(62)]))
    assert "ip daddr != { " in render_nftables_conf(State(owned=[_largest(63)]), family="split")


def _excluded6(count: int, prefix: int = 33) -> list[str]:
    """``count`` IPv6 exclusions of ``prefix`` bits in fd00::/8 that aggregate to nothing."""
    step = 1 << (128 - prefix + 1)
    return [str(ipaddress.ip_network((int(ipaddress.ip_address("fd00::")) + i * step, prefix)))
            for i in range(count)]


def _ipv6_masquerade(count: int) -> MasqueradeRule:
    return MasqueradeRule("fd42:42::/56", exclude=_excluded6(count))


@pytest.mark.kernel
@pytest.mark.parametrize("syntax", ["nft", "json"])
def test_an_ipv6_nat_rule_over_the_kernels_room_for_one_rule_is_written_with_the_set(
        ns: str, syntax: Syntax) -> None:
    # IPv6 exclusions whose length is not a multiple of 8 (a load, a bitwise and a
    # compare of 16 bytes: 128 bytes each) reach the kernel's 4096 bytes of one rule's
    # expressions before its 128 expressions (at 32, 101 expressions): written as
    # matches by the count alone, the kernel refused them ("File too large"). Now the
    # room chooses the set too (tests/nftables/test_rule_bytes.py); it is applied and
    # reads back as met, and the largest rule that fits as matches keeps them.
    fits = MasqueradeRule("fd42:43::/56", exclude=_excluded6(31))
    over = _ipv6_masquerade(32)
    snat = SnatRule("fd42:44::/56", destination="fd00::/8", exclude=_excluded6(30),
                    out_interface="eth0", to_address="fd01::5")
    assert nft_expressions(over) < NFT_RULE_EXPRESSIONS
    assert "{" not in nft_rules(fits)[0].body
    assert "{" in nft_rules(over)[0].body
    assert "{" in nft_rules(snat)[0].body
    kept = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")
    wanted = State(owned=[kept, fits, over, snat])
    with NftablesBackend(ns, syntax=syntax, keep_read=False) as backend:
        p = plan(backend.observe(), wanted)
        assert backend.check(p) == ()
        backend.apply(p)
        assert set(backend.observe(refresh=True).owned) == set(wanted.owned)
        assert not plan(backend.observe(refresh=True), wanted).changes
