"""Hostile text in every string field: refused at construction, or rendered into every
output language so that it reads back as the same value (issue 8, item 1).

Without root: each language is read back by a strict small reader
(``tests/render/readers.py``), nft JSON by the nftables backend's own rule parser
and iptables-restore input by the iptables backend's own table reader. The same
values go through the real tools (``nft``, ``iptables-restore``, ``ip``) in
``test_render_kernel.py``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from k3snet.backends.iptables.save import parse_save
from k3snet.backends.iptables.table import load_table
from k3snet.errors import ModelError, SpecError
from k3snet.model import (
    ForwardRule,
    MasqueradeRule,
    NetObject,
    Route,
    SnatRule,
    State,
    Sysctl,
    object_from_dict,
    parse_address,
    parse_network,
)
from k3snet.render.iptables.rules import HOOKS, TABLES
from k3snet.render.iptables.save import render_iptables_save
from k3snet.render.manifests import COREDNS_CUSTOM_NAME, dump_manifests, render_manifests
from k3snet.render.routes import (
    render_ifupdown,
    render_netplan,
    render_networkd,
    render_networkmanager,
)
from k3snet.render.sysctl import render_sysctl_d
from k3snet.spec.compiler import compile as compile_spec
from k3snet.spec.load import spec_from_document
from k3snet.testing import strategies
from tests.examples import examples
from tests.render.readers import (
    read_ifupdown,
    read_netplan,
    read_networkd,
    read_networkmanager,
    read_nft_json,
    read_server_block,
    read_sysctl_d,
)
from tests.safety.spec_fields import Target, hostile_document, targets

# One object of each model type, every optional string field set: the fields to
# attack are walked from their to_dict(), so a new string field is attacked too.
BASES: dict[str, NetObject] = {
    "route4": Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0", table=100),
    "route6": Route("fd01:2::/64", gateway="fe80::1", device="eth0", protocol="static"),
    "masquerade": MasqueradeRule("10.42.0.0/16", destination="192.168.0.0/16",
                                 exclude=["192.168.2.0/24"], out_interface="eth0"),
    "snat": SnatRule("fd42:42::/56", destination="fd01::/16", to_address="fd01:1::5",
                     out_interface="eth0", exclude=["fd01:2::/64"]),
    "forward": ForwardRule("10.42.0.0/16", "192.168.2.0/24", in_interface="cni0",
                           out_interface="eth0"),
    "sysctl": Sysctl("net.ipv4.conf.all.rp_filter", "2", previous="1"),
}


def _string_fields() -> list[tuple[str, str | tuple[str, int]]]:
    fields: list[tuple[str, str | tuple[str, int]]] = []
    for name, obj in BASES.items():
        for key, value in obj.to_dict().items():
            if key == "type" or isinstance(value, bool | int):
                continue
            fields.append((name, (key, 0) if isinstance(value, list) else key))
    return fields


STRING_FIELDS = _string_fields()


def test_every_string_field_of_every_model_type_is_attacked() -> None:
    """The walk finds the fields a reader would name (so it can fail when it finds none)."""
    walked = {(name, field if isinstance(field, str) else field[0])
              for name, field in STRING_FIELDS}
    assert {("route4", "gateway"), ("route4", "device"), ("route4", "scope"),
            ("route4", "protocol"), ("snat", "to_address"), ("snat", "exclude"),
            ("forward", "in_interface"), ("sysctl", "value"), ("sysctl", "previous"),
            ("masquerade", "out_interface")} <= walked


def reads_back(obj: NetObject) -> None:
    """``obj`` rendered into each of its languages reads back as ``obj``."""
    state = State(owned=[obj])
    if isinstance(obj, Route) and obj.device is None:
        # Route files tie routes to interfaces: a route without one is refused, named.
        with pytest.raises(ModelError, match="no device"):
            render_ifupdown(state)
    elif isinstance(obj, Route):
        assert read_ifupdown(render_ifupdown(state)) == [obj]
        if obj.family == 4 and obj.gateway is None and obj.scope == "universe":
            # netplan refuses it ("global unicast route must include both a 'to' and
            # 'via' IP"), and scope link is another route.
            with pytest.raises(ModelError, match="without gateway of scope global"):
                render_netplan(state)
        else:
            assert read_netplan(render_netplan(state), protocol=obj.protocol) == [obj]
        assert read_networkd(render_networkd(state)) == [obj]
        assert read_networkmanager(render_networkmanager(state)) == [obj]
    elif isinstance(obj, Sysctl):
        back = read_sysctl_d(render_sysctl_d(state))
        assert back == [obj]
        assert back[0].previous == obj.previous
    else:
        assert set(read_nft_json(obj)) == {obj}
        family = obj.family
        assert family is not None  # a NAT or forward rule's: 4 or 6
        # The file inserts the jump (-I); once loaded, iptables-save lists it as -A.
        text = re.sub(r"^-I (\S+) 1 ", r"-A \1 ", render_iptables_save(state, family),
                      flags=re.MULTILINE)
        dump = parse_save(text)
        found = set()
        for table in TABLES:
            loaded = load_table(family, HOOKS[table], dump.get(table))
            assert not loaded.findings, loaded.findings
            found |= set(loaded.owned.values())
        assert found == {obj}


def _with(name: str, field: str | tuple[str, int], value: Any) -> dict[str, Any]:
    data = BASES[name].to_dict()
    if isinstance(field, tuple):
        key, index = field
        data[key] = [*data[key]]
        data[key][index] = value
    else:
        data[field] = value
    return data


@settings(max_examples=examples(400))
@given(st.sampled_from(STRING_FIELDS), strategies.hostile_text())
def test_hostile_text_in_a_model_field_is_refused_or_reads_back(
        field: tuple[str, str | tuple[str, int]], value: str) -> None:
    name, where = field
    try:
        obj = object_from_dict(_with(name, where, value))
    except ModelError:
        return
    reads_back(obj)


@pytest.mark.parametrize(("name", "field", "value"), [
    ("snat", "to_address", "fe80::1%eth0"),          # nft and iptables refuse a zone there
    ("route6", "gateway", "fe80::1%eth1"),           # the zone names another interface
    ("sysctl", "value", "1\x00"),
    ("sysctl", "value", "1\x1b[2J"),
    ("sysctl", "previous", "\u202e1"),
    ("forward", "out_interface", 'eth0"; flush ruleset; #'),
    ("route4", "device", "eth0\n    up reboot"),
    ("route4", "scope", "link\n[Route]"),
    ("route6", "scope", "global\n[Route]"),          # was dropped unchecked for IPv6
])
def test_what_the_fuzz_found_is_refused(name: str, field: str, value: str) -> None:
    with pytest.raises(ModelError):
        object_from_dict(_with(name, field, value))


def test_a_zone_on_a_route_gateway_becomes_its_device() -> None:
    route = Route("fd01:2::/64", gateway="fe80::1%eth0")
    assert route == Route("fd01:2::/64", gateway="fe80::1", device="eth0")
    assert isinstance(route.gateway, ipaddress.IPv6Address)
    assert route.gateway.scope_id is None
    reads_back(route)


_ADDRESS_TEXT = re.compile(r"[0-9a-f.:/]+(%[A-Za-z0-9_.@+-]{1,15})?")


@settings(max_examples=examples(250))
@given(st.one_of(strategies.hostile_text(), strategies.addresses().map(str),
                 strategies.networks().map(str), strategies.addresses(6).map(
                     lambda a: f"fe80::{int(a) & 0xffff:x}%eth0")))
def test_cidr_and_address_text_is_refused_or_prints_as_address_characters_only(
        text: str) -> None:
    for parse in (parse_address, parse_network):
        try:
            value = parse(text)
        except ModelError:
            continue
        assert _ADDRESS_TEXT.fullmatch(str(value)), str(value)
        assert parse(str(value)) == value


def _interfaces() -> st.SearchStrategy[list[str]]:
    return st.lists(strategies.interface_names(), min_size=1, max_size=3, unique=True)


@settings(max_examples=examples(100))
@given(_interfaces().flatmap(lambda devices: st.one_of(
    # Tables netplan takes (a signed number): the largest, which routes() draws by
    # default, it refuses on purpose (tests/render/test_netplan_placement.py).
    strategies.routes(devices=devices, scopes=(None, "link", "host", "universe"),
                      tables=(254, 100)),
    strategies.nat_rules(devices=(None, *devices)),
    strategies.forward_rules(devices=(None, *devices)),
    strategies.sysctls(names=("net.ipv4.ip_forward", f"net/ipv4/conf/{devices[0]}/rp_filter"),
                       values=("0", "1", "4096 87380 6291456", "bbr"),
                       previous=(None, "0", "2")),
)))
def test_valid_values_with_every_interface_name_character_read_back(obj: NetObject) -> None:
    reads_back(obj)


# ------------------------------------------------------------------ the spec's fields

TARGETS = targets()


def test_the_spec_walk_covers_the_string_fields_of_the_report() -> None:
    shown = {str(t) for t in TARGETS}
    assert {"masquerade.snatAddresses[0]", "dns.zones[0].zone", "dns.zones[0].resolvers[0]",
            "destinations[0].gateway", "destinations[0].device", "forward.inInterface",
            "agent.image", "cni.calico.nodeSelector", "egressPolicy.podSelector{key}",
            "sysctls{key}"} <= shown


def _configmap_specs(objs: list[dict[str, Any]]) -> list[Any]:
    texts = [text for obj in objs if obj["kind"] == "ConfigMap"
             and obj["metadata"]["name"] != COREDNS_CUSTOM_NAME
             for text in obj.get("data", {}).values()]
    return [spec_from_document(yaml.safe_load(text)) for text in texts]


@settings(max_examples=examples(166))
@given(st.sampled_from(TARGETS), strategies.hostile_values())
def test_hostile_values_in_spec_fields_are_refused_or_every_output_reads_back(
        target: Target, value: Any) -> None:
    try:
        spec = spec_from_document(hostile_document(target, value))
        state = compile_spec(spec)
        objs = render_manifests(spec)
    except SpecError:
        return
    for obj in state.owned:
        if isinstance(obj, Route | Sysctl | MasqueradeRule | SnatRule | ForwardRule):
            reads_back(obj)
    assert list(yaml.safe_load_all(dump_manifests(objs))) == objs
    assert _configmap_specs(objs) == [spec]
    coredns = [o for o in objs if o["metadata"]["name"] == COREDNS_CUSTOM_NAME]
    zones = {zone.zone.rstrip(".").lower(): [(str(r), zone.port or 53) for r in zone.resolvers]
             for zone in spec.dns}
    read = dict(read_server_block(text) for o in coredns for text in o["data"].values())
    assert read == zones


def test_an_interface_name_starting_with_at_is_refused() -> None:
    """libnftables JSON reads ``"@x"`` as a set reference (it cannot even reload its own
    listing of ``oifname "@x"``): found by test_render_kernel.py."""
    with pytest.raises(ModelError, match="must not start with '@'"):
        MasqueradeRule("10.0.0.0/8", out_interface="@x")
    assert MasqueradeRule("10.0.0.0/8", out_interface="a@x").out_interface == "a@x"


def test_an_interface_name_that_is_only_a_plus_is_refused() -> None:
    """iptables reads ``-o +`` as every interface and iptables-save leaves it out, so
    the rule never read back as written (drift on every pass): found by
    test_render_kernel.py. A trailing ``+`` after a prefix stays a prefix match."""
    with pytest.raises(ModelError, match="leave the interface out"):
        MasqueradeRule("10.0.0.0/8", out_interface="+")
    assert MasqueradeRule("10.0.0.0/8", out_interface="eth+").out_interface == "eth+"


@given(strategies.hostile_text())
def test_hostile_text_as_an_ifupdown_address_is_refused_or_written_as_one_address_line(
        value: str) -> None:
    # render_ifupdown's addresses= is text a library caller passes through: an IPv6 zone
    # holding a line break wrote an ifupdown line of its own (a pre-up command).
    routes = [BASES["route4"], BASES["route6"]]
    try:
        text = render_ifupdown(State(owned=routes), addresses={"eth0": [value]})
    except ModelError:
        return
    assert sorted(read_ifupdown(text)) == sorted(routes)  # no line but the known shapes
    (line,) = [line.split() for line in text.splitlines() if "address" in line.split()[:1]]
    assert line[1] == ipaddress.ip_interface(line[1]).with_prefixlen
