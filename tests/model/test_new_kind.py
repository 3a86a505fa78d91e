"""A new kind of object, written as docs/custom-backend.md says: attrs fields of its own,
``_seal`` in ``__attrs_post_init__``, nothing else of k3snet's inside."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
import pytest

from k3snet import State, plan
from k3snet.model import NetObject, register_object_type


@register_object_type
@attrs.frozen(eq=False)
class QueueLength(NetObject):
    """A device's transmit queue length: a kind k3snet does not have."""

    kind: ClassVar[str] = "txqueue"
    type_name: ClassVar[str] = "test-txqueue"
    rank: ClassVar[int] = 6

    device: str
    length: int

    def __attrs_post_init__(self) -> None:
        self._seal(("txqueue", self.device), (self.length,))

    def describe(self) -> str:
        return f"txqueuelen {self.device} {self.length}"

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type_name, "device": self.device, "length": self.length}

    @classmethod
    def from_dict(cls, data: Any) -> QueueLength:
        return cls(data["device"], data["length"])


@attrs.frozen(eq=False)
class Unsealed(NetObject):
    """A kind that forgot ``_seal``."""

    kind: ClassVar[str] = "unsealed"
    type_name: ClassVar[str] = "test-unsealed"
    rank: ClassVar[int] = 6

    device: str


def test_a_new_kind_needs_no_key_sort_or_hash_fields_of_its_own() -> None:
    """The built-in kinds declare ``_key``, ``_sort`` and ``_hash`` as attrs fields, and
    ``_seal`` failed on a new kind that did not ('object has no attribute _key'): a
    requirement no page said. NetObject holds them now."""
    a, b = QueueLength("eth0", 1000), QueueLength("eth0", 500)
    assert a == QueueLength("eth0", 1000)
    assert hash(a) == hash(QueueLength("eth0", 1000))
    assert a.key == b.key
    assert a != b
    assert sorted([a, b]) == [b, a]
    done = plan(State(owned=[a]), State(owned=[b]))
    assert [(c.action, c.after) for c in done.changes] == [("replace", b)]
    assert done.apply_to(State(owned=[a])) == State(owned=[b])
    state = State(owned=[a, QueueLength("eth1", 10)])
    assert State.from_dict(state.to_dict()) == state


def test_a_new_kind_that_forgets_seal_is_told_so() -> None:
    obj = Unsealed("eth0")
    for read in (lambda: obj.key, lambda: hash(obj), lambda: obj.sort_key,
                 lambda: obj == Unsealed("eth0")):
        with pytest.raises(AttributeError, match=r"Unsealed has no .*: a NetObject subclass "
                                                 r"calls self\._seal\(key, content\) in "
                                                 r"__attrs_post_init__"):
            read()
    with pytest.raises(AttributeError, match="object has no attribute 'colour'"):
        obj.colour  # noqa: B018 - another missing attribute is said as Python says it
