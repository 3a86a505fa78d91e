"""An end-to-end soak of ``k3snet agent``: three agents, chaos, then the end state checked.

Run as root (it creates network namespaces)::

    python benchmarks/soak_agent.py --minutes 5

Three lab namespaces (``h-soak2-0`` .. ``h-soak2-2``, ``--prefix`` to change the
name), each a node with an ``eth0`` (192.168.1.1N/24) and a ``cni0`` (veth pairs
inside it); one
emulated API server (:class:`k3snet.testing.kube.EmulatedApiServer`) holds the
Nodes, the spec ConfigMap and the Lease; one ``k3snet agent`` per node
(``backends: [netlink, iptables, calico]``: calico's IPPool is the
Lease holder's to write, a short ``--interval``, ``--listen`` on an
ephemeral 127.0.0.1 port). For ``--minutes`` a chaos loop picks, at random:

- 503 or 429 answers with ``Retry-After`` from the API server;
- drift in one node: k3snet's routes deleted, its nat chain flushed;
- a foreign ``DROP`` inserted before k3snet's FORWARD jump in node 1, removed later
  (k3snet's rule behind it is set aside, and must come back once it is gone);
- an agent stopped with SIGTERM and started again;
- the spec ConfigMap edited (a second destination added or removed);
- one agent's probe port flooded by clients sending headers past 8 KiB and going
  on sending (the 431 lingering close), while ``/readyz`` is asked beside them.

At the end, with the faults gone: every node converged (the kernel's routes and
``iptables-save``, and the node's annotation), one Lease holder (the one
agent reporting itself leader, k3snet's IPPool written) and few ``leaseTransitions``,
``/readyz`` 200 on every agent, ``/metrics`` parsed by
``prometheus_client.parser`` with a ``k3snet_agent_spec_info`` series, no
"internal error" nor "bug" in any log, ``k3snet destroy --netns`` removing all
k3snet made in node 1 (``iptables-save``, ``nft -j list ruleset``, ``ip -j route``)
and the root namespace's routes, iptables and nftables unchanged. Exit 0 when all
hold, 1 otherwise (each failure printed). Not collected by pytest (docs/testing.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from k3snet import K3SNET_ROUTE_PROTOCOL
from k3snet.lab.netns import (
    create_netns,
    delete_netns,
    kill_netns_processes,
    netns_exists,
    run_in,
)
from k3snet.testing.kube import AGENT_RESOURCES, EmulatedApiServer

ROOT = Path(__file__).resolve().parents[1]

NODES = 3
SPEC_CM = ("kube-system", "k3snet-spec")
LEASE = ("kube-system", "k3snet-cluster-writer")
POOLS = "crd.projectcalico.org/v1/ippools"
DROP = ["-s", "10.42.0.0/16", "-d", "192.168.2.0/24", "-j", "DROP"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def spec_text(*, second: bool) -> str:
    lines = ["apiVersion: k3snet.io/v1alpha1", "kind: EgressSpec",
             "backends: [netlink, iptables, calico]", "cni:", "  calico: {}", "destinations:",
             "  - cidr: 192.168.2.0/24", "    gateway: 192.168.1.1", "    device: eth0",
             # Exempt from NAT: the one IPPool k3snet writes, the Lease holder alone.
             "  - cidr: 172.20.0.0/16", "    masquerade: false"]
    if second:
        lines += ["  - cidr: 192.168.3.0/24", "    gateway: 192.168.1.1", "    device: eth0"]
    return "\n".join(lines) + "\n"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 - 127.0.0.1
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:
        return 0, str(error)


def wait_for(check: Callable[[], bool], bound: float) -> bool:
    end = time.monotonic() + bound
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.2)
    return check()


def root_view() -> dict[str, str]:
    """The root namespace's routes, iptables and nftables (read only)."""
    view = {}
    for name, argv in (("routes", ["ip", "-j", "route", "show", "table", "all"]),
                       ("iptables", ["iptables-save"]), ("nft", ["nft", "-j", "list", "ruleset"])):
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        lines = [line for line in done.stdout.splitlines() if not line.startswith("#")]
        view[name] = "\n".join(lines)
    return view


