"""Every command a warning of the nftables backend names runs where k3snet read.

Under ``--netns NS``, and for a k3snet started by ``ip netns exec NS k3snet ...``, the
warnings of another table's default drop, of a notrack of one protocol and of the
iptables backend's chains left in iptables-nft's tables named their commands alone:
run as shown from the shell that ran k3snet, ``nft list chain ...`` read the node's
tables (and ``k3snet destroy --backend iptables`` would have removed the node's
chains). They come after ``ip netns exec NS`` now, as the iptables backend's
(``tests/iptables/test_foreign_chains.py``); each command that only reads is run here
as shown, from the test's own namespace, and finds what the warning names.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.netns import shown_command
from k3snet.backends.nftables import NftablesBackend
from k3snet.lab.netns import run_in
from k3snet.model import ForwardRule, MasqueradeRule, State
from k3snet.planner import plan
from tests.shown import BOTH_WAYS, as_k3snet_ran, run_as_shown, shown

MASQUERADE = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")
WANTED = State(owned=[MASQUERADE, ForwardRule("10.42.0.0/16", "192.168.2.0/24")])
_FOREIGN = """
table ip guard {
  chain gate { type filter hook forward priority 10; policy drop; }
  chain early { type filter hook prerouting priority -300;
                ip saddr 10.42.0.0/16 udp dport 53 notrack; }
}
"""


@pytest.mark.kernel
@BOTH_WAYS
def test_every_command_a_warning_names_runs_in_the_namespace_k3snet_read(
        ns: str, given: bool) -> None:
    for tool in ("iptables-nft", "iptables-nft-save", "ip6tables-nft"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    with IptablesBackend(ns, mode="nft") as left:  # the chains a move of backends leaves
        left.apply(plan(left.observe(), State(owned=[MASQUERADE])))
    run_in(ns, ["nft", "-f", "-"], input_text=_FOREIGN)

    def warned(netns: str | None) -> tuple[str, ...]:
        with NftablesBackend(netns=netns) as backend:
            backend.expect(WANTED)
            backend.observe()
            return backend.warnings

    warnings = as_k3snet_ran(ns, given, warned)
    expected = {
        "nftables: ip guard chain gate, ": ("nft list chain ip guard gate", "policy drop"),
        "nftables: nftables ip guard early: ": ("nft list chain ip guard early", "notrack"),
    }
    for start, (command, seen) in expected.items():
        said = [w for w in warnings if w.startswith(start)]
        assert said, "\n".join(warnings)
        assert all(shown(ns, command) in w for w in said), said
        out = run_as_shown(ns, command)  # here, outside: as shown (it only reads)
        assert seen in out, out
    (left_behind,) = [w for w in warnings if "chains k3snet's iptables backend wrote" in w]
    # A command that writes: checked as said, never run outside the lab.
    assert (shown(ns, "k3snet destroy --backend iptables --backend-opt iptables.mode=nft")
            + " removes them") in left_behind, left_behind



@pytest.mark.parametrize("table", ["a\x1bb", "a b", "v\u00e9", "it's", "c\\z", "1x", "t\n$x",
                                   "counter", "ct"])
def test_an_nft_list_of_a_name_nfts_command_line_refuses_is_shown_as_json_naming_it(
        table: str) -> None:
    # Shown byte for byte (`nft list chain inet $'a\x1bb' c`), nft refused it: "syntax
    # error, unexpected junk". Its JSON input takes any name; bash reads the request back.
    command = shown_command(["nft", "list", "chain", "inet", table, "c"], "lab")
    request, _, rest = command.partition(" | ")
    assert rest == "ip netns exec lab nft -j -f -"
    assert command.isprintable()
    said = subprocess.run(["bash", "-c", request], capture_output=True, check=True,
                          timeout=60).stdout
    assert json.loads(said) == {"nftables": [{"list": {"chain": {
        "family": "inet", "table": table, "name": "c"}}}]}
    plain = shown_command(["nft", "-a", "list", "table", "ip", "K3SNET_x-1.a/b"], None)
    assert plain == "nft -a list table ip K3SNET_x-1.a/b"


def _notrack_table(table: str) -> str:
    """nft's JSON input: ``table``'s chain ``early`` before conntrack, with a notrack of
    the pods' DNS (one protocol: a warning when it meets k3snet's masquerade)."""
    return json.dumps({"nftables": [
        {"add": {"table": {"family": "ip", "name": table}}},
        {"add": {"chain": {"family": "ip", "table": table, "name": "early", "type": "filter",
                           "hook": "prerouting", "prio": -300}}},
        {"add": {"rule": {"family": "ip", "table": table, "chain": "early", "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                       "right": {"prefix": {"addr": "10.42.0.0", "len": 16}}}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}},
                       "right": 53}},
            {"notrack": None}]}}}]})


@pytest.mark.kernel
@pytest.mark.parametrize("backend", ["nftables", "iptables"])
@pytest.mark.parametrize("table", ["counter", "a b"], ids=["keyword", "space"])
def test_the_command_a_notrack_s_warning_shows_lists_its_chain_whatever_its_table_s_name(
        ns: str, table: str, backend: str) -> None:
    # `nft list chain ip counter early`: nft's command line read the word of its own
    # language ("syntax error, unexpected counter"); the table `a b` was taken as `a`,
    # its chain as `b early` ("No such file or directory"). The iptables backend names
    # another table's notrack as the nftables backend does.
    if backend == "iptables" and shutil.which("iptables-nft") is None:
        pytest.skip("iptables-nft is not installed")
    run_in(ns, ["nft", "-j", "-f", "-"], input_text=_notrack_table(table))
    with (NftablesBackend(netns=ns) if backend == "nftables"
          else IptablesBackend(ns, mode="nft")) as reader:
        reader.expect(WANTED)
        reader.observe()
        warnings = reader.warnings
    (said,) = [w for w in warnings if "untracked" in w]
    command = said.rpartition("(`")[2].partition("`")[0]
    listed = json.loads(subprocess.run(["bash", "-c", command], capture_output=True,
                                       check=True, timeout=60).stdout)["nftables"]
    assert [(i["chain"]["table"], i["chain"]["name"]) for i in listed if "chain" in i] == [
        (table, "early")]
    assert [{"notrack": None} in i["rule"]["expr"] for i in listed if "rule" in i] == [True]
