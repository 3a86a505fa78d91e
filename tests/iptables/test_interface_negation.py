"""Negated interface matches (``! -o eth+``) read as the kernel compares them.

xtables keeps an interface match as a name and a byte mask: ``eth+`` masks its prefix's
bytes (``+`` alone masks none: any device), ``eth0`` its bytes and the NUL after them; a
``!`` inverts the comparison. A rule reached through ``! -o eth+`` and matching ``-o
eth0`` meets no packet; compared as text (``eth+`` is not ``eth0``) it was a drop of the
pods' traffic through eth0, a false conflict, while the kernel let it through.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from k3snet.backends.iptables import IptablesBackend, Mode
from k3snet.backends.iptables.foreign import foreign_blocks
from k3snet.backends.iptables.save import parse_save
from k3snet.backends.routed import RoutedBy
from k3snet.lab.netns import run_in
from k3snet.lab.seed import POD_CIDRS, SeedLab
from k3snet.model import ForwardBlock, ForwardRule, interfaces_left, interfaces_may_meet
from k3snet.model.state import State
from k3snet.planner import plan
from tests.shared_lab import lab_fixture, made_lab_fixture  # noqa: F401 - one lab for the module

IFNAMSIZ = 16


def _kernel_passes(pattern: str, negated: bool, device: str) -> bool:
    """The kernel's comparison of ``device`` with a match as iptables parsed it
    (xtables_parse_interface's name and mask, ip_packet_match's masked compare, NF_INVF)."""
    size = len(pattern)
    name = pattern.encode().ljust(IFNAMSIZ, b"\0")
    masked = size - 1 if pattern.endswith("+") else size + 1
    mask = b"\xff" * masked + b"\0" * (IFNAMSIZ - masked)
    differs = any((d ^ n) & m for d, n, m in zip(device.encode().ljust(IFNAMSIZ, b"\0"),
                                                 name, mask, strict=True))
    return differs == negated


_STEMS = st.text("et0", min_size=0, max_size=IFNAMSIZ - 1)
_PATTERNS = st.one_of(
    _STEMS.filter(bool),  # a name, up to 15 bytes
    _STEMS.filter(lambda s: len(s) <= IFNAMSIZ - 2).map(lambda s: s + "+"),  # a wildcard
)
_MATCHES = st.lists(st.tuples(_PATTERNS, st.booleans()), min_size=1, max_size=3)


def _devices(matches: list[tuple[str, bool]]) -> set[str]:
    """Names enough to find a device passing ``matches`` when there is one: each
    match's name or prefix, and that with a byte no match holds (no negated wildcard
    covers it unless it covers the prefix), and any one such byte."""
    found = {"z"}
    for pattern, _ in matches:
        stem = pattern.removesuffix("+")
        found |= {stem, stem + "z", stem + "e"}
    return {d for d in found if 0 < len(d) < IFNAMSIZ}


@given(_MATCHES, st.text("et0z", min_size=1, max_size=IFNAMSIZ - 1))
def test_interface_matches_are_left_a_device_exactly_when_the_kernels_comparison_passes_one(
        matches: list[tuple[str, bool]], extra: str) -> None:
    """``interfaces_left`` says some device passes every positive match and no negated
    one exactly when one of the candidate devices passes them all by the kernel's own
    masked comparison (a device the kernel passes is never said to be left out)."""
    devices = _devices(matches) | {extra}
    kernel = any(all(_kernel_passes(p, neg, d) for p, neg in matches) for d in devices)
    positives = [p for p, neg in matches if not neg]
    negatives = [p for p, neg in matches if neg]
    assert interfaces_left(positives, negatives) is kernel


@given(_PATTERNS, st.booleans(), _PATTERNS, st.booleans())
def test_two_interface_matches_negated_or_not_meet_when_the_kernel_passes_a_device_both(
        a: str, a_negated: bool, b: str, b_negated: bool) -> None:
    matches = [(a, a_negated), (b, b_negated)]
    kernel = any(all(_kernel_passes(p, neg, d) for p, neg in matches)
                 for d in _devices(matches))
    assert interfaces_may_meet(a, b, a_negated=a_negated, b_negated=b_negated) is kernel


@given(_PATTERNS, _PATTERNS)
def test_positive_interface_matches_meet_as_before(a: str, b: str) -> None:
    """Without negations, the kernel's comparison agrees with the plain prefix reading."""
    matches = [(a, False), (b, False)]
    assert interfaces_may_meet(a, b) is any(
        all(_kernel_passes(p, False, d) for p, _ in matches) for d in _devices(matches))


