"""Several backends acting as one: each manages its own kinds of one plan.

A node is usually driven by more than one backend (``netlink`` for routes and
sysctls, ``nftables`` or ``iptables`` for NAT and forward rules). A
:class:`BackendGroup` is itself a :class:`~k3snet.backends.Backend`: it splits a
plan by kind, applies the parts in the plan's order (sysctls and routes added
before the NAT and forward rules relying on them, deleted after them), and if one part fails
(for any reason: a refusal, an apply error, a crash of the member's code), it
undoes the parts already applied, so the group keeps the all-or-nothing rule.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence

from k3snet._logline import fs_word, shell_join
from k3snet.backends.base import ApplyResult, Backend, ensure_capable
from k3snet.backends.kit import (
    FaultHook,
    WarningLog,
    backend_warnings,
    committing,
    held_after_commit,
    undo_running,
)
from k3snet.backends.netns import exec_name
from k3snet.errors import ApplyError, K3snetError, ModelError, PlanError, RollbackError
from k3snet.model import ForwardBlock, ForwardRule, NetObject
from k3snet.model.drift import Drift
from k3snet.model.state import State, kind_set, known_kinds
from k3snet.planner import Change, Plan

__all__ = ["BackendGroup", "Member"]


class Member:
    """One backend of a group, limited to some of its kinds (all of them by default; one
    kind may be given alone, ``Member(backend, "nat")``)."""

    def __init__(self, backend: Backend, kinds: Iterable[str] | None = None) -> None:
        self.backend = backend
        self.kinds = frozenset(backend.capabilities) if kinds is None else kind_set(kinds)
        if not self.kinds:  # it would own nothing, and has no place in the apply order
            raise ModelError(f"backend {backend.name!r} is given no kind to manage "
                             f"(it manages {', '.join(sorted(backend.capabilities)) or 'none'})")
        extra = self.kinds - backend.capabilities
        if extra:
            raise ModelError(f"backend {backend.name!r} cannot manage {', '.join(sorted(extra))} "
                             f"(it manages {', '.join(sorted(backend.capabilities))})")
        unknown = self.kinds - set(known_kinds())
        if unknown:  # no rank: it has no place in the apply order (min() of nothing)
            raise ModelError(
                f"backend {backend.name!r} manages {', '.join(sorted(unknown))}, a kind no "
                "object type is registered for: register its NetObject classes with "
                "k3snet.model.register_object_type when its module is imported "
                "(docs/custom-backend.md, New kinds of objects)")

    def order(self) -> int:
        ranks = known_kinds()
        return min(ranks.index(k) for k in self.kinds if k in ranks)


def _seen_by(member: Member, state: State, kinds: frozenset[str],
             judged: Callable[[NetObject], bool] = lambda _: False) -> State:
    """``member``'s part of the group's state: its owned and foreign objects of its kinds
    here, and the drops it sees of the other kinds of the group (``kinds``) but those
    another member ``judged`` itself."""
    part = state.only(member.kinds)  # the very state, unsorted again, in the usual case
    extra = [o for o in state.foreign if o.kind in kinds and o.kind not in member.kinds
             and _final(o) and not judged(o)]
    return State(owned=part.owned, foreign=[*part.foreign, *extra]) if extra else part


def _made(results: Iterable[tuple[Member, Plan, ApplyResult]]) -> list[Change]:
    """The changes of the parts the members applied, in the order they were made."""
    return [c for _, part, _ in results for c in part.changes]


def _taken_back(exc: BaseException, own_undo: bool) -> list[Change]:
    """What a member's failed undo took back of its part, as inverses of its changes.

    Its exact undo (:attr:`ApplyResult.undo`) reports them as ``rolled_back``. The
    inverse plan, applied as any plan, reports the inverses it made as ``done`` and
    what its own rollback made again (the original changes) as ``rolled_back``: taken
    back are the inverses made and not made again. A plain ApplyError took all of them
    back; an interruption reports nothing, and nothing is counted."""
    if not isinstance(exc, ApplyError):
        return []
    if own_undo:
        return list(exc.rolled_back) if isinstance(exc, RollbackError) else []
    again = Counter(exc.rolled_back)
    taken: list[Change] = []
    for change in exc.done:
        if again[change.inverse()] > 0:
            again[change.inverse()] -= 1
        else:
            taken.append(change)
    return taken


_NOTHING_CHANGED = "nothing was changed"
"""What a backend's error says of a failure that changed nothing (the kit's
``(nothing was changed)``, nftables' refused transaction, a refused plan)."""


