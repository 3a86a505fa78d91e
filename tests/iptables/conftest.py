"""Fixtures shared by the iptables tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from k3snet.lab.netns import temporary_netns

TOOLS = ("iptables-nft-restore", "ip6tables-nft-restore", "iptables-nft-save",
         "ip6tables-nft-save", "iptables-legacy", "ip6tables-legacy", "iptables-legacy-restore",
         "iptables-legacy-save")
"""What the kernel tests run (Debian's iptables package installs them all)."""


@pytest.fixture
def ns(require_root: None) -> Iterator[str]:
    """A fresh, empty network namespace (deleted afterwards, also on failure)."""
    for tool in TOOLS:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    with temporary_netns("ipt") as name:
        yield name
