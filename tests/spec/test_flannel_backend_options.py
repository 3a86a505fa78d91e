"""Flannel's backend options go into net-conf.json: JSON values only."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k3snet.backends.flannel import FlannelBackend
from k3snet.cli import main
from k3snet.converge import compile_for
from k3snet.errors import PlanError, Problem, SpecError
from k3snet.model.cni import FLANNEL_BACKEND_OPTIONS, FLANNEL_WINDOWS_OPTIONS
from k3snet.spec import Spec
from k3snet.spec.validate import flannel_options_left_to_backend
from tests.examples import examples

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
    ({"ESPProposal": ["ok", "\udfff"]}, ["cni.flannel.backend.options.ESPProposal"])])
def test_a_flannel_backend_option_holding_half_a_surrogate_pair_is_refused_at_its_path(
        options: dict[str, object], unknown: list[str]) -> None:
    # A JSON "\ud800" escape (json.loads of the Ansible module's arguments, Spec.from_dict)
    # is no text UTF-8 can write: apply failed with a UnicodeEncodeError after check passed.
    # (A key that is no option of ipsec's, or a value its option is not, a list where Go
    # wants a string, is refused at its own path too.)
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
    from k3snet.model.flannel_options import FLANNEL_OPTION_CHECKS  # noqa: PLC0415

    table = FLANNEL_OPTION_CHECKS
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


IPSEC_PSK = "k" * 96  # flannel's ipsec backend: "password is too short" under 96 bytes


@pytest.mark.parametrize(("kind", "options", "key", "expected"), [
    ("vxlan", {"VNI": "4"}, "VNI", "an integer 0..16777215"),  # Go wants a number
    ("vxlan", {"VNI": 1 << 24}, "VNI", "an integer 0..16777215"),  # no VXLAN ID
    ("vxlan", {"VNI": -1}, "VNI", "an integer 0..16777215"),  # uint32(-1): no VXLAN ID
    ("vxlan", {"Port": 70000}, "Port", "at most 65535"),  # cut to 16 bits by netlink
    ("vxlan", {"Port": 8472.5}, "Port", "an integer"),  # Go's int refuses a fraction
    ("vxlan", {"GBP": "true"}, "GBP", "true or false"),
    ("vxlan", {"MTU": "1450"}, "MTU", "an integer"),
    ("vxlan", {"DirectRouting": 1}, "DirectRouting", "true or false"),
    ("wireguard", {"ListenPort": -1}, "ListenPort", "an integer 1..65535"),
    ("wireguard", {"ListenPort": 65536}, "ListenPort", "an integer 1..65535"),
    ("wireguard", {"listenport": "51820"}, "listenport", "an integer 1..65535"),
    ("wireguard", {"ListenPortV6": 0}, "ListenPortV6", "an integer 1..65535"),
    ("wireguard", {"Mode": "Auto"}, "Mode", 'one of "separate", "auto", "ipv4", "ipv6"'),
    ("wireguard", {"PersistentKeepaliveInterval": 70000}, "PersistentKeepaliveInterval",
     "an integer 0..65535"),
    ("ipsec", {"UDPEncap": "yes"}, "UDPEncap", "true or false"),
    ("ipsec", {"ESPProposal": 3}, "ESPProposal", "a string"),
    ("udp", {"Port": 0}, "Port", "an integer 1..65535"),
    ("ipip", {"DirectRouting": "false"}, "DirectRouting", "true or false"),
])
def test_a_flannel_option_value_flannel_stops_on_is_refused_at_its_path_by_validate(
        kind: str, options: dict[str, object], key: str, expected: str) -> None:
    # flannel's backend decodes its options when it starts (json.Unmarshal into its Go
    # config) and stops on a value of another type or one it cannot use: such a spec
    # passed `validate` and `render`, and only the flannel backend refused it (`plan`).
    [problem] = _problems_of(_flannel(kind, options))
    assert problem.path == f"cni.flannel.backend.options.{key}"
    assert f"must be {expected}" in problem.message, problem.message
    assert f"flannel's {kind} backend" in problem.message, problem.message


@pytest.mark.parametrize("value", ["short-but-secret", IPSEC_PSK[:-1], 12345])
def test_an_ipsec_psk_flannel_finds_too_short_is_refused_at_its_path_unshown(
        value: object) -> None:
    [problem] = _problems_of(_flannel("ipsec", {"PSK": value}))
    assert problem.path == "cni.flannel.backend.options.PSK"
    assert "must be a string of at least 96 bytes" in problem.message, problem.message
    assert str(value) not in problem.message
    assert f"<secret, {len(str(value))} characters, sha256:" in problem.message


@pytest.mark.parametrize(("kind", "options"), [
    ("vxlan", {"VNI": 0, "Port": 0, "MTU": 1450, "GBP": True, "Learning": False,
               "DirectRouting": True}),
    ("vxlan", {"VNI": 9_999_999, "Port": 65535}),
    ("wireguard", {"ListenPort": 1, "ListenPortV6": 65535, "Mode": "ipv6",
                   "PersistentKeepaliveInterval": 0, "PSK": WG_KEY}),
    ("ipsec", {"PSK": IPSEC_PSK, "UDPEncap": True, "ESPProposal": "aes256gcm16"}),
    ("udp", {"Port": 8285}),
])
def test_flannel_option_values_flannel_takes_are_taken(
        kind: str, options: dict[str, object]) -> None:
    assert _problems_of(_flannel(kind, options)) == []


def test_two_spellings_of_one_flannel_option_are_refused_at_the_later_one() -> None:
    # Go's decoder matches keys case-insensitively and the later one wins: no flannel
    # config holds the pair (compiling the spec failed), and the spec took it.
    [problem] = _problems_of(_flannel("vxlan", {"VNI": 4, "vni": 5}))
    assert problem.path == "cni.flannel.backend.options.vni"
    assert "'VNI' and 'vni' are one option to flannel" in problem.message, problem.message
    with flannel_options_left_to_backend(), pytest.raises(SpecError):  # (never left)
        Spec.from_dict(_flannel("vxlan", {"Nope": 4, "nope": 5}))


_BOUNDS = (-(1 << 31) - 1, -(1 << 31), -1, 0, 1, 0xFFFF, 0x10000, 9_999_999, 10_000_000,
           (1 << 24) - 1, 1 << 24,
           (1 << 31) - 1, 1 << 31)
_VALUES = st.one_of(
    st.none(), st.booleans(), st.sampled_from(_BOUNDS), st.integers(-70000, 70000),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(["separate", "auto", "ipv4", "ipv6", "Auto", "", "4", WG_KEY, IPSEC_PSK,
                     IPSEC_PSK[:-1]]),
    st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=8),
    st.lists(st.integers(0, 3), max_size=2))


@st.composite
def _flannel_backends(draw: st.DrawFn) -> tuple[str, dict[str, object]]:
    """A Linux backend type and options of it: its own names in any case (two spellings
    of one among them), a name no type reads, values of every JSON type near the bounds."""
    kind = draw(st.sampled_from(sorted(FLANNEL_BACKEND_OPTIONS)))
    names = [*FLANNEL_BACKEND_OPTIONS[kind], "Nope"]
    spelled = st.tuples(st.sampled_from(names), st.sampled_from(["as is", "lower", "upper"]))
    keys = draw(st.lists(spelled.map(lambda pair: pair[0] if pair[1] == "as is" else
                                     getattr(pair[0], pair[1])()), max_size=3, unique=True))
    return kind, {key: draw(_VALUES) for key in keys}


@given(_flannel_backends())
@settings(max_examples=examples(300), deadline=None)
def test_spec_loading_refuses_exactly_the_flannel_options_the_backend_s_expect_refuses(
        backend: tuple[str, dict[str, object]]) -> None:
    # One judge of flannel's options: what `validate` refuses, the agent leaves to the
    # flannel backend (flannel_options_left_to_backend), whose expect then refuses it,
    # and what the backend would write, `validate` takes. (A file's backend: Windows
    # options are a ConfigMap's alone, left out here.)
    # Two spellings of one option no config holds: never left to the backend.
    data = _flannel(*backend)
    refused = bool(_problems_of(data))
    with flannel_options_left_to_backend():
        kept = _problems_of(data)  # (nothing else of the spec is wrong)
        if kept:
            assert all("one option to flannel" in p.message for p in kept), kept
            assert refused
            return
        spec = Spec.from_dict(data)
        flannel = FlannelBackend(path=Path("/nonexistent/net-conf.json"))
        state = compile_for(flannel, spec)
    try:
        flannel.expect(state)
    except PlanError:
        assert refused, backend
    else:
        assert not refused, (backend, _problems_of(data))


@pytest.mark.parametrize("vni", [10_000_000, (1 << 24) - 1])
def test_a_vni_that_names_no_device_the_kernel_takes_is_refused_at_load(vni: int) -> None:
    # A VXLAN ID, but flannel names its device flannel.VNI (flannel-v6.VNI, longer still,
    # with IPv6 on), and the kernel takes names of 15 characters at most ("Attribute failed
    # policy validation"): whichever families flannel runs, it cannot build its device.
    # `validate` and `plan` took it, and only the backend's check at `apply` refused it.
    [problem] = _problems_of(_flannel("vxlan", {"VNI": vni}))
    assert problem.path == "cni.flannel.backend.options.VNI"
    assert "must be at most 9999999" in problem.message, problem.message
    assert f"flannel.{vni} is longer than the kernel's 15 characters" in problem.message
    assert _problems_of(_flannel("vxlan", {"VNI": 9_999_999})) == []


@pytest.mark.parametrize("spelled", ["PSK", "psk"])
def test_a_null_ipsec_psk_which_flannel_reads_as_empty_is_refused_at_load_and_never_written(
        spelled: str) -> None:
    # Go's decoder keeps "" for a null string, and flannel's ipsec backend stops on a PSK
    # under 96 bytes: written over a file's PSK ("PSK": null), it took flannel down at
    # its next restart, where `validate`, `plan` and `apply` had all found it fine.
    data = _flannel("ipsec", {spelled: None})
    [problem] = _problems_of(data)
    assert problem.path == f"cni.flannel.backend.options.{spelled}"
    assert "must be a string of at least 96 bytes" in problem.message, problem.message
    assert "got null" in problem.message, problem.message
    flannel = FlannelBackend(path=Path("/nonexistent/net-conf.json"))
    with flannel_options_left_to_backend():  # the agent: the backend's refusal
        state = compile_for(flannel, Spec.from_dict(data))
    with pytest.raises(PlanError, match="at least 96 bytes"):
        flannel.expect(state)
    # (wireguard's PSK and every other option: null keeps a default flannel takes)
    assert _problems_of(_flannel("wireguard", {"PSK": None, "Mode": None})) == []
