"""The iptables backend against the real kernel, in namespaces these tests create.

Every kernel test runs in a fresh ``k3snet-ipt-*`` namespace (deleted afterwards,
also on failure) for iptables-nft and iptables-legacy with the ``restore`` driver,
and for iptables-legacy with the ``libiptc`` driver. The kernel's own view
(``iptables-save``) is what is checked, not only what ``observe`` says.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k3snet.backends.iptables import IptablesBackend
from k3snet.errors import ApplyError, BackendError
from k3snet.lab.netns import create_netns, delete_netns, run_in, unique_name
from k3snet.model import Drift, ForwardRule, MasqueradeRule, NetObject, SnatRule, State
from k3snet.planner import plan
from k3snet.render.iptables import render_iptables_save
from k3snet.render.iptables import rules as iptables_rules
from k3snet.render.iptables.rules import (
    clear_caches,
    rebuild_unit,
    render_new,
    render_unit,
    tokenize,
)
from k3snet.render.tag import content_digest
from k3snet.testing import run_conformance, strategies
from k3snet.testing.k3s import NODE_V4, NODE_V6
from tests.dropped import dropped, iptables_count
from tests.examples import examples

CONFIGS = [
    pytest.param(("nft", "restore"), id="nft-restore"),
    pytest.param(("legacy", "restore"), id="legacy-restore"),
    pytest.param(("legacy", "libiptc"), id="legacy-libiptc"),
]

FOREIGN_V4 = NODE_V4
FOREIGN_V6 = NODE_V6

# flannel's pod-to-pod returns before its masquerade spare the cluster CIDR
FLANNEL_MASQ = MasqueradeRule("10.42.0.0/16", exclude=["10.42.0.0/16", "224.0.0.0/4"],
                              random_fully=True)
FLANNEL_FWD = ForwardRule("10.42.0.0/16", "0.0.0.0/0")

DESIRED = State(owned=[
    MasqueradeRule("10.50.0.0/16", destination="192.168.2.0/24", out_interface="eth0",
                   random_fully=True),
    SnatRule("10.50.0.0/16", destination="198.51.100.0/24",
             exclude=["198.51.100.0/28", "198.51.100.64/26"], to_address="192.168.1.5"),
    MasqueradeRule("10.99.0.0/16", exclude=["10.0.0.0/8"]),
    MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24"),  # met by flannel's
    ForwardRule("10.50.0.0/16", "192.168.2.0/24", in_interface="cni0", out_interface="eth0"),
    MasqueradeRule("fd42:50::/56", destination="fd01:2::/64", out_interface="eth0"),
    ForwardRule("fd42:50::/56", "fd01:2::/64"),
])

DESIRED_FORWARD_V4 = ForwardRule("10.50.0.0/16", "192.168.2.0/24", in_interface="cni0",
                                 out_interface="eth0")
_COUNTERS = re.compile(r"\[\d+:\d+\]")


# -- fixtures and helpers -------------------------------------------------------------




@pytest.fixture(params=CONFIGS)
def config(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(mode, driver)."""
    mode, driver = request.param
    if driver == "libiptc":
        pytest.importorskip("iptc")
    return mode, driver


def make(ns: str, config: tuple[str, str], **options: object) -> IptablesBackend:
    mode, driver = config
    return IptablesBackend(ns, mode=mode, driver=driver, **options)  # type: ignore[arg-type]


def tool(mode: str, family: int, kind: str) -> str:
    return f"{'ip' if family == 4 else 'ip6'}tables-{mode}-{kind}"


def restore(ns: str, mode: str, family: int, text: str, *extra: str) -> None:
    run_in(ns, [tool(mode, family, "restore"), "--noflush", "-w", *extra], input_text=text)


def seed(ns: str, mode: str) -> None:
    restore(ns, mode, 4, FOREIGN_V4)
    restore(ns, mode, 6, FOREIGN_V6)


def save(ns: str, mode: str, family: int) -> str:
    return run_in(ns, [tool(mode, family, "save")]).stdout


def saves(ns: str, mode: str) -> dict[int, str]:
    return {family: save(ns, mode, family) for family in (4, 6)}


def kernel(ns: str, mode: str) -> dict[int, list[str]]:
    """Both families' tables, without the timestamp comments and the counters."""
    return {family: without_counters(text) for family, text in saves(ns, mode).items()}


def foreign_lines(text: str) -> list[str]:
    """Every table, chain and rule that is not ours (counters and comments dropped)."""
    return [_COUNTERS.sub("[-]", line) for line in text.splitlines()
            if line and not line.startswith("#") and "K3SNET" not in line]


def without_counters(text: str) -> list[str]:
    return [_COUNTERS.sub("[-]", line) for line in text.splitlines()
            if line and not line.startswith("#")]


