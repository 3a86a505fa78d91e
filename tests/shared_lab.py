"""One seed lab for a module's tests that write on its node alone: checked to be a fresh
node before each test, put back after it (:func:`shared_lab`). A lab of its own cost each
such test about two seconds, most of its time.

What a test may leave, and is taken back: rules, chains and policies of iptables of
both flavours and families, the node's nftables ruleset, forwarding, devices added to
the node (bridges), routes added to the router's main table, and the path's MTU
(:func:`tests.pmtu.narrow_the_path`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from k3snet.lab import SeedLab
from k3snet.lab.netns import run_in
from k3snet.lab.seed import DB_ADDRESSES
from tests.pmtu import widen_the_path

_SAVES = ("iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save",
          "ip6tables-legacy-save")
_FORWARDING = ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding")
_MADE_AS: dict[str, tuple[set[str], set[tuple[int, str]], set[tuple[int, str]]]] = {}
"""Each lab's node devices, router routes and node routes when its first test began."""


def made_lab() -> Iterator[SeedLab]:
    """The lab itself (a module-scoped fixture's body)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    with SeedLab.create() as made:
        yield made


def _links(ns: str) -> set[str]:
    return {link["ifname"] for link in json.loads(run_in(ns, ["ip", "-j", "link"]).stdout)}


def _routes(ns: str) -> set[tuple[int, str]]:
    """The (family, destination) of each route of the main table of ``ns``."""
    return {(family, route["dst"]) for family in (4, 6) for route in
            json.loads(run_in(ns, ["ip", f"-{family}", "-j", "route", "show"]).stdout)}


def shared_lab(made: SeedLab) -> Iterator[SeedLab]:
    """``made``, its node a fresh one's in the kernel's own view (checked before the
    test: no iptables rule, user chain or policy but ACCEPT, no nftables table,
    forwarding off, no path MTU learnt by the pod, the node's devices and routes and the
    router's routes those of the lab as made), put back after the test."""
    for save in _SAVES:
        saved = run_in(made.node, [save]).stdout
        assert not [line for line in saved.splitlines() if line.startswith("-")
                    or (line.startswith(":") and " ACCEPT " not in line)], (save, saved)
    assert run_in(made.node, ["nft", "list", "ruleset"]).stdout.strip() == ""
    for key in _FORWARDING:
        assert run_in(made.node, ["sysctl", "-n", key]).stdout.strip() == "0", key
    for address in DB_ADDRESSES.values():
        route = run_in(made.pod, ["ip", "-o", "route", "get", address]).stdout
        assert "mtu" not in route, route
    # The node's devices, the router's and the node's routes as the lab was made: a test
    # whose reset failed half-way (a command of it refused) left them, and a baseline
    # taken anew before each test took what it left as the lab's own.
    links, routes = _links(made.node), _routes(made.router)
    made_as = _MADE_AS.setdefault(made.node, (links, routes, _routes(made.node)))
    assert (links, routes, _routes(made.node)) == made_as, ("left by a test", made_as)
    try:
        yield made
    finally:
        _reset(made, links, routes)


def _reset(lab: SeedLab, links: set[str], routes: set[tuple[int, str]]) -> None:
    for tool in ("iptables", "ip6tables"):  # legacy tables stay, emptied (none to delete)
        saved = run_in(lab.node, [f"{tool}-legacy-save"]).stdout
        empty: list[str] = []
        for line in saved.splitlines():
            if line.startswith("*"):
                empty.append(line)
            elif line.startswith(":") and line.split()[1] != "-":  # a built-in chain
                empty.append(f"{line.split()[0]} ACCEPT [0:0]")
            elif line == "COMMIT":
                empty.append(line)
        if empty:
            run_in(lab.node, [f"{tool}-legacy-restore", "-w"],
                   input_text="\n".join(empty) + "\n")
    run_in(lab.node, ["nft", "flush", "ruleset"])  # iptables-nft's tables with the rest
    for link in sorted(_links(lab.node) - links):
        run_in(lab.node, ["ip", "link", "delete", link])
    for family, destination in sorted(_routes(lab.router) - routes):
        run_in(lab.router, ["ip", f"-{family}", "route", "delete", destination])
    run_in(lab.node, ["sysctl", "-qw", *(f"{key}=0" for key in _FORWARDING)])
    widen_the_path(lab)
