"""An in-memory harness for the stages, as bytewax tests operators with TestingSource and
TestingSink: records in as plain objects, records out into lists, CPU work run inline."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from modstream.bank.bank import Bank
from modstream.contracts import BankEntry
from modstream.decide import history
from modstream.engine import Engine
from modstream.ingest.fetch import Fetcher, FetchPolicy
from modstream.ingest.trust import PlatformBinding
from modstream.settings import Settings
from modstream.stages.decide import DecideStage
from modstream.stages.hash import HashingLimits, HashStage, MediaSource
from modstream.stages.metrics import PipelineMetrics
from modstream.stages.ports import Record


@dataclass(frozen=True)
class MemoryRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float = 1_795_000_000.0


def records(topic: str, pairs: list[tuple[bytes | None, bytes]]) -> list[MemoryRecord]:
    return [MemoryRecord(topic, 0, offset, k, v) for offset, (k, v) in enumerate(pairs)]


class MemoryOutput:
    """Everything a stage sends, by topic, and its dead letters."""

    def __init__(self) -> None:
        self.sent: dict[str, list[tuple[bytes | None, bytes, int | None]]] = (
            collections.defaultdict(list)
        )
        self.dead: list[tuple[Record, str, str, str]] = []

    async def send(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None = None
    ) -> asyncio.Future[Any]:
        self.sent[topic].append((key, value, partition))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def dead_letter(self, record: Record, error: str, reason: str, stage: str) -> None:
        self.dead.append((record, error, reason, stage))

    def as_records(self, topic: str) -> list[MemoryRecord]:
        """What was sent on ``topic``, as the next stage would consume it."""
        return [
            MemoryRecord(topic, partition or 0, offset, key, value)
            for offset, (key, value, partition) in enumerate(self.sent[topic])
        ]


class InlineRunner:
    """Runs the pool's work in this process, at once."""

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)


def pipeline(
    tmp: Path, entries: list[BankEntry] = (), platforms: tuple[str, ...] = (), **settings: Any
) -> tuple[HashStage, DecideStage, MemoryOutput, dict, PipelineMetrics]:
    """A hash stage and a decide stage on an in-memory bank, sharing one output."""
    config = Settings(platforms=platforms, **settings)
    bank = Bank(config.thresholds)
    for entry in entries:
        bank.apply(entry.key, entry)
    out, metrics = MemoryOutput(), PipelineMetrics(CollectorRegistry())
    hash_stage = HashStage(
        name="hash",
        runner=InlineRunner(),
        media=MediaSource(Fetcher(FetchPolicy()), None, tmp),
        out=out,
        metrics=metrics,
        limits=HashingLimits.from_settings(config),
        binding=PlatformBinding.of(platforms),
        hashed_partition=lambda key: hash(key) % config.partitions,
        video_slots=asyncio.Semaphore(1),
    )
    strikes: dict = collections.defaultdict(history.empty)
    decide_stage = DecideStage(
        engine=Engine.from_settings(config, bank),
        history=strikes,
        out=out,
        metrics=metrics,
        repeat_window_s=config.repeat_window_s,
    )
    return hash_stage, decide_stage, out, strikes, metrics
