"""The ``iptables`` backend: masquerade, SNAT and forward accepts in chains of our own.

Works on both flavours K3s ships: ``iptables-nft`` (rules in nf_tables, through
the ``xt`` compatibility layer) and ``iptables-legacy`` (x_tables). IPv4 goes
through ``iptables``, IPv6 through ``ip6tables``.

Ownership
    k3snet writes only its own chains, ``K3SNET-POSTROUTING`` (nat) and
    ``K3SNET-FORWARD`` (filter) and the chains below them, plus exactly one jump
    from each built-in chain it hooks, created after the rules already there
    (ahead of a final catch-all DROP/REJECT only) and never moved afterwards:
    an admin's rule above it stays above it and decides (a foreign DROP, REJECT
    or RETURN met first that may match our traffic is observed as a
    :class:`~k3snet.model.ForwardBlock`, a foreign MASQUERADE or SNAT met first
    as a :class:`~k3snet.model.NatBlock`, and the plan shows a ``!`` conflict
    naming it when it decides our traffic otherwise; see
    :mod:`k3snet.render.iptables.rules`). Every
    rule carries ``-m comment --comment k3snet:<hash>``; the hash of the object's
    content is the diff key (Calico Felix). Foreign chains (``FLANNEL-*``,
    ``KUBE-*``, ``CNI-*``, ``DOCKER*``, user rules) are never flushed, reordered or
    deleted: every edit names one of our chains, or our jump by its full spec.
    The layout (buckets by group and hash) is described in
    :mod:`k3snet.render.iptables.rules`.

Drivers
    ``restore`` (the default, also what ``auto`` picks): ``iptables-restore
    --noflush --wait`` (the nft or legacy variant, per mode) run in the namespace
    with ``ip netns exec``: one run per family per apply, fed each table in
    turn (filter, then nat) as its edit is computed and holding only the edits
    (``-D``/``-A`` on the bucket chains touched, ``:CHAIN`` to rewrite a small
    order-sensitive chain). The tool commits each table at its ``COMMIT`` (one
    kernel transaction per table) and stops at the first refusal, naming the
    line: the tables committed before it are taken back (docs/reliability.md,
    "Half states").
    ``libiptc``: python-iptables, legacy tables only, one commit per table,
    applied from a thread inside the namespace (see
    :mod:`k3snet.backends.iptables.libiptc`). Both drivers *read* through
    ``iptables-save``: one parser, one drift detector. Every process and commit
    goes through the I/O seam :class:`~k3snet.backends.iptables.driver.Kernel`
    (``kernel=``), which tests replace with recorded ``iptables-save`` text.

Observe cache
    iptables-nft's commits are nftables transactions: they bump the ruleset
    generation id (:mod:`k3snet.backends.nfgen`), read in one small round trip.
    iptables-legacy has no such counter; its token is a digest of the filter
    and nat tables as the kernel hands them over, counters zeroed
    (:mod:`k3snet.backends.iptables.xtables`: no process, no parsing). What
    ``observe`` read is kept, stamped with the token, and served again while it
    has not moved; the token is also :meth:`IptablesBackend.change_token`, which
    the agent watches.

Mode detection (``mode="auto"``; an explicit ``mode`` always wins)
    See :mod:`k3snet.backends.iptables.mode`.

Apply cost (figures: ``docs/performance.md``, ``benchmarks/bench_iptables.py``)
    The backend remembers what it read and wrote, so an apply reads nothing
    back (but for one ``iptables-save`` of a family where it places a hook jump,
    which goes in by position: see :meth:`IptablesBackend._refresh_hooks`).
    Each family's ``iptables-restore`` process is started first and fed
    while the edit is computed (the first table's new rules are streamed as
    they are rendered; a later table is rendered whole before the ``COMMIT``
    of the one before it, so a failure while rendering applies nothing): the
    process parses while Python renders, through a pipe big enough for the
    whole input. One change among 10k rules is one run of two or three lines
    (``-D`` by spec, ``-A``) on a bucket chain of ~1/16 of the rules; what is
    left of its cost is the kernel interface copying the whole table (legacy)
    or loading the table's rules (nft). python-iptables' own rule building is
    paid once per rule *shape* only.

Drift
    ``observe`` rebuilds each object from its rule text and checks it against
    its tag and the chain it sits in. Everything in k3snet's chains that is not
    exactly what k3snet renders (a rule edited by hand or without a tag, a forged
    tag, a stray chain, a rule or a jump twice, a missing or misplaced hook jump)
    is reported as an owned :class:`~k3snet.model.Drift` object (``where`` is
    ``IPv4 nat CHAIN``): every plan deletes it (``k3snet plan`` exits 2), and the
    apply of that delete rewrites what is wrong in that table, leaving foreign
    rules alone. Objects whose rules are damaged or not reached are left out of
    ``owned`` as well, so the plan re-adds them. :attr:`IptablesBackend.drift`
    lists the findings as text. A ``K3SNET-*`` chain that is not k3snet's (no
    rule of k3snet's in it, and a name k3snet does not write or a foreign jump
    to it) and a foreign rule jumping to one of k3snet's chains are not drift:
    they are kept and named in :attr:`IptablesBackend.warnings`, and a plan that
    would write that chain, or delete a chain such a rule jumps to, is refused
    up front (:func:`~k3snet.backends.iptables.table.edit_conflicts`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from importlib.util import find_spec
from typing import TYPE_CHECKING, ClassVar, Literal, NoReturn

import attrs

from k3snet.backends.base import ApplyResult, ensure_capable
from k3snet.backends.iptables.driver import (
    Flavour,
    Kernel,
    Libiptc,
    Processes,
    RestoreRun,
    RunFailedError,
    SaveStoppedError,
    StartedSave,
    tool_name,
)
from k3snet.backends.iptables.foreign import (
    PATH_CHAINS,
    foreign_blocks,
    foreign_forward,
    foreign_nat,
    forward_accepts,
    forward_drops_untracked,
    nat_blocks,
    path_blocks,
    untracked_accepts,
)
from k3snet.backends.iptables.made import DEFAULT_ROOT, Made, MadeRecord
from k3snet.backends.iptables.mode import detect_mode, other_flavour_rules
from k3snet.backends.iptables.native import NativeRead, native_tables, read_native
from k3snet.backends.iptables.save import TableDump, parse_save
from k3snet.backends.iptables.table import (
    INJECTED_CHAIN,
    ForeignJump,
    Op,
    TableEdit,
    TableState,
    commit_edit,
    commit_moves,
    drift_where,
    edit_conflicts,
    foreign_reason,
    hook_moves,
    load_table,
    plan_table,
    refresh_hook,
    restore_lines,
    revert_ops,
    set_aside,
)
from k3snet.backends.iptables.xtables import (
    LAYOUTS,
    Kept,
    legacy_token,
    never_met,
    never_met_in,
)
from k3snet.backends.kit import (
    GC_PAUSE_MIN,
    BackendBase,
    Compensation,
    GcPause,
    OptionChecks,
    UndoFailure,
    committing,
    gc_paused,
    held_after_commit,
    option_path,
    option_seconds,
    undo_running,
)
from k3snet.backends.lock import namespace_id
from k3snet.backends.netns import (
    NetnsRunner,
    earlier_records,
    namespace_instance,
    netns_option,
    netns_path,
    record_netns,
    shown_command,
)
from k3snet.backends.nfgen import GenerationReader
from k3snet.backends.nftables.kernel import BoundedLister, Lists
from k3snet.backends.routed import RoutedBy, read_routes
from k3snet.backends.untracked import nft_list_chain, partial_untracks
from k3snet.errors import (
    BackendError,
    BackendUnavailableError,
    K3snetError,
    PlanError,
)
from k3snet.model import Drift, ForwardBlock, NetObject
from k3snet.model.forward import ForwardRule
from k3snet.model.nat import MasqueradeRule, SnatRule
from k3snet.model.state import State
from k3snet.planner import Change, Plan
from k3snet.render.iptables.rules import (
    HOOKS,
    TABLES,
    Line,
    comment_digest,
    format_line,
    render_unit,
    table_of,
    tokenize,
)
from k3snet.render.nftables import table_families

if TYPE_CHECKING:  # imported when routes are read (see _routed)
    from k3snet.backends.netlink.socket_driver import SocketDriver

__all__ = ["Driver", "IptablesBackend", "Mode"]

log = logging.getLogger(__name__)

Mode = Literal["nft", "legacy", "auto"]
Driver = Literal["restore", "libiptc", "auto"]

FAMILIES = (4, 6)

UNDO_STEPS = 1 + len(FAMILIES)
"""The bounded runs that may follow a restore run killed at its ``timeout``, each
bounded alike (:func:`~k3snet.backends.kit.undo_steps`): the ``iptables-save`` that
reads back which tables the killed run committed, then one run for each family whose
tables are taken back (a dual-stack apply whose IPv6 run was killed after its last
``COMMIT``; a jump's move after both families' runs needs no read-back). A run that
refuses a table (an answer, not a hang) is followed by one more for the tables after
it; that is not counted."""


@attrs.frozen
class _Step:
    """The edit of one (family, table) in an apply."""

    family: int
    table: str
    changes: tuple[Change, ...]
    edit: TableEdit


def _choice(option: str, value: object, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else a :class:`~k3snet.errors.BackendError`."""
    if isinstance(value, str) and value in choices:
        return value
    named = ", ".join(map(repr, choices[:-1])) + f" or {choices[-1]!r}"
    raise BackendError(f"{option} must be {named}, not {value!r}")


def _kernel_seam(value: object) -> None:
    """``kernel``: ``None`` or a library caller's :class:`Kernel` object, never a value a
    spec, ``--backend-opt`` or a plan file can hold (``kernel: x`` in an edited plan file
    was taken, and closing the backend ended k3snet with an internal error)."""
    if value is not None and (isinstance(value, str | bytes | int | float | list | dict | tuple)
                              or not callable(getattr(value, "close", None))):
        raise BackendError(f"kernel must be an iptables Kernel object (a library caller's, "
                           f"as tests give one of recorded iptables-save texts), got {value!r}")


