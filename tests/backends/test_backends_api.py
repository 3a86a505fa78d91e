"""The backend registry, the memory backend, backend groups and the conformance suite."""

from __future__ import annotations

import json
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from k3snet import (
    ApplyError,
    ApplyResult,
    BackendError,
    BackendNotFoundError,
    BackendUnavailableError,
    Change,
    ConflictError,
    ForwardRule,
    MasqueradeRule,
    Plan,
    PlanError,
    RollbackError,
    Route,
    State,
    Sysctl,
    available_backends,
    create_backend,
    plan,
    seed_spec,
)
from k3snet import compile as compile_spec
from k3snet.agent._logging import LOG_ITEMS
from k3snet.agent._loop import _one_line  # the agent log line of a failed pass
from k3snet.backends import Backend, load_backend, register_backend, registry
from k3snet.backends.group import BackendGroup, Member
from k3snet.backends.kit import BackendBase
from k3snet.backends.memory import MemoryBackend
from k3snet.backends.registry import unregister_backend
from k3snet.converge import converge
from k3snet.errors import BackendOptionError, ModelError
from k3snet.model import Drift, ForwardBlock, NatBlock, NetObject, object_from_dict
from k3snet.testing import run_conformance
from tests.examples import examples

if TYPE_CHECKING:
    from _typeshed import TraceFunction

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "jsonfile_backend"
SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
STATIC = Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0", protocol=4)

# These tests run the suite on empty memory systems for what they check (the protocol,
# groups, entry points): the warning that the checks about other programs' objects had
# none to work on is expected here (tests/backends/test_conformance_broken.py holds
# those checks, on systems with foreign objects, and the warning's own test).
pytestmark = pytest.mark.filterwarnings(
    "ignore:run_conformance.*found no foreign object:UserWarning")


def test_memory_backend_passes_the_conformance_suite() -> None:
    found = State(foreign=[STATIC, Sysctl("net.ipv4.ip_forward", 0)])
    run_conformance(lambda: MemoryBackend(found), max_examples=examples(100))


def test_a_memory_backend_limited_to_routes_passes_and_refuses_other_kinds() -> None:
    run_conformance(lambda: MemoryBackend(capabilities=["route"]), max_examples=30)


def test_a_group_of_backends_passes_the_conformance_suite() -> None:
    """A BackendGroup keeps every rule of a single backend, all or nothing included; its
    ``applied`` is the plan's changes in the plan's order (it used to list them member
    by member, which a plan putting a forward rule before a route contradicts)."""
    run_conformance(lambda: BackendGroup([MemoryBackend(capabilities=["route", "sysctl"]),
                                          MemoryBackend(capabilities=["nat", "forward"])]),
                    max_examples=30)
    backend = MemoryBackend(capabilities=["route"])
    with pytest.raises(PlanError, match="the plan also changes sysctl"):
        backend.apply(plan(State(), State(owned=[Sysctl("net.ipv4.ip_forward", 1)])))


def test_conformance_catches_a_backend_that_forgets_what_it_applied() -> None:
    class Forgetful(MemoryBackend):
        def observe(self) -> State:
            state = super().observe()
            return state.with_owned(sorted(state.owned)[1:])  # drops one object

    # Hypothesis reports several distinct failures as an ExceptionGroup.
    with pytest.raises((AssertionError, ExceptionGroup)):
        run_conformance(Forgetful, max_examples=20)


def test_memory_backend_refuses_a_route_add_into_a_slot_a_foreign_route_holds() -> None:
    """The kernel holds one route a (table, destination, metric) and the netlink backend
    refuses such an add (a stale plan: the planner itself notes a conflict); the reference
    backend accepted it and held two routes in one slot, so code tested against it never
    met the refusal a node gives."""
    from k3snet.model import RouteBlock  # noqa: PLC0415

    mine = Route("192.168.2.0/24", gateway="192.168.9.9", device="eth0")
    assert mine.key == STATIC.key
    backend = MemoryBackend(State(foreign=[STATIC]))
    stale = Plan(changes=[Change.add(mine)])
    assert any("holds its slot" in problem for problem in backend.check(stale))
    with pytest.raises(PlanError, match="holds its slot"):
        backend.apply(stale)
    assert backend.observe() == State(foreign=[STATIC])
    blackhole = RouteBlock("192.168.2.0/24", metric=0, what="blackhole")
    blocked = MemoryBackend(State(foreign=[blackhole]))
    with pytest.raises(PlanError, match="holds its slot"):
        blocked.apply(stale)
    elsewhere = Route("192.168.2.0/24", gateway="192.168.9.9", device="eth0", metric=50)
    assert backend.apply(Plan(changes=[Change.add(elsewhere)])).applied  # another slot: fine


def test_memory_backend_failure_injection_rolls_back_everything() -> None:
    backend = MemoryBackend(State(foreign=[STATIC]))
    before = backend.dump()
    p = plan(backend.observe(), compile_spec(seed_spec()))
    backend.faults.fail_at(2)
    with pytest.raises(ApplyError) as info:
        backend.apply(p)
    assert info.value.failed == p.changes[2]
    assert [c.inverse() for c in reversed(p.changes[:2])] == list(info.value.rolled_back)
    assert backend.dump() == before
    backend.apply(p)  # the injected failure is one-shot
    assert plan(backend.observe(), compile_spec(seed_spec())).empty


def test_memory_backend_dump_and_load_round_trip() -> None:
    backend = MemoryBackend(State(foreign=[STATIC]))
    backend.apply(plan(backend.observe(), compile_spec(seed_spec())))
    clone = MemoryBackend.from_dump(backend.dump())
    assert clone.state == backend.state
    assert clone.dump() == backend.dump()


def test_seed_plan_leaves_the_administrators_static_route_alone() -> None:
    backend = MemoryBackend(State(foreign=[STATIC]))
    p = plan(backend.observe(), compile_spec(seed_spec()))
    assert [n.status for n in p.notes] == ["met"]
    assert all(not isinstance(c.subject, Route) for c in p.changes)
    assert "(met by foreign: route 192.168.2.0/24 via 192.168.1.1 dev eth0" in p.render()


def test_converge_refuses_conflicts_unless_allowed() -> None:
    other = Route("192.168.2.0/24", gateway="192.168.1.254", device="eth0", protocol=4)
    backend = MemoryBackend(State(foreign=[other]))
    with pytest.raises(ConflictError, match=r"conflicts with foreign: route 192\.168\.2\.0/24 via "
                                            r"192\.168\.1\.254"):
        converge(backend, compile_spec(seed_spec()))
    assert not backend.observe().owned
    done = converge(backend, compile_spec(seed_spec()), allow_conflicts=True)
    assert done.result is not None
    assert other in backend.observe().foreign


def test_group_applies_in_dependency_order_and_undoes_earlier_members_on_failure() -> None:
    node = MemoryBackend(capabilities=["route", "sysctl"])
    nat = MemoryBackend(capabilities=["nat", "forward"])
    group = BackendGroup([Member(nat), Member(node)])
    assert [m.backend for m in group.members] == [node, nat]
    p = plan(group.observe(), compile_spec(seed_spec()))
    nat.faults.fail_at(1)
    with pytest.raises(ApplyError) as info:
        group.apply(p)
    assert not node.observe().owned
    assert not nat.observe().owned
    assert len(info.value.rolled_back) == 3  # 1 forward rule by nat, sysctl + route by node
    group.apply(p)
    assert plan(group.observe(), compile_spec(seed_spec())).empty


def test_a_group_s_apply_error_says_what_its_members_made_and_took_back() -> None:
    """``done`` is what was made before the failure: the earlier members' parts, then what
    the failing member made of its own; ``rolled_back`` their inverses, last first (as
    Compensation.fail says it). The group said ``done=()`` while rolling back changes."""
    node = MemoryBackend(capabilities=["route", "sysctl"])
    nat = MemoryBackend(capabilities=["nat", "forward"])
    group = BackendGroup([node, nat])
    p = plan(group.observe(), compile_spec(seed_spec()))
    node_part, nat_part = p.only(node.capabilities).changes, p.only(nat.capabilities).changes
    nat.faults.fail_at(1)
    with pytest.raises(ApplyError) as info:
        group.apply(p)
    made = (*node_part, nat_part[0])
    assert info.value.done == made
    assert info.value.rolled_back == tuple(c.inverse() for c in reversed(made))
    assert info.value.failed == nat_part[1]


