"""A CNI ConfigMap change awaits its pods' restart, and k3snet says so until it happened.

Cilium reads ``cilium-config`` and flannel ``net-conf.json`` once, when the agent starts:
after k3snet changed either, the converge result names the DaemonSet whose pods still
run since before the change (:func:`k3snet.converge.pending_restarts`), until every pod
was restarted (``kubectl rollout restart`` makes new pods; a container restarted in its
pod does not count: it runs the config of the pod's start). The ip-masq-agent file
needs no restart (Cilium watches it). Against the emulated API server, with pods
shaped like the real ones.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import types
from pathlib import Path
from typing import Any

import pytest

from k3snet.backends import cni_restart
from k3snet.backends.base import PendingRestart, restart_command
from k3snet.backends.cilium import CiliumBackend
from k3snet.backends.cni_restart import CHANGED_ANNOTATION
from k3snet.backends.flannel import FlannelBackend
from k3snet.cli import _print_restarts, main
from k3snet.converge import converge, pending_restarts, restarts_needed
from k3snet.errors import ApplyError, RollbackError
from k3snet.model.cilium import CILIUM_DEFAULT_TARGET, CiliumConfig
from k3snet.model.cni import FlannelConfig
from k3snet.model.state import State
from k3snet.planner import plan
from k3snet.testing.kube import EmulatedApiServer
from tests.cli.test_schemas import validate
from tests.cluster.test_cilium_backend import _cilium_config
from tests.cluster.test_cilium_mount import EBPF_AGENT, cilium_daemonset
from tests.cluster.workloads import (
    CONFIGMAPS,
    DAEMONSETS,
    PODS,
    configmap,
    daemonset,
    daemonset_pod,
)
from tests.kubeclient import write_kubeconfig

pytestmark = pytest.mark.cluster

LONG_AGO = "2020-01-01T00:00:00Z"
FUTURE = "2999-01-01T00:00:00Z"  # a pod started after any change made by the test


@pytest.fixture
def api_server() -> Any:
    with EmulatedApiServer(resources=(CONFIGMAPS, DAEMONSETS, PODS)) as server:
        yield server


CILIUM_LABELS = {"k8s-app": "cilium"}


def _cilium_pod(name: str, *, created: str, started: str | None = None) -> dict[str, Any]:
    """A pod of the DaemonSet kube-system/cilium."""
    return daemonset_pod("kube-system", name, "cilium", CILIUM_LABELS, created=created,
                         started=started)


def _restarted(api_server: EmulatedApiServer, *names: str) -> None:
    """Cilium's pods ``names`` made again, after any change the test makes."""
    for name in names:
        api_server.put(PODS, _cilium_pod(name, created=FUTURE))


@pytest.fixture
def cilium(api_server: EmulatedApiServer) -> CiliumBackend:
    api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-config", {
        "routing-mode": "tunnel", "tunnel-protocol": "vxlan", "enable-ipv4-masquerade": "true"}))
    # Cilium's config init container reads cilium-config through the API: no volume.
    api_server.put(DAEMONSETS, daemonset("kube-system", "cilium", CILIUM_LABELS, []))
    for node in ("a", "b"):
        api_server.put(PODS, _cilium_pod(f"cilium-{node}", created=LONG_AGO, started=LONG_AGO))
    # Another DaemonSet's pod with the same labels is not Cilium's.
    api_server.put(PODS, daemonset_pod("kube-system", "other-x", "other", CILIUM_LABELS,
                                       created=LONG_AGO, started=LONG_AGO))
    return CiliumBackend(api_client=api_server.api_client(), timeout=10.0)


def _masquerade(value: str) -> State:
    return State(owned=[CiliumConfig(CILIUM_DEFAULT_TARGET,
                                     settings={"enable-ipv4-masquerade": value})])


def test_cilium_config_change_is_pending_until_every_agent_pod_restarted(
        api_server: EmulatedApiServer, cilium: CiliumBackend) -> None:
    assert converge(cilium, State()).restarts == ()  # nothing changed by k3snet yet
    done = converge(cilium, _masquerade("false"))
    assert done.result is not None
    [pending] = done.restarts
    assert pending.workload == "DaemonSet kube-system/cilium"
    assert pending.stale == ("cilium-a", "cilium-b")
    assert "restart pending: DaemonSet kube-system/cilium" in pending.render()
    stored = api_server.get(CONFIGMAPS, "cilium-config", "kube-system")
    assert stored is not None
    assert CHANGED_ANNOTATION in stored["metadata"]["annotations"]
    # Converged as planned, still pending: a pass with nothing to do says it again.
    again = converge(cilium, _masquerade("false"))
    assert again.plan.empty
    assert [r.stale for r in again.restarts] == [("cilium-a", "cilium-b")]
    # One pod replaced (a rollout under way), then the other.
    api_server.delete(PODS, "cilium-a", "kube-system")
    api_server.put(PODS, _cilium_pod("cilium-c", created=FUTURE))
    assert [r.stale for r in pending_restarts(cilium)] == [("cilium-b",)]
    api_server.delete(PODS, "cilium-b", "kube-system")
    api_server.put(PODS, _cilium_pod("cilium-d", created=FUTURE, started=FUTURE))
    assert pending_restarts(cilium) == ()
    assert converge(cilium, _masquerade("false")).restarts == ()


def test_a_container_restarted_in_its_pod_is_still_pending(
        api_server: EmulatedApiServer, cilium: CiliumBackend) -> None:
    # Cilium's config init container built the agent's config dir (an emptyDir) when the
    # pod started; a cilium-agent restarted since (a crash, its liveness probe) reads
    # that dir again, not cilium-config: the pod still runs the old settings.
    converge(cilium, _masquerade("false"))
    api_server.put(PODS, _cilium_pod("cilium-b", created=LONG_AGO, started=FUTURE))
    assert [r.stale for r in pending_restarts(cilium)] == [("cilium-a", "cilium-b")]


def test_ip_masq_agent_change_needs_no_restart(cilium: CiliumBackend) -> None:
    desired = State(owned=[CiliumConfig(CILIUM_DEFAULT_TARGET,
                                        ip_masq_agent={"nonMasqueradeCIDRs": ["10.0.0.0/8"]})])
    done = converge(cilium, desired)
    assert done.result is not None
    assert done.result.applied
    assert restarts_needed(cilium, done.plan) == ()
    assert done.restarts == ()


def test_plan_names_the_restart_its_changes_need(cilium: CiliumBackend) -> None:
    preview = converge(cilium, _masquerade("false"), dry_run=True)
    assert restarts_needed(cilium, preview.plan) == ("DaemonSet kube-system/cilium",)
    assert preview.restarts == ()  # nothing written yet


def test_pending_without_a_daemonset_says_it_cannot_tell(
        api_server: EmulatedApiServer, cilium: CiliumBackend) -> None:
    api_server.delete(DAEMONSETS, "cilium", "kube-system")
    [pending] = converge(cilium, _masquerade("false")).restarts
    assert pending.stale is None
    assert "no DaemonSet in kube-system uses it" in pending.reason


NET_CONF = '{"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan"}}'
FLANNEL_LABELS = {"app": "flannel"}


def _flannel_cfg() -> dict[str, Any]:
    """The ConfigMap kube-flannel/kube-flannel-cfg holding :data:`NET_CONF`."""
    return configmap("kube-flannel", "kube-flannel-cfg", {"net-conf.json": NET_CONF})


def _flannel_daemonset(name: str) -> dict[str, Any]:
    """A DaemonSet ``name`` of kube-flannel with a volume of the ConfigMap kube-flannel-cfg."""
    return daemonset("kube-flannel", name, FLANNEL_LABELS,
                     [{"name": "flannel-cfg", "configMap": {"name": "kube-flannel-cfg"}}])


def test_flannel_net_conf_change_is_pending_until_its_pods_restarted(
        api_server: EmulatedApiServer) -> None:
    api_server.put(CONFIGMAPS, _flannel_cfg())
    # Found by the volume naming the ConfigMap, whatever the DaemonSet's name.
    api_server.put(DAEMONSETS, _flannel_daemonset("flannel-renamed"))
    api_server.put(PODS, daemonset_pod("kube-flannel", "flannel-1", "flannel-renamed",
                                       FLANNEL_LABELS, created=LONG_AGO, started=LONG_AGO))
    backend = FlannelBackend(api_client=api_server.api_client(), timeout=10.0,
                             allow_disruptive=True)
    desired = State(owned=[FlannelConfig(backend.target, enable_nftables=True)])
    done = converge(backend, desired)
    assert [(r.workload, r.stale) for r in done.restarts] == [
        ("DaemonSet kube-flannel/flannel-renamed", ("flannel-1",))]
    # Made the second after the stamp's (one in its own second may predate the write).
    made = _stamp_of(api_server, "kube-flannel-cfg", "kube-flannel") + datetime.timedelta(
        seconds=1)
    api_server.put(PODS, daemonset_pod("kube-flannel", "flannel-1", "flannel-renamed",
                                       FLANNEL_LABELS, created=_utc(made), started=FUTURE))
    assert pending_restarts(backend) == ()


