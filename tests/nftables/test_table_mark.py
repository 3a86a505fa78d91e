"""k3snet's table is marked as k3snet's; a table of the configured name that is not is refused.

``--backend-opt nftables.table=edge`` must not make k3snet rewrite or delete an
administrator's ``inet edge``: k3snet writes its table with a comment
(:data:`~k3snet.render.nftables.TABLE_COMMENT`), and a table of its name with
neither that mark nor k3snet's marker chain or tagged rules is another
program's. A table an older k3snet wrote (tagged rules, no mark) is drift whose
repair rebuilds it with the mark. A name other programs' tables have (``filter``,
``nat`` in ``ip``, ``kube-proxy``) is refused as an option already (``k3snet
validate`` says so), and the boot file's ``ExecCondition=`` keeps a unit from
loading it over a table of its name that is not k3snet's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from k3snet.backends.nftables import NftablesBackend
from k3snet.cli import main
from k3snet.errors import BackendError, ModelError
from k3snet.lab.netns import run_in
from k3snet.model import Drift, ForwardRule, MasqueradeRule, State
from k3snet.planner import plan
from k3snet.render.nftables import TABLE_COMMENT, load_condition, render_nftables_conf

WANTED = State(owned=[MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24"),
                      MasqueradeRule("fd42::/64", destination="fd00:b::/64"),
                      ForwardRule("10.42.0.0/16", "192.168.2.0/24")])
ADMIN = """\
table {family} edge {{
\tchain input {{
\t\ttype filter hook input priority filter; policy accept;
\t\ttcp dport 22 accept
\t}}
\tchain forward {{
\t\ttype filter hook forward priority filter; policy accept;
\t\tct state established,related accept
\t}}
}}
"""
MARK = f'\tcomment "{TABLE_COMMENT}"'


def text(ns: str, family: str, name: str = "k3snet") -> str:
    return run_in(ns, ["nft", "list", "table", family, name]).stdout


@pytest.mark.kernel
@pytest.mark.parametrize(("family", "tables"), [("inet", ["inet"]), ("split", ["ip", "ip6"])])
def test_another_programs_table_of_the_configured_name_is_refused(
        ns: str, family: str, tables: list[str]) -> None:
    run_in(ns, ["nft", "-f", "-"], input_text="".join(ADMIN.format(family=t) for t in tables))
    before = {t: text(ns, t, "edge") for t in tables}
    with NftablesBackend(ns, table="edge", family=family,  # type: ignore[arg-type]
                         observe_foreign=False) as backend, pytest.raises(
            BackendError, match=rf"nftables table {tables[0]} edge is not k3snet's: .*"
            r"nftables\.table=NAME"):
        backend.observe()
    assert {t: text(ns, t, "edge") for t in tables} == before


@pytest.mark.kernel
def test_the_cli_refuses_to_plan_into_another_programs_table(
        ns: str, capsys: pytest.CaptureFixture[str]) -> None:
    run_in(ns, ["nft", "-f", "-"], input_text=ADMIN.format(family="inet"))
    before = text(ns, "inet", "edge")
    spec = Path(__file__).resolve().parents[2] / "examples" / "seed.yaml"
    cli = ["-f", str(spec), "--backend", "nftables", "--netns", ns, "--no-facts",
           "--backend-opt", "nftables.table=edge"]
    assert main(["apply", *cli]) != 0
    assert "nftables table inet edge is not k3snet's" in capsys.readouterr().err
    assert text(ns, "inet", "edge") == before


@pytest.mark.kernel
@pytest.mark.parametrize("family", ["inet", "split"])
def test_k3snets_table_carries_its_mark(ns: str, family: str) -> None:
    tables = ["inet"] if family == "inet" else ["ip", "ip6"]
    with NftablesBackend(ns, family=family, observe_foreign=False) as backend:  # type: ignore[arg-type]
        backend.apply(plan(backend.observe(), WANTED))
        assert all(text(ns, t).split("\n")[1] == MARK for t in tables)
        fresh = backend.observe(refresh=True)
        assert fresh.owned == WANTED.owned
        assert backend.drift == ()


@pytest.mark.kernel
def test_a_table_an_older_k3snet_wrote_is_recognized_and_marked(ns: str) -> None:
    older = render_nftables_conf(WANTED).replace(MARK + "\n", "")
    run_in(ns, ["nft", "-f", "-"], input_text=older)
    assert "comment \"k3snet's" not in text(ns, "inet")
    with NftablesBackend(ns, observe_foreign=False) as backend:
        observed = backend.observe()
        drift = [d for d in observed.owned if isinstance(d, Drift)]
        assert [d.describe() for d in drift] == [
            "drift in nftables inet k3snet: no mark of k3snet's (a table an older k3snet, "
            "or k3snet with syntax json through a libnftables that takes no table comment, "
            f'wrote): apply rebuilds it with its comment "{TABLE_COMMENT}"']
        assert observed.owned - set(drift) == WANTED.owned
        backend.apply(plan(observed, WANTED))
        assert backend.observe(refresh=True).owned == WANTED.owned
    assert text(ns, "inet").split("\n")[1] == MARK


@pytest.mark.kernel
def test_with_json_batches_a_table_is_still_k3snets_by_its_rules(ns: str) -> None:
    # libnftables 1.0.6 takes no table comment in JSON: the table is k3snet's by its
    # marker chain and tagged rules, and no mark is asked for.
    with NftablesBackend(ns, syntax="json", observe_foreign=False) as backend:
        backend.apply(plan(backend.observe(), WANTED))
        assert backend.observe(refresh=True).owned == WANTED.owned
        assert plan(backend.observe(), WANTED).changes == ()


@pytest.mark.kernel
def test_a_table_json_batches_wrote_read_with_nft_syntax_is_said_to_be_so_and_marked(
        ns: str) -> None:
    # It was said to be "a table an older k3snet wrote".
    with NftablesBackend(ns, syntax="json", observe_foreign=False) as backend:
        backend.apply(plan(backend.observe(), WANTED))
    assert MARK not in text(ns, "inet")  # the kernel's view: libnftables 1.0.6 wrote none
    with NftablesBackend(ns, observe_foreign=False) as backend:
        observed = backend.observe()
        (drift,) = [o for o in observed.owned if isinstance(o, Drift)]
        assert "k3snet with syntax json" in drift.what
        backend.apply(plan(observed, WANTED))
        assert plan(backend.observe(refresh=True), WANTED).changes == ()
    assert text(ns, "inet").split("\n")[1] == MARK


SPEC_HEAD = """\
apiVersion: k3snet.io/v1alpha1
kind: EgressSpec
cluster:
  podCIDRs: [10.42.0.0/16]
  serviceCIDRs: [10.43.0.0/16]
