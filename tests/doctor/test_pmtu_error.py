"""``pmtu-error-dropped`` from captures: the ICMP error of path MTU discovery a router
beyond the node sends back (fragmentation needed), traced to the pod through the node's
iptables rules. The kernel's side is tests/doctor/test_pmtu_error_kernel.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from k3snet.doctor import Finding, Flow, NodeCapture, NodeState, Verdict, diagnose

_NAT = "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -s 10.42.0.0/24 -j MASQUERADE\nCOMMIT\n"


def _findings(*forward: str, policy: str = "ACCEPT", nft: list[list[Any]] | None = None,
              family: int = 4, protocol: str = "tcp", raw: tuple[str, ...] = (),
              sets: dict[str, tuple[str, list[Any]]] | None = None
              ) -> tuple[Verdict, list[Finding]]:
    """Pods on cni0, every MTU 1500, the filter table's FORWARD chain of ``forward``, the
    raw table's PREROUTING chain of ``raw``, the pods masqueraded; an inet table's
    forward chain of ``nft``'s rules (each a rule's ``expr``, as ``nft -j`` prints it)
    and the named ``sets`` (name: type, elements); IPv6 with ``family`` 6."""
    links = (("cni0", "10.42.0.1"), ("eth0", "192.168.1.5"))
    addresses: list[dict[str, Any]] = [{"ifname": name, "mtu": 1500, "flags": ["UP"],
                                        "addr_info": [{"local": local, "prefixlen": 24}]}
                                       for name, local in links]
    routes = [{"dst": "10.42.0.0/24", "dev": "cni0", "scope": "link"},
              {"dst": "192.168.1.0/24", "dev": "eth0", "scope": "link"},
              {"dst": "default", "gateway": "192.168.1.1", "dev": "eth0"}]
    saves = ("*raw\n:PREROUTING ACCEPT [0:0]\n" + "".join(f"-A PREROUTING {r}\n" for r in raw)
             + f"COMMIT\n*filter\n:FORWARD {policy} [0:0]\n"
             + "".join(f"-A FORWARD {r}\n" for r in forward) + "COMMIT\n" + _NAT)
    files = {"addr.json": json.dumps(addresses), "routes-v4.json": json.dumps(routes),
             "iptables-nft-v4.save": saves, "sysctl.txt": "net.ipv4.ip_forward = 1\n"}
    if family == 6:
        for link in addresses:
            link["addr_info"] = [{"local": str(link["addr_info"][0]["local"]).replace(
                "10.42.0.", "fd42::").replace("192.168.1.", "fd01::"), "prefixlen": 64}]
        files = {"addr.json": json.dumps(addresses), "routes-v4.json": "[]",
                 "routes-v6.json": json.dumps([
                     {"dst": "fd42::/64", "dev": "cni0"}, {"dst": "fd01::/64", "dev": "eth0"},
                     {"dst": "default", "gateway": "fd01::1", "dev": "eth0"}]),
                 "sysctl.txt": "net.ipv6.conf.all.forwarding = 1\n",
                 "iptables-nft-v6.save": "*nat\n:POSTROUTING ACCEPT [0:0]\n"
                 "-A POSTROUTING -s fd42::/64 -j MASQUERADE\nCOMMIT\n"}
    if nft is not None:
        chain = {"family": "inet", "table": "t", "name": "forward", "handle": 1,
                 "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}
        files["nft-ruleset.json"] = json.dumps({"nftables": [
            {"table": {"family": "inet", "name": "t", "handle": 1}}, {"chain": chain},
            *({"set": {"family": "inet", "table": "t", "name": name, "type": kind,
                       "handle": 100 + n, "elem": elem}}
              for n, (name, (kind, elem)) in enumerate((sets or {}).items())),
            *({"rule": {"family": "inet", "table": "t", "chain": "forward",
                        "handle": 2 + n, "expr": expr}} for n, expr in enumerate(nft))]})
    state = NodeState.from_capture(NodeCapture.from_texts(files))
    port = None if protocol == "icmp" else 5432
    flow = (Flow("fd42::10", "fd01:2::10", protocol, port) if family == 6  # type: ignore[arg-type]
            else Flow("10.42.0.10", "192.168.2.10", protocol, port))  # type: ignore[arg-type]
    d = diagnose(state, flow)
    return d.verdict, [f for f in d.findings if f.code == "pmtu-error-dropped"]


@pytest.mark.parametrize("rule", [
    "-p icmp -m icmp --icmp-type 3/4 -j DROP",
    "-p icmp -m icmp --icmp-type 3 -j DROP",  # every code of the type
    "-p icmp -m icmp --icmp-type any -j REJECT",
    "-p icmp -m icmp ! --icmp-type 8 -j DROP",
    "-p icmp -j DROP",
])
def test_a_forward_rule_matching_fragmentation_needed_drops_the_pmtu_error(rule: str) -> None:
    verdict, found = _findings(rule)
    assert verdict is Verdict.REACHES  # the flow's own packets are not ICMP
    (finding,) = found
    assert finding.severity == "warning"
    assert rule.partition(" -j ")[0] in finding.where


@pytest.mark.parametrize("rule", [
    "-p icmp -m icmp --icmp-type 3/3 -j DROP",  # port unreachable
    "-p icmp -m icmp --icmp-type 11 -j DROP",
    "-p icmp -m icmp --icmp-type 8 -j DROP",
    "-p tcp -j DROP",  # the flow's packets are TCP, but this one is blocked: no finding
])
def test_a_rule_on_other_icmp_types_leaves_the_pmtu_error_be(rule: str) -> None:
    _, found = _findings(rule)
    assert found == []


def test_a_policy_drop_accepting_established_but_not_related_drops_the_pmtu_error() -> None:
    accept_pods = "-s 10.42.0.0/24 -j ACCEPT"
    _, found = _findings(accept_pods, "-m conntrack --ctstate ESTABLISHED -j ACCEPT",
                         policy="DROP")
    (finding,) = found
    assert "policy DROP" in finding.where
    _, found = _findings(accept_pods, "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                         policy="DROP")
    assert found == []


def test_a_rule_the_doctor_cannot_evaluate_is_said_not_judged() -> None:
    """An ipset the capture does not hold: the error may match it, the flow cannot."""
    verdict, found = _findings("-p icmp -m set --match-set blocked src -j DROP")
    assert verdict is Verdict.REACHES
    (finding,) = found
    assert finding.severity == "info"
    assert "cannot be judged" in finding.what
    assert "--match-set blocked" in finding.where


def _icmp(field: str, right: Any, op: str = "==", proto: str = "icmp") -> dict[str, Any]:
    return {"match": {"op": op, "left": {"payload": {"protocol": proto, "field": field}},
                      "right": right}}


@pytest.mark.parametrize(("family", "expr", "drops"), [
    # icmp type { destination-unreachable, time-exceeded } drop
    (4, [_icmp("type", {"set": ["destination-unreachable", "time-exceeded"]}), {"drop": None}],
     True),
    # icmp type destination-unreachable icmp code frag-needed drop
    (4, [_icmp("type", "destination-unreachable"), _icmp("code", "frag-needed"),
         {"drop": None}], True),
    (4, [_icmp("type", "destination-unreachable"), _icmp("code", "port-unreachable"),
         {"drop": None}], False),
    # icmp code != frag-needed drop
    (4, [_icmp("code", "frag-needed", "!="), {"drop": None}], False),
    # icmpv6 type packet-too-big icmpv6 code 0 drop (nft prints the code as no-route)
    (6, [_icmp("type", "packet-too-big", proto="icmpv6"),
         _icmp("code", "no-route", proto="icmpv6"), {"drop": None}], True),
    (6, [_icmp("type", "destination-unreachable", proto="icmpv6"), {"drop": None}], False),
    # an icmp match never matches an IPv6 packet's ICMPv6 (nft's hidden l4proto)
    (6, [_icmp("type", 2), {"drop": None}], False),
])
def test_nft_icmp_matches_are_judged_on_the_pmtu_error(family: int, expr: list[Any],
                                                       drops: bool) -> None:
    verdict, found = _findings(nft=[expr], family=family)
    assert verdict is Verdict.REACHES
    assert [f.severity for f in found] == (["warning"] if drops else [])


def _vmap(key: str, *pairs: tuple[Any, str], proto: str = "icmp") -> dict[str, Any]:
    return {"vmap": {"key": {"payload": {"protocol": proto, "field": key}},
                     "data": {"set": [[k, {v: None}] for k, v in pairs]}}}


_TO_POD = {"payload": {"protocol": "ip", "field": "daddr"}}


@pytest.mark.parametrize(("family", "expr", "sets", "drops"), [
    # icmp type vmap { destination-unreachable : drop, echo-request : accept }
    (4, [_vmap("type", ("destination-unreachable", "drop"), ("echo-request", "accept"))],
     None, True),
    (4, [_vmap("type", ("time-exceeded", "drop"))], None, False),
    (6, [_vmap("type", ("packet-too-big", "drop"), proto="icmpv6")], None, True),
    (4, [_vmap("code", ("frag-needed", "drop"))], None, True),
    # icmp type @blocked drop (set blocked { type icmp_type; elements = { ... } })
    (4, [_icmp("type", "@blocked"), {"drop": None}],
     {"blocked": ("icmp_type", ["destination-unreachable"])}, True),
    (4, [_icmp("type", "@blocked"), {"drop": None}],
     {"blocked": ("icmp_type", ["echo-request", "time-exceeded"])}, False),
    # ip daddr . icmp type { 10.42.0.10 . destination-unreachable } drop (the pod's)
    (4, [{"match": {"op": "==", "left": {"concat": [_TO_POD, {"payload": {
        "protocol": "icmp", "field": "type"}}]}, "right": {"set": [{"concat": [
            "10.42.0.10", "destination-unreachable"]}]}}}, {"drop": None}], None, True),
    # icmp type & 0xf0 == 0 drop, as nft -j prints it: a name for 0
    (4, [{"match": {"op": "==", "left": {"&": [{"payload": {"protocol": "icmp",
                                                             "field": "type"}}, 240]},
                    "right": "echo-reply"}}, {"drop": None}], None, True),
])
def test_nft_icmp_names_in_maps_sets_and_concatenations_are_judged_on_the_pmtu_error(
        family: int, expr: list[Any], sets: dict[str, tuple[str, list[Any]]] | None,
        drops: bool) -> None:
    """nft -j prints ICMP types and codes by name wherever they stand: a verdict map's
    keys, a named set's elements, a part of a concatenation; they were unknown there
    (info, not judged), and a ping's verdict with them."""
    verdict, found = _findings(nft=[expr], family=family, sets=sets)
    assert verdict is Verdict.REACHES
    assert [f.severity for f in found] == (["warning"] if drops else [])


