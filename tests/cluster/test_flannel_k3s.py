"""The flannel backend against configs shaped like the ones K3s and kube-flannel really run.

The K3s documents are what ``pkg/agent/flannel/setup.go`` (k3s-io/k3s) writes to
``<data-dir>/agent/etc/flannel/net-conf.json``: its ``flannelConf`` template (tab
indented) with the backend template pasted in as it is, so the ``Backend`` object's
lines are not indented further. kube-flannel's is the ``net-conf.json`` key of the
``kube-flannel-cfg`` ConfigMap of ``kube-flannel.yml``, with ``DirectRouting`` added
as its users do.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from k3snet.backends.flannel import (
    ALLOW_DISRUPTIVE_HINT,
    OWNED_ANNOTATION,
    FlannelBackend,
    flannel_values,
    is_k3s_generated,
)
from k3snet.backends.group import BackendGroup
from k3snet.backends.memory import MemoryBackend
from k3snet.backends.registry import backend_options
from k3snet.converge import apply_plan, converge
from k3snet.errors import ApplyError, BackendError, ModelError, PlanError, RollbackError
from k3snet.model.cni import FLANNEL_FIELDS, FLANNEL_OWNED_MARKER, FlannelConfig, IPPool
from k3snet.model.state import State
from k3snet.planner import Change, Plan, plan
from k3snet.spec import compile as compile_spec
from k3snet.spec import load_spec
from k3snet.testing.kube import EmulatedApiServer
from tests.examples import examples

pytestmark = pytest.mark.cluster

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
CONFIGMAPS = "v1/configmaps"

# K3s, IPv4-only cluster, --flannel-backend=vxlan (the default).
K3S_VXLAN = ('{\n\t"Network": "10.42.0.0/16",\n\t"EnableIPv6": false,\n\t"EnableIPv4": true,\n'
             '\t"IPv6Network": "::/0",\n\t"Backend": {\n\t"Type": "vxlan"\n}\n}\n')
# K3s, IPv4-only, --flannel-backend=host-gw.
K3S_HOST_GW = K3S_VXLAN.replace('"Type": "vxlan"', '"Type": "host-gw"')
# K3s, --flannel-backend=wireguard-native.
K3S_WIREGUARD = K3S_VXLAN.replace('"Type": "vxlan"',
                                  '"Type": "wireguard",\n\t"PersistentKeepaliveInterval": 25')
# K3s, dual-stack --cluster-cidr=10.42.0.0/16,fd42:42::/56, vxlan.
K3S_DUAL_STACK = (K3S_VXLAN.replace('"EnableIPv6": false', '"EnableIPv6": true')
                  .replace('"::/0"', '"fd42:42::/56"'))
# K3s, IPv6-only --cluster-cidr=fd42:42::/56: IPv4 off, its network 0.0.0.0/0.
K3S_IPV6_ONLY = (K3S_DUAL_STACK.replace('"EnableIPv4": true', '"EnableIPv4": false')
                 .replace('"10.42.0.0/16"', '"0.0.0.0/0"'))
# A --flannel-conf file someone wrote by hand: vxlan with its own VNI, port and MTU.
CUSTOM_VXLAN = """{
  "Network": "10.42.0.0/16",
  "Backend": {"Type":"vxlan","VNI":1,"Port":8472,"MTU":1280}
}
"""
# kube-flannel.yml's net-conf.json, with DirectRouting on.
KUBE_FLANNEL = """{
  "Network": "10.244.0.0/16",
  "EnableNFTables": false,
  "Backend": {
    "Type": "vxlan",
    "DirectRouting": true
  }
}
"""


def _file(tmp_path: Path, text: str, name: str = "flannel-net-conf.json") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _converge(backend: FlannelBackend, desired: State) -> Plan:
    p = plan(backend.observe(), desired)
    backend.apply(p)
    return p


def _seed_plan(backend: FlannelBackend) -> Plan:
    wanted = compile_spec(load_spec(SEED), flannel_targets=[backend.target]).only(["flannel"])
    return plan(backend.observe(), wanted)


# ---------------------------------------------------------------- K3s' own documents


@pytest.mark.parametrize("text", [K3S_VXLAN, K3S_HOST_GW, K3S_WIREGUARD],
                         ids=["vxlan", "host-gw", "wireguard-native"])
def test_k3s_ipv4_only_config_agrees_with_the_seed_spec(tmp_path: Path, text: str) -> None:
    """IPv6 is off in flannel: fd42:42::/56 is not checked against IPv6Network ::/0."""
    backend = FlannelBackend(path=_file(tmp_path, text))
    (foreign,) = backend.observe().foreign
    assert foreign.enable_ipv6 is False
    assert str(foreign.ipv6_network) == "::/0"
    p = _seed_plan(backend)
    assert p.empty
    assert p.conflicts == ()


def test_k3s_dual_stack_config_is_checked_for_both_families(tmp_path: Path) -> None:
    backend = FlannelBackend(path=_file(tmp_path, K3S_DUAL_STACK))
    assert _seed_plan(backend).conflicts == ()
    other = _file(tmp_path, K3S_DUAL_STACK.replace("fd42:42::/56", "fd00:1::/56"), "b.json")
    (note,) = _seed_plan(FlannelBackend(path=other)).conflicts
    assert "fd42:42::/56 disagrees with flannel's IPv6Network fd00:1::/56" in str(note.reason)


def test_k3s_ipv6_only_config_is_not_checked_for_ipv4(tmp_path: Path) -> None:
    backend = FlannelBackend(path=_file(tmp_path, K3S_IPV6_ONLY))
    (foreign,) = backend.observe().foreign
    assert foreign.enable_ipv4 is False
    assert str(foreign.network) == "0.0.0.0/0"
    assert _seed_plan(backend).conflicts == ()  # 10.42.0.0/16 vs 0.0.0.0/0: IPv4 is off


def test_the_file_k3s_generates_is_not_edited(tmp_path: Path) -> None:
    path = _file(tmp_path, K3S_VXLAN, "k3s/agent/etc/flannel/net-conf.json")
    assert is_k3s_generated(path)
    backend = FlannelBackend(path=path, allow_disruptive=True)
    assert backend.observe().foreign  # reading it is fine
    p = plan(backend.observe(), State(owned=[FlannelConfig(backend.target, enable_nftables=True)]))
    (problem,) = backend.check(p)
    assert "K3s writes it again on every start" in problem
    assert "--flannel-conf" in problem
    with pytest.raises(PlanError, match="--flannel-conf"):
        backend.apply(p)
    assert path.read_text() == K3S_VXLAN


def test_the_path_k3s_generates_is_edited_for_a_flanneld_of_ones_own(tmp_path: Path) -> None:
    """K3s started with --flannel-backend=none runs no flannel and writes no net-conf.json
    (its agent prepares flannel's files only with flannel on): a flanneld of one's own
    reading a file at that path (reader="flanneld") keeps k3snet's edit, which was refused
    as one K3s "writes again on every start"."""
    path = _file(tmp_path, K3S_VXLAN, "k3s/agent/etc/flannel/net-conf.json")
    backend = FlannelBackend(path=path, reader="flanneld")
    p = plan(backend.observe(), State(owned=[FlannelConfig(backend.target, enable_nftables=True)]))
    assert backend.check(p) == ()
    backend.apply(p)
    assert json.loads(path.read_text())["EnableNFTables"] is True


def test_a_link_to_the_file_k3s_generates_is_not_edited_either(tmp_path: Path) -> None:
    real = _file(tmp_path, K3S_VXLAN, "rancher/k3s/agent/etc/flannel/net-conf.json")
    link = tmp_path / "flannel.json"
    link.symlink_to(real)
    backend = FlannelBackend(path=link)
    p = plan(backend.observe(), State(owned=[FlannelConfig(backend.target, enable_nftables=True)]))
    with pytest.raises(PlanError, match=r"net-conf\.json K3s generates"):
        backend.apply(p)


# ---------------------------------------------------------------- Backend merged key by key


def test_asking_for_an_mtu_keeps_vni_and_port_byte_for_byte(tmp_path: Path) -> None:
    path = _file(tmp_path, CUSTOM_VXLAN)
    backend = FlannelBackend(path=path)
    desired = State(owned=[FlannelConfig(backend.target, backend_type="vxlan",
                                         backend_options={"MTU": 1400})])
    p = _converge(backend, desired)
    assert [c.action for c in p] == ["add"]
    text = path.read_text()
    values = json.loads(text)
    assert values["Backend"] == {"Type": "vxlan", "VNI": 1, "Port": 8472, "MTU": 1400}
    # Only the MTU's bytes changed; the record holds the two members k3snet set.
    assert text.startswith(CUSTOM_VXLAN.replace('"MTU":1280}', '"MTU":1400}').rstrip()[:-2])
    assert values[FLANNEL_OWNED_MARKER] == {"Backend": {"MTU": "1280", "Type": '"vxlan"'}}
    assert backend.observe().owned == desired.owned
    assert plan(backend.observe(), desired).empty
    (foreign,) = backend.observe().foreign
    assert dict(foreign.backend_options) == {"VNI": 1, "Port": 8472, "MTU": 1280}
    _converge(backend, State())
    assert path.read_text() == CUSTOM_VXLAN


def test_an_option_already_set_is_met_whatever_the_other_options(tmp_path: Path) -> None:
    backend = FlannelBackend(path=_file(tmp_path, CUSTOM_VXLAN))
    p = plan(backend.observe(), State(owned=[FlannelConfig(
        backend.target, backend_type="vxlan", backend_options={"Port": 8472})]))
    assert p.empty
    assert [n.status for n in p.notes] == ["met"]


def test_kube_flannel_configmap_keeps_direct_routing(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    api_server.put(CONFIGMAPS, {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kube-flannel-cfg", "namespace": "kube-flannel"},
        "data": {"net-conf.json": KUBE_FLANNEL, "cni-conf.json": "{}"},
    })
    backend = FlannelBackend(api_client=api_client)
    desired = State(owned=[FlannelConfig(backend.target, backend_type="vxlan",
                                         backend_options={"MTU": 1400})])
    _converge(backend, desired)
    stored = api_server.get(CONFIGMAPS, "kube-flannel-cfg", "kube-flannel")
    assert stored is not None
    text = stored["data"]["net-conf.json"]
    assert text == KUBE_FLANNEL.replace('"DirectRouting": true',
                                        '"DirectRouting": true,\n    "MTU": 1400')
    assert json.loads(stored["metadata"]["annotations"][OWNED_ANNOTATION]) == {
        "Backend": {"MTU": None, "Type": '"vxlan"'}}
    _converge(backend, State())
    stored = api_server.get(CONFIGMAPS, "kube-flannel-cfg", "kube-flannel")
    assert stored is not None
    assert stored["data"]["net-conf.json"] == KUBE_FLANNEL


def test_kube_flannel_network_is_a_conflict_never_a_rewrite(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    """The seed spec (10.42.0.0/16) with cni.flannel: {} on kube-flannel's 10.244.0.0/16."""
    api_server.put(CONFIGMAPS, {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kube-flannel-cfg", "namespace": "kube-flannel"},
        "data": {"net-conf.json": KUBE_FLANNEL},
    })
    backend = FlannelBackend(api_client=api_client)
    spec = load_spec(SEED)
    spec = type(spec).from_dict({**spec.to_dict(), "cni": {"flannel": {}}})
    wanted = compile_spec(spec, flannel_targets=[backend.target]).only(["flannel"])
    p = plan(backend.observe(), wanted)
    assert p.changes == ()
    (note,) = p.conflicts
    assert "10.42.0.0/16 disagrees with flannel's Network 10.244.0.0/16" in str(note.reason)


def test_a_backend_recorded_whole_by_an_older_k3snet_is_given_back_whole(tmp_path: Path) -> None:
    original = CUSTOM_VXLAN
    written = original.replace('{"Type":"vxlan","VNI":1,"Port":8472,"MTU":1280}',
                               '{"Type": "host-gw"}')
    record = json.dumps({"Backend": '{"Type":"vxlan","VNI":1,"Port":8472,"MTU":1280}'})
    path = _file(tmp_path, written.rstrip()[:-2] + f',\n  "{FLANNEL_OWNED_MARKER}": {record}\n}}\n')
    backend = FlannelBackend(path=path, allow_disruptive=True)
    (owned,) = backend.observe().owned
    assert owned == FlannelConfig(backend.target, backend_type="host-gw")
    _converge(backend, State())
    assert path.read_text() == original


# ---------------------------------------------------------------- disruptive changes


@pytest.mark.parametrize(("config", "reason"), [
    ({"network": "10.244.0.0/16"},
     'changing flannel\'s Network ("10.42.0.0/16" -> "10.244.0.0/16") changes the network '
     "flannel routes, accepts and exempts from masquerade, and flannel stops on every node "
     "whose podCIDR it does not contain"),
    ({"enable_ipv6": True, "ipv6_network": "fd42:42::/56"},
     "changing flannel's EnableIPv6 (false -> true) adds or removes the pods' IPv6 network"),
    ({"enable_ipv4": False, "enable_ipv6": True, "ipv6_network": "fd42::/56"},
     "changing flannel's EnableIPv4 (true -> false)"),
    ({"backend_type": "host-gw"},
     'changing flannel\'s Backend.Type ("vxlan" -> "host-gw") rebuilds the network'),
    # The vxlan device is flannel.VNI with that VXLAN ID, sending to Port (pkg/backend/vxlan).
    ({"backend_type": "vxlan", "backend_options": {"VNI": 4096}},
     "changing flannel's Backend.VNI (1 -> 4096) gives the vxlan device another VXLAN ID"),
    ({"backend_type": "vxlan", "backend_options": {"Port": 4789}},
     "changing flannel's Backend.Port (8472 -> 4789) sends vxlan to another UDP port"),
])
def test_disruptive_changes_are_refused_unless_allowed(
    tmp_path: Path, config: dict[str, Any], reason: str
) -> None:
    path = _file(tmp_path, K3S_VXLAN)
    backend = FlannelBackend(path=path)
    p = plan(backend.observe(), State(owned=[FlannelConfig(backend.target, **config)]))
    (change,) = p.changes
    assert reason in str(backend.disruptive(change))
    (problem,) = backend.check(p)
    assert reason in problem
    assert ALLOW_DISRUPTIVE_HINT in problem
    assert ("cni.allowDisruptive: true in the spec, --allow-disruptive on the CLI, or "
            "allow_disruptive=True in the library") in problem
    with pytest.raises(PlanError, match="refuses a disruptive change"):
        backend.apply(p)
    assert path.read_text() == K3S_VXLAN
    allowed = FlannelBackend(path=path, allow_disruptive=True)
    assert allowed.check(p) == ()
    allowed.apply(p)
    assert path.read_text() != K3S_VXLAN
    assert "allow_disruptive" in backend_options("flannel")


def test_a_value_already_in_place_or_an_option_is_not_disruptive(tmp_path: Path) -> None:
    backend = FlannelBackend(path=_file(tmp_path, K3S_VXLAN))
    same = Change.add(FlannelConfig(backend.target, network="10.42.0.0/16",
                                    extra={"x-site": "rack-1"}))
    assert backend.disruptive(same) is None
    assert backend.check(Plan(changes=[same])) == ()
    mtu = Change.add(FlannelConfig(backend.target, backend_type="vxlan",
                                   backend_options={"MTU": 1400}))
    assert backend.disruptive(mtu) is None
    assert backend.check(Plan(changes=[mtu])) == ()
    defaults = Change.add(FlannelConfig(backend.target, backend_type="vxlan",
                                        backend_options={"VNI": 1, "Port": 8472}))
    assert backend.disruptive(defaults) is None  # flannel's defaults, spelled out
    subnet_len = Change.add(FlannelConfig(backend.target, extra={"SubnetLen": 24}))
    assert backend.disruptive(subnet_len) is None
    # The network of a family flannel has off is not disruptive to change.
    v6 = Change.add(FlannelConfig(backend.target, ipv6_network="fd00::/56"))
    assert backend.disruptive(v6) is None


@pytest.mark.parametrize("extra", [{"SubnetLen": 25}, {"IPv6SubnetLen": 80},
                                   {"SubnetMin": "10.42.8.0", "SubnetMax": "10.42.16.0"},
                                   {"IPv6SubnetMin": "fd42:42::", "IPv6SubnetMax": "fd42:42::"}])
@pytest.mark.parametrize("reader", ["k3s", "flanneld"])
def test_subnet_keys_are_never_written_as_the_kube_subnet_manager_never_reads_them(
    tmp_path: Path, extra: dict[str, Any], reader: Literal["k3s", "flanneld"]
) -> None:
    """flanneld reads --net-config-path only with --kube-subnet-mgr (main.go newSubnetManager;
    the etcd manager reads its config from etcd), as K3s does. The kube manager takes each
    node's subnet from its Node's podCIDR and never reads SubnetLen/SubnetMin/SubnetMax
    (pkg/subnet/kube; CheckNetworkConfig, which does, runs for etcd only): written, they
    were reported applied and changed nothing, a pod CIDR size the user believed set."""
    path = _file(tmp_path, K3S_DUAL_STACK)
    backend = FlannelBackend(path=path, reader=reader, allow_disruptive=True)
    p = plan(backend.observe(), State(owned=[FlannelConfig(backend.target, extra=extra)]))
    (problem,) = backend.check(p)
    assert f"never reads {', '.join(sorted(extra))}:" in problem
    assert "its Node's spec.podCIDR" in problem
    assert "node-cidr-mask-size" in problem
    with pytest.raises(PlanError, match="Writing them would change nothing"):
        backend.apply(p)
    assert path.read_text() == K3S_DUAL_STACK
    # Beside a key flannel reads, the whole plan is refused: nothing is written.
    both = FlannelConfig(backend.target, network="10.42.0.0/16", extra=extra)
    assert backend.check(plan(backend.observe(), State(owned=[both])))


@pytest.mark.parametrize("extra", [{"SubnetLen": 24}, {"SubnetMin": "10.42.8.0"},
                                   {"Networks": ["10.42.0.0/16"]}])
def test_a_subnet_key_already_in_the_file_is_refused_not_met(
    tmp_path: Path, extra: dict[str, Any]
) -> None:
    """The same value found in the file was a "met" (= ... SubnetLen=24, no refusal), as if
    it sized the pod CIDRs, while another value was refused: refused either way."""
    members = ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in extra.items())
    text = '{"Network": "10.42.0.0/16", ' + members + ', "Backend": {"Type": "vxlan"}}'
    path = _file(tmp_path, text)
    backend = FlannelBackend(path=path)
    p = plan(backend.observe(), State(owned=[FlannelConfig(backend.target, extra=extra)]))
    assert not p.notes
    (problem,) = backend.check(p)
    assert "Writing them would change nothing" in problem
    assert path.read_text() == text