def test_flannel_restart_needed_names_the_daemonsets_found_reading_its_configmap(
        api_server: EmulatedApiServer) -> None:
    api_server.put(CONFIGMAPS, _flannel_cfg())
    backend = FlannelBackend(api_client=api_server.api_client(), timeout=10.0,
                             allow_disruptive=True)
    desired = State(owned=[FlannelConfig(backend.target, enable_nftables=True)])
    preview = converge(backend, desired, dry_run=True)
    # None found: upstream's name, said as such, and still its rollout command.
    (fallback,) = restarts_needed(backend, preview.plan)
    assert fallback.startswith("DaemonSet kube-flannel/kube-flannel-ds (upstream flannel's "
                               "name; no DaemonSet in kube-flannel found reading ConfigMap "
                               "kube-flannel/kube-flannel-cfg)")
    assert restart_command(fallback) == (
        "kubectl -n kube-flannel rollout restart daemonset/kube-flannel-ds")
    for name in ("flannel-renamed", "flannel-windows"):
        api_server.put(DAEMONSETS, _flannel_daemonset(name))
    api_server.put(DAEMONSETS, daemonset("kube-flannel", "unrelated", FLANNEL_LABELS, []))
    assert restarts_needed(backend, preview.plan) == (
        "DaemonSet kube-flannel/flannel-renamed", "DaemonSet kube-flannel/flannel-windows")


SPEC = ("apiVersion: k3snet.io/v1alpha1\nkind: EgressSpec\nbackends: [cilium]\n"
        "destinations: []\ncni:\n  cilium:\n    egressMasqueradeInterfaces: eth0\n")


