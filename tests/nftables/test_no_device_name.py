"""A test of an interface name no device can have: iptables-nft's ``! -i +``.

``+`` matches every interface name, so ``! -i +`` matches none; iptables-nft writes it
as ``iifname "INVAL/D"`` (``oifname`` for ``! -o +``), a name no device can take (the
kernel's ``dev_valid_name`` refuses a ``/``). Read as a drop by a device, it was a
conflict of every forward rule (exit 4) while the kernel dropped no packet: such a test
now matches nothing, and its negation every packet.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from k3snet.cli import main
from k3snet.lab import SeedLab
from k3snet.lab.netns import run_in
from tests.nftables.test_foreign_cases import DROP
from tests.nftables.test_interface_blocks import _applied
from tests.nftables.test_named_address_sets import PODS, PODS6, fw, match, read, warned

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"


@pytest.mark.parametrize("key", ["iifname", "oifname"])
def test_a_drop_by_a_name_no_device_can_have_drops_nothing(key: str) -> None:
    found, reader = read(fw([[match("==", {"meta": {"key": key}}, "INVAL/D"), DROP]], {}))
    assert found == set()
    assert warned(reader, PODS, PODS6) == []


def test_a_drop_by_any_name_but_one_no_device_can_have_drops_every_packet() -> None:
    found, reader = read(fw([[match("!=", {"meta": {"key": "iifname"}}, "INVAL/D"), DROP]],
                            {}))
    assert found == set()
    assert warned(reader, PODS) == ["a rule that may drop any address (handle 2)"]


@pytest.mark.kernel
@pytest.mark.lab
def test_iptables_nfts_negated_plus_drops_nothing_and_is_no_conflict(
        require_root: None, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    with SeedLab.create() as lab:
        monkeypatch.setenv("K3SNET_STATE_DIR", str(lab.state_dir))
        _applied(lab)
        for tool in ("iptables-nft", "ip6tables-nft"):
            for flag in ("-i", "-o"):
                run_in(lab.node, [tool, "-w", "-I", "FORWARD", "1", "!", flag, "+",
                                  "-j", "DROP"])
        listed = json.loads(run_in(lab.node, ["nft", "-j", "list", "chain", "ip", "filter",
                                              "FORWARD"]).stdout)
        rights = [e["match"]["right"] for o in listed["nftables"] if "rule" in o
                  for e in o["rule"]["expr"] if "match" in e]
        assert rights == ["INVAL/D", "INVAL/D"]  # the kernel's view: a name no device has
        with ThreadPoolExecutor(2) as pool:
            probes = [pool.submit(lab.tcp_probe, f, timeout=2.0) for f in (4, 6)]
            assert [p.result().ok for p in probes] == [True, True]
        capsys.readouterr()
        assert main(["plan", "-f", str(SEED), "--netns", lab.node]) == 0, \
            capsys.readouterr().out
