"""The ``kinds=`` of ``backend_option_problems``: a callable always called ``(name,
options)``, or a mapping ``name -> kinds``; the name-alone callable (the form before
options were given) and a mapping's ``get`` still work, with a DeprecationWarning."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest

from k3snet.backends.registry import backend_options, declared_capabilities
from k3snet.errors import SpecError
from k3snet.spec import Spec
from k3snet.spec.backends import (
    Kinds,
    backend_option_problems,
    check_backend_options,
    spec_backend_options,
)

# Both backends have a state_dir option: options taken for kinds would "share" it.
SPEC = Spec(backends=["netlink", "iptables"],
            backend_options={"netlink": {"state_dir": "/a"}, "iptables": {"state_dir": "/b"}})
KINDS = {"netlink": ["route", "sysctl"], "iptables": ["nat", "forward"]}


def _name_alone(name: str) -> Iterable[str] | None:
    return KINDS.get(name)


def _with_options(name: str, options: Mapping[str, Any]) -> Iterable[str] | None:
    assert options == spec_backend_options(SPEC, name)
    return KINDS.get(name)


def _options_defaulted(name: str, options: Mapping[str, Any] | None = None
                       ) -> Iterable[str] | None:
    assert options == spec_backend_options(SPEC, name)  # as declared_capabilities is written
    return KINDS.get(name)


def _star(*args: Any) -> Iterable[str] | None:
    assert len(args) == 2
    return KINDS.get(args[0])


def _options_other_name(name: str, opts: Mapping[str, Any] | None = None
                        ) -> Iterable[str] | None:
    assert opts == spec_backend_options(SPEC, name)  # given though named otherwise
    return KINDS.get(name)


class _Callable:
    def __call__(self, name: str, o: Mapping[str, Any] | None = None) -> Iterable[str] | None:
        assert o == spec_backend_options(SPEC, name)
        return KINDS.get(name)


def _by_options(name: str, options: Mapping[str, Any] | None = None,
                ) -> Iterable[str] | None:
    return ["route"] if options is not None and "state_dir" in options else []


@pytest.mark.parametrize("kinds", [
    _with_options, _options_defaulted, _options_other_name, _star, _Callable(),
    lambda n, o=None: KINDS[n] if o == spec_backend_options(SPEC, n) else ["x"],
    functools.partial(_options_other_name), KINDS],
    ids=["with-options", "options-defaulted", "second-parameter-named-otherwise",
         "star-args", "callable-object", "lambda-name-o-none", "partial", "mapping"])
def test_a_kinds_callable_is_always_given_the_options_and_a_mapping_read_by_name(
        kinds: Kinds) -> None:
    """Which form a callable had was guessed from its second parameter: one with a
    default and named otherwise than ``options`` (``lambda n, o=None``, a callable
    object's ``o=None``) was called with the name alone and judged every backend by
    its kinds without options (the memory backend's: all of them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backend_option_problems(SPEC, backend_options, kinds=kinds) == []


def test_a_kinds_callable_with_a_defaulted_second_parameter_judges_by_the_options() -> None:
    """``lambda n, o=None``'s options were never given: both backends, judged without
    their ``state_dir``, managed nothing, where with it each manages route."""
    problems = backend_option_problems(SPEC, backend_options,
                                       kinds=lambda n, o=None: _by_options(n, o))
    assert [p.message.split(":")[0] for p in problems] == [
        "both 'netlink' and 'iptables' would manage route"]


@pytest.mark.parametrize("kinds", [
    _name_alone, KINDS.get, {"nftables": ["nat"]}.get, lambda name: KINDS[name]],
    ids=["name-alone", "mapping-get", "other-mapping-get", "lambda-name"])
def test_a_deprecated_kinds_callable_still_works_with_a_deprecation_warning(
        kinds: Kinds) -> None:
    """A mapping's ``get`` (``name -> kinds``, ``None`` unknown) is read as its mapping:
    called with the options it took them for its ``default``, a backend it does not know
    "managed" its option names, and two backends with a ``state_dir`` were refused as
    both managing ``state_dir``."""
    with pytest.warns(DeprecationWarning, match="kinds="):
        assert backend_option_problems(SPEC, backend_options, kinds=kinds) == []


@pytest.mark.parametrize("kinds", [
    lambda name: ["route"], lambda name, options: ["route"], {"netlink": ["route"],
                                                              "iptables": ["route"]}.get,
    {"netlink": ["route"], "iptables": ["route"]}],
    ids=["lambda-name", "lambda-name-options", "mapping-get", "mapping"])
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_two_backends_a_kinds_callable_of_either_form_says_share_a_kind_are_refused(
        kinds: Kinds) -> None:
    problems = backend_option_problems(SPEC, backend_options, kinds=kinds)
    assert [p.message.split(":")[0] for p in problems] == [
        "both 'netlink' and 'iptables' would manage route"]


def test_the_declared_capabilities_kinds_is_given_the_options_without_a_warning() -> None:
    spec = Spec(backends=["netlink", "memory"],
                backend_options={"memory": {"capabilities": ["nat"]}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backend_option_problems(spec, backend_options,
                                       kinds=declared_capabilities) == []


def _deprecated_kinds_through(entry: str) -> list[warnings.WarningMessage]:
    entries: dict[str, Callable[..., object]] = {
        "check_backend_options": check_backend_options,
        "backend_option_problems": backend_option_problems}
    call = entries[entry]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call(SPEC, backend_options, kinds=lambda name: KINDS[name])
        call(SPEC, backend_options, kinds=KINDS.get)
    return caught


@pytest.mark.parametrize("entry", ["check_backend_options", "backend_option_problems"])
def test_the_deprecation_warning_names_the_callers_line_through_either_entry(
        entry: str) -> None:
    """Through ``check_backend_options`` the warning named k3snet's own line
    (k3snet/spec/backends.py): Python's default filters show a DeprecationWarning only
    when it names ``__main__``, so a script calling it never saw it, and a test suite's
    ``-W error::DeprecationWarning:my_package`` never caught it."""
    caught = _deprecated_kinds_through(entry)
    assert [(w.category, w.filename) for w in caught] == [(DeprecationWarning, __file__)] * 2


class _Registry(dict[str, type]):
    """Backend classes by name, and the kinds of each as a callable: a registry."""

    def __call__(self, name: str, options: Mapping[str, Any]) -> Iterable[str] | None:
        return KINDS.get(name)


def test_a_callable_mapping_is_called_as_the_callable_it_was_given_as() -> None:
    """A mapping that is callable (a registry of backend classes by name, which says the
    kinds of each when called) was called before mappings were taken; read as a mapping,
    each backend's kinds were its class, and validate failed on iterating it."""
    registry = _Registry(netlink=object, iptables=object)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backend_option_problems(SPEC, backend_options, kinds=registry) == []


class _NameCalled(dict[str, list[str]]):
    """A mapping of kinds by name that is also callable, with the name alone."""

    def __call__(self, name: str) -> list[str]:
        return []


@pytest.mark.parametrize("entry", ["check_backend_options", "backend_option_problems"])
def test_a_callable_mappings_get_is_read_as_its_mapping_with_one_warning(entry: str) -> None:
    """A callable mapping's bound ``get`` (deprecated) was read as its mapping; once a
    callable mapping was called instead, its get was turned into the mapping and then
    called with (name, options): through ``backend_option_problems`` a ``TypeError``,
    through ``check_backend_options`` a second warning (naming k3snet's own line) and
    the mapping's kinds never read."""
    registry = _NameCalled(netlink=["route"], iptables=["route"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if entry == "check_backend_options":
            with pytest.raises(SpecError, match="would manage route"):
                check_backend_options(SPEC, backend_options, kinds=registry.get)
        else:
            problems = backend_option_problems(SPEC, backend_options, kinds=registry.get)
            assert [p.path for p in problems] == ["backends"]
    assert [(w.category, w.filename) for w in caught] == [(DeprecationWarning, __file__)]
