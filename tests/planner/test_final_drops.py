"""A foreign drop or reject is final wherever it sits: no foreign accept meets what it
defeats.

Each backend reports only the foreign accepts that get through the drops it reads, so a
met accept and a deciding drop never came from one view; a backend group hands a member
the drops another member reads (a drop in firewalld's own nftables table beside flannel's
accept in iptables' FORWARD), and the planner judged the accept first: ``= met``, while
the kernel dropped the pods' traffic.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from k3snet import ForwardRule, State, plan
from k3snet.backends.group import BackendGroup, Member
from k3snet.backends.memory import MemoryBackend
from k3snet.model import ForwardBlock
from k3snet.model.cidr import Network
from k3snet.testing import strategies as ks

FLANNEL = ForwardRule("10.42.0.0/16", "0.0.0.0/0")
DROP = ForwardBlock(4, "drop", "ip daddr 192.168.2.0/24 drop",
                    "nftables inet firewalld filter_FORWARD", destination="192.168.2.0/24")
WANTED = ForwardRule("10.42.0.0/16", "192.168.2.0/24")


def test_a_group_member_s_drop_defeats_another_member_s_accept_meeting_the_rule() -> None:
    nft = MemoryBackend(State(foreign=[DROP]), capabilities=["nat", "forward"])
    iptables = MemoryBackend(State(foreign=[FLANNEL]), capabilities=["nat", "forward"])
    group = BackendGroup([Member(nft, ["nat"]), Member(iptables, ["forward"])])
    p = plan(group.observe(), State(owned=[WANTED]))
    assert not p.met
    assert [(n.wanted, n.foreign) for n in p.conflicts] == [(WANTED, DROP)]


def test_a_rule_in_place_a_final_drop_defeats_is_a_conflict_though_an_accept_meets_it() -> None:
    p = plan(State(owned=[WANTED], foreign=[FLANNEL, DROP]), State(owned=[WANTED]))
    assert p.changes == ()
    assert [(n.foreign, n.owned) for n in p.conflicts] == [(DROP, WANTED)]


_verdicts = st.sampled_from(["drop", "reject"])


@given(ks.forward_rules(family=4), ks.forward_rules(family=4), ks.networks(4), _verdicts)
def test_no_need_is_met_where_a_final_drop_decides_it(
        wanted: ForwardRule, accept: ForwardRule, dropped: Network, verdict: str) -> None:
    block = ForwardBlock(4, verdict, f"ip daddr {dropped} {verdict}", "nftables inet fw forward",
                         destination=dropped)
    p = plan(State(foreign=[accept, block]), State(owned=[wanted]))
    if block.decides(wanted):
        assert not p.met
        assert [n.foreign for n in p.conflicts] == [block]
