"""k3snet's own table from nft's text listing: the quick read, checked by rendering back.

libnftables lists a table as text about three times faster than as JSON (10 000
rules: 137 ms against 431 ms, and ``json.loads`` adds 60 ms), and a line of text
is cheaper to read than a JSON rule's expression tree. :func:`listed_rules`
takes a table from its text only when every line of it is one k3snet writes:

- the table's header, then its chains, each at most once and only those k3snet
  writes (``postrouting`` and ``forward``, both present, each with k3snet's hook
  line as nft prints it, and the empty marker chain);
- rules only in the two base chains, each with a well-formed tag as its comment and
  a handle no other rule of the table has (a table numbers its rules once: a text
  that says otherwise was not printed by nft, and a rule is deleted by its handle),
  whose text, read as an object, renders back (:func:`~k3snet.render.nftables.nft_rules`)
  to exactly the text nft printed.

The last check is what makes the read sound: a rule is taken as object ``o``
only when nft prints it as it prints ``o``'s rule, and no parsing shortcut can
make another rule pass (a regex that read too much or too little gives an object
that renders to another text). NAT and forward rules that differ from a rule
read before only in their destination prefix are taken by that rule's *shape*
instead (:class:`_Shapes`: the object of the first with the other destination,
which renders to exactly the other line), a quarter to a third cheaper a line. Anything
else (a foreign rule, a counter, a set, another policy or priority, a table
flag, an address nft spells otherwise than Python) makes :func:`listed_rules`
return ``None``: the backend then reads the table as JSON, where every case is
judged (:func:`~.parse.read_own`). A table read either way gives the same
objects, handles and findings (tested on the kernel,
tests/nftables/test_text_listing.py).
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from k3snet._regex import LazyPattern, lazy_pattern
from k3snet.errors import ModelError
from k3snet.model import NetObject
from k3snet.model.cidr import Network, ipv4_text
from k3snet.model.forward import ForwardRule
from k3snet.model.nat import MasqueradeRule, SnatRule
from k3snet.render.nftables import (
    CHAIN_SPECS,
    FORWARD_CHAIN,
    MARKER_CHAIN,
    NAT_CHAIN,
    REPLY_SUFFIX,
    TABLE_COMMENT,
    NftRule,
    model_ifname,
    nft_rules,
    rule_tag,
)
from k3snet.render.shape import retarget

__all__ = ["FirstRules", "Lines", "ListedRule", "ListedTable", "as_listed", "chain_names",
           "expected_lines", "first_rule_lines", "listed_rules", "prefix_of", "table_flags",
           "table_marked", "table_objects"]

# A handle as nft prints it: no leading zero (anything nft does not print is not taken).
_TABLE = lazy_pattern(r"table ([a-z0-9]+) ([A-Za-z][A-Za-z0-9_-]*) \{ # handle [1-9]\d*")
_CHAIN = lazy_pattern(r"\tchain ([A-Za-z0-9_-]+) \{ # handle [1-9]\d*")
_FLAGS = lazy_pattern(r"\tflags ([a-z]+(?:,[a-z]+)*)")
_MARK = f'\tcomment "{TABLE_COMMENT}"'
_OBJECT = lazy_pattern(r"\t((?:ct )?[a-z]+) (\S+) \{.*")
_ANY_CHAIN = lazy_pattern(r"\tchain (\S+) \{.*")
_RULE = lazy_pattern(r'\t\t(.+) comment "(k3snet:[0-9a-f]{16})(:reply)?" # handle ([1-9]\d*)')
# What these read is only a proposal: the object must render back to the same text.
_NAT = lazy_pattern(
    r"(ip6?) saddr (\S+)"
    r"(?: ip6? daddr ([^!\s]\S*))?"
    r"((?: ip6? daddr != [^{\s]\S*)*| ip6? daddr != \{ [^}]+ \})"
    r'(?: oifname "([^"]*)")?'
    r" (?:(masquerade)|snat (?:ip6? )?to (\S+))"
    r"( fully-random)?")
_EXCLUDED = lazy_pattern(r" ip6? daddr != (\S+)")
_FORWARD = lazy_pattern(
    r'(ip6?) saddr (\S+) ip6? daddr (\S+)(?: iifname "([^"]*)")?(?: oifname "([^"]*)")?'
    r"( ct state established,related)? accept")
_RULE_CHAINS = (NAT_CHAIN, FORWARD_CHAIN)
# A NAT or forward rule's text around its IPv4 destination prefix (a host's is listed bare:
# not here), and a forward rule's reply half's (whose source it is).
_SHAPE = lazy_pattern(r"(ip saddr \S+ ip daddr )([0-9]+\.[0-9]+\.[0-9]+\.[0-9]+)/([0-9]+)( .+)")
_REPLY_SHAPE = lazy_pattern(r"(ip saddr )([0-9]+\.[0-9]+\.[0-9]+\.[0-9]+)/([0-9]+)( ip daddr .+)")
_ERRORS = (ModelError, ValueError, TypeError, OSError)  # what a text that is no object raises
# How many guessed texts first_rule_lines reads between two questions to ``enough`` (about
# 1 ms of work: a listing that ended is noticed within it).
_ASKED_EVERY = 64
# nft prints a host's prefix as the bare address (192.0.2.1, not 192.0.2.1/32), and IPv6
# addresses as inet_ntop(3) does (::ffff:0.0.0.0 and ::128.0.0.0, where Python writes
# ::ffff:0:0 and ::8000:0).
_ADDRESS = lazy_pattern(r"(?<= )([0-9a-f]*:[0-9a-f:.]*|\d+\.\d+\.\d+\.\d+)(/\d+)?(?= |$)")


class ListedRule(NamedTuple):
    """One rule of the listing, read: its chain, handle, comment, object, and whether it
    is a forward rule's reply half; ``tag`` is the object's own (its first rule's comment)."""

    chain: str
    handle: int
    comment: str
    obj: NetObject
    reply: bool
    tag: str


class ListedTable(NamedTuple):
    """A table read from its text: its chains (names, in order) and its rules; ``lines``,
    what each of its rule lines was read as (for the next read, see :data:`Lines`)."""

    chains: tuple[str, ...]
    rules: tuple[ListedRule, ...]
    lines: Lines


Lines = dict[tuple[str, str, bool, bool], tuple[NetObject, str]]
"""What a rule line was read as: (chain, text before the comment, reply half, inet table)
-> (object, its tag). The text is all that was read, so a line seen before is
not read again: the agent's next read, after any commit in the namespace (an
iptables-nft rule anywhere moves the generation id), reads only the lines that
changed. Each read keeps only the lines it saw."""


class _NotOursError(Exception):
    """A line the text reader does not take: the JSON listing judges the table."""


def listed_rules(text: str, family: str, name: str, seen: Lines | None = None,
                 expected: Sequence[NetObject] = ()) -> ListedTable | None:
    """Table ``family name`` from ``nft -a list table`` text; ``None`` if it is not all
    k3snet's lines (see the module docstring), so that the JSON listing judges it.

    ``seen``: what an earlier read read its lines as (:attr:`ListedTable.lines`).
    Without it, ``expected``: objects the table likely holds (the desired state of
    an apply): their rules' lines (:func:`expected_lines`) are taken as them
    without being read, made once the table turns out to hold a rule.
    """
    lines = text.split("\n")
    head = _TABLE.fullmatch(lines[0])
    if head is None or head[1] != family or head[2] != name:
        return None
    body = lines[1:]
    if body and body[0] == _MARK:
        body = body[1:]  # the caller judges the mark (table_marked)
    try:
        return _Reader(family == "inet", seen or {}, () if seen else expected).read(body)
    except _NotOursError:
        return None


def table_flags(text: str) -> tuple[str, ...]:
    """The flags of the table ``nft list table`` printed as ``text`` (``dormant``,
    ``owner`` ...): its ``flags`` line, right under the table's header.

    Read from the text because libnftables 1.0.6 prints them wrong in JSON (another
    string of its memory, ``"flags": "k3snet"``, or output that is no JSON at all).
    """
    lines = text.split("\n", 2)
    found = _FLAGS.fullmatch(lines[1]) if len(lines) > 1 else None
    return tuple(found[1].split(",")) if found else ()


def table_marked(text: str) -> bool:
    """Whether the table ``nft list table`` printed as ``text`` carries k3snet's mark
    (:data:`~k3snet.render.nftables.TABLE_COMMENT`), under its header and flags."""
    return _MARK in text.split("\n", 3)[1:3]


def table_objects(text: str) -> list[tuple[str, str]]:
    """(kind, name) of each set, map or named object (``counter``, ``quota``, ``ct
    helper`` ...) of the table ``nft list table`` printed as ``text``: all but its chains."""
    return [(found[1], found[2]) for line in text.split("\n")
            if (found := _OBJECT.fullmatch(line)) and found[1] not in ("chain", "comment")]


def chain_names(text: str) -> list[str]:
    """The names of the chains ``nft list table`` printed as ``text``."""
    return [found[1] for line in text.split("\n") if (found := _ANY_CHAIN.fullmatch(line))]


class _Reader:
    """The lines after the table's header, one at a time."""

    def __init__(self, inet: bool, seen: Lines, expected: Sequence[NetObject]) -> None:
        self.inet = inet
        self.seen = seen
        self.expected = expected
        self.shapes = _Shapes(inet, _read)
        self.lines: Lines = {}
        self.chains: list[str] = []
        self.rules: list[ListedRule] = []
        self.handles: set[int] = set()  # a table numbers its rules once: never two alike
        self.chain: str | None = None
        self.spec: str | None = None  # the hook line the current chain must start with

    def read(self, lines: list[str]) -> ListedTable:
        closed = False
        for line in lines:
            if closed:
                _expect(not line)
            elif self.chain is None:
                closed = line == "}"
                if line and not closed:
                    self.open(line)
            elif line == "\t}":
                _expect(self.spec is None)
                self.chain = None
            elif self.spec is not None:
                _expect(line == "\t\t" + self.spec)
                self.spec = None
            else:
                _expect(self.chain in _RULE_CHAINS)
                self.rules.append(self.rule(line, self.chain))
        _expect(closed and NAT_CHAIN in self.chains and FORWARD_CHAIN in self.chains)
        return ListedTable(tuple(self.chains), tuple(self.rules), self.lines)

    def rule(self, line: str, chain: str) -> ListedRule:
        found = _RULE.fullmatch(line)
        _expect(found is not None)
        assert found is not None
        body, tag, reply = found[1], found[2], found[3] is not None
        key = (chain, body, reply, self.inet)
        read = self.seen.get(key) or self.lines.get(key)
        if read is None and self.expected:
            self.seen, self.expected = expected_lines(self.expected, self.inet), ()
            read = self.seen.get(key)
        if read is None:
            read = self.shapes.read(body, chain, reply)
        _expect(read is not None)
        assert read is not None
        self.lines[key] = read
        handle = int(found[4])
        _expect(handle not in self.handles)
        self.handles.add(handle)
        return ListedRule(chain, handle, tag + REPLY_SUFFIX if reply else tag, read[0],
                          reply, read[1])

    def open(self, line: str) -> None:
        found = _CHAIN.fullmatch(line)
        _expect(found is not None and found[1] not in self.chains
                and (found[1] in CHAIN_SPECS or found[1] == MARKER_CHAIN))
        assert found is not None
        self.chain = found[1]
        self.chains.append(self.chain)
        self.spec = CHAIN_SPECS.get(self.chain)


def _expect(condition: bool) -> None:
    if not condition:
        raise _NotOursError


def _read(body: str, chain: str, reply: bool, inet: bool) -> tuple[NetObject, str] | None:
    """The object whose rule (``reply``: its reply half) nft lists as ``body``, and its tag:
    the reader's full read of a line it has not seen (:func:`_object_and_tag`)."""
    return _object_and_tag(body, chain, reply, inet)


def _object_and_tag(body: str, chain: str, reply: bool, inet: bool
                    ) -> tuple[NetObject, str] | None:
    """:func:`_rendered`'s object and its tag."""
    read = _rendered(body, chain, reply, inet)
    return None if read is None else (read[0], read[1][0].comment)


def _rendered(body: str, chain: str, reply: bool, inet: bool
              ) -> tuple[NetObject, tuple[NftRule, ...]] | None:
    """:func:`_read`'s object, with its rules as rendered to check it."""
    try:
        obj = _nat(body) if chain == NAT_CHAIN else _forward(body, reply)
    except _ERRORS:
        return None
    if obj is None:
        return None
    rendered = nft_rules(obj, inet=inet)
    half = rendered[1 if reply else 0]
    if as_listed(half.body) != body or half.chain != chain:
        return None
    return obj, rendered


class _Shape(NamedTuple):
    """What the rules of one shape share: all but the destination (see :class:`_Shapes`)."""

    make: Callable[[Network], NetObject]
    """The object of the shape's first line (read in full), with another destination."""
    length: int
    tag_parts: tuple[str, ...]
    """The object's tag text around each place of its destination."""
    rule: tuple[Any, ...] | None
    """A forward rule's fields but its destination (``None`` for a NAT rule): both halves
    of one forward rule make the same object, made once (see :meth:`_Shapes.read`)."""


class _Shapes:
    """NAT and forward rule lines read as the lines of the same shape read before them.

    Most of a table's rules differ in their destination only (one source, one way
    out, one verdict). The first line of each shape, ``<head><address>/<length>
    <tail>`` (the destination where :data:`_SHAPE` finds it; in a forward rule's
    reply half, where :data:`_REPLY_SHAPE` does), is read as any other line
    (parsed, rendered back, compared); a later line of the same chain and half
    with the same head, length and tail (the second one makes the shape: a line
    of a shape of its own costs no more) is taken as the object of that first line
    with the later line's destination, without parsing or rendering it again,
    when its address is a dotted quad as ``ipv4_text`` writes it (no leading zero,
    no other spelling), without host bits, and the object builds (the model's
    checks, such as exclusions lying inside the destination, run as for any
    object). That is the object the full read gives, and the text it renders to is
    the line itself: the rule text is the same words around the destination, and
    :func:`as_listed` rewrites each address on its own (an IPv4 prefix that is not
    a host's it leaves as it is). A line that does not pass reads the full way. Its
    tag is made from the first line's tag text with the later line's destination
    in each of its places. The two halves of a forward rule read so make one object
    (with the same fields and destination, the same object). The same answers as the
    full read, line for line:
    tests/nftables/test_text_listing.py draws rules and destination texts (hostile
    ones too) to hold the two to it.
    """

    def __init__(self, inet: bool,
                 full: Callable[[str, str, bool, bool], tuple[NetObject, str] | None]) -> None:
        self.inet = inet
        self.full = full  # the full read of a line (``_read``'s arguments and answer)
        self.known: dict[_Key, _Shape | None] = {}  # None: that shape cannot be kept
        self.once: dict[_Key, tuple[re.Match[str], NetObject]] = {}
        """The first line of a shape no other line had yet, and its object: a table whose
        every rule has a shape of its own (an exclusion in each) pays no shape."""
        self.halves: dict[tuple[Any, ...], tuple[NetObject, str]] = {}
        """A forward rule read by shape from one half, until its other half is read: its
        fields but the destination, the destination (an object is what its fields make)."""

    def read(self, body: str, chain: str, reply: bool) -> tuple[NetObject, str] | None:
        """The object the rule line ``body`` (``reply``: a reply half) of ``chain`` reads
        as, and its tag; ``None`` if none."""
        found = (_REPLY_SHAPE if reply else _SHAPE).fullmatch(body)
        if found is None:
            return self.full(body, chain, reply, self.inet)
        key = (chain, reply, found[1], found[3], found[4])
        shape = self.known.get(key)
        if shape is None and key in self.once:  # a second line of this shape
            shape = self.known[key] = _shape(*self.once.pop(key))
        if shape is not None:
            address = found[2]
            half = None if shape.rule is None else (shape.rule, address, shape.length)
            made = self.halves.pop(half, None) if half is not None else None
            if made is not None:  # the other half of a forward rule read by shape
                return made
            try:  # a dotted quad as ipv4_text writes it, without host bits
                value = int.from_bytes(socket.inet_aton(address), "big")
                if ipv4_text(value) == address:
                    net = ipaddress.IPv4Network((value, shape.length))
                    made = shape.make(net), rule_tag(f"{address}/{found[3]}".join(
                        shape.tag_parts))
                    if half is not None:
                        self.halves[half] = made
                    return made
            except _ERRORS:
                pass  # read the full way: it is refused there too, with its reason
        read = self.full(body, chain, reply, self.inet)
        if read is not None and key not in self.known and key not in self.once:
            self.once[key] = (found, read[0])
        return read


_Key = tuple[str, bool, str, str, str]
"""A line's shape: its chain, whether it is a reply half, the words before its
destination, the destination's length, the words after it."""


def _shape(found: re.Match[str], obj: NetObject) -> _Shape | None:
    """The shape of a line read the full way (``found`` by :data:`_SHAPE` or
    :data:`_REPLY_SHAPE`, read as ``obj``), if its destination is where those find it
    in each rule of its tag text."""
    patterns: tuple[LazyPattern[str], ...]
    if isinstance(obj, MasqueradeRule | SnatRule) and obj.destination is not None:
        patterns = (_SHAPE,)
    elif isinstance(obj, ForwardRule):
        patterns = (_SHAPE, _REPLY_SHAPE)
    else:
        return None
    destination = obj.destination
    assert destination is not None
    parts = [""]
    for rule, pattern in zip(nft_rules(obj), patterns, strict=True):  # an inet table's
        said = pattern.fullmatch(rule.body)
        if said is None or said[2] != found[2] or said[3] != found[3]:
            return None
        parts[-1] += ("\n" if len(parts) > 1 else "") + said[1]
        parts.append(said[4])
    fields = (obj.source, obj.in_interface, obj.out_interface) \
        if isinstance(obj, ForwardRule) else None
    return _Shape(retarget(obj), destination.prefixlen, tuple(parts), fields)


class FirstRules:
    """Objects read from the texts of their first rules, one after the other."""

    def __init__(self) -> None:
        self._shapes = {inet: _Shapes(inet, _read) for inet in (True, False)}

    def read(self, body: str, chain: str, inet: bool) -> NetObject | None:
        """The object whose first rule nft lists as ``body`` in ``chain`` (of a table of an
        ``inet`` family or not), read as :func:`listed_rules` reads a line it has not
        seen (parsed, then rendered back to the same text, or by the shape of a line this
        reader read before); ``None`` for any other text."""
        read = self._shapes[inet].read(body, chain, False)
        return None if read is None else read[0]


def expected_lines(objects: Iterable[NetObject], inet: bool) -> Lines:
    """The lines nft lists for ``objects``' rules (NAT and forward rules; others are left
    out) in a table of an ``inet`` family or not, each read as its object.

    What :func:`_read` gives for each such line, by the round trip a rule's text
    makes (parsed, it is its object again; tested for drawn objects): taking a
    line as the object whose rule prints it skips the parse, and what an apply
    of that object writes is that line.
    """
    lines: Lines = {}
    for obj in objects:
        if not isinstance(obj, MasqueradeRule | SnatRule | ForwardRule):
            continue  # routes, drift, blocks: not rules of this table
        rendered = nft_rules(obj, inet=inet)
        tag = rendered[0].comment
        for half, rule in enumerate(rendered):
            lines[rule.chain, as_listed(rule.body), half == 1, inet] = (obj, tag)
    return lines


def first_rule_lines(firsts: Iterable[tuple[str, str, bool]],
                     enough: Callable[[], bool] | None = None) -> Lines:
    """The lines of the objects whose first rules nft lists as ``body`` in ``chain``
    (each of ``firsts`` a ``(chain, body, inet)``), each line read as :func:`listed_rules`
    reads it: the first rule's text parsed and rendered back (or a NAT rule's by the
    shape of one read before it, see :class:`_Shapes`), the other half of a forward
    rule (its replies) as rendered from that object. A text that does not read back
    is left out.

    A guess of what a listing will hold, taken as :func:`expected_lines` are
    (the ``seen`` of :func:`listed_rules`): a listed line is taken as an object
    only when it is a key of these lines, and each key's object is what reading
    that very text gives, wherever the guess came from. ``enough``, asked every
    64 texts, ends the work early (the listing it guesses is done: the
    reader reads the rest as it meets them).
    """
    lines: Lines = {}
    shapes = {inet: _Shapes(inet, _object_and_tag) for inet in (True, False)}
    for count, (chain, body, inet) in enumerate(firsts):
        if enough is not None and count % _ASKED_EVERY == 0 and count and enough():
            break
        if chain == NAT_CHAIN:
            nat = shapes[inet].read(body, chain, False)
            if nat is not None:
                lines[chain, body, False, inet] = nat
            continue
        read = _rendered(body, chain, False, inet)
        if read is None:
            continue
        obj, rendered = read
        tag = rendered[0].comment
        lines[chain, body, False, inet] = (obj, tag)
        for rule in rendered[1:]:
            lines[rule.chain, as_listed(rule.body), True, inet] = (obj, tag)
    return lines


def as_listed(body: str) -> str:
    """A rule's text as nft lists it (see ``_ADDRESS``)."""
    if "/32" not in body and "ip6 " not in body:
        return body  # IPv4 prefixes that are not hosts: spelled alike
    return _ADDRESS.sub(_listed_address, body)


def _listed_address(found: re.Match[str]) -> str:
    address, length = found[1], found[2]
    if ":" in address:
        address = socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, address))
        host = length == "/128"
    else:
        host = length == "/32"
    return address if host or length is None else address + length


