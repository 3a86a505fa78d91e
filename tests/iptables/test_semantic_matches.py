"""Reply interfaces and negated addresses compared as the kernel compares them, not as text.

An administrator's accept of the replies by a wildcard (``-i eth+ -m conntrack --ctstate
RELATED,ESTABLISHED -j ACCEPT``) takes the replies of a connection out by eth0: compared
as text (``eth+`` is not ``eth0``) it took none, and the pods' accept in place was "not
met" (k3snet added its own). A drop behind a negated address holding its own (``! -s
10.0.0.0/8 -j X``, then ``-A X -s 10.42.0.0/16 -j DROP``) meets no packet: compared as
text it was a drop of the pods' traffic, a false conflict.
"""

from __future__ import annotations

import pytest

from k3snet.backends.iptables import IptablesBackend, Mode
from k3snet.backends.iptables.foreign import foreign_blocks, foreign_forward
from k3snet.backends.iptables.save import parse_save
from k3snet.lab.netns import run_in
from k3snet.lab.seed import POD_CIDRS, SeedLab
from k3snet.model import ForwardBlock, ForwardRule, State, interface_holds
from k3snet.planner import plan

POD = POD_CIDRS[4]
DB_NET = "192.168.2.0/24"


def _filter(rules: str, policy: str = "ACCEPT") -> str:
    return (f"*filter\n:FORWARD {policy} [0:0]\n:X - [0:0]\n{rules.strip()}\nCOMMIT\n")


@pytest.mark.parametrize(("pattern", "match", "holds"), [
    ("eth+", "eth0", True), ("eth+", "eth1+", True), ("eth+", "veth0", False),
    ("eth0", "eth0", True), ("eth0", "eth+", False), ("eth+", None, False),
    ("+", None, True), (None, "eth0", True), ("eth1+", "eth+", False),
])
def test_an_interface_match_holds_every_device_of_another_exactly_when_the_kernel_does(
        pattern: str | None, match: str | None, holds: bool) -> None:
    assert interface_holds(pattern, match) is holds


@pytest.mark.parametrize(("rules", "blocked"), [
    ("-A FORWARD ! -s 10.0.0.0/8 -j X\n-A X -s 10.42.0.0/16 -j DROP", False),
    ("-A FORWARD ! -d 192.168.0.0/16 -j X\n-A X -d 192.168.2.0/24 -j DROP", False),
    ("-A FORWARD ! -s 10.42.0.0/16 -j X\n-A X -s 10.42.0.0/16 -j DROP", False),
    # a negated address inside the rule's leaves some of it
    ("-A FORWARD ! -s 10.42.0.0/24 -j X\n-A X -s 10.42.0.0/16 -j DROP", True),
    ("-A FORWARD ! -s 10.1.0.0/16 -j X\n-A X -s 10.42.0.0/16 -j DROP", True),
])
def test_a_drop_behind_a_negated_address_holding_its_own_meets_no_packet(
        rules: str, blocked: bool) -> None:
    dump = parse_save(_filter(rules)).get("filter")
    assert dump is not None
    found = [b for b in foreign_blocks(dump, 4, len(dump.chain("FORWARD")))
             if isinstance(b, ForwardBlock) and b.decides(ForwardRule(POD, DB_NET))]
    assert bool(found) is blocked


ACCEPTS = (f"-A FORWARD -s {POD} -d {DB_NET} -o eth0 -j ACCEPT\n"
           "-A FORWARD -i {reply} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")


@pytest.mark.parametrize(("reply", "met"), [("eth+", True), ("eth0", True), ("eth1", False),
                                            ("et+", True), ("cni0", False)])
def test_an_accept_of_the_replies_by_a_wildcard_interface_answers_the_accept_out_by_eth0(
        reply: str, met: bool) -> None:
    dump = parse_save(_filter(ACCEPTS.format(reply=reply), "DROP")).get("filter")
    wanted = ForwardRule(POD, DB_NET, out_interface="eth0")
    assert (wanted in foreign_forward(dump, 4)) is met


def test_a_foreign_accept_by_a_wildcard_interface_meets_the_rule_of_one_device() -> None:
    wanted = ForwardRule(POD, DB_NET, in_interface="cni0", out_interface="eth0")
    assert wanted.met_by(ForwardRule("10.0.0.0/8", DB_NET, in_interface="cni+",
                                     out_interface="eth+"))
    assert not wanted.met_by(ForwardRule("10.0.0.0/8", DB_NET, in_interface="cni1+"))
    # What an accept before a drop takes: by a wildcard, the pods' packets by cni0.
    block = ForwardBlock(4, "drop", "-A FORWARD -j DROP", "iptables IPv4 filter",
                         accepted=[ForwardRule(POD, DB_NET, in_interface="cni+"),
                                   ForwardRule(DB_NET, POD, out_interface="cni+")])
    assert not block.decides(wanted)
    assert block.decides(ForwardRule(POD, DB_NET))  # by any device: not all taken


# What the administrator writes, and what the plan says of the pods' accept beside it.
KERNEL_CASES: dict[str, tuple[list[list[str]], list[str]]] = {
    # FORWARD's policy drops; the pods' connection and its replies by -i eth+ accepted.
    "replies accepted by a wildcard": ([
        ["-A", "FORWARD", "-s", POD, "-d", DB_NET, "-o", "eth0", "-j", "ACCEPT"],
        ["-A", "FORWARD", "-i", "eth+", "-m", "conntrack", "--ctstate",
         "RELATED,ESTABLISHED", "-j", "ACCEPT"],
        ["-P", "FORWARD", "DROP"]], ["met"]),
    # A drop no packet from the pods reaches: no conflict.
    "a drop behind a negated source": ([
        ["-N", "X"], ["-A", "FORWARD", "!", "-s", "10.0.0.0/8", "-j", "X"],
        ["-A", "X", "-s", POD, "-j", "DROP"]], []),
}


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize("case", sorted(KERNEL_CASES))
def test_the_pods_pass_and_the_plan_reads_the_administrators_rules_as_the_kernel_does(
        require_root: None, mode: Mode, case: str) -> None:
    """The administrator accepts the pods' connection out by eth0 and its replies by ``-i
    eth+`` under FORWARD's policy drop: the kernel lets the pods through and the plan
    says the accept is met; a drop behind ``! -s 10.0.0.0/8`` is never met by the pods:
    they pass, and the plan says no conflict."""
    rules, status = KERNEL_CASES[case]
    wanted = ForwardRule(POD, DB_NET, out_interface="eth0")
    with SeedLab.create() as lab:
        ipt = [f"iptables-{mode}", "-w"]
        run_in(lab.node, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        run_in(lab.node, [*ipt, "-t", "nat", "-A", "POSTROUTING", "-s", POD, "-o", "eth0",
                          "-j", "MASQUERADE"])
        for rule in rules:
            run_in(lab.node, [*ipt, *rule])
        saved = run_in(lab.node, [f"iptables-{mode}-save", "-t", "filter"]).stdout
        assert all(" ".join(r) in saved for r in rules if r[0] == "-A")  # the kernel's view
        with IptablesBackend(lab.node, mode=mode) as backend:
            notes = plan(backend.observe(), State(owned=[wanted])).notes
        assert [n.status for n in notes if n.wanted == wanted] == status, notes
        assert lab.tcp_probe(family=4, timeout=2.0).ok
