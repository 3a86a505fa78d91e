"""Every problem a spec can have, word for word, with its path: a catalogue of bad specs.

Each case is one small document (or a spec built in code) with the problems k3snet
reports for it, read from ``tests/data/spec/problems.txt``. The messages are what an
operator reads when an apply is refused, so a change of wording or path is a change
of behaviour: regenerate with ``K3SNET_REGENERATE=1`` and review the diff.
"""

from __future__ import annotations

import datetime
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k3snet import NodeFacts, Spec, SpecError, Sysctl
from k3snet.errors import ModelError
from k3snet.spec import Destination, DnsZone, EgressPolicy, MasqueradePolicy, validate
from k3snet.spec import compile as compile_spec
from k3snet.spec.load import spec_from_document
from k3snet.spec.source import load_mapping

DATA = Path(__file__).resolve().parents[1] / "data" / "spec"

D = "192.168.7.0/24"  # a destination the other keys of a case hang from

# name -> the document Spec.from_dict reads (every key that is not the case's is valid).
DOCUMENTS: dict[str, Any] = {
    # ---- the shape of mappings and lists (fields.Reader)
    "top level not a mapping": ["cluster"],
    "section not a mapping": {"cluster": "10.42.0.0/16", "masquerade": 3},
    "nested mapping not a mapping": {"cni": {"flannel": {"backend": "vxlan"}}},
    "unknown keys everywhere": {"colour": 1, "destinations": [{"cidr": D, "via": "x"}],
                                "cni": {"calico": {"ipip": 1}}, "dns": {"zone": []}},
    "list given a string": {"destinations": D, "cluster": {"podCIDRs": "10.42.0.0/16"}},
    "list given a mapping": {"cluster": {"serviceCIDRs": {"a": 1}}},
    # What YAML read where a list or a mapping belongs, in YAML's words (Python's were
    # "got str", "got dict", "got datetime", "got bytes").
    "YAML's other values where a list or mapping belongs": {
        "destinations": datetime.date(2001, 12, 14), "cluster": b"x",
        "masquerade": 1.5, "dns": True, "agent": {1, 2},
        "cni": datetime.datetime(2001, 12, 14, 10, 0)},
    # The kernel takes a route to each (127.0.0.0/8 via a gateway, ff00::/8 ...): the apply
    # succeeded, with nothing a pod's packet could use.
    "destinations no host is reached at": {
        "cluster": {"podCIDRs": ["10.42.0.0/16", "fd42::/56"],
                    "serviceCIDRs": ["10.43.0.0/16", "fd43::/112"]},
        "destinations": [{"cidr": c} for c in (
            "127.0.0.0/8", "224.0.0.0/4", "239.1.0.0/16", "255.255.255.255/32", "0.0.0.0/32",
            "::1/128", "ff02::/16", "::/128", "::ffff:192.168.2.0/120",
            # not refused: link-local (a cloud's metadata address) and ranges holding
            # unicast networks too
            "169.254.169.254/32", "fe80::/64", "128.0.0.0/1", "::/3")]},
    # state_dir with a NUL failed as an internal error ("embedded null byte") at plan.
    "backend options holding a NUL": {
        "backends": {"netlink": {"state_dir": "/run/k3s\x00net", "protocol": 200},
                     "nftables": {"table": "k3snet", "x": ["a", {"b": "c\x00"}]}}},
    "bad CIDR entries": {"cluster": {"podCIDRs": ["10.42.0.0/16", "nope", 7, None],
                                     "serviceCIDRs": ["10.43.0.1/16"]}},
    "bad scalars": {"destinations": [{"cidr": D, "masquerade": "yes", "forward": 1}],
                    "manageForwarding": "no", "forward": {"accept": None, "inInterface": 5},
                    "egressPolicy": {"namespace": 5, "podSelector": ["a"]}},
    "bad addresses": {"destinations": [{"cidr": D, "gateway": "192.168.7.0/24"}],
                      "masquerade": {"snatAddresses": ["x", "192.168.1.5"]},
                      "connectivityTest": {"target": "nope"}},
    "required keys": {"destinations": [{"gateway": "192.168.1.1"}, {}],
                      "dns": {"zones": [{"resolvers": ["192.168.1.53"]}, {"zone": 5}]},
                      "connectivityTest": {"port": 80}},
    "an incomplete item still has its values checked": {
        "destinations": [{"cidr": "nope", "table": 0, "metric": -1, "masquerade": "x"}]},
    "a required key with a bad value": {"connectivityTest": {"target": 5, "port": 0}},
    "header": {"apiVersion": "v1", "kind": "Pod"},
    "sysctls": {"sysctls": {"net.ipv4.ip_forward": 1, "bad name": 1, "net.x": [1]}},
    "sysctls not a mapping": {"sysctls": ["net.ipv4.ip_forward"]},
    # The kernel stores any integer in these (rp_filter 3 acts as loose, -1 as the
    # interface's value) and reads 01 back as 1.
    "sysctl values out of their documented range": {"sysctls": {
        "net.ipv4.conf.all.rp_filter": 3, "net.ipv4.conf.eth0.rp_filter": -1,
        "net.ipv6.conf.all.accept_ra": "01", "net.ipv4.ip_forward": "yes",
        "net.ipv6.conf.all.forwarding": 2, "net.ipv4.conf.default.arp_announce": 2,
        "net.ipv4.tcp_keepalive_time": 7200}},
    # One kernel value under two names: every apply wrote the other one again.
    "one kernel value given two values": {"sysctls": {
        "net.ipv4.ip_forward": 1, "net.ipv4.conf.all.forwarding": 0}},
    "label mappings": {"egressPolicy": {"podSelector": "app=web"},
                       "cni": {"flannel": {"backend": {"type": "vxlan", "options": [1]}}}},
    "backends list": {"backends": ["netlink", "bad name", 3, "x" * 65, "-", "__", "a-_b"]},
    "backends mapping": {"backends": {"nftables": {"family": "split", "1x": 1, 2: 3},
                                      "bad name": {}, "netlink": 3, "iptables": None}},
    "interfaces": {"destinations": [{"cidr": D, "device": "a" * 16}],
                   "masquerade": {"outInterface": "eth/0"}, "forward": {"inInterface": "a b"}},
    "ranges": {"destinations": [{"cidr": D, "table": 4294967295, "metric": 4294967296}],
               "agent": {"intervalSeconds": 86401},
               "connectivityTest": {"target": "192.168.7.1", "port": 65535}},
    "agent": {"agent": {"image": "", "namespace": "a" * 64, "intervalSeconds": "30"}},
    "cilium": {"cni": {"cilium": {
        "routingMode": "direct", "tunnelProtocol": "gre",
        "ipv4NativeRoutingCIDR": "fd42::/48", "ipv6NativeRoutingCIDR": "10.42.0.0/16",
        "egressMasqueradeInterfaces": "eth0,,eth1", "nonMasqueradeCIDRs": ["x"]}}},
    "calico": {"cni": {"calico": {"blockSize": 33, "ipipMode": None, "vxlanMode": "never",
                                  "nodeSelector": 1, "allowDisruptive": "y"}}},
    "calico block sizes": {"cni": {"calico": {"blockSize": 115}}},
    "calico block size per family": {"cni": {"calico": {"blockSize": {
        "ipv4": 33, "ipv6": "122", "ipv5": 1, 4: 26}}}},
    "calico block size per family, empty": {"cni": {"calico": {"blockSize": {}}}},
    "calico block size per family, unknown keys only": {"cni": {"calico": {"blockSize": {
        "v4": 26}}}},
    # ---- calico's blockSize against the cluster's families (validate)
    "calico block size on a dual-stack cluster": {
        "cluster": {"podCIDRs": ["10.42.0.0/16", "fd42::/56"]},
        "cni": {"calico": {"blockSize": 26}}},
    "calico block size of the other family": {
        "cluster": {"podCIDRs": ["fd42::/56"], "serviceCIDRs": []},
        "cni": {"calico": {"blockSize": 24}}},
    "calico block size per family without its pods": {
        "cni": {"calico": {"blockSize": {"ipv4": 24, "ipv6": 120}}}},
    "calico block size with the other problems of the spec": {
        "cluster": {"podCIDRs": ["10.42.0.0/16", "fd42::/56"]},
        "destinations": [{"cidr": "nope"}], "agent": {"intervalSeconds": 0},
        "cni": {"calico": {"blockSize": {"ipv4": 19, "ipv6": 129}, "ipipMode": "x"}}},
    "flannel": {"cni": {"flannel": {"backend": {"type": 1}, "enableNFTables": 0,
                                    "setNetworks": "true"}, "allowDisruptive": 1}},
    "ip-masq-agent config with problems": {"masquerade": {"ipMasqAgentConfig": {
        "nonMasqueradeCIDRs": ["x"], "masqLinkLocal": "no", "other": 1}}},
    "ip-masq-agent config text": {"masquerade": {
        "ipMasqAgentConfig": "nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqLinkLocal: true\n",
        "nonMasqueradeCIDRs": ["10.0.0.0/8", "10.0.0.0/8"]}},
    # ---- the checks across fields (validate)
    "no pod CIDR": {"cluster": {"podCIDRs": []}},
    "duplicate cluster CIDRs": {"cluster": {
        "podCIDRs": ["10.42.0.0/16", "fd42::/56", "10.42.0.0/16"],
        "serviceCIDRs": ["10.43.0.0/16", "10.43.0.0/16", "10.43.0.0/16"]}},
    "pods overlap services": {"cluster": {"podCIDRs": ["10.42.0.0/16", "10.0.0.0/8"],
                                          "serviceCIDRs": ["10.42.128.0/17", "10.43.0.0/16"]}},
    "destinations overlap the cluster": {"destinations": [
        {"cidr": "10.0.0.0/8"}, {"cidr": "10.43.1.0/24"}, {"cidr": "10.42.0.0/16"}]},
    "duplicate destinations": {"destinations": [{"cidr": D}, {"cidr": "192.168.8.0/24"},
                                                {"cidr": D}, {"cidr": D}]},
    "gateway of the other family": {"destinations": [
        {"cidr": D, "gateway": "fd00::1"},
        {"cidr": "fd01::/64", "gateway": "192.168.1.1"}]},
    "destination of a family without pods": {
        "cluster": {"podCIDRs": ["fd42::/56"], "serviceCIDRs": []},
        "destinations": [{"cidr": D}, {"cidr": "fd01::/64"}]},
    "exclusions": {"destinations": [{"cidr": D, "exclude": [
        "fd00::/64", "192.168.8.0/24", D, "192.168.7.0/25", "192.168.7.0/25",
        "192.168.6.0/23"]}]},
    "exclusions covering the destination": {"destinations": [
        {"cidr": D, "exclude": ["192.168.7.0/25", "192.168.7.128/25"]},
        {"cidr": "192.168.8.0/24", "exclude": ["192.168.8.0/25", "192.168.8.128/26"]}]},
    "non-masquerade CIDRs outside mode all": {"masquerade": {
        "mode": "destinations", "nonMasqueradeCIDRs": ["10.0.0.0/8", "10.0.0.0/8"]}},
    "non-masquerade CIDRs in mode off": {"masquerade": {
        "mode": "off", "nonMasqueradeCIDRs": ["10.0.0.0/8"]}},
    "duplicate non-masquerade CIDRs in mode all": {"masquerade": {
        "mode": "all", "nonMasqueradeCIDRs": ["10.0.0.0/8", "192.168.0.0/16", "10.0.0.0/8"]}},
    "SNAT addresses": {"cluster": {"podCIDRs": ["10.42.0.0/16", "fd42::/56"]},
                       "masquerade": {"snatAddresses": [
                           "192.168.1.5", "fd00::5", "192.168.1.6", "10.42.0.9", "fd42::9",
                           "fd00::6"]}},
    "DNS zones": {"dns": {"zones": [
        {"zone": "corp.example", "resolvers": ["192.168.1.53"]},
        {"zone": "Corp.Example.", "resolvers": ["192.168.1.53"]},
        {"zone": ".", "resolvers": ["192.168.1.53"]},
        {"zone": "a..b", "resolvers": ["192.168.1.53"]},
        {"zone": "-bad.example", "resolvers": ["192.168.1.53"]},
        {"zone": "x" * 64 + ".example", "resolvers": ["192.168.1.53"]},
        {"zone": ("d" * 62 + ".") * 3 + "d" * 57, "resolvers": ["192.168.1.53"]},
        {"zone": ("e" * 62 + ".") * 3 + "e" * 58, "resolvers": ["192.168.1.53"]},
        {"zone": "cluster.local", "resolvers": ["192.168.1.53"]},
        {"zone": "svc.Cluster.Local.", "resolvers": ["192.168.1.53"]},
        {"zone": "local", "resolvers": ["192.168.1.53"]},
        {"zone": "in-addr.arpa", "resolvers": ["192.168.1.53"]},
        {"zone": "ip6.arpa", "resolvers": ["192.168.1.53"]},
        {"zone": "arpa", "resolvers": ["192.168.1.53"]},
        {"zone": "corp.local", "resolvers": ["192.168.1.53"]},
        {"zone": "2.168.192.in-addr.arpa", "resolvers": ["192.168.1.53"]},
        {"zone": "lab.example"},
        {"zone": "ok.example", "resolvers": []}]}},
    "DNS resolvers CoreDNS cannot forward to": {"dns": {"zones": [
        {"zone": "corp.example", "resolvers": [
            "fe80::1%eth0", "127.0.0.53", "::1", "::ffff:127.0.0.1",
            "0.0.0.0", "::",  # noqa: S104 (resolvers under test, not a bind)
            "224.0.0.251", "ff02::fb", "255.255.255.255", "192.168.1.53", "fd00::53",
            "169.254.20.10"]}]}},
    # fe80::1: the kernel refuses to send to it without a zone id (EINVAL); ::127.0.0.1 is
    # sent over IPv6 to ::7f00:1. 240.0.0.1 (Linux routes 240/4 as unicast), the IPv4
    # link-local 169.254.169.254 (a cloud's metadata resolver) and a mapped address pass.
    "DNS resolvers a pod cannot reach": {"dns": {"zones": [
        {"zone": "corp.example", "resolvers": [
            "fe80::1", "fe80::53", "::127.0.0.1", "::192.168.1.53", "::ffff:0.0.0.0",
            "240.0.0.1", "169.254.169.254", "::ffff:192.168.1.53", "fd00::53%eth0"]}]}},
    "DNS resolvers in CoreDNS's other forms and ports": {"dns": {"zones": [
        {"zone": "corp.example", "resolvers": [
            "192.168.1.53:5353", "[fd00::53]:5353", "dns://192.168.1.53", "tls://1.1.1.1",
            "192.168.1.53:"]},
        {"zone": "a.example", "resolvers": ["192.168.1.53"], "port": 0},
        {"zone": "b.example", "resolvers": ["192.168.1.53"], "port": 65536},
        {"zone": "c.example", "resolvers": ["192.168.1.53"], "port": "5353"},
        {"zone": "d.example", "resolvers": ["192.168.1.53"], "port": 65535}]}},
    "egress exceptions": {
        "destinations": [{"cidr": D}, {"cidr": "192.168.8.0/24"}],
        "egressPolicy": {"except": ["192.168.7.8/29", "192.168.9.0/29", "192.168.8.0/24",
                                    "192.168.7.8/29", "192.168.0.0/16"]}},
    "pod selector labels": {"egressPolicy": {"podSelector": {
        "app": "web", "Bad Key": "x", "-lead": "x", "a/b": "x", "k8s.io/app": "ok",
        "UP.example/x": "y", "name": "a b", "empty": "", "long": "v" * 64, "num": 5,
        "edge": "-x", "trail": "x-", "dots": "a.b_c-d", "x" * 64: "1", "y" * 63: "2",
        ("d" * 60 + ".") * 4 + "ex/n": "3", ("d" * 62 + ".") * 4 + "e/n": "4",
        ("d" * 62 + ".") * 4 + "d" * 62 + "/nn": "v317",
        ("d" * 62 + ".") * 4 + "d" * 62 + "/nnn": "v318", "max": "v" * 63,
        "no/": "5", "/x": "6", "a.-b/c": "7", "a_b/c": "8"}}},
}