def test_subnet_and_networks_keys_are_refused_in_a_configmap_and_given_back_from_before(
    api_server: EmulatedApiServer, api_client: Any
) -> None:
    """kube-flannel runs flanneld with --kube-subnet-mgr too. A key an earlier k3snet
    wrote is still given back when the config no longer sets it."""
    text = KUBE_FLANNEL.replace('"EnableNFTables": false', '"EnableNFTables": false,\n'
                                '  "SubnetLen": 25,\n  "Networks": ["10.244.0.0/16"]')
    record = {"SubnetLen": None, "Networks": None}
    written = {"SubnetLen": "25", "Networks": '["10.244.0.0/16"]'}
    api_server.put(CONFIGMAPS, {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kube-flannel-cfg", "namespace": "kube-flannel",
                     "annotations": {OWNED_ANNOTATION: json.dumps(record),
                                     "k3snet.io/flannel-written": json.dumps(written)}},
        "data": {"net-conf.json": text},
    })
    backend = FlannelBackend(api_client=api_client, timeout=10.0)
    extras: list[dict[str, Any]] = [{"SubnetLen": 24}, {"Networks": ["10.42.0.0/16"]},
                                    {"networks": [], "IPv6Networks": []}]
    for extra in extras:
        p = plan(backend.observe(), State(owned=[FlannelConfig(backend.target, extra=extra)]))
        (problem,) = backend.check(p)
        assert f"never reads {', '.join(sorted(extra))}" in problem
    _converge(backend, State())
    stored = api_server.get(CONFIGMAPS, "kube-flannel-cfg", "kube-flannel")
    assert stored is not None
    assert stored["data"]["net-conf.json"] == KUBE_FLANNEL


