"""Flannel's config and Calico's pools as values, case by case, without a cluster.

Every message, conflict reason, plan line and JSON form is recorded in
``tests/data/model/cni.json`` (see ``tests/model/recorded.py``). The emulator-backed
tests in ``tests/cluster`` check the same objects against the ConfigMaps, files and
IPPool resources they come from; these check each rule of the values on its own.
"""

from __future__ import annotations

import json
from typing import Any

from k3snet.model.cidr import parse_network
from k3snet.model.cni import (
    CalicoNatDestination,
    CalicoPodCIDR,
    CalicoPools,
    CalicoPoolsReadable,
    FlannelConfig,
    FlannelNetworks,
    IPPool,
    JsonMapping,
    canonical_json,
    configmap_target,
    effective_config,
    file_target,
    merge_members,
    pool_name,
)
from k3snet.model.state import State, object_from_dict
from tests.model.recorded import Case, check

F = "file:/etc/flannel/net-conf.json"
CM = "configmap:kube-flannel/kube-flannel-cfg"
ROUTE = object_from_dict({"type": "route", "destination": "10.0.0.0/8", "device": "eth0"})


def _f(**kwargs: Any) -> FlannelConfig:
    return FlannelConfig(F, **kwargs)


def _pool(name: str = "p", cidr: str = "10.42.0.0/16", **kwargs: Any) -> IPPool:
    return IPPool(name, cidr, **kwargs)


def _pools(*pools: IPPool, invalid: Any = ()) -> CalicoPools:
    return CalicoPools(pools, invalid)


def _judge(wanted: Any, foreign: Any) -> dict[str, Any]:
    # The plan asks for the reason of a conflict only.
    conflicts = wanted.conflicts_with(foreign)
    return {"met": wanted.met_by(foreign), "conflicts": conflicts,
            "reason": wanted.conflict_reason(foreign) if conflicts else None}


