"""The kernel's room for one rule's expressions, and the NAT rules k3snet writes as matches.

The kernel refuses a rule whose expressions take 4096 bytes or more (``size >= 1 << 12``
in ``nf_tables_newrule``, each expression's ``ops->size``) with "File too large". IPv6
exclusions whose length is not a multiple of 8 reach it before the 128 expressions by
which alone the anonymous set was chosen: 32 IPv6 ``/33`` exclusions of a masquerade rule,
30 of an SNAT rule with an interface and a destination, were written as matches and
refused, though a set holds them. ``nft_rule_bytes`` now sums the room as the kernel
does, and a rule that would not fit as matches is written with the set.
"""

from __future__ import annotations

import ipaddress
import itertools
import json

import pytest

from k3snet.backends.nftables import NftablesBackend
from k3snet.backends.nftables import batch as batch_module
from k3snet.backends.nftables.batch import Batch
from k3snet.lab.netns import run_in
from k3snet.model import MasqueradeRule, NetObject, SnatRule, State
from k3snet.planner import plan
from k3snet.render import nftables
from k3snet.render.nftables import (
    NFT_RULE_BYTES,
    _nat_body,
    exclusion_set,
    nft_rule_bytes,
    nft_rules,
)
from k3snet.render.nftables_batch import Syntax

Nat = MasqueradeRule | SnatRule


def _excluded(version: int, prefix: int, count: int) -> list[str]:
    """``count`` exclusions of ``prefix`` bits that aggregate to nothing."""
    first = int(ipaddress.ip_address("fd00::" if version == 6 else "10.0.0.0"))
    step = 1 << ((128 if version == 6 else 32) - prefix + 1)
    return [str(ipaddress.ip_network((first + i * step, prefix))) for i in range(count)]


SHAPES = [
    # (version, exclusion length, source, destination, out interface, snat)
    (6, 33, "fd42:42::/56", None, None, False),
    (6, 33, "fd42:42::/57", "fd00::/8", "eth0", True),
    (6, 127, "::/0", "fc00::/7", "eth+", False),
    (6, 64, "fd42:42::/56", None, "eth0", True),
    (6, 33, "fd42:42::/56", "fd00::/8", "eth0", True),
    (4, 24, "10.42.0.0/16", None, None, False),
    (4, 25, "0.0.0.0/0", "10.0.0.0/7", "eth0", True),
    (4, 25, "10.42.0.0/17", None, "eth+", False),
]


def _rule(shape: tuple[int, int, str, str | None, str | None, bool], count: int) -> Nat:
    version, prefix, source, destination, out_interface, snat = shape
    exclude = _excluded(version, prefix, count)
    if snat:
        return SnatRule(source, destination=destination, exclude=exclude,
                        out_interface=out_interface,
                        to_address="fd01::5" if version == 6 else "192.0.2.5")
    return MasqueradeRule(source, destination=destination, exclude=exclude,
                          out_interface=out_interface)


def _kernel_takes(ns: str, obj: Nat, inet: bool) -> bool:
    """Whether the kernel takes ``obj``'s rule as :func:`nft_rules` writes it (``nft -c``:
    checked by the kernel, nothing changed)."""
    family = "inet" if inet else ("ip" if obj.family == 4 else "ip6")
    rules = "\n".join(f"\t\t{r.body}" for r in nft_rules(obj, inet=inet))
    script = (f"table {family} t {{\n\tchain c {{\n\t\ttype nat hook postrouting "
              f"priority srcnat;\n{rules}\n\t}}\n}}\n")
    return run_in(ns, ["nft", "-c", "-f", "-"], input_text=script, check=False).returncode == 0


@pytest.mark.kernel
@pytest.mark.parametrize("inet", [True, False], ids=["inet", "split"])
def test_every_nat_rule_written_as_matches_is_taken_and_one_more_exclusion_needs_the_set(
        ns: str, inet: bool) -> None:
    for shape in SHAPES:
        # the most exclusions k3snet writes as matches (by their count and their room)
        most = max(n for n in range(2, 64) if not exclusion_set(_rule(shape, n), inet=inet))
        largest, over = _rule(shape, most), _rule(shape, most + 1)
        assert _kernel_takes(ns, largest, inet), (shape, most, nft_rule_bytes(largest))
        assert "{" not in nft_rules(largest, inet=inet)[0].body
        # one more: the set, which the kernel takes...
        assert "{" in nft_rules(over, inet=inet)[0].body
        assert _kernel_takes(ns, over, inet), (shape, most + 1)


