"""The core with attrs alone: ``pip install k3snet`` and nothing else.

``make test-lowest`` runs this in a venv holding only attrs, at its lowest allowed
version, with the checkout on PYTHONPATH. tests/api's test_import_k3snet_needs_only_attrs
looks at what ``import k3snet`` loads in a venv with every extra, where an import of an
optional library deeper down (compile, plan, the memory backend, the JSON dump) would
still succeed; here it fails.
"""

from __future__ import annotations

import importlib.util
import sys

OPTIONAL = ("yaml", "hypothesis", "pyroute2", "nftables", "iptc", "kubernetes",
            "prometheus_client")

present = [name for name in OPTIONAL if importlib.util.find_spec(name) is not None]
if present:
    sys.exit(f"not a venv with attrs alone: {', '.join(present)} installed")

import attrs  # noqa: E402 - after the check that nothing else is there

import k3snet  # noqa: E402
from k3snet.backends.memory import MemoryBackend, parse_dump  # noqa: E402

spec = k3snet.Spec.from_dict({
    "apiVersion": "k3snet.io/v1alpha1", "kind": "EgressSpec",
    "destinations": [{"cidr": "192.168.2.0/24", "gateway": "192.168.1.1", "device": "eth0"}]})
desired = k3snet.compile(spec)
node = MemoryBackend(k3snet.State(foreign=[
    k3snet.Route("192.168.2.0/24", gateway="192.168.1.1", device="eth0", protocol=4)]))
plan = k3snet.plan(node.observe(), desired)
node.apply(plan)
assert not k3snet.plan(node.observe(), desired).changes, "a second plan is not empty"
assert parse_dump(node.dump()) == node.observe()
sys.stdout.write(f"k3snet {k3snet.__version__} with attrs {attrs.__version__} alone: "
                 f"{len(desired.owned)} objects compiled, planned and applied\n")
