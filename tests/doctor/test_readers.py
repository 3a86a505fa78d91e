"""The readers on what real nodes carry: K3s, flannel, kube-proxy, Docker, Calico, firewalld.

No root needed: the node's addresses and routes come from the recorded ``healthy``
golden bundle (the seed lab's node, masquerade and forwarding on); each test
replaces the rulesets with text as those programs write it.
"""

from __future__ import annotations

import json
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import attrs
import pytest

from k3snet.doctor import Flow, NodeCapture, NodeState, Verdict, diagnose, trace
from k3snet.doctor.bundle import BundleError
from k3snet.doctor.packet import Packet
from k3snet.doctor.routing import (
    lookup,
    masquerade_source,
    nexthop_objects,
    parse_addresses,
    parse_routes,
    parse_rules,
)

HEALTHY = Path(__file__).parent / "golden" / "healthy"
RULESETS = Path(__file__).parent / "rulesets"
FLOW = Flow("10.42.0.10", "192.168.2.10", port=5432)

# kube-proxy (iptables mode) and K3s' network policy controller (kube-router) filter
# chains, as iptables-save prints them on a K3s node.
K3S_FILTER = (RULESETS / "k3s-filter.save").read_text()

K3S_NAT = (RULESETS / "k3s-nat.save").read_text()

# Docker's FORWARD chain: policy DROP, containers on docker0 only.
DOCKER_FILTER = (RULESETS / "docker-filter.save").read_text()

# Calico (iptables dataplane): its own FORWARD entry, ipsets it keeps in the kernel.
CALICO_FILTER = (RULESETS / "calico-filter.save").read_text()


def _capture(**texts: str) -> NodeCapture:
    base = NodeCapture.read_dir(HEALTHY)
    merged = {k: v for k, v in base.texts.items()
              if not k.startswith("iptables-") and k != "nft-ruleset.json"}
    merged.update({k.replace("_", "-"): v for k, v in texts.items()})
    return NodeCapture(merged)


def _state(**texts: str) -> NodeState:
    return NodeState.from_capture(_capture(**texts))


def test_k3s_node_masquerades_through_flannel() -> None:
    state = _state(**{"iptables-nft-v4.save": K3S_FILTER + K3S_NAT})
    result = trace(state, FLOW)
    assert result.verdict is Verdict.REACHES, result.render()
    assert str(result.source_seen) == "192.168.1.5"
    nat = [s for s in result.steps if s.outcome == "nat"]
    assert "FLANNEL-POSTRTG -s 10.42.0.0/16 ! -d 224.0.0.0/4" in nat[0].detail
    # kube-proxy's mark rules are evaluated (the mark is known: 0), not reported unknown.
    assert not any("0x4000" in s.detail for s in result.steps if s.outcome == "unknown")
    # physdev is not understood: reported with its text, and it cannot change the verdict.
    unknown = [s for s in result.steps if s.outcome == "unknown"]
    assert any("--physdev-is-bridged" in s.detail for s in unknown)
    assert all(s.certain for s in unknown)


def test_kube_proxy_nodeports_use_the_local_address_type() -> None:
    """``-m addrtype --dst-type LOCAL`` is evaluated from the node's addresses."""
    state = _state(**{"iptables-nft-v4.save": K3S_FILTER + K3S_NAT})
    result = trace(state, FLOW)
    assert not any("addrtype" in s.detail for s in result.steps if s.outcome == "unknown")


def test_docker_forward_drop_is_found_and_fixed() -> None:
    state = _state(**{"iptables-nft-v4.save": DOCKER_FILTER + K3S_NAT})
    d = diagnose(state, FLOW)
    assert d.verdict is Verdict.BLOCKED
    assert d.trace.blocked_at is not None
    assert d.trace.blocked_at.detail == "policy DROP"
    assert [f.code for f in d.findings if f.severity == "blocking"] == ["forward-drop"]
    assert d.after.verdict is Verdict.REACHES
    assert "forward accept 10.42.0.0/24 -> 192.168.2.0/24 oif eth0" in d.plan.render()


def test_calico_ipset_rule_is_unknown_and_decides_nothing_known() -> None:
    state = _state(**{"iptables-legacy-v4.save": CALICO_FILTER + K3S_NAT})
    result = trace(state, FLOW)
    unknown = [s for s in result.steps if s.outcome == "unknown"]
    assert any("--match-set cali40all-ipam-pools" in s.detail and not s.certain
               for s in unknown)
    assert result.verdict is Verdict.UNKNOWN
    codes = [f.code for f in diagnose(state, FLOW).findings]
    assert "unknown-rules" in codes


def _nft(*items: dict[str, Any]) -> str:
    return json.dumps({"nftables": [{"metainfo": {"json_schema_version": 1}}, *items]})


def _chain(table: str, name: str, hook: str | None = None, prio: int = 0, *,
           policy: str = "accept", kind: str = "filter", family: str = "inet") -> dict[str, Any]:
    chain: dict[str, Any] = {"family": family, "table": table, "name": name}
    if hook:
        chain.update(hook=hook, prio=prio, policy=policy, type=kind)
    return {"chain": chain}


def _rule(table: str, chain: str, *expr: dict[str, Any], family: str = "inet") -> dict[str, Any]:
    return {"rule": {"family": family, "table": table, "chain": chain, "expr": list(expr)}}


