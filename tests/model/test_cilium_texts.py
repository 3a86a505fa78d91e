"""Cilium's model, case by case: every message, reason, fix, plan line and JSON form.

The outcomes are recorded in ``tests/data/model/cilium.json`` (see
``tests/model/recorded.py``); the reasons and fixes are what ``k3snet plan``
prints for a Cilium setup that contradicts the spec, so each one is read by a
user deciding what to change.
"""

from __future__ import annotations

import json

import pytest

from k3snet.model import NetObject
from k3snet.model.cidr import parse_network
from k3snet.model.cilium import (
    CILIUM_DEFAULT_TARGET,
    CiliumConfig,
    CiliumMasquerade,
    cilium_target,
    parse_go_bool,
    pool_problems,
    setting_problem,
    why_not_masqueraded,
)
from k3snet.model.state import object_from_dict
from tests.model.recorded import Case, check

T = CILIUM_DEFAULT_TARGET
BPF = {"enable-bpf-masquerade": "true", "enable-ip-masq-agent": "true"}


def _c(agent: dict[str, object] | None = None, /, **settings: str) -> CiliumConfig:
    return CiliumConfig(T, settings={k.replace("_", "-"): v for k, v in settings.items()},
                        ip_masq_agent=agent)


def _why(config: CiliumConfig, destination: str, device: str | None = None) -> str | None:
    return why_not_masqueraded(config, parse_network(destination), device)


def _expect(config: CiliumConfig, **kwargs: object) -> object:
    want = CiliumMasquerade(T, **kwargs)  # type: ignore[arg-type]
    return {"problems": want.problems(config), "conflicts": want.conflicts_with(config),
            "reason": want.conflict_reason(config)}


