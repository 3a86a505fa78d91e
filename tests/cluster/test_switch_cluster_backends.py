"""A switch of cluster backends (the spec's ``calico`` dropped for ``cilium``, or the agent's
spec no longer naming ``calico``) leaves the IPPools k3snet created: Calico still gives
pods addresses and NATs by them. ``plan`` and the agent's Lease holder name the backend
holding them and the ``k3snet destroy`` removing them (k3snet's alone); before, the look
for what a switch left went through the node backends only, and nothing was said."""

from __future__ import annotations

import io
import shlex
from pathlib import Path

import attrs
import pytest

from k3snet.backends.discover import _flannel_file_left, cluster_left_behind
from k3snet.backends.registry import create_backend
from k3snet.cli import main
from k3snet.kube import THROTTLE_WAITS, throttle_waits
from k3snet.testing.kube import EmulatedApiServer
from tests.cluster.calico_objects import CRD, POD_POOL, SPEC
from tests.kubeclient import write_kubeconfig

RESOURCES = ("crd.projectcalico.org/v1/ippools", "crd.projectcalico.org/v1/felixconfigurations",
             "v1/configmaps")
"""Calico's CRDs alone (no Calico API server: ``api=auto`` reads them), and ConfigMaps."""


def _apply_through_calico(spec: Path, kubeconfig: Path) -> int:
    return main(["apply", "-f", str(spec), "--no-facts", "--auto-approve", "--backend",
                 "calico", "--backend-opt", f"calico.kubeconfig={kubeconfig}"])


def _plan_through_cilium(spec: Path, kubeconfig: Path, *more: str) -> int:
    """``k3snet plan`` of ``spec`` through cilium: calico, dropped, is looked through."""
    return main(["plan", "-f", str(spec), "--no-facts", "--backend", "cilium",
                 "--backend-opt", f"cilium.kubeconfig={kubeconfig}", *more])


def test_calico_dropped_for_cilium_names_the_ippool_left_and_its_destroy_removes_it_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    kubeconfig = tmp_path / "kube config"
    with EmulatedApiServer(resources=RESOURCES) as server:
        server.put(CRD, POD_POOL)
        write_kubeconfig(kubeconfig, server.url)
        assert _apply_through_calico(spec, kubeconfig) == 0
        assert len(server.objects(CRD)) == 2  # the pod pool and k3snet's disabled one
        capsys.readouterr()
        _plan_through_cilium(spec, kubeconfig)
        out = capsys.readouterr().out
        (line,) = [line for line in out.splitlines()
                   if line.startswith("!! warning: calico holds")]
        assert "calico holds 1 of k3snet's objects in the cluster" in line
        command = shlex.split(line.split("`")[1])[1:]
        assert command == ["destroy", "--backend", "calico", "--backend-opt",
                           f"calico.kubeconfig={kubeconfig}"]
        assert len(server.objects(CRD)) == 2  # said, not removed
        assert main([*command, "--auto-approve", "--no-facts"]) == 0
        assert [o["metadata"]["name"] for o in server.objects(CRD)] == [
            "default-ipv4-ippool"]  # the foreign pool stays
        capsys.readouterr()
        _plan_through_cilium(spec, kubeconfig)
        assert "calico holds" not in capsys.readouterr().out


def test_a_dropped_cluster_backend_is_looked_through_as_built(tmp_path: Path) -> None:
    # The agent's Lease holder: its previous spec's calico backend, no cluster backend in
    # the new spec (no client to look with but the one it had).
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    with EmulatedApiServer(resources=RESOURCES) as server:
        server.put(CRD, POD_POOL)
        kubeconfig = tmp_path / "kubeconfig"
        write_kubeconfig(kubeconfig, server.url)
        assert _apply_through_calico(spec, kubeconfig) == 0
        old = create_backend("calico", api_client=server.api_client())
        try:
            found = cluster_left_behind([create_backend("memory")], {}, dropped=[old])
            assert [w.split(" holds ")[0] for w in found] == ["calico"]
            assert cluster_left_behind([create_backend("memory")], {}) == ()
            assert cluster_left_behind([create_backend("memory"), old], {},
                                       dropped=[old]) == ()  # in use: not left
        finally:
            old.close()


