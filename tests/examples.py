"""Example counts of the tests that name their own, in proportion to the hypothesis profile.

A test that wants more or fewer examples than the profile gives (a cheap property drawn
from a large space, a kernel test whose every example costs a namespace's work) names
its count at 300 profile examples, ``examples(n)``, and runs ``n`` scaled by the active
profile's ``max_examples`` (``tests/conftest.py``): a third of ``n`` in ``ci`` (100),
two thirds in ``dev`` (200), a sixth in ``lowest`` and ``mutation`` (50), ``n * 50 / 3``
in ``thorough`` (5000). Never fewer than ``floor``: 10 by default, more where fewer
examples would not reach the test's cases (its comment says which).
"""

from __future__ import annotations

from hypothesis import settings

SCALE = 300
"""The profile's ``max_examples`` at which a test runs the ``n`` it names."""


def examples(n: int, floor: int = 10) -> int:
    """``n`` examples scaled by the active profile (``n`` at ``SCALE``), at least ``floor``.

    Read when the test module is imported, after ``tests/conftest.py`` loaded the profile.
    """
    return max(floor, n * settings().max_examples // SCALE)
