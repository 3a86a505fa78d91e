"""parse_rule: the exact fields of each rule shape it reads, and what it refuses.

The backend reads its own rules and foreign ones through :func:`parse_rule`;
:class:`RuleFields` is public, so every field is pinned here, the comment
included (k3snet's readers find their tag with ``comment_digest`` instead).
"""

from __future__ import annotations

import ipaddress

import pytest

from k3snet.render.iptables.rules import RuleFields, parse_rule


def _net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "-s 10.42.0.0/16 -d 192.168.2.0/24 -i cni0 -o eth0 -m comment --comment k3snet:abc "
            "-j ACCEPT",
            RuleFields(
                source=_net("10.42.0.0/16"),
                destination=_net("192.168.2.0/24"),
                in_interface="cni0",
                out_interface="eth0",
                comment="k3snet:abc",
                target="ACCEPT",
            ),
        ),
        (
            "-s 192.168.2.0/24 -d 10.42.0.0/16 -m conntrack --ctstate RELATED,ESTABLISHED "
            "-j ACCEPT",
            RuleFields(
                source=_net("192.168.2.0/24"),
                destination=_net("10.42.0.0/16"),
                ctstate="RELATED,ESTABLISHED",
                target="ACCEPT",
            ),
        ),
        # conntrack's direction, after its state as iptables-save prints them, or alone:
        # an administrator's accept of what comes back to the pods (the foreign reader).
        (
            "-d 10.42.0.0/16 -m conntrack --ctstate RELATED,ESTABLISHED --ctdir REPLY -j ACCEPT",
            RuleFields(destination=_net("10.42.0.0/16"), ctstate="RELATED,ESTABLISHED",
                       ctdir="REPLY", target="ACCEPT"),
        ),
        (
            "-m conntrack --ctdir ORIGINAL -j ACCEPT",
            RuleFields(ctdir="ORIGINAL", target="ACCEPT"),
        ),
        (
            "-m state --state ESTABLISHED -j ACCEPT",
            RuleFields(ctstate="ESTABLISHED", target="ACCEPT"),
        ),
        # Host bits are kept out, as iptables-save never prints them anyway.
        (
            "-s 10.42.1.7/16 -j MASQUERADE",
            RuleFields(source=_net("10.42.0.0/16"), target="MASQUERADE"),
        ),
        (
            "-s fd42::/56 ! -d fd01::/64 -j MASQUERADE --random-fully",
            RuleFields(
                source=_net("fd42::/56"),
                destination=_net("fd01::/64"),
                destination_neg=True,
                target="MASQUERADE",
                random_fully=True,
            ),
        ),
        (
            "! -s 10.0.0.0/8 -d 10.9.0.0/16 -j SNAT --to-source 192.168.1.5 --random-fully",
            RuleFields(
                source=_net("10.0.0.0/8"),
                source_neg=True,
                destination=_net("10.9.0.0/16"),
                target="SNAT",
                to_source="192.168.1.5",
                random_fully=True,
            ),
        ),
        (
            "-m comment --comment first -m comment --comment second -j RETURN",
            RuleFields(comment="second", target="RETURN"),
        ),
        ("", RuleFields()),
    ],
)
def test_the_fields_of_a_rule(text: str, expected: RuleFields) -> None:
    assert parse_rule(tuple(text.split())) == expected


@pytest.mark.parametrize(
    "text",
    [
        "! -i cni0 -j ACCEPT",  # only addresses may be negated
        "! -o eth0 -j ACCEPT",
        "! -m comment --comment x -j ACCEPT",
        "! -m conntrack --ctstate NEW -j ACCEPT",
        "! -j ACCEPT",
        "-j SNAT ! --to-source 192.168.1.5",
        "-p tcp -j ACCEPT",  # a match k3snet does not model
        "-m mark --mark 0x1 -j ACCEPT",
        "-m conntrack --ctstatus SEEN_REPLY -j ACCEPT",
        "-m state --state ESTABLISHED --ctdir REPLY -j ACCEPT",  # --ctdir is conntrack's
        "-m conntrack ! --ctdir REPLY -j ACCEPT",
        "-m conntrack ! --ctstate NEW --ctdir REPLY -j ACCEPT",  # (its negation not modelled)
        # two tests of conntrack's one field: no packet may pass both (not the last alone)
        "-m conntrack --ctdir ORIGINAL -m conntrack --ctdir REPLY -j ACCEPT",
        "-m conntrack --ctdir ORIGINAL -m conntrack --ctstate ESTABLISHED --ctdir REPLY -j ACCEPT",
        "-m conntrack --ctstate NEW -m state --state ESTABLISHED -j ACCEPT",
        "-m comment --note x -j ACCEPT",
        "-j ACCEPT --to-source 192.168.1.5",  # --to-source belongs to SNAT
        "-j MASQUERADE --to-source 192.168.1.5",
        "-j ACCEPT --random-fully",  # --random-fully belongs to NAT targets
        "--random-fully -j MASQUERADE",
        "-s not-an-address -j ACCEPT",
        "-s",  # cut short
        "-i",
        "-j",
        "-m comment --comment",
        "-m conntrack --ctstate",
        "-j SNAT --to-source",
    ],
)
def test_anything_else_is_no_rule(text: str) -> None:
    assert parse_rule(tuple(text.split())) is None


def test_a_negation_applies_to_the_next_address_only() -> None:
    fields = parse_rule(("!", "-s", "10.0.0.0/8", "-d", "10.9.0.0/16", "-j", "ACCEPT"))
    assert fields is not None
    assert (fields.source_neg, fields.destination_neg) == (True, False)
