"""The Faust application: every topic, agent and table of the pipeline, in one place.

    uploads --hash stage--> uploads.hashed (by uploader) --decide stage--> decisions
       |  |                       ^                                  |-> takedowns, reviews
       |  +-> uploads.video --video stage (events with a video)
       +-> uploads.dlq (unparseable events, original bytes kept)

The stages call the pure core (``modstream.engine``); this module only moves records, keeps
per-uploader state in a table, and counts.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

import faust
from aiokafka.partitioner import DefaultPartitioner
from mode import Service

from modstream.bank.bank import Bank
from modstream.contracts import (
    ContractError,
    DeadLetter,
    Decision,
    HashedBatch,
    HashedUpload,
    MediaSignals,
    TextScore,
    UploadEvent,
    dumps,
    parse_time,
)
from modstream.decide import history
from modstream.engine import (
    Engine,
    Lookups,
    failed_media,
    hash_media,
    media_failure,
    score_texts,
    struck,
)
from modstream.ingest.fetch import Fetcher, FetchPolicy
from modstream.ingest.sources import clear_scratch, load_media, video_file
from modstream.ingest.trust import PlatformBinding, platform_topic
from modstream.ingest.urls import redact_urls
from modstream.matching import hamming
from modstream.settings import KafkaAccess, Settings
from modstream.stages.pool import HashingPool
from modstream.stream import faust_compat, metrics, topics
from modstream.stream.banksync import BankReplica

log = logging.getLogger("modstream.stream")


def build_app(settings: Settings) -> faust.App:
    datadir = settings.data_dir / f"worker-{settings.web_port}"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=settings.kafka_url,
        broker_credentials=faust_credentials(settings.kafka),
        web_port=settings.web_port,
        web_host=settings.web_host,
        web_bind=settings.web_host,  # Faust binds every interface unless told
        datadir=str(datadir),
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        producer_linger=0.005,
        # Dead letters carry a whole refused record (base64): more than Kafka's 1 MB default.
        producer_max_request_size=topics.MAX_DEAD_LETTER_BYTES,
        broker_commit_interval=1.0,
        # A crashed worker's partitions move to the others after this long.
        broker_session_timeout=15.0,
        broker_heartbeat_interval=3.0,
        stream_wait_empty=False,
    )
    # Faust's own consumer can lose events when a worker restarts, and its sensors cost a
    # third of a worker's time: both replaced (see the module).
    faust_compat.install(app)

    def topic(name: str, *more: str, partitions: int | None = None) -> faust.TopicT:
        return app.topic(
            settings.topic(name),
            *(settings.topic(n) for n in more),
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions or settings.partitions,
            internal=False,
        )

    binding = PlatformBinding.of(settings.platforms, settings.topic)
    uploads = topic(topics.UPLOADS, *(platform_topic(p) for p in settings.platforms))
    hashed = topic(topics.HASHED)
    video_uploads = topic(topics.VIDEO)
    decisions, takedowns, reviews = (
        topic(topics.DECISIONS),
        topic(topics.TAKEDOWNS),
        topic(topics.REVIEWS),
    )
    dead_letters = topic(topics.DLQ, partitions=1)
    actionable_topics = {"takedown": takedowns, "review": reviews}
    # Keyed by the uploader key (``platform/uploader``) with the partition count of
    # uploads.hashed, where the hash stage puts each event in the partition Kafka's default
    # partitioner gives its uploader key; the producer's partitioner puts each changelog
    # record in that same partition, so the table stays co-partitioned with the events.
    uploader_history = app.Table(
        "uploader_history",
        default=history.empty,
        partitions=settings.partitions,
        key_type=bytes,
        use_partitioner=True,
    )

    bank = Bank(settings.thresholds, settings.index_layout)
    replica = BankReplica(
        bank,
        settings.kafka,
        settings.topic(topics.HASHBANK),
        # Shared by the workers of one data dir: snapshots are swapped in atomically.
        snapshot_link=settings.data_dir / "bank-snapshot",
        snapshot_interval_s=settings.bank_snapshot_interval_s,
        loop=app.loop,
    )
    engine = Engine.from_settings(settings, bank)
    fetcher = Fetcher(
        FetchPolicy(
            settings.fetch_allow,
            settings.fetch_max_bytes,
            settings.fetch_timeout_s,
            settings.fetch_max_redirects,
            settings.video_max_bytes,
            settings.video_fetch_timeout_s,
        )
    )
    scratch = datadir / "media-scratch"  # downloaded videos while they are hashed
    clear_scratch(scratch)
    # Videos may take all hashing processes but one, which stays free for images.
    video_slots = asyncio.Semaphore(max(1, settings.hash_workers - 1))
    pool = HashingPool(settings.hash_workers, settings.hash_memory_limit)

    warmed = asyncio.Event()  # index kernels compiled, hashing pool started

    @app.service
    class WorkerResources(Service):
        """Starts and stops the bank replica, the hashing pool and the fetcher with the worker."""

        async def on_start(self) -> None:
            await replica.start()
            await asyncio.gather(app.loop.run_in_executor(None, hamming.warm_up), pool.start())
            warmed.set()

        async def on_stop(self) -> None:
            await replica.stop()
            await fetcher.close()
            pool.shutdown()

    @app.timer(interval=2.0)
    async def check_hashing_pool() -> None:
        """Replace a pool whose idle process died, so /ready tells before an event fails."""
        pool.check()

    @app.page("/live")
    async def live(web, request):
        return web.json({"live": True})

    @app.page("/ready")
    async def ready(web, request):
        is_ready = replica.ready.is_set() and warmed.is_set() and pool.healthy
        body = {
            "ready": is_ready,
            "hashing_pool": "healthy" if pool.healthy else "broken or starting",
            "bank_entries": len(bank),
            "bank_from_snapshot": replica.restored,
            # Which partitions this worker owns now: what on-call needs after a rebalance.
            "assigned": sorted(f"{tp.topic}:{tp.partition}" for tp in app.consumer.assignment()),
        }
        return web.json(body, status=200 if is_ready else 503)

    async def produce(
        topic: faust.TopicT, key: bytes | None, value: bytes, partition: int | None = None
    ) -> asyncio.Future:
        """Hand one record straight to the Kafka producer under Faust's, skipping Faust's
        per-record channel and signal machinery (a measurable share of each event's cost);
        partitioned by key as ``Topic.send`` is, unless ``partition`` is given. Faust flushes
        this same producer before it commits offsets."""
        return await faust_compat.kafka_producer(app).send(
            topic.get_topic_name(), value, key=key, partition=partition
        )

    def watch_deliveries(deliveries: list[asyncio.Future]) -> None:
        """At-least-once without waiting per batch: Faust flushes the producer before it
        commits any offset, so a record handed to the producer is in Kafka before the event
        that produced it counts as done. A send that fails is logged."""
        for delivery in deliveries:
            delivery.add_done_callback(_report_failed_send)

    done_offsets: dict[tuple[str, int], int] = {}  # next offset to finish, per partition
    lag_reported: set[tuple[str, int]] = set()

    def mark_done(events: Sequence[faust.EventT]) -> None:
        for event in events:
            message = event.message
            done_offsets[(message.topic, message.partition)] = message.offset + 1

    @app.timer(interval=5.0)
    async def measure_consumer_lag() -> None:
        """Records each owned partition holds beyond what this worker has finished."""
        owned = {(tp.topic, tp.partition) for tp in app.consumer.assignment()}
        stage_topics = {settings.topic(t) for t in (topics.UPLOADS, topics.VIDEO, topics.HASHED)}
        for topic_name, partition in owned:
            if topic_name not in stage_topics:
                continue
            tp = faust.types.TP(topic_name, partition)
            done = done_offsets.get((topic_name, partition))
            if done is None:
                done = await app.consumer.position(tp) or 0
            lag = max(0, app.consumer.highwater(tp) - done)
            metrics.CONSUMER_LAG.labels(topic=topic_name, partition=str(partition)).set(lag)
            lag_reported.add((topic_name, partition))
        for topic_name, partition in lag_reported - owned:  # moved to another worker
            lag_reported.discard((topic_name, partition))
            done_offsets.pop((topic_name, partition), None)
            metrics.CONSUMER_LAG.remove(topic_name, str(partition))

    @app.task
    async def measure_event_loop_lag() -> None:
        """A loop busy with CPU work stops heartbeats and triggers rebalances: watch it."""
        interval = 0.5
        while True:
            started = app.loop.time()
            await asyncio.sleep(interval)
            metrics.EVENT_LOOP_LAG.set(max(0.0, app.loop.time() - started - interval))

    async def send_dead_letter(
        event: faust.EventT, error: str, reason: str, stage: str = "ingest"
    ) -> None:
        message = event.message
        error = redact_urls(error)  # the reason leaves the process; the original bytes are kept
        letter = DeadLetter.of(
            message.value,
            message.key,
            error,
            stage=stage,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            failed_at=time.time(),
        )
        metrics.DEAD_LETTERS.labels(stage=stage, reason=reason).inc()
        log.warning(
            "dead letter",
            extra={"topic": message.topic, "offset": message.offset, "error": error[:300]},
        )
        await dead_letters.send(key=message.key, value=dumps(letter), force=True)

    async def guarded(stage: str, process, events: Sequence[faust.EventT]) -> None:
        """Run a stage (``process(events, stage)``) on a batch; if it fails unexpectedly (a
        bug, not bad input), every event of the batch goes to the dead-letter topic with the
        error, and the stream goes on, instead of the agent crashing with events taken but
        not processed."""
        try:
            await process(events, stage)
        except Exception as exc:
            log.error("%s stage failed on a batch of %d", stage, len(events), exc_info=exc)
            for event in events:
                await send_dead_letter(event, f"internal error: {exc!r}", "internal_error", stage)
            mark_done(events)

    async def signals_of(upload: UploadEvent) -> list[MediaSignals]:
        async def hashed(ref, content: bytes | Path) -> MediaSignals:
            return await pool.run(
                hash_media,
                ref.media_id,
                ref.kind,
                content,
                settings.max_image_pixels,
                settings.video_sampling,
            )

        async def one(ref) -> MediaSignals:
            try:
                if ref.kind == "video":
                    # Downloads wait for no slot; hashing does (the slot is taken second).
                    async with (
                        video_file(ref, fetcher, settings.media_root, scratch) as path,
                        video_slots,
                    ):
                        result = await hashed(ref, path)
                else:
                    result = await hashed(ref, await load_media(ref, fetcher, settings.media_root))
            except Exception as exc:  # one item's failure never sinks the event
                error = media_failure(exc)
                if error.reason == "internal_error":
                    log.error("media item failed unexpectedly", exc_info=exc)
                metrics.MEDIA_FAILURES.labels(source=ref.source, reason=error.reason).inc()
                return failed_media(ref.media_id, ref.kind, error)
            if result.error_reason:
                metrics.MEDIA_FAILURES.labels(source="decode", reason=result.error_reason).inc()
            return result

        return list(await asyncio.gather(*(one(ref) for ref in upload.media)))

    async def text_scores_of(uploads: list[UploadEvent]) -> dict[str, TextScore]:
        """The batch's posts scored off the event loop, split over the pool's processes; none
        if scoring fails (the decide stage scores them instead)."""
        texted = [u for u in uploads if u.text]
        if not texted:
            return {}
        share = -(-len(texted) // settings.hash_workers)  # one task per pool process
        chunks = [texted[i : i + share] for i in range(0, len(texted), share)]
        try:
            scored = await asyncio.gather(
                *(pool.run(score_texts, settings.text_model, [u.text for u in c]) for c in chunks)
            )
        except Exception as exc:
            log.error("scoring texts failed", exc_info=exc)
            return {}
        return {
            u.event_id: score
            for chunk, scores in zip(chunks, scored, strict=True)
            for u, score in zip(chunk, scores, strict=True)
        }

    def parsed(event: faust.EventT) -> UploadEvent | ContractError:
        try:
            return UploadEvent.parse(event.message.value or b"")
        except ContractError as exc:
            return exc

    @functools.lru_cache(maxsize=65536)
    def hashed_partition(uploader_key: str) -> int:
        """The uploads.hashed partition of an uploader, by Kafka's default partitioner: the
        same one that places the uploader's table records."""
        return partition_for(uploader_key.encode(), hashed_partitions, hashed_partitions)

    hashed_partitions = list(range(settings.partitions))
    partition_for = DefaultPartitioner()

    def batches(stream: faust.StreamT) -> AsyncIterator[Sequence[faust.EventT]]:
        return faust_compat.batches(stream, settings.batch_size, settings.batch_within_s)

    @app.agent(uploads, name="hash_stage")
    async def hash_stage(stream: faust.StreamT) -> None:
        """Validate, fetch and hash a batch concurrently, score its texts, and forward it as
        one record per uploader partition. Events with a video go to the video stage."""
        async for events in batches(stream):
            await guarded("hash", hash_batch, events)

    @app.agent(video_uploads, name="video_stage")
    async def video_stage(stream: faust.StreamT) -> None:
        """The hash stage for events with a video: a long video takes minutes to fetch and
        hash, and here it holds up only other videos, never images and text."""
        async for events in batches(stream):
            await guarded("video", hash_batch, events)

    async def hash_batch(events: Sequence[faust.EventT], stage: str) -> None:
        """The hash stage (``hash``) or the video stage (``video``) on one batch."""
        started = time.perf_counter()
        valid: list[tuple[faust.EventT, UploadEvent]] = []
        diverted = []
        for event, result in zip(events, map(parsed, events), strict=True):
            if isinstance(result, ContractError):
                await send_dead_letter(event, str(result), "invalid_event")
            elif stage == "hash" and (
                refused := binding.refusal(event.message.topic, result.platform)
            ):
                await send_dead_letter(event, refused[1], refused[0])
            elif stage == "hash" and any(m.kind == "video" for m in result.media):
                message = event.message
                diverted.append(await produce(video_uploads, message.key, message.value or b""))
            else:
                valid.append((event, result))
        watch_deliveries(diverted)
        batch_uploads = [upload for _, upload in valid]
        media, scores = await asyncio.gather(
            asyncio.gather(
                *(signals_of(u) for u in batch_uploads if u.media), return_exceptions=True
            ),
            text_scores_of(batch_uploads),
        )
        media_of = iter(media)
        by_partition: dict[int, list[bytes]] = {}
        for event, upload in valid:
            signals = next(media_of) if upload.media else []
            if isinstance(signals, BaseException):
                log.error("hashing failed", exc_info=signals)
                await send_dead_letter(
                    event, f"internal error: {signals!r}", "internal_error", stage
                )
                continue
            handed_off = HashedUpload(
                event=replace(upload, media=()),  # the decide stage needs the signals only
                media=tuple(signals),
                received_at=event.message.timestamp,
                text_score=scores.get(upload.event_id),
            )
            by_partition.setdefault(hashed_partition(upload.uploader_key), []).append(
                handed_off.to_json(settings.max_record_bytes)
            )
        deliveries = [
            await produce(hashed, None, record, partition)
            for partition, serialized in by_partition.items()
            for record in HashedBatch.records(serialized, settings.max_record_bytes)
        ]
        watch_deliveries(deliveries)
        mark_done(events)
        metrics.count_hashed(
            stage, [upload.platform for _, upload in valid], time.perf_counter() - started
        )

    @app.agent(hashed, name="decide_stage")
    async def decide_stage(stream: faust.StreamT) -> None:
        """Match, score and decide each event; per-uploader strikes live in the table."""
        await replica.ready.wait()
        async for events in batches(stream):
            await guarded("decide", decide_batch, events)

    async def decide_batch(events: Sequence[faust.EventT], stage: str) -> None:
        started = time.perf_counter()
        # A batch's decisions are dated by its record's timestamp (when its signals were
        # complete), so a redelivered record yields identical decisions.
        batches = [(HashedBatch.parse(e.message.value or b""), e.message.timestamp) for e in events]
        records = [(record, at) for batch, at in batches for record in batch.uploads]
        # One index search for the whole batch, on a thread: the kernels release the GIL,
        # so a large bank never stalls the event loop.
        lookups = await app.loop.run_in_executor(
            None, engine.lookup, [record.media for record, _ in records]
        )
        deliveries, decided = [], []
        for record, decided_at in records:
            decision = decide_one(record, lookups, round(decided_at, 3))
            payload = decision.to_json()
            event_key = decision.event_id.encode()
            deliveries.append(await produce(decisions, event_key, payload))
            actionable = actionable_topics.get(decision.verdict)
            if actionable is not None:
                deliveries.append(await produce(actionable, event_key, payload))
            decided.append((decision, record.received_at))
        watch_deliveries(deliveries)
        mark_done(events)
        metrics.count_decisions(decided, time.perf_counter() - started)

    def decide_one(record: HashedUpload, lookups: Lookups, decided_at: float) -> Decision:
        upload = record.event
        key = upload.uploader_key.encode()
        past = uploader_history[key]
        created = parse_time(upload.created_at)
        prior = history.prior_strikes(past, upload.event_id, created, settings.repeat_window_s)
        decision = engine.decide(
            upload, record.media, decided_at, prior, lookups, record.text_score
        )
        if struck(decision) and not history.has_strike(past, upload.event_id):
            uploader_history[key] = history.with_strike(past, upload.event_id, created)
        return decision

    return app


def faust_credentials(kafka: KafkaAccess) -> faust.types.auth.CredentialsT | None:
    """The same TLS and SASL settings as every other client of the process, in Faust's terms."""
    if kafka.security_protocol == "SASL_SSL":
        return faust.SASLCredentials(
            username=kafka.username,
            password=kafka.password,
            ssl_context=kafka.ssl_context(),
            mechanism=kafka.sasl_mechanism,
        )
    if kafka.security_protocol == "SSL":
        return faust.SSLCredentials(kafka.ssl_context())
    return None


def _report_failed_send(delivery: asyncio.Future) -> None:
    if not delivery.cancelled() and delivery.exception() is not None:
        log.error("producing a record failed", exc_info=delivery.exception())
