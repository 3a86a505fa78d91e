"""The conformance suite against deliberately broken backends: each breaks one promise
of :mod:`k3snet.backends.base`, and the suite must fail it.

Each of these backends passed ``run_conformance`` before the check that catches it
was added (second review of the kit, written from a third-party backend's side).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import attrs
import pytest

from k3snet import ApplyResult, Change, ForwardRule, Plan, Route, State, Sysctl
from k3snet.backends import Backend
from k3snet.backends.kit import BackendBase, Compensation, fit_problems, taken_slots
from k3snet.backends.memory import MemoryBackend
from k3snet.errors import ApplyError, PlanError
from k3snet.model import MasqueradeRule, NetObject, RouteBlock
from k3snet.testing import run_conformance

# Hypothesis reports several distinct failures as an ExceptionGroup.
FAILS = (AssertionError, ExceptionGroup)

# Most of these backends break a promise that needs no foreign object to show: the
# suite's word that it found none (a UserWarning) says nothing here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:run_conformance. .* found no foreign object:UserWarning")


def _blindly(backend: MemoryBackend, plan: Plan) -> ApplyResult:
    """Apply every change of ``plan`` to ``backend``'s state without judging it: an add
    over what is there overwrites it, a delete of what is gone does nothing."""
    owned = {o.key: o for o in backend._state.owned}
    for change in plan.changes:
        owned.pop(change.subject.key, None)
        if change.after is not None:
            owned[change.after.key] = change.after
    backend._state = backend._state.with_owned(owned.values())
    return ApplyResult(backend.name, plan.changes, len(plan.changes))


class _ChecksTheFirstChangeOnly(MemoryBackend):
    """Judges only a plan's first change, in ``check`` and ``apply``; applies the rest
    blindly (an add over what is there overwrites it, a delete of what is gone does nothing)."""

    def check(self, plan: Plan) -> tuple[str, ...]:
        return super().check(Plan(changes=plan.changes[:1]))

    def apply(self, plan: Plan) -> ApplyResult:
        problems = self.check(plan)
        if problems:
            raise PlanError("; ".join(problems))
        fail_at = self.faults.take(plan)
        if fail_at is not None:
            raise ApplyError("injected", failed=plan.changes[fail_at])
        return _blindly(self, plan)


class _RefusesOnlyWhenItGetsThere(MemoryBackend):
    """Refuses a stale change when it reaches it, keeping the changes made before it: a
    refused plan half-applied (``check`` is right, ``apply`` is not all or nothing)."""

    def apply(self, plan: Plan) -> ApplyResult:
        self.ensure_capable(plan)
        fail_at = self.faults.take(plan)
        before = self._state
        for index, change in enumerate(plan.changes):
            if index == fail_at:
                self._state = before
                raise ApplyError("injected", failed=change)
            step = Plan(changes=[change])
            if step.problems(self._state):
                raise PlanError(f"cannot {change}")
            self._state = step.apply_to(self._state)
        return ApplyResult(self.name, plan.changes, len(plan.changes))


def test_conformance_fails_a_backend_that_judges_only_a_plans_first_change() -> None:
    """Every stale plan the suite made had one change: judging ``plan.changes[0]`` only passed."""
    with pytest.raises(FAILS, match="stale"):
        run_conformance(_ChecksTheFirstChangeOnly, max_examples=30)


def test_conformance_fails_a_backend_that_refuses_a_plan_after_making_part_of_it() -> None:
    """A refused plan must change nothing; with one-change stale plans there was nothing
    before the refused change to keep."""
    with pytest.raises(FAILS, match="changed the state"):
        run_conformance(_RefusesOnlyWhenItGetsThere, max_examples=30)



class _UndoesNothing(MemoryBackend):
    """Hands back an exact undo (``ApplyResult.undo``) that takes nothing back."""

    def apply(self, plan: Plan) -> ApplyResult:
        return attrs.evolve(super().apply(plan), undo=lambda: ())


class _UndoReportsNothing(MemoryBackend):
    """Its undo takes the apply back but says it made no inverse change."""

    def apply(self, plan: Plan) -> ApplyResult:
        before = self._state
        result = super().apply(plan)

        def undo() -> tuple[Change, ...]:
            self._state = before
            return ()

        return attrs.evolve(result, undo=undo)


@pytest.mark.parametrize(("broken", "says"), [
    (_UndoesNothing, "ApplyResult.undo"),
    (_UndoReportsNothing, "inverse changes"),
])
def test_conformance_fails_a_backend_whose_exact_undo_is_not_exact(
        broken: type[MemoryBackend], says: str) -> None:
    """A BackendGroup calls ``ApplyResult.undo`` instead of applying the inverse plan when a
    later member fails; the suite never called it, so an undo that did nothing passed."""
    with pytest.raises(FAILS, match=says):
        run_conformance(broken, max_examples=20)


class _ObservesEveryKind(MemoryBackend):
    """Reports the whole state it holds, whatever its capabilities."""

    def observe(self) -> State:
        return self._state


def test_conformance_fails_a_backend_that_observes_kinds_it_does_not_manage() -> None:
    """``observe()`` reports the backend's kinds only (a group merges its members' states by
    kind); a route backend reporting the node's sysctls as foreign passed."""
    found = State(foreign=[Sysctl("net.ipv4.ip_forward", "0")])
    with pytest.raises(FAILS, match="kinds it does not manage"):
        run_conformance(lambda: _ObservesEveryKind(found, capabilities=["route"]),
                        max_examples=10)


