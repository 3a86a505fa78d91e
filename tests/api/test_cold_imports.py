"""What a cold process pays before any work: the CLI and the node backends import none of
the modules only some commands or some nodes read (issue 9: every ``k3snet apply`` from a
script or a cron job starts a fresh interpreter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Each is loaded by the one path that needs it: a plan file of a cluster backend's
# (base64, binascii: its certificate authority), a spec that is no cached YAML (yaml),
# a cluster backend (kubernetes, k3snet.kube: the agent's options too), doctor, the
# manifests' and boot files' renderers, the near-miss hints of a misspelt backend name
# or ip-masq-agent key (difflib), a plan file (k3snet.planfile: plan --out, apply FILE).
ROOT = Path(__file__).resolve().parents[2]

READ_BY_SOME = ("base64", "binascii", "difflib", "yaml", "kubernetes", "k3snet.doctor",
                "k3snet.render.manifests", "k3snet.render.routes", "k3snet.render.sysctl",
                "k3snet.kube", "k3snet.planfile")


def test_the_cold_cli_path_imports_none_of_the_modules_only_some_commands_read() -> None:
    code = ("import json, sys\n"
            "import k3snet.cli, k3snet.backends.nftables.backend, k3snet.backends.iptables,"
            " k3snet.backends.netlink\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120)
    loaded = set(json.loads(done.stdout))
    assert not loaded & set(READ_BY_SOME), sorted(loaded & set(READ_BY_SOME))


# The modules a cold ``import k3snet.cli`` leaves loaded, Python's own start included
# (Python 3.11): each one more is read, unmarshalled and run by every command (issue 9).
# 200 before the agent's Kubernetes module and the plan files' left the cold path.
CLI_MODULES = 199


def test_the_cold_cli_imports_no_more_modules_than_its_budget() -> None:
    code = "import sys, k3snet.cli\nprint(len(sys.modules))\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120, env=env)
    assert int(done.stdout) <= CLI_MODULES


def _imported(code: str) -> set[str]:
    """The modules ``python -X importtime -c code`` imports (Python's start included)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True,
                          text=True, check=True, timeout=120, env=env)
    return {line.rpartition("|")[2].strip() for line in done.stderr.splitlines()
            if line.startswith("import time:") and "self [us]" not in line}


def test_version_loads_no_module_beyond_pythons_start_but_k3snets_own() -> None:
    """``k3snet --version`` (issue 9: <= 150 ms) answers before the CLI loads; ``typing``
    (and collections, re, enum, contextlib with it: 22 modules) came in through
    ``k3snet._stdout``'s ``from typing import TYPE_CHECKING``."""
    start = _imported("pass")
    version = _imported("import sys; sys.argv = ['k3snet', '--version']\n"
                        "from k3snet.__main__ import main; main()")
    extra = {name for name in version - start
             if name != "k3snet" and not name.startswith("k3snet.")}
    assert extra <= {"__future__", "types"}, sorted(extra)


# k3snet's own regular expressions the CLI compiles at import (the backends' parsers,
# imported with the backend a command names, are not counted): the ones every command
# reads (an interface name, a sysctl's components, an IPv4 prefix, which k3snet.model.nat
# parses at import). Every other is a lazy_pattern, compiled when first used (issue 9:
# 58 were compiled at import, ~15-20 ms of each cold run).
EAGER_PATTERNS = 4


def _compiled_at_import(module: str, *, after: str = "") -> list[str]:
    """Where k3snet compiles a regular expression (``file:line pattern``) while a fresh
    process imports ``module``, ``after`` imported first (its patterns not counted)."""
    code = ("import json, re, sys\n"
            + (f"import {after}\n" if after else "")
            + "compile, sites = re._compile, []\n"
            "def counted(pattern, flags):\n"
            "    frame = sys._getframe(1)\n"
            "    while frame.f_code.co_filename == re.__file__:\n"
            "        frame = frame.f_back\n"
            "    if '/k3snet/' in frame.f_code.co_filename:\n"
            "        sites.append(f'{frame.f_code.co_filename}:{frame.f_lineno} {pattern!r}')\n"
            "    return compile(pattern, flags)\n"
            "re._compile = counted\n"
            f"import {module}\n"
            "print(json.dumps(sites))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120, env=env)
    sites: list[str] = json.loads(done.stdout)
    return sites


def test_the_cold_cli_path_compiles_only_the_regular_expressions_every_command_reads() -> None:
    sites = _compiled_at_import("k3snet.cli")
    assert len(sites) <= EAGER_PATTERNS, sites


# k3snet's own regular expressions each node backend compiles at import, beyond the
# CLI's: iptables' three comment lines of a save, which every read parses (every save
# begins with a comment). Every other is a lazy_pattern: a cold one-change apply of
# nftables compiled 26 at import and used one, of iptables 40 and used four (issue 9).
BACKEND_EAGER_PATTERNS = {"k3snet.backends.netlink": 0, "k3snet.backends.nftables": 0,
                          "k3snet.backends.iptables": 3}


@pytest.mark.parametrize("module", sorted(BACKEND_EAGER_PATTERNS))
def test_a_node_backend_compiles_at_import_only_the_regular_expressions_every_read_uses(
        module: str) -> None:
    sites = _compiled_at_import(module, after="k3snet.cli")
    assert len(sites) <= BACKEND_EAGER_PATTERNS[module], sites
