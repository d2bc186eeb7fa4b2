"""The Faust application: the worker's services, web pages and timers around the stages.

    uploads --hash stage--> uploads.hashed (by uploader) --decide stage--> decisions
       |  |                       ^                                  |-> takedowns, reviews
       |  +-> uploads.video --video stage (events with a video)      +-> review.cases
       +-> uploads.dlq (unparseable events, original bytes kept)

    review.outcomes --route--> review.outcomes.routed (by decision id, beside its case)
        --review stage--> decisions (human), takedowns, reviews, reinstatements,
                          review.verdicts, hashbank, bank.config

    hashbank, bank.config, review.verdicts: replicated whole into every worker

The stages (``modstream.stages``) do the work; ``pipeline`` moves their records in and out of
Kafka (in transactions); this module wires them, runs the worker's resources, and serves
health and metrics.
"""

from __future__ import annotations

import asyncio

import faust
from faust.app import BootStrategy
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from modstream.bank.bank import Bank
from modstream.bank.controls import BankControls
from modstream.contracts import (
    BANK_CONFIG_TOPIC,
    HASHBANK_TOPIC,
    HASHED_TOPIC,
    HUMAN_VERDICTS_TOPIC,
    REVIEW_OUTCOMES_TOPIC,
    REVIEW_ROUTED_TOPIC,
    UPLOADS_TOPIC,
    VIDEO_TOPIC,
)
from modstream.decide.review import HumanVerdicts
from modstream.engine import Engine, score_texts
from modstream.ingest.fetch import Fetcher
from modstream.ingest.sources import clear_scratch
from modstream.ingest.trust import (
    OUTCOMES_TOPIC_PREFIX,
    PlatformBinding,
    outcomes_topic,
    platform_topic,
)
from modstream.matching import hamming
from modstream.settings import Settings
from modstream.stages.decide import DecideStage, flood_watch
from modstream.stages.hash import HashingLimits, HashStage, MediaSource
from modstream.stages.metrics import PipelineMetrics
from modstream.stages.pool import HashingPool
from modstream.stages.ports import Record
from modstream.stages.review import ReviewRouteStage, ReviewStage
from modstream.stream.banksync import BankReplica
from modstream.stream.case_store import CaseStore
from modstream.stream.history_store import UploaderHistory
from modstream.stream.output import key_partitioner
from modstream.stream.pipeline import PipelineOutput, Route, StagePipeline
from modstream.stream.replica import StateReplica

#: Prometheus' text format (aiohttp refuses a charset inside the content type).
PROMETHEUS_TEXT = CONTENT_TYPE_LATEST.split(";")[0]


