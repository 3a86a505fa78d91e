"""Docker's FORWARD rules beside k3snet's (iptables backend): no conflict with the pods' traffic.

Docker 28+ drops what enters a bridge from elsewhere, ``-A DOCKER ! -i docker0 -o
docker0 -j DROP`` (reached from FORWARD through ``DOCKER-FORWARD`` and
``DOCKER-BRIDGE``; Docker 27 jumps there from FORWARD itself, older ones drop in
``DOCKER-ISOLATION-STAGE-2``). Read as "any destination", that drop met the replies of
every wanted forward rule without an in-interface (and an internal network's
``! -d 192.0.2.0/24 -i br-int -j DROP`` their new packets), and ``k3snet apply`` refused (exit 4)
while the kernel never drops a pod's packet there: a packet leaves by the device its
destination is routed by, and docker0 carries only Docker's subnet. Such a drop now
gets as destination what the node routes by its out-interface, or as source what it
routes by its in-interface (:class:`~k3snet.backends.routed.RoutedBy`);
``-o eth0`` on the uplink, or a drop naming the pods' CIDR, is still a conflict. Kernel
tests send real connections through the seed lab's node with Docker's rules in place,
both iptables variants, both families.
"""

from __future__ import annotations

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.iptables.foreign import foreign_blocks, path_blocks
from k3snet.backends.iptables.save import parse_save
from k3snet.backends.routed import RoutedBy
from k3snet.lab import SeedLab
from k3snet.lab.netns import run_in
from k3snet.model import ForwardBlock, ForwardRule, MasqueradeRule, NetObject, State
from k3snet.planner import plan
from tests.dropped import dropped, iptables_count
from tests.shared_lab import lab_fixture, made_lab_fixture  # noqa: F401 - one lab for the module

POD = {4: "10.42.0.0/16", 6: "fd42:42::/56"}
DB = {4: "192.168.2.0/24", 6: "fd01:2::/64"}
BRIDGE = {4: ("172.17.0.1/16", "172.17.0.0/16"), 6: ("fd00:d0c::1/64", "fd00:d0c::/64")}


def _filter(policy: str, rules: str, chains: tuple[str, ...]) -> str:
    head = "".join(f":{chain} - [0:0]\n" for chain in chains)
    return (f"*filter\n:INPUT ACCEPT [0:0]\n:FORWARD {policy} [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            f"{head}{rules.strip()}\nCOMMIT\n")


def docker28(family: int) -> str:
    """Docker 28's filter table for docker0 (moby's iptablesdoc new-daemon, v28)."""
    return _filter("DROP", """
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-FORWARD
-A DOCKER ! -i docker0 -o docker0 -j DROP
-A DOCKER-BRIDGE -o docker0 -j DOCKER
-A DOCKER-CT -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A DOCKER-FORWARD -j DOCKER-CT
-A DOCKER-FORWARD -j DOCKER-INTERNAL
-A DOCKER-FORWARD -j DOCKER-BRIDGE
-A DOCKER-FORWARD -i docker0 -j ACCEPT
""", ("DOCKER", "DOCKER-BRIDGE", "DOCKER-CT", "DOCKER-FORWARD", "DOCKER-INTERNAL",
      "DOCKER-USER")) + _nat(family)


def docker27(family: int) -> str:
    """Docker 27's (< 28): DOCKER-USER, the isolation stages, FORWARD's jump to DOCKER."""
    return _filter("DROP", """
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A DOCKER ! -i docker0 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
""", ("DOCKER", "DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2",
      "DOCKER-USER")) + _nat(family)


def docker26(family: int) -> str:
    """Docker 26's (and older): no drop in DOCKER, only the isolation stages' behind a
    ``! -o docker0`` that already excludes the pods' packets."""
    return docker27(family).replace("-A DOCKER ! -i docker0 -o docker0 -j DROP\n", "")


def _nat(family: int) -> str:
    subnet = BRIDGE[family][1]
    local = "! -d 127.0.0.0/8 " if family == 4 else "! -d ::1/128 "
    return ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            ":POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n"
            "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n"
            f"-A OUTPUT {local}-m addrtype --dst-type LOCAL -j DOCKER\n"
            f"-A POSTROUTING -s {subnet} ! -o docker0 -j MASQUERADE\n"
            "-A DOCKER -i docker0 -j RETURN\nCOMMIT\n")


