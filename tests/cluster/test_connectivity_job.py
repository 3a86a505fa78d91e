"""The connectivity test Job: its script, and reading its result back.

The read-back runs the real ``kubernetes`` client against kmock's
KubernetesEmulator on 127.0.0.1; the test plays the Job controller's part
(pods, their logs, the Job's status), as a real cluster would.
The script runs in a real POSIX shell with fake ``ping`` and ``nc``: no packet
leaves the machine.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import kmock
import pytest
from kubernetes import client

from k3snet.cli import main
from k3snet.errors import BackendError
from k3snet.render.manifests import (
    CONNECTIVITY_JOB_NAME,
    ConnectivityResult,
    parse_connectivity_log,
    read_connectivity_result,
    render_manifests,
)
from k3snet.spec import ConnectivityTest, Spec
from k3snet.testing.kube import EmulatedApiServer

pytestmark = pytest.mark.cluster

NAMESPACE = "default"
JOB_UID = "8c1f2f9e-5d6b-4f0e-9a37-4b5c2d1e0f01"


def _job_manifest(target: str = "192.168.2.10", port: int | None = 5432) -> dict[str, Any]:
    spec = Spec(connectivity_test=ConnectivityTest(target, port=port, namespace=NAMESPACE))
    (job,) = [o for o in render_manifests(spec) if o["kind"] == "Job"]
    return job


# ---------------------------------------------------------------- the emulated cluster


@attrs.define
class FakeCluster:
    """The emulator, clients for it, and the Job controller's side of the story."""

    emulator: kmock.KubernetesEmulator
    batch: Any  # kubernetes.client.BatchV1Api
    core: Any  # kubernetes.client.CoreV1Api
    logs: dict[tuple[str, str], str | kmock.KubernetesError] = attrs.field(factory=dict)

    def create_job(self, job: dict[str, Any], uid: str = JOB_UID) -> None:
        """Create the Job through the client, as ``kubectl apply`` would."""
        self.batch.create_namespaced_job(NAMESPACE, job)
        # A real API server assigns the uid on create; the emulator does not.
        self.batch.patch_namespaced_job(job["metadata"]["name"], NAMESPACE,
                                        {"metadata": {"uid": uid}})

    def start_pod(
        self,
        name: str,
        *,
        log: str | kmock.KubernetesError = "",
        owner_uid: str = JOB_UID,
        created: str = "2025-01-01T10:00:00Z",
        job_name: str = CONNECTIVITY_JOB_NAME,
    ) -> None:
        """What the Job controller does: a pod labelled and owned by the Job."""
        self.core.create_namespaced_pod(NAMESPACE, {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "creationTimestamp": created,
                "labels": {"job-name": job_name, "batch.kubernetes.io/job-name": job_name,
                           "controller-uid": owner_uid},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name,
                                     "uid": owner_uid, "controller": True,
                                     "blockOwnerDeletion": True}],
            },
            "spec": {"restartPolicy": "Never",
                     "containers": [{"name": "connectivity", "image": "busybox:1.36"}]},
        })
        self.logs[(NAMESPACE, name)] = log

    def finish(self, condition: str, reason: str = "", message: str = "") -> None:
        """Set the Job's status through its status subresource, as the controller does."""
        counts = {"succeeded": 1} if condition == "Complete" else {"failed": 1}
        self.batch.patch_namespaced_job_status(CONNECTIVITY_JOB_NAME, NAMESPACE, {"status": {
            **counts,
            "conditions": [{"type": condition, "status": "True", "reason": reason or None,
                            "message": message or None,
                            "lastProbeTime": "2025-01-01T10:00:09Z",
                            "lastTransitionTime": "2025-01-01T10:00:09Z"}],
        }})

    def read(self) -> ConnectivityResult:
        return read_connectivity_result(self.batch, self.core, NAMESPACE, CONNECTIVITY_JOB_NAME)


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    """A KubernetesEmulator served on 127.0.0.1 from its own thread's event loop.

    The kubernetes client is synchronous: it would block an event loop shared
    with the server, so the server gets a thread of its own.
    """
    logs: dict[tuple[str, str], str | kmock.KubernetesError] = {}
    started = threading.Event()
    shared: dict[str, Any] = {}

    def pod_log(request: kmock.Request) -> bytes:
        # The emulator stores objects; logs are not objects: serve them from `logs`.
        log = logs.get((str(request.namespace), str(request.name)))
        if log is None:
            raise kmock.KubernetesNotFoundError(message=f'pods "{request.name}" not found')
        if isinstance(log, kmock.KubernetesError):
            raise log
        return log.encode()

    async def serve() -> None:
        stop = asyncio.Event()
        async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
            # text/plain, as the API server sends logs (the client refuses other types).
            log_view = emulator["get", kmock.resource("v1/pods"), kmock.subresource("log")]
            log_view << kmock.headers({"Content-Type": "text/plain; charset=utf-8"}) << pod_log
            shared.update(emulator=emulator, url=str(server.url).rstrip("/"), stop=stop,
                          loop=asyncio.get_running_loop())
            started.set()
            await stop.wait()

    def run() -> None:
        try:
            asyncio.run(serve())
        except Exception as exc:  # noqa: BLE001 - raised again in the test's thread
            shared["error"] = exc
            started.set()

    thread = threading.Thread(target=run, name="kmock-emulator", daemon=True)
    thread.start()
    assert started.wait(10), "the emulator did not start"
    if "error" in shared:
        raise shared["error"]
    configuration = client.Configuration()
    configuration.host = shared["url"]
    try:
        with client.ApiClient(configuration) as api:
            yield FakeCluster(shared["emulator"], client.BatchV1Api(api),
                              client.CoreV1Api(api), logs)
    finally:
        shared["loop"].call_soon_threadsafe(shared["stop"].set)
        thread.join(10)
        assert not thread.is_alive(), "the emulator did not stop"


