"""Fixtures shared by the nftables tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from k3snet.backends.nftables import text as text_reader
from k3snet.lab.netns import temporary_netns


@pytest.fixture
def ns(require_root: None) -> Iterator[str]:
    """A fresh, empty network namespace (deleted afterwards, also on failure)."""
    if shutil.which("nft") is None:
        pytest.skip("nft is not installed")
    with temporary_netns("nft") as name:
        yield name


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every rule line the text reader reads by parsing it (a line neither seen before,
    nor expected, nor guessed), in this test, in order."""
    read: list[str] = []
    real = text_reader._read

    def counted(body: str, *args: Any) -> Any:
        read.append(body)
        return real(body, *args)

    monkeypatch.setattr(text_reader, "_read", counted)
    return read
