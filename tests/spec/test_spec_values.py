"""The spec's values built in code: converters, defaults and the small helpers the compiler uses."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from k3snet import ModelError
from k3snet.errors import BackendNotFoundError, BackendUnavailableError, SpecError
from k3snet.model.cidr import Network, aggregate, parse_address, parse_network
from k3snet.spec import (
    CalicoSettings,
    CiliumSettings,
    Cluster,
    CniSettings,
    Destination,
    DnsZone,
    EgressPolicy,
    FlannelSettings,
    ForwardPolicy,
    MasqueradePolicy,
    NodeFacts,
    Spec,
    seed_spec,
)
from k3snet.spec.backends import backend_option_problems, spec_backend_options
from k3snet.spec.validate import _cover


@pytest.mark.parametrize(("build", "message"), [
    (lambda: Spec(backends="netlink"), "expected a list of names, got the string 'netlink'"),
    (lambda: Cluster(pod_cidrs="10.42.0.0/16"),
     "expected a list of CIDRs, got the string '10.42.0.0/16'"),
    (lambda: Destination("10.0.0.0/8", exclude="10.0.0.0/9"),
     "expected a list of CIDRs, got the string '10.0.0.0/9'"),
    (lambda: MasqueradePolicy(snat_addresses="192.168.1.5"),
     "expected a list of addresses, got the string '192.168.1.5'"),
    (lambda: DnsZone("corp.example", resolvers="192.168.1.53"),
     "expected a list of addresses, got the string '192.168.1.53'"),
    (lambda: CiliumSettings(non_masquerade_cidrs="10.0.0.0/8"),
     "expected a list of CIDRs, got the string '10.0.0.0/8'"),
    (lambda: ForwardPolicy(in_interface="a" * 16),
     "interface name 'aaaaaaaaaaaaaaaa' is 16 bytes; the kernel allows at most 15"),
])
def test_converters_refuse_a_string_for_a_list(build: object, message: str) -> None:
    with pytest.raises(ModelError) as info:
        build()  # type: ignore[operator]
    assert str(info.value) == message


def test_converters_take_strings_and_values() -> None:
    dest = Destination("192.168.2.0/24", gateway="192.168.1.1", device="eth0",
                       exclude=["192.168.2.8/29"])
    assert dest.cidr == parse_network("192.168.2.0/24")
    assert dest.gateway == parse_address("192.168.1.1")
    assert dest.exclude == (parse_network("192.168.2.8/29"),)
    assert (dest.family, dest.routed) == (4, True)
    assert Destination("fd01::/64", device="eth0").routed
    assert Destination("fd01::/64", gateway="fd00::1").family == 6
    assert not Destination("fd01::/64").routed
    assert Destination("10.0.0.0/8") == Destination(parse_network("10.0.0.0/8"), gateway=None,
                                                    device=None)
    policy = MasqueradePolicy(snat_addresses=["fd00::5", parse_address("192.168.1.5")],
                              out_interface="eth0")
    assert policy.snat_address(4) == parse_address("192.168.1.5")
    assert policy.snat_address(6) == parse_address("fd00::5")
    assert MasqueradePolicy().snat_address(4) is None
    assert CiliumSettings(ipv4_native_routing_cidr="10.42.0.0/16",
                          non_masquerade_cidrs=["10.0.0.0/8"]).non_masquerade_cidrs == (
        parse_network("10.0.0.0/8"),)
    assert CiliumSettings().ipv6_native_routing_cidr is None
    assert CiliumSettings().non_masquerade_cidrs is None
    assert CiliumSettings(non_masquerade_cidrs=[]).non_masquerade_cidrs == ()


def test_the_cluster_gives_its_cidrs_by_family() -> None:
    cluster = Cluster(pod_cidrs=["10.42.0.0/16", "fd42::/56", "10.44.0.0/16"],
                      service_cidrs=["fd43::/112", "10.43.0.0/16"])
    assert [str(n) for n in cluster.pods(4)] == ["10.42.0.0/16", "10.44.0.0/16"]
    assert [str(n) for n in cluster.pods(6)] == ["fd42::/56"]
    assert [str(n) for n in cluster.own(4)] == ["10.42.0.0/16", "10.44.0.0/16", "10.43.0.0/16"]
    assert [str(n) for n in cluster.own(6)] == ["fd42::/56", "fd43::/112"]
    assert [str(n) for n in Cluster().pod_cidrs] == ["10.42.0.0/16"]
    assert [str(n) for n in Cluster().service_cidrs] == ["10.43.0.0/16"]


def test_labels_and_options_are_sorted_pairs_whatever_their_form() -> None:
    policy = EgressPolicy(pod_selector={"tier": "web", "app": "shop"})
    assert policy.pod_selector == (("app", "shop"), ("tier", "web"))
    assert EgressPolicy(pod_selector=[("tier", "web"), ("app", "shop")]) == policy
    assert EgressPolicy(pod_selector={1: "x"}).pod_selector == (  # type: ignore[arg-type]
        ("1", "x"),)
    flannel = FlannelSettings(backend_options={"VNI": 4, "Port": 1})
    assert flannel.backend_options == (("Port", 1), ("VNI", 4))
    assert FlannelSettings(backend_options=[("VNI", 4), ("Port", 1)]) == flannel
    spec = Spec(backend_options={"nftables": {"table": "t", "family": "split"}, "netlink": {},
                                 "iptables": [("wait", 5)]})  # type: ignore[arg-type]
    assert spec.backend_options == (("iptables", (("wait", 5),)),
                                    ("nftables", (("family", "split"), ("table", "t"))))
    assert Spec(backend_options=[("nftables", {"family": "split", "table": "t"}),
                                 ("iptables", {"wait": 5})]) == spec
    assert spec_backend_options(spec, "nftables") == {"family": "split", "table": "t"}
    assert spec_backend_options(spec, "netlink") == {}


def test_defaults() -> None:
    spec = Spec()
    assert (spec.masquerade.mode, spec.forward.accept, spec.manage_forwarding) == (
        "destinations", True, True)
    assert (spec.egress_policy.restrict, spec.egress_policy.allow_dns,
            spec.egress_policy.namespace) == (False, True, "default")
    assert (spec.agent.image, spec.agent.namespace, spec.agent.interval_seconds) == (
        "ghcr.io/k3snet/k3snet:0.1.0", "kube-system", 30)
    assert spec.connectivity_test is None
    assert CalicoSettings() == CalicoSettings("Never", "Never", None, "all()", False)
    dest = Destination("192.168.2.0/24")
    assert (dest.table, dest.metric, dest.masquerade, dest.forward) == (254, None, True, True)
    assert seed_spec() == Spec(destinations=[
        Destination("192.168.2.0/24", gateway="192.168.1.1", device="eth0")])


@pytest.mark.parametrize(("cni", "allowed"), [
    (CniSettings(), False),
    (CniSettings(allow_disruptive=False), False),
    (CniSettings(allow_disruptive=True), True),
    (CniSettings(calico=CalicoSettings()), False),
    (CniSettings(calico=CalicoSettings(allow_disruptive=True)), True),
    (CniSettings(allow_disruptive=False, calico=CalicoSettings(allow_disruptive=True)), True),
    (CniSettings(allow_disruptive=True, calico=CalicoSettings()), True),
])
def test_disruptive_changes_are_allowed_by_either_spelling(cni: CniSettings,
                                                           allowed: bool) -> None:
    assert cni.disruptive_allowed is allowed


@pytest.mark.parametrize(("version", "tag"), [
    ("0.2.0", "0.2.0"), ("0.3.0.dev4", "0.3.0"), ("1.0rc1", "1.0"), ("1.4.2.post1", "1.4.2")])
def test_the_default_agent_image_is_the_release_of_the_running_k3snet(
        version: str, tag: str) -> None:
    # A constant 0.1.0 survived a version bump: the DaemonSet of a newer release would
    # run an older agent, without the flags the newer manifests pass it.
    code = ("import k3snet._version as v; v.__version__ = %r; "
            "from k3snet.spec.model import AgentSettings; print(AgentSettings().image)")
    done = subprocess.run([sys.executable, "-c", code % version], capture_output=True,
                          text=True, check=True, timeout=60)
    assert done.stdout.strip() == f"ghcr.io/k3snet/k3snet:{tag}"


def test_backend_options_are_judged_against_what_each_backend_declares() -> None:
    declared = {"nftables": {"family": 1, "table": 1}, "anything": {}}

    def lookup(name: str) -> dict[str, int]:
        if name == "missing":
            raise BackendUnavailableError(f"{name} needs a library")
        if name not in declared:
            raise BackendNotFoundError(f"no backend {name!r}")
        return declared[name]

    options: dict[str, dict[str, object]] = {
        "nftables": {"family": "split", "tabel": "x", "zone": 1}, "anything": {"x": 1},
        "missing": {"y": 2}, "bogus": {"z": 3}}
    spec = Spec(backends=["nftables", "anything", "missing"], backend_options=options)
    assert [str(p) for p in backend_option_problems(spec, lookup)] == [
        "backends.nftables.tabel: unknown option; known: family, table",
        "backends.nftables.zone: unknown option; known: family, table",
        "backends.bogus: no backend 'bogus'"]
    assert [str(p) for p in backend_option_problems(spec, lookup, ["bogus", "nftables"])] == [
        "backends.bogus: no backend 'bogus'",
        "backends.nftables.tabel: unknown option; known: family, table",
        "backends.nftables.zone: unknown option; known: family, table"]
    assert backend_option_problems(spec, lookup, []) == []


def test_node_facts_read_interfaces_and_routes() -> None:
    facts = NodeFacts(interfaces={"eth0": ["192.168.1.5/24", "fd00::5/64"],
                                  "eth1": (ipaddress.ip_interface("10.1.2.3/8"),)},
                      routes=["172.16.0.0/12"], hostname="n")
    assert [str(n) for n in facts.connected()] == ["192.168.1.0/24", "fd00::/64", "10.0.0.0/8"]
    assert [facts.reaches(parse_address(a)) for a in (
        "192.168.1.1", "fd00::1", "10.200.0.1", "172.31.255.255", "172.32.0.0", "192.168.2.1")
    ] == [True, True, True, True, False, False]
    assert NodeFacts().connected() == ()
    assert not NodeFacts().reaches(parse_address("10.0.0.1"))
    for keywords, message in [
        ({"routes": "10.0.0.0/8"}, "expected a list of CIDRs, got the string '10.0.0.0/8'"),
        ({"interfaces": {"eth0": ["300.1.1.1/24"]}},
         "interface eth0: '300.1.1.1/24' does not appear to be an IPv4 or IPv6 interface"),
        ({"interfaces": {"a b": []}}, "interface name 'a b' is not valid (letters, digits and "
                                      "_.@+- only, no '/', ':' or whitespace)"),
    ]:
        with pytest.raises(ModelError) as info:
            NodeFacts(**keywords)  # type: ignore[arg-type]
        assert str(info.value) == message


def _problems(change: dict[str, Any]) -> list[str]:
    data = {**seed_spec().to_dict(), **change}
    with pytest.raises(SpecError) as caught:
        Spec.from_dict(data)
    return [str(p) for p in caught.value.problems]


def test_exclusions_covering_the_destination_together_count_only_those_inside_it() -> None:
    assert _problems({"destinations": [{"cidr": "192.168.2.0/24", "exclude": [
        "192.168.2.0/24", "192.168.2.0/25"]}]}) == [
        "destinations[0].exclude[0]: excludes the whole destination; set masquerade: false "
        "instead"]
    assert _problems({"destinations": [{"cidr": "192.168.2.0/24", "exclude": [
        "192.168.2.0/25", "192.168.2.128/25", "192.168.3.0/24"]}]}) == [
        "destinations[0].exclude[2]: 192.168.3.0/24 is not inside destination 192.168.2.0/24",
        "destinations[0].exclude: the exclusions together cover the whole destination "
        "192.168.2.0/24; set masquerade: false instead"]


@given(st.sampled_from(["192.168.2.0/24", "10.0.0.0/30", "fd00::/120"]), st.data())
def test_exclusions_cover_their_destination_exactly_when_they_aggregate_to_it(
        cidr: str, data: st.DataObject) -> None:
    dest = parse_network(cidr)
    # Few prefix lengths: covering sets (two halves, four quarters, overlaps) are frequent.
    lengths = st.integers(dest.prefixlen, min(dest.prefixlen + 3, dest.max_prefixlen))

    def subnets(length: int) -> st.SearchStrategy[Network]:
        nets: list[Network] = [*dest.subnets(new_prefix=length)]
        return st.sampled_from(nets)

    parts = data.draw(st.lists(lengths.flatmap(subnets), min_size=1, max_size=8))
    assert _cover(dest, parts) == (aggregate(parts) == (dest,))


def test_zone_names_differ_by_a_final_upper_case_letter() -> None:
    zones = [{"zone": name, "resolvers": ["10.43.0.10"]} for name in ("corp", "corp.X", "corp.")]
    assert _problems({"dns": {"zones": zones}}) == ["dns.zones[2].zone: duplicate zone 'corp.'"]


@pytest.mark.parametrize(("cidr", "gateway", "device", "kind"), [
    # The kernel takes it and routes through lo, where forwarded traffic is lost.
    ("192.168.7.0/24", "127.0.0.1", None, "a loopback address"),
    ("192.168.7.0/24", "127.1.2.3", "eth0", "a loopback address"),
    # Taken when a link route covers it (224.0.0.0/4 dev eth0, common for multicast):
    # every packet leaves as a link-layer multicast or broadcast frame.
    ("192.168.7.0/24", "224.0.0.1", "eth0", "a multicast address"),
    ("192.168.7.0/24", "255.255.255.255", None, "the broadcast address"),
    # Refused by the kernel at apply ("Invalid gateway address", "Gateway can not be a
    # local address"), after the plan was shown.
    ("2001:db9::/32", "ff02::1", "eth0", "a multicast address"),
    ("2001:db9::/32", "ff02::1", None, "a multicast address"),
    ("2001:db9::/32", "::1", None, "a loopback address"),
])
def test_a_gateway_no_packet_can_be_sent_to_as_a_next_hop_is_refused(
        cidr: str, gateway: str, device: str | None, kind: str) -> None:
    destination = {"cidr": cidr, "gateway": gateway, **({"device": device} if device else {})}
    with pytest.raises(SpecError) as info:
        Spec.from_dict({"cluster": {"podCIDRs": ["10.42.0.0/16", "fd42::/56"],
                                    "serviceCIDRs": ["10.43.0.0/16", "fd43::/112"]},
                        "destinations": [destination]})
    assert [str(p) for p in info.value.problems] == [
        f"destinations[0].gateway: gateway {gateway} is {kind}, never a next hop; give the "
        "address of the router on the link"]


@pytest.mark.parametrize("resolver", ["100::1", "100::53", "100::ffff:ffff:ffff:ffff"])
def test_a_resolver_in_the_discard_only_prefix_is_refused(resolver: str) -> None:
    # RFC 6666: 100::/64 is routed to be dropped (a remote-triggered black hole); no
    # resolver has an address there, and a zone forwarded to it would time out unsaid.
    with pytest.raises(ModelError, match=r"discard-only prefix 100::/64 \(RFC 6666\)"):
        DnsZone("corp.example", resolvers=[resolver])


@pytest.mark.parametrize("resolver", [
    "192.0.2.53", "198.51.100.53", "203.0.113.53", "2001:db8::53", "3fff::53",  # labs' own
    "fec0::53",  # deprecated site-local: RFC 3879 has it treated as global unicast
    "0.0.0.53", "240.0.0.53",  # routed as unicast by Linux (0.0.0.0 alone is refused)
    "100:0:0:1::53",  # just past the discard-only 100::/64
])
def test_a_resolver_linux_routes_as_unicast_is_taken_documentation_prefixes_too(
        resolver: str) -> None:
    assert DnsZone("corp.example", resolvers=[resolver]).resolvers == (
        parse_address(resolver),)
