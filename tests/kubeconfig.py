"""A kubeconfig of one cluster at a URL (the emulated API server, or a server of a
test's own) and no credentials, for the tests that make their client from a file as
k3snet's commands and agent do."""

from __future__ import annotations

import json
from pathlib import Path


def write_kubeconfig(path: Path, url: str) -> Path:
    """Write it at ``path``; returns ``path``."""
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": url}}],
        "users": [{"name": "lab", "user": {}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "lab"}}]}))
    return path