def our_rules(text: str) -> dict[tuple[str, str], list[tuple[str, ...]]]:
    """Our chains' rules and the jumps into them, per (table, chain), bucket chains sorted."""
    rules: dict[tuple[str, str], list[tuple[str, ...]]] = {}
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(("-A ", "-I ")) and "K3SNET" in line:
            words = line.split(" ", 2)
            chain, rest = words[1], words[2]
            if line.startswith("-I "):
                rest = rest.split(" ", 1)[1]  # drop the position
            rules.setdefault((table, chain), []).append(tokenize(rest))
    for (_, chain), lines in rules.items():
        if chain.startswith(("K3SNET-N-", "K3SNET-F-")):
            lines.sort()
    return rules


def our_layout(text: str) -> tuple[object, ...]:
    """Our chains (declared), their rules and the jumps into them."""
    return our_rules(text), sorted(line.split()[0] for line in text.splitlines()
                                   if line.startswith(":K3SNET"))


def assert_kernel_matches(ns: str, mode: str, state: State) -> None:
    for family in (4, 6):
        assert our_layout(save(ns, mode, family)) == our_layout(
            render_iptables_save(state, family)
        ), f"IPv{family} kernel rules differ from the rendering of {state.render()}"


def first_rule(text: str, table: str, chain: str) -> str:
    return chain_rules(text, table, chain)[0]


def chain_rules(text: str, table: str, chain: str) -> list[str]:
    section = text.split(f"*{table}\n", 1)[1].split("COMMIT", 1)[0]
    return [line for line in section.splitlines() if line.startswith(f"-A {chain} ")]


def assert_jump_after_foreign(text: str, first: str | None = None) -> None:
    """k3snet's FORWARD jump, created on a node without a catch-all deny, comes after
    every foreign rule: whatever those decide is decided before k3snet's accepts."""
    rules = chain_rules(text, "filter", "FORWARD")
    assert first is None or rules[0] == first, rules
    assert rules[-1] == "-A FORWARD -m comment --comment k3snet -j K3SNET-FORWARD", rules
    assert sum("K3SNET-FORWARD" in rule for rule in rules) == 1, rules


# -- pure: what we write reads back -------------------------------------------------


@settings(max_examples=examples(300), deadline=None)
@given(obj=st.one_of(strategies.nat_rules(), strategies.forward_rules()))
def test_every_object_is_rebuilt_from_its_rules(obj: NetObject) -> None:
    unit = render_unit(obj)
    chains = {unit.chain: list(unit.lines)}
    if unit.sub_chain is not None:
        chains[unit.sub_chain] = list(unit.sub_lines)
    clear_caches()  # rebuilt from the text alone, as in a fresh process
    assert obj.family is not None
    assert rebuild_unit(obj.family, unit.digest, unit.chain, unit.lines, chains) == unit


@pytest.mark.parametrize(("obj", "digest"), [
    (MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24"), "f4ea67c6cf214f99"),
    (MasqueradeRule("10.42.0.0/16", out_interface="eth0", random_fully=True), "2614235f0694fe1e"),
    (MasqueradeRule("0.0.0.0/0", destination="192.168.2.0/24"), "6b47f6fd9ed811ee"),
    (MasqueradeRule("fd42:50::/56", destination="fd01:2::/64", out_interface="eth0"),
     "74af48b888a5226d"),
    (SnatRule("10.50.0.0/16", destination="198.51.100.0/24",
              exclude=["198.51.100.0/28", "198.51.100.64/26"], to_address="192.168.1.5"),
     "9803df82231dec92"),
    (ForwardRule("10.50.0.0/16", "192.168.2.0/24", in_interface="cni0", out_interface="eth0"),
     "7d052c43265ec5b7"),
])
def test_hashes_of_rules_already_written_never_change(obj: NetObject, digest: str) -> None:
    # Rules on nodes carry these: a new hash would make every one of them look foreign.
    clear_caches()
    assert render_unit(obj).digest == digest


def test_the_usual_masquerade_renders_as_before() -> None:
    unit = render_unit(MasqueradeRule("10.42.0.0/16", out_interface="eth0", random_fully=True))
    assert unit.chain == "K3SNET-N-d0-s16-o-2"
    assert unit.lines == (("-s", "10.42.0.0/16", "-o", "eth0", "-m", "comment", "--comment",
                           "k3snet:2614235f0694fe1e", "-j", "MASQUERADE", "--random-fully"),)
    unit = render_unit(MasqueradeRule("0.0.0.0/0", destination="192.168.2.0/24"))
    assert unit.chain == "K3SNET-N-d24-s0-a-6"
    assert unit.lines == (("-d", "192.168.2.0/24", "-m", "comment", "--comment",
                           "k3snet:6b47f6fd9ed811ee", "-j", "MASQUERADE"),)


@settings(max_examples=examples(300), deadline=None)
@given(obj=st.one_of(strategies.nat_rules(), strategies.forward_rules()))
def test_the_fast_rendering_hashes_the_canonical_text(obj: NetObject) -> None:
    # Plain masquerades take an unrolled path: it must hash what _canonical() says.
    assert isinstance(obj, MasqueradeRule | SnatRule | ForwardRule)
    canonical = iptables_rules._canonical(obj)
    assert render_unit(obj).digest == content_digest(canonical[0])
    assert canonical[1] == str(obj.source)  # the fast address text is ipaddress' own


@settings(max_examples=examples(300), deadline=None)
@given(obj=strategies.nat_rules())
def test_the_fast_rendering_renders_what_the_general_path_does(obj: NetObject) -> None:
    # The unrolled path reads addresses from the object's key, not from ipaddress.
    if type(obj) is MasqueradeRule and not obj.exclude:
        assert iptables_rules._build_plain_masquerade(obj) == iptables_rules._build_general(obj)
    assert render_new(obj) == iptables_rules._build_general(obj) == render_unit(obj)


def test_tokenize_undoes_iptables_save_quoting() -> None:
    assert tokenize('-s 10.0.0.0/8 -m comment --comment "a \\"b\\" c" -j ACCEPT') == (
        "-s", "10.0.0.0/8", "-m", "comment", "--comment", 'a "b" c', "-j", "ACCEPT")
    assert tokenize('-m comment --comment "k3snet:0123456789abcdef" -j MASQUERADE') == (
        "-m", "comment", "--comment", "k3snet:0123456789abcdef", "-j", "MASQUERADE")


def test_bad_options_are_refused() -> None:
    with pytest.raises(BackendError, match="driver"):
        IptablesBackend(driver="iptc")  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="mode"):
        IptablesBackend(mode="nf_tables")  # type: ignore[arg-type]


