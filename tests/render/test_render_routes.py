"""Route and sysctl persistence renderers: ifupdown, netplan, systemd-networkd, sysctl.d.

The renderers are pure; two tests (marked ``kernel``) also run what they render
inside a throwaway namespace: the ifupdown ``up``/``down`` commands, read back by
the netlink backend, and ``sysctl -p`` on the sysctl.d file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from k3snet.errors import ModelError
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import Route, State, Sysctl
from k3snet.model.route import RouteScope
from k3snet.render.routes import (
    ip_route_args,
    render_ifupdown,
    render_netplan,
    render_networkd,
    render_networkmanager,
)
from k3snet.render.sysctl import render_sysctl_d

ROUTES = (
    Route("10.1.0.0/24", gateway="10.0.0.2", device="d0"),
    Route("10.2.0.0/16", device="d0", table=100, metric=5),
    Route("0.0.0.0/0", gateway="10.9.0.2", device="e0", table=1000),
    Route("fd01::/64", gateway="fd00::2", device="d0"),
    Route("fd02::/48", device="e0", table=100, metric=300),
)
STATE = State(owned=[*ROUTES, Sysctl("net.ipv4.ip_forward", 1)],
              foreign=[Route("192.168.0.0/16", gateway="10.0.0.254", device="d0", protocol=4)])

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


def stanzas(text: str) -> dict[str, list[str]]:
    """``iface`` header -> its indented option lines; fails on anything else."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("iface "):
            current = found.setdefault(line, [])
        else:
            assert line.startswith("    "), f"stray line {line!r}"
            assert current is not None, f"option before any iface: {line!r}"
            current.append(line.strip())
    return found


def test_ip_route_args_name_the_route_exactly() -> None:
    assert ip_route_args(ROUTES[0]) == [
        "10.1.0.0/24", "via", "10.0.0.2", "dev", "d0", "metric", "0", "proto", "211"]
    assert ip_route_args(ROUTES[1]) == [
        "10.2.0.0/16", "dev", "d0", "table", "100", "metric", "5", "proto", "211"]
    host = Route("10.3.0.0/24", device="d0", scope="host")
    assert ip_route_args(host)[-6:] == ["scope", "host", "metric", "0", "proto", "211"]


def test_ifupdown_stanzas() -> None:
    text = render_ifupdown(STATE)
    assert "192.168.0.0" not in text  # foreign routes are not k3snet's to persist
    found = stanzas(text)
    assert list(found) == ["iface d0 inet manual", "iface d0 inet6 manual",
                           "iface e0 inet manual", "iface e0 inet6 manual"]
    d0 = found["iface d0 inet manual"]
    assert d0 == [  # the model's order (table, destination, metric); deleted in reverse
        _up("ip", "10.2.0.0/16 dev d0 table 100 metric 5 proto 211"),
        _up("ip", "10.1.0.0/24 via 10.0.0.2 dev d0 metric 0 proto 211"),
        _down("ip", "10.1.0.0/24 via 10.0.0.2 dev d0 metric 0 proto 211"),
        _down("ip", "10.2.0.0/16 dev d0 table 100 metric 5 proto 211"),
    ]
    assert found["iface d0 inet6 manual"] == [
        _up("ip -6", "fd01::/64 via fd00::2 dev d0 metric 1024 proto 211"),
        _down("ip -6", "fd01::/64 via fd00::2 dev d0 metric 1024 proto 211"),
    ]


def _up(ip: str, args: str) -> str:
    """An ifupdown ``up`` line: a route already there with k3snet's protocol is no failure."""
    return (f'up error=$({ip} route add {args} 2>&1) || '
            f'[ -n "$({ip} route show exact {args})" ] || '
            '{ echo "k3snet: $error" >&2; false; }')


def _down(ip: str, args: str) -> str:
    """An ifupdown ``down`` line: a route already gone is no failure."""
    return (f'down error=$({ip} route del {args} 2>&1) || '
            f'[ -z "$({ip} route show exact {args} 2>/dev/null)" ] || '
            '{ echo "k3snet: $error" >&2; false; }')


