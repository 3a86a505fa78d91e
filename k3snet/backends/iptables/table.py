"""What k3snet knows of one (family, table): the snapshot, and the edits that change it.

A :class:`TableState` is read from ``iptables-save`` output (:func:`load_table`)
and then kept up to date by the backend as it applies edits (it knows what it
wrote, so one change among 10k never re-reads the table). :func:`plan_table`
turns a plan's changes into :class:`Op` edits restricted to the chains they
touch; the same ops drive ``iptables-restore`` input and libiptc calls.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import attrs

from k3snet._regex import lazy_pattern
from k3snet.backends.iptables.save import TableDump
from k3snet.model import Drift, NetObject
from k3snet.model.forward import ForwardBlock
from k3snet.model.nat import NatBlock
from k3snet.planner import Change
from k3snet.render.iptables.rules import (
    PREFIX,
    TAG,
    Hook,
    Line,
    Unit,
    bucket_order,
    bucket_table,
    comment_digest,
    format_line,
    hook_line,
    hook_position,
    is_bucket_chain,
    main_lines,
    normalize,
    parse_rule,
    rebuild_unit,
    remember,
    render_new,
    render_unit,
    tokenize,
)
from k3snet.render.tag import TAG_PREFIX

__all__ = ["DRIFT_KIND", "INJECTED_CHAIN", "Delta", "ForeignJump", "Op", "Sink", "TableEdit",
           "TableState", "commit_edit", "diff_table", "drift_where", "edit_conflicts",
           "foreign_reason", "has_tag", "hook_moves", "load_table", "own_chains", "plan_table",
           "refresh_hook", "restore_lines", "restore_text", "revert_ops", "set_aside"]

OpKind = Literal["declare", "delete", "append", "insert", "flush", "remove", "fail"]

INJECTED_CHAIN = "K3SNET-INJECTED-FAILURE"
"""A chain that never exists: appending to it is the invalid line ``fail_after`` injects."""


class Op(NamedTuple):
    """One edit of one chain (a named tuple: 10k of them are made for a full apply).

    ``append`` carries any number of ``lines``; ``delete`` and ``insert`` one.
    ``position`` (1-based) is where the rule is at that moment for ``delete``
    (libiptc deletes by number, ``iptables-restore`` by spec) and where it goes
    for ``insert``.
    """

    kind: OpKind
    chain: str
    lines: tuple[Line, ...] = ()
    position: int = 0
    rendered: bool = False
    """The lines come from :func:`render_unit` (no token needs quoting)."""
    by_number: bool = False
    """``delete`` by ``position``: the rule's text does not read back (see
    :func:`_hook_ops`)."""

    def restore_lines(self) -> list[str]:
        """The op as lines of ``iptables-restore`` input."""
        kind, chain = self.kind, self.chain
        if kind == "append":
            prefix = f"-A {chain} "
            if self.rendered:
                return [prefix + " ".join(line) for line in self.lines]
            return [prefix + format_line(line) for line in self.lines]
        if kind == "delete":
            if self.by_number:
                return [f"-D {chain} {self.position}"]
            return [f"-D {chain} {format_line(self.lines[0])}"]
        if kind == "insert":
            return [f"-I {chain} {self.position} {format_line(self.lines[0])}"]
        return [{"declare": f":{chain} - [0:0]", "flush": f"-F {chain}",
                 "remove": f"-X {chain}", "fail": f"-A {INJECTED_CHAIN} -j ACCEPT"}[kind]]


def restore_lines(ops: Sequence[Op]) -> list[str]:
    """The lines of ``iptables-restore`` input for ``ops`` (no table line, no ``COMMIT``)."""
    lines: list[str] = []
    for op in ops:
        lines += op.restore_lines()
    return lines


def restore_text(table: str, ops: Sequence[Op]) -> str:
    """``iptables-restore --noflush`` input for one table: all of it or nothing."""
    return "\n".join([f"*{table}", *restore_lines(ops), "COMMIT", ""])


def _jumps_to(line: Line, chain: str) -> bool:
    return len(line) >= 2 and line[-2] in ("-j", "-g") and line[-1] == chain


def _hooks_to(line: Line, chain: str) -> bool:
    """A jump of k3snet's to ``chain``: one carrying k3snet's comment (an admin's own
    jump, without it, is foreign: kept, never moved or deleted)."""
    return _jumps_to(line, chain) and has_tag(line)


def _jump_target(line: Line) -> str | None:
    """The chain a rule jumps or goes to (a chain target takes no options: it ends the rule)."""
    return line[-1] if len(line) >= 2 and line[-2] in ("-j", "-g") else None


def has_tag(line: Line) -> bool:
    """The rule carries k3snet's comment (``k3snet`` or ``k3snet:...``, well formed or not)."""
    for index, word in enumerate(line[:-1]):
        if word == "--comment":
            comment = line[index + 1]
            if comment == TAG or comment.startswith(TAG_PREFIX):
                return True
    return False


_SUB_CHAIN = lazy_pattern(r"K3SNET-M-[0-9a-f]{16}")
_DIGEST_TAG = lazy_pattern(r"k3snet:([0-9a-f]{16})")


def _written_line(name: str, line: Line, hook: Hook) -> bool:
    """``line`` is one k3snet writes in its chain ``name`` (``hook``'s table): what makes a
    chain of k3snet's name its own. Read, not the tag's shape alone: k3snet's main chain
    holds only its jumps to buckets of its table, commented ``k3snet``; a bucket's rules
    carry ``k3snet:`` and a digest whose first digit ends the bucket's name; an
    exclusion chain's, the digest its name ends with. An admin's rule commented
    ``k3snet`` (or ``k3snet:`` and any 16 digits) in a chain they named like one of
    k3snet's made it k3snet's: its rules drift, deleted by the next apply or destroy.
    (An admin's ``k3snet: their drop`` was never one, though :func:`has_tag` reads it
    as k3snet's tag.)"""
    if name == hook.main:
        target = _jump_target(line)
        return (target is not None and bucket_table(target) == hook.table
                and line == main_lines([target])[0])
    for index, word in enumerate(line[:-1]):
        if word == "--comment" and (match := _DIGEST_TAG.fullmatch(line[index + 1])):
            digest = match[1]
            return (name == f"K3SNET-M-{digest}" if _SUB_CHAIN.fullmatch(name)
                    else name.endswith(f"-{digest[0]}"))
    return False


