"""A foreign drop naming an interface and no address, judged by the node's routes.

A forwarded packet leaves by the device its destination is routed by, and comes in by
the one its source is: ``oifname "docker0" drop`` meets only docker0's subnet, never the
pods' connections, while ``oifname "eth0" drop`` on the uplink holding the default route
meets any destination. The nftables backend read such a drop as nothing (the pods'
connections dropped by ``iptables -I DOCKER-USER -o eth0 -j DROP``, no conflict, no
warning); it now reads it as the iptables backend does
(:class:`~k3snet.backends.routed.RoutedBy`). The kernel case with real packets is in
``tests/iptables/test_docker.py``.
"""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from k3snet.backends.nftables.parse import ForeignReader
from k3snet.backends.routed import RoutedBy
from k3snet.cli import main
from k3snet.lab import SeedLab
from k3snet.lab.netns import run_in
from k3snet.model import ForwardBlock, ForwardRule, NetObject, State
from k3snet.planner import plan
from tests.nftables.test_foreign_cases import ACCEPT, DROP, Expr, Kernel, daddr, jump, meta

ROUTES = RoutedBy([("172.17.0.0/16", "docker0"), ("0.0.0.0/0", "eth0"),
                   ("10.42.0.0/24", "cni0"), ("192.0.2.0/24", "br-int"),
                   ("fd17::/64", "docker0"), ("::/0", "eth0")])
POD = "10.42.0.0/16"
DB = "192.168.2.0/24"
SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"


def docker_user(*rules: list[Expr], family: str = "ip") -> Kernel:
    """iptables-nft's filter FORWARD jumping to DOCKER-USER, which holds ``rules``."""
    return Kernel({(family, "filter", "FORWARD"): ("forward", "accept", [[jump("DOCKER-USER")]]),
                   (family, "filter", "DOCKER-USER"): (None, "", list(rules))})


def blocks(kernel: Kernel, routed: RoutedBy | None = ROUTES) -> set[NetObject]:
    found = ForeignReader(kernel, frozenset(), routed=routed).read()
    return {o for o in found if isinstance(o, ForwardBlock)}


def block(text: str, family: int = 4, **fields: Any) -> ForwardBlock:
    return ForwardBlock(family, "drop", text, "nftables ip filter DOCKER-USER"
                        if family == 4 else "nftables ip6 filter DOCKER-USER", **fields)


def test_a_drop_on_the_uplink_holding_the_default_route_meets_any_destination() -> None:
    found = blocks(docker_user([meta("oifname", "eth0"), DROP]))
    assert found == {block("oifname eth0 drop", out_interface="eth0")}
    wanted = State(owned=[ForwardRule(POD, DB, out_interface="eth0")])
    assert plan(State(foreign=list(found)), wanted).conflicts


def test_a_drop_on_dockers_bridge_meets_only_what_the_node_routes_by_it() -> None:
    # Docker 28's `-A DOCKER ! -i docker0 -o docker0 -j DROP`, read through nft.
    found = blocks(docker_user([meta("iifname", "docker0", "!="), meta("oifname", "docker0"),
                                DROP]))
    assert found == {block("iifname != docker0 oifname docker0 drop",
                           destination="172.17.0.0/16", out_interface="docker0")}
    wanted = State(owned=[ForwardRule(POD, DB, out_interface="eth0")])
    assert not plan(State(foreign=list(found)), wanted).conflicts


def test_a_drop_by_in_interface_meets_the_sources_the_node_routes_by_it() -> None:
    # Docker 28's internal network: `! -d 192.0.2.0/24 -i br-int -j DROP`.
    found = blocks(docker_user([daddr("192.0.2.0/24", neg=True), meta("iifname", "br-int"),
                                DROP]))
    assert found == {block("ip daddr != 192.0.2.0/24 iifname br-int drop",
                           source="192.0.2.0/24", in_interface="br-int")}


def test_an_ipv6_drop_is_judged_with_the_ipv6_routes() -> None:
    found = blocks(docker_user([meta("oifname", "docker0"), DROP], family="ip6"))
    assert found == {block("oifname docker0 drop", family=6, destination="fd17::/64",
                           out_interface="docker0")}


def test_a_device_no_route_names_may_get_any_route_later() -> None:
    found = blocks(docker_user([meta("oifname", "br-new"), DROP]))
    assert found == {block("oifname br-new drop", out_interface="br-new")}


