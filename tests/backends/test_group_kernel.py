"""A group of real kernel backends is all-or-nothing, for any error of any member.

netlink (routes, sysctls) goes first, nftables (NAT, forward) second: a failure
in the nftables part must take the routes and sysctls back. Checked with the
kernel's own listings (``ip -j route``, ``nft -j list ruleset``, /proc/sys).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k3snet import (
    ApplyError,
    ApplyResult,
    Backend,
    ForwardRule,
    MasqueradeRule,
    Plan,
    PlanError,
    Route,
    State,
    Sysctl,
    plan,
)
from k3snet.backends.group import BackendGroup, Member
from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.iptables.driver import RestoreProcess
from k3snet.backends.kit import Compensation
from k3snet.backends.netlink import NetlinkBackend
from k3snet.backends.netlink.socket_driver import SocketDriver
from k3snet.backends.nftables import NftablesBackend
from k3snet.cli import (
    COMMANDS,
    EXIT_HANGUP,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    main,
    sigterm_undoes,
)
from k3snet.errors import BackendError
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.planner import Change

pytestmark = pytest.mark.kernel

WANTED = State(owned=[
    Sysctl("net.ipv4.ip_forward", "1"),
    Sysctl("net.ipv6.conf.all.forwarding", "1"),
    Route("192.168.2.0/24", gateway="10.0.0.254", device="d0"),
    Route("fd01:2::/64", gateway="fd00::fe", device="d0"),
    MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24", out_interface="d0"),
    MasqueradeRule("fd42:42::/56", destination="fd01:2::/64", out_interface="d0"),
    ForwardRule("10.42.0.0/16", "192.168.2.0/24"),
])


@pytest.fixture
def ns() -> Iterator[str]:
    with temporary_netns("grp") as name:
        for argv in (["ip", "link", "set", "lo", "up"],
                     ["ip", "link", "add", "d0", "type", "veth", "peer", "name", "d0p"],
                     # No link-local addresses: their local routes would appear when
                     # duplicate address detection ends, a second or more later under
                     # load, and change the kernel view between two readings.
                     ["ip", "link", "set", "d0", "addrgenmode", "none"],
                     ["ip", "link", "set", "d0p", "addrgenmode", "none"],
                     ["ip", "link", "set", "d0p", "up"], ["ip", "link", "set", "d0", "up"],
                     ["ip", "addr", "add", "10.0.0.1/24", "dev", "d0"],
                     ["ip", "addr", "add", "fd00::1/64", "dev", "d0", "nodad"],
                     ["nft", "add", "table", "inet", "admin"],
                     ["nft", "add", "chain", "inet", "admin", "forwarding",
                      "{ type filter hook forward priority 10; policy accept; }"],
                     ["nft", "add", "rule", "inet", "admin", "forwarding", "ip", "saddr",
                      "10.99.0.0/16", "drop"]):
            run_in(name, argv)
        yield name


def kernel_view(ns: str) -> tuple[object, ...]:
    """Everything the group could change, as the kernel lists it."""
    routes = json.loads(run_in(ns, ["ip", "-j", "route", "show", "table", "all"]).stdout)
    routes6 = json.loads(run_in(ns, ["ip", "-6", "-j", "route", "show", "table", "all"]).stdout)
    ruleset = json.loads(run_in(ns, ["nft", "-j", "list", "ruleset"]).stdout)["nftables"]
    ruleset = [item for item in ruleset if "metainfo" not in item]
    sysctls = run_in(ns, ["cat", "/proc/sys/net/ipv4/ip_forward",
                          "/proc/sys/net/ipv6/conf/all/forwarding"]).stdout
    return routes, routes6, ruleset, sysctls


@pytest.fixture
def group(ns: str, tmp_path: Path) -> Iterator[BackendGroup]:
    with BackendGroup([NetlinkBackend(ns, state_dir=tmp_path), NftablesBackend(ns)]) as made:
        yield made


def test_an_injected_failure_at_every_position_leaves_the_kernel_as_it_was(
        ns: str, group: BackendGroup) -> None:
    before = kernel_view(ns)
    p = plan(group.observe(), WANTED)
    kinds = [c.kind for c in p.changes]
    assert {"route", "sysctl"} <= set(kinds), p.render()
    assert {"nat", "forward"} <= set(kinds), p.render()
    for index in range(len(p.changes)):
        group.faults.fail_at(index)
        with pytest.raises(ApplyError):
            group.apply(p)
        assert kernel_view(ns) == before, f"failure at change {index}: {p.changes[index]}"
    group.apply(p)
    assert plan(group.observe(), WANTED).empty
    assert kernel_view(ns) != before


MOVED = State(owned=[
    *(o for o in WANTED.owned if not isinstance(o, Route | MasqueradeRule | ForwardRule)
      or o.family == 6),
    Route("192.168.3.0/24", gateway="10.0.0.254", device="d0"),
    MasqueradeRule("10.42.0.0/16", destination="192.168.3.0/24", out_interface="d0"),
    ForwardRule("10.42.0.0/16", "192.168.3.0/24"),
])


def _per_family(view: tuple[object, ...]) -> tuple[object, ...]:
    """``kernel_view`` without nftables handles, each chain's IPv4 and IPv6 rules apart
    (each in its order): the order of an ``ip`` and an ``ip6`` rule decides nothing, and
    a rule deleted and added back (an undo) may come back on the other side of one."""
    routes, routes6, ruleset, sysctls = view
    assert isinstance(ruleset, list)
    kept: list[object] = []
    chains: dict[tuple[str, str, str], list[str]] = {}
    for item in ruleset:
        [(what, body)] = item.items()
        body = {k: v for k, v in body.items() if k != "handle"}
        if what != "rule":
            kept.append({what: body})
            continue
        text = json.dumps(body, sort_keys=True)
        family = "ip6" if '"ip6"' in text else "ip"
        chains.setdefault((body["table"], body["chain"], family), []).append(text)
    return routes, routes6, kept, chains, sysctls


def test_a_plan_splitting_a_members_part_is_made_in_its_order_and_undone_at_any_change(
        ns: str, group: BackendGroup) -> None:
    """A destination replaced by another: nftables deletes its NAT and forward rules, then
    netlink swaps the routes, then nftables adds the new rules (two nftables transactions
    around netlink's part); a failure at any change leaves the kernel as it was (but for
    the order of an IPv4 and an IPv6 rule of one chain, which decides nothing)."""
    group.apply(plan(group.observe(), WANTED))
    before = _per_family(kernel_view(ns))
    p = plan(group.observe(), MOVED)
    assert [(c.action, c.kind) for c in p.changes] == [
        ("delete", "nat"), ("delete", "forward"), ("delete", "route"), ("add", "route"),
        ("add", "forward"), ("add", "nat")], p.render()
    for index in range(len(p.changes)):
        group.faults.fail_at(index)
        with pytest.raises(ApplyError) as caught:
            group.apply(p)
        assert caught.value.failed == p.changes[index]
        assert _per_family(kernel_view(ns)) == before, f"failure at {index}: {p.changes[index]}"
    done = group.apply(p)
    assert done.applied == p.changes
    assert plan(group.observe(), MOVED).empty
    routes = json.loads(run_in(ns, ["ip", "-j", "route", "show", "proto", "211"]).stdout)
    assert [r["dst"] for r in routes] == ["192.168.3.0/24"]


class _Refusing(NftablesBackend):
    """An nftables member that refuses its part (or crashes) after netlink applied."""

    error: BaseException = PlanError("refused by a later member")

    def apply(self, plan: Plan) -> ApplyResult:
        raise self.error


@pytest.mark.parametrize("error", [PlanError("refused"), RuntimeError("a bug in a member")],
                         ids=["plan-error", "crash"])
def test_any_error_of_a_later_member_takes_the_earlier_members_back(
        ns: str, tmp_path: Path, error: Exception) -> None:
    before = kernel_view(ns)
    refusing = _Refusing(ns)
    refusing.error = error
    with BackendGroup([NetlinkBackend(ns, state_dir=tmp_path), refusing]) as group:
        p = plan(group.observe(), WANTED)
        with pytest.raises(ApplyError) as caught:
            group.apply(p)
        assert caught.value.__cause__ is error
        assert {c.kind for c in caught.value.rolled_back} == {"route", "sysctl"}
        assert kernel_view(ns) == before
        assert not group.observe().owned


def test_an_interruption_during_a_later_member_takes_the_earlier_members_back(
        ns: str, tmp_path: Path) -> None:
    """Ctrl-C (KeyboardInterrupt) as the nftables part starts: the routes and sysctls
    netlink applied are taken back, and the interruption goes on (the CLI exits 130).
    It used to leave them applied: the group caught only ``Exception``."""
    before = kernel_view(ns)
    refusing = _Refusing(ns)
    interruption = KeyboardInterrupt()
    refusing.error = interruption
    with BackendGroup([NetlinkBackend(ns, state_dir=tmp_path), refusing]) as group:
        p = plan(group.observe(), WANTED)
        with pytest.raises(KeyboardInterrupt) as caught:
            group.apply(p)
        assert caught.value is interruption
        assert kernel_view(ns) == before
        assert not group.observe().owned


@pytest.fixture
def main_thread() -> None:
    """SIGTERM is handled in the main thread only: elsewhere it would end the test run."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("the tests run outside the main thread: SIGTERM would end the run")


