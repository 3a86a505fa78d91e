"""A plan file is applied as it is written, or refused: nothing in it is dropped unread.

``apply FILE`` checks that the plan follows from the desired state the file records,
both as this k3snet reads them: a key it does not know (a field a newer k3snet's route
has, a hand edit) was dropped from both alike, and the plan applied without it,
unlike the one reviewed.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from k3snet import MemoryBackend, NetObject, PlanError, Route, State, plan, register_backend
from k3snet.backends.registry import unregister_backend
from k3snet.cli import main
from k3snet.model.cilium import (
    CILIUM_DEFAULT_TARGET,
    CiliumAgentOption,
    CiliumConfig,
    CiliumNodeOverride,
)
from k3snet.model.cni import CalicoPodCIDR, CalicoPools, IPPool
from k3snet.planfile import PlanFile
from k3snet.testing import strategies as ks
from tests.cli.test_apply_output import SEED
from tests.examples import examples


def _document(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    desired = State(owned=[Route("10.9.0.0/24", device="eth0", table=100)])
    saved = PlanFile.make(plan(State(), desired), desired=desired, observed=State(),
                          backends=["memory"], netns=None)
    path = tmp_path / "node.plan"
    saved.write(path)
    return path, json.loads(path.read_text())


def _refusal(path: Path, document: dict[str, Any]) -> str:
    path.write_text(json.dumps(document))
    with pytest.raises(PlanError) as info:
        PlanFile.read(path, netns=None)
    return str(info.value)


def test_a_route_field_this_k3snet_does_not_know_is_refused_not_dropped(
        tmp_path: Path) -> None:
    """A plan file of a k3snet whose routes have a field this one lacks (both in the
    desired state and in the plan, as that k3snet writes them): read, the field was
    dropped from both, the plan still followed from the desired state, and `apply FILE`
    added a route without it."""
    path, document = _document(tmp_path)
    document["desired"]["owned"][0]["onlink"] = True
    document["plan"]["changes"][0]["after"]["onlink"] = True
    message = _refusal(path, document)
    assert "desired.owned[0] has the key 'onlink', which a route object does not have" \
        in message
    assert "refused, nothing applied: plan again with this k3snet" in message


def test_a_key_missing_from_an_object_is_refused_not_read_as_its_default(
        tmp_path: Path) -> None:
    """A route's table removed by hand (from both places): read as the main table, a
    route the reviewer never saw."""
    path, document = _document(tmp_path)
    del document["desired"]["owned"][0]["table"]
    del document["plan"]["changes"][0]["after"]["table"]
    assert "desired.owned[0] lacks its key 'table' (it would be read as 254)" in _refusal(
        path, document)


@pytest.mark.parametrize(("where", "key"), [
    ((), "expires"), (("plan",), "order"), (("desired",), "extra"),
    (("plan", "changes", 0), "when")])
def test_a_key_unknown_to_the_file_or_its_parts_is_refused(
        tmp_path: Path, where: tuple[Any, ...], key: str) -> None:
    path, document = _document(tmp_path)
    part = document
    for step in where:
        part = part[step]
    part[key] = 1
    assert f"has the key {key!r}, unknown to it" in _refusal(path, document)


@settings(max_examples=examples(60), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(pair=ks.state_pairs(ks.objects(every_shape=True), min_owned=1, max_owned=8))
def test_every_plan_file_k3snet_writes_reads_back_as_written(
        tmp_path: Path, pair: tuple[State, State]) -> None:
    """No plan file of this k3snet's is refused by the check: every object, change and
    note it writes reads back as written."""
    observed, desired = pair
    p = plan(observed, desired)
    path = tmp_path / "node.plan"
    PlanFile.make(p, desired=desired, observed=observed, backends=["memory"],
                  netns=None).write(path)
    again = PlanFile.read(path, netns=None)
    assert again.plan == p
    assert again.desired == desired


@pytest.mark.parametrize("where", ["node", "spec"])
def test_a_key_unknown_to_the_node_or_the_spec_recorded_is_refused(
        tmp_path: Path, where: str) -> None:
    """The node and the spec a plan file records are parts of it as well: a key of a newer
    k3snet's there (a zone the node must be in, the spec's signature) is not dropped."""
    path, document = _document(tmp_path)
    document["spec"] = {"path": "/etc/k3snet/egress.yaml", "sha256": "0" * 64}
    path.write_text(json.dumps(document))
    PlanFile.read(path, netns=None)  # as written: read
    document[where]["zone"] = "b"
    assert f"{where} has the key 'zone', unknown to it" in _refusal(path, document)


@pytest.mark.parametrize(("where", "key"), [
    ((), "observed"), (("desired",), "foreign"), (("plan",), "notes"),
    (("plan", "changes", 0), "before")])
def test_a_key_k3snet_always_writes_missing_from_the_file_or_its_parts_is_refused(
        tmp_path: Path, where: tuple[Any, ...], key: str) -> None:
    """Left out by hand, a part's key was read as empty or none (the foreign state the
    plan was made beside, its notes), not as the file was reviewed."""
    path, document = _document(tmp_path)
    part = document
    for step in where:
        part = part[step]
    del part[key]
    assert f"lacks its key {key!r}" in _refusal(path, document)


_CILIUM = CiliumConfig(CILIUM_DEFAULT_TARGET, settings={"enable-ipv4-masquerade": "true"},
                       ip_masq_agent={"nonMasqueradeCIDRs": ["10.0.0.0/8"]},
                       node_overrides=[CiliumNodeOverride("edge", "zone=edge",
                                                          {"enable-ipv4-masquerade": "false"})],
                       agent_options=[CiliumAgentOption("enable-ip-masq-agent", "false",
                                                        "--enable-ip-masq-agent")])
_POOLS = CalicoPools([IPPool("b", "10.43.0.0/16"),
                      IPPool("a", "10.42.0.0/16", nat_outgoing=True, operator=True)])
_NESTED: tuple[NetObject, ...] = (
    _CILIUM, _POOLS, CalicoPodCIDR("10.42.0.0/16", requires={"vxlanMode": "Always"}),
    CiliumConfig(CILIUM_DEFAULT_TARGET, node_overrides=[CiliumNodeOverride("a", "")],
                 node_groups=[["a"]]),
    CalicoPools([IPPool("c", "fd00::/64")], [("d", "no cidr")]))
"""Objects with parts of fixed keys inside them (pool lists, Cilium overrides)."""


def _nested_document(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    desired = State(owned=[_CILIUM], foreign=[_POOLS])
    observed = State(foreign=[_POOLS])
    path = tmp_path / "node.plan"
    PlanFile.make(plan(observed, desired), desired=desired, observed=observed,
                  backends=["memory"], netns=None).write(path)
    return path, json.loads(path.read_text())


@pytest.mark.parametrize(("where", "key", "said"), [
    (("desired", "foreign", 0, "pools", 0), "natOutgoing",
     "desired.foreign[0].pools[0] has the key 'natOutgoing', which this part of a "
     "calico-pools object does not have"),
    (("desired", "owned", 0, "node_overrides", 0), "selectr",
     "desired.owned[0].node_overrides[0] has the key 'selectr', which this part of a "
     "cilium object does not have"),
    (("plan", "changes", 0, "after", "agent_options", 0), "nodes",
     "plan.changes[0].after.agent_options[0] has the key 'nodes'"),
    (("desired", "foreign", 0, "pools", 1), "lbtwin",
     "desired.foreign[0].pools[1] has the key 'lbtwin'")])
def test_a_key_added_inside_a_calico_pool_or_a_cilium_part_is_refused_naming_its_path(
        tmp_path: Path, where: tuple[Any, ...], key: str, said: str) -> None:
    """A misspelled key of a pool in a Calico pool list (``natOutgoing`` for
    ``nat_outgoing``), or of a Cilium override, was dropped unread: the pool read as
    not masquerading, unlike the file a reviewer read."""
    path, document = _nested_document(tmp_path)
    PlanFile.read(path, netns=None)  # as written: read
    part = document
    for step in where:
        part = part[step]
    part[key] = True
    assert said in _refusal(path, document)


def test_a_key_missing_inside_a_calico_pool_is_refused_not_read_as_its_default(
        tmp_path: Path) -> None:
    path, document = _nested_document(tmp_path)
    del document["desired"]["foreign"][0]["pools"][0]["nat_outgoing"]
    assert ("desired.foreign[0].pools[0] lacks its key 'nat_outgoing' (it would be read "
            "as false)") in _refusal(path, document)


def _objects_in(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every JSON object in ``value``, itself the first."""
    if isinstance(value, dict):
        return [at, *(p for k, v in value.items() for p in _objects_in(v, (*at, k)))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _objects_in(v, (*at, i))]
    return []