# What a k3snet before the refusals wrote: SubnetLen into kube-flannel's ConfigMap's shape
# of file, EnableNFTables into a file K3s reads (its record names them as its own).
_WRITTEN_SUBNET_LEN = """{
  "Network": "10.42.0.0/16",
  "Backend": {"Type": "vxlan","MTU": 1400},
  "SubnetLen": 25,
  "k3snet.io/owned": {"Backend": {"MTU": null, "Type": "\\"vxlan\\""}, "SubnetLen": null},
  "k3snet.io/written": {"Backend": {"MTU": "1400", "Type": "\\"vxlan\\""}, "SubnetLen": "25"}
}
"""
_WRITTEN_NFTABLES = _WRITTEN_SUBNET_LEN.replace('"SubnetLen": 25', '"EnableNFTables": true') \
    .replace('"SubnetLen": null', '"EnableNFTables": null') \
    .replace('"SubnetLen": "25"', '"EnableNFTables": "true"')


@pytest.mark.parametrize("text", [_WRITTEN_SUBNET_LEN, _WRITTEN_NFTABLES])
def test_a_group_undo_gives_back_a_key_an_earlier_k3snet_wrote_that_is_now_refused(
    tmp_path: Path, text: str
) -> None:
    """The plan gives the key back (the config no longer sets it) beside another member's
    change; that member fails, and the group's undo puts flannel's config back as it was,
    the key too: refused as a key k3snet would write, the undo failed (RollbackError,
    "may still be there") and the node stayed half-changed."""
    path = _file(tmp_path, text)
    flannel = FlannelBackend(path=path)
    pools = MemoryBackend(capabilities=["ippool"])
    group = BackendGroup([flannel, pools])
    wanted = FlannelConfig(flannel.target, backend_type="vxlan", backend_options={"MTU": 1400})
    p = plan(group.observe(), State(owned=[wanted, IPPool("x", "192.168.2.0/24")]))
    assert [c.action for c in p.changes] == ["replace", "add"]
    assert group.check(p) == ()
    pools.faults.fail_at(0)
    with pytest.raises(ApplyError) as info:
        group.apply(p)
    assert not isinstance(info.value, RollbackError), info.value
    assert path.read_text() == text
    # Not undoing, the key is refused as before.
    (again,) = flannel.check(Plan(changes=[c.inverse() for c in p.changes[:1]]))
    assert "flannel backend refuses" in again


@pytest.mark.parametrize("text", [_WRITTEN_SUBNET_LEN, _WRITTEN_NFTABLES])
def test_a_refused_key_an_earlier_k3snet_wrote_wanted_again_as_it_is_is_refused_at_plan_time(
    tmp_path: Path, text: str
) -> None:
    """Wanted again at the value in place, the key was planned as nothing ("No changes"),
    no refusal shown, while the config still asked for what flannel ignores: refused from
    the desired config before anything is planned. Destroy still gives it back."""
    path = _file(tmp_path, text)
    backend = FlannelBackend(path=path)
    (owned,) = backend.observe().owned
    assert isinstance(owned, FlannelConfig)
    desired = State(owned=[owned])
    assert plan(backend.observe(), desired).empty  # in place: nothing to write
    for dry_run in (True, False):
        with pytest.raises(PlanError, match="flannel backend refuses flannel file:"):
            converge(backend, desired, dry_run=dry_run, check=True)
    assert path.read_text() == text
    converge(backend, State(), allow_teardown=True)
    assert "k3snet.io" not in path.read_text()


