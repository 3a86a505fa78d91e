"""Compile makes every kind from values (spec, facts, CNI targets) and never observes."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import attrs
import pytest

from k3snet import Plan, Spec, SpecError, State, plan
from k3snet.backends.group import BackendGroup
from k3snet.converge import compile_for
from k3snet.errors import ModelError
from k3snet.model import CalicoPodCIDR, FlannelConfig, FlannelNetworks, IPPool
from k3snet.planner import Note
from k3snet.spec import NodeFacts, seed_spec
from k3snet.spec import compile as compile_spec

ROOT = Path(__file__).resolve().parents[2] / "k3snet"
TARGET = "file:/etc/k3s/flannel.json"


class _Unobservable:
    """A backend that fails the test if anything observes it."""

    def __init__(self, name: str, kinds: set[str], target: str | None = None) -> None:
        self.name = name
        self.capabilities = frozenset(kinds)
        if target is not None:
            self.target = target

    def observe(self) -> State:
        raise AssertionError(f"compile observed the {self.name} backend")

    def __getattr__(self, name: str) -> Any:
        if name in {"target", "protocol"}:  # plain attributes compile_for reads, not set
            raise AttributeError(name)
        if name == "beside":  # BackendGroup's optional hint, asked when the group is built
            raise AttributeError(name)
        raise AssertionError(f"compile used {self.name}.{name}")


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any level, relative imports resolved."""
    package = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", _modules("backends"), ids=lambda p: p.name)
def test_no_backend_imports_the_spec(path: Path) -> None:
    spec = {m for m in _imports(path) if m == "k3snet.spec" or m.startswith("k3snet.spec.")}
    assert not spec, f"{path.relative_to(ROOT.parent)} imports {sorted(spec)}"


@pytest.mark.parametrize("path", _modules("spec"), ids=lambda p: p.name)
def test_the_spec_imports_no_backend(path: Path) -> None:
    backends = {m for m in _imports(path) if m.startswith("k3snet.backends")}
    assert not backends, f"{path.relative_to(ROOT.parent)} imports {sorted(backends)}"


def test_the_import_scan_sees_imports() -> None:
    found = _imports(ROOT / "converge.py")
    assert "k3snet.spec.compile" in found  # so the tests above can fail


def test_compile_for_never_observes() -> None:
    spec = Spec.from_dict({"destinations": [{"cidr": "192.168.2.0/24", "device": "eth0"}],
                           "cni": {"calico": {}}})
    group = BackendGroup([
        _Unobservable("node", {"route", "sysctl", "nat", "forward"}),
        _Unobservable("flannel", {"flannel"}, target=TARGET),
        _Unobservable("calico", {"ippool"}),
    ])
    desired = compile_for(group, spec)
    assert set(desired.kinds()) == {"sysctl", "flannel", "route", "ippool", "forward", "nat"}
    assert FlannelNetworks(TARGET, ["10.42.0.0/16"]) in desired.owned
    alone = compile_for(_Unobservable("flannel", {"flannel"}, target=TARGET), spec)
    assert alone.owned == {FlannelNetworks(TARGET, ["10.42.0.0/16"])}


def test_flannel_settings_compile_to_the_target_config() -> None:
    spec = Spec.from_dict({"cluster": {"podCIDRs": ["10.42.0.0/16", "fd42::/56"]},
                           "cni": {"flannel": {"backend": {"type": "host-gw"}}}})
    # The settings are written; the pod CIDRs are only checked against flannel's networks.
    assert compile_spec(spec, flannel_targets=[TARGET]).only(["flannel"]).owned == {
        FlannelConfig(TARGET, backend_type="host-gw"),
        FlannelNetworks(TARGET, ["10.42.0.0/16", "fd42::/56"]),
    }
    spec = Spec.from_dict({"cluster": {"podCIDRs": ["10.42.0.0/16", "fd42::/56"]},
                           "cni": {"flannel": {"backend": {"type": "host-gw"},
                                               "setNetworks": True}}})
    (config,) = compile_spec(spec, flannel_targets=[TARGET]).only(["flannel"])
    assert config == FlannelConfig(TARGET, network="10.42.0.0/16", ipv6_network="fd42::/56",
                                   enable_ipv6=True, backend_type="host-gw")


