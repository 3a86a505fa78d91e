"""A spec's secret sysctls (``tcp_fastopen_key``, a ``stable_secret``) through the CLI in
a namespace: the kernel holds them (read with ``ip netns exec NS cat /proc/sys/...``),
nothing printed (plan, apply, observe, destroy, their -vv logs, text or JSON) shows
them, nor does a doctor bundle, and each file k3snet keeps that holds one (the plan
file, the netlink backend's record, which a rollback reads) is readable by its owner
alone. The interface's
``addr_gen_mode`` the secret's write set to 2 is given back by ``destroy``
(``test_stable_secret_modes.py``); the secret itself, which no write unsets, stays."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3snet.cli import main
from k3snet.doctor.bundle import NodeCapture
from k3snet.lab.netns import run_in, temporary_netns

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

FASTOPEN = "deadbeef-cafebabe-12345678-9abcdef0"
STABLE = "2001:0db8:dead:beef:cafe:babe:1234:5678"
FORMS = (FASTOPEN, STABLE, "deadbeef", "dead:beef", "cafebabe", "cafe:babe")


@pytest.fixture
def ns() -> Iterator[str]:
    with temporary_netns("route") as name:
        yield name


def _shown(ns: str, path: str) -> str:
    return run_in(ns, ["cat", f"/proc/sys/{path}"]).stdout.strip()


def _mode(ns: str) -> str:
    (link,) = json.loads(run_in(ns, ["ip", "-d", "-j", "link", "show", "lo"]).stdout)
    return str(link["inet6_addr_gen_mode"])


def _clean(text: str) -> None:
    for form in FORMS:
        assert form not in text.lower(), (form, text)


@pytest.mark.parametrize("output", ["text", "json"])
def test_secret_sysctls_are_written_printed_redacted_and_kept_in_owner_only_files(
        ns: str, tmp_path: Path, output: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("K3SNET_STATE_DIR", str(state))
    spec = tmp_path / "spec.yaml"
    spec.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\n"
                    "cluster: {podCIDRs: [10.42.0.0/16], serviceCIDRs: [10.43.0.0/16]}\n"
                    f"sysctls:\n  net.ipv4.tcp_fastopen_key: {FASTOPEN}\n"
                    f"  net.ipv6.conf.lo.stable_secret: '{STABLE}'\n")
    common = ["--netns", ns, "--backend", "netlink", "-vv", "--output", output]
    saved = tmp_path / "node.plan"
    assert main(["plan", "-f", str(spec), "--no-facts", *common, "--out", str(saved)]) == 2
    before = _mode(ns)
    assert main(["apply", str(saved), "--output", output, "-vv"]) == 0
    assert _shown(ns, "net/ipv4/tcp_fastopen_key") == FASTOPEN
    assert _shown(ns, "net/ipv6/conf/lo/stable_secret") == STABLE
    assert _mode(ns) == "stable_secret" != before  # the secret's write set addr_gen_mode to 2
    assert main(["observe", "-f", str(spec), *common]) == 0
    printed = capsys.readouterr()
    _clean(printed.out + printed.err)
    assert printed.out.count("<secret, 16 bytes, sha256:") >= 4

    # What holds the values, read back by `apply FILE` and by a rollback or destroy.
    kept = [p for p in (saved, *state.rglob("*")) if p.is_file() and any(
        form in p.read_text(errors="replace") for form in FORMS)]
    assert saved in kept
    assert any(p.name == "sysctl.json" for p in kept)  # the record: previous values
    for path in kept:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path

    # A doctor bundle, sent to whoever helps, captures neither (its sysctls are a list).
    for path in NodeCapture.read_live(ns).write_dir(tmp_path / "bundle"):
        _clean(path.read_text(errors="replace"))

    assert main(["destroy", *common, "--auto-approve"]) == 0
    _clean("".join(capsys.readouterr()))
    assert _shown(ns, "net/ipv4/tcp_fastopen_key") != FASTOPEN  # given back
    # The kernel cannot unset a secret: it stays; the addr_gen_mode it set is given back.
    assert _shown(ns, "net/ipv6/conf/lo/stable_secret") == STABLE
    assert _mode(ns) == before
