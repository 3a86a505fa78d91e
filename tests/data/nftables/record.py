"""Record the nftables listings the root-free tests read (as root).

Run: ``.venv/bin/python tests/data/nftables/record.py``.

Each scenario is built in a fresh network namespace (deleted afterwards; the
root namespace is never touched), then ``nft -j list ruleset`` is written to
``<scenario>.ruleset.json`` and, when the ruleset holds more than k3snet's table,
``nft -j list table inet k3snet`` to ``<scenario>.table.json``. The files are
committed; run this again only to refresh them (for example after a change of
how k3snet lays out its rules), and check the diff.

Scenarios
    ``k3s-node``: flannel and kube-proxy through iptables-nft, kube-proxy's
    nftables mode, an administrator's ``inet edge`` table, and k3snet's table
    holding one rule of each shape.
    ``forward-drops``: foreign forward chains (one table each) where a drop or
    reject comes before an accept (directly, or in a chain jumped to), and one
    where the drop cannot match the accepted packets. ``forward-two-chains``: an accept
    in one forward base chain, a drop in another.
    ``drift-*``: k3snet's table, then one kind of drift made by hand.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from k3snet.backends.nftables import NftablesBackend
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model import ForwardRule, MasqueradeRule
from k3snet.planner import plan
from k3snet.render.nftables import nft_rules, render_nftables_conf
from k3snet.testing.k3s import FLANNEL_FORWARD_V4, FLANNEL_NAT_V4, KUBE_PROXY_NAT_V4

# Run as a script from anywhere: the scenario is shared with the tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tests.nftables.scenario import K3SNET_RULES, NFT_FOREIGN

HERE = Path(__file__).resolve().parent

IPTABLES_V4 = "\n".join([
    "*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
    ":POSTROUTING ACCEPT [0:0]", ":FLANNEL-POSTRTG - [0:0]", ":KUBE-POSTROUTING - [0:0]",
    ":KUBE-SERVICES - [0:0]", *KUBE_PROXY_NAT_V4[:3], *FLANNEL_NAT_V4, *KUBE_PROXY_NAT_V4[3:],
    "COMMIT",
    "*filter", ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]",
    ":FLANNEL-FWD - [0:0]", *FLANNEL_FORWARD_V4, "COMMIT", "",
])


FORWARD_DROPS = """\
table inet fw1 {
	chain forward {
		type filter hook forward priority filter; policy accept;
		ct state established,related accept
		ip daddr 192.168.2.0/24 drop
		ip saddr 10.42.0.0/16 accept
		ip daddr 10.42.0.0/16 accept
	}
}
table ip fw2 {
	chain forward {
		type filter hook forward priority filter; policy accept;
		ct state established,related accept
		jump guard
		ip saddr 10.60.0.0/16 accept
	}
	chain guard {
		ip daddr 192.168.3.0/24 drop
	}
}
table ip fw3 {
	chain forward {
		type filter hook forward priority filter; policy accept;
		ct state established,related accept
		ip saddr 10.99.0.0/16 drop
		ip saddr 10.70.0.0/16 accept
	}
}
table ip fw4 {
	chain forward {
		type filter hook forward priority filter; policy accept;
		ct state established,related accept
		ip daddr 192.168.4.0/24 reject
		ip saddr 10.80.0.0/16 accept
	}
}
"""

# Two base chains on the forward hook: an accept in one does not stop the other
# from dropping the packet (firewalld#527).
FORWARD_TWO_CHAINS = """\
table ip fw1 {
	chain forward {
		type filter hook forward priority filter; policy accept;
		ct state established,related accept
		ip saddr 10.42.0.0/16 accept
	}
}
table inet fw2 {
	chain forward {
		type filter hook forward priority filter + 10; policy accept;
		ip daddr 192.168.2.0/24 drop
	}
}
"""

# One rule of each shape k3snet writes.
K3SNET = K3SNET_RULES

FORGED = "k3snet:0123456789abcdef"
"""A well-formed tag that no object's rules hash to."""