def _match(left: dict[str, Any], right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


SADDR = {"payload": {"protocol": "ip", "field": "saddr"}}
DPORT = {"payload": {"protocol": "tcp", "field": "dport"}}
CTSTATE = {"ct": {"key": "state"}}
MASQ_NFT = [_chain("k3s", "post", "postrouting", 100, kind="nat"),
            _rule("k3s", "post", _match(SADDR, {"prefix": {"addr": "10.42.0.0", "len": 16}}),
                  {"masquerade": None})]


def test_firewalld_like_table_drops_and_cannot_be_fixed_by_k3snet() -> None:
    ruleset = _nft(
        _chain("firewalld", "filter_FORWARD", "forward", 10),
        _chain("firewalld", "filter_FORWARD_ZONES"),
        _rule("firewalld", "filter_FORWARD",
              _match(CTSTATE, ["established", "related"], "in"), {"accept": None}),
        _rule("firewalld", "filter_FORWARD", {"jump": {"target": "filter_FORWARD_ZONES"}}),
        _rule("firewalld", "filter_FORWARD",
              {"reject": {"type": "icmpx", "expr": "admin-prohibited"}}),
        *MASQ_NFT,
    )
    d = diagnose(_state(**{"nft-ruleset.json": ruleset}), FLOW)
    assert d.verdict is Verdict.BLOCKED
    assert d.findings[0].code == "foreign-table-drop"
    assert d.findings[0].fix == ()
    assert "firewalld" in (d.findings[0].advice or "")


def test_unknown_nft_expression_is_reported_with_its_text() -> None:
    fib = {"fib": {"flags": ["saddr", "iif"], "result": "oif"}}
    ruleset = _nft(_chain("rpf", "fwd", "forward", -5),
                   _rule("rpf", "fwd", _match(fib, False), {"drop": None}), *MASQ_NFT)
    result = trace(_state(**{"nft-ruleset.json": ruleset}), FLOW)
    unknown = [s for s in result.steps if s.outcome == "unknown"]
    assert unknown
    # as nft list ruleset prints it
    assert "fib saddr . iif oif missing drop" in unknown[0].detail
    assert not unknown[0].certain
    assert result.verdict is Verdict.UNKNOWN


def test_nft_sets_ports_and_verdict_maps() -> None:
    ruleset = _nft(
        {"set": {"family": "inet", "table": "t", "name": "blocked", "type": "ipv4_addr",
                 "elem": [{"prefix": {"addr": "192.168.2.0", "len": 24}}]}},
        _chain("t", "fwd", "forward", 0),
        _chain("t", "deny"),
        _rule("t", "fwd", _match(DPORT, {"set": [80, {"range": [5000, 5500]}]}),
              {"vmap": {"key": {"payload": {"protocol": "ip", "field": "daddr"}},
                        "data": {"set": [[{"prefix": {"addr": "192.168.2.0", "len": 24}},
                                          {"jump": {"target": "deny"}}]]}}}),
        _rule("t", "deny", _match({"payload": {"protocol": "ip", "field": "daddr"}},
                                  "@blocked"), {"drop": None}),
        *MASQ_NFT,
    )
    state = _state(**{"nft-ruleset.json": ruleset})
    blocked = trace(state, FLOW)
    assert blocked.verdict is Verdict.BLOCKED
    assert blocked.blocked_at is not None
    assert "@blocked" in blocked.blocked_at.detail
    other_port = trace(state, Flow("10.42.0.10", "192.168.2.10", port=22))
    assert other_port.verdict is Verdict.REACHES


def test_iptables_nft_tables_are_not_counted_twice() -> None:
    """With iptables-nft-save captured, nft's ip filter/nat tables are read from it."""
    ruleset = _nft(_chain("filter", "FORWARD", "forward", 0, policy="drop", family="ip"))
    save = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
    state = _state(**{"nft-ruleset.json": ruleset, "iptables-nft-v4.save": save + K3S_NAT})
    assert trace(state, FLOW).verdict is Verdict.REACHES
    alone = _state(**{"nft-ruleset.json": ruleset})
    assert any(c.where == "nft ip filter FORWARD" for c in alone.chains)


def test_mark_set_by_an_unfollowed_rule_makes_mark_matches_unknown() -> None:
    save = ("*mangle\n:PREROUTING ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
            "-A PREROUTING -j CONNMARK --restore-mark\n"
            "-A FORWARD -m mark --mark 0x1 -j DROP\nCOMMIT\n")
    result = trace(_state(**{"iptables-nft-v4.save": save + K3S_NAT}), FLOW)
    assert any("--mark 0x1" in s.detail for s in result.steps if s.outcome == "unknown"), (
        result.render())


def test_policy_rules_and_tables() -> None:
    routes = parse_routes([
        {"dst": "default", "gateway": "192.168.1.1", "dev": "eth0"},
        {"dst": "192.168.2.0/24", "gateway": "192.168.4.1", "dev": "eth1", "table": "100"},
        {"type": "throw", "dst": "192.168.2.128/25", "table": "100"},
        {"type": "blackhole", "dst": "192.168.9.0/24", "table": "7"},
    ], 4)
    rules = parse_rules([
        {"priority": 0, "src": "all", "table": "local"},
        {"priority": 10, "src": "10.42.0.0", "srclen": 16, "table": "100"},
        {"priority": 20, "fwmark": "0x1", "fwmask": "0x1", "table": "7"},
        {"priority": 30, "not": None, "src": "10.0.0.0", "srclen": 8, "action": "goto",
         "target": 32766},
        {"priority": 40, "src": "all", "action": "prohibit"},
        {"priority": 32766, "src": "all", "table": "main"},
    ], 4)
    from ipaddress import ip_address  # noqa: PLC0415

    pod, dst = ip_address("10.42.0.10"), ip_address("192.168.2.10")
    assert lookup(routes, rules, dst, src=pod).route.device == "eth1"  # type: ignore[union-attr]
    thrown = lookup(routes, rules, ip_address("192.168.2.200"), src=pod)
    assert thrown.type == "prohibit"  # table 100 throws, rule 40 prohibits
    node = lookup(routes, rules, dst, src=ip_address("192.168.1.5"))
    assert node.route is not None  # goto skips prohibit
    assert node.route.device == "eth0"
    marked = lookup(routes, rules, ip_address("192.168.9.1"), src=ip_address("10.1.1.1"),
                    mark=1)
    assert marked.type == "blackhole"
    assert lookup(routes, rules, dst, src=ip_address("10.1.1.1"), mark=None).type == "unknown"


def test_packet_family_mismatch_is_no_match() -> None:
    packet = Packet(6, "fd42::1", "fd01::1", "tcp", None, 5432, "cni0", "eth0")
    state = _state(**{"nft-ruleset.json": _nft(*MASQ_NFT)})
    chain = next(c for c in state.chains if c.kind == "nat")
    assert 6 in chain.families
    assert chain.evaluate(packet).verdict == "accept"  # `ip saddr` never matches IPv6


@pytest.mark.parametrize("bad", [
    {"routes-v4.json": "{not json"},
    {"addr.json": '[{"addr_info": [{"local": "not-an-address", "prefixlen": 24}]}]'},
])
def test_malformed_captures_raise_bundle_errors(bad: dict[str, str]) -> None:
    with pytest.raises(BundleError):
        NodeState.from_capture(_capture(**bad))


def test_unparsable_iptables_line_is_an_unknown_rule() -> None:
    save = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            '-A FORWARD -s 10.42.0.0/16 --weird-option "unterminated -j DROP\nCOMMIT\n')
    result = trace(_state(**{"iptables-nft-v4.save": save + K3S_NAT}), FLOW)
    unknown = [s for s in result.steps if s.outcome == "unknown"]
    assert unknown
    assert "--weird-option" in unknown[0].detail


