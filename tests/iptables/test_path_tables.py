"""Drops in raw, mangle and security: tables k3snet writes nothing in, on the forward path.

A forwarded packet passes raw PREROUTING, mangle PREROUTING, FORWARD and POSTROUTING
and security FORWARD besides filter's FORWARD, where k3snet's accepts are: an
``ACCEPT`` ends only its own chain, so a ``-t mangle -A FORWARD -j DROP`` drops the
pods' traffic whatever k3snet's rules say. The backend read only filter and nat, and
the plan said every forward rule was in place. Now such a drop is a
:class:`~k3snet.model.ForwardBlock`, a ``!`` conflict as a drop before k3snet's jump
in filter is. The kernel test sends a real connection through the seed lab's node.
"""

from __future__ import annotations

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.iptables.foreign import (
    foreign_forward,
    foreign_nat,
    forward_drops_untracked,
    path_blocks,
    untracked_accepts,
)
from k3snet.backends.iptables.save import parse_save
from k3snet.lab import SeedLab
from k3snet.lab.netns import run_in
from k3snet.model import ForwardBlock, ForwardRule, MasqueradeRule, NetObject, State
from k3snet.planner import plan
from tests.dropped import dropped, iptables_count, snmp_count
from tests.shared_lab import lab_fixture, made_lab_fixture  # noqa: F401 - one lab for the module

POD = "10.42.0.0/16"
DB = "192.168.2.0/24"
WANTED = ForwardRule(POD, DB, in_interface="cni0", out_interface="eth0")


def _blocks(table: str, rules: str, policies: dict[str, str] | None = None,
            family: int = 4) -> set[str]:
    chains = {"PREROUTING": "ACCEPT", "FORWARD": "ACCEPT", "POSTROUTING": "ACCEPT",
              "OUTPUT": "ACCEPT", "ADMIN": "-", **(policies or {})}
    head = "\n".join(f":{chain} {policy} [0:0]" for chain, policy in chains.items())
    text = f"*{table}\n{head}\n{rules.strip()}\nCOMMIT\n"
    return {block.describe() for block in path_blocks(parse_save(text).get(table), family)}


@pytest.mark.parametrize(("table", "chain"), [
    ("mangle", "FORWARD"), ("mangle", "PREROUTING"), ("mangle", "POSTROUTING"),
    ("raw", "PREROUTING"), ("security", "FORWARD")])
def test_a_catch_all_drop_on_the_forward_path_of_another_table_is_a_block(
        table: str, chain: str) -> None:
    assert _blocks(table, f"-A {chain} -j DROP") == {
        f"drop by iptables IPv4 {table}: -A {chain} -j DROP"}


def test_chains_forwarded_packets_do_not_pass_are_not_read() -> None:
    assert _blocks("mangle", "-A OUTPUT -j DROP\n-A ADMIN -j DROP") == set()
    assert _blocks("raw", "-A OUTPUT -j DROP") == set()
    assert _blocks("nat", "-A PREROUTING -j DROP") == set()  # not a table judged here


def test_a_drop_a_jump_down_keeps_its_addresses_and_the_way_there_narrows_it() -> None:
    blocks = _blocks("mangle", f"-A FORWARD -s {POD} -j ADMIN\n-A ADMIN -d {DB} -j DROP")
    assert blocks == {"drop by iptables IPv4 mangle: -A ADMIN -d 192.168.2.0/24 -j DROP"}
    text = ("*mangle\n:FORWARD ACCEPT [0:0]\n:ADMIN - [0:0]\n"
            f"-A FORWARD -s {POD} -j ADMIN\n-A ADMIN -d {DB} -j DROP\nCOMMIT\n")
    (block,) = path_blocks(parse_save(text)["mangle"], 4)
    assert isinstance(block, ForwardBlock)
    assert (str(block.source), str(block.destination)) == (POD, DB)


def test_the_policy_of_a_path_chain_drops_what_reaches_its_end() -> None:
    assert _blocks("mangle", "", {"FORWARD": "DROP"}) == {
        "drop by iptables IPv4 mangle: -P FORWARD DROP"}
    # an accept of every packet first: the policy is never reached
    assert _blocks("mangle", "-A FORWARD -j ACCEPT", {"FORWARD": "DROP"}) == set()
    # a return of some packets goes to the policy too
    assert _blocks("mangle", f"-A FORWARD -s {POD} -j RETURN\n-A FORWARD -j ACCEPT",
                   {"FORWARD": "DROP"}) == {
        "return by iptables IPv4 mangle: -A FORWARD -s 10.42.0.0/16 -j RETURN"}


