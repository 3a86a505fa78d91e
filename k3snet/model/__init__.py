"""Immutable values for everything k3snet manages."""

from k3snet.model._base import (
    NetObject,
    interfaces_may_meet,
    printable,
    validate_interface_name,
)
from k3snet.model.cidr import (
    Address,
    Network,
    aggregate,
    contains,
    overlaps,
    parse_address,
    parse_network,
    subtract,
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
from k3snet.model.sysctl import Sysctl

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
    "interfaces_may_meet",
    "known_kinds",
    "object_from_dict",
    "overlaps",
    "parse_address",
    "parse_network",
    "printable",
    "register_object_type",
    "subtract",
    "validate_interface_name",
]
