"""Chains and jumps that are not k3snet's, next to k3snet's, against the real kernel.

An administrator may name a chain of their own ``K3SNET-...`` and jump to it, or
jump to one of k3snet's chains from a rule of their own. k3snet writes and deletes
only what is its own: such a chain or jump is left exactly as it is (a warning
says so), and an apply or a destroy that would have to write that chain, or
delete a chain that rule jumps to, is refused before anything runs (the dry run
too), naming the chain and the rule. Every test runs for iptables-nft and
iptables-legacy, IPv4 and IPv6, in a fresh ``k3snet-ipt-*`` namespace; what is
checked is the kernel's own view (``iptables-save``).
"""

from __future__ import annotations

import shlex

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.converge import destroy
from k3snet.errors import ApplyError, PlanError
from k3snet.lab.netns import run_in
from k3snet.model import Drift, ForwardRule, MasqueradeRule, State
from k3snet.planner import plan
from k3snet.render.iptables.rules import render_unit
from tests.shown import BOTH_WAYS, as_k3snet_ran, check_shown, inside, run_as_shown, shown

MODES = ["nft", "legacy"]

DESIRED = State(owned=[
    MasqueradeRule("10.50.0.0/16", destination="192.168.2.0/24"),
    ForwardRule("10.50.0.0/16", "192.168.2.0/24"),
    MasqueradeRule("fd42:50::/56", destination="fd01:2::/64"),
    ForwardRule("fd42:50::/56", "fd01:2::/64"),
])
MORE = State(owned=[*DESIRED.owned, MasqueradeRule("10.60.0.0/16", destination="192.168.3.0/24"),
                    MasqueradeRule("fd42:60::/56", destination="fd01:3::/64")])


def ipt(mode: str, family: int) -> str:
    return f"{'ip' if family == 4 else 'ip6'}tables-{mode}"


def run(ns: str, mode: str, family: int, *args: str) -> None:
    run_in(ns, [ipt(mode, family), "-w", *args])


def save(ns: str, mode: str, family: int) -> str:
    return run_in(ns, [f"{ipt(mode, family)}-save"]).stdout


def lines(text: str, word: str) -> list[str]:
    """The chain declarations and rules of ``text`` that name ``word`` (counters dropped)."""
    return [line.split(" ", 1)[0] if line.startswith(":") else line
            for line in text.splitlines() if word in line]


def body(text: str) -> list[str]:
    """``iptables-save`` text without its comments and counters."""
    return [line.rsplit(" [", 1)[0] if line.startswith(":") else line
            for line in text.splitlines() if not line.startswith("#")]


def admin_chains(ns: str, mode: str) -> None:
    """An administrator's own K3SNET-MINE chain in nat and filter, both families, each
    with a rule of theirs and a jump to it from the built-in chain."""
    for family in (4, 6):
        source = "10.9.0.0/16" if family == 4 else "fd09::/32"
        for table, builtin in (("nat", "POSTROUTING"), ("filter", "FORWARD")):
            run(ns, mode, family, "-t", table, "-N", "K3SNET-MINE")
            run(ns, mode, family, "-t", table, "-A", "K3SNET-MINE", "-s", source, "-j", "RETURN")
            run(ns, mode, family, "-t", table, "-I", builtin, "1", "-j", "K3SNET-MINE")


