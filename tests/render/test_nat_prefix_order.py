"""Both NAT renderers meet two NAT rules of different prefix lengths in one order.

NAT is first match. Of two rules neither of which holds the other (source /24 to a
/16, source /16 to a /24), a packet both match takes the one met first, and
"most specific first" allows either order: the nftables backend put the longer
source first, the iptables backend the longer destination, so the same State
translated such a packet differently through the two (an SNAT to one address
through one, a masquerade through the other). iptables now follows nftables.
"""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from k3snet.model import MasqueradeRule, SnatRule
from k3snet.render.iptables.rules import bucket_order, render_unit
from k3snet.render.nftables import chain_order_key

_MATCHES = st.sampled_from([None, "eth0", "eth1+", "eth+"])


@st.composite
def _nat_rules(draw: st.DrawFn) -> MasqueradeRule | SnatRule:
    src = ipaddress.ip_network(
        (draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 32))), strict=False
    )
    dst = None
    if draw(st.booleans()):
        dst = ipaddress.ip_network(
            (draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 32))), strict=False
        )
    oif = draw(_MATCHES)
    if draw(st.booleans()):
        return SnatRule(src, destination=dst, out_interface=oif, to_address="192.0.2.1")
    return MasqueradeRule(src, destination=dst, out_interface=oif)


@given(_nat_rules(), _nat_rules())
def test_nftables_and_iptables_meet_two_nat_rules_of_different_groups_in_the_same_order(
    a: MasqueradeRule | SnatRule, b: MasqueradeRule | SnatRule
) -> None:
    order_a, order_b = (bucket_order(render_unit(r).chain) for r in (a, b))
    assert order_a is not None
    assert order_b is not None
    if order_a[:-1] == order_b[:-1]:
        return  # one group: the rules never both match a packet (in any order)
    assert (order_a < order_b) == (chain_order_key(a) < chain_order_key(b))


def test_a_longer_source_is_met_before_a_longer_destination() -> None:
    narrow_src = MasqueradeRule("10.42.1.0/24", destination="192.168.0.0/16")
    narrow_dst = SnatRule("10.42.0.0/16", destination="192.168.2.0/24", to_address="192.0.2.1")
    first, second = (bucket_order(render_unit(r).chain) for r in (narrow_src, narrow_dst))
    assert first is not None
    assert second is not None
    assert first < second
    assert chain_order_key(narrow_src) < chain_order_key(narrow_dst)