INTERNAL = {4: ("192.0.2.1/24", "192.0.2.0/24"), 6: ("fd00:1::1/64", "fd00:1::/64")}


def docker28_internal(family: int) -> str:
    """Docker 28 with an internal network too (``docker network create --internal``, bridge
    br-int): DOCKER-INTERNAL drops what leaves it or enters it from another subnet, the
    second by in-interface alone (moby's iptablesdoc usernet-internal, v28)."""
    subnet = INTERNAL[family][1]
    return docker28(family).replace("-A DOCKER-FORWARD -i docker0 -j ACCEPT\n", (
        "-A DOCKER-FORWARD -i docker0 -j ACCEPT\n"
        "-A DOCKER-FORWARD -i br-int -o br-int -j ACCEPT\n"
        f"-A DOCKER-INTERNAL ! -s {subnet} -o br-int -j DROP\n"
        f"-A DOCKER-INTERNAL ! -d {subnet} -i br-int -j DROP\n"))


LAYOUTS = {"docker-28": docker28, "docker-27": docker27, "docker-26": docker26,
           "docker-28-internal": docker28_internal}

# The seed node's routes, and Docker's bridge.
ROUTES = {
    4: [("10.42.0.0/24", "cni0"), ("192.168.1.0/24", "eth0"), ("192.168.2.0/24", "eth0"),
        ("172.17.0.0/16", "docker0")],
    6: [("fd42:42::/64", "cni0"), ("fd01:1::/64", "eth0"), ("fd01:2::/64", "eth0"),
        ("fd00:d0c::/64", "docker0"), ("fe80::/64", "docker0"), ("fe80::/64", "eth0")],
}
for _family, (_, _subnet) in INTERNAL.items():
    ROUTES[_family].append((_subnet, "br-int"))


def _wanted(family: int) -> list[ForwardRule]:
    return [ForwardRule(POD[family], DB[family]),
            ForwardRule(POD[family], DB[family], out_interface="eth0"),
            ForwardRule(POD[family], DB[family], in_interface="cni0", out_interface="eth0")]


def _deciding(text: str, family: int, routed: RoutedBy | None) -> set[str]:
    dump = parse_save(text).get("filter")
    assert dump is not None
    blocks = foreign_blocks(dump, family, len(dump.chain("FORWARD")), routed=routed)
    return {block.describe() for block in blocks if isinstance(block, ForwardBlock)
            and any(block.decides(rule) for rule in _wanted(family))}


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_dockers_bridge_drops_meet_no_pod_traffic_routed_elsewhere(
        layout: str, family: int) -> None:
    text = LAYOUTS[layout](family)
    assert _deciding(text, family, RoutedBy(ROUTES[family])) == set()
    # Without the routes (a replaced kernel seam) the drop may meet any packet, as before.
    expected = {f"drop by iptables IPv{family} filter: -A DOCKER ! -i docker0 -o docker0 -j DROP"}
    if layout == "docker-26":
        expected = set()
    if layout == "docker-28-internal":  # by in-interface alone: the pods' new packets too
        subnet = INTERNAL[family][1]
        expected |= {f"drop by iptables IPv{family} filter: -A DOCKER-INTERNAL "
                     f"! -d {subnet} -i br-int -j DROP",
                     f"drop by iptables IPv{family} filter: -A DOCKER-INTERNAL "
                     f"! -s {subnet} -o br-int -j DROP"}
    assert _deciding(text, family, None) == expected