def test_without_the_routes_such_a_drop_is_no_block_as_before() -> None:
    # A replaced kernel seam reads no routes: no block (defaults judge the base chains).
    assert blocks(docker_user([meta("oifname", "eth0"), DROP]), routed=None) == set()


def test_a_drop_naming_neither_an_address_nor_an_interface_is_still_no_block() -> None:
    assert blocks(docker_user([DROP])) == set()


def test_an_inet_tables_drop_is_judged_in_each_family_with_its_routes() -> None:
    # It was no block at all (a warning of a default at most), while an ip or ip6
    # table's was a conflict on the uplink and nothing on Docker's bridge.
    def inet(text: str, family: int, **fields: Any) -> ForwardBlock:
        return ForwardBlock(family, "drop", text, "nftables inet filter DOCKER-USER",
                            **fields)

    uplink = blocks(docker_user([meta("oifname", "eth0"), DROP], family="inet"))
    assert uplink == {inet("oifname eth0 drop", 4, out_interface="eth0"),
                      inet("oifname eth0 drop", 6, out_interface="eth0")}
    for family, db in ((4, DB), (6, "fd00:db::/64")):
        wanted = State(owned=[ForwardRule(POD if family == 4 else "fd42::/48", db,
                                          out_interface="eth0")])
        assert plan(State(foreign=list(uplink)), wanted).conflicts
    bridge = blocks(docker_user([meta("oifname", "docker0"), DROP], family="inet"))
    assert bridge == {
        inet("oifname docker0 drop", 4, destination="172.17.0.0/16", out_interface="docker0"),
        inet("oifname docker0 drop", 6, destination="fd17::/64", out_interface="docker0")}
    wanted = State(owned=[ForwardRule(POD, DB, out_interface="eth0"),
                          ForwardRule("fd42::/48", "fd00:db::/64", out_interface="eth0")])
    assert not plan(State(foreign=list(bridge)), wanted).conflicts
    # with an address, its family is the address's, as before
    assert {b.family for b in blocks(docker_user([daddr(DB), DROP], family="inet"))} == {4}


def test_a_drop_reached_through_a_jump_testing_the_same_interface_is_judged_by_it() -> None:
    # Docker 28: `-A DOCKER-BRIDGE -o docker0 -j DOCKER`, then the drop in DOCKER: the
    # name tested twice on the way is one interface, not "two interfaces, any".
    kernel = Kernel({
        ("ip", "filter", "FORWARD"): ("forward", "accept", [[jump("DOCKER-BRIDGE")]]),
        ("ip", "filter", "DOCKER-BRIDGE"): (None, "", [[meta("oifname", "docker0"),
                                                         jump("DOCKER")]]),
        ("ip", "filter", "DOCKER"): (None, "", [[meta("iifname", "docker0", "!="),
                                                  meta("oifname", "docker0"), DROP]])})
    assert blocks(kernel) == {ForwardBlock(
        4, "drop", "iifname != docker0 oifname docker0 oifname docker0 drop",
        "nftables ip filter DOCKER", destination="172.17.0.0/16", out_interface="docker0")}


_INET_DROP = ("add table inet fw\n"
              "add chain inet fw pass {{ type filter hook forward priority 0; policy accept; }}\n"
              "add rule inet fw pass oifname {} drop\n")


