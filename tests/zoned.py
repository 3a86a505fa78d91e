"""Addresses as a document may give them with an IPv6 zone id (``fe80::1%eth0``), or none.

Shared by the tests holding a schema to the model where an address may carry a zone:
link-local, unique local, global and IPv4 addresses, written short, long or in capitals,
each with no zone, an interface name, or a zone the model refuses (digits alone, ``.``,
``+``, ``@x``, blanks after it, a name the kernel cannot hold).
"""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

_NETWORKS = ["fe80::/10", "fd00::/8", "2001:db8::/32", "10.0.0.0/8"]
_ZONES = ["eth0", "wg0", "eth0.10", "a+b", "a@b", "x-1_2", "0", "12", ".", "..", "+", "@x",
          "eth0\n", "eth0 ", " eth0", "a" * 15, "a" * 16, "", "\u00e9", "all", "eth%0"]
_ZONE_TEXTS = st.text(st.sampled_from(["a", "Z", "0", "_", "-", ".", "+", "@", "/", ":", " ",
                                       "\n", "%"]), max_size=17)


@st.composite
def zoned_addresses(draw: st.DrawFn) -> str:
    """An address's text, with a zone id (good or bad) or none."""
    address = draw(st.sampled_from(_NETWORKS).flatmap(
        lambda network: st.ip_addresses(network=ipaddress.ip_network(network))))
    text = draw(st.sampled_from([str(address), address.exploded,
                                 str(address).upper(), address.exploded.upper()]))
    zone = draw(st.none() | st.sampled_from(_ZONES) | _ZONE_TEXTS)
    return text if zone is None else f"{text}%{zone}"
