"""iptables-nft's compat statements as libnftables before 1.0.6 lists them: ``{"xt": null}``.

libnftables 0.9.8 to 1.0.5 (Debian 11: 0.9.8, Ubuntu 22.04: 1.0.2, RHEL 9 before 9.4:
1.0.4) print every compat expression in JSON as ``{"xt": null}`` (nftables' ``src/json.c``,
``stmt_print_json``: "Can't be supported at this point"); 1.0.6 (commit 79195a8c, "xt:
Rewrite unsupported compat expression dumping") prints ``{"xt": {"type": "target",
"name": "REJECT"}}``, which is all the reader ever took. On the older ones an
iptables-nft ``-j REJECT`` read as a test k3snet does not know, with no verdict: a
reject of the pods' traffic before k3snet's accept was no block (no conflict, no
warning), and flannel's ``-j MASQUERADE`` met nothing. The kernel's rule names every
compat expression; :func:`~k3snet.backends.nftables.kernel.name_xt` gives the listing
those names, in the rule's order.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.netns import NetnsRunner
from k3snet.backends.nftables import NftablesBackend
from k3snet.backends.nftables.kernel import Libnftables, name_xt
from k3snet.backends.nftables.parse import ForeignReader
from k3snet.errors import BackendError
from k3snet.lab.netns import run_in
from k3snet.model import ForwardBlock, ForwardRule, MasqueradeRule, State
from k3snet.planner import plan
from tests.nftables.test_foreign_cases import Kernel, daddr, forward, saddr

POD = "10.42.0.0/16"
DB = "192.168.2.0/24"
NULL: dict[str, Any] = {"xt": None}


def _xt(kind: str, name: str) -> dict[str, Any]:
    return {"xt": {"type": kind, "name": name}}


# A reject of the pods' destination before an accept of it (iptables-nft's ``-j REJECT``
# under a comment), as libnftables 1.0.6 lists it.
HELD = [("match", "comment"), ("target", "REJECT")]
WHERE = ("inet", "fw0", "forward")


def _kernel(*, named: bool) -> Kernel:
    xts = [_xt(*compat) if named else dict(NULL) for compat in HELD]
    return forward(("accept", [[daddr(DB), *xts], [saddr(POD), daddr(DB), {"accept": None}]]))


def _blocks(kernel: Kernel) -> set[str]:
    return {b.describe() for b in ForeignReader(kernel, frozenset()).read()
            if isinstance(b, ForwardBlock)}


def _listing(kernel: Kernel) -> list[dict[str, Any]]:
    """The chain's listing (its statements are the kernel's: naming them names those)."""
    items = kernel.list("chain", family=WHERE[0], table=WHERE[1], name=WHERE[2])
    assert items is not None
    return items


def test_a_reject_listed_as_an_unnamed_xt_is_named_from_the_kernel_and_a_block() -> None:
    expected = _blocks(_kernel(named=True))
    assert expected == {f"drop by nftables inet fw0 forward: ip daddr {DB} drop"}
    old = _kernel(named=False)
    assert _blocks(old) == set()  # as it was read: no block
    asked: list[tuple[str, str, str, set[int]]] = []

    def expressions(family: str, table: str, chain: str,
                    handles: Collection[int]) -> Mapping[int, Sequence[tuple[str, str]]]:
        asked.append((family, table, chain, set(handles)))
        return {2: HELD}  # the first rule's handle (the fake numbers them from 2)

    name_xt(_listing(old), expressions)
    assert _blocks(old) == expected
    assert asked == [(*WHERE, {2})]  # only the rules with an unnamed xt are asked for


def test_a_rule_whose_compat_expressions_changed_since_its_listing_stays_as_listed() -> None:
    old = _kernel(named=False)
    # The kernel holds one compat expression where the listing had two: not this rule.
    name_xt(_listing(old), lambda *_: {2: [("target", "REJECT")]})
    assert old.chains[WHERE][2][0][1:] == [NULL, NULL]

    def refused(*_: object) -> Mapping[int, Sequence[tuple[str, str]]]:
        raise BackendError("the chain is gone")

    name_xt(_listing(old), refused)  # not read: the statements stay as listed
    assert old.chains[WHERE][2][0][1:] == [NULL, NULL]
    assert _blocks(old) == set()


_METAINFO_VERSION = re.compile(r'"metainfo":\s*\{"version":\s*"[^"]*"')
_NAMED_XT = re.compile(r'\{"xt":\s*\{"type":\s*"(match|target|watcher)",\s*"name":\s*"[^"]*"\}\}')


@pytest.mark.kernel
def test_iptables_nft_rules_read_the_same_through_a_libnftables_before_106(
        ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """flannel's masquerade and an administrator's reject, written by iptables-nft, read
    as libnftables 1.0.6 lists them and as 0.9.8 to 1.0.5 do (each ``xt`` ``null``):
    the same foreign state, the masquerade and the reject among it."""
    run_in(ns, ["iptables-nft", "-w", "-t", "nat", "-A", "POSTROUTING", "-s", POD, "!", "-d",
                POD, "-m", "comment", "--comment", "flanneld masq", "-j", "MASQUERADE",
                "--random-fully"])
    run_in(ns, ["iptables-nft", "-w", "-A", "FORWARD", "-d", DB, "-m", "comment",
                "--comment", "no database", "-j", "REJECT"])
    run_in(ns, ["iptables-nft", "-w", "-A", "FORWARD", "-s", POD, "-j", "ACCEPT"])
    with NftablesBackend(ns) as backend:
        now = backend.observe().foreign
    # (the xt target's --random-fully is not listed: read as without it, as always)
    assert MasqueradeRule(POD, exclude=[POD]) in now
    assert {b.describe() for b in now if isinstance(b, ForwardBlock)} == {
        f"drop by nftables ip filter FORWARD: ip daddr {DB} drop"}

    unnamed = _list_as_before_106(monkeypatch)
    with NftablesBackend(ns) as backend:
        before = backend.observe().foreign
    assert unnamed["count"] >= 4  # the comments, the masquerade, the reject were unnamed
    assert before == now


def _list_as_before_106(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Every listing from now on as libnftables 0.9.8 to 1.0.5 print it (each ``xt``
    statement ``null``, the metainfo's version 1.0.5); how many statements were
    unnamed so, under ``"count"``."""
    real = Libnftables._cmd
    unnamed = {"count": 0}

    def before_106(self: Libnftables, command: str) -> tuple[int, str, str]:
        rc, output, error = real(self, command)
        output = _METAINFO_VERSION.sub('"metainfo": {"version": "1.0.5"', output, count=1)
        output, count = _NAMED_XT.subn('{"xt": null}', output)
        unnamed["count"] += count
        return rc, output, error

    monkeypatch.setattr(Libnftables, "_cmd", before_106)
    return unnamed


