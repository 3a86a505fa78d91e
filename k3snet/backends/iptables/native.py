"""nftables tables of other names beside iptables': base chains that run on k3snet's hooks.

``iptables-save`` shows only iptables' own tables (``ip filter``, ``ip6 nat``, ...).
A table written with ``nft`` under another name (an admin's ``table inet filter``,
firewalld's ``inet firewalld``) has base chains on the same hooks, which the kernel
runs besides iptables' chains, with either flavour: a drop there drops what k3snet's
FORWARD accepts let through (an ``accept`` ends only its own base chain), and a
nat chain at a priority no later than iptables' ``srcnat`` translates a connection
before k3snet's POSTROUTING rules are met.

:func:`read_native` reads them as the nftables backend reads other tables
(:class:`~k3snet.backends.nftables.parse.ForeignReader`): a drop, reject or queue
naming addresses is a :class:`~k3snet.model.ForwardBlock`, a NAT rule met first a
:class:`~k3snet.model.NatBlock`, each a conflict of the wanted rules it may decide.
What those cannot say (a policy drop, a catch-all drop or reject: defaults k3snet
cannot open from iptables) is a warning naming the chain and the first of k3snet's
forward rules it drops (:meth:`NativeRead.default_warnings`), and an iptables accept
it drops meets nothing (:meth:`NativeRead.drops`). A table holding k3snet's
marker chain (the nftables backend's) is passed by, and named
(:attr:`NativeRead.k3snet_tables`). The tables are found in one netlink dump; nothing
is listed when none is of another name, and the listings made for one (``nft -j``)
are bounded in time.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from k3snet._logline import shell_join
from k3snet.backends.nftables.kernel import ListingTimeoutError, Lists, listed_items
from k3snet.backends.nftables.parse import (
    EgressDefault,
    ForeignReader,
    ForwardDefault,
    ForwardDefaults,
)
from k3snet.backends.routed import RoutedBy
from k3snet.errors import BackendError
from k3snet.model import ForwardBlock, ForwardRule, NatBlock, NetObject
from k3snet.render.nftables_batch import list_command

__all__ = ["XT_TABLES", "NativeRead", "Within", "native_tables", "read_native"]

XT_TABLES = frozenset({"filter", "nat", "mangle", "raw", "security"})
"""The names of iptables-nft's tables (in nft families ``ip`` and ``ip6``)."""

NATIVE_SECONDS = 2.0
"""How long the whole read may take (the nftables backend's ``foreign_timeout``)."""

Run = Callable[[list[str], str, float], "subprocess.CompletedProcess[str]"]
"""Runs an argv in the namespace with the given input and timeout."""


@attrs.frozen
class NativeRead:
    """What the nftables tables of other names hold for k3snet's traffic."""

    blocks: frozenset[NetObject] = frozenset()
    """:class:`ForwardBlock` and :class:`NatBlock` objects (foreign)."""
    warnings: tuple[str, ...] = ()
    """What was not read (the defaults' warnings: :meth:`default_warnings`)."""
    k3snet_tables: frozenset[tuple[str, str]] = frozenset()
    """(family, name) of the tables holding k3snet's marker chain: the nftables
    backend's, passed by (not judged here)."""
    defaults: ForwardDefaults = attrs.field(factory=ForwardDefaults, eq=False)
    """The base chains whose default (a policy drop, a catch-all drop or reject) may
    drop forwarded packets, with what the read listed to judge rules against them."""

    def drops(self, rule: ForwardRule) -> bool:
        """Whether a default of these tables may drop ``rule``'s packets, new ones or
        replies (an accept in iptables ends only iptables' chain: it cannot open them)."""
        return bool(self.defaults.found) and bool(self.defaults.unopened([rule]))

    def default_warnings(self, wanted: Sequence[ForwardRule] | None,
                         shown: Callable[[list[str]], str] = shell_join, *,
                         egress: bool = True) -> tuple[str, ...]:
        """A warning for each default that drops a rule of ``wanted`` (k3snet's forward
        rules), naming the first; with ``wanted`` None (not known: no hint, none in
        place), one for each default found. ``shown``: the ``nft list table`` it names,
        as run where the backend read (:func:`~k3snet.backends.netns.shown_command`).
        ``egress``: name the ``netdev`` egress chains too (not beside an nftables backend,
        which names them)."""
        egresses = self.defaults.egress if egress else ()
        if wanted is None:
            return (*(_default_warning(d, None, shown) for d in self.defaults.found),
                    *(_egress_warning(e, None, shown) for e in egresses))
        if not self.defaults.found and not egresses:
            return ()
        ordered = sorted(wanted, key=lambda r: (r.family, r.describe()))
        return (*(_default_warning(d, rule, shown)
                  for d, rule in self.defaults.unopened(ordered)),
                *(_egress_warning(e, rule, shown) for e, rule in self.defaults.leaving(ordered)
                  if egress))


