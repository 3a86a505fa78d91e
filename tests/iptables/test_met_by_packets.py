"""A wanted rule said met by a foreign one: the kernel's packets agree, in the seed lab.

A foreign rule met before the foreign MASQUERADE or ACCEPT that would serve a wanted
rule can take the pods' packets first: an exemption through ``-o eth+`` before a
masquerade through eth0, a ``RETURN`` to FORWARD's policy DROP before an accept pair.
The plan then says what decides (a conflict, not "met"), and a TCP connection from the
pod to the database fails; with that rule deleted the plan says "met" and it succeeds.

The tests share one seed lab (:mod:`tests.shared_lab`), put back as it was made after
each one.
"""

from __future__ import annotations

import pytest

import tests.shared_lab
from k3snet.backends.iptables import IptablesBackend, Mode
from k3snet.lab.netns import run_in
from k3snet.lab.seed import DB_ADDRESSES, POD_CIDRS, SeedLab
from k3snet.model import ForwardRule, MasqueradeRule, NetObject
from k3snet.model.state import State
from k3snet.planner import plan
from tests.pmtu import learnt_mtu, narrow_the_path
from tests.shared_lab import lab_fixture, made_lab_fixture  # noqa: F401 - one lab for the module

POD = POD_CIDRS[4]
DB_NET = "192.168.2.0/24"
# (table, the rules written first in order, the rule taking the pods' packets, wanted)
CASES: dict[str, tuple[str, list[list[str]], list[str], NetObject]] = {
    "a nat exemption through eth+ before a masquerade through eth0": (
        "nat", [["-o", "eth+", "-j", "RETURN"],
                ["-s", POD, "-o", "eth0", "-j", "MASQUERADE"]],
        ["-o", "eth+", "-j", "RETURN"], MasqueradeRule(POD, out_interface="eth0")),
    "a return to FORWARD's policy drop before an accept pair": (
        "filter", [["-s", POD, "-j", "RETURN"], ["-s", POD, "-d", DB_NET, "-j", "ACCEPT"],
                   ["-d", POD, "-j", "ACCEPT"]],
        ["-s", POD, "-j", "RETURN"], ForwardRule(POD, DB_NET)),
}




def _status(backend: IptablesBackend, wanted: NetObject) -> str:
    notes = [n for n in plan(backend.observe(), State(owned=[wanted])).notes
             if n.wanted == wanted]
    assert len(notes) == 1, notes
    return notes[0].status


