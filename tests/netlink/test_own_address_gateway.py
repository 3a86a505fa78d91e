"""A route via the node's own address: the kernel takes it for IPv4 and ignores the gateway.

``ip route add 192.168.2.0/24 via 192.168.1.5 dev eth0`` on the node holding
``192.168.1.5`` is taken, and ``ip route get`` shows no ``via``: the node asks the link
for every destination itself (an ARP request for ``192.168.2.10``), as if it were on a
connected network, and no router is used. IPv6 refuses such a route when it is applied
("Gateway can not be a local address"). The node facts hold the node's addresses, so
the plan refuses both at the gateway's path, before anything is written; without
them the netlink backend's dry run, which reads the node's addresses itself, does.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.lab.netns import run_in
from k3snet.model import Route, State
from k3snet.planner import plan
from tests.in_process import k3snet
from tests.netlink.links import d0_namespace
from tests.netlink.test_backend import DRIVERS, Driver

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

SPEC = """\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
cluster:
  podCIDRs: [10.42.0.0/16, "fd42:42::/56"]
destinations:
  - cidr: 192.168.2.0/24
    gateway: {v4}
    device: eth0
  - cidr: "fd01:2::/64"
    gateway: "{v6}"
"""


def _ip(ns: str, *args: str) -> str:
    return run_in(ns, ["ip", *args]).stdout


@pytest.fixture
def ns() -> Iterator[str]:
    """eth0 with 192.168.1.5/24 and fd00:1::5/64, its peer in the same namespace."""
    with d0_namespace("ownaddr", "192.168.1.5/24", "fd00:1::5/64", device="eth0") as name:
        yield name


def test_the_kernel_takes_an_ipv4_route_via_its_own_address_and_ignores_the_gateway(
        ns: str) -> None:
    # What the plan guards against, as the kernel does it.
    _ip(ns, "route", "add", "192.168.2.0/24", "via", "192.168.1.5", "dev", "eth0")
    [held] = json.loads(_ip(ns, "-j", "route", "show", "192.168.2.0/24"))
    assert held["gateway"] == "192.168.1.5"
    [chosen] = json.loads(_ip(ns, "-j", "route", "get", "192.168.2.10"))
    assert "gateway" not in chosen
    assert chosen["dev"] == "eth0"
    refused = run_in(ns, ["ip", "-6", "route", "add", "fd01:2::/64", "via", "fd00:1::5"],
                     check=False)
    assert refused.returncode != 0
    assert "local address" in refused.stderr


@pytest.mark.parametrize(("v4", "v6"), [("192.168.1.5", "fd00:1::5"),
                                        ("192.168.1.1", "fd00:1::5"),
                                        ("192.168.1.5", "fd00:1::1")])
def test_a_gateway_that_is_the_node_s_own_address_is_refused_by_the_plan(
        ns: str, tmp_path: Path, v4: str, v6: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(v4=v4, v6=v6))
    applied: subprocess.CompletedProcess[str] = k3snet(
        "apply", "-f", str(spec), "--backend", "netlink", "--netns", ns, "--auto-approve",
        K3SNET_STATE_DIR=str(tmp_path))
    assert applied.returncode != 0
    own = [f"destinations[{n}].gateway: gateway {address} is an address of {ns} itself "
           "(on eth0), never a next hop" for n, address in enumerate((v4, v6))
           if address.endswith((":5", ".5"))]
    for line in own:
        assert line in applied.stderr
    assert applied.stderr.count(f"is an address of {ns} itself") == len(own)
    kernel = [r["dst"] for family in ("-4", "-6")
              for r in json.loads(_ip(ns, family, "-j", "route", "show", "proto", "211"))]
    assert kernel == []


@pytest.mark.parametrize("driver", DRIVERS)
def test_without_the_node_facts_the_dry_run_refuses_such_an_ipv4_gateway_too(
        ns: str, tmp_path: Path, driver: Driver) -> None:
    # --no-facts (or a library caller without facts): the backend's dry run reads the
    # node's addresses itself; it named IPv6's alone, which the kernel refuses.
    if driver == "pyroute2":
        pytest.importorskip("pyroute2")
    with NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        wanted = State(owned=[Route("192.168.2.0/24", gateway="192.168.1.5", device="eth0"),
                              Route("192.168.3.0/24", gateway="192.168.1.1", device="eth0")])
        problems = backend.check(plan(backend.observe(), wanted))
    assert len(problems) == 1, problems
    assert "gateway 192.168.1.5 is a local address (the kernel takes such an IPv4 route " \
           "but ignores the gateway" in problems[0]
    assert "192.168.2.0/24" in problems[0]


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_link_local_gateway_is_a_local_address_only_on_the_route_s_device(
        ns: str, tmp_path: Path, driver: Driver) -> None:
    # The kernel judges a link-local gateway by the route's device alone: with fe80::1 on
    # eth0, `via fe80::1 dev eth0p` is taken (the router on that link may have it too),
    # `via fe80::1 dev eth0` refused.
    if driver == "pyroute2":
        pytest.importorskip("pyroute2")
    _ip(ns, "-6", "addr", "add", "fe80::1/64", "dev", "eth0", "nodad")
    refused = run_in(ns, ["ip", "-6", "route", "add", "fd01:3::/64", "via", "fe80::1",
                          "dev", "eth0"], check=False)
    assert "local address" in refused.stderr
    with NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
        wanted = State(owned=[Route("fd01:2::/64", gateway="fe80::1", device="eth0p"),
                              Route("fd01:3::/64", gateway="fe80::1", device="eth0")])
        problems = backend.check(plan(backend.observe(), wanted))
        assert len(problems) == 1, problems
        assert "fd01:3::/64" in problems[0]
        assert "gateway fe80::1 is a local address" in problems[0]
        kept = State(owned=[Route("fd01:2::/64", gateway="fe80::1", device="eth0p")])
        backend.apply(plan(backend.observe(), kept))
    [taken] = json.loads(_ip(ns, "-6", "-j", "route", "show", "proto", "211"))
    assert (taken["dst"], taken["gateway"], taken["dev"]) == ("fd01:2::/64", "fe80::1", "eth0p")
