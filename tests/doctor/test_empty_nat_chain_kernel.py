"""An empty iptables-nft nat chain registers the NAT core, against the kernel.

The kernel registers the NAT core's hooks with a family's first nat chain, rules or not
(``nf_nat_register_fn``), and of two hooks at one priority runs the later registered
first. ``iptables-nft-save`` prints an iptables-nft nat chain with no rules, which the
doctor left out (it decides nothing): with no other nat chain, the fix's masquerade was
taken to register the core, after a filter chain at ``srcnat``, which would then see the
masqueraded source; the kernel's core was registered by that empty chain, possibly
first. The chain is kept now (when nft lists it: ``iptables-nft-save`` prints the
builtin chains a table lacks too), and the order is unknown, as it is.
"""

from __future__ import annotations

import pytest

from k3snet.doctor import Verdict
from k3snet.lab.netns import run_in

from .conftest import DoctorLab, diagnosed_then_fixed

pytestmark = [pytest.mark.kernel]

_FILTER = """table ip lab_post {
 chain post {
  type filter hook postrouting priority srcnat; policy accept;
  ip saddr 192.168.1.5 drop
 }
}
"""

def _empty_nat_chain(node: str) -> None:
    """iptables-nft's nat POSTROUTING, with no rule left in it."""
    run_in(node, ["iptables-nft", "-t", "nat", "-A", "POSTROUTING", "-j", "ACCEPT"])
    run_in(node, ["iptables-nft", "-t", "nat", "-D", "POSTROUTING", "-j", "ACCEPT"])


@pytest.mark.parametrize("empty_nat_first", [True, False],
                         ids=["empty-nat-chain-first", "filter-chain-first"])
def test_an_empty_iptables_nft_nat_chain_leaves_the_nat_core_order_unknown(
        doctor_lab_without_legacy: DoctorLab, empty_nat_first: bool) -> None:
    def made(node: str) -> None:
        if empty_nat_first:
            _empty_nat_chain(node)
        run_in(node, ["nft", "-f", "-"], input_text=_FILTER)
        if not empty_nat_first:
            _empty_nat_chain(node)
        save = run_in(node, ["iptables-nft-save", "-t", "nat"]).stdout
        assert ":POSTROUTING ACCEPT" in save, save
        assert "-A POSTROUTING" not in save, save

    d, answer = diagnosed_then_fixed(doctor_lab_without_legacy, made)
    assert d.findings[0].code == "no-masquerade", d.render()
    # The core registered first runs after the filter chain, which sees the pod.
    assert answer["ok"] is empty_nat_first, answer
    assert d.after.verdict is Verdict.UNKNOWN, d.render()