# name -> a spec built in code (only the checks across fields see these).
BUILT: dict[str, Callable[[], Spec]] = {
    "sysctls named twice": lambda: Spec(sysctls=[
        Sysctl("net.ipv4.ip_forward", 1), Sysctl("net.ipv4.conf.all.rp_filter", 2),
        Sysctl("net.ipv4.ip_forward", 0)]),
    "field checks of a spec built in code": lambda: Spec(
        destinations=[Destination(D, table=0, metric=None)],
        masquerade=MasqueradePolicy("most"),  # type: ignore[arg-type]
        egress_policy=EgressPolicy(namespace="Apps", pod_selector={"app": 5}),  # type: ignore[arg-type]
        dns=[DnsZone("", resolvers=[])]),
}

# name -> (document, facts) compiled with the facts of a node.
FACTS: dict[str, tuple[Any, NodeFacts]] = {
    "facts: devices and gateways": ({
        "destinations": [
            {"cidr": D, "device": "eth9"},
            {"cidr": "192.168.8.0/24", "gateway": "10.9.0.1"},
            {"cidr": "192.168.9.0/24", "gateway": "192.168.2.1", "device": "eth0"},
            {"cidr": "192.168.10.0/24", "gateway": "192.168.1.1", "device": "eth1"},
            {"cidr": "192.168.11.0/24", "gateway": "172.16.1.1", "device": "eth0"},
            {"cidr": "192.168.12.0/24", "gateway": "192.168.1.1", "device": "eth0"},
            {"cidr": "192.168.13.0/24", "gateway": "192.168.2.1"}],
        "masquerade": {"outInterface": "eth7"}},
        NodeFacts(interfaces={"eth0": ["192.168.1.5/24"], "eth1": ["192.168.2.5/24"]},
                  routes=["172.16.0.0/12"], hostname="node-1")),
    "facts: no hostname, no routes": ({
        "destinations": [{"cidr": D, "gateway": "10.9.0.1", "device": "lo"},
                         {"cidr": "192.168.8.0/24", "device": "eth9"}]},
        NodeFacts(interfaces={"eth0": ["192.168.1.5/24", "fd00::5/64"], "lo": []})),
    "facts: routes only": ({
        "destinations": [{"cidr": D, "gateway": "10.9.0.1", "device": "eth3"},
                         {"cidr": "192.168.8.0/24", "gateway": "172.16.0.1"}],
        "masquerade": {"outInterface": "eth3"}},
        NodeFacts(routes=["172.16.0.0/12"])),
}