def _failure(name: str, exc: BaseException, again: bool = False) -> str:
    """What failing member ``name``'s error ``exc`` says (its message, without the failed
    change its error adds), its "nothing was changed" said of the member: beside the
    earlier members' parts the group took back, it read as the node's (a contradiction
    to an operator, who saw changes taken back). ``again``: the member had made an
    earlier run of its part (deletes before another member's changes, then adds), taken
    back too: it changed nothing *more* ("nftables changed nothing" stood beside
    "nftables' 1 change(s) ... taken back")."""
    own = exc if isinstance(exc, ApplyError) else None
    text = own.message if own is not None else str(exc) or type(exc).__name__
    untouched = (isinstance(exc, PlanError) or (
        own is not None and not own.done and not isinstance(own, RollbackError)))
    if not untouched:
        return text
    said = f"{name} changed nothing more" if again else f"{name} changed nothing"
    if _NOTHING_CHANGED in text:
        return text.replace(_NOTHING_CHANGED, said)
    return f"{text} ({said})"


def _undo_failure(exc: Exception) -> str:
    """What a member's failed undo says: its error's message, its "nothing was changed"
    said of the undo. Its whole text stood in the group's message: "(nothing was
    changed)", read as the node's beside the parts that may still be there, and a second
    "failed change:" (the undo's inverse) before the group's own."""
    if not isinstance(exc, ApplyError):
        return str(exc) or type(exc).__name__
    text = exc.message
    if not exc.done and not isinstance(exc, RollbackError):
        text = text.replace(_NOTHING_CHANGED, "its undo changed nothing")
    if exc.failed is not None and str(exc.failed) not in text:
        text += f" (at {exc.failed})"  # a backend's message that does not name it
    return text


def _story(failure: str, said: str) -> str:
    """The failing member's message, then what the group ``said`` of the node: after it,
    or on its first line when it lists problems on the lines below (a refusal's
    "nothing was changed:" and its problems): after the last problem, it read as one
    more, and the agent's log line, which names the first lines alone, left it out."""
    head, newline, items = failure.partition("\n")
    if not newline:
        return f"{failure}; {said}"
    colon = ":" if head.endswith(":") else ""
    return f"{head.removesuffix(':')} ({said}){colon}\n{items}"


def _named(name: str, text: str) -> str:
    """``text`` said of member ``name``: after its name, but once ("nftables: nftables:
    the kernel refused the transaction" when the member's message names it first)."""
    return text if text.startswith(f"{name}: ") else f"{name}: {text}"


def _possessive(name: str) -> str:
    """``netlink's``, ``nftables'``."""
    return f"{name}'" if name.endswith("s") else f"{name}'s"


def _ran(member: Member, results: Sequence[tuple[Member, Plan, ApplyResult]]) -> bool:
    """Whether ``member`` applied a run of its part already (one of ``results``)."""
    return any(m is member for m, _, _ in results)


def _taken_back_parts(results: Sequence[tuple[Member, Plan, ApplyResult]],
                      failing: str, label: Callable[[Member], str]) -> str:
    """The earlier members' parts the group took back, by member in the order applied
    (``netlink's 3 change(s) made before nftables failed were taken back``; a member
    given two runs counted once). A drift finding's repair is not taken back (its
    inverse would re-add the finding): counted among them, the message said one more
    change taken back than the error's ``rolled_back``; said apart, as kept. Each
    member is named by its ``label``."""
    made: dict[int, tuple[str, int, int]] = {}
    for member, part, _ in results:
        name, count, repairs = made.get(id(member), (label(member), 0, 0))
        drift = sum(isinstance(c.subject, Drift) for c in part.changes)
        made[id(member)] = (name, count + len(part.changes) - drift, repairs + drift)
    said: list[str] = []
    taken = [f"{_possessive(name)} {count} change(s)" for name, count, _ in made.values()
             if count]
    if taken:
        said.append(f"{' and '.join(taken)} made before {failing} failed were taken back")
    kept = [f"{_possessive(name)} {repairs} repair(s) of drift" for name, _, repairs
            in made.values() if repairs]
    if kept:
        said.append(f"{' and '.join(kept)} made before {failing} failed were kept (a "
                    "repair is not undone)")
    return "; ".join(said)