def test_ifupdown_static_stanza_needs_an_address() -> None:
    text = render_ifupdown(STATE, addresses={"d0": ["10.0.0.1/24", "fd00::1/64"]})
    found = stanzas(text)
    assert found["iface d0 inet static"][0] == "address 10.0.0.1/24"
    assert found["iface d0 inet6 static"][0] == "address fd00::1/64"
    assert "iface e0 inet manual" in found  # no address given: manual, still valid
    with pytest.raises(ModelError, match="interface address"):
        render_ifupdown(STATE, addresses={"d0": ["not-an-address"]})


@pytest.mark.parametrize("address", [
    "fd00::1%x\n    pre-up touch owned\n#/64",  # a zone may hold any text but % and /
    "fe80::1%d0/64",  # ip addr add refuses a zone: the stanza fails at every ifup
])
def test_an_ifupdown_address_with_a_zone_is_refused_not_written_as_lines(address: str) -> None:
    # ipaddress takes an IPv6 zone of any characters (a line break too): written as
    # given, an address became an `address` line and a `pre-up` command run as root.
    with pytest.raises(ModelError, match="zone"):
        render_ifupdown(STATE, addresses={"d0": [address]})


def test_ifupdown_addresses_are_written_as_ipaddress_reads_them() -> None:
    # Only what was checked is written: the text given may say it otherwise.
    text = render_ifupdown(STATE, addresses={"d0": ["10.0.0.1/255.255.255.0",
                                                    "FD00:0::1/64"]})
    found = stanzas(text)
    assert found["iface d0 inet static"][0] == "address 10.0.0.1/24"
    assert found["iface d0 inet6 static"][0] == "address fd00::1/64"


@pytest.mark.parametrize("render", [render_ifupdown, render_netplan, render_networkd,
                                    render_networkmanager])
def test_routes_without_device_are_refused(render: object) -> None:
    state = State(owned=[ROUTES[0], Route("10.5.0.0/24", gateway="10.0.0.2"),
                         Route("10.6.0.0/24", gateway="10.0.0.2")])
    with pytest.raises(ModelError) as caught:
        render(state)  # type: ignore[operator]
    assert "10.5.0.0/24" in str(caught.value)
    assert "10.6.0.0/24" in str(caught.value)  # every offending route at once


def test_netplan_parses_back() -> None:
    data = yaml.safe_load(render_netplan(STATE))
    assert data["network"]["version"] == 2
    ethernets = data["network"]["ethernets"]
    assert set(ethernets) == {"d0", "e0"}
    assert ethernets["d0"]["routes"] == [
        {"to": "10.2.0.0/16", "scope": "link", "metric": 5, "table": 100},
        # The default metric said too: netplan's NetworkManager renderer gives a route
        # without one the connection's (100 on ethernet).
        {"to": "10.1.0.0/24", "via": "10.0.0.2", "metric": 0},
        {"to": "fd01::/64", "via": "fd00::2", "metric": 1024},
    ]
    assert ethernets["e0"]["routes"] == [
        {"to": "0.0.0.0/0", "via": "10.9.0.2", "metric": 0, "table": 1000},
        {"to": "fd02::/48", "scope": "link", "metric": 300, "table": 100},
    ]


def test_netplan_sections_and_awkward_names() -> None:
    state = State(owned=[Route("10.7.0.0/24", device="br0"), Route("10.8.0.0/24", device="1e3"),
                         Route("10.9.0.0/24", device="+1")])
    data = yaml.safe_load(render_netplan(state, sections={"br0": "bridges"}))
    assert list(data["network"]["bridges"]) == ["br0"]
    assert set(data["network"]["ethernets"]) == {"1e3", "+1"}  # strings, not a float or an int
    with pytest.raises(ModelError, match="section"):
        render_netplan(state, sections={"br0": "bridge"})


