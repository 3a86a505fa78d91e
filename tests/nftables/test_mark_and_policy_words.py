"""What `plan` says of kube-router's pod firewall and of drops testing a mark.

kube-router (K3s' network policy controller) sends the packets of each pod a
NetworkPolicy selects through a chain ``KUBE-POD-FW-<hash>``: its policies' chains
(``KUBE-NWPLCY-<hash>``) mark what one allows ``0x10000``, and the chain rejects the
rest (``-m mark ! --mark 0x10000/0x10000 -j REJECT``). The conflict said only "that rule
rejects some of this traffic": not that it is a NetworkPolicy's doing, for the pods it
selects alone, nor that the fix is the pods' egress policy, not k3snet. A drop testing
a mark (``meta mark 0x8000 drop``, kube-proxy's "drop me" mark) was a warning of "a rule
that may drop any address", the mark unnamed: now named, with whether the pods' traffic,
which carries no mark, passes it.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from k3snet.backends.iptables.foreign import foreign_blocks
from k3snet.backends.iptables.save import parse_save
from k3snet.cli import main
from k3snet.lab import SeedLab
from k3snet.lab.netns import run_in
from k3snet.model import ForwardBlock
from tests.nftables.test_foreign_cases import DROP
from tests.nftables.test_interface_blocks import _applied
from tests.nftables.test_named_address_sets import PODS, fw, match, read, warned

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
POD_FW = "KUBE-POD-FW-ABCDEFGHIJKLMNOP"
POLICY = "KUBE-NWPLCY-QRSTUVWXYZ234567"


def kube_router(pod: str, allowed: str, reject: str = "icmp-port-unreachable") -> str:
    """kube-router's filter table for one pod an egress NetworkPolicy selects (allowing
    ``allowed`` only), as its network policy controller writes it (pkg/controllers/netpol)."""
    return "\n".join([
        "*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
        ":KUBE-ROUTER-FORWARD - [0:0]", f":{POD_FW} - [0:0]", f":{POLICY} - [0:0]",
        '-A FORWARD -m comment --comment "kube-router netpol - TEMCG2JMHZYE7H7T" '
        "-j KUBE-ROUTER-FORWARD",
        f'-A KUBE-ROUTER-FORWARD -s {pod} -m comment --comment "rule to jump traffic from '
        f'POD name:web namespace: default to chain {POD_FW}" -j {POD_FW}',
        '-A KUBE-ROUTER-FORWARD -m comment --comment "rule to explicitly ACCEPT traffic '
        'that comply to network policies" -m mark --mark 0x20000/0x20000 -j ACCEPT',
        f'-A {POD_FW} -m comment --comment "rule for stateful firewall for pod" '
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        f'-A {POD_FW} -m comment --comment "run through nw policy egress" -j {POLICY}',
        f'-A {POD_FW} -m comment --comment "rule to log dropped traffic POD name:web '
        'namespace: default" -m mark ! --mark 0x10000/0x10000 -j NFLOG --nflog-group 100',
        f'-A {POD_FW} -m comment --comment "rule to REJECT traffic destined for POD '
        'name:web namespace: default" -m mark ! --mark 0x10000/0x10000 -j REJECT '
        f"--reject-with {reject}",
        f"-A {POD_FW} -j MARK --set-xmark 0x0/0x10000",
        f'-A {POLICY} -d {allowed} -m comment --comment "allowed" '
        "-j MARK --set-xmark 0x10000/0x10000",
        f"-A {POLICY} -m mark --mark 0x10000/0x10000 -j RETURN",
        "COMMIT", ""])


def test_kube_routers_reject_is_said_to_be_a_network_policys_for_the_pods_it_selects(
        ) -> None:
    blocks = foreign_blocks(parse_save(kube_router("10.42.0.10/32", "10.30.0.0/16"))
                            .get("filter"), 4, 1)  # k3snet's jump after theirs
    (block,) = [b for b in blocks if isinstance(b, ForwardBlock) and b.decides(PODS)]
    reason = PODS.conflict_reason(block)
    assert reason is not None
    assert reason.startswith("that rule is kube-router's NetworkPolicy enforcement")
    assert "the pods a NetworkPolicy selects (here 10.42.0.10/32)" in reason
    assert "allow it in their egress NetworkPolicy" in reason
    # listed through nft: the chain is in the block's place
    listed = ForwardBlock(4, "drop", "ip saddr 10.42.0.10/32 (and 1 more match) drop",
                          f"nftables ip filter {POD_FW}", source="10.42.0.10/32")
    assert PODS.conflict_reason(listed) == reason


def test_any_other_drop_keeps_the_words_it_had() -> None:
    other = ForwardBlock(4, "drop", "ip daddr 192.168.2.0/24 drop", "nftables inet fw c",
                         destination="192.168.2.0/24")
    assert PODS.conflict_reason(other) == (
        "that rule drops some of this traffic and k3snet's accept cannot let it through (a "
        "drop is final in whichever chain of the hook it runs); k3snet does not place its "
        "rules above it")


MARK = {"meta": {"key": "mark"}}
SET_ONLY = ("(only packets another rule marked so: the pods' traffic to the destination "
            "carries no mark unless a rule of the node sets one)")
UNMARKED = ("(every packet without that mark: the pods' traffic to the destination "
            "carries none, so it meets them)")


@pytest.mark.parametrize(("test", "words"), [
    (match("==", MARK, 0x8000), f"meta mark 0x8000 {SET_ONLY}"),
    (match("==", {"&": [MARK, 0x8000]}, 0x8000), f"meta mark & 0x8000 == 0x8000 {SET_ONLY}"),
    (match("!=", {"&": [MARK, 0x10000]}, 0x10000),
     f"meta mark & 0x10000 != 0x10000 {UNMARKED}"),
    (match("==", {"&": [MARK, 0x4000]}, 0), f"meta mark & 0x4000 == 0x0 {UNMARKED}"),
])
def test_a_drop_testing_a_mark_names_it_and_whether_the_pods_traffic_passes_it(
        test: Any, words: str) -> None:
    _, reader = read(fw([[test, DROP]], {}))
    assert warned(reader, PODS) == [f"a rule that may drop any address, testing {words} "
                                    "(handle 2)"]


@pytest.mark.kernel
@pytest.mark.lab
def test_the_kernel_rejects_as_kube_router_says_and_a_marked_drop_lets_the_pods_pass(
        require_root: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("iptables-nft-restore") is None:
        pytest.skip("iptables-nft-restore is not installed")
    with SeedLab.create() as lab:
        monkeypatch.setenv("K3SNET_STATE_DIR", str(lab.state_dir))
        _applied(lab)
        # kube-proxy's "drop me" mark: no pod packet carries it
        run_in(lab.node, ["nft", "-f", "-"], input_text=(
            "table inet fw { chain c { type filter hook forward priority 0; policy accept; "
            "meta mark & 0x8000 == 0x8000 drop; }\n}\n"))
        with ThreadPoolExecutor(2) as pool:
            probes = [pool.submit(lab.tcp_probe, f, timeout=2.0) for f in (4, 6)]
            assert [p.result().ok for p in probes] == [True, True]
        capsys.readouterr()
        assert main(["plan", "-f", str(SEED), "--netns", lab.node]) == 0
        out = capsys.readouterr().out
        assert f"testing meta mark & 0x8000 == 0x8000 {SET_ONLY}" in out
        run_in(lab.node, ["nft", "delete", "table", "inet", "fw"])
        # the pod 10.42.0.10 under an egress policy allowing 10.30.0.0/16 alone
        run_in(lab.node, ["iptables-nft-restore"],
               input_text=kube_router("10.42.0.10/32", "10.30.0.0/16"))
        reject = run_in(lab.node, ["iptables-nft-save", "-t", "filter"]).stdout
        assert "--mark 0x10000/0x10000 -j REJECT" in reject  # the kernel's view
        assert not lab.tcp_probe(4, timeout=2.0).ok  # rejected: its policy allows not
        capsys.readouterr()
        assert main(["plan", "-f", str(SEED), "--netns", lab.node]) == 4
        out = capsys.readouterr().out
        assert "that rule is kube-router's NetworkPolicy enforcement" in out
        assert "(here 10.42.0.10/32)" in out


NEEDS_A_MARK = [match("!=", {"&": [MARK, 0x4000]}, 0), match("!=", MARK, 0)]
"""Tests only a marked packet passes, as ``nft -j list`` gives ``meta mark & 0x4000 !=
0`` and ``meta mark != 0``: a packet without a mark (``(0 & 0x4000) != 0`` is false)
fails them."""
UNJUDGED = ("(a mark test k3snet does not judge: it may meet the pods' traffic)")


@pytest.mark.parametrize(("test", "words"), [
    (NEEDS_A_MARK[0], f"meta mark & 0x4000 != 0x0 {SET_ONLY}"),
    (NEEDS_A_MARK[1], f"meta mark != 0x0 {SET_ONLY}"),
    (match("==", MARK, {"set": [1, 2]}), f"meta mark {{ 0x1, 0x2 }} {UNJUDGED}"),
])
def test_a_mark_test_only_marked_packets_pass_is_not_said_to_meet_the_unmarked_pods(
        test: Any, words: str) -> None:
    # (said "every packet without that mark ... so it meets them" of `!= 0`)
    _, reader = read(fw([[test, DROP]], {}))
    assert warned(reader, PODS) == [f"a rule that may drop any address, testing {words} "
                                    "(handle 2)"]


@pytest.mark.parametrize("test", [*NEEDS_A_MARK, match("==", MARK, {"set": [1, 2]})])
def test_a_return_of_marked_packets_only_does_not_end_the_pods_walk_of_a_nat_chain(
        test: Any) -> None:
    """``meta mark & 0x4000 != 0 return`` before a masquerade of the pods: their unmarked
    packets go on to the masquerade, a block. It was read as a return of every unmarked
    packet (as ``meta mark & 0x4000 == 0 return`` is), the masquerade after it unread:
    no block, while the kernel translated the pods' connections."""
    from tests.nftables.test_foreign_cases import MASQ, nat, saddr  # noqa: PLC0415
    from tests.nftables.test_nat_blocks import POD, blocks  # noqa: PLC0415

    found = blocks(nat([test, {"return": None}], [saddr(POD), MASQ]), 100)
    assert {(b[1], b[2]) for b in found} == {("masquerade", f"ip saddr {POD} masquerade")}
    unmarked = match("==", {"&": [MARK, 0x4000]}, 0)  # every pod packet returns: none
    assert blocks(nat([unmarked, {"return": None}], [saddr(POD), MASQ]), 100) == set()