class _Node(MemoryBackend):
    name = "node"


class _Nat(MemoryBackend):
    name = "nat"


class _NatRefusing(_Nat):
    def apply(self, plan: Plan) -> ApplyResult:
        raise PlanError("nat backend refuses the plan, nothing was changed:\n  not today")


@pytest.mark.parametrize("refusing", [False, True], ids=["apply-error", "plan-error"])
def test_a_group_s_error_names_the_member_that_changed_nothing_and_the_parts_taken_back(
        refusing: bool) -> None:
    # The later member failed before changing anything: its "nothing was changed" stood
    # beside the earlier member's part the group rolled back, said of the node.
    node = _Node(capabilities=["route", "sysctl"])
    nat = (_NatRefusing if refusing else _Nat)(capabilities=["nat", "forward"])
    group = BackendGroup([node, nat])
    p = plan(group.observe(), compile_spec(seed_spec()))
    made = len(p.only(node.capabilities).changes)
    nat.faults.fail_at(0)
    with pytest.raises(ApplyError) as info:  # the group's, a refusal too
        group.apply(p)
    message = str(info.value)
    assert "nothing was changed" not in message, message
    assert "nat changed nothing" in message, message
    assert f"node's {made} change(s) made before nat failed were taken back" in message
    assert not node.observe().owned


class _Rules(MemoryBackend):
    name = "rules"


@pytest.mark.parametrize("refusing", [False, True], ids=["apply-error", "plan-error"])
def test_a_group_s_error_says_a_member_failing_in_its_second_run_changed_nothing_more(
        refusing: bool) -> None:
    # A plan deleting a forward rule and adding a NAT rule around a route replaced: the
    # rules' member is given its delete, then (after the node's routes) its add. Its add
    # failing before changing anything was said "rules changed nothing" beside "rules'
    # 1 change(s) ... were taken back": its first run had changed the node.
    route = Route("192.168.2.0/24", gateway="192.168.1.1", device="eth1")
    accept = ForwardRule("10.42.0.0/16", "192.168.2.0/24")
    forwarding = Sysctl("net.ipv4.ip_forward", "1")
    observed = State(owned=[forwarding, route, accept])
    node = _Node(observed.only(["route", "sysctl"]), capabilities=["route", "sysctl"])

    class Refusing(_Rules):
        def apply(self, plan: Plan) -> ApplyResult:
            if any(c.kind == "nat" for c in plan.changes):
                raise PlanError("rules backend refuses the plan, nothing was changed")
            return super().apply(plan)

    rules = (Refusing if refusing else _Rules)(observed.only(["nat", "forward"]),
                                               capabilities=["nat", "forward"])
    group = BackendGroup([rules, node])
    other = Route("192.168.3.0/24", gateway="192.168.1.1", device="eth1")
    p = plan(group.observe(), State(owned=[forwarding, other, MasqueradeRule("10.42.0.0/16")]))
    assert [c.kind for c in p.changes] == ["forward", "route", "route", "nat"]
    # Armed for the refusing member too: its refusal left it armed, and the undo of its
    # first run failed at it (a RollbackError: "undoing rules failed too").
    group.faults.fail_at(3)
    with pytest.raises(ApplyError) as info:
        group.apply(p)
    assert not isinstance(info.value, RollbackError), info.value
    message = str(info.value)
    assert "rules changed nothing more" in message, message
    assert "rules changed nothing;" not in message, message
    assert "rules' 1 change(s) and node's 2 change(s) made before rules failed were taken back" \
        in message, message
    assert group.observe().owned == observed.owned


def test_a_group_s_error_counts_taken_back_no_drift_repair_it_kept() -> None:
    # A drift repair (the rules' member's finding deleted) is not taken back: its
    # inverse would re-add the finding. The message counted it among the changes taken
    # back ("rules' 1 change(s) and node's 2 change(s)"), one more than rolled_back.
    drift = Drift.of("forward", backend="rules", where="inet k3snet forward",
                     what="a foreign rule")
    node = _Node(capabilities=["route", "sysctl"])
    rules = _Rules(State(owned=[drift]), capabilities=["nat", "forward"])
    group = BackendGroup([rules, node])
    p = plan(group.observe(), State(owned=[
        Sysctl("net.ipv4.ip_forward", "1"), STATIC, MasqueradeRule("10.42.0.0/16")]))
    assert [c.kind for c in p.changes] == ["forward", "sysctl", "route", "nat"]
    group.faults.fail_at(3)
    with pytest.raises(ApplyError) as info:
        group.apply(p)
    message = str(info.value)
    assert len(info.value.rolled_back) == 2
    assert "; node's 2 change(s) made before rules failed were taken back; " in message, \
        message
    assert ("rules' 1 repair(s) of drift made before rules failed were kept (a repair is "
            "not undone)") in message, message
    assert not node.observe().owned
    assert not rules.observe().owned


class _UndoRefusing(MemoryBackend):
    """A memory backend whose second apply (the group's undo of its part) fails."""

    def __init__(self, name: str, capabilities: list[str]) -> None:
        super().__init__(capabilities=capabilities)
        self.name = name
        self.applies = 0

    def apply(self, plan: Plan) -> ApplyResult:
        self.applies += 1
        if self.applies == 2:
            raise BackendError(f"{self.name} is gone")
        return super().apply(plan)


@pytest.mark.parametrize("refusing", ["routes", "sysctls"])
def test_a_group_s_failed_undo_names_what_was_taken_back_and_what_may_still_be_there(
        refusing: str) -> None:
    # Three members: sysctls, then routes, then the rules, which fail. The undo goes
    # last first (routes, then sysctls) and stops at its first failure. Its error said
    # "undoing routes failed too" alone: not that the sysctls' part was never undone,
    # nor (when the sysctls' undo failed) that the routes' part had been.
    sysctls = _UndoRefusing("sysctls", ["sysctl"])
    routes = _UndoRefusing("routes", ["route"])
    (routes if refusing == "sysctls" else sysctls).applies = -10  # its undo goes well
    rules = _Rules(capabilities=["nat", "forward"])
    group = BackendGroup([sysctls, routes, rules])
    p = plan(group.observe(), compile_spec(seed_spec()))
    counts = {name: len(p.only([kind]).changes)
              for name, kind in (("sysctls", "sysctl"), ("routes", "route"))}
    assert [c.kind for c in p.changes][:2] == ["sysctl", "route"]
    rules.faults.fail_at(0)
    with pytest.raises(RollbackError) as info:
        group.apply(p)
    message = str(info.value)
    assert f"undoing {refusing} failed too: {refusing} is gone" in message, message
    if refusing == "routes":  # the sysctls' part never tried
        assert "were taken back" not in message, message
        assert (f"sysctls' {counts['sysctls']} change(s) and routes' {counts['routes']} "
                "change(s) may still be there") in message, message
        assert not info.value.rolled_back
    else:
        assert (f"routes' {counts['routes']} change(s) made before rules failed were "
                "taken back") in message, message
        assert f"sysctls' {counts['sysctls']} change(s) may still be there" in message
        assert len(info.value.rolled_back) == counts["routes"]


@pytest.mark.parametrize(("failing", "said"), [
    ("route", "memory:route: memory backend: + route 192.168.2.0/24 via 192.168.1.1 dev "
     "eth0 table main metric 0 proto k3snet failed: injected failure at change 0 "
     "(memory:route changed nothing); memory:sysctl's 1 change(s) made before "
     "memory:route failed were taken back"),
    ("nat", "memory:sysctl's 1 change(s) and memory:route's 1 change(s) made before "
     "memory:forward,nat failed were taken back"),
])
def test_a_group_s_error_names_two_members_of_one_backend_by_their_kinds(
        failing: str, said: str) -> None:
    # --backend netlink:sysctl --backend netlink:route --backend nftables (shown with
    # the real kernel refusing the route): "netlink's 2 change(s) made before netlink
    # failed were taken back" beside "netlink changed nothing" said neither member.
    sysctls = MemoryBackend(capabilities=["sysctl"])
    routes = MemoryBackend(capabilities=["route"])
    rules = MemoryBackend(capabilities=["nat", "forward"])
    group = BackendGroup([Member(sysctls), Member(routes), rules])
    p = plan(group.observe(), compile_spec(seed_spec()))
    assert [c.kind for c in p.changes] == ["sysctl", "route", "forward", "nat"]
    group.faults.fail_at(1 if failing == "route" else 2)
    with pytest.raises(ApplyError) as info:
        group.apply(p)
    message = str(info.value)
    assert said in message, message
    assert "memory's" not in message, message
    assert len(info.value.rolled_back) == (1 if failing == "route" else 2)
    assert not group.observe().owned