def test_networkd_files() -> None:
    files = render_networkd(STATE)
    assert set(files) == {"90-k3snet-d0.network", "90-k3snet-e0.network"}
    sections = parse_networkd(files["90-k3snet-d0.network"])
    assert sections[0] == ("Match", {"Name": "d0"})
    assert sections[1:] == [
        # Scope=link said: systemd before v251 makes a route without Gateway= global.
        ("Route", {"Destination": "10.2.0.0/16", "Metric": "5", "Table": "100",
                   "Scope": "link", "Protocol": "211"}),
        ("Route", {"Destination": "10.1.0.0/24", "Gateway": "10.0.0.2", "Metric": "0",
                   "Protocol": "211"}),
        ("Route", {"Destination": "fd01::/64", "Gateway": "fd00::2", "Metric": "1024",
                   "Protocol": "211"}),
    ]
    dropins = render_networkd(STATE, network_files={"d0": "10-d0.network"})
    assert set(dropins) == {"10-d0.network.d/90-k3snet-routes.conf", "90-k3snet-e0.network"}
    assert all(name == "Route" for name, _ in
               parse_networkd(dropins["10-d0.network.d/90-k3snet-routes.conf"]))
    with pytest.raises(ModelError, match=r"\.network file name"):
        render_networkd(STATE, network_files={"d0": "../etc/passwd"})


def parse_networkd(text: str) -> list[tuple[str, dict[str, str]]]:
    """Sections in order (networkd repeats ``[Route]``, which configparser refuses)."""
    sections: list[tuple[str, dict[str, str]]] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            assert line.endswith("]")
            sections.append((line[1:-1], {}))
        else:
            key, _, value = line.partition("=")
            assert key, f"bad line {line!r}"
            assert value, f"bad line {line!r}"
            assert sections, f"key before any section: {line!r}"
            sections[-1][1][key] = value
    return sections


def test_sysctl_d() -> None:
    state = State(owned=[Sysctl("net.ipv4.ip_forward", 1, previous="0"),
                         Sysctl("net/ipv4/conf/d0.5/rp_filter", 2), *ROUTES])
    lines = [line for line in render_sysctl_d(state).splitlines()
             if line and not line.startswith("#")]
    assert lines == ["net.ipv4.ip_forward = 1", "net/ipv4/conf/d0.5/rp_filter = 2"]
    assert "# before k3snet: 0" in render_sysctl_d(state)
    assert [line for line in render_sysctl_d(State()).splitlines()
            if not line.startswith("#") and line] == []


def test_sysctl_d_writes_a_stable_secret_before_the_addr_gen_mode_it_would_overwrite() -> None:
    # sysctl -p writes in file order, and a stable_secret's write sets the interface's
    # addr_gen_mode to 2 (default's: every interface's): after it, the spec's 3 was lost.
    state = State(owned=[Sysctl("net.ipv6.conf.d0.addr_gen_mode", 3),
                         Sysctl("net.ipv6.conf.d0.stable_secret", "2001:db8::1"),
                         Sysctl("net.ipv6.conf.default.stable_secret", "2001:db8::2")])
    lines = [line.split(" = ")[0] for line in render_sysctl_d(state).splitlines()
             if line and not line.startswith("#")]
    assert lines.index("net.ipv6.conf.d0.addr_gen_mode") > max(
        lines.index("net.ipv6.conf.d0.stable_secret"),
        lines.index("net.ipv6.conf.default.stable_secret"))


def _links_d0_e0(ns: str) -> None:
    """Links d0 and e0 (veths, up) with the addresses ROUTES' gateways need.

    Settled when it returns: no link-local addresses (their routes come after DAD), and
    every link's carrier seen (the kernel adds a link's IPv6 multicast route then, from
    a deferred work item): the tests compare whole route listings taken later.
    """
    for dev, peer, v4, v6 in (("d0", "d0p", "10.0.0.1/24", "fd00::1/64"),
                              ("e0", "e0p", "10.9.0.1/24", "fd09::1/64")):
        run_in(ns, ["ip", "link", "add", dev, "type", "veth", "peer", "name", peer])
        for each in (peer, dev):
            run_in(ns, ["ip", "link", "set", each, "addrgenmode", "none"])
            run_in(ns, ["ip", "link", "set", each, "up"])
        run_in(ns, ["ip", "addr", "add", v4, "dev", dev])
        run_in(ns, ["ip", "addr", "add", v6, "dev", dev, "nodad"])
    wanted = {"d0", "d0p", "e0", "e0p"}
    for _ in range(100):
        multicast = {route.get("dev") for route in json.loads(run_in(
            ns, ["ip", "-6", "-j", "route", "show", "table", "local", "type", "multicast"]
        ).stdout)}
        if wanted <= multicast:
            return
        time.sleep(0.05)
    raise AssertionError(f"the lab's links did not come up: multicast routes of {multicast}")


