"""State: every object one backend manages, split into owned and foreign."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs

from k3snet._logline import printable_line
from k3snet.errors import ModelError
from k3snet.model._base import NetObject
from k3snet.model.drift import ForwardDrift, NatDrift
from k3snet.model.forward import ForwardBlock, ForwardRule
from k3snet.model.nat import MasqueradeRule, NatBlock, SnatRule
from k3snet.model.route import Route, RouteBlock
from k3snet.model.sysctl import Sysctl

__all__ = ["KINDS", "OBJECT_TYPES", "STATE_FORMAT", "State", "ensure_state", "kind_set",
           "known_kinds", "malformed", "object_from_dict", "register_object_type"]

_TYPES: dict[str, type[NetObject]] = {}

OBJECT_TYPES: Mapping[str, type[NetObject]] = _TYPES
"""Serialised ``type`` tag -> class, for every registered object type (read-only view)."""

STATE_FORMAT = 1
"""The version of :meth:`State.to_dict`'s form (``format`` key)."""

KINDS: tuple[str, ...] = ("sysctl", "route", "forward", "nat")
"""The node kinds built into k3snet, in dependency order (what is added first)."""


def register_object_type(cls: type[NetObject]) -> type[NetObject]:
    """Make a :class:`NetObject` subclass known to states, plans and their JSON forms.

    Backends that manage new kinds of objects (a CNI config, a cluster resource)
    register their classes once, at import time; usable as a class decorator.
    """
    existing = _TYPES.get(cls.type_name)
    if existing is not None and existing is not cls:
        raise ModelError(f"object type {cls.type_name!r} is already registered by {existing}")
    _TYPES[cls.type_name] = cls
    return cls


for _cls in (Sysctl, Route, ForwardRule, MasqueradeRule, SnatRule, NatDrift, ForwardDrift,
             ForwardBlock, NatBlock, RouteBlock):
    register_object_type(_cls)


def known_kinds() -> tuple[str, ...]:
    """Every registered kind, in dependency order (rank, then name)."""
    ranks: dict[str, int] = {}
    for cls in _TYPES.values():
        ranks[cls.kind] = min(cls.rank, ranks.get(cls.kind, cls.rank))
    return tuple(sorted(ranks, key=lambda kind: (ranks[kind], kind)))


def kind_set(kinds: Iterable[str]) -> frozenset[str]:
    """``kinds`` as a set of kind names; one name given alone (``"route"``) is that kind.

    A string is an iterable of its letters: ``State.only("nat")`` kept the objects of
    kinds ``n``, ``a`` and ``t`` (none, silently), and ``MemoryBackend(capabilities=
    "route")`` named ``e, o, r, t, u`` as unknown kinds.
    """
    return frozenset((kinds,)) if isinstance(kinds, str) else frozenset(kinds)


@contextlib.contextmanager
def malformed(what: str) -> Iterator[None]:
    """Read ``what`` from JSON-like data: whatever its shape raises becomes one ModelError.

    A missing field (``KeyError``), a list where text belongs (``TypeError``), a
    mapping where a list belongs (``AttributeError``): each is a
    :class:`~k3snet.errors.ModelError` naming ``what``, as a bad value already is.
    """
    try:
        yield
    except ModelError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise _malformed(what, exc) from exc


def _malformed(what: str, exc: Exception) -> ModelError:
    if isinstance(exc, KeyError):
        return ModelError(f"{what} has no {exc.args[0]!r} field")
    return ModelError(f"{what} is malformed: {exc}")


def _mapping(data: object, what: str) -> Mapping[str, Any]:
    if type(data) is not dict and not isinstance(data, Mapping):
        raise ModelError(f"{what} is a JSON object, not {type(data).__name__}")
    return data