def test_bundle_round_trip(tmp_path: Path) -> None:
    capture = NodeCapture.read_dir(HEALTHY)
    written = capture.write_dir(tmp_path / "copy")
    assert {p.name for p in written} == {*capture.texts, "bundle.json"}
    again = NodeCapture.read_dir(tmp_path / "copy")
    assert dict(again.texts) == dict(capture.texts)
    assert trace(NodeState.from_capture(again), FLOW).verdict is Verdict.REACHES


def test_bundle_refuses_unknown_files() -> None:
    with pytest.raises(BundleError):
        NodeCapture.from_texts({"secrets.txt": "x"})


def test_sysctls_are_read_with_their_interface_names() -> None:
    capture = NodeCapture.from_texts({"sysctl.txt": "net.ipv4.conf.eth0/100.rp_filter = 1\n"
                                                    "net.ipv4.ip_forward = 1\n"})
    assert capture.sysctls() == {"net.ipv4.conf.eth0/100.rp_filter": "1",
                                 "net.ipv4.ip_forward": "1"}


def _pools(*pools: tuple[str, bool]) -> str:
    return json.dumps({"items": [{"kind": "IPPool", "spec": {"cidr": cidr, "natOutgoing": nat}}
                                 for cidr, nat in pools]})


def test_calico_nat_outgoing_is_evaluated_from_its_ip_pools() -> None:
    nat = (RULESETS / "calico-nat.save").read_text()
    pods_only = _state(**{"iptables-legacy-v4.save": nat,
                          "calico-ippools.json": _pools(("10.42.0.0/16", True))})
    result = trace(pods_only, FLOW)
    assert result.verdict is Verdict.REACHES, result.render()
    assert str(result.source_seen) == "192.168.1.5"
    # Without the pools the ipsets are unknown: the doctor says so, and cannot decide.
    assert trace(_state(**{"iptables-legacy-v4.save": nat}), FLOW).verdict is Verdict.UNKNOWN


def test_destination_inside_a_calico_pool_is_not_masqueraded() -> None:
    nat = (RULESETS / "calico-nat.save").read_text()
    state = _state(**{"iptables-legacy-v4.save": nat, "calico-ippools.json": _pools(
        ("10.42.0.0/16", True), ("192.168.2.0/24", False))})
    d = diagnose(state, FLOW)
    assert d.verdict is Verdict.BLOCKED
    codes = [f.code for f in d.findings]
    assert codes[:2] == ["no-masquerade", "destination-in-calico-pool"]
    assert d.after.verdict is Verdict.REACHES


def test_an_ipv4_mapped_pool_cidr_leaves_calico_s_pool_sets_unknown() -> None:
    # Felix of Calico v3.32 and before keys ::ffff:10.42.0.0/112 as 10.42.0.0/16, so
    # aa-mapped (natOutgoing false, sorting first) is the pods' pool to it and they leave
    # untranslated; the doctor read it as an IPv6 pool beside nothing and traced the flow
    # masqueraded. As the calico backend, which calls the pool unreadable, it guesses
    # neither reading: the sets are unknown and the capture says why.
    nat = (RULESETS / "calico-nat.save").read_text()
    pools = json.dumps({"items": [
        {"kind": "IPPool", "metadata": {"name": "default-ipv4-ippool"},
         "spec": {"cidr": "10.42.0.0/16", "natOutgoing": True}},
        {"kind": "IPPool", "metadata": {"name": "aa-mapped"},
         "spec": {"cidr": "::ffff:10.42.0.0/112"}},
    ]})
    state = _state(**{"iptables-legacy-v4.save": nat, "calico-ippools.json": pools})
    assert state.calico_pools == ()
    why = state.missing["calico-ippools.json"]
    assert "IPPool aa-mapped" in why, why
    assert "IPv4 CIDR 10.42.0.0/16" in why, why
    result = trace(state, FLOW)
    assert result.verdict is Verdict.UNKNOWN, result.render()
    assert str(result.source_seen) != "192.168.1.5"