@pytest.mark.parametrize("text", [_WRITTEN_SUBNET_LEN, _WRITTEN_NFTABLES])
def test_a_saved_plan_of_a_refused_key_in_place_is_refused_as_its_desired_config_is(
    tmp_path: Path, text: str
) -> None:
    """A plan file made by a k3snet before the refusal (the key in place: nothing to do
    for flannel) applied with its desired state (``k3snet apply FILE``): the config was
    put in force, the plan's other changes applied, where ``k3snet apply -f`` refuses
    that desired config; ``apply_plan`` gives the backends the same hint ``converge``
    does, so flannel refuses it alike, nothing applied."""
    path = _file(tmp_path, text)
    backend = FlannelBackend(path=path)
    (owned,) = backend.observe().owned
    desired = State(owned=[owned])
    saved = plan(backend.observe(), desired)  # as the earlier k3snet planned it
    for dry_run in (True, False):
        with pytest.raises(PlanError, match="flannel backend refuses flannel file:"):
            apply_plan(backend, saved, desired=desired, dry_run=dry_run)
    assert path.read_text() == text


@pytest.mark.parametrize(("text", "config", "reason"), [
    # K3s' IPv4-only file keeps "IPv6Network": "::/0" beside "EnableIPv6": false.
    (K3S_VXLAN, {"enable_ipv6": True},
     "EnableIPv6 would be true with IPv6Network ::/0"),
    (K3S_VXLAN, {"network": "0.0.0.0/0"}, "EnableIPv4 would be true with Network 0.0.0.0/0"),
    (K3S_IPV6_ONLY, {"enable_ipv4": True}, "EnableIPv4 would be true with Network 0.0.0.0/0"),
    (K3S_DUAL_STACK, {"ipv6_network": "::/0"},
     "EnableIPv6 would be true with IPv6Network ::/0"),
    ('{"Backend": {"Type": "vxlan"}, "EnableIPv4": false, "IPv6Network": "fd42::/56", '
     '"EnableIPv6": true}', {"enable_ipv4": True}, "EnableIPv4 would be true with no Network"),
    # flanneld stops on "none defined stack" (pkg/ipmatch GetIPFamily).
    (K3S_VXLAN, {"enable_ipv4": False}, "EnableIPv4 and EnableIPv6 would both be false"),
    (K3S_IPV6_ONLY, {"enable_ipv6": False}, "EnableIPv4 and EnableIPv6 would both be false"),
])
def test_an_enabled_family_without_a_network_flannel_reads_is_never_written_even_if_allowed(
    tmp_path: Path, text: str, config: dict[str, Any], reason: str
) -> None:
    # flannel's ip.IP4Net/IP6Net read a /0 as Empty(): its kube subnet manager then refuses
    # every node's lease ("subnet ... doesn't contain ... PodCIDR", pkg/subnet/kube) and
    # K3s stops on "ipv4 mode requested but no ipv4 network provided".
    path = _file(tmp_path, text)
    backend = FlannelBackend(path=path, allow_disruptive=True)
    p = plan(backend.observe(), State(owned=[FlannelConfig(backend.target, **config)]))
    (problem,) = backend.check(p)
    assert reason in problem
    assert "flannel would not start" in problem
    with pytest.raises(PlanError, match=reason):
        backend.apply(p)
    assert path.read_text() == text


def test_a_config_flannel_already_refuses_does_not_block_other_keys(tmp_path: Path) -> None:
    text = '{"EnableIPv6": true, "IPv6Network": "::/0", "Network": "10.42.0.0/16"}'
    path = _file(tmp_path, text)
    backend = FlannelBackend(path=path)
    _converge(backend, State(owned=[FlannelConfig(backend.target, extra={"x-site": "rack-1"})]))
    assert json.loads(path.read_text())["x-site"] == "rack-1"


def test_giving_back_a_config_flannel_already_refused_is_not_blocked(tmp_path: Path) -> None:
    # The file was broken before k3snet (IPv6 on with ::/0); k3snet's IPv6Network fixed it.
    # Removing k3snet's keys puts the operator's text back, as found.
    text = '{"EnableIPv6": true, "IPv6Network": "::/0", "Network": "10.42.0.0/16"}'
    path = _file(tmp_path, text)
    backend = FlannelBackend(path=path, allow_disruptive=True)
    _converge(backend, State(owned=[FlannelConfig(backend.target, ipv6_network="fd42::/56")]))
    assert json.loads(path.read_text())["IPv6Network"] == "fd42::/56"
    _converge(backend, State())
    assert path.read_text() == text


def test_giving_back_a_network_is_disruptive_too(tmp_path: Path) -> None:
    path = _file(tmp_path, K3S_VXLAN)
    _converge(FlannelBackend(path=path, allow_disruptive=True),
              State(owned=[FlannelConfig(f"file:{path}", network="10.244.0.0/16")]))
    backend = FlannelBackend(path=path)
    p = plan(backend.observe(), State())
    (change,) = p.changes
    assert change.action == "delete"
    assert "10.244.0.0/16\" -> \"10.42.0.0/16\"" in str(backend.disruptive(change))
    with pytest.raises(PlanError, match="disruptive"):
        backend.apply(p)


# ---------------------------------------------------------------- values read as flannel reads them