# ---------------------------------------------------------------- read-back


def test_complete_job_with_its_log(cluster: FakeCluster) -> None:
    cluster.create_job(_job_manifest())
    cluster.start_pod("k3snet-connectivity-abcde", log=(
        "PING 192.168.2.10 (192.168.2.10): 56 data bytes\n"
        "64 bytes from 192.168.2.10: seq=0 ttl=63 time=0.512 ms\n"
        "k3snet-connectivity target=192.168.2.10 port=5432 ping=ok tcp=ok\n"))
    cluster.finish("Complete")
    result = cluster.read()
    assert result.succeeded is True
    assert (result.ping, result.tcp) == ("ok", "ok")
    assert result.message == (
        "connectivity test passed -- Job default/k3snet-connectivity: Complete; "
        "ping 192.168.2.10: ok; tcp 192.168.2.10:5432: ok")
    # The Job the emulator stored is the rendered one, as the client sent it.
    stored = cluster.batch.read_namespaced_job(CONNECTIVITY_JOB_NAME, NAMESPACE)
    assert stored.spec.backoff_limit == 0
    assert stored.spec.template.spec.restart_policy == "Never"


def test_failed_job_says_which_check_failed(cluster: FakeCluster) -> None:
    cluster.create_job(_job_manifest())
    cluster.start_pod("k3snet-connectivity-fghij", log=(
        "k3snet-connectivity target=192.168.2.10 port=5432 ping=ok tcp=fail\n"))
    cluster.finish("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
    result = cluster.read()
    assert result.succeeded is False
    assert (result.ping, result.tcp) == ("ok", "fail")
    assert "FAILED" in result.message
    assert "BackoffLimitExceeded: Job has reached the specified backoff limit" in result.message
    assert "tcp 192.168.2.10:5432: fail" in result.message


def test_failure_target_counts_as_failed(cluster: FakeCluster) -> None:
    # Kubernetes 1.31+ sets FailureTarget as soon as the outcome is decided.
    cluster.create_job(_job_manifest())
    cluster.start_pod("k3snet-connectivity-fghij", log=(
        "k3snet-connectivity target=192.168.2.10 port=5432 ping=fail tcp=fail\n"))
    cluster.finish("FailureTarget", "DeadlineExceeded", "Job was active longer than specified")
    result = cluster.read()
    assert result.succeeded is False
    assert result.ping == "fail"


def test_running_job_is_pending(cluster: FakeCluster) -> None:
    cluster.create_job(_job_manifest())
    cluster.start_pod("k3snet-connectivity-klmno", log=kmock.KubernetesError(
        status=400, reason="BadRequest",
        message='container "connectivity" in pod "k3snet-connectivity-klmno" is waiting to start'))
    result = cluster.read()
    assert result.succeeded is None
    assert (result.ping, result.tcp) == (None, None)
    assert "pending" in result.message
    assert "still running" in result.message
    assert "log unavailable: 400" in result.message


def test_pod_that_has_not_reported_yet(cluster: FakeCluster) -> None:
    cluster.create_job(_job_manifest())
    cluster.start_pod("k3snet-connectivity-pqrst", log="PING 192.168.2.10: 56 data bytes\n")
    result = cluster.read()
    assert result.succeeded is None
    assert "has not reported yet" in result.message


def test_job_without_pods(cluster: FakeCluster) -> None:
    cluster.create_job(_job_manifest())
    result = cluster.read()
    assert result == ConnectivityResult(
        None, "connectivity test pending -- Job default/k3snet-connectivity: still running; "
              "no pod found")


def test_status_alone_when_the_log_is_gone(cluster: FakeCluster) -> None:
    cluster.create_job(_job_manifest())
    cluster.start_pod("k3snet-connectivity-uvwxy", log=kmock.KubernetesNotFoundError())
    cluster.finish("Complete")
    result = cluster.read()
    assert result.succeeded is True
    assert (result.ping, result.tcp) == (None, None)
    assert "log unavailable: 404" in result.message


def test_pods_of_an_earlier_job_of_the_same_name_are_ignored(cluster: FakeCluster) -> None:
    cluster.create_job(_job_manifest())
    # Left over from a previous run (another uid), and newer: must not count.
    cluster.start_pod("k3snet-connectivity-old", owner_uid="0000-previous-run",
                      created="2025-01-01T11:00:00Z",
                      log="k3snet-connectivity target=192.168.2.10 port=5432 ping=ok tcp=ok\n")
    cluster.start_pod("k3snet-connectivity-other", job_name="another-job",
                      created="2025-01-01T12:00:00Z",
                      log="k3snet-connectivity target=192.168.2.10 port=5432 ping=ok tcp=ok\n")
    cluster.start_pod("k3snet-connectivity-new",
                      log="k3snet-connectivity target=192.168.2.10 port=5432 ping=fail tcp=ok\n")
    cluster.finish("Failed", "BackoffLimitExceeded")
    result = cluster.read()
    assert (result.succeeded, result.ping, result.tcp) == (False, "fail", "ok")


def test_without_port_tcp_is_skipped(cluster: FakeCluster) -> None:
    cluster.create_job(_job_manifest(port=None))
    cluster.start_pod("k3snet-connectivity-zz", log=(
        "k3snet-connectivity target=192.168.2.10 port=- ping=ok tcp=skipped\n"))
    cluster.finish("Complete")
    result = cluster.read()
    assert (result.succeeded, result.ping, result.tcp) == (True, "ok", "skipped")
    assert result.message.endswith("ping 192.168.2.10: ok; tcp: skipped")


def test_missing_job_is_a_clear_error(cluster: FakeCluster) -> None:
    with pytest.raises(BackendError, match=r"cannot read Job default/k3snet-connectivity: 404"):
        cluster.read()


# ---------------------------------------------------------------- the log line


def test_parse_connectivity_log() -> None:
    log = ("k3snet-connectivity target=10.0.0.1 port=80 ping=fail tcp=fail\n"
           "noise k3snet-connectivity target=x ping=ok\n"
           "k3snet-connectivity target=fd01:2::10 port=443 ping=ok tcp=ok  \n")
    assert parse_connectivity_log(log) == {"target": "fd01:2::10", "port": "443",
                                           "ping": "ok", "tcp": "ok"}
    assert parse_connectivity_log("") is None
    assert parse_connectivity_log("k3snet-connectivity\n") is None


# ---------------------------------------------------------------- the script itself


def _shells() -> list[list[str]]:
    shells = [["/bin/sh"]]
    if shutil.which("busybox"):  # the Job's own shell, when the machine has it
        shells.append([str(shutil.which("busybox")), "sh"])
    return shells


def _fake_tool(directory: Path, name: str, exit_code: int) -> None:
    tool = directory / name
    record = directory / "calls"
    tool.write_text(f'#!/bin/sh\necho "{name} $*" >> {record}\nexit {exit_code}\n')
    tool.chmod(0o755)


@pytest.mark.parametrize("shell", _shells(), ids=lambda argv: Path(argv[0]).name)
@pytest.mark.parametrize(("ping_rc", "nc_rc", "port", "expected", "exit_ok"), [
    (0, 0, 5432, "ping=ok tcp=ok", True),
    (0, 1, 5432, "ping=ok tcp=fail", False),
    (1, 0, 5432, "ping=fail tcp=ok", False),
    (0, 0, None, "ping=ok tcp=skipped", True),
    (1, 0, None, "ping=fail tcp=skipped", False),
])
def test_the_job_script_reports_and_exits_accordingly(
    tmp_path: Path, shell: list[str], *, ping_rc: int, nc_rc: int, port: int | None,
    expected: str, exit_ok: bool,
) -> None:
    _fake_tool(tmp_path, "ping", ping_rc)
    _fake_tool(tmp_path, "nc", nc_rc)
    command = _job_manifest(port=port)["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[0] == "sh"
    run = subprocess.run([*shell, *command[1:]], capture_output=True, text=True, check=False,
                         env={"PATH": str(tmp_path)}, timeout=10)
    assert (run.returncode == 0) is exit_ok, run.stderr
    port_field = "-" if port is None else str(port)
    assert run.stdout.splitlines()[-1] == (
        f"k3snet-connectivity target=192.168.2.10 port={port_field} {expected}")
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == "ping -c 4 192.168.2.10"
    assert calls[1:] == ([] if port is None else ["nc -z -w 5 192.168.2.10 5432"])
    parsed = parse_connectivity_log(run.stdout)
    assert parsed is not None
    assert parsed["ping"] == ("ok" if ping_rc == 0 else "fail")


# ---------------------------------------------------------------- the CLI


def test_cli_reads_the_result_through_a_kubeconfig(
    cluster: FakeCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    server = cluster.batch.api_client.configuration.host
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: emu, cluster: {{server: '{server}'}}}}]\n"
        "users: [{name: me, user: {}}]\n"
        "contexts: [{name: emu, context: {cluster: emu, user: me}}]\n"
        "current-context: emu\n"
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\nconnectivityTest:\n"
                    f"  {{target: 192.168.2.10, port: 5432, namespace: {NAMESPACE}}}\n")
    cluster.create_job(_job_manifest())
    args = ["connectivity", "-f", str(spec), "--kubeconfig", str(kubeconfig)]
    cluster.start_pod("k3snet-connectivity-cli", log="k3snet-connectivity ping=ok tcp=ok\n")
    assert main(args) == 3  # still running
    cluster.finish("Complete")
    assert main(args) == 0
    assert "connectivity test passed" in capsys.readouterr().out
    cluster.finish("Failed", reason="BackoffLimitExceeded")
    # 6, not 1: a script waiting on the test tells a failed test from an API error.
    assert main(args) == 6
    assert "FAILED" in capsys.readouterr().out