CASES: dict[str, Case] = {
    # JSON values
    "canonical": lambda: canonical_json({"b": [1, 2.5, None], "a": "é"}),
    "canonical nan": lambda: canonical_json(float("nan")),
    "canonical object": lambda: canonical_json({"a": object}),
    "mapping": lambda: [JsonMapping({"b": {"y": 1, "x": 2}, "a": 1}).canonical_items(),
                        JsonMapping([("a", [1])]).canonical("a"),
                        repr(JsonMapping({"b": 1, "a": [True]})),
                        len(JsonMapping({"b": 1, "a": 2})), list(JsonMapping({"b": 1, "a": 2})),
                        "a" in JsonMapping({"a": None}), "b" in JsonMapping({"a": None}),
                        JsonMapping({"a": {"x": 1}})["a"],
                        JsonMapping({"a": {"x": 1}}).to_dict()],
    "mapping key": lambda: JsonMapping({1: "a"}),  # type: ignore[arg-type]
    "mapping equality": lambda: [
        JsonMapping({"a": 1}) == JsonMapping({"a": 1}), JsonMapping({"a": 1}) == {"a": 1},
        JsonMapping({"a": 1}) == {"a": 2}, JsonMapping({"a": 1}) == {1: 1},
        JsonMapping({"a": 1}) == {"a": 1, "b": 2}, JsonMapping({"a": 1}) == [("a", 1)],
        JsonMapping({"a": 1}) != JsonMapping({"a": 1.5}),
        hash(JsonMapping({"a": 1, "b": 2})) == hash(JsonMapping([("b", 2), ("a", 1)]))],
    "mapping from canonical": lambda: JsonMapping.from_canonical([("a", '{"x":[1]}')]).to_dict(),
    # flannel targets
    "targets": lambda: [file_target("/etc/f.json"), configmap_target("ns", "name")],
    "target not a string": lambda: FlannelConfig(1),  # type: ignore[arg-type]
    "target relative": lambda: FlannelConfig("file:etc/f.json"),
    "target nul": lambda: FlannelConfig("file:/etc/f\0.json"),
    "target newline": lambda: FlannelConfig("file:/etc/f\n.json"),
    "target namespace": lambda: FlannelConfig("configmap:Kube/cfg"),
    "target namespace 63": lambda: FlannelConfig("configmap:" + "a" * 63 + "/cfg").target,
    "target namespace 64": lambda: FlannelConfig("configmap:" + "a" * 64 + "/cfg"),
    "target name": lambda: FlannelConfig("configmap:kube/cfg_1"),
    "target no name": lambda: FlannelConfig("configmap:kube"),
    "target name 253": lambda: len(FlannelConfig("configmap:k/" + "b." * 126 + "b").target),
    "target name 254": lambda: len(FlannelConfig("configmap:k/" + "b." * 126 + "bb").target),
    "target name 255": lambda: FlannelConfig("configmap:k/" + "b." * 127 + "b"),
    "target scheme": lambda: FlannelConfig("/etc/f.json"),
    # flannel fields
    "bool field": lambda: _f(enable_ipv4=1),
    "bool field v6": lambda: _f(enable_ipv6="true"),
    "bool field nft": lambda: _f(enable_nftables=0),
    "network v6": lambda: _f(network="fd00::/64"),
    "ipv6 network v4": lambda: _f(ipv6_network="10.42.0.0/16"),
    "backend type": lambda: _f(backend_type="wireguard-native"),
    "options without type": lambda: _f(backend_options={"VNI": 1}),
    "type among options": lambda: _f(backend_type="vxlan", backend_options={"Type": "vxlan"}),
    "owned marker": lambda: _f(extra={"k3snet.io/owned": ["Network"]}),
    "field and extra": lambda: _f(enable_ipv4=True, network="10.42.0.0/16",
                                  extra={"EnableIPv4": False, "Network": 1}),
    "all fields": lambda: _f(network="10.42.0.0/16", ipv6_network="fd00:42::/56",
                             enable_ipv4=True, enable_ipv6=False, enable_nftables=True,
                             backend_type="host-gw", backend_options={"MTU": 1400, "A": [1]},
                             extra={"SubnetLen": 24, "SubnetMin": "10.42.1.0"}),
    "false fields": lambda: _f(enable_ipv4=False, enable_ipv6=True, enable_nftables=False),
    "no fields": lambda: FlannelConfig(CM),
    "extra lifted": lambda: _f(extra={
        "Network": "10.42.0.0/16", "IPv6Network": "fd00:42::/56", "EnableIPv4": True,
        "EnableIPv6": False, "EnableNFTables": False,
        "Backend": {"Type": "vxlan", "VNI": 4}, "SubnetLen": 24}),
    "extra kept": lambda: _f(extra={
        "Network": "fd00::/64", "IPv6Network": "10.42.0.0/16", "EnableIPv4": "yes",
        "Backend": {"Type": "nope"}, "EnableNFTables": None}),
    "extra kept, the next lifted": lambda: _f(extra={"Network": "ten", "EnableIPv4": True}),
    "extra kept, other family, the next lifted": lambda: _f(extra={
        "IPv6Network": "10.0.0.0/8", "EnableIPv4": True}),
    "extra kept, host bits": lambda: _f(extra={"Network": "10.42.0.1/16", "IPv6Network": 6}),
    "extra kept, backend without type": lambda: _f(extra={"Backend": {"VNI": 1}}),
    "extra kept, backend not an object": lambda: _f(extra={"Backend": "vxlan"}),
    "extra beside a field": lambda: _f(network="10.42.0.0/16",
                                       extra={"Network": "10.43.0.0/16"}),
    "extra beside another field": lambda: _f(enable_ipv6=True,
                                             extra={"Network": "10.43.0.0/16"}),
    "members": lambda: _f(backend_type="vxlan", backend_options={"VNI": 1}, enable_ipv4=True,
                          extra={"A": 1}).members(),
    "member texts": lambda: _f(backend_type="vxlan", enable_ipv6=False,
                               extra={"B": {"y": 1, "x": [1, 2]}}).member_texts(),
    "keys": lambda: list(_f(backend_type="vxlan", network="10.42.0.0/16",
                            extra={"SubnetLen": 24}).keys),
    "from members": lambda: FlannelConfig.from_members(F, {
        "Network": "10.42.0.0/16", "EnableIPv6": False, "IPv6Network": "::/0",
        "Backend": {"Type": "vxlan", "Port": 8472}, "k3snet.io/owned": ["Network"],
        "SubnetLen": 24}),
    "from members, bad values": lambda: FlannelConfig.from_members(F, {
        "Network": "10.42.0.1/16", "EnableIPv4": "true", "Backend": {"Type": 7},
        "IPv6Network": None}),
    "from members, bad combination": lambda: FlannelConfig.from_members(F, {
        "Network": "fd00::/64", "Backend": {"Type": "vxlan", "Type2": 1},
        "k3snet.io/owned": []}),
    "from members, options with type in extra": lambda: FlannelConfig.from_members(F, {
        "Backend": {"Type": "udp"}, "EnableNFTables": True}),
    "describe backend order": lambda: _f(backend_type="vxlan",
                                         backend_options={"b": 1, "a": {"y": 2, "x": 1}}),
    "from dict": lambda: FlannelConfig.from_dict({"target": F}),
    "from dict none": lambda: FlannelConfig.from_dict({
        "target": F, "backend_options": None, "extra": None, "network": None}),
    # flannel: met, effective config, merging
    "flannel met": lambda: {name: [w.met_by(f)] for name, (w, f) in {
        "other kind": (_f(), ROUTE),
        "other target": (_f(), FlannelConfig(CM)),
        "nothing asked": (_f(), _f(network="10.42.0.0/16")),
        "same key": (_f(network="10.42.0.0/16"), _f(network="10.42.0.0/16", enable_ipv4=True)),
        "other value": (_f(network="10.42.0.0/16"), _f(network="10.43.0.0/16")),
        "missing key": (_f(enable_ipv6=False), _f()),
        "extra same": (_f(extra={"A": {"x": 1, "y": 2}}), _f(extra={"A": {"y": 2, "x": 1}})),
        "extra other": (_f(extra={"A": 1}), _f(extra={"A": 2})),
        "backend options kept": (_f(backend_type="vxlan", backend_options={"MTU": 1400}),
                                 _f(backend_type="vxlan", backend_options={
                                     "MTU": 1400, "VNI": 1})),
        "backend option other": (_f(backend_type="vxlan", backend_options={"MTU": 1400}),
                                 _f(backend_type="vxlan", backend_options={"MTU": 1450})),
        "backend option missing": (_f(backend_type="vxlan", backend_options={"MTU": 1400}),
                                   _f(backend_type="vxlan")),
        "backend type other": (_f(backend_type="vxlan"), _f(backend_type="host-gw")),
        "backend type missing": (_f(backend_type="vxlan"), _f()),
        "backend type only": (_f(backend_type="vxlan"),
                              _f(backend_type="vxlan", backend_options={"VNI": 1})),
    }.items()},
    "effective none": lambda: effective_config(State()),
    "effective": lambda: effective_config(State(
        owned=[_f(backend_type="vxlan", backend_options={"MTU": 1400}, enable_ipv6=True)],
        foreign=[_f(network="10.42.0.0/16", enable_ipv6=False,
                    backend_type="vxlan", backend_options={"VNI": 1, "MTU": 1280}),
                 ROUTE])),
    "effective of a target": lambda: effective_config(State(
        owned=[_f(enable_ipv6=True)], foreign=[FlannelConfig(CM, enable_ipv6=False)]), CM),
    "effective of no target": lambda: effective_config(State(owned=[_f(enable_ipv6=True)]), CM),
    "effective of two targets": lambda: effective_config(State(
        owned=[_f(enable_ipv6=True)], foreign=[FlannelConfig(CM, enable_ipv6=False)])),
    "merge": lambda: merge_members(
        {"Backend": {"Type": "vxlan", "VNI": 1}, "Network": "10.42.0.0/16", "A": {"x": 1}},
        {"Backend": {"Type": "host-gw"}, "A": {"y": 1}, "B": 2}),
    "merge over a non-object": lambda: [
        merge_members({"Backend": "vxlan"}, {"Backend": {"Type": "vxlan"}}),
        merge_members({"Backend": {"Type": "vxlan"}}, {"Backend": None})],
    # flannel's networks, expected
    "networks string": lambda: FlannelNetworks(F, "10.42.0.0/16"),
    "networks": lambda: FlannelNetworks(CM, ["10.42.0.0/16", "fd00:42::/56"]),
    "networks none": lambda: FlannelNetworks(CM, []),
    "networks judged": lambda: {name: _judge(FlannelNetworks(F, pods), config)
                                for name, (pods, config) in {
        "equal": (["10.42.0.0/16", "fd00:42::/56"],
                  _f(network="10.42.0.0/16", ipv6_network="fd00:42::/56", enable_ipv6=True)),
        "v4 other": (["10.42.0.0/16"], _f(network="10.244.0.0/16")),
        "v4 other, v4 off": (["10.42.0.0/16"], _f(network="10.244.0.0/16", enable_ipv4=False)),
        "v4 other, v4 on": (["10.42.0.0/16"], _f(network="10.244.0.0/16", enable_ipv4=True)),
        "v4 unset": (["10.42.0.0/16"], _f(ipv6_network="fd00::/64")),
        "v6 other, v6 unset": (["fd00:42::/56"], _f(ipv6_network="::/0")),
        "v6 other, v6 off": (["fd00:42::/56"], _f(ipv6_network="::/0", enable_ipv6=False)),
        "v6 other, v6 on": (["10.42.0.0/16", "fd00:42::/56"],
                            _f(network="10.43.0.0/16", ipv6_network="::/0",
                               enable_ipv6=True)),
        "other target": (["10.42.0.0/16"], FlannelConfig(CM, network="10.244.0.0/16")),
        "other kind": (["10.42.0.0/16"], ROUTE),
    }.items()},
    # calico pools
    "pool names": lambda: [pool_name("pods", "10.42.0.0/16"), pool_name("x-1", "fd00::/64")],
    "pool name purpose": lambda: pool_name("Pods", "10.42.0.0/16"),
    "pool name bad cidr": lambda: pool_name("pods", "10.42.0.1/16"),
    "pool name": lambda: IPPool("Pods", "10.42.0.0/16"),
    "pool name long": lambda: IPPool("a" * 254, "10.42.0.0/16"),
    "pool name 253": lambda: len(IPPool("a" * 253, "10.42.0.0/16").name),
    "pool name not a string": lambda: IPPool(None, "10.42.0.0/16"),  # type: ignore[arg-type]
    "pool defaults": _pool,
    "pool v6 defaults": lambda: _pool(cidr="fd00:42::/56"),
    "pool everything": lambda: _pool(
        "every.thing", nat_outgoing=True, disabled=True, ipip_mode="CrossSubnet",
        block_size=24, node_selector="zone == 'a'", disable_bgp_export=True,
        allowed_uses=["Workload", "LoadBalancer", "Workload"], assignment_mode="Manual",
        namespace_selector="all()"),
    "pool vxlan": lambda: _pool(vxlan_mode="Always", namespace_selector="x == 'y'"),
    "pool nat bool": lambda: _pool(nat_outgoing=1),
    "pool disabled bool": lambda: _pool(disabled="no"),
    "pool bgp bool": lambda: _pool(disable_bgp_export=None),
    "pool ipip mode": lambda: _pool(ipip_mode="always"),
    "pool vxlan mode": lambda: _pool(vxlan_mode=""),
    "pool both modes": lambda: _pool(ipip_mode="Always", vxlan_mode="CrossSubnet"),
    "pool v6 ipip": lambda: _pool(cidr="fd00::/64", ipip_mode="Always"),
    "pool v6 vxlan": lambda: _pool(cidr="fd00::/64", vxlan_mode="Always"),
    "pool block sizes": lambda: [
        _pool(block_size=b, cidr=c).block_size for b, c in (
            (20, "10.0.0.0/8"), (32, "10.0.0.0/8"), (116, "fd00::/64"), (128, "fd00::/64"))],
    "pool block too small": lambda: _pool(block_size=19, cidr="10.0.0.0/8"),
    "pool block too big": lambda: _pool(block_size=33),
    "pool block v6 too small": lambda: _pool(block_size=115, cidr="fd00::/64"),
    "pool block v6 too big": lambda: _pool(block_size=129, cidr="fd00::/64"),
    "pool block bool": lambda: _pool(block_size=True),
    "pool block text": lambda: _pool(block_size="26"),
    "pool smaller than a block": lambda: _pool(cidr="10.42.0.0/27"),
    "pool one block": lambda: _pool(cidr="10.42.0.0/26").block_size,
    "pool selector empty": lambda: _pool(node_selector=""),
    "pool selector blank": lambda: _pool(node_selector=" "),
    "pool selector not a string": lambda: _pool(node_selector=5),
    "pool namespace selector not a string": lambda: _pool(namespace_selector=None),
    "pool namespace selector blank": lambda: _pool(namespace_selector=" ").namespace_selector,
    "pool selector 1024": lambda: len(_pool(node_selector="a" * 1024).node_selector),
    "pool selector 1025": lambda: _pool(node_selector="a" * 1025),
    "pool namespace selector 1025": lambda: _pool(namespace_selector="a" * 1025),
    "pool selector control": lambda: _pool(node_selector="a\x1fb"),
    "pool namespace selector control": lambda: _pool(namespace_selector="\n"),
    "pool selector global": lambda: _pool(node_selector="global ()"),
    "pool namespace selector global": lambda: _pool(namespace_selector="!global()"),
    "pool selector globalish": lambda: _pool(node_selector="myglobal() || noglobal"),
    "pool uses": lambda: [_pool(allowed_uses=[]).allowed_uses,
                          _pool(allowed_uses=None).allowed_uses,
                          _pool(allowed_uses=("Tunnel",)).allowed_uses,
                          _pool(allowed_uses=iter(["Workload", "Tunnel"])).allowed_uses],
    "pool uses string": lambda: _pool(allowed_uses="Workload"),
    "pool uses not a list": lambda: _pool(allowed_uses=3),
    "pool uses unknown": lambda: _pool(allowed_uses=["Workload", "Egress"]),
    "pool assignment": lambda: _pool(assignment_mode="automatic"),
    "pool family": lambda: [_pool().family, _pool(cidr="fd00::/64").family],
    "pool unusable": lambda: {name: [p.unusable_reason, p.workload_usable] for name, p in {
        "usable": _pool(),
        "usable, select all": _pool(namespace_selector="all()"),
        "disabled": _pool(disabled=True, allowed_uses=["Tunnel"]),
        "tunnel only": _pool(allowed_uses=["Tunnel", "LoadBalancer"], assignment_mode="Manual"),
        "manual": _pool(assignment_mode="Manual", namespace_selector="a == 'b'"),
        "namespaces": _pool(namespace_selector='team == "a"'),
    }.items()},
    "pool judged": lambda: {name: _judge(w, f) for name, (w, f) in {
        "other kind": (_pool(), ROUTE),
        "same": (_pool(), _pool("q")),
        "same, other nat": (_pool(nat_outgoing=True), _pool("q")),
        "same, unusable": (_pool(), _pool("q", allowed_uses=["Tunnel"])),
        "same name, other cidr": (_pool(), _pool(cidr="10.43.0.0/16")),
        "other name, overlapping": (_pool(), _pool("q", cidr="10.42.0.0/15")),
        "other name, apart": (_pool(), _pool("q", cidr="10.43.0.0/16")),
        "disabled, covered": (_pool(disabled=True, cidr="10.42.1.0/24"),
                              _pool("q", disabled=True, nat_outgoing=True)),
        "disabled, equal": (_pool(disabled=True), _pool("q", allowed_uses=["Tunnel"])),
        "disabled, partly covered": (_pool(disabled=True, cidr="10.42.0.0/15"), _pool("q")),
        "pools readable": (_pool(), _pools(_pool("q", cidr="10.43.0.0/16"))),
        "pools unreadable": (_pool(), _pools(invalid={"x": "no cidr", "a": "bad"})),
    }.items()},
    "pool spec": lambda: [_pool().to_spec(), _pool("p", "fd00::/64", vxlan_mode="Always",
                                                   allowed_uses=["Workload"],
                                                   assignment_mode="Manual",
                                                   namespace_selector="a == 'b'").to_spec(),
                          _pool().to_spec(explicit=["allowedUses", "namespaceSelector"]),
                          _pool(assignment_mode="Manual").extra_spec(explicit=iter(
                              ["assignmentMode"]))],
    "pool from dict": lambda: IPPool.from_dict({"name": "p", "cidr": "10.42.0.0/16"}),
    # every pool at once
    "pools": lambda: _pools(_pool("b", "10.43.0.0/16", disabled=True), _pool("a"),
                            invalid=[("z", "x"), ("c", 7)]),
    "pools none": _pools,
    "pools not pools": lambda: CalicoPools([ROUTE]),  # type: ignore[list-item]
    "pools overlapping": lambda: [p.name for p in _pools(
        _pool("a"), _pool("b", "10.43.0.0/16"), _pool("c", "10.40.0.0/14"),
        _pool("d", "fd00::/64")).overlapping(parse_network("10.42.128.0/17"))],
    "pools reason": lambda: _pools(invalid={"b": "why b", "a": "why a"}).invalid_reason(),
    "pools from dict": lambda: CalicoPools.from_dict({}),
    # the pod CIDR, expected as a pool
    "pod cidr requires": lambda: CalicoPodCIDR("10.42.0.0/16", requires={"natOutgoing": True,
                                                                       "cidr": "x"}),
    "pod cidr": lambda: CalicoPodCIDR("10.42.0.0/16", requires={
        "vxlanMode": "Always", "blockSize": 24, "nodeSelector": "all()", "ipipMode": "Never"}),
    "pod cidr without nat": lambda: CalicoPodCIDR("fd00::/64", nat_outgoing=False),
    "pod cidr from dict": lambda: CalicoPodCIDR.from_dict({"cidr": "10.42.0.0/16",
                                                          "requires": None}),
    "pod cidr judged": lambda: {name: _judge(w, f) for name, (w, f) in {
        "other kind": (CalicoPodCIDR("10.42.0.0/16"), _pool()),
        "met": (CalicoPodCIDR("10.42.0.0/16"),
                _pools(_pool("x", "10.43.0.0/16"), _pool(nat_outgoing=True))),
        "met without nat": (CalicoPodCIDR("10.42.0.0/16", nat_outgoing=False), _pools(_pool())),
        "nat other": (CalicoPodCIDR("10.42.0.0/16"), _pools(_pool())),
        "nat other, without": (CalicoPodCIDR("10.42.0.0/16", nat_outgoing=False),
                               _pools(_pool(nat_outgoing=True))),
        "unusable": (CalicoPodCIDR("10.42.0.0/16"),
                     _pools(_pool("a", nat_outgoing=True, assignment_mode="Manual"),
                            _pool("b", nat_outgoing=True, disabled=True))),
        "one unusable, one fine": (CalicoPodCIDR("10.42.0.0/16"),
                                   _pools(_pool("a", nat_outgoing=True, disabled=True),
                                          _pool("b", nat_outgoing=True))),
        "requires met": (CalicoPodCIDR("10.42.0.0/16", requires={"blockSize": 24}),
                         _pools(_pool(nat_outgoing=True, block_size=24))),
        "requires other": (CalicoPodCIDR("10.42.0.0/16", requires={
            "blockSize": 24, "vxlanMode": "Always", "nodeSelector": "all()"}),
            _pools(_pool(nat_outgoing=True))),
        "requires and nat other": (CalicoPodCIDR("10.42.0.0/16", requires={"blockSize": 24}),
                                   _pools(_pool(block_size=24))),
        "no pool": (CalicoPodCIDR("10.42.0.0/16"), _pools()),
        "overlapping pools": (CalicoPodCIDR("10.42.0.0/16"),
                              _pools(_pool("a", "10.42.0.0/17", nat_outgoing=True),
                                     _pool("b", "10.0.0.0/8"), _pool("c", "10.43.0.0/16"))),
    }.items()},
    # a destination Calico should NAT
    "nat destination": lambda: CalicoNatDestination("192.168.0.0/16",
                                                    exclude=["192.168.2.0/24", "fd00::/64"]),
    "nat destination string": lambda: CalicoNatDestination("192.168.0.0/16",
                                                           exclude="192.168.2.0/24"),
    "nat destination from dict": lambda: CalicoNatDestination.from_dict(
        {"cidr": "192.168.0.0/16"}),
    "nat destination judged": lambda: {name: _judge(w, f) for name, (w, f) in {
        "other kind": (CalicoNatDestination("192.168.0.0/16"), _pool(cidr="192.168.0.0/16")),
        "no pool": (CalicoNatDestination("192.168.0.0/16"), _pools()),
        "pool apart": (CalicoNatDestination("192.168.0.0/16"), _pools(_pool())),
        "pool inside": (CalicoNatDestination("192.168.0.0/16"),
                        _pools(_pool(), _pool("n", "192.168.2.0/24", disabled=True),
                               _pool("m", "192.168.0.0/15"))),
        "pool excluded": (CalicoNatDestination("192.168.0.0/16", exclude=["192.168.2.0/24"]),
                          _pools(_pool("n", "192.168.2.0/24", disabled=True))),
        "pool partly excluded": (CalicoNatDestination("192.168.0.0/16",
                                                      exclude=["192.168.2.0/25"]),
                                 _pools(_pool("n", "192.168.2.0/24", disabled=True))),
        "exclusion of the other family": (CalicoNatDestination("192.168.0.0/16",
                                                               exclude=["fd00::/64"]),
                                          _pools(_pool("n", "192.168.2.0/24"))),
    }.items()},
    # every pool readable
    "readable": lambda: [CalicoPoolsReadable(), CalicoPoolsReadable.from_dict({})],
    "readable judged": lambda: {name: _judge(CalicoPoolsReadable(), f) for name, f in {
        "other kind": _pool(), "fine": _pools(_pool()),
        "unreadable": _pools(invalid=[("x", "its cidr is 'ten'")]),
    }.items()},
    "readable, reason of another kind": lambda: CalicoPoolsReadable().conflict_reason(ROUTE),
    "clash keys": lambda: [o.clash_key and list(o.clash_key) for o in (
        _f(), FlannelNetworks(F, []), _pool(), _pools(), CalicoPodCIDR("10.42.0.0/16"),
        CalicoNatDestination("10.0.0.0/8"), CalicoPoolsReadable())],
}