@pytest.mark.kernel
@pytest.mark.parametrize("mode", MODES)
def test_a_foreign_chain_with_k3snets_prefix_is_left_alone(ns: str, mode: str) -> None:
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), DESIRED))
    admin_chains(ns, mode)
    theirs = {family: lines(save(ns, mode, family), "K3SNET-MINE") for family in (4, 6)}
    assert all(len(found) == 6 for found in theirs.values()), theirs
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        observed = backend.observe()
        assert not [o for o in observed.owned if isinstance(o, Drift)], backend.drift
        assert backend.drift == ()
        assert plan(observed, DESIRED).empty
        warned = "\n".join(backend.warnings)
        assert "K3SNET-MINE" in warned
        assert "-A POSTROUTING -j K3SNET-MINE" in warned
        assert "-A FORWARD -j K3SNET-MINE" in warned
        more = plan(observed, MORE)
        assert backend.check(more) == ()
        backend.apply(more)
        assert plan(backend.observe(), MORE).empty
        # destroy: a dry run with the check, then the real thing
        preview = destroy(backend, dry_run=True)
        assert backend.check(preview.plan) == ()
        destroy(backend)
        assert not backend.observe().owned
    for family in (4, 6):
        text = save(ns, mode, family)
        assert lines(text, "K3SNET-MINE") == theirs[family]
        assert lines(text, "K3SNET") == theirs[family]


@pytest.mark.kernel
@pytest.mark.parametrize("mode", MODES)
def test_an_apply_that_needs_a_foreign_chains_name_is_refused_up_front(
    ns: str, mode: str
) -> None:
    # The administrator made the very bucket chain a new rule of k3snet's would go to.
    wanted = ForwardRule("10.70.0.0/16", "192.168.7.0/24")
    chain = render_unit(wanted).chain
    run(ns, mode, 4, "-N", chain)
    run(ns, mode, 4, "-A", chain, "-s", "10.9.0.0/16", "-j", "DROP")
    run(ns, mode, 4, "-A", "FORWARD", "-j", chain)
    before = {family: body(save(ns, mode, family)) for family in (4, 6)}
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        observed = backend.observe()
        assert backend.drift == ()
        p = plan(observed, State(owned=[wanted]))
        problems = backend.check(p)
        assert len(problems) == 1
        assert chain in problems[0]
        assert f"-A FORWARD -j {chain}" in problems[0]
        with pytest.raises(PlanError, match=chain):
            backend.apply(p)
    assert {family: body(save(ns, mode, family)) for family in (4, 6)} == before


@pytest.mark.kernel
@pytest.mark.parametrize("mode", MODES)
def test_a_foreign_jump_into_a_chain_k3snet_would_delete_refuses_with_the_command(
    ns: str, mode: str
) -> None:
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), DESIRED))
    bucket = render_unit(MasqueradeRule("fd42:50::/56", destination="fd01:2::/64")).chain
    # The administrator's own chain jumps into one of k3snet's (IPv6 nat).
    run(ns, mode, 6, "-t", "nat", "-N", "K3SNET-MINE")
    run(ns, mode, 6, "-t", "nat", "-A", "K3SNET-MINE", "-d", "fd01:2::/64", "-j", bucket)
    run(ns, mode, 6, "-t", "nat", "-A", "POSTROUTING", "-j", "K3SNET-MINE")
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        observed = backend.observe()
        assert backend.drift == ()
        assert any(bucket in w and "K3SNET-MINE" in w for w in backend.warnings)
        preview = destroy(backend, dry_run=True)
        problems = backend.check(preview.plan)
        assert problems
        assert bucket in problems[0]
        with pytest.raises(PlanError) as caught:
            destroy(backend)
        message = str(caught.value)
        assert f"-A K3SNET-MINE -d fd01:2::/64 -j {bucket}" in message
        command = next(part for part in message.split("`") if part.startswith("ip netns exec"))
        assert plan(backend.observe(), State()).changes == preview.plan.changes
        assert plan(observed, DESIRED).empty
    assert bucket in save(ns, mode, 6)
    # The command the error gives removes the administrator's jump; then destroy works.
    argv = shlex.split(command)
    assert argv[:4] == ["ip", "netns", "exec", ns]
    assert argv[4:7] == [ipt(mode, 6), "-t", "nat"]
    run_in(ns, argv[4:])
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        destroy(backend)
    text = save(ns, mode, 6)
    assert lines(text, "K3SNET") == [":K3SNET-MINE", "-A POSTROUTING -j K3SNET-MINE"]


