"""What the CLI prints and writes of a spec's secret sysctls (``tcp_fastopen_key``, a
``stable_secret``): every output shows ``<secret, N bytes, sha256:...>``; the plan file
(``plan --out``) and the rendered sysctl.d file hold the value, for an apply, and are
written 0600. Before, both outputs printed the value and both files were 0644."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from k3snet._kept import write_output
from k3snet.cli import main

FASTOPEN = "deadbeef-cafebabe-12345678-9abcdef0"
STABLE = "2001:0db8:dead:beef:cafe:babe:1234:5678"
FORMS = (FASTOPEN, STABLE, "deadbeef", "dead:beef", "cafebabe", "cafe:babe")
SPEC = f"""\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
cluster:
  podCIDRs: [10.42.0.0/16]
  serviceCIDRs: [10.43.0.0/16]
sysctls:
  net.ipv4.tcp_fastopen_key: "{FASTOPEN.upper()}"
  net.ipv6.conf.eth0.stable_secret: "2001:db8:dead:beef:cafe:babe:1234:5678"
"""


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    return path


def _clean(text: str) -> None:
    for form in FORMS:
        assert form not in text.lower(), (form, text)


@pytest.fixture(autouse=True)
def _umask_022() -> object:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("output", ["text", "json"])
def test_plan_apply_and_observe_print_no_secret_and_the_plan_file_is_0600(
        spec: Path, tmp_path: Path, output: str, capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "node.plan"
    saved.write_text("{}")
    saved.chmod(0o644)  # a file of before, replaced: not left readable by others
    assert main(["plan", "-f", str(spec), "--no-facts", "--backend", "memory",
                 "--output", output, "--out", str(saved)]) == 2
    printed = capsys.readouterr()
    _clean(printed.out + printed.err)  # (the memory backend's: empty; tests/netlink's)
    if output == "text":
        assert "(mode 0600: it holds a secret sysctl's value)" in printed.out
    assert _mode(saved) == 0o600
    assert FASTOPEN in saved.read_text()  # apply FILE writes them
    assert STABLE in saved.read_text()
    assert main(["apply", str(saved), "--output", output]) == 0
    printed = capsys.readouterr()
    _clean(printed.out + printed.err)
    assert main(["apply", "-f", str(spec), "--no-facts", "--backend", "memory", "-vv",
                 "--output", output]) == 0
    printed = capsys.readouterr()
    _clean(printed.out + printed.err)
    assert main(["observe", "--backend", "memory", "--output", output]) == 0
    printed = capsys.readouterr()
    _clean(printed.out + printed.err)  # (the memory backend's: empty; tests/netlink's)


def test_a_plan_file_without_a_secret_keeps_the_umasks_mode(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.partition("sysctls:")[0])
    saved = tmp_path / "node.plan"
    assert main(["plan", "-f", str(path), "--no-facts", "--backend", "memory",
                 "--out", str(saved)]) in (0, 2)
    assert _mode(saved) == 0o644
    assert "0600" not in capsys.readouterr().out


def test_the_rendered_sysctl_d_file_holding_a_secret_is_0600(
        spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """systemd-sysctl reads it as root: nobody else needs to read the key."""
    out = tmp_path / "sysctl.d"
    assert main(["render", "sysctl", "-f", str(spec), "--out", str(out)]) == 0
    written = out / "90-k3snet.conf"
    assert FASTOPEN in written.read_text()
    assert _mode(written) == 0o600
    _clean(capsys.readouterr().err)


def test_an_override_of_a_secret_in_a_later_file_is_warned_without_either_value(
        spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sysctl.d"
    out.mkdir()
    (out / "99-other.conf").write_text("net.ipv4.tcp_fastopen_key = "
                                       "cafebabe-00000000-00000000-00000001\n")
    assert main(["render", "sysctl", "-f", str(spec), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "99-other.conf (line 1) sets net.ipv4.tcp_fastopen_key = <secret, 16 bytes" in err
    _clean(err)


def test_write_output_private_replaces_a_readable_file_with_an_owner_only_one(
        tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("before")
    path.chmod(0o644)
    write_output(path, "after", owner_writes_only=True, private=True)
    assert (_mode(path), path.read_text()) == (0o600, "after")
    write_output(path, json.dumps({}), owner_writes_only=True)
    assert _mode(path) == 0o600  # the mode of the file replaced, as before


def test_render_manifests_warns_that_the_configmap_would_hold_a_secret(
        spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The agent reads the spec from a ConfigMap (no Kubernetes Secret): the rendered
    manifests say nothing else of it."""
    assert main(["render", "manifests", "-f", str(spec)]) == 0
    err = capsys.readouterr().err
    assert ("the spec sets secret sysctls (net.ipv4.tcp_fastopen_key, "
            "net.ipv6.conf.eth0.stable_secret): the manifests hold the spec in a ConfigMap") in err
    _clean(err)


def test_rendered_manifests_holding_a_secret_are_written_0600(
        spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The ConfigMap holds the spec's text, the key with it: the file was written 0644
    beside the warning saying so; manifests of a spec naming none keep the umask's mode."""
    out = tmp_path / "manifests"
    assert main(["render", "manifests", "-f", str(spec), "--out", str(out)]) == 0
    assert "fastopen_key" in (out / "k3snet.yaml").read_text()
    assert _mode(out / "k3snet.yaml") == 0o600
    assert "(--out: the manifests are written 0600)" in capsys.readouterr().err
    plain = tmp_path / "plain.yaml"
    plain.write_text(SPEC.split("sysctls:", maxsplit=1)[0])
    other = tmp_path / "other"
    assert main(["render", "manifests", "-f", str(plain), "--out", str(other)]) == 0
    assert _mode(other / "k3snet.yaml") == 0o644


def test_rendered_manifests_of_a_secret_named_through_a_yaml_escape_are_written_0600(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A key written ``"net.ipv4.tcp_fastopen\\x5fkey"`` sets the Fast Open key, yet its text
    names none: ``k3snet.yaml`` was written 0644 beside the warning saying ``--out: the
    manifests are written 0600``. It is written 0600 whenever the spec sets a secret."""
    spec = tmp_path / "escaped.yaml"
    spec.write_text(SPEC.split("sysctls:", maxsplit=1)[0] + "sysctls:\n"
                    '  "net.ipv4.tcp_fastopen\\x5fkey": deadbeef-cafebabe-12345678-9abcdef0\n')
    out = tmp_path / "manifests"
    assert main(["render", "manifests", "-f", str(spec), "--out", str(out)]) == 0
    assert "(--out: the manifests are written 0600)" in capsys.readouterr().err
    assert "deadbeef" in (out / "k3snet.yaml").read_text()
    assert _mode(out / "k3snet.yaml") == 0o600
