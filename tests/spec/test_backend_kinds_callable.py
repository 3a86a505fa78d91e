"""The ``kinds=`` of ``backend_option_problems``: a callable always called ``(name,
options)``, or a mapping ``name -> kinds``; the name-alone callable (the form before
options were given) and a mapping's ``get`` still work, with a DeprecationWarning."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from k3snet.backends.registry import backend_options, declared_capabilities
from k3snet.spec import Spec
from k3snet.spec.backends import Kinds, backend_option_problems, spec_backend_options

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
