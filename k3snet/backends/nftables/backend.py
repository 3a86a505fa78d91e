"""The ``nftables`` backend: NAT and forward rules in a table k3snet owns, via libnftables.

What it writes
    One table of its own, ``inet k3snet`` (``ip k3snet`` + ``ip6 k3snet`` with
    ``family="split"``), holding two base chains, ``postrouting`` (type nat, hook
    postrouting, priority srcnat) and ``forward`` (type filter, hook forward,
    priority filter), both with policy accept, and an empty regular chain
    ``handle_marker`` (see *Handles*). Nothing is ever written to another table.
    When k3snet owns no rule any more, its table is deleted.

    ``inet`` is the default: NAT works in ``inet`` tables for both families since
    Linux 5.2 (nftables 0.9.1), so one table, one listing and one transaction
    target cover IPv4 and IPv6, and one ``delete table`` removes everything.
    ``split`` is for older kernels, and for hosts whose tooling expects per-family
    tables; it writes the same rules (``snat to`` instead of ``snat ip to``).

How rules look
    :mod:`k3snet.render.nftables` renders every object (``masquerade`` / ``snat`` in
    ``postrouting``; an accept and a ``ct state established,related`` accept for
    the replies in ``forward``), each rule tagged with a comment
    ``k3snet:<content hash>``. :meth:`NftablesBackend.observe` rebuilds the
    objects from the kernel's JSON (:mod:`.parse`), so what it reports is what
    the kernel does.

    NAT statements are terminal, so among overlapping NAT rules the first match
    wins. Rules are kept in :func:`~k3snet.render.nftables.chain_order_key` order
    (more specific first). When a new rule must precede an existing overlapping
    one, the existing one is deleted and re-added after it in the same
    transaction: positioned inserts would make libnftables read every rule of
    every table first.

Drift
    The table is k3snet's, so anything in it that is not exactly what k3snet
    renders is observed as an owned :class:`~k3snet.model.Drift`: a base
    chain's policy, type, hook or priority; a rule or chain k3snet does not
    write; a forward rule without its other half; a duplicate; a tag that is not
    its rule's content's (that rule is also reported as what it now does, so a
    plan replaces it if it is not wanted). Every plan deletes drift (``k3snet
    plan`` exits 2), and the apply of that delete repairs it in the same
    transaction as the rest: the rules are deleted, the chain declared again
    with k3snet's policy, or, for a chain k3snet does not use or a base chain
    with another hook or priority, the table is rebuilt (deleted and written
    again). :attr:`NftablesBackend.drift` describes what the last read found.

Forward rules and other firewalls
    An ``accept`` in k3snet's ``forward`` chain only ends *this* chain: every other
    base chain on the forward hook still sees the packet, and a drop there wins
    (firewalld#527). So a FORWARD policy DROP set through iptables (nft or legacy)
    is **not** opened by this backend; the ``iptables`` backend does that, from
    inside iptables' FORWARD chain. Forward rules here are for hosts whose drop
    comes from an nftables-only setup that defers to k3snet's table, and they
    record the intent (observe, plan and drift work the same).

Transactions
    Each :meth:`~NftablesBackend.apply` sends one batch (:mod:`.batch`), which the
    kernel commits as one transaction: if any command is refused, the kernel
    keeps the ruleset as it was and :class:`~k3snet.errors.ApplyError` is raised
    with ``done=()`` and ``rolled_back=()``. ``faults.fail_at(N)`` (tests,
    :class:`~k3snet.backends.kit.FaultHook`) puts a command the kernel refuses
    after the first ``N`` changes' commands (the deletion of a rule handle that
    cannot exist: libnftables lets it through, the kernel aborts the whole
    transaction).

Handles and caching
    Deleting a rule needs its kernel handle. ``observe`` learns the handles of the
    rules it lists. For the rules an apply adds, libnftables' ``--echo`` would
    report them, but it makes libnftables list the *whole* ruleset first
    (kube-proxy's rules included). Instead each transaction that adds rules ends
    by re-creating the empty ``handle_marker`` chain: the kernel numbers a table's
    objects from one counter, in batch order, under the commit mutex, so the
    marker's new handle (one tiny listing) gives the handle of every rule added
    before it. ``observe`` and ``apply`` first read the generation id (one small
    netlink round trip) and read k3snet's table again only if anyone committed
    since (:mod:`.cache`); ``observe(refresh=True)`` reads it anyway. A read is
    never retried for want of a quiet ruleset (see ``_fresh``): under a foreign
    writer committing all the time, an apply still takes its usual round trips.

The backend is not thread-safe: each instance holds one worker thread inside its
network namespace and one kernel seam (:mod:`.kernel`); use one instance per thread.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import attrs

from k3snet.backends.base import ApplyResult
from k3snet.backends.kit import (
    GC_PAUSE_MIN,
    BackendBase,
    ObserveCache,
    OptionChecks,
    committing,
    fit_problems,
    gc_paused,
    option_flag,
    option_seconds,
    run_option_checks,
    unwritten_problems,
)
from k3snet.backends.netns import NetnsRunner, netns_option, shown_command
from k3snet.backends.nftables.batch import Batch
from k3snet.backends.nftables.cache import (
    Cache,
    Diff,
    Key,
    Repair,
    Table,
    nat_overlap,
    rule_count,
)
from k3snet.backends.nftables.kept import Kept
from k3snet.backends.nftables.kernel import (
    BoundedLister,
    Libnftables,
    Lists,
    NftKernel,
    OwnTableLister,
    beside_listings,
    first_lines,
    listing_key,
    owner_tables,
)
from k3snet.backends.nftables.parse import (
    LEFTOVER,
    ForeignRead,
    ForeignReader,
    ForwardDefaults,
    finish_foreign_read,
    read_foreign_within,
    read_own,
    start_foreign_read,
    table_of,
)
from k3snet.backends.nftables.text import Lines, expected_lines, first_rule_lines
from k3snet.backends.routed import RoutedBy, read_links, read_routes
from k3snet.errors import (
    ApplyError,
    BackendError,
    BackendUnavailableError,
    K3snetError,
    PlanError,
)
from k3snet.model import Drift, ForwardRule, MasqueradeRule, NetObject, SnatRule
from k3snet.model.state import State
from k3snet.planner import Plan
from k3snet.render.nftables import (
    CHAIN_HOOKS,
    FORWARD_CHAIN,
    MARKER_CHAIN,
    NAT_CHAIN,
    TableFamily,
    chain_order_key,
    table_families,
    validate_nft_name,
    validate_own_table,
    validate_table_name,
)
from k3snet.render.nftables_batch import Syntax, validate_syntax

if TYPE_CHECKING:  # imported when routes are read (see _routed)
    from k3snet.backends.netlink.socket_driver import SocketDriver

log = logging.getLogger(__name__)

__all__ = ["NftablesBackend"]

T = TypeVar("T")


def _table_repairs(diff: Diff) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """The tables to rebuild and the base chains to declare again, each with its change."""
    rebuild: dict[str, int] = {}
    chains: dict[str, dict[str, int]] = {}
    for index, _, repair in diff.repairs:
        if repair.rebuild:
            rebuild.setdefault(repair.family, index)
        if repair.chain is not None:
            chains.setdefault(repair.family, {}).setdefault(repair.chain, index)
    return rebuild, chains


_Listings = dict[tuple[str, ...], Future[str | None]]
"""Listings of k3snet's table under way in the listing helper, by :func:`listing_key`."""