def test_apply_dry_run_of_a_plan_file_names_the_ippool_left_with_the_file_s_kubeconfig(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # A plan file made through cilium: its preview looks through calico with the file's
    # recorded kubeconfig, and names it in the destroy (without it the destroy named
    # reached ~/.kube/config, maybe another cluster).
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    kubeconfig = tmp_path / "kube config"
    saved = tmp_path / "egress.plan"
    with EmulatedApiServer(resources=RESOURCES) as server:
        server.put(CRD, POD_POOL)
        write_kubeconfig(kubeconfig, server.url)
        assert _apply_through_calico(spec, kubeconfig) == 0
        _plan_through_cilium(spec, kubeconfig, "--out", str(saved))
        capsys.readouterr()
        assert main(["apply", "--dry-run", str(saved)]) == 0
        (line,) = [line for line in capsys.readouterr().out.splitlines()
                   if line.startswith("!! warning: calico holds")]
        assert shlex.split(line.split("`")[1])[1:] == [
            "destroy", "--backend", "calico", "--backend-opt", f"calico.kubeconfig={kubeconfig}"]
        assert len(server.objects(CRD)) == 2  # said, not removed


def test_a_throttled_look_through_a_backend_not_in_use_waits_nothing_and_says_so_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # The look no one asked for, answered 429 (Retry-After: 5): with the one-shot
    # commands' waits, `plan` through cilium waited 5 s five times over and printed a
    # line about calico at each; now the look is passed over at once, said once (passed
    # over unsaid, it read as "nothing left").
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    kubeconfig = tmp_path / "kubeconfig"
    waits: list[float] = []
    with EmulatedApiServer(resources=RESOURCES) as server, \
            throttle_waits(attrs.evolve(THROTTLE_WAITS, sleep=waits.append)):
        server.put(CRD, POD_POOL)
        write_kubeconfig(kubeconfig, server.url)
        server.fail(429, method="GET", plural="ippools", times=None, retry_after=5)
        capsys.readouterr()
        _plan_through_cilium(spec, kubeconfig)
        captured = capsys.readouterr()
        ippool_reads = [path for method, path, _ in server.requests()
                        if method == "GET" and path.endswith("/ippools")]
    assert waits == []
    assert len(ippool_reads) == 1
    assert "sending it again" not in captured.err, captured.err
    assert "calico holds" not in captured.out
    assert captured.err.count("calico: could not look for k3snet's objects") == 1, captured.err


@pytest.mark.parametrize("status", [403, 500, 503])
def test_a_look_refused_or_failing_is_said_once_and_the_plan_goes_on(
        status: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # The kubeconfig's user may not list IPPools (403), or the API server fails (5xx):
    # the plan's exit code is its own, and one stderr line says the look was not made,
    # where nothing was said, as when nothing was left.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    kubeconfig = tmp_path / "kubeconfig"
    with EmulatedApiServer(resources=RESOURCES) as server:
        server.put(CRD, POD_POOL)
        write_kubeconfig(kubeconfig, server.url)
        capsys.readouterr()
        clean = _plan_through_cilium(spec, kubeconfig)
        assert "could not look" not in capsys.readouterr().err
        server.fail(status, method="GET", plural="ippools", times=None)
        assert _plan_through_cilium(spec, kubeconfig) == clean
        captured = capsys.readouterr()
    (line,) = [line for line in captured.err.splitlines() if "could not look" in line]
    assert "calico: could not look for k3snet's objects a switch of backends may have " \
        "left in the cluster" in line
    assert shlex.split(line.split("`")[1]) == [
        "k3snet", "destroy", "--dry-run", "--backend", "calico", "--backend-opt",
        f"calico.kubeconfig={kubeconfig}"]  # the cluster looked at, not ~/.kube/config
    assert str(status) in line


@pytest.mark.parametrize("refused", [False, True])
def test_a_look_through_a_backend_not_installed_says_nothing(
        refused: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # No Calico in the cluster (its API not served: 404): nothing left, nothing to say.
    # Nor when the kubeconfig's user may not list IPPools (403: RBAC answers before the
    # server finds no such resource) while discovery serves no Calico API group.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    kubeconfig = tmp_path / "kubeconfig"
    with EmulatedApiServer(resources=("v1/configmaps",)) as server:
        if refused:
            server.fail(403, method="GET", plural="ippools", times=None)
        write_kubeconfig(kubeconfig, server.url)
        capsys.readouterr()
        _plan_through_cilium(spec, kubeconfig)
        captured = capsys.readouterr()
    assert "calico" not in captured.err + captured.out, captured


def test_the_lease_holder_s_look_through_a_dropped_backend_refused_is_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The agent's look (the old RBAC already gone: 403) logs one warning, where it said
    # nothing; the pass goes on (nothing is raised).
    with EmulatedApiServer(resources=RESOURCES) as server:
        old = create_backend("calico", api_client=server.api_client())
        try:
            server.fail(403, method="GET", plural="ippools", times=None)
            with caplog.at_level("WARNING", logger="k3snet"):
                found = cluster_left_behind([create_backend("memory")], {}, dropped=[old])
        finally:
            old.close()
    assert found == ()
    (record,) = [r for r in caplog.records if "could not look" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert record.getMessage().startswith("calico: could not look")


def test_an_unreadable_flannel_file_not_in_use_is_said_once_naming_the_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # $K3SNET_FLANNEL_CONF's file is no JSON k3snet can read: the look says so, naming
    # the file (not "the cluster") and the destroy --dry-run with its path.
    conf = tmp_path / "net-conf.json"
    conf.write_bytes(b"\xff not UTF-8")
    with caplog.at_level("WARNING", logger="k3snet"):
        assert _flannel_file_left([create_backend("memory")], {"path": conf}, ()) == []
    (record,) = [r for r in caplog.records if "could not look" in r.getMessage()]
    message = record.getMessage()
    assert message.startswith(f"flannel: could not look for k3snet's objects a switch of "
                              f"backends may have left in {conf} (")
    assert message.endswith(f"`k3snet destroy --dry-run --backend flannel --backend-opt "
                            f"flannel.path={conf}` shows them")


@pytest.mark.parametrize("status", [429, 503])
def test_a_refused_look_whose_discovery_fails_too_is_said(
        status: int, caplog: pytest.LogCaptureFixture) -> None:
    # A 403 is unsaid only when discovery answers that no Calico API group is served
    # (404); a discovery throttled or failing cannot tell, and the refusal is said.
    import urllib3  # noqa: PLC0415 - a dependency of the kubernetes client

    with EmulatedApiServer(resources=("v1/configmaps",)) as server:
        api = server.api_client()
        old = create_backend("calico", api_client=api, api="crd")
        pool = api.rest_client.pool_manager
        real = pool.request
        asked: list[str] = []

        def request(verb: str, url: str, **kwargs: object) -> object:
            if url.rstrip("/").endswith(("/apis/crd.projectcalico.org/v1",
                                         "/apis/projectcalico.org/v3")):
                asked.append(url)
                return urllib3.HTTPResponse(
                    body=io.BytesIO(b"busy"), status=status, reason="busy",
                    headers={"Content-Type": "text/plain"}, preload_content=False)
            return real(verb, url, **kwargs)

        pool.request = request
        try:
            server.fail(403, method="GET", plural="ippools", times=None)
            with caplog.at_level("WARNING", logger="k3snet"):
                found = cluster_left_behind([create_backend("memory")], {}, dropped=[old])
        finally:
            old.close()
    assert found == ()
    assert asked  # discovery was asked
    (record,) = [r for r in caplog.records if "could not look" in r.getMessage()]
    assert record.getMessage().startswith("calico: could not look"), record.getMessage()
    assert "403" in record.getMessage()
