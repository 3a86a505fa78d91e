"""Foreign accepts whose replies are accepted too, found by address, not by asking every
accept about every other.

A node with thousands of accepts by address (a firewall script's ``-s 10.x.y.0/24 -j
ACCEPT`` per customer network) was read in time quadratic in them: 160 s for one legacy
observe at 10 000 rules. :class:`~k3snet.backends.replies.ByAddresses` files each accept
by its two prefixes; the readers ask it for the accepts that may take a rule's replies
and put their own question to those alone. What is checked here: the index gives
exactly what asking every item gives; both readers find exactly the accepts the
every-pair reading found (the reference below is that reading); the number of questions
grows linearly with the accepts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k3snet.backends.iptables import foreign
from k3snet.backends.iptables.save import parse_save
from k3snet.backends.nftables import parse
from k3snet.backends.replies import ByAddresses
from k3snet.errors import K3snetError
from k3snet.model import ForwardRule, NetObject, interface_holds
from k3snet.model.cidr import Network, contains
from k3snet.model.forward import ForwardBlock
from tests.examples import examples
from tests.nftables.test_foreign_cases import ACCEPT, Kernel, daddr, meta, saddr

# Networks drawn from a few nested ones, so that many pairs hold one another.
_ROOTS = {4: ["10.0.0.1", "10.0.1.9", "10.1.0.1", "192.168.2.7"],
          6: ["fd00::1", "fd00:0:0:1::1", "fd01::1", "2001:db8::9"]}
_LENGTHS = {4: [0, 8, 16, 23, 24, 32], 6: [0, 8, 48, 63, 64, 128]}


@st.composite
def _networks(draw: st.DrawFn, family: int) -> Network:
    address = draw(st.sampled_from(_ROOTS[family]))
    length = draw(st.sampled_from(_LENGTHS[family]))
    return ipaddress.ip_network(f"{address}/{length}", strict=False)


@st.composite
def _pairs(draw: st.DrawFn) -> tuple[Network, Network]:
    family = draw(st.sampled_from([4, 6]))
    return draw(_networks(family)), draw(_networks(family))


_MATCHES = st.sampled_from([None, "+", "eth0", "eth1", "eth+", "et+", "eth0+", "veth7"])
_DEVICES = st.tuples(_MATCHES, _MATCHES)


@settings(max_examples=examples(150))
@given(filed=st.lists(st.tuples(_pairs(), _DEVICES), max_size=30), asked=_pairs(),
       devices=_DEVICES)
def test_by_addresses_gives_exactly_the_items_whose_networks_and_matches_hold_the_asked_ones(
        filed: list[tuple[tuple[Network, Network], tuple[str | None, str | None]]],
        asked: tuple[Network, Network], devices: tuple[str | None, str | None]) -> None:
    index: ByAddresses[int] = ByAddresses()
    for number, ((source, destination), matches) in enumerate(filed):
        index.add(source, destination, number, matches)
    expected = [number for number, ((source, destination), matches) in enumerate(filed)
                if contains(source, asked[0]) and contains(destination, asked[1])
                and interface_holds(matches[0], devices[0])
                and interface_holds(matches[1], devices[1])]
    assert sorted(index.holding(*asked, devices)) == expected


def test_by_addresses_keeps_the_families_apart_and_refuses_a_mixed_pair() -> None:
    index: ByAddresses[str] = ByAddresses()
    index.add(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("0.0.0.0/0"), "any4")
    assert list(index.holding(ipaddress.ip_network("::/0"), ipaddress.ip_network("::/0"))) == []
    assert list(index.holding(ipaddress.ip_network("10.0.0.0/8"),
                              ipaddress.ip_network("::/0"))) == []
    with pytest.raises(ValueError, match="two families"):
        index.add(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::/0"), "mixed")


# ---------------------------------------------------------------- iptables


def _reference_forward(dump: Any, family: int, untracked: list[ForwardBlock]) -> set[NetObject]:
    """The every-pair reading foreign_forward did before the index (the same tests)."""
    found: set[NetObject] = set()
    accepts = foreign.forward_accepts(dump)
    zero = foreign._zero(family)
    for rule in accepts:
        if rule.ctstate is not None or rule.ctdir is not None:
            continue
        source = rule.source if rule.source is not None else zero
        destination = rule.destination if rule.destination is not None else zero
        if source.version != family or destination.version != family:
            continue
        answers = [r for r in accepts if foreign._answers(r, rule, source, destination)]
        if not answers or not any(foreign._takes_errors(r, rule, source) for r in accepts):
            continue
        try:
            accepted = ForwardRule(source, destination, in_interface=rule.in_interface,
                                   out_interface=rule.out_interface)
        except K3snetError:
            continue  # as the reader: a rule it cannot model is left out
        if all(r.ctstate is not None or r.ctdir is not None for r in answers) and any(
                block.decides(accepted) for block in untracked):
            continue
        found.add(accepted)
    return found


@st.composite
def _iptables_accept(draw: st.DrawFn, family: int) -> str:
    words = ["-A FORWARD"]
    for flag in ("-s", "-d"):
        if draw(st.booleans()):
            words.append(f"{flag} {draw(_networks(family)).with_prefixlen}")
    for flag in ("-i", "-o"):
        device = draw(st.sampled_from([None, "cni0", "eth1", "eth+", "+"]))
        if device is not None:
            words.append(f"{flag} {device}")
    state = draw(st.sampled_from([None, "RELATED,ESTABLISHED", "ESTABLISHED", "RELATED",
                                  "NEW"]))
    if state is not None:
        words.append(f"-m conntrack --ctstate {state}")
    direction = draw(st.sampled_from([None, None, "REPLY", "ORIGINAL"]))
    if direction is not None:
        words.append(f"-m conntrack --ctdir {direction}")
    return " ".join([*words, "-j ACCEPT"])


@st.composite
def _iptables_rulesets(draw: st.DrawFn) -> tuple[int, str]:
    family = draw(st.sampled_from([4, 6]))
    rules = draw(st.lists(_iptables_accept(family), max_size=12))
    return family, "\n".join(["*filter", ":FORWARD DROP [0:0]", *rules, "COMMIT", ""])


UNTRACK = [ForwardBlock(4, "untrack", "-s 10.0.0.0/8 -j NOTRACK", "iptables IPv4 raw PREROUTING",
                        source="10.0.0.0/8"),
           ForwardBlock(6, "untrack", "-s fd00::/8 -j NOTRACK", "iptables IPv6 raw PREROUTING",
                        source="fd00::/8")]


@settings(max_examples=examples(150))
@given(ruleset=_iptables_rulesets(), untracked=st.booleans())
def test_iptables_foreign_forward_finds_exactly_the_accepts_the_every_pair_reading_found(
        ruleset: tuple[int, str], untracked: bool) -> None:
    family, text = ruleset
    dump = parse_save(text).get("filter")
    blocks = UNTRACK if untracked else []
    assert foreign.foreign_forward(dump, family, untracked=blocks) == _reference_forward(
        dump, family, blocks)


def counted(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    """Count the calls of ``module.name`` (one item per call)."""
    calls: list[int] = []
    real: Callable[..., bool] = getattr(module, name)

    def counting(*args: Any) -> bool:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(module, name, counting)
    return calls


def _customer_accepts(count: int) -> list[str]:
    """A firewall script's accept per customer network, and one accept of the replies."""
    return [*(f"-A FORWARD -s 10.{i // 256}.{i % 256}.0/24 -j ACCEPT" for i in range(count)),
            "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]


def test_iptables_foreign_forward_asks_questions_linear_in_the_accepts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    count = 2_000
    text = "\n".join(["*filter", ":FORWARD DROP [0:0]", *_customer_accepts(count), "COMMIT", ""])
    answers = counted(monkeypatch, foreign, "_answers")
    errors = counted(monkeypatch, foreign, "_takes_errors")
    found = foreign.foreign_forward(parse_save(text).get("filter"), 4)
    assert len(found) == count  # each one's replies: the accept of established connections
    # (every pair: 4 million questions; by address, two a rule)
    assert len(answers) <= 2 * count
    assert len(errors) <= 2 * count


def test_iptables_foreign_forward_asks_questions_linear_in_accepts_told_apart_by_device(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # one tap device a virtual machine, its traffic and its replies accepted by device
    count = 1_000
    rules = [line for i in range(count) for line in (
        f"-A FORWARD -i tap{i} -o eth0 -j ACCEPT", f"-A FORWARD -i eth0 -o tap{i} -j ACCEPT")]
    text = "\n".join(["*filter", ":FORWARD DROP [0:0]", *rules, "COMMIT", ""])
    answers = counted(monkeypatch, foreign, "_answers")
    errors = counted(monkeypatch, foreign, "_takes_errors")
    found = foreign.foreign_forward(parse_save(text).get("filter"), 4)
    assert len(found) == 2 * count
    assert ForwardRule("0.0.0.0/0", "0.0.0.0/0", in_interface="tap7", out_interface="eth0") in found
    assert len(answers) <= 2 * 2 * count  # (every pair: 4 million)
    assert len(errors) <= 2 * 2 * count


def test_iptables_foreign_forward_asks_questions_linear_in_copies_of_one_accept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # a script that appended its pair of accepts at every boot (all in one bucket of the
    # index: the same addresses and devices), and copies told apart by a comment alone
    count = 1_000
    rules = [line for i in range(count) for line in (
        "-A FORWARD -s 10.42.0.0/16 -d 192.168.0.0/16 -j ACCEPT",
        f'-A FORWARD -d 10.42.0.0/16 -m comment --comment "boot {i}" -j ACCEPT')]
    text = "\n".join(["*filter", ":FORWARD DROP [0:0]", *rules, "COMMIT", ""])
    answers = counted(monkeypatch, foreign, "_answers")
    errors = counted(monkeypatch, foreign, "_takes_errors")
    found = foreign.foreign_forward(parse_save(text).get("filter"), 4)
    assert found == {ForwardRule("10.42.0.0/16", "192.168.0.0/16")}
    assert len(answers) <= 2 * 2 * count  # (every copy asked of every copy: 2 million)
    assert len(errors) <= 2 * 2 * count


def test_iptables_copies_of_an_accept_told_apart_by_conntrack_alone_are_each_read() -> None:
    # the first accept of the replies tests conntrack; the second, the same but for that,
    # takes them whoever tracks them: not a copy (an untracked flow's replies pass it)
    rules = ["-A FORWARD -s 10.0.0.0/8 -d 192.168.2.0/24 -j ACCEPT",
             "-A FORWARD -d 10.0.0.0/8 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
             "-A FORWARD -d 10.0.0.0/8 -j ACCEPT"]
    dump = parse_save("\n".join(["*filter", ":FORWARD DROP [0:0]", *rules, "COMMIT", ""]))
    found = foreign.foreign_forward(dump.get("filter"), 4, untracked=UNTRACK)
    assert ForwardRule("10.0.0.0/8", "192.168.2.0/24") in found


# ---------------------------------------------------------------- nftables


@st.composite
def _nft_accept(draw: st.DrawFn, family: int) -> list[dict[str, Any]]:
    rule: list[dict[str, Any]] = []
    if draw(st.booleans()):
        rule.append(saddr(draw(_networks(family)).with_prefixlen))
    if draw(st.booleans()):
        rule.append(daddr(draw(_networks(family)).with_prefixlen))
    for key in ("iifname", "oifname"):
        device = draw(st.sampled_from([None, "cni0", "eth1"]))
        if device is not None:
            rule.append(meta(key, device))
    return [*rule, ACCEPT]


@st.composite
def _nft_kernels(draw: st.DrawFn) -> Kernel:
    family = draw(st.sampled_from([4, 6]))
    rules = draw(st.lists(_nft_accept(family), max_size=12))
    return Kernel({("inet", "t", "fwd"): ("forward", "drop", rules)})


def _forward_rules(kernel: Kernel) -> set[NetObject]:
    return {o for o in parse.ForeignReader(kernel, frozenset()).read()
            if isinstance(o, ForwardRule)}


@settings(max_examples=examples(100))
@given(kernel=_nft_kernels())
def test_nftables_reader_finds_exactly_the_accepts_the_every_pair_reading_found(
        kernel: Kernel) -> None:
    found = _forward_rules(kernel)
    # the every-pair reading: an accept of the pods' way out is one whose replies some
    # accept of the same chain takes
    reader = parse.ForeignReader(kernel, frozenset())
    reader.read()
    accepts = reader.accepts
    expected = {rule for rule in accepts
                if reader.replies_accepted or any(parse._answers(o, rule) for o in accepts)}
    assert found == expected


def test_nftables_reader_asks_questions_linear_in_the_accepts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    count = 2_000
    rules = [[saddr(f"10.{i // 256}.{i % 256}.0/24"), ACCEPT] for i in range(count)]
    answered = [[saddr("0.0.0.0/0"), daddr("10.0.0.0/8"), ACCEPT]]  # every one's replies
    kernel = Kernel({("inet", "t", "fwd"): ("forward", "drop", rules)})
    answers = counted(monkeypatch, parse, "_answers")
    assert _forward_rules(kernel) == set()  # no accept takes their replies: none is a way out
    assert len(answers) <= count  # (every pair: 4 million)
    answers.clear()
    kernel = Kernel({("inet", "t", "fwd"): ("forward", "drop", [*rules, *answered])})
    assert len(_forward_rules(kernel)) == count
    assert len(answers) <= 2 * count