@attrs.frozen
class _Started:
    """What :meth:`NftablesBackend.prefetch` started: k3snet's table listed (by listing key;
    none when the kept read stands for it) and the other tables read, after reading the
    generation id ``genid``."""

    genid: int
    listings: _Listings
    foreign: ForeignRead | None
    owners: frozenset[tuple[str, str, int]] = frozenset()  # read before the foreign read


class _Misfit(Exception):  # noqa: N818 - internal signal, never leaves the backend
    """The plan does not fit k3snet's table: the kit's fit check says why."""


_WILDCARD_SEEN: dict[str, str] = {}
"""For each wildcard name (``eth*``) :func:`_has_device` was asked of, a device it
matched: a hint, checked again where asked; at most :data:`_WILDCARD_SEEN_MOST` names,
those whose device was found last (the names come from other programs' chains, which
may use any number of them over an agent's life)."""
_WILDCARD_SEEN_MOST = 64


def _has_device(name: str) -> bool:
    """Whether the calling thread's namespace has a device ``name`` names (nft's ``eth*``:
    one whose name starts so): one ioctl, made only while a chain of another table is
    hooked on a device's ingress or egress (:attr:`~.cache.Cache.absent`,
    :attr:`~.cache.Cache.present`)."""
    try:
        if name.endswith("*"):
            # The device found last (in any namespace: checked in this one) first: one
            # ioctl while it stays; the list of every device is one dump of them all
            # (4 ms at 100 links), made each observe while a wildcard chain is read.
            seen = _WILDCARD_SEEN.get(name)
            with contextlib.suppress(OSError, ValueError):  # gone: the list, as if none
                if seen is not None and socket.if_nametoindex(seen):  # (a name `eth*` too)
                    return True
            found = next((found for _, found in socket.if_nameindex()
                          if found.startswith(name[:-1])), None)
            if found is not None:
                _WILDCARD_SEEN.pop(name, None)  # (found last: kept longest)
                _WILDCARD_SEEN[name] = found
                while len(_WILDCARD_SEEN) > _WILDCARD_SEEN_MOST:
                    # The oldest first; another thread's pop of it too: not twice.
                    with contextlib.suppress(KeyError, StopIteration, RuntimeError):
                        del _WILDCARD_SEEN[next(iter(_WILDCARD_SEEN))]
            return found is not None
        socket.if_nametoindex(name)
    except (OSError, ValueError):  # no such device, or a name no device can take
        return False
    return True


def _foreign_stale(kernel: NftKernel, cache: Cache) -> bool:
    """Whether what ``cache`` read of the other tables went stale with its generation id
    unmoved: a table a process owned went with it (k3snet's own table is never owned),
    or a device a chain of another table is hooked on came (read as dropping nothing), or
    went (read as dropping what the chain drops)."""
    return bool((cache.owners and owner_tables(kernel) != cache.owners)
                or any(_has_device(device) for device in cache.absent)
                or not all(_has_device(device) for device in cache.present))


def _table_name(syntax: str, table: Any, family: TableFamily = "inet") -> str:
    """``table`` if it can name k3snet's table in batches of ``syntax``, else a
    :class:`~k3snet.errors.ModelError`: nft's language cannot name a table after one
    of its words; JSON batches can. Nor another program's table in ``family``
    (:func:`~k3snet.render.nftables.validate_own_table`: ``filter``, ``kube-proxy``)."""
    name = validate_table_name(table) if syntax == "json" else validate_nft_name(table)
    return validate_own_table(name, family)


def _kernel_seam(value: object) -> None:
    """``kernel``: ``None`` or a library caller's callable making the kernel seam, never a
    value a spec, ``--backend-opt`` or a plan file can hold (``kernel: x`` was called
    valid by ``k3snet validate`` and ended ``plan`` with Python's ``'str' object is not
    callable``), as the iptables backend's."""
    if value is not None and (isinstance(value, str | bytes | int | float | list | dict | tuple)
                              or not callable(value)):
        raise BackendError(f"kernel must be a callable making an nftables kernel (a library "
                           f"caller's, as tests give one of recorded listings), got {value!r}")


