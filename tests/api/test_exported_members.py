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
    # dir(): k3snet loads its names lazily (PEP 562), and lists them in __dir__.
    public = {
        n for n in dir(package)
        if not n.startswith("_") and not isinstance(getattr(package, n), types.ModuleType)
        and n != "TYPE_CHECKING"
    }
    # MutantDict: mutmut's trampoline header defines it in every module it mutates.
    assert set(package.__all__) - {"__version__", "strategies"} == public - {
        "annotations", "MutantDict"}


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


def test_every_lazy_name_resolves_and_import_k3snet_loads_nothing_else() -> None:
    code = ("import sys, k3snet\n"
            "print(sorted(m for m in sys.modules if m.startswith('k3snet')))\n"
            "for name in k3snet.__all__: getattr(k3snet, name)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "['k3snet', 'k3snet._version']"


def test_converge_is_the_function_even_after_its_module_loads() -> None:
    code = ("import k3snet.converge, sys\n"
            "import k3snet\n"
            "assert callable(k3snet.converge) and k3snet.converge.__name__ == 'converge'\n"
            "assert sys.modules['k3snet.converge'].compile_for\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_cli_and_nftables_backend_cold_import_leaves_rare_readers_unloaded() -> None:
    """docs/performance.md's cold import (216 modules): the notrack of one protocol's
    warnings (k3snet.backends.untracked) load only when a read meets one."""
    code = ("import sys, k3snet.cli, k3snet.backends.nftables.backend\n"
            "print('k3snet.backends.untracked' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
