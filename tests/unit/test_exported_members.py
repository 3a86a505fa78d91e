"""The public API is exactly what ``__all__`` says (httpx's test_exported_members)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types

import pytest

import k3snet

# Packages whose __init__ only re-exports: every public name there is API.
PUBLIC_PACKAGES = ["k3snet", "k3snet.model", "k3snet.backends", "k3snet.testing", "k3snet.lab",
                   "k3snet.agent"]


@pytest.mark.parametrize("name", PUBLIC_PACKAGES)
def test_all_lists_exactly_the_public_names(name: str) -> None:
    package = importlib.import_module(name)
    public = {
        n for n, value in vars(package).items()
        if not n.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(package.__all__) - {"__version__", "strategies"} == public - {"annotations"}


def test_every_public_name_has_a_docstring() -> None:
    for name in k3snet.__all__:
        obj = getattr(k3snet, name)
        if callable(obj) and not isinstance(obj, type(k3snet.K3SNET_ROUTE_PROTOCOL)):
            assert obj.__doc__, f"k3snet.{name} has no docstring"


def test_import_k3snet_needs_only_attrs() -> None:
    """No optional dependency is imported by ``import k3snet``."""
    code = (
        "import sys, k3snet\n"
        "heavy = {'yaml', 'hypothesis', 'pyroute2', 'nftables', 'iptc', 'kubernetes'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
