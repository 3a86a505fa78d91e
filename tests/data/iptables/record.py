"""Record the ``iptables-save`` outputs the root-free iptables tests read.

Run as root from the repository root (only when the layout or the node seed changes)::

    .venv/bin/python tests/data/iptables/record.py

For each flavour (nft, legacy), in a fresh lab namespace (deleted afterwards): the
K3s node of :mod:`k3snet.testing.k3s` (flannel, kube-proxy, Docker, an
administrator's rule) is loaded, saved as ``<flavour>-foreign-v<family>.save``;
then the iptables backend applies :data:`DESIRED` and the result is saved as
``<flavour>-v<family>.save``. ``desired.json`` is the state applied (what the
tests expect to read back). Nothing is done in the root namespace.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from k3snet.backends.iptables import IptablesBackend  # noqa: E402 - after the path setup
from k3snet.lab.netns import run_in, temporary_netns  # noqa: E402
from k3snet.model import ForwardRule, MasqueradeRule, SnatRule, State  # noqa: E402
from k3snet.planner import plan  # noqa: E402
from k3snet.testing.k3s import NODE_V4, NODE_V6  # noqa: E402

DESIRED = State(owned=[
    MasqueradeRule("10.50.0.0/16", destination="192.168.2.0/24", out_interface="eth0",
                   random_fully=True),
    SnatRule("10.50.0.0/16", destination="198.51.100.0/24",
             exclude=["198.51.100.0/28", "198.51.100.64/26"], to_address="192.168.1.5"),
    MasqueradeRule("10.99.0.0/16", exclude=["10.0.0.0/8"]),
    MasqueradeRule("10.51.0.0/16", destination="192.168.2.0/24"),
    MasqueradeRule("10.52.0.0/24", destination="192.168.3.0/24"),
    ForwardRule("10.50.0.0/16", "192.168.2.0/24", in_interface="cni0", out_interface="eth0"),
    ForwardRule("10.51.0.0/16", "192.168.2.0/24"),
    MasqueradeRule("fd42:50::/56", destination="fd01:2::/64", out_interface="eth0"),
    ForwardRule("fd42:50::/56", "fd01:2::/64"),
])


def tool(mode: str, family: int, kind: str) -> str:
    return f"{'ip' if family == 4 else 'ip6'}tables-{mode}-{kind}"


def main() -> int:
    (HERE / "desired.json").write_text(json.dumps(DESIRED.to_dict(), indent=1) + "\n")
    for mode in ("nft", "legacy"):
        with temporary_netns("rec") as ns:
            for family, text in ((4, NODE_V4), (6, NODE_V6)):
                run_in(ns, [tool(mode, family, "restore"), "--noflush", "-w"], input_text=text)
            for family in (4, 6):
                saved = run_in(ns, [tool(mode, family, "save")]).stdout
                (HERE / f"{mode}-foreign-v{family}.save").write_text(saved)
            with IptablesBackend(ns, mode=mode) as backend:
                backend.apply(plan(backend.observe(), DESIRED))
            for family in (4, 6):
                saved = run_in(ns, [tool(mode, family, "save")]).stdout
                (HERE / f"{mode}-v{family}.save").write_text(saved)
    return 0


if __name__ == "__main__":
    sys.exit(main())