WHOLE_TABLE_CHAINS = 256
"""The most chains a table may have to be listed whole for a chain of it (see
:class:`_Processes`); firewalld's has about a hundred."""

_Items = list[dict[str, Any]]
"""What one ``nft -j list`` prints: its objects."""


class _Processes:
    """``nft -j -f -`` listings in the namespace, each within what is left of ``deadline``
    (where the ``nftables`` Python binding is missing).

    A chain's listing is answered from one listing of its whole table, made the first
    time a chain of that table is asked for: the walk lists up to 64 chains, and each
    was an ``nft`` process of its own (nft prints nothing for a JSON batch of several
    listings, so one process per table is the least). A table of more than
    :data:`WHOLE_TABLE_CHAINS` chains (kube-proxy's nftables mode: a few per service)
    is still listed chain by chain: the walk reads a handful of them.
    """

    def __init__(self, run: Run, deadline: float) -> None:
        self._run = run
        self._deadline = deadline
        self.runs = 0
        # (family, table): each chain's listing in it (None: the table is not there)
        self._tables: dict[tuple[str, str], dict[str, _Items] | None] = {}
        self._chains: dict[tuple[str, str], int] = {}  # how many each table has

    def list(self, kind: str, **ref: str) -> _Items | None:
        if kind != "chain" or set(ref) != {"family", "table", "name"}:
            items = self._list(kind, ref)
            if kind == "chains" and items is not None:
                for item in items:
                    chain = item.get("chain")
                    if isinstance(chain, dict):
                        where = (str(chain.get("family")), str(chain.get("table")))
                        self._chains[where] = self._chains.get(where, 0) + 1
            return items
        where = (ref["family"], ref["table"])
        if self._chains.get(where, 0) > WHOLE_TABLE_CHAINS:
            return self._list(kind, ref)
        if where not in self._tables:
            items = self._list("table", {"family": ref["family"], "name": ref["table"]})
            self._tables[where] = None if items is None else _by_chain(items)
        chains = self._tables[where]
        return None if chains is None else chains.get(ref["name"])

    def _list(self, kind: str, ref: dict[str, str]) -> _Items | None:
        what = " ".join(["list", kind, *ref.values()])
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise ListingTimeoutError(
                f"nft {what!r} not run: past the read's bound ({NATIVE_SECONDS} s)"
            )
        self.runs += 1
        try:
            done = self._run(["nft", "-j", "-f", "-"], list_command(kind, ref), left)
        except BackendError as exc:
            if isinstance(exc.__cause__, subprocess.TimeoutExpired):
                raise ListingTimeoutError(
                    f"nft {what!r} did not finish within the read's bound ({NATIVE_SECONDS} s)"
                ) from exc
            raise
        if done.returncode != 0:
            if "No such file or directory" in done.stderr:
                return None
            raise BackendError(f"nft {what!r} failed: {done.stderr.strip()[:200]}")
        return listed_items(done.stdout, what)


