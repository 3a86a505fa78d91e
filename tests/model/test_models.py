"""Models: validation, normalisation, identity and their text forms."""

from __future__ import annotations

import ipaddress
import re

import attrs
import pytest

from k3snet import (
    ForwardRule,
    MasqueradeRule,
    ModelError,
    Route,
    SnatRule,
    Spec,
    State,
    Sysctl,
    aggregate,
    parse_network,
)
from k3snet.model import NatBlock, NetObject, object_from_dict
from k3snet.model.nat import snat_address_problem


def test_parse_network_rejects_host_bits_and_says_what_was_meant() -> None:
    with pytest.raises(ModelError, match=r"host bits set \(did you mean 10.42.0.0/16\?\)"):
        parse_network("10.42.0.1/16")


@pytest.mark.parametrize("bad", ["10.42.0.0/33", "not-a-cidr", "", "fd00::/129"])
def test_parse_network_rejects_garbage(bad: str) -> None:
    with pytest.raises(ModelError, match="not a valid CIDR"):
        parse_network(bad)


def test_aggregate_mixed_families_and_host_bits() -> None:
    assert aggregate(["10.0.0.1/24", "10.0.1.0/24", "fd00::1/64", "fd00:0:0:1::/64"]) == (
        ipaddress.ip_network("10.0.0.0/23"),
        ipaddress.ip_network("fd00::/63"),
    )


