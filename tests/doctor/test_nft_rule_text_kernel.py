"""nftables rules in the doctor's findings and traces, as ``nft list ruleset`` prints
them, against the kernel's own text.

The doctor reads ``nft -j list ruleset``; a rule it names (the one dropping a flow, one
it cannot evaluate) was shown with every concatenation, verdict map, mark, reject or
counter as raw JSON (``{"vmap":{"data":{"set":[[{"concat":[...]}, {"drop":null}]]}...``),
which an administrator cannot find in ``nft list ruleset``. Each rule is now written as
nft prints it: compared, rule by rule (by handle), with the kernel's ``nft -a list
ruleset`` (recorded for tests/doctor/test_nft_rule_text.py).
"""

from __future__ import annotations

import json
from typing import Literal

import pytest

from k3snet.doctor import Flow, NodeState, Verdict, diagnose
from k3snet.lab.netns import run_in, temporary_netns

from .conftest import DoctorLab, Topology
from .test_nft_rule_text import differences

pytestmark = [pytest.mark.kernel]

#: Rules of the shapes admins and programs write (kube-proxy's concatenated verdict
#: maps, firewalld's ct state maps, marks, rejects, NAT, limits).
_RULESET = """table inet h_text {
 set pairs { type ipv4_addr . inet_service; elements = { 192.168.2.10 . 5432 } }
 map blocked {
  type ipv4_addr . inet_proto . inet_service : verdict
  elements = { 192.168.2.10 . tcp . 5432 : drop }
 }
 chain forward {
  type filter hook forward priority 0; policy accept;
  ip daddr . tcp dport vmap { 192.168.2.10 . 5432 : drop, 192.168.2.11 . 80 : accept }
  ip saddr . ip daddr { 10.42.0.10 . 192.168.2.10 } drop
  ip daddr . meta l4proto . th dport vmap @blocked
  ip daddr . tcp dport @pairs counter drop
  ct state vmap { established : accept, related : accept, invalid : drop }
  ip6 daddr . tcp dport { fd01:2::10 . 5432, fd01:2::/64 . 80-90 } drop
  meta mark & 0x0000ff00 == 0x00000100 ip daddr 10.0.0.0/8 reject with icmp type host-unreachable
  iifname "cni0" oifname "eth0" ip saddr 10.42.0.0/16 tcp dport { 22, 80 } drop
  icmp type vmap { echo-request : accept, destination-unreachable : drop }
  numgen random mod 2 vmap { 0 : jump a, 1 : goto b }
  tcp flags & (fin | syn | rst | ack) == syn counter
  tcp flags syn tcp option maxseg size set rt mtu
  ct state established,related accept
  ct state != { invalid, untracked } accept
  limit rate 10/second accept
  limit rate over 10/second burst 20 packets drop
  log prefix "x: " level warn
  meta mark set 0x1
  meta mark set meta mark | 0x4000
  ct mark set meta mark
  meta l4proto tcp fib daddr type local accept
  fib saddr . iif oif missing drop
  iifname { "cni0", "flannel.1" } accept
  iifname . ip saddr { "cni0" . 10.42.0.0/16 } accept
  ip saddr != 10.42.0.0/16 ip daddr 1.2.3.4-1.2.3.8 reject with tcp reset
  reject with icmpx admin-prohibited
  ct original ip saddr 10.0.0.1 ct direction reply accept
  meta nfproto ipv4 udp dport 53 notrack
  ip protocol icmp icmp type { echo-request, destination-unreachable } accept
  ip6 nexthdr ipv6-icmp icmpv6 type packet-too-big drop
  tcp dport != 22 ct state new drop
  meta mark & 0x0000ff00 != 0x00000100 return
  jump a
 }
 chain a { }
 chain b { }
 chain pre {
  type nat hook prerouting priority dstnat;
  ip daddr 10.0.0.1 tcp dport 80 dnat ip to 10.0.0.2:8080
  ip6 daddr fd00::1 tcp dport 80 dnat ip6 to [fd00::2]:8080
 }
 chain post {
  type nat hook postrouting priority srcnat;
  ip saddr 10.42.0.0/16 masquerade random,persistent
  ip saddr 10.1.0.0/16 snat ip to 1.1.1.1-1.1.1.4
 }
}
"""