def _matches_taken(ns: str, obj: Nat, inet: bool) -> bool:
    """Whether the kernel takes ``obj``'s exclusions as one match each."""
    family = "inet" if inet else ("ip" if obj.family == 4 else "ip6")
    proto = "ip" if obj.family == 4 else "ip6"
    body = _nat_body(obj, proto)  # the match form, whatever is chosen
    if not inet:
        body = body.replace(f"snat {proto} to ", "snat to ", 1)
    script = (f"table {family} t {{\n\tchain c {{\n\t\ttype nat hook postrouting "
              f"priority srcnat;\n\t\t{body}\n\t}}\n}}\n")
    return run_in(ns, ["nft", "-c", "-f", "-"], input_text=script, check=False).returncode == 0


@pytest.mark.kernel
def test_the_set_is_chosen_exactly_where_the_kernel_refuses_the_matches(
        ns: str) -> None:
    # IPv6 rules and those of byte-aligned exclusions: Linux 6.18's layout is the largest
    # of every kernel, so the last count written as matches is taken here, the first
    # written as a set would be refused. IPv4 exclusions that do not end on a byte take
    # more on kernels before 5.10 (below): their set comes earlier, one 6.18 would take.
    for shape, inet in itertools.product(SHAPES, (True, False)):
        most = max(n for n in range(2, 64) if not exclusion_set(_rule(shape, n), inet=inet))
        assert _matches_taken(ns, _rule(shape, most), inet), (shape, inet, most)
        over = _rule(shape, most + 1)
        assert _matches_taken(ns, over, inet) == (shape[0] == 4 and shape[1] % 8 != 0), (
            shape, inet, most + 1)


# Each expression's ops->size (64-bit) as the kernel sources lay them out, by the kernels
# where it changed: (== of up to 4 bytes, != of up to 4 bytes, a compare of 5 to 16
# bytes, a 4-byte bitwise, a 16-byte bitwise). cmp_fast took only == before 5.10 (then
# struct nft_cmp_expr, 32); bitwise_fast came in 5.10, nft_bitwise grew its shift data
# (a third struct nft_data) in 5.6; cmp16_fast came in 5.19.
KERNEL_LAYOUTS = {
    "4.19-5.5": (16, 32, 32, 48, 48),
    "5.6-5.9": (16, 32, 32, 64, 64),
    "5.10-5.18": (24, 24, 32, 24, 64),
    "5.19-6.18": (24, 24, 48, 24, 64),
}


def _layout_bytes(layout: tuple[int, int, int, int, int], obj: Nat, inet: bool) -> int:
    """``obj``'s rule of one match per exclusion, summed by one kernel's layout."""
    eq, neq, cmp16, bitwise4, bitwise16 = layout

    def prefix(net: ipaddress.IPv4Network | ipaddress.IPv6Network, negated: bool) -> int:
        short = eq if not negated else neq
        if net.prefixlen and net.prefixlen % 8 == 0:
            return 16 + (short if net.prefixlen <= 32 else cmp16)
        if net.version == 4:
            return 16 + bitwise4 + short
        return 16 + bitwise16 + cmp16

    size = 16 + eq if inet else 0  # meta nfproto
    size += prefix(obj.source, False)
    size += prefix(obj.destination, False) if obj.destination is not None else 0
    size += sum(prefix(net, True) for net in obj.exclude)
    if obj.out_interface is not None:  # meta oifname, a compare of 16 bytes or "eth"
        size += 16 + (eq if obj.out_interface.endswith("+") else cmp16)
    return size + (32 + 16 if isinstance(obj, SnatRule) else 16)  # immediate, snat; masq


