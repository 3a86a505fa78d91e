"""The netlink backend's gateway lookup keeps its answers only while they hold.

``check`` judges thousands of routes through a handful of gateways, so the lookup
(``_GatewayTables``) keeps each answer until a route holding that gateway comes or
goes. Drawn sequences of routes added and removed, with gateways asked about in
between, must get the answers a lookup built afresh from the routes then in place
gives. No root: the lookup is pure.
"""

from __future__ import annotations

import ipaddress

from hypothesis import example, given
from hypothesis import strategies as st

from k3snet.backends.netlink.backend import _GatewayTables
from k3snet.model import Route
from k3snet.model.route import MAIN_TABLE, RouteScope

TABLES = frozenset({100, MAIN_TABLE, 253})
GATEWAYS = ("10.55.0.5", "10.55.1.5", "fd55::5", "fd55::1:5")


@st.composite
def _routes(draw: st.DrawFn) -> Route:
    family = draw(st.sampled_from((4, 6)))
    # Destinations around the gateways asked about: each holds some of them, or none.
    near = draw(st.sampled_from([g for g in (*GATEWAYS, "10.55.3.3", "fd55::2:2")
                                 if ("." in g) == (family == 4)]))
    length = draw(st.sampled_from((22, 24, 31, 32) if family == 4 else (48, 112, 127, 128)))
    destination = ipaddress.ip_network((near, length), strict=False)
    gateway = draw(st.sampled_from((None, "10.55.0.9" if family == 4 else "fd55::9")))
    scope: RouteScope = "universe" if gateway is not None or family == 6 else draw(
        st.sampled_from(("link", "host", "universe")))
    return Route(destination, gateway=gateway, device=draw(st.sampled_from(("d0", "e0"))),
                 table=draw(st.sampled_from(sorted(TABLES))), scope=scope,
                 metric=draw(st.sampled_from((0, 5))))


_STEPS = st.lists(st.one_of(
    st.tuples(st.just("add"), _routes()),
    st.tuples(st.just("remove"), st.integers(0, 30)),
    st.tuples(st.just("ask"), st.sampled_from(GATEWAYS), st.sampled_from((None, "d0")),
              st.sampled_from(sorted(TABLES)))), max_size=40)


@given(_STEPS)
# A route holding exactly the gateway asked about (its destination's last address too).
@example([("ask", "10.55.0.5", None, MAIN_TABLE), ("add", Route("10.55.0.5/32", device="d0")),
          ("ask", "10.55.0.5", None, MAIN_TABLE)])
@example([("ask", "fd55::5", "d0", 100), ("add", Route("fd55::5/128", device="d0", table=100)),
          ("ask", "fd55::5", "d0", 100)])
def test_kept_answers_equal_a_fresh_lookups_answers(steps: list[tuple[object, ...]]) -> None:
    kept = _GatewayTables(TABLES)
    present: list[Route] = []
    for step in steps:
        if step[0] == "add":
            route = step[1]
            assert isinstance(route, Route)
            kept.add(route)
            present.append(route)
        elif step[0] == "remove":
            if present:
                index = int(str(step[1])) % len(present)
                kept.remove(present.pop(index))
        else:
            _ask, gateway, device, table = step
            family_destination = "10.66.0.0/24" if "." in str(gateway) else "fd66::/64"
            asked = Route(family_destination, gateway=str(gateway),
                          device=None if device is None else str(device), table=int(str(table)))
            fresh = _GatewayTables(TABLES)
            for route in present:
                fresh.add(route)
            assert kept.reachable(asked) == fresh.reachable(asked), asked
