"""Prometheus metrics of the pipeline, in a registry of their own per app (Faust's sensors
are added to the same registry by the shell), so an app can be built twice in one process."""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

if TYPE_CHECKING:
    from modstream.contracts import Decision

log = logging.getLogger("modstream.stages")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
MAX_ENTRY_LABELS = 500  # bounds the series one worker can create


class PipelineMetrics:
    """Every modstream_* metric of one worker, and the batched updates the stages make."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry or CollectorRegistry()
        ProcessCollector(registry=registry)  # process_* (CPU, memory, open files)
        self.events = Counter(
            "modstream_events_total",
            "Events handled, by stage and outcome",
            ["stage", "platform", "outcome"],
            registry=registry,
        )
        self.decisions = Counter(
            "modstream_decisions_total",
            "Decisions emitted",
            ["verdict", "platform"],
            registry=registry,
        )
        self.matches = Counter(
            "modstream_matches_total",
            "Hash and text matches found",
            ["bank", "signal_type", "action"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "modstream_dead_letters_total",
            "Records sent to the dead-letter topic",
            ["stage", "reason"],
            registry=registry,
        )
        self.media_failures = Counter(
            "modstream_media_failures_total",
            "Media that could not be fetched or decoded",
            ["source", "reason"],
            registry=registry,
        )
        self.stage_seconds = Histogram(
            "modstream_stage_seconds",
            "Time spent in a stage per event",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "modstream_commit_seconds",
            "Time to commit a partition's finished batches and offset (waiting for and running"
            " the worker's transaction)",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.commit_failures = Counter(
            "modstream_commit_failures_total",
            "Commits that failed and were retried (nothing is committed past them meanwhile)",
            registry=registry,
        )
        self.records_consumed = Counter(
            "modstream_records_consumed_total",
            "Records taken from the stage topics",
            ["topic"],
            registry=registry,
        )
        self.records_produced = Counter(
            "modstream_records_produced_total",
            "Records committed to Kafka by the stages",
            ["topic"],
            registry=registry,
        )
        self.partition_changes = Counter(
            "modstream_partition_changes_total",
            "Stage-topic partitions this worker took over or gave up",
            ["change"],
            registry=registry,
        )
        for change in ("assigned", "revoked"):
            self.partition_changes.labels(change=change)
        self.case_readers_started = Counter(
            "modstream_case_readers_started_total",
            "Consumers the review-case store started (one per worker: it tails its partitions)",
            registry=registry,
        )
        self.case_catch_ups = Counter(
            "modstream_case_catch_ups_total",
            "Outcomes whose case was not on disk yet: the store asked where review.cases ends",
            registry=registry,
        )
        self.end_to_end_seconds = Histogram(
            "modstream_end_to_end_seconds",
            "From the upload's Kafka timestamp to its decision being sent",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.bank_entries = Gauge(
            "modstream_bank_entries",
            "Live bank entries",
            ["bank", "signal_type"],
            registry=registry,
        )
        self.bank_last_update = Gauge(
            "modstream_bank_last_update_timestamp_seconds",
            "When the last bank change was applied",
            registry=registry,
        )
        self.bank_update_age = Gauge(
            "modstream_bank_update_age_seconds",
            "Seconds since the last bank change was applied (since start if none yet)",
            registry=registry,
        )
        self.bank_ready = Gauge(
            "modstream_bank_ready", "1 once the bank has been loaded up to date", registry=registry
        )
        self.entry_matches = Counter(
            "modstream_entry_matches_total",
            "Matches per bank entry, for the first entries seen (the rest count as "
            "entry_id='other')",
            ["bank", "entry_id"],
            registry=registry,
        )
        self.entry_outcomes = Counter(
            "modstream_entry_outcomes_total",
            "Reviewers' outcomes on decisions that matched a bank entry, per entry (labelled "
            "like modstream_entry_matches_total); confirm / (confirm + overturn) is the "
            "entry's measured precision",
            ["bank", "entry_id", "outcome"],
            registry=registry,
        )
        self.quarantines = Counter(
            "modstream_bank_quarantines_total",
            "Bank entries this worker quarantined for flooding",
            ["bank"],
            registry=registry,
        )
        self.quarantined_entries = Gauge(
            "modstream_bank_entry_quarantined",
            "1 for each bank entry in quarantine now (every worker reports the same, shared "
            "state: take the max)",
            ["bank", "entry_id"],
            registry=registry,
        )
        self.review_outcomes = Counter(
            "modstream_review_outcomes_total",
            "Review outcomes taken in, by outcome and result (applied, repeated, "
            "unknown_decision, mismatch, invalid)",
            ["outcome", "result"],
            registry=registry,
        )
        self.event_loop_lag = Gauge(
            "modstream_event_loop_lag_seconds",
            "How late the event loop ran a timer, last sample",
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "modstream_consumer_lag_records",
            "Records in a partition this worker owns that it has not finished yet",
            ["topic", "partition"],
            registry=registry,
        )
        self.periodic_failures = Counter(
            "modstream_periodic_failures_total",
            "Failures of the worker's periodic tasks (each is caught, counted and retried)",
            ["task"],
            registry=registry,
        )
        self._last_bank_change = time.time()
        self.bank_update_age.set_function(lambda: time.time() - self._last_bank_change)
        self._entries_labelled: set[tuple[str, str]] = set()

    @contextlib.contextmanager
    def periodic(self, task: str) -> Iterator[None]:
        """Around one run of a periodic task: a failure is logged and counted, never raised,
        so a timer can never take the worker down; the task runs again next time."""
        try:
            yield
        except Exception as exc:
            self.periodic_failures.labels(task=task).inc()
            log.warning("periodic task failed", extra={"task": task, "error": repr(exc)[:300]})

    def bank_changed(self) -> None:
        self._last_bank_change = time.time()
        self.bank_last_update.set(self._last_bank_change)

    def entry_matched(self, bank: str, entry_id: str) -> None:
        self.entry_matches.labels(bank=bank, entry_id=self._entry_label(bank, entry_id)).inc()

    def quarantined(self, bank: str, entry_id: str, reason: str) -> None:
        self.quarantines.labels(bank=bank).inc()
        log.warning(
            "bank entry quarantined", extra={"bank": bank, "entry_id": entry_id, "reason": reason}
        )

    def show_quarantined(self, keys: Sequence[str]) -> None:
        """The entries in quarantine now (bank keys), as the gauge."""
        self.quarantined_entries.clear()
        for key in keys:
            bank, _, entry_id = key.split("/", 2)
            label = self._entry_label(bank, entry_id)
            self.quarantined_entries.labels(bank=bank, entry_id=label).set(1)

    def entry_outcome(self, bank: str, entry_id: str, outcome: str) -> None:
        label = self._entry_label(bank, entry_id)
        self.entry_outcomes.labels(bank=bank, entry_id=label, outcome=outcome).inc()

    def _entry_label(self, bank: str, entry_id: str) -> str:
        """The entry id as a label for the first MAX_ENTRY_LABELS entries, then ``other``:
        bounded cardinality however large the banks."""
        key = (bank, entry_id)
        if key not in self._entries_labelled and len(self._entries_labelled) >= MAX_ENTRY_LABELS:
            return "other"
        self._entries_labelled.add(key)
        return entry_id

    def count_decisions(
        self, decided: Sequence[tuple[Decision, float]], stage_seconds: float
    ) -> None:
        """Metrics of a decided batch (each decision with its upload's Kafka timestamp), one
        labelled update per label set: label lookups are a measurable share of a decision."""
        now = time.time()
        stage = self.stage_seconds.labels(stage="decide")
        platforms: collections.Counter[str] = collections.Counter()
        verdicts: collections.Counter[tuple[str, str]] = collections.Counter()
        for decision, received_at in decided:
            stage.observe(stage_seconds)
            self.end_to_end_seconds.observe(max(0.0, now - received_at))
            platforms[decision.platform] += 1
            verdicts[(decision.verdict, decision.platform)] += 1
            for evidence in decision.evidence:
                matched = evidence.kind in ("hash_match", "text_match")
                if matched and evidence.bank is not None and evidence.entry_id is not None:
                    self.matches.labels(
                        bank=evidence.bank,
                        signal_type=evidence.signal_type,
                        action=evidence.action,
                    ).inc()
                    self.entry_matched(evidence.bank, evidence.entry_id)
        for platform, count in platforms.items():
            self.events.labels(stage="decide", platform=platform, outcome="ok").inc(count)
        for (verdict, platform), count in verdicts.items():
            self.decisions.labels(verdict=verdict, platform=platform).inc(count)

    def count_hashed(self, stage: str, platforms: Sequence[str], stage_seconds: float) -> None:
        """Metrics of a batch a hashing stage (``hash`` or ``video``) forwarded: its events'
        platforms."""
        seconds = self.stage_seconds.labels(stage=stage)
        for _ in platforms:
            seconds.observe(stage_seconds)
        for platform, count in collections.Counter(platforms).items():
            self.events.labels(stage=stage, platform=platform, outcome="ok").inc(count)