#: Shapes written otherwise than nft prints them before: a mark's mask printed as a
#: prefix, raw payload values (hex), log flags and snaplen, a helper's and an ``iif``'s
#: name quoted, each family's default reject (bare ``reject``), times (``1m30s``), NAT
#: addresses from maps (``dnat ip to ip daddr map { ... }``, ``snat ip prefix to``).
_ODD_RULESET = """table inet h_odd {
 map addrs {
  type ipv4_addr : ipv4_addr; flags interval
  elements = { 10.0.0.0/8 : 192.168.0.1 }
 }
 chain forward {
  type filter hook forward priority 0; policy accept;
  meta mark & 0xffff0000 != 0x10000 accept
  meta mark & 0xffff0000 == 0x10000 accept
  @nh,96,32 0x0a000001 drop
  @ll,0,8 1 drop
  log prefix "pfx: " level debug flags all
  log flags tcp sequence,options
  log flags ip options
  log group 1 snaplen 100
  ct helper "ftp" accept
  meta iif "lo" accept
  reject
  reject with icmp port-unreachable
  ct expiration 90s accept
 }
 chain pre {
  type nat hook prerouting priority dstnat;
  dnat ip to ip daddr map { 10.0.0.1 : 192.168.0.2 }
  dnat ip to ip daddr map @addrs
  ip daddr 10.0.0.9 dnat ip to numgen inc mod 2 map { 0 : 10.0.0.1, 1 : 10.0.0.2 }
  dnat ip to ip daddr . tcp dport map { 10.0.0.1 . 80 : 10.0.0.2 . 8080 }
 }
 chain post {
  type nat hook postrouting priority srcnat;
  snat ip prefix to ip saddr map { 10.0.0.0/8 : 192.168.0.0/16 }
 }
}
table ip h_odd4 {
 chain forward {
  type filter hook forward priority 0; policy accept;
  reject
  reject with icmp host-unreachable
 }
}
table ip6 h_odd6 {
 chain forward {
  type filter hook forward priority 0; policy accept;
  reject
  reject with icmpv6 admin-prohibited
 }
}
"""

def test_every_rule_is_written_as_nft_list_ruleset_prints_it() -> None:
    with temporary_netns("nfttext") as netns:
        run_in(netns, ["nft", "-f", "-"], input_text=_RULESET)
        data = json.loads(run_in(netns, ["nft", "-j", "list", "ruleset"]).stdout)
        text = run_in(netns, ["nft", "-a", "list", "ruleset"]).stdout
    assert sum("rule" in item for item in data["nftables"]) == 37
    assert differences(data, text) == []


@pytest.mark.parametrize("shape", ["vmap", "set"])
@pytest.mark.parametrize("family", [4, 6])
def test_a_finding_names_a_concatenated_rule_as_the_kernel_prints_it(
        doctor_lab: DoctorLab, family: Literal[4, 6], shape: str) -> None:
    """A foreign drop of the flow by a concatenation (kube-proxy's and firewalld's
    shape): the finding shows its line of ``nft list ruleset``."""
    topology = Topology(family=family)
    doctor_lab.configure(topology)
    ip = "ip" if family == 4 else "ip6"
    key = f"{ip} daddr . tcp dport"
    rule = (f"{key} vmap {{ {topology.destination} . {topology.port} : drop }}"
            if shape == "vmap" else
            f"{ip} saddr . {key} {{ {topology.pod} . {topology.destination} . "
            f"{topology.port} }} counter drop")
    run_in(doctor_lab.node, ["nft", "-f", "-"], input_text=(
        "table inet h_text {\n chain forward {\n  type filter hook forward priority 0; "
        f"policy accept;\n  {rule}\n }}\n}}\n"))
    d = diagnose(NodeState.from_capture(doctor_lab.capture()),
                 Flow(topology.pod, topology.destination, port=topology.port))
    listed = run_in(doctor_lab.node, ["nft", "list", "chain", "inet", "h_text", "forward"])
    doctor_lab.reset()
    (line,) = [t.strip() for t in listed.stdout.splitlines() if "drop" in t]
    assert d.verdict is Verdict.BLOCKED, d.render()
    found = [f for f in d.findings if f.code == "foreign-table-drop"]
    assert len(found) == 1, d.render()
    finding = found[0]
    assert line in finding.where, (line, d.render())
    assert "{\"" not in d.render(), d.render()  # no JSON left


