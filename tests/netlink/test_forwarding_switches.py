"""IPv4 forwards by the switch of the interface a packet arrives on
(``net.ipv4.conf.<if>.forwarding``), which ``net.ipv4.ip_forward`` sets only when its
own value changes: an interface at 0 beside ``ip_forward = 1`` drops the pods' packets
while the plan says the forwarding sysctl is met. The netlink backend names such
switches in its warnings. The kernel's own view is read with ``sysctl`` in the
namespace, and the seed lab shows the drop with a real connection.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from k3snet.backends.netlink import NetlinkBackend
from k3snet.demo import SPEC_PATH
from k3snet.lab import SeedLab
from k3snet.lab.netns import run_in
from k3snet.model import State, Sysctl
from k3snet.planner import plan
from tests.in_process import k3snet
from tests.netlink.links import count_switch_reads, d0_namespace, ip

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

_FORWARD = Sysctl("net.ipv4.ip_forward", 1)


def _warnings(backend: NetlinkBackend) -> tuple[str, ...]:
    """``backend.warnings`` read again (mypy holds a property to what an assert compared it to)."""
    return backend.warnings


def _sysctl(ns: str, *assignments: str) -> None:
    run_in(ns, ["sysctl", "-qw", *assignments])


def _value(ns: str, name: str) -> str:
    return run_in(ns, ["sysctl", "-n", name]).stdout.strip()


def test_an_interfaces_ipv4_forwarding_off_beside_ip_forward_on_is_a_warning(
        tmp_path: Path) -> None:
    with d0_namespace("fwdsw") as ns, NetlinkBackend(ns, state_dir=tmp_path) as backend:
        _sysctl(ns, "net.ipv4.ip_forward=1", "net.ipv4.conf.d0.forwarding=0")
        backend.expect(State(owned=[_FORWARD]))
        observed = backend.observe()
        assert plan(observed, State(owned=[_FORWARD])).empty  # met: nothing to write
        [warning] = backend.warnings
        assert "IPv4 forwarding is off on d0 " in warning
        assert "net.ipv4.conf.d0.forwarding: 1" in warning
        assert "d0p" not in warning
        assert " lo" not in warning

        _sysctl(ns, "net.ipv4.conf.default.forwarding=0")
        assert any("net.ipv4.conf.default.forwarding is 0" in w for w in backend.warnings)

        # A switch the spec names is the spec's to set: no warning of it.
        backend.expect(State(owned=[_FORWARD, Sysctl("net.ipv4.conf.d0.forwarding", 1),
                                    Sysctl("net.ipv4.conf.default.forwarding", 0)]))
        assert backend.warnings == ()
        # Nothing wanted of forwarding: nothing said.
        backend.expect(State())
        assert backend.warnings == ()


def test_no_forwarding_warning_while_ip_forward_is_off_since_its_write_sets_every_switch(
        tmp_path: Path) -> None:
    with d0_namespace("fwdsp") as ns, NetlinkBackend(ns, state_dir=tmp_path) as backend:
        _sysctl(ns, "net.ipv4.ip_forward=0")
        assert _value(ns, "net.ipv4.conf.d0.forwarding") == "0"
        backend.expect(State(owned=[_FORWARD]))
        p = plan(backend.observe(), State(owned=[_FORWARD]))
        assert backend.warnings == ()
        backend.apply(p)
        assert _value(ns, "net.ipv4.conf.d0.forwarding") == "1"
        assert _value(ns, "net.ipv4.conf.default.forwarding") == "1"
        assert backend.warnings == ()
        # Without a hint, the owned sysctls say what is wanted.
        _sysctl(ns, "net.ipv4.conf.d0.forwarding=0")
        with NetlinkBackend(ns, state_dir=tmp_path) as again:
            again.observe()
            assert any("IPv4 forwarding is off on d0 " in w for w in again.warnings)
        backend.apply(plan(backend.observe(), State()))


def _k3snet(*args: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    """``k3snet ARGS`` by main() in this process (tests/in_process.py)."""
    return k3snet(*args, K3SNET_STATE_DIR=str(state_dir))


@pytest.mark.lab
def test_the_pod_bridges_forwarding_off_drops_the_pods_connection_and_is_named(
        tmp_path: Path) -> None:
    with SeedLab.create() as lab:
        backends = ["--backend", "netlink", "--backend", "nftables", "--netns", lab.node]
        applied = _k3snet("apply", "-f", str(SPEC_PATH), *backends, state_dir=lab.state_dir)
        assert applied.returncode == 0, applied.stderr
        assert lab.tcp_probe(4).ok
        _sysctl(lab.node, "net.ipv4.conf.cni0.forwarding=0")
        assert _value(lab.node, "net.ipv4.ip_forward") == "1"
        assert not lab.tcp_probe(4, timeout=1.0).ok  # the kernel's answer, not ours

        shown = _k3snet("plan", "-f", str(SPEC_PATH), *backends, state_dir=lab.state_dir)
        assert shown.returncode == 0, shown.stdout + shown.stderr  # no change to make ...
        assert "!! warning: netlink: IPv4 forwarding is off on cni0 " in shown.stdout

        # ... until the spec names the switch: k3snet turns it on, the pod connects.
        spec = tmp_path / "spec.yaml"
        spec.write_text(SPEC_PATH.read_text()
                        + "sysctls:\n  net.ipv4.conf.cni0.forwarding: 1\n")
        fixed = _k3snet("apply", "-f", str(spec), *backends, state_dir=lab.state_dir)
        assert fixed.returncode == 0, fixed.stderr
        assert "warning" not in fixed.stdout
        assert _value(lab.node, "net.ipv4.conf.cni0.forwarding") == "1"
        assert lab.tcp_probe(4).ok
        gone = _k3snet("destroy", "-f", str(spec), *backends, "--auto-approve",
                      state_dir=lab.state_dir)
        assert gone.returncode == 0, gone.stderr
        assert _value(lab.node, "net.ipv4.conf.cni0.forwarding") == "0"


def test_the_switches_are_read_again_only_after_the_kernel_announced_a_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = count_switch_reads(monkeypatch)
    with d0_namespace("fwdnc") as ns, NetlinkBackend(ns, state_dir=tmp_path) as backend:
        _sysctl(ns, "net.ipv4.ip_forward=1", "net.ipv4.conf.d0.forwarding=0")
        backend.expect(State(owned=[_FORWARD]))
        [warning] = backend.warnings
        assert "off on d0 " in warning
        assert len(reads) == 1
        for _ in range(3):  # nothing changed: nothing read (an agent's no-op pass)
            assert backend.warnings == (warning,)
        assert len(reads) == 1
        tokens = backend.route_token(), backend.facts_token()
        _sysctl(ns, "net.ipv4.conf.d0.forwarding=1")  # RTM_NEWNETCONF
        assert backend.warnings == ()
        # No route changed: the routes are not dumped again, nor the node facts read.
        assert (backend.route_token(), backend.facts_token()) == tokens
        _sysctl(ns, "net.ipv4.conf.d0p.forwarding=0")
        [warning] = _warnings(backend)
        assert "off on d0p " in warning
        _sysctl(ns, "net.ipv4.ip_forward=0", "net.ipv4.ip_forward=1")  # all, default, each
        assert backend.warnings == ()
        _sysctl(ns, "net.ipv4.conf.default.forwarding=0")
        assert [w for w in _warnings(backend) if "default.forwarding is 0" in w]
        ip(ns, "link", "add", "v0", "type", "veth", "peer", "name", "v0p")  # starts at 0
        [named] = [w for w in _warnings(backend) if "IPv4 forwarding is off on" in w]
        assert "v0," in named or "v0 " in named
        ip(ns, "link", "set", "v0", "name", "w0")  # a link notification
        [named] = [w for w in _warnings(backend) if "IPv4 forwarding is off on" in w]
        assert "w0," in named or "w0 " in named
        reads.clear()
        assert backend.warnings == backend.warnings
        assert reads == []


def test_a_directory_standing_in_for_proc_sys_is_read_every_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = count_switch_reads(monkeypatch)
    fake = tmp_path / "proc" / "sys"
    for name, value in (("net/ipv4/ip_forward", "1"), ("net/ipv4/conf/all/forwarding", "1"),
                        ("net/ipv4/conf/default/forwarding", "1"),
                        ("net/ipv4/conf/d0/forwarding", "1")):
        (fake / name).parent.mkdir(parents=True, exist_ok=True)
        (fake / name).write_text(f"{value}\n")
    with d0_namespace("fwdfk") as ns, NetlinkBackend(ns, state_dir=tmp_path / "state",
                                                     proc_sys=fake) as backend:
        backend.expect(State(owned=[_FORWARD]))
        assert backend.warnings == ()
        (fake / "net/ipv4/conf/d0/forwarding").write_text("0\n")  # the kernel says nothing
        [warning] = _warnings(backend)
        assert "off on d0 " in warning
        assert len(reads) == 2


def test_pods_veths_made_while_default_is_off_leave_the_warnings_text_as_it_was(
        tmp_path: Path) -> None:
    with d0_namespace("fwdst") as ns, NetlinkBackend(ns, state_dir=tmp_path) as backend:
        ip(ns, "link", "add", "cni0", "type", "bridge")
        _sysctl(ns, "net.ipv4.ip_forward=1", "net.ipv4.conf.default.forwarding=0",
                "net.ipv4.conf.cni0.forwarding=0")
        backend.expect(State(owned=[_FORWARD]))
        first = backend.warnings
        assert any("off on cni0 " in w for w in first)
        texts = {first}
        for pod in range(6):  # each pod's veth starts with forwarding off
            ip(ns, "link", "add", f"veth{pod}", "type", "veth", "peer", "name", f"eth{pod}p")
            assert _value(ns, f"net.ipv4.conf.veth{pod}.forwarding") == "0"
            texts.add(backend.warnings)
        # The text moved while the oldest four filled up, once more for "created after
        # them", then stood still however many pods came.
        last = backend.warnings
        assert "off on cni0, eth0p, veth0, eth1p and interfaces created after them" in last[0]
        assert len(texts) <= 6
        ip(ns, "link", "add", "veth9", "type", "veth", "peer", "name", "eth9p")
        assert backend.warnings == last
        _sysctl(ns, "net.ipv4.conf.d0.forwarding=0")  # an older interface: a real change
        assert "off on d0, cni0, eth0p, veth0 and interfaces created after them" in (
            backend.warnings[0])


@pytest.mark.lab
def test_a_bridge_ports_switch_at_0_drops_nothing_and_is_not_named_the_bridges_is(
        tmp_path: Path) -> None:
    # A flannel node: the pod's veth is a port of the bridge holding the pods' gateway
    # address (cni0 here is the veth, br0 the bridge). What arrives on a port is
    # received by the bridge: its switch decides, the port's never.
    with SeedLab.create() as lab:
        backends = ["--backend", "netlink", "--backend", "nftables", "--netns", lab.node]
        applied = _k3snet("apply", "-f", str(SPEC_PATH), *backends, state_dir=lab.state_dir)
        assert applied.returncode == 0, applied.stderr
        for argv in (["ip", "link", "add", "br0", "type", "bridge"],
                     ["ip", "addr", "del", "10.42.0.1/24", "dev", "cni0"],
                     ["ip", "link", "set", "cni0", "master", "br0"],
                     ["ip", "addr", "add", "10.42.0.1/24", "dev", "br0"],
                     ["ip", "link", "set", "br0", "up"]):
            run_in(lab.node, argv)
        _sysctl(lab.node, "net.ipv4.conf.default.forwarding=0",
                "net.ipv4.conf.cni0.forwarding=0", "net.ipv4.conf.br0.forwarding=1")
        assert lab.tcp_probe(4).ok  # the port's 0: nothing dropped
        with NetlinkBackend(lab.node, state_dir=lab.state_dir) as backend:
            backend.expect(State(owned=[_FORWARD]))
            assert not [w for w in backend.warnings if "IPv4 forwarding is off" in w]
            _sysctl(lab.node, "net.ipv4.conf.br0.forwarding=0")
            assert not lab.tcp_probe(4, timeout=1.0).ok  # the bridge's 0 drops
            [named] = [w for w in backend.warnings if "IPv4 forwarding is off" in w]
            assert "off on br0 " in named
