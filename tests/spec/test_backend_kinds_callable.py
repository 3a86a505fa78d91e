"""The ``kinds=`` callable of ``backend_option_problems``: ``(name, options)``, or the
name alone (the form before options were given), each called as it is written."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from k3snet.backends.registry import backend_options
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


@pytest.mark.parametrize("kinds", [
    _name_alone, KINDS.get, {"nftables": ["nat"]}.get, _with_options, _options_defaulted,
    _star, lambda name: KINDS[name]],
    ids=["name-alone", "mapping-get", "other-mapping-get", "with-options",
         "options-defaulted", "star-args", "lambda-name"])
def test_a_kinds_callable_of_either_form_is_called_as_written(kinds: Kinds) -> None:
    """A mapping's ``get`` (``name -> kinds``, ``None`` unknown) was given the options as
    its ``default``: a backend it does not know "managed" its option names, and two
    backends with a ``state_dir`` were refused as both managing ``state_dir``."""
    assert backend_option_problems(SPEC, backend_options, kinds=kinds) == []


@pytest.mark.parametrize("kinds", [
    lambda name: ["route"], lambda name, options: ["route"], {"netlink": ["route"],
                                                              "iptables": ["route"]}.get],
    ids=["lambda-name", "lambda-name-options", "mapping-get"])
def test_two_backends_a_kinds_callable_of_either_form_says_share_a_kind_are_refused(
        kinds: Kinds) -> None:
    problems = backend_option_problems(SPEC, backend_options, kinds=kinds)
    assert [p.message.split(":")[0] for p in problems] == [
        "both 'netlink' and 'iptables' would manage route"]