CASES: dict[str, Case] = {
    # targets
    "target ns": lambda: cilium_target("cilium"),
    "target ns name": lambda: cilium_target("cilium", "cfg.v2"),
    "target bad": lambda: CiliumConfig("kube-system/cilium-config"),
    "target not a string": lambda: CiliumConfig(7),  # type: ignore[arg-type]
    # 330 characters at most (the pattern alone has no bound).
    "target 330": lambda: len(cilium_target("a" * 306)),
    "target 331": lambda: cilium_target("a" * 307),
    "target upper": lambda: cilium_target("Kube-system"),
    # Go's ParseBool
    "go bools": lambda: {v: parse_go_bool(v) for v in (
        "1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False",
        "yes", "tRUE", "", " true")},
    # values k3snet writes
    "setting unknown key": lambda: setting_problem("debug", "true"),
    "setting context key": lambda: setting_problem("ipam", "kubernetes"),
    "setting not a string": lambda: setting_problem("routing-mode", 1),  # type: ignore[arg-type]
    "setting bool": lambda: setting_problem("enable-ipv4-masquerade", "True"),
    "setting bool ok": lambda: [setting_problem(k, v) for k in (
        "enable-ipv4-masquerade", "enable-ipv6-masquerade", "enable-bpf-masquerade",
        "enable-ip-masq-agent", "enable-masquerade-to-route-source") for v in ("true", "false")],
    "setting routing-mode": lambda: setting_problem("routing-mode", "Native"),
    "setting tunnel-protocol": lambda: setting_problem("tunnel-protocol", "gre"),
    "setting choices ok": lambda: [setting_problem(k, v) for k, v in (
        ("routing-mode", "tunnel"), ("routing-mode", "native"),
        ("tunnel-protocol", "vxlan"), ("tunnel-protocol", "geneve"))],
    "setting cidr bad": lambda: setting_problem("ipv4-native-routing-cidr", "10.42.0.0/33"),
    "setting cidr host bits": lambda: setting_problem("ipv4-native-routing-cidr",
                                                      "10.42.0.1/16"),
    "setting cidr v6 in v4": lambda: setting_problem("ipv4-native-routing-cidr", "fd00::/64"),
    "setting cidr v4 in v6": lambda: setting_problem("ipv6-native-routing-cidr",
                                                     "10.42.0.0/16"),
    "setting cidr ok": lambda: [setting_problem("ipv4-native-routing-cidr", "10.42.0.0/16"),
                                setting_problem("ipv6-native-routing-cidr", "fd00::/64")],
    "setting interfaces blank": lambda: setting_problem("egress-masquerade-interfaces", "  "),
    "setting interfaces control": lambda: setting_problem("egress-masquerade-interfaces",
                                                          "eth0\tbond0"),
    "setting interfaces space": lambda: setting_problem("egress-masquerade-interfaces",
                                                        "eth0 \x1f"),
    "setting interfaces ok": lambda: setting_problem("egress-masquerade-interfaces",
                                                     "eth+ bond0"),
    "setting route source ok": lambda: setting_problem("enable-masquerade-to-route-source",
                                                       "true"),
    # the objects' checks
    "settings unknown": lambda: _c(debug="true"),
    "settings not a string": lambda: CiliumConfig(T, settings={"ipam": 1}),  # type: ignore[arg-type]
    "settings pairs": lambda: CiliumConfig(T, settings=[("ipam", "kubernetes")]),
    "settings context keys": lambda: _c(enable_ipv4="true", enable_ipv6="false",
                                        ipam="kubernetes", cluster_pool_ipv4_cidr="10.0.0.0/8",
                                        cluster_pool_ipv6_cidr="fd00::/104"),
    "agent unknown key": lambda: _c({"resyncInterval": "60s"}),
    "agent cidrs not a list": lambda: _c({"nonMasqueradeCIDRs": "10.0.0.0/8"}),
    "agent cidrs not strings": lambda: _c({"nonMasqueradeCIDRs": ["10.0.0.0/8", 7]}),
    "agent cidr bad": lambda: _c({"nonMasqueradeCIDRs": ["10.0.0.0/40"]}),
    "agent cidr host bits": lambda: _c({"nonMasqueradeCIDRs": ["10.1.2.3/8"]}),
    "agent link local": lambda: _c({"masqLinkLocal": "true"}),
    "agent link local v6": lambda: _c({"masqLinkLocalIPv6": 1}),
    "agent empty": lambda: _c({}),
    "agent pairs": lambda: CiliumConfig(T, ip_masq_agent=[("masqLinkLocalIPv6", False)]),
    # reading the config as Cilium does
    "namespace": lambda: CiliumConfig(cilium_target("cilium", "c")).namespace,
    "value set, default, none": lambda: [_c(routing_mode="native").value("routing-mode"),
                                         _c().value("routing-mode"), _c().value("ipam"),
                                         _c().value("ipv4-native-routing-cidr")],
    "flags": lambda: {v: [_c(enable_ipv4_masquerade=v).flag("enable-ipv4-masquerade"),
                          _c(enable_bpf_masquerade=v).flag("enable-bpf-masquerade")]
                      for v in ("true", "0", "yes", "")},
    "flag of no key": lambda: _c().flag("enable-ipv4-nothing"),
    "networks": lambda: [str(_c(ipv4_native_routing_cidr=v).network("ipv4-native-routing-cidr"))
                         for v in ("10.42.1.2/16", " 10.42.0.0/16 ", "", "nonsense")],
    "overlay none": lambda: _c(routing_mode="native").overlay(None),
    "overlay": lambda: _c({"nonMasqueradeCIDRs": ["10.0.0.0/8"], "masqLinkLocal": True},
                          routing_mode="native", ipam="kubernetes").overlay(
        _c({"masqLinkLocal": False}, routing_mode="tunnel", enable_bpf_masquerade="true")),
    "overlay agent over none": lambda: _c().overlay(_c({"masqLinkLocal": True})),
    "overlay no agent over agent": lambda: _c({"masqLinkLocal": True}).overlay(_c(ipam="x")),
    "non-masq defaults v4": lambda: [f"{n} from {w}" for n, w in _c().non_masquerade_cidrs(4)],
    "non-masq defaults v6": lambda: [f"{n} from {w}" for n, w in _c().non_masquerade_cidrs(6)],
    "non-masq list": lambda: [f"{n} from {w}" for n, w in CiliumConfig(
        cilium_target("cilium"), ip_masq_agent={
            "nonMasqueradeCIDRs": ["10.1.0.0/16", "fd10::/64"]}).non_masquerade_cidrs(4)],
    "non-masq list v6": lambda: [f"{n} from {w}" for n, w in _c(
        {"nonMasqueradeCIDRs": ["10.1.0.0/16", "fd10::/64"]}).non_masquerade_cidrs(6)],
    "non-masq link local v4 on": lambda: [str(n) for n, _ in _c(
        {"masqLinkLocal": True}).non_masquerade_cidrs(4)],
    "non-masq link local v4 on, v6": lambda: [str(n) for n, _ in _c(
        {"masqLinkLocal": True}).non_masquerade_cidrs(6)],
    "non-masq link local v6 on": lambda: [str(n) for n, _ in _c(
        {"masqLinkLocalIPv6": True, "nonMasqueradeCIDRs": ["fd10::/64"]}
    ).non_masquerade_cidrs(6)],
    "non-masq link local v6 on, v4": lambda: [str(n) for n, _ in _c(
        {"masqLinkLocalIPv6": True}).non_masquerade_cidrs(4)],
    # met_by: the foreign config already holds each key, as Cilium reads it
    "met": lambda: {name: wanted.met_by(foreign) for name, (wanted, foreign) in {
        "other kind": (_c(), MET_ROUTE),
        "other target": (_c(), CiliumConfig(cilium_target("cilium"))),
        "nothing asked": (_c(), _c()),
        "bool spelled otherwise": (_c(enable_bpf_masquerade="false"),
                                   _c(enable_bpf_masquerade="0")),
        "bool other value": (_c(enable_bpf_masquerade="false"), _c(enable_bpf_masquerade="1")),
        "bool default": (_c(enable_ipv4_masquerade="true"), _c()),
        "bool unparsable theirs": (_c(enable_ipv4_masquerade="true"),
                                   _c(enable_ipv4_masquerade="yes")),
        "cidr with host bits": (_c(ipv4_native_routing_cidr="10.42.0.0/16"),
                                _c(ipv4_native_routing_cidr=" 10.42.7.1/16")),
        "cidr other": (_c(ipv4_native_routing_cidr="10.42.0.0/16"),
                       _c(ipv4_native_routing_cidr="10.42.0.0/17")),
        "cidr unset": (_c(ipv4_native_routing_cidr="10.42.0.0/16"), _c()),
        "cidr unparsable": (_c(ipv4_native_routing_cidr="10.42.0.0/16"),
                            _c(ipv4_native_routing_cidr="ten")),
        "text same": (_c(egress_masquerade_interfaces="eth0"),
                      _c(egress_masquerade_interfaces="eth0")),
        "text other": (_c(egress_masquerade_interfaces="eth0"),
                       _c(egress_masquerade_interfaces="eth1")),
        # The agent reads the value trimmed (ReadDirConfig): "eth0 " is eth0.
        "text padded": (_c(egress_masquerade_interfaces="eth0"),
                        _c(egress_masquerade_interfaces="eth0 ")),
        "choice default": (_c(tunnel_protocol="vxlan"), _c()),
        "choice other": (_c(tunnel_protocol="geneve"), _c()),
        "agent wanted, none there": (_c({"masqLinkLocal": True}), _c()),
        "agent key missing": (_c({"masqLinkLocal": True}), _c({"masqLinkLocalIPv6": True})),
        "agent bool same": (_c({"masqLinkLocal": True}), _c({"masqLinkLocal": True})),
        "agent bool other": (_c({"masqLinkLocal": True}), _c({"masqLinkLocal": False})),
        "agent cidrs as sets": (_c({"nonMasqueradeCIDRs": ["10.0.0.0/8", "10.0.0.0/8"]}),
                                _c({"nonMasqueradeCIDRs": ["10.1.0.0/8"]})),
        "agent cidrs with host bits": (_c({"nonMasqueradeCIDRs": ["10.1.2.3/8"]}),
                                       _c({"nonMasqueradeCIDRs": ["10.0.0.0/8"]})),
        "agent cidrs other": (_c({"nonMasqueradeCIDRs": ["10.0.0.0/8"]}),
                              _c({"nonMasqueradeCIDRs": ["10.0.0.0/9"]})),
        "no agent wanted": (_c(), _c({"masqLinkLocal": True})),
    }.items()},
    "conflicts": lambda: {name: [wanted.conflicts_with(foreign),
                                 wanted.conflict_reason(foreign)]
                          for name, (wanted, foreign) in {
        "link local over empty": (_c({"masqLinkLocal": True, "masqLinkLocalIPv6": False}),
                                  _c()),
        "with the list": (_c({"nonMasqueradeCIDRs": [], "masqLinkLocal": True}), _c()),
        "over a file": (_c({"masqLinkLocal": True}), _c({"nonMasqueradeCIDRs": []})),
        "no agent": (_c(routing_mode="native"), _c()),
        "other target": (_c({"masqLinkLocal": True}), CiliumConfig(cilium_target("cilium"))),
        "other kind": (_c({"masqLinkLocal": True}), MET_ROUTE),
    }.items()},
    # plan lines and JSON forms
    "describe none": _c,
    "describe ordered": lambda: _c(ipam="kubernetes", enable_ipv6="false",
                                   egress_masquerade_interfaces="eth0",
                                   enable_masquerade_to_route_source="true",
                                   routing_mode="native", tunnel_protocol="geneve",
                                   enable_ipv4_masquerade="false",
                                   ipv6_native_routing_cidr="fd00::/64"),
    "describe empty agent": lambda: _c({}),
    "describe agent": lambda: _c({"masqLinkLocalIPv6": True, "masqLinkLocal": False,
                                  "nonMasqueradeCIDRs": ["10.0.0.0/8", "fd00::/8"]}),
    "from dict": lambda: CiliumConfig.from_dict({"target": T}),
    "from dict all": lambda: CiliumConfig.from_dict({
        "target": T, "settings": {"ipam": "kubernetes"}, "ip_masq_agent": {}}),
    "clash key": lambda: [list(_c().clash_key), list(CiliumMasquerade(T).clash_key)],
    # what Cilium does
    "why defaults": lambda: [_why(_c(), "192.168.2.0/24"), _why(_c(), "fd00:2::/64", "eth0")],
    "why no ipv4": lambda: _why(_c(enable_ipv4="false"), "192.168.2.0/24"),
    "why no ipv6": lambda: _why(_c(enable_ipv6="0"), "fd00:2::/64"),
    "why ipv6 unparsable": lambda: _why(_c(enable_ipv6="no"), "fd00:2::/64"),
    "why masquerade off v4": lambda: _why(_c(enable_ipv4_masquerade="false"), "192.168.2.0/24"),
    "why masquerade off v6": lambda: _why(_c(enable_ipv6_masquerade="F"), "fd00:2::/64"),
    "why masquerade off v6 only": lambda: _why(_c(enable_ipv6_masquerade="F"), "10.0.0.0/8"),
    "why native inside": lambda: _why(_c(ipv4_native_routing_cidr="192.168.0.0/16"),
                                      "192.168.2.0/24"),
    "why native equal": lambda: _why(_c(ipv4_native_routing_cidr="192.168.2.0/24"),
                                     "192.168.2.0/24"),
    "why native partly": lambda: _why(_c(ipv4_native_routing_cidr="192.168.2.0/25"),
                                      "192.168.2.0/24"),
    "why native outside": lambda: _why(_c(ipv4_native_routing_cidr="192.168.3.0/24"),
                                       "192.168.2.0/24"),
    "why native v6": lambda: _why(_c(ipv6_native_routing_cidr="fd00::/16"), "fd00:2::/64"),
    "why native other family": lambda: _why(_c(ipv6_native_routing_cidr="fd00::/16"),
                                            "192.168.2.0/24"),
    "why agent default list": lambda: _why(_c(**_bpf()), "172.16.5.0/24"),
    "why agent partly": lambda: _why(_c(**_bpf()), "192.0.0.0/16"),
    "why agent link local": lambda: _why(_c(**_bpf()), "169.254.1.0/24"),
    "why agent v6 link local": lambda: _why(_c(**_bpf()), "fe80::/64"),
    "why agent v6 outside": lambda: _why(_c(**_bpf()), "fd00::/64"),
    "why agent public": lambda: _why(_c(**_bpf()), "8.8.8.0/24"),
    "why agent list": lambda: _why(_c({"nonMasqueradeCIDRs": ["8.0.0.0/7"]}, **_bpf()),
                                   "8.8.8.0/24", "eth0"),
    "why agent list with host bits": lambda: _why(_c({"nonMasqueradeCIDRs": ["8.8.8.1/7"]},
                                                     **_bpf()), "8.8.8.0/24"),
    "why agent without bpf": lambda: _why(_c(enable_ip_masq_agent="true"), "10.1.0.0/16"),
    "why bpf without agent": lambda: _why(_c(enable_bpf_masquerade="true"), "10.1.0.0/16"),
    "why interfaces miss": lambda: _why(_c(egress_masquerade_interfaces="eth0,bond+"),
                                        "192.168.2.0/24", "wg0"),
    "why interfaces prefix": lambda: [_why(_c(egress_masquerade_interfaces="eth0,bond+"),
                                           "192.168.2.0/24", d)
                                      for d in ("bond", "bond7", "eth0", "eth01", "eth", "bon")],
    "why interfaces no device": lambda: _why(_c(egress_masquerade_interfaces="eth0"),
                                             "192.168.2.0/24"),
    "why interfaces with bpf": lambda: _why(_c(egress_masquerade_interfaces="eth0",
                                               enable_bpf_masquerade="true"),
                                            "192.168.2.0/24", "wg0"),
    # the expectation: problems, the way out, and its own forms
    "expect fine": lambda: _expect(_c(), masquerade=[("192.168.2.0/24", "eth0")],
                                   exempt=[]),
    "expect masquerade off": lambda: _expect(_c(enable_ipv6_masquerade="false"),
                                             masquerade=[("fd00:2::/64", None)]),
    "expect native": lambda: _expect(_c(ipv4_native_routing_cidr="192.168.0.0/16"),
                                     masquerade=[("192.168.2.0/24", "eth0")]),
    "expect agent": lambda: _expect(_c(**_bpf()), masquerade=[("10.9.0.0/16", "")]),
    "expect interfaces": lambda: _expect(_c(egress_masquerade_interfaces="eth0"),
                                         masquerade=[("192.168.2.0/24", "wg0")]),
    "expect no ipv6": lambda: _expect(_c(enable_ipv6="false"),
                                      masquerade=[("fd00:2::/64", "eth0")]),
    "expect exempt with agent": lambda: _expect(_c(**_bpf()), exempt=["8.8.8.0/24"]),
    "expect exempt without agent": lambda: _expect(_c(), exempt=["8.8.8.0/24"]),
    "expect exempt, agent without bpf": lambda: _expect(_c(enable_ip_masq_agent="true"),
                                                        exempt=["8.8.8.0/24"]),
    "expect exempt, bpf without agent": lambda: _expect(_c(enable_bpf_masquerade="true"),
                                                        exempt=["8.8.8.0/24"]),
    "expect exempt met": lambda: _expect(_c(**_bpf()), exempt=["10.9.0.0/16"]),
    "expect wanted over": lambda: _expect(
        _c(enable_ipv4_masquerade="false"), masquerade=[("192.168.2.0/24", "eth0")],
        wanted=_c(enable_ipv4_masquerade="true")),
    "expect several": lambda: _expect(
        _c(enable_ipv4_masquerade="false", ipv6_native_routing_cidr="fd00::/8",
           cluster_pool_ipv4_cidr="10.0.0.0/8"),
        masquerade=[("192.168.2.0/24", "eth0"), ("fd00:2::/64", "eth0")],
        exempt=["8.8.8.0/24"], pod_cidrs=["10.42.0.0/16"]),
    "expect other target": lambda: [
        CiliumMasquerade(T, exempt=["8.8.8.0/24"]).conflicts_with(
            CiliumConfig(cilium_target("cilium"))),
        CiliumMasquerade(T, exempt=["8.8.8.0/24"]).conflicts_with(MET_ROUTE),
        CiliumMasquerade(T, exempt=["8.8.8.0/24"]).conflict_reason(MET_ROUTE)],
    "expectation wanted of other target": lambda: CiliumMasquerade(
        T, wanted=CiliumConfig(cilium_target("cilium"))),
    "expectation wanted not a config": lambda: CiliumMasquerade(
        T, wanted={"settings": {}}),  # type: ignore[arg-type]
    "expectation device not a string": lambda: CiliumMasquerade(
        T, masquerade=[("10.0.0.0/8", 7)]),  # type: ignore[list-item]
    "expectation exempt string": lambda: CiliumMasquerade(T, exempt="10.0.0.0/8"),
    "expectation pods string": lambda: CiliumMasquerade(T, pod_cidrs="10.0.0.0/8"),
    "expectation nothing": lambda: CiliumMasquerade(T),
    "expectation masquerade only": lambda: CiliumMasquerade(
        T, masquerade=[("10.1.0.0/16", None), ("fd00::/64", "eth0")]),
    "expectation exempt only": lambda: CiliumMasquerade(T, exempt=["10.1.0.0/16", "fd00::/64"]),
    "expectation both": lambda: CiliumMasquerade(
        T, masquerade=[("10.1.0.0/16", "eth0")], exempt=["10.2.0.0/16"],
        pod_cidrs=["10.42.0.0/16"], wanted=_c({"masqLinkLocal": True})),
    "expectation from dict": lambda: CiliumMasquerade.from_dict({"target": T}),
    "expectation from dict devices": lambda: CiliumMasquerade.from_dict(
        {"target": T, "masquerade": [["10.1.0.0/16", ""], ["10.2.0.0/16", "eth0"]]}),
    # the cluster pool
    "pool other ipam": lambda: pool_problems(_c(ipam="kubernetes",
                                                cluster_pool_ipv4_cidr="10.0.0.0/8"),
                                             [parse_network("10.42.0.0/16")]),
    "pool default ipam, no pool key": lambda: pool_problems(_c(),
                                                            [parse_network("10.42.0.0/16")]),
    "pool inside": lambda: pool_problems(_c(cluster_pool_ipv4_cidr="10.42.0.0/17"),
                                         [parse_network("10.42.0.0/16")]),
    "pool equal": lambda: pool_problems(_c(cluster_pool_ipv4_cidr="10.42.0.0/16"),
                                        [parse_network("10.42.0.0/16")]),
    "pool outside": lambda: pool_problems(
        _c(cluster_pool_ipv4_cidr="10.42.0.0/16,10.0.0.0/8 10.43.0.0/16 bad 10.42.1.1/24",
           cluster_pool_ipv6_cidr="fd00::/104 fd01::/104"),
        [parse_network("10.42.0.0/16"), parse_network("10.43.0.0/16"),
         parse_network("fd01::/64")]),
    "pool with host bits, after one unreadable": lambda: pool_problems(
        _c(cluster_pool_ipv4_cidr="bad 10.0.0.1/8"), [parse_network("10.42.0.0/16")]),
    "pool other family": lambda: pool_problems(_c(cluster_pool_ipv4_cidr="fd00::/104"),
                                               [parse_network("10.42.0.0/16")]),
    "pool family not asked": lambda: pool_problems(_c(cluster_pool_ipv6_cidr="fd00::/104"),
                                                   [parse_network("10.42.0.0/16")]),
}


