"""``k3snet validate``'s refusal of two backends managing one kind agrees with what
``plan``, ``apply`` and the agent refuse, for every combination of the built-in backends."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k3snet.backends.registry import backend_options, declared_capabilities
from k3snet.cli import _backend, build_parser
from k3snet.errors import ModelError
from k3snet.lab.netns import temporary_netns
from k3snet.spec import Spec
from k3snet.spec.backends import backend_option_problems

pytestmark = pytest.mark.kernel

# memory is left out: its kinds are its `capabilities` option's (see the report of
# review18-crossm); validate does not judge it.
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
