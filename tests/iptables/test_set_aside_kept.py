"""k3snet's rules a foreign drop meets first stay through the edit of another change.

A foreign rule before k3snet's jump that drops some of a wanted forward rule's traffic
sets that rule aside: observe reports it owned, and the plan notes a conflict naming
it in place instead of nothing to do. The edit of the table for another change (a
rule an admin put in k3snet's chain, repaired as drift) removed it with the chains
and the hook jump, though the plan said only "- drift": once the foreign drop was
gone, the pods' forwarding was missing until the next apply. iptables-nft and
iptables-legacy, each in a fresh ``k3snet-ipt-*`` namespace.
"""

from __future__ import annotations

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.converge import converge
from k3snet.errors import ConflictError, PlanError
from k3snet.lab.netns import run_in
from k3snet.model import Drift, ForwardRule, MasqueradeRule, State
from k3snet.planner import Change, Plan, plan

FLOW = ForwardRule("10.42.0.0/16", "192.168.2.0/24")
DESIRED = State(owned=[FLOW, MasqueradeRule("10.42.0.0/16", out_interface="eth0")])
DROP = ["-s", "10.42.0.0/16", "-j", "DROP"]


def _k3snet_lines(ns: str, mode: str) -> list[str]:
    text = run_in(ns, [f"iptables-{mode}-save", "-t", "filter"]).stdout
    return [line for line in text.splitlines() if "k3snet" in line]


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_wanted_rule_a_foreign_drop_meets_first_survives_a_drift_repair_of_its_table(
        ns: str, mode: str) -> None:
    tool = [f"iptables-{mode}", "-w"]
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), DESIRED))
    ours = _k3snet_lines(ns, mode)
    assert any("k3snet:" in line and "-j ACCEPT" in line for line in ours), ours
    run_in(ns, [*tool, "-I", "FORWARD", "1", *DROP])
    bucket = next(line.split()[1] for line in ours if "k3snet:" in line)
    run_in(ns, [*tool, "-I", bucket, "1", "-j", "RETURN"])  # an admin's, in k3snet's chain
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        repair = plan(backend.observe(), DESIRED)
        assert [isinstance(c.before, Drift) for c in repair.changes] == [True], repair.changes
        assert [note.wanted for note in repair.conflicts] == [FLOW]
        backend.apply(repair)
    assert _k3snet_lines(ns, mode) == ours  # the RETURN alone went
    run_in(ns, [*tool, "-D", "FORWARD", *DROP])
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        assert plan(backend.observe(), DESIRED).changes == ()


MASQ = MasqueradeRule("10.42.0.0/16", out_interface="eth0")
CHANGED = {
    # (table, the spec before, after: the same key, another object; the foreign rule met
    # first: a drop of the flow, a NAT exemption of the pods)
    "forward": ("filter", ForwardRule("10.42.0.0/16", "192.168.2.0/24", out_interface="eth0"),
                ForwardRule("10.42.0.0/16", "192.168.2.0/24", out_interface="eth1"),
                "FORWARD", DROP),
    "nat": ("nat", MASQ, MasqueradeRule("10.42.0.0/16", out_interface="eth0",
                                        random_fully=True),
            "POSTROUTING", ["-s", "10.42.0.0/16", "-j", "RETURN"]),
}


def _table_lines(ns: str, mode: str, table: str) -> list[str]:
    text = run_in(ns, [f"iptables-{mode}-save", "-t", table]).stdout
    return [line for line in text.splitlines() if line.startswith("-A")]