def _by_chain(items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """A table's listing as each of its chains' (``list chain``: the chain, its rules)."""
    chains: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        chain = item.get("chain")
        if isinstance(chain, dict) and isinstance(chain.get("name"), str):
            chains.setdefault(chain["name"], []).insert(0, item)
        rule = item.get("rule")
        if isinstance(rule, dict) and isinstance(rule.get("chain"), str):
            chains.setdefault(rule["chain"], []).append(item)
    return chains


Within = Callable[[float, Callable[[Lists], "NativeRead"]], "NativeRead"]
"""Runs a read with a libnftables :class:`Lists` in the namespace, by a deadline
(``time.monotonic()``), raising :class:`ListingTimeoutError` past it."""


def native_tables(tables: frozenset[tuple[str, str]]) -> frozenset[tuple[str, str]]:
    """The tables of ``tables`` (family, name) that are not iptables-nft's and run on
    k3snet's hooks (families ``ip``, ``ip6``, ``inet``), or on a device's ``ingress`` or
    ``egress`` hook a forwarded packet passes too (``netdev``)."""
    return frozenset((f, n) for f, n in tables if f in ("ip", "ip6", "inet", "netdev")
                     and not (f != "inet" and n in XT_TABLES))


def read_native(
    run: Run, tables: frozenset[tuple[str, str]], within: Within | None = None,
    routed: RoutedBy | None = None,
) -> NativeRead:
    """The base chains of nftables tables iptables does not show, as blocks and warnings.

    ``tables``: (family, name) of every table in the namespace (one netlink dump:
    :meth:`~k3snet.backends.nfgen.GenerationReader.tables`); only tables that are not
    iptables-nft's are listed: through ``within`` (libnftables in the namespace, no
    process per listing) when given, else with ``nft -j`` processes run by ``run``.
    Best effort: a listing that fails or takes too long is a warning (what was not
    read is not judged). ``routed``: the node's routes, which a drop by interface alone
    (a ``netdev`` ingress chain's policy drop on cni0) is judged by
    (:class:`~k3snet.backends.routed.RoutedBy`); without them it is no block.
    """
    xt = frozenset((f, n) for f, n in tables if f in ("ip", "ip6") and n in XT_TABLES)
    native = sorted(native_tables(tables))
    if not native:
        return NativeRead()  # the usual node: nothing listed
    deadline = time.monotonic() + NATIVE_SECONDS
    if within is not None:
        try:
            return within(deadline, lambda lists: _read(lists, xt, routed))
        except ListingTimeoutError as exc:
            return NativeRead(warnings=(f"nftables tables beside iptables not read: {exc}",))
    if shutil.which("nft") is None:
        names = ", ".join(f"{f} {n}" for f, n in native)
        return NativeRead(
            warnings=(
                f"nftables tables {names} run their base chains besides iptables' and k3snet "
                "cannot read them (no nft on PATH): what they drop or translate is not judged",
            )
        )
    return _read(_Processes(run, deadline), xt, routed)


def _read(lister: Lists, xt: frozenset[tuple[str, str]],
          routed: RoutedBy | None = None) -> NativeRead:
    # k3snet's own nftables table (the nftables backend's, beside this one in a group)
    # is passed by: the nftables backend judges it; read here, its 5 000 NAT rules made
    # foreign objects no plan needs, a listing past the read's bound, and then nothing
    # of the other tables read at all.
    reader = ForeignReader(lister, xt, skip_marked=True, routed=routed)
    found = reader.read()
    blocks = frozenset(o for o in found if isinstance(o, ForwardBlock | NatBlock))
    warnings = tuple(f"nftables tables beside iptables' read in part: {u}"
                     for u in reader.unread)
    return NativeRead(blocks, warnings, reader.marked, reader.defaults())


def _egress_warning(egress: EgressDefault, rule: ForwardRule | None,
                    shown: Callable[[list[str]], str]) -> str:
    """The warning of a ``netdev`` egress chain of another table that may drop what leaves
    by its devices (:meth:`ForwardDefaults.leaving`): it runs after every iptables chain
    and NAT, and no iptables accept opens it; ``rule``: the first of k3snet's it may
    drop (``None``: not judged)."""
    dropped = ("what it does not accept is dropped whatever k3snet's rules say"
               if rule is None else f"it may drop the packets of {rule.describe()} as they "
               "leave by it, whatever iptables accepts")
    command = shown(["nft", "list", "chain", "netdev", egress.table, egress.chain])
    return (f"nftables netdev {egress.table} chain {egress.chain}, an egress chain on "
            f"{', '.join(egress.devices)} ({egress.what()}), runs after iptables and "
            f"k3snet's NAT: {dropped}; accept them there by their destination (`{command}` "
            "shows it)")


def _default_warning(d: ForwardDefault, rule: ForwardRule | None,
                     shown: Callable[[list[str]], str]) -> str:
    """The warning of a base chain on a hook forwarded packets pass whose policy, or a
    rule of its own naming no address, may drop them (:meth:`ForeignReader.defaults`, as
    the nftables backend finds them): a default, not a conflict (k3snet cannot open it
    from iptables), but it decides before or after it; ``rule``: the first of k3snet's
    it drops (``None``: not judged)."""
    dropped = ("what this chain does not accept is dropped whatever k3snet's rules say"
               if rule is None else f"it may drop {rule.describe()} whatever iptables "
               "accepts (a foreign accept there does not meet it)")
    return (f"nftables {d.family} {d.table} chain {d.chain} runs on the same hook as "
            f"iptables (not shown by iptables-save): {'; '.join(d.what)}. An accept in "
            f"iptables ends only iptables' chain: {dropped}; accept k3snet's traffic "
            f"there too (`{shown(['nft', 'list', 'table', d.family, d.table])}` shows it)")
