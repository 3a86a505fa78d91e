"""Every YAML k3snet reads says its errors in the spec loader's words: by line and column,
never PyYAML's ``"<unicode string>"``; and a NEL or LINE SEPARATOR is named, not counted
as a line."""

from __future__ import annotations

from pathlib import Path

import pytest

from k3snet.backends.cilium import _parse_agent
from k3snet.cli import main
from k3snet.errors import BackendError, SpecError
from k3snet.spec.source import load_mapping
from tests.spec.test_spec_source import _refusal

SPEC = """\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
cluster:
  podCIDRs: [10.42.0.0/16]
destinations:
  - cidr: 192.168.2.0/24
    gateway: 192.168.1.1
    device: eth0
"""


def test_a_netplan_file_yaml_error_says_line_and_column(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    etc = tmp_path / "netplan"
    etc.mkdir()
    (etc / "50-cloud-init.yaml").write_text("network:\n  ethernets: [eth0\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    assert main(["render", "netplan", "-f", str(spec), "-o", str(etc)]) != 0
    err = capsys.readouterr().err
    assert "<unicode string>" not in err
    # (PyYAML's pure-Python parser and libyaml word the problem itself differently.)
    assert (f"netplan file {etc / '50-cloud-init.yaml'} is not YAML netplan reads: while "
            "parsing a flow sequence (line 2, column 14): ") in err
    assert err.endswith(" (line 3, column 1)\n")


@pytest.mark.parametrize("depth", [200, 900, 2000])
def test_a_netplan_file_nested_too_deep_is_refused_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], depth: int) -> None:
    # Read beside the file k3snet writes, one nested deeper than Python's parser (or
    # the placement's walk) goes was an internal error (RecursionError).
    etc = tmp_path / "netplan"
    etc.mkdir()
    (etc / "50-x.yaml").write_text("network:\n  ethernets: " + "[" * depth + "]" * depth + "\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    assert main(["render", "netplan", "-f", str(spec), "-o", str(etc)]) != 0
    err = capsys.readouterr().err
    assert "internal error" not in err
    assert (f"netplan file {etc / '50-x.yaml'} nests deeper than 128 levels; k3snet does not "
            "read it") in err


def test_an_ip_masq_agent_config_yaml_error_says_line_and_column() -> None:
    with pytest.raises(BackendError) as info:
        _parse_agent("nonMasqueradeCIDRs: [10.0.0.0/8\n", "ConfigMap kube-system/ip-masq-agent")
    said = str(info.value)
    assert "<unicode string>" not in said
    assert said.startswith("ConfigMap kube-system/ip-masq-agent: the ip-masq-agent config is "
                           "not valid YAML or JSON (while parsing a flow sequence (line 1, "
                           "column 21): ")
    assert said.endswith(" (line 2, column 1)); Cilium cannot read it either")


@pytest.mark.parametrize(("text", "where"), [
    ("a: 1\nb: x\x85y: [\n", "U+0085 (NEL, next line) at line 2, column 5"),
    ("a: b\u2028c: d\n", "U+2028 (LINE SEPARATOR) at line 1, column 5"),
    ("a: 'b\u2029c'\n", "U+2029 (PARAGRAPH SEPARATOR) at line 1, column 6"),
    ('{"a": "b\u2028c"}', "U+2028 (LINE SEPARATOR) at line 1, column 9"),
])
def test_a_yaml_11_line_break_editors_do_not_show_is_refused_and_named(
        text: str, where: str) -> None:
    """PyYAML breaks lines at NEL, U+2028 and U+2029, an editor and YAML 1.2 do not:
    ``a: b<LS>c: d`` was read as two keys where the editor shows one line, and an
    error after one said "line 4" of a file of two lines."""
    said = _refusal(text)
    assert said.startswith(f"the text holds {where}: YAML 1.1 (k3snet) reads it as a line "
                           "break, YAML 1.2 (editors, the JSON Schema) as a character")


def test_escapes_of_those_characters_in_double_quotes_are_text() -> None:
    assert load_mapping('a: "b\\x85c\\u2028d\\L"\n', "spec.yaml") == {
        "a": "b\x85c\u2028d\u2028"}


def test_an_ip_masq_agent_config_error_after_a_nel_names_it_and_counts_lines_at_line_feeds(
        ) -> None:
    # Cilium's YAML (Go's, YAML 1.1 as PyYAML) reads the NEL as a line break too: only
    # the error's words change.
    with pytest.raises(BackendError) as info:
        _parse_agent("masqLinkLocal: true\x85x\nnonMasqueradeCIDRs: [10.0.0.0/8\n", "cm")
    said = str(info.value)
    # The "x" after the NEL, a key without ":" to YAML 1.1: where an editor shows it.
    assert "while scanning a simple key (line 1, column 21)" in said
    assert "the text holds U+0085 (NEL, next line) at line 1, column 20" in said


def test_a_spec_error_never_names_the_unicode_string() -> None:
    with pytest.raises(SpecError) as info:
        load_mapping("a: [1\n", "spec.yaml")
    assert "<unicode string>" not in str(info.value)
