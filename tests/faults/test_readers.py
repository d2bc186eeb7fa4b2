"""The readers the exactly-once proof rests on can fail: a duplicate committed after every
id was first seen, or a dead letter beyond the count awaited, is counted (a reader that
stopped at the first sighting of each id could only ever find losses)."""

from __future__ import annotations

import orjson
from chaos import Decisions
from streaming import collect, dead_letters, read_all, send


def decision(event_id: str, key: bytes = b"one-partition") -> tuple[bytes, bytes]:
    """A decision-shaped record; one key for all puts them in one partition, in order."""
    return key, orjson.dumps({"event_id": event_id, "verdict": "allow"})


async def test_collect_counts_a_duplicate_after_the_last_first_sighting(workers):
    ids = ["a", "b", "c"]
    await send(workers, "decisions", [decision(i) for i in ids])
    await send(workers, "decisions", [decision("a")])  # after every first sighting
    await send(workers, "decisions", [decision("b", key=b"elsewhere"), decision("stray")])
    found = await collect(workers, "decisions", set(ids))
    assert {i: len(found[i]) for i in ids} == {"a": 2, "b": 2, "c": 1}
    seen = await read_all(workers, "decisions", set(ids))
    assert seen.duplicates(ids) == {"a": 2, "b": 2}
    assert seen.unexpected(ids) == ["stray"] and seen.lost(ids) == []


async def test_dead_letters_reads_past_the_count_awaited(workers):
    letters = [(b"k", orjson.dumps({"error": f"e{n}"})) for n in range(3)]
    await send(workers, "uploads.dlq", letters)
    assert [letter["error"] for letter in await dead_letters(workers, 2)] == ["e0", "e1", "e2"]


async def test_settled_decisions_count_a_late_duplicate_and_an_unknown_event(workers):
    ids = [f"d-{n}" for n in range(20)]
    async with Decisions(workers) as seen:
        await send(workers, "decisions", [decision(i, key=i.encode()) for i in ids])
        assert await seen.all_of(ids, 30)
        await send(workers, "decisions", [decision("d-7"), decision("not-sent")])
        await seen.settle()
    figures = seen.figures("reader check", ids)
    assert figures.settled and figures.lost == 0
    assert (figures.duplicate_records, figures.unexpected_ids) == (1, 1)
