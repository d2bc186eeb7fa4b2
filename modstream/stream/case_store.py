"""Review cases for the partitions of ``review.outcomes.routed`` this worker owns: the
matching partitions of the compacted ``review.cases``, in memory.

The decide stages of every worker write cases into these partitions (by decision id), so the
store cannot just restore once: when an outcome names a decision it does not hold, it reads
its partition on to the end first. A case is committed in the same transaction as the
decision a reviewer sees, so an outcome can never arrive before its case is readable.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition

from modstream.contracts import REVIEW_CASES_TOPIC
from modstream.settings import Settings
from modstream.stream import client
from modstream.stream.pipeline import PipelineOutput

CATCH_UP_TIMEOUT_S = 50.0  # within the rebalance timeout
#: Keys only the review stage of the partition's owner writes: memory has their latest value
#: from the restore on, so a catch-up never replaces one (with an older committed value, or
#: while this batch's newer one is not committed yet).
OWN_KEYS = ("applied:", "entry:")


class CaseStore:
    """``stages.review.Cases`` over Kafka. Values stay as the record bytes (parsed when an
    outcome needs them): a case is a few KB and most are never reviewed."""

    def __init__(self, settings: Settings, output: PipelineOutput) -> None:
        self.settings = settings
        self.output = output
        self.topic = settings.topic(REVIEW_CASES_TOPIC)
        self._values: dict[int, dict[str, bytes]] = {}  # per partition
        self._read_to: dict[int, int] = {}  # next offset of review.cases to read, per partition
        self._locks: dict[int, asyncio.Lock] = {}

    async def get(self, key: str, partition: int) -> bytes | None:
        values = self._values.setdefault(partition, {})
        found = values.get(key)
        if found is None and not key.startswith(OWN_KEYS):
            await self._catch_up(partition)  # a case written since we last read
            found = values.get(key)
        return found

    async def put(self, key: str, value: bytes, partition: int) -> asyncio.Future[Any]:
        self._values.setdefault(partition, {})[key] = value
        return await self.output.send(REVIEW_CASES_TOPIC, key.encode(), value, partition)

    async def restore(self, partition: int) -> None:
        """Called when the partition is assigned: read it from the beginning."""
        self.forget(partition)
        await self._catch_up(partition, restoring=True)

    def forget(self, partition: int) -> None:
        self._values.pop(partition, None)
        self._read_to.pop(partition, None)

    async def _catch_up(self, partition: int, restoring: bool = False) -> None:
        """Read the partition on from where this store left it (from the start when
        restoring), one reader at a time per partition."""
        async with self._locks.setdefault(partition, asyncio.Lock()):
            tp = TopicPartition(self.topic, partition)
            values = self._values.setdefault(partition, {})
            async for offset, raw_key, value in client.read_partition(
                self.settings.kafka, tp, self._read_to.get(partition, 0), CATCH_UP_TIMEOUT_S
            ):
                key = raw_key.decode()
                self._read_to[partition] = offset + 1
                if not restoring and key.startswith(OWN_KEYS):
                    continue
                if value is None:
                    values.pop(key, None)
                else:
                    values[key] = value