def _left_parts(results: Sequence[tuple[Member, Plan, ApplyResult]], taken: int,
                label: Callable[[Member], str]) -> str:
    """The parts of ``results`` a failed undo left, by member (``netlink's 2
    change(s)``): every change but a drift repair (kept anyway), less the ``taken`` the
    last part's own undo took back before it failed."""
    left: dict[int, tuple[str, int]] = {}
    for index, (member, part, _) in enumerate(results):
        count = sum(not isinstance(c.subject, Drift) for c in part.changes)
        if index == len(results) - 1:
            count = max(count - taken, 0)
        name, before = left.get(id(member), (label(member), 0))
        left[id(member)] = (name, before + count)
    return " and ".join(f"{_possessive(name)} {count} change(s)"
                        for name, count in left.values() if count)


def _final(obj: NetObject) -> bool:
    """Whether a foreign object decides wherever the other member's rule sits: a forward
    drop or reject, final in any chain of the hook. What a backend reads relative to its
    own rules is not (an iptables RETURN before the jump to its chain exempts that chain
    from NAT, not nftables' table: read by nftables' member it was a false conflict)."""
    return isinstance(obj, ForwardBlock) and obj.final


class BackendGroup:
    """A backend made of others, each owning distinct kinds.

    >>> from k3snet.backends.memory import MemoryBackend
    >>> group = BackendGroup([MemoryBackend(capabilities=["route", "sysctl"]),
    ...                       MemoryBackend(capabilities=["nat", "forward"])])
    >>> sorted(group.capabilities)
    ['forward', 'nat', 'route', 'sysctl']
    """

    def __init__(self, members: Sequence[Backend | Member]) -> None:
        self.members = sorted(
            (m if isinstance(m, Member) else Member(m) for m in members), key=Member.order
        )
        seen: dict[str, str] = {}
        for member in self.members:
            name = member.backend.name
            # Sorted: a set's order follows the process's string hashing, and the
            # message named one shared kind or another from run to run.
            clash = sorted(kind for kind in member.kinds if kind in seen)
            if clash:
                other = seen[clash[0]]
                both = (f"two backends named {name!r}" if other == name
                        else f"both {other!r} and {name!r}")
                raise ModelError(
                    f"{both} would manage {', '.join(k for k in clash if seen[k] == other)}; "
                    "give each kind to one backend: Member(backend, kinds) in the "
                    "library, --backend NAME:KINDS on the command line (e.g. --backend "
                    "iptables:forward)"
                )
            seen.update(dict.fromkeys(member.kinds, name))
        if not self.members:
            raise ModelError("a backend group needs at least one backend")
        self.name = "+".join(m.backend.name for m in self.members)
        """The members' names, in apply order (``netlink+nftables``)."""
        # What a failure's message calls each member: its backend's name, and the kinds
        # it is given when another member has that name too (``--backend netlink:sysctl
        # --backend netlink:route``), as --backend spells them: "netlink's 2 change(s)
        # made before netlink failed were taken back" named neither, beside "netlink
        # changed nothing" said of the other.
        names = Counter(m.backend.name for m in self.members)
        self._labels = {id(m): m.backend.name if names[m.backend.name] == 1
                        else f"{m.backend.name}:{','.join(sorted(m.kinds))}"
                        for m in self.members}
        self.faults = FaultHook()
        """The group's fault hook: an injected failure is handed to the member
        that holds that change (see :class:`~k3snet.backends.kit.FaultHook`)."""
        self._left: tuple[str, ...] = ()  # the last observe's objects no member keeps up
        # The logs of the group's own warnings and of members without a warning_log.
        self._logs: dict[int, WarningLog] = {}
        self.in_force: tuple[str, ...] = ()
        """The warnings :meth:`log_warnings` was last given (each logged when it came)."""
        for member in self.members:  # a member that takes the hint learns who is beside it
            beside = getattr(member.backend, "beside", None)
            if callable(beside):
                beside(tuple(m.backend for m in self.members if m is not member))

    @property
    def capabilities(self) -> frozenset[str]:
        """Every kind some member manages."""
        return frozenset().union(*(m.kinds for m in self.members))

    @property
    def warnings(self) -> tuple[str, ...]:
        """What the members' last observe found worth saying (each member's optional
        ``warnings``: the iptables backend's chains that are not k3snet's, Calico's
        resources it cannot read ...), in member order; ``k3snet plan`` prints them as
        ``!! warning:`` lines and the Ansible module as task warnings."""
        found = tuple(w for member in self.members for w in backend_warnings(member.backend))
        return found + self._left

    def log_warnings(self) -> tuple[str, ...]:
        """Log :attr:`warnings`, each once while it lasts (again once it changed or came
        back), and return those logged now (:attr:`in_force`: all of them); the agent
        calls it after every pass, so a warning reaches its log whichever member has it
        (the netlink backend's forwarding switches at 0 were said by ``plan`` and
        ``apply`` alone).

        A member's warnings go through its own ``warning_log`` when it has one (every
        :class:`~k3snet.backends.kit.BackendBase`): what it logged after its read is
        not logged twice. Another member's, and the group's own (objects no member
        keeps up), through a :class:`~k3snet.backends.kit.WarningLog` the group keeps.
        A member whose warnings cannot be read now (a
        :class:`~k3snet.errors.K3snetError`) is passed over: a warning never fails a pass.
        """
        logged: list[str] = []
        in_force: list[str] = []
        for index, member in enumerate(self.members):
            backend = member.backend
            said = getattr(backend, "warning_log", None)
            if not isinstance(said, WarningLog):
                said = self._logs.get(index)
                if said is None:
                    said = self._logs[index] = WarningLog(
                        f"k3snet.backends.{backend.name}", backend.name)
            try:
                now = list(backend_warnings(backend))
            except K3snetError as exc:
                logging.getLogger(__name__).debug("the warnings of %s not read: %s",
                                                  backend.name, exc)
                continue
            logged += said.say(now)
            in_force += now
        said = self._logs.get(-1)
        if said is None:
            said = self._logs[-1] = WarningLog(__name__)
        logged += said.say(self._left)
        self.in_force = (*in_force, *self._left)
        return tuple(logged)

    def change_token(self) -> tuple[Hashable | None, ...]:
        """The members' change tokens (``None`` for a member that cannot tell).

        See :meth:`k3snet.backends.kit.BackendBase.change_token`; a backend
        without the method counts as one that cannot tell.
        """
        tokens: list[Hashable | None] = []
        for member in self.members:
            read: Callable[[], Hashable | None] | None = getattr(
                member.backend, "change_token", None)
            tokens.append(read() if read is not None else None)
        return tuple(tokens)

    def expect(self, state: State) -> None:
        """Hand each member that takes the hint (``expect``) its part of ``state``, and
        one that takes ``expect_leaving`` (the nftables backend: another table's egress
        chain drops what any table accepted) the forward rules another member manages."""
        for member in self.members:
            expect = getattr(member.backend, "expect", None)
            if callable(expect):
                expect(state.only(member.kinds))
            leaving = getattr(member.backend, "expect_leaving", None)
            if callable(leaving):
                leaving([o for o in state.owned
                         if isinstance(o, ForwardRule) and o.kind not in member.kinds])

    def prefetch(self) -> None:
        """Tell each member that takes the hint (``prefetch``) to start its next read now."""
        for member in self.members:
            prefetch = getattr(member.backend, "prefetch", None)
            if callable(prefetch):
                prefetch()

    def observe(self) -> State:
        """The members' observations, each limited to the kinds it manages here, and the
        foreign forward drops and rejects any member sees.

        A member limited to some of its kinds still shows the others the drops it
        reads: with ``--backend nftables:nat --backend iptables:forward`` (the split
        for firewalld's FORWARD policy) a drop in firewalld's own nftables table is
        seen by nftables alone, and the forward accept the iptables member adds must
        be judged against it, or the plan said nothing of a drop that defeats it. A
        drop is final wherever it sits; other foreign objects are read relative to the
        reading backend's own rules and stay with its kinds.

        A member that reads the rule itself, relative to its own (``reads_itself``:
        the iptables-nft member reading ``ip filter``, where a drop after k3snet's
        jump is never met by what k3snet's chain accepted), is not shown another's
        view of it: shown the nftables member's, it had a false conflict.
        """
        kinds = self.capabilities
        seen = [(m, m.backend.observe()) for m in self.members]
        self._left = tuple(self._left_behind(seen))
        judges = [(m.kinds, read) for m in self.members
                  if callable(read := getattr(m.backend, "reads_itself", None))]

        def judged(obj: NetObject) -> bool:
            return any(obj.kind in k and bool(read(obj)) for k, read in judges)

        return State().merge(*(_seen_by(m, state, kinds, judged) for m, state in seen))

    def _left_behind(self, seen: Sequence[tuple[Member, State]]) -> Iterator[str]:
        """A warning for each member holding k3snet's objects of kinds it is not given
        here: made when it managed them (``--backend nftables`` before ``--backend
        nftables:nat --backend iptables:forward``), no plan of this group keeps them up
        or removes them, and ``destroy`` left them too."""
        managers = {kind: m.backend.name for m in self.members for kind in m.kinds}
        for member, state in seen:
            name = member.backend.name
            # A node backend's destroy names its namespace (--netns, or the one k3snet was
            # started in by ip netns exec): run as shown from that shell, the bare command
            # removed k3snet's objects of the node's own namespace.
            where = (exec_name(member.backend.netns)
                     if hasattr(member.backend, "netns") else None)
            netns = ("--netns", fs_word(where)) if where else ()  # by its bytes
            held: dict[str, int] = {}
            for obj in state.owned:
                if obj.kind not in member.kinds:
                    held[obj.kind] = held.get(obj.kind, 0) + 1
            for kind, count in sorted(held.items()):
                other = managers.get(kind)
                destroy = shell_join(["k3snet", "destroy", *netns, "--backend", f"{name}:{kind}"])
                yield (f"{name} holds {count} k3snet object(s) of kind {kind}, which "
                       + (f"this run gives to {other}" if other else "this run manages with "
                          "no backend") + ": they stay as they are, neither kept up nor "
                       f"removed; `{destroy}` removes them")

    def check(self, plan: Plan) -> tuple[str, ...]:
        """Every member's problems with its part of the plan, after the kinds no member
        manages (which :meth:`apply` refuses: a check that split them off found no problem)."""
        problems: list[str] = []
        try:
            ensure_capable(self, plan)
        except PlanError as exc:
            problems.append(str(exc))
        for member in self.members:
            part = plan.only(member.kinds)
            if part.changes:
                problems += [f"{member.backend.name}: {p}" for p in member.backend.check(part)]
        return tuple(problems)

    def apply(self, plan: Plan) -> ApplyResult:
        """Apply the members' parts in the plan's order; on any failure undo the parts
        already applied.

        Each member is given its changes in runs (``_runs``): its whole part at once,
        but where the plan puts another member's change between two of its own (a NAT
        rule deleted before the route it relied on, added after it). All or nothing for
        any error of any member: an :class:`~k3snet.errors.ApplyError`,
        a :class:`~k3snet.errors.PlanError` (a member refusing its part), or any
        other exception. If nothing had been applied yet, the member's error is
        raised as it is; otherwise the parts already applied are undone (in
        reverse order, each through its own backend) and an ApplyError says so,
        or a :class:`~k3snet.errors.RollbackError` if an undo failed too (the
        failing member's own, or the group's of an earlier member). An
        interruption (``KeyboardInterrupt``, ``SystemExit``) in a later member's part,
        or between two parts, undoes the earlier parts the same way, then is raised
        again as it came. A signal landing after a member's commit waits until its part
        is among those to undo (:func:`~k3snet.backends.kit.held_after_commit`), and is
        acted on then: that part is undone too. Once every part is made, the group marks
        its caller's block (:func:`~k3snet.backends.kit.committing`): ``k3snet apply``
        notes the change before a signal acts.
        """
        ensure_capable(self, plan)
        parts = self._runs(plan)
        fault = self._fault(plan, parts)
        armed: FaultHook | None = None
        results: list[tuple[Member, Plan, ApplyResult]] = []
        member: Member | None = None
        try:
            # One try around the whole loop: a signal's exception (the CLI's SIGTERM
            # handler, Ctrl-C) lands at any bytecode, also between two members' parts.
            for number, (member, part) in enumerate(parts):
                if not part.changes:
                    continue
                if fault is not None and fault[0] == number:
                    # Armed for this very run: a member given two runs took the failure
                    # meant for its second one in its first.
                    hook = getattr(member.backend, "faults", None)
                    if not isinstance(hook, FaultHook):
                        raise ApplyError(f"{member.backend.name}: injected failure before "
                                         "its part (the backend has no fault hook)")
                    hook.fail_at(fault[1])
                    armed = hook
                # A signal after the member's commit waits until its part is among
                # those to undo: raised within its apply (its bookkeeping, its worker
                # thread's answer), it left the part made and undone by no one.
                with held_after_commit():
                    results.append((member, part, member.backend.apply(part)))
            # Every part made: a signal from now on waits for the caller's own block
            # (``k3snet apply`` noting what was made), as the group undoes nothing more.
            committing()
        except BaseException as exc:
            if not results or member is None:  # nothing of the group's doing to undo
                raise
            if armed is not None:
                # Its run failed before taking it (a PlanError of the member's own): left
                # armed, it failed the undo of the member's earlier run, said half-done.
                armed.fail_at(None)
            undone = self._undo(results, exc, member)
            if not isinstance(exc, Exception):
                # Ctrl-C (KeyboardInterrupt) or SystemExit: the earlier parts are taken
                # back as for an error, then the interruption goes on as it came.
                raise
            own = exc if isinstance(exc, ApplyError) else None
            # A member whose own undo failed may have left changes: the group's
            # error says so too (its type, and what may still be there).
            half = isinstance(exc, RollbackError)
            name = self._label(member)
            raise (RollbackError if half else ApplyError)(
                # The node's whole story: the failing member's part, then the earlier
                # members' parts made and taken back.
                _named(name, _story(_failure(name, exc, _ran(member, results)),
                                    _taken_back_parts(results, name, self._label))),
                failed=own.failed if own is not None else None,
                # What was made before the failure: the earlier members' parts, then
                # what the failing member made of its own (both undone since).
                done=[*_made(results), *(own.done if own is not None else ())],
                rolled_back=[*(own.rolled_back if own is not None else ()), *undone],
            ) from exc
        finally:
            if armed is not None:
                # Taken by the apply it was armed for; left armed (the apply never ran),
                # it would fail that member's next apply, in or out of a group.
                armed.fail_at(None)
        # In the plan's order, as every backend reports them (the members ran in theirs).
        # Keyed by identity: the parts hold the plan's own Change values, and hashing
        # every change of a big plan would cost more than the sort.
        position = {id(change): index for index, change in enumerate(plan.changes)}
        applied = tuple(sorted((c for _, _, r in results for c in r.applied),
                               key=lambda c: position.get(id(c), len(position))))
        return ApplyResult(self.name, applied, sum(r.operations for _, _, r in results))

    def _runs(self, plan: Plan) -> list[tuple[Member, Plan]]:
        """The parts of ``plan`` the members are given, in the order :meth:`apply` gives
        them: the plan's changes in its order, each run the changes of one member
        between two of another's.

        A plan the planner made puts deletes first, NAT and forward rules before the
        routes and sysctls they rely on, then adds the other way round: a group of
        ``netlink`` and ``nftables`` gives each member one part when the plan only adds
        or only deletes (the usual plan, a destroy), and ``nftables`` its deletes and
        its adds apart when the plan deletes and adds (a destination replaced by
        another), with ``netlink``'s part between them. Given each member's part in
        turn, routes went before the NAT and forward rules that relied on them: the
        pods' traffic to a destination removed was forwarded and masqueraded through
        the default route in between (for good when the run was killed there).
        """
        touched = [m for m in self.members if not m.kinds.isdisjoint(plan.kinds)]
        if len(touched) <= 1:  # one member's changes (or none): its part, as it is
            return [(m, plan.only(m.kinds)) for m in touched]
        owner = {kind: member for member in touched for kind in member.kinds}
        # Where each run starts (the plan's index, its member); one attribute chain a
        # change, not Change.kind's two calls: big plans pass here.
        starts: list[tuple[int, Member]] = []
        last: Member | None = None
        for index, change in enumerate(plan.changes):
            member = owner[(change.before if change.after is None
                            else change.after).kind]  # type: ignore[union-attr]
            if member is not last:
                starts.append((index, member))
                last = member
        if len(starts) == len(touched):  # one run a member: its part, as it is
            return [(member, plan.only(member.kinds)) for _, member in starts]
        ends = [index for index, _ in starts[1:]] + [len(plan.changes)]
        runs = [(member, plan.changes[start:end])
                for (start, member), end in zip(starts, ends, strict=True)]
        # Notes and held objects go with a member's first run, as they went with its part.
        given: set[int] = set()
        result: list[tuple[Member, Plan]] = []
        for member, changes in runs:
            if id(member) in given:
                result.append((member, Plan(changes=changes)))
                continue
            given.add(id(member))
            whole = plan.only(member.kinds)
            result.append((member, Plan(changes=changes, notes=whole.notes, held=whole.held)))
        return result

    def _fault(self, plan: Plan, parts: Sequence[tuple[Member, Plan]]) -> tuple[int, int] | None:
        """Where the group's injected failure lands: (run, index of the change in that run);
        ``None`` when none is armed. Handed to the member whose run holds that change, just
        before that run (:class:`~k3snet.backends.kit.FaultHook`)."""
        at = self.faults.take(plan)
        if at is None:
            return None
        failing = plan.changes[at]
        for number, (_, part) in enumerate(parts):
            for index, change in enumerate(part.changes):
                if change is failing:
                    return number, index
        return None

    def close(self) -> None:
        """Close every member (all of them, even if one fails to close)."""
        errors: list[Exception] = []
        for member in self.members:
            try:
                member.backend.close()
            except Exception as exc:  # noqa: BLE001 - the others are still closed
                errors.append(exc)
        if errors:
            raise errors[0]

    def _label(self, member: Member) -> str:
        """What a failure's message calls ``member`` (``netlink``, ``netlink:route``)."""
        return self._labels[id(member)]

    def _undo(self, results: list[tuple[Member, Plan, ApplyResult]], cause: BaseException,
              failing: Member) -> list[Change]:
        # An instance method: the messages name the members by the group's labels.
        with undo_running():  # (the CLI's SIGTERM and SIGHUP let it run on)
            return self._undo_members(results, cause, failing)

    def _undo_members(self, results: list[tuple[Member, Plan, ApplyResult]],
                      cause: BaseException, failing: Member) -> list[Change]:
        undone: list[Change] = []
        for back, (member, part, result) in enumerate(reversed(results)):
            # The part the member was given, not what its result lists: an apply that
            # returned made every change of it (all or nothing), and a backend whose
            # result left some out (ApplyResult(name), applied=()) had them stay made
            # while the group said they were undone.
            # A repaired drift has nothing to restore: its inverse would re-add a finding.
            inverse = Plan(changes=[c.inverse() for c in reversed(part.changes)
                                    if not isinstance(c.subject, Drift)])
            own_undo = result.undo is not None
            try:
                if result.undo is not None:  # the member's exact undo (ApplyResult.undo)
                    undone += result.undo()
                    continue
                member.backend.apply(inverse)
            except BaseException as exc:
                # A second Ctrl-C during the undo too: the node is half-changed, which
                # must be said (the CLI ends a bare interruption quietly), as the kit's
                # Compensation says it for a backend's own interrupted undo.
                what = (f"failed too: {_undo_failure(exc)}" if isinstance(exc, Exception)
                        else f"was interrupted ({type(exc).__name__}): the system may be "
                        "half-changed")
                own = cause if isinstance(cause, ApplyError) else None
                taken = _taken_back(exc, own_undo)
                # The parts undone before this one, and what may still be there: this
                # member's part less what its undo took back, and every part before it
                # (never tried: the undo stops at its first failure). Unsaid, an operator
                # told by exit 5 to look read only "undoing netlink failed too".
                name = self._label(failing)
                said = [f"undoing {self._label(member)} {what}"]
                if back:
                    said.append(_taken_back_parts(results[len(results) - back:], name,
                                                  self._label))
                left = _left_parts(results[:len(results) - back], len(taken), self._label)
                if left:
                    said.append(f"{left} may still be there")
                raise RollbackError(
                    _named(name, _story(_failure(name, cause, _ran(failing, results)),
                                        "; ".join(said))),
                    failed=own.failed if own is not None else None,
                    done=[*_made(results), *(own.done if own is not None else ())],
                    # What the failing member took back of its own, and what this
                    # member's undo took back before it failed, count.
                    rolled_back=[*(own.rolled_back if own is not None else ()), *undone,
                                 *taken],
                ) from exc
            undone += inverse.changes
        return undone

    def __enter__(self) -> BackendGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