def _k3snet_name(name: str, hook: Hook) -> bool:
    """A chain name k3snet writes in ``hook``'s table (main, bucket, exclusion chain).

    A bucket's name is k3snet's in its own table only: an empty ``K3SNET-F-7`` in nat
    (k3snet writes forward buckets in filter alone), unreferenced, was k3snet's chain in
    drift, deleted by the next apply.
    """
    return name == hook.main or bucket_table(name) == hook.table or (
        hook.table == "nat" and _SUB_CHAIN.fullmatch(name) is not None)


class ForeignJump(NamedTuple):
    """A rule that is not k3snet's jumping to one of k3snet's chains (kept as it is)."""

    chain: str
    """The chain the rule is in."""
    line: Line
    target: str


@attrs.define
class TableState:
    """Our chains in one table of one family, as last read or written."""

    family: int
    hook: Hook
    hook_rules: list[Line]
    """Every rule of the built-in chain (foreign ones too): positions of our jump."""
    chains: dict[str, list[Line]]
    """Each ``K3SNET-*`` chain and its rules, in kernel order."""
    units: dict[str, Unit] = attrs.field(factory=dict)
    """Valid units (their rules match their hash) by hash, active or not."""
    by_chain: dict[str, set[str]] = attrs.field(factory=dict)
    owned: dict[tuple[Any, ...], NetObject] = attrs.field(factory=dict)
    """Objects whose rules are valid *and* reached (hook, main chain order), and one
    :class:`~k3snet.model.Drift` per finding (see :attr:`findings`)."""
    inactive: set[str] = attrs.field(factory=set)
    aside: set[str] = attrs.field(factory=set)
    """The owned units :func:`set_aside` found met first by a foreign rule that decides some
    of their packets otherwise (owned all the same: the plan deletes one the spec no
    longer wants, and notes the conflict of one it wants, leaving it in place). Read only
    by observe's judging of the table just loaded (a rule set aside takes no untracked
    flow); an edit does not keep it up (:func:`commit_edit`): observe reads again after
    an apply."""
    dirty: set[str] = attrs.field(factory=set)
    """Chains holding rules that match no valid unit, or that should not exist."""
    findings: list[tuple[str, str]] = attrs.field(factory=list)
    """(chain, what): everything in our chains that is not what k3snet renders."""
    foreign_chains: dict[str, list[Line]] = attrs.field(factory=dict)
    """``K3SNET-*`` chains that are not k3snet's (see :func:`load_table`): never written."""
    foreign_jumps: list[ForeignJump] = attrs.field(factory=list)
    """Rules that are not k3snet's jumping to ``K3SNET-*`` chains (k3snet's or not):
    never touched, and a chain of k3snet's they jump to is never deleted
    (:func:`edit_conflicts`)."""
    hidden: str | None = None
    """What iptables-nft-save left out of the table (:attr:`TableDump.hidden`):
    ``"table"`` (nothing of it was read: k3snet does not write it) or ``"base chains"``."""
    earlier: set[str] = attrs.field(factory=set)
    """Bucket chains holding a forward rule as an earlier release wrote it (its reply
    accept; all accepts): k3snet's, in use and jumped to, rewritten by the next edit."""
    stray_jumps: list[Line] = attrs.field(factory=list)
    """Rules of the built-in chain carrying k3snet's tag that jump to a chain not
    named ``K3SNET-*`` (k3snet's own renamed with ``iptables -E``, or a copy): not
    k3snet's to read or delete, but still run (:attr:`IptablesBackend.warnings`)."""

    @property
    def table(self) -> str:
        """``nat`` or ``filter``."""
        return self.hook.table

    @property
    def drift(self) -> list[str]:
        """The findings as ``CHAIN: what`` lines."""
        return [f"{chain}: {what}" for chain, what in self.findings]

    def hook_jumps(self) -> list[int]:
        """Positions of k3snet's jumps (tagged) from the built-in chain to our main chain
        (none while a chain of that name is not k3snet's: :attr:`foreign_chains`)."""
        if self.hook.main in self.foreign_chains:
            return []
        return [i for i, r in enumerate(self.hook_rules) if _hooks_to(r, self.hook.main)]

    def hook_ok(self) -> bool:
        """Exactly one jump, as we write it (wherever it is: k3snet never moves it)."""
        jumps = self.hook_jumps()
        return len(jumps) == 1 and self.hook_rules[jumps[0]] == hook_line(self.hook)

    def hook_reaches(self) -> bool:
        """Traffic gets to our main chain: a jump as we write it."""
        return (self.hook.main not in self.foreign_chains
                and hook_line(self.hook) in self.hook_rules)

    def hook_index(self) -> int:
        """Where our jump is (its first copy, where a repair puts it back), or where a
        new one would go (0-based).

        The foreign rules before it are those that decide first
        (:func:`~k3snet.backends.iptables.foreign.foreign_blocks`).
        """
        jumps = self.hook_jumps()
        return jumps[0] if jumps else hook_position(self.hook_rules)


def refresh_hook(state: TableState, dump: TableDump | None) -> None:
    """Take the built-in chain's rules from ``dump`` (a fresh read of the table).

    The jump k3snet creates goes in by position (``-I FORWARD N``), counted on
    these rules: read when the plan was made, they may be stale by the time the
    apply commits (another program's rules inserted or deleted meanwhile), and a
    stale position puts the jump above a foreign rule or behind a final DROP.
    Only the positions are refreshed; what the plan was checked against stays.
    """
    read = _read6 if state.family == 6 else tokenize
    state.hook_rules = [read(s) for s in (dump.chain(state.hook.builtin) if dump else ())]