# -- kernel ---------------------------------------------------------------------------


@pytest.mark.kernel
def test_apply_observe_and_remove_leave_foreign_rules_alone(
    ns: str, config: tuple[str, str]
) -> None:
    mode = config[0]
    seed(ns, mode)
    before = saves(ns, mode)
    with make(ns, config) as backend:
        observed = backend.observe()
        assert not observed.owned
        assert FLANNEL_MASQ in observed.foreign
        assert FLANNEL_FWD in observed.foreign
        # kube-proxy's masquerade only sees marked packets: it must not look universal.
        assert MasqueradeRule("0.0.0.0/0", random_fully=True) not in observed.foreign
        p = plan(observed, DESIRED)
        assert [n.wanted for n in p.met] == [MasqueradeRule("10.42.0.0/16",
                                                            destination="192.168.2.0/24")]
        assert backend.check(p) == ()
        assert kernel(ns, mode) == {f: without_counters(t) for f, t in before.items()}, (
            "check() changed the kernel")

        result = backend.apply(p)
        assert result.applied == p.changes
        # One restore run per family (both tables in it); libiptc: one commit per table.
        assert result.operations == (4 if config[1] == "libiptc" else 2)
        target = State(owned=p.target(DESIRED))
        assert_kernel_matches(ns, mode, target)
        after = saves(ns, mode)
        for family in (4, 6):
            assert foreign_lines(after[family]) == foreign_lines(before[family])
            assert_jump_after_foreign(after[family])
            assert after[family].count("-j K3SNET-POSTROUTING") == 1

        again = backend.observe()
        assert again.owned == target.owned
        order = backend.ordered(4)  # the order packets meet them: NAT most specific first
        assert set(order) == {o for o in target.owned if o.family == 4}
        nat = [o for o in order if not isinstance(o, ForwardRule)]
        assert nat[0] == MasqueradeRule("10.50.0.0/16", destination="192.168.2.0/24",
                                        out_interface="eth0", random_fully=True)
        assert nat[-1] == MasqueradeRule("10.99.0.0/16", exclude=["10.0.0.0/8"])
        assert plan(again, DESIRED).empty
        assert backend.drift == ()
        clear_caches()  # nothing remembered: every object rebuilt from the kernel's text
        with make(ns, config) as fresh:
            assert fresh.observe() == again

        backend.apply(plan(backend.observe(), State()))
        final = saves(ns, mode)
        for family in (4, 6):
            assert "K3SNET" not in final[family]
            assert foreign_lines(final[family]) == foreign_lines(before[family])
        assert not backend.observe().owned


@pytest.mark.kernel
def test_one_change_among_many_is_one_small_restore(ns: str, config: tuple[str, str]) -> None:
    mode = config[0]
    rules = [MasqueradeRule(f"10.{i // 256}.{i % 256}.0/24", destination="192.168.2.0/24")
             for i in range(300)]
    with make(ns, config) as backend:
        backend.apply(plan(backend.observe(), State(owned=rules)))
        before = our_rules(save(ns, mode, 4))
        changed = [*rules[:-1], SnatRule("10.99.0.0/24", destination="192.168.2.0/24",
                                         to_address="192.168.1.5")]
        p = plan(backend.observe(), State(owned=changed))
        assert len(p) == 2
        result = backend.apply(p)
        assert result.operations == 1
        after = our_rules(save(ns, mode, 4))
        touched = {chain for chain in before.keys() | after.keys()
                   if before.get(chain) != after.get(chain)}
        assert len(touched) <= 3, f"one change rewrote {sorted(touched)}"
        assert_kernel_matches(ns, mode, State(owned=changed))
        assert plan(backend.observe(), State(owned=changed)).empty
        # Applying again without observing in between: the backend knows what it wrote.
        third = [*changed[:-1], MasqueradeRule("10.98.0.0/24")]
        backend.apply(plan(State(owned=changed), State(owned=third)))
        assert_kernel_matches(ns, mode, State(owned=third))


