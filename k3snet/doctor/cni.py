"""CNI configuration read live through k3snet's CNI backends: Calico's IP pools.

Calico's iptables rules match ipsets (``cali40masq-ipam-pools`` ...) whose members
are its IP pools. A bundle may carry them as ``calico-ippools.json``; on a node
with a kube config the doctor reads them instead through k3snet's calico backend
(:meth:`~k3snet.backends.calico.CalicoBackend.pool_objects`: every pool, k3snet's own
too, read as Felix reads them into its sets, as the bundle's file is), so nobody has to
export them by hand. A pool the backend cannot model is named, never a reason to drop
the others, unless Felix may take it for another pool's CIDR (:func:`live_pools`).
"""

from __future__ import annotations

from typing import Any

import attrs

from k3snet.doctor.state import CalicoPool
from k3snet.errors import BackendUnavailableError, K3snetError

__all__ = ["LivePools", "calico_pools", "live_pools", "read_calico_pools"]


def calico_pools(backend: Any) -> tuple[CalicoPool, ...]:
    """The IP pools a calico backend lists, as Felix reads them into its sets
    (:func:`live_pools`); raises :class:`~k3snet.errors.K3snetError` where a pool makes
    Felix's sets unknown."""
    return live_pools(backend)[0]


def live_pools(backend: Any) -> tuple[tuple[CalicoPool, ...], tuple[str, ...]]:
    """The IP pools ``backend`` (a calico backend) lists
    (:meth:`~k3snet.backends.calico.CalicoBackend.pool_objects`), owned and foreign, read
    as Felix reads them into its sets, as a bundle's ``calico-ippools.json`` is
    (:func:`~k3snet.doctor.state.calico_pool_items`), by name; and a sentence naming
    each pool read otherwise than the backend reads it: one Felix drops (a CIDR Go's
    ``net.ParseCIDR`` refuses: left out, as Felix leaves it), or one the backend cannot
    model for another reason (a ``blockSize`` out of range, a field of the wrong type),
    whose CIDR and ``natOutgoing`` Felix still puts in its sets, judged so.

    One pool Felix may take for another CIDR (an IPv4-mapped IPv6 one, a twin of an IPv4
    pool whose ``natOutgoing`` may then decide) makes every set unknown: it raises
    :class:`~k3snet.errors.K3snetError` saying so, rather than judge without it.
    """
    from k3snet.doctor.state import calico_pool_items  # noqa: PLC0415

    items = [i for i in backend.pool_objects() if isinstance(i, dict)]
    pools, why, notes = calico_pool_items(items)
    if why is not None:
        raise K3snetError(why)
    return tuple(pools), tuple(notes)


@attrs.frozen
class LivePools:
    """What :func:`read_calico_pools` found: the ``pools`` (None when they could not be
    read) and ``why`` not (None when read, or when the cluster has no Calico); and
    ``unreadable``, a sentence for each pool read otherwise than the calico backend
    reads it (:func:`live_pools`)."""

    pools: tuple[CalicoPool, ...] | None
    why: str | None = None
    unreadable: tuple[str, ...] = ()


def read_calico_pools(*, kubeconfig: str | None = None, context: str | None = None,
                      api_client: Any = None, timeout: float | None = None) -> LivePools:
    """Calico's IP pools through a calico backend built from a kube config (or
    ``api_client``). A cluster without Calico (its API not served) has no pools;
    any other failure is returned in ``why``, never raised."""
    from k3snet.backends.registry import create_backend  # noqa: PLC0415 - kube deps are optional
    from k3snet.kube import KubeApiError  # noqa: PLC0415

    options: dict[str, Any] = {"kubeconfig": kubeconfig, "context": context,
                               "api_client": api_client}
    if timeout is not None:
        options["timeout"] = timeout
    try:
        backend = create_backend("calico", **options)
    except K3snetError as exc:
        return LivePools(None, f"no calico backend: {exc}")
    try:
        pools, unreadable = live_pools(backend)
        return LivePools(pools, unreadable=unreadable)
    except KubeApiError as exc:
        if exc.status == 404:
            return LivePools(())  # Calico is not installed: no pools, nothing missing
        return LivePools(None, f"the calico backend could not list the IP pools: {exc}")
    except BackendUnavailableError as exc:
        return LivePools(None, f"no calico backend: {exc}")
    except K3snetError as exc:
        return LivePools(None, f"the calico backend could not list the IP pools: {exc}")
    finally:
        backend.close()
