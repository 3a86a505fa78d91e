"""Named sets of addresses, and drops whose only tests k3snet does not model.

``ip daddr @blocked drop`` (nft's JSON writes the reference as ``"right": "@blocked"``)
was a test k3snet did not model, and a drop testing nothing else was passed over as
``ct state invalid drop`` is: the pods' connections dropped while ``plan`` said nothing.
A named set whose elements no packet can change is now listed and read as the anonymous
set of its elements, as the kernel matches it (intervals, ranges, IPv6, ``!=``); one that
may change with no commit (``dynamic``, ``timeout``; nft 1.0.6's JSON hides ``dynamic``
but lists a set a rule adds to with a ``size``) stays a reference. A drop or reject
whose tests k3snet does not model (``tcp dport 5432``, such a reference, a set of names
packets fill, once read as a device named ``@devs``) is a warning naming them, unless
one is a test no new pod connection passes (``ct state invalid``, a reverse path filter).
"""

from __future__ import annotations

import json
import shutil
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from k3snet.backends.nftables.kernel import (
    XT_NO_POD,
    _xt_dst_local,
    _xt_rh0,
    _xt_state_invalid,
)
from k3snet.backends.nftables.parse import ForeignReader
from k3snet.cli import main
from k3snet.lab import SeedLab
from k3snet.lab.netns import run_in
from k3snet.model import ForwardBlock, ForwardRule
from tests.nftables.test_foreign_cases import DROP, Expr, Kernel, jump
from tests.nftables.test_interface_blocks import _applied

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
PODS = ForwardRule("10.42.0.0/16", "192.168.2.0/24", out_interface="eth0")
PODS6 = ForwardRule("fd42:42::/56", "fd01:2::/64", out_interface="eth0")


class SetKernel(Kernel):
    """The fake kernel of ``test_foreign_cases`` with named sets of table ``inet fw``."""

    def __init__(self, chains: Any, sets: dict[str, dict[str, Any]]) -> None:
        super().__init__(chains)
        self.sets = sets
        self.set_listings = 0

    def list(self, kind: str, **ref: str) -> list[dict[str, Any]] | None:
        if kind != "set":
            return super().list(kind, **ref)
        self.set_listings += 1
        body = self.sets.get(ref["name"])
        return None if body is None else [{"set": {"family": "inet", "table": "fw",
                                                   "name": ref["name"], **body}}]


def match(op: str, left: dict[str, Any], right: Any) -> Expr:
    return {"match": {"op": op, "left": left, "right": right}}


def daddr(proto: str = "ip") -> dict[str, Any]:
    return {"payload": {"protocol": proto, "field": "daddr"}}


def fw(rules: list[list[Expr]], sets: dict[str, dict[str, Any]], *,
       below: list[list[Expr]] | None = None) -> SetKernel:
    chains: dict[Any, Any] = {("inet", "fw", "c"): ("forward", "accept", rules)}
    if below is not None:
        chains[("inet", "fw", "below")] = (None, "", below)
    return SetKernel(chains, sets)


def read(kernel: SetKernel) -> tuple[set[ForwardBlock], ForeignReader]:
    reader = ForeignReader(kernel, frozenset())
    found = {o for o in reader.read() if isinstance(o, ForwardBlock)}
    return found, reader


def warned(reader: ForeignReader, *rules: ForwardRule) -> list[str]:
    """The words of each default that may drop one of ``rules`` (the plan's warning)."""
    return ["; ".join(default.what) for default, _ in reader.defaults().unopened(list(rules))]


INTERVALS = {"type": "ipv4_addr", "flags": ["interval"], "elem": [
    {"prefix": {"addr": "10.30.0.0", "len": 16}},
    {"range": ["192.168.2.0", "192.168.2.255"]},
    {"elem": {"val": "198.51.100.7", "comment": "one host"}}]}


def test_a_drop_against_a_named_set_of_addresses_is_read_as_one_per_prefix_it_holds() -> None:
    kernel = fw([[match("==", daddr(), "@b"), DROP]], {"b": INTERVALS})
    found, _ = read(kernel)
    assert {str(b.destination) for b in found} == {"10.30.0.0/16", "192.168.2.0/24",
                                                   "198.51.100.7/32"}
    assert any(b.decides(PODS) for b in found)  # a conflict of the pods' rule
    assert kernel.set_listings == 1


