"""The networkd files loaded by systemd-networkd itself, in a namespace of this test's.

``k3snet render networkd`` is the one boot file of routes the other tests only read
as text. Here the node's own ``.network`` file and the rendered ones go where
networkd reads them, a real ``systemd-networkd`` runs in the namespace (a private
mount namespace: its own ``/run``, ``/sys`` read-only so that it does not wait for
udev, which sees no link of another namespace), and the kernel's routes are then
what ``k3snet plan`` with the same spec reads as its own: nothing to do.
"""

from __future__ import annotations

import json
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet.cli import main
from k3snet.lab.netns import run_in, temporary_netns

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
NETWORKD = "/lib/systemd/systemd-networkd"
# Run as `sh -c SCRIPT sh CONFDIR` inside `ip netns exec NS unshare -m`: nothing it
# mounts is seen outside, and networkd reads only CONFDIR's files (/run/systemd/network).
START = """set -e
mount -t tmpfs tmpfs /run
mount -o remount,ro /sys
mkdir -p /run/systemd/network /run/systemd/netif/links /run/systemd/netif/leases
cp -r "$1"/. /run/systemd/network/
chown -R systemd-network:systemd-network /run/systemd/netif
exec """ + NETWORKD

# The node's own file for eth0, as netplan or an installer writes it.
NODE_FILE = """[Match]
Name=eth0

[Network]
Address=192.168.1.10/24
Address=fd01:1::10/64
"""


def _networkd_usable() -> bool:
    try:
        pwd.getpwnam("systemd-network")
    except KeyError:
        return False
    return Path(NETWORKD).is_file() and shutil.which("unshare") is not None


@pytest.fixture
def networkd_ns() -> Iterator[str]:
    if not _networkd_usable():
        pytest.skip("systemd-networkd (and its user) is not installed")
    with temporary_netns("rv3r") as ns:
        run_in(ns, ["ip", "link", "set", "lo", "up"])
        run_in(ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "p0"])
        run_in(ns, ["ip", "link", "set", "p0", "up"])
        yield ns


def _owned_routes(ns: str) -> list[tuple[str, str]]:
    routes = []
    for family in ("-4", "-6"):
        listed = json.loads(run_in(ns, ["ip", "-j", family, "route", "show", "table", "all",
                                        "proto", "211"]).stdout)
        routes += [(r["dst"], r.get("gateway", "")) for r in listed]
    return sorted(routes)