DRIFT_KIND: Mapping[str, str] = {"nat": "nat", "filter": "forward"}
"""The kind of the drift found in each table (the kind whose backend repairs it)."""
DRIFT_BACKEND = "iptables"


def drift_where(drift: Drift) -> tuple[int, str] | None:
    """(family, table) of a drift object this backend reported (``None``: not one of ours)."""
    if drift.backend != DRIFT_BACKEND:
        return None
    words = drift.where.split(" ", 2)
    if len(words) < 2 or words[0] not in ("IPv4", "IPv6") or DRIFT_KIND.get(words[1]) != drift.kind:
        return None
    return int(words[0][3]), words[1]


def _drift_objects(state: TableState) -> list[Drift]:
    """One :class:`Drift` per distinct finding (a finding seen n times says so)."""
    counts = Counter(state.findings)
    objects = []
    for (chain, what), count in counts.items():
        text = what if count == 1 else f"{what} ({count} times)"
        objects.append(Drift.of(DRIFT_KIND[state.table], backend=DRIFT_BACKEND,
                                where=f"IPv{state.family} {state.table} {chain}", what=text))
    return objects


def load_table(family: int, hook: Hook, dump: TableDump | None) -> TableState:
    """Read our chains out of one table of ``iptables-save`` output.

    Every rule of k3snet's is rebuilt into its object and checked against its tag
    and its place; whatever is not exactly what k3snet renders is a finding, and
    each finding is an owned :class:`~k3snet.model.Drift` object, so that every
    plan deletes it and the apply of that delete rewrites what is wrong.
    """
    rules = dump.rules if dump is not None else {}
    # Only ip6tables-save prints addresses another way than k3snet renders them.
    read = _read6 if family == 6 else tokenize
    chains = {name: [read(s) for s in specs]
              for name, specs in rules.items() if name.startswith(PREFIX)}
    foreign, jumps = _foreign_chains(hook, rules, chains, read)
    state = TableState(
        family=family,
        hook=hook,
        hook_rules=[read(s) for s in rules.get(hook.builtin, ())],
        chains={name: lines for name, lines in chains.items() if name not in foreign},
        foreign_chains={name: chains[name] for name in sorted(foreign)},
        foreign_jumps=jumps,
        hidden=dump.hidden if dump is not None else None,
    )
    state.stray_jumps = [line for line in state.hook_rules if has_tag(line)
                         and (target := _jump_target(line)) in rules
                         and not target.startswith(PREFIX)]
    _find_units(state)
    _find_strays(state)
    _find_owned(state)
    for drift in _drift_objects(state):
        state.owned[drift.key] = drift
    return state


def foreign_reason(state: TableState, chain: str) -> str:
    """Why ``chain``, one of :attr:`TableState.foreign_chains`, is not k3snet's."""
    if not _k3snet_name(chain, state.hook):
        return "k3snet writes no chain of that name"
    return "no rule in it is one k3snet writes there"


def own_chains(hook: Hook, dump: TableDump | None) -> set[str]:
    """The names of k3snet's own chains in one table, as :func:`load_table` tells them
    from an admin's ``K3SNET-*`` chains (see :func:`_foreign_chains`), without reading
    their rules into objects."""
    rules = dump.rules if dump is not None else {}
    # Tags, names and jump targets decide: the address forms ip6tables-save prints do not.
    # Read up to a chain's first tagged rule only (a 10k-rule chain: its first).
    chains = {name: map(tokenize, specs) for name, specs in rules.items()
              if name.startswith(PREFIX)}
    foreign, _ = _foreign_chains(hook, rules, chains, tokenize)
    return set(chains) - foreign


def _read6(text: str) -> Line:
    return normalize(tokenize(text))


def _foreign_chains(
    hook: Hook, rules: Mapping[str, Sequence[str]], chains: Mapping[str, Iterable[Line]],
    read: Callable[[str], Line],
) -> tuple[set[str], list[ForeignJump]]:
    """The ``K3SNET-*`` chains that are not k3snet's, and the foreign jumps into k3snet's.

    A chain is k3snet's when it has a name k3snet writes and one of its rules is one
    k3snet writes there (:func:`_written_line`), or it is empty and no rule
    that is not k3snet's jumps to it. Anything else (an administrator's ``iptables -N
    K3SNET-MINE``, even with a rule commented ``k3snet: extra egress``, which has k3snet's
    tag; a chain of theirs that took a name k3snet writes, rules in it and none tagged
    so: every rule k3snet writes carries its tag) is theirs. A rule outside k3snet's chains that
    jumps to one of them is foreign, except k3snet's own jump from the built-in chain
    it hooks; a jump carrying k3snet's tag to a main chain that is not k3snet's is
    foreign too (an administrator's ``K3SNET-FORWARD`` hooked with k3snet's comment:
    a destroy read it as k3snet's main chain in drift and deleted it, their rules
    with it). Each chain's lines in ``chains`` are read once, up to the first tagged
    one.
    """
    if not chains:
        return set(), []
    tagged = {name for name, lines in chains.items()
              if any(_written_line(name, line, hook) for line in lines)}
    foreign = {name for name in chains if not _k3snet_name(name, hook)
               or (name not in tagged and rules.get(name))}
    while True:  # a chain found foreign makes the jumps in it foreign: to a fixed point
        jumps = _jumps_into(hook, rules, chains, foreign, read)
        more = {jump.target for jump in jumps} - tagged - foreign
        if not more:
            return foreign, jumps
        foreign |= more