def test_an_accept_ends_only_its_own_table_and_what_goes_on_is_no_block() -> None:
    assert _blocks("mangle", "-A FORWARD -j ACCEPT\n-A FORWARD -j DROP") == set()
    assert _blocks("mangle", "-A PREROUTING -j MARK --set-xmark 0x1/0x1\n"
                             "-A PREROUTING -j TPROXY --on-port 1 --tproxy-mark 0x1/0x1") == set()
    assert _blocks("raw", "-A PREROUTING -j CT --zone 1") == set()


def test_a_reverse_path_drop_is_no_block_of_a_pods_traffic() -> None:
    # Calico's raw rule and firewalld's IPv6 one: only spoofed sources fail the check.
    calico = ("-A PREROUTING -m mark --mark 0x40000/0x40000 -m rpfilter --validmark "
              "--invert -j DROP")
    assert _blocks("raw", calico) == set()
    assert _blocks("raw", "-A PREROUTING -m rpfilter --invert -j DROP", family=6) == set()
    assert _blocks("mangle", "-A PREROUTING -m rpfilter -j DROP") == {
        "drop by iptables IPv4 mangle: -A PREROUTING -m rpfilter -j DROP"}




def _desired() -> State:
    return State(owned=[WANTED, MasqueradeRule(POD, destination=DB, out_interface="eth0")])


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize("rule", [
    ["-t", "mangle", "-A", "FORWARD", "-j", "DROP"],
    ["-t", "raw", "-A", "PREROUTING", "-s", POD, "-j", "DROP"],
    ["-t", "mangle", "-A", "POSTROUTING", "-d", DB, "-j", "DROP"],
], ids=["mangle-forward", "raw-prerouting", "mangle-postrouting"])
def test_a_drop_in_mangle_or_raw_drops_the_pods_connection_and_is_a_conflict(
        lab: SeedLab, mode: str, rule: list[str]) -> None:
    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    lab.block_forward("iptables-nft" if mode == "nft" else "iptables-legacy")
    with IptablesBackend(lab.node, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), _desired()))
        assert plan(backend.observe(), _desired()).changes == ()
        assert lab.tcp_probe(4).ok  # k3snet's rules let the pod through
        run_in(lab.node, [f"iptables-{mode}", "-w", *rule])
        assert dropped(lab, 4, iptables_count(  # a real packet: dropped there
            lab.node, f"iptables-{mode}-save", rule[1], " ".join(rule[2:])))
        observed = backend.observe()
        p = plan(observed, _desired())
        (note,) = p.conflicts
        assert note.wanted == WANTED, p.render()
        foreign: NetObject | None = note.foreign
        assert isinstance(foreign, ForwardBlock)
        assert foreign.where == f"iptables IPv4 {rule[1]}"
        assert foreign.rule == " ".join(rule[2:]), foreign.rule
        assert not p.changes, p.render()


@pytest.mark.kernel
def test_a_mangle_table_written_with_nft_that_iptables_cannot_show_is_a_warning(
        ns: str) -> None:
    admin = ("table ip mangle {\n  chain FORWARD {\n"
             "    type filter hook forward priority -150; policy accept;\n"
             "    ip saddr 10.42.0.0/16 ct state new drop\n  }\n}\n")
    run_in(ns, ["nft", "-f", "-"], input_text=admin)
    assert "`mangle' is incompatible" in run_in(ns, ["iptables-nft-save"]).stdout
    with IptablesBackend(ns, mode="nft") as backend:
        backend.observe()
        (warning,) = [w for w in backend.warnings if w.startswith("IPv4 mangle:")]
        assert f"`ip netns exec {ns} nft list table ip mangle`" in warning, warning


def test_untracked_packets_in_raw_are_an_exemption_from_nat() -> None:
    assert _blocks("raw", f"-A PREROUTING -s {POD} -j CT --notrack") == {
        "no NAT by iptables IPv4 raw: -A PREROUTING -s 10.42.0.0/16 -j CT --notrack"}
    assert _blocks("raw", "-A PREROUTING -j ADMIN\n-A ADMIN -d 192.168.2.0/24 -j NOTRACK") == {
        "no NAT by iptables IPv4 raw: -A ADMIN -d 192.168.2.0/24 -j NOTRACK"}
    # marked traffic is another program's; an accept of every packet first ends the chain
    assert _blocks("raw", "-A PREROUTING -m mark --mark 0x1/0x1 -j CT --notrack") == set()
    assert _blocks("raw", "-A PREROUTING -j ACCEPT\n-A PREROUTING -j NOTRACK") == set()
    assert _blocks("mangle", "-A PREROUTING -j NOTRACK") == set()  # raw's alone


