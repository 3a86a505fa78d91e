"""A lab for the doctor: a K3s-like node whose egress knobs are set per test.

::

    pod ns            node ns                         router ns                 db ns
    eth0 10.42.0.10 - cni0 10.42.0.1/24
                      eth0 192.168.1.5/24   ------   eth0 192.168.1.1
                      eth1 192.168.4.5/24   ------   eth2 192.168.4.1
                                                     eth1 192.168.2.1     ---  eth0 192.168.2.10
                                                                                    192.168.2.11
                                                          10.42.200.1          10.42.200.10
                                                          10.43.0.1            10.43.0.10

The router forwards and knows no way to the pod network, as in the seed lab; the
database also answers on ``10.42.200.10``, inside the pod CIDR ``10.42.0.0/16``
(the "overlapping destination"), and on ``10.43.0.10``, inside K3s' service CIDR
``10.43.0.0/16``. kube-proxy-like rules (iptables-nft, iptables-legacy or
kube-proxy's nftables mode) give the Service ``lab/db`` (ClusterIP
``10.43.0.100:80``, NodePort ``30432``) two endpoints, ``192.168.2.10:5432`` and
``192.168.2.11:5432``, and the Service ``lab/other`` the ClusterIP ``10.43.0.10:5432``
(the external database's address) with an endpoint on another node's pod network
that this lab does not route. Every link also carries IPv6 (:data:`V6`: ``10.42.0.10``
is ``fd42:42::10`` and so on); a topology of family 6 is the same node written with
the IPv6 tools and addresses (:func:`to_v6`). Only the node's state changes between examples:
:meth:`DoctorLab.configure` resets it and applies a :class:`Topology`. Nothing is
done in the root namespace; the namespaces are deleted when the fixture ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from ipaddress import IPv4Network
from pathlib import Path
from typing import Literal

import attrs
import pytest

from k3snet.doctor import Diagnosis, Flow, NodeCapture, NodeState, Trace, diagnose, trace
from k3snet.lab import _echo_server, _probe
from k3snet.lab.netns import await_ipv6_ready, run_in, temporary_netns
from tests.dropped import mib

POD = "10.42.0.10"
DESTINATIONS = {"plain": "192.168.2.10", "overlap": "10.42.200.10",
                "service-overlap": "10.43.0.10", "service": "10.43.0.100",
                "nodeport": "192.168.1.5"}
#: The network the node's routes carry the flow to (a Service's: its endpoints').
DEST_NETS = {"plain": "192.168.2.0/24", "overlap": "10.42.200.0/24",
             "service-overlap": "10.43.0.0/24", "service": "192.168.2.0/24",
             "nodeport": "192.168.2.0/24"}
SERVICE_CIDR = "10.43.0.0/16"

#: Each IPv4 address and network of the lab, and its IPv6 twin.
V6 = {
    "10.42.0.10": "fd42:42::10", "10.42.0.1": "fd42:42::1", "10.42.0.0/16": "fd42:42::/56",
    "10.42.0.0/24": "fd42:42::/64", "10.42.200.10": "fd42:42:0:c8::10",
    "10.42.200.1": "fd42:42:0:c8::1", "10.42.200.0/24": "fd42:42:0:c8::/64",
    "10.42.1.5": "fd42:42:0:1::5",
    "10.43.0.0/16": "fd43:43::/112", "10.43.0.0/24": "fd43:43::/120", "10.43.0.10": "fd43:43::10",
    "10.43.0.1": "fd43:43::1", "10.43.0.100": "fd43:43::64",
    "192.168.1.5": "fd01:1::5", "192.168.1.1": "fd01:1::1", "192.168.1.0/24": "fd01:1::/64",
    "192.168.4.5": "fd01:4::5", "192.168.4.1": "fd01:4::1", "192.168.4.0/24": "fd01:4::/64",
    "192.168.2.10": "fd01:2::10", "192.168.2.11": "fd01:2::11", "192.168.2.1": "fd01:2::1",
    "192.168.2.0/24": "fd01:2::/64", "224.0.0.0/4": "ff00::/8",
}
_V6_PREFIXLEN = {"/24": "/64"}
#: A ``DROP`` policy's or rule's counter in ``iptables-save -c``: ``:FORWARD DROP [3:180]``,
#: ``[3:180] -A FORWARD -s 10.42.0.0/16 -j DROP``.
_DROP_COUNTER = re.compile(r"^(?::\S+ DROP \[(?P<policy>\d+):\d+\]"
                           r"|\[(?P<rule>\d+):\d+\] -A .* -j DROP)$", re.MULTILINE)
#: An nftables rule's counter on a rule that drops (``counter packets 3 bytes 180 drop``),
#: or on the last rule of a chain whose policy drops (its comment says so), in ``nft list``.
_NFT_DROP_COUNTER = re.compile(r"counter packets (\d+) bytes \d+ "
                               r"(?:drop|reject|comment \"to the drop policy\")")
#: A rule's ``drop`` verdict, at the end of its line (not a chain's ``policy drop;``).
_LAST_DROP = re.compile(r"(?<![\w-])drop(?=[ \t]*(?:\n|$))")
#: The kernel's own counters of a packet the lab drops where no rule counts it, by family:
#: ``(role, file under /proc/net, key)``. IPv4: a node that does not forward
#: (``InAddrErrors``), strict ``rp_filter`` (``IPReversePathFilter``), no route on the node
#: or, for the replies, on the router (``InNoRoutes``). IPv6: a node that does not forward.
#: Each counts only the flow's packets in the lab (IPv6's ``InNoRoutes`` does not: the
#: links' own traffic bumps it; nor does anything count a blackhole route's drop).
_DROP_MIBS: dict[int, tuple[tuple[str, str, str], ...]] = {
    4: (("node", "snmp", "Ip:InAddrErrors"), ("node", "netstat", "TcpExt:IPReversePathFilter"),
        ("node", "netstat", "IpExt:InNoRoutes"), ("router", "netstat", "IpExt:InNoRoutes")),
    6: (("node", "snmp6", "Ip6InAddrErrors"),),
}
_IPV4 = re.compile(r"(?<![\w.:])(\d+\.\d+\.\d+\.\d+)(/\d+|:\d+)?(?![\w.])")


def counted(script: str) -> str:
    """An nftables script whose rules ending in ``drop`` count what they drop first
    (``... counter drop``): the kernel's count that ends a probe of a dropped flow
    (:meth:`DoctorLab.answer_or_drop`) at once. A counter changes no verdict, and the
    doctor reads it as the no-op it is."""
    return _LAST_DROP.sub("counter drop", script)


def to_v6(text: str) -> str:
    """``text`` (rules, routes, addresses of the lab) with every IPv4 address and network
    replaced by its twin in :data:`V6`; ``ADDR:PORT`` becomes ``[ADDR6]:PORT``, a
    ``/32`` host ``/128``, an interface address ``/24`` a ``/64`` (``/120`` in the service
    CIDR). nftables ``ip`` matches and tables become ``ip6``."""
    def one(match: re.Match[str]) -> str:
        address, suffix = match[1], match[2] or ""
        if suffix.startswith(":"):
            return f"[{V6[address]}]{suffix}"
        if suffix in ("", "/32"):
            return V6[address] + ("/128" if suffix else "")
        if address + suffix in V6:
            return V6[address + suffix]
        # An interface address with its prefix length.
        return V6[address] + ("/120" if address.startswith("10.43.") else "/64")
    text = _IPV4.sub(one, text)
    text = re.sub(r"\bip (saddr|daddr)\b", r"ip6 \1", text)
    text = re.sub(r"\btable ip\b", "table ip6", text)
    return text.replace("ipv4_addr", "ipv6_addr")
UPLINKS = {"eth0": ("192.168.1.5", "192.168.1.1"), "eth1": ("192.168.4.5", "192.168.4.1")}
PORT = 5432
_PROBE = str(Path(_probe.__file__).resolve())
#: The echo server's file, run as the probe is: standard library only, without site
#: packages (``-I -S``); ``-m k3snet.lab._echo_server`` imported the package first, ~0.15 s
#: of CPU (a second on a loaded machine) before each lab's server listened.
ECHO_SERVER = ("-I", "-S", str(Path(_echo_server.__file__).resolve()))

_LINKS = (
    (("node", "cni0"), ("pod", "eth0")),
    (("node", "eth0"), ("router", "eth0")),
    (("node", "eth1"), ("router", "eth2")),
    (("router", "eth1"), ("db", "eth0")),
)
_ADDRESSES: dict[str, dict[str, tuple[str, ...]]] = {
    "pod": {"eth0": ("10.42.0.10/24",)},
    "node": {"cni0": ("10.42.0.1/24",), "eth0": ("192.168.1.5/24",),
             "eth1": ("192.168.4.5/24",)},
    "router": {"eth0": ("192.168.1.1/24",), "eth2": ("192.168.4.1/24",),
               "eth1": ("192.168.2.1/24", "10.42.200.1/24", "10.43.0.1/24")},
    "db": {"eth0": ("192.168.2.10/24", "192.168.2.11/24", "10.42.200.10/24",
                    "10.43.0.10/24")},
}
_EMPTY_LEGACY = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
"""


