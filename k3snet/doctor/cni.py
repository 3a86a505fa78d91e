"""CNI configuration read live through k3snet's CNI backends: Calico's IP pools.

Calico's iptables rules match ipsets (``cali40masq-ipam-pools`` ...) whose members
are its IP pools. A bundle may carry them as ``calico-ippools.json``; on a node
with a kube config the doctor reads them instead through k3snet's calico backend
(:meth:`~k3snet.backends.calico.CalicoBackend.observe`: k3snet's own pools and the
foreign ones it can model), so nobody has to export them by hand.
"""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

import attrs

from k3snet.doctor.state import CalicoPool
from k3snet.errors import BackendUnavailableError, K3snetError

__all__ = ["LivePools", "calico_pools", "read_calico_pools"]


def calico_pools(backend: Any) -> tuple[CalicoPool, ...]:
    """The IP pools ``backend`` (a calico backend, or anything observing ``ippool``
    objects) observes, owned and foreign, by name.

    The calico backend observes the foreign pools as one
    :class:`~k3snet.model.cni.CalicoPools`; a pool it could not read makes the
    answer incomplete, so it raises :class:`~k3snet.errors.K3snetError` naming it
    rather than judge Calico's ipsets without it.
    """
    from k3snet.model.cni import CalicoPools, IPPool  # noqa: PLC0415 - the CNI model, lazily

    state = backend.observe()
    found: dict[str, IPPool] = {}
    for obj in (*state.owned, *state.foreign):
        if isinstance(obj, CalicoPools):
            if obj.invalid:
                raise K3snetError("the calico backend cannot read IP pool(s) " + "; ".join(
                    f"{name} ({why})" for name, why in obj.invalid))
            found.update((p.name, p) for p in obj.pools)
        elif isinstance(obj, IPPool):
            found[obj.name] = obj
    return tuple(CalicoPool(ip_network(str(p.cidr), strict=False), bool(p.nat_outgoing),
                            bool(p.disabled), p.load_balancer_only)
                 for _, p in sorted(found.items()))


@attrs.frozen
class LivePools:
    """What :func:`read_calico_pools` found: the ``pools`` (None when they could not be
    read) and ``why`` not (None when read, or when the cluster has no Calico)."""

    pools: tuple[CalicoPool, ...] | None
    why: str | None = None


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
        return LivePools(calico_pools(backend))
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
