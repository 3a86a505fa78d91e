"""Rendered persistence files loaded the way a node loads them at boot (issue 8).

Each test loads ``k3snet render``'s output into a fresh namespace holding foreign
state, as the boot-time tool the docs name would, and checks the kernel's own view
(``nft -j list ruleset``, ``iptables-save``): the foreign state is unchanged, and
``k3snet plan`` with the same spec finds nothing to do.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from k3snet.cli import main
from k3snet.lab.netns import run_in, temporary_netns

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("require_root")]

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
FOREIGN_NFT = """table inet kube-proxy {
\tchain nat-postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tip saddr 10.42.0.0/16 masquerade
\t}
}
"""


def _tables(ns: str) -> list[tuple[str, str]]:
    listing = json.loads(run_in(ns, ["nft", "-j", "list", "tables"]).stdout)["nftables"]
    return sorted((item["table"]["family"], item["table"]["name"])
                  for item in listing if "table" in item)


def _table(ns: str, family: str, name: str) -> str:
    return run_in(ns, ["nft", "-j", "list", "table", family, name]).stdout


def test_rendered_nftables_file_holds_the_table_and_family_the_spec_gives_the_backend(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SEED.read_text().replace(
        "kind: EgressSpec\n",
        "kind: EgressSpec\nbackends:\n  nftables: {table: egress, family: split}\n"))
    assert main(["render", "nftables", "-f", str(spec), "-o", str(tmp_path)]) == 0
    conf = (tmp_path / "k3snet.nft").read_text()
    with temporary_netns("rboot") as ns:
        run_in(ns, ["nft", "-f", "-"], input_text=FOREIGN_NFT)
        foreign = _table(ns, "inet", "kube-proxy")
        for _ in range(2):  # at boot, then a reload: replaced, not duplicated
            run_in(ns, ["nft", "-f", "-"], input_text=conf)
        assert _tables(ns) == [("inet", "kube-proxy"), ("ip", "egress"), ("ip6", "egress")]
        assert _table(ns, "inet", "kube-proxy") == foreign
        capsys.readouterr()
        assert main(["plan", "-f", str(spec), "--backend", "nftables", "--netns", ns,
                     "--no-facts"]) == 0, capsys.readouterr().out


FOREIGN_IPTABLES = """*nat
:KUBE-POSTROUTING - [0:0]
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A POSTROUTING -s 10.42.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE --random-fully
-A KUBE-POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE
COMMIT
*filter
:FLANNEL-FWD - [0:0]
-A FORWARD -j FLANNEL-FWD
-A FLANNEL-FWD -s 10.42.0.0/16 -j ACCEPT
COMMIT
"""


def _foreign_lines(ns: str, save: str) -> list[str]:
    return [line for line in run_in(ns, [save]).stdout.splitlines()
            if not line.startswith("#") and "K3SNET" not in line]


def test_rendered_iptables_files_loaded_as_they_say_keep_foreign_rules_and_meet_the_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", "iptables", "-f", str(SEED), "-o", str(tmp_path)]) == 0
    names = {path.name for path in tmp_path.iterdir()}
    # netfilter-persistent loads rules.v4/rules.v6 without --noflush: never those names
    assert names == {"k3snet.rules.v4", "k3snet.rules.v6"}
    with temporary_netns("rboot") as ns:
        for tool in ("iptables", "ip6tables"):
            run_in(ns, [f"{tool}-restore", "--noflush"],
                   input_text=FOREIGN_IPTABLES.replace("10.42.0.0/16", "fd42:42::/56")
                   .replace("224.0.0.0/4", "ff00::/8") if tool == "ip6tables"
                   else FOREIGN_IPTABLES)
        before = {save: _foreign_lines(ns, save) for save in ("iptables-save", "ip6tables-save")}
        for name in sorted(names):
            text = (tmp_path / name).read_text()
            # The command the file's own header gives, with the file where it says.
            command = text.split("`", 2)[1].split()
            assert command[-1] == f"/etc/k3snet/{name}"
            run_in(ns, [*command[:-1], str(tmp_path / name)])
        after = {save: _foreign_lines(ns, save) for save in ("iptables-save", "ip6tables-save")}
        assert after == before
        assert "K3SNET-POSTROUTING" in run_in(ns, ["ip6tables-save"]).stdout
        capsys.readouterr()
        assert main(["plan", "-f", str(SEED), "--backend", "iptables", "--netns", ns,
                     "--no-facts"]) == 0, capsys.readouterr().out


def test_rendered_networkd_routes_go_in_a_drop_in_of_the_file_that_configures_the_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # networkd applies only the first .network file matching a link: on a node whose
    # eth0 netplan configures (10-netplan-eth0.network), 90-k3snet-eth0.network is
    # ignored and the routes never come back.
    assert main(["render", "networkd", "-f", str(SEED), "-o", str(tmp_path),
                 "--network-file", "eth0=10-netplan-eth0.network"]) == 0
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["10-netplan-eth0.network.d/90-k3snet-routes.conf"]
    text = (tmp_path / written[0]).read_text()
    assert "[Match]" not in text
    assert text.count("[Route]") == 2
    assert "Protocol=211" in text
    capsys.readouterr()


def test_a_network_file_option_without_its_device_is_a_usage_error(
    capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["render", "networkd", "-f", str(SEED), "--network-file", "10-eth0.network"])
    assert exit_info.value.code == 64
    assert "expected DEV=FILE" in capsys.readouterr().err


def test_a_network_file_for_a_device_no_route_uses_is_said_not_silently_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `--network-file eht0=10-netplan-eth0.network` (a typo) left eth0's routes in
    # 90-k3snet-eth0.network, which networkd ignores, and said nothing.
    assert main(["render", "networkd", "-f", str(SEED), "-o", str(tmp_path),
                 "--network-file", "eht0=10-netplan-eth0.network"]) == 0
    err = capsys.readouterr().err
    assert ("k3snet: warning: --network-file eht0=10-netplan-eth0.network: no route of the "
            "spec goes through eht0 (its devices: eth0); ignored") in err
    twice = tmp_path / "twice"
    assert main(["render", "networkd", "-f", str(SEED), "-o", str(twice),
                 "--network-file", "eth0=a.network", "--network-file", "eth0=b.network"]) == 0
    assert "--network-file eth0= given twice; the last, b.network, is used" in (
        capsys.readouterr().err)
    assert [p.relative_to(twice).as_posix() for p in twice.rglob("*.conf")] == [
        "b.network.d/90-k3snet-routes.conf"]
    assert main(["render", "networkd", "-f", str(SEED),
                 "--network-file", "eth0=10-netplan-eth0.network"]) == 0
    assert capsys.readouterr().err == ""  # the device is the routes': nothing to say


def test_ifupdown_up_lines_run_in_the_order_the_file_gives_restore_owned_routes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", "ifupdown", "-f", str(SEED), "-o", str(tmp_path)]) == 0
    text = (tmp_path / "k3snet-routes").read_text()
    assert "at the END of /etc/network/interfaces" in text
    ups = [line.strip().removeprefix("up ") for line in text.splitlines()
           if line.strip().startswith("up ")]
    assert len(ups) == 2
    with temporary_netns("rboot") as ns:
        run_in(ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "p0"])
        for device in ("eth0", "p0"):
            run_in(ns, ["ip", "link", "set", device, "up"])
        # Sourced before the interface's own stanza (interfaces.d/ on Debian), the
        # gateway is not reachable yet: why the file says to source it at the end.
        early = run_in(ns, ["sh", "-c", ups[0]], check=False)
        assert early.returncode != 0
        assert "invalid gateway" in early.stderr
        # The interface's own stanza, then this file's, as ifupdown runs them (sh -c).
        for address in ("192.168.1.10/24", "fd01:1::10/64"):
            run_in(ns, ["ip", "address", "add", address, "dev", "eth0", "nodad"])
        for line in ups:
            run_in(ns, ["sh", "-c", line])
        routes = json.loads(run_in(ns, ["ip", "-j", "route", "show", "proto", "211"]).stdout)
        routes += json.loads(run_in(ns, ["ip", "-j", "-6", "route", "show", "proto", "211"]
                                    ).stdout)
        assert sorted((r["dst"], r["gateway"]) for r in routes) == [
            ("192.168.2.0/24", "192.168.1.1"), ("fd01:2::/64", "fd01:1::1")]
        capsys.readouterr()
        assert main(["plan", "-f", str(SEED), "--backend", "netlink:route", "--netns", ns]
                    ) == 0, capsys.readouterr().out


def _documented_unit(command: str) -> str:
    """The systemd unit of docs/cli.md whose ExecStart runs ``command``."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    units = [block.split("```", 1)[0] for block in docs.split("```ini\n")[1:]]
    found = [unit for unit in units if f"ExecStart=/usr/sbin/{command} " in unit]
    assert len(found) == 1, f"docs/cli.md has {len(found)} units running {command}"
    return found[0]


