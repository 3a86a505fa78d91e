"""NAT rules, routes and sysctls: every message, plan line and JSON form, case by case.

Recorded in ``tests/data/model/node.json`` (see ``tests/model/recorded.py``).
"""

from __future__ import annotations

from k3snet.model import MasqueradeRule, Route, SnatRule, Sysctl, object_from_dict
from tests.model.recorded import Case, check

CASES: dict[str, Case] = {
    # NAT
    "masquerade": lambda: MasqueradeRule("10.42.0.0/16", destination="192.168.0.0/16",
                                         exclude=["192.168.2.0/24", "192.168.3.0/24"],
                                         out_interface="eth0", random_fully=True),
    "masquerade v6": lambda: MasqueradeRule("fd00:42::/56", exclude=["fd00::/8"]),
    "masquerade exclude string": lambda: MasqueradeRule("10.42.0.0/16", exclude="10.0.0.0/8"),
    "masquerade random": lambda: MasqueradeRule("10.42.0.0/16", random_fully=1),  # type: ignore[arg-type]
    "masquerade exclusion outside": lambda: MasqueradeRule(
        "10.42.0.0/16", destination="192.168.0.0/16", exclude=["10.0.0.0/8"]),
    "masquerade excluding every destination": lambda: MasqueradeRule(
        "10.42.0.0/16", exclude=["0.0.0.0/1", "128.0.0.0/1"]),
    "snat excluding every destination": lambda: SnatRule(
        "fd00:42::/56", to_address="fd00::5", exclude=["::/0"]),
    "masquerade excluded whole": lambda: MasqueradeRule(
        "10.42.0.0/16", destination="192.168.2.0/24", exclude=["192.168.0.0/16"]),
    "snat": lambda: SnatRule("10.42.0.0/16", to_address="192.168.1.5",
                             destination="192.168.2.0/24"),
    "snat v6": lambda: SnatRule("fd00:42::/56", to_address="fd00::5", out_interface="eth0"),
    "snat zone": lambda: SnatRule("fd00:42::/56", to_address="fe80::1%eth0"),
    "nat families": lambda: MasqueradeRule("10.42.0.0/16", destination="fd00::/8"),
    "nat families of exclusions": lambda: SnatRule("10.42.0.0/16", to_address="10.0.0.1",
                                                   exclude=["fd00::/8"]),
    "snat round trip": lambda: object_from_dict(SnatRule(
        "10.42.0.0/16", to_address="192.168.1.5", destination="192.168.0.0/16",
        exclude=["192.168.2.0/24"], out_interface="eth0", random_fully=True).to_dict()),
    "snat family": lambda: SnatRule("10.42.0.0/16", to_address="fd00::5"),
    # routes
    "route": lambda: Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0", metric=5,
                           table=100, protocol="static"),
    "route scope link": lambda: Route("192.168.2.0/24", device="eth0", metric=5, table=100,
                                      scope="link", protocol="static"),
    "route scope link via gateway": lambda: Route("192.168.2.0/24", gateway="192.168.1.1",
                                                  device="eth0", scope="link"),
    "route v6": lambda: Route("fd00:2::/64", gateway="fe80::1%eth0"),
    "route v6 zone and device": lambda: Route("fd00:2::/64", gateway="fe80::1%eth0",
                                              device="eth1"),
    "route bare": lambda: Route("192.168.2.0/24"),
    "route table": lambda: Route("192.168.2.0/24", device="eth0", table=0),
    "route table bool": lambda: Route("192.168.2.0/24", device="eth0", table=True),
    "route table local": lambda: Route("192.168.2.0/24", device="eth0", table=255),
    "route table one": lambda: Route("192.168.2.0/24", device="eth0", table=1).table,
    "route table top": lambda: Route("192.168.2.0/24", device="eth0", table=4294967295).table,
    "route table over": lambda: Route("192.168.2.0/24", device="eth0", table=4294967296),
    "route metric": lambda: Route("192.168.2.0/24", device="eth0", metric=-1),
    "route metric text": lambda: Route("192.168.2.0/24", device="eth0", metric="5"),  # type: ignore[arg-type]
    "route protocol name": lambda: Route("192.168.2.0/24", device="eth0", protocol="nope"),
    "route protocol number": lambda: Route("192.168.2.0/24", device="eth0", protocol=256),
    "route protocol numbers": lambda: [Route("192.168.2.0/24", device="eth0", protocol=p).protocol
                                       for p in (0, 255, "kernel", "boot", "static")],
    "route metric top": lambda: Route("192.168.2.0/24", device="eth0", metric=4294967295).metric,
    "route metric over": lambda: Route("192.168.2.0/24", device="eth0", metric=4294967296),
    "route protocol bool": lambda: Route("192.168.2.0/24", device="eth0", protocol=True),
    "route protocol long name": lambda: Route("192.168.2.0/24", device="eth0",
                                              protocol="p" * 50),
    "route families": lambda: Route("192.168.2.0/24", gateway="fd00::1"),
    "route scope long": lambda: Route("192.168.2.0/24", device="eth0", scope="s" * 50),  # type: ignore[arg-type]
    "route from dict": lambda: Route.from_dict({"destination": "192.168.2.0/24",
                                                "device": "eth0", "scope": "host"}),
    "route scope": lambda: Route("192.168.2.0/24", device="eth0", scope="site"),  # type: ignore[arg-type]
    "route protocol without a name": lambda: Route("192.168.2.0/24", device="eth0", protocol=77),
    # sysctls
    "sysctl": lambda: Sysctl("net.ipv4.ip_forward", 1),
    "sysctl slashes": lambda: Sysctl("net/ipv4/conf/eth0.100/rp_filter", " 2\t"),
    "sysctl name": lambda: Sysctl(7, 1),  # type: ignore[arg-type]
    "sysctl name bad": lambda: Sysctl("net..ipv4", 1),
    "sysctl name short": lambda: Sysctl("net", 1),
    "sysctl not net": lambda: Sysctl("kernel.panic", 1),
    "sysctl value": lambda: Sysctl("net.ipv4.ip_forward", 1.5),  # type: ignore[arg-type]
    "sysctl value empty": lambda: Sysctl("net.ipv4.ip_forward", " \t"),
    "sysctl value control": lambda: Sysctl("net.ipv4.ip_forward", "1\x00"),
    "sysctl value long": lambda: Sysctl("net.ipv4.ip_forward", "1" * 300),
    "sysctl bools": lambda: [Sysctl("net.ipv4.ip_forward", True).value,
                             Sysctl("net.ipv4.ip_forward", False).value],
    "sysctl value 4096": lambda: len(Sysctl("net.ipv4.ip_forward", "1" * 4096).value),
    "sysctl value 4097": lambda: Sysctl("net.ipv4.ip_forward", "1" * 4097),
    "sysctl value long, control": lambda: Sysctl("net.ipv4.ip_forward", "1" * 50 + "\x7f"),
    "sysctl name dot": lambda: Sysctl("net/./ipv4", 1),
    "sysctl name dots": lambda: Sysctl("net/../ipv4", 1),
    "sysctl previous": lambda: object_from_dict(
        Sysctl("net.ipv4.ip_forward", 1, previous="0").to_dict()),
    "sysctl value words": lambda: Sysctl("net.ipv4.tcp_rmem", "4096\t131072  6291456"),
}


def test_node_texts() -> None:
    check("node", CASES)


def test_a_route_without_a_device_differs_from_one_with_any_device() -> None:
    bare = Route("192.168.2.0/24", gateway="192.168.1.1")
    assert bare != Route("192.168.2.0/24", gateway="192.168.1.1", device="XXXX")
    assert bare == Route.from_dict(bare.to_dict())
