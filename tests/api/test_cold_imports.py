"""What a cold process pays before any work: the CLI and the node backends import none of
the modules only some commands or some nodes read (issue 9: every ``k3snet apply`` from a
script or a cron job starts a fresh interpreter)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
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
# 200 before the agent's Kubernetes module and the plan files' left the cold path, 199
# before ctypes (and struct, ctypes._endian ...: 5) did: only entering a namespace uses it.
CLI_MODULES = 194


def test_the_cold_cli_imports_no_more_modules_than_its_budget() -> None:
    code = "import sys, k3snet.cli\nprint(len(sys.modules))\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120, env=env)
    assert int(done.stdout) <= CLI_MODULES


def test_the_cli_and_the_netlink_backend_import_ctypes_only_to_enter_a_namespace() -> None:
    """``k3snet.backends.netns`` calls libc's ``setns`` through :mod:`ctypes` (~4 ms of CPU
    to import after the CLI, 5 modules); a cold command in the node's own namespace enters
    none. The nftables and iptables backends load libnftables and read x_tables through
    it: theirs."""
    code = ("import json, sys\n"
            "import k3snet.cli, k3snet.backends.netlink\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120, env=env)
    assert "ctypes" not in json.loads(done.stdout)


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


# Imported after the CLI by every command that reads a spec: the spec cache. Its entries'
# names are checked only when a miss prunes the directory (a hit never lists it), so its
# pattern is a lazy_pattern too (issue 9).
SPEC_PATH_EAGER_PATTERNS = {"k3snet.spec.cache": 0}


@pytest.mark.parametrize("module", sorted(SPEC_PATH_EAGER_PATTERNS))
def test_the_spec_cache_compiles_no_regular_expression_at_import(module: str) -> None:
    sites = _compiled_at_import(module, after="k3snet.cli")
    assert len(sites) <= SPEC_PATH_EAGER_PATTERNS[module], sites


def _compiles(monkeypatch: pytest.MonkeyPatch, run: Callable[[], object]) -> list[str]:
    """The patterns ``re`` compiles or looks up in its cache while ``run`` runs: every
    ``re.compile``, ``re.split`` ... call goes through ``re._compile``."""
    compile_, seen = re._compile, []  # type: ignore[attr-defined]

    def counted(pattern: object, flags: object) -> object:
        seen.append(repr(pattern))
        return compile_(pattern, flags)

    monkeypatch.setattr(re, "_compile", counted)
    run()
    monkeypatch.undo()
    return seen


def test_pruning_a_kept_directory_compiles_no_pattern_per_call(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``prune(..., temporary=)`` named its temporary files with a pattern compiled for each
    call (the nftables kept read and the spec cache prune after each write)."""
    from k3snet._kept import prune  # noqa: PLC0415 - the module under test

    stale = tmp_path / ".spec-0123456789abcdef.tmp"
    fresh = tmp_path / ".spec-fedcba9876543210.tmp"
    other = tmp_path / ".spec-0123456789ABCDEF.tmp"  # not a name write_atomic gives
    for path in (stale, fresh, other):
        path.write_text("")
    os.utime(stale, (0, 0))
    os.utime(other, (0, 0))
    seen = _compiles(monkeypatch, lambda: prune(tmp_path, tmp_path / "keep.json", 4,
                                                temporary=".spec-"))
    assert seen == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, other.name])


def test_telling_a_secret_sysctl_compiles_no_pattern_per_call(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``is_secret`` (every sysctl a plan or a message shows) split the name with
    ``re.split`` at each call."""
    from k3snet.model.sysctl import is_secret  # noqa: PLC0415 - the module under test

    names = ("net.ipv6.conf.eth0.stable_secret", "net/ipv6/conf/eth0.100/stable_secret",
             "net.ipv6.conf.eth0.forwarding", "net.ipv4.ip_forward",
             "net.ipv4.conf.all.stable_secret")
    answers: list[bool] = []
    seen = _compiles(monkeypatch, lambda: answers.extend(map(is_secret, names)))
    assert seen == []
    assert answers == [True, True, False, False, False]