def _ip_routes(ns: str) -> list[dict[str, object]]:
    """Every route of both families in every table, as ``ip -j`` lists them (sorted:
    the same routes, whatever order the kernel dumps them in)."""
    listed = [route for family in ("-4", "-6") for route in json.loads(
        run_in(ns, ["ip", family, "-j", "route", "show", "table", "all"]).stdout)]
    return sorted(listed, key=lambda route: json.dumps(route, sort_keys=True))


def _sh_lines(ns: str, lines: list[str]) -> list[tuple[int, str]]:
    """Each line run as ifupdown runs it (``/bin/sh -c``): (exit status, stderr)."""
    done = [run_in(ns, ["/bin/sh", "-c", line], check=False) for line in lines]
    return [(d.returncode, d.stderr) for d in done]


@pytest.mark.kernel
@needs_root
def test_ifupdown_commands_round_trip_through_the_kernel() -> None:
    from k3snet.backends.netlink import NetlinkBackend  # noqa: PLC0415 - kernel tests only

    with temporary_netns("render") as ns, tempfile.TemporaryDirectory() as tmp:
        _links_d0_e0(ns)
        found = stanzas(render_ifupdown(STATE))
        commands = [line.split(" ", 1) for lines in found.values() for line in lines]
        ups = [command for when, command in commands if when == "up"]
        downs = [command for when, command in commands if when == "down"]
        assert _sh_lines(ns, ups) == [(0, "")] * len(ups)
        with NetlinkBackend(ns, state_dir=tmp) as backend:
            assert {r for r in backend.observe().owned if isinstance(r, Route)} == set(ROUTES)
            assert _sh_lines(ns, downs) == [(0, "")] * len(downs)
            assert not backend.observe().owned


@pytest.mark.kernel
@needs_root
def test_ifupdown_up_and_down_lines_run_twice_succeed_and_leave_the_routes_unchanged() -> None:
    # ifup after `k3snet apply` or the agent added the routes, or a second ifup; ifdown
    # after they were deleted: interfaces(5) stops at a failing line and can leave the
    # interface marked wrongly, so neither may fail.
    with temporary_netns("render") as ns:
        _links_d0_e0(ns)
        found = stanzas(render_ifupdown(STATE))
        commands = [line.split(" ", 1) for lines in found.values() for line in lines]
        ups = [command for when, command in commands if when == "up"]
        downs = [command for when, command in commands if when == "down"]
        before = _ip_routes(ns)
        assert _sh_lines(ns, ups) == [(0, "")] * len(ups)
        added = _ip_routes(ns)
        assert len(added) == len(before) + len(ROUTES)
        assert _sh_lines(ns, ups) == [(0, "")] * len(ups)
        assert _ip_routes(ns) == added
        assert _sh_lines(ns, downs) == [(0, "")] * len(downs)
        assert _ip_routes(ns) == before
        assert _sh_lines(ns, downs) == [(0, "")] * len(downs)
        assert _ip_routes(ns) == before
        # A device gone takes its routes along: ifdown of it has nothing left to delete.
        assert _sh_lines(ns, ups) == [(0, "")] * len(ups)
        run_in(ns, ["ip", "link", "del", "e0"])
        assert _sh_lines(ns, downs) == [(0, "")] * len(downs)
        assert _ip_routes(ns) == [r for r in before if r.get("dev") not in ("e0", "e0p")]


@pytest.mark.kernel
@needs_root
def test_ifupdown_up_line_fails_on_another_programs_route_in_the_slot_and_keeps_it() -> None:
    # The same destination, metric and table, another protocol and gateway: `up` says
    # ip's error and fails, never replacing it; `down` deletes only k3snet's route, so
    # with none there it has nothing to do and the other program's route stays.
    with temporary_netns("render") as ns:
        _links_d0_e0(ns)
        run_in(ns, ["ip", "route", "add", "10.1.0.0/24", "via", "10.0.0.3", "dev", "d0",
                    "metric", "0", "proto", "static"])
        lines = stanzas(render_ifupdown(State(owned=[ROUTES[0]])))["iface d0 inet manual"]
        (up,) = [line.removeprefix("up ") for line in lines if line.startswith("up ")]
        (down,) = [line.removeprefix("down ") for line in lines if line.startswith("down ")]
        before = _ip_routes(ns)
        ((status, stderr),) = _sh_lines(ns, [up])
        assert status != 0
        assert stderr.startswith("k3snet: ")
        assert "File exists" in stderr
        assert _ip_routes(ns) == before
        assert _sh_lines(ns, [down]) == [(0, "")]
        assert _ip_routes(ns) == before
        (kept,) = json.loads(run_in(ns, ["ip", "-j", "route", "show", "10.1.0.0/24"]).stdout)
        assert (kept["gateway"], kept["protocol"]) == ("10.0.0.3", "static")


