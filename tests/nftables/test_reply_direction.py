"""An administrator's narrow accept of what comes back to the pods, with real packets.

k3snet's warning of another table's forward chain whose default drops a router's ICMP
error for the pods advises accepting what comes back to the pods in the reply direction
alone (``ip daddr PODS ct direction reply accept``), not every established or related
packet towards them (which also takes the later packets of a connection from outside to
a pod). An administrator who follows it gets no warning again, and the pods' flow and
the router's Packet Too Big pass. k3snet's own reply accept in its table
(``ip saddr DEST ip daddr PODS ct state established,related accept``) matches such a
later packet from outside too, and decides nothing: an accept ends only its own chain,
the administrator's chain drops it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from k3snet.cli import main
from k3snet.lab.netns import run_in
from tests.iptables.test_reply_direction import _ECHO
from tests.pmtu import learnt_mtu, narrow_the_path

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"

# The administrator's chain: the pods' traffic (the seed's, both families), what comes
# back to them in the reply direction, every other packet counted and dropped. The
# observer before it counts the later packets of a connection from the database to the
# pod (established, original direction): k3snet's reply accept matches them.
_ADMIN = """
table inet fw {{
    chain see {{
        type filter hook forward priority -10; policy accept;
        {ip} saddr {db} {ip} daddr {pod} ct state established ct direction original counter
    }}
    chain f {{
        type filter hook forward priority 0; policy drop;
        ip saddr 10.42.0.0/16 ip daddr 192.168.2.0/24 accept
        ip6 saddr fd42:42::/56 ip6 daddr fd01:2::/64 accept
        ip daddr 10.42.0.0/16 ct direction reply accept
        ip6 daddr fd42:42::/56 ct direction reply accept
        {ip} saddr {db} {ip} daddr {pod} meta l4proto {proto} accept comment "for a while"
        counter drop
    }}
}}
"""


def _counted(node: str) -> tuple[int, int]:
    """(the observer's packets, the administrator's final drop's), as the kernel counts."""
    listed = json.loads(run_in(node, ["nft", "-j", "list", "table", "inet", "fw"]).stdout)
    counts = {}
    for item in listed["nftables"]:
        rule = item.get("rule")
        if rule is None:
            continue
        for expr in rule["expr"]:
            if "counter" in expr:
                counts[rule["chain"]] = int(expr["counter"]["packets"])
    return counts["see"], counts["f"]


def _handle(node: str, comment: str) -> int:
    listed = json.loads(run_in(node, ["nft", "-j", "list", "chain", "inet", "fw", "f"]).stdout)
    return next(int(item["rule"]["handle"]) for item in listed["nftables"]
                if "rule" in item and item["rule"].get("comment") == comment)


@pytest.mark.kernel
@pytest.mark.lab
@pytest.mark.parametrize("family", [4, 6])
def test_the_narrow_accept_the_warning_advises_passes_the_pods_flow_and_errors_unwarned(
        require_root: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], family: int) -> None:
    from k3snet.lab import SeedLab  # noqa: PLC0415
    from k3snet.lab.seed import (  # noqa: PLC0415
        DB_ADDRESSES,
        NODE_ADDRESSES,
        POD_ADDRESSES,
        POD_CIDRS,
    )

    pods = POD_CIDRS[family]  # type: ignore[index]
    pod, db = POD_ADDRESSES[family], DB_ADDRESSES[family]  # type: ignore[index]
    ip = "ip6" if family == 6 else "ip"
    with SeedLab.create() as lab:
        monkeypatch.setenv("K3SNET_STATE_DIR", str(lab.state_dir))
        assert main(["apply", "-f", str(SEED), "--netns", lab.node]) == 0
        run_in(lab.router, ["ip", f"-{family}", "route", "add", pods, "via",
                            NODE_ADDRESSES[family]])  # type: ignore[index]
        run_in(lab.node, ["nft", "-f", "-"], input_text=_ADMIN.format(
            ip=ip, db=db, pod=pod,
            proto="ipv6-icmp" if family == 6 else "icmp"))
        capsys.readouterr()
        assert main(["plan", "-f", str(SEED), "--netns", lab.node]) == 0
        warned = [line for line in capsys.readouterr().out.splitlines()
                  if line.startswith("!! warning: nftables: ")]
        assert warned == []  # it was warned again: `ct direction reply` was not read
        assert lab.tcp_probe(family).ok
        narrow_the_path(lab)
        route = learnt_mtu(lab, family, db)
        assert "mtu 1280" in route, route
        # A connection from the database to the pod, let in by the administrator's rule
        # for a while: its first packet and the pod's answer (established).
        run_in(lab.db, [sys.executable, "-c", _ECHO, pod, "1", "wait"])
        handle = _handle(lab.node, "for a while")
        run_in(lab.node, ["nft", "delete", "rule", "inet", "fw", "f", "handle", str(handle)])
        seen, dropped = _counted(lab.node)
        run_in(lab.db, [sys.executable, "-c", _ECHO, pod, "2", "send"])
        for _ in range(1000):  # until the node's forward hook took the packet
            now = _counted(lab.node)
            if now[1] != dropped:
                break
        else:
            pytest.fail("the echo request never reached the node's forward hook")
        # The connection's next packet (established, original direction; k3snet's reply
        # accept matches it) is dropped by the administrator's chain all the same.
        assert now == (seen + 1, dropped + 1), now
