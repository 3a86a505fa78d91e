"""Record the x_tables blobs the root-free tests of iptables-legacy's change token read.

Run as root from the repository root (only when the recorded node changes)::

    .venv/bin/python tests/data/iptables/record_xtables.py

In a fresh lab namespace (deleted afterwards), ``legacy-v4.save`` and
``legacy-v6.save`` (a K3s node with k3snet's chains) are restored with packet and
byte counters on every rule, as traffic would leave them; then the filter and
nat tables of both families are read as the token reads them
(:func:`k3snet.backends.iptables.xtables.fetch_table`, counters included) and
written to ``xtables.json``: per table, the info after the name and the entries,
in hex. Nothing is done in the root namespace.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from k3snet.backends.iptables.xtables import (  # noqa: E402 - after the path setup
    ENTRIES_AT,
    LAYOUTS,
    TABLES,
    fetch_table,
)
from k3snet.backends.netns import NetnsRunner  # noqa: E402
from k3snet.lab.netns import run_in, temporary_netns  # noqa: E402


def with_counters(text: str) -> str:
    """``text`` with ``[packets:bytes]`` before every rule, all different and not zero."""
    lines = []
    for n, line in enumerate(text.splitlines(), start=1):
        lines.append(f"[{n}:{n * 84}] {line}" if line.startswith("-A ") else line)
    return "\n".join(lines) + "\n"


def read_all() -> dict[str, dict[str, str]]:
    recorded = {}
    for layout in LAYOUTS:
        with socket.socket(layout.af, socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
            for table in TABLES:
                info, blob = fetch_table(sock, layout, table)
                recorded[f"{layout.family} {table}"] = {
                    "info": info.hex(), "entries": blob[ENTRIES_AT:].hex()}
    return recorded


def main() -> int:
    with temporary_netns("rec") as ns:
        for family in (4, 6):
            text = (HERE / f"legacy-v{family}.save").read_text()
            tool = f"{'ip' if family == 4 else 'ip6'}tables-legacy-restore"
            run_in(ns, [tool, "--counters"], input_text=with_counters(text))
        with NetnsRunner(ns) as runner:
            recorded = runner.call(read_all)
    (HERE / "xtables.json").write_text(json.dumps(recorded, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
