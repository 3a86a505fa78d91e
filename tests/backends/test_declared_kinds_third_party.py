"""``k3snet validate`` and a third-party backend's ``declared_kinds`` that raises: the
third party's bug, not k3snet's ("internal error ... a bug: please report it")."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from k3snet.backends.kit import BackendBase
from k3snet.backends.registry import declared_capabilities, register_backend, unregister_backend
from k3snet.cli import main


class _NeedsKind(BackendBase):
    """Reads an option it does not default (``options["kind"]``: a KeyError without it)."""

    name = "needs-kind"
    capabilities = frozenset({"route"})

    def __init__(self, kind: str = "route") -> None:
        super().__init__()

    @classmethod
    def declared_kinds(cls, options: Mapping[str, Any]) -> frozenset[str] | None:
        return frozenset({options["kind"]})


class _NotAClassMethod(BackendBase):
    """``declared_kinds`` written without ``@classmethod``: called on the class, a TypeError."""

    name = "not-a-classmethod"
    capabilities = frozenset({"route"})

    def __init__(self) -> None:
        super().__init__()

    def declared_kinds(self, options: Mapping[str, Any]) -> frozenset[str] | None:  # type: ignore[override]
        return frozenset({"route"})


class _OwnBug(BackendBase):
    """Inherits k3snet's ``declared_kinds``: what it raises is k3snet's, and is not hidden."""

    name = "own-bug"
    capabilities = frozenset({"route"})

    def __init__(self) -> None:
        super().__init__()


_BROKEN = {"needs-kind": _NeedsKind, "not-a-classmethod": _NotAClassMethod}


@pytest.fixture
def registered() -> Iterator[None]:
    for name, factory in _BROKEN.items():
        register_backend(name, factory)
    try:
        yield
    finally:
        for name in _BROKEN:
            unregister_backend(name)


@pytest.mark.parametrize("name", sorted(_BROKEN))
def test_a_third_party_declared_kinds_that_raises_is_kinds_not_known(
        name: str, registered: None) -> None:
    """Not known (``None``, as for an option value it cannot read): plan builds the
    backend and says what is wrong with it."""
    assert declared_capabilities(name, {}) is None
    assert declared_capabilities(name) is None


@pytest.mark.parametrize("name", sorted(_BROKEN))
def test_k3snet_validate_is_no_internal_error_for_a_third_party_declared_kinds_that_raises(
        name: str, registered: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                    "cluster: {podCIDRs: [10.42.0.0/16]}\n"
                    f"backends: [nftables, {name}]\n")
    code = main(["validate", "-f", str(path)])
    said = capsys.readouterr()
    assert "internal error" not in said.err, said.err
    assert code == 0, said


def test_k3snet_own_declared_kinds_raising_is_still_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the third party's code is taken for its bug: k3snet's own raising is k3snet's."""

    def boom(cls: type, options: Mapping[str, Any]) -> frozenset[str] | None:
        raise KeyError("k3snet's own")

    boom.__module__ = "k3snet.backends.kit"
    monkeypatch.setattr(BackendBase, "declared_kinds", classmethod(boom))
    register_backend("own-bug", _OwnBug)  # type: ignore[arg-type]  # never built
    try:
        with pytest.raises(KeyError, match="k3snet's own"):
            declared_capabilities("own-bug", {})
    finally:
        unregister_backend("own-bug")
