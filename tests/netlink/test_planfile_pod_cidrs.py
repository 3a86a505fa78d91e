"""A plan file carries the spec's pod CIDRs to ``apply FILE``.

The netlink backend judges an IPv6 source-specific route inside k3snet's destination by
the pod CIDRs (``pod_cidrs``, filled from ``cluster.podCIDRs``): ``ip -6 route add
fd01:2::/80 from fd43::/56 via fd01:9::1 dev eth1`` beside k3snet's ``fd01:2::/64``
takes no pod's packet. ``k3snet plan -f SPEC --out FILE`` said nothing of it, while
``k3snet apply FILE``, built without them, named it as taking the pods' packets.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from k3snet.cli import main
from k3snet.errors import PlanError
from k3snet.planfile import PlanFile
from tests.netlink.links import ip
from tests.netlink.test_source_routes import _lab

_SPEC = ("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
         "cluster: {podCIDRs: [fd42:42::/56], serviceCIDRs: [fd43:43::/112]}\n"
         "destinations:\n  - {cidr: 'fd01:2::/64', gateway: 'fd01:1::1', device: eth0}\n")
_OUTSIDE = ("fd01:2::/80", "from", "fd43::/56", "via", "fd01:9::1", "dev", "eth1")


def _printed(capsys: pytest.CaptureFixture[str]) -> str:
    out, err = capsys.readouterr()
    return out + err


@pytest.mark.kernel
@pytest.mark.usefixtures("require_root")
def test_apply_of_a_plan_file_judges_source_routes_by_the_spec_s_pod_cidrs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path / "state"))
    spec, saved = tmp_path / "spec.yaml", tmp_path / "node.plan"
    spec.write_text(_SPEC)
    with _lab() as (node, _peers):
        ip(node, "-6", "route", "add", *_OUTSIDE)
        common = ["--netns", node, "--backend", "netlink"]
        assert main(["plan", "-f", str(spec), "--no-facts", *common, "--out", str(saved)]) == 2
        assert "source-specific" not in _printed(capsys)
        assert json.loads(saved.read_text())["pod_cidrs"] == ["fd42:42::/56"]
        assert main(["apply", str(saved)]) == 0
        assert "source-specific" not in _printed(capsys)
        routes = json.loads(ip(node, "-6", "-j", "route", "show", "fd01:2::/64"))
        assert [r["gateway"] for r in routes] == ["fd01:1::1"]
        # With the spec's pod CIDRs changed to hold that source, the same route is named.
        spec.write_text(_SPEC.replace("fd42:42::/56", "fd43::/48"))
        assert main(["apply", "-f", str(spec), "--no-facts", *common]) == 0
        assert "source-specific route `fd01:2::/80 from fd43::/56" in _printed(capsys)


def test_a_plan_file_of_before_without_pod_cidrs_reads_as_none_known(tmp_path: Path) -> None:
    saved = tmp_path / "node.plan"
    assert main(["plan", "-f", str(Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"),
                 "--no-facts", "--backend", "memory", "--out", str(saved)]) == 2
    document = json.loads(saved.read_text())
    assert document["pod_cidrs"] == ["10.42.0.0/16", "fd42:42::/56"]
    assert PlanFile.read(saved, netns=None).pod_cidrs == ("10.42.0.0/16", "fd42:42::/56")
    del document["pod_cidrs"]
    saved.write_text(json.dumps(document))
    assert PlanFile.read(saved, netns=None).pod_cidrs is None
    assert main(["apply", str(saved)]) == 0
    # A zone id: the CIDR module reads it, the spec and the backends refuse it; the file
    # is refused as it is read, not by a backend it built.
    for bad in (["nope"], "fd42:42::/56", [7], ["fe80::%eth0/64"], ["10.42.0.1/16"]):
        saved.write_text(json.dumps({**document, "pod_cidrs": bad}))
        with pytest.raises(PlanError, match="pod_cidrs"):
            PlanFile.read(saved, netns=None)