def _bpf() -> dict[str, str]:
    return {k.replace("-", "_"): v for k, v in BPF.items()}


MET_ROUTE: NetObject = object_from_dict(
    {"type": "route", "destination": "10.0.0.0/8", "device": "eth0"})


def test_cilium_texts() -> None:
    check("cilium", CASES)


# Objects that differ in one thing each (and some that differ only in spelling).
VARIANTS = [
    _c(), CiliumConfig(cilium_target("cilium")), _c(routing_mode="native"),
    _c(routing_mode="tunnel"), _c(ipam="kubernetes"), _c({}), _c({"masqLinkLocal": True}),
    _c({"masqLinkLocal": False}), _c({"masqLinkLocalIPv6": True}),
    _c({"nonMasqueradeCIDRs": []}), _c({"nonMasqueradeCIDRs": ["10.0.0.0/8"]}),
    _c({"nonMasqueradeCIDRs": ["10.0.0.0/8"]}, routing_mode="native"),
    CiliumMasquerade(T), CiliumMasquerade(cilium_target("cilium")),
    CiliumMasquerade(T, masquerade=[("10.1.0.0/16", None)]),
    CiliumMasquerade(T, masquerade=[("10.1.0.0/16", "eth0")]),
    CiliumMasquerade(T, masquerade=[("10.1.0.0/17", "eth0")]),
    CiliumMasquerade(T, masquerade=[("10.1.0.0/16", "eth0"), ("10.2.0.0/16", "eth0")]),
    CiliumMasquerade(T, exempt=["10.1.0.0/16"]), CiliumMasquerade(T, exempt=["fd00::/64"]),
    CiliumMasquerade(T, pod_cidrs=["10.1.0.0/16"]),
    CiliumMasquerade(T, wanted=_c()), CiliumMasquerade(T, wanted=_c({})),
    CiliumMasquerade(T, wanted=_c(routing_mode="native")),
]


