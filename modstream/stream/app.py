"""The Faust application: topics, the uploader table and agents, wired to the stages.

    uploads --hash stage--> uploads.hashed (by uploader) --decide stage--> decisions
       |  |                       ^                                  |-> takedowns, reviews
       |  +-> uploads.video --video stage (events with a video)
       +-> uploads.dlq (unparseable events, original bytes kept)

The stages (``modstream.stages``) do the work; this module only connects them to Kafka, keeps
per-uploader state in a table, runs the worker's resources, and serves health and metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import faust
from mode import Service
from prometheus_client import CollectorRegistry

from modstream.bank.bank import Bank
from modstream.contracts import HASHBANK_TOPIC, HASHED_TOPIC, UPLOADS_TOPIC, VIDEO_TOPIC
from modstream.decide import history
from modstream.engine import Engine
from modstream.ingest.fetch import Fetcher
from modstream.ingest.sources import clear_scratch
from modstream.ingest.trust import PlatformBinding, platform_topic
from modstream.matching import hamming
from modstream.settings import KafkaAccess, Settings
from modstream.stages.decide import DecideStage
from modstream.stages.hash import HashingLimits, HashStage, MediaSource
from modstream.stages.metrics import PipelineMetrics
from modstream.stages.pool import HashingPool
from modstream.stages.ports import Record, guarded
from modstream.stream import faust_compat
from modstream.stream.banksync import BankReplica
from modstream.stream.output import ConsumerLag, KafkaOutput, uploader_partitioner
from modstream.stream.topics import MAX_DEAD_LETTER_BYTES


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
        producer_max_request_size=MAX_DEAD_LETTER_BYTES,
        broker_commit_interval=1.0,
        # A crashed worker's partitions move to the others after this long.
        broker_session_timeout=15.0,
        broker_heartbeat_interval=3.0,
        stream_wait_empty=False,
    )
    registry = CollectorRegistry()  # this app's own: two apps in one process never collide
    metrics = PipelineMetrics(registry)
    faust_compat.install(app, registry)

    def topic(*names: str) -> faust.TopicT:
        return app.topic(
            *map(settings.topic, names),
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
            internal=False,
        )

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
        settings.topic(HASHBANK_TOPIC),
        metrics,
        # Shared by the workers of one data dir: snapshots are swapped in atomically.
        snapshot_link=settings.data_dir / "bank-snapshot",
        snapshot_interval_s=settings.bank_snapshot_interval_s,
        loop=app.loop,
    )
    fetcher = Fetcher(settings.fetch_policy)
    scratch = datadir / "media-scratch"  # downloaded videos while they are hashed
    clear_scratch(scratch)
    pool = HashingPool(settings.hash_workers, settings.hash_memory_limit)
    out = KafkaOutput(app, settings, metrics)
    shared = HashStage(
        name="hash",
        runner=pool,
        media=MediaSource(fetcher, settings.media_root, scratch),
        out=out,
        metrics=metrics,
        limits=HashingLimits.from_settings(settings),
        binding=PlatformBinding.of(settings.platforms, settings.topic),
        hashed_partition=uploader_partitioner(settings.partitions),
        # Videos may take all hashing processes but one, which stays free for images.
        video_slots=asyncio.Semaphore(max(1, settings.hash_workers - 1)),
    )
    hash_stage, video_stage = shared, shared.renamed("video")
    decide_stage = DecideStage(
        engine=Engine.from_settings(settings, bank),
        history=uploader_history,
        out=out,
        metrics=metrics,
        repeat_window_s=settings.repeat_window_s,
    )
    stage_topics = (UPLOADS_TOPIC, VIDEO_TOPIC, HASHED_TOPIC)
    lag = ConsumerLag(app, metrics, {settings.topic(t) for t in stage_topics})
    warmed = asyncio.Event()  # index kernels compiled, hashing pool started

    @app.service
    class WorkerResources(Service):
        """Starts and stops the bank replica, the hashing pool and the fetcher with the worker."""

        async def on_start(self) -> None:
            await replica.start()
            await asyncio.gather(asyncio.to_thread(hamming.warm_up), pool.start())
            warmed.set()

        async def on_stop(self) -> None:
            await replica.stop()
            await fetcher.close()
            pool.shutdown()

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

    @app.timer(interval=2.0)
    async def check_hashing_pool() -> None:
        """Replace a pool whose idle process died, so /ready tells before an event fails."""
        with metrics.periodic("check_hashing_pool"):
            pool.check()

    @app.timer(interval=5.0)
    async def measure_consumer_lag() -> None:
        with metrics.periodic("measure_consumer_lag"):
            await lag.measure()

    @app.task
    async def measure_event_loop_lag() -> None:
        """A loop busy with CPU work stops heartbeats and triggers rebalances: watch it."""
        interval = 0.5
        while True:
            started = app.loop.time()
            await asyncio.sleep(interval)
            metrics.event_loop_lag.set(max(0.0, app.loop.time() - started - interval))

    async def run(name: str, stage: HashStage | DecideStage, stream: faust.StreamT) -> None:
        async for events in faust_compat.batches(
            stream, settings.batch_size, settings.batch_within_s
        ):
            records: Sequence[Record] = [event.message for event in events]
            await guarded(name, stage.process, records, out)
            lag.finished(records)

    platform_topics = [platform_topic(p) for p in settings.platforms]

    @app.agent(topic(UPLOADS_TOPIC, *platform_topics), name="hash_stage")
    async def hash_agent(stream: faust.StreamT) -> None:
        """Validate, fetch and hash; events with a video go to the video stage."""
        await run("hash", hash_stage, stream)

    @app.agent(topic(VIDEO_TOPIC), name="video_stage")
    async def video_agent(stream: faust.StreamT) -> None:
        """Events with a video: a long video holds up only other videos."""
        await run("video", video_stage, stream)

    @app.agent(topic(HASHED_TOPIC), name="decide_stage")
    async def decide_agent(stream: faust.StreamT) -> None:
        """Match, score and decide; per-uploader strikes live in the table."""
        await replica.ready.wait()
        await run("decide", decide_stage, stream)

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
