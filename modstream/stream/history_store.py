"""Per-uploader strikes for the partitions of ``uploads.hashed`` this worker owns: in memory,
backed by a compacted changelog that is written in the same transaction as the decisions.

Faust's tables write their changelog through Faust's own producer, outside any transaction
of ours, so after a crash the strikes and the decisions could disagree; this store's writes
are outputs of the batch that made them, committed (or aborted) with its decisions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import TopicPartition

from modstream.decide import history
from modstream.settings import Settings
from modstream.stream import client
from modstream.stream.pipeline import PipelineOutput

RESTORE_TIMEOUT_S = 50.0  # within the rebalance timeout


def changelog_topic(settings: Settings) -> str:
    return f"{settings.app_id}-uploader_history-changelog"


class UploaderHistory:
    """``stages.decide.Strikes``, partitioned like ``uploads.hashed``: each owned partition
    is restored when it is assigned, and forgotten when it moves away."""

    def __init__(
        self, settings: Settings, output: PipelineOutput, partition_of: Callable[[str], int]
    ) -> None:
        self.settings = settings
        self.output = output
        self.partition_of = partition_of
        self.topic = changelog_topic(settings)
        self._values: dict[bytes, dict[str, Any]] = {}  # read for every event: one lookup
        self._keys: dict[int, set[bytes]] = {}  # per partition, to forget one

    def __getitem__(self, key: bytes) -> dict[str, Any]:
        return self._values.get(key) or history.empty()

    def __setitem__(self, key: bytes, value: dict[str, Any]) -> None:
        partition = self.partition_of(key.decode())
        self._values[key] = value
        self._keys.setdefault(partition, set()).add(key)
        self.output.append(self.topic, key, orjson.dumps(value), partition)

    async def restore(self, partition: int) -> None:
        """Read the partition's committed changelog to its end."""
        tp = TopicPartition(self.topic, partition)
        restored: dict[bytes, dict[str, Any]] = {}
        async for _, key, value in client.read_partition(
            self.settings.kafka, tp, timeout_s=RESTORE_TIMEOUT_S
        ):
            if value is None:
                restored.pop(key, None)
            else:
                restored[key] = orjson.loads(value)
        self.forget(partition)
        self._values.update(restored)
        self._keys[partition] = set(restored)

    def forget(self, partition: int) -> None:
        for key in self._keys.pop(partition, ()):
            self._values.pop(key, None)
