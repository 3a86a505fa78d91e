"""Foreign routes that take the traffic of k3snet's own, in a namespace made per test.

The kernel's own view (``ip -j route get``) says which route carries the traffic;
the plan must say the same: a conflict naming the foreign route, and nothing
that an apply then refuses.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet import converge
from k3snet.backends.netlink import NetlinkBackend
from k3snet.errors import ConflictError
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import Route, State
from k3snet.planner import plan

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]


def _ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def ns() -> Iterator[str]:
    """A namespace with one veth pair (both ends inside), IPv4 and IPv6 addresses."""
    with temporary_netns("route") as name:
        run_in(name, ["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                      "net.ipv6.conf.default.accept_dad=0"])
        _ip(name, "link", "set", "lo", "up")
        _ip(name, "link", "add", "d0", "type", "veth", "peer", "name", "d0p")
        _ip(name, "link", "set", "d0p", "up")
        _ip(name, "link", "set", "d0", "up")
        _ip(name, "addr", "add", "10.0.0.1/24", "dev", "d0")
        _ip(name, "addr", "add", "fd00::1/64", "dev", "d0", "nodad")
        yield name


@pytest.fixture
def backend(ns: str, tmp_path: Path) -> Iterator[NetlinkBackend]:
    with NetlinkBackend(ns, state_dir=tmp_path) as made:
        yield made


def _via(ns: str, address: str) -> str:
    """The gateway the kernel sends ``address`` to (``ip -j route get``)."""
    family = "-6" if ":" in address else "-4"
    (entry,) = json.loads(_ip(ns, family, "-j", "route", "get", address))
    return str(entry["gateway"])


def _routes(ns: str) -> list[object]:
    return [json.loads(_ip(ns, family, "-j", "route", "show", "table", "all"))
            for family in ("-4", "-6")]


@pytest.mark.parametrize(("mine", "intruder", "probe"), [
    (Route("10.8.0.0/24", gateway="10.0.0.2", device="d0", metric=100),
     ("route", "add", "10.8.0.0/24", "via", "10.0.0.3", "metric", "50", "proto", "static"),
     "10.8.0.9"),
    (Route("10.8.0.0/24", gateway="10.0.0.2", device="d0", metric=100),
     ("route", "append", "10.8.0.0/24", "via", "10.0.0.3", "metric", "100", "proto", "static"),
     None),  # the same slot: which of the two the kernel picks is its business
    # IPv6 metric 0 is 1024: a foreign route at 1000 comes first.
    (Route("fd08::/64", gateway="fd00::2", device="d0", metric=0),
     ("-6", "route", "add", "fd08::/64", "via", "fd00::3", "metric", "1000", "proto", "static"),
     "fd08::9"),
], ids=["v4-lower-metric", "v4-same-slot", "v6-metric-0-is-1024"])
def test_a_foreign_route_added_in_front_of_ours_is_a_conflict(
        ns: str, backend: NetlinkBackend, mine: Route, intruder: tuple[str, ...],
        probe: str | None) -> None:
    desired = State(owned=[mine])
    converge(backend, desired)
    if probe is not None:
        assert _via(ns, probe) == str(mine.gateway)
    assert plan(backend.observe(), desired).render() == "No changes. The system matches the spec."

    _ip(ns, *intruder)
    if probe is not None:
        assert _via(ns, probe) != str(mine.gateway)  # the kernel's view: ours is shadowed
    p = plan(backend.observe(), desired)
    assert p.empty
    (note,) = p.conflicts
    assert note.wanted == note.owned == mine
    assert str(note.foreign.destination) == str(mine.destination)
    assert note.foreign.protocol == 4
    assert note.foreign.describe() in p.render()
    before = _routes(ns)
    with pytest.raises(ConflictError, match="conflicts with foreign"):
        converge(backend, desired)
    assert _routes(ns) == before


def test_a_gateway_change_with_a_foreign_route_in_the_slot_is_a_conflict_not_a_replace(
        ns: str, backend: NetlinkBackend) -> None:
    mine = Route("10.8.5.0/24", gateway="10.0.0.2", device="d0")
    converge(backend, State(owned=[mine]))
    _ip(ns, "route", "append", "10.8.5.0/24", "via", "10.0.0.3", "proto", "static")
    moved = State(owned=[Route("10.8.5.0/24", gateway="10.0.0.4", device="d0")])
    p = plan(backend.observe(), moved)
    assert p.changes == ()  # no replace that the backend would refuse
    (note,) = p.conflicts
    assert note.owned == mine
    assert "10.0.0.3" in note.foreign.describe()
    before = _routes(ns)
    with pytest.raises(ConflictError):
        converge(backend, moved)
    # Told to go ahead despite conflicts, the apply does what the plan says: nothing.
    done = converge(backend, moved, allow_conflicts=True)
    assert done.result is None
    assert _routes(ns) == before
