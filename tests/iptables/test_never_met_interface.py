"""iptables-legacy's ``! -i +`` (``! -o +``): a match no packet passes, which its save hides.

``+`` matches every interface name (an empty mask), so ``! -i +`` matches none: the
kernel's ``ip_packet_match`` compares the masked name, equal, then inverts. But
``iptables-legacy-save`` prints an interface only when its mask holds a byte, so
``-A FORWARD ! -i + -j DROP`` is printed ``-A FORWARD -j DROP``: read so, a drop of
every packet before k3snet's jump, a conflict of every forward rule (exit 4), while the
pods' packets passed. The kernel's entries (read as the change token reads them) now
put the hidden match back, and the rule reads as what it is: a drop of nothing.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.iptables.xtables import never_met
from k3snet.backends.netns import NetnsRunner
from k3snet.lab.netns import run_in
from k3snet.planner import plan
from tests.iptables.test_docker import _desired

NEVER = (("FORWARD", "!", "-i", "+"), ("FORWARD", "!", "-o", "+"),
         ("FORWARD", "!", "-i", "+", "!", "-o", "+"))


def _tool(family: int) -> str:
    return f"{'ip' if family == 4 else 'ip6'}tables-legacy"


@pytest.mark.kernel
def test_the_kernels_entries_name_the_rules_whose_negated_interface_no_packet_passes(
        ns: str) -> None:
    for family in (4, 6):
        for rule in (["-N", "X"], ["-A", "X", "-j", "RETURN"],
                     ["-A", "X", "!", "-o", "+", "-j", "DROP"],
                     ["-A", "X", "!", "-o", "eth+", "-j", "DROP"],  # a name: printed
                     *(["-A", *spec, "-j", "DROP"] for spec in NEVER),
                     ["-A", "FORWARD", "-i", "+", "-j", "DROP"]):  # every packet: right
            run_in(ns, [_tool(family), "-w", *rule])
    # The kernel's view: the save hides the match, the listing shows it.
    save = run_in(ns, ["iptables-legacy-save", "-t", "filter"]).stdout.splitlines()
    assert [line for line in save if line.startswith("-A FORWARD")] == [
        "-A FORWARD -j DROP"] * 4
    listing = run_in(ns, ["iptables-legacy", "-L", "FORWARD", "-v", "-n"]).stdout
    assert listing.count("!+") == 4  # in: !+, out: !+, both: !+ !+
    runner = NetnsRunner(ns)
    try:
        found = {family: runner.call(lambda f=family: never_met(f)) for family in (4, 6)}  # type: ignore[misc]
    finally:
        runner.close()
    expected = {"filter": {"FORWARD": (4, {0: "! -i +", 1: "! -o +", 2: "! -i + ! -o +"}),
                           "X": (3, {1: "! -o +"})}}
    assert found == {4: expected, 6: expected}


@pytest.mark.kernel
@pytest.mark.lab
def test_a_drop_behind_a_negated_plus_before_k3snets_jump_is_no_conflict_and_passes(
        require_root: None) -> None:
    from k3snet.lab import SeedLab  # noqa: PLC0415

    with SeedLab.create() as lab:
        run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
                          "net.ipv6.conf.all.forwarding=1"])
        with IptablesBackend(lab.node, mode="legacy") as backend:
            backend.apply(plan(backend.observe(), _desired()))
            for family in (4, 6):
                for spec in NEVER:
                    run_in(lab.node, [_tool(family), "-w", "-I", spec[0], "1", *spec[1:],
                                      "-j", "DROP"])
            with ThreadPoolExecutor(2) as pool:  # real packets: the drops meet none
                probes = [pool.submit(lab.tcp_probe, f, timeout=2.0) for f in (4, 6)]
                assert [p.result().ok for p in probes] == [True, True]
            after = plan(backend.observe(), _desired())
            assert not after.conflicts, after.render()
            assert after.changes == ()
            # `-i +` (no `!`): every packet, dropped, and said so (the same printed line)
            for family in (4, 6):
                run_in(lab.node, [_tool(family), "-w", "-I", "FORWARD", "1", "-i", "+",
                                  "-j", "DROP"])
            with ThreadPoolExecutor(2) as pool:
                probes = [pool.submit(lab.tcp_probe, f, timeout=1.0) for f in (4, 6)]
                assert [p.result().ok for p in probes] == [False, False]
            blocked = plan(backend.observe(), _desired())
            assert {(n.wanted.family, getattr(n.foreign, "rule", None))
                    for n in blocked.conflicts} == {(4, "-A FORWARD -j DROP"),
                                                    (6, "-A FORWARD -j DROP")}


@pytest.mark.kernel
def test_a_negated_plus_the_save_prints_is_not_put_back_a_second_time(
        ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """iptables 1.8.11 and later print ``! -i +`` (upstream "xshared: Do not omit
    all-wildcard interface spec when inverted"); the kernel's entries still name the
    rule, and putting the match back again made ``! -i + ! -i + -j DROP``, a rule
    iptables refuses ("multiple -i flags not allowed") shown as the foreign one. The
    newer save is this host's save with the match printed."""
    from k3snet.backends.iptables.save import parse_save as parse  # noqa: PLC0415

    for rule in (["!", "-i", "+", "-j", "DROP"], ["!", "-o", "+", "-j", "DROP"],
                 ["-s", "10.9.0.0/16", "!", "-i", "+", "!", "-o", "+", "-j", "ACCEPT"]):
        run_in(ns, [_tool(4), "-w", "-A", "FORWARD", *rule])
    newer = {"-A FORWARD -j DROP": "-A FORWARD ! -i + -j DROP",
             "-A FORWARD -s 10.9.0.0/16 -j ACCEPT":
                 "-A FORWARD -s 10.9.0.0/16 ! -i + ! -o + -j ACCEPT"}

    def printed(text: str) -> object:
        lines = text.splitlines()
        drops = [at for at, line in enumerate(lines) if line == "-A FORWARD -j DROP"]
        lines[drops[1]] = "-A FORWARD ! -o + -j DROP"
        return parse("\n".join(newer.get(line, line) for line in lines))

    monkeypatch.setattr("k3snet.backends.iptables.backend.parse_save", printed)
    with IptablesBackend(ns, mode="legacy") as backend:
        rules = backend._save(4)["filter"].rules["FORWARD"]
    assert rules == ["! -i + -j DROP", "! -o + -j DROP",
                     "-s 10.9.0.0/16 ! -i + ! -o + -j ACCEPT"]


@pytest.mark.kernel
def test_a_table_whose_negated_interfaces_all_name_a_device_is_not_walked(
        ns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Docker's ``! -o docker0`` (a name: the mask holds bytes) is no ``! -o +``: only an
    inverted test with an empty mask makes the table walked entry by entry (about 90 ms
    of Python at 10 000 rules, on every save of a legacy host running Docker)."""
    import socket  # noqa: PLC0415

    from k3snet.backends.iptables import xtables  # noqa: PLC0415

    for family in (4, 6):
        run_in(ns, [_tool(family), "-w", "-A", "FORWARD", "-i", "docker0", "!", "-o",
                    "docker0", "-j", "ACCEPT"])
        run_in(ns, [_tool(family), "-w", "-A", "FORWARD", "!", "-i", "eth+", "-j", "DROP"])

    def read(family: int) -> tuple[bytes, bytearray, xtables.Layout]:
        layout = next(layout for layout in xtables.LAYOUTS if layout.family == family)
        with socket.socket(layout.af, socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
            return (*xtables.fetch_table(sock, layout, "filter"), layout)

    runner = NetnsRunner(ns)
    try:
        tables = [runner.call(partial(read, family)) for family in (4, 6)]
    finally:
        runner.close()

    def walked(info: bytes) -> object:
        raise AssertionError("walked")

    monkeypatch.setattr(xtables, "info_hooks", walked)
    assert [xtables.never_met_in(*table) for table in tables] == [{}, {}]


@pytest.mark.kernel
def test_a_save_that_holds_no_rule_starts_no_entries_reader(ns: str) -> None:
    """Reading the kernel's entries for a hidden ``! -i +`` started a thread in the
    namespace and copied the tables out of the kernel on every cold legacy observe (3-17
    ms): not when the save holds no rule to put one back in."""
    import re  # noqa: PLC0415

    run_in(ns, [_tool(4), "-w", "-N", "X"])
    with IptablesBackend(ns, mode="legacy") as backend:  # a chain, no rule
        assert backend._save(4)["filter"].rules["X"] == []
        assert backend._entries_reader is None
    run_in(ns, [_tool(4), "-w", "-A", "FORWARD", "!", "-i", "+", "-j", "DROP"])
    with IptablesBackend(ns, mode="legacy") as backend:  # this host's save hides it
        assert backend._save(4)["filter"].rules["FORWARD"] == ["! -i + -j DROP"]
        assert backend._entries_reader is not None
        assert re.match(r"# Generated by iptables-save v1\.8\.([0-9]|10) ",
                        backend._kernel.save(4, "legacy") or "")


# python-iptables' ``Rule.in_interface = "!+"`` (``Rule6`` alike): the name without its
# ``+`` (empty), an empty mask, IPT_INV_VIA_IN. iptables' own parser keeps the ``+``.
_EMPTY_NAME_NEGATED = """
import sys
import iptc
table, rule = ((iptc.Table(iptc.Table.FILTER), iptc.Rule()) if sys.argv[1] == "4"
               else (iptc.Table6(iptc.Table6.FILTER), iptc.Rule6()))
rule.in_interface = "!+"
rule.target = iptc.Target(rule, "DROP")
iptc.Chain(table, "FORWARD").insert_rule(rule)  # first: before k3snet's jump
"""

# A save tool of iptables 1.8.11 and later, made of this host's: their legacy save prints
# an inverted interface named "+" ("xshared: Do not omit all-wildcard interface spec when
# inverted") but, as every version, no interface whose name is empty (save_iface), so
# for the rules above it prints what this host's does.
_NEWER_SAVE = """#!/bin/sh
out=$({real} "$@") || exit $?
printf '%s\\n' "$out" | sed 's/-save v[0-9.]* /-save v1.8.11 /'
"""


@pytest.mark.kernel
def test_a_save_of_iptables_1_8_11_still_has_a_negated_empty_name_put_back(
        ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save headed ``iptables-save v1.8.11`` (or later) was taken to print every
    ``! -i +``, and the kernel's entries were not read: but a rule written through
    libiptc with an empty name and an empty mask (python-iptables' ``"!+"``), which no
    packet passes, is printed as nothing by that release too, so ``! -i + -j DROP`` read
    ``-j DROP`` again, a drop of every packet, a conflict of every forward rule (exit 4)
    while the pods' packets passed."""
    import shutil  # noqa: PLC0415
    import sys  # noqa: PLC0415

    pytest.importorskip("iptc")
    with IptablesBackend(ns, mode="legacy") as backend:
        backend.apply(plan(backend.observe(), _desired()))
    for family in (4, 6):
        run_in(ns, [sys.executable, "-c", _EMPTY_NAME_NEGATED, str(family)], timeout=120)
        name = f"{'ip' if family == 4 else 'ip6'}tables-legacy-save"
        real = shutil.which(name)
        assert real is not None
        tool = tmp_path / name
        tool.write_text(_NEWER_SAVE.format(real=real))
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with IptablesBackend(ns, mode="legacy") as backend:
        for family in (4, 6):
            text = backend._kernel.save(family, "legacy") or ""
            assert text.startswith(f"# Generated by {'ip' if family == 4 else 'ip6'}"
                                   "tables-save v1.8.11 "), text
            assert "-A FORWARD -j DROP" in text
            assert backend._save(family)["filter"].rules["FORWARD"][0] == "! -i + -j DROP"
        after = plan(backend.observe(), _desired())
    assert not after.conflicts, after.render()
    assert after.changes == ()
