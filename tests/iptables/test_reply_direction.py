"""k3snet's accept of the pods' replies takes the replies alone (``--ctdir REPLY``).

The reply half of a forward rule matched the pods' side and conntrack's state
(``-d PODS -m conntrack --ctstate RELATED,ESTABLISHED``): every later packet of a
connection from OUTSIDE to a pod (ESTABLISHED, in the original direction) was accepted
too, before the administrator's own FORWARD rules after k3snet's jump could judge it: a
connection let in only while an administrator's rule was there went on after that rule
was gone. The reply half now takes what travels against a connection's first packet: a
pod's connection's replies and the ICMP errors about its packets, which conntrack gives
their master's connection in the reply direction (a router's Packet Too Big).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.lab.netns import run_in
from k3snet.model import ForwardRule, MasqueradeRule, State
from k3snet.planner import plan
from tests.pmtu import learnt_mtu, narrow_the_path

DESTINATIONS = {4: "192.168.2.0/24", 6: "fd01:2::/64"}

# One ICMP echo request with a fixed identifier (the connection conntrack tracks it by):
# `wait` waits for the pod's echo reply (it makes the connection ESTABLISHED).
_ECHO = """
import socket, struct, sys
dst, seq, wait = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "wait"
v6 = ":" in dst
sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW,
                     socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
ident, data = 0x4B33, b"k3snet"
packet = struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, ident, seq) + data
if not v6:  # the kernel sums ICMPv6 itself
    total = sum(struct.unpack(f"!{len(packet) // 2}H", packet))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    packet = packet[:2] + struct.pack("!H", ~total & 0xFFFF) + packet[4:]
sock.sendto(packet, (dst, 0))
sock.settimeout(10)
while wait:
    got = sock.recv(2048)
    icmp = got if v6 else got[(got[0] & 0xF) * 4:]
    if icmp[0] == (129 if v6 else 0) and struct.unpack("!H", icmp[4:6])[0] == ident:
        break
"""

# A datagram from the pod to a port the database does not listen on, and what came back:
# the database's port unreachable, RELATED to the pod's flow (``refused``).
_UNREACHABLE = """
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
sock = socket.socket(family, socket.SOCK_DGRAM)
sock.settimeout(10)
sock.connect((sys.argv[1], 9))
sock.send(b"k3snet")
try:
    sock.recv(64)
except ConnectionRefusedError:
    print("refused")
except OSError as error:
    print(error)