def test_aggregate_takes_one_prefix_given_alone() -> None:
    """A string was iterated as its characters: ``aggregate("10.0.0.0/8")`` said
    "'1' is not a valid CIDR"; a network, as its addresses."""
    assert aggregate("10.0.0.1/8") == (ipaddress.ip_network("10.0.0.0/8"),)
    assert aggregate(ipaddress.ip_network("fd00::/64")) == (ipaddress.ip_network("fd00::/64"),)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("averyveryverylongname", "at most 15"),
        ("eth 0", "not valid"),
        ("eth0/1", "not valid"),
        ("a:b", "not valid"),
        ("..", "not valid"),
    ],
)
def test_interface_names_the_kernel_rejects_are_refused(name: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        Route("192.168.2.0/24", device=name)


def test_fifteen_byte_interface_name_is_accepted() -> None:
    assert Route("192.168.2.0/24", device="a" * 15).device == "a" * 15


def test_route_needs_a_next_hop_and_one_family() -> None:
    with pytest.raises(ModelError, match="needs a gateway, a device"):
        Route("192.168.2.0/24")
    with pytest.raises(ModelError, match="mixes IPv4 and IPv6"):
        Route("192.168.2.0/24", gateway="fd00::1")


@pytest.mark.parametrize(("destination", "gateway"), [
    ("192.168.2.0/24", "0.0.0.0"),  # noqa: S104 (a gateway under test, not a bind)
    ("fd01:2::/64", "::"), ("fd01:2::/64", "0::0"),
])
def test_route_refuses_the_unspecified_gateway_the_kernel_reads_as_none(
        destination: str, gateway: str) -> None:
    # `ip route add 10.0.0.0/8 via 0.0.0.0 dev d0` stores "10.0.0.0/8 dev d0 scope global":
    # the route read back has no gateway, so every plan replaced it again.
    with pytest.raises(ModelError, match="unspecified address, which the kernel reads as no "
                                         "gateway"):
        Route(destination, gateway=gateway, device="eth0")
    with pytest.raises(ModelError, match="unspecified"):
        Route.from_dict({"destination": destination, "gateway": gateway, "device": "eth0"})


def test_route_refuses_a_gateway_of_host_scope() -> None:
    # `ip route add 10.5.0.0/16 via 10.0.0.2 dev d0 scope host`: "Route with host scope
    # can not have a gateway", whatever the node: said at the model, not at the apply.
    with pytest.raises(ModelError, match="scope host has no gateway"):
        Route("10.5.0.0/16", gateway="10.0.0.2", device="eth0", scope="host")
    with pytest.raises(ModelError, match="scope host has no gateway"):
        Route.from_dict({"destination": "10.5.0.0/16", "gateway": "10.0.0.2", "scope": "host"})
    assert Route("10.5.0.0/16", device="eth0", scope="host").scope == "host"
    assert Route("fd05::/64", gateway="fd00::2", scope="host").scope == "universe"  # no scope


def test_route_refuses_an_ipv4_gateway_of_link_scope() -> None:
    # `ip route add 10.5.0.0/16 via 10.0.0.2 dev d0 scope link`: "Nexthop has invalid
    # gateway" (with onlink: "invalid scope"); the plan said it would add it
    # (tests/netlink/test_route_scopes.py has the kernel's answers).
    with pytest.raises(ModelError, match="scope link has no gateway"):
        Route("10.5.0.0/16", gateway="10.0.0.2", device="eth0", scope="link")
    with pytest.raises(ModelError, match="scope link has no gateway"):
        Route.from_dict({"destination": "10.5.0.0/16", "gateway": "10.0.0.2", "scope": "link"})
    assert Route("10.5.0.0/16", device="eth0", scope="link").scope == "link"
    # IPv6 routes have no scope: the kernel takes the route, and reads it back as universe.
    assert Route("fd05::/64", gateway="fd00::2", device="eth0",
                 scope="link").scope == "universe"


def test_route_refuses_a_link_local_gateway_without_device() -> None:
    # The kernel refuses it whatever the node ("Egress device not specified"): said at
    # the model, and so at the spec's path, not at the apply.
    with pytest.raises(ModelError, match="link-local gateway fe80::1 needs a device"):
        Route("fd09::/64", gateway="fe80::1")
    assert Route("fd09::/64", gateway="fe80::1%eth0").device == "eth0"
    assert Route("fd09::/64", gateway="fe80::1", device="eth0").device == "eth0"
    assert Route("10.9.0.0/16", gateway="169.254.1.1").device is None  # IPv4: on-link


def test_route_refuses_an_ipv4_mapped_gateway_and_snat_an_ipv4_mapped_source() -> None:
    # `ip -6 route add fd02::/64 via ::ffff:192.168.1.1 dev d0`: "Invalid gateway address";
    # nft takes `snat to ::ffff:192.0.2.1`, a source no packet on the wire may have.
    with pytest.raises(ModelError, match="is an IPv4-mapped address, which the kernel refuses"):
        Route("fd02::/64", gateway="::ffff:192.168.1.1", device="eth0")
    with pytest.raises(ModelError, match="SNAT address ::ffff:c000:201 is an IPv4-mapped"):
        SnatRule("fd42::/56", to_address="::ffff:192.0.2.1")


def test_route_defaults_normalise_to_what_the_kernel_reports() -> None:
    v6 = Route("fd01:2::/64", gateway="fd01:1::1")
    assert v6.metric == 1024
    assert v6 == Route("fd01:2::/64", gateway="fd01:1::1", metric=0)
    assert Route("10.0.0.0/8", device="eth0").scope == "link"
    assert Route("10.0.0.0/8", gateway="192.168.1.1").scope == "universe"


def test_route_key_is_table_destination_metric() -> None:
    a = Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0")
    b = Route("192.168.2.0/24", gateway="192.168.1.254", device="eth0")
    c = Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0", metric=100)
    assert a.key == b.key
    assert a != b
    assert a.key != c.key
    assert a.clash_key == c.clash_key


def test_foreign_static_route_meets_the_need_whatever_its_protocol() -> None:
    wanted = Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0")
    static = attrs.evolve(wanted, protocol=4)
    other_gateway = attrs.evolve(static, gateway=ipaddress.ip_address("192.168.1.254"))
    assert wanted.met_by(static)
    assert not wanted.conflicts_with(static)
    assert wanted.conflicts_with(other_gateway)


def test_nat_exclusions_are_aggregated_and_must_lie_in_the_destination() -> None:
    rule = MasqueradeRule("10.42.0.0/16", exclude=["10.0.0.0/9", "10.128.0.0/9", "10.0.0.0/8"])
    assert rule.exclude == (ipaddress.ip_network("10.0.0.0/8"),)
    with pytest.raises(ModelError, match="lies outside destination"):
        MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24", exclude=["10.0.0.0/8"])
    with pytest.raises(ModelError, match="never match"):
        MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24", exclude=["192.168.0.0/16"])


@pytest.mark.parametrize(("source", "address", "kind"), [
    ("10.42.0.0/16", "0.0.0.0", "the unspecified address"),  # noqa: S104 (not a bind)
    ("10.42.0.0/16", "224.0.0.1", "a multicast address"),
    ("10.42.0.0/16", "127.0.0.1", "a loopback address"),
    ("10.42.0.0/16", "255.255.255.255", "the broadcast address"),
    ("fd42::/56", "::", "the unspecified address"),
    ("fd42::/56", "ff02::1", "a multicast address"),
    ("fd42::/56", "::1", "a loopback address"),
])
def test_snat_refuses_a_source_no_reply_can_come_back_to(source: str, address: str,
                                                         kind: str) -> None:
    # nft and iptables take `snat to 0.0.0.0` / `--to-source 224.0.0.1` as they are:
    # every translated packet then left with a source no reply reaches.
    with pytest.raises(ModelError, match=f"SNAT address {re.escape(address)} is {kind}; "
                                         "SNAT needs a unicast address"):
        SnatRule(source, to_address=address)
    # What another program wrote is still read: a foreign rule is reported, not refused.
    block = NatBlock(4 if "." in address else 6, "snat", f"-j SNAT --to-source {address}",
                     "iptables nat POSTROUTING", to_address=address)
    assert str(block.to_address) == address


@pytest.mark.parametrize(("source", "address", "destination"), [
    ("10.42.0.0/16", "169.254.1.5", None),
    ("10.42.0.0/16", "169.254.1.5", "192.168.2.0/24"),
    ("10.42.0.0/16", "169.254.1.5", "169.0.0.0/8"),  # holds more than the link's range
    ("fd42::/56", "fe80::1", None),
    ("fd42::/56", "fe80::1", "fd01:2::/64"),
])
def test_snat_refuses_a_link_local_source_for_destinations_beyond_the_link(
        source: str, address: str, destination: str | None) -> None:
    # The kernel takes `snat to 169.254.1.5` / `snat to fe80::1`, and routers forward no
    # packet from a link-local address (Linux answers an IPv6 one "not a neighbour"):
    # the seed lab's pod lost its egress to the database so, though the address was the
    # node's own.
    with pytest.raises(ModelError, match=f"SNAT address {re.escape(address)} is a "
                                         "link-local address: routers do not forward"):
        SnatRule(source, destination=destination, to_address=address)
    assert snat_address_problem(ipaddress.ip_address(address)) is not None
    # What another program wrote is still read as what it does.
    block = NatBlock(4 if "." in address else 6, "snat", f"-j SNAT --to-source {address}",
                     "iptables nat POSTROUTING", to_address=address)
    assert str(block.to_address) == address


def test_snat_to_a_link_local_address_is_taken_for_link_local_destinations() -> None:
    metadata = SnatRule("10.42.0.0/16", destination="169.254.169.254/32",
                        to_address="169.254.1.5")
    assert str(metadata.to_address) == "169.254.1.5"
    assert SnatRule("fd42::/56", destination="fe80::/64", to_address="fe80::1").family == 6


@pytest.mark.parametrize("exclude", [None, 5, b"10.0.0.0/8", {"10.0.0.0/8": True}])
def test_nat_exclusions_that_are_no_list_are_a_model_error(exclude: object) -> None:
    # None or a number raised a bare TypeError from the aggregation; bytes and a
    # mapping were iterated (bytes as numbers, a mapping as its keys).
    with pytest.raises(ModelError, match="exclude must be a list of CIDRs"):
        MasqueradeRule("10.42.0.0/16", exclude=exclude)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="exclude must be a list of CIDRs"):
        SnatRule("10.42.0.0/16", to_address="192.0.2.1", exclude=exclude)  # type: ignore[arg-type]
    assert MasqueradeRule("10.42.0.0/16", exclude=iter(["10.0.0.0/8"])).exclude == (
        MasqueradeRule("10.42.0.0/16", exclude=["10.0.0.0/8"]).exclude)