def _after(unit: str) -> set[str]:
    return {name for line in unit.splitlines() if line.startswith("After=")
            for name in line.removeprefix("After=").split()}


def test_the_documented_boot_unit_runs_the_command_each_iptables_file_gives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unit = _documented_unit("iptables-restore")
    starts = [line.removeprefix("ExecStart=") for line in unit.splitlines()
              if line.startswith("ExecStart=")]
    assert main(["render", "iptables", "-f", str(SEED), "-o", str(tmp_path)]) == 0
    capsys.readouterr()
    given = [(tmp_path / name).read_text().split("`", 2)[1]
             for name in ("k3snet.rules.v4", "k3snet.rules.v6")]
    assert starts == [f"/usr/sbin/{command}" for command in given]


# What a node's own firewall service runs at boot, each of which deletes the chains
# k3snet's files loaded before it: netfilter-persistent and RHEL's iptables.service
# restore without --noflush (every table the file names is flushed, its other chains
# deleted), Debian's nftables.conf starts with `flush ruleset` (iptables-nft's tables
# go with it).
WHOLE_RULESET_LOADERS = {
    "netfilter-persistent.service": ["iptables-restore"],
    "iptables.service": ["iptables-restore"],
    "ip6tables.service": ["ip6tables-restore"],
    "nftables.service": ["nft", "-f", "-"],
    # firewalld flushes iptables' tables when it starts (firewalld issues 742, 863)
    "firewalld.service": ["iptables-restore"],
}
WHOLE_RULESETS = {
    "iptables-restore": "*nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n"
                        "*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n",
    "ip6tables-restore": "*nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n"
                         "*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n",
    "nft": "flush ruleset\n",
}


