"""k3snet's iptables rules as each iptables a node may have prints them back (1.8.7 to 1.8.11).

k3snet compares the rules it reads with the ones it renders, word for word: a release
printing one of them otherwise would make it drift on every pass (written again), or
not k3snet's (written beside it). The golden lines below are what upstream's save
functions print for them, read in iptables' history at each release (v1.8.7, Debian 11
and Ubuntu 22.04; v1.8.8; v1.8.9, Debian 12; v1.8.10, RHEL 9 and Ubuntu 24.04; v1.8.11),
legacy and nft alike; none of them changed over those releases:

- the addresses, then the interfaces (``save_ipv4_addr``, ``save_ipv6_addr``,
  ``save_rule_details``; ``print_rule4`` for legacy): ``-s``, ``-d``, ``-i``, ``-o``, a
  ``!`` before its flag, a host's prefix with its length (``/32``), an IPv6 address as
  ``inet_ntop`` writes it; then the matches in the rule's order, then the target;
- ``conntrack_dump`` (``extensions/libxt_conntrack.c``): ``--ctstate`` (states in the
  order INVALID, NEW, RELATED, ESTABLISHED, UNTRACKED, SNAT, DNAT) before ``--ctdir``;
- ``comment_save`` through ``xtables_save_string``: a value of letters, digits, ``_`` and
  ``-`` bare, any other in double quotes (``"k3snet:<digest>"``);
- ``MASQUERADE_save`` and ``SNAT_save`` (``libipt_*.c``, merged in ``libxt_NAT.c`` in
  1.8.9): ``--to-source ADDR``, then ``--random``, ``--random-fully``, ``--persistent``;
- iptables-nft keeps ``-m comment`` and ``-m conntrack`` as compat matches in every one
  of them (``add_match`` translates ``limit`` and ``among``, from 1.8.8 ``udp``, ``tcp``
  and ``mark``), so they print where they were written; a comment kept as the rule's
  userdata (a rule written by ``nft``) prints after every other match, which is where
  k3snet puts it in every rule.
"""

from __future__ import annotations

import pytest

from k3snet.model import ForwardRule, MasqueradeRule, NetObject, SnatRule
from k3snet.render.iptables.rules import (
    clear_caches,
    normalize,
    rebuild_unit,
    render_unit,
    tokenize,
)

# Each object, and its lines as iptables-save prints them ({tag}: its comment's digest).
PRINTED: list[tuple[NetObject, tuple[str, ...], tuple[str, ...]]] = [
    (ForwardRule("10.42.0.0/16", "192.168.2.0/24", in_interface="cni0", out_interface="eth+"),
     ('-s 10.42.0.0/16 -d 192.168.2.0/24 -i cni0 -o eth+ -m comment --comment "k3snet:{tag}"'
      " -j ACCEPT",
      "-d 10.42.0.0/16 -i eth+ -o cni0 -m conntrack --ctstate RELATED,ESTABLISHED --ctdir REPLY"
      ' -m comment --comment "k3snet:{tag}" -j ACCEPT'), ()),
    (ForwardRule("fd42::/64", "::/0"),
     ('-s fd42::/64 -m comment --comment "k3snet:{tag}" -j ACCEPT',
      "-d fd42::/64 -m conntrack --ctstate RELATED,ESTABLISHED --ctdir REPLY"
      ' -m comment --comment "k3snet:{tag}" -j ACCEPT'), ()),
    (MasqueradeRule("10.42.0.0/16", exclude=["224.0.0.0/4"], out_interface="eth0",
                    random_fully=True),
     ('-s 10.42.0.0/16 ! -d 224.0.0.0/4 -o eth0 -m comment --comment "k3snet:{tag}"'
      " -j MASQUERADE --random-fully",), ()),
    (MasqueradeRule("10.42.0.0/16", destination="192.0.2.1/32"),
     ('-s 10.42.0.0/16 -d 192.0.2.1/32 -m comment --comment "k3snet:{tag}" -j MASQUERADE',), ()),
    (SnatRule("10.42.0.0/16", to_address="192.0.2.7", random_fully=True),
     ('-s 10.42.0.0/16 -m comment --comment "k3snet:{tag}" -j SNAT --to-source 192.0.2.7'
      " --random-fully",), ()),
    # inet_ntop writes ::ffff:0.0.0.0/96 where Python writes ::ffff:0:0/96
    (SnatRule("fd42::/64", destination="::ffff:0:0/96", to_address="2001:db8::7"),
     ('-s fd42::/64 -d ::ffff:0.0.0.0/96 -m comment --comment "k3snet:{tag}"'
      " -j SNAT --to-source 2001:db8::7",), ()),
    (MasqueradeRule("10.42.0.0/16", destination="192.168.0.0/16",
                    exclude=["192.168.2.0/24", "192.168.3.1/32"]),
     ('-s 10.42.0.0/16 -d 192.168.0.0/16 -m comment --comment "k3snet:{tag}"'
      " -j K3SNET-M-{tag}",),
     ('-d 192.168.2.0/24 -m comment --comment "k3snet:{tag}" -j RETURN',
      '-d 192.168.3.1/32 -m comment --comment "k3snet:{tag}" -j RETURN',
      '-m comment --comment "k3snet:{tag}" -j MASQUERADE')),
]


