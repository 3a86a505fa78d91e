"""Fixtures for cluster tests: an emulated API server and a client for it.

Each test gets its own server (kmock's KubernetesEmulator on 127.0.0.1, see
:mod:`k3snet.testing.kube`), so objects and injected faults never leak between tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("kmock")
pytest.importorskip("kubernetes")

from k3snet.testing.kube import EmulatedApiServer


@pytest.fixture
def api_server() -> Iterator[EmulatedApiServer]:
    """A running emulated API server serving both Calico IPPool APIs and ConfigMaps."""
    with EmulatedApiServer() as server:
        yield server


@pytest.fixture
def api_client(api_server: EmulatedApiServer) -> Any:
    """A ``kubernetes.client.ApiClient`` talking to ``api_server`` (no retries)."""
    return api_server.api_client()
