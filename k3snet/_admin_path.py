"""``$PATH`` with the sbin directories, for every entry point that runs k3snet's tools.

The tools the backends and the node facts run (``ip``, ``nft``, ``iptables-save``)
live in sbin directories that a minimal ``$PATH`` lacks: cron runs root's jobs with
``PATH=/usr/bin:/bin`` (Debian), and so do ``ansible-playbook`` runs it starts. The
``k3snet`` command and the Ansible module both call :func:`admin_path` first.
"""

from __future__ import annotations

import os

__all__ = ["ADMIN_PATH", "admin_path", "with_admin_path"]

ADMIN_PATH = ("/usr/local/sbin", "/usr/sbin", "/sbin")
"""Where the tools k3snet runs live (iptables-save, nft, ip): appended to ``$PATH``."""


def admin_path() -> None:
    """``$PATH`` with the sbin directories it lacks appended, as sudo's secure_path has them.

    cron runs root's jobs with ``PATH=/usr/bin:/bin`` (Debian): the iptables backend
    then reported "iptables-nft-save not found on PATH (install iptables)" on a node
    where it is installed, in /usr/sbin. The user's own directories keep coming first.
    """
    path = os.environ.get("PATH", os.defpath)
    made = with_admin_path(path)
    if made != path:
        os.environ["PATH"] = made


def with_admin_path(path: str) -> str:
    """``path`` (a ``$PATH``) with the directories of :data:`ADMIN_PATH` it lacks appended:
    what :func:`admin_path` sets.

    >>> with_admin_path("/usr/bin:/bin")
    '/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin'
    """
    present = set(path.split(os.pathsep))
    missing = [d for d in ADMIN_PATH if d not in present]
    return os.pathsep.join([p for p in (path,) if p] + missing) if missing else path