@pytest.mark.kernel
def test_the_iptables_backends_chains_are_its_own_through_a_libnftables_before_106(
        ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The iptables backend's chains through iptables-nft (a node moved to the nftables
    backend): its jumps (``-m comment --comment k3snet``, an ``xt`` match) are its own, so
    its chains meet nothing of the spec and are the warning naming ``k3snet destroy``, as
    with libnftables 1.0.6 (tests/nftables/test_left_iptables.py)."""
    for tool in ("iptables-nft-restore", "iptables-nft-save", "ip6tables-nft-restore"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    wanted = State(owned=[MasqueradeRule(POD, destination=DB), ForwardRule(POD, DB)])
    with IptablesBackend(ns, mode="nft") as old:
        old.apply(plan(old.observe(), wanted))
    with NftablesBackend(ns) as backend:
        backend.observe()
        now = [w for w in backend.warnings if "chains k3snet's iptables backend wrote" in w]
    assert len(now) == 1
    unnamed = _list_as_before_106(monkeypatch)
    with NftablesBackend(ns) as backend:
        observed = backend.observe()
        before = [w for w in backend.warnings if "chains k3snet's iptables backend wrote" in w]
    assert unnamed["count"] > 0
    assert before == now
    assert not any(isinstance(o, MasqueradeRule | ForwardRule) for o in observed.foreign)


def test_the_listing_json_form_matched_is_libnftables() -> None:
    """The shape the kernel test rewrites is the one libnftables 1.0.6 prints."""
    assert _NAMED_XT.fullmatch(json.dumps(_xt("target", "REJECT"))) is not None


def _listed(version: str | None, target: str = "CT") -> str:
    """A chain's JSON listing as libnftables ``version`` prints it: one rule, ``-j TARGET``
    with a comment, both compat statements unnamed."""
    meta = [{"metainfo": {"version": version, "json_schema_version": 1}}] if version else []
    return json.dumps({"nftables": [*meta, {"rule": {
        "family": "ip", "table": "raw", "chain": "PREROUTING", "handle": 7,
        "expr": [{"xt": None}, {"counter": {"packets": 0, "bytes": 0}}, {"xt": None}]}}]})


def _offline(monkeypatch: pytest.MonkeyPatch, output: str) -> tuple[Libnftables, list[object]]:
    """A :class:`Libnftables` answering every command with ``output``, its kernel reads
    recorded (``("GETRULE", handles)``, ``("xt data", names)``), no netlink socket."""
    kernel = Libnftables.__new__(Libnftables)
    kernel.calls = 0
    asked: list[object] = []

    def expressions(family: str, table: str, chain: str,
                    handles: Collection[int]) -> Mapping[int, Sequence[tuple[str, str]]]:
        asked.append(("GETRULE", sorted(handles)))
        return {7: [("match", "comment"), ("target", "CT")]}

    def xt_data(items: list[dict[str, Any]]) -> None:
        asked.append(("xt data", [s["xt"]["name"] for item in items if "rule" in item
                                  for s in item["rule"]["expr"] if s.get("xt")]))

    monkeypatch.setattr(kernel, "_cmd", lambda command: (0, output, ""), raising=False)
    monkeypatch.setattr(kernel, "_refuse_unprintable", lambda kind, ref: None, raising=False)
    monkeypatch.setattr(kernel, "_xt_expressions", expressions, raising=False)
    monkeypatch.setattr(kernel, "_xt_data", xt_data, raising=False)
    return kernel, asked


@pytest.mark.parametrize("version", ["0.9.8", "1.0.5", None])
def test_an_unnamed_ct_target_is_named_and_its_flags_read_before_106(
        monkeypatch: pytest.MonkeyPatch, version: str | None) -> None:
    """libnftables before 1.0.6 (or one that says no version): the rule's statements are
    named from the kernel, and the ``-j CT`` among them gets its flags read, as 1.0.6's."""
    kernel, asked = _offline(monkeypatch, _listed(version))
    items = kernel.list("chain", family="ip", table="raw", name="PREROUTING")
    assert items is not None
    assert items[-1]["rule"]["expr"][0] == _xt("match", "comment")
    assert asked == [("GETRULE", [7]), ("xt data", ["comment", "CT"])]


