"""Find backends by name, lazily, through the ``k3snet.backends`` entry-point group.

A third-party package adds a backend without touching k3snet::

    # its pyproject.toml
    [project.entry-points."k3snet.backends"]
    mybackend = "my_package.backend:MyBackend"

Nothing is imported until a backend is asked for by name, so a missing optional
dependency (``pyroute2``, ``nftables`` ...) only matters to whoever uses it.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import pathlib
import re
import typing
from collections.abc import Iterable, Mapping
from typing import Any, cast

from k3snet._regex import lazy_pattern
from k3snet.backends.base import Backend, BackendFactory
from k3snet.errors import (
    BackendNotFoundError,
    BackendOptionError,
    BackendUnavailableError,
    K3snetError,
)

__all__ = ["ENTRY_POINT_GROUP", "available_backends", "backend_options", "create_backend",
           "declared_capabilities", "load_backend", "option_defaults", "option_problems",
           "path_options", "refuse_undeclared",
           "register_backend", "takes_any_option", "unregister_backend"]

ENTRY_POINT_GROUP = "k3snet.backends"
"""The entry-point group a package registers its backends in (docs/custom-backend.md)."""

# Built-ins, also reachable when k3snet runs from a source tree without its
# entry points installed. k3snet's own entry points name the same targets.
_BUILTIN: dict[str, tuple[str, str]] = {
    "memory": ("k3snet.backends.memory:MemoryBackend", ""),
    "netlink": ("k3snet.backends.netlink:NetlinkBackend", "netlink"),
    "nftables": ("k3snet.backends.nftables:NftablesBackend", "nftables"),
    "iptables": ("k3snet.backends.iptables:IptablesBackend", "iptables"),
    "flannel": ("k3snet.backends.flannel:FlannelBackend", "kube"),
    "calico": ("k3snet.backends.calico:CalicoBackend", "kube"),
    "cilium": ("k3snet.backends.cilium:CiliumBackend", "kube"),
}

_registered: dict[str, BackendFactory] = {}


# What `--backend NAME:KINDS`, `--backend-opt NAME.KEY=VALUE` and the spec's
# `backends:` keys can name: a ":", ".", "=", space or empty name could be registered
# but never reached (or reached as another name) from the CLI or a spec.
_NAME = lazy_pattern(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def register_backend(name: str, factory: BackendFactory) -> None:
    """Register ``factory`` under ``name`` in this process (tests, embedding code).

    ``name`` is letters, digits, ``_`` and ``-`` (it must fit ``--backend NAME:KINDS``
    and ``--backend-opt NAME.KEY=VALUE``), and ``factory`` a callable; else a
    :class:`~k3snet.errors.BackendOptionError`.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BackendOptionError(f"backend name {name!r}: use letters, digits, '_' and '-' "
                                 "(starting with a letter or digit), so that --backend "
                                 "NAME:KINDS and --backend-opt NAME.KEY=VALUE can name it")
    if not callable(factory):
        raise BackendOptionError(f"backend {name!r}: the factory must be callable (a backend "
                                 f"class or a function returning one), got {factory!r}")
    _registered[name] = factory


def unregister_backend(name: str) -> None:
    """Undo :func:`register_backend` (unknown names are ignored)."""
    _registered.pop(name, None)


def _entry_points(name: str | None = None) -> list[tuple[str, str]]:
    """(name, target) of the ``k3snet.backends`` entry points (``name``: only that one)."""
    # Imported here: scanning the installed distributions is the costly part of a
    # cold start, and a built-in backend's name never needs it.
    from importlib.metadata import entry_points  # noqa: PLC0415

    found = (entry_points(group=ENTRY_POINT_GROUP) if name is None
             else entry_points(group=ENTRY_POINT_GROUP, name=name))
    return [(ep.name, ep.value) for ep in found]


def available_backends() -> tuple[str, ...]:
    """Every name :func:`load_backend` knows, sorted (nothing is imported)."""
    names = set(_BUILTIN) | set(_registered)
    found = _entry_point_names()
    names |= {ep_name for ep_name, _ in _entry_points()} if found is None else found
    return tuple(sorted(names))


_METADATA_DIRS = (".dist-info", ".egg-info")


