"""The seed lab reproduces the seed problem, and the article's fix (done by hand) cures it.

Every assertion about state reads the kernel's own view inside the lab's namespaces
(``ip -j``, ``sysctl -n``, ``nft -j``, ``iptables -S``). A fixture also checks that
the root namespace's links, routes and forwarding switches are left as they were.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from k3snet.lab import (
    NODE_ADDRESSES,
    POD_CIDRS,
    Family,
    ForwardTool,
    SeedLab,
)
from k3snet.lab import seed as lab_module
from k3snet.lab.netns import netns_exists, run_in

pytestmark = [
    pytest.mark.lab,
    pytest.mark.kernel,
    pytest.mark.usefixtures("require_root", "root_namespace_untouched"),
]

BOTH_FAMILIES: tuple[Family, ...] = (4, 6)
FAMILIES = pytest.mark.parametrize("family", BOTH_FAMILIES)
# Probes that are expected to fail wait for their whole timeout: keep it short.
FAILING_TIMEOUT = 1.0

# The article's fix, by hand: masquerade the pod CIDR leaving the node's uplink.
MASQUERADE_TABLE = f"""
table inet k3snet_lab_fix {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "eth0" ip saddr {POD_CIDRS[4]} masquerade
        oifname "eth0" ip6 saddr {POD_CIDRS[6]} masquerade
    }}
}}
"""
FORWARDING_SYSCTLS = ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding")


def _root(argv: list[str]) -> str:
    """Read-only query of the root namespace (the lab must never change it)."""
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=10).stdout


def _root_snapshot() -> dict[str, Any]:
    links = json.loads(_root(["ip", "-j", "link", "show"]))
    return {
        "links": sorted(link["ifname"] for link in links),
        "routes4": json.loads(_root(["ip", "-4", "-j", "route", "show", "table", "all"])),
        "routes6": json.loads(_root(["ip", "-6", "-j", "route", "show", "table", "all"])),
        "sysctls": {
            name: Path("/proc/sys", *name.split(".")).read_text() for name in FORWARDING_SYSCTLS
        },
    }


@pytest.fixture
def root_namespace_untouched() -> Iterator[None]:
    """Fail the test if the root namespace's links, routes or forwarding changed."""
    before = _root_snapshot()
    yield
    assert _root_snapshot() == before


def _routes(ns: str, family: int) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = json.loads(
        run_in(ns, ["ip", f"-{family}", "-j", "route", "show"]).stdout
    )
    return routes


def _sysctl(ns: str, name: str) -> str:
    return run_in(ns, ["sysctl", "-n", name]).stdout.strip()


def _apply_manual_fix(lab: SeedLab) -> None:
    """Forwarding on and masquerade, inside the node namespace, with the real tools."""
    run_in(lab.node, ["sysctl", "-q", "-w", *(f"{name}=1" for name in FORWARDING_SYSCTLS)])
    run_in(lab.node, ["nft", "-f", "-"], input_text=MASQUERADE_TABLE)


def _ip_tools(tool: ForwardTool) -> tuple[str, str]:
    return (tool, tool.replace("iptables", "ip6tables"))


def _assert_reaches_db_as_node(lab: SeedLab, family: Family) -> None:
    result = lab.tcp_probe(family=family)
    assert result.ok, result.error
    assert result.source_seen == NODE_ADDRESSES[family]


@FAMILIES
def test_pod_cannot_reach_db_while_node_can(family: Family) -> None:
    with SeedLab.create() as lab:
        # The administrator's static route is there, as the kernel reports it.
        gateway = {4: "192.168.1.1", 6: "fd01:1::1"}[family]
        db_net = {4: "192.168.2.0/24", 6: "fd01:2::/64"}[family]
        assert {
            "dst": db_net,
            "gateway": gateway,
            "dev": "eth0",
            "protocol": "static",
        }.items() <= next(r for r in _routes(lab.node, family) if r["dst"] == db_net).items()
        # The router knows no way back to the pods: that is the bug.
        router_dsts = {route["dst"] for route in _routes(lab.router, family)}
        assert not any(dst.startswith(("10.42.", "fd42:")) for dst in router_dsts)
        assert "default" not in router_dsts
        assert [_sysctl(lab.node, name) for name in FORWARDING_SYSCTLS] == ["0", "0"]
        assert [_sysctl(lab.router, name) for name in FORWARDING_SYSCTLS] == ["1", "1"]
        # The interfaces holding a global address: on a host with tunnel modules loaded
        # (ipip, sit, ip_gre) every new namespace also holds their fallback devices
        # (tunl0, sit0, gre0...), down and without one.
        assert {name: held for name, held in lab.node_interfaces.items() if held} == {
            "cni0": ("10.42.0.1/24", "fd42:42::1/64"),
            "eth0": ("192.168.1.5/24", "fd01:1::5/64"),
        }

        # Both wait out their timeouts: at once.
        with ThreadPoolExecutor(2) as pool:
            pinged = pool.submit(lab.ping, family=family, count=1, timeout=1)
            pod = lab.tcp_probe(family=family, timeout=FAILING_TIMEOUT)
        assert not pod.ok
        assert pod.source_seen is None
        assert pod.error
        assert not pinged.result()

        node = lab.node_probe(family=family)
        assert node.ok, node.error
        assert node.source_seen == NODE_ADDRESSES[family]


