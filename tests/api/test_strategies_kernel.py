"""The interface names the strategies draw are names the kernel gives an interface.

Checked in a namespace of the test's own: ``ip link add`` of a veth pair, then the
kernel's own view (``ip -j link show``).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
from hypothesis import given, settings

from k3snet.lab.netns import temporary_netns
from k3snet.testing import strategies as ks
from tests.examples import examples

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

# Edges of the kernel's rule and of k3snet's: the names the namespace (or the test's own
# veth peer) already holds or may hold on some host (the fallback tunnels), lengths, dots,
# punctuation, and the names of /proc/sys/net/ipv4/conf/{all,default}, which the kernel
# refuses ("Invalid argument").
EDGE_NAMES = ["lo", "k3snet-peer", "tunl0", "sit0", "gre0", "a", "Z", "0", "x" * 15, ".a",
              "a..", "-", "_", "a@b", "a+", "+a", "eth0.100", "flannel-v6.1", "all", "default",
              "ALL", "all0", "Default"]


@pytest.fixture(scope="module")
def ns() -> Iterator[str]:
    with temporary_netns("ifnames") as name:
        yield name


def _ip(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ip -n NS ARGS``: ip enters the namespace itself, one process (``ip netns exec``
    runs a second after remounting /sys for it), at each of ~120 names' three runs."""
    done = subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 0 or not check, done.stderr
    return done


def _held(ns: str) -> set[str]:
    """The interfaces the namespace holds before the test adds one: ``lo``, and on a host
    with tunnel modules loaded their fallback devices (``tunl0`` once Calico loaded
    ``ipip``, ``sit0``, ``gre0``, ``ip6tnl0``...), which the kernel makes in every new
    namespace unless ``net.core.fb_tunnels_only_for_init_net`` says otherwise."""
    return {link["ifname"] for link in json.loads(_ip(ns, "-j", "link", "show").stdout)}


def _kernel_takes(ns: str, name: str) -> bool:
    peer = "k3snet-peer" if name != "k3snet-peer" else "k3snet-peer2"
    added = _ip(ns, "link", "add", "name", name, "type", "veth", "peer", "name", peer,
                check=False)
    if added.returncode != 0:
        # Refused: unless the kernel gave an interface that very name already ("lo", a
        # fallback tunnel of a module loaded on this host), a second one being refused
        # ("File exists"). Looked at once refused: most names are taken.
        return name in _held(ns)
    try:
        (link,) = json.loads(_ip(ns, "-j", "link", "show", "dev", name).stdout)
        return bool(link["ifname"] == name)
    finally:
        _ip(ns, "link", "delete", "dev", name)


@pytest.mark.parametrize("name", EDGE_NAMES)
def test_an_edge_name_is_drawn_exactly_when_the_kernel_takes_it(ns: str, name: str) -> None:
    # "all" and "default" were drawn (k3snet takes them) and the kernel refuses them.
    assert ks._interface_name_drawn(name) == _kernel_takes(ns, name)


@settings(max_examples=examples(100), deadline=None)
@given(ks.interface_names())
def test_every_drawn_interface_name_is_one_the_kernel_takes(ns: str, name: str) -> None:
    assert _kernel_takes(ns, name)