# (family, table, built-in chain, the admin's jump into k3snet's main chain)
ADMIN_JUMPS = [
    (4, "filter", "FORWARD", ["-s", "10.50.0.0/16", "-j", "K3SNET-FORWARD"]),
    (4, "nat", "POSTROUTING", ["-j", "K3SNET-POSTROUTING"]),
    (6, "filter", "FORWARD", ["-i", "eth9", "-j", "K3SNET-FORWARD"]),
    (6, "nat", "POSTROUTING", ["-m", "comment", "--comment", "admin", "-j",
                               "K3SNET-POSTROUTING"]),
]


@pytest.mark.kernel
@pytest.mark.parametrize("mode", MODES)
def test_an_admins_own_jump_into_k3snets_chain_is_kept_and_destroy_names_it(
    ns: str, mode: str
) -> None:
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), DESIRED))
    for family, table, builtin, rule in ADMIN_JUMPS:
        run(ns, mode, family, "-t", table, "-I", builtin, "1", *rule)
    theirs = {family: [line for line in body(save(ns, mode, family))
                       if "-j K3SNET-" in line and "--comment k3snet" not in line
                       and not line.startswith("-A K3SNET-")] for family in (4, 6)}
    assert [len(found) for found in theirs.values()] == [2, 2], theirs
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        observed = backend.observe()
        assert backend.drift == ()
        assert plan(observed, DESIRED).empty
        warned = "\n".join(backend.warnings)
        for family in (4, 6):
            assert all(line in warned for line in theirs[family]), (theirs, warned)
        backend.apply(plan(observed, MORE))  # k3snet's own rules change; the jumps stay
        assert plan(backend.observe(), MORE).empty
        for family in (4, 6):
            text = body(save(ns, mode, family))
            assert all(line in text for line in theirs[family])
            # k3snet's own jump is there once besides the admin's
            assert text.count("-A FORWARD -m comment --comment k3snet -j K3SNET-FORWARD") == 1
        before = {family: body(save(ns, mode, family)) for family in (4, 6)}
        preview = destroy(backend, dry_run=True)
        problems = backend.check(preview.plan)
        with pytest.raises(PlanError) as caught:
            destroy(backend)
        message = str(caught.value)
        assert {family: body(save(ns, mode, family)) for family in (4, 6)} == before
    assert problems == (message,)  # the dry run says what apply says, every problem at once
    commands = [part for part in message.split("`") if part.startswith("ip netns exec")]
    assert len(commands) == 4, message
    for family, table, builtin, rule in ADMIN_JUMPS:
        expected = shlex.join(["ip", "netns", "exec", ns, ipt(mode, family), "-t", table,
                               "-D", builtin, *rule])
        assert expected in commands, (expected, commands)
    for command in commands:
        run_in(ns, shlex.split(command)[4:])
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        destroy(backend)
    for family in (4, 6):
        assert "K3SNET" not in save(ns, mode, family)