def test_a_drop_against_a_named_set_of_ipv6_addresses_is_read_in_its_family() -> None:
    found, _ = read(fw([[match("==", daddr("ip6"), "@e"), DROP]],
                       {"e": {"type": "ipv6_addr", "elem": ["fd01:2::10"]}}))
    (block,) = found
    assert (block.family, str(block.destination)) == (6, "fd01:2::10/128")
    assert block.rule == "ip6 daddr fd01:2::10/128 drop"


def test_a_negated_named_set_is_read_as_its_exclusions() -> None:
    found, reader = read(fw([[match("!=", daddr(), "@b"), DROP]],
                            {"b": {"type": "ipv4_addr", "flags": ["interval"],
                                   "elem": [{"prefix": {"addr": "10.99.0.0", "len": 16}}]}}))
    assert found == set()
    (said,) = warned(reader, PODS)
    assert "testing ip daddr != 10.99.0.0/16 (handle 2)" in said
    assert warned(reader, PODS6) == []  # an ip test: IPv6 passes it


def test_an_empty_named_set_matches_nothing_and_its_negation_everything() -> None:
    empty = {"s": {"type": "ipv4_addr"}}
    found, reader = read(fw([[match("==", daddr(), "@s"), DROP]], empty))
    assert (found, warned(reader, PODS)) == (set(), [])
    found, reader = read(fw([[match("!=", daddr(), "@s"), DROP]], empty))
    assert found == set()
    assert warned(reader, PODS) == ["a rule that may drop any address (handle 2)"]


@pytest.mark.parametrize("body", [
    {"type": "ipv4_addr", "flags": ["timeout"], "timeout": 3600},
    {"type": "ipv4_addr", "flags": ["dynamic"], "elem": ["10.30.0.1"]},
    # a set a rule adds to (`add @s { ip daddr }`): nft 1.0.6 hides `dynamic`, not the size
    {"type": "ipv4_addr", "size": 65535, "elem": ["10.30.0.1"]},
    {"type": "ipv4_addr", "elem": [{"elem": {"val": "10.30.0.1", "timeout": 60}}],
     "timeout": 60},
    None,  # not listed
])
def test_a_named_set_packets_may_change_is_a_warning_naming_it_not_trusted(
        body: dict[str, Any] | None) -> None:
    found, reader = read(fw([[match("==", daddr(), "@s"), DROP]],
                            {} if body is None else {"s": body}))
    assert found == set()
    (said,) = warned(reader, PODS)
    assert "testing ip daddr @s (test k3snet does not model)" in said


def test_a_dynamic_set_of_names_is_no_device_name_but_a_warning() -> None:
    # It was read as a device named "@devs": a drop on any device but it, a conflict of
    # every rule, while the kernel's empty set dropped nothing.
    found, reader = read(fw([[match("==", {"meta": {"key": "oifname"}}, "@devs"), DROP]],
                            {"devs": {"type": "ifname", "size": 65535}}))
    assert found == set()
    (said,) = warned(reader, PODS)
    assert "testing oifname @devs (test k3snet does not model)" in said


@pytest.mark.parametrize(("expr", "words"), [
    ([match("==", {"payload": {"protocol": "tcp", "field": "dport"}}, 5432)], "tcp dport"),
    ([match("==", {"meta": {"key": "l4proto"}}, "tcp")], "meta l4proto"),
    ([match("==", {"concat": [daddr(), {"payload": {"protocol": "tcp", "field": "dport"}}]},
           "@svc")], "ip daddr . tcp dport @svc"),
    ([{"limit": {"rate": 10, "per": "second", "inv": True}}], "limit"),
])
def test_a_drop_whose_only_tests_k3snet_does_not_model_is_a_warning_naming_them(
        expr: list[Expr], words: str) -> None:
    found, reader = read(fw([[*expr, DROP]], {}))
    assert found == set()
    (said,) = warned(reader, PODS)
    assert f"testing {words} (test k3snet does not model) (handle 2)" in said


