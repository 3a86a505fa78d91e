"""Another table's default drop that k3snet's forward accepts cannot open is a warning.

An accept in k3snet's table ends only k3snet's base chain: a packet is still dropped
by any other filter base chain on the forward hook whose policy is drop (an admin's
``inet filter``, iptables-nft's ``ip filter FORWARD`` when no iptables backend of
k3snet opens it), or that ends in a catch-all drop or reject (firewalld's). Such a
default is no conflict (docs/reliability.md, "What is a conflict"), but ``k3snet
plan`` said success while the pods' traffic stayed dropped. The backend now warns,
naming the chain, when it does not accept a wanted forward rule (the ``expect()``
hint: the desired state). Kernel tests check the kernel's own view
(``nft -j list ruleset``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from k3snet.backends.nftables import NftablesBackend
from k3snet.backends.nftables.parse import ForwardDefaults
from k3snet.cli import main
from k3snet.errors import BackendError
from k3snet.lab.netns import run_in
from k3snet.model import ForwardRule, MasqueradeRule, State
from tests.nftables.scenario import K3SNET_RULES
from tests.nftables.test_recorded import RecordedKernel, backend

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"

# The K3s cluster CIDR flannel's FLANNEL-FWD accepts in the recorded k3s-node ruleset
# (whose ip filter FORWARD has policy drop).
CLUSTER_RULE = ForwardRule("10.42.0.0/16", "192.168.2.0/24", out_interface="eth0")


def test_a_k3s_node_whose_flannel_accepts_the_wanted_rule_gives_no_warning() -> None:
    nft, _ = backend("k3s-node")
    with nft:
        nft.expect(State(owned=[CLUSTER_RULE]))
        nft.observe()
        assert nft.warnings == ()


def test_a_policy_drop_that_does_not_accept_a_wanted_rule_is_a_warning_naming_the_chain(
        caplog: pytest.LogCaptureFixture) -> None:
    nft, kernel = backend("k3s-node")
    with nft, caplog.at_level(logging.WARNING, logger="k3snet.backends.nftables"):
        nft.expect(K3SNET_RULES)  # 10.52.0.0/16, which flannel's accepts do not cover
        nft.observe()
        listed = list(kernel.listed)
        (warning,) = nft.warnings
        assert kernel.listed == listed  # judged from what the read listed
        nft.observe()  # the agent's next pass, served from the cache
        nft._log_warnings()  # what the next read finding the same does
    assert warning.startswith("nftables: ip filter chain FORWARD, ")
    assert "(policy drop)" in warning
    assert "forward accept 10.52.0.0/16 -> 192.168.2.0/24" in warning
    assert "`nft list chain ip filter FORWARD`" in warning
    assert "--backend iptables:forward" in warning  # iptables' policy: iptables opens it
    logged = [r.getMessage() for r in caplog.records
              if r.name.startswith("k3snet.backends.nftables")]
    assert logged == [warning]  # once, as the agent logs its other warnings


class _FlannelUnread(RecordedKernel):
    """The k3s-node recording, whose FLANNEL-FWD cannot be listed."""

    def list(self, kind: str, **ref: str) -> list[dict[str, Any]] | None:
        if ref.get("name") == "FLANNEL-FWD":
            raise BackendError("nft 'list chain ip filter FLANNEL-FWD' failed")
        return super().list(kind, **ref)


def test_a_chain_the_read_could_not_list_may_drop_what_a_default_chain_jumps_to_it() -> None:
    # flannel's accepts unread: nothing says FORWARD's policy drop spares the pods.
    kernel = _FlannelUnread("k3s-node")
    with NftablesBackend(kernel=lambda: kernel) as nft:
        nft.expect(State(owned=[CLUSTER_RULE]))
        nft.observe()
        (warning,) = nft.warnings
    assert warning.startswith("nftables: ip filter chain FORWARD, ")


@pytest.mark.parametrize("hint", [None, State(owned=[MasqueradeRule("10.52.0.0/16")])])
def test_without_a_wanted_forward_rule_no_default_is_warned(hint: State | None) -> None:
    # k3snet's forward accepts are not in play: nothing of theirs for a default to drop
    # (a group giving kind forward to iptables hands this member no forward rule).
    nft, _ = backend("k3s-node")
    with nft:
        if hint is not None:
            nft.expect(hint)
        nft.observe()
        assert nft.warnings == ()


ADMIN_POLICY_DROP = """
table inet filter {
    chain forward {
        type filter hook forward priority 0; policy drop;
    }
}
"""
IPTABLES_NFT_POLICY_DROP = """
table ip filter {
    chain FORWARD {
        type filter hook forward priority 0; policy drop;
    }
}
"""
FIREWALLD_LIKE = """
table inet fw {
    chain screen {
        type filter hook forward priority 10;
        ct state established,related accept
        ct state invalid drop
        iifname "lo" accept
        reject with icmpx admin-prohibited
    }
}
"""
ACCEPTS_THE_PODS = """
table inet filter {
    chain forward {
        type filter hook forward priority 0; policy drop;
        ct state invalid drop
        ct state established,related accept
        ip saddr 10.42.0.0/16 accept
        ip6 saddr fd42:42::/56 accept
    }
}
"""
RPFILTER_BESIDE_ACCEPTS = """
table inet fw {
    chain pre {
        type filter hook prerouting priority -140;
        meta nfproto ipv6 fib saddr . mark . iif oif missing drop
    }
    chain screen {
        type filter hook forward priority 10;
        ct state invalid drop
        ip saddr 10.42.0.0/16 accept
        ip6 saddr fd42:42::/56 accept
        reject with icmpx admin-prohibited
    }
}
"""
K3S_LIKE = """
table ip filter {
    chain FORWARD {
        type filter hook forward priority 0; policy drop;
        jump FLANNEL-FWD
    }
    chain FLANNEL-FWD {
        ip saddr 10.42.0.0/16 accept
        ip daddr 10.42.0.0/16 accept
    }
}
"""
# (ruleset, what the warning says; None: no warning)
CASES: dict[str, tuple[str, list[str] | None]] = {
    "an admin's inet filter policy drop": (
        ADMIN_POLICY_DROP, ["nftables: inet filter chain forward, ", "(policy drop)",
                            "forward accept 10.42.0.0/16 -> 192.168.2.0/24"]),
    "iptables-nft's ip filter FORWARD policy drop": (
        IPTABLES_NFT_POLICY_DROP, ["nftables: ip filter chain FORWARD, ", "(policy drop)",
                                   "--backend iptables:forward"]),
    "firewalld's catch-all reject": (
        FIREWALLD_LIKE, ["nftables: inet fw chain screen, ",
                         "(a rule that may drop any address (handle "]),
    "a policy drop whose chain accepts the pods": (ACCEPTS_THE_PODS, None),
    "firewalld's reverse-path check, and a catch-all reject after the pods' accepts": (
        RPFILTER_BESIDE_ACCEPTS, None),
    "a K3s-like FORWARD whose flannel chain accepts the cluster CIDR": (K3S_LIKE, None),
}


def ruleset(ns: str) -> list[str]:
    found = json.loads(run_in(ns, ["nft", "-j", "list", "ruleset"]).stdout)["nftables"]
    return sorted(json.dumps(item, sort_keys=True) for item in found if "metainfo" not in item)


def plan_warnings(ns: str, capsys: pytest.CaptureFixture[str], *backends: str) -> list[str]:
    capsys.readouterr()
    chosen = [arg for name in backends for arg in ("--backend", name)]
    assert main(["plan", "-f", str(SEED), *chosen, "--netns", ns, "--no-facts"]) == 2
    # (Not the warning of the spec's kinds no backend in use manages: routes, sysctls.)
    return [line.removeprefix("!! warning: ") for line in capsys.readouterr().out.splitlines()
            if line.startswith("!! warning: ")
            and not line.startswith("!! warning: the spec's ")]


@pytest.mark.kernel
@pytest.mark.parametrize("case", list(CASES))
def test_a_foreign_default_drop_is_a_warning_of_the_plan_unless_it_accepts_the_pods(
        ns: str, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    rules, said = CASES[case]
    run_in(ns, ["nft", "-f", "-"], input_text=rules)
    before = ruleset(ns)
    warnings = plan_warnings(ns, capsys, "nftables")
    assert ruleset(ns) == before  # the kernel's view: the foreign chain untouched
    if said is None:
        assert warnings == []
        return
    (warning,) = warnings
    for words in said:
        assert words in warning, warning
    assert "accept k3snet's traffic in that chain too" in warning


@pytest.mark.kernel
def test_iptables_policy_drop_is_no_warning_when_iptables_manages_forward(
        ns: str, capsys: pytest.CaptureFixture[str]) -> None:
    # The split for a FORWARD policy DROP: iptables' member opens it from inside the
    # iptables FORWARD path, and the nftables member is given no forward rule.
    run_in(ns, ["nft", "-f", "-"], input_text=IPTABLES_NFT_POLICY_DROP)
    warnings = plan_warnings(ns, capsys, "nftables:nat", "iptables:forward")
    assert not [w for w in warnings if "chain FORWARD" in w], warnings
    # Given forward, the nftables member warns of the same chain.
    warnings = plan_warnings(ns, capsys, "nftables:forward", "iptables:nat")
    assert [w for w in warnings if w.startswith("nftables: ip filter chain FORWARD, ")]


def test_a_read_finding_the_same_defaults_for_the_same_wanted_rules_is_not_judged_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The agent reads the other tables again after anyone's commit (kube-proxy's, every
    # few seconds): judging a long chain for every wanted rule each time would cost a pass.
    judged: list[int] = []
    real = ForwardDefaults.unopened

    def counted(self: ForwardDefaults, rules: Sequence[ForwardRule]) -> Any:
        judged.append(len(rules))
        return real(self, rules)

    monkeypatch.setattr(ForwardDefaults, "unopened", counted)
    nft, _ = backend("k3s-node")
    with nft:
        nft.expect(K3SNET_RULES)
        nft.observe()
        first = nft.warnings
        nft.expect(State(owned=K3SNET_RULES.owned))  # the next pass's hint: equal, not same
        nft.observe(refresh=True)
        assert nft.warnings == first
        assert len(judged) == 1
        nft.expect(State(owned=[CLUSTER_RULE]))  # another wanted rule: judged again
        nft.observe(refresh=True)
        assert nft.warnings == ()
        assert len(judged) == 2