@pytest.mark.parametrize("terse", [False, True], ids=["kit", "terse"])
def test_a_group_s_failed_undo_says_its_undo_changed_nothing_and_one_failed_change(
        terse: bool) -> None:
    # The undo's own error stood whole in the group's: its "(nothing was changed)",
    # read as the node's beside the parts that may still be there, and its "failed
    # change: - route ..." before the group's "failed change: + forward ...".
    undo = ("routes is gone (at - route 192.168.2.0/24 via 192.168.1.1 dev eth0 table "
            "main metric 0 proto k3snet)" if terse else
            "routes backend: - route 192.168.2.0/24 via 192.168.1.1 dev eth0 table main "
            "metric 0 proto k3snet failed: injected failure at change 0 (its undo "
            "changed nothing)")

    class Undoing(MemoryBackend):
        name = "routes"

        def apply(self, plan: Plan) -> ApplyResult:
            if any(c.action == "delete" for c in plan.changes):
                if terse:  # a message that does not name its failed change
                    raise ApplyError("routes is gone", failed=plan.changes[0])
                self.faults.fail_at(0)  # the kit's own ApplyError, as a kernel's refusal
            return super().apply(plan)

    routes = Undoing(capabilities=["route", "sysctl"])
    rules = _Rules(capabilities=["nat", "forward"])
    group = BackendGroup([routes, rules])
    p = plan(group.observe(), compile_spec(seed_spec()))
    made = len(p.only(["route", "sysctl"]).changes)
    rules.faults.fail_at(0)
    with pytest.raises(RollbackError) as info:
        group.apply(p)
    message = str(info.value)
    assert "nothing was changed" not in message, message
    assert "failed change: - route" not in message, message
    assert message.count("+ forward accept 10.42.0.0/16") == 1, message
    assert f"undoing routes failed too: {undo}; routes' {made} change(s) may still be " \
        "there" in message, message
    assert len(routes.observe().owned) == made


def test_a_group_s_failed_undo_counts_what_it_took_back_before_failing() -> None:
    # The routes' undo takes one of its two changes back, then fails and cannot put it
    # back (its own RollbackError): one change may still be there, not two. Untested,
    # counting the whole part left a mutation alive.
    class HalfUndoing(MemoryBackend):
        name = "routes"

        def apply(self, plan: Plan) -> ApplyResult:
            if all(c.action == "delete" for c in plan.changes):
                super().apply(Plan(changes=plan.changes[:1]))
                raise RollbackError("routes backend: half undone", failed=plan.changes[1],
                                    done=plan.changes[:1])
            return super().apply(plan)

    routes = HalfUndoing(capabilities=["route", "sysctl"])
    rules = _Rules(capabilities=["nat", "forward"])
    group = BackendGroup([routes, rules])
    p = plan(group.observe(), compile_spec(seed_spec()))
    assert len(p.only(["route", "sysctl"]).changes) == 2
    rules.faults.fail_at(0)
    with pytest.raises(RollbackError) as info:
        group.apply(p)
    message = str(info.value)
    assert "; routes' 1 change(s) may still be there" in message, message
    assert len(routes.observe().owned) == 1
    assert len(info.value.rolled_back) == 1


def test_a_group_s_error_names_a_member_naming_itself_once() -> None:
    # nftables' refused transaction begins "nftables: the kernel refused the
    # transaction": the group's message said "nftables: nftables: the kernel ...".
    class Refused(_Nat):
        def apply(self, plan: Plan) -> ApplyResult:
            raise ApplyError("nat: the kernel refused the transaction, nothing was changed: "
                             "Error: Could not process rule: Operation not permitted")

    group = BackendGroup([_Node(capabilities=["route", "sysctl"]),
                          Refused(capabilities=["nat", "forward"])])
    with pytest.raises(ApplyError) as info:
        group.apply(plan(group.observe(), compile_spec(seed_spec())))
    assert str(info.value).startswith(
        "nat: the kernel refused the transaction, nat changed nothing: Error: "), info.value


@pytest.mark.parametrize("problems", [1, LOG_ITEMS + 5])
def test_a_group_s_parts_taken_back_are_said_before_a_refusal_s_problems(
        problems: int) -> None:
    # A later member refusing its part lists its problems on the lines below its first:
    # the parts taken back were said after the last problem, read as one more, and the
    # agent's log line, which names the first LOG_ITEMS lines, left them out.
    class Refusing(_Nat):
        def apply(self, plan: Plan) -> ApplyResult:
            raise PlanError("nat backend refuses the plan, nothing was changed:\n  "
                            + "\n  ".join(f"problem {n}" for n in range(problems)))

    node = _Node(capabilities=["route", "sysctl"])
    group = BackendGroup([node, Refusing(capabilities=["nat", "forward"])])
    p = plan(group.observe(), compile_spec(seed_spec()))
    made = len(p.only(node.capabilities).changes)
    with pytest.raises(ApplyError) as info:
        group.apply(p)
    said = f"node's {made} change(s) made before nat failed were taken back"
    head = str(info.value).split("\n")[0]
    assert head == ("nat: nat backend refuses the plan, nat changed nothing "
                    f"({said}):"), head
    assert said in _one_line(info.value)


class _Expecting(MemoryBackend):
    """Records the hints converge gives (expect) and what was observed after each."""

    def __init__(self, capabilities: list[str] | None = None) -> None:
        super().__init__(capabilities=capabilities)
        self.hints: list[tuple[State, int]] = []
        self.observed = 0

    def expect(self, state: State) -> None:
        self.hints.append((state, self.observed))

    def observe(self) -> State:
        self.observed += 1
        return super().observe()


def test_converge_hands_each_backend_its_desired_part_before_observing() -> None:
    desired = compile_spec(seed_spec())
    alone = _Expecting()
    converge(alone, desired)
    assert alone.hints == [(desired.only(alone.capabilities), 0)]
    node = _Expecting(capabilities=["route", "sysctl"])
    nat = MemoryBackend(capabilities=["nat", "forward"])  # takes no hint: left alone
    group = BackendGroup([Member(nat), Member(node)])
    done = converge(group, desired)
    assert node.hints == [(desired.only({"route", "sysctl"}), 0)]
    assert done.result is not None
    assert plan(group.observe(), desired).empty


def test_a_group_whose_members_leave_kinds_out_passes_the_conformance_suite() -> None:
    """Its check split a plan by its members' kinds and dropped the rest: a plan adding a
    sysctl to a group of a route backend "fit", and apply refused it."""
    run_conformance(lambda: BackendGroup([MemoryBackend(capabilities=["route"]),
                                          MemoryBackend(capabilities=["nat"])]),
                    max_examples=10)
    group = BackendGroup([MemoryBackend(capabilities=["route"])])
    stranger = Plan(changes=[Change.add(Sysctl("net.ipv4.ip_forward", "1"))])
    (problem,) = group.check(stranger)
    assert "also changes sysctl" in problem


def test_a_member_of_a_kind_no_object_type_is_registered_for_is_a_model_error_saying_so(
) -> None:
    """A third-party backend whose object types were not registered (its module not yet
    imported) made the group fail in ``min()`` with a bare ValueError."""

    class Dns(BackendBase):
        name = "dns"
        capabilities = frozenset({"dnsrecord"})

    with pytest.raises(ModelError, match="dnsrecord, a kind no object type is registered for: "
                                         "register its NetObject classes"):
        # Dns() lacks observe, check, apply: the group refuses it before calling any.
        BackendGroup([Dns(), MemoryBackend(capabilities=["route"])])  # type: ignore[list-item]


