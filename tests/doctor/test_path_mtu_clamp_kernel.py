"""An MSS clamp the flow's SYN and SYN-ACK cross, against the kernel.

The node's route to the database carries ``mtu 1280`` while the pod's interface is at
1500: the ``path-mtu`` warning advises clamping TCP's MSS on the node. An operator who
did (iptables-nft, iptables-legacy or nftables, in mangle or filter FORWARD /
POSTROUTING) kept the warning: the evaluators passed over ``-j TCPMSS`` and nft's ``tcp
option maxseg size set`` without recording them. The kernel's own view: the MSS the
pod's socket takes from the SYN-ACK (``TCP_MAXSEG`` once connected, plus the 12 bytes
of the timestamps option it leaves out) is 1240 (IPv6: 1220) behind a clamp that fits
the path, 1460 (1440) without one, or behind one the flow's packets do not match. A
TCP flow so covered is an ``info`` finding naming the clamp; UDP keeps the warning
(clamping helps TCP alone).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any, Literal

import pytest

from k3snet.doctor import Flow, NodeState, Verdict, diagnose
from k3snet.lab.netns import run_in

from .conftest import DEST_NETS, PORT, UPLINKS, DoctorLab, Topology, to_v6

pytestmark = [pytest.mark.kernel]

_MSS = """
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
print(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG))
"""

_HEADERS = {4: 40, 6: 60}
_TIMESTAMPS = 12
"""The timestamps option in each segment, which ``TCP_MAXSEG`` takes off the MSS."""


def _clamp(doctor_lab: DoctorLab, family: Literal[4, 6], flavour: str, mss: str,  # noqa: PLR0917 - a rule's parts
           match: str = "", where: str = "mangle FORWARD") -> None:
    """A clamp rule on the node: ``mss`` is ``pmtu`` or a number; ``match`` more matches
    (iptables words, or nft's expression); ``where`` the iptables table and chain (nft:
    the hook's chain, ``forward`` unless ``where`` names POSTROUTING)."""
    node = doctor_lab.node
    if flavour == "nft":
        value = "rt mtu" if mss == "pmtu" else mss
        hook = "postrouting" if where.endswith("POSTROUTING") else "forward"
        script = (f"table inet h_clamp {{\n chain {hook} {{\n  type filter hook {hook} "
                  f"priority -150; policy accept;\n  {match} tcp flags syn tcp option "
                  f"maxseg size set {value}\n }}\n}}\n")
        run_in(node, ["nft", "-f", "-"], input_text=script)
        return
    tool = ("iptables" if family == 4 else "ip6tables") + (
        "-legacy" if flavour == "legacy" else "-nft")
    target = ["--clamp-mss-to-pmtu"] if mss == "pmtu" else ["--set-mss", mss]
    table, chain = where.split()
    if flavour == "legacy":
        doctor_lab.legacy_used = True
        _LEGACY_CLAMPED.setdefault(node, set()).add(table)
    run_in(node, [tool, "-t", table, "-A", chain, *match.split(), "-p", "tcp",
                  "--tcp-flags", "SYN,RST", "SYN", "-j", "TCPMSS", *target])


#: The iptables-legacy tables a clamp was put in, by the node's namespace, since they
#: were last emptied: only those are (two processes a test, most tests make none).
_LEGACY_CLAMPED: dict[str, set[str]] = {}


@pytest.fixture(autouse=True)
def _no_legacy_clamp_left(doctor_lab: DoctorLab) -> Iterator[None]:
    """The lab's reset leaves iptables-legacy's mangle table be: a legacy clamp's table is
    emptied after the test that made it."""
    yield
    _unclamp(doctor_lab)


def _unclamp(doctor_lab: DoctorLab) -> None:
    for table in sorted(_LEGACY_CLAMPED.pop(doctor_lab.node, set())):
        for tool in ("iptables-legacy", "ip6tables-legacy"):
            run_in(doctor_lab.node, [tool, "-t", table, "-F"], check=False)


def _setup(doctor_lab: DoctorLab, family: Literal[4, 6]) -> Topology:
    topology = Topology(family=family)
    doctor_lab.configure(topology)
    convert = to_v6 if family == 6 else str
    network, gateway = convert(DEST_NETS["plain"]), convert(UPLINKS["eth0"][1])
    run_in(doctor_lab.node, ["ip", f"-{family}", "route", "replace", network, "via", gateway,
                             "dev", "eth0", "mtu", "1280", "proto", "static"])
    return topology


def _pod_mss(doctor_lab: DoctorLab, topology: Topology) -> int:
    # Standard library only: no site packages to import (-I -S).
    out = run_in(doctor_lab.names["pod"], [sys.executable, "-I", "-S", "-c", _MSS,
                                           topology.destination, str(PORT)]).stdout
    return int(out.strip()) + _TIMESTAMPS


def _path_mtu(doctor_lab: DoctorLab, topology: Topology, protocol: str = "tcp",
              state: NodeState | None = None) -> list[Any]:
    """The ``path-mtu`` findings of ``topology``'s flow over ``protocol``, diagnosed from
    ``state`` (default: the node captured now)."""
    if state is None:
        state = NodeState.from_capture(doctor_lab.capture())
    d = diagnose(state, Flow(topology.pod, topology.destination, protocol=protocol,  # type: ignore[arg-type]
                             port=topology.port))
    return [f for f in d.findings if f.code == "path-mtu"]


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize(("flavour", "mss"), [("nft-tables", "pmtu"), ("legacy", "pmtu"),
                                              ("nft", "pmtu"), ("nft", "fits"),
                                              ("nft-tables", "fits")])
def test_an_mss_clamp_fitting_the_path_makes_path_mtu_an_info_for_tcp_and_not_udp(
        doctor_lab: DoctorLab, family: Literal[4, 6], flavour: str, mss: str) -> None:
    topology = _setup(doctor_lab, family)
    fits = str(1280 - _HEADERS[family])
    _clamp(doctor_lab, family, "iptables-nft" if flavour == "nft-tables" else flavour,
           fits if mss == "fits" else "pmtu")
    assert _pod_mss(doctor_lab, topology) == int(fits)  # the kernel clamped the SYN-ACK
    state = NodeState.from_capture(doctor_lab.capture())  # one node, both protocols
    (tcp,) = _path_mtu(doctor_lab, topology, state=state)
    assert tcp.severity == "info", tcp
    assert "clamped" in tcp.what, tcp
    assert ("TCPMSS" if flavour != "nft" else "maxseg") in tcp.what, tcp
    (udp,) = _path_mtu(doctor_lab, topology, "udp", state=state)
    assert udp.severity == "warning", udp


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("flavour", ["iptables-nft", "legacy", "nft"])
def test_a_clamp_the_flow_does_not_match_or_too_large_keeps_the_path_mtu_warning(
        doctor_lab: DoctorLab, family: Literal[4, 6], flavour: str) -> None:
    topology = _setup(doctor_lab, family)
    unmatched = 'oifname "eth9"' if flavour == "nft" else "-o eth9"
    _clamp(doctor_lab, family, flavour, "pmtu", unmatched)
    _clamp(doctor_lab, family, flavour, str(1300 - _HEADERS[family]))  # 20 bytes over
    full = 1500 - _HEADERS[family]
    assert _pod_mss(doctor_lab, topology) > 1280 - _HEADERS[family]  # segments too large
    (finding,) = _path_mtu(doctor_lab, topology)
    assert finding.severity == "warning", finding
    _setup(doctor_lab, family)  # no clamp
    _unclamp(doctor_lab)
    assert _pod_mss(doctor_lab, topology) == full  # nothing clamps: the kernel's own MSS


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("flavour", ["iptables-nft", "nft"])
def test_a_clamp_of_the_syn_alone_keeps_the_warning_the_pod_s_mss_comes_from_the_syn_ack(
        doctor_lab: DoctorLab, family: Literal[4, 6], flavour: str) -> None:
    """A clamp matching only what arrives from the pods (``-i cni0``) lowers the SYN's
    MSS, which sizes the destination's segments; the pod sizes its own by the SYN-ACK's,
    which crosses it on the way back to the pod unclamped."""
    topology = _setup(doctor_lab, family)
    _clamp(doctor_lab, family, flavour, "pmtu",
           'iifname "cni0"' if flavour == "nft" else "-i cni0")
    assert _pod_mss(doctor_lab, topology) == 1500 - _HEADERS[family]
    (finding,) = _path_mtu(doctor_lab, topology)
    assert finding.severity == "warning", finding


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize(("flavour", "where"), [("iptables-nft", "filter FORWARD"),
                                                ("legacy", "mangle POSTROUTING"),
                                                ("nft", "POSTROUTING")])
def test_a_clamp_in_filter_forward_or_in_postrouting_counts_too(
        doctor_lab: DoctorLab, family: Literal[4, 6], flavour: str, where: str) -> None:
    topology = _setup(doctor_lab, family)
    _clamp(doctor_lab, family, flavour, "pmtu", where=where)
    assert _pod_mss(doctor_lab, topology) == 1280 - _HEADERS[family]
    (finding,) = _path_mtu(doctor_lab, topology)
    assert finding.severity == "info", finding


@pytest.mark.parametrize("family", [4, 6])
def test_a_clamp_behind_an_accept_the_flow_meets_first_is_no_clamp(
        doctor_lab: DoctorLab, family: Literal[4, 6]) -> None:
    """filter FORWARD accepts the flow before its clamp; the same clamp in mangle FORWARD,
    which the kernel runs before filter, counts."""
    topology = _setup(doctor_lab, family)
    tool = "iptables-nft" if family == 4 else "ip6tables-nft"
    run_in(doctor_lab.node, [tool, "-I", "FORWARD", "-j", "ACCEPT"])
    _clamp(doctor_lab, family, "iptables-nft", "pmtu", where="filter FORWARD")
    assert _pod_mss(doctor_lab, topology) == 1500 - _HEADERS[family]
    (finding,) = _path_mtu(doctor_lab, topology)
    assert finding.severity == "warning", finding
    _clamp(doctor_lab, family, "iptables-nft", "pmtu")
    assert _pod_mss(doctor_lab, topology) == 1280 - _HEADERS[family]
    (finding,) = _path_mtu(doctor_lab, topology)
    assert finding.severity == "info", finding


_UDP = """
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
socket.socket(family, socket.SOCK_DGRAM).sendto(b"x", (sys.argv[1], int(sys.argv[2])))
"""


@pytest.mark.parametrize(("rule", "tcp_verdict"), [
    ("tcp option maxseg size set rt mtu drop", Verdict.BLOCKED),
    # a match on the option (the SYN's MSS is not traced: TCP's verdict is unknown)
    ("tcp option maxseg size 1-500 drop", Verdict.UNKNOWN),
])
@pytest.mark.parametrize("family", [4, 6])
def test_an_nft_clamp_breaks_off_its_rule_for_udp_so_its_verdict_is_tcp_s_alone(
        doctor_lab: DoctorLab, family: Literal[4, 6], rule: str, tcp_verdict: Verdict) -> None:
    """``tcp option maxseg size set rt mtu drop`` (no ``tcp`` match before it: nft adds no
    dependency to a set, nor to a match on the option): the kernel's nft_exthdr breaks off
    the rule on a packet that is not TCP, so the drop after it is TCP's alone; a UDP
    datagram passes on."""
    topology = _setup(doctor_lab, family)
    run_in(doctor_lab.node, ["nft", "-f", "-"], input_text=(
        "table inet h_clamp {\n chain forward {\n  type filter hook forward priority -150; "
        f"policy accept;\n  {rule}\n }}\n"
        " chain postrouting {\n  type filter hook postrouting priority 0; policy accept;\n"
        "  meta l4proto udp counter\n }\n}\n"))
    run_in(doctor_lab.names["pod"], [sys.executable, "-I", "-S", "-c", _UDP, topology.destination,
                                     str(PORT)])
    ruleset = json.loads(run_in(doctor_lab.node, ["nft", "-j", "list", "table", "inet",
                                                  "h_clamp"]).stdout)
    (counter,) = [s["counter"] for item in ruleset["nftables"] if "rule" in item
                  for s in item["rule"]["expr"] if "counter" in s]
    assert counter["packets"] == 1  # the kernel let the datagram past the drop
    state = NodeState.from_capture(doctor_lab.capture())
    for protocol, verdict in (("udp", Verdict.REACHES), ("tcp", tcp_verdict)):
        d = diagnose(state, Flow(topology.pod, topology.destination, protocol=protocol,  # type: ignore[arg-type]
                                 port=topology.port))
        assert d.verdict is verdict, d.render()


@pytest.mark.parametrize("family", [4, 6])
def test_clamping_to_a_route_s_mtu_over_its_device_s_leaves_the_pod_s_mss_too_large(
        doctor_lab: DoctorLab, family: Literal[4, 6]) -> None:
    """The route to the database at ``mtu 1500`` through eth0 at 1400: the kernel's
    ``--clamp-mss-to-pmtu`` takes the route's mtu, so the pod's MSS stays 1460 (IPv6
    1440: segments of 1500 bytes, which eth0 drops, or IPv6 answers with Packet Too Big)
    and the warning stays; ``--set-mss`` fitting 1400 does fix it."""
    topology = _setup(doctor_lab, family)
    node, headers = doctor_lab.node, _HEADERS[family]
    convert = to_v6 if family == 6 else str
    run_in(node, ["ip", "link", "set", "eth0", "mtu", "1400"])
    try:
        run_in(node, ["ip", f"-{family}", "route", "replace", convert(DEST_NETS["plain"]),
                      "via", convert(UPLINKS["eth0"][1]), "dev", "eth0", "mtu", "1500",
                      "proto", "static"])
        _clamp(doctor_lab, family, "iptables-nft", "pmtu")
        assert _pod_mss(doctor_lab, topology) == 1500 - headers
        (finding,) = _path_mtu(doctor_lab, topology)
        assert finding.severity == "warning", finding
        _clamp(doctor_lab, family, "iptables-nft", str(1400 - headers))
        assert _pod_mss(doctor_lab, topology) == 1400 - headers
        (finding,) = _path_mtu(doctor_lab, topology)
    finally:
        run_in(node, ["ip", "link", "set", "eth0", "mtu", "1500"])
    assert finding.severity == "info", finding


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("flavour", ["iptables-nft", "legacy", "nft"])
def test_a_clamp_of_new_packets_alone_misses_the_syn_ack_which_is_established(
        doctor_lab: DoctorLab, family: Literal[4, 6], flavour: str) -> None:
    """``--ctstate NEW`` / ``ct state new``: the SYN-ACK is the connection's reply,
    ``established``, so it crosses unclamped and the pod's MSS stays the kernel's own."""
    topology = _setup(doctor_lab, family)
    _clamp(doctor_lab, family, flavour, "pmtu",
           "ct state new" if flavour == "nft" else "-m conntrack --ctstate NEW")
    assert _pod_mss(doctor_lab, topology) == 1500 - _HEADERS[family]
    (finding,) = _path_mtu(doctor_lab, topology)
    assert finding.severity == "warning", finding
    _clamp(doctor_lab, family, flavour, "pmtu",
           "ct state established" if flavour == "nft" else "-m conntrack --ctstate ESTABLISHED")
    assert _pod_mss(doctor_lab, topology) == 1280 - _HEADERS[family]
    (finding,) = _path_mtu(doctor_lab, topology)
    assert finding.severity == "info", finding



@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("flavour", ["iptables-nft", "nft"])
def test_a_clamp_to_pmtu_misses_a_path_mtu_only_the_pods_policy_route_carries(
        doctor_lab: DoctorLab, family: Literal[4, 6], flavour: str) -> None:
    """Pods leave through table 100 (``iif cni0 lookup 100``), whose route to the database
    carries ``mtu 1280``; the node's own route (main, by eth1) none. The SYN-ACK's clamp
    takes the route the node itself takes to its source (no ``iif``), not the pods': the
    pod's MSS stays 1460 (1440) and so does the warning; with ``mtu 1280`` on the node's
    own route too, the clamp fits."""
    topology = Topology(family=family, route="policy")
    doctor_lab.configure(topology)
    convert = to_v6 if family == 6 else str
    network = convert(DEST_NETS["plain"])
    run_in(doctor_lab.node, ["ip", f"-{family}", "route", "replace", network, "via",
                             convert(UPLINKS["eth0"][1]), "dev", "eth0", "mtu", "1280",
                             "table", "100"])
    _clamp(doctor_lab, family, flavour, "pmtu")
    assert _pod_mss(doctor_lab, topology) == 1500 - _HEADERS[family]
    (finding,) = _path_mtu(doctor_lab, topology)
    assert finding.severity == "warning", finding
    run_in(doctor_lab.node, ["ip", f"-{family}", "route", "replace", network, "via",
                             convert(UPLINKS["eth1"][1]), "dev", "eth1", "mtu", "1280",
                             "proto", "static"])
    assert _pod_mss(doctor_lab, topology) == 1280 - _HEADERS[family]
    (finding,) = _path_mtu(doctor_lab, topology)
    assert finding.severity == "info", finding
