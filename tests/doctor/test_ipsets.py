"""``ipset save`` read for what ``-m set`` matches (no root: recorded texts)."""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from k3snet.doctor import Flow, NodeCapture, NodeState, Verdict, trace
from k3snet.doctor.bundle import AUX_FILES
from k3snet.doctor.ipset import MAX_MEMBERS, IPSetMembers, parse_save

HEALTHY = Path(__file__).parent / "golden" / "healthy"
RULESETS = Path(__file__).parent / "rulesets"
FLOW = Flow("10.42.0.10", "192.168.2.10", port=5432)

# As ipset 7 saves Felix's and kube-router's sets (kube-router's with timeouts).
SAVED = """create cali40all-hosts-net hash:net family inet hashsize 1024 bucketsize 12
add cali40all-hosts-net 192.168.1.5
add cali40all-hosts-net 192.168.1.6
create cali40masq-ipam-pools hash:net family inet hashsize 1024 maxelem 1048576
add cali40masq-ipam-pools 10.42.0.0/16
create cali40all-ipam-pools hash:net family inet hashsize 1024 maxelem 1048576
add cali40all-ipam-pools 10.42.0.0/16
create KUBE-DST-XYZ hash:ip family inet hashsize 1024 maxelem 65536 timeout 0
add KUBE-DST-XYZ 192.168.2.10 timeout 0
create cali60all-hosts-net hash:net family inet6 hashsize 1024 maxelem 1048576
add cali60all-hosts-net fd00:1::5
create with-nomatch hash:net family inet hashsize 1024 maxelem 65536
add with-nomatch 192.168.0.0/16
add with-nomatch 192.168.2.0/24 nomatch
create masked hash:ip family inet hashsize 1024 maxelem 65536 netmask 24
add masked 192.168.2.0
create ports hash:ip,port family inet hashsize 1024 maxelem 65536
add ports 192.168.2.10,tcp:5432
create commented hash:net family inet hashsize 1024 maxelem 65536 comment
add commented 192.168.2.0/24 comment "not a \\"nomatch\\" flag"
"""


def test_sets_of_addresses_are_read_and_the_others_left_unknown() -> None:
    sets = parse_save(SAVED)
    assert ip_address("192.168.1.6") in sets["cali40all-hosts-net"]
    assert ip_address("192.168.2.10") not in sets["cali40all-hosts-net"]
    assert ip_address("10.42.3.4") in sets["cali40masq-ipam-pools"]
    assert ip_address("192.168.2.10") in sets["KUBE-DST-XYZ"]
    assert ip_address("fd00:1::5") in sets["cali60all-hosts-net"]
    assert ip_address("192.168.1.5") not in sets["cali60all-hosts-net"]
    # nomatch takes addresses out of a wider entry, a netmask widens each, a set of
    # address and port is matched on both: not judged, their rules stay unknown.
    assert {"with-nomatch", "masked", "ports"}.isdisjoint(sets)
    # a comment that only says nomatch is not the flag (a conservative reader may
    # still leave the set out; it must never read it as another set's members)
    assert set(sets.get("commented", ())) <= {ip_network("192.168.2.0/24")}


def test_an_unreadable_line_leaves_its_set_out() -> None:
    sets = parse_save("create a hash:net family inet\nadd a 10.0.0.0/8\nadd a 10.1.0.1-10.1.0.9\n"
                      'create b hash:ip family inet\nadd b "10.0.0.1\n'
                      "create c hash:ip family inet\nadd c 10.0.0.1\n")
    assert set(sets) == {"c"}


@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)), max_size=30),
       st.integers(0, 2**32 - 1))
def test_membership_by_prefix_buckets_agrees_with_containment(
        members: list[tuple[int, int]], address: int) -> None:
    networks = [ip_network((value, length), strict=False) for value, length in members]
    got = ip_address(address) in IPSetMembers.of(networks)
    assert got == any(ip_address(address) in network for network in networks)