def test_cni_texts() -> None:
    check("cni", CASES)


# Objects that differ in one thing each (and some that differ only in spelling).
VARIANTS = [
    _f(), FlannelConfig(CM), _f(network="10.42.0.0/16"), _f(network="10.42.0.0/17"),
    _f(ipv6_network="fd00::/64"), _f(enable_ipv4=True), _f(enable_ipv4=False),
    _f(enable_ipv6=True), _f(enable_ipv6=False), _f(enable_nftables=True),
    _f(enable_nftables=False), _f(backend_type="vxlan"), _f(backend_type="host-gw"),
    _f(backend_type="vxlan", backend_options={"VNI": 1}),
    _f(backend_type="vxlan", backend_options={"VNI": 2}), _f(extra={"A": 1}),
    _f(extra={"A": "1"}), _f(extra={"B": 1}),
    FlannelNetworks(F, []), FlannelNetworks(CM, []), FlannelNetworks(F, ["10.42.0.0/16"]),
    FlannelNetworks(F, ["10.42.0.0/16", "fd00::/64"]),
    _pool(), _pool("q"), _pool(cidr="10.42.0.0/17"), _pool(nat_outgoing=True),
    _pool(disabled=True), _pool(ipip_mode="Always"), _pool(ipip_mode="CrossSubnet"),
    _pool(vxlan_mode="Always"), _pool(block_size=24), _pool(node_selector="a == 'b'"),
    _pool(disable_bgp_export=True), _pool(allowed_uses=["Workload"]),
    _pool(allowed_uses=["Tunnel"]), _pool(assignment_mode="Manual"),
    _pool(namespace_selector="all()"), _pool(namespace_selector="a == 'b'"),
    _pools(), _pools(_pool()), _pools(_pool(), _pool("q", "10.43.0.0/16")),
    _pools(invalid=[("x", "y")]), _pools(invalid=[("x", "z")]),
    CalicoPodCIDR("10.42.0.0/16"), CalicoPodCIDR("10.42.0.0/17"),
    CalicoPodCIDR("10.42.0.0/16", nat_outgoing=False),
    CalicoPodCIDR("10.42.0.0/16", requires={"blockSize": 24}),
    CalicoPodCIDR("10.42.0.0/16", requires={"blockSize": 25}),
    CalicoPodCIDR("10.42.0.0/17", siblings=["10.42.128.0/17"]),
    CalicoPodCIDR("10.42.0.0/17", siblings=["10.42.128.0/17", "10.43.0.0/16"]),
    CalicoNatDestination("10.0.0.0/8"), CalicoNatDestination("10.0.0.0/9"),
    CalicoNatDestination("10.0.0.0/8", exclude=["10.1.0.0/16"]),
    CalicoNatDestination("10.0.0.0/8", exclude=["10.1.0.0/16", "10.2.0.0/16"]),
    CalicoPoolsReadable(),
]


