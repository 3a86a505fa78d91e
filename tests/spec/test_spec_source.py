"""Reading spec text, spec files and ip-masq-agent configs is bounded: every refusal is one
SpecError, word for word."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from k3snet import SpecError
from k3snet.spec import IpMasqAgentConfig, Spec, load_ip_masq_agent_config
from k3snet.spec.source import MAX_BYTES, MAX_DEPTH, load_mapping, read_text


def _refusal(text: str, source: str | None = "spec.yaml") -> str:
    with pytest.raises(SpecError) as info:
        load_mapping(text, source)
    assert info.value.source == source
    (problem,) = info.value.problems
    assert problem.path == ""
    return problem.message


def _nested(depth: int, inner: str = "1") -> str:
    """YAML flow text of ``depth`` nested mappings and lists (alternating)."""
    text = inner
    for level in range(depth):
        text = f"{{k: {text}}}" if level % 2 else f"[{text}]"
    return text


def test_plain_yaml_and_json_are_read() -> None:
    assert load_mapping("a: 1\nb: [x, {c: null}]\n", None) == {"a": 1, "b": ["x", {"c": None}]}
    assert load_mapping('{"a": [1, 2]}', "s") == {"a": [1, 2]}
    assert load_mapping("", None) is None


def test_the_size_is_bounded() -> None:
    assert load_mapping("#" * MAX_BYTES, None) is None
    assert _refusal("#" * (MAX_BYTES + 1)) == (
        f"the spec is {MAX_BYTES + 1} characters; at most {MAX_BYTES} are read")


def test_anchors_aliases_and_duplicate_keys_are_refused() -> None:
    assert _refusal("a: &x [1]\nb: *x\n").startswith(
        "not valid YAML: anchors and aliases (&name, *name) are not allowed in a spec")
    assert _refusal("a: 1\nb: 2\na: 3\n").startswith(
        "not valid YAML: duplicate key 'a': every key may appear once")
    long_key = "k" * 100
    assert _refusal(f"{long_key}: 1\n{long_key}: 2\n").startswith(
        f"not valid YAML: duplicate key '{'k' * 80}': every key may appear once")
    # A key that is itself a collection is compared by identity: two are not the same key.
    with pytest.raises(SpecError):  # PyYAML cannot hash a list key: refused anyway
        load_mapping("? [a]\n: 1\n? [a]\n: 2\n", None)
    assert load_mapping("x: {a: 1}\ny: {a: 2}\n", None) == {"x": {"a": 1}, "y": {"a": 2}}


def test_bad_yaml_and_unreadable_numbers() -> None:
    message = _refusal("destinations: [\n")
    assert message.startswith("not valid YAML: ")
    assert len(message) <= len("not valid YAML: ") + 300
    # Python's own words were "... use sys.set_int_max_str_digits() to increase the limit".
    assert _refusal("a: " + "9" * 5000 + "\n") == (
        "cannot read the YAML: a number of more than 4300 digits")


def test_the_depth_is_bounded() -> None:
    assert load_mapping(_nested(MAX_DEPTH), None) is not None
    assert _refusal(_nested(MAX_DEPTH + 1)) == f"the spec nests deeper than {MAX_DEPTH} levels"
    assert _refusal("a: 1\nb: " + _nested(MAX_DEPTH)) == (
        f"the spec nests deeper than {MAX_DEPTH} levels")
    assert _refusal("- 1\n- " + _nested(MAX_DEPTH)) == (
        f"the spec nests deeper than {MAX_DEPTH} levels")
    assert load_mapping("a: 1\nb: " + _nested(MAX_DEPTH - 1), None) is not None


@pytest.fixture
def no_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    """PyYAML missing (k3snet without the ``spec`` extra): JSON only."""
    monkeypatch.setitem(sys.modules, "yaml", None)


@pytest.mark.usefixtures("no_yaml")
def test_without_pyyaml_json_is_read_with_the_same_bounds() -> None:
    assert load_mapping('{"a": {"b": [1, null]}}', None) == {"a": {"b": [1, None]}}
    assert _refusal('{"a": 1, "b": 2, "a": 3}') == (
        "duplicate key 'a': every key may appear once")
    assert _refusal('{"' + "k" * 100 + '": 1, "' + "k" * 100 + '": 2}') == (
        f"duplicate key '{'k' * 80}': every key may appear once")
    message = _refusal("a: 1\n")
    assert message.startswith("not JSON, and PyYAML is not installed for YAML "
                              "(pip install 'k3snet[spec]'): Expecting value")
    assert _refusal("[" * 100000 + "]" * 100000).startswith("not JSON, and PyYAML")
    deep = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    assert _refusal(deep) == f"the spec nests deeper than {MAX_DEPTH} levels"
    assert load_mapping("[" * MAX_DEPTH + "]" * MAX_DEPTH, None) == _list(MAX_DEPTH)
    assert _refusal("#" * (MAX_BYTES + 1), None).startswith(f"the spec is {MAX_BYTES + 1} ")


def _list(depth: int) -> object:
    value: list[object] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_a_byte_that_is_not_utf8_is_named_by_line_and_column(tmp_path: Path) -> None:
    """A spec saved as Latin-1 deep in a file: its byte offset alone sent the reader
    counting bytes; the line and column (characters, as an editor counts) say where."""
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(b"apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                     b"destinations:\n- cidr: 10.9.0.0/24\n  device: \xc3\xa9th\xe9\n")
    with pytest.raises(SpecError) as info:
        read_text(spec)
    (problem,) = info.value.problems
    assert problem.message == (f"{spec} is not UTF-8 text (byte 0xE9 at line 5, column 14, "
                               "byte 96 of the file: invalid continuation byte)")


@pytest.mark.parametrize(("data", "where"), [
    (b"\xef\xbb\xbfkind: caf\xe9\n", "byte 0xE9 at line 1, column 10, byte 12"),
    (b"a: 1\r\nkind: caf\xe9\r\n", "byte 0xE9 at line 2, column 10, byte 15"),
    (b"kind: \xc3\xa9\xa9\n", "byte 0xA9 at line 1, column 8, byte 8")])
def test_the_column_of_a_byte_that_is_not_utf8_is_the_one_an_editor_shows(
        tmp_path: Path, data: bytes, where: str) -> None:
    """A byte order mark is no character an editor shows (nor a column YAML counts), a
    CR before a line feed ends the line before, and a stray byte after a whole character
    is one column past it."""
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(data)
    with pytest.raises(SpecError) as info:
        read_text(spec)
    (problem,) = info.value.problems
    assert f"not UTF-8 text ({where} of the file: " in problem.message


def test_a_spec_file_is_a_regular_utf8_file_of_bounded_size(tmp_path: Path) -> None:
    good = tmp_path / "spec.yaml"
    good.write_text("kind: EgressSpec  # é\n")
    assert read_text(good) == "kind: EgressSpec  # é\n"
    exact = tmp_path / "exact.yaml"
    exact.write_bytes(b"#" * MAX_BYTES)
    assert len(read_text(exact)) == MAX_BYTES

    def refusal(path: Path) -> str:
        with pytest.raises(SpecError) as info:
            read_text(path)
        assert info.value.source == str(path)
        (problem,) = info.value.problems
        return problem.message

    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (MAX_BYTES + 1))
    assert refusal(big) == f"{big} is larger than {MAX_BYTES} bytes; a spec is far smaller"
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"kind: caf\xe9\n")
    assert refusal(latin) == (f"{latin} is not UTF-8 text (byte 0xE9 at line 1, column 10, "
                              "byte 9 of the file: invalid continuation byte)")
    assert refusal(tmp_path) == f"cannot read {tmp_path}: a directory"
    assert refusal(tmp_path / "missing.yaml") == (
        f"cannot read {tmp_path / 'missing.yaml'}: No such file or directory")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # so that opening it to read returns
    try:
        assert refusal(fifo) == f"cannot read {fifo}: not a regular file"
    finally:
        os.close(writer)


def test_an_ip_masq_agent_config_is_a_path_text_or_mapping(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqLinkLocalIPv6: true\n"
                    "resyncInterval: 60s\n")
    from_file = load_ip_masq_agent_config(str(path))
    assert from_file == IpMasqAgentConfig(non_masquerade_cidrs=["10.0.0.0/8"],
                                          masq_link_local_ipv6=True, resync_interval="60s")
    assert load_ip_masq_agent_config(path) == from_file
    assert load_ip_masq_agent_config(path.read_text()) == from_file
    assert load_ip_masq_agent_config({"nonMasqueradeCIDRs": ["10.0.0.0/8"],
                                      "masqLinkLocalIPv6": True,
                                      "resyncInterval": "60s"}) == from_file
    assert load_ip_masq_agent_config({}) == IpMasqAgentConfig()
    assert load_ip_masq_agent_config("masqLinkLocal: true") == IpMasqAgentConfig(
        masq_link_local=True)

    def refusal(source: object) -> tuple[str | None, list[str]]:
        with pytest.raises(SpecError) as info:
            load_ip_masq_agent_config(source)  # type: ignore[arg-type]
        return info.value.source, [str(p) for p in info.value.problems]

    bad = tmp_path / "bad"
    bad.write_text("masqLinkLocal: 1\n")
    assert refusal(str(bad)) == (str(bad), ["masqLinkLocal: expected true or false, got 1"])
    assert refusal("masqLinkLocal: 1") == (
        "ip-masq-agent config", ["masqLinkLocal: expected true or false, got 1"])
    # One line without ":" names a file, even a missing one (it was read as YAML text,
    # which said "expected a mapping, got a string").
    missing = str(tmp_path / "missing")
    assert refusal(missing) == (missing, [f"cannot read {missing}: No such file or directory"])
    assert load_ip_masq_agent_config("{}") == IpMasqAgentConfig()
    assert refusal("a: [")[0] == "ip-masq-agent config"
    assert refusal({"nonMasqueradeCIDRs": "10.0.0.0/8", "other": 1}) == (
        "ip-masq-agent config", [
            "other: unknown key (known: nonMasqueradeCIDRs, masqLinkLocal, masqLinkLocalIPv6, "
            "resyncInterval, cidrLimit)",
            "nonMasqueradeCIDRs: expected a list, got a string"])


@pytest.mark.parametrize(("text", "said"), [
    ("a: [1\n", "not valid YAML: while parsing a flow sequence (line 1, column 4): did not "
                "find expected ',' or ']' (line 2, column 1)"),
    ("a: &x [1]\nb: *x\n", "not valid YAML: anchors and aliases (&name, *name) are not "
                           "allowed in a spec (line 1, column 4)"),
    ("a: b\x00\n", "not valid YAML: character #x0000 at line 1, column 5: control "
                   "characters are not allowed"),
    ("a:\n  b: 1\n c: 2\n", "not valid YAML: while parsing a block mapping (line 1, column 1)"
                         ": did not find expected key (line 3, column 2)"),
    ("a: !!python/object/apply:os.system [id]\n",
     "not valid YAML: the tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed "
     "in a spec (plain YAML values only: text, numbers, true/false, null, lists, mappings) "
     "(line 1, column 4)"),
    ("a: !local x\n", "not valid YAML: the tag '!local' is not allowed in a spec (plain YAML "
                     "values only: text, numbers, true/false, null, lists, mappings) "
                     "(line 1, column 4)"),
])
def test_a_yaml_error_says_its_line_and_column_and_no_unicode_string(text: str,
                                                                     said: str) -> None:
    """PyYAML names text it was handed ``"<unicode string>"``: the problems said
    ``in "<unicode string>", line 4, column 11`` on lines of their own; the source (the
    file) is the SpecError's already. A tag PyYAML has no constructor for "could not
    determine a constructor", as if one were missing."""
    assert _refusal(text) == said


