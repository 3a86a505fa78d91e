"""A second writer (another k3snet, a Helm upgrade, ``kubectl edit``) racing k3snet's
stamped write of a CNI ConfigMap, its stamp's move and its undo.

Against the emulated API server with the real ``kubernetes`` client: the stamped write
lands 10 s late (its stamp moved to the landing by a second patch), that patch is
refused, and another writer acts between k3snet's steps.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import re
import shlex
from collections.abc import Callable
from typing import Any

import pytest

from k3snet.backends.cilium import CiliumBackend
from k3snet.backends.cni_restart import CHANGED_ANNOTATION
from k3snet.backends.flannel import FlannelBackend
from k3snet.converge import converge, pending_restarts
from k3snet.errors import ApplyError, RollbackError
from k3snet.model.state import State
from k3snet.testing.kube import EmulatedApiServer
from tests.cluster.test_cni_restart import (
    _backend,
    _Clock,
    _cni,
    _utc,
    api_server,
    clock,
)
from tests.cluster.workloads import CONFIGMAPS, DAEMONSETS

pytestmark = pytest.mark.cluster

__all__ = ["api_server", "clock"]  # the fixtures, from test_cni_restart

_Later = Callable[[dict[str, Any]], None]
_ABSENT = object()


def _racing(api_server: EmulatedApiServer, clock: type[_Clock], kind: str, later: _Later,
            *, at: int) -> tuple[str, str, list[datetime.datetime],
                                  CiliumBackend | FlannelBackend, State]:
    """The CNI ``kind``'s backend whose ConfigMap write lands 10 s late, the next PATCH of
    it (the stamp's move) refused (403, a webhook), and ``later`` (another writer) given
    the stored ConfigMap to change before k3snet's PATCH number ``at`` of it is sent (1:
    the write, 2: the stamp's move, 3: the undo); the ConfigMap's name and namespace,
    the landings, the backend and the desired state."""
    name = "cilium-config" if kind == "cilium" else "kube-flannel-cfg"
    namespace = "kube-system" if kind == "cilium" else "kube-flannel"
    landed: list[datetime.datetime] = []
    api_client = api_server.api_client()
    request = api_client.rest_client.request
    sent: list[str] = []

    def racing(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        mine = url.split("?", maxsplit=1)[0].endswith(f"/{name}")
        if mine and method == "PATCH":
            sent.append(method)
            if len(sent) == at:
                stored = api_server.get(CONFIGMAPS, name, namespace)
                assert stored is not None
                later(stored)
                api_server.put(CONFIGMAPS, stored)
        first = mine and method == "PATCH" and not landed
        if first:
            clock.at += datetime.timedelta(seconds=10)
            landed.append(clock.at)
        answer = request(method, url, *args, **kwargs)
        answer.response.headers["Date"] = email.utils.format_datetime(clock.at, usegmt=True)
        if first:
            api_server.fail(403, method="PATCH", plural="configmaps", name=name,
                            message="denied by a webhook")
        return answer

    api_client.rest_client.request = racing
    backend, desired, _ = _cni(api_server, api_client, kind)
    return name, namespace, landed, backend, desired


def _another_k3snet(stamp: str) -> _Later:
    """Another k3snet's apply (another node's agent): the config and a later stamp."""
    def write(stored: dict[str, Any]) -> None:
        data = stored["data"]
        if "net-conf.json" in data:
            data["net-conf.json"] = data["net-conf.json"].replace("vxlan", "host-gw")
        else:
            data["enable-ipv4-masquerade"] = "true"
        stored["metadata"].setdefault("annotations", {})[CHANGED_ANNOTATION] = stamp
    return write


def _kubectl(api_server: EmulatedApiServer, command: str) -> bool:
    """Run ``command``, a ``kubectl annotate`` or ``kubectl patch --type=json`` of a
    ConfigMap as k3snet's messages give them, on ``api_server`` as kubectl and the API
    server do; whether it changed the ConfigMap (refused: False)."""
    words = shlex.split(command)
    assert words[:2] == ["kubectl", "-n"], command
    namespace, verb = words[2], words[3]
    kind, name = [w for w in words[4:6] + words[6:7] if not w.startswith("--")][:2]
    assert kind == "configmap", command
    stored = api_server.get(CONFIGMAPS, name, namespace)
    assert stored is not None
    annotations = stored["metadata"].setdefault("annotations", {})
    if verb == "annotate" and words[-1].endswith("-") and "=" not in words[-1]:
        annotations.pop(words[-1][:-1], None)  # KEY-: removed, whatever it holds
    elif verb == "annotate":
        key, _, value = words[-1].partition("=")
        if key in annotations and "--overwrite" not in words:
            return False  # kubectl: --overwrite is false but found ... already has a value
        annotations[key] = value
    else:
        assert verb == "patch", command
        assert "--type=json" in words, command
        # A JSON patch of one annotation (RFC 6901's ~1 for "/"), each op as the API
        # server applies it: a failed "test" refuses the whole patch (422).
        for op in json.loads(words[words.index("-p") + 1]):
            prefix, _, key = op["path"].rpartition("/")
            assert prefix == "/metadata/annotations", command
            key = key.replace("~1", "/").replace("~0", "~")
            if op["op"] == "test":
                if annotations.get(key, _ABSENT) != op["value"]:
                    return False
            elif op["op"] == "remove":
                del annotations[key]
            else:
                assert op["op"] == "replace", command
                assert key in annotations, command
                annotations[key] = op["value"]
    api_server.put(CONFIGMAPS, stored)
    return True


@pytest.mark.parametrize("kind", ["cilium", "flannel"])
def test_the_advice_moving_a_stamp_by_hand_never_sets_a_later_writer_s_stamp_earlier(
        api_server: EmulatedApiServer, clock: type[_Clock], kind: str) -> None:
    # The write landed 10 s after its stamp, the stamp's move was refused, and another
    # k3snet wrote the ConfigMap (its config and a later stamp) before the undo: the
    # undo is refused (ROLLBACK FAILED), its message naming the command that moves the
    # stamp where the write is left. That was `kubectl annotate --overwrite ...=LANDING`:
    # run after the later writer, it set the later stamp back to k3snet's landing, and a
    # pod made in between counted as restarted. It sets the stamp only where it is still
    # the one k3snet's write left.
    later = _utc(_Clock.at + datetime.timedelta(seconds=20))
    name, namespace, landed, backend, desired = _racing(
        api_server, clock, kind, _another_k3snet(later), at=3)
    with pytest.raises(RollbackError) as info:
        converge(backend, desired)
    [landing] = landed
    found = re.search(r"where the write is left: (kubectl [^)]*)\)", str(info.value))
    assert found, info.value
    assert _utc(landing) in found.group(1)
    assert not _kubectl(api_server, found.group(1))
    stored = api_server.get(CONFIGMAPS, name, namespace)
    assert stored is not None
    assert stored["metadata"]["annotations"][CHANGED_ANNOTATION] == later


@pytest.mark.parametrize("kind", ["cilium", "flannel"])
def test_the_advice_moves_the_stamp_k3snet_s_write_left_to_its_landing(
        api_server: EmulatedApiServer, clock: type[_Clock], kind: str) -> None:
    # The same with no later writer, the undo refused (a 500): the command moves the
    # stamp k3snet's write left to its landing.
    def undo_failing(stored: dict[str, Any]) -> None:
        api_server.fail(500, method="PATCH", plural="configmaps",
                        name=stored["metadata"]["name"], times=None)

    name, namespace, landed, backend, desired = _racing(
        api_server, clock, kind, undo_failing, at=3)
    with pytest.raises(RollbackError) as info:
        converge(backend, desired)
    [landing] = landed
    found = re.search(r"where the write is left: (kubectl [^)]*)\)", str(info.value))
    assert found, info.value
    assert _kubectl(api_server, found.group(1))
    stored = api_server.get(CONFIGMAPS, name, namespace)
    assert stored is not None
    assert stored["metadata"]["annotations"][CHANGED_ANNOTATION] == _utc(landing)


@pytest.mark.parametrize("kind", ["cilium", "flannel"])
def test_a_later_writer_s_stamp_found_after_the_move_refused_is_left_and_the_write_too(
        api_server: EmulatedApiServer, clock: type[_Clock], kind: str) -> None:
    # Another k3snet wrote the ConfigMap, its config and a later stamp, between k3snet's
    # write and the stamp's move (refused: a 403): the stamp found is that later
    # write's, after the landing, as after a 409. It was taken for k3snet's own unmoved
    # stamp: the write taken back, over the later writer (a conflict, ROLLBACK FAILED).
    later = _utc(_Clock.at + datetime.timedelta(seconds=20))
    name, namespace, _, backend, desired = _racing(
        api_server, clock, kind, _another_k3snet(later), at=2)
    converge(backend, desired)
    stored = api_server.get(CONFIGMAPS, name, namespace)
    assert stored is not None
    assert stored["metadata"]["annotations"][CHANGED_ANNOTATION] == later


def test_flannel_s_undo_keeps_another_key_changed_since_and_takes_its_write_back(
        api_server: EmulatedApiServer, clock: type[_Clock]) -> None:
    # A key of the ConfigMap other than net-conf.json changed (cni-conf.json, by a Helm
    # upgrade) between k3snet's write and its undo: the undo, conditional on the
    # write's resourceVersion, met a 409 and failed (ROLLBACK FAILED, the ConfigMap
    # said maybe half-changed). It reads, compares, and is sent again, as cilium's.
    def helm(stored: dict[str, Any]) -> None:
        stored["data"]["cni-conf.json"] = '{"name": "cbr0"}'

    name, namespace, _, backend, desired = _racing(api_server, clock, "flannel", helm, at=3)
    found = api_server.get(CONFIGMAPS, name, namespace)
    assert found is not None
    with pytest.raises(ApplyError) as info:
        converge(backend, desired)
    assert not isinstance(info.value, RollbackError), info.value
    assert info.value.rolled_back, info.value
    left = api_server.get(CONFIGMAPS, name, namespace)
    assert left is not None
    assert left["data"] == {**found["data"], "cni-conf.json": '{"name": "cbr0"}'}
    assert (left["metadata"].get("annotations") or {}) == (
        found["metadata"].get("annotations") or {})


def test_flannel_s_undo_leaves_net_conf_changed_since_and_names_it(
        api_server: EmulatedApiServer, clock: type[_Clock]) -> None:
    # net-conf.json itself changed since k3snet's write (`kubectl edit`): its text is
    # not overwritten, and the undo's failure names what changed.
    def kubectl_edit(stored: dict[str, Any]) -> None:
        stored["data"]["net-conf.json"] = stored["data"]["net-conf.json"].replace(
            "vxlan", "wireguard")

    name, namespace, _, backend, desired = _racing(
        api_server, clock, "flannel", kubectl_edit, at=3)
    with pytest.raises(RollbackError) as info:
        converge(backend, desired)
    assert "changed by someone else since: net-conf.json" in str(info.value)
    left = api_server.get(CONFIGMAPS, name, namespace)
    assert left is not None
    assert "wireguard" in left["data"]["net-conf.json"]


@pytest.mark.parametrize("kind", ["cilium", "flannel"])
@pytest.mark.parametrize("cause", ["no DaemonSet", "a clock gone back"])
def test_the_advice_removing_a_stamp_by_hand_never_removes_a_later_writer_s_stamp(
        api_server: EmulatedApiServer, kind: str, cause: str) -> None:
    # A restart pending k3snet cannot follow (no DaemonSet found reading the ConfigMap,
    # or a stamp after the API server's time) says to remove the stamp once each pod
    # restarted: `kubectl annotate configmap NAME k3snet.io/changed-at-`. Run by hand
    # after a later write (the agent's next apply, another k3snet's), it removed that
    # write's stamp, and the restart it awaits was said of no pod. It removes the stamp
    # only where it is still the one the pending restart was said of.
    api_client = api_server.api_client()
    backend, desired, (namespace, name) = _cni(api_server, api_client, kind)
    converge(backend, desired)
    stored = api_server.get(CONFIGMAPS, name, namespace)
    assert stored is not None
    if cause == "no DaemonSet":
        daemonset = "cilium" if kind == "cilium" else "kube-flannel-ds"
        api_server.delete(DAEMONSETS, daemonset, namespace)
    else:
        stored["metadata"]["annotations"][CHANGED_ANNOTATION] = "2031-01-01T00:00:00Z"
        api_server.put(CONFIGMAPS, stored)
    [pending] = pending_restarts(_backend(api_client, kind))
    found = re.search(r"restarted: (kubectl [^)]*)\)", pending.reason)
    assert found, pending.reason
    later = "2032-01-01T00:00:00Z"
    _another_k3snet(later)(stored)
    api_server.put(CONFIGMAPS, stored)
    assert not _kubectl(api_server, found.group(1))
    left = api_server.get(CONFIGMAPS, name, namespace)
    assert left is not None
    assert left["metadata"]["annotations"][CHANGED_ANNOTATION] == later


@pytest.mark.parametrize("kind", ["cilium", "flannel"])
def test_the_advice_removes_the_stamp_a_pending_restart_was_said_of(
        api_server: EmulatedApiServer, kind: str) -> None:
    # No later writer: the command removes the stamp, and nothing is pending after it.
    api_client = api_server.api_client()
    backend, desired, (namespace, name) = _cni(api_server, api_client, kind)
    converge(backend, desired)
    api_server.delete(DAEMONSETS, "cilium" if kind == "cilium" else "kube-flannel-ds",
                      namespace)
    [pending] = pending_restarts(_backend(api_client, kind))
    found = re.search(r"restarted: (kubectl [^)]*)\)", pending.reason)
    assert found, pending.reason
    assert _kubectl(api_server, found.group(1))
    left = api_server.get(CONFIGMAPS, name, namespace)
    assert left is not None
    assert CHANGED_ANNOTATION not in (left["metadata"].get("annotations") or {})
    assert pending_restarts(_backend(api_client, kind)) == ()
