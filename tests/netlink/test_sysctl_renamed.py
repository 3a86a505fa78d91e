"""A sysctl wanted under its other name (``net.ipv4.ip_forward`` for
``net.ipv4.conf.all.forwarding``: one kernel value) is written under the new name before
the old one is given back.

Given back first, the old name wrote the value k3snet found (forwarding off), and the
pods' traffic was dropped until the new name's add turned it on again, for good when the
run was killed in between. Added first, the new name takes over the value the old name
recorded, and giving the old name back writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.errors import ApplyError
from k3snet.lab.netns import run_in
from k3snet.model import State, Sysctl
from k3snet.planner import plan
from tests.netlink.links import d0_namespace

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]


@pytest.fixture
def ns() -> Iterator[str]:
    with d0_namespace("ren", "10.0.0.1/24") as name:
        yield name


def forwarding(ns: str) -> str:
    return run_in(ns, ["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip()


@pytest.mark.parametrize(("old", "new"), [("net.ipv4.conf.all.forwarding", "net.ipv4.ip_forward"),
                                          ("net.ipv4.ip_forward", "net.ipv4.conf.all.forwarding")])
def test_a_sysctl_wanted_under_its_other_name_keeps_forwarding_on_and_what_it_found(
        ns: str, tmp_path: Path, old: str, new: str) -> None:
    assert forwarding(ns) == "0"
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        backend.apply(plan(backend.observe(), State(owned=[Sysctl(old, "1")])))
        before = backend.observe()
        p = plan(before, State(owned=[Sysctl(new, "1")]))
        assert [(c.action, c.subject.name) for c in p.changes] == [
            ("add", new), ("delete", old)]
        for index in range(len(p.changes)):
            backend.faults.fail_at(index)
            with pytest.raises(ApplyError):
                backend.apply(p)
            assert forwarding(ns) == "1"
            assert backend.observe() == before
        backend.apply(p)
        assert forwarding(ns) == "1"
        [owned] = backend.observe().owned
        assert (owned.name, owned.previous) == (new, "0")
        backend.apply(plan(backend.observe(), State()))
    assert forwarding(ns) == "0"


def test_ip_forward_given_back_gives_back_the_forwarding_of_an_interface_renamed_since(
        ns: str, tmp_path: Path) -> None:
    # d0's switch on beside ip_forward off: recorded at the take-over (the write of 0
    # at the give-back sets it to 0), under d0's name only, so d0 renamed since was
    # left at 0 and lost its forwarding.
    run_in(ns, ["sysctl", "-qw", "net.ipv4.conf.d0.forwarding=1"])
    with NetlinkBackend(ns, state_dir=tmp_path) as backend:
        backend.apply(plan(backend.observe(), State(owned=[Sysctl("net.ipv4.ip_forward", 1)])))
        run_in(ns, ["ip", "link", "set", "d0", "name", "d9"])
        backend.apply(plan(backend.observe(), State()))
    assert forwarding(ns) == "0"
    assert run_in(ns, ["sysctl", "-n", "net.ipv4.conf.d9.forwarding"]).stdout.strip() == "1"