@pytest.mark.parametrize(("family", "expr", "verdict"), [
    (4, [_vmap("type", ("echo-request", "drop"))], Verdict.BLOCKED),
    (4, [_vmap("type", ("echo-reply", "drop"))], Verdict.BLOCKED),
    (4, [_vmap("type", ("destination-unreachable", "drop"), ("echo-request", "accept"))],
     Verdict.REACHES),
    (6, [_vmap("type", ("echo-request", "drop"), proto="icmpv6")], Verdict.BLOCKED),
    (6, [_vmap("type", ("echo-request", "accept"), ("echo-reply", "accept"),
               ("destination-unreachable", "drop"), proto="icmpv6")], Verdict.REACHES),
])
def test_an_icmp_type_verdict_map_decides_a_ping(family: int, expr: list[Any],
                                                 verdict: Verdict) -> None:
    assert _findings(nft=[expr], family=family, protocol="icmp")[0] is verdict


@pytest.mark.parametrize(("family", "expr", "verdict"), [
    (4, [_icmp("type", "echo-request"), {"drop": None}], Verdict.BLOCKED),
    (4, [_icmp("type", "echo-reply"), {"drop": None}], Verdict.BLOCKED),  # the reply
    (4, [_icmp("type", "destination-unreachable"), {"drop": None}], Verdict.REACHES),
    (6, [_icmp("type", "echo-request", proto="icmpv6"), {"drop": None}], Verdict.BLOCKED),
    (6, [_icmp("type", "echo-reply", proto="icmpv6"), {"drop": None}], Verdict.BLOCKED),
    (6, [_icmp("type", "packet-too-big", proto="icmpv6"), {"drop": None}], Verdict.REACHES),
])
def test_an_icmp_flow_is_a_ping_its_type_matches_judged(family: int, expr: list[Any],
                                                        verdict: Verdict) -> None:
    """An ``icmp`` flow's packets are echo requests, its replies echo replies: a rule on
    the ICMP type was unknown for them (the verdict too)."""
    assert _findings(nft=[expr], family=family, protocol="icmp")[0] is verdict


