"""The review stages: reviewers' outcomes in, human decisions and bank feedback out.

``review.outcomes`` is public and its producers may key it any way, so a first stage checks
each outcome (with ``MODSTREAM_PLATFORMS``: that it comes from its own platform's
``review.outcomes.platform.<p>``) and moves it to ``review.outcomes.routed``, partitioned
by decision id like the cases the decide stage writes on ``review.cases`` (Kafka Streams'
repartition step). The second stage then finds each outcome's case in its own partition and applies
``decide.review.apply_outcome``: the human decision, the standing verdict every worker
follows, the bank entries it feeds, the per-entry outcome counts and, on
``review.entry_outcomes``, the outcome for each matched entry (what the exchange sync
reports back), all in the one transaction that consumes the outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import orjson

from modstream.bank.controls import BankControls
from modstream.contracts import (
    BANK_CONFIG_TOPIC,
    DECISIONS_TOPIC,
    ENTRY_OUTCOMES_TOPIC,
    HASHBANK_TOPIC,
    HUMAN_VERDICTS_TOPIC,
    REINSTATEMENTS_TOPIC,
    REVIEW_ROUTED_TOPIC,
    REVIEWS_TOPIC,
    TAKEDOWNS_TOPIC,
    BankEntry,
    ContractError,
    EntryOutcome,
    ReviewOutcome,
    dumps,
)
from modstream.decide.review import ReviewCase, apply_outcome, entry_outcome_counts
from modstream.ingest.trust import (
    OUTCOMES_TOPIC_PREFIX,
    REVIEWS_TOPIC_PREFIX,
    PlatformBinding,
    topic_for,
)
from modstream.stages.metrics import PipelineMetrics
from modstream.stages.ports import Output, Record, watch

TOPICS = {
    "takedowns": TAKEDOWNS_TOPIC,
    "reviews": REVIEWS_TOPIC,
    "reinstatements": REINSTATEMENTS_TOPIC,
}


class Cases(Protocol):
    """The review cases of the partitions this worker owns (``stream.case_store``; a dict
    in tests). Keys: a decision id for its case (written by the decide stage), and, written
    by this stage only, ``applied:<decision id>`` for the human decisions made from it and
    ``entry:<bank key>`` for an entry's outcome counts."""

    async def get(self, key: str, partition: int) -> bytes | None: ...
    async def put(self, key: str, value: bytes, partition: int) -> asyncio.Future[Any]: ...


class ReviewRouteStage:
    """``review.outcomes`` -> ``review.outcomes.routed``: malformed outcomes are dead letters
    (with the field at fault), so are outcomes from a topic that may not speak for their
    platform (``binding``); the rest move beside their case. The review stage then refuses
    an outcome whose platform is not its decision's: an outcome acts only on decisions of
    the platform whose topic it came from."""

    def __init__(
        self,
        out: Output,
        metrics: PipelineMetrics,
        case_partition: Callable[[str], int],
        binding: PlatformBinding | None = None,
    ) -> None:
        self.out = out
        self.metrics = metrics
        self.case_partition = case_partition
        self.binding = binding or PlatformBinding({}, OUTCOMES_TOPIC_PREFIX)

    async def process(self, records: Sequence[Record]) -> None:
        deliveries = []
        for record in records:
            try:
                outcome = ReviewOutcome.parse(record.value or b"")
            except ContractError as exc:
                self.metrics.review_outcomes.labels(outcome="none", result="invalid").inc()
                await self.out.dead_letter(record, str(exc), "invalid_outcome", "review")
                continue
            refused = self.binding.refusal(record.topic, outcome.platform)
            if refused is not None:
                reason, message = refused
                self.metrics.review_outcomes.labels(outcome=outcome.outcome, result=reason).inc()
                await self.out.dead_letter(record, message, reason, "review")
                continue
            key = outcome.decision_id
            deliveries.append(
                await self.out.send(
                    REVIEW_ROUTED_TOPIC, key.encode(), record.value or b"", self.case_partition(key)
                )
            )
        watch(deliveries)