def _with(text: str, rule: str) -> str:
    return text.replace("-A FORWARD -j DOCKER-USER\n", f"-A FORWARD -j DOCKER-USER\n{rule}\n", 1)


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_drop_on_the_uplink_or_of_the_pods_cidr_beside_docker_is_still_a_conflict(
        layout: str, family: int) -> None:
    text = LAYOUTS[layout](family)
    routed = RoutedBy(ROUTES[family])
    # DOCKER-USER, where Docker tells administrators to put their rules (before its own).
    uplink = _with(text, "-A DOCKER-USER -o eth0 -j DROP")
    assert _deciding(uplink, family, routed) == {
        f"drop by iptables IPv{family} filter: -A DOCKER-USER -o eth0 -j DROP"}
    replies = _with(text, "-A DOCKER-USER -i eth0 -j DROP")  # the replies come in there
    assert _deciding(replies, family, routed) == {
        f"drop by iptables IPv{family} filter: -A DOCKER-USER -i eth0 -j DROP"}
    pods = _with(text, f"-A DOCKER-USER -d {POD[family]} -j DROP")
    assert _deciding(pods, family, routed) == {
        f"drop by iptables IPv{family} filter: -A DOCKER-USER -d {POD[family]} -j DROP"}
    # A default route by the uplink: every destination may leave there.
    default = RoutedBy([*ROUTES[family], ("0.0.0.0/0" if family == 4 else "::/0", "eth0")])
    assert _deciding(uplink, family, default) == {
        f"drop by iptables IPv{family} filter: -A DOCKER-USER -o eth0 -j DROP"}


def test_the_bridge_drop_meets_the_pods_when_the_node_routes_them_by_the_bridge() -> None:
    text = docker28(4)
    assert _deciding(text, 4, RoutedBy([*ROUTES[4], ("10.42.1.0/24", "docker0")])) == {
        "drop by iptables IPv4 filter: -A DOCKER ! -i docker0 -o docker0 -j DROP"}
    # A route whose device is not known (multipath, nexthop object) may leave by docker0.
    assert _deciding(text, 4, RoutedBy([*ROUTES[4], ("0.0.0.0/0", None)])) == {
        "drop by iptables IPv4 filter: -A DOCKER ! -i docker0 -o docker0 -j DROP"}
    # A device no route names may get any route when it comes up.
    assert _deciding(text.replace("docker0", "docker9"), 4, RoutedBy(ROUTES[4])) == {
        "drop by iptables IPv4 filter: -A DOCKER ! -i docker9 -o docker9 -j DROP"}


def test_a_wildcard_out_interface_covers_every_bridge_it_names() -> None:
    others = [(net, dev) for net, dev in ROUTES[4] if dev != "br-int"]
    routed = RoutedBy([*others, ("172.18.0.0/16", "br-1"), ("172.19.0.0/16", "br-2")])
    assert [str(n) for n in routed.cover(4, "br-+") or ()] == ["172.18.0.0/15"]
    text = _filter("ACCEPT", "-A FORWARD -o br-+ -j DROP", ())
    assert _deciding(text, 4, routed) == set()
    # IPv6 link-local and multicast routes are never a forwarded connection's way.
    assert [str(n) for n in RoutedBy(ROUTES[6]).cover(6, "docker0") or ()] == [
        "fd00:d0c::/64"]


def test_a_bridge_without_a_global_ipv6_address_forwards_nothing_the_pods_send() -> None:
    # Docker's ip6tables rules beside a docker0 that has only its link-local route.
    routes = [(net, dev) for net, dev in ROUTES[6] if not str(net).startswith("fd00:d0c")]
    assert [str(n) for n in RoutedBy(routes).cover(6, "docker0") or ()] == ["fe80::/64"]
    assert _deciding(docker28(6), 6, RoutedBy(routes)) == set()


def test_a_mangle_drop_by_out_interface_is_narrowed_too() -> None:
    text = ("*mangle\n:PREROUTING ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n"
            ":POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -o docker0 -j DROP\nCOMMIT\n")
    blocks = path_blocks(parse_save(text).get("mangle"), 4, routed=RoutedBy(ROUTES[4]))
    assert not any(isinstance(b, ForwardBlock) and b.decides(r)
                   for b in blocks for r in _wanted(4))




def _bridge(node: str) -> None:
    for name, addresses in (("docker0", BRIDGE), ("br-int", INTERNAL)):
        run_in(node, ["ip", "link", "add", name, "type", "bridge"])
        for family in (4, 6):
            run_in(node, ["ip", f"-{family}", "addr", "add", addresses[family][0], "dev", name])
        run_in(node, ["ip", "link", "set", name, "up"])  # no port: linkdown, routes kept