def test_group_refuses_two_backends_for_one_kind() -> None:
    with pytest.raises(ValueError, match=r"would manage .*Member\(backend, kinds\) in the library"):
        BackendGroup([MemoryBackend(), MemoryBackend(capabilities=["nat"])])


def test_a_group_observes_what_any_member_sees_that_is_not_k3snets_of_all_its_kinds() -> None:
    # --backend nftables:nat --backend iptables:forward: only nftables sees a drop in
    # firewalld's own nftables table; limited to NAT, it kept its NAT objects alone, and
    # the iptables member's forward accept planned as an add the drop defeats.
    drop = ForwardBlock(4, "drop", "ip daddr 192.168.2.0/24 drop",
                        "nftables inet firewalld filter_FORWARD", destination="192.168.2.0/24")
    mine = MasqueradeRule("10.42.0.0/16", destination="192.168.3.0/24")
    nft = MemoryBackend(State(owned=[mine, ForwardRule("10.42.0.0/16", "192.168.9.0/24")],
                              foreign=[drop]), capabilities=["nat", "forward"])
    group = BackendGroup([Member(nft, ["nat"]), Member(MemoryBackend(capabilities=["forward"]))])
    observed = group.observe()
    # Owned: each member's own kinds only (nftables' forward rule is no one's here).
    assert observed == State(owned=[mine], foreign=[drop])
    wanted = State(owned=[mine, ForwardRule("10.42.0.0/16", "192.168.2.0/24")])
    p = plan(observed, wanted)
    assert p.changes == ()
    assert [n.foreign for n in p.conflicts] == [drop]


def test_a_group_shows_no_member_what_another_read_relative_to_its_own_rules() -> None:
    # An iptables RETURN in POSTROUTING before the jump to k3snet's chain exempts that
    # chain, not nftables' table: shown to the nftables member's masquerade it was a
    # false conflict (iptables-legacy beside nftables:nat). A drop shows; this does not.
    exempt = NatBlock(4, "exempt", "-A POSTROUTING -s 10.42.0.0/16 -j RETURN",
                      "iptables IPv4 nat POSTROUTING", source="10.42.0.0/16")
    iptables = MemoryBackend(State(foreign=[exempt]), capabilities=["nat", "forward"])
    group = BackendGroup([Member(MemoryBackend(capabilities=["nat"])),
                          Member(iptables, ["forward"])])
    wanted = State(owned=[MasqueradeRule("10.42.0.0/16", destination="192.168.3.0/24")])
    assert group.observe() == State()
    assert plan(group.observe(), wanted).conflicts == ()


def test_a_group_warns_of_k3snets_objects_a_member_holds_of_a_kind_given_to_another() -> None:
    # --backend nftables first, then the split of docs/backends.md: nftables' forward
    # accepts were neither kept up nor removed (destroy too left them), and nothing said so.
    accept = ForwardRule("10.42.0.0/16", "192.168.2.0/24")
    nft = MemoryBackend(State(owned=[accept]), capabilities=["nat", "forward"])
    group = BackendGroup([Member(nft, ["nat"]), Member(MemoryBackend(capabilities=["forward"]))])
    assert group.warnings == ()  # nothing observed yet
    assert group.observe() == State()
    # observe() changes the warnings (a property mypy keeps narrowed to the () above).
    assert group.warnings == (  # type: ignore[comparison-overlap]
        "memory holds 1 k3snet object(s) of kind forward, which this run gives to memory: "
        "they stay as they are, neither kept up nor removed; `k3snet destroy --backend "
        "memory:forward` removes them",)
    nft.apply(plan(nft.observe(), State()))
    group.observe()
    assert group.warnings == ()


class _NamespacedMemory(MemoryBackend):
    """A memory backend standing for a node backend of network namespace ``netns``."""

    def __init__(self, netns: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.netns = netns


def test_the_destroy_a_group_warning_names_runs_in_the_members_namespace() -> None:
    # `k3snet plan --netns NS --backend nftables:nat --backend iptables:forward` after
    # `--backend nftables`: the destroy shown was bare, and run as shown from the shell
    # it removed k3snet's forward rules of the node's own namespace, not NS's.
    accept = ForwardRule("10.42.0.0/16", "192.168.2.0/24")
    nft = _NamespacedMemory("lab one", State(owned=[accept]), capabilities=["nat", "forward"])
    group = BackendGroup([Member(nft, ["nat"]), Member(MemoryBackend(capabilities=["forward"]))])
    group.observe()
    (warning,) = group.warnings
    assert warning.endswith(
        "`k3snet destroy --netns 'lab one' --backend memory:forward` removes them")


def test_a_group_s_warnings_are_its_members_in_member_order() -> None:
    routes = MemoryBackend(capabilities=["route"])
    nat = MemoryBackend(capabilities=["nat"])
    nat.warnings = ("chain K3SNET-MINE is not k3snet's",)  # type: ignore[attr-defined]
    routes.warnings = ["a", "b"]  # type: ignore[attr-defined]
    assert BackendGroup([nat, routes]).warnings == ("a", "b", "chain K3SNET-MINE is not k3snet's")
    assert BackendGroup([MemoryBackend()]).warnings == ()  # a member without any


def test_registry_names_builtins_and_explains_missing_ones() -> None:
    assert {"memory", "netlink", "nftables", "iptables"} <= set(available_backends())
    assert isinstance(create_backend("memory"), Backend)
    with pytest.raises(BackendNotFoundError, match="no backend named 'nope'; available:"):
        create_backend("nope")


def test_registry_reports_a_backend_whose_dependency_is_missing() -> None:
    register_backend("broken", lambda: None)  # type: ignore[arg-type,return-value]
    unregister_backend("broken")
    registry._BUILTIN["needs-missing"] = ("k3snet_no_such_module:Backend", "missing")
    try:
        with pytest.raises(BackendUnavailableError, match=r"pip install 'k3snet\[missing\]'"):
            create_backend("needs-missing")
    finally:
        del registry._BUILTIN["needs-missing"]


@pytest.fixture
def installed_broken_plugins(tmp_path: Path) -> Iterator[None]:
    """A third-party package whose entry points are broken: one module raises as it is
    imported, one entry point names an attribute its module does not have."""
    package = tmp_path / "k3snet_broken_plugins"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "raises.py").write_text("raise RuntimeError('the plugin is broken')\n")
    (package / "fine.py").write_text("class Backend:\n    pass\n")
    dist = tmp_path / "k3snet_broken_plugins-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: k3snet-broken-plugins\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[k3snet.backends]\n"
        "raises = k3snet_broken_plugins.raises:Backend\n"
        "misnamed = k3snet_broken_plugins.fine:Backnd\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))
        for module in [m for m in sys.modules if m.startswith("k3snet_broken_plugins")]:
            del sys.modules[module]


@pytest.mark.usefixtures("installed_broken_plugins")
def test_a_plugin_that_raises_on_import_is_unavailable_and_named_not_a_k3snet_bug() -> None:
    """Only ImportError was turned into BackendUnavailableError: a plugin raising anything
    else, or an entry point naming a missing attribute, reached the CLI as an "internal
    error (a bug: please report it)" of k3snet's."""
    with pytest.raises(BackendUnavailableError,
                       match=r"backend 'raises' cannot be loaded: .*RuntimeError: the plugin is "
                             r"broken") as info:
        create_backend("raises")
    assert "k3snet_broken_plugins.raises:Backend" in str(info.value)
    with pytest.raises(BackendUnavailableError,
                       match=r"backend 'misnamed' cannot be loaded: .*has no attribute 'Backnd'"):
        create_backend("misnamed")
    assert isinstance(create_backend("memory"), Backend)  # the others still load


def test_an_unknown_backend_name_suggests_the_close_ones() -> None:
    for typo in ("memroy", "Memory", "nftable"):
        with pytest.raises(BackendNotFoundError, match=r"\(did you mean '(memory|nftables)'"):
            create_backend(typo)
    with pytest.raises(BackendNotFoundError) as info:
        create_backend("zzzz")
    assert "did you mean" not in str(info.value)


