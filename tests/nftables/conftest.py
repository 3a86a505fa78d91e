"""Fixtures shared by the nftables tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from k3snet.lab.netns import temporary_netns


@pytest.fixture
def ns(require_root: None) -> Iterator[str]:
    """A fresh, empty network namespace (deleted afterwards, also on failure)."""
    if shutil.which("nft") is None:
        pytest.skip("nft is not installed")
    with temporary_netns("nft") as name:
        yield name
