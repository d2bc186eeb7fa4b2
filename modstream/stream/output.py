"""Where a stage's records go on Kafka: the partition of a key (an uploader, a decision)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from aiokafka.partitioner import DefaultPartitioner

log = logging.getLogger("modstream.stream")


_KAFKA_PARTITIONER = DefaultPartitioner()


def partition_of_key(key: bytes, partitions: list[int]) -> int:
    """Where Kafka's default partitioner (murmur2 of the key) puts ``key`` among the
    topic's ``partitions`` (sorted), as a producer's ``send`` would."""
    return int(_KAFKA_PARTITIONER(key, partitions, partitions))


def key_partitioner(partitions: int) -> Callable[[str], int]:
    """``partition_of_key`` for a topic of ``partitions``: an uploader key's in
    ``uploads.hashed`` and the strikes changelog, a decision id's in ``review.cases`` and
    ``review.outcomes.routed`` (cached: keys repeat)."""
    all_partitions = list(range(partitions))

    @functools.lru_cache(maxsize=65536)
    def partition(uploader_key: str) -> int:
        return partition_of_key(uploader_key.encode(), all_partitions)

    return partition
