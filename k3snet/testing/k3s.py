"""What K3s leaves in iptables on a node: realistic foreign state for tests.

flannel (vxlan, K3s defaults: pods 10.42.0.0/16, this node 10.42.0.0/24) and
kube-proxy in iptables mode, as ``iptables-save`` prints them. Backend tests
seed these before applying k3snet's own state and check they come out
byte-identical; third-party backend authors can do the same.
"""

from __future__ import annotations

__all__ = ["FLANNEL_FORWARD_V4", "FLANNEL_NAT_V4", "KUBE_PROXY_NAT_V4", "NODE_V4", "NODE_V6"]

_MASQ = '-m comment --comment "flanneld masq"'
_FWD = '-m comment --comment "flanneld forward"'

FLANNEL_NAT_V4: tuple[str, ...] = (
    f"-A POSTROUTING {_MASQ} -j FLANNEL-POSTRTG",
    f"-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {_MASQ} -j RETURN",
    f"-A FLANNEL-POSTRTG -s 10.42.0.0/24 -d 10.42.0.0/16 {_MASQ} -j RETURN",
    f"-A FLANNEL-POSTRTG -s 10.42.0.0/16 -d 10.42.0.0/24 {_MASQ} -j RETURN",
    f"-A FLANNEL-POSTRTG ! -s 10.42.0.0/16 -d 10.42.0.0/24 {_MASQ} -j RETURN",
    f"-A FLANNEL-POSTRTG -s 10.42.0.0/16 ! -d 224.0.0.0/4 {_MASQ} -j MASQUERADE --random-fully",
    f"-A FLANNEL-POSTRTG ! -s 10.42.0.0/16 -d 10.42.0.0/16 {_MASQ} -j MASQUERADE --random-fully",
)
"""flannel's nat rules (needs ``:FLANNEL-POSTRTG - [0:0]`` declared)."""

KUBE_PROXY_NAT_V4: tuple[str, ...] = (
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
    "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
    "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
    '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
    "-j MASQUERADE --random-fully",
)
"""kube-proxy's nat hooks (needs ``:KUBE-SERVICES`` and ``:KUBE-POSTROUTING`` declared)."""

FLANNEL_FORWARD_V4: tuple[str, ...] = (
    f"-A FORWARD {_FWD} -j FLANNEL-FWD",
    f"-A FLANNEL-FWD -s 10.42.0.0/16 {_FWD} -j ACCEPT",
    f"-A FLANNEL-FWD -d 10.42.0.0/16 {_FWD} -j ACCEPT",
)
"""flannel's filter rules (needs ``:FLANNEL-FWD - [0:0]`` declared)."""

NODE_V4: str = "\n".join([
    "*nat",
    ":FLANNEL-POSTRTG - [0:0]",
    ":KUBE-POSTROUTING - [0:0]",
    ":KUBE-SERVICES - [0:0]",
    ":KUBE-MARK-MASQ - [0:0]",
    *KUBE_PROXY_NAT_V4[:3],
    FLANNEL_NAT_V4[0],
    "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE",
    *FLANNEL_NAT_V4[1:],
    "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
    *KUBE_PROXY_NAT_V4[3:],
    '-A KUBE-SERVICES -d 10.43.0.1/32 -p tcp -m comment --comment "default/kubernetes:https" '
    "-m tcp --dport 443 -j KUBE-MARK-MASQ",
    "COMMIT",
    "*filter",
    ":FORWARD DROP [0:0]",
    ":DOCKER-USER - [0:0]",
    ":KUBE-FORWARD - [0:0]",
    ":FLANNEL-FWD - [0:0]",
    "-A FORWARD -j DOCKER-USER",
    '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
    FLANNEL_FORWARD_V4[0],
    "-A FORWARD -s 192.0.2.0/24 -j DROP",
    "-A DOCKER-USER -j RETURN",
    "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" '
    "-m mark --mark 0x4000/0x4000 -j ACCEPT",
    *FLANNEL_FORWARD_V4[1:],
    "COMMIT",
    "",
])
"""A whole K3s node's IPv4 tables as ``iptables-restore --noflush`` input: kube-proxy and
flannel (above), Docker's ``DOCKER-USER`` and masquerade, a FORWARD policy of DROP and an
administrator's DROP rule."""

NODE_V6: str = """\
*nat
:FLANNEL-POSTRTG - [0:0]
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -s fd42:42::/56 ! -d ff00::/8 -m comment --comment "flanneld masq" \
-j MASQUERADE --random-fully
COMMIT
*filter
:FORWARD DROP [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -s 2001:db8::/32 -j DROP
-A DOCKER-USER -j RETURN
COMMIT
""".replace("\\\n", "")
"""The same node's IPv6 tables (flannel dual-stack, Docker, an administrator's DROP rule)."""