def _problems(call: Callable[[], object]) -> str:
    try:
        call()
    except SpecError as exc:
        return "\n".join(map(str, exc.problems))
    return "(no problem)"


def _validated(build: Callable[[], Spec]) -> str:
    return "\n".join(map(str, validate(build()))) or "(no problem)"


def _compiled(document: Any, facts: NodeFacts) -> object:
    return compile_spec(Spec.from_dict(document), facts)


def _cases() -> dict[str, Callable[[], str]]:
    cases: dict[str, Callable[[], str]] = {}
    for name, document in DOCUMENTS.items():
        cases[name] = functools.partial(_problems, functools.partial(Spec.from_dict, document))
    for name, build in BUILT.items():
        cases[name] = functools.partial(_validated, build)
    for name, (document, facts) in FACTS.items():
        cases[name] = functools.partial(_problems, functools.partial(_compiled, document, facts))
    return cases


CASES = _cases()


def _recorded() -> dict[str, str]:
    text = (DATA / "problems.txt").read_text()
    out = {}
    for block in text.split("### ")[1:]:
        name, _, body = block.partition("\n")
        out[name] = body.rstrip("\n")
    return out


def test_the_catalogue_is_recorded() -> None:
    if os.environ.get("K3SNET_REGENERATE") == "1":
        DATA.mkdir(parents=True, exist_ok=True)
        (DATA / "problems.txt").write_text(
            "".join(f"### {name}\n{case()}\n\n" for name, case in CASES.items()))
    assert list(_recorded()) == list(CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_the_problems_are_the_recorded_ones(name: str) -> None:
    assert CASES[name]() == _recorded()[name]


def test_a_spec_document_needs_its_header() -> None:
    for empty in (None, dict[str, Any]()):
        with pytest.raises(SpecError) as info:
            spec_from_document(empty, source="spec.yaml")
        assert [str(p) for p in info.value.problems] == [
            "the spec is empty: it needs at least apiVersion: k3snet.io/v1alpha1 and kind: "
            "EgressSpec"]
        assert info.value.source == "spec.yaml"
    with pytest.raises(SpecError) as info:
        spec_from_document({"kind": "EgressSpec", "destinations": [{"cidr": "10.0.0.1/8"}]},
                           source="s")
    assert [str(p) for p in info.value.problems] == [
        "apiVersion: required: apiVersion: k3snet.io/v1alpha1",
        "destinations[0].cidr: '10.0.0.1/8' has host bits set (did you mean 10.0.0.0/8?)"]
    assert info.value.source == "s"
    with pytest.raises(SpecError) as info:
        spec_from_document({"apiVersion": "k3snet.io/v1alpha1", "cluster": {}})
    assert [str(p) for p in info.value.problems] == ["kind: required: kind: EgressSpec"]
    header = {"apiVersion": "k3snet.io/v1alpha1", "kind": "EgressSpec"}
    assert spec_from_document(header) == Spec()
    with pytest.raises(SpecError) as info:
        spec_from_document({**header, "destinations": [{"cidr": "x"}]}, source="f")
    assert info.value.source == "f"


_NO_API = "apiVersion: required: apiVersion: k3snet.io/v1alpha1"
_NO_KIND = "kind: required: kind: EgressSpec"


@pytest.mark.parametrize(("text", "problems"), [
    ("apiVersion:\nkind:\n", [_NO_API, _NO_KIND]),
    ("apiVersion: k3snet.io/v1alpha1\nkind:\n", [_NO_KIND]),
    ("apiVersion: ~\nkind: EgressSpec\n", [_NO_API]),
    ('{"apiVersion": null, "kind": null}', [_NO_API, _NO_KIND]),
])
def test_a_spec_document_whose_header_is_null_is_refused_as_one_without_it(
        text: str, problems: list[str]) -> None:
    # A template that rendered nothing (`kind: ${KIND}`) must not make "a spec that wants
    # nothing", whose apply removes everything k3snet owns: null was taken as missing only
    # by the field table, which then used the default and accepted the document.
    with pytest.raises(SpecError) as info:
        spec_from_document(load_mapping(text, "spec.yaml"), source="spec.yaml")
    assert [str(p) for p in info.value.problems] == problems


def test_a_problem_found_while_reading_is_not_reported_again() -> None:
    # The bad pod CIDR is left out when read, so the cluster has no pod CIDR left: that
    # is the same problem, reported once (at the path of the reading).
    with pytest.raises(SpecError) as info:
        Spec.from_dict({"cluster": {"podCIDRs": ["nope"]}}, source="x.yaml")
    assert [str(p) for p in info.value.problems] == [
        "cluster.podCIDRs[0]: 'nope' is not a valid CIDR"]
    assert info.value.source == "x.yaml"


def test_the_checks_after_a_list_item_left_out_name_the_document_s_items() -> None:
    # Bad items are left out when read: the checks across fields ran on the list without
    # them and named its indices, so destinations[1]'s IPv4 gateway was reported as
    # destinations[0]'s, then dropped as already reported there (where [0] had its own).
    document = {
        "destinations": [{"cidr": "nope", "gateway": "x"},
                         {"cidr": "2001:db8::/48", "gateway": "192.168.1.1"},
                         {"cidr": D}, {"cidr": D, "exclude": ["x", D]}],
        "cluster": {"podCIDRs": ["bad", "10.42.0.0/16", "fd42::/56"]},
        "masquerade": {"snatAddresses": ["x", "10.42.0.5"]},
    }
    assert _problems(lambda: Spec.from_dict(document)).splitlines() == [
        "cluster.podCIDRs[0]: 'bad' is not a valid CIDR",
        "destinations[0].cidr: 'nope' is not a valid CIDR",
        "destinations[0].gateway: 'x' is not a valid IP address",
        "destinations[3].exclude[0]: 'x' is not a valid CIDR",
        "masquerade.snatAddresses[0]: 'x' is not a valid IP address",
        "destinations[1].gateway: gateway 192.168.1.1 is IPv4 but destination 2001:db8::/48 "
        "is IPv6",
        f"destinations[3].cidr: duplicate destination {D} (also destinations[2])",
        "destinations[3].exclude[1]: excludes the whole destination; set masquerade: false "
        "instead",
        "masquerade.snatAddresses[1]: 10.42.0.5 is a pod address; SNAT needs a node address",
    ]



def test_a_link_local_snat_address_is_a_problem_at_its_path() -> None:
    # Every destination's egress would leave with it as source, and no router forwards
    # a packet from a link-local address: egress beyond the link silently lost.
    document = {"cluster": {"podCIDRs": ["10.42.0.0/16", "fd42::/56"]},
                "masquerade": {"snatAddresses": ["169.254.1.5", "fe80::5"]}}
    problems = _problems(lambda: Spec.from_dict(document)).splitlines()
    assert [p.split(":")[0] for p in problems] == ["masquerade.snatAddresses[0]",
                                                   "masquerade.snatAddresses[1]"]
    assert all("is a link-local address: routers do not forward" in p for p in problems)


def test_an_unspecified_gateway_is_a_problem_at_its_path() -> None:
    document = {"cluster": {"podCIDRs": ["10.42.0.0/16", "fd42::/56"]},
                "destinations": [
                    {"cidr": "192.168.2.0/24", "device": "eth0",
                     "gateway": "0.0.0.0"},  # noqa: S104 (a gateway under test, not a bind)
                    {"cidr": "fd02::/64", "gateway": "::"}]}
    lines = _problems(lambda: Spec.from_dict(document)).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "destinations[0].gateway", "destinations[1].gateway"]
    assert all("the kernel reads as no gateway" in line for line in lines)