@pytest.mark.kernel
@pytest.mark.parametrize("kind", sorted(CHANGED))
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_rule_in_place_whose_object_the_spec_changed_stays_while_met_first_through_a_drift_repair(
        ns: str, mode: str, kind: str) -> None:
    # The spec changed the object at the key (another out interface, random-fully) while
    # a foreign rule meets k3snet's in place first: the plan notes the conflict of the new
    # one and leaves k3snet's as it is. The edit of the table for a drift's repair removed
    # it all the same, with the chains and the hook jump: the pods' forwarding or
    # masquerade of the traffic the foreign rule does not take was gone.
    table, before, after, chain, rule = CHANGED[kind]
    tool = [f"iptables-{mode}", "-w"]
    spec = [FLOW] if kind == "nat" else [MASQ]
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), State(owned=[*spec, before])))
    ours = _table_lines(ns, mode, table)
    run_in(ns, [*tool, "-t", table, "-I", chain, "1", *rule])
    bucket = next(line.split()[1] for line in ours
                  if "k3snet:" in line and not line.startswith("-A K3SNET-M-"))
    run_in(ns, [*tool, "-t", table, "-I", bucket, "1", "-j", "RETURN"])  # an admin's
    desired = State(owned=[*spec, after])
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        repair = plan(backend.observe(), desired)
        assert [isinstance(c.before, Drift) for c in repair.changes] == [True], repair.changes
        assert [note.wanted for note in repair.conflicts] == [after]
        assert backend.check(repair) == ()
        backend.apply(repair)
    # the admin's RETURN alone went
    assert [line for line in _table_lines(ns, mode, table) if "k3snet" in line] == ours
    run_in(ns, [*tool, "-t", table, "-D", chain, *rule])
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        now = plan(backend.observe(), desired)
        assert [(c.action, c.before, c.after) for c in now.changes] == [
            ("replace", before, after)]
        backend.apply(now)
        assert plan(backend.observe(), desired).changes == ()


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_plan_adding_at_the_key_of_a_rule_set_aside_is_refused_leaving_one_rule_for_the_key(
        ns: str, mode: str) -> None:
    # A plan made by hand (or merged) that both notes the new object and adds it: the
    # rule set aside at that key is owned, so the add is refused as over any rule of
    # k3snet's in place, never two rules for one key.
    _, before, after, chain, rule = CHANGED["forward"]
    tool = [f"iptables-{mode}", "-w"]
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), State(owned=[before])))
    run_in(ns, [*tool, "-I", chain, "1", *rule])
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        noted = plan(backend.observe(), State(owned=[after]))
        assert noted.changes == ()
        assert [(note.wanted, note.owned) for note in noted.conflicts] == [(after, before)]
        with pytest.raises(PlanError, match="is already there"):
            backend.apply(Plan(changes=[Change("add", None, after)], notes=noted.notes))
    accepts = [line for line in _table_lines(ns, mode, "filter")
               if "-d 192.168.2.0/24" in line and "k3snet:" in line]
    assert len(accepts) == 1, accepts
    assert "-o eth0" in accepts[0]


OTHER = ForwardRule("10.42.0.0/16", "192.168.3.0/24")
NARROW = ["-s", "10.42.0.0/16", "-d", "192.168.2.0/24", "-j", "DROP"]  # not OTHER's


