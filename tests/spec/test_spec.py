"""Spec loading, validation (every problem at once) and compile."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k3snet import (
    MasqueradeRule,
    NodeFacts,
    Route,
    Spec,
    SpecError,
    Sysctl,
    load_ip_masq_agent_config,
    load_spec,
    seed_spec,
)
from k3snet.spec import IP_MASQ_AGENT_DEFAULT_NON_MASQUERADE, held_destinations
from k3snet.spec import compile as compile_spec
from tests.examples import examples

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def problems_of(data: dict[str, object]) -> list[str]:
    with pytest.raises(SpecError) as info:
        Spec.from_dict(data)
    return [str(p) for p in info.value.problems]


def test_seed_spec_compiles_to_route_forwarding_forward_and_masquerade() -> None:
    lines = [o.describe() for o in compile_spec(seed_spec())]
    assert lines == [
        "sysctl net.ipv4.ip_forward = 1",
        "route 192.168.2.0/24 via 192.168.1.1 dev eth0 table main metric 0 proto k3snet",
        "forward accept 10.42.0.0/16 -> 192.168.2.0/24 oif eth0 (+ replies)",
        "masquerade 10.42.0.0/16 -> 192.168.2.0/24 oif eth0",
    ]


def test_example_seed_file_is_dual_stack() -> None:
    state = compile_spec(load_spec(EXAMPLES / "seed.yaml"))
    assert Sysctl("net.ipv6.conf.all.forwarding", 1) in state.owned
    assert MasqueradeRule("fd42:42::/56", destination="fd01:2::/64", out_interface="eth0") in (
        state.owned
    )


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    found = problems_of({
        "cluster": {"podCIDRs": ["10.42.0.1/16"], "serviceCIDRs": ["10.43.0.0/16"]},
        "destinations": [
            {"cidr": "10.43.5.0/24", "gateway": "fd00::1", "device": "averyveryverylongname"},
            {"cidr": "192.168.2.0/24", "device": "eth 0"},
            {"cidr": "192.168.2.0/24", "exclude": ["10.0.0.0/8"]},
            {"gateway": "192.168.1.1"},
        ],
        "masquerade": {"mode": "destinations", "colour": "blue"},
        "typo": 1,
    })
    expected_paths = [
        "typo:", "cluster.podCIDRs[0]: '10.42.0.1/16' has host bits set",
        "destinations[0].device:", "destinations[1].device:", "destinations[3].cidr: required",
        "masquerade.colour: unknown key", "destinations[2].cidr: duplicate destination",
        "destinations[2].exclude[0]: 10.0.0.0/8 is not inside",
    ]
    for expected in expected_paths:
        assert any(p.startswith(expected) for p in found), (expected, found)


def test_destination_overlapping_the_cluster_explains_why_it_fails() -> None:
    found = problems_of({"destinations": [{"cidr": "10.43.0.0/24", "gateway": "fd00::1"}]})
    assert any("overlaps the cluster service CIDR 10.43.0.0/16" in p and "never leaves" in p
               for p in found)
    assert any("is IPv6 but destination 10.43.0.0/24 is IPv4" in p for p in found)


def test_destination_of_a_family_without_pod_cidr_is_refused() -> None:
    found = problems_of({"destinations": [{"cidr": "fd01:2::/64", "device": "eth0"}]})
    assert any("no IPv6 pod CIDR" in p for p in found)


def test_facts_catch_missing_devices_and_unreachable_gateways() -> None:
    facts = NodeFacts(interfaces={"eth0": ["192.168.9.5/24"]}, hostname="node-1")
    with pytest.raises(SpecError) as info:
        compile_spec(Spec.from_dict({"destinations": [
            {"cidr": "192.168.2.0/24", "gateway": "192.168.1.1", "device": "eth0"},
            {"cidr": "192.168.3.0/24", "device": "ens3"},
        ]}), facts)
    text = str(info.value)
    assert "gateway 192.168.1.1 is not inside any connected or routed prefix of node-1" in text
    assert "no interface 'ens3' on node-1 (has: eth0)" in text


def test_an_unreachable_gateway_names_a_few_of_the_node_s_prefixes_of_its_family_once() -> None:
    # A router's 10 000 routes were all listed in one problem (200 KB, and the agent's
    # message, log line and Node annotation with it), connected prefixes twice.
    facts = NodeFacts(interfaces={"eth0": ["192.168.9.5/24", "fd00::5/64"]},
                      routes=[f"10.{i}.0.0/16" for i in range(20)] + ["192.168.9.0/24"])
    with pytest.raises(SpecError) as info:
        compile_spec(Spec.from_dict({"destinations": [
            {"cidr": "192.168.2.0/24", "gateway": "192.168.1.1", "device": "eth0"}]}), facts)
    text = str(info.value)
    assert "(192.168.9.0/24, 10.0.0.0/16, 10.1.0.0/16, 10.2.0.0/16, 10.3.0.0/16, " in text
    assert "10.6.0.0/16 and 13 more)" in text
    assert "fd00::" not in text
    assert text.count("192.168.9.0/24") == 1


def test_a_gateway_that_is_the_node_s_own_address_is_a_fact_problem_the_agent_holds() -> None:
    # The kernel takes an IPv4 route via the node's own address and ignores the gateway
    # (tests/netlink/test_own_address_gateway.py); IPv6 refuses it when applied.
    facts = NodeFacts(interfaces={"eth0": ["192.168.1.5/24", "fd00::5/64"]}, hostname="n1")
    spec = Spec.from_dict({"cluster": {"podCIDRs": ["10.42.0.0/16", "fd42::/56"]},
                           "destinations": [
                               {"cidr": "192.168.2.0/24", "gateway": "192.168.1.5"},
                               {"cidr": "192.168.3.0/24", "gateway": "192.168.1.1"},
                               {"cidr": "fd01:2::/64", "gateway": "fd00::5", "device": "eth0"}]})
    with pytest.raises(SpecError) as info:
        compile_spec(spec, facts)
    assert [(p.path, p.message.split(",")[0]) for p in info.value.problems] == [
        ("destinations[0].gateway", "gateway 192.168.1.5 is an address of n1 itself (on eth0)"),
        ("destinations[2].gateway", "gateway fd00::5 is an address of n1 itself (on eth0)")]
    assert held_destinations(spec, info.value) == {0, 2}
    held = compile_spec(spec, facts, hold=(0, 2)).owned
    assert Route("192.168.3.0/24", gateway="192.168.1.1") in held
    assert not any(isinstance(o, Route) and o.gateway is not None
                   and str(o.gateway).endswith("5") for o in held)


@pytest.mark.parametrize("gateway", [{"gateway": "fe80::1", "device": "eth1"},
                                     {"gateway": "fe80::1%eth1"}])
def test_a_link_local_gateway_is_the_node_s_own_only_on_the_route_s_device(
        gateway: dict[str, str]) -> None:
    # The kernel checks a link-local gateway against the route's device alone
    # (`via fe80::1 dev eth1` is taken with fe80::1 on eth0: the router on eth1's link
    # may use it too), a global one against every device.
    facts = NodeFacts(interfaces={"eth0": ["192.168.1.5/24", "fe80::1/64"],
                                  "eth1": ["192.168.9.5/24", "fe80::2/64"]}, hostname="n1")
    spec = Spec.from_dict({"cluster": {"podCIDRs": ["10.42.0.0/16", "fd42::/56"]},
                           "destinations": [{"cidr": "2001:db8::/64", **gateway}]})
    assert any(isinstance(o, Route) and o.gateway is not None and str(o.gateway) == "fe80::1"
               for o in compile_spec(spec, facts).owned)
    own = Spec.from_dict({"cluster": {"podCIDRs": ["10.42.0.0/16", "fd42::/56"]},
                          "destinations": [{"cidr": "2001:db8::/64", "gateway": "fe80::2",
                                            "device": "eth1"}]})
    with pytest.raises(SpecError) as info:
        compile_spec(own, facts)
    assert [p.message.split(",")[0] for p in info.value.problems] == [
        "gateway fe80::2 is an address of n1 itself (on eth1)"]


def test_a_gateway_in_a_routed_prefix_is_reachable() -> None:
    facts = NodeFacts(interfaces={"eth0": ["192.168.1.5/24"]}, routes=["172.16.0.0/12"])
    spec = Spec.from_dict({"destinations": [{"cidr": "192.168.2.0/24", "gateway": "172.16.0.1"}]})
    assert Route("192.168.2.0/24", gateway="172.16.0.1") in compile_spec(spec, facts).owned


def test_ip_masq_agent_semantics_masquerade_everything_but_the_exceptions() -> None:
    spec = Spec.from_yaml(
        "apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
        "cluster: {podCIDRs: [10.42.0.0/16, fd42::/56], serviceCIDRs: [10.43.0.0/16]}\n"
        "masquerade: {mode: all, nonMasqueradeCIDRs: [192.168.0.0/16], outInterface: eth0}\n"
    )
    rules = sorted(o for o in compile_spec(spec).owned if isinstance(o, MasqueradeRule))
    assert [r.describe() for r in rules] == [
        "masquerade 10.42.0.0/16 -> any except 10.42.0.0/15,169.254.0.0/16,192.168.0.0/16 oif eth0",
        "masquerade fd42::/56 -> any except fd42::/56,fe80::/10 oif eth0",
    ]


def test_ip_masq_agent_config_import_keeps_its_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("masqLinkLocal: true\nresyncInterval: 60s\n")
    config = load_ip_masq_agent_config(str(path))
    assert [str(c) for c in config.non_masquerade_cidrs] == list(
        IP_MASQ_AGENT_DEFAULT_NON_MASQUERADE
    )
    assert config.masq_link_local
    spec = Spec.from_dict({"masquerade": {"ipMasqAgentConfig": {"nonMasqueradeCIDRs": []}}})
    assert spec.masquerade.mode == "all"
    (rule,) = [o for o in compile_spec(spec).owned if isinstance(o, MasqueradeRule)]
    assert rule.describe() == "masquerade 10.42.0.0/16 -> any except 10.42.0.0/15,169.254.0.0/16"


def test_ip_masq_agent_config_problems_are_reported() -> None:
    with pytest.raises(SpecError, match=r"nonMasqueradeCIDRs\[0\]"):
        load_ip_masq_agent_config({"nonMasqueradeCIDRs": ["nope"], "masqLinkLocal": True})


def test_snat_address_replaces_masquerade() -> None:
    spec = Spec.from_dict({"destinations": [{"cidr": "192.168.2.0/24", "device": "eth0"}],
                           "masquerade": {"snatAddresses": ["192.168.1.5"]}})
    assert any(o.describe() == "snat 10.42.0.0/16 -> 192.168.2.0/24 oif eth0 to 192.168.1.5"
               for o in compile_spec(spec).owned)


def test_yaml_round_trip_and_bad_yaml(tmp_path: Path) -> None:
    spec = load_spec(EXAMPLES / "seed.yaml")
    assert Spec.from_dict(spec.to_dict()) == spec
    bad = tmp_path / "bad.yaml"
    bad.write_text("destinations: [\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")


def test_explicit_sysctl_wins_over_managed_forwarding() -> None:
    spec = Spec.from_dict({"destinations": [{"cidr": "192.168.2.0/24", "device": "eth0"}],
                           "sysctls": {"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.rp_filter": 2}})
    sysctls = sorted(o.describe() for o in compile_spec(spec).owned if isinstance(o, Sysctl))
    assert sysctls == ["sysctl net.ipv4.conf.all.rp_filter = 2", "sysctl net.ipv4.ip_forward = 1"]


def test_explicit_sysctl_under_the_other_name_of_ip_forward_wins_over_managed_forwarding(
) -> None:
    # net.ipv4.conf.all.forwarding is ip_forward under another name: with ip_forward = 1
    # added beside it, every apply wrote one of the two again, forwarding on and off.
    spec = Spec.from_dict({"destinations": [{"cidr": "192.168.2.0/24", "device": "eth0"}],
                           "sysctls": {"net.ipv4.conf.all.forwarding": 0}})
    sysctls = sorted(o.describe() for o in compile_spec(spec).owned if isinstance(o, Sysctl))
    assert sysctls == ["sysctl net.ipv4.conf.all.forwarding = 0"]


_GATEWAYS = ["192.168.1.1", "192.168.9.1", "172.16.0.1", "fd00::1", "fd09::1", "192.168.1.5",
             "fd00::5"]
_DEVICES = [None, "eth0", "eth1", "ens3"]


def _fact_problem_lines(destinations: list[dict[str, str]], facts: NodeFacts) -> list[str]:
    try:
        compile_spec(Spec.from_dict({"destinations": destinations,
                                     "cluster": {"podCIDRs": ["10.42.0.0/16", "fd42::/56"]}}),
                     facts)
    except SpecError as exc:
        return [f"{p.path}: {p.message}" for p in exc.problems]
    return []


@given(st.lists(st.tuples(st.sampled_from(_GATEWAYS), st.sampled_from(_DEVICES)),
                min_size=1, max_size=12))
@settings(max_examples=examples(60), deadline=None)
def test_destinations_sharing_a_gateway_each_get_the_problems_they_get_alone(
        pairs: list[tuple[str, str | None]]) -> None:
    # The gateway verdict is made once per distinct gateway and device: every destination
    # still gets its own problems, at its own path.
    facts = NodeFacts(interfaces={"eth0": ["192.168.1.5/24", "fd00::5/64"],
                                  "eth1": ["192.168.9.5/24"]},
                      routes=["172.16.0.0/12"], hostname="node-1")
    destinations = []
    for n, (gateway, device) in enumerate(pairs):
        entry = {"cidr": f"100.64.{n}.0/24" if "." in gateway else f"fd64:{n}::/64",
                 "gateway": gateway}
        if device is not None:
            entry["device"] = device
        destinations.append(entry)
    expected = []
    for n, entry in enumerate(destinations):
        expected += [line.replace("destinations[0]", f"destinations[{n}]", 1)
                     for line in _fact_problem_lines([entry], facts)]
    assert _fact_problem_lines(destinations, facts) == expected


@pytest.mark.parametrize(("where", "document"), [
    ("masquerade.outInterface", {"masquerade": {"outInterface": "all"}}),
    ("forward.inInterface", {"forward": {"inInterface": "default"}}),
    ("destinations[0].device", {"destinations": [{"cidr": "192.168.2.0/24",
                                                  "device": "all"}]}),
])
def test_all_and_default_are_refused_as_interface_names(where: str,
                                                        document: dict[str, object]) -> None:
    """The kernel refuses ``all`` and ``default`` as interface names (they name
    /proc/sys/net/ipv4/conf/ entries): written to mean "every interface", a rule through
    one matched none. ``All`` is a name like any other."""
    base = {"apiVersion": "k3snet.io/v1alpha1", "kind": "EgressSpec",
            "destinations": [{"cidr": "192.168.2.0/24"}]}
    with pytest.raises(SpecError, match=rf"{re.escape(where)}: no interface can be named"):
        Spec.from_dict({**base, **document})
    assert Spec.from_dict({**base, "masquerade": {"outInterface": "All"}})