@pytest.mark.parametrize("cidr", ["10.42.0.0/255.255.0.0", "10.42.0.1", " 10.42.0.0/16",
                                  "garbage", "010.42.0.0/16"])
def test_a_pool_cidr_go_s_parser_refuses_is_no_pool_to_felix_s_sets(cidr: str) -> None:
    # Felix's syncer drops a pool whose CIDR Go's net.ParseCIDR refuses (libcalico-go
    # IPPoolV3ToV1), so aa-odd (natOutgoing false, sorting first) takes no CIDR from the
    # pods' pool. The doctor read a netmask or a bare address as Python does (aa-odd the
    # pods' pool: blocked) and refused the whole bundle for one Python cannot read.
    nat = (RULESETS / "calico-nat.save").read_text()
    pools = json.dumps({"items": [
        {"kind": "IPPool", "metadata": {"name": "aa-odd"}, "spec": {"cidr": cidr}},
        {"kind": "IPPool", "metadata": {"name": "default-ipv4-ippool"},
         "spec": {"cidr": "10.42.0.0/16", "natOutgoing": True}},
    ]})
    state = _state(**{"iptables-legacy-v4.save": nat, "calico-ippools.json": pools})
    assert [str(p.cidr) for p in state.calico_pools] == ["10.42.0.0/16"]
    # Named, as the doctor reading the pools live names it: it was left out silently.
    why = state.missing["calico-ippools.json"]
    assert why.startswith("IPPool aa-odd: spec.cidr "), why
    assert "Felix drops it too" in why, why
    result = trace(state, FLOW)
    assert result.verdict is Verdict.REACHES, result.render()


def test_a_bundle_pool_the_backend_cannot_model_is_named_as_the_live_doctor_names_it(
) -> None:
    # A blockSize out of range: Felix still puts its CIDR in its sets (judged so), and
    # the live doctor names it; the bundle's reader said nothing.
    nat = (RULESETS / "calico-nat.save").read_text()
    pools = json.dumps({"items": [
        {"kind": "IPPool", "metadata": {"name": "odd-block"},
         "spec": {"cidr": "192.168.2.0/24", "blockSize": 99}},
        {"kind": "IPPool", "metadata": {"name": "default-ipv4-ippool"},
         "spec": {"cidr": "10.42.0.0/16", "natOutgoing": True}},
    ]})
    state = _state(**{"iptables-legacy-v4.save": nat, "calico-ippools.json": pools})
    assert [str(p.cidr) for p in state.calico_pools] == ["10.42.0.0/16", "192.168.2.0/24"]
    why = state.missing["calico-ippools.json"]
    assert why.startswith("IPPool odd-block: "), why
    assert "Felix still puts its CIDR in its sets" in why, why


def _incomplete(state: NodeState) -> Any:
    return next(f for f in diagnose(state, FLOW).findings if f.code == "capture-incomplete")


def test_capture_incomplete_says_what_of_calico_is_missing_and_what_was_judged_without_it(
) -> None:
    # It said "the trace takes what is missing as empty (no rules, no routes)" of
    # Calico's pools too: neither is true of them. A pool left out is judged without
    # (the others decide); pools not read at all leave Felix's pool sets unknown unless
    # the kernel's ipset save holds them.
    nat = (RULESETS / "calico-nat.save").read_text()
    pools = json.dumps({"items": [
        {"kind": "IPPool", "metadata": {"name": "aa-odd"}, "spec": {"cidr": "garbage"}},
        {"kind": "IPPool", "metadata": {"name": "default-ipv4-ippool"},
         "spec": {"cidr": "10.42.0.0/16", "natOutgoing": True}},
    ]})
    complete = {f"iptables-{k}-v{f}.save": "" for k in ("nft", "legacy") for f in (4, 6)}
    state = _state(**{**complete, "nft-ruleset.json": '{"nftables": []}',
                      "iptables-legacy-v4.save": nat, "calico-ippools.json": pools})
    assert set(state.missing) == {"calico-ippools.json"}
    finding = _incomplete(state)
    assert finding.what == "Calico's IP pools were not all read", finding
    assert "as empty" not in finding.why, finding.why
    assert "IPPool aa-odd" in finding.why, finding.why
    assert ("Felix's pool sets are judged from the 1 IP pool(s) read, without "
            "those named here") in finding.why, finding.why
    # No pool read at all, and no ipset save: the sets are unknown, and said so.
    unread = attrs.evolve(state, calico_pools=(), missing={
        "calico-ippools.json": "the calico backend could not list the IP pools: forbidden"})
    finding = _incomplete(unread)
    assert "forbidden" in finding.why, finding.why
    assert ("Felix's pool sets (cali40masq-ipam-pools, cali40all-ipam-pools, "
            "cali40network-ip-pools and their IPv6 twins) are unknown: a rule matching "
            "one is not evaluated") in finding.why, finding.why
    assert trace(unread, FLOW).verdict is Verdict.UNKNOWN
    # The kernel's sets captured: they are what the rules match, the pools read or not.
    kernel = "create cali40masq-ipam-pools hash:net family inet\n" \
             "add cali40masq-ipam-pools 10.42.0.0/16\n"
    with_kernel = _state(**{**complete, "nft-ruleset.json": '{"nftables": []}',
                            "iptables-legacy-v4.save": nat, "calico-ippools.json": pools,
                            "ipset.save": kernel})
    finding = _incomplete(with_kernel)
    assert ("Felix's pool sets are taken from the kernel's ipset save "
            "(cali40masq-ipam-pools), not from the pools") in finding.why, finding.why
    # Beside a ruleset missing, each part says its own.
    both = attrs.evolve(unread, missing={**unread.missing,
                                         "nft-ruleset.json": "not in the capture"})
    finding = _incomplete(both)
    assert finding.what == "parts of the node state were not captured", finding
    assert "the trace takes the missing rulesets and routes as empty" in finding.why, finding.why
    assert "are unknown" in finding.why, finding.why

