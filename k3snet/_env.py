"""Switches read from the environment (``K3SNET_DEBUG``, ``K3SNET_FULL_EXIT``, the cache
switches): one spelling of what turns one off."""

from __future__ import annotations

import os

_OFF = frozenset({"0", "off", "no", "false"})


def env_switch(variable: str, *, default: bool) -> bool:
    """Whether environment variable ``variable`` turns its switch on: ``0``, ``off``,
    ``no`` and ``false`` (any case) turn it off, any other text on, and ``default``
    when it is unset or empty."""
    value = os.environ.get(variable, "").strip().lower()
    if not value:
        return default
    return value not in _OFF
