"""`resolve_backend_options`: given options, then the implicit ones (only to a backend that
declares them), then explicit overrides."""

from __future__ import annotations

from pathlib import Path

from k3snet.backends.options import resolve_backend_options


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