@pytest.fixture
def installed_example(tmp_path: Path) -> Iterator[None]:
    """Make the example package discoverable as if pip-installed: a dist-info with entry points."""
    dist = tmp_path / "k3snet_jsonfile-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: k3snet-jsonfile\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text(
        "[k3snet.backends]\njsonfile = k3snet_jsonfile:JsonFileBackend\n"
    )
    sys.path[:0] = [str(tmp_path), str(EXAMPLE)]
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))
        sys.path.remove(str(EXAMPLE))
        sys.modules.pop("k3snet_jsonfile", None)


def _jsonfile_reopener() -> Callable[[Backend], Backend]:
    """``reopen=``: the next process's backend on the backend's file, of the class the
    ``jsonfile`` entry point names, looked up once (``create_backend`` scans every
    installed package's entry points at each call: 300 scans a run, most of its CPU);
    the run's first backend is made by name, ``create_backend("jsonfile", ...)``."""
    factory = load_backend("jsonfile")
    return lambda backend: factory(path=backend.path)  # type: ignore[attr-defined]


@pytest.mark.usefixtures("installed_example")
def test_a_third_party_backend_registered_by_entry_point_passes_conformance(
    tmp_path: Path,
) -> None:
    assert "jsonfile" in available_backends()
    counter = iter(range(10**6))
    run_conformance(lambda: create_backend("jsonfile", path=tmp_path / f"s{next(counter)}.json"),
                    max_examples=30, reopen=_jsonfile_reopener())
    backend = create_backend("jsonfile", path=tmp_path / "demo.json")
    rule = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")
    backend.apply(plan(backend.observe(), State(owned=[rule])))
    assert backend.observe().owned == {rule}


def _file_entries(backend: Backend) -> list[NetObject]:
    """Every entry of the example backend's file, whoever wrote it (``store=``)."""
    path = backend.path  # type: ignore[attr-defined]
    return [object_from_dict(e["object"]) for e in json.loads(path.read_text())]


@pytest.mark.usefixtures("installed_example")
def test_the_example_backend_keeps_other_programs_entries_and_passes_conformance_beside_them(
    tmp_path: Path,
) -> None:
    """examples/jsonfile_backend is docs/custom-backend.md's complete backend: other
    programs' entries in its file (``by``) are foreign, and the conformance suite's
    checks about foreign objects work on them (an owned-only file gave them nothing,
    with the warning saying so). An entry of a kind the backend does not manage (a
    sysctl) is kept as written and not observed: it was reported as a foreign sysctl,
    and the suite failed the page's backend ("reports objects of kinds it does not
    manage")."""
    sysctl = {"by": "admin", "object": Sysctl("net.ipv4.ip_forward", "1").to_dict()}
    others = [{"by": "admin", "object": o.to_dict()} for o in (
        STATIC, MasqueradeRule("10.42.0.0/16", destination="198.51.100.0/24"))] + [sysctl]
    counter = iter(range(10**6))

    def shared_file() -> Backend:
        path = tmp_path / f"shared-{next(counter)}.json"
        path.write_text(json.dumps(others))
        return create_backend("jsonfile", path=path)

    with warnings.catch_warnings():
        warnings.filterwarnings("error", "run_conformance.*found no foreign", UserWarning)
        run_conformance(shared_file, max_examples=30, reopen=_jsonfile_reopener(),
                        store=_file_entries)
    backend = shared_file()
    rule = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")
    backend.apply(plan(backend.observe(), State(owned=[rule])))
    assert backend.observe() == State(owned=[rule], foreign=[STATIC, MasqueradeRule(
        "10.42.0.0/16", destination="198.51.100.0/24")])
    written = json.loads(backend.path.read_text())  # type: ignore[attr-defined]
    assert written[:3] == others  # as the other programs wrote them, the sysctl too
    backend.apply(plan(backend.observe(), State()))
    assert json.loads(backend.path.read_text()) == others  # type: ignore[attr-defined]


@pytest.mark.usefixtures("installed_example")
def test_creating_a_third_party_backend_scans_the_entry_points_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each scan reads every installed package's metadata: ``create_backend`` looked the
    name up three times (checking the options by name twice), and a conformance run
    building the backend at every example (``reopen=``) spent most of its time there."""
    scans: list[str | None] = []
    scan = registry._entry_points

    def counted(name: str | None = None) -> list[tuple[str, str]]:
        scans.append(name)
        return scan(name)

    monkeypatch.setattr(registry, "_entry_points", counted)
    backend = create_backend("jsonfile", path=tmp_path / "state.json")
    assert backend.name == "jsonfile"
    assert scans == ["jsonfile"]
    with pytest.raises(BackendOptionError, match="has no option 'colour'"):
        create_backend("jsonfile", path=tmp_path / "state.json", colour="red")
    with pytest.raises(BackendOptionError, match="needs option 'path'"):
        create_backend("jsonfile")


@pytest.mark.usefixtures("installed_example")
def test_the_example_backend_refuses_a_file_of_other_entries_naming_it(
        tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text(json.dumps([{"family": 4}]))
    with pytest.raises(BackendError, match=f"cannot read {state}: not a list of"):
        create_backend("jsonfile", path=state).observe()


@pytest.mark.usefixtures("installed_example")
def test_the_documented_command_line_of_a_custom_backend_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/custom-backend.md's `k3snet plan` line, with the memory backend for netlink (no
    node here). It used to give the jsonfile backend no `path`: "missing 1 required
    positional argument"."""
    from k3snet.cli import main  # noqa: PLC0415

    page = (Path(__file__).resolve().parents[2] / "docs" / "custom-backend.md").read_text()
    line = next(line for line in page.splitlines() if line.startswith("k3snet plan "))
    argv = shlex.split(line)[1:]
    assert "jsonfile:nat" in argv
    argv = ["memory:route,sysctl" if a == "netlink" else a for a in argv]
    (tmp_path / "spec.yaml").write_text(SEED.read_text())
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--no-facts"]) == 2  # changes pending


@pytest.mark.usefixtures("installed_example")
def test_the_example_backend_reports_a_corrupt_file_as_a_backend_error(tmp_path: Path) -> None:
    """The example (and the page it comes from) let json's ValueError out, which the CLI
    calls an internal error of k3snet's ("a bug: please report it")."""
    state = tmp_path / "state.json"
    state.write_text("{garbage")
    backend = create_backend("jsonfile", path=state)
    with pytest.raises(BackendError, match=f"cannot read {state}: Expecting property name"):
        backend.observe()


class _NoRollback(MemoryBackend):
    """Honours its fault hook but leaves the changes made before the failure."""

    def apply(self, plan: Plan) -> ApplyResult:
        fail_at = self.faults.take(plan)
        for index, change in enumerate(plan.changes):
            if index == fail_at:
                raise ApplyError("injected", failed=change)
            self._state = Plan(changes=[change]).apply_to(self._state)
        return ApplyResult(self.name, plan.changes, len(plan.changes))


class _IgnoresFaults(MemoryBackend):
    """Never fails, whatever its fault hook says."""

    def apply(self, plan: Plan) -> ApplyResult:
        self.faults.take(plan)
        self._state = plan.apply_to(self._state)
        return ApplyResult(self.name, plan.changes, len(plan.changes))


@pytest.mark.parametrize("broken", [_NoRollback, _IgnoresFaults])
def test_conformance_fails_a_backend_without_all_or_nothing(broken: type[MemoryBackend]) -> None:
    with pytest.raises((AssertionError, ExceptionGroup)):
        run_conformance(broken, max_examples=30)


class _AppliesStalePlans(MemoryBackend):
    """Never judges a plan against what it holds: a stale plan's add overwrites, its
    delete of something already gone is reported as done."""

    def check(self, plan: Plan) -> tuple[str, ...]:
        return ()

    def apply(self, plan: Plan) -> ApplyResult:
        self.ensure_capable(plan)
        fail_at = self.faults.take(plan)
        if fail_at is not None:
            raise ApplyError("injected", failed=plan.changes[fail_at])
        owned = {o.key: o for o in self._state.owned}
        for change in plan.changes:
            owned.pop(change.subject.key, None)
            if change.after is not None:
                owned[change.after.key] = change.after
        self._state = self._state.with_owned(owned.values())
        return ApplyResult(self.name, plan.changes, len(plan.changes))