def _forward_policy_drop(lab: SeedLab, mode: Mode) -> list[str]:
    """The node forwards under FORWARD's policy DROP, the pods' traffic masqueraded
    through eth0 (FORWARD is what decides); the iptables command of ``mode``."""
    ipt = [f"iptables-{mode}", "-w"]
    run_in(lab.node, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    run_in(lab.node, [*ipt, "-P", "FORWARD", "DROP"])
    run_in(lab.node, [*ipt, "-t", "nat", "-A", "POSTROUTING", "-s", POD, "-o", "eth0",
                      "-j", "MASQUERADE"])
    return ipt


@pytest.mark.kernel
@pytest.mark.parametrize(("case", "mode"), [
    ("a nat exemption through eth+ before a masquerade through eth0", "nft"),
    ("a return to FORWARD's policy drop before an accept pair", "legacy"),
])
def test_a_foreign_rule_met_only_when_the_kernel_lets_the_pods_packets_reach_it(
    lab: SeedLab, case: str, mode: Mode
) -> None:
    table, rules, taking, wanted = CASES[case]
    ipt = [f"iptables-{mode}", "-w"]
    run_in(lab.node, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    if table == "filter":  # the pods' traffic is masqueraded; FORWARD is what decides
        run_in(lab.node, [*ipt, "-P", "FORWARD", "DROP"])
        run_in(lab.node, [*ipt, "-t", "nat", "-A", "POSTROUTING", "-s", POD, "-o", "eth0",
                          "-j", "MASQUERADE"])
    chain = "POSTROUTING" if table == "nat" else "FORWARD"
    for rule in rules:
        run_in(lab.node, [*ipt, "-t", table, "-A", chain, *rule])
    with IptablesBackend(lab.node, mode=mode) as backend:
        assert _status(backend, wanted) == "conflict"
    assert not lab.tcp_probe(family=4, timeout=1.0).ok
    run_in(lab.node, [*ipt, "-t", table, "-D", chain, *taking])
    with IptablesBackend(lab.node, mode=mode) as backend:
        assert _status(backend, wanted) == "met"
    assert lab.tcp_probe(family=4, timeout=2.0).ok


@pytest.mark.kernel
def test_a_return_to_forwards_policy_drop_of_other_addresses_leaves_the_pair_met(
    lab: SeedLab,
) -> None:
    """A RETURN whose packets are never the pair's (bounded to a destination neither
    way of the pods' connection has) does not take them: the kernel lets them reach the
    accepts, and the plan says the forward rule is met rather than writing its own."""
    ipt = _forward_policy_drop(lab, "legacy")
    for rule in (["!", "-s", "10.1.0.0/16", "-d", "10.1.0.0/16", "-j", "RETURN"],
                 ["-s", POD, "-d", DB_NET, "-j", "ACCEPT"], ["-d", POD, "-j", "ACCEPT"]):
        run_in(lab.node, [*ipt, "-A", "FORWARD", *rule])
    with IptablesBackend(lab.node, mode="legacy") as backend:
        assert _status(backend, ForwardRule(POD, DB_NET)) == "met"
    assert lab.tcp_probe(family=4, timeout=2.0).ok



# A chain FORWARD jumps to (FWD-X), the rule of it taking the pods' packets back to
# FORWARD past the pair after it, and that rule's own chain (FWD-Y) if any.
SKIPPING: dict[str, tuple[list[str], list[list[str]]]] = {
    "a return of the pods' traffic": (["-s", POD, "-j", "RETURN"], []),
    "a chain gone to, ending": (["-g", "FWD-Y"], [["-s", "10.99.0.0/16", "-j", "ACCEPT"]]),
}


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize("case", sorted(SKIPPING))
def test_a_rule_sending_the_pods_back_from_a_chain_jumped_to_hides_the_pair_after_it(
    lab: SeedLab, case: str, mode: Mode
) -> None:
    """A RETURN of the pods' traffic in a chain FORWARD jumps to, or a chain gone to from
    it (whose end goes back to FORWARD too), sends it back to FORWARD, past that chain's
    accepts, and FORWARD's policy drops it: the pair is not met (k3snet writes its own
    accept) and the pod's connection fails; without that rule the pair is met and it
    succeeds."""
    taking, gone_to = SKIPPING[case]
    wanted = ForwardRule(POD, DB_NET)
    ipt = _forward_policy_drop(lab, mode)
    for chain in ("FWD-X", "FWD-Y"):
        run_in(lab.node, [*ipt, "-N", chain])
    for rule in gone_to:
        run_in(lab.node, [*ipt, "-A", "FWD-Y", *rule])
    run_in(lab.node, [*ipt, "-A", "FORWARD", "-j", "FWD-X"])
    for rule in (taking, ["-s", POD, "-d", DB_NET, "-j", "ACCEPT"],
                 ["-d", POD, "-j", "ACCEPT"]):
        run_in(lab.node, [*ipt, "-A", "FWD-X", *rule])
    with IptablesBackend(lab.node, mode=mode) as backend:
        notes = plan(backend.observe(), State(owned=[wanted])).notes
        assert [n.status for n in notes if n.wanted == wanted] == []
    assert not lab.tcp_probe(family=4, timeout=1.0).ok
    run_in(lab.node, [*ipt, "-D", "FWD-X", *taking])
    with IptablesBackend(lab.node, mode=mode) as backend:
        assert _status(backend, wanted) == "met"
    assert lab.tcp_probe(family=4, timeout=2.0).ok


# A drop before the pair: (the rule, whether the pair is met with it before them, whether
# a router's Packet Too Big for the pods' flow reaches the pod through it).
DROPS: dict[str, tuple[list[str], bool, bool]] = {
    "of other destinations": (["-d", "192.0.2.0/24", "-j", "DROP"], True, True),
    # The router's own side: the pods' connection passes, its ICMP errors do not.
    "of the router's sources": (["-s", "192.168.1.0/24", "-j", "DROP"], False, False),
}


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize("case", sorted(DROPS))
def test_a_drop_before_the_pair_hides_it_only_when_it_may_take_its_packets_or_errors(
    lab: SeedLab, case: str, mode: Mode
) -> None:
    """Under FORWARD's policy DROP, a drop met before an accept pair of the pods' traffic hides
    the pair only if it may match the packets of one of its accepts: one of other
    destinations lets the pod's connection and a router's Packet Too Big through, and
    the pair is met (it was read as hiding every later accept, and k3snet wrote its
    own); one of sources a router may have is not, the kernel drops the router's error
    to the pod (the pod never learns the path's MTU)."""
    rule, met, errors_pass = DROPS[case]
    wanted = ForwardRule(POD, DB_NET)
    ipt = _forward_policy_drop(lab, mode)
    for line in (rule, ["-s", POD, "-d", DB_NET, "-j", "ACCEPT"],
                 ["-d", POD, "-j", "ACCEPT"]):
        run_in(lab.node, [*ipt, "-A", "FORWARD", *line])
    with IptablesBackend(lab.node, mode=mode) as backend:
        notes = plan(backend.observe(), State(owned=[wanted])).notes
    assert [n.status for n in notes if n.wanted == wanted] == (["met"] if met else [])
    assert lab.tcp_probe(family=4, timeout=2.0).ok
    narrow_the_path(lab)
    assert ("mtu 1280" in learnt_mtu(lab, 4, DB_ADDRESSES[4])) is errors_pass


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize("first", [["-s", "192.0.2.0/24"], ["-s", POD]])
def test_a_chain_jumped_to_twice_returns_each_jumps_packets_alone(
    lab: SeedLab, first: list[str], mode: Mode
) -> None:
    """FORWARD jumps to FWD-X twice, first for some packets (``-s 192.0.2.0/24 -j FWD-X``,
    or the pods' own), then for all; FWD-X returns what goes to 198.51.100.0/24, then
    accepts the pods' pair. A RETURN sends back only the packets of the jump that took
    them there: the pods' connection passes both ways, through either jump, and the pair
    is met. The RETURNs of the first jump's reading (not modelled, as any rule behind a
    narrowed jump) were pooled with the second's and hid its accepts: k3snet wrote its
    own rules beside them."""
    wanted = ForwardRule(POD, DB_NET)
    ipt = _forward_policy_drop(lab, mode)
    run_in(lab.node, [*ipt, "-N", "FWD-X"])
    for rule in (["-d", "198.51.100.0/24", "-j", "RETURN"],
                 ["-s", POD, "-d", DB_NET, "-j", "ACCEPT"], ["-d", POD, "-j", "ACCEPT"]):
        run_in(lab.node, [*ipt, "-A", "FWD-X", *rule])
    run_in(lab.node, [*ipt, "-A", "FORWARD", *first, "-j", "FWD-X"])
    run_in(lab.node, [*ipt, "-A", "FORWARD", "-j", "FWD-X"])
    with IptablesBackend(lab.node, mode=mode) as backend:
        assert _status(backend, wanted) == "met"
    assert lab.tcp_probe(family=4, timeout=2.0).ok


# A -g from FORWARD before the pair: (its test, whether the pods' packets meet it).
GOTOS: dict[str, tuple[list[str], bool]] = {
    "of other destinations": (["-d", "192.0.2.0/24"], False),
    "of the pods' sources": (["-s", POD], True),
}


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize("case", sorted(GOTOS))
def test_a_chain_gone_to_for_some_packets_sends_only_those_to_forwards_policy(
    lab: SeedLab, case: str, mode: Mode
) -> None:
    """``-d 192.0.2.0/24 -g FWD-Y`` before an accept pair, under FORWARD's policy DROP:
    the end of FWD-Y (and its RETURNs) sends the policy only the packets the ``-g`` took,
    never the pods' to the database or back, which the pair accepts: met (it was read as
    sending every packet there, and k3snet wrote its own rules). ``-s PODS -g FWD-Y``
    takes the pods' packets: their connection fails, and the plan names the ``-g`` as the
    conflict."""
    test, taken = GOTOS[case]
    wanted = ForwardRule(POD, DB_NET)
    ipt = _forward_policy_drop(lab, mode)
    run_in(lab.node, [*ipt, "-N", "FWD-Y"])
    for rule in (["-d", "198.51.100.0/24", "-j", "RETURN"],
                 ["-s", "198.51.100.0/24", "-j", "ACCEPT"]):
        run_in(lab.node, [*ipt, "-A", "FWD-Y", *rule])
    for rule in ([*test, "-g", "FWD-Y"], ["-s", POD, "-d", DB_NET, "-j", "ACCEPT"],
                 ["-d", POD, "-j", "ACCEPT"]):
        run_in(lab.node, [*ipt, "-A", "FORWARD", *rule])
    with IptablesBackend(lab.node, mode=mode) as backend:
        notes = plan(backend.observe(), State(owned=[wanted])).notes
    assert [n.status for n in notes if n.wanted == wanted] == (
        ["conflict"] if taken else ["met"])
    assert lab.tcp_probe(family=4, timeout=1.0 if taken else 2.0).ok is not taken


# FORWARD jumps by the pods' sources (or by a wider one) to a chain (KUBE-X): what its
# rules match is what the jump and they match at once.
# (the rules, the wanted rule's status: met, or a conflict naming the drop)
BEHIND_JUMPS: dict[str, tuple[list[list[str]], str]] = {
    "an accept behind a jump of the pods' sources": (
        [["-A", "FORWARD", "-s", POD, "-j", "KUBE-X"], ["-A", "KUBE-X", "-j", "ACCEPT"]],
        "met"),
    "a drop of other destinations behind a jump of a wider source": (
        [["-A", "FORWARD", "-s", "10.0.0.0/8", "-j", "KUBE-X"],
         ["-A", "KUBE-X", "-d", "192.0.2.0/24", "-j", "DROP"],
         ["-A", "FORWARD", "-s", POD, "-d", DB_NET, "-j", "ACCEPT"]], "met"),
    "a drop of the database behind a jump of a wider source": (
        [["-A", "FORWARD", "-s", "10.0.0.0/8", "-j", "KUBE-X"],
         ["-A", "KUBE-X", "-d", DB_NET, "-j", "DROP"],
         ["-A", "FORWARD", "-s", POD, "-d", DB_NET, "-j", "ACCEPT"]], "conflict"),
    # iptables-save prints the comment unquoted (`--comment -j -j DROP`): no jump of it
    "a drop of the pods commented -j": (
        [["-A", "FORWARD", "-s", POD, "-m", "comment", "--comment", "-j", "-j", "DROP"],
         ["-A", "FORWARD", "-s", POD, "-d", DB_NET, "-j", "ACCEPT"]], "conflict"),
    "a drop of the pods commented --comment": (
        [["-A", "FORWARD", "-s", POD, "-m", "comment", "--comment", "--comment", "-j",
          "DROP"], ["-A", "FORWARD", "-s", POD, "-d", DB_NET, "-j", "ACCEPT"]], "conflict"),
}


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize("case", sorted(BEHIND_JUMPS))
def test_a_rule_behind_a_jump_with_conditions_is_read_as_the_kernel_matches_it(
    lab: SeedLab, case: str, mode: Mode
) -> None:
    """Under FORWARD's policy DROP, with an accept of the replies: the pods' forward
    accept is met exactly when the pod reaches the database (an accept a jump by the
    pods' sources leads to; a drop behind a jump of 10.0.0.0/8 of other destinations
    hides nothing), read from ``iptables-save`` as the kernel holds the rules; a comment
    ``-j`` (printed unquoted) is no jump of the rule's: its drop is a conflict."""
    rules, status = BEHIND_JUMPS[case]
    wanted = ForwardRule(POD, DB_NET)
    ipt = _forward_policy_drop(lab, mode)
    run_in(lab.node, [*ipt, "-N", "KUBE-X"])
    for rule in [*rules, ["-A", "FORWARD", "-d", POD, "-m", "conntrack", "--ctstate",
                          "RELATED,ESTABLISHED", "-j", "ACCEPT"]]:
        run_in(lab.node, [*ipt, *rule])
    saved = run_in(lab.node, [f"iptables-{mode}-save", "-t", "filter"]).stdout
    assert " ".join(rules[0]) in saved  # the kernel holds the jump as written
    with IptablesBackend(lab.node, mode=mode) as backend:
        notes = plan(backend.observe(), State(owned=[wanted])).notes
        assert [n.status for n in notes if n.wanted == wanted] == [status]
    met = status == "met"
    assert lab.tcp_probe(family=4, timeout=2.0 if met else 1.0).ok is met


# What a test may leave in the shared lab, as a command in one of its namespaces (by
# role), and the command undoing it if the shared lab does not take it back (then the
# check before a test fails it) or None if it does.
LEFTOVERS: dict[str, tuple[str, list[str], list[str] | None]] = {
    "a route the path tests add on the router": (
        "router", ["ip", "route", "add", "10.99.0.0/16", "via", "192.168.1.5"], None),
    "a route in another table": (
        "node", ["ip", "route", "add", "10.99.0.0/16", "dev", "eth0", "table", "7"], None),
    "a policy routing rule": (
        "node", ["ip", "rule", "add", "pref", "700", "from", POD, "lookup", "7"], None),
    "a bridge as the Docker tests add": ("node", ["ip", "link", "add", "left0", "type",
                                                  "bridge"], None),
    "a device's MTU": ("db", ["ip", "link", "set", "eth0", "mtu", "1280"], None),
    "a sysctl": ("node", ["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=2"], None),
    "a set of an nftables table": ("node", ["nft", "add table inet t; add set inet t s "
                                            "{ type ipv4_addr; }"], None),
    "a legacy iptables rule": ("router", ["iptables-legacy", "-w", "-A", "FORWARD", "-j",
                                          "DROP"], None),
    "an address": ("router", ["ip", "addr", "add", "192.0.2.9/32", "dev", "lo"],
                   ["ip", "addr", "del", "192.0.2.9/32", "dev", "lo"]),
    "a permanent neighbour entry": (
        "node", ["ip", "neigh", "replace", "192.168.1.1", "lladdr", "02:00:00:00:00:99", "dev",
                 "eth0", "nud", "permanent"], ["ip", "neigh", "del", "192.168.1.1", "dev", "eth0"]),
    "a qdisc dropping every packet": (
        "router", ["tc", "qdisc", "add", "dev", "eth1", "root", "blackhole"],
        ["tc", "qdisc", "del", "dev", "eth1", "root"]),
    "a route changed in place (its source address)": (
        "node", ["ip", "route", "change", "192.168.2.0/24", "via", "192.168.1.1", "dev", "eth0",
                 "proto", "static", "src", "10.42.0.1"],
        ["ip", "route", "change", "192.168.2.0/24", "via", "192.168.1.1", "dev", "eth0",
         "proto", "static"]),
    "a device's ARP turned off": ("router", ["ip", "link", "set", "eth1", "arp", "off"],
                                  ["ip", "link", "set", "eth1", "arp", "on"]),
}


@pytest.mark.kernel
@pytest.mark.parametrize("leftover", sorted(LEFTOVERS))
def test_what_a_test_leaves_is_found_and_taken_back_or_fails_the_next_test(
        made_lab: SeedLab, leftover: str) -> None:
    """The shared lab's check before a test finds each thing a test may leave, in any
    namespace of the lab, against the lab as made (not a reading taken anew, which took
    what it found as the lab's own); what a test may leave is taken back and the test
    goes on, the rest (an address, a neighbour entry, a qdisc, a device's flag, a route
    changed in place: no test sets one) fails it, named."""
    role, command, undo = LEFTOVERS[leftover]
    ns = getattr(made_lab, role)
    next(tests.shared_lab.shared_lab(made_lab), None)  # the lab as made, recorded
    run_in(ns, command)
    try:
        found = tests.shared_lab.left_over(made_lab)
        assert found, leftover
        assert all(difference.startswith(f"{ns} ") for difference in found), found
        if undo is None:
            next(tests.shared_lab.shared_lab(made_lab), None)
            assert tests.shared_lab.left_over(made_lab) == []
        else:
            with pytest.raises(AssertionError, match="left by a test"):
                next(tests.shared_lab.shared_lab(made_lab))
    finally:
        if undo is not None:
            run_in(ns, undo)


@pytest.mark.kernel
def test_the_neighbours_a_test_learnt_are_forgotten_before_the_next_test(
        made_lab: SeedLab) -> None:
    """A neighbour entry a test's packets left (the pod's, the router's) would let the
    next test's packets past a rule dropping ARP or neighbour discovery, which in a lab
    as made they must get past: the shared lab forgets them after a test."""
    next(tests.shared_lab.shared_lab(made_lab), None)
    for family in (4, 6):
        made_lab.tcp_probe(family=family, timeout=1.0)  # the pod's node, its router
    assert run_in(made_lab.node, ["ip", "neigh", "show"]).stdout.strip()
    next(tests.shared_lab.shared_lab(made_lab), None)
    assert run_in(made_lab.node, ["ip", "neigh", "show"]).stdout.strip() == ""