def _list(data: Mapping[str, Any], key: str, what: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ModelError(f"{what}'s {key!r} is a list, not {type(value).__name__}")
    return value


def object_from_dict(data: Mapping[str, Any]) -> NetObject:
    """Build any registered k3snet object from its :meth:`~NetObject.to_dict` form.

    Errors, whatever the data's shape, are :class:`~k3snet.errors.ModelError`.
    """
    type_name = _mapping(data, "an object").get("type")
    cls = _TYPES.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise ModelError(f"unknown object type in {dict(data)!r}")
    try:
        return cls.from_dict(data)
    except ModelError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise _malformed(f"a {type_name} object", exc) from exc


def _objects(values: Iterable[NetObject]) -> frozenset[NetObject]:
    try:
        result = frozenset(values)
    except TypeError as exc:  # one object where a list belongs: "'Sysctl' is not iterable"
        raise ModelError(f"a State holds a list of k3snet objects, not {type(values).__name__} "
                         f"{values!r}") from exc
    for obj in result:
        if not isinstance(obj, NetObject):
            raise ModelError(f"a State holds k3snet objects, not {type(obj).__name__} {obj!r}")
    return result


def _index(owned: Iterable[NetObject]) -> dict[tuple[Any, ...], NetObject]:
    index: dict[tuple[Any, ...], NetObject] = {}
    for obj in owned:
        other = index.setdefault(obj.key, obj)
        if other is not obj:
            first, second = sorted((obj, other))
            raise ModelError(f"two owned objects share one slot: {first} / {second}")
    return index


@attrs.frozen
class State:
    """What a backend manages: ``owned`` objects (k3snet wrote them) and ``foreign`` ones.

    Owned objects have unique keys (two routes to one destination, table and
    metric cannot coexist). Foreign objects are observed only; plans never name them.

    >>> s = State(owned=[Sysctl("net.ipv4.ip_forward", 1)])
    >>> len(s), s.kinds()
    (1, ('sysctl',))
    """

    owned: frozenset[NetObject] = attrs.field(default=frozenset(), converter=_objects)
    foreign: frozenset[NetObject] = attrs.field(default=frozenset(), converter=_objects)
    _by_key: Mapping[tuple[Any, ...], NetObject] = attrs.field(
        init=False, repr=False, eq=False, order=False, hash=False
    )
    _ordered: tuple[NetObject, ...] = attrs.field(
        init=False, repr=False, eq=False, order=False, hash=False
    )

    def __attrs_post_init__(self) -> None:
        # Owned objects are put in order once, when the value is built: plans,
        # renderings and dumps then walk this order instead of sorting again,
        # which keeps planning linear in the number of objects.
        ordered = tuple(sorted(self.owned, key=_sort_key))
        object.__setattr__(self, "_ordered", ordered)
        object.__setattr__(self, "_by_key", _index(ordered))

    @property
    def by_key(self) -> Mapping[tuple[Any, ...], NetObject]:
        """Owned objects indexed by their key."""
        return self._by_key

    def __len__(self) -> int:
        return len(self.owned)

    def __iter__(self) -> Iterator[NetObject]:
        """Owned objects in order."""
        return iter(self._ordered)

    @property
    def ordered(self) -> tuple[NetObject, ...]:
        """Owned objects in their total order (dependency rank first)."""
        return self._ordered

    def kinds(self) -> tuple[str, ...]:
        """The kinds present among owned and foreign objects, in dependency order."""
        present = {o.kind for o in self.owned} | {o.kind for o in self.foreign}
        return tuple(k for k in known_kinds() if k in present)

    def only(self, kinds: Iterable[str]) -> State:
        """The part of this state (owned and foreign) of the given kinds (this very
        state when it holds no other kind: building it again sorted every object).
        One kind may be given alone: ``only("route")`` is ``only(["route"])``."""
        wanted = kind_set(kinds)
        if all(o.kind in wanted for o in self.owned) and all(
                o.kind in wanted for o in self.foreign):
            return self
        return State(
            owned=(o for o in self._ordered if o.kind in wanted),
            foreign=(o for o in self.foreign if o.kind in wanted),
        )

    def merge(self, *others: State) -> State:
        """Union with other states (owned keys must stay unique); the one state that
        holds anything when the others are empty."""
        full = [state for state in (self, *others) if state.owned or state.foreign]
        if len(full) <= 1:
            return full[0] if full else self
        owned = set(self.owned)
        foreign = set(self.foreign)
        for other in others:
            owned |= other.owned
            foreign |= other.foreign
        return State(owned=owned, foreign=foreign)

    def with_owned(self, owned: Iterable[NetObject]) -> State:
        """The same foreign objects with other owned ones."""
        return State(owned=owned, foreign=self.foreign)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, sorted (byte-stable), with its format number."""
        return {
            "format": STATE_FORMAT,
            "owned": [o.to_dict() for o in self._ordered],
            "foreign": [o.to_dict() for o in sorted(self.foreign, key=_sort_key)],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> State:
        """Inverse of :meth:`to_dict` (a missing ``format`` is read as the current one).

        Errors, whatever the data's shape, are :class:`~k3snet.errors.ModelError`.
        """
        if _mapping(data, "a state").get("format", STATE_FORMAT) != STATE_FORMAT:
            raise ModelError(f"unsupported state format {data.get('format')!r} "
                             f"(this k3snet reads {STATE_FORMAT})")
        return cls(
            owned=[object_from_dict(o) for o in _list(data, "owned", "a state")],
            foreign=[object_from_dict(o) for o in _list(data, "foreign", "a state")],
        )

    def to_json(self, *, indent: int | None = None) -> str:
        """Stable JSON: equal states give byte-identical text."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> State:
        """Inverse of :meth:`to_json`; errors are :class:`~k3snet.errors.ModelError`."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # (nested beyond Python's parser)
            raise ModelError(f"not a k3snet state (JSON): {exc}") from exc
        if not isinstance(data, dict):
            raise ModelError("not a k3snet state: expected a JSON object")
        return cls.from_dict(data)

    def render(self) -> str:
        """Human listing: owned objects, then foreign ones."""
        lines = [f"owned ({len(self.owned)}):"]
        lines += [f"  {o.describe()}" for o in self._ordered]
        lines.append(f"foreign ({len(self.foreign)}):")
        # Foreign objects quote what others wrote (an unreadable Calico pool's name as the
        # API server gave it, a custom kind's text): one printable line each, as a plan's
        # note says them.
        # A built-in kind's text is escaped already (a backslash doubled): not again.
        lines += [f"  {printable_line(o.describe())}"
                  for o in sorted(self.foreign, key=_sort_key)]
        return "\n".join(lines)


def _sort_key(obj: NetObject) -> tuple[Any, ...]:
    return obj.sort_key


def ensure_state(value: object, what: str) -> State:
    """``value`` if it is a :class:`State`, else a :class:`~k3snet.errors.ModelError` naming
    ``what`` (and, for a spec, the compile step left out) instead of an AttributeError
    from deep inside the planner."""
    if isinstance(value, State):
        return value
    kind = type(value).__name__
    hint = (" (compile it first: k3snet.compile(spec), or "
            "k3snet.converge.compile_for(backend, spec, facts))") if kind == "Spec" else ""
    raise ModelError(f"{what} must be a k3snet.State, got {kind}{hint}")
