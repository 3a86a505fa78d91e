"""A five-node fleet in network namespaces, for tests/agent/test_fleet.py.

::

    pod-i (10.42.i.10)  --  node-i cni0 10.42.i.1 / eth0 192.168.1.(10+i)  --+
                                                                            |  lan: br0
    router eth0 192.168.1.1 ------------------------------------------------+  (a namespace)
    router eth1 192.168.2.1, 192.168.3.1  --  ext eth0 192.168.2.10, 192.168.3.10 (echo server)

The LAN bridge lives in a namespace of its own; nothing touches the root
namespace. The router forwards but knows no way back to 10.42.0.0/16, so a
pod reaches the service only through its node's masquerade. One
:class:`~k3snet.testing.kube.EmulatedApiServer` holds the Nodes, the spec
ConfigMap and the Lease; one ``k3snet agent`` process per node acts in its node's
namespace (``--netns``) and talks to the API through a kubeconfig.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from k3snet.lab import _probe
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.testing.kube import AGENT_RESOURCES, CALICO_RESOURCES, EmulatedApiServer

NODES = 5
PORT = 5432
SERVICE = "192.168.2.10"
SERVICE_TWO = "192.168.3.10"
SPEC_CONFIGMAP = ("kube-system", "k3snet-spec")
LEASE = ("kube-system", "k3snet-cluster-writer")
# The agents' interval: how soon a node reads a changed spec ConfigMap (each pass reads
# it), which the tests wait for. Shorter, the five agents pass (observe their node, read
# the spec) several times a second for the whole file, as a CPU load and nothing more
# tested. A change on the node itself starts a pass at once (the watch), whatever the
# interval.
FLEET_INTERVAL = 2.0
PY_ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def node_address(i: int) -> str:
    return f"192.168.1.{10 + i}"


def spec_text(*, second: bool = False, extra: int = 0) -> str:
    """The fleet's spec: the service's /24 (+ 192.168.3.0/24, + ``extra`` routes)."""
    lines = ["apiVersion: k3snet.io/v1alpha1", "kind: EgressSpec",
             "backends: [netlink, nftables, calico]", "cni:", "  calico: {}", "destinations:",
             "  - cidr: 192.168.2.0/24", "    gateway: 192.168.1.1", "    device: eth0",
             # Exempt from NAT: the one IPPool k3snet writes (the leader only).
             "  - cidr: 172.20.0.0/16", "    masquerade: false"]
    if second:
        lines += ["  - cidr: 192.168.3.0/24", "    gateway: 192.168.1.1", "    device: eth0"]
    for n in range(extra):
        lines += [f"  - cidr: 10.{100 + n // 256}.{n % 256}.0/24", "    gateway: 192.168.1.1",
                  "    device: eth0", "    masquerade: false"]
    return "\n".join(lines) + "\n"


def wait_for(what: str, check: Callable[[], bool], bound: float = 90.0,
             step: float = 0.05) -> float:
    """Poll ``check`` until true; returns the seconds it took (fails past ``bound``:
    a generous limit against hanging, not a timing assertion)."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > bound:
            raise AssertionError(f"{what}: not within {bound:.0f} s")
        time.sleep(step)
    return time.monotonic() - start