def test_untracked_packets_under_a_forward_policy_drop_are_a_forward_block_too() -> None:
    text = (f"*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:ADMIN - [0:0]\n"
            f"-A PREROUTING -s {POD} -j CT --notrack\n-A PREROUTING -j ADMIN\n"
            f"-A ADMIN -s {DB} -j NOTRACK\n"
            "-A PREROUTING -m mark --mark 0x1/0x1 -j NOTRACK\nCOMMIT\n")
    dump = parse_save(text)["raw"]
    forward = {b.describe() for b in path_blocks(dump, 4, forward_drops=True)
               if isinstance(b, ForwardBlock)}
    assert forward == {  # either way: a reply of an untracked packet is no established one
        "untrack by iptables IPv4 raw: -A PREROUTING -s 10.42.0.0/16 -j CT --notrack",
        "untrack by iptables IPv4 raw: -A ADMIN -s 192.168.2.0/24 -j NOTRACK"}
    for block in path_blocks(dump, 4, forward_drops=True):
        if isinstance(block, ForwardBlock):
            assert block.decides(WANTED)
    # a FORWARD policy of ACCEPT lets the untracked replies through: no NAT alone
    assert not any(isinstance(b, ForwardBlock) for b in path_blocks(dump, 4))


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_an_admins_forward_accepts_answered_by_conntrack_meet_nothing_untracked(
        lab: SeedLab, mode: str) -> None:
    """FORWARD's policy DROP opened by the admin's own accepts, the replies by conntrack:
    read as meeting the wanted forward rule, no rule of k3snet's was written, and with
    the pods' packets untracked their replies (a new connection's) met the policy."""
    wanted = State(owned=[WANTED])
    tool = f"iptables-{mode}"
    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    run_in(lab.router, ["ip", "route", "add", POD, "via", "192.168.1.5"])
    lab.block_forward("iptables-nft" if mode == "nft" else "iptables-legacy")
    run_in(lab.node, [tool, "-w", "-A", "FORWARD", "-s", POD, "-d", DB, "-j", "ACCEPT"])
    run_in(lab.node, [tool, "-w", "-A", "FORWARD", "-d", POD, "-m", "conntrack",
                      "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"])
    with IptablesBackend(lab.node, mode=mode) as backend:  # type: ignore[arg-type]
        p = plan(backend.observe(), wanted)
        assert [n.status for n in p.notes] == ["met"], p.render()
        assert lab.tcp_probe(4).ok
        run_in(lab.node, [tool, "-w", "-t", "raw", "-A", "PREROUTING", "-s", POD,
                          "-j", "CT", "--notrack"])
        assert dropped(lab, 4, iptables_count(  # a real connection: dropped
            lab.node, f"iptables-{mode}-save", "filter", ":FORWARD DROP"))
        p = plan(backend.observe(), wanted)
        (note,) = p.conflicts
        assert note.wanted == WANTED, p.render()
        assert isinstance(note.foreign, ForwardBlock)
        assert note.foreign.verdict == "untrack"


@pytest.mark.parametrize("last", ["-j DROP", "-j REJECT --reject-with icmp-host-prohibited"])
def test_untracked_packets_before_a_last_drop_of_every_packet_in_forward_are_a_forward_block(
        last: str) -> None:
    """FORWARD's policy ACCEPT, and a drop of every packet after k3snet's jump (RHEL's
    firewalld-less default, ``-A FORWARD -j REJECT``): the untracked replies fall through
    k3snet's accept of established connections to it, as to a policy drop."""
    dump = parse_save(f"*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j K3SNET-FORWARD\n"
                      f"-A FORWARD {last}\nCOMMIT\n")
    assert forward_drops_untracked(dump["filter"])
    for harmless in ("-i eth9 -j DROP", "-m conntrack --ctstate INVALID -j DROP"):
        dump = parse_save(f"*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD {harmless}\nCOMMIT\n")
        assert not forward_drops_untracked(dump["filter"])
    # an ACCEPT of every packet before it: the drop is never reached
    dump = parse_save(f"*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j ACCEPT\n"
                      f"-A FORWARD {last}\nCOMMIT\n")
    assert not forward_drops_untracked(dump["filter"])
    assert not forward_drops_untracked(None)


def _filter(rules: str, policy: str = "ACCEPT") -> str:
    chains = ":ADMIN - [0:0]\n:INNER - [0:0]\n:K3SNET-FORWARD - [0:0]\n"
    return f"*filter\n:FORWARD {policy} [0:0]\n{chains}{rules.strip()}\nCOMMIT\n"