def test_manual_nft_fix_makes_pod_traffic_leave_as_the_node() -> None:
    with SeedLab.create() as lab:
        _apply_manual_fix(lab)

        assert [_sysctl(lab.node, name) for name in FORWARDING_SYSCTLS] == ["1", "1"]
        ruleset = json.loads(
            run_in(lab.node, ["nft", "-j", "list", "table", "inet", "k3snet_lab_fix"]).stdout
        )
        rules = [item["rule"] for item in ruleset["nftables"] if "rule" in item]
        assert len(rules) == 2
        assert all({"masquerade": None} in rule["expr"] for rule in rules)

        for family in BOTH_FAMILIES:
            _assert_reaches_db_as_node(lab, family)
            assert lab.ping(family=family)


@pytest.mark.parametrize("tool", ["iptables-nft", "iptables-legacy"])
def test_forward_drop_policy_blocks_the_fix_until_accepted(tool: ForwardTool) -> None:
    with SeedLab.create() as lab:
        lab.block_forward(tool)
        _apply_manual_fix(lab)
        for command in _ip_tools(tool):
            listing = run_in(lab.node, [command, "-w", "-S", "FORWARD"]).stdout
            assert listing.splitlines()[0] == "-P FORWARD DROP"

        # Both families at once: each probe waits out its timeout.
        with ThreadPoolExecutor(len(BOTH_FAMILIES)) as pool:
            probes = list(pool.map(lambda family: lab.tcp_probe(family=family,
                                                                timeout=FAILING_TIMEOUT),
                                   BOTH_FAMILIES))
        assert [probe.ok for probe in probes] == [False, False]

        # What an operator adds under such a policy: pod traffic out, replies back in.
        for command in _ip_tools(tool):
            run_in(lab.node, [command, "-w", "-A", "FORWARD", "-i", "cni0", "-j", "ACCEPT"])
            run_in(
                lab.node,
                [command, "-w", "-A", "FORWARD", "-o", "cni0", "-m", "conntrack",
                 "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
            )  # fmt: skip

        for family in BOTH_FAMILIES:
            _assert_reaches_db_as_node(lab, family)


def _listed_namespaces() -> set[str]:
    """The namespace names ``ip netns list`` shows (lines: "name" or "name (id: 3)")."""
    return {line.split()[0] for line in _root(["ip", "netns", "list"]).splitlines() if line}


def _gone(lab: SeedLab, server_pid: int) -> None:
    listed = _listed_namespaces()
    for ns in lab.namespaces:
        assert ns not in listed
        assert not netns_exists(ns)
    # The server was reaped: its pid is free (or, unlikely, reused by something else).
    cmdline = Path(f"/proc/{server_pid}/cmdline")
    assert not cmdline.exists() or b"_echo_server" not in cmdline.read_bytes()
    assert lab.closed


def test_every_lab_interface_takes_ipv6_multicast_once_created() -> None:
    # The kernel adds an interface's `multicast ff00::/8` local route (and its link-local
    # one) in a work item after the link comes up, up to a second later on a busy machine.
    # Until then a neighbour solicitation arriving there finds no route and is dropped
    # (Ip6InNoRoutes): the first IPv6 connection waited out the 1 s retransmit and a probe
    # bounded by 1 s failed. The lab returns once every interface has its routes.
    with SeedLab.create() as lab:
        for role, ns in zip(("pod", "node", "router", "db"), lab.namespaces, strict=True):
            local = json.loads(
                run_in(ns, ["ip", "-6", "-j", "route", "show", "table", "local"]).stdout
            )
            multicast = {r["dev"] for r in local if r.get("type") == "multicast"}
            link_local = {r["dev"] for r in local
                          if r.get("type") == "local" and r["dst"].startswith("fe80:")}
            interfaces = set(lab_module._ADDRESSES[role])
            assert multicast >= interfaces, (role, local)
            assert link_local >= interfaces, (role, local)


def test_exit_deletes_every_namespace_and_stops_the_server() -> None:
    with SeedLab.create() as lab:
        assert set(lab.namespaces) <= _listed_namespaces()
        assert len(set(lab.namespaces)) == 4
        server_pid = lab.server_pid
    _gone(lab, server_pid)
    lab.close()  # a second close is harmless


def test_exception_inside_the_block_still_tears_down() -> None:
    labs: list[SeedLab] = []

    def fail_inside() -> None:
        with SeedLab.create() as lab:
            labs.append(lab)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside()
    (lab,) = labs
    _gone(lab, lab.server_pid)


def test_failed_build_deletes_what_it_created(monkeypatch: pytest.MonkeyPatch) -> None:
    created: set[str] = set()

    def failing_address(names: dict[str, str]) -> None:
        created.update(names.values())
        raise RuntimeError("addressing failed")

    monkeypatch.setattr(lab_module, "_address", failing_address)
    with pytest.raises(RuntimeError, match="addressing failed"):
        SeedLab.create()
    assert len(created) == 4
    assert not created & _listed_namespaces()


def test_rejects_bad_arguments() -> None:
    with SeedLab.create() as lab:
        with pytest.raises(ValueError, match="family"):
            lab.tcp_probe(family=5)
        with pytest.raises(ValueError, match="tool"):
            lab.block_forward("ufw")  # type: ignore[arg-type]
