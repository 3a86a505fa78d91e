"""Where ``render netplan`` puts a device's routes among the node's other netplan files.

netplan merges definitions by section and id, and gives each id a networkd file of its
own (``10-netplan-ID.network``); networkd applies only the first file, in lexical
order, that matches a link. Routes written under a device's name while another
definition (``nic0``, ``match: {macaddress}``, ``set-name: eth0``, as cloud-init writes)
configures that device made a second file that sorts first: at the next boot eth0 had
k3snet's routes and no DHCP. The last test runs the real ``netplan generate`` and reads
the networkd files it writes, as networkd would choose among them.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from k3snet.cli import main
from k3snet.errors import ModelError
from k3snet.model import Route, State
from k3snet.render.routes import netplan_placement, render_netplan, render_networkd
from k3snet.testing import strategies

CLOUD_INIT = {"network": {"version": 2, "ethernets": {"nic0": {
    "match": {"macaddress": "52:54:00:12:34:56"}, "set-name": "eth0", "dhcp4": True}}}}
PLAIN = {"network": {"version": 2, "ethernets": {"eth0": {"dhcp4": True}}}}
BRIDGE = {"network": {"version": 2, "ethernets": {"eno1": {"dhcp4": False}},
                      "bridges": {"eth0": {"interfaces": ["eno1"], "dhcp4": True}}}}
GLOB = {"network": {"version": 2, "ethernets": {"all-eth": {
    "match": {"name": "eth*"}, "dhcp4": True}}}}
MAC_ONLY = {"network": {"version": 2, "ethernets": {"uplink": {
    "match": {"macaddress": "52:54:00:12:34:56"}, "dhcp4": True}}}}


def test_a_device_renamed_by_set_name_gets_its_routes_under_that_definition() -> None:
    assert netplan_placement({"50-cloud-init.yaml": CLOUD_INIT}, ["eth0"]) == (
        {"eth0": "ethernets"}, {"eth0": "nic0"})


def test_a_device_named_by_its_id_keeps_its_section() -> None:
    assert netplan_placement({"01-netcfg.yaml": PLAIN}, ["eth0"]) == (
        {"eth0": "ethernets"}, {"eth0": "eth0"})
    assert netplan_placement({"01-netcfg.yaml": BRIDGE}, ["eth0"]) == (
        {"eth0": "bridges"}, {"eth0": "eth0"})


def test_a_device_no_file_names_is_left_to_the_default() -> None:
    assert netplan_placement({"01-netcfg.yaml": PLAIN, "empty.yaml": None}, ["eth1"]) == ({}, {})


@pytest.mark.parametrize("other", [GLOB, MAC_ONLY], ids=["name-glob", "macaddress"])
def test_a_device_a_match_may_configure_is_refused_until_its_id_is_given(
        other: dict[str, Any]) -> None:
    with pytest.raises(ModelError, match=r"--netplan-id eth0=ID"):
        netplan_placement({"50-cloud-init.yaml": other}, ["eth0"])
    (netplan_id,) = other["network"]["ethernets"]
    assert netplan_placement({"50-cloud-init.yaml": other}, ["eth0"],
                             ids={"eth0": netplan_id}) == (
        {"eth0": "ethernets"}, {"eth0": netplan_id})


def test_a_name_glob_that_does_not_cover_the_device_is_not_a_doubt() -> None:
    assert netplan_placement({"50.yaml": GLOB}, ["ens3"]) == ({}, {})


def test_a_device_two_definitions_name_is_refused() -> None:
    with pytest.raises(ModelError, match=r"two definitions, 'eth0' \(ethernets\), 'nic0'"):
        netplan_placement({"01.yaml": PLAIN, "50.yaml": CLOUD_INIT}, ["eth0"])


def test_an_id_no_file_defines_is_refused() -> None:
    with pytest.raises(ModelError, match=r"'nic9' for eth0: no netplan file defines it"):
        netplan_placement({"50.yaml": CLOUD_INIT}, ["eth0"], ids={"eth0": "nic9"})


@pytest.mark.parametrize("document", [[], {"network": "x"}, {"network": {"ethernets": []}}])
def test_a_file_netplan_refuses_is_refused(document: object) -> None:
    with pytest.raises(ModelError, match=r"netplan file bad\.yaml"):
        netplan_placement({"bad.yaml": document}, ["eth0"])


def test_two_devices_cannot_share_one_definition() -> None:
    state = State(owned=[Route("10.1.0.0/24", device="eth0"), Route("10.2.0.0/24", device="eth1")])
    with pytest.raises(ModelError, match="eth0 and eth1"):
        render_netplan(state, ids={"eth0": "all-eth", "eth1": "all-eth"})


def test_ids_are_quoted_keys() -> None:
    state = State(owned=[Route("10.1.0.0/24", device="eth0")])
    text = render_netplan(state, ids={"eth0": "on:#x"})
    assert list(yaml.safe_load(text)["network"]["ethernets"]) == ["on:#x"]
    with pytest.raises(ModelError, match="netplan id"):
        render_netplan(state, ids={"eth0": "a\nb"})


# ------------------------------------------------------------------ the real netplan

SPEC = """\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
cluster:
  podCIDRs: [10.42.0.0/16]
destinations:
  - cidr: 192.168.2.0/24
    gateway: 192.168.1.1
    device: eth0
"""

needs_netplan = pytest.mark.skipif(
    shutil.which("netplan") is None and not os.environ.get("CI"),
    reason="needs netplan (Debian netplan.io; make deps installs it)")


@functools.cache
def _netplan_escapes_ids() -> bool:
    """Whether the netplan installed escapes an id in the names of the files it writes
    (1.0.1 and later: ``10-netplan-a%3Ab.network``; up to 1.0 ``10-netplan-a:b.network``)."""
    with tempfile.TemporaryDirectory(prefix="k3snet-netplan-") as root:
        etc = Path(root) / "etc" / "netplan"
        etc.mkdir(parents=True)
        (etc / "01-a.yaml").write_text("network:\n  version: 2\n  ethernets:\n"
                                       "    a:b: {dhcp4: true}\n")
        (etc / "01-a.yaml").chmod(0o600)
        _netplan_generate(Path(root))
        written = {p.name for p in (Path(root) / "run" / "systemd" / "network").iterdir()}
    assert written & {"10-netplan-a%3Ab.network", "10-netplan-a:b.network"}, written
    return "10-netplan-a%3Ab.network" in written


@functools.cache
def _netplan_generator() -> tuple[str, ...]:
    """What ``netplan generate`` runs: netplan's command line (a Python program) runs its
    generator with the same ``--root-dir`` and exits with the generator's status, its
    stderr passed on; the generator it names (NETPLAN_GENERATE_PATH, or where the netplan
    packages install it) is run here directly, without the 0.2 s of CPU of that Python
    process at each of the file's ~200 runs. ``netplan generate`` where none is found."""
    for path in (os.environ.get("NETPLAN_GENERATE_PATH"), "/lib/netplan/generate",
                 "/usr/libexec/netplan/generate", "/usr/lib/netplan/generate"):
        if path and os.access(path, os.X_OK):
            return (path,)
    return ("netplan", "generate")


def _netplan_generate_run(root: Path) -> subprocess.CompletedProcess[str]:
    """The real netplan generator run over ``root`` (its etc/netplan files, its run/
    written), as ``netplan generate --root-dir ROOT`` runs it."""
    return subprocess.run([*_netplan_generator(), "--root-dir", str(root)],
                          capture_output=True, text=True, check=False, timeout=60,
                          # netplan in a snap asks a D-Bus service to generate for / instead
                          env={k: v for k, v in os.environ.items() if k != "SNAP"})


def _netplan_generate(root: Path) -> str:
    """Run the real ``netplan generate`` over ``root`` (its etc/netplan files, its run/
    written); its stderr, it having succeeded."""
    done = _netplan_generate_run(root)
    assert done.returncode == 0, done.stderr
    return done.stderr


def _networkd_sections(text: str) -> dict[str, list[dict[str, str]]]:
    sections: dict[str, list[dict[str, str]]] = {}
    current: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("["):
            current = {}
            sections.setdefault(line.strip("[]"), []).append(current)
        elif "=" in line:
            key, _, value = line.partition("=")
            current[key] = value
    return sections


def _applied(run: Path, name: str, mac: str) -> dict[str, list[dict[str, str]]]:
    """The .network file networkd applies to the link ``name`` with MAC ``mac``: the first,
    in lexical order, whose [Match] matches it."""
    for path in sorted((run / "systemd" / "network").glob("*.network")):
        sections = _networkd_sections(path.read_text())
        match = sections["Match"][0]
        if "Name" in match and not fnmatch.fnmatchcase(name, match["Name"]):
            continue
        if "PermanentMACAddress" in match and match["PermanentMACAddress"] != mac:
            continue
        return sections
    raise AssertionError(f"no .network file matches {name}")


