"""Rules of one shape: the readers' way to a rule's object without parsing its words.

Most of k3snet's rules in a table differ from each other only in their destination
(one pod source, one way out, one verdict). The nftables and iptables readers read
the first rule of each shape in full, then make the object of a later rule of that
shape from the first one's object with the later rule's destination
(docs/performance.md, "Reading by shape"); each reader says when it takes what it
made. This module makes it, ~1 us an object cheaper than ``attrs.evolve``.

>>> from k3snet.model import MasqueradeRule
>>> from k3snet.model.cidr import parse_network
>>> first = MasqueradeRule("10.42.0.0/16", destination="100.64.0.0/24", out_interface="eth0")
>>> to = retarget(first)
>>> to(parse_network("100.64.7.0/24")) == MasqueradeRule(
...     "10.42.0.0/16", destination="100.64.7.0/24", out_interface="eth0")
True
"""

from __future__ import annotations

from collections.abc import Callable

from k3snet.model import NetObject
from k3snet.model.cidr import Network
from k3snet.model.forward import ForwardRule
from k3snet.model.nat import MasqueradeRule, SnatRule

__all__ = ["Shaped", "retarget"]

Shaped = MasqueradeRule | SnatRule | ForwardRule
"""The objects whose rules have a shape: NAT and forward rules."""


def retarget(obj: Shaped) -> Callable[[Network], NetObject]:
    """What makes ``obj`` with another destination (its constructor and checks run:
    a destination the model refuses for it raises ModelError)."""
    if isinstance(obj, ForwardRule):
        source, iif, oif = obj.source, obj.in_interface, obj.out_interface

        def forward(net: Network) -> NetObject:
            return ForwardRule(source, net, in_interface=iif, out_interface=oif)
        return forward
    source, exclude, out, fully = obj.source, obj.exclude, obj.out_interface, obj.random_fully
    if isinstance(obj, SnatRule):
        to = obj.to_address

        def snat(net: Network) -> NetObject:
            return SnatRule(source, destination=net, exclude=exclude, out_interface=out,
                            random_fully=fully, to_address=to)
        return snat

    def masquerade(net: Network) -> NetObject:
        return MasqueradeRule(source, destination=net, exclude=exclude, out_interface=out,
                              random_fully=fully)
    return masquerade
