"""The agent converges in the container the rendered DaemonSet makes: /run read-only
but for what the manifest mounts there, and only the capabilities it adds.

The agent's root filesystem is read-only (``readOnlyRootFilesystem``), so every path
it writes must be a volume of the DaemonSet. The namespace lock lives in
``/run/k3snet/locks``: an nftables-only agent without the host's ``/run/k3snet``
failed every pass with "cannot create the lock directory". Emulated without a
container: ``k3snet agent --once`` in a fresh network namespace and a private mount
namespace whose ``/run`` is a read-only tmpfs, with a writable tmpfs (or file) at
each path under ``/run`` that the rendered DaemonSet mounts.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from k3snet.lab.netns import run_in, temporary_netns
from k3snet.render.manifests import render_manifests
from k3snet.spec import Cluster, Destination, Spec, load_spec

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

if shutil.which("unshare") is None:  # pragma: no cover - util-linux is everywhere here
    pytest.skip("needs unshare(1)", allow_module_level=True)


def _run_mounts(spec: Spec) -> list[tuple[str, str]]:
    """(mountPath, hostPath type) of every writable volume the agent gets under /run."""
    (ds,) = [o for o in render_manifests(spec, node_report=False) if o["kind"] == "DaemonSet"]
    pod: dict[str, Any] = ds["spec"]["template"]["spec"]
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    kinds = {v["name"]: v["hostPath"]["type"] for v in pod["volumes"] if "hostPath" in v}
    return [(m["mountPath"], kinds[m["name"]]) for m in pod["containers"][0]["volumeMounts"]
            if m["mountPath"].startswith("/run/") and not m.get("readOnly", False)]


def _script(mounts: list[tuple[str, str]], scratch: Path, agent: list[str]) -> str:
    """/run as a read-only tmpfs, the manifest's mounts writable on it, then the agent."""
    lines = ["set -e", "mount -t tmpfs -o size=1m k3snet-test-run /run"]
    for path, kind in mounts:
        lines.append(f"touch {shlex.quote(path)}" if kind == "FileOrCreate"
                     else f"mkdir -p {shlex.quote(path)}")
    lines.append("mount -o remount,ro /run")
    for i, (path, kind) in enumerate(mounts):
        if kind == "FileOrCreate":
            host = scratch / f"file-{i}"
            host.touch()
            lines.append(f"mount --bind {shlex.quote(str(host))} {shlex.quote(path)}")
        else:
            lines.append(f"mount -t tmpfs -o size=1m,mode=0755 k3snet-host {shlex.quote(path)}")
    lines.append(f"exec {shlex.join(agent)}")
    return "\n".join(lines)


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_the_agent_converges_with_only_the_manifest_s_writable_paths(
        tmp_path: Path, backend: str) -> None:
    spec = Spec(cluster=Cluster(["10.42.0.0/16"], ["10.43.0.0/16"]),
                destinations=[Destination("192.168.2.0/24")], backends=[backend])
    mounts = _run_mounts(spec)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(json.dumps(spec.to_dict()))
    agent = [sys.executable, "-m", "k3snet.cli", "agent", "-f", str(spec_file), "--once",
             "--no-facts", "--no-kube", "--listen", "none"]
    # the defaults, as in the DaemonSet: the lock and the kept files under /run/k3snet
    env = {k: v for k, v in os.environ.items()
           if k not in ("K3SNET_LOCK_DIR", "K3SNET_STATE_DIR")}
    with temporary_netns("rorun") as ns:
        run_in(ns, ["ip", "link", "set", "lo", "up"])
        done = subprocess.run(
            ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private",
             "sh", "-c", _script(mounts, tmp_path, agent)],
            capture_output=True, text=True, env=env, timeout=120, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Read-only file system" not in done.stderr
        if backend == "nftables":
            listed = run_in(ns, ["nft", "-j", "list", "table", "inet", "k3snet"]).stdout
            assert any("rule" in item for item in json.loads(listed)["nftables"])
        else:
            saved = run_in(ns, ["iptables-save", "-t", "nat"]).stdout
            assert "k3snet" in saved.lower(), saved


def _capabilities(spec: Spec) -> list[str]:
    """The capabilities the rendered DaemonSet adds to the agent's container."""
    (ds,) = [o for o in render_manifests(spec, node_report=False) if o["kind"] == "DaemonSet"]
    context = ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert context["capabilities"]["drop"] == ["ALL"]
    assert (context["runAsUser"], context["allowPrivilegeEscalation"]) == (0, False)
    added: list[str] = context["capabilities"].get("add", [])
    return added


