"""The nftables backend's kept read: its table as the last process left it, on disk.

A backend that closes writes what it knows of its table (objects, handles, chains),
stamped with the ruleset generation id, the namespace's cookie and the boot id
(:mod:`k3snet.backends.nftables.kept`); the next process takes it instead of
listing the table while nothing was committed since. These kernel tests (as root,
each in a namespace of its own) hold it to the kernel's own view: what a kept read
gives is what a listing gives, handles included (``nft -j -a list``), after every
kind of apply; and anything that could make it stale or foreign (a commit by anyone,
another namespace under the same name, another boot, another k3snet, a file someone
else could have written, a corrupt one) makes the table listed again.
"""

from __future__ import annotations

import json
import marshal
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from k3snet.backends import netns as netns_module
from k3snet.backends.nftables import NftablesBackend
from k3snet.backends.nftables import kept as kept_module
from k3snet.backends.nftables.cache import Cache
from k3snet.backends.nftables.kernel import Libnftables
from k3snet.backends.nftables.text import as_listed
from k3snet.cli import main
from k3snet.errors import ApplyError
from k3snet.lab.netns import create_netns, delete_netns, run_in, temporary_netns
from k3snet.model import ForwardRule, MasqueradeRule, NetObject, SnatRule, State
from k3snet.planner import plan
from k3snet.render.nftables import MARKER_CHAIN, nft_rules

BASE = [
    MasqueradeRule("10.42.0.0/16", destination="192.168.2.0/24", out_interface="eth0"),
    MasqueradeRule("10.42.0.0/16", destination="192.168.3.0/24", exclude=["192.168.3.0/28"]),
    SnatRule("fd00:42::/56", destination="fd00:2::/64", to_address="fd00:1::5"),
    ForwardRule("10.42.0.0/16", "192.168.2.0/24", out_interface="eth0"),
    ForwardRule("fd00:42::/56", "fd00:2::/64"),
]
ONE_MORE = MasqueradeRule("10.42.0.0/16", destination="192.168.4.0/24", out_interface="eth0")
# Each step a kind of apply: a full one from nothing, one added, one removed, one replaced
# (its exclusions changed), one added before the others (more specific: rules move).
STEPS: list[list[NetObject]] = [
    BASE,
    [*BASE, ONE_MORE],
    BASE[1:],
    [BASE[0], MasqueradeRule("10.42.0.0/16", destination="192.168.3.0/24"), *BASE[2:]],
    [MasqueradeRule("10.42.0.0/16", destination="192.168.2.128/25", out_interface="eth0"),
     *BASE],
    [],
]


@pytest.fixture
def kept_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The kept read on, kept in a directory of this test."""
    monkeypatch.setenv("K3SNET_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("K3SNET_READ_CACHE", "on")
    return tmp_path / "nftables-read"


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every listing of a table libnftables makes in this test (text or JSON, any thread)."""
    made: list[str] = []
    text, as_json = Libnftables.list_text, Libnftables.list

    def counted_text(self: Libnftables, kind: str, **ref: str) -> str | None:
        made.append(" ".join(["list", kind, *ref.values()]))
        return text(self, kind, **ref)

    def counted_json(self: Libnftables, kind: str, **ref: str) -> list[dict[str, Any]] | None:
        if kind == "table":
            made.append(" ".join(["list -j", kind, *ref.values()]))
        return as_json(self, kind, **ref)

    monkeypatch.setattr(Libnftables, "list_text", counted_text)
    monkeypatch.setattr(Libnftables, "list", counted_json)
    return made


def _own(listed: Sequence[str]) -> list[str]:
    return [line for line in listed if line.endswith(" k3snet")]


def _apply(ns: str, wanted: Sequence[NetObject], **options: Any) -> None:
    """One process's apply: a backend that reads (or takes the kept read), applies, closes."""
    with NftablesBackend(ns, **options) as backend:
        backend.expect(State(owned=wanted))
        backend.apply(plan(backend.observe(), State(owned=wanted)))


def _cache(backend: NftablesBackend) -> Cache:
    cache = backend._observed.value
    assert cache is not None
    return cache


def _summary(cache: Cache) -> tuple[Any, ...]:
    """What an apply relies on: objects, their handles, each table's chains and marker."""
    return (
        sorted(cache.objects.values(), key=lambda o: o.sort_key),
        sorted((o.sort_key, cache.handles[k]) for k, o in cache.objects.items()),
        {f: (sorted(set(t.chains) - {MARKER_CHAIN}), t.marker) for f, t in cache.tables.items()},
        cache.drift,
    )


