"""Faults on the real broker, with real worker processes: every event gets exactly one
decision visible to ``read_committed`` consumers, whatever happens to the workers.

Each scenario ends by stopping the workers and reading the decisions to their committed end
(``settle``), so a duplicate committed after the last first sighting is counted; it asserts
counts (lost, doubled, unexpected), order and bounds, never times. Its times go to the figures
it prints (and appends to ``$MODSTREAM_FAULT_REPORT``): ``make faults`` runs this suite alone
and collects them for ``docs/reliability.md``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import time
from collections.abc import Sequence

import orjson
from aiohttp import web
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from chaos import Decisions, percentile, running, steady
from streaming import dead_letters, http_server, send, upload

from modstream.contracts import BankEntry, dumps
from modstream.stream.client import read_table

KNOWN = "the soldiers of the caliphate will remain and expand"
FAST = {"MODSTREAM_SESSION_TIMEOUT_S": "6"}


async def bank_known_text(workers) -> None:
    entry = BankEntry("tve", "statement-1", "text", KNOWN, (), "takedown", "")
    await send(workers, "hashbank", [(entry.key.encode(), dumps(entry))])


async def settle(workers, seen: Decisions) -> None:
    """The workers stopped (SIGTERM: each commits or aborts what it holds), then the decisions
    read to their committed end: nothing that could still be a duplicate is left to come."""
    await asyncio.to_thread(workers.stop_all)
    await seen.settle()


def assert_once_each(seen: Decisions, ids: list[str], others: Sequence[str] = ()) -> None:
    """One decision per event of ``ids``, none for events not sent, counted once settled."""
    figures = seen.figures("check", ids, others)
    assert figures.settled, "read to the committed end before counting"
    assert figures.lost == 0, f"{figures.lost} events without a decision"
    assert figures.duplicate_records == 0, (
        f"{figures.duplicate_records} duplicate decisions, e.g. {seen.doubled()}"
    )
    assert figures.unexpected_ids == 0, f"{figures.unexpected_ids} decisions of unknown events"


def assert_exactly_once(seen: Decisions, ids: list[str]) -> None:
    """``assert_once_each``, and each decision the right one (even events carry the banked
    text)."""
    assert_once_each(seen, ids)
    for n, event_id in enumerate(ids):
        assert seen.records[event_id][0]["verdict"] == ("takedown" if n % 2 == 0 else "allow")


async def strikes_match_takedowns(workers, seen: Decisions, ids: list[str]) -> None:
    """The per-uploader strikes (the changelog, as committed, to its end) are exactly the
    takedowns."""
    table = await read_table(
        workers.settings.kafka, f"{workers.settings.app_id}-uploader_history-changelog"
    )
    latest = [orjson.loads(value)["strikes"] for value in table.values()]
    struck = {event_id for strikes in latest for event_id, _ in strikes}
    takedowns = {i for i in ids if seen.records[i][0]["verdict"] == "takedown"}
    # Each uploader remembers its 64 latest strikes; these loads stay under that.
    assert struck == takedowns


async def test_kill_9_mid_stream_then_restart(workers):
    await bank_known_text(workers)
    env = {**FAST, "MODSTREAM_INSTANCE_ID": "w1"}
    proc, _ = workers.start(**env)
    ids = [f"kill-{i:05d}" for i in range(4000)]
    async with Decisions(workers) as seen, running(steady(workers, ids, rate=400)) as load:
        await seen.until(lambda: len(seen.arrivals) >= 800, 60)
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        proc.wait()
        await asyncio.to_thread(workers.start, **env)
        restarted = time.monotonic()
        await load
        assert await seen.all_of(ids, 120)
        await settle(workers, seen)
    before = {i for i, ts in seen.arrivals.items() if ts[0] < killed}
    resumed = min(ts[0] for i, ts in seen.arrivals.items() if i not in before)
    figures = seen.figures("kill -9, restart", ids)
    figures.extra = {
        "decided_before_kill": len(before),
        "worker_start_s": round(restarted - killed, 2),
        "kill_to_decisions_again_s": round(resumed - killed, 2),
    }
    figures.report()
    assert_exactly_once(seen, ids)
    await strikes_match_takedowns(workers, seen, ids)
    assert 0 < len(before) < len(ids), "the kill must land mid-stream"


async def test_sigterm_mid_stream_then_restart(workers):
    await bank_known_text(workers)
    env = {**FAST, "MODSTREAM_INSTANCE_ID": "w1"}
    proc, _ = workers.start(**env)
    ids = [f"term-{i:05d}" for i in range(3000)]
    async with Decisions(workers) as seen, running(steady(workers, ids, rate=400)) as load:
        await seen.until(lambda: len(seen.arrivals) >= 600, 60)
        proc.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        await asyncio.to_thread(proc.wait, 30)
        stopped = time.monotonic()
        await asyncio.to_thread(workers.start, **env)
        await load
        assert await seen.all_of(ids, 120)
        await settle(workers, seen)
    figures = seen.figures("SIGTERM, restart", ids)
    figures.extra = {"graceful_stop_s": round(stopped - stopping, 2)}
    figures.report()
    assert_exactly_once(seen, ids)
    await strikes_match_takedowns(workers, seen, ids)


async def test_a_worker_joins_then_the_first_leaves(workers):
    await bank_known_text(workers)
    first, _ = workers.start(**FAST, MODSTREAM_INSTANCE_ID="w1")
    ids = [f"move-{i:05d}" for i in range(5000)]
    async with Decisions(workers) as seen, running(steady(workers, ids, rate=300)) as load:
        await seen.until(lambda: len(seen.arrivals) >= 1000, 60)
        await asyncio.to_thread(workers.start, **FAST, MODSTREAM_INSTANCE_ID="w2")
        await workers.wait_split(workers.settings.topic("uploads"), timeout=60)
        joined = len(seen.arrivals)
        first.send_signal(signal.SIGTERM)
        await asyncio.to_thread(first.wait, 30)
        await load
        assert await seen.all_of(ids, 120)
        await settle(workers, seen)
    figures = seen.figures("second worker joins, first leaves", ids)
    figures.extra = {"decided_before_join_done": joined}
    figures.report()
    assert_exactly_once(seen, ids)
    await strikes_match_takedowns(workers, seen, ids)


async def test_a_rolling_restart_of_two_workers(workers):
    await bank_known_text(workers)
    procs = {name: workers.start(**FAST, MODSTREAM_INSTANCE_ID=name)[0] for name in ("w1", "w2")}
    await workers.wait_split(workers.settings.topic("uploads"), timeout=60)
    ids = [f"roll-{i:05d}" for i in range(6000)]
    async with Decisions(workers) as seen, running(steady(workers, ids, rate=300)) as load:
        await seen.until(lambda: len(seen.arrivals) >= 600, 60)
        began = time.monotonic()
        for name, proc in procs.items():
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 30)
            await asyncio.to_thread(workers.start, **FAST, MODSTREAM_INSTANCE_ID=name)
        ended = time.monotonic()
        sent = await load
        assert await seen.all_of(ids, 120)
        await settle(workers, seen)
    waits = [seen.arrivals[i][0] - sent[i] for i in ids if began <= sent[i] <= ended]
    figures = seen.figures("rolling restart of two workers", ids)
    figures.extra = {
        "longest_pause_in_decisions_s": round(seen.longest_pause(began, ended), 2),
        "max_wait_of_an_event_s": round(max(waits), 2),
    }
    figures.report()
    assert_exactly_once(seen, ids)
    # The stream never stopped: decisions kept coming while the workers took turns.
    assert any(began < ts[0] < ended for ts in seen.arrivals.values())


async def test_a_paused_worker_cannot_commit_for_partitions_it_lost(workers):
    """One of two workers is frozen (SIGSTOP) past its session, mid-stream: the other takes
    its partitions over. Thawed, the frozen one still holds batches and a transaction it
    began before; the group refuses offsets from its stale generation (KIP-447), so that
    work is aborted, not committed beside the new owner's: nothing lost, nothing doubled."""
    await bank_known_text(workers)
    frozen, _ = workers.start(**FAST, MODSTREAM_INSTANCE_ID="w1")
    _, other_port = workers.start(**FAST, MODSTREAM_INSTANCE_ID="w2")
    uploads = workers.settings.topic("uploads")
    await workers.wait_split(uploads, timeout=60)
    ids = [f"frozen-{i:05d}" for i in range(4000)]
    async with Decisions(workers) as seen, running(steady(workers, ids, rate=300)) as load:
        await seen.until(lambda: len(seen.arrivals) >= 600, 60)
        frozen.send_signal(signal.SIGSTOP)
        froze = time.monotonic()
        try:

            def owned_by_other() -> int:
                assigned = workers.status(other_port).get("assigned", [])
                return sum(a.rsplit(":", 1)[0] == uploads for a in assigned)

            while owned_by_other() < workers.settings.partitions:
                assert time.monotonic() - froze < 120, "the other worker never took over"
                await asyncio.sleep(0.5)
            took_over = time.monotonic() - froze
        finally:
            frozen.send_signal(signal.SIGCONT)
        await load
        assert await seen.all_of(ids, 120)
        await settle(workers, seen)
    figures = seen.figures("a worker frozen past its session, then thawed", ids)
    figures.extra = {"other_worker_took_over_after_s": round(took_over, 2)}
    figures.report()
    assert_exactly_once(seen, ids)
    await strikes_match_takedowns(workers, seen, ids)