def test_objects_round_trip_and_equality_agrees_with_the_json_form() -> None:
    for obj in VARIANTS:
        assert object_from_dict(json.loads(json.dumps(obj.to_dict()))) == obj
    for a in VARIANTS:
        for b in VARIANTS:
            assert (a == b) == (a.to_dict() == b.to_dict()), (a, b)
    assert len({hash(v) for v in VARIANTS}) == len(VARIANTS)
    # Spelled otherwise, the same value.
    assert _f(extra={"A": {"x": 1, "y": [1]}}) == _f(extra={"A": {"y": [1], "x": 1}})
    assert _pool(block_size=26) == _pool()
    assert _pool(allowed_uses=["Workload", "Tunnel"]) == _pool(allowed_uses=[])
    assert _pools(_pool("b"), _pool("a")) == _pools(_pool("a"), _pool("b"))
    assert _pools(invalid={"b": "1", "a": "2"}) == _pools(invalid=[("a", "2"), ("b", "1")])
    # The spec's other pod CIDRs are a set: their order and repeats change nothing.
    assert (CalicoPodCIDR("10.42.0.0/17", siblings=["10.43.0.0/16", "10.42.128.0/17"])
            == CalicoPodCIDR("10.42.0.0/17",
                             siblings=["10.42.128.0/17", "10.43.0.0/16", "10.43.0.0/16"]))


