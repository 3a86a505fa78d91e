"""A spec giving the netlink backend its own route ``protocol`` (``backends: netlink:
{protocol: N}``): k3snet's routes are written with N, and N's routes are k3snet's,
not facts about the node. Checked against ``ip -j route`` of a lab namespace."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet.cli import main
from k3snet.lab.netns import run_in, temporary_netns

pytestmark = pytest.mark.kernel

SPEC = """\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
cluster:
  podCIDRs: [10.42.0.0/16]
  serviceCIDRs: [10.43.0.0/16]
destinations:
  - cidr: 192.168.2.0/24
    gateway: 192.168.1.1
    device: eth0
{more}backends:
  netlink: {{protocol: 200}}
"""
# Reachable only through the spec's own route to 192.168.2.0/24.
BEHIND_OWN_ROUTE = """\
  - cidr: 192.168.3.0/24
    gateway: 192.168.2.1
"""


@pytest.fixture
def ns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("K3SNET_LOCK_DIR", str(tmp_path / "locks"))
    with temporary_netns("proto") as name:
        for argv in (["ip", "link", "set", "lo", "up"],
                     ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "p0"],
                     ["ip", "link", "set", "eth0", "addrgenmode", "none"],
                     ["ip", "link", "set", "p0", "up"], ["ip", "link", "set", "eth0", "up"],
                     ["ip", "addr", "add", "192.168.1.5/24", "dev", "eth0"]):
            run_in(name, argv)
        yield name


def _spec(tmp_path: Path, more: str = "") -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(more=more))
    return str(path)


def _protocols(ns: str) -> dict[str, str]:
    routes = json.loads(run_in(ns, ["ip", "-j", "route", "show", "table", "main"]).stdout)
    return {r["dst"]: str(r.get("protocol")) for r in routes}


def test_a_route_protocol_given_to_netlink_in_the_spec_marks_the_routes_it_applies(
        ns: str, tmp_path: Path) -> None:
    """It used to refuse every route: compile made them protocol 211 whatever the option."""
    spec = _spec(tmp_path)
    assert main(["apply", "-f", spec, "--netns", ns, "--auto-approve"]) == 0
    assert _protocols(ns)["192.168.2.0/24"] == "200"
    assert main(["plan", "-f", spec, "--netns", ns]) == 0  # nothing left to do
    assert main(["destroy", "-f", spec, "--netns", ns, "--auto-approve"]) == 0
    assert "192.168.2.0/24" not in _protocols(ns)


def test_routes_of_the_protocol_given_to_netlink_are_not_facts_about_the_node(
        ns: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A gateway reachable only through a route k3snet made is refused before the first
    apply and after it alike; with another protocol than 211 the route used to count."""
    run_in(ns, ["ip", "route", "add", "192.168.2.0/24", "via", "192.168.1.1", "dev", "eth0",
                "proto", "200"])  # what the apply of the spec without 192.168.3.0/24 made
    assert main(["plan", "-f", _spec(tmp_path, BEHIND_OWN_ROUTE), "--netns", ns]) == 1
    assert "gateway 192.168.2.1 is not inside any connected or routed prefix" in (
        capsys.readouterr().err)