def _through_cilium(api_server: EmulatedApiServer, tmp_path: Path) -> list[str]:
    """The command line's arguments giving :data:`SPEC` and the cilium backend on
    ``api_server`` (a kubeconfig written under ``tmp_path``)."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, api_server.url)
    return ["-f", str(spec), "--no-facts", "--backend", "cilium",
            "--backend-opt", f"cilium.kubeconfig={kubeconfig}"]


def test_plan_and_apply_say_which_restart_is_needed_and_pending(
        api_server: EmulatedApiServer, cilium: CiliumBackend, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    through = _through_cilium(api_server, tmp_path)
    main(["plan", *through])
    out = capsys.readouterr().out
    assert ("!! restart needed once applied: DaemonSet kube-system/cilium reads the changed "
            "config only when it starts (kubectl -n kube-system rollout restart "
            "daemonset/cilium)") in out
    main(["plan", *through, "--output", "json"])
    planned = json.loads(capsys.readouterr().out)
    validate(planned, "plan")
    assert planned["restart_needed"] == ["DaemonSet kube-system/cilium"]
    assert main(["apply", *through, "--auto-approve", "--output", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    validate(document, "apply")
    assert document["restart_pending"] == [{
        "workload": "DaemonSet kube-system/cilium",
        "reason": document["restart_pending"][0]["reason"],
        "stale": ["cilium-a", "cilium-b"],
        "command": "kubectl -n kube-system rollout restart daemonset/cilium"}]
    assert "Cilium's agents read it when they start" in document["restart_pending"][0]["reason"]
    # In sync, and still pending: said until the pods restart.
    assert main(["apply", *through, "--auto-approve"]) == 0
    out = capsys.readouterr().out
    assert "!! restart pending: DaemonSet kube-system/cilium" in out
    assert ("2 pod(s) started before the change: cilium-a, cilium-b): kubectl -n "
            "kube-system rollout restart daemonset/cilium\n") in out
    _restarted(api_server, "cilium-a", "cilium-b")
    assert main(["apply", *through, "--auto-approve"]) == 0
    assert "restart" not in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["cilium", "flannel"])
def test_a_restart_pending_line_gives_the_exact_command_where_k3snet_knows_it(
        api_server: EmulatedApiServer, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    # The pods reading the ConfigMap not listed (403): the line said "restart the pods
    # reading ConfigMap NS/NAME", the command only in the reason (the stamp's removal).
    # The CNI's DaemonSet is known by name: its restart is the command, text and JSON.
    api_client = api_server.api_client()
    backend, desired, (namespace, name) = _cni(api_server, api_client, kind)
    converge(backend, desired)
    owner = "cilium" if kind == "cilium" else "kube-flannel-ds"
    kept = api_server.get(DAEMONSETS, owner, namespace)
    api_server.delete(DAEMONSETS, owner, namespace)
    # None found reading it: no command k3snet can give (the DaemonSet is not there).
    [unknown] = pending_restarts(_backend(api_client, kind))
    assert unknown.command is None
    assert unknown.to_dict()["command"] is None
    _print_restarts((), (unknown,))
    assert capsys.readouterr().out.endswith(
        f"): restart the pods reading ConfigMap {namespace}/{name}\n")
    assert kept is not None
    api_server.put(DAEMONSETS, kept)
    api_server.fail(403, method="GET", plural="daemonsets", times=None)
    [pending] = pending_restarts(_backend(api_client, kind))
    assert pending.workload == f"the pods reading ConfigMap {namespace}/{name}"
    assert pending.stale is None
    command = f"kubectl -n {namespace} rollout restart daemonset/{owner}"
    assert pending.command == pending.to_dict()["command"] == command
    _print_restarts((), (pending,))
    assert capsys.readouterr().out.endswith(f"): {command}\n")


def test_destroy_names_the_restart_and_follows_it_leaving_only_the_stamp(
        api_server: EmulatedApiServer, cilium: CiliumBackend, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    found = api_server.get(CONFIGMAPS, "cilium-config", "kube-system")
    assert found is not None
    through = _through_cilium(api_server, tmp_path)
    assert main(["apply", *through, "--auto-approve"]) == 0
    capsys.readouterr()
    main(["destroy", *through, "--dry-run", "--output", "json"])
    assert json.loads(capsys.readouterr().out)["restart_needed"] == [
        "DaemonSet kube-system/cilium"]
    assert main(["destroy", *through, "--auto-approve", "--output", "json"]) == 0
    # The settings given back are read by the agents only when they start too: the
    # destroy stamps that change (it took the stamp away: nothing was followed).
    [pending] = json.loads(capsys.readouterr().out)["restart_pending"]
    assert pending["workload"] == "DaemonSet kube-system/cilium"
    assert pending["stale"] == ["cilium-a", "cilium-b"]
    left = api_server.get(CONFIGMAPS, "cilium-config", "kube-system")
    assert left is not None
    assert left["data"] == found["data"]
    # k3snet's records gone, its stamp alone left: a later plan still says it.
    assert set(left["metadata"]["annotations"]) == {CHANGED_ANNOTATION}
    main(["plan", *through])
    assert "!! restart pending: DaemonSet kube-system/cilium" in capsys.readouterr().out
    _restarted(api_server, "cilium-a", "cilium-b")
    main(["plan", *through])
    assert "restart pending" not in capsys.readouterr().out


def test_an_apply_undone_takes_its_stamp_back_too(
        api_server: EmulatedApiServer, cilium: CiliumBackend) -> None:
    # cilium-config written, then the ip-masq-agent ConfigMap's creation refused: the
    # undo put cilium-config's data back and left the stamp, a restart named for nothing.
    found = api_server.get(CONFIGMAPS, "cilium-config", "kube-system")
    assert found is not None
    api_server.fail(500, method="POST", plural="configmaps")
    desired = State(owned=[CiliumConfig(
        CILIUM_DEFAULT_TARGET, settings={"enable-ipv4-masquerade": "false"},
        ip_masq_agent={"nonMasqueradeCIDRs": ["10.0.0.0/8"]})])
    with pytest.raises(ApplyError):
        converge(cilium, desired)
    left = api_server.get(CONFIGMAPS, "cilium-config", "kube-system")
    assert left is not None
    assert left["data"] == found["data"]
    assert CHANGED_ANNOTATION not in (left["metadata"].get("annotations") or {})
    assert pending_restarts(cilium) == ()


class _AheadClock(datetime.datetime):
    """k3snet's clock, ten minutes ahead of the API server's (a node without NTP yet)."""

    @classmethod
    def now(cls, tz: datetime.tzinfo | None = None) -> _AheadClock:
        return super().now(tz) + datetime.timedelta(minutes=10)


@pytest.mark.parametrize("ahead", [True, False], ids=["ahead", "behind"])
def test_the_stamp_is_the_api_server_s_time_whatever_k3snet_s_clock(
        api_server: EmulatedApiServer, cilium: CiliumBackend,
        monkeypatch: pytest.MonkeyPatch, ahead: bool) -> None:
    # The pods' creation is the API server's clock: a stamp of k3snet's, ahead, named
    # pods made after the change pending for ten minutes (a rollout restart made at
    # once, forever); behind, pods made before the change were in force already. Apart,
    # the stamp is the latest the read's Date allows: never before the write, late by
    # the Date's rounding and the read's time at most.
    class _BehindClock(datetime.datetime):
        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> _BehindClock:
            return super().now(tz) - datetime.timedelta(minutes=10)

    skewed = _AheadClock if ahead else _BehindClock
    monkeypatch.setattr(cni_restart, "datetime", types.SimpleNamespace(
        datetime=skewed, UTC=datetime.UTC, timedelta=datetime.timedelta))
    server_now = datetime.datetime.now(tz=datetime.UTC)
    five_ago = (server_now - datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    api_server.put(PODS, _cilium_pod("cilium-b", created=five_ago))
    [pending] = converge(cilium, _masquerade("false")).restarts
    assert pending.stale == ("cilium-a", "cilium-b")
    stored = api_server.get(CONFIGMAPS, "cilium-config", "kube-system")
    assert stored is not None
    stamp = datetime.datetime.fromisoformat(
        stored["metadata"]["annotations"][CHANGED_ANNOTATION].replace("Z", "+00:00"))
    server_after = datetime.datetime.now(tz=datetime.UTC)
    assert server_now.replace(microsecond=0) <= stamp
    assert stamp <= server_after + datetime.timedelta(seconds=2)
    # The rollout restart, its new pods made a few seconds after the write (not in the
    # second or so a stamp of clocks apart may be late by).
    made = (server_after + datetime.timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for name in ("cilium-a", "cilium-b"):
        api_server.delete(PODS, name, "kube-system")
        api_server.put(PODS, _cilium_pod(f"{name}-new", created=made))
    assert pending_restarts(cilium) == ()


def test_once_every_pod_was_made_since_the_stamp_no_pod_is_listed_again(
        api_server: EmulatedApiServer, cilium: CiliumBackend) -> None:
    # A pod's creation never moves: the agent's Lease holder listed every DaemonSet and
    # Pod of kube-system from etcd on each pass, as long as the stamp stayed.
    converge(cilium, _masquerade("false"))
    _restarted(api_server, "cilium-a", "cilium-b")
    assert pending_restarts(cilium) == ()
    before = len(api_server.requests())
    assert converge(cilium, _masquerade("false")).restarts == ()
    assert pending_restarts(cilium) == ()
    assert _lists(api_server, before) == []
    # A new change is followed again.
    before = len(api_server.requests())
    assert converge(cilium, _masquerade("true")).restarts == ()
    assert _lists(api_server, before) == ["daemonsets", "pods"]


def _lists(api_server: EmulatedApiServer, since: int) -> list[str]:
    """The DaemonSets and Pods lists asked for from etcd since request ``since`` (not those
    from the watch cache, ``resourceVersion=0``: the cilium backend's list of the agent
    DaemonSets, each pass)."""
    paths = [p.split("?")[0] for (m, p, _), params in zip(
        api_server.requests()[since:], api_server.params()[since:], strict=True)
        if m == "GET" and params.get("resourceVersion") != "0"]
    return [p.rsplit("/", 1)[1] for p in paths if p.endswith(("/pods", "/daemonsets"))]


def _date_rewritten(api_client: Any, date: str) -> Any:
    """``api_client`` with each answer's ``Date`` header replaced by ``date``, as a proxy
    with its own clock (or an API server's clock without a battery) sends it."""
    request = api_client.rest_client.request

    def rewritten(*args: Any, **kwargs: Any) -> Any:
        answer = request(*args, **kwargs)
        answer.response.headers["Date"] = date
        return answer

    api_client.rest_client.request = rewritten
    return api_client


@pytest.mark.parametrize("date", ["Fri, 31 Dec 9999 23:59:59 -1200",
                                  "Mon, 01 Jan 0100 00:00:00 GMT"],
                         ids=["beyond-year-9999", "year-100"])
@pytest.mark.parametrize("kind", ["cilium", "flannel"])
def test_any_date_header_gives_a_stamp_k3snet_reads_back(
        api_server: EmulatedApiServer, kind: str, date: str) -> None:
    # A Date beyond what a time holds made the write's stamp an OverflowError (a
    # traceback, nothing applied); one before year 1000 a stamp without its four year
    # digits, unreadable: the restart was said pending for ever, its pods never looked at.
    api_client = _date_rewritten(api_server.api_client(), date)
    backend, desired, (namespace, name) = _cni(api_server, api_client, kind)
    done = converge(backend, desired)
    assert done.result is not None
    stored = api_server.get(CONFIGMAPS, name, namespace)
    assert stored is not None
    stamp = stored["metadata"]["annotations"][CHANGED_ANNOTATION]
    assert datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert all("unreadable" not in r.reason for r in done.restarts)


def _cni(api_server: EmulatedApiServer, api_client: Any, kind: str
         ) -> tuple[CiliumBackend | FlannelBackend, State, tuple[str, str]]:
    """A ``kind`` backend on ``api_client``, its ConfigMap and DaemonSet (no pods) put,
    a state changing the ConfigMap, and the ConfigMap's namespace and name."""
    if kind == "cilium":
        api_server.put(CONFIGMAPS, configmap("kube-system", "cilium-config",
                                             {"enable-ipv4-masquerade": "true"}))
        api_server.put(DAEMONSETS, daemonset("kube-system", "cilium", CILIUM_LABELS, []))
        return (_backend(api_client, kind), _masquerade("false"),
                ("kube-system", "cilium-config"))
    api_server.put(CONFIGMAPS, _flannel_cfg())
    api_server.put(DAEMONSETS, _flannel_daemonset("kube-flannel-ds"))
    flannel = _backend(api_client, kind)
    return (flannel, State(owned=[FlannelConfig(flannel.target, enable_nftables=True)]),
            ("kube-flannel", "kube-flannel-cfg"))


def _backend(api_client: Any, kind: str) -> CiliumBackend | FlannelBackend:
    if kind == "cilium":
        return CiliumBackend(api_client=api_client, timeout=10.0)
    return FlannelBackend(api_client=api_client, timeout=10.0, allow_disruptive=True)


class _Clock(datetime.datetime):
    """k3snet's clock, moved only by the test (:attr:`at`)."""

    at = datetime.datetime(2026, 12, 6, 12, 0, 0, 500000, tzinfo=datetime.UTC)

    @classmethod
    def now(cls, tz: datetime.tzinfo | None = None) -> _Clock:
        return cls.fromtimestamp(cls.at.timestamp(), tz)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> type[_Clock]:
    monkeypatch.setattr(_Clock, "at", _Clock.at)  # each test's moves undone after it
    monkeypatch.setattr(cni_restart, "datetime", types.SimpleNamespace(
        datetime=_Clock, UTC=datetime.UTC, timedelta=datetime.timedelta))
    return _Clock


def _slow_answers(api_client: Any, clock: type[_Clock], ahead: float, wait: float,
                  writes: list[tuple[str, datetime.datetime]]) -> Any:
    """``api_client`` whose every answer reaches k3snet ``wait`` seconds after the API
    server wrote its ``Date`` (a slow link, a paused process: ``clock`` moves on), the
    server's clock ``ahead`` of k3snet's by that much; ``writes``: the server's time of
    each write (PATCH, PUT, POST) with its URL."""
    request = api_client.rest_client.request

    def slow(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        server = clock.at + datetime.timedelta(seconds=ahead)
        if method in ("PATCH", "PUT", "POST"):
            writes.append((url, server))
        answer = request(method, url, *args, **kwargs)
        answer.response.headers["Date"] = email.utils.format_datetime(server, usegmt=True)
        clock.at += datetime.timedelta(seconds=wait)
        return answer

    api_client.rest_client.request = slow
    return api_client


def _utc(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _written(api_server: EmulatedApiServer, clock: type[_Clock], kind: str, ahead: float,
             answer: float) -> tuple[Any, str, str, dict[str, str], datetime.datetime]:
    """The CNI ``kind``'s change converged through an API server whose clock is ``ahead``
    seconds ahead and answers in ``answer`` seconds (:func:`_slow_answers`): the API
    client, the ConfigMap's namespace, the DaemonSet's name and labels, and the server's
    time of the ConfigMap's write."""
    writes: list[tuple[str, datetime.datetime]] = []
    api_client = _slow_answers(api_server.api_client(), clock, ahead, answer, writes)
    backend, desired, (namespace, name) = _cni(api_server, api_client, kind)
    owner, labels = ("cilium", CILIUM_LABELS) if kind == "cilium" else (
        "kube-flannel-ds", FLANNEL_LABELS)
    converge(backend, desired)
    [write] = [at for url, at in writes if url.split("?")[0].endswith(f"/{name}")]
    return api_client, namespace, owner, labels, write


@pytest.mark.parametrize("kind", ["cilium", "flannel"])
def test_a_slow_answer_is_no_clock_gap_a_pod_made_before_the_write_stays_pending(
        api_server: EmulatedApiServer, clock: type[_Clock], kind: str) -> None:
    # The gap was taken as Date minus k3snet's clock after the answer: a 10 s answer
    # looked like a clock 10 s behind, the stamp landed 10 s early, and a pod made in
    # those seconds before the write counted as restarted (the change said in force on a
    # node running the old config).
    api_client, namespace, owner, labels, write = _written(api_server, clock, kind, 0.0, 10.0)
    api_server.put(PODS, daemonset_pod(namespace, "made-before", owner, labels,
                                       created=_utc(write - datetime.timedelta(seconds=5))))
    api_server.put(PODS, daemonset_pod(namespace, "made-after", owner, labels,
                                       created=_utc(write + datetime.timedelta(seconds=2))))
    # Another process's backend (the write's one found no pod: the stamp settled).
    again = _backend(api_client, kind)
    assert [r.stale for r in pending_restarts(again)] == [("made-before",)]


_GAPS = pytest.mark.parametrize(("ahead", "wait", "fraction", "later"), [
    (0.0, 10.0, 0.5, 1.7), (0.0, 0.01, 0.5, 1.7), (600.0, 0.01, 0.5, 1.7),
    (600.0, 10.0, 0.5, 1.7), (-600.0, 0.01, 0.5, 1.7), (-600.0, 10.0, 0.5, 1.7),
    (3.0, 0.01, 0.5, 1.7), (-3.0, 0.01, 0.5, 1.7), (-0.9, 0.01, 0.5, 1.7),
    (0.9, 0.01, 0.5, 1.7), (0.9, 0.01, 0.05, 0.2), (0.5, 0.01, 0.3, 0.4),
    (0.0, 0.01, 0.95, 0.01), (-0.5, 0.01, 0.7, 0.5)])
"""The server's clock ``ahead`` of k3snet's, a read answered in ``wait`` seconds whose
request was sent at ``fraction`` of k3snet's second, the write ``later`` after it."""


def _noted(clock: type[_Clock], monkeypatch: pytest.MonkeyPatch, *, ahead: float,
           wait: float, fraction: float, later: float
           ) -> tuple[cni_restart.ServerClock, datetime.datetime]:
    """A ServerClock that noted one read (its Date written at the request's time) and
    the server's time ``later`` seconds after the answer, when the write is sent."""
    monkeypatch.setattr(clock, "at", clock.at.replace(microsecond=int(fraction * 1e6)))
    server = clock.at + datetime.timedelta(seconds=ahead)
    asked = cni_restart.ServerClock.asked()
    clock.at += datetime.timedelta(seconds=wait)
    kept = cni_restart.ServerClock()
    kept.note({"Date": email.utils.format_datetime(server, usegmt=True)}, asked)
    clock.at += datetime.timedelta(seconds=later)  # the write, a while after the read
    return kept, clock.at + datetime.timedelta(seconds=ahead)


@_GAPS
def test_the_stamp_is_never_before_the_server_s_second_late_by_a_second_and_the_answer_s_time(
        clock: type[_Clock], monkeypatch: pytest.MonkeyPatch, *, ahead: float, wait: float,
        fraction: float, later: float) -> None:
    # The latest server time the answer allows, whatever the gap. Where the answer could
    # not tell the clocks apart (its interval held 0) the stamp was k3snet's own: with the
    # server 0.9 s ahead, the write landed in the second after the stamp's, and a pod
    # made just before it counted as restarted. (A fake clock: Date written at the
    # request's time, the write ``later`` seconds after the answer.)
    kept, truth = _noted(clock, monkeypatch, ahead=ahead, wait=wait, fraction=fraction,
                         later=later)
    stamp = datetime.datetime.fromisoformat(kept.stamp().replace("Z", "+00:00"))
    assert stamp >= truth.replace(microsecond=0)
    assert (stamp - truth).total_seconds() <= 1 + wait  # late by the answer's time


@_GAPS
def test_the_earliest_stamp_is_never_after_the_server_s_time_early_by_2s_and_the_answer_s_time(
        clock: type[_Clock], monkeypatch: pytest.MonkeyPatch, *, ahead: float, wait: float,
        fraction: float, later: float) -> None:
    # What an undo compares the pods' creation with (the write's landing at its
    # earliest): a pod made after the write is never in a second before it. Early by
    # the Date's second, the answer's time and the stamp's own second at most.
    kept, truth = _noted(clock, monkeypatch, ahead=ahead, wait=wait, fraction=fraction,
                         later=later)
    earliest = datetime.datetime.fromisoformat(kept.earliest().replace("Z", "+00:00"))
    assert earliest <= truth
    assert (truth - earliest).total_seconds() < 2 + wait


@pytest.mark.parametrize("kind", ["cilium", "flannel"])
@pytest.mark.parametrize("fraction", [0.02, 0.05, 0.08])
def test_a_pod_made_just_before_the_write_on_a_server_clock_ahead_by_under_a_second_is_pending(
        api_server: EmulatedApiServer, clock: type[_Clock], monkeypatch: pytest.MonkeyPatch,
        kind: str, fraction: float) -> None:
    # The server's clock 0.9 s ahead, its answers 10 ms: the reads could not tell the
    # clocks apart and the stamp was k3snet's second, the write landing in the next:
    # a pod made in that second before the write counted as restarted.
    monkeypatch.setattr(clock, "at", clock.at.replace(microsecond=int(fraction * 1e6)))
    api_client, namespace, owner, labels, write = _written(api_server, clock, kind, 0.9, 0.01)
    api_server.put(PODS, daemonset_pod(namespace, "made-before", owner, labels,
                                        created=_utc(write - datetime.timedelta(milliseconds=1))))
    again = _backend(api_client, kind)
    assert [r.stale for r in pending_restarts(again)] == [("made-before",)]


def _pod_lists(api_server: EmulatedApiServer) -> list[str | None]:
    """The ``labelSelector`` of each Pods list asked for (``None``: the namespace's)."""
    return [params.get("labelSelector")
            for (method, path, _), params in zip(api_server.requests(), api_server.params(),
                                                 strict=True)
            if method == "GET" and path.split("?")[0].endswith("/pods")]


def test_the_pods_listed_are_those_the_daemonset_s_selector_selects(
        api_server: EmulatedApiServer, cilium: CiliumBackend) -> None:
    # Every Pod of kube-system was listed (every add-on's, a few a node) while a restart
    # was pending, to keep the DaemonSet's own: the list now asks for those alone.
    [pending] = converge(cilium, _masquerade("false")).restarts
    assert pending.stale == ("cilium-a", "cilium-b")
    assert _pod_lists(api_server) == ["k8s-app=cilium"]
    # matchExpressions go with it, as the API server reads them.
    expressions = daemonset("kube-system", "cilium", CILIUM_LABELS, [])
    expressions["spec"]["selector"]["matchExpressions"] = [
        {"key": "tier", "operator": "NotIn", "values": ["canary", "test"]},
        {"key": "k8s-app", "operator": "Exists"}]
    api_server.put(DAEMONSETS, expressions)
    before = len(_pod_lists(api_server))
    assert [r.stale for r in pending_restarts(cilium)] == [("cilium-a", "cilium-b")]
    assert _pod_lists(api_server)[before:] == [
        "k8s-app=cilium,tier notin (canary,test),k8s-app"]


def test_a_selector_k3snet_cannot_read_keeps_the_daemonset_s_own_pods_pending(
        api_server: EmulatedApiServer, cilium: CiliumBackend) -> None:
    # A selector apimachinery refuses counted none of the DaemonSet's pods: no restart
    # was said pending, as if every pod had restarted. Its pods are told by their owner.
    converge(cilium, _masquerade("false"))
    odd = daemonset("kube-system", "cilium", CILIUM_LABELS, [])
    odd["spec"]["selector"] = {"matchExpressions": [{"key": "k8s-app", "operator": "Near"}]}
    api_server.put(DAEMONSETS, odd)
    before = len(_pod_lists(api_server))
    assert [r.stale for r in pending_restarts(cilium)] == [("cilium-a", "cilium-b")]
    assert _pod_lists(api_server)[before:] == [None]  # the namespace's, owners told apart


def _stamp_of(api_server: EmulatedApiServer, name: str, namespace: str) -> datetime.datetime:
    stored = api_server.get(CONFIGMAPS, name, namespace)
    assert stored is not None
    return datetime.datetime.fromisoformat(
        stored["metadata"]["annotations"][CHANGED_ANNOTATION].replace("Z", "+00:00"))


def test_a_pod_made_in_the_stamp_s_own_second_is_still_pending(
        api_server: EmulatedApiServer, cilium: CiliumBackend) -> None:
    # The stamp and creationTimestamp hold whole seconds: a pod made in the stamp's
    # second may predate the write, and counted as restarted (the change said in force
    # on a node that may run the old config). A second later it is surely made after.
    converge(cilium, _masquerade("false"))
    stamp = _stamp_of(api_server, "cilium-config", "kube-system")
    api_server.put(PODS, _cilium_pod("cilium-a", created=_utc(stamp)))
    api_server.put(PODS, _cilium_pod("cilium-b",
                                     created=_utc(stamp + datetime.timedelta(seconds=1))))
    assert [r.stale for r in pending_restarts(cilium)] == [("cilium-a",)]


def _subpath_cilium(api_server: EmulatedApiServer) -> None:
    """Cilium's eBPF ip-masq-agent on, its ConfigMap mounted through ``subPath``: a copy
    the kubelet never updates."""
    api_server.put(CONFIGMAPS, _cilium_config(EBPF_AGENT))
    sub = cilium_daemonset(ip_masq_agent=True)
    sub["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][-1].update(
        mountPath="/etc/config/ip-masq-agent", subPath="ip-masq-agent")
    api_server.put(DAEMONSETS, sub)


def _non_masquerade(*cidrs: str) -> State:
    return State(owned=[CiliumConfig(CILIUM_DEFAULT_TARGET,
                                     ip_masq_agent={"nonMasqueradeCIDRs": list(cidrs)})])


def _patches(api_server: EmulatedApiServer, name: str, since: int) -> int:
    return sum(1 for method, path, _ in api_server.requests()[since:]
               if method == "PATCH" and path.split("?")[0].endswith(f"/configmaps/{name}"))


def test_a_subpath_mounted_ip_masq_agent_change_is_pending_until_the_agents_restarted(
        api_server: EmulatedApiServer, cilium: CiliumBackend) -> None:
    # plan named the restart (restart needed once applied), and nothing followed it: no
    # stamp, no restart pending, while every agent kept its copy of the old file.
    _subpath_cilium(api_server)
    desired = _non_masquerade("10.0.0.0/8")
    preview = converge(cilium, desired, dry_run=True)
    assert restarts_needed(cilium, preview.plan) == ("DaemonSet kube-system/cilium",)
    [pending] = converge(cilium, desired).restarts
    assert (pending.workload, pending.stale) == (
        "DaemonSet kube-system/cilium", ("cilium-a", "cilium-b"))
    assert "ip-masq-agent" in pending.reason
    stored = api_server.get(CONFIGMAPS, "cilium-config", "kube-system")
    assert stored is not None
    assert stored["data"] == EBPF_AGENT  # cilium-config's keys untouched: its stamp alone
    assert CHANGED_ANNOTATION in stored["metadata"]["annotations"]
    _restarted(api_server, "cilium-a", "cilium-b")
    assert pending_restarts(cilium) == ()
    # The whole volume mounted (Helm's way): the kubelet updates the file; no stamp.
    api_server.put(DAEMONSETS, cilium_daemonset(ip_masq_agent=True))
    before = len(api_server.requests())
    done = converge(cilium, _non_masquerade("10.0.0.0/8", "100.64.0.0/10"))
    assert done.result is not None
    assert done.result.applied
    assert _patches(api_server, "cilium-config", before) == 0


def test_a_subpath_mounted_ip_masq_agent_given_back_by_destroy_is_followed_too(
        api_server: EmulatedApiServer, cilium: CiliumBackend) -> None:
    # The ConfigMap k3snet created goes with its last key: its deletion is no update the
    # copies see either. The stamp is cilium-config's, which stays.
    _subpath_cilium(api_server)
    converge(cilium, _non_masquerade("10.0.0.0/8"))
    _restarted(api_server, "cilium-a", "cilium-b")
    api_server.put(PODS, _cilium_pod("cilium-c", created=LONG_AGO))
    [pending] = converge(cilium, State(), allow_teardown=True).restarts
    assert pending.stale == ("cilium-c",)  # made before the destroy's write
    assert api_server.get(CONFIGMAPS, "ip-masq-agent", "kube-system") is None


def test_a_flannel_destroy_giving_net_conf_back_is_pending_until_its_pods_restarted(
        api_server: EmulatedApiServer) -> None:
    # The destroy took the stamp away with k3snet's last key: the restart the text given
    # back needs was named by destroy --dry-run, never followed.
    backend, desired, (namespace, name) = _cni(api_server, api_server.api_client(),
                                               "flannel")
    api_server.put(PODS, daemonset_pod(namespace, "flannel-1", "kube-flannel-ds",
                                       FLANNEL_LABELS, created=LONG_AGO))
    converge(backend, desired)
    [pending] = converge(backend, State(), allow_teardown=True).restarts
    assert (pending.workload, pending.stale) == (
        "DaemonSet kube-flannel/kube-flannel-ds", ("flannel-1",))
    left = api_server.get(CONFIGMAPS, name, namespace)
    assert left is not None
    assert left["data"] == {"net-conf.json": NET_CONF}
    assert set(left["metadata"]["annotations"]) == {CHANGED_ANNOTATION}
    assert [r.stale for r in pending_restarts(_backend(api_server.api_client(), "flannel"))
            ] == [("flannel-1",)]


def test_a_flannel_file_change_says_k3s_s_restart_pending_once_and_that_it_is_not_followed(
        tmp_path: Path) -> None:
    # K3s reads --flannel-conf when it starts, and no cluster object shows when it did:
    # the apply that wrote the file said nothing of the restart it needs.
    conf = tmp_path / "flannel.json"
    conf.write_text(NET_CONF)
    backend = FlannelBackend(path=conf, allow_disruptive=True)
    desired = State(owned=[FlannelConfig(backend.target, extra={"x-site": "rack-1"})])
    [pending] = converge(backend, desired).restarts
    assert pending.workload == "K3s (the k3s or k3s-agent service on the node)"
    assert pending.stale is None  # k3snet cannot tell when that is done
    assert f"flannel config file {conf} changed at " in pending.reason
    assert "not followed after this run" in pending.reason
    assert "k3snet cannot tell when that is done" in pending.render()
    # Not followed: a later pass says nothing it cannot know.
    assert converge(backend, desired).restarts == ()
    [undone] = converge(backend, State(), allow_teardown=True).restarts
    assert undone.workload == pending.workload
    assert conf.read_text() == NET_CONF


def test_a_subpath_stamp_alone_is_taken_back_over_another_key_s_change_meanwhile(
        api_server: EmulatedApiServer, cilium: CiliumBackend) -> None:
    # A subPath ip-masq-agent change after k3snet's first (its records on cilium-config
    # as they were): the first write is cilium-config's stamp alone. The ip-masq-agent
    # patch refused after another key of cilium-config changed (Helm's debug), the
    # undo's patch is a 409; read again, cilium-config held no key and no record
    # otherwise than before (the stamp was all that write set): "the undo done", the
    # stamp left, a restart said pending for a change taken back.
    _subpath_cilium(api_server)
    converge(cilium, _non_masquerade("10.0.0.0/8"))
    stamped = api_server.get(CONFIGMAPS, "cilium-config", "kube-system")
    assert stamped is not None
    stamp = "2021-01-01T00:00:00Z"  # that change's, its pods restarted since
    stamped["metadata"]["annotations"][CHANGED_ANNOTATION] = stamp
    api_server.put(CONFIGMAPS, stamped)
    for name in ("cilium-a", "cilium-b"):
        api_server.put(PODS, daemonset_pod("kube-system", name, "cilium", CILIUM_LABELS,
                                           created="2022-01-01T00:00:00Z"))
    assert pending_restarts(cilium) == ()
    api_server.fail(500, method="PATCH", plural="configmaps", name="ip-masq-agent")
    api_client = cilium._api.core.api_client
    real = api_client.rest_client.pool_manager.request

    def request(verb: str, url: str, **kwargs: Any) -> Any:
        if verb == "PATCH" and "/configmaps/ip-masq-agent" in url:  # about to fail
            stored = api_server.get(CONFIGMAPS, "cilium-config", "kube-system")
            assert stored is not None
            stored["data"]["debug"] = "true"
            api_server.put(CONFIGMAPS, stored)
        return real(verb, url, **kwargs)

    api_client.rest_client.pool_manager.request = request
    with pytest.raises(ApplyError) as info:
        converge(cilium, _non_masquerade("10.0.0.0/8", "100.64.0.0/10"))
    assert not isinstance(info.value, RollbackError), info.value
    left = api_server.get(CONFIGMAPS, "cilium-config", "kube-system")
    assert left is not None
    assert left["data"] == {**EBPF_AGENT, "debug": "true"}
    assert left["metadata"]["annotations"][CHANGED_ANNOTATION] == stamp
    assert pending_restarts(cilium) == ()


@pytest.mark.parametrize("kind", ["cilium", "flannel"])
def test_a_stamp_after_the_server_s_time_now_names_no_pod_and_says_how_to_end_it(
        api_server: EmulatedApiServer, kind: str) -> None:
    # The API server's clock was years ahead at the write and was set right since:
    # every pod made since, restarted after the change or not, is created before the
    # stamp. Each was named pending with `rollout restart`, which ends nothing until the
    # server's clock passes the stamp.
    api_client = api_server.api_client()
    backend, desired, (namespace, name) = _cni(api_server, api_client, kind)
    owner, labels = ("cilium", CILIUM_LABELS) if kind == "cilium" else (
        "kube-flannel-ds", FLANNEL_LABELS)
    converge(backend, desired)
    stored = api_server.get(CONFIGMAPS, name, namespace)
    assert stored is not None
    stored["metadata"]["annotations"][CHANGED_ANNOTATION] = "2031-01-01T00:00:00Z"
    api_server.put(CONFIGMAPS, stored)
    now = datetime.datetime.now(tz=datetime.UTC)
    api_server.put(PODS, daemonset_pod(namespace, f"{owner}-1", owner, labels, created=_utc(now)))
    [pending] = pending_restarts(_backend(api_client, kind))
    assert pending.stale is None
    assert pending.workload == f"the pods reading ConfigMap {namespace}/{name}"
    assert "its clock went back since the write" in pending.reason
    assert (f"once each pod restarted: kubectl -n {namespace} patch configmap {name} "
            "--type=json -p '[{\"op\":\"test\",\"path\":\"/metadata/annotations/"
            "k3snet.io~1changed-at\",\"value\":\"2031-01-01T00:00:00Z\"},"
            "{\"op\":\"remove\",") in pending.reason
    # Within a minute of the server's time: a stamp late by a second and a read's time.
    soon = now + datetime.timedelta(seconds=30)
    stored["metadata"]["annotations"][CHANGED_ANNOTATION] = _utc(soon)
    api_server.put(CONFIGMAPS, stored)
    assert [r.stale for r in pending_restarts(_backend(api_client, kind))] == [
        (f"{owner}-1",)]


@pytest.mark.parametrize("kind", ["cilium", "flannel"])
def test_a_daemonset_not_found_says_how_to_end_it_and_is_listed_again_only_after_a_growing_wait(
        api_server: EmulatedApiServer, clock: type[_Clock], kind: str) -> None:
    # The CNI's DaemonSet deleted or renamed (the backend not told its new name): the
    # restart was said pending ("k3snet cannot tell") with nothing saying what ends it,
    # and the agent's Lease holder listed the namespace's DaemonSets on every pass, for
    # as long as the stamp stayed.
    api_client = _slow_answers(api_server.api_client(), clock, 0.0, 0.0, [])
    backend, desired, (namespace, name) = _cni(api_server, api_client, kind)
    owner, labels = ("cilium", CILIUM_LABELS) if kind == "cilium" else (
        "kube-flannel-ds", FLANNEL_LABELS)
    kept = api_server.get(DAEMONSETS, owner, namespace)
    api_server.delete(DAEMONSETS, owner, namespace)
    [pending] = converge(backend, desired).restarts
    assert pending.stale is None
    assert (f"once each pod reading it restarted: kubectl -n {namespace} patch configmap "
            f"{name} --type=json -p '[{{\"op\":\"test\"" in pending.reason)
    if kind == "cilium":
        assert "(--backend-opt cilium.daemonset=NAME; now 'cilium')" in pending.reason
    # Said again, nothing listed, for a minute; then listed once and for two minutes not.
    listed = []
    for step in (0, 30, 29, 2, 60, 59, 2):
        clock.at += datetime.timedelta(seconds=step)
        before = len(api_server.requests())
        assert pending_restarts(backend) == (pending,)
        listed.append(_lists(api_server, before))
    assert listed == [[], [], [], ["daemonsets"], [], [], ["daemonsets"]]
    # Made again: found at the wait's end (at most an hour), its pods named.
    assert kept is not None
    api_server.put(DAEMONSETS, kept)
    api_server.put(PODS, daemonset_pod(namespace, f"{owner}-1", owner, labels,
                                       created=LONG_AGO))
    clock.at += datetime.timedelta(minutes=5)
    assert [r.stale for r in pending_restarts(backend)] == [(f"{owner}-1",)]
    before = len(api_server.requests())
    assert [r.stale for r in pending_restarts(backend)] == [(f"{owner}-1",)]
    assert _lists(api_server, before) == ["daemonsets", "pods"]  # followed at each call


def test_the_wait_for_daemonsets_not_found_doubles_up_to_an_hour(
        clock: type[_Clock]) -> None:
    settled = cni_restart.Settled()
    said = (PendingRestart("the pods reading ConfigMap ns/cm", "why"),)
    now = clock.at
    waits = []
    for _ in range(9):
        settled.not_found("2026-12-06T12:00:00Z", said, now)
        assert settled.until is not None
        waits.append(settled.until - now)
        assert settled.unseen("2026-12-06T12:00:00Z", settled.until
                              - datetime.timedelta(seconds=1)) == said
        assert settled.unseen("2026-12-06T12:00:00Z", settled.until) is None
        assert settled.unseen("2026-12-06T12:00:01Z", now) is None  # another stamp
        now = settled.until
    assert [w.total_seconds() / 60 for w in waits] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    settled.forget()
    assert settled.unseen("2026-12-06T12:00:00Z", now) is None


def _slow_write(api_server: EmulatedApiServer, clock: type[_Clock], kind: str
                ) -> tuple[str, list[datetime.datetime], Any]:
    """The name of CNI ``kind``'s ConfigMap, when its first PATCH landed (``landed``, empty
    until then), and an API client of ``api_server`` whose first PATCH of that ConfigMap
    lands 10 seconds after it was sent (a busy API server: ``clock`` moves on), every
    answer's ``Date`` the server's time as it is written (``clock``'s)."""
    name = "cilium-config" if kind == "cilium" else "kube-flannel-cfg"
    landed: list[datetime.datetime] = []
    api_client = api_server.api_client()
    request = api_client.rest_client.request

    def slow(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if method == "PATCH" and not landed and url.split("?", maxsplit=1)[0].endswith(f"/{name}"):
            clock.at += datetime.timedelta(seconds=10)
            landed.append(clock.at)
        answer = request(method, url, *args, **kwargs)
        answer.response.headers["Date"] = email.utils.format_datetime(clock.at, usegmt=True)
        return answer

    api_client.rest_client.request = slow
    return name, landed, api_client


@pytest.mark.parametrize("kind", ["cilium", "flannel"])
def test_a_write_landing_seconds_after_its_stamp_moves_the_stamp_to_its_landing(
        api_server: EmulatedApiServer, clock: type[_Clock], kind: str) -> None:
    # The stamp is taken before the write is sent: a PATCH landing 10 s later left it
    # 10 s early, and a pod made in between (which may have read the old config)
    # counted as restarted. The answer's Date (written once the write landed) now is
    # the stamp where it is later.
    name, landed, api_client = _slow_write(api_server, clock, kind)
    backend, desired, (namespace, _) = _cni(api_server, api_client, kind)
    owner, labels = ("cilium", CILIUM_LABELS) if kind == "cilium" else (
        "kube-flannel-ds", FLANNEL_LABELS)
    sent = clock.at
    # Pods made while the write was on its way, and after it landed.
    api_server.put(PODS, daemonset_pod(namespace, "made-in-between", owner, labels,
                                       created=_utc(sent + datetime.timedelta(seconds=5))))
    api_server.put(PODS, daemonset_pod(namespace, "made-after", owner, labels,
                                       created=_utc(sent + datetime.timedelta(seconds=12))))
    done = converge(backend, desired)
    [landing] = landed
    stored = api_server.get(CONFIGMAPS, name, namespace)
    assert stored is not None
    assert stored["metadata"]["annotations"][CHANGED_ANNOTATION] == _utc(landing)
    assert [r.stale for r in done.restarts] == [("made-in-between",)]
    assert [r.stale for r in pending_restarts(_backend(api_client, kind))] == [
        ("made-in-between",)]


@pytest.mark.parametrize("kind", ["cilium", "flannel"])
def test_a_write_landing_in_the_stamp_s_second_writes_no_second_patch(
        api_server: EmulatedApiServer, kind: str) -> None:
    api_client = api_server.api_client()
    backend, desired, (_, name) = _cni(api_server, api_client, kind)
    before = len(api_server.requests())
    converge(backend, desired)
    patches = [p for m, p, _ in api_server.requests()[before:] if m == "PATCH"
               and p.split("?")[0].endswith(f"/{name}")]
    assert len(patches) == 1


def test_an_apply_undone_takes_a_stamp_moved_to_the_write_s_landing_back_too(
        api_server: EmulatedApiServer, clock: type[_Clock]) -> None:
    # The stamp moved to the slow write's landing is k3snet's: the undo compares it with
    # the one it left, not the one it sent (else "changed by someone else", left whole).
    _, _, api_client = _slow_write(api_server, clock, "cilium")
    cilium, _, _ = _cni(api_server, api_client, "cilium")
    found = api_server.get(CONFIGMAPS, "cilium-config", "kube-system")
    assert found is not None
    api_server.fail(500, method="POST", plural="configmaps")
    desired = State(owned=[CiliumConfig(
        CILIUM_DEFAULT_TARGET, settings={"enable-ipv4-masquerade": "false"},
        ip_masq_agent={"nonMasqueradeCIDRs": ["10.0.0.0/8"]})])
    with pytest.raises(ApplyError) as info:
        converge(cilium, desired)
    assert not isinstance(info.value, RollbackError), info.value
    left = api_server.get(CONFIGMAPS, "cilium-config", "kube-system")
    assert left is not None
    assert left["data"] == found["data"]
    assert CHANGED_ANNOTATION not in (left["metadata"].get("annotations") or {})


def _second_patch_failing(api_server: EmulatedApiServer, clock: type[_Clock], kind: str,
                          status: int, **failure: Any) -> tuple[str, str, list[datetime.datetime],
                                                                Any, Any]:
    """The CNI backend of ``kind`` whose ConfigMap write lands 10 s late, the next PATCH
    of it (the stamp's move) failing with ``status`` (``failure``: the emulated server's
    ``fail`` options); its ConfigMap's name and namespace, the landings, the backend and
    the desired state."""
    name, landed, api_client = _slow_write(api_server, clock, kind)
    request = api_client.rest_client.request

    def fail_the_second(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        first = method == "PATCH" and not landed
        answer = request(method, url, *args, **kwargs)
        if first and landed:
            api_server.fail(status, method="PATCH", plural="configmaps", name=name, **failure)
        return answer

    api_client.rest_client.request = fail_the_second
    backend, desired, (namespace, _) = _cni(api_server, api_client, kind)
    return name, namespace, landed, backend, desired


@pytest.mark.parametrize("kind", ["cilium", "flannel"])
def test_a_stamp_s_move_refused_takes_the_landed_write_back_all_or_nothing(
        api_server: EmulatedApiServer, clock: type[_Clock], kind: str) -> None:
    # The write landed (10 s late) and the patch moving its stamp to the landing was
    # refused (403, a webhook): the apply failed saying nothing was changed (flannel:
    # "nothing was changed"; cilium: its first write, never recorded, not undone), the
    # new config left under a stamp before its landing. It is taken back now.
    name, namespace, landed, backend, desired = _second_patch_failing(
        api_server, clock, kind, 403, message="denied by a webhook")
    found = api_server.get(CONFIGMAPS, name, namespace)
    assert found is not None
    with pytest.raises(ApplyError) as info:
        converge(backend, desired)
    assert landed
    assert not isinstance(info.value, RollbackError), info.value
    assert info.value.done, info.value  # made, and undone
    assert info.value.rolled_back, info.value
    assert "denied by a webhook" in str(info.value)
    left = api_server.get(CONFIGMAPS, name, namespace)
    assert left is not None
    assert left["data"] == found["data"]
    assert (left["metadata"].get("annotations") or {}) == (
        found["metadata"].get("annotations") or {})


@pytest.mark.parametrize("kind", ["cilium", "flannel"])
def test_a_stamp_s_move_made_with_its_answer_lost_is_the_move_made(
        api_server: EmulatedApiServer, clock: type[_Clock], kind: str) -> None:
    # The patch moving the stamp was made and its answer lost (a 504 after the write):
    # read, the stamp found moved is the move made, the apply done; it was a refusal
    # whose undo found the stamp "changed by someone else" (RollbackError, the
    # ConfigMap said maybe half-changed, though it held the apply and its landing).
    name, namespace, landed, backend, desired = _second_patch_failing(
        api_server, clock, kind, 504, served=True)
    converge(backend, desired)
    [landing] = landed
    left = api_server.get(CONFIGMAPS, name, namespace)
    assert left is not None
    assert left["metadata"]["annotations"][CHANGED_ANNOTATION] == _utc(landing)
    assert not plan(backend.observe(), desired).changes


@pytest.mark.parametrize("kind", ["cilium", "flannel"])
def test_an_apply_interrupted_moving_the_stamp_takes_the_landed_write_back(
        api_server: EmulatedApiServer, clock: type[_Clock], kind: str) -> None:
    # Ctrl-C (or SIGTERM's SystemExit) while the stamp's move was on its way: flannel
    # left its write, answered, under the stamp before its landing (a pod made in
    # between counted as restarted); cilium's undo took it back. Both do now.
    name, landed, api_client = _slow_write(api_server, clock, kind)
    request = api_client.rest_client.request
    cut: list[str] = []

    def interrupt_the_second(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if method == "PATCH" and landed and not cut:
            cut.append(url)
            raise KeyboardInterrupt
        return request(method, url, *args, **kwargs)

    api_client.rest_client.request = interrupt_the_second
    backend, desired, (namespace, _) = _cni(api_server, api_client, kind)
    found = api_server.get(CONFIGMAPS, name, namespace)
    assert found is not None
    with pytest.raises(KeyboardInterrupt):
        converge(backend, desired)
    assert cut
    left = api_server.get(CONFIGMAPS, name, namespace)
    assert left is not None
    assert left["data"] == found["data"]
    assert (left["metadata"].get("annotations") or {}) == (
        found["metadata"].get("annotations") or {})


@pytest.mark.parametrize("kind", ["cilium", "flannel"])
def test_a_write_answered_without_a_date_moves_the_stamp_to_k3snet_s_time_after_the_answer(
        api_server: EmulatedApiServer, clock: type[_Clock], kind: str) -> None:
    # A proxy stripping the Date header from PATCH answers: the write landing 10 s after
    # its stamp kept the stamp (taken before it was sent), and a pod made in between,
    # which may have read the config from before the write, counted as restarted. The
    # server's time once the answer is read (the clock as the reads' Date headers set
    # it) is after the landing: the stamp is moved to it.
    name, landed, api_client = _slow_write(api_server, clock, kind)
    request = api_client.rest_client.request

    def no_date_on_patches(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        answer = request(method, url, *args, **kwargs)
        if method == "PATCH":
            del answer.response.headers["Date"]
        return answer

    api_client.rest_client.request = no_date_on_patches
    backend, desired, (namespace, _) = _cni(api_server, api_client, kind)
    owner, labels = ("cilium", CILIUM_LABELS) if kind == "cilium" else (
        "kube-flannel-ds", FLANNEL_LABELS)
    sent = clock.at
    api_server.put(PODS, daemonset_pod(namespace, "made-in-between", owner, labels,
                                       created=_utc(sent + datetime.timedelta(seconds=5))))
    api_server.put(PODS, daemonset_pod(namespace, "made-after", owner, labels,
                                       created=_utc(sent + datetime.timedelta(seconds=12))))
    done = converge(backend, desired)
    [landing] = landed
    stored = api_server.get(CONFIGMAPS, name, namespace)
    assert stored is not None
    stamp = stored["metadata"]["annotations"][CHANGED_ANNOTATION]
    assert _utc(landing) <= stamp <= _utc(landing + datetime.timedelta(seconds=1))
    assert [r.stale for r in done.restarts] == [("made-in-between",)]
    assert [r.stale for r in pending_restarts(_backend(api_client, kind))] == [
        ("made-in-between",)]


@pytest.mark.parametrize("kind", ["cilium", "flannel"])
def test_a_stamp_rewritten_by_a_later_writer_before_the_move_is_the_one_the_apply_reports(
        api_server: EmulatedApiServer, clock: type[_Clock], kind: str) -> None:
    # The write landed 10 s after its stamp, and another writer (another k3snet's
    # process) stamped the ConfigMap again before the move: the move is not made (the
    # later stamp is the later write's), and cilium's apply reported the restarts by
    # the stamp it had sent, before its own landing: a pod made in between counted as
    # restarted in the apply's own answer. It reports by the stamp the ConfigMap holds.
    name, landed, api_client = _slow_write(api_server, clock, kind)
    request = api_client.rest_client.request
    later: list[str] = []

    def stamped_again(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        first = method == "PATCH" and not landed
        answer = request(method, url, *args, **kwargs)
        if first and landed:
            stored = api_server.get(CONFIGMAPS, name, namespace)
            assert stored is not None
            later.append(_utc(landed[0] + datetime.timedelta(seconds=2)))
            stored["metadata"]["annotations"][CHANGED_ANNOTATION] = later[0]
            api_server.put(CONFIGMAPS, stored)
        return answer

    api_client.rest_client.request = stamped_again
    backend, desired, (namespace, _) = _cni(api_server, api_client, kind)
    owner, labels = ("cilium", CILIUM_LABELS) if kind == "cilium" else (
        "kube-flannel-ds", FLANNEL_LABELS)
    sent = clock.at
    api_server.put(PODS, daemonset_pod(namespace, "made-in-between", owner, labels,
                                       created=_utc(sent + datetime.timedelta(seconds=5))))
    done = converge(backend, desired)
    stored = api_server.get(CONFIGMAPS, name, namespace)
    assert stored is not None
    assert stored["metadata"]["annotations"][CHANGED_ANNOTATION] == later[0]
    assert [r.stale for r in done.restarts] == [("made-in-between",)]


def test_an_undo_after_a_stamp_s_move_with_its_answer_lost_leaves_a_later_writer_s_edit(
        api_server: EmulatedApiServer, clock: type[_Clock]) -> None:
    # The move of the stamp landed, its answer lost (a 504), and Helm's upgrade removed
    # k3snet's key before k3snet read the ConfigMap back: the resourceVersion read was
    # Helm's, taken for the move's, and the undo (the ip-masq-agent ConfigMap's creation
    # refused) made on it wrote the key back over Helm's upgrade with no conflict, and put the stamp
    # from before the apply back over a config the agents started since may have read.
    # The undo is conditional on the version before the move: the 409 reads, and the key
    # changed since is refused, named, and left.
    name, landed, api_client = _slow_write(api_server, clock, "cilium")
    request = api_client.rest_client.request
    moves: list[str] = []

    def helm_after_the_move(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        first, moving = method == "PATCH" and not landed, method == "PATCH" and not moves
        try:
            return request(method, url, *args, **kwargs)
        finally:
            if first and landed:  # the move's answer is lost, the move made
                api_server.fail(504, method="PATCH", plural="configmaps", name=name,
                                served=True)
            elif moving and landed:
                moves.append(url)
                stored = api_server.get(CONFIGMAPS, name, "kube-system")
                assert stored is not None
                # Helm's upgrade: the ConfigMap from its values, without k3snet's key.
                del stored["data"]["enable-ipv4-masquerade"]
                api_server.put(CONFIGMAPS, stored)

    api_client.rest_client.request = helm_after_the_move
    cilium, _, _ = _cni(api_server, api_client, "cilium")
    api_server.fail(500, method="POST", plural="configmaps")
    desired = State(owned=[CiliumConfig(
        CILIUM_DEFAULT_TARGET, settings={"enable-ipv4-masquerade": "false"},
        ip_masq_agent={"nonMasqueradeCIDRs": ["10.0.0.0/8"]})])
    with pytest.raises(RollbackError) as info:
        converge(cilium, desired)
    assert moves
    assert "changed by someone else since" in str(info.value)
    left = api_server.get(CONFIGMAPS, name, "kube-system")
    assert left is not None
    assert "enable-ipv4-masquerade" not in left["data"]


@pytest.mark.parametrize("kind", ["cilium", "flannel"])
def test_a_pod_made_between_a_write_and_its_undo_is_pending_after_the_undo(
        api_server: EmulatedApiServer, clock: type[_Clock], kind: str) -> None:
    # The write landed (10 s after its stamp) and was taken back (the stamp's move
    # refused): the undo put the stamp from before the apply back (here none), and a pod
    # made between the write and its undo, which may have read the written config, no
    # longer in force, counted as restarted: nothing said pending. The undo is stamped
    # where such a pod is found.
    name, namespace, landed, backend, desired = _second_patch_failing(
        api_server, clock, kind, 403, message="denied by a webhook")
    owner, labels = ("cilium", CILIUM_LABELS) if kind == "cilium" else (
        "kube-flannel-ds", FLANNEL_LABELS)
    api_server.put(PODS, daemonset_pod(namespace, "made-before", owner, labels,
                                       created=LONG_AGO, started=LONG_AGO))
    written = _utc(clock.at + datetime.timedelta(seconds=10))  # the write's landing
    api_server.put(PODS, daemonset_pod(namespace, "made-in-between", owner, labels,
                                       created=written))
    found = api_server.get(CONFIGMAPS, name, namespace)
    assert found is not None
    with pytest.raises(ApplyError) as info:
        converge(backend, desired)
    assert landed
    assert not isinstance(info.value, RollbackError), info.value
    left = api_server.get(CONFIGMAPS, name, namespace)
    assert left is not None
    assert left["data"] == found["data"]
    assert left["metadata"]["annotations"][CHANGED_ANNOTATION] > written
    pending = pending_restarts(_backend(api_server.api_client(), kind))
    assert [r.stale for r in pending] == [("made-before", "made-in-between")]


def test_an_undo_whose_daemonsets_cannot_be_listed_is_stamped(
        api_server: EmulatedApiServer, cilium: CiliumBackend) -> None:
    # Whether a pod was made between the write and its undo cannot be told (403): the
    # stamp from before the apply is not put back as if none was, the undo is stamped.
    api_server.fail(500, method="POST", plural="configmaps")
    api_server.fail(403, method="GET", plural="daemonsets", times=None)
    desired = State(owned=[CiliumConfig(
        CILIUM_DEFAULT_TARGET, settings={"enable-ipv4-masquerade": "false"},
        ip_masq_agent={"nonMasqueradeCIDRs": ["10.0.0.0/8"]})])
    with pytest.raises(ApplyError) as info:
        converge(cilium, desired)
    assert not isinstance(info.value, RollbackError), info.value
    left = api_server.get(CONFIGMAPS, "cilium-config", "kube-system")
    assert left is not None
    assert left["data"]["enable-ipv4-masquerade"] == "true"
    assert CHANGED_ANNOTATION in left["metadata"]["annotations"]


def _answered_late(api_client: Any, clock: type[_Clock], name: str, late: float,
                   landed: list[datetime.datetime]) -> Any:
    """``api_client`` whose first PATCH of ConfigMap ``name`` lands at once (``landed``:
    when) and is answered ``late`` seconds after (a server slow to answer: ``clock``
    moves on), every answer's ``Date`` the server's time as it is written."""
    request = api_client.rest_client.request

    def late_answer(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        first = (method == "PATCH" and not landed
                 and url.split("?", maxsplit=1)[0].endswith(f"/{name}"))
        if first:
            landed.append(clock.at)
        answer = request(method, url, *args, **kwargs)
        if first:
            clock.at += datetime.timedelta(seconds=late)
        answer.response.headers["Date"] = email.utils.format_datetime(clock.at, usegmt=True)
        return answer

    api_client.rest_client.request = late_answer
    return api_client


@pytest.mark.parametrize(("kind", "refused"), [("cilium", "move"), ("flannel", "move"),
                                               ("cilium", "second write")])
def test_a_pod_made_in_the_write_s_second_before_its_stamp_s_is_pending_after_the_undo(
        api_server: EmulatedApiServer, clock: type[_Clock], kind: str, refused: str) -> None:
    # The stamp is the server's time at its latest (a second late, and more), and a
    # moved one the answer's Date, written after the landing: a pod made just after the
    # write landed, in a second before the stamp's, was taken for one made before the
    # write; the undo put the stamp from before the apply back (here none) and that pod,
    # which may have read the config undone, counted as restarted. The undo compares
    # with the earliest the write can have landed: the server's time at its earliest,
    # taken before the write was sent.
    name = "cilium-config" if kind == "cilium" else "kube-flannel-cfg"
    landed: list[datetime.datetime] = []
    api_client = _answered_late(api_server.api_client(), clock, name, 1.5, landed)
    request = api_client.rest_client.request

    def refuse_the_move(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        first = method == "PATCH" and not landed
        answer = request(method, url, *args, **kwargs)
        if first and landed:
            api_server.fail(403, method="PATCH", plural="configmaps", name=name,
                            message="denied by a webhook")
        return answer

    if refused == "move":
        api_client.rest_client.request = refuse_the_move
    backend, desired, (namespace, _) = _cni(api_server, api_client, kind)
    if refused == "second write":  # the ip-masq-agent ConfigMap's creation
        api_server.fail(500, method="POST", plural="configmaps")
        desired = State(owned=[CiliumConfig(
            CILIUM_DEFAULT_TARGET, settings={"enable-ipv4-masquerade": "false"},
            ip_masq_agent={"nonMasqueradeCIDRs": ["10.0.0.0/8"]})])
    owner, labels = ("cilium", CILIUM_LABELS) if kind == "cilium" else (
        "kube-flannel-ds", FLANNEL_LABELS)
    # Made just after the write landed (12:00:00.5), in its second.
    api_server.put(PODS, daemonset_pod(namespace, "made-after-the-write", owner, labels,
                                       created=_utc(clock.at)))
    found = api_server.get(CONFIGMAPS, name, namespace)
    assert found is not None
    with pytest.raises(ApplyError) as info:
        converge(backend, desired)
    assert landed
    assert not isinstance(info.value, RollbackError), info.value
    left = api_server.get(CONFIGMAPS, name, namespace)
    assert left is not None
    assert left["data"] == found["data"]
    assert CHANGED_ANNOTATION in (left["metadata"].get("annotations") or {})
    pending = pending_restarts(_backend(api_server.api_client(), kind))
    assert [r.stale for r in pending] == [("made-after-the-write",)]


@pytest.mark.parametrize("kind", ["cilium", "flannel"])
def test_answers_without_any_date_say_once_that_the_stamp_is_k3snet_s_own_clock(
        api_server: EmulatedApiServer, clock: type[_Clock], caplog: pytest.LogCaptureFixture,
        kind: str) -> None:
    # A proxy dropping every answer's Date: no gap to the server's clock is known, the
    # stamp is k3snet's clock; 30 s behind the server's, a pod made 10 s before the
    # write counts as restarted (the config said in force on a node running the old
    # one), and nothing said so. It is said, once.
    api_client = api_server.api_client()
    request = api_client.rest_client.request

    def no_date(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        answer = request(method, url, *args, **kwargs)
        answer.response.headers.pop("Date", None)
        return answer

    api_client.rest_client.request = no_date
    backend, desired, (namespace, _) = _cni(api_server, api_client, kind)
    owner, labels = ("cilium", CILIUM_LABELS) if kind == "cilium" else (
        "kube-flannel-ds", FLANNEL_LABELS)
    server = clock.at + datetime.timedelta(seconds=30)
    api_server.put(PODS, daemonset_pod(namespace, "made-before", owner, labels,
                                       created=_utc(server - datetime.timedelta(seconds=10))))
    with caplog.at_level("WARNING", logger="k3snet"):
        converge(backend, desired)
        pending_restarts(backend)
    said = [r.getMessage() for r in caplog.records if "usable Date header" in r.getMessage()]
    assert len(said) == 1, said
    assert "k3snet's own clock" in said[0]


GPU_LABELS = {"k8s-app": "cilium-gpu"}


def _gpu_agents(api_server: EmulatedApiServer) -> None:
    """A second agent DaemonSet, kube-system/cilium-gpu (a copy for a node pool: its
    pod template runs a cilium-agent and names cilium-config in no volume)."""
    gpu = cilium_daemonset(ip_masq_agent=True, name="cilium-gpu")
    gpu["spec"]["selector"]["matchLabels"] = GPU_LABELS
    gpu["spec"]["template"]["metadata"]["labels"] = GPU_LABELS
    api_server.put(DAEMONSETS, gpu)


def test_a_pod_of_a_second_agent_daemonset_made_between_a_write_and_its_undo_is_pending(
        api_server: EmulatedApiServer, clock: type[_Clock]) -> None:
    # The undo looked for a pod made since the write among the named DaemonSet's pods
    # alone: cilium-gpu's agent, which may have read the written config, counted as
    # restarted, the stamp from before the apply put back (none), nothing said pending;
    # and a backend that observed nothing since (a plan file's) followed cilium alone.
    name, namespace, landed, backend, desired = _second_patch_failing(
        api_server, clock, "cilium", 403, message="denied by a webhook")
    _gpu_agents(api_server)
    api_server.put(PODS, _cilium_pod("cilium-a", created=LONG_AGO, started=LONG_AGO))
    written = _utc(clock.at + datetime.timedelta(seconds=10))  # the write's landing
    api_server.put(PODS, daemonset_pod(namespace, "cilium-gpu-x", "cilium-gpu", GPU_LABELS,
                                       created=written))
    with pytest.raises(ApplyError) as info:
        converge(backend, desired)
    assert landed
    assert not isinstance(info.value, RollbackError), info.value
    left = api_server.get(CONFIGMAPS, name, namespace)
    assert left is not None
    assert left["metadata"]["annotations"][CHANGED_ANNOTATION] > written
    pending = pending_restarts(_backend(api_server.api_client(), "cilium"))
    assert [(r.workload, r.stale) for r in pending] == [
        ("DaemonSet kube-system/cilium", ("cilium-a",)),
        ("DaemonSet kube-system/cilium-gpu", ("cilium-gpu-x",))]


def test_a_second_agent_daemonset_reading_its_own_configmap_alone_awaits_no_restart(
        api_server: EmulatedApiServer, cilium: CiliumBackend) -> None:
    # cilium-gpu's config init container builds its agents' config directory from
    # cilium-config-gpu alone: a change of cilium-config is none of theirs, yet its pods
    # were named pending until restarted (and the restart named cilium-gpu too).
    gpu = cilium_daemonset(ip_masq_agent=False, name="cilium-gpu")
    gpu["spec"]["selector"]["matchLabels"] = GPU_LABELS
    gpu["spec"]["template"]["metadata"]["labels"] = GPU_LABELS
    gpu["spec"]["template"]["spec"]["initContainers"][0].update(
        command=["cilium-dbg", "build-config"], args=["--source=config-map:cilium-config-gpu"])
    api_server.put(DAEMONSETS, gpu)
    api_server.put(PODS, daemonset_pod("kube-system", "cilium-gpu-x", "cilium-gpu", GPU_LABELS,
                                       created=LONG_AGO, started=LONG_AGO))
    desired = _masquerade("false")
    assert restarts_needed(cilium, plan(cilium.observe(), desired)) == (
        "DaemonSet kube-system/cilium",)
    done = converge(cilium, desired)
    assert [(r.workload, r.stale) for r in done.restarts] == [
        ("DaemonSet kube-system/cilium", ("cilium-a", "cilium-b"))]
    assert [r.workload for r in pending_restarts(_backend(api_server.api_client(), "cilium"))
            ] == ["DaemonSet kube-system/cilium"]
    # Reading cilium-config too (after its own ConfigMap): its pods await the restart.
    gpu["spec"]["template"]["spec"]["initContainers"][0]["args"] = [
        "--source=config-map:cilium-config-gpu,config-map:cilium-config"]
    api_server.put(DAEMONSETS, gpu)
    assert [(r.workload, r.stale) for r in converge(cilium, desired).restarts] == [
        ("DaemonSet kube-system/cilium", ("cilium-a", "cilium-b")),
        ("DaemonSet kube-system/cilium-gpu", ("cilium-gpu-x",))]
