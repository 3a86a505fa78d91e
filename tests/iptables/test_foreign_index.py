"""The foreign readers' look-ups of earlier rules by address (``_Takers``, ``_Exits``).

:func:`forward_accepts` asks, for each accept, whether an earlier drop, reject or
RETURN may take its packets, and :func:`foreign_nat`, for each MASQUERADE/SNAT rule,
which earlier exits spare which destinations. Both read every earlier rule once per
later one (N squared: a blocklist of 5 000 ``-s X -j DROP`` before 5 000 accepts took
a minute); now only the earlier rules whose addresses may meet the later one's are
read. The answers must be the brute-force ones (every earlier rule read), on drawn
tables; and the reads must grow linearly with a blocklist, counted, not timed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k3snet.backends.iptables import foreign
from k3snet.backends.iptables.save import parse_save
from k3snet.backends.prefixes import Prefixes
from k3snet.model.cidr import Network, overlaps, parse_network
from k3snet.render.iptables.rules import RuleFields
from tests.examples import examples

_NETS = ("10.42.0.0/16", "10.42.0.0/17", "10.42.1.0/24", "10.42.1.7/32", "192.168.2.0/24",
         "192.168.0.0/16", "0.0.0.0/0", "172.16.0.0/12", "fd00::/8")
_DEVICES = ("eth0", "eth1", "eth+", "e+", "+", "cni0")


class _BruteTakers:
    """The reading before the index: every earlier rule, each time."""

    def __init__(self) -> None:
        self.met: list[RuleFields | None] = []

    def append(self, fields: RuleFields | None) -> None:
        self.met.append(fields)

    def may_take(self, rule: RuleFields) -> bool:
        return any(earlier is None or foreign._may_take(earlier, rule)
                   for earlier in self.met)


class _BruteExits:
    def __init__(self) -> None:
        self.met: list[Any] = []

    def append(self, exit_: Any) -> None:
        self.met.append(exit_)

    def meeting(self, source: Network, destination: Network | None,
                out_interface: str | None = None) -> list[Any]:
        return list(self.met)


def _address(draw: st.DrawFn, flag: str) -> str:
    value = draw(st.sampled_from((None, *_NETS)))
    if value is None:
        return ""
    return f"{'! ' if draw(st.booleans()) else ''}{flag} {value} "


@st.composite
def _rule(draw: st.DrawFn, chain: str, targets: tuple[str, ...]) -> str:
    words = _address(draw, "-s") + _address(draw, "-d")
    for flag in ("-i", "-o"):
        device = draw(st.sampled_from((None, *_DEVICES)))
        if device is not None:
            words += f"{flag} {device} "
    target = draw(st.sampled_from(targets))
    if target == "SNAT":
        target = "SNAT --to-source " + draw(st.sampled_from(("192.168.1.5", "192.168.1.6")))
    if target in ("DROP", "RETURN") and draw(st.booleans()):
        # (kube-proxy's drop of invalid packets is passed by; any other test is read as none)
        words += f"-m conntrack --ctstate {draw(st.sampled_from(('INVALID', 'NEW')))} "
    verb = "-g" if target in ("ADMIN", "OTHER", "ADMIN-POST") and draw(st.booleans()) else "-j"
    return f"-A {chain} {words}{verb} {target}"


@st.composite
def _filter(draw: st.DrawFn) -> str:
    targets = ("ACCEPT", "ACCEPT", "DROP", "REJECT", "RETURN", "ADMIN")
    lines = ["*filter", f":FORWARD {draw(st.sampled_from(('ACCEPT', 'DROP')))} [0:0]",
             ":ADMIN - [0:0]", ":OTHER - [0:0]"]
    lines += draw(st.lists(_rule("FORWARD", (*targets, "OTHER")), max_size=12))
    lines += draw(st.lists(_rule("ADMIN", (*targets[:-1], "OTHER")), max_size=8))
    lines += draw(st.lists(_rule("OTHER", targets[:-1]), max_size=6))
    return "\n".join([*lines, "COMMIT", ""])


@st.composite
def _nat(draw: st.DrawFn) -> str:
    targets = ("MASQUERADE", "SNAT", "RETURN", "ACCEPT", "ADMIN-POST")
    lines = ["*nat", ":POSTROUTING ACCEPT [0:0]", ":ADMIN-POST - [0:0]"]
    lines += draw(st.lists(_rule("POSTROUTING", targets), max_size=12))
    lines += draw(st.lists(_rule("ADMIN-POST", targets[:-1]), max_size=8))
    return "\n".join([*lines, "COMMIT", ""])


def _brute(read: Callable[[], Any]) -> Any:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(foreign, "_Takers", _BruteTakers)
        patch.setattr(foreign, "_Exits", _BruteExits)
        return read()


@settings(max_examples=examples(150), deadline=None)
@given(text=_filter())
def test_forward_accepts_indexed_are_the_brute_force_ones(text: str) -> None:
    dump = parse_save(text)["filter"]
    for family in (4, 6):
        assert foreign.untracked_accepts(dump, family) == _brute(
            partial(foreign.untracked_accepts, dump, family))
    assert foreign.forward_accepts(dump) == _brute(lambda: foreign.forward_accepts(dump))


@settings(max_examples=examples(150), deadline=None)
@given(text=_nat())
def test_foreign_nat_indexed_is_the_brute_force_one(text: str) -> None:
    dump = parse_save(text)["nat"]
    for family in (4, 6):
        assert foreign.foreign_nat(dump, family) == _brute(
            partial(foreign.foreign_nat, dump, family))


def _counting(name: str, patch: pytest.MonkeyPatch,
              size: Callable[[tuple[Any, ...]], int] = lambda _: 1) -> list[int]:
    calls = [0]
    real = getattr(foreign, name)

    def counted(*args: Any) -> Any:
        if name == "_spared":  # (an iterable of the exits read: counted as read)
            exits = list(args[2])
            calls[0] += len(exits)
            return real(args[0], args[1], exits)
        calls[0] += size(args)
        return real(*args)

    patch.setattr(foreign, name, counted)
    return calls


_N = 1500


def _ips(count: int, base: int) -> Iterable[str]:
    return (f"{base}.{i // 250}.{i % 250}.1/32" for i in range(count))


def test_a_blocklist_before_accepts_is_read_in_linear_comparisons(
        monkeypatch: pytest.MonkeyPatch) -> None:
    lines = ["*filter", ":FORWARD ACCEPT [0:0]"]
    lines += [f"-A FORWARD -s {ip} -j DROP" for ip in _ips(_N, 100)]
    lines += [f"-A FORWARD -s 10.42.0.0/16 -d {ip} -j ACCEPT" for ip in _ips(_N, 192)]
    dump = parse_save("\n".join([*lines, "COMMIT", ""]))["filter"]
    calls = _counting("_may_take", monkeypatch)
    assert len(foreign.untracked_accepts(dump, 4)) == _N
    assert calls[0] < 4 * _N  # every drop against every accept: _N squared, 2.25 million


def test_drops_by_device_before_accepts_by_device_are_read_in_linear_comparisons(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # a virtual machine per tap device: a drop of what it sends from another address (no
    # positive address match), and an accept of what it sends from its own
    lines = ["*filter", ":FORWARD DROP [0:0]"]
    lines += [f"-A FORWARD -i tap{i} ! -s {ip} -j DROP" for i, ip in enumerate(_ips(_N, 10))]
    lines += [f"-A FORWARD -i tap{i} -o eth+ -j DROP" for i in range(_N)]  # (and eth0: none)
    lines += [f"-A FORWARD -i tap{i} -s {ip} -o eth0 -j ACCEPT"
              for i, ip in enumerate(_ips(_N, 10))]
    dump = parse_save("\n".join([*lines, "COMMIT", ""]))["filter"]
    calls = _counting("_may_take", monkeypatch)
    assert len(foreign.forward_accepts(dump)) == 0  # each behind its device's drop of eth+
    calls[0] = 0
    dump = parse_save("\n".join([*lines[:2 + _N], *lines[2 + 2 * _N:], "COMMIT", ""]))["filter"]
    assert len(foreign.untracked_accepts(dump, 4)) == _N
    assert calls[0] < 4 * _N  # every drop against every accept: _N squared, 2.25 million


def test_snat_exceptions_before_snat_rules_are_read_in_linear_comparisons(
        monkeypatch: pytest.MonkeyPatch) -> None:
    lines = ["*nat", ":POSTROUTING ACCEPT [0:0]"]
    lines += [f"-A POSTROUTING -s 10.42.0.0/16 -d {ip} -j RETURN" for ip in _ips(_N, 100)]
    lines += [f"-A POSTROUTING -s 10.42.0.0/16 -d {ip} -j SNAT --to-source 192.0.2.1"
              for ip in _ips(_N, 192)]
    dump = parse_save("\n".join([*lines, "COMMIT", ""]))["nat"]
    calls = _counting("_spared", monkeypatch)
    assert len(foreign.foreign_nat(dump, 4)) == _N
    assert calls[0] < 4 * _N  # every exit read for every SNAT rule: _N squared



def test_exits_by_device_before_nat_rules_by_device_are_read_in_linear_comparisons(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # a RETURN of what leaves by each of N devices (no address), then a MASQUERADE of the
    # pods' traffic leaving by each of N others
    lines = ["*nat", ":POSTROUTING ACCEPT [0:0]"]
    lines += [f"-A POSTROUTING -o veth{i} -j RETURN" for i in range(_N)]
    lines += [f"-A POSTROUTING -s 10.42.0.0/16 -o eth{i} -j MASQUERADE" for i in range(_N)]
    dump = parse_save("\n".join([*lines, "COMMIT", ""]))["nat"]
    calls = _counting("_spared", monkeypatch)
    assert len(foreign.foreign_nat(dump, 4)) == _N
    assert calls[0] < 4 * _N  # every exit read for every MASQUERADE rule: _N squared


@pytest.mark.parametrize("exit_", ["-i eth1 -o eth1 -j RETURN",
                                   "-o eth1 -m conntrack --ctstate NEW -j RETURN"])
def test_an_exit_not_read_by_its_way_out_leaves_a_nat_rule_by_another_out(exit_: str) -> None:
    # which packets it takes is not modelled (an in interface, a conntrack test): the
    # MASQUERADE after it is not met, whichever device either names
    lines = ["*nat", ":POSTROUTING ACCEPT [0:0]", f"-A POSTROUTING {exit_}",
             "-A POSTROUTING -s 10.42.0.0/16 -o eth0 -j MASQUERADE", "COMMIT", ""]
    dump = parse_save("\n".join(lines))["nat"]
    assert foreign.foreign_nat(dump, 4) == set()
    assert _brute(partial(foreign.foreign_nat, dump, 4)) == set()

_PREFIX_NETS = st.sampled_from(("10.42.0.0/15", "10.42.0.0/16", "10.42.0.0/17", "10.42.128.0/17",
                                "10.42.1.0/24", "10.42.1.7/32", "10.43.0.0/16", "0.0.0.0/0",
                                "fd00::/8", "fd00::/9", "fd00::1/128", "::/0"))


@settings(max_examples=examples(100))
@given(filed=st.lists(_PREFIX_NETS, max_size=12), asked=_PREFIX_NETS)
def test_prefixes_give_exactly_the_networks_sharing_an_address_with_the_asked_one(
        filed: list[str], asked: str) -> None:
    index: Prefixes[int] = Prefixes()
    nets = [parse_network(net) for net in filed]
    for number, net in enumerate(nets):
        index.add(net, number)
    question = parse_network(asked)
    assert sorted(index.overlapping(question)) == [
        number for number, net in enumerate(nets)
        if net.version == question.version and overlaps(net, question)]
