"""A destination with a gateway and no device: the kernel picks the device, k3snet settles.

``ip route add 192.168.60.0/24 via 10.0.0.254`` stores the route with the device the
gateway lies on. The wanted route names none, so it never equalled the one the kernel
holds: every plan replaced it and the agent fought itself. The planner now takes the
route in place as the wanted one (``Plan.held``); the kernel's own view (``ip -j
route``) says which device the kernel chose. Through the CLI, as a user runs it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet.lab.netns import run_in, temporary_netns
from tests.in_process import k3snet

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

SPEC = """\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
cluster:
  podCIDRs: [10.42.0.0/16, "fd42:42::/56"]
destinations:
  - cidr: 192.168.60.0/24
    gateway: 10.0.0.254
  - cidr: "fd01:60::/64"
    gateway: "fd00::fe"
"""


def _ip(ns: str, *args: str) -> str:
    return run_in(ns, ["ip", *args]).stdout


@pytest.fixture
def ns() -> Iterator[str]:
    """Two interfaces, the gateways on the second one's networks."""
    with temporary_netns("gwonly") as name:
        run_in(name, ["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                      "net.ipv6.conf.default.accept_dad=0"])
        for dev, v4, v6 in (("a0", "10.9.0.1/24", "fd09::1/64"),
                            ("d0", "10.0.0.1/24", "fd00::1/64")):
            _ip(name, "link", "add", dev, "type", "veth", "peer", "name", f"{dev}p")
            _ip(name, "link", "set", f"{dev}p", "up")
            _ip(name, "link", "set", dev, "up")
            _ip(name, "addr", "add", v4, "dev", dev)
            _ip(name, "addr", "add", v6, "dev", dev, "nodad")
        yield name


def _k3snet(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``k3snet ARGS`` by main() in this process (tests/in_process.py)."""
    return k3snet(*args, K3SNET_STATE_DIR=str(state))


def test_a_route_whose_device_the_kernel_picked_is_not_replaced_by_the_next_plan(
        ns: str, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    backend = ["--backend", "netlink", "--netns", ns]
    applied = _k3snet(tmp_path, "apply", "-f", str(spec), *backend, "--auto-approve")
    assert applied.returncode == 0, applied.stderr
    kernel = {r["dst"]: r.get("dev") for family in ("-4", "-6")
              for r in json.loads(_ip(ns, family, "-j", "route", "show", "proto", "211"))}
    assert kernel == {"192.168.60.0/24": "d0", "fd01:60::/64": "d0"}
    again = _k3snet(tmp_path, "plan", "-f", str(spec), *backend)
    # 0: nothing to do (2 would be the replace of both routes, every time)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "No changes" in again.stdout
