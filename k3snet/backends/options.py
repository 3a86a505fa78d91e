"""The options a backend is built with, from every place that gives them.

A spec's (or a plan file's) ``backends:`` options come first, then the options the
command line and the agent's environment give implicitly (``netns``,
``allow_disruptive``, ``K3SNET_STATE_DIR`` ...; only to backends that declare them or
take ``**options``),
then explicit overrides (``--backend-opt``), checked when the backend is built. The
CLI, the agent and the Ansible module all resolve options here, so a backend gets the
same options whichever of them builds it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from k3snet._env import env_value
from k3snet.backends.registry import backend_options, takes_any_option
from k3snet.errors import BackendOptionError

__all__ = ["ENV_OPTIONS", "resolve_backend_options"]

def _absolute_path(variable: str) -> Callable[[str], Path]:
    """A parser of environment variable ``variable``'s path: absolute, else a
    :class:`~k3snet.errors.BackendOptionError`. Relative, it named another file from
    each working directory: the sysctl record a cron job wrote from ``$HOME`` was not
    the one an apply from ``/etc/k3snet`` read, which then took the sysctl it had taken
    over for a foreign one (never given back)."""
    def parse(text: str) -> Path:
        if not os.path.isabs(text):
            raise BackendOptionError(f"${variable} {text!r} is not an absolute path: every "
                                     "k3snet process must find the same file whatever its "
                                     "working directory")
        return Path(text)
    return parse


def _configmap_ref(text: str) -> tuple[str, str]:
    """:func:`k3snet.kube.configmap_ref`, imported by the one backend reading it (flannel's
    ``configmap``): a cold command of the node's backends imports no Kubernetes module."""
    from k3snet.kube import configmap_ref  # noqa: PLC0415 - see above
    return configmap_ref(text)


ENV_OPTIONS: tuple[tuple[str, str, str, Callable[[str], Any]], ...] = (
    ("netlink", "proc_sys", "K3SNET_PROC_SYS", _absolute_path("K3SNET_PROC_SYS")),
    ("netlink", "state_dir", "K3SNET_STATE_DIR", _absolute_path("K3SNET_STATE_DIR")),
    ("iptables", "state_dir", "K3SNET_STATE_DIR", _absolute_path("K3SNET_STATE_DIR")),
    ("flannel", "path", "K3SNET_FLANNEL_CONF", _absolute_path("K3SNET_FLANNEL_CONF")),
    ("flannel", "configmap", "K3SNET_FLANNEL_CONFIGMAP", _configmap_ref),
)
"""Backend options the agent's DaemonSet passes through its environment
(see :mod:`k3snet.render.manifests`): ``(backend, option, variable, parse)``."""


def resolve_backend_options(name: str, given: Mapping[str, Any] | None = None, *,
                            netns: str | None = None, allow_disruptive: bool = False,
                            pod_cidrs: Sequence[str] | None = None,
                            environ: Mapping[str, str] | None = None,
                            explicit: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Keyword options for backend ``name``.

    ``given``: the spec's options for it (:func:`k3snet.spec.spec_backend_options`), or a
    plan file's; overridden by ``netns``, ``allow_disruptive`` and the :data:`ENV_OPTIONS`
    found in ``environ`` (default: ``os.environ``) and ``pod_cidrs`` (the spec's
    ``cluster.podCIDRs``: the netlink backend judges IPv6 source-specific routes by them),
    which go only to a backend that
    declares them or takes ``**options``; then by ``explicit`` options, which the
    backend checks when built.
    """
    environ = os.environ if environ is None else environ
    implicit: dict[str, Any] = {}
    if netns is not None:
        implicit["netns"] = netns
    if allow_disruptive:
        implicit["allow_disruptive"] = True
    if pod_cidrs is not None:
        implicit["pod_cidrs"] = list(pod_cidrs)
    for backend, option, variable, parse in ENV_OPTIONS:
        value = env_value(variable, environ)
        if backend == name and value is not None:
            implicit[option] = parse(value)
    declared: set[str] = set(backend_options(name)) if implicit else set()
    if implicit and not declared and takes_any_option(name):
        # ``**options``: it takes every keyword, so it gets the namespace it was asked for.
        declared = set(implicit) - {"pod_cidrs"}  # a judgement of k3snet's own backend
    return {**(given or {}), **{k: v for k, v in implicit.items() if k in declared},
            **(explicit or {})}