def test_conformance_fails_a_backend_that_applies_stale_plans() -> None:
    """Without foreign state or kinds outside its capabilities, the suite used to make no
    plan that does not fit, so a backend that never checked one passed."""
    with pytest.raises((AssertionError, ExceptionGroup), match="stale plan"):
        run_conformance(_AppliesStalePlans, max_examples=30)


def test_conformance_says_when_apply_reports_the_changes_in_another_order() -> None:
    """The message used to compare counts only: "reports 2 change(s) for a plan of 2"."""
    class Reversed(MemoryBackend):
        def apply(self, plan: Plan) -> ApplyResult:
            done = super().apply(plan)
            return ApplyResult(self.name, done.applied[::-1], done.operations)

    with pytest.raises((AssertionError, ExceptionGroup),
                       match="in another order than the plan's"):
        run_conformance(Reversed, max_examples=20)


class _EnterGivesNone(MemoryBackend):
    def __enter__(self) -> None:  # type: ignore[override]
        return None


class _ExitKeepsItOpen(MemoryBackend):
    def __exit__(self, *exc: object) -> None:
        pass


class _ClosesOnce(MemoryBackend):
    def close(self) -> None:
        if self.closed:
            raise RuntimeError("already closed")
        super().close()


@pytest.mark.parametrize(("broken", "says"), [
    (_EnterGivesNone, "must give the backend itself"),
    (_ExitKeepsItOpen, "did not close it"),
    (_ClosesOnce, "a second close"),
])
def test_conformance_checks_the_lifecycle_it_promises(broken: type[MemoryBackend],
                                                      says: str) -> None:
    """k3snet.backends.base lists the lifecycle among what run_conformance checks, but the
    suite only called close() once, at the end: all three passed."""
    with pytest.raises(AssertionError, match=says):
        run_conformance(broken, max_examples=10)


def test_conformance_of_a_backend_of_other_kinds_asks_for_objects() -> None:
    """It said "kinds must be a non-empty subset of sysctl, route, forward, nat, got []",
    about kinds the caller never gave, instead of asking for ``objects=``."""
    from k3snet.errors import ModelError  # noqa: PLC0415

    with pytest.raises(ModelError, match=r"no default objects for kinds ippool; pass objects="):
        run_conformance(lambda: MemoryBackend(capabilities=["ippool"]), max_examples=5)


def test_conformance_tells_a_base_subclass_without_its_fault_hook_to_call_super() -> None:
    """A BackendBase subclass whose __init__ forgot super().__init__() was told to "give it
    a FaultHook ... (BackendBase does)": it does subclass BackendBase."""
    from k3snet.backends.kit import BackendBase  # noqa: PLC0415

    class Forgot(BackendBase):
        name = "forgot"
        capabilities = frozenset({"nat"})

        def __init__(self) -> None:  # no super().__init__()
            self.state = State()

        def observe(self) -> State:
            return self.state

        def check(self, plan: Plan) -> tuple[str, ...]:
            return ()

        def apply(self, plan: Plan) -> ApplyResult:
            return ApplyResult(self.name)

    with pytest.raises(AssertionError, match=r"Forgot.__init__ never called super\(\).__init__"):
        run_conformance(Forgot, max_examples=5)


def test_conformance_fails_a_backend_without_a_fault_hook() -> None:
    class NoHook(MemoryBackend):
        def __init__(self) -> None:
            super().__init__()
            del self.faults

    with pytest.raises(AssertionError, match="has no fault hook"):
        run_conformance(NoHook, max_examples=5)


def test_group_undo_does_not_re_add_repaired_drift() -> None:
    from k3snet.model import Drift  # noqa: PLC0415

    drift = Drift.of("forward", backend="memory", where="t", what="extra rule")
    forward = MemoryBackend(State(owned=[drift]), capabilities=["forward"])
    nat = MemoryBackend(capabilities=["nat"])
    group = BackendGroup([nat, forward])
    assert [m.backend for m in group.members] == [forward, nat]  # forward goes first
    p = plan(group.observe(), State(owned=[MasqueradeRule("10.42.0.0/16")]))
    nat.faults.fail_at(0)
    with pytest.raises(ApplyError) as caught:
        group.apply(p)
    assert not isinstance(caught.value, RollbackError)
    assert not forward.observe().owned  # the repair stays; no finding is re-added
    assert not nat.observe().owned


def test_an_apply_result_holds_its_changes_as_a_tuple_whatever_they_are_given_as() -> None:
    """A backend returning ``ApplyResult(name, [change])`` made a result unequal to the same
    one made from ``plan.changes``, and unhashable."""
    change = Change.add(STATIC)
    listed = ApplyResult("x", [change], 1)
    assert listed == ApplyResult("x", (change,), 1)
    assert listed.applied == (change,)
    assert hash(listed) == hash(ApplyResult("x", (change,), 1))


def test_an_apply_result_renders_its_summary_then_each_change() -> None:
    changes = Plan(changes=[Change.add(Sysctl("net.ipv4.ip_forward", "1")),
                            Change.add(Sysctl("net.ipv4.conf.all.rp_filter", "2"))]).changes
    result = ApplyResult("memory", changes, operations=1)
    assert result.summary() == "memory: 2 change(s) applied in 1 operation(s)"
    assert result.render().splitlines() == [result.summary(), *(f"  {c}" for c in changes)]


@pytest.mark.parametrize("name", ["", "my:backend", "my.backend", "a=b", "two words", "-x",
                                  "tab\tname", None])
def test_a_backend_name_the_cli_or_a_spec_could_not_name_is_refused_at_registration(
        name: object) -> None:
    with pytest.raises(BackendOptionError, match="letters, digits"):
        register_backend(name, MemoryBackend)  # type: ignore[arg-type]
    assert name not in registry.available_backends()


def test_a_factory_that_is_not_callable_is_refused_at_registration() -> None:
    with pytest.raises(BackendOptionError, match="must be callable"):
        register_backend("notcallable", "k3snet.backends.memory:MemoryBackend")  # type: ignore[arg-type]
    assert "notcallable" not in registry.available_backends()


def test_a_factory_that_returns_no_backend_is_refused_when_the_backend_is_made() -> None:
    """A factory function that forgot its ``return`` gave ``None``, and the first use
    (``converge``, the CLI) ended in an AttributeError, an internal error."""

    def forgetful(**options: object) -> Backend:
        MemoryBackend()
        return None  # type: ignore[return-value]

    register_backend("forgetful", forgetful)
    try:
        with pytest.raises(BackendUnavailableError,
                           match=r"returned NoneType, not a backend \(no name, no capabilities"):
            create_backend("forgetful")
    finally:
        unregister_backend("forgetful")


class _OwnUndo(MemoryBackend):
    """A member that hands back its own undo (ApplyResult.undo), which fails halfway."""

    def apply(self, plan: Plan) -> ApplyResult:
        result = super().apply(plan)
        first = result.applied[0].inverse()

        def undo() -> tuple[Change, ...]:
            raise RollbackError("second undo step failed", rolled_back=[first])

        return attrs.evolve(result, undo=undo)


def test_a_group_takes_a_member_back_through_its_own_undo_and_reports_what_it_undid() -> None:
    first = _OwnUndo(capabilities=["sysctl"])
    nat = MemoryBackend(capabilities=["nat"])
    group = BackendGroup([first, nat])
    p = plan(group.observe(), State(owned=[Sysctl("net.ipv4.ip_forward", "1"),
                                           Sysctl("net.ipv4.conf.all.rp_filter", "2"),
                                           MasqueradeRule("10.42.0.0/16")]))
    nat.faults.fail_at(0)
    with pytest.raises(RollbackError) as caught:
        group.apply(p)
    # Its own undo ran (not the inverse plan, which would have succeeded) ...
    assert "second undo step failed" in str(caught.value)
    assert len(first.observe().owned) == 2
    # ... and the step it took back before failing is reported as rolled back.
    assert [c.action for c in caught.value.rolled_back] == ["delete"]


class _HalfChanged(MemoryBackend):
    """A member whose apply fails and whose own undo fails too: the system is half-changed."""

    def apply(self, plan: Plan) -> ApplyResult:
        raise RollbackError("nat backend: rule 2 failed\n  ROLLBACK FAILED: rule 1 stays",
                            failed=plan.changes[0], done=plan.changes[:1])


