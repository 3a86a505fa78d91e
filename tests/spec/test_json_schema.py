"""The spec's JSON Schema: generated from the field table, shipped, and agreeing with k3snet."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from k3snet import Spec, SpecError
from k3snet.schemas import load_schema
from k3snet.spec.json_schema import dumps, spec_json_schema
from k3snet.spec.schema import SECTIONS
from k3snet.testing import strategies
from tests.examples import examples
from tests.zoned import zoned_addresses

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "k3snet" / "schemas" / "spec.schema.json"
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")
VALIDATOR = jsonschema.Draft7Validator(spec_json_schema())
HEADER = {"apiVersion": "k3snet.io/v1alpha1", "kind": "EgressSpec"}


def _schema_accepts(document: Any) -> bool:
    return bool(VALIDATOR.is_valid(document))


def _k3snet_accepts(document: Any) -> bool:
    try:
        Spec.from_dict(document)
    except SpecError:
        return False
    return True


def test_the_shipped_schema_is_the_generated_one() -> None:
    assert SHIPPED.read_text(encoding="utf-8") == dumps(spec_json_schema()), (
        "k3snet/schemas/spec.schema.json is stale: run `make spec-schema`")
    assert load_schema("spec") == spec_json_schema()
    jsonschema.Draft7Validator.check_schema(spec_json_schema())


def test_every_key_of_the_table_is_in_the_schema_with_a_description() -> None:
    for path, section in SECTIONS.items():
        node = spec_json_schema()
        for part in filter(None, path.split(".")):
            node = node["properties"][part.removesuffix("[]")]
            node = node.get("items", node)
        for f in section.fields:
            outer, dot, inner = f.key.partition(".")
            found = node["properties"][outer]
            if dot:
                found = found["properties"][inner]
            if f.child is None:
                assert found.get("description"), f"{path}.{f.key} has no doc in the table"
        assert node["additionalProperties"] is False


def _example_specs() -> list[tuple[str, str]]:
    """(where, YAML text) of every example spec: examples/ and the docs' snippets."""
    found = [(str(p.relative_to(ROOT)), p.read_text(encoding="utf-8"))
             for p in sorted((ROOT / "examples").rglob("*.yaml"))]
    for page in sorted((ROOT / "docs").glob("*.md")):
        text = page.read_text(encoding="utf-8")
        blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
        blocks += re.findall(r'from_yaml\("""\n(.*?)"""', text, re.DOTALL)
        found += [(f"{page.name}#{i}", b) for i, b in enumerate(blocks)
                  if "kind: EgressSpec" in b]
    return found


EXAMPLES = _example_specs()


def test_the_examples_are_found() -> None:
    assert {"examples/seed.yaml", "spec.md#0", "getting-started.md#0"} <= dict(EXAMPLES).keys()