def test_every_rule_of_the_odd_shapes_is_written_as_nft_list_ruleset_prints_it() -> None:
    with temporary_netns("nftodd") as netns:
        run_in(netns, ["nft", "-f", "-"], input_text=_ODD_RULESET)
        data = json.loads(run_in(netns, ["nft", "-j", "list", "ruleset"]).stdout)
        text = run_in(netns, ["nft", "-a", "list", "ruleset"]).stdout
    assert sum("rule" in item for item in data["nftables"]) == 22
    assert differences(data, text) == []


#: Stateful statements, shown as JSON before: byte rates (``limit rate over 10
#: mbytes/second``), quotas, ``ct count``, named objects (``counter name "x"``, ``ct
#: helper set "ftp-std"``), meters
#: and a dynamic set's ``add`` / ``update``, ``synproxy``.
_STATEFUL_RULESET = """table inet h_text {
 counter x { }
 quota q { over 100 mbytes }
 ct helper ftp-std { type "ftp" protocol tcp; }
 limit lm { rate 400/minute }
 synproxy sp { mss 1460 wscale 7 }
 set m4 { type ipv4_addr; size 65535; flags dynamic,timeout; timeout 1m; }
 set c4 { type ipv4_addr; size 65535; flags dynamic; }
 chain forward {
  type filter hook forward priority 0; policy accept;
  limit rate over 10 mbytes/second drop
  limit rate 1 kbytes/minute burst 2 kbytes accept
  limit rate 400 bytes/second accept
  limit rate 2 mbytes/second burst 3000 bytes accept
  quota over 100 mbytes drop
  quota 500 kbytes accept
  ct count over 10 drop
  ct count 5 accept
  counter name "x" accept
  quota name "q" drop
  tcp dport 22 meter sshm size 65535 { ip saddr limit rate 10/second } accept
  update @m4 { ip saddr limit rate over 10/second } drop
  add @m4 { ip saddr timeout 10s } accept
  add @c4 { ip saddr ct count over 3 } drop
  tcp dport 80 ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm
  tcp dport 81 synproxy mss 1460 wscale 7
  tcp dport 82 synproxy
  tcp dport 83 synproxy name "sp"
  tcp dport 21 ct helper set "ftp-std"
  limit name "lm" accept
  limit rate 10/hour burst 1 packets accept
 }
}
"""


def test_every_stateful_rule_is_written_as_nft_list_ruleset_prints_it() -> None:
    with temporary_netns("nftstate") as netns:
        run_in(netns, ["nft", "-f", "-"], input_text=_STATEFUL_RULESET)
        data = json.loads(run_in(netns, ["nft", "-j", "list", "ruleset"]).stdout)
        text = run_in(netns, ["nft", "-a", "list", "ruleset"]).stdout
    assert sum("rule" in item for item in data["nftables"]) == 21
    assert differences(data, text) == []


#: Edge values of the stateful statements (recorded for test_nft_rule_text.py): quotas of
#: 0, a rate of 1 byte a second, a burst in another unit than the rate, ``ct count`` past
#: 2 ** 31, which ``nft -j`` prints signed.
_EDGE_RULESET = """table inet h_text {
 chain forward {
  type filter hook forward priority 0; policy accept;
  quota 0 bytes accept
  quota over 0 bytes drop
  quota 1024 bytes accept
  limit rate over 1 bytes/second drop
  limit rate 1025 bytes/second burst 1024 bytes accept
  limit rate 5 kbytes/day burst 1500 bytes accept
  ct count over 0 drop
  ct count 2147483647 accept
  ct count over 2147483648 drop
  ct count 4294967295 accept
 }
}
"""


def test_every_rule_of_edge_values_is_written_as_nft_list_ruleset_prints_it() -> None:
    with temporary_netns("nftedge") as netns:
        run_in(netns, ["nft", "-f", "-"], input_text=_EDGE_RULESET)
        data = json.loads(run_in(netns, ["nft", "-j", "list", "ruleset"]).stdout)
        text = run_in(netns, ["nft", "-a", "list", "ruleset"]).stdout
    assert sum("rule" in item for item in data["nftables"]) == 10
    assert differences(data, text) == []
