"""The ``ip link set NAME up`` a finding tells to run names the device as one shell word.

The kernel takes any interface name but one holding ``/``, ``:`` or a space: written as
it was, a down link named ``d;id`` made ``(ip link set d;id up)``, which pasted ran
``id`` as a second command, and one of an ESC (``e\\x1bq``, printed escaped) named
another device. Read from a bundle (``--state``) whose links are so named, and bash
reads each command back as ``ip`` and its argv.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from k3snet.cli import main

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
    (commands,) = re.findall(r"bring it up \((ip link set .*?)\) and see", advice)
    script = "ip() { printf '%s\\0' \"$@\"; printf '\\n'; }\n" + commands
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True,
                         timeout=30).stdout
    return [line.split("\0")[:-1] for line in out.splitlines()]


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
