"""The family's tables read one by one after a save that stopped (``Processes.save_apart``).

Read alone, a table whose read failed for another reason than the stop (nothing of it
printed: a transient nf_tables error, a tool killed) was left out without a word, as if
the table were not there; iptables-nft-save asked for a table nf_tables does not hold
prints its built-in chains and succeeds, so "not there" was never what it meant.
iptables-legacy-save asked for one table (``-t TABLE``) has x_tables create it in the
namespace: a read that writes (a legacy nat registered beside iptables-nft's).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.iptables.driver import Flavour, Processes, SaveStoppedError
from k3snet.backends.iptables.mode import other_flavour_rules
from k3snet.backends.iptables.save import parse_save, stopped_mark, unread_mark
from k3snet.errors import BackendError
from k3snet.lab.netns import run_in

FAILED = ("iptables-nft-save v1.8.9 (nf_tables): Could not fetch rule set generation id: "
          "Interrupted system call\n")


class FailingTable(Processes):
    """The iptables tools, but a save of ``table`` alone fails before printing any of it."""

    def __init__(self, netns: str, table: str) -> None:
        super().__init__(netns)
        self.failing = table

    def run(self, argv: Sequence[str], *, input_text: str | None = None,
            timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        if argv[0].endswith("-save") and list(argv[1:]) == ["-t", self.failing]:
            return subprocess.CompletedProcess(list(argv), 4, "", FAILED)
        return super().run(argv, input_text=input_text, timeout=timeout)


class Served(Processes):
    """Scripted runs (nothing is started): what each argv prints, in order asked."""

    def __init__(self, served: dict[tuple[str, ...], tuple[int, str, str]]) -> None:
        super().__init__(None)
        self.served = served
        self.asked: list[tuple[str, ...]] = []

    def run(self, argv: Sequence[str], *, input_text: str | None = None,
            timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        self.asked.append(tuple(argv))
        code, out, err = self.served.get(tuple(argv), (0, "", ""))
        return subprocess.CompletedProcess(list(argv), code, out, err)


def test_a_table_read_alone_that_failed_is_marked_unread_with_the_tools_words() -> None:
    dump = parse_save(unread_mark("security", FAILED))
    assert dump["security"].hidden == "unread"
    assert dump["security"].rules == {}
    assert "Interrupted system call" in (dump["security"].detail or "")
    assert other_flavour_rules({4: unread_mark("security", FAILED)}) == [
        f"IPv4 security: not read ({' '.join(FAILED.split())})"]


def _stopped_in_mangle(ns: str) -> None:
    for tool in ("iptables-nft", "iptables-nft-save", "nft"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    run_in(ns, ["iptables-nft", "-w", "-t", "mangle", "-A", "PREROUTING", "-j", "ACCEPT"])
    run_in(ns, ["nft", "add", "rule", "ip", "mangle", "PREROUTING", "meta", "mark", "set",
                "3"])
    saved = run_in(ns, ["iptables-nft-save"], check=False)
    if saved.returncode == 0 or "*nat" in saved.stdout:
        pytest.skip("this iptables-nft-save prints the rule, leaves the table out, or "
                    "prints mangle after nat")


@pytest.mark.kernel
def test_a_path_table_whose_read_alone_fails_otherwise_is_a_warning_naming_it_and_the_error(
        ns: str) -> None:
    _stopped_in_mangle(ns)
    with IptablesBackend(ns, mode="nft", kernel=FailingTable(ns, "security")) as backend:
        backend.observe()
        warnings = "\n".join(backend.warnings)
    assert "IPv4 mangle: iptables-nft-save stops at a rule" in warnings, warnings
    assert ("IPv4 security: iptables-nft-save -t security failed "
            "(iptables-nft-save v1.8.9 (nf_tables): Could not fetch rule set generation id: "
            "Interrupted system call)") in warnings, warnings
    # The same read with no failure says nothing of security (the table is read).
    with IptablesBackend(ns, mode="nft") as backend:
        backend.observe()
        assert "security" not in "\n".join(backend.warnings)


@pytest.mark.kernel
@pytest.mark.parametrize("table", ["filter", "nat"])
def test_a_table_k3snet_writes_whose_read_alone_fails_is_an_error_naming_it(
        ns: str, table: str) -> None:
    _stopped_in_mangle(ns)
    with IptablesBackend(ns, mode="nft", kernel=FailingTable(ns, table)) as backend, \
            pytest.raises(BackendError, match=f"-t {table}.*Interrupted system call"):
        backend.observe()


def test_iptables_legacy_save_is_asked_only_for_the_tables_the_namespace_holds() -> None:
    """``iptables-legacy-save -t TABLE`` creates the table: only the ones listed in
    ``/proc/net/ip_tables_names`` are read apart, and nothing when it cannot be read."""
    stopped = SaveStoppedError("stopped", table="mangle")
    kernel = Served({("cat", "/proc/net/ip6_tables_names"): (0, "mangle\nfilter\n", ""),
                     ("ip6tables-legacy-save", "-t", "mangle"): (1, "*mangle\n", "Can't find "
                                                                 "library for target `X'")})
    text = kernel.save_apart("ip6tables-legacy-save", 6, stopped)
    assert [argv for argv in kernel.asked if "-t" in argv] == [
        ("ip6tables-legacy-save", "-t", "mangle"), ("ip6tables-legacy-save", "-t", "filter")]
    assert parse_save(text)["mangle"].hidden == "stopped"
    unreadable = Served({("cat", "/proc/net/ip_tables_names"): (1, "", "Permission denied")})
    with pytest.raises(SaveStoppedError) as raised:
        unreadable.save_apart("iptables-legacy-save", 4, stopped)
    assert raised.value is stopped
    assert [argv for argv in unreadable.asked if "-t" in argv] == []


@pytest.mark.kernel
def test_a_legacy_save_read_apart_creates_no_table_in_the_kernel(ns: str) -> None:
    run_in(ns, ["iptables-legacy", "-w", "-t", "mangle", "-A", "PREROUTING", "-j", "ACCEPT"])
    tables = run_in(ns, ["cat", "/proc/net/ip_tables_names"]).stdout.split()
    assert tables == ["mangle"]
    text = Processes(ns).save_apart("iptables-legacy-save", 4,
                                    SaveStoppedError("stopped", table="mangle"))
    assert parse_save(text)["mangle"].chain("PREROUTING") == ["-j ACCEPT"]
    assert run_in(ns, ["cat", "/proc/net/ip_tables_names"]).stdout.split() == tables
    assert run_in(ns, ["cat", "/proc/net/ip6_tables_names"]).stdout.split() == []
    assert "*filter" not in run_in(ns, ["iptables-legacy-save"]).stdout


class StoppedLegacy(Processes):
    """The iptables tools, but iptables-legacy-save stops in mangle (as the driver reads a
    save that stopped: the other tables one by one, mangle marked)."""

    def save(self, family: int, mode: Flavour) -> str | None:
        text = super().save(family, mode)
        if family != 4 or mode != "legacy" or text is None:
            return text
        return stopped_mark("mangle", "Can't find library for target `X'") + text


@pytest.mark.kernel
def test_a_legacy_path_table_whose_save_stopped_is_named_with_the_legacy_tool(ns: str) -> None:
    # The warning named iptables-nft-save and `nft -a list table ip mangle`, which shows
    # nothing of a legacy table, under mode legacy.
    with IptablesBackend(ns, mode="legacy", kernel=StoppedLegacy(ns)) as backend:
        backend.observe()
        warnings = [w for w in backend.warnings if "IPv4 mangle" in w]
    assert len(warnings) == 1, backend.warnings
    assert "IPv4 mangle: iptables-legacy-save stops at a rule of this table" in warnings[0]
    assert "nft" not in warnings[0].replace("-nft-", ""), warnings[0]
    assert f"`ip netns exec {ns} iptables-legacy -t mangle -S` may name it" in warnings[0]