class IptablesBackend(BackendBase):
    """Masquerade/SNAT (nat table) and forward accepts (filter table) through iptables.

    >>> backend = IptablesBackend(mode="nft")   # doctest: +SKIP
    >>> p = plan(backend.observe(), desired)    # doctest: +SKIP
    >>> backend.apply(p)                        # doctest: +SKIP

    ``netns`` names the network namespace (``ip netns``) to work in; ``None`` is
    the caller's own. ``driver`` and ``mode`` are described in the module docs.
    ``state_dir``: where the record of the built-in chains iptables-nft made for k3snet
    is kept, ``state_dir/<netns or 'host'>/iptables-made.json`` (a namespace named
    ``host``: ``iptables-made-netns.json`` there; default
    ``/run/k3snet``, as the netlink backend's; :mod:`k3snet.backends.iptables.made`).
    ``kernel`` replaces the I/O seam (:class:`~k3snet.backends.iptables.driver.Kernel`),
    e.g. with a fake serving recorded ``iptables-save`` text; ``driver`` is then
    whatever that kernel is. ``faults.fail_at(N)``
    (:class:`~k3snet.backends.kit.FaultHook`) makes the next apply put an invalid
    line in the restore input (or a failing libiptc call) for its change N, in
    the table that change belongs to: that table's transaction is refused,
    tables already committed are rolled back, and the kernel is left as it was.
    """

    name = "iptables"
    option_defaults: ClassVar[Mapping[str, str]] = {"netns": "the caller's own namespace",
                                                    "state_dir": str(DEFAULT_ROOT)}
    """What an option left out means (``k3snet explain backends.iptables``)."""
    capabilities: frozenset[str] = frozenset({"nat", "forward"})
    option_checks: ClassVar[OptionChecks] = {
        "netns": netns_option,
        "driver": lambda v: _choice("driver", v, ("restore", "libiptc", "auto")),
        "mode": lambda v: _choice("mode", v, ("nft", "legacy", "auto")),
        "timeout": lambda v: option_seconds("timeout", v),
        "state_dir": lambda v: v is None or option_path("state_dir", v),
        "kernel": _kernel_seam}
    """The constructor's checks of option values."""

    def __init__(
        self,
        netns: str | None = None,
        *,
        driver: Driver = "auto",
        mode: Mode = "auto",
        timeout: float = 30.0,
        state_dir: str | os.PathLike[str] | None = None,
        kernel: Kernel | None = None,
    ) -> None:
        super().__init__()
        for option, value in (("netns", netns), ("driver", driver), ("mode", mode),
                              ("timeout", timeout), ("state_dir", state_dir),
                              ("kernel", kernel)):
            self.option_checks[option](value)
        self._state_dir = state_dir
        timeout = float(timeout)
        self.longest_step = timeout
        """Seconds the longest bounded step of an apply may take (a tool run, killed after
        ``timeout``): the agent warns when it, the :attr:`undo_steps` after it and its
        clean-up margin do not fit the pod's grace period
        (:func:`~k3snet.agent.grace_shortfalls`)."""
        self.undo_steps = UNDO_STEPS
        """How many bounded steps, each as long, may follow that one when it is killed
        (the save reading back what it committed, then a run per family taken back)."""
        if netns is not None and kernel is None:
            path = netns_path(netns)
            if not path.exists():
                raise BackendError(f"network namespace {netns!r} does not exist ({path})")
        self._netns = netns
        self._kernel: Kernel = kernel if kernel is not None else Processes(netns, timeout)
        self._mode: Flavour | None = None if mode == "auto" else mode
        self._mode_reason = "given" if mode != "auto" else ""
        # mode auto: what the other flavour holds in the tables read (see warnings), and
        # whether the detection's read of it is still fresh for the next observe.
        self._auto = mode == "auto"
        self._other_rules: list[str] = []
        self._other_fresh = False
        self._tables: dict[tuple[int, str], TableState] | None = None
        self._foreign: frozenset[NetObject] = frozenset()
        # raw, mangle or security tables iptables-nft-save left (partly) out:
        # (family, table, what, the tool's words)
        self._path_hidden: tuple[tuple[int, str, str, str], ...] = ()
        self._partial: tuple[NetObject, ...] = ()  # a notrack of one protocol (path_blocks)
        self._native = NativeRead()  # nftables tables of other names (see native.py)
        self._native_runner: NetnsRunner | None = None  # where their listings run
        # k3snet's nftables tables an nftables backend beside this one manages (beside())
        self._nft_managed: frozenset[tuple[str, str]] = frozenset()
        self._native_bounded: BoundedLister | None = None
        self._expected: tuple[NetObject, ...] = ()  # expect(): what the tables likely hold
        self._hinted: tuple[NetObject, ...] = ()  # the same, kept (not taken by a read)
        self._generation: GenerationReader | None = None
        self._no_generation = False
        self._route_reader: SocketDriver | None = None  # rtnetlink, for RoutedBy
        self._legacy_reader: NetnsRunner | None = None  # a thread in the namespace
        self._entries_reader: NetnsRunner | None = None  # another, for _unprinted
        self._legacy_memo: dict[tuple[int, str], Kept] = {}  # its last read of each table
        # prefetch(): the change token read before the saves it started, and them.
        self._started: tuple[int | bytes, dict[int, StartedSave]] | None = None
        # (change token, the tables read, the State made of them): see "Observe cache".
        self._observed: tuple[int | bytes, dict[tuple[int, str], TableState], State] | None \
            = None
        if driver == "libiptc" and kernel is None:
            if self.mode == "nft":
                raise BackendError(
                    "the libiptc driver (python-iptables) only sees legacy x_tables, and this "
                    f"namespace uses iptables-nft ({self._mode_reason}): its rules would be "
                    "invisible to iptables (ldx/python-iptables#298); use driver='restore'"
                )
            self._kernel = Libiptc(netns, timeout)

    # -- properties ---------------------------------------------------------------

    @property
    def netns(self) -> str | None:
        """The network namespace this backend works in."""
        return self._netns

    @property
    def driver(self) -> str:
        """``restore`` or ``libiptc``."""
        return "restore" if self._kernel.streams else "libiptc"

    @property
    def kernel(self) -> Kernel:
        """The I/O seam: what runs ``iptables-save`` and commits each table."""
        return self._kernel

    @property
    def mode(self) -> Flavour:
        """``nft`` or ``legacy``: given, or detected on first use (see the module docs)."""
        if self._mode is None:
            texts = self._saves_for_detection()
            saves: dict[str, list[str]] = {
                flavour: [text for text in by_family.values() if text is not None]
                for flavour, by_family in texts.items()}
            self._mode, self._mode_reason = detect_mode(saves, self._kernel.version())
            self._other_rules = other_flavour_rules(texts[_OTHER[self._mode]])
            self._other_fresh = True  # the first observe need not read it again
        return self._mode

    def _saves_for_detection(self) -> dict[Flavour, dict[int, str | None]]:
        """Each flavour's ``-save`` text of each family (``None``: not installed).

        A flavour whose tool fails reads as absent (iptables-nft on a kernel without
        nf_tables: "Could not fetch rule set generation id: Protocol not supported"),
        so that the other is detected rather than nothing working; when every run
        fails, the first failure is raised (no privilege, a namespace gone). A tool that
        stopped in the middle of a table (:class:`SaveStoppedError`: iptables-nft-save
        at a rule written with nft it cannot decode) is raised at once: that flavour
        is in use, and the other picked would write k3snet's rules where they decide
        nothing.
        """
        texts: dict[Flavour, dict[int, str | None]] = {}
        failures: list[K3snetError] = []
        for flavour in _FLAVOURS:
            texts[flavour] = {}
            for family in FAMILIES:
                try:
                    texts[flavour][family] = self._kernel.save(family, flavour)
                except SaveStoppedError as exc:  # in use: never the other flavour instead
                    other = _OTHER[flavour]
                    raise SaveStoppedError(
                        f"{exc} (mode auto cannot tell which iptables this node uses; if it "
                        f"is iptables-{other}, say so: --backend-opt "
                        f"iptables.mode={other}, or the spec's (the agent's) backends: "
                        f"{{iptables: {{mode: {other}}}}})") from exc
                except K3snetError as exc:
                    failures.append(exc)
                    texts[flavour][family] = None
        if failures and len(failures) == len(_FLAVOURS) * len(FAMILIES):
            raise failures[0]
        return texts

    def reads_itself(self, obj: NetObject) -> bool:
        """Whether ``obj``, a foreign drop another backend read (the nftables backend's
        listing of ``ip filter``), is in a table this backend reads itself (iptables-nft's
        filter table, in mode nft, relative to its own jump: a drop after k3snet's jump
        is never met by what k3snet's chain accepted, and this backend already reports
        one before it; raw, mangle and security, read whole). Then
        :meth:`~k3snet.backends.group.BackendGroup.observe` shows it no other view of
        those."""
        where = getattr(obj, "where", None)
        return (isinstance(obj, ForwardBlock) and isinstance(where, str)
                and where.startswith(_READ_ITSELF) and self.mode == "nft")

    @property
    def mode_reason(self) -> str:
        """Why :attr:`mode` is what it is."""
        _ = self.mode
        return self._mode_reason

    @property
    def drift(self) -> tuple[str, ...]:
        """What the last :meth:`observe` found wrong in our chains (empty when clean).

        One line per finding; each is also an owned :class:`~k3snet.model.Drift`
        object in what :meth:`observe` returned.
        """
        if self._tables is None:
            return ()
        return tuple(f"IPv{f} {t}: {message}" for (f, t), state in sorted(self._tables.items())
                     for message in state.drift)

    @property
    def warnings(self) -> tuple[str, ...]:
        """What the last :meth:`observe` found worth saying (``!! warning:`` under
        ``k3snet plan``): with ``mode="auto"``, rules in the flavour not picked (in
        filter, nat, raw, mangle or security: k3snet does not see them, the kernel runs
        them);
        ``K3SNET-*`` chains that are not k3snet's, rules that are not k3snet's
        jumping to its chains, and jumps carrying k3snet's tag from a built-in chain
        to a chain not named ``K3SNET-*`` (k3snet's chains renamed). k3snet leaves
        those alone; a plan that would write such a chain, or delete a chain such a
        rule jumps to, is refused."""
        if self._tables is None:
            return ()
        found: list[str] = []
        if self._other_rules:
            other = _OTHER[self.mode]
            found.append(
                f"mode auto picked iptables-{self.mode} ({self._mode_reason}), but "
                f"iptables-{other} holds rules in the tables k3snet reads, which k3snet does "
                "not see and the kernel runs as well (a DROP there drops what k3snet "
                "accepts, and a NAT rule there may translate k3snet's traffic first: of "
                "two nat tables the kernel runs the one made last first): "
                f"{'; '.join(self._other_rules)}; remove them, or pass "
                f"mode='{other}' if that is the flavour in use")
        for (family, table), state in sorted(self._tables.items()):
            where = f"IPv{family} {table}"
            if state.hidden == "table":
                found.append(f"{_unreadable(state, self._shown)}; k3snet owns nothing there and "
                             "refuses to write it")
            elif state.hidden == "base chains":
                show = self._shown(["nft", "list", "table", _nft_family(family), table])
                found.append(
                    f"{where}: iptables-nft-save leaves out base chains of this table "
                    f"written with nft (`{show}` shows "
                    "them): they run on their hooks besides k3snet's rules, and what they "
                    "drop or translate k3snet neither sees nor names as a conflict")
            for chain in state.foreign_chains:
                jumps = [f"-A {j.chain} {format_line(j.line)}" for j in state.foreign_jumps
                         if j.target == chain]
                found.append(f"{where}: chain {chain} is not k3snet's ("
                             f"{foreign_reason(state, chain)}"
                             + (f"; jumped to by {'; '.join(jumps)}" if jumps
                                else "") + "): k3snet leaves it alone")
            for line in state.stray_jumps:
                found.append(f"{where}: a rule carrying k3snet's tag jumps to a chain that is "
                             f"not k3snet's (renamed with `iptables -E`?): -A "
                             f"{state.hook.builtin} {format_line(line)}; k3snet neither reads "
                             "nor removes it, and the rules it reaches still run")
            for jump in state.foreign_jumps:
                if jump.target in state.chains:
                    found.append(f"{where}: a rule that is not k3snet's jumps to k3snet's chain "
                                 f"{jump.target}: -A {jump.chain} {format_line(jump.line)} "
                                 "(kept; k3snet cannot delete that chain while it is there)")
        found += [_path_hidden(*hidden, mode=self.mode, shown=self._shown)
                  for hidden in self._path_hidden]
        # Notracks of one protocol, raw's and other nftables tables', named when they meet
        # k3snet's rules.
        native = self._native.defaults.partial
        if self._partial or native:
            wanted = [*self._hinted,
                      *(o for t in self._tables.values() for o in t.owned.values())]
            found += partial_untracks(self._partial, wanted, self._raw_save)
            places = self._native.defaults.places
            found += partial_untracks(
                native, wanted, lambda where: self._shown(nft_list_chain(where, places)))
        found += self._native.warnings
        if self._native.defaults.found or self._native.defaults.egress:  # judged against
            # k3snet's forward rules
            found += self._native.default_warnings(self._forward_wanted(), self._shown,
                                                   egress=not self._nft_managed)
        found += [_left_nftables(family, table, self._shown) for family, table
                  in sorted(self._native.k3snet_tables - self._nft_managed)]
        return tuple(found)

    def _forward_wanted(self) -> list[ForwardRule] | None:
        """k3snet's forward rules the nftables tables' defaults are judged against: the
        hint's (:meth:`expect`) and those in place; ``None`` without either (every
        default is named)."""
        owned = [o for t in (self._tables or {}).values() for o in t.owned.values()]
        if not self._hinted and not any(isinstance(o, ForwardRule) for o in owned):
            return None
        return list(dict.fromkeys(o for o in (*self._hinted, *owned)
                                  if isinstance(o, ForwardRule)))

    def beside(self, others: Sequence[object]) -> None:
        """A hint from :class:`~k3snet.backends.group.BackendGroup`: the other backends in
        use with this one. The tables of an ``nftables`` backend among them are in use
        (``--backend nftables:nat --backend iptables:forward``), not left behind: no
        warning names them (:attr:`warnings`)."""
        self._nft_managed = frozenset(
            (family, str(getattr(other, "table", "k3snet"))) for other in others
            if getattr(other, "name", None) == "nftables"
            for family in table_families(getattr(other, "family", "inet")))

    def _routed(self) -> RoutedBy | None:
        """The node's routes, read at most once by this observe, when a drop naming an
        out-interface and no destination is judged (:mod:`~k3snet.backends.routed`);
        ``None`` with a replaced kernel seam (nothing is read: such a drop may meet any
        packet). Not read on the observe cache's path: a route change alone does not move
        the change token, the next change of the tables reads them again."""
        if not isinstance(self._kernel, Processes):
            return None

        def load() -> list[tuple[int, int, int, str | None]]:
            try:
                if self._route_reader is None:
                    from k3snet.backends.netlink.socket_driver import (  # noqa: PLC0415
                        open_dump_driver,  # only when a drop by interface alone is judged
                    )

                    runner = NetnsRunner(self._netns)
                    try:
                        self._route_reader = open_dump_driver(runner)
                    finally:
                        runner.close()
                return read_routes(self._route_reader)
            except (OSError, K3snetError) as exc:
                log.debug("routes not read (%s): drops by out-interface judged as any", exc)
                return [(4, 0, 0, None), (6, 0, 0, None)]  # any device: no narrowing

        return RoutedBy(load)

    def _read_native(self, routed: RoutedBy | None) -> NativeRead:
        """What nftables tables of other names hold (see
        :mod:`k3snet.backends.iptables.native`), found with one netlink dump of the
        namespace's tables (the generation id's socket, made for it with
        iptables-legacy); nothing with a replaced kernel seam, or without nf_tables."""
        kernel = self._kernel
        if not isinstance(kernel, Processes) or self._no_generation:
            return NativeRead()
        try:
            if self._generation is None:
                runner = NetnsRunner(self._netns)
                try:
                    self._generation = runner.call(GenerationReader)
                finally:
                    runner.close()
            tables = self._generation.tables()
        except K3snetError:
            self._no_generation = True  # no netfilter netlink here: no nftables tables either
            return NativeRead()
        within = self._native_lists if find_spec("nftables") is not None else None
        return read_native(lambda argv, text, seconds: kernel.run(argv, input_text=text,
                                                                  timeout=seconds),
                           tables, within, routed)

    def _native_lists(self, deadline: float, read: Callable[[Lists], NativeRead]) -> NativeRead:
        """``read`` with libnftables in the namespace (kept between reads: a listing
        costs no process), within ``deadline`` (a listing that hangs is abandoned)."""
        if self._native_runner is None:
            self._native_runner = NetnsRunner(self._netns)
        runner = self._native_runner
        if self._native_bounded is None:
            self._native_bounded = runner.call(BoundedLister)  # its helper in the namespace
        bounded = self._native_bounded
        return runner.call(lambda: bounded.run(deadline, read))

    def _start_other_flavour(self) -> dict[int, StartedSave | None]:
        """With ``mode="auto"``: start the other flavour's ``-save`` runs (see
        :meth:`_read_other_flavour`); empty when there is nothing to read."""
        if not self._auto or self._other_fresh:
            return {}
        other = _OTHER[self.mode]
        if not isinstance(self._kernel, Processes):
            return dict.fromkeys(FAMILIES)  # read when needed, one after the other
        started: dict[int, StartedSave | None] = {}
        try:
            for family in FAMILIES:
                started[family] = self._kernel.start_save(family, other)
        except K3snetError:
            for save in started.values():
                if save is not None:
                    save.cancel()
            return dict.fromkeys(FAMILIES)
        return started

    def _read_other_flavour(self, started: dict[int, StartedSave | None]) -> None:
        """With ``mode="auto"``: what the flavour not picked holds in the tables read.

        Read again by every observe that reads the kernel (not by one served from
        the cache: a commit in the other flavour does not move the change token),
        its ``-save`` runs started with this flavour's (docs/performance.md, "Two
        flavours"). Best effort: a tool that is missing or fails reads as nothing.
        """
        if not self._auto:
            return
        if self._other_fresh:
            self._other_fresh = False
            return
        other = _OTHER[self.mode]
        texts: dict[int, str | None] = {}
        for family, save in started.items():
            try:
                texts[family] = (save.text() if save is not None
                                 else self._kernel.save(family, other))
            except K3snetError:
                texts[family] = None
        self._other_rules = other_flavour_rules(texts)

    # -- lifecycle ----------------------------------------------------------------

    def close(self) -> None:
        """Release the libiptc worker thread, the generation-id socket and the thread
        reading the iptables-legacy token; ends the saves :meth:`prefetch` started."""
        self._cancel_started()
        self._kernel.close()
        if self._generation is not None:
            self._generation.close()
            self._generation = None
        if self._route_reader is not None:
            self._route_reader.close()
            self._route_reader = None
        if self._legacy_reader is not None:
            self._legacy_reader.close()
            self._legacy_reader = None
        if self._entries_reader is not None:
            self._entries_reader.close()
            self._entries_reader = None
        if self._native_bounded is not None:
            self._native_bounded.close()
            self._native_bounded = None
        if self._native_runner is not None:
            self._native_runner.close()
            self._native_runner = None
        self._legacy_memo.clear()
        super().close()

    # -- protocol -----------------------------------------------------------------

    def change_token(self) -> int | bytes | None:
        """What moves when a rule may have changed: with iptables-nft the nftables
        generation id (any commit in the namespace moves it), with iptables-legacy a
        digest of the filter and nat tables (and raw, mangle and security, which observe
        judges too) without their counters (any rule, chain
        or policy change in them moves it, traffic does not), with the nftables
        generation id while the namespace has nftables tables of other names
        (observe reads them too: kept by the legacy digest alone, a drop added to
        firewalld's table, or removed, was not seen while the legacy tables stayed
        as they were; only then, or iptables-nft's commits, kube-proxy's every
        second, would move it); ``None`` with a replaced kernel seam."""
        if not isinstance(self._kernel, Processes):
            return None
        if self.mode == "legacy":
            if self._legacy_reader is None:
                self._legacy_reader = NetnsRunner(self._netns)
            digest = self._legacy_reader.call(partial(legacy_token, memo=self._legacy_memo))
            generation = self._nft_generation()
            if (generation is None or self._generation is None
                    or not native_tables(self._generation.tables())):
                return digest
            return digest + generation.to_bytes(4, "big")
        return self._nft_generation()

    def _nft_generation(self) -> int | None:
        """The namespace's nftables generation id (``None``: no netfilter netlink here)."""
        if self._no_generation:
            return None
        if self._generation is None:
            runner = NetnsRunner(self._netns)
            try:
                self._generation = runner.call(GenerationReader)  # bound to the namespace
            except K3snetError:
                self._no_generation = True  # no netfilter netlink here: read every time
                return None
            finally:
                runner.close()
        return self._generation.read()

    def _token_or_none(self) -> int | bytes | None:
        """:meth:`change_token` for the observe cache, or None (observe then reads).

        The iptables-legacy token copies the tables from the kernel (a good part
        of what the ``iptables-legacy-save`` it spares costs: docs/performance.md):
        observe reads it, twice, only once someone watches it (the agent), not for
        a one-shot observe (the CLI), which would pay for a cache it never uses.
        """
        if self._legacy_reader is None and self.mode == "legacy":
            return None
        try:
            return self.change_token()
        except BackendUnavailableError:
            raise  # no iptables tools: observe would say the same
        except K3snetError:
            return None

    def expect(self, state: State) -> None:
        """A hint: ``state``'s owned objects are likely what the tables hold
        (:func:`~k3snet.converge.converge` passes the desired state).

        Changes no result: the next read of the tables renders those objects first,
        so that a tagged rule which is exactly one of theirs is taken as that object
        without parsing it (a rule this process wrote is taken the same way;
        docs/performance.md, "Expected objects: the iptables reader"), and the warning of a
        notrack of one protocol names it when it meets one of them (:attr:`warnings`).
        """
        self._expected = self._hinted = tuple(o for o in state.owned if type(o) in _TABLE_OF)

    def _render_expected(self) -> None:
        """Render what :meth:`expect` named (once per hint) for the read about to run.

        Through the render memo: an agent's later reads find these objects rendered
        already (by this or an earlier read, or an apply) and pay a lookup each.
        """
        expected, self._expected = self._expected, ()
        for obj in expected:
            try:
                render_unit(obj)  # remembered by tag for rebuild_unit
            except K3snetError:
                continue  # not a rule this backend can write: it cannot be in a table either

    def prefetch(self) -> None:
        """A hint: start the ``iptables-save`` processes of the next read now, and return.

        They run while the caller works out what to ask for (``k3snet apply`` and
        ``plan`` call this before they compile the spec). Changes no result: only
        with iptables-nft, whose change token (the nftables generation id) is one
        small read, and the next :meth:`observe` takes their output only if that
        token has not moved since they started, and saves again otherwise. Does
        nothing with iptables-legacy (its token costs about what it would spare),
        with a replaced kernel seam, or when the next observe would be served from
        what the last one read.
        """
        if self._started is not None or not isinstance(self._kernel, Processes) \
                or self.mode != "nft":
            return
        token = self._token_or_none()
        kept = self._observed
        if token is None or (kept is not None and kept[0] == token and kept[1] is self._tables):
            return
        self._started = (token, {family: self._kernel.start_save(family, "nft")
                                 for family in FAMILIES})

    def _cancel_started(self) -> None:
        started, self._started = self._started, None
        for save in (started[1].values() if started is not None else ()):
            save.cancel()

    def observe(self) -> State:
        """Our objects (rebuilt from rule text, hash-checked) and simple foreign rules.

        Served from what the last observe read while the change token has not
        moved (see the module docs).
        """
        token = self._token_or_none()
        started, self._started = self._started, None
        kept = self._observed
        # A failed apply drops self._tables (it may have been edited in place): then read.
        hit = token is not None and kept is not None and kept[0] == token and \
            kept[1] is self._tables
        if started is not None and (hit or started[0] != token):  # unneeded, or stale
            for save in started[1].values():
                save.cancel()
            started = None
        if hit:
            assert kept is not None
            return kept[2]
        self._render_expected()
        other = self._start_other_flavour()  # runs while this flavour is read
        tables: dict[tuple[int, str], TableState] = {}
        foreign: set[NetObject] = set()
        hidden: list[tuple[int, str, str, str]] = []
        partial: list[NetObject] = []
        routed = self._routed()
        try:
            with gc_paused(GC_PAUSE_MIN):  # the size is unknown before the save
                for family in FAMILIES:
                    dump = self._save(family, started[1].pop(family, None) if started else None)
                    for table in TABLES:
                        tables[family, table] = load_table(family, HOOKS[table], dump.get(table))
                    foreign |= _judge(family, dump, tables, hidden, routed,
                                      partial=partial)
            # Base chains of nftables tables iptables does not show run on the same hooks.
            self._native = self._read_native(routed)
            for read in tables.values():
                set_aside(read, self._native.blocks)
            foreign |= self._native.blocks
            # A foreign accept in iptables ends only iptables' chain: one a native chain's
            # default drops (an admin's `policy drop`) does not meet the need.
            foreign -= {o for o in foreign
                        if isinstance(o, ForwardRule) and self._native.drops(o)}
        except BaseException:
            for pending in other.values():
                if pending is not None:
                    pending.cancel()
            raise
        finally:
            for save in (started[1].values() if started else ()):
                save.cancel()  # what an error left unread
        self._tables = tables
        self._foreign = frozenset(foreign)
        self._path_hidden = tuple(hidden)
        self._partial = tuple(partial)
        self._read_other_flavour(other)
        self.log_warnings()  # once while each lasts (the kit's)
        state = State(owned=[o for s in tables.values() for o in s.owned.values()],
                      foreign=self._foreign)
        # Kept only if nobody committed while the tables were read.
        stable = token is not None and self._token_or_none() == token
        self._observed = (token, tables, state) if stable and token is not None else None
        return state

    def check(self, plan: Plan) -> tuple[str, ...]:
        """Dry run: plan problems, then each table's edits tried without committing."""
        try:
            ensure_capable(self, plan)
            steps = self._prepare(plan)
        except K3snetError as exc:
            return (str(exc),)
        problems: list[str] = []
        for step in steps:
            try:
                self._run(step.family, step.table, step.edit.ops, test=True)
            except RunFailedError as exc:
                problems.append(f"IPv{step.family} {step.table}: {exc}")
        return tuple(problems)

    def apply(self, plan: Plan) -> ApplyResult:
        """Apply every change, one transaction per table, or none (see the module docs)."""
        ensure_capable(self, plan)
        self._observed = None  # the apply edits self._tables in place: observe reads again
        fail_after = self.faults.take(plan)
        if not plan.changes:
            return ApplyResult(self.name, (), operations=0)
        missing = self._builtins_missing(plan)
        try:
            with gc_paused(len(plan.changes)) as pause:
                result = self._apply(plan, fail_after, pause)
        except BaseException:
            if missing:
                self._take_back_builtins(missing)
            raise
        if missing is not None:
            self._tidy_builtins(missing)
        return result

    def _reader(self) -> GenerationReader | None:
        """The namespace's netfilter netlink reader (``None``: none here)."""
        if self._generation is None and not self._no_generation:
            self._nft_generation()
        return self._generation

    def _builtins_missing(self, plan: Plan) -> list[Made] | None:
        """The built-in chains iptables-nft will make for ``plan``'s rules (that do not
        exist yet: :mod:`k3snet.backends.iptables.made`); ``None``: not told (legacy,
        a replaced kernel seam, no netfilter netlink, or it could not be read)."""
        if self.mode != "nft" or not isinstance(self._kernel, Processes):
            return None
        try:
            reader = self._reader()
            if reader is None:
                return None
            missing = []
            for family, table in sorted({_where_of(c.subject) for c in plan.changes
                                         if c.action != "delete"}):
                nft_family, chain = _nft_family(family), HOOKS[table].builtin
                if reader.chain_state(nft_family, table, chain) is None:
                    made = reader.table_use(nft_family, table) is None
                    missing.append(Made(nft_family, table, chain, made))
        except K3snetError as exc:
            log.debug("iptables: cannot tell which built-in chains exist: %s", exc)
            return None
        return missing

    def _tidy_builtins(self, missing: list[Made]) -> None:
        """Record the built-in chains the apply made (of ``missing``), and delete those
        recorded whose table no longer holds a chain of k3snet's, when still unused
        (see :mod:`k3snet.backends.iptables.made`). Never fails the apply done."""
        try:
            reader = self._reader()
            if reader is None:
                return
            record = self._made_record()
            before = record.load()
            made = list(before)
            made += [m for m in missing if m not in made
                     and reader.chain_state(m.family, m.table, m.chain) is not None]
            kept = [m for m in made if not self._remove_unused(reader, m)]
            if kept != before:
                record.save(kept)
        except K3snetError as exc:
            log.warning("iptables: cannot tidy the built-in chains k3snet made: %s", exc)

    def _made_record(self) -> MadeRecord:
        """The record of the built-in chains k3snet made in this namespace."""
        kept_as = record_netns(self._netns)
        return MadeRecord(kept_as, namespace_id(self._netns), self._state_dir,
                          instance=namespace_instance(self._netns, self._native_runner,
                                                      host=kept_as is None),
                          earlier=earlier_records(self._netns, kept_as))

    def _take_back_builtins(self, missing: list[Made]) -> None:
        """After a failed apply, delete the built-in chains of ``missing`` it made (with
        their tables when it made those too), each when still empty with policy accept
        and its table holding nothing else: the undo took k3snet's rules back, and
        these stayed, an empty ``ip filter`` table and its ``FORWARD`` chain (a nat
        chain keeping connection tracking on). Never one that existed before (not
        in ``missing``), nor one another program used since. One the kernel refuses
        to delete (another program wrote the ruleset meanwhile: kube-proxy's sync) is
        recorded, as an apply records what it made, for a later apply or destroy to
        delete: left unrecorded, the next apply found it there and no destroy ever
        took it. Never fails: what it cannot delete or record is logged and left."""
        with undo_running():  # the CLI's SIGTERM lets it end, as the undo before it
            try:
                reader = self._reader()
                if reader is None:
                    return
                left = [made for made in missing if not self._delete_if_unused(reader, made)]
                if left:
                    record = self._made_record()
                    before = record.load()
                    record.save([*before, *(made for made in left if made not in before)])
            except K3snetError as exc:
                log.warning("iptables: cannot delete the built-in chains the failed apply "
                            "made: %s", exc)

    def _remove_unused(self, reader: GenerationReader, made: Made) -> bool:
        """Whether ``made`` is done with: deleted now (k3snet's chains gone from its table,
        the chain empty with policy accept), gone, or another program's (a rule in it, a
        policy drop); ``False``: still k3snet's to keep, or the kernel refused."""
        family = 4 if made.family == "ip" else 6
        state = self._tables.get((family, made.table)) if self._tables is not None else None
        if state is None or state.chains:
            return False  # k3snet's chains are there (or unknown): the chain is in use
        return self._delete_if_unused(reader, made)

    def _delete_if_unused(self, reader: GenerationReader, made: Made) -> bool:
        """Delete ``made`` (and its table, if made too and holding nothing else) when
        empty with policy accept, in one transaction the kernel refuses if anything
        changed since the read: whether it is done with (deleted, gone, or another
        program's), as :meth:`_remove_unused`."""
        generation = reader.read()
        found = reader.chain_state(made.family, made.table, made.chain)
        if found is None or found != (0, True):
            return True  # gone, or used by another program since: not k3snet's to delete
        table_too = made.table_made and reader.table_use(made.family, made.table) == 1
        try:
            reader.delete_unchanged(generation, made.family, made.table, made.chain,
                                    table_too=table_too)
        except K3snetError as exc:  # changed meanwhile (ERESTART), or used (EBUSY)
            log.info("iptables: %s %s %s, made for k3snet's rules, left: %s", made.family,
                     made.table, made.chain, exc)
            return False
        log.info("iptables: deleted %s %s %s%s, made for k3snet's rules only and unused",
                 made.family, made.table, made.chain, " and its table" if table_too else "")
        return True

    def _apply(self, plan: Plan, fail_after: int | None, pause: GcPause) -> ApplyResult:
        inject = injected = None
        if fail_after is not None:
            injected = plan.changes[min(fail_after, len(plan.changes) - 1)]
            inject = _where_of(injected.subject)
        # Each table is one transaction; the tables committed before a refused one are
        # taken back by compensation (revert ops computed from what was written).
        undo = Compensation(self.name, self._kernel.where)
        operations = 0
        placing: set[tuple[int, str]] = set()  # tables where a new jump goes in by position
        try:
            with undo.guarding():  # an interruption takes back the tables committed
                if not self._kernel.streams:
                    for step in self._prepare(plan):  # every edit computed before anything runs
                        assert self._tables is not None  # set by _prepare
                        if not self._tables[step.family, step.table].hook_jumps():
                            placing.add((step.family, step.table))
                        ops = list(step.edit.ops)
                        if inject == (step.family, step.table):
                            ops.append(Op("fail", step.table))
                        try:
                            operations += 1
                            # From libiptc's commit (the driver marks it) to the record,
                            # a signal waits: raised in between (in the main thread's
                            # wait for the namespace's), the table was made and never
                            # among those undone.
                            with held_after_commit():
                                self._run(step.family, step.table, ops)
                                assert self._tables is not None  # set by _prepare
                                state = self._tables[step.family, step.table]
                                commit_edit(state, step.edit)
                                undo.record(step.changes, self._reverter(state, step))
                        except RunFailedError as exc:
                            self._fail(undo, step, self._failed(plan, injected, exc), exc)
                else:
                    # Every change is checked first; each family's tables then go through one
                    # restore process, each table's edit computed while the process reads it.
                    pending = self._validate(plan)
                    assert self._tables is not None
                    placing = {where for where in pending
                               if not self._tables[where].hook_jumps()}
                    self._refresh_hooks(list(pending))
                    families = [f for f in FAMILIES if any(w[0] == f for w in pending)]
                    for family in families:
                        operations += 1
                        tables = [(table, changes) for (f, table), changes in pending.items()
                                  if f == family]
                        self._stream(plan, family, tables, undo, inject=inject, injected=injected,
                                     pause=pause if family == families[-1] else None)
                operations += self._settle_hooks(placing, undo)
        except BaseException:
            self._tables = None  # whatever stopped the apply, read the kernel again next time
            raise
        return ApplyResult(self.name, plan.changes, operations=operations)

    def _stream(self, plan: Plan, family: int, tables: list[tuple[str, list[Change]]],
                undo: Compensation, *, inject: tuple[int, str] | None,
                injected: Change | None, pause: GcPause | None = None) -> None:
        """One family's tables through one ``iptables-restore`` run, fed while computed.

        Tables go in :data:`~k3snet.render.iptables.rules.TABLES` order (filter,
        then nat: see docs/reliability.md, "Half states"). The first table's rules
        are streamed to the process while they are rendered; each later table is
        rendered whole before the ``COMMIT`` of the one before it is sent, and is
        then sent at once: the tool commits table after table without waiting for
        us, which keeps the time between the commits short, and nothing is
        committed if rendering fails. The tool stops at the first refusal, and its
        line number says which tables were committed before: those are taken back
        (:class:`Compensation`).
        """
        assert self._tables is not None
        run = self._kernel.restore(family, self.mode)
        sent: list[tuple[_Step, TableState]] = []  # COMMIT sent
        ready: tuple[_Step, TableState] | None = None  # sent but its COMMIT
        table = tables[0][0]
        try:
            for table, changes in tables:
                state = self._tables[family, table]
                held: list[str] = []
                if ready is None:
                    run.table(table)
                edit = plan_table(state, changes, sink=run.send if ready is None else held.extend)
                step = _Step(family, table, tuple(changes), edit)
                ops = list(edit.ops)
                if inject == (family, table):
                    ops.append(Op("fail", table))
                held += restore_lines(ops)
                if ready is not None:
                    run.commit()
                    sent.append(ready)
                    commit_edit(ready[1], ready[0].edit)
                    run.table(table)
                run.send(held)
                ready = (step, state)
            assert ready is not None
            run.commit()
            sent.append(ready)
            # The kernel commits the tables meanwhile; if it refuses, _fail forgets
            # these states.
            commit_edit(ready[1], ready[0].edit)
        except BaseException as exc:
            # The open table is not applied; those committed before it are taken out.
            self._tables = None
            problems = self._record(undo, family, sent, run.abort())[1]
            if isinstance(exc, Exception):  # ApplyError saying what was done and undone
                undo.fail(None, f"IPv{family} {table}: cannot prepare the edit: {exc}", exc,
                          extra_problems=problems)
            if problems:
                # Interrupted (Ctrl-C, SIGTERM) with tables that may be committed and
                # cannot be told: a RollbackError says so, the rest taken back first.
                # Raised as it came, the interruption ended quietly (exit 130, or 143
                # saying what was made was taken back), the tables' edits left in.
                undo.fail(None, f"IPv{family} {table}: interrupted ({undo.interruption(exc)})",
                          exc, extra_problems=problems)
            raise
        if pause is not None:  # the last run: nothing much is allocated after this
            pause.end()
        failed, done, problems = self._wait_and_record(run, undo, family, sent)
        if failed is not None:
            refused = next((step for step, _ in sent if step.table == failed.table),
                           next((step for step, _ in sent if step.table not in done),
                                sent[-1][0]))
            self._fail(undo, refused, self._failed(plan, injected, failed), failed, problems)

    def _wait_and_record(self, run: RestoreRun, undo: Compensation, family: int,
                         sent: list[tuple[_Step, TableState]]
                         ) -> tuple[RunFailedError | None, tuple[str, ...], list[str]]:
        """Wait for ``run`` and record the tables it committed: (its failure, those
        tables, what could not be told), as :meth:`_record`.

        From the end of the input to the record, a signal waits for the record (raised
        in between, in the main thread where Ctrl-C lands, the tables were made and never
        among those undone); the wait is bounded, the process killed after its timeout.
        """
        with held_after_commit():
            if threading.current_thread() is threading.main_thread():
                committing()  # this block's own
            try:
                run.wait()
            except RunFailedError as exc:
                return exc, *self._record(undo, family, sent, exc.committed)
            return None, *self._record(undo, family, sent,
                                       tuple(step.table for step, _ in sent))

    def _record(self, undo: Compensation, family: int, sent: list[tuple[_Step, TableState]],
                committed: tuple[str, ...] | None) -> tuple[tuple[str, ...], list[str]]:
        """Record the tables of ``sent`` that were committed (``None``: read the kernel).

        Returns those tables, and what could not be told (then nothing of that run
        is recorded).
        """
        if committed is None:
            try:
                committed = self._read_committed(family, sent)
            except K3snetError as exc:
                return (), [f"IPv{family} {step.table}: cannot tell whether it was committed "
                            f"({exc})" for step, _ in sent]
        done = [(step, state) for step, state in sent if step.table in committed]
        if done:
            undo.record([c for step, _ in done for c in step.changes],
                        self._run_reverter(family, done))
        return committed, []

    def _read_committed(self, family: int, sent: list[tuple[_Step, TableState]]
                        ) -> tuple[str, ...]:
        """Which tables of ``sent`` hold their edit, read back with ``iptables-save``.

        Only when the restore run cannot say (killed after a ``COMMIT`` was sent, or
        failed without naming a line): a table whose chains and hook rules read as
        the edit made them is taken as committed, any other as not.
        """
        dump = self._save(family)
        committed = []
        for step, _ in sent:
            read = load_table(family, HOOKS[step.table], dump.get(step.table))
            edit = step.edit
            if read.hook_rules == edit.hook_rules and all(
                    read.chains.get(chain) == lines for chain, lines in edit.chains.items()):
                committed.append(step.table)
        return tuple(committed)

    def _reverter(self, state: TableState, step: _Step) -> Callable[[], None]:
        """What takes a committed table edit back (``state`` is the table after it).

        A rule of the table as it was whose text does not read back (an admin's hook
        jump edited to ``--hashlimit-name a b``: iptables-save quotes comments only)
        makes iptables refuse the whole rollback of the table: it is then taken back
        without such rules, k3snet's own jump in place of an edited one, and a
        warning says so.
        """
        def revert() -> None:
            exact = revert_ops(state, step.edit)
            try:
                self._run(step.family, step.table, exact)
            except RunFailedError:
                loose = revert_ops(state, step.edit, exact=False)
                if loose == exact:
                    raise
                self._run(step.family, step.table, loose)
                log.warning("iptables: IPv%s %s taken back without the rules whose text "
                            "does not read back (k3snet's hook jump in place of an edited "
                            "one)", step.family, step.table)
        return revert

    def _run_reverter(self, family: int, done: list[tuple[_Step, TableState]]
                      ) -> Callable[[], None]:
        """What takes back the tables one restore run committed (``done``: each edit and
        the table after it), in one run: the last committed first (nat, then filter),
        each table at its own ``COMMIT``, as the apply's run committed them.

        One run, not one per table: after a restore run killed at its bound, the undo's
        runs are bounded alike, and each counts against the pod's grace period
        (``UNDO_STEPS``). The tool stops at the first refusal: the tables
        committed before it are taken back, the refused one is tried again without the
        rules whose text does not read back (as :meth:`_reverter`), and the tables
        after it in a run of their own; what stays is said table by table
        (:class:`~k3snet.backends.kit.UndoFailure`). A run killed at its bound cannot
        say which tables it took back: each of them is said to stay.
        """
        def revert() -> None:
            pending = list(reversed(done))
            undone: list[Change] = []
            problems: list[str] = []
            loose: set[str] = set()  # tables tried again without the rules not read back
            stays: set[str] = set()

            def inverses(steps: Sequence[tuple[_Step, TableState]]) -> list[Change]:
                return [c.inverse() for step, _ in steps for c in reversed(step.changes)]

            while pending:
                ops = [(step, revert_ops(state, step.edit, exact=step.table not in loose))
                       for step, state in pending]
                undone += inverses([p for p, (_, o) in zip(pending, ops, strict=True) if not o])
                pending = [p for p, (_, o) in zip(pending, ops, strict=True) if o]
                try:
                    self._revert_run(family, [(step, o) for step, o in ops if o])
                except RunFailedError as exc:
                    if exc.committed is None:  # killed, or no line said: nothing is known
                        problems += [f"{inverse}: {exc}" for inverse in inverses(pending)]
                        stays.update(step.table for step, _ in pending)
                        break
                    taken = [p for p in pending if p[0].table in exc.committed]
                    undone += inverses(taken)
                    pending = [p for p in pending if p[0].table not in exc.committed]
                    if not pending:
                        break
                    refused, state = pending[0]
                    if refused.table not in loose and revert_ops(
                            state, refused.edit, exact=False) != revert_ops(state, refused.edit):
                        loose.add(refused.table)
                        continue
                    problems += [f"{inverse}: {exc}" for inverse in inverses(pending[:1])]
                    stays.add(refused.table)
                    pending = pending[1:]
                    continue
                except Exception as exc:
                    # (a namespace gone): the tables not yet taken back stay
                    problems += [f"{inverse}: {exc}" for inverse in inverses(pending)]
                    raise UndoFailure(problems, undone) from exc
                undone += inverses(pending)
                break
            for table in sorted(loose - stays):
                log.warning("iptables: IPv%s %s taken back without the rules whose text "
                            "does not read back (k3snet's hook jump in place of an edited "
                            "one)", family, table)
            if problems:
                raise UndoFailure(problems, undone)
        return revert

    def _revert_run(self, family: int, tables: list[tuple[_Step, list[Op]]]) -> None:
        """One restore run taking ``tables`` back, each at its own ``COMMIT``
        (:class:`RunFailedError` names the refused table and those committed before)."""
        if not tables:
            return
        run = self._kernel.restore(family, self.mode)
        try:
            for step, ops in tables:
                run.table(step.table)
                run.send(restore_lines(ops))
                if step is tables[0][0]:
                    committing()  # as a commit_ops run's: raises if a signal stopped the caller
                run.commit()
        except BaseException:
            run.abort()
            raise
        run.wait()

    def _fail(self, undo: Compensation, step: _Step, failed: Change | None,
              exc: RunFailedError, problems: Sequence[str] = ()) -> NoReturn:
        """Undo the tables already committed, then raise ApplyError (or RollbackError)."""
        # Read the kernel again next time: a refusal may mean it changed behind our back,
        # and a rollback rewrites chains.
        self._tables = None
        undo.fail(failed, f"IPv{step.family} {step.table} refused the changes: {exc}"
                  f"{self._busy_hint(step, exc)}", exc, extra_problems=problems)

    def _busy_hint(self, step: _Step, exc: RunFailedError) -> str:
        """What a refused deletion of one of k3snet's chains (``-X CHAIN``) means, else
        ``""``: a rule k3snet did not read jumps to it, written since the plan was made
        (the check names those it read), or, with iptables-nft, in a base chain written
        with ``nft`` that iptables-nft-save leaves out (``nft list table`` shows it).
        iptables-legacy-restore says only "line N failed"."""
        line = exc.line
        if line is None or len(line) != 2 or line[0] != "-X":
            return ""
        if self.mode == "nft":
            show = f"nft list table {_nft_family(step.family)} {step.table}"
        else:
            show = f"{tool_name(step.family, self.mode, 'save')} -t {step.table}"
        return (f" (deleting k3snet's chain {line[1]}: a rule k3snet did not read jumps to "
                "it, and the kernel keeps a chain jumped to; `"
                f"{self._shown(show.split())}` shows it: delete that rule first)")

    @staticmethod
    def _failed(plan: Plan, injected: Change | None, exc: RunFailedError) -> Change | None:
        if exc.line is not None and INJECTED_CHAIN in exc.line:
            return injected
        return _culprit(plan, exc.line)

    # -- views ----------------------------------------------------------------------

    def ordered(self, family: int = 4) -> tuple[NetObject, ...]:
        """Owned objects of one family in the order packets meet them (last observe/apply).

        NAT is first match: this is the order that decides which rule wins.
        """
        if self._tables is None:
            self.observe()
        assert self._tables is not None
        result: list[NetObject] = []
        for table in TABLES:
            state = self._tables[family, table]
            owned = set(state.owned.values())
            for jump in state.chains.get(state.hook.main, []):
                for line in state.chains.get(jump[-1], []):
                    digest = comment_digest(line)
                    unit = state.units.get(digest) if digest else None
                    if unit is not None and unit.obj in owned and unit.lines[0] == line:
                        result.append(unit.obj)
        return tuple(result)

    # -- internals ------------------------------------------------------------------

    def _prepare(self, plan: Plan) -> list[_Step]:
        """Check every change against what we own, and compute each table's edit."""
        pending = self._validate(plan)
        assert self._tables is not None
        self._refresh_hooks(list(pending))
        return [_Step(family, table, tuple(changes), plan_table(self._tables[family, table],
                                                                 changes))
                for (family, table), changes in pending.items()]

    def _validate(self, plan: Plan) -> dict[tuple[int, str], list[Change]]:
        """Check every change against what we own; the changes of each table, in apply order."""
        if self._tables is None:
            self.observe()
        assert self._tables is not None
        pending: dict[tuple[int, str], list[Change]] = {}
        appenders: dict[tuple[int, str], Callable[[Change], None]] = {}
        # key -> index of the last change to it in this plan: one dict operation for
        # the usual key that the plan touches once (setdefault inserts it).
        last_of: dict[tuple[object, ...], int] = {}
        tables = self._tables
        changes = plan.changes
        for index, change in enumerate(changes):  # 10k of them in a big apply: kept lean
            after = change.after
            subject = after if after is not None else change.before
            assert subject is not None  # a Change always has one
            key = subject.key
            # (family, table) from the key, which starts with kind and family for our
            # types; anything else takes the general path (and table_of refuses it).
            where = (_WHERE.get(key[0], _NO_WHERE).get(key[1]) if type(subject) in _TABLE_OF
                     else None)
            if where is None:
                try:
                    where = _where_of(subject)
                except K3snetError as exc:
                    self._refuse(plan, str(exc))
            last = last_of.setdefault(key, index)
            if last == index:
                current = tables[where].owned.get(key)
            else:
                current = changes[last].after
                last_of[key] = index
            if change.action == "add":
                if current is not None:
                    self._refuse(plan, f"cannot add {subject}: {current} is already there")
            elif current is None or current != change.before:
                self._refuse(plan, f"cannot {change.action} {change.before}: it is not owned "
                                   f"by the iptables backend"
                                   f"{'' if current is None else f' (found {current})'}")
            append = appenders.get(where)
            if append is None:
                append = appenders[where] = pending.setdefault(where, []).append
            append(change)
        ordered = {(family, table): pending[family, table]
                   for family in FAMILIES for table in TABLES if (family, table) in pending}
        problems = [_unreadable(tables[where], self._shown) for where in ordered
                    if tables[where].hidden == "table"]
        problems += [problem for where, changes in ordered.items()
                     for problem in self._conflicts(tables[where], changes)]
        if problems:
            self._refuse(plan, "\n  ".join(problems))
        return ordered

    def _refresh_hooks(self, pending: Sequence[tuple[int, str]]) -> None:
        """Read the built-in chains again where the edit of ``pending`` may place a jump.

        A jump is placed (created, or put back by a repair) by position, and what
        observe read may be stale by now: each family with such a table is read
        again (one ``iptables-save``; rare, the jump once in place stays) right
        before its edit is computed (:func:`~k3snet.backends.iptables.table.refresh_hook`).
        What is left is the moment between that read and the commit.
        """
        assert self._tables is not None
        stale = [(family, table) for family, table in pending
                 if not self._tables[family, table].hook_ok()]
        for family in sorted({family for family, _ in stale}):
            dump = self._save(family)
            for f, table in stale:
                if f == family:
                    refresh_hook(self._tables[family, table], dump.get(table))

    def _settle_hooks(self, placing: set[tuple[int, str]], undo: Compensation) -> int:
        """Read back where the jumps just placed by position landed, and move each one
        another program's change of the chain put elsewhere (:func:`hook_moves`);
        the number of commits that took.

        :meth:`_refresh_hooks` read the chain right before the commit, and the tool
        counts ``-I FORWARD N`` on the chain as it finds it: a rule of kube-router's,
        flannel's or kube-proxy's deleted in between put the jump behind the final
        ``DROP`` (every pod's packet dropped, the plans after it reading that DROP as
        a conflict, a destroy finding nothing of k3snet's), one inserted put it above
        that program's rule. Each move is read back too; a jump still astray after
        :data:`_SETTLE_ATTEMPTS` moves, or a move refused, fails the apply, which is
        taken back (``undo``): never a success with the jump elsewhere.
        """
        assert self._tables is not None
        placed = [where for where in sorted(placing) if self._tables[where].hook_reaches()]
        commits = 0
        astray: list[tuple[int, str, list[Op]]] = []
        try:
            for attempt in range(_SETTLE_ATTEMPTS + 1):
                astray = []
                for family in sorted({family for family, _ in placed}):
                    dump = self._hook_chains(family, [t for f, t in placed if f == family])
                    for f, table in placed:
                        if f == family:
                            refresh_hook(self._tables[f, table], dump.get(table))
                            moves = hook_moves(self._tables[f, table])
                            if moves:
                                astray.append((f, table, moves))
                if not astray or attempt == _SETTLE_ATTEMPTS:
                    break
                for family, table, moves in astray:
                    log.info("iptables: IPv%d %s: k3snet's jump from %s landed elsewhere than "
                             "planned (another program changed the chain meanwhile): moved",
                             family, table, self._tables[family, table].hook.builtin)
                    commits += 1
                    # From the commit (the kernel's commit_ops marks it) to the table's
                    # state saying where the jump is now, a signal waits: raised in
                    # between, the undo read the jump where it was before the move, and
                    # libiptc's delete by number refused it (the rule there is another's),
                    # leaving the jump and k3snet's chains.
                    with held_after_commit():
                        self._run(family, table, moves)
                        commit_moves(self._tables[family, table], moves)
        except BackendError as exc:
            undo.fail(None, f"k3snet's jump, placed by position, could not be read back or "
                      f"moved where it belongs: {exc}", exc)
        if astray:
            family, table, _ = astray[0]
            undo.fail(None, f"IPv{family} {table}: k3snet's jump from "
                      f"{self._tables[family, table].hook.builtin} landed elsewhere than "
                      f"planned {_SETTLE_ATTEMPTS + 1} times (before a final DROP, after every "
                      "other rule): another program keeps changing the chain")
        return commits

    def _hook_chains(self, family: int, tables: Sequence[str]) -> dict[str, TableDump]:
        """The built-in chains of ``tables`` (one family) as they are now, for the read-back
        of jumps just placed (:meth:`_settle_hooks`): with iptables-nft, each chain alone
        (``iptables -t TABLE -S CHAIN``, :meth:`Processes.list_chain`); else, or when that
        tool refuses, one save of the family.

        The save of the family that read them back from 2026-12-05 had iptables-nft-save
        translate every rule of every table: a first ``k3snet apply`` of 1 000 NAT rules
        took ~17 ms of CPU more (8 %, ``docs/performance.md``). iptables-legacy's save
        copies the tables the kernel holds and is as quick as its ``-S``, which takes the
        xtables lock besides: the save stays.
        """
        assert self._tables is not None
        lister = getattr(self._kernel, "list_chain", None)  # Processes; not every Kernel
        if self.mode == "nft" and lister is not None:
            dump: dict[str, TableDump] = {}
            for table in tables:
                chain = self._tables[family, table].hook.builtin
                text = lister(family, self.mode, table, chain)
                if text is None:
                    return self._save(family)
                # -S prints what a save prints of the chain, its -P line aside.
                dump.update(parse_save(f"*{table}\n{text}\nCOMMIT\n"))
            return dump
        return self._save(family)

    def _conflicts(self, state: TableState, changes: list[Change]) -> list[str]:
        """What the edit of ``changes`` would do to what is not k3snet's (see
        :func:`~k3snet.backends.iptables.table.edit_conflicts`), as messages.

        The edit is computed here only for a table that holds a foreign jump or
        chain (rare): the usual apply pays one attribute test per table.
        """
        if not state.foreign_jumps and not state.foreign_chains:
            return []
        where = f"IPv{state.family} {state.table}"
        problems = []
        for chain, jump in edit_conflicts(state, plan_table(state, changes)):
            rule = "" if jump is None else f"-A {jump.chain} {format_line(jump.line)}"
            if chain in state.foreign_chains:
                problems.append(
                    f"{where}: this plan needs chain {chain}, which is not k3snet's ("
                    f"{foreign_reason(state, chain)}" + (f"; {rule} jumps to it" if rule else "")
                    + "): k3snet does not write it; rename or remove it first")
            else:
                assert jump is not None
                problems.append(
                    f"{where}: this plan removes k3snet's chain {chain}, and a rule that is not "
                    f"k3snet's jumps to it: {rule}; k3snet does not delete it: remove it "
                    f"first with `{self._delete_command(state, jump)}`")
        return problems

    def _delete_command(self, state: TableState, jump: ForeignJump) -> str:
        """The shell command that deletes a foreign rule (in the backend's namespace)."""
        tool = tool_name(state.family, self.mode, "")[:-1]  # iptables-nft, ip6tables-legacy
        return self._shown([tool, "-t", state.table, "-D", jump.chain, *jump.line])

    def _shown(self, argv: list[str]) -> str:
        """``argv`` as a shell command that runs where this backend acts, as a message
        shows it (:func:`~k3snet.backends.netns.shown_command`)."""
        return shown_command(argv, self._netns)

    def _raw_save(self, where: str) -> str:
        """The command showing raw's rules of a block's ``where`` (``iptables IPv6 raw``):
        this flavour's save of that family (``iptables-save -t raw`` was IPv4's, of
        whichever flavour the node's alternative names)."""
        family = 6 if where.split()[1] == "IPv6" else 4
        return self._shown([tool_name(family, self.mode, "save"), "-t", "raw"])

    def _refuse(self, plan: Plan, reason: str) -> NoReturn:
        """Refuse ``plan``, in the kit's words, with every reason it does not fit.

        The check in :meth:`_validate` stops at the first problem and costs nothing
        per change beyond a dict lookup; :func:`~k3snet.backends.kit.fit_problems`
        needs a :class:`State` of everything owned (building it takes ~50-90 ms at
        10k rules), so it runs only for a plan that is refused anyway.
        """
        assert self._tables is not None
        observed = State(owned=[o for s in self._tables.values() for o in s.owned.values()],
                         foreign=self._foreign)
        self.ensure_fits(plan, observed)
        raise PlanError(f"{self.name} backend refuses the plan, nothing was changed:\n  {reason}")

    def _run(self, family: int, table: str, ops: list[Op] | tuple[Op, ...], *,
             test: bool = False) -> None:
        self._kernel.commit_ops(family, self.mode, table, ops, test=test)

    def _save(self, family: int, started: StartedSave | None = None) -> dict[str, TableDump]:
        text = started.text() if started is not None else self._kernel.save(family, self.mode)
        if text is None:
            raise BackendUnavailableError(
                f"{tool_name(family, self.mode, 'save')} not found on PATH (install iptables)")
        dump = parse_save(text)
        if (self.mode == "legacy" and isinstance(self._kernel, Processes)
                and any(rules for table in dump.values() for rules in table.rules.values())):
            self._unprinted(family, dump)
        return dump

    def _unprinted(self, family: int, dump: dict[str, TableDump]) -> None:
        """Put back into ``dump`` the matches ``iptables-legacy-save`` does not print that
        no packet passes: ``! -i +`` (``+`` is every name), which it prints as nothing, so
        that ``-A FORWARD ! -i + -j DROP``, a drop of no packet, read as ``-A FORWARD -j
        DROP``, a conflict of every rule (:func:`~.xtables.never_met`, the kernel's
        entries, read in the namespace). The entries the change token read just before
        say whether any such rule is there (copying a table out of the kernel costs
        about as much as its save: 10-30 ms at 10 000 rules; looking for an inverted
        test with an empty mask in the entries read, under 1 ms); only then, or without
        them, are the tables read again, after the save. A chain whose rules the kernel
        counts otherwise than the save (a commit in between) stays as printed; best
        effort: a read that fails leaves the dump as it is."""
        kept = [(read[0], read[1]) for (of, _), read in self._legacy_memo.items()
                if of == family]
        layout = next(layout for layout in LAYOUTS if layout.family == family)
        try:
            if kept and not any(never_met_in(info, blob, layout) for info, blob in kept):
                return
            if self._entries_reader is None:  # (not the token's: that one means watched)
                self._entries_reader = NetnsRunner(self._netns)
            found = self._entries_reader.call(partial(never_met, family))
        except K3snetError:
            return
        for table, chains in found.items():
            for chain, (count, words) in chains.items():
                rules = dump[table].rules.get(chain) if table in dump else None
                if rules is None or len(rules) != count:
                    continue
                for index, missing in words.items():
                    if unsaid := _unsaid(missing, rules[index]):
                        rules[index] = f"{unsaid} {rules[index]}"


