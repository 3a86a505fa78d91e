"""Regular expressions compiled when first used, not when their module is imported.

A cold ``k3snet apply`` imports ~60 module-level patterns and uses a handful (the spec
comes from its cache, the node backends read no Kubernetes names, no YAML text, no Go
durations): compiling them all cost ~15-20 ms of each cold process (issue 9).
:func:`lazy_pattern` keeps the module-level constant and its call sites as they were;
the first call of a method compiles the pattern with :func:`re.compile` and puts the
compiled pattern's own methods on the instance, so every later call is the compiled
pattern's, looked up once more. A method taken before the first call (``match =
_LINE.match`` ahead of a loop) is the lazy one, which looks the compiled pattern up at
each call, for good: a loop takes ``_LINE.compiled().match`` instead
(tests/api/test_lazy_pattern.py finds any method taken without being called).
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Any, AnyStr, Generic

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["LazyPattern", "lazy_pattern"]

_METHODS = ("fullmatch", "match", "search", "sub", "subn", "split", "findall", "finditer")


class LazyPattern(Generic[AnyStr]):
    """``re.compile(pattern, flags)``, compiled by the first call of one of its methods;
    ``pattern`` is the source text, as :attr:`re.Pattern.pattern`."""

    def __init__(self, pattern: AnyStr, flags: int = 0) -> None:
        self.pattern: AnyStr = pattern
        self._flags = flags

    def compiled(self) -> re.Pattern[AnyStr]:
        """The compiled pattern (compiled once; its methods then replace the ones below)."""
        compiled = re.compile(self.pattern, self._flags)
        methods = {name: getattr(compiled, name) for name in _METHODS}
        self.__dict__.update(methods, compiled=lambda: compiled)
        return compiled

    def fullmatch(self, string: AnyStr, pos: int = 0,
                  endpos: int = sys.maxsize) -> re.Match[AnyStr] | None:
        return self.compiled().fullmatch(string, pos, endpos)

    def match(self, string: AnyStr, pos: int = 0,
              endpos: int = sys.maxsize) -> re.Match[AnyStr] | None:
        return self.compiled().match(string, pos, endpos)

    def search(self, string: AnyStr, pos: int = 0,
               endpos: int = sys.maxsize) -> re.Match[AnyStr] | None:
        return self.compiled().search(string, pos, endpos)

    def sub(self, repl: AnyStr | Callable[[re.Match[AnyStr]], AnyStr], string: AnyStr,
            count: int = 0) -> AnyStr:
        return self.compiled().sub(repl, string, count)

    def subn(self, repl: AnyStr | Callable[[re.Match[AnyStr]], AnyStr], string: AnyStr,
             count: int = 0) -> tuple[AnyStr, int]:
        return self.compiled().subn(repl, string, count)

    def split(self, string: AnyStr, maxsplit: int = 0) -> list[AnyStr | Any]:
        return self.compiled().split(string, maxsplit)

    def findall(self, string: AnyStr, pos: int = 0, endpos: int = sys.maxsize) -> list[Any]:
        return self.compiled().findall(string, pos, endpos)

    def finditer(self, string: AnyStr, pos: int = 0,
                 endpos: int = sys.maxsize) -> Iterator[re.Match[AnyStr]]:
        return self.compiled().finditer(string, pos, endpos)

    def __reduce__(self) -> tuple[type[LazyPattern[AnyStr]], tuple[AnyStr, int]]:
        """Pickled as :class:`re.Pattern` is, by its text and flags: compiled or not (the
        compiled one's instance holds a local function, which pickle refuses)."""
        return LazyPattern, (self.pattern, self._flags)

    def __repr__(self) -> str:
        return f"lazy_pattern({self.pattern!r}, {self._flags!r})"


def lazy_pattern(pattern: AnyStr, flags: int = 0) -> LazyPattern[AnyStr]:
    """A :class:`LazyPattern`: ``re.compile(pattern, flags)`` when first used."""
    return LazyPattern(pattern, flags)
