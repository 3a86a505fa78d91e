"""An IPv6 ``stable_secret``'s write sets its interface's ``addr_gen_mode`` to 2
(``default``'s secret: every interface's, not ``default``'s own), whatever the secret
(``addrconf_sysctl_stable_secret``). Against the kernel, in a namespace with a veth
pair: ``destroy`` and the rollback of a failed apply give each mode back as found
(read in ``/proc/sys/net/ipv6/conf/DEV/addr_gen_mode``); a mode the spec holds stays
the spec's. Both left 2: the interface went on generating stable-privacy addresses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet.cli import main
from k3snet.lab.netns import run_in, temporary_netns

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

SECRET = "2001:db8::5"  # noqa: S105 - a test value, not a password
HEADER = ("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
          "cluster: {podCIDRs: [10.42.0.0/16], serviceCIDRs: [10.43.0.0/16]}\nsysctls:\n")


@pytest.fixture
def ns(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path / "state"))
    with temporary_netns("secret") as name:
        run_in(name, ["ip", "link", "add", "va", "type", "veth", "peer", "name", "vb"])
        # Modes none of which is 2, each its own: a mode given back to another's value
        # shows.
        _set(name, {"va": "1", "vb": "3", "lo": "0"})
        yield name


def _set(ns: str, modes: dict[str, str]) -> None:
    for dev, mode in modes.items():
        run_in(ns, ["sh", "-c", f"echo {mode} > /proc/sys/net/ipv6/conf/{dev}/addr_gen_mode"])


def _modes(ns: str) -> dict[str, str]:
    return {dev: run_in(ns, ["cat", f"/proc/sys/net/ipv6/conf/{dev}/addr_gen_mode"])
            .stdout.strip() for dev in ("va", "vb", "lo", "default")}


def _run(ns: str, tmp_path: Path, *command: str, sysctls: str = "") -> int:
    spec = tmp_path / "spec.yaml"
    spec.write_text(HEADER + sysctls)
    files = ["-f", str(spec), "--no-facts"] if command[0] == "apply" else []
    return main([*command, *files, "--netns", ns, "--backend", "netlink", "--auto-approve"])


def test_destroy_gives_back_the_addr_gen_mode_an_interface_stable_secret_set(
        ns: str, tmp_path: Path) -> None:
    before = _modes(ns)
    assert _run(ns, tmp_path, "apply",
                sysctls=f"  net.ipv6.conf.va.stable_secret: '{SECRET}'\n") == 0
    assert _modes(ns) == {**before, "va": "2"}  # the kernel's doing, not k3snet's
    assert _run(ns, tmp_path, "destroy") == 0
    assert _modes(ns) == before


def test_rollback_gives_back_every_addr_gen_mode_default_stable_secret_set(
        ns: str, tmp_path: Path) -> None:
    before = _modes(ns)
    # The mode the kernel refuses (EINVAL) is written after the secret (its tier),
    # failing the apply once the secret set every interface's mode to 2.
    code = _run(ns, tmp_path, "apply",
                sysctls=f"  net.ipv6.conf.default.stable_secret: '{SECRET}'\n"
                        "  net.ipv6.conf.vb.addr_gen_mode: 7\n")
    assert code != 0
    assert _modes(ns) == before


def test_destroy_of_default_stable_secret_leaves_the_spec_addr_gen_mode_to_its_own_delete(
        ns: str, tmp_path: Path) -> None:
    before = _modes(ns)
    assert _run(ns, tmp_path, "apply",
                sysctls=f"  net.ipv6.conf.default.stable_secret: '{SECRET}'\n"
                        "  net.ipv6.conf.vb.addr_gen_mode: 1\n") == 0
    assert _modes(ns) == {"va": "2", "vb": "1", "lo": "2", "default": before["default"]}
    assert _run(ns, tmp_path, "destroy") == 0
    assert _modes(ns) == before  # vb's 3 given back by its own record, not the secret's


def test_destroy_of_a_stable_secret_recorded_without_its_modes_leaves_them(
        ns: str, tmp_path: Path) -> None:
    # A record of an earlier version holds no mode of the secret: destroy removes it
    # and leaves the modes as they are (it wrote no secret's value into a mode).
    before = _modes(ns)
    assert _run(ns, tmp_path, "apply",
                sysctls=f"  net.ipv6.conf.va.stable_secret: '{SECRET}'\n") == 0
    (record,) = (tmp_path / "state").rglob("sysctl*.json")
    data = json.loads(record.read_text())
    assert data.pop("spread") == {"net.ipv6.conf.va.stable_secret": {
        "net.ipv6.conf.va.addr_gen_mode": before["va"]}}
    record.write_text(json.dumps(data))
    assert _run(ns, tmp_path, "destroy") == 0
    assert _modes(ns) == {**before, "va": "2"}


def test_destroy_writing_back_default_previous_secret_keeps_the_modes_of_interfaces_made_since(
        ns: str, tmp_path: Path) -> None:
    # default's secret set before k3snet took it over: destroy writes it back, and that
    # write sets every interface's mode to 2 again, also of the interfaces made since
    # the take-over (no record of theirs), whose modes an admin set meanwhile.
    run_in(ns, ["sh", "-c", "echo 2001:db8::9 > /proc/sys/net/ipv6/conf/default/stable_secret"])
    _set(ns, {"va": "1", "vb": "3", "lo": "0"})
    before = _modes(ns)
    assert _run(ns, tmp_path, "apply",
                sysctls=f"  net.ipv6.conf.default.stable_secret: '{SECRET}'\n") == 0
    run_in(ns, ["ip", "link", "add", "vc", "type", "veth", "peer", "name", "vd"])
    _set(ns, {"vc": "0", "vd": "1"})  # (made with default's secret: 2)
    assert _run(ns, tmp_path, "destroy") == 0
    assert _modes(ns) == before
    assert {dev: run_in(ns, ["cat", f"/proc/sys/net/ipv6/conf/{dev}/addr_gen_mode"])
            .stdout.strip() for dev in ("vc", "vd")} == {"vc": "0", "vd": "1"}
    secret = run_in(ns, ["cat", "/proc/sys/net/ipv6/conf/default/stable_secret"])
    assert secret.stdout.strip() == "2001:0db8:0000:0000:0000:0000:0000:0009"  # given back


def test_default_stable_secret_left_by_destroy_sets_the_mode_of_every_interface_made_after(
        ns: str, tmp_path: Path) -> None:
    # The kernel cannot unset a secret, and a new interface starts with default's, and
    # with addr_gen_mode 2 (ipv6_add_dev): destroy gives back the modes of the
    # interfaces there, not of those made later (a pod's veth), which docs/backends.md
    # says.
    assert _run(ns, tmp_path, "apply",
                sysctls=f"  net.ipv6.conf.default.stable_secret: '{SECRET}'\n") == 0
    assert _run(ns, tmp_path, "destroy") == 0
    run_in(ns, ["ip", "link", "add", "vc", "type", "veth", "peer", "name", "vd"])
    made = run_in(ns, ["cat", "/proc/sys/net/ipv6/conf/vc/addr_gen_mode"])
    assert made.stdout.strip() == "2"
    assert _modes(ns)["default"] != "2"


def test_destroy_gives_back_the_addr_gen_mode_of_a_secret_whose_interface_was_renamed(
        ns: str, tmp_path: Path) -> None:
    # The secret stays owned under the interface's new name: so does its mode's record
    # (it named the mode under the old name, which no interface has, and the renamed
    # one's mode stayed 2).
    before = _modes(ns)
    assert _run(ns, tmp_path, "apply",
                sysctls=f"  net.ipv6.conf.va.stable_secret: '{SECRET}'\n") == 0
    run_in(ns, ["ip", "link", "set", "va", "name", "vz"])
    assert _run(ns, tmp_path, "destroy") == 0
    mode = run_in(ns, ["cat", "/proc/sys/net/ipv6/conf/vz/addr_gen_mode"]).stdout.strip()
    assert mode == before["va"]


def test_destroy_of_default_stable_secret_gives_back_the_mode_of_an_interface_renamed_since(
        ns: str, tmp_path: Path) -> None:
    # default's secret records every interface's mode under its name then: an interface
    # renamed since (vz, was va) kept mode 2 after destroy, and the one given va's name
    # since (another interface, made with default's secret: 2) got va's mode; so did
    # one made again under a deleted one's name (vx).
    run_in(ns, ["ip", "link", "add", "vx", "type", "veth", "peer", "name", "vy"])
    _set(ns, {"vx": "3", "vy": "1"})
    before = _modes(ns)
    assert _run(ns, tmp_path, "apply",
                sysctls=f"  net.ipv6.conf.default.stable_secret: '{SECRET}'\n") == 0
    run_in(ns, ["ip", "link", "set", "va", "name", "vz"])
    run_in(ns, ["ip", "link", "add", "va", "type", "veth", "peer", "name", "vc"])
    run_in(ns, ["ip", "link", "del", "vx"])
    run_in(ns, ["ip", "link", "add", "vx", "type", "veth", "peer", "name", "vy"])
    assert _run(ns, tmp_path, "destroy") == 0
    modes = {dev: run_in(ns, ["cat", f"/proc/sys/net/ipv6/conf/{dev}/addr_gen_mode"])
             .stdout.strip() for dev in ("vz", "va", "vb", "vx", "lo")}
    assert modes == {"vz": before["va"], "va": "2", "vb": before["vb"], "vx": "2",
                     "lo": before["lo"]}
