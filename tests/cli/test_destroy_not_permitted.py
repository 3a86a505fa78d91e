"""``k3snet destroy`` naming no backend, run without root (no ``CAP_NET_ADMIN``), fails
(exit 1, an ``error`` document) instead of saying there is nothing to destroy.

Before, every node backend but netlink (which reads routes unprivileged) was "not
looked through" (a warning each), netlink found nothing, and the command exited 0 with
a ``destroy`` document: a script took the node as clean, k3snet's nftables table and
iptables chains never looked at. Nothing is removed either way: the look is refused
before any lock or change. Run as ``nobody`` through ``setpriv`` (util-linux).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from k3snet.cli import EXIT_ERROR, EXIT_OK
from k3snet.lab.netns import temporary_netns

# k3snet run by ``python -c`` as root of a user namespace of its own (uid 0 mapped to the
# caller's), made with a network namespace in the same call (flags), as ``unshare -rn``
# does; 0: the user namespace alone, the host's network namespace kept.
_IN_USER_NAMESPACE = """
import ctypes, os, runpy, sys
flags = int(sys.argv.pop(1))
uid, gid = os.getuid(), os.getgid()
if ctypes.CDLL(None, use_errno=True).unshare(0x10000000 | flags):
    raise OSError(ctypes.get_errno(), "unshare")
for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"),
                   ("gid_map", f"0 {gid} 1")):
    with open(f"/proc/self/{name}", "w") as file:
        file.write(text)
sys.argv[0] = "k3snet"
runpy.run_module("k3snet", run_name="__main__")
"""
_CLONE_NEWNET = 0x40000000
# As a rootless container's runtime does: the user namespace made and its uid map written,
# then the network namespace made, whose /proc/net/ip_tables_names the kernel gives to
# that user namespace's root; the look at it then refused by other means than the host's
# ownership (mode 0 and the capabilities overriding it dropped, as a security module
# would refuse it). Exit 77: x_tables not loaded, no file to refuse.
_IN_CONTAINER_ORDER = """
import ctypes, os, runpy, sys
uid, gid = os.getuid(), os.getgid()
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x10000000):
    raise OSError(ctypes.get_errno(), "unshare")
for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"),
                   ("gid_map", f"0 {gid} 1")):
    with open(f"/proc/self/{name}", "w") as file:
        file.write(text)
if libc.unshare(0x40000000):
    raise OSError(ctypes.get_errno(), "unshare")
names = "/proc/self/net/ip_tables_names"
if not os.path.exists(names) or os.stat(names).st_uid != 0:
    sys.exit(77)
for names in ("ip_tables_names", "ip6_tables_names"):
    if os.path.exists(f"/proc/self/net/{names}"):
        os.chmod(f"/proc/self/net/{names}", 0)
# CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH (1, 2) dropped: from the bounding set
# (PR_CAPBSET_DROP, for the tools k3snet runs), then the effective and permitted sets.
for cap in (1, 2):
    if libc.prctl(24, cap, 0, 0, 0):
        raise OSError(ctypes.get_errno(), "prctl")
header = (ctypes.c_uint32 * 2)(0x20080522, 0)
data = (ctypes.c_uint32 * 6)()
if libc.capget(header, data):
    raise OSError(ctypes.get_errno(), "capget")
data[0] &= ~6
data[1] &= ~6
if libc.capset(header, data):
    raise OSError(ctypes.get_errno(), "capset")