def test_an_empty_cni_flannel_never_wants_another_network() -> None:
    """cni.flannel: {} on a 10.244.0.0/16 cluster: a conflict, never a rewrite to 10.42.0.0/16."""
    spec = Spec.from_dict({"cni": {"flannel": {}}})
    wanted = compile_spec(spec, flannel_targets=[TARGET]).only(["flannel"])
    assert wanted.owned == {FlannelNetworks(TARGET, ["10.42.0.0/16"])}
    foreign = FlannelConfig(TARGET, network="10.244.0.0/16", backend_type="vxlan")
    p = plan(State(foreign=[foreign]), wanted)
    assert p.changes == ()
    (note,) = p.conflicts
    assert "disagrees with flannel's Network 10.244.0.0/16" in str(note.reason)


def test_flannel_backend_options_need_the_type() -> None:
    spec = Spec.from_dict({"cni": {"flannel": {"backend": {"options": {"MTU": 1400}}}}})
    with pytest.raises(SpecError, match=r"cni.flannel.backend.options: needs "
                                        r"cni.flannel.backend.type"):
        compile_spec(spec, flannel_targets=[TARGET])


def test_flannel_takes_one_network_per_family() -> None:
    spec = Spec.from_dict({"cluster": {"podCIDRs": ["10.42.0.0/16", "10.52.0.0/16"]},
                           "cni": {"flannel": {}}})
    assert compile_spec(spec).only(["flannel"]).owned == frozenset()  # no target, no check
    with pytest.raises(SpecError, match=r"cluster.podCIDRs: flannel takes one IPv4 network"):
        compile_spec(spec, flannel_targets=[TARGET])


def test_calico_settings_compile_to_pools() -> None:
    spec = Spec.from_dict({"cni": {"calico": {"ipipMode": "Always", "blockSize": 24}}})
    # Never an enabled pool: the pod CIDR must be a pool with those settings (an expectation).
    assert [o for o in compile_spec(spec) if isinstance(o, IPPool)] == []
    (pods,) = [o for o in compile_spec(spec) if isinstance(o, CalicoPodCIDR)]
    assert pods.describe() == ('calico pod CIDR 10.42.0.0/16 is a pool natOutgoing '
                               'blockSize=24 ipipMode="Always"')
    assert pods.expectation
    with pytest.raises(SpecError, match=r"cni.calico.blockSize: expected 20..32"):
        Spec.from_dict({"cni": {"calico": {"blockSize": 2}}})
    with pytest.raises(SpecError, match=r"cni.calico.blockSize: blockSize 24 is not "
                                        r"116..128"):  # an IPv4 block for IPv6 pods
        Spec.from_dict({"cluster": {"podCIDRs": ["fd42:42::/56"]},
                        "cni": {"calico": {"blockSize": 24}}})


def test_a_disagreeing_flannel_network_is_a_conflict_with_its_reason() -> None:
    wanted = compile_spec(Spec(), flannel_targets=[TARGET]).only(["flannel"])
    foreign = FlannelConfig(TARGET, network="10.244.0.0/16", backend_type="vxlan")
    p = plan(State(foreign=[foreign]), wanted)
    assert p.empty
    (note,) = p.conflicts
    assert note.reason is not None
    assert note.reason.startswith("pod CIDR 10.42.0.0/16 disagrees with flannel's Network "
                                  "10.244.0.0/16 in file:/etc/k3s/flannel.json")
    assert p.render().splitlines()[1:] == [
        f"! flannel {TARGET} expects Network=10.42.0.0/16",
        f'    (conflicts with foreign: flannel {TARGET} Network=10.244.0.0/16 '
        'Backend={"Type":"vxlan"})',
        f"    ({note.reason})",
    ]
    assert Plan.from_json(p.to_json()) == p
    assert p.target(wanted) == frozenset()


@pytest.mark.parametrize("foreign", [
    [],  # no config observed yet
    [FlannelConfig(TARGET, network="10.42.0.0/16")],  # agrees
    [FlannelConfig(TARGET, backend_type="vxlan")],  # no Network key
    [FlannelConfig("file:/other.json", network="10.244.0.0/16")],  # another target
])
def test_an_expectation_is_never_written(foreign: list[FlannelConfig]) -> None:
    wanted = State(owned=[FlannelNetworks(TARGET, ["10.42.0.0/16"])])
    p = plan(State(foreign=foreign), wanted)
    assert p.empty
    assert not p.notes
    assert p.apply_to(State(foreign=foreign)).owned == p.target(wanted) == frozenset()


