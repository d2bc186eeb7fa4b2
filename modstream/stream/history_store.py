"""Per-uploader strikes for the partitions of ``uploads.hashed`` this worker owns: in memory,
backed by a compacted changelog that is written in the same transaction as the decisions.

Faust's tables write their changelog through Faust's own producer, outside any transaction
of ours, so after a crash the strikes and the decisions could disagree; this store's writes
are outputs of the batch that made them, committed (or aborted) with its decisions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import TopicPartition

from modstream.decide import history
from modstream.settings import Settings
from modstream.stream import client
from modstream.stream.pipeline import PipelineOutput

RESTORE_TIMEOUT_S = 50.0  # within the rebalance timeout
SWEEP_INTERVAL_S = 1.0


def changelog_topic(settings: Settings) -> str:
    return f"{settings.app_id}-uploader_history-changelog"


class UploaderHistory:
    """``stages.decide.Strikes``, partitioned like ``uploads.hashed``: each owned partition
    is restored when it is assigned, and forgotten when it moves away. Only uploaders with a
    strike written in the last repeat window are held (``history.RecentStrikes``): one never
    struck, or not struck again for a window, costs nothing, and the histories held never exceed
    ``Settings.max_remembered_strikes`` strikes."""

    def __init__(
        self,
        settings: Settings,
        output: PipelineOutput,
        partition_of: Callable[[str], int],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.output = output
        self.partition_of = partition_of
        self.clock = clock
        self.topic = changelog_topic(settings)
        self._recent = history.RecentStrikes(
            settings.repeat_window_s, settings.max_remembered_strikes
        )
        self._next_sweep = 0.0
        self._stale: list[tuple[bytes, int]] = []  # restored already expired: tombstones due

    def __len__(self) -> int:
        return len(self._recent)

    def __getitem__(self, key: bytes) -> dict[str, Any]:
        self._sweep()
        return self._recent.get(key) or history.empty()

    def __setitem__(self, key: bytes, value: dict[str, Any]) -> None:
        partition = self.partition_of(key.decode())
        self.output.append(self.topic, key, orjson.dumps(value), partition)
        self._tombstones(self._recent.put(key, partition, value, self.clock()))

    async def restore(self, partition: int) -> None:
        """Read the partition's committed changelog to its end; keep what is recent (by
        the time each history was written)."""
        tp = TopicPartition(self.topic, partition)
        restored: dict[bytes, tuple[dict[str, Any], float]] = {}
        async for record in client.partition_records(
            self.settings.kafka, tp, timeout_s=RESTORE_TIMEOUT_S
        ):
            assert record.key is not None
            if record.value is None:
                restored.pop(record.key, None)
            else:
                restored[record.key] = (orjson.loads(record.value), record.timestamp / 1000)
        self.forget(partition)
        horizon = self.clock() - self.settings.repeat_window_s
        for key, (past, at) in sorted(restored.items(), key=lambda item: item[1][1]):
            if at < horizon:
                self._stale.append((key, partition))
            else:
                self._stale += self._recent.put(key, partition, past, at)

    def forget(self, partition: int) -> None:
        self._recent.drop_partition(partition)
        self._stale = [(key, p) for key, p in self._stale if p != partition]

    def _sweep(self) -> None:
        """At most once a second, in the batch being decided (its tombstones commit with
        it): histories not struck again for the repeat window are forgotten."""
        now = self.clock()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL_S
        stale, self._stale = self._stale, []
        self._tombstones(stale + self._recent.expire(now))

    def _tombstones(self, forgotten: list[tuple[bytes, int]]) -> None:
        for key, partition in forgotten:
            self.output.append(self.topic, key, None, partition)