def _unsaid(missing: str, rule: str) -> str:
    """Of ``missing`` (``! -i +``, ``! -o +``, both), the matches ``rule`` does not print:
    iptables 1.8.11 and later print an inverted ``+`` ("xshared: Do not omit
    all-wildcard interface spec when inverted"), which, put back, would be there twice
    (``-A FORWARD ! -i + ! -i + -j DROP``: a command iptables refuses)."""
    if "+" not in rule:
        return missing
    tokens = tokenize(rule)
    said = {f"! {tokens[at + 1]} +" for at in range(len(tokens) - 2)
            if tokens[at] == "!" and tokens[at + 2] == "+"}
    return " ".join(part for part in ("! -i +", "! -o +")
                    if part in missing and part not in said)


_SETTLE_ATTEMPTS = 3
"""How many times a jump placed by position is moved back where it belongs, at most."""

_READ_ITSELF = tuple(f"nftables {family} {table} " for family in ("ip", "ip6")
                     for table in ("filter", *PATH_CHAINS))
"""Where the nftables backend's view of a table this one reads starts (``reads_itself``)."""

_FLAVOURS: tuple[Flavour, ...] = ("nft", "legacy")
_OTHER: dict[Flavour, Flavour] = {"nft": "legacy", "legacy": "nft"}

