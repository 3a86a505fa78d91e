"""The bytecode of the k3snet the tests import, made once a session (``tests/conftest.py``).

With ``PYTHONDONTWRITEBYTECODE=1`` set, a checkout never gets ``.pyc`` files, and every
process that imports k3snet compiles it from source again: each pytest-xdist worker and
each ``python -m k3snet`` a test starts (about 0.4 s of CPU for the CLI's imports).
``compile_package`` writes them whatever that variable says.

Checked-hash ``.pyc`` files (PEP 552), not the default timestamp ones: a timestamp
``.pyc`` is taken as current while the source's modification time, in whole seconds, and
its size are those it recorded, so an edit of the same size within the second of the
previous one (a comparison turned around to see a test fail, put back at once) ran the
old code; and ``py_compile`` takes the date after it read and compiled the source, so an
edit meanwhile was recorded as compiled. A checked-hash ``.pyc`` holds a hash of the
source it was compiled from, and every import compares it with the source's bytes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import py_compile
from pathlib import Path

_CHECKED_HASH = (0b11).to_bytes(4, "little")
"""The flags of a checked-hash ``.pyc`` (PEP 552)."""


def compile_imported(package: str, checkout: Path) -> None:
    """Compile the ``package`` imports would find, if it lies in ``checkout``.

    A copy installed elsewhere (site-packages, a system's package) has the ``.pyc`` files
    its installer made, and is its owner's: this never rewrites them."""
    spec = importlib.util.find_spec(package)
    for place in list(spec.submodule_search_locations or []) if spec is not None else []:
        if Path(place).resolve().is_relative_to(checkout.resolve()):
            compile_package(Path(place))


def compile_package(place: Path) -> None:
    """Compile each module under ``place`` whose ``.pyc`` is missing or not of its source.

    Up to date, it reads each source and the first 16 bytes of its ``.pyc``. A file it
    cannot write (a read-only checkout) or compile is left out: its module compiles at
    import, as with no ``.pyc``."""
    for directory, subdirectories, files in os.walk(place):  # symbolic links not followed
        subdirectories[:] = [d for d in subdirectories if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                _compile(Path(directory, name))


def _compile(source: Path) -> None:
    cache = importlib.util.cache_from_source(str(source))
    try:
        expected = (importlib.util.MAGIC_NUMBER + _CHECKED_HASH
                    + importlib.util.source_hash(source.read_bytes()))
        with open(cache, "rb") as made:
            if made.read(16) == expected:
                return
    except OSError:
        pass
    with contextlib.suppress(OSError, py_compile.PyCompileError):
        py_compile.compile(str(source), cfile=cache, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