#: What :meth:`DoctorLab.configure` may have added to the node's routing, undone.
_RESET_BATCH = """rule del pref 100
rule del pref 200
route flush table 100
route flush table 200
route flush proto static
"""


@attrs.frozen
class Topology:
    """The node's knobs (see tests/doctor/test_differential.py for what each means)."""

    family: Literal[4, 6] = 4
    forwarding: bool = True
    dest: Literal["plain", "overlap", "service-overlap", "service", "nodeport"] = "plain"
    kube_proxy: Literal["none", "iptables-nft", "iptables-legacy", "nftables"] = "none"
    route: Literal["specific", "default", "missing", "blackhole", "policy"] = "specific"
    uplink: Literal["eth0", "eth1"] = "eth0"
    cluster_route: bool = False
    nat: Literal["none", "masq-nft", "masq-legacy", "masq-nftables", "snat", "snat-other",
                 "flannel", "accept-first", "flannel-after-accept", "calico",
                 "calico-pool-covers"] = "masq-nft"
    nat_oif: Literal["any", "uplink", "wildcard", "wrong"] = "any"
    forward_policy: Literal["accept", "drop-nft", "drop-legacy"] = "accept"
    forward_accept: Literal["none", "both", "original-only"] = "none"
    foreign: Literal["none", "drop-port", "drop-new-from-pods", "stateful",
                     "drop-other-port"] = "none"
    reply_rule: Literal["none", "misroute", "blackhole"] = "none"
    rp_all: int = 0
    rp_uplink: int = 0
    rp_cni: int = 0

    @property
    def destination(self) -> str:
        """The database address the pod connects to."""
        address = DESTINATIONS[self.dest]
        return V6[address] if self.family == 6 else address

    @property
    def pod(self) -> str:
        """The pod's address in the topology's family."""
        return V6[POD] if self.family == 6 else POD

    @property
    def port(self) -> int:
        """The port the pod connects to (the Service's port, its NodePort, or the db's)."""
        return {"service": 80, "nodeport": 30432}.get(self.dest, PORT)


