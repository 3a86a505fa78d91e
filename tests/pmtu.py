"""Path MTU discovery in the seed lab, with real packets: the router's link towards the
database made smaller, datagrams too large for it sent by the pod, and the path MTU the
pod's kernel learnt from the router's ICMP error (Packet Too Big, fragmentation needed).
Shared by the iptables and nftables tests of the forward path's replies."""

from __future__ import annotations

import sys

from k3snet.lab import SeedLab
from k3snet.lab.netns import run_in

# Three datagrams larger than the router's MTU towards the database, with the
# don't-fragment bit for IPv4 (IPv6 never fragments on the way).
_SEND = """
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
sock = socket.socket(family, socket.SOCK_DGRAM)
if family == socket.AF_INET:
    sock.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER: IP_PMTUDISC_DO
sock.connect((sys.argv[1], 9))
for _ in range(3):
    try:
        sock.send(b"x" * 1400)
    except OSError:
        pass  # EMSGSIZE once the error arrived: the path's MTU is known
"""


def narrow_the_path(lab: SeedLab) -> None:
    """The router's side towards the database, and the database's: 1280, the smallest
    MTU IPv6 allows."""
    run_in(lab.router, ["ip", "link", "set", "eth1", "mtu", "1280"])
    run_in(lab.db, ["ip", "link", "set", "eth0", "mtu", "1280"])


def learnt_mtu(lab: SeedLab, family: int, db: str) -> str:
    """Send too large datagrams from the pod to ``db``; the pod's route to it, as ``ip -o
    route get`` shows it (holding ``mtu 1280`` once the router's error arrived)."""
    return learnt_mtu_in(lab.pod, family, db)


def learnt_mtu_in(pod: str, family: int, db: str) -> str:
    """:func:`learnt_mtu` from the namespace ``pod`` (another lab's pod)."""
    run_in(pod, [sys.executable, "-I", "-S", "-c", _SEND, db])
    return run_in(pod, ["ip", f"-{family}", "-o", "route", "get", db]).stdout


def widen_the_path(lab: SeedLab) -> None:
    """Undo :func:`narrow_the_path` and forget what it taught: the MTUs of 1500 back, the
    path MTUs the pod's and the node's kernels learnt flushed."""
    run_in(lab.router, ["ip", "link", "set", "eth1", "mtu", "1500"])
    run_in(lab.db, ["ip", "link", "set", "eth0", "mtu", "1500"])
    for ns in (lab.pod, lab.node):
        for flag in ("-4", "-6"):
            run_in(ns, ["ip", flag, "route", "flush", "cache"])