def test_an_snat_address_no_reply_comes_back_to_is_a_problem_at_its_path() -> None:
    document = {"cluster": {"podCIDRs": ["10.42.0.0/16", "fd42::/56"]},
                "masquerade": {"snatAddresses": ["0.0.0.0", "ff02::1"]}}  # noqa: S104
    assert _problems(lambda: Spec.from_dict(document)).splitlines() == [
        "masquerade.snatAddresses[0]: 0.0.0.0 is the unspecified address; SNAT needs a "
        "unicast address of the node (replies come back to it)",
        "masquerade.snatAddresses[1]: ff02::1 is a multicast address; SNAT needs a "
        "unicast address of the node (replies come back to it)",
    ]


def test_a_link_local_gateway_without_device_is_a_problem_at_its_path() -> None:
    document = {"cluster": {"podCIDRs": ["fd42::/56"]},
                "destinations": [{"cidr": "fd09::/64", "gateway": "fe80::1"},
                                 {"cidr": "fd0a::/64", "gateway": "fe80::1%eth0"},
                                 {"cidr": "fd0b::/64", "gateway": "fe80::1", "device": "eth0"}]}
    assert _problems(lambda: Spec.from_dict(document)).splitlines() == [
        "destinations[0].gateway: link-local gateway fe80::1 needs a device (the kernel "
        "cannot tell which link it is on); give the device, or the gateway as fe80::1%DEVICE",
    ]