@needs_netplan
@pytest.mark.parametrize(("admin", "given"), [
    (CLOUD_INIT, []), (PLAIN, []), (BRIDGE, []), (GLOB, ["--netplan-id", "eth0=all-eth"]),
    (MAC_ONLY, ["--netplan-id", "eth0=uplink"]),
], ids=["set-name", "plain", "bridge", "name-glob", "macaddress"])
def test_the_file_networkd_applies_holds_the_admins_dhcp_and_k3snets_routes(
        admin: dict[str, Any], given: list[str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    etc = tmp_path / "etc" / "netplan"
    etc.mkdir(parents=True)
    (etc / "50-cloud-init.yaml").write_text(yaml.safe_dump(admin))
    (etc / "50-cloud-init.yaml").chmod(0o600)  # as cloud-init writes it
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    assert main(["render", "netplan", "-f", str(spec), "-o", str(etc), *given]) == 0
    capsys.readouterr()
    stderr = _netplan_generate(tmp_path)
    # k3snet's file is its owner's alone: written 0644, netplan warned at every run
    # ("Permissions for .../90-k3snet.yaml are too open"), the boot's generator too.
    assert "too open" not in stderr, stderr
    applied = _applied(tmp_path / "run", "eth0", "52:54:00:12:34:56")
    assert applied["Network"][0].get("DHCP") == "ipv4"  # the admin's configuration
    assert {"Destination": "192.168.2.0/24", "Gateway": "192.168.1.1",
            "Metric": "0"} in applied["Route"]


@needs_netplan
def test_under_network_manager_the_routes_keep_the_metric_of_the_spec(tmp_path: Path) -> None:
    # A netplan route without metric is, under renderer: NetworkManager, one of the
    # connection's metric (route1=DST,GW: 100 on ethernet), not the kernel's 0 or 1024.
    etc = tmp_path / "etc" / "netplan"
    etc.mkdir(parents=True)
    (etc / "01-network-manager.yaml").write_text(yaml.safe_dump({"network": {
        "version": 2, "renderer": "NetworkManager",
        "ethernets": {"eth0": {"dhcp4": True, "dhcp6": True}}}}))
    state = State(owned=[Route("10.7.0.0/24", gateway="192.168.1.1", device="eth0"),
                         Route("fd01:7::/64", device="eth0")])
    (etc / "90-k3snet.yaml").write_text(render_netplan(state))
    for path in etc.iterdir():
        path.chmod(0o600)
    _netplan_generate(tmp_path)
    (profile,) = (tmp_path / "run" / "NetworkManager" / "system-connections").iterdir()
    routes = [line for line in profile.read_text().splitlines() if line.startswith("route")]
    assert routes == ["route1=10.7.0.0/24,192.168.1.1,0", "route1=fd01:7::/64,,1024"]


# ------------------------------------------------- a device no netplan file configures

NETWORK_MANAGER_ALL = {"network": {"version": 2, "renderer": "NetworkManager"}}


def test_a_device_no_file_configures_is_refused_when_the_files_are_all_the_nodes() -> None:
    with pytest.raises(ModelError, match=r"no netplan definition configures eth1 \(netplan "
                                         r"files: 01-netcfg\.yaml\).*no address and no DHCP"):
        netplan_placement({"01-netcfg.yaml": PLAIN}, ["eth1"], every_file=True)
    with pytest.raises(ModelError, match=r"netplan files: none"):
        netplan_placement({}, ["eth0"], every_file=True)
    assert netplan_placement({"01-netcfg.yaml": PLAIN}, ["eth0"], every_file=True) == (
        {"eth0": "ethernets"}, {"eth0": "eth0"})


@pytest.mark.parametrize("admin", [None, NETWORK_MANAGER_ALL],
                         ids=["no-netplan-file", "renderer-networkmanager"])
def test_render_netplan_beside_the_nodes_files_refuses_a_device_none_configures(
        admin: dict[str, Any] | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Ubuntu desktop's only netplan file sets NetworkManager as the renderer, and eth0 is
    # a NetworkManager profile's: written, k3snet's file gave eth0 a netplan definition
    # holding the routes alone, which netplan turned into a second NetworkManager profile,
    # link-local only and without the routes (the next test shows it). With no netplan
    # file at all, netplan's networkd took eth0 from ifupdown or NetworkManager.
    etc = tmp_path / "etc" / "netplan"
    etc.mkdir(parents=True)
    if admin is not None:
        (etc / "01-network-manager-all.yaml").write_text(yaml.safe_dump(admin))
    else:  # an empty /etc/netplan: the files read are the node's, whatever their number
        import k3snet.cli  # noqa: PLC0415 - the test points the CLI's /etc/netplan here

        monkeypatch.setattr(k3snet.cli, "_NETPLAN_DIRS", (etc,))
        monkeypatch.setattr(k3snet.cli, "_netplan_etc", lambda out: out == etc)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    assert main(["render", "netplan", "-f", str(spec), "-o", str(etc)]) == 1
    err = capsys.readouterr().err
    assert "no netplan definition configures eth0" in err, err
    assert not (etc / "90-k3snet.yaml").exists()


def test_render_netplan_into_a_directory_of_no_netplan_file_warns_of_a_device_none_configures(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    staging = tmp_path / "staging"
    staging.mkdir()
    assert main(["render", "netplan", "-f", str(spec), "-o", str(staging)]) == 0
    err = capsys.readouterr().err
    assert f"warning: no netplan file in {staging} configures eth0" in err, err
    assert (staging / "90-k3snet.yaml").exists()


@needs_netplan
def test_netplan_makes_a_link_local_profile_of_a_device_only_k3snets_file_names(
        tmp_path: Path) -> None:
    """What the refusal above prevents, as the real netplan makes it."""
    etc = tmp_path / "etc" / "netplan"
    etc.mkdir(parents=True)
    (etc / "01-network-manager-all.yaml").write_text(yaml.safe_dump(NETWORK_MANAGER_ALL))
    state = State(owned=[Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0")])
    (etc / "90-k3snet.yaml").write_text(render_netplan(state))
    for path in etc.iterdir():
        path.chmod(0o600)
    _netplan_generate(tmp_path)
    profile = (tmp_path / "run/NetworkManager/system-connections/netplan-eth0.nmconnection")
    text = profile.read_text()
    assert "interface-name=eth0" in text
    assert "method=link-local" in text
    assert "192.168.2.0" not in text


# ------------------------------------------- numbers netplan passes on to networkd

@needs_netplan
@pytest.mark.parametrize(("table", "metric"), [
    (2**31 - 1, 2**31 - 1), (2**31, 5), (2**32 - 1, 5), (100, 2**31), (100, 2**32 - 2),
    (100, 2**32 - 1)])
def test_a_route_table_and_metric_are_refused_or_reach_networkd_as_given(
        table: int, metric: int, tmp_path: Path) -> None:
    # netplan writes Table= with %d (and Metric= up to 0.106): Table=-1 for 4294967295,
    # which networkd ignores, putting the route in the main table; its "no metric" is
    # 4294967295, and the route came up at metric 0.
    state = State(owned=[Route("10.7.0.0/24", gateway="192.168.1.1", device="eth0",
                               table=table, metric=metric)])
    if max(table, metric) > 2**31 - 1:
        with pytest.raises(ModelError, match="signed numbers"):
            render_netplan(state)
        return
    etc = tmp_path / "etc" / "netplan"
    etc.mkdir(parents=True)
    (etc / "90-k3snet.yaml").write_text(render_netplan(state))
    (etc / "90-k3snet.yaml").chmod(0o600)
    _netplan_generate(tmp_path)
    route = _applied(tmp_path / "run", "eth0", "52:54:00:12:34:56")["Route"][0]
    assert (route.get("Table"), route.get("Metric")) == (str(table), str(metric))


_NETPLAN_ROUTES = strategies.states(
    st.one_of(strategies.routes(4, devices=("eth0",), tables=(254, 253, 100, 2**31 - 1),
                                metrics=(None, 0, 100, 2**31 - 1),
                                scopes=(None, "link", "host")),
              strategies.routes(6, devices=("eth0",), tables=(254, 100, 2**31 - 1),
                                metrics=(None, 1, 100, 2**31 - 1))),
    min_owned=1, max_owned=6, max_foreign=0)


def _route_sections(text: str) -> list[tuple[tuple[str, str], ...]]:
    """The [Route] sections of a .network file, each as its sorted keys and values:
    without Protocol= (netplan has none) nor an IPv6 route's Scope= (netplan writes
    Scope=link for one without gateway, given or not; networkd ignores it, warning: the
    kernel has no IPv6 route scope)."""
    found = []
    for route in _networkd_sections(text).get("Route", []):
        kept = {k: v for k, v in route.items() if k != "Protocol"}
        if ":" in kept["Destination"]:
            kept.pop("Scope", None)
        found.append(tuple(sorted(kept.items())))
    return sorted(found)


@needs_netplan
@settings(max_examples=40, deadline=None)
@given(state=_NETPLAN_ROUTES)
def test_netplan_writes_for_each_route_the_route_section_k3snets_networkd_file_holds(
        state: State) -> None:
    # What netplan makes of k3snet's file, in systemd-networkd's own terms: each route's
    # destination, gateway, table, metric and IPv4 scope as k3snet's networkd renderer
    # writes them (tables and metrics up to 2**31 - 1, the default route, host routes,
    # IPv6 link-local gateways, scope host and link).
    with tempfile.TemporaryDirectory(prefix="k3snet-netplan-") as root:
        etc = Path(root) / "etc" / "netplan"
        etc.mkdir(parents=True)
        (etc / "90-k3snet.yaml").write_text(render_netplan(state))
        (etc / "90-k3snet.yaml").chmod(0o600)
        _netplan_generate(Path(root))
        written = (Path(root) / "run" / "systemd" / "network" / "10-netplan-eth0.network")
        netplan = _route_sections(written.read_text())
    (own,) = render_networkd(state).values()
    assert netplan == _route_sections(own)


# ---------------------------------------- routes under the NetworkManager renderer

SPEC_DUAL = """\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
cluster:
  podCIDRs: [10.42.0.0/16, fd42::/56]
destinations:
  - cidr: 192.168.2.0/24
    gateway: 192.168.1.1
    device: eth0
  - cidr: fd01:2::/64
    gateway: fe80::1
    device: eth0
"""


@needs_netplan
@pytest.mark.parametrize(("renderer", "eth0"), [
    ("NetworkManager", {"dhcp4": True}), ("NetworkManager", {"dhcp4": True, "accept-ra": True}),
    ("NetworkManager", {"dhcp4": True, "dhcp6": True}), ("NetworkManager", {"dhcp6": True}),
    ("NetworkManager", {"dhcp6": True, "addresses": ["192.168.1.10/24"]}),
    ("NetworkManager", {"addresses": ["192.168.1.10/24", "fd00::10/64"]}),
    ("networkd", {"dhcp4": True}), ("NetworkManager", {"dhcp4": True, "renderer": "networkd"}),
    ("networkd", {"dhcp4": True, "renderer": "NetworkManager"}),
], ids=["nm-dhcp4", "nm-accept-ra", "nm-dhcp4-dhcp6", "nm-dhcp6", "nm-dhcp6-ipv4-address",
        "nm-address", "networkd-dhcp4",
        "its-own-networkd", "its-own-nm"])
def test_routes_of_each_family_are_refused_or_reach_what_netplan_renders(
        renderer: str, eth0: dict[str, Any], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Under renderer: NetworkManager, a device without dhcp6 or an IPv6 address gets a
    # profile with [ipv6] method=ignore (without IPv4: [ipv4] method=link-local), and
    # netplan left k3snet's routes of that family out of it, exit status 0: the node
    # came up without them.
    etc = tmp_path / "etc" / "netplan"
    etc.mkdir(parents=True)
    (etc / "01-admin.yaml").write_text(yaml.safe_dump(
        {"network": {"version": 2, "renderer": renderer, "ethernets": {"eth0": eth0}}}))
    (etc / "01-admin.yaml").chmod(0o600)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_DUAL)
    status = main(["render", "netplan", "-f", str(spec), "-o", str(etc)])
    if status != 0:
        error = capsys.readouterr().err
        assert eth0.get("renderer", renderer) == "NetworkManager"
        assert "method=ignore" in error or "method=link-local" in error
        assert not (eth0.get("dhcp4") and eth0.get("dhcp6"))
        return
    _netplan_generate(tmp_path)
    written = "".join(p.read_text() for p in (tmp_path / "run").rglob("*")
                      if p.is_file() and p.suffix in {".nmconnection", ".network"})
    assert "192.168.2.0/24" in written
    assert "fd01:2::/64" in written


_ETH0_DHCP4 = {"eth0": {"dhcp4": True}}


@needs_netplan
@pytest.mark.parametrize("files", [
    # The section's renderer of another file (its own eth1): eth0 is networkd's.
    [{"ethernets": {"renderer": "NetworkManager", "eth1": {"dhcp4": True}}},
     {"ethernets": _ETH0_DHCP4}],
    # A later file's section renderer over a definition an earlier file made.
    [{"ethernets": _ETH0_DHCP4},
     {"ethernets": {"renderer": "NetworkManager", "eth0": {"dhcp4": True}}}],
    # The section's renderer given after the definition.
    [{"ethernets": {"eth0": {"dhcp4": True}, "renderer": "NetworkManager"}}],
    # The section's renderer of the file that first defines it, the global one after.
    [{"ethernets": {"renderer": "NetworkManager", "eth0": {"dhcp4": True}}},
     {"renderer": "networkd"}],
    # The last file's global renderer.
    [{"renderer": "networkd", "ethernets": _ETH0_DHCP4}, {"renderer": "NetworkManager"}],
    [{"renderer": "NetworkManager", "ethernets": _ETH0_DHCP4}, {"renderer": "networkd"}],
    # Addresses of both families (a later file's appended); DHCP a later file turns off.
    [{"renderer": "NetworkManager", "ethernets": {"eth0": {"addresses": ["192.168.1.10/24"]}}},
     {"ethernets": {"eth0": {"addresses": ["fd00::10/64"]}}}],
    [{"renderer": "NetworkManager", "ethernets": {"eth0": {"dhcp4": True, "dhcp6": True}}},
     {"ethernets": {"eth0": {"dhcp6": False}}}],
    [{"renderer": "NetworkManager", "ethernets": {"eth0": {"dhcp4": True, "dhcp6": False}}},
     {"ethernets": {"eth0": {"dhcp6": True}}}],
], ids=["other-file-section", "later-section", "section-after", "first-section",
        "last-global-nm", "last-global-networkd", "addresses", "dhcp6-turned-off",
        "dhcp6-turned-on"])
def test_render_netplan_refuses_exactly_when_netplan_leaves_a_route_out(
        files: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Which renderer netplan gives eth0 decides: a section's renderer goes only to the
    # definitions it makes after it; the global one is the last file's.
    etc = tmp_path / "etc" / "netplan"
    etc.mkdir(parents=True)
    for n, network in enumerate(files):
        path = etc / f"0{n}-admin.yaml"
        path.write_text(yaml.safe_dump({"network": {"version": 2, **network}},
                                       sort_keys=False))
        path.chmod(0o600)
    # What netplan makes of k3snet's file, written without the refusal.
    state = State(owned=[Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0"),
                         Route("fd01:2::/64", gateway="fe80::1", device="eth0")])
    (etc / "90-k3snet.yaml").write_text(render_netplan(state))
    (etc / "90-k3snet.yaml").chmod(0o600)
    _netplan_generate(tmp_path)
    written = "".join(p.read_text() for p in (tmp_path / "run").rglob("*")
                      if p.is_file() and p.suffix in {".nmconnection", ".network"})
    (etc / "90-k3snet.yaml").unlink()
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_DUAL)
    status = main(["render", "netplan", "-f", str(spec), "-o", str(etc)])
    reached = "fd01:2::/64" in written and "192.168.2.0/24" in written
    assert (status == 0) == reached, capsys.readouterr().err


# ------------------------------------------------- netplan's booleans, as netplan reads them

# netplan reads every scalar as text and takes true, on, yes, y (false, off, no, n) in
# any case, quoted or not; PyYAML's safe_load reads y and "true" as strings, so the
# family check took dhcp6: "true" for no DHCP and refused routes netplan renders.
_SPELLINGS = ['"true"', "'on'", "y", "Y", "tRuE", '"yes"', "yes", "true",
              '"false"', "n", "'off'", "No"]


def test_dhcp_is_read_in_every_spelling_netplan_reads() -> None:
    def nm(dhcp6: str) -> dict[str, Any]:
        return {"network": {"version": 2, "renderer": "NetworkManager", "ethernets": {
            "eth0": {"dhcp4": "y", "dhcp6": dhcp6}}}}

    assert netplan_placement({"01.yaml": nm("On")}, ["eth0"],
                             route_families={"eth0": [4, 6]}) == (
        {"eth0": "ethernets"}, {"eth0": "eth0"})
    with pytest.raises(ModelError, match="without dhcp6"):
        netplan_placement({"01.yaml": nm("n")}, ["eth0"], route_families={"eth0": [4, 6]})


@needs_netplan
@pytest.mark.parametrize("spelling", _SPELLINGS)
def test_render_netplan_refuses_exactly_when_netplan_reads_dhcp6_off(
        spelling: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    etc = tmp_path / "etc" / "netplan"
    etc.mkdir(parents=True)
    admin = etc / "01-admin.yaml"
    admin.write_text("network:\n  version: 2\n  renderer: NetworkManager\n  ethernets:\n"
                     f"    eth0:\n      dhcp4: true\n      dhcp6: {spelling}\n")
    admin.chmod(0o600)
    state = State(owned=[Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0"),
                         Route("fd01:2::/64", gateway="fe80::1", device="eth0")])
    (etc / "90-k3snet.yaml").write_text(render_netplan(state))
    (etc / "90-k3snet.yaml").chmod(0o600)
    _netplan_generate(tmp_path)
    (profile,) = (tmp_path / "run" / "NetworkManager" / "system-connections").iterdir()
    reached = "fd01:2::/64" in profile.read_text()
    (etc / "90-k3snet.yaml").unlink()
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_DUAL)
    status = main(["render", "netplan", "-f", str(spec), "-o", str(etc)])
    assert (status == 0) == reached, capsys.readouterr().err
    assert reached == (spelling.strip("'\"").lower() in {"true", "on", "yes", "y"})


@needs_netplan
def test_ids_netplan_reads_as_text_are_read_as_text(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # safe_load read the id `on` as True and `1e3` as 1000.0: the render was refused
    # ("netplan id ... must be a definition's name"), a file netplan reads whole.
    etc = tmp_path / "etc" / "netplan"
    etc.mkdir(parents=True)
    admin = etc / "01-admin.yaml"
    admin.write_text("network:\n  version: 2\n  ethernets:\n    eth0: {dhcp4: true}\n"
                     "    on:\n      match: {macaddress: '52:54:00:00:00:09'}\n"
                     "      set-name: eth9\n      dhcp4: yes\n"
                     "    1e3:\n      match: {macaddress: '52:54:00:00:00:08'}\n"
                     "      set-name: eth8\n")
    admin.chmod(0o600)
    _netplan_generate(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.replace("device: eth0", "device: eth9"))
    assert main(["render", "netplan", "-f", str(spec), "-o", str(etc)]) == 0, \
        capsys.readouterr().err
    _netplan_generate(tmp_path)
    assert yaml.safe_load((etc / "90-k3snet.yaml").read_text())["network"]["ethernets"] == {
        "on": {"routes": [{"to": "192.168.2.0/24", "via": "192.168.1.1", "metric": 0}]}}
    applied = (tmp_path / "run/systemd/network/10-netplan-on.network").read_text()
    assert "Destination=192.168.2.0/24" in applied


# --------------------------------------------- scope host under the NetworkManager renderer

def test_a_route_of_scope_host_through_a_networkmanager_device_is_refused() -> None:
    nm = {"network": {"version": 2, "renderer": "NetworkManager",
                      "ethernets": {"eth0": {"dhcp4": True}}}}
    with pytest.raises(ModelError, match=r"leaves scope: host out.*scope link"):
        netplan_placement({"01.yaml": nm}, ["eth0"], host_scoped=["eth0"])
    assert netplan_placement({"01.yaml": nm}, ["eth0"], host_scoped=[]) == (
        {"eth0": "ethernets"}, {"eth0": "eth0"})
    assert netplan_placement({"01.yaml": PLAIN}, ["eth0"], host_scoped=["eth0"]) == (
        {"eth0": "ethernets"}, {"eth0": "eth0"})


@needs_netplan
@pytest.mark.parametrize("renderer", ["NetworkManager", "networkd"])
def test_render_netplan_refuses_scope_host_exactly_where_netplan_drops_it(
        renderer: str, tmp_path: Path) -> None:
    etc = tmp_path / "etc" / "netplan"
    etc.mkdir(parents=True)
    admin = {"network": {"version": 2, "renderer": renderer,
                         "ethernets": {"eth0": {"dhcp4": True}}}}
    (etc / "01-admin.yaml").write_text(yaml.safe_dump(admin))
    state = State(owned=[Route("10.9.0.0/24", device="eth0", scope="host")])
    (etc / "90-k3snet.yaml").write_text(render_netplan(state))
    for path in etc.iterdir():
        path.chmod(0o600)
    _netplan_generate(tmp_path)
    written = "".join(p.read_text() for p in (tmp_path / "run").rglob("*")
                      if p.is_file() and p.suffix in {".nmconnection", ".network"})
    assert "10.9.0.0/24" in written
    kept = "Scope=host" in written
    try:
        netplan_placement({"01-admin.yaml": admin}, ["eth0"], host_scoped=["eth0"])
    except ModelError:
        assert not kept, written
    else:
        assert kept, written


# ------------------------------------------------------------ ids netplan takes, or refuses

@pytest.mark.parametrize("netplan_id", ["wé", "w\U0001f600", "a b", "a*b", "a[0]", "a?b",
                                        "a\tb"])
def test_an_id_netplan_refuses_is_refused(netplan_id: str) -> None:
    # Written, netplan generate failed for the whole node ("Invalid name", "must not use
    # globbing", or libyaml's "invalid Unicode character escape code" for the surrogate
    # pair json.dumps wrote): every definition of every file lost at boot.
    state = State(owned=[Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0")])
    with pytest.raises(ModelError, match="as netplan takes one"):
        render_netplan(state, ids={"eth0": netplan_id})


@needs_netplan
@pytest.mark.parametrize("netplan_id", ["wé", "w\U0001f600", "a b", "a*b", "a[0]",
                                        'a"b', "a'b", "a$b", "a:b", "a#b", "!x", "a\\b",
                                        "a{b}", "-x", "on", "1e3", "~"])
def test_an_id_is_refused_exactly_when_netplan_refuses_the_file(
        netplan_id: str, tmp_path: Path) -> None:
    state = State(owned=[Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0")])
    try:
        text = render_netplan(state, ids={"eth0": netplan_id})
    except ModelError:
        text = "network:\n  version: 2\n  ethernets:\n    " + json.dumps(
            netplan_id) + ":\n      routes: [{to: 192.168.2.0/24, via: 192.168.1.1}]\n"
        refused = True
    else:
        refused = False
    etc = tmp_path / "etc" / "netplan"
    etc.mkdir(parents=True)
    (etc / "90-k3snet.yaml").write_text(text)
    (etc / "90-k3snet.yaml").chmod(0o600)
    done = _netplan_generate_run(tmp_path)
    assert (done.returncode != 0) == refused, done.stderr
    if not refused:
        written = "".join(p.read_text() for p in (tmp_path / "run").rglob("*.network"))
        assert "Destination=192.168.2.0/24" in written


# ------------------------------------------- what netplan reads of a file, and which files

_ETH0_TWICE = ("network:\n  version: 2\n  ethernets:\n    eth0:\n      renderer: NetworkManager\n"
               "      dhcp4: true\n    eth0:\n      mtu: 1400\n")


@needs_netplan
def test_a_key_given_twice_in_a_netplan_file_is_refused_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # netplan reads both definitions of eth0, one after the other: NetworkManager's,
    # without dhcp6, and it left k3snet's IPv6 route out (method=ignore), exit status 0.
    # PyYAML kept the last alone (mtu): k3snet took eth0 for networkd's and wrote it.
    etc = tmp_path / "etc" / "netplan"
    etc.mkdir(parents=True)
    (etc / "01-admin.yaml").write_text(_ETH0_TWICE)
    state = State(owned=[Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0"),
                         Route("fd01:2::/64", gateway="fe80::1", device="eth0")])
    (etc / "90-k3snet.yaml").write_text(render_netplan(state))
    for path in etc.iterdir():
        path.chmod(0o600)
    _netplan_generate(tmp_path)
    (profile,) = (tmp_path / "run" / "NetworkManager" / "system-connections").iterdir()
    assert "mtu=1400" in profile.read_text()
    assert "fd01:2::/64" not in profile.read_text()
    (etc / "90-k3snet.yaml").unlink()
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_DUAL)
    assert main(["render", "netplan", "-f", str(spec), "-o", str(etc)]) == 1
    assert "gives 'eth0' twice in one mapping (line 7, column 5)" in capsys.readouterr().err


@pytest.mark.parametrize("text", [
    "network:\n  ethernets:\n    eth0: {dhcp4: true}\nnetwork:\n  renderer: NetworkManager\n",
    "network:\n  version: 2\n  ethernets:\n    eth0: &a {dhcp4: true}\n    'eth0': *a\n",
    "network:\n  ethernets:\n    nic0: {match: {name: 'x'}, match: {name: e*}}\n",
    "network:\n  ethernets:\n    eth0: {addresses: ['fd00::1/64'], addresses: []}\n",
    "network:\n  ethernets:\n    renderer: networkd\n    renderer: networkd\n",
    "network:\n  bridges: {}\n  bridges: {}\n",
], ids=["network", "quoted-id", "match", "addresses", "section-renderer", "section"])
def test_every_key_k3snet_reads_and_netplan_merges_given_twice_is_refused(
        text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    staging = tmp_path / "netplan"
    staging.mkdir()
    (staging / "01-admin.yaml").write_text(text)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    assert main(["render", "netplan", "-f", str(spec), "-o", str(staging)]) == 1
    assert "01-admin.yaml gives" in capsys.readouterr().err


_KEYS_UNREAD_TWICE = (
    "network:\n  version: 2\n  version: 2\n  ethernets:\n    eth0:\n      dhcp4: true\n"
    "      nameservers: {addresses: [192.0.2.53]}\n      nameservers: {search: [example.org]}\n"
    "      mtu: 1500\n      mtu: 1400\n")


@needs_netplan
def test_a_key_k3snet_does_not_read_given_twice_is_read_as_netplan_reads_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # netplan reads both nameservers: (both the address and the search domain reach
    # networkd), both version:, both mtu:, exit status 0; k3snet reads none of
    # them, and refusing the file refused the render for keys that change nothing of it.
    etc = tmp_path / "etc" / "netplan"
    etc.mkdir(parents=True)
    (etc / "01-admin.yaml").write_text(_KEYS_UNREAD_TWICE)
    (etc / "01-admin.yaml").chmod(0o600)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    assert main(["render", "netplan", "-f", str(spec), "-o", str(etc)]) == 0, \
        capsys.readouterr().err
    _netplan_generate(tmp_path)
    applied = _applied(tmp_path / "run", "eth0", "52:54:00:12:34:56")
    assert (applied["Network"][0]["DNS"], applied["Network"][0]["Domains"]) == (
        "192.0.2.53", "example.org")
    assert applied["Route"][0]["Destination"] == "192.168.2.0/24"


@needs_netplan
@pytest.mark.parametrize("text", [
    "network:\n  renderer: NetworkManager\n  ethernets:\n    eth0: {dhcp4: true}\n"
    "  renderer: networkd\n",
    "network:\n  renderer: networkd\n  renderer: NetworkManager\n  ethernets:\n"
    "    eth0: {dhcp4: true, dhcp6: true, dhcp6: false}\n",
    "network:\n  renderer: NetworkManager\n  ethernets:\n"
    "    eth0: {dhcp4: true, dhcp6: false, dhcp6: true}\n",
    "network:\n  ethernets:\n    eth0: {dhcp4: true, renderer: networkd, "
    "renderer: NetworkManager}\n",
    "network:\n  renderer: NetworkManager\n  ethernets:\n    nic0: {dhcp4: true, dhcp6: y, "
    "match: {name: eth1, name: eth0}, set-name: eth1, set-name: eth0}\n",
], ids=["global-renderer", "renderer-and-dhcp6", "dhcp6", "renderer", "set-name"])
def test_a_text_key_k3snet_reads_given_twice_is_read_as_its_last_as_netplan_reads_it(
        text: str, request: pytest.FixtureRequest, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # netplan keeps the last of a renderer, dhcp4, dhcp6, set-name or match name given
    # twice (a global renderer too, after the definitions), as PyYAML does: the render
    # refused the file for nothing. k3snet refuses exactly when netplan leaves the IPv6
    # route out.
    etc = tmp_path / "etc" / "netplan"
    etc.mkdir(parents=True)
    (etc / "01-admin.yaml").write_text(text)
    state = State(owned=[Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0"),
                         Route("fd01:2::/64", gateway="fe80::1", device="eth0")])
    (etc / "90-k3snet.yaml").write_text(render_netplan(
        state, sections={"eth0": "ethernets"},
        ids={"eth0": "nic0" if "nic0" in text else "eth0"}))
    for path in etc.iterdir():
        path.chmod(0o600)
    _netplan_generate(tmp_path)
    written = "".join(p.read_text() for p in (tmp_path / "run").rglob("*")
                      if p.is_file() and p.suffix in {".nmconnection", ".network"})
    assert "192.168.2.0/24" in written
    (etc / "90-k3snet.yaml").unlink()
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_DUAL)
    status = main(["render", "netplan", "-f", str(spec), "-o", str(etc)])
    err = capsys.readouterr().err
    assert "twice" not in err
    assert (status == 0) == ("fd01:2::/64" in written), err
    # the last value decides, both ways: a first one read alone would decide the other
    assert (status == 0) == (request.node.callspec.id in {"global-renderer", "dhcp6",
                                                          "set-name"})


def test_the_keys_merged_twice_cover_every_section_k3snet_reads() -> None:
    import k3snet.cli  # noqa: PLC0415
    from k3snet.render.routes import NETPLAN_SECTIONS  # noqa: PLC0415

    assert k3snet.cli._NETPLAN_READ[1] == frozenset(NETPLAN_SECTIONS)


@needs_netplan
def test_a_hidden_file_netplan_does_not_read_is_not_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # netplan reads /etc/netplan/*.yaml through glob(3), which leaves out a name that
    # starts with a dot (an editor's or a tool's copy); pathlib's glob took it, and a
    # file netplan never reads refused the render, or gave eth0 its definition.
    etc = tmp_path / "etc" / "netplan"
    etc.mkdir(parents=True)
    (etc / "01-admin.yaml").write_text(yaml.safe_dump(PLAIN))
    (etc / ".01-admin.yaml").write_text("network: [\n")
    (etc / ".02-old.yaml").write_text(yaml.safe_dump(CLOUD_INIT))
    for path in etc.iterdir():
        path.chmod(0o600)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    assert main(["render", "netplan", "-f", str(spec), "-o", str(etc)]) == 0, \
        capsys.readouterr().err
    _netplan_generate(tmp_path)
    applied = _applied(tmp_path / "run", "eth0", "52:54:00:12:34:56")
    assert applied["Network"][0]["DHCP"] == "ipv4"
    assert applied["Route"][0]["Destination"] == "192.168.2.0/24"


@needs_netplan
@pytest.mark.parametrize("renderer", ["NetworkManager", "networkd"])
@pytest.mark.parametrize("netplan_id", [
    "n" * 227, "n" * 228, "n" * 229, "n" * 230, "n" * 226 + ":", "n" * 227 + ":",
    "n" * 228 + "~"], ids=["227", "228", "229", "230", "226-and-colon", "227-and-colon",
                           "228-and-tilde"])
def test_an_id_is_refused_exactly_when_its_renderer_cannot_name_its_file(
        renderer: str, netplan_id: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # netplan names a definition's files after its id (netplan-ID.nmconnection,
    # 10-netplan-ID.network, each written through a temporary copy): past a file name's
    # 255 bytes netplan generate fails ("File name too long") for the whole node. An id
    # of 228 or 229 characters, which networkd's file name has room for, was refused
    # under networkd too (any id past 227 in any file refused the render). A character
    # netplan 1.0.1 and later escape (":" as %3A) counts 3 under either renderer: under
    # NetworkManager it counted 1, and 226 characters and a colon were taken.
    etc = tmp_path / "etc" / "netplan"
    etc.mkdir(parents=True)
    (etc / "01-admin.yaml").write_text(
        f"network:\n  version: 2\n  renderer: {renderer}\n  ethernets:\n"
        f"    {netplan_id}:\n      match: {{macaddress: '52:54:00:12:34:56'}}\n"
        "      set-name: eth0\n      dhcp4: true\n      dhcp6: true\n")
    (etc / "01-admin.yaml").chmod(0o600)
    done = _netplan_generate_run(tmp_path)
    escaped = len(netplan_id) + 2 * netplan_id.count(":")
    room = 227 if renderer == "NetworkManager" else 229
    # netplan up to 1.0 names the files after the id as given, 1.0.1 and later escaped:
    # an id that only the former have room for (226 and a colon under NetworkManager,
    # 227 and a colon under networkd) is refused.
    netplan_length = escaped if _netplan_escapes_ids() else len(netplan_id)
    assert (done.returncode != 0) == (netplan_length > room), done.stderr
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    status = main(["render", "netplan", "-f", str(spec), "-o", str(etc)])
    err = capsys.readouterr().err
    refused = escaped > room
    assert (status == 1) == refused, err
    if refused:
        assert f"too long for the file netplan's {renderer} renderer names" in err
        return
    assert f"    {json.dumps(netplan_id)}:" in (etc / "90-k3snet.yaml").read_text()
    _netplan_generate(tmp_path)
    written = "".join(p.read_text() for p in (tmp_path / "run").rglob("*.n*"))
    assert "192.168.2.0/24" in written


_WIFI = "      access-points:\n        {ssid}: {{password: secret123}}\n"
_AUTH = "      auth: {key-management: eap, method: peap, identity: a, password: b}\n"


@needs_netplan
@pytest.mark.parametrize(("where", "extra", "length"), [
    ("networkd wifis", _WIFI.format(ssid="home"), 228),
    ("networkd wifis", _WIFI.format(ssid="home"), 229),
    ("networkd ethernets", _AUTH, 228), ("networkd ethernets", _AUTH, 229),
    ("NetworkManager wifis", _WIFI.format(ssid="home"), 222),
    ("NetworkManager wifis", _WIFI.format(ssid="home"), 223),
    ("NetworkManager wifis", _WIFI.format(ssid="'a b'"), 221),
    ("NetworkManager wifis", _WIFI.format(ssid="'a b'"), 222),
], ids=["networkd-wifi-228", "networkd-wifi-229", "networkd-auth-228", "networkd-auth-229",
        "nm-wifi-222", "nm-wifi-223", "nm-wifi-escaped-221", "nm-wifi-escaped-222"])
def test_an_id_is_refused_exactly_when_netplan_cannot_name_its_wifi_files(
        where: str, extra: str, length: int, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # A wifi or a definition with auth: gets more files than 10-netplan-ID.network:
    # networkd's netplan-wpa-ID.service (room for 228 characters), NetworkManager's
    # netplan-ID-SSID.nmconnection (the SSID's share taken from the id's). Another
    # definition beside eth0's: netplan generate fails for the whole node, eth0's too.
    renderer, section = where.split()
    netplan_id = "w" * length
    etc = tmp_path / "etc" / "netplan"
    etc.mkdir(parents=True)
    header = "" if section == "ethernets" else f"  {section}:\n"
    (etc / "01-admin.yaml").write_text(
        f"network:\n  version: 2\n  renderer: {renderer}\n  ethernets:\n"
        f"    eth0: {{dhcp4: true}}\n{header}    {netplan_id}:\n      dhcp4: true\n"
        + extra)
    (etc / "01-admin.yaml").chmod(0o600)
    done = _netplan_generate_run(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    status = main(["render", "netplan", "-f", str(spec), "-o", str(etc)])
    err = capsys.readouterr().err
    assert (status == 1) == (done.returncode != 0), (err, done.stderr)
    if status == 1:
        assert "File name too long" in err


_OVS = ("    {netplan_id}:\n      match: {{macaddress: '52:54:00:12:34:57'}}\n"
        "      openvswitch: {{external-ids: {{owner: admin}}}}\n"
        "  bridges:\n    br0:\n      interfaces: [{netplan_id}]\n")


@needs_netplan
@pytest.mark.parametrize("renderer", ["networkd", "NetworkManager"])
@pytest.mark.parametrize("length", [227, 228, 229])
def test_an_id_is_refused_exactly_when_netplan_cannot_name_its_open_vswitch_unit(
        renderer: str, length: int, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # A definition with openvswitch: (external-ids of a bridge's member: no ovs-vsctl
    # needed) gets netplan-ovs-ID.service under either renderer (src/openvswitch.c):
    # room for 228 characters, fewer than networkd's 229. A 229-character id was taken,
    # and netplan generate failed for the whole node ("File name too long").
    # (NetworkManager's netplan-ID.nmconnection has less room still: 227.)
    room = 228 if renderer == "networkd" else 227
    netplan_id = "o" * length
    etc = tmp_path / "etc" / "netplan"
    etc.mkdir(parents=True)
    (etc / "01-admin.yaml").write_text(
        f"network:\n  version: 2\n  renderer: {renderer}\n  ethernets:\n"
        "    eth0: {dhcp4: true}\n" + _OVS.format(netplan_id=netplan_id))
    (etc / "01-admin.yaml").chmod(0o600)
    done = _netplan_generate_run(tmp_path)
    assert (done.returncode != 0) == (length > room), done.stderr
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    status = main(["render", "netplan", "-f", str(spec), "-o", str(etc)])
    err = capsys.readouterr().err
    assert (status == 1) == (length > room), err
    if status == 1 and renderer == "networkd":
        assert "fits netplan's netplan-ovs-ID.service" in err


@pytest.mark.parametrize(("openvswitch", "netplan_id", "refused"), [
    ({"external-ids": {"owner": "admin"}}, "o" * 228, False),
    ({"external-ids": {"owner": "admin"}}, "o" * 229, True),
    ({}, "o" * 229, True), ({"other-config": {"a": "b"}}, "o" * 225 + ":", False),
    ({"other-config": {"a": "b"}}, "o" * 226 + ":", True),
    ({"external-ids": {}}, "o" * 227, False),
], ids=["external-ids-228", "external-ids-229", "empty-229", "colon-225", "colon-226",
        "nothing-set-227"])
def test_an_open_vswitch_definitions_id_has_room_for_its_unit(
        openvswitch: dict[str, Any], netplan_id: str, refused: bool) -> None:
    # netplan-ovs-ID.service: 20 bytes and the id (":" as %3A from netplan 1.0.1 on),
    # 255 with the temporary copy's .XXXXXX: under networkd, whose 10-netplan-ID.network
    # has room for 229 characters, the unit decides. An openvswitch: setting nothing
    # (empty external-ids) gets no unit.
    documents = {"01-admin.yaml": {"network": {
        "version": "2", "renderer": "networkd",
        "ethernets": {"eth0": {"dhcp4": "true"},
                      netplan_id: {"match": {"macaddress": "52:54:00:12:34:57"},
                                   "openvswitch": openvswitch}},
        "bridges": {"br0": {"interfaces": [netplan_id]}}}}}
    if refused:
        with pytest.raises(ModelError, match=r"fits netplan's netplan-ovs-ID\.service"):
            netplan_placement(documents, ["eth0"])
    else:
        assert netplan_placement(documents, ["eth0"]) == ({"eth0": "ethernets"}, {"eth0": "eth0"})


@pytest.mark.parametrize(("netplan_id", "refused"), [
    ("w" * 222, False), ("w" * 223, True), ("w" * 219 + ":", False),
    ("w" * 220 + ":", True)])
def test_a_wifis_id_counts_as_netplan_escapes_it_under_networkmanager(
        netplan_id: str, refused: bool) -> None:
    # netplan 1.0.1 and later write netplan-ID-SSID.nmconnection with the id escaped as
    # the SSID is (":" as %3A, src/nm.c): 220 characters and a colon with SSID "home"
    # make 256 bytes with the temporary copy's .XXXXXX, and were taken (the id counted
    # as given, as netplan up to 1.0 writes it).
    documents = {"01-admin.yaml": {"network": {
        "version": "2", "renderer": "NetworkManager",
        "ethernets": {"eth0": {"dhcp4": "true"}},
        "wifis": {netplan_id: {"dhcp4": "true",
                               "access-points": {"home": {"password": "secret123"}}}}}}}
    if refused:
        with pytest.raises(ModelError, match="too long for the file netplan's "
                                             "NetworkManager renderer names"):
            netplan_placement(documents, ["eth0"])
    else:
        assert netplan_placement(documents, ["eth0"]) == ({"eth0": "ethernets"}, {"eth0": "eth0"})


@pytest.mark.parametrize(("netplan_id", "refused"), [
    ("e" * 227, False), ("e" * 228, True), ("e" * 224 + ":", False),
    ("e" * 225 + ":", True), ("e" * 226 + ":", True)])
def test_an_ids_escaped_length_is_counted_under_networkmanager_without_netplan(
        netplan_id: str, refused: bool) -> None:
    # The real-netplan test of this count is skipped where netplan is not installed, and
    # follows the installed netplan: with netplan up to 1.0 (Debian 12's 0.106) it took a
    # count of the id as given; netplan 1.0.1 and later write netplan-ID.nmconnection
    # with ":" as %3A, so 225 characters and a colon make 256 bytes with .XXXXXX.
    documents = {"01-admin.yaml": {"network": {
        "version": "2", "renderer": "NetworkManager",
        "ethernets": {netplan_id: {"match": {"macaddress": "00:11:22:33:44:55"},
                                   "set-name": "eth0", "dhcp4": "true"}}}}}
    if refused:
        with pytest.raises(ModelError, match="too long for the file netplan's "
                                             "NetworkManager renderer names"):
            netplan_placement(documents, ["eth0"])
    else:
        assert netplan_placement(documents, ["eth0"]) == (
            {"eth0": "ethernets"}, {"eth0": netplan_id})


@pytest.mark.parametrize(("netplan_id", "refused"), [
    ("n" * 229, False), ("n" * 230, True), ("n" * 226 + ":", False),
    ("n" * 227 + ":", True)])
def test_render_netplan_alone_refuses_an_id_no_renderer_has_room_for(
        netplan_id: str, refused: bool) -> None:
    # Without the other files (the renderer unknown) the id is checked against the room
    # of either renderer: netplan_placement checks it against its own.
    state = State(owned=[Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0")])
    if refused:
        with pytest.raises(ModelError, match="too long for the file netplan names"):
            render_netplan(state, ids={"eth0": netplan_id})
    else:
        assert json.dumps(netplan_id) in render_netplan(state, ids={"eth0": netplan_id})


@needs_netplan
@pytest.mark.parametrize("renderer", ["networkd", "NetworkManager"])
def test_routes_are_refused_under_an_id_netplan_names_a_file_in_a_subdirectory_after(
        renderer: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # netplan up to 1.0 writes the definition "nic/0" to 10-netplan-nic/0.network (under
    # NetworkManager netplan-nic/0.nmconnection): a file in a subdirectory, which networkd
    # (NetworkManager) never reads, and exit status 0. k3snet wrote eth0's routes there.
    # 1.0.1 and later escape the '/' (10-netplan-nic%2F0.network); the node's netplan is
    # not known where the file is rendered, so the id is refused for either.
    etc = tmp_path / "etc" / "netplan"
    etc.mkdir(parents=True)
    (etc / "01-admin.yaml").write_text(
        f"network:\n  version: 2\n  renderer: {renderer}\n  ethernets:\n    nic/0:\n"
        "      match: {macaddress: '52:54:00:12:34:56'}\n      set-name: eth0\n"
        "      dhcp4: true\n")
    (etc / "01-admin.yaml").chmod(0o600)
    state = State(owned=[Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0")])
    (etc / "90-k3snet.yaml").write_text(
        "network:\n  version: 2\n  ethernets:\n    nic/0:\n      routes:\n"
        "        - {to: 192.168.2.0/24, via: 192.168.1.1}\n")
    (etc / "90-k3snet.yaml").chmod(0o600)
    _netplan_generate(tmp_path)
    read = [p for place in ("systemd/network", "NetworkManager/system-connections")
            if (tmp_path / "run" / place).is_dir()
            for p in (tmp_path / "run" / place).iterdir() if p.is_file()]
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file()
               and "192.168.2.0/24" in p.read_text()]
    assert written
    if _netplan_escapes_ids():
        assert all(p in read and "nic%2F0" in p.name for p in written)
    else:
        assert not any("192.168.2.0/24" in p.read_text() for p in read)
        assert all(p.parent.name.endswith("netplan-nic") for p in written)
    (etc / "90-k3snet.yaml").unlink()
    with pytest.raises(ModelError, match="holds a '/'"):
        render_netplan(state, ids={"eth0": "nic/0"})
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    assert main(["render", "netplan", "-f", str(spec), "-o", str(etc)]) == 1
    assert "holds a '/'" in capsys.readouterr().err
    assert not (etc / "90-k3snet.yaml").exists()


@needs_netplan
@pytest.mark.parametrize("text", [
    "network:\n  version: 2\n  ethernets:\n    eth0:\n",
    "network:\n  version: 2\n  ethernets:\n    eth0: ~\n",
    "network:\n  version: 2\n  bridges:\n    eth0: [a]\n",
    "network:\n  version: 2\n  ethernets:\n",
    "network:\n  version: 2\n  vlans: ~\n",
    "network: [a]\n",
], ids=["definition-empty", "definition-null", "definition-list", "section-empty",
        "section-null", "network-list"])
def test_a_definition_or_section_that_is_no_mapping_is_refused_as_netplan_refuses_it(
        text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # `eth0:` alone was read as an empty definition: k3snet wrote its routes, exit 0,
    # beside a file that failed netplan generate for the whole node.
    etc = tmp_path / "etc" / "netplan"
    etc.mkdir(parents=True)
    (etc / "01-admin.yaml").write_text(text)
    (etc / "01-admin.yaml").chmod(0o600)
    done = _netplan_generate_run(tmp_path)
    assert "expected mapping" in done.stderr
    line, column = done.stderr.split("01-admin.yaml:", 1)[1].split(":")[:2]
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    assert main(["render", "netplan", "-f", str(spec), "-o", str(etc)]) == 1
    err = capsys.readouterr().err
    assert '"expected mapping"' in err
    # named where netplan names it (it named the file's base name alone, no line)
    assert f"{etc / '01-admin.yaml'}: " in err
    assert f"(line {line}, column {column})" in err


def test_a_sections_renderer_is_no_definition() -> None:
    nm = {"network": {"version": 2, "ethernets": {"renderer": "NetworkManager",
                                                  "eth0": {"dhcp4": "true"}}}}
    assert netplan_placement({"01.yaml": nm}, ["renderer"]) == ({}, {})
    with pytest.raises(ModelError, match="'renderer' for eth0: no netplan file defines it"):
        netplan_placement({"01.yaml": nm}, ["eth0"], ids={"eth0": "renderer"})


@needs_netplan
@pytest.mark.parametrize("files", [
    {"lib/99-a.yaml": "NetworkManager"},
    {"lib/99-a.yaml": "NetworkManager", "run/99-a.yaml": "networkd"},
    {"lib/99-a.yaml": "NetworkManager", "etc/99-a.yaml": "networkd"},
    {"etc/99-a.yaml": "NetworkManager", "lib/99-a.yaml": "networkd"},
    {"run/99-a.yaml": "NetworkManager", "etc/99-a.yaml": "networkd"},
    {"lib/98-a.yaml": "networkd", "run/97-a.yaml": "NetworkManager"},
], ids=["lib", "run-over-lib", "etc-over-lib", "etc-over-lib-nm", "run-over-etc",
        "lexical-across-directories"])
def test_the_files_of_lib_etc_and_run_netplan_are_read_as_netplan_reads_them(
        files: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # A file of /run/netplan replaces one of the same name in /etc/netplan, which
    # replaces one in /lib/netplan; the others are read together in lexical order, the
    # last one's global renderer eth0's. Under NetworkManager, without dhcp6, netplan
    # leaves the IPv6 route out: k3snet refuses exactly then.
    dirs = _node_dirs(tmp_path, monkeypatch)
    (dirs["etc"] / "50-b.yaml").write_text(
        "network:\n  version: 2\n  ethernets:\n    eth0: {dhcp4: true}\n")
    for where, renderer in files.items():
        place, _, name = where.partition("/")
        (dirs[place] / name).write_text(
            f"network:\n  version: 2\n  renderer: {renderer}\n")
    state = State(owned=[Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0"),
                         Route("fd01:2::/64", gateway="fe80::1", device="eth0")])
    (dirs["etc"] / "90-k3snet.yaml").write_text(render_netplan(state))
    for path in tmp_path.rglob("*.yaml"):
        path.chmod(0o600)
    _netplan_generate(tmp_path)
    written = "".join(p.read_text() for p in (tmp_path / "run").rglob("*")
                      if p.is_file() and p.suffix in {".nmconnection", ".network"})
    reached = "fd01:2::/64" in written
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_DUAL)
    status = main(["render", "netplan", "-f", str(spec), "-o", str(dirs["etc"])])
    assert (status == 0) == reached, capsys.readouterr().err


@needs_netplan
def test_a_netplan_file_of_several_documents_is_read_as_its_first(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # netplan reads a file's first document alone (its renderer: NetworkManager after a
    # `---` is not seen, nor text that is no YAML): the render was refused ("expected a
    # single document in the stream"), for a file netplan reads.
    etc = tmp_path / "etc" / "netplan"
    etc.mkdir(parents=True)
    (etc / "01-admin.yaml").write_text(
        "network:\n  version: 2\n  ethernets:\n    eth0: {dhcp4: true}\n---\nnetwork:\n"
        "  version: 2\n  renderer: NetworkManager\n---\nnetwork: [\n")
    state = State(owned=[Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0"),
                         Route("fd01:2::/64", gateway="fe80::1", device="eth0")])
    (etc / "90-k3snet.yaml").write_text(render_netplan(state))
    for path in etc.iterdir():
        path.chmod(0o600)
    _netplan_generate(tmp_path)
    assert _applied(tmp_path / "run", "eth0", "52:54:00:12:34:56")["Route"][1][
        "Destination"] == "fd01:2::/64"
    (etc / "90-k3snet.yaml").unlink()
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_DUAL)
    assert main(["render", "netplan", "-f", str(spec), "-o", str(etc)]) == 0, \
        capsys.readouterr().err


def _node_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """netplan's /lib, /etc and /run directories, moved under ``tmp_path`` for the CLI."""
    import k3snet.cli  # noqa: PLC0415

    dirs = {name: tmp_path / name / "netplan" for name in ("lib", "etc", "run")}
    for directory in dirs.values():
        directory.mkdir(parents=True)
    monkeypatch.setattr(k3snet.cli, "_NETPLAN_DIRS", tuple(
        tmp_path / directory.relative_to("/") for directory in k3snet.cli._NETPLAN_DIRS))
    return dirs


@needs_netplan
@pytest.mark.parametrize("out", ["run", "lib"])
def test_render_netplan_into_run_or_lib_netplan_reads_the_files_of_all_three(
        out: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # -o /run/netplan read /run/netplan's files alone: eth0 was taken for networkd's, and
    # netplan, which reads /etc's 01-network-manager-all.yaml with them, left k3snet's
    # IPv6 route out of eth0's NetworkManager profile (exit status 0).
    dirs = _node_dirs(tmp_path, monkeypatch)
    (dirs["etc"] / "01-network-manager-all.yaml").write_text(
        "network:\n  version: 2\n  renderer: NetworkManager\n")
    (dirs[out] / "50-b.yaml").write_text(
        "network:\n  version: 2\n  ethernets:\n    eth0: {dhcp4: true}\n")
    state = State(owned=[Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0"),
                         Route("fd01:2::/64", gateway="fe80::1", device="eth0")])
    (dirs[out] / "90-k3snet.yaml").write_text(render_netplan(state))
    for path in tmp_path.rglob("*.yaml"):
        path.chmod(0o600)
    _netplan_generate(tmp_path)
    (profile,) = (tmp_path / "run" / "NetworkManager" / "system-connections").iterdir()
    assert "fd01:2::/64" not in profile.read_text()
    (dirs[out] / "90-k3snet.yaml").unlink()
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_DUAL)
    assert main(["render", "netplan", "-f", str(spec), "-o", str(dirs[out])]) == 1
    assert "without dhcp6" in capsys.readouterr().err


@needs_netplan
@pytest.mark.parametrize(("out", "other"), [
    ("lib", "etc"), ("etc", "run"), ("lib", "run"), ("etc", "lib"), ("run", "etc")])
def test_render_netplan_refuses_a_file_netplan_reads_in_place_of_its_own(
        out: str, other: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # A 90-k3snet.yaml of a later directory (an earlier render into /run/netplan) is the
    # one netplan reads: the routes k3snet wrote into /etc/netplan were never applied.
    dirs = _node_dirs(tmp_path, monkeypatch)
    refused = list(dirs).index(other) > list(dirs).index(out)
    (dirs["etc"] / "01-admin.yaml").write_text(yaml.safe_dump(PLAIN))
    (dirs[other] / "90-k3snet.yaml").write_text("network:\n  version: 2\n")
    state = State(owned=[Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0")])
    (dirs[out] / "90-k3snet.yaml").write_text(render_netplan(state))
    for path in tmp_path.rglob("*.yaml"):
        path.chmod(0o600)
    _netplan_generate(tmp_path)
    routes = _applied(tmp_path / "run", "eth0", "52:54:00:12:34:56").get("Route", [])
    assert bool(routes) != refused
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    status = main(["render", "netplan", "-f", str(spec), "-o", str(dirs[out])])
    assert (status == 1) == refused, capsys.readouterr().err
    if refused:
        assert f"{dirs[other] / '90-k3snet.yaml'} replaces" in capsys.readouterr().err


@needs_netplan
@pytest.mark.parametrize(("out", "other"), [("lib", "etc"), ("etc", "run"), ("lib", "run")])
def test_render_netplan_refuses_a_dangling_link_netplan_reads_in_place_of_its_own(
        out: str, other: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # A 90-k3snet.yaml of a later directory that is a link to a missing file (a removed
    # staging copy) was passed over (Path.exists() follows the link): netplan reads the
    # link in place of the file written, cannot stat it and fails for the whole node.
    dirs = _node_dirs(tmp_path, monkeypatch)
    (dirs["etc"] / "01-admin.yaml").write_text(yaml.safe_dump(PLAIN))
    (dirs[other] / "90-k3snet.yaml").symlink_to(tmp_path / "gone.yaml")
    state = State(owned=[Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0")])
    (dirs[out] / "90-k3snet.yaml").write_text(render_netplan(state))
    for path in tmp_path.rglob("*.yaml"):
        if not path.is_symlink():
            path.chmod(0o600)
    done = _netplan_generate_run(tmp_path)
    assert done.returncode != 0
    assert f"Cannot stat {dirs[other] / '90-k3snet.yaml'}" in done.stderr
    (dirs[out] / "90-k3snet.yaml").unlink()
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    assert main(["render", "netplan", "-f", str(spec), "-o", str(dirs[out])]) == 1
    err = capsys.readouterr().err
    assert f"{dirs[other] / '90-k3snet.yaml'} is a link to" in err
    assert "which does not exist" in err
    assert not (dirs[out] / "90-k3snet.yaml").exists()


@needs_netplan
@pytest.mark.parametrize("where", ["beside", "in-place-of-its-own"])
def test_a_netplan_file_that_is_a_loop_of_links_is_refused_as_netplan_refuses_it(
        where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # /etc/netplan/50-x.yaml -> loop -> 50-x.yaml: netplan fails for the whole node
    # ("Cannot stat ...: Too many levels of symbolic links"). Looking for a link to
    # /dev/null, k3snet ended in an internal error (Path.resolve: RuntimeError "Symlink
    # loop"); as /run's 90-k3snet.yaml it was refused as a link to a missing file.
    dirs = _node_dirs(tmp_path, monkeypatch)
    (dirs["etc"] / "01-admin.yaml").write_text(yaml.safe_dump(PLAIN))
    (dirs["etc"] / "01-admin.yaml").chmod(0o600)
    looped = dirs["etc"] / "50-x.yaml" if where == "beside" else dirs["run"] / "90-k3snet.yaml"
    looped.symlink_to("loop")  # (a name netplan's glob leaves out)
    (looped.parent / "loop").symlink_to(looped.name)
    done = _netplan_generate_run(tmp_path)
    assert done.returncode != 0
    assert f"Cannot stat {looped}: Too many levels of symbolic links" in done.stderr
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    assert main(["render", "netplan", "-f", str(spec), "-o", str(dirs["etc"])]) == 1
    err = capsys.readouterr().err
    assert "internal error" not in err
    if where == "beside":
        assert f"cannot read the netplan file {looped}: Too many levels" in err
    else:
        assert f"{looped} is a link to 'loop', a loop of links" in err
    assert not (dirs["etc"] / "90-k3snet.yaml").exists()


@needs_netplan
@pytest.mark.parametrize("link", ["absolute", "through-another-link"])
@pytest.mark.parametrize("over", ["etc-over-lib", "run-over-etc"])
def test_a_netplan_file_masked_by_a_link_to_dev_null_is_read_as_netplan_reads_it(
        over: str, link: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # /etc/netplan/00-nm.yaml -> /dev/null masks /lib/netplan/00-nm.yaml (renderer:
    # NetworkManager), /run's /etc's: netplan reads the link as an empty file and
    # renders eth0 with networkd. k3snet refused the render ("not a regular file": it
    # opens no device).
    mask, _, masked = over.split("-")
    dirs = _node_dirs(tmp_path, monkeypatch)
    (dirs[masked] / "00-nm.yaml").write_text(yaml.safe_dump(NETWORK_MANAGER_ALL))
    if link == "absolute":
        (dirs[mask] / "00-nm.yaml").symlink_to("/dev/null")
    else:
        (tmp_path / "null").symlink_to("/dev/null")
        (dirs[mask] / "00-nm.yaml").symlink_to(os.path.relpath(tmp_path / "null",
                                                               dirs[mask]))
    (dirs["etc"] / "50-a.yaml").write_text(yaml.safe_dump(PLAIN))
    for path in tmp_path.rglob("*.yaml"):
        if not path.is_symlink():
            path.chmod(0o600)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_DUAL)
    assert main(["render", "netplan", "-f", str(spec), "-o", str(dirs["etc"])]) == 0, \
        capsys.readouterr().err
    (dirs["etc"] / "90-k3snet.yaml").chmod(0o600)
    _netplan_generate(tmp_path)
    applied = _applied(tmp_path / "run", "eth0", "52:54:00:12:34:56")
    assert {r["Destination"] for r in applied["Route"]} == {"192.168.2.0/24", "fd01:2::/64"}
    assert not (tmp_path / "run" / "NetworkManager" / "system-connections").exists()


@needs_netplan
@pytest.mark.parametrize("lib", ["lib", "usr-merged"])
@pytest.mark.parametrize("host", [None, "networkd"], ids=["host-none", "host-networkd"])
def test_render_netplan_into_a_staged_roots_etc_netplan_reads_its_lib_netplan_not_run(
        lib: str, host: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # An image built in ROOT: -o ROOT/etc/netplan read ROOT/etc/netplan alone, and
    # netplan (netplan generate --root-dir ROOT, and the node booted) reads the package's
    # ROOT/usr/lib/netplan/00-network-manager-all.yaml with it: eth0 taken for
    # networkd's, k3snet's IPv6 route left out of its profile, exit status 0. The build
    # host's own netplan directories (here a renderer: networkd there) are not read, nor
    # ROOT/run/netplan: /run is a new tmpfs at boot (a chroot's build often binds the
    # host's /run there; its 90-k3snet.yaml replaces nothing at boot either).
    root = tmp_path / "root"
    if host is not None:
        dirs = _node_dirs(tmp_path / "host", monkeypatch)
        (dirs["run"] / "99-z.yaml").write_text(f"network:\n  renderer: {host}\n")
    etc = root / "etc" / "netplan"
    etc.mkdir(parents=True)
    shipped = root / ("lib" if lib == "lib" else "usr/lib") / "netplan"
    shipped.mkdir(parents=True)
    if lib == "usr-merged":
        (root / "lib").symlink_to("usr/lib")
    (shipped / "00-network-manager-all.yaml").write_text(
        "network:\n  version: 2\n  renderer: NetworkManager\n")
    (etc / "50-b.yaml").write_text(
        "network:\n  version: 2\n  ethernets:\n    eth0: {dhcp4: true}\n")
    state = State(owned=[Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0"),
                         Route("fd01:2::/64", gateway="fe80::1", device="eth0")])
    (etc / "90-k3snet.yaml").write_text(render_netplan(state))
    for path in root.rglob("*.yaml"):
        path.chmod(0o600)
    shutil.rmtree(root / "run", ignore_errors=True)  # as booted
    _netplan_generate(root)
    (profile,) = (root / "run" / "NetworkManager" / "system-connections").iterdir()
    assert "fd01:2::/64" not in profile.read_text()
    (etc / "90-k3snet.yaml").unlink()
    if host is not None:  # the build host's /run bound into the chroot, as often
        (root / "run" / "netplan").mkdir(parents=True)
        (root / "run" / "netplan" / "99-z.yaml").write_text(
            f"network:\n  renderer: {host}\n")
        (root / "run" / "netplan" / "90-k3snet.yaml").write_text("network: {}\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_DUAL)
    assert main(["render", "netplan", "-f", str(spec), "-o", str(etc)]) == 1
    assert "without dhcp6" in capsys.readouterr().err


@needs_netplan
def test_render_netplan_into_a_staged_roots_lib_netplan_refuses_its_etc_file_of_that_name(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    for place in ("lib", "etc"):
        (root / place / "netplan").mkdir(parents=True)
    (root / "etc" / "netplan" / "01-admin.yaml").write_text(yaml.safe_dump(PLAIN))
    (root / "etc" / "netplan" / "90-k3snet.yaml").write_text("network:\n  version: 2\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    out = root / "lib" / "netplan"
    assert main(["render", "netplan", "-f", str(spec), "-o", str(out)]) == 1
    assert f"{root}/etc/netplan/90-k3snet.yaml replaces" in capsys.readouterr().err


def test_render_netplan_into_a_staged_root_refuses_a_device_none_of_its_files_configures(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The image's usr/lib/netplan/00-network-manager-all.yaml alone: its devices are
    # NetworkManager's own profiles, and k3snet's definition of eth0 would have made a
    # second one at boot, link-local only and without the routes (as in /etc/netplan).
    root = tmp_path / "root"
    (root / "etc" / "netplan").mkdir(parents=True)
    (root / "usr" / "lib" / "netplan").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    (root / "usr" / "lib" / "netplan" / "00-network-manager-all.yaml").write_text(
        yaml.safe_dump(NETWORK_MANAGER_ALL))
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    out = root / "etc" / "netplan"
    assert main(["render", "netplan", "-f", str(spec), "-o", str(out)]) == 1
    assert "no netplan definition configures eth0" in capsys.readouterr().err
    assert not (out / "90-k3snet.yaml").exists()


@pytest.mark.parametrize(("renderer", "section", "definition", "length", "said"), [
    ("networkd", "ethernets", {"dhcp4": "true", "auth": {"key-management": "eap"}}, 229,
     "an id of up to 228 characters fits networkd's netplan-wpa-ID.service"),
    ("NetworkManager", "wifis",
     {"dhcp4": "true", "access-points": {"home": {"password": "secret123"}}}, 224,
     "the id and each access point's SSID share 226 bytes of netplan-ID-SSID.nmconnection"),
    ("networkd", "ethernets", {"dhcp4": "true"}, 230,
     "an id of up to 227 characters fits NetworkManager's, 229 networkd's"),
    ("NetworkManager", "ethernets", {"dhcp4": "true"}, 228,
     "an id of up to 227 characters fits NetworkManager's, 229 networkd's"),
], ids=["wpa-unit", "access-point-profile", "wired", "wired-id-beginning-wpa"])
def test_a_refused_ids_message_says_the_room_of_the_file_it_is_too_long_for(
        renderer: str, section: str, definition: dict[str, Any], length: int,
        said: str) -> None:
    # A wifi's (auth:'s) files have less room than a wired definition's: the refusal of
    # a 229-character id with auth: said "229 networkd's" fits, the id it refused.
    sections: dict[str, Any] = {"ethernets": {"eth0": {"dhcp4": "true"}}}
    # (netplan-wpa-w...nmconnection: a wired profile whose name begins as a wpa unit's)
    sections.setdefault(section, {})[("wpa-" + "w" * length)[:length]] = definition
    documents = {"01-admin.yaml": {"network": {"version": "2", "renderer": renderer,
                                               **sections}}}
    with pytest.raises(ModelError, match="too long") as refused:
        netplan_placement(documents, ["eth0"])
    assert said in str(refused.value)