def _kernel_handles(ns: str, families: Sequence[str]) -> dict[str, int]:
    """Each k3snet rule's comment -> its handle, from ``nft -j -a list table``."""
    handles = {}
    for family in families:
        out = run_in(ns, ["nft", "-j", "-a", "list", "table", family, "k3snet"]).stdout
        for item in json.loads(out)["nftables"]:
            rule = item.get("rule")
            if rule is not None:
                handles[rule["comment"]] = rule["handle"]
    return handles


def _listed(ns: str, family: str) -> NftablesBackend:
    backend = NftablesBackend(ns, family=family, keep_read=False)  # type: ignore[arg-type]
    backend.observe()
    return backend


@pytest.mark.parametrize("family", ["inet", "split"])
def test_a_kept_read_is_what_a_listing_reads_after_every_kind_of_apply(
        ns: str, kept_dir: Path, listings: list[str], family: str) -> None:
    families = ("inet",) if family == "inet" else ("ip", "ip6")
    for step, wanted in enumerate(STEPS):
        listings.clear()
        with NftablesBackend(ns, family=family) as backend:  # type: ignore[arg-type]
            backend.expect(State(owned=wanted))
            observed = backend.observe()
            if step > 0:
                assert _own(listings) == [], f"step {step}: the table was listed again"
            with _listed(ns, family) as fresh:
                assert _summary(_cache(backend)) == _summary(_cache(fresh)), f"step {step}"
                assert observed == fresh.observe()
            # The handles each object's rules have in the kernel, by their tags.
            cache = _cache(backend)
            if cache.objects:
                kernel = _kernel_handles(ns, families)
                for key, obj in cache.objects.items():
                    tags = [r.comment for r in nft_rules(obj)]
                    assert cache.handles[key] == [kernel[t] for t in tags], obj.describe()
            backend.apply(plan(observed, State(owned=wanted)))  # deletes by kept handles
        assert list(kept_dir.glob("*.kept")), "nothing was kept"
        with _listed(ns, family) as fresh:
            assert fresh.observe() == State(owned=wanted), f"step {step}"
            assert fresh.drift == ()


def test_objects_not_expected_are_read_back_from_their_rules_text(
        ns: str, kept_dir: Path, listings: list[str]) -> None:
    _apply(ns, [*BASE, ONE_MORE])
    listings.clear()
    with NftablesBackend(ns) as backend:  # no hint at all: every object from its text
        state = backend.observe()
    assert _own(listings) == []
    assert state == State(owned=[*BASE, ONE_MORE])


def test_any_commit_in_the_namespace_makes_the_next_process_list_again(
        ns: str, kept_dir: Path, listings: list[str]) -> None:
    commits = [
        ["nft", "add", "table", "ip", "other"],
        ["nft", "add", "chain", "ip", "other", "c"],
        ["iptables-nft", "-t", "nat", "-A", "POSTROUTING", "-j", "RETURN"],
    ]
    for command in commits:
        _apply(ns, BASE)
        run_in(ns, command)
        listings.clear()
        with NftablesBackend(ns) as backend:
            backend.expect(State(owned=BASE))
            assert backend.observe().owned == State(owned=BASE).owned
        assert _own(listings), f"not listed again after {command}"
    # A rule of k3snet's deleted behind its back: seen at once.
    _apply(ns, BASE)
    handle = _kernel_handles(ns, ["inet"])[nft_rules(BASE[0])[0].comment]
    run_in(ns, ["nft", "delete", "rule", "inet", "k3snet", "postrouting", "handle", str(handle)])
    with NftablesBackend(ns) as backend:
        backend.expect(State(owned=BASE))
        assert BASE[0] not in backend.observe().owned


def _genid(ns: str) -> int:
    with NftablesBackend(ns, keep_read=False) as backend:
        token = backend.change_token()
    assert isinstance(token, int)  # no table a process owns: the id alone
    return token


def test_a_namespace_made_again_under_the_same_name_is_not_taken_for_the_old_one(
        kept_dir: Path, listings: list[str], require_root: None) -> None:
    with temporary_netns("kept") as ns:
        _apply(ns, BASE)
        stamp = _genid(ns)
    # The same name again, its generation id brought to the old stamp by empty commits.
    create_netns(ns)
    try:
        filler = False  # one commit each: adding a table again commits nothing
        for _ in range(stamp + 5):
            if _genid(ns) >= stamp:
                break
            run_in(ns, ["nft", "delete" if filler else "add", "table", "ip", "filler"])
            filler = not filler
        assert _genid(ns) == stamp
        listings.clear()
        with NftablesBackend(ns) as backend:
            backend.expect(State(owned=BASE))
            assert not backend.observe().owned
        assert _own(listings)
    finally:
        delete_netns(ns)