def test_an_unquoted_ipv6_address_read_as_a_mapping_is_told_to_be_quoted() -> None:
    # "- fd00::" in a block list is {"fd00:": None} to YAML.
    document = {"masquerade": {"snatAddresses": [{"fd00:": None}]},
                "destinations": [{"cidr": D, "gateway": {"2001:db8:1:": None}}],
                "dns": {"zones": [{"zone": "a.example", "resolvers": [{"a": None}]}]}}
    assert _problems(lambda: Spec.from_dict(document)).splitlines() == [
        "destinations[0].gateway: expected an address string, got dict {'2001:db8:1:': None} "
        "(YAML reads an unquoted 2001:db8:1:: as a mapping: quote it, '2001:db8:1::')",
        "masquerade.snatAddresses[0]: expected an address string, got dict {'fd00:': None} "
        "(YAML reads an unquoted fd00:: as a mapping: quote it, 'fd00::')",
        "dns.zones[0].resolvers[0]: expected an address string, got dict {'a': None}",
    ]


@pytest.mark.parametrize(("text", "path"), [
    ("egressPolicy:\n  podSelector:\n    on: web\n", "egressPolicy.podSelector"),
    ("egressPolicy:\n  podSelector:\n    1: web\n", "egressPolicy.podSelector"),
    ("cni:\n  flannel:\n    backend:\n      type: vxlan\n      options:\n        yes: 1\n",
     "cni.flannel.backend.options"),
])
def test_a_label_or_option_key_yaml_reads_as_no_text_is_refused(text: str, path: str) -> None:
    # `on: web` selected pods labelled "True" (str() of the boolean YAML 1.1 reads).
    with pytest.raises(SpecError) as info:
        Spec.from_yaml("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n" + text)
    (problem,) = info.value.problems
    assert problem.path == path
    assert problem.message.startswith("a key must be text, got ")
    assert problem.message.endswith("(YAML reads unquoted yes, no, on, off, true, false and "
                                    "numbers as such: quote the key)")


