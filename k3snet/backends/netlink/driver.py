"""The I/O seam of the netlink backend: how it reads and writes routes, links, addresses.

:class:`RouteDriver` is everything the backend asks of the kernel for routes;
sysctls go through files (``proc_sys``). Two drivers implement it
(:class:`~.socket_driver.SocketDriver`, :class:`~.pyroute2_driver.Pyroute2Driver`),
and a test can hand the backend its own (``NetlinkBackend(driver=factory)``) to
run the backend's logic without root.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final, Protocol

from k3snet.backends.netlink.codec import Interface, Link, NetlinkError, Siblings
from k3snet.backends.netns import NetnsRunner
from k3snet.model.route import Route, RouteBlock
from k3snet.planner import Change

__all__ = ["DUMP_RETRIES", "DriverFactory", "RouteDriver"]

DUMP_RETRIES: Final = 5
"""How often a driver starts a dump again that the kernel reports as interrupted."""


class RouteDriver(Protocol):
    """Protocol: how the netlink backend reads and writes routes in its namespace.

    Every method acts on the backend's namespace only, and counts each round trip
    to the kernel through the ``count`` callback the driver was built with.
    """

    @property
    def follows_changes(self) -> bool:
        """Whether ``notifications`` reports route, link and address changes (else the
        backend forgets its route view at the start of every call and dumps again)."""
        ...

    @property
    def portid(self) -> int:
        """The netlink port id the kernel's reports of our own requests carry."""
        ...

    def links(self) -> dict[int, Link]:
        """The namespace's links by index."""
        ...

    def addresses(self) -> dict[int, list[Interface]]:
        """The namespace's IPv4 and IPv6 addresses by link index."""
        ...

    def routes(self, tables: frozenset[int] | None,
               names: Mapping[int, str]) -> Sequence[Route | RouteBlock | Siblings]:
        """The routes of ``tables`` (``None``: all), both families: each a Route, or a
        RouteBlock where a route stands that k3snet cannot model (:func:`~.codec.route_of`),
        or an IPv6 multipath route as :class:`~.codec.Siblings`.

        Optional: a driver with ``reads_expected = True`` also takes ``expected=``,
        routes by the fields of their message (:func:`~.codec.expected_routes`), and
        returns a route whose message has exactly one's fields as that very object
        (the backend passes them when :meth:`NetlinkBackend.expect` named some).
        """
        ...

    # Optional: ``rules()``, the policy rules in the kernel's order (list[LookupRule],
    # :func:`~.codec.decode_rule`); without it ``check`` takes the rules a namespace
    # starts with, and the warnings name no route a rule takes. Both drivers read them.
    # Optional too: ``local_routes(names, longest)``, the routes of table ``local``
    # (list[LocalRoute], :func:`~.codec.local_route_of`) that matter to destinations of
    # at most ``longest[version]`` bits (:func:`~.codec.local_route_matters`); without it
    # the warnings name no route an AnyIP route of that table takes. Optional:
    # ``source_routes(names)``, the IPv6 source-specific routes (list[SourceRoute],
    # :func:`~.codec.decode_source_route`); without it the warnings name none.

    def send(self, changes: Sequence[Change],
             indexes: Mapping[str, int]) -> dict[int, NetlinkError]:
        """Make every route change (all are attempted); the kernel's refusals by position.

        ``indexes`` maps every device the changes name to its link index. Raises
        OSError when the kernel's answers were lost (outcome unknown).

        Optional: a driver with ``restores = True`` also takes ``restoring=``; when
        true the changes undo earlier ones, and an add puts back a route k3snet
        deleted without ``NLM_F_EXCL`` (:func:`~.codec.route_message`): another
        route may share its slot, as it did before the delete.
        """
        ...

    def notifications(self) -> tuple[list[bytes], bool]:
        """Pending raw notifications (netlink messages), and whether some were lost.

        Optional: a driver with ``follows_forwarding = True`` reports IPv4
        ``RTM_NEWNETCONF`` ones too (every change of a ``forwarding`` switch); the
        backend then reads the switches for its warnings only after one of those, a
        link notification or a loss (else on every call)."""
        ...

    def close(self) -> None:
        """Release the driver's sockets (idempotent)."""
        ...


DriverFactory = Callable[[NetnsRunner, Callable[[], None]], RouteDriver]
"""What builds a driver: ``factory(runner, count)``; ``runner`` runs code in the
backend's namespace, ``count`` is called once per round trip to the kernel."""