@pytest.mark.kernel
@pytest.mark.parametrize("where", ["first table", "last table"])
def test_a_refused_apply_leaves_the_kernel_as_it_was(
    ns: str, config: tuple[str, str], where: str
) -> None:
    mode = config[0]
    seed(ns, mode)
    with make(ns, config) as backend:
        backend.apply(plan(backend.observe(), DESIRED))
    before = kernel(ns, mode)
    wanted = State(owned=[
        *[o for o in DESIRED.owned if not isinstance(o, ForwardRule)],
        ForwardRule("10.60.0.0/16", "192.168.3.0/24"),
        MasqueradeRule("10.61.0.0/16", exclude=["192.168.0.0/16", "172.16.0.0/12"]),
        MasqueradeRule("fd42:61::/56"),
    ])
    with make(ns, config) as probe:
        p = plan(probe.observe(), wanted)
    tables = {(c.subject.family, c.kind) for c in p.changes}
    assert len(tables) >= 3, p.render()
    fail_after = 0 if where == "first table" else len(p.changes) - 1
    with make(ns, config) as backend:
        observed = backend.observe()
        backend.faults.fail_at(fail_after)
        with pytest.raises(ApplyError) as caught:
            backend.apply(p)
        error = caught.value
        assert error.failed == p.changes[fail_after]
        # no chain deletion was refused: no hint of a jump k3snet did not read
        assert "deleting k3snet's chain" not in str(error), error
        if where == "first table":
            assert error.done == ()
            assert error.rolled_back == ()
        else:
            assert error.done
            assert len(error.rolled_back) == len(error.done)
        after = kernel(ns, mode)
        assert after == before
        assert backend.observe() == observed
        assert plan(backend.observe(), wanted) == p
        backend.apply(p)  # the hook is used up: the same plan now goes through
        assert_kernel_matches(ns, mode, State(owned=p.target(wanted)))


@pytest.mark.kernel
def test_a_big_apply_pauses_the_gc_and_always_resumes_it(ns: str) -> None:
    # 1000+ changes: rendered without the per-object memo, the GC paused meanwhile
    # and resumed before the kernel's commit is awaited (or on failure).
    import gc  # noqa: PLC0415 - only here

    big = State(owned=[MasqueradeRule(f"10.{i // 256}.{i % 256}.0/24",
                                      destination="192.168.2.0/24") for i in range(1200)])
    assert gc.isenabled()
    with IptablesBackend(ns, mode="legacy") as backend:
        p = plan(backend.observe(), big)
        backend.faults.fail_at(600)
        with pytest.raises(ApplyError):
            backend.apply(p)
        assert gc.isenabled()
        assert not backend.observe().owned
        backend.apply(p)
        assert gc.isenabled()
    clear_caches()  # read back from the rule text, as in a fresh process
    with IptablesBackend(ns, mode="legacy") as backend:
        assert plan(backend.observe(), big).empty
        backend.apply(plan(backend.observe(), State()))
        assert not backend.observe().owned
    assert not any("K3SNET" in line for lines in kernel(ns, "legacy").values() for line in lines)


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_failure_while_streaming_a_table_commits_nothing(
    ns: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The restore driver feeds one process per family while rendering: the second
    # table is rendered before the first one's COMMIT is sent, so an error in the
    # middle of it kills the process before anything is committed.
    import k3snet.backends.iptables.backend as module  # noqa: PLC0415 - patched here only
    from k3snet.backends.iptables.table import plan_table as real  # noqa: PLC0415

    seed(ns, mode)
    before = kernel(ns, mode)
    calls: list[int] = []

    def failing(state: object, changes: object, sink: object = None) -> object:
        calls.append(1)
        if len(calls) == 2:
            assert sink is not None
            sink(["-A K3SNET-HALF-WRITTEN -j ACCEPT"])  # type: ignore[operator]
            raise ValueError("injected while streaming")
        return real(state, changes, sink)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "plan_table", failing)
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        with pytest.raises(ApplyError, match="injected while streaming") as caught:
            backend.apply(plan(backend.observe(), DESIRED))
        assert caught.value.done == ()
        assert kernel(ns, mode) == before
        monkeypatch.setattr(module, "plan_table", real)
        backend.apply(plan(backend.observe(), DESIRED))
        assert plan(backend.observe(), DESIRED).empty