@pytest.mark.kernel
def test_k3snet_destroy_dry_run_says_what_destroy_would_refuse(
    ns: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from k3snet.cli import main  # noqa: PLC0415 - only here

    with IptablesBackend(ns, mode="nft") as backend:
        backend.apply(plan(backend.observe(), DESIRED))
    run(ns, "nft", 4, "-I", "FORWARD", "1", "-j", "K3SNET-FORWARD")
    argv = ["--backend", "iptables", "--netns", ns]
    capsys.readouterr()
    assert main(["destroy", "--dry-run", *argv]) == 1
    out = capsys.readouterr().out
    assert "check found problems" in out
    assert f"`ip netns exec {ns} iptables-nft -t filter -D FORWARD -j K3SNET-FORWARD`" in out
    assert main(["destroy", "--auto-approve", *argv]) != 0
    assert "-A FORWARD -j K3SNET-FORWARD" in save(ns, "nft", 4)
    run(ns, "nft", 4, "-D", "FORWARD", "-j", "K3SNET-FORWARD")
    assert main(["destroy", "--dry-run", *argv]) == 2
    assert main(["destroy", "--auto-approve", *argv]) == 0
    assert "K3SNET" not in save(ns, "nft", 4)


@pytest.mark.kernel
@pytest.mark.parametrize("mode", MODES)
def test_k3snets_chains_renamed_by_an_admin_are_left_alone_and_named_in_a_warning(
        ns: str, mode: str) -> None:
    # `iptables -E` renames a chain and every jump to it: k3snet's tagged jump from
    # FORWARD then reaches chains k3snet does not read, whose accepts still run, also
    # after a destroy. k3snet keeps them (it deletes only K3SNET-* chains) and says so.
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), DESIRED))
    bucket = next(line.split(" ", 1)[0][1:] for line in save(ns, mode, 4).splitlines()
                  if line.startswith(":K3SNET-F-"))
    run(ns, mode, 4, "-E", bucket, "ADMIN-ACCEPTS")
    run(ns, mode, 4, "-E", "K3SNET-FORWARD", "ADMIN-FORWARD")
    renamed = body(save(ns, mode, 4))
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.observe()
        warned = [w for w in backend.warnings if "ADMIN-FORWARD" in w]
        assert warned == ["IPv4 filter: a rule carrying k3snet's tag jumps to a chain that is "
                          "not k3snet's (renamed with `iptables -E`?): -A FORWARD -m comment "
                          "--comment k3snet -j ADMIN-FORWARD; k3snet neither reads nor removes "
                          "it, and the rules it reaches still run"]
        backend.apply(plan(backend.observe(), State()))
    # The kernel's view: the renamed chains and the jump to them are as the admin left them.
    after = body(save(ns, mode, 4))
    assert [line for line in after if "ADMIN-" in line] == \
        [line for line in renamed if "ADMIN-" in line]


@pytest.mark.kernel
@pytest.mark.parametrize("mode", MODES)
def test_a_jump_k3snet_did_not_read_makes_the_refused_chain_deletion_say_what_to_look_for(
    ns: str, mode: str
) -> None:
    """The kernel keeps a chain a rule jumps to. A jump written after the plan was made
    (or, with iptables-nft, from a base chain written with ``nft``, which iptables-nft-save
    leaves out) makes the restore refuse the table: iptables-legacy-restore said only
    "line 6 failed". The error names k3snet's chain and the command showing the jump;
    nothing was changed (the nat table committed before is taken back)."""
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), DESIRED))
    before = {family: body(save(ns, mode, family)) for family in (4, 6)}
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        p = plan(backend.observe(), State(owned=[]))
        assert backend.check(p) == ()
        run(ns, mode, 4, "-N", "ADMIN")
        run(ns, mode, 4, "-A", "ADMIN", "-j", "K3SNET-FORWARD")
        with pytest.raises(ApplyError) as caught:
            backend.apply(p)
    show = "nft list table ip filter" if mode == "nft" else "iptables-legacy-save -t filter"
    assert "deleting k3snet's chain K3SNET-FORWARD: a rule k3snet did not read" in str(
        caught.value)
    assert f"`ip netns exec {ns} {show}` shows it" in str(caught.value)
    after = body(save(ns, mode, 4))
    assert [line for line in after if "ADMIN" not in line] == before[4]
    assert body(save(ns, mode, 6)) == before[6]


