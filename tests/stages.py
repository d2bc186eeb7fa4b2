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
from modstream.bank.controls import BankControls
from modstream.contracts import (
    BANK_CONFIG_TOPIC,
    HASHBANK_TOPIC,
    HUMAN_VERDICTS_TOPIC,
    REVIEW_CASES_TOPIC,
    REVIEW_ROUTED_TOPIC,
    BankEntry,
)
from modstream.decide import history
from modstream.decide.review import HumanVerdicts
from modstream.engine import Engine
from modstream.ingest.fetch import Fetcher, FetchPolicy
from modstream.ingest.trust import OUTCOMES_TOPIC_PREFIX, PlatformBinding
from modstream.settings import Settings
from modstream.stages.decide import DecideStage, flood_watch
from modstream.stages.hash import HashingLimits, HashStage, MediaSource
from modstream.stages.metrics import PipelineMetrics
from modstream.stages.ports import Record
from modstream.stages.review import ReviewRouteStage, ReviewStage
from modstream.stream.case_store import OWN_KEYS


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


class MemoryCases:
    """``stages.review.Cases`` in a dict, fed from what the decide stage sent."""

    def __init__(self, out: MemoryOutput) -> None:
        self.out = out
        self.values: dict[str, bytes] = {}
        self._read = 0

    async def get(self, key: str, partition: int) -> bytes | None:
        sent = self.out.sent[REVIEW_CASES_TOPIC]
        for sent_key, value, _ in sent[self._read :]:  # as the store catches up
            if sent_key and not sent_key.decode().startswith(OWN_KEYS):
                self.values[sent_key.decode()] = value
        self._read = len(sent)
        return self.values.get(key)

    async def put(self, key: str, value: bytes, partition: int) -> asyncio.Future[Any]:
        self.values[key] = value
        return await self.out.send(REVIEW_CASES_TOPIC, key.encode(), value, partition)


@dataclass
class Loop:
    """Every stage of a worker over one in-memory output, and the replicated state."""

    hash: HashStage
    decide: DecideStage
    route: ReviewRouteStage
    review: ReviewStage
    out: MemoryOutput
    strikes: dict
    metrics: PipelineMetrics
    bank: Bank
    controls: BankControls
    verdicts: HumanVerdicts
    cases: MemoryCases

    async def outcomes(self, outcomes: list[bytes], topic: str = "review.outcomes") -> None:
        """Outcomes (from ``topic``) through both review stages, then their effects
        replicated."""
        routed_before = len(self.out.sent[REVIEW_ROUTED_TOPIC])
        await self.route.process(records(topic, [(None, o) for o in outcomes]))
        await self.review.process(self.out.as_records(REVIEW_ROUTED_TOPIC)[routed_before:])
        self.replicate()

    def replicate(self) -> None:
        """What the replicas of a worker would apply from what was sent."""
        for key, value, _ in self.out.sent.pop(HASHBANK_TOPIC, []):
            self.bank.apply(key.decode(), BankEntry.parse(value))
        for key, value, _ in self.out.sent.pop(BANK_CONFIG_TOPIC, []):
            self.controls.apply(key.decode(), value)
        for key, value, _ in self.out.sent.pop(HUMAN_VERDICTS_TOPIC, []):
            self.verdicts.apply(key.decode(), value)


def loop(
    tmp: Path, entries: list[BankEntry] = (), platforms: tuple[str, ...] = (), **settings: Any
) -> Loop:
    hash_stage, decide_stage, out, strikes, metrics = pipeline(tmp, entries, platforms, **settings)
    engine = decide_stage.engine
    cases = MemoryCases(out)
    review = ReviewStage(cases=cases, controls=engine.controls, out=out, metrics=metrics,
                         bound_platforms=frozenset(platforms))  # fmt: skip
    outcomes = PlatformBinding.of(platforms, prefix=OUTCOMES_TOPIC_PREFIX)
    route = ReviewRouteStage(out, metrics, lambda key: 0, outcomes)
    return Loop(
        hash_stage, decide_stage, route, review, out, strikes, metrics, engine.bank,
        engine.controls, decide_stage.verdicts, cases,
    )  # fmt: skip


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
        media=MediaSource(Fetcher(FetchPolicy()), config.media_root, tmp, bool(platforms)),
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
        verdicts=HumanVerdicts(),
        case_partition=lambda key: 0,
        flood=flood_watch(config),
        bound_platforms=frozenset(platforms),
    )
    return hash_stage, decide_stage, out, strikes, metrics
