"""The ``path-mtu`` finding beside an MSS clamp, from a bundle, without root: which clamps
count (where the flow's SYN and SYN-ACK cross them, fitting the path) and which do not.
The kernel's side is tests/doctor/test_path_mtu_clamp_kernel.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from k3snet.doctor import Flow, NodeCapture, NodeState, Verdict, diagnose

_NAT = "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -s 10.42.0.0/24 -j MASQUERADE\nCOMMIT\n"
_CLAMP = "-p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS"


def _state(saves: str = "", nft: list[Any] | None = None, *, uplink_mtu: int = 1500,
           route: dict[str, Any] | None = None) -> NodeState:
    """Pods at 1500 on cni0, the way out ``mtu 1280`` (or ``route``'s)."""
    addresses = [
        {"ifname": "cni0", "mtu": 1500, "flags": ["UP"],
         "addr_info": [{"local": "10.42.0.1", "prefixlen": 24}]},
        {"ifname": "eth0", "mtu": uplink_mtu, "flags": ["UP"],
         "addr_info": [{"local": "192.168.1.5", "prefixlen": 24}]},
    ]
    routes = [
        {"dst": "10.42.0.0/24", "dev": "cni0", "scope": "link"},
        {"dst": "192.168.1.0/24", "dev": "eth0", "scope": "link"},
        {"dst": "192.168.2.0/24", "gateway": "192.168.1.1", "dev": "eth0",
         **(route if route is not None else {"metrics": [{"mtu": 1280}]})},
    ]
    files = {"addr.json": json.dumps(addresses), "routes-v4.json": json.dumps(routes),
             "iptables-nft-v4.save": saves + _NAT, "sysctl.txt": "net.ipv4.ip_forward = 1\n"}
    if nft is not None:
        files["nft-ruleset.json"] = json.dumps({"nftables": nft})
    return NodeState.from_capture(NodeCapture.from_texts(files))


def _path_mtu(state: NodeState, protocol: str = "tcp") -> Any:
    d = diagnose(state, Flow("10.42.0.10", "192.168.2.10", protocol=protocol,  # type: ignore[arg-type]
                             port=None if protocol == "icmp" else 5432))
    assert d.verdict is Verdict.REACHES, d.render()
    (finding,) = [f for f in d.findings if f.code == "path-mtu"]
    return finding


def _table(name: str, *rules: str) -> str:
    return f"*{name}\n" + "".join(f"{r}\n" for r in rules) + "COMMIT\n"


@pytest.mark.parametrize("saves", [
    _table("mangle", ":FORWARD ACCEPT [0:0]", f"-A FORWARD {_CLAMP} --clamp-mss-to-pmtu"),
    _table("filter", ":FORWARD ACCEPT [0:0]", f"-A FORWARD {_CLAMP} --set-mss 1240"),
    _table("mangle", ":POSTROUTING ACCEPT [0:0]",
           f"-A POSTROUTING {_CLAMP} --clamp-mss-to-pmtu"),
    # --set-mss is taken in any chain, before routing too
    _table("mangle", ":PREROUTING ACCEPT [0:0]", f"-A PREROUTING {_CLAMP} --set-mss 1000"),
    # in a user chain the flow jumps to
    _table("mangle", ":FORWARD ACCEPT [0:0]", ":MSS - [0:0]", "-A FORWARD -p tcp -j MSS",
           f"-A MSS {_CLAMP} --clamp-mss-to-pmtu"),
])
def test_a_clamp_the_syn_and_syn_ack_cross_fitting_the_path_makes_path_mtu_an_info(
        saves: str) -> None:
    finding = _path_mtu(_state(saves))
    assert finding.severity == "info", finding
    assert "TCPMSS" in finding.what, finding
    assert "over 1280 bytes" in finding.what, finding
    assert _path_mtu(_state(saves), "udp").severity == "warning"  # clamping helps TCP alone
    assert _path_mtu(_state(saves), "icmp").severity == "warning"


@pytest.mark.parametrize("saves", [
    "",
    _table("mangle", ":FORWARD ACCEPT [0:0]", f"-A FORWARD {_CLAMP} --set-mss 1241"),
    _table("mangle", ":FORWARD ACCEPT [0:0]", f"-A FORWARD -o eth9 {_CLAMP} --clamp-mss-to-pmtu"),
    _table("mangle", ":FORWARD ACCEPT [0:0]", f"-A FORWARD -i cni0 {_CLAMP} --clamp-mss-to-pmtu"),
    _table("mangle", ":FORWARD ACCEPT [0:0]",
           "-A FORWARD -p tcp -m tcp --tcp-flags SYN,ACK SYN,ACK -j TCPMSS --clamp-mss-to-pmtu"),
    _table("mangle", ":FORWARD ACCEPT [0:0]", f"-A FORWARD -p udp {_CLAMP} --clamp-mss-to-pmtu"),
    # behind an accept the flow meets first: the clamp is never reached
    _table("filter", ":FORWARD ACCEPT [0:0]", "-A FORWARD -j ACCEPT",
           f"-A FORWARD {_CLAMP} --clamp-mss-to-pmtu"),
    # --clamp-mss-to-pmtu before routing (the kernel refuses it there) is no clamp
    _table("mangle", ":PREROUTING ACCEPT [0:0]", f"-A PREROUTING {_CLAMP} --clamp-mss-to-pmtu"),
])
def test_a_clamp_missing_the_syn_or_the_syn_ack_or_too_large_keeps_the_path_mtu_warning(
        saves: str) -> None:
    assert _path_mtu(_state(saves)).severity == "warning"


def test_clamping_to_an_ipv4_route_s_mtu_over_its_device_s_is_no_fix() -> None:
    """``--clamp-mss-to-pmtu`` takes the route's mtu (1500), over eth0's 1400: segments
    sized for 1500 still die at eth0; a ``--set-mss`` fitting 1400 does fix it."""
    route = {"metrics": [{"mtu": 1500}]}
    pmtu = _table("mangle", ":FORWARD ACCEPT [0:0]", f"-A FORWARD {_CLAMP} --clamp-mss-to-pmtu")
    finding = _path_mtu(_state(pmtu, uplink_mtu=1400, route=route))
    assert finding.severity == "warning", finding
    assert "route's mtu 1500" in finding.what, finding
    fixed = _table("mangle", ":FORWARD ACCEPT [0:0]", f"-A FORWARD {_CLAMP} --set-mss 1360")
    assert _path_mtu(_state(fixed, uplink_mtu=1400, route=route)).severity == "info"


def _nft_chain(hook: str, *statements: list[Any]) -> list[Any]:
    return [{"table": {"family": "inet", "name": "t", "handle": 1}},
            {"chain": {"family": "inet", "table": "t", "name": "c", "handle": 1,
                       "type": "filter", "hook": hook, "prio": -150, "policy": "accept"}},
            *({"rule": {"family": "inet", "table": "t", "chain": "c", "handle": 2 + i,
                        "expr": expr}} for i, expr in enumerate(statements))]


_SYN = {"match": {"op": "in", "left": {"payload": {"protocol": "tcp", "field": "flags"}},
                  "right": "syn"}}


def _maxseg(value: Any) -> dict[str, Any]:
    return {"mangle": {"key": {"tcp option": {"name": "maxseg", "field": "size"}},
                       "value": value}}


@pytest.mark.parametrize(("hook", "value", "severity"), [
    ("forward", {"rt": {"key": "mtu"}}, "info"),
    ("postrouting", {"rt": {"key": "mtu"}}, "info"),
    ("forward", 1240, "info"),
    ("forward", 1241, "warning"),
    ("prerouting", {"rt": {"key": "mtu"}}, "warning"),  # refused there: no route yet
    ("forward", {"meta": {"key": "mark"}}, "warning"),  # not read: counted as no clamp
    ("forward", -1, "warning"),  # no MSS nft lists (an edited bundle): no clamp
])
def test_an_nft_maxseg_clamp_counts_where_and_when_it_fits(hook: str, value: Any,
                                                           severity: str) -> None:
    nft = _nft_chain(hook, [_SYN, _maxseg(value)])
    state = _state(nft=nft)
    assert _path_mtu(state).severity == severity
    # a clamp decides nothing: the trace is as certain as without it
    d = diagnose(state, Flow("10.42.0.10", "192.168.2.10", port=5432))
    assert not [f for f in d.findings if f.code == "unknown-rules"], d.render()


@pytest.mark.parametrize("protocol", ["udp", "icmp"])
def test_an_nft_clamp_breaks_off_its_rule_for_other_protocols_so_a_verdict_after_it_is_tcp_s(
        protocol: str) -> None:
    """``tcp option maxseg size set rt mtu drop``: nft puts no ``tcp`` match before a set,
    and the kernel's nft_exthdr breaks off the rule on a packet that is not TCP (shown in
    tests/doctor/test_path_mtu_clamp_kernel.py): the drop is TCP's alone."""
    state = _state(nft=_nft_chain("forward", [_maxseg({"rt": {"key": "mtu"}}), {"drop": None}]))
    other = diagnose(state, Flow("10.42.0.10", "192.168.2.10", protocol=protocol,  # type: ignore[arg-type]
                                 port=None if protocol == "icmp" else 5432))
    assert other.verdict is Verdict.REACHES, other.render()
    tcp = diagnose(state, Flow("10.42.0.10", "192.168.2.10", port=5432))
    assert tcp.verdict is Verdict.BLOCKED, tcp.render()


def test_a_rule_not_evaluated_whose_rest_is_an_nft_clamp_leaves_the_verdict_certain() -> None:
    """A match the reader cannot evaluate (``meta skgid 0``) before a clamp: whether the
    rule matched or not, the flow goes on (a clamp decides nothing), as for iptables'
    ``-m owner ... -j TCPMSS``; the clamp is not counted (it may not have matched)."""
    skgid = {"match": {"op": "==", "left": {"meta": {"key": "skgid"}}, "right": 0}}
    state = _state(nft=_nft_chain("forward", [skgid, _SYN, _maxseg({"rt": {"key": "mtu"}})]))
    for protocol in ("tcp", "udp"):
        d = diagnose(state, Flow("10.42.0.10", "192.168.2.10", protocol=protocol,
                                 port=5432))
        assert d.verdict is Verdict.REACHES, d.render()
    assert _path_mtu(state).severity == "warning"


@pytest.mark.parametrize("own_mtu", [None, 1280])
def test_a_clamp_to_pmtu_takes_the_node_s_own_route_for_the_syn_ack_not_the_pods_policy_route(
        own_mtu: int | None) -> None:
    """Pods leave through table 100 (``iif cni0``), whose route carries ``mtu 1280``; the
    kernel clamps the SYN-ACK to the route the node itself takes to the destination (no
    ``iif``): main's, by eth1, at 1500 unless it carries the mtu too (shown in
    tests/doctor/test_path_mtu_clamp_kernel.py)."""
    addresses = [
        {"ifname": "cni0", "mtu": 1500, "flags": ["UP"],
         "addr_info": [{"local": "10.42.0.1", "prefixlen": 24}]},
        {"ifname": "eth0", "mtu": 1500, "flags": ["UP"],
         "addr_info": [{"local": "192.168.1.5", "prefixlen": 24}]},
        {"ifname": "eth1", "mtu": 1500, "flags": ["UP"],
         "addr_info": [{"local": "192.168.4.5", "prefixlen": 24}]},
    ]
    own: dict[str, Any] = {"metrics": [{"mtu": own_mtu}]} if own_mtu else {}
    routes = [
        {"dst": "10.42.0.0/24", "dev": "cni0", "scope": "link"},
        {"dst": "192.168.1.0/24", "dev": "eth0", "scope": "link"},
        {"dst": "192.168.4.0/24", "dev": "eth1", "scope": "link"},
        {"dst": "192.168.2.0/24", "gateway": "192.168.4.1", "dev": "eth1", **own},
        {"dst": "192.168.2.0/24", "gateway": "192.168.1.1", "dev": "eth0", "table": "100",
         "metrics": [{"mtu": 1280}]},
    ]
    rules = [{"priority": 0, "src": "all", "table": "local"},
             {"priority": 100, "src": "all", "iif": "cni0", "table": "100"},
             {"priority": 32766, "src": "all", "table": "main"},
             {"priority": 32767, "src": "all", "table": "default"}]
    files = {"addr.json": json.dumps(addresses), "routes-v4.json": json.dumps(routes),
             "rules-v4.json": json.dumps(rules),
             "iptables-nft-v4.save": _table("mangle", ":FORWARD ACCEPT [0:0]",
                                            f"-A FORWARD {_CLAMP} --clamp-mss-to-pmtu")
             + _NAT, "sysctl.txt": "net.ipv4.ip_forward = 1\n"}
    finding = _path_mtu(NodeState.from_capture(NodeCapture.from_texts(files)))
    assert "leave by eth0" in finding.what, finding
    assert finding.severity == ("info" if own_mtu else "warning"), finding


@pytest.mark.parametrize("verdict", ["drop", "accept"])
def test_an_nft_maxseg_match_breaks_off_its_rule_for_other_protocols_and_is_unknown_for_tcp(
        verdict: str) -> None:
    """``tcp option maxseg size 1-500 drop``: nft puts no ``tcp`` match before it either,
    and the kernel's nft_exthdr breaks off the rule on a packet that is not TCP (no header
    to read the option from), as for the set; a TCP SYN's MSS is not traced: unknown."""
    mss = {"match": {"op": "==", "left": {"tcp option": {"name": "maxseg", "field": "size"}},
                     "right": {"range": [1, 500]}}}
    state = _state(nft=_nft_chain("forward", [mss, {verdict: None}]))
    for protocol in ("udp", "icmp"):
        d = diagnose(state, Flow("10.42.0.10", "192.168.2.10", protocol=protocol,
                                 port=None if protocol == "icmp" else 5432))
        assert d.verdict is Verdict.REACHES, d.render()
        assert not [f for f in d.findings if f.code == "unknown-rules"], d.render()
    tcp = diagnose(state, Flow("10.42.0.10", "192.168.2.10", port=5432))
    assert [f for f in tcp.findings if f.code == "unknown-rules"], tcp.render()
    if verdict == "drop":
        assert tcp.verdict is Verdict.UNKNOWN, tcp.render()


def test_a_rule_not_evaluated_whose_verdict_follows_an_nft_clamp_decides_for_tcp_alone() -> None:
    """``meta skgid 0 tcp option maxseg size set rt mtu drop``: whether the match held or
    not, a UDP datagram or an ICMP echo breaks off the rule at the clamp, so its verdict is
    certain; a TCP SYN's depends on the match: unknown."""
    skgid = {"match": {"op": "==", "left": {"meta": {"key": "skgid"}}, "right": 0}}
    state = _state(nft=_nft_chain("forward", [skgid, _maxseg({"rt": {"key": "mtu"}}),
                                              {"drop": None}]))
    for protocol in ("udp", "icmp"):
        d = diagnose(state, Flow("10.42.0.10", "192.168.2.10", protocol=protocol,
                                 port=None if protocol == "icmp" else 5432))
        assert d.verdict is Verdict.REACHES, d.render()
    tcp = diagnose(state, Flow("10.42.0.10", "192.168.2.10", port=5432))
    assert tcp.verdict is Verdict.UNKNOWN, tcp.render()