def test_objects_round_trip_and_equality_agrees_with_the_json_form() -> None:
    for obj in VARIANTS:
        assert object_from_dict(json.loads(json.dumps(obj.to_dict()))) == obj
        assert obj == obj.from_dict(obj.to_dict())
    for a in VARIANTS:
        for b in VARIANTS:
            assert (a == b) == (a.to_dict() == b.to_dict()), (a, b)
            assert (a != b) == (a.to_dict() != b.to_dict()), (a, b)
    assert len({hash(v) for v in VARIANTS}) == len(VARIANTS)
    assert _c(routing_mode="native", ipam="x") == CiliumConfig(
        T, settings=[("ipam", "x"), ("routing-mode", "native")])
    assert _c({"masqLinkLocal": True, "nonMasqueradeCIDRs": []}) == _c(
        {"nonMasqueradeCIDRs": [], "masqLinkLocal": True})


@pytest.mark.parametrize("value", ["yes", "", "tRUE"])
def test_an_unparsable_flag_is_false_whatever_the_agent_s_default(value: str) -> None:
    # viper's GetBool: a value Go's ParseBool refuses is false, not the key's default.
    off = _c(enable_ipv4_masquerade=value, enable_bpf_masquerade=value)
    assert off.flag("enable-ipv4-masquerade") is False
    assert off.flag("enable-bpf-masquerade") is False
    assert _c().flag("enable-ipv4-masquerade") is True  # unset: the default