@pytest.mark.parametrize(("text", "message"), [
    ('{"Network": 42}', "Network must be an IPv4 CIDR string, got 42"),
    ('{"Network": "10.42.0.1/16"}',
     "Network must be a network without host bits (flannel would silently use 10.42.0.0/16)"),
    ('{"Network": "fd42::/56"}', "Network must be an IPv4 CIDR string"),
    ('{"Network": "10.42.0.0"}', "Network must be an IPv4 CIDR string"),
    # Go's net.ParseCIDR (flannel's ip.IP4Net / IP6Net) takes decimal prefix bits and no
    # zone; Python's ipaddress also takes a netmask and a zone.
    ('{"Network": "10.42.0.0/255.255.0.0"}', "Network must be an IPv4 CIDR string"),
    ('{"Network": "10.42.0.0/0.0.255.255"}', "Network must be an IPv4 CIDR string"),
    ('{"IPv6Network": "fe80::%eth0/64"}', "IPv6Network must be an IPv6 CIDR string"),
    ('{"IPv6SubnetMin": "fe80::1%eth0"}', "IPv6SubnetMin must be an IPv6 address string"),
    # flannel's pkg/ip types parse the raw text between the quotes: a JSON escape, which
    # Python decodes, is a backslash in the address there.
    ('{"Network": "10.42.0.0\\/16"}', "Network must be written without JSON escapes"),
    ('{"network": "10.42.0.0\\/16"}', "Network must be written without JSON escapes"),
    ('{"Network": "10.42.0.0/16", "SubnetMin": "10.42.1\\u002e0"}',
     "SubnetMin must be written without JSON escapes"),
    # The vxlan and wireguard backends decode Backend into typed Go structs.
    ('{"Backend": {"Type": "vxlan", "VNI": "4096"}}',
     'Backend.VNI must be an integer 0..16777215 (a VXLAN ID: the kernel\'s are 24 bits) '
     '(flannel\'s vxlan backend reads it as its VNI), got "4096"'),
    ('{"Backend": {"Type": "VXLAN", "directrouting": "true"}}',
     "Backend.DirectRouting must be true or false"),
    # "vni" is VXLANConfig's json tag, "VNI" matches it case-insensitively: the later wins.
    ('{"Backend": {"Type": "vxlan", "VNI": 1, "vni": 4096}}',
     "'Backend.VNI' and 'Backend.vni' are both flannel's VNI"),
    ('{"Backend": {"Type": "wireguard", "PersistentKeepaliveInterval": 25.5}}',
     "Backend.PersistentKeepaliveInterval must be an integer"),
    ('{"IPv6Network": "fd42::1/56"}', "IPv6Network must be a network without host bits"),
    ('{"EnableIPv6": "false"}', 'EnableIPv6 must be true or false, got "false"'),
    ('{"SubnetLen": "24"}', "SubnetLen must be an integer 0..4294967295"),
    # A Go uint is 32 bits on an armhf node: the decoder refuses a larger number there.
    ('{"IPv6SubnetLen": 4294967296}', "IPv6SubnetLen must be an integer 0..4294967295"),
    ('{"SubnetLen": 24.0}', "SubnetLen must be an integer 0..4294967295"),
    # A Go int is 32 bits on an armhf or 386 node, whose decoder refuses anything else
    # (reflect's OverflowInt): one config serves every node, whatever its architecture.
    ('{"Backend": {"Type": "vxlan", "MTU": 2147483648}}',
     "Backend.MTU must be an integer -2147483648..2147483647 (Go's int on a 32-bit node"),
    ('{"Backend": {"Type": "vxlan", "Port": -2147483649}}',
     "Backend.Port must be an integer -2147483648..2147483647"),
    ('{"Backend": {"Type": "vxlan", "VNI": 4294967297}}',
     "Backend.VNI must be an integer 0..16777215"),
    ('{"Backend": {"Type": "wireguard", "MTU": 9223372036854775807}}',
     "Backend.MTU must be an integer -2147483648..2147483647"),
    # udp's Port reaches a UDP socket (flannel's udp backend runs on amd64 alone, a 32-bit
    # node has none): Go refuses a port outside 0..65535 (EINVAL), and a Port of 0 binds
    # some free port while every node sends to port 0.
    ('{"Backend": {"Type": "udp", "Port": 4294967296}}',
     "Backend.Port must be an integer 1..65535"),
    ('{"Backend": {"Type": "udp", "Port": 65536}}', "Backend.Port must be an integer 1..65535"),
    ('{"Backend": {"Type": "udp", "Port": 0}}', "Backend.Port must be an integer 1..65535"),
    ('{"Backend": {"Type": "udp", "Port": -8285}}', "Backend.Port must be an integer 1..65535"),
    ('{"SubnetLen": -0}', "SubnetLen must be written without a sign, got -0"),
    ('{"SubnetMin": "10.42.0.0/24"}', "SubnetMin must be an IPv4 address string"),
    ('{"SubnetMax": "fd42::8:0"}', "SubnetMax must be an IPv4 address string"),
    ('{"IPv6SubnetMax": "fd42::/64"}', "IPv6SubnetMax must be an IPv6 address string"),
    # flannel v0.21 to v0.24 decode Networks/IPv6Networks (each spelling) as lists of
    # CIDRs before emptying them, and stop on anything else (v0.25 ignores them).
    ('{"Networks": "10.42.0.0/16"}',
     'Networks must be null or a list of IPv4 CIDR strings (flannel v0.21 to v0.24'),
    ('{"ipv6networks": {}}', "ipv6networks must be null or a list of IPv6 CIDR strings"),
    ('{"IPv6Networks": [1, "fd42::1/56"]}', "IPv6Networks must be null or a list of IPv6"),
    ('{"networks": ["fd42::/56"]}', "networks must be null or a list of IPv4 CIDR strings"),
    ('{"Networks": ["10.42.0.0\\/16"]}', "Networks must be written without JSON escapes"),
    ('{"Backend": "vxlan"}', "Backend must be an object with a Type"),
    ('{"Backend": {"Type": 1}}', "Backend must be an object whose Type is a string"),
    ('{"Network": "10.42.0.0/16", "network": "10.244.0.0/16"}',
     "'Network' and 'network' are both flannel's Network"),
    ('{"Backend": {"Type": "vxlan", "type": "host-gw"}}',
     "'Backend.Type' and 'Backend.type' are both flannel's Type"),
    # flannel hands VNI to netlink as a uint32 (the kernel takes VXLAN IDs below 2**24) and
    # names its devices flannel.VNI / flannel-v6.VNI (at most 15 characters); it hands Port
    # over as 16 bits (vishvananda/netlink: htons(uint16(Port))), so 70000 would be 4464.
    ('{"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan", "VNI": 16777216}}',
     "Backend.VNI must be an integer 0..16777215 (a VXLAN ID"),
    ('{"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan", "VNI": -1}}',
     "Backend.VNI must be an integer 0..16777215 (a VXLAN ID"),
    ('{"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan", "VNI": 10000000}}',
     "Backend.VNI must be at most 9999999 (flannel names its vxlan device flannel.VNI, "
     "and flannel.10000000 is longer than the kernel's 15 characters"),
    ('{"Network": "10.42.0.0/16", "EnableIPv6": true, "IPv6Network": "fd42::/56", '
     '"Backend": {"Type": "VXLAN", "vni": 10000}}',
     "Backend.VNI 10000 names flannel's vxlan device flannel-v6.10000"),
    # flannel's wireguard backend: Mode is one of four words (else "no valid Mode
    # configured"), PSK a WireGuard key (wgtypes.ParseKey), ports and the keepalive go to
    # the kernel as 16 bits (a ListenPort of 0 is advertised to the peers as port 0).
    ('{"Backend": {"Type": "wireguard", "Mode": "Auto"}}',
     'Backend.Mode must be one of "separate", "auto", "ipv4", "ipv6"'),
    ('{"Backend": {"Type": "wireguard", "PSK": "not-a-key"}}',
     "Backend.PSK must be a WireGuard key (32 bytes in base64)"),
    ('{"Backend": {"Type": "wireguard", "ListenPort": 70000}}',
     "Backend.ListenPort must be an integer 1..65535"),
    ('{"Backend": {"Type": "wireguard", "listenportv6": 0}}',
     "Backend.ListenPortV6 must be an integer 1..65535"),
    ('{"Backend": {"Type": "wireguard", "PersistentKeepaliveInterval": 65536}}',
     "Backend.PersistentKeepaliveInterval must be an integer 0..65535"),
    # The other backends flannel registers decode Backend into typed structs too
    # (pkg/backend/ipsec, ipip, udp, extension); ipsec refuses a PSK under 96 bytes.
    ('{"Backend": {"Type": "ipsec", "UDPEncap": "yes"}}', "Backend.UDPEncap must be true or false"),
    ('{"Backend": {"Type": "ipsec", "PSK": "short"}}',
     "Backend.PSK must be a string of at least 96 bytes"),
    # (a null PSK: Go keeps "", which flannel's ipsec backend finds too short)
    ('{"Backend": {"Type": "ipsec", "PSK": null}}',
     "Backend.PSK must be a string of at least 96 bytes (flannel's ipsec backend reads it "
     "as its PSK; Go keeps \"\" for a null), got null"),
    ('{"Backend": {"Type": "ipip", "DirectRouting": 1}}',
     "Backend.DirectRouting must be true or false (flannel's ipip backend"),
    ('{"Backend": {"Type": "udp", "Port": "8285"}}', "Backend.Port must be an integer"),
    ('{"Backend": {"Type": "tencent-vpc", "AccessKeyID": 1}}',
     "Backend.AccessKeyID must be a string"),
    ('{"Backend": {"Type": "extension", "PostStartupCommand": ["tailscale", "up"]}}',
     "Backend.PostStartupCommand must be a string"),
    ('{"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan", "Port": 70000}}',
     "Backend.Port must be at most 65535 (flannel hands it to the kernel as 16 bits: "
     "70000 would be port 4464) (flannel's vxlan backend reads it as its Port), got 70000"),
])
def test_values_flannel_would_refuse_or_misread_are_errors(
    tmp_path: Path, text: str, message: str
) -> None:
    backend = FlannelBackend(path=_file(tmp_path, text))
    with pytest.raises(BackendError, match=r"flannel would not read net-conf\.json") as info:
        backend.observe()
    assert message in str(info.value)
    p = Plan(changes=[Change.add(FlannelConfig(backend.target, enable_nftables=True))])
    (problem,) = backend.check(p)
    assert message in problem


