"""The shell of ``modstream serve``: the bank and its controls replicated from Kafka as on
every worker (``ready`` once both have caught up), a producer whose writes the process waits
to see applied, media hashed in the hashing process pool (never on the event loop) and
fetched with the SSRF-safe fetcher; Uvicorn serving the application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from fastapi import FastAPI

from modstream.bank.bank import Bank
from modstream.bank.controls import BankControls
from modstream.contracts import (
    BANK_CONFIG_TOPIC,
    DECISIONS_TOPIC,
    EXCHANGE_CONFIG_TOPIC,
    EXCHANGE_STATE_TOPIC,
    HASHBANK_TOPIC,
    REVIEW_OUTCOMES_TOPIC,
    UPLOADS_TOPIC,
    MediaError,
    MediaSignals,
    ReviewOutcome,
    UploadEvent,
)
from modstream.engine import hash_media
from modstream.ingest.fetch import Fetcher
from modstream.ingest.trust import OUTCOMES_TOPIC_PREFIX, platform_topic, topic_for
from modstream.serve.access import Gate, KeyRing, RateLimit
from modstream.serve.app import build_api
from modstream.serve.backend import ApiError, Backend
from modstream.serve.exchanges import ExchangeAdmin, ExchangeBook
from modstream.serve.sites import SitePolicy
from modstream.serve.v1 import RecentDecisions
from modstream.settings import Settings
from modstream.stages.metrics import PipelineMetrics
from modstream.stages.pool import HashingPool
from modstream.stream import client
from modstream.stream.banksync import BankReplica
from modstream.stream.replica import StateReplica, TopicReplica
from modstream.stream.topics import ensure_topics

log = logging.getLogger("modstream.serve")
#: How long a write waits to be applied before the request answers 503.
APPLY_TIMEOUT_S = 10.0


class KafkaPublisher:
    """Writes records and waits until this process's replica of the topic has them, so the
    next request (a lookup after an add) sees them."""

    def __init__(self, settings: Settings, replicas: dict[str, TopicReplica]) -> None:
        self.settings = settings
        self.replicas = replicas
        self.producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self.producer = await client.started(
            client.producer(self.settings.kafka, acks="all", linger_ms=2, max_request_size=8 << 20)
        )

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        """One record, acknowledged by the brokers (no replica to wait for)."""
        if self.producer is None:
            raise ApiError(503, "not connected to Kafka yet", retry_after=1)
        await (await self.producer.send(self.settings.topic(topic), key=key, value=value))

    async def publish(self, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
        if self.producer is None:
            raise ApiError(503, "not connected to Kafka yet", retry_after=1)
        producer = self.producer
        futures = [
            await producer.send(self.settings.topic(topic), key=key, value=value)
            for key, value in records
        ]
        written = await asyncio.gather(*futures)
        last: dict[int, int] = {}
        for meta in written:
            last[meta.partition] = max(last.get(meta.partition, -1), meta.offset)
        replica = self.replicas[topic]
        for partition, offset in last.items():
            if not await replica.reached(partition, offset, APPLY_TIMEOUT_S):
                raise ApiError(
                    503, "written, but not yet applied here: retry the read", retry_after=1
                )


class KafkaSubmitter:
    """Uploads to the pipeline's topic (a bound platform's own topic), outcomes to
    ``review.outcomes``, both keyed as their producers are expected to key them."""

    def __init__(self, settings: Settings, publisher: KafkaPublisher) -> None:
        self.settings = settings
        self.publisher = publisher

    async def upload(self, event: UploadEvent, raw: bytes) -> None:
        topic = (
            platform_topic(event.platform)
            if event.platform in self.settings.platforms
            else UPLOADS_TOPIC
        )
        await self.publisher.send(topic, event.content_id.encode(), raw)

    async def review_outcome(self, outcome: ReviewOutcome, raw: bytes) -> None:
        topic = topic_for(
            outcome.platform, REVIEW_OUTCOMES_TOPIC, self.settings.platforms, OUTCOMES_TOPIC_PREFIX
        )
        await self.publisher.send(topic, outcome.decision_id.encode(), raw)


def decision_of(value: bytes | None) -> dict[str, Any] | None:
    """A record of ``decisions`` as a decision, or None for what is not a JSON object."""
    try:
        found = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    return found if isinstance(found, dict) else None


class DecisionTail:
    """Every committed decision from the moment the server started, into ``decisions``;
    supervised: a failure (a Kafka error) is logged, ``running`` turns false (``/ready``
    says so) and the tail starts again after a backoff (doubling up to ``max_backoff_s``),
    from where it was. Records that are not decisions are skipped and counted."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[AIOKafkaConsumer]],
        topic: str,
        decisions: RecentDecisions,
        first_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.connect, self.topic, self.decisions = connect, topic, decisions
        self.first_backoff_s, self.max_backoff_s = first_backoff_s, max_backoff_s
        self.running = False
        self.restarts = 0
        self.skipped = 0
        self._next: dict[TopicPartition, int] = {}  # the next offset to read, once read
        self._polls = 0  # since the last start: a tail that ran resets the backoff

    async def run(self) -> None:
        backoff = self.first_backoff_s
        while True:
            self._polls = 0
            try:
                await self._tail()
            except Exception:  # a cancellation is not one: it ends the tail
                self.restarts += 1
                if self._polls:
                    backoff = self.first_backoff_s
                log.exception("the decisions tail failed; restarting in %.1f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)

    async def _tail(self) -> None:
        reader = await self.connect()
        try:
            partitions = await client.topic_partitions(reader, self.topic)
            reader.assign(partitions)
            new = [p for p in partitions if p not in self._next]
            if new:  # (with none, aiokafka would seek every partition to its end)
                await reader.seek_to_end(*new)
            for partition in partitions:
                if partition in self._next:
                    reader.seek(partition, self._next[partition])
            self.running = True
            while True:
                batches = await reader.getmany(timeout_ms=500)
                self._polls += 1
                for partition, records in batches.items():
                    for record in records:
                        decision = decision_of(record.value)
                        if decision is None:
                            self.skipped += 1
                        else:
                            self.decisions.add(decision)
                        self._next[partition] = record.offset + 1
        finally:
            self.running = False
            await reader.stop()


def build_server_app(settings: Settings, host: str = "127.0.0.1") -> FastAPI:
    """The application with its Kafka-backed backend, started and stopped with the server
    (bound to ``host``: the names it answers for, ``sites``)."""
    controls = BankControls()
    bank = Bank(settings.thresholds, settings.index_layout, controls)
    metrics = PipelineMetrics()
    pool = HashingPool(settings.hash_workers, settings.hash_memory_limit)
    fetcher = Fetcher(settings.fetch_policy)
    replicas: dict[str, TopicReplica] = {}

    async def hasher(kind: str, data: bytes) -> MediaSignals:
        try:
            return await pool.run(
                hash_media, "upload", kind, data, settings.max_image_pixels, settings.video_sampling
            )
        except MediaError as exc:
            raise ApiError(400, f"could not hash the upload: {exc}") from None

    async def fetch(url: str) -> bytes:
        try:
            return await fetcher.fetch(url)
        except MediaError as exc:
            raise ApiError(400, f"Failed to fetch URL: {exc}") from None

    def ready() -> bool:
        return bool(replicas) and all(r.ready.is_set() for r in replicas.values())

    publisher = KafkaPublisher(settings, replicas)
    backend = Backend(
        bank, controls, publisher, hasher, fetch, ready, settings.api_hash_jobs_per_caller,
        hash_types=settings.api_hash_types,
    )  # fmt: skip
    exchanges = ExchangeBook()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await ensure_topics(settings)
        loop = asyncio.get_running_loop()
        replicas[HASHBANK_TOPIC] = BankReplica(
            bank, settings.kafka, settings.topic(HASHBANK_TOPIC), metrics,
            snapshot_link=settings.data_dir / "bank-snapshot", snapshot_interval_s=0, loop=loop,
        )  # fmt: skip
        replicas[BANK_CONFIG_TOPIC] = StateReplica(
            controls, settings.kafka, settings.topic(BANK_CONFIG_TOPIC), metrics, loop=loop
        )
        for topic, table in ((EXCHANGE_CONFIG_TOPIC, exchanges.config_table),
                             (EXCHANGE_STATE_TOPIC, exchanges.state_table)):  # fmt: skip
            replicas[topic] = StateReplica(
                table, settings.kafka, settings.topic(topic), metrics, loop=loop
            )
        await publisher.start()
        await asyncio.gather(*(r.start() for r in replicas.values()), pool.start())
        tail = asyncio.create_task(decisions_tail.run(), name="decisions")
        log.info("serving", extra={"entries": len(bank)})
        try:
            yield
        finally:
            tail.cancel()
            await asyncio.gather(tail, return_exceptions=True)
            for replica in replicas.values():
                await replica.stop()
            await publisher.stop()
            await fetcher.close()
            pool.shutdown()

    keys = KeyRing(settings.api_keys_file) if settings.api_keys_file else None
    if keys is not None and keys.error:
        raise ValueError(keys.error)
    gate = Gate(
        keys,
        RateLimit(settings.api_rate_per_s, settings.api_burst),
        RateLimit(settings.api_prekey_rate_per_s, settings.api_prekey_burst),
    )
    recent = RecentDecisions()
    decisions_tail = DecisionTail(
        lambda: client.started(client.committed_reader(settings.kafka)),
        settings.topic(DECISIONS_TOPIC),
        recent,
    )
    api = build_api(
        backend,
        gate,
        v1=(KafkaSubmitter(settings, publisher), recent),
        exchanges=ExchangeAdmin(
            backend, exchanges, settings.api_exchange_files_dir, settings.api_credentials_dir
        ),
        sites=SitePolicy.for_server(host, settings.api_allowed_hosts),
        checks={"decisions": lambda: decisions_tail.running},
    )
    api.router.lifespan_context = lifespan
    return api


def run_server(settings: Settings, host: str, port: int, allow_anonymous: bool = False) -> None:
    if settings.api_keys_file is None and not allow_anonymous and not _loopback(host):
        raise ValueError(
            f"refusing to serve on {host} without API keys: set MODSTREAM_API_KEYS_FILE "
            "(modstream api-key create), or pass --allow-anonymous behind a trusted proxy"
        )
    if settings.api_tls_certfile is None and not _loopback(host):
        log.warning(
            "serving plain HTTP on a non-loopback address: API keys cross the network in "
            "clear unless a proxy in front terminates TLS (MODSTREAM_API_TLS_CERTFILE)",
            extra={"host": host},
        )
    config = uvicorn.Config(
        build_server_app(settings, host),
        host=host,
        port=port,
        log_config=None,  # modstream's logging (JSON lines)
        access_log=False,
        timeout_graceful_shutdown=10,
        limit_concurrency=1000,
        ssl_certfile=settings.api_tls_certfile,
        ssl_keyfile=settings.api_tls_keyfile,
    )
    uvicorn.Server(config).run()


def _loopback(host: str) -> bool:
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