def test_a_spec_error_s_message_names_the_first_hundred_problems_and_counts_the_rest() -> None:
    """A 1 MB spec of 100 000 unknown keys made a message of 17 MB (stderr, twice with
    --output json, the agent's log); ``problems`` keeps every one."""
    text = "apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n" + "".join(
        f"k{i}: 1\n" for i in range(100_000))
    with pytest.raises(SpecError) as info:
        Spec.from_yaml(text, source="big.yaml")
    assert len(info.value.problems) == 100_000
    lines = str(info.value).splitlines()
    assert lines[0] == "100000 problems in big.yaml:"
    assert lines[1].startswith("  k0: unknown key")
    assert lines[100].startswith("  k99: unknown key")
    assert lines[101:] == ["  ... and 99900 more (all of them: k3snet validate --output json)"]
    assert len(str(SpecError([info.value.problems[0]] * 100))) < len(str(info.value))
    assert "more" not in str(SpecError(info.value.problems[:100]))


@settings(deadline=None)
@given(st.text(min_size=1, max_size=12))
def test_a_key_holding_any_character_makes_one_line_per_problem_and_no_control_character(
    key: str
) -> None:
    """A key is written in its problem's path: one holding a line break forged a problem
    line of its own, and an escape sequence (ESC [2J) reached the operator's terminal."""
    document = {"apiVersion": "k3snet.io/v1alpha1", "kind": "EgressSpec", f"x{key}": 1,
                "sysctls": {f"net.ipv4.{key}": 1}, "egressPolicy": {"podSelector": {key: "y"}},
                "backends": {"nftables": {f"o{key}": 1}}}
    with pytest.raises(SpecError) as info:  # x{key} is an unknown key, whatever else
        spec_from_document(document, source="hostile.yaml")
    lines = str(info.value).split("\n")
    assert len(lines) == 1 + len(info.value.problems)
    assert all(line.isprintable() for line in lines)
    assert all(p.path.isprintable() for p in info.value.problems)


