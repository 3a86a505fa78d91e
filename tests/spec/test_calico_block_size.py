"""``cni.calico.blockSize``: one integer for a single-stack cluster, one per family for a
dual-stack one.

Calico takes 20..32 for an IPv4 pool's ``blockSize`` and 116..128 for an IPv6 one
(defaults 26 and 122), so no integer fits both families: a dual-stack spec gives
``blockSize: {ipv4: N, ipv6: M}``. Each pod CIDR's pool must then have its family's
size; every problem is at ``cni.calico.blockSize`` or at the family's key.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from k3snet import Spec, SpecError
from k3snet import compile as compile_spec
from k3snet.model.cni import BLOCK_SIZE_RANGE, CalicoPodCIDR
from k3snet.spec import BlockSizes, CalicoSettings, Cluster, CniSettings, validate
from k3snet.spec.json_schema import spec_json_schema

V4, V6 = "10.42.0.0/16", "fd42::/56"
DUAL = {"podCIDRs": [V4, V6], "serviceCIDRs": ["10.43.0.0/16", "fd43::/112"]}
SINGLE = {4: {"podCIDRs": [V4], "serviceCIDRs": ["10.43.0.0/16"]},
          6: {"podCIDRs": [V6], "serviceCIDRs": ["fd43::/112"]}}
OTHER = {4: 6, 6: 4}
PATH = "cni.calico.blockSize"


def _document(cluster: dict[str, Any], block_size: Any) -> dict[str, Any]:
    return {"cluster": cluster, "cni": {"calico": {"blockSize": block_size}}}


def _required(spec: Spec) -> dict[int, int | None]:
    """The blockSize compile requires of each family's pod CIDR pool (None: any)."""
    return {o.cidr.version: o.requires.get("blockSize") for o in compile_spec(spec)
            if isinstance(o, CalicoPodCIDR)}


def _paths(document: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as info:
        Spec.from_dict(document)
    return [p.path for p in info.value.problems]


def test_a_dual_stack_spec_gives_each_family_its_own_block_size() -> None:
    spec = Spec.from_dict(_document(DUAL, {"ipv4": 24, "ipv6": 120}))
    assert spec.cni.calico is not None
    assert spec.cni.calico.block_size == BlockSizes(ipv4=24, ipv6=120)
    assert _required(spec) == {4: 24, 6: 120}
    # The written form reads back to the same spec, the mapping as given.
    assert spec.to_dict()["cni"]["calico"]["blockSize"] == {"ipv4": 24, "ipv6": 120}
    assert Spec.from_dict(spec.to_dict()) == spec


def test_an_integer_on_a_dual_stack_cluster_is_refused_at_block_size() -> None:
    with pytest.raises(SpecError) as info:
        Spec.from_dict(_document(DUAL, 26))
    (problem,) = info.value.problems
    assert problem.path == PATH
    assert "give one per family, such as blockSize: {ipv4: 26, ipv6: 122}" in problem.message


@pytest.mark.parametrize("version", [4, 6])
def test_each_family_takes_exactly_calicos_range(version: int) -> None:
    low, high = BLOCK_SIZE_RANGE[version]
    key = f"ipv{version}"
    for size in (low, high):
        spec = Spec.from_dict(_document(DUAL, {key: size}))
        assert _required(spec) == {version: size, OTHER[version]: None}
        single = Spec.from_dict(_document(SINGLE[version], size))  # the integer form
        assert _required(single) == {version: size}
    for wrong in (low - 1, high + 1, str(low), True):
        assert _paths(_document(DUAL, {key: wrong})) == [f"{PATH}.{key}"]
        assert _paths(_document(SINGLE[version], {key: wrong})) == [f"{PATH}.{key}"]
    # The other family's range is the other family's only.
    other_low, _ = BLOCK_SIZE_RANGE[OTHER[version]]
    assert _paths(_document(DUAL, {key: other_low})) == [f"{PATH}.{key}"]
    assert _paths(_document(SINGLE[version], other_low)) == [PATH]
    # A key for a family the cluster has no pod CIDR of.
    assert _paths(_document(SINGLE[OTHER[version]], {key: low})) == [f"{PATH}.{key}"]


def test_bad_keys_and_values_are_all_reported_with_their_paths() -> None:
    assert _paths(_document(DUAL, {"ipv4": 33, "ipv6": 200, "IPv6": 122})) == [
        f"{PATH}.IPv6", f"{PATH}.ipv4", f"{PATH}.ipv6"]
    assert _paths(_document(DUAL, {})) == [PATH]
    assert _paths(_document(DUAL, [24, 120])) == [PATH]


def test_a_spec_built_in_code_is_judged_the_same() -> None:
    settings = CalicoSettings(block_size={"ipv4": 19, "ipv6": 122})
    assert settings.block_size == BlockSizes(ipv4=19, ipv6=122)
    assert CalicoSettings(block_size=BlockSizes()).block_size is None  # sets nothing
    spec = Spec(cluster=Cluster(pod_cidrs=[V4, V6]), cni=CniSettings(calico=settings))
    assert [str(p) for p in validate(spec)] == [
        f"{PATH}.ipv4: expected 20..32 (Calico's range for IPv4 pools), got 19"]


def test_the_json_schema_takes_both_forms() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft7Validator(spec_json_schema())
    header = {"apiVersion": "k3snet.io/v1alpha1", "kind": "EgressSpec"}
    for good in (26, 122, None, {"ipv4": 24}, {"ipv4": 24, "ipv6": 120}):
        assert validator.is_valid({**header, **_document(DUAL, good)}), good
    for bad in (33, 115, {}, {"ipv4": 120}, {"ipv6": 26}, {"ipv5": 1}, "26"):
        assert not validator.is_valid({**header, **_document(DUAL, bad)}), bad


def _fits(version: int, size: int) -> bool:
    low, high = BLOCK_SIZE_RANGE[version]
    return low <= size <= high


_SIZES = st.one_of(st.none(), st.integers(min_value=0, max_value=140))


@given(ipv4=_SIZES, ipv6=_SIZES)
def test_per_family_sizes_reach_only_their_familys_pool_or_are_refused_at_their_key(
        ipv4: int | None, ipv6: int | None) -> None:
    given_sizes = {k: v for k, v in (("ipv4", ipv4), ("ipv6", ipv6)) if v is not None}
    document = _document(DUAL, given_sizes or None)
    wrong = [f"{PATH}.{key}" for key, size in given_sizes.items()
             if not _fits(int(key[-1]), size)]
    if wrong:
        assert _paths(document) == wrong
        return
    spec = Spec.from_dict(document)
    assert _required(spec) == {4: ipv4, 6: ipv6}
    assert Spec.from_dict(spec.to_dict()) == spec


@given(version=st.sampled_from([4, 6]), size=st.integers(min_value=0, max_value=140))
def test_an_integer_fits_a_single_stack_cluster_of_its_family_and_never_a_dual_stack_one(
        version: int, size: int) -> None:
    if _fits(version, size):
        assert _required(Spec.from_dict(_document(SINGLE[version], size))) == {version: size}
    else:
        assert _paths(_document(SINGLE[version], size)) == [PATH]
    assert _paths(_document(DUAL, size)) == [PATH]
