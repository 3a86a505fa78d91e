"""The iptables foreign-rule readers, one small ``iptables-save`` table per case.

Each case is a table as ``iptables-save`` prints it and the exact set of objects
k3snet must read from it: what is modelled (and with every field), and what a
skip, a negation, a cut or a drop before it hides. The cases were written from
the module's documented rules, not from its code.
"""

from __future__ import annotations

import attrs
import pytest

from k3snet.backends.iptables import foreign
from k3snet.backends.iptables.foreign import (
    WALK_DEPTH,
    WALK_LIMIT,
    foreign_blocks,
    foreign_forward,
    foreign_nat,
    nat_blocks,
)
from k3snet.backends.iptables.save import parse_save
from k3snet.model import NatBlock, NetObject
from k3snet.model.cidr import parse_network
from k3snet.model.forward import ForwardBlock, ForwardRule
from k3snet.model.nat import MasqueradeRule, SnatRule
from k3snet.render.iptables.rules import RuleFields


def _table(name: str, chains: dict[str, str], rules: str) -> str:
    head = "\n".join(f":{chain} {policy} [0:0]" for chain, policy in chains.items())
    return f"*{name}\n{head}\n{rules.strip()}\nCOMMIT\n"


def _nat(rules: str, family: int = 4) -> set[NetObject]:
    text = _table("nat", {"POSTROUTING": "ACCEPT", "FLANNEL-POSTRTG": "-", "OTHER": "-"}, rules)
    return foreign_nat(parse_save(text).get("nat"), family)


def _forward(rules: str, family: int = 4) -> set[NetObject]:
    text = _table("filter", {"FORWARD": "DROP", "FLANNEL-FWD": "-", "A": "-"}, rules)
    return foreign_forward(parse_save(text).get("filter"), family)


