"""The netlink backend's route view: the routes of its tables, kept warm by notifications.

After a dump, the view is kept in memory and updated from the notifications the
backend's own requests cause (they carry its port id and the route *as the
kernel stored it*). Any other notification (another program's route, a link,
address or nexthop-object change, a lost notification) bumps a generation counter,
the view's version token in a :class:`~k3snet.backends.kit.ObserveCache`, and the
next read dumps again. So one change among 10 000 routes costs one request, and drift is
never hidden. A driver that reads no notifications (pyroute2) gets a fresh dump
at the start of every public call (:meth:`RouteCache.begin`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs

from k3snet.backends.kit import GC_PAUSE_MIN, ObserveCache, gc_paused
from k3snet.backends.netlink.codec import (
    HDR,
    NLM_F_REPLACE,
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_DELNETCONF,
    RTM_DELNEXTHOP,
    RTM_DELROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWNETCONF,
    RTM_NEWNEXTHOP,
    RTM_NEWROUTE,
    Link,
    Siblings,
    decode_route,
    expected_routes,
    header_of,
)
from k3snet.backends.netlink.driver import RouteDriver
from k3snet.model.route import K3SNET_ROUTE_PROTOCOL, Route, RouteBlock

__all__ = ["RouteCache", "RouteView"]


def _never() -> bool:
    return False


_APPENDED = "multipath (nexthops appended to k3snet's)"  # what the other siblings are


@attrs.define
class RouteView:
    """Routes in the observed tables: owned by key, foreign as a set; ``shared``, the keys
    of owned routes other nexthops were appended to (IPv6 multipath: :class:`Siblings`)."""

    owned: dict[tuple[Any, ...], Route]
    foreign: set[Route | RouteBlock]
    shared: set[tuple[Any, ...]] = attrs.field(factory=set)


class RouteCache:
    """The links and the route view of one namespace, read through ``driver``.

    ``protocol`` marks k3snet's routes; ``tables`` are the managed tables
    (``None``: all the driver reports).
    """

    def __init__(self, driver: RouteDriver, protocol: int, tables: frozenset[int] | None,
                 where: str) -> None:
        self.driver = driver
        self.protocol = protocol
        self.tables = tables
        self.where = where
        self._routes: ObserveCache[RouteView] = ObserveCache()
        self._generation = 0
        self._edits = 0  # in-place updates from our own notifications
        # Route notifications while no view was kept (none read yet, dropped, or being
        # dumped): they move the version, not the generation a dump is checked against.
        self._unseen = 0
        self._links: dict[int, Link] | None = None
        self._names: dict[int, str] = {}
        self._expected: tuple[Route, ...] = ()  # expect(): what the next dump likely holds
        # Notifications the node facts may have changed with (see facts_version).
        self._facts_moves = 0
        self._facts_blind = frozenset({protocol, K3SNET_ROUTE_PROTOCOL})
        # Netconf, link and lost notifications: a forwarding switch may have changed.
        self._switch_moves = 0
        self.silent: Callable[[], bool] = _never
        """Whether the kernel may now delete routes without a notification: the view is
        then dumped again at every public call (:meth:`begin`)."""

    def expect(self, routes: Iterable[Route]) -> None:
        """A hint for the next dump: these routes are likely there (changes no result)."""
        self._expected = tuple(routes)

    def begin(self) -> None:
        """Start a public call: a driver that cannot follow changes forgets what it read,
        and so does one while the kernel may delete routes unannounced (:attr:`silent`)."""
        if not self.driver.follows_changes or self.silent():
            self.forget()

    def forget(self) -> None:
        """Drop the links and the route view: the next read dumps again."""
        self._stale()
        self._links = None

    def in_scope(self, table: int) -> bool:
        """Whether ``table`` is one of the managed tables."""
        return self.tables is None or table in self.tables

    def links(self) -> dict[int, Link]:
        """The namespace's links by index (dumped when unknown)."""
        self.sync()
        if self._links is None:
            links = self.driver.links()
            self._links = links
            self._names = {index: link.name for index, link in links.items()}
        return self._links

    def view(self) -> RouteView:
        """The routes of the managed tables: kept from notifications, or dumped again."""
        unseen = self._unseen
        view = self._routes.read(self._token, self._load, what=f"the routes of {self.where}")
        if self._unseen != unseen:
            # A route changed while it was dumped, perhaps after the dump passed its place:
            # this reading stands, the next one dumps again. (Checking the dump against it
            # instead failed every observe on a node whose routes change a few times a
            # second.)
            self._routes.invalidate()
        return view

    @property
    def version(self) -> tuple[int, int]:
        """Changes whenever the view does (read it after :meth:`view`, which syncs), and
        with every route notification while no view is kept."""
        return self._generation, self._edits + self._unseen

    @property
    def facts_version(self) -> int:
        """Moves with every notification :attr:`version` moves with but those of k3snet's
        own routes (``protocol``, or 211) that replaced nothing: the node facts leave such
        routes out (:func:`k3snet.gather_facts`), so a k3snet route deleted by another
        program and put back does not make the agent read them again. A replace counts:
        the route it replaced, perhaps another program's, is gone without a notification
        of its own."""
        return self._facts_moves

    @property
    def switches_version(self) -> int:
        """Moves with every notification that may come with a changed IPv4 ``forwarding``
        switch: netconf (a switch changed: the kernel announces each, when the driver
        listens to them), link (an interface came, went or was renamed) and lost ones.
        Read it after :meth:`sync`."""
        return self._switch_moves

    def _token(self) -> int:
        self.sync()
        return self._generation

    def _load(self) -> RouteView:
        self.links()
        view = RouteView({}, set())
        expected, self._expected = self._expected, ()
        with gc_paused(GC_PAUSE_MIN):  # the size is unknown before the dump
            if expected and getattr(self.driver, "reads_expected", False):
                dumped = self.driver.routes(  # type: ignore[call-arg]
                    self.tables, self._names, expected=expected_routes(expected))
            else:
                dumped = self.driver.routes(self.tables, self._names)
            for route in dumped:
                if self.in_scope(route.table):
                    self._sort_into(view, route)
        return view

    def _sort_into(self, view: RouteView, route: Route | RouteBlock | Siblings) -> None:
        if isinstance(route, Siblings):
            first = route.first
            if first.protocol == self.protocol and first.key not in view.owned:
                # Another program's nexthops appended to k3snet's route (ip -6 route
                # append): the route stays k3snet's (its delete takes that nexthop
                # alone back), the others a foreign block in its slot, of a protocol the
                # dump does not say. Read as one foreign block, k3snet's route stayed
                # once the spec dropped it.
                view.owned[first.key] = first
                view.foreign.add(attrs.evolve(route.whole, what=_APPENDED, protocol=0))
                view.shared.add(first.key)
            else:
                view.foreign.add(route.whole)
            return
        # A RouteBlock is never k3snet's, whatever its protocol: k3snet never writes one.
        if (isinstance(route, Route) and route.protocol == self.protocol
                and route.key not in view.owned):
            view.owned[route.key] = route
        else:  # foreign, or a second k3snet route in one slot (ip route append): not ours
            view.foreign.add(route)

    def sync(self) -> None:
        """Apply pending notifications to the kept view; forget it on anyone else's change."""
        messages, lost = self.driver.notifications()
        if lost:
            self._facts_moves += 1
            self._switch_moves += 1
            self.forget()
            return
        for msg in messages:
            _length, kind, flags, _seq, pid = header_of(msg)
            if kind in (RTM_NEWNETCONF, RTM_DELNETCONF):
                self._switch_moves += 1  # nothing the facts or the routes hold
                continue
            if not (kind in (RTM_NEWROUTE, RTM_DELROUTE) and not flags & NLM_F_REPLACE
                    and len(msg) > HDR + 5 and msg[HDR + 5] in self._facts_blind):
                self._facts_moves += 1  # byte 5 of the rtmsg: the route's protocol
            if kind in (RTM_NEWLINK, RTM_DELLINK):
                self._switch_moves += 1
                # IPv4 drops routes of a vanished device without a notification.
                self.forget()
            elif kind in (RTM_NEWADDR, RTM_DELADDR):
                self._stale()  # connected routes come and go without our requests
            elif kind in (RTM_NEWNEXTHOP, RTM_DELNEXTHOP):
                # IPv4 drops the routes through a deleted nexthop object without a
                # notification (and a replaced one changes what its routes are).
                self._stale()
            elif kind in (RTM_NEWROUTE, RTM_DELROUTE):
                view = self._routes.value
                if view is not None:
                    self._follow(view, kind, pid, msg)
                else:
                    # No view to follow: the version still moves, as route_token()
                    # promises the node facts it keeps.
                    self._unseen += 1

    def _follow(self, view: RouteView, kind: int, pid: int, msg: bytes) -> None:
        """Update ``view`` from the kernel's report of one of our own requests."""
        if pid != self.driver.portid or self._links is None:
            self._stale()
            return
        # No links() here: it would drain notifications inside this loop.
        route = decode_route(msg, self._names)
        if (not isinstance(route, Route) or route.protocol != self.protocol
                or not self.in_scope(route.table) or route.key in view.shared):
            # (A change of a route other nexthops share: what stays of them is dumped.)
            self._stale()
        elif kind == RTM_NEWROUTE:
            view.owned[route.key] = route
            self._edits += 1
        elif view.owned.get(route.key) == route:
            del view.owned[route.key]
            self._edits += 1
        else:
            self._stale()

    def _stale(self) -> None:
        """The route view no longer matches the kernel (the links still do)."""
        self._generation += 1
        self._routes.invalidate()