def test_a_set_of_a_hundred_thousand_members_is_read_and_matched() -> None:
    lines = ["create big hash:ip family inet hashsize 131072 maxelem 200000"]
    lines += [f"add big 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(100_000)]
    members = parse_save("\n".join(lines))["big"]
    assert len(members) == 100_000
    assert ip_address("10.1.134.159") in members  # 99 999
    assert ip_address("10.1.134.160") not in members


def _state(**texts: str) -> NodeState:
    base = NodeCapture.read_dir(HEALTHY)
    merged = {k: v for k, v in base.texts.items()
              if not k.startswith("iptables-") and k != "nft-ruleset.json"}
    merged.update(texts)
    return NodeState.from_capture(NodeCapture(merged))


def test_felix_s_host_exclusion_is_evaluated_from_the_saved_sets() -> None:
    nat = (RULESETS / "calico-nat.save").read_text().replace(
        "dst -j MASQUERADE", "dst -m set ! --match-set cali40all-hosts-net dst -j MASQUERADE")
    assert "ipset.save" in AUX_FILES
    unknown = trace(_state(**{"iptables-legacy-v4.save": nat}), FLOW)
    assert unknown.verdict is Verdict.UNKNOWN, unknown.render()
    reaches = trace(_state(**{"iptables-legacy-v4.save": nat, "ipset.save": SAVED}), FLOW)
    assert reaches.verdict is Verdict.REACHES, reaches.render()
    assert str(reaches.source_seen) == "192.168.1.5"
    host = SAVED.replace("add cali40all-hosts-net 192.168.1.6", "add cali40all-hosts-net "
                         "192.168.2.10")
    blocked = trace(_state(**{"iptables-legacy-v4.save": nat, "ipset.save": host}), FLOW)
    assert blocked.verdict is Verdict.BLOCKED, blocked.render()


def test_the_kernel_s_pool_sets_are_what_rules_match_over_the_pools_read() -> None:
    nat = (RULESETS / "calico-nat.save").read_text()
    # The IP pools say the destination's network is a pool; the kernel's set does not
    # hold it (yet): Felix's rule, as the kernel runs it, masquerades.
    pools = ('{"items": [{"spec": {"cidr": "10.42.0.0/16", "natOutgoing": true}},'
             ' {"spec": {"cidr": "192.168.2.0/24"}}]}')
    state = _state(**{"iptables-legacy-v4.save": nat, "calico-ippools.json": pools,
                      "ipset.save": SAVED})
    result = trace(state, FLOW)
    assert result.verdict is Verdict.REACHES, result.render()


def test_only_the_sets_the_captured_rules_name_are_read() -> None:
    nat = (RULESETS / "calico-nat.save").read_text().replace(
        "dst -j MASQUERADE", "dst -m set ! --match-set cali40all-hosts-net dst -j MASQUERADE")
    state = _state(**{"iptables-legacy-v4.save": nat, "ipset.save": SAVED})
    assert "cali40all-hosts-net" in state.kernel_ipsets
    assert "KUBE-DST-XYZ" not in state.kernel_ipsets  # no rule names it: never parsed
    assert set(state.kernel_ipsets) <= {m for m in parse_save(SAVED) if m in nat}


def test_a_set_past_the_member_limit_is_left_out_and_its_rules_stay_unknown() -> None:
    lines = ["create small hash:ip family inet", "add small 10.0.0.1",
             "create big hash:ip family inet"]
    lines += [f"add big 10.1.0.{i}" for i in range(5)]
    sets = parse_save("\n".join(lines), max_members=4)
    assert set(sets) == {"small"}  # big's fourth member was past the limit
    assert set(parse_save("\n".join(lines), max_members=6)) == {"small", "big"}


def test_a_set_of_more_than_max_members_is_left_out() -> None:
    """A bundle's ipset.save may be 256 MiB (MAX_FILE_BYTES): 15 million members took a
    minute and gigabytes of memory, read as objects. Past MAX_MEMBERS the set is left
    out (its rules unknown), and a set no rule names is never parsed."""
    lines = ["create big hash:ip family inet hashsize 1024 maxelem 65536"]
    lines += [f"add big 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
              for i in range(MAX_MEMBERS + 10)]
    text = "\n".join(lines)
    assert parse_save(text) == {}
    assert parse_save(text, wanted={"other"}) == {}


def test_of_a_bundle_s_pools_of_one_cidr_the_one_whose_name_sorts_first_makes_felix_s_sets(
) -> None:
    # Calico's syncer passes on, of pools of one CIDR, only the one whose name sorts
    # first (libcalico-go's conflictResolvingCache), whatever order the file lists them
    # in: aa-twin's natOutgoing: false keeps 10.42.0.0/16 out of cali40masq-ipam-pools.
    nat = (RULESETS / "calico-nat.save").read_text()
    pools = ('{"items": [{"metadata": {"name": "default"}, "spec": {"cidr": "10.42.0.0/16",'
             ' "natOutgoing": true}},'
             ' {"metadata": {"name": "aa-twin"}, "spec": {"cidr": "10.42.0.0/16"}}]}')
    state = _state(**{"iptables-legacy-v4.save": nat, "calico-ippools.json": pools})
    assert not state.ipsets()["cali40masq-ipam-pools"].networks
    assert trace(state, FLOW).verdict is Verdict.BLOCKED