@pytest.mark.parametrize(("a", "a_negated", "b", "b_negated", "meet"), [
    ("eth+", True, "eth0", False, False), ("eth0", True, "eth+", False, True),
    ("eth+", True, "eth1+", False, False), ("eth1+", True, "eth+", False, True),
    ("eth0", True, "eth0", False, False), ("eth0", True, "eth1", False, True),
    ("+", True, "eth0", False, False), ("+", False, "eth0", False, True),
    ("eth+", True, "eth+", True, True), ("+", True, "+", True, False),
    ("abcdefghijklmno", False, "abcdefghijklmn+", False, True),
    ("abcdefghijklmno", False, "abcdefghijklmn+", True, False),
    ("abcdefghijklmn+", False, "abcdefghijklmno", True, True),
])
def test_negated_interface_matches_as_the_kernel_reads_them(
        a: str, a_negated: bool, b: str, b_negated: bool, meet: bool) -> None:
    assert interfaces_may_meet(a, b, a_negated=a_negated, b_negated=b_negated) is meet


POD = POD_CIDRS[4]
DB_NET = "192.168.2.0/24"


def _blocks(rules: str) -> set[str]:
    text = "*filter\n:FORWARD ACCEPT [0:0]\n:X - [0:0]\n" + rules.strip() + "\nCOMMIT\n"
    dump = parse_save(text).get("filter")
    assert dump is not None
    return {b.rule for b in foreign_blocks(dump, 4, len(dump.chain("FORWARD")))}


@pytest.mark.parametrize(("rules", "blocks"), [
    ("-A FORWARD ! -o eth+ -j X\n-A X -o eth0 -j DROP", set()),
    ("-A FORWARD ! -o eth+ -j X\n-A X -o eth1+ -j DROP", set()),
    ("-A FORWARD -o eth0 -j X\n-A X ! -o eth+ -j DROP", set()),
    ("-A FORWARD ! -i eth+ -j X\n-A X -i eth0 -j DROP", set()),
    ("-A FORWARD ! -i + -j DROP", set()),
    ("-A FORWARD ! -o eth0 -j X\n-A X -o eth+ -j DROP", {"-A X -o eth+ -j DROP"}),
    ("-A FORWARD ! -o eth1+ -j X\n-A X -o eth+ -j DROP", {"-A X -o eth+ -j DROP"}),
    ("-A FORWARD ! -o eth+ -j X\n-A X -o veth0 -j DROP", {"-A X -o veth0 -j DROP"}),
    ("-A FORWARD ! -o abcdefghijklmn+ -j X\n-A X -o abcdefghijklmno -j DROP", set()),
    ("-A FORWARD ! -o abcdefghijklmno -j X\n-A X -o abcdefghijklmn+ -j DROP",
     {"-A X -o abcdefghijklmn+ -j DROP"}),
])
def test_a_drop_no_device_can_reach_past_a_negated_interface_is_no_block(
        rules: str, blocks: set[str]) -> None:
    assert _blocks(rules) == blocks


ROUTES = RoutedBy([("10.42.0.0/24", "cni0"), ("10.42.1.0/24", "flannel.1"),
                   ("0.0.0.0/0", "eth0"), ("fd42:42::/64", "cni0"), ("::/0", "eth0")])


