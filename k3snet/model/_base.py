"""What every k3snet object shares: identity key, total order, equality, (de)serialisation.

Objects are compared and hashed through a tuple of plain ints and strings
computed once at construction (``_sort``), so planning over 100k objects
never calls back into :mod:`ipaddress` for hashing or ordering.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from k3snet._logline import printable
from k3snet._regex import lazy_pattern
from k3snet.errors import ModelError
from k3snet.model.cidr import Address, Network, parse_address, parse_network

__all__ = ["BRIEF_ITEMS", "NetObject", "is_interface_name", "validate_interface_name"]

BRIEF_ITEMS = 3
"""Items of a long list (a NAT rule's exclusions) :meth:`NetObject.brief` names; the rest
are counted."""

# The kernel's rule (dev_valid_name): 1..15 bytes, not "." or "..", no "/", ":" or
# whitespace. We also refuse other characters that no tool quotes consistently.
_IFNAME = re.compile(r"[A-Za-z0-9_.@+\-]{1,15}")
IFNAMSIZ = 16


def validate_interface_name(name: str) -> str:
    """Return ``name`` if the kernel would accept it as an interface name and every
    output language can spell it (no leading ``@``), else raise."""
    if not isinstance(name, str):
        # Before the cache: a list or a dict is unhashable, and the cache's TypeError
        # ("unhashable type: 'list'") escaped code that catches k3snet's errors.
        raise ModelError(f"interface name must be a string, got {name!r}")
    return _valid_interface_name(name)


def is_interface_name(name: str) -> bool:
    """Whether :func:`validate_interface_name` takes ``name`` (a name the kernel may hold
    that the model refuses, ``vé``, is read as no name of it)."""
    try:
        validate_interface_name(name)
    except ModelError:
        return False
    return True


@functools.lru_cache(maxsize=4096)
def _valid_interface_name(name: str) -> str:
    size = len(name.encode("utf-8", "surrogatepass"))  # a lone surrogate is no error here
    if size >= IFNAMSIZ:
        raise ModelError(f"interface name {name!r} is {size} bytes; the kernel allows at most 15")
    if name in {"", ".", ".."} or not _IFNAME.fullmatch(name):
        raise ModelError(
            f"interface name {name!r} is not valid (letters, digits and _.@+- only, "
            "no '/', ':' or whitespace)"
        )
    if name == "+":
        # iptables reads "-o +" as every interface and iptables-save leaves it out:
        # the rule would never read back as written. No interface is what it means.
        raise ModelError("interface name '+' matches every interface in iptables; "
                         "leave the interface out instead")
    if name.startswith("@"):
        # libnftables JSON reads "@..." as a set reference: nft cannot load such a
        # name from JSON, not even the listing it printed itself.
        raise ModelError(f"interface name {name!r} must not start with '@'")
    return name


def optional_interface(name: str | None) -> str | None:
    """attrs converter: validate an optional interface name."""
    if name is None:
        return None
    # Text straight to the cached check: this runs for every route and rule read back.
    return _valid_interface_name(name) if type(name) is str else validate_interface_name(name)


def optional_network(value: str | Network | None) -> Network | None:
    """attrs converter: parse an optional CIDR."""
    return None if value is None else parse_network(value)


def optional_address(value: str | Address | None) -> Address | None:
    """attrs converter: parse an optional address."""
    return None if value is None else parse_address(value)


_MAX_TEXT = 512


# printable's escapes (a backslash doubled, \xNN, \uNNNN, \UNNNNNNNN; \n, \t and \r
# in no one_line, whose white space is a space) and, for the cut, any other character.
_ESCAPE = lazy_pattern(r"\\(?:\\|[ntr]|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})")
_ESCAPE_OR_CHARACTER = lazy_pattern(_ESCAPE.pattern + "|.", re.DOTALL)


def one_line(value: str) -> str:
    """``value`` (text read from the kernel: it quotes what other programs wrote) as one
    line of at most 512 printable characters: white space runs as one space, and a
    character that is not printable as its Python escape (:func:`printable`), a
    backslash doubled; one longer is cut between two escapes, never inside one
    (:func:`unescaped` reads it back)."""
    line = printable(" ".join(value.split()))
    if len(line) <= _MAX_TEXT:
        return line
    size = 0
    for match in _ESCAPE_OR_CHARACTER.finditer(line):
        if size + len(match[0]) > _MAX_TEXT - 3:
            break
        size += len(match[0])
    return line[:size] + "..."


def unescaped(text: object) -> object:
    """The text :func:`one_line` (:func:`printable`) wrote ``text`` of: what a model's
    ``from_dict`` gives its converter, which escapes it again, so that an object read
    back from its JSON form is the one written (a foreign rule's backslash was doubled
    again at every reading of a plan file)."""
    return _ESCAPE.sub(_character, text) if isinstance(text, str) and "\\" in text else text


def _character(match: re.Match[str]) -> str:
    escape = match[0]
    if escape == "\\\\":
        return "\\"
    return {"\\n": "\n", "\\t": "\t", "\\r": "\r"}.get(escape) or chr(int(escape[2:], 16))


def foreign_rule_text(value: object) -> str:
    """attrs converter: one line of bounded, printable text (a foreign rule as its tool
    lists it, :func:`one_line`)."""
    if not isinstance(value, str) or not value.strip():
        raise ModelError(f"a foreign rule's text is a non-empty string, got {value!r}")
    return one_line(value)


def ip_family(value: int) -> int:
    """attrs converter: an address family, 4 or 6."""
    if value not in (4, 6):
        raise ModelError(f"family must be 4 or 6, got {value!r}")
    return value


def interface_may_be(pattern: str | None, device: str | None) -> bool:
    """An interface match (``eth+`` is a prefix) may match the packets of ``device``."""
    if pattern is None or device is None:
        return True
    if pattern.endswith("+"):
        return device.startswith(pattern[:-1])
    return pattern == device


def interface_holds(pattern: str | None, match: str | None) -> bool:
    """Every device the interface match ``match`` (``eth+`` is a prefix; ``None``: any)
    may name passes ``pattern``: ``eth+`` holds ``eth0`` and ``eth1+``, ``+`` and ``None``
    hold anything, ``eth0`` holds only ``eth0``. What an accept naming ``pattern`` takes
    of a rule's packets by ``match``, compared as the kernel does, not as text."""
    if pattern is None or pattern == "+":
        return True
    if match is None:
        return False
    if pattern.endswith("+"):
        return match.startswith(pattern[:-1])
    return match == pattern


def interfaces_may_meet(a: str | None, b: str | None, *, a_negated: bool = False,
                        b_negated: bool = False) -> bool:
    """Two interface matches (``eth+`` is a prefix; ``None``: any) that one device may
    both pass: ``eth+`` and ``eth0`` may, ``eth0`` and ``eth1`` never. ``a_negated``,
    ``b_negated``: that match is negated (``! -o eth+``): ``! -o eth+`` and ``-o eth0``
    never meet, ``! -o eth0`` and ``-o eth+`` do (eth1). See :func:`interfaces_left`."""
    positives = [m for m, neg in ((a, a_negated), (b, b_negated)) if m is not None and not neg]
    negatives = [m for m, neg in ((a, a_negated), (b, b_negated)) if m is not None and neg]
    return interfaces_left(positives, negatives)


def interfaces_left(positives: Iterable[str], negatives: Iterable[str]) -> bool:
    """Whether some device passes every one of the interface matches ``positives`` and
    none of ``negatives`` (the matches of ``! -o``), as the kernel compares them.

    xtables keeps a match as a name and a byte mask (``xtables_parse_interface``):
    ``eth+`` masks the 3 bytes of its prefix, so it matches ``eth`` and every longer
    name starting so (``+`` alone masks nothing: any device); ``eth0`` masks its 4
    bytes and the NUL after them, one device. ``!`` inverts the whole comparison
    (``! -o +`` matches no device). A device name has 1 to ``IFNAMSIZ - 1`` bytes,
    and a wildcard's prefix at most ``IFNAMSIZ - 2``, so a wildcard always holds more
    devices than any few names or longer wildcards can leave out: it is left out
    only by a negated wildcard whose prefix starts its own."""
    names: set[str] = set()
    prefix = ""
    for match in positives:
        if match.endswith("+"):
            stem = match[:-1]
            if stem.startswith(prefix):
                prefix = stem
            elif not prefix.startswith(stem):
                return False  # ("eth+" and "veth+": no device starts with both)
        else:
            names.add(match)
    unmatched = list(negatives)
    if names:
        if len(names) > 1:
            return False
        (name,) = names
        return name.startswith(prefix) and not any(interface_may_be(m, name) for m in unmatched)
    return not any(m.endswith("+") and prefix.startswith(m[:-1]) for m in unmatched)


def out_interface_rank(match: str | None) -> int:
    """Where a NAT rule's out-interface match (``eth+`` is a prefix; ``None`` or ``""``:
    any) sorts among NAT rules of the same prefixes. NAT takes the first match, so a
    match goes before every match holding it: one name (0), then wildcards by longer
    prefix (``eth1+`` holds fewer names than ``eth+``), then any interface
    (``IFNAMSIZ``); matches of one rank keep their order. The nftables and iptables
    renderers both order by it."""
    if not match:
        return IFNAMSIZ
    if match.endswith("+"):
        return IFNAMSIZ - (len(match) - 1)
    return 0


def _sealed(obj: NetObject) -> bool:
    try:
        object.__getattribute__(obj, "_key")
    except AttributeError:
        return False
    return True


def net_tuple(net: Network | None) -> tuple[int, int]:
    """(address, prefix) as ints; (-1, -1) for "any"."""
    return (-1, -1) if net is None else (int(net.network_address), net.prefixlen)


class NetObject:
    """Mixin for every managed object (routes, NAT rules, forward rules, sysctls).

    Subclasses are ``attrs`` frozen slotted classes with ``eq=False`` that set
    ``kind``, ``type_name`` and ``rank``, and call :meth:`_seal` in
    ``__attrs_post_init__``: ``self._seal(key, content)`` with the identity (two
    objects with one key cannot both exist on a node, a change of anything else is a
    *replace*) and the rest of the content, as plain values. Equality, hashing and
    order come from them (docs/custom-backend.md, "New kinds of objects").
    """

    # Held here, so that a new kind need not declare them (the built-in kinds still do,
    # as attrs fields of init=False, which attrs lays on these slots).
    __slots__ = ("_hash", "_key", "_sort")

    kind: ClassVar[str]
    """The group an object diffs in: ``sysctl``, ``route``, ``forward``, ``nat``."""
    type_name: ClassVar[str]
    """The tag in serialised form: ``route``, ``masquerade``, ``snat`` ..."""
    rank: ClassVar[int]
    """Dependency order: lower ranks are added first and deleted last."""
    expectation: ClassVar[bool] = False
    """True for an object k3snet never writes, only expects of foreign state: the plan
    has a ``conflict`` note when foreign state contradicts it, and nothing otherwise."""
    written: ClassVar[bool] = True
    """False for an object k3snet only observes (a foreign block, a drift finding, all
    of a cluster's pools): a desired state holding one where the observed state does
    not is a :class:`~k3snet.errors.ModelError` at the plan, not an add no backend
    can make."""

    _key: tuple[Any, ...]
    _sort: tuple[Any, ...]
    _hash: int

    def _seal(self, key: tuple[Any, ...], content: tuple[Any, ...]) -> None:
        """Set the object's identity ``key`` and ``content`` (tuples of plain values: ints,
        text), once, in ``__attrs_post_init__``. Named with an underscore, as
        a namedtuple's ``_replace`` is, so that it clashes with no field."""
        object.__setattr__(self, "_key", key)
        full = (self.rank, *key, self.type_name, *content)
        object.__setattr__(self, "_sort", full)
        object.__setattr__(self, "_hash", hash(full))

    def __getattr__(self, name: str) -> Any:
        # Reached only when normal lookup failed: a slot _seal never set, or a property
        # (key, sort_key) that read one.
        if name in NetObject.__slots__ or (hasattr(type(self), name) and not _sealed(self)):
            raise AttributeError(
                f"{type(self).__name__} has no {name}: a NetObject subclass calls "
                "self._seal(key, content) in __attrs_post_init__ (docs/custom-backend.md, "
                "'New kinds of objects')", name=name, obj=self)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}",
                             name=name, obj=self)

    @property
    def key(self) -> tuple[Any, ...]:
        """Identity on a node: objects with equal keys replace each other."""
        return self._key

    @property
    def sort_key(self) -> tuple[Any, ...]:
        """Total order across all kinds and families (cheap: computed once)."""
        return self._sort

    @property
    def family(self) -> int | None:
        """4, 6, or ``None`` for family-less objects (most sysctls)."""
        return None

    @property
    def clash_key(self) -> tuple[Any, ...] | None:
        """Objects (owned or foreign) with the same clash key compete for one slot.

        ``None`` means the kind has no such slot (rules in our own chain never
        collide with foreign rules).
        """
        return None

    def met_by(self, other: NetObject) -> bool:
        """True when the foreign object ``other`` already provides what ``self`` asks for."""
        return False

    @property
    def tier(self) -> int:
        """Within its kind, an object of a higher tier may rely on one of a lower tier
        being in place (a route via a gateway on the network of a device route): plans
        add it after them and delete it before them, so an undo, in reverse, too."""
        return 0

    def held_by(self, current: NetObject) -> bool:
        """True when ``current``, k3snet's own object at this one's key, already is this
        object as far as this one says: it differs only in what this one leaves to the
        system to choose (a route's device, which the kernel picks from the gateway and
        reports). The planner leaves such an object in place instead of replacing it
        on every pass."""
        return False

    def conflicts_with(self, other: NetObject) -> bool:
        """True when the foreign ``other`` stands where ``self`` must go, differently."""
        return False

    def conflict_reason(self, other: NetObject) -> str | None:
        """Why ``self`` conflicts with the foreign ``other``, when the two lines do not say it."""
        return None

    @property
    def shadow_span(self) -> tuple[tuple[Any, ...], tuple[Any, ...]] | None:
        """The sort keys ``[low, high)`` of the objects this one, foreign, comes before.

        An object in that span, owned and in place, does not do its job: the
        system uses this one first (a route at a metric no lower than a foreign
        route's to the same table and destination). ``None``: it shadows nothing.
        A span, not a test, so that the planner finds what a foreign object
        shadows by bisecting the owned objects in order (docs/performance.md).
        """
        return None

    def shadowed_by(self, other: NetObject) -> bool:
        """True when the foreign ``other`` comes before ``self`` (``self`` lies in its
        :attr:`shadow_span`), whether or not it does the same job."""
        span = other.shadow_span
        return span is not None and span[0] <= self._sort < span[1]

    def describe(self) -> str:
        """One human line, as the plan prints it."""
        raise NotImplementedError

    def brief(self) -> str:
        """:meth:`describe`, its long lists cut (a NAT rule's exclusions: the first
        :data:`BRIEF_ITEMS`, then how many there are): how an error names the object,
        so that what it says next, why, is not cut off a log line of bounded size.
        Written whole, a rule of 10 000 exclusions took 160 KB before its reason."""
        return self.describe()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form, with a ``type`` tag; inverse of :func:`object_from_dict`."""
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NetObject:
        """Build from :meth:`to_dict` output (without the ``type`` tag)."""
        raise NotImplementedError

    # Equality, hashing and order go through the precomputed tuples.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NetObject):
            return NotImplemented
        return self._sort == other._sort

    def __ne__(self, other: object) -> bool:
        if not isinstance(other, NetObject):
            return NotImplemented
        return self._sort != other._sort

    def __hash__(self) -> int:
        return self._hash

    def __lt__(self, other: NetObject) -> bool:
        if not isinstance(other, NetObject):
            return NotImplemented
        return self._sort < other._sort

    def __le__(self, other: NetObject) -> bool:
        if not isinstance(other, NetObject):
            return NotImplemented
        return self._sort <= other._sort

    def __gt__(self, other: NetObject) -> bool:
        if not isinstance(other, NetObject):
            return NotImplemented
        return self._sort > other._sort

    def __ge__(self, other: NetObject) -> bool:
        if not isinstance(other, NetObject):
            return NotImplemented
        return self._sort >= other._sort

    def __str__(self) -> str:
        return self.describe()


def check_families(what: str, first: Network | Address, *values: Network | Address | None) -> int:
    """All non-None values share ``first``'s family; return it.

    ``what`` names the object in the error (``route``); the message is only
    built when raising, since this runs for every object read back from a node.
    """
    family = first.version
    for value in values:
        if value is not None and value.version != family:
            shown = ", ".join(str(v) for v in (first, *values) if v is not None)
            raise ModelError(f"{what} {first}: mixes IPv4 and IPv6 ({shown})")
    return family