def test_a_member_left_half_changed_makes_the_group_error_a_rollback_error() -> None:
    """The earlier members are taken back, but the later one says the system may be
    half-changed: that is a RollbackError for the group too (it used to be a plain
    ApplyError, which reads as "nothing changed, or all rolled back")."""
    sysctls = MemoryBackend(capabilities=["sysctl"])
    group = BackendGroup([sysctls, _HalfChanged(capabilities=["nat"])])
    p = plan(group.observe(), State(owned=[Sysctl("net.ipv4.ip_forward", "1"),
                                           MasqueradeRule("10.42.0.0/16")]))
    with pytest.raises(RollbackError) as caught:
        group.apply(p)
    assert "ROLLBACK FAILED" in str(caught.value)
    # Made: the sysctl, then the NAT rule; taken back: the sysctl. What may still be
    # there is what was made and not taken back (as Compensation.fail says it).
    assert [c.kind for c in caught.value.done] == ["sysctl", "nat"]
    assert caught.value.rolled_back == (p.changes[0].inverse(),)
    assert not sysctls.observe().owned  # the earlier member is taken back all the same


class _UndoInterrupted(MemoryBackend):
    """A member whose undo (the second apply: the inverse plan) gets a second Ctrl-C."""

    def apply(self, plan: Plan) -> ApplyResult:
        if self.observe().owned:
            raise KeyboardInterrupt
        return super().apply(plan)


def test_an_interrupted_group_undo_is_a_rollback_error_not_a_quiet_interruption() -> None:
    """A second Ctrl-C while the group takes an earlier member back leaves that member's
    part in place: the group says so (RollbackError, exit 1 with the message), as a
    backend's own interrupted undo does. It used to go on as a bare KeyboardInterrupt,
    which the CLI ends quietly (exit 130): nobody was told the node is half-changed."""
    sysctls = _UndoInterrupted(capabilities=["sysctl"])
    nat = MemoryBackend(capabilities=["nat"])
    group = BackendGroup([sysctls, nat])
    p = plan(group.observe(), State(owned=[Sysctl("net.ipv4.ip_forward", "1"),
                                           MasqueradeRule("10.42.0.0/16")]))
    nat.faults.fail_at(0)
    with pytest.raises(RollbackError) as caught:
        group.apply(p)
    assert isinstance(caught.value.__cause__, KeyboardInterrupt)
    assert "interrupted" in str(caught.value)
    assert [c.kind for c in caught.value.done] == ["sysctl"]
    assert sysctls.observe().owned  # what stays, as the error says


@pytest.mark.parametrize("kinds", [[], ()], ids=["list", "tuple"])
def test_a_member_given_no_kind_is_refused_with_a_model_error_naming_it(
        kinds: list[str]) -> None:
    """An empty kinds list (a template that rendered none) was a bare ValueError from
    ``min()`` ('arg is an empty sequence') when the group sorted its members."""
    with pytest.raises(ModelError, match="'memory' is given no kind to manage"):
        BackendGroup([Member(MemoryBackend(capabilities=["route"]), kinds)])


def test_an_interruption_between_two_members_takes_the_earlier_members_back() -> None:
    """Ctrl-C or SIGTERM (the CLI's handler raises) lands at any bytecode, also between
    one member's apply and the next one's start: the earlier members' parts must be taken
    back there too. Only an exception inside a member's apply call was caught; one in
    between left the sysctl applied. The signal is simulated deterministically: a trace
    function raises at the loop's ``if not part.changes:`` line of the second member."""
    import inspect  # noqa: PLC0415

    sysctls = MemoryBackend(capabilities=["sysctl"])
    nat = MemoryBackend(capabilities=["nat"])
    group = BackendGroup([sysctls, nat])
    p = plan(group.observe(), State(owned=[Sysctl("net.ipv4.ip_forward", "1"),
                                           MasqueradeRule("10.42.0.0/16")]))
    lines, first = inspect.getsourcelines(BackendGroup.apply)
    [between] = [first + i for i, text in enumerate(lines)
                 if text.strip() == "if not part.changes:"]
    seen = 0

    def trace(frame: FrameType, event: str, arg: object) -> TraceFunction | None:
        nonlocal seen
        code = getattr(frame, "f_code", None)
        if code is not BackendGroup.apply.__code__:
            return None
        if event == "line" and getattr(frame, "f_lineno", 0) == between:
            seen += 1
            if seen == 2:  # the sysctl member applied; the NAT member not started
                raise KeyboardInterrupt
        return trace

    before = sys.gettrace()  # a coverage tracer, if any, is put back
    sys.settrace(trace)
    try:
        with pytest.raises(KeyboardInterrupt):
            group.apply(p)
    finally:
        sys.settrace(before)
    assert seen == 2
    assert not sysctls.observe().owned
    assert not nat.observe().owned


def test_one_kind_given_alone_is_that_kind_for_a_member_and_the_memory_backend() -> None:
    """``capabilities="route"`` was refused as the unknown kinds e, o, r, t and u."""
    backend = MemoryBackend(capabilities="route")
    assert backend.capabilities == frozenset({"route"})
    assert Member(MemoryBackend(), "nat").kinds == frozenset({"nat"})


def test_a_memory_backend_given_objects_where_a_state_belongs_says_so_when_made() -> None:
    """A list of objects was taken, and the first observe() raised an AttributeError."""
    with pytest.raises(ModelError, match=r"MemoryBackend's state must be a k3snet\.State"):
        MemoryBackend([Sysctl("net.ipv4.ip_forward", "1")])  # type: ignore[arg-type]


class _ReportsNothing(MemoryBackend):
    """Applies its part, and returns a result listing none of it (``ApplyResult(name)``)."""

    def apply(self, plan: Plan) -> ApplyResult:
        super().apply(plan)
        return ApplyResult(self.name)


class _RefusesEverything(MemoryBackend):
    def apply(self, plan: Plan) -> ApplyResult:
        raise ApplyError(f"{self.name} refuses", failed=plan.changes[0])