class _Terminated(NftablesBackend):
    """An nftables member during whose part the process gets ``signum`` (SIGTERM: systemd
    stopping it; SIGHUP: the SSH session or terminal it ran in went away)."""

    signum = signal.SIGTERM

    def apply(self, plan: Plan) -> ApplyResult:
        if signal.getsignal(self.signum) in (signal.SIG_DFL, signal.SIG_IGN):
            # Sent, it would end the test run at once, as it ended k3snet.
            raise AssertionError(f"{self.signum!r} is not handled: it ends the process")
        os.kill(os.getpid(), self.signum)
        time.sleep(10)  # the handler raises within this; a bound, not a timing
        raise AssertionError(f"{self.signum!r} did not interrupt the apply")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, EXIT_TERMINATED),
                                              (signal.SIGHUP, EXIT_HANGUP)])
def test_sigterm_or_sighup_during_a_cli_apply_takes_the_earlier_members_back(
        ns: str, tmp_path: Path, main_thread: None, signum: signal.Signals, code: int) -> None:
    """What ``k3snet apply`` and ``destroy`` run under (``cli.sigterm_undoes``): SIGTERM
    and SIGHUP end the command as Ctrl-C does (exit 143, 129), after the group took back
    what netlink made. They used to end the process at once, leaving the routes and
    sysctls (SIGHUP still did: an SSH session dropped in the middle of an apply)."""
    before = kernel_view(ns)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as in a shell, not under nohup
    terminated = _Terminated(ns)
    terminated.signum = signum
    try:
        with BackendGroup([NetlinkBackend(ns, state_dir=tmp_path), terminated]) as group:
            p = plan(group.observe(), WANTED)
            with pytest.raises(SystemExit) as caught, sigterm_undoes():
                group.apply(p)
            assert caught.value.code == code
            assert kernel_view(ns) == before
            assert not group.observe().owned
        assert signal.getsignal(signal.SIGTERM) is handlers[signal.SIGTERM]  # given back
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, handlers[signal.SIGHUP])


