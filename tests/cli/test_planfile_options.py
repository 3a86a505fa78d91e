"""`k3snet apply FILE` builds the backends with the options the plan was made with: the
spec's `backends:` options, --backend-opt and allow-disruptive, recorded in the file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k3snet import MemoryBackend, ModelError, register_backend
from k3snet.backends.registry import unregister_backend
from k3snet.cli import main

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"


class _Tabled(MemoryBackend):
    """A memory backend with a table option (as nftables has), recording what it was given."""

    made: list[dict[str, Any]] = []  # noqa: RUF012 - a record shared by the test and the factory

    def __init__(self, *, table: str = "k3snet", allow_disruptive: bool = False) -> None:
        if not table.isalnum():
            raise ModelError(f"table {table!r}: letters and digits only")  # as nftables
        super().__init__()
        self.made.append({"table": table, "allow_disruptive": allow_disruptive})


@pytest.fixture
def tabled() -> Iterator[list[dict[str, Any]]]:
    register_backend("memory-tabled", _Tabled)
    _Tabled.made.clear()
    try:
        yield _Tabled.made
    finally:
        unregister_backend("memory-tabled")


def _spec(tmp_path: Path, extra: str) -> Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SEED.read_text() + extra)
    return spec


def test_apply_of_a_plan_file_uses_the_options_it_was_planned_with(
        tmp_path: Path, tabled: list[dict[str, Any]]) -> None:
    spec = _spec(tmp_path, "backends:\n  memory-tabled: {table: teamA}\n"
                           "cni:\n  allowDisruptive: true\n")
    saved = tmp_path / "node.plan"
    assert main(["plan", "-f", str(spec), "--no-facts", "--backend", "memory-tabled",
                 "--out", str(saved)]) == 2
    assert main(["apply", str(saved), "--auto-approve"]) == 0
    assert tabled == [{"table": "teamA", "allow_disruptive": True}] * 2


def test_backend_opt_given_to_plan_is_recorded_too(
        tmp_path: Path, tabled: list[dict[str, Any]]) -> None:
    saved = tmp_path / "node.plan"
    assert main(["plan", "-f", str(SEED), "--no-facts", "--backend", "memory-tabled",
                 "--backend-opt", "memory-tabled.table=teamB", "--out", str(saved)]) == 2
    assert main(["apply", str(saved), "--auto-approve"]) == 0
    assert [m["table"] for m in tabled] == ["teamB", "teamB"]


@pytest.mark.parametrize(("options", "message"), [
    ({"table": "../../etc"}, "letters and digits only"),
    ({"path": "/etc/passwd"}, "backend 'memory-tabled' has no option 'path'"),
])
def test_a_tampered_option_is_refused_as_the_spec_would_refuse_it(
        tmp_path: Path, tabled: list[dict[str, Any]], capsys: pytest.CaptureFixture[str],
        options: dict[str, Any], message: str) -> None:
    saved = tmp_path / "node.plan"
    assert main(["plan", "-f", str(SEED), "--no-facts", "--backend", "memory-tabled",
                 "--out", str(saved)]) == 2
    document = json.loads(saved.read_text())
    document["options"] = {"memory-tabled": options}
    saved.write_text(json.dumps(document))
    tabled.clear()
    assert main(["apply", str(saved), "--auto-approve"]) == 1
    err = capsys.readouterr().err
    assert f"k3snet: error: {saved}: " in err  # named as the plan file's problem
    assert message in err
    assert tabled == []
