"""A switch of backends on a running node (``--backend`` or the spec's ``backends:``
changed, iptables-legacy to iptables-nft, netlink dropped) leaves what the old backend
wrote running: ``plan``, ``apply`` and the agent say which node backend holds it and the
``k3snet destroy`` removing it, and that command removes it alone.

Before, nothing was said: k3snet's iptables-legacy masquerade ran beside the new one of
iptables-nft, and once netlink was no longer named the routes k3snet made (protocol 211)
stayed, every pass "in sync". Checked with the kernel's own listings (``iptables-save``
of both flavours, ``nft -j list``, ``ip -j route``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from k3snet import State, Sysctl, converge
from k3snet.backends import discover
from k3snet.backends import netns as netns_module
from k3snet.backends.netlink import NetlinkBackend
from k3snet.backends.netns import NetnsRunner
from k3snet.demo import SPEC_PATH
from k3snet.lab import SeedLab
from k3snet.lab.netns import run_in, temporary_netns
from k3snet.model.route import K3SNET_ROUTE_PROTOCOL
from tests.in_process import k3snet

pytestmark = [pytest.mark.kernel, pytest.mark.lab, pytest.mark.usefixtures("require_root")]


def _run(*args: str, lab: SeedLab, lock_dir: Path, **environ: str
         ) -> subprocess.CompletedProcess[str]:
    """``k3snet ARGS`` on the lab's state and lock directories: the agent in a process of
    its own (as it runs), the other commands by main() in this one (tests/in_process.py)."""
    environ = dict(K3SNET_STATE_DIR=str(lab.state_dir), K3SNET_LOCK_DIR=str(lock_dir),
                   **environ)
    if args[0] != "agent":
        return k3snet(*args, **environ)
    return subprocess.run([sys.executable, "-m", "k3snet.cli", *args],
                          env=dict(os.environ, **environ), text=True, capture_output=True,
                          timeout=120, check=False)


def _k3snet_routes(ns: str) -> list[object]:
    return [r for family in ("-4", "-6") for r in json.loads(run_in(
        ns, ["ip", family, "-j", "route", "show", "table", "all", "proto", "211"]).stdout)]


def _chains(ns: str, tool: str) -> list[str]:
    return [line for line in run_in(ns, [tool]).stdout.splitlines() if "K3SNET" in line]


def _nft_tables(ns: str) -> list[str]:
    listing = json.loads(run_in(ns, ["nft", "-j", "list", "tables"]).stdout)["nftables"]
    return [i["table"]["name"] for i in listing if "table" in i]


def _command(out: str, label: str) -> list[str]:
    """The ``k3snet destroy ...`` the warning of ``label`` names, as argv after ``k3snet``."""
    (line,) = [line for line in out.splitlines() if line.startswith(f"!! warning: {label} holds")]
    return shlex.split(line.split("`")[1])[1:]


def test_a_switch_from_iptables_legacy_to_nft_names_the_legacy_chains_and_their_destroy(
        tmp_path: Path) -> None:
    with SeedLab.create() as lab:
        for mode in ("legacy", "nft"):
            applied = _run("apply", "-f", str(SPEC_PATH), "--backend", "netlink", "--backend",
                           "iptables", "--backend-opt", f"iptables.mode={mode}", "--netns",
                           lab.node, lab=lab, lock_dir=tmp_path)
            assert applied.returncode == 0, applied.stderr
        # Both masquerades run: the kernel lists k3snet's chains in both flavours.
        assert _chains(lab.node, "iptables-legacy-save")
        assert _chains(lab.node, "iptables-nft-save")
        # An apply that changes the node does not look (a script's cold apply pays for its
        # own backends alone); the plan before it, and apply --dry-run, say it.
        assert "holds" not in applied.stdout, applied.stdout
        previewed = _run("apply", "--dry-run", "-f", str(SPEC_PATH), "--backend", "netlink",
                         "--backend", "iptables", "--backend-opt", "iptables.mode=nft",
                         "--netns", lab.node, lab=lab, lock_dir=tmp_path)
        assert re.search(r"iptables-legacy holds \d+ of k3snet's objects", previewed.stdout)

        planned = _run("plan", "-f", str(SPEC_PATH), "--backend", "netlink", "--backend",
                       "iptables", "--backend-opt", "iptables.mode=nft", "--netns", lab.node,
                       lab=lab, lock_dir=tmp_path)
        command = _command(planned.stdout, "iptables-legacy")
        assert command == ["destroy", "--netns", lab.node, "--backend", "iptables",
                           "--backend-opt", "iptables.mode=legacy",
                           "--backend-opt", f"iptables.state_dir={lab.state_dir}"]
        assert "iptables-nft holds" not in planned.stdout  # in use: not left behind

        nft_before = _chains(lab.node, "iptables-nft-save")
        gone = _run(*command, "--auto-approve", lab=lab, lock_dir=tmp_path)
        assert gone.returncode == 0, gone.stderr
        assert _chains(lab.node, "iptables-legacy-save") == []
        assert _chains(lab.node, "iptables-nft-save") == nft_before  # the new ones stay
        forwarding = run_in(lab.node, ["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout
        assert forwarding.strip() == "1"  # netlink's, in use, untouched

        again = _run("plan", "-f", str(SPEC_PATH), "--backend", "netlink", "--backend",
                     "iptables", "--backend-opt", "iptables.mode=nft", "--netns", lab.node,
                     lab=lab, lock_dir=tmp_path)
        assert "holds" not in again.stdout, again.stdout


def test_a_k3snet_started_by_ip_netns_exec_names_the_destroy_of_that_namespace(
        tmp_path: Path) -> None:
    # `ip netns exec NS k3snet plan ...` without --netns read NS, and named a bare
    # `k3snet destroy --backend netlink`: run as shown from the shell that ran k3snet,
    # it acted in the node's namespace. It names `--netns NS` now.
    with SeedLab.create() as lab:
        run_in(lab.node, ["ip", "route", "del", "192.168.2.0/24"])
        run_in(lab.node, ["ip", "-6", "route", "del", "fd01:2::/64"])
        applied = _run("apply", "-f", str(SPEC_PATH), "--backend", "netlink", "--backend",
                       "nftables", "--netns", lab.node, lab=lab, lock_dir=tmp_path)
        assert applied.returncode == 0, applied.stderr
        env = dict(os.environ, K3SNET_STATE_DIR=str(lab.state_dir),
                   K3SNET_LOCK_DIR=str(tmp_path))
        planned = subprocess.run(
            ["ip", "netns", "exec", lab.node, sys.executable, "-m", "k3snet.cli", "plan",
             "-f", str(SPEC_PATH), "--backend", "nftables"],
            env=env, text=True, capture_output=True, timeout=120, check=False)
        command = _command(planned.stdout, "netlink")
        assert command == ["destroy", "--netns", lab.node, "--backend", "netlink",
                           "--backend-opt", f"netlink.state_dir={lab.state_dir}"], (
            planned.stdout)
        # Run as shown, from the test's own namespace: it names the lab's, and acts there.
        gone = _run(*command, "--auto-approve", lab=lab, lock_dir=tmp_path)
        assert gone.returncode == 0, gone.stderr
        assert _k3snet_routes(lab.node) == []


def test_a_bad_option_of_one_backend_not_in_use_leaves_the_others_looked_through(
        tmp_path: Path) -> None:
    # $K3SNET_PROC_SYS (netlink's alone) relative, nftables alone in use: netlink cannot
    # be looked through, and says so; iptables-legacy's chains are still named. Before,
    # the one refused option hid every look (the cluster's too), unsaid.
    with SeedLab.create() as lab:
        applied = _run("apply", "-f", str(SPEC_PATH), "--backend", "netlink", "--backend",
                       "iptables", "--backend-opt", "iptables.mode=legacy", "--netns",
                       lab.node, lab=lab, lock_dir=tmp_path)
        assert applied.returncode == 0, applied.stderr
        planned = _run("plan", "-f", str(SPEC_PATH), "--backend", "nftables", "--netns",
                       lab.node, lab=lab, lock_dir=tmp_path, K3SNET_PROC_SYS="proc")
        assert planned.returncode in (0, 2), planned.stderr
        assert _command(planned.stdout, "iptables-legacy")[:4] == [
            "destroy", "--netns", lab.node, "--backend"]
        assert "netlink holds" not in planned.stdout
        (line,) = [line for line in planned.stderr.splitlines() if "cannot look" in line]
        assert "cannot look through netlink for what a switch of backends left: " \
            "$K3SNET_PROC_SYS 'proc' is not an absolute path" in line


def test_netlink_dropped_names_the_routes_left_and_their_destroy(tmp_path: Path) -> None:
    with SeedLab.create() as lab:
        # The administrator's static routes gone: k3snet's are the node's way there.
        run_in(lab.node, ["ip", "route", "del", "192.168.2.0/24"])
        run_in(lab.node, ["ip", "-6", "route", "del", "fd01:2::/64"])
        applied = _run("apply", "-f", str(SPEC_PATH), "--backend", "netlink", "--backend",
                       "nftables", "--netns", lab.node, lab=lab, lock_dir=tmp_path)
        assert applied.returncode == 0, applied.stderr
        assert "holds" not in applied.stdout  # nothing left behind yet
        alone = _run("apply", "-f", str(SPEC_PATH), "--backend", "nftables", "--netns",
                     lab.node, lab=lab, lock_dir=tmp_path)
        assert alone.returncode == 0, alone.stderr
        assert _k3snet_routes(lab.node)  # k3snet's routes stay in the kernel
        planned = _run("plan", "-f", str(SPEC_PATH), "--backend", "nftables", "--netns",
                       lab.node, lab=lab, lock_dir=tmp_path)
        command = _command(planned.stdout, "netlink")
        assert command == ["destroy", "--netns", lab.node, "--backend", "netlink",
                           "--backend-opt", f"netlink.state_dir={lab.state_dir}"]

        gone = _run(*command, "--auto-approve", lab=lab, lock_dir=tmp_path)
        assert gone.returncode == 0, gone.stderr
        assert _k3snet_routes(lab.node) == []
        assert "k3snet" in _nft_tables(lab.node)  # the backend in use keeps its table


def test_the_agent_names_what_the_backends_of_its_spec_no_longer_name(tmp_path: Path) -> None:
    # The spec's backends: changed from [netlink, iptables] to [netlink, nftables].
    with SeedLab.create() as lab:
        applied = _run("apply", "-f", str(SPEC_PATH), "--backend", "netlink", "--backend",
                       "iptables", "--backend-opt", "iptables.mode=legacy", "--netns",
                       lab.node, lab=lab, lock_dir=tmp_path)
        assert applied.returncode == 0, applied.stderr
        spec = tmp_path / "spec.yaml"
        spec.write_text(SPEC_PATH.read_text() + "backends: [netlink, nftables]\n")
        agent = _run("agent", "--once", "--no-kube", "--listen", "none", "-f", str(spec),
                     "--node-name", "n1", "--netns", lab.node, lab=lab, lock_dir=tmp_path)
        assert agent.returncode == 0, agent.stderr
        assert re.search(r"spec generation 1: iptables-legacy holds \d+ of k3snet's objects",
                         agent.stderr), agent.stderr
        assert (f"`k3snet destroy --netns {lab.node} --backend iptables --backend-opt "
                f"iptables.mode=legacy --backend-opt iptables.state_dir={lab.state_dir}` "
                "removes them") in agent.stderr
        assert _chains(lab.node, "iptables-legacy-save")  # said, not removed


def test_a_namespace_no_legacy_tool_wrote_in_is_looked_through_without_the_iptables_backend(
        ) -> None:
    # The look runs on every cold `plan` and `apply` of the default backends (netlink and
    # nftables): a namespace with no iptables-legacy table (none in /proc/net/*_tables_names)
    # holds no legacy chain of k3snet's, so neither the iptables backend (~40 ms to import)
    # nor iptables-legacy-save is paid for it.
    with temporary_netns("switch") as ns:
        code = ("import sys\n"
                "from k3snet.backends.discover import left_behind\n"
                "from k3snet.backends.registry import create_backend\n"
                f"used = [create_backend('netlink', netns={ns!r}),"
                f" create_backend('nftables', netns={ns!r})]\n"
                f"options = {{n: {{'netns': {ns!r}}} for n in ('netlink', 'nftables',"
                " 'iptables')}\n"  # as the CLI gives them: {} looked in this namespace
                f"print(left_behind(used, options, netns={ns!r}))\n"
                "print('k3snet.backends.iptables.backend' in sys.modules)\n")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, timeout=120)
        assert done.stdout.split() == ["()", "False"], done.stdout + done.stderr


def test_the_destroy_named_for_routes_of_another_protocol_removes_those_routes(
        tmp_path: Path) -> None:
    # The spec's netlink protocol 200, netlink then dropped by --backend: the destroy named
    # without the option looked for protocol 211's routes, and k3snet's routes stayed.
    with SeedLab.create() as lab:
        run_in(lab.node, ["ip", "route", "del", "192.168.2.0/24"])
        run_in(lab.node, ["ip", "-6", "route", "del", "fd01:2::/64"])
        spec = tmp_path / "spec.yaml"
        spec.write_text(SPEC_PATH.read_text()
                        + "backends:\n  netlink: {protocol: 200}\n  nftables: {}\n")
        applied = _run("apply", "-f", str(spec), "--netns", lab.node, lab=lab,
                       lock_dir=tmp_path)
        assert applied.returncode == 0, applied.stderr
        planned = _run("plan", "-f", str(spec), "--backend", "nftables", "--netns", lab.node,
                       lab=lab, lock_dir=tmp_path)
        command = _command(planned.stdout, "netlink")
        assert "netlink.protocol=200" in command

        def routes() -> list[object]:
            return [r for family in ("-4", "-6") for r in json.loads(run_in(
                lab.node, ["ip", family, "-j", "route", "show", "table", "all", "proto",
                           "200"]).stdout)]
        assert routes()
        gone = _run(*command, "--auto-approve", lab=lab, lock_dir=tmp_path)
        assert gone.returncode == 0, gone.stderr
        assert routes() == []
        assert "k3snet" in _nft_tables(lab.node)  # the backend in use keeps its table


def test_a_namespace_with_no_nf_tables_table_is_looked_through_without_nftables_or_iptables(
        ) -> None:
    # netlink alone in use (a routed node): a namespace with no nf_tables table holds no
    # nftables table nor iptables-nft chain of k3snet's, so neither backend (~115 ms cold
    # to import) is paid for it; a table made there (iptables-nft's) is looked through.
    with temporary_netns("switch") as ns:
        code = ("import sys\n"
                "from k3snet.backends.discover import left_behind\n"
                "from k3snet.backends.registry import create_backend\n"
                f"used = [create_backend('netlink', netns={ns!r})]\n"
                f"options = {{n: {{'netns': {ns!r}}} for n in ('netlink', 'nftables',"
                " 'iptables')}\n"
                f"print(left_behind(used, options, netns={ns!r}))\n"
                "print('k3snet.backends.nftables.backend' in sys.modules,"
                " 'k3snet.backends.iptables.backend' in sys.modules)\n")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, timeout=120)
        assert done.stdout.split() == ["()", "False", "False"], done.stdout + done.stderr
        run_in(ns, ["iptables-nft", "-t", "nat", "-N", "ANY"])  # a table, none of k3snet's
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, timeout=120)
        assert done.stdout.split() == ["()", "True", "True"], done.stdout + done.stderr


def test_netlink_alone_after_nftables_names_the_nftables_table_left(tmp_path: Path) -> None:
    with SeedLab.create() as lab:
        applied = _run("apply", "-f", str(SPEC_PATH), "--backend", "netlink", "--backend",
                       "nftables", "--netns", lab.node, lab=lab, lock_dir=tmp_path)
        assert applied.returncode == 0, applied.stderr
        planned = _run("plan", "-f", str(SPEC_PATH), "--backend", "netlink:route,sysctl",
                       "--netns", lab.node, lab=lab, lock_dir=tmp_path)
        assert _command(planned.stdout, "nftables")[:5] == [
            "destroy", "--netns", lab.node, "--backend", "nftables"], planned.stdout


def test_apply_dry_run_of_a_plan_file_names_what_a_switch_of_backends_left(
        tmp_path: Path) -> None:
    # `k3snet apply FILE --dry-run` said nothing of iptables-legacy's chains left running
    # beside the plan file's iptables-nft ones: only a spec's apply looked.
    with SeedLab.create() as lab:
        applied = _run("apply", "-f", str(SPEC_PATH), "--backend", "netlink", "--backend",
                       "iptables", "--backend-opt", "iptables.mode=legacy", "--netns",
                       lab.node, lab=lab, lock_dir=tmp_path)
        assert applied.returncode == 0, applied.stderr
        saved = tmp_path / "egress.plan"
        planned = _run("plan", "-f", str(SPEC_PATH), "--backend", "netlink", "--backend",
                       "iptables", "--backend-opt", "iptables.mode=nft", "--netns", lab.node,
                       "--out", str(saved), lab=lab, lock_dir=tmp_path)
        assert planned.returncode == 2, planned.stderr
        previewed = _run("apply", "--dry-run", str(saved), lab=lab, lock_dir=tmp_path)
        assert previewed.returncode == 0, previewed.stderr
        assert _command(previewed.stdout, "iptables-legacy") == _command(
            planned.stdout, "iptables-legacy")
        assert "iptables-nft holds" not in previewed.stdout  # the file's own: in use
        assert _chains(lab.node, "iptables-legacy-save")  # said, not removed


_LOOK_NETLINK = ("import sys\n"
                 "from k3snet.backends.discover import left_behind\n"
                 "from k3snet.backends.registry import create_backend\n"
                 "ns, state = sys.argv[1:]\n"
                 "used = [create_backend('nftables', netns=ns)]\n"
                 "options = {n: {'netns': ns} for n in ('nftables', 'iptables')}\n"
                 "options['netlink'] = {'netns': ns, 'state_dir': state}\n"
                 "print([w.split(' holds ')[0] for w in left_behind(used, options, netns=ns)])\n"
                 "print('k3snet.backends.netlink.backend' in sys.modules)\n")


def _look_netlink(ns: str, state: Path) -> list[str]:
    return subprocess.run([sys.executable, "-c", _LOOK_NETLINK, ns, str(state)],
                          capture_output=True, text=True, check=True, timeout=120
                          ).stdout.split("\n")[:2]


def test_a_namespace_with_no_route_of_k3snets_protocol_nor_record_is_read_without_netlink(
        tmp_path: Path) -> None:
    # nftables alone in use: a namespace where k3snet made no route (no protocol 211, one
    # kernel-filtered dump) and took no sysctl (no record) is not read through the netlink
    # backend (~29 ms cold); a route of protocol 211, in any table, is.
    with temporary_netns("switch") as ns:
        run_in(ns, ["ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1"])
        run_in(ns, ["ip", "link", "set", "d0", "up"])
        run_in(ns, ["ip", "route", "add", "10.9.0.0/24", "dev", "d0", "proto", "static"])
        assert _look_netlink(ns, tmp_path) == ["[]", "False"]
        run_in(ns, ["ip", "route", "add", "10.9.1.0/24", "dev", "d0", "proto", "211",
                    "table", "100"])
        assert _look_netlink(ns, tmp_path) == ["['netlink']", "True"]


def test_the_sysctls_netlink_took_are_named_left_when_no_route_of_its_protocol_remains(
        tmp_path: Path) -> None:
    # The look's precheck (routes of protocol 211) must not hide the sysctls k3snet took
    # over: their record under the state directory sends the look through netlink.
    with SeedLab.create() as lab:
        applied = _run("apply", "-f", str(SPEC_PATH), "--backend", "netlink", "--backend",
                       "nftables", "--netns", lab.node, lab=lab, lock_dir=tmp_path)
        assert applied.returncode == 0, applied.stderr
        for family in ("-4", "-6"):
            run_in(lab.node, ["ip", family, "route", "flush", "table", "all", "proto", "211"])
        assert _k3snet_routes(lab.node) == []
        planned = _run("plan", "-f", str(SPEC_PATH), "--backend", "nftables", "--netns",
                       lab.node, lab=lab, lock_dir=tmp_path)
        assert re.search(r"netlink holds \d+ of k3snet's objects", planned.stdout), (
            planned.stdout)


@pytest.mark.parametrize("strict", [True, False], ids=["strict-checking", "every-route-sent"])
def test_the_netlink_precheck_finds_a_route_of_its_protocol_of_ipv6_alone_in_any_table(
        strict: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # A routed IPv6-only node: k3snet's routes are IPv6 alone, in a table of their own; the
    # precheck dumps both families. A kernel without strict checking (before 4.20, the
    # socket option refused: here another option number, refused alike) sends every route
    # of the family, and each message's protocol decides, not the kernel's filter.
    if not strict:
        monkeypatch.setattr(discover, "_NETLINK_GET_STRICT_CHK", 0x7FFF)
    with temporary_netns("switch") as ns, NetnsRunner(ns) as runner:
        run_in(ns, ["ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1"])
        run_in(ns, ["ip", "link", "set", "d0", "up"])
        run_in(ns, ["ip", "-6", "addr", "add", "fd00::1/64", "dev", "d0", "nodad"])
        for table in range(100, 400):  # routes of other protocols in many tables
            run_in(ns, ["ip", "route", "add", "10.9.0.0/24", "dev", "d0", "proto", "static",
                        "table", str(table)])
        run_in(ns, ["ip", "-6", "route", "add", "fd01::/64", "dev", "d0", "proto", "static"])
        assert not runner.call(lambda: discover._routes_of(K3SNET_ROUTE_PROTOCOL))
        run_in(ns, ["ip", "-6", "route", "add", "fd02::/64", "dev", "d0", "proto", "211",
                    "table", "300"])
        assert runner.call(lambda: discover._routes_of(K3SNET_ROUTE_PROTOCOL))
        assert not runner.call(lambda: discover._routes_of(200))


def test_the_sysctls_taken_in_a_namespace_of_no_name_send_the_look_through_netlink(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # k3snet run in a namespace of no name (`nsenter --net` into a pod's, `unshare -n`)
    # keeps its record two levels down, under host/unnamed-INODE: the precheck read the
    # state directory and one level of it, found no record, and the sysctls k3snet took
    # there went unnamed once its routes were gone (nftables alone in use).
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    nameless = tmp_path / "no-names"
    nameless.mkdir()
    with temporary_netns("switch") as node, temporary_netns("switch") as other:
        monkeypatch.setattr(netns_module, "INIT_NETNS", netns_module.netns_path(node))
        run_in(other, ["sysctl", "-qw", "net.ipv4.ip_forward=0"])
        inode = netns_module.netns_path(other).stat().st_ino
        with NetnsRunner(other) as runner, monkeypatch.context() as hidden:
            runner.call(lambda: None)  # in the namespace before its name is hidden
            hidden.setattr(netns_module, "NETNS_DIR", nameless)

            def look() -> list[str]:
                found = discover.left_behind([SimpleNamespace(name="nftables")],
                                             {"netlink": {"state_dir": state}})
                return [w.split(" holds ")[0] for w in found]

            def take() -> None:
                with NetlinkBackend(None, state_dir=state) as backend:
                    converge(backend, State(owned=[Sysctl("net.ipv4.ip_forward", 1)]))

            assert runner.call(look) == []
            runner.call(take)
            assert (state / "host" / f"unnamed-{inode}" / "sysctl.json").exists()
            assert runner.call(look) == ["netlink"]
        assert run_in(other, ["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip() == "1"


def test_flannel_s_file_dropped_is_named_by_the_node_look_with_its_destroy(
        tmp_path: Path) -> None:
    # The agent's $K3SNET_FLANNEL_CONF names the node's net-conf.json: once flannel is no
    # longer in use, the look through the node backends reads that file too (a file
    # read, no API server). Before, nothing looked through a flannel file not in use.
    conf = tmp_path / "flannel" / "net-conf.json"
    conf.parent.mkdir()
    original = '{\n  "Network": "10.42.0.0/16",\n  "Backend": {"Type": "vxlan"}\n}\n'
    conf.write_text(original)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_PATH.read_text() + "cni:\n  flannel: {backend: {type: host-gw}}\n")
    with SeedLab.create() as lab:
        applied = _run("apply", "-f", str(spec), "--backend", "netlink", "--backend",
                       "nftables", "--backend", "flannel", "--allow-disruptive", "--netns",
                       lab.node, lab=lab, lock_dir=tmp_path, K3SNET_FLANNEL_CONF=str(conf))
        assert applied.returncode == 0, applied.stderr
        assert "host-gw" in conf.read_text()
        planned = _run("plan", "-f", str(spec), "--backend", "netlink", "--backend",
                       "nftables", "--netns", lab.node, lab=lab, lock_dir=tmp_path,
                       K3SNET_FLANNEL_CONF=str(conf))
        (line,) = [line for line in planned.stdout.splitlines()
                   if line.startswith("!! warning: flannel holds")]
        assert f"flannel holds 1 of k3snet's objects in {conf}, and no backend" in line
        command = _command(planned.stdout, "flannel")
        assert command == ["destroy", "--backend", "flannel", "--backend-opt",
                           f"flannel.path={conf}"]
        assert "host-gw" in conf.read_text()  # said, not removed
        gone = _run(*command, "--auto-approve", "--allow-disruptive", lab=lab,
                    lock_dir=tmp_path)
        assert gone.returncode == 0, gone.stderr
        assert conf.read_text() == original
        again = _run("plan", "-f", str(spec), "--backend", "netlink", "--backend",
                     "nftables", "--netns", lab.node, lab=lab, lock_dir=tmp_path,
                     K3SNET_FLANNEL_CONF=str(conf))
        assert "flannel holds" not in again.stdout, again.stdout