def test_under_nohup_sighup_stays_ignored(main_thread: None) -> None:
    """``nohup k3snet apply ...`` asks for the run to outlive the terminal: SIGHUP stays
    ignored within ``sigterm_undoes`` (and SIGTERM is still taken)."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with sigterm_undoes():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_after_ctrl_c_the_commands_the_undo_runs_outlive_the_terminals_sighup(
        main_thread: None) -> None:
    """The terminal closed during the undo Ctrl-C started: SIGHUP reaches its whole
    foreground process group, the ``nft`` or ``iptables-restore`` the undo runs as
    well. k3snet ignored it, and that child, its SIGHUP at the default, died: the undo
    step failed, the node half-changed, said to a terminal that was gone. The undo's
    commands now ignore SIGHUP from Ctrl-C on, as the process does (a child inherits an
    ignored signal, not a handler); a second Ctrl-C still stops both."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGHUP)}
    signal.signal(signal.SIGINT, signal.default_int_handler)  # (a runner may set its own)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as in a terminal, not under nohup
    undone: list[int] = []
    try:
        with sigterm_undoes():
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(10)  # the handler raises within this; a bound, not a timing
                raise AssertionError("SIGINT did not interrupt the apply")
            except KeyboardInterrupt:
                # The undo: one of its commands (cat standing for nft) is running as the
                # terminal goes away.
                child = subprocess.Popen(["cat"], stdin=subprocess.PIPE,
                                         stdout=subprocess.DEVNULL)
                os.kill(child.pid, signal.SIGHUP)
                os.kill(os.getpid(), signal.SIGHUP)
                child.communicate(b"")
                undone.append(child.returncode)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL  # given back
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert undone == [0]  # not -SIGHUP


DOCTOR_FIX = ["doctor", "--from", "10.42.0.5", "--to", "192.168.2.10", "--fix"]


@pytest.mark.parametrize("argv", [["apply", "-f", "spec.yaml"], ["destroy", "--auto-approve"],
                                  DOCTOR_FIX], ids=lambda argv: argv[0])
def test_the_commands_that_change_the_node_run_under_sigterm_undoes(
        argv: list[str], monkeypatch: pytest.MonkeyPatch, main_thread: None) -> None:
    # doctor --fix applies its fix plan through converge as apply does: SIGTERM ended it
    # at once, between the fix's backends.
    command = argv[0]
    handler = signal.getsignal(signal.SIGTERM)
    seen = []

    def run(args: object) -> int:
        seen.append(signal.getsignal(signal.SIGTERM))
        if seen[0] is handler:  # sent, it would end the test run at once
            return 0
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        return 0

    monkeypatch.setitem(COMMANDS, command, run)
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 143
    assert len(seen) == 1
    assert seen[0] is not handler
    assert signal.getsignal(signal.SIGTERM) is handler


def _forwarding(ns: str) -> str:
    """ip_forward and every interface's forwarding switch, which a write of it spreads to."""
    return run_in(ns, ["sh", "-c", "grep -H . /proc/sys/net/ipv4/ip_forward "
                                   "/proc/sys/net/ipv4/conf/*/forwarding"]).stdout


