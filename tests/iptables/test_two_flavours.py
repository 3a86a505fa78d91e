"""Rules in the iptables flavour that ``mode="auto"`` did not pick, against the real kernel.

iptables-nft and iptables-legacy rules live side by side in the kernel and both
run: a legacy DROP next to nft rules drops the packet whatever the nft chains
accept. k3snet reads one flavour; with ``mode="auto"`` it says when the other
one holds rules in the tables it reads (filter, nat; raw, mangle, security), naming the flavour, the
family, the table and what is there. Fresh ``k3snet-ipt-*`` namespaces.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from k3snet.backends.iptables import IptablesBackend, Mode
from k3snet.backends.iptables.mode import other_flavour_rules
from k3snet.lab.netns import run_in
from k3snet.lab.seed import NODE_ADDRESSES, POD_CIDRS, SeedLab
from k3snet.model import ForwardRule, MasqueradeRule, State
from k3snet.planner import plan

DESIRED = State(owned=[ForwardRule("10.50.0.0/16", "192.168.2.0/24"),
                       MasqueradeRule("10.50.0.0/16", destination="192.168.2.0/24")])
K3S_CHAINS = "*nat\n:FLANNEL-POSTRTG - [0:0]\n-A POSTROUTING -j FLANNEL-POSTRTG\nCOMMIT\n"


@pytest.mark.kernel
@pytest.mark.parametrize("picked", ["nft", "legacy"])
def test_rules_of_the_flavour_auto_did_not_pick_are_a_warning(ns: str, picked: Mode) -> None:
    other = "legacy" if picked == "nft" else "nft"
    run_in(ns, [f"iptables-{picked}-restore", "--noflush"], input_text=K3S_CHAINS)
    with IptablesBackend(ns) as backend:
        assert backend.mode == picked, backend.mode_reason
        backend.apply(plan(backend.observe(), DESIRED))
        assert not [w for w in backend.warnings if other in w], backend.warnings
    # An admin's DROP in the other flavour (IPv4) and a policy there (IPv6).
    run_in(ns, [f"iptables-{other}", "-w", "-A", "FORWARD", "-s", "10.50.0.0/16", "-j", "DROP"])
    run_in(ns, [f"ip6tables-{other}", "-w", "-P", "FORWARD", "DROP"])
    with IptablesBackend(ns) as backend:
        assert backend.mode == picked, backend.mode_reason
        observed = backend.observe()
        assert plan(observed, DESIRED).empty  # what k3snet reads is unchanged ...
        warned = [w for w in backend.warnings if f"iptables-{other}" in w]
        assert len(warned) == 1, backend.warnings  # ... but it says what it cannot see
        assert "IPv4 filter: 1 rule" in warned[0]
        assert "IPv6 filter: FORWARD policy DROP" in warned[0]
        assert f"mode='{other}'" in warned[0] or f'mode="{other}"' in warned[0]
    # A backend that saw nothing there at first sees it on its next read of the kernel.
    run_in(ns, [f"iptables-{other}", "-w", "-D", "FORWARD", "-s", "10.50.0.0/16", "-j",
                "DROP"])
    run_in(ns, [f"ip6tables-{other}", "-w", "-P", "FORWARD", "ACCEPT"])
    with IptablesBackend(ns) as backend:
        backend.observe()
        assert not [w for w in backend.warnings if other in w], backend.warnings
        run_in(ns, [f"iptables-{other}", "-w", "-t", "nat", "-A", "POSTROUTING", "-j",
                    "MASQUERADE"])
        backend.apply(plan(backend.observe(), State(owned=[*DESIRED.owned, ForwardRule(
            "10.51.0.0/16", "192.168.2.0/24")])))
        backend.observe()
        warned = [w for w in backend.warnings if f"iptables-{other}" in w]
        assert len(warned) == 1, backend.warnings
        assert "IPv4 nat: 1 rule" in warned[0]
    with IptablesBackend(ns, mode=picked) as backend:
        backend.observe()  # an explicit mode: the user chose; nothing extra is read
        assert not [w for w in backend.warnings if other in w], backend.warnings


@pytest.mark.kernel
def test_a_flavour_whose_save_fails_is_absent_and_the_other_is_detected(
    ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """iptables-nft-save on a kernel without nf_tables fails ("Could not fetch rule set
    generation id"); K3s then runs iptables-legacy. mode auto used to raise that failure
    and never looked at iptables-legacy, where the node's rules are."""
    for name in ("iptables-nft-save", "ip6tables-nft-save"):
        tool = tmp_path / name
        tool.write_text("#!/bin/sh\necho \"$0 v1.8.9 (nf_tables): Could not fetch rule set "
                        "generation id: Protocol not supported\" >&2\nexit 1\n")
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    run_in(ns, ["iptables-legacy", "-w", "-t", "nat", "-N", "KUBE-POSTROUTING"])
    run_in(ns, ["iptables-legacy", "-w", "-t", "nat", "-A", "POSTROUTING", "-j",
                "KUBE-POSTROUTING"])
    with IptablesBackend(ns) as backend:
        assert backend.mode == "legacy", backend.mode_reason
        assert "KUBE-/FLANNEL-" in backend.mode_reason
        backend.observe()


def test_the_other_flavours_drops_in_raw_and_mangle_are_named_not_an_empty_hint_chain() -> None:
    text = ("*mangle\n:PREROUTING ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n"
            ":KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n"
            "*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -s 10.50.0.0/16 -j DROP\nCOMMIT\n"
            "*security\n:FORWARD DROP [0:0]\nCOMMIT\n")
    assert other_flavour_rules({4: text, 6: None}) == [
        "IPv4 raw: 1 rule", "IPv4 security: FORWARD policy DROP"]


@pytest.mark.kernel
def test_the_other_flavours_nat_made_later_translates_first_and_the_warning_says_it_may(
        require_root: None) -> None:
    """Two nat tables on one hook (iptables-nft's and iptables-legacy's, both at srcnat's
    priority): the kernel runs the one made last first, and the first NAT rule met
    decides. k3snet's masquerade in iptables-nft, then an SNAT in iptables-legacy: the
    database sees the SNAT's address, and the warning said only "a DROP there drops"."""
    wanted = State(owned=[MasqueradeRule(POD_CIDRS[4], out_interface="eth0")])
    with SeedLab.create() as lab:
        run_in(lab.node, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        run_in(lab.node, ["ip", "addr", "add", "192.168.1.6/24", "dev", "eth0"])
        with IptablesBackend(lab.node) as backend:
            assert backend.mode == "nft", backend.mode_reason
            backend.apply(plan(backend.observe(), wanted))
        assert lab.tcp_probe(family=4, timeout=2.0).source_seen == NODE_ADDRESSES[4]
        run_in(lab.node, ["iptables-legacy", "-w", "-t", "nat", "-A", "POSTROUTING", "-s",
                          POD_CIDRS[4], "-j", "SNAT", "--to-source", "192.168.1.6"])
        with IptablesBackend(lab.node) as backend:
            assert plan(backend.observe(), wanted).empty  # k3snet's rule is in place ...
            warned = [w for w in backend.warnings if "iptables-legacy" in w]
            assert len(warned) == 1, backend.warnings
            assert "IPv4 nat: 1 rule" in warned[0]
            assert "a NAT rule there may translate k3snet's traffic first" in warned[0]
        assert lab.tcp_probe(family=4, timeout=2.0).source_seen == "192.168.1.6"  # ... unmet
