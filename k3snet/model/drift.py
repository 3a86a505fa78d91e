"""Drift: something inside k3snet's own table or chains that k3snet did not render.

k3snet owns its nftables table and its iptables chains whole, so anything there
that is not exactly what k3snet renders is k3snet's to remove: a base chain's
policy set to drop, a hook or priority changed, an extra rule or chain, a forged
``k3snet:`` tag, a rule duplicated by two concurrent writers. A backend's
``observe`` reports each such finding as an *owned* :class:`Drift` object. No
desired state ever contains one, so :func:`k3snet.plan` deletes it, the plan is
not empty (``k3snet plan`` exits 2), and the backend's apply of that delete is
the repair.

>>> d = Drift.of("forward", backend="nftables", where="inet k3snet forward",
...              what="policy drop")
>>> d.describe()
'drift in nftables inet k3snet forward: policy drop'
>>> d.kind
'forward'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from k3snet.errors import ModelError
from k3snet.model._base import NetObject, one_line, unescaped

__all__ = ["Drift", "ForwardDrift", "NatDrift"]


def _text(value: object) -> str:
    """A one-line, bounded, printable description (it comes from the kernel's listing,
    :func:`~k3snet.model._base.one_line`)."""
    if not isinstance(value, str) or not value.strip():
        raise ModelError(f"drift fields are non-empty strings, got {value!r}")
    return one_line(value)


@attrs.frozen(eq=False)
class Drift(NetObject):
    """A finding inside k3snet's own objects: ``what`` was found ``where`` by ``backend``.

    Use :meth:`of` to get the class for a kind (``nat`` or ``forward``: the kind
    of the chain the finding is in, so the backend managing that kind repairs it).
    """

    kind: ClassVar[str] = ""
    type_name: ClassVar[str] = ""
    rank: ClassVar[int] = 9  # deleted first: repairs come before other changes
    written: ClassVar[bool] = False

    backend: str = attrs.field(converter=_text)
    where: str = attrs.field(converter=_text)
    what: str = attrs.field(converter=_text)

    _key: tuple[Any, ...] = attrs.field(init=False, repr=False)
    _sort: tuple[Any, ...] = attrs.field(init=False, repr=False)
    _hash: int = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not self.kind:
            raise ModelError("use Drift.of(kind, ...) or NatDrift / ForwardDrift")
        self._seal((self.type_name, self.backend, self.where, self.what), ())

    @staticmethod
    def of(kind: str, *, backend: str, where: str, what: str) -> Drift:
        """The drift object of ``kind`` (``nat`` or ``forward``)."""
        cls = _BY_KIND.get(kind)
        if cls is None:
            raise ModelError(f"drift is of kind nat or forward, not {kind!r}")
        return cls(backend, where, what)

    def describe(self) -> str:
        """``drift in BACKEND WHERE: WHAT``."""
        return f"drift in {self.backend} {self.where}: {self.what}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"type": self.type_name, "backend": self.backend, "where": self.where,
                "what": self.what}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Drift:
        """Inverse of :meth:`to_dict`."""
        return cls(unescaped(data["backend"]), unescaped(data["where"]), unescaped(data["what"]))


@attrs.frozen(eq=False)
class NatDrift(Drift):
    """Drift in a NAT chain (or k3snet's table as a whole)."""

    kind: ClassVar[str] = "nat"
    type_name: ClassVar[str] = "nat-drift"


@attrs.frozen(eq=False)
class ForwardDrift(Drift):
    """Drift in a forward (filter) chain."""

    kind: ClassVar[str] = "forward"
    type_name: ClassVar[str] = "forward-drift"


_BY_KIND: dict[str, type[Drift]] = {"nat": NatDrift, "forward": ForwardDrift}