def test_a_later_failure_gives_a_released_sysctl_and_its_spread_back_exactly(
        ns: str, tmp_path: Path) -> None:
    """netlink gives ip_forward back (its recorded previous value), then the NAT member
    fails: the kernel and the sysctl state file must be as before. The group used to
    apply the inverse plan, a new take-over of ip_forward whose write spread 1 to every
    interface: forwarding came back on d0, which the administrator had turned off."""
    forwarding = State(owned=[Sysctl("net.ipv4.ip_forward", "1")])
    with BackendGroup([NetlinkBackend(ns, state_dir=tmp_path)]) as group:
        group.apply(plan(group.observe(), forwarding))
    run_in(ns, ["sysctl", "-qw", "net.ipv4.conf.d0.forwarding=0"])  # the administrator
    before = (_forwarding(ns), kernel_view(ns))
    state_file = next(tmp_path.rglob("sysctl.json"))
    recorded = state_file.read_text()
    with BackendGroup([NetlinkBackend(ns, state_dir=tmp_path), _Refusing(ns)]) as group:
        p = plan(group.observe(), WANTED.only(["nat"]))
        assert [c.action for c in p.only(["sysctl"]).changes] == ["delete"], p.render()
        with pytest.raises(ApplyError) as caught:
            group.apply(p)
        assert [c.kind for c in caught.value.rolled_back] == ["sysctl"]
        assert (_forwarding(ns), kernel_view(ns)) == before
        assert state_file.read_text() == recorded
        assert plan(group.observe(), forwarding).empty


def test_a_member_limited_to_nat_still_shows_the_forward_member_a_native_nftables_drop(
        ns: str) -> None:
    """``--backend nftables:nat --backend iptables:forward`` (docs/backends.md, for
    firewalld's FORWARD policy): the drop of the fixture's ``inet admin`` table (as
    firewalld's own table holds them) is seen by the nftables backend alone, which the
    group limited to NAT. It kept only its NAT objects, so the forward accept for the
    dropped pods planned as a plain add (exit 2, no conflict) and traffic stayed dropped.
    Once applied, k3snet's own iptables-nft rules seen through nft make no conflict."""
    from k3snet.backends.iptables import IptablesBackend  # noqa: PLC0415

    wanted = State(owned=[ForwardRule("10.99.0.0/16", "192.168.2.0/24"),
                          ForwardRule("10.42.0.0/16", "192.168.2.0/24")])
    split = [Member(NftablesBackend(ns), ["nat"]), Member(IptablesBackend(ns), ["forward"])]
    with BackendGroup(split) as group:
        p = plan(group.observe(), wanted)
        assert [n.wanted for n in p.conflicts] == [wanted.by_key[ForwardRule(
            "10.99.0.0/16", "192.168.2.0/24").key]], p.render()
        assert "inet admin forwarding" in p.conflicts[0].render()
        group.apply(p)
        assert plan(group.observe(), wanted).changes == ()
        assert len(plan(group.observe(), wanted).conflicts) == 1


def test_a_drop_after_the_iptables_jump_is_no_conflict_though_the_nftables_member_reads_it(
        ns: str) -> None:
    """``--backend nftables:nat --backend iptables:forward`` with iptables-nft: a drop
    appended to FORWARD after k3snet's jump is never met by what k3snet's chain accepted
    (iptables alone plans nothing), but the nftables member lists ``ip filter`` too, and
    its view of that drop was handed to the iptables member: a false conflict (exit 4,
    the agent failing every pass). A drop before the jump stays a conflict."""
    from k3snet.backends.iptables import IptablesBackend  # noqa: PLC0415

    wanted = State(owned=[ForwardRule("10.42.0.0/16", "192.168.2.0/24")])
    split = [Member(NftablesBackend(ns), ["nat"]),
             Member(IptablesBackend(ns, mode="nft"), ["forward"])]
    with BackendGroup(split) as group:
        group.apply(plan(group.observe(), wanted))
        run_in(ns, ["iptables-nft", "-A", "FORWARD", "-d", "192.168.2.0/24", "-j", "DROP"])
        p = plan(group.observe(), wanted)
        assert p.empty, p.render()
        assert not p.conflicts, p.render()
        run_in(ns, ["iptables-nft", "-I", "FORWARD", "1", "-d", "192.168.2.0/24", "-j",
                    "REJECT"])
        p = plan(group.observe(), wanted)
        assert len(p.conflicts) == 1, p.render()


def test_a_foreign_accept_of_one_member_does_not_meet_a_rule_another_members_drop_defeats(
        ns: str) -> None:
    """``--backend nftables:nat --backend iptables:forward`` on a node whose firewall drops
    the pods' traffic in its own nftables table (firewalld's, the fixture's ``inet
    admin``) while flannel's accept sits in iptables' FORWARD: the accept does not let
    the traffic through the other table's drop (firewalld#527), nor would k3snet's. The
    plan said the forward rule was met by flannel's accept (exit 0, nothing to do) and
    the pods' connections stayed dropped; it is a conflict naming the drop."""
    from k3snet.backends.iptables import IptablesBackend  # noqa: PLC0415

    run_in(ns, ["iptables-legacy", "-P", "FORWARD", "DROP"])
    for match in ("-s", "-d"):  # flannel's FLANNEL-FWD: the pods' traffic and its replies
        run_in(ns, ["iptables-legacy", "-A", "FORWARD", match, "10.99.0.0/16", "-j", "ACCEPT"])
    wanted = State(owned=[ForwardRule("10.99.0.0/16", "192.168.2.0/24")])
    split = [Member(NftablesBackend(ns), ["nat"]),
             Member(IptablesBackend(ns, mode="legacy"), ["forward"])]
    with BackendGroup(split) as group:
        p = plan(group.observe(), wanted)
    assert not p.met, p.render()
    assert [n.foreign.describe() for n in p.conflicts] == [
        "drop by nftables inet admin forwarding: ip saddr 10.99.0.0/16 drop"], p.render()