def test_anchor_and_duplicate_key_refusals_say_where() -> None:
    assert _refusal("a: 1\nb: &x [1]\nc: *x\n").endswith("(line 2, column 4)")
    assert _refusal("a: 1\nb: 2\na: 3\n").endswith("(line 3, column 1)")


def _collections_while(action: Callable[[], object]) -> int:
    """How many cyclic-GC collections ran while ``action`` ran (raising or not)."""
    ran: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            ran.append(info["generation"])

    gc.callbacks.append(count)
    try:
        with contextlib.suppress(SpecError):
            action()
    finally:
        gc.callbacks.remove(count)
    return len(ran)


@pytest.mark.parametrize("syntax", ["yaml", "json"])
def test_a_large_spec_is_parsed_with_the_gc_paused_and_resumed_after(
        syntax: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Hundreds of collections used to walk the parser's nodes (40 % of a 10k parse);
    # paused, the one left is the pause's own at its end. Also on a refusal.
    if syntax == "json":
        monkeypatch.setitem(sys.modules, "yaml", None)
    entries = [{"cidr": f"10.{n // 256}.{n % 256}.0/24", "gateway": "192.0.2.1"}
               for n in range(6000)]
    text = json.dumps({"destinations": entries})
    assert gc.isenabled()
    assert _collections_while(lambda: load_mapping(text, None)) <= 1
    assert gc.isenabled()
    assert _collections_while(lambda: load_mapping(text[:-1] + ", ]", None)) <= 1  # refused
    assert gc.isenabled()
    # A small spec leaves the GC alone (it is never turned off).
    small = json.dumps({"destinations": entries[:5]})
    monkeypatch.setattr(gc, "disable", lambda: pytest.fail("the GC paused for a small spec"))
    assert load_mapping(small, None) == {"destinations": entries[:5]}


SHADOW = "root:$6$SECRET1:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"


@pytest.mark.parametrize("loader", ["libyaml", "pure"])
@pytest.mark.parametrize("text", [
    SHADOW, "SECRET: 1\nSECRET: 2\n", "a: *SECRET\n", "token: [SECRET\n", "token: 'SECRET\n",
    "a:\n  b: SECRET\n c: 1\n", "nonMasqueradeCIDRs: [10.0.0.0/8]\nSECRET: 1\n",
])
def test_the_problems_of_an_ip_masq_agent_config_file_never_quote_its_text(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loader: str, text: str) -> None:
    # The agent reads the file a spec names as root, and the spec may come from a
    # ConfigMap others can edit; the problems go to the Node's annotation and Events.
    # Naming /etc/shadow made every password hash an "unknown key".
    import yaml  # noqa: PLC0415

    if loader == "pure":
        monkeypatch.setattr(yaml, "CSafeLoader", yaml.SafeLoader)
    path = tmp_path / "config"
    path.write_text(text)
    spec = (f"apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\nmasquerade:\n"
            f"  ipMasqAgentConfig: {path}\n")
    with pytest.raises(SpecError) as info:
        load_ip_masq_agent_config(str(path))
    assert "SECRET" not in str(info.value)
    assert info.value.source == str(path)
    with pytest.raises(SpecError) as info:
        Spec.from_yaml(spec, source="ConfigMap k3snet/spec")
    assert "SECRET" not in str(info.value)
    assert "masquerade.ipMasqAgentConfig" in str(info.value)


def test_an_ip_masq_agent_config_file_s_problems_still_say_what_is_wrong(
        tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(SHADOW)
    assert [str(p) for p in _problems(path)] == [
        "2 keys ip-masq-agent does not read (not shown: the file may be another one than its "
        "config; its keys are nonMasqueradeCIDRs, masqLinkLocal, masqLinkLocalIPv6, "
        "resyncInterval, cidrLimit)"]
    # A typo of one of its keys is named, and the values of its keys are quoted.
    path.write_text("nonMasqueradeCidrs: [10.0.0.0/8]\nmasqLinkLocal: 1\nother: 2\n")
    assert [str(p) for p in _problems(path)] == [
        "nonMasqueradeCidrs: unknown key (known: nonMasqueradeCIDRs, masqLinkLocal, "
        "masqLinkLocalIPv6, resyncInterval, cidrLimit)",
        "masqLinkLocal: expected true or false, got 1",
        "1 key ip-masq-agent does not read (not shown: the file may be another one than its "
        "config; its keys are nonMasqueradeCIDRs, masqLinkLocal, masqLinkLocalIPv6, "
        "resyncInterval, cidrLimit)"]
    path.write_text("a: 1\nb: [\n")
    assert [str(p) for p in _problems(path)] == [
        "cannot be read as YAML or JSON (line 3, column 1); the file's text is not shown"]
    # Text given in the spec itself is the spec writer's own: quoted as before.
    with pytest.raises(SpecError) as info:
        load_ip_masq_agent_config("SECRET: 1\nnonMasqueradeCIDRs: []\n")
    assert "SECRET: unknown key" in str(info.value)


def _problems(path: Path) -> list[object]:
    with pytest.raises(SpecError) as info:
        load_ip_masq_agent_config(str(path))
    return list(info.value.problems)


@pytest.mark.parametrize("text", [
    "gateway: 2001:db8::\n", "resolvers: [::1]\n", "snat: [fd00::]\n",
    "a:\n  b: 1\n  gateway: fe80::\n"])
def test_a_yaml_error_at_an_unquoted_ipv6_address_says_to_quote_it(text: str) -> None:
    # "mapping values are not allowed in this context" alone left an admin guessing.
    assert _refusal(text).endswith(
        "\n  (an IPv6 address that starts or ends with '::' must be quoted in YAML "
        "('fd00::', '::1'): unquoted, its ':' is read as a mapping's)")


@pytest.mark.parametrize("text", ["a: b: c\n", "a: [b\n", "a: x::y: 1\n", "a: 'fd00::\n"])
def test_a_yaml_error_elsewhere_has_no_ipv6_hint(text: str) -> None:
    assert "IPv6" not in _refusal(text)


@pytest.mark.parametrize(("text", "written"), [
    ("table: 0100\n", "0100"),             # YAML 1.1: octal 64; YAML 1.2 and people: 100
    ("port: 0443\n", "0443"),              # a connectivity test's port 291
    ("metric: -010\n", "-010"),
    ("a:\n  - 1:30\n", "1:30"),            # YAML 1.1: sexagesimal 90; YAML 1.2: a string
    ("a: [0_10]\n", "0_10"),
    ("table: 1_000\n", "1_000"),          # YAML 1.1: 1000; YAML 1.2: a string
    ("metric: 0b101\n", "0b101"),         # YAML 1.1: binary 5; YAML 1.2: a string
    ("a: -0x10\n", "-0x10"),              # YAML 1.1: -16; YAML 1.2: a string
    ("a: !!int 10_0\n", "10_0"),
])
def test_an_integer_yaml_versions_read_differently_is_refused_with_its_place(
        text: str, written: str) -> None:
    # PyYAML reads YAML 1.1, editors and the schema's tools YAML 1.2: the route went to
    # table 64 while the spec said 0100 and the editor showed 100.
    message = _refusal(text)
    assert message.startswith(f"not valid YAML: {written} is an integer that YAML 1.1 and "
                              "YAML 1.2 read differently; write it in decimal without a "
                              "leading 0 or _ (or quote it for a text)")
    assert "line " in message


@pytest.mark.parametrize(("text", "written", "where"), [
    ("sysctls:\n  net.ipv4.ip_forward: 01\n", "01", None),  # an int to both: refused above
    ("a: 09\n", "09", "(line 1, column 4)"),     # YAML 1.1: the text "09"; YAML 1.2: 9
    ("a: [1, 08]\n", "08", "(line 1, column 8)"),
    ("a: 0o17\n", "0o17", "(line 1, column 4)"),  # YAML 1.2: octal 15
    ("a: 1e3\n", "1e3", "(line 1, column 4)"),    # YAML 1.2: 1000.0
    ("a:\n  b: 1.0e3\n", "1.0e3", "(line 2, column 6)"),
    ('{"metric": 1e3}', "1e3", "(line 1, column 12)"),  # a JSON number, text to PyYAML
    ("09: x\n", "09", "(line 1, column 1)"),
    ("a: &x 09\n", "09", "(line 1, column 4)"),  # an anchor is no tag
])
def test_a_text_yaml_1_2_reads_as_a_number_is_refused_with_its_place(
        text: str, written: str, where: str | None) -> None:
    """PyYAML read ``09`` and ``1e3`` as text where an editor and the JSON Schema read
    numbers: a sysctl of ``09`` was written as "09" (the kernel refused it at apply)."""
    message = _refusal(text)
    if where is None:
        assert message.startswith(f"not valid YAML: {written} is an integer that YAML 1.1")
        return
    assert message == (f"not valid YAML: {written} is text to YAML 1.1 (k3snet) and a number "
                       "to YAML 1.2 (editors, the JSON Schema); write the number in decimal "
                       f"without a leading 0 or an exponent (or quote it for a text) {where}")


@pytest.mark.parametrize(("text", "value"), [
    ("a: '09'\n", "09"), ('a: "1e3"\n', "1e3"), ("a: !!str 09\n", "09"),
    ("\ufeffa: !!str 09\n", "09"), ("a: v1e3\n", "v1e3"), ("a: 1.2.3\n", "1.2.3"),
    ("a: 10.42.0.0/16\n", "10.42.0.0/16"), ("a: |\n  09\n", "09\n"), ("a: 1.5\n", 1.5),
    # Tagged after an anchor (a node's properties come in either order): the node starts
    # at the anchor, and "09" tagged !!str on purpose was refused as an untagged one.
    ("a: &x !!str 09\n", "09"), ("a: !!str &x 09\n", "09"), ("a: [&x !!str 1e3]\n", ["1e3"]),
    ("a: &x\n  !!str 09\n", "09"), ("a: &x  # why\n  !!str 09\n", "09"),
    ("a: &x !!str 0100\n", "0100"),
])
def test_a_text_both_yaml_versions_read_alike_is_read(text: str, value: object) -> None:
    assert load_mapping(text, None) == {"a": value}


@pytest.mark.parametrize(("text", "value"), [
    ("a: 0\n", 0), ("a: 100\n", 100), ("a: -0\n", 0), ("a: +254\n", 254), ("a: 0x10\n", 16),
    ("a: [0, 7]\n", [0, 7]), ("a: '0100'\n", "0100"), ("a: '1_000'\n", "1_000"),
    ("a: !!str 0100\n", "0100"), ("a: 12:30:00Z\n", "12:30:00Z"),
])
def test_integers_both_yaml_versions_read_alike_are_read(text: str, value: object) -> None:
    assert load_mapping(text, None) == {"a": value}


@pytest.mark.parametrize("text", [
    "destinations: [{cidr: 10.1.0.0/16}]\n<<: {destinations: []}\n",
    "a:\n  <<: {mode: off}\n  mode: all\n",
    "a: {<<: [{b: 1}, {b: 2}]}\n",
])
def test_merge_keys_are_refused_as_duplicate_keys_are(text: str) -> None:
    # "<<" (YAML 1.1 only) gave a key two values, one dropped silently, past the
    # duplicate-key refusal; YAML 1.2 tools and the schema read it as a key named "<<".
    assert _refusal(text).startswith(
        "not valid YAML: merge keys (<<) are not allowed in a spec")


def test_a_quoted_merge_key_is_a_plain_key() -> None:
    assert load_mapping("'<<': 1\n", None) == {"<<": 1}
