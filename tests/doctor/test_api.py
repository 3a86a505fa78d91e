"""``k3snet.doctor``'s public API is exactly its ``__all__``, each name documented."""

from __future__ import annotations

import subprocess
import sys
import types

import k3snet.doctor


def test_all_lists_exactly_the_public_names() -> None:
    public = {n for n, v in vars(k3snet.doctor).items()
              if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    assert set(k3snet.doctor.__all__) == public - {"annotations"}


def test_every_public_name_has_a_docstring() -> None:
    for name in k3snet.doctor.__all__:
        assert getattr(k3snet.doctor, name).__doc__, name


def test_the_doctor_needs_only_attrs() -> None:
    code = ("import sys, k3snet.doctor\n"
            "heavy = {'yaml', 'hypothesis', 'pyroute2', 'nftables', 'iptc', 'kubernetes'}\n"
            "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
