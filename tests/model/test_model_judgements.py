"""Hand-written cases for "met by foreign", conflicts, clash keys and defaults.

Each test names the planted bug it was written against (the mutation run of
issue 7 showed the suite let these through); each was checked to fail with
the bug planted by hand.
"""

from __future__ import annotations

import pytest

from k3snet.errors import ModelError
from k3snet.model import ForwardRule, MasqueradeRule, Route, SnatRule, Sysctl


def test_nat_without_out_interface_is_not_met_by_a_foreign_rule_limited_to_one() -> None:
    # Ours translates traffic leaving through any interface; the foreign rule only eth0's.
    wanted = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")
    foreign = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24", out_interface="eth0")
    assert not wanted.met_by(foreign)
    assert foreign.met_by(wanted)
    snat = SnatRule("10.42.0.0/16", to_address="192.168.1.5")
    assert not snat.met_by(SnatRule("10.42.0.0/16", to_address="192.168.1.5",
                                    out_interface="eth1"))


def test_nat_is_not_met_by_a_foreign_rule_whose_exclusions_leave_part_of_ours_out() -> None:
    wanted = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")
    foreign = MasqueradeRule("10.42.0.0/16", destination="192.168.0.0/16",
                             exclude=["192.168.2.128/25"])
    assert not wanted.met_by(foreign)
    narrower = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/25")
    assert narrower.met_by(foreign)


def test_nat_is_not_met_by_a_foreign_rule_of_a_narrower_source_or_other_snat_address() -> None:
    wanted = MasqueradeRule("10.42.0.0/16")
    assert not wanted.met_by(MasqueradeRule("10.42.0.0/17"))
    assert MasqueradeRule("10.42.0.0/17").met_by(wanted)
    snat = SnatRule("10.42.0.0/16", to_address="192.168.1.5")
    assert not snat.met_by(SnatRule("10.42.0.0/16", to_address="192.168.1.6"))
    assert not snat.met_by(wanted)
    assert not wanted.met_by(snat)


@pytest.mark.parametrize(
    ("exclude", "destination"),
    [
        (["fd00::/8"], None),
        (["192.168.0.0/16", "fd00::/8"], None),
        (["192.168.2.0/25", "fd00::/8"], "192.168.2.0/24"),
    ],
)
def test_nat_family_is_checked_on_every_exclusion(
    exclude: list[str], destination: str | None
) -> None:
    with pytest.raises(ModelError, match="mixes IPv4 and IPv6"):
        MasqueradeRule("10.42.0.0/16", destination=destination, exclude=exclude)
    with pytest.raises(ModelError, match="mixes IPv4 and IPv6"):
        SnatRule("10.42.0.0/16", destination=destination, exclude=exclude,
                 to_address="192.168.1.5")


def test_forward_rule_family_and_interfaces() -> None:
    with pytest.raises(ModelError, match="mixes IPv4 and IPv6"):
        ForwardRule("10.42.0.0/16", "fd00::/8")
    wanted = ForwardRule("10.42.0.0/16", "192.168.2.0/24")
    assert not wanted.met_by(ForwardRule("10.42.0.0/16", "192.168.2.0/24", out_interface="eth0"))
    assert not wanted.met_by(ForwardRule("10.42.0.0/16", "192.168.2.0/24", in_interface="cni0"))
    assert ForwardRule("10.42.0.0/16", "192.168.2.0/24", in_interface="cni0").met_by(wanted)


def test_foreign_sysctl_meets_the_need_only_with_the_same_value() -> None:
    wanted = Sysctl("net.ipv4.ip_forward", 1)
    assert wanted.met_by(Sysctl("net.ipv4.ip_forward", "1"))
    assert not wanted.met_by(Sysctl("net.ipv4.ip_forward", 0))
    assert not wanted.met_by(Sysctl("net.ipv6.conf.all.forwarding", 1))
    assert not wanted.conflicts_with(Sysctl("net.ipv4.ip_forward", 0))


def test_route_clash_key_is_family_table_and_exact_prefix_whatever_the_metric() -> None:
    wanted = Route("192.168.2.0/24", gateway="192.168.1.1", metric=100)
    assert wanted.clash_key == Route("192.168.2.0/24", device="eth9", metric=5).clash_key
    assert wanted.conflicts_with(Route("192.168.2.0/24", gateway="192.168.1.254", metric=5))
    assert wanted.met_by(Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0",
                               protocol=4))
    for elsewhere in (
        Route("192.168.2.0/23", gateway="192.168.1.254", metric=100),
        Route("192.168.2.0/24", gateway="192.168.1.254", metric=100, table=100),
    ):
        assert wanted.clash_key != elsewhere.clash_key
        assert not wanted.conflicts_with(elsewhere)
        assert not wanted.met_by(elsewhere)
    v4_default = Route("0.0.0.0/0", gateway="192.168.1.1")
    v6_default = Route("::/0", gateway="fd01::1", metric=0)
    assert v4_default.clash_key != v6_default.clash_key
    assert not v4_default.conflicts_with(v6_default)


def test_route_with_a_device_is_not_met_by_one_through_another_device() -> None:
    wanted = Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0")
    assert not wanted.met_by(Route("192.168.2.0/24", gateway="192.168.1.1", device="eth1"))
    assert wanted.conflicts_with(Route("192.168.2.0/24", gateway="192.168.1.1", device="eth1"))


def test_ipv6_route_metric_defaults_to_1024_as_the_kernel_stores_it() -> None:
    for metric in (None, 0):
        route = Route("fd01:2::/64", gateway="fd01:1::1", metric=metric)
        assert route.metric == 1024
        assert route.to_dict()["metric"] == 1024
        assert route.key == Route("fd01:2::/64", device="eth0", metric=1024).key
    assert Route("fd01:2::/64", device="eth0", metric=1).metric == 1
    assert Route("192.168.2.0/24", device="eth0").metric == 0
    assert Route("192.168.2.0/24", device="eth0", metric=0).metric == 0