def _entry_point_names() -> set[str] | None:
    """The names of the ``k3snet.backends`` entry points, read without importing
    :mod:`importlib.metadata` (its import, email's parser and zipfile among it, cost
    ``k3snet plan --help`` 21-31 ms of CPU of its ~0.25 s, the scan 9-13 ms more;
    docs/performance.md, "The cold CLI's imports"), or ``None``
    where this reading could differ from its own, which is then asked.

    The reading is importlib.metadata's for the common case, step by step: the
    distributions of each ``sys.path`` entry that is a directory, found as its
    ``*.dist-info`` and ``*.egg-info`` children (listing order), the first of a
    normalized name winning across the path; each one's ``entry_points.txt`` read as
    its ``Sectioned`` reads it. ``None`` (ask importlib.metadata) when another finder
    on ``sys.meta_path`` finds distributions, a path entry is a file (a zip) or an
    ``.egg`` directory, a metadata directory's name has no project name, or a line of
    a group's section has no ``=`` or no object reference after it.
    ``tests/backends/test_entry_point_names.py`` compares the two."""
    import sys  # noqa: PLC0415 - loaded by Python's start already

    if not _plain_metadata_path(sys.meta_path, sys.path):
        return None
    seen: set[str] = set()
    names: set[str] = set()
    for root in sys.path:
        try:
            children = os.listdir(root or ".")
        except Exception:  # importlib.metadata's FastPath swallows every error  # noqa: BLE001
            if root and os.path.exists(root):
                return None  # unreadable, or something else than a directory
            continue
        for child in children:
            low = child.lower()
            if not low.endswith(_METADATA_DIRS):
                continue
            stem, ext = os.path.splitext(child)
            project = stem.partition("-")[0]
            if ext not in _METADATA_DIRS or not project:
                return None  # named from its METADATA file: importlib.metadata's to read
            normalized = re.sub(r"[-_.]+", "-", project).lower().replace("-", "_")
            if normalized in seen:
                continue
            seen.add(normalized)
            found = _group_names(os.path.join(root, child, "entry_points.txt"))
            if found is None:
                return None
            names |= found
    return names


def _plain_metadata_path(meta_path: Iterable[object], path: Iterable[object]) -> bool:
    """Whether importlib.metadata finds distributions only through Python's own path
    finder (no other finder on ``meta_path`` has ``find_distributions``), every entry of
    ``path`` being text naming a directory or nothing (no zip, no ``.egg``)."""
    import importlib.machinery  # noqa: PLC0415 - loaded by Python's start already

    if any(getattr(finder, "find_distributions", None) is not None
           and finder is not importlib.machinery.PathFinder for finder in meta_path):
        return False
    return all(isinstance(root, str) and not root.lower().endswith(".egg")
               and not (root and os.path.isfile(root)) for root in path)


# importlib.metadata's EntryPoint.pattern: newer versions (CPython's main branch) refuse
# on construction an entry point of any group whose value does not match it.
_OBJECT_REFERENCE = lazy_pattern(r"[\w.]+\s*(:\s*[\w.]+\s*)?(\[.*\]\s*)?$")


def _group_names(path: str) -> set[str] | None:
    """The entry-point names of the ``k3snet.backends`` section of ``path`` (empty where
    there is no such file), ``None`` where a line in a section has no ``=`` or a value
    that is no object reference (which importlib.metadata refuses with an error of its
    own, the second only in its newer versions)."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
        return set()
    names: set[str] = set()
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")
            continue
        if section is None:
            continue  # before any section: importlib.metadata skips it too
        name, equals, value = line.partition("=")
        if not equals or not _OBJECT_REFERENCE.match(value.strip()):
            return None
        if section == ENTRY_POINT_GROUP:
            names.add(name.strip())
    return names


def load_backend(name: str) -> BackendFactory:
    """The factory registered under ``name``; imports it on first use.

    In-process registrations come first, then k3snet's built-in backends (their
    entry points name the same targets, so the metadata scan is skipped for
    them), then the ``k3snet.backends`` entry points of other packages.
    """
    if name in _registered:
        return _registered[name]
    if name in _BUILTIN:
        target, extra = _BUILTIN[name]
        return _import(name, target, extra)
    for _ep_name, target in _entry_points(name):
        return _import(name, target, "", plugin=True)
    import difflib  # noqa: PLC0415 - a misspelt name only: not on every cold run

    known = available_backends()
    # Case first ("Memory"), then spelling ("nftable"): the names are short and few.
    close = difflib.get_close_matches(name.lower(), known, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    raise BackendNotFoundError(f"no backend named {name!r}{hint}; available: {', '.join(known)}")


def backend_options(name: str, *, resolve: bool = False) -> dict[str, inspect.Parameter]:
    """The keyword options backend ``name`` declares (its factory's parameters).

    Empty when the factory takes ``**options`` of its own (nothing to check against).
    ``resolve``: annotations as types (``Literal["inet", "split"]``), not the text a
    module with ``from __future__ import annotations`` keeps (``"TableFamily"``);
    the text where a name does not resolve.
    """
    return _declared_options(load_backend(name), resolve=resolve)


def _declared_options(factory: BackendFactory, *, resolve: bool = False
                      ) -> dict[str, inspect.Parameter]:
    """:func:`backend_options` of a factory already loaded."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C factory: nothing declared
        return {}
    if resolve:
        with contextlib.suppress(Exception):  # a name only imported for type checking
            parameters = inspect.signature(factory, eval_str=True).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return {}
    return {n: p for n, p in parameters.items()
            if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)}


