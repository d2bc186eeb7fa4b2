"""Replicates the compacted ``hashbank`` topic into this worker's in-memory bank.

Every worker reads every partition from the beginning without a consumer group, applies each
change to the bank's indexes in place, and keeps tailing; a change is live within one poll
(~0.2 s). ``ready`` is set once the worker has caught up with the offsets the topic had at
start, so decisions never run against a half-loaded bank. See docs/bank-replication.md for why
this replaces a Faust GlobalTable.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from mode import Service

from pipeline.contracts import BankEntry, ContractError
from pipeline.matching.bank import Bank
from pipeline.stream import metrics
from pipeline.stream.client import topic_partitions

log = logging.getLogger("modstream.bank")


class BankReplica(Service):
    def __init__(self, bank: Bank, bootstrap: str, topic: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bank = bank
        self.bootstrap = bootstrap
        self.topic = topic
        self.ready = asyncio.Event()
        self.applied = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._targets: dict[TopicPartition, int] = {}

    async def on_start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=2000,
        )
        await self._consumer.start()
        partitions = await topic_partitions(self._consumer, self.topic)
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        self._targets = {
            tp: off for tp, off in (await self._consumer.end_offsets(partitions)).items() if off > 0
        }
        log.info(
            "bank replication started", extra={"topic": self.topic, "partitions": len(partitions)}
        )
        self._check_ready()

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    @Service.task
    async def _tail(self) -> None:
        assert self._consumer is not None
        while not self.should_stop:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    self._apply(record.key, record.value)
                await asyncio.sleep(0)  # let the pipeline run between large batches
            if batches:
                self._publish_sizes()
            for tp, target in list(self._targets.items()):
                if await self._consumer.position(tp) >= target:
                    del self._targets[tp]
            self._check_ready()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        try:
            if key is None:
                raise ContractError("bank record without a key")
            text_key = key.decode()
            entry = None if value is None else BankEntry.parse(value)
            if entry is not None and entry.key != text_key:
                raise ContractError(f"key {text_key!r} does not match entry {entry.key!r}")
            self.bank.apply(text_key, entry)
        except (ContractError, ValueError, KeyError, UnicodeDecodeError) as exc:
            metrics.DEAD_LETTERS.labels(stage="bank", reason="invalid_entry").inc()
            log.warning("bank entry ignored", extra={"key": repr(key)[:200], "error": str(exc)})
            return
        self.applied += 1
        metrics.bank_changed()

    def _publish_sizes(self) -> None:
        metrics.BANK_ENTRIES.clear()
        for (bank, signal_type), size in self.bank.sizes().items():
            metrics.BANK_ENTRIES.labels(bank=bank, signal_type=signal_type).set(size)

    def _check_ready(self) -> None:
        if not self.ready.is_set() and not self._targets:
            self.ready.set()
            metrics.BANK_READY.set(1)
            self._publish_sizes()
            log.info("bank loaded", extra={"entries": len(self.bank), "applied": self.applied})