"""


def _counters(lab_node: str, save: str, reply_rule: Callable[[str], bool]) -> tuple[int, int]:
    """The packets of the FORWARD policy and of k3snet's reply accept, as the kernel counts
    them (``iptables-save -c``)."""
    text = run_in(lab_node, [save, "-c", "-t", "filter"]).stdout
    policy = next(line for line in text.splitlines() if line.startswith(":FORWARD "))
    replies = [line for line in text.splitlines() if reply_rule(line)]
    assert len(replies) == 1, text
    return (int(policy.rsplit("[", 1)[1].split(":")[0]),
            int(replies[0][1:].split(":")[0]))


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_the_reply_accept_takes_the_pods_replies_and_errors_not_a_connection_from_outside(
        require_root: None, mode: str, family: int) -> None:
    from k3snet.lab import SeedLab  # noqa: PLC0415
    from k3snet.lab.seed import (  # noqa: PLC0415
        DB_ADDRESSES,
        NODE_ADDRESSES,
        POD_ADDRESSES,
        POD_CIDRS,
    )

    pods, destination = POD_CIDRS[family], DESTINATIONS[family]  # type: ignore[index]
    pod, db = POD_ADDRESSES[family], DB_ADDRESSES[family]  # type: ignore[index]
    desired = State(owned=[
        ForwardRule(pods, destination, in_interface="cni0", out_interface="eth0"),
        MasqueradeRule(pods, destination=destination, out_interface="eth0")])
    tool = f"{'ip6' if family == 6 else 'ip'}tables-{mode}"
    proto = "ipv6-icmp" if family == 6 else "icmp"
    admins = ["FORWARD", "-s", db, "-d", pod, "-p", proto, "-m", "comment", "--comment",
              "an admin's accept, for a while", "-j", "ACCEPT"]
    with SeedLab.create() as lab:
        run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
                          "net.ipv6.conf.all.forwarding=1"])
        # The router knows the pods behind the node: the database may open a connection.
        run_in(lab.router, ["ip", f"-{family}", "route", "add", pods, "via",
                            NODE_ADDRESSES[family]])  # type: ignore[index]
        lab.block_forward("iptables-nft" if mode == "nft" else "iptables-legacy")
        with IptablesBackend(lab.node, mode=mode) as backend:  # type: ignore[arg-type]
            backend.apply(plan(backend.observe(), desired))
        # The pods' connection and its replies, a router's Packet Too Big for its packets.
        assert lab.tcp_probe(family).ok
        narrow_the_path(lab)
        route = learnt_mtu(lab, family, db)
        assert "mtu 1280" in route, route
        said = run_in(lab.pod, [sys.executable, "-c", _UNREACHABLE, db], timeout=30).stdout
        assert said.strip() == "refused", said

        # A connection from the database to the pod, let in by an administrator's rule for
        # a while: its first packet, and the pod's answer (ESTABLISHED).
        run_in(lab.node, [tool, "-w", "-I", *admins])
        run_in(lab.db, [sys.executable, "-c", _ECHO, pod, "1", "wait"])
        run_in(lab.node, [tool, "-w", "-D", *admins])

        def reply_rule(line: str) -> bool:
            return "-A K3SNET-F-" in line and "--ctstate" in line

        save = f"{tool}-save"
        dropped, accepted = _counters(lab.node, save, reply_rule)
        # The administrator's rule gone, the connection's next packet from the database.
        run_in(lab.db, [sys.executable, "-c", _ECHO, pod, "2", "send"])
        for _ in range(1000):  # until the node's FORWARD took the packet one way or the other
            now = _counters(lab.node, save, reply_rule)
            if now != (dropped, accepted):
                break
        else:
            pytest.fail("the echo request never reached the node's FORWARD chain")
        # It is left to what follows k3snet's rules (here the policy), not accepted by them.
        assert now == (dropped + 1, accepted), run_in(lab.node, [save, "-c"]).stdout


@pytest.mark.kernel
@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_reply_accept_an_earlier_release_wrote_is_replaced_not_left_beside_the_new_one(
        ns: str, mode: str, family: int) -> None:
    from k3snet.render.iptables.rules import clear_caches  # noqa: PLC0415

    pods, destination = ("10.42.0.0/16", "192.168.2.0/24") if family == 4 else (
        "fd42:42::/56", "fd01:2::/64")
    forward = ForwardRule(pods, destination, in_interface="cni0", out_interface="eth0")
    other = ForwardRule(pods, "192.0.2.0/24" if family == 4 else "2001:db8::/32")
    desired = State(owned=[forward, other])
    save = f"{'ip6' if family == 6 else 'ip'}tables-{mode}-save"
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), desired))
    # The node as the earlier release left it: both reply halves in every direction.
    today = run_in(ns, [save, "-t", "filter"]).stdout
    assert today.count("--ctdir REPLY") == 2, today
    earlier = today.replace(" --ctdir REPLY", "")
    run_in(ns, [save.replace("-save", "-restore")], input_text=earlier)
    clear_caches()  # the new release's first read: the rules' text alone
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        p = plan(backend.observe(), desired)
        # The drift of each and its forward rule written again: nothing else.
        assert {c.subject for c in p.changes if c.action != "delete"} == {forward, other}, (
            p.render())
        # What is deleted: each earlier reply accept, named as the upgrade's, and nothing
        # else (its chain, k3snet's, is in use and jumped to).
        drift = [c.subject for c in p.changes if c.action == "delete"]
        assert all(" filter K3SNET-F" in d.describe() for d in drift), p.render()
        assert len([d for d in drift if "without --ctdir REPLY" in d.describe()]) == 2, (
            p.render())
        assert len(drift) == 2, p.render()
        backend.apply(p)
        after = run_in(ns, [save, "-t", "filter"]).stdout
        reply_lines = [line for line in after.splitlines() if "--ctstate" in line]
        assert len(reply_lines) == 2, after  # the earlier ones gone, not left beside
        assert all("--ctstate RELATED,ESTABLISHED --ctdir REPLY" in line
                   for line in reply_lines), after
        assert {line for line in after.splitlines() if line.startswith("-A")} == {
            line for line in today.splitlines() if line.startswith("-A")}, after
    clear_caches()
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        assert plan(backend.observe(), desired).empty


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_the_upgrade_of_many_earlier_reply_accepts_writes_their_chains_again(
        ns: str, mode: str) -> None:
    # More than 16 earlier reply accepts in a bucket chain: the chain is written again
    # (iptables-nft-restore's -D of each, looked for through the chain, reached its
    # timeout at 10 000), to what k3snet writes today, and the next plan is empty.
    from k3snet.render.iptables.rules import clear_caches  # noqa: PLC0415

    desired = State(owned=[ForwardRule("10.42.0.0/16", f"100.64.{n // 256}.{n % 256}/32",
                                       out_interface="eth0") for n in range(600)])
    save = f"iptables-{mode}-save"
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), desired))
    today = run_in(ns, [save, "-t", "filter"]).stdout
    run_in(ns, [f"iptables-{mode}-restore"], input_text=today.replace(" --ctdir REPLY", ""))
    clear_caches()
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), desired))
        after = run_in(ns, [save, "-t", "filter"]).stdout
        assert sorted(line for line in after.splitlines() if line.startswith("-A")) == sorted(
            line for line in today.splitlines() if line.startswith("-A")), after
        assert plan(backend.observe(), desired).empty
    clear_caches()
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        assert plan(backend.observe(), desired).empty