class _KeepsATableByte(MemoryBackend):
    """Stores a route's table in a byte, as ``rtm_table`` does (the RTA_TABLE attribute
    holds the rest): table 256 reads back as 0, 1000 as 232."""

    def observe(self) -> State:
        state = super().observe()
        read = (attrs.evolve(o, table=o.table % 256 or 254)
                if isinstance(o, Route) and o.table % 256 != 255 else o for o in state.owned)
        # Two routes read into one slot: the second one read wins, as in a dump.
        return state.with_owned({o.key: o for o in read}.values())


class _WritesNoDefaultRoute(MemoryBackend):
    """Reads its default routes (/0) back as nothing."""

    def observe(self) -> State:
        state = super().observe()
        return state.with_owned(o for o in state.owned
                                if not (isinstance(o, Route) and o.destination.prefixlen == 0))


class _LowercasesDevices(MemoryBackend):
    """Reads interface names back lowercased (Linux names are case-sensitive)."""

    def observe(self) -> State:
        state = super().observe()
        return state.with_owned(
            attrs.evolve(o, device=o.device.lower())
            if isinstance(o, Route) and o.device is not None else o for o in state.owned)


@pytest.mark.parametrize("broken", [_KeepsATableByte, _WritesNoDefaultRoute, _LowercasesDevices])
def test_conformance_draws_the_edge_values_a_backend_gets_wrong(
        broken: type[MemoryBackend]) -> None:
    """Its default objects came from pools of tables 254 and 100, prefixes /8 and longer
    and devices eth0, eth1 and cni0: a backend that lost tables above 255, default routes
    or the case of a device name passed."""
    with pytest.raises(FAILS, match="observe\\(\\) differs from the plan's target"):
        run_conformance(lambda: broken(capabilities=["route"]), max_examples=30)


class _ChecksIntoAList(MemoryBackend):
    def check(self, plan: Plan) -> tuple[str, ...]:
        return list(super().check(plan))  # type: ignore[return-value]


def test_conformance_says_that_check_returns_a_tuple() -> None:
    """It said "check() reported [] for a valid plan": ``[] != ()``, but no problem either."""
    with pytest.raises(FAILS, match="check\\(\\) must return a tuple"):
        run_conformance(_ChecksIntoAList, max_examples=5)


def test_conformance_reports_a_failure_shrunk_without_hypothesis_explain_phase() -> None:
    """After shrinking, hypothesis' explain phase ran the failing stage a few hundred times
    more on the backend, every line traced, to comment which drawn values did not matter
    ("# or any other generated value"): most of the time a broken backend took to fail,
    for comments no author needs. The (shrunk) example is still reported."""
    with pytest.raises(AssertionError, match="check\\(\\) must return a tuple") as caught:
        run_conformance(_ChecksIntoAList, max_examples=5)
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert "round_trip(\n    first=" in notes
    assert "any other generated value" not in notes
    assert "always and only run by failing test cases" not in notes


class _DropsForeignSysctls(MemoryBackend):
    """An apply of two changes or more loses the foreign sysctls it found (which no reset
    restores). One change alone loses nothing: the objects beside the foreign ones, each
    added and removed alone before the random examples, pass, and the failure is met in
    an example hypothesis then replays."""

    def apply(self, plan: Plan) -> ApplyResult:
        result = super().apply(plan)
        if len(plan.changes) >= 2:
            self._state = State(owned=self._state.owned,
                                foreign=[o for o in self._state.foreign if o.kind != "sysctl"])
        return result


def test_conformance_reports_a_failure_it_cannot_replay_as_that_failure() -> None:
    """An example that leaves the backend changed for good made the replay fail otherwise,
    and hypothesis said ``FlakyFailure: Inconsistent results from replaying a test case!``,
    which blames the test and hides "apply changed foreign state" among sub-exceptions."""
    found = State(foreign=[Sysctl("net.ipv4.ip_forward", "0")])
    with pytest.raises(AssertionError, match="apply changed foreign state") as caught:
        run_conformance(lambda: _DropsForeignSysctls(found), max_examples=20)
    assert "could not be removed" in str(caught.value)


class _AddsIntoForeignSlots(MemoryBackend):
    """Leaves the slots to its system (``fit_problems(..., slots=False)``, as the netlink
    backend does, which reads the kernel's), but its system takes a route add into the
    slot (table, destination, metric) a foreign route holds, and holds both there."""

    def check(self, plan: Plan) -> tuple[str, ...]:
        return tuple(fit_problems(self, plan, self._state, slots=False))

    def apply(self, plan: Plan) -> ApplyResult:
        problems = self.check(plan)
        if problems:
            raise PlanError("; ".join(problems))
        if self.faults.take(plan) is not None:
            raise ApplyError("injected", failed=plan.changes[0])
        self._state = plan.apply_to(self._state)
        return ApplyResult(self.name, plan.changes, len(plan.changes))