def test_a_note_without_reason_keeps_its_json_form() -> None:
    note = Note("met", FlannelConfig(TARGET, network="10.42.0.0/16"),
                FlannelConfig(TARGET, network="10.42.0.0/16"))
    assert "reason" not in note.to_dict()
    assert Note.from_dict(note.to_dict()) == note


@pytest.mark.parametrize("kind", ["vxlan", "host-gw", "wireguard", "ipip", "tencent-vpc"])
def test_every_flannel_type_the_spec_accepts_compiles(kind: str) -> None:
    spec = Spec.from_dict({"cni": {"flannel": {"backend": {"type": kind}}}})
    assert FlannelConfig(TARGET, backend_type=kind) in compile_spec(
        spec, flannel_targets=[TARGET]).owned


def test_flannel_types_are_flannel_s_names() -> None:
    with pytest.raises(SpecError, match=r"cni.flannel.backend.type"):
        Spec.from_dict({"cni": {"flannel": {"backend": {"type": "alivpc"}}}})


@pytest.mark.parametrize("kind", ["ali-vpc", "aws-vpc", "gce"])
def test_flannel_types_flannel_removed_are_refused(kind: str) -> None:
    """flannel v0.20.0 removed these backends (flannel-io/flannel bb65738, "Remove obsolete
    cloud backends"): flanneld stops with "unknown backend type" on them."""
    with pytest.raises(SpecError, match=r"cni.flannel.backend.type"):
        Spec.from_dict({"cni": {"flannel": {"backend": {"type": kind}}}})
    with pytest.raises(ModelError, match=f"Backend.Type '{kind}' is not one of"):
        FlannelConfig(TARGET, backend_type=kind)


@pytest.mark.parametrize("extra", [
    {"facts": NodeFacts(interfaces={"eth0": ["192.168.1.5/24"]})},
    {"flannel_targets": ["configmap:kube-flannel/kube-flannel-cfg"]},
], ids=["with facts", "with flannel targets"])
def test_a_spec_built_in_code_is_validated_whatever_else_compile_checks(
        extra: dict[str, Any]) -> None:
    seed = seed_spec()
    bad = attrs.evolve(seed, agent=attrs.evolve(seed.agent, interval_seconds=0))
    with pytest.raises(SpecError, match=r"agent\.intervalSeconds: must be 1\.\.86400, got 0"):
        compile_spec(bad, **extra)


def _nat(spec: Spec) -> list[str]:
    return sorted(o.describe() for o in compile_spec(spec).owned if o.kind == "nat")


def test_a_destination_inside_a_masqueraded_one_keeps_its_masquerade_false() -> None:
    # The /16's rule translated traffic to the /24 the spec exempts; mode all, Calico (a
    # disabled pool) and Cilium (an exempt CIDR) leave it alone.
    spec = Spec.from_dict({"destinations": [
        {"cidr": "192.168.0.0/16"}, {"cidr": "192.168.2.0/24", "masquerade": False},
        {"cidr": "192.168.2.0/26"}]})
    assert _nat(spec) == [
        "masquerade 10.42.0.0/16 -> 192.168.0.0/16 except 192.168.2.0/24",
        "masquerade 10.42.0.0/16 -> 192.168.2.0/26"]


def test_the_exclude_of_a_destination_inside_a_masqueraded_one_is_kept() -> None:
    # An outer destination's exclude stays its own: the /24 inside it decides for itself.
    spec = Spec.from_dict({"destinations": [
        {"cidr": "192.168.0.0/16", "exclude": ["192.168.3.0/24"]},
        {"cidr": "192.168.2.0/24", "exclude": ["192.168.2.128/25"]},
        {"cidr": "192.168.3.0/24"}]})
    assert _nat(spec) == [
        "masquerade 10.42.0.0/16 -> 192.168.0.0/16 except 192.168.2.128/25,192.168.3.0/24",
        "masquerade 10.42.0.0/16 -> 192.168.2.0/24 except 192.168.2.128/25",
        "masquerade 10.42.0.0/16 -> 192.168.3.0/24"]


def test_a_destination_all_of_which_destinations_inside_it_exempt_has_no_rule() -> None:
    spec = Spec.from_dict({"destinations": [
        {"cidr": "192.168.0.0/16"}, {"cidr": "192.168.0.0/17", "masquerade": False},
        {"cidr": "192.168.128.0/17", "masquerade": False}]})
    assert _nat(spec) == []