class NftablesBackend(BackendBase):
    """NAT and forward rules in k3snet's own nftables table, one transaction per apply.

    ``netns``: the network namespace to work in (``None``: the current one; a
    missing namespace raises :class:`~k3snet.errors.BackendError` here).
    ``family``: ``"inet"`` (one table) or ``"split"`` (``ip`` and ``ip6`` tables).
    ``table``: the table name. ``faults.fail_at(N)`` (tests): the next apply
    carries, after the first ``N`` changes' commands, one the kernel refuses, so
    the whole transaction is refused. ``observe_foreign``: whether
    :meth:`observe` reads other tables (a few small listings).
    ``foreign_timeout``: seconds the reading of other tables may take in all
    (default 2); what is not read by then is left out, conservatively, and named
    in :attr:`foreign_unread` (docs/reliability.md, "Progress under load").
    ``read_timeout``: seconds a listing of k3snet's own table may take (default
    10), else a :class:`~k3snet.errors.BackendError` naming it. ``syntax``: batches
    in nft's own language (``"nft"``, the default: less parsing time on large
    batches, and errors quote the refused command) or in libnftables ``"json"``,
    through the same libnftables call. ``kernel``: what makes the kernel seam
    (:class:`~k3snet.backends.nftables.kernel.NftKernel`; called once inside the
    namespace), by default libnftables; tests pass a fake. ``keep_read``: keep what
    is known of the table when closing, and take what the last backend kept instead
    of listing while nothing was committed since (:mod:`.kept`; real kernel only).

    Example (``desired`` a :class:`~k3snet.model.State`)::

        with NftablesBackend("k3snet-demo") as backend:
            p = k3snet.plan(backend.observe(), desired.only(backend.capabilities))
            backend.apply(p)
    """

    name = "nftables"
    option_defaults: ClassVar[Mapping[str, str]] = {"netns": "the caller's own namespace"}
    """What an option left out means (``k3snet explain backends.nftables``)."""
    capabilities: frozenset[str] = frozenset({"nat", "forward"})
    option_checks: ClassVar[OptionChecks] = {
        "netns": netns_option, "family": table_families, "syntax": validate_syntax,
        "observe_foreign": lambda v: option_flag("observe_foreign", v),
        "keep_read": lambda v: option_flag("keep_read", v),
        "foreign_timeout": lambda v: option_seconds("foreign_timeout", v),
        "read_timeout": lambda v: option_seconds("read_timeout", v),
        "kernel": _kernel_seam}
    """The constructor's checks of option values (``table``'s depends on ``syntax``)."""

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The option checks, and ``table``'s as the constructor judges it for the
        ``syntax`` given (a word of nft's language is a name only in JSON batches) and
        the ``family`` (another program's table of the name in one of its families)."""
        problems = super().check_options(options)
        if "table" in options:
            # A syntax or family already refused: the table is not judged against it.
            with contextlib.suppress(K3snetError):
                syntax = validate_syntax(options.get("syntax", "nft"))
                family = options.get("family", "inet")
                table_families(family)
                problems += run_option_checks(
                    {"table": functools.partial(_table_name, syntax, family=family)}, options)
        return problems

    def __init__(
        self,
        netns: str | None = None,
        *,
        family: TableFamily = "inet",
        table: str = "k3snet",
        observe_foreign: bool = True,
        foreign_timeout: float = 2.0,
        read_timeout: float = 10.0,
        syntax: Syntax = "nft",
        kernel: Callable[[], NftKernel] | None = None,
        keep_read: bool = True,
    ) -> None:
        super().__init__()
        _kernel_seam(kernel)
        self._families = table_families(family)
        validate_syntax(syntax)
        # nft's language cannot name a table after one of its words; JSON batches can.
        self._table = _table_name(syntax, table, family)
        if kernel is None:
            try:
                import nftables  # noqa: F401, PLC0415 - only checks the optional dependency
            except ImportError as exc:
                raise BackendUnavailableError(
                    "the nftables backend needs the 'nftables' Python bindings and libnftables1 "
                    "(pip install 'k3snet[nftables]')"
                ) from exc
        self.family: TableFamily = family
        self.observe_foreign = option_flag("observe_foreign", observe_foreign)
        self.foreign_timeout = option_seconds("foreign_timeout", foreign_timeout)
        self.read_timeout = option_seconds("read_timeout", read_timeout)
        self._foreign_unread: tuple[str, ...] = ()
        # The other tables' defaults the last read found, and the last judgment of them
        # (by identity: the defaults read and the hint judged against).
        self._defaults = ForwardDefaults()
        self._judged: tuple[ForwardDefaults, tuple[NetObject, ...],
                            tuple[list[ForwardRule], list[MasqueradeRule | SnatRule]],
                            tuple[str, ...]] | None = None
        self._iptables_beside = False  # an iptables backend in use beside this one (beside())
        # Listings' own libnftables contexts, each in a helper thread (made lazily, in the
        # worker thread), so a listing that never ends can be given up on; only with
        # the real kernel: fakes serve recorded listings. One for k3snet's table, one
        # for the other tables: a foreign chain that never lists never delays k3snet's
        # own, and the foreign context never holds the big listing (the first command
        # after one pays the release of its cache: ~20 ms at 10 000 rules).
        self._bounded: BoundedLister | None = None
        self._foreign_bounded: BoundedLister | None = None
        self._bounded_kernel = kernel is None
        self._route_reader: SocketDriver | None = None  # rtnetlink, for RoutedBy
        self._route_lock = threading.Lock()  # the helper's read, and a given-up one's
        self.keep_read = option_flag("keep_read", keep_read)
        self._kept: Kept | None = None  # the table as the last process left it (.kept)
        self._kept_looked = False
        self.syntax: Syntax = syntax
        self.netns = netns
        """The network namespace this backend acts in (``None``: the caller's own)."""
        self._runner = NetnsRunner(netns)
        self._observed: ObserveCache[Cache] = ObserveCache()
        self._lines: Lines = {}  # the rule lines the last text read read, not read again
        self._expected: tuple[NetObject, ...] = ()  # expect(): what the table likely holds
        self._hinted = False  # whether expect() was called (its forward rules are judged)
        # expect_leaving(): the wanted forward rules another backend manages (a group's
        # iptables member), judged against the other tables' egress chains alone
        self._leaving: tuple[ForwardRule, ...] = ()
        # prefetch(): the generation id read before the listings it started, and them.
        self._started: _Started | None = None
        self._kernel: NftKernel | None = None
        try:
            self._kernel = self._runner.call(kernel or Libnftables)
        except BaseException:
            self._runner.close()
            raise

    # ---------------------------------------------------------------- the protocol

    @property
    def table(self) -> str:
        """The name of k3snet's table(s)."""
        return self._table

    @property
    def drift(self) -> tuple[str, ...]:
        """The :class:`~k3snet.model.Drift` the last read found, described (read-only view).

        Observe reports each finding as an owned Drift object; a plan deletes
        it, and the apply of that delete repairs it.
        """
        cache = self._observed.value
        if cache is None:
            return ()
        return tuple(sorted(drift.describe() for drift, _ in cache.drift.values()))

    @property
    def foreign_unread(self) -> tuple[str, ...]:
        """What the last read of other tables could not list within ``foreign_timeout``,
        or walk within 4096 rules.

        Empty when the foreign state was read whole. Otherwise observe's foreign
        state is incomplete: what is missing is left out conservatively (k3snet's
        rules never override another table's drop; see docs/reliability.md).
        """
        return self._foreign_unread

    @property
    def warnings(self) -> tuple[str, ...]:
        """What the last read found worth saying (``!! warning:`` under ``k3snet plan``):
        an incomplete foreign state, with the listings it lacks; another table's filter
        chain whose default (a policy drop, a catch-all drop or reject) drops forward
        rules :meth:`expect` was given, which k3snet's accepts cannot open; what the read
        could not judge whole (an iptables-nft ``-j CT`` whose options were not read)."""
        found = (self._default_warnings()
                 + tuple(f"nftables: {doubt.said(self._shown)}" for doubt in self._defaults.doubts)
                 + self._partial_warnings()
                 + self._iptables_warnings())
        if not self._foreign_unread:
            return found
        return (f"nftables: other tables were not read whole within {self.foreign_timeout:g} s "
                "(foreign_timeout) and a walk of 4096 rules, or hold a name or string libnftables "
                "cannot list: their rules there are left out of the plan's notes "
                f"(k3snet's rules never override another table's drop): "
                f"{'; '.join(self._foreign_unread)}", *found)

    def beside(self, others: Sequence[object]) -> None:
        """A hint from :class:`~k3snet.backends.group.BackendGroup`: the other backends in
        use with this one. The iptables backend's chains are in use when it is among
        them (``--backend nftables:nat --backend iptables:forward``), not left behind:
        no warning names them (:attr:`warnings`; the group names those of kinds it
        gives another member)."""
        self._iptables_beside = any(getattr(other, "name", None) == "iptables"
                                    for other in others)

    def _iptables_warnings(self) -> tuple[str, ...]:
        """The iptables backend's chains in iptables-nft's tables, passed by as k3snet's
        (they meet none of the spec's rules), when no iptables backend is in use
        beside this one: left by a node's move from ``--backend iptables``."""
        own = self._defaults.iptables_own
        if not own or self._iptables_beside:
            return ()
        chains = ", ".join(f"{family} {table} {chain}" for (family, table), chain in own)
        destroy = self._shown(["k3snet", "destroy", "--backend", "iptables", "--backend-opt",
                               "iptables.mode=nft"])
        return ("nftables: iptables-nft's tables hold chains k3snet's iptables backend wrote "
                f"(its jump from the built-in chain: {chains}): their masquerade and SNAT "
                "rules still translate the pods' connections and their accepts let them "
                "through, on the same hooks as this table's, and this backend counts none "
                "of them as meeting the spec's rules (it writes its own), nor keeps them "
                "up or removes them; if the iptables backend no longer manages this node, "
                f"`{destroy}` removes them",)

    def _shown(self, argv: Sequence[str]) -> str:
        """``argv`` as a shell command that runs where this backend reads, as a warning
        shows it (:func:`~k3snet.backends.netns.shown_command`)."""
        return shown_command(argv, self.netns)

    def _partial_warnings(self) -> tuple[str, ...]:
        """Another table's notracks of one protocol (``udp dport 53 notrack``): no block,
        named when they meet a wanted rule (:mod:`k3snet.backends.untracked`; the wanted
        rules as for :meth:`_default_warnings`)."""
        partial = self._defaults.partial
        if not partial:
            return ()
        # imported here: rare, and no cold import of the CLI's (216 modules)
        from k3snet.backends.untracked import nft_list_chain, partial_untracks  # noqa: PLC0415

        expected: tuple[NetObject, ...] | None = self._expected if self._hinted else None
        if expected is None:
            cache = self._observed.value
            expected = tuple(cache.objects.values()) if cache is not None else ()
        places = self._defaults.places
        said = partial_untracks(partial, expected,
                                lambda where: self._shown(nft_list_chain(where, places)))
        return tuple(f"nftables: {warning}" for warning in said)

    def _default_warnings(self) -> tuple[str, ...]:
        """A warning for each foreign default that drops some wanted forward rule.

        Policies and catch-all drops are no conflicts (docs/reliability.md): a wanted
        rule is still added, but an accept in k3snet's table ends only k3snet's chain,
        so the plan said nothing while the pods' traffic stayed dropped. The wanted
        rules are the hint's (:meth:`expect`: ``converge`` and ``k3snet plan`` give the
        desired state; a group gives its forward rules only to the member managing
        them); without a hint, those k3snet's table holds as the last read or apply
        left it (a library caller planning with :meth:`observe` alone). Judged from
        what the read listed, again only when the defaults read or the wanted rules
        changed (the agent reads again after anyone's commit; docs/performance.md,
        "Other tables' default drops")."""
        defaults = self._defaults
        if not defaults.found and not defaults.egress:
            return ()
        expected: tuple[NetObject, ...] | None = self._expected if self._hinted else None
        if expected is None:
            cache = self._observed.value
            expected = tuple(cache.objects.values()) if cache is not None else ()
        judged = self._judged
        if judged is not None and judged[0] is defaults and judged[1] is expected:
            return judged[3]
        # In a stable order: the warning names the first rule dropped, and is logged on change.
        wanted = sorted((o for o in expected if isinstance(o, ForwardRule)),
                        key=lambda r: (r.family, r.describe()))
        # The NAT rules too: a nat chain after k3snet's never sees what they translate.
        wanted_nat = sorted((o for o in expected if isinstance(o, MasqueradeRule | SnatRule)),
                            key=lambda r: (r.family, r.describe()))
        if judged is not None and judged[2] == (wanted, wanted_nat) and judged[0] == defaults:
            self._judged = (defaults, expected, judged[2], judged[3])
            return judged[3]
        found = tuple(
            f"nftables: {default.family} {default.table} chain {default.chain}, a "
            f"{default.kind} chain of another table that forwarded packets pass "
            f"({'; '.join(default.what)}), may drop {rule.describe()} whatever k3snet's "
            "table accepts (an accept ends only its own chain); accept k3snet's traffic in "
            "that chain too (`"
            f"{self._shown(['nft', 'list', 'chain', default.family, default.table, default.chain])}"
            "` shows it)"
            + ("; or give kind forward to the iptables backend (--backend nftables:nat "
               "--backend iptables:forward), whose FORWARD rules open iptables' policy"
               if default.family in ("ip", "ip6") and default.table == "filter"
               and default.chain == "FORWARD" else "")
            for default, rule in defaults.unopened(wanted, translated=wanted_nat))
        found += tuple(
            f"nftables: {default.family} {default.table} chain {default.chain}, a filter "
            f"chain of another table that forwarded packets pass ({'; '.join(default.what)}), "
            f"lets {rule.describe()} through but may drop a router's ICMP error "
            f"for it (a Packet Too Big, from the router's own address, not {rule.destination}):"
            " path MTU discovery does not learn a smaller MTU on the way and the pods' larger "
            "packets are lost; accept what comes back to the pods from any source there, "
            "in the reply direction alone (`"
            f"{'ip6' if rule.family == 6 else 'ip'} daddr {rule.source} ct direction reply "
            "accept`: the replies and the errors about the pods' packets, not the later "
            "packets of a connection from outside to them)"
            for default, rule in defaults.unopened_errors(wanted))
        found += tuple(
            f"nftables: netdev {egress.table} chain {egress.chain}, an egress chain of another "
            f"table on {', '.join(egress.devices)} ({egress.what()}), may drop the packets "
            f"of {rule.describe()} as they leave by it: it runs after k3snet's NAT, "
            "and sees the pods' packets with the node's address as their source, which k3snet "
            "does not judge its rules by; accept them there by their destination, or check "
            "that it does (`"
            f"{self._shown(['nft', 'list', 'chain', 'netdev', egress.table, egress.chain])}"
            "` shows it)"
            for egress, rule in defaults.leaving(
                sorted({*wanted, *self._leaving}, key=lambda r: (r.family, r.describe()))))
        self._judged = (defaults, expected, (wanted, wanted_nat), found)
        return found

    def observe(self, *, refresh: bool = False) -> State:
        """k3snet's rules and the drift in its table (owned), other tables' rules (foreign).

        Served from the cache when no nftables transaction was committed since the
        last observe or apply (one generation-id query); ``refresh=True`` reads
        the kernel anyway.
        """
        return self._call(lambda kernel: self._observe(kernel, refresh=refresh))

    def expect(self, state: State) -> None:
        """A hint: ``state``'s owned objects are likely what the table holds
        (:func:`~k3snet.converge.converge` passes the desired state).

        Changes no result: the next read of a table with no earlier read's lines
        takes a line that is exactly one of their rules as that object without
        parsing it (docs/performance.md, "Reading k3snet's table as text"). Its
        forward rules are those :attr:`warnings` judges other tables' default drops
        against (without the hint, those k3snet's table holds).
        """
        self._expected = tuple(state.owned)
        self._hinted = True

    def expect_leaving(self, rules: Iterable[ForwardRule]) -> None:
        """A hint: ``rules``, wanted forward rules another backend manages (a group's
        iptables member, ``--backend nftables:nat --backend iptables:forward``), are
        judged against the other tables' ``netdev`` egress chains too, which run after
        any table's accept (:attr:`warnings`). Changes no result."""
        leaving = tuple(rules)
        if leaving != self._leaving:
            self._leaving = leaving
            self._judged = None

    def prefetch(self) -> None:
        """A hint: start listing k3snet's table (and reading the other tables) now, in
        the background, and return.

        The listing (libnftables, in C, with the GIL released) then runs while
        the caller works out what to ask for: ``k3snet apply`` and ``plan`` call
        this before they compile the spec. Changes no result: the next read
        takes what was started only if no nftables transaction was committed
        since it began (the generation id read before it, as every cached read
        is stamped), and reads again otherwise. Does nothing when the next read
        would be served from the cache anyway, or with a fake kernel.
        """
        self._call(self._prefetch)

    def change_token(self) -> Hashable:
        """The ruleset generation id: any committed nftables transaction in the namespace
        (iptables-nft's too) changes it; one small netlink round trip. With tables a
        process owns (``flags owner``), the id and those tables: the kernel deletes
        one when its process ends without moving the id."""
        def token(kernel: NftKernel) -> Hashable:
            genid, owners = kernel.genid(), owner_tables(kernel)
            return (genid, owners) if owners else genid
        return self._call(token)

    def check(self, plan: Plan) -> tuple[str, ...]:
        """Dry run: the problems applying ``plan`` would hit (the kernel sees the batch,
        nothing is committed)."""
        try:
            self.ensure_capable(plan)
        except PlanError as exc:
            return (str(exc),)
        unwritten = unwritten_problems(plan)
        if unwritten:
            return tuple(unwritten)
        return self._call(lambda kernel: self._check(kernel, plan))

    def apply(self, plan: Plan) -> ApplyResult:
        """Apply ``plan`` in one nftables transaction: every change, or none.

        The delete of a :class:`~k3snet.model.Drift` object repairs it in the
        same transaction (an add of one does nothing: drift is never re-created).
        ``operations`` counts kernel round trips: the generation check, the
        transaction, the marker listing, the final generation check (plus a table
        read when the cache is stale).
        """
        self.ensure_capable(plan)
        unwritten = unwritten_problems(plan)
        if unwritten:
            raise PlanError("nftables backend refuses the plan, nothing was changed:\n  "
                            + "\n  ".join(unwritten))
        return self._call(lambda kernel: self._apply(kernel, plan))

    def close(self) -> None:
        """Keep what is known of the table for the next process (:mod:`.kept`), free the
        libnftables context and stop the namespace worker (idempotent)."""
        kept, cache = self._kept, self._observed.value
        if kept is not None and cache is not None:
            with contextlib.suppress(Exception), gc_paused(len(cache.objects)):
                kept.keep(cache)  # only ever a shortcut for the next process
        self._kept = None
        kernel, self._kernel = self._kernel, None
        reader, self._route_reader = self._route_reader, None
        if reader is not None:
            with contextlib.suppress(OSError):
                reader.close()
        helpers = (self._bounded, self._foreign_bounded)
        self._bounded = self._foreign_bounded = None
        for bounded in helpers:
            if bounded is not None:
                with contextlib.suppress(BackendError, OSError):
                    self._runner.call(bounded.close)
        if kernel is not None:
            with contextlib.suppress(BackendError, OSError):
                self._runner.call(kernel.close)
        self._runner.close()
        super().close()

    # ---------------------------------------------------------------- reading

    def _call(self, fn: Callable[[NftKernel], T]) -> T:
        kernel = self._kernel
        if kernel is None:
            raise BackendError("this nftables backend is closed")
        return self._runner.call(lambda: fn(kernel))

    def _table_of(self, obj: NetObject) -> str:
        return table_of(obj, self._families)

    def _fresh(self, kernel: NftKernel, *, foreign: bool, refresh: bool = False) -> Cache:
        """The cache, first re-read from the kernel if anyone committed since it was made.

        No stable read of the whole ruleset is needed, so a foreign writer
        committing all the time never stops k3snet (docs/reliability.md, "Progress
        under load"): each listing of k3snet's table is one consistent dump
        (libnftables lists again by itself when the ruleset changed during it),
        only k3snet writes that table (under the per-namespace lock), and the
        transaction refuses deletes of handles that are gone. The cache is stamped
        with the generation id read *before* the listing: a commit during it only
        makes the next call read again. Foreign tables are read best effort, a
        listing each, never retried: they feed the plan's notes, and may change
        right after the read anyway.
        """
        genid = kernel.genid()
        # What prefetch() started, if nothing was committed since it began; a stale one is
        # settled first, as the listing helper lists one at a time.
        started, self._started = self._started, None
        if started is not None and (started.genid != genid or refresh):
            self._settle(started)
            started = None
        cache = None if refresh else self._observed.get(genid)
        if cache is not None and cache.foreign is not None and _foreign_stale(kernel, cache):
            cache.foreign = cache.state = None
        if cache is None and not refresh and not (started and started.listings):
            kept = self._kept_read()  # the table as the last process left it, if still so
            if kept is not None:
                with gc_paused(GC_PAUSE_MIN):  # the size is in the file
                    cache = kept.cache(genid, self._expected)
            if cache is not None:
                self._observed.put(genid, cache)
        if cache is None:
            listings = started.listings if started else None
            seen, expected = self._lines, self._expected
            # The size is unknown before the listing: a small table costs the pause nothing.
            with gc_paused(GC_PAUSE_MIN):
                if not seen and not expected:
                    listings, seen = self._kept_lines(listings)
                # Rendered now only while a listing still runs (the GIL is free meanwhile);
                # otherwise by the reader, at the table's first rule: an empty or absent
                # table, as before a first apply, costs no rendering.
                running = listings is not None and not all(f.done() for f in listings.values())
                if running and expected and not seen:
                    seen, expected = expected_lines(expected, self._families == ("inet",)), ()
                cache = read_own(self._own_lister(kernel, listings), self._table,
                                 self._families, genid, seen=seen, expected=expected,
                                 mark=self.syntax == "nft")
            self._lines = cache.lines
            self._observed.put(genid, cache)
        ahead = started.foreign if started else None
        if foreign and cache.foreign is None:
            # Stamped before the read, as the generation id: a table gone during it makes
            # the next read look again.
            cache.owners = owner_tables(kernel)
            # The read prefetch started, unless an owned table went since it began.
            taken = ahead if started is not None and started.owners == cache.owners else None
            found = self._read_foreign(kernel, taken)
            cache.absent, cache.present = self._defaults.absent, self._defaults.present
            if taken is not None:
                ahead = None
            # k3snet's tables of the other layout come back as drift, not foreign state.
            leftovers = [o for o in found if isinstance(o, Drift)]
            for drift in leftovers:
                cache.found(drift, Repair(drift.where.split()[0], rebuild=True))
            cache.foreign = found.difference(leftovers) if leftovers else found
            cache.state = None
        if ahead is not None and self._foreign_bounded is not None:
            self._foreign_bounded.abandon(ahead.future)  # not taken: see _settle
        return cache

    def _settle(self, started: _Started) -> None:
        """What a discarded :meth:`prefetch` started: its listings of k3snet's table waited
        for within ``read_timeout``, its read of the other tables abandoned.

        Each helper lists one at a time, so what is queued next would otherwise wait
        behind a listing that may never end (a writer committing all the time) and
        fail its bound: k3snet's table, or the whole foreign read (every table left
        unread instead of the one chain that never lists). A listing given up on, or
        abandoned while it runs, leaves its helper busy: the next listings run in
        child processes (docs/reliability.md). The listing of k3snet's table is
        waited for first, as it is usually about to end (one commit since, not a
        storm), and a child's JSON listing of a big table costs three times more.
        """
        if started.foreign is not None and self._foreign_bounded is not None:
            self._foreign_bounded.abandon(started.foreign.future)
        bounded = self._bounded
        for future in started.listings.values():
            if bounded is None or bounded.busy:
                return
            with contextlib.suppress(Exception):  # that stale listing's own outcome
                bounded.wait(future, time.monotonic() + self.read_timeout)

    def _prefetch(self, kernel: NftKernel) -> None:
        bounded = self._bounded_lister()
        if bounded is None or bounded.busy or self._started is not None:
            return
        genid = kernel.genid()
        if self._observed.get(genid) is not None:
            return
        # Nothing to list when the table is as the last process left it (the kept read);
        # the other tables are read ahead all the same.
        kept = self._kept_read()
        listings = {} if kept is not None and kept.stamped(genid) else self._list_own(bounded)
        foreign = self._foreign_lister() if self.observe_foreign else None
        # The other tables are read meanwhile too, in their own helper.
        owners = owner_tables(kernel) if foreign is not None and not foreign.busy else frozenset()
        ahead = start_foreign_read(foreign, self._own_tables(), self._routed()) \
            if foreign is not None and not foreign.busy else None
        self._started = _Started(genid, listings, ahead, owners)

    def _kept_lines(self, listings: _Listings | None) -> tuple[_Listings | None, Lines]:
        """With neither lines of its own nor a hint: k3snet's table listed in the
        background (unless ``listings`` already runs), and meanwhile the lines of the
        kept read, stale as it is (something was committed since), read as the guess
        of what the listing holds, until the listing ends (docs/performance.md, "After
        another program's commit"). Sound whatever the guess: a listed line is taken as
        the object that reading its own text gives (:func:`~.text.first_rule_lines`)."""
        kept = self._kept_read()
        bounded = self._bounded_lister()
        if kept is None or bounded is None or bounded.busy:
            return listings, {}
        firsts = kept.first_rules()
        if not firsts:
            return listings, {}
        listings = listings or self._list_own(bounded)
        running = tuple(listings.values())
        with beside_listings():
            return listings, first_rule_lines(firsts, lambda: all(f.done() for f in running))

    def _list_own(self, bounded: BoundedLister) -> _Listings:
        """k3snet's table(s) listed by ``bounded``, not waited for (by listing key)."""
        return {listing_key("table", family=family, name=self._table):
                bounded.submit_text("table", family=family, name=self._table)
                for family in self._families}

    def _kept_read(self) -> Kept | None:
        """The kept read of k3snet's table in this namespace (looked up once, in the
        namespace's worker thread); ``None`` with a fake kernel or ``keep_read=False``."""
        if not self._kept_looked:
            self._kept_looked = True
            if self.keep_read and self._bounded_kernel:
                self._kept = Kept.here(self._table, self._families,
                                       mark=self.syntax == "nft")
        return self._kept

    def _observe(self, kernel: NftKernel, *, refresh: bool) -> State:
        cache = self._fresh(kernel, foreign=self.observe_foreign, refresh=refresh)
        return self._state(cache)

    def _state(self, cache: Cache) -> State:
        if cache.state is None:
            foreign = cache.foreign if self.observe_foreign and cache.foreign else ()
            cache.state = State(owned=cache.owned(), foreign=foreign)
        return cache.state

    def _bounded_lister(self) -> BoundedLister | None:
        if self._bounded is None and self._bounded_kernel:
            self._bounded = BoundedLister()
        return self._bounded

    def _foreign_lister(self) -> BoundedLister | None:
        if self._foreign_bounded is None and self._bounded_kernel:
            self._foreign_bounded = BoundedLister()
        return self._foreign_bounded

    def _own_lister(self, kernel: NftKernel,
                    started: _Listings | None = None) -> Lists:
        bounded = self._bounded_lister()
        return kernel if bounded is None else OwnTableLister(kernel, bounded, self.read_timeout,
                                                             started)

    def _own_tables(self) -> frozenset[tuple[str, str]]:
        return frozenset((family, self._table) for family in self._families)

    def _read_foreign(self, kernel: NftKernel,
                      ahead: ForeignRead | None = None) -> frozenset[NetObject]:
        """Other tables' rules; ``ahead``: that read, started by :meth:`prefetch` at the
        generation id of the cache it goes into."""
        bounded = self._foreign_lister()
        if bounded is None:
            reader = ForeignReader(kernel, self._own_tables())
            found = reader.read()
            self._defaults = reader.defaults()
            self.log_warnings()  # each once while it lasts (the kit's WarningLog)
            return found
        deadline = time.monotonic() + self.foreign_timeout
        if ahead is not None:
            found, self._foreign_unread, self._defaults = finish_foreign_read(
                bounded, ahead, deadline)
        else:
            found, self._foreign_unread, self._defaults = read_foreign_within(
                bounded, self._own_tables(), deadline, self._routed())
        self.log_warnings()  # each once while it lasts (the kit's WarningLog)
        return found

    def _routed(self) -> RoutedBy:
        """The node's routes for one read of the other tables: a drop naming an interface
        and no address meets what the node routes by it (:mod:`k3snet.backends.routed`).
        Read at most once, and only when such a drop is judged (one rtnetlink dump; the
        netlink modules imported then), in the thread that reads the tables, which is in
        the namespace (the worker's, or a helper it started). Never on the observe
        cache's path: a route change alone does not move the generation id."""

        def reader() -> SocketDriver:
            if self._route_reader is None:
                from k3snet.backends.netlink.socket_driver import (  # noqa: PLC0415
                    open_dump_driver,  # only when a drop by interface alone is judged
                )

                # This thread is in the namespace already: no worker of its own.
                self._route_reader = open_dump_driver(NetnsRunner(None))
            return self._route_reader

        def load() -> list[tuple[int, int, int, str | None]]:
            with self._route_lock:
                try:
                    return read_routes(reader())
                except (OSError, K3snetError) as exc:
                    log.debug("routes not read (%s): drops by interface judged as any", exc)
                    return [(4, 0, 0, None), (6, 0, 0, None)]  # any device: no narrowing

        def devices() -> list[str] | None:
            # Only when a chain on a device's ingress or egress hook is read (one dump).
            with self._route_lock:
                try:
                    return read_links(reader())
                except (OSError, K3snetError) as exc:
                    log.debug("links not read (%s): every device chain judged", exc)
                    return None  # not known: every name may be a device

        return RoutedBy(load, devices)

    # ---------------------------------------------------------------- planning a batch

    def _diff(self, cache: Cache, plan: Plan) -> Diff:
        """What ``plan`` changes in k3snet's rules and drift; _Misfit if it does not fit."""
        objects = dict(cache.objects)
        change_of: dict[Key, int] = {}
        repairs: list[tuple[int, Drift, Repair]] = []
        for index, change in enumerate(plan.changes):
            subject = change.subject
            key = subject.key
            if isinstance(subject, Drift):
                found = cache.drift.get(key)
                if change.action == "delete" and found is not None and found[0] == subject:
                    repairs.append((index, *found))
                elif change.action != "add":  # an add of drift (an undo) does nothing
                    raise _Misfit
                continue
            current = objects.get(key)
            if change.action == "add" and current is not None:
                raise _Misfit
            if change.action != "add" and (current is None or current != change.before):
                raise _Misfit
            if change.after is None:
                del objects[key]
            else:
                objects[key] = change.after
            change_of.setdefault(key, index)
        before = cache.objects
        removed = [k for k in change_of if k in before and objects.get(k) != before[k]]
        added = [k for k in change_of if k in objects and before.get(k) != objects[k]]
        # A rule with a forged tag that the plan keeps as it now is gets its tag back.
        # (once each: two findings, a forged tag and a rule out of order, may name one)
        retag = list(dict.fromkeys(r.retag for _, _, r in repairs
                                   if r.retag is not None and r.retag not in change_of))
        removed += retag
        added += retag
        moved = self._moves(cache, objects, added, set(removed))
        return Diff(objects, removed, added, moved, change_of, repairs)

    def _moves(self, cache: Cache, objects: dict[Key, NetObject], added: list[Key],
               removed: set[Key]) -> list[Key]:
        """Kept NAT rules that an added rule must precede: they are re-added after it.

        Only rules whose source contains the added rule's source can come after it
        (:func:`chain_order_key` sorts longer sources first), so each added rule
        looks up at most 33 (IPv4) or 129 (IPv6) source prefixes.
        """
        queue = [k for k in added if k[0] == "nat"]
        if not queue or not cache.nat_index:
            return []
        moved: dict[Key, None] = {}
        appended = set(added)
        while queue:
            key = queue.pop()
            version, src, src_len = key[1], key[2], key[3]
            bits = 32 if version == 4 else 128
            order = chain_order_key(objects[key])
            for length in range(src_len, -1, -1):
                masked = src & (((1 << bits) - 1) ^ ((1 << (bits - length)) - 1))
                for other in cache.nat_index.get((version, masked, length), ()):
                    if other in moved or other in appended or other in removed:
                        continue
                    if chain_order_key(objects[other]) > order and nat_overlap(key, other):
                        moved[other] = None
                        queue.append(other)
        return sorted(moved, key=lambda k: chain_order_key(objects[k]))

    def _batch(self, cache: Cache, diff: Diff, inject: int | None) -> Batch:
        batch = Batch(self._table, self.syntax)
        families = ({"inet"} if diff.objects else set()) if self._families == ("inet",) else {
            self._table_of(o) for o in diff.objects.values()}
        appended_by_family: dict[str, list[Key]] = {}
        for key in (*diff.added, *diff.moved):
            appended_by_family.setdefault(self._table_of(diff.objects[key]), []).append(key)
        rebuild, chains = _table_repairs(diff)
        for family in self._families:
            table = cache.tables.get(family)
            if family not in families:
                if table is not None:
                    batch.delete_table(family, rebuild.get(family))
                continue
            if family in rebuild and table is not None:
                batch.delete_table(family, rebuild[family])
                table = None
            batch.ensure_table(family, table, chains.get(family, {}))
            if table is None:
                appended = [k for k, o in diff.objects.items() if self._table_of(o) == family]
            else:
                self._deletes(batch, cache, diff, family)
                appended = appended_by_family.get(family, [])
            appended.sort(key=lambda k: chain_order_key(diff.objects[k]))
            for key in appended:
                batch.add_object(family, diff.objects[key], diff.change_of.get(key))
            if appended:
                batch.marker(family, exists=table is not None and table.marker)
        for family, index in rebuild.items():
            if family not in self._families:  # k3snet's table of the other layout
                batch.delete_table(family, index)
        if inject is not None:
            batch.inject_failure(inject, self._families[0])
        return batch

    def _deletes(self, batch: Batch, cache: Cache, diff: Diff, family: str) -> None:
        deleted: set[int] = set()
        for index, _, repair in diff.repairs:
            if repair.family == family:
                for chain, handle in repair.rules:
                    if handle not in deleted:
                        deleted.add(handle)
                        batch.delete_rule(family, chain, handle, index)
        for keys in (diff.removed, diff.moved):
            for key in keys:
                obj = cache.objects[key]
                if self._table_of(obj) != family:
                    continue
                chain = FORWARD_CHAIN if obj.kind == "forward" else NAT_CHAIN
                for known in cache.handles[key]:
                    assert known is not None  # made sure of by _prepare
                    if known not in deleted:
                        deleted.add(known)
                        batch.delete_rule(family, chain, known, diff.change_of.get(key))

    def _prepare(self, kernel: NftKernel, plan: Plan, inject: int | None,
                 ) -> tuple[Cache, Diff, Batch]:
        # The tables of k3snet's other layout are found by the read of the other tables.
        leftovers = any(isinstance(c.subject, Drift) and c.subject.what.startswith(LEFTOVER)
                        for c in plan.changes)
        cache = self._fresh(kernel, foreign=leftovers)
        diff = self._diff(cache, plan)
        unknown = any(None in cache.handles[k] for k in (*diff.removed, *diff.moved))
        if unknown:  # added by an apply whose marker could not be read: look them up
            cache = self._fresh(kernel, foreign=False, refresh=True)
            diff = self._diff(cache, plan)
        return cache, diff, self._batch(cache, diff, inject)

    def _misfit(self, kernel: NftKernel, plan: Plan) -> list[str]:
        """Every reason ``plan`` does not fit (the kit's words), from a fresh observe."""
        problems = fit_problems(self, plan, self._observe(kernel, refresh=False))
        return problems or ["the plan does not fit k3snet's nftables table"]

    # ---------------------------------------------------------------- check / apply

    def _check(self, kernel: NftKernel, plan: Plan) -> tuple[str, ...]:
        try:
            _, _, batch = self._prepare(kernel, plan, None)
        except _Misfit:
            return tuple(self._misfit(kernel, plan))
        if batch.empty:
            return ()
        if batch.too_large:
            return tuple(problem for _, problem in batch.too_large)
        rc, error = kernel.run(batch.text(), json_input=batch.json, dry_run=True)
        if rc != 0:
            roomy = batch.too_roomy(error)
            return (f"nftables would refuse the transaction: "
                    f"{roomy[1] if roomy is not None else first_lines(error)}",)
        return ()

    def _apply(self, kernel: NftKernel, plan: Plan) -> ApplyResult:
        calls = kernel.calls
        inject = self.faults.take(plan)
        try:
            cache, diff, batch = self._prepare(kernel, plan, inject)
        except _Misfit:
            raise PlanError(f"{self.name} backend refuses the plan, nothing was changed:\n  "
                            + "\n  ".join(self._misfit(kernel, plan))) from None
        if batch.empty:
            return ApplyResult(self.name, plan.changes, operations=kernel.calls - calls)
        if batch.too_large:  # the kernel would refuse the rule with a bare EINVAL: say why
            owner, problem = batch.too_large[0]
            raise ApplyError(f"nftables: nothing was changed, nothing was sent: {problem}",
                             failed=plan.changes[owner] if owner is not None else None)
        genid = cache.genid
        # From here a signal waits for this apply's result to be kept (a group's parts
        # to undo): raised within the listing of the marker or the cache's update, or in
        # the caller while this runs in the namespace's thread, it left the transaction
        # committed and no one took it back ("nothing was changed", exit 130).
        committing()
        rc, error = kernel.run(batch.text(), json_input=batch.json)
        if rc != 0:
            self._observed.invalidate()  # the kit's contract: read again after any failure
            if self._kept is not None:
                self._kept.forget()
            cause = "injected failure (fault hook)" if inject is not None else "nftables"
            owner = inject if inject is not None else batch.owner_in(error)
            roomy = batch.too_roomy(error) if inject is None else None
            if roomy is not None:
                owner = roomy[0] if owner is None else owner
            raise ApplyError(
                f"{cause}: the kernel refused the transaction, nothing was changed: "
                f"{roomy[1] if roomy is not None else first_lines(error)}",
                failed=plan.changes[owner] if owner is not None else None,
            )
        try:
            self._committed(kernel, cache, diff, batch, genid)
        except Exception as exc:  # noqa: BLE001 - the transaction stands: only the cache is lost
            # Raised, the apply failed with its change made: a group took back the others'
            # parts and said nftables changed nothing, its rules left in the kernel.
            self._observed.invalidate()
            if self._kept is not None:
                self._kept.forget()
            log.warning("nftables: the transaction was committed, but what it made could "
                        "not be noted (%s); the table is read again next time", exc)
        return ApplyResult(self.name, plan.changes, operations=kernel.calls - calls)

    def _committed(self, kernel: NftKernel, cache: Cache, diff: Diff, batch: Batch,
                   genid: int) -> None:
        """After a committed transaction: the cache made what it made of the kernel, from
        the marker's handle, if no one else committed meanwhile; else it is dropped."""
        markers: dict[str, int | None] = {}
        handle_of = getattr(kernel, "chain_handle", None)  # a recorded kernel has none
        for family in batch.marked:
            if handle_of is not None:
                markers[family] = handle_of(family, self._table, MARKER_CHAIN)
                continue
            items = kernel.list("chain", family=family, table=self._table, name=MARKER_CHAIN) or []
            chains = [i["chain"] for i in items if isinstance(i.get("chain"), dict)]
            found = chains[0].get("handle") if chains else None
            markers[family] = found if isinstance(found, int) else None
        if kernel.genid() == genid + 1:
            self._commit(cache, diff, batch, markers, genid + 1)
        else:
            self._observed.invalidate()  # someone else committed too: what we know may be stale

    def _commit(self, cache: Cache, diff: Diff, batch: Batch,
                markers: dict[str, int | None], genid: int) -> None:
        """Make the cache what the committed batch made of the kernel (no re-read)."""
        for family in batch.deleted_tables:
            cache.tables.pop(family, None)
        for family in batch.created_tables:
            cache.tables[family] = Table()
        for family, chain in batch.created_chains:
            cache.tables[family].chains[chain] = dict(CHAIN_HOOKS[chain])
        for family in batch.marked:
            cache.tables[family].marker = True
        repaired = {drift.key for _, drift, _ in diff.repairs}
        gone = set(batch.deleted_tables)  # a rebuilt or deleted table took all its drift along
        cache.drift = {key: found for key, found in cache.drift.items()
                       if key not in repaired and found[1].family not in gone}
        for key in diff.removed:
            cache.drop(key)
        for key in diff.added:
            cache.put(key, diff.objects[key])
        cache.bodies.update(batch.bodies)
        for family, rules in batch.added.items():
            marker = markers.get(family)
            for position, (key, slot) in enumerate(rules):
                # Handles count up in batch order, and the marker was allocated last.
                handle = None if marker is None else marker - (len(rules) - position)
                slots = cache.handles.setdefault(key, [None] * rule_count(diff.objects[key]))
                slots[slot] = handle
        cache.genid = genid
        cache.state = None
        self._observed.put(genid, cache)