def _as_container(capabilities: list[str]) -> list[str]:
    """uid 0 with only ``capabilities`` (bounding set, so also permitted and effective,
    as a container runtime sets them) and no new privileges."""
    keep = "".join(f",+{c.lower()}" for c in capabilities)
    return ["setpriv", "--no-new-privs", "--inh-caps=-all", f"--bounding-set=-all{keep}", "--"]


@pytest.mark.parametrize("backends", [["netlink", "nftables"], ["iptables"]])
def test_the_agent_converges_with_only_the_manifest_s_capabilities(
        tmp_path: Path, backends: list[str]) -> None:
    # The DaemonSet adds only what the spec's backends use (NET_ADMIN; NET_RAW for
    # iptables): the agent converges with exactly that, sysctls included.
    if shutil.which("setpriv") is None:  # pragma: no cover - util-linux is everywhere here
        pytest.skip("needs setpriv(1)")
    spec = Spec(cluster=Cluster(["10.42.0.0/16"], ["10.43.0.0/16"]),
                destinations=[Destination("192.168.2.0/24")], backends=backends,
                manage_forwarding="netlink" in backends)
    capabilities = _capabilities(spec)
    assert capabilities == (["NET_ADMIN", "NET_RAW"] if "iptables" in backends
                            else ["NET_ADMIN"])
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(json.dumps(spec.to_dict()))
    agent = [sys.executable, "-m", "k3snet.cli", "agent", "-f", str(spec_file), "--once",
             "--no-facts", "--no-kube", "--listen", "none"]
    env = {k: v for k, v in os.environ.items()
           if k not in ("K3SNET_LOCK_DIR", "K3SNET_STATE_DIR")}

    def run(ns: str, caps: list[str]) -> subprocess.CompletedProcess[str]:
        script = _script(_run_mounts(spec), tmp_path, [*_as_container(caps), *agent])
        return subprocess.run(
            ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private",
             "sh", "-c", script], capture_output=True, text=True, env=env, timeout=120,
            check=False)

    with temporary_netns("capset") as ns:
        run_in(ns, ["ip", "link", "set", "lo", "up"])
        # Without NET_ADMIN nothing converges: the capability set is really enforced.
        refused = run(ns, [c for c in capabilities if c != "NET_ADMIN"])
        assert refused.returncode != 0
        # (uid 0 may write a net sysctl without it: start again from the kernel's default)
        run_in(ns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])
        done = run(ns, capabilities)
        assert done.returncode == 0, done.stderr[-3000:]
        if "nftables" in backends:
            listed = run_in(ns, ["nft", "-j", "list", "table", "inet", "k3snet"]).stdout
            assert any("rule" in item for item in json.loads(listed)["nftables"])
            forwarding = run_in(ns, ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout
            assert forwarding.strip() == "1"
        else:
            saved = run_in(ns, ["iptables-save", "-t", "nat"]).stdout
            assert "k3snet" in saved.lower(), saved


def test_a_flannel_file_agent_converges_without_any_capability(tmp_path: Path) -> None:
    # Flannel's file alone (K3s --flannel-conf): the rendered container adds nothing.
    if shutil.which("setpriv") is None:  # pragma: no cover - util-linux is everywhere here
        pytest.skip("needs setpriv(1)")
    conf = tmp_path / "flannel" / "net-conf.json"
    conf.parent.mkdir()
    conf.write_text('{"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan"}}\n')
    conf.chmod(0o644)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        "apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
        f"backends:\n  flannel:\n    path: {conf}\n"
        "cni:\n  allowDisruptive: true\n  flannel:\n"
        "    backend:\n      type: vxlan\n      options: {Port: 4789}\n")
    spec = load_spec(spec_file)
    assert _capabilities(spec) == []
    assert _run_mounts(spec) == []  # nothing of the host's /run either
    agent = [sys.executable, "-m", "k3snet.cli", "agent", "-f", str(spec_file), "--once",
             "--no-facts", "--no-kube", "--listen", "none"]
    with temporary_netns("capnone") as ns:
        done = subprocess.run(
            ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private",
             "sh", "-c", _script([], tmp_path, [*_as_container([]), *agent])],
            capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(conf.read_text())["Backend"]["Port"] == 4789
