"""Sysctls whose value is a secret (``net.ipv4.tcp_fastopen_key``, an interface's IPv6
``stable_secret``): every printed form shows ``<secret, N bytes, sha256:XXXXXXXX>``,
never the value; the JSON forms an apply and a rollback read (plan files, records)
keep it. Before, the plan, observe, the logs, errors and Events printed it whole."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from k3snet import MasqueradeRule, ModelError, Plan, SpecError, State, plan
from k3snet.model import Sysctl
from k3snet.model.sysctl import is_secret, redact_secrets, shown_value, value_problem
from k3snet.planner import Change
from k3snet.spec import Spec

KEY = "net.ipv4.tcp_fastopen_key"
STABLE = "net.ipv6.conf.eth0.stable_secret"


def _fastopen(bits: int) -> str:
    return "-".join(f"{bits >> shift & 0xFFFFFFFF:x}" for shift in (96, 64, 32, 0))


def _ipv6(bits: int) -> str:
    return ":".join(f"{bits >> shift & 0xFFFF:x}" for shift in range(112, -1, -16))


def _printed(name: str, value: str, other: str) -> list[str]:
    """Every text k3snet prints of a sysctl: describe, str, repr, each change's line and
    a plan's, the JSON printed of a plan and of a state."""
    sysctl, before = Sysctl(name, value, previous=other), Sysctl(name, other)
    changes = (Change.add(sysctl), Change.delete(sysctl), Change.replace(before, sysctl),
               Change.replace(sysctl, before))
    p = plan(State(owned=[before]), State(owned=[sysctl]))
    return [sysctl.describe(), str(sysctl), repr(sysctl), *(c.render() for c in changes),
            *(str(c) for c in changes), p.render(), repr(p),
            json.dumps(redact_secrets(p.to_dict())),
            json.dumps(redact_secrets(State(owned=[sysctl]).to_dict()))]


def _hidden(value: str, texts: list[str]) -> None:
    held = Sysctl(STABLE if ":" in value else KEY, value).value
    for text in texts:
        for form in {value, held, held.replace(":", "").replace("-", "")}:
            assert form not in text, (form, text)


@given(st.integers(0, 2**128 - 1), st.integers(0, 2**128 - 1))
def test_no_printed_form_of_a_secret_sysctl_holds_its_value(first: int, second: int) -> None:
    for name, form in ((KEY, _fastopen), (STABLE, _ipv6),
                       ("net/ipv6/conf/eth0.100/stable_secret", _ipv6)):
        value, other = form(first), form(second)
        texts = _printed(name, value, other)
        _hidden(value, texts)
        _hidden(other, texts)


def test_a_secret_is_shown_by_its_size_and_a_fingerprint_equal_however_written() -> None:
    """Two values compare by their fingerprint (of the value as the kernel shows it),
    without being printed: the same key written otherwise shows the same."""
    assert shown_value(STABLE, "2001:db8::1") == shown_value(
        STABLE, "2001:0DB8:0000:0000:0000:0000:0000:0001") == "<secret, 16 bytes, sha256:4b706fbb>"
    assert shown_value(STABLE, "2001:db8::2") != shown_value(STABLE, "2001:db8::1")
    assert shown_value(KEY, "ABCDEF01-2-3-4") == shown_value(
        KEY, "abcdef01-00000002-00000003-00000004")
    assert shown_value(KEY, "1-2-3-4,5-6-7-8").startswith("<secret, 32 bytes, sha256:")
    assert shown_value("net.ipv4.ip_forward", "1") == "1"


def test_a_value_the_kernel_refuses_is_shown_by_its_length_alone() -> None:
    """A short value's digest would give it away (a typo of the real key, often)."""
    assert shown_value(KEY, "1-2-3") == "<secret, 5 characters>"
    assert shown_value(STABLE, "2001:db8::g") == "<secret, 11 characters>"


@pytest.mark.parametrize(("name", "value"), [
    (KEY, "1-2-3"), (KEY, "1-2-3-4,5-6-7-8,9-a-b-c"), (STABLE, "2001:db8::dead:beeg"),
])
def test_a_refused_secret_is_a_spec_problem_that_does_not_quote_it(name: str,
                                                                   value: str) -> None:
    problem = value_problem(name, value)
    assert problem is not None
    assert value not in problem
    with pytest.raises(SpecError) as info:
        Spec.from_dict({"sysctls": {name: value}})
    assert value not in str(info.value)
    assert all(value not in p.message for p in info.value.problems)


def test_the_json_forms_an_apply_and_a_rollback_read_keep_the_value() -> None:
    """A plan file and the backends' records are read back to write the value (and give
    the previous one back): their to_dict holds it, and reads back equal."""
    sysctl = Sysctl(STABLE, "2001:db8::1", previous="2001:db8::2")
    assert sysctl.to_dict()["value"] == "2001:0db8:0000:0000:0000:0000:0000:0001"
    assert Sysctl.from_dict(sysctl.to_dict()).previous == sysctl.previous
    p = plan(State(), State(owned=[sysctl]))
    assert Plan.from_dict(p.to_dict()) == p


def test_redact_secrets_leaves_every_other_object_as_it_is() -> None:
    data = State(owned=[Sysctl("net.ipv4.ip_forward", "1", previous="0"),
                        Sysctl(KEY, "1-2-3-4")]).to_dict()
    redacted = redact_secrets(data)
    assert redacted["owned"][0] == data["owned"][0]
    assert redacted["owned"][1]["value"] == shown_value(KEY, "1-2-3-4")
    assert data["owned"][1]["value"] == "00000001-00000002-00000003-00000004"  # a copy


