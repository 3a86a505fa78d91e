"""A node whose iptables-nft-save stops at a rule written with nft it cannot decode
(iptables-nft 1.8.9+, exit 3: ``meta mark set 3`` in ``ip mangle``, the first table it
prints): the capture lost the whole IPv4 save, filter and nat with it, and the doctor
predicted mode ``auto`` from iptables-legacy's save alone (kubelet's canary: legacy),
where k3snet's iptables backend reads the tables apart and writes into iptables-nft.
The capture reads them apart too; the table that stops is read from nft's view."""

from __future__ import annotations

import shutil

import pytest

from k3snet.doctor import NodeCapture, NodeState
from k3snet.lab.netns import run_in, temporary_netns


@pytest.mark.kernel
@pytest.mark.usefixtures("require_root")
def test_a_save_stopped_in_mangle_is_captured_table_by_table() -> None:
    for tool in ("iptables-nft", "iptables-legacy", "iptables-nft-save", "nft"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    with temporary_netns("dsave") as ns:
        run_in(ns, ["iptables-nft", "-w", "-t", "nat", "-N", "FLANNEL-POSTRTG"])
        run_in(ns, ["iptables-nft", "-w", "-t", "nat", "-A", "POSTROUTING", "-s",
                    "10.42.0.0/16", "-j", "FLANNEL-POSTRTG"])
        run_in(ns, ["iptables-nft", "-w", "-A", "FORWARD", "-s", "10.42.0.0/16", "-j",
                    "ACCEPT"])
        run_in(ns, ["iptables-nft", "-w", "-t", "mangle", "-A", "PREROUTING", "-j", "ACCEPT"])
        run_in(ns, ["nft", "add", "rule", "ip", "mangle", "PREROUTING", "meta", "mark",
                    "set", "3"])
        run_in(ns, ["iptables-legacy", "-w", "-t", "nat", "-N", "KUBE-KUBELET-CANARY"])
        saved = run_in(ns, ["iptables-nft-save"], check=False)
        if saved.returncode == 0 or "*nat" in saved.stdout:
            pytest.skip("this iptables-nft-save prints the rule, or mangle after nat")
        capture = NodeCapture.read_live(ns)
    assert "iptables-nft-v4.save" not in capture.missing, capture.missing
    text = capture.text("iptables-nft-v4.save")
    assert "*nat" in text, text
    assert "*filter" in text, text
    assert "# k3snet: table `mangle' stopped the save" in text, text
    state = NodeState.from_capture(capture)
    assert state.iptables_mode is not None
    assert state.iptables_mode[0] == "nft", state.iptables_mode
    # The table the save could not print is read from nft's own view.
    wheres = [c.where for c in state.chains]
    assert any("mangle" in w and "PREROUTING" in w and not w.startswith("iptables")
               for w in wheres), wheres
    assert any(w.startswith("iptables-nft") and "nat" in w for w in wheres), wheres