@settings(max_examples=examples(60), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(pair=ks.state_pairs(ks.objects(every_shape=True), min_owned=1, max_owned=4),
       nested=st.lists(st.sampled_from(_NESTED), max_size=3, unique_by=lambda o: o.key),
       where=st.integers(0), clusters=st.booleans())
def test_every_plan_file_written_reads_back_equal_and_any_key_added_anywhere_is_refused(
        tmp_path: Path, pair: tuple[State, State], nested: list[NetObject], where: int,
        clusters: bool) -> None:
    """Every plan file (with Calico pool lists and Cilium configs inside) reads back equal;
    one key added to any object of it, at any depth, is refused (a cluster recorded for a
    backend it does not use as well, on apply)."""
    observed, desired = pair
    pools = [o for o in nested if isinstance(o, CalicoPools)]  # read, never written
    desired = State(owned=[*desired.owned, *(o for o in nested if o not in pools)],
                    foreign=[*desired.foreign, *pools])
    observed = State(owned=observed.owned, foreign=[*observed.foreign, *pools])
    p = plan(observed, desired)
    path = tmp_path / "node.plan"
    (tmp_path / "spec.yaml").write_text("kind: EgressSpec\n")
    PlanFile.make(p, desired=desired, observed=observed, backends=["memory"], netns=None,
                  spec_path=path.parent / "spec.yaml" if clusters else None,
                  clusters={"memory": "https://127.0.0.1:6443"} if clusters else None).write(
                      path)
    again = PlanFile.read(path, netns=None)
    assert again.plan == p
    assert again.desired == desired
    document = json.loads(path.read_text())
    paths = _objects_in(document)
    part = document
    for step in paths[where % len(paths)]:
        part = part[step]
    part["zz-unknown"] = "x"  # a text: what every free-form part of a file holds
    path.write_text(json.dumps(document))
    with pytest.raises(PlanError):  # (a cluster's on apply: by the backends' own names)
        PlanFile.read(path, netns=None).refuse_elsewhere(MemoryBackend(), path)


def test_a_cluster_recorded_for_a_backend_the_file_does_not_use_is_refused(
        tmp_path: Path) -> None:
    """Added by hand, it was read and never compared: the file still applied."""
    path, document = _document(tmp_path)
    document["clusters"] = {"calico": "https://127.0.0.1:6443"}
    path.write_text(json.dumps(document))
    with pytest.raises(PlanError, match="the cluster of backend 'calico', which it does not"):
        PlanFile.read(path, netns=None).refuse_elsewhere(MemoryBackend(), path)


class _Kube(MemoryBackend):
    """A backend registered under another name than its own (``name``: memory), talking
    to a cluster, as a custom backend may be."""

    api_client = SimpleNamespace(configuration=SimpleNamespace(host="https://192.0.2.1:6443"))


def test_a_plan_file_of_a_backend_registered_under_another_name_applies(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Its cluster is recorded by the backend's own name (what apply compares it by), not
    by the name it was asked for: no cluster of an unused backend."""
    register_backend("memory-kube", _Kube)
    saved = tmp_path / "plan.json"
    try:
        assert main(["plan", "--backend", "memory-kube", "--no-facts", "--out", str(saved),
                     "-f", str(SEED)]) == 2  # (changes to make)
        capsys.readouterr()
        assert json.loads(saved.read_text())["clusters"] == {
            "memory": "https://192.0.2.1:6443"}
        assert main(["apply", str(saved), "--auto-approve"]) == 0, capsys.readouterr().err
    finally:
        unregister_backend("memory-kube")
