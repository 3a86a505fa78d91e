"""A spec's node objects that none of the backends in use manages are said, not dropped
in silence.

``k3snet plan -f seed.yaml --backend netlink`` planned the routes and sysctls alone and,
once they were in place, exited 0 with "0 to add": the spec's masquerade and forward
accepts were in no plan, and the pods still could not reach the database.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from k3snet.cli import main

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
ROUTES_ONLY = ["--backend", "memory", "--backend-opt", 'memory.capabilities=["route","sysctl"]']


def _plan(capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, str]:
    code = main(["plan", "-f", str(SEED), "--no-facts", *flags])
    return code, capsys.readouterr().out


def test_plan_names_the_kinds_no_backend_in_use_manages(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _plan(capsys, *ROUTES_ONLY)
    assert code == 2  # the routes and sysctls
    (warning,) = [line for line in out.splitlines() if line.startswith("!! warning:")]
    assert "2 forward accepts and 2 NAT rules are in no plan" in warning
    assert "(memory) manages forward or nat" in warning


def test_the_json_plan_carries_it_among_the_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    _, out = _plan(capsys, *ROUTES_ONLY, "--output", "json")
    assert any("are in no plan" in w for w in json.loads(out)["warnings"])


@pytest.mark.parametrize(
    "flags",
    [
        ["--backend", "memory"],  # every kind
        ["--backend", "memory:route,sysctl"],  # the kinds split on purpose
    ],
    ids=["all-kinds", "kinds-given"],
)
def test_no_warning_when_every_kind_is_managed_or_the_kinds_are_chosen(
    capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    _, out = _plan(capsys, *flags)
    assert "!! warning" not in out


def test_apply_says_it_too(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["apply", "-f", str(SEED), "--no-facts", "--auto-approve", *ROUTES_ONLY]) == 0
    assert "are in no plan" in capsys.readouterr().out


def test_unmanaged_counts_by_kind_and_compiles_nothing_for_a_backend_of_every_kind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib  # noqa: PLC0415

    from k3snet import load_spec  # noqa: PLC0415
    from k3snet.backends.memory import MemoryBackend  # noqa: PLC0415
    from k3snet.converge import unmanaged  # noqa: PLC0415

    # The module (k3snet.converge, the attribute, is the function).
    converge_module = importlib.import_module("k3snet.converge")
    spec = load_spec(SEED)
    assert unmanaged(MemoryBackend(capabilities=["route", "sysctl"]), spec) == {
        "forward": 2,
        "nat": 2,
    }
    assert unmanaged(MemoryBackend(capabilities=["nat"]), spec) == {
        "forward": 2,
        "route": 2,
        "sysctl": 2,
    }

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("compiled for a backend of every node kind")

    monkeypatch.setattr(converge_module, "compile_spec", refuse)
    assert unmanaged(MemoryBackend(), spec) == {}


def test_no_warning_for_a_run_of_cni_backends_alone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A flannel (Calico, Cilium) backend alone is a run for the cluster's CNI settings:
    the node's routes and rules are another run's, not forgotten."""
    conf = tmp_path / "net-conf.json"
    conf.write_text('{"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan"}}')
    code = main(
        [
            "plan",
            "-f",
            str(SEED),
            "--no-facts",
            "--backend",
            "flannel",
            "--backend-opt",
            f"flannel.path={conf}",
        ]
    )
    assert code in (0, 2, 4)
    assert "in no plan" not in capsys.readouterr().out
