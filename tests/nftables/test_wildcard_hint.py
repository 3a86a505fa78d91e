"""The hint of which device a wildcard name (``eth*``) of another program's chain matched.

:func:`~k3snet.backends.nftables.backend._has_device` keeps, for each wildcard name it
was asked of, the device it found (one ioctl next time, not a dump of every device). The
names come from other programs' chains hooked on a device's ingress or egress, which any
number may use: the hint was kept for every name ever asked of, for the process's life.
"""

from __future__ import annotations

import socket

import pytest

from k3snet.backends.nftables import backend

MOST = 64  # the bound: a K3s node's chains use a handful of wildcard names


def test_the_wildcard_hint_holds_at_most_its_bound_keeping_the_names_asked_of_last(
        monkeypatch: pytest.MonkeyPatch) -> None:
    devices = [(i + 1, f"veth{i}x") for i in range(300)]

    def index(name: str) -> int:
        for i, found in devices:
            if found == name:
                return i
        raise OSError(19, "No such device")

    monkeypatch.setattr(socket, "if_nameindex", lambda: devices)
    monkeypatch.setattr(socket, "if_nametoindex", index)
    monkeypatch.setattr(backend, "_WILDCARD_SEEN", {})
    for _, name in devices:
        assert backend._has_device(f"{name}*")
    assert len(backend._WILDCARD_SEEN) == MOST
    assert list(backend._WILDCARD_SEEN.values()) == [
        name for _, name in devices[-MOST:]]
    assert backend._has_device("veth0x*")  # a name left out: found again by the dump
    assert backend._has_device("nosuch*") is False
    assert len(backend._WILDCARD_SEEN) == MOST