def test_a_key_s_control_characters_are_escaped_in_its_problem_s_path() -> None:
    document = {"apiVersion": "k3snet.io/v1alpha1", "kind": "EgressSpec",
                "x\n  destinations[0].cidr: forged\n\x1b[2Jy": 1,
                "sysctls": {"net.ipv4.ip_forward\nz": 1}}
    with pytest.raises(SpecError) as info:
        spec_from_document(document, source="hostile.yaml")
    assert [p.path for p in info.value.problems] == [
        "x\\n  destinations[0].cidr: forged\\n\\x1b[2Jy", "sysctls.net.ipv4.ip_forward\\nz"]
    assert str(info.value).count("\n") == 2


@pytest.mark.parametrize(("value", "decimal"), [
    ("0x1", "1"), ("0X1f", "31"), ("010", "8"), ("-0", "0"), ("-0x10", "-16"),
    ("+2", None), ("09", None), ("4096 0x10 6291456", "16"),
])
def test_a_sysctl_number_the_kernel_reads_back_otherwise_is_a_problem(
    value: str, decimal: str | None
) -> None:
    """The kernel reads 0x1 as hexadecimal and 010 as octal, stores the number and reads
    back 1 and 8: k3snet's apply saw another value than it wrote and failed (rolled back)
    on every node and at every agent pass, while validate said valid and apply --dry-run
    found no problem. +2 and 09 it refuses."""
    document = {"apiVersion": "k3snet.io/v1alpha1", "kind": "EgressSpec",
                "sysctls": {"net.ipv4.tcp_fin_timeout": value}}
    with pytest.raises(SpecError) as info:
        spec_from_document(document)
    (problem,) = info.value.problems
    assert problem.path == "sysctls.net.ipv4.tcp_fin_timeout"
    assert "decimal" in problem.message
    if decimal is not None:
        assert f"that is {decimal}, and shows {decimal}" in problem.message
    else:
        assert f"the kernel refuses {value!r}" in problem.message


