"""``k3snet destroy`` naming no backend: every node backend holding k3snet's objects is
looked through, and only k3snet's objects go (foreign look-alikes stay).

Driven through the CLI, checked with the kernel's own listings (``nft -j list
ruleset``, ``iptables-save`` of both flavours, ``ip -j route``, the sysctls).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from k3snet.demo import SPEC_PATH
from k3snet.lab import SeedLab
from k3snet.lab.netns import run_in
from tests.in_process import k3snet

pytestmark = [pytest.mark.kernel, pytest.mark.lab, pytest.mark.usefixtures("require_root")]

_COUNTERS = re.compile(r"\[\d+:\d+\]")

# An admin's objects named like k3snet's, without its marks: an nftables table named as
# k3snet's in another family (no marker chain), an iptables chain named K3SNET-* whose
# rule carries no k3snet tag, jumped to from POSTROUTING.
LOOK_ALIKES_NFT = [
    ["nft", "add", "table", "ip", "k3snet"],
    ["nft", "add", "chain", "ip", "k3snet", "post",
     "{ type nat hook postrouting priority 100; }"],
    ["nft", "add", "rule", "ip", "k3snet", "post", "ip", "saddr", "10.77.0.0/16", "masquerade"],
]
LOOK_ALIKE_IPTABLES = "\n".join([
    "*nat",
    ":K3SNET-ADMIN - [0:0]",
    "-A POSTROUTING -j K3SNET-ADMIN",
    "-A K3SNET-ADMIN -s 10.88.0.0/16 -j MASQUERADE",
    "COMMIT",
    "*filter",
    "-A FORWARD -s 10.99.0.0/16 -j DROP",
    "COMMIT",
    "",
])
# The built-in chains a K3s node has in use (else iptables-nft creates them for k3snet's
# jumps, and they stay, empty: not k3snet's to delete).
ADMIN_IP6TABLES = ("*nat\n-A POSTROUTING -s fd99::/64 -j RETURN\nCOMMIT\n"
                   "*filter\n-A FORWARD -s fd99::/64 -j DROP\nCOMMIT\n")


def _run(*args: str, lab: SeedLab, lock_dir: Path) -> subprocess.CompletedProcess[str]:
    """``k3snet ARGS`` on the lab's state and lock directories, by main() in this process
    (tests/in_process.py)."""
    return k3snet(*args, K3SNET_STATE_DIR=str(lab.state_dir), K3SNET_LOCK_DIR=str(lock_dir))


def _everything(ns: str) -> dict[str, Any]:
    """The node as the kernel lists it: routes, nftables, both iptables flavours, sysctls."""
    def text(*argv: str) -> str:
        return run_in(ns, list(argv)).stdout

    def routes(family: str) -> list[object]:
        listing = json.loads(text("ip", family, "-j", "route", "show", "table", "all"))
        return [r for r in listing if not (r.get("protocol") == "kernel" and str(
            r.get("dst", "")).startswith(("fe80", "ff00")))]

    ruleset = json.loads(text("nft", "-j", "list", "ruleset"))["nftables"]
    return {
        "routes4": routes("-4"),
        "routes6": routes("-6"),
        "nft": sorted(json.dumps(_without_handles(i), sort_keys=True) for i in ruleset
                      if "metainfo" not in i),
        **{tool: [_COUNTERS.sub("[0:0]", line) for line in text(tool).splitlines()
                  if not line.startswith("#")]
           for tool in ("iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save",
                        "ip6tables-legacy-save")},
        "ip_forward": text("cat", "/proc/sys/net/ipv4/ip_forward"),
        "forwarding6": text("cat", "/proc/sys/net/ipv6/conf/all/forwarding"),
    }


def _without_handles(item: object) -> object:
    """An nft JSON item without handles (a chain deleted and added again has a new one)."""
    if isinstance(item, dict):
        return {k: _without_handles(v) for k, v in item.items() if k != "handle"}
    if isinstance(item, list):
        return [_without_handles(v) for v in item]
    return item


def _k3snet_routes(ns: str) -> list[object]:
    return [r for family in ("-4", "-6") for r in json.loads(run_in(
        ns, ["ip", family, "-j", "route", "show", "table", "all", "proto", "211"]).stdout)]


def test_destroy_naming_no_backend_removes_the_iptables_backends_rules_and_no_look_alike(
        tmp_path: Path) -> None:
    # A node set up with `backends: [netlink, iptables]` (K3s on iptables): destroy
    # without -f used netlink and nftables, said success, and left k3snet's masquerade.
    with SeedLab.create() as lab:
        for argv in LOOK_ALIKES_NFT:
            run_in(lab.node, argv)
        run_in(lab.node, ["iptables-nft-restore", "--noflush"], input_text=LOOK_ALIKE_IPTABLES)
        run_in(lab.node, ["ip6tables-nft-restore", "--noflush"], input_text=ADMIN_IP6TABLES)
        before = _everything(lab.node)
        applied = _run("apply", "-f", str(SPEC_PATH), "--backend", "netlink", "--backend",
                       "iptables", "--netns", lab.node, lab=lab, lock_dir=tmp_path)
        assert applied.returncode == 0, applied.stderr
        assert any("K3SNET-POST" in line for line in _everything(lab.node)["iptables-nft-save"])

        preview = _run("destroy", "--netns", lab.node, "--dry-run", lab=lab, lock_dir=tmp_path)
        assert preview.returncode == 2, preview.stdout + preview.stderr
        assert "iptables-nft (" in preview.stdout
        assert "- masquerade" in preview.stdout
        assert "chain K3SNET-ADMIN is not k3snet's" in preview.stdout  # said, left alone

        gone = _run("destroy", "--netns", lab.node, "--auto-approve", "--output", "json",
                    lab=lab, lock_dir=tmp_path)
        assert gone.returncode == 0, gone.stderr
        document = json.loads(gone.stdout)
        assert set(document["discovered"]["held"]) == {"netlink", "iptables-nft"}
        assert "nftables" in document["discovered"]["empty"]
        assert _k3snet_routes(lab.node) == []
        assert _everything(lab.node) == before  # the look-alikes too, rule for rule

        again = _run("destroy", "--netns", lab.node, "--auto-approve", lab=lab,
                     lock_dir=tmp_path)
        assert again.returncode == 0, again.stderr
        assert "Nothing to destroy" in again.stdout


def test_destroy_naming_no_backend_removes_what_nftables_and_iptables_legacy_both_hold(
        tmp_path: Path) -> None:
    # Backends switched without a destroy in between: k3snet's nftables table and its
    # iptables-legacy chains both hold NAT rules (two groups: one kind, two backends).
    with SeedLab.create() as lab:
        for argv in LOOK_ALIKES_NFT:
            run_in(lab.node, argv)
        run_in(lab.node, ["iptables-legacy-restore", "--noflush"],
               input_text=LOOK_ALIKE_IPTABLES)
        run_in(lab.node, ["ip6tables-legacy-restore", "--noflush"], input_text=ADMIN_IP6TABLES)
        before = _everything(lab.node)
        for backends in (["--backend", "netlink", "--backend", "nftables"],
                         ["--backend", "iptables", "--backend-opt", "iptables.mode=legacy"]):
            applied = _run("apply", "-f", str(SPEC_PATH), *backends, "--netns", lab.node,
                           lab=lab, lock_dir=tmp_path)
            assert applied.returncode == 0, applied.stderr
        made = _everything(lab.node)
        assert any("K3SNET-" in line for line in made["iptables-legacy-save"])

        gone = _run("destroy", "--netns", lab.node, "--auto-approve", lab=lab,
                    lock_dir=tmp_path)
        assert gone.returncode == 0, gone.stderr
        assert "nftables (" in gone.stdout
        assert "iptables-legacy (" in gone.stdout
        assert _everything(lab.node) == before

        again = _run("destroy", "--netns", lab.node, "--auto-approve", lab=lab,
                     lock_dir=tmp_path)
        assert "Nothing to destroy" in again.stdout


def test_destroys_warnings_say_what_holds_after_the_removal(tmp_path: Path) -> None:
    # Each backend's warnings were those of its last read: the nftables backend's, read
    # before the iptables backend's removal, named k3snet's iptables chains, and the
    # iptables backend's (an idle flavour's too) k3snet's nftables table, both gone.
    with SeedLab.create() as lab:
        run_in(lab.node, ["iptables-nft-restore", "--noflush"], input_text=LOOK_ALIKE_IPTABLES)
        run_in(lab.node, ["ip6tables-nft-restore", "--noflush"], input_text=ADMIN_IP6TABLES)
        for backends in (["--backend", "netlink", "--backend", "nftables"],
                         ["--backend", "iptables", "--backend-opt", "iptables.mode=nft"]):
            applied = _run("apply", "-f", str(SPEC_PATH), *backends, "--netns", lab.node,
                           lab=lab, lock_dir=tmp_path)
            assert applied.returncode == 0, applied.stderr
        assert "table inet k3snet holds rules" in applied.stdout

        gone = _run("destroy", "--netns", lab.node, "--auto-approve", lab=lab,
                    lock_dir=tmp_path)
        assert gone.returncode == 0, gone.stderr
        assert "iptables-nft (" in gone.stdout
        assert "table inet k3snet holds rules" not in gone.stdout + gone.stderr
        assert "hold chains k3snet's iptables backend wrote" not in gone.stdout + gone.stderr
        # What stays is still said: the admin's chain named like k3snet's.
        assert "chain K3SNET-ADMIN is not k3snet's" in gone.stdout


def test_destroys_dry_run_names_no_table_it_removes_as_left_behind(tmp_path: Path) -> None:
    # The getting-started node (netlink and nftables): `destroy --dry-run` listed the
    # nftables table's rules to remove, then both iptables flavours' warning, twice the
    # same text, that the table was left by the nftables backend and that
    # `k3snet destroy --backend nftables` removes it.
    with SeedLab.create() as lab:
        applied = _run("apply", "-f", str(SPEC_PATH), "--backend", "netlink", "--backend",
                       "nftables", "--netns", lab.node, lab=lab, lock_dir=tmp_path)
        assert applied.returncode == 0, applied.stderr
        preview = _run("destroy", "--netns", lab.node, "--dry-run", lab=lab, lock_dir=tmp_path)
        assert preview.returncode == 2, preview.stdout + preview.stderr
        assert "nftables (" in preview.stdout
        assert "- masquerade" in preview.stdout
        assert "table inet k3snet holds rules" not in preview.stdout + preview.stderr


def test_destroy_naming_a_backend_keeps_to_it(tmp_path: Path) -> None:
    # Named backends are used as before: nothing else is looked through or removed.
    with SeedLab.create() as lab:
        applied = _run("apply", "-f", str(SPEC_PATH), "--backend", "netlink", "--backend",
                       "iptables", "--netns", lab.node, lab=lab, lock_dir=tmp_path)
        assert applied.returncode == 0, applied.stderr
        gone = _run("destroy", "--backend", "netlink", "--netns", lab.node, "--auto-approve",
                    lab=lab, lock_dir=tmp_path)
        assert gone.returncode == 0, gone.stderr
        assert "Looked through" not in gone.stdout
        assert any("K3SNET-" in line for line in _everything(lab.node)["iptables-nft-save"])


def test_destroy_naming_no_backend_finds_the_split_nftables_layout(tmp_path: Path) -> None:
    # `nftables.family=split` writes ip k3snet and ip6 k3snet: looked for with the default
    # layout (inet), they are k3snet's tables of the other layout (its marker chain).
    with SeedLab.create() as lab:
        before = _everything(lab.node)
        applied = _run("apply", "-f", str(SPEC_PATH), "--backend", "netlink", "--backend",
                       "nftables", "--backend-opt", "nftables.family=split",
                       "--netns", lab.node, lab=lab, lock_dir=tmp_path)
        assert applied.returncode == 0, applied.stderr
        gone = _run("destroy", "--netns", lab.node, "--auto-approve", lab=lab,
                    lock_dir=tmp_path)
        assert gone.returncode == 0, gone.stderr
        assert "nftables (" in gone.stdout
        assert _everything(lab.node) == before


def test_looking_with_every_backend_on_an_empty_node_creates_nothing(tmp_path: Path) -> None:
    # Reading an x_tables table the namespace lacks creates it; nothing may be left by
    # a destroy that found nothing (no legacy table, no nftables table, no state file).
    with SeedLab.create() as lab:
        before = _everything(lab.node)
        names = run_in(lab.node, ["cat", "/proc/net/ip_tables_names",
                                  "/proc/net/ip6_tables_names"], check=False).stdout
        for argv in (["--dry-run"], ["--auto-approve"]):
            done = _run("destroy", "--netns", lab.node, *argv, lab=lab, lock_dir=tmp_path)
            assert done.returncode == 0, done.stderr
            assert "held by none of them" in done.stdout
        assert _everything(lab.node) == before
        assert run_in(lab.node, ["cat", "/proc/net/ip_tables_names",
                                 "/proc/net/ip6_tables_names"], check=False).stdout == names


def test_chains_named_exactly_as_k3snets_without_its_tag_are_never_removed(
        tmp_path: Path) -> None:
    # The admin next door, on a node k3snet never ran on: chains with k3snet's very names,
    # made by hand in both flavours, their rules without k3snet's tag.
    hand_made = ("*nat\n:K3SNET-POSTROUTING - [0:0]\n-A POSTROUTING -j K3SNET-POSTROUTING\n"
                 "-A K3SNET-POSTROUTING -s 10.88.0.0/16 -j MASQUERADE\nCOMMIT\n"
                 "*filter\n:K3SNET-FORWARD - [0:0]\n-A FORWARD -j K3SNET-FORWARD\n"
                 "-A K3SNET-FORWARD -s 10.88.0.0/16 -j ACCEPT\nCOMMIT\n")
    with SeedLab.create() as lab:
        for tool in ("iptables-nft-restore", "iptables-legacy-restore"):
            run_in(lab.node, [tool, "--noflush"], input_text=hand_made)
        for argv in LOOK_ALIKES_NFT:
            run_in(lab.node, argv)
        before = _everything(lab.node)
        gone = _run("destroy", "--netns", lab.node, "--auto-approve", lab=lab,
                    lock_dir=tmp_path)
        assert gone.returncode == 0, gone.stderr
        assert "held by none of them" in gone.stdout
        assert "Nothing to destroy" in gone.stdout
        assert "chain K3SNET-POSTROUTING is not k3snet's" in gone.stdout
        assert _everything(lab.node) == before