def _kept_file(kept_dir: Path) -> Path:
    (file,) = kept_dir.glob("*.kept")
    return file


def _lists_again(ns: str, listings: list[str]) -> bool:
    listings.clear()
    with NftablesBackend(ns) as backend:
        backend.expect(State(owned=BASE))
        assert backend.observe() == State(owned=BASE)  # right either way
    return bool(_own(listings))


def test_the_kept_read_is_taken_when_all_is_as_it_was(
        ns: str, kept_dir: Path, listings: list[str]) -> None:
    _apply(ns, BASE)
    assert not _lists_again(ns, listings)
    assert not _lists_again(ns, listings)  # a read that changed nothing keeps the file


@pytest.mark.parametrize("spoil", ["group-writable", "world-writable", "directory-writable",
                                   "another-owner", "symlink"])
def test_a_file_anyone_else_could_have_written_is_not_read(
        ns: str, kept_dir: Path, listings: list[str], spoil: str) -> None:
    _apply(ns, BASE)
    file = _kept_file(kept_dir)
    if spoil == "group-writable":
        file.chmod(0o620)
    elif spoil == "world-writable":
        file.chmod(0o602)
    elif spoil == "directory-writable":
        kept_dir.chmod(0o777)
    elif spoil == "another-owner":
        os.chown(file, 65534, 65534)
    else:
        target = file.with_suffix(".elsewhere")
        file.rename(target)
        file.symlink_to(target)
    assert _lists_again(ns, listings)


def _rewritten(file: Path, change: Any) -> None:
    key, genid, tables, records = marshal.loads(file.read_bytes())  # noqa: S302 - our own
    file.write_bytes(marshal.dumps(change(key, genid, tables, records)))


def _handle_moved(key: str, genid: int, tables: Any, records: Any) -> Any:
    sort, family, handles, chain, body = records[0]
    return key, genid, tables, ((sort, family, (-handles[0],), chain, body), *records[1:])


def _unexpected_without_text(key: str, genid: int, tables: Any, records: Any) -> Any:
    sort = (*records[0][0][:-1], not records[0][0][-1])  # an object no one expects
    return key, genid, tables, ((sort, records[0][1], records[0][2], None, None), *records[1:])


def _text_of_another(key: str, genid: int, tables: Any, records: Any) -> Any:
    first, second = records[0], records[1]
    sort = (*first[0][:-1], not first[0][-1])  # not expected, and its text is another's
    return key, genid, tables, ((sort, first[1], first[2], second[3], second[4]), *records[1:])


def _chain_missing(key: str, genid: int, tables: Any, records: Any) -> Any:
    return key, genid, tuple((f, ("postrouting",), m) for f, _, m in tables), records


def _another_key(key: str, genid: int, tables: Any, records: Any) -> Any:
    return "0" * len(key), genid, tables, records


@pytest.mark.parametrize("corrupt", [
    lambda file: file.write_bytes(b"not marshal at all"),
    lambda file: file.write_bytes(file.read_bytes()[:-100]),
    lambda file: file.write_bytes(marshal.dumps([1, 2, 3])),
    lambda file: _rewritten(file, _handle_moved),
    lambda file: _rewritten(file, _unexpected_without_text),
    lambda file: _rewritten(file, _text_of_another),
    lambda file: _rewritten(file, _chain_missing),
    lambda file: _rewritten(file, _another_key),
], ids=["garbage", "truncated", "another-layout", "bad-handle", "unknown-object",
        "another-objects-text", "chain-missing", "another-key"])
def test_a_corrupt_or_inconsistent_file_is_listed_over_and_replaced(
        ns: str, kept_dir: Path, listings: list[str], corrupt: Any) -> None:
    _apply(ns, BASE)
    corrupt(_kept_file(kept_dir))
    assert _lists_again(ns, listings)
    assert not _lists_again(ns, listings)  # the listing's read was kept in its place