def test_conformance_fails_a_backend_that_adds_a_route_where_a_foreign_one_stands() -> None:
    """A kernel holds one route a slot: an add there is refused (with NLM_F_REPLACE it
    would replace the foreign route). The suite never made such a plan, so a route
    backend whose own judgement allowed it passed."""
    static = Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0", protocol=4)
    with pytest.raises(FAILS, match="slot"):
        run_conformance(lambda: _AddsIntoForeignSlots(State(foreign=[static])), max_examples=5)


def test_taken_slots_names_the_route_adds_a_foreign_route_or_block_refuses() -> None:
    static = Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0", protocol=4)
    block = RouteBlock("10.9.0.0/16", metric=7, what="blackhole")
    found = State(foreign=[static, block])
    mine = Plan(changes=[Change.add(Route("192.168.2.0/24", device="eth1")),
                         Change.add(Route("10.9.0.0/16", device="eth1", metric=7)),
                         Change.add(Route("10.9.0.0/16", device="eth1", metric=8))])
    problems = taken_slots(mine, found)
    assert len(problems) == 2
    assert "192.168.2.0/24" in problems[0]
    assert "holds its slot" in problems[0]
    assert "blackhole" in problems[1]


class _ReplacesBlindly(MemoryBackend):
    """Judges adds and deletes, but takes a replace as "set this key", whatever is there."""

    def check(self, plan: Plan) -> tuple[str, ...]:
        return tuple(fit_problems(self, Plan(changes=[
            c for c in plan.changes if c.action != "replace"]), self._state))

    def apply(self, plan: Plan) -> ApplyResult:
        problems = self.check(plan)
        if problems:
            raise PlanError("; ".join(problems))
        if self.faults.take(plan) is not None:
            raise ApplyError("injected", failed=plan.changes[0])
        return _blindly(self, plan)


def test_conformance_fails_a_backend_that_replaces_what_is_not_there() -> None:
    """The stale plans the suite made were adds and deletes: a replace of an object that is
    gone, taken as an add, passed."""
    with pytest.raises(FAILS, match="stale plan replacing"):
        run_conformance(_ReplacesBlindly, max_examples=20)


def test_conformance_names_the_protocol_members_a_backend_lacks() -> None:
    """A BackendBase subclass without ``check`` was told only "<...> does not implement the
    Backend protocol", leaving its author to compare it with the protocol by hand."""

    class NoCheck(BackendBase):
        name = "nocheck"
        capabilities = frozenset({"nat"})

        def observe(self) -> State:
            return State()

        def apply(self, plan: Plan) -> ApplyResult:
            return ApplyResult(self.name)

    with pytest.raises(AssertionError, match=r"does not implement the Backend protocol: "
                                             r"no check\(\)"):
        run_conformance(NoCheck, max_examples=5)  # type: ignore[arg-type]  # no check(), on purpose


class _RollbackForgetsWhatItRecorded(MemoryBackend):
    """Rolls a failed apply back to its objects, but drops the values its sysctls recorded
    before taking over (``Sysctl.previous``, not compared by ``==``): the values a later
    delete should give back."""

    def apply(self, plan: Plan) -> ApplyResult:
        before = self._state
        try:
            return super().apply(plan)
        except ApplyError:
            self._state = State(
                owned=[attrs.evolve(o, previous=None) if isinstance(o, Sysctl) else o
                       for o in before.owned], foreign=before.foreign)
            raise


def test_conformance_fails_a_rollback_that_forgets_the_values_to_give_back() -> None:
    """After a failed apply the objects compared equal, so the suite passed a rollback that
    lost what k3snet must restore when it lets a sysctl go: removing everything then
    left the node's parameters at k3snet's values."""
    found = State(foreign=[Sysctl("net.ipv4.ip_forward", "0"),
                           Sysctl("net.ipv4.conf.all.rp_filter", "2")])
    with pytest.raises(FAILS, match="previous"):
        run_conformance(lambda: _RollbackForgetsWhatItRecorded(found, capabilities=["sysctl"]),
                        max_examples=30)


class _TrustsItsHint(MemoryBackend):
    """Takes ``expect(state)`` (a hint that must change no result) as what it holds."""

    def __init__(self) -> None:
        super().__init__()
        self.hint: State | None = None

    def expect(self, state: State) -> None:
        self.hint = state

    def observe(self) -> State:
        hint, self.hint = self.hint, None
        return hint if hint is not None else super().observe()


def test_conformance_fails_a_backend_whose_expect_hint_changes_what_it_observes() -> None:
    """``converge`` and ``k3snet plan`` call ``expect(desired)`` before ``observe()``; the
    page on writing a backend says it must change no result and that the suite checks
    "every rule above", but the suite never called it."""
    with pytest.raises(FAILS) as caught:
        run_conformance(_TrustsItsHint, max_examples=20)
    assert "expect() was given another state" in _messages(caught.value)


class _TrustsItsLeavingHint(MemoryBackend):
    """Takes ``expect_leaving(rules)`` (a group's hint of the forward rules another member
    manages, which must change no result) as foreign rules it holds."""

    def __init__(self) -> None:
        super().__init__()
        self.leaving: tuple[ForwardRule, ...] = ()

    def expect_leaving(self, rules: Iterable[ForwardRule]) -> None:
        self.leaving = tuple(rules)

    def observe(self) -> State:
        seen = super().observe()
        return State(owned=seen.owned, foreign=[*seen.foreign, *self.leaving])