def declared_capabilities(name: str, options: Mapping[str, Any] | None = None
                          ) -> frozenset[str] | None:
    """The kinds backend ``name`` built with ``options`` manages, found without building
    it: its factory's ``declared_kinds(options)``
    (:meth:`k3snet.backends.kit.BackendBase.declared_kinds`: the memory backend's are its
    ``capabilities`` option's), else the class attribute ``capabilities``
    (``frozenset({"nat", "forward"})``); ``None`` where neither says (a property) or it
    cannot be loaded here. ``k3snet validate`` reads them to find two backends of a spec managing
    one kind. A third-party ``declared_kinds`` that raises (an option it reads without a
    default, a ``declared_kinds`` written without ``@classmethod``) is ``None`` too: its
    bug, which ``validate`` called an internal error of k3snet's; ``plan`` builds the
    backend and says what is wrong. What k3snet's own code raises is raised."""
    try:
        factory = load_backend(name)
    except (BackendNotFoundError, BackendUnavailableError):
        return None
    declare = getattr(factory, "declared_kinds", None)
    if callable(declare):
        try:
            kinds = declare(dict(options or {}))
        except Exception as exc:
            if not raised_by_third_party(declare, exc):
                raise
            return None
    else:
        kinds = getattr(factory, "capabilities", None)
    if isinstance(kinds, frozenset | set) and all(isinstance(k, str) for k in kinds):
        return frozenset(kinds)
    return None


def option_defaults(name: str) -> dict[str, str]:
    """What backend ``name`` does with an option left out, in words, where its factory's
    default (``None``) does not say it: its ``option_defaults`` class attribute
    (``{"state_dir": "/run/k3snet"}``), ``{}`` when it has none. ``k3snet explain``
    shows these, a user being the one to get them, not ``null``."""
    declared = getattr(load_backend(name), "option_defaults", None)
    if not isinstance(declared, Mapping):
        return {}
    return {str(option): str(text) for option, text in declared.items()}


