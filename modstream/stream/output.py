"""The stages' ports over Kafka: records out through the producer under Faust's, dead
letters, and the consumer-lag accounting of what the stages have finished."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import faust
from aiokafka.partitioner import DefaultPartitioner

from modstream.contracts import DLQ_TOPIC, DeadLetter, dumps
from modstream.ingest.urls import redact_urls
from modstream.settings import Settings
from modstream.stages.metrics import PipelineMetrics
from modstream.stages.ports import Record, watch
from modstream.stream import faust_compat

log = logging.getLogger("modstream.stream")


class KafkaOutput:
    """``modstream.stages.ports.Output`` on the worker's Kafka producer."""

    def __init__(self, app: faust.App, settings: Settings, metrics: PipelineMetrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics

    async def send(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None = None
    ) -> asyncio.Future[Any]:
        """Hand one record straight to the Kafka producer under Faust's, skipping Faust's
        per-record channel and signal machinery (a measurable share of each event's cost);
        partitioned by key as ``Topic.send`` is, unless ``partition`` is given. Faust flushes
        this same producer before it commits offsets."""
        producer = faust_compat.kafka_producer(self.app)
        future: asyncio.Future[Any] = await producer.send(
            self.settings.topic(topic), value, key=key, partition=partition
        )
        return future

    async def dead_letter(self, record: Record, error: str, reason: str, stage: str) -> None:
        error = redact_urls(error)  # the reason leaves the process; the original bytes are kept
        letter = DeadLetter.of(
            record.value,
            record.key,
            error,
            stage=stage,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            failed_at=time.time(),
        )
        self.metrics.dead_letters.labels(stage=stage, reason=reason).inc()
        log.warning(
            "dead letter",
            extra={"topic": record.topic, "offset": record.offset, "error": error[:300]},
        )
        watch([await self.send(DLQ_TOPIC, record.key, dumps(letter))])


def uploader_partitioner(partitions: int) -> Callable[[str], int]:
    """The ``uploads.hashed`` partition of an uploader key, by Kafka's default partitioner:
    the same one that places the uploader's table records (cached: uploaders repeat)."""
    all_partitions = list(range(partitions))
    partition_for = DefaultPartitioner()

    @functools.lru_cache(maxsize=65536)
    def partition(uploader_key: str) -> int:
        return int(partition_for(uploader_key.encode(), all_partitions, all_partitions))

    return partition


class ConsumerLag:
    """Records each owned partition holds beyond what this worker has finished."""

    def __init__(self, app: faust.App, metrics: PipelineMetrics, stage_topics: set[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.stage_topics = stage_topics
        self._done: dict[tuple[str, int], int] = {}  # next offset to finish, per partition
        self._reported: set[tuple[str, int]] = set()

    def finished(self, records: Sequence[Record]) -> None:
        for record in records:
            self._done[(record.topic, record.partition)] = record.offset + 1

    async def measure(self) -> None:
        consumer = self.app.consumer
        owned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        for topic, partition in owned:
            if topic not in self.stage_topics:
                continue
            tp = faust.types.TP(topic, partition)
            highwater = consumer.highwater(tp)
            if highwater is None:  # just assigned: the first fetch has not said yet
                continue
            done = self._done.get((topic, partition))
            if done is None:
                done = await consumer.position(tp) or 0
            lag = max(0, highwater - done)
            self.metrics.consumer_lag.labels(topic=topic, partition=str(partition)).set(lag)
            self._reported.add((topic, partition))
        for topic, partition in self._reported - owned:  # moved to another worker
            self._reported.discard((topic, partition))
            self._done.pop((topic, partition), None)
            self.metrics.consumer_lag.remove(topic, str(partition))
