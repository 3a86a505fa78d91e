"""k3snet: make pod egress on K3s / Kubernetes nodes work, and keep it working.

Model what a node needs (routes, NAT, forward rules, sysctls) as immutable
values, compute the minimal plan from what it has, and apply it through a
backend that touches only what k3snet owns::

    import k3snet

    spec = k3snet.seed_spec()                      # or k3snet.load_spec("egress.yaml")
    desired = k3snet.compile(spec)
    backend = k3snet.create_backend("memory")      # "netlink", "nftables", "iptables" ...
    p = k3snet.plan(backend.observe(), desired)
    print(p.render())
    backend.apply(p)

Only ``attrs`` is needed to import this package; backends pull their own
dependencies through extras (``k3snet[nftables]``, ``k3snet[all]`` ...).
"""

import sys
import types

from k3snet._version import __version__

# Not typing.TYPE_CHECKING: importing typing would double `import k3snet`'s cost.
TYPE_CHECKING = False
if TYPE_CHECKING:  # the names, for type checkers and the docs; at run time they load lazily
    from k3snet.backends import (
        ApplyResult,
        Backend,
        available_backends,
        create_backend,
        load_backend,
        register_backend,
    )
    from k3snet.backends.group import BackendGroup, Member
    from k3snet.backends.memory import MemoryBackend
    from k3snet.converge import Convergence, converge, destroy
    from k3snet.errors import (
        ApplyError,
        BackendError,
        BackendNotFoundError,
        BackendUnavailableError,
        CheckError,
        ConflictError,
        K3snetError,
        ModelError,
        PlanError,
        Problem,
        RollbackError,
        SpecError,
        TeardownError,
    )
    from k3snet.facts import FactsWatch, facts_from_ip_json, gather_facts
    from k3snet.model import (
        K3SNET_ROUTE_PROTOCOL,
        ForwardRule,
        MasqueradeRule,
        NetObject,
        Route,
        SnatRule,
        State,
        Sysctl,
        aggregate,
        contains,
        overlaps,
        parse_address,
        parse_network,
    )
    from k3snet.planner import Change, Note, Plan, plan
    from k3snet.spec import (
        Cluster,
        Destination,
        ForwardPolicy,
        MasqueradePolicy,
        NodeFacts,
        Spec,
        compile,  # noqa: A004 - k3snet.compile(spec, facts) is the documented name
        load_ip_masq_agent_config,
        load_spec,
        seed_spec,
    )


# name -> the module it comes from: ``import k3snet`` imports nothing else until a
# name is used, so a command that needs little (``k3snet --version``) pays little.
_LAZY: dict[str, str] = {
    "ApplyError": "k3snet.errors",
    "ApplyResult": "k3snet.backends",
    "Backend": "k3snet.backends",
    "BackendError": "k3snet.errors",
    "BackendGroup": "k3snet.backends.group",
    "BackendNotFoundError": "k3snet.errors",
    "BackendUnavailableError": "k3snet.errors",
    "Change": "k3snet.planner",
    "CheckError": "k3snet.errors",
    "Cluster": "k3snet.spec",
    "ConflictError": "k3snet.errors",
    "Convergence": "k3snet.converge",
    "Destination": "k3snet.spec",
    "FactsWatch": "k3snet.facts",
    "ForwardPolicy": "k3snet.spec",
    "ForwardRule": "k3snet.model",
    "K3SNET_ROUTE_PROTOCOL": "k3snet.model",
    "K3snetError": "k3snet.errors",
    "MasqueradePolicy": "k3snet.spec",
    "MasqueradeRule": "k3snet.model",
    "Member": "k3snet.backends.group",
    "MemoryBackend": "k3snet.backends.memory",
    "ModelError": "k3snet.errors",
    "NetObject": "k3snet.model",
    "NodeFacts": "k3snet.spec",
    "Note": "k3snet.planner",
    "Plan": "k3snet.planner",
    "PlanError": "k3snet.errors",
    "Problem": "k3snet.errors",
    "RollbackError": "k3snet.errors",
    "Route": "k3snet.model",
    "SnatRule": "k3snet.model",
    "Spec": "k3snet.spec",
    "SpecError": "k3snet.errors",
    "State": "k3snet.model",
    "Sysctl": "k3snet.model",
    "TeardownError": "k3snet.errors",
    "__version__": "k3snet._version",
    "aggregate": "k3snet.model",
    "available_backends": "k3snet.backends",
    "compile": "k3snet.spec",
    "contains": "k3snet.model",
    "converge": "k3snet.converge",
    "create_backend": "k3snet.backends",
    "destroy": "k3snet.converge",
    "facts_from_ip_json": "k3snet.facts",
    "gather_facts": "k3snet.facts",
    "load_backend": "k3snet.backends",
    "load_ip_masq_agent_config": "k3snet.spec",
    "load_spec": "k3snet.spec",
    "overlaps": "k3snet.model",
    "parse_address": "k3snet.model",
    "parse_network": "k3snet.model",
    "plan": "k3snet.planner",
    "register_backend": "k3snet.backends",
    "seed_spec": "k3snet.spec",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'k3snet' has no attribute {name!r}")
    value = getattr(_import(module), name)
    globals()[name] = value  # next time, a plain attribute
    return value


def _import(module: str) -> types.ModuleType:
    __import__(module)
    return sys.modules[module]


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


class _Package(types.ModuleType):
    """``k3snet.converge`` is the function even after its module ``k3snet.converge`` loads.

    Importing a submodule sets the package attribute of the same name to the
    module; eagerly imported names used to win by coming later. With lazy names,
    this property keeps the function (the import system's assignment is ignored).
    """

    @property
    def converge(self) -> object:
        return getattr(_import("k3snet.converge"), "converge")  # noqa: B009

    @converge.setter
    def converge(self, _module: object) -> None:
        pass


sys.modules[__name__].__class__ = _Package


__all__ = [
    "K3SNET_ROUTE_PROTOCOL",
    "ApplyError",
    "ApplyResult",
    "Backend",
    "BackendError",
    "BackendGroup",
    "BackendNotFoundError",
    "BackendUnavailableError",
    "Change",
    "CheckError",
    "Cluster",
    "ConflictError",
    "Convergence",
    "Destination",
    "FactsWatch",
    "ForwardPolicy",
    "ForwardRule",
    "K3snetError",
    "MasqueradePolicy",
    "MasqueradeRule",
    "Member",
    "MemoryBackend",
    "ModelError",
    "NetObject",
    "NodeFacts",
    "Note",
    "Plan",
    "PlanError",
    "Problem",
    "RollbackError",
    "Route",
    "SnatRule",
    "Spec",
    "SpecError",
    "State",
    "Sysctl",
    "TeardownError",
    "__version__",
    "aggregate",
    "available_backends",
    "compile",
    "contains",
    "converge",
    "create_backend",
    "destroy",
    "facts_from_ip_json",
    "gather_facts",
    "load_backend",
    "load_ip_masq_agent_config",
    "load_spec",
    "overlaps",
    "parse_address",
    "parse_network",
    "plan",
    "register_backend",
    "seed_spec",
]