def test_networkd_loads_the_rendered_drop_in_as_the_routes_plan_reads_as_its_own(
    networkd_ns: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ns = networkd_ns
    conf = tmp_path / "network"
    assert main(["render", "networkd", "-f", str(SEED), "-o", str(conf),
                 "--network-file", "eth0=10-eth0.network"]) == 0
    (conf / "10-eth0.network").write_text(NODE_FILE)
    daemon = subprocess.Popen(
        ["ip", "netns", "exec", ns, "unshare", "-m", "--propagation", "private",
         "sh", "-c", START, "sh", str(conf)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wanted = [("192.168.2.0/24", "192.168.1.1"), ("fd01:2::/64", "fd01:1::1")]
        deadline = time.monotonic() + 60  # a wait for networkd, not a timed assertion
        while _owned_routes(ns) != wanted and daemon.poll() is None:
            assert time.monotonic() < deadline, _owned_routes(ns)
            time.sleep(0.2)
        assert _owned_routes(ns) == wanted, daemon.poll()
        capsys.readouterr()
        assert main(["plan", "-f", str(SEED), "--backend", "netlink:route", "--netns", ns]
                    ) == 0, capsys.readouterr().out
    finally:
        daemon.terminate()
        log = daemon.communicate(timeout=30)[0]
    assert "10-eth0.network" in log, log  # the file that configured eth0, with the drop-in


def test_a_device_another_network_file_configures_is_refused_and_its_drop_in_keeps_both(
    networkd_ns: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The node's file sorts after 90-k3snet-eth0.network (eth0.network; Flatcar's
    # zz-default.network): the file of k3snet's own, routes alone, was written, and
    # networkd configured eth0 with it instead, so eth0 came up without its addresses.
    ns = networkd_ns
    conf = tmp_path / "network"
    conf.mkdir()
    (conf / "eth0.network").write_text(NODE_FILE)
    assert main(["render", "networkd", "-f", str(SEED), "-o", str(conf)]) == 1
    err = capsys.readouterr().err
    assert "eth0: other .network files match it (eth0.network)" in err
    assert "--network-file eth0=eth0.network" in err
    assert sorted(p.name for p in conf.iterdir()) == ["eth0.network"]  # nothing written
    assert main(["render", "networkd", "-f", str(SEED), "-o", str(conf),
                 "--network-file", "eth0=eth0.network"]) == 0
    daemon = subprocess.Popen(
        ["ip", "netns", "exec", ns, "unshare", "-m", "--propagation", "private",
         "sh", "-c", START, "sh", str(conf)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wanted = [("192.168.2.0/24", "192.168.1.1"), ("fd01:2::/64", "fd01:1::1")]
        deadline = time.monotonic() + 60  # a wait for networkd, not a timed assertion
        while _owned_routes(ns) != wanted and daemon.poll() is None:
            assert time.monotonic() < deadline, _owned_routes(ns)
            time.sleep(0.2)
        assert _owned_routes(ns) == wanted, daemon.poll()
        listed = json.loads(run_in(ns, ["ip", "-j", "address", "show", "dev", "eth0"]).stdout)
        addresses = {a["local"] for a in listed[0]["addr_info"]}
        assert {"192.168.1.10", "fd01:1::10"} <= addresses
    finally:
        daemon.terminate()
        log = daemon.communicate(timeout=30)[0]
    assert "eth0: Configuring with /run/systemd/network/eth0.network" in log, log


def test_render_into_etc_systemd_network_reads_every_directory_networkd_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Flatcar's /usr/lib/systemd/network/zz-default.network (Name=*), netplan's
    # /run/systemd/network/10-netplan-eth0.network: not in the directory written to.
    from k3snet import cli  # noqa: PLC0415 - its directories are patched

    dirs = tuple(tmp_path / name for name in ("lib", "usr-lib", "run", "etc"))
    for directory in dirs:
        directory.mkdir()
    monkeypatch.setattr(cli, "_NETWORKD_DIRS", dirs)
    flatcar = "[Match]\nName=*\nType=!loopback bridge\n\n[Network]\nDHCP=yes\n"
    (dirs[1] / "zz-default.network").write_text(flatcar)
    assert main(["render", "networkd", "-f", str(SEED), "-o", str(dirs[-1])]) == 1
    assert "(zz-default.network (if its other [Match] conditions hold))" in \
        capsys.readouterr().err
    # masked in /etc, as networkd reads it: no file of that name
    (dirs[-1] / "zz-default.network").symlink_to("/dev/null")
    (dirs[-1] / "dangling.network").symlink_to(tmp_path / "gone.network")
    assert main(["render", "networkd", "-f", str(SEED), "-o", str(dirs[-1])]) == 0
    assert (dirs[-1] / "90-k3snet-eth0.network").is_file()
    # written by k3snet before: replaced, not a file of another program
    assert main(["render", "networkd", "-f", str(SEED), "-o", str(dirs[-1])]) == 0
    # a directory elsewhere: only its own files are read
    assert main(["render", "networkd", "-f", str(SEED), "-o", str(dirs[1])]) == 1
    capsys.readouterr()
    # a parent file networkd does not read: no drop-in of it comes up (said, written)
    assert main(["render", "networkd", "-f", str(SEED), "-o", str(dirs[-1]),
                 "--network-file", "eth0=10-eth0.network"]) == 0
    assert ("--network-file eth0=10-eth0.network: no such .network file in "
            f"{dirs[-1]}") in capsys.readouterr().err
    # netplan's file in /run: found there (the masked zz-default.network is none)
    (dirs[2] / "10-eth0.network").write_text("[Match]\nName=eth0\n")
    assert main(["render", "networkd", "-f", str(SEED), "-o", str(dirs[-1]),
                 "--network-file", "eth0=10-eth0.network"]) == 0
    assert "no such .network file" not in capsys.readouterr().err
    # masked, so not read; and 10-eth0.network is what networkd applies to eth0
    assert main(["render", "networkd", "-f", str(SEED), "-o", str(dirs[-1]),
                 "--network-file", "eth0=zz-default.network"]) == 1
    err = capsys.readouterr().err
    assert "eth0=zz-default.network: no such" in err
    assert "10-eth0.network matches eth0 and sorts first" in err