@pytest.mark.parametrize("value", ["30", "-1", "0", "4096 131072 6291456", "bbr", "fq_codel",
                                   "0 2147483647", "x0x1"])
def test_a_decimal_number_or_a_word_is_a_sysctl_value(value: str) -> None:
    document = {"apiVersion": "k3snet.io/v1alpha1", "kind": "EgressSpec",
                "sysctls": {"net.ipv4.tcp_fin_timeout": value}}
    assert spec_from_document(document).sysctls[0].value == value
    # A CPU bitmap is hexadecimal to the kernel (bitmap_parse), whatever its digits.
    document["sysctls"] = {"net.core.rps_default_mask": "0003", "net.core.flow_limit_cpu_bitmap":
                           "0f"}
    assert spec_from_document(document).sysctls


def test_a_quoted_number_or_boolean_is_told_to_lose_its_quotes() -> None:
    """``metric: "100"`` said "metric must be 0..4294967295, got '100'" and ``masquerade:
    "false"`` "expected true or false, got 'false'": the value looked right to its writer."""
    document = {"apiVersion": "k3snet.io/v1alpha1", "kind": "EgressSpec",
                "destinations": [{"cidr": D, "gateway": "192.168.1.1", "metric": "100",
                                  "masquerade": "false", "forward": "yes"}],
                "connectivityTest": {"target": "192.168.7.10", "port": " 5432"}}
    with pytest.raises(SpecError) as info:
        spec_from_document(document)
    said = {p.path: p.message for p in info.value.problems}
    assert said == {
        "destinations[0].metric": "metric must be 0..4294967295, got '100' (a text: write "
                                  "the number without quotes)",
        "destinations[0].masquerade": "expected true or false, got 'false' (a text: write "
                                      "true or false without quotes)",
        "destinations[0].forward": "expected true or false, got 'yes' (a text: write "
                                   "true or false without quotes)",
        "connectivityTest.port": "must be 1..65535, got ' 5432' (a text: write the number "
                                 "without quotes)",
    }


@pytest.mark.parametrize(("name", "value", "decimal"), [
    ("net.ipv4.icmp_ratemask", "0x1818", "6168"),   # an integer (proc_dointvec)
    ("net.ipv4.icmp_ratemask", "014", "12"),
    ("net.ipv6.icmp.ratemask", "01", "1"),          # a list of numbers, one given
    ("net.ipv6.icmp.ratemask", "0x10", "16"),
])
def test_a_sysctl_named_mask_that_the_kernel_shows_in_decimal_refuses_other_numbers(
    name: str, value: str, decimal: str
) -> None:
    """Only the CPU bitmaps are hexadecimal to the kernel: icmp_ratemask is an integer it
    reads 0x1818 into and shows as 6168 (a lab namespace: written 0x1818, read 6168), the
    IPv6 ratemask a list whose 01 it shows as 1. Every name ending in mask was left as
    written, and each apply failed on the value read back."""
    document = {"apiVersion": "k3snet.io/v1alpha1", "kind": "EgressSpec",
                "sysctls": {name: value}}
    with pytest.raises(SpecError) as info:
        spec_from_document(document)
    (problem,) = info.value.problems
    assert f"that is {decimal}, and shows {decimal}" in problem.message


@pytest.mark.parametrize("resolver", [
    "fe80::1%eth0", "127.0.0.53", "::1",
    "0.0.0.0", "::",  # noqa: S104 (resolvers under test, not a bind)
    "224.0.0.251", "ff02::fb", "255.255.255.255"])
def test_a_resolver_coredns_cannot_forward_to_is_refused_in_python_too(resolver: str) -> None:
    # Built in code (render_manifests(spec)), the zone never passed the field check.
    with pytest.raises(ModelError, match=r"has a zone id|is (a loopback|the unspecified|"
                                         r"a multicast|the broadcast) address"):
        DnsZone("corp.example", [resolver])
