"""NAT takes the first rule that matches, so both renderers order NAT rules of the same
prefixes by one rank of their out-interface match (:func:`k3snet.model.out_interface_rank`):
a match sorts before every match that holds it (one name, then wildcards by longer
prefix, then any interface). The nftables order and the iptables bucket order are
checked here to follow it for drawn matches, not only the hand-picked ones of
tests/nftables/test_interface_wildcard.py and tests/iptables/test_interface_order.py."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from k3snet.model import MasqueradeRule, out_interface_rank
from k3snet.render.iptables.rules import bucket_order, render_unit
from k3snet.render.nftables import chain_order_key
from k3snet.testing import strategies as k3st

_NAMES = k3st.interface_names().filter(lambda name: not name.endswith("+"))
_WILDCARDS = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=14).map(
    lambda prefix: f"{prefix}+")
_MATCHES = st.one_of(st.none(), _NAMES, _WILDCARDS)


def _holds(outer: str | None, inner: str | None) -> bool:
    """Every device ``inner`` matches, ``outer`` matches too (``None``: any)."""
    if outer is None:
        return True
    if inner is None:
        return False
    if outer.endswith("+"):
        return inner.startswith(outer[:-1]) and (not inner.endswith("+")
                                                 or len(inner) >= len(outer))
    return outer == inner


def _rule(match: str | None) -> MasqueradeRule:
    return MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24", out_interface=match)


@st.composite
def _nested(draw: st.DrawFn) -> tuple[str | None, str | None]:
    """(inner, outer): a match and one that holds it (a wildcard of a prefix, or any)."""
    inner = draw(st.one_of(_NAMES, _WILDCARDS))
    stem = inner.removesuffix("+")
    cut = draw(st.integers(1, len(stem))) if stem else 0
    outer = None if not cut or draw(st.booleans()) else f"{stem[:cut]}+"
    return inner, outer


@given(_nested(), _MATCHES, _MATCHES)
def test_a_match_held_by_another_sorts_before_it(
        nested: tuple[str | None, str | None], a: str | None, b: str | None) -> None:
    for inner, outer in (nested, (a, b), (b, a)):
        if _holds(outer, inner) and not _holds(inner, outer):
            assert out_interface_rank(inner) < out_interface_rank(outer)


@given(_MATCHES, _MATCHES)
def test_nftables_and_iptables_order_two_nat_rules_by_the_same_rank(
        a: str | None, b: str | None) -> None:
    nft = chain_order_key(_rule(a)) < chain_order_key(_rule(b))
    ipt_a, ipt_b = (bucket_order(render_unit(_rule(m)).chain) for m in (a, b))
    assert ipt_a is not None
    assert ipt_b is not None
    rank_a, rank_b = out_interface_rank(a), out_interface_rank(b)
    if rank_a != rank_b:
        assert nft == (rank_a < rank_b)
        assert (ipt_a < ipt_b) == (rank_a < rank_b)