def test_a_pool_read_back_from_its_spec_is_the_pool() -> None:
    for pool in VARIANTS:
        if isinstance(pool, IPPool):
            spec = pool.to_spec()
            again = IPPool(pool.name, spec["cidr"], nat_outgoing=spec["natOutgoing"],
                           disabled=spec["disabled"], ipip_mode=spec["ipipMode"],
                           vxlan_mode=spec["vxlanMode"], block_size=spec["blockSize"],
                           node_selector=spec["nodeSelector"],
                           disable_bgp_export=spec["disableBGPExport"],
                           allowed_uses=spec.get("allowedUses"),
                           assignment_mode=spec.get("assignmentMode", "Automatic"),
                           namespace_selector=spec.get("namespaceSelector", ""))
            assert again == pool


def test_the_effective_config_is_the_foreign_one_with_the_owned_keys_over_it() -> None:
    foreign = _f(network="10.42.0.0/16", backend_type="vxlan",
                 backend_options={"VNI": 1, "MTU": 1280}, extra={"SubnetLen": 24})
    owned = _f(backend_type="vxlan", backend_options={"MTU": 1400}, enable_ipv6=False)
    # In either order of the state's lists: the owned keys win.
    for state in (State(owned=[owned], foreign=[foreign]),
                  State(foreign=[foreign], owned=[owned])):
        effective = effective_config(state)
        assert effective is not None
        assert effective.members() == {
            "Network": "10.42.0.0/16", "EnableIPv6": False,
            "Backend": {"Type": "vxlan", "VNI": 1, "MTU": 1400}, "SubnetLen": 24}
        assert owned.met_by(effective)
        assert not owned.met_by(foreign)
