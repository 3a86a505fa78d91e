"""``pmtu-error-dropped`` for the node's own ICMP error, from captures: the node's route
to the destination carries ``mtu 1280`` below the pods' 1500, so the node answers the
pod's larger packets with fragmentation needed (Packet Too Big) itself; that error leaves
through the output chains, then postrouting. The kernel's side is
tests/doctor/test_own_pmtu_error_kernel.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from k3snet.doctor import Finding, Flow, NodeCapture, NodeState, Verdict, diagnose
from k3snet.doctor.routing import parse_locked_mtus, parse_routes


def _findings(*output: str, family: int = 4, nft: list[list[Any]] | None = None,
              table: str = "filter", priority: int = 0, raw: tuple[str, ...] = (),
              prerouting: tuple[str, ...] = (), masquerade: bool = True,
              routes_text: str | None = None) -> tuple[Verdict, list[Finding]]:
    """Pods on cni0, masqueraded (else routed back to them by the network beyond), every
    MTU 1500, the route to the destination ``mtu 1280``; the OUTPUT chain of ``output``
    in iptables' ``table`` (ip6tables' for ``family`` 6), the raw table's of ``raw``
    (its PREROUTING's of ``prerouting``), an inet table's output chain at ``priority``
    of ``nft``'s rules (each a rule's ``expr``, as ``nft -j`` prints it); ``routes_text``:
    the bundle's ``routes-v6.txt`` (None: none, a bundle made before it)."""
    v6 = family == 6
    cni, uplink = ("fd42::1", "fd01::5") if v6 else ("10.42.0.1", "192.168.1.5")
    addresses = [{"ifname": name, "mtu": 1500, "flags": ["UP"],
                  "addr_info": [{"local": local, "prefixlen": 64 if v6 else 24}]}
                 for name, local in (("cni0", cni), ("eth0", uplink))]
    routes = ([{"dst": "fd42::/64", "dev": "cni0"}, {"dst": "fd01::/64", "dev": "eth0"},
               {"dst": "default", "gateway": "fd01::1", "dev": "eth0",
                "metrics": [{"mtu": 1280}]}] if v6 else
              [{"dst": "10.42.0.0/24", "dev": "cni0", "scope": "link"},
               {"dst": "192.168.1.0/24", "dev": "eth0", "scope": "link"},
               {"dst": "default", "gateway": "192.168.1.1", "dev": "eth0",
                "metrics": [{"mtu": 1280}]}])
    pods = "fd42::/64" if v6 else "10.42.0.0/24"
    raw_table = ("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                 + "".join(f"-A PREROUTING {r}\n" for r in prerouting)
                 + "".join(f"-A OUTPUT {r}\n" for r in raw)
                 + "COMMIT\n") if raw or prerouting else ""
    masq = f"-A POSTROUTING -s {pods} -j MASQUERADE\n" if masquerade else ""
    save = (raw_table + f"*{table}\n:OUTPUT ACCEPT [0:0]\n"
            + "".join(f"-A OUTPUT {r}\n" for r in output)
            + f"COMMIT\n*nat\n:POSTROUTING ACCEPT [0:0]\n{masq}COMMIT\n")
    files = {"addr.json": json.dumps(addresses),
             f"routes-v{family}.json": json.dumps(routes),
             f"iptables-nft-v{family}.save": save,
             "sysctl.txt": "net.ipv6.conf.all.forwarding = 1\n" if v6
             else "net.ipv4.ip_forward = 1\n"}
    if routes_text is not None:
        files["routes-v6.txt"] = routes_text
    if nft is not None:
        chain = {"family": "inet", "table": "t", "name": "output", "handle": 1,
                 "type": "filter", "hook": "output", "prio": priority, "policy": "accept"}
        files["nft-ruleset.json"] = json.dumps({"nftables": [
            {"table": {"family": "inet", "name": "t", "handle": 1}}, {"chain": chain},
            *({"rule": {"family": "inet", "table": "t", "chain": "output",
                        "handle": 2 + n, "expr": expr}} for n, expr in enumerate(nft))]})
    state = NodeState.from_capture(NodeCapture.from_texts(files))
    flow = (Flow("fd42::10", "fd01:2::10", port=5432) if v6
            else Flow("10.42.0.10", "192.168.2.10", port=5432))
    d = diagnose(state, flow, upstream_routes_pods=not masquerade)
    assert "path-mtu" in [f.code for f in d.findings], d.render()
    return d.verdict, [f for f in d.findings if f.code == "pmtu-error-dropped"]