def _desired() -> State:
    objects: list[NetObject] = []
    for family in (4, 6):
        objects.append(ForwardRule(POD[family], DB[family], out_interface="eth0"))
        objects.append(MasqueradeRule(POD[family], destination=DB[family], out_interface="eth0"))
    return State(owned=objects)


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_pods_reach_the_database_beside_dockers_rules_and_no_conflict_is_said(
        lab: SeedLab, mode: str, layout: str) -> None:

    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
                      "net.ipv6.conf.all.forwarding=1"])
    _bridge(lab.node)
    for family in (4, 6):
        tool = f"{'ip' if family == 4 else 'ip6'}tables-{mode}-restore"
        run_in(lab.node, [tool], input_text=LAYOUTS[layout](family))
    with IptablesBackend(lab.node, mode=mode) as backend:  # type: ignore[arg-type]
        first = plan(backend.observe(), _desired())
        assert not first.conflicts, first.render()
        backend.apply(first)
        assert plan(backend.observe(), _desired()).changes == ()
        for family in (4, 6):  # real packets, Docker's drop in place before k3snet's jump
            probe = lab.tcp_probe(family)
            assert probe.ok, (family, probe.error)
        # An administrator's drop on the uplink, in DOCKER-USER: dropped, and said so.
        for family in (4, 6):
            run_in(lab.node, [f"{'ip' if family == 4 else 'ip6'}tables-{mode}", "-w",
                              "-I", "DOCKER-USER", "-o", "eth0", "-j", "DROP"])
        for family in (4, 6):  # the probe ended the moment that drop counts its packet
            save = f"{'ip' if family == 4 else 'ip6'}tables-{mode}-save"
            assert dropped(lab, family, iptables_count(
                lab.node, save, "filter", "-A DOCKER-USER -o eth0 -j DROP"))
        after = plan(backend.observe(), _desired())
        assert {(n.wanted.family, getattr(n.foreign, "rule", None))
                for n in after.conflicts} == {
            (4, "-A DOCKER-USER -o eth0 -j DROP"), (6, "-A DOCKER-USER -o eth0 -j DROP")}, \
            after.render()


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_nftables_backend_gives_the_same_verdict_on_dockers_iptables_nft_tables(
        lab: SeedLab, layout: str) -> None:
    """The nftables backend reads iptables-nft's tables as other tables: Docker's drops
    there name no address and are no block, and with FORWARD's policy at ACCEPT (Docker
    leaves it so on a node that forwards already) nothing is a default it cannot open:
    no conflict and no warning, as the iptables backend now says; the pods connect."""
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415

    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
                      "net.ipv6.conf.all.forwarding=1"])
    _bridge(lab.node)
    for family in (4, 6):
        tool = f"{'ip' if family == 4 else 'ip6'}tables-nft-restore"
        text = LAYOUTS[layout](family).replace(":FORWARD DROP", ":FORWARD ACCEPT")
        run_in(lab.node, [tool], input_text=text)
    with NftablesBackend(lab.node) as backend:
        backend.expect(_desired())
        first = plan(backend.observe(), _desired())
        assert not first.conflicts, first.render()
        assert backend.warnings == (), backend.warnings
        backend.apply(first)
        for family in (4, 6):
            probe = lab.tcp_probe(family)
            assert probe.ok, (family, probe.error)