@pytest.mark.kernel
@pytest.mark.lab
def test_an_inet_tables_drop_by_interface_drops_exactly_where_the_plan_says_so(
        require_root: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The seed lab fixed by k3snet (netlink + nftables), then another ``inet`` table's
    forward chain dropping by out-interface alone: on the uplink the pods' connections of
    both families are dropped and the plan names the conflict of each; on a bridge whose
    routes the pods' traffic never takes they connect and the plan is clean."""
    with SeedLab.create() as lab:
        monkeypatch.setenv("K3SNET_STATE_DIR", str(lab.state_dir))
        _applied(lab)
        # a bridge-like device of the node's own (a veth pair within it: no dummy module)
        run_in(lab.node, ["ip", "link", "add", "d0", "type", "veth", "peer", "name", "d0p"])
        run_in(lab.node, ["ip", "link", "set", "d0p", "up"])
        run_in(lab.node, ["ip", "addr", "add", "172.17.0.1/16", "dev", "d0"])
        run_in(lab.node, ["ip", "addr", "add", "fd17::1/64", "dev", "d0", "nodad"])
        run_in(lab.node, ["ip", "link", "set", "d0", "up"])
        for device, dropped in (("eth0", True), ("d0", False)):
            run_in(lab.node, ["nft", "-f", "-"], input_text=_INET_DROP.format(device))
            try:
                # Both families at once: dropped, they wait out their timeout together.
                with ThreadPoolExecutor(2) as pool:
                    probes = [pool.submit(lab.tcp_probe, f, timeout=1.0) for f in (4, 6)]
                    reached = [probe.result().ok for probe in probes]
                assert reached == [not dropped] * 2
                capsys.readouterr()
                code = main(["plan", "-f", str(SEED), "--netns", lab.node])
                out = capsys.readouterr().out
            finally:
                run_in(lab.node, ["nft", "delete", "table", "inet", "fw"])
            conflicts = [line for line in out.splitlines() if line.startswith("! ")]
            if dropped:
                assert code == 4, out
                assert sorted(conflicts) == [
                    "! forward accept 10.42.0.0/16 -> 192.168.2.0/24 oif eth0 (+ replies)",
                    "! forward accept fd42:42::/56 -> fd01:2::/64 oif eth0 (+ replies)"], out
                assert "drop by nftables inet fw pass: oifname eth0 drop" in out
            else:
                assert code == 0, out
                assert conflicts == [], out


def test_an_inet_tables_rule_that_stops_no_packet_is_not_copied_to_be_judged_per_family(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Every rule the walk reaches in an inet table (firewalld's, thousands of accepts) was
    # copied once per family (dataclasses.replace, ~15 us a rule) only for _block_of to
    # find it no drop: a cold read of 4 096 such rules spent ~57 ms more.
    copied: list[object] = []
    real = dataclasses.replace

    def counting(obj: Any, **changes: Any) -> Any:
        copied.append(obj)
        return real(obj, **changes)

    monkeypatch.setattr(dataclasses, "replace", counting)
    accepts = Kernel({("inet", "filter", "FORWARD"): (
        "forward", "accept", [[meta("iifname", f"veth{i}"), ACCEPT] for i in range(20)])})
    assert blocks(accepts) == set()
    assert copied == []
    # a drop still is, in each family
    assert len(blocks(docker_user([meta("oifname", "eth0"), DROP], family="inet"))) == 2



# A node of K3s alone: the pods on cni0, the other nodes' by flannel.1, the uplink eth0.
K3S_ROUTES = RoutedBy([("10.42.0.0/24", "cni0"), ("10.42.1.0/24", "flannel.1"),
                       ("0.0.0.0/0", "eth0"), ("fd42:42::/64", "cni0"), ("::/0", "eth0")])


@pytest.mark.parametrize(("proto", "rule", "fields", "decides"), [
    # the pods leave by the uplink only: what the node routes by cni0 and flannel.1
    ("ip", [meta("iifname", "cni0"), meta("oifname", "eth0", "!=")],
     {"source": "10.42.0.0/24", "destination": "10.42.0.0/23", "in_interface": "cni0"}, False),
    ("ip6", [meta("iifname", "cni0"), meta("oifname", "eth0", "!=")],
     {"source": "fd42:42::/64", "destination": "fd42:42::/64", "in_interface": "cni0"}, False),
    ("ip", [meta("iifname", "eth*", "!="), meta("oifname", "cni0")],
     {"source": "10.42.0.0/23", "destination": "10.42.0.0/24", "out_interface": "cni0"}, False),
    # the replies to the pods leave by cni0: met
    ("ip", [meta("oifname", "eth0", "!=")], {"destination": "10.42.0.0/23"}, True),
    ("ip6", [meta("oifname", "eth0", "!=")], {"destination": "fd42:42::/64"}, True),
    # the default route's device let through: any destination
    ("ip", [meta("oifname", "cni0", "!=")], {}, True),
])
def test_a_drop_by_a_negated_interface_meets_what_the_node_routes_by_the_other_devices(
        proto: str, rule: list[Expr], fields: dict[str, str], decides: bool) -> None:
    """``iifname "cni0" oifname != "eth0" drop`` meets what leaves by another device than
    eth0: not the pods' connection out by the default route, nor its replies; it was read
    as a drop of any destination, a conflict. ``oifname != "eth0" drop`` still meets the
    replies going out by cni0."""
    found = blocks(docker_user([*rule, DROP], family=proto), routed=K3S_ROUTES)
    family = 4 if proto == "ip" else 6
    (got,) = found
    text = " ".join(f"{m['match']['left']['meta']['key']} "
                    f"{'!= ' if m['match']['op'] == '!=' else ''}{m['match']['right']}"
                    for m in rule)
    assert got == block(f"{text} drop", family=family, **fields)
    pod, db = (POD, DB) if family == 4 else ("fd42:42::/56", "fd01:2::/64")
    assert got.decides(ForwardRule(pod, db)) is decides


_NEGATED_DROP = ("add table inet fw\n"
                 "add chain inet fw pass {{ type filter hook forward priority 0; "
                 "policy accept; }}\n"
                 "add rule inet fw pass {} drop\n")


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize(("rule", "dropped"), [
    ('iifname "cni0" oifname != "eth0"', False),  # the pods leave by the uplink only
    ('oifname != "eth0"', True),  # the replies to the pods leave by cni0
])
def test_a_drop_by_a_negated_out_interface_drops_exactly_where_the_plan_says_so(
        require_root: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], rule: str, dropped: bool) -> None:
    """The seed lab fixed by k3snet, then another ``inet`` table's forward chain dropping
    by a negated out-interface: ``iifname "cni0" oifname != "eth0" drop`` lets the pods'
    connections of both families through eth0 and the plan is clean (it was a conflict,
    exit 4); ``oifname != "eth0" drop`` drops their replies out by cni0, a conflict."""
    with SeedLab.create() as lab:
        monkeypatch.setenv("K3SNET_STATE_DIR", str(lab.state_dir))
        _applied(lab)
        run_in(lab.node, ["nft", "-f", "-"], input_text=_NEGATED_DROP.format(rule))
        listed = json.loads(run_in(lab.node, ["nft", "-j", "list", "chain", "inet", "fw",
                                              "pass"]).stdout)
        (expr,) = [o["rule"]["expr"] for o in listed["nftables"] if "rule" in o]
        assert {"match": {"op": "!=", "left": {"meta": {"key": "oifname"}},
                          "right": "eth0"}} in expr  # the kernel's own view
        with ThreadPoolExecutor(2) as pool:
            probes = [pool.submit(lab.tcp_probe, f, timeout=1.0 if dropped else 2.0)
                      for f in (4, 6)]
            reached = [probe.result().ok for probe in probes]
        assert reached == [not dropped] * 2
        capsys.readouterr()
        code = main(["plan", "-f", str(SEED), "--netns", lab.node])
        out = capsys.readouterr().out
        conflicts = [line for line in out.splitlines() if line.startswith("! ")]
        if dropped:
            assert code == 4, out
            assert sorted(conflicts) == [
                "! forward accept 10.42.0.0/16 -> 192.168.2.0/24 oif eth0 (+ replies)",
                "! forward accept fd42:42::/56 -> fd01:2::/64 oif eth0 (+ replies)"], out
        else:
            assert code == 0, out
            assert conflicts == [], out


@pytest.mark.parametrize("proto", ["ip", "ip6"])
@pytest.mark.parametrize("way", ["jump", "rule"])
def test_a_drop_whose_interface_a_negated_wildcard_leaves_out_meets_no_packet(
        proto: str, way: str) -> None:
    """``oifname != "eth*" jump X`` then ``oifname "eth0" drop`` in X (or both tests in
    one rule): eth0 is one of eth*, no packet passes both, as the iptables backend reads
    ``! -o eth+`` on the way to ``-o eth0``. Compared as text, it was a drop of any
    destination out by the uplink: a conflict of the pods' forward rule."""
    negated, named = meta("oifname", "eth*", "!="), meta("oifname", "eth0")
    chain = [[negated, jump("X")]] if way == "jump" else [[negated, named, DROP]]
    kernel = Kernel({(proto, "filter", "FORWARD"): ("forward", "accept", chain),
                     (proto, "filter", "X"): (None, "", [[named, DROP]])})
    assert blocks(kernel, routed=K3S_ROUTES) == set()
    # a negated wildcard leaving the name in still lets the drop through
    kernel = Kernel({(proto, "filter", "FORWARD"): (
        "forward", "accept", [[meta("oifname", "veth*", "!="), named, DROP]])})
    assert len(blocks(kernel, routed=K3S_ROUTES)) == 1


_WILDCARD_GUARD = ("add table inet fw\n"
                   "add chain inet fw pass { type filter hook forward priority 0; "
                   "policy accept; }\n"
                   "add chain inet fw X\n"
                   'add rule inet fw pass oifname != "eth*" jump X\n'
                   'add rule inet fw X oifname "eth0" drop\n')


@pytest.mark.kernel
@pytest.mark.lab
def test_a_drop_behind_a_negated_wildcard_holding_its_name_is_no_conflict_as_in_the_kernel(
        require_root: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The seed lab fixed by k3snet, then ``oifname != "eth*" jump X`` and ``oifname
    "eth0" drop`` in X: the kernel lets the pods' connections of both families out by
    eth0, and the plan is clean (it was a conflict in both, exit 4)."""
    with SeedLab.create() as lab:
        monkeypatch.setenv("K3SNET_STATE_DIR", str(lab.state_dir))
        _applied(lab)
        run_in(lab.node, ["nft", "-f", "-"], input_text=_WILDCARD_GUARD)
        listed = json.loads(run_in(lab.node, ["nft", "-j", "list", "chain", "inet", "fw",
                                              "pass"]).stdout)
        (expr,) = [o["rule"]["expr"] for o in listed["nftables"] if "rule" in o]
        assert {"match": {"op": "!=", "left": {"meta": {"key": "oifname"}},
                          "right": "eth*"}} in expr  # the kernel's own view
        with ThreadPoolExecutor(2) as pool:
            probes = [pool.submit(lab.tcp_probe, f, timeout=2.0) for f in (4, 6)]
            assert [probe.result().ok for probe in probes] == [True, True]
        capsys.readouterr()
        code = main(["plan", "-f", str(SEED), "--netns", lab.node])
        out = capsys.readouterr().out
        assert code == 0, out
        assert [line for line in out.splitlines() if line.startswith("! ")] == [], out


# An anonymous set of names after `!=` (`oifname != { "eth0", "eth1" }`): the name is
# none of them. It was read as a test k3snet does not model, the drop as no block and
# not even a default (no address, no interface): the pods' connections dropped, `plan`
# clean. Each case: its rules, whether the kernel drops the pods' connections.
NAME_SETS: dict[str, tuple[tuple[str, ...], bool]] = {
    "the replies leave by cni0, in no set": (('oifname != { "eth0", "eth1" }',), True),
    "the pods leave by eth0, in no set": (('oifname != { "lo", "cni0" }',), True),
    "the replies come in by eth0, in no set": (('iifname != { "lo", "eth1" }',), True),
    "the pods by cni0 leave by eth0, in the set": (
        ('iifname "cni0" oifname != { "eth0", "eth1" }',), False),
    # A set without `!=`: one of the names (read as one rule per name).
    "the replies leave by cni0, in the set": (('oifname { "lo", "cni0" }',), True),
    "addresses: the pods' destinations and their own in the sets": (
        ("ip daddr != { 192.168.2.0/24, 10.42.0.0/16 }",
         "ip6 daddr != { fd01:2::/64, fd42:42::/56 }"), False),
}


def test_a_negated_set_of_names_is_read_as_a_negated_test_of_each() -> None:
    found = blocks(docker_user([{"match": {"op": "!=", "left": {"meta": {"key": "oifname"}},
                                           "right": {"set": ["eth0", "docker0", "br-int"]}}},
                                DROP]))
    (got,) = found
    assert got.rule == "oifname != eth0 oifname != docker0 oifname != br-int drop"
    assert str(got.destination) == "10.42.0.0/24"  # what the node routes by the others: cni0


@pytest.mark.kernel
@pytest.mark.lab
def test_a_drop_by_a_set_of_names_is_a_conflict_exactly_where_the_kernel_drops(
        require_root: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    seen: dict[str, tuple[bool, bool]] = {}
    with SeedLab.create() as lab:
        monkeypatch.setenv("K3SNET_STATE_DIR", str(lab.state_dir))
        _applied(lab)
        for case, (rules, _) in NAME_SETS.items():
            run_in(lab.node, ["nft", "-f", "-"], input_text="add table inet fw\n"
                   "add chain inet fw pass { type filter hook forward priority 0; "
                   "policy accept; }\n" + "".join(f"add rule inet fw pass {r} drop\n"
                                                 for r in rules))
            try:
                listed = json.loads(run_in(lab.node, ["nft", "-j", "list", "chain", "inet",
                                                      "fw", "pass"]).stdout)
                tests = [m["match"] for o in listed["nftables"] if "rule" in o
                         for m in o["rule"]["expr"] if "match" in m]
                assert any("set" in t["right"] for t in tests)  # the kernel's view
                reached, code, out = _probed_and_planned(lab, capsys)
            finally:
                run_in(lab.node, ["nft", "delete", "table", "inet", "fw"])
            assert reached in ([False, False], [True, True]), (case, reached)
            assert code in (0, 4), (case, out)
            seen[case] = (not reached[0], code == 4)
    assert seen == {case: (dropped, dropped) for case, (_, dropped) in NAME_SETS.items()}


def _applied(lab: SeedLab) -> None:
    """Apply the seed spec on the lab's node. The probes that follow, bounded by 1 s, need
    no connection first: the lab returns once the kernel gave every link its IPv6 routes
    (a first IPv6 probe made before failed its 1 s, its neighbour solicitation dropped)."""
    assert main(["apply", "-f", str(SEED), "--netns", lab.node]) == 0


def _probed_and_planned(lab: SeedLab, capsys: pytest.CaptureFixture[str]
                        ) -> tuple[list[bool], int, str]:
    """Whether a pod's TCP probe over IPv4 and IPv6 got through, then `k3snet plan`'s
    exit code and output on the lab's node."""
    with ThreadPoolExecutor(2) as pool:
        probes = [pool.submit(lab.tcp_probe, f, timeout=1.0) for f in (4, 6)]
        reached = [probe.result().ok for probe in probes]
    capsys.readouterr()
    code = main(["plan", "-f", str(SEED), "--netns", lab.node])
    return reached, code, capsys.readouterr().out


# A named set of names (`oifname != @uplinks`; nft's JSON writes `"right": "@uplinks"`)
# was read as a device named "@uplinks": `iifname "cni0" oifname != @uplinks drop` was a
# conflict (any device but "@uplinks": every address), while the kernel let the pods'
# connections out by eth0 through; `oifname != @uplinks accept` before a policy drop took
# every packet, so `plan` was clean while the kernel dropped the pods' connections. Each
# case: the set's names, the chain's policy, its rules; whether the kernel drops the pods'
# connections.
NAMED_SETS: dict[str, tuple[str, str, tuple[str, ...], bool]] = {
    "the pods by cni0 leave by eth0, in the named set": (
        '"eth0", "eth1"', "accept", ('iifname "cni0" oifname != @s drop',), False),
    "the replies leave by cni0, in no named set": (
        '"eth0", "eth1"', "accept", ("oifname != @s drop",), True),
    "an accept of what leaves by no uplink, before a policy drop": (
        '"eth0"', "drop", ("ct state established,related accept", "oifname != @s accept"),
        True),
    "an accept of what leaves by the pods' uplink, before a policy drop": (
        '"eth0"', "drop", ("ct state established,related accept", "oifname @s accept"),
        False),
}


@pytest.mark.kernel
@pytest.mark.lab
def test_a_named_set_of_names_is_read_as_its_names_exactly_where_the_kernel_drops(
        require_root: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    seen: dict[str, tuple[bool, bool]] = {}
    with SeedLab.create() as lab:
        monkeypatch.setenv("K3SNET_STATE_DIR", str(lab.state_dir))
        _applied(lab)
        for case, (names, policy, rules, _) in NAMED_SETS.items():
            run_in(lab.node, ["nft", "-f", "-"], input_text=(
                "add table inet fw\n"
                f"add set inet fw s {{ type ifname; elements = {{ {names} }}; }}\n"
                "add chain inet fw pass { type filter hook forward priority 0; "
                f"policy {policy}; }}\n" + "".join(f"add rule inet fw pass {r}\n"
                                                   for r in rules)))
            try:
                listed = json.loads(run_in(lab.node, ["nft", "-j", "list", "chain", "inet",
                                                      "fw", "pass"]).stdout)
                tests = [m["match"] for o in listed["nftables"] if "rule" in o
                         for m in o["rule"]["expr"] if "match" in m]
                assert any(t["right"] == "@s" for t in tests)  # the kernel's view
                reached, code, out = _probed_and_planned(lab, capsys)
            finally:
                run_in(lab.node, ["nft", "delete", "table", "inet", "fw"])
            assert reached in ([False, False], [True, True]), (case, reached)
            assert code in (0, 4), (case, out)
            said = code == 4 or any(line.startswith("!! warning: nftables: inet fw chain pass")
                                    for line in out.splitlines())
            seen[case] = (not reached[0], said)
    assert seen == {case: (dropped, dropped) for case, (*_, dropped) in NAMED_SETS.items()}
