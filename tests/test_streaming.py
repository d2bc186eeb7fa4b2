"""The test helpers' pure parts: what a drained reader counts, and polling with a deadline."""

from __future__ import annotations

import orjson
import pytest
from streaming import Sightings, eventually, wait_until


def test_sightings_tell_lost_doubled_and_unexpected_apart():
    seen = Sightings()
    for event_id in ["a", "b", "a", "stray", "c", "c", "c"]:
        seen.add(b"key", orjson.dumps({"event_id": event_id}))
    seen.add(b"keyed-only", None)  # a tombstone counts under its key
    want = ["a", "b", "c", "d"]
    assert seen.lost(want) == ["d"]
    assert seen.duplicates(want) == {"a": 2, "c": 3}
    assert seen.duplicates(want, copies={"c": 3}) == {"a": 2}  # c awaited three times
    assert seen.unexpected(want) == ["keyed-only", "stray"]
    assert not seen.complete(want, {}) and seen.complete(["a", "b", "c"], {"c": 3})


async def test_eventually_returns_the_first_truthy_answer_or_fails_with_the_last():
    answers = iter([0, None, {"found": 1}, "later"])

    async def ask():
        return next(answers)

    assert await eventually(ask, timeout=10) == {"found": 1}
    with pytest.raises(AssertionError, match=r"never true.*last: 0"):
        await eventually(lambda: 0, timeout=0.3, what="never true")
    counts = iter(range(5))
    assert wait_until(lambda: next(counts) >= 2, timeout=10) is True
