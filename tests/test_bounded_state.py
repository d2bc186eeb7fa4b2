"""Bounded state in the worker (issue 24): strike histories expire with the repeat window
and stay under a cap, uploaders never struck cost nothing, review cases live on disk."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from modstream.decide import history
from modstream.settings import Settings
from modstream.stream.case_store import CaseTable
from modstream.stream.history_store import UploaderHistory
from modstream.stream.output import PARTITION_CACHE_SIZE, key_partitioner

DAY = 24 * 3600


class Appended:
    """What the store appends to the batch being processed (``PipelineOutput.append``)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes | None, int | None]] = []

    def append(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None):
        self.records.append((topic, key, value, partition))

    def tombstones(self) -> set[bytes | None]:
        return {key for _, key, value, _ in self.records if value is None}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def struck(event_id: str, at: float) -> dict:
    return history.with_strike(history.empty(), event_id, at)


def test_a_history_expires_a_window_after_it_was_last_written():
    recent = history.RecentStrikes(window_s=DAY, max_strikes=100)
    recent.put(b"old", 0, struck("e1", 1000.0), at=1000.0)
    recent.put(b"backlog", 1, struck("e2", 5.0), at=5000.0)  # an event created long ago
    assert recent.expire(1000.0 + DAY) == []  # still in the window
    assert recent.expire(1000.0 + DAY + 1) == [(b"old", 0)]
    assert recent.get(b"old") is None and recent.get(b"backlog") is not None
    assert (len(recent), recent.strikes) == (1, 1)


def test_strikes_over_the_cap_forget_the_least_recently_struck_first():
    recent = history.RecentStrikes(window_s=DAY, max_strikes=3)
    for n in range(3):
        assert recent.put(b"u%d" % n, n % 2, struck(f"e{n}", 100.0 + n), 100.0 + n) == []
    u0 = history.with_strike(recent.get(b"u0"), "e9", 200.0)
    assert recent.put(b"u0", 0, u0, 200.0) == [(b"u1", 1)]  # u0 again: 2 strikes, u2 1
    assert recent.strikes == 3
    assert recent.put(b"big", 1, {"strikes": [[f"x{n}", 300.0] for n in range(5)]}, 300.0) == [
        (b"u2", 0),
        (b"u0", 0),
    ]
    assert (len(recent), recent.strikes) == (1, 5)  # one history over the cap stays whole


def test_dropping_a_partition_forgets_only_its_histories():
    recent = history.RecentStrikes(window_s=DAY, max_strikes=100)
    recent.put(b"a", 0, struck("e1", 1.0), 1.0)
    recent.put(b"b", 1, struck("e2", 1.0), 1.0)
    recent.drop_partition(0)
    assert (recent.get(b"a"), len(recent), recent.strikes) == (None, 1, 1)


def _store(clock: Clock, **settings) -> tuple[UploaderHistory, Appended]:
    out = Appended()
    config = Settings(repeat_window_s=DAY, **settings)
    return UploaderHistory(config, out, lambda key: len(key) % 2, clock=clock), out  # type: ignore[arg-type]


def test_a_million_uploaders_never_struck_cost_nothing():
    store, out = _store(Clock(10_000.0))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for n in range(1_000_000):
        assert store[b"p/u%d" % n] == {"strikes": []}
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(store) == 0 and out.records == []
    assert grown < 64 * 1024  # nothing per uploader


def test_struck_uploaders_are_tombstoned_a_window_after_their_last_strike():
    clock = Clock(10_000.0)
    store, out = _store(clock)
    for n in range(1000):
        store[b"p/u%d" % n] = struck(f"e{n}", clock.now)
    assert len(store) == 1000
    clock.now += DAY + 2
    assert store[b"p/u0"] == {"strikes": []}  # the read sweeps, within the batch
    assert len(store) == 0
    assert out.tombstones() == {b"p/u%d" % n for n in range(1000)}


def test_the_strikes_held_stay_under_the_cap_and_the_changelog_agrees():
    clock = Clock(10_000.0)
    store, out = _store(clock, max_remembered_strikes=500)
    for n in range(5000):
        clock.now += 1
        store[b"p/u%d" % n] = struck(f"e{n}", clock.now)
    assert len(store) == 500
    assert out.tombstones() == {b"p/u%d" % n for n in range(4500)}
    assert store[b"p/u4999"]["strikes"] and not store[b"p/u0"]["strikes"]


def test_a_case_table_finds_every_case_with_a_small_page_cache(tmp_path: Path):
    table = CaseTable(tmp_path / "cases.sqlite", cache_kib=64)
    rows = [(n % 4, f"d{n}", b"%d" % n + b"c" * 3000) for n in range(5000)]
    table.apply(rows)
    table.apply([(1, "d1", None)])  # a tombstone
    assert table.get(0, "d0") == rows[0][2] and table.get(3, "d4999") == rows[4999][2]
    assert table.get(1, "d1") is None and table.get(0, "d1") is None  # per partition
    table.drop(0)
    assert table.get(0, "d0") is None and table.count() == 5000 - 1250 - 1
    table.close()


def test_the_partition_cache_holds_a_few_thousand_keys_however_many_it_sees():
    partition = key_partitioner(8)
    for n in range(50_000):
        partition(f"decision-{n}")
    assert partition.cache_info().currsize == PARTITION_CACHE_SIZE <= 4096  # type: ignore[attr-defined]
