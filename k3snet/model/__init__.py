"""Immutable values for everything k3snet manages."""

from __future__ import annotations

from typing import TYPE_CHECKING

from k3snet._logline import printable
from k3snet.model import cidr as _cidr
from k3snet.model._base import (
    NetObject,
    interface_holds,
    interfaces_left,
    interfaces_may_meet,
    is_interface_name,
    out_interface_rank,
    validate_interface_name,
)
from k3snet.model.cidr import (
    Address,
    Network,
    aggregate,
    parse_address,
    parse_network,
)
from k3snet.model.cilium import CiliumConfig, CiliumMasquerade
from k3snet.model.cni import (
    CalicoFelixNat,
    CalicoNatDestination,
    CalicoPodCIDR,
    CalicoPools,
    CalicoPoolsReadable,
    FlannelConfig,
    FlannelNetworks,
    IPPool,
    JsonMapping,
)
from k3snet.model.drift import Drift, ForwardDrift, NatDrift
from k3snet.model.forward import ForwardBlock, ForwardRule
from k3snet.model.nat import MasqueradeRule, NatBlock, NatRule, SnatRule
from k3snet.model.route import K3SNET_ROUTE_PROTOCOL, MAIN_TABLE, Route, RouteBlock
from k3snet.model.state import (
    KINDS,
    OBJECT_TYPES,
    State,
    known_kinds,
    object_from_dict,
    register_object_type,
)
from k3snet.model.sysctl import Sysctl, sysctl_name, sysctl_path

if TYPE_CHECKING:
    from collections.abc import Iterable


def overlaps(a: str | Network, b: str | Network) -> bool:
    """True when ``a`` and ``b`` share at least one address (never across families).
    Either may be text, parsed as :func:`parse_network` parses it (host bits set are an
    error: ``10.0.0.1/8`` is usually a typo).

    >>> overlaps("10.0.0.0/8", "10.1.0.0/16"), overlaps("10.0.0.0/8", "fd00::/8")
    (True, False)
    """
    return _cidr.overlaps(parse_network(a), parse_network(b))


def contains(outer: str | Network, inner: str | Network | Address) -> bool:
    """True when every address of ``inner`` (a network or one address) lies in ``outer``
    (never across families). Text is parsed as :func:`parse_network` and
    :func:`parse_address` parse it: ``"10.1.2.3"`` is an address, ``"10.1.0.0/16"`` a
    network.

    >>> contains("10.0.0.0/8", "10.1.2.3"), contains("10.1.0.0/16", "10.0.0.0/8")
    (True, False)
    """
    if isinstance(inner, str):
        inner = parse_network(inner) if "/" in inner else parse_address(inner)
    return _cidr.contains(parse_network(outer), inner)


def subtract(base: str | Network, removed: Iterable[str | Network]) -> tuple[Network, ...]:
    """The prefixes of ``base`` that are not in any of ``removed``, aggregated. Text is
    parsed as :func:`parse_network` parses it.

    >>> subtract("10.0.0.0/23", ["10.0.1.0/24"])
    (IPv4Network('10.0.0.0/24'),)
    """
    return _cidr.subtract(parse_network(base), [parse_network(net) for net in removed])


__all__ = [
    "K3SNET_ROUTE_PROTOCOL",
    "KINDS",
    "MAIN_TABLE",
    "OBJECT_TYPES",
    "Address",
    "CalicoFelixNat",
    "CalicoNatDestination",
    "CalicoPodCIDR",
    "CalicoPools",
    "CalicoPoolsReadable",
    "CiliumConfig",
    "CiliumMasquerade",
    "Drift",
    "FlannelConfig",
    "FlannelNetworks",
    "ForwardBlock",
    "ForwardDrift",
    "ForwardRule",
    "IPPool",
    "JsonMapping",
    "MasqueradeRule",
    "NatBlock",
    "NatDrift",
    "NatRule",
    "NetObject",
    "Network",
    "Route",
    "RouteBlock",
    "SnatRule",
    "State",
    "Sysctl",
    "aggregate",
    "contains",
    "interface_holds",
    "interfaces_left",
    "interfaces_may_meet",
    "is_interface_name",
    "known_kinds",
    "object_from_dict",
    "out_interface_rank",
    "overlaps",
    "parse_address",
    "parse_network",
    "printable",
    "register_object_type",
    "subtract",
    "sysctl_name",
    "sysctl_path",
    "validate_interface_name",
]