@pytest.mark.kernel
def test_a_new_jump_goes_ahead_of_the_final_drop_even_if_the_chain_changed_since_observe(
        ns: str, config: tuple[str, str]) -> None:
    # Another program edits FORWARD between observe and apply (an `apply` waiting for
    # its confirmation, an agent pass): the jump's position, counted on what observe
    # read, would put it behind the catch-all DROP, which then drops what it accepts.
    mode = config[0]
    ipt = f"iptables-{mode}"
    run_in(ns, [ipt, "-w", "-A", "FORWARD", "-s", "10.9.0.0/16", "-j", "ACCEPT"])
    run_in(ns, [ipt, "-w", "-A", "FORWARD", "-j", "DROP"])
    wanted = State(owned=[FLANNEL_FWD])
    with make(ns, config) as backend:
        p = plan(backend.observe(), wanted)
        run_in(ns, [ipt, "-w", "-D", "FORWARD", "-s", "10.9.0.0/16", "-j", "ACCEPT"])
        backend.apply(p)
    forward = [line for line in without_counters(save(ns, mode, 4))
               if line.startswith("-A FORWARD")]
    assert forward == ["-A FORWARD -m comment --comment k3snet -j K3SNET-FORWARD",
                       "-A FORWARD -j DROP"]
    with make(ns, config) as again:
        assert plan(again.observe(), wanted).empty


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_queue_to_a_program_before_the_jump_is_a_conflict_and_no_jump_is_written(
        ns: str, mode: str) -> None:
    # An IPS (Suricata) queues forwarded packets: its verdict ends the table for them,
    # and an accept of k3snet's behind it would never be reached.
    rule = "-A FORWARD -s 10.42.0.0/16 -j NFQUEUE --queue-num 1 --queue-bypass"
    run_in(ns, [f"iptables-{mode}", "-w", *rule.split()])
    wanted = State(owned=[FLANNEL_FWD])
    with make(ns, (mode, "restore")) as backend:
        p = plan(backend.observe(), wanted)
        assert [(n.status, getattr(n.foreign, "rule", None)) for n in p.notes] == \
            [("conflict", rule)]
        backend.apply(p)
    forward = [line for line in without_counters(save(ns, mode, 4))
               if line.startswith("-A FORWARD")]
    assert forward == [rule]


@pytest.mark.kernel
def test_a_missing_namespace_is_a_clear_error(require_root: None) -> None:
    with pytest.raises(BackendError, match="does not exist"):
        IptablesBackend(f"k3snet-missing-{secrets.token_hex(3)}")
    name = create_netns(unique_name("ipt"))
    try:
        backend = IptablesBackend(name, mode="nft")
    finally:
        delete_netns(name)
    with pytest.raises(BackendError, match=name):
        backend.observe()


@pytest.mark.kernel
def test_libiptc_refuses_an_nft_namespace(ns: str) -> None:
    pytest.importorskip("iptc")
    with pytest.raises(BackendError, match="legacy"):
        IptablesBackend(ns, driver="libiptc", mode="nft")
    restore(ns, "nft", 4, "*nat\n:KUBE-POSTROUTING - [0:0]\nCOMMIT\n")
    with pytest.raises(BackendError, match="iptables-nft"):
        IptablesBackend(ns, driver="libiptc")