_TABLE_OF: dict[type, str] = {ForwardRule: "filter", MasqueradeRule: "nat", SnatRule: "nat"}
_WHERE: dict[object, dict[object, tuple[int, str]]] = {
    kind: {family: (family, table) for family in FAMILIES}
    for kind, table in (("nat", "nat"), ("forward", "filter"))
}
"""(family, table) by the first two items of a rule's key: its kind and family."""
_NO_WHERE: dict[object, tuple[int, str]] = {}


def _where_of(subject: NetObject) -> tuple[int, str]:
    """(family, table) of an object this backend can hold (PlanError for anything else)."""
    if isinstance(subject, Drift):
        where = drift_where(subject)
        if where is None:
            raise PlanError(f"cannot delete {subject}: it is not the iptables backend's")
        return where
    return (subject.family or 4, table_of(subject))


def _judge(family: int, dump: dict[str, TableDump], tables: dict[tuple[int, str], TableState],
           hidden: list[tuple[int, str, str, str]], routed: RoutedBy | None = None, *,
           partial: list[NetObject] | None = None) -> set[NetObject]:
    """The foreign objects of one family's tables (``tables``: k3snet's, as loaded; what a
    foreign rule decides first is set aside there), and the tables of ``PATH_CHAINS``
    iptables-nft-save left out (added to ``hidden``); ``routed``: the node's routes, what
    a drop by out-interface may meet (see :func:`foreign_blocks`); ``partial``: raw's
    notracks of one protocol, no block (see :func:`path_blocks`)."""
    foreign: set[NetObject] = set()
    # (k3snet's own chains are not read as foreign rules; an administrator's K3SNET-* are.)
    filter_state, nat_state = tables[family, "filter"], tables[family, "nat"]
    foreign |= foreign_nat(dump.get("nat"), family, ours=nat_state.chains)
    # What a foreign rule decides before our jump: our rules for it are set aside (still
    # owned: the planner notes "!" for one the spec wants, deletes one it does not).
    blocks = foreign_blocks(dump.get("filter"), family, filter_state.hook_index(),
                            ours=filter_state.chains, routed=routed)
    set_aside(filter_state, blocks)
    foreign |= blocks
    # raw, mangle and security run on the same path (k3snet has no jump there). Under a
    # FORWARD that drops what k3snet does not accept (its policy, a drop of every packet),
    # raw's untracked packets are a forward block too: their
    # replies never match k3snet's accept of established connections.
    drops = forward_drops_untracked(dump.get("filter"), ours=filter_state.chains)
    # (Unless FORWARD's accepts take both ways of the flow by address: the
    # administrator's, and k3snet's own in place, whose accept of new traffic is one.)
    accepted: tuple[ForwardRule, ...] = ()
    # (FORWARD's accepts, read once for both questions asked of them)
    accepts = forward_accepts(dump["filter"], filter_state.chains) if "filter" in dump else None
    if drops:
        aside = {filter_state.units[digest].obj for digest in filter_state.aside}
        accepted = (*untracked_accepts(dump.get("filter"), family, ours=filter_state.chains,
                                       accepts=accepts),
                    *sorted(o for o in filter_state.owned.values() if isinstance(o, ForwardRule)
                            and o not in aside))
    for table in PATH_CHAINS:
        path = path_blocks(dump.get(table), family, forward_drops=drops, accepted=accepted,
                           routed=routed, partial=partial)
        set_aside(filter_state, path)
        set_aside(tables[family, "nat"], path)  # raw's NOTRACK: no NAT at all
        foreign |= path
        left_out = dump[table].hidden if table in dump else None
        if left_out is not None:
            hidden.append((family, table, left_out, dump[table].detail or ""))
    # An accept whose replies conntrack takes meets nothing a notrack leaves untracked.
    foreign |= foreign_forward(dump.get("filter"), family, untracked=[
        b for b in foreign if isinstance(b, ForwardBlock) and b.verdict == "untrack"],
        ours=filter_state.chains, accepts=accepts)
    # The same for NAT: the first NAT rule a connection meets decides.
    nat = nat_blocks(dump.get("nat"), family, nat_state.hook_index(),
                     ours=nat_state.chains)
    set_aside(nat_state, nat)
    foreign |= nat
    return foreign


