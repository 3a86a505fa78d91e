"""``netdev`` chains of nftables beside the iptables backend (no nftables backend in the group).

A ``netdev`` table's chain on a device's ``ingress`` or ``egress`` hook sees every
packet arriving or leaving by it, forwarded ones too, with either iptables flavour (the
netdev family is nf_tables' alone: no iptables tool shows it). The iptables backend read
the other nftables tables of families ``ip``, ``ip6`` and ``inet`` only: a policy drop
on cni0's ingress or on the uplink's egress was unseen, the plan said nothing and the
pods' packets were dropped. Now an ingress drop is a block judged by what the node
routes by that device, and an egress chain that may drop is a warning (it runs after
k3snet's NAT, as the nftables backend says).
"""

from __future__ import annotations

import pytest

from k3snet.backends.iptables import IptablesBackend, Mode
from k3snet.backends.iptables.native import native_tables
from k3snet.lab.netns import run_in
from k3snet.lab.seed import POD_CIDRS, SeedLab
from k3snet.model import ForwardRule, MasqueradeRule, State
from k3snet.planner import plan

DB_NET = "192.168.2.0/24"
WANTED = State(owned=[ForwardRule(POD_CIDRS[4], DB_NET, out_interface="eth0"),
                      MasqueradeRule(POD_CIDRS[4], destination=DB_NET, out_interface="eth0")])


def test_netdev_tables_are_among_those_read_beside_iptables() -> None:
    tables = frozenset({("netdev", "guard"), ("ip", "filter"), ("inet", "fw"), ("arp", "a"),
                        ("bridge", "b")})
    assert native_tables(tables) == {("netdev", "guard"), ("inet", "fw")}


def _guard(hook: str, device: str) -> str:
    return ("table netdev guard {\n chain c {\n"
            f'  type filter hook {hook} device "{device}" priority 0; policy drop;\n'
            "  meta protocol arp accept\n }\n}\n")


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize(("hook", "device"), [("ingress", "cni0"), ("egress", "eth0")])
def test_a_netdev_policy_drop_on_the_pods_way_is_said_by_the_iptables_backend(
        require_root: None, mode: Mode, hook: str, device: str) -> None:
    """cni0's ingress policy drop drops the pods' packets before any iptables chain: a
    conflict (by what the node routes by cni0, the pods' addresses); eth0's egress
    policy drop drops them after k3snet's NAT: a warning naming the chain."""
    with SeedLab.create() as lab:
        run_in(lab.node, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        run_in(lab.node, ["nft", "-f", "-"], input_text=_guard(hook, device))
        listed = run_in(lab.node, ["nft", "list", "table", "netdev", "guard"]).stdout
        assert f'hook {hook} device "{device}"' in listed  # the kernel's own view
        with IptablesBackend(lab.node, mode=mode) as backend:
            first = plan(backend.observe(), WANTED)
            backend.apply(first)
            warnings = backend.warnings
        assert not lab.tcp_probe(family=4, timeout=1.0).ok  # the kernel drops them
        if hook == "ingress":
            assert [getattr(n.foreign, "rule", None) for n in first.conflicts] == [
                "iifname cni0 policy drop"], first.render()
        else:
            assert not first.conflicts, first.render()
            assert any("netdev guard chain c, an egress chain on eth0" in w
                       for w in warnings), warnings