def test_an_unreachable_api_server_is_an_error_not_a_bug(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `k3snet connectivity` with the API server down printed "internal error:
    # MaxRetryError ... (a bug: please report it)": only ApiException was caught.
    with socket.socket() as sock:  # a port nothing listens on (bound, never listening)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: emu, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
            "users: [{name: me, user: {}}]\n"
            "contexts: [{name: emu, context: {cluster: emu, user: me}}]\n"
            "current-context: emu\n")
        spec = tmp_path / "spec.yaml"
        spec.write_text("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\nconnectivityTest:\n"
                        f"  {{target: 192.168.2.10, port: 5432, namespace: {NAMESPACE}}}\n")
        assert main(["connectivity", "-f", str(spec), "--kubeconfig", str(kubeconfig)]) == 1
    err = capsys.readouterr().err
    assert "internal error" not in err
    assert "cannot read Job default/k3snet-connectivity: cannot reach the API server" in err


def test_an_api_server_that_never_answers_times_out() -> None:
    # No request timeout: a stalled API server held `k3snet connectivity` forever.
    with EmulatedApiServer(resources=()) as server:
        server.fail(500, method="GET", plural="jobs", delay=5.0)
        api = server.api_client()
        with pytest.raises(BackendError, match=r"no answer from the API server within 0.5s"):
            read_connectivity_result(client.BatchV1Api(api), client.CoreV1Api(api), NAMESPACE,
                                     timeout=0.5)