def test_conformance_fails_a_backend_whose_expect_leaving_hint_changes_what_it_observes(
) -> None:
    """A group calls ``expect_leaving(rules)`` before ``observe()`` on a member that has
    it (the nftables backend); the suite never called it, so a backend that took it as
    what it holds passed."""
    with pytest.raises(FAILS) as caught:
        run_conformance(_TrustsItsLeavingHint, max_examples=20)
    assert "expect_leaving() was given forward rules" in _messages(caught.value)


def _messages(exc: BaseException) -> str:
    """The messages of an exception and, for a group (several distinct failures), of
    every exception in it."""
    inner = getattr(exc, "exceptions", ())
    return "\n".join([str(exc), *(_messages(e) for e in inner)])


def test_conformance_says_when_its_objects_are_of_kinds_the_backend_does_not_manage() -> None:
    """``objects=`` drawing a sysctl for a backend of routes made the suite blame the backend
    ("check() reported ('backend 'memory' manages route; the plan also changes sysctl ...')
    for a valid plan"), when the strategy handed to it was at fault."""
    from k3snet.errors import ModelError  # noqa: PLC0415
    from k3snet.testing import strategies  # noqa: PLC0415

    with pytest.raises(ModelError, match=r"objects= drew .* of kind sysctl"):
        run_conformance(lambda: MemoryBackend(capabilities=["route"]),
                        objects=strategies.objects(["route", "sysctl"]), max_examples=10)


class _ReplacesForeignObjects(_ReplacesBlindly):
    """Judges every change as the kit does, but lets a replace of a foreign object through
    (and then holds it as k3snet's)."""

    def check(self, plan: Plan) -> tuple[str, ...]:
        foreign = self._state.foreign
        return tuple(fit_problems(self, Plan(changes=[
            c for c in plan.changes
            if not (c.action == "replace" and c.before in foreign)]), self._state))

    def apply(self, plan: Plan) -> ApplyResult:
        result = super().apply(plan)
        taken = {c.before for c in plan.changes if c.action == "replace"}
        self._state = State(owned=self._state.owned,
                            foreign=[o for o in self._state.foreign if o not in taken])
        return result


def test_conformance_fails_a_backend_that_replaces_a_foreign_object() -> None:
    """Of the plans naming a foreign object the suite made only deletes: a backend taking a
    replace of one (k3snet rewriting another program's rule in place) passed."""
    flannel = MasqueradeRule("10.42.0.0/16", exclude=["10.42.0.0/16"], random_fully=True)
    with pytest.raises(FAILS, match="replacing the foreign"):
        run_conformance(
            lambda: _ReplacesForeignObjects(State(foreign=[flannel]), capabilities=["nat"]),
            max_examples=20)


# A node's own objects, beside which k3snet's are drawn: a static route, another
# program's masquerade, a forward accept, the forwarding sysctl.
_BESIDE = (Route("192.0.2.0/24", device="eth0", protocol=4),
           MasqueradeRule("10.42.0.0/16", destination="198.51.100.0/24"),
           ForwardRule("10.42.0.0/16", "198.51.100.0/24"),
           Sysctl("net.ipv4.ip_forward", "0"))


def _deleting_alike(backend: MemoryBackend, plan: Plan,
                    alike: Callable[[NetObject, NetObject], bool]) -> ApplyResult:
    """Apply ``plan``; each delete or replace also removes every foreign object ``alike``
    the one it removes (a delete matching on fewer fields than the object has)."""
    result = MemoryBackend.apply(backend, plan)
    gone = [c.before for c in plan.changes if c.before is not None]
    foreign = [o for o in backend._state.foreign if not any(alike(o, g) for g in gone)]
    backend._state = State(owned=backend._state.owned, foreign=foreign)
    return result


class _DeletesRoutesByDestination(MemoryBackend):
    """Deletes a route by its destination alone, as ``ip route del 192.0.2.0/24`` without
    table, metric and protocol does: the first route there goes, maybe another program's."""

    def apply(self, plan: Plan) -> ApplyResult:
        return _deleting_alike(self, plan, lambda o, g: isinstance(o, Route) and isinstance(
            g, Route) and o.destination == g.destination)


class _DeletesNatBySource(MemoryBackend):
    """Deletes a NAT rule by its source alone (every rule of that source goes)."""

    def apply(self, plan: Plan) -> ApplyResult:
        return _deleting_alike(self, plan, lambda o, g: o.kind == g.kind == "nat"
                               and getattr(o, "source", None) == getattr(g, "source", None))


class _ReadsForeignOverItsOwn(MemoryBackend):
    """Reads a route of its own as missing where a foreign route has its destination
    (in another table): its reader matches routes by destination."""

    def observe(self) -> State:
        state = super().observe()
        taken = {o.destination for o in state.foreign if isinstance(o, Route)}
        return State(owned=[o for o in state.owned
                            if not (isinstance(o, Route) and o.destination in taken)],
                     foreign=state.foreign)


