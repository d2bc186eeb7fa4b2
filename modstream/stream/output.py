"""Where a stage's records go on Kafka: the partition of a key (an uploader, a decision)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from aiokafka.partitioner import DefaultPartitioner

log = logging.getLogger("modstream.stream")


def key_partitioner(partitions: int) -> Callable[[str], int]:
    """The partition of a key by Kafka's default partitioner (murmur2): an uploader key's in
    ``uploads.hashed`` and the strikes changelog, a decision id's in ``review.cases`` and
    ``review.outcomes.routed`` (cached: keys repeat)."""
    all_partitions = list(range(partitions))
    partition_for = DefaultPartitioner()

    @functools.lru_cache(maxsize=65536)
    def partition(uploader_key: str) -> int:
        return int(partition_for(uploader_key.encode(), all_partitions, all_partitions))

    return partition