@pytest.mark.kernel
@pytest.mark.parametrize("mode", MODES)
def test_the_commands_messages_name_run_where_k3snet_ran_without_netns(
    ns: str, mode: str
) -> None:
    """k3snet started inside the namespace (``ip netns exec NS k3snet destroy``, no
    ``--netns``) named the commands alone: ``iptables-legacy-save -t filter`` (``nft list
    table ip filter``), run as shown from the shell that ran k3snet, read the node's
    tables, where the jump is not. Both commands are run here as shown, from the test's
    own namespace."""
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), DESIRED))
    run(ns, mode, 4, "-N", "ADMIN")
    run(ns, mode, 4, "-A", "ADMIN", "-j", "K3SNET-FORWARD")

    def checked() -> tuple[str, ...]:
        with IptablesBackend(None, mode=mode) as backend:  # type: ignore[arg-type]
            return backend.check(plan(backend.observe(), State(owned=[])))

    def refused() -> str:
        with IptablesBackend(None, mode=mode) as backend:  # type: ignore[arg-type]
            p = plan(backend.observe(), State(owned=[]))
            assert backend.check(p) == ()
            run(ns, mode, 4, "-A", "ADMIN", "-j", "K3SNET-FORWARD")
            with pytest.raises(ApplyError) as caught:
                backend.apply(p)
        return str(caught.value)

    problems = inside(ns, checked)
    delete = f"{ipt(mode, 4)} -t filter -D ADMIN -j K3SNET-FORWARD"
    assert shown(ns, delete) in problems[0], problems
    run_as_shown(ns, delete)  # here, outside: as shown
    message = inside(ns, refused)
    show = "nft list table ip filter" if mode == "nft" else "iptables-legacy-save -t filter"
    assert f"{shown(ns, show)} shows it" in message, message
    out = run_as_shown(ns, show)
    assert "K3SNET-FORWARD" in out.split("ADMIN", 1)[1], out


@pytest.mark.kernel
def test_a_jump_from_a_base_chain_iptables_nft_save_leaves_out_is_named_by_nft(
        ns: str) -> None:
    with IptablesBackend(ns, mode="nft") as backend:
        backend.apply(plan(backend.observe(), DESIRED))
    run_in(ns, ["nft", "add chain ip filter theirs { type filter hook forward priority 5; }"])
    run_in(ns, ["nft", "add rule ip filter theirs meta mark 3 jump K3SNET-FORWARD"])
    with IptablesBackend(ns, mode="nft") as backend:
        p = plan(backend.observe(), State(owned=[]))
        # the warning's command runs in the namespace too (it read the node's table)
        assert any(f"(`ip netns exec {ns} nft list table ip filter` shows them)" in warning
                   for warning in backend.warnings), backend.warnings
        with pytest.raises(ApplyError, match=f"`ip netns exec {ns} nft list table ip filter` "
                                             "shows it"):
            backend.apply(p)
        assert plan(backend.observe(), DESIRED).empty  # nothing was changed


_NFT_WRITTEN = """
table ip filter {
  chain FORWARD { type filter hook forward priority 0; policy accept; }
  chain theirs { ip saddr 10.77.0.0/16 ct state new drop; }
}
table ip6 mangle {
  chain theirs { type filter hook forward priority -150; policy accept; }
}
table ip guard {
  chain gate { type filter hook forward priority 10; policy drop; }
}
"""


