"""A plan file of a backend talking to a cluster is applied to that cluster or refused:
a kubeconfig whose current context changed since (another cluster, the same objects)
got the plan reviewed for the first one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from k3snet.cli import main
from k3snet.testing.kube import EmulatedApiServer
from tests.cluster.calico_objects import CRD, POD_POOL, SPEC


def _kubeconfig(path: Path, servers: dict[str, str], current: str) -> None:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": current,
        "clusters": [{"name": n, "cluster": {"server": url}} for n, url in servers.items()],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": n, "context": {"cluster": n, "user": "u"}} for n in servers]}))


def _plan_to(saved: Path, spec: Path, kubeconfig: Path) -> int:
    """``k3snet plan --out SAVED`` of the Calico backend through ``kubeconfig``."""
    return main(["plan", "-f", str(spec), "--no-facts", "--backend", "calico", "--backend-opt",
                 "calico.api=crd", "--backend-opt", f"calico.kubeconfig={kubeconfig}",
                 "--out", str(saved)])


def test_a_plan_file_is_not_applied_to_another_cluster_than_it_was_made_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    kubeconfig = tmp_path / "kubeconfig"
    saved = tmp_path / "staging.plan"
    with EmulatedApiServer() as staging, EmulatedApiServer() as prod:
        servers = {"staging": staging.url, "prod": prod.url}
        for server in (staging, prod):  # two clusters made from one template
            server.put(CRD, POD_POOL)
        _kubeconfig(kubeconfig, servers, "staging")
        assert _plan_to(saved, spec, kubeconfig) == 2
        _kubeconfig(kubeconfig, servers, "prod")  # kubectl config use-context prod
        capsys.readouterr()
        assert main(["apply", str(saved), "--auto-approve"]) == 1
        err = capsys.readouterr().err
        assert f"{saved} was made against the cluster at {staging.url}" in err, err
        assert f"backend 'calico' talks to {prod.url}" in err, err
        assert [o["metadata"]["name"] for o in prod.objects(CRD)] == [
            "default-ipv4-ippool"]
        _kubeconfig(kubeconfig, servers, "staging")
        assert main(["apply", str(saved), "--auto-approve"]) == 0
        assert len(staging.objects(CRD)) == 2


def test_the_cluster_a_plan_file_names_is_escaped_in_the_refusal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # A file edited by hand: its text reaches the terminal of whoever applies it.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    kubeconfig = tmp_path / "kubeconfig"
    saved = tmp_path / "node.plan"
    with EmulatedApiServer() as server:
        server.put(CRD, POD_POOL)
        _kubeconfig(kubeconfig, {"lab": server.url}, "lab")
        assert _plan_to(saved, spec, kubeconfig) == 2
        document = json.loads(saved.read_text())
        assert document["clusters"] == {"calico": server.url}  # plain HTTP: no authority
        document["clusters"]["calico"] = "\x1b[2Jelsewhere\nk3snet: ok"
        saved.write_text(json.dumps(document))
        capsys.readouterr()
        assert main(["apply", str(saved), "--auto-approve"]) == 1
        err = capsys.readouterr().err
        assert "the cluster at \\x1b[2Jelsewhere\\nk3snet: ok, and backend 'calico'" in err, err
        assert "\x1b" not in err


def test_a_plan_file_a_library_caller_made_without_clusters_is_applied_by_its_backends(
        tmp_path: Path) -> None:
    # PlanFile.make as the module's example calls it, naming no clusters: the file
    # recorded none ({}), and refuse_elsewhere refused every cluster backend of the plan
    # ("made against the cluster at none") where a file of before is let through.
    from kubernetes import client  # noqa: PLC0415 - optional dependency

    from k3snet import State, plan  # noqa: PLC0415
    from k3snet.backends.calico import CalicoBackend  # noqa: PLC0415
    from k3snet.planfile import PlanFile  # noqa: PLC0415

    configuration = client.Configuration()
    configuration.host = "https://127.0.0.1:6443"
    backend = CalicoBackend(api_client=client.ApiClient(configuration), api="crd")
    try:
        made = PlanFile.make(plan(State(), State()), desired=State(), observed=State(),
                             backends=["calico"], netns=None)
        assert made.clusters is None
        made.write(tmp_path / "node.plan")
        assert "clusters" not in json.loads((tmp_path / "node.plan").read_text())
        saved = PlanFile.read(tmp_path / "node.plan", netns=None)
        assert saved.clusters is None
        saved.refuse_elsewhere(backend)
    finally:
        backend.close()


def _certificate(seed: bytes, *, newline: str = "\n") -> str:
    """A PEM block (its body need not be a certificate: only the bytes are compared)."""
    import base64  # noqa: PLC0415
    import textwrap  # noqa: PLC0415

    body = base64.b64encode(seed * 40).decode()
    lines = ["-----BEGIN CERTIFICATE-----", *textwrap.wrap(body, 64),
             "-----END CERTIFICATE-----", ""]
    return newline.join(lines)


class _Talking:
    """A backend talking to the cluster its ``configuration`` names."""

    name = "calico"

    def __init__(self, **configured: Any) -> None:
        from kubernetes import client  # noqa: PLC0415 - optional dependency

        configuration = client.Configuration()
        configuration.host = "https://127.0.0.1:6443"  # every K3s node's kubeconfig
        for key, value in configured.items():
            setattr(configuration, key, value)
        self.api_client = client.ApiClient(configuration)


def test_a_plan_file_tells_clusters_apart_by_an_authority_given_as_data(
        tmp_path: Path) -> None:
    # Configuration.ca_cert_data (the client's verification uses it beside ssl_ca_cert):
    # two clusters at one address (an SSH tunnel to each in turn) were the same cluster.
    from k3snet.planfile import clusters_of  # noqa: PLC0415

    staging, prod = _certificate(b"staging"), _certificate(b"prod")
    assert clusters_of(_Talking(ca_cert_data=staging)) != clusters_of(
        _Talking(ca_cert_data=prod))
    (tmp_path / "ca.crt").write_text(staging)
    assert clusters_of(_Talking(ca_cert_data=staging)) == clusters_of(
        _Talking(ssl_ca_cert=str(tmp_path / "ca.crt")))


def test_a_plan_file_names_one_certificate_authority_however_its_pem_is_laid_out(
        tmp_path: Path) -> None:
    # The same authorities, as a kubeconfig's certificate-authority-data made from one
    # file and certificate-authority naming a copy of it (line ends, a blank line, the
    # bundle's order): the same cluster, whose plan apply FILE refused.
    from k3snet.planfile import clusters_of  # noqa: PLC0415

    root, intermediate = _certificate(b"root"), _certificate(b"intermediate")
    (tmp_path / "a.crt").write_text(root + intermediate)
    (tmp_path / "b.crt").write_bytes(("\n" + _certificate(b"intermediate", newline="\r\n")
                                      + "\n" + root).encode())
    assert clusters_of(_Talking(ssl_ca_cert=str(tmp_path / "a.crt"))) == clusters_of(
        _Talking(ssl_ca_cert=str(tmp_path / "b.crt")))
    (tmp_path / "c.crt").write_text(root)
    assert clusters_of(_Talking(ssl_ca_cert=str(tmp_path / "a.crt"))) != clusters_of(
        _Talking(ssl_ca_cert=str(tmp_path / "c.crt")))


def test_a_plan_file_made_beside_a_pool_of_the_tigera_operator_is_applied(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The pod pool is the operator's (IPPool.operator, in the observed state's digest):
    # the plan file's check of the state finds it unchanged, and the file applies.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    kubeconfig = tmp_path / "kubeconfig"
    saved = tmp_path / "node.plan"
    with EmulatedApiServer() as server:
        server.put(CRD, {**POD_POOL, "metadata": {
            "name": "default-ipv4-ippool",
            "annotations": {"projectcalico.org/metadata": json.dumps(
                {"labels": {"app.kubernetes.io/managed-by": "tigera-operator"}})}}})
        _kubeconfig(kubeconfig, {"lab": server.url}, "lab")
        assert _plan_to(saved, spec, kubeconfig) == 2
        assert main(["apply", str(saved), "--auto-approve"]) == 0
        assert len(server.objects(CRD)) == 2
