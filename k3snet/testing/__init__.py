"""Testing helpers for users of k3snet: strategies, the conformance suite, fakes.

Needs ``hypothesis`` (``pip install 'k3snet[testing]'``). Also here:
:mod:`k3snet.testing.kube` (an emulated Kubernetes API server for cluster
backends) and :mod:`k3snet.testing.k3s` (recorded iptables state of a K3s node).
The seed lab, which needs root, lives in :mod:`k3snet.lab`.
"""

import sys

try:
    import hypothesis  # noqa: F401 - only to name the extra when it is missing
except ModuleNotFoundError as exc:  # every module here needs it, k3snet.testing.kube too
    raise ModuleNotFoundError(f"k3snet.testing needs hypothesis ({exc}): pip install "
                              "'k3snet[testing]'", name=exc.name) from exc

TYPE_CHECKING = False
if TYPE_CHECKING:  # the names, for type checkers and the docs; at run time they load lazily
    from k3snet.testing import strategies
    from k3snet.testing.conformance import run_conformance

__all__ = ["run_conformance", "strategies"]

# Loaded on first use (PEP 562). Hypothesis imports this package in every test session
# of a machine where k3snet is installed, through the plugin entry point
# (k3snet.testing._hypothesis_entry): the strategies, the conformance suite and the
# planner and backends it imports must not weigh on a session that never uses them.
_LAZY: dict[str, str] = {
    "strategies": "k3snet.testing.strategies",
    "run_conformance": "k3snet.testing.conformance",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'k3snet.testing' has no attribute {name!r}")
    __import__(module)
    value = sys.modules[module] if name == "strategies" else getattr(sys.modules[module], name)
    globals()[name] = value  # next time, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


