"""The environment variables k3snet reads: one reading of a value (a variable set empty
or to spaces alone is unset) and one spelling of what turns a switch off
(``K3SNET_DEBUG``, ``K3SNET_FULL_EXIT``, the cache switches)."""

from __future__ import annotations

import os

# Not typing.TYPE_CHECKING nor collections.abc at run time: `k3snet --version` loads this
# module (k3snet/__main__.py's end) and must load nothing beyond Python's start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

_OFF = frozenset({"0", "off", "no", "false"})


def env_value(variable: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of environment variable ``variable`` in ``environ`` (default:
    ``os.environ``) as it is set, or ``None`` when it is unset, empty or only whitespace
    (a template's ``value: ""`` or ``value: " "``, a Helm value left blank)."""
    value = (os.environ if environ is None else environ).get(variable)
    return value if value and not value.isspace() else None


def env_switch(variable: str, *, default: bool) -> bool:
    """Whether environment variable ``variable`` turns its switch on: ``0``, ``off``,
    ``no`` and ``false`` (any case) turn it off, any other text on, and ``default``
    when it is unset, empty or only whitespace."""
    value = os.environ.get(variable, "").strip().lower()
    if not value:
        return default
    return value not in _OFF
