"""`resolve_backend_options`: given options, then the implicit ones (only to a backend that
declares them), then explicit overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from k3snet.backends.options import resolve_backend_options
from k3snet.errors import BackendOptionError


def test_given_options_are_overridden_by_implicit_then_explicit_ones() -> None:
    environ = {"K3SNET_STATE_DIR": "/run/k3snet", "K3SNET_FLANNEL_CONF": "/x"}
    options = resolve_backend_options(
        "netlink", {"state_dir": "/spec", "proc_sys": "/proc/sys"}, netns="node1",
        environ=environ, explicit={"proc_sys": "/explicit"})
    assert options == {"state_dir": Path("/run/k3snet"), "proc_sys": "/explicit",
                       "netns": "node1"}


def test_implicit_options_go_only_to_a_backend_that_declares_them() -> None:
    # The memory backend declares neither a namespace nor allow_disruptive.
    assert resolve_backend_options("memory", None, netns="node1", allow_disruptive=True,
                                   environ={"K3SNET_STATE_DIR": "/run"}) == {}
    assert resolve_backend_options("memory", {"x": 1}, environ={}) == {"x": 1}


def test_implicit_options_go_to_a_backend_that_takes_any_keyword() -> None:
    """A factory taking ``**options`` declares nothing by name (backend_options is empty:
    nothing to check against) but takes every option; --netns used to be dropped for it,
    so a plugin's backend acted outside the namespace asked for without a word."""
    from k3snet.backends.memory import MemoryBackend  # noqa: PLC0415
    from k3snet.backends.registry import register_backend, unregister_backend  # noqa: PLC0415

    def any_keyword(**options: object) -> MemoryBackend:
        return MemoryBackend()

    register_backend("takes-any", any_keyword)
    try:
        assert resolve_backend_options("takes-any", {"x": 1}, netns="node1",
                                       allow_disruptive=True, pod_cidrs=["10.42.0.0/16"],
                                       environ={}) == {
            "x": 1, "netns": "node1", "allow_disruptive": True}
    finally:
        unregister_backend("takes-any")


def test_the_specs_pod_cidrs_go_to_the_netlink_backend_alone() -> None:
    """The netlink backend judges IPv6 source-specific routes by the pod CIDRs; it is
    built from a spec with them (a plugin's ``**options`` factory is not given them)."""
    assert resolve_backend_options("netlink", None, pod_cidrs=["fd42:42::/56"],
                                   environ={}) == {"pod_cidrs": ["fd42:42::/56"]}
    assert resolve_backend_options("memory", None, pod_cidrs=["fd42:42::/56"],
                                   environ={}) == {}


def test_the_cli_builds_the_netlink_backend_with_the_specs_pod_cidrs() -> None:
    import argparse  # noqa: PLC0415

    from k3snet.cli import _options  # noqa: PLC0415
    from k3snet.spec import Spec  # noqa: PLC0415
    from k3snet.spec.model import Cluster  # noqa: PLC0415

    spec = Spec(cluster=Cluster(pod_cidrs=["10.42.0.0/16", "fd42:42::/56"]))
    args = argparse.Namespace(netns=None, allow_disruptive=False, backend_opt=[])
    assert _options("netlink", args, spec)["pod_cidrs"] == ["10.42.0.0/16", "fd42:42::/56"]


@pytest.mark.parametrize(("variable", "backend"), [
    ("K3SNET_STATE_DIR", "netlink"), ("K3SNET_PROC_SYS", "netlink"),
    ("K3SNET_FLANNEL_CONF", "flannel")])
def test_a_relative_path_from_the_environment_is_refused(variable: str, backend: str) -> None:
    # Relative, it named another file from each working directory: the sysctl record a
    # cron job kept under $HOME/state was not the one an apply run elsewhere read.
    with pytest.raises(BackendOptionError, match=rf"\${variable} 'state' is not an absolute"):
        resolve_backend_options(backend, None, environ={variable: "state"})


def test_the_cli_says_a_relative_state_dir_is_refused(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from k3snet.cli import main  # noqa: PLC0415

    monkeypatch.setenv("K3SNET_STATE_DIR", "state")
    seed = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
    assert main(["plan", "-f", str(seed), "--backend", "netlink", "--no-facts"]) == 1
    assert "$K3SNET_STATE_DIR 'state' is not an absolute path" in capsys.readouterr().err