@functools.lru_cache(maxsize=4096)
def prefix_of(address: str, length: int | None) -> Network:
    """A prefix from the kernel's text (cached: sources and destinations repeat across
    rules); ``length`` ``None`` is a host. ``OSError`` for an address that is none."""
    if ":" in address:
        value = int.from_bytes(socket.inet_pton(socket.AF_INET6, address), "big")
        return ipaddress.IPv6Network((value, 128 if length is None else length))
    value = int.from_bytes(socket.inet_pton(socket.AF_INET, address), "big")
    return ipaddress.IPv4Network((value, 32 if length is None else length))


def _prefix(text: str) -> Network:
    address, _, length = text.partition("/")
    return prefix_of(address, int(length) if length else None)


def _nat(body: str) -> NetObject | None:
    found = _NAT.fullmatch(body)
    if found is None:
        return None
    common: dict[str, Any] = {
        "destination": None if found[3] is None else _prefix(found[3]),
        "exclude": _exclusions(found[4]),
        "out_interface": None if found[5] is None else model_ifname(found[5]),
        "random_fully": found[8] is not None,
    }
    source = _prefix(found[2])
    if found[6] is not None:
        return MasqueradeRule(source, **common)
    return SnatRule(source, to_address=found[7], **common)


def _exclusions(text: str) -> list[Network]:
    if "{" not in text:
        # one match each (or `daddr != a-b`: a set of one range, as nft lists it)
        return [net for x in _EXCLUDED.findall(text) for net in _element(x)]
    # `daddr != { a, b-c }`: the anonymous interval set of a rule with many exclusions
    elements = text[text.index("{") + 1:text.rindex("}")].split(",")
    return [net for element in elements for net in _element(element.strip())]


def _element(text: str) -> list[Network]:
    """The prefixes of one excluded element: a prefix, a host, or a range ``a-b``."""
    first, dash, last = text.partition("-")
    if not dash:
        return [_prefix(text)]
    low, high = prefix_of(first, None), prefix_of(last, None)
    return list(ipaddress.summarize_address_range(low.network_address, high.network_address))


def _forward(body: str, reply: bool) -> NetObject | None:
    found = _FORWARD.fullmatch(body)  # a half read as the other renders otherwise
    if found is None:
        return None
    source, destination = _prefix(found[2]), _prefix(found[3])
    iif, oif = (None if name is None else model_ifname(name) for name in (found[4], found[5]))
    if reply:  # the reply half: swapped back to the rule it answers
        return ForwardRule(destination, source, in_interface=oif, out_interface=iif)
    return ForwardRule(source, destination, in_interface=iif, out_interface=oif)