# ---------------------------------------------------------------- iptables as the rules' member


def _iptables_rules(ns: str, mode: str) -> list[str]:
    """Every rule of both families as iptables-save lists it, counters left out."""
    lines = []
    for save in (f"iptables-{mode}-save", f"ip6tables-{mode}-save"):
        text = run_in(ns, [save]).stdout
        lines += [f"{save} {line}" for line in text.splitlines()
                  if line.startswith(("-A", "-N", ":", "*")) and not line.startswith("# ")]
    return [line.split(" [")[0] if line.startswith(":") else line for line in lines]


def _iptables_view(ns: str, mode: str) -> tuple[object, ...]:
    routes = json.loads(run_in(ns, ["ip", "-j", "route", "show", "table", "all"]).stdout)
    routes6 = json.loads(run_in(ns, ["ip", "-6", "-j", "route", "show", "table", "all"]).stdout)
    return routes, routes6, _iptables_rules(ns, mode)


@pytest.fixture(params=["nft", "legacy"])
def iptables_group(request: pytest.FixtureRequest, ns: str, tmp_path: Path
                   ) -> Iterator[tuple[BackendGroup, str]]:
    mode = request.param
    with BackendGroup([NetlinkBackend(ns, state_dir=tmp_path),
                       IptablesBackend(ns, mode=mode)]) as made:
        yield made, mode


def test_a_plan_splitting_the_iptables_members_part_is_made_in_order_and_undone_at_any_change(
        ns: str, iptables_group: tuple[BackendGroup, str]) -> None:
    """A plan splitting the iptables member's part around netlink's is made in the plan's
    order as three applies, and a failure at any change leaves the kernel as it was, as
    with nftables (checked with ``iptables-save`` and ``ip -j route``)."""
    made, mode = iptables_group
    made.apply(plan(made.observe(), WANTED))
    before = _iptables_view(ns, mode)
    p = plan(made.observe(), MOVED)
    assert [(c.action, c.kind) for c in p.changes] == [
        ("delete", "nat"), ("delete", "forward"), ("delete", "route"), ("add", "route"),
        ("add", "forward"), ("add", "nat")], p.render()
    for index in range(len(p.changes)):
        made.faults.fail_at(index)
        with pytest.raises(ApplyError) as caught:
            made.apply(p)
        assert caught.value.failed == p.changes[index]
        assert _iptables_view(ns, mode) == before, f"failure at {index}: {p.changes[index]}"
    assert made.apply(p).applied == p.changes
    assert plan(made.observe(), MOVED).empty


