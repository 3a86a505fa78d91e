"""A spec's backend option values are judged by ``k3snet validate`` as the backend judges
them when built: each backend's own checks, without building it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from k3snet import Spec
from k3snet.backends.registry import backend_options, create_backend, option_problems
from k3snet.cli import main
from k3snet.errors import K3snetError
from k3snet.spec.backends import backend_option_problems
from tests.iptables.test_recorded import FakeKernel
from tests.nftables.test_recorded import RecordedKernel

HEADER = ("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
          "cluster:\n  podCIDRs: [10.42.0.0/16]\n")

# (backend, option, a value its constructor refuses)
REFUSED = [
    ("nftables", "table", "k3s net"),
    ("nftables", "table", "table"),  # a word of nft's language
    ("nftables", "family", "ip"),
    ("nftables", "read_timeout", "10"),
    ("nftables", "keep_read", "no"),
    ("netlink", "tables", [0]),
    ("netlink", "tables", [4294967296]),
    ("netlink", "tables", 100),
    ("netlink", "protocol", 3),
    ("netlink", "protocol", 16),  # dhcp's
    ("netlink", "watch_sysctls", "net.ipv4.ip_forward"),
    ("netlink", "state_dir", 5),
    ("iptables", "mode", "nf"),
    ("iptables", "driver", "iptables-restore"),
    ("iptables", "timeout", 0),
    ("calico", "api", "v4"),
    ("calico", "timeout", "10"),
    ("calico", "field_manager", ""),
    ("calico", "allow_disruptive", "yes"),
    ("calico", "kubeconfig", 3),
    ("flannel", "configmap", "Kube-Flannel/cfg"),
    ("flannel", "configmap", "kube-flannel"),
    ("flannel", "timeout", True),
    ("flannel", "path", 5),
    ("cilium", "configmap", "kube-system/Cilium"),
    ("cilium", "ip_masq_agent", "cilium-config"),
    ("cilium", "ip_masq_agent", 5),
    ("cilium", "timeout", -1),
    # A namespace's name is a file of /run/netns: validate let these through, and each
    # node's first apply failed on them.
    ("netlink", "netns", "lab/../x"),
    ("netlink", "netns", ".."),
    ("nftables", "netns", "x" * 256),
    ("nftables", "netns", ""),
    ("iptables", "netns", "a\u0000b"),
    ("iptables", "netns", 5),
]


def _build(name: str, option: str, value: Any) -> Any:
    """Backend ``name`` built with ``option`` set to ``value``, where nothing is reached:
    fake kernels, an API client object that is never called."""
    extra: dict[str, dict[str, Any]] = {
        "nftables": {"kernel": lambda: RecordedKernel("k3s-node")},
        "iptables": {"kernel": FakeKernel.recorded("nft")},
        "netlink": {},
        "calico": {"api_client": object()},
        "cilium": {"api_client": object()},
        "flannel": {} if option in ("path", "configmap") else {"path": "/nonexistent/net-conf"},
    }
    return create_backend(name, **{**extra[name], option: value})


@pytest.mark.parametrize(("name", "option", "value"), REFUSED)
def test_validate_refuses_at_its_path_each_value_the_backend_refuses(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, option: str,
        value: Any) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(HEADER + "backends:\n  " + name + ": " + json.dumps({option: value}) + "\n")
    assert main(["validate", "-f", str(spec), "--output", "json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert [p["path"] for p in document["problems"]] == [f"backends.{name}.{option}"]
    # The same value is refused when the backend is built (the same checks).
    with pytest.raises(K3snetError):
        _build(name, option, value).close()


@pytest.mark.parametrize("name", ["nftables", "netlink", "iptables", "calico", "flannel",
                                  "cilium"])
def test_option_checks_pass_the_defaults_and_reach_no_kernel_nor_api(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # No kubeconfig to load, no namespace: a check that built anything would fail.
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    defaults = {option: parameter.default for option, parameter in
                backend_options(name).items() if parameter.default is not parameter.empty}
    assert option_problems(name, defaults) == []
    assert option_problems(name, {**defaults, "netns": "h-missing-namespace"}) == []


def test_good_values_pass_and_a_json_table_may_be_a_word_of_nft() -> None:
    spec = Spec.from_dict({"backends": {
        "nftables": {"table": "table", "syntax": "json", "family": "split"},
        "netlink": {"tables": [100, 254], "protocol": 211, "state_dir": "/run/k3snet"},
        "iptables": {"mode": "legacy", "timeout": 5},
        "cilium": {"configmap": "kube-system/cilium-config", "ip_masq_agent": "masq"}}})
    assert backend_option_problems(spec, backend_options, values=option_problems) == []


def test_an_unknown_or_relative_option_is_said_once() -> None:
    spec = Spec.from_dict({"backends": {"netlink": {"state_dir": "run", "tabels": [0]}}})
    problems = backend_option_problems(spec, backend_options, values=option_problems,
                                       paths=lambda _name: ["state_dir"])
    assert [p.path for p in problems] == ["backends.netlink.tabels", "backends.netlink.state_dir"]


def test_plan_names_the_spec_path_of_a_value_before_building_any_backend(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """plan, apply and the agent build their backends through one recipe, which checks
    the spec's options first: the constructor's error named no spec path."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(HEADER + "backends:\n  memory: {}\n  nftables: {table: 'k3s net'}\n")
    assert main(["plan", "-f", str(spec), "--backend", "nftables", "--no-facts",
                 "--netns", "h-yaml-never-made"]) == 1
    err = capsys.readouterr().err
    assert "backends.nftables.table: nftables table name 'k3s net' must be" in err
