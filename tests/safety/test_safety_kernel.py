"""On a lab node: concurrent applies never duplicate, and destroy leaves only foreign state.

Driven through the CLI as an operator (or two) would, checked with the kernel's
own listings.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from k3snet.demo import SPEC_PATH
from k3snet.lab import SeedLab
from k3snet.lab.netns import run_in
from k3snet.testing.k3s import FLANNEL_FORWARD_V4, FLANNEL_NAT_V4, KUBE_PROXY_NAT_V4
from tests.in_process import k3snet

pytestmark = [pytest.mark.kernel, pytest.mark.lab, pytest.mark.usefixtures("require_root")]

FOREIGN_IPTABLES = "\n".join([
    "*nat",
    ":FLANNEL-POSTRTG - [0:0]",
    ":KUBE-SERVICES - [0:0]",
    ":KUBE-POSTROUTING - [0:0]",
    *KUBE_PROXY_NAT_V4,
    *FLANNEL_NAT_V4,
    "COMMIT",
    "*filter",
    ":FLANNEL-FWD - [0:0]",
    *FLANNEL_FORWARD_V4,
    "-A FORWARD -s 10.99.0.0/16 -j DROP",
    "COMMIT",
    "",
])


FOREIGN_IP6TABLES = "\n".join([
    "*filter",
    ":FLANNEL-FWD - [0:0]",
    '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD',
    '-A FLANNEL-FWD -s fd42:42::/56 -m comment --comment "flanneld forward" -j ACCEPT',
    "COMMIT",
    "",
])


def _k3snet(*args: str, lab: SeedLab, lock_dir: Path,
            read_cache: str | None = None) -> subprocess.Popen[str]:
    env = dict(os.environ, K3SNET_STATE_DIR=str(lab.state_dir), K3SNET_LOCK_DIR=str(lock_dir))
    if read_cache is not None:  # the nftables backend's kept read (conftest: off)
        env["K3SNET_READ_CACHE"] = read_cache
    return subprocess.Popen([sys.executable, "-m", "k3snet.cli", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _run(*args: str, lab: SeedLab, lock_dir: Path,
         read_cache: str | None = None) -> subprocess.CompletedProcess[str]:
    """``k3snet ARGS`` as :func:`_k3snet` runs it, by main() in this process
    (tests/in_process.py): the concurrent writers alone need processes of their own."""
    environ = {"K3SNET_STATE_DIR": str(lab.state_dir), "K3SNET_LOCK_DIR": str(lock_dir)}
    if read_cache is not None:
        environ["K3SNET_READ_CACHE"] = read_cache
    return k3snet(*args, **environ)


def _k3snet_rules(ns: str) -> list[str]:
    """The comments of the rules in k3snet's table, as the kernel lists them."""
    done = run_in(ns, ["nft", "-j", "list", "table", "inet", "k3snet"], check=False)
    if done.returncode != 0:
        return []
    items = json.loads(done.stdout)["nftables"]
    return sorted(str(i["rule"].get("comment")) for i in items if "rule" in i)


_COUNTERS = re.compile(r"\[\d+:\d+\]")


def _routes(listing: list[dict[str, object]]) -> list[dict[str, object]]:
    """Routes minus the IPv6 link-local ones the kernel adds while lab links come up."""
    return [r for r in listing if not (r.get("protocol") == "kernel"
                                       and str(r.get("dst", "")).startswith(("fe80", "ff00")))]


def _without_counters(item: object) -> object:
    """An nft JSON item with packet/byte counters zeroed (the probe's traffic counts)."""
    if isinstance(item, dict):
        return {k: ({"packets": 0, "bytes": 0} if k == "counter" else _without_counters(v))
                for k, v in item.items()}
    if isinstance(item, list):
        return [_without_counters(v) for v in item]
    return item


def _everything(ns: str) -> dict[str, object]:
    """The node as the kernel lists it: routes, every nftables table, iptables, sysctls."""
    def text(*argv: str) -> str:
        return run_in(ns, list(argv)).stdout

    ruleset = json.loads(text("nft", "-j", "list", "ruleset"))["nftables"]
    return {
        "routes4": _routes(json.loads(text("ip", "-4", "-j", "route", "show", "table", "all"))),
        "routes6": _routes(json.loads(text("ip", "-6", "-j", "route", "show", "table", "all"))),
        "nft": [_without_counters(i) for i in ruleset if "metainfo" not in i],
        "iptables": [_COUNTERS.sub("[0:0]", line) for tool in ("iptables-save", "ip6tables-save")
                     for line in text(tool).splitlines() if not line.startswith("#")],
        "ip_forward": text("cat", "/proc/sys/net/ipv4/ip_forward"),
        "forwarding6": text("cat", "/proc/sys/net/ipv6/conf/all/forwarding"),
    }


