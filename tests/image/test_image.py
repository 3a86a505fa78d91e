"""The agent's container image (``make image``): it runs ``k3snet`` and the agent.

Skipped unless ``K3SNET_IMAGE`` names a built image (``make image`` sets it and
runs these tests right after the build). The containers get no network.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess

import pytest

pytestmark = pytest.mark.image

IMAGE = os.environ.get("K3SNET_IMAGE")
PODMAN = shlex.split(os.environ.get("K3SNET_PODMAN", "podman"))
LIMITS = shlex.split(os.environ.get("K3SNET_PODMAN_LIMITS", ""))
SPEC = ("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
        "destinations:\n  - cidr: 192.168.2.0/24\n")

if not IMAGE:
    pytest.skip("no image to test: run `make image`", allow_module_level=True)


def _run(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert IMAGE is not None
    return subprocess.run([*PODMAN, "run", "--rm", "-i", "--network=none", "--read-only",
                           *LIMITS, IMAGE, *argv], input=stdin, capture_output=True, text=True,
                          timeout=300, check=False)


def test_version() -> None:
    done = _run("k3snet", "--version")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"k3snet \S+\n", done.stdout)


def test_agent_help_lists_its_options() -> None:
    done = _run("k3snet", "agent", "--help")
    assert done.returncode == 0, done.stderr
    for option in ("--once", "--listen", "--cleanup-on-exit", "--spec-configmap", "--lease"):
        assert option in done.stdout


def test_agent_once_against_the_memory_backend() -> None:
    done = _run("sh", "-c", 'cat > /dev/shm/spec.yaml && exec k3snet agent -f /dev/shm/spec.yaml '
                '--backend memory --no-kube --no-facts --once --listen none '
                '--log-format json --node-name image-test', stdin=SPEC)
    assert done.returncode == 0, done.stderr
    assert '"node": "image-test"' in done.stderr
    assert "applied: 3 change(s)" in done.stderr


def test_the_system_tools_and_extras_are_there() -> None:
    done = _run("sh", "-c", "nft --version && iptables --version && ip -V && "
                "python3 -c 'import nftables, iptc, kubernetes, prometheus_client, yaml'")
    assert done.returncode == 0, done.stderr
    assert "nftables" in done.stdout
    assert "iptables" in done.stdout