@pytest.mark.parametrize(("option", "expected", "said"), [
    ("MTU", "-2147483648..2147483647", "32-bit node"),
    ("Port", "-2147483648..2147483647", "32-bit node"),
    ("VNI", "0..16777215", "VXLAN ID"),  # (its own range is narrower)
])
def test_an_int_option_beyond_a_32_bit_node_s_int_is_refused_before_it_is_written(
    tmp_path: Path, option: str, expected: str, said: str
) -> None:
    """flannel decodes vxlan's VNI, Port and MTU as Go ints: 32 bits on an armhf node,
    whose flannel stops on 2147483648 ("cannot unmarshal number"), where a 64-bit node
    takes it; k3snet wrote it, and every 32-bit node of the cluster lost its network."""
    path = _file(tmp_path, K3S_VXLAN)
    backend = FlannelBackend(path=path, allow_disruptive=True)
    wanted = FlannelConfig(backend.target, backend_type="vxlan",
                           backend_options={option: 1 << 31})
    p = plan(backend.observe(), State(owned=[wanted]))
    (problem,) = backend.check(p)
    assert f"Backend.{option} must be an integer {expected}" in problem
    with pytest.raises(PlanError, match=said):  # (refused before anything is read)
        backend.apply(p)
    assert path.read_text() == K3S_VXLAN


def test_a_mis_cased_key_is_read_as_flannel_reads_it(tmp_path: Path) -> None:
    """Go's encoding/json matches "network" to the Network field; so does k3snet."""
    path = _file(tmp_path, '{"network": "10.244.0.0/16", "backend": {"type": "vxlan"}}')
    backend = FlannelBackend(path=path, allow_disruptive=True)
    (foreign,) = backend.observe().foreign
    assert str(foreign.network) == "10.244.0.0/16"
    assert foreign.backend_type == "vxlan"
    (note,) = _seed_plan(backend).conflicts  # not "no changes"
    assert "disagrees with flannel's Network 10.244.0.0/16" in str(note.reason)
    # Setting the key would need a second spelling of it: refused, with the rename.
    p = plan(backend.observe(), State(owned=[FlannelConfig(backend.target,
                                                           network="10.42.0.0/16")]))
    (problem,) = backend.check(p)
    assert "spells it 'network', which flannel reads as Network" in problem
    with pytest.raises(PlanError, match="rename it to 'Network'"):
        backend.apply(p)
    mtu = FlannelConfig(backend.target, backend_type="vxlan", backend_options={"MTU": 1400})
    with pytest.raises(PlanError, match="spells it 'backend'"):
        backend.apply(plan(backend.observe(), State(owned=[mtu])))
    path.write_text('{"Network": "10.42.0.0/16", "Backend": {"type": "vxlan"}}')
    with pytest.raises(PlanError, match=r"spells it 'type', which flannel reads as Type"):
        backend.apply(plan(backend.observe(), State(owned=[mtu])))
    assert path.read_text() == '{"Network": "10.42.0.0/16", "Backend": {"type": "vxlan"}}'
    # A vxlan option is matched as flannel's backend matches it: "mtu" is MTU.
    path.write_text('{"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan", "mtu": 1400}}')
    assert plan(backend.observe(), State(owned=[mtu])).empty


@pytest.mark.parametrize(("config", "message"), [
    ({"extra": {"backend": {"Type": "extension", "PreStartupCommand": "touch /tmp/x"}}},
     "extra key 'backend' is flannel's Backend"),
    ({"extra": {"enablenftables": True}}, "extra key 'enablenftables' is flannel's EnableNFTables"),
    ({"extra": {"SUBNETLEN": 24}}, "give it as 'SubnetLen'"),
    ({"extra": {"\u017fubnetLen": 24}}, "is flannel's SubnetLen"),  # Go folds long s to s
    ({"backend_type": "vxlan", "backend_options": {"type": "extension"}},
     "flannel reads 'type' as Type"),
    ({"backend_type": "vxlan", "backend_options": {"vni": 2, "VNI": 3}},
     "'VNI' and 'vni' are one option to flannel"),
])
def test_a_key_go_matches_to_a_flannel_field_is_refused_in_another_spelling(
    tmp_path: Path, config: dict[str, Any], message: str
) -> None:
    """flannel's Go decoding matches keys case-insensitively: extra {"backend": ...} is its
    Backend, and used to get past the checks made on "Backend" (the extension backend's
    commands were written to a file without a Backend, with allow_disruptive)."""
    text = '{"Network": "10.42.0.0/16"}'
    path = _file(tmp_path, text)
    backend = FlannelBackend(path=path, allow_disruptive=True)
    with pytest.raises(ModelError, match=re.escape(message)):
        FlannelConfig(backend.target, **config)
    assert path.read_text() == text


@settings(max_examples=examples(60), deadline=None)
@given(field=st.sampled_from(FLANNEL_FIELDS), flips=st.lists(st.booleans(), min_size=14,
                                                               max_size=14))
def test_every_spelling_of_a_flannel_field_in_extra_but_its_own_is_refused(
    field: str, flips: list[bool]
) -> None:
    key = "".join(c.swapcase() if flip else c for c, flip in zip(field, flips, strict=False))
    if key == field:
        return
    with pytest.raises(ModelError, match=f"is flannel's {field} "):
        FlannelConfig("file:/etc/flannel.json", extra={key: 24})


@pytest.mark.parametrize("backend", [
    {"type": "vxlan"},  # no "Type": not modelled, kept verbatim in extra
    {"Type": "vxlan", "vni": 1, "VNI": 2},  # two spellings of one option
    {"Type": "vxlan", "type": "extension"},  # two spellings of Type
])
def test_a_backend_kept_verbatim_in_extra_is_met_only_by_a_backend_holding_its_members(
    tmp_path: Path, backend: dict[str, Any]
) -> None:
    """A Backend in extra that FlannelConfig does not model (no Type it reads, or a key
    spelled twice) was "met by foreign" whatever Backend the file held: the plan said
    nothing to do while flannel ran host-gw. It is met only by a Backend holding each
    of its members; otherwise a change is planned (and the write judged as any other)."""
    text = '{"Network": "10.42.0.0/16", "Backend": {"Type": "host-gw"}}'
    path = _file(tmp_path, text)
    flannel = FlannelBackend(path=path, allow_disruptive=True)
    wanted = FlannelConfig(flannel.target, extra={"Backend": backend})
    assert wanted.backend_type is None
    p = plan(flannel.observe(), State(owned=[wanted]))
    assert not p.notes
    assert len(p.changes) == 1
    (problem,) = flannel.check(p)  # flannel would read another Backend than k3snet's
    assert "Go's JSON decoding matches keys case-insensitively" in problem
    assert path.read_text() == text
    # Met by a Backend holding each member as flannel reads it, whatever else it holds.
    path.write_text(json.dumps({"Network": "10.42.0.0/16",
                                "Backend": {"TYPE": "vxlan", "VNI": 1, "Port": 1}}))
    again = plan(flannel.observe(), State(owned=[wanted]))
    if backend == {"type": "vxlan"}:
        (note,) = again.notes
        assert note.status == "met"
        assert not again.changes
    else:  # VNI 2, Type extension: not what the file holds
        assert again.changes
        assert not again.notes


def test_observed_options_flannel_reads_as_one_are_kept_as_found() -> None:
    """A config read (never refused: it is reported as found) whose Backend holds two
    spellings of one option keeps its Backend verbatim, as for any other value k3snet
    does not model."""
    members = {"Network": "10.42.0.0/16", "Backend": {"Type": "host-gw", "vni": 1, "VNI": 2}}
    config = FlannelConfig.from_members("file:/etc/flannel.json", members)
    assert config.backend_type is None
    assert config.extra.to_dict() == {"Backend": {"Type": "host-gw", "vni": 1, "VNI": 2}}
    assert str(config.network) == "10.42.0.0/16"


