"""The lab's helper programs start under the strictest warning filter a test run may set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from k3snet.lab import NODE_ADDRESSES, SeedLab, seed


@pytest.mark.parametrize("module", ["k3snet.lab._echo_server", "k3snet.lab._probe"])
def test_a_lab_program_starts_when_warnings_are_errors(module: str) -> None:
    # k3snet.lab imported the echo server with the seed lab, so `python -m` ran a module
    # already imported: runpy's RuntimeWarning, fatal under PYTHONWARNINGS=error (which
    # the lab's server inherits), and SeedLab.create() failed "did not start listening".
    done = subprocess.run([sys.executable, "-W", "error", "-m", module, "--help"],
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:")


@pytest.mark.lab
@pytest.mark.kernel
@pytest.mark.usefixtures("require_root")
def test_a_probe_imports_no_k3snet_module_only_the_standard_library(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each probe ran `python -m k3snet.lab._probe`: k3snet and the lab (attrs, the seed
    # lab) imported first, several times the CPU time of the exchange itself, for every
    # probe of every lab test. A k3snet that fails to import, first on the probe's path
    # (the lab's PYTHONPATH, the working directory), shows whether the probe imports any.
    broken = tmp_path / "k3snet"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('the probe imported k3snet')\n")
    with SeedLab.create() as lab:
        monkeypatch.setattr(seed, "_IMPORT_ROOT", str(tmp_path))
        monkeypatch.chdir(tmp_path)
        probe = lab.node_probe(4)
    assert probe.ok, probe.error
    assert probe.source_seen == NODE_ADDRESSES[4]
