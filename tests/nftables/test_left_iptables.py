"""k3snet's iptables chains, left behind when a node moves to the nftables backend.

The nftables backend reads other tables' NAT and forward accepts as foreign state
that may meet the spec's rules, and iptables-nft's ``ip nat`` / ``ip filter`` are
such tables. The iptables backend's own chains there (``K3SNET-POSTROUTING`` and
its buckets) were read so too: a node switched from ``--backend iptables`` to
``--backend nftables`` planned no masquerade of its own ("met by foreign state"),
and ``k3snet destroy --backend iptables`` then left the pods with no NAT at all.
They are recognised by the iptables backend's hook jump and its main chain's
tagged jumps to its bucket chains (never by a ``K3SNET-`` name alone), meet
nothing, and are a warning naming ``k3snet destroy --backend iptables``, unless an
iptables backend is in use beside this one (the mirror of
``tests/iptables/test_left_nftables.py``). iptables-legacy's rules are invisible
to nftables: the nftables backend cannot see (nor count) those.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest

from k3snet.backends.group import BackendGroup, Member
from k3snet.backends.iptables import IptablesBackend
from k3snet.backends.nftables import NftablesBackend
from k3snet.backends.nftables.parse import _tagged_jump
from k3snet.cli import main
from k3snet.lab import SeedLab
from k3snet.lab.netns import run_in
from k3snet.lab.seed import NODE_ADDRESSES
from k3snet.model import ForwardRule, MasqueradeRule, State
from k3snet.planner import plan

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
MASQUERADE = MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24")
WANTED = State(owned=[MASQUERADE, ForwardRule("10.42.0.0/16", "192.168.2.0/24")])


def destroy_shown(ns: str) -> str:
    """The destroy the warning names, as run where k3snet read (``--netns NS``)."""
    return (f"`ip netns exec {ns} k3snet destroy --backend iptables --backend-opt "
            "iptables.mode=nft`")


@pytest.fixture
def xt_ns(ns: str) -> str:
    for tool in ("iptables-nft-restore", "iptables-nft-save", "ip6tables-nft-restore"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    return ns


def _left(warnings: tuple[str, ...]) -> list[str]:
    return [w for w in warnings if "chains k3snet's iptables backend wrote" in w]


def _met(state: State) -> list[Any]:
    return [o for o in state.foreign if isinstance(o, MasqueradeRule | ForwardRule)]


@pytest.mark.parametrize("rule", [
    {"expr": [{"xt": {"type": "match", "name": "comment"}}, {"counter": {"packets": 0}},
              {"jump": {"target": "K3SNET-POSTROUTING"}}]},
    {"comment": "k3snet", "expr": [{"jump": {"target": "K3SNET-POSTROUTING"}}]},
], ids=["xt-comment", "rule-comment"])
def test_the_iptables_backends_jump_through_iptables_nft_is_read_as_its_shape(
        rule: dict[str, Any]) -> None:
    assert _tagged_jump(rule) == "K3SNET-POSTROUTING"


@pytest.mark.parametrize("rule", [
    {"expr": [{"jump": {"target": "K3SNET-POSTROUTING"}}]},  # no comment
    {"comment": "mine", "expr": [{"jump": {"target": "K3SNET-POSTROUTING"}}]},
    {"expr": [{"xt": {"type": "match", "name": "comment"}},
              {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                         "right": "10.0.0.1"}},
              {"jump": {"target": "K3SNET-POSTROUTING"}}]},  # a test: not k3snet's jump
    {"expr": [{"xt": {"type": "match", "name": "comment"}}, {"masquerade": None}]},
], ids=["no-comment", "other-comment", "a-test", "no-jump"])
def test_a_rule_of_another_shape_is_no_jump_of_the_iptables_backend(
        rule: dict[str, Any]) -> None:
    assert _tagged_jump(rule) is None


@pytest.mark.kernel
def test_k3snet_s_iptables_chains_meet_no_wanted_rule_and_are_a_warning_naming_destroy(
        xt_ns: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with IptablesBackend(xt_ns, mode="nft") as old:
        old.apply(plan(old.observe(), WANTED))
    with NftablesBackend(xt_ns) as backend:
        observed = backend.observe()
        assert _met(observed) == []  # its masquerade and accept are k3snet's, not foreign
        assert {c.subject for c in plan(observed, WANTED).changes} == set(WANTED.owned)
        left = _left(backend.warnings)
        assert len(left) == 1, backend.warnings
        assert "ip nat K3SNET-POSTROUTING" in left[0]
        assert "ip filter K3SNET-FORWARD" in left[0]
        assert destroy_shown(xt_ns) in left[0]
        backend.apply(plan(observed, WANTED))
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    assert main(["destroy", "--backend", "iptables", "--backend-opt", "iptables.mode=nft",
                 "--netns", xt_ns, "--auto-approve", "-q"]) == 0
    assert "K3SNET" not in run_in(xt_ns, ["iptables-nft-save"]).stdout
    with NftablesBackend(xt_ns) as backend:
        assert plan(backend.observe(), WANTED).changes == ()
        assert _left(backend.warnings) == []


LOOK_ALIKES = {
    # An administrator's chain of k3snet's main chain name, jumped to without a comment.
    "no-comment": ["-N K3SNET-POSTROUTING", "-A POSTROUTING -j K3SNET-POSTROUTING",
                   "-A K3SNET-POSTROUTING -s 10.42.0.0/16 -d 192.168.2.0/24 -j MASQUERADE"],
    # Jumped to as k3snet jumps, but holding what k3snet never writes there.
    "tagged-jump": ["-N K3SNET-POSTROUTING",
                    "-A POSTROUTING -m comment --comment k3snet -j K3SNET-POSTROUTING",
                    "-A K3SNET-POSTROUTING -s 10.42.0.0/16 -d 192.168.2.0/24 -j MASQUERADE"],
    # Jumped to as k3snet jumps, its main chain jumping as k3snet's does, but to a chain
    # named as a bucket of filter's (k3snet writes K3SNET-F-x there alone).
    "other-tables-bucket": [
        "-N K3SNET-POSTROUTING", "-N K3SNET-F-1",
        "-A POSTROUTING -m comment --comment k3snet -j K3SNET-POSTROUTING",
        "-A K3SNET-POSTROUTING -m comment --comment k3snet -j K3SNET-F-1",
        "-A K3SNET-F-1 -s 10.42.0.0/16 -d 192.168.2.0/24 -j MASQUERADE"],
    # A chain of another K3SNET- name.
    "other-name": ["-N K3SNET-MINE", "-A POSTROUTING -m comment --comment k3snet -j K3SNET-MINE",
                   "-A K3SNET-MINE -s 10.42.0.0/16 -d 192.168.2.0/24 -j MASQUERADE"],
}


@pytest.mark.kernel
@pytest.mark.parametrize("lines", LOOK_ALIKES.values(), ids=LOOK_ALIKES.keys())
def test_a_hand_made_k3snet_chain_without_the_iptables_backends_shape_is_still_foreign(
        xt_ns: str, lines: list[str]) -> None:
    text = "\n".join(["*nat", *lines, "COMMIT", ""])
    run_in(xt_ns, ["iptables-nft-restore", "--noflush"], input_text=text)
    with NftablesBackend(xt_ns) as backend:
        observed = backend.observe()
        assert MASQUERADE in _met(observed)
        assert _left(backend.warnings) == []


@pytest.mark.kernel
def test_the_split_group_with_iptables_names_no_chain_yet_meets_nothing_with_them(
        xt_ns: str) -> None:
    with IptablesBackend(xt_ns, mode="nft") as old:  # the node as --backend iptables left it
        old.apply(plan(old.observe(), WANTED))
    with BackendGroup([Member(NftablesBackend(xt_ns), ["nat"]),
                       Member(IptablesBackend(xt_ns, mode="nft"), ["forward"])]) as group:
        changes = plan(group.observe(), WANTED).changes
        # The masquerade is written in nftables: iptables' own is no foreign rule.
        assert [c.subject for c in changes] == [MASQUERADE]
        assert _left(group.warnings) == []  # the group names iptables' nat objects itself
        # the destroy named runs in xt_ns, as shown from the shell that ran k3snet
        destroy = ["k3snet", "destroy", "--netns", xt_ns, "--backend", "iptables:nat"]
        shown = f"`{shlex.join(destroy)}`"
        assert any(shown in w for w in group.warnings)
        group.apply(plan(group.observe(), WANTED))
        assert plan(group.observe(), WANTED).changes == ()
        assert _left(group.warnings) == []


def _nat_rules(ns: str) -> list[dict[str, Any]]:
    listed = json.loads(run_in(ns, ["nft", "-j", "list", "ruleset"]).stdout)["nftables"]
    return [item["rule"] for item in listed if "rule" in item
            and any("masquerade" in e for e in item["rule"]["expr"])]


@pytest.mark.kernel
@pytest.mark.lab
def test_after_the_move_and_the_destroy_the_pods_connections_are_still_masqueraded(
        require_root: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("iptables-nft-restore") is None:
        pytest.skip("iptables-nft-restore is not installed")
    with SeedLab.create() as lab:
        monkeypatch.setenv("K3SNET_STATE_DIR", str(lab.state_dir))
        node = lab.node
        common = ["-f", str(SEED), "--netns", node, "--auto-approve", "--backend", "netlink"]
        assert main(["apply", *common, "--backend", "iptables"]) == 0
        assert lab.tcp_probe(4).source_seen == NODE_ADDRESSES[4]
        capsys.readouterr()
        assert main(["apply", *common, "--backend", "nftables"]) == 0
        out = capsys.readouterr().out
        assert main(["destroy", "--netns", node, "--auto-approve", "--backend", "iptables",
                     "--backend-opt", "iptables.mode=nft"]) == 0
        assert "K3SNET" not in run_in(node, ["iptables-save"]).stdout
        assert "K3SNET" not in run_in(node, ["ip6tables-save"]).stdout
        for family in (4, 6):  # translated by the nftables backend's own masquerade
            probe = lab.tcp_probe(family)
            assert probe.ok, probe
            assert probe.source_seen == NODE_ADDRESSES[family]
        assert {(r["family"], r["table"]) for r in _nat_rules(node)} == {("inet", "k3snet")}
        assert "+ masquerade 10.42.0.0/16 -> 192.168.2.0/24 oif eth0" in out
        assert destroy_shown(node) in out