def test_enable_nftables_is_refused_for_a_nodes_file_k3s_reads_without_it(
    tmp_path: Path
) -> None:
    """K3s' embedded flannel builds its iptables traffic manager whatever the file says
    (pkg/agent/flannel): EnableNFTables written there changed nothing yet was applied."""
    path = _file(tmp_path, K3S_VXLAN)
    backend = FlannelBackend(path=path, allow_disruptive=True)
    for value in (True, False):
        p = plan(backend.observe(), State(owned=[FlannelConfig(backend.target,
                                                               enable_nftables=value)]))
        (problem,) = backend.check(p)
        assert "ignores EnableNFTables" in problem
        assert "cni.flannel.enableNFTables" in problem
        with pytest.raises(PlanError, match="ignores EnableNFTables"):
            backend.apply(p)
        assert path.read_text() == K3S_VXLAN
    # One an earlier k3snet wrote is still taken back.
    owned = K3S_VXLAN.rstrip()[:-1] + (',\n"EnableNFTables": true,\n'
                                       '"k3snet.io/owned": {"EnableNFTables": null},\n'
                                       '"k3snet.io/written": {"EnableNFTables": "true"}\n}\n')
    path.write_text(owned)
    assert backend.observe().owned == frozenset({FlannelConfig(backend.target,
                                                               enable_nftables=True)})
    _converge(backend, State())
    assert "EnableNFTables" not in json.loads(path.read_text())


def test_enable_nftables_is_written_to_a_file_a_flanneld_of_ones_own_reads(
    tmp_path: Path
) -> None:
    """K3s started with --flannel-backend=none runs no flannel; a flanneld of one's own
    (upstream's, --kube-subnet-mgr --net-config-path=FILE) reads EnableNFTables from the
    file: with reader="flanneld" the backend writes it, and names flanneld to restart."""
    path = _file(tmp_path, K3S_VXLAN)
    backend = FlannelBackend(path=path, reader="flanneld")
    wanted = FlannelConfig(backend.target, enable_nftables=True)
    p = plan(backend.observe(), State(owned=[wanted]))
    assert backend.check(p) == ()
    reader = backend.restart_needed(p.changes[0])
    assert isinstance(reader, str)
    assert reader.startswith("flanneld")
    backend.apply(p)
    assert json.loads(path.read_text())["EnableNFTables"] is True
    (restart,) = backend.pending_restarts()
    assert restart.workload.startswith("flanneld")
    assert "K3s" not in restart.reason
    # An unknown reader is refused.
    assert FlannelBackend.check_options({"path": str(path), "reader": "k3s-agent"}) == [
        ("reader", "reader must be one of k3s, flanneld, got 'k3s-agent'")]


def test_backend_options_flannel_would_refuse_are_never_written(tmp_path: Path) -> None:
    """flannel's vxlan backend stops on {"DirectRouting": "true"} ("error decoding VXLAN
    backend config"): k3snet refuses to write it, and reads options of other types as is."""
    path = _file(tmp_path, K3S_VXLAN)
    backend = FlannelBackend(path=path)
    wanted = FlannelConfig(backend.target, backend_type="vxlan",
                           backend_options={"DirectRouting": "true", "MTU": 1400.5})
    p = plan(backend.observe(), State(owned=[wanted]))
    (problem,) = backend.check(p)
    assert "Backend.DirectRouting must be true or false" in problem
    assert "Backend.MTU must be an integer" in problem
    with pytest.raises(PlanError, match="DirectRouting must be true or false"):
        backend.apply(p)
    assert path.read_text() == K3S_VXLAN
    unknown = _file(tmp_path, '{"Backend": {"Type": "host-gw", "VNI": "x", "MTU": null}}', "b")
    (foreign,) = FlannelBackend(path=unknown).observe().foreign
    assert foreign.backend_options.to_dict() == {"VNI": "x", "MTU": None}


def test_a_vxlan_id_or_port_the_kernel_cannot_take_is_never_written_even_if_allowed(
    tmp_path: Path
) -> None:
    path = _file(tmp_path, K3S_DUAL_STACK)
    backend = FlannelBackend(path=path, allow_disruptive=True)
    for options, message in (({"VNI": 1 << 24}, "Backend.VNI must be an integer 0..16777215"),
                             ({"VNI": 1 << 40}, "Backend.VNI must be an integer 0..16777215"),
                             ({"VNI": 10000}, "names flannel's vxlan device flannel-v6.10000"),
                             ({"Port": 1 << 16}, "65536 would be port 8472)")):
        wanted = FlannelConfig(backend.target, backend_type="vxlan", backend_options=options)
        (problem,) = backend.check(plan(backend.observe(), State(owned=[wanted])))
        assert message in problem
    assert path.read_text() == K3S_DUAL_STACK
    # 9999 fits flannel-v6.9999: written.
    _converge(backend, State(owned=[FlannelConfig(backend.target, backend_type="vxlan",
                                                  backend_options={"VNI": 9999})]))
    assert json.loads(path.read_text())["Backend"]["VNI"] == 9999


def test_wireguard_options_flannel_takes_are_read(tmp_path: Path) -> None:
    key = "YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE="  # 32 bytes
    text = ('{"Network": "10.42.0.0/16", "Backend": {"Type": "wireguard", "Mode": "ipv4", '
            f'"PSK": "{key}", "ListenPort": 51820, "PersistentKeepaliveInterval": 0}}}}')
    (foreign,) = FlannelBackend(path=_file(tmp_path, text)).observe().foreign
    assert foreign.backend_options.to_dict() == {
        "Mode": "ipv4", "PSK": key, "ListenPort": 51820, "PersistentKeepaliveInterval": 0}


def test_a_vxlan_port_below_one_is_the_kernels_default_port_so_not_disruptive(
    tmp_path: Path
) -> None:
    # netlink sends IFLA_VXLAN_PORT only for Port > 0: 0 and below leave the kernel's 8472.
    path = _file(tmp_path, K3S_VXLAN.replace('"Type": "vxlan"', '"Type": "vxlan", "Port": -1'))
    backend = FlannelBackend(path=path)
    same = Change.add(FlannelConfig(backend.target, backend_type="vxlan",
                                    backend_options={"Port": 8472}))
    assert backend.disruptive(same) is None


# K3s' tailscale integration (--vpn-auth) runs flannel's extension backend with commands.
K3S_TAILSCALE = K3S_VXLAN.replace(
    '"Type": "vxlan"', '"Type": "extension",\n\t"PostStartupCommand": "tailscale set '
    '--accept-routes --advertise-routes=10.42.0.0/24",\n\t"ShutdownCommand": "tailscale down"')


@pytest.mark.parametrize(("text", "config"), [
    (K3S_VXLAN, {"backend_type": "extension",
                 "backend_options": {"PostStartupCommand": "touch /tmp/k3snet-pwned"}}),
    (K3S_VXLAN, {"backend_type": "vxlan", "backend_options": {"preStartupCommand": "id"}}),
    (K3S_TAILSCALE, {"backend_type": "extension",
                     "backend_options": {"SubnetAddCommand": "sh -c id"}}),
    # A Backend given as an extra key (no Type to model it by) is merged all the same.
    (K3S_TAILSCALE, {"extra": {"Backend": {"PostStartupCommand": "id"}}}),
    # Leftover commands of an old extension setup come alive with the type.
    (K3S_VXLAN.replace('"Type": "vxlan"', '"Type": "vxlan", "SubnetRemoveCommand": "id"'),
     {"backend_type": "extension"}),
])
def test_flannel_extension_commands_are_never_written_as_flannel_runs_them_as_root(
    tmp_path: Path, text: str, config: dict[str, Any]
) -> None:
    # pkg/backend/extension runs Pre/PostStartupCommand, SubnetAdd/RemoveCommand as root on
    # every node: a spec (which anyone who may edit its ConfigMap writes) must not reach them.
    path = _file(tmp_path, text)
    backend = FlannelBackend(path=path, allow_disruptive=True)
    p = Plan(changes=[Change.add(FlannelConfig(backend.target, **config))])
    (problem,) = backend.check(p)
    assert "flannel runs the extension backend's commands as root" in problem
    with pytest.raises(PlanError, match="extension backend's commands"):
        backend.apply(p)
    assert path.read_text() == text