@pytest.mark.parametrize("kernel", list(KERNEL_LAYOUTS))
def test_every_rule_written_as_matches_fits_the_room_of_every_kernel_layout_property(
        kernel: str) -> None:
    # The rules of 36 to 41 IPv4 /25 exclusions k3snet wrote as matches took up to 4736
    # bytes on 5.6 to 5.9 (112 each) and were refused there: 6.18's layout is not the
    # largest for IPv4 (a != of 4 bytes, a 4-byte mask).
    layout = KERNEL_LAYOUTS[kernel]
    for shape, inet in itertools.product(SHAPES, (True, False)):
        for count in range(2, 64):
            obj = _rule(shape, count)
            if exclusion_set(obj, inet=inet):
                break
            assert _layout_bytes(layout, obj, inet) < NFT_RULE_BYTES, (kernel, shape, count)
            assert _layout_bytes(layout, obj, inet) <= nft_rule_bytes(obj, inet=inet)


def test_the_reported_rules_are_written_with_the_set() -> None:
    # 32 IPv6 /33s of a masquerade rule, 30 of an SNAT rule with oif and a destination:
    # refused by the kernel as matches while the count alone chose them.
    masquerade = MasqueradeRule("fd42:42::/56", exclude=_excluded(6, 33, 32))
    snat = SnatRule("fd42:42::/57", destination="fd00::/8", exclude=_excluded(6, 33, 30),
                    out_interface="eth0", to_address="fd01::5")
    for obj in (masquerade, snat):
        assert exclusion_set(obj)
        assert nft_rule_bytes(obj) < NFT_RULE_BYTES
    # 31 /33s of the masquerade rule fit (4072 bytes) and keep their matches
    assert not exclusion_set(MasqueradeRule("fd42:42::/56", exclude=_excluded(6, 33, 31)))


@pytest.mark.kernel
@pytest.mark.parametrize("syntax", ["nft", "json"])
def test_a_rule_an_earlier_release_wrote_as_matches_is_read_back_as_met_not_replaced(
        ns: str, syntax: Syntax, monkeypatch: pytest.MonkeyPatch) -> None:
    # 41 IPv4 /17 exclusions: written as matches by the count alone, now with the set
    # (they would take 4672 bytes on 5.6 to 5.9). A node holding the matches keeps them.
    held = MasqueradeRule("192.168.0.0/16", exclude=_excluded(4, 17, 41))
    assert exclusion_set(held)
    wanted = State(owned=[held])
    with monkeypatch.context() as earlier:
        earlier.setattr(nftables, "exclusion_set",
                        lambda obj, *, inet=True: nftables._nat_expressions(obj, inet, False)
                        > nftables.NFT_RULE_EXPRESSIONS)
        with NftablesBackend(ns, syntax=syntax, keep_read=False) as backend:
            backend.apply(plan(backend.observe(), wanted))
    listed = json.loads(run_in(ns, ["nft", "-j", "list", "ruleset"]).stdout)["nftables"]
    (rule,) = [item["rule"] for item in listed if "rule" in item]
    assert sum(1 for e in rule["expr"] if e.get("match", {}).get("op") == "!=") == 41
    with NftablesBackend(ns, syntax=syntax, keep_read=False) as backend:
        assert set(backend.observe().owned) == {held}
        assert not plan(backend.observe(refresh=True), wanted).changes
    with NftablesBackend(ns, syntax=syntax) as backend:  # the kept reads
        assert not plan(backend.observe(), wanted).changes
        assert not plan(backend.observe(refresh=True), wanted).changes


def test_a_refusal_as_too_large_names_the_roomiest_added_rule_measured_only_then(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # nft_rule_bytes ranks the added rules only when the kernel refuses one as too large:
    # summed on every add, it took 0.5 s of 10 000 added rules.
    measured: list[object] = []

    def counted(obj: NetObject, *, inet: bool = True) -> int:
        measured.append(obj)
        return nft_rule_bytes(obj, inet=inet)

    monkeypatch.setattr(batch_module, "nft_rule_bytes", counted)
    small = MasqueradeRule("10.42.0.0/16", exclude=_excluded(4, 25, 3))
    roomy = _rule(SHAPES[0], 31)
    batch = Batch("k3snet", "nft")
    batch.add_object("inet", small, 0)
    batch.add_object("inet", roomy, 1)
    batch.add_object("ip", small, 2)
    assert measured == []
    assert batch.too_roomy("Error: Could not process rule: Invalid argument") is None
    owner, why = batch.too_roomy("Error: Could not process rule: File too large") or (None, "")
    assert owner == 1
    assert roomy.brief() in why
    assert f"take {NFT_RULE_BYTES} bytes or more" in why
    assert Batch("k3snet", "nft").too_roomy("File too large") is None
