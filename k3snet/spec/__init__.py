"""The user-facing spec, its loading, and ``compile(spec, facts) -> State``.

A spec says what the operator wants for pod egress; :func:`compile` turns it
into the desired :class:`~k3snet.model.State`, given a node's
:class:`NodeFacts` and the CNI targets in use. The YAML form (keys in
camelCase, like Kubernetes objects)::

    apiVersion: k3snet.io/v1alpha1
    kind: EgressSpec
    cluster:
      podCIDRs: [10.42.0.0/16]        # K3s defaults
      serviceCIDRs: [10.43.0.0/16]
    destinations:
      - cidr: 192.168.2.0/24
        gateway: 192.168.1.1
        device: eth0
    masquerade:
      mode: destinations              # or "all" (ip-masq-agent style) or "off"
    forward:
      accept: true
    sysctls:
      net.ipv4.conf.all.rp_filter: 2

Every problem of a spec is reported at once in one :class:`~k3snet.errors.SpecError`,
each with its path (``destinations[1].gateway``).

The parts: :mod:`~k3snet.spec.model` (the values), :mod:`~k3snet.spec.schema`
(the field table: every key spelled once), :mod:`~k3snet.spec.validators`
(reusable checks), :mod:`~k3snet.spec.load`, :mod:`~k3snet.spec.validate`,
:mod:`~k3snet.spec.ipmasq` (ip-masq-agent's config), :mod:`~k3snet.spec.backends` (the
``backends:`` options), :mod:`~k3snet.spec.json_schema` (the JSON Schema, ``explain``) and
:mod:`~k3snet.spec.compiler`.
"""

from k3snet.spec.backends import check_backend_options, spec_backend_options
from k3snet.spec.compiler import (
    NodeFacts,
    check_pod_cidr,
    compile,  # noqa: A004 - k3snet.compile(spec, facts) is the documented name
    compile_cilium,
    compile_flannel,
    compile_ippools,
    held_destinations,
    nat_exemptions,
    pod_cidr_problems,
)
from k3snet.spec.ipmasq import (
    IP_MASQ_AGENT_DEFAULT_NON_MASQUERADE,
    IpMasqAgentConfig,
    load_ip_masq_agent_config,
)
from k3snet.spec.load import load_spec
from k3snet.spec.model import (
    API_VERSION,
    AgentSettings,
    BlockSizes,
    CalicoSettings,
    CiliumSettings,
    Cluster,
    CniSettings,
    ConnectivityTest,
    Destination,
    DnsZone,
    EgressPolicy,
    FlannelSettings,
    ForwardPolicy,
    MasqueradeMode,
    MasqueradePolicy,
    Spec,
    seed_spec,
)
from k3snet.spec.validate import validate

__all__ = [
    "API_VERSION",
    "IP_MASQ_AGENT_DEFAULT_NON_MASQUERADE",
    "AgentSettings",
    "BlockSizes",
    "CalicoSettings",
    "CiliumSettings",
    "Cluster",
    "CniSettings",
    "ConnectivityTest",
    "Destination",
    "DnsZone",
    "EgressPolicy",
    "FlannelSettings",
    "ForwardPolicy",
    "IpMasqAgentConfig",
    "MasqueradeMode",
    "MasqueradePolicy",
    "NodeFacts",
    "Spec",
    "check_backend_options",
    "check_pod_cidr",
    "compile",
    "compile_cilium",
    "compile_flannel",
    "compile_ippools",
    "held_destinations",
    "load_ip_masq_agent_config",
    "load_spec",
    "nat_exemptions",
    "pod_cidr_problems",
    "seed_spec",
    "spec_backend_options",
    "validate",
]
