"""ConfigMaps, DaemonSets and their pods as the emulated API server holds them, shared by
the tests of the restarts a CNI change awaits and of Cilium's ip-masq-agent mount.

Only the fields k3snet reads are filled in: a DaemonSet's selector and pod template, a
pod's labels, owner, creation and container start.
"""

from __future__ import annotations

from typing import Any

CONFIGMAPS = "v1/configmaps"
DAEMONSETS = "apps/v1/daemonsets"
PODS = "v1/pods"

def configmap(namespace: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    """The ConfigMap ``namespace/name`` holding ``data``."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace}, "data": data}


def daemonset(namespace: str, name: str, labels: dict[str, str],
              volumes: list[dict[str, Any]]) -> dict[str, Any]:
    """A DaemonSet selecting ``labels``, one container in its pod template, ``volumes``."""
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "agent", "image": "x"}],
                                           "volumes": volumes}}}}


def daemonset_pod(namespace: str, name: str, owner: str, labels: dict[str, str], *,
                  created: str | None = None, started: str | None = None,
                  spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """A running pod of the DaemonSet ``owner``: made at ``created`` (no
    ``creationTimestamp`` if ``None``), its container started at ``started`` (no
    container status if ``None``), running ``spec`` (one container,
    as :func:`daemonset`'s, if ``None``)."""
    status: dict[str, Any] = {"phase": "Running"}
    if started is not None:
        status["containerStatuses"] = [{
            "name": "agent", "image": "x", "imageID": "", "ready": True, "restartCount": 0,
            "state": {"running": {"startedAt": started}}}]
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if created is not None:
        metadata["creationTimestamp"] = created
    metadata["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                                    "name": owner, "uid": "u", "controller": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"containers": [{"name": "agent", "image": "x"}]} if spec is None else spec,
            "status": status}