@pytest.mark.parametrize("rules", [
    "-A FORWARD -j K3SNET-FORWARD\n-A FORWARD -j ADMIN\n-A ADMIN -s 10.9.0.0/16 -j ACCEPT\n"
    "-A ADMIN -j REJECT --reject-with icmp-host-prohibited",
    "-A FORWARD -j ADMIN\n-A ADMIN -j INNER\n-A INNER -j DROP",
    "-A FORWARD -j ADMIN\n-A ADMIN -j INNER\n-A INNER -j RETURN\n-A ADMIN -j DROP",
    "-A FORWARD -g ADMIN\n-A ADMIN -j DROP",
], ids=["ufw-like-last-reject", "two-deep", "return-to-a-later-drop", "gone-to"])
def test_a_drop_of_every_packet_in_a_chain_forward_jumps_to_drops_what_is_untracked(
        rules: str) -> None:
    """ufw's and firewalld's own chains, not FORWARD, end with their reject: the untracked
    replies reach it through FORWARD's jump as they would a drop in FORWARD itself."""
    assert forward_drops_untracked(parse_save(_filter(rules))["filter"])


@pytest.mark.parametrize("rules", [
    "-A FORWARD -i eth9 -j ADMIN\n-A ADMIN -j DROP",  # some packets only
    "-A FORWARD -j ADMIN\n-A ADMIN -j RETURN\n-A ADMIN -j DROP",  # never reached
    "-A FORWARD -j ADMIN\n-A ADMIN -j ACCEPT\n-A FORWARD -j DROP",  # accepted first
    "-A FORWARD -g ADMIN\n-A ADMIN -s 10.9.0.0/16 -j DROP\n-A FORWARD -j DROP",  # policy
    "-A FORWARD -j ADMIN\n-A ADMIN -j INNER\n-A INNER -j ADMIN",  # a loop in the text
    "-A FORWARD -j K3SNET-FORWARD\n-A K3SNET-FORWARD -j DROP",  # k3snet's own
], ids=["conditional-jump", "after-return", "accepted", "gone-to-policy", "loop", "own"])
def test_a_chain_forward_jumps_to_that_drops_not_every_packet_drops_nothing_untracked(
        rules: str) -> None:
    assert not forward_drops_untracked(parse_save(_filter(rules))["filter"])


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_untracked_traffic_before_a_reject_in_a_chain_forward_jumps_to_is_a_forward_conflict(
        lab: SeedLab, mode: str) -> None:
    """FORWARD's policy stays ACCEPT; the administrator's chain FORWARD jumps to ends with a
    reject (as ufw's and firewalld's do): the pods' untracked packets' replies are rejected
    there, and the plan said No changes."""
    wanted = State(owned=[WANTED])
    tool = f"iptables-{mode}"
    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    run_in(lab.router, ["ip", "route", "add", POD, "via", "192.168.1.5"])
    with IptablesBackend(lab.node, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), wanted))
        # after k3snet's jump (one before it is a conflict of its own)
        run_in(lab.node, [tool, "-w", "-N", "ADMIN"])
        run_in(lab.node, [tool, "-w", "-A", "ADMIN", "-j", "REJECT"])
        run_in(lab.node, [tool, "-w", "-A", "FORWARD", "-j", "ADMIN"])
        assert lab.tcp_probe(4).ok
        assert not plan(backend.observe(), wanted).conflicts
        run_in(lab.node, [tool, "-w", "-t", "raw", "-A", "PREROUTING", "-s", POD,
                          "-j", "CT", "--notrack"])
        assert dropped(lab, 4, iptables_count(  # a real connection: rejected
            lab.node, f"{tool}-save", "filter",
            "-A ADMIN -j REJECT --reject-with icmp-port-unreachable"))
        p = plan(backend.observe(), wanted)
        (note,) = p.conflicts
        assert note.wanted == WANTED, p.render()
        assert isinstance(note.foreign, ForwardBlock)
        assert note.foreign.verdict == "untrack"
        assert not p.changes, p.render()


