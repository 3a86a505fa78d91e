"""The capture's ``sysctl.txt``, read from ``/proc/sys/net`` without a process, is what
its command (``sysctl -a -r ...``, procps-ng, in the C locale) prints, byte for byte.

The read costs ~2 ms of CPU where the command cost ~90 ms (a process walking every
sysctl). Checked against the tool on the kernel at hand, in a namespace whose devices'
names hold a dot (shown ``/``) and bytes that are not UTF-8, with values set apart from
their defaults: through ``--netns`` (a thread entering the namespace) and from a doctor
started by ``ip netns exec`` (``/proc/sys/net`` is the reader's namespace's).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet.doctor.bundle import FILES, NodeCapture
from k3snet.lab.netns import run_in, temporary_netns

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

_ODD = b"v\xff.1"  # a byte that is not UTF-8 and a dot


def _ip(ns: str, *argv: bytes | str) -> None:
    subprocess.run([b"ip", b"-n", ns.encode(), *(os.fsencode(a) for a in argv)],
                   check=True, capture_output=True)


@pytest.fixture
def node() -> Iterator[str]:
    with temporary_netns("sysctl") as ns:
        _ip(ns, "link", "add", _ODD, "type", "veth", "peer", "name", "p.2")
        _ip(ns, "link", "set", "lo", "up")
        run_in(ns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
                    "net.ipv4.conf.all.rp_filter=2", "net.ipv6.conf.p/2.mtu=1400"])
        yield ns


def _tool(ns: str) -> str:
    done = subprocess.run(["ip", "netns", "exec", ns, *FILES["sysctl.txt"]],
                          capture_output=True, check=True, env={**os.environ, "LC_ALL": "C"})
    return done.stdout.decode(errors="surrogateescape")


def test_the_sysctls_read_in_a_namespace_are_what_sysctl_prints_there(node: str) -> None:
    capture = NodeCapture.read_live(node)
    assert "sysctl.txt" not in capture.missing
    said = _tool(node)
    assert capture.text("sysctl.txt") == said
    assert "net.ipv4.conf.v\udcff/1.forwarding = 1\n" in said  # all's 1 copied at creation
    assert capture.sysctls()["net.ipv6.conf.p/2.mtu"] == "1400"


def test_the_sysctls_read_by_a_doctor_started_by_ip_netns_exec_are_that_namespace_s(
        node: str, tmp_path: Path) -> None:
    code = ("import sys\nfrom k3snet.doctor.bundle import NodeCapture\n"
            "sys.stdout.buffer.write(NodeCapture.read_live().text('sysctl.txt')"
            ".encode(errors='surrogateescape'))\n")
    home = str(Path(__file__).resolve().parents[2])
    done = subprocess.run(["ip", "netns", "exec", node, sys.executable, "-c", code],
                          capture_output=True, check=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": home})
    assert done.stdout.decode(errors="surrogateescape") == _tool(node)


def test_the_sysctls_are_read_without_the_sysctl_tool(
        node: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A node without procps (a slim image) had no sysctl.txt: "sysctl: not installed",
    # forwarding and rp_filter unknown to the trace.
    tools = tmp_path / "bin"
    tools.mkdir()
    ip = shutil.which("ip")
    assert ip is not None
    (tools / "ip").symlink_to(ip)
    monkeypatch.setenv("PATH", str(tools))
    capture = NodeCapture.read_live(node)
    assert "sysctl.txt" not in capture.missing
    assert capture.sysctls()["net.ipv4.ip_forward"] == "1"
