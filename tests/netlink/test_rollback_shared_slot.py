"""Rolling back the delete of a route whose slot (table, destination, metric) another
route shares: the kernel holds both (IPv4: ``ip route append``; IPv6: a route learned
from router advertisements, or one through a device only, beside a gateway route).

The undo puts the deleted route back. An add with ``NLM_F_EXCL`` is refused there
("File exists"): the rollback failed, "the system may be half-changed", and the node
was left without k3snet's route (its IPv6 default route, say). The kernel's own view
(``ip -j route show table all``) must be as before the apply.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.errors import ApplyError
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import Route, State
from k3snet.planner import plan

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

Driver = Literal["socket", "pyroute2"]


def _ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True,
                          text=True).stdout


def kernel_routes(ns: str) -> list[list[dict[str, Any]]]:
    """Every route of both families, all tables, as ``ip -j`` reports them, in order."""
    return [json.loads(_ip(ns, "-j", family, "route", "show", "table", "all"))
            for family in ("-4", "-6")]


@pytest.fixture
def ns() -> Iterator[str]:
    with temporary_netns("slot") as name:
        run_in(name, ["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                      "net.ipv6.conf.default.accept_dad=0"])
        for dev in ("d0", "e0"):
            _ip(name, "link", "add", dev, "type", "veth", "peer", "name", f"{dev}p")
            _ip(name, "link", "set", f"{dev}p", "up")
            _ip(name, "link", "set", dev, "up")
        _ip(name, "addr", "add", "10.0.0.1/24", "dev", "d0")
        _ip(name, "addr", "add", "fd00::1/64", "dev", "d0", "nodad")
        yield name


_OWNED = Route("10.1.0.0/24", gateway="10.0.0.2", device="d0")
_OWNED6 = Route("fd01::/64", gateway="fd00::2", device="d0")
# Deleted after the route above: the failure injected before it rolls that delete back.
_OTHER = Route("10.2.0.0/24", gateway="10.0.0.2", device="d0")
_OTHER6 = Route("fd02::/64", gateway="fd00::2", device="d0")


@pytest.mark.parametrize("driver", ["socket", "pyroute2"])
@pytest.mark.parametrize("case", [
    (_OWNED, _OTHER, ("route", "append", "10.1.0.0/24", "via", "10.0.0.3", "dev", "d0",
              "proto", "static")),
    (_OWNED6, _OTHER6, ("-6", "route", "append", "fd01::/64", "dev", "e0", "proto", "static",
               "metric", "1024")),
], ids=["ipv4-append", "ipv6-device-route"])
def test_a_rolled_back_delete_puts_a_route_sharing_its_slot_back_as_it_was(
        ns: str, tmp_path: Path, driver: Driver,
        case: tuple[Route, Route, tuple[str, ...]]) -> None:
    owned, other, foreign = case
    with NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        backend.apply(plan(backend.observe(), State(owned=[owned, other])))
        _ip(ns, *foreign)  # the administrator's route, in the same slot
        before = kernel_routes(ns)
        teardown = plan(backend.observe(), State())
        assert [c.before for c in teardown.changes] == [owned, other]
        backend.faults.fail_at(len(teardown.changes) - 1)
        with pytest.raises(ApplyError) as caught:
            backend.apply(teardown)
        assert "ROLLBACK FAILED" not in str(caught.value)
        after = kernel_routes(ns)
        assert after[0] == before[0]  # IPv4: first in its slot again, as it was
        # IPv6 puts a route after those of its slot: the same routes, perhaps reordered.
        assert sorted(map(json.dumps, after[1])) == sorted(map(json.dumps, before[1]))
        assert backend.observe().owned == {owned, other}