@pytest.mark.parametrize("expr", [
    [match("in", {"ct": {"key": "state"}}, "invalid")],
    [match("==", {"fib": {"result": "oif", "flags": ["saddr", "mark", "iif"]}}, False)],
    [match("in", {"ct": {"key": "state"}}, "invalid"),
     match("==", {"payload": {"protocol": "tcp", "field": "dport"}}, 5432)],
    # kube-proxy's reject of a node port without endpoints: the node's own address
    [match("==", {"fib": {"result": "type", "flags": ["daddr"]}}, "local"),
     match("==", {"payload": {"protocol": "tcp", "field": "dport"}}, 30080)],
    [{"xt": {"type": "match", "name": "addrtype", XT_NO_POD: True}}],
    [{"xt": {"type": "match", "name": "rt", XT_NO_POD: True}}],  # ufw's RH0 drop
])
def test_a_drop_testing_what_no_new_pod_connection_passes_is_still_passed_over(
        expr: list[Expr]) -> None:
    _, reader = read(fw([[*expr, DROP]], {}))
    assert warned(reader, PODS, PODS6) == []


def test_such_a_drop_in_a_chain_jumped_to_is_a_warning_too() -> None:
    port = match("==", {"payload": {"protocol": "tcp", "field": "dport"}}, 5432)
    _, reader = read(fw([[jump("below")]], {}, below=[[port, DROP]]))
    (said,) = warned(reader, PODS)
    assert said == ("a rule that may drop any address, testing tcp dport (test k3snet does "
                    "not model) (handle 2 of chain below)")


# Each case: the sets, the rule of a forward chain (policy accept) of `table inet fw`;
# whether the kernel drops the pod's IPv4 and IPv6 connections to the database, and what
# `plan` says (4: a conflict, "warning": a warning of that chain, 0: nothing).
CASES: dict[str, tuple[str, str, tuple[bool, bool], int | str]] = {
    "an interval set holding the database": (
        "set b { type ipv4_addr; flags interval; elements = { 10.30.0.0/16, "
        "192.168.0.0/16 }; }", "ip daddr @b drop", (True, False), 4),
    "a range holding the database's address": (
        "set b { type ipv4_addr; flags interval; elements = { 192.168.2.1-192.168.2.99 }; }",
        "ip daddr @b reject", (True, False), 4),
    "a set not holding it": (
        "set b { type ipv4_addr; flags interval; elements = { 10.30.0.0/16 }; }",
        "ip daddr @b drop", (False, False), 0),
    "an IPv6 set holding it": (
        "set e { type ipv6_addr; elements = { fd01:2::10 }; }", "ip6 daddr @e drop",
        (False, True), 4),
    "a negated set not holding it": (
        "set b { type ipv4_addr; flags interval; elements = { 10.30.0.0/16 }; }",
        "ip daddr != @b drop", (True, False), "warning"),
    "a set packets fill, empty now": (
        "set d { type ipv4_addr; flags dynamic,timeout; timeout 1h; }",
        "ip daddr @d drop", (False, False), "warning"),
    "a set of names packets fill, empty now": (
        "set n { type ifname; flags dynamic; size 1024; }", "oifname @n drop",
        (False, False), "warning"),
    "the database's port": ("", "tcp dport 5432 drop", (True, True), "warning"),
    "TCP": ("", "meta l4proto tcp drop", (True, True), "warning"),
    "invalid packets": ("", "ct state invalid drop", (False, False), 0),
}


def said_where_dropped(lab: SeedLab, sets: str, rule: str,
                       capsys: pytest.CaptureFixture[str]
                       ) -> tuple[list[dict[str, Any]], tuple[bool, bool], int | str]:
    """Put ``rule`` (beside ``sets``) in a forward chain of table ``inet fw`` on the lab's
    node, then take it away: the kernel's listing of that table's rules, whether each
    family's connection to the database was dropped, and what ``plan`` said (its exit
    code, or ``"warning"`` for a 0 with a warning naming the chain)."""
    run_in(lab.node, ["nft", "-f", "-"], input_text=(
        f"table inet fw {{ {sets}\n chain c {{ type filter hook forward priority 0; "
        f"policy accept; {rule}; }}\n}}\n"))
    try:
        listed = json.loads(run_in(lab.node, ["nft", "-j", "list", "ruleset"]).stdout)
        rules = [o["rule"] for o in listed["nftables"]
                 if "rule" in o and o["rule"]["table"] == "fw"]
        with ThreadPoolExecutor(2) as pool:
            probes = [pool.submit(lab.tcp_probe, f, timeout=1.0) for f in (4, 6)]
            dropped = (not probes[0].result().ok, not probes[1].result().ok)
        capsys.readouterr()
        code = main(["plan", "-f", str(SEED), "--netns", lab.node])
        out = capsys.readouterr().out
    finally:
        run_in(lab.node, ["nft", "delete", "table", "inet", "fw"])
    warning = any(line.startswith("!! warning: nftables: inet fw chain c")
                  for line in out.splitlines())
    assert code in (0, 4), (rule, out)
    return rules, dropped, code if code or not warning else "warning"