def option_problems(name: str, options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(option, why)`` for each of ``options`` backend ``name`` refuses for its value
    (a table name with a space, ``timeout: "10"``), from its factory's
    ``check_options(options)`` (:meth:`k3snet.backends.kit.BackendBase.check_options`):
    the checks its constructor makes, without building it (no kernel, file or API
    server touched). ``[]`` for a factory without one."""
    check = getattr(load_backend(name), "check_options", None)
    if not callable(check):
        return []
    return [(str(option), str(why)) for option, why in check(options)]


def path_options(name: str) -> frozenset[str]:
    """The options of backend ``name`` that name a file or directory: those whose
    annotation takes a :class:`pathlib.Path` or an :class:`os.PathLike`
    (``state_dir: str | Path | None``, ``path: str | os.PathLike[str]``)."""

    def takes_path(annotation: Any) -> bool:
        # os.PathLike[str] is an alias, not a type: its origin says what it is. Typed
        # code spells "a path" so (the example backend did), and such an option was
        # recorded relative in plan files and let through relative in specs.
        if typing.get_origin(annotation) is os.PathLike:
            return True
        if isinstance(annotation, type):
            return issubclass(annotation, pathlib.PurePath | os.PathLike)
        return any(takes_path(arg) for arg in typing.get_args(annotation))

    return frozenset(option for option, parameter in backend_options(name, resolve=True).items()
                     if takes_path(parameter.annotation))


def takes_any_option(name: str) -> bool:
    """Whether backend ``name``'s factory takes ``**options``: every keyword is its option
    (:func:`backend_options` is then empty, having nothing to check against)."""
    try:
        parameters = inspect.signature(load_backend(name)).parameters
    except (TypeError, ValueError):  # a builtin or C factory: nothing declared
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def refuse_undeclared(name: str, options: Iterable[str]) -> None:
    """A :class:`~k3snet.errors.BackendOptionError` listing the options backend ``name``
    declares, when ``options`` holds another (nothing is checked for a factory that
    declares none)."""
    _refuse_undeclared(name, backend_options(name), options)


def _refuse_undeclared(name: str, declared: Mapping[str, inspect.Parameter],
                       options: Iterable[str]) -> None:
    """:func:`refuse_undeclared` against the options ``declared`` (:func:`_declared_options`)."""
    unknown = sorted(set(options) - set(declared)) if declared else []
    if unknown:
        raise BackendOptionError(
            f"backend {name!r} has no option {', '.join(map(repr, unknown))}; its options: "
            f"{', '.join(declared) or '(none)'}")


def create_backend(name: str, **options: Any) -> Backend:
    """Build the backend ``name`` with ``options`` (``netns=...``, ``path=...``).

    Options the backend does not declare are refused with an error that lists
    the ones it does (rather than a ``TypeError`` from deep inside), and so are
    the options it requires (no default) left out, named with the ways to give
    them (``--backend-opt``, the spec's ``backends:``). A factory that
    returns something without the backend's members (``None``: a function that
    forgot its ``return``) is a :class:`~k3snet.errors.BackendUnavailableError` naming
    them, not an ``AttributeError`` at its first use.
    """
    # Loaded once: a third-party backend's name is looked up among the entry points of
    # every installed package, a scan each time (three a call, when the options were
    # checked by name; a suite building one per example paid most of its time there).
    factory = load_backend(name)
    declared = _declared_options(factory)
    _refuse_undeclared(name, declared, options)
    missing = [option for option, parameter in declared.items()
               if parameter.default is inspect.Parameter.empty and option not in options]
    if missing:
        # Python's TypeError ("__init__() missing 1 required positional argument: 'path'")
        # names none of the ways a user gives an option.
        raise BackendOptionError(
            f"backend {name!r} needs option {', '.join(map(repr, missing))}: give "
            f"{'it' if len(missing) == 1 else 'each'} with "
            f"{' '.join(f'--backend-opt {name}.{option}=VALUE' for option in missing)} "
            f"or in the spec ({', '.join(f'backends.{name}.{option}' for option in missing)})"
            f"; `k3snet explain backends.{name}` lists its options")
    try:
        backend = factory(**options)
    except K3snetError as exc:
        if not isinstance(exc, TypeError):  # a BackendOptionError is one: named below
            raise
        raise BackendOptionError(f"backend {name!r}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        # A third-party constructor refusing an option value as Python code does (the
        # check of its option_checks, called there too): the value's problem, which the
        # CLI called an internal error of k3snet's ("a bug: please report it"). Not one
        # raised by k3snet's own code (a built-in backend's constructor, k3snet code a
        # third-party class runs): k3snet refuses values with a K3snetError, so that one
        # is a bug of k3snet's, which a "bad value" hid.
        if not raised_by_third_party(factory, exc):
            raise
        raise BackendOptionError(f"backend {name!r}: {exc}") from exc
    missing = [member for member in _MEMBERS if not hasattr(backend, member)]
    if missing:
        raise BackendUnavailableError(
            f"backend {name!r}: its factory {getattr(factory, '__qualname__', factory)!r} "
            f"returned {type(backend).__name__}, not a backend (no {', no '.join(missing)}; "
            "see k3snet.backends.Backend)")
    return backend


def _k3snets(module: object) -> bool:
    return isinstance(module, str) and (module == "k3snet" or module.startswith("k3snet."))


def raised_by_third_party(code: object, exc: BaseException) -> bool:
    """Whether ``exc``, raised by calling ``code`` (a backend's factory or option check),
    is the third party's: ``code`` is not k3snet's own and the frame that raised it is
    not k3snet's either (Python's own functions, ``os.fspath(5)``, raise in their
    caller's frame). A plain ``ValueError`` or ``TypeError`` from k3snet's code is a bug
    of k3snet's: its own code refuses a value with a :class:`~k3snet.errors.K3snetError`."""
    if _k3snets(getattr(code, "__module__", None)):
        return False
    tb = exc.__traceback__
    if tb is None or tb.tb_next is None:  # raised by the call itself: its arguments
        return True
    while tb.tb_next is not None:
        tb = tb.tb_next
    return not _k3snets(tb.tb_frame.f_globals.get("__name__"))


_MEMBERS = ("name", "capabilities", "observe", "check", "apply", "close")
"""What every use of a backend reaches for (:class:`~k3snet.backends.Backend`)."""


def _import(name: str, target: str, extra: str, *, plugin: bool = False) -> BackendFactory:
    """The factory ``target`` names (``module:attr``).

    ``plugin``: ``target`` is another package's entry point, so whatever its import
    raises, or a name it lacks, is that package's problem: the backend is unavailable
    (with the target named), not an internal error of k3snet's, and the other
    backends still load.
    """
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        factory: Any = module
        for part in attr.split("."):
            factory = getattr(factory, part)
    except ImportError as exc:
        hint = f" (pip install 'k3snet[{extra}]')" if extra else ""
        raise BackendUnavailableError(
            f"backend {name!r} cannot be loaded: {exc}{hint}"
        ) from exc
    except Exception as exc:
        if not plugin:
            raise
        raise BackendUnavailableError(
            f"backend {name!r} cannot be loaded: its entry point {target} (group "
            f"{ENTRY_POINT_GROUP}) failed: {type(exc).__name__}: {exc}"
        ) from exc
    return cast(BackendFactory, factory)