@pytest.mark.parametrize("read_cache", ["off", "on"])
def test_concurrent_applies_never_duplicate_rules(tmp_path: Path, read_cache: str) -> None:
    # "on": each process may take the table as the one before it left it (the kept read).
    backends = ["--backend", "netlink", "--backend", "nftables"]
    with SeedLab.create() as lab:
        args = ("apply", "-f", str(SPEC_PATH), *backends, "--netns", lab.node)
        single = _run(*args, lab=lab, lock_dir=tmp_path, read_cache=read_cache)
        assert single.returncode == 0, single.stderr
        expected = _k3snet_rules(lab.node)
        assert expected
        for _round in range(4):
            gone = _run("destroy", *backends, "--netns", lab.node, "--auto-approve", lab=lab,
                        lock_dir=tmp_path, read_cache=read_cache)
            assert gone.returncode == 0, gone.stderr
            assert _k3snet_rules(lab.node) == []
            writers = [_k3snet(*args, lab=lab, lock_dir=tmp_path, read_cache=read_cache)
                       for _ in range(3)]
            for writer in writers:
                _out, err = writer.communicate(timeout=120)
                assert writer.returncode == 0, err
            assert _k3snet_rules(lab.node) == expected
        kept = list((lab.state_dir / "nftables-read").glob("*.kept"))
        assert bool(kept) == (read_cache == "on")


def test_destroy_on_a_node_full_of_foreign_state_leaves_only_the_foreign_state(
        tmp_path: Path) -> None:
    backends = ["--backend", "netlink", "--backend", "nftables:nat",
                "--backend", "iptables:forward"]
    with SeedLab.create() as lab:
        run_in(lab.node, ["iptables-restore", "--noflush"], input_text=FOREIGN_IPTABLES)
        # K3s nodes have ip6tables state too (and k3snet would otherwise leave behind the
        # empty built-in ip6 filter table its first IPv6 rule makes iptables-nft create).
        run_in(lab.node, ["ip6tables-restore", "--noflush"], input_text=FOREIGN_IP6TABLES)
        for argv in (["nft", "add", "table", "inet", "admin"],
                     ["nft", "add", "chain", "inet", "admin", "post",
                      "{ type nat hook postrouting priority 50; }"],
                     ["nft", "add", "rule", "inet", "admin", "post", "ip", "saddr",
                      "10.77.0.0/16", "masquerade"],
                     ["ip", "route", "add", "198.51.100.0/24", "via", "192.168.1.1",
                      "proto", "static"],
                     ["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=2"]):
            run_in(lab.node, argv)
        before = _everything(lab.node)
        spec = tmp_path / "spec.yaml"
        spec.write_text(SPEC_PATH.read_text())
        applied = _run("apply", "-f", str(spec), *backends, "--netns", lab.node, lab=lab,
                       lock_dir=tmp_path)
        assert applied.returncode == 0, applied.stderr
        assert lab.tcp_probe(4).ok
        assert _everything(lab.node) != before

        refused = _run("destroy", *backends, "--netns", lab.node, lab=lab, lock_dir=tmp_path)
        assert refused.returncode == 1
        assert "pass --auto-approve" in refused.stderr
        preview = _run("destroy", *backends, "--netns", lab.node, "--dry-run", lab=lab,
                       lock_dir=tmp_path)
        assert preview.returncode == 2
        assert "- masquerade fd42:42::/56" in preview.stdout  # IPv4: flannel masquerades

        gone = _run("destroy", *backends, "--netns", lab.node, "--auto-approve", lab=lab,
                    lock_dir=tmp_path)
        assert gone.returncode == 0, gone.stderr
        assert _everything(lab.node) == before
        again = _run("destroy", *backends, "--netns", lab.node, "--auto-approve", lab=lab,
                     lock_dir=tmp_path)
        assert "Nothing to destroy" in again.stdout


def test_an_empty_spec_does_not_tear_down_a_lab_node(tmp_path: Path) -> None:
    backends = ["--backend", "netlink", "--backend", "nftables"]
    with SeedLab.create() as lab:
        applied = _run("apply", "-f", str(SPEC_PATH), *backends, "--netns", lab.node, lab=lab,
                       lock_dir=tmp_path)
        assert applied.returncode == 0, applied.stderr
        before = _everything(lab.node)
        empty = tmp_path / "empty.yaml"
        empty.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                         "destinations: []\n")
        refused = _run("apply", "-f", str(empty), *backends, "--netns", lab.node, "--no-facts",
                       lab=lab, lock_dir=tmp_path)
        assert refused.returncode == 1
        assert "deletes everything k3snet owns" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert _everything(lab.node) == before
