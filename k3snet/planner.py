"""The planner: ``plan(observed, desired) -> Plan``, pure and minimal.

Nothing here touches the system. A :class:`Plan` is an ordered tuple of
:class:`Change` values plus :class:`Note` values saying which wanted objects
foreign state already provides (``met``) or blocks (``conflict``). A wanted
*expectation* (an object k3snet never writes, such as flannel's networks when
flannel's config is left to flannel) is never added: it only gets a
``conflict`` note when foreign state contradicts it. A wanted object already
in place (or to be replaced in place) that a foreign object comes before (a
route at a lower or equal metric) gets a note too: it does not do its job, and
a replace there is not planned.

Properties (each one a hypothesis test in ``tests/planner``):

* soundness: ``plan(o, d).apply_to(o).owned == plan(o, d).target(d)``, which is
  ``d.owned`` less what the notes set aside and less expectations, plus the
  owned objects the notes leave in place;
* idempotence: ``plan(d, d)`` is empty, and so is planning again after an apply
  (through the memory backend too);
* minimality: every change is needed, an object whose key stays is *replaced*,
  unchanged objects produce nothing (but an IPv6 ``addr_gen_mode`` a ``stable_secret``
  written before it sets to 2, written again), nor do objects k3snet's in place already
  are but for what they leave to the system (``held``, a route's device);
* foreign safety: no change names a foreign object (and an apply through the
  memory backend leaves every foreign object, but the sysctls taken over);
* determinism: equal inputs give byte-identical plans, whatever the order the
  objects were given in;
* independence: the plan of one kind is the plan of that kind's part alone (what
  a backend group hands each member), and IPv4 and IPv6 objects plan as if each
  family were alone;
* order: deletes (NAT first), then replaces and adds (sysctls and routes before
  the forward and NAT rules that rely on them, a replace first); within a kind,
  adds and replaces of a lower :attr:`~k3snet.model.NetObject.tier` first and
  deletes of a higher one first (a route via a gateway after the device route that
  may reach it), and a delete of a tier below a replace of its kind last (the
  replaced object's old form may rely on it; an undo, in reverse, puts it back first);
  a route moved to another metric, or a sysctl wanted under its other name
  (``net.ipv4.ip_forward`` for ``net.ipv4.conf.all.forwarding``), is deleted after its
  new form is added (make before break), and the deletes of a lower tier wait for it too.
"""

from __future__ import annotations

import bisect
import functools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import attrs

from k3snet._logline import printable, printable_line
from k3snet.errors import ModelError, PlanError
from k3snet.model import (
    ForwardBlock,
    ForwardRule,
    MasqueradeRule,
    NatBlock,
    NetObject,
    Network,
    Route,
    RouteBlock,
    SnatRule,
)
from k3snet.model.cidr import address_text, overlaps
from k3snet.model.route import MAIN_TABLE
from k3snet.model.state import State, ensure_state, kind_set, malformed, object_from_dict
from k3snet.model.sysctl import ALIASES, Sysctl

__all__ = ["Action", "Change", "Note", "Plan", "plan"]

Action = Literal["add", "delete", "replace"]
_SYMBOL: Mapping[str, str] = {"add": "+", "delete": "-", "replace": "~"}
_SHAPES: Mapping[str, tuple[bool, bool]] = {
    "add": (False, True), "delete": (True, False), "replace": (True, True),
}
PLAN_FORMAT = 1
# Below one foreign object for this many owned ones, the planner bisects the owned
# objects for what each foreign one shadows; above, it walks the objects in place.
# Chosen from call counts (two bisections of 100k objects call the sort key ~34
# times; the walk makes ~2 calls an object), not measured at the crossing; the
# figures on either side: docs/performance.md, benchmarks/bench_planner.py --foreign.
_BISECT_RATIO = 16
# From this many foreign objects of a kind without a clash key (forward and NAT rules),
# a wanted object is judged only against those whose destination may meet it
# (_PrefixIndex); below, against each in turn.
_INDEX_FROM = 16


@attrs.frozen
class Change:
    """Add, delete or replace one owned object.

    ``before`` is the object as observed (``None`` for an add), ``after`` the
    object wanted (``None`` for a delete). A replace keeps the key.
    """

    action: Action
    before: NetObject | None = None
    after: NetObject | None = None

    def __attrs_post_init__(self) -> None:
        before, after = self.before, self.after
        if _SHAPES.get(self.action) != (before is not None, after is not None):
            raise ModelError(f"a {self.action!r} change cannot have before={before}, "
                             f"after={after}")
        if before is not None and after is not None and before.key != after.key:
            raise ModelError(f"a replace keeps the key: {before} / {after}")

    @classmethod
    def add(cls, obj: NetObject) -> Change:
        """A change that creates ``obj``."""
        return cls("add", None, obj)

    @classmethod
    def delete(cls, obj: NetObject) -> Change:
        """A change that removes ``obj``."""
        return cls("delete", obj, None)

    @classmethod
    def replace(cls, before: NetObject, after: NetObject) -> Change:
        """A change that turns ``before`` into ``after`` in place."""
        return cls("replace", before, after)

    @property
    def subject(self) -> NetObject:
        """The object the change is about (``after``, or ``before`` for a delete)."""
        obj = self.after if self.after is not None else self.before
        assert obj is not None  # guaranteed by __attrs_post_init__
        return obj

    @property
    def kind(self) -> str:
        """The subject's kind."""
        return self.subject.kind

    def inverse(self) -> Change:
        """The change that undoes this one."""
        if self.action == "add":
            return Change("delete", self.after, None)
        if self.action == "delete":
            return Change("add", None, self.before)
        return Change("replace", self.after, self.before)

    def render(self) -> str:
        """``+ route ...``, ``- ...``, or ``~ new (was: old)``."""
        line = f"{_SYMBOL[self.action]} {self.subject.describe()}"
        if self.action == "replace" and self.before is not None:
            line += f"\n    (was: {self.before.describe()})"
        return line

    def __str__(self) -> str:
        return self.render().replace("\n   ", "")

    def brief(self) -> str:
        """:meth:`render` on one line, each object :meth:`~k3snet.model.NetObject.brief`
        (a long list of exclusions cut): how an error names the change, before why."""
        line = f"{_SYMBOL[self.action]} {self.subject.brief()}"
        if self.action == "replace" and self.before is not None:
            line += f" (was: {self.before.brief()})"
        return line

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "action": self.action,
            "before": None if self.before is None else self.before.to_dict(),
            "after": None if self.after is None else self.after.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Change:
        """Inverse of :meth:`to_dict`; errors are :class:`~k3snet.errors.ModelError`."""
        _object(data, "a change")
        with malformed("a change"):
            before, after = data.get("before"), data.get("after")
            return cls(
                data["action"],
                None if before is None else object_from_dict(before),
                None if after is None else object_from_dict(after),
            )