async def test_a_record_kafka_refuses_is_dead_lettered_not_skipped(workers):
    """The takedowns topic refuses every record (its size limit is set below any decision):
    each refused record reaches the dead-letter topic whole, once, with its destination and
    the reason; the decisions beside it go out as they are; nothing is lost or doubled."""
    admin = AIOKafkaAdminClient(**workers.settings.kafka.options())
    await admin.start()
    takedowns = workers.settings.topic("takedowns")
    try:
        limit = {"max.message.bytes": "200"}
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, takedowns, limit)])
    finally:
        await admin.close()
    await bank_known_text(workers)
    workers.start(**FAST)
    ids = [f"refused-{i:04d}" for i in range(400)]
    async with Decisions(workers) as seen:
        await steady(workers, ids, rate=400)
        assert await seen.all_of(ids, 60)
        await settle(workers, seen)
    # Read to the committed end after the worker stopped: a second letter for a record shows.
    letters = await dead_letters(workers, count=200, timeout=30)
    refused = [orjson.loads(base64.b64decode(letter["original_b64"]))["event_id"]
               for letter in letters]  # fmt: skip
    figures = seen.figures("takedowns topic refuses records", ids)
    figures.extra = {"dead_letters": len(letters)}
    figures.report()
    assert_exactly_once(seen, ids)
    assert sorted(refused) == ids[::2]  # every takedown copy, each once
    assert all(letter["topic"] == takedowns for letter in letters)
    assert all(letter["error"].startswith("output refused by Kafka") for letter in letters)


