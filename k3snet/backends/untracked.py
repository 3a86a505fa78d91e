"""A notrack of one protocol's packets: no block of k3snet's rules, a warning when it meets them.

A rule leaving packets untracked (``-j NOTRACK``, ``-j CT --notrack``, nft's
``notrack``) before conntrack takes them out of NAT, and their replies out of any
accept of established connections: read as a conflict of the masquerade and forward
rules it may match (an ``exempt`` :class:`~k3snet.model.NatBlock`, an ``untrack``
:class:`~k3snet.model.ForwardBlock`). One that matches a single protocol (``-p udp
--dport 53``, nft's ``udp dport 53``: a DNS server's) leaves the rest of the pods'
traffic tracked: k3snet's rules, which serve every protocol, do their job for it, so
both backends make it no block; its blocks, as they would be, are kept for
:func:`partial_untracks`, which names it when it meets a rule of k3snet's. A notrack of
every TCP or every UDP packet (``-p tcp -j NOTRACK``, ``meta l4proto tcp notrack``: no
port named) is still a block (:func:`partial_notrack`): it takes the pods' connections
of that protocol, most of their egress, out of NAT, and a plan saying its rules met
would be false for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from k3snet.model import ForwardBlock, ForwardRule, NatBlock, NetObject

__all__ = ["nft_list_chain", "partial_notrack", "partial_untracks"]

#: The protocols whose every packet left untracked is no partial notrack: TCP and UDP,
#: by name or number, carry nearly all of the pods' egress.
_WHOLE = frozenset({"tcp", "udp", "6", "17"})


def partial_notrack(protocol: str | None, ports: bool) -> bool:
    """Whether a notrack of ``protocol``'s packets (``None``: of any protocol) is of one
    protocol's packets only, no block: a protocol other than TCP and UDP, or TCP or UDP
    with a port named (``ports``: a positive port test, ``--dport 53``, ``udp dport 53``).

    >>> partial_notrack("udp", True), partial_notrack("icmp", False)
    (True, True)
    >>> partial_notrack("tcp", False), partial_notrack(None, True)
    (False, False)
    """
    return protocol is not None and (ports or protocol.lower() not in _WHOLE)


def nft_list_chain(where: str, places: Mapping[str, tuple[str, str, str]]) -> list[str]:
    """The command listing the chain of a block's ``where`` (``nftables ip raw pre``), as
    :func:`partial_untracks` is given it for an nftables table's notrack: ``places`` its
    family, table and chain (the read's ``ForwardDefaults.places``; a table ``a b`` was
    taken from the text as ``a``, its chain as ``b early``), else as the text reads.

    >>> nft_list_chain("nftables ip a b early", {"nftables ip a b early": ("ip", "a b", "early")})
    ['nft', 'list', 'chain', 'ip', 'a b', 'early']
    >>> nft_list_chain("nftables ip raw PREROUTING", {})
    ['nft', 'list', 'chain', 'ip', 'raw', 'PREROUTING']
    """
    named = places.get(where)
    return ["nft", "list", "chain",
            *(named or where.removeprefix("nftables ").split(" ", 2))]


def partial_untracks(blocks: Iterable[NetObject], wanted: Sequence[NetObject],
                     shows: Callable[[str], str]) -> list[str]:
    """The warnings of notracks of one protocol, ``blocks`` being their blocks as they
    would be: one for each rule whose blocks may meet a rule of ``wanted`` (k3snet's),
    naming the first they meet and what happens to those packets; ``shows``: the command
    listing a block's ``where``."""
    met: dict[tuple[str, str], tuple[NetObject, list[str]]] = {}
    for block in blocks:
        rules: list[NetObject]
        if isinstance(block, ForwardBlock):
            rules = [r for r in wanted if isinstance(r, ForwardRule) and block.decides(r)]
            harm = ("their replies are no established connection's, which the forward "
                    "path's default drops")
        elif isinstance(block, NatBlock):
            rules = [r for r in wanted if block.decides(r)]
            harm = "they leave untranslated"
        else:
            continue
        if rules:
            met.setdefault((block.where, block.rule), (rules[0], []))[1].append(harm)
    return [f"{where}: {rule} leaves the packets it matches, of one protocol, untracked: "
            f"those of {first.describe()} (k3snet's) among them, "
            f"{' and '.join(sorted(harms, reverse=True))}; "
            "k3snet's rules serve the rest of the pods' traffic, which is tracked "
            f"(`{shows(where)}` shows the rule)"
            for (where, rule), (first, harms) in met.items()]
