"""What compile makes of a catalogue of specs: every object, field for field.

Each case is a spec document (every key of the table used somewhere) compiled with
CNI targets; the record (``tests/data/spec/compile.txt``) holds the spec's written
form and the compiled objects as JSON, one a line, or the problems compile raises.
The objects are what backends apply, so a change here is a change of what nodes get:
regenerate with ``K3SNET_REGENERATE=1`` and review the diff. Each case also checks the
written form reads back to the same spec.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from k3snet import Spec, SpecError, State
from k3snet.model import FlannelConfig
from k3snet.spec import (
    BlockSizes,
    Cluster,
    Destination,
    MasqueradePolicy,
    check_pod_cidr,
    compile_cilium,
    compile_flannel,
    compile_ippools,
    nat_exemptions,
    pod_cidr_problems,
)
from k3snet.spec import compile as compile_spec

DATA = Path(__file__).resolve().parents[1] / "data" / "spec"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

FLANNEL = "file:/etc/flannel/net-conf.json"
CILIUM = "configmap:kube-system/cilium-config"
DUAL = {"podCIDRs": ["10.42.0.0/16", "fd42::/56"], "serviceCIDRs": ["10.43.0.0/16", "fd43::/112"]}

# name -> (document, compile keywords)
CASES: dict[str, tuple[Any, dict[str, Any]]] = {
    "destinations: routes, forward and NAT per destination": ({
        "cluster": DUAL,
        "destinations": [
            {"cidr": "192.168.2.0/24", "gateway": "192.168.1.1", "device": "eth0",
             "table": 100, "metric": 50, "exclude": ["192.168.2.8/29", "192.168.2.64/26"]},
            {"cidr": "192.168.3.0/24", "gateway": "192.168.1.1"},
            {"cidr": "192.168.4.0/24", "device": "eth1", "masquerade": False},
            {"cidr": "192.168.5.0/24", "forward": False},
            {"cidr": "fd01:2::/64", "gateway": "fd00::1", "device": "eth0", "metric": 0},
            {"cidr": "fd01:3::/64"}],
        "masquerade": {"outInterface": "eth9", "randomFully": True},
        "forward": {"inInterface": "cni0"}}, {}),
    "destinations: SNAT for one family, forward off": ({
        "cluster": DUAL,
        "destinations": [{"cidr": "192.168.2.0/24", "device": "eth0"},
                         {"cidr": "fd01:2::/64", "device": "eth0"}],
        "masquerade": {"snatAddresses": ["fd00::5"]},
        "forward": {"accept": False}}, {}),
    "mode all: ip-masq-agent semantics, dual stack": ({
        "cluster": DUAL,
        "destinations": [
            {"cidr": "192.168.2.0/24", "exclude": ["192.168.2.8/29"]},
            {"cidr": "192.168.3.0/24", "masquerade": False},
            {"cidr": "fd01:2::/64", "exclude": ["fd01:2::/80"]},
            {"cidr": "fd01:3::/64", "masquerade": False}],
        "masquerade": {"mode": "all", "nonMasqueradeCIDRs": ["10.0.0.0/8", "fd00::/8"],
                       "masqLinkLocal": True, "outInterface": "eth0",
                       "snatAddresses": ["192.168.1.5"]}}, {}),
    "mode all: link-local kept for IPv4, masqueraded for IPv6": ({
        "cluster": {"podCIDRs": ["fd42::/56", "10.42.0.0/16"]},
        "masquerade": {"mode": "all", "masqLinkLocalIPv6": True, "randomFully": True}}, {}),
    "mode all from an ip-masq-agent config": ({
        "masquerade": {"ipMasqAgentConfig": "nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12]\n"
                                            "masqLinkLocal: true\nresyncInterval: 60s\n",
                       "masqLinkLocal": False}}, {}),
    "mode all from an ip-masq-agent mapping without CIDRs": ({
        "masquerade": {"ipMasqAgentConfig": {"masqLinkLocalIPv6": True}}}, {}),
    "mode off: routes and forward only": ({
        "destinations": [{"cidr": "192.168.2.0/24", "device": "eth0"}],
        "masquerade": {"mode": "off"}}, {}),
    "sysctls: an explicit one wins over managed forwarding": ({
        "cluster": DUAL,
        "destinations": [{"cidr": "fd01:2::/64", "device": "eth0"}],
        "sysctls": {"net.ipv6.conf.all.forwarding": 2, "net.ipv4.conf.all.rp_filter": 2}},
        {}),
    "sysctls: forwarding not managed": ({
        "destinations": [{"cidr": "192.168.2.0/24"}], "manageForwarding": False,
        "sysctls": {"net.ipv4.tcp_mtu_probing": 1}}, {}),
    "no destination: nothing but the expectations": ({}, {
        "flannel_targets": [FLANNEL], "cilium_targets": [CILIUM]}),
    "kinds: routes only": ({
        "destinations": [{"cidr": "192.168.2.0/24", "gateway": "192.168.1.1"}],
        "masquerade": {"mode": "all"}}, {"kinds": ["route"]}),
    "kinds: NAT and sysctls": ({
        "destinations": [{"cidr": "192.168.2.0/24", "gateway": "192.168.1.1"}],
        "masquerade": {"mode": "all"}}, {"kinds": ["nat", "sysctl"]}),
    "kinds: forward": ({
        "destinations": [{"cidr": "192.168.2.0/24", "gateway": "192.168.1.1"}]},
        {"kinds": ("forward",), "flannel_targets": [FLANNEL]}),
    "flannel: expectation only": ({"cluster": DUAL}, {"flannel_targets": [FLANNEL, "file:/b"]}),
    "flannel: settings without networks": ({
        "cni": {"flannel": {"backend": {"type": "vxlan", "options": {"VNI": 4, "Port": 8472}},
                            "enableNFTables": False}}},
        {"flannel_targets": [FLANNEL]}),
    "flannel: nothing to set": ({"cni": {"flannel": {}}}, {"flannel_targets": [FLANNEL]}),
    "flannel: setNetworks, dual stack": ({
        "cluster": DUAL,
        "cni": {"flannel": {"setNetworks": True, "backend": {"type": "host-gw"},
                            "enableNFTables": True}}},
        {"flannel_targets": [FLANNEL, "configmap:kube-system/kube-flannel-cfg"]}),
    "flannel: setNetworks with backend options": ({
        "cni": {"flannel": {"setNetworks": True,
                            "backend": {"type": "vxlan", "options": {"VNI": 7}}}}},
        {"flannel_targets": [FLANNEL]}),
    "flannel: setNetworks, IPv6 only": ({
        "cluster": {"podCIDRs": ["fd42::/56"], "serviceCIDRs": ["fd43::/112"]},
        "cni": {"flannel": {"setNetworks": True}}}, {"flannel_targets": [FLANNEL]}),
    "flannel: settings without targets": ({
        "cni": {"flannel": {"setNetworks": True, "backend": {"type": "vxlan"}}}}, {}),
    "flannel: two networks of a family": ({
        "cluster": {"podCIDRs": ["10.42.0.0/16", "10.44.0.0/16", "fd42::/56", "fd44::/56"]},
        "cni": {"flannel": {"setNetworks": True}}}, {"flannel_targets": [FLANNEL]}),
    "flannel: two networks without setNetworks": ({
        "cluster": {"podCIDRs": ["10.42.0.0/16", "10.44.0.0/16"]},
        "cni": {"flannel": {"enableNFTables": True}}}, {"flannel_targets": [FLANNEL]}),
    "flannel: options need the type": ({
        "cni": {"flannel": {"backend": {"options": {"VNI": 4}}}}},
        {"flannel_targets": [FLANNEL]}),
    "calico: defaults, NAT exemptions": ({
        "cluster": DUAL,
        "destinations": [
            {"cidr": "192.168.0.0/16", "masquerade": False},
            {"cidr": "172.16.0.0/12", "exclude": ["172.16.0.0/30", "172.17.0.0/16"]},
            {"cidr": "fd01::/16", "exclude": ["fd01:2::/128", "fd01:3::/64"]}],
        "cni": {"calico": {}}}, {}),
    "calico: every setting, mode all": ({
        "cluster": DUAL,
        "destinations": [{"cidr": "192.168.2.0/24"}],
        "masquerade": {"mode": "all", "nonMasqueradeCIDRs": [
            "10.0.0.0/8", "169.254.0.0/16", "fe80::/10", "fd00::/8", "100.64.0.0/10"]},
        "cni": {"calico": {"ipipMode": "CrossSubnet", "vxlanMode": "Always",
                           "nodeSelector": "has(egress)", "allowDisruptive": True}}}, {}),
    "calico: mode all keeps the destinations' exemptions": ({
        "destinations": [{"cidr": "192.168.2.0/24", "masquerade": False},
                         {"cidr": "192.168.3.0/24", "exclude": ["192.168.3.0/28"]}],
        "masquerade": {"mode": "all", "nonMasqueradeCIDRs": ["172.16.0.0/12"]},
        "cni": {"calico": {}}}, {}),
    "calico: IPv4 settings": ({
        "cni": {"calico": {"blockSize": 24, "ipipMode": "Always", "vxlanMode": "Never"}}}, {}),
    "calico: a block size per family on a dual-stack cluster": ({
        "cluster": DUAL, "cni": {"calico": {"blockSize": {"ipv4": 24, "ipv6": 120}}}}, {}),
    "calico: an IPv6 block size only on a dual-stack cluster": ({
        "cluster": DUAL, "cni": {"calico": {"blockSize": {"ipv6": 120}}}}, {}),
    "calico: a per-family block size on a single-stack cluster": ({
        "cni": {"calico": {"blockSize": {"ipv4": 28}}}}, {}),
    "calico: block size bounds": ({
        "cni": {"calico": {"blockSize": 20}}}, {}),
    "calico: block size upper bound": ({
        "cni": {"calico": {"blockSize": 32}}}, {}),
    "calico: IPv6 block size bounds": ({
        "cluster": {"podCIDRs": ["fd42::/56"], "serviceCIDRs": ["fd43::/112"]},
        "cni": {"calico": {"blockSize": 116}}}, {}),
    "calico: IPv6 block size upper bound": ({
        "cluster": {"podCIDRs": ["fd42::/56"], "serviceCIDRs": ["fd43::/112"]},
        "cni": {"calico": {"blockSize": 128}}}, {}),
    "calico: mode off": ({
        "destinations": [{"cidr": "192.168.2.0/24", "masquerade": False}],
        "masquerade": {"mode": "off"}, "cni": {"calico": {"nodeSelector": "all()"}}}, {}),
    "calico: a pod CIDR smaller than its blocks": ({
        "cluster": {"podCIDRs": ["10.42.0.0/28"]}, "cni": {"calico": {"blockSize": 26}}}, {}),
    "calico: not compiled when flannel has problems": ({
        "cluster": {"podCIDRs": ["10.42.0.0/16", "10.44.0.0/16"]},
        "cni": {"calico": {"blockSize": 24}, "flannel": {"setNetworks": True}}},
        {"flannel_targets": [FLANNEL]}),
    "calico: compiled with flannel": ({
        "cni": {"calico": {"blockSize": 24}, "flannel": {"setNetworks": True}}},
        {"flannel_targets": [FLANNEL]}),
    "cilium: every setting": ({
        "cluster": DUAL,
        "destinations": [
            {"cidr": "192.168.2.0/24", "device": "eth1", "exclude": ["192.168.2.0/28"]},
            {"cidr": "192.168.3.0/24", "masquerade": False},
            {"cidr": "fd01:2::/64"}],
        "masquerade": {"mode": "all", "outInterface": "eth0",
                       "nonMasqueradeCIDRs": ["10.0.0.0/8"]},
        "cni": {"cilium": {
            "routingMode": "native", "tunnelProtocol": "geneve",
            "ipv4NativeRoutingCIDR": "10.42.0.0/16", "ipv6NativeRoutingCIDR": "fd42::/56",
            "enableIPv4Masquerade": True, "enableIPv6Masquerade": False, "bpfMasquerade": True,
            "ipMasqAgent": False, "egressMasqueradeInterfaces": "eth0 eth1",
            "nonMasqueradeCIDRs": ["10.0.0.0/8"], "masqLinkLocal": False,
            "masqLinkLocalIPv6": True}, "allowDisruptive": False}},
        {"cilium_targets": [CILIUM]}),
    "cilium: only the ip-masq-agent keys": ({
        "destinations": [{"cidr": "192.168.2.0/24"}],
        "cni": {"cilium": {"nonMasqueradeCIDRs": []}}}, {"cilium_targets": [CILIUM]}),
    "cilium: only link-local": ({"cni": {"cilium": {"masqLinkLocal": True}}},
                                {"cilium_targets": [CILIUM]}),
    "cilium: only IPv6 link-local": ({"cni": {"cilium": {"masqLinkLocalIPv6": False}}},
                                     {"cilium_targets": [CILIUM]}),
    "cilium: no key set": ({"cni": {"cilium": {}}, "masquerade": {"mode": "off"},
                            "destinations": [{"cidr": "192.168.2.0/24"}]},
                           {"cilium_targets": [CILIUM, "configmap:x/cilium-config"]}),
    "backends and their options": ({
        "backends": {"nftables": {"family": "split", "table": "k3s"}, "netlink": None,
                     "iptables": {}}}, {}),
    "backends as a list": ({"backends": ["netlink", "iptables", "my-back_end", "b" * 64]}, {}),
    "every other section": ({
        "dns": {"zones": [{"zone": "corp.example", "resolvers": ["192.168.1.53", "fd00::53"]}]},
        "egressPolicy": {"restrict": True, "namespace": "apps", "podSelector": {"tier": "web",
                                                                               "app": "shop"},
                         "allowDNS": False, "except": ["192.168.2.8/29"]},
        "destinations": [{"cidr": "192.168.2.0/24"}],
        "connectivityTest": {"target": "192.168.2.1", "port": 443, "namespace": "apps",
                             "image": "busybox:1.37"},
        "agent": {"image": "registry.local/k3snet:1", "namespace": "k3snet",
                  "intervalSeconds": 60}}, {}),
}


def _record(document: Any, keywords: dict[str, Any]) -> str:
    spec = Spec.from_dict(document)
    written = spec.to_dict()
    assert Spec.from_dict(written) == spec
    lines = [json.dumps(written)]
    try:
        state = compile_spec(spec, **keywords)
    except SpecError as exc:
        lines += [f"! {p}" for p in exc.problems]
    else:
        lines += [json.dumps(obj.to_dict()) for obj in state.ordered]
    return "\n".join(lines)


def _recorded(name: str) -> dict[str, str]:
    out = {}
    for block in (DATA / name).read_text().split("### ")[1:]:
        title, _, body = block.partition("\n")
        out[title] = body.rstrip("\n")
    return out


def _regenerate(name: str, cases: dict[str, Callable[[], str]]) -> None:
    if os.environ.get("K3SNET_REGENERATE") == "1":
        DATA.mkdir(parents=True, exist_ok=True)
        (DATA / name).write_text("".join(f"### {title}\n{case()}\n\n"
                                         for title, case in cases.items()))


def test_the_catalogue_is_recorded() -> None:
    _regenerate("compile.txt",
                {name: functools.partial(_record, *case) for name, case in CASES.items()})
    assert list(_recorded("compile.txt")) == list(CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_compile_gives_the_recorded_objects(name: str) -> None:
    assert _record(*CASES[name]) == _recorded("compile.txt")[name]


def test_the_seed_example_compiles_to_the_recorded_objects() -> None:
    spec = Spec.from_yaml((EXAMPLES / "seed.yaml").read_text())
    _regenerate("seed.txt", {"seed": lambda: _record(spec.to_dict(), {
        "flannel_targets": [FLANNEL], "cilium_targets": [CILIUM]})})
    assert _record(spec.to_dict(), {"flannel_targets": [FLANNEL], "cilium_targets": [CILIUM]}) \
        == _recorded("seed.txt")["seed"]


def _lines(state: State) -> list[str]:
    return [obj.describe() for obj in state.ordered]


def test_the_building_blocks_take_cidrs_or_a_spec() -> None:
    dual = Spec(cluster=Cluster(pod_cidrs=["10.42.0.0/16", "fd42::/56"]))
    assert _lines(compile_flannel(dual, target=FLANNEL)) == _lines(
        compile_flannel(["10.42.0.0/16", "fd42::/56"], target=FLANNEL))
    config = compile_flannel("10.42.0.0/16", target=FLANNEL, backend_type="vxlan",
                             backend_options={"VNI": 1}, enable_nftables=True,
                             extra={"SubnetLen": 24}).ordered[0]
    assert config.to_dict() == FlannelConfig(
        FLANNEL, network="10.42.0.0/16", backend_type="vxlan", backend_options={"VNI": 1},
        enable_nftables=True, extra={"SubnetLen": 24}).to_dict()
    assert config.enable_ipv6 is None
    (v6,) = compile_flannel(Spec(cluster=Cluster(pod_cidrs=["fd42::/56"])).cluster.pod_cidrs[0],
                            target=FLANNEL).ordered
    assert (v6.network, str(v6.ipv6_network), v6.enable_ipv6) == (None, "fd42::/56", True)
    with pytest.raises(SpecError) as info:
        compile_flannel(["10.42.0.0/16", "10.44.0.0/16", "10.46.0.0/16"], target=FLANNEL)
    assert [str(p) for p in info.value.problems] == [
        "cluster.podCIDRs: flannel takes one IPv4 network, the spec has 3: 10.42.0.0/16, "
        "10.44.0.0/16, 10.46.0.0/16"]


def test_pod_cidr_checks_against_flannel() -> None:
    config = FlannelConfig(FLANNEL, network="10.42.0.0/16", ipv6_network="fd44::/56",
                           enable_ipv6=True)
    assert [str(p) for p in pod_cidr_problems(["10.42.0.0/16", "fd42::/56"], config)] == [
        "cluster.podCIDRs[1]: pod CIDR fd42::/56 disagrees with flannel's IPv6Network fd44::/56 "
        "in file:/etc/flannel/net-conf.json: flannel gives pods addresses from fd44::/56, so "
        "rules for fd42::/56 would miss them; make them equal"]
    state = State(owned=[], foreign=[config])
    assert pod_cidr_problems(Spec(cluster=Cluster(pod_cidrs=["10.42.0.0/16", "fd44::/56"])),
                             state) == []
    assert pod_cidr_problems("10.44.0.0/16", State(owned=[])) == []
    check_pod_cidr("10.42.0.0/16", config)
    with pytest.raises(SpecError, match=r"cluster.podCIDRs\[0\]: pod CIDR 10.44.0.0/16"):
        check_pod_cidr("10.44.0.0/16", state)


@pytest.mark.parametrize("pods", [["10.42.0.0/16"], ["fd42::/56"], ["10.42.0.0/16", "fd42::/56"]])
def test_compile_flannel_enables_exactly_the_families_it_gives_a_network(pods: list[str]) -> None:
    # flannel enables IPv4 unless EnableIPv4 is false (pkg/subnet/config.go ParseConfig)
    # and refuses an enabled family without its network ("please define a correct
    # Network parameter"): an IPv6-only config must say EnableIPv4: false.
    config = compile_flannel(pods, target=FLANNEL).ordered[0]
    assert isinstance(config, FlannelConfig)
    assert (config.enable_ipv4 is not False) == (config.network is not None)
    assert (config.enable_ipv6 is True) == (config.ipv6_network is not None)


def test_nat_exemptions_are_what_calico_can_express() -> None:
    spec = Spec(cluster=Cluster(pod_cidrs=["10.42.0.0/16", "fd42::/56"]),
                destinations=[Destination("10.0.0.0/8", masquerade=False),
                              Destination("169.254.0.0/16", masquerade=False),
                              Destination("fe80::/10", masquerade=False),
                              Destination("192.168.2.0/24", exclude=["192.168.2.0/25",
                                                                     "192.168.2.128/25"])])
    assert [str(n) for n in nat_exemptions(spec)] == [
        "10.0.0.0/11", "10.32.0.0/13", "10.40.0.0/15", "10.43.0.0/16", "10.44.0.0/14",
        "10.48.0.0/12", "10.64.0.0/10", "10.128.0.0/9", "192.168.2.0/24"]
    assert nat_exemptions(Spec(destinations=spec.destinations,
                               masquerade=MasqueradePolicy("off"))) == ()
    assert [str(n) for n in nat_exemptions(Spec(masquerade=MasqueradePolicy(
        "all", non_masquerade_cidrs=["192.168.0.0/17", "192.168.128.0/17"])))] == [
        "192.168.0.0/16"]


def test_compile_ippools_takes_its_settings_as_arguments() -> None:
    spec = Spec(cluster=Cluster(pod_cidrs=["10.42.0.0/16", "fd42::/56"]),
                destinations=[Destination("192.168.2.0/24")])
    assert _lines(compile_ippools(spec)) == [
        "calico masquerades pods to 192.168.2.0/24",
        "calico pod CIDR 10.42.0.0/16 is a pool natOutgoing",
        "calico pod CIDR fd42::/56 is a pool natOutgoing",
        "calico every IPPool readable"]
    assert _lines(compile_ippools(spec, ipip_mode="Always", vxlan_mode="CrossSubnet",
                                  node_selector="x == 'y'")) == [
        "calico masquerades pods to 192.168.2.0/24",
        "calico pod CIDR 10.42.0.0/16 is a pool natOutgoing ipipMode=\"Always\" "
        "nodeSelector=\"x == 'y'\" vxlanMode=\"CrossSubnet\"",
        "calico pod CIDR fd42::/56 is a pool natOutgoing nodeSelector=\"x == 'y'\" "
        "vxlanMode=\"CrossSubnet\"",
        "calico every IPPool readable"]
    assert _lines(compile_ippools(spec, block_size=BlockSizes(ipv4=24, ipv6=120)))[1:3] == [
        "calico pod CIDR 10.42.0.0/16 is a pool natOutgoing blockSize=24",
        "calico pod CIDR fd42::/56 is a pool natOutgoing blockSize=120"]
    with pytest.raises(SpecError) as info:
        compile_ippools(spec, block_size=26)
    assert [str(p) for p in info.value.problems] == [
        "cni.calico.blockSize: one blockSize (26) cannot fit both families of a dual-stack "
        "cluster (Calico takes 20..32 for IPv4 pools, 116..128 for IPv6 pools): give one per "
        "family, such as blockSize: {ipv4: 26, ipv6: 122}"]
    with pytest.raises(SpecError) as info:
        compile_ippools(spec, block_size=BlockSizes(ipv6=26))
    assert [str(p) for p in info.value.problems] == [
        "cni.calico.blockSize.ipv6: expected 116..128 (Calico's range for IPv6 pools), got 26"]
    with pytest.raises(SpecError) as info:
        compile_ippools(Spec(cluster=Cluster(pod_cidrs=[])))
    assert [str(p) for p in info.value.problems] == [
        "cluster.podCIDRs: at least one pod CIDR is needed"]


def test_compile_cilium_skips_destinations_of_a_family_without_pods() -> None:
    # compile_cilium takes specs built in code as they are (compile validates them first).
    spec = Spec(destinations=[Destination("192.168.2.0/24", device="eth0"),
                              Destination("fd01::/64", device="eth0"),
                              Destination("fd02::/64", masquerade=False, exclude=["fd02::/80"])])
    assert _lines(compile_cilium(spec, target=CILIUM)) == [
        "cilium configmap:kube-system/cilium-config expects masquerade to 192.168.2.0/24 via eth0"]