def test_masquerade_and_snat_share_one_key_so_switching_is_a_replace() -> None:
    masq = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")
    snat = SnatRule("10.42.0.0/16", destination="192.168.2.0/24", to_address="192.168.1.5")
    assert masq.key == snat.key
    assert masq != snat
    with pytest.raises(ModelError, match="is not IPv6"):
        SnatRule("fd42::/56", to_address="192.168.1.5")


def test_flannel_style_masquerade_covers_a_destination_rule() -> None:
    flannel = MasqueradeRule("10.42.0.0/16", exclude=["224.0.0.0/4", "10.42.0.0/16"])
    wanted = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24", out_interface="eth0")
    assert wanted.met_by(flannel)
    assert not MasqueradeRule("10.42.0.0/16", destination="224.0.0.0/8").met_by(flannel)


def test_forward_rule_met_by_a_wider_foreign_accept() -> None:
    wide = ForwardRule("10.42.0.0/16", "0.0.0.0/0")
    assert ForwardRule("10.42.0.0/24", "192.168.2.0/24", out_interface="eth0").met_by(wide)
    assert not ForwardRule("10.0.0.0/8", "192.168.2.0/24").met_by(wide)


def test_sysctl_names_values_and_vlan_interfaces() -> None:
    assert Sysctl("net.ipv4.ip_forward", True).value == "1"
    assert Sysctl("net/ipv4/conf/eth0.100/rp_filter", 2).path == "net/ipv4/conf/eth0.100/rp_filter"
    assert Sysctl("net.ipv4.tcp_rmem", "4096\t87380  6291456").value == "4096 87380 6291456"
    assert Sysctl("net.ipv4.ip_forward", 1) == Sysctl("net.ipv4.ip_forward", 1, previous="0")
    with pytest.raises(ModelError, match=r"only net\.\*"):
        Sysctl("kernel.panic", 1)
    with pytest.raises(ModelError, match="not valid"):
        Sysctl("net.ipv4..x", 1)