@pytest.mark.kernel
def test_mode_detection(ns: str) -> None:
    version = subprocess.run(["iptables", "--version"], capture_output=True, text=True,
                             check=True).stdout
    expected = "legacy" if "legacy" in version else "nft"
    assert IptablesBackend(ns).mode == expected  # nothing anywhere: the host's default
    assert IptablesBackend(ns, mode="legacy").mode == "legacy"  # explicit wins
    other = "legacy" if expected == "nft" else "nft"
    restore(ns, other, 4, "*filter\n:FORWARD DROP [0:0]\nCOMMIT\n")
    backend = IptablesBackend(ns)
    assert backend.mode == other, backend.mode_reason
    # K3s chains in the host's default flavour outweigh a bare policy in the other one.
    restore(ns, expected, 4, "*nat\n:FLANNEL-POSTRTG - [0:0]\nCOMMIT\n")
    assert IptablesBackend(ns).mode == expected
    # Our own chains outweigh everything.
    restore(ns, other, 6, "*nat\n:K3SNET-POSTROUTING - [0:0]\nCOMMIT\n")
    assert IptablesBackend(ns).mode == other


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_drift_is_found_and_repaired(ns: str, mode: str) -> None:
    seed(ns, mode)
    before = saves(ns, mode)
    ipt = f"iptables-{mode}"
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        first_plan = plan(backend.observe(), DESIRED)
        target = State(owned=first_plan.target(DESIRED))
        backend.apply(first_plan)
        victim = MasqueradeRule("10.99.0.0/16", exclude=["10.0.0.0/8"])
        unit = render_unit(victim)
        # 1. a rule edited by hand, its hash comment kept
        bucket = [line for line in save(ns, mode, 4).splitlines()
                  if line.startswith(f"-A {unit.chain} ")]
        position = next(i for i, line in enumerate(bucket) if unit.digest in line) + 1
        edited = list(unit.lines[0])
        edited[edited.index("10.99.0.0/16")] = "10.98.0.0/16"
        run_in(ns, [ipt, "-w", "-t", "nat", "-R", unit.chain, str(position), *edited])
        # 2. a foreign rule inserted above our FORWARD jump (an admin): not drift, and
        # it stays first (it drops none of our traffic, so our accepts stay ours)
        run_in(ns, [ipt, "-w", "-I", "FORWARD", "1", "-s", "203.0.113.0/24", "-j", "DROP"])
        # 3. a second jump to our NAT chain, and a stray chain of ours (a name k3snet
        # writes; K3SNET-* names it never writes are someone else's)
        run_in(ns, [ipt, "-w", "-t", "nat", "-A", "POSTROUTING", "-m", "comment", "--comment",
                    "k3snet", "-j", "K3SNET-POSTROUTING"])
        run_in(ns, [ipt, "-w", "-t", "nat", "-N", "K3SNET-N-d7-s3-o-f"])

        observed = backend.observe()
        assert len(backend.drift) >= 4, backend.drift
        assert victim not in observed.owned
        # A second jump to our NAT chain still reaches it (the NAT rules stay ours, the
        # extra jump is drift).
        assert DESIRED_FORWARD_V4 in observed.owned
        assert MasqueradeRule("10.50.0.0/16", destination="192.168.2.0/24", out_interface="eth0",
                              random_fully=True) in observed.owned
        assert {d.where for d in observed.owned if isinstance(d, Drift)} & {
            "IPv4 nat K3SNET-N-d7-s3-o-f", "IPv4 nat POSTROUTING", "IPv4 filter FORWARD"} == {
            "IPv4 nat K3SNET-N-d7-s3-o-f", "IPv4 nat POSTROUTING"}
        p = plan(observed, DESIRED)
        assert p.counts()["add"] > 0
        backend.apply(p)
        assert_kernel_matches(ns, mode, target)
        assert plan(backend.observe(), DESIRED).empty
        assert backend.drift == ()
        text = save(ns, mode, 4)
        assert_jump_after_foreign(text, first="-A FORWARD -s 203.0.113.0/24 -j DROP")
        assert text.count("-j K3SNET-POSTROUTING") == 1
        assert "K3SNET-N-d7-s3-o-f" not in text
        # 4. jumps of our main chain out of order
        main = [line for line in text.splitlines() if line.startswith("-A K3SNET-POSTROUTING")]
        assert len(main) >= 2
        first = main[0].split(" ", 2)[2].split()
        run_in(ns, [ipt, "-w", "-t", "nat", "-D", "K3SNET-POSTROUTING", "1"])
        run_in(ns, [ipt, "-w", "-t", "nat", "-A", "K3SNET-POSTROUTING", *first])
        observed = backend.observe()
        assert backend.drift
        backend.apply(plan(observed, DESIRED))
        assert_kernel_matches(ns, mode, target)
        backend.apply(plan(backend.observe(), State()))
    final = saves(ns, mode)
    for family in (4, 6):
        assert "K3SNET" not in final[family]
        expected = foreign_lines(before[family])
        if family == 4:  # the administrator's own rule stays where it was put
            expected.insert(expected.index("-A FORWARD -j DOCKER-USER"),
                            "-A FORWARD -s 203.0.113.0/24 -j DROP")
        assert foreign_lines(final[family]) == expected


VICTIM = MasqueradeRule("10.99.0.0/16", exclude=["10.0.0.0/8"])
_HOOK = ["-m", "comment", "--comment", "k3snet", "-j"]


def _drift_commands(kind: str) -> list[list[str]]:
    """iptables arguments that put one kind of drift into k3snet's IPv4 chains."""
    unit = render_unit(VICTIM)
    return {
        "extra-rule": [["-t", "nat", "-A", unit.chain, "-j", "ACCEPT"]],
        "extra-rule-in-main": [["-t", "nat", "-A", "K3SNET-POSTROUTING", "-j", "RETURN"]],
        # a name k3snet writes in that table (see tests/iptables/test_foreign_chains.py
        # for others; in filter it is an administrator's: test_admin_main_chain.py)
        "extra-chain": [["-t", "nat", "-N", "K3SNET-N-d7-s3-o-f"]],
        "forged-tag": [["-t", "nat", "-A", unit.chain, "-s", "10.77.0.0/16", "-m", "comment",
                        "--comment", "k3snet:0123456789abcdef", "-j", "MASQUERADE"]],
        "duplicate-rule": [["-t", "nat", "-A", unit.chain, *unit.lines[0]]],
        # VICTIM is alone in its bucket chain: rule 1, edited with its tag kept.
        "tag-not-of-its-rule": [["-t", "nat", "-R", unit.chain, "1",
                                 *(("10.98.0.0/16" if t == "10.99.0.0/16" else t)
                                   for t in unit.lines[0])]],
        "duplicate-main-jump": [["-t", "nat", "-A", "K3SNET-POSTROUTING", *_HOOK,
                                 unit.chain]],
        "missing-hook": [["-t", "nat", "-D", "POSTROUTING", *_HOOK, "K3SNET-POSTROUTING"]],
        "missing-forward-hook": [["-t", "filter", "-D", "FORWARD", *_HOOK, "K3SNET-FORWARD"]],
    }.get(kind, [])