async def test_a_hung_media_server_delays_only_its_own_events(workers):
    """One event in 40 names an image on a server that does not answer until the test lets
    it: every other event, sent before and after them, is decided while those are still
    held (a lane runs 32 batches at once, and these stay under it on any partition); let go,
    they are decided with a media error."""
    workers.start(**FAST, MODSTREAM_FETCH_TIMEOUT_S="600")
    hang = asyncio.Event()

    async def held(request):
        await hang.wait()
        return web.Response(status=503)

    ids = [f"hol-{i:04d}" for i in range(1200)]
    hung = ids[::40]
    others = [i for n, i in enumerate(ids) if n % 40]
    async with http_server({"/hang.jpg": held}) as base:
        hung_media = [{"media_id": "m", "kind": "image", "url": f"{base}/hang.jpg"}]

        def make(n: int, event_id: str):
            if n % 40 == 0:
                return upload(event_id, media=hung_media, uploader=f"u{n % 7}")
            return upload(event_id, text="a quiet day at the lake", uploader=f"u{n % 7}")

        async with Decisions(workers) as seen:
            # Steady state is the point: the first batches of a new worker also open its
            # lanes' first transactions.
            warm = [f"warm-{i}" for i in range(40)]
            await steady(workers, warm, rate=100)
            assert await seen.all_of(warm, 60)
            sent = await steady(workers, ids, rate=100, make=make)
            assert await seen.all_of(others, 120), "events held up behind the hung ones"
            decided_while_held = [i for i in hung if i in seen.arrivals]
            hang.set()
            assert await seen.all_of(hung, 120)
            await settle(workers, seen)
    waits = [seen.arrivals[i][0] - sent[i] for i in others]
    figures = seen.figures("one event in 40 on a held media server", ids, warm)
    figures.extra = {
        "p50_others_s": round(percentile(waits, 0.5), 3),
        "p99_others_s": round(percentile(waits, 0.99), 3),
        "max_others_s": round(max(waits), 3),
    }
    figures.report()
    assert decided_while_held == [], "a held fetch cannot have been decided"
    assert_once_each(seen, ids, warm)
    assert all(seen.records[i][0]["media_errors"] for i in hung)
