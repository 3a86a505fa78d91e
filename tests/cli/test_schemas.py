"""Every JSON document k3snet prints validates against the schema shipped for it."""

from __future__ import annotations

import functools
import importlib
import json
import logging
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from referencing import Registry, Resource

from k3snet import MemoryBackend, Plan, State, plan, register_backend
from k3snet.backends.registry import unregister_backend
from k3snet.cli import main
from k3snet.errors import ModelError
from k3snet.model import Drift, MasqueradeRule, Route, RouteBlock, SnatRule, Sysctl
from k3snet.schemas import SCHEMA_NAMES, load_schema
from k3snet.testing import strategies
from tests.zoned import zoned_addresses

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
REGISTRY: Registry[Any] = Registry().with_resources(
    (load_schema(n)["$id"], Resource.from_contents(load_schema(n))) for n in SCHEMA_NAMES)


def validate(document: object, name: str) -> None:
    _validator(name).validate(document)


@functools.cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    """The schema checked once, its validator made once (per example it was most of the
    property's time)."""
    schema = load_schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=REGISTRY)


def test_the_schemas_are_valid_schemas() -> None:
    for name in SCHEMA_NAMES:
        jsonschema.Draft202012Validator.check_schema(load_schema(name))


@settings(deadline=None)  # schema validation is slow on a loaded machine
@given(strategies.objects())
# A VLAN interface's sysctl: its canonical name is slash-separated (the schema took
# dotted names only).
@example(Sysctl("net.ipv4.conf.eth0/100.rp_filter", "0"))
@example(Sysctl("net.ipv4.conf.wg+0@x.rp_filter", "1"))
def test_every_object_the_strategies_draw_validates(obj: Any) -> None:
    validate(obj.to_dict(), "object")


@pytest.mark.parametrize("name", ["net.ipv4.ip_forward", "net/ipv4/conf/eth0.100/rp_filter",
                                  "net.ipv4.conf.wg+0.rp_filter"])
def test_a_sysctl_named_as_the_model_names_it_validates(name: str) -> None:
    """A VLAN interface's sysctl is slash-spelled (its name holds a dot) and an interface
    name may hold + or @: the object's JSON (observe, plan, state documents) failed the
    schema's dotted-only name pattern."""
    validate(Sysctl(name, "1").to_dict(), "object")


@settings(deadline=None)
@given(strategies.route_blocks())
def test_every_route_block_validates_and_a_wrong_field_does_not(block: RouteBlock) -> None:
    validate(block.to_dict(), "object")
    with pytest.raises(jsonschema.ValidationError):
        validate(block.to_dict() | {"gateway": "192.0.2.1"}, "object")


@pytest.mark.parametrize("device", [
    "a" * 16, "v\u00e9" * 8, "a/b", "a\u0000b", "a" * 15 + "\n",
    # 15 characters or fewer, 16 bytes or more in UTF-8: the schema's maxLength counted
    # characters and took them, the model (and the kernel) counts bytes.
    "v\u00e9" * 5 + "x", "\u00e9" * 8, "\u20ac" * 6, "\U0001f600" * 4, "\udce9" * 16,
    "\ud800" * 6, "x" + "\udc7f" * 5, "a" * 10 + "\udd00" * 2])
def test_a_route_block_device_the_kernel_cannot_hold_does_not_validate(device: str) -> None:
    """IFNAMSIZ is 16 with the NUL: a name of 16 bytes or more is no device's, as
    the model refuses it; the schema took any length, then any 15 characters."""
    block = RouteBlock("10.0.0.0/8", what="device", device="v\u00e9").to_dict()
    validate(block, "object")
    with pytest.raises(ModelError):
        RouteBlock("10.0.0.0/8", what="device", device=device)
    with pytest.raises(jsonschema.ValidationError):
        validate(block | {"device": device}, "object")


@pytest.mark.parametrize("device", ["\udcff" * 6, "\udce9" * 15, "eth" + "\udcfe" * 12,
                                    "v\u00e9" + "\udcff" * 12])
def test_a_route_block_device_of_bytes_that_are_no_utf8_validates_at_up_to_15_bytes(
        device: str) -> None:
    """A byte of the kernel's name that is no UTF-8, read as a lone surrogate
    (``surrogateescape``), is one byte of it: counted 3, a name of 6 such bytes, which the
    kernel holds, was refused, and the route through it was lost with it."""
    block = RouteBlock("10.0.0.0/8", what="device", device=device)
    validate(block.to_dict(), "object")