@attrs.frozen
class Note:
    """What the planner decided about a wanted object that foreign state touches.

    ``status`` is ``met`` (the foreign object already provides it: left alone,
    not duplicated) or ``conflict`` (the foreign object stands where ours must
    go, differently: reported, never replaced). ``reason`` explains a conflict
    the two objects do not explain by themselves. ``owned`` is k3snet's object
    at the wanted one's key when there is one (``wanted`` itself, or what a
    replace would have changed): the foreign object comes before it, and the
    plan leaves it as it is.
    """

    status: Literal["met", "conflict"]
    wanted: NetObject
    foreign: NetObject
    reason: str | None = attrs.field(default=None, kw_only=True)
    owned: NetObject | None = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if self.status not in ("met", "conflict"):
            raise ModelError(f"a note's status is 'met' or 'conflict', not {self.status!r}")
        if self.reason is not None and not isinstance(self.reason, str):
            raise ModelError(f"a note's reason is text, not {type(self.reason).__name__}")
        if self.owned is not None and self.owned.key != self.wanted.key:
            raise ModelError(f"a note's owned object has the wanted one's key: {self.owned} / "
                             f"{self.wanted}")

    def render(self) -> str:
        """``= ...`` for a met need, ``! ...`` for a conflict (its reason, and what
        becomes of k3snet's object in place)."""
        # The foreign object and the reason quote what others wrote (a custom kind's
        # text, a plan file's reason): one printable line each, whatever they hold.
        # A built-in kind's text is escaped already (a backslash doubled): not again.
        foreign = printable_line(self.foreign.describe())
        if self.status == "met":
            text = f"= {self.wanted.describe()}\n    (met by foreign: {foreign})"
        else:
            text = f"! {self.wanted.describe()}\n    (conflicts with foreign: {foreign})"
            if self.reason is not None:
                text += f"\n    ({printable(self.reason)})"
        if self.owned is None:
            return text
        if self.owned == self.wanted:
            return f"{text}\n    ({_in_place_text(self.wanted, self.foreign)})"
        return f"{text}\n    (k3snet's {self.owned.describe()} stays as it is)"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``reason`` and ``owned`` only when there is one)."""
        data: dict[str, Any] = {
            "status": self.status,
            "wanted": self.wanted.to_dict(),
            "foreign": self.foreign.to_dict(),
        }
        if self.reason is not None:
            data["reason"] = self.reason
        if self.owned is not None:
            data["owned"] = self.owned.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Note:
        """Inverse of :meth:`to_dict`; errors are :class:`~k3snet.errors.ModelError`."""
        _object(data, "a note")
        with malformed("a note"):
            owned = data.get("owned")
            return cls(
                data["status"], object_from_dict(data["wanted"]),
                object_from_dict(data["foreign"]), reason=data.get("reason"),
                owned=None if owned is None else object_from_dict(owned),
            )


def _object(data: object, what: str) -> None:
    """Refuse ``data`` that is no JSON object (``Plan.from_json("[1]")`` said "a plan is
    malformed: 'list' object has no attribute 'get'"), as ``object_from_dict`` does."""
    if not isinstance(data, Mapping):
        raise ModelError(f"{what} is a JSON object, not {type(data).__name__}")


def _changes(value: Iterable[Change]) -> tuple[Change, ...]:
    return _sequence(value, "changes")


def _notes(value: Iterable[Note]) -> tuple[Note, ...]:
    return _sequence(value, "notes")


def _sequence(value: Iterable[Any], what: str) -> tuple[Any, ...]:
    try:
        return tuple(value)
    except TypeError as exc:  # one change where a list belongs: "'Change' is not iterable"
        raise ModelError(f"a plan's {what} are a list, not {type(value).__name__} "
                         f"{value!r}") from exc


def _held(value: Iterable[tuple[NetObject, NetObject]]) -> tuple[tuple[NetObject, NetObject], ...]:
    pairs = tuple((wanted, current) for wanted, current in value)
    for wanted, current in pairs:
        if wanted.key != current.key:
            raise ModelError(f"a held object keeps the wanted one's key: {wanted} / {current}")
    return pairs


@attrs.frozen
class Plan:
    """An ordered tuple of changes, and notes about foreign state.

    ``held`` pairs a wanted object with k3snet's object in place that already is
    it, but for what the wanted one leaves to the system (a route without device
    and the device the kernel chose, :meth:`~k3snet.model.NetObject.held_by`): no
    change is planned for it, and it stays as it is.

    A plan is a value: print it (:meth:`render`), store it (:meth:`to_json`),
    review it, and apply it to a state without touching anything
    (:meth:`apply_to`) or to a system through a backend.
    """

    changes: tuple[Change, ...] = attrs.field(default=(), converter=_changes)
    notes: tuple[Note, ...] = attrs.field(default=(), converter=_notes)
    held: tuple[tuple[NetObject, NetObject], ...] = attrs.field(default=(), converter=_held)

    def __len__(self) -> int:
        return len(self.changes)

    def __iter__(self) -> Iterator[Change]:
        return iter(self.changes)

    def __bool__(self) -> bool:
        """True when there is something to do (changes, not notes)."""
        return bool(self.changes)

    @property
    def empty(self) -> bool:
        """No change pending."""
        return not self.changes

    @property
    def conflicts(self) -> tuple[Note, ...]:
        """Wanted objects blocked by foreign ones."""
        return tuple(n for n in self.notes if n.status == "conflict")

    @property
    def met(self) -> tuple[Note, ...]:
        """Wanted objects foreign state already provides."""
        return tuple(n for n in self.notes if n.status == "met")

    @functools.cached_property
    def kinds(self) -> frozenset[str]:
        """The kinds of the objects the changes are about (worked out once per plan)."""
        # One pass without calls (``Change.kind`` is two): backends ask at every apply.
        # ``after`` is None only for a delete, whose ``before`` Change guarantees.
        return frozenset({(c.before if c.after is None else c.after).kind  # type: ignore[union-attr]
                          for c in self.changes})

    def counts(self) -> dict[str, int]:
        """How many adds, replaces and deletes."""
        result = {"add": 0, "replace": 0, "delete": 0}
        for change in self.changes:
            result[change.action] += 1
        return result

    def only(self, kinds: Iterable[str]) -> Plan:
        """The part of the plan about the given kinds (for one backend of several); one kind
        may be given alone: ``only("nat")`` is ``only(["nat"])``."""
        wanted = kind_set(kinds)
        return Plan(
            changes=(c for c in self.changes if c.kind in wanted),
            notes=(n for n in self.notes if n.wanted.kind in wanted),
            held=(pair for pair in self.held if pair[0].kind in wanted),
        )

    def target(self, desired: State) -> frozenset[NetObject]:
        """What the owned scope becomes: ``desired.owned`` less what the notes set aside
        and less expectations (never written), plus the owned objects the notes leave
        in place (:attr:`Note.owned`), each held object (:attr:`held`) as it is in place.
        """
        set_aside = {n.wanted for n in self.notes}
        kept = {n.owned for n in self.notes if n.owned is not None}
        held = dict(self.held)
        return frozenset(held.get(o, o) for o in desired.owned
                         if o not in set_aside and not o.expectation) | kept

    def apply_to(self, state: State) -> State:
        """The state after applying every change, computed without touching anything.

        Raises :class:`~k3snet.errors.PlanError` if the plan does not fit the
        state (deleting what is not there, adding over an existing object).
        Adding an owned sysctl takes the foreign value over (it becomes
        ``previous``, whatever ``previous`` the added object carries); deleting it puts
        ``previous`` back as foreign.
        """
        owned = dict(state.by_key)
        foreign = set(state.foreign)
        sysctl_foreign: dict[tuple[Any, ...], Sysctl] = {
        o.key: o for o in foreign if isinstance(o, Sysctl)
    }
        for change in self.changes:
            _apply_change(change, owned, foreign, sysctl_foreign)
        return State(owned=owned.values(), foreign=foreign)

    def problems(self, state: State) -> list[tuple[Change, str]]:
        """Every change that does not fit ``state``, with why (empty when the plan fits).

        The same rules as :meth:`apply_to`, but every change is judged (a change
        that does not fit is skipped and the next one is judged against the rest),
        so a backend can refuse a plan naming all of its problems at once.
        """
        if _fits_as_is(self.changes, state.by_key):
            return []
        owned = dict(state.by_key)
        foreign = set(state.foreign)
        sysctl_foreign: dict[tuple[Any, ...], Sysctl] = {
            o.key: o for o in foreign if isinstance(o, Sysctl)
        }
        found: list[tuple[Change, str]] = []
        for change in self.changes:
            try:
                _apply_change(change, owned, foreign, sysctl_foreign)
            except PlanError as exc:
                found.append((change, str(exc)))
        return found

    def render(self) -> str:
        """A terraform-like listing.

        ``+`` add, ``~`` replace, ``-`` delete, ``=`` met by foreign state, ``!`` conflict.
        """
        counts = self.counts()
        head = (f"Plan: {counts['add']} to add, {counts['replace']} to replace, "
                f"{counts['delete']} to delete")
        if self.notes:
            head += f"; {len(self.met)} met by foreign state, {len(self.conflicts)} conflict(s)"
        if not self.changes and not self.notes:
            return "No changes. The system matches the spec."
        lines = [head + "."]
        lines += [c.render() for c in self.changes]
        lines += [n.render() for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``held`` only when there is one)."""
        data: dict[str, Any] = {
            "format": PLAN_FORMAT,
            "changes": [c.to_dict() for c in self.changes],
            "notes": [n.to_dict() for n in self.notes],
        }
        if self.held:
            data["held"] = [{"wanted": wanted.to_dict(), "owned": current.to_dict()}
                            for wanted, current in self.held]
        return data

    def to_json(self, *, indent: int | None = None) -> str:
        """Stable JSON: equal plans give byte-identical text."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """Inverse of :meth:`to_dict`; errors are :class:`~k3snet.errors.ModelError`."""
        _object(data, "a plan")
        with malformed("a plan"):
            if data.get("format", PLAN_FORMAT) != PLAN_FORMAT:
                raise ModelError(f"unsupported plan format {data.get('format')!r}")
            changes, notes = data.get("changes", []), data.get("notes", [])
            held = data.get("held", [])
            if not isinstance(changes, list) or not isinstance(notes, list):
                raise ModelError("a plan's 'changes' and 'notes' are lists")
            if not isinstance(held, list):
                raise ModelError("a plan's 'held' is a list")
            return cls(changes=[Change.from_dict(c) for c in changes],
                       notes=[Note.from_dict(n) for n in notes],
                       held=[(object_from_dict(h["wanted"]), object_from_dict(h["owned"]))
                             for h in held])

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """Inverse of :meth:`to_json`; errors are :class:`~k3snet.errors.ModelError`."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # (nested beyond Python's parser)
            raise ModelError(f"not a plan: {exc}") from exc
        return cls.from_dict(data)


def _fits_as_is(changes: Sequence[Change], owned: Mapping[tuple[Any, ...], NetObject]) -> bool:
    """True when each change names a key of its own and fits ``owned`` as it is.

    Judging a change reads only its own key, so when no two changes share one,
    none sees the effect of another and :meth:`Plan.problems`' walk would find
    nothing: this one pass says so without copying the state. A fresh
    ``plan(observed, desired)`` is always such a plan; any other answer falls
    back to the walk, which names the problems.
    """
    keys: set[tuple[Any, ...]] = set()
    for change in changes:
        before = change.before
        if before is None:  # an add: its key must be free
            assert change.after is not None  # guaranteed by Change
            key = change.after.key
            if key in owned:
                return False
        else:  # a delete or replace (same key): the owned object must be ``before``
            key = before.key
            current = owned.get(key)
            # ``is`` first: a plan made from this state names its very objects.
            if current is not before and (current is None or current != before):
                return False
        keys.add(key)
    return len(keys) == len(changes)


def _apply_change(
    change: Change,
    owned: dict[tuple[Any, ...], NetObject],
    foreign: set[NetObject],
    sysctl_foreign: dict[tuple[Any, ...], Sysctl],
) -> None:
    subject = change.subject
    current = owned.get(subject.key)
    if change.action == "add":
        if current is not None:
            raise PlanError(f"cannot add {subject}: {current} is already there")
        previous = sysctl_foreign.pop(subject.key, None)
        if previous is not None:
            foreign.discard(previous)
        if isinstance(subject, Sysctl):
            # What the system held, not what the plan's object says it held (a desired
            # state read from another node carries its values): a kernel backend records
            # the value it reads, and deleting the sysctl must not make one up.
            taken = None if previous is None else previous.value
            if subject.previous != taken:
                subject = attrs.evolve(subject, previous=taken)
        owned[subject.key] = subject
        return
    if current is None or current != change.before:
        raise PlanError(f"cannot {change.action} {change.before}: not in the state "
                        f"(found {current})")
    if change.action == "replace":
        if isinstance(subject, Sysctl) and isinstance(current, Sysctl):
            subject = attrs.evolve(subject, previous=current.previous)
        owned[subject.key] = subject
        return
    del owned[subject.key]
    if isinstance(current, Sysctl) and current.previous is not None:
        restored = Sysctl(current.name, current.previous)
        foreign.add(restored)
        sysctl_foreign[restored.key] = restored


def plan(observed: State, desired: State) -> Plan:
    """The minimal, ordered changes that turn ``observed``'s owned objects into ``desired``'s.

    Only ``desired.owned`` matters on the desired side. A wanted object that a
    foreign object already provides is left to it (a ``met`` note); one that a
    foreign object blocks is reported (a ``conflict`` note) and not planned. A
    wanted object whose key k3snet owns is judged only against the foreign
    objects that come before it (:meth:`~k3snet.model.NetObject.shadowed_by`): one
    doing another job is a ``conflict`` whether the object is in place or to be
    replaced (no replace is planned); one doing the same job leaves a replace to
    it (``met``). Either note names the owned object, which the plan leaves as it is.
    A wanted forward or NAT rule in place that a foreign block (a drop, a NAT rule
    met first) defeats is that same conflict, naming the rule in place; so is one the
    spec changed at a rule's key (no replace is planned). A foreign drop
    or reject (:attr:`~k3snet.model.ForwardBlock.final`) is judged before any foreign
    accept: no accept meets what it defeats.
    A wanted route via a gateway that only a conflicted device route of the spec
    reaches on its device is that same conflict: the kernel would refuse to write it.

    >>> from k3snet.model import Route, State
    >>> wanted = State(owned=[Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0")])
    >>> print(plan(State(), wanted).render())
    Plan: 1 to add, 0 to replace, 0 to delete.
    + route 192.168.2.0/24 via 192.168.1.1 dev eth0 table main metric 0 proto k3snet
    """
    ensure_state(observed, "observed")
    ensure_state(desired, "desired")
    have = observed.by_key
    want = desired.by_key
    foreign = _ForeignIndex(observed.foreign)

    # Set differences run in C on cached hashes: with one change among 100k
    # objects, only the two or so objects that differ are looked at below.
    only_have = observed.owned - desired.owned
    only_want = desired.owned - observed.owned
    deletes = [obj for obj in _in_order(observed, only_have) if obj.key not in want]
    replaces: list[Change] = []
    adds: list[NetObject] = []
    notes: list[Note] = []
    held: list[tuple[NetObject, NetObject]] = []
    for wanted in _in_order(desired, only_want):
        if not wanted.written:
            raise ModelError(f"desired state: {wanted.describe()} is what k3snet only "
                             "observes (a foreign block or a finding); it is never written")
        current = have.get(wanted.key)
        if current is not None and wanted.held_by(current):
            # In place as far as ``wanted`` says: judged as an object in place is.
            note = foreign.judge_in_place(current, current)
            if note is None:
                held.append((wanted, current))
            else:
                notes.append(attrs.evolve(note, wanted=wanted))
            continue
        if current is not None:
            note = foreign.judge_in_place(wanted, current) or foreign.still_defeated(
                wanted, current)
            if note is None:
                replaces.append(Change("replace", current, wanted))
        else:
            note = None if _given_back_alias(wanted, have, want) else foreign.judge(wanted)
            if note is None and not wanted.expectation:
                adds.append(wanted)
        if note is not None:
            notes.append(note)
    _set_aside_unreachable_gateways(observed, deletes, replaces, adds, notes)
    if any(_secret_of(change.after) is not None for change in replaces) or \
            any(_secret_of(obj) is not None for obj in adds):
        _rewrite_addr_gen_modes(have, desired, replaces, adds, notes)
    shadowed = foreign.shadowed(observed, desired) + foreign.defeated(observed, desired)
    if shadowed:
        notes = sorted([*notes, *shadowed], key=_wanted_order)

    return Plan(changes=_ordered_changes(deletes, replaces, adds), notes=notes, held=held)


def _set_aside_unreachable_gateways(observed: State, deletes: list[NetObject],
                                    replaces: list[Change], adds: list[NetObject],
                                    notes: list[Note]) -> None:
    """A wanted route via a gateway that only a conflicted route of the spec reaches (a
    device route a foreign route holds the place of) is that same conflict, not a change.

    The kernel checks a gateway when the route is written: a route of scope link on the
    route's device must reach it ("Nexthop has invalid gateway" otherwise). The plan left
    the blocked device route out, so such an add or replace could only fail, and the
    apply of every other change with it (all or nothing): ``apply --allow-conflicts``
    and the agent's passes under a conflict applied nothing and said "apply".
    """
    blocked = [(n.wanted, n.foreign) for n in notes
               if n.status == "conflict" and isinstance(n.wanted, Route)
               and n.wanted.gateway is None and n.wanted.device is not None]
    if not blocked:
        return

    def behind(route: NetObject | None) -> tuple[Route, NetObject] | None:
        """The blocked device route of the spec that would reach ``route``'s gateway."""
        if not isinstance(route, Route) or route.gateway is None or route.device is None:
            return None
        if route.gateway.version == 6 and route.gateway.is_link_local:
            return None  # ip6_validate_gw looks it up nowhere: on every link
        for wanted, foreign in blocked:
            if (wanted.device == route.device and route.gateway in wanted.destination
                    and wanted.table in (route.table, MAIN_TABLE)):
                return wanted, foreign
        return None

    if not any(behind(o) for o in adds) and not any(behind(c.after) for c in replaces):
        return  # the links below are read only for a route behind one (every agent pass)
    # The routes through a device alone once the plan is applied: not an owned one the
    # plan deletes (deletes go first) or replaces (by what it becomes). IPv4 looks the
    # gateway up at scope link: a device route of scope universe does not reach it.
    gone = {o.key for o in deletes} | {c.after.key for c in replaces if c.after is not None}
    kept = (o for o in observed.owned if o.key not in gone)
    links = [o for o in (*kept, *observed.foreign, *adds, *(c.after for c in replaces))
             if isinstance(o, Route) and o.gateway is None and o.device is not None
             and (o.scope != "universe" or o.destination.version == 6)]

    # One verdict per gateway, device and table: 10 000 destinations usually share a few.
    @functools.cache
    def reached_by(gateway: Any, device: str, table: int) -> bool:
        return any(link.device == device and gateway in link.destination
                   and link.table in (table, MAIN_TABLE) for link in links)

    def reached(route: Route) -> bool:
        assert route.device is not None
        return reached_by(route.gateway, route.device, route.table)

    def blocker(route: NetObject | None) -> tuple[Route, NetObject] | None:
        found = behind(route)
        if found is None:
            return None
        assert isinstance(route, Route)
        return None if reached(route) else found

    def reason(route: Route, wanted: Route) -> str:
        assert route.gateway is not None
        return (f"its gateway {address_text(route.gateway)} is reached on {route.device} "
                f"only by the spec's route to {wanted.destination}, which that foreign "
                f"route blocks")

    # Each list rebuilt in one pass: a list.remove() per route set aside compared it with
    # every add before it (10 000 adds and 2 000 such routes: 8 s of plan, not 0.06).
    before = len(notes)
    kept_adds: list[NetObject] = []
    for obj in adds:
        found = blocker(obj)
        if found is None:
            kept_adds.append(obj)
        else:
            assert isinstance(obj, Route)
            notes.append(Note("conflict", obj, found[1], reason=reason(obj, found[0])))
    kept_replaces: list[Change] = []
    for change in replaces:
        found = blocker(change.after)
        if found is None:
            kept_replaces.append(change)
        else:
            assert isinstance(change.after, Route)
            notes.append(Note("conflict", change.after, found[1],
                              reason=reason(change.after, found[0]), owned=change.before))
    if len(notes) > before:
        adds[:], replaces[:] = kept_adds, kept_replaces
        notes.sort(key=_wanted_order)


def _secret_of(obj: NetObject | None) -> str | None:
    """The interface whose IPv6 ``stable_secret`` ``obj`` is (``default`` too), else None."""
    if not isinstance(obj, Sysctl):
        return None
    path = obj.path.split("/")
    if len(path) == 5 and path[:3] == ["net", "ipv6", "conf"] and path[4] == "stable_secret":
        return path[3]
    return None


def _rewrite_addr_gen_modes(have: Mapping[tuple[Any, ...], NetObject], desired: State,
                            replaces: list[Change], adds: list[NetObject],
                            notes: list[Note]) -> None:
    """A written ``stable_secret`` sets its interface's ``addr_gen_mode`` to 2
    (``default``'s: every interface's; ``addrconf_sysctl_stable_secret``): a wanted
    ``addr_gen_mode`` of such an interface already in place (k3snet's, or a foreign
    value meeting it) is written again after it (tier 1 after the secret's 0), or the
    apply said it was done and left 2 where the spec held another mode."""
    secrets = {_secret_of(change.after) for change in replaces}
    secrets |= {_secret_of(obj) for obj in adds}
    every = "default" in secrets
    planned = {change.after.key for change in replaces if change.after is not None}
    planned |= {obj.key for obj in adds}
    for wanted in sorted((obj for obj in desired.owned if isinstance(obj, Sysctl)),
                         key=_sort_key):
        path = wanted.path.split("/")
        if len(path) != 5 or path[:3] != ["net", "ipv6", "conf"] or \
                path[4] != "addr_gen_mode" or wanted.value == "2" or wanted.key in planned:
            continue
        iface = path[3]
        if iface in ("all", "default") or (iface not in secrets and not every):
            continue  # all's and default's own mode are no interface's: a secret leaves them
        current = have.get(wanted.key)
        if current is not None:
            if any(note.wanted == wanted for note in notes):
                continue  # a conflict (or a foreign object doing its job) left as it is
            replaces.append(Change("replace", current, wanted))
        elif all(note.wanted != wanted or note.status == "met" for note in notes):
            # Met by the value found: taken over, so that it is written after the secret.
            notes[:] = [note for note in notes if note.wanted != wanted]
            adds.append(wanted)


def _ordered_changes(deletes: list[NetObject], replaces: list[Change], adds: list[NetObject]
                     ) -> list[Change]:
    """Deletes, then replaces and adds bottom-up, then the deletes a replace may rely on
    and the routes moved to another metric.

    Both states are already in order, so the sorts are stable partitions. Replaces
    and adds go by rank and tier (a replace first in its tier): a route moved to a
    gateway only a new device route reaches is replaced after that route is added,
    or the kernel refuses it. A delete of a lower tier than a replace of its kind
    goes last: the replaced route's old gateway may be on its network, and an undo,
    in reverse, puts that gateway back only while the device route is there.

    A route moved to another metric (its table and destination added at one, deleted
    at another: two keys, no replace) is deleted after its new form is added, make
    before break: deleted first, the destination had no route between the two (a
    batch, a request each with pyroute2, or for good when the run was killed there),
    and an undo does the same in reverse. The deletes of a lower tier than a moved
    route wait for it too, as they wait for a replace. So does a sysctl wanted under
    its other name (:data:`~k3snet.model.sysctl.ALIASES`): given back first, forwarding
    went off until the other name's add turned it on again.
    """
    above: dict[str, int] = {}  # kind -> highest tier a replace or a moved route touches
    for change in replaces:
        before, after = change.before, change.after
        assert before is not None  # a replace has both
        assert after is not None
        tier = max(before.tier, after.tier)
        if tier > above.get(after.kind, 0):
            above[after.kind] = tier
    moved: set[NetObject] = set()
    if deletes and adds:
        arriving = {obj.clash_key for obj in adds if isinstance(obj, Route)}
        moved = {obj for obj in deletes
                 if isinstance(obj, Route) and obj.clash_key in arriving}
        # A sysctl wanted under its other name (ip_forward for conf.all.forwarding): one
        # kernel value. Given back first, it held the value k3snet found (forwarding off)
        # until the other name's add wrote it again.
        renamed = {obj.name for obj in adds if isinstance(obj, Sysctl) and obj.name in ALIASES}
        if renamed:
            moved |= {obj for obj in deletes
                      if isinstance(obj, Sysctl) and ALIASES.get(obj.name) in renamed}
        for obj in moved:
            if obj.tier > above.get(obj.kind, -1):
                above[obj.kind] = obj.tier
    deletes.sort(key=_delete_rank)
    ups = [*replaces, *(Change("add", None, obj) for obj in adds)]
    ups.sort(key=_up_rank)
    if not above:  # the usual plan: no replace nor moved route a delete must wait for
        return [*(Change("delete", obj, None) for obj in deletes), *ups]
    early = [obj for obj in deletes
             if obj not in moved and obj.tier >= above.get(obj.kind, 0)]
    late = [obj for obj in deletes if obj in moved or obj.tier < above.get(obj.kind, 0)]
    return [*(Change("delete", obj, None) for obj in early), *ups,
            *(Change("delete", obj, None) for obj in late)]


class _ForeignIndex:
    """Foreign objects, found by clash key where the kind has one, else by kind."""

    def __init__(self, objects: Iterable[NetObject]) -> None:
        self.by_clash: dict[tuple[Any, ...], list[NetObject]] = {}
        self.by_kind: dict[str, list[NetObject]] = {}
        self.clashing = 0  # how many objects have a clash key
        for obj in sorted(objects, key=_sort_key):  # sorted: the first match is deterministic
            clash = obj.clash_key
            if clash is not None:
                self.by_clash.setdefault(clash, []).append(obj)
                self.clashing += 1
            self.by_kind.setdefault(obj.kind, []).append(obj)
        self.by_prefix: dict[tuple[str, Network | None], _PrefixIndex] = {}
        # the kinds a foreign block (a drop, a NAT rule met first) may defeat
        self.blocked_kinds = frozenset(kind for kind, objs in self.by_kind.items()
                                       if any(type(o) in _BLOCKS for o in objs))
        # the kinds a final foreign block (a drop or reject) may defeat, met or not
        self.final_kinds = frozenset(kind for kind, objs in self.by_kind.items()
                                     if any(type(o) is ForwardBlock and o.final for o in objs))

    def candidates(self, wanted: NetObject) -> Sequence[NetObject]:
        clash = wanted.clash_key
        if clash is not None:
            return self.by_clash.get(clash, ())
        return self.by_kind.get(wanted.kind, ())

    def _judged_against(self, wanted: NetObject) -> Sequence[NetObject]:
        """:meth:`candidates`, less foreign objects that cannot meet nor block ``wanted``
        (their destination meets none of its prefixes, :func:`_reach`; for a NAT rule, or
        their source misses its own, :func:`_may_come_from`), in order."""
        candidates = self.candidates(wanted)
        if len(candidates) < _INDEX_FROM or wanted.clash_key is not None:
            return candidates
        reach = _reach(wanted)
        if reach is None:
            return candidates
        # A NAT rule is met or blocked only by rules whose source meets its own: the few
        # pod CIDRs each keep the foreign rules left (Docker's, other pods').
        source = wanted.source if isinstance(wanted, MasqueradeRule | SnatRule) else None
        index = self.by_prefix.get((wanted.kind, source))
        if index is None:
            pool = candidates if source is None else [
                c for c in candidates if _may_come_from(c, source)]
            index = self.by_prefix[(wanted.kind, source)] = _PrefixIndex(pool)
        return index.meeting(reach)

    def judge(self, wanted: NetObject) -> Note | None:
        candidates = self._judged_against(wanted)
        if not candidates:
            return None
        if wanted.kind in self.final_kinds:
            # A drop or reject is final wherever it runs: no foreign accept meets what it
            # defeats. One backend reports only the accepts that get through the drops it
            # reads; a group hands a member the drops another reads (firewalld's nftables
            # table beside flannel's accept in iptables' FORWARD), and judged after the
            # accept, the drop was a "met".
            for obj in candidates:
                if type(obj) is ForwardBlock and obj.final and wanted.conflicts_with(obj):
                    return Note("conflict", wanted, obj, reason=wanted.conflict_reason(obj))
        for obj in candidates:
            if wanted.met_by(obj):
                if type(wanted) is Route:
                    return _met_route_note(wanted, candidates)
                return Note("met", wanted, obj)
        for obj in candidates:
            if wanted.conflicts_with(obj):
                return Note("conflict", wanted, obj, reason=wanted.conflict_reason(obj))
        return None

    def judge_in_place(self, wanted: NetObject, current: NetObject) -> Note | None:
        """A note when a foreign object comes before ``wanted``, whose key k3snet owns
        (``current``, equal to ``wanted`` when it is in place): a conflict when it does
        another job; when it does the same, ``met`` for a replace (and nothing when
        ``wanted`` is in place: the traffic goes its way)."""
        return _in_place_note(wanted, current, self.candidates(wanted))

    def shadowed(self, observed: State, desired: State) -> list[Note]:
        """Notes for the wanted objects in place (owned in both states) that a foreign
        object comes before.

        With few foreign objects, the owned ones each comes before (its
        :attr:`~k3snet.model.NetObject.shadow_span`) are found by bisecting
        ``observed``'s order: O(F log N), nothing per owned object. With many, one
        pass over the objects in place is cheaper: O(N) dictionary lookups.
        Figures: docs/performance.md.
        """
        ordered = observed.ordered
        if not self.by_clash or not ordered:
            return []
        if self.clashing * _BISECT_RATIO < len(ordered):
            in_place = self._in_spans(ordered, desired.owned)
            return [note for obj in in_place if (note := self.judge_in_place(obj, obj))]
        get = self.by_clash.get
        return [note for obj in observed.owned & desired.owned
                if (clash := obj.clash_key) is not None and (found := get(clash))
                and (note := _in_place_note(obj, obj, found))]

    def defeated(self, observed: State, desired: State) -> list[Note]:
        """Conflict notes for the wanted objects in place (owned in both states) that a
        foreign block defeats: a drop, or a NAT rule met first, that another program
        added after k3snet's rule was written.

        Each is judged as it would be if it were to be added (:meth:`judge`), and
        the note names k3snet's object in place (``owned``): the plan leaves it as
        it is (no delete, no re-add) and shows the ``!`` instead of nothing to do.
        One the spec no longer wants is deleted as any other (nftables' and iptables'
        rules alike). Without foreign blocks (the usual case)
        nothing is looked at; with some, only the objects in place of their kinds.
        """
        kinds = self.blocked_kinds
        if not kinds:
            return []
        notes: list[Note] = []
        wanted = desired.owned
        for obj in observed.owned:
            if obj.kind not in kinds or obj not in wanted:
                continue
            note = self.judge(obj)
            if note is not None and note.status == "conflict" and type(note.foreign) in _BLOCKS:
                notes.append(attrs.evolve(note, owned=obj))
        return notes

    def still_defeated(self, wanted: NetObject, current: NetObject) -> Note | None:
        """A conflict note for ``wanted`` when a foreign block defeats it, k3snet's
        object in place at its key being ``current`` (another object the spec changed
        since), the conflict its add would get: the plan leaves ``current`` as it is
        (:attr:`Note.owned`), as :meth:`defeated` leaves one the spec still wants, and
        replaces it once the block is gone. (A replace wrote a rule the block defeats,
        with no ``!``: whether the block defeats ``current`` too or not, one it does not
        was replaced by one it does.)"""
        if wanted.kind not in self.blocked_kinds:
            return None
        note = self.judge(wanted)
        if note is None or note.status != "conflict" or type(note.foreign) not in _BLOCKS:
            return None
        return attrs.evolve(note, owned=current)

    def _in_spans(self, ordered: Sequence[NetObject], wanted: frozenset[NetObject]
                  ) -> set[NetObject]:
        """The objects of ``ordered`` in ``wanted`` that lie in a foreign object's span."""
        found: set[NetObject] = set()
        for objs in self.by_clash.values():
            for obj in objs:
                span = obj.shadow_span
                if span is None:
                    continue
                start = bisect.bisect_left(ordered, span[0], key=_sort_key)
                end = bisect.bisect_left(ordered, span[1], lo=start, key=_sort_key)
                found.update(o for o in ordered[start:end] if o in wanted)
        return found


_REACHED = (ForwardRule, ForwardBlock, MasqueradeRule, SnatRule, NatBlock)
"""The types whose judgement :func:`_reach` and :func:`_destination` know (exactly them:
a subclass may judge otherwise, and is then judged against every foreign object)."""
_BLOCKS = (ForwardBlock, NatBlock)
"""Foreign objects that defeat k3snet's rule in place too (:meth:`_ForeignIndex.defeated`)."""


def _reach(wanted: NetObject) -> tuple[Network, ...] | None:
    """Prefixes one of which a foreign object's destination meets (or it has none) when
    it meets or blocks ``wanted``; ``None``: any foreign object may.

    A forward accept is met by one whose destination holds its own, and blocked by one
    matching its packets or their replies (destination = its source). A NAT rule is
    met or blocked only by rules translating some of its destinations (all of them
    when it has none).
    """
    kind = type(wanted)
    if kind is ForwardRule:
        assert isinstance(wanted, ForwardRule)
        return (wanted.destination, wanted.source)
    if kind is MasqueradeRule or kind is SnatRule:
        assert isinstance(wanted, MasqueradeRule | SnatRule)
        return None if wanted.destination is None else (wanted.destination,)
    return None


class _PrefixIndex:
    """Foreign objects of one kind, found by the prefixes their destination meets.

    Prefixes either nest or are disjoint, so two meet when one holds the other: the
    holders of a prefix are found by its supernets at the lengths in use, those it
    holds by bisecting the starts. Objects without a destination, or of a type
    :func:`_destination` does not know, meet everything.
    """

    def __init__(self, objects: Sequence[NetObject]) -> None:
        self.everywhere: list[int] = []  # positions in ``objects``
        self.at: dict[tuple[int, int, int], list[int]] = {}  # (version, length, start)
        self.lengths: dict[int, list[int]] = {4: [], 6: []}
        starts: dict[int, list[tuple[int, int, int]]] = {4: [], 6: []}  # start, length, pos
        for position, obj in enumerate(objects):
            net = _destination(obj)
            if net is None:
                self.everywhere.append(position)
                continue
            start = int(net.network_address)
            self.at.setdefault((net.version, net.prefixlen, start), []).append(position)
            starts[net.version].append((start, net.prefixlen, position))
        for version, found in starts.items():
            found.sort()
            self.lengths[version] = sorted({length for _, length, _ in found})
        self.starts = starts
        self.objects = objects

    def meeting(self, prefixes: Iterable[Network]) -> list[NetObject]:
        """The objects whose destination meets one of ``prefixes``, in their order."""
        found = set(self.everywhere)
        for net in prefixes:
            version, width = net.version, net.max_prefixlen
            start = int(net.network_address)
            for length in self.lengths[version]:
                if length > net.prefixlen:
                    break
                shift = width - length
                found.update(self.at.get((version, length, start >> shift << shift), ()))
            last = start | ((1 << (width - net.prefixlen)) - 1)
            ordered = self.starts[version]
            lo = bisect.bisect_left(ordered, (start, -1, -1))
            hi = bisect.bisect_right(ordered, (last, width + 1, len(self.objects)))
            found.update(position for _, _, position in ordered[lo:hi])
        return [self.objects[i] for i in sorted(found)]


def _may_come_from(obj: NetObject, source: Network) -> bool:
    """Whether a foreign NAT object may translate packets from ``source`` (its source
    meets it, or it has none, or its type is not known here)."""
    if type(obj) in (NatBlock, MasqueradeRule, SnatRule):
        assert isinstance(obj, NatBlock | MasqueradeRule | SnatRule)
        return obj.source is None or overlaps(obj.source, source)
    return True


def _destination(obj: NetObject) -> Network | None:
    """The destination a foreign object of a :data:`_REACHED` type matches (``None``:
    any, or a type not known here)."""
    if type(obj) in _REACHED:
        assert isinstance(obj, _REACHED)
        return obj.destination
    return None


def _in_place_text(wanted: NetObject, foreign: NetObject) -> str:
    """What becomes of k3snet's object in place that ``foreign`` comes before
    (:meth:`Note.render`). A route at a lower metric takes its traffic; one in its very
    slot (the same metric) may not: the kernel takes the first route of the slot listed
    it can use (another program's appended after k3snet's carries nothing while
    k3snet's works; IPv6 on a node not forwarding also passes by a gateway whose
    neighbour failed, rt6_check_neigh), or, for IPv6
    gateways it joined as one multipath route, shares the traffic. The state does not
    say which, so the text says both."""
    if (isinstance(wanted, Route) and isinstance(foreign, Route | RouteBlock)
            and foreign.metric == wanted.metric):
        return ("k3snet's is in place in the same slot: the kernel takes the first route "
                "ip route show lists there that it can use (one whose link is down passed "
                "by, and for IPv6 on a node not forwarding one whose gateway's neighbour "
                "failed), or shares the traffic between IPv6 gateways it joined as one "
                "multipath route")
    return "k3snet's is in place, but the foreign one overrides it"


def _in_place_note(wanted: NetObject, current: NetObject, candidates: Iterable[NetObject]
                   ) -> Note | None:
    """:meth:`_ForeignIndex.judge_in_place` among ``candidates`` (of ``wanted``'s clash key)."""
    ahead = [obj for obj in candidates if wanted.shadowed_by(obj)]
    for obj in ahead:
        if not wanted.met_by(obj):
            return Note("conflict", wanted, obj, reason=wanted.conflict_reason(obj),
                        owned=current)
    if ahead and wanted != current:
        return Note("met", wanted, ahead[0], owned=current)
    return None


def _met_route_note(wanted: Route, candidates: Sequence[NetObject]) -> Note:
    """The note of a route of k3snet's that a foreign route of ``candidates`` (its table
    and destination) meets: met by the one of the lowest metric among those, unless
    another there, at a metric no higher, does another job (another gateway, a block):
    the kernel takes the route of the lowest metric, in one slot the first ``ip route
    show`` lists, so that one may carry the traffic instead (a conflict, as for a route
    in place: :func:`_in_place_note`). Met by any, whatever came before it, the plan
    said "met" while the packets left by another gateway."""
    met = min((obj for obj in candidates if isinstance(obj, Route) and wanted.met_by(obj)),
              key=lambda route: route.metric or 0)
    for obj in candidates:
        if met.shadowed_by(obj) and not wanted.met_by(obj):
            return Note("conflict", wanted, obj, reason=wanted.conflict_reason(obj))
    return Note("met", wanted, met)


def _given_back_alias(wanted: NetObject, have: Mapping[tuple[Any, ...], NetObject],
                      want: Mapping[tuple[Any, ...], NetObject]) -> bool:
    """Whether ``wanted`` is a sysctl whose other name (:data:`~k3snet.model.sysctl.ALIASES`:
    one kernel value) k3snet owns and the plan gives back. The value read under
    ``wanted``'s name is then k3snet's own write, not another program's: judged "met" by
    it, the sysctl was not added, and the give-back turned forwarding off."""
    if type(wanted) is not Sysctl:
        return False
    alias = ALIASES.get(wanted.name)
    return alias is not None and ("sysctl", alias) in have and ("sysctl", alias) not in want


def _sort_key(obj: NetObject) -> tuple[Any, ...]:
    return obj.sort_key


def _wanted_order(note: Note) -> tuple[Any, ...]:
    return note.wanted.sort_key


def _in_order(state: State, subset: frozenset[NetObject]) -> list[NetObject]:
    """The objects of ``subset`` (part of ``state.owned``) in the state's order.

    A small subset (the usual "N existing + 1 change") is sorted directly; a
    large one is picked from the state's ordered tuple in one linear pass.
    """
    if len(subset) * 8 < len(state.ordered):
        return sorted(subset, key=_sort_key)
    return [obj for obj in state.ordered if obj in subset]


def _delete_rank(obj: NetObject) -> tuple[int, int]:
    return -obj.rank, -obj.tier


def _up_rank(change: Change) -> tuple[int, int, int]:
    """Adds and replaces by rank and tier (of the object wanted), a replace first."""
    after = change.after
    assert after is not None  # adds and replaces only
    return after.rank, after.tier, change.before is None
