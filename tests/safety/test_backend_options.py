"""Backend options of the wrong type or out of range: one error naming the option, first.

Options come from a spec's ``backends:`` section or ``--backend-opt NAME.KEY=VALUE``
(JSON, else text): ``"false"`` is text, and text is truthy, so a flag that took any
value would turn ``allow_disruptive: "false"`` into yes; ``1e309`` is infinity and
``NaN`` a float. Each must be refused as the backend is built, before it connects to
a kernel or an API server (no kubeconfig exists here: reaching one is the wrong error).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from k3snet.backends.registry import create_backend
from k3snet.errors import BackendError, K3snetError, ModelError

INFINITY = json.loads("1e309")
NAN = json.loads("NaN")

#: (backend, option) -> the values it must refuse
HOSTILE: dict[tuple[str, str], list[object]] = {
    ("calico", "timeout"): ["inf", INFINITY, NAN, 0, -1, True, "30"],
    ("calico", "allow_disruptive"): ["false", "no", 0, 1, None],
    ("calico", "field_manager"): [5, ["k3snet"], ""],
    ("calico", "kubeconfig"): [5, ["/root/.kube/config"]],
    ("calico", "context"): [5, {"name": "x"}],
    ("flannel", "timeout"): [INFINITY, NAN, 0, "inf"],
    ("flannel", "allow_disruptive"): ["false", 1],
    ("cilium", "timeout"): [INFINITY, NAN, -5],
    ("cilium", "allow_disruptive"): ["no", 0],
    ("cilium", "ip_masq_agent"): [5, ["ip-masq-agent"]],
    ("iptables", "timeout"): ["inf", INFINITY, NAN, 0, -3, False],
    ("nftables", "read_timeout"): ["inf", INFINITY, NAN, 0],
    ("nftables", "keep_read"): ["false", 0],
}


@pytest.mark.parametrize(("backend", "option", "value"), [
    (backend, option, value) for (backend, option), values in HOSTILE.items()
    for value in values])
def test_a_hostile_option_is_refused_naming_it_before_connecting(
        backend: str, option: str, value: object) -> None:
    with pytest.raises(K3snetError) as raised:
        create_backend(backend, **{option: value})
    assert isinstance(raised.value, ModelError | BackendError)
    assert option in str(raised.value)
    assert "Kubernetes API" not in str(raised.value)


def test_a_quoted_false_never_allows_disruptive_changes_through_the_cli(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                    "destinations:\n  - cidr: 192.168.2.0/24\n"
                    "backends:\n  calico:\n    allow_disruptive: 'false'\n")
    done = subprocess.run([sys.executable, "-m", "k3snet.cli", "plan", "-f", str(spec),
                           "--backend", "calico"], capture_output=True, text=True,
                          check=False, timeout=120)
    assert done.returncode != 0
    assert "allow_disruptive must be true or false, got 'false'" in done.stderr
    assert "internal error" not in done.stderr


def test_a_backend_opt_value_nested_too_deep_for_json_is_text_not_an_internal_error(
        tmp_path: Path) -> None:
    # A VALUE is JSON when it parses, else the text; one nested deeper than Python's JSON
    # parser goes raised a RecursionError out of the argument parser (a traceback).
    spec = tmp_path / "spec.yaml"
    spec.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                    "destinations:\n  - cidr: 192.168.2.0/24\n")
    deep = "[" * 2000 + "]" * 2000
    done = subprocess.run([sys.executable, "-m", "k3snet.cli", "plan", "-f", str(spec),
                           "--backend", "calico", "--backend-opt",
                           f"calico.field_manager={deep}"],
                          capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode != 0
    assert "RecursionError" not in done.stderr
    assert "internal error" not in done.stderr