@pytest.mark.parametrize(("broken", "says"), [
    (_DeletesRoutesByDestination, "apply changed foreign state"),
    (_DeletesNatBySource, "apply changed foreign state"),
    (_ReadsForeignOverItsOwn, "differs from the plan's target"),
])
def test_conformance_draws_objects_beside_the_foreign_ones_a_careless_backend_confuses(
        broken: type[MemoryBackend], says: str) -> None:
    """Random routes and rules almost never had a foreign one's destination or source, so a
    backend deleting the foreign route or NAT rule "alike" its own one, or reading its own
    one as the foreign one, passed the suite on a system full of foreign objects."""
    with pytest.raises(FAILS, match=says):
        run_conformance(lambda: broken(State(foreign=_BESIDE)), max_examples=30)


class _RemembersWhatItOwns(BackendBase):
    """Keeps the keys of what it added in the instance: its system (``store``) holds the
    objects, but another instance on it (the next ``k3snet apply``, a new process) takes
    them for another program's."""

    name = "remembers"
    capabilities = frozenset({"route", "nat", "forward", "sysctl"})

    def __init__(self, store: MemoryBackend) -> None:
        super().__init__()
        self.store = store
        self.faults = store.faults  # the store's apply takes the injected failure
        self._mine: set[tuple[object, ...]] = set()

    def observe(self) -> State:
        held = self.store.observe()
        return State(owned=[o for o in held.owned if o.key in self._mine],
                     foreign=[*held.foreign, *(o for o in held.owned if o.key not in self._mine)])

    def check(self, plan: Plan) -> tuple[str, ...]:
        return tuple(fit_problems(self, plan, self.observe()))

    def apply(self, plan: Plan) -> ApplyResult:
        self.ensure_fits(plan, self.observe())
        result = self.store.apply(plan)
        for change in plan.changes:
            self._mine.discard(change.subject.key)
            if change.after is not None:
                self._mine.add(change.after.key)
        return ApplyResult(self.name, result.applied, result.operations)


def test_conformance_with_reopen_fails_a_backend_that_remembers_what_it_owns() -> None:
    """Every stage ran on the one instance, so a backend that knew its objects from its own
    memory passed, and each new ``k3snet apply`` (a new process) read them as another
    program's: never updated nor removed, and added again beside them."""
    found = State(foreign=_BESIDE)
    run_conformance(lambda: _RemembersWhatItOwns(MemoryBackend(found)), max_examples=10)
    with pytest.raises(FAILS, match="another remembers backend on the same system"):
        run_conformance(lambda: _RemembersWhatItOwns(MemoryBackend(found)), max_examples=10,
                        reopen=lambda b: _RemembersWhatItOwns(b.store))  # type: ignore[attr-defined]


def test_conformance_with_reopen_fails_a_backend_that_forgets_the_values_to_give_back(
) -> None:
    """The values a backend's sysctls recorded (``Sysctl.previous``) must outlive it too:
    the next process deletes the sysctl and gives that value back."""

    def reopen(backend: Backend) -> Backend:
        """A backend on what ``backend`` holds, but the values its sysctls recorded."""
        held = backend.observe()
        return MemoryBackend(State(owned=[attrs.evolve(o, previous=None) if isinstance(o, Sysctl)
                                    else o for o in held.owned], foreign=held.foreign))

    found = State(foreign=[Sysctl("net.ipv4.ip_forward", "0")])
    with pytest.raises(FAILS) as caught:
        run_conformance(lambda: MemoryBackend(found, capabilities=["sysctl"]), max_examples=20,
                        reopen=reopen)
    assert "reopened None" in _messages(caught.value)


class _DeletesForeignNat(MemoryBackend):
    """Guards the foreign routes and sysctls it finds, but lets a plan delete or replace
    another program's NAT and forward rules."""

    def _theirs(self, plan: Plan) -> list[Change]:
        return [c for c in plan.changes if c.before is not None
                and c.before.kind in ("nat", "forward") and c.before in self._state.foreign]

    def check(self, plan: Plan) -> tuple[str, ...]:
        theirs = self._theirs(plan)
        return super().check(Plan(changes=[c for c in plan.changes if c not in theirs]))

    def apply(self, plan: Plan) -> ApplyResult:
        theirs = self._theirs(plan)
        if not theirs:
            return super().apply(plan)
        gone = {c.before for c in theirs}
        self._state = State(owned=self._state.owned, foreign=self._state.foreign - gone)
        return ApplyResult(self.name, plan.changes, len(plan.changes))


def test_conformance_tries_to_delete_foreign_objects_of_every_kind_it_finds() -> None:
    """It tried the first three foreign objects found: on a node with sysctls and routes
    (which sort first) never a NAT or forward rule, so a backend deleting another
    program's masquerade when a plan said so passed."""
    found = State(foreign=[*_BESIDE, Sysctl("net.ipv4.conf.all.rp_filter", "2"),
                           Sysctl("net.ipv6.conf.all.forwarding", "0")])
    with pytest.raises(FAILS, match=r"a plan deleting the foreign (forward|masquerade)"):
        run_conformance(lambda: _DeletesForeignNat(found), max_examples=5)


class _StoreBackend(MemoryBackend):
    """A backend on a shared system (``store``), as two processes' backends share a node."""

    def __init__(self, store: MemoryBackend) -> None:
        super().__init__()
        self.store = store
        self.faults = store.faults

    def observe(self) -> State:
        return self.store.observe()

    def check(self, plan: Plan) -> tuple[str, ...]:
        return self.store.check(plan)

    def apply(self, plan: Plan) -> ApplyResult:
        return self.store.apply(plan)


