"""A router's ICMP error for a pod's flow passes k3snet's forward accept (path MTU).

A router between the node and a destination of smaller MTU answers a pod's larger
packet with an ICMPv6 Packet Too Big (IPv4: fragmentation needed) from its own address.
Conntrack takes it as RELATED to the pod's masqueraded flow and gives it back to the
pod, but k3snet's accept of the replies matched their source, the destination, too:
under a FORWARD policy DROP (Docker's, firewalld's) the error was dropped, the pod never
learnt the path's MTU and its larger packets were lost (IPv6 routers never fragment).
The reply half now matches the pods' side and conntrack's state alone.
"""

from __future__ import annotations

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.lab import SeedLab
from k3snet.lab.netns import run_in
from k3snet.model import ForwardRule, MasqueradeRule, State
from k3snet.planner import plan
from tests.pmtu import learnt_mtu, narrow_the_path
from tests.shared_lab import lab_fixture, made_lab_fixture  # noqa: F401 - one lab for the module

DESTINATIONS = {4: "192.168.2.0/24", 6: "fd01:2::/64"}

@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_routers_packet_too_big_reaches_the_pod_through_a_forward_policy_drop(
        lab: SeedLab, mode: str, family: int) -> None:
    from k3snet.lab.seed import DB_ADDRESSES, POD_CIDRS  # noqa: PLC0415

    pods, destination = POD_CIDRS[family], DESTINATIONS[family]  # type: ignore[index]
    desired = State(owned=[
        ForwardRule(pods, destination, in_interface="cni0", out_interface="eth0"),
        MasqueradeRule(pods, destination=destination, out_interface="eth0")])
    db = DB_ADDRESSES[family]  # type: ignore[index]
    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
                      "net.ipv6.conf.all.forwarding=1"])
    lab.block_forward("iptables-nft" if mode == "nft" else "iptables-legacy")
    with IptablesBackend(lab.node, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), desired))
        assert lab.tcp_probe(family).ok
        narrow_the_path(lab)
        # The pod's kernel holds the path's MTU the router's error gave it.
        route = learnt_mtu(lab, family, db)
        assert "mtu 1280" in route, route
        save = run_in(lab.node, [f"{'ip6' if family == 6 else 'ip'}tables-{mode}-save",
                                 "-c", "-t", "filter"]).stdout
        assert ":FORWARD DROP [0:0]" in save, save  # nothing left to the policy


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
def test_an_admins_accept_of_replies_by_source_does_not_meet_the_forward_rule_path_mtu(
        lab: SeedLab, family: int) -> None:
    # An administrator's pair under a FORWARD policy DROP, the replies accepted as k3snet's
    # earlier reply rule did (from the destination): the router's Packet Too Big is not
    # from the destination and the policy drops it. It was read as meeting k3snet's
    # ForwardRule (nothing written, the pods' large packets lost); k3snet now writes its own.
    from k3snet.lab.seed import DB_ADDRESSES, POD_CIDRS  # noqa: PLC0415

    pods, destination = POD_CIDRS[family], DESTINATIONS[family]  # type: ignore[index]
    forward = ForwardRule(pods, destination, in_interface="cni0", out_interface="eth0")
    desired = State(owned=[
        forward, MasqueradeRule(pods, destination=destination, out_interface="eth0")])
    db = DB_ADDRESSES[family]  # type: ignore[index]
    tool = f"{'ip6' if family == 6 else 'ip'}tables-nft"
    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
                      "net.ipv6.conf.all.forwarding=1"])
    lab.block_forward("iptables-nft")
    run_in(lab.node, [tool, "-w", "-A", "FORWARD", "-s", pods, "-d", destination,
                      "-i", "cni0", "-o", "eth0", "-j", "ACCEPT"])
    run_in(lab.node, [tool, "-w", "-A", "FORWARD", "-s", destination, "-d", pods,
                      "-i", "eth0", "-o", "cni0", "-m", "conntrack", "--ctstate",
                      "RELATED,ESTABLISHED", "-j", "ACCEPT"])
    with IptablesBackend(lab.node, mode="nft") as backend:
        p = plan(backend.observe(), desired)
        assert forward in {c.subject for c in p.changes}, p.render()
        backend.apply(p)
        assert lab.tcp_probe(family).ok
        narrow_the_path(lab)
        route = learnt_mtu(lab, family, db)
        assert "mtu 1280" in route, route


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("direction", ["REPLY", "ORIGINAL"])
def test_an_admins_accept_of_the_reply_direction_meets_the_forward_rule_and_passes_errors(
        lab: SeedLab, family: int, direction: str) -> None:
    # An administrator's pair under a FORWARD policy DROP whose accept of what comes back
    # takes the reply direction alone (`--ctdir REPLY`, as k3snet's own does): the pods'
    # replies and the router's Packet Too Big pass, so it meets k3snet's ForwardRule (it
    # was not read, and k3snet wrote its own). `--ctdir ORIGINAL` takes no reply: not met.
    from k3snet.lab.seed import DB_ADDRESSES, POD_CIDRS  # noqa: PLC0415

    pods, destination = POD_CIDRS[family], DESTINATIONS[family]  # type: ignore[index]
    forward = ForwardRule(pods, destination, in_interface="cni0", out_interface="eth0")
    desired = State(owned=[
        forward, MasqueradeRule(pods, destination=destination, out_interface="eth0")])
    db = DB_ADDRESSES[family]  # type: ignore[index]
    tool = f"{'ip6' if family == 6 else 'ip'}tables-nft"
    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
                      "net.ipv6.conf.all.forwarding=1"])
    lab.block_forward("iptables-nft")
    run_in(lab.node, [tool, "-w", "-A", "FORWARD", "-s", pods, "-d", destination,
                      "-i", "cni0", "-o", "eth0", "-j", "ACCEPT"])
    run_in(lab.node, [tool, "-w", "-A", "FORWARD", "-d", pods, "-i", "eth0", "-o",
                      "cni0", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
                      "--ctdir", direction, "-j", "ACCEPT"])
    with IptablesBackend(lab.node, mode="nft") as backend:
        p = plan(backend.observe(), desired)
        met = forward not in {c.subject for c in p.changes}
        assert met == (direction == "REPLY"), p.render()
        backend.apply(p)
        assert lab.tcp_probe(family).ok
        narrow_the_path(lab)
        route = learnt_mtu(lab, family, db)
        assert "mtu 1280" in route, route
        save = run_in(lab.node, [f"{'ip6' if family == 6 else 'ip'}tables-nft-save",
                                 "-t", "filter"]).stdout
        assert ("K3SNET-F-" in save) == (direction == "ORIGINAL"), save
