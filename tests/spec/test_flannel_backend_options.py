"""Flannel's backend options go into net-conf.json: JSON values only."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from k3snet.cli import main
from k3snet.errors import Problem, SpecError
from k3snet.model.cni import FLANNEL_BACKEND_OPTIONS, FLANNEL_WINDOWS_OPTIONS
from k3snet.spec import Spec

BASE = {"destinations": [{"cidr": "192.168.2.0/24", "device": "eth0"}]}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, [1, math.nan],
                                   {"a": math.inf}])
def test_a_flannel_backend_option_json_cannot_write_is_refused_at_its_path(
        value: object) -> None:
    # Python writes NaN/Infinity, which flannel's JSON reader refuses; NaN never equals
    # itself, so two readings of one spec differed.
    with pytest.raises(SpecError) as raised:
        Spec.from_dict({**BASE, "cni": {"flannel": {"backend": {"options": {"VNI": value}}}}})
    assert [p.path for p in raised.value.problems] == ["cni.flannel.backend.options"]


def test_flannel_backend_options_of_json_values_are_read_and_written_back() -> None:
    options = {"VNI": 4, "Port": 8472, "GBP": True, "Name": "x", "List": [1.5, None]}
    spec = Spec.from_dict({**BASE, "cni": {"flannel": {"backend": {"options": options}}}})
    assert spec.cni.flannel is not None
    assert dict(spec.cni.flannel.backend_options) == options
    json.dumps(dict(spec.cni.flannel.backend_options), allow_nan=False)


@pytest.mark.parametrize(("options", "unknown"), [
    ({"ESPProposal": "\ud800"}, []), ({"\udce9": 1}, ["cni.flannel.backend.options.\\udce9"]),
    ({"ESPProposal": ["ok", "\udfff"]}, [])])
def test_a_flannel_backend_option_holding_half_a_surrogate_pair_is_refused_at_its_path(
        options: dict[str, object], unknown: list[str]) -> None:
    # A JSON "\ud800" escape (json.loads of the Ansible module's arguments, Spec.from_dict)
    # is no text UTF-8 can write: apply failed with a UnicodeEncodeError after check passed.
    # (A key that is no option of ipsec's is refused at its own path too.)
    with pytest.raises(SpecError) as raised:
        Spec.from_dict({**BASE, "cni": {"flannel": {"backend": {"type": "ipsec",
                                                                "options": options}}}})
    assert [p.path for p in raised.value.problems] == ["cni.flannel.backend.options",
                                                       *unknown]
    assert "surrogate" in raised.value.problems[0].message


@pytest.mark.parametrize(("value", "hint"), [
    ("wireguard-native", "K3s's --flannel-backend wireguard-native writes flannel's Type "
                         "\"wireguard\""),
    ("none", "K3s's --flannel-backend none runs no flannel"),
    ("VXLAN", "write it as \"vxlan\""),
])
def test_a_k3s_flannel_backend_name_as_the_type_is_refused_with_flannel_s_name(
        value: str, hint: str) -> None:
    # K3s's flag names are not all flannel's Type words: a user copying
    # --flannel-backend=wireguard-native got only the list of flannel's types.
    with pytest.raises(SpecError) as raised:
        Spec.from_dict({**BASE, "cni": {"flannel": {"backend": {"type": value}}}})
    [problem] = raised.value.problems
    assert problem.path == "cni.flannel.backend.type"
    assert "expected one of vxlan" in problem.message
    assert hint in problem.message, problem.message


def _flannel(kind: str, options: dict[str, object]) -> dict[str, object]:
    return {**BASE, "cni": {"flannel": {"backend": {"type": kind, "options": options}}}}


def test_a_flannel_backend_option_no_option_of_its_type_matches_is_refused_with_a_hint(
        ) -> None:
    # Go's JSON decoding drops a key no option matches: a typo passed validate and render,
    # was written by nothing (the flannel backend refuses it) and did nothing.
    with pytest.raises(SpecError) as raised:
        Spec.from_dict(_flannel("vxlan", {"VNI": 4, "DirectRouteing": True, "ListenPort": 1}))
    problems = {p.path: p.message for p in raised.value.problems}
    assert sorted(problems) == ["cni.flannel.backend.options.DirectRouteing",
                                "cni.flannel.backend.options.ListenPort"]
    typo = problems["cni.flannel.backend.options.DirectRouteing"]
    assert typo.startswith("flannel's vxlan backend has no option DirectRouteing, so flannel "
                           "would ignore it")
    assert ("it reads only VNI, Port, MTU, GBP, Learning, DirectRouting (on Windows nodes "
            "also Name, MacPrefix); did you mean DirectRouting?") in typo
    assert "did you mean" not in problems["cni.flannel.backend.options.ListenPort"]
    with pytest.raises(SpecError, match=r"host-gw backend has no option VNI.*reads no option"):
        Spec.from_dict(_flannel("host-gw", {"VNI": 4}))


@pytest.mark.parametrize("kind", sorted(FLANNEL_BACKEND_OPTIONS))
def test_every_option_of_a_flannel_backend_type_is_taken_in_any_case(kind: str) -> None:
    # Matched as Go matches keys (case-insensitively); Windows options count (a ConfigMap
    # is read by flanneld on Windows nodes too).
    names = [*FLANNEL_BACKEND_OPTIONS[kind], *FLANNEL_WINDOWS_OPTIONS.get(kind, ())]
    options: dict[str, object] = {}
    for i, name in enumerate(names):
        options[name.lower() if i % 2 else name.upper()] = "x"
    # (Only the names are judged here: "x" is no value of some options, PSK's included.)
    problems = [p.path for p in _problems_of(_flannel(kind, options))
                if p.path.startswith("cni.flannel.backend.options.")
                and "has no option" in p.message]
    assert problems == []


def _problems_of(data: dict[str, object]) -> list[Problem]:
    try:
        Spec.from_dict(data)
    except SpecError as exc:
        return list(exc.problems)
    return []


def test_the_option_names_the_spec_checks_are_those_the_flannel_backend_checks() -> None:
    from k3snet.backends import flannel_read  # noqa: PLC0415 - its private table

    table = flannel_read._BACKEND_OPTIONS
    assert {kind: tuple(checks) for kind, checks in table.items()} == dict(
        FLANNEL_BACKEND_OPTIONS)


def test_validate_render_and_spec_loading_refuse_an_unknown_flannel_option_alike(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(json.dumps({"apiVersion": "k3snet.io/v1alpha1", "kind": "EgressSpec",
                                **_flannel("vxlan", {"DirectRouteing": True})}))
    assert main(["validate", "-f", str(path)]) != 0
    assert main(["render", "-f", str(path), "manifests"]) != 0
    err = capsys.readouterr().err
    assert err.count("cni.flannel.backend.options.DirectRouteing: flannel's vxlan backend "
                     "has no option DirectRouteing") == 2
    with pytest.raises(SpecError, match="did you mean DirectRouting"):
        Spec.from_yaml(path.read_text(), source=str(path))  # (the agent leaves it to the
        # flannel backend's refusal: tests/agent/test_flannel_option_refusals.py)


WG_KEY = "U0VDUkVUUFNLLTAxMjM0NTY3ODlhYmNkZWZnaGlqa2w="  # 32 bytes in base64


@pytest.mark.parametrize("value", [
    "not-a-wireguard-key",  # no base64
    WG_KEY[:-4],  # 30 bytes
    WG_KEY.rstrip("="),  # unpadded: Go's StdEncoding refuses it
    WG_KEY + "QUFB",  # 35 bytes
    12345678901,  # no string: Go refuses to decode it into PSK
])
@pytest.mark.parametrize("key", ["PSK", "psk"])
def test_a_wireguard_psk_that_is_no_wireguard_key_is_refused_at_its_path_unshown(
        key: str, value: object) -> None:
    # flannel's wireguard backend parses PSK with wgtypes.ParseKey (standard base64 of 32
    # bytes) when it starts: such a value was written, and flannel stopped at its restart.
    with pytest.raises(SpecError) as raised:
        Spec.from_dict(_flannel("wireguard", {key: value}))
    [problem] = raised.value.problems
    assert problem.path == f"cni.flannel.backend.options.{key}"
    assert "a WireGuard key (32 bytes in base64)" in problem.message, problem.message
    text = str(raised.value)
    assert str(value) not in text
    assert f"<secret, {len(str(value))} characters, sha256:" in text, text


@pytest.mark.parametrize("value", [WG_KEY, "", WG_KEY[:20] + "\n" + WG_KEY[20:], None])
def test_a_wireguard_psk_flannel_reads_as_a_key_is_taken(value: str | None) -> None:
    # "" is flannel's "no PSK"; Go's base64 decoder skips line breaks; a null (YAML's
    # `PSK:` with nothing, a template's empty value) Go's decoder skips, keeping "".
    assert _problems_of(_flannel("wireguard", {"PSK": value})) == []


def test_a_spec_taken_with_its_flannel_options_left_to_the_backend_is_refused_elsewhere(
        ) -> None:
    # The agent's leniency (docs/agent.md) stays within its context, for the very object
    # it judged too (validate() remembers the last spec found sound, by identity).
    from k3snet.spec.validate import (  # noqa: PLC0415
        flannel_options_left_to_backend,
        validate,
    )

    data = _flannel("wireguard", {"psk": "c2VjcmV0", "ListenPrt": 1})
    with flannel_options_left_to_backend():
        spec = Spec.from_dict(data)
        assert validate(spec) == validate(spec) == []
    assert sorted(p.path for p in validate(spec)) == [
        "cni.flannel.backend.options.ListenPrt", "cni.flannel.backend.options.psk"]
    with pytest.raises(SpecError):
        Spec.from_dict(data)
