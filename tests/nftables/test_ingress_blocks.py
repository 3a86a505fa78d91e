"""Foreign drops in a device's ``ingress`` chain (a ``netdev`` table's, or an ``inet`` one's).

What arrives by a device passes its ingress chains before any other hook: a drop of the
pods' traffic there (``type filter hook ingress device cni0``) drops it as surely as one
at prerouting. The foreign reader read only the ``ip``, ``ip6`` and ``inet`` chains on
the postrouting, prerouting and forward hooks, so the pods' connections were dropped while
``k3snet plan`` said nothing (0 conflicts); the same rule at prerouting was a conflict. Such
a drop is now read as one testing its device (``iifname cni0``), one block per device of
the chain. libnftables 1.0.6's JSON lists an ingress chain without its devices: the
backend asks the kernel for them (``NFTA_HOOK_DEV``/``NFTA_HOOK_DEVS``). The lab test sends
the pod's packets; the other reads the kernel's own chains.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from k3snet.backends.nftables import NftablesBackend
from k3snet.cli import main
from k3snet.lab import SeedLab
from k3snet.lab.netns import NetnsCommandError, run_in
from k3snet.model import ForwardBlock

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
DROP = "ip saddr 10.42.0.0/16 ip daddr 192.168.2.0/24 counter drop"


@pytest.mark.kernel
@pytest.mark.parametrize("family", ["netdev", "inet"])
def test_an_ingress_drop_of_the_pods_traffic_drops_it_and_is_a_conflict(
        require_root: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        family: str) -> None:
    with SeedLab.create() as lab:
        monkeypatch.setenv("K3SNET_STATE_DIR", str(lab.state_dir))
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["apply", "-f", str(SEED), "--netns", lab.node]) == 0
        assert lab.tcp_probe(4, timeout=2.0).ok
        run_in(lab.node, ["nft", "-f", "-"], input_text=(
            f"table {family} edge {{\n\tchain in {{\n\t\ttype filter hook ingress device "
            f"cni0 priority 0; policy accept;\n\t\t{DROP}\n\t}}\n}}\n"))
        assert not lab.tcp_probe(4, timeout=1.0).ok  # the kernel drops the pod's packets
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["plan", "-f", str(SEED), "--netns", lab.node]) == 4  # a conflict
        said = f"conflicts with foreign: drop by nftables {family} edge in: ip saddr 10.42.0.0/16"
        assert said in out.getvalue()
        assert "192.168.2.0/24 iifname cni0 drop" in out.getvalue()


@pytest.mark.kernel
def test_an_ingress_chain_on_several_devices_is_a_drop_by_each(ns: str) -> None:
    run_in(ns, ["ip", "link", "add", "cni0", "type", "veth", "peer", "name", "flannel.1"])
    run_in(ns, ["nft", "-f", "-"], input_text=(
        "table inet edge {\n\tchain in {\n\t\ttype filter hook ingress devices = { cni0, "
        f"flannel.1 }} priority 0; policy accept;\n\t\t{DROP}\n\t}}\n}}\n"))
    with NftablesBackend(ns, keep_read=False) as backend:
        blocks = {o for o in backend.observe().foreign if isinstance(o, ForwardBlock)}
    assert {(b.in_interface, str(b.source), str(b.destination)) for b in blocks} == {
        ("cni0", "10.42.0.0/16", "192.168.2.0/24"),
        ("flannel.1", "10.42.0.0/16", "192.168.2.0/24")}


@pytest.mark.kernel
def test_an_ingress_chain_on_a_name_no_device_can_take_drops_nothing_and_is_no_block(
        ns: str) -> None:
    # Linux 6.16+ hooks a netdev chain on a name no device holds yet; one with a space
    # never gets a device (dev_valid_name), so the chain never sees a packet. It was read
    # as a drop on every interface: a conflict with the pods' forward rule.
    run_in(ns, ["ip", "link", "add", "cni0", "type", "veth", "peer", "name", "eth0"])
    try:
        run_in(ns, ["nft", "-f", "-"], input_text=(
            'table netdev edge {\n\tchain in {\n\t\ttype filter hook ingress devices = { '
            f'"x y", cni0 }} priority 0; policy accept;\n\t\t{DROP}\n\t}}\n}}\n'))
    except NetnsCommandError:
        pytest.skip("this kernel hooks no chain on a name without a device")
    with NftablesBackend(ns, keep_read=False) as backend:
        blocks = {o for o in backend.observe().foreign if isinstance(o, ForwardBlock)}
    assert {b.in_interface for b in blocks} == {"cni0"}


# An ingress chain's policy drop, after its rules (a netdev chain refuses `ct` tests; an
# inet one takes them, but conntrack has not run yet at ingress: `established` takes no
# reply). The pods' packets come in by cni0, the database's replies by the uplink, eth0.
_POLICY_DROP = ("table {family} edge {{\n\tchain in {{\n\t\ttype filter hook ingress device "
                "{device} priority 0; policy drop;\n{rules}\t}}\n}}\n")
_NEIGHBOURS = "\t\tip6 nexthdr icmpv6 accept\n"  # IPv6's neighbour discovery
_ARP = "\t\tmeta protocol arp accept\n"  # a netdev chain sees ARP too (an inet one: no)
# (family, device, rules): whether the pod's connections are dropped
POLICY_CASES: dict[str, tuple[str, str, str, bool]] = {
    "the pods' device": ("netdev", "cni0", "", True),
    "the uplink, its replies accepted by conntrack": (
        "inet", "eth0", "\t\tct state established,related accept\n" + _NEIGHBOURS, True),
    "the pods' device, the pods accepted": (
        "netdev", "cni0", "\t\tip saddr 10.42.0.0/16 accept\n\t\tip6 saddr fd42:42::/56 "
        "accept\n" + _NEIGHBOURS + _ARP, False),
    "the uplink, the destination's replies accepted": (
        "netdev", "eth0", "\t\tip saddr 192.168.2.0/24 accept\n\t\tip6 saddr fd01:2::/64 "
        "accept\n" + _NEIGHBOURS + _ARP, False),
    "the uplink, every packet accepted": ("netdev", "eth0", "\t\taccept\n", False),
    # No forwarded packet comes in by the loopback device: it has no route but the local
    # table's, and was read as taking any address (a false conflict, the wanted forward
    # rule left out).
    "the loopback device, its own addresses accepted": (
        "netdev", "lo", "\t\tip saddr 127.0.0.0/8 accept\n\t\tip6 saddr ::1 accept\n", False),
}


@pytest.mark.kernel
@pytest.mark.lab
def test_an_ingress_policy_drop_is_a_conflict_exactly_where_it_drops_the_pods_traffic(
        require_root: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # Its policy drop was not judged (only its drop rules were): `k3snet plan` said 0
    # conflicts while the kernel dropped the pods' packets on cni0, or the replies on eth0.
    seen: dict[str, tuple[bool, bool]] = {}
    with SeedLab.create() as lab:
        monkeypatch.setenv("K3SNET_STATE_DIR", str(lab.state_dir))
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["apply", "-f", str(SEED), "--netns", lab.node]) == 0
        for case, (family, device, rules, _) in POLICY_CASES.items():
            run_in(lab.node, ["nft", "-f", "-"], input_text=_POLICY_DROP.format(
                family=family, device=device, rules=rules))
            try:
                reached = [lab.tcp_probe(version, timeout=1.0).ok for version in (4, 6)]
                out = io.StringIO()
                with contextlib.redirect_stdout(out):
                    code = main(["plan", "-f", str(SEED), "--netns", lab.node])
            finally:
                run_in(lab.node, ["nft", "delete", "table", family, "edge"])
            said = f"drop by nftables {family} edge in: iifname {device} policy drop"
            seen[case] = (not any(reached), code == 4 and said in out.getvalue())
            assert reached in ([False, False], [True, True]), (case, reached)
            assert code in (0, 4), (case, out.getvalue())
    assert seen == {case: (dropped, dropped) for case, (*_, dropped) in POLICY_CASES.items()}


@pytest.mark.kernel
@pytest.mark.lab
def test_an_ingress_fwd_to_another_device_diverts_the_pods_traffic_and_is_a_conflict(
        require_root: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """``fwd to "eth0"`` in an ingress chain on cni0 sends the pods' packets out by eth0
    as they came (to the node's own address): they are never forwarded, in either
    family. It was read as an unknown test with no verdict: no block, plan clean."""
    with SeedLab.create() as lab:
        monkeypatch.setenv("K3SNET_STATE_DIR", str(lab.state_dir))
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["apply", "-f", str(SEED), "--netns", lab.node]) == 0
        run_in(lab.node, ["nft", "-f", "-"], input_text=(
            "table netdev edge {\n\tchain in {\n\t\ttype filter hook ingress device cni0 "
            'priority 0; policy accept;\n\t\tfwd to "eth0"\n\t}\n}\n'))
        listed = run_in(lab.node, ["nft", "-j", "list", "chain", "netdev", "edge", "in"])
        assert '"fwd": {"dev": "eth0"}' in listed.stdout  # the kernel's own view
        assert not lab.tcp_probe(4, timeout=1.0).ok
        assert not lab.tcp_probe(6, timeout=1.0).ok
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["plan", "-f", str(SEED), "--netns", lab.node]) == 4  # a conflict
        conflicts = sorted(line for line in out.getvalue().splitlines()
                           if line.startswith("! "))
        assert conflicts == [
            "! forward accept 10.42.0.0/16 -> 192.168.2.0/24 oif eth0 (+ replies)",
            "! forward accept fd42:42::/56 -> fd01:2::/64 oif eth0 (+ replies)"], out.getvalue()
        assert "iifname cni0 fwd to eth0" in out.getvalue()


_ABSENT = ("table netdev edge {\n\tchain in {\n\t\ttype filter hook ingress device wlan0 "
           "priority 0; policy drop;\n\t}\n}\n")


def _blocks(backend: NftablesBackend) -> set[ForwardBlock]:
    return {o for o in backend.observe().foreign if isinstance(o, ForwardBlock)}


@pytest.mark.kernel
def test_an_ingress_chain_on_an_absent_device_drops_nothing_until_the_device_appears(
        ns: str) -> None:
    # The kernel hooks a chain on a name no device holds yet (Linux 6.16+): its policy
    # drop was read as dropping any address (a false conflict). It is said now, no block,
    # until a device of the name appears, which moves no generation id: the next observe
    # of the same backend reads again and finds the block.
    run_in(ns, ["ip", "link", "add", "cni0", "type", "veth", "peer", "name", "eth0"])
    run_in(ns, ["nft", "-f", "-"], input_text=_ABSENT)
    listed = run_in(ns, ["nft", "-j", "list", "chain", "netdev", "edge", "in"]).stdout
    assert '"hook": "ingress"' in listed  # the kernel's view
    assert '"policy": "drop"' in listed
    with NftablesBackend(ns, keep_read=False) as backend:
        assert _blocks(backend) == set()
        said = [w for w in backend.warnings if "netdev edge in is hooked on the ingress of "
                "wlan0, a device this node does not have now" in w]
        assert len(said) == 1
        assert "nft list chain netdev edge in" in said[0]
        run_in(ns, ["ip", "link", "add", "wlan0", "type", "veth", "peer", "name", "wlanp"])
        assert {(b.in_interface, b.rule) for b in _blocks(backend)} == {
            ("wlan0", "iifname wlan0 policy drop")}
        assert not any("does not have now" in w for w in backend.warnings)


@pytest.mark.kernel
@pytest.mark.lab
def test_an_ingress_policy_drop_on_an_absent_device_passes_the_pods_traffic_and_is_no_conflict(
        require_root: None, monkeypatch: pytest.MonkeyPatch) -> None:
    with SeedLab.create() as lab:
        monkeypatch.setenv("K3SNET_STATE_DIR", str(lab.state_dir))
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["apply", "-f", str(SEED), "--netns", lab.node]) == 0
        run_in(lab.node, ["nft", "-f", "-"], input_text=_ABSENT)
        assert lab.tcp_probe(4, timeout=1.0).ok  # the kernel drops nothing
        assert lab.tcp_probe(6, timeout=1.0).ok
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["plan", "-f", str(SEED), "--netns", lab.node]) == 0, out.getvalue()
        assert "0 conflict(s)" in out.getvalue()
        assert "hooked on the ingress of wlan0, a device this node does not have" in (
            out.getvalue())


@pytest.mark.kernel
def test_an_ingress_chain_whose_device_leaves_drops_nothing_from_the_next_observe(
        ns: str) -> None:
    # The mirror of the above: the device goes, the kernel keeps the chain hooked on its
    # name (no generation id moved). The block read while it was there stayed in the
    # observe cache: a conflict the kernel no longer makes, until another commit.
    run_in(ns, ["ip", "link", "add", "cni0", "type", "veth", "peer", "name", "eth0"])
    run_in(ns, ["ip", "link", "add", "wlan0", "type", "veth", "peer", "name", "wlanp"])
    run_in(ns, ["nft", "-f", "-"], input_text=_ABSENT)
    with NftablesBackend(ns, keep_read=False) as backend:
        assert {b.rule for b in _blocks(backend)} == {"iifname wlan0 policy drop"}
        run_in(ns, ["ip", "link", "del", "wlan0"])
        # The kernel's view: still hooked on the name (nft's JSON leaves devices out).
        listed = run_in(ns, ["nft", "list", "chain", "netdev", "edge", "in"]).stdout
        assert 'hook ingress device "wlan0"' in listed
        assert _blocks(backend) == set()
        assert any("hooked on the ingress of wlan0, a device this node does not have now"
                   in w for w in backend.warnings)