def test_an_untracked_flow_forwards_own_accepts_take_both_ways_by_address_is_no_conflict(
        ) -> None:
    """FORWARD's policy DROP, opened for the flow both ways by address: the untracked
    replies, which k3snet's accept of established connections does not take, are accepted
    there (the nftables backend reads another table's forward chain so)."""
    both = (f"-A FORWARD -j K3SNET-FORWARD\n-A FORWARD -s {POD} -d {DB} -j ACCEPT\n"
            f"-A FORWARD -s {DB} -d {POD} -j ACCEPT")
    dump = parse_save(_filter(both, "DROP"))["filter"]
    accepted = untracked_accepts(dump, 4)
    assert accepted == (ForwardRule(POD, DB), ForwardRule(DB, POD))
    raw = parse_save(f"*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -s {POD} -j NOTRACK\n"
                     "COMMIT\n")["raw"]
    (block,) = [b for b in path_blocks(raw, 4, forward_drops=True, accepted=accepted)
                if isinstance(b, ForwardBlock)]
    assert not block.decides(WANTED)
    # one way only, by conntrack the other, or after a drop of the other way: still a
    # conflict (a drop of the pods' sources, after their accept, takes no packet back)
    for rules in (f"-A FORWARD -s {POD} -d {DB} -j ACCEPT\n-A FORWARD -d {POD} -m conntrack "
                  "--ctstate RELATED,ESTABLISHED -j ACCEPT",
                  f"-A FORWARD -s {POD} -d {DB} -j ACCEPT\n-A FORWARD -d 10.0.0.0/8 -j DROP\n"
                  f"-A FORWARD -s {DB} -d {POD} -j ACCEPT"):
        accepted = untracked_accepts(parse_save(_filter(rules, "DROP"))["filter"], 4)
        (block,) = [b for b in path_blocks(raw, 4, forward_drops=True, accepted=accepted)
                    if isinstance(b, ForwardBlock)]
        assert block.decides(WANTED), rules


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_untracked_traffic_forward_accepts_both_ways_by_address_connects_and_no_conflict(
        lab: SeedLab, mode: str) -> None:
    """The pods' packets untracked under FORWARD's policy DROP, the administrator's accepts
    after k3snet's jump taking both ways by address: a real connection. k3snet's rule in
    place was read as one the notrack decides (set aside, not owned: the plan said it was
    met by the administrator's and the next edit of the table removed it), while the
    nftables backend keeps its own beside the same rules in another table's chain."""
    wanted = State(owned=[WANTED])
    tool = f"iptables-{mode}"
    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    run_in(lab.router, ["ip", "route", "add", POD, "via", "192.168.1.5"])
    lab.block_forward("iptables-nft" if mode == "nft" else "iptables-legacy")
    with IptablesBackend(lab.node, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), wanted))
        for source, destination in ((POD, DB), (DB, POD)):
            run_in(lab.node, [tool, "-w", "-A", "FORWARD", "-s", source, "-d",
                              destination, "-j", "ACCEPT"])
        run_in(lab.node, [tool, "-w", "-t", "raw", "-A", "PREROUTING", "-s", POD,
                          "-j", "CT", "--notrack"])
        assert lab.tcp_probe(4).ok  # a real connection, untracked both ways
        observed = backend.observe()
        assert WANTED in observed.owned  # k3snet's own rule, still in place
        p = plan(observed, wanted)
        assert not p.conflicts, p.render()
        assert not p.changes, p.render()


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_untracked_traffic_before_a_last_reject_in_forward_is_dropped_and_a_forward_conflict(
        lab: SeedLab, mode: str) -> None:
    """FORWARD's policy stays ACCEPT; ``-A FORWARD -j REJECT`` after k3snet's jump rejects
    what k3snet's chain does not accept: the replies of the pods' untracked packets."""
    wanted = State(owned=[WANTED])
    untracked = ["-s", POD, "-j", "CT", "--notrack"]
    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    run_in(lab.router, ["ip", "route", "add", POD, "via", "192.168.1.5"])
    run_in(lab.node, [f"iptables-{mode}", "-w", "-A", "FORWARD", "-j", "REJECT"])
    with IptablesBackend(lab.node, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), wanted))
        assert lab.tcp_probe(4).ok
        run_in(lab.node, [f"iptables-{mode}", "-w", "-t", "raw", "-A", "PREROUTING",
                          *untracked])
        assert dropped(lab, 4, iptables_count(  # a real connection: rejected
            lab.node, f"iptables-{mode}-save", "filter",
            "-A FORWARD -j REJECT --reject-with icmp-port-unreachable"))
        p = plan(backend.observe(), wanted)
        (note,) = p.conflicts
        assert note.wanted == WANTED, p.render()
        assert isinstance(note.foreign, ForwardBlock)
        assert note.foreign.verdict == "untrack"
        assert not p.changes, p.render()


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize("untracked", [["-s", POD, "-j", "CT", "--notrack"],
                                       ["-s", DB, "-j", "NOTRACK"]],
                         ids=["pods-packets", "replies"])
