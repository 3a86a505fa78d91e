"""A sysctl whose value k3snet found empty gets that empty value back on destroy.

``net.ipv4.ip_local_reserved_ports`` is empty on a fresh node, and Kubernetes' advice
is to reserve the NodePort range in it (``30000-32767``). The empty value was recorded
as no record at all: destroy said the sysctl was given back and left the ports
reserved. The kernel's own view is read with ``ip netns exec NS cat /proc/sys/...``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet import converge, destroy
from k3snet.backends.netlink import NetlinkBackend
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import State, Sysctl

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

_RESERVED = "net.ipv4.ip_local_reserved_ports"


@pytest.fixture
def ns() -> Iterator[str]:
    with temporary_netns("route") as name:
        yield name


def _reserved(ns: str) -> str:
    return run_in(ns, ["cat", "/proc/sys/net/ipv4/ip_local_reserved_ports"]).stdout


def test_destroy_gives_an_empty_previous_value_back(ns: str, tmp_path: Path) -> None:
    assert _reserved(ns) == "\n"  # the kernel's default: no port reserved
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        converge(backend, State(owned=[Sysctl(_RESERVED, "30000-32767")]))
        assert _reserved(ns) == "30000-32767\n"
        owned = backend.observe().owned
        assert [o.name for o in owned] == [_RESERVED]
        destroy(backend)
    assert _reserved(ns) == "\n"
    record = json.loads((tmp_path / ns / "sysctl.json").read_text())
    assert record["owned"] == {}


def test_an_empty_previous_value_is_recorded_so_that_older_versions_read_no_record(
        ns: str, tmp_path: Path) -> None:
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        converge(backend, State(owned=[Sysctl(_RESERVED, "30000-32767")]))
    record = json.loads((tmp_path / ns / "sysctl.json").read_text())
    # "previous": null is what an older k3snet reads (its model refuses ""): no record,
    # as it wrote itself, never a value that fails its observe.
    assert record["owned"][_RESERVED] == {"value": "30000-32767", "previous": None,
                                          "previous_empty": True}
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        assert backend._store.load().owned[_RESERVED] == ("30000-32767", "")