@pytest.mark.parametrize(("rule", "family"), [
    ("-p icmp -m icmp --icmp-type 3/4 -j DROP", 4),
    ("-p icmp -m icmp --icmp-type 3 -j REJECT", 4),
    ("-d 10.42.0.0/16 -p icmp -j DROP", 4),  # to the pods: the error's destination
    ("-o cni0 -j DROP", 4),  # the error leaves by the pods' interface
    ("-p ipv6-icmp -m icmp6 --icmpv6-type 2 -j DROP", 6),
])
def test_an_output_rule_matching_the_node_s_own_error_drops_it(rule: str, family: int) -> None:
    verdict, found = _findings(rule, family=family)
    assert verdict is Verdict.REACHES  # the flow's own packets never cross output
    (finding,) = found
    assert finding.severity == "warning"
    assert rule.partition(" -j ")[0] in finding.where
    assert "OUTPUT" in finding.where
    assert "the node sends" in finding.what


@pytest.mark.parametrize("rule", [
    "-p icmp -m icmp --icmp-type 3/3 -j DROP",  # port unreachable
    "-p tcp -j DROP",
    "-o eth0 -p icmp -j DROP",  # the error leaves by cni0
    "-m conntrack --ctstate RELATED -j ACCEPT\n-A OUTPUT -p icmp -j DROP",
])
def test_an_output_rule_missing_the_node_s_own_error_leaves_it_be(rule: str) -> None:
    _, found = _findings(rule)
    assert found == []


def test_an_nft_output_rule_dropping_packet_too_big_is_named() -> None:
    drop = [{"match": {"op": "==", "left": {"payload": {"protocol": "icmpv6", "field": "type"}},
                       "right": "packet-too-big"}}, {"drop": None}]
    _, found = _findings(family=6, nft=[drop])
    (finding,) = found
    assert "nft inet t output" in finding.where
    assert "packet-too-big" in finding.where


def test_an_output_rule_the_doctor_cannot_evaluate_is_said_not_judged() -> None:
    _, found = _findings("-p icmp -m set --match-set blocked dst -j DROP")
    (finding,) = found
    assert finding.severity == "info"
    assert "cannot be judged" in finding.what


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("rule", ["-m conntrack --ctstate INVALID -j DROP",
                                  "-m conntrack ! --ctstate RELATED -j DROP"])
def test_a_raw_output_rule_sees_the_node_s_own_error_related(rule: str, family: int) -> None:
    """The kernel gives the node's error the connection of the packet it answers before
    any output chain: raw's OUTPUT, before conntrack's priority, sees it ``related``
    (a lab's counters; tests/doctor/test_own_pmtu_error_kernel.py), not ``invalid``
    as a packet the node makes anew."""
    _, found = _findings(rule, family=family, table="raw")
    assert found == []


def test_a_raw_output_rule_on_the_error_s_icmp_type_still_drops_it() -> None:
    (finding,) = _findings("-p icmp -m icmp --icmp-type 3/4 -j DROP", table="raw")[1]
    assert finding.severity == "warning"
    assert "raw OUTPUT" in finding.where


@pytest.mark.parametrize("family", [4, 6])
def test_a_raw_output_notrack_leaves_the_node_s_own_error_related(family: int) -> None:
    """``CT --notrack`` (nft's ``notrack``) leaves a packet that has its conntrack entry
    alone: the error stays related, and the filter table's RELATED accept takes it."""
    proto = "icmp" if family == 4 else "ipv6-icmp"
    _, found = _findings("-m conntrack --ctstate RELATED -j ACCEPT", f"-p {proto} -j DROP",
                         family=family, raw=(f"-p {proto} -j CT --notrack",))
    assert found == []


def test_an_nft_output_chain_at_raw_priority_sees_the_node_s_own_error_related() -> None:
    invalid = [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "invalid"}},
               {"drop": None}]
    assert _findings(nft=[invalid], priority=-300)[1] == []
    assert _findings(nft=[invalid], priority=-300, family=6)[1] == []


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize(("exempt", "dropped"), [("-i eth0 -p tcp -j CT --notrack", False),
                                                  ("-i cni0 -j CT --notrack", True)])
def test_the_node_s_own_error_is_related_unless_the_pod_s_packets_are_untracked(
        exempt: str, dropped: bool, family: int) -> None:
    """The error quotes the pod's packet, whose connection conntrack finds unless a raw
    rule exempted the pod's packets themselves: exempting only the replies (by the uplink;
    pods not masqueraded) leaves it ``related``, and the RELATED accept takes it
    (tests/doctor/test_own_pmtu_error_kernel.py::
    test_the_node_s_own_pmtu_error_is_related_unless_the_pod_s_packets_are_untracked)."""
    proto = "icmp" if family == 4 else "ipv6-icmp"
    verdict, found = _findings("-m conntrack --ctstate RELATED -j ACCEPT",
                               f"-p {proto} -j DROP", family=family, prerouting=(exempt,),
                               masquerade=False)
    assert verdict is Verdict.REACHES
    assert [f.severity for f in found] == (["warning"] if dropped else [])


