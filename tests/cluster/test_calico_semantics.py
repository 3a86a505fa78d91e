"""Calico's meaning of the fields k3snet reads and writes (kills the issue's surviving mutants)."""

from __future__ import annotations

import pytest

from k3snet.backends.calico import pool_from_resource
from k3snet.model.cni import CalicoPodCIDR
from k3snet.spec import Destination, MasqueradePolicy, Spec, compile_ippools


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