class Soak:
    def __init__(self, prefix: str, interval: float, tmp: Path) -> None:
        self.prefix = prefix
        self.interval = interval
        self.tmp = tmp
        self.nodes = [f"{prefix}-{i}" for i in range(NODES)]
        self.agents: dict[int, subprocess.Popen[str]] = {}
        self.ports = {i: free_port() for i in range(NODES)}
        self.failures: list[str] = []
        self.events: list[str] = []
        self.second = False
        self.api: EmulatedApiServer | None = None
        self.kubeconfig = tmp / "kubeconfig"

    # ---------------------------------------------------------------- set up
    def wire(self) -> None:
        for i, ns in enumerate(self.nodes):
            create_netns(ns)
            run_in(ns, ["ip", "link", "set", "lo", "up"])
            for dev, addr in (("eth0", f"192.168.1.{10 + i}/24"), ("cni0", f"10.42.{i}.1/24")):
                # A veth pair inside the namespace (no dummy module on every kernel).
                run_in(ns, ["ip", "link", "add", dev, "type", "veth", "peer", "name", f"{dev}p"])
                run_in(ns, ["ip", "addr", "add", addr, "dev", dev])
                run_in(ns, ["ip", "link", "set", f"{dev}p", "up"])
                run_in(ns, ["ip", "link", "set", dev, "up"])

    def serve(self, api: EmulatedApiServer) -> None:
        self.api = api
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "soak",
            "clusters": [{"name": "soak", "cluster": {"server": api.url}}],
            "users": [{"name": "soak", "user": {}}],
            "contexts": [{"name": "soak", "context": {"cluster": "soak", "user": "soak"}}]}))
        for i in range(NODES):
            api.put("v1/nodes", {"metadata": {"name": f"node-{i}"}})
        api.put(POOLS, {"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
                        "metadata": {"name": "default-ipv4-ippool"},
                        "spec": {"cidr": "10.42.0.0/16", "natOutgoing": True}})
        self.put_spec()

    def put_spec(self) -> None:
        assert self.api is not None
        self.api.put("v1/configmaps", {"metadata": {"name": SPEC_CM[1], "namespace": SPEC_CM[0]},
                                       "data": {"spec.yaml": spec_text(second=self.second)}})

    def start(self, i: int) -> None:
        log = self.tmp / f"agent-{i}.log"
        state = self.tmp / f"state-{i}"
        state.mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "k3snet.cli", "agent", "--netns", self.nodes[i],
                "--spec-configmap", "/".join(SPEC_CM), "--node-name", f"node-{i}",
                "--interval", str(self.interval), "--listen", f"127.0.0.1:{self.ports[i]}",
                "--log-format", "json", "--lease", "/".join(LEASE), "--lease-duration", "3",
                "--lease-renew-deadline", "2", "--lease-retry-period", "0.25"]
        env = {**ENV, "KUBECONFIG": str(self.kubeconfig), "K3SNET_STATE_DIR": str(state),
               "K3SNET_LOCK_DIR": str(self.tmp / "locks")}
        with log.open("a") as out:
            self.agents[i] = subprocess.Popen(argv, stdout=out, stderr=out, text=True, env=env)

    def stop(self, i: int) -> int | None:
        proc = self.agents.pop(i, None)
        if proc is None:
            return None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.failures.append(f"agent {i} ignored SIGTERM for 60 s")
            proc.kill()
            return proc.wait()

    # ---------------------------------------------------------------- views
    def url(self, i: int, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[i]}{path}"

    def result(self, i: int) -> dict[str, Any] | None:
        assert self.api is not None
        node = self.api.get("v1/nodes", f"node-{i}") or {}
        text = ((node.get("metadata") or {}).get("annotations") or {}).get(
            "k3snet.io/agent-result")
        return json.loads(text) if text else None

    def routes(self, i: int) -> set[str]:
        out = run_in(self.nodes[i], ["ip", "-j", "route", "show", "proto",
                                     str(K3SNET_ROUTE_PROTOCOL)]).stdout
        return {route["dst"] for route in json.loads(out or "[]")}

    def iptables(self, i: int, table: str = "filter") -> list[str]:
        return run_in(self.nodes[i], ["iptables-save", "-t", table]).stdout.splitlines()

    def kernel_converged(self, i: int) -> bool:
        want = {"192.168.2.0/24"} | ({"192.168.3.0/24"} if self.second else set())
        if self.routes(i) != want:
            return False
        nat = "\n".join(self.iptables(i, "nat"))
        filt = "\n".join(self.iptables(i, "filter"))
        if any(f"-d {cidr}" not in nat or f"-d {cidr}" not in filt for cidr in want):
            return False
        gone = {"192.168.2.0/24", "192.168.3.0/24"} - want
        return not any(f"-d {cidr}" in nat or f"-d {cidr}" in filt for cidr in gone)

    def converged(self, i: int) -> bool:
        result = self.result(i)
        return (result is not None and result.get("status") == "ok"
                and result.get("spec") == sha(spec_text(second=self.second))[:12]
                and self.kernel_converged(i))

    # ---------------------------------------------------------------- chaos
    def api_faults(self, rng: random.Random) -> None:
        assert self.api is not None
        status = rng.choice([503, 429])
        self.api.fail(status, times=rng.randint(2, 6), retry_after=rng.randint(1, 2))
        self.events.append(f"api {status} with Retry-After")

    def drift(self, rng: random.Random) -> None:
        i = rng.randrange(NODES)
        ns = self.nodes[i]
        for dst in self.routes(i):
            run_in(ns, ["ip", "route", "del", dst, "proto", str(K3SNET_ROUTE_PROTOCOL)],
                   check=False)
        for line in self.iptables(i, "nat"):
            if line.startswith(":K3SNET"):
                run_in(ns, ["iptables", "-w", "-t", "nat", "-F", line[1:].split()[0]], check=False)
        self.events.append(f"drift on node {i}")

    def foreign_drop(self, seconds: float) -> None:
        ns = self.nodes[1]
        run_in(ns, ["iptables", "-w", "-I", "FORWARD", "1", *DROP])
        self.events.append("foreign DROP in node 1")
        time.sleep(seconds)
        run_in(ns, ["iptables", "-w", "-D", "FORWARD", *DROP])

    def restart(self, rng: random.Random) -> None:
        i = rng.randrange(NODES)
        code = self.stop(i)
        if code not in (0, 143, -signal.SIGTERM, None):  # -15: before its handlers
            self.failures.append(f"agent {i} exited {code} on SIGTERM")
        self.start(i)
        self.events.append(f"agent {i} SIGTERM and restart (exit {code})")

    def edit_spec(self) -> None:
        self.second = not self.second
        self.put_spec()
        self.events.append(f"spec edited (second destination: {self.second})")

    def flood(self, seconds: float) -> None:
        """Clients sending headers past 8 KiB and going on, beside /readyz asked."""
        i = 2
        # An agent just restarted listens only once its imports are done: not a miss.
        if not wait_for(lambda: http_get(self.url(i, "/healthz"))[0] == 200, 60):
            self.failures.append(f"agent {i}: no /healthz 200 within 60 s")
            return
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                try:
                    with socket.create_connection(("127.0.0.1", self.ports[i]), timeout=3) as s:
                        s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
                        chunk = b"X-Big: " + b"a" * 4000 + b"\r\n"
                        while not stop.is_set():
                            s.sendall(chunk)
                except OSError:
                    time.sleep(0.05)

        threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
        for thread in threads:
            thread.start()
        answered = 0
        asked = 0
        missed: list[str] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            asked += 1
            began = time.monotonic()
            status, body = http_get(self.url(i, "/healthz"), timeout=3)
            if status == 200:
                answered += 1
            else:
                took = time.monotonic() - began
                missed.append(f"{status} {body.strip()[:60]} after {took:.1f} s")
            time.sleep(0.2)
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        self.events.append(f"flood of agent {i}: /healthz answered {answered}/{asked}"
                           + (f" (missed: {sorted(set(missed))[:3]})" if missed else ""))
        if answered == 0:
            self.failures.append(f"probe of agent {i} never answered during the flood")

    # ---------------------------------------------------------------- checks
    def check_end(self) -> None:
        assert self.api is not None
        for i in range(NODES):
            if not self.converged(i):
                self.failures.append(f"node {i} not converged: {self.result(i)}, "
                                     f"routes {sorted(self.routes(i))}")
            status, body = http_get(self.url(i, "/readyz"))
            if status != 200:
                self.failures.append(f"/readyz of agent {i}: {status} {body.strip()}")
            self.check_metrics(i)
        lease = self.api.get("coordination.k8s.io/v1/leases", LEASE[1], LEASE[0]) or {}
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        if holder not in {f"node-{i}" for i in range(NODES)}:
            self.failures.append(f"Lease holder {holder!r}")
        transitions = int(spec.get("leaseTransitions") or 0)
        restarts = sum("restart" in event for event in self.events)
        if transitions > restarts + 2:
            self.failures.append(f"leaseTransitions {transitions} for {restarts} restarts")
        self.events.append(f"Lease held by {holder}, {transitions} transitions")
        pools = sorted(p["metadata"]["name"] for p in self.api.objects(POOLS))
        if pools != ["default-ipv4-ippool", "k3snet-nonat-172-20-0-0-16"]:
            self.failures.append(f"IPPools {pools}")
        leaders = [i for i in range(NODES) if (self.result(i) or {}).get("leader")]
        if [f"node-{i}" for i in leaders] != [holder]:
            self.failures.append(f"leaders by their reports {leaders}, Lease {holder}")

    def check_metrics(self, i: int) -> None:
        from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

        status, text = http_get(self.url(i, "/metrics"))
        if status != 200:
            self.failures.append(f"/metrics of agent {i}: {status}")
            return
        try:
            families = list(text_string_to_metric_families(text))
        except ValueError as error:
            self.failures.append(f"/metrics of agent {i} does not parse: {error}")
            return
        infos = [s for f in families for s in f.samples if s.name == "k3snet_agent_spec_info"]
        want = sha(spec_text(second=self.second))
        if not any(s.labels.get("sha256") and want.startswith(s.labels["sha256"])
                   and s.value == 1 for s in infos):
            self.failures.append(f"agent {i}: spec_info {[s.labels for s in infos]}")

    def check_logs(self) -> None:
        for log in sorted(self.tmp.glob("agent-*.log")):
            for line in log.read_text(errors="replace").splitlines():
                if re.search(r"internal error|\bbug\b|traceback", line, re.IGNORECASE):
                    self.failures.append(f"{log.name}: {line[:400]}")

    def check_destroy(self) -> None:
        ns = self.nodes[1]
        done = subprocess.run(
            [sys.executable, "-m", "k3snet.cli", "destroy", "--netns", ns, "--auto-approve"],
            capture_output=True, text=True, check=False, env={
                **ENV, "K3SNET_STATE_DIR": str(self.tmp / "state-1"),
                "K3SNET_LOCK_DIR": str(self.tmp / "locks")})
        if done.returncode != 0:
            self.failures.append(f"destroy exited {done.returncode}: {done.stderr[-400:]}")
        left = [line for table in ("filter", "nat", "raw", "mangle")
                for line in self.iptables(1, table) if "k3snet" in line.lower()]
        nft = json.loads(run_in(ns, ["nft", "-j", "list", "ruleset"]).stdout or "{}")
        tables = [item["table"]["name"] for item in nft.get("nftables", []) if "table" in item]
        chains = [item["chain"]["name"] for item in nft.get("nftables", []) if "chain" in item
                  and "k3snet" in item["chain"]["name"].lower()]
        if left or chains or self.routes(1):
            self.failures.append(f"destroy left in node 1: {left} {chains} {self.routes(1)}")
        self.events.append(f"destroy in node 1: exit {done.returncode}; nft tables now {tables}")

    def teardown(self) -> None:
        for i in list(self.agents):
            self.stop(i)
        for ns in self.nodes:
            if netns_exists(ns):
                kill_netns_processes(ns)
                delete_netns(ns)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="chaos time (at most 8)")
    parser.add_argument("--interval", type=float, default=1.0, help="the agents' --interval")
    parser.add_argument("--prefix", default="h-soak2", help="the namespaces' name prefix")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    minutes = min(args.minutes, 8.0)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)  # noqa: S311 - chaos, not crypto
    rng = random.Random(seed)  # noqa: S311
    print(f"seed {seed}", flush=True)
    before = root_view()
    with tempfile.TemporaryDirectory(prefix="k3snet-soak-") as tmp_name:
        tmp = Path(tmp_name)
        soak = Soak(args.prefix, args.interval, tmp)
        try:
            soak.wire()
            with EmulatedApiServer(resources=(POOLS, *AGENT_RESOURCES)) as api:
                soak.serve(api)
                for i in range(NODES):
                    soak.start(i)
                if not wait_for(lambda: all(soak.converged(i) for i in range(NODES)), 180):
                    soak.failures.append("the first convergence took over 180 s")
                end = time.monotonic() + minutes * 60
                actions: list[Callable[[], None]] = [
                    lambda: soak.api_faults(rng), lambda: soak.drift(rng),
                    lambda: soak.foreign_drop(rng.uniform(2, 6)), lambda: soak.restart(rng),
                    soak.edit_spec, lambda: soak.flood(rng.uniform(3, 8))]
                while time.monotonic() < end:
                    rng.choice(actions)()
                    print(f"{time.strftime('%H:%M:%S')} {soak.events[-1]}", flush=True)
                    time.sleep(rng.uniform(0.5, 3.0))
                api.clear_faults()
                if not wait_for(lambda: all(soak.converged(i) for i in range(NODES)), 120):
                    soak.failures.append("not all converged within 120 s of the chaos's end")
                wait_for(lambda: all(http_get(soak.url(i, "/readyz"))[0] == 200
                                     for i in range(NODES)), 60)
                soak.check_end()
                for i in list(soak.agents):
                    soak.stop(i)
                soak.check_destroy()
            soak.check_logs()
        finally:
            soak.teardown()
        after = root_view()
        for name in before:
            if before[name] != after[name]:
                soak.failures.append(f"the root namespace's {name} changed during the soak")
        for event in soak.events[-3:]:
            print(event)
        for failure in soak.failures:
            print(f"FAIL: {failure}")
        print(f"{len(soak.events)} chaos events, {len(soak.failures)} failures (seed {seed})")
        return 1 if soak.failures else 0


if __name__ == "__main__":
    sys.exit(main())