class _KeepsWhatItRead(_StoreBackend):
    """Keeps what it read until it applies something itself: what another process (a
    ``k3snet apply`` beside the agent) changed stays unseen."""

    _kept: State | None = None

    def observe(self) -> State:
        if self._kept is None:
            self._kept = super().observe()
        return self._kept

    def apply(self, plan: Plan) -> ApplyResult:
        self._kept = None
        try:
            return super().apply(plan)
        finally:
            self._kept = None


def test_conformance_with_reopen_fails_a_backend_blind_to_changes_another_process_made(
) -> None:
    """The suite changed the system through the one backend only, so a read kept until the
    backend's own next apply passed; the agent's backend, alive from pass to pass, then
    planned against a state a ``k3snet apply`` beside it had changed."""
    found = State(foreign=_BESIDE)
    run_conformance(lambda: _StoreBackend(MemoryBackend(found)), max_examples=10,
                    reopen=lambda b: _StoreBackend(b.store))  # type: ignore[attr-defined]
    run_conformance(lambda: _KeepsWhatItRead(MemoryBackend(found)), max_examples=10)
    with pytest.raises(FAILS, match=r"after another \w+ backend on the same system"):
        run_conformance(lambda: _KeepsWhatItRead(MemoryBackend(found)), max_examples=10,
                        reopen=lambda b: _KeepsWhatItRead(b.store))  # type: ignore[attr-defined]


class _ReportsItsRollbackAs(MemoryBackend):
    """Fails as the memory backend does (the changes before the failing one made, then
    undone), and reports that in its own words (``report``: the error it raises instead)."""

    @staticmethod
    def report(exc: ApplyError, plan: Plan) -> ApplyError:
        raise NotImplementedError

    def apply(self, plan: Plan) -> ApplyResult:
        try:
            return super().apply(plan)
        except ApplyError as exc:
            raise self.report(exc, plan) from None


class _SaysNothingWasDone(_ReportsItsRollbackAs):
    """Rolled back the changes it made, says none was made (as a group's error did)."""

    @staticmethod
    def report(exc: ApplyError, plan: Plan) -> ApplyError:
        return ApplyError(exc.message, failed=exc.failed, rolled_back=exc.rolled_back)


class _SaysNothingWasRolledBack(_ReportsItsRollbackAs):
    """Names the changes it made, not that it took them back."""

    @staticmethod
    def report(exc: ApplyError, plan: Plan) -> ApplyError:
        return ApplyError(exc.message, failed=exc.failed, done=exc.done)


class _RollsBackFirstFirst(_ReportsItsRollbackAs):
    """Lists the inverses in the order the changes were made (the undo ran last first)."""

    @staticmethod
    def report(exc: ApplyError, plan: Plan) -> ApplyError:
        return ApplyError(exc.message, failed=exc.failed, done=exc.done,
                          rolled_back=tuple(reversed(exc.rolled_back)))


class _BlamesTheFirstChange(_ReportsItsRollbackAs):
    """Names the plan's first change as the one that failed, whichever did."""

    @staticmethod
    def report(exc: ApplyError, plan: Plan) -> ApplyError:
        return ApplyError(exc.message, failed=plan.changes[0], done=exc.done,
                          rolled_back=exc.rolled_back)


class _DoneHoldsOtherChanges(_ReportsItsRollbackAs):
    """Says it made the inverses it undid (a change the plan does not hold)."""

    @staticmethod
    def report(exc: ApplyError, plan: Plan) -> ApplyError:
        return ApplyError(exc.message, failed=exc.failed, done=exc.rolled_back,
                          rolled_back=tuple(c.inverse() for c in reversed(exc.rolled_back)))


@pytest.mark.parametrize(("broken", "says"), [
    (_SaysNothingWasDone, "inverses of the changes in ApplyError.done"),
    (_SaysNothingWasRolledBack, "inverses of the changes in ApplyError.done"),
    (_RollsBackFirstFirst, "last first"),
    (_BlamesTheFirstChange, "ApplyError.failed names another change"),
    (_DoneHoldsOtherChanges, "changes of the plan made before the failure"),
])
def test_conformance_fails_an_apply_error_that_misreports_the_rollback(
        broken: type[MemoryBackend], says: str) -> None:
    """``ApplyError.done`` / ``rolled_back`` / ``failed`` say what a failed apply made and
    took back (the CLI prints them, a group adds its own to them); the suite checked only
    that the system was as before, so any words passed."""
    with pytest.raises(FAILS, match=says):
        run_conformance(broken, max_examples=20)


def test_conformance_passes_an_apply_error_of_a_transaction_refused_whole() -> None:
    """A backend with a real transaction makes nothing before the failure: ``done`` and
    ``rolled_back`` empty, ``failed`` the change refused or ``None``."""

    class Transactional(MemoryBackend):
        def apply(self, plan: Plan) -> ApplyResult:
            fail_at = self.faults.take(plan)
            if fail_at is not None:
                raise ApplyError("refused whole", failed=None if fail_at % 2 else
                                 plan.changes[fail_at])
            return super().apply(plan)

    run_conformance(Transactional, max_examples=20)


