"""Out-of-order completion, in-order commits: the committed offset and its metadata."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from modstream.stream.progress import MAX_SPAN, PartitionProgress


def test_the_offset_moves_only_over_records_all_done():
    progress = PartitionProgress(10)
    progress.taken([10, 11, 12, 13])
    progress.finished([12, 13])  # a slow record (10) holds the offset, not the others
    assert progress.committed == 10
    assert PartitionProgress.skipped(10, progress.metadata()) == {12, 13}
    progress.finished([10])
    assert progress.committed == 11
    progress.finished([11])
    assert progress.committed == 14
    assert progress.metadata() == ""


def test_a_restart_skips_what_the_metadata_marks_done():
    before = PartitionProgress(100)
    before.taken(list(range(100, 110)))
    before.finished([103, 107, 109])
    after = PartitionProgress(before.committed, before.skipped(before.committed, before.metadata()))
    wanted = [o for o in range(100, 112) if after.wanted(o)]
    assert wanted == [100, 101, 102, 104, 105, 106, 108, 110, 111]
    after.taken(wanted[:-2])
    after.finished(wanted[:-2])
    assert after.committed == 110  # the skipped ones count as done


def test_offsets_without_records_are_stepped_over():
    """Transaction markers take an offset that no consumer ever sees."""
    progress = PartitionProgress(0)
    progress.taken([0, 1, 3, 4])  # 2 is a marker
    progress.finished([0, 1, 3, 4])
    assert progress.committed == 5


def test_a_record_is_taken_once_and_intake_stops_at_the_span():
    progress = PartitionProgress(0)
    progress.taken([0, 1])
    assert not progress.wanted(0) and progress.wanted(2)
    progress.taken(list(range(2, MAX_SPAN)))
    assert not progress.has_room()  # a slow record 0 stops intake, bounding memory
    progress.finished(list(range(1, MAX_SPAN)))
    assert not progress.has_room()
    progress.finished([0])
    assert progress.has_room() and progress.committed == MAX_SPAN


def test_metadata_from_elsewhere_is_ignored():
    assert PartitionProgress.skipped(5, "") == frozenset()
    assert PartitionProgress.skipped(5, "committed by a tool") == frozenset()
    assert PartitionProgress.skipped(5, "ms1:not base64!") == frozenset()


@given(st.lists(st.integers(0, 4095), unique=True, max_size=400), st.integers(0, 10**12))
def test_metadata_round_trips_and_fits_kafkas_limit(done, base):
    progress = PartitionProgress(base)
    offsets = [base + o for o in range(4096)]
    progress.taken(offsets)
    progress.finished([base + o for o in done if o != 0])
    meta = progress.metadata()
    assert len(meta) < 4096
    assert PartitionProgress.skipped(progress.committed, meta) == {
        base + o for o in done if base + o > progress.committed
    }
