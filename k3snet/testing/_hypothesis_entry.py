"""Hypothesis plugin entry point: registers k3snet's type strategies.

Hypothesis calls :func:`_register_strategies` when it is imported, so
``st.from_type(k3snet.Route)`` works in any test suite that has k3snet installed.
"""

from __future__ import annotations


def _register_strategies() -> None:
    # Imported here: the plugin runs at hypothesis import time and must stay cheap
    # and free of import cycles.
    from k3snet.testing import strategies  # noqa: PLC0415

    strategies.register_type_strategies()