_EGRESS = State(owned=[Route("192.168.2.0/24", device="eth0"),
                       MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")])


def test_a_group_undoes_the_part_it_gave_a_member_whatever_the_members_result_lists() -> None:
    """The undo was built from ``ApplyResult.applied``: a member whose result left its
    changes out kept them made, and the group's ApplyError said nothing was left."""
    routes = _ReportsNothing(capabilities=["route", "sysctl"])
    group = BackendGroup([routes, _RefusesEverything(capabilities=["nat", "forward"])])
    with pytest.raises(ApplyError) as caught:
        group.apply(plan(group.observe(), _EGRESS))
    assert not isinstance(caught.value, RollbackError)
    assert routes.observe() == State()
    assert caught.value.rolled_back == (Change.delete(Route("192.168.2.0/24", device="eth0")),)


def test_a_group_disarms_the_fault_it_armed_for_a_member_an_earlier_failure_kept_from_it(
) -> None:
    """The failure injected for the NAT member stayed armed when the route member failed
    first: the NAT backend's next apply, in or out of the group, failed for no reason."""
    nat = MemoryBackend(capabilities=["nat", "forward"])
    group = BackendGroup([_RefusesEverything(capabilities=["route", "sysctl"]), nat])
    p = plan(group.observe(), _EGRESS)
    group.faults.fail_at(1)  # the masquerade rule, the NAT member's part
    with pytest.raises(ApplyError, match="refuses"):
        group.apply(p)
    assert nat.faults.armed is None
    nat.apply(p.only("nat"))


def test_the_table_of_built_in_backends_gives_each_one_s_kinds() -> None:
    """docs/backends.md's first table: one row per built-in backend, with the kinds its
    class manages (``memory``: all)."""
    from k3snet.backends.registry import available_backends  # noqa: PLC0415

    page = (Path(__file__).resolve().parents[2] / "docs" / "backends.md").read_text()
    rows = {cells[0].strip("` "): cells[1].strip()
            for line in page.split("\n## ", 1)[0].splitlines() if line.startswith("| `")
            for cells in [line.strip("|").split("|")]}
    built_in = {"memory", "netlink", "nftables", "iptables", "flannel", "calico", "cilium"}
    assert set(rows) == built_in
    assert built_in <= set(available_backends())
    assert rows.pop("memory") == "all"
    for name, kinds in rows.items():
        declared = load_backend(name).capabilities  # type: ignore[attr-defined]
        if isinstance(declared, property):  # an instance's property that needs no state
            declared = declared.fget(None)  # type: ignore[misc]
        assert set(kinds.split(", ")) == declared, name


class _NeedsAPath(MemoryBackend):
    """A third-party backend whose one option has no default, as the docs' JSON file one."""

    def __init__(self, path: str, *, netns: str | None = None) -> None:
        super().__init__()
        self.path = path


def test_a_required_option_left_out_is_named_with_the_ways_to_give_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``create_backend`` (and so ``k3snet plan --backend NAME``, a spec's ``backends:``)
    without a backend's required option said only Python's "StaticRoutesBackend.__init__()
    missing 1 required positional argument: 'path'": nothing of ``--backend-opt`` or the
    spec's ``backends.NAME.path``, the ways a user gives it."""
    from k3snet.cli import main  # noqa: PLC0415

    register_backend("needs-path", _NeedsAPath)
    try:
        with pytest.raises(BackendOptionError) as caught:
            create_backend("needs-path", netns=None)
        message = str(caught.value)
        assert "backend 'needs-path' needs option 'path'" in message
        assert "--backend-opt needs-path.path=VALUE" in message
        assert "backends.needs-path.path" in message
        assert "__init__" not in message
        assert isinstance(create_backend("needs-path", path="x"), _NeedsAPath)
        # The command line says it so, and exits as for any bad option.
        (tmp_path / "spec.yaml").write_text(SEED.read_text())
        assert main(["plan", "-f", str(tmp_path / "spec.yaml"), "--backend", "needs-path",
                     "--backend", "memory:sysctl,forward,nat", "--no-facts"]) == 1
        assert "needs option 'path'" in capsys.readouterr().err
    finally:
        unregister_backend("needs-path")


def _json_file_name(path: object) -> None:
    """A third-party option check written with Python's own errors, not K3snetError."""
    if not os.fspath(path).endswith(".json"):  # type: ignore[call-overload]
        raise ValueError(f"path must name a .json file, got {path!r}")


class _ChecksItsPath(MemoryBackend):
    option_checks = {"path": _json_file_name}  # noqa: RUF012  # as the page writes it

    def __init__(self, path: str = "state.json") -> None:
        _json_file_name(path)
        super().__init__()


@pytest.mark.parametrize("value", ["/x.txt", 5])
def test_a_third_party_option_check_raising_value_or_type_error_is_a_refusal_of_the_value(
        tmp_path: Path, value: object, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/custom-backend.md's ``option_checks`` function, written as Python code usually
    refuses a value (``ValueError``; ``os.fspath(5)``'s ``TypeError``), made ``k3snet
    validate`` and ``plan`` end in "internal error: ValueError: path must name a .json
    file (a bug: please report it)", blaming k3snet for the spec's value."""
    from k3snet.cli import main  # noqa: PLC0415

    register_backend("checks-path", _ChecksItsPath)
    try:
        problems = registry.option_problems("checks-path", {"path": value})
        assert [option for option, _ in problems] == ["path"]
        with pytest.raises(BackendOptionError, match="backend 'checks-path': "):
            create_backend("checks-path", path=value)
        spec = tmp_path / "spec.yaml"
        spec.write_text(SEED.read_text() + f"backends:\n  checks-path: {{path: {value}}}\n")
        assert main(["validate", "-f", str(spec)]) == 1
        err = capsys.readouterr().err
        assert "backends.checks-path.path" in err
        assert "internal error" not in err
    finally:
        unregister_backend("checks-path")


@pytest.mark.usefixtures("installed_example")
@pytest.mark.parametrize(("entry", "says"), [
    ({"type": "vendor-qos-class", "device": "eth0", "class": 3}, "unknown object type"),
    ({"type": "route", "destination": "300.0.0.0/8"}, "is not a valid CIDR"),
])
def test_the_example_backend_names_its_file_for_an_entry_it_cannot_read(
        tmp_path: Path, entry: dict[str, object], says: str) -> None:
    """An entry the model refuses (another program's type k3snet does not know, a CIDR
    out of range) was a ModelError naming neither the backend nor the file:
    ``k3snet: error: '300.0.0.0/8' is not a valid CIDR``, on every run."""
    state = tmp_path / "state.json"
    state.write_text(json.dumps([{"by": "admin", "object": entry}]))
    with pytest.raises(BackendError, match=f"cannot read {state}: .*{says}"):
        create_backend("jsonfile", path=state).observe()


class _RoutesOnly(MemoryBackend):
    capabilities = frozenset({"route"})  # declared by the class


@pytest.mark.parametrize(("backends", "says"), [
    (["netlink", "nftables", "iptables"],
     "both 'nftables' and 'iptables' would manage forward, nat"),
    (["netlink", "routes-only", "nftables"], "both 'netlink' and 'routes-only' would manage route"),
    (["netlink", "nftables"], None),
])
def test_validate_refuses_a_spec_whose_backends_would_manage_one_kind_twice(
        tmp_path: Path, backends: list[str], says: str | None,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``k3snet validate`` said "valid" of a spec whose ``backends:`` two manage one kind
    (``[netlink, nftables, iptables]``, or a third-party route backend beside netlink),
    which ``plan``, ``apply`` and the agent refuse on every run ("both 'nftables' and
    'iptables' would manage nat"), and which a spec cannot split (``NAME:KINDS`` is the
    command line's)."""
    from k3snet.cli import main  # noqa: PLC0415

    register_backend("routes-only", _RoutesOnly)
    try:
        spec = tmp_path / "spec.yaml"
        spec.write_text(SEED.read_text() + f"backends: {json.dumps(backends)}\n")
        code = main(["validate", "-f", str(spec)])
    finally:
        unregister_backend("routes-only")
    err = capsys.readouterr().err
    if says is None:
        assert code == 0, err
    else:
        assert code == 1
        assert f"backends: {says}" in err
        assert "--backend NAME:KINDS" in err


class _OnMemory(MemoryBackend):
    """A third-party backend built on k3snet's own class."""


@pytest.mark.parametrize("name", ["memory", "on-memory"])
def test_a_type_error_raised_by_k3snets_own_code_building_a_backend_is_not_a_bad_value(
        monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """A ``TypeError`` or ``ValueError`` raised by k3snet's own code (a built-in backend's
    constructor, k3snet's class a third-party backend is built on) is a bug of k3snet's:
    it was a ``BackendOptionError`` ("backend 'memory': 'NoneType' object is not
    iterable"), a user's error (exit 1) where the CLI says "a bug: please report it"."""
    from k3snet.backends import memory  # noqa: PLC0415

    monkeypatch.setattr(memory, "known_kinds", lambda: None)  # a bug in k3snet's code
    register_backend("on-memory", _OnMemory)
    try:
        with pytest.raises(TypeError, match="not iterable") as raised:
            create_backend(name)
    finally:
        unregister_backend("on-memory")
    assert not isinstance(raised.value, BackendOptionError)


def test_a_type_error_of_k3snets_own_option_check_is_not_a_bad_value(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Likewise a built-in backend's option check (run by ``k3snet validate`` without
    building it): its bug was reported as a problem of the spec's value."""
    from k3snet.backends import memory  # noqa: PLC0415

    monkeypatch.setattr(memory, "known_kinds", lambda: None)
    with pytest.raises(TypeError, match="not iterable"):
        registry.option_problems("memory", {"capabilities": ["route"]})


@pytest.mark.parametrize("value", [5, True, [["route"]], {"route": 1}])
def test_the_memory_backend_s_capabilities_of_another_shape_are_refused_by_its_check_too(
        value: object) -> None:
    """``capabilities: 5`` passed ``k3snet validate`` and was Python's "'int' object is
    not iterable" from the constructor."""
    assert [o for o, _ in registry.option_problems("memory", {"capabilities": value})] == [
        "capabilities"]
    with pytest.raises(ModelError, match="capabilities must be a kind or a list of kinds"):
        create_backend("memory", capabilities=value)