def test_the_documented_boot_unit_runs_after_every_loader_that_would_delete_its_chains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The unit and netfilter-persistent.service (or nftables.service) both run early,
    # before network-pre.target, with no order between them: when the node's own
    # service came second, k3snet's chains were gone after the boot, at random.
    after = _after(_documented_unit("iptables-restore"))
    assert main(["render", "iptables", "-f", str(SEED), "-o", str(tmp_path)]) == 0
    capsys.readouterr()
    for service, loader in WHOLE_RULESET_LOADERS.items():
        with temporary_netns("rboot") as ns:
            for family, name in ((4, "k3snet.rules.v4"), (6, "k3snet.rules.v6")):
                restore = "iptables-restore" if family == 4 else "ip6tables-restore"
                run_in(ns, [restore, "--noflush", str(tmp_path / name)])
            save = "ip6tables-save" if loader[0] == "ip6tables-restore" else "iptables-save"
            assert "K3SNET-POSTROUTING" in run_in(ns, [save]).stdout
            run_in(ns, loader, input_text=WHOLE_RULESETS[loader[0]])
            # Run after k3snet's unit, the service deletes k3snet's chains.
            assert "K3SNET" not in run_in(ns, [save]).stdout, service
        assert service in after, f"the unit may run before {service}, which deletes its chains"


def test_the_documented_nftables_unit_loads_the_file_after_nftables_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The docs said to include the file in the one nftables.service loads: on RHEL and
    # its kin, firewalld (the default firewall) conflicts with nftables.service, so the
    # table never came back at boot, or firewalld was stopped. A unit of its own runs
    # the file after nftables.service, whose Debian nftables.conf flushes the ruleset.
    unit = _documented_unit("nft")
    (start,) = [line.removeprefix("ExecStart=") for line in unit.splitlines()
                if line.startswith("ExecStart=")]
    assert start == "/usr/sbin/nft -f /etc/k3snet/k3snet.nft"
    assert main(["render", "nftables", "-f", str(SEED), "-o", str(tmp_path)]) == 0
    capsys.readouterr()
    argv = [word.replace("/etc/k3snet", str(tmp_path)) for word in start.split()]
    with temporary_netns("rboot") as ns:
        run_in(ns, argv)
        assert ("inet", "k3snet") in _tables(ns)
        assert main(["plan", "-f", str(SEED), "--backend", "nftables", "--netns", ns]) == 0
        # nftables.service run after it deletes the table: the unit runs after that one
        run_in(ns, WHOLE_RULESET_LOADERS["nftables.service"],
               input_text=WHOLE_RULESETS["nft"])
        assert ("inet", "k3snet") not in _tables(ns)
    capsys.readouterr()
    assert {"nftables.service", "firewalld.service"} <= _after(unit)
    assert "Conflicts=shutdown.target" in unit.splitlines()
    assert "WantedBy=multi-user.target" in unit.splitlines()