#: kube-proxy's nat rules (iptables mode) for the lab's two Services, as it writes them.
KUBE_PROXY_NAT = """:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-LABDB - [0:0]
:KUBE-EXT-LABDB - [0:0]
:KUBE-SEP-LABDB10 - [0:0]
:KUBE-SEP-LABDB11 - [0:0]
:KUBE-SVC-LABOTHER - [0:0]
:KUBE-SEP-LABOTHER - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" \
-j MASQUERADE --random-fully
-A KUBE-SERVICES -d 10.43.0.100/32 -p tcp -m comment --comment "lab/db:pg cluster IP" \
-m tcp --dport 80 -j KUBE-SVC-LABDB
-A KUBE-SERVICES -d 10.43.0.10/32 -p tcp -m comment --comment "lab/other:pg cluster IP" \
-m tcp --dport 5432 -j KUBE-SVC-LABOTHER
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the \
last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-NODEPORTS -p tcp -m comment --comment "lab/db:pg" -m tcp --dport 30432 \
-j KUBE-EXT-LABDB
-A KUBE-EXT-LABDB -m comment --comment "masquerade traffic for lab/db:pg external \
destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-LABDB -j KUBE-SVC-LABDB
-A KUBE-SVC-LABDB ! -s 10.42.0.0/16 -d 10.43.0.100/32 -p tcp -m comment --comment \
"lab/db:pg cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-LABDB -m comment --comment "lab/db:pg -> 192.168.2.10:5432" -m statistic \
--mode random --probability 0.50000000000 -j KUBE-SEP-LABDB10
-A KUBE-SVC-LABDB -m comment --comment "lab/db:pg -> 192.168.2.11:5432" -j KUBE-SEP-LABDB11
-A KUBE-SEP-LABDB10 -s 192.168.2.10/32 -m comment --comment "lab/db:pg" -j KUBE-MARK-MASQ
-A KUBE-SEP-LABDB10 -p tcp -m comment --comment "lab/db:pg" -m tcp -j DNAT \
--to-destination 192.168.2.10:5432
-A KUBE-SEP-LABDB11 -s 192.168.2.11/32 -m comment --comment "lab/db:pg" -j KUBE-MARK-MASQ
-A KUBE-SEP-LABDB11 -p tcp -m comment --comment "lab/db:pg" -m tcp -j DNAT \
--to-destination 192.168.2.11:5432
-A KUBE-SVC-LABOTHER ! -s 10.42.0.0/16 -d 10.43.0.10/32 -p tcp -m comment --comment \
"lab/other:pg cluster IP" -m tcp --dport 5432 -j KUBE-MARK-MASQ
-A KUBE-SVC-LABOTHER -m comment --comment "lab/other:pg -> 10.42.1.5:5432" \
-j KUBE-SEP-LABOTHER
-A KUBE-SEP-LABOTHER -s 10.42.1.5/32 -m comment --comment "lab/other:pg" -j KUBE-MARK-MASQ
-A KUBE-SEP-LABOTHER -p tcp -m comment --comment "lab/other:pg" -m tcp -j DNAT \
--to-destination 10.42.1.5:5432
"""

#: The same Services as kube-proxy's nftables mode writes them (its own ``ip kube-proxy``
#: table: verdict maps keyed on address . protocol . port, ``numgen`` for the endpoint).
KUBE_PROXY_NFT = """table ip kube-proxy {
 map service-ips {
  type ipv4_addr . inet_proto . inet_service : verdict
  elements = { 10.43.0.100 . tcp . 80 : goto service-labdb, \
10.43.0.10 . tcp . 5432 : goto service-labother }
 }
 map service-nodeports {
  type inet_proto . inet_service : verdict
  elements = { tcp . 30432 : goto external-labdb }
 }
 set nodeport-ips {
  type ipv4_addr
  elements = { 192.168.1.5, 192.168.4.5 }
 }
 chain mark-for-masquerade {
  meta mark set meta mark or 0x4000
 }
 chain masquerading {
  meta mark & 0x4000 == 0 return
  meta mark set meta mark xor 0x4000
  masquerade fully-random
 }
 chain services {
  ip daddr . meta l4proto . th dport vmap @service-ips
  ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
 }
 chain nat-prerouting {
  type nat hook prerouting priority dstnat; policy accept;
  jump services
 }
 chain nat-postrouting {
  type nat hook postrouting priority srcnat; policy accept;
  jump masquerading
 }
 chain service-labdb {
  ip daddr 10.43.0.100 tcp dport 80 ip saddr != 10.42.0.0/16 jump mark-for-masquerade
  numgen random mod 2 vmap { 0 : goto endpoint-labdb-10, 1 : goto endpoint-labdb-11 }
 }
 chain external-labdb {
  jump mark-for-masquerade
  goto service-labdb
 }
 chain endpoint-labdb-10 {
  ip saddr 192.168.2.10 jump mark-for-masquerade
  meta l4proto tcp dnat to 192.168.2.10:5432
 }
 chain endpoint-labdb-11 {
  ip saddr 192.168.2.11 jump mark-for-masquerade
  meta l4proto tcp dnat to 192.168.2.11:5432
 }
 chain service-labother {
  ip daddr 10.43.0.10 tcp dport 5432 ip saddr != 10.42.0.0/16 jump mark-for-masquerade
  numgen random mod 1 vmap { 0 : goto endpoint-labother }
 }
 chain endpoint-labother {
  ip saddr 10.42.1.5 jump mark-for-masquerade
  meta l4proto tcp dnat to 10.42.1.5:5432
 }
}
"""