@pytest.mark.parametrize(("family", "rules", "fields", "decides"), [
    (4, "-A FORWARD -i cni0 ! -o eth0 -j DROP",
     {"source": "10.42.0.0/24", "destination": "10.42.0.0/23", "in_interface": "cni0"}, False),
    (4, "-A FORWARD ! -i eth+ -o cni0 -j DROP",
     {"source": "10.42.0.0/23", "destination": "10.42.0.0/24", "out_interface": "cni0"}, False),
    (4, "-A FORWARD ! -o eth0 -j X\n-A X ! -o flannel.1 -j DROP", {"destination": "10.42.0.0/24"},
     True),  # (the replies to the pods leave by cni0)
    (4, "-A FORWARD ! -o cni0 -j DROP", {}, True),  # the default route: any destination
    (4, "-A FORWARD ! -o eth0 -d 192.0.2.0/24 -j DROP", {"destination": "192.0.2.0/24"},
     False),
    (6, "-A FORWARD -i cni0 ! -o eth0 -j DROP",
     {"source": "fd42:42::/64", "destination": "fd42:42::/64", "in_interface": "cni0"}, False),
])
def test_a_drop_by_a_negated_interface_gets_what_the_node_routes_by_the_other_devices(
        family: int, rules: str, fields: dict[str, str], decides: bool) -> None:
    """``-i cni0 ! -o eth0 -j DROP`` meets what leaves by another device than eth0: the
    destinations the node routes by those (the routes of cni0 and flannel.1), not the
    pods' connection to the database (by the default route on eth0), nor its replies;
    ``! -o eth0`` on the way to ``! -o flannel.1`` leaves cni0's alone, and ``! -o cni0``
    the default route's, any destination."""
    text = "*filter\n:FORWARD ACCEPT [0:0]\n:X - [0:0]\n" + rules + "\nCOMMIT\n"
    dump = parse_save(text).get("filter")
    assert dump is not None
    (found,) = foreign_blocks(dump, family, len(dump.chain("FORWARD")), routed=ROUTES)
    assert isinstance(found, ForwardBlock)
    assert found == ForwardBlock(family, "drop", rules.splitlines()[-1],
                                 f"iptables IPv{family} filter", **fields)
    pod, db = ("10.42.0.0/16", DB_NET) if family == 4 else ("fd42:42::/56", "fd01:2::/64")
    assert found.decides(ForwardRule(pod, db)) is decides


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize(("jump", "conflict"), [(["!", "-o", "eth+"], False),
                                                (["!", "-o", "eth1"], True)])
