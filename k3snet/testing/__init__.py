"""Testing helpers shipped with k3snet: strategies, the conformance suite, lab fixtures.

Needs ``hypothesis`` (``pip install 'k3snet[testing]'``). The seed lab
(:mod:`k3snet.testing.lab`) needs root and iproute2 and is imported on its own.
"""

from k3snet.testing import strategies
from k3snet.testing.conformance import run_conformance

__all__ = ["run_conformance", "strategies"]