class _TokenOfItsOwnApplies(_StoreBackend):
    """Counts its own applies as its change token: blind to another process's changes."""

    def __init__(self, store: MemoryBackend) -> None:
        super().__init__(store)
        self.applies = 0

    def change_token(self) -> int:
        return self.applies

    def apply(self, plan: Plan) -> ApplyResult:
        result = super().apply(plan)
        self.applies += 1
        return result


class _ConstantToken(_StoreBackend):
    """A change token that never moves (a version read from the wrong place)."""

    def change_token(self) -> str:
        return "v1"


@pytest.mark.parametrize(("broken", "reopened"), [(_ConstantToken, False),
                                                  (_TokenOfItsOwnApplies, True)])
def test_conformance_fails_a_change_token_that_stays_while_the_state_changes(
        broken: type[_StoreBackend], reopened: bool) -> None:
    """The agent observes again only when a token moves (and an ObserveCache serves its
    value while the token stays): a token that stayed while the system changed passed."""
    store = MemoryBackend()
    with pytest.raises(FAILS, match=r"change_token\(\) stayed"):
        run_conformance(lambda: broken(store), max_examples=20,
                        reopen=(lambda _: broken(store)) if reopened else None)


def test_conformance_passes_a_change_token_that_moves_with_the_system() -> None:
    store = MemoryBackend()

    class Versioned(_StoreBackend):
        def change_token(self) -> str:
            return self.store.dump()

    run_conformance(lambda: Versioned(store), max_examples=20,
                    reopen=lambda _: Versioned(store))


