"""iptables-legacy's change token against the kernel, in namespaces these tests create.

The token must move with every change of a rule, a chain or a policy of the tables
the backend reads (filter and nat, and raw, mangle and security, whose drops it
judges; IPv4 and IPv6), and must not move with traffic or ``iptables -Z``
(counters only). Each change is checked in the kernel's own view
(``iptables-legacy-save``) as well; a table the namespace lacks must not be
created by reading the token (``/proc/net/ip_tables_names``).
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.iptables.driver import Flavour, Processes
from k3snet.backends.iptables.xtables import TableDigest, table_digests
from k3snet.backends.netns import NetnsRunner
from k3snet.lab.netns import run_in

pytestmark = pytest.mark.kernel

FAMILIES = (4, 6)
CASES = [pytest.param(family, table, id=f"v{family}-{table}")
         for family in FAMILIES for table in ("filter", "nat", "raw", "mangle", "security")]
CHAINS = {"filter": "FORWARD", "nat": "POSTROUTING", "raw": "PREROUTING", "mangle": "FORWARD",
          "security": "FORWARD"}
SOURCES = {4: ("10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"),
           6: ("fd00:1::/64", "fd00:2::/64", "fd00:3::/64")}
_COUNTER = re.compile(r"^\[(\d+):(\d+)\] -A", re.MULTILINE)




def tool(family: int) -> str:
    return "iptables-legacy" if family == 4 else "ip6tables-legacy"


def save(ns: str, family: int, table: str, *, counters: bool = False) -> str:
    argv = [f"{tool(family)}-save", "-t", table, *(["-c"] if counters else [])]
    return run_in(ns, argv).stdout


def tables_present(ns: str, family: int) -> set[str]:
    names = "ip_tables_names" if family == 4 else "ip6_tables_names"
    return set(run_in(ns, ["cat", f"/proc/net/{names}"], check=False).stdout.split())


def digests(ns: str) -> dict[tuple[int, str], TableDigest | None]:
    with NetnsRunner(ns) as runner:
        return runner.call(table_digests)


def test_absent_tables_are_not_created_and_appear_in_the_token(ns: str) -> None:
    with IptablesBackend(ns, mode="legacy") as backend:
        first = backend.change_token()
        assert isinstance(first, bytes)
        assert backend.change_token() == first
        assert tables_present(ns, 4) == tables_present(ns, 6) == set()  # none was created
        assert set(digests(ns).values()) == {None}
        run_in(ns, ["ip6tables-legacy", "-t", "nat", "-S"])  # the tool creates the table
        assert tables_present(ns, 6) == {"nat"}
        second = backend.change_token()
        assert second != first
        run_in(ns, ["iptables-legacy", "-S"])  # IPv4 filter
        assert tables_present(ns, 4) == {"filter"}
        assert backend.change_token() not in (first, second)


@pytest.mark.parametrize(("family", "table"), CASES)
def test_every_rule_chain_and_policy_change_moves_it(ns: str, family: int, table: str) -> None:
    chain = CHAINS[table]
    target = ["-j", "ACCEPT"] if table != "nat" else ["-j", "MASQUERADE"]
    first, second, third = SOURCES[family]
    ipt = [tool(family), "-t", table]
    run_in(ns, [*ipt, "-A", chain, "-s", first, *target])
    steps: list[tuple[str, list[str], str]] = [
        ("add", ["-A", chain, "-s", second, *target], f"-A {chain} -s {second}"),
        ("replace in place", ["-R", chain, "2", "-s", third, *target], f"-A {chain} -s {third}"),
        ("delete", ["-D", chain, "1"], f"-A {chain} -s {third}"),
        ("new empty chain", ["-N", "K3SNET-TEST"], ":K3SNET-TEST - [0:0]"),
    ]
    if table != "nat":  # nat refuses a DROP policy
        steps.append(("policy", ["-P", chain, "DROP"], f":{chain} DROP"))
    with IptablesBackend(ns, mode="legacy") as backend:
        seen = [backend.change_token()]
        for step, argv, shown in steps:
            size = digests(ns)[family, table]
            run_in(ns, [*ipt, *argv])
            assert shown in save(ns, family, table), step  # the kernel's view
            after = digests(ns)[family, table]
            assert size is not None
            assert after is not None
            if step == "replace in place":  # the same size: only the address differs
                assert (after.size, after.entries) == (size.size, size.entries)
                assert f"-s {second}" not in save(ns, family, table)
            token = backend.change_token()
            assert token not in seen, step
            seen.append(token)
        other = 6 if family == 4 else 4  # the other family's tables stay as they were
        assert digests(ns)[other, table] is None


def _send(family: int, count: int) -> None:
    """UDP datagrams to the loopback, each from a source port of its own (a new
    conntrack entry each, so the nat table sees every one). The ports are chosen,
    not left to the kernel: two sockets given the same ephemeral port would share
    one conntrack entry, and the nat table would see only the first datagram."""
    address = "127.0.0.1" if family == 4 else "::1"
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    for index in range(count):
        with socket.socket(af, socket.SOCK_DGRAM) as sock:
            sock.bind((address, 40000 + index))
            sock.sendto(b"k3snet", (address, 9))


def _counters(ns: str, family: int, table: str) -> list[tuple[int, int]]:
    return [(int(p), int(b)) for p, b in _COUNTER.findall(save(ns, family, table,
                                                               counters=True))]


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f"v{f}")
def test_traffic_and_zeroed_counters_leave_it(ns: str, family: int) -> None:
    run_in(ns, ["ip", "link", "set", "lo", "up"])
    # The conntrack match turns connection tracking on in the namespace: without it the
    # nat table sees no packet at all.
    tracked = ["-m", "conntrack", "--ctstate", "NEW"]
    for table, chain, match in (("filter", "OUTPUT", []), ("nat", "OUTPUT", tracked),
                                ("nat", "POSTROUTING", tracked)):
        run_in(ns, [tool(family), "-t", table, "-A", chain, "-p", "udp", *match, "-j", "ACCEPT"])
    with IptablesBackend(ns, mode="legacy") as backend:
        before = backend.change_token()
        with NetnsRunner(ns) as runner:
            runner.call(lambda: _send(family, 20))
        for table in ("filter", "nat"):  # the kernel counted the traffic
            assert all(packets >= 20 for packets, _ in _counters(ns, family, table)), table
        assert backend.change_token() == before
        for table in ("filter", "nat"):
            run_in(ns, [tool(family), "-t", table, "-Z"])
            assert set(_counters(ns, family, table)) == {(0, 0)}
        assert backend.change_token() == before


AGENT_SPEC = """apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
destinations:
  - cidr: 10.100.0.0/24
    gateway: 192.168.1.1
    device: eth0
  - cidr: 10.100.1.0/24
    gateway: 192.168.1.1
    device: eth0