def test_calico_s_renamed_network_ip_pools_set_is_evaluated_from_its_ip_pools() -> None:
    # Felix v3.31.6, v3.32.1 and later match cali40network-ip-pools, which leaves out
    # LoadBalancer-only pools (projectcalico/calico#12769); before, cali40all-ipam-pools.
    old = (RULESETS / "calico-nat.save").read_text()
    new = old.replace("cali40all-ipam-pools", "cali40network-ip-pools")
    pools = json.dumps({"items": [
        {"kind": "IPPool", "spec": {"cidr": "10.42.0.0/16", "natOutgoing": True}},
        {"kind": "IPPool", "spec": {"cidr": "192.168.2.0/24", "allowedUses": ["LoadBalancer"]}},
    ]})
    result = trace(_state(**{"iptables-legacy-v4.save": new,
                             "calico-ippools.json": _pools(("10.42.0.0/16", True))}), FLOW)
    assert result.verdict is Verdict.REACHES, result.render()
    assert str(result.source_seen) == "192.168.1.5"
    # The LoadBalancer-only pool around the destination: the newer Felix masquerades...
    result = trace(_state(**{"iptables-legacy-v4.save": new, "calico-ippools.json": pools}),
                   FLOW)
    assert result.verdict is Verdict.REACHES, result.render()
    assert str(result.source_seen) == "192.168.1.5"
    # ... the older one does not.
    result = trace(_state(**{"iptables-legacy-v4.save": old, "calico-ippools.json": pools}),
                   FLOW)
    assert str(result.source_seen) != "192.168.1.5"


@pytest.mark.parametrize("statement", [
    {"match": "x"},                                                     # a match that is text
    {"match": {"left": {"payload": -5}, "op": "==", "right": 1}},       # payload not a mapping
    {"match": {"left": {"&": {"a": 1}}, "op": "==", "right": 1}},       # "&" not a pair
    {"vmap": {"key": {"meta": {"key": "oifname"}}, "data": None}},      # a vmap without data
    {"match": {"left": {"payload": {"protocol": "ip", "field": "daddr"}}, "op": "==",
               "right": {"prefix": {"addr": 1, "len": 24}}}},           # an address that is 1
])
def test_an_nft_statement_of_another_shape_makes_its_rule_unknown(statement: Any) -> None:
    ruleset = _nft(_chain("t", "fwd", "forward", 0),
                   _rule("t", "fwd", statement, {"drop": None}), *MASQ_NFT)
    result = trace(_state(**{"nft-ruleset.json": ruleset}), FLOW)
    unknown = [s for s in result.steps if s.outcome == "unknown"]
    assert unknown
    assert unknown[0].detail.startswith("nft inet t fwd: ")
    assert result.verdict is Verdict.UNKNOWN


def test_a_mark_that_is_not_a_number_makes_the_mark_unknown() -> None:
    save = ("*mangle\n:PREROUTING ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
            "-A PREROUTING -j MARK --set-xmark -p\n"
            "-A FORWARD -m mark --mark 0x1/0x1 -j DROP\nCOMMIT\n")
    result = trace(_state(**{"iptables-nft-v4.save": save + K3S_NAT}), FLOW)
    assert any("--mark 0x1/0x1" in s.detail for s in result.steps if s.outcome == "unknown")


@pytest.mark.parametrize(("name", "document"), [
    ("routes-v4.json", [{"dst": "default", "gateway": "192.168.1.1", "dev": []}]),
    ("routes-v4.json", [{"dst": "default", "gateway": "192.168.1.1", "dev": "eth0",
                         "protocol": 2**70}]),
    ("addr.json", [{"ifname": "eth0", "addr_info": [{"local": "192.168.1.5",
                                                      "prefixlen": -5}]}]),
    ("addr.json", [{"ifname": ["eth0"], "addr_info": [{"local": "192.168.1.5",
                                                        "prefixlen": 24}]}]),
])
def test_routes_and_addresses_named_with_other_types_are_bundle_errors(
        name: str, document: Any) -> None:
    with pytest.raises(BundleError, match="cannot read the capture"):
        NodeState.from_capture(_capture(**{name: json.dumps(document)}))


def _multipath_routes() -> str:
    """The healthy node's routes, its route to the destination made ECMP over eth0 and eth1."""
    routes = json.loads(NodeCapture.read_dir(HEALTHY).texts["routes-v4.json"])
    for route in routes:
        if route.get("dst") == "192.168.2.0/24":
            route.pop("gateway")
            route.pop("dev")
            route["nexthops"] = [{"gateway": "192.168.1.1", "dev": "eth0", "weight": 1,
                                  "flags": []},
                                 {"gateway": "192.168.4.1", "dev": "eth1", "weight": 1,
                                  "flags": []}]
    return json.dumps(routes)


ETH0_MASQ_NFT = [_chain("k3s", "post", "postrouting", 100, kind="nat"),
                 _rule("k3s", "post", _match(SADDR, {"prefix": {"addr": "10.42.0.0", "len": 16}}),
                       _match({"meta": {"key": "oifname"}}, "eth0"), {"masquerade": None})]


