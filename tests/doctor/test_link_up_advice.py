"""The ``ip link set NAME up`` a finding tells to run names the device as one shell word.

The kernel takes any interface name but one holding ``/``, ``:`` or a space: written as
it was, a down link named ``d;id`` made ``(ip link set d;id up)``, which pasted ran
``id`` as a second command, and one of an ESC (``e\\x1bq``, printed escaped) named
another device. Read from a bundle (``--state``) whose links are so named, and bash
reads each command back as ``ip`` and its argv.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

import k3snet
from k3snet.cli import main
from k3snet.doctor import Flow, NodeCapture, NodeState, diagnose
from k3snet.lab.netns import unique_name
from tests.cli.test_hint_encoding import _latin1_locale

SEED = Path(__file__).parent / "golden" / "seed"
NAMES = ("d;id", "e\x1bq")


def _bundle(where: Path, *, route_dev: str | None) -> Path:
    """The seed bundle with eth1 renamed ``d;id``, a link ``e\\x1bq``, both down; with
    ``route_dev``, the route to 192.168.2.0/24 through that device, flagged ``linkdown``."""
    bundle = where / "bundle"
    shutil.copytree(SEED, bundle)
    links = json.loads((bundle / "addr.json").read_text())
    eth1 = next(link for link in links if link["ifname"] == "eth1")
    extra = {**eth1, "ifindex": 9, "addr_info": []}
    for link, name in ((eth1, NAMES[0]), (extra, NAMES[1])):
        link.update(ifname=name, operstate="DOWN", flags=["BROADCAST", "MULTICAST"])
    (bundle / "addr.json").write_text(json.dumps([*links, extra]))
    routes = json.loads((bundle / "routes-v4.json").read_text())
    for route in routes:
        if route.get("dev") == "eth1":
            route["dev"] = NAMES[0]
        if route_dev is not None and route.get("dst") == "192.168.2.0/24":
            route.update(dev=route_dev, flags=["linkdown"])
            route.pop("gateway")
    (bundle / "routes-v4.json").write_text(json.dumps(routes))
    return bundle


def _ip_argvs(advice: str) -> list[list[str]]:
    """The argv of each ``ip`` command in the parentheses after ``bring it up``, as bash
    runs them (``ip`` a function printing its arguments, one a line)."""
    return [[os.fsdecode(arg) for arg in argv] for argv in _ip_argv_bytes(advice.encode())]


def _ip_argv_bytes(advice: bytes) -> list[list[bytes]]:
    (commands,) = re.findall(rb"bring it up \((ip .*?)\) and see", advice)
    script = b"ip() { printf '%s\\0' \"$@\"; printf '\\n'; }\n" + commands
    out = subprocess.run(["bash", "-c", script], capture_output=True, check=True,
                         timeout=30).stdout
    return [line.split(b"\0")[:-1] for line in out.splitlines()]


@pytest.mark.parametrize(("destination", "route_dev", "down"), [
    ("192.168.9.10", None, list(NAMES)),  # no route: every link down is named
    ("192.168.2.10", NAMES[1], [NAMES[1]]),  # the route's own device is down
], ids=["no-route", "link-down"])
def test_the_command_bringing_a_link_up_names_it_as_one_shell_word(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], destination: str,
        route_dev: str | None, down: list[str]) -> None:
    bundle = _bundle(tmp_path, route_dev=route_dev)
    main(["doctor", "--from", "10.42.0.10", "--to", f"{destination}:5432",
          "--state", str(bundle)])
    out = capsys.readouterr().out
    (advice,) = [line for line in out.splitlines() if "bring it up (" in line]
    assert _ip_argvs(advice) == [["link", "set", name, "up"] for name in down], advice


def test_the_command_bringing_a_link_up_runs_in_the_namespace_the_node_is(
        tmp_path: Path) -> None:
    """Of a node in namespace NS (``--netns NS``) the advice was ``ip link set DEV up``
    alone: pasted into the shell that ran the doctor, it brought up the host's device of
    that name, not the node's. Each command now runs in NS, as the fix line's
    ``--netns`` does."""
    state = NodeState.from_capture(NodeCapture.read_dir(_bundle(tmp_path,
                                                                route_dev=NAMES[1])))
    d = diagnose(attrs.evolve(state, netns="nodé"),
                 Flow("10.42.0.10", "192.168.2.10", protocol="tcp", port=5432))
    (advice,) = [f.advice for f in d.findings if f.advice and "bring it up (" in f.advice]
    assert _ip_argvs(advice) == [["netns", "exec", "nodé", "ip", "link", "set", NAMES[1],
                                  "up"]], advice


@pytest.fixture
def down_link_node() -> Iterator[str]:
    """A namespace whose pod-facing cni0 (10.42.0.1/24) is up and whose link named ``é``
    (its UTF-8 bytes, ``\\xc3\\xa9``) is down, and no route leaves the node."""
    name = unique_name("linkup")
    subprocess.run(["ip", "netns", "add", name], capture_output=True, check=True, timeout=60)
    try:
        for argv in (["link", "add", "cni0", "type", "veth", "peer", "name", "cnip"],
                     ["addr", "add", "10.42.0.1/24", "dev", "cni0"],
                     ["link", "set", "cni0", "up"], ["link", "set", "cnip", "up"],
                     ["link", "add", "é", "type", "veth", "peer", "name", "ep"]):
            subprocess.run(["ip", "-n", name, *argv], capture_output=True, check=True,
                           timeout=60)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False,
                       timeout=60)


@pytest.mark.kernel
@pytest.mark.usefixtures("require_root")
def test_the_link_up_advice_of_a_live_node_names_its_device_by_its_bytes_under_latin1(
        tmp_path: Path, down_link_node: str) -> None:
    """Read live under a Latin-1 locale, the capture decoded ``ip``'s output by that
    locale: the link ``é`` (``\\xc3\\xa9``) was read as ``Ã©``, and the advice wrote
    ``ip link set $'\\xc3\\x83\\xc2\\xa9' up``, another device once pasted (and a bundle
    saved so named it so too). bash reads back the device's own bytes, in the node's
    namespace, and the kernel knows the device by them."""
    environment = _latin1_locale(tmp_path)
    doctor = subprocess.run(
        [sys.executable, "-m", "k3snet.cli", "doctor", "--netns", down_link_node,
         "--from", "10.42.0.10", "--to", "192.168.9.10:5432"],
        capture_output=True, check=False, timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(k3snet.__file__).parents[1]),
             **environment})
    assert doctor.returncode == 3, doctor.stderr  # blocked: no route
    (advice,) = [line for line in doctor.stdout.splitlines() if b"bring it up (" in line]
    (argv,) = [a for a in _ip_argv_bytes(advice) if a[-2] != b"ep"]
    assert argv == [b"netns", b"exec", down_link_node.encode(), b"ip", b"link", b"set",
                    "é".encode(), b"up"], advice
    shown = subprocess.run(["ip", "-n", down_link_node, "-j", "link", "show", "dev",
                            argv[-2]], capture_output=True, check=True, timeout=60)
    assert json.loads(shown.stdout)[0]["ifname"] == "é"  # the kernel's own device
