"""The spec's field table: every key round-trips, unknown keys and bad values carry paths."""

from __future__ import annotations

from typing import Any

import pytest

from k3snet import Spec, SpecError
from k3snet.spec import Destination, validate
from k3snet.spec.fields import Field, Section
from k3snet.spec.schema import SECTIONS, SPEC
from k3snet.spec.validators import int_in, integer, matches, one_of, optional

# What a section needs around it to be valid: its required keys, and the keys
# other fields depend on (nonMasqueradeCIDRs needs mode: all).
BASE: dict[str, dict[str, Any]] = {
    "destinations[]": {"cidr": "192.168.7.0/24"},
    "dns.zones[]": {"zone": "corp.example", "resolvers": ["192.168.1.53"]},
    "connectivityTest": {"target": "192.168.7.1"},
    "masquerade": {"mode": "all"},
}


def _place(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """A spec document holding ``body`` as the mapping at section ``path``."""
    doc: dict[str, Any] = {"destinations": [dict(BASE["destinations[]"])]}
    if not path:
        doc.update(body)
        return doc
    *parents, last = path.split(".")
    where = doc
    for part in parents:
        where = where.setdefault(part, {})
    if last.endswith("[]"):
        where[last[:-2]] = [body]
    else:
        where[last] = body
    return doc


def _nest(key: str, value: Any) -> dict[str, Any]:
    """``{key: value}``, nested for a dotted key."""
    outer, dot, inner = key.partition(".")
    return {outer: {inner: value}} if dot else {key: value}


def _get(data: Any, path: str) -> Any:
    for part in path.split("."):
        if part.endswith("[]"):
            data = data[part[:-2]][0]
        elif part:
            data = data[part]
    return data


def _section_path(path: str) -> str:
    """The problem path of a section: ``destinations[0]`` for ``destinations[]``."""
    return path.replace("[]", "[0]")


LEAVES = [(path, f) for path, section in SECTIONS.items() for f in section.fields
          if (f.attr is not None or f.spread) and f.child is None]


def test_every_section_of_the_table_is_listed() -> None:
    found: list[Section] = []

    def walk(section: Section) -> None:
        found.append(section)
        for f in section.fields:
            if f.child is not None:
                walk(f.child)

    walk(SPEC)
    assert sorted(map(id, found)) == sorted(map(id, SECTIONS.values()))


@pytest.mark.parametrize(("path", "field"), LEAVES, ids=[f"{p}:{f.key}" for p, f in LEAVES])
def test_every_key_round_trips(path: str, field: Field) -> None:
    assert field.example is not None, f"{path}.{field.key} has no example in the table"
    outer, dot, inner = field.key.partition(".")
    body = dict(BASE.get(path, {}))
    body[outer] = {**body.get(outer, {}), inner: field.example} if dot else field.example
    spec = Spec.from_dict(_place(path, body))
    written = spec.to_dict()
    assert Spec.from_dict(written) == spec
    section = _get(written, path)
    assert (section[outer][inner] if dot else section[outer]) == field.example
    if outer not in BASE.get(path, {}):  # a required key's example is in the base document
        default = _get(Spec.from_dict(_place(path, dict(BASE.get(path, {})))).to_dict(), path)
        # A key written only when set (omit_none) is absent from the default document.
        assert (default.get(outer, {}).get(inner) if dot else default.get(outer)) != \
            field.example


@pytest.mark.parametrize("path", list(SECTIONS))
def test_an_unknown_key_is_reported_with_its_path(path: str) -> None:
    body = {**BASE.get(path, {}), "colour": "blue"}
    with pytest.raises(SpecError) as info:
        Spec.from_dict(_place(path, body))
    where = f"{_section_path(path)}.colour" if path else "colour"
    known = ", ".join(SECTIONS[path].keys)
    assert f"{where}: unknown key (known: {known})" in [str(p) for p in info.value.problems]


def test_an_unknown_key_of_a_nested_mapping_is_reported_with_its_path() -> None:
    with pytest.raises(SpecError) as info:
        Spec.from_dict({"cni": {"flannel": {"backend": {"type": "vxlan", "vni": 1}}},
                        "dns": {"zone": []}})
    found = [str(p) for p in info.value.problems]
    assert "cni.flannel.backend.vni: unknown key (known: type, options)" in found
    assert "dns.zone: unknown key (known: zones)" in found


IMAGE_ADVICE = (": [REGISTRY[:PORT]/]NAME[:TAG][@DIGEST], NAME in lower case (the kubelet "
                "refuses any other on every node)")
BAD_VALUES = [
    ("destinations[]", "table", 255, "table must be 1..4294967295 and not 255, got 255"),
    ("destinations[]", "table", 0, "table must be 1..4294967295 and not 255, got 0"),
    ("destinations[]", "table", 2**32, "table must be 1..4294967295 and not 255, got 4294967296"),
    ("destinations[]", "table", True, "table must be 1..4294967295 and not 255, got True"),
    ("destinations[]", "metric", -1, "metric must be 0..4294967295, got -1"),
    ("destinations[]", "metric", "5", "metric must be 0..4294967295, got '5' (a text: write "
     "the number without quotes)"),
    ("connectivityTest", "port", 0, "must be 1..65535, got 0"),
    ("connectivityTest", "port", 65536, "must be 1..65535, got 65536"),
    ("connectivityTest", "namespace", "Bad_NS", "'Bad_NS' is not a valid namespace name"),
    # the Job's image is checked as the agent's is
    ("connectivityTest", "image", "busybox:1.37\n  command: [sh]",
     "'busybox:1.37\\n  command: [sh]' is not an image reference" + IMAGE_ADVICE),
    ("connectivityTest", "image", "", "'' is not an image reference" + IMAGE_ADVICE),
    ("agent", "intervalSeconds", 0, "must be 1..86400, got 0"),
    ("agent", "intervalSeconds", False, "must be 1..86400, got False"),
    ("agent", "image", "a b", "'a b' is not an image reference" + IMAGE_ADVICE),
    # what the API server takes and the kubelet refuses (InvalidImageName) on every node
    ("agent", "image", "registry.example/K3snet:1",
     "'registry.example/K3snet:1' is not an image reference" + IMAGE_ADVICE),
    ("agent", "image", "k3snet:1:2", "'k3snet:1:2' is not an image reference" + IMAGE_ADVICE),
    ("agent", "image", "k3snet@sha256:12", "'k3snet@sha256:12' is not an image reference"
     + IMAGE_ADVICE),
    ("connectivityTest", "image", "busybox:" + "1" * 129,
     f"'busybox:{'1' * 129}' is not an image reference" + IMAGE_ADVICE),
    # the name's 255 characters are counted as the kubelet counts them: with the
    # docker.io/library/ a name without a registry gets
    ("agent", "image", "k" * 250 + ":1", f"'{'k' * 250}:1' is not an image reference"
     + IMAGE_ADVICE),
    ("agent", "image", "k3snet/" + "k" * 240,
     f"'k3snet/{'k' * 240}' is not an image reference" + IMAGE_ADVICE),
    # 64 hexadecimal digits are an image ID, which the kubelet refuses as a name
    ("agent", "image", "a" * 64, f"'{'a' * 64}' is not an image reference" + IMAGE_ADVICE),
    ("agent", "namespace", "-x", "'-x' is not a valid namespace name"),
    ("egressPolicy", "namespace", "UPPER", "'UPPER' is not a valid namespace name"),
    ("masquerade", "mode", "some", "must be destinations, all or off, got 'some'"),
    # `mode: off` unquoted is YAML 1.1's false (PyYAML's, and Ansible's inline specs)
    ("masquerade", "mode", False, "must be destinations, all or off, got False "
     "(YAML reads an unquoted off as false: quote it, 'off')"),
    ("masquerade", "mode", True, "must be destinations, all or off, got True"),
    ("cni.calico", "ipipMode", "Sometimes",
     "expected one of Never, Always, CrossSubnet, got 'Sometimes'"),
    ("cni.calico", "vxlanMode", ["Always"],
     "expected one of Never, Always, CrossSubnet, got ['Always']"),
    ("cni.calico", "blockSize", "26", "expected 20..32 (IPv4) or 116..128 (IPv6), got '26'"),
    ("cni.calico", "blockSize", 2**70,
     "expected 20..32 (IPv4) or 116..128 (IPv6), got 1180591620717411303424"),
    ("cni.flannel", "backend.type", "bogus",
     "expected one of vxlan, host-gw, wireguard, udp, ipip, ipsec, alloc, extension, "
     "tencent-vpc, got 'bogus'"),
]


@pytest.mark.parametrize(("path", "key", "value", "message"), BAD_VALUES,
                         ids=[f"{p}.{k}={v!r}" for p, k, v, _ in BAD_VALUES])
def test_every_field_check_reports_its_path(path: str, key: str, value: Any,
                                            message: str) -> None:
    body = {**BASE.get(path, {}), **_nest(key, value)}
    with pytest.raises(SpecError) as info:
        Spec.from_dict(_place(path, body))
    assert [str(p) for p in info.value.problems] == [f"{_section_path(path)}.{key}: {message}"]


def test_an_unquoted_off_in_a_yaml_spec_is_refused_with_the_quote_to_add() -> None:
    text = ("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
            "destinations: [{cidr: 192.168.7.0/24}]\nmasquerade:\n  mode: off\n")
    with pytest.raises(SpecError, match=r"masquerade\.mode: .* got False \(YAML reads an "
                                        r"unquoted off as false: quote it, 'off'\)"):
        Spec.from_yaml(text)
    assert Spec.from_yaml(text.replace("mode: off", "mode: 'off'")).masquerade.mode == "off"


def test_field_checks_also_judge_specs_built_in_code() -> None:
    spec = Spec(destinations=[Destination("192.168.7.0/24"),
                              Destination("192.168.8.0/24", table=255, metric=-1)])
    assert [str(p) for p in validate(spec)] == [
        "destinations[1].table: table must be 1..4294967295 and not 255, got 255",
        "destinations[1].metric: metric must be 0..4294967295, got -1",
    ]


def test_every_problem_of_several_sections_comes_at_once() -> None:
    with pytest.raises(SpecError) as info:
        Spec.from_dict({"destinations": [{"cidr": "192.168.7.0/24", "table": 0}],
                        "agent": {"intervalSeconds": 0}, "connectivityTest": {"port": 1}})
    assert sorted(p.path for p in info.value.problems) == [
        "agent.intervalSeconds", "connectivityTest.target", "destinations[0].table"]


def test_validators_are_plain_reusable_values() -> None:
    assert int_in(1, 10)(10) is None
    assert int_in(1, 10)(11) == "must be 1..10, got 11"
    assert int_in(0)(-1) == "must be an integer >= 0, got -1"
    assert int_in(1, 9, name="x", excluding=(5,))(5) == "x must be 1..9 and not 5, got 5"
    assert one_of("a", "b")({}) == "expected one of a, b, got {}"
    assert one_of("a", message="no: {value}")("c") == "no: c"
    assert optional(integer())(None) is None
    assert integer()(1.0) == "expected an integer, got 1.0"
    assert matches("[a-z]+", "{value!r} bad")("A") == "'A' bad"


def test_every_problem_of_one_item_is_reported_at_once() -> None:
    with pytest.raises(SpecError) as caught:
        Spec.from_dict({"destinations": [{"cidr": "192.168.2.1/24", "metric": -1, "table": 0,
                                          "device": "eth0;x"}]})
    paths = sorted(p.path for p in caught.value.problems)
    assert paths == ["destinations[0].cidr", "destinations[0].device", "destinations[0].metric",
                     "destinations[0].table"]


@pytest.mark.parametrize("image", [
    "k" * 237,  # docker.io/library/ + 237: the 255 the kubelet allows
    "k3snet/" + "k" * 229,  # docker.io/ + 245
    "registry.example/" + "k" * 238,  # a registry of its own: not prefixed
    "localhost/" + "k" * 245,
    "a" * 63,  # one digit short of an image ID
    "busybox@sha256:" + "a" * 64,
])
def test_an_image_name_of_at_most_255_characters_as_the_kubelet_normalises_it_is_accepted(
        image: str) -> None:
    assert Spec.from_dict({"agent": {"image": image}}).agent.image == image