def test_a_route_s_mtu_lock_is_read_from_the_routes_text_which_ip_j_leaves_out() -> None:
    """``ip -j route`` prints ``"metrics":[{"mtu":1280}]`` locked or not (iproute2 6.1);
    the text says ``mtu lock``. Recorded from a lab namespace."""
    text = ("fd01:2::/64 via fd01:1::1 dev eth0 proto static metric 1024 mtu lock 1280 "
            "pref medium\n"
            "fd01:3::/64 via fd01:1::1 dev eth0 metric 1024 mtu 1280 advmss lock 1200 "
            "pref medium\n"
            "fd01:4::/64 via fd01:1::1 dev eth0 table 100 metric 1024 mtu lock 1400 "
            "pref medium\n"
            "unreachable fd01:5::/64 dev lo metric 1024 mtu lock 1300 pref medium\n")
    data = [{"dst": "fd01:2::/64", "gateway": "fd01:1::1", "dev": "eth0", "protocol": "static",
             "metric": 1024, "flags": [], "metrics": [{"mtu": 1280}]},
            {"dst": "fd01:3::/64", "gateway": "fd01:1::1", "dev": "eth0", "metric": 1024,
             "flags": [], "metrics": [{"mtu": 1280, "advmss": 1200}]},
            {"dst": "fd01:4::/64", "gateway": "fd01:1::1", "dev": "eth0", "table": "100",
             "metric": 1024, "flags": [], "metrics": [{"mtu": 1400}]},
            {"type": "unreachable", "dst": "fd01:5::/64", "dev": "lo", "metric": 1024,
             "flags": [], "metrics": [{"mtu": 1300}]}]
    routes = parse_routes(data, 6, None, parse_locked_mtus(text))
    assert [r.mtu_locked for r in routes] == [True, False, True, True]
    assert routes[0].describe().endswith("mtu lock 1280")
    assert not any(r.mtu_locked for r in parse_routes(data, 6))  # no text: not locked


def test_a_route_s_fields_are_read_by_keyword_so_a_device_named_table_is_a_device() -> None:
    """``ip route`` prints ``KEY VALUE`` pairs: a device named ``table`` (or ``metric``)
    is the value of ``dev``, not a keyword. Its route's table was read as ``metric``, and
    its lock lost."""
    text = ("fd01:2::/64 via fd01:1::1 dev table proto static metric 1024 mtu lock 1280 "
            "pref medium\n"
            "fd01:3::/64 dev metric table 100 metric 7 expires 300sec mtu lock 1280\n")
    data = [{"dst": "fd01:2::/64", "gateway": "fd01:1::1", "dev": "table",
             "protocol": "static", "metric": 1024, "flags": [], "metrics": [{"mtu": 1280}]},
            {"dst": "fd01:3::/64", "dev": "metric", "table": "100", "metric": 7,
             "flags": [], "metrics": [{"mtu": 1280}]}]
    assert [r.mtu_locked for r in parse_routes(data, 6, None, parse_locked_mtus(text))] == [
        True, True]


