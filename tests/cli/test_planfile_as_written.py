"""A plan file is applied as it is written, or refused: nothing in it is dropped unread.

``apply FILE`` checks that the plan follows from the desired state the file records,
both as this k3snet reads them: a key it does not know (a field a newer k3snet's route
has, a hand edit) was dropped from both alike, and the plan applied without it,
unlike the one reviewed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from k3snet import PlanError, Route, State, plan
from k3snet.planfile import PlanFile
from k3snet.testing import strategies as ks
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
