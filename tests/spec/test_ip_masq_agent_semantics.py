"""``masquerade.ipMasqAgentConfig`` reads a config as ip-masq-agent itself reads it.

ip-masq-agent (kubernetes-sigs/ip-masq-agent, ``cmd/ip-masq-agent/ip-masq-agent.go``)
starts from its defaults and lets Go's ``json.Unmarshal`` overwrite the fields the
file gives: a ``null`` list becomes an empty one, and ``cidrLimit`` (default 64)
bounds ``nonMasqueradeCIDRs``, the whole config being refused beyond it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from k3snet import MasqueradeRule, Spec, SpecError, load_ip_masq_agent_config
from k3snet.spec import compile as compile_spec
from k3snet.spec.load import imported_files

# ip-masq-agent's own example config (agent-config/config in its repository).
UPSTREAM_EXAMPLE = """\
nonMasqueradeCIDRs:
  - 10.0.0.0/8
  - 172.16.0.0/12
  - 192.168.0.0/16
cidrLimit: 64
masqLinkLocal: false
masqLinkLocalIPv6: false
resyncInterval: 60s
"""


@pytest.mark.parametrize("text", [
    "nonMasqueradeCIDRs:\nmasqLinkLocal: true\n",
    "nonMasqueradeCIDRs: null\n",
    "nonMasqueradeCIDRs: ~\n",
    '{"nonMasqueradeCIDRs": null}',
])
def test_a_null_non_masquerade_list_is_empty_as_go_decodes_it(text: str) -> None:
    # Go's json.Unmarshal sets a slice to nil for null: ip-masq-agent then exempts only
    # link-local; k3snet used to exempt its eleven default ranges instead.
    assert load_ip_masq_agent_config(text).non_masquerade_cidrs == ()


def test_a_null_non_masquerade_list_in_a_file_masquerades_all_but_link_local(
        tmp_path: Path) -> None:
    path = tmp_path / "ip-masq-agent"
    path.write_text("nonMasqueradeCIDRs:\n")
    spec = Spec.from_dict({"masquerade": {"ipMasqAgentConfig": str(path)}})
    (rule,) = [o for o in compile_spec(spec).owned if isinstance(o, MasqueradeRule)]
    assert rule.describe() == "masquerade 10.42.0.0/16 -> any except 10.42.0.0/15,169.254.0.0/16"


def test_a_null_link_local_setting_keeps_its_default() -> None:
    # Go leaves a bool as it was for null.
    config = load_ip_masq_agent_config("masqLinkLocal: null\nnonMasqueradeCIDRs: []\n")
    assert config.masq_link_local is False


def test_ip_masq_agents_own_example_config_is_imported(tmp_path: Path) -> None:
    path = tmp_path / "ip-masq-agent"
    path.write_text(UPSTREAM_EXAMPLE)
    config = load_ip_masq_agent_config(str(path))
    assert [str(c) for c in config.non_masquerade_cidrs] == [
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
    assert config.cidr_limit == 64


def _cidrs(count: int) -> str:
    return "".join(f"  - 10.{i}.0.0/16\n" for i in range(count))


def test_more_cidrs_than_the_cidr_limit_are_refused_as_ip_masq_agent_refuses_them() -> None:
    # ip-masq-agent's validate() refuses the whole config (and keeps its defaults).
    with pytest.raises(SpecError) as info:
        load_ip_masq_agent_config("nonMasqueradeCIDRs:\n" + _cidrs(65))
    assert [str(p) for p in info.value.problems] == [
        "nonMasqueradeCIDRs: 65 CIDRs, more than the cidrLimit of 64; ip-masq-agent "
        "refuses this config (raise cidrLimit)"]
    with pytest.raises(SpecError):
        load_ip_masq_agent_config("cidrLimit: 2\nnonMasqueradeCIDRs:\n" + _cidrs(3))
    assert len(load_ip_masq_agent_config(
        "cidrLimit: 100\nnonMasqueradeCIDRs:\n" + _cidrs(65)).non_masquerade_cidrs) == 65
    assert len(load_ip_masq_agent_config(
        "nonMasqueradeCIDRs:\n" + _cidrs(64)).non_masquerade_cidrs) == 64


@pytest.mark.parametrize("value", ["'64'", "1.5", "true", "[64]", "64.0"])
def test_a_cidr_limit_that_is_no_count_is_refused(value: str) -> None:
    with pytest.raises(SpecError) as info:
        load_ip_masq_agent_config(f"cidrLimit: {value}\nnonMasqueradeCIDRs: []\n")
    assert [p.path for p in info.value.problems] == ["cidrLimit"]


@pytest.mark.parametrize("value", ["60s", "1m30s", "1.5h", "300ms", ".5s", "-1s", "+2m", "0",
                                   "1us", "1µs", "1ns", "-0", "0s", "5.s", "1\u03bcs", "1m1m"])
def test_a_resync_interval_go_parses_is_read(value: str) -> None:
    # Zero and negative too: ip-masq-agent's validate() checks the CIDRs alone, and its
    # loop sleeps resyncInterval between syncs (time.Sleep of 0 or less returns at once);
    # its rules were in force with such a config, so they are imported.
    config = load_ip_masq_agent_config({"resyncInterval": value, "nonMasqueradeCIDRs": []})
    assert config.resync_interval == value


@pytest.mark.parametrize("value", [60, "60", "", "1d", "s", "1.s5", "1 s", True, None, "1s ",
                                   "00", ".s", "-", "1h-5m", "1S", "-1", "0.0"])
def test_a_resync_interval_go_refuses_makes_the_config_refused(value: object) -> None:
    # metav1.Duration: a JSON string time.ParseDuration reads; a number, null or a text
    # without a unit make json.Unmarshal fail, and ip-masq-agent refuse the whole config.
    with pytest.raises(SpecError) as info:
        load_ip_masq_agent_config({"resyncInterval": value, "nonMasqueradeCIDRs": []})
    assert [p.path for p in info.value.problems] == ["resyncInterval"]


def test_a_spec_key_left_null_keeps_what_the_imported_config_gives() -> None:
    # Null is "not set" everywhere in a spec; next to an import it replaced the imported
    # list with an empty one (masquerading 192.168.0.0/16 after all) and mode with its
    # default.
    imported = {"nonMasqueradeCIDRs": ["192.168.0.0/16"], "masqLinkLocal": True}
    spec = Spec.from_dict({"masquerade": {
        "ipMasqAgentConfig": imported, "nonMasqueradeCIDRs": None, "masqLinkLocal": None,
        "mode": None}})
    assert spec.masquerade == Spec.from_dict(
        {"masquerade": {"ipMasqAgentConfig": imported}}).masquerade
    assert [str(c) for c in spec.masquerade.non_masquerade_cidrs] == ["192.168.0.0/16"]
    assert spec.masquerade.masq_link_local is True
    assert spec.masquerade.mode == "all"


def test_an_import_left_null_is_no_import() -> None:
    # It was read as a file named "None" in the current directory.
    spec = Spec.from_dict({"masquerade": {"ipMasqAgentConfig": None}})
    assert spec.masquerade == Spec().masquerade


@pytest.mark.parametrize("value", [5, True, ["/etc/config/ip-masq-agent"], 1.5])
def test_an_import_that_is_no_path_text_or_mapping_is_refused_unread(
        value: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A file named after the value (5, True) in the current directory was read as the config.
    monkeypatch.chdir(tmp_path)
    if "/" not in str(value):
        (tmp_path / str(value)).write_text("nonMasqueradeCIDRs: [0.0.0.0/0]\n")
    with pytest.raises(SpecError) as info:
        Spec.from_dict({"masquerade": {"ipMasqAgentConfig": value}})
    assert [str(p) for p in info.value.problems] == [
        f"masquerade.ipMasqAgentConfig: expected a path, the config's text or a mapping, "
        f"got {value!r}"]


@pytest.mark.parametrize(("entry", "net"), [
    ("10.0.0.0", "10.0.0.0/32"),               # no prefix length: ipaddress reads a /32
    ("10.0.0.0/255.0.0.0", "10.0.0.0/8"),      # a netmask
    ("10.0.0.0/0.255.255.255", "10.0.0.0/8"),  # a host mask
    (" 10.0.0.0/8", "10.0.0.0/8"),             # spaces around it
    ("10.0.0.0/8 ", "10.0.0.0/8"),
    ("fd00::", "fd00::/128"),
])
def test_a_cidr_go_refuses_makes_the_config_refused_as_ip_masq_agent_refuses_it(
        entry: str, net: str) -> None:
    # validateCIDR() runs Go's net.ParseCIDR on every entry and the agent refuses the
    # whole config (keeping the rules it had); k3snet imported the entry as Python's
    # ipaddress reads it, a list the agent never used.
    with pytest.raises(SpecError) as info:
        load_ip_masq_agent_config({"nonMasqueradeCIDRs": ["192.168.0.0/16", entry]})
    assert [str(p) for p in info.value.problems] == [
        f"nonMasqueradeCIDRs[1]: {entry!r} is not a CIDR as ip-masq-agent reads it (Go's "
        f"net.ParseCIDR: an address, '/' and a prefix length, nothing else, such as {net}); "
        "ip-masq-agent refuses this config"]


@pytest.mark.parametrize(("entry", "shown", "ipv4"), [
    ("::ffff:10.0.0.0/104", "::ffff:a00:0/104", "10.0.0.0/8"),
    ("::ffff:0:0/96", "::ffff:0:0/96", "0.0.0.0/0"),
    ("::ffff:192.168.1.1/128", "::ffff:c0a8:101/128", "192.168.1.1/32"),
])
def test_an_ipv4_mapped_prefix_is_refused_as_the_ipv4_rule_it_becomes_in_ip_masq_agent(
        entry: str, shown: str, ipv4: str) -> None:
    # isIPv6CIDR() asks Go's To4(), not nil for ::ffff:a.b.c.d: the agent writes the entry
    # among its IPv4 rules, which iptables-restore refuses. k3snet exempted it as an IPv6
    # prefix that no IPv6 packet is ever sent to.
    with pytest.raises(SpecError) as info:
        load_ip_masq_agent_config(f"nonMasqueradeCIDRs: ['{entry}']\n")
    assert [str(p) for p in info.value.problems] == [
        f"nonMasqueradeCIDRs[0]: {shown} is an IPv4-mapped IPv6 prefix, which ip-masq-agent "
        "writes among its IPv4 rules (iptables-restore refuses them); list "
        f"{ipv4} instead"]


def test_cidrs_go_reads_are_imported_as_written() -> None:
    config = load_ip_masq_agent_config(
        "nonMasqueradeCIDRs: [10.0.0.0/08, '::/0', 'FD00::/8', '::1.2.3.0/120', 0.0.0.0/0]\n")
    assert [str(c) for c in config.non_masquerade_cidrs] == [
        "10.0.0.0/8", "::/0", "fd00::/8", "::102:300/120", "0.0.0.0/0"]


@pytest.mark.parametrize("value", [
    "2562047h47m16.854775807s", "-2562047h47m16.854775808s", "9223372036854775807ns",
    "2562047h", "1.9999999999999999999h",
])
def test_a_resync_interval_within_a_go_duration_is_read(value: str) -> None:
    config = load_ip_masq_agent_config({"resyncInterval": value, "nonMasqueradeCIDRs": []})
    assert config.resync_interval == value


@pytest.mark.parametrize("value", [
    "100000000000h", "2562047h47m16.854775808s", "-2562047h47m16.854775809s",
    "9223372036854775808ns", "99999999999999999999s", "2562047h2562047h",
])
def test_a_resync_interval_beyond_a_go_duration_makes_the_config_refused(value: str) -> None:
    # time.ParseDuration refuses a total beyond an int64 of nanoseconds (about 292
    # years) as an "invalid duration", and ip-masq-agent the whole config with it.
    with pytest.raises(SpecError) as info:
        load_ip_masq_agent_config({"resyncInterval": value, "nonMasqueradeCIDRs": []})
    assert [str(p) for p in info.value.problems] == [
        f"resyncInterval: {value!r} is longer than a Go duration can be (about 292 years); "
        "ip-masq-agent refuses this config"]


@pytest.mark.parametrize("imported", [["192.168.0.0/16"], []])
@pytest.mark.parametrize("mode", ["destinations", "off"])
def test_an_import_beside_another_mode_is_refused_at_the_mode(
        mode: str, imported: list[str]) -> None:
    # The import's keys are mode all's: merged beside mode destinations, its list was
    # refused at masquerade.nonMasqueradeCIDRs, a key the spec does not have ("only
    # meaningful with mode: all"), and an empty list passed unnoticed.
    with pytest.raises(SpecError) as info:
        Spec.from_dict({"masquerade": {"mode": mode,
                                       "ipMasqAgentConfig": {"nonMasqueradeCIDRs": imported}}})
    assert [str(p) for p in info.value.problems] == [
        f"masquerade.mode: ipMasqAgentConfig imports ip-masq-agent's semantics, mode all, "
        f"not {mode}: drop one of them"]


def test_an_import_beside_mode_all_is_read() -> None:
    spec = Spec.from_dict({"masquerade": {
        "mode": "all", "ipMasqAgentConfig": {"nonMasqueradeCIDRs": ["192.168.0.0/16"]}}})
    assert [str(c) for c in spec.masquerade.non_masquerade_cidrs] == ["192.168.0.0/16"]


@pytest.mark.parametrize("written", ["{path}\n", "  {path}  ", "{path}"])
def test_a_path_with_blank_space_around_it_is_the_file(tmp_path: Path, written: str) -> None:
    # A YAML block scalar (ipMasqAgentConfig: |) ends the path with a newline: it was read
    # as a one-line config, "expected a mapping, got str", and the agent did not watch
    # the file.
    path = tmp_path / "ip-masq-agent"
    path.write_text("nonMasqueradeCIDRs: [192.168.0.0/16]\n")
    document = {"masquerade": {"ipMasqAgentConfig": written.format(path=path)}}
    spec = Spec.from_dict(document)
    assert [str(c) for c in spec.masquerade.non_masquerade_cidrs] == ["192.168.0.0/16"]
    assert imported_files(document) == (str(path),)


@pytest.mark.parametrize("text", ["", "  \n"])
def test_an_empty_import_is_refused_not_read_as_the_agents_defaults(text: str) -> None:
    with pytest.raises(SpecError) as info:
        load_ip_masq_agent_config(text)
    assert [str(p) for p in info.value.problems] == [
        "empty: give a path, the config's text or a mapping"]