def test_a_source_specific_route_s_lock_is_its_own_not_the_plain_route_s_beside_it() -> None:
    """IPv6 holds ``fd05::/64 from fd09::/64`` beside ``fd05::/64`` in one table, same
    device and metric: the lock of one was read as both's (destination, table, device
    and metric alone), so the plain route's error was traced before postrouting. With
    multipath, nhid, ``expires`` and ``onlink`` beside them; recorded from a lab
    namespace (iproute2 6.1)."""
    text = """\
fd03::/64 via fd00:1::2 dev eth1 table 1001 metric 1024 mtu lock 1300 pref medium
fd01::/64 via fd00::2 dev eth0 metric 1024 expires 299sec mtu lock 1300 pref medium
fd02::/64 metric 1024 mtu lock 1300 pref medium
\tnexthop via fd00::2 dev eth0 weight 1 
\tnexthop via fd00:1::2 dev eth1 weight 1 
fd03::/64 via fd00:1::2 dev eth1 metric 1024 mtu 1300 pref medium
fd04::/64 nhid 5 via fd00::2 dev eth0 metric 1024 mtu lock 1300 pref medium
fd05::/64 from fd09::/64 via fd00::2 dev eth0 metric 1024 mtu lock 1300 pref medium
fd05::/64 via fd00::2 dev eth0 metric 1024 mtu 1300 pref medium
fd06::/64 dev eth0 proto static metric 5 onlink mtu lock 1300 pref medium
"""  # noqa: W291 - ip's own trailing blank after a nexthop's weight
    data = [
        {"dst": "fd03::/64", "gateway": "fd00:1::2", "dev": "eth1", "table": "1001",
         "metric": 1024, "flags": [], "metrics": [{"mtu": 1300}], "pref": "medium"},
        {"dst": "fd01::/64", "gateway": "fd00::2", "dev": "eth0", "metric": 1024, "flags": [],
         "expires": 298, "metrics": [{"mtu": 1300}], "pref": "medium"},
        {"dst": "fd02::/64", "metric": 1024, "flags": [], "metrics": [{"mtu": 1300}],
         "pref": "medium", "nexthops": [
             {"gateway": "fd00::2", "dev": "eth0", "weight": 1, "flags": []},
             {"gateway": "fd00:1::2", "dev": "eth1", "weight": 1, "flags": []}]},
        {"dst": "fd03::/64", "gateway": "fd00:1::2", "dev": "eth1", "metric": 1024,
         "flags": [], "metrics": [{"mtu": 1300}], "pref": "medium"},
        {"dst": "fd04::/64", "nhid": 5, "gateway": "fd00::2", "dev": "eth0", "metric": 1024,
         "flags": [], "metrics": [{"mtu": 1300}], "pref": "medium"},
        {"dst": "fd05::/64", "from": "fd09::/64", "gateway": "fd00::2", "dev": "eth0",
         "metric": 1024, "flags": [], "metrics": [{"mtu": 1300}], "pref": "medium"},
        {"dst": "fd05::/64", "gateway": "fd00::2", "dev": "eth0", "metric": 1024,
         "flags": [], "metrics": [{"mtu": 1300}], "pref": "medium"},
        {"dst": "fd06::/64", "dev": "eth0", "protocol": "static", "metric": 5,
         "flags": ["onlink"], "metrics": [{"mtu": 1300}], "pref": "medium"}]
    routes = parse_routes(data, 6, {5: {"id": 5, "gateway": "fd00::2", "dev": "eth0"}},
                          parse_locked_mtus(text))
    assert [(str(r.destination), r.mtu_locked) for r in routes] == [
        ("fd03::/64", True), ("fd01::/64", True), ("fd02::/64", True), ("fd03::/64", False),
        ("fd04::/64", True), ("fd05::/64", True), ("fd05::/64", False), ("fd06::/64", True)]


_ROUTES_V6 = ("fd42::/64 dev cni0 pref medium\n"
              "fd01::/64 dev eth0 pref medium\n"
              "default via fd01::1 dev eth0 mtu {lock}1280 pref medium\n")


@pytest.mark.parametrize(("rule", "dropped_if"), [
    # Locked, the error leaves by the pods' interface; not locked, a masqueraded pod's
    # error leaves by lo (every output chain sees it so), and only postrouting sees cni0.
    ("-o cni0 -p ipv6-icmp -j DROP", "locked"),
    ("-o lo -p ipv6-icmp -j DROP", "not locked"),
])
def test_a_bundle_without_the_routes_text_says_the_lock_is_unknown_where_a_finding_needs_it(
        rule: str, dropped_if: str) -> None:
    """A bundle made before ``routes-v6.txt`` read every IPv6 route's mtu unlocked, without
    a word: a rule dropping the node's error only if the route's mtu is locked was said
    to drop nothing, one dropping it only if not locked was a warning. Now both readings
    are judged and the one the finding depends on is said unknown."""
    _, found = _findings(rule, family=6)
    (finding,) = found
    assert finding.severity == "info"
    assert finding.what.endswith(f"if the route's mtu is {dropped_if}: the lock is unknown")
    assert "no routes-v6.txt" in finding.why
    assert rule.partition(" -j ")[0] in finding.where
    # With the routes' text, the lock is read and judged.
    for lock in ("", "lock "):
        _, found = _findings(rule, family=6, routes_text=_ROUTES_V6.format(lock=lock))
        dropped = (lock == "lock ") is (dropped_if == "locked")
        assert [f.severity for f in found] == (["warning"] if dropped else [])
        assert "unknown" not in " ".join(f.what for f in found)


def test_a_finding_the_lock_does_not_change_is_said_without_a_word_on_it() -> None:
    """A rule dropping Packet Too Big by its type drops it either way: a warning, as with
    the routes' text, that does not claim the mtu is not locked."""
    (finding,) = _findings("-p ipv6-icmp -m icmp6 --icmpv6-type 2 -j DROP", family=6)[1]
    assert finding.severity == "warning"
    assert "lock" not in finding.what + finding.why