@pytest.mark.parametrize("mode", ["legacy", "nft"])
def test_rendered_iptables_files_name_the_flavour_the_spec_gives_the_backend(
    mode: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The header said `iptables-restore` whatever the spec's `backends.iptables.mode`:
    # on a node where that is iptables-nft and K3s runs legacy, the admin following it
    # loaded the chains where the backend (mode: legacy) never reads, and it added its
    # own copy in the other flavour.
    spec = tmp_path / "spec.yaml"
    spec.write_text(SEED.read_text().replace(
        "kind: EgressSpec\n", f"kind: EgressSpec\nbackends:\n  iptables: {{mode: {mode}}}\n"))
    out = tmp_path / "out"
    assert main(["render", "iptables", "-f", str(spec), "-o", str(out)]) == 0
    with temporary_netns("rboot") as ns:
        commands = []
        for name in ("k3snet.rules.v4", "k3snet.rules.v6"):
            command = (out / name).read_text().split("`", 2)[1].split()
            run_in(ns, [*command[:-1], str(out / name)])
            commands.append(command[0])
        capsys.readouterr()
        assert main(["plan", "-f", str(spec), "--backend", "iptables", "--netns", ns,
                     "--no-facts"]) == 0, capsys.readouterr().out
    # Not the host's `iptables-restore`, whichever flavour that is here.
    assert commands == [f"iptables-{mode}-restore", f"ip6tables-{mode}-restore"]


def test_a_catch_all_reject_loaded_before_the_iptables_file_makes_the_plan_report_a_conflict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # RHEL's iptables.service loads a final `-A FORWARD -j REJECT` before the unit (it
    # runs After= it): the file's appended jump lands behind it, which the backend
    # would not have done; docs/cli.md says `plan` reports it rather than hiding it.
    assert main(["render", "iptables", "-f", str(SEED), "-o", str(tmp_path)]) == 0
    with temporary_netns("rboot") as ns:
        run_in(ns, ["iptables-restore"], input_text=(
            "*filter\n:FORWARD ACCEPT [0:0]\n"
            "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
            "-A FORWARD -j REJECT --reject-with icmp-host-prohibited\nCOMMIT\n"))
        run_in(ns, ["iptables-restore", "--noflush", str(tmp_path / "k3snet.rules.v4")])
        forward = run_in(ns, ["iptables", "-S", "FORWARD"]).stdout.splitlines()
        assert forward[-1] == "-A FORWARD -m comment --comment k3snet -j K3SNET-FORWARD"
        capsys.readouterr()
        assert main(["plan", "-f", str(SEED), "--backend", "iptables:forward", "--netns", ns,
                     "--no-facts"]) == 4
        out = capsys.readouterr().out
        assert "conflicts with foreign: reject by iptables IPv4 filter: -A FORWARD -j REJECT" in out


SPLIT = ["--backend", "netlink", "--backend", "nftables:nat", "--backend", "iptables:forward"]


def test_rendered_files_hold_only_the_kinds_the_backend_flags_give_each_backend(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # With NAT in nftables and forward in iptables, each file held both kinds: loaded
    # together, the iptables NAT chains and the nftables forward rules belonged to no
    # backend in use, never updated nor removed (and each NAT rule ran twice).
    nft_out, ipt_out = tmp_path / "nft", tmp_path / "ipt"
    assert main(["render", "nftables", "-f", str(SEED), "-o", str(nft_out), *SPLIT]) == 0
    assert main(["render", "iptables", "-f", str(SEED), "-o", str(ipt_out), *SPLIT]) == 0
    with temporary_netns("rboot") as ns:
        run_in(ns, ["nft", "-f", str(nft_out / "k3snet.nft")])
        for name, tool in (("k3snet.rules.v4", "iptables"), ("k3snet.rules.v6", "ip6tables")):
            run_in(ns, [f"{tool}-restore", "--noflush", str(ipt_out / name)])
        ruleset = json.loads(run_in(ns, ["nft", "-j", "list", "table", "inet", "k3snet"]).stdout)
        chains = {item["rule"]["chain"] for item in ruleset["nftables"] if "rule" in item}
        assert chains == {"postrouting"}, ruleset
        for save in ("iptables-save", "ip6tables-save"):
            saved = run_in(ns, [save]).stdout
            assert "K3SNET-FORWARD" in saved, saved
            assert "K3SNET-POSTROUTING" not in saved, saved
        capsys.readouterr()
        assert main(["plan", "-f", str(SEED), *SPLIT, "--netns", ns, "--no-facts"]) == 2
        # only the netlink part (routes, sysctls) is left to do
        planned = capsys.readouterr().out
        assert "masquerade" not in planned, planned
        assert "forward accept" not in planned, planned
        assert "+ route 192.168.2.0/24" in planned, planned


def test_render_refuses_backend_flags_that_leave_out_the_backend_it_renders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", "nftables", "-f", str(SEED), "--backend", "iptables"]) == 64
    assert "the file is for the nftables backend" in capsys.readouterr().err
    assert main(["render", "manifests", "-f", str(SEED), "--backend", "nftables"]) == 64
    assert "the spec's backends" in capsys.readouterr().err
    # A misspelt kind rendered a file holding nothing: loaded, it deleted k3snet's table.
    for what, entry, said in (("nftables", "nftables:forwrad", "not 'forwrad'"),
                              ("sysctl", "netlink:route,sysctls", "not 'sysctls'")):
        assert main(["render", what, "-f", str(SEED), "--backend", entry]) == 64
        assert said in capsys.readouterr().err


@pytest.mark.parametrize(("kind", "name", "mark"), [
    ("ifupdown", "k3snet-routes", "proto 200"),
    ("networkd", "90-k3snet-eth0.network", "Protocol=200"),
    ("networkmanager", "90-k3snet-routes", "proto 200"),
])  # netplan cannot express a route protocol (docs/cli.md)
def test_the_boot_files_give_routes_the_protocol_the_spec_gives_netlink(
        kind: str, name: str, mark: str, tmp_path: Path) -> None:
    """With ``backends: {netlink: {protocol: 200}}`` the backend owns protocol 200's routes:
    a boot file writing them with 211 brought them up foreign after a reboot (a conflict
    at each of their slots), as an nftables file of another table would."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(SEED.read_text().split("backends:")[0]
                    + "backends:\n  netlink: {protocol: 200}\n")
    out = tmp_path / "out"
    assert main(["render", kind, "-f", str(spec), "-o", str(out)]) == 0
    text = (out / name).read_text()
    assert mark in text
    assert "211" not in text


def test_the_sysctl_file_loaded_with_sysctl_p_gives_the_values_forwarding_would_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Writing ``ip_forward`` (``conf.all.forwarding`` for IPv6) sets ``forwarding`` of
    every interface, and IPv4's turns ``all.accept_redirects`` to its opposite: the file
    sorted ``net.ipv4.conf.eth0.forwarding = 0`` before ``net.ipv4.ip_forward = 1``,
    which then undid it at every boot (``plan`` found it at 1)."""
    spec = tmp_path / "spec.yaml"
    wanted = {"net.ipv4.conf.eth0.forwarding": "0", "net.ipv6.conf.eth0.forwarding": "0",
              "net.ipv4.conf.all.accept_redirects": "1"}
    spec.write_text(SEED.read_text().split("masquerade:")[0] + "sysctls:\n" + "".join(
        f"  {name}: {value}\n" for name, value in wanted.items()))
    assert main(["render", "sysctl", "-f", str(spec), "-o", str(tmp_path)]) == 0
    with temporary_netns("rv3r") as ns:
        run_in(ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "p0"])
        run_in(ns, ["sysctl", "-p", str(tmp_path / "90-k3snet.conf")])  # as the file says
        loaded = {name: run_in(ns, ["sysctl", "-n", name]).stdout.strip()
                  for name in [*wanted, "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"]}
        assert loaded == {**wanted, "net.ipv4.ip_forward": "1",
                          "net.ipv6.conf.all.forwarding": "1"}
        capsys.readouterr()
        # Watched, the backend reads them as foreign values that meet the spec (unwatched,
        # it plans to take them over, writing the value they hold).
        assert main(["plan", "-f", str(spec), "--backend", "netlink:sysctl", "--netns", ns,
                     "--no-facts", "--backend-opt", f"netlink.state_dir={tmp_path / 'state'}",
                     "--backend-opt", f"netlink.watch_sysctls={json.dumps(list(wanted))}",
                     ]) == 0, capsys.readouterr().out


def test_the_sysctl_file_says_when_ipv6_forwarding_at_boot_would_ignore_advertisements(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The netlink backend refuses to turn IPv6 forwarding on while that drops a default
    route learned from router advertisements (and tells to `sysctl -w` accept_ra 2). The
    boot file turns it on before any such route exists: nothing checks it there, and an
    interface appearing after it has forwarding 1 and accept_ra 1, which ignores the
    advertisements; the file and the command said nothing of it."""
    def loaded(spec: Path) -> tuple[str, str, dict[str, str]]:
        out = tmp_path / spec.stem
        assert main(["render", "sysctl", "-f", str(spec), "-o", str(out)]) == 0
        err = capsys.readouterr().err
        text = (out / "90-k3snet.conf").read_text()
        with temporary_netns("rv3r") as ns:
            run_in(ns, ["sysctl", "-p", str(out / "90-k3snet.conf")], check=False)
            # eth0 appears after systemd-sysctl ran, which applies its lines then (udev)
            run_in(ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "p0"])
            run_in(ns, ["sysctl", "-p", str(out / "90-k3snet.conf")])
            values = {name: run_in(ns, ["sysctl", "-n", f"net.ipv6.conf.eth0.{name}"]
                                   ).stdout.strip() for name in ("forwarding", "accept_ra")}
        return err, text, values

    err, text, values = loaded(SEED)
    assert values == {"forwarding": "1", "accept_ra": "1"}  # advertisements ignored
    assert "warning: the file turns IPv6 forwarding on" in err, err
    assert "net.ipv6.conf.IF.accept_ra: 2" in text
    assert text.index("# IPv6 forwarding on") < text.index("net.ipv6.conf.all.forwarding = 1")
    spec = tmp_path / "accepting.yaml"
    spec.write_text(SEED.read_text() + "sysctls:\n  net.ipv6.conf.eth0.accept_ra: 2\n")
    err, text, values = loaded(spec)
    assert values == {"forwarding": "1", "accept_ra": "2"}
    assert "warning" not in err, err
    assert "# IPv6 forwarding on" not in text


def test_a_backend_given_its_kinds_in_two_flags_gets_a_file_of_all_of_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # plan and apply take `--backend nftables:nat --backend nftables:forward` as
    # `nftables:nat,forward`; render took the first flag only: the file held no forward
    # rule, and loaded, it deleted those the backend had applied.
    flags = ["--backend", "nftables:nat", "--backend", "nftables:forward"]
    assert main(["render", "nftables", "-f", str(SEED), "-o", str(tmp_path), *flags]) == 0
    with temporary_netns("rv3r") as ns:
        run_in(ns, ["nft", "-f", str(tmp_path / "k3snet.nft")])
        listed = json.loads(_table(ns, "inet", "k3snet"))["nftables"]
        assert sorted({item["rule"]["chain"] for item in listed if "rule" in item}) == [
            "forward", "postrouting"]
        capsys.readouterr()
        assert main(["plan", "-f", str(SEED), *flags, "--netns", ns, "--no-facts"]) == 0, (
            capsys.readouterr().out)


@pytest.mark.parametrize("kind", ["ifupdown", "networkd", "networkmanager"])
@pytest.mark.parametrize("protocol", ['"static"', "true", "0", "4", "16"])
def test_a_route_protocol_the_netlink_backend_refuses_is_refused_by_the_boot_files_too(
        kind: str, protocol: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """0..4 are the kernel's and the administrator's, 16 is dhcp's (rt_protos): the backend
    refuses to own them, and a value that is no number at all. The files were written
    anyway, with that protocol (a boot that brought the routes up as static or DHCP
    ones) or, for a name or ``true``, silently with 211."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(SEED.read_text() + f"backends:\n  netlink: {{protocol: {protocol}}}\n")
    out = tmp_path / "out"
    assert main(["render", kind, "-f", str(spec), "-o", str(out)]) == 1
    assert "route protocol" in capsys.readouterr().err
    assert not out.exists()


def test_backend_options_given_as_flags_shape_the_file_as_they_shape_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `plan --backend-opt nftables.table=egress` owns table ip/ip6 egress; render took
    # only the spec's options: the rules its file loaded (inet k3snet) were another
    # program's to that backend (NAT met by them, never updated nor removed; forward
    # accepts added a second time in its own table).
    opts = ["--backend-opt", "nftables.table=egress", "--backend-opt", "nftables.family=split"]
    assert main(["render", "nftables", "-f", str(SEED), "-o", str(tmp_path), *opts,
                 "--backend-opt", "netlink.protocol=200"]) == 0  # another backend's: unused
    with temporary_netns("rv3r") as ns:
        run_in(ns, ["nft", "-f", str(tmp_path / "k3snet.nft")])
        assert _tables(ns) == [("ip", "egress"), ("ip6", "egress")]
        capsys.readouterr()
        assert main(["plan", "-f", str(SEED), "--backend", "nftables", *opts, "--netns", ns,
                     "--no-facts"]) == 0, capsys.readouterr().out
    ipt = tmp_path / "ipt"
    assert main(["render", "iptables", "-f", str(SEED), "-o", str(ipt),
                 "--backend-opt", "iptables.mode=legacy"]) == 0
    assert "`iptables-legacy-restore --noflush" in (ipt / "k3snet.rules.v4").read_text()
    routes = tmp_path / "routes"
    assert main(["render", "ifupdown", "-f", str(SEED), "-o", str(routes),
                 "--backend-opt", "netlink.protocol=200"]) == 0
    assert "proto 200" in (routes / "k3snet-routes").read_text()
    capsys.readouterr()
    # misspelt, the file was the spec's: refused as plan refuses it
    assert main(["render", "nftables", "-f", str(SEED), "--backend-opt", "nftables.tabel=x"]
                ) == 1
    assert "backend 'nftables' has no option 'tabel'" in capsys.readouterr().err
    assert main(["render", "manifests", "-f", str(SEED), *opts]) == 64
    assert "the manifests' agent uses the spec's backends" in capsys.readouterr().err


RICH = """apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
cluster:
  podCIDRs: [10.42.0.0/16, fd42:42::/56]
  serviceCIDRs: [10.43.0.0/16, fd43:43::/112]
destinations:
  - {cidr: 192.168.2.0/24, gateway: 192.168.1.1, device: eth0}
  - {cidr: 10.99.0.0/16, device: a@b+c.d-e_f}
  - {cidr: fd01:2::/64, gateway: fd01:1::1, device: eth0}
  - {cidr: fd09:9::/48, gateway: "fe80::1", device: a@b+c.d-e_f}
masquerade:
  mode: all
  nonMasqueradeCIDRs: [192.168.0.0/16, fd00::/8]
  randomFully: true
  snatAddresses: [192.168.1.10]
  outInterface: eth0
forward: {accept: true, inInterface: cni0}
"""


def _node(ns: str) -> None:
    for index, device in enumerate(("eth0", "a@b+c.d-e_f", "cni0")):
        run_in(ns, ["ip", "link", "add", device, "type", "veth", "peer", "name", f"p{index}"])
        run_in(ns, ["ip", "link", "set", device, "up"])


def _ruleset(ns: str) -> list[dict[str, object]]:
    """``nft -j list ruleset`` without handles, and without the backend's empty marker
    chain (it dates the rules it adds: the file adds all of them at once)."""
    listed: list[dict[str, object]] = []
    for item in json.loads(run_in(ns, ["nft", "-j", "list", "ruleset"]).stdout)["nftables"]:
        (kind, body), = item.items()
        if kind != "metainfo" and body.get("name") != "handle_marker":
            listed.append({kind: {k: v for k, v in body.items() if k != "handle"}})
    return listed


@pytest.mark.parametrize("options", [
    "nftables: {}", "nftables: {family: split, table: egress}",
    "iptables: {mode: nft}", "iptables: {mode: legacy}"])
def test_a_loaded_boot_file_is_exactly_what_the_backend_applies_for_the_same_spec(
    options: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both families, SNAT, exclusions, random-fully, in and out interfaces of every
    character a name may hold: the kernel's listing after the file is the one after
    ``apply``, rule for rule, comments (the tags) included."""
    backend = options.partition(":")[0]
    spec = tmp_path / "spec.yaml"
    spec.write_text(RICH + f"backends:\n  {options}\n")
    out = tmp_path / "out"
    assert main(["render", backend, "-f", str(spec), "-o", str(out)]) == 0
    with temporary_netns("rv3r") as applied, temporary_netns("rv3r") as loaded:
        _node(applied)
        _node(loaded)
        assert main(["apply", "-f", str(spec), "--backend", backend, "--netns", applied,
                     "--no-facts", "--auto-approve"]) == 0
        if backend == "nftables":
            run_in(loaded, ["nft", "-f", str(out / "k3snet.nft")])
            assert _ruleset(loaded) == _ruleset(applied)
        else:
            for name in ("k3snet.rules.v4", "k3snet.rules.v6"):
                command = (out / name).read_text().split("`", 2)[1].split()
                run_in(loaded, [*command[:-1], str(out / name)])
                save = command[0].replace("-restore", "-save")
                listings = [[line for line in run_in(ns, [save]).stdout.splitlines()
                             if not line.startswith("#")] for ns in (applied, loaded)]
                assert listings[1] == listings[0]
                assert any("K3SNET-M-" in line for line in listings[1])  # not empty
        capsys.readouterr()
        assert main(["plan", "-f", str(spec), "--backend", backend, "--netns", loaded,
                     "--no-facts"]) == 0, capsys.readouterr().out


def test_render_networkd_again_removes_its_earlier_files_this_render_does_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Told that Flatcar's zz-default.network (Name=*) puts a drop-in's routes on every
    # link, the user renders again naming a file of eth0's own: the first drop-in stayed
    # beside the new one, and networkd still put the routes on every link at boot.
    (tmp_path / "zz-default.network").write_text("[Match]\nName=*\n\n[Network]\nDHCP=yes\n")
    assert main(["render", "networkd", "-f", str(SEED), "-o", str(tmp_path),
                 "--network-file", "eth0=zz-default.network"]) == 0
    earlier = tmp_path / "zz-default.network.d" / "90-k3snet-routes.conf"
    assert earlier.is_file()
    # The warning's way out: a copy of it for eth0 alone, sorting first.
    (tmp_path / "10-eth0.network").write_text("[Match]\nName=eth0\n\n[Network]\nDHCP=yes\n")
    # A device's own file of an earlier spec (its routes since moved to another device)
    # and files of the admin's named like k3snet's, which stay.
    (tmp_path / "90-k3snet-eth1.network").write_text(
        "# Generated by k3snet: routes it manages.\n\n[Match]\nName=eth1\n\n[Route]\n"
        "Destination=10.9.0.0/24\nProtocol=211\n")
    (tmp_path / "90-k3snet-eth2.network").write_text("[Match]\nName=eth2\n")
    (tmp_path / "other.network.d").mkdir()
    (tmp_path / "other.network.d" / "90-k3snet-routes.conf").write_text("[Route]\n")
    capsys.readouterr()
    assert main(["render", "networkd", "-f", str(SEED), "-o", str(tmp_path),
                 "--network-file", "eth0=10-eth0.network"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [str(tmp_path / "10-eth0.network.d" / "90-k3snet-routes.conf")]
    assert not earlier.exists()
    assert not (tmp_path / "90-k3snet-eth1.network").exists()
    assert f"k3snet: removed {earlier} (an earlier render's" in err, err
    assert f"k3snet: removed {tmp_path / '90-k3snet-eth1.network'}" in err, err
    assert (tmp_path / "90-k3snet-eth2.network").is_file()  # not k3snet's text
    assert (tmp_path / "other.network.d" / "90-k3snet-routes.conf").is_file()
    # A file of an earlier render given as --network-file is the drop-in's parent: kept.
    assert main(["render", "networkd", "-f", str(SEED), "-o", str(tmp_path / "own")]) == 0
    assert main(["render", "networkd", "-f", str(SEED), "-o", str(tmp_path / "own"),
                 "--network-file", "eth0=90-k3snet-eth0.network"]) == 0
    assert (tmp_path / "own" / "90-k3snet-eth0.network").is_file()
    assert (tmp_path / "own" / "90-k3snet-eth0.network.d" / "90-k3snet-routes.conf").is_file()
    # Printed, nothing is read nor removed.
    (tmp_path / "90-k3snet-eth1.network").write_text("# Generated by k3snet: x\n")
    assert main(["render", "networkd", "-f", str(SEED),
                 "--network-file", "eth0=10-eth0.network"]) == 0
    assert (tmp_path / "90-k3snet-eth1.network").is_file()
    capsys.readouterr()


DEBIAN_INTERFACES = """\
# This file describes the network interfaces available on your system
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

allow-hotplug eth0
iface eth0 inet static
    address 192.168.1.10/24
"""


@pytest.mark.parametrize(("layout", "refused"), [
    ("debian", True),          # interfaces.d sourced on the first line, eth0 below it
    ("cloud", False),          # eth0 in interfaces.d/50-cloud-init, which sorts first
    ("end", False),            # the install note's way: sourced at the end
    ("unsourced", False),      # not read by ifupdown at all (a staging directory)
])
def test_render_ifupdown_into_a_place_read_before_the_devices_own_stanza_is_refused(
        layout: str, refused: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # ifupdown runs an interface's stanzas in the order it reads them and stops at the
    # first that fails (main.c, do_interface): k3snet's `up ip route add ... via GW` ran
    # before eth0 had its address, failed, and eth0's own stanza never ran: the node came
    # up without eth0's address. Debian sources interfaces.d/* on its first line.
    import k3snet.cli  # noqa: PLC0415 - the test points the CLI's interfaces file here

    etc = tmp_path / "network"
    (etc / "interfaces.d").mkdir(parents=True)
    interfaces = etc / "interfaces"
    main_file = DEBIAN_INTERFACES.replace("/etc/network", str(etc))
    out = etc / "interfaces.d"
    if layout == "cloud":
        main_file = main_file.split("\nallow-hotplug")[0] + "\n"
        (out / "50-cloud-init").write_text(
            "allow-hotplug eth0\niface eth0 inet dhcp\n")
    elif layout == "end":
        main_file = main_file.replace(f"source {etc}/interfaces.d/*\n", "")
        main_file += f"source {etc}/k3snet-routes\n"
        out = etc
    elif layout == "unsourced":
        out = tmp_path / "staging"
    interfaces.write_text(main_file)
    monkeypatch.setattr(k3snet.cli, "IFUPDOWN_INTERFACES", interfaces)
    code = main(["render", "ifupdown", "-f", str(SEED), "-o", str(out)])
    err = capsys.readouterr().err
    if refused:
        assert code == 1, err
        assert f"{interfaces} reads {out / 'k3snet-routes'} (line 2) before eth0's own " \
               "stanza (line 8)" in err, err
        assert not (out / "k3snet-routes").exists()
    else:
        assert code == 0, err
        assert (out / "k3snet-routes").is_file()


@pytest.mark.parametrize(("source", "line"), [
    # ifupdown's get_line: a comment line is skipped whole, its backslash continuing
    # nothing; a line ending with one is joined to the next, read as one line.
    ("# interfaces.d holds the cloud's \\\nsource {etc}/interfaces.d/*\n", 2),
    ("source \\\n{etc}/interfaces.d/*\n", 1),
    ("  source-directory \\\n  interfaces.d\n", 1),
    # config.c takes any first word starting with source-dir (strlmatch) as
    # source-directory, and the rest of the line as one pattern: its first word
    # relative to the file's directory.
    ("source-dirs interfaces.d\n", 1),
    ("source interfaces.d/* /nonexistent/*\n", 1),
])
def test_render_ifupdown_reads_the_source_lines_as_ifupdown_does(
        source: str, line: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Each of these sources interfaces.d before eth0's stanza, which ifupdown then
    # never ran (k3snet's route failing first); the comment's backslash hid the source
    # line after it, a continued source line was not read as one.
    import k3snet.cli  # noqa: PLC0415 - the test points the CLI's interfaces file here

    etc = tmp_path / "network"
    (etc / "interfaces.d").mkdir(parents=True)
    interfaces = etc / "interfaces"
    interfaces.write_text(source.format(etc=etc) + "\nauto lo\niface lo inet loopback\n\n"
                          "allow-hotplug eth0\niface eth0 inet static\n"
                          "    address 192.168.1.10/24\n")
    monkeypatch.setattr(k3snet.cli, "IFUPDOWN_INTERFACES", interfaces)
    out = etc / "interfaces.d"
    code = main(["render", "ifupdown", "-f", str(SEED), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"{interfaces} reads {out / 'k3snet-routes'} (line {line}) before eth0's" in err
    assert not (out / "k3snet-routes").exists()


def test_render_sysctl_says_no_later_glob_over_a_key_its_file_names(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # systemd-sysctl's sysctl.c applies a glob to no key that a file names ("Not setting
    # net/ipv4/conf/all/rp_filter (explicit setting exists)"), whatever the files' order:
    # k3snet's rp_filter stays 0, and render said a later glob's 1 won at boot. A glob
    # over the other name of one of its keys (all.forwarding for ip_forward) does win.
    (tmp_path / "99-cis.conf").write_text(
        "net.ipv4.conf.*.rp_filter = 1\nnet.ipv4.conf.*.forwarding = 0\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SEED.read_text().split("masquerade:")[0]
                    + "sysctls:\n  net.ipv4.conf.all.rp_filter: 0\n")
    assert main(["render", "sysctl", "-f", str(spec), "-o", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "rp_filter" not in err, err
    assert (f"{tmp_path / '99-cis.conf'} (line 2) sets net.ipv4.conf.*.forwarding "
            "(net.ipv4.conf.all.forwarding among them) = 0, read after 90-k3snet.conf: at "
            "boot its value wins over k3snet's 1") in err, err


def test_render_sysctl_says_a_later_file_that_sets_its_keys_otherwise(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # systemd-sysctl applies the files in name order, the last value of a key winning:
    # a hardening image's 99-cis.conf with `net.ipv4.ip_forward = 0` turned forwarding
    # off at every boot after k3snet's file turned it on, and render said nothing of it.
    (tmp_path / "99-cis.conf").write_text(
        "# CIS 3.1.1\nnet.ipv4.ip_forward = 0\n-net/ipv4/conf/all/rp_filter=2\n"
        "net.ipv4.conf.*.send_redirects = 0\n")
    (tmp_path / "10-early.conf").write_text("net.ipv4.ip_forward = 0\n")  # before: fine
    (tmp_path / "99-same.conf").write_text("net.ipv4.ip_forward=1\n")  # the same value
    (tmp_path / "95-alias.conf").write_text("net/ipv4/conf/all/forwarding = 0\n")
    (tmp_path / "99-masked.conf").symlink_to("/dev/null")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SEED.read_text().split("masquerade:")[0]
                    + "sysctls:\n  net.ipv4.conf.all.rp_filter: 0\n")
    assert main(["render", "sysctl", "-f", str(spec), "-o", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert (f"k3snet: warning: {tmp_path / '99-cis.conf'} (line 2) sets net.ipv4.ip_forward "
            "= 0, read after 90-k3snet.conf: at boot its value wins over k3snet's 1") in err
    assert "(line 3) sets net.ipv4.conf.all.rp_filter = 2" in err, err
    assert "10-early.conf" not in err
    assert "99-same.conf" not in err
    assert (f"{tmp_path / '95-alias.conf'} (line 1) sets net.ipv4.conf.all.forwarding = 0, "
            "read after 90-k3snet.conf: at boot its value wins over k3snet's 1") in err, err
    assert err.count("read after 90-k3snet.conf") == 3, err


def test_render_sysctl_says_no_later_file_holding_k3snet_s_ports_in_another_order(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The kernel shows ip_local_reserved_ports sorted and merged: a later file's
    # "30000-32767,1000" is k3snet's "1000,30000-32767", and render said it won at boot.
    # A later file's other port range does win, and is said.
    (tmp_path / "99-ports.conf").write_text(
        "net.ipv4.ip_local_reserved_ports = 30000-32767,1000\n"
        "net.ipv4.ip_local_port_range = 10000\t20000\n"
        "net.ipv4.tcp_rmem = 4096 131072 6291456\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SEED.read_text().split("masquerade:")[0] + (
        "sysctls:\n  net.ipv4.ip_local_reserved_ports: 1000,30000-32767\n"
        "  net.ipv4.ip_local_port_range: 10000 20000\n"
        "  net.ipv4.tcp_rmem: 4096 131072 8388608\n"))
    assert main(["render", "sysctl", "-f", str(spec), "-o", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "ip_local_reserved_ports" not in err, err
    assert "ip_local_port_range" not in err, err
    assert (f"{tmp_path / '99-ports.conf'} (line 3) sets net.ipv4.tcp_rmem = 4096 131072 "
            "6291456, read after 90-k3snet.conf: at boot its value wins over k3snet's "
            "4096 131072 8388608") in err, err


def test_render_sysctl_says_a_later_file_s_name_and_value_printable(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The warning quotes another file's name and value: an escape sequence in either
    # reached the terminal of whoever rendered, a line break in the name forged a line.
    name = "99-x\x1b[2K\nk3snet: ok.conf"
    (tmp_path / name).write_text("net.ipv4.ip_forward = 0\x1b[31m\n")
    assert main(["render", "sysctl", "-f", str(SEED), "-o", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "read after 90-k3snet.conf" in line]
    assert len(said) == 1, err
    assert "99-x\\x1b[2K\\nk3snet: ok.conf (line 1) sets net.ipv4.ip_forward = 0\\x1b[31m" \
        in said[0]
    assert all(line.isprintable() for line in err.splitlines())
