"""The spec's ``backends:`` options, checked against what each backend declares.

Reading the spec only checks their shape (names, option names); whether a
backend *has* an option is known to the backend alone (its constructor's
parameters), so the caller passes what backends declare
(:func:`k3snet.backends.registry.backend_options`): the spec never imports a
backend. The CLI and the agent check where backends are about to be built,
and ``k3snet validate`` checks them all.
"""

from __future__ import annotations

import functools
import inspect
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from k3snet.errors import BackendNotFoundError, BackendUnavailableError, Problem, SpecError
from k3snet.spec.model import Spec
from k3snet.spec.validate import holds_nul as _holds_nul

__all__ = ["backend_option_problems", "check_backend_options", "relative_path_problems",
           "spec_backend_options"]

Declared = Callable[[str], Mapping[str, Any]]
"""``name -> the options backend name declares`` (empty: it takes any ``**options``)."""


def spec_backend_options(spec: Spec, name: str) -> dict[str, Any]:
    """The options ``spec`` gives backend ``name`` ({} when none)."""
    for backend, options in spec.backend_options:
        if backend == name:
            return dict(options)
    return {}


Values = Callable[[str, Mapping[str, Any]], Iterable[tuple[str, str]]]
"""``(name, options) -> (option, why)`` for each option backend ``name`` refuses for
its value (:func:`k3snet.backends.registry.option_problems`)."""

Kinds = Callable[[str, Mapping[str, Any]], Iterable[str] | None] | Mapping[str, Iterable[str]]
"""``(name, options) -> the kinds backend name, built with the spec's options for it,
manages`` (``None``: not known without building it;
:func:`k3snet.backends.registry.declared_capabilities`), always called with both
arguments, positionally; or a mapping ``name -> kinds`` (a name it does not hold: not
known; a mapping that is also callable is called). A callable that cannot take both
(``name -> kinds``, the form before options were given) and a mapping's bound ``get``
are deprecated: the first is called with the name alone, the second read as its
mapping, each with a :class:`DeprecationWarning`."""


Paths = Callable[[str], Iterable[str]]
"""``name -> the options of backend name that name a file or directory``
(:func:`k3snet.backends.registry.path_options`)."""


def backend_option_problems(spec: Spec, declared: Declared,
                            names: Iterable[str] | None = None, *,
                            paths: Paths | None = None,
                            values: Values | None = None,
                            kinds: Kinds | None = None) -> list[Problem]:
    """Every option of ``spec`` a backend does not declare (path ``backends.NAME.KEY``).

    ``names``: the backends in use (default: the spec's own and those it gives
    options to); an unknown name is a problem too. A backend that cannot be
    loaded here (a missing optional dependency) is not judged: building it says why.
    ``paths``: with it, a relative path given to an option naming a file or directory
    is a problem too (:func:`relative_path_problems`). ``values``: with it, an option
    value the backend refuses is a problem too, found by the backend's own checks
    without building it (``table: "k3s net"``, ``timeout: "10"``): they passed
    ``k3snet validate`` and failed on every node. ``kinds``: with it, two of the spec's
    ``backends`` managing one kind are a problem at ``backends`` (a spec gives each
    backend every kind it manages; only the command line's ``--backend NAME:KINDS``
    splits them), which plan, apply and the agent refuse on every run; ``kinds(name,
    options)`` is called with the spec's options of each backend, or ``kinds`` is a
    mapping ``name -> kinds`` (:data:`Kinds`).
    """
    wanted = dict.fromkeys(names if names is not None else
                           (*spec.backends, *(n for n, _ in spec.backend_options)))
    problems = []
    for name in wanted:
        path = f"backends.{name}"
        try:
            known = declared(name)
        except BackendNotFoundError as exc:
            problems.append(Problem(path, str(exc)))
            continue
        except BackendUnavailableError:
            continue
        given = spec_backend_options(spec, name)
        if known:  # else the backend takes **options: nothing to check against
            problems += [Problem(f"{path}.{key}", f"unknown option; known: {', '.join(known)}")
                         for key in given if key not in known]
            if paths is not None:
                problems += relative_path_problems(spec, name, paths(name))
        if values is not None and given:
            # Those already found wrong (unknown, relative, a NUL) are not judged again.
            said = {p.path for p in problems}
            # The path names the option: "tables: route table must be ..." says it twice.
            problems += [Problem(f"{path}.{key}", why.removeprefix(f"{key}: "))
                         for key, why in values(name, given)
                         if f"{path}.{key}" not in said and not _holds_nul(given.get(key))]
    if kinds is not None:
        problems += _shared_kinds(spec.backends,
                                  functools.partial(_kinds_of, spec, _kinds_callable(kinds)))
    return problems


def _kinds_of(spec: Spec, kinds: Kinds, name: str) -> Iterable[str] | None:
    """``kinds`` of backend ``name`` with the spec's options for it (the memory backend's
    kinds are its ``capabilities`` option's)."""
    if callable(kinds):
        return kinds(name, spec_backend_options(spec, name))
    return kinds.get(name)


