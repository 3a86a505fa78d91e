"""Clients of the Kubernetes API as k3snet's commands and agent make them, for the tests
of what they send: a kubeconfig of one cluster at a URL (the emulated API server, or a
server of a test's own) and no credentials, a client with k3snet's urllib3 retries, and
a recorder of urllib3's own sleeps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


def write_kubeconfig(path: Path, url: str) -> Path:
    """Write it at ``path``; returns ``path``."""
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": url}}],
        "users": [{"name": "lab", "user": {}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab"}}]}))
    return path


def retrying_client(url: str) -> Any:
    """A kubernetes ``ApiClient`` of ``url`` with urllib3's retries as k3snet sets them
    (:func:`k3snet.kube.retry_policy`), without k3snet's own request wrapper."""
    from kubernetes import client  # noqa: PLC0415 - optional dependency (k3snet[kube])

    from k3snet.kube import retry_policy  # noqa: PLC0415

    configuration = client.Configuration()
    configuration.host = url
    configuration.retries = retry_policy()
    return client.ApiClient(configuration)


def urllib3_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """What urllib3's ``Retry`` sleeps from now on (a ``Retry-After``, a back-off),
    recorded and not slept, its clock at 0."""
    import urllib3.util.retry  # noqa: PLC0415 - a dependency of the kubernetes client

    slept: list[float] = []
    monkeypatch.setattr(urllib3.util.retry, "time",
                        type("Clock", (), {"sleep": staticmethod(slept.append),
                                           "time": staticmethod(lambda: 0.0)}))
    return slept
