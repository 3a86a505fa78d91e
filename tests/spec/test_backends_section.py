"""``backends:`` in the spec: names or names with options, checked against each backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from k3snet import MemoryBackend, Spec, SpecError, State, register_backend
from k3snet.backends.registry import backend_options, unregister_backend
from k3snet.cli import main
from k3snet.spec import check_backend_options, spec_backend_options
from k3snet.spec.backends import backend_option_problems

HEADER = "apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"


def test_both_forms_read_and_write_back() -> None:
    listed = Spec.from_dict({"backends": ["netlink", "nftables"]})
    assert listed.backends == ("netlink", "nftables")
    assert listed.backend_options == ()
    assert listed.to_dict()["backends"] == ["netlink", "nftables"]
    mapped = Spec.from_dict({"backends": {"netlink": None, "nftables": {"table": "egress"}}})
    assert mapped.backends == ("netlink", "nftables")
    assert spec_backend_options(mapped, "nftables") == {"table": "egress"}
    assert spec_backend_options(mapped, "netlink") == {}
    assert mapped.to_dict()["backends"] == {"netlink": {}, "nftables": {"table": "egress"}}
    assert Spec.from_dict(mapped.to_dict()) == mapped
    built = Spec(backends=["nftables"], backend_options={"nftables": {"table": "egress"}})
    assert built == Spec.from_dict({"backends": {"nftables": {"table": "egress"}}})


def test_shape_problems_carry_their_paths() -> None:
    with pytest.raises(SpecError) as info:
        Spec.from_dict({"backends": {"nft ables": {}, "netlink": 3,
                                     "nftables": {"1table": "x", "table": "t"}}})
    paths = {p.path: p.message for p in info.value.problems}
    assert set(paths) == {"backends.nft ables", "backends.netlink", "backends.nftables.1table"}
    assert "expected a mapping of options" in paths["backends.netlink"]


def test_unknown_options_are_spec_problems_listing_the_known_ones() -> None:
    spec = Spec.from_dict({"backends": {"nftables": {"tabel": "k3snet", "family": "split"},
                                        "nope": {}}})
    problems = {p.path: p.message for p in backend_option_problems(spec, backend_options)}
    assert set(problems) == {"backends.nftables.tabel", "backends.nope"}
    assert problems["backends.nftables.tabel"].startswith("unknown option; known: netns, ")
    assert "table" in problems["backends.nftables.tabel"]
    assert "no backend named 'nope'" in problems["backends.nope"]
    with pytest.raises(SpecError, match=r"backends\.nftables\.tabel: unknown option"):
        check_backend_options(spec, backend_options, ["nftables"])
    check_backend_options(Spec.from_dict({"backends": {"nftables": {"table": "x"}}}),
                          backend_options)


class _Configurable(MemoryBackend):
    """A memory backend recording the options it was built with."""

    built: list[dict[str, Any]] = []  # noqa: RUF012 - shared on purpose, reset per test

    def __init__(self, *, label: str = "", size: int = 0) -> None:
        super().__init__(State())
        _Configurable.built.append({"label": label, "size": size})


@pytest.fixture
def configurable() -> Any:
    _Configurable.built = []
    register_backend("configurable", _Configurable)
    try:
        yield _Configurable
    finally:
        unregister_backend("configurable")


def test_the_cli_passes_the_spec_options_and_its_own_override_them(
        tmp_path: Path, configurable: Any, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(HEADER + "backends:\n  configurable: {label: spec, size: 3}\n")
    assert main(["plan", "-f", str(spec), "--no-facts"]) == 0
    assert main(["plan", "-f", str(spec), "--no-facts",
                 "--backend-opt", "configurable.size=7"]) == 0
    assert configurable.built == [{"label": "spec", "size": 3}, {"label": "spec", "size": 7}]


def test_the_cli_reports_an_unknown_spec_option_with_its_path(
        tmp_path: Path, configurable: Any, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(HEADER + "backends:\n  configurable: {lable: spec}\n")
    assert main(["plan", "-f", str(spec), "--no-facts"]) == 1
    err = capsys.readouterr().err
    assert "backends.configurable.lable: unknown option; known: label, size" in err
    assert main(["validate", "-f", str(spec)]) == 1
    assert "backends.configurable.lable: unknown option" in capsys.readouterr().err
    assert configurable.built == []


def test_check_backend_options_judges_only_the_named_backends_and_names_the_source() -> None:
    spec = Spec.from_dict({"backends": {"nftables": {"tabel": "k3snet"}}})
    check_backend_options(spec, backend_options, [])  # no backend named: none judged
    with pytest.raises(SpecError) as caught:
        check_backend_options(spec, backend_options, source="egress.yaml")
    assert caught.value.source == "egress.yaml"
    assert str(caught.value).startswith("1 problem in egress.yaml:")


def test_a_relative_path_option_is_a_problem_whether_text_or_a_path() -> None:
    # A spec built in Python may give a Path: Path("st") names a directory as "st" does,
    # and Path("") the working directory. Only options that name files are judged.
    from k3snet.backends.registry import path_options  # noqa: PLC0415

    options: dict[str, dict[str, object]] = {
        "netlink": {"state_dir": Path("st"), "proc_sys": ""}, "nftables": {"table": "relative"}}
    spec = Spec(backends=["netlink", "nftables"], backend_options=options)
    problems = {p.path for p in backend_option_problems(spec, backend_options,
                                                        paths=path_options)}
    assert problems == {"backends.netlink.state_dir", "backends.netlink.proc_sys"}
    assert backend_option_problems(spec, backend_options) == []  # without paths=: unjudged
    absolute = Spec(backends=["netlink"],
                    backend_options={"netlink": {"state_dir": Path("/run/k3snet-test")}})
    assert backend_option_problems(absolute, backend_options, paths=path_options) == []