def test_conformance_warns_when_it_finds_no_foreign_object_to_leave_alone() -> None:
    """On an empty system the checks about other programs' objects had nothing to work on,
    and the suite passed without a word: a backend deleting any route it found passed."""
    with pytest.warns(UserWarning, match=r"no foreign object \(of kind nat, route\)"):
        run_conformance(lambda: MemoryBackend(capabilities=["route", "nat"]), max_examples=5)
    found = State(foreign=[Route("192.0.2.0/24", device="eth0")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_conformance(lambda: MemoryBackend(found, capabilities=["route", "nat"]),
                        max_examples=5)


class _Generations(MemoryBackend):
    """A memory backend whose change token is a generation, moved by every write that
    changes its state (as nftables' generation id is by every commit)."""

    generation = 0

    @property
    def _state(self) -> State:
        return self.__dict__["held"]  # type: ignore[no-any-return]

    @_state.setter
    def _state(self, state: State) -> None:
        if self.__dict__.get("held") != state:
            self.generation += 1
        self.__dict__["held"] = state

    def change_token(self) -> int:
        return self.generation


class _MakesAndUndoesSayingNothing(_Generations):
    """Makes the changes before the failure and takes them back (as the memory backend
    does), and says nothing was made, as a transaction refused whole would."""

    def apply(self, plan: Plan) -> ApplyResult:
        try:
            return super().apply(plan)
        except ApplyError as exc:
            raise ApplyError(exc.message, failed=exc.failed) from None


def test_conformance_warns_of_an_apply_error_saying_nothing_was_made_while_the_token_moved(
) -> None:
    """``observe()`` after the rollback reports what it did before, so ``done=()`` of a
    backend that made and undid the changes before the failure looked like a transaction
    and passed; its change token moved across the failed apply (twice when retried)."""
    with pytest.warns(UserWarning, match=r"says nothing was made before it .*change_token"):
        run_conformance(_MakesAndUndoesSayingNothing, max_examples=20)


def test_conformance_does_not_warn_of_a_transaction_or_a_rollback_said_whole() -> None:
    class Transactional(_Generations):
        def apply(self, plan: Plan) -> ApplyResult:
            if self.faults.take(plan) is not None:
                raise ApplyError("refused whole")
            return super().apply(plan)

    with warnings.catch_warnings():
        warnings.filterwarnings("error", ".*says nothing was made", UserWarning)
        run_conformance(_Generations, max_examples=20)  # done and rolled_back said
        run_conformance(Transactional, max_examples=20)


# ---------------------------------------------------------------- what observe() cannot see

# What other programs wrote to a shared store: two objects of the backend's kinds, one of a
# kind it does not manage (never observed), and one written twice (an admin's copy).
_OTHERS: tuple[tuple[str, NetObject], ...] = (
    ("admin", Route("192.0.2.0/24", device="eth0", protocol=4)),
    ("admin", MasqueradeRule("10.42.0.0/16", destination="198.51.100.0/24")),
    ("admin", MasqueradeRule("10.42.0.0/16", destination="198.51.100.0/24")),
    ("admin", Sysctl("net.ipv4.ip_forward", "1")),
    ("k3snet-sysctl", Sysctl("net.ipv4.conf.all.rp_filter", "2")))


class _EntriesBackend(BackendBase):
    """docs/custom-backend.md's JSON file backend on a list of ``(by, object)`` entries
    (its store, shared with other programs and with another k3snet backend of sysctls)."""

    name = "entries"
    capabilities = frozenset({"route", "nat"})

    def __init__(self, entries: list[tuple[str, NetObject]] | None = None) -> None:
        super().__init__()
        self.entries = list(_OTHERS) if entries is None else entries

    def observe(self) -> State:
        return State(owned=[o for by, o in self.entries if by == "k3snet"],
                     foreign=[o for by, o in self.entries if by != "k3snet"]
                     ).only(self.capabilities)

    def check(self, plan: Plan) -> tuple[str, ...]:
        return tuple(fit_problems(self, plan, self.observe()))

    def apply(self, plan: Plan) -> ApplyResult:
        observed = self.observe()
        self.ensure_fits(plan, observed)
        fail_at = self.faults.take(plan)
        if fail_at is not None:  # one write: failing anywhere writes nothing
            Compensation(self.name).fail(plan.changes[fail_at], "injected failure")
        self.entries[:] = self.written(plan, plan.apply_to(observed))
        return ApplyResult(self.name, plan.changes, operations=1)

    def written(self, plan: Plan, new: State) -> list[tuple[str, NetObject]]:
        """The entries a write of ``new`` leaves: the others' as they were, then its own."""
        return ([e for e in self.entries if e[0] != "k3snet"]
                + [("k3snet", o) for o in sorted(new.owned)])


def _held(backend: Backend) -> list[NetObject]:
    return [o for _, o in backend.entries]  # type: ignore[attr-defined]


class _KeepsOnlyItsKinds(_EntriesBackend):
    """Rewrites the store with the entries of its own kinds only: the other programs'
    sysctl and the other k3snet backend's are gone after its first apply."""

    def written(self, plan: Plan, new: State) -> list[tuple[str, NetObject]]:
        return [e for e in super().written(plan, new) if e[1].kind in self.capabilities]


class _AddsTwice(_EntriesBackend):
    """Writes each object a plan adds a second time (appended after the rewrite)."""

    def written(self, plan: Plan, new: State) -> list[tuple[str, NetObject]]:
        return [*super().written(plan, new),
                *(("k3snet", c.after) for c in plan.changes
                  if c.action == "add" and c.after is not None)]


class _DropsCopies(_EntriesBackend):
    """Keeps one entry of each other program's object: the admin's second copy goes."""

    def written(self, plan: Plan, new: State) -> list[tuple[str, NetObject]]:
        return list(dict.fromkeys(super().written(plan, new)))


class _ReportsWhatItDoesNotHold(_EntriesBackend):
    """Reports a foreign route of a default of its own, which no entry holds."""

    def observe(self) -> State:
        seen = super().observe()
        return State(owned=seen.owned,
                     foreign=[*seen.foreign, Route("203.0.113.0/24", device="eth1")])


class _WipesOtherKinds(MemoryBackend):
    """A route backend on a memory store of every kind: each apply of routes drops the
    sysctls it holds (another backend's), which its observe() never reports."""

    def apply(self, plan: Plan) -> ApplyResult:
        result = super().apply(plan)
        self._state = self._state.only(self.capabilities)
        return result


def _memory_store(backend: Backend) -> list[NetObject]:
    state = backend.state  # type: ignore[attr-defined]
    return [*state.owned, *state.foreign]


def test_conformance_with_a_store_passes_backends_that_keep_what_they_do_not_observe() -> None:
    """The reference and the page's backend keep every other entry, as written."""
    run_conformance(_EntriesBackend, max_examples=20, store=_held)
    found = State(foreign=[Route("192.0.2.0/24", device="eth0", protocol=4),
                           Sysctl("net.ipv4.ip_forward", "0")])
    run_conformance(lambda: MemoryBackend(found, capabilities=["route"]), max_examples=20,
                    store=_memory_store)
    run_conformance(lambda: MemoryBackend(found), max_examples=20, store=_memory_store)


@pytest.mark.parametrize(("broken", "says"), [
    (_KeepsOnlyItsKinds, r"net.ipv4.ip_forward = 1: held 0 time\(s\), expected 1"),
    (_AddsTwice, r"held 2 time\(s\), expected 1"),
    (_DropsCopies, r"held 1 time\(s\), expected 2"),
    (_ReportsWhatItDoesNotHold, "reports objects store= does not hold"),
], ids=lambda v: v.__name__ if isinstance(v, type) else "")
def test_conformance_with_a_store_fails_a_store_that_differs_behind_observe(
        broken: type[_EntriesBackend], says: str) -> None:
    """observe() gives each object once, of the backend's kinds: these passed the suite
    (docs/custom-backend.md said so, and told authors to test their store themselves)."""
    run_conformance(broken, max_examples=20)  # observe() alone cannot tell
    with pytest.raises(FAILS, match=says):
        run_conformance(broken, max_examples=20, store=_held)


def test_conformance_with_a_store_fails_an_apply_that_drops_objects_of_another_kind() -> None:
    """An apply of routes dropped the sysctls beside them in the store it shares."""
    found = State(foreign=[Route("192.0.2.0/24", device="eth0", protocol=4),
                           Sysctl("net.ipv4.ip_forward", "0")])
    run_conformance(lambda: _WipesOtherKinds(found, capabilities=["route"]), max_examples=10)
    with pytest.raises(FAILS, match=r"net.ipv4.ip_forward = 0: held 0"):
        run_conformance(lambda: _WipesOtherKinds(found, capabilities=["route"]),
                        max_examples=10, store=_memory_store)