def nft(ns: str, script: str) -> None:
    run_in(ns, ["nft", "-f", "-"], input_text=script)


def apply_k3snet(ns: str) -> None:
    with NftablesBackend(ns, observe_foreign=False) as backend:
        backend.apply(plan(backend.observe(), K3SNET))


def k3s_node(ns: str) -> None:
    run_in(ns, ["iptables-nft-restore"], input_text=IPTABLES_V4)
    nft(ns, NFT_FOREIGN)
    apply_k3snet(ns)


def drift_policy(ns: str) -> None:
    apply_k3snet(ns)
    nft(ns, "add chain inet k3snet forward { type filter hook forward priority filter; "
            "policy drop; }\n")


def drift_hook(ns: str) -> None:
    nft(ns, render_nftables_conf(K3SNET).replace("priority srcnat;", "priority srcnat + 5;"))


def drift_extra_rule(ns: str) -> None:
    apply_k3snet(ns)
    nft(ns, "add rule inet k3snet postrouting counter\n"
            "add rule inet k3snet forward ip saddr 10.0.0.0/8 drop\n")


def drift_extra_chain(ns: str) -> None:
    apply_k3snet(ns)
    # A chain named like an nft keyword, which only JSON can name, with a rule.
    ref = {"family": "inet", "table": "k3snet"}
    run_in(ns, ["nft", "-j", "-f", "-"], input_text=json.dumps({"nftables": [
        {"add": {"chain": {**ref, "name": "counter"}}},
        {"add": {"rule": {**ref, "chain": "counter", "expr": [{"accept": None}]}}},
    ]}))


def drift_forged_tag(ns: str) -> None:
    apply_k3snet(ns)
    masquerade = nft_rules(MasqueradeRule("10.77.0.0/16"))[0]
    nft(ns, f'add rule inet k3snet postrouting {masquerade.body} comment "{FORGED}"\n')


def drift_duplicate(ns: str) -> None:
    apply_k3snet(ns)
    lines = []
    for obj in (MasqueradeRule("10.43.0.0/16", exclude=["10.0.0.0/8", "224.0.0.0/4"]),
                ForwardRule("fd42:42::/56", "fd01:2::/64")):
        lines += [f'add rule inet k3snet {r.chain} {r.body} comment "{r.comment}"'
                  for r in nft_rules(obj)]
    nft(ns, "\n".join(lines) + "\n")


SCENARIOS: dict[str, Callable[[str], None]] = {
    "k3s-node": k3s_node,
    "forward-drops": lambda ns: nft(ns, FORWARD_DROPS),
    "forward-two-chains": lambda ns: nft(ns, FORWARD_TWO_CHAINS),
    "drift-policy": drift_policy,
    "drift-hook": drift_hook,
    "drift-extra-rule": drift_extra_rule,
    "drift-extra-chain": drift_extra_chain,
    "drift-forged-tag": drift_forged_tag,
    "drift-duplicate": drift_duplicate,
}


def dump(ns: str, argv: list[str], path: Path) -> None:
    listing = json.loads(run_in(ns, ["nft", "-j", *argv]).stdout)
    path.write_text(json.dumps(listing, indent=1, sort_keys=True) + "\n")


def main() -> int:
    if os.geteuid() != 0:
        sys.stderr.write("needs root (network namespaces)\n")
        return 2
    for name, build in SCENARIOS.items():
        with temporary_netns("rec") as ns:
            build(ns)
            ruleset = HERE / f"{name}.ruleset.json"
            table = HERE / f"{name}.table.json"
            dump(ns, ["list", "ruleset"], ruleset)
            if run_in(ns, ["nft", "list", "table", "inet", "k3snet"], check=False).returncode == 0:
                dump(ns, ["list", "table", "inet", "k3snet"], table)
                if table.read_text() == ruleset.read_text():
                    table.unlink()
        sys.stdout.write(f"recorded {name}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
