"""Where the agent reads its spec each pass: a file (the mounted ConfigMap) or a ConfigMap."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from k3snet.backends.kit import translate_errors
from k3snet.errors import Problem, SpecError
from k3snet.kube import DEFAULT_TIMEOUT, KubeApiError, KubeErrors
from k3snet.spec.load import refuse_foreign_spec, sudo_invoker
from k3snet.spec.source import read_text

__all__ = ["ConfigMapSpecSource", "FileSpecSource", "SpecSource"]

_REFUSING_STATUSES = frozenset({401, 403, 404})
"""Answers of the API server to the spec's read that stay so until someone acts (the
ConfigMap or its namespace deleted, the agent's RBAC or credentials): the spec is
refused as ``unreadable``. Any other failure (no answer, 5xx, 429, 410, ...) is a read
that failed this time: the spec in force stays, not refused, read again next interval."""

_DENIED_STATUSES = frozenset({401, 403})

DENIED_GRACE = 300.0
"""Seconds a 401 or 403 to the spec's read is a read that failed this time rather than a
refusal (counted from the first of them in a row), the agent's first read too.

An API server that has just restarted answers 403 while its RBAC authorizer's caches
fill (kubernetes/kubernetes#121635: minutes, with many RoleBindings; #47525), and its
token authenticator may answer 401 the same way: every node refused the spec at once,
``spec-refused`` with an Event, for a spec and a permission nobody had changed. A real
removal of the agent's permission is refused this much later; either way the spec in
force stays and the node's rules are the same, so only the alert waits.

A new agent (every node's, after a whole-cluster restart) meets the same caches at its
first read: refused at once, each counted a rejected spec. Now that read fails its pass
as any failed read before a spec is in force: at once, with the API server's answer
(``forbidden (403): k3snet's account lacks the RBAC permission ...``), the Node's status
``failed`` and the pod not ready (no pass converged the node), so a Role never granted is
said from the first pass; only the refusal (``unreadable``, counted in
``k3snet_agent_spec_rejected_total``) waits."""


class SpecSource(Protocol):
    """Protocol: the spec's text as it is now.

    ``read`` raises :class:`~k3snet.errors.SpecError` when the source holds no usable
    spec (a file gone, a ConfigMap deleted or without the key: the agent refuses it as
    ``unreadable``), and another :class:`~k3snet.errors.K3snetError` when it could not
    be read this time (an API server restarting, overloaded, unreachable: the agent
    keeps the spec in force, refuses nothing and reads again)."""

    @property
    def where(self) -> str:
        """Where the spec comes from, for messages."""
        ...

    def read(self) -> str:
        """The spec's current text."""
        ...


class FileSpecSource:
    """A spec file, read again every pass (the kubelet updates a mounted ConfigMap in place)."""

    remote = False
    """A read costs nothing but a file's: every pass reads it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def where(self) -> str:
        """The file's path."""
        return str(self.path)

    def read(self) -> str:
        """The file's text (a regular UTF-8 file of bounded size, as every spec file), or a
        :class:`SpecError` when another user could have changed it or a file it imports
        (:func:`~k3snet.spec.load.refuse_foreign_spec`): judged at every read, as the file,
        its directory or the import may have changed since the agent started."""
        text = refuse_foreign_spec(self.path, invoker=sudo_invoker())
        return read_text(self.path) if text is None else text


_VERSION_NOT_SERVED = frozenset({400, 410, 504})
"""Answers to a read asking for the ConfigMap not older than a version that a quorum read
(no version) does not get for that reason: read again at once without it."""


class ConfigMapSpecSource:
    """One key of a ConfigMap, read through the API (one GET) by every pass the interval
    starts, not by those a change on the node starts (see :attr:`remote`).

    The first read, and one after the API server could not serve the version last read,
    is a quorum read (etcd's); every other asks for the ConfigMap not older than the
    ``resourceVersion`` last read, which the API server serves from its watch cache: at
    5 000 nodes, 167 reads a second etcd no longer serves. Such a read misses a change
    the cache has not received yet (it follows etcd within milliseconds), as a quorum
    read a moment earlier would, and is never older than what this source read before:
    the spec never goes back to one it read earlier, as a read of a cache behind
    (``resourceVersion=0``, any version) could."""

    remote = True
    """A read is an API request: a pass a change on the node started reads no spec
    (unless the last read is an interval old), the spec in force stays."""

    def __init__(self, api_client: Any, namespace: str, name: str, key: str = "spec.yaml",
                 timeout: float = DEFAULT_TIMEOUT, *, denied_grace: float = DENIED_GRACE,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        # The generated client's read names no resourceVersion; the dynamic client's does,
        # and its request() hides ApiClient.call_api, whose arguments changed in 37.
        from kubernetes import dynamic  # noqa: PLC0415 - optional dependency (k3snet[kube])

        dynamic_client: Any = dynamic.DynamicClient  # (untyped)
        self._api: Any = dynamic_client(api_client, discoverer=_NoDiscovery)
        self.namespace, self.name, self.key, self.timeout = namespace, name, key, timeout
        # The resourceVersion of the last read (None: the next read is a quorum read).
        self._version: str | None = None
        self.denied_grace = denied_grace
        self._monotonic = monotonic
        self._denied_since: float | None = None

    @property
    def where(self) -> str:
        """``ConfigMap NS/NAME key KEY``."""
        return f"ConfigMap {self.namespace}/{self.name} key {self.key}"

    def read(self) -> str:
        """The key's text; SpecError when the ConfigMap or the key is missing, or the
        agent may not read it (401, 403, 404: what stays so until someone acts; a 401 or
        403 only once it lasted ``denied_grace`` seconds: ``DENIED_GRACE``); a
        :class:`~k3snet.kube.KubeApiError` when the read failed this time (no answer,
        5xx, 429, 410, ...: a control plane restarting says nothing of the spec)."""
        try:
            configmap = self._get()
        except KubeApiError as exc:
            if exc.status in _REFUSING_STATUSES and not self._denied_for_now(exc):
                message = str(exc)
                if self._denied_since is not None:
                    message += f" (so at every read for {self.denied_grace:g} s)"
                raise SpecError([Problem("", message)], source=self.where) from exc
            if exc.status not in _DENIED_STATUSES:
                # Another answer ends the run of denials: an API server that fails again
                # (a crash loop) fills its caches again when it is back.
                self._denied_since = None
            raise
        self._denied_since = None
        data = configmap.get("data") if isinstance(configmap, dict) else None
        data = data if isinstance(data, dict) else {}
        if self.key not in data:
            raise SpecError([Problem("", f"{self.where}: no such key (keys: "
                                         f"{', '.join(sorted(data)) or 'none'})")],
                            source=self.where)
        return str(data[self.key])

    def _get(self) -> Any:
        """The ConfigMap as JSON data: not older than the last read when there was one
        (from the watch cache), else a quorum read; one whose version the cache did not
        reach in time (504, ``Timeout``: an API server just restarted, another behind the
        one last read) or that version refused (400, 410: a version that API server, or a
        proxy before it, does not take; asked again, every later read failed) is asked
        again at once as a quorum read."""
        if self._version is not None:
            try:
                return self._request(self._version)
            except KubeApiError as exc:
                if exc.status not in _VERSION_NOT_SERVED:
                    raise
                self._version = None
        return self._request(None)

    def _request(self, version: str | None) -> Any:
        path = f"/api/v1/namespaces/{self.namespace}/configmaps/{self.name}"
        with translate_errors(f"read {self.where}", classifier=KubeErrors(timeout=self.timeout)):
            answer = self._api.request("get", path, resource_version=version, serialize=False,
                                       _request_timeout=self.timeout)
        try:
            configmap = json.loads(answer.data)
        except (TypeError, ValueError) as exc:
            raise KubeApiError(f"read {self.where}: the answer is not JSON ({exc})") from exc
        metadata = configmap.get("metadata") if isinstance(configmap, dict) else None
        found = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
        self._version = found if isinstance(found, str) and found else None
        return configmap

    def _denied_for_now(self, exc: KubeApiError) -> bool:
        """Whether a 401 or 403 is a read that failed this time: the first of these answers
        in a row (no other answer, nor failure, between) is younger than
        :attr:`denied_grace`."""
        if exc.status not in _DENIED_STATUSES:
            return False
        now = self._monotonic()
        if self._denied_since is None:
            self._denied_since = now
        return now - self._denied_since < self.denied_grace


class _NoDiscovery:
    """The dynamic client's discoverer, never asked: only its ``request`` is used, and
    its discovery would read every API group of the server."""

    def __init__(self, client: Any, cache_file: Any) -> None:
        del client, cache_file