def build_app(settings: Settings) -> faust.App:
    datadir = settings.data_dir / f"worker-{settings.web_port}"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        web_port=settings.web_port,
        web_host=settings.web_host,
        web_bind=settings.web_host,  # Faust binds every interface unless told
        datadir=str(datadir),
    )
    # Faust runs the worker's services, web pages and timers; Kafka is the pipeline's. Faust's
    # own consumer would join a consumer group and, after a kill -9, hold the restarted
    # worker until the dead member's session expires.
    app.boot_strategy = BootStrategy(app, enable_kafka=False)
    registry = CollectorRegistry()  # this app's own: two apps in one process never collide
    metrics = PipelineMetrics(registry)

    controls, verdicts = BankControls(), HumanVerdicts()
    bank = Bank(settings.thresholds, settings.index_layout, controls)
    replica = BankReplica(
        bank,
        settings.kafka,
        settings.topic(HASHBANK_TOPIC),
        metrics,
        # Shared by the workers of one data dir: snapshots are swapped in atomically.
        snapshot_link=settings.data_dir / "bank-snapshot",
        snapshot_interval_s=settings.bank_snapshot_interval_s,
        replay_in_child_above=settings.bank_replay_in_child_above,
        log_format=settings.log_format,
        loop=app.loop,
    )
    replicas = [
        replica,
        StateReplica(
            controls, settings.kafka, settings.topic(BANK_CONFIG_TOPIC), metrics, loop=app.loop
        ),
        StateReplica(
            verdicts, settings.kafka, settings.topic(HUMAN_VERDICTS_TOPIC), metrics, loop=app.loop
        ),
    ]
    fetcher = Fetcher(settings.fetch_policy)
    scratch = datadir / "media-scratch"  # downloaded videos while they are hashed
    clear_scratch(scratch)
    pool = HashingPool(settings.hash_workers, settings.hash_memory_limit)
    out = PipelineOutput(settings, metrics)
    partition_of = key_partitioner(settings.partitions)
    uploader_history = UploaderHistory(settings, out, partition_of)
    shared = HashStage(
        name="hash",
        runner=pool,
        media=MediaSource(fetcher, settings.media_root, scratch, bool(settings.platforms)),
        out=out,
        metrics=metrics,
        limits=HashingLimits.from_settings(settings),
        binding=PlatformBinding.of(settings.platforms, settings.topic),
        hashed_partition=partition_of,
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
        verdicts=verdicts,
        case_partition=partition_of,
        flood=flood_watch(settings),
        bound_platforms=frozenset(settings.platforms),
    )
    cases = CaseStore(settings, out, datadir / "review-cases.sqlite", metrics)
    review_stage = ReviewStage(
        cases=cases,
        controls=controls,
        out=out,
        metrics=metrics,
        pdq_min_quality=settings.pdq_min_quality,
        bank_entry=bank.entry,
        bound_platforms=frozenset(settings.platforms),
    )
    platform_topics = [platform_topic(p) for p in settings.platforms]
    outcomes_binding = PlatformBinding.of(settings.platforms, settings.topic, OUTCOMES_TOPIC_PREFIX)
    review_route = Route(
        "review-route",
        ReviewRouteStage(out, metrics, partition_of, outcomes_binding).process,
        concurrency=1,
    )
    hashing = Route("hash", hash_stage.process, concurrency=32, alone=fetched)
    routes = {
        **{settings.topic(t): hashing for t in (UPLOADS_TOPIC, *platform_topics)},
        # Each video its own batch: a long one holds up no other.
        settings.topic(VIDEO_TOPIC): Route(
            "video", video_stage.process, concurrency=8, alone=lambda record: True
        ),
        settings.topic(HASHED_TOPIC): Route(
            "decide",
            decide_stage.process,
            concurrency=1,  # in order: an uploader's strikes count its earlier events
            assigned=uploader_history.restore,
            revoked=uploader_history.forget,
        ),
        **{
            settings.topic(t): review_route
            for t in (REVIEW_OUTCOMES_TOPIC, *(outcomes_topic(p) for p in settings.platforms))
        },
        settings.topic(REVIEW_ROUTED_TOPIC): Route(
            "review",
            review_stage.process,
            concurrency=1,  # in order: a case's outcomes apply one after the other
            assigned=cases.restore,
            revoked=cases.forget,
        ),
    }
    pipeline = StagePipeline(settings, routes, out, metrics)
    warmed = asyncio.Event()  # index kernels compiled, hashing pool started

    @app.service
    class WorkerResources(Service):
        """Starts and stops the replicas, the hashing pool and the fetcher with the worker."""

        async def on_start(self) -> None:
            # Together: each takes a second to connect, and a restart that outlasts the
            # session timeout costs the group a rebalance (static membership).
            await asyncio.gather(*(each.start() for each in replicas))
            await asyncio.gather(asyncio.to_thread(hamming.warm_up), pool.start())
            # Each process loads the text model on its first post (~1 s): before, not then.
            await asyncio.gather(
                *(
                    pool.run(score_texts, settings.text_model, ["warm up"], settings.text_lexicon)
                    for _ in range(settings.hash_workers)
                )
            )
            warmed.set()
            self.add_future(self._start_pipeline())

        async def _start_pipeline(self) -> None:
            """Decisions need the bank, its controls and the human verdicts: the stages start
            once every replica has caught up."""
            await asyncio.gather(*(each.ready.wait() for each in replicas))
            await pipeline.start()

        async def on_stop(self) -> None:
            await pipeline.stop()  # finishes and commits what is in flight first
            await cases.close()
            for each in replicas:
                await each.stop()
            await fetcher.close()
            pool.shutdown()

    @app.page("/metrics")
    async def prometheus_metrics(web, request):
        return web.bytes(generate_latest(registry), content_type=PROMETHEUS_TEXT)

    @app.page("/live")
    async def live(web, request):
        return web.json({"live": True})

    @app.page("/ready")
    async def ready(web, request):
        is_ready = pipeline.running and warmed.is_set() and pool.healthy
        body = {
            "ready": is_ready,
            "hashing_pool": "healthy" if pool.healthy else "broken or starting",
            "bank_entries": len(bank),
            "bank_from_snapshot": replica.restored,
            "bank_replayed_in_child": replica.replayed_in_child,
            # Which partitions this worker owns now: what on-call needs after a rebalance.
            "assigned": sorted(f"{tp.topic}:{tp.partition}" for tp in pipeline.lanes),
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
            pipeline.measure_lag()

    @app.timer(interval=5.0)
    async def show_quarantined_entries() -> None:
        with metrics.periodic("show_quarantined_entries"):
            metrics.show_quarantined(controls.quarantined())

    @app.task
    async def measure_event_loop_lag() -> None:
        """A loop busy with CPU work stops heartbeats and triggers rebalances: watch it."""
        interval = 0.5
        while True:
            started = app.loop.time()
            await asyncio.sleep(interval)
            metrics.event_loop_lag.set(max(0.0, app.loop.time() - started - interval))

    return app


def fetched(record: Record) -> bool:
    """Whether an upload may name media by URL (its fetch may hang): a cheap look at the raw
    bytes; a miss only costs waiting with the rest of the batch."""
    return b'"url"' in (record.value or b"")