def _nat_rules(t: Topology) -> tuple[str, list[str]]:
    """(tool, rules) for the nat table's POSTROUTING."""
    oif = {"any": [], "uplink": ["-o", t.uplink], "wildcard": ["-o", "eth+"],
           "wrong": ["-o", "eth9"]}[t.nat_oif]
    oif_text = " ".join(oif)
    node_address = UPLINKS[t.uplink][0]
    if t.nat in ("masq-nft", "masq-legacy"):
        return t.nat.removeprefix("masq-"), [f"-A POSTROUTING -s 10.42.0.0/16 {oif_text} "
                                             "-j MASQUERADE"]
    if t.nat in ("snat", "snat-other"):
        if t.nat == "snat-other":  # the other uplink's address: replies come back there
            node_address = UPLINKS["eth1" if t.uplink == "eth0" else "eth0"][0]
        return "nft", [f"-A POSTROUTING -s 10.42.0.0/16 {oif_text} -j SNAT --to-source "
                       f"{node_address}"]
    if t.nat in ("flannel", "flannel-after-accept"):
        first = ["-A POSTROUTING -s 10.42.0.0/16 -j ACCEPT"] if t.nat != "flannel" else []
        return "nft", ["-N FLANNEL-POSTRTG", *first, "-A POSTROUTING -m comment --comment "
                       '"flanneld masq" -j FLANNEL-POSTRTG',
                       "-A FLANNEL-POSTRTG -s 10.42.0.0/24 -d 10.42.0.0/16 -m comment "
                       '--comment "flanneld masq" -j RETURN',
                       "-A FLANNEL-POSTRTG -s 10.42.0.0/16 -d 10.42.0.0/16 -j RETURN",
                       f"-A FLANNEL-POSTRTG -s 10.42.0.0/16 ! -d 224.0.0.0/4 {oif_text} "
                       "-j MASQUERADE --random-fully"]
    if t.nat == "accept-first":
        return "nft", ["-A POSTROUTING -s 10.42.0.0/16 -j ACCEPT",
                       f"-A POSTROUTING -s 10.42.0.0/16 {oif_text} -j MASQUERADE"]
    return "nft", []


def _restore_script(t: Topology, flavour: str) -> str:
    nat_tool, nat = _nat_rules(t)
    policy = "DROP" if t.forward_policy == f"drop-{flavour}" else "ACCEPT"
    forward = []
    if policy == "DROP" and t.forward_accept != "none":
        forward.append("-A FORWARD -s 10.42.0.0/16 -m comment --comment \"pods out\" -j ACCEPT")
        if t.forward_accept == "both":
            forward.append("-A FORWARD -d 10.42.0.0/16 -m conntrack --ctstate "
                           "RELATED,ESTABLISHED -j ACCEPT")
    kube_proxy = KUBE_PROXY_NAT.splitlines() if t.kube_proxy == f"iptables-{flavour}" else []
    lines = ["*filter", ":INPUT ACCEPT [0:0]", f":FORWARD {policy} [0:0]", ":OUTPUT ACCEPT [0:0]",
             *forward, "COMMIT", "*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]",
             ":OUTPUT ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]", *kube_proxy,
             *(nat if nat_tool == flavour else []), "COMMIT", ""]
    return "\n".join(lines)


#: Calico's nat-outgoing as a table of its own with its pool sets (the shape of its
#: nftables dataplane; its iptables one matches ipsets this machine cannot create).
CALICO_NFT = """table ip calico {{
 set cali40masq-ipam-pools {{
  type ipv4_addr; flags interval;
  elements = {{ 10.42.0.0/16 }}
 }}
 set cali40all-ipam-pools {{
  type ipv4_addr; flags interval;
  elements = {{ {pools} }}
 }}
 chain nat-POSTROUTING {{
  type nat hook postrouting priority srcnat; policy accept;
  jump nat-cali-nat-outgoing
 }}
 chain nat-cali-nat-outgoing {{
  ip saddr @cali40masq-ipam-pools ip daddr != @cali40all-ipam-pools masquerade fully-random
 }}
}}
"""