def test_a_drop_through_eth0_behind_a_negated_interface_decides_as_the_kernel_does(
        lab: SeedLab, mode: Mode, jump: list[str], conflict: bool) -> None:
    """``! -o eth+ -j X`` then ``-A X -o eth0 -j DROP``: no packet through eth0 reaches
    the drop, the pod's connection to the database succeeds and the forward rule is no
    conflict; behind ``! -o eth1`` the same drop takes it, and is one."""
    wanted = ForwardRule(POD, DB_NET)
    ipt = [f"iptables-{mode}", "-w"]
    run_in(lab.node, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    run_in(lab.node, [*ipt, "-t", "nat", "-A", "POSTROUTING", "-s", POD, "-o", "eth0",
                      "-j", "MASQUERADE"])
    run_in(lab.node, [*ipt, "-N", "X"])
    run_in(lab.node, [*ipt, "-A", "FORWARD", *jump, "-j", "X"])
    run_in(lab.node, [*ipt, "-A", "X", "-o", "eth0", "-j", "DROP"])
    _judged_as_the_kernel_does(lab, mode, wanted, f"-A FORWARD {' '.join(jump)} -j X",
                               conflict=conflict)


def _judged_as_the_kernel_does(lab: SeedLab, mode: Mode, wanted: ForwardRule, line: str, *,
                               conflict: bool) -> None:
    """The filter table lists ``line`` (the kernel's own view), the plan for ``wanted`` has
    a conflict exactly when ``conflict``, and the pods' connection fails exactly then."""
    saved = run_in(lab.node, [f"iptables-{mode}-save", "-t", "filter"]).stdout
    assert line in saved
    with IptablesBackend(lab.node, mode=mode) as backend:
        notes = plan(backend.observe(), State(owned=[wanted])).notes
    assert [n.status for n in notes if n.wanted == wanted] == (
        ["conflict"] if conflict else [])
    assert lab.tcp_probe(family=4, timeout=1.0 if conflict else 2.0).ok is not conflict


# A drop by a negated interface alone, and whether the pods' connection to the database
# meets it (out by eth0, back in by eth0 and out by cni0).
NEGATED_DROPS: dict[str, tuple[list[str], bool]] = {
    "of the pods' packets leaving by another way than eth0": (
        ["-i", "cni0", "!", "-o", "eth0"], False),
    "of what reaches the pods by another way than eth0": (["!", "-i", "eth0", "-o", "cni0"],
                                                          False),
    "of all that leaves by another way than eth0": (["!", "-o", "eth0"], True),
}


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize("case", sorted(NEGATED_DROPS))
def test_a_drop_by_a_negated_interface_meets_what_the_node_routes_by_the_other_devices(
        lab: SeedLab, mode: Mode, case: str) -> None:
    """``-i cni0 ! -o eth0 -j DROP`` (the pods leave by the uplink only) drops what the node
    routes by any other device: not the pods' connection to the database, out by eth0,
    whose replies come in by eth0, and the kernel lets it through; read as a drop of any
    packet from cni0, it was a conflict. ``! -o eth0 -j DROP`` drops the replies going
    out by cni0: a conflict, and the connection fails."""
    rule, conflict = NEGATED_DROPS[case]
    wanted = ForwardRule(POD, DB_NET)
    ipt = [f"iptables-{mode}", "-w"]
    run_in(lab.node, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    run_in(lab.node, [*ipt, "-t", "nat", "-A", "POSTROUTING", "-s", POD, "-o", "eth0",
                      "-j", "MASQUERADE"])
    run_in(lab.node, [*ipt, "-A", "FORWARD", *rule, "-j", "DROP"])
    _judged_as_the_kernel_does(lab, mode, wanted, f"-A FORWARD {' '.join(rule)} -j DROP",
                               conflict=conflict)


_RAW_ENTRY = """
import iptc
for rule in iptc.Chain(iptc.Table(iptc.Table.FILTER), "FORWARD").rules:
    ip = rule.entry.ip
    print(bytes(ip.iniface).decode(), bytes(ip.iniface_mask).hex() or "-", ip.invflags & 1)
"""


@pytest.mark.kernel
def test_the_legacy_text_drops_the_negated_any_interface_that_the_kernels_table_keeps(
        ns: str) -> None:
    """``! -i + -j DROP`` drops nothing; ``iptables-legacy-save`` prints it as ``-j DROP``
    (an interface with an empty mask is left out), so k3snet, reading that text alone,
    saw a drop of every packet, a false conflict, before another rule. The
    kernel's table keeps the match: interface ``+``, empty mask, ``IPT_INV_VIA_IN``
    (python-iptables' raw entry; its ``Rule.in_interface`` is ``None``), and k3snet now
    reads it there (tests/iptables/test_never_met_interface.py). iptables-nft prints it
    as written."""
    pytest.importorskip("iptc")
    import sys  # noqa: PLC0415

    run_in(ns, ["iptables-legacy", "-w", "-A", "FORWARD", "!", "-i", "+", "-j", "DROP"])
    # (not the last rule: a final catch-all drop is a default k3snet's jump goes before)
    run_in(ns, ["iptables-legacy", "-w", "-A", "FORWARD", "-d", "192.0.2.0/24", "-j", "ACCEPT"])
    assert "-A FORWARD -j DROP" in run_in(ns, ["iptables-legacy-save", "-t", "filter"]).stdout
    raw = run_in(ns, [sys.executable, "-c", _RAW_ENTRY], timeout=120).stdout.split()
    assert raw[:3] == ["+", "-", "1"]  # the first rule: `! -i +`
    with IptablesBackend(ns, mode="legacy") as backend:
        notes = plan(backend.observe(), State(owned=[ForwardRule(POD, DB_NET)])).notes
    assert [n.status for n in notes] == []  # (a conflict, reading the text alone)
    run_in(ns, ["iptables-nft", "-w", "-A", "FORWARD", "!", "-i", "+", "-j", "DROP"])
    assert "-A FORWARD ! -i + -j DROP" in run_in(ns, ["iptables-nft-save", "-t",
                                                      "filter"]).stdout
