"""Cilium's masquerade settings as values, and what Cilium does with them (no cluster)."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from k3snet.errors import ModelError
from k3snet.model.cidr import parse_network
from k3snet.model.cilium import (
    CILIUM_DEFAULT_TARGET,
    CiliumConfig,
    CiliumMasquerade,
    CiliumNodeOverride,
    parse_go_bool,
    setting_problem,
    startup_problems,
    why_not_masqueraded,
)

TARGET = CILIUM_DEFAULT_TARGET
DEST = parse_network("192.168.2.0/24")


def _config(ip_masq_agent: dict[str, object] | None = None, /, **settings: str) -> CiliumConfig:
    return CiliumConfig(TARGET, settings={k.replace("_", "-"): v for k, v in settings.items()},
                        ip_masq_agent=ip_masq_agent)


def test_cilium_defaults_masquerade_everything_off_cluster() -> None:
    assert why_not_masqueraded(_config(), DEST) is None
    assert why_not_masqueraded(_config(), DEST, "eth0") is None


@pytest.mark.parametrize("value", ["false", "False", "0", "f", "FALSE"])
def test_masquerading_off_in_any_go_spelling(value: str) -> None:
    reason = why_not_masqueraded(_config(enable_ipv4_masquerade=value), DEST)
    assert reason is not None
    assert reason.startswith("masquerading is off in Cilium")


def test_an_unparsable_flag_is_off_as_cilium_s_agent_reads_it() -> None:
    # viper's GetBool reads what Go's ParseBool refuses as false, not as the default:
    # masquerading is off, so k3snet must not count on Cilium's.
    assert parse_go_bool("yes") is None
    reason = why_not_masqueraded(_config(enable_ipv4_masquerade="yes"), DEST)
    assert reason is not None
    assert reason.startswith("masquerading is off in Cilium")


def test_a_flag_is_read_trimmed_as_cilium_s_agent_reads_its_config_files() -> None:
    assert why_not_masqueraded(_config(enable_ipv4_masquerade=" true\n"), DEST) is None
    assert why_not_masqueraded(_config(enable_ipv4_masquerade=" false "), DEST) is not None


def test_native_routing_cidr_inside_and_partly_inside() -> None:
    inside = why_not_masqueraded(_config(ipv4_native_routing_cidr="192.168.0.0/16"), DEST)
    assert inside is not None
    assert "is inside Cilium's ipv4-native-routing-cidr 192.168.0.0/16" in inside
    partly = why_not_masqueraded(_config(ipv4_native_routing_cidr="192.168.2.128/25"), DEST)
    assert partly is not None
    assert "partly inside" in partly
    # Cilium masks host bits of the CIDR it reads.
    assert why_not_masqueraded(_config(ipv4_native_routing_cidr="192.168.9.9/16"), DEST)
    assert why_not_masqueraded(_config(ipv4_native_routing_cidr="10.42.0.0/16"), DEST) is None


def test_ip_masq_agent_applies_only_with_bpf_masquerade() -> None:
    iptables = _config(enable_ip_masq_agent="true")
    assert why_not_masqueraded(iptables, DEST) is None
    bpf = _config(enable_ip_masq_agent="true", enable_bpf_masquerade="true")
    reason = why_not_masqueraded(bpf, DEST)
    assert reason is not None
    assert "192.168.0.0/16, from Cilium's default list" in reason


def test_an_unmounted_list_is_not_cilium_s_which_uses_its_defaults() -> None:
    # The ConfigMap's list (and k3snet's laid over it) is not what Cilium reads when the
    # DaemonSet does not mount it: its default list, link-local as without the file.
    bpf = {"enable_ip_masq_agent": "true", "enable_bpf_masquerade": "true"}
    unmounted = attrs.evolve(_config({"nonMasqueradeCIDRs": ["10.0.0.0/8"],
                                      "masqLinkLocal": True}, **bpf),
                             ip_masq_agent_unmounted="no volume")
    wanted = CiliumConfig(TARGET, ip_masq_agent={"nonMasqueradeCIDRs": ["10.0.0.0/8"]})
    for config in (unmounted, unmounted.overlay(wanted), *(v for _, v in unmounted.on_nodes())):
        reason = why_not_masqueraded(config, DEST)
        assert reason is not None
        assert "(the ip-masq-agent ConfigMap is not mounted: no volume)" in reason
        assert why_not_masqueraded(config, parse_network("169.254.10.0/24")) is not None
    # Without the ip-masq-agent running, the mount does not matter.
    assert why_not_masqueraded(attrs.evolve(unmounted, settings={}), DEST) is None
    assert CiliumConfig.from_dict(unmounted.to_dict()) == unmounted
    assert unmounted != attrs.evolve(unmounted, ip_masq_agent_unmounted=None)
    assert "ip_masq_agent_unmounted" not in _config().to_dict()  # earlier documents' shape
    with pytest.raises(ModelError):
        CiliumConfig(TARGET, ip_masq_agent_unmounted="")
    expectation = CiliumMasquerade(TARGET, masquerade=[(DEST, None)], wanted=wanted)
    problems = expectation.problems(unmounted)
    assert problems[0].startswith("k3snet writes nonMasqueradeCIDRs into the ip-masq-agent "
                                  "ConfigMap in kube-system, which Cilium's agents do not read")
    assert "Helm ipMasqAgent.enabled=true" in problems[1]


def test_an_explicit_list_replaces_the_defaults_and_link_local_is_added() -> None:
    bpf = {"enable_ip_masq_agent": "true", "enable_bpf_masquerade": "true"}
    listed = _config({"nonMasqueradeCIDRs": ["10.0.0.0/8"]}, **bpf)
    assert why_not_masqueraded(listed, DEST) is None
    link_local = parse_network("169.254.10.0/24")
    reason = why_not_masqueraded(listed, link_local)
    assert reason is not None
    assert "masqLinkLocal is not true" in reason
    masq = _config({"nonMasqueradeCIDRs": [], "masqLinkLocal": True}, **bpf)
    assert why_not_masqueraded(masq, link_local) is None
    # A file with only masqLinkLocal has no CIDRs at all (not the defaults).
    assert why_not_masqueraded(_config({"masqLinkLocal": True}, **bpf), DEST) is None


def test_ipv6_needs_enable_ipv6() -> None:
    v6 = parse_network("fd00:2::/64")
    reason = why_not_masqueraded(_config(enable_ipv6="false"), v6)  # as Helm writes it
    assert reason is not None
    assert "without IPv6" in reason
    assert why_not_masqueraded(_config(enable_ipv6="true"), v6) is None
    assert why_not_masqueraded(_config(), v6) is None  # the agent's default: on


def test_egress_masquerade_interfaces_match_names_and_prefixes() -> None:
    cfg = _config(egress_masquerade_interfaces="eth+ bond0")
    assert why_not_masqueraded(cfg, DEST, "eth1") is None
    assert why_not_masqueraded(cfg, DEST, "bond0") is None
    assert why_not_masqueraded(cfg, DEST, "wg0") is not None
    # eBPF masquerading ignores the key (it uses the devices it is attached to).
    bpf = _config(egress_masquerade_interfaces="eth0", enable_bpf_masquerade="true")
    assert why_not_masqueraded(bpf, DEST, "wg0") is None


def test_met_by_compares_as_cilium_reads() -> None:
    wanted = _config(enable_bpf_masquerade="true", ipv4_native_routing_cidr="10.42.0.0/16")
    assert wanted.met_by(_config(enable_bpf_masquerade="True",
                                 ipv4_native_routing_cidr="10.42.0.0/16"))
    assert not wanted.met_by(_config(enable_bpf_masquerade="true"))
    assert _config(routing_mode="tunnel").met_by(_config())  # the agent's default
    agent = _config({"nonMasqueradeCIDRs": ["10.0.0.0/8", "172.16.0.0/12"]})
    assert agent.met_by(_config({"nonMasqueradeCIDRs": ["172.16.0.0/12", "10.0.0.0/8"],
                                 "masqLinkLocal": False}))
    assert not agent.met_by(_config())


def test_values_are_checked() -> None:
    assert setting_problem("routing-mode", "Native") is not None
    assert setting_problem("enable-bpf-masquerade", "yes") is not None
    assert setting_problem("ipv4-native-routing-cidr", "fd00::/64") is not None
    assert setting_problem("ipv4-native-routing-cidr", "10.42.0.1/16") is not None
    assert setting_problem("enable-ipv4", "true") is not None  # read, never written
    assert setting_problem("tunnel-protocol", "geneve") is None
    with pytest.raises(ModelError, match="not one k3snet models"):
        CiliumConfig(TARGET, settings={"debug": "true"})
    with pytest.raises(ModelError, match="not one Cilium reads"):
        CiliumConfig(TARGET, ip_masq_agent={"resyncInterval": "60s"})
    with pytest.raises(ModelError, match="must be true or false"):
        CiliumConfig(TARGET, ip_masq_agent={"masqLinkLocal": "true"})
    with pytest.raises(ModelError, match="configmap:NAMESPACE/NAME"):
        CiliumConfig("kube-system/cilium-config")


def test_the_expectation_lays_the_wanted_keys_over_the_cluster() -> None:
    cluster = _config(ipv4_native_routing_cidr="192.168.0.0/16")
    alone = CiliumMasquerade(TARGET, masquerade=[(DEST, "eth0")])
    assert alone.conflicts_with(cluster)
    fixed = CiliumMasquerade(TARGET, masquerade=[(DEST, "eth0")],
                             wanted=_config(ipv4_native_routing_cidr="10.42.0.0/16"))
    assert not fixed.conflicts_with(cluster)
    assert alone.describe() == (f"cilium {TARGET} expects masquerade to 192.168.2.0/24 via eth0")


def test_describe() -> None:
    cfg = _config({"nonMasqueradeCIDRs": ["10.0.0.0/8"], "masqLinkLocal": True},
                  enable_bpf_masquerade="true", routing_mode="native")
    assert cfg.describe() == (
        f"cilium {TARGET} routing-mode=native enable-bpf-masquerade=true "
        'ip-masq-agent.nonMasqueradeCIDRs=["10.0.0.0/8"] ip-masq-agent.masqLinkLocal=true')
    assert CiliumConfig(TARGET).describe() == f"cilium {TARGET} (no keys)"


@pytest.mark.parametrize(("key", "value", "message"), [
    # Go's net.ParseCIDR (through Cilium's cidr.MustParseCIDR) panics on each of these.
    ("ipv4-native-routing-cidr", "garbage", "panics on it at start"),
    ("ipv4-native-routing-cidr", "10.42.0.0", "panics on it at start"),  # ipaddress: a /32
    ("ipv4-native-routing-cidr", "10.42.0.0/255.255.0.0", "panics on it at start"),
    ("ipv4-native-routing-cidr", "10.0.0.0/8,10.1.0.0/16", "panics on it at start"),
    ("ipv6-native-routing-cidr", "fd00::/129", "panics on it at start"),
    # "ipv4-native-routing-cidr must be an IPv4 CIDR" (log.Fatalf).
    ("ipv4-native-routing-cidr", "fd00::/64", "is not an IPv4 CIDR"),
    ("ipv6-native-routing-cidr", "10.0.0.0/8", "is not an IPv6 CIDR"),
])
def test_a_native_routing_cidr_the_agent_cannot_parse_keeps_it_from_starting(
    key: str, value: str, message: str
) -> None:
    # In tunnel mode too: the agent parses the key whenever it is set.
    config = _config(**{key.replace("-", "_"): value})
    (problem,) = startup_problems(config)
    assert problem.startswith(f"{key}: ")
    assert message in problem
    assert config.network(key) is None  # never judged as if it were a CIDR
    native = _config(routing_mode="native", **{key.replace("-", "_"): value})
    assert not any("needs" in p for p in startup_problems(native) if p.startswith(key[:4]))


def test_a_native_routing_cidr_cilium_reads_is_no_problem() -> None:
    assert startup_problems(_config(ipv4_native_routing_cidr=" 10.42.0.0/16\n")) == []
    assert startup_problems(_config(ipv4_native_routing_cidr="10.42.9.9/16")) == []  # masked
    assert _config(ipv4_native_routing_cidr="10.42.9.9/16").network(
        "ipv4-native-routing-cidr") == parse_network("10.42.0.0/16")


def test_an_expectation_under_an_agent_that_cannot_start_is_a_conflict() -> None:
    # Read as unset, the destination was "masqueraded as Cilium's defaults say"; the agent
    # panics instead, and pods on every node have no network.
    foreign = _config(ipv4_native_routing_cidr="192.168.0.0")
    want = CiliumMasquerade(TARGET, masquerade=[(DEST, None)])
    assert want.conflicts_with(foreign)
    reason = want.conflict_reason(foreign)
    assert reason is not None
    assert "panics on it at start" in reason
    assert "the Cilium agent does not run with this config" in reason
    # What k3snet is about to set fixes it: judged with it laid over.
    fixed = CiliumMasquerade(TARGET, masquerade=[(DEST, None)], wanted=CiliumConfig(
        TARGET, settings={"ipv4-native-routing-cidr": "10.42.0.0/16"}))
    assert not fixed.conflicts_with(foreign)
    # An expectation of nothing is met whatever the agent does.
    assert not CiliumMasquerade(TARGET).conflicts_with(foreign)


def test_an_exemption_through_a_device_round_trips_and_is_judged_with_it() -> None:
    want = CiliumMasquerade(TARGET, exempt=["10.9.0.0/16"], exempt_via=[(DEST, "eth1")])
    assert CiliumMasquerade.from_dict(want.to_dict()) == want
    assert want.describe().endswith("no masquerade to 10.9.0.0/16, 192.168.2.0/24 via eth1")
    assert "exempt_via" not in CiliumMasquerade(TARGET, exempt=[DEST]).to_dict()
    only_eth0 = _config(egress_masquerade_interfaces="eth0")
    assert [p for p in want.problems(only_eth0) if "192.168.2.0/24" in p] == []
    via_eth0 = CiliumMasquerade(TARGET, exempt_via=[(DEST, "eth0")])
    (problem,) = via_eth0.problems(only_eth0)
    assert "traffic to 192.168.2.0/24, which the spec exempts" in problem


def test_on_nodes_lays_the_node_configs_of_each_node_group_together() -> None:
    edge = CiliumNodeOverride("a-edge", "zone=edge", {"routing-mode": "native"})
    cidr = CiliumNodeOverride("b-cidr", "zone in (edge,dmz)",
                              {"ipv4-native-routing-cidr": "10.42.0.0/16"})
    config = CiliumConfig("configmap:kube-system/cilium-config",
                          settings={"routing-mode": "tunnel"}, node_overrides=[cidr, edge],
                          node_groups=[["b-cidr", "a-edge"], [], ["b-cidr"], []])
    assert config.node_groups == ((), ("b-cidr",), ("a-edge", "b-cidr"))
    views = config.on_nodes()
    assert [[o.name for o in laid] for laid, _ in views] == [[], ["b-cidr"], ["a-edge", "b-cidr"]]
    assert views[-1][1].value("routing-mode") == "native"
    assert views[-1][1].value("ipv4-native-routing-cidr") == "10.42.0.0/16"
    # Unknown (None), each selective one is judged alone, after the nodes none selects.
    alone = attrs.evolve(config, node_groups=None).on_nodes()
    assert [[o.name for o in laid] for laid, _ in alone] == [[], ["a-edge"], ["b-cidr"]]
    assert config != attrs.evolve(config, node_groups=None)
    with pytest.raises(ModelError, match="not among the node_overrides"):
        attrs.evolve(config, node_groups=[["c-other"]])


@pytest.mark.parametrize("groups", [5, [1], [None], [["a"], 2], "ab", [b"ab"], [[["a"]]]])
def test_node_groups_that_are_no_lists_of_names_are_a_model_error(groups: Any) -> None:
    """A number where a group belongs was a TypeError ("'int' object is not iterable")."""
    with pytest.raises(ModelError, match="node_groups must be lists of CiliumNodeConfig names"):
        CiliumConfig("configmap:kube-system/cilium-config", node_groups=groups)


def test_node_groups_giving_one_config_are_judged_once_and_named_by_the_fewest() -> None:
    # Nodes labelled every which way: 2**8 sets of eight CiliumNodeConfigs, two configs
    # (the masquerade interface eth0 or eth1). Each set was judged and named on its own:
    # a conflict text for each set and destination, and minutes of the leader's pass.
    overrides = [CiliumNodeOverride(f"o{i}", f"k{i}=v",
                                    {"egress-masquerade-interfaces": f"eth{i % 2}"})
                 for i in range(8)]
    groups = [[f"o{i}" for i in range(8) if mask >> i & 1] for mask in range(2 ** 8)]
    config = CiliumConfig(TARGET, node_overrides=overrides, node_groups=groups)
    want = CiliumMasquerade(TARGET, masquerade=[(f"192.168.{i}.0/24", "eth0")
                                                for i in range(3)])
    found = want.problems(config)
    assert len(found) == 3  # one config masquerades through eth1 only
    named = ("on the nodes of CiliumNodeConfig o1 (nodes k1=v): "
             "egress-masquerade-interfaces=eth1, and those of ")
    assert all(text.startswith(named) for text in found)


def test_enable_ip_masq_agent_without_a_directory_for_its_file_is_a_startup_problem() -> None:
    # Cilium's ip-masq-agent watches the directory of its file (fsnotify): with nothing
    # mounted at /etc/config, which Cilium's image lacks, it fails and the agent exits.
    bpf = {"enable_ipv4_masquerade": "true", "enable_ipv4": "true",
           "enable_bpf_masquerade": "true", "enable_ip_masq_agent": "true"}
    none = attrs.evolve(_config(**bpf), ip_masq_agent_unmounted="no volume",
                        ip_masq_agent_no_directory=True)
    (problem,) = startup_problems(none)
    assert problem.startswith("enable-ip-masq-agent: true where the cilium-agent container "
                              "has no /etc/config (nothing mounted there: no volume)")
    assert "Helm ipMasqAgent.enabled=true" in problem
    # A directory without the file (something else mounted there): the default list.
    assert startup_problems(attrs.evolve(none, ip_masq_agent_no_directory=False)) == []
    assert startup_problems(attrs.evolve(none, settings={**none.settings.to_dict(),
                                                         "enable-ip-masq-agent": "false"})) == []
    for config in (none.overlay(CiliumConfig(TARGET)), *(v for _, v in none.on_nodes())):
        assert config.ip_masq_agent_no_directory
    assert CiliumConfig.from_dict(none.to_dict()) == none
    assert none != attrs.evolve(none, ip_masq_agent_no_directory=False)
    older = {k: v for k, v in none.to_dict().items() if k != "ip_masq_agent_no_directory"}
    assert not CiliumConfig.from_dict(older).ip_masq_agent_no_directory
    assert "ip_masq_agent_no_directory" not in _config().to_dict()  # earlier documents' shape
    with pytest.raises(ModelError, match="without ip_masq_agent_unmounted"):
        CiliumConfig(TARGET, ip_masq_agent_no_directory=True)
    with pytest.raises(ModelError, match="must be a bool"):
        CiliumConfig(TARGET, ip_masq_agent_unmounted="x",
                     ip_masq_agent_no_directory="yes")  # type: ignore[arg-type]