def _fresh_reading(ns: str, mode: str, hint: State | None) -> tuple[object, ...]:
    """What a fresh process's observe reads (render cache cleared), with or without ``expect``."""
    clear_caches()
    with make(ns, (mode, "restore")) as backend:
        if hint is not None:
            backend.expect(hint)
        observed = backend.observe()
        return observed.owned, observed.foreign, backend.drift, backend.ordered(4), \
            backend.ordered(6)


DRIFT_KINDS = ["extra-rule", "extra-rule-in-main", "extra-chain", "forged-tag",
               "tag-not-of-its-rule", "duplicate-rule",
               "duplicate-main-jump", "missing-hook", "missing-forward-hook",
               "rules.v4-loaded-twice"]


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
@pytest.mark.parametrize("kind", DRIFT_KINDS)
def test_each_drift_kind_is_a_planned_change_that_apply_repairs(
    ns: str, mode: str, kind: str
) -> None:
    seed(ns, mode)
    before = saves(ns, mode)
    with make(ns, (mode, "restore")) as backend:
        first = plan(backend.observe(), DESIRED)
        target = State(owned=first.target(DESIRED))
        backend.apply(first)
    if kind == "rules.v4-loaded-twice":  # at boot, then once more by hand
        restore(ns, mode, 4, render_iptables_save(target, 4))
    for command in _drift_commands(kind):
        run_in(ns, [f"iptables-{mode}", "-w", *command])
    drifted = saves(ns, mode)
    assert (any(our_layout(drifted[f]) != our_layout(render_iptables_save(target, f))
                for f in (4, 6))
            or foreign_lines(drifted[4]) != foreign_lines(before[4])), f"{kind}: no drift made"
    # The expect hint (what converge hands the backend first) changes nothing read.
    assert _fresh_reading(ns, mode, DESIRED) == _fresh_reading(ns, mode, None)

    with make(ns, (mode, "restore")) as backend:
        observed = backend.observe()
        drift = [o for o in observed.owned if isinstance(o, Drift)]
        assert drift, f"{kind}: observe saw nothing"
        p = plan(observed, DESIRED)
        assert not p.empty  # `k3snet plan` exits 2
        assert {c.subject for c in p.changes if c.action == "delete"} >= set(drift)
        backend.apply(p)
    # The kernel's own view: k3snet's chains are what it renders, foreign rules untouched.
    after = saves(ns, mode)
    assert_kernel_matches(ns, mode, target)
    for family in (4, 6):
        assert foreign_lines(after[family]) == foreign_lines(drifted[family])
        assert foreign_lines(after[family]) == foreign_lines(before[family])
        assert after[family].count("-j K3SNET-POSTROUTING") == 1
        assert_jump_after_foreign(after[family])
        assert "K3SNET-N-d7-s3-o-f" not in after[family]
    with make(ns, (mode, "restore")) as fresh:
        assert plan(fresh.observe(), DESIRED).empty
        assert fresh.drift == ()
    assert _fresh_reading(ns, mode, DESIRED) == _fresh_reading(ns, mode, None)


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_two_applies_planned_from_one_reading_leave_one_jump_per_hook(ns: str, mode: str) -> None:
    # Both read the node before either wrote: the second places no jump of its own
    # (it reads the built-in chains again before placing one), so nothing is left to repair.
    seed(ns, mode)
    before = saves(ns, mode)
    with make(ns, (mode, "restore")) as backend, make(ns, (mode, "restore")) as other:
        first = plan(backend.observe(), DESIRED)
        target = State(owned=first.target(DESIRED))
        second = plan(other.observe(), DESIRED)
        backend.apply(first)
        other.apply(second)
    after = saves(ns, mode)
    assert_kernel_matches(ns, mode, target)
    for family in (4, 6):
        assert foreign_lines(after[family]) == foreign_lines(before[family])
        assert after[family].count("-j K3SNET-POSTROUTING") == 1
        assert after[family].count("-j K3SNET-FORWARD") == 1
        assert_jump_after_foreign(after[family])
    with make(ns, (mode, "restore")) as fresh:
        assert plan(fresh.observe(), DESIRED).empty
        assert fresh.drift == ()


