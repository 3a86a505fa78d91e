"""``make deps`` installs the system packages that are not installed, as dpkg says.

Run against a dpkg database of our own (``DPKG_ADMINDIR``) and an ``apt-get`` that only
writes down what it was asked, then fails, so nothing is installed and the recipe stops
before it makes a venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# No interpreter: the recipe stops where it would make the venv (and the Makefile, finding
# no Python.h for it, asks for python3-dev too).
NO_PYTHON = "PYTHON=false"

pytestmark = pytest.mark.skipif(
    shutil.which("make") is None or shutil.which("dpkg-query") is None,
    reason="needs make and dpkg-query",
)


def _entry(package: str, status: str) -> str:
    return (f"Package: {package}\nStatus: {status}\nPriority: optional\nSection: net\n"
            f"Installed-Size: 1\nMaintainer: k3snet tests <tests@example.org>\n"
            f"Architecture: all\nVersion: 1.0\nDescription: {package}\n stand-in\n\n")


def _outside_make() -> dict[str, str]:
    """Our environment without the flags and variables of a `make test` running this suite."""
    outer = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}
    return {key: value for key, value in os.environ.items() if key not in outer}


def _apt_packages() -> list[str]:
    shown = subprocess.run(["make", "-s", "-C", str(ROOT), "--eval",
                            "show-apt-packages:; @echo $(APT_PACKAGES)", "show-apt-packages",
                            NO_PYTHON],
                           env=_outside_make(), capture_output=True, text=True, check=True,
                           timeout=60)
    return shown.stdout.split()


def test_a_package_removed_but_not_purged_is_installed_again(tmp_path: Path) -> None:
    # `apt-get remove nftables` leaves its config files, and `dpkg -s nftables` exits 0
    # then: make deps took it for installed and never installed it again.
    packages = _apt_packages()
    assert "nftables" in packages
    admin = tmp_path / "dpkg"
    (admin / "info").mkdir(parents=True)
    (admin / "updates").mkdir()
    (admin / "status").write_text("".join(
        _entry(p, "deinstall ok config-files" if p == "nftables" else "install ok installed")
        for p in packages))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    asked = tmp_path / "apt-get.log"
    (bin_dir / "apt-get").write_text(
        f'#!/bin/sh\necho "$*" >> {asked}\n[ "$1" = update ] && exit 0\nexit 1\n')
    (bin_dir / "sudo").write_text('#!/bin/sh\nexec "$@"\n')  # when the test is not root
    for tool in ("apt-get", "sudo"):
        (bin_dir / tool).chmod(0o755)
    env = {**_outside_make(), "DPKG_ADMINDIR": str(admin),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["make", "-C", str(ROOT), "deps", f"VENV={tmp_path / 'venv'}", NO_PYTHON],
        env=env, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode != 0  # our apt-get refused the install: nothing went further
    assert "Installing missing system packages: nftables\n" in done.stdout, done.stdout
    lines = asked.read_text().splitlines() if asked.exists() else []
    assert lines[-1:] == ["install -y --no-install-recommends nftables"], lines
    assert not (tmp_path / "venv").exists()