def test_another_boot_or_another_k3snet_does_not_read_it(
        ns: str, kept_dir: Path, listings: list[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    _apply(ns, BASE)
    with monkeypatch.context() as patch:
        boot = tmp_path / "boot_id"
        boot.write_text("00000000-0000-4000-8000-000000000000\n")
        patch.setattr(netns_module, "_BOOT_ID", boot)
        assert _lists_again(ns, listings)
    with monkeypatch.context() as patch:
        patch.setattr(kept_module, "__version__", "0.0.0-another")
        assert _lists_again(ns, listings)


def test_a_table_with_drift_is_not_kept(ns: str, kept_dir: Path) -> None:
    _apply(ns, BASE)
    run_in(ns, ["nft", "add", "rule", "inet", "k3snet", "postrouting", "counter"])
    with NftablesBackend(ns) as backend:
        backend.observe()
        assert backend.drift
        stamp = _cache(backend).genid
    _, genid, *_ = marshal.loads(_kept_file(kept_dir).read_bytes())  # noqa: S302 - our own
    assert genid != stamp  # the file still holds the table before the drift, never used


def test_a_failed_apply_forgets_the_kept_read(ns: str, kept_dir: Path) -> None:
    _apply(ns, BASE)
    with NftablesBackend(ns) as backend:
        backend.faults.fail_at(0)
        with pytest.raises(ApplyError, match="refused"):
            backend.apply(plan(backend.observe(), State(owned=[*BASE, ONE_MORE])))
        assert not list(kept_dir.glob("*.kept"))
    assert not list(kept_dir.glob("*.kept")), "closing after the failure kept a read"


def test_nothing_is_kept_when_turned_off(ns: str, kept_dir: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _apply(ns, BASE, keep_read=False)
    assert not kept_dir.exists()
    monkeypatch.setenv("K3SNET_READ_CACHE", "off")
    _apply(ns, [*BASE, ONE_MORE])
    assert not kept_dir.exists()


def test_a_cold_cli_apply_after_another_lists_nothing_and_changes_the_kernel(
        ns: str, kept_dir: Path, listings: list[str], tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    lines = ["apiVersion: k3snet.io/v1alpha1", "kind: EgressSpec", "destinations:"]
    for n in range(3):
        lines += [f"  - cidr: 192.168.{10 + n}.0/24", "    device: eth0"]
    run_in(ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"])
    run_in(ns, ["ip", "link", "set", "eth0", "up"])
    args = ["--netns", ns, "--backend", "nftables:nat", "--auto-approve", "--allow-teardown"]
    for count in (2, 3, 1):
        spec.write_text("\n".join(lines[:3 + 2 * count]) + "\n")
        listings.clear()
        assert main(["apply", "-f", str(spec), *args]) == 0
        if count != 2:
            assert _own(listings) == [], f"{count}: listed"
        out = run_in(ns, ["nft", "-j", "list", "table", "inet", "k3snet"]).stdout
        rules = [i["rule"] for i in json.loads(out)["nftables"] if "rule" in i]
        assert len(rules) == count


@pytest.mark.parametrize("family", ["inet", "split"])
def test_after_another_programs_commit_the_listing_is_read_with_the_kept_lines(
        ns: str, kept_dir: Path, listings: list[str], parsed: list[str], family: str) -> None:
    families = ("inet",) if family == "inet" else ("ip", "ip6")
    _apply(ns, [*BASE, ONE_MORE], family=family)
    run_in(ns, ["nft", "add", "table", "ip", "other"])  # the kept read is stale now
    listings.clear()
    with NftablesBackend(ns, family=family) as backend:  # type: ignore[arg-type]
        state = backend.observe()  # no hint: each line as the kept lines read it
        assert sorted(_own(listings)) == sorted(f"list table {f} k3snet" for f in families)
        assert parsed == []
        with _listed(ns, family) as fresh:
            assert _summary(_cache(backend)) == _summary(_cache(fresh))
    assert state == State(owned=[*BASE, ONE_MORE])
    listings.clear()
    with NftablesBackend(ns, family=family) as backend:  # type: ignore[arg-type]
        assert backend.observe() == state
    assert _own(listings) == [], "not kept again, stamped anew"


def test_lines_the_kept_read_did_not_have_are_read_from_their_text(
        ns: str, kept_dir: Path, listings: list[str], parsed: list[str]) -> None:
    _apply(ns, BASE)
    # Another k3snet's rule, and a rule no k3snet writes, added behind the kept read.
    (rule,) = nft_rules(ONE_MORE)
    run_in(ns, ["nft", f"add rule inet k3snet postrouting {rule.body} comment "
                f'"{rule.comment}"'])
    run_in(ns, ["nft", "add", "rule", "inet", "k3snet", "postrouting", "counter"])
    with NftablesBackend(ns) as backend:
        state = backend.observe()
        # The text reader read the new line, then gave up at the counter: JSON judged it.
        assert parsed == [rule.body]
        with _listed(ns, "inet") as fresh:
            assert _summary(_cache(backend)) == _summary(_cache(fresh))
            assert backend.drift == fresh.drift != ()
    assert ONE_MORE in state.owned


def test_a_table_deleted_behind_the_kept_read_reads_as_none(
        ns: str, kept_dir: Path, listings: list[str]) -> None:
    _apply(ns, BASE)
    run_in(ns, ["nft", "delete", "table", "inet", "k3snet"])
    listings.clear()
    with NftablesBackend(ns) as backend:
        assert backend.observe().owned == frozenset()
        assert backend.drift == ()
    assert _own(listings) == ["list table inet k3snet"]


def _bodies_of_others(key: str, genid: int, tables: Any, records: Any) -> Any:
    """Each kept object's text that of the next one (the last one's ONE_MORE's)."""
    texts = [(r[3], r[4]) for r in records[1:]]
    texts.append(("postrouting", nft_rules(ONE_MORE)[0].body))
    moved = tuple((r[0], r[1], r[2], *t) for r, t in zip(records, texts, strict=True))
    return key, genid, tables, moved


def test_a_guess_from_a_wrong_kept_read_still_gives_exactly_the_kernels_table(
        ns: str, kept_dir: Path, listings: list[str], parsed: list[str]) -> None:
    _apply(ns, BASE)
    _, _, _, records = marshal.loads(_kept_file(kept_dir).read_bytes())  # noqa: S302
    (untold,) = [obj for obj in BASE if obj.sort_key == records[0][0]]  # its text went
    _rewritten(_kept_file(kept_dir), _bodies_of_others)
    run_in(ns, ["nft", "add", "table", "ip", "other"])
    with NftablesBackend(ns) as backend:
        state = backend.observe()
        # Read from their text: only the lines of the object whose text the file lost.
        assert parsed == [as_listed(rule.body) for rule in nft_rules(untold)]
        with _listed(ns, "inet") as fresh:
            assert _summary(_cache(backend)) == _summary(_cache(fresh))
    assert state == State(owned=BASE)


def test_the_other_tables_are_still_read_ahead_when_the_kept_read_stands(
        ns: str, kept_dir: Path, listings: list[str]) -> None:
    run_in(ns, ["nft", "add", "table", "inet", "admin"])
    run_in(ns, ["nft", "add", "chain", "inet", "admin", "post",
                "{ type nat hook postrouting priority 50; }"])
    run_in(ns, ["nft", "add", "rule", "inet", "admin", "post", "ip", "saddr", "10.77.0.0/16",
                "masquerade"])
    _apply(ns, BASE)
    listings.clear()
    with NftablesBackend(ns) as backend:
        backend.prefetch()
        started = backend._started
        assert started is not None
        assert started.listings == {}, "k3snet's table listed although the kept read stands"
        assert started.foreign is not None, "the other tables are not read ahead"
        backend.expect(State(owned=BASE))
        state = backend.observe()
    assert _own(listings) == []
    assert state.owned == State(owned=BASE).owned
    assert any(isinstance(o, MasqueradeRule) and str(o.source) == "10.77.0.0/16"
               for o in state.foreign)


def test_a_read_that_judged_the_mark_otherwise_is_not_taken_for_a_listing(
        ns: str, kept_dir: Path) -> None:
    # An older k3snet's table (no mark): drift under syntax "nft", none under "json",
    # which does not judge the mark. What a "json" process keeps must not stand for the
    # listing of an "nft" one: that would hide the drift its listing finds.
    _apply(ns, BASE)
    text = run_in(ns, ["nft", "list", "table", "inet", "k3snet"]).stdout
    unmarked = "\n".join(line for line in text.split("\n") if not line.startswith("\tcomment "))
    run_in(ns, ["nft", "delete", "table", "inet", "k3snet"])
    run_in(ns, ["nft", "-f", "-"], input_text=unmarked)
    assert "comment" not in run_in(ns, ["nft", "list", "table", "inet", "k3snet"]).stdout.split(
        "\n", 2)[1]
    with NftablesBackend(ns, syntax="json") as backend:
        backend.observe()
        assert not backend.drift
    with NftablesBackend(ns, keep_read=False) as listed:
        listed.observe()
        found = listed.drift
    assert any("no mark" in finding for finding in found)
    with NftablesBackend(ns) as backend:
        backend.observe()
        assert backend.drift == found