def calico_pools(t: Topology) -> list[tuple[str, bool]]:
    """(CIDR, natOutgoing) of the Calico IP pools of ``t`` (none without Calico)."""
    if t.nat == "calico":
        return [("10.42.0.0/16", True)]
    if t.nat == "calico-pool-covers":  # a disabled pool over the destination's network
        if IPv4Network(DEST_NETS[t.dest]).subnet_of(IPv4Network("10.42.0.0/16")):
            return [("10.42.0.0/16", True)]  # the pod pool covers it already
        return [("10.42.0.0/16", True), (DEST_NETS[t.dest], False)]
    return []


def _nft_script(t: Topology) -> str:
    parts = [KUBE_PROXY_NFT] if t.kube_proxy == "nftables" else []
    if calico_pools(t):
        parts.append(CALICO_NFT.format(pools=", ".join(c for c, _ in calico_pools(t))))
    if t.nat == "masq-nftables":
        oif = {"any": "", "uplink": f'oifname "{t.uplink}" ', "wildcard": 'oifname "eth*" ',
               "wrong": 'oifname "eth9" '}[t.nat_oif]
        parts.append("table ip lab_nat {\n chain post {\n"
                     "  type nat hook postrouting priority srcnat; policy accept;\n"
                     f"  {oif}ip saddr 10.42.0.0/16 masquerade\n }}\n}}\n")
    rules = {
        "none": None,
        "drop-port": ("accept", f"ip daddr {t.destination} tcp dport {PORT} counter drop"),
        "drop-new-from-pods": ("accept", "ip saddr 10.42.0.0/16 ct state new counter drop"),
        # The last rule counts what falls to the policy (the lab's drop counters).
        "stateful": ("drop", 'ct state established,related accept\n  iifname "cni0" accept\n'
                     '  counter comment "to the drop policy"'),
        "drop-other-port": ("accept", "tcp dport 80 counter drop"),
    }[t.foreign]
    if rules is not None:
        policy, body = rules
        parts.append("table inet lab_fw {\n chain forward_filter {\n"
                     f"  type filter hook forward priority -10; policy {policy};\n"
                     f"  {body}\n }}\n}}\n")
    return "".join(parts)


def _ip_batch(t: Topology) -> str:
    dst_net = DEST_NETS[t.dest]
    _, gateway = UPLINKS[t.uplink]
    other = "eth1" if t.uplink == "eth0" else "eth0"
    lines = []
    if t.cluster_route:
        lines.append("route add 10.42.0.0/16 dev cni0 proto static")
    if t.route in ("specific", "blackhole"):
        lines.append(f"route add {dst_net} via {gateway} dev {t.uplink} proto static")
    if t.route == "blackhole":
        lines.append(f"route add blackhole {t.destination}/32 proto static")
    if t.route == "default":
        lines.append(f"route add default via {gateway} dev {t.uplink} proto static")
    if t.route == "policy":
        # Pods leave by the uplink through table 100; the node itself uses the other one.
        lines.append(f"route add {dst_net} via {gateway} dev {t.uplink} table 100")
        lines.append(f"route add {dst_net} via {UPLINKS[other][1]} dev {other} proto static")
        lines.append("rule add iif cni0 lookup 100 pref 100")
    if t.reply_rule == "misroute":
        lines.append(f"route add 10.42.0.0/16 via {gateway} dev {t.uplink} table 200")
    if t.reply_rule == "blackhole":
        lines.append("route add blackhole 10.42.0.0/16 table 200")
    if t.reply_rule != "none":
        lines.append(f"rule add from {dst_net} lookup 200 pref 200")
    return "\n".join(lines) + "\n"


class Probe:
    """A probe running in the pod (:meth:`DoctorLab.start_probe`)."""

    def __init__(self, process: subprocess.Popen[str], bound: float) -> None:
        self.process = process
        self.bound = bound

    def answer(self) -> dict[str, object]:
        """Wait for the probe (killed past its bound: a hang fails the test); its JSON answer."""
        try:
            stdout, stderr = self.process.communicate(timeout=self.bound)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise
        if not stdout:
            raise RuntimeError(f"the probe gave no answer (exit {self.process.returncode}): "
                               f"{stderr}")
        answer: dict[str, object] = json.loads(stdout)
        return answer


