"""Calico's meaning of the fields k3snet reads and writes (kills the issue's surviving mutants)."""

from __future__ import annotations

import pytest

from k3snet.backends.calico import pool_from_resource
from k3snet.errors import ModelError, SpecError
from k3snet.model.cni import CalicoPodCIDR
from k3snet.spec import Destination, MasqueradePolicy, Spec, compile_ippools
from k3snet.spec import compile as compile_spec


def _resource(**spec: object) -> dict[str, object]:
    return {"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
            "metadata": {"name": "default-ipv4-ippool"},
            "spec": {"cidr": "10.42.0.0/16", **spec}}


def test_a_pool_without_nat_outgoing_does_not_masquerade() -> None:
    # Calico's default for an omitted natOutgoing is false.
    assert pool_from_resource(_resource()).nat_outgoing is False
    assert pool_from_resource(_resource(natOutgoing=True)).nat_outgoing is True
    assert pool_from_resource(_resource(natOutgoing=False)).nat_outgoing is False


@pytest.mark.parametrize(("mode", "nat"), [("destinations", True), ("all", True), ("off", False)])
def test_pod_pools_masquerade_in_every_mode_but_off(mode: str, nat: bool) -> None:
    spec = Spec(destinations=[Destination("192.168.2.0/24")],
                masquerade=MasqueradePolicy(mode=mode))  # type: ignore[arg-type]
    pods = [p for p in compile_ippools(spec).owned if isinstance(p, CalicoPodCIDR)]
    assert pods
    assert {p.nat_outgoing for p in pods} == {nat}


LINK_LOCAL_SPEC = """\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
cluster: {podCIDRs: [10.42.0.0/16, "fd42::/48"]}
destinations:
%s
cni:
  calico: {}
"""


@pytest.mark.parametrize(("destinations", "path"), [
    ("  - {cidr: 169.254.169.254/32, masquerade: false}", "destinations[0].cidr"),
    ("  - {cidr: 192.168.2.0/24}\n  - {cidr: 169.254.0.0/16, exclude: [169.254.169.254/32]}",
     "destinations[1].exclude[0]"),
    ("  - {cidr: \"fe80::/64\", masquerade: false}", "destinations[0].cidr"),
])
def test_an_exemption_calico_cannot_express_is_a_spec_problem_never_dropped(
    destinations: str, path: str
) -> None:
    # Calico refuses IP pools in link-local ranges, and Felix masquerades pod traffic
    # to every address outside all pools: such an exemption cannot be met, and was
    # dropped without a word (the plan looked clean).
    spec = Spec.from_yaml(LINK_LOCAL_SPEC % destinations)
    with pytest.raises(SpecError) as info:
        compile_ippools(spec)
    (problem,) = info.value.problems
    assert problem.path == path
    assert "Calico masquerades pod traffic to link-local" in problem.message
    with pytest.raises(SpecError):
        compile_spec(spec)


def test_link_local_is_judged_only_where_calico_masquerades() -> None:
    exempt = LINK_LOCAL_SPEC % "  - {cidr: 169.254.169.254/32, masquerade: false}"
    off = Spec.from_yaml(exempt.replace("cni:", "masquerade: {mode: \"off\"}\ncni:"))
    assert compile_ippools(off).owned  # no NAT at all: nothing to exempt
    assert compile_spec(Spec.from_yaml(exempt.replace("cni:\n  calico: {}\n", "")))
    masqueraded = LINK_LOCAL_SPEC % "  - {cidr: 169.254.169.254/32}"
    assert compile_ippools(Spec.from_yaml(masqueraded)).owned  # Calico does NAT it


@pytest.mark.parametrize("cidr", [" 10.60.0.0/16", "10.60.0.0/16\n", "10.60.0.1",
                                  "fe80::%eth0/64", "10.60.0.0 /16"])
def test_a_pool_cidr_go_s_parser_refuses_is_unreadable_not_read_as_another(cidr: str) -> None:
    # Calico parses a pool's CIDR with Go's net.ParseCIDR: an address, "/" and a prefix
    # length, nothing around them (the CRDs store any string). k3snet trimmed blanks and
    # took an address without a prefix for a /32 (/128): such a pool was judged as the
    # CIDR Calico cannot read (an exemption met, a pod CIDR served).
    resource = {"metadata": {"name": "odd"}, "spec": {"cidr": cidr, "blockSize": 32}}
    with pytest.raises(ModelError, match=r"net\.ParseCIDR"):
        pool_from_resource(resource)
