"""A CPU bitmap sysctl (``net.core.rps_default_mask``, per namespace since 6.x) as the
kernel pads it: ``01`` written is shown ``1`` on a node of few CPUs, ``00000001`` or
``00000000,00000001`` on bigger ones. Its value was taken as written and every apply
failed ("the kernel stored '1'"); the model now holds one spelling. The kernel's own
view is read with ``ip netns exec NS cat /proc/sys/...``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet import converge, destroy
from k3snet.backends.netlink import NetlinkBackend
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import State, Sysctl
from k3snet.planner import plan

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

_MASK = "/proc/sys/net/core/rps_default_mask"


@pytest.fixture
def ns() -> Iterator[str]:
    with temporary_netns("route") as name:
        if run_in(name, ["test", "-e", _MASK], check=False).returncode != 0:
            pytest.skip("no net.core.rps_default_mask in a namespace (a kernel before 6.5)")
        yield name


def _mask(ns: str) -> str:
    return run_in(ns, ["cat", _MASK]).stdout.strip()


def test_a_cpu_bitmap_written_with_leading_zeros_converges_and_is_given_back(
        ns: str, tmp_path: Path) -> None:
    before = _mask(ns)
    wanted = State(owned=[Sysctl("net.core.rps_default_mask", "00000001")])
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        converge(backend, wanted)
        assert int(_mask(ns).replace(",", ""), 16) == 1
        assert plan(backend.observe(), wanted).changes == ()
        destroy(backend)
    assert _mask(ns) == before
