"""The decide stage (``uploads.hashed``): match a batch's signals against the bank in one
search off the event loop, apply the policy with each uploader's strikes and any standing
human verdict, and emit each decision on ``decisions`` (and ``takedowns`` or ``reviews``
when it acts, with the case a reviewer's outcome will act on, on ``review.cases``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from modstream.contracts import (
    BANK_CONFIG_TOPIC,
    DECISIONS_TOPIC,
    REVIEW_CASES_TOPIC,
    REVIEWS_TOPIC,
    TAKEDOWNS_TOPIC,
    Decision,
    EntryControl,
    HashedBatch,
    HashedUpload,
    MediaSignals,
    bank_key,
    parse_time,
)
from modstream.decide import history
from modstream.decide.flood import FloodPolicy, FloodWatch
from modstream.decide.review import HumanVerdicts, ReviewCase
from modstream.engine import Engine, Lookups, struck
from modstream.ingest.trust import REVIEWS_TOPIC_PREFIX, topic_for
from modstream.settings import Settings
from modstream.stages.metrics import PipelineMetrics
from modstream.stages.ports import Output, Record, watch

T = TypeVar("T")
#: Runs a blocking function on a thread (``asyncio.to_thread``, or the loop's executor).
Offload = Callable[..., Awaitable[Any]]
ACTIONABLE = {"takedown": TAKEDOWNS_TOPIC, "review": REVIEWS_TOPIC}
#: A case larger than this leaves out its videos' frame hashes (vPDQ): still under Kafka's
#: default record limit with the rest of the signals, which are small.
MAX_CASE_BYTES = 512 * 1024


class Strikes(Protocol):
    """Each uploader key's history (``decide.history``); an unknown uploader's is empty."""

    def __getitem__(self, uploader_key: bytes) -> dict[str, Any]: ...
    def __setitem__(self, uploader_key: bytes, value: dict[str, Any]) -> None: ...


class DecideStage:
    """``history`` maps an uploader key to its strikes (``stream.history_store`` in the worker,
    a dict in tests): it is read for every event and written only when one strikes."""

    def __init__(
        self,
        *,
        engine: Engine,
        history: Strikes,
        out: Output,
        metrics: PipelineMetrics,
        repeat_window_s: int,
        verdicts: HumanVerdicts,
        case_partition: Callable[[str], int],
        flood: FloodWatch,
        offload: Offload = asyncio.to_thread,
        bound_platforms: frozenset[str] = frozenset(),
    ) -> None:
        self.engine = engine
        self.history = history
        self.out = out
        self.metrics = metrics
        self.repeat_window_s = repeat_window_s
        self.verdicts = verdicts  # reviewers' standing verdicts (``review.verdicts``)
        self.case_partition = case_partition  # partition of ``review.cases`` by decision id
        self.flood = flood
        self.offload = offload
        self.bound_platforms = bound_platforms  # their reviews go to their own topics

    async def process(self, records: Sequence[Record]) -> None:
        started = time.perf_counter()
        # A batch's decisions are dated by its record's timestamp (when its signals were
        # complete), so a redelivered record yields identical decisions.
        batches = [(HashedBatch.parse(r.value or b""), r.timestamp) for r in records]
        uploads = [(upload, at) for batch, at in batches for upload in batch.uploads]
        # One index search for the whole batch, on a thread: the kernels release the GIL,
        # so a large bank never stalls the event loop.
        lookups = await self.offload(
            self.engine.lookup,
            [u.media for u, _ in uploads],
            [u.normalized_text for u, _ in uploads if u.normalized_text],
        )
        deliveries, decided = [], []
        for upload, decided_at in uploads:
            decision = self.decide(upload, lookups, round(decided_at, 3))
            payload = decision.to_json()
            event_key = decision.event_id.encode()
            deliveries.append(await self.out.send(DECISIONS_TOPIC, event_key, payload))
            actionable = ACTIONABLE.get(decision.verdict)
            if actionable == REVIEWS_TOPIC:
                actionable = topic_for(
                    decision.platform, REVIEWS_TOPIC, self.bound_platforms, REVIEWS_TOPIC_PREFIX
                )
            if actionable is not None:
                deliveries.append(await self.out.send(actionable, event_key, payload))
                deliveries.append(await self._open_case(decision, upload))
            deliveries += await self._watch_floods(decision)
            decided.append((decision, upload.received_at))
        watch(deliveries)
        self.metrics.count_decisions(decided, time.perf_counter() - started)

    async def _watch_floods(self, decision: Decision) -> list[asyncio.Future[Any]]:
        """Count the decision's acting matches per entry; an entry that floods is
        quarantined at once here and, through ``bank.config``, on every worker."""
        controls = self.engine.controls
        sent = []
        at = decision.decided_at
        for evidence in decision.evidence:
            if evidence.kind not in ("hash_match", "text_match") or evidence.action == "allow":
                continue
            if not (evidence.bank and evidence.signal_type and evidence.entry_id):
                continue
            key = bank_key(evidence.bank, evidence.signal_type, evidence.entry_id)
            control = controls.entry(key)
            if control.quarantined_at is not None or (control.exempt_until or 0.0) > at:
                continue
            reason = self.flood.observe(key, at)
            if reason is None:
                continue
            quarantine = EntryControl(
                disabled_until=control.disabled_until, quarantined_at=at, reason=reason
            ).to_json()
            controls.apply(f"entry/{key}", quarantine)  # this worker: from the next event on
            sent.append(await self.out.send(BANK_CONFIG_TOPIC, f"entry/{key}".encode(), quarantine))
            self.metrics.quarantined(evidence.bank, evidence.entry_id, reason)
        return sent

    async def _open_case(self, decision: Decision, upload: HashedUpload) -> asyncio.Future[Any]:
        """What a reviewer's outcome on this decision will need, beside the outcomes that
        will name it (both partitioned by decision id)."""
        case = ReviewCase(decision, upload.media, upload.normalized_text).to_json()
        if len(case) > MAX_CASE_BYTES:
            media = tuple(_without_vpdq(m) for m in upload.media)
            case = ReviewCase(decision, media, upload.normalized_text).to_json()
        key = decision.decision_id
        return await self.out.send(REVIEW_CASES_TOPIC, key.encode(), case, self.case_partition(key))

    def decide(self, record: HashedUpload, lookups: Lookups, decided_at: float) -> Decision:
        """One event's decision with its uploader's prior strikes; a strike is remembered."""
        upload = record.event
        key = upload.uploader_key.encode()
        past = self.history[key]
        created = record.created if record.created is not None else parse_time(upload.created_at)
        prior = history.prior_strikes(past, upload.event_id, created, self.repeat_window_s)
        decision = self.engine.decide(
            upload,
            record.media,
            decided_at,
            prior,
            lookups,
            record.text_score,
            record.normalized_text,
            self.verdicts.find(upload.platform, upload.content_id, record.media),
        )
        if struck(decision):
            # Written even when remembered already: an attempt at this batch that failed
            # (``guarded`` retries its records one by one) kept the strike in memory but
            # dropped its changelog record with the rest of its outputs.
            self.history[key] = (
                past
                if history.has_strike(past, upload.event_id)
                else history.with_strike(past, upload.event_id, created)
            )
        return decision


def _without_vpdq(item: MediaSignals) -> MediaSignals:
    signals = {k: v for k, v in item.signals.items() if k != "vpdq"}
    return MediaSignals(item.media_id, item.kind, signals, item.error, item.error_reason)


def flood_watch(settings: Settings) -> FloodWatch:
    """The flood detector the settings describe (``MODSTREAM_FLOOD_*``)."""
    return FloodWatch(
        FloodPolicy(
            window_s=settings.flood_window_s,
            min_matches=settings.flood_min_matches,
            factor=settings.flood_factor,
            baseline_s=settings.flood_baseline_s,
        )
    )
