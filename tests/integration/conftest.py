"""Fixtures for tests that build network namespaces on the real kernel."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def require_root() -> None:
    """Skip the test unless we are root: namespaces, veths and sysctls need it."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