def test_untracked_traffic_under_a_forward_policy_drop_is_dropped_and_a_forward_conflict(
        lab: SeedLab, mode: str, untracked: list[str]) -> None:
    """No NAT here (the router routes the pod CIDR back): the forward rule alone decides.
    An untracked packet's reply is a new connection's, an untracked reply none's: neither
    matches k3snet's accept of replies, and FORWARD's policy drops them."""
    wanted = State(owned=[WANTED])
    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    run_in(lab.router, ["ip", "route", "add", POD, "via", "192.168.1.5"])
    lab.block_forward("iptables-nft" if mode == "nft" else "iptables-legacy")
    with IptablesBackend(lab.node, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), wanted))
        assert lab.tcp_probe(4).ok
        run_in(lab.node, [f"iptables-{mode}", "-w", "-t", "raw", "-A", "PREROUTING",
                          *untracked])
        assert dropped(lab, 4, iptables_count(  # a real connection: dropped
            lab.node, f"iptables-{mode}-save", "filter", ":FORWARD DROP"))
        p = plan(backend.observe(), wanted)
        (note,) = p.conflicts
        assert note.wanted == WANTED, p.render()
        assert isinstance(note.foreign, ForwardBlock)
        assert note.foreign.describe() == (
            f"untrack by iptables IPv4 raw: -A PREROUTING {' '.join(untracked)}")
        assert not p.changes, p.render()


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_untracked_pod_traffic_leaves_unmasqueraded_and_is_a_conflict(
        lab: SeedLab, mode: str) -> None:
    masquerade = MasqueradeRule(POD, destination=DB, out_interface="eth0")
    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    with IptablesBackend(lab.node, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), _desired()))
        assert lab.tcp_probe(4).ok
        rule = ["-t", "raw", "-A", "PREROUTING", "-s", POD, "-j", "CT", "--notrack"]
        run_in(lab.node, [f"iptables-{mode}", "-w", *rule])
        assert dropped(lab, 4, snmp_count(  # no NAT: no way back to the pod
            lab.router, "IpExt", "InNoRoutes"))
        observed = backend.observe()
        assert masquerade in observed.owned  # in place, noted: a destroy deletes it
        p = plan(observed, _desired())
        (note,) = p.conflicts
        assert (note.wanted, note.owned) == (masquerade, masquerade), p.render()
        assert note.foreign is not None
        assert note.foreign.describe() == (
            "no NAT by iptables IPv4 raw: -A PREROUTING -s 10.42.0.0/16 -j CT --notrack")


@pytest.mark.kernel
def test_the_split_group_shows_a_mangle_drop_once_as_the_iptables_member_reads_it(
        ns: str) -> None:
    pytest.importorskip("nftables")
    from k3snet.backends.group import BackendGroup, Member  # noqa: PLC0415
    from k3snet.backends.nftables import NftablesBackend  # noqa: PLC0415

    run_in(ns, ["iptables-nft", "-t", "mangle", "-A", "FORWARD", "-d", DB, "-j", "DROP"])
    with BackendGroup([Member(NftablesBackend(ns), ["nat"]),
                       Member(IptablesBackend(ns, mode="nft"), ["forward"])]) as group:
        observed = group.observe()
        drops = sorted(o.describe() for o in observed.foreign if isinstance(o, ForwardBlock))
        assert drops == ["drop by iptables IPv4 mangle: -A FORWARD -d 192.168.2.0/24 -j DROP"]
        (note,) = plan(observed, _desired()).conflicts
        assert note.wanted == WANTED


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_untracked_traffic_whose_replies_forward_accepts_by_address_passes_k3snets_own_rule(
        lab: SeedLab, mode: str) -> None:
    """k3snet's accept of new traffic, first in FORWARD, takes the pods' untracked packets
    by their addresses; the administrator's accepts the replies so: a real connection.
    The plan said k3snet's own rule was decided by the notrack: a conflict, and the rule
    set aside (not owned: an edit of the table removes such a rule, and the pods' new
    packets would then meet the policy)."""
    wanted = State(owned=[WANTED])
    tool = f"iptables-{mode}"
    run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    run_in(lab.router, ["ip", "route", "add", POD, "via", "192.168.1.5"])
    lab.block_forward("iptables-nft" if mode == "nft" else "iptables-legacy")
    with IptablesBackend(lab.node, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), wanted))
        run_in(lab.node, [tool, "-w", "-A", "FORWARD", "-s", DB, "-d", POD, "-j", "ACCEPT"])
        run_in(lab.node, [tool, "-w", "-t", "raw", "-A", "PREROUTING", "-s", POD,
                          "-j", "CT", "--notrack"])
        assert lab.tcp_probe(4).ok  # a real connection, untracked
        observed = backend.observe()
        assert WANTED in observed.owned
        p = plan(observed, wanted)
        assert not p.conflicts, p.render()
        assert not p.changes, p.render()


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_k3snets_accept_a_foreign_drop_meets_first_takes_no_untracked_flow_for_the_notrack(
        ns: str, mode: str) -> None:
    """FORWARD's policy DROP, the replies accepted by address first in FORWARD, the pods'
    packets untracked in raw: k3snet's own accept of new traffic takes the other way (no
    conflict), until a foreign drop before k3snet's jump (after the accept of replies)
    decides some of its packets. Then that rule is set aside and takes not every packet
    of the flow: the notrack decides the wanted rule again (``_judge`` leaves the rules
    set aside out of the accepts an untracked flow meets)."""
    tool = [f"iptables-{mode}", "-w"]
    run_in(ns, [*tool, "-P", "FORWARD", "DROP"])
    wanted = State(owned=[WANTED])
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), wanted))
    run_in(ns, [*tool, "-I", "FORWARD", "1", "-s", DB, "-d", POD, "-j", "ACCEPT"])
    run_in(ns, [*tool, "-t", "raw", "-A", "PREROUTING", "-s", POD, "-j", "CT", "--notrack"])

    def untrack() -> ForwardBlock:
        with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
            observed = backend.observe()
        assert WANTED in observed.owned
        (block,) = [o for o in observed.foreign
                    if isinstance(o, ForwardBlock) and o.verdict == "untrack"]
        return block

    assert not untrack().decides(WANTED)  # k3snet's accept takes the pods' new packets
    run_in(ns, [*tool, "-I", "FORWARD", "2", "-s", "10.42.1.0/24", "-j", "DROP"])
    assert untrack().decides(WANTED)


