"""A plan that adds what k3snet only observes is refused by every backend, before anything.

The planner never plans one (a foreign block or a drift finding in a desired state is a
ModelError); a hand-made or edited plan may. The netlink backend's check passed it and
its apply failed with a bare AssertionError; the nftables one raised a ModelError from
its renderer, from ``check`` too (which reports problems, it does not raise).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from k3snet import PlanError
from k3snet.backends.kit import unwritten_problems
from k3snet.backends.memory import MemoryBackend
from k3snet.backends.registry import create_backend
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import ForwardBlock, NatBlock, NetObject, RouteBlock
from k3snet.planner import Change, Plan

BLOCKS: dict[str, NetObject] = {
    "nat": NatBlock(4, "masquerade", "-j MASQUERADE", "iptables IPv4 nat POSTROUTING"),
    "forward": ForwardBlock(4, "drop", "-j DROP", "iptables IPv4 filter FORWARD"),
    "route": RouteBlock("192.168.2.0/24", what="blackhole", protocol="bird"),
}
# The kernel's own view of what each backend writes.
VIEWS = {"netlink": [["ip", "-j", "route", "show", "table", "all"]],
         "nftables": [["nft", "-j", "list", "ruleset"]],
         "iptables": [["iptables-save"], ["ip6tables-save"]]}


def _plan(kind: str) -> Plan:
    return Plan(changes=[Change.add(BLOCKS[kind])])


def test_unwritten_problems_names_each_such_change_and_nothing_else() -> None:
    plan = Plan(changes=[Change.add(BLOCKS["nat"])])
    assert unwritten_problems(plan) == [
        f"cannot add {BLOCKS['nat'].describe()}: it is what k3snet only observes (a foreign "
        "block or a finding), never written"]
    assert unwritten_problems(Plan()) == []


@pytest.mark.parametrize("kind", sorted(BLOCKS))
def test_the_memory_backend_refuses_an_add_of_what_k3snet_only_observes(kind: str) -> None:
    backend = MemoryBackend()
    assert any("only observes" in p for p in backend.check(_plan(kind)))
    with pytest.raises(PlanError, match="only observes"):
        backend.apply(_plan(kind))
    assert not backend.observe().owned


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    with temporary_netns("unw") as ns:
        yield ns


@pytest.mark.kernel
@pytest.mark.usefixtures("require_root")
@pytest.mark.parametrize(("name", "kind"), [("netlink", "route"), ("nftables", "nat"),
                                            ("nftables", "forward"), ("iptables", "nat"),
                                            ("iptables", "forward")])
def test_kernel_backends_refuse_it_in_check_and_apply_and_change_nothing(
        namespace: str, name: str, kind: str) -> None:
    before = [run_in(namespace, argv).stdout for argv in VIEWS[name]]
    backend = create_backend(name, netns=namespace)
    try:
        problems = backend.check(_plan(kind))  # reports, never raises
        assert any("only observes" in p for p in problems), problems
        with pytest.raises(PlanError, match="only observes"):
            backend.apply(_plan(kind))
    finally:
        close = getattr(backend, "close", None)
        if close is not None:
            close()
    assert [run_in(namespace, argv).stdout for argv in VIEWS[name]] == before
