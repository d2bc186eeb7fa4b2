"""Where a stage's records go on Kafka: the partition of a key (an uploader, a decision)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from aiokafka.partitioner import DefaultPartitioner

log = logging.getLogger("modstream.stream")


_KAFKA_PARTITIONER = DefaultPartitioner()
PARTITION_CACHE_SIZE = 4096


def partition_of_key(key: bytes, partitions: list[int]) -> int:
    """Where Kafka's default partitioner (murmur2 of the key) puts ``key`` among the
    topic's ``partitions`` (sorted), as a producer's ``send`` would."""
    return int(_KAFKA_PARTITIONER(key, partitions, partitions))


def key_partitioner(partitions: int) -> Callable[[str], int]:
    """``partition_of_key`` for a topic of ``partitions``: an uploader key's in
    ``uploads.hashed`` and the strikes changelog, a decision id's in ``review.cases`` and
    ``review.outcomes.routed``. Cached, small: an uploader posting in bursts repeats, but a
    decision id never does, and 65,536 cached keys (~150 B each) were most of the worker's
    growth over a soak (issue 24)."""
    all_partitions = list(range(partitions))

    @functools.lru_cache(maxsize=PARTITION_CACHE_SIZE)
    def partition(uploader_key: str) -> int:
        return partition_of_key(uploader_key.encode(), all_partitions)

    return partition