@pytest.mark.kernel
@needs_root
def test_networkmanager_script_adds_each_route_once_and_fails_only_on_another_programs(
        tmp_path: Path) -> None:
    # The script NetworkManager's dispatcher runs as `SCRIPT DEVICE ACTION`, under sh
    # (dash on Debian), read back by the netlink backend and by `ip -j route`.
    from k3snet.backends.netlink import NetlinkBackend  # noqa: PLC0415 - kernel tests only

    routes = {*ROUTES, Route("10.3.0.0/24", device="d0", scope="host")}
    script = tmp_path / "90-k3snet-routes"
    script.write_text(render_networkmanager(State(owned=routes)))

    def dispatch(ns: str, device: str, action: str) -> tuple[int, str]:
        done = run_in(ns, ["sh", str(script), device, action], check=False)
        return done.returncode, done.stderr

    with temporary_netns("render") as ns:
        _links_d0_e0(ns)
        assert dispatch(ns, "d0", "down") == (0, "")  # no other action adds anything
        assert dispatch(ns, "d0", "pre-up") == (0, "")
        with NetlinkBackend(ns, state_dir=str(tmp_path / "state")) as backend:
            assert not backend.observe().owned
            assert dispatch(ns, "d0", "up") == (0, "")
            assert dispatch(ns, "e0", "up") == (0, "")
            assert dispatch(ns, "x0", "up") == (0, "")  # a device without routes
            assert {r for r in backend.observe().owned if isinstance(r, Route)} == routes
            # Up again, a reapply, a DHCP renewal: the routes are there, no failure.
            for action in ("up", "reapply", "dhcp4-change", "dhcp6-change"):
                assert dispatch(ns, "d0", action) == (0, "")
            assert {r for r in backend.observe().owned if isinstance(r, Route)} == routes
            # Another program's route holds the same destination, metric and table:
            # said and failed, never replaced.
            run_in(ns, ["ip", "route", "del", *ip_route_args(ROUTES[0])])
            run_in(ns, ["ip", "route", "add", "10.1.0.0/24", "via", "10.0.0.3", "dev", "d0",
                        "metric", "0", "proto", "static"])
            status, stderr = dispatch(ns, "d0", "up")
            assert status == 1
            assert stderr.startswith("k3snet: ")
            assert "File exists" in stderr
        (kept,) = json.loads(run_in(ns, ["ip", "-j", "route", "show", "10.1.0.0/24"]).stdout)
        assert (kept["gateway"], kept["protocol"]) == ("10.0.0.3", "static")


# Words the shell reads as its own where a case pattern starts, all valid device names.
SHELL_WORDS = ("esac", "case", "in", "do", "done", "fi", "then", "if", "!", "{")


@pytest.mark.kernel
@needs_root
def test_networkmanager_script_adds_the_routes_of_devices_named_like_shell_words(
        tmp_path: Path) -> None:
    # A device named `esac` was a bare case pattern that ended the case: the script was
    # a syntax error, and NetworkManager ran it for no device, eth0 included.
    names = [name for name in SHELL_WORDS if _valid_device(name)]
    assert "esac" in names
    routes = {Route(f"10.{i}.0.0/24", device=name) for i, name in enumerate(names, 1)}
    routes.add(Route("10.99.0.0/24", device="d0"))
    script = tmp_path / "90-k3snet-routes"
    script.write_text(render_networkmanager(State(owned=routes)))
    with temporary_netns("render") as ns:
        for i, name in enumerate([*names, "d0"]):
            run_in(ns, ["ip", "link", "add", name, "type", "veth", "peer", "name", f"p{i}"])
            run_in(ns, ["ip", "link", "set", f"p{i}", "up"])
            run_in(ns, ["ip", "link", "set", name, "up"])
        for name in [*names, "d0"]:
            done = run_in(ns, ["sh", str(script), name, "up"], check=False)
            assert (done.returncode, done.stderr) == (0, ""), name
        listed = json.loads(run_in(ns, ["ip", "-j", "route", "show", "proto", "211"]).stdout)
        assert {(r["dst"], r["dev"]) for r in listed} == {
            (str(r.destination), r.device) for r in routes}