"""


def test_the_agent_saves_and_plans_again_only_after_a_change(
        ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from k3snet import cli  # noqa: PLC0415 - the CLI's own agent wiring, as `k3snet agent`
    from k3snet.agent import Agent, AgentOptions, FileSpecSource  # noqa: PLC0415

    saves: list[int] = []
    real = Processes.save

    def counted(self: Processes, family: int, mode: Flavour) -> str | None:
        saves.append(family)
        return real(self, family, mode)

    monkeypatch.setattr(Processes, "save", counted)
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("K3SNET_LOCK_DIR", str(tmp_path))
    for argv in (["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"],
                 ["ip", "link", "set", "eth1", "up"],
                 ["ip", "addr", "add", "192.168.1.5/24", "dev", "eth0"],
                 ["ip", "link", "set", "eth0", "up"]):
        run_in(ns, argv)
    spec = tmp_path / "spec.yaml"
    spec.write_text(AGENT_SPEC)
    args = cli.build_parser().parse_args([
        "agent", "-f", str(spec), "--netns", ns, "--backend", "iptables:nat",
        "--backend-opt", "iptables.mode=legacy"])
    desired = cli._AgentDesired(args)
    agent = Agent(FileSpecSource(spec), lambda s: cli._backend(args, s), desired,
                  AgentOptions("legacy"))

    def ours() -> list[str]:
        return [line for line in save(ns, 4, "nat").splitlines()
                if line.startswith("-A K3SNET-") and "k3snet:" in line]

    try:
        assert len(agent.run_pass().applied) == 2
        assert len(ours()) == 2
        assert agent.run_pass().applied == ()  # our own rules moved the token: one look
        before = len(saves)
        for _ in range(3):
            assert agent.run_pass().applied == ()
        assert len(saves) == before  # nothing moved: no save, no plan
        moved, _ = agent.changes_seen(agent.changes_seen(None)[1])
        assert not moved
        _, token = agent.changes_seen(None)
        run_in(ns, ["iptables-legacy", "-t", "nat", "-D", *shlex.split(ours()[0])[1:]])
        assert len(ours()) == 1
        assert agent.changes_seen(token)[0]  # the watch sees it between passes
        assert len(agent.run_pass().applied) >= 1  # and the pass repairs it
        assert len(saves) > before
        assert len(ours()) == 2
    finally:
        agent.shutdown()
        desired.close()


def test_the_running_agent_repairs_a_deleted_rule_long_before_the_interval(
        ns: str, tmp_path: Path) -> None:
    """``k3snet agent --interval 60``: only the watch of the token can repair that soon."""
    for argv in (["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"],
                 ["ip", "link", "set", "eth1", "up"],
                 ["ip", "addr", "add", "192.168.1.5/24", "dev", "eth0"],
                 ["ip", "link", "set", "eth0", "up"]):
        run_in(ns, argv)
    spec = tmp_path / "spec.yaml"
    spec.write_text(AGENT_SPEC)

    def ours() -> list[str]:
        return [line for line in save(ns, 4, "nat").splitlines()
                if line.startswith("-A K3SNET-") and "k3snet:" in line]

    def until(what: Callable[[], bool], limit: float) -> bool:
        end = time.monotonic() + limit  # a bound for a stuck test, far below the interval
        while time.monotonic() < end:
            if what():
                return True
            time.sleep(0.05)
        return False

    with (tmp_path / "agent.log").open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "k3snet.cli", "agent", "-f", str(spec), "--netns", ns,
             "--backend", "iptables:nat", "--backend-opt", "iptables.mode=legacy",
             "--no-kube", "--listen", "none", "--interval", "60", "--log-level", "DEBUG"],
            stdout=subprocess.DEVNULL, stderr=log,
            env={**os.environ, "K3SNET_STATE_DIR": str(tmp_path),
                 "K3SNET_LOCK_DIR": str(tmp_path), "K3SNET_NODE_NAME": "legacy"})
        try:
            assert until(lambda: len(ours()) == 2, 60.0), (tmp_path / "agent.log").read_text()
            time.sleep(1.5)  # past the first pass and its watch gap: a quiet node
            victim = ours()[0]
            run_in(ns, ["iptables-legacy", "-t", "nat", "-D", *shlex.split(victim)[1:]])
            assert victim not in ours()
            assert until(lambda: victim in ours(), 10.0), \
                f"not repaired within 10 s (interval 60 s): {(tmp_path / 'agent.log').read_text()}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
