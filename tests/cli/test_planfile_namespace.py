"""A plan file names the network namespace its backends act in, and `apply FILE` makes
it there or nowhere: wherever the namespace was given (``--netns``, a spec's
``backends:`` or ``--backend-opt`` ``netns``), and whatever ``--backend-opt`` says at apply."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k3snet import MemoryBackend, register_backend
from k3snet.backends.lock import namespace_id
from k3snet.backends.netns import netns_option
from k3snet.backends.registry import unregister_backend
from k3snet.cli import main
from k3snet.lab.netns import run_in, temporary_netns

pytestmark = pytest.mark.usefixtures("require_root")

SPEC = "apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\nsysctls:\n  net.ipv4.ip_forward: 1\n"


class _Placed(MemoryBackend):
    """A memory backend with a ``netns`` option (as netlink's and nftables' own), recording
    where each one was made and what it applied: no namespace is changed."""

    made: list[str | None] = []  # noqa: RUF012 - a record shared by the test and the factory
    applied: list[str | None] = []  # noqa: RUF012 - likewise

    def __init__(self, *, netns: str | None = None) -> None:
        super().__init__()
        self.netns = netns_option(netns)
        self.made.append(netns)

    def apply(self, p: Any) -> Any:
        self.applied.append(self.netns)
        return super().apply(p)


@pytest.fixture
def placed() -> Iterator[type[_Placed]]:
    for name in ("memory-placed", "memory-placed-b"):
        register_backend(name, _Placed)
    _Placed.made.clear()
    _Placed.applied.clear()
    try:
        yield _Placed
    finally:
        for name in ("memory-placed", "memory-placed-b"):
            unregister_backend(name)


@pytest.fixture
def node() -> Iterator[str]:
    with temporary_netns("pfnode") as name:
        yield name


def _spec(tmp_path: Path, extra: str = "") -> Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC + extra)
    return spec


@pytest.mark.parametrize("where", ["--backend-opt", "backends:"])
def test_a_plan_file_names_the_namespace_a_backend_option_puts_the_backends_in(
        tmp_path: Path, placed: type[_Placed], node: str, where: str) -> None:
    # The netns option is recorded for no backend (the node's namespace is checked by its
    # identity): given as a backend option, the file named the host, and apply FILE made
    # the node's plan in the host's namespace.
    saved = tmp_path / "node.plan"
    if where == "--backend-opt":
        given = ["-f", str(_spec(tmp_path)), "--backend-opt", f"memory-placed.netns={node}"]
    else:
        given = ["-f", str(_spec(tmp_path, f"backends:\n  memory-placed: {{netns: {node}}}\n"))]
    assert main(["plan", *given, "--no-facts", "--backend", "memory-placed",
                 "--out", str(saved)]) == 2
    document = json.loads(saved.read_text())
    assert document["node"]["netns"] == node
    assert document["node"]["netns_id"] == namespace_id(node)
    assert "netns" not in document["options"].get("memory-placed", {})
    placed.made.clear()
    assert main(["apply", str(saved), "--auto-approve"]) == 0
    assert placed.made == [node]
    assert placed.applied == [node]


def test_a_plan_whose_backends_act_in_several_namespaces_is_not_saved(
        tmp_path: Path, placed: type[_Placed], node: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "node.plan"
    assert main(["plan", "-f", str(_spec(tmp_path)), "--no-facts",
                 "--backend", "memory-placed:sysctl", "--backend", "memory-placed-b:route",
                 "--backend-opt", f"memory-placed.netns={node}", "--out", str(saved)]) == 1
    err = capsys.readouterr().err
    assert f"cannot save the plan to {saved}: its backends act in several network " \
           f"namespaces ('{node}', the caller's own)" in err, err
    assert not saved.exists()


def test_a_backend_opt_netns_given_to_apply_does_not_move_a_plan_file_elsewhere(
        tmp_path: Path, placed: type[_Placed], node: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "node.plan"
    assert main(["plan", "-f", str(_spec(tmp_path)), "--no-facts", "--backend",
                 "memory-placed", "--netns", node, "--out", str(saved)]) == 2
    with temporary_netns("pfother") as other:
        capsys.readouterr()
        assert main(["apply", str(saved), "--auto-approve",
                     "--backend-opt", f"memory-placed.netns={other}"]) == 1
        err = capsys.readouterr().err
        assert f"{saved} was made for network namespace '{node}' ({namespace_id(node)}), " \
               f"and a backend would act in '{other}' ({namespace_id(other)})" in err, err
        assert placed.applied == []
    # Naming the namespace it was made for is no move.
    assert main(["apply", str(saved), "--auto-approve",
                 "--backend-opt", f"memory-placed.netns={node}"]) == 0
    assert placed.applied == [node]


@pytest.mark.kernel
def test_a_plan_file_applied_with_another_netlink_netns_changes_neither_namespace(
        tmp_path: Path, node: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Both namespaces fresh, so the node's plan (ip_forward = 1) was also the other's:
    # apply FILE --backend-opt netlink.netns=OTHER passed every check and turned
    # forwarding on there.
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("K3SNET_LOCK_DIR", str(tmp_path))
    saved = tmp_path / "node.plan"
    assert main(["plan", "-f", str(_spec(tmp_path)), "--no-facts", "--backend", "netlink",
                 "--netns", node, "--out", str(saved)]) == 2
    with temporary_netns("pfother") as other:
        assert main(["apply", str(saved), "--auto-approve",
                     "--backend-opt", f"netlink.netns={other}"]) == 1
        for name in (node, other):
            assert run_in(name, ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "0"


def test_a_library_caller_is_told_a_backend_acts_elsewhere_than_the_plan_file_was_made_for(
        tmp_path: Path, node: str) -> None:
    from k3snet import PlanError, State, plan  # noqa: PLC0415
    from k3snet.backends.group import BackendGroup, Member  # noqa: PLC0415
    from k3snet.planfile import PlanFile  # noqa: PLC0415

    PlanFile.make(plan(State(), State()), desired=State(), observed=State(),
                  backends=["memory"], netns=node).write(tmp_path / "node.plan")
    saved = PlanFile.read(tmp_path / "node.plan", netns=None)
    saved.refuse_elsewhere(_Placed(netns=node))
    saved.refuse_elsewhere(MemoryBackend())  # acting in no namespace
    with temporary_netns("pfother") as other:
        for backend in (_Placed(netns=other), _Placed(),
                        BackendGroup([Member(_Placed(netns=node), ["route"]),
                                      Member(_Placed(netns=other), ["nat"])])):
            with pytest.raises(PlanError, match=f"the plan file was made for network namespace "
                                                f"'{node}' .* and a backend would act in"):
                saved.refuse_elsewhere(backend)
