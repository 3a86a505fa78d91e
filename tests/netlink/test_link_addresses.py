"""Both drivers spell a link's hardware addresses alike, byte for byte, whatever their
length: the sysctl records written through one are read through the other (the agent's
driver, the CLI's). pyroute2 decodes ``IFLA_ADDRESS`` as six bytes, which an IPv4
tunnel's (four: ipip, gre, sit) and an IPv6 tunnel's (sixteen: ip6tnl, ip6gre) are not.
Raw ``RTM_NEWLINK`` messages, no kernel: this one has no tunnel modules.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from k3snet.backends.netlink import codec

pytest.importorskip("pyroute2")

from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from k3snet.backends.netlink.pyroute2_driver import Pyroute2Driver

T = TypeVar("T")
IFLA_BROADCAST = 2


def newlink(index: int, name: str, address: bytes | None, permanent: bytes | None) -> bytes:
    """A raw ``RTM_NEWLINK`` as the kernel writes it: the broadcast address right after
    the address, of its length."""
    attrs = codec.attr(codec.IFLA_IFNAME, name.encode() + b"\0")
    if address is not None:
        attrs += codec.attr(codec.IFLA_ADDRESS, address)
        attrs += codec.attr(IFLA_BROADCAST, b"\xff" * len(address))
    if permanent is not None:
        attrs += codec.attr(codec.IFLA_PERM_ADDRESS, permanent)
    return codec.message(16, 2, 1, codec.IFINFO.pack(0, 768, index, 0, 0) + attrs)


class Runner:
    def call(self, job: Callable[[], T]) -> T:
        return job()


class Dumping:
    """An ``IPRoute`` whose link dump is the messages given."""

    def __init__(self, raws: list[bytes]) -> None:
        self.raws = raws

    def link(self, command: str, **_query: Any) -> list[Any]:
        assert command == "dump"
        decoded = []
        for raw in self.raws:
            msg = ifinfmsg(raw)
            msg.decode()
            decoded.append(msg)
        return decoded


@pytest.fixture
def pyroute2_links(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[bytes]], dict[int, Any]]:
    def links(raws: list[bytes]) -> dict[int, Any]:
        monkeypatch.setattr(Pyroute2Driver, "_open", lambda self: None)
        driver = Pyroute2Driver(Runner(), lambda: None)  # type: ignore[arg-type]
        driver._thread = threading.get_ident()
        driver._ipr = Dumping(raws)
        return driver.links()
    return links


@pytest.mark.parametrize(("address", "permanent"), [
    (bytes(4), None),                          # ipip without a local address: 0.0.0.0
    (bytes([192, 0, 2, 2]), bytes([192, 0, 2, 2])),  # ipip, gre, sit of a local address
    (bytes(range(1, 17)), bytes(range(1, 17))),      # ip6tnl, ip6gre
    (bytes([2, 0, 0, 0, 0, 1]), bytes([2, 0, 0, 0, 0, 9])),  # Ethernet
    (None, None),                              # WireGuard, tun
])
def test_both_drivers_spell_a_link_s_addresses_alike_whatever_their_length(
        pyroute2_links: Callable[[list[bytes]], dict[int, Any]],
        address: bytes | None, permanent: bytes | None) -> None:
    raw = newlink(7, "t0", address, permanent)
    by_socket = codec.decode_link(raw)
    assert by_socket is not None
    assert by_socket.address == (None if address is None else address.hex(":"))
    [by_pyroute2] = pyroute2_links([raw]).values()
    assert (by_pyroute2.address, by_pyroute2.permanent) == (
        by_socket.address, by_socket.permanent)