@pytest.mark.parametrize(("name", "secret"), [
    (KEY, True), (STABLE, True), ("net/ipv6/conf/eth0.100/stable_secret", True),
    ("net.ipv6.conf.eth0/100.stable_secret", True), ("net.ipv6.conf.default.stable_secret", True),
    ("net.ipv4.ip_forward", False), ("net.ipv6.conf.eth0.addr_gen_mode", False),
    ("net.ipv4.tcp_fastopen", False),
])
def test_is_secret_names_the_fast_open_keys_and_every_stable_secret(name: str,
                                                                    secret: bool) -> None:
    assert is_secret(name) is secret
    assert Sysctl(name, "1" if not secret else "1-2-3-4" if "fastopen" in name
                  else "::1").secret is secret


def test_a_vlan_interfaces_stable_secret_is_held_as_the_kernel_shows_it() -> None:
    """Its name slash-separated (a dot in the interface's name): not recognised as a
    stable_secret before, it was held as written (the kernel shows its 8 groups of 4),
    and every apply of one written shorter failed."""
    sysctl = Sysctl("net.ipv6.conf.eth0/100.stable_secret", "2001:db8::1")
    assert sysctl.value == "2001:0db8:0000:0000:0000:0000:0000:0001"
    assert sysctl.tier == 0


@pytest.mark.parametrize("value", [
    ["deadbeef-cafebabe-12345678-9abcdef0", "deadbeef-cafebabe-12345678-9abcdef1"],
    {"key": "deadbeef-cafebabe-12345678-9abcdef0"},
    "deadbeef-cafebabe-12345678-9abcdef0\x00",
    "2001:db8:dead:beef:cafe:babe:1234:5678\u200b",  # pasted with a zero-width space
])
@pytest.mark.parametrize("name", [KEY, STABLE, "net/ipv6/conf/eth0.100/stable_secret"])
def test_a_secret_refused_as_no_printable_text_is_a_problem_that_does_not_quote_it(
        name: str, value: object) -> None:
    """The model's first check (a string or an integer, printable ASCII) quoted a YAML
    list of the two Fast Open keys, or a key with a control or non-ASCII character,
    whole; another sysctl's value is still quoted."""
    with pytest.raises(SpecError) as info:
        Spec.from_dict({"sysctls": {name: value}})
    with pytest.raises(ModelError) as model:
        Sysctl(name, value)  # type: ignore[arg-type]
    with pytest.raises(ModelError) as previous:
        Sysctl(name, "2001:db8::1" if "stable" in name else "1-2-3-4",
               previous=value)  # type: ignore[arg-type]
    with pytest.raises(ModelError) as checked:
        value_problem(name, value)  # type: ignore[arg-type]
    texts = [str(info.value), *(p.message for p in info.value.problems), str(model.value),
             str(previous.value), str(checked.value)]
    for text in texts:
        for form in ("deadbeef", "dead:beef", "cafe:babe"):
            assert form not in text.lower(), text
    assert "sysctl value" in str(model.value)
    with pytest.raises(ModelError, match="'deadbeef-1\\\\x00'"):
        Sysctl("net.ipv4.tcp_syn_retries", "deadbeef-1\x00")
    with pytest.raises(ModelError, match="got \\['deadbeef'\\]"):
        Sysctl("net.ipv4.tcp_syn_retries", ["deadbeef"])  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["0x00112233445566778899aabbccddeeff", "0xdeadbeef", "010",
                                   "+2"])
@pytest.mark.parametrize("name", [KEY, STABLE, "net/ipv6/conf/eth0.100/stable_secret"])
def test_a_secret_written_as_a_number_is_refused_as_no_key_without_quoting_it(
        name: str, value: str) -> None:
    """ip-sysctl.rst calls Fast Open keys "32-digit hexadecimal INTEGERs": a key written
    0x... was taken for a number not written in decimal, quoted whole and in decimal,
    with advice to write that decimal, which the kernel refuses too (EIO, read in a
    lab namespace); it is the key's problem now, by its length."""
    with pytest.raises(SpecError) as info:
        Spec.from_dict({"sysctls": {name: value}})
    (problem,) = info.value.problems
    assert f"got <secret, {len(value)} characters>: the kernel refuses it" in problem.message
    assert value not in problem.message
    assert "in decimal" not in problem.message
    assert str(int(value, 0)) not in problem.message if value.startswith("0x") else True


def test_redact_secrets_copies_only_what_holds_a_secret_and_changes_nothing_given() -> None:
    """What a 10k-destination plan's JSON is printed through: copying its 20,000 objects
    cost 70-90 ms of CPU (a third of the JSON's printing); only the path to a secret is
    copied now, and the data given (a plan file's, kept) is left as it was."""
    key = Sysctl(KEY, "1-2-3-4", previous="5-6-7-8")
    p = plan(State(), State(owned=[MasqueradeRule("10.42.0.0/16"),
                                   Sysctl("net.ipv4.ip_forward", "1"), key]))
    data: dict[str, Any] = {"plan": p.to_dict(), "none": None, "nested": [[key.to_dict()]]}
    before = json.dumps(data)
    shown = redact_secrets(data)
    assert json.dumps(data) == before
    expected = json.loads(before)
    expected["nested"][0][0].update(value=shown_value(KEY, key.value),
                                    previous=shown_value(KEY, "5-6-7-8"))
    changes = data["plan"]["changes"]
    (held,) = [i for i, c in enumerate(changes) if c["after"].get("name") == KEY]
    expected["plan"]["changes"][held]["after"] = expected["nested"][0][0]
    assert shown == expected
    assert all((shown["plan"]["changes"][i] is c) == (i != held) for i, c in enumerate(changes))
    plain = [c for i, c in enumerate(changes) if i != held]
    assert redact_secrets(plain) is plain