def test_each_nexthop_of_a_multipath_route_is_traced() -> None:
    """ECMP over two uplinks, masquerade on one: the flows hashed onto the other leave with
    the pod's address. The first nexthop alone (what the doctor followed) said it reaches."""
    state = _state(**{"routes-v4.json": _multipath_routes(),
                      "nft-ruleset.json": _nft(*ETH0_MASQ_NFT)})
    result = trace(state, FLOW)
    assert [(str(e.gateway), e.egress, e.verdict) for e in result.endpoints] == [
        ("192.168.1.1", "eth0", Verdict.REACHES), ("192.168.4.1", "eth1", Verdict.BLOCKED)]
    assert result.verdict is Verdict.BLOCKED
    text = result.render()
    assert "multipath: nexthop 2 of 2 followed" in text
    assert "192.168.2.10:5432 (leaves via 192.168.4.1 dev eth1): blocked" in text
    assert "192.168.2.10:5432 (leaves via 192.168.1.1 dev eth0): reaches; the destination " \
           "sees 192.168.1.5" in text
    assert [e["egress"] for e in result.to_dict()["endpoints"]] == ["eth0", "eth1"]
    both = _state(**{"routes-v4.json": _multipath_routes(), "nft-ruleset.json": _nft(*MASQ_NFT)})
    assert trace(both, FLOW).verdict is Verdict.REACHES


def test_a_multipath_route_reads_every_nexthop() -> None:
    routes = parse_routes(json.loads(_multipath_routes()), 4)
    ecmp = next(r for r in routes if str(r.destination) == "192.168.2.0/24")
    assert [(str(g), d) for g, d in ecmp.nexthops] == [("192.168.1.1", "eth0"),
                                                       ("192.168.4.1", "eth1")]
    assert (str(ecmp.gateway), ecmp.device) == ("192.168.1.1", "eth0")
    assert ecmp.describe() == ("192.168.2.0/24 nexthop via 192.168.1.1 dev eth0 "
                               "nexthop via 192.168.4.1 dev eth1")
    assert ecmp.via(1).describe() == "192.168.2.0/24 via 192.168.4.1 dev eth1"
    down = json.loads(_multipath_routes())
    for route in down:
        for hop in route.get("nexthops", ())[:1]:
            hop["flags"] = ["dead", "linkdown"]
    one = next(r for r in parse_routes(down, 4) if str(r.destination) == "192.168.2.0/24")
    assert (one.nexthops, str(one.gateway), one.device) == ((), "192.168.4.1", "eth1")


def test_an_unknown_rule_that_returns_makes_the_verdict_unknown() -> None:
    """Taking an unknown RETURN skips the rest of its chain, where the verdict was
    decided: a pod in ipset ``trusted`` is forwarded by the policy, so "blocked" by the
    DROP after it is not certain (it was, the RETURN judged harmless)."""
    filter_table = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n"
                    ":OUTPUT ACCEPT [0:0]\n:FW - [0:0]\n-A FORWARD -j FW\n"
                    "-A FW -m set --match-set trusted src -j RETURN\n"
                    "-A FW -s 10.42.0.0/16 -j DROP\nCOMMIT\n")
    state = _state(**{"iptables-nft-v4.save": filter_table + K3S_NAT})
    assert trace(state, FLOW).verdict is Verdict.UNKNOWN
    ct_mark = {"ct": {"key": "mark"}}  # the connection's mark: not followed
    ruleset = _nft(_chain("fw", "fwd", "forward", 0), _chain("fw", "check"),
                   _rule("fw", "fwd", {"jump": {"target": "check"}}),
                   _rule("fw", "check", _match(ct_mark, 1), {"return": None}),
                   _rule("fw", "check", _match(SADDR, {"prefix": {"addr": "10.42.0.0",
                                                                  "len": 16}}), {"drop": None}),
                   *MASQ_NFT)
    assert trace(_state(**{"nft-ruleset.json": ruleset}), FLOW).verdict is Verdict.UNKNOWN


def test_an_unknown_jump_to_a_chain_with_an_unknown_drop_makes_the_verdict_unknown() -> None:
    """The trial of what an unknown jump would do had its own unknown rules ignored: a
    chain that drops only when a second set matches was judged to return ("none")."""
    filter_table = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n"
                    ":OUTPUT ACCEPT [0:0]\n:BL - [0:0]\n"
                    "-A FORWARD -m set --match-set watched src -j BL\n"
                    "-A BL -m set --match-set banned dst -j DROP\nCOMMIT\n")
    state = _state(**{"iptables-nft-v4.save": filter_table + K3S_NAT})
    assert trace(state, FLOW).verdict is Verdict.UNKNOWN
    ruleset = _nft(_chain("fw", "fwd", "forward", 0), _chain("fw", "bl"),
                   _rule("fw", "fwd", _match({"fib": {"flags": ["saddr"], "result": "type"}},
                                             "unicast"), {"jump": {"target": "bl"}}),
                   _rule("fw", "bl", _match({"ct": {"key": "mark"}}, 1), {"drop": None}),
                   *MASQ_NFT)
    assert trace(_state(**{"nft-ruleset.json": ruleset}), FLOW).verdict is Verdict.UNKNOWN


@pytest.mark.parametrize("statement", [
    {"limit": {"rate": 10, "burst": 5, "per": "second", "inv": True}},
    {"quota": {"val": 10, "val_unit": "mbytes", "inv": True}},
    {"meter": {"key": SADDR, "name": "m", "size": 65535,
               "stmt": {"limit": {"rate": 5, "burst": 5, "per": "second", "inv": True}}}},
])
def test_an_nft_rate_limit_over_does_not_match_a_flow_under_it(statement: Any) -> None:
    """``limit rate over 10/second drop`` drops only beyond the rate: it was neutral,
    so the rule always matched and one new flow was "blocked"."""
    ruleset = _nft(_chain("rl", "fwd", "forward", 0),
                   _rule("rl", "fwd", statement, {"drop": None}), *MASQ_NFT)
    assert trace(_state(**{"nft-ruleset.json": ruleset}), FLOW).verdict is Verdict.REACHES