destinations:
  - cidr: 192.168.2.0/24
    gateway: 192.168.1.1
    device: eth0
masquerade:
  mode: destinations
backends:
  netlink: {{}}
  nftables: {{table: {table}, family: {family}}}
"""
FOREIGN = [("filter", "inet", "inet filter"), ("nat", "inet", "inet nat"),
           ("nat", "split", "ip nat"),
           ("mangle", "split", "ip mangle"), ("security", "split", "ip security"),
           ("firewalld", "inet", "inet firewalld"), ("kube-proxy", "split", "ip kube-proxy"),
           ("calico", "split", "ip calico"), ("flannel-ipv6", "split", "ip6 flannel-ipv6")]


@pytest.mark.parametrize(("table", "family", "named"), FOREIGN)
def test_validate_and_render_refuse_a_table_name_another_program_owns(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str, family: str,
        named: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_HEAD.format(table=table, family=family))
    assert main(["validate", "-f", str(spec)]) == 1
    err = capsys.readouterr().err
    assert f"backends.nftables.table: nftables table {named} is " in err
    assert main(["render", "nftables", "-f", str(spec), "-o", str(tmp_path / "out")]) == 1
    assert f"nftables table {named} is " in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ModelError, match=f"nftables table {named} is .*not k3snet's"):
        render_nftables_conf(WANTED, table=table, family=family)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match=f"nftables table {named} is "):
        NftablesBackend(table=table, family=family)  # type: ignore[arg-type]


@pytest.mark.parametrize(("table", "family", "named"), FOREIGN)
def test_the_refusal_of_a_name_another_program_owns_gives_an_older_installs_way_out(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str, family: str,
        named: str) -> None:
    """An install an older k3snet made as table filter (or nat, split) is refused on
    upgrade by every command, destroy too: the error says how to delete its table and
    that its boot file, which deletes that table at every boot, is to be rendered again."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC_HEAD.format(table=table, family=family))
    assert main(["validate", "-f", str(spec)]) == 1
    err = capsys.readouterr().err
    assert f"'nft delete table {named}'" in err
    assert "its k3snet.nft to render again" in err