@pytest.mark.kernel
def test_the_routes_are_read_once_by_an_observe_that_judges_such_a_drop_and_never_else(
        ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from k3snet.backends.routed import read_routes  # noqa: PLC0415

    reads: list[int] = []

    def counted(driver: object) -> object:
        reads.append(1)
        return read_routes(driver)  # type: ignore[arg-type]

    monkeypatch.setattr("k3snet.backends.iptables.backend.read_routes", counted)
    run_in(ns, ["ip", "link", "add", "docker0", "type", "bridge"])
    run_in(ns, ["ip", "addr", "add", BRIDGE[4][0], "dev", "docker0"])
    run_in(ns, ["ip", "link", "set", "docker0", "up"])
    with IptablesBackend(ns, mode="nft") as backend:
        backend.observe()
        assert reads == []  # no drop by out-interface: no dump
        for family in (4, 6):
            tool = f"{'ip' if family == 4 else 'ip6'}tables-nft-restore"
            run_in(ns, [tool], input_text=docker28(family))
        observed = backend.observe()
        assert reads == [1]  # one dump for both families' tables
        (block,) = [b for b in observed.foreign if isinstance(b, ForwardBlock)
                    and b.family == 4 and "docker0 -j DROP" in b.rule]
        assert str(block.destination) == BRIDGE[4][1]
        backend.observe()  # served from the last read: the change token has not moved
        assert reads == [1]


@pytest.mark.kernel
def test_the_nftables_backend_reads_the_routes_once_when_it_judges_such_a_drop_and_never_else(
        ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415
    from k3snet.backends.routed import read_routes  # noqa: PLC0415

    reads: list[int] = []

    def counted(driver: object) -> object:
        reads.append(1)
        return read_routes(driver)  # type: ignore[arg-type]

    monkeypatch.setattr("k3snet.backends.nftables.backend.read_routes", counted)
    run_in(ns, ["ip", "link", "add", "docker0", "type", "bridge"])
    run_in(ns, ["ip", "addr", "add", BRIDGE[4][0], "dev", "docker0"])
    run_in(ns, ["ip", "link", "set", "docker0", "up"])
    with NftablesBackend(ns) as backend:
        backend.observe()
        assert reads == []  # no drop by interface alone: no dump
        for family in (4, 6):
            tool = f"{'ip' if family == 4 else 'ip6'}tables-nft-restore"
            run_in(ns, [tool], input_text=docker28(family))
        observed = backend.observe()
        assert reads == [1]  # one dump for both families' tables
        (block,) = [b for b in observed.foreign if isinstance(b, ForwardBlock)
                    and b.family == 4 and b.out_interface == "docker0"]
        assert str(block.destination) == BRIDGE[4][1]
        backend.observe()  # served from the last read: the generation id has not moved
        assert reads == [1]


@pytest.mark.kernel
@pytest.mark.lab
def test_the_nftables_backend_says_something_of_an_address_less_drop_on_the_uplink(
        lab: SeedLab) -> None:
    """``iptables -I DOCKER-USER -o eth0 -j DROP`` drops the pods' connections: the
    nftables backend says so too, as the iptables backend does (a conflict, above), from
    the routes by eth0 (the default route: any destination), while Docker's own drops
    there stay silent (the verdict above)."""
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415

    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    _bridge(lab.node)
    text = docker28(4).replace(":FORWARD DROP", ":FORWARD ACCEPT")
    run_in(lab.node, ["iptables-nft-restore"], input_text=text)
    run_in(lab.node, ["iptables-nft", "-I", "DOCKER-USER", "-o", "eth0", "-j", "DROP"])
    wanted = State(owned=[ForwardRule(POD[4], DB[4], out_interface="eth0"),
                          MasqueradeRule(POD[4], destination=DB[4], out_interface="eth0")])
    with NftablesBackend(lab.node) as backend:
        backend.expect(wanted)
        first = plan(backend.observe(), wanted)
        backend.apply(first)
        assert dropped(lab, 4, iptables_count(  # the kernel drops them
            lab.node, "iptables-nft-save", "filter", "-A DOCKER-USER -o eth0 -j DROP"))
        assert first.conflicts, first.render()
        assert "DOCKER-USER" in first.render(), first.render()


# A node with Docker beside the pods: what leaves by another device than the uplink (the
# default route's) is cni0's, docker0's and br-int's, prefixes that no one prefix holds
# but every address.
WITH_DEFAULT = {4: [*ROUTES[4], ("0.0.0.0/0", "eth0")], 6: [*ROUTES[6], ("::/0", "eth0")]}
NOT_UPLINK = {4: {"10.42.0.0/24", "172.17.0.0/16", INTERNAL[4][1]},
              6: {"fd42:42::/64", "fd00:d0c::/64", INTERNAL[6][1]}}


@pytest.mark.parametrize("family", [4, 6])
def test_a_drop_of_what_leaves_by_another_device_than_the_uplink_beside_docker_is_no_conflict(
        family: int) -> None:
    """``-i cni0 ! -o eth0 -j DROP`` (the pods leave by the uplink only) on a node with
    Docker: its destinations are the routes of cni0, docker0 and br-int, one block each;
    read as the one prefix holding them all (every address), the pods' connection to the
    database out by eth0 was a conflict."""
    text = _filter("ACCEPT", "-A FORWARD -i cni0 ! -o eth0 -j DROP", ())
    routed = RoutedBy(WITH_DEFAULT[family])
    assert _deciding(text, family, routed) == set()
    dump = parse_save(text).get("filter")
    assert dump is not None
    found = foreign_blocks(dump, family, 1, routed=routed)
    assert {str(b.destination) for b in found if isinstance(b, ForwardBlock)} == (
        NOT_UPLINK[family])
    # A drop of all that leaves by another device (the replies to the pods, by cni0).
    text = _filter("ACCEPT", "-A FORWARD ! -o eth0 -j DROP", ())
    assert _deciding(text, family, routed) == {
        f"drop by iptables IPv{family} filter: -A FORWARD ! -o eth0 -j DROP"}


@pytest.mark.parametrize("family", [4, 6])
def test_the_nftables_backend_reads_that_drop_as_one_block_per_prefix_too(family: int) -> None:
    from k3snet.backends.nftables.parse import ForeignReader  # noqa: PLC0415
    from tests.nftables.test_foreign_cases import (  # noqa: PLC0415
        DROP,
        Kernel,
        jump,
        meta,
    )

    proto = "ip" if family == 4 else "ip6"
    rule = [meta("iifname", "cni0"), meta("oifname", "eth0", "!="), DROP]
    kernel = Kernel({(proto, "filter", "FORWARD"): ("forward", "accept", [[jump("X")]]),
                     (proto, "filter", "X"): (None, "", [rule])})
    found = [o for o in ForeignReader(kernel, frozenset(),
                                      routed=RoutedBy(WITH_DEFAULT[family])).read()
             if isinstance(o, ForwardBlock)]
    assert {str(b.destination) for b in found} == NOT_UPLINK[family]
    assert not any(b.decides(rule) for b in found for rule in _wanted(family))


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("backend_name", ["nft", "legacy", "nftables"])
def test_the_pods_pass_a_drop_of_what_leaves_by_another_device_beside_docker_and_no_conflict_is_said(  # noqa: E501
        lab: SeedLab, backend_name: str) -> None:
    """The kernel's own verdict on ``-i cni0 ! -o eth0 -j DROP`` with docker0 up: the pods'
    connections to the database pass, both families, and neither backend says a
    conflict (iptables-nft, iptables-legacy, or the nft rule the nftables backend reads)."""
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415

    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
                      "net.ipv6.conf.all.forwarding=1"])
    _bridge(lab.node)
    if backend_name == "nftables":
        run_in(lab.node, ["nft", "-f", "-"], input_text=(
            "table inet fw {\n chain forward {\n  type filter hook forward priority 0\n"
            '  iifname "cni0" oifname != "eth0" drop\n }\n}\n'))
        assert 'oifname != "eth0" drop' in run_in(lab.node, ["nft", "list", "ruleset"]).stdout
        backend: IptablesBackend | NftablesBackend = NftablesBackend(lab.node)
    else:
        for family in (4, 6):
            tool = f"{'ip' if family == 4 else 'ip6'}tables-{backend_name}"
            run_in(lab.node, [tool, "-w", "-A", "FORWARD", "-i", "cni0", "!", "-o", "eth0",
                              "-j", "DROP"])
            saved = run_in(lab.node, [f"{tool}-save", "-t", "filter"]).stdout
            assert "-A FORWARD -i cni0 ! -o eth0 -j DROP" in saved  # the kernel's view
        backend = IptablesBackend(lab.node, mode=backend_name)  # type: ignore[arg-type]
    with backend:
        if isinstance(backend, NftablesBackend):
            backend.expect(_desired())
        first = plan(backend.observe(), _desired())
        assert not first.conflicts, first.render()
        backend.apply(first)
        for family in (4, 6):
            probe = lab.tcp_probe(family)
            assert probe.ok, (family, probe.error)
