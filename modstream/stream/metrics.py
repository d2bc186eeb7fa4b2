"""Prometheus metrics of the pipeline (Faust's own sensors are added by the app)."""

from __future__ import annotations

import collections
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from modstream.contracts import Decision

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

EVENTS = Counter(
    "modstream_events_total",
    "Events handled, by stage and outcome",
    ["stage", "platform", "outcome"],
)
DECISIONS = Counter("modstream_decisions_total", "Decisions emitted", ["verdict", "platform"])
MATCHES = Counter(
    "modstream_matches_total", "Hash and text matches found", ["bank", "signal_type", "action"]
)
DEAD_LETTERS = Counter(
    "modstream_dead_letters_total", "Records sent to the dead-letter topic", ["stage", "reason"]
)
MEDIA_FAILURES = Counter(
    "modstream_media_failures_total",
    "Media that could not be fetched or decoded",
    ["source", "reason"],
)
STAGE_SECONDS = Histogram(
    "modstream_stage_seconds", "Time spent in a stage per event", ["stage"], buckets=LATENCY_BUCKETS
)
END_TO_END_SECONDS = Histogram(
    "modstream_end_to_end_seconds",
    "From the upload's Kafka timestamp to its decision being sent",
    buckets=LATENCY_BUCKETS,
)
BANK_ENTRIES = Gauge("modstream_bank_entries", "Live bank entries", ["bank", "signal_type"])
BANK_LAST_UPDATE = Gauge(
    "modstream_bank_last_update_timestamp_seconds", "When the last bank change was applied"
)
BANK_UPDATE_AGE = Gauge(
    "modstream_bank_update_age_seconds",
    "Seconds since the last bank change was applied (since start if none yet)",
)
BANK_READY = Gauge("modstream_bank_ready", "1 once the bank has been loaded up to date")
ENTRY_MATCHES = Counter(
    "modstream_entry_matches_total",
    "Matches per bank entry, for the first entries seen (the rest count as entry_id='other')",
    ["bank", "entry_id"],
)
EVENT_LOOP_LAG = Gauge(
    "modstream_event_loop_lag_seconds", "How late the event loop ran a timer, last sample"
)
CONSUMER_LAG = Gauge(
    "modstream_consumer_lag_records",
    "Records in a partition this worker owns that it has not finished yet",
    ["topic", "partition"],
)

_last_bank_change = time.time()
BANK_UPDATE_AGE.set_function(lambda: time.time() - _last_bank_change)


def bank_changed() -> None:
    global _last_bank_change
    _last_bank_change = time.time()
    BANK_LAST_UPDATE.set(_last_bank_change)


MAX_ENTRY_LABELS = 500  # bounds the series one worker can create
_entries_labelled: set[tuple[str, str]] = set()


def entry_matched(bank: str, entry_id: str) -> None:
    key = (bank, entry_id)
    if key not in _entries_labelled and len(_entries_labelled) >= MAX_ENTRY_LABELS:
        entry_id = "other"
    else:
        _entries_labelled.add(key)
    ENTRY_MATCHES.labels(bank=bank, entry_id=entry_id).inc()


def count_decisions(decided: Sequence[tuple[Decision, float]], stage_seconds: float) -> None:
    """Metrics of a decided batch (each decision with its upload's Kafka timestamp), one
    labelled update per label set: label lookups are a measurable share of a decision."""
    now = time.time()
    stage = STAGE_SECONDS.labels(stage="decide")
    platforms: collections.Counter[str] = collections.Counter()
    verdicts: collections.Counter[tuple[str, str]] = collections.Counter()
    for decision, received_at in decided:
        stage.observe(stage_seconds)
        END_TO_END_SECONDS.observe(max(0.0, now - received_at))
        platforms[decision.platform] += 1
        verdicts[(decision.verdict, decision.platform)] += 1
        for evidence in decision.evidence:
            matched = evidence.kind in ("hash_match", "text_match")
            if matched and evidence.bank is not None and evidence.entry_id is not None:
                MATCHES.labels(
                    bank=evidence.bank, signal_type=evidence.signal_type, action=evidence.action
                ).inc()
                entry_matched(evidence.bank, evidence.entry_id)
    for platform, count in platforms.items():
        EVENTS.labels(stage="decide", platform=platform, outcome="ok").inc(count)
    for (verdict, platform), count in verdicts.items():
        DECISIONS.labels(verdict=verdict, platform=platform).inc(count)


def count_hashed(stage: str, platforms: Sequence[str], stage_seconds: float) -> None:
    """Metrics of a batch a hashing stage (``hash`` or ``video``) forwarded: its events'
    platforms."""
    seconds = STAGE_SECONDS.labels(stage=stage)
    for _ in platforms:
        seconds.observe(stage_seconds)
    for platform, count in collections.Counter(platforms).items():
        EVENTS.labels(stage=stage, platform=platform, outcome="ok").inc(count)