def _read(printed: tuple[str, ...], tag: str) -> tuple[tuple[str, ...], ...]:
    return tuple(normalize(tokenize(line.format(tag=tag))) for line in printed)


@pytest.mark.parametrize(("obj", "printed", "sub"), PRINTED, ids=lambda v: getattr(
    v, "describe", lambda: None)())
def test_each_iptables_prints_k3snets_rule_back_as_k3snet_wrote_it_and_reads_it_as_its_own(
        obj: NetObject, printed: tuple[str, ...], sub: tuple[str, ...]) -> None:
    unit = render_unit(obj)
    lines, sub_lines = _read(printed, unit.digest), _read(sub, unit.digest)
    assert sorted(lines) == sorted(unit.lines)
    assert sub_lines == unit.sub_lines
    clear_caches()  # read from the text alone, as a fresh process does
    chains = {unit.chain: lines} | ({unit.sub_chain: sub_lines} if unit.sub_chain else {})
    assert obj.family is not None
    read = rebuild_unit(obj.family, unit.digest, unit.chain, lines, chains)
    assert read is not None
    assert read.obj == obj


@pytest.mark.kernel
@pytest.mark.parametrize("flavour", ["nft", "legacy"])
def test_the_printed_lines_are_what_this_nodes_iptables_save_prints(ns: str, flavour: str) -> None:
    """The golden lines, checked against the iptables installed here (1.8.9 on the
    development machine): k3snet's rendering restored, then saved."""
    from k3snet.lab.netns import run_in  # noqa: PLC0415
    from k3snet.render.iptables.rules import format_line  # noqa: PLC0415

    for family in (4, 6):
        tool = "iptables" if family == 4 else "ip6tables"
        units = [render_unit(o) for o, _, _ in PRINTED if o.family == family]
        expected: dict[str, list[str]] = {}
        restore: dict[str, list[str]] = {"filter": [], "nat": []}
        for (obj, printed, sub), unit in zip(
                [p for p in PRINTED if p[0].family == family], units, strict=True):
            table = "filter" if isinstance(obj, ForwardRule) else "nat"
            for chain, lines, golden in ((unit.chain, unit.lines, printed),
                                         (unit.sub_chain, unit.sub_lines, sub)):
                if chain is None:
                    continue
                restore[table].insert(0, f":{chain} - [0:0]")  # every chain before its jumps
                restore[table] += [f"-A {chain} {format_line(line)}" for line in lines]
                expected[chain] = [f"-A {chain} {line.format(tag=unit.digest)}"
                                   for line in golden]
        text = "".join(f"*{table}\n" + "\n".join(body) + "\nCOMMIT\n"
                       for table, body in restore.items())
        run_in(ns, [f"{tool}-{flavour}-restore", "-w", "--noflush"], input_text=text)
        saved = run_in(ns, [f"{tool}-{flavour}-save"]).stdout.splitlines()
        for chain, want in expected.items():
            assert sorted(line for line in saved if line.startswith(f"-A {chain} ")) == sorted(
                want)