@pytest.mark.parametrize("version", ["1.0.6", "1.0.10", "1.1.1"])
def test_a_listing_of_libnftables_106_or_later_is_not_scanned_for_unnamed_xt(
        monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    """1.0.6 and later name every compat statement: their listings are not searched for
    ``{"xt": null}`` (a scan of every chain's text) nor any rule asked for."""
    kernel, asked = _offline(monkeypatch, _listed(version))
    items = kernel.list("chain", family="ip", table="raw", name="PREROUTING")
    assert items is not None
    assert items[-1]["rule"]["expr"][0] == NULL
    assert asked == []


_CHAINS = (("filter", "FORWARD"), ("raw", "PREROUTING"), ("nat", "POSTROUTING"))


def _listings() -> list[list[dict[str, Any]]]:
    """The chains of :data:`_CHAINS` as :class:`Libnftables` lists them, metainfo aside."""
    kernel = Libnftables()
    try:
        listed = [kernel.list("chain", family="ip", table=table, name=chain)
                  for table, chain in _CHAINS]
    finally:
        kernel.close()
    return [[item for item in items or () if "metainfo" not in item] for items in listed]


@pytest.mark.kernel
def test_the_kernels_names_are_given_in_each_rules_order_as_106_lists_them(
        ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several compat matches and a target in one rule, a match with a verdict, a ``-j
    CT`` (whose flags are read once it is named): the listing named from the kernel is
    1.0.6's, statement for statement (a reversed order read as well before)."""
    for rule in (["-A", "FORWARD", "-d", DB, "-m", "comment", "--comment", "no db", "-m",
                  "conntrack", "--ctstate", "NEW", "-m", "mark", "--mark", "0x1", "-j",
                  "REJECT"],
                 ["-A", "FORWARD", "-s", POD, "-m", "conntrack", "--ctstate",
                  "RELATED,ESTABLISHED", "-j", "ACCEPT"],
                 ["-t", "raw", "-A", "PREROUTING", "-s", POD, "-m", "comment", "--comment",
                  "x", "-j", "CT", "--notrack"],
                 ["-t", "nat", "-A", "POSTROUTING", "-s", POD, "-m", "comment", "--comment",
                  "flanneld masq", "-j", "MASQUERADE", "--random-fully"]):
        run_in(ns, ["iptables-nft", "-w", *rule])
    with NetnsRunner(ns) as runner:
        now = runner.call(_listings)
        unnamed = _list_as_before_106(monkeypatch)
        before = runner.call(_listings)
    assert unnamed["count"] >= 8
    assert before == now