class DoctorLab:
    """Four namespaces (see the module docstring) and an echo server in ``db``."""

    def __init__(self, names: dict[str, str], watchers: dict[str, int] | None = None) -> None:
        self.names = names
        self.legacy_used = False
        #: A process sleeping in each of some namespaces (role: pid): their counters are
        #: read from ``/proc/PID/net`` with no process started.
        self.watchers = watchers or {}

    @property
    def node(self) -> str:
        """The node's namespace."""
        return self.names["node"]

    def reset(self) -> None:
        """Back to a node with addresses only: no rules, extra routes, tables, rulesets."""
        node = self.node
        run_in(node, ["nft", "flush", "ruleset"])
        if self.legacy_used:
            run_in(node, ["iptables-legacy-restore"], input_text=_EMPTY_LEGACY)
            run_in(node, ["ip6tables-legacy-restore"], input_text=_EMPTY_LEGACY)
        # One ``ip`` per family: -force goes on past a line that has nothing to delete.
        for family in ("-4", "-6"):
            run_in(node, ["ip", family, "-force", "-batch", "-"], check=False,
                   input_text=_RESET_BATCH)

    @contextlib.contextmanager
    def unnumbered_uplink(self) -> Iterator[None]:
        """The node's IPv4 address ``192.168.9.5/32`` on ``lo``, none on ``eth0``, the
        route to the destination ``onlink`` by ``eth0`` and the router's route back to
        that address; all undone afterwards (the lab is shared by the module)."""
        node, router = self.node, self.names["router"]
        run_in(node, ["ip", "addr", "del", "192.168.1.5/24", "dev", "eth0"])
        try:
            run_in(node, ["ip", "addr", "add", "192.168.9.5/32", "dev", "lo"])
            run_in(node, ["ip", "route", "replace", "192.168.2.0/24", "via", "192.168.1.1",
                          "dev", "eth0", "onlink", "proto", "static"])
            run_in(router, ["ip", "route", "add", "192.168.9.5/32", "dev", "eth0"])
            yield
        finally:
            run_in(router, ["ip", "route", "del", "192.168.9.5/32"], check=False)
            run_in(node, ["ip", "addr", "del", "192.168.9.5/32", "dev", "lo"], check=False)
            run_in(node, ["ip", "addr", "add", "192.168.1.5/24", "dev", "eth0"], check=False)

    def configure(self, t: Topology) -> None:
        """Reset the node and apply ``t``."""
        self.reset()
        node = self.node
        sysctls = [f"net.ipv4.ip_forward={int(t.forwarding)}",
                   f"net.ipv6.conf.all.forwarding={int(t.forwarding)}",
                   f"net.ipv4.conf.all.rp_filter={t.rp_all}",
                   f"net.ipv4.conf.eth0.rp_filter={t.rp_uplink}",
                   f"net.ipv4.conf.eth1.rp_filter={t.rp_uplink}",
                   f"net.ipv4.conf.cni0.rp_filter={t.rp_cni}"]
        run_in(node, ["sysctl", "-q", "-w", *sysctls])
        v6 = t.family == 6
        convert = to_v6 if v6 else (lambda text: text)
        tool = "ip6tables" if v6 else "iptables"
        run_in(node, ["ip", f"-{t.family}", "-batch", "-"], input_text=convert(_ip_batch(t)))
        run_in(node, [f"{tool}-nft-restore"], input_text=convert(_restore_script(t, "nft")))
        if "legacy" in (t.forward_policy.removeprefix("drop-"), t.nat.removeprefix("masq-"),
                        t.kube_proxy.removeprefix("iptables-")):
            self.legacy_used = True
            run_in(node, [f"{tool}-legacy-restore"],
                   input_text=convert(_restore_script(t, "legacy")))
        script = _nft_script(t)
        if script:
            run_in(node, ["nft", "-f", "-"], input_text=convert(script))

    def forget_neighbours(self) -> None:
        """Flush the neighbour caches of the lab's namespaces: an IPv6 solicitation that
        went unanswered leaves a FAILED entry, and the next connection through it fails at
        once ("No route to host") for a while, however long it would wait."""
        for name in self.names.values():
            run_in(name, ["ip", "neigh", "flush", "all"], check=False)

    def probe(self, destination: str, timeout: float = 1.5, port: int = PORT, *,
              until_dropped: bool = False) -> dict[str, object]:
        """One TCP exchange from the pod; the probe's JSON answer (``until_dropped``: or
        ``ok: false`` as soon as a counter counts a drop, :meth:`answer_or_drop`)."""
        if not until_dropped:
            return self.start_probe(destination, timeout, port).answer()
        family = 6 if ":" in destination else 4
        before = (self.kernel_drops(family), self.rule_drops(family))
        return self.answer_or_drop(self.start_probe(destination, timeout, port), family,
                                   before)

    def drops(self, family: int) -> int:
        """The packets the node's iptables dropped so far, as the kernel counts them
        (``iptables-save -c``): every ``DROP`` rule's and ``DROP`` policy's counter in the
        tables of ``family``, iptables-nft's and iptables-legacy's (once used)."""
        tool = "ip6tables" if family == 6 else "iptables"
        flavours = ("nft", "legacy") if self.legacy_used else ("nft",)
        return sum(int(m["policy"] or m["rule"]) for flavour in flavours
                   for m in _DROP_COUNTER.finditer(
                       run_in(self.node, [f"{tool}-{flavour}-save", "-c"]).stdout))

    def _mib(self, role: str, file: str, key: str) -> int:
        """One of the kernel's counters (``/proc/net/FILE``) in the namespace of ``role``."""
        return mib(Path(f"/proc/{self.watchers[role]}/net/{file}").read_text(), key)

    def kernel_drops(self, family: int) -> int:
        """The flow's packets the lab dropped so far where no rule counts them, as the
        kernel's own counters (:data:`_DROP_MIBS`) say: read from files, no process."""
        return sum(self._mib(*mib) for mib in _DROP_MIBS[family] if mib[0] in self.watchers)

    def rule_drops(self, family: int) -> int:
        """The packets the node's rules dropped so far: :meth:`drops` and every nftables
        counter on a dropping rule, or on a chain's last rule before its drop policy."""
        ruleset = run_in(self.node, ["nft", "list", "ruleset"]).stdout
        return self.drops(family) + sum(int(m[1]) for m in _NFT_DROP_COUNTER.finditer(ruleset))

    def answer_or_drop(self, probe: Probe, family: int, before: tuple[int, int]
                       ) -> dict[str, object]:
        """``probe``'s answer, or ``ok: false`` as soon as a counter (:meth:`kernel_drops`,
        :meth:`rule_drops`, both taken as ``before`` ahead of the probe) counts a packet
        dropped: the connection's retransmissions meet the same fate, and the lab drops
        nothing else (the database repeats no unanswered SYN-ACK of an earlier
        connection: ``tcp_synack_retries`` 0; the differential test still probes again
        a flow its trace says reaches). A drop nothing counts (a blackhole route, a rule
        without a counter) waits out the probe's timeout, the backstop.
        The rules' counters need a process each: read at growing intervals; the
        kernel's are files, read often."""
        kernel_before, rules_before = before
        next_rules, interval = time.monotonic(), 0.05
        while probe.process.poll() is None:
            dropped = self.kernel_drops(family) - kernel_before
            if not dropped and time.monotonic() >= next_rules:
                dropped = self.rule_drops(family) - rules_before
                next_rules, interval = time.monotonic() + interval, interval * 2
            if dropped > 0 and probe.process.poll() is None:
                probe.process.kill()
                probe.process.communicate()
                return {"ok": False, "seen": None,
                        "error": f"dropped: the kernel counted {dropped} packet(s) dropped"}
            time.sleep(0.01)
        return probe.answer()

    def probe_dropped(self, destination: str, port: int = PORT) -> dict[str, object]:
        """:meth:`probe` of a flow the node should drop: it ends as soon as a counter
        counts one of its packets dropped (:meth:`answer_or_drop`)."""
        return self.probe(destination, port=port, until_dropped=True)

    def start_probe(self, destination: str, timeout: float = 1.5, port: int = PORT
                    ) -> Probe:
        """Start one TCP exchange from the pod; :meth:`Probe.answer` waits for it.

        A flow the kernel drops takes the whole timeout: what only reads the node
        (:meth:`capture`) can run meanwhile.
        """
        # The probe is standard library only: run its file without site packages, the
        # package's import would cost ~1 s of every example.
        argv = ["ip", "netns", "exec", self.names["pod"], sys.executable, "-I", "-S", _PROBE,
                "tcp", "--host", destination, "--port", str(port), "--timeout", str(timeout)]
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        return Probe(process, timeout + 10)

    def capture(self) -> NodeCapture:
        """The node's state, read with the doctor's own bundle reader."""
        return NodeCapture.read_live(self.node)

    def kernel_and_trace(self, t: Topology, timeout: float = 1.5, *,
                         until_dropped: bool = False) -> tuple[dict[str, object], Trace]:
        """The kernel's answer to ``t``'s flow (one probe from the pod) and the doctor's
        trace of it from the node's capture. The capture and the trace only read the
        node: they run while the probe does (a flow the kernel drops waits out the probe's
        timeout, or with ``until_dropped`` only until a counter counts the drop:
        :meth:`answer_or_drop`)."""
        before = (self.kernel_drops(t.family), self.rule_drops(t.family)) if until_dropped \
            else (0, 0)
        probe = self.start_probe(t.destination, timeout, t.port)
        traced = trace(NodeState.from_capture(self.capture()),
                       Flow(t.pod, t.destination, port=t.port))
        if until_dropped:
            return self.answer_or_drop(probe, t.family, before), traced
        return probe.answer(), traced


