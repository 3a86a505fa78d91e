"""Foreign iptables rules k3snet can model (best effort, never raises).

What the planner needs to know is whether somebody else already masquerades our
traffic or accepts it in FORWARD, so it can say "met by foreign state" instead of
adding a duplicate. Only rules whose meaning is simple are modelled:

* nat: a ``MASQUERADE`` or ``SNAT --to-source ADDR`` rule in POSTROUTING or in a
  chain POSTROUTING jumps to (flannel's ``FLANNEL-POSTRTG``), matching at most a
  source, a destination or one negated destination (flannel's ``! -d 224.0.0.0/4``)
  and an out interface. Marks, negated sources, ``-p`` and anything else: skipped.
* filter: an ``ACCEPT`` in FORWARD or a chain FORWARD jumps to, matching at most
  source, destination and interfaces, reached before any queue or DROP/REJECT rule
  matching more than those (but kube-proxy's drop of ``INVALID`` packets), behind no
  DROP/REJECT that may match its packets, and behind no RETURN to a
  FORWARD policy that is not ACCEPT that may match its packets (nor behind a RETURN
  that may match them earlier in the chain jumped to holding it), and only if the
  replies are accepted too (a reverse plain accept, or a conntrack
  ``ESTABLISHED`` accept covering them), as flannel's ``FLANNEL-FWD`` pair does.

* filter, what decides otherwise (:func:`foreign_blocks`): every ``DROP``,
  ``REJECT``, ``NFQUEUE``/``QUEUE`` (a program decides: an IPS) (and ``RETURN``
  to FORWARD's policy when it is not ACCEPT) met
  before k3snet's jump, at any depth of jumps (bounded, loop-safe), as a
  :class:`~k3snet.model.ForwardBlock` carrying the rule's text. Here a doubt
  counts against k3snet: a negated or unmodelled match is read as "any", so a
  rule that may drop our traffic is a conflict rather than overridden.

* raw, mangle and security, what decides on the forward path where k3snet writes
  nothing (:func:`path_blocks`): their drops, as filter's before k3snet's jump, and
  raw's rules leaving packets untracked (no NAT for them).

* nat, what translates otherwise (:func:`nat_blocks`): every rule that may
  translate (``MASQUERADE``, ``SNAT``, ``NETMAP``, any target k3snet does not
  know) met before k3snet's POSTROUTING jump, at any depth of jumps (bounded,
  loop-safe), as a :class:`~k3snet.model.NatBlock` carrying the rule's text (a
  doubt counts against k3snet, as for forward blocks), and every exemption met
  there (a ``RETURN``/``ACCEPT`` ending the nat table: the packets leave
  untranslated). A rule testing for a set mark is another program's traffic.

In :func:`foreign_nat` rule order across chains is approximated (one level of
jumps, in order: a rule it misses further down is not read as met, so k3snet
writes its own, redundant at worst); :func:`foreign_forward` reads every depth
of jumps, each rule with the matches of the jumps on the way ANDed (bounded as
the walks of :func:`foreign_blocks`, a loop in the text read as a drop). A
RETURN that may skip most packets hides what follows it in its chain, and a
jump that matches on anything not modelled hides what its chain does.
A negated match (``! -s``, ``! -d``) is never read as the positive one: a rule
that skips a destination does not serve it (``! -d`` on a NAT rule becomes an
exclusion, anything else negated is not modelled).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Container, Iterable, Iterator, Sequence
from typing import Literal, TypeVar

import attrs

from k3snet.backends.iptables.save import TableDump
from k3snet.backends.prefixes import Prefixes as _Prefixes
from k3snet.backends.replies import ByAddresses
from k3snet.backends.routed import MOST_PREFIXES, RoutedBy
from k3snet.backends.untracked import partial_notrack
from k3snet.errors import K3snetError
from k3snet.model import NetObject, interface_holds, interfaces_left, interfaces_may_meet
from k3snet.model.cidr import Network, contains, overlaps, parse_network
from k3snet.model.forward import ForwardBlock, ForwardRule
from k3snet.model.nat import MasqueradeRule, NatBlock, SnatRule
from k3snet.render.iptables.rules import (
    PREFIX,
    XT_CONTINUE,
    XT_TTL,
    Line,
    RuleFields,
    format_line,
    parse_rule,
    rule_verb,
    tokenize,
    ttl_expires,
)

__all__ = ["PATH_CHAINS", "foreign_blocks", "foreign_forward", "foreign_nat",
           "forward_drops_untracked", "nat_blocks", "path_blocks", "untracked_accepts"]

_STOP = frozenset({"DROP", "REJECT"})


def _zero(family: int) -> Network:
    return ipaddress.ip_network("0.0.0.0/0" if family == 4 else "::/0")


_UNKNOWN = "<unknown>"
"""The target :func:`_walk` gives what it did not read (a loop in the text, chains too
deep, past its budget): as a drop of packets it cannot tell, nothing after it is read."""


def _walk(
    dump: TableDump, builtin: str, ours: Container[str] | None = None
) -> Iterator[tuple[str, str | None, RuleFields | None, Line, int, tuple[int, ...]]]:
    """(chain, target, fields, tokens, frame, stack) of the rules ``builtin`` reaches, in
    the kernel's order: at each jump or go (``-g``), the rules of the chain jumped to, at
    any depth, each with its own matches and those of every jump on the way (ANDed, as
    the kernel matches them: :func:`_both`); a rule no packet reaching it matches (``-s
    10.42.0.0/16 -j A`` to ``-A A -s 192.0.2.0/24 ...``) is left out. ``fields`` is
    ``None`` for a rule with matches we do not model, itself or on the way.

    Each reading of a chain (``builtin``'s is 0, a chain jumped to twice is read twice,
    each time for its jump's packets alone) has a number; ``stack``: those the rule is
    read within. A ``RETURN`` is given with ``frame``, the reading whose rest its packets
    skip (0: they leave ``builtin``, to its policy): the one it is in, or for a chain gone
    to the one that went there (and so on). The end of a chain gone to, and a ``-g`` to
    a chain not read, are such a ``RETURN`` of the ``-g`` rule's packets; so is a
    ``RETURN`` behind a ``-g`` whose own matches are not modelled (it takes no more).
    Rules after a ``RETURN`` or ``ACCEPT`` every packet of k3snet's takes (see
    :func:`_takes_all`) are left out (in ``builtin``: every later one). ``ours``: k3snet's
    own chains, not followed (default: every ``K3SNET-`` chain). Bounded: a loop in the
    text, a chain deeper than :data:`WALK_DEPTH` or more than :data:`WALK_LIMIT` rules end
    the walk with a rule of target :data:`_UNKNOWN`."""
    budget = [0]
    numbers = [0]

    def chain(  # noqa: PLR0912 - one branch per way a rule leaves its chain, as the kernel's
            name: str, outer: RuleFields | None, *, frame: int, stack: tuple[int, ...],
            on_way: tuple[str, ...], gone: RuleFields | None = None, gone_to: bool = False,
    ) -> Iterator[tuple[str, str | None, RuleFields | None, Line, int, tuple[int, ...]]]:
        here = stack[-1]
        for spec in dump.chain(name):
            budget[0] += 1
            tokens = tokenize(spec)
            if budget[0] > WALK_LIMIT:
                yield name, _UNKNOWN, None, tokens, frame, stack
                return
            target = _target(tokens)
            own = _parse(tokens)
            fields = _both(outer, own)
            if fields is False:
                continue  # no packet reaching it matches it
            jump = target is not None and target in dump.rules and not _ours(target, ours)
            goes = _goes(tokens)
            if jump and target is not None:
                if target in on_way or len(on_way) > WALK_DEPTH:
                    yield name, _UNKNOWN, None, tokens, frame, stack
                    return
                numbers[0] += 1
                inner = _both(outer, _parse(_as_jump(tokens)))
                if inner is False:
                    continue
                yield from chain(target, inner, frame=frame if goes else numbers[0],
                                 stack=(*stack, numbers[0]), on_way=(*on_way, target),
                                 gone=inner if goes else None, gone_to=goes)
                continue
            if goes and name != builtin:  # a chain not read: its end goes back
                returned = _both(outer, _parse(_as_jump(tokens)))
                if returned is not False:
                    yield name, "RETURN", returned, tokens, frame, stack
                continue
            if target in ("RETURN", "ACCEPT") and _takes_all(tokens):
                # (one some packets of the pods' may pass, ``! -i cni0 -j RETURN``, leaves
                # them to the next rules: read below, as any RETURN or ACCEPT)
                if gone_to and target == "RETURN":
                    yield name, target, gone, tokens, frame, stack
                elif target == "ACCEPT" and fields and (fields.source or fields.destination):
                    # every packet a jump by address let in (``-s 10.42.0.0/16 -j A``,
                    # ``-A A -j ACCEPT``): an accept of those addresses
                    yield name, target, fields, tokens, here, stack
                if here == 0:
                    return  # FORWARD's later rules are not read
                break
            if gone_to and target == "RETURN" and fields is None:
                fields = gone  # at most the -g rule's own packets
            yield name, target, fields, tokens, frame if target == "RETURN" else here, stack
        else:
            if gone_to:  # the end of a chain gone to: a RETURN of the -g rule's packets
                yield name, "RETURN", gone, (), frame, stack

    yield from chain(builtin, RuleFields(), frame=0, stack=(0,), on_way=(builtin,))


def _both(outer: RuleFields | None,  # noqa: PLR0911 - one return per way two matches part
          inner: RuleFields | None) -> RuleFields | Literal[False] | None:
    """The matches of a rule ``inner`` reached through jumps matching ``outer`` (their
    target is ``inner``'s): what the kernel matches, both at once. ``False``: no packet
    passes both (``-s 10.42.0.0/16`` on the way to ``-s 192.0.2.0/24``); ``None``: not
    modelled (either is not, or their meeting is not one match: ``! -s 10.0.0.0/8`` on
    the way to ``-s 10.0.0.0/7``, two conntrack tests)."""
    if outer is None or inner is None:
        return None
    if (outer.source is None and outer.destination is None and outer.in_interface is None
            and outer.out_interface is None and outer.ctstate is None and outer.ctdir is None):
        return inner  # (FORWARD's own rules: nothing on the way; read, never changed)
    source = _both_addresses((outer.source, outer.source_neg),
                             (inner.source, inner.source_neg))
    if source is None or source is False:
        return source
    destination = _both_addresses((outer.destination, outer.destination_neg),
                                  (inner.destination, inner.destination_neg))
    if destination is None or destination is False:
        return destination
    interfaces: list[str | None] = []
    for out, own in ((outer.in_interface, inner.in_interface),
                     (outer.out_interface, inner.out_interface)):
        if out is not None and own is not None and out != own:
            if not interfaces_may_meet(out, own):
                return False
            if not (interface_holds(out, own) or interface_holds(own, out)):
                return None  # (``eth+`` and ``e+``: ``eth+``; left as not modelled)
            interfaces.append(own if interface_holds(out, own) else out)  # the narrower
        else:
            interfaces.append(own if own is not None else out)
    tests: list[str | None] = []
    for out, mine in ((outer.ctstate, inner.ctstate), (outer.ctdir, inner.ctdir)):
        if out is not None and mine is not None and out != mine:
            return None
        tests.append(mine if mine is not None else out)
    # (built, not attrs.evolve'd: a tenth of the time, on each of up to WALK_LIMIT rules)
    return RuleFields(source=source[0], source_neg=source[1], destination=destination[0],
                      destination_neg=destination[1], in_interface=interfaces[0],
                      out_interface=interfaces[1], comment=inner.comment, ctstate=tests[0],
                      ctdir=tests[1], target=inner.target, to_source=inner.to_source,
                      random_fully=inner.random_fully)


_Address = tuple[Network | None, bool]
"""An address match and whether it is negated (``None``: any address)."""


def _both_addresses(outer: _Address, inner: _Address) -> _Address | Literal[False] | None:
    """Two address matches of one kind at once (see :func:`_both`): CIDRs nest or are
    apart, so the meeting of two positive ones is the narrower or none."""
    (out, out_neg), (mine, mine_neg) = outer, inner
    if out is None or mine is None:
        return inner if out is None else outer
    met: _Address | Literal[False] | None = None
    if out.version != mine.version:
        met = False
    elif not out_neg and not mine_neg:  # the narrower, or none
        met = False if not overlaps(out, mine) else (out if contains(mine, out) else mine,
                                                      False)
    elif out_neg and mine_neg:  # neither: the wider one's negation, when one holds the other
        if contains(out, mine) or contains(mine, out):
            met = (out if contains(out, mine) else mine, True)
    else:  # the positive one, unless the negated one takes some or all of it
        negated, positive = (out, mine) if out_neg else (mine, out)
        if contains(negated, positive):
            met = False
        elif not overlaps(negated, positive):
            met = (positive, False)
    return met


def _parse(tokens: Line) -> RuleFields | None:
    """:func:`parse_rule` of a rule, a ``REJECT``'s ``--reject-with`` left out (how it
    answers, not which packets it takes: ``iptables-save`` prints one for every reject)."""
    if "--reject-with" in tokens and _target(tokens) == "REJECT":
        at = tokens.index("--reject-with")
        tokens = (*tokens[:at], *tokens[at + 2:])
    return parse_rule(tokens)


def _ours(chain: str, ours: Container[str] | None) -> bool:
    """``chain`` is k3snet's own, not read (``ours`` ``None``: every ``K3SNET-`` chain; an
    administrator's chain named so is read when ``ours``, k3snet's chains, leaves it out)."""
    return chain.startswith(PREFIX) if ours is None else chain in ours


def _conditions(tokens: Line) -> list[str]:
    """The matches of a rule: everything before its target, comments left out."""
    conditions = list(tokens[: rule_verb(tokens)[1]])
    while "comment" in conditions:  # a comment never restricts anything
        at = conditions.index("comment") - 1
        del conditions[at: at + 4]
    return conditions


def _goes(tokens: Line) -> bool:
    """The rule goes to its chain (``-g``): its end does not come back."""
    return rule_verb(tokens)[0] == "-g"


def _target(tokens: Line) -> str | None:
    flag, index = rule_verb(tokens)
    if flag is not None and index + 1 < len(tokens):
        return tokens[index + 1]
    return None


def foreign_nat(dump: TableDump | None, family: int, *,
                ours: Container[str] | None = None) -> set[NetObject]:
    """Simple MASQUERADE/SNAT rules on the POSTROUTING path.

    A rule met earlier that takes packets away from the rules after it is an
    *exit* for them: in the whole nat table, a ``RETURN``/``ACCEPT`` in
    POSTROUTING (the packets leave untranslated), an ``ACCEPT``, ``MASQUERADE`` or
    ``SNAT`` anywhere, a ``RETURN`` in a chain gone to with ``-g``, the end of
    such a chain, and a jump k3snet does not follow; within a chain jumped to,
    its own ``RETURN``. An exit that cannot match the later rule's packets, or
    translates them the same way, changes nothing; one naming a destination
    becomes an exclusion of the later rule; one that cannot be told apart
    (another match, a negation) leaves the later rule out (not "met": k3snet
    then writes its own rule, which is redundant at worst, and
    :func:`nat_blocks` names what decides first as a conflict). An exit that
    tests for a set mark is another program's traffic and takes none of
    k3snet's (see :func:`nat_blocks`). ``ours``: k3snet's own chains, not read
    (default: every ``K3SNET-`` chain).
    """
    found: set[NetObject] = set()
    if dump is None:
        return found
    table_exits = _Exits()
    for spec in dump.chain("POSTROUTING"):
        tokens = tokenize(spec)
        target = _target(tokens)
        if target is not None and target in dump.rules and not _ours(target, ours):
            narrowed = _conditions(tokens) != []
            gone_to = _goes(tokens)
            chain_exits = _Exits()
            for inner in dump.chain(target):
                inner_tokens = tokenize(inner)
                inner_target = _target(inner_tokens)
                fields = None if narrowed else parse_rule(inner_tokens)
                _add_nat(found, family, fields, table_exits, chain_exits)
                if _marked(inner_tokens) or inner_target in _GOES_ON:
                    continue
                exit_ = _Exit.of(inner_tokens, fields, outer=tokens)
                if inner_target == "RETURN" and not gone_to:
                    chain_exits.append(exit_)
                else:  # the table ends for these packets (or a jump k3snet does not follow)
                    table_exits.append(exit_)
                if inner_target in ("RETURN", "ACCEPT") and _takes_all(inner_tokens):
                    break
            if gone_to:  # the end of a chain gone to leaves POSTROUTING too
                table_exits.append(_Exit.of(tokens, None))
            continue
        fields = parse_rule(tokens)
        _add_nat(found, family, fields, table_exits)
        if not _marked(tokens) and target not in _GOES_ON:
            table_exits.append(_Exit.of(tokens, fields))
    return found


_GOES_ON: frozenset[str | None] = frozenset({None}) | XT_CONTINUE
"""Targets after which a packet goes on to the next rule (none: a rule that only counts;
:data:`~k3snet.render.iptables.rules.XT_CONTINUE`: ``-j AUDIT``, ``-j SET --add-set`` ...
in a nat chain translate nothing)."""


def _takes_all(tokens: Line) -> bool:
    """A rule every packet of k3snet's matches: no condition, or only a mark test that
    a packet without a mark passes (kube-proxy's ``! --mark 0x4000/0x4000`` return of
    unmarked packets, or the same as ``--mark 0x0/0x4000``: k3snet's pod traffic
    carries no mark, see :func:`_unmarked_passes`)."""
    conditions = _conditions(tokens)
    if not conditions:
        return True
    return (len(conditions) in (4, 5) and conditions[0] == "-m"
            and conditions[1] in ("mark", "connmark") and conditions[-2] == "--mark"
            and conditions[2:-2] in ([], ["!"]) and _unmarked_passes(conditions) is True)


@attrs.frozen
class _Exit:
    """A rule met before a NAT rule that takes some packets away from it."""

    fields: RuleFields | None  # None: matches k3snet cannot model (all of them unknown)
    source: Network | None  # positive address matches, known even when fields is None
    destination: Network | None
    translation: tuple[str, str | None] | None  # ("masquerade", None), ("snat", ADDR)

    @classmethod
    def of(cls, tokens: Line, fields: RuleFields | None, *, outer: Line = ()) -> _Exit:
        found = {**_addresses(outer), **{k: v for k, v in _addresses(tokens).items()
                                         if v is not None}}
        translation: tuple[str, str | None] | None = None
        if fields is not None:
            if fields.target == "MASQUERADE":
                translation = ("masquerade", None)
            elif fields.target == "SNAT" and fields.to_source is not None:
                translation = ("snat", fields.to_source)
        return cls(fields, _net(found.get("source")),
                   _net(found.get("destination")), translation)


def _net(text: str | None) -> Network | None:
    if text is None:
        return None
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _add_nat(found: set[NetObject], family: int, fields: RuleFields | None,
             *exits: _Exits) -> None:
    """Add the foreign NAT object a MASQUERADE/SNAT rule met after ``exits`` (each in the
    order met, one after the other) stands for."""
    if fields is None or fields.target not in ("MASQUERADE", "SNAT"):
        return
    if fields.source_neg or fields.in_interface or fields.ctstate or fields.ctdir:
        return
    source = fields.source if fields.source is not None else _zero(family)
    destination = fields.destination if not fields.destination_neg else None
    spared = _spared(fields, family,
                     [exit_ for some in exits
                      for exit_ in some.meeting(source, destination, fields.out_interface)])
    obj = None if spared is None else _nat_object(fields, family, spared)
    if obj is not None:
        found.add(obj)


class _Exits:
    """The exits met so far (:class:`_Exit`, in order), found by the source, destination and
    way out they may share with a later NAT rule: :func:`_spared` reads only those, not
    every one (N ``-d X -j RETURN`` exceptions before N SNAT rules, or N ``-o vethN -j
    RETURN`` before N ``-o ethN -j MASQUERADE``: N reads, not N squared)."""

    def __init__(self) -> None:
        self._count = 0
        # by the device their out interface match names (None: any, a wildcard, or an exit
        # :func:`_spared` cannot read, whatever its way out)
        self._by_device: dict[str | None, _ExitsByAddress] = {}

    def append(self, exit_: _Exit) -> None:
        self._count += 1
        fields = exit_.fields
        device = (None if fields is None or fields.in_interface or fields.ctstate
                  or fields.ctdir else _named(fields.out_interface))
        self._by_device.setdefault(device, _ExitsByAddress()).append((self._count, exit_))

    def meeting(self, source: Network, destination: Network | None,
                out_interface: str | None = None) -> list[_Exit]:
        """In the order met, every exit whose addresses may meet ``source`` and ``destination``
        (``None``: any) and whose way out may meet ``out_interface``, and perhaps a few more
        (:func:`_spared` reads each): a superset of those its tests keep."""
        found = [item for some in _meeting(self._by_device, out_interface)
                 for item in some.meeting(source, destination)]
        return [exit_ for _, exit_ in sorted(found, key=lambda item: item[0])]


class _ExitsByAddress:
    """Exits of :class:`_Exits` (each with its number in the order met) by their addresses."""

    def __init__(self) -> None:
        self._any: list[tuple[int, _Exit]] = []  # no address
        self._by_source: _Prefixes[tuple[int, _Exit]] = _Prefixes()
        self._by_destination: _Prefixes[tuple[int, _Exit]] = _Prefixes()
        self._both: _Prefixes[tuple[int, _Exit]] = _Prefixes()  # by destination, the source
        # checked here

    def append(self, item: tuple[int, _Exit]) -> None:
        exit_ = item[1]
        if exit_.source is not None and exit_.destination is not None:
            self._both.add(exit_.destination, item)
        elif exit_.source is not None:
            self._by_source.add(exit_.source, item)
        elif exit_.destination is not None:
            self._by_destination.add(exit_.destination, item)
        else:
            self._any.append(item)

    def meeting(self, source: Network, destination: Network | None) -> list[tuple[int, _Exit]]:
        found = [*self._any, *self._by_source.overlapping(source)]
        if destination is None:
            found += self._by_destination.everything()
            found += (item for item in self._both.everything()
                      if item[1].source is not None and overlaps(item[1].source, source))
        else:
            found += self._by_destination.overlapping(destination)
            found += (item for item in self._both.overlapping(destination)
                      if item[1].source is not None and overlaps(item[1].source, source))
        return found


def _spared(rule: RuleFields, family: int, exits: Iterable[_Exit]) -> list[Network] | None:
    """The destinations earlier exits take from ``rule``; ``None``: cannot tell."""
    source = rule.source if rule.source is not None else _zero(family)
    destination = rule.destination if not rule.destination_neg else None
    mine = ("masquerade", None) if rule.target == "MASQUERADE" else ("snat", rule.to_source)
    spared: list[Network] = []
    for exit_ in exits:
        if exit_.translation == mine:
            continue  # translated the same way, whichever rule comes first
        if exit_.source is not None and (exit_.source.version != family
                                         or not overlaps(exit_.source, source)):
            continue  # other sources
        if exit_.destination is not None and (
                exit_.destination.version != family
                or (destination is not None and not overlaps(exit_.destination, destination))):
            continue  # other destinations
        fields = exit_.fields
        if fields is None or fields.in_interface or fields.ctstate or fields.ctdir:
            return None  # matches k3snet cannot model: which packets it takes is unknown
        if fields.source_neg and fields.source is not None and contains(fields.source, source):
            continue  # skips our sources
        if not interfaces_may_meet(fields.out_interface, rule.out_interface):
            continue  # another way out ("eth1" and "eth0"; not "eth+", which holds "eth0")
        if fields.destination is None or fields.destination_neg:
            return None
        spared.append(fields.destination)  # may spare more than it does: errs on "not met"
    return spared


def _nat_object(fields: RuleFields, family: int, spared: list[Network]) -> NetObject | None:
    source = fields.source if fields.source is not None else _zero(family)
    destination = fields.destination
    exclude: list[Network] = []
    if destination is not None and fields.destination_neg:
        exclude = [destination]
        destination = None
    whole = destination if destination is not None else _zero(family)
    exclude = list(dict.fromkeys([*exclude, *(net for net in spared if overlaps(net, whole))]))
    try:
        if fields.target == "SNAT":
            if fields.to_source is None:
                return None
            return SnatRule(source, destination=destination, exclude=exclude,
                            out_interface=fields.out_interface,
                            random_fully=fields.random_fully, to_address=fields.to_source)
        return MasqueradeRule(source, destination=destination, exclude=exclude,
                              out_interface=fields.out_interface,
                              random_fully=fields.random_fully)
    except (K3snetError, ValueError):
        return None  # a port range, another family ...: not modelled


def foreign_forward(dump: TableDump | None, family: int, *,
                    untracked: Sequence[ForwardBlock] = (),
                    ours: Container[str] | None = None,
                    accepts: Sequence[RuleFields] | None = None) -> set[NetObject]:
    """Simple accepts on the FORWARD path whose replies are accepted too; not one that
    an ``untrack`` block of ``untracked`` decides and whose replies only an accept of
    established connections takes (``--ctstate RELATED,ESTABLISHED``): the flow it
    accepts is untracked, its replies are a new connection's (or none's). ``ours``:
    k3snet's own chains, not read (default: every ``K3SNET-`` chain); ``accepts``:
    :func:`forward_accepts` of ``dump`` and ``ours``, when the caller has them already.
    Linear in the accepts (each one's replies are looked for by address:
    :class:`~k3snet.backends.replies.ByAddresses`)."""
    found: set[NetObject] = set()
    if dump is None:
        return found
    if accepts is None:
        accepts = forward_accepts(dump, ours)
    # one of each: what is asked of an accept, as a rule or as a reply, is its addresses,
    # devices and conntrack tests alone, so a copy (a script that appended its pair at each
    # boot, the same rule with another comment) answers as the first does, and asking it
    # again would be quadratic (2 000 copies of a pair: 28 s)
    distinct: dict[tuple[object, ...], RuleFields] = {}
    for rule in accepts:
        distinct.setdefault((rule.source, rule.destination, rule.in_interface,
                             rule.out_interface, rule.ctstate, rule.ctdir), rule)
    accepts = list(distinct.values())
    zero = _zero(family)
    # each accept filed by its addresses (none: any), so that the replies of each are
    # looked for among those whose addresses may take them, not among all of them
    replies: ByAddresses[RuleFields] = ByAddresses()
    for reply in accepts:
        reply_source = reply.source if reply.source is not None else zero
        reply_destination = reply.destination if reply.destination is not None else zero
        if reply_source.version == family and reply_destination.version == family:
            replies.add(reply_source, reply_destination, reply,
                        (reply.in_interface, reply.out_interface))
    for rule in accepts:
        if rule.ctstate is not None or rule.ctdir is not None:
            continue  # (a conntrack test: not every packet of the pods' flow, or replies)
        source = rule.source if rule.source is not None else zero
        destination = rule.destination if rule.destination is not None else zero
        if source.version != family or destination.version != family:
            continue
        # (replies come in by the device the rule's packets leave by, and out by the other)
        devices = (rule.out_interface, rule.in_interface)
        answers = [reply for reply in replies.holding(destination, source, devices)
                   if _answers(reply, rule, source, destination)]
        # (a router's error comes from any address: only an accept of any source takes it)
        if not answers or not any(_takes_errors(reply, rule, source)
                                  for reply in replies.holding(zero, source, devices)):
            continue
        try:
            accepted = ForwardRule(source, destination, in_interface=rule.in_interface,
                                   out_interface=rule.out_interface)
        except K3snetError:
            continue
        if all(reply.ctstate is not None or reply.ctdir is not None for reply in answers) and any(
                block.decides(accepted) for block in untracked):
            continue
        found.add(accepted)
    return found


def forward_accepts(dump: TableDump, ours: Container[str] | None = None) -> list[RuleFields]:
    """The simple ``ACCEPT`` rules of FORWARD (and of the chains it jumps to, at any
    depth, each with the matches of the jumps on the way: :func:`_walk`) met before
    any queue, drop or reject that is not read by its addresses and
    interfaces alone (but kube-proxy's drop of ``INVALID`` packets), not behind a drop
    or reject so read that may match their packets (``-d 192.0.2.0/24 -j DROP`` lets an
    accept of the pods' traffic to 192.168.2.0/24 be reached, not one of anything to
    the pods: a router's ICMP error for them may come from 192.0.2.0/24),
    and not behind a ``RETURN`` to FORWARD's policy, when that is not ``ACCEPT``, that
    may match their packets (one of other addresses, flannel's, lets them be reached),
    nor behind a ``RETURN`` of a chain jumped to that may match them, or a ``-g`` to
    another chain, whose end does the same (its packets go back to FORWARD, past the
    rest of that chain: a later rule of FORWARD, or its policy, decides them)."""
    accepts: list[RuleFields] = []
    dropped = dump.policies.get("FORWARD", "ACCEPT") != "ACCEPT"
    # the drops, rejects and RETURNs to FORWARD's policy drop met so far
    returns = _Takers()
    # the RETURNs met so far out of each reading of a chain jumped to (None: not
    # modelled), by the reading whose rest their packets skip: a chain jumped to twice
    # sends back only each jump's own packets
    skips: dict[int, _Takers] = {}
    for _chain, target, fields, _tokens, frame, stack in _walk(dump, "FORWARD", ours):
        if target == _UNKNOWN:
            break  # not read (a loop in the text, past the walk's bounds): as a drop
        if target in _STOP:
            if fields is not None and fields.ctstate == "INVALID":
                continue  # kube-proxy's drop of invalid packets: valid traffic goes on
            if fields is None:
                break  # which packets it drops is unknown: what follows may never be reached
            returns.append(fields)  # it hides the later accepts it may take, as a RETURN
            continue
        if target in ("NFQUEUE", "QUEUE"):
            break  # a program's verdict: as a drop, above
        if target == "RETURN" and frame == 0 and dropped:
            if fields is None:
                break  # which packets go to FORWARD's policy drop is unknown: as a drop
            returns.append(fields)
            continue
        if target == "RETURN" and frame != 0:
            skips.setdefault(frame, _Takers()).append(fields)
            continue
        if fields is None:
            continue
        if (fields.target == "ACCEPT" and not fields.source_neg and not fields.destination_neg
                and not returns.may_take(fields)
                and not any(reading in skips and skips[reading].may_take(fields)
                            for reading in stack)):
            accepts.append(fields)
    return accepts


class _Takers:
    """The DROP/REJECT/RETURN rules met so far (read by addresses and interfaces;
    ``None``: not modelled), asked whether one may take some packets of a later rule
    (:func:`_may_take`): only those whose positive address matches may meet the rule's,
    and whose interfaces may (a rule naming ``tap7`` is read for a rule naming ``tap7``,
    a wildcard or none, never for one naming ``tap8``), are read, not every one (N ``-s X
    -j DROP`` before N accepts, or a ``-i tapN ! -s ADDR -j DROP`` per virtual machine
    before its accept: N reads, not N squared)."""

    def __init__(self) -> None:
        self._unknown = False
        # by the in and out interfaces named (a device's name; None: any, or a wildcard)
        self._by_devices: dict[str | None, dict[str | None, _ByAddress]] = {}

    def append(self, fields: RuleFields | None) -> None:
        if fields is None:
            self._unknown = True
            return
        by_out = self._by_devices.setdefault(_named(fields.in_interface), {})
        by_out.setdefault(_named(fields.out_interface), _ByAddress()).append(fields)

    def may_take(self, rule: RuleFields) -> bool:
        """``any(earlier is None or _may_take(earlier, rule) for earlier in met)``: a rule
        whose positive address match shares no address with ``rule``'s, or that names
        another device than ``rule`` does, cannot take any of its packets, and is not
        read."""
        if self._unknown:
            return True
        return any(takers.may_take(rule)
                   for by_out in _meeting(self._by_devices, rule.in_interface)
                   for takers in _meeting(by_out, rule.out_interface))


def _named(match: str | None) -> str | None:
    """The device an interface match names (``None``: any, ``+``, or a wildcard)."""
    return None if match is None or match.endswith("+") else match


_V = TypeVar("_V")


def _meeting(by_device: dict[str | None, _V], match: str | None) -> Iterator[_V]:
    """Those of ``by_device`` (by :func:`_named`) whose interface match may meet ``match``:
    for a device's name, its own and those naming none; for any other, every one."""
    device = _named(match)
    if device is None:
        yield from by_device.values()
        return
    for key in (None, device):
        if key in by_device:
            yield by_device[key]


class _ByAddress:
    """Rules of :class:`_Takers` filed by their positive address matches."""

    def __init__(self) -> None:
        self._any: list[RuleFields] = []  # no positive address match
        self._by_source: _Prefixes[RuleFields] = _Prefixes()
        self._by_destination: _Prefixes[RuleFields] = _Prefixes()
        self._both: _Prefixes[RuleFields] = _Prefixes()  # by destination

    def append(self, fields: RuleFields) -> None:
        source = fields.source if not fields.source_neg else None
        destination = fields.destination if not fields.destination_neg else None
        if source is not None and destination is not None:
            self._both.add(destination, fields)
        elif source is not None:
            self._by_source.add(source, fields)
        elif destination is not None:
            self._by_destination.add(destination, fields)
        else:
            self._any.append(fields)

    def may_take(self, rule: RuleFields) -> bool:
        by_source = (self._by_source.everything() if rule.source is None
                     else self._by_source.overlapping(rule.source))
        by_destination = (self._by_destination.everything() if rule.destination is None
                          else self._by_destination.overlapping(rule.destination))
        both = (self._both.everything() if rule.destination is None
                else self._both.overlapping(rule.destination))
        return any(_may_take(earlier, rule)
                   for some in (self._any, by_source, by_destination, both)
                   for earlier in some)


def _as_jump(tokens: Line) -> Line:
    """A ``-g CHAIN`` rule's tokens as ``-j CHAIN``'s (the same matches)."""
    return tuple("-j" if tok == "-g" else tok for tok in tokens)


def _may_take(earlier: RuleFields, rule: RuleFields) -> bool:
    """A rule ``earlier`` (a ``RETURN``, ``DROP`` or ``REJECT``, read by its addresses and
    interfaces; any other match narrows it, and is read as none) may match some packets
    of ``rule``."""
    for mine, negated, theirs in ((earlier.source, earlier.source_neg, rule.source),
                                  (earlier.destination, earlier.destination_neg,
                                   rule.destination)):
        if mine is None or theirs is None:
            continue  # (no match: any address; ``theirs`` any: some of it is ``mine``'s)
        if negated and contains(mine, theirs):
            return False  # skips every address of ``rule``'s
        if not negated and not overlaps(mine, theirs):
            return False
    return (interfaces_may_meet(earlier.in_interface, rule.in_interface)
            and interfaces_may_meet(earlier.out_interface, rule.out_interface))


def untracked_accepts(dump: TableDump | None, family: int, *,
                      ours: Container[str] | None = None,
                      accepts: Sequence[RuleFields] | None = None) -> tuple[ForwardRule, ...]:
    """What FORWARD's own accepts take of an untracked flow (``dump``: filter): each accept by
    address and interface alone (no ``--ctstate``), read one way, behind no drop or
    reject that may match its packets (see :func:`forward_accepts`). An untracked
    packet falls through k3snet's accept of established connections to them: an
    administrator's accepts of both ways by address let an untracked flow through (the
    ``accepted`` of an ``untrack`` :class:`~k3snet.model.ForwardBlock`, as the nftables
    backend reads them). ``ours``: k3snet's own chains, not read (default: every
    ``K3SNET-`` chain); ``accepts``: :func:`forward_accepts` of ``dump`` and ``ours``, when
    the caller has them already."""
    if dump is None:
        return ()
    zero = _zero(family)
    found: list[ForwardRule] = []
    for rule in forward_accepts(dump, ours) if accepts is None else accepts:
        source = rule.source if rule.source is not None else zero
        destination = rule.destination if rule.destination is not None else zero
        if rule.ctstate is not None or rule.ctdir is not None or source.version != family or (
                destination.version != family):
            continue
        try:
            found.append(ForwardRule(source, destination, in_interface=rule.in_interface,
                                     out_interface=rule.out_interface))
        except K3snetError:
            continue
    return tuple(dict.fromkeys(found))


def _answers(reply: RuleFields, rule: RuleFields, source: Network, destination: Network) -> bool:
    """``reply`` accepts the packets coming back for ``rule``'s traffic (``--ctdir REPLY``
    takes every one of them, ``--ctdir ORIGINAL`` none: they travel against the first
    packet of the pods' connection)."""
    if reply.ctstate is not None and "ESTABLISHED" not in reply.ctstate.split(","):
        return False
    if reply.ctdir not in (None, "REPLY"):
        return False
    return (
        (reply.source is None or contains(reply.source, destination))
        and (reply.destination is None or contains(reply.destination, source))
        and interface_holds(reply.in_interface, rule.out_interface)
        and interface_holds(reply.out_interface, rule.in_interface)
    )


def _takes_errors(reply: RuleFields, rule: RuleFields, source: Network) -> bool:
    """``reply`` accepts a router's ICMP error for ``rule``'s traffic (an ICMPv6 Packet Too
    Big, an ICMP fragmentation needed): it comes from the router's own address, not the
    destination, RELATED to the connection, so an accept naming a source (the destination,
    as k3snet's own reply accept did) leaves it to what follows, a FORWARD policy DROP, and
    path MTU discovery never learns the path's smaller MTU. conntrack gives the error its
    master's connection in the reply direction (``--ctdir REPLY`` takes it, ``ORIGINAL``
    does not)."""
    if reply.ctstate is not None and "RELATED" not in reply.ctstate.split(","):
        return False
    if reply.ctdir not in (None, "REPLY"):
        return False
    return (
        reply.source is None
        and (reply.destination is None or contains(reply.destination, source))
        and interface_holds(reply.in_interface, rule.out_interface)
        and interface_holds(reply.out_interface, rule.in_interface)
    )


_VERDICT = {"DROP": "drop", "REJECT": "reject", "RETURN": "return", "NFQUEUE": "queue",
            "QUEUE": "queue"}


def foreign_blocks(dump: TableDump | None, family: int, before: int, *,
                   ours: Container[str] | None = None,
                   routed: RoutedBy | None = None) -> set[NetObject]:
    """Foreign rules met before FORWARD's rule number ``before`` (0-based: where
    k3snet's jump is or would go) that drop, reject or return forwarded packets.

    Read at any depth, like :func:`nat_blocks`: every chain jumped or gone to is
    followed (``ours``: k3snet's own chains, not followed; default: every
    ``K3SNET-`` chain; an admin's chain named so is read when ``ours`` leaves it
    out), a chain already on the way is not followed again, and the walk stops
    after :data:`WALK_LIMIT` rules or :data:`WALK_DEPTH` chains: what it did not
    read counts against k3snet (a drop of any packet, naming the rule where it
    stopped). Each jump narrows what is reached below it. A ``RETURN`` goes back
    to the chain that jumped (past the chains gone to with ``-g`` on the way):
    when that is FORWARD's caller, the chain's policy decides (a block unless it
    is ACCEPT), and so it does for the packets reaching the end of a chain gone
    to from FORWARD. An ``ACCEPT``, ``DROP`` or ``REJECT`` (a ``RETURN``, a
    ``-g``) every packet of k3snet's matches (:func:`_takes_all`) ends the table
    (the chain) for the packets reaching it; after any other, the rules that
    follow are read (a doubt counts against k3snet). kube-proxy's drop of
    ``INVALID`` packets is left out: valid traffic goes on.

    ``routed``: the node's routes. A block naming an out-interface and no destination
    (Docker's ``! -i docker0 -o docker0 -j DROP``) only meets packets for what the node
    routes by that interface, and gets that as its destination
    (:meth:`~k3snet.backends.routed.RoutedBy.cover`); one naming an
    in-interface and no source (Docker's internal network, ``! -d 192.0.2.0/24 -i br-x
    -j DROP``) gets so its source: a packet comes in by the device its source is routed
    by (not so on a node routing asymmetrically, where a reply may come in elsewhere).
    A negated one (``-i cni0 ! -o eth0 -j DROP``) gets what the node routes by the
    devices it lets through. Routes that no one prefix holds exactly (cni0's
    ``10.42.0.0/24`` and docker0's ``172.17.0.0/16``) make one block per prefix.
    Without ``routed``, such a block may meet any packet.
    """
    if dump is None:
        return set()
    return _ForwardWalk(dump, family, ours, routed=routed).walk("FORWARD", before)


PATH_CHAINS: dict[str, tuple[str, ...]] = {
    "raw": ("PREROUTING",),
    "mangle": ("PREROUTING", "FORWARD", "POSTROUTING"),
    "security": ("FORWARD",),
}
"""The built-in chains of the tables k3snet writes nothing in that a forwarded packet
passes (either way: the replies too), each run by the kernel besides filter's FORWARD."""


def path_blocks(dump: TableDump | None, family: int, *,
                forward_drops: bool = False, accepted: Sequence[ForwardRule] = (),
                routed: RoutedBy | None = None,
                partial: list[NetObject] | None = None) -> set[NetObject]:
    """Foreign rules of ``raw``, ``mangle`` or ``security`` (``dump``'s table) that drop,
    reject or queue forwarded packets, in the built-in chains of :data:`PATH_CHAINS`.

    k3snet writes nothing in those tables, and an ``ACCEPT`` in filter ends only
    filter's chain: a ``-t mangle -A FORWARD -j DROP`` (or ``-t raw -A PREROUTING``)
    drops what k3snet's forward accepts let through. So every rule of those chains is
    read as filter's are before k3snet's jump (:func:`foreign_blocks`: at any depth,
    a doubt counts against k3snet), and so is the chain's policy when it is not
    ``ACCEPT`` (``-P FORWARD DROP``) for the packets that may reach it. A reverse-path
    drop (``-m rpfilter --invert``: Calico's, firewalld's) drops only packets whose
    source the node does not route back the way they came in, never a pod's, and is
    not read as one. In raw PREROUTING, a rule that leaves packets untracked
    (``-j NOTRACK``, ``-j CT --notrack``) takes them out of NAT altogether (the nat
    table sees only tracked connections): it is an ``exempt``
    :class:`~k3snet.model.NatBlock`, a conflict of the masquerade and SNAT rules it
    may match. With ``forward_drops`` (filter's FORWARD drops what k3snet's chain does
    not accept: :func:`forward_drops_untracked`) it is an ``untrack``
    :class:`~k3snet.model.ForwardBlock` too: an untracked packet's reply (or an
    untracked reply) is no established connection's, k3snet's accept of replies
    (``--ctstate RELATED,ESTABLISHED``) does not take it, and FORWARD drops it, unless
    FORWARD's own accepts take both ways by address (``accepted``, one way each:
    :func:`untracked_accepts`). ``routed``: as for :func:`foreign_blocks`.

    A rule leaving untracked only the packets of one protocol (``-p udp --dport 53 -j
    NOTRACK``, a DNS server's) makes no block: k3snet's rules serve every protocol, and
    the rest of the pods' traffic is tracked. Its blocks, as they would be, are added to
    ``partial`` (when given) for a warning of what they may meet
    (:func:`~k3snet.backends.untracked.partial_untracks`).
    """
    found: set[NetObject] = set()
    if dump is None:
        return found
    # k3snet writes no chain in these tables: a ``K3SNET-*`` chain there is an
    # administrator's, read as any other (``ours`` empty).
    for builtin in PATH_CHAINS.get(dump.name, ()):
        if builtin in dump.rules or builtin in dump.policies:
            found |= _ForwardWalk(dump, family, (), builtin=builtin,
                                  routed=routed).through()
    if dump.name == "raw":
        walk = _UntrackWalk(dump, family, (), forward=forward_drops, accepted=accepted)
        found |= walk.walk("PREROUTING", len(dump.chain("PREROUTING")))
        if partial is not None:
            partial.extend(sorted(walk.partial))
    return found


def forward_drops_untracked(dump: TableDump | None, *,
                            ours: Container[str] | None = None) -> bool:
    """Whether filter's FORWARD (``dump``) drops what k3snet's chain does not accept: its
    policy is not ``ACCEPT``, or a rule drops or rejects every packet reaching it
    (``-A FORWARD -j REJECT``, RHEL's default ruleset's last rule) before an ``ACCEPT``
    or ``RETURN`` of every packet, in FORWARD or in a chain FORWARD jumps or goes to for
    every packet, at any depth (ufw's and firewalld's own chains ending with a reject:
    ``-A FORWARD -j ADMIN``, ``-A ADMIN -j REJECT``). k3snet's jump is FORWARD's first
    rule: an untracked flow's packets (an untracked packet's reply is a new connection's,
    an untracked reply none's) fall through k3snet's accept of established connections
    to it. ``ours``: k3snet's own chains, not followed (default: every ``K3SNET-``
    chain; an administrator's chain named so is read when ``ours`` leaves it out)."""
    if dump is None:
        return False
    if dump.policies.get("FORWARD", "ACCEPT") != "ACCEPT":
        return True
    return _drops_every(dump, "FORWARD", ("FORWARD",), [0], ours) is True


def _drops_every(dump: TableDump, chain: str, on_way: tuple[str, ...],
                 read: list[int], ours: Container[str] | None = None) -> bool | None:
    """Whether the rules of ``chain`` (reached by the chains ``on_way``) drop or reject
    every packet reaching them (True), accept every one first (False), or send them back
    (None: to the rule after the jump here, or to FORWARD's policy). Bounded as the
    walks below (``read``: the rules read so far): past :data:`WALK_LIMIT` rules, a doubt
    counts against k3snet (True); k3snet's chains, loops and chains deeper than
    :data:`WALK_DEPTH` are not followed."""
    for spec in dump.chain(chain):
        read[0] += 1
        if read[0] > WALK_LIMIT:
            return True
        tokens = tokenize(spec)
        target = _target(tokens)
        if not _takes_all(tokens):
            continue  # some packets only: not a default of every untracked flow
        if target in _STOP:
            return True
        if target == "ACCEPT":
            return False
        if target == "RETURN":
            return None
        if (target is not None and target in dump.rules and not _ours(target, ours)
                and target not in on_way and len(on_way) <= WALK_DEPTH):
            below = _drops_every(dump, target, (*on_way, target), read, ours)
            if below is not None or _goes(tokens):
                return below  # a chain gone to ends as this one would
    return None


_ON, _END, _BACK, _DONE = "on", "end", "back", "done"
"""How packets leave a rule (to the next one; ``_DONE``: the table ends for them, ``_BACK``:
they go back as a ``RETURN`` sends them) or a chain (``_END``: some reach its end)."""


class _Walk:
    """A bounded, loop-safe walk down a built-in chain and the chains it jumps or goes
    to, in the kernel's order; a table's walk says what its verdicts do (the blocks
    they make, whether packets go on) and the blocks' text."""

    def __init__(self, dump: TableDump, family: int, ours: Container[str] | None) -> None:
        self.dump, self.family, self.ours = dump, family, ours
        self.found: set[NetObject] = set()
        self.read = 0

    def walk(self, builtin: str, before: int) -> set[NetObject]:
        """The blocks met in ``builtin``'s first ``before`` rules and below; what the walk
        stopped before reading counts against k3snet (:meth:`unread`)."""
        try:
            self.chain(builtin, self.dump.chain(builtin)[:before], (), leaves=True,
                       on_way=(builtin,))
        except _WalkStopped as stop:
            self.found.add(self.unread(f"-A {stop.chain} {format_line(stop.tokens)} (and what "
                                       f"follows: not read, {stop.why})"))
        return self.found

    def followed(self, target: str | None) -> bool:
        """A foreign chain to read (k3snet's own are not)."""
        if target is None or target not in self.dump.rules:
            return False
        return not target.startswith(PREFIX) if self.ours is None else target not in self.ours

    def count(self, chain: str, tokens: Line) -> None:
        """Count one rule read; past :data:`WALK_LIMIT`, stop the walk."""
        self.read += 1
        if self.read > WALK_LIMIT:
            raise _WalkStopped(chain, tokens, f"more than {WALK_LIMIT} rules on the way "
                                              "to k3snet's jump")

    def chain(self, chain: str, specs: list[str], outers: tuple[Line, ...], *, leaves: bool,
              on_way: tuple[str, ...]) -> str:
        """Read ``specs``, rules of ``chain``, in order: how the packets leave it.

        ``outers`` are the jumps that led here, ``leaves`` whether a ``RETURN`` in
        ``chain`` leaves the built-in chain the walk started from.
        """
        for spec in specs:
            left = self.rule(chain, tokenize(spec), outers, leaves=leaves, on_way=on_way)
            if left != _ON:
                return left
        return _END

    def rule(self, chain: str, tokens: Line, outers: tuple[Line, ...], *, leaves: bool,
             on_way: tuple[str, ...]) -> str:
        """Read one rule of ``chain`` (following its jump): how the packets leave it."""
        self.count(chain, tokens)
        target = _target(tokens)
        every = self.takes_all(tokens, outers)
        if target is None or target not in self.dump.rules:
            return self.verdict(chain, tokens, target, outers, leaves=leaves, every=every)
        if target in on_way or not self.followed(target):
            return _ON  # a loop in the text, or k3snet's own chain
        if len(on_way) > WALK_DEPTH:
            raise _WalkStopped(chain, tokens, f"chains more than {WALK_DEPTH} deep")
        gone_to = _goes(tokens)
        left = self.chain(target, self.dump.chain(target), (*outers, tokens),
                          leaves=leaves and gone_to, on_way=(*on_way, target))
        if gone_to and leaves and left == _END:  # as a RETURN here: out of the built-in
            self.block(chain, tokens, "RETURN", outers)
        if not every or (left != _DONE and not gone_to):
            return _ON  # a RETURN below a jump goes back to the rule after it
        return _DONE if left == _DONE else _BACK

    def takes_all(self, tokens: Line, outers: tuple[Line, ...]) -> bool:
        """Every packet of k3snet's reaching the rule ``tokens`` matches it."""
        return _takes_all(tokens)

    def verdict(self, chain: str, tokens: Line, target: str | None, outers: tuple[Line, ...],
                *, leaves: bool, every: bool) -> str:
        """What a rule that jumps to no chain does (the blocks it makes): how packets leave it."""
        raise NotImplementedError

    def block(self, chain: str, tokens: Line, target: str, outers: tuple[Line, ...]) -> None:
        """Add the block the rule ``tokens`` of ``chain`` makes as ``target``."""
        raise NotImplementedError

    def unread(self, text: str) -> NetObject:
        """The block of what the walk did not read (``text`` names where it stopped)."""
        raise NotImplementedError


class _ForwardWalk(_Walk):
    """One walk of :func:`foreign_blocks` down the FORWARD path, or of :func:`path_blocks`
    down ``builtin`` of another table (bounded, loop-safe)."""

    def __init__(self, dump: TableDump, family: int, ours: Container[str] | None, *,
                 builtin: str = "FORWARD", routed: RoutedBy | None = None) -> None:
        super().__init__(dump, family, ours)
        self.builtin = builtin
        self.routed = routed
        self.policy = dump.policies.get(builtin, "ACCEPT")
        self.where = f"iptables IPv{family} {dump.name}"

    def unread(self, text: str) -> NetObject:
        return ForwardBlock(self.family, "drop", text, self.where)

    def through(self) -> set[NetObject]:
        """The blocks met in the whole built-in chain, and its policy for the packets that
        may reach its end (a table k3snet has no jump in)."""
        try:
            left = self.chain(self.builtin, self.dump.chain(self.builtin), (), leaves=True,
                              on_way=(self.builtin,))
        except _WalkStopped as stop:
            self.found.add(self.unread(f"-A {stop.chain} {format_line(stop.tokens)} (and what "
                                       f"follows: not read, {stop.why})"))
            return self.found
        if left == _END and self.policy != "ACCEPT":
            self.found.add(ForwardBlock(self.family, "drop", f"-P {self.builtin} {self.policy}",
                                        self.where))
        return self.found

    def verdict(self, chain: str, tokens: Line, target: str | None, outers: tuple[Line, ...],
                *, leaves: bool, every: bool) -> str:
        if target == "RETURN":
            if leaves:  # to FORWARD's policy
                self.block(chain, tokens, target, outers)
            return _BACK if every else _ON
        if target in XT_TTL and ttl_expires(tokens[rule_verb(tokens)[1] + 2:]):
            # The packet goes on with a TTL of 1 or less: dropped by this node's
            # forwarding (PREROUTING) or by the next router (after it), both ways.
            self.block(chain, tokens, "DROP", outers)
            return _ON
        if target in ("DROP", "REJECT", "NFQUEUE", "QUEUE"):
            self.block(chain, tokens, target, outers)
        if target in ("ACCEPT", "DROP", "REJECT", "NFQUEUE", "QUEUE"):
            # A queued packet's verdict is a program's (an IPS): it never comes back here.
            return _DONE if every else _ON
        return _ON  # LOG, MARK ... or a target k3snet does not model: read as going on

    def block(self, chain: str, tokens: Line, target: str, outers: tuple[Line, ...]) -> None:
        if target != "RETURN" or self.policy != "ACCEPT":
            _block(self.found, self.family, chain, tokens, target, outers=outers,
                   where=self.where, routed=self.routed)


def _block(found: set[NetObject], family: int, chain: str, tokens: Line, target: str, *,
           outers: tuple[Line, ...] = (), where: str = "", verdict: str = "",
           routed: RoutedBy | None = None, accepted: tuple[ForwardRule, ...] = ()) -> None:
    """Add the block ``tokens`` makes (narrowed by the jumps ``outers`` that lead there, and
    for an out- or in-interface without a destination or source by what ``routed`` routes
    by it; ``verdict``: the block's, when not its target's; ``accepted``: its
    :attr:`~k3snet.model.ForwardBlock.accepted`)."""
    matches: dict[str, str | None] = {}
    for line in (*outers, tokens):  # the innermost match of each kind is the narrowest known
        matches.update({k: v for k, v in _addresses(line).items() if v is not None})
    if _excluded(matches, (*outers, tokens)):
        return  # a match the way there excludes (Docker's `! -o docker0`, then `-o docker0`)
    if _conditions(tokens) == ["-m", "conntrack", "--ctstate", "INVALID"] or (
            _conditions(tokens) == ["-m", "state", "--state", "INVALID"]):
        return  # kube-proxy's drop of invalid packets: valid traffic goes on
    if _reverse_path(tokens):
        return  # a pod's source is routed back the way it came in (see path_blocks)
    covers: dict[str, tuple[str | None, ...]] = {}
    for interface, address in (("out_interface", "destination"), ("in_interface", "source")):
        # A packet leaves by the device its destination is routed by, and comes in by the
        # one its source is (the reverse path, what rp_filter checks): this rule meets only
        # what the node routes by that device (Docker's bridge subnet, not the pods'), or
        # by the devices a negated match lets through (`-i cni0 ! -o eth0`: not what
        # leaves by the uplink: cni0's and docker0's prefixes, each a block).
        name = matches.get(interface)
        negated = [v for line in (*outers, tokens)
                   if (v := _addresses(line, negated=True).get(interface)) is not None]
        if routed is not None and (name is not None or negated) and (
                matches.get(address) is None):
            # (the destination's first: the source's fewer, at most MOST_PREFIXES pairs)
            most = MOST_PREFIXES // len(covers.get("destination", ("",)))
            cover = routed.cover(family, name, negated, most=most)
            if cover is not None:
                covers[address] = tuple(str(net) for net in cover)
    text = f"-A {chain} {format_line(tokens)}"
    where = where or f"iptables IPv{family} filter"
    verdict = verdict or _VERDICT[target]
    for source in covers.get("source", (matches.get("source"),)):
        for destination in covers.get("destination", (matches.get("destination"),)):
            fields = {**matches, "source": source, "destination": destination}
            try:
                found.add(ForwardBlock(family, verdict, text, where, **fields,
                                       accepted=accepted))
            except (K3snetError, ValueError):
                # A match k3snet cannot hold (another family, an odd interface): "any".
                found.add(ForwardBlock(family, verdict, text, where, accepted=accepted))


def _reverse_path(tokens: Line) -> bool:
    """The rule drops only what fails a reverse-path check (``-m rpfilter --invert``;
    its other matches narrow it further)."""
    conditions = _conditions(tokens)
    return any(conditions[i: i + 2] == ["-m", "rpfilter"] for i in range(len(conditions))) \
        and "--invert" in conditions


def _excluded(matches: dict[str, str | None], lines: tuple[Line, ...]) -> bool:
    """A negated match in ``lines`` (the jumps on the way and the rule) names the very
    value a positive one in ``matches`` requires, or no device passes their interface
    matches, positive and negated (``! -o eth+`` on the way to ``-o eth0``, or ``! -o
    +``: :func:`~k3snet.model.interfaces_left`): no packet reaches the rule."""
    if any(_holds(kind, value, matches.get(kind)) for line in lines
           for kind, value in _addresses(line, negated=True).items()):
        return True
    for kind in ("in_interface", "out_interface"):
        positives = [v for line in lines if (v := _addresses(line).get(kind)) is not None]
        negatives = [v for line in lines
                     if (v := _addresses(line, negated=True).get(kind)) is not None]
        if negatives and not interfaces_left(positives, negatives):
            return True
    return False


def _holds(kind: str, negated: str | None, positive: str | None) -> bool:
    """A negated match (``! -s 10.0.0.0/8``) leaves out every packet of the positive one
    of its kind (``-s 10.42.0.0/16``): the same interface, or an address inside it,
    compared as networks (``! -s 10.0.0.0/8`` holds ``10.42.0.0/16``), not as text."""
    if positive is None or negated is None:
        return False
    if kind in ("source", "destination"):
        try:
            outer, inner = parse_network(negated, strict=False), parse_network(positive,
                                                                               strict=False)
        except (K3snetError, ValueError):
            return negated == positive
        return outer.version == inner.version and contains(outer, inner)
    return negated == positive


def _addresses(tokens: Line, *, negated: bool = False) -> dict[str, str | None]:
    """The positive ``-s``/``-d``/``-i``/``-o`` of a rule (negated ones count as any);
    ``negated``: the negated ones instead."""
    names = {"-s": "source", "-d": "destination", "-i": "in_interface", "-o": "out_interface"}
    found: dict[str, str | None] = {}
    for index, token in enumerate(tokens[:-1]):
        if token in names and (index > 0 and tokens[index - 1] == "!") == negated and (
                index < 1 or tokens[index - 1] != "--comment"):
            # (a comment of one word is printed unquoted: `--comment -o` is no match)
            found[names[token]] = tokens[index + 1]
    return found


_NAT_ACTION = {"MASQUERADE": "masquerade", "SNAT": "snat", "RETURN": "exempt",
               "ACCEPT": "exempt"}
"""The :class:`NatBlock` action of a target; any other target that is not in
:data:`_GOES_ON` may translate (``NETMAP``, a target k3snet does not know): ``snat``
to an address k3snet does not model."""

WALK_LIMIT = 10_000
"""The most rules :func:`nat_blocks` and :func:`foreign_blocks` read on the way to
k3snet's jump (the usual path, flannel's, kube-proxy's, Calico's and Docker's, is a
few dozen)."""
WALK_DEPTH = 64
"""The deepest chain :func:`nat_blocks` and :func:`foreign_blocks` follow (the kernel
allows no loop, but text may)."""


def nat_blocks(dump: TableDump | None, family: int, before: int, *,
               ours: Container[str] | None = None) -> set[NetObject]:
    """Foreign rules met before POSTROUTING's rule number ``before`` (0-based: where
    k3snet's jump is or would go) that decide a connection's source NAT, as
    :class:`NatBlock`: any rule that may translate (``MASQUERADE``, ``SNAT``,
    ``NETMAP``, a target k3snet does not know: an ``snat`` to an address it does
    not model), and an exemption, a rule that ends the nat table for its packets
    (``RETURN`` or ``ACCEPT`` in POSTROUTING; ``ACCEPT`` anywhere below it, a
    ``RETURN`` in a chain gone to with ``-g`` whose return leaves POSTROUTING, and
    that ``-g`` itself, for what reaches the end of the chain): those packets
    leave untranslated and never meet k3snet's jump. A ``RETURN`` in a chain
    jumped to only goes back to the chain that jumped.

    Read at any depth: every chain jumped or gone to is followed (``ours``:
    k3snet's own chains, not followed; default: every ``K3SNET-`` chain), a
    chain already on the way is not followed again, and the walk stops after
    :data:`WALK_LIMIT` rules or :data:`WALK_DEPTH` chains: what it did
    not read counts against k3snet (an ``snat`` of any packet, naming the rule
    where it stopped). Rules after a ``RETURN``/``ACCEPT`` that every packet of
    k3snet's matches are not reached (kube-proxy's ``! --mark`` return: its
    masquerade only sees marked packets); after any other, they are (a doubt
    counts against k3snet). A rule that tests for a set packet or connection mark
    (``-m mark --mark``, not ``! --mark``), or is reached through one, is about
    another program's marked traffic (kube-proxy's 0x4000 "to masquerade", a
    proxy's marks), never k3snet's plain pod traffic, and makes no block.
    """
    if dump is None:
        return set()
    return _NatWalk(dump, family, ours).walk("POSTROUTING", before)


class _WalkStopped(Exception):  # noqa: N818 - a signal within the walks, never raised out
    def __init__(self, chain: str, tokens: Line, why: str) -> None:
        super().__init__(why)
        self.chain, self.tokens, self.why = chain, tokens, why


class _NatWalk(_Walk):
    """One walk of :func:`nat_blocks` down the POSTROUTING path (bounded, loop-safe)."""

    def unread(self, text: str) -> NetObject:
        return NatBlock(self.family, "snat", text, f"iptables IPv{self.family} nat")

    def takes_all(self, tokens: Line, outers: tuple[Line, ...]) -> bool:
        # POSTROUTING itself is read up to k3snet's jump whatever it meets.
        return bool(outers) and _takes_all(tokens)

    def verdict(self, chain: str, tokens: Line, target: str | None, outers: tuple[Line, ...],
                *, leaves: bool, every: bool) -> str:
        if target in ("RETURN", "ACCEPT"):
            if target == "ACCEPT" or leaves:  # out of POSTROUTING untranslated
                self.block(chain, tokens, target, outers)
            if not every:
                return _ON
            return _BACK if target == "RETURN" else _DONE
        if target is None or target in _GOES_ON:
            return _ON
        self.block(chain, tokens, target, outers)  # MASQUERADE, SNAT, NETMAP, unknown
        return _DONE if every else _ON

    def block(self, chain: str, tokens: Line, target: str, outers: tuple[Line, ...]) -> None:
        _nat_block(self.found, self.family, chain, tokens, target, outers=outers)


class _UntrackWalk(_Walk):
    """One walk of :func:`path_blocks` down raw PREROUTING for rules that leave packets
    untracked (bounded, loop-safe); ``forward``: each is a forward block too."""

    def __init__(self, dump: TableDump, family: int, ours: Container[str] | None, *,
                 forward: bool = False, accepted: Sequence[ForwardRule] = ()) -> None:
        super().__init__(dump, family, ours)
        self.forward = forward
        self.accepted = tuple(rule for rule in accepted if rule.family == family)
        self.partial: set[NetObject] = set()  # the blocks of a notrack of one protocol

    def unread(self, text: str) -> NetObject:
        return NatBlock(self.family, "exempt", text, f"iptables IPv{self.family} raw")

    def verdict(self, chain: str, tokens: Line, target: str | None, outers: tuple[Line, ...],
                *, leaves: bool, every: bool) -> str:
        if target == "NOTRACK" or (target == "CT" and "--notrack" in tokens):
            self.block(chain, tokens, target, outers)
            return _ON  # a packet goes on, untracked
        if target in ("ACCEPT", "DROP", "REJECT", "NFQUEUE", "QUEUE"):
            return _DONE if every else _ON
        if target == "RETURN":
            return _BACK if every else _ON
        return _ON

    def block(self, chain: str, tokens: Line, target: str, outers: tuple[Line, ...]) -> None:
        where = f"iptables IPv{self.family} raw"
        # One protocol's packets (-p udp --dport 53): the rest is tracked (path_blocks).
        rules = (*outers, tokens)
        protocol = next((p for p in map(_protocol, rules) if p is not None), None)
        found = (self.partial if partial_notrack(protocol, any(map(_port, rules)))
                 else self.found)
        _nat_block(found, self.family, chain, tokens, "RETURN", outers=outers, where=where)
        if self.forward and not (_marked(tokens) or any(map(_marked, outers))):
            _block(found, self.family, chain, tokens, target, outers=outers,
                   where=where, verdict="untrack", accepted=self.accepted)


def _protocol(tokens: Line) -> str | None:
    """The one protocol a rule's packets are of (``-p udp``; not ``! -p``, ``-p all``)."""
    conditions = _conditions(tokens)
    for index, word in enumerate(conditions[:-1]):
        if word in ("-p", "--protocol") and (index == 0 or conditions[index - 1] != "!"):
            name = conditions[index + 1].lower()
            return None if name in ("all", "0") else name
    return None


_PORT_OPTIONS = frozenset({"--dport", "--sport", "--destination-port", "--source-port",
                           "--dports", "--sports", "--destination-ports", "--source-ports",
                           "--ports"})


def _port(tokens: Line) -> bool:
    """Whether a rule tests a port (``--dport 53``, multiport's ``--dports``; not ``!
    --dport 53``, every port but one)."""
    conditions = _conditions(tokens)
    return any(word in _PORT_OPTIONS and (index == 0 or conditions[index - 1] != "!")
               for index, word in enumerate(conditions[:-1]))


def _marked(tokens: Line) -> bool:
    """The rule tests for a set packet or connection mark: a packet without a mark
    fails one of its mark tests (kube-proxy's ``--mark 0x4000/0x4000``; not
    ``--mark 0x0/0x4000``, which every unmarked packet passes)."""
    return _unmarked_passes(tokens) is False


def _unmarked_passes(tokens: Sequence[str]) -> bool | None:
    """Whether a packet whose packet and connection marks are 0 (k3snet's pod traffic)
    passes every ``--mark VALUE[/MASK]`` test of the rule (``None``: it has none, or
    one whose value does not read as a number and none it fails).

    The kernel's test (xt_mark, xt_connmark) is ``(mark & MASK) == VALUE``, negated
    by ``!``: with mark 0 it holds when VALUE is 0. ``None`` is a doubt, and counts
    against k3snet: such a rule is neither another program's marked traffic
    (:func:`_marked`) nor one that takes every packet of k3snet's (:func:`_takes_all`).
    """
    passes: bool | None = None
    unknown = False
    for index, word in enumerate(tokens[:-1]):
        if word != "--mark":
            continue
        negated = index > 0 and tokens[index - 1] == "!"
        try:
            value = int(tokens[index + 1].split("/", 1)[0], 0)
        except ValueError:
            unknown = True
            continue
        if (value == 0) == negated:
            return False
        passes = True
    return None if unknown else passes


def _nat_block(found: set[NetObject], family: int, chain: str, tokens: Line, target: str, *,
               outers: tuple[Line, ...] = (), where: str = "") -> None:
    """Add the block a NAT rule ``tokens`` makes (narrowed by the jumps ``outers``)."""
    if _marked(tokens) or any(map(_marked, outers)):
        return  # another program's marked traffic, not k3snet's pods' (see nat_blocks)
    matches: dict[str, str | None] = {}
    for line in (*outers, tokens):  # the innermost match of each kind is the narrowest known
        matches.update({k: v for k, v in _addresses(line).items() if v is not None})
    if _excluded(matches, (*outers, tokens)):
        return  # a match the way there excludes (`! -o eth1` to a chain's `-o eth1`)
    matches.pop("in_interface", None)  # not a match in POSTROUTING
    action = _NAT_ACTION.get(target, "snat")
    to_address = None
    if action == "snat" and "--to-source" in tokens[:-1]:
        to_address = tokens[tokens.index("--to-source") + 1]
    text = f"-A {chain} {format_line(tokens)}"
    where = where or f"iptables IPv{family} nat"
    for attempt in ({**matches, "to_address": to_address}, {"to_address": to_address}, {}):
        try:
            # A value k3snet cannot hold (a port range, another family): read as "any"
            # (or as an SNAT to an address k3snet does not model).
            found.add(NatBlock(family, action, text, where, **attempt))
            return
        except (K3snetError, ValueError):
            continue
