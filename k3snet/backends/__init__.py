"""Backends: the protocol, the registry, and the built-in implementations.

Built-in backends are imported only when asked for by name
(:func:`create_backend`), so their optional dependencies stay optional.
"""

from k3snet.backends.base import (
    ApplyResult,
    Backend,
    BackendFactory,
    PendingRestart,
    ensure_capable,
)
from k3snet.backends.registry import (
    ENTRY_POINT_GROUP,
    available_backends,
    backend_options,
    create_backend,
    load_backend,
    register_backend,
    unregister_backend,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "ApplyResult",
    "Backend",
    "BackendFactory",
    "PendingRestart",
    "available_backends",
    "backend_options",
    "create_backend",
    "ensure_capable",
    "load_backend",
    "register_backend",
    "unregister_backend",
]
