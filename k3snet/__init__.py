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

from k3snet._version import __version__
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
from k3snet.facts import facts_from_ip_json, gather_facts
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
