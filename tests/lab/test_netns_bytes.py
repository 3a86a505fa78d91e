"""A namespace named by bytes that are not UTF-8 (anyone's ``ip netns add $'x\\xff'``)
stops neither the lab nor the suite's check for namespaces left behind: ``ip netns
list`` prints file names, read as such."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator

import pytest

from k3snet.lab.netns import netns_exists, temporary_netns
from tests.conftest import NETNS_PREFIX, _k3snet_namespaces

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]


@pytest.fixture
def byte_named() -> Iterator[bytes]:
    """A namespace whose name ends in the byte 0xff, deleted after the test."""
    name = f"{NETNS_PREFIX}bytes-{secrets.token_hex(3)}".encode() + b"\xff"
    subprocess.run([b"ip", b"netns", b"add", name], check=True, timeout=30)
    try:
        yield name
    finally:
        subprocess.run([b"ip", b"netns", b"delete", name], check=False, timeout=30)


def test_a_namespace_named_by_bytes_that_are_not_utf8_is_found_by_its_file_name(
        byte_named: bytes) -> None:
    with temporary_netns("bytes") as ns:
        assert netns_exists(ns)
        assert not netns_exists(f"{ns}-absent")
        assert netns_exists(byte_named.decode(errors="surrogateescape"))


def test_the_suite_s_check_for_namespaces_left_lists_a_name_that_is_not_utf8(
        byte_named: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("K3SNET_SKIP_NETNS_CHECK", raising=False)
    found = _k3snet_namespaces()
    assert found is not None
    assert byte_named.decode(errors="surrogateescape") in found