def test_an_nft_rate_limit_under_matches_a_flow() -> None:
    ruleset = _nft(_chain("rl", "fwd", "forward", 0, policy="drop"),
                   _rule("rl", "fwd", {"limit": {"rate": 10, "per": "second"}},
                         {"accept": None}), *MASQ_NFT)
    assert trace(_state(**{"nft-ruleset.json": ruleset}), FLOW).verdict is Verdict.REACHES


def test_an_option_of_a_module_the_reader_does_not_know_is_unknown() -> None:
    """``-m connmark ! --mark 0x1`` matches the connection's mark, not the packet's: the
    packet's ``--mark`` reading made it a confident no-match for a packet marked 0x1 by
    mangle (the connection's mark is 0: the kernel accepts, the doctor said blocked)."""
    tables = ("*mangle\n:PREROUTING ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n"
              ":POSTROUTING ACCEPT [0:0]\n-A PREROUTING -j MARK --set-xmark 0x1/0xffffffff\n"
              "COMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n"
              ":OUTPUT ACCEPT [0:0]\n-A FORWARD -m connmark ! --mark 0x1 -j ACCEPT\nCOMMIT\n")
    state = _state(**{"iptables-nft-v4.save": tables + K3S_NAT})
    assert trace(state, FLOW).verdict is Verdict.UNKNOWN


def test_an_nft_snat_of_the_other_family_does_nothing_to_the_flow() -> None:
    """In an ``inet`` table ``snat ip to ADDR`` translates IPv4 packets only
    (nft_nat_inet_eval); for an IPv6 flow the rule goes on, here to a masquerade. It
    was taken for the flow's translation: an IPv6 flow "seen" from an IPv4 address."""
    v6 = Flow("fd42:42::10", "fd01:2::10", port=5432)
    base = NodeCapture.read_dir(HEALTHY.parent / "healthy-v6")
    ruleset = _nft(_chain("dual", "post", "postrouting", 100, kind="nat"),
                   _rule("dual", "post", {"snat": {"family": "ip", "addr": "192.0.2.1"}}),
                   _rule("dual", "post", {"masquerade": None}))
    texts = {k: v for k, v in base.texts.items()
             if not k.startswith("iptables-") and k != "nft-ruleset.json"}
    state = NodeState.from_capture(NodeCapture({**texts, "nft-ruleset.json": ruleset}))
    result = trace(state, v6)
    assert result.verdict is Verdict.REACHES
    assert str(result.source_seen) == "fd01:1::5"


def test_iptables_save_with_counters_keeps_its_rules() -> None:
    """``iptables-save -c`` prefixes each rule with ``[packets:bytes]``: such lines were
    skipped, so a bundle saved by hand with ``-c`` lost its DROP and "reached"."""
    tables = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [10:600]\n:OUTPUT ACCEPT [0:0]\n"
              "[3:180] -A FORWARD -s 10.42.0.0/16 -j DROP\nCOMMIT\n")
    state = _state(**{"iptables-nft-v4.save": tables + K3S_NAT})
    assert trace(state, FLOW).verdict is Verdict.BLOCKED


def _ingress(device: Any, *expr: dict[str, Any], family: str = "netdev") -> list[Any]:
    chain = {"family": family, "table": "edge", "name": "in", "type": "filter",
             "hook": "ingress", "prio": 0, "policy": "accept", "dev": device}
    return [{"chain": chain}, _rule("edge", "in", *expr, family=family)]


@pytest.mark.parametrize("family", ["netdev", "inet"])
def test_an_nft_ingress_chain_on_the_pods_interface_drops_before_prerouting(
        family: str) -> None:
    """A ``netdev`` (or ``inet``) ingress chain runs before prerouting on its device:
    its drop was not seen (only prerouting, forward and postrouting were read), so the
    flow "reached"."""
    drop = _match(SADDR, {"prefix": {"addr": "10.42.0.0", "len": 16}})
    ruleset = _nft(*_ingress("cni0", drop, {"drop": None}, family=family), *MASQ_NFT)
    result = trace(_state(**{"nft-ruleset.json": ruleset}), FLOW)
    assert result.verdict is Verdict.BLOCKED
    elsewhere = _nft(*_ingress(["eth1", "docker0"], drop, {"drop": None}, family=family),
                     *MASQ_NFT)
    assert trace(_state(**{"nft-ruleset.json": elsewhere}), FLOW).verdict is Verdict.REACHES


@pytest.mark.parametrize("flags", [{"tentative": True}, {"dadfailed": True},
                                   {"tentative": True, "optimistic": True},
                                   {"deprecated": True}])
def test_ipv6_masquerade_never_picks_a_tentative_address_and_avoids_deprecated_ones(
        flags: dict[str, bool]) -> None:
    """Source selection passes over an address in duplicate address detection (or that
    failed it) and ranks a deprecated or optimistic one below the others (RFC 6724
    rule 3, ``__ipv6_dev_get_saddr``), even one sharing a longer prefix with the
    destination."""
    addresses = parse_addresses([{"ifname": "eth0", "addr_info": [
        {"local": "fd01:2::5", "prefixlen": 64, "scope": "global", **flags},
        {"local": "fd01:1::5", "prefixlen": 64, "scope": "global"}]}])
    picked = masquerade_source(addresses, "eth0", ip_address("fd01:1::1"),
                               ip_address("fd01:2::10"))
    assert str(picked) == "fd01:1::5"