@pytest.mark.kernel
def test_k3snet_plan_exits_2_on_drift_and_apply_repairs_it(
    ns: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from k3snet.cli import main  # noqa: PLC0415 - only here

    spec = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
    argv = ["-f", str(spec), "--backend", "iptables", "--netns", ns, "--no-facts"]
    seed(ns, "nft")
    assert main(["apply", *argv]) == 0
    assert main(["plan", *argv]) == 0
    run_in(ns, ["iptables-nft", "-w", "-t", "nat", "-N", "K3SNET-N-d7-s3-o-f"])
    capsys.readouterr()
    assert main(["plan", *argv]) == 2
    assert "drift in iptables IPv4 nat K3SNET-N-d7-s3-o-f" in capsys.readouterr().out
    assert main(["apply", *argv]) == 0
    assert main(["plan", *argv]) == 0
    assert "K3SNET-N-d7-s3-o-f" not in save(ns, "nft", 4)


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_persistence_file_loads_and_keeps_foreign_rules(ns: str, mode: str) -> None:
    seed(ns, mode)
    before = saves(ns, mode)
    for family in (4, 6):
        text = render_iptables_save(DESIRED, family)
        restore(ns, mode, family, text, "--test")
        assert kernel(ns, mode)[family] == without_counters(before[family]), "--test changed it"
        restore(ns, mode, family, text)
    clear_caches()  # as at boot: objects rebuilt from the kernel's text alone
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        observed = backend.observe()
        assert observed.owned == DESIRED.owned
        assert backend.drift == ()
    after = saves(ns, mode)
    for family in (4, 6):
        assert foreign_lines(after[family]) == foreign_lines(before[family])


@pytest.mark.kernel
def test_conformance(ns: str, config: tuple[str, str]) -> None:
    # A node's own rules (K3s and flannel's): the checks that the backend never changes,
    # deletes or replaces another program's NAT and forward rules, and tells apart its
    # own ones beside them, need some (on an empty namespace they had nothing to check).
    seed(ns, config[0])
    run_conformance(
        lambda: make(ns, config),
        objects=st.one_of(strategies.nat_rules(), strategies.forward_rules()),
        max_examples=int(os.environ.get("K3SNET_IPTABLES_EXAMPLES", "8")),
        reopen=lambda _: make(ns, config),  # the next process's, reading the kernel
    )


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("lab_config", CONFIGS)
def test_forward_drop_is_opened_and_pods_reach_the_database(
    require_root: None, lab_config: tuple[str, str]
) -> None:
    from k3snet.lab import NODE_ADDRESSES, POD_CIDRS, Family, SeedLab  # noqa: PLC0415

    mode, driver = lab_config
    if driver == "libiptc":
        pytest.importorskip("iptc")
    with SeedLab.create() as lab:
        lab.block_forward("iptables-nft" if mode == "nft" else "iptables-legacy")
        run_in(lab.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
                          "net.ipv6.conf.all.forwarding=1"])
        assert dropped(lab, 4, iptables_count(  # FORWARD policy DROP
            lab.node, f"iptables-{mode}-save", "filter", ":FORWARD DROP"))
        with IptablesBackend(lab.node, driver=driver) as backend:  # type: ignore[arg-type]
            assert backend.mode == mode, backend.mode_reason  # detected from the DROP policy
            routes: tuple[tuple[Family, str], ...] = ((4, "192.168.2.0/24"), (6, "fd01:2::/64"))
            objects: list[NetObject] = []
            for f, d in routes:
                objects.append(MasqueradeRule(POD_CIDRS[f], destination=d, out_interface="eth0"))
                objects.append(ForwardRule(POD_CIDRS[f], d, in_interface="cni0",
                                           out_interface="eth0"))
            wanted = State(owned=objects)
            backend.apply(plan(backend.observe(), wanted))
            for family, _ in routes:
                probe = lab.tcp_probe(family)
                assert probe.ok, probe.error
                assert probe.source_seen == NODE_ADDRESSES[family]
            counted = run_in(lab.node, [tool(mode, 4, "save"), "-c", "-t", "filter"]).stdout
            hits = [line for line in counted.splitlines()
                    if line.startswith("[") and "-A K3SNET-F-" in line and "conntrack" not in line]
            assert hits, counted
            assert not hits[0].startswith("[0:"), counted



@pytest.mark.kernel
def test_an_interruption_between_two_families_takes_the_first_family_back(
        ns: str, config: tuple[str, str]) -> None:
    """Ctrl-C (KeyboardInterrupt) after the IPv4 tables were committed, as the IPv6 ones
    start: the IPv4 tables are taken back, then the interruption goes on. It used to
    leave them committed: only an error the backend raised itself ran the compensation."""
    mode = config[0]
    seed(ns, mode)
    before = kernel(ns, mode)
    with make(ns, config) as backend:
        p = plan(backend.observe(), DESIRED)
        assert {c.subject.family for c in p.changes} == {4, 6}, p.render()
        interruption = KeyboardInterrupt()
        if backend._kernel.streams:
            streamed = backend._stream

            def stream(plan_: object, family: int, *args: object, **kwargs: object) -> None:
                if family == 6:
                    raise interruption
                streamed(plan_, family, *args, **kwargs)  # type: ignore[arg-type]

            backend._stream = stream  # type: ignore[method-assign,assignment]
        else:
            ran = backend._run

            def run(family: int, *args: object) -> None:
                if family == 6:
                    raise interruption
                ran(family, *args)  # type: ignore[arg-type]

            backend._run = run  # type: ignore[method-assign,assignment]
        with pytest.raises(KeyboardInterrupt) as caught:
            backend.apply(p)
        assert caught.value is interruption
    assert kernel(ns, mode) == before
