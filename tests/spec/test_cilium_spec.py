"""``cni.cilium`` in the spec, and what it compiles to."""

from __future__ import annotations

import attrs
import pytest

from k3snet.errors import SpecError
from k3snet.model.cilium import CILIUM_DEFAULT_TARGET, CiliumConfig, CiliumMasquerade
from k3snet.spec import CiliumSettings, Spec, compile_cilium, seed_spec
from k3snet.spec import compile as compile_spec

TARGET = CILIUM_DEFAULT_TARGET

CILIUM = {
    "routingMode": "native",
    "tunnelProtocol": "geneve",
    "ipv4NativeRoutingCIDR": "10.42.0.0/16",
    "enableIPv4Masquerade": True,
    "bpfMasquerade": True,
    "ipMasqAgent": True,
    "egressMasqueradeInterfaces": "eth0",
    "nonMasqueradeCIDRs": ["10.0.0.0/8"],
    "masqLinkLocal": True,
}


def _spec(cilium: dict[str, object]) -> Spec:
    return Spec.from_dict({**seed_spec().to_dict(), "cni": {"cilium": cilium}})


def test_cni_cilium_reads_and_writes_back() -> None:
    spec = _spec(CILIUM)
    settings = spec.cni.cilium
    assert isinstance(settings, CiliumSettings)
    assert str(settings.ipv4_native_routing_cidr) == "10.42.0.0/16"
    written = spec.to_dict()["cni"]["cilium"]
    assert {k: v for k, v in written.items() if v is not None} == CILIUM
    assert Spec.from_dict(spec.to_dict()) == spec
    assert "cilium" not in seed_spec().to_dict().get("cni", {})


@pytest.mark.parametrize(("key", "value", "message"), [
    ("routingMode", "Native", "expected one of tunnel, native, got 'Native'"),
    ("ipv4NativeRoutingCIDR", "fd00::/64", "expected an IPv4 CIDR"),
    ("ipv4NativeRoutingCIDR", "10.42.0.1/16", "host bits"),
    ("bpfMasquerade", "true", "expected true or false"),
    ("egressMasqueradeInterfaces", "eth0;reboot", "not a list of interface names"),
])
def test_bad_values_name_their_path(key: str, value: object, message: str) -> None:
    with pytest.raises(SpecError, match=f"cni.cilium.{key}: .*{message}"):
        _spec({key: value})


def test_only_the_named_keys_are_wanted() -> None:
    state = compile_cilium(_spec({"bpfMasquerade": True, "nonMasqueradeCIDRs": []}),
                           target=TARGET)
    (config,) = [o for o in state if isinstance(o, CiliumConfig)]
    assert dict(config.settings) == {"enable-bpf-masquerade": "true"}
    assert config.ip_masq_agent == {"nonMasqueradeCIDRs": []}
    (expected,) = [o for o in state if isinstance(o, CiliumMasquerade)]
    assert expected.wanted == config


def test_the_expectation_follows_the_masquerade_policy() -> None:
    data = seed_spec().to_dict()
    data["destinations"] = [
        {"cidr": "192.168.2.0/24", "gateway": "192.168.1.1", "device": "eth0",
         "exclude": ["192.168.2.8/29"]},
        {"cidr": "192.168.7.0/24", "masquerade": False},
    ]
    (expected,) = compile_cilium(Spec.from_dict(data), target=TARGET)
    assert isinstance(expected, CiliumMasquerade)
    assert [(str(n), d) for n, d in expected.masquerade] == [("192.168.2.0/24", "eth0")]
    assert [str(n) for n in expected.exempt] == ["192.168.7.0/24"]
    # The exclude of a destination through eth0 leaves through eth0.
    assert [(str(n), d) for n, d in expected.exempt_via] == [("192.168.2.8/29", "eth0")]
    data["masquerade"] = {"mode": "off"}
    (expected,) = compile_cilium(Spec.from_dict(data), target=TARGET)
    assert isinstance(expected, CiliumMasquerade)
    assert not expected.masquerade
    assert not expected.exempt
    assert [str(n) for n in expected.pod_cidrs] == ["10.42.0.0/16"]


def test_compile_takes_cilium_targets() -> None:
    state = compile_spec(_spec({"bpfMasquerade": True}), cilium_targets=[TARGET]).only(["cilium"])
    assert sorted(type(o).__name__ for o in state) == ["CiliumConfig", "CiliumMasquerade"]
    assert not compile_spec(seed_spec()).only(["cilium"]).owned


def test_the_expectation_skips_only_destinations_of_a_family_without_pods() -> None:
    # Validation refuses such a destination; a spec changed in code can still hold one,
    # and the destinations after it are still expected.
    data = seed_spec().to_dict()
    data["cluster"]["podCIDRs"].append("fd42::/56")
    data["destinations"].append({"cidr": "fd00:2::/64", "gateway": "fd00:1::1", "device": "eth1"})
    spec = Spec.from_dict(data)
    v6_only = attrs.evolve(spec.cluster, pod_cidrs=spec.cluster.pods(6))
    assert [d.family for d in spec.destinations] == [4, 6]
    (expected,) = compile_cilium(attrs.evolve(spec, cluster=v6_only), target=TARGET)
    assert isinstance(expected, CiliumMasquerade)
    assert [(str(n), d) for n, d in expected.masquerade] == [("fd00:2::/64", "eth1")]
