"""iptables-legacy's change token, without root: recorded x_tables blobs and made-up ones.

``tests/data/iptables/xtables.json`` holds the filter and nat tables of both
families of a K3s node with k3snet's chains, as the kernel handed them over with
counters on every rule (``record_xtables.py`` there). Each is checked against an
entry-by-entry walk written here, the obvious way.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from k3snet.backends.iptables.xtables import (
    ENTRIES_AT,
    LAYOUTS,
    Layout,
    TableDigest,
    digest_table,
    zero_counters,
)
from k3snet.errors import BackendError

DATA = Path(__file__).resolve().parents[1] / "data" / "iptables"
RECORDED = json.loads((DATA / "xtables.json").read_text())
LAYOUT = {layout.family: layout for layout in LAYOUTS}


def walk(blob: bytearray, layout: Layout) -> list[int]:
    """The offset of every entry, one next_offset after the other."""
    offsets, offset = [], ENTRIES_AT
    while offset < len(blob):
        offsets.append(offset)
        offset += struct.unpack_from("=H", blob, offset + layout.next_offset)[0]
    assert offset == len(blob)
    return offsets


def zeroed_one_by_one(blob: bytearray, layout: Layout) -> bytearray:
    copy = bytearray(blob)
    for offset in walk(blob, layout):
        copy[offset + layout.counters:offset + layout.counters + 16] = bytes(16)
    return copy


def recorded(key: str) -> tuple[bytes, bytearray, Layout]:
    family = int(key.split(maxsplit=1)[0])
    entries = bytes.fromhex(RECORDED[key]["entries"])
    return (bytes.fromhex(RECORDED[key]["info"]), bytearray(ENTRIES_AT) + entries,
            LAYOUT[family])


def counters(blob: bytearray, layout: Layout) -> list[tuple[int, int]]:
    return [struct.unpack_from("=QQ", blob, offset + layout.counters)
            for offset in walk(blob, layout)]


@pytest.mark.parametrize("key", sorted(RECORDED))
def test_recorded_tables_lose_their_counters_and_nothing_else(key: str) -> None:
    info, blob, layout = recorded(key)
    before = counters(blob, layout)
    assert sum(packets for packets, _ in before) > 0  # traffic was recorded
    expected = zeroed_one_by_one(blob, layout)
    entries = struct.unpack(f"={len(info) // 4}I", info)[-2]
    assert zero_counters(blob, ENTRIES_AT, len(blob), layout) == entries == len(before)
    assert blob == expected
    assert set(counters(blob, layout)) == {(0, 0)}


@pytest.mark.parametrize("key", sorted(RECORDED))
def test_recorded_digest_ignores_counters_and_sees_any_rule_byte(key: str) -> None:
    info, blob, layout = recorded(key)
    first = digest_table(info, bytearray(blob), layout)
    moved = bytearray(blob)
    for n, offset in enumerate(walk(moved, layout)):  # traffic: other counters everywhere
        struct.pack_into("=QQ", moved, offset + layout.counters, 1000 + n, 99_999 * n)
    assert digest_table(info, moved, layout) == first
    assert first.entries == len(walk(blob, layout))
    assert first.size == len(blob) - ENTRIES_AT
    rng = random.Random(key)  # noqa: S311 - test data, not secrets
    offsets = walk(blob, layout)
    for _ in range(20):  # one byte of a rule, outside the counters: another digest
        offset = rng.choice(offsets)
        at = offset + rng.choice([n for n in range(layout.size)
                                  if not layout.counters <= n < layout.counters + 16
                                  and not layout.next_offset <= n < layout.next_offset + 2])
        changed = bytearray(blob)
        changed[at] ^= 0x01
        assert digest_table(info, changed, layout).digest != first.digest
    other_info = bytearray(info)
    other_info[0] ^= 0x01  # another set of hooks
    assert digest_table(bytes(other_info), bytearray(blob), layout).digest != first.digest


def made_up(layout: Layout, sizes: list[int], seed: int) -> bytearray:
    """Entries of ``sizes`` (multiples of 8), filled with random bytes."""
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    blob = bytearray(rng.randbytes(ENTRIES_AT))
    for size in sizes:
        entry = bytearray(rng.randbytes(size))
        struct.pack_into("=H", entry, layout.next_offset, size)
        blob += entry
    return blob


def sizes_in_runs(layout: Layout) -> st.SearchStrategy[list[int]]:
    size = st.integers(layout.size // 8, layout.size // 8 + 40).map(lambda n: 8 * n)
    runs = st.lists(st.tuples(size, st.integers(1, 40)), min_size=1, max_size=12)
    return runs.map(lambda r: [s for s, count in r for _ in range(count)])


@given(st.sampled_from(LAYOUTS).flatmap(lambda layout: st.tuples(
    st.just(layout), sizes_in_runs(layout), st.integers(0, 2**32))))
def test_made_up_tables_are_zeroed_as_one_by_one(case: tuple[Layout, list[int], int]) -> None:
    layout, sizes, seed = case
    blob = made_up(layout, sizes, seed)
    expected = zeroed_one_by_one(blob, layout)
    assert zero_counters(blob, ENTRIES_AT, len(blob), layout) == len(sizes)
    assert blob == expected


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: f"v{layout.family}")
def test_long_runs_and_a_last_odd_entry(layout: Layout) -> None:
    sizes = [layout.size + 8] * 9000 + [layout.size] + [layout.size + 8] * 5
    blob = made_up(layout, sizes, 7)
    expected = zeroed_one_by_one(blob, layout)
    assert zero_counters(blob, ENTRIES_AT, len(blob), layout) == len(sizes)
    assert blob == expected


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: f"v{layout.family}")
@pytest.mark.parametrize("bad", ["zero", "too small", "unaligned", "past the end", "short"])
def test_a_blob_that_does_not_walk_is_refused(layout: Layout, bad: str) -> None:
    sizes = [layout.size + 16] * 3
    blob = made_up(layout, sizes, 1)
    second = ENTRIES_AT + sizes[0]
    if bad == "short":
        blob = blob[:-8]  # the last entry overruns what was handed over
    else:
        size = {"zero": 0, "too small": layout.size - 8, "unaligned": layout.size + 4,
                "past the end": 8 * len(blob)}[bad]
        struct.pack_into("=H", blob, second + layout.next_offset, size)
    with pytest.raises(BackendError, match="cannot be read"):
        zero_counters(blob, ENTRIES_AT, len(blob), layout)


@pytest.mark.parametrize("key", sorted(RECORDED))
def test_a_table_as_last_read_keeps_its_digest_and_any_other_is_hashed(key: str) -> None:
    info, blob, layout = recorded(key)
    fresh = digest_table(info, bytearray(blob), layout)
    zeroed = zeroed_one_by_one(blob, layout)
    marker = TableDigest(fresh.entries, fresh.size, b"kept")  # not what a hash gives
    assert digest_table(info, bytearray(blob), layout, (info, zeroed, marker)) is marker
    changed = bytearray(zeroed)
    changed[ENTRIES_AT] ^= 0x01  # the first entry's source address
    assert digest_table(info, bytearray(blob), layout, (info, changed, marker)) == fresh
    other = bytes([info[0] ^ 0x01]) + info[1:]
    assert digest_table(info, bytearray(blob), layout, (other, zeroed, marker)) == fresh
