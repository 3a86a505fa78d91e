"""A drop naming addresses in a nat chain on the postrouting hook after k3snet's.

The kernel runs the nat chains of a hook in priority order for a connection's first
packet until one sets up its translation: a chain after k3snet's (``srcnat + 10``)
never sees a connection k3snet's masquerade translated, and sees every other one. Its
drops naming addresses were passed by whole (no block, no default): with ``masquerade:
mode: off`` (or a forward rule whose destination k3snet does not masquerade)
``ip daddr 192.168.2.0/24 drop`` there dropped the pods' connections while ``k3snet
plan`` said nothing. Such a rule is now judged as that chain's policy drop is: a warning
naming it when k3snet's NAT does not translate the forward rule's connections, none when
it does. The lab test checks the kernel's own view (the rule's counter).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from k3snet.cli import main
from k3snet.lab import SeedLab
from k3snet.lab.netns import run_in

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"

DROP_AFTER_K3SNET = """
table ip other {
    chain post {
        type nat hook postrouting priority srcnat + 10; policy accept;
        ip daddr 192.168.2.0/24 counter drop
    }
}
"""


def _spec_without_masquerade(tmp_path: Path) -> Path:
    text = SEED.read_text()
    assert "  mode: destinations\n" in text
    path = tmp_path / "seed-no-masquerade.yaml"
    path.write_text(text.replace("  mode: destinations\n", '  mode: "off"\n'))
    return path


def _warnings(out: str) -> list[str]:
    return [line.removeprefix("!! warning: ") for line in out.splitlines()
            if line.startswith("!! warning: nftables: ")]


@pytest.mark.kernel
def test_a_drop_after_k3snet_s_nat_is_a_warning_only_where_k3snet_does_not_translate(
        ns: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_in(ns, ["nft", "-f", "-"], input_text=DROP_AFTER_K3SNET)
    for spec, warned in ((SEED, False), (_spec_without_masquerade(tmp_path), True)):
        capsys.readouterr()
        assert main(["plan", "-f", str(spec), "--backend", "nftables", "--netns", ns,
                     "--no-facts"]) == 2
        warnings = _warnings(capsys.readouterr().out)
        if not warned:
            assert warnings == [], spec
            continue
        (warning,) = warnings
        assert warning.startswith("nftables: ip other chain post, a nat chain ")
        assert "(a rule that may drop ip daddr 192.168.2.0/24 (handle " in warning
        assert "may drop forward accept 10.42.0.0/16 -> 192.168.2.0/24" in warning


def _dropped(node: str) -> int:
    listed = json.loads(run_in(node, ["nft", "-j", "list", "chain", "ip", "other",
                                      "post"]).stdout)["nftables"]
    return sum(e["counter"]["packets"] for item in listed if "rule" in item
               for e in item["rule"]["expr"] if "counter" in e)


@pytest.mark.kernel
@pytest.mark.lab
def test_the_kernel_runs_the_later_nat_chain_exactly_where_the_plan_warns(
        require_root: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # The pod's connection to the database: with k3snet's masquerade the later chain's
    # drop never counts a packet; without it, the connection's first packet is dropped
    # there (the database cannot answer an untranslated pod anyway: the counter says
    # what the kernel ran).
    for spec, warned in ((SEED, False), (_spec_without_masquerade(tmp_path), True)):
        with SeedLab.create() as lab:
            monkeypatch.setenv("K3SNET_STATE_DIR", str(lab.state_dir))
            assert main(["apply", "-f", str(spec), "--netns", lab.node]) == 0
            run_in(lab.node, ["nft", "-f", "-"], input_text=DROP_AFTER_K3SNET)
            lab.tcp_probe(4, timeout=1.0)
            capsys.readouterr()
            assert main(["plan", "-f", str(spec), "--netns", lab.node]) == 0
            assert bool(_warnings(capsys.readouterr().out)) == warned
            assert (_dropped(lab.node) > 0) == warned
