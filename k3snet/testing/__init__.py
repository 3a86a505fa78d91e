"""Testing helpers for users of k3snet: strategies, the conformance suite, fakes.

Needs ``hypothesis`` (``pip install 'k3snet[testing]'``). Also here:
:mod:`k3snet.testing.kube` (an emulated Kubernetes API server for cluster
backends) and :mod:`k3snet.testing.k3s` (recorded iptables state of a K3s node).
The seed lab, which needs root, lives in :mod:`k3snet.lab`.
"""

try:
    import hypothesis  # noqa: F401 - only to name the extra when it is missing
except ModuleNotFoundError as exc:  # every module here needs it, k3snet.testing.kube too
    raise ModuleNotFoundError(f"k3snet.testing needs hypothesis ({exc}): pip install "
                              "'k3snet[testing]'", name=exc.name) from exc

from k3snet.testing import strategies
from k3snet.testing.conformance import run_conformance

__all__ = ["run_conformance", "strategies"]
