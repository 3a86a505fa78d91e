"""Interface names the kernel takes and k3snet's model refuses (``vé``: UTF-8 beyond
ASCII; bytes that are no UTF-8) reach the backend in the kernel's dumps: a route
through such a device is a foreign block where it stands. A gateway on-link only
through one (its connected route) was "not on-link" to ``check``, so the dry run failed
a plan the kernel takes. The kernel's view is ``ip -j route``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import Route, RouteBlock, State, Sysctl
from k3snet.planner import plan
from tests.netlink.links import ip
from tests.netlink.test_backend import DRIVERS, Driver

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]


def _ours(ns: str) -> set[tuple[str, str]]:
    listed = [subprocess.run(["ip", "-n", ns, family, "-j", "route", "show"], check=True,
                             capture_output=True, text=True, errors="replace").stdout
              for family in ("-4", "-6")]
    return {(r["dst"], r["gateway"]) for text in listed
            for r in json.loads(text, strict=False) if r.get("protocol") == "211"}


@pytest.mark.parametrize("name", ["v\u00e9", "\udcff\udcfe"])
def test_a_gateway_on_link_through_an_unnameable_device_passes_check_as_the_kernel_takes_it(
        tmp_path: Path, name: str) -> None:
    raw = name  # subprocess passes the surrogates on as the bytes they stand for
    with temporary_netns("unnamed") as ns:
        run_in(ns, ["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0"])
        ip(ns, "link", "add", raw, "type", "veth", "peer", "name", "up0")
        ip(ns, "link", "set", "dev", raw, "up")
        ip(ns, "link", "set", "dev", "up0", "up")
        ip(ns, "addr", "add", "10.6.0.5/24", "dev", raw)
        ip(ns, "-6", "addr", "add", "fd06::5/64", "dev", raw, "nodad")
        with NetlinkBackend(ns, state_dir=tmp_path) as backend:
            observed = backend.observe()
            assert any(isinstance(b, RouteBlock) and b.destination.prefixlen == 24
                       for b in observed.foreign)
            wanted = State(owned=[Route("10.7.0.0/16", gateway="10.6.0.1"),
                                  Route("fd07::/64", gateway="fd06::1")])
            p = plan(observed, wanted)
            assert backend.check(p) == ()
            backend.apply(p)
            assert _ours(ns) == {("10.7.0.0/16", "10.6.0.1"), ("fd07::/64", "fd06::1")}
            # A gateway no device route holds is still refused.
            p = plan(backend.observe(), State(owned=[
                *wanted.owned, Route("10.8.0.0/16", gateway="10.9.0.1")]))
            [problem] = backend.check(p)
            assert "gateway 10.9.0.1 is not on-link" in problem


def test_table_ids_metrics_and_names_at_their_limits_reach_the_kernel_as_given(
        tmp_path: Path) -> None:
    device = "a.b@c+d-e_f.123"  # 15 bytes, the most IFNAMSIZ leaves
    switch = f"net/ipv4/conf/{device}/forwarding"
    wanted = State(owned=[
        Route("10.1.0.0/16", device=device, table=4294967295),
        Route("10.2.0.0/16", device=device, table=252),  # RT_TABLE_COMPAT
        Route("10.3.0.0/16", device=device, table=256, metric=4294967295),
        Route("fd01::/64", device=device, table=4294967295),
        Sysctl(switch, 1),
    ])
    with temporary_netns("limits") as ns, NetlinkBackend(ns, state_dir=tmp_path) as backend:
        ip(ns, "link", "add", device, "type", "veth", "peer", "name", "-x")
        ip(ns, "link", "set", "dev", device, "up")
        p = plan(backend.observe(), wanted)
        assert backend.check(p) == ()
        backend.apply(p)
        listed = {(r["dst"], r.get("table", "main"), r.get("metric", 0), r["dev"])
                  for family in ("-4", "-6")
                  for r in json.loads(ip(ns, family, "-j", "route", "show", "table", "all"))
                  if r.get("protocol") == "211"}
        assert listed == {("10.1.0.0/16", "4294967295", 0, device),
                          ("10.2.0.0/16", "252", 0, device),
                          ("10.3.0.0/16", "256", 4294967295, device),
                          ("fd01::/64", "4294967295", 1024, device)}
        assert run_in(ns, ["sysctl", "-n", switch]).stdout.strip() == "1"
        assert plan(backend.observe(), wanted).changes == ()
        backend.apply(plan(backend.observe(), State()))
        assert not [r for r in json.loads(ip(ns, "-j", "route", "show", "table", "all"))
                    if r.get("protocol") == "211"]


ESC_NAME = "a\x1bb"


def _device_routes(ns: str) -> set[tuple[str, str]]:
    # ip -j writes the ESC raw inside its JSON strings: read with strict=False.
    return {(r["dst"], r["dev"]) for family in ("-4", "-6")
            for r in json.loads(ip(ns, family, "-j", "route", "show"), strict=False)
            if r.get("protocol") != "kernel"}


def test_a_route_through_a_device_of_an_esc_names_the_device_escaped_and_stays_untouched(
        tmp_path: Path) -> None:
    # Observed, such a route was an "unnamed device" block: which device, the user could
    # not tell. The name the kernel holds (ip -j link's) is kept; shown as a shell word
    # in the text, JSON-escaped in the JSON, never a raw ESC on the terminal.
    with temporary_netns("escname") as ns:
        ip(ns, "link", "add", ESC_NAME, "type", "veth", "peer", "name", "p0")
        ip(ns, "link", "set", "dev", ESC_NAME, "up")
        ip(ns, "route", "add", "10.9.0.0/24", "dev", ESC_NAME)
        ip(ns, "route", "add", "10.7.0.0/24", "via", "10.9.0.1", "dev", ESC_NAME)
        kernel = {link["ifname"] for link in json.loads(ip(ns, "-j", "link"), strict=False)}
        assert ESC_NAME in kernel
        with NetlinkBackend(ns, state_dir=tmp_path) as backend:
            observed = backend.observe()
            blocks = {(str(b.destination), b.device) for b in observed.foreign
                      if isinstance(b, RouteBlock) and b.destination.version == 4}
            assert blocks == {("10.9.0.0/24", ESC_NAME), ("10.7.0.0/24", ESC_NAME)}
            # Plan and apply leave it alone: a route wanted there conflicts with it.
            p = plan(observed, State(owned=[Route("10.9.0.0/24", gateway="10.6.0.1")]))
            assert [note.wanted.describe() for note in p.conflicts] == [
                "route 10.9.0.0/24 via 10.6.0.1 table main metric 0 proto k3snet"]
            assert "dev $'a\\x1bb'" in p.render()
            assert p.changes == ()
            backend.apply(p)
        env = {"K3SNET_STATE_DIR": str(tmp_path / "cli")}
        argv = [sys.executable, "-m", "k3snet", "observe", "--netns", ns, "--backend",
                "netlink"]
        text = subprocess.run(argv, capture_output=True, check=True, env={
            **os.environ, **env}).stdout
        assert b"\x1b" not in text
        assert (b"device route, unnamed device route 10.9.0.0/24 dev $'a\\x1bb' table main"
                in text)
        document = subprocess.run([*argv, "--output", "json"], capture_output=True,
                                  check=True, env={**os.environ, **env}).stdout
        assert b"\x1b" not in document
        assert b'"device": "a\\u001bb"' in document
        shown = {(b["destination"], b["device"]) for b in json.loads(document)["foreign"]
                 if b["type"] == "route-block" and "." in b["destination"]}
        assert shown == blocks
        assert _device_routes(ns) == {("10.9.0.0/24", ESC_NAME), ("10.7.0.0/24", ESC_NAME)}


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("name", ["\udcff\udcfe\udcfd\udcfc\udcfb\udcfa", "\udcff"])
def test_a_route_through_a_device_named_in_bytes_that_are_no_utf8_is_seen_ours_once(
        tmp_path: Path, name: str, driver: Driver) -> None:
    """The names were read with U+FFFD (3 bytes) for each byte that is no UTF-8 (the
    pyroute2 driver: as bytes): past 5 such bytes no route block could hold the name,
    and a route through the device vanished from ``observe``, a foreign one as k3snet's
    own, added again at every pass and refused ("File exists", the whole apply undone).
    Each byte is now the lone surrogate standing for it, as a block's device shows it
    (and as the sysctls' paths spell it: ``surrogateescape``)."""
    with temporary_netns("bytename") as ns:
        ip(ns, "link", "add", name, "type", "veth", "peer", "name", "up0")
        ip(ns, "link", "set", "dev", name, "up")
        ip(ns, "link", "set", "dev", "up0", "up")
        ip(ns, "addr", "add", "10.6.0.5/24", "dev", name)
        ip(ns, "route", "add", "10.5.0.0/16", "dev", name, "proto", "static")
        wanted = State(owned=[Route("10.7.0.0/16", gateway="10.6.0.1")])
        with NetlinkBackend(ns, state_dir=tmp_path, driver=driver) as backend:
            [block] = [b for b in backend.observe().foreign
                       if isinstance(b, RouteBlock) and str(b.destination) == "10.5.0.0/16"]
            assert block.device == name
            backend.apply(plan(backend.observe(), wanted))
            assert _ours(ns) == {("10.7.0.0/16", "10.6.0.1")}
            # Seen where it stands (through a device no Route can name: a block), so
            # not added again: the next plan changes nothing and its apply passes.
            again = plan(backend.observe(), wanted)
            assert again.empty
            [note] = again.notes
            assert note.foreign is not None
            assert (note.foreign.destination, note.foreign.device) == (
                next(iter(wanted.owned)).destination, name)
            backend.apply(again)