#: What the doctor's fix makes for a flow not masqueraded: a masquerade in a table of its
#: own (``lab_nat``), made after the node's other tables.
FIX_MASQUERADE = """table ip lab_nat {
 chain post {
  type nat hook postrouting priority srcnat; policy accept;
  ip saddr 10.42.0.0/16 oifname "eth0" masquerade
 }
}
"""


def diagnosed_then_fixed(lab: DoctorLab, made: Callable[[str], None]
                         ) -> tuple[Diagnosis, dict[str, object]]:
    """The pods' flow, not masqueraded, on a node with no IPv4 nat chain (the NAT core's
    hooks unregistered, in a lab without iptables-legacy's tables) once ``made(node)`` put
    its chains there: the doctor's diagnosis, then the kernel's answer to the flow with
    the fix's masquerade made (:data:`FIX_MASQUERADE`). The tables ``lab_post``,
    ``lab_nat`` and ``nat`` are deleted after."""
    topology = Topology(nat="none")
    lab.configure(topology)
    node = lab.node
    try:
        run_in(node, ["nft", "delete", "table", "ip", "nat"])
        made(node)
        d = diagnose(NodeState.from_capture(lab.capture()),
                     Flow(topology.pod, topology.destination, port=topology.port))
        run_in(node, ["nft", "-f", "-"], input_text=FIX_MASQUERADE)
        return d, lab.probe(topology.destination, 1.5, topology.port)
    finally:
        for table in ("lab_post", "lab_nat", "nat"):
            run_in(node, ["nft", "delete", "table", "ip", table], check=False)