@pytest.mark.parametrize(("table", "chain"), [
    ("mangle", "FORWARD"), ("raw", "PREROUTING"), ("security", "FORWARD")])
def test_a_drop_in_an_admins_k3snet_named_chain_of_a_path_table_is_a_block(
        table: str, chain: str) -> None:
    """k3snet writes no chain in raw, mangle or security: a ``K3SNET-*`` chain there is an
    administrator's, and its drop drops the pods' traffic as one in ``ADMIN`` does (the
    walk left every ``K3SNET-`` chain unread, as it does k3snet's own in filter)."""
    rules = f"-A {chain} -j K3SNET-MARK\n-A K3SNET-MARK -d {DB} -j DROP"
    assert _blocks(table, rules, {"K3SNET-MARK": "-"}) == {
        f"drop by iptables IPv{4} {table}: -A K3SNET-MARK -d {DB} -j DROP"}


def test_a_notrack_in_an_admins_k3snet_named_chain_of_raw_is_an_untrack_block() -> None:
    text = ("*raw\n:PREROUTING ACCEPT [0:0]\n:K3SNET-RAW - [0:0]\n-A PREROUTING -j K3SNET-RAW\n"
            f"-A K3SNET-RAW -s {POD} -j CT --notrack\nCOMMIT\n")
    blocks = path_blocks(parse_save(text)["raw"], 4, forward_drops=True)
    assert {(type(b).__name__, b.describe()) for b in blocks} == {
        ("ForwardBlock", f"untrack by iptables IPv4 raw: -A K3SNET-RAW -s {POD} -j CT --notrack"),
        ("NatBlock", f"no NAT by iptables IPv4 raw: -A K3SNET-RAW -s {POD} -j CT --notrack")}


def test_a_reject_of_every_packet_in_an_admins_k3snet_named_chain_drops_what_is_untracked(
        ) -> None:
    """``ours``: k3snet's own chains (``K3SNET-FORWARD``, not followed); an administrator's
    ``K3SNET-EXTRA`` FORWARD jumps to, ending with a reject, is read as ``ADMIN`` is."""
    rules = ("-A FORWARD -j K3SNET-FORWARD\n-A FORWARD -j K3SNET-EXTRA\n"
             "-A K3SNET-EXTRA -j REJECT --reject-with icmp-host-prohibited")
    dump = parse_save(_filter(rules).replace(":ADMIN", ":K3SNET-EXTRA - [0:0]\n:ADMIN"))
    assert forward_drops_untracked(dump["filter"], ours={"K3SNET-FORWARD"})
    own = "-A FORWARD -j K3SNET-FORWARD\n-A K3SNET-FORWARD -j DROP"
    assert not forward_drops_untracked(parse_save(_filter(own))["filter"],
                                       ours={"K3SNET-FORWARD"})


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_drops_in_an_admins_k3snet_named_chains_are_conflicts_of_the_forward_rule(
        ns: str, mode: str) -> None:
    """An administrator's ``K3SNET-EXTRA`` (filter, after k3snet's jump) rejecting every
    packet, then raw's notrack of the pods: their untracked replies are rejected there, and
    the plan said No changes; so for a mangle ``K3SNET-MARK`` dropping the pods' traffic.
    A chain of theirs named ``ADMIN`` was a conflict both times (see above)."""
    tool = [f"iptables-{mode}", "-w"]
    wanted = State(owned=[WANTED])
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), wanted))
    run_in(ns, [*tool, "-N", "K3SNET-EXTRA"])
    run_in(ns, [*tool, "-A", "K3SNET-EXTRA", "-j", "REJECT"])
    run_in(ns, [*tool, "-A", "FORWARD", "-j", "K3SNET-EXTRA"])
    run_in(ns, [*tool, "-t", "raw", "-A", "PREROUTING", "-s", POD, "-j", "CT", "--notrack"])

    def conflicts() -> list[tuple[str, str]]:
        with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
            p = plan(backend.observe(), wanted)
        assert not p.changes, p.render()
        return sorted((str(note.wanted), note.foreign.describe()) for note in p.conflicts)

    assert conflicts() == [(str(WANTED), f"untrack by iptables IPv4 raw: -A PREROUTING -s {POD}"
                                         " -j CT --notrack")]
    run_in(ns, [*tool, "-t", "raw", "-F", "PREROUTING"])
    assert conflicts() == []
    run_in(ns, [*tool, "-t", "mangle", "-N", "K3SNET-MARK"])
    run_in(ns, [*tool, "-t", "mangle", "-A", "K3SNET-MARK", "-d", DB, "-j", "DROP"])
    run_in(ns, [*tool, "-t", "mangle", "-A", "FORWARD", "-j", "K3SNET-MARK"])
    assert conflicts() == [(str(WANTED), f"drop by iptables IPv4 mangle: -A K3SNET-MARK -d {DB}"
                                         " -j DROP")]