sys.argv[0] = "k3snet"
runpy.run_module("k3snet", run_name="__main__")
"""


def _destroy_as_nobody(*through: str, before: Sequence[str] = (),
                       setpriv_args: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a command as another user")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs setpriv")
    uid = pwd.getpwnam("nobody").pw_uid
    with tempfile.TemporaryDirectory(prefix="k3snet-destroy-test-") as base:
        Path(base).chmod(0o777)
        return subprocess.run(
            [*before, setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
             *setpriv_args, sys.executable,
             *through, "destroy", "--auto-approve", "--output", "json"],
            capture_output=True, text=True, check=False, timeout=120, cwd="/",
            env={"PATH": "/usr/sbin:/usr/bin:/bin", "K3SNET_LOCK_DIR": f"{base}/locks",
                 "K3SNET_STATE_DIR": f"{base}/state",
                 "PYTHONPATH": str(Path(__file__).resolve().parents[2])})


def _user_namespaces() -> None:
    probe = subprocess.run(["unshare", "-r", "true"], capture_output=True, check=False,
                           user=pwd.getpwnam("nobody").pw_uid)
    if probe.returncode != 0:
        pytest.skip("user namespaces are not permitted here")


def test_a_destroy_not_permitted_to_look_fails_as_an_error_document() -> None:
    done = _destroy_as_nobody("-m", "k3snet")
    assert done.returncode == EXIT_ERROR, (done.stdout, done.stderr)
    error = json.loads(done.stdout)["error"]
    assert error["type"] == "BackendError"
    assert error["message"].startswith("not permitted to look through nftables, "), error
    assert "nothing was removed" in error["message"]


def test_a_destroy_by_root_of_its_own_user_and_network_namespace_is_not_refused() -> None:
    # unshare -rn: CAP_NET_ADMIN over the namespace, whose /proc/net/ip_tables_names is
    # the host root's (iptables-legacy neither looks nor writes there). It failed, "not
    # permitted ... needs root or CAP_NET_ADMIN", and removed nothing, k3snet's
    # nftables table of that namespace (applied there) too.
    _user_namespaces()
    done = _destroy_as_nobody("-c", _IN_USER_NAMESPACE, str(_CLONE_NEWNET))
    assert done.returncode == EXIT_OK, (done.stdout, done.stderr)
    document = json.loads(done.stdout)
    assert document["kind"] == "destroy"
    unavailable = document["discovered"]["unavailable"]
    assert [line.split(":")[0] for line in unavailable] == ["iptables-legacy"], unavailable


def test_a_refused_iptables_legacy_look_of_a_namespace_root_owning_its_tables_file_fails(
) -> None:
    # The rootless container's order: /proc/net/ip_tables_names is the namespace root's
    # (stat shows uid 0 there, not nobody), so a refused look is no host's refusal. It
    # was exempt as unshare -rn's is: a warning, and "nothing to destroy" (exit 0) of
    # iptables-legacy's chains never looked at.
    _user_namespaces()
    done = _destroy_as_nobody("-c", _IN_CONTAINER_ORDER)
    if done.returncode == 77:
        pytest.skip("x_tables is not loaded: no /proc/net/ip_tables_names")
    assert done.returncode == EXIT_ERROR, (done.stdout, done.stderr)
    message = json.loads(done.stdout)["error"]["message"]
    assert message.startswith("not permitted to look through iptables-legacy "), message


def test_a_destroy_by_root_of_a_user_namespace_in_the_host_s_network_namespace_is_refused(
) -> None:
    _user_namespaces()
    done = _destroy_as_nobody("-c", _IN_USER_NAMESPACE, "0")
    assert done.returncode == EXIT_ERROR, (done.stdout, done.stderr)
    assert json.loads(done.stdout)["error"]["message"].startswith("not permitted"), done.stdout


@pytest.mark.kernel
def test_a_destroy_refused_to_a_user_granted_cap_net_admin_says_root_is_needed() -> None:
    # CAP_NET_ADMIN granted instead of root (docs/reliability.md): iptables-legacy's
    # /proc/net/ip_tables_names is root's alone. The error said "needs root or
    # CAP_NET_ADMIN" to a process holding CAP_NET_ADMIN.
    with temporary_netns("nopriv") as ns:
        done = _destroy_as_nobody("-m", "k3snet", before=["ip", "netns", "exec", ns],
                                  setpriv_args=["--inh-caps=+net_admin",
                                                "--ambient-caps=+net_admin"])
    assert done.returncode == EXIT_ERROR, (done.stdout, done.stderr)
    message = json.loads(done.stdout)["error"]["message"]
    assert message.startswith("not permitted to look through iptables-legacy (k3snet "
                              "destroy needs root (CAP_NET_ADMIN, held, is not enough))"), message