@pytest.mark.kernel
@pytest.mark.lab
def test_named_sets_and_unmodelled_drops_are_said_exactly_where_the_kernel_drops(
        require_root: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    seen: dict[str, tuple[tuple[bool, bool], int | str]] = {}
    with SeedLab.create() as lab:
        monkeypatch.setenv("K3SNET_STATE_DIR", str(lab.state_dir))
        _applied(lab)
        for case, (sets, rule, *_) in CASES.items():
            rules, dropped, said = said_where_dropped(lab, sets, rule, capsys)
            assert len(rules) == 1, rules  # the kernel's view: the one rule
            seen[case] = (dropped, said)
    assert seen == {case: (dropped, said) for case, (_, _, dropped, said) in CASES.items()}


def _conntrack_info(revision: int, state: int, *, flags: int = 1, invert: int = 0) -> bytes:
    """An xt ``conntrack`` match's data as the kernel holds it (xt_conntrack_mtinfo1-3)."""
    head = bytes(146) + struct.pack("=HH", flags, invert)
    tail = bytes([state, 0]) if revision == 1 else struct.pack("=HH", state, 0)
    return head + tail + bytes(16 if revision == 3 else 0)


@pytest.mark.parametrize(("revision", "state", "flags", "invert", "invalid"), [
    (3, 1, 1, 0, True),  # --ctstate INVALID (iptables-nft 1.8's revision)
    (1, 1, 1, 0, True),
    (2, 1, 1, 0, True),
    (3, 8, 1, 0, False),  # NEW: every new pod connection passes it
    (3, 1 | 8, 1, 0, False),  # INVALID,NEW
    (3, 1, 1, 1, False),  # ! --ctstate INVALID
    (3, 1, 0, 0, False),  # no state test at all
    (0, 1, 1, 0, False),  # a revision whose layout k3snet does not read
])
def test_only_an_xt_conntrack_testing_invalid_alone_is_read_as_invalid(
        revision: int, state: int, flags: int, invert: int, invalid: bool) -> None:
    info = _conntrack_info(revision, state, flags=flags, invert=invert)
    assert _xt_state_invalid(revision, info) is invalid


@pytest.mark.parametrize(("revision", "info", "local"), [
    (1, struct.pack("=HHI", 0, 1 << 2, 0), True),  # --dst-type LOCAL (kube-proxy's)
    (1, struct.pack("=HHI", 1 << 2, 1 << 2, 0), True),  # and a local source too
    (1, struct.pack("=HHI", 0, 1 << 2, 2), False),  # ! --dst-type LOCAL
    (1, struct.pack("=HHI", 0, 1 << 1, 0), False),  # --dst-type UNICAST
    (1, struct.pack("=HHI", 1 << 2, 0, 0), False),  # --src-type LOCAL: the node's own
    (0, struct.pack("=HHII", 0, 1 << 2, 0, 0), True),
    (0, struct.pack("=HHII", 0, 1 << 2, 0, 1), False),
])
def test_only_an_xt_addrtype_testing_a_local_destination_is_read_as_one(
        revision: int, info: bytes, local: bool) -> None:
    assert _xt_dst_local(revision, info) is local


@pytest.mark.parametrize(("revision", "kind", "flags", "invflags", "rh0"), [
    (0, 0, 1, 0, True),  # --rt-type 0 (ufw's before6.rules)
    (0, 2, 1, 0, False),  # --rt-type 2: mobile IPv6's
    (0, 0, 1, 1, False),  # ! --rt-type 0
    (0, 0, 0, 0, False),  # no type tested
    (1, 0, 1, 0, False),  # a revision whose layout k3snet does not read
])
def test_only_an_xt_rt_testing_routing_header_type_0_is_read_as_one(
        revision: int, kind: int, flags: int, invflags: int, rh0: bool) -> None:
    info = struct.pack("=IIII", kind, 0, 0xFFFFFFFF, 0) + bytes([flags, invflags]) + bytes(262)
    assert _xt_rh0(revision, info) is rh0


def test_an_xt_conntrack_drop_the_kernel_says_tests_invalid_is_passed_over() -> None:
    conntrack: dict[str, Any] = {"xt": {"type": "match", "name": "conntrack"}}
    _, reader = read(fw([[conntrack, DROP]], {}))
    (said,) = warned(reader, PODS)  # the state not known: it may be NEW
    assert "testing xt match conntrack (test k3snet does not model)" in said
    invalid = {"xt": {**conntrack["xt"], XT_NO_POD: True}}
    _, reader = read(fw([[invalid, DROP]], {}))
    assert warned(reader, PODS, PODS6) == []


# kube-proxy's iptables mode and flannel on a K3s node, through iptables-nft (FORWARD's
# policy accept): iptables-nft writes `--ctstate INVALID` and `--dst-type LOCAL` as
# compat matches, which libnftables lists by their names only.
K3S_FORWARD = "\n".join([
    "*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
    ":KUBE-FORWARD - [0:0]", ":FLANNEL-FWD - [0:0]", ":KUBE-EXTERNAL-SERVICES - [0:0]",
    "-A FORWARD -m conntrack --ctstate NEW -j KUBE-EXTERNAL-SERVICES",
    '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
    '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD',
    "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
    # a node port without endpoints
    '-A KUBE-EXTERNAL-SERVICES -p tcp -m comment --comment "default/web:http has no '
    'endpoints" -m addrtype --dst-type LOCAL -m tcp --dport 30080 -j REJECT',
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" '
    "-m mark --mark 0x4000/0x4000 -j ACCEPT",
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" '
    "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    '-A FLANNEL-FWD -s 10.42.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
    '-A FLANNEL-FWD -d 10.42.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
    "COMMIT", ""])


UFW6_FORWARD = "\n".join([
    "*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
    ":ufw6-before-forward - [0:0]", "-A FORWARD -j ufw6-before-forward",
    "-A ufw6-before-forward -m rt --rt-type 0 -j DROP",
    "-A ufw6-before-forward -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    "COMMIT", ""])


@pytest.mark.kernel
@pytest.mark.lab
def test_kube_proxy_and_ufw_drops_no_new_pod_connection_meets_are_no_warning(
        require_root: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("iptables-nft-restore") is None:
        pytest.skip("iptables-nft-restore is not installed")
    said: dict[str, bool] = {}
    with SeedLab.create() as lab:
        monkeypatch.setenv("K3SNET_STATE_DIR", str(lab.state_dir))
        _applied(lab)
        for state in ("INVALID", "NEW"):
            run_in(lab.node, ["iptables-nft-restore"],
                   input_text=K3S_FORWARD.replace("--ctstate INVALID", f"--ctstate {state}"))
            listed = json.loads(run_in(lab.node, ["nft", "-j", "list", "chain", "ip",
                                                  "filter", "KUBE-FORWARD"]).stdout)
            (first, *_) = [o["rule"] for o in listed["nftables"] if "rule" in o]
            # The kernel's view: a compat match libnftables names, no more.
            assert {"xt": {"type": "match", "name": "conntrack"}} in first["expr"]
            capsys.readouterr()
            assert main(["plan", "-f", str(SEED), "--netns", lab.node]) == 0
            said[state] = any(line.startswith("!! warning: nftables: ip filter chain FORWARD")
                              for line in capsys.readouterr().out.splitlines())
        # ufw's IPv6 forward chain: a drop of routing header type 0, before its accepts
        run_in(lab.node, ["ip6tables-nft-restore"], input_text=UFW6_FORWARD)
        capsys.readouterr()
        assert main(["plan", "-f", str(SEED), "--netns", lab.node]) == 0
        said["RH0"] = any(line.startswith("!! warning: nftables: ip6 filter chain FORWARD")
                          for line in capsys.readouterr().out.splitlines())
    assert said == {"INVALID": False, "NEW": True, "RH0": False}


def test_a_warning_names_no_drop_that_meets_no_new_pod_connection() -> None:
    # kube-proxy's `KUBE-FORWARD` INVALID drop beside another chain's port drop: the
    # warning (of the port) named the INVALID drop too, as "a rule that may drop any
    # address", in the base chain and in a chain it jumps to.
    invalid = match("in", {"ct": {"key": "state"}}, "invalid")
    port = match("==", {"payload": {"protocol": "tcp", "field": "dport"}}, 5432)
    _, reader = read(fw([[invalid, DROP], [jump("below")]], {},
                        below=[[invalid, DROP], [port, DROP]]))
    (said,) = warned(reader, PODS)
    assert said == ("a rule that may drop any address, testing tcp dport (test k3snet does "
                    "not model) (handle 3 of chain below)")