@pytest.mark.parametrize(("table", "family"), [("mangle", "inet"), ("edge", "split"),
                                               ("k3snet", "split")])
def test_a_name_no_known_program_has_in_the_family_is_taken(table: str, family: str) -> None:
    assert f"table {'inet' if family == 'inet' else 'ip'} {table} {{" in render_nftables_conf(
        WANTED, table=table, family=family)  # type: ignore[arg-type]


def _conditions(rendered: str) -> list[str]:
    """The rendered file's ``ExecCondition=`` commands, unquoted as systemd does (no
    ``$``, ``%`` or backslash to expand: one pair of single quotes around the script)."""
    prefix = "# ExecCondition=/bin/sh -c "
    lines = [line.removeprefix(prefix) for line in rendered.splitlines()
             if line.startswith(prefix)]
    assert all(line[0] == line[-1] == "'" and not set(line) & set("$%\\") for line in lines)
    return [line[1:-1] for line in lines]


@pytest.mark.kernel
@pytest.mark.parametrize(("family", "tables"), [("inet", ["inet"]), ("split", ["ip", "ip6"])])
def test_the_boot_files_condition_passes_only_with_no_table_or_k3snets(
        ns: str, family: str, tables: list[str]) -> None:
    rendered = render_nftables_conf(WANTED, table="edge", family=family)  # type: ignore[arg-type]
    conditions = _conditions(rendered)
    assert len(conditions) == len(tables)

    def passes() -> list[int]:
        return [run_in(ns, ["/bin/sh", "-c", c], check=False).returncode for c in conditions]

    assert passes() == [0] * len(tables)  # no table of the name: load
    run_in(ns, ["nft", "-f", "-"], input_text=rendered)
    assert passes() == [0] * len(tables)  # k3snet's own, marked: load again (replace)
    run_in(ns, ["nft", "flush", "ruleset"])
    run_in(ns, ["nft", "-f", "-"], input_text=ADMIN.format(family=tables[-1]))
    assert passes()[-1] == 1  # the administrator's table of the name: skip the unit


SPOOFED = {
    "a rule's comment": f'\t\ttcp dport 22 accept comment "{TABLE_COMMENT}"\n',
    "a chain's comment": f'\t\tcomment "{TABLE_COMMENT}"\n\t\ttcp dport 22 accept\n',
}


@pytest.mark.kernel
@pytest.mark.parametrize("where", list(SPOOFED))
def test_the_boot_files_condition_takes_only_the_tables_own_comment_as_the_mark(
        ns: str, where: str) -> None:
    """k3snet's words in a foreign table's chain or rule are no mark: the backend refuses
    that table (text.table_marked reads the table's own comment line), and the unit skips
    the load that would delete it (grep found the words anywhere in the listing)."""
    run_in(ns, ["nft", "-f", "-"], input_text=(
        "table inet edge {\n\tchain input {\n"
        "\t\ttype filter hook input priority filter; policy accept;\n"
        f"{SPOOFED[where]}\t}}\n}}\n"))
    before = text(ns, "inet", "edge")
    assert TABLE_COMMENT in before
    with NftablesBackend(ns, table="edge", observe_foreign=False) as backend, pytest.raises(
            BackendError, match="nftables table inet edge is not k3snet's"):
        backend.observe()
    (condition,) = _conditions(render_nftables_conf(WANTED, table="edge"))
    assert run_in(ns, ["/bin/sh", "-c", condition], check=False).returncode == 1
    assert text(ns, "inet", "edge") == before


def test_the_documented_unit_runs_the_rendered_condition() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    conditions = [line.removeprefix("ExecCondition=") for line in docs.splitlines()
                  if line.startswith("ExecCondition=")]
    rendered = render_nftables_conf(WANTED)
    assert conditions == [line.removeprefix("# ExecCondition=") for line in rendered.splitlines()
                          if line.startswith("# ExecCondition=")]
    assert conditions == [f"/bin/sh -c '{c}'" for c in load_condition()]