def _left_nftables(family: str, table: str, shown: Callable[[list[str]], str]) -> str:
    """The warning naming k3snet's nftables table, left by the nftables backend, and the
    destroy removing it as run where k3snet read (``shown``: :meth:`IptablesBackend._shown`)."""
    options = [*(["--backend-opt", f"nftables.table={table}"] if table != "k3snet" else []),
               *(["--backend-opt", "nftables.family=split"] if family != "inet" else [])]
    command = shown(["k3snet", "destroy", "--backend", "nftables", *options])
    return (f"nftables table {family} {table} holds rules k3snet's nftables backend wrote "
            "(its marker chain): they run on the same hooks as iptables' (its masquerade "
            "and SNAT rules translate the pods' connections whatever k3snet's iptables "
            "rules say), and this backend neither judges, keeps up nor removes them; if "
            f"the nftables backend no longer manages this node, `{command}` removes them")


def _nft_family(family: int) -> str:
    return "ip" if family == 4 else "ip6"


def _path_hidden(family: int, table: str, what: str, detail: str, *,
                 mode: Flavour, shown: Callable[[list[str]], str]) -> str:
    """The warning of a raw, mangle or security table iptables-nft-save left (partly) out
    (``what``: :attr:`~k3snet.backends.iptables.save.TableDump.hidden`; ``detail``: the
    tool's words for a table ``"unread"``; a table ``"stopped"`` or ``"unread"`` was read
    with iptables-``mode``); ``shown``: a command it names as run where k3snet read
    (:meth:`IptablesBackend._shown`)."""
    if what == "unread":
        return (f"IPv{family} {table}: {tool_name(family, mode, 'save')} -t {table} failed "
                f"({detail}), and k3snet read the other tables one by one without it: "
                "this one runs on the path of forwarded packets, and what it drops k3snet "
                "neither sees nor names as a conflict")
    if what == "stopped":
        # (iptables-legacy's tables are no nftables tables: nft shows nothing of them)
        nft = shown(["nft", "-a", "list", "table", _nft_family(family), table])
        legacy = shown([tool_name(family, mode, "")[:-1], "-t", table, "-S"])
        how = ("decode (written with nft, or by a newer iptables: "
               f"`{nft}` shows it)" if mode == "nft" else f"print (`{legacy}` may name it)")
        return (f"IPv{family} {table}: {tool_name(family, mode, 'save')} stops at a rule of "
                f"this table it cannot {how}, and k3snet "
                "read the other tables one by one: this one runs on the path of forwarded "
                "packets, and what it drops k3snet neither sees nor names as a conflict")
    return (f"IPv{family} {table}: iptables-nft-save leaves out "
            f"{'this table' if what == 'table' else 'base chains of this table'} "
            f"(written with nft: `{shown(['nft', 'list', 'table', _nft_family(family), table])}`"
            " shows it): it runs on the path of forwarded packets, and what it drops k3snet "
            "neither sees nor names as a conflict")