def _accepts_to(ns: str, mode: str, destination: str) -> list[str]:
    return [line for line in _table_lines(ns, mode, "filter")
            if f"-d {destination}" in line and "k3snet:" in line]


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_the_state_an_edit_leaves_keeps_a_rule_set_aside_until_a_change_deletes_it(
        ns: str, mode: str) -> None:
    # The backend's next apply, without an observe between, works on what the last edit
    # left: a rule set aside is owned, kept by an edit of another change and gone with
    # the delete of it.
    tool = [f"iptables-{mode}", "-w"]
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), State(owned=[FLOW])))
    run_in(ns, [*tool, "-I", "FORWARD", "1", *NARROW])
    bucket = next(line.split()[1] for line in _accepts_to(ns, mode, "192.168.2.0/24"))
    run_in(ns, [*tool, "-I", bucket, "1", "-j", "RETURN"])
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        repair = plan(backend.observe(), State(owned=[FLOW]))
        backend.apply(repair)
        assert len(_accepts_to(ns, mode, "192.168.2.0/24")) == 1
        backend.apply(Plan(changes=[Change("add", None, OTHER)]))
        assert len(_accepts_to(ns, mode, "192.168.2.0/24")) == 1
        backend.apply(Plan(changes=[Change("delete", OTHER, None)]))
        assert len(_accepts_to(ns, mode, "192.168.2.0/24")) == 1
        backend.apply(Plan(changes=[Change("delete", FLOW, None)]))
        assert _accepts_to(ns, mode, "192.168.2.0/24") == []
        assert [line for line in _table_lines(ns, mode, "filter") if "k3snet" in line] == []
    run_in(ns, [*tool, "-D", "FORWARD", *NARROW])
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), State(owned=[FLOW, OTHER])))
    run_in(ns, [*tool, "-I", "FORWARD", "1", *NARROW])
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        observed = backend.observe()
        assert {FLOW, OTHER} <= observed.owned
        noted = plan(observed, State(owned=[FLOW]))
        assert [(c.action, c.before) for c in noted.changes] == [("delete", OTHER)]
        assert [(note.wanted, note.owned) for note in noted.conflicts] == [(FLOW, FLOW)]
        backend.apply(noted)
        assert len(_accepts_to(ns, mode, "192.168.2.0/24")) == 1
        assert _accepts_to(ns, mode, "192.168.3.0/24") == []


def _counted(ns: str, mode: str) -> list[str]:
    """Every table's lines with their counters (``iptables-save -c``)."""
    text = run_in(ns, [f"iptables-{mode}-save", "-c"]).stdout
    return [line for line in text.splitlines() if not line.startswith("#")]


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_a_rule_in_place_the_spec_moved_to_an_interface_a_foreign_drop_takes_stays_untouched(
        ns: str, mode: str) -> None:
    # The drop takes the new out interface's traffic alone (192.168.2.0/24 is routed
    # there): k3snet's rule in place (eth0) is not met first, the spec's new one (eth1) is.
    # The plan replaced it with one the drop defeats, with no "!" (the agent applied it);
    # now the new one's conflict names k3snet's, which stays, counters and all, pass after
    # pass; once the drop goes, the replace.
    for device, peer in (("eth0", "p0"), ("eth1", "p1")):
        run_in(ns, ["ip", "link", "add", device, "type", "veth", "peer", "name", peer])
        run_in(ns, ["ip", "link", "set", device, "up"])
        run_in(ns, ["ip", "link", "set", peer, "up"])
    run_in(ns, ["ip", "addr", "add", "192.0.2.1/24", "dev", "eth1"])
    run_in(ns, ["ip", "route", "add", "192.168.2.0/24", "via", "192.0.2.2", "dev", "eth1"])
    _, before, after, _, _ = CHANGED["forward"]
    drop = ["-o", "eth1", "-d", "192.168.2.0/24", "-j", "DROP"]
    tool = [f"iptables-{mode}", "-w"]
    with IptablesBackend(ns, mode=mode) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), State(owned=[before, MASQ])))
        run_in(ns, [*tool, "-I", "FORWARD", "1", *drop])
        kept = _counted(ns, mode)
        desired = State(owned=[after, MASQ])
        for _ in range(3):  # the agent's passes
            p = plan(backend.observe(), desired)
            assert p.changes == ()
            assert [(n.wanted, n.owned) for n in p.conflicts] == [(after, before)]
            with pytest.raises(ConflictError, match="-o eth1"):
                converge(backend, desired)
            converge(backend, desired, allow_conflicts=True)
            assert _counted(ns, mode) == kept
        run_in(ns, [*tool, "-D", "FORWARD", *drop])
        p = plan(backend.observe(), desired)
        assert [(c.action, c.before, c.after) for c in p.changes] == [("replace", before, after)]
        backend.apply(p)
        assert plan(backend.observe(), desired).empty