def test_a_flow_to_another_pod_of_the_node_has_no_pmtu_error_finding() -> None:
    """No router answers a pod's packets to a pod of its own bridge: a rule on ICMP
    there is no PMTU black hole."""
    addresses = [{"ifname": "cni0", "mtu": 1500, "flags": ["UP"],
                  "addr_info": [{"local": "10.42.0.1", "prefixlen": 24}]}]
    state = NodeState.from_capture(NodeCapture.from_texts({
        "addr.json": json.dumps(addresses),
        "routes-v4.json": json.dumps([{"dst": "10.42.0.0/24", "dev": "cni0",
                                       "scope": "link"}]),
        "iptables-nft-v4.save": "*filter\n:FORWARD ACCEPT [0:0]\n"
                                "-A FORWARD -p icmp -j DROP\nCOMMIT\n",
        "sysctl.txt": "net.ipv4.ip_forward = 1\n"}))
    d = diagnose(state, Flow("10.42.0.10", "10.42.0.20", port=5432))
    assert "pmtu-error-dropped" not in [f.code for f in d.findings], d.render()


def test_a_raw_notrack_on_icmp_loses_a_masqueraded_pod_s_pmtu_error_at_the_node() -> None:
    """Untracked, the error is not translated back: addressed to the node's masqueraded
    address it never reaches the pod, whatever the forward rules (they accept all
    here). A raw rule on other ICMP types leaves it be."""
    notrack = "-p icmp -j NOTRACK"
    verdict, found = _findings(raw=(notrack,))
    assert verdict is Verdict.REACHES
    (finding,) = found
    assert finding.severity == "warning"
    assert notrack in finding.where
    assert "not translated back" in finding.where
    _, found = _findings(raw=("-p icmp -m icmp --icmp-type 8 -j NOTRACK",))
    assert found == []


