"""The whole pipeline on a real Kafka broker with real worker processes."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import random
import re
import signal
import time

import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer
from streaming import (
    collect,
    dead_letters,
    eventually,
    http_server,
    inline,
    send,
    upload,
    uploaders_on_each_partition,
)

from modstream.contracts import BankEntry, HashedBatch, dumps
from modstream.demo import bank_entries, demo_uploads, encode, resized, sample
from modstream.engine import hash_media
from modstream.stream.client import end_offsets, read_topic, topic_partitions

pytestmark = pytest.mark.kafka


async def test_uploads_in_decisions_out_with_dlq_broken_media_and_urls(workers, tmp_path):
    entries = bank_entries()
    await send(workers, "hashbank", [(e.key.encode(), dumps(e)) for e in entries])
    _, port = workers.start()

    photo = encode(resized(sample("rocket"), 0.7), quality=70)

    async def serve(request):
        return web.Response(body=photo, content_type="image/jpeg")

    cases = demo_uploads("e2e", workers.settings.media_root)
    expected = {body["event_id"]: verdict for verdict, body in cases}
    records = [(body["content_id"].encode(), orjson.dumps(body)) for _, body in cases]
    async with http_server({"/rocket.jpg": serve}) as base:
        url_media = [{"media_id": "m1", "kind": "image", "url": f"{base}/rocket.jpg"}]
        records.append(upload("by-url", media=url_media))
        dead_url = [{"media_id": "m1", "kind": "image", "url": "http://127.0.0.1:9/gone.jpg"}]
        records.append(upload("dead-url", media=dead_url))
        expected.update({"by-url": "takedown", "dead-url": "review"})
        malformed = b'{"schema": 1, "event_id": "bad", "media": "nope"}'
        records.append((b"bad-key", malformed))
        await send(workers, "uploads", records)
        decisions = await collect(workers, "decisions", set(expected))
    got = {event_id: found[0]["verdict"] for event_id, found in decisions.items()}
    assert got == expected

    rocket = decisions["by-url"][0]
    pdq = next(e for e in rocket["evidence"] if e["signal_type"] == "pdq")
    assert (pdq["bank"], pdq["entry_id"], pdq["threshold"]) == ("demo-tve", "rocket", 31)
    assert pdq["distance"] <= 31
    assert decisions["dead-url"][0]["media_errors"][0]["reason"] == "unreachable"
    broken = decisions["e2e-broken-image"][0]
    assert broken["media_errors"][0]["reason"] == "corrupt"

    takedowns = await collect(workers, "takedowns", {"by-url"})
    assert all(r["verdict"] == "takedown" for found in takedowns.values() for r in found)

    letters = await dead_letters(workers, 1)
    assert base64.b64decode(letters[0]["original_b64"]) == malformed
    assert "upload.media: expected list" in letters[0]["error"]

    text = workers.metrics(port)
    assert re.search(r'modstream_decisions_total\{platform="demo",verdict="takedown"\} [1-9]', text)
    assert 'modstream_dead_letters_total{reason="invalid_event",stage="ingest"} 1.0' in text
    assert re.search(r'modstream_media_failures_total\{reason="unreachable",source="url"\} 1', text)
    # four photos, and the rocket without its plain sky (banked images keep their trimmed picture)
    assert 'modstream_bank_entries{bank="demo-tve",signal_type="pdq"} 5.0' in text
    assert "modstream_end_to_end_seconds_bucket" in text
    assert "modstream_commit_seconds_bucket" in text  # one transaction per commit
    assert re.search(r'modstream_records_produced_total\{topic="[^"]*decisions"\} [1-9]', text)


async def test_bank_changes_reach_every_running_worker(workers):
    """A hash banked while two workers run is matched by both, and its tombstone removes it
    from both, without a restart (how soon goes to the log: a shared machine varies)."""
    await send(workers, "hashbank", [])  # topic exists, bank empty
    workers.start()
    workers.start()
    photo = encode(sample("chelsea"), quality=90)
    signals = hash_media("m", "image", photo, 10**8).signals
    entry = BankEntry("live", "cat", "pdq", signals["pdq"]["value"], (), "takedown", "")
    await workers.wait_split(workers.settings.topic("uploads.hashed"))

    added = time.monotonic()
    await send(workers, "hashbank", [(entry.key.encode(), dumps(entry))])
    # Uploaders on every partition of uploads.hashed, so both workers decide some of these
    # (random ones all fall on one partition once in 128 runs).
    uploaders = uploaders_on_each_partition(workers.settings.partitions, per_partition=4)
    attempts = itertools.count()

    async def all_taken_down() -> bool:
        batch = {f"live-{next(attempts)}-{u}": u for u in uploaders}
        start = await end_offsets(workers.settings.kafka, workers.settings.topic("decisions"))
        await send(
            workers,
            "uploads",
            [upload(i, media=inline(photo), uploader=u) for i, u in sorted(batch.items())],
        )
        found = await collect(workers, "decisions", set(batch), start=start)
        assert {len(found.get(i, ())) for i in batch} == {1}, "one decision per event"
        return all(found[i][0]["verdict"] == "takedown" for i in batch)

    await eventually(all_taken_down, timeout=120, what="the bank addition live in both workers")
    print(f"\nbank addition matched by both workers {time.monotonic() - added:.1f} s after")
    per_worker = [
        re.search(
            r'modstream_matches_total\{action="takedown",bank="live",signal_type="pdq"\} (\d+)',
            workers.metrics(port),
        )
        for _, port in workers.procs
    ]
    assert all(per_worker), "each worker must have matched the new hash"

    await send(workers, "hashbank", [(entry.key.encode(), None)])  # tombstone
    await eventually(
        lambda: not any(workers.status(port).get("bank_entries") for _, port in workers.procs),
        timeout=60,
        what="the tombstone on every worker",
    )
    ids = {f"after-removal-{i}" for i in range(8)}
    start = await end_offsets(workers.settings.kafka, workers.settings.topic("decisions"))
    await send(
        workers, "uploads", [upload(i, media=inline(photo), uploader=i) for i in sorted(ids)]
    )
    found = await collect(workers, "decisions", ids, start=start)
    assert {found[i][0]["verdict"] for i in ids} == {"allow"}


async def test_every_event_decided_once_and_history_co_partitioned(workers):
    """Batches of many uploaders: one decision per event; an uploader's strike is written to
    the table's changelog in the partition that carries that uploader's events."""
    known = "the soldiers of the caliphate will remain and expand"
    entry = BankEntry("tve", "statement-1", "text", known, (), "takedown", "")
    await send(workers, "hashbank", [(entry.key.encode(), dumps(entry))])
    workers.start()
    ids = [f"batch-{i:04d}" for i in range(1500)]
    texts = [known, "hello"]
    await send(
        workers,
        "uploads",
        [upload(i, text=texts[n % 2], uploader=f"u{n}") for n, i in enumerate(ids)],
    )
    decisions = await collect(workers, "decisions", set(ids))
    assert {i: len(found) for i, found in decisions.items()} == dict.fromkeys(ids, 1)
    # dated in seconds (Kafka's record timestamps are in milliseconds)
    assert all(abs(found[0]["decided_at"] - time.time()) < 300 for found in decisions.values())
    assert {i: found[0]["verdict"] for i, found in decisions.items()} == {
        i: ("takedown" if n % 2 == 0 else "allow") for n, i in enumerate(ids)
    }

    async def records_by_partition(topic: str) -> list[tuple[int, bytes | None, bytes]]:
        consumer = AIOKafkaConsumer(**workers.settings.kafka.options(), group_id=None)
        await consumer.start()
        try:
            tps = await topic_partitions(consumer, topic)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            found = []
            while batches := await consumer.getmany(timeout_ms=2000):
                for tp, records in batches.items():
                    found += [(tp.partition, r.key, r.value) for r in records]
            return found
        finally:
            await consumer.stop()

    hashed: dict[bytes, set[int]] = {}
    for partition, _, value in await records_by_partition(workers.settings.topic("uploads.hashed")):
        for record in HashedBatch.parse(value).uploads:
            hashed.setdefault(record.event.uploader_key.encode(), set()).add(partition)
    changelog: dict[bytes, set[int]] = {}
    table = f"{workers.settings.app_id}-uploader_history-changelog"
    for partition, key, _ in await records_by_partition(table):
        changelog.setdefault(key, set()).add(partition)
    assert set(hashed) == {f"test/u{n}".encode() for n in range(len(ids))}
    assert set(changelog) == {f"test/u{n}".encode() for n in range(0, len(ids), 2)}
    assert all(len(partitions) == 1 for partitions in hashed.values())
    assert all(changelog[key] == hashed[key] for key in changelog)


async def test_killed_worker_loses_no_event_and_doubles_none(workers):
    await send(workers, "hashbank", [])
    proc, _ = workers.start()
    ids = [f"crash-{i:04d}" for i in range(6000)]
    texts = [
        "Glory to our martyrs! Rise up, brothers, and join the ranks.",
        "a quiet day at the lake",
    ]
    events = [upload(i, text=texts[n % 2], uploader=f"u{n % 7}") for n, i in enumerate(ids)]
    await send(workers, "uploads", events[:3000])
    before = 0
    async for _ in read_topic(
        workers.settings.kafka,
        workers.settings.topic("decisions"),
        max_records=300,
        timeout_s=30,
    ):
        before += 1
    # The second half goes in right before the kill: a worker decides 3,000 text events in
    # well under a second, so the first half alone may be all done by the time it dies.
    await send(workers, "uploads", events[3000:])
    os.kill(proc.pid, signal.SIGKILL)  # mid-stream, no clean shutdown
    proc.wait()
    # Decisions committed before the kill, read as a consumer reads them (end offsets would
    # also count each transaction's commit marker).
    sent = 0
    async for _ in read_topic(
        workers.settings.kafka, workers.settings.topic("decisions"), timeout_s=3
    ):
        sent += 1
    assert before >= 300 and sent < len(ids), "the kill must land mid-stream"
    workers.start()
    decisions = await collect(workers, "decisions", set(ids), timeout=120)
    assert set(ids) <= set(decisions)
    for event_id, found in decisions.items():
        assert len(found) == 1, f"{event_id} decided {len(found)} times"  # exactly once
        assert found[0]["verdict"] == ("review" if int(event_id[-4:]) % 2 == 0 else "allow")


async def bank_with_bulk(workers, count: int, seed: int) -> list[BankEntry]:
    """The demo bank and ``count`` random PDQ entries, published; returns them all."""
    rng = random.Random(seed)
    extra = [
        BankEntry("bulk", f"b{i}", "pdq", f"{rng.getrandbits(256):064x}", (), "review", "")
        for i in range(count)
    ]
    banked = bank_entries() + extra
    await send(workers, "hashbank", [(e.key.encode(), dumps(e)) for e in banked])
    return banked


async def test_a_large_replay_runs_in_a_child_and_the_worker_restores_its_snapshot(workers):
    """Without a snapshot, a topic over MODSTREAM_BANK_REPLAY_IN_CHILD_ABOVE records is
    replayed by a child process that writes one; the worker restores it, then tails from its
    offsets like any restart."""
    banked = await bank_with_bulk(workers, 2000, seed=11)
    _, port = workers.start(MODSTREAM_BANK_REPLAY_IN_CHILD_ABOVE="1000")
    status = workers.status(port)
    assert status["bank_replayed_in_child"] is True and status["bank_from_snapshot"] is True
    assert status["bank_entries"] == len(banked)
    assert (workers.settings.data_dir / "bank-snapshot" / "manifest.json").exists()
    chelsea = encode(sample("chelsea"), quality=90)
    added = BankEntry("live", "cat", "pdq", hash_media("m", "image", chelsea, 10**8).signals[
        "pdq"]["value"], (), "takedown", "")  # fmt: skip
    await send(workers, "hashbank", [(added.key.encode(), dumps(added))])
    await eventually(
        lambda: workers.status(port).get("bank_entries") == len(banked) + 1,
        timeout=60,
        what="the tailed change in the restored bank",
    )
    await send(workers, "uploads", [upload("child-cat", media=inline(chelsea))])
    cat = (await collect(workers, "decisions", {"child-cat"}))["child-cat"][0]
    assert cat["verdict"] == "takedown"
    assert ("live", "cat") in {(e["bank"], e.get("entry_id")) for e in cat["evidence"]}


async def test_restart_loads_the_bank_snapshot_and_reads_only_newer_changes(workers):
    """A worker saves the bank with its offsets; after a restart it loads that snapshot, reads
    only what was published since, and matches exactly as a full replay would."""
    banked = await bank_with_bulk(workers, 3000, seed=9)
    entries = bank_entries()
    proc, port = workers.start(MODSTREAM_BANK_SNAPSHOT_INTERVAL_S="1")
    link = workers.settings.data_dir / "bank-snapshot"
    await eventually((link / "manifest.json").exists, timeout=60, what="a saved snapshot")
    assert workers.status(port)["bank_from_snapshot"] is False
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)

    # While it is down: one banked photo is removed, an unrelated photo is banked.
    removed = next(e for e in entries if e.entry_id == "astronaut" and e.signal_type == "pdq")
    chelsea = encode(sample("chelsea"), quality=90)
    added = BankEntry("live", "cat", "pdq", hash_media("m", "image", chelsea, 10**8).signals[
        "pdq"]["value"], (), "takedown", "")  # fmt: skip
    await send(
        workers, "hashbank", [(removed.key.encode(), None), (added.key.encode(), dumps(added))]
    )

    _, port = workers.start(MODSTREAM_BANK_SNAPSHOT_INTERVAL_S="1")
    status = workers.status(port)
    assert status["bank_from_snapshot"] is True
    assert status["bank_entries"] == len(banked)  # one out, one in
    astronaut = encode(resized(sample("astronaut"), 0.7), quality=80)
    start = await end_offsets(workers.settings.kafka, workers.settings.topic("decisions"))
    await send(workers, "uploads", [
        upload("after-cat", media=inline(chelsea)),
        upload("after-astronaut", media=inline(astronaut)),
    ])  # fmt: skip
    found = await collect(workers, "decisions", {"after-cat", "after-astronaut"}, start=start)
    cat = found["after-cat"][0]
    assert cat["verdict"] == "takedown"
    assert {(e["bank"], e["entry_id"]) for e in cat["evidence"] if e["kind"] == "hash_match"} == {
        ("live", "cat")
    }
    # The astronaut's PDQ entry is gone; its pHash and MD5 entries remain in the demo bank.
    astro = found["after-astronaut"][0]
    assert not [e for e in astro["evidence"] if e.get("signal_type") == "pdq"]


async def test_a_video_upload_is_decided_by_its_vpdq(workers):
    """A banked video (imported as a vPDQ entry) is taken down when a logo-stamped copy is
    uploaded by path or by URL (streamed to a scratch file, removed once hashed); an
    unrelated video is allowed; a file that is not a video says so."""
    import videos

    from modstream.formats.vpdq import format_vpdq
    from modstream.hashing.video import hash_video

    scenes = ["astronaut", "coffee", "immunohistochemistry", "chelsea"]
    root = workers.settings.media_root
    original = videos.clip(root / "original.mp4", scenes, fps=15, crf=23)
    videos.clip(root / "copy.mp4", scenes, fps=15, crf=28, edit=videos.logo)
    videos.clip(root / "other.mp4", ["retina", "coins", "moon"], fps=15, crf=23)
    (root / "broken.mp4").write_bytes(b"not a video at all")
    vpdq = format_vpdq(hash_video(original).frames)
    entry = BankEntry("tve", "video-1", "vpdq", vpdq, ("violent_extremism",), "takedown", "")
    await send(workers, "hashbank", [(entry.key.encode(), dumps(entry))])
    workers.start()

    def video(name: str) -> list[dict]:
        return [{"media_id": "v1", "kind": "video", "path": name}]

    async def serve(request):
        return web.FileResponse(root / "copy.mp4")

    names = {"vid-copy": "copy.mp4", "vid-other": "other.mp4", "vid-broken": "broken.mp4"}
    async with http_server({"/copy.mp4": serve}) as base:
        url = [{"media_id": "v1", "kind": "video", "url": f"{base}/copy.mp4"}]
        uploads = [upload(i, media=video(n)) for i, n in names.items()]
        await send(workers, "uploads", [*uploads, upload("vid-url", media=url)])
        found = await collect(workers, "decisions", {*names, "vid-url"})
    copy, other, broken = (found[i][0] for i in names)
    assert found["vid-url"][0]["verdict"] == copy["verdict"] == "takedown"
    [scratch] = workers.settings.data_dir.glob("worker-*/media-scratch")
    assert list(scratch.iterdir()) == []
    [match] = [e for e in copy["evidence"] if e["kind"] == "hash_match"]
    assert (match["signal_type"], match["entry_id"]) == ("vpdq", "video-1")
    assert "of the bank video's frames found" in match["detail"]
    assert other["verdict"] == "allow"
    assert broken["media_errors"][0]["reason"] == "not_a_video"


async def test_a_slow_video_does_not_hold_up_images(workers):
    """A video whose download stalls is hashed by the video stage: image and text events
    published after it are decided while it waits, and it is decided once it arrives."""
    import videos

    scenes = ["astronaut", "coffee", "immunohistochemistry"]
    clip = videos.clip(workers.settings.media_root / "clip.mp4", scenes, fps=15, crf=23)
    asked, release = asyncio.Event(), asyncio.Event()

    async def stalled(request):
        asked.set()
        await release.wait()
        return web.FileResponse(clip)

    await send(workers, "hashbank", [])
    workers.start()
    async with http_server({"/clip.mp4": stalled}) as base:
        url = [{"media_id": "v1", "kind": "video", "url": f"{base}/clip.mp4"}]
        await send(workers, "uploads", [upload("slow-video", media=url)])
        await asyncio.wait_for(asked.wait(), 60)  # the video stage waits on the download
        others = {f"after-{i}" for i in range(6)}
        photo = encode(sample("camera"), quality=80)
        await send(
            workers,
            "uploads",
            [upload(i, media=inline(photo)) if n % 2 else upload(i, text="hello")
             for n, i in enumerate(sorted(others))],
        )  # fmt: skip
        try:
            found = await collect(workers, "decisions", others)
            # Its download is held until the release below: it cannot have been decided.
            assert set(found) == others, "the others decided while the video still waits"
        finally:
            release.set()
        video = await collect(workers, "decisions", {"slow-video"})
    assert {i: len(video[i]) for i in video} == {i: 1 for i in others | {"slow-video"}}
    assert video["slow-video"][0]["media_errors"] == []
    assert video["slow-video"][0]["verdict"] == "allow"


async def test_a_commit_whose_answer_was_lost_is_found_landed_or_not_on_the_broker(workers):
    """What a lane asks after a commit failed without an answer: a transaction the broker
    committed is found committed (so it is not written again), one it never committed is
    aborted by the next producer under the same id and found not landed. Lanes waiting
    together share one transaction; a record Kafka refuses fails its own lane's commit and
    aborts its neighbour's, which is sent again; a record that makes its partition's batch
    too large is found and refused alone."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
    from aiokafka.errors import KafkaError
    from aiokafka.structs import OffsetAndMetadata

    from modstream.stream import client, compat
    from modstream.stream.pipeline import (
        Outgoing,
        ProduceFailed,
        TransactionAborted,
        WorkerTransactions,
    )

    settings = workers.settings
    first, second = (TopicPartition(settings.topic("uploads"), p) for p in (0, 1))
    decisions = TopicPartition(settings.topic("decisions"), 0)
    group = f"{settings.app_id}-landed"
    # Set first, and waited for: the broker applies a topic's new config a moment later.
    admin = AIOKafkaAdminClient(**settings.kafka.options())
    await admin.start()
    try:
        topic_config = ConfigResource(ConfigResourceType.TOPIC, decisions.topic)
        await admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC, decisions.topic, {"max.message.bytes": "2000"}
                )
            ]
        )

        async def limit_shown() -> bool:
            [described] = await admin.describe_configs([topic_config])
            entries = described.resources[0][4]
            limit = next(value for name, value, *_ in entries if name == "max.message.bytes")
            return limit == "2000"

        await eventually(limit_shown, timeout=30, what="the topic's new limit")
    finally:
        await admin.close()
    member = await client.started(
        client.consumer(settings.kafka, group_id=group, enable_auto_commit=False)
    )
    member.subscribe([first.topic])
    while not member.assignment():
        await member.getmany(timeout_ms=200)

    async def committed(partition: TopicPartition) -> int | None:
        found = (await compat.committed_offsets(member, [partition])).get(partition)
        return None if found is None else found.offset

    transactions = WorkerTransactions(settings, group, member)
    await transactions.start()
    lane, neighbour = transactions.for_partition(first), transactions.for_partition(second)
    orphan = None
    try:
        landed = Outgoing(decisions.topic, b"k", b"landed", 0)
        beside = Outgoing(decisions.topic, b"k", b"beside", 0)
        await asyncio.gather(
            lane.commit([landed], OffsetAndMetadata(5, "")),
            neighbour.commit([beside], OffsetAndMetadata(2, "")),
        )
        assert await lane.landed(OffsetAndMetadata(5, ""))
        assert (await committed(first), await committed(second)) == (5, 2)

        too_large = Outgoing(decisions.topic, b"k", b"x" * (2 * 1024 * 1024), 0)
        refused, aborted = await asyncio.gather(
            lane.commit([too_large], OffsetAndMetadata(6, "")),
            neighbour.commit([beside], OffsetAndMetadata(3, "")),
            return_exceptions=True,
        )
        assert isinstance(refused, ProduceFailed) and list(refused.failed) == [0]
        assert isinstance(aborted, TransactionAborted)
        assert (await committed(first), await committed(second)) == (5, 2)

        # The topic refuses batches over 2,000 bytes (set above): one large record in a
        # partition's batch first aborts the transaction, then is found alone; its
        # neighbours go out.
        neighbours = [
            Outgoing(decisions.topic, b"k", b"before", 0),
            Outgoing(decisions.topic, b"k", b"y" * 3000, 0),
            Outgoing(decisions.topic, b"k", b"after", 0),
        ]
        with pytest.raises(TransactionAborted):
            await lane.commit(neighbours, OffsetAndMetadata(6, ""))
        with pytest.raises(ProduceFailed) as found:
            await lane.commit(neighbours, OffsetAndMetadata(6, ""))
        assert list(found.value.failed) == [1]
        await lane.commit([neighbours[0], neighbours[2]], OffsetAndMetadata(6, ""))

        # A transaction left without its commit:
        orphan = await transactions._started()  # noqa: SLF001
        await orphan.begin_transaction()
        await (await orphan.send(decisions.topic, b"lost", key=b"k", partition=0))
        await orphan.send_offsets_to_transaction({first: OffsetAndMetadata(9, "")}, group)
        transactions._producer = None  # noqa: SLF001 - the connection is gone, the commit unsent
        assert not await lane.landed(OffsetAndMetadata(9, ""))
        assert await committed(first) == 6
        values = [v async for _, _, v in client.read_partition(settings.kafka, decisions)]
        assert values == [b"landed", b"beside", b"before", b"after"]
        with pytest.raises(KafkaError):
            await orphan.commit_transaction()  # fenced
    finally:
        await transactions.close()
        await member.stop()
        if orphan is not None:
            with contextlib.suppress(Exception):
                await orphan.stop()
