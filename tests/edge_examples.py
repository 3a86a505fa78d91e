"""The route edges of ``k3snet.testing.strategies`` as explicit hypothesis examples.

``routes()`` draws them now and then among random prefixes; a property test of 50
examples (the ``mutation`` and ``lowest`` profiles, derandomized for the first) may
meet none of some: the netlink codec's round trip never met ``0.0.0.0/0`` nor
``0.0.0.0/32`` under ``make mutation``. ``@edge_examples(...)`` runs a test on each
every time, whatever the profile.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import example

from k3snet.model import Route
from k3snet.testing.strategies import EDGE_DESTINATIONS

_T = TypeVar("_T", bound=Callable[..., Any])

LARGEST = 2**32 - 1


def edge_routes(device: str = "eth0") -> list[Route]:
    """A route on ``device`` to each of ``EDGE_DESTINATIONS``, and one of the largest
    table and metric (to the first of them)."""
    edges = [Route(net, device=device) for version in (4, 6) for net in EDGE_DESTINATIONS[version]]
    return [*edges, Route(edges[0].destination, device=device, table=LARGEST, metric=LARGEST)]


def edge_examples(*rest: Any, device: str = "eth0", **named: Any) -> Callable[[_T], _T]:
    """``@example(route, *rest, **named)`` for each of :func:`edge_routes`."""
    def decorate(test: _T) -> _T:
        for route in edge_routes(device):
            test = example(route, *rest, **named)(test)
        return test
    return decorate