def _jumps_into(
    hook: Hook, rules: Mapping[str, Sequence[str]], chains: Mapping[str, Iterable[Line]],
    foreign: set[str], read: Callable[[str], Line],
) -> list[ForeignJump]:
    """Rules outside k3snet's chains that jump to a ``K3SNET-*`` chain (but k3snet's hook)."""
    jumps = []
    # Plain loops: a kube-proxy nat table holds thousands of small foreign chains.
    for name, specs in rules.items():
        if name in chains and name not in foreign:
            continue  # one of k3snet's
        for spec in specs:
            if PREFIX not in spec:
                continue
            line = read(spec)
            target = _jump_target(line)
            if target is None or target not in chains:
                continue
            if name == hook.builtin and _hooks_to(line, hook.main) and hook.main not in foreign:
                continue  # k3snet's hook (drift if not exactly as k3snet writes it)
            jumps.append(ForeignJump(name, line, target))
    return jumps


def _find_units(state: TableState) -> None:
    findings = state.findings
    for name, lines in state.chains.items():
        if not is_bucket_chain(name):
            continue
        groups: dict[str, list[Line]] = {}
        for line in lines:
            digest = comment_digest(line)
            if digest is None:
                state.dirty.add(name)
                findings.append((name, f"a rule without a k3snet tag: {format_line(line)}"))
            else:
                groups.setdefault(digest, []).append(line)
        for digest, group in groups.items():
            unit = None
            distinct = group if len(group) == 1 else list(dict.fromkeys(group))
            if digest not in state.units:
                unit = rebuild_unit(state.family, digest, name, distinct, state.chains)
            if unit is None:
                state.dirty.add(name)
                earlier = _earlier_reply(state, digest, name, distinct)
                if earlier is not None:
                    state.earlier.add(name)
                findings.append((name, earlier or _not_written(digest)))
                continue
            if len(distinct) < len(group):  # two writers, or the same rule loaded twice
                state.dirty.add(name)
                findings.append((name, f"the rules of {unit.obj.describe()} are there "
                                       f"{len(group) // len(distinct)} times"))
            state.units[digest] = unit
            state.by_chain.setdefault(name, set()).add(digest)


def _not_written(digest: str) -> str:
    """What tagged lines k3snet does not render are, but a forward rule as an earlier
    release wrote it (:func:`_earlier_reply`, the upgrade's one drift): edited."""
    return (f"rules tagged k3snet:{digest} that k3snet did not write (edited, forged, or in "
            "the wrong chain)")


def _earlier_reply(state: TableState, digest: str, chain: str,
                   lines: Sequence[Line]) -> str | None:
    """Why ``lines`` are a forward rule's accept and its reply accept as an earlier
    release wrote it (matching the destination as the source, ``-s DEST -d PODS``, or
    taking every connection's packets towards the pods, no ``--ctdir REPLY``), or
    ``None``: the reply line, its ``-s`` (the accept's ``-d``, as
    that release wrote it: another source is an edit) taken off and ``--ctdir REPLY``
    put after its ``--ctstate``, is today's."""
    if len(lines) != 2 or "--ctstate" not in lines[1][:-1]:
        return None
    first, reply = list(lines[0]), list(lines[1])
    destination = first[first.index("-d") + 1] if "-d" in first[:-1] else None
    every_direction = "--ctdir" not in reply  # (the release matching -s had no --ctdir)
    by_source = (every_direction and len(reply) > 2 and reply[0] == "-s"
                 and reply[1] == destination)
    if by_source:
        reply = reply[2:]
    if every_direction:
        at = reply.index("--ctstate") + 2
        reply[at:at] = ["--ctdir", "REPLY"]
    if not (by_source or every_direction) or rebuild_unit(
            state.family, digest, chain, [lines[0], tuple(reply)], state.chains) is None:
        return None
    if by_source:
        return ("a forward rule's reply accept as an earlier k3snet release wrote it "
                f"({format_line(lines[1])}): a router's ICMP error for the pods' flow (a "
                "Packet Too Big) does not come from the destination, and a FORWARD policy "
                "DROP took it; rewritten")
    return ("a forward rule's reply accept as an earlier k3snet release wrote it "
            f"({format_line(lines[1])}): without --ctdir REPLY it accepted every later "
            "packet of a connection from outside to the pods too, which the FORWARD rules "
            "after k3snet's are there to judge; rewritten")


def _find_strays(state: TableState) -> None:
    subs = {u.sub_chain for u in state.units.values() if u.sub_chain is not None}
    for name in state.chains:
        if (name == state.hook.main or name in subs or state.by_chain.get(name)
                or name in state.earlier):
            continue
        state.dirty.add(name)
        state.findings.append((name, "a chain of k3snet's that no rule of k3snet uses"))


def _find_owned(state: TableState) -> None:
    """Valid units are owned only when traffic reaches them: hook ok, main chain in order."""
    hook, findings = state.hook, state.findings
    main = state.chains.get(hook.main, [])
    in_use = {*state.by_chain, *state.earlier}
    expected = main_lines(in_use)
    if main != expected:
        findings.append((hook.main, "jumps missing, extra, twice or out of order"))
    reached: set[str] = set()
    last: tuple[int, ...] | None = None
    for line in main:  # the longest good prefix: anything odd may stop the rest
        target = line[-1] if len(line) >= 2 and line[-2] == "-j" else ""
        order = bucket_order(target)
        if target in reached and line == main_lines([target])[0]:
            continue  # a jump twice: the second one matches nothing more
        if (order is None or not (state.by_chain.get(target) or target in state.earlier)
                or line != main_lines([target])[0] or (last is not None and order <= last)):
            break
        reached.add(target)
        last = order
    jumps = state.hook_jumps()
    if state.units or main or jumps:
        _hook_findings(state, jumps)
    if not state.hook_reaches():
        reached = set()
    for digest in sorted(state.units):
        unit = state.units[digest]
        if unit.chain in reached and unit.obj.key not in state.owned:
            state.owned[unit.obj.key] = unit.obj
        else:
            state.inactive.add(digest)
            if unit.chain in reached:  # another unit holds the slot
                findings.append((unit.chain, f"a second rule for {unit.obj.describe()}"))