def test_a_route_naming_its_nexthop_object_alone_is_read_through_it() -> None:
    """``nexthop_compat_mode`` 0: the route says ``nhid`` only; ``nexthops.json`` (``ip -j
    nexthop show``) gives the gateway and device, a group its members. An object not
    listed, or listed in a shape of another kind, leaves the route as it is (unknown)."""
    objects = [{"id": 1, "gateway": "192.168.1.1", "dev": "eth0", "flags": []},
               {"id": 2, "gateway": "192.168.1.2", "dev": "eth0", "flags": ["dead"]},
               {"id": 3, "group": [{"id": 1}, {"id": 2}]},
               {"id": 4, "group": [{"id": 1}, {"id": 99}]},
               {"id": "5", "dev": "eth0"}, "junk", {"id": 6, "group": "1/2"}]
    found = nexthop_objects(objects)
    assert sorted(found) == [1, 2, 3, 4, 6]
    routes = parse_routes([{"dst": f"10.{n}.0.0/16", "nhid": n, "flags": []}
                           for n in (1, 3, 4, 5, 6)], 4, found)
    by = {str(r.destination): r for r in routes}
    assert (str(by["10.1.0.0/16"].gateway), by["10.1.0.0/16"].device) == ("192.168.1.1", "eth0")
    assert by["10.3.0.0/16"].nexthops == ()  # the dead member is skipped: one nexthop left
    assert by["10.3.0.0/16"].device == "eth0"
    assert all(by[d].device is None for d in ("10.4.0.0/16", "10.5.0.0/16", "10.6.0.0/16"))
    state = _state(**{"routes-v4.json": json.dumps([
        *json.loads(NodeCapture.read_dir(HEALTHY).text("routes-v4.json")),
        {"dst": "192.168.2.0/24", "nhid": 1, "flags": []}]),
        "nexthops.json": json.dumps(objects)})
    assert trace(state, FLOW).verdict is not Verdict.UNKNOWN


def test_a_tcp_flags_rule_naming_an_unknown_flag_is_an_unknown_rule() -> None:
    """``--tcp-flags`` with a name iptables does not print is that rule unread (unknown),
    not the whole capture refused."""
    filter_table = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                    "-A FORWARD -p tcp --tcp-flags SYN,BOGUS SYN -j DROP\nCOMMIT\n")
    result = trace(_state(**{"iptables-nft-v4.save": filter_table + K3S_NAT}), FLOW)
    assert result.verdict is Verdict.UNKNOWN, result.render()


def test_a_loadbalancer_only_pool_felix_nats_to_is_no_destination_in_pool_finding() -> None:
    # Felix naming cali40network-ip-pools masquerades to a LoadBalancer-only pool; the
    # hint "leaves untranslated" was then wrong. The older set's Felix does not.
    old = (RULESETS / "calico-nat.save").read_text()
    new = old.replace("cali40all-ipam-pools", "cali40network-ip-pools")
    pools = json.dumps({"items": [
        {"kind": "IPPool", "spec": {"cidr": "10.42.0.0/16", "natOutgoing": True}},
        {"kind": "IPPool", "spec": {"cidr": "192.168.2.0/24", "allowedUses": ["LoadBalancer"]}},
    ]})
    d = diagnose(_state(**{"iptables-legacy-v4.save": new, "calico-ippools.json": pools}), FLOW)
    assert d.verdict is Verdict.REACHES
    assert "destination-in-calico-pool" not in [f.code for f in d.findings]
    d = diagnose(_state(**{"iptables-legacy-v4.save": old, "calico-ippools.json": pools}), FLOW)
    hint = next(f for f in d.findings if f.code == "destination-in-calico-pool")
    assert "LoadBalancer only" in hint.where
    # No Calico NAT rule captured: the hint says which versions do what.
    d = diagnose(_state(**{"calico-ippools.json": pools}), FLOW)
    hint = next(f for f in d.findings if f.code == "destination-in-calico-pool")
    assert "v3.31.6" in hint.why


def test_a_finding_on_an_nftables_rule_names_its_chain_once() -> None:
    """An nftables rule's text names its chain: ``where`` said it twice (``nft inet
    lab_filter forward: nft inet lab_filter forward: ... drop``)."""
    state = NodeState.from_capture(NodeCapture.read_dir(HEALTHY.parent / "foreign-nftables-drop"))
    d = diagnose(state, FLOW)
    finding = d.findings[0]
    assert finding.code == "foreign-table-drop", d.render()
    chain = d.trace.blocked_at.where if d.trace.blocked_at else "?"
    assert finding.where.count(chain) == 1, finding.where


def test_the_captured_nftables_tables_are_read_for_drops_as_the_iptables_backend_does() -> None:
    """``nft-ruleset.json``'s tables iptables does not show, through the reader k3snet's
    iptables backend judges its forward accepts with; iptables-nft's own tables passed
    by, and a capture that does not read gives no block rather than an error."""
    from k3snet.doctor.state import _native_blocks  # noqa: PLC0415 - the reader alone

    def table(family: str, name: str, expr: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"table": {"family": family, "name": name}},
                {"chain": {"family": family, "table": name, "name": "forward",
                           "type": "filter", "hook": "forward", "prio": 10,
                           "policy": "accept"}},
                {"rule": {"family": family, "table": name, "chain": "forward",
                          "expr": expr}}]

    drop: list[dict[str, Any]] = [
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                   "right": {"prefix": {"addr": "10.42.0.0", "len": 16}}}},
        {"drop": None}]
    [block] = _native_blocks({"nftables": table("inet", "admin", drop)})
    assert "inet admin forward" in str(block)
    assert "10.42.0.0/16" in str(block)
    assert _native_blocks({"nftables": table("ip", "filter", drop)}) == frozenset()
    for junk in (None, {"nftables": 5}, {"nftables": [*table("inet", "admin", drop)[:2],
                                                      {"rule": {"expr": "x"}}, {"chain": 1}]}):
        assert _native_blocks(junk) == frozenset()