def test_an_extension_config_keeps_its_commands_while_other_keys_change(tmp_path: Path) -> None:
    path = _file(tmp_path, K3S_TAILSCALE)
    backend = FlannelBackend(path=path)
    _converge(backend, State(owned=[FlannelConfig(backend.target, backend_type="extension",
                                                  extra={"x-site": "rack-1"})]))
    assert json.loads(path.read_text())["Backend"]["PostStartupCommand"].startswith("tailscale")
    _converge(backend, State())
    assert path.read_text() == K3S_TAILSCALE


def test_a_null_go_skips_is_read_as_flannels_default(tmp_path: Path) -> None:
    """Go's decoder leaves a bool or uint field as it was for null (EnableIPv4 stays
    true) and sets a pointer to nil: flannel runs with such a file, so k3snet reads it."""
    original = ('{"Network": "10.42.0.0/16", "EnableIPv4": null, "EnableIPv6": null, '
                '"SubnetLen": null, "IPv6SubnetMin": null, "Backend": {"Type": "vxlan"}}')
    path = _file(tmp_path, original)
    backend = FlannelBackend(path=path)
    (foreign,) = backend.observe().foreign
    assert foreign.enable_ipv4 is None
    assert "SubnetLen" not in foreign.extra
    assert "EnableIPv4 (true -> false)" in str(backend.disruptive(
        Change.add(FlannelConfig(backend.target, enable_ipv4=False))))
    same = Change.add(FlannelConfig(backend.target, enable_ipv4=True, enable_ipv6=False))
    assert backend.disruptive(same) is None
    assert backend.check(Plan(changes=[same])) == ()
    backend.apply(Plan(changes=[same]))
    assert json.loads(path.read_text())["EnableIPv6"] is False


def test_a_backend_type_in_capitals_is_the_backend_flannel_runs(tmp_path: Path) -> None:
    """flannel's backend manager looks Backend.Type up lower-cased (pkg/backend/manager.go
    GetBackend): "VXLAN" runs vxlan, so asking for vxlan is met, not a disruptive change."""
    original = '{"Network": "10.42.0.0/16", "Backend": {"Type": "VXLAN", "VNI": 1}}'
    path = _file(tmp_path, original)
    backend = FlannelBackend(path=path)
    (foreign,) = backend.observe().foreign
    assert foreign.backend_type == "vxlan"
    assert plan(backend.observe(), State(owned=[FlannelConfig(backend.target,
                                                              backend_type="vxlan")])).changes == ()
    mtu = FlannelConfig(backend.target, backend_type="vxlan", backend_options={"MTU": 1400})
    p = plan(backend.observe(), State(owned=[mtu]))
    (change,) = p.changes
    assert backend.disruptive(change) is None
    assert backend.check(p) == ()
    backend.apply(p)
    assert json.loads(path.read_text())["Backend"] == {"Type": "VXLAN", "VNI": 1, "MTU": 1400}
    backend.apply(plan(backend.observe(), State()))
    assert path.read_text() == original
    other = Change.add(FlannelConfig(backend.target, backend_type="host-gw"))
    assert 'Backend.Type ("vxlan" -> "host-gw")' in str(backend.disruptive(other))
    # Go's strings.ToLower maps U+0130 (dotted capital I) to "i" alone.
    dotted = FlannelConfig.from_members(backend.target, {"Backend": {"Type": "\u0130P\u0130P"}})
    assert dotted.backend_type == "ipip"


@pytest.mark.parametrize("members", [
    # A uint flannel's kube subnet manager never reads: any unsigned number is read (the
    # etcd manager's "SubnetLen must be less than /31" is not net-conf.json's).
    '"SubnetLen": 40, "IPv6SubnetLen": 200',
    # No field of flannel's since v0.25.0; v0.21 to v0.24 emptied what the file held once
    # decoded (null, or a list of CIDRs: host bits masked off).
    '"Networks": ["10.42.0.0/16"], "IPv6Networks": ["fd42::1/56", "10.42.0.0/16"]',
    '"networks": ["10.42.0.1/16"], "Networks": null, "ipv6networks": []',
    # flannel's ip.IP4 takes an address net.ParseIP reads with an IPv4 form (To4), its
    # ip.IP6 any address net.ParseIP reads.
    '"SubnetMin": "::ffff:10.42.8.0", "IPv6SubnetMin": "10.42.8.0", "IPv6SubnetMax": "::1"',
])
def test_keys_flannel_reads_without_judging_them_are_read_as_it_reads_them(
    tmp_path: Path, members: str
) -> None:
    """flannel starts on these (Go decodes SubnetLen as a uint; Networks is no field of
    its config), so k3snet reads them as they are, not as an error naming them."""
    text = '{"Network": "10.42.0.0/16", ' + members + ', "Backend": {"Type": "vxlan"}}'
    path = _file(tmp_path, text)
    backend = FlannelBackend(path=path, allow_disruptive=True)
    (foreign,) = backend.observe().foreign
    found = json.loads(text)
    assert foreign.extra.to_dict() == {k: v for k, v in found.items()
                                       if k not in ("Network", "Backend")}
    mtu = FlannelConfig(backend.target, backend_type="vxlan", backend_options={"MTU": 1400})
    _converge(backend, State(owned=[mtu]))
    _converge(backend, State())
    assert path.read_text() == text


def test_networks_in_any_spelling_is_a_key_of_its_own_to_flannel() -> None:
    """Go matches a key to a field case-insensitively, and flannel's config has no
    Networks field: "networks" beside "Networks" are two unknown keys, not one."""
    assert "Networks" not in FLANNEL_FIELDS
    assert "IPv6Networks" not in FLANNEL_FIELDS
    config = FlannelConfig("file:/etc/flannel.json", extra={"networks": [], "Networks": []})
    assert config.keys == ("Networks", "networks")
    read = FlannelConfig.from_members("file:/etc/flannel.json",
                                      {"networks": 1, "IPV6NETWORKS": 2})
    assert read.extra.to_dict() == {"IPV6NETWORKS": 2, "networks": 1}


def test_flannel_values_folds_like_go() -> None:
    assert flannel_values({"SUBNETLEN": 24, "enableipv6": False, "x-other": 1}) == {
        "SubnetLen": 24, "EnableIPv6": False, "x-other": 1}
    assert flannel_values({"\u017fubnetLen": 24}) == {"SubnetLen": 24}  # long s folds to s


# ---------------------------------------------------------------- the merge as a property

# Each vxlan option of the Go type flannel decodes it into; found, also an unknown one of
# any type (k3snet keeps it, and never writes one: flannel would ignore it).
_WANTED = {"VNI": st.integers(0, 9000), "Port": st.integers(0, 9000),
           "MTU": st.integers(0, 9000), "DirectRouting": st.booleans(), "GBP": st.booleans()}
_OPTIONS = st.fixed_dictionaries({}, optional={
    **_WANTED, "x-vendor": st.integers(0, 9000) | st.booleans() | st.text("ab", max_size=2),
})


@given(
    found=_OPTIONS,
    wanted=st.fixed_dictionaries({}, optional=_WANTED),
    indent=st.sampled_from([None, 0, 2, "\t"]),
)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_setting_backend_options_keeps_the_others_and_gives_back_every_byte(
    tmp_path: Path, found: dict[str, Any], wanted: dict[str, Any], indent: int | str | None
) -> None:
    original = json.dumps({"Network": "10.42.0.0/16",
                           "Backend": {"Type": "vxlan", **found}}, indent=indent) + "\n"
    path = _file(tmp_path, original, "property.json")
    backend = FlannelBackend(path=path, allow_disruptive=True)  # a new VNI or Port is disruptive
    desired = State(owned=[FlannelConfig(backend.target, backend_type="vxlan",
                                         backend_options=wanted)])
    _converge(backend, desired)
    assert json.loads(path.read_text())["Backend"] == {"Type": "vxlan", **found, **wanted}
    assert plan(backend.observe(), desired).empty
    _converge(backend, State())
    assert path.read_text() == original