def _hook_findings(state: TableState, jumps: list[int]) -> None:
    hook, findings = state.hook, state.findings
    if not state.units and not state.earlier:
        findings.append((hook.main, "k3snet's main chain, with no rule of k3snet behind it"))
        return
    if not jumps:
        findings.append((hook.builtin, f"no jump to {hook.main}: no rule of k3snet is reached"))
        return
    if len(jumps) > 1:
        findings.append((hook.builtin, f"{len(jumps)} jumps to {hook.main} (k3snet writes one)"))
    for index in jumps:
        if state.hook_rules[index] != hook_line(hook):
            findings.append((hook.builtin, f"a jump to {hook.main} with k3snet's comment that "
                                           "k3snet did not write: "
                                           f"{format_line(state.hook_rules[index])}"))


def edit_conflicts(state: TableState, edit: TableEdit
                   ) -> list[tuple[str, ForeignJump | None]]:
    """What ``edit`` would do to something that is not k3snet's: (chain, jump) pairs.

    A chain of k3snet's the edit removes while a foreign rule jumps to it (the
    kernel refuses with EBUSY, iptables-nft only at commit time: the jump is
    named), and a foreign ``K3SNET-*`` chain the edit would write (its first
    foreign jump, or ``None``). Empty when the edit touches only k3snet's own.
    """
    if not state.foreign_jumps and not state.foreign_chains:
        return []
    found: list[tuple[str, ForeignJump | None]] = []
    for chain, lines in sorted(edit.chains.items()):
        jumps = [jump for jump in state.foreign_jumps if jump.target == chain]
        if chain in state.foreign_chains:
            found.append((chain, jumps[0] if jumps else None))
        elif lines is None and chain in state.chains:
            found += [(chain, jump) for jump in jumps]
    return found


def set_aside(state: TableState, blocks: Iterable[NetObject]) -> None:
    """Mark (:attr:`TableState.aside`) the rules a foreign rule met first may decide
    otherwise.

    ``blocks`` are :class:`~k3snet.model.ForwardBlock` (filter) or
    :class:`~k3snet.model.NatBlock` (nat) objects; an owned object conflicts with
    one when that rule decides some of its packets otherwise. They stay owned, as
    the nftables backend's rules in place do: the planner notes the conflict of one
    the spec still wants and leaves it in place
    (:meth:`~k3snet.planner._ForeignIndex.defeated`), and deletes one it no longer
    wants. (Left out of ``owned``, such a rule was never deleted: ``destroy`` said
    "No changes" and left it, its chains and the hook jump.)
    """
    judges = [b for b in blocks if isinstance(b, ForwardBlock | NatBlock)]
    if not judges:
        return
    for digest, unit in state.units.items():
        obj = unit.obj
        if (state.owned.get(obj.key) == obj
                and any(obj.conflicts_with(block) for block in judges)):
            state.aside.add(digest)


# -- edits --------------------------------------------------------------------------


@attrs.frozen
class TableEdit:
    """The ops that apply some changes to one table, and the table afterwards."""

    ops: tuple[Op, ...]
    chains: dict[str, list[Line] | None]
    """Every chain the ops touch, as it will be (``None``: removed)."""
    old_chains: dict[str, list[Line] | None]
    """The same chains as they were (for a rollback)."""
    hook_rules: list[Line]
    old_hook_rules: list[Line]
    removed: frozenset[str]
    added: Mapping[str, Unit]


Sink = Callable[[list[str]], None]
"""Takes lines of ``iptables-restore`` input (no newlines), in order."""

_STREAM_CHUNK = 512
"""Lines handed to the sink at a time: big enough for few pipe writes, small enough
that the restore process starts parsing early."""


def plan_table(
    state: TableState, changes: Iterable[Change], sink: Sink | None = None
) -> TableEdit:
    """The edits that apply ``changes`` (all of this table) and clean what they touch.

    With a ``sink``, the rules of each new object that only needs appending are
    handed to it as ``iptables-restore`` lines as soon as they are rendered, while
    the next ones are: the restore process parses them meanwhile. The returned
    ops are then only the rest, to be sent after them; ``chains`` is still the
    whole result. (Rules are streamed when they go to a bucket chain that is
    clean, i.e. not rewritten by this edit, declared first if new, for an object
    not there already and without an exclusion chain, whose jump needs that chain
    declared first. Their order in the bucket chain is then the plan's: bucket
    chains are order-free.)
    """
    removed: set[str] = set()
    added: dict[str, Unit] = {}
    real = state
    if sink is None:
        _render(changes, removed, added)
        fresh: Mapping[str, Unit] = added
        streamed: dict[str, tuple[list[Line], list[str]]] = {}
    else:
        fresh, streamed = _render_streaming(state, changes, sink, removed, added)
        if streamed:
            state = _with_streamed(state, streamed, added, fresh)
    # Valid rules that traffic does not reach were left out of observe(); the plan
    # re-adds those it wants, the others go. (Those a foreign rule meets first, set
    # aside, are owned: they stay unless a change of the plan deletes or replaces them.)
    removed |= state.inactive
    removed -= set(added)

    target, sizes = _bucket_targets(state, removed, fresh, set(streamed))
    for chain in state.dirty:
        target.setdefault(chain, None)
    for digest in removed:
        old = state.units.get(digest)
        if old is not None and old.sub_chain is not None:
            target[old.sub_chain] = None
    for unit in fresh.values():
        if unit.sub_chain is not None:
            target[unit.sub_chain] = list(unit.sub_lines)
    buckets = [c for c, size in sizes.items() if size]
    target[state.hook.main] = main_lines(buckets) if buckets else None
    if not buckets:  # nothing left: every chain of ours goes
        for chain in state.chains:
            target.setdefault(chain, None)
    ops, chains, hook_rules = diff_table(state, target, want_jump=bool(buckets))
    return TableEdit(
        ops=tuple(ops),
        chains=chains,
        old_chains={c: real.chains.get(c) for c in chains},
        hook_rules=hook_rules,
        old_hook_rules=list(real.hook_rules),
        removed=frozenset(removed),
        added=added,
    )


