"""``k3snet validate``'s refusal of two backends managing one kind agrees with what
``plan``, ``apply`` and the agent refuse, for every combination of the built-in backends."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k3snet.backends.registry import backend_options, declared_capabilities
from k3snet.cli import _backend, build_parser, main
from k3snet.errors import ModelError
from k3snet.lab.netns import temporary_netns
from k3snet.model.state import known_kinds
from k3snet.spec import Spec
from k3snet.spec.backends import backend_option_problems

pytestmark = pytest.mark.kernel

# memory's kinds are its `capabilities` option's: its own table below.
NAMES = ("netlink", "nftables", "iptables", "flannel", "calico", "cilium")

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


@pytest.fixture(scope="module")
def ns() -> Iterator[str]:
    with temporary_netns("kinds") as name:
        yield name


def _options(tmp_path: Path, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Options that let each backend be built here (no cluster, a namespace of the test)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    state = tmp_path / "state"
    given: dict[str, dict[str, Any]] = {
        "netlink": {"state_dir": str(state)}, "iptables": {"state_dir": str(state)},
        "flannel": {"path": str(tmp_path / "net-conf.json")},
        "calico": {"kubeconfig": str(kubeconfig)}, "cilium": {"kubeconfig": str(kubeconfig)}}
    return {name: given[name] for name in names if name in given}


def _plan_refuses(spec: Spec, ns: str, tmp_path: Path) -> bool:
    """Whether the backends of ``spec`` are refused where plan, apply and the agent make
    them (``cli._backend``: the agent's make_backend too)."""
    path = tmp_path / "spec.yaml"
    path.write_text("")
    args = build_parser().parse_args(["plan", "-f", str(path), "--netns", ns])
    try:
        group = _backend(args, spec)
    except ModelError as exc:
        refused = str(exc)
    else:
        group.close()
        return False
    assert "would manage" in refused, refused
    return True


@pytest.mark.parametrize("names", [
    *(combo for size in (2, 3) for combo in itertools.permutations(NAMES, size)),
    *((name, name) for name in NAMES), ("netlink", "nftables", "netlink")], ids="+".join)
def test_validate_refuses_exactly_the_backends_plan_refuses_for_one_kind_twice(
        names: tuple[str, ...], ns: str, tmp_path: Path) -> None:
    """Any spec validate refuses that plan accepts would fail users' CI for nothing; any
    it accepts that plan refuses fails on every node and every agent pass."""
    spec = Spec(backends=list(names), backend_options=_options(tmp_path, names))
    problems = backend_option_problems(spec, backend_options, kinds=declared_capabilities)
    assert [p for p in problems if p.path != "backends"] == []
    validate_refuses = any(p.path == "backends" for p in problems)
    assert validate_refuses == _plan_refuses(spec, ns, tmp_path), problems


# The memory backend's kinds are its `capabilities` option's (every kind left out):
# validate knew none of them and accepted `backends: [netlink, memory]`, which plan
# refuses on every run (both would manage route and sysctl).
MEMORY_KINDS = (None, ["nat"], ["route"], ["sysctl", "forward"], "ippool", ["ippool", "nat"])


@pytest.mark.parametrize("capabilities", MEMORY_KINDS, ids=repr)
@pytest.mark.parametrize("names", [
    *(combo for other in NAMES for combo in (("memory", other), (other, "memory"))),
    ("netlink", "memory", "calico"), ("memory",)], ids="+".join)
def test_validate_refuses_exactly_the_backends_plan_refuses_with_the_memory_backend(
        names: tuple[str, ...], capabilities: list[str] | str | None, ns: str,
        tmp_path: Path) -> None:
    """validate reads the memory backend's kinds from its `capabilities` option
    (`declared_kinds`), as plan builds it."""
    options = _options(tmp_path, names)
    if capabilities is not None:
        options["memory"] = {"capabilities": capabilities}
    spec = Spec(backends=list(names), backend_options=options)
    problems = backend_option_problems(spec, backend_options, kinds=declared_capabilities)
    assert [p for p in problems if p.path != "backends"] == []
    validate_refuses = any(p.path == "backends" for p in problems)
    assert validate_refuses == _plan_refuses(spec, ns, tmp_path), problems


def test_declared_capabilities_reads_the_memory_backends_capabilities_option() -> None:
    """Without options, every kind (the option's default); a value the option refuses:
    not known (option_problems says why)."""
    assert declared_capabilities("memory") == frozenset(known_kinds())
    assert declared_capabilities("memory", {"capabilities": ["nat"]}) == frozenset({"nat"})
    assert declared_capabilities("memory", {"capabilities": "route"}) == frozenset({"route"})
    assert declared_capabilities("memory", {"capabilities": 5}) is None
    assert declared_capabilities("memory", {"capabilities": ["nope"]}) is None
    assert declared_capabilities("netlink", {"state_dir": "/x"}) == declared_capabilities(
        "netlink")


@pytest.mark.parametrize(("memory", "refused"), [("", True), ("{capabilities: [nat]}", False)])
def test_k3snet_validate_refuses_netlink_beside_a_memory_backend_of_its_kinds(
        memory: str, refused: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The command itself: `backends: [netlink, memory]` passed and plan refused it."""
    path = tmp_path / "spec.yaml"
    path.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                    "cluster: {podCIDRs: [10.42.0.0/16]}\n"
                    f"backends: {{netlink: {{}}, memory: {memory or '{}'}}}\n")
    code = main(["validate", "-f", str(path)])
    said = capsys.readouterr().err
    assert (code != 0) == refused, said
    assert ("both 'netlink' and 'memory' would manage route, sysctl" in said) == refused, said