def test_accepts_and_masquerades_in_an_admins_k3snet_named_chain_are_read_as_foreign_rules(
        ) -> None:
    """``ours``: k3snet's own chains, left unread; an administrator's ``K3SNET-OPEN``
    (``K3SNET-MASQ``) FORWARD (POSTROUTING) jumps to is read as a chain named ``ADMIN``."""
    both = (f"-A FORWARD -j K3SNET-FORWARD\n-A FORWARD -j K3SNET-OPEN\n"
            f"-A K3SNET-OPEN -s {POD} -d {DB} -j ACCEPT\n-A K3SNET-OPEN -s {DB} -d {POD} -j ACCEPT")
    dump = parse_save(_filter(both, "DROP").replace(":ADMIN", ":K3SNET-OPEN - [0:0]\n:ADMIN"))
    ours = {"K3SNET-FORWARD"}
    assert untracked_accepts(dump["filter"], 4, ours=ours) == (ForwardRule(POD, DB),
                                                                ForwardRule(DB, POD))
    assert untracked_accepts(dump["filter"], 4) == ()  # every K3SNET- chain unread
    tracked = (f"-A FORWARD -j K3SNET-FORWARD\n-A FORWARD -j K3SNET-OPEN\n"
               f"-A K3SNET-OPEN -s {POD} -d {DB} -j ACCEPT\n"
               f"-A K3SNET-OPEN -d {POD} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
    dump = parse_save(_filter(tracked, "DROP").replace(":ADMIN", ":K3SNET-OPEN - [0:0]\n:ADMIN"))
    assert foreign_forward(dump["filter"], 4, ours=ours) == {ForwardRule(POD, DB)}
    assert foreign_forward(dump["filter"], 4) == set()
    nat = parse_save("*nat\n:POSTROUTING ACCEPT [0:0]\n:K3SNET-MASQ - [0:0]\n"
                     f"-A POSTROUTING -j K3SNET-MASQ\n-A K3SNET-MASQ -s {POD} -j MASQUERADE\n"
                     "COMMIT\n")["nat"]
    assert foreign_nat(nat, 4, ours={"K3SNET-POSTROUTING"}) == {MasqueradeRule(POD)}
    assert foreign_nat(nat, 4) == set()


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_an_admins_k3snet_named_chain_accepting_the_replies_by_address_passes_the_untracked_flow(
        ns: str, mode: str) -> None:
    """FORWARD's policy DROP, raw's notrack of the pods, and the replies accepted by address
    in an administrator's ``K3SNET-OPEN``: the untracked flow passes (k3snet's own accept
    takes the new traffic), as with the same chain named ``ADMIN``; the plan named a
    conflict, and an apply of the spec was refused."""
    tool = [f"iptables-{mode}", "-w"]
    run_in(ns, [*tool, "-P", "FORWARD", "DROP"])
    wanted = State(owned=[WANTED])
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), wanted))
    run_in(ns, [*tool, "-N", "K3SNET-OPEN"])
    run_in(ns, [*tool, "-A", "K3SNET-OPEN", "-s", DB, "-d", POD, "-j", "ACCEPT"])
    run_in(ns, [*tool, "-A", "FORWARD", "-j", "K3SNET-OPEN"])
    run_in(ns, [*tool, "-t", "raw", "-A", "PREROUTING", "-s", POD, "-j", "CT", "--notrack"])
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        p = plan(backend.observe(), wanted)
    assert not p.conflicts, p.render()
    assert not p.changes, p.render()