def _render(changes: Iterable[Change], removed: set[str], added: dict[str, Unit]) -> None:
    """Render every change: the hashes to remove, the units to add."""
    for change in changes:
        if change.before is not None and not isinstance(change.before, Drift):
            removed.add(render_unit(change.before).digest)
        if change.after is not None:
            rendered = render_new(change.after)
            added[rendered.digest] = rendered
    remember(added)


def _render_streaming(
    state: TableState, changes: Iterable[Change], sink: Sink, removed: set[str],
    added: dict[str, Unit],
) -> tuple[dict[str, Unit], dict[str, tuple[list[Line], list[str]]]]:
    """Render every change, streaming what can be (see :func:`plan_table`).

    Fills ``removed`` and ``added``; returns the added units not streamed, and for
    each chain streamed to, its new lines and their units' hashes.
    """
    # The loop of a 10k-rule apply: kept lean (locals, no calls but the render).
    fresh: dict[str, Unit] = {}
    streamed: dict[str, tuple[list[Line], list[str]]] = {}
    out: list[str] = []
    append = out.append
    join = " ".join
    dirty, units, existing = state.dirty, state.units, state.chains
    chunk = _STREAM_CHUNK
    for change in changes:
        before, after = change.before, change.after
        if before is not None and not isinstance(before, Drift):  # a drift's repair: below
            removed.add(render_unit(before).digest)
        if after is None:
            continue
        unit = render_new(after)
        _, digest, chain, lines, sub_chain, _ = unit
        if added.setdefault(digest, unit) is not unit:  # there already (one dict lookup)
            continue
        if sub_chain is not None or chain in dirty or digest in units:
            fresh[digest] = unit
            continue
        entry = streamed.get(chain)
        if entry is None:
            entry = streamed[chain] = ([], [])
            if chain not in existing:
                append(f":{chain} - [0:0]")
        entry[0].extend(lines)
        entry[1].append(digest)
        for line in lines:
            append(f"-A {chain} {join(line)}")  # rendered: nothing to quote
        if len(out) >= chunk:
            sink(out)
            out = []
            append = out.append
    if out:
        sink(out)
    remember(added)
    return fresh, streamed


def _with_streamed(state: TableState, streamed: Mapping[str, tuple[list[Line], list[str]]],
                   added: Mapping[str, Unit], fresh: Mapping[str, Unit]) -> TableState:
    """``state`` as it is once the streamed rules are in (``state`` itself is unchanged)."""
    chains = dict(state.chains)
    by_chain = dict(state.by_chain)
    for chain, (lines, digests) in streamed.items():
        chains[chain] = [*state.chains.get(chain, ()), *lines]
        by_chain[chain] = state.by_chain.get(chain, set()).union(digests)
    units = dict(state.units)
    units.update(added if not fresh else
                 {digest: unit for digest, unit in added.items() if digest not in fresh})
    return attrs.evolve(state, chains=chains, units=units, by_chain=by_chain)


def _bucket_targets(
    state: TableState, removed: set[str], added: Mapping[str, Unit], touched: set[str]
) -> tuple[dict[str, list[Line] | Delta | None], dict[str, int]]:
    """What each bucket chain touched becomes, and how many units every bucket holds.

    ``added`` are the units to add that ``state`` does not hold yet; ``touched``
    chains already got theirs (streamed).
    """

    def lines(digests: Iterable[str]) -> list[Line]:
        return [ln for d in sorted(digests)
                for ln in (added[d] if d in added else state.units[d]).lines]

    affected = {state.units[d].chain for d in removed if d in state.units}
    affected |= {u.chain for u in added.values()}
    affected |= touched
    affected |= {c for c in state.dirty if is_bucket_chain(c)}
    incoming: dict[str, set[str]] = {}
    for digest, unit in added.items():
        incoming.setdefault(unit.chain, set()).add(digest)
    sizes = {c: len(ds) for c, ds in state.by_chain.items()}
    target: dict[str, list[Line] | Delta | None] = {}
    for chain in sorted(affected):
        present = state.by_chain.get(chain, set())
        leaving = present & removed
        arriving = incoming.get(chain, set()) - present
        sizes[chain] = len(present) - len(leaving) + len(arriving)
        if chain in state.chains and chain not in state.dirty and sizes[chain]:
            # The usual case: remove and add just these rules, whatever else is there.
            target[chain] = Delta(tuple(lines(leaving)), tuple(lines(arriving)))
        else:
            target[chain] = lines((present - removed) | incoming.get(chain, set())) or None
    return target, sizes


@attrs.frozen
class Delta:
    """Rules to remove from and add to an order-free chain, leaving the others alone."""

    drop: tuple[Line, ...]
    add: tuple[Line, ...]