def _unreadable(state: TableState, shown: Callable[[list[str]], str]) -> str:
    """Why k3snet does not write a table iptables-nft cannot show (``hidden == "table"``);
    ``shown``: its ``nft list table`` as run where k3snet read (:meth:`IptablesBackend._shown`).

    Writing it blind, k3snet's rules never read back: each apply added them again
    (one more jump from the built-in chain every time), and the rules of the table
    that decide first (a drop, an SNAT) were no conflict.
    """
    family, table = state.family, state.table
    return (f"IPv{family} {table}: iptables-nft cannot read this table (iptables-nft-save: "
            f"\"Table `{table}' is incompatible, use 'nft' tool\"): it holds rules written "
            f"with nft (`{shown(['nft', 'list', 'table', _nft_family(family), table])}`) "
            "that iptables cannot "
            "show, so k3snet would write it blind; leave it to nft (the nftables backend) or "
            "move those rules to a table of another name")


def _culprit(plan: Plan, line: Line | None) -> Change | None:
    """The change whose rule the kernel refused, if it can be told."""
    if line is None:
        return None
    digest = comment_digest(line)
    if digest is None:
        return None
    for change in plan.changes:
        for obj in (change.after, change.before):
            if (obj is not None and not isinstance(obj, Drift)
                    and render_unit(obj).digest == digest):
                return change
    return None