def test_a_kernel_refusal_names_two_members_of_netlink_by_their_kinds(
        ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``--backend netlink:sysctl --backend netlink:route --backend nftables``: the
    kernel refuses the route (its gateway is on no network of d0) after the sysctls'
    member made its part. The message said "netlink's 2 change(s) made before netlink
    failed were taken back", beside "netlink changed nothing": neither member named."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
        "cluster: {podCIDRs: [10.42.0.0/16, fd42:42::/56]}\n"
        "destinations:\n"
        "  - {cidr: fd01:2::/64, gateway: 'fd00::fe', device: d0}\n"
        "  - {cidr: 192.168.2.0/24, gateway: 10.9.9.1, device: d0}\n"
        "masquerade: {mode: destinations}\n")
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path / "state"))
    before = kernel_view(ns)
    argv = ["apply", "-f", str(spec), "--netns", ns, "--no-facts", "--auto-approve",
            "--backend", "netlink:sysctl", "--backend", "netlink:route",
            "--backend", "nftables"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert main([*argv, "--output", "json"]) == 1
    document = json.loads(capsys.readouterr().out)
    for message in (err, document["error"]["message"]):
        assert "Nexthop has invalid gateway" in message, message
        # The IPv6 route was made, then undone by the route member itself.
        assert "(the 1 change(s) made before it were undone)" in message, message
        assert ("; netlink:sysctl's 2 change(s) made before netlink:route failed were "
                "taken back;") in message, message
        assert "netlink's" not in message, message
        assert "rolled back 3 change(s)" in message, message
    assert kernel_view(ns) == before


def test_a_transaction_the_kernel_refuses_after_netlink_s_part_is_said_as_it_is(
        ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Just before nftables' transaction reaches the kernel (after its reads), another
    process takes ``inet k3snet`` with flags owner: the kernel refuses the transaction
    (EPERM) after netlink's sysctls and routes were made. Every sentence of the
    message is true of the node: nftables changed nothing, netlink's part was taken
    back (``ip -j route``, ``nft -j list ruleset``, /proc/sys as before but the owned
    table), and nftables is named once ("nftables: nftables: the kernel refused")."""
    import subprocess  # noqa: PLC0415 - the other process holding the table

    from k3snet.backends.nftables.kernel import Libnftables  # noqa: PLC0415

    holders: list[subprocess.Popen[str]] = []
    real = Libnftables.run

    def run(self: Libnftables, batch: str, *, json_input: bool,
            dry_run: bool = False) -> tuple[int, str]:
        if not dry_run and not holders:
            holder = subprocess.Popen(["ip", "netns", "exec", ns, "nft", "-i"],
                                      stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, text=True)
            holders.append(holder)
            assert holder.stdin is not None
            holder.stdin.write("add table inet k3snet { flags owner; }\n")
            holder.stdin.flush()
            while "k3snet" not in run_in(ns, ["nft", "list", "tables"]).stdout:
                assert holder.poll() is None
                time.sleep(0.01)
        return real(self, batch, json_input=json_input, dry_run=dry_run)

    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
        "cluster: {podCIDRs: [10.42.0.0/16]}\n"
        "destinations: [{cidr: 192.168.2.0/24, gateway: 10.0.0.254, device: d0}]\n"
        "masquerade: {mode: destinations}\n")
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(Libnftables, "run", run)
    before = kernel_view(ns)
    try:
        assert main(["apply", "-f", str(spec), "--netns", ns, "--no-facts",
                     "--auto-approve"]) == 1
        # nft 1.0.6's JSON of an owned table's flags is no JSON: its text, then.
        tables = run_in(ns, ["nft", "list", "tables"]).stdout.split("\n")
        owned = run_in(ns, ["nft", "list", "table", "inet", "k3snet"]).stdout
        run_in(ns, ["nft", "list", "table", "inet", "admin"])
        holders[0].stdin.close()  # type: ignore[union-attr]  # the table goes with it
        holders[0].wait()
        assert kernel_view(ns) == before
    finally:
        for holder in holders:
            assert holder.stdin is not None
            if not holder.stdin.closed:
                holder.stdin.close()
            holder.wait()
    err = capsys.readouterr().err
    assert holders, err
    assert "k3snet: error: nftables: the kernel refused the transaction, nftables changed " \
        "nothing: " in err, err
    assert "Operation not permitted" in err, err
    assert "; netlink's 2 change(s) made before nftables failed were taken back;" in err, err
    assert sorted(filter(None, tables)) == ["table inet admin", "table inet k3snet"]
    assert "flags owner" in owned, owned
    assert "chain" not in owned, owned  # nothing of k3snet's made in it


# ---------------------------------------------------------------- a signal after a commit


def _signalled_after(monkeypatch: pytest.MonkeyPatch, cls: type, method: str) -> list[str]:
    """``cls.method`` followed, the first time, by SIGINT to the main thread: Ctrl-C
    landing right after the kernel took the change (its handler runs in the main thread,
    while the backend's bookkeeping runs, or while it waits for its namespace's thread).
    Returns the list the method's name is put in when the signal is sent."""
    real = getattr(cls, method)
    sent: list[str] = []

    def then_signalled(self: object, *args: object, **kwargs: object) -> object:
        result = real(self, *args, **kwargs)
        if not sent:  # the group's undo runs it again: once
            sent.append(method)
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        return result

    monkeypatch.setattr(cls, method, then_signalled)
    return sent


def _whole_view(ns: str, mode: str | None) -> tuple[object, ...]:
    """:func:`kernel_view`, with both families' iptables rules and chains of their own
    for an iptables member (not the tables and built-in chains iptables-legacy lists
    once a table was first used, which stay after any undo)."""
    if mode is None:
        return kernel_view(ns)
    made = [line for line in _iptables_rules(ns, mode)
            if " -A " in line or (" :" in line and line.split()[2] == "-")]
    return (*kernel_view(ns), made)


# The member's method right after its kernel commit: nftables' update of its cache (in
# the namespace's thread), netlink's last step (its guarded steps ended: before its
# sysctl store's lock is let go), iptables' tables committed (before the built-in chains
# iptables-nft made are recorded).
AFTER_COMMIT = {
    "nftables": (NftablesBackend, "_commit", None),
    "netlink": (NetlinkBackend, "_execute", None),
    "iptables-nft": (IptablesBackend, "_apply", "nft"),
    "iptables-legacy": (IptablesBackend, "_apply", "legacy"),
}


@pytest.mark.parametrize("member", sorted(AFTER_COMMIT))
def test_ctrl_c_right_after_a_members_kernel_commit_takes_every_part_back(
        ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ctrl_c: None,
        member: str) -> None:
    """Ctrl-C landing after a member's commit, before its apply returned: the member was
    never among the parts to undo, so the group took back only the earlier ones (the
    nftables rules stayed while the routes and sysctls were taken back; the netlink
    member's routes and sysctls stayed), and ``k3snet apply`` said "nothing was changed".
    The signal now waits for the member's result, and the group takes back every part,
    this member's too (the kernel's own listings: ``ip -j route``, ``nft -j list
    ruleset``, ``iptables-save``, /proc/sys)."""
    cls, method, mode = AFTER_COMMIT[member]
    rules: Backend = (NftablesBackend(ns) if mode is None
                      else IptablesBackend(ns, mode=mode))  # type: ignore[arg-type]
    with BackendGroup([NetlinkBackend(ns, state_dir=tmp_path), rules]) as group:
        before = _whole_view(ns, mode)
        p = plan(group.observe(), WANTED)
        sent = _signalled_after(monkeypatch, cls, method)
        with pytest.raises(KeyboardInterrupt):
            group.apply(p)
        assert sent == [method]
        assert _whole_view(ns, mode) == before
        assert not group.observe().owned


SPEC = ("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
        "cluster: {podCIDRs: [10.42.0.0/16, fd42:42::/56]}\n"
        "destinations:\n"
        "  - {cidr: 192.168.2.0/24, gateway: 10.0.0.254, device: d0}\n"
        "  - {cidr: 'fd01:2::/64', gateway: 'fd00::fe', device: d0}\n"
        "masquerade: {mode: destinations}\nforward: {accept: true}\n")


def _apply_argv(ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path / "state"))
    return ["apply", "-f", str(spec), "--netns", ns, "--no-facts", "--auto-approve",
            "--backend", "netlink", "--backend", "nftables"]


def test_a_cli_apply_ctrl_c_after_the_nftables_commit_takes_all_back_and_says_so(
        ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ctrl_c: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The audit's case: ``k3snet apply --netns NS`` stopped by Ctrl-C as nftables'
    transaction was committed said "nothing was changed (what it made was taken back)",
    exit 130, with every k3snet rule of nftables in the kernel. Now nothing is left."""
    argv = _apply_argv(ns, tmp_path, monkeypatch)
    before = kernel_view(ns)
    sent = _signalled_after(monkeypatch, NftablesBackend, "_commit")
    assert main(argv) == EXIT_INTERRUPTED
    assert sent == ["_commit"]
    assert "nothing was changed (what it made was taken back)" in capsys.readouterr().err
    assert kernel_view(ns) == before


def test_a_cli_apply_ctrl_c_once_every_part_is_made_says_the_change_stays(
        ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ctrl_c: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C as the group's apply returned, before the command noted what it made: the
    change stays (no one takes it back) and is said so, exit 130; it was "nothing was
    changed (what it made was taken back)" of a node holding every change."""
    argv = _apply_argv(ns, tmp_path, monkeypatch)
    before = kernel_view(ns)
    sent = _signalled_after(monkeypatch, BackendGroup, "apply")
    assert main(argv) == EXIT_INTERRUPTED
    assert sent == ["apply"]
    err = capsys.readouterr().err
    assert "stopped by SIGINT after the change was made, which stays: " in err, err
    assert "nothing was changed" not in err, err
    assert kernel_view(ns) != before
    argv[argv.index("apply")] = "plan"
    assert main([a for a in argv if a != "--auto-approve"]) == 0  # nothing left to do


def test_a_failure_noting_a_committed_nftables_transaction_fails_nothing(
        ns: str, group: BackendGroup, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The nftables backend's bookkeeping after its commit (the marker's listing, the
    generation read, the cache's update) failing: the apply raised with the transaction
    committed, and the group took back the routes and sysctls, said nftables changed
    nothing, and left its rules. The change stands (the cache is dropped, read again)."""
    def fails(*args: object, **kwargs: object) -> None:
        raise BackendError("cannot read the nftables generation id: EINTR")

    monkeypatch.setattr(NftablesBackend, "_commit", fails)
    p = plan(group.observe(), WANTED)
    assert group.apply(p).applied == p.changes
    assert "the transaction was committed, but what it made could not be noted" in caplog.text
    assert plan(group.observe(), WANTED).empty
    rules = json.loads(run_in(ns, ["nft", "-j", "list", "table", "inet", "k3snet"]).stdout)
    assert any("rule" in item for item in rules["nftables"])


@pytest.mark.parametrize("members", [("netlink",), ("netlink", "nftables")])
def test_ctrl_c_as_the_kernel_took_netlink_s_routes_takes_them_back(
        ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ctrl_c: None,
        members: tuple[str, ...]) -> None:
    """Ctrl-C landing as the kernel answered netlink's batch of routes, before the
    backend recorded them (its socket is the namespace's, but k3snet sends on it from the
    main thread, where the handler runs): the routes were made and never among the steps
    to undo, so they stayed while the group said the apply was taken back."""
    made: list[Backend] = [NetlinkBackend(ns, state_dir=tmp_path)]
    if "nftables" in members:
        made.append(NftablesBackend(ns))
    with BackendGroup(made) as group:
        before = kernel_view(ns)
        wanted = WANTED if "nftables" in members else State(
            owned=[o for o in WANTED.owned if isinstance(o, Route | Sysctl)])
        p = plan(group.observe(), wanted)
        sent = _signalled_after(monkeypatch, SocketDriver, "send_batch")
        with pytest.raises(KeyboardInterrupt):
            group.apply(p)
        assert sent == ["send_batch"]
        assert kernel_view(ns) == before
        assert not group.observe().owned


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_ctrl_c_as_iptables_restore_ends_takes_its_tables_back(
        ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ctrl_c: None,
        mode: str) -> None:
    """Ctrl-C landing as the restore process ended, its tables committed, before the
    backend recorded them: they were never among the steps to undo, so they stayed
    while the group took back the routes and sysctls. (The built-in chains iptables-nft
    makes, taken back after a failed apply, are not compared: see
    tests/iptables/test_made_builtins_kernel.py.)"""

    _interrupted_as_iptables_committed(ns, tmp_path, monkeypatch,
                                       IptablesBackend(ns, mode=mode),  # type: ignore[arg-type]
                                       mode=mode, cls=RestoreProcess, method="wait")


def _interrupted_as_iptables_committed(ns: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch,
                                       iptables: IptablesBackend, *, mode: str, cls: type,
                                       method: str) -> None:
    """Ctrl-C right after ``cls.method`` returned in a group of netlink and ``iptables``
    applying WANTED: the kernel holds what it held before, k3snet owns nothing."""

    def view() -> tuple[object, ...]:
        routes, routes6, _, sysctls = kernel_view(ns)
        return routes, routes6, sysctls, _whole_view(ns, mode)[-1]

    with BackendGroup([NetlinkBackend(ns, state_dir=tmp_path), iptables]) as group:
        before = view()
        p = plan(group.observe(), WANTED)
        sent = _signalled_after(monkeypatch, cls, method)
        with pytest.raises(KeyboardInterrupt):
            group.apply(p)
        assert sent == [method]
        assert view() == before
        assert not group.observe().owned


def test_ctrl_c_as_libiptc_committed_a_table_takes_its_tables_back(
        ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ctrl_c: None) -> None:
    """The legacy libiptc driver: Ctrl-C landing as the namespace's thread had committed
    a table, before the backend recorded it. The main thread's wait raised, the table
    never among the steps to undo: its rules stayed, and the group took back the routes
    and sysctls only."""
    pytest.importorskip("iptc")
    from k3snet.backends.iptables.libiptc import LibiptcDriver  # noqa: PLC0415 - optional

    _interrupted_as_iptables_committed(
        ns, tmp_path, monkeypatch, IptablesBackend(ns, mode="legacy", driver="libiptc"),
        mode="legacy", cls=LibiptcDriver, method="_run")


def test_a_cli_destroy_ctrl_c_once_everything_is_removed_says_the_removal_stays(
        ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ctrl_c: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C as the group's removal returned, before ``k3snet destroy`` noted it: it
    said "nothing was changed (what it made was taken back)", exit 130, with every
    route, sysctl and rule of k3snet's removed. Now the removal is said to stay."""
    argv = _apply_argv(ns, tmp_path, monkeypatch)
    assert main(argv) == 0
    made = kernel_view(ns)
    capsys.readouterr()
    sent = _signalled_after(monkeypatch, BackendGroup, "apply")
    assert main(["destroy", "--netns", ns, "--auto-approve",
                 "--backend", "netlink", "--backend", "nftables"]) == EXIT_INTERRUPTED
    assert sent == ["apply"]
    err = capsys.readouterr().err
    assert ("stopped by SIGINT: removed before the destroy was stopped, and not undone: "
            "netlink+nftables: ") in err, err
    assert "nothing was changed" not in err, err
    assert kernel_view(ns) != made
    argv[argv.index("apply")] = "plan"
    assert main([a for a in argv if a != "--auto-approve"]) == 2  # all to be made again


def test_ctrl_c_as_a_sysctl_is_written_takes_it_back(
        ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ctrl_c: None) -> None:
    """Ctrl-C landing as netlink had written a sysctl, before the backend recorded its
    undo (the handler runs in the main thread, at the call recording it): the value
    stayed, never among the steps to undo, while the group said all was taken back."""
    with BackendGroup([NetlinkBackend(ns, state_dir=tmp_path)]) as group:
        before = kernel_view(ns)
        p = plan(group.observe(), State(owned=[o for o in WANTED.owned
                                               if isinstance(o, Sysctl)]))
        real = Compensation.record
        sent: list[str] = []

        def record(self: Compensation, changes: Any, undo: Any = None) -> None:
            if not sent and any(c.kind == "sysctl" for c in (
                    (changes,) if isinstance(changes, Change) else changes)):
                sent.append("record")  # the first sysctl written: Ctrl-C lands here
                signal.raise_signal(signal.SIGINT)
            real(self, changes, undo)

        monkeypatch.setattr(Compensation, "record", record)
        with pytest.raises(KeyboardInterrupt):
            group.apply(p)
        assert sent == ["record"]
        assert kernel_view(ns) == before
        assert not group.observe().owned