def diff_table(
    state: TableState,
    target: Mapping[str, list[Line] | Delta | None],
    *,
    want_jump: bool,
) -> tuple[list[Op], dict[str, list[Line] | None], list[Line]]:
    """Ops turning ``state``'s chains into ``target`` (only the chains named there).

    A chain's target is its whole content, ``None`` (remove it) or a :class:`Delta`.
    """
    declares: list[Op] = []
    deletes: list[Op] = []
    appends: list[Op] = []
    flushes: list[Op] = []
    removes: list[Op] = []
    result: dict[str, list[Line] | None] = {}
    for chain in sorted(target):
        want = target[chain]
        have = state.chains.get(chain)
        if isinstance(want, Delta) and have is not None:
            result[chain] = _apply_delta(chain, have, want, declares=declares,
                                         deletes=deletes, appends=appends)
            continue
        if isinstance(want, Delta):  # the chain is gone: nothing to keep
            want = list(want.add)
        if want is None:
            if have is not None:
                flushes.append(Op("flush", chain))
                removes.append(Op("remove", chain))
            result[chain] = None
            continue
        if have is None:
            declares.append(Op("declare", chain))
            appends.append(Op("append", chain, tuple(want), rendered=True))
            result[chain] = list(want)
            continue
        if is_bucket_chain(chain):
            drop = Counter(have) - Counter(want)
            extra = Counter(want) - Counter(have)
            # A rule is named by its text (-D) only when that text reads back as the
            # rule: iptables-save quotes comments only, so another match's value
            # (`--hashlimit-name a b`) or a comment holding a newline would not, and
            # the -D was refused on every apply. Such a chain is rewritten instead,
            # and so is one losing more than a few rules (see _DELETES_BY_TEXT).
            dropped = sum(drop.values())
            if (dropped <= min(len(want), _DELETES_BY_TEXT)
                    and _nameable(state, chain, drop)):
                keep = [True] * len(have)
                for index in range(len(have) - 1, -1, -1):  # from the end: positions hold
                    if drop[have[index]] > 0:
                        drop[have[index]] -= 1
                        keep[index] = False
                        deletes.append(Op("delete", chain, (have[index],), index + 1))
                new_lines = [line for line in want if extra[line] > 0 and _take(extra, line)]
                if new_lines:
                    appends.append(Op("append", chain, tuple(new_lines), rendered=True))
                result[chain] = [ln for ln, k in zip(have, keep, strict=True) if k] + new_lines
                continue
        elif have == want:
            result[chain] = list(have)
            continue
        # Rewrite: with --noflush, declaring an existing chain flushes only that chain.
        declares.append(Op("declare", chain))
        appends.append(Op("append", chain, tuple(want), rendered=True))
        result[chain] = list(want)
    main = state.hook.main
    hook_ops, hook_rules = _hook_ops(state, want_jump, result.get(main, state.chains.get(main)))
    ops = [*declares, *deletes, *appends, *hook_ops, *flushes, *removes]
    return ops, result, hook_rules


_DELETES_BY_TEXT = 16
"""The most rules of a bucket chain deleted by their text (``-D CHAIN RULE``) in one
edit; one losing more is written again. iptables-nft-restore looks for each such rule through
the whole chain: deleting 10 000 earlier reply accepts one by one took 31 s (5 000:
6.1 s), the restore run's timeout is 30 s, and writing their 16 chains again takes ~1 s
(docs/performance.md, "Upgrading many reply accepts")."""


def _nameable(state: TableState, chain: str, lines: Iterable[Line]) -> bool:
    """Every one of ``lines``, rules of ``chain`` as read, can be deleted by its text
    (``-D``): a rule of a valid unit of the chain (k3snet's own text), or one made only
    of the matches k3snet reads (:func:`~k3snet.render.iptables.rules.parse_rule`),
    whose values need no quoting but a comment's, and no comment holding a newline."""
    ours = {line for digest in state.by_chain.get(chain, ())
            for line in state.units[digest].lines}
    return all(line in ours or _writable(line) for line in lines)


def _apply_delta(chain: str, have: list[Line], delta: Delta, *, declares: list[Op],
                 deletes: list[Op], appends: list[Op]) -> list[Line]:
    """Delete ops (from the end, so positions hold) and one append; the chain after them.
    More than :data:`_DELETES_BY_TEXT` deletes: the chain written again instead (its
    rules, all of valid units, are k3snet's own text)."""
    if not delta.drop:  # only additions (a big apply): no need to look at every rule
        if delta.add:
            appends.append(Op("append", chain, delta.add, rendered=True))
        return [*have, *delta.add]
    where: dict[Line, list[int]] = {}
    wanted = set(delta.drop)
    for index, line in enumerate(have):
        if line in wanted:
            where.setdefault(line, []).append(index)
    gone: list[int] = []
    for line in delta.drop:
        indices = where.get(line)
        if indices:
            gone.append(indices.pop(0))
    dropped = set(gone)
    after = [line for i, line in enumerate(have) if i not in dropped] + list(delta.add)
    if len(gone) > _DELETES_BY_TEXT:
        declares.append(Op("declare", chain))  # with --noflush: flushes this chain alone
        appends.append(Op("append", chain, tuple(after), rendered=True))
        return after
    for index in sorted(gone, reverse=True):
        deletes.append(Op("delete", chain, (have[index],), index + 1))
    if delta.add:
        appends.append(Op("append", chain, delta.add, rendered=True))
    return after


def _take(counter: Counter[Line], line: Line) -> bool:
    counter[line] -= 1
    return True


def _hook_ops(state: TableState, want: bool, main: list[Line] | None = None
              ) -> tuple[list[Op], list[Line]]:
    """The jump from the built-in chain: kept where it is, created where
    :func:`~k3snet.render.iptables.rules.hook_position` says, never moved above a
    foreign rule (a repaired jump goes back where its first copy was).

    A jump of k3snet's that an admin edited into text that does not read back
    (iptables-save quotes comments only: ``--hashlimit-name a b``) is deleted by its
    number, which the apply read again right before (``-D`` with that text was
    refused, so no destroy or repair of the table could ever pass). A number is a
    guess if the chain changed since: the main chain (``main``, its rules after the
    edit) is then deleted and declared again in the same transaction when it stays,
    which the kernel refuses while a rule still jumps to it, so a wrong rule taken
    out refuses the whole table instead (a destroy deletes it anyway).
    """
    hook = state.hook
    rules = list(state.hook_rules)
    jumps = [i for i, r in enumerate(rules) if _hooks_to(r, hook.main)]
    if (want and state.hook_ok()) or (not want and not jumps):
        return [], rules
    ops = []
    by_number = False
    for index in reversed(jumps):
        line = rules[index]
        nameable = line == hook_line(hook) or (parse_rule(line) is not None
                                                and not any("\n" in t for t in line))
        ops.append(Op("delete", hook.builtin, (line,), index + 1, by_number=not nameable))
        by_number |= not nameable
        del rules[index]
    if by_number and want and main is not None and not any(
            jump.target == hook.main for jump in state.foreign_jumps):
        ops += [Op("flush", hook.main), Op("remove", hook.main), Op("declare", hook.main)]
        if main:
            ops.append(Op("append", hook.main, tuple(main)))
    if want:
        line = hook_line(hook)
        position = jumps[0] if jumps else hook_position(rules)
        if position >= len(rules):
            ops.append(Op("append", hook.builtin, (line,)))
        else:
            ops.append(Op("insert", hook.builtin, (line,), position + 1))
        rules.insert(position, line)
    return ops, rules