def _build(stack: ExitStack, *, legacy: bool = True) -> DoctorLab:
    """The lab's namespaces, links and echo server; ``legacy``: with iptables-legacy's
    tables made first (their nat table keeps the NAT core's hooks registered)."""
    names = {role: stack.enter_context(temporary_netns(role))
             for role in ("pod", "node", "router", "db")}
    for ns in names.values():
        run_in(ns, ["ip", "link", "set", "lo", "up"])
        # No duplicate address detection on the links made below: their link-local
        # addresses (the source of neighbour discovery) are usable at once. With it, an
        # IPv6 probe right after the lab was built stalled for a second or more.
        run_in(ns, ["sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0"])
    run_in(names["router"], ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
                             "net.ipv6.conf.all.forwarding=1",
                             "net.ipv4.conf.all.rp_filter=0",
                             "net.ipv4.conf.default.rp_filter=0"])
    run_in(names["node"], ["sysctl", "-q", "-w", "net.ipv4.conf.default.rp_filter=0"])
    # The database sends a SYN-ACK only for a SYN it got (a probe's, while it runs), never
    # again on its own: one the node dropped in silence was repeated for a minute, and
    # counted as a drop in the probes of later examples (answer_or_drop).
    run_in(names["db"], ["sysctl", "-q", "-w", "net.ipv4.tcp_synack_retries=0"])
    for (role_a, if_a), (role_b, if_b) in _LINKS:
        run_in(names[role_a], ["ip", "link", "add", if_a, "type", "veth", "peer", "name", if_b,
                               "netns", names[role_b]])
    # iptables-legacy's tables exist from the start, as on a node that used it at boot:
    # registered before any nftables table, they run last at equal priority.
    if legacy:
        run_in(names["node"], ["iptables-legacy-restore"], input_text=_EMPTY_LEGACY)
        run_in(names["node"], ["ip6tables-legacy-restore"], input_text=_EMPTY_LEGACY)
    for role, interfaces in _ADDRESSES.items():
        for interface, addresses in interfaces.items():
            for address in addresses:
                run_in(names[role], ["ip", "addr", "add", address, "dev", interface])
                # nodad: usable at once, no duplicate address detection to wait for.
                run_in(names[role], ["ip", "addr", "add", to_v6(address), "dev", interface,
                                     "nodad"])
            run_in(names[role], ["ip", "link", "set", interface, "up"])
    run_in(names["pod"], ["ip", "route", "add", "default", "via", "10.42.0.1"])
    run_in(names["db"], ["ip", "route", "add", "default", "via", "192.168.2.1"])
    run_in(names["pod"], ["ip", "-6", "route", "add", "default", "via", V6["10.42.0.1"]])
    run_in(names["db"], ["ip", "-6", "route", "add", "default", "via", V6["192.168.2.1"]])
    server = subprocess.Popen(
        ["ip", "netns", "exec", names["db"], sys.executable, *ECHO_SERVER, "--port", str(PORT)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stack.callback(_stop, server)
    assert server.stdout is not None
    # The server prints one line once it listens (or dies: EOF, an empty line).
    ready, _, _ = select.select([server.stdout], [], [], 10.0)
    if not ready or server.stdout.readline().strip() != "listening":
        detail = server.stderr.read() if server.stderr else ""
        raise RuntimeError(f"echo server did not start: {detail}")
    lab = DoctorLab(names, {role: _watcher(stack, names[role]) for role in ("node", "router")})
    lab.legacy_used = legacy
    # Last, once the server and the watchers started: the kernel gives each link its IPv6
    # multicast and link-local routes in a work item after it came up, and a neighbour
    # solicitation arriving before is dropped (the first IPv6 probe, bounded by 1.5 s,
    # would wait out a 1 s retransmit: seen in the seed lab, whose build is the same).
    for role, interfaces in _ADDRESSES.items():
        await_ipv6_ready(names[role], interfaces)
    return lab


def _watcher(stack: ExitStack, ns: str) -> int:
    """The pid of a process sleeping in ``ns`` (stopped with ``stack``), once it is there:
    ``/proc/PID/net`` is then the namespace's."""
    process = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "infinity"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    stack.callback(_stop_watcher, process)
    wanted = os.stat(f"/run/netns/{ns}").st_ino
    deadline = time.monotonic() + 10
    while os.stat(f"/proc/{process.pid}/ns/net").st_ino != wanted:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"no process could be left in the namespace {ns}")
        time.sleep(0.01)
    return process.pid


def _stop_watcher(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait(timeout=10)


def _stop(server: subprocess.Popen[str]) -> None:
    server.kill()
    server.communicate(timeout=10)


@pytest.fixture(scope="module")
def doctor_lab() -> Iterator[DoctorLab]:
    """The lab, built once per module (examples reset the node instead of rebuilding)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    with ExitStack() as stack:
        yield _build(stack)


@pytest.fixture(scope="module")
def doctor_lab_without_legacy() -> Iterator[DoctorLab]:
    """The lab on a node no iptables-legacy table was ever made in (configure it with no
    legacy flavour): the NAT core's hooks come and go with nftables' nat chains."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    with ExitStack() as stack:
        yield _build(stack, legacy=False)