@pytest.mark.parametrize("written", [
    "net.ipv4.conf.eth0/100.rp_filter",   # sysctl.d(5)'s own example's form
    "net/ipv4/conf/eth0.100/rp_filter",
])
def test_a_vlan_interfaces_sysctl_is_read_in_both_of_sysctl_d_forms(written: str) -> None:
    # sysctl.d(5): when the first separator is a dot, dots and slashes are interchanged.
    # Split at its slash, the dotted form was "net.ipv4.conf.eth0" and "100.rp_filter",
    # refused as "k3snet manages only net.* parameters".
    sysctl = Sysctl(written, 2)
    assert (sysctl.name, sysctl.path) == ("net/ipv4/conf/eth0.100/rp_filter",) * 2
    assert Spec.from_dict({"sysctls": {written: 2}}).sysctls == (sysctl,)


@pytest.mark.parametrize("written", [
    "net.ipv4.conf.all.forwarding/../../../kernel.core_pattern", "kernel.x/y", "net.ipv4/..",
])
def test_a_sysctl_name_with_both_separators_is_still_checked(written: str) -> None:
    with pytest.raises(ModelError) as info:
        Sysctl(written, 1)
    assert repr(written) in str(info.value)


@pytest.mark.parametrize(
    "obj",
    [
        Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0", table=100, metric=5),
        Route("fd01:2::/64", device="eth0", protocol=4),
        MasqueradeRule("fd42::/56", exclude=["fd00::/8"], random_fully=True, out_interface="e"),
        SnatRule("10.42.0.0/16", destination="192.168.2.0/24", to_address="192.168.1.5"),
        ForwardRule("10.42.0.0/16", "192.168.2.0/24", in_interface="cni0"),
        Sysctl("net.ipv4.ip_forward", 1, previous="0"),
    ],
    ids=lambda o: o.type_name,
)
def test_objects_round_trip_and_describe_themselves(obj: NetObject) -> None:
    assert object_from_dict(obj.to_dict()) == obj
    assert str(obj)


def test_state_refuses_two_owned_objects_in_one_slot() -> None:
    with pytest.raises(ModelError, match="share one slot"):
        State(owned=[Route("10.0.0.0/8", device="eth0"), Route("10.0.0.0/8", device="eth1")])


def test_state_round_trips_and_renders_sorted() -> None:
    state = State(owned=[MasqueradeRule("10.42.0.0/16"), Sysctl("net.ipv4.ip_forward", 1)],
                  foreign=[Route("192.168.2.0/24", gateway="192.168.1.1", protocol=4)])
    assert State.from_dict(state.to_dict()) == state
    assert state.render().splitlines()[1] == "  sysctl net.ipv4.ip_forward = 1"


def test_nat_destination_of_all_addresses_is_any() -> None:
    assert MasqueradeRule("10.42.0.0/16", destination="0.0.0.0/0").destination is None
    assert MasqueradeRule("fd42::/56", destination="::/0") == MasqueradeRule("fd42::/56")