@pytest.mark.parametrize(("where", "text"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_every_example_spec_names_the_schema_and_validates(where: str, text: str) -> None:
    first = text.splitlines()[0]
    found = MODELINE.match(first)
    assert found, f"{where} must start with # yaml-language-server: $schema=..."
    if where.startswith("examples/"):  # in the checkout, the line points at the shipped file
        assert (ROOT / where).parent.joinpath(found[1]).resolve() == SHIPPED
    document = yaml.safe_load(text)
    VALIDATOR.validate(document)
    # ipMasqAgentConfig names a file on the node (docs/spec.md shows it): not here.
    document.get("masquerade", {}).pop("ipMasqAgentConfig", None)
    assert _k3snet_accepts(document)


@settings(deadline=None)  # schema validation is slow on a loaded machine
@given(strategies.specs())
def test_the_schema_accepts_every_spec_k3snet_writes(spec: Spec) -> None:
    document = {**HEADER, **spec.to_dict()}
    VALIDATOR.validate(document)
    assert _k3snet_accepts(document)


BASE: dict[str, Any] = {**HEADER, "destinations": [{"cidr": "192.168.7.0/24"}]}

INVALID: list[tuple[str, dict[str, Any]]] = [
    ("unknown top key", {"colour": "blue"}),
    ("unknown nested key", {"masquerade": {"mode": "all", "colour": 1}}),
    ("unknown destination key", {"destinations": [{"cidr": "192.168.7.0/24", "via": "x"}]}),
    ("bad enum", {"masquerade": {"mode": "some"}}),
    ("out of range", {"destinations": [{"cidr": "192.168.7.0/24", "table": 0}]}),
    ("excluded table", {"destinations": [{"cidr": "192.168.7.0/24", "table": 255}]}),
    ("missing required", {"destinations": [{"gateway": "192.168.1.1"}]}),
    ("wrong type", {"manageForwarding": "yes"}),
    ("not a list", {"cluster": {"podCIDRs": "10.42.0.0/16"}}),
    ("bad block size", {"cni": {"calico": {"blockSize": 64}}}),
    ("bad flannel type", {"cni": {"flannel": {"backend": {"type": "gre"}}}}),
    ("bad backend options", {"backends": {"nftables": 3}}),
    ("bad backend name", {"backends": ["nft ables"]}),
    ("bad option name", {"backends": {"nftables": {"1table": "x"}}}),
    ("wrong apiVersion", {"apiVersion": "k3snet.io/v2"}),
    ("bad namespace", {"agent": {"namespace": "Kube_System"}}),
    ("bad interval", {"agent": {"intervalSeconds": 0}}),
    ("no architecture", {"agent": {"architectures": []}}),
    ("architecture in capitals", {"agent": {"architectures": ["AMD64"]}}),
    # Python's "$" (jsonschema's) matches before a final newline: "^...$" took these.
    ("device ending in a newline", {"destinations": [{"cidr": "192.168.7.0/24",
                                                      "device": "eth0\n"}]}),
    ("out interface ending in a newline", {"masquerade": {"outInterface": "eth+\n"}}),
    ("namespace ending in a newline", {"agent": {"namespace": "kube-system\n"}}),
    ("cilium interfaces ending in a newline",
     {"cni": {"cilium": {"egressMasqueradeInterfaces": "eth0,eth1\n"}}}),
    *((f"device {name!r}", {"destinations": [{"cidr": "192.168.7.0/24", "device": name}]})
      for name in (".", "..", "+", "all", "default", "@eth0", "a" * 16)),
]


@pytest.mark.parametrize(("why", "change"), INVALID, ids=[w for w, _ in INVALID])
def test_the_schema_and_k3snet_refuse_the_same_specs(why: str, change: dict[str, Any]) -> None:
    document = {**BASE, **change}
    assert not _schema_accepts(document)
    assert not _k3snet_accepts(document)


@pytest.mark.parametrize("name", ["eth+", "a@b", "-", ".x", "..x", "alls", "a" * 15])
def test_an_interface_name_k3snet_takes_the_schema_takes_without_lookahead(name: str) -> None:
    # The pattern lost its lookahead (Go's RE2 cannot compile one): what it refused is
    # said apart ("not"), and what k3snet takes beside those words still validates.
    document = {**BASE, "destinations": [{"cidr": "192.168.7.0/24", "device": name}],
                "masquerade": {"outInterface": name}}
    assert _schema_accepts(document)
    assert _k3snet_accepts(document)


def test_a_document_without_its_header_is_refused_by_the_schema() -> None:
    assert _schema_accepts(BASE)
    assert not _schema_accepts({"destinations": BASE["destinations"]})


LEAVES = [(path, f) for path, section in SECTIONS.items() for f in section.fields
          if f.child is None and f.example is not None]


@pytest.mark.parametrize(("path", "field"), LEAVES, ids=[f"{p}:{f.key}" for p, f in LEAVES])
def test_every_example_of_the_table_is_valid_for_both(path: str, field: Any) -> None:
    document = _with_leaf(path, field, field.example)
    assert _k3snet_accepts(document)
    VALIDATOR.validate(document)


def _variants(example: Any) -> st.SearchStrategy[Any]:
    """Values near a field's example: respelt (blanks, case, a float for an int, a
    list of it), and values of other types or hostile text."""
    near: list[Any] = [None, True, 0, -1, 1.0, 2**32, "", " ", "é", "+", "@x", ".", "..",
                       "a" * 16, "a/b", "a:b", [], {}]
    if isinstance(example, str):
        near += [f" {example}", f"{example} ", f"{example}\n", example.upper(),
                 example.lower(), f"{example}x", example[:-1], [example]]
    elif isinstance(example, bool):
        near += [not example, "true", "yes"]
    elif isinstance(example, int):
        near += [example + 1, float(example), str(example), example * 1000]
    elif isinstance(example, list):
        near += [example[:1], example * 2, [f" {v}" if isinstance(v, str) else v
                                            for v in example]]
    return st.sampled_from(near)


# No deadline: schema validation is slow on a loaded machine.
@settings(deadline=None, max_examples=examples(300))
@given(st.data())
def test_the_schema_never_refuses_a_spec_k3snet_accepts(data: st.DataObject) -> None:
    """An editor must not flag a spec k3snet takes: the schema may let through what only
    ``k3snet validate`` can judge (host bits, overlaps, a float where an integer goes),
    never the other way round."""
    path, field = data.draw(st.sampled_from(LEAVES))
    value = data.draw(_variants(field.example))
    document = _with_leaf(path, field, value)
    if _k3snet_accepts(document):
        VALIDATOR.validate(document)


DUAL = {**HEADER, "cluster": {"podCIDRs": ["10.42.0.0/16", "fd42::/56"]}}


def _zoned_documents(address: str) -> list[dict[str, Any]]:
    """Specs giving ``address`` as a destination's gateway, then as the connectivity
    test's target (the two places the model takes a zone id)."""
    cidr = "fd00:1::/64" if ":" in address else "192.168.7.0/24"
    return [{**DUAL, "destinations": [{"cidr": cidr, "gateway": address}]},
            {**BASE, "connectivityTest": {"target": address}}]


@pytest.mark.parametrize(("address", "takes"), [
    ("fe80::1%eth0", True), ("FE80::1%wg0.10", True), ("fe80::1", True),
    ("fd00::1%eth0", False), ("fe80::1%2", False), ("fe80::1%+", False),
    ("fe80::1%eth0\n", False), ("fe80::1%eth0 ", False), ("10.0.0.1%eth0", False)])
def test_a_zoned_gateway_or_target_validates_exactly_when_k3snet_takes_it(
        address: str, takes: bool) -> None:
    """The schema refused ``fe80::1%eth0`` as a gateway (docs/spec.md gives it) and as the
    connectivity test's target, both of which k3snet takes: an editor flagged the spec."""
    gateway, target = _zoned_documents(address)
    # A link-local gateway without a zone needs the device: k3snet refuses it alone.
    assert _k3snet_accepts(gateway) == (takes and "%" in address)
    assert _k3snet_accepts(target) == takes
    assert _schema_accepts(gateway) == takes
    assert _schema_accepts(target) == takes


# No deadline: schema validation is slow on a loaded machine.
@settings(deadline=None)
@given(zoned_addresses())
def test_the_schema_takes_every_zoned_gateway_and_target_k3snet_takes(address: str) -> None:
    for document in _zoned_documents(address):
        if _k3snet_accepts(document):
            assert _schema_accepts(document), document
        elif "%" in address:
            # The zone the model refuses, the schema refuses too (no other fault here:
            # these addresses are unicast, a gateway's beside its device or its zone).
            assert not _schema_accepts(document), document


def _with_leaf(path: str, field: Any, value: Any) -> dict[str, Any]:
    """A spec whose field ``path:field.key`` is ``value`` (with what that field needs)."""
    needs: dict[str, dict[str, Any]] = {"destinations[]": {"cidr": "192.168.7.0/24"},
                                         "dns.zones[]": {"zone": "corp.example",
                                                         "resolvers": ["192.168.1.53"]},
                                         "connectivityTest": {"target": "192.168.7.1"},
                                         "masquerade": {"mode": "all"}}
    body = dict(needs.get(path, {}))
    outer, dot, inner = field.key.partition(".")
    body[outer] = {inner: value} if dot else value
    document: dict[str, Any] = dict(BASE)  # a destination: other keys refer to it
    where = document
    *parents, last = path.split(".") if path else [""]
    for part in parents:
        where = where.setdefault(part, {})
    if not last:
        document.update(body)
    elif last.endswith("[]"):
        where[last[:-2]] = [body]
    else:
        where[last] = body
    return document