@pytest.mark.kernel
@BOTH_WAYS
def test_every_command_a_warning_names_runs_in_the_namespace_k3snet_read(
        ns: str, given: bool) -> None:
    """The warnings of a table iptables-nft cannot read, of base chains of raw, mangle or
    security iptables-nft-save leaves out, of a notrack of one protocol (which named
    ``iptables-save -t raw``, IPv6's too) and of another nftables table's default drop
    gave their commands alone, also under
    ``--netns NS`` and ``ip netns exec NS``: run as shown they read the node's tables.
    Each is run here as shown, from the test's own namespace, and finds what it names."""
    run_in(ns, ["nft", "-f", "-"], input_text=_NFT_WRITTEN)
    run(ns, "nft", 4, "-t", "raw", "-A", "PREROUTING", "-s", "10.50.0.0/16", "-p", "udp",
        "--dport", "53", "-j", "NOTRACK")
    run(ns, "nft", 6, "-t", "raw", "-A", "PREROUTING", "-s", "fd42:50::/56", "-p", "udp",
        "--dport", "53", "-j", "NOTRACK")

    def warned(netns: str | None) -> tuple[str, ...]:
        with IptablesBackend(netns, mode="nft") as backend:
            backend.expect(DESIRED)
            backend.observe()
            return backend.warnings

    warnings = as_k3snet_ran(ns, given, warned)
    expected = {
        "IPv4 filter: iptables-nft cannot read": ("nft list table ip filter", "10.77.0.0/16"),
        "IPv6 mangle: iptables-nft-save leaves out": ("nft list table ip6 mangle", "chain theirs"),
        "iptables IPv4 raw: -A PREROUTING -s 10.50.0.0/16": ("iptables-nft-save -t raw",
                                                              "--dport 53 -j NOTRACK"),
        "iptables IPv6 raw: -A PREROUTING -s fd42:50::/56": ("ip6tables-nft-save -t raw",
                                                              "--dport 53 -j NOTRACK"),
        "nftables ip guard chain gate runs": ("nft list table ip guard", "policy drop"),
    }
    for start, (command, seen) in expected.items():
        (said,) = [w for w in warnings if w.startswith(start)] or ["\n".join(warnings)]
        check_shown(said, ns, command, seen)  # run here, outside: as shown


# An admin's chain named as k3snet names its chains, with a rule whose comment has the
# shape of k3snet's tag: (table, chain, the rule's comment).
FORGED = {
    "bucket, bare tag": ("filter", "K3SNET-F-7", "k3snet"),
    "bucket, another bucket's digest": ("filter", "K3SNET-F-7", "k3snet:0123456789abcdef"),
    "exclusion chain, bare tag": ("nat", "K3SNET-M-0123456789abcdef", "k3snet"),
    "exclusion chain, another digest": ("nat", "K3SNET-M-0123456789abcdef",
                                        "k3snet:fedcba9876543210"),
    "main chain, bare tag": ("filter", "K3SNET-FORWARD", "k3snet"),
}


@pytest.mark.kernel
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("forged", list(FORGED))
def test_a_chain_named_as_k3snet_s_with_a_rule_tagged_as_k3snet_s_is_not_taken_by_its_name(
    ns: str, mode: str, forged: str
) -> None:
    # A chain of k3snet's name was k3snet's once one of its rules had a comment of the
    # shape k3snet writes (`k3snet`, or `k3snet:` and 16 hex digits): an admin's script
    # marking its rules so made its chain drift, its rules deleted by the next apply and
    # by destroy. Now a rule makes the chain k3snet's only if it is one k3snet writes
    # there (its main chain: a jump to a bucket; a bucket: a digest of that bucket; an
    # exclusion chain: its own digest).
    table, chain, comment = FORGED[forged]
    for family in (4, 6):
        source = "10.9.0.0/16" if family == 4 else "fd09::/32"
        run(ns, mode, family, "-t", table, "-N", chain)
        run(ns, mode, family, "-t", table, "-A", chain, "-s", source, "-m", "comment",
            "--comment", comment, "-j", "RETURN")
    theirs = {family: lines(save(ns, mode, family), chain) for family in (4, 6)}
    assert all(len(found) == 2 for found in theirs.values()), theirs
    wanted = State(owned=[r for r in DESIRED.owned if isinstance(r, MasqueradeRule)])
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        observed = backend.observe()
        assert backend.drift == ()
        assert f"chain {chain} is not k3snet's" in "\n".join(backend.warnings)
        backend.apply(plan(observed, wanted))
        assert plan(backend.observe(), wanted).empty
        destroy(backend)
        assert not backend.observe().owned
    for family in (4, 6):
        text = save(ns, mode, family)
        assert lines(text, chain) == theirs[family]  # the kernel's view: theirs, as it was
        assert [line for line in lines(text, "K3SNET") if chain not in line] == []
