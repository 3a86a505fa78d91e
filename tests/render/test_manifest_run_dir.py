"""The agent's DaemonSet mounts the host's ``/run/k3snet`` whenever a node backend may run.

Every node backend (netlink, nftables, iptables) converges under the node's namespace
lock (:mod:`k3snet.backends.lock`), whose files live in ``/run/k3snet/locks``. The
agent's root filesystem is read-only, so without the host's directory mounted it
cannot take the lock at all (no pass ever converges), and with a directory of its
own it would not exclude a host ``k3snet apply``, which is the lock's purpose.
"""

from __future__ import annotations

from typing import Any

import pytest

yaml = pytest.importorskip("yaml")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

from k3snet.render.manifests import (  # noqa: E402
    NEWEST_KUBERNETES_VERSION,
    OLDEST_KUBERNETES_VERSION,
    render_manifests,
)
from k3snet.spec import Destination, Spec  # noqa: E402


def _agent_pod(backends: list[str]) -> dict[str, Any]:
    flannel_conf = "/etc/k3s/flannel/net-conf.json" if "flannel" in backends else None
    objs = render_manifests(Spec(destinations=[Destination("192.168.2.0/24")],
                                 backends=backends), node_report=False, flannel_conf=flannel_conf)
    for obj in objs:
        for version in (OLDEST_KUBERNETES_VERSION, NEWEST_KUBERNETES_VERSION):
            parsed = yaml.safe_load(yaml.safe_dump(obj))
            assert kubernetes_validate.validate(parsed, version, strict=True) == version
    (ds,) = [o for o in objs if o["kind"] == "DaemonSet"]
    pod: dict[str, Any] = ds["spec"]["template"]["spec"]
    return pod


def _run_dir(pod: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(volume, mount) of the host's /run/k3snet, or None."""
    volumes = [v for v in pod["volumes"] if v.get("hostPath", {}).get("path") == "/run/k3snet"]
    if not volumes:
        return None
    (volume,) = volumes
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    return volume, mount


@pytest.mark.parametrize("backends", [["nftables"], ["iptables"], ["netlink"],
                                      ["nftables", "flannel"], []])
def test_a_node_backend_s_agent_mounts_the_host_s_run_k3snet_writable(
        backends: list[str]) -> None:
    pod = _agent_pod(backends)
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    found = _run_dir(pod)
    assert found is not None, "the namespace lock's directory is not mounted"
    volume, mount = found
    assert volume["hostPath"]["type"] == "DirectoryOrCreate"
    # the same path as on the host: the agent's lock is the one `k3snet apply` takes
    assert mount["mountPath"] == "/run/k3snet"
    assert not mount.get("readOnly", False)
    assert "K3SNET_LOCK_DIR" not in {e["name"] for e in container["env"]}


@pytest.mark.parametrize("backends", [["calico"], ["cilium"], ["flannel"]])
def test_an_agent_of_cluster_objects_only_mounts_no_run_k3snet(backends: list[str]) -> None:
    assert _run_dir(_agent_pod(backends)) is None
