"""Every touch of aiokafka's private API, in one place, for the versions below.

The pipeline needs three things aiokafka does not offer publicly (the third: producers that
pace their metadata refreshes, ``pace_metadata_updates``): the committed offsets of a
partition *with their metadata* (``committed()`` returns the offset alone, and the
metadata carries the records done beyond it: ``progress``), and a metadata refresh on
demand (a topic just created is not known yet). Both are here, with a check at import of
the versions they were written against (an upgrade fails fast, at start, instead of
misbehaving); ``tests/test_compat.py`` asserts the attributes they rely on. Ruff's SLF rule
flags private access anywhere else. Faust is used only through its public API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from importlib.metadata import version

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

#: (distribution, lowest version tested, first version not known to work)
WRITTEN_FOR = (("aiokafka", (0, 13), (0, 15)),)


class IncompatibleVersion(RuntimeError):
    """A library whose internals this module uses is outside the versions it was written for."""


def _release(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split("."):
        digits = "".join(c for c in part if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if digits != part:
            break
    return tuple(parts)


def check_versions(installed: Callable[[str], str] = version) -> None:
    """Raise IncompatibleVersion unless every library is in its tested range."""
    for name, lowest, beyond in WRITTEN_FOR:
        found = _release(installed(name))
        if not lowest <= found < beyond:
            raise IncompatibleVersion(
                f"{name} {installed(name)} is installed; modstream.stream.compat was "
                f"written for {'.'.join(map(str, lowest))} up to (not including) "
                f"{'.'.join(map(str, beyond))}: check it against the new version first"
            )


check_versions()


def pace_metadata_updates(producer: AIOKafkaProducer, min_interval_s: float) -> None:
    """Space the metadata refreshes ``producer`` asks for at least ``min_interval_s`` apart.

    aiokafka's sender, holding records for a partition whose leader it no longer knows,
    waits on ``force_metadata_update()`` and loops as soon as that resolves, with no backoff;
    with the broker down every refresh fails at once, so the worker spun a core (14 s of CPU
    in a 20 s outage, in about one run of three of the fault suite's outage scenario). The
    client's refresh is wrapped: a call within ``min_interval_s`` of the last refresh waits
    out the rest of the interval first."""
    md_client = producer.client
    refresh = md_client.force_metadata_update
    last = [float("-inf")]

    def paced() -> asyncio.Future:
        loop = asyncio.get_running_loop()
        wait = last[0] + min_interval_s - loop.time()
        if wait <= 0:
            last[0] = loop.time()
            return refresh()

        async def later() -> bool:
            await asyncio.sleep(wait)
            last[0] = loop.time()
            return bool(await refresh())

        return asyncio.ensure_future(later())

    md_client.force_metadata_update = paced


async def refresh_metadata(consumer: AIOKafkaConsumer) -> None:
    """Ask the brokers for topic metadata now (a topic just created is not known yet)."""
    await consumer._client.force_metadata_update()  # noqa: SLF001


async def committed_offsets(
    consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition]
) -> dict[TopicPartition, OffsetAndMetadata]:
    """The group's committed offsets with their metadata; a partition never committed is
    absent."""
    if not partitions:
        return {}
    coordinator = consumer._coordinator  # noqa: SLF001
    found: dict[TopicPartition, OffsetAndMetadata] = await coordinator.fetch_committed_offsets(
        list(partitions)
    )
    return found