def _device_bytes() -> list[dict[str, Any]]:
    """The schema's bound of a route block's device in bytes of UTF-8 (a kernel byte read
    as no UTF-8, a lone surrogate U+DC80 .. U+DCFF, its one byte as the model counts it;
    any other lone surrogate 3), built: one of its branches holds. A regular expression
    cannot add weights: each branch caps the characters of 4, 3 and 2 bytes (d, c, b) and
    the length the rest leaves (15 - b - 2c - 3d). No
    lookaround: Go's RE2 (kubeconform) cannot compile one, and no ``\\U`` or ``\\u``
    escape, which ECMA 262 (ajv, VS Code) or RE2 lacks: the characters themselves."""
    # (a character of 2, 3 or 4 bytes, any other): a lone surrogate is among 3's but
    # U+DC80 .. U+DCFF, a byte (1); beyond the BMP, 4, is what the BMP is not.
    two = ("[\u0080-\u07ff]", "[^\u0080-\u07ff]")
    three = ("[\u0800-\udc7f\udd00-\uffff]", "[^\u0800-\udc7f\udd00-\uffff]")
    four = ("[^\\x00-\uffff]", "[\\x00-\uffff]")

    def at_most(chars: tuple[str, str], k: int) -> dict[str, Any]:
        some, other = chars
        more = f"(?:{some}{other}*){{0,{k}}}" if k else ""
        return {"pattern": f"^{other}*{more}$"}

    return [at_most(four, d) | {"anyOf": [at_most(three, c) | {"anyOf": [
        at_most(two, b) | {"maxLength": 15 - b - 2 * c - 3 * d}
        for b in range((15 - 4 * d - 3 * c) // 2 + 1)]}
        for c in range((15 - 4 * d) // 3 + 1)]}
        for d in range(4)]


def test_the_route_block_device_bound_is_the_one_built() -> None:
    block = next(part["then"] for part in load_schema("object")["allOf"]
                 if part["if"]["properties"]["type"] == {"const": "route-block"})
    assert block["properties"]["device"]["anyOf"] == _device_bytes()


@settings(deadline=None)
@given(st.text(st.sampled_from(["a", "/", "\x00", "\n", "\u00e9", "\u07ff", "\u0800",
                                "\uffff", "\udce9", "\U00010000", "\U0010ffff"])
               | st.characters(), max_size=17))
def test_a_route_block_device_validates_exactly_when_the_model_takes_it(device: str) -> None:
    block = RouteBlock("10.0.0.0/8", what="device", device="v\u00e9").to_dict()
    try:
        RouteBlock("10.0.0.0/8", what="device", device=device)
    except ModelError:
        with pytest.raises(jsonschema.ValidationError):
            validate(block | {"device": device}, "object")
    else:
        validate(block | {"device": device}, "object")


def _patterns(node: Any) -> list[str]:
    """Every ``pattern`` of a schema (a property named so too: it is a name there)."""
    if isinstance(node, dict):
        own = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return own + [p for value in node.values() for p in _patterns(value)]
    if isinstance(node, list):
        return [p for value in node for p in _patterns(value)]
    return []


ALL_PATTERNS = sorted({p for name in SCHEMA_NAMES for p in _patterns(load_schema(name))})


def _ecma_262(patterns: list[str], texts: list[str]) -> list[list[bool]] | list[str]:
    """Node's RegExp with the ``u`` flag (ajv's, the VS Code YAML extension's): each
    pattern's search in each text, or the patterns it cannot compile."""
    node = shutil.which("node")
    assert node is not None, "no node here to run ECMA 262 regular expressions (make deps)"
    script = ("const [ps, ts] = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "const bad = []; const rs = ps.map(p => {try {return new RegExp(p, 'u')}"
              " catch (e) {bad.push(p)}});"
              "console.log(JSON.stringify(bad.length ? bad"
              " : rs.map(r => ts.map(t => r.test(t)))))")
    done = subprocess.run([node, "-e", script], input=json.dumps([patterns, texts]),
                          capture_output=True, text=True, check=True)
    answer: list[list[bool]] | list[str] = json.loads(done.stdout)
    return answer


def _as_go_reads(pattern: str) -> str:
    """``pattern`` as a Go validator has it: Go's JSON decoder reads an escaped lone
    surrogate (the device bound's U+DC7F and U+DD00) as U+FFFD; no Go string holds one."""
    return pattern.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def test_every_schema_pattern_compiles_in_ecma_262_and_in_re2() -> None:
    # JSON Schema's patterns are ECMA 262 (ajv, VS Code's YAML extension); Go validators
    # (kubeconform) compile them with RE2, which has no lookaround nor backreference. A
    # pattern one cannot compile fails the user's whole validation: the route block's
    # device (lookaheads and \U escapes) in both, the spec's interface names in RE2.
    assert _ecma_262(ALL_PATTERNS, []) == [[] for _ in ALL_PATTERNS]
    re2 = importlib.import_module("re2")  # google-re2, in the dev group (make deps)
    refused = []
    for pattern in ALL_PATTERNS:
        try:
            re2.compile(_as_go_reads(pattern))
        except re2.error:
            refused.append(pattern)
    assert refused == []


def _pattern_nodes(node: Any, skip: object) -> list[dict[str, Any]]:
    """Every subschema of ``node`` holding a ``pattern`` a text must match, but ``skip``
    and those under a ``not`` (which refuse what they match)."""
    if isinstance(node, list):
        return [n for value in node for n in _pattern_nodes(value, skip)]
    if not isinstance(node, dict) or node is skip:
        return []
    own = [node] if isinstance(node.get("pattern"), str) else []
    return own + [n for key, value in node.items() if key != "not"
                  for n in _pattern_nodes(value, skip)]


def _every_pattern_node() -> list[dict[str, Any]]:
    """The pattern nodes of every schema, once each. A route block's device is left out:
    its counting branches' classes take a newline (no gap to find), making texts of them
    costs seconds each, and its own property test above gives it newlines."""
    nodes: dict[str, dict[str, Any]] = {}
    for name in SCHEMA_NAMES:
        schema = load_schema(name)
        skip = next((part["then"]["properties"]["device"] for part in schema.get("allOf", ())
                     if part["if"]["properties"]["type"] == {"const": "route-block"}), None)
        nodes |= {json.dumps(n, sort_keys=True): n for n in _pattern_nodes(schema, skip)}
    return list(nodes.values())


PATTERN_NODES = _every_pattern_node()


@functools.cache
def _re2_compiled(pattern: str) -> Any:
    re2 = importlib.import_module("re2")  # google-re2, in the dev group (make deps)
    return re2.compile(_as_go_reads(pattern))


# Cheap at every run: a few examples, each several texts a node (one Node process for
# all of them), each RE2 pattern and each node's validator made once.
@settings(deadline=None, max_examples=4)
@given(st.tuples(*(st.lists(st.from_regex(node["pattern"], fullmatch=True), min_size=1,
                            max_size=4) for node in PATTERN_NODES)))
def test_no_schema_takes_a_text_ending_in_a_newline_that_ecma_262_or_re2_refuses(
        texts: tuple[list[str], ...]) -> None:
    """Python's ``$`` (jsonschema's) matches before a final newline: a pattern ``^...$``
    whose last part takes no newline took ``TEXT\\n`` there, which ECMA 262 and RE2 refuse.
    Each subschema with a pattern, given texts its pattern matches in Node and RE2 too,
    each plus a newline, is refused by jsonschema whenever Node or RE2 refuses that (the
    output-only CIDRs, hashes, protocol and sysctl names and logger took it, and the
    spec's backend names, option names and images)."""
    cases = [(i, node["pattern"], text) for i, (node, some) in enumerate(
                 zip(PATTERN_NODES, texts, strict=True)) for text in some]
    ecma = _ecma_262_pairs([(pattern, text + ending) for _, pattern, text in cases
                            for ending in ("", "\n")])

    def in_re2(pattern: str, text: str) -> bool:
        go = _as_go_reads(text)  # (no Go string holds a lone surrogate: ECMA 262's alone)
        return go != text or _re2_compiled(pattern).search(go) is not None

    taken = [(pattern, text + "\n") for k, (i, pattern, text) in enumerate(cases)
             # the text matches everywhere: only the final newline may make the difference
             if ecma[2 * k] and in_re2(pattern, text)
             and not (ecma[2 * k + 1] and in_re2(pattern, text + "\n"))
             and _node_validator(i).is_valid(text + "\n")]
    assert taken == []


@functools.cache
def _node_validator(i: int) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(PATTERN_NODES[i])


def _ecma_262_pairs(pairs: list[tuple[str, str]]) -> list[bool]:
    """Node's RegExp with the ``u`` flag: each pattern's search in its text."""
    node = shutil.which("node")
    assert node is not None, "no node here to run ECMA 262 regular expressions (make deps)"
    script = ("const pairs = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "console.log(JSON.stringify(pairs.map(([p, t]) => new RegExp(p, 'u').test(t))))")
    done = subprocess.run([node, "-e", script], input=json.dumps(pairs),
                          capture_output=True, text=True, check=True)
    answer: list[bool] = json.loads(done.stdout)
    return answer


DEVICES = ["eth0", "a" * 15, "a" * 16, "v\u00e9" * 7 + "x", "v\u00e9" * 8, "\u00e9" * 7,
           "\u00e9" * 8, "\u20ac" * 5, "\u20ac" * 5 + "x", "\u20ac" * 6,
           "\U0001f600" * 3 + "abc", "\U0001f600" * 3 + "abcd", "\U0001f600" * 4,
           "\u20ac\U0001f600\u00e9ab", "\u20ac\U0001f600\u00e9abcd", "a/b", "\n",
           "eth0\n", "a" * 14 + "\n", "a" * 15 + "\n", "\uffff" * 5]


def _takes(device: str, search: dict[str, bool]) -> bool:
    """Whether the route block's device schema takes ``device``, its patterns searched
    as ``search`` says (pattern to whether it matches), lengths in code points."""
    schema = next(part["then"] for part in load_schema("object")["allOf"]
                  if part["if"]["properties"]["type"] == {"const": "route-block"})
    size = len(device)

    def holds(node: dict[str, Any]) -> bool:
        return (node.get("minLength", 0) <= size <= node.get("maxLength", size)
                and search.get(node.get("pattern", ""), True)
                and ("anyOf" not in node or any(holds(n) for n in node["anyOf"])))

    return holds(schema["properties"]["device"])


def _model_takes(device: str) -> bool:
    try:
        RouteBlock("10.0.0.0/8", what="device", device=device)
    except ModelError:
        return False
    return True


def test_the_route_block_device_bound_holds_in_ecma_262_and_in_re2() -> None:
    # The byte bound as an ECMA 262 and an RE2 engine read it, as the model counts.
    patterns = sorted(set(_patterns(load_schema("object"))))
    # (no Go string holds a lone surrogate: the bytes that are no UTF-8 are ECMA 262's)
    ecma = [*DEVICES, "\udcff" * 6, "\udce9" * 15, "\udce9" * 16, "\ud800" * 5, "\ud800" * 6,
                      "x" + "\udc7f" * 5, "v\u00e9" + "\udcff" * 12]
    found = _ecma_262(patterns, ecma)
    assert [_takes(device, {p: bool(found[i][j]) for i, p in enumerate(patterns)})
            for j, device in enumerate(ecma)] == [_model_takes(d) for d in ecma]
    re2 = importlib.import_module("re2")  # google-re2, in the dev group (make deps)
    assert [_takes(device, {p: re2.search(_as_go_reads(p), device) is not None
                                    for p in patterns})
            for device in DEVICES] == [_model_takes(d) for d in DEVICES]


@pytest.mark.parametrize("field", ["device", "gateway"])
def test_an_interface_name_ending_in_a_newline_does_not_validate(field: str) -> None:
    # Python's "$" (jsonschema's) matches before a final newline: "^[...]{1,15}$" took
    # "eth0\n" (and "fe80::1%eth0\n"), which ECMA 262 and RE2 refuse, and the model a
    # device (it strips an address's blanks; k3snet writes none).
    route = Route("fe80::/64", gateway="fe80::1%eth0", device="eth0").to_dict()
    route["gateway"] = "fe80::1%eth0"
    validate(route, "object")
    validate(route | {"device": None, "gateway": None}, "object")  # null stays valid
    with pytest.raises(jsonschema.ValidationError):
        validate(route | {field: route[field] + "\n"}, "object")
    if field == "device":
        with pytest.raises(ModelError):
            Route("fe80::/64", gateway="fe80::1", device="eth0\n")


IFNAME_TEXTS = st.text(st.sampled_from(["a", "Z", "0", "_", "-", ".", "+", "@", "/", ":", " ",
                                         "\n", "\t", "\u00e9", "%"]), max_size=17)
TRICKY_IFNAMES = [".", "..", "...", "+", "++", "a+", "@", "@x", "x@", ".@", "+@x", "all",
                  "default", "eth0.100", "wg+0@x", "eth0\n", "a" * 15, "a" * 16, "-", "_", ""]


def _model_takes_ifname(name: str) -> bool:
    try:
        MasqueradeRule("10.42.0.0/16", out_interface=name)
    except ModelError:
        return False
    return True


def _validates(document: dict[str, Any]) -> bool:
    try:
        validate(document, "object")
    except jsonschema.ValidationError:
        return False
    return True


@settings(deadline=None)
@given(IFNAME_TEXTS | st.sampled_from(TRICKY_IFNAMES))
@example(".")
@example("+")
@example("@x")
def test_an_interface_name_validates_in_object_json_exactly_when_the_model_takes_it(
        name: str) -> None:
    """object.json's interface names (a route's device, a NAT rule's out_interface, a
    forward rule's in and out interface) took ``.``, ``..``, ``+`` and ``@x``, which the
    model refuses (``+`` is every interface to iptables, ``@x`` a set to nft's JSON)."""
    takes = _model_takes_ifname(name)
    route = Route("10.0.0.0/8", device="eth0").to_dict()
    masquerade = MasqueradeRule("10.42.0.0/16").to_dict()
    forward = {"type": "forward", "source": "10.42.0.0/16", "destination": "10.0.0.0/8"}
    assert [_validates(route | {"device": name}),
            _validates(masquerade | {"out_interface": name}),
            _validates(forward | {"in_interface": name}),
            _validates(forward | {"out_interface": name})] == [takes] * 4
    if name == name.strip() and "%" not in name:  # the address parser strips blanks
        try:
            Route("fe80::/64", gateway=f"fe80::1%{name}")
        except ModelError:
            zone_takes = False
        else:
            zone_takes = True
        # (a zone of digits alone is an interface index, refused: never a device "2"),
        # and object.json says the same: it took `fe80::1%0`, which the model refuses
        assert zone_takes == (takes and not (name.isascii() and name.isdigit()))
        assert _validates(route | {"gateway": f"fe80::1%{name}", "device": None}) == zone_takes


@pytest.mark.parametrize("address", ["fd00::1", "192.168.1.5", "fe80::1%eth0", "fd00::1%0",
                                     "fe80::1%eth0.10"])
def test_a_snat_address_validates_in_object_json_exactly_when_the_model_takes_it(
        address: str) -> None:
    """object.json's SNAT ``to_address`` took a zone id (``fe80::1%eth0``), which the
    model refuses whatever the zone: no interface names where a source address goes."""
    try:
        rule = SnatRule("fd42::/64" if ":" in address else "10.42.0.0/16",
                        to_address=address)
    except ModelError:
        takes = False
    else:
        takes = True
    document = SnatRule("10.42.0.0/16", to_address="192.168.1.5").to_dict()
    if takes:
        document = rule.to_dict()
    assert _validates(document | {"to_address": address}) == takes


def _route_takes(gateway: str) -> bool:
    try:
        Route("fc00:1::/64" if ":" in gateway else "192.168.7.0/24", gateway=gateway)
    except ModelError:
        return False
    return True


@settings(deadline=None)
@given(zoned_addresses())
@example("fd00::1%eth0")
@example("2001:db8::1%eth0")
@example("10.0.0.1%eth0")
@example("FE80:0000:0000:0000:0000:0000:0000:0001%eth0")
def test_a_gateway_with_or_without_a_zone_validates_in_object_json_exactly_when_the_model_takes_it(
        gateway: str) -> None:
    """object.json's route gateway took a zone id on any address (``fd00::1%eth0``,
    ``10.0.0.1%eth0``), which the model refuses: only a link-local address (fe80::/10)
    names its interface. Over unicast addresses of every kind, with zones good and bad,
    the schema and the model agree."""
    route = Route("fc00:1::/64" if ":" in gateway else "192.168.7.0/24",
                  device="eth0").to_dict()
    assert _validates(route | {"gateway": gateway, "device": None}) == _route_takes(gateway)


def _ifname_node_takes(name: str, search: dict[str, bool]) -> bool:
    """Whether object.json's interface-name node takes ``name``, its patterns searched as
    ``search`` says (its ``not``: an ``enum`` or a pattern)."""
    node = next(part["then"] for part in load_schema("object")["allOf"]
                if part["if"]["properties"]["type"] == {"const": "masquerade"}
                )["properties"]["out_interface"]
    refused = any(name in branch.get("enum", ()) or search.get(branch.get("pattern", ""), False)
                  for branch in node["not"]["anyOf"])
    return search[node["pattern"]] and not refused


def test_object_json_interface_names_hold_in_ecma_262_and_in_re2() -> None:
    patterns = sorted(set(_patterns(load_schema("object"))))
    found = _ecma_262(patterns, TRICKY_IFNAMES)
    assert [_ifname_node_takes(name, {p: bool(found[i][j]) for i, p in enumerate(patterns)})
            for j, name in enumerate(TRICKY_IFNAMES)] == [
                _model_takes_ifname(n) for n in TRICKY_IFNAMES]
    re2 = importlib.import_module("re2")  # google-re2, in the dev group (make deps)
    assert [_ifname_node_takes(name, {p: re2.search(_as_go_reads(p), name) is not None
                                      for p in patterns})
            for name in TRICKY_IFNAMES] == [_model_takes_ifname(n) for n in TRICKY_IFNAMES]


def test_drift_and_protocol_names_validate() -> None:
    validate(Drift.of("nat", backend="nftables", where="t", what="x").to_dict(), "object")
    validate(Route("10.0.0.0/8", device="eth0", protocol="static").to_dict(), "object")
    validate(Route("10.0.0.0/8", device="eth0", protocol=77).to_dict(), "object")


def test_the_schema_rejects_what_is_not_an_object() -> None:
    bad = MasqueradeRule("10.42.0.0/16").to_dict() | {"source": "not a cidr"}
    with pytest.raises(jsonschema.ValidationError):
        validate(bad, "object")
    with pytest.raises(jsonschema.ValidationError):
        validate(SnatRule("10.42.0.0/16", to_address="192.168.1.5").to_dict() | {"x": 1},
                 "object")


def _cli_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Any:
    main([*argv, "--output", "json"])
    return json.loads(capsys.readouterr().out)


def test_cli_outputs_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    held = MemoryBackend(State(foreign=[Route("192.168.9.0/24", gateway="192.168.1.1",
                                              device="eth0", protocol="static")],
                               owned=[Sysctl("net.ipv4.conf.all.rp_filter", "2")]))
    register_backend("memory-held", lambda: held)
    try:
        common = ["--backend", "memory-held", "--no-facts"]
        validate(_cli_json(["plan", "-f", str(SEED), *common], capsys), "plan")
        validate(_cli_json(["apply", "-f", str(SEED), *common, "--dry-run"], capsys), "apply")
        validate(_cli_json(["apply", "-f", str(SEED), *common], capsys), "apply")
        validate(_cli_json(["observe", *common], capsys), "state")
        validate(_cli_json(["plan", "-f", "/nonexistent", *common], capsys), "error")
        out = tmp_path / "p.plan"
        main(["plan", "-f", str(SEED), *common, "--out", str(out)])
        validate(json.loads(out.read_text()), "planfile")
        validate(json.loads(held.dump()), "state")
    finally:
        unregister_backend("memory-held")


def test_validate_output_json_is_one_validation_document_valid_or_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "-f", str(SEED), "--output", "json"]) == 0
    good = json.loads(capsys.readouterr().out)
    validate(good, "validation")
    assert (good["valid"], good["problems"], good["destinations"]) == (True, [], 2)
    bad_spec = tmp_path / "bad.yaml"
    bad_spec.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\ndestinations:\n"
                        "  - cidr: 10.0.0.0/33\n  - cidr: 192.168.2.0/24\n    gateway: x\n")
    assert main(["validate", "-f", str(bad_spec), "--output", "json"]) == 1
    captured = capsys.readouterr()
    bad = json.loads(captured.out)
    validate(bad, "validation")
    assert (bad["valid"], bad["destinations"]) == (False, None)
    assert {p["path"] for p in bad["problems"]} == {"destinations[0].cidr",
                                                    "destinations[1].gateway"}
    assert "2 problems" in captured.err  # the person reading stderr still sees them
    with pytest.raises(jsonschema.ValidationError):  # the schema ties valid to problems
        validate(good | {"valid": False}, "validation")


def test_plans_with_notes_validate() -> None:
    static = Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0", protocol=4)
    p = plan(State(foreign=[static]), State(owned=[Route("192.168.2.0/24",
                                                          gateway="192.168.1.1",
                                                          device="eth0")]))
    assert p.notes
    validate(p.to_dict(), "plan")
    assert Plan.from_dict(p.to_dict()) == p
    # A note on an owned route a foreign one comes before names the owned route.
    mine = Route("192.168.2.0/24", gateway="192.168.1.2", device="eth0", metric=100)
    shadowed = plan(State(owned=[mine], foreign=[static]), State(owned=[mine]))
    assert shadowed.to_dict()["notes"][0]["owned"] == mine.to_dict()
    validate(shadowed.to_dict(), "plan")
    bad = shadowed.to_dict()
    bad["notes"][0]["owned"] = {"type": "route"}
    with pytest.raises(jsonschema.ValidationError):
        validate(bad, "plan")


def _log_lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_agent_events_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    held = MemoryBackend(State())
    register_backend("memory-agent", lambda: held)
    bad = tmp_path / "bad.yaml"
    bad.write_text("destinations: 3\n")
    common = ["--backend", "memory-agent", "--no-facts", "--no-kube", "--once",
              "--listen", "none", "--log-format", "json", "-v", "--node-name", "node-s"]
    try:
        assert main(["agent", "-f", str(SEED), *common]) == 0
        good = _log_lines(capsys.readouterr().err)
        assert main(["agent", "-f", str(bad), *common]) == 1
        failed = _log_lines(capsys.readouterr().err)
    finally:
        unregister_backend("memory-agent")
        logging.getLogger("k3snet.agent").handlers.clear()
    passes = [e for e in good + failed if "status" in e]
    assert {e["status"] for e in passes} == {"ok", "failed"}
    assert {e["node"] for e in good + failed if e["logger"] == "k3snet.agent"} == {"node-s"}
    for entry in good + failed:
        validate(entry, "log")


def test_cli_log_lines_validate(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["apply", "-f", str(SEED), "--backend", "memory", "--no-facts",
                 "--log-format", "json", "-vv"]) == 0
    lines = _log_lines(capsys.readouterr().err)
    assert lines
    for entry in lines:
        validate(entry, "log")
    with pytest.raises(jsonschema.ValidationError):
        validate({**lines[0], "format": 2}, "log")


def _held_destroy(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    """``k3snet destroy --output json ARGV`` over a backend owning one sysctl: the exit
    code, stdout read as JSON (every path prints exactly one document) and stderr."""
    held = MemoryBackend(State(owned=[Sysctl("net.ipv4.conf.all.rp_filter", "2")]))
    register_backend("memory-destroy", lambda: held)
    try:
        code = main(["destroy", "--backend", "memory-destroy", "--output", "json", *argv])
    finally:
        unregister_backend("memory-destroy")
    done = capsys.readouterr()
    return code, json.loads(done.out), done.err


def test_destroy_output_json_is_one_schema_valid_document_on_every_path(
        capsys: pytest.CaptureFixture[str]) -> None:
    # `destroy --output json` printed the text plan and summary on stdout.
    code, pending, _ = _held_destroy(capsys, "--dry-run")
    assert code == 2
    validate(pending, "apply")
    assert (pending["kind"], pending["dry_run"], pending["applied"]) == ("destroy", True, [])
    assert [c["action"] for c in pending["plan"]["changes"]] == ["delete"]
    code, done, err = _held_destroy(capsys, "--auto-approve", "--detailed-exitcode")
    assert code == 2
    validate(done, "apply")
    assert (done["kind"], done["dry_run"], len(done["applied"])) == ("destroy", False, 1)
    assert err == ""
    code, refused, err = _held_destroy(capsys)  # stdin is no terminal, no --auto-approve
    assert code == 1
    validate(refused, "error")
    assert refused["error"]["type"] == "NotConfirmed"
    # Why, in the document too: a CI job reading it was told "not confirmed" alone.
    assert refused["error"]["message"] == (
        "nothing was changed: not confirmed: stdin is not a terminal; pass --auto-approve "
        "to confirm")
    assert "Plan: 0 to add, 0 to replace, 1 to delete." in err  # what was not confirmed
    assert main(["destroy", "--backend", "memory", "--output", "json", "--auto-approve"]) == 0
    nothing = json.loads(capsys.readouterr().out)
    validate(nothing, "apply")
    assert (nothing["plan"]["changes"], nothing["applied"]) == ([], [])


@pytest.mark.kernel
def test_observe_save_output_json_validates_as_a_capture(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], require_root: None) -> None:
    # docs/cli.md lists the `capture` kind among the documents with a schema; it had none.
    from k3snet.lab.netns import temporary_netns  # noqa: PLC0415

    with temporary_netns("capture") as ns:
        assert main(["observe", "--netns", ns, "--save", str(tmp_path / "bundle"),
                     "--output", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    validate(document, "capture")
    assert document["files"]
    with pytest.raises(jsonschema.ValidationError):
        validate({**document, "missing": {"addr.json": 1}}, "capture")


def test_an_apply_document_with_warnings_validates(capsys: pytest.CaptureFixture[str]) -> None:
    class Warns(MemoryBackend):
        warnings = ("memory: other tables were not read whole",)

    register_backend("memory-warns", Warns)
    try:
        document = _cli_json(["apply", "-f", str(SEED), "--backend", "memory-warns",
                              "--no-facts"], capsys)
        assert document["warnings"]
        validate(document, "apply")
    finally:
        unregister_backend("memory-warns")


DOCTOR_GOLDEN = Path(__file__).resolve().parents[1] / "doctor" / "golden"


def _doctor_argv(case: Path) -> list[str]:
    """``k3snet doctor -o json`` over a golden bundle, for the flow its expected.json gives."""
    expected = json.loads((case / "expected.json").read_text())
    flow = expected["flow"]
    to = f"[{flow['destination']}]" if ":" in flow["destination"] else flow["destination"]
    if flow.get("port"):
        to = f"{to}:{flow['port']}"
    argv = ["doctor", "--from", flow["source"], "--to", to, "--proto", flow["protocol"],
            "--state", str(case), "--output", "json"]
    for cidr in expected.get("service_cidrs", []):
        argv += ["--service-cidr", cidr]
    return argv


@pytest.mark.parametrize("case", sorted(p.name for p in DOCTOR_GOLDEN.iterdir() if p.is_dir()))
def test_doctor_output_json_validates_for_every_golden_case(
        case: str, capsys: pytest.CaptureFixture[str]) -> None:
    # docs/schemas.md said `doctor -o json` had "no schema file yet": a script reading
    # the findings and the fix had only the prose of docs/doctor.md to go by.
    code = main(_doctor_argv(DOCTOR_GOLDEN / case))
    document = json.loads(capsys.readouterr().out)
    validate(document, "doctor")
    assert code == {"reaches": 0, "blocked": 3, "unknown": 4}[document["trace"]["verdict"]]


def test_the_doctor_schema_refuses_what_doctor_never_prints(
        capsys: pytest.CaptureFixture[str]) -> None:
    main(_doctor_argv(DOCTOR_GOLDEN / "service-clusterip"))  # endpoints, a translated one
    document = json.loads(capsys.readouterr().out)
    assert "endpoint" in document["trace"]
    validate(document, "doctor")
    for bad in ({**document, "kind": "plan"},
                {**document, "after": {"verdict": "maybe", "source_seen": None}},
                {**document, "trace": {**document["trace"], "extra": 1}},
                {**document, "findings": [{"code": "x"}]}):
        with pytest.raises(jsonschema.ValidationError):
            validate(bad, "doctor")


def test_every_schema_has_its_section_in_the_docs() -> None:
    """docs/schemas.md shows each shipped schema under its name, and says each
    document's ``format``: it said 1 for every one, and a plan file's is 2."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "schemas.md").read_text()
    assert set(SCHEMA_NAMES) <= set(re.findall(r"^## (\S+)$", page, re.M))
    formats = {load_schema(name)["properties"]["format"]["const"]
               for name in SCHEMA_NAMES if name not in ("spec", "object")}
    assert formats == {1, 2}
    assert re.search(r"a plan file's\s+is 2", page)
