"""Hypothesis plugin entry point: registers k3snet's type strategies.

Hypothesis calls :func:`_register_strategies` while it is being imported, so
``st.from_type(k3snet.Route)`` works in any test suite that has k3snet installed.
The strategies module itself imports hypothesis, so it is only imported when a
strategy is first resolved.
"""

from __future__ import annotations

import functools
from typing import Any


def _resolve(registered: type[Any], thing: type[Any]) -> Any:
    """The strategy for ``thing``: ``registered`` itself or a base class of it.

    Hypothesis also asks a registered type's callable for every base class of it that a
    test resolves: ``st.from_type(object)``, ``Hashable``, a parameter annotated
    ``object``. Those are the user's business (``NotImplemented``: installing k3snet
    changes nothing there); a k3snet base (``NetObject``, as in ``Change.before``)
    resolves to its k3snet kinds.
    """
    if thing is not registered and not getattr(thing, "__module__", "").startswith("k3snet."):
        return NotImplemented
    from k3snet.testing import strategies  # noqa: PLC0415 - see the module docstring

    return strategies.for_type(registered)


def _register_strategies() -> None:
    from hypothesis import strategies as st  # noqa: PLC0415 - hypothesis is importing us

    from k3snet.model import ForwardRule, MasqueradeRule, Route, SnatRule, State, Sysctl  # noqa: PLC0415
    from k3snet.spec import Spec  # noqa: PLC0415

    for cls in (Route, MasqueradeRule, SnatRule, ForwardRule, Sysctl, State, Spec):
        st.register_type_strategy(cls, functools.partial(_resolve, cls))