class Fleet:
    """The namespaces, the service, the API server and the agents (see the module doc)."""

    def __init__(self, stack: ExitStack) -> None:
        self.stack = stack
        self.tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="k3snet-fleet-")))
        self.lan = stack.enter_context(temporary_netns("lan"))
        self.router = stack.enter_context(temporary_netns("router"))
        self.ext = stack.enter_context(temporary_netns("ext"))
        self.nodes = [stack.enter_context(temporary_netns(f"node{i}")) for i in range(NODES)]
        self.pods = [stack.enter_context(temporary_netns(f"pod{i}")) for i in range(NODES)]
        self.agents: dict[int, subprocess.Popen[str]] = {}
        self.logs: dict[int, Path] = {}
        self._wire()
        self.server = self._serve()
        # The CRDs only (no Calico API server): the agents' calico backend finds them.
        self.api = stack.enter_context(EmulatedApiServer(
            resources=CALICO_RESOURCES[:1] + AGENT_RESOURCES))
        self.kubeconfig = self.tmp / "kubeconfig"
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fleet",
            "clusters": [{"name": "fleet", "cluster": {"server": self.api.url}}],
            "users": [{"name": "fleet", "user": {}}],
            "contexts": [{"name": "fleet", "context": {"cluster": "fleet", "user": "fleet"}}],
        }))
        for i in range(NODES):
            self.api.put("v1/nodes", {"metadata": {"name": self.name(i)}})
        # Calico's default pool is the pod CIDR (k3snet never creates an enabled pool).
        self.api.put("crd.projectcalico.org/v1/ippools", {
            "apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
            "metadata": {"name": "default-ipv4-ippool"},
            "spec": {"cidr": "10.42.0.0/16", "natOutgoing": True}})
        stack.callback(self.stop_agents)

    # ------------------------------------------------------------ the network

    def _wire(self) -> None:
        for ns in (self.lan, self.router, self.ext, *self.nodes, *self.pods):
            run_in(ns, ["ip", "link", "set", "lo", "up"])
            run_in(ns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])
        run_in(self.lan, ["ip", "link", "add", "br0", "type", "bridge"])
        run_in(self.lan, ["ip", "link", "set", "br0", "up"])
        self._lan_port(self.router, "eth0", "192.168.1.1/24", "r")
        run_in(self.router, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        run_in(self.router, ["ip", "link", "add", "eth1", "type", "veth", "peer", "name",
                             "eth0", "netns", self.ext])
        for ns, ifname, addresses in ((self.router, "eth1", ("192.168.2.1/24", "192.168.3.1/24")),
                                      (self.ext, "eth0", ("192.168.2.10/24", "192.168.3.10/24"))):
            for address in addresses:
                run_in(ns, ["ip", "addr", "add", address, "dev", ifname])
            run_in(ns, ["ip", "link", "set", ifname, "up"])
        run_in(self.ext, ["ip", "route", "add", "default", "via", "192.168.2.1"])
        for i, (node, pod) in enumerate(zip(self.nodes, self.pods, strict=True)):
            self._lan_port(node, "eth0", f"{node_address(i)}/24", f"n{i}")
            run_in(node, ["ip", "link", "add", "cni0", "type", "veth", "peer", "name", "eth0",
                          "netns", pod])
            run_in(node, ["ip", "addr", "add", f"10.42.{i}.1/24", "dev", "cni0"])
            run_in(node, ["ip", "link", "set", "cni0", "up"])
            run_in(pod, ["ip", "addr", "add", f"10.42.{i}.10/24", "dev", "eth0"])
            run_in(pod, ["ip", "link", "set", "eth0", "up"])
            run_in(pod, ["ip", "route", "add", "default", "via", f"10.42.{i}.1"])
            # The administrator's static route to the service (as in the seed lab).
            run_in(node, ["ip", "route", "add", "192.168.2.0/24", "via", "192.168.1.1",
                          "dev", "eth0", "proto", "static"])

    def _lan_port(self, ns: str, ifname: str, address: str, tag: str) -> None:
        port = f"p{tag}"
        run_in(self.lan, ["ip", "link", "add", port, "type", "veth", "peer", "name", ifname,
                          "netns", ns])
        run_in(self.lan, ["ip", "link", "set", port, "master", "br0", "up"])
        run_in(ns, ["ip", "addr", "add", address, "dev", ifname])
        run_in(ns, ["ip", "link", "set", ifname, "up"])

    def _serve(self) -> subprocess.Popen[str]:
        server = subprocess.Popen(
            ["ip", "netns", "exec", self.ext, sys.executable, "-m", "k3snet.lab._echo_server",
             "--port", str(PORT)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, env=PY_ENV)
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "listening"

        def stop() -> None:
            server.kill()
            server.wait()

        self.stack.callback(stop)
        return server

    def probe(self, i: int, host: str = SERVICE) -> dict[str, Any]:
        """One TCP exchange from pod ``i``: ``{"ok": ..., "seen": <source the service saw>}``."""
        # The probe's file, standard library only (as the seed lab runs it): `-m` imported
        # k3snet and the lab first, most of each probe's CPU time.
        done = run_in(self.pods[i], [sys.executable, "-I", "-S", _probe.__file__, "tcp",
                                     "--host", host, "--port", str(PORT), "--timeout", "1"],
                      check=False, timeout=30, env=PY_ENV)
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer

    # ------------------------------------------------------------ the agents

    @staticmethod
    def name(i: int) -> str:
        return f"node-{i}"

    def put_spec(self, text: str) -> None:
        namespace, name = SPEC_CONFIGMAP
        self.api.put("v1/configmaps", {"metadata": {"name": name, "namespace": namespace},
                                       "data": {"spec.yaml": text}})

    def start_agent(self, i: int, *, configmap: str | None = None,
                    interval: float = FLEET_INTERVAL) -> subprocess.Popen[str]:
        namespace, name = SPEC_CONFIGMAP
        log = self.tmp / f"agent-{i}.log"
        self.logs[i] = log
        state = self.tmp / f"state-{i}"
        state.mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "k3snet.cli", "agent", "--netns", self.nodes[i],
                "--spec-configmap", configmap or f"{namespace}/{name}",
                "--node-name", self.name(i), "--interval", str(interval), "--listen", "none",
                "--log-format", "json", "--lease", "/".join(LEASE), "--lease-duration", "3",
                "--lease-renew-deadline", "2", "--lease-retry-period", "0.25"]
        env = {**PY_ENV, "KUBECONFIG": str(self.kubeconfig), "K3SNET_STATE_DIR": str(state),
               "K3SNET_LOCK_DIR": str(self.tmp / "locks")}
        with log.open("a") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=out, text=True, env=env)
        self.agents[i] = proc
        return proc

    def kill_agent(self, i: int, signum: int = signal.SIGKILL) -> int:
        proc = self.agents.pop(i)
        proc.send_signal(signum)
        return proc.wait(timeout=60)

    def stop_agents(self) -> None:
        for i in list(self.agents):
            proc = self.agents.pop(i)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # ------------------------------------------------------------ what the API says

    def result(self, i: int) -> dict[str, Any] | None:
        node = self.api.get("v1/nodes", self.name(i))
        annotations = ((node or {}).get("metadata") or {}).get("annotations") or {}
        text = annotations.get("k3snet.io/agent-result")
        return json.loads(text) if text else None

    def converged(self, sha: str, nodes: range | list[int] | None = None,
                  *, not_started: str | None = None) -> bool:
        """Every node's annotation says ok with this spec (and, with ``not_started``,
        comes from an agent started at another time: a restarted one)."""
        for i in nodes if nodes is not None else range(NODES):
            result = self.result(i)
            if result is None or result["status"] != "ok" or result["spec"] != sha[:12]:
                return False
            if not_started is not None and result["started"] == not_started:
                return False
        return True

    def holder(self) -> str | None:
        lease = self.api.get("coordination.k8s.io/v1/leases", LEASE[1], LEASE[0])
        return None if lease is None else lease["spec"].get("holderIdentity")

    # ------------------------------------------------------------ the kernel's view

    def nft(self, i: int, *args: str) -> str:
        return run_in(self.nodes[i], ["nft", *args]).stdout

    def owned_routes(self, i: int) -> list[dict[str, Any]]:
        from k3snet import K3SNET_ROUTE_PROTOCOL  # noqa: PLC0415

        out = run_in(self.nodes[i], ["ip", "-j", "route", "show", "proto",
                                     str(K3SNET_ROUTE_PROTOCOL)]).stdout
        routes: list[dict[str, Any]] = json.loads(out or "[]")
        return routes

    def forwarding(self, i: int) -> str:
        return run_in(self.nodes[i], ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip()