def _valid_device(name: str) -> bool:
    try:
        Route("10.0.0.0/24", device=name)
    except ModelError:
        return False
    return True


@pytest.mark.kernel
@needs_root
@pytest.mark.skipif(shutil.which("sysctl") is None, reason="needs sysctl(8) (procps)")
def test_sysctl_d_loads_with_sysctl_p(tmp_path: Path) -> None:
    state = State(owned=[Sysctl("net.ipv4.ip_forward", 1),
                         Sysctl("net.ipv4.conf.all.rp_filter", 2),
                         Sysctl("net/ipv4/conf/d0.5/rp_filter", 1)])
    conf = tmp_path / "90-k3snet.conf"
    conf.write_text(render_sysctl_d(state))
    with temporary_netns("render") as ns:
        run_in(ns, ["ip", "link", "add", "d0.5", "type", "veth", "peer", "name", "d0p"])
        result = run_in(ns, ["sysctl", "-p", str(conf)])
        assert result.returncode == 0
        for sysctl in state.owned:
            assert isinstance(sysctl, Sysctl)
            value = run_in(ns, ["cat", f"/proc/sys/{sysctl.path}"]).stdout.strip()
            assert value == sysctl.value, sysctl


# ----------------------------------------------- the scope of an IPv4 route without gateway

@pytest.mark.parametrize("scope", ["link", "host", "universe"])
def test_networkd_writes_the_scope_of_every_ipv4_route_without_gateway(scope: RouteScope) -> None:
    # Without Scope=, systemd before v251 gives a [Route] without Gateway= scope global,
    # v251 and later scope link: one of them is always another route than the spec's.
    route = Route("10.5.0.0/24", device="d0", scope=scope)
    (text,) = render_networkd(State(owned=[route])).values()
    (values,) = [v for section, v in parse_networkd(text) if section == "Route"]
    assert values["Scope"] == {"universe": "global"}.get(scope, scope)


@pytest.mark.parametrize("scope", ["link", "host", "universe"])
def test_netplan_refuses_a_global_ipv4_route_without_gateway_or_writes_its_scope(
        scope: RouteScope) -> None:
    # netplan refuses `to:` without `via:` of scope global ("global unicast route must
    # include both a 'to' and 'via' IP"); scope: link in its place is another route.
    route = Route("10.5.0.0/24", device="d0", scope=scope)
    if scope == "universe":
        with pytest.raises(ModelError, match="without gateway of scope global"):
            render_netplan(State(owned=[route]))
        return
    entry = yaml.safe_load(render_netplan(State(owned=[route])))["network"]["ethernets"]["d0"]
    assert entry["routes"] == [{"to": "10.5.0.0/24", "scope": scope, "metric": 0}]


@pytest.mark.kernel
@needs_root
def test_ip_route_args_of_every_scope_add_that_route() -> None:
    # ip names the kernel's scope 0 "global" and refuses "universe".
    from k3snet.backends.netlink import NetlinkBackend  # noqa: PLC0415 - kernel tests only

    scopes: list[RouteScope] = ["link", "host", "universe"]
    routes = [Route(f"10.5.{n}.0/24", device="d0", scope=scope)
              for n, scope in enumerate(scopes)]
    with temporary_netns("render") as ns, tempfile.TemporaryDirectory() as tmp:
        _links_d0_e0(ns)
        for route in routes:
            run_in(ns, ["ip", "route", "add", *ip_route_args(route)])
        with NetlinkBackend(ns, state_dir=tmp) as backend:
            assert {r for r in backend.observe().owned if isinstance(r, Route)} == set(routes)
