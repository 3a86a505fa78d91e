"""What a cold process pays before any work: the CLI and the node backends import none of
the modules only some commands or some nodes read (issue 9: every ``k3snet apply`` from a
script or a cron job starts a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

# Each is loaded by the one path that needs it: a plan file of a cluster backend's
# (base64, binascii: its certificate authority), a spec that is no cached YAML (yaml),
# a cluster backend (kubernetes), doctor, the manifests' and boot files' renderers.
READ_BY_SOME = ("base64", "binascii", "yaml", "kubernetes", "k3snet.doctor",
                "k3snet.render.manifests", "k3snet.render.routes", "k3snet.render.sysctl")


def test_the_cold_cli_path_imports_none_of_the_modules_only_some_commands_read() -> None:
    code = ("import json, sys\n"
            "import k3snet.cli, k3snet.backends.nftables.backend, k3snet.backends.iptables,"
            " k3snet.backends.netlink\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120)
    loaded = set(json.loads(done.stdout))
    assert not loaded & set(READ_BY_SOME), sorted(loaded & set(READ_BY_SOME))
