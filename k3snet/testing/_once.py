"""Strategies made once per distinct arguments, for the composites of :mod:`k3snet.testing`.

Strategies are immutable values. Hypothesis checks a strategy (validate, is_empty, its
recursion) the first time it draws from it, so a composite that made ``st.sampled_from``,
``st.none() | ...`` or ``st.lists`` inside its draw paid that check for every object it
drew: most of a draw's cost. Each one here is made once and reused.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

__all__ = ["lists_of", "maybe", "pick"]


def pick(values: Sequence[Any]) -> SearchStrategy[Any]:
    """``st.sampled_from(values)``, made once per distinct tuple of values (and of their
    types: ``(0,)`` and ``(False,)`` are equal tuples)."""
    picked = tuple(values)
    return _sampled(picked, tuple(map(type, picked)))


@functools.lru_cache(maxsize=4096)
def _sampled(values: tuple[Any, ...], _types: tuple[type, ...]) -> SearchStrategy[Any]:
    return st.sampled_from(values)


@functools.lru_cache(maxsize=1024)
def maybe(strategy: SearchStrategy[Any]) -> SearchStrategy[Any]:
    """``None`` or a value of ``strategy``."""
    return st.none() | strategy


@functools.lru_cache(maxsize=1024)
def lists_of(strategy: SearchStrategy[Any], min_size: int, max_size: int,
             ) -> SearchStrategy[list[Any]]:
    """``st.lists(strategy, min_size=min_size, max_size=max_size)``."""
    return st.lists(strategy, min_size=min_size, max_size=max_size)
