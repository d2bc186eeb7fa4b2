"""Prometheus metrics of the exchange sync service, from the states it writes."""

from __future__ import annotations

import contextlib
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector

from modstream.contracts import ExchangeConfig, ExchangeState


class ExchangeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry or CollectorRegistry()
        ProcessCollector(registry=registry)
        self.fetched = Counter(
            "modstream_exchange_fetched_total",
            "Records fetched from an exchange",
            ["exchange"],
            registry=registry,
        )
        self.entries = Counter(
            "modstream_exchange_entries_total",
            "Bank entries a sync wrote (published, deleted) or found unchanged",
            ["exchange", "change"],
            registry=registry,
        )
        self.skipped = Counter(
            "modstream_exchange_skipped_total",
            "Fetched signals not used: a type modstream lacks, invalid, a negative opinion",
            ["exchange", "reason"],
            registry=registry,
        )
        self.errors = Counter(
            "modstream_exchange_errors_total",
            "Sync attempts that failed (retried with backoff)",
            ["exchange"],
            registry=registry,
        )
        self.reports = Counter(
            "modstream_exchange_reports_total",
            "Reviewers' outcomes reported to an exchange, by opinion and how it went",
            ["exchange", "opinion", "status"],
            registry=registry,
        )
        self.last_success = Gauge(
            "modstream_exchange_last_success_timestamp_seconds",
            "When the exchange last synced to its end",
            ["exchange"],
            registry=registry,
        )
        self.checkpoint = Gauge(
            "modstream_exchange_checkpoint_timestamp_seconds",
            "The time the exchange's data is fetched up to, where its API says",
            ["exchange"],
            registry=registry,
        )
        self.interval = Gauge(
            "modstream_exchange_interval_seconds",
            "How often the exchange is to be synced",
            ["exchange"],
            registry=registry,
        )
        self.syncing = Gauge(
            "modstream_exchange_syncing", "1 while a sync runs", ["exchange"], registry=registry
        )
        self.active = Gauge(
            "modstream_exchange_sync_active",
            "1 on the sync service instance that holds the lease (the others stand by)",
            registry=registry,
        )

    def configured(self, config: ExchangeConfig, last_success_at: float | None) -> None:
        """An exchange to sync: one that never synced counts from now, so that it alerts
        after three intervals without success like one that stopped syncing."""
        self.interval.labels(config.name).set(config.interval_s)
        self.last_success.labels(config.name).set(last_success_at or time.time())
        self.errors.labels(config.name)  # at 0: a rate, not no data, until the first error

    def removed(self, name: str) -> None:
        for gauge in (self.interval, self.last_success, self.checkpoint, self.syncing):
            with contextlib.suppress(KeyError):
                gauge.remove(name)

    def observe(self, name: str, before: ExchangeState | None, after: ExchangeState) -> None:
        """Count what changed between two states of the exchange."""
        base = before if before is not None and before.api == after.api else None
        self.fetched.labels(name).inc(max(0, after.fetched - (base.fetched if base else 0)))
        for change in ("published", "deleted", "unchanged"):
            grown = getattr(after, change) - (getattr(base, change) if base else 0)
            self.entries.labels(name, change).inc(max(0, grown))
        for reason, count in after.skipped.items():
            grown = count - (base.skipped.get(reason, 0) if base else 0)
            if grown > 0:
                self.skipped.labels(name, reason[:40]).inc(grown)
        if after.last_success_at:
            self.last_success.labels(name).set(after.last_success_at)
        if after.progress_at:
            self.checkpoint.labels(name).set(after.progress_at)
        self.syncing.labels(name).set(1 if after.syncing else 0)