POD = "10.42.0.0/16"
B = "192.168.2.0/24"
NAT_CASES: dict[str, tuple[str, int, set[NetObject]]] = {
    "masquerade with every modelled field": (
        f"-A POSTROUTING -s {POD} -o eth1 -j MASQUERADE --random-fully", 4,
        {MasqueradeRule(POD, out_interface="eth1", random_fully=True)}),
    "snat with a destination": (
        f"-A POSTROUTING -s {POD} -d 192.168.2.0/24 -o eth1 -j SNAT --to-source 192.0.2.1"
        " --random-fully", 4,
        {SnatRule(POD, destination="192.168.2.0/24", out_interface="eth1",
                  random_fully=True, to_address="192.0.2.1")}),
    "masquerade with a destination": (
        f"-A POSTROUTING -s {POD} -d 192.168.2.0/24 -j MASQUERADE", 4,
        {MasqueradeRule(POD, destination="192.168.2.0/24")}),
    "no source is any source, IPv4": (
        "-A POSTROUTING -o eth1 -j MASQUERADE", 4,
        {MasqueradeRule("0.0.0.0/0", out_interface="eth1")}),
    "no source is any source, IPv6": (
        "-A POSTROUTING -o eth1 -j MASQUERADE", 6,
        {MasqueradeRule("::/0", out_interface="eth1")}),
    "a negated destination is an exclusion": (
        f"-A POSTROUTING -s {POD} ! -d 224.0.0.0/4 -j MASQUERADE", 4,
        {MasqueradeRule(POD, exclude=["224.0.0.0/4"])}),
    "a masquerade to a port range is not modelled": (
        f"-A POSTROUTING -s {POD} -j MASQUERADE --to-ports 1024-2047\n"
        "-A POSTROUTING -s 10.43.0.0/16 -j MASQUERADE", 4, {MasqueradeRule("10.43.0.0/16")}),
    "snat without an address is not modelled": (
        f"-A POSTROUTING -s {POD} -j SNAT\n-A POSTROUTING -s 10.43.0.0/16 -j MASQUERADE", 4,
        {MasqueradeRule("10.43.0.0/16")}),
    "skipped rules do not end the reading": (
        f"-A POSTROUTING -s {POD} -i cni0 -j MASQUERADE\n"
        f"-A POSTROUTING -s {POD} -m conntrack --ctstate NEW -j MASQUERADE\n"
        f"-A POSTROUTING ! -s {POD} -j MASQUERADE\n"
        "-A POSTROUTING -s 10.43.0.0/16 -j MASQUERADE", 4,
        {MasqueradeRule("10.43.0.0/16")}),
    "a rule in a chain jumped to": (
        "-A POSTROUTING -j FLANNEL-POSTRTG\n"
        f"-A FLANNEL-POSTRTG -s {POD} -d {POD} -j RETURN\n"
        f"-A FLANNEL-POSTRTG -s {POD} ! -d 224.0.0.0/4 -j MASQUERADE --random-fully", 4,
        # the return spares pod-to-pod traffic from the masquerade after it
        {MasqueradeRule(POD, exclude=[POD, "224.0.0.0/4"], random_fully=True)}),
    "a rule in a chain gone to": (
        "-A POSTROUTING -g FLANNEL-POSTRTG\n"
        f"-A FLANNEL-POSTRTG -s {POD} -j MASQUERADE", 4,
        {MasqueradeRule(POD)}),
    "a commented jump is not narrowed by its comment": (
        '-A POSTROUTING -m comment --comment "flannel masq" -j FLANNEL-POSTRTG\n'
        f"-A FLANNEL-POSTRTG -s {POD} -j MASQUERADE", 4,
        {MasqueradeRule(POD)}),
    "a snat with an exclusion": (
        f"-A POSTROUTING -s {POD} ! -d 224.0.0.0/4 -j SNAT --to-source 192.0.2.1", 4,
        {SnatRule(POD, exclude=["224.0.0.0/4"], to_address="192.0.2.1")}),
    "a rule cut short before its target is passed": (
        f"-A POSTROUTING -s 10.43.0.0/16 -j\n-A POSTROUTING -s {POD} -j MASQUERADE", 4,
        {MasqueradeRule(POD)}),
    "an address with host bits is read as its network": (
        "-A POSTROUTING -s 10.42.0.1/16 -j MASQUERADE", 4, {MasqueradeRule(POD)}),
    "an option after --random-fully": (
        f"-A POSTROUTING -s {POD} -j SNAT --random-fully --to-source 192.0.2.1", 4,
        {SnatRule(POD, random_fully=True, to_address="192.0.2.1")}),
    "a narrowed jump hides its chain": (
        "-A POSTROUTING ! -d 10.0.0.0/8 -j FLANNEL-POSTRTG\n"
        f"-A FLANNEL-POSTRTG -s {POD} -j MASQUERADE", 4, set()),
    "an unconditional return cuts the chain": (
        "-A POSTROUTING -j RETURN\n"
        f"-A POSTROUTING -s {POD} -j MASQUERADE", 4, set()),
    "an unconditional return cuts a chain jumped to, not the rest": (
        "-A POSTROUTING -j FLANNEL-POSTRTG\n-A POSTROUTING -j OTHER\n"
        f"-A FLANNEL-POSTRTG -j RETURN\n-A FLANNEL-POSTRTG -s {POD} -j MASQUERADE\n"
        "-A OTHER -s 10.43.0.0/16 -j MASQUERADE", 4,
        {MasqueradeRule("10.43.0.0/16")}),
    "a commented unconditional return cuts the chain": (
        '-A POSTROUTING -m comment --comment "skip all" -j RETURN\n'
        f"-A POSTROUTING -s {POD} -j MASQUERADE", 4, set()),
    "a negated return cuts the chain": (
        "-A POSTROUTING ! -d 10.0.0.0/8 -j RETURN\n"
        f"-A POSTROUTING -s {POD} -j MASQUERADE", 4, set()),
    "a commented negated return cuts the chain": (
        "-A POSTROUTING -m comment --comment skip ! -d 10.0.0.0/8 -j RETURN\n"
        f"-A POSTROUTING -s {POD} -j MASQUERADE", 4, set()),
    "kube-proxy's mark return cuts the chain": (
        "-A POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n"
        f"-A POSTROUTING -s {POD} -j MASQUERADE", 4, set()),
    "a negated accept cuts the chain": (
        "-A POSTROUTING ! -d 10.0.0.0/8 -j ACCEPT\n"
        f"-A POSTROUTING -s {POD} -j MASQUERADE", 4, set()),
    "a return bounded by a source does not cut": (
        "-A POSTROUTING -s 10.1.0.0/16 ! -d 10.1.0.0/16 -j RETURN\n"
        f"-A POSTROUTING -s {POD} -j MASQUERADE", 4, {MasqueradeRule(POD)}),
    # An exemption in POSTROUTING ends the nat table for its packets: the rules after
    # it do not translate them (its destination becomes their exclusion).
    "a return bounded by a destination spares it from what follows": (
        "-A POSTROUTING ! -s 10.1.0.0/16 -d 10.1.0.0/16 -j RETURN\n"
        f"-A POSTROUTING -s {POD} -j MASQUERADE", 4,
        {MasqueradeRule(POD, exclude=["10.1.0.0/16"])}),
    "a plain bounded return spares its destination from what follows": (
        "-A POSTROUTING -d 10.1.0.0/16 -j RETURN\n"
        f"-A POSTROUTING -s {POD} -j MASQUERADE", 4,
        {MasqueradeRule(POD, exclude=["10.1.0.0/16"])}),
    "an accept bounded by a destination spares it from what follows": (
        f"-A POSTROUTING -s {POD} -d 192.168.2.0/24 -j ACCEPT\n"
        f"-A POSTROUTING -s {POD} -d 192.168.0.0/16 -j MASQUERADE", 4,
        {MasqueradeRule(POD, destination="192.168.0.0/16", exclude=["192.168.2.0/24"])}),
    "an exemption of the whole destination leaves nothing met": (
        f"-A POSTROUTING -s {POD} -j ACCEPT\n"
        f"-A POSTROUTING -s {POD} -j MASQUERADE", 4, set()),
    "an exemption k3snet cannot read leaves what follows unmet": (
        f"-A POSTROUTING -s {POD} -p tcp --dport 25 -j RETURN\n"
        f"-A POSTROUTING -s {POD} -j MASQUERADE", 4, set()),
    "an exemption of other sources changes nothing": (
        "-A POSTROUTING -s 10.99.0.0/16 -j RETURN\n"
        f"-A POSTROUTING -s {POD} -j MASQUERADE", 4, {MasqueradeRule(POD)}),
    "an exemption of other destinations changes nothing": (
        "-A POSTROUTING -d 172.16.0.0/12 -j RETURN\n"
        f"-A POSTROUTING -s {POD} -d 192.168.0.0/16 -j MASQUERADE", 4,
        {MasqueradeRule(POD, destination="192.168.0.0/16")}),
    "an exemption for marked packets is another program's traffic": (
        f"-A POSTROUTING -s {POD} -m mark --mark 0x1/0x1 -j ACCEPT\n"
        f"-A POSTROUTING -s {POD} -j MASQUERADE", 4, {MasqueradeRule(POD)}),
    # A mark test's value, not its "!", says whom it takes: (mark & mask) == 0 is every
    # unmarked packet, k3snet's pod traffic among them.
    "an exemption of packets whose mark bit is clear cuts the chain": (
        "-A POSTROUTING -m mark --mark 0x0/0x4000 -j RETURN\n"
        f"-A POSTROUTING -s {POD} -j MASQUERADE", 4, set()),
    "an exemption of packets without a connection mark cuts the chain": (
        "-A POSTROUTING -m connmark --mark 0x0 -j ACCEPT\n"
        f"-A POSTROUTING -s {POD} -j MASQUERADE", 4, set()),
    "an accept in a chain jumped to ends the nat table": (
        "-A POSTROUTING -j FLANNEL-POSTRTG\n"
        "-A FLANNEL-POSTRTG -d 10.1.0.0/16 -j ACCEPT\n"
        f"-A FLANNEL-POSTRTG -s {POD} -j MASQUERADE", 4,
        {MasqueradeRule(POD, exclude=["10.1.0.0/16"])}),
    "a return in a chain jumped to only goes back": (
        "-A POSTROUTING -j FLANNEL-POSTRTG\n"
        "-A POSTROUTING -j OTHER\n"
        "-A FLANNEL-POSTRTG -d 10.1.0.0/16 -j RETURN\n"
        f"-A OTHER -s {POD} -j MASQUERADE", 4, {MasqueradeRule(POD)}),

    # Which earlier exits take packets away from a rule, and which do not.
    "an exemption of some sources spares its destination from a rule of any source": (
        f"-A POSTROUTING -s {POD} -d {B} -j RETURN\n-A POSTROUTING -o eth1 -j MASQUERADE", 4,
        {MasqueradeRule("0.0.0.0/0", out_interface="eth1", exclude=[B])}),
    "an exemption of other sources written with host bits changes nothing": (
        "-A POSTROUTING -s 10.1.0.1/16 -j ACCEPT\n"
        f"-A POSTROUTING -s {POD} -j MASQUERADE", 4, {MasqueradeRule(POD)}),
    "an exemption k3snet cannot read, of other destinations, changes nothing": (
        "-A POSTROUTING -d 172.16.0.0/12 -p tcp --dport 25 -j RETURN\n"
        f"-A POSTROUTING -s {POD} -d 192.168.0.0/16 -j MASQUERADE", 4,
        {MasqueradeRule(POD, destination="192.168.0.0/16")}),
    "an exemption of a conntrack state leaves what follows unmet": (
        f"-A POSTROUTING -d {B} -m conntrack --ctstate DNAT -j RETURN\n"
        f"-A POSTROUTING -s {POD} -j MASQUERADE", 4, set()),
    "exits of other sources, destinations or ways out are passed, the next one spares": (
        "-A POSTROUTING -s 10.99.0.0/16 -j RETURN\n"
        f"-A POSTROUTING ! -s {POD} -d 192.168.1.0/24 -j RETURN\n"
        "-A POSTROUTING -d 192.168.3.0/24 -o eth0 -j RETURN\n"
        "-A POSTROUTING -d 172.16.0.0/12 -j RETURN\n"
        "-A POSTROUTING -d 192.168.2.0/24 -j RETURN\n"
        f"-A POSTROUTING -s {POD} -d 192.168.0.0/16 -o eth1 -j MASQUERADE", 4,
        {MasqueradeRule(POD, destination="192.168.0.0/16", out_interface="eth1",
                        exclude=["192.168.2.0/24"])}),
    # "-o eth+" is every name that starts with "eth": a way out the other may share.
    "an exemption of a wildcard way out takes the rule of one name it holds": (
        f"-A POSTROUTING -o eth+ -j RETURN\n-A POSTROUTING -s {POD} -o eth0 -j MASQUERADE", 4,
        set()),
    "an exemption of one name takes from the rule of a wildcard holding it": (
        f"-A POSTROUTING -o eth0 -j RETURN\n-A POSTROUTING -s {POD} -o eth+ -j MASQUERADE", 4,
        set()),
    "an exemption of a wildcard that cannot hold the rule's way out is passed": (
        f"-A POSTROUTING -o eth1+ -j RETURN\n-A POSTROUTING -s {POD} -o eth0 -j MASQUERADE", 4,
        {MasqueradeRule(POD, out_interface="eth0")}),
    "a masquerade is an exit for an snat after it": (
        f"-A POSTROUTING -s {POD} -d {B} -j MASQUERADE\n"
        f"-A POSTROUTING -s {POD} -j SNAT --to-source 192.0.2.1", 4,
        {MasqueradeRule(POD, destination=B),
         SnatRule(POD, exclude=[B], to_address="192.0.2.1")}),
    "an snat to the same address translates the same way, the next exit spares": (
        f"-A POSTROUTING -s {POD} -d {B} -j SNAT --to-source 192.0.2.1\n"
        "-A POSTROUTING -d 10.1.0.0/16 -j RETURN\n"
        f"-A POSTROUTING -s {POD} -j SNAT --to-source 192.0.2.1", 4,
        {SnatRule(POD, destination=B, to_address="192.0.2.1"),
         SnatRule(POD, exclude=["10.1.0.0/16"], to_address="192.0.2.1")}),
    "a masquerade translates like a masquerade, the next exit spares": (
        f"-A POSTROUTING -s {POD} -d {B} -j MASQUERADE\n"
        "-A POSTROUTING -d 10.1.0.0/16 -j RETURN\n"
        f"-A POSTROUTING -s {POD} -j MASQUERADE", 4,
        {MasqueradeRule(POD, destination=B), MasqueradeRule(POD, exclude=["10.1.0.0/16"])}),
    "an accept in a chain jumped to spares what follows in POSTROUTING": (
        f"-A POSTROUTING -j OTHER\n-A OTHER -d {B} -j ACCEPT\n"
        f"-A POSTROUTING -s {POD} -j MASQUERADE", 4, {MasqueradeRule(POD, exclude=[B])}),
    "an accept in a chain jumped to for other sources changes nothing": (
        "-A POSTROUTING -s 10.99.0.0/16 -j OTHER\n-A OTHER -j ACCEPT\n"
        f"-A POSTROUTING -s {POD} -j MASQUERADE", 4, {MasqueradeRule(POD)}),
    "what follows an unconditional return in a chain jumped to is not read": (
        f"-A POSTROUTING -j OTHER\n-A OTHER -j RETURN\n-A OTHER -d {B} -j ACCEPT\n"
        f"-A POSTROUTING -s {POD} -j MASQUERADE", 4, {MasqueradeRule(POD)}),
    "what follows an unconditional accept in a chain jumped to is not read": (
        "-A POSTROUTING -d 172.16.0.0/12 -j OTHER\n-A OTHER -j ACCEPT\n"
        f"-A OTHER -d {B} -j ACCEPT\n-A POSTROUTING -s {POD} -d 192.168.0.0/16 -j MASQUERADE", 4,
        {MasqueradeRule(POD, destination="192.168.0.0/16")}),
    "a masquerade after an unconditional one in a chain jumped to": (
        f"-A POSTROUTING -j OTHER\n-A OTHER -j MASQUERADE\n-A OTHER -s {POD} -d {B} -j MASQUERADE",
        4, {MasqueradeRule("0.0.0.0/0"), MasqueradeRule(POD, destination=B)}),
    "an empty chain gone to ends POSTROUTING for its packets": (
        f"-A POSTROUTING -d {B} -g OTHER\n-A POSTROUTING -s {POD} -j MASQUERADE", 4, set()),
    "a chain gone to ends POSTROUTING for what returns from it": (
        f"-A POSTROUTING -d {B} -g OTHER\n-A OTHER -d 10.1.0.0/16 -j RETURN\n"
        f"-A POSTROUTING -s {POD} -j MASQUERADE", 4, set()),
}


