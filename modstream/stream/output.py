"""Where a stage's records go on Kafka: the partition of an uploader."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from aiokafka.partitioner import DefaultPartitioner

log = logging.getLogger("modstream.stream")


def uploader_partitioner(partitions: int) -> Callable[[str], int]:
    """The ``uploads.hashed`` partition of an uploader key, by Kafka's default partitioner:
    the same one that places the uploader's table records (cached: uploaders repeat)."""
    all_partitions = list(range(partitions))
    partition_for = DefaultPartitioner()

    @functools.lru_cache(maxsize=65536)
    def partition(uploader_key: str) -> int:
        return int(partition_for(uploader_key.encode(), all_partitions, all_partitions))

    return partition