class ReviewStage:
    """``review.outcomes.routed`` -> the effects of each outcome on its case."""

    def __init__(
        self,
        *,
        cases: Cases,
        controls: BankControls,
        out: Output,
        metrics: PipelineMetrics,
        pdq_min_quality: int = 50,
        bank_entry: Callable[[str], BankEntry | None] = lambda key: None,
        bound_platforms: frozenset[str] = frozenset(),
    ) -> None:
        self.cases = cases
        self.controls = controls
        self.out = out
        self.metrics = metrics
        self.pdq_min_quality = pdq_min_quality
        self.bank_entry = bank_entry  # the worker's bank: the judged entry's signal
        self.bound_platforms = bound_platforms  # their escalations go to their own topics

    async def process(self, records: Sequence[Record]) -> None:
        deliveries: list[asyncio.Future[Any]] = []
        for record in records:
            deliveries += await self._apply(record)
        watch(deliveries)

    async def _apply(self, record: Record) -> list[asyncio.Future[Any]]:
        out = self.out
        try:
            outcome = ReviewOutcome.parse(record.value or b"")
        except ContractError as exc:  # checked on the way in; only a hand-written record
            await out.dead_letter(record, str(exc), "invalid_outcome", "review")
            return []
        counted = self.metrics.review_outcomes.labels
        raw = await self.cases.get(outcome.decision_id, record.partition)
        if raw is None:
            counted(outcome=outcome.outcome, result="unknown_decision").inc()
            error = (
                f"no case for decision {outcome.decision_id}: only decisions that went to "
                "takedowns or reviews can be reviewed (and only within review.cases' retention)"
            )
            await out.dead_letter(record, error, "unknown_decision", "review")
            return []
        case = ReviewCase.parse(raw)
        platform = self.controls.platform(case.decision.platform)
        applied_key = f"applied:{outcome.decision_id}"
        applied = orjson.loads(await self.cases.get(applied_key, record.partition) or b"[]")
        try:
            effects = apply_outcome(case, outcome, platform, tuple(applied), self.pdq_min_quality)
        except ValueError as exc:
            counted(outcome=outcome.outcome, result="mismatch").inc()
            await out.dead_letter(record, str(exc), "outcome_mismatch", "review")
            return []
        if effects is None:
            counted(outcome=outcome.outcome, result="repeated").inc()
            return []
        decision = effects.decision
        event_key, payload = decision.event_id.encode(), decision.to_json()
        sent = [await out.send(DECISIONS_TOPIC, event_key, payload)]
        for name in effects.also_to:
            topic = TOPICS[name]
            if topic == REVIEWS_TOPIC:
                topic = topic_for(
                    decision.platform, topic, self.bound_platforms, REVIEWS_TOPIC_PREFIX
                )
            sent.append(await out.send(topic, event_key, payload))
        for key, verdict in effects.verdicts:
            sent.append(await out.send(HUMAN_VERDICTS_TOPIC, key.encode(), verdict.to_json()))
        for name, config in effects.bank_configs:
            config_key = f"bank/{name}".encode()
            sent.append(await out.send(BANK_CONFIG_TOPIC, config_key, config.to_json()))
        for entry in effects.bank_entries:
            sent.append(await out.send(HASHBANK_TOPIC, entry.key.encode(), dumps(entry)))
        for bank, signal_type, entry_id in effects.entry_outcomes:
            key = f"entry:{bank}/{signal_type}/{entry_id}"
            counts = entry_outcome_counts(await self.cases.get(key, record.partition))
            counts[outcome.outcome] += 1
            sent.append(await self.cases.put(key, orjson.dumps(counts), record.partition))
            self.metrics.entry_outcome(bank, entry_id, outcome.outcome)
            judged = self.bank_entry(key[len("entry:") :])
            told = EntryOutcome(
                bank, signal_type, entry_id, outcome.outcome, outcome.decision_id,
                decision.decision_id, outcome.reviewed_at, judged.signal if judged else None,
            )  # fmt: skip
            sent.append(await out.send(ENTRY_OUTCOMES_TOPIC, told.key.encode(), told.to_json()))
        applied_now = orjson.dumps(effects.applied)
        sent.append(await self.cases.put(applied_key, applied_now, record.partition))
        counted(outcome=outcome.outcome, result="applied").inc()
        return sent