@pytest.mark.parametrize("case", sorted(NAT_CASES))
def test_foreign_nat_reads_exactly_what_the_table_says(case: str) -> None:
    rules, family, expected = NAT_CASES[case]
    assert _nat(rules, family) == expected


FORWARD_CASES: dict[str, tuple[str, int, set[NetObject]]] = {
    "an accept of the pods' traffic and of all that comes back to them": (
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4,
        {ForwardRule(POD, B)}),
    # A router's ICMP error for the pods' flow (a Packet Too Big, path MTU) comes from the
    # router's address, not the destination's: an accept of the replies by their source
    # leaves it to FORWARD's policy; the flow is not met (k3snet's own rules take it).
    "a plain accept pair by address takes no router's error": (
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -s {B} -d {POD} -j ACCEPT", 4,
        set()),
    "an established accept from the destination takes no router's error": (
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n"
        f"-A FORWARD -s {B} -d {POD} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", 4,
        set()),
    "an accept of established packets alone takes no router's error (related)": (
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n"
        f"-A FORWARD -d {POD} -m conntrack --ctstate ESTABLISHED -j ACCEPT", 4, set()),
    "an accept of established packets and of related ones from anywhere": (
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n"
        f"-A FORWARD -s {B} -d {POD} -m conntrack --ctstate ESTABLISHED -j ACCEPT\n"
        f"-A FORWARD -d {POD} -m conntrack --ctstate RELATED -j ACCEPT", 4,
        {ForwardRule(POD, B)}),
    # An administrator's narrow accept of what comes back (the reply direction alone, as
    # k3snet's own since --ctdir REPLY): every reply and a router's error for the flow.
    "an accept of the reply direction from anywhere answers (--ctdir REPLY)": (
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n"
        f"-A FORWARD -d {POD} -m conntrack --ctstate RELATED,ESTABLISHED --ctdir REPLY -j ACCEPT",
        4, {ForwardRule(POD, B)}),
    "an accept of the reply direction alone answers (--ctdir REPLY, no --ctstate)": (
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n"
        f"-A FORWARD -d {POD} -m conntrack --ctdir REPLY -j ACCEPT", 4, {ForwardRule(POD, B)}),
    # The original direction is the connection's from outside to the pods: no reply.
    "an accept of the original direction does not answer (--ctdir ORIGINAL)": (
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n"
        f"-A FORWARD -d {POD} -m conntrack --ctstate RELATED,ESTABLISHED --ctdir ORIGINAL "
        "-j ACCEPT", 4, set()),
    "an accept of the original direction alone does not answer": (
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n"
        f"-A FORWARD -d {POD} -m conntrack --ctdir ORIGINAL -j ACCEPT", 4, set()),
    # ... whatever else takes the router's errors, or the replies (each test alone)
    "an accept of the original direction's established packets does not answer": (
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n"
        f"-A FORWARD -d {POD} -m conntrack --ctstate ESTABLISHED --ctdir ORIGINAL -j ACCEPT\n"
        f"-A FORWARD -d {POD} -m conntrack --ctstate RELATED -j ACCEPT", 4, set()),
    "an accept of the original direction's related packets takes no router's error": (
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n"
        f"-A FORWARD -s {B} -d {POD} -j ACCEPT\n"
        f"-A FORWARD -d {POD} -m conntrack --ctstate RELATED --ctdir ORIGINAL -j ACCEPT", 4,
        set()),
    # Two directions (or states) tested, each by its match: no packet passes both, and the
    # last one alone was read (the reply direction: k3snet wrote no rule of its own).
    "an accept of both directions at once takes nothing": (
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n"
        f"-A FORWARD -d {POD} -m conntrack --ctdir ORIGINAL -m conntrack --ctdir REPLY "
        "-j ACCEPT", 4, set()),
    "an accept of new and established packets at once takes nothing": (
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n"
        f"-A FORWARD -d {POD} -m conntrack --ctstate NEW -m conntrack --ctstate "
        "RELATED,ESTABLISHED --ctdir REPLY -j ACCEPT", 4, set()),
    # A --ctdir on the pods' way out takes their tracked packets only: not met.
    "an accept of the pods' traffic by direction is no accept of all of it": (
        f"-A FORWARD -s {POD} -d {B} -m conntrack --ctdir ORIGINAL -j ACCEPT\n"
        f"-A FORWARD -d {POD} -j ACCEPT", 4, set()),
    "an accept pair with interfaces": (
        f"-A FORWARD -s {POD} -i cni0 -o eth1 -j ACCEPT\n"
        f"-A FORWARD -d {POD} -i eth1 -o cni0 -j ACCEPT", 4,
        {ForwardRule(POD, "0.0.0.0/0", in_interface="cni0", out_interface="eth1")}),
    "replies on the wrong interface do not answer": (
        f"-A FORWARD -s {POD} -i cni0 -o eth1 -j ACCEPT\n"
        f"-A FORWARD -d {POD} -i eth2 -o cni0 -j ACCEPT", 4, set()),
    "replies to the wrong interface do not answer": (
        f"-A FORWARD -s {POD} -i cni0 -o eth1 -j ACCEPT\n"
        f"-A FORWARD -d {POD} -i eth1 -o cni1 -j ACCEPT", 4, set()),
    "replies to another network do not answer": (
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -s {B} -d 10.43.0.0/16 -j ACCEPT", 4,
        set()),
    "replies from another network do not answer": (
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -s 10.9.0.0/16 -d {POD} -j ACCEPT", 4,
        set()),
    "an established accept answers (flannel's pair)": (
        "-A FORWARD -j FLANNEL-FWD\n"
        f"-A FLANNEL-FWD -s {POD} -j ACCEPT\n"
        f"-A FLANNEL-FWD -d {POD} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", 4,
        {ForwardRule(POD, "0.0.0.0/0")}),
    "an established accept before the pair": (
        "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -s {B} -d {POD} -j ACCEPT", 4,
        {ForwardRule(POD, B), ForwardRule(B, POD)}),
    "an interface k3snet cannot hold is left out, the rest read": (
        "-A FORWARD -i interface0123456 -j ACCEPT\n-A FORWARD -o interface0123456 -j ACCEPT\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4,
        {ForwardRule(POD, B)}),
    "an accept of replies through the state match": (
        f"-A FORWARD -s {POD} -j ACCEPT\n"
        f"-A FORWARD -d {POD} -m state --state RELATED,ESTABLISHED -j ACCEPT", 4,
        {ForwardRule(POD, "0.0.0.0/0")}),
    "an accept of new connections only does not answer": (
        f"-A FORWARD -s {POD} -j ACCEPT\n"
        f"-A FORWARD -d {POD} -m conntrack --ctstate NEW -j ACCEPT", 4, set()),
    "any source, IPv6": (
        "-A FORWARD -o eth1 -j ACCEPT\n-A FORWARD -i eth1 -j ACCEPT", 6,
        {ForwardRule("::/0", "::/0", out_interface="eth1"),
         ForwardRule("::/0", "::/0", in_interface="eth1")}),
    "an accept of the other family is left out, the rest read": (
        "-A FORWARD -s fd00::/8 -j ACCEPT\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4,
        {ForwardRule(POD, B)}),
    "an unmodelled rule before the pair is passed": (
        "-A FORWARD -p tcp --dport 22 -j LOG\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4,
        {ForwardRule(POD, B)}),
    "a drop before the pair hides it": (
        "-A FORWARD -p tcp --dport 22 -j DROP\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -s {B} -d {POD} -j ACCEPT", 4,
        set()),
    "a reject before the pair hides it": (
        f"-A FORWARD -s {B} -j REJECT\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -s {B} -d {POD} -j ACCEPT", 4,
        set()),
    "kube-proxy's drop of invalid packets does not": (
        "-A FORWARD -m conntrack --ctstate INVALID -j DROP\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4,
        {ForwardRule(POD, B)}),
    "a drop of other destinations before the pair does not": (
        "-A FORWARD -d 192.0.2.0/24 -j DROP\n"
        "-A FORWARD -d 198.51.100.0/24 -j REJECT --reject-with icmp-port-unreachable\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4,
        {ForwardRule(POD, B)}),
    "a drop of other destinations through another interface does not": (
        "-A FORWARD -d 192.0.2.0/24 -i eth1 -j DROP\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4,
        {ForwardRule(POD, B)}),
    "a drop of other sources hides the accept of all that comes back (errors)": (
        "-A FORWARD -s 192.0.2.0/24 -j DROP\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4, set()),
    "a drop of what is not the pods' hides the accept of all that comes back": (
        f"-A FORWARD ! -s {POD} -j DROP\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4, set()),
    "a drop of the pods' destinations hides the pair": (
        f"-A FORWARD -d {B} -m conntrack --ctstate NEW -j DROP\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4, set()),
    "a drop of other destinations in a chain jumped to does not": (
        "-A FORWARD -j A\n-A A -d 192.0.2.0/24 -j DROP\n"
        f"-A A -s {POD} -d {B} -j ACCEPT\n-A A -d {POD} -j ACCEPT", 4, {ForwardRule(POD, B)}),
    "a reject through another way out hides an accept of any way out": (
        "-A FORWARD -o docker0 -j REJECT --reject-with icmp-port-unreachable\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4, set()),
    "a reject through another way out does not hide an accept through eth0": (
        "-A FORWARD -o docker0 -j REJECT --reject-with icmp-port-unreachable\n"
        f"-A FORWARD -s {POD} -d {B} -i cni0 -o eth0 -j ACCEPT\n"
        f"-A FORWARD -d {POD} -i eth0 -o cni0 -j ACCEPT", 4,
        {ForwardRule(POD, B, in_interface="cni0", out_interface="eth0")}),
    # Behind a jump, a rule matches what the jump matches and its own matches at once.
    "a drop of other destinations behind a narrowed jump does not hide what follows": (
        "-A FORWARD -s 10.0.0.0/8 -j A\n-A A -d 192.0.2.0/24 -j DROP\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4,
        {ForwardRule(POD, B)}),
    "a drop of the pods' destinations behind a narrowed jump hides what follows": (
        f"-A FORWARD -s 10.0.0.0/8 -j A\n-A A -d {B} -j DROP\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4, set()),
    "a drop behind a jump its packets never pass does not hide what follows": (
        f"-A FORWARD ! -s 10.0.0.0/8 -j A\n-A A -s {POD} -j DROP\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4,
        {ForwardRule(POD, B)}),
    "a drop with a match not modelled hides what follows": (
        "-A FORWARD -d 192.0.2.0/24 -p tcp -j DROP\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4, set()),
    "a chain jumped to twice returns each jump's packets alone": (
        "-A FORWARD -s 192.0.2.0/24 -j A\n-A FORWARD -j A\n-A A -d 198.51.100.0/24 -j RETURN\n"
        f"-A A -s {POD} -d {B} -j ACCEPT\n-A A -d {POD} -j ACCEPT", 4, {ForwardRule(POD, B)}),
    "a chain jumped to twice hides behind a return of the second jump's": (
        f"-A FORWARD -s 192.0.2.0/24 -j A\n-A FORWARD -j A\n-A A -d {POD} -j RETURN\n"
        f"-A A -s {POD} -d {B} -j ACCEPT\n-A A -d {POD} -j ACCEPT", 4, set()),
    "a chain gone to for other destinations sends only those to the policy": (
        "-A FORWARD -d 192.0.2.0/24 -g A\n-A A -d 198.51.100.0/24 -j RETURN\n-A A -j RETURN\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4,
        {ForwardRule(POD, B)}),
    "a chain gone to for the pods' sources hides the pair": (
        f"-A FORWARD -s {POD} -g A\n-A A -d 198.51.100.0/24 -j ACCEPT\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4, set()),
    "a chain gone to on a match not modelled hides the pair": (
        "-A FORWARD -d 192.0.2.0/24 -p tcp -g A\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4, set()),
    "a negated accept cuts the chain": (
        "-A FORWARD -m mark ! --mark 0x1/0x1 -j ACCEPT\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -s {B} -d {POD} -j ACCEPT", 4,
        set()),
    "an unconditional return cuts the chain": (
        "-A FORWARD -j RETURN\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -s {B} -d {POD} -j ACCEPT", 4,
        set()),
    "an unconditional return cuts a chain jumped to": (
        "-A FORWARD -j FLANNEL-FWD\n-A FLANNEL-FWD -j RETURN\n"
        f"-A FLANNEL-FWD -s {POD} -d {B} -j ACCEPT\n-A FLANNEL-FWD -s {B} -d {POD} -j ACCEPT", 4,
        set()),
    "a negated source return cuts the chain": (
        "-A FORWARD ! -s 10.1.0.0/16 -j RETURN\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -s {B} -d {POD} -j ACCEPT", 4,
        set()),
    # A return bounded by a positive address (and a negation) is let through: best effort.
    "a commented negated return cuts the chain": (
        "-A FORWARD -m comment --comment skip ! -d 10.0.0.0/8 -j RETURN\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -s {B} -d {POD} -j ACCEPT", 4,
        set()),
    "a return bounded by a source does not cut a chain jumped to": (
        f"-A FORWARD -j FLANNEL-FWD\n-A FLANNEL-FWD -d {POD} -j ACCEPT\n"
        "-A FLANNEL-FWD -s 10.1.0.0/16 ! -d 10.1.0.0/16 -j RETURN\n"
        f"-A FLANNEL-FWD -s {POD} -d {B} -j ACCEPT", 4,
        {ForwardRule(POD, B)}),
    "a return of other sources in a chain jumped to takes a router's errors to the pods": (
        # back in FORWARD, nothing accepts them: the policy drops a router's ICMP errors
        # to the pods from 10.1.0.0/16, which the accept after the RETURN never sees
        "-A FORWARD -j FLANNEL-FWD\n-A FLANNEL-FWD -s 10.1.0.0/16 ! -d 10.1.0.0/16 -j RETURN\n"
        f"-A FLANNEL-FWD -s {POD} -d {B} -j ACCEPT\n-A FLANNEL-FWD -d {POD} -j ACCEPT", 4,
        set()),
    "a return bounded by a destination does not cut a chain jumped to": (
        "-A FORWARD -j FLANNEL-FWD\n-A FLANNEL-FWD ! -s 10.1.0.0/16 -d 10.1.0.0/16 -j RETURN\n"
        f"-A FLANNEL-FWD -s {POD} -d {B} -j ACCEPT\n-A FLANNEL-FWD -d {POD} -j ACCEPT", 4,
        {ForwardRule(POD, B)}),
    # A RETURN that leaves FORWARD (in FORWARD, or in a chain gone to) hands its packets
    # to the policy, DROP here: a drop, as a DROP is, of the accepts' packets it may
    # match; one bounded to other addresses lets the pair be reached.
    "a return to a drop policy bounded by a destination the pair never meets is passed": (
        "-A FORWARD ! -s 10.1.0.0/16 -d 10.1.0.0/16 -j RETURN\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4,
        {ForwardRule(POD, B)}),
    "a return to a drop policy bounded by a destination the pair never meets, IPv6": (
        "-A FORWARD -d fd99::/64 -m conntrack --ctstate NEW -j RETURN\n"
        "-A FORWARD -s fd42::/56 -d fd02::/64 -j ACCEPT\n-A FORWARD -d fd42::/56 -j ACCEPT", 6,
        {ForwardRule("fd42::/56", "fd02::/64")}),
    "a return to a drop policy of a part of the pods hides the pair, IPv6": (
        "-A FORWARD -s fd42::/64 -j RETURN\n"
        "-A FORWARD -s fd42::/56 -d fd02::/64 -j ACCEPT\n-A FORWARD -d fd42::/56 -j ACCEPT", 6,
        set()),
    "a return to a drop policy with a match k3snet does not model hides the pair": (
        "-A FORWARD -p tcp -d 10.1.0.0/16 -j RETURN\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4, set()),
    "a return to a drop policy of other sources takes a router's errors to the pods": (
        # the accept of every source's packets to the pods (a router's ICMP errors among
        # them) is behind a RETURN of some of them
        "-A FORWARD -s 10.1.0.0/16 ! -d 10.1.0.0/16 -j RETURN\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4, set()),
    "a return to a drop policy of a part of the pods hides the pair": (
        "-A FORWARD -s 10.42.1.0/24 -j RETURN\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4, set()),
    "a return to a drop policy through another way out is passed": (
        f"-A FORWARD -d {B} -o eth1 -j RETURN\n"
        f"-A FORWARD -s {POD} -d 192.168.0.0/16 -o eth0 -j ACCEPT\n"
        f"-A FORWARD -d {POD} -i eth0 -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4,
        {ForwardRule(POD, "192.168.0.0/16", out_interface="eth0")}),
    "a return to a drop policy through a wildcard holding the way out hides the pair": (
        f"-A FORWARD -d {B} -o eth+ -j RETURN\n"
        f"-A FORWARD -s {POD} -d 192.168.0.0/16 -o eth0 -j ACCEPT\n"
        f"-A FORWARD -d {POD} -i eth0 -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4, set()),
    "a return of the pods' traffic to a drop policy hides the pair": (
        f"-A FORWARD -s {POD} -j RETURN\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4, set()),
    "a return in a chain gone to, to a drop policy, hides the pair": (
        f"-A FORWARD -g FLANNEL-FWD\n-A FLANNEL-FWD -s {POD} -j RETURN\n"
        f"-A FLANNEL-FWD -s {POD} -d {B} -j ACCEPT\n-A FLANNEL-FWD -d {POD} -j ACCEPT", 4,
        set()),
    "the end of a chain gone to, to a drop policy, hides the pair": (
        f"-A FORWARD -s {POD} -g FLANNEL-FWD\n-A FLANNEL-FWD -d 10.1.0.0/16 -j ACCEPT\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4, set()),
    # A RETURN in a chain jumped to sends its packets back to FORWARD, past the rest of
    # that chain, whatever FORWARD's policy: its later accepts never see them.
    "a return of the pods' traffic in a chain jumped to hides the accepts after it there": (
        f"-A FORWARD -j FLANNEL-FWD\n-A FLANNEL-FWD -s {POD} -j RETURN\n"
        f"-A FLANNEL-FWD -s {POD} -d {B} -j ACCEPT\n-A FLANNEL-FWD -d {POD} -j ACCEPT", 4,
        set()),
    "a return of a part of the pods in a chain jumped to hides the pair, IPv6": (
        "-A FORWARD -j FLANNEL-FWD\n-A FLANNEL-FWD -s fd42::/64 -j RETURN\n"
        "-A FLANNEL-FWD -s fd42::/56 -d fd02::/64 -j ACCEPT\n"
        "-A FLANNEL-FWD -d fd42::/56 -j ACCEPT", 6, set()),
    "a return of other pods in a chain jumped to leaves the pair met, IPv6": (
        "-A FORWARD -j FLANNEL-FWD\n-A FLANNEL-FWD -d fd42::/56 -j ACCEPT\n"
        "-A FLANNEL-FWD -s fd99::/64 -j RETURN\n"
        "-A FLANNEL-FWD -s fd42::/56 -d fd02::/64 -j ACCEPT", 6,
        {ForwardRule("fd42::/56", "fd02::/64")}),
    "a return of the replies in a chain jumped to hides the pair": (
        f"-A FORWARD -j FLANNEL-FWD\n-A FLANNEL-FWD -d {POD} -j RETURN\n"
        f"-A FLANNEL-FWD -s {POD} -d {B} -j ACCEPT\n-A FLANNEL-FWD -d {POD} -j ACCEPT", 4,
        set()),
    "a return with a match k3snet does not model in a chain jumped to hides the pair": (
        f"-A FORWARD -j FLANNEL-FWD\n-A FLANNEL-FWD -p tcp -d 10.1.0.0/16 -j RETURN\n"
        f"-A FLANNEL-FWD -s {POD} -d {B} -j ACCEPT\n-A FLANNEL-FWD -d {POD} -j ACCEPT", 4,
        set()),
    # The end of a chain gone to (-g) from a chain jumped to goes back to FORWARD, past
    # the rest of the chain that went there.
    "a chain gone to from a chain jumped to hides the accepts after it there": (
        "-A FORWARD -j FLANNEL-FWD\n-A FLANNEL-FWD -g A\n-A A -s 10.99.0.0/16 -j ACCEPT\n"
        f"-A FLANNEL-FWD -s {POD} -d {B} -j ACCEPT\n-A FLANNEL-FWD -d {POD} -j ACCEPT", 4,
        set()),
    "a chain gone to from a chain jumped to, for other sources, leaves the pair met": (
        f"-A FORWARD -j FLANNEL-FWD\n-A FLANNEL-FWD -d {POD} -j ACCEPT\n"
        "-A FLANNEL-FWD -s 10.99.0.0/16 -g A\n-A A -j ACCEPT\n"
        f"-A FLANNEL-FWD -s {POD} -d {B} -j ACCEPT", 4, {ForwardRule(POD, B)}),
    "a chain gone to from a chain gone to, to a drop policy, hides the pair": (
        "-A FORWARD -g FLANNEL-FWD\n-A FLANNEL-FWD -g A\n-A A -s 10.99.0.0/16 -j ACCEPT\n"
        f"-A FLANNEL-FWD -s {POD} -d {B} -j ACCEPT\n-A FLANNEL-FWD -d {POD} -j ACCEPT", 4,
        set()),
    "the accepts of FORWARD after a chain returning the pods' traffic are read": (
        f"-A FORWARD -j FLANNEL-FWD\n-A FLANNEL-FWD -s {POD} -j RETURN\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4,
        {ForwardRule(POD, B)}),
    "a queue of the pods' traffic to a program hides the pair": (
        f"-A FORWARD -s {POD} -j NFQUEUE --queue-num 1\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n-A FORWARD -d {POD} -j ACCEPT", 4, set()),
}


@pytest.mark.parametrize("case", sorted(FORWARD_CASES))
def test_foreign_forward_reads_exactly_what_the_table_says(case: str) -> None:
    rules, family, expected = FORWARD_CASES[case]
    assert _forward(rules, family) == expected


_REPLIES = f"-A FORWARD -d {POD} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
JUMP_CASES: dict[str, tuple[str, set[NetObject]]] = {
    "an accept behind a jump of the pods' sources is the pods' accept": (
        f"-A FORWARD -s {POD} -j KUBE-X\n-A KUBE-X -j ACCEPT\n{_REPLIES}",
        {ForwardRule(POD, "0.0.0.0/0")}),
    "an accept two jumps down takes what both jumps and it match": (
        f"-A FORWARD -s {POD} -j A\n-A A -d {B} -j C\n-A C -o eth0 -j ACCEPT\n{_REPLIES}",
        {ForwardRule(POD, B, out_interface="eth0")}),
    "an accept behind a jump of a part of the pods is that part's": (
        f"-A FORWARD -s 10.42.1.0/24 -j A\n-A A -s {POD} -j ACCEPT\n{_REPLIES}",
        {ForwardRule("10.42.1.0/24", "0.0.0.0/0")}),
    "an accept behind a jump of other sources is none of the pods'": (
        f"-A FORWARD -s 192.0.2.0/24 -j A\n-A A -s {POD} -j ACCEPT\n{_REPLIES}", set()),
    "an accept behind a jump through a wildcard way out is the narrower way's": (
        f"-A FORWARD -o eth+ -j A\n-A A -s {POD} -o eth0 -j ACCEPT\n"
        f"-A FORWARD -d {POD} -i eth0 -j ACCEPT", {ForwardRule(POD, "0.0.0.0/0",
                                                           out_interface="eth0")}),
    "an accept behind a jump of another way out is none": (
        f"-A FORWARD -o eth1 -j A\n-A A -s {POD} -o eth0 -j ACCEPT\n{_REPLIES}", set()),
    "an accept behind a negated jump is not read as the positive one": (
        f"-A FORWARD ! -d {B} -j A\n-A A -s {POD} -j ACCEPT\n{_REPLIES}", set()),
    "an accept behind a jump of a match k3snet does not model is not read": (
        f"-A FORWARD -p tcp -j A\n-A A -s {POD} -j ACCEPT\n{_REPLIES}", set()),
    "a return two jumps down hides what follows in its chain alone": (
        f"-A FORWARD -j A\n-A A -j C\n-A C -s {POD} -j RETURN\n-A C -s {POD} -j ACCEPT\n"
        f"-A A -s {POD} -d {B} -j ACCEPT\n{_REPLIES}", {ForwardRule(POD, B)}),
    "a return in a chain gone to two jumps down hides what follows the -g": (
        f"-A FORWARD -j A\n-A A -g C\n-A C -s {POD} -j RETURN\n"
        f"-A A -s {POD} -d {B} -j ACCEPT\n{_REPLIES}", set()),
    "a drop two jumps down hides what follows": (
        f"-A FORWARD -j A\n-A A -s {POD} -j C\n-A C -d {B} -j DROP\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n{_REPLIES}", set()),
    # Both flavours print a comment "-j" or "-g" unquoted: a word of it is no flag.
    "a drop commented -j hides what follows": (
        f"-A FORWARD -s {POD} -m comment --comment -j -j DROP\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n{_REPLIES}", set()),
    "a drop commented --comment hides what follows": (
        f"-A FORWARD -s {POD} -m comment --comment --comment -j DROP\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n{_REPLIES}", set()),
    "a jump commented -g comes back": (
        "-A FORWARD -m comment --comment -g -j A\n-A A -s 10.99.0.0/16 -j ACCEPT\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n{_REPLIES}", {ForwardRule(POD, B)}),
    # A return some packets of the pods' skip (another way in, a set mark) leaves them
    # to the rest of its chain: a drop there is theirs, not skipped with the return.
    "a drop after a return of other ways in hides what follows the jump": (
        "-A FORWARD -j A\n-A A ! -i cni0 -j RETURN\n-A A -j DROP\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n{_REPLIES}", set()),
    "a drop after a return of marked packets hides what follows the jump": (
        "-A FORWARD -j A\n-A A -m mark ! --mark 0x0/0x1 -j RETURN\n-A A -j DROP\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n{_REPLIES}", set()),
    "a drop after a return of every unmarked packet hides nothing": (
        "-A FORWARD -j A\n-A A -m mark ! --mark 0x1/0x1 -j RETURN\n-A A -j DROP\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n{_REPLIES}", {ForwardRule(POD, B)}),
    # (the drop is read as one of any packet's, not of those the return leaves: a doubt)
    "a drop after a return every pod's source takes still hides what follows": (
        "-A FORWARD -j A\n-A A ! -s 10.99.0.0/16 -j RETURN\n-A A -j DROP\n"
        f"-A FORWARD -s {POD} -d {B} -j ACCEPT\n{_REPLIES}", set()),
    "an accept after an accept of other ways in is read": (
        f"-A FORWARD -j A\n-A A ! -i cni0 -j ACCEPT\n-A A -s {POD} -d {B} -j ACCEPT\n"
        f"{_REPLIES}", {ForwardRule(POD, B)}),
    "a loop in the text is read as a drop of anything": (
        f"-A FORWARD -j A\n-A A -j C\n-A C -j A\n-A FORWARD -s {POD} -j ACCEPT\n{_REPLIES}",
        set()),
}


@pytest.mark.parametrize("case", sorted(JUMP_CASES))
def test_foreign_forward_reads_a_rule_behind_jumps_with_their_matches_anded(case: str) -> None:
    rules, expected = JUMP_CASES[case]
    text = _table("filter", {"FORWARD": "DROP", "A": "-", "C": "-", "KUBE-X": "-"}, rules)
    assert foreign_forward(parse_save(text).get("filter"), 4) == expected


def test_a_rule_read_behind_a_jump_keeps_every_field_of_its_own() -> None:
    """The meeting of a jump's matches and a rule's is built field by field: one a newer
    RuleFields has must be named there too (this list is the reminder)."""
    assert [field.name for field in attrs.fields(RuleFields)] == [
        "source", "source_neg", "destination", "destination_neg", "in_interface",
        "out_interface", "comment", "ctstate", "ctdir", "target", "to_source", "random_fully"]
    inner = RuleFields(source=parse_network(POD), in_interface="eth0", out_interface="eth1",
                       comment="c", ctstate="NEW", ctdir="ORIGINAL", target="SNAT",
                       to_source="192.0.2.1", random_fully=True)
    outer = RuleFields(destination=parse_network(B), destination_neg=True, target="A")
    assert foreign._both(outer, inner) == attrs.evolve(
        inner, destination=parse_network(B), destination_neg=True)
    assert foreign._both(RuleFields(target="A"), inner) == inner


def test_foreign_forward_reads_jumps_down_to_its_bound_and_nothing_past_it() -> None:
    """A chain deeper than WALK_DEPTH (text only: the kernel refuses loops, not depth) or
    more rules than WALK_LIMIT: what follows is not read (a doubt: not met)."""
    def chains(depth: int) -> str:
        jumps = "\n".join(f"-A C{i} -j C{i + 1}" for i in range(depth))
        head = {"FORWARD": "DROP", **{f"C{i}": "-" for i in range(depth + 1)}}
        return _table("filter", head, f"-A FORWARD -j C0\n{jumps}\n"
                      f"-A C{depth} -s {POD} -j ACCEPT\n{_REPLIES}")
    assert foreign_forward(parse_save(chains(WALK_DEPTH - 1)).get("filter"), 4) == {
        ForwardRule(POD, "0.0.0.0/0")}
    assert foreign_forward(parse_save(chains(WALK_DEPTH + 1)).get("filter"), 4) == set()
    logs = "\n".join("-A FORWARD -p tcp -j LOG" for _ in range(WALK_LIMIT))
    many = _table("filter", {"FORWARD": "DROP"},
                  f"{logs}\n-A FORWARD -s {POD} -j ACCEPT\n{_REPLIES}")
    assert foreign_forward(parse_save(many).get("filter"), 4) == set()


def _nat_blocks(rules: str) -> set[tuple[str, str, str, str, str | None, str]]:
    text = _table("nat", {"POSTROUTING": "ACCEPT", "FLANNEL-POSTRTG": "-", "OTHER": "-",
                          "DEEP": "-"}, rules)
    dump = parse_save(text).get("nat")
    assert dump is not None
    found = nat_blocks(dump, 4, len(dump.chain("POSTROUTING")))
    return {(b.action, b.rule, str(b.source), str(b.destination), b.out_interface,
             str(b.to_address)) for b in found if isinstance(b, NatBlock)}


# What decides a connection's source NAT before k3snet's jump (appended last), each block
# with the rule's text as it names it: (action, rule, source, destination, out, to).
NAT_BLOCK_CASES: dict[str, tuple[str, set[tuple[str, str, str, str, str | None, str]]]] = {
    "a masquerade in POSTROUTING": (
        f"-A POSTROUTING -s {POD} -o eth1 -j MASQUERADE",
        {("masquerade", f"-A POSTROUTING -s {POD} -o eth1 -j MASQUERADE", POD, "None", "eth1",
          "None")}),
    "an unconditional masquerade in a chain jumped to, narrowed by the jump": (
        f"-A POSTROUTING -s {POD} -j OTHER\n-A OTHER -j MASQUERADE",
        {("masquerade", "-A OTHER -j MASQUERADE", POD, "None", None, "None")}),
    "an snat in a chain jumped to": (
        f"-A POSTROUTING -j OTHER\n-A OTHER -d {B} -j SNAT --to-source 192.0.2.1",
        {("snat", f"-A OTHER -d {B} -j SNAT --to-source 192.0.2.1", "None", B, None,
          "192.0.2.1")}),
    "an unconditional accept ends a chain jumped to": (
        f"-A POSTROUTING -j OTHER\n-A OTHER -j ACCEPT\n-A OTHER -s {POD} -j MASQUERADE",
        {("exempt", "-A OTHER -j ACCEPT", "None", "None", None, "None")}),
    "an unconditional return ends a chain jumped to": (
        f"-A POSTROUTING -j OTHER\n-A OTHER -j RETURN\n-A OTHER -s {POD} -j MASQUERADE", set()),
    "an unconditional return two jumps down goes back to the chain that jumped": (
        f"-A POSTROUTING -j OTHER\n-A OTHER -j DEEP\n-A DEEP -j RETURN\n"
        f"-A OTHER -s {POD} -j MASQUERADE",
        {("masquerade", f"-A OTHER -s {POD} -j MASQUERADE", POD, "None", None, "None")}),
    "a commented return of unmarked packets ends a chain jumped to": (
        "-A POSTROUTING -j OTHER\n"
        '-A OTHER -m comment --comment "kube" -m mark ! --mark 0x4000/0x4000 -j RETURN\n'
        f"-A OTHER -s {POD} -j MASQUERADE", set()),
    "a return of packets without a connection mark ends a chain jumped to": (
        "-A POSTROUTING -j OTHER\n-A OTHER -m connmark ! --mark 0x1/0x1 -j RETURN\n"
        f"-A OTHER -s {POD} -j MASQUERADE", set()),
    # Only a return every packet of k3snet's matches ends the chain; after another
    # (a mark test and more, another negated match) the rules are read: a doubt.
    "a return of unmarked packets of one kind does not end a chain jumped to": (
        "-A POSTROUTING -j OTHER\n"
        "-A OTHER -m mark ! --mark 0x1/0x1 -m addrtype --dst-type LOCAL -j RETURN\n"
        f"-A OTHER -s {POD} -j MASQUERADE",
        {("masquerade", f"-A OTHER -s {POD} -j MASQUERADE", POD, "None", None, "None")}),
    "a return of packets whose mark bit is clear in POSTROUTING is an exemption": (
        "-A POSTROUTING -m mark --mark 0x0/0x4000 -j RETURN",
        {("exempt", "-A POSTROUTING -m mark --mark 0x0/0x4000 -j RETURN", "None", "None", None,
          "None")}),
    "a masquerade of packets without a mark translates k3snet's": (
        "-A POSTROUTING -m mark --mark 0x0 -j MASQUERADE",
        {("masquerade", "-A POSTROUTING -m mark --mark 0x0 -j MASQUERADE", "None", "None", None,
          "None")}),
    "an accept of connections without a mark in a chain jumped to": (
        "-A POSTROUTING -j OTHER\n-A OTHER -m connmark --mark 0x0/0xff -j ACCEPT",
        {("exempt", "-A OTHER -m connmark --mark 0x0/0xff -j ACCEPT", "None", "None", None,
          "None")}),
    "a return of marked packets only does not end a chain jumped to": (
        "-A POSTROUTING -j OTHER\n-A OTHER -m mark ! --mark 0x0/0x4000 -j RETURN\n"
        f"-A OTHER -s {POD} -j MASQUERADE",
        {("masquerade", f"-A OTHER -s {POD} -j MASQUERADE", POD, "None", None, "None")}),
    "a mark test whose value is no number is a doubt: what follows is read": (
        "-A POSTROUTING -j OTHER\n-A OTHER -m mark ! --mark x/0x4000 -j RETURN\n"
        f"-A OTHER -s {POD} -j MASQUERADE",
        {("masquerade", f"-A OTHER -s {POD} -j MASQUERADE", POD, "None", None, "None")}),
    "a return of packets whose mark bit is clear ends a chain jumped to": (
        "-A POSTROUTING -j OTHER\n-A OTHER -m mark --mark 0x0/0x4000 -j RETURN\n"
        f"-A OTHER -s {POD} -j MASQUERADE", set()),
    "a return negating another match does not end a chain jumped to": (
        "-A POSTROUTING -j OTHER\n-A OTHER -m addrtype ! --dst-type LOCAL -j RETURN\n"
        f"-A OTHER -s {POD} -j MASQUERADE",
        {("masquerade", f"-A OTHER -s {POD} -j MASQUERADE", POD, "None", None, "None")}),
    "a chain gone to, and what reaches its end": (
        f"-A POSTROUTING -d {B} -g OTHER\n-A OTHER -s {POD} -j MASQUERADE",
        {("masquerade", f"-A OTHER -s {POD} -j MASQUERADE", POD, B, None, "None"),
         ("exempt", f"-A POSTROUTING -d {B} -g OTHER", "None", B, None, "None")}),
    "an in-interface is no match in POSTROUTING": (
        f"-A POSTROUTING -s {POD} -i eth0 -j MASQUERADE",
        {("masquerade", f"-A POSTROUTING -s {POD} -i eth0 -j MASQUERADE", POD, "None", None,
          "None")}),
    # A match k3snet cannot hold reads as any; an SNAT to a range, as one to an address
    # k3snet does not model.
    "an out-interface k3snet cannot hold": (
        f"-A POSTROUTING -s {POD} -o interface0123456 -j MASQUERADE",
        {("masquerade", f"-A POSTROUTING -s {POD} -o interface0123456 -j MASQUERADE", "None",
          "None", None, "None")}),
    "an snat to a range": (
        f"-A POSTROUTING -s {POD} -j SNAT --to-source 192.0.2.1-192.0.2.9",
        {("snat", f"-A POSTROUTING -s {POD} -j SNAT --to-source 192.0.2.1-192.0.2.9", "None",
          "None", None, "None")}),
    # Any target that may translate counts, at any depth (NETMAP, a target k3snet does
    # not know: an snat to an address it does not model).
    "a netmap in POSTROUTING": (
        f"-A POSTROUTING -s {POD} -j NETMAP --to 192.0.2.0/24",
        {("snat", f"-A POSTROUTING -s {POD} -j NETMAP --to 192.0.2.0/24", POD, "None", None,
          "None")}),
    "a target k3snet does not know in POSTROUTING": (
        f"-A POSTROUTING -s {POD} -j FULLCONENAT",
        {("snat", f"-A POSTROUTING -s {POD} -j FULLCONENAT", POD, "None", None, "None")}),
    # A target the kernel's module ends with XT_CONTINUE translates nothing: the packet
    # goes on to the next rule (a false conflict of k3snet's masquerade, read as one that
    # may translate).
    "an audit, a set and a connmark in POSTROUTING go on": (
        f"-A POSTROUTING -s {POD} -j AUDIT --type accept\n"
        f"-A POSTROUTING -s {POD} -j SET --add-set seen src\n"
        f"-A POSTROUTING -s {POD} -j CONNMARK --set-xmark 0x1/0x1", set()),
    "an audit in a chain jumped to goes on to the masquerade after it": (
        f"-A POSTROUTING -j OTHER\n-A OTHER -j AUDIT --type accept\n"
        f"-A OTHER -s {POD} -j MASQUERADE",
        {("masquerade", f"-A OTHER -s {POD} -j MASQUERADE", POD, "None", None, "None")}),
    "a netmap in a chain jumped to": (
        f"-A POSTROUTING -d {B} -j OTHER\n-A OTHER -j NETMAP --to 192.0.2.0/24",
        {("snat", "-A OTHER -j NETMAP --to 192.0.2.0/24", "None", B, None, "None")}),
    "an snat two jumps down, narrowed by both jumps": (
        f"-A POSTROUTING -s {POD} -j OTHER\n-A OTHER -d {B} -j DEEP\n"
        "-A DEEP -j SNAT --to-source 192.0.2.1",
        {("snat", "-A DEEP -j SNAT --to-source 192.0.2.1", POD, B, None, "192.0.2.1")}),
    "a masquerade in a chain gone to from a chain jumped to": (
        f"-A POSTROUTING -j OTHER\n-A OTHER -d {B} -g DEEP\n-A DEEP -s {POD} -j RETURN\n"
        "-A DEEP -j MASQUERADE",
        # DEEP's RETURN and end go back to POSTROUTING: no exemption
        {("masquerade", "-A DEEP -j MASQUERADE", "None", B, None, "None")}),
    "a chain gone to from a chain gone to: its end leaves POSTROUTING": (
        f"-A POSTROUTING -d {B} -g OTHER\n-A OTHER -g DEEP\n-A DEEP -s {POD} -j MASQUERADE",
        {("masquerade", f"-A DEEP -s {POD} -j MASQUERADE", POD, B, None, "None"),
         ("exempt", "-A OTHER -g DEEP", "None", B, None, "None")}),
    "a loop in the text is read once": (
        f"-A POSTROUTING -j OTHER\n-A OTHER -j DEEP\n-A DEEP -j OTHER\n"
        f"-A DEEP -s {POD} -j MASQUERADE",
        {("masquerade", f"-A DEEP -s {POD} -j MASQUERADE", POD, "None", None, "None")}),
    # A negation on the way that no packet of the rule's can pass: no block (as in FORWARD).
    "a masquerade its own jump's negation leaves no packet": (
        f"-A POSTROUTING ! -o eth1 -j OTHER\n-A OTHER -s {POD} -o eth1 -j MASQUERADE", set()),
    "a masquerade a jump's negated source leaves no packet": (
        f"-A POSTROUTING ! -s {POD} -j OTHER\n-A OTHER -s {POD} -j MASQUERADE", set()),
    "a comment spelled like an option is no option": (
        f"-A POSTROUTING -d {B} -m comment --comment --to-source -j RETURN",
        {("exempt", f"-A POSTROUTING -d {B} -m comment --comment --to-source -j RETURN", "None",
          B, None, "None")}),
}


@pytest.mark.parametrize("case", sorted(NAT_BLOCK_CASES))
def test_nat_blocks_reads_exactly_what_decides_before_the_jump(case: str) -> None:
    rules, expected = NAT_BLOCK_CASES[case]
    assert _nat_blocks(rules) == expected


def test_nat_blocks_stops_at_its_bound_and_counts_the_rest_against_k3snet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from k3snet.backends.iptables import foreign  # noqa: PLC0415 - only here

    monkeypatch.setattr(foreign, "WALK_LIMIT", 5)
    rules = "\n".join(["-A POSTROUTING -j OTHER", *["-A OTHER -j LOG"] * 10,
                        f"-A OTHER -s {POD} -j MASQUERADE"])
    found = _nat_blocks(rules)
    assert len(found) == 1
    (action, rule, source, destination, out, to), = found
    assert (action, source, destination, out, to) == ("snat", "None", "None", None, "None")
    assert "-A OTHER -j LOG" in rule
    assert "5 rules" in rule


def test_a_foreign_chain_named_like_k3snets_is_read_when_ours_leaves_it_out() -> None:
    text = _table("nat", {"POSTROUTING": "ACCEPT", "K3SNET-MINE": "-",
                          "K3SNET-POSTROUTING": "-"},
                  f"-A POSTROUTING -j K3SNET-MINE\n-A K3SNET-MINE -s {POD} -j MASQUERADE\n"
                  "-A POSTROUTING -j K3SNET-POSTROUTING\n"
                  f"-A K3SNET-POSTROUTING -s {POD} -j SNAT --to-source 192.0.2.1")
    dump = parse_save(text).get("nat")
    assert nat_blocks(dump, 4, 2) == set()  # every K3SNET- chain taken for k3snet's
    found = nat_blocks(dump, 4, 2, ours={"K3SNET-POSTROUTING"})
    assert {(b.action, b.rule) for b in found if isinstance(b, NatBlock)} == {
        ("masquerade", f"-A K3SNET-MINE -s {POD} -j MASQUERADE")}
    text = _table("filter", {"FORWARD": "DROP", "K3SNET-MINE": "-"},
                  f"-A FORWARD -j K3SNET-MINE\n-A K3SNET-MINE -s {POD} -j DROP")
    dump = parse_save(text).get("filter")
    assert foreign_blocks(dump, 4, 1) == set()
    assert {b.rule for b in foreign_blocks(dump, 4, 1, ours=()) if isinstance(b, ForwardBlock)
            } == {f"-A K3SNET-MINE -s {POD} -j DROP"}


def _forward_blocks(rules: str, policy: str = "DROP") -> set[tuple[str, str, str, str,
                                                                   str | None, str | None]]:
    text = _table("filter", {"FORWARD": policy, "FLANNEL-FWD": "-", "A": "-", "B": "-"}, rules)
    dump = parse_save(text).get("filter")
    assert dump is not None
    found = foreign_blocks(dump, 4, len(dump.chain("FORWARD")))
    return {(b.verdict, b.rule, str(b.source), str(b.destination), b.in_interface,
             b.out_interface) for b in found if isinstance(b, ForwardBlock)}


# What drops, rejects or returns forwarded packets before k3snet's jump (appended last):
# (verdict, rule, source, destination, in, out).
FORWARD_BLOCK_CASES: dict[str, tuple[str, str, set[tuple[str, str, str, str, str | None,
                                                          str | None]]]] = {
    "a drop with every match": (
        f"-A FORWARD -s {POD} -d {B} -i cni0 -o eth1 -j DROP", "DROP",
        {("drop", f"-A FORWARD -s {POD} -d {B} -i cni0 -o eth1 -j DROP", POD, B, "cni0",
          "eth1")}),
    "a reject in a chain jumped to, narrowed by the jump": (
        f"-A FORWARD -s {POD} -j FLANNEL-FWD\n-A FLANNEL-FWD -d {B} -j REJECT", "DROP",
        {("reject", f"-A FLANNEL-FWD -d {B} -j REJECT", POD, B, None, None)}),
    "a return in FORWARD hands the packet to a drop policy": (
        f"-A FORWARD -d {B} -j RETURN", "DROP",
        {("return", f"-A FORWARD -d {B} -j RETURN", "None", B, None, None)}),
    "a return in FORWARD with an accept policy decides nothing": (
        f"-A FORWARD -d {B} -j RETURN", "ACCEPT", set()),
    "kube-proxy's drop of invalid packets, state match": (
        "-A FORWARD -m state --state INVALID -j DROP", "DROP", set()),
    # At any depth of jumps, each jump narrowing what is reached below it.
    "a drop three levels down, narrowed by every jump": (
        f"-A FORWARD -s {POD} -j FLANNEL-FWD\n-A FLANNEL-FWD -o eth1 -j A\n-A A -j B\n"
        f"-A B -d {B} -j DROP", "DROP",
        {("drop", f"-A B -d {B} -j DROP", POD, B, None, "eth1")}),
    "a chain already on the way is not followed again": (
        f"-A FORWARD -j A\n-A A -j B\n-A B -j A\n-A B -s {POD} -j REJECT", "DROP",
        {("reject", f"-A B -s {POD} -j REJECT", POD, "None", None, None)}),
    "a return two levels down goes back to its caller only": (
        f"-A FORWARD -j A\n-A A -j B\n-A B -j RETURN\n-A B -j DROP\n-A A -d {B} -j DROP",
        "DROP", {("drop", f"-A A -d {B} -j DROP", "None", B, None, None)}),
    "a return in a chain gone to from FORWARD hands the packet to a drop policy": (
        f"-A FORWARD -g A\n-A A -g B\n-A B -d {B} -j RETURN", "DROP",
        {("return", f"-A B -d {B} -j RETURN", "None", B, None, None),
         ("return", "-A A -g B", "None", "None", None, None)}),
    "a return below a jump in a chain gone to goes back to the chain that jumped": (
        f"-A FORWARD -g A\n-A A -j B\n-A B -g FLANNEL-FWD\n-A FLANNEL-FWD -d {B} -j RETURN\n"
        f"-A A -s {POD} -j ACCEPT", "DROP",
        {("return", "-A FORWARD -g A", "None", "None", None, None)}),
    "the end of a chain gone to from FORWARD hands the packet to a drop policy": (
        f"-A FORWARD -s {POD} -g A\n-A A -d {B} -j ACCEPT", "DROP",
        {("return", f"-A FORWARD -s {POD} -g A", POD, "None", None, None)}),
    "a chain gone to returns to FORWARD when its caller was jumped to": (
        f"-A FORWARD -j A\n-A A -g B\n-A A -j DROP\n-A B -d {B} -j RETURN", "DROP", set()),
    "an accept of every packet ends the table": (
        "-A FORWARD -j A\n-A A -j B\n-A B -j ACCEPT\n-A B -j DROP\n-A FORWARD -j DROP",
        "DROP", set()),
    "an accept narrowed by its jump ends only its chain": (
        f"-A FORWARD -s {POD} -j A\n-A A -j ACCEPT\n-A A -j DROP\n-A FORWARD -d {B} -j DROP",
        "DROP", {("drop", f"-A FORWARD -d {B} -j DROP", "None", B, None, None)}),
    "docker's isolation drop, which its own jump's negation leaves no packet": (
        "-A FORWARD -j A\n-A A -i docker0 ! -o docker0 -j B\n-A A -j RETURN\n"
        "-A B -o docker0 -j DROP\n-A B -j RETURN", "DROP", set()),
    "kube-proxy's drop of invalid packets two levels down": (
        "-A FORWARD -j A\n-A A -j B\n-A B -m conntrack --ctstate INVALID -j DROP", "DROP",
        set()),
    # An accept of marked packets only lets k3snet's unmarked ones go on to the drop;
    # one of every unmarked packet ends the table for them.
    "an accept of marked packets only does not end the table": (
        f"-A FORWARD -m mark ! --mark 0x0/0x1 -j ACCEPT\n-A FORWARD -s {POD} -j DROP", "DROP",
        {("drop", f"-A FORWARD -s {POD} -j DROP", POD, "None", None, None)}),
    "an accept of every packet whose mark bit is clear ends the table": (
        f"-A FORWARD -m mark --mark 0x0/0x1 -j ACCEPT\n-A FORWARD -s {POD} -j DROP", "DROP",
        set()),
    # A queue hands the packet to a program (an IPS), whose verdict ends the table.
    "a queue to a program decides before the jump": (
        f"-A FORWARD -s {POD} -j NFQUEUE --queue-num 1 --queue-bypass", "ACCEPT",
        {("queue", f"-A FORWARD -s {POD} -j NFQUEUE --queue-num 1 --queue-bypass", POD,
          "None", None, None)}),
    "a queue of every packet ends the table": (
        "-A FORWARD -j A\n-A A -j QUEUE\n-A A -j DROP", "ACCEPT",
        {("queue", "-A A -j QUEUE", "None", "None", None, None)}),
    # Both flavours print a comment of one word unquoted: `--comment -o` is no match.
    "a drop commented -o drops by any device": (
        f"-A FORWARD -s {POD} -m comment --comment -o -j DROP", "DROP",
        {("drop", f"-A FORWARD -s {POD} -m comment --comment -o -j DROP", POD, "None", None,
          None)}),
    "a drop commented -d drops to any destination": (
        f"-A FORWARD -s {POD} -m comment --comment -d -m conntrack --ctstate NEW -j DROP",
        "DROP",
        {("drop", f"-A FORWARD -s {POD} -m comment --comment -d -m conntrack --ctstate NEW "
          "-j DROP", POD, "None", None, None)}),
    # A match k3snet cannot hold reads as any.
    "an in-interface k3snet cannot hold": (
        f"-A FORWARD -s {POD} -i interface0123456 -j DROP", "DROP",
        {("drop", f"-A FORWARD -s {POD} -i interface0123456 -j DROP", "None", "None", None,
          None)}),
}


@pytest.mark.parametrize("case", sorted(FORWARD_BLOCK_CASES))
def test_foreign_blocks_reads_exactly_what_decides_before_the_jump(case: str) -> None:
    rules, policy, expected = FORWARD_BLOCK_CASES[case]
    assert _forward_blocks(rules, policy) == expected


@pytest.mark.parametrize(("bound", "value", "why"), [("WALK_LIMIT", 5, "5 rules"),
                                                     ("WALK_DEPTH", 2, "2 deep")])
def test_foreign_blocks_stops_at_its_bound_and_counts_the_rest_against_k3snet(
    monkeypatch: pytest.MonkeyPatch, bound: str, value: int, why: str
) -> None:
    from k3snet.backends.iptables import foreign  # noqa: PLC0415 - only here

    monkeypatch.setattr(foreign, bound, value)
    rules = "\n".join(["-A FORWARD -j FLANNEL-FWD", "-A FLANNEL-FWD -j A", "-A A -j B",
                        *["-A B -j LOG"] * 10, f"-A B -d {B} -j DROP"])
    found = _forward_blocks(rules)
    assert len(found) == 1
    (verdict, rule, source, destination, in_, out), = found
    assert (verdict, source, destination, in_, out) == ("drop", "None", "None", None, None)
    assert why in rule