def _kinds_callable(kinds: Kinds) -> Kinds:
    """``kinds`` in one of its two forms: a mapping, or a callable called ``(name,
    options)``. Which form a callable has is never guessed from its parameters' names or
    defaults (``lambda name, options=None`` was taken for the name-alone form and never
    given the options); only the deprecated forms are turned into those: a mapping's
    bound ``get`` (which took the options for its ``default``: a backend it did not know
    "managed" its option names) into a reading of its mapping, and a callable that cannot be called
    with two positional arguments into one called with the name alone."""
    if not callable(kinds):  # a mapping; a callable one (a registry) is called, as before
        return kinds
    owner = getattr(kinds, "__self__", None)
    if isinstance(owner, Mapping) and getattr(kinds, "__name__", None) == "get":
        warnings.warn("kinds= given a mapping's get: give the mapping itself (name -> "
                      "kinds); a callable is called with (name, options)",
                      DeprecationWarning, stacklevel=3)
        # Read as its mapping, also when it is callable (a registry): as a mapping it is
        # called, (name, options), which its get never was.
        mapping = owner
        return lambda name, _options: mapping.get(name)
    try:
        signature = inspect.signature(kinds)
    except (TypeError, ValueError):  # no signature to read: called as documented
        return kinds
    if _binds(signature, "name", {}) or not _binds(signature, "name"):
        return kinds
    warnings.warn("kinds= given a callable of the name alone: it is called with (name, "
                  "options); give it a second parameter, or give a mapping name -> kinds",
                  DeprecationWarning, stacklevel=3)
    name_alone = cast("Callable[[str], Iterable[str] | None]", kinds)
    return lambda name, _options: name_alone(name)


def _binds(signature: inspect.Signature, *args: object) -> bool:
    try:
        signature.bind(*args)
    except TypeError:
        return False
    return True


def _shared_kinds(names: Iterable[str], kinds: Callable[[str], Iterable[str] | None]
                  ) -> list[Problem]:
    """A problem at ``backends`` for each two of ``names`` that manage a kind in common."""
    problems: list[Problem] = []
    seen: dict[str, frozenset[str]] = {}
    names = list(names)
    # A name given twice is two of that backend: plan, apply and the agent refuse it
    # ("two backends named 'netlink' would manage route"), whatever its kinds.
    problems += [Problem("backends", f"{name!r} is named {names.count(name)} times: a spec "
                         "gives each backend every kind it manages, so name it once")
                 for name in dict.fromkeys(names) if names.count(name) > 1]
    for name in dict.fromkeys(names):
        managed = kinds(name)
        if managed is None:
            continue
        managed = frozenset(managed)
        problems += [Problem("backends", f"both {other!r} and {name!r} would manage "
                             f"{', '.join(sorted(common))}: a spec gives each backend every "
                             "kind it manages, so keep one (plan, apply and the agent split "
                             "a backend's kinds with --backend NAME:KINDS)")
                     for other, theirs in seen.items() if (common := managed & theirs)]
        seen[name] = managed
    return problems


def relative_path_problems(spec: Spec, name: str, paths: Iterable[str]) -> list[Problem]:
    """A problem (path ``backends.NAME.KEY``) for each option of backend ``name`` among
    ``paths`` (those naming a file or directory) that ``spec`` gives a relative path.

    A relative ``state_dir`` named another directory from each working directory: an
    apply run from ``/root`` and one of cron from ``/`` kept the sysctl record in two
    places, and the second took the sysctl the first had taken over for a foreign one,
    never given back. ``$K3SNET_STATE_DIR`` is refused likewise.
    """
    given = spec_backend_options(spec, name)
    # "" too: Path("") is ".", the working directory. A Path given in Python as text.
    written = {key: os.fspath(value) for key in set(paths)
               if isinstance(value := given.get(key), (str, os.PathLike))}
    return [Problem(f"backends.{name}.{key}",
                    f"{value!r} is a relative path: it would name another place from each "
                    "working directory (an apply from elsewhere, the agent, cron); give an "
                    "absolute path")
            for key, value in sorted(written.items()) if not os.path.isabs(value)]


def check_backend_options(spec: Spec, declared: Declared, names: Iterable[str] | None = None,
                          *, source: str | None = None, paths: Paths | None = None,
                          values: Values | None = None, kinds: Kinds | None = None) -> None:
    """Raise one :class:`~k3snet.errors.SpecError` with every :func:`backend_option_problems`.

    ``declared``: ``name -> options``, usually
    :func:`k3snet.backends.registry.backend_options`; ``paths``, usually
    :func:`k3snet.backends.registry.path_options` (relative paths refused); ``values``,
    usually :func:`k3snet.backends.registry.option_problems` (values refused); ``kinds``,
    usually :func:`k3snet.backends.registry.declared_capabilities` (two backends of one
    kind refused).
    """
    # The deprecated forms of kinds= read here, so the warning names the caller's line.
    problems = backend_option_problems(spec, declared, names, paths=paths, values=values,
                                       kinds=None if kinds is None else _kinds_callable(kinds))
    if problems:
        raise SpecError(problems, source=source)