def hook_moves(state: TableState) -> list[Op]:
    """Ops moving k3snet's one jump where :func:`~k3snet.render.iptables.rules.hook_position`
    puts a new one among the other rules of the built-in chain (none: it is there).

    A new jump goes in by position (``-I FORWARD N``), counted on a read that another
    program's rule inserted or deleted since leaves stale: it landed above that program's
    rule, or behind the final ``DROP``. The move is one transaction: ``-D`` by the
    jump's text, then ``-I`` (or ``-A``) counted on the chain without it.
    """
    jumps = state.hook_jumps()
    if len(jumps) != 1 or state.hook_rules[jumps[0]] != hook_line(state.hook):
        return []  # no jump, or one as k3snet does not write it: drift, not moved here
    index = jumps[0]
    others = state.hook_rules[:index] + state.hook_rules[index + 1:]
    position = hook_position(others)
    if position == index:
        return []
    line = state.hook_rules[index]
    builtin = state.hook.builtin
    put = (Op("append", builtin, (line,)) if position >= len(others)
           else Op("insert", builtin, (line,), position + 1))
    return [Op("delete", builtin, (line,), index + 1), put]


def commit_moves(state: TableState, moves: Sequence[Op]) -> None:
    """Update ``state`` to what the kernel holds after the :func:`hook_moves` ``moves``
    were committed: its undo deletes the jump where it is now (libiptc by number)."""
    rules = state.hook_rules
    for op in moves:
        if op.kind == "delete":
            del rules[op.position - 1]
        elif op.kind == "insert":
            rules.insert(op.position - 1, op.lines[0])
        else:
            rules.extend(op.lines)


def revert_ops(state: TableState, edit: TableEdit, *, exact: bool = True) -> list[Op]:
    """Ops that put back what ``edit`` changed (``state`` is the table after the edit).

    ``exact=False``: a rule whose text may not read back (iptables-save quotes comments
    only: an admin's ``--hashlimit-name a b``; see :func:`_nameable`) is not written
    again, which iptables would refuse, failing the whole table's rollback: k3snet's
    hook jump goes back in place of an edited one, other such rules are left out.
    """
    declares: list[Op] = []
    appends: list[Op] = []
    flushes: list[Op] = []
    removes: list[Op] = []
    for chain, old in sorted(edit.old_chains.items()):
        new = edit.chains.get(chain)
        if old == new:
            continue
        if old is None:
            flushes.append(Op("flush", chain))
            removes.append(Op("remove", chain))
            continue
        declares.append(Op("declare", chain))  # creates it, or flushes it
        lines = tuple(old) if exact else tuple(line for line in old if _writable(line))
        if lines:
            appends.append(Op("append", chain, lines))
    hook = state.hook
    current = list(state.hook_rules)
    hook_ops: list[Op] = []
    if current != edit.old_hook_rules:
        for index in range(len(current) - 1, -1, -1):
            if _hooks_to(current[index], hook.main):
                hook_ops.append(Op("delete", hook.builtin, (current[index],), index + 1))
        for index, line in enumerate(edit.old_hook_rules):
            if _hooks_to(line, hook.main):
                put = line if exact or _writable(line) else hook_line(hook)
                hook_ops.append(Op("insert", hook.builtin, (put,), index + 1))
    return [*declares, *appends, *hook_ops, *flushes, *removes]


def _writable(line: Line) -> bool:
    """``line``, a rule as read, surely reads back from its text: made only of the
    matches k3snet reads (among them conntrack's ``--ctdir``, its own reply accept's),
    no comment holding a newline (as :func:`_nameable` judges)."""
    return parse_rule(line) is not None and not any("\n" in token for token in line)


def commit_edit(state: TableState, edit: TableEdit) -> None:
    """Update ``state`` to what the kernel holds after ``edit`` was committed."""
    for chain, lines in edit.chains.items():
        if lines is None:
            state.chains.pop(chain, None)
        else:
            state.chains[chain] = list(lines)
    state.hook_rules = list(edit.hook_rules)
    for digest in edit.removed:
        unit = state.units.pop(digest, None)
        if unit is not None:
            state.by_chain.get(unit.chain, set()).discard(digest)
            if state.owned.get(unit.obj.key) == unit.obj:
                del state.owned[unit.obj.key]
    units, by_chain, owned = state.units, state.by_chain, state.owned
    units.update(edit.added)
    for digest, new in edit.added.items():  # 10k in a big apply: kept lean
        members = by_chain.get(new.chain)
        if members is None:
            members = by_chain[new.chain] = set()
        members.add(digest)
        obj = new.obj
        owned[obj.key] = obj
    state.by_chain = {c: ds for c, ds in state.by_chain.items() if ds}
    state.inactive.clear()
    state.dirty.clear()
    state.earlier.clear()
    if state.findings:  # the edit rewrote everything found wrong
        state.findings.clear()
        state.owned = {k: o for k, o in state.owned.items() if not isinstance(o, Drift)}
