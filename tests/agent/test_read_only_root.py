"""The agent converges in the container the rendered DaemonSet makes: /run read-only
but for what the manifest mounts there.

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
from k3snet.spec import Cluster, Destination, Spec

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