@pytest.mark.parametrize(("rule", "drops"), [
    ("-i eth0 -o cni0 -p icmp -j DROP", True),  # in by the flow's way out, out to the pod
    ("-i cni0 -p icmp -j DROP", False),  # what the pods send
    ("-o eth0 -p icmp -j DROP", False),
    ("-d 10.42.0.10 -p icmp -j DROP", True),  # translated back to the pod before forward
    ("-d 192.168.1.5 -p icmp -j DROP", False),  # the masqueraded address: prerouting only
])
def test_the_pmtu_error_is_forwarded_from_the_flow_s_way_out_to_the_pod(
        rule: str, drops: bool) -> None:
    _, found = _findings(rule)
    assert [f.severity for f in found] == (["warning"] if drops else [])


@pytest.mark.parametrize(("family", "expr"), [
    (4, [_icmp("id", 5), {"drop": None}]),  # icmp id 5 drop
    (4, [_icmp("gateway", 167772161), {"drop": None}]),  # nft prints it as a number
    (6, [_icmp("mtu", 1280, proto="icmpv6"), {"drop": None}]),  # icmpv6 mtu 1280 drop
])
def test_an_icmp_header_match_never_matches_a_tcp_flow(family: int, expr: list[Any]) -> None:
    """Any field of the ICMP header carries nft's hidden ``meta l4proto icmp``: on the
    flow's TCP packets the rule does not match (it was unknown, and the verdict with
    it, for every field but the type and code)."""
    verdict, _ = _findings(nft=[expr], family=family)
    assert verdict is Verdict.REACHES
