"""``modstream exchange-sync``: the service that keeps banks in line with the exchanges.

One instance is active: the one the consumer group ``<app>-exchange-sync`` assigns the
single partition of ``exchange.config`` to (Kafka's group membership is the lease); any
other instance stands by with nothing assigned and takes over when the active one leaves or
its session expires. The active one writes under one transactional id, so a former active
instance that has not noticed yet is fenced: its open transaction is aborted, and nothing
it writes afterwards lands.

On becoming active it reads every exchange config, the states (``exchange.state``: each
exchange's checkpoint) and, from ``hashbank``, the entries each exchange has published (its
ledger); then it syncs each enabled exchange every ``interval_s``, at once on ``exchange
sync-now``, and after a failure again after a backoff (``MODSTREAM_EXCHANGE_RETRY_S``,
doubling, at most the interval). Each page's bank entries and the exchange's new state are
written in one transaction.

The active instance also reads ``review.entry_outcomes`` and reports reviewers' outcomes on
matches of exchange entries back to their exchange (``exchanges.reports``), each at most
once; where it has read to is kept on ``exchange.state`` (key ``reports-offsets``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import ProducerFenced
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from modstream.contracts import (
    ENTRY_OUTCOMES_TOPIC,
    EXCHANGE_CONFIG_TOPIC,
    EXCHANGE_STATE_TOPIC,
    HASHBANK_TOPIC,
    ContractError,
    EntryOutcome,
    ExchangeConfig,
    ExchangeState,
    parse_bank_key,
)
from modstream.exchanges.mapping import Ledger, published
from modstream.exchanges.metrics import ExchangeMetrics
from modstream.exchanges.reports import (
    OPINIONS,
    REPORT_OFFSETS,
    Report,
    read_state_table,
    report_key,
    send_report,
    settled,
)
from modstream.exchanges.sync import SyncError, SyncLimits, sync_exchange
from modstream.settings import Settings
from modstream.stream import client, compat
from modstream.stream.topics import ensure_topics

log = logging.getLogger("modstream.exchanges")

#: An entry id an exchange sync made: ``<exchange>.<record digest>.<signal digest>``.
_EXCHANGE_ENTRY = re.compile(rb"/[A-Za-z0-9][A-Za-z0-9_.-]*\.[0-9a-f]{16}\.[0-9a-f]{8}$")
PROGRESS_LOG_S = 10.0


def state_key(name: str) -> bytes:
    return f"exchange/{name}".encode()


class ExchangeSyncService:
    def __init__(self, settings: Settings, metrics: ExchangeMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or ExchangeMetrics()
        self.limits = SyncLimits(page_timeout_s=settings.exchange_page_timeout_s)
        self.configs: dict[str, ExchangeConfig] = {}
        self.states: dict[str, ExchangeState] = {}
        self.ledgers: dict[str, Ledger] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.active = False
        self._assigned: list[TopicPartition] = []
        self._joined = False  # in the group (with or without the lease)
        self._config_end: dict[TopicPartition, int] | None = None
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._write_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(settings.exchange_concurrency)
        self._last_progress_log: dict[str, float] = {}
        self.reports: dict[str, Report] = {}
        self._report_offsets: dict[int, int] = {}
        self._reporter: asyncio.Task[None] | None = None

    # ---- the shell: group membership, the config stream, the web endpoints -------------

    async def run(self, stop: asyncio.Event) -> None:
        await ensure_topics(self.settings)
        runner = await self._serve_web()
        service = self

        class Lease(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: Any) -> None:
                if revoked:
                    await service._stand_by("partition revoked")

            async def on_partitions_assigned(self, assigned: Any) -> None:
                # No offset is ever committed: each assignment reads the configs from the
                # start (auto_offset_reset=earliest), and activates once it has them all.
                service._assigned = list(assigned)
                service._joined = True
                if assigned:
                    assert service._consumer is not None
                    service._config_end = await service._consumer.end_offsets(list(assigned))

        self._consumer = consumer = await client.started(
            client.consumer(
                self.settings.kafka,
                group_id=f"{self.settings.app_id}-exchange-sync",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                session_timeout_ms=int(self.settings.session_timeout_s * 1000),
                heartbeat_interval_ms=int(self.settings.session_timeout_s * 1000 / 5),
            )
        )
        consumer.subscribe([self.settings.topic(EXCHANGE_CONFIG_TOPIC)], listener=Lease())
        log.info("exchange sync started, waiting for the lease")
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        self._apply_config(record.key, record.value)
                if self._assigned and not self.active and await self._configs_loaded():
                    await self._activate()
                if self.active:
                    self._schedule()
        finally:
            await self._stand_by("stopping")
            await consumer.stop()
            await runner.cleanup()

    async def _serve_web(self) -> web.AppRunner:
        app = web.Application()

        async def metrics(request: web.Request) -> web.Response:
            return web.Response(
                body=generate_latest(self.metrics.registry),
                content_type=CONTENT_TYPE_LATEST.split(";")[0],
            )

        async def live(request: web.Request) -> web.Response:
            return web.json_response({"live": True})

        async def ready(request: web.Request) -> web.Response:
            role = "active" if self.active else "standby" if self._joined else "joining"
            return web.json_response({"ready": self._joined, "role": role})

        app.router.add_get("/metrics", metrics)
        app.router.add_get("/live", live)
        app.router.add_get("/ready", ready)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.settings.web_host, self.settings.exchange_sync_port).start()
        return runner

    async def _configs_loaded(self) -> bool:
        assert self._consumer is not None
        if self._config_end is None:
            return False
        for tp, end in self._config_end.items():
            if await self._consumer.position(tp) < end:
                return False
        return True

    def _apply_config(self, key: bytes | None, value: bytes | None) -> None:
        if key is None or not key.startswith(b"exchange/"):
            return
        name = key.decode()[len("exchange/") :]
        if value is None:
            self.configs.pop(name, None)
            task = self.tasks.pop(name, None)
            if task is not None:
                task.cancel()
            self.metrics.removed(name)
            return
        try:
            config = ExchangeConfig.parse(value)
        except ContractError as exc:
            log.warning("exchange config ignored", extra={"exchange": name, "error": str(exc)})
            return
        if name not in self.configs:
            state = self.states.get(name)
            self.metrics.configured(config, state.last_success_at if state else None)
        self.configs[name] = config
        self.metrics.interval.labels(name).set(config.interval_s)

    # ---- the lease -----------------------------------------------------------------------

    async def _activate(self) -> None:
        kafka = self.settings.kafka
        table = await client.read_table(kafka, self.settings.topic(EXCHANGE_STATE_TOPIC))
        read = read_state_table(
            ((key, value) for (_, key), value in table.items()),
            on_error=lambda key, exc: log.warning(
                "exchange state ignored", extra={"key": key, "error": str(exc)[:300]}
            ),
        )
        self.states, self.reports, self._report_offsets = (
            read.states, read.reports, read.report_offsets
        )  # fmt: skip
        reading = time.monotonic()
        self.ledgers = await self._read_ledgers()
        ledger_s = time.monotonic() - reading
        self._producer = await client.started(
            client.producer(
                kafka,
                transactional_id=f"{self.settings.app_id}-exchange-sync",
                linger_ms=20,
                max_request_size=8 * 1024 * 1024,
                request_timeout_ms=30000,
            )
        )
        compat.pace_metadata_updates(self._producer, 0.5)
        self.active = True
        self.metrics.active.set(1)
        self._reporter = asyncio.create_task(self._report_outcomes(), name="exchange-reports")
        for name, state in self.states.items():
            self.metrics.observe(name, None, state)
        log.info(
            "exchange sync active",
            extra={
                "exchanges": len(self.configs),
                "ledger_entries": sum(map(len, self.ledgers.values())),
                "ledger_s": round(ledger_s, 2),
            },
        )

    async def _read_ledgers(self) -> dict[str, Ledger]:
        """What each exchange has in the banks: the entries with an exchange's id form, read
        in one pass without holding the records."""
        ledgers: dict[str, Ledger] = {}

        def apply(partition: int, key: bytes, value: bytes | None) -> None:
            if value is None:
                for ledger in ledgers.values():
                    ledger.forget(key.decode())
                return
            found = published(value)
            if found is not None and key.decode().split("/", 2)[-1].startswith(f"{found[0]}."):
                exchange, record, print_ = found
                ledgers.setdefault(exchange, Ledger()).know(key.decode(), record, print_)

        await client.scan_table(
            self.settings.kafka,
            self.settings.topic(HASHBANK_TOPIC),
            apply,
            timeout_s=900.0,
            keep=lambda key: _EXCHANGE_ENTRY.search(key) is not None,
        )
        return ledgers

    async def _stand_by(self, why: str) -> None:
        was_active, self.active = self.active, False
        tasks = list(self.tasks.values())
        self.tasks.clear()
        if self._reporter is not None:
            tasks.append(self._reporter)
            self._reporter = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()
        self.metrics.active.set(0)
        if was_active:
            log.info("exchange sync standing by", extra={"reason": why})

    # ---- scheduling ------------------------------------------------------------------------

    def _schedule(self) -> None:
        now = time.time()
        for name, config in self.configs.items():
            if not config.enabled or name in self.tasks:
                continue
            if now >= self._due(config, self.states.get(name)):
                self.tasks[name] = asyncio.create_task(self._sync(config), name=f"sync-{name}")

    def _due(self, config: ExchangeConfig, state: ExchangeState | None) -> float:
        if state is None or state.last_attempt_at is None or state.api != config.api:
            return 0.0
        if config.sync_requested_at and config.sync_requested_at > state.last_attempt_at:
            return 0.0
        if state.failures:
            backoff = self.settings.exchange_retry_s * 2 ** min(state.failures - 1, 20)
            return state.last_attempt_at + min(backoff, config.interval_s)
        return state.last_attempt_at + config.interval_s

    async def _sync(self, config: ExchangeConfig) -> None:
        name = config.name
        try:
            async with self._slots:
                ledger = self.ledgers.setdefault(name, Ledger())
                log.info("exchange sync begins", extra={"exchange": name, "api": config.api})
                state = await sync_exchange(
                    config,
                    self.states.get(name),
                    ledger,
                    self,
                    self.limits,
                    progress=lambda state: self._progress(name, state),
                )
                log.info(
                    "exchange synced",
                    extra={
                        "exchange": name,
                        "fetched": state.fetched,
                        "published": state.published,
                        "deleted": state.deleted,
                        "ledger_entries": len(ledger),
                    },
                )
        except SyncError as exc:
            await self._failed(config, str(exc))
        except ProducerFenced:
            log.warning("fenced by another exchange sync instance", extra={"exchange": name})
            self.active = False
        finally:
            if self.tasks.get(name) is asyncio.current_task():
                del self.tasks[name]

    async def _failed(self, config: ExchangeConfig, error: str) -> None:
        self.metrics.errors.labels(config.name).inc()
        before = self.states.get(config.name) or ExchangeState(api=config.api)
        state = dataclasses.replace(
            before,
            last_attempt_at=time.time(),
            syncing=False,
            error=error,
            failures=before.failures + 1,
        )
        log.warning(
            "exchange sync failed",
            extra={"exchange": config.name, "error": error, "failures": state.failures},
        )
        with contextlib.suppress(Exception):
            await self.write(config, {}, state)

    def _progress(self, name: str, state: ExchangeState) -> None:
        now = time.monotonic()
        if now - self._last_progress_log.get(name, 0.0) >= PROGRESS_LOG_S:
            self._last_progress_log[name] = now
            log.info(
                "exchange sync progress",
                extra={
                    "exchange": name,
                    "fetched": state.fetched,
                    "published": state.published,
                    "progress_at": state.progress_at,
                },
            )

    # ---- the sink: a page's entries and the exchange's state, in one transaction ------

    async def write(
        self, config: ExchangeConfig, writes: dict[str, bytes | None], state: ExchangeState
    ) -> None:
        await self._transaction(writes, {state_key(config.name): state.to_json()})
        before = self.states.get(config.name)
        self.states[config.name] = state
        self.metrics.observe(config.name, before, state)

    async def _transaction(
        self, bank: dict[str, bytes | None], states: dict[bytes, bytes | None]
    ) -> None:
        """Bank records and ``exchange.state`` records, all or nothing."""
        if not self.active or self._producer is None:
            raise SyncError("this instance no longer holds the lease")
        producer = self._producer
        bank_topic = self.settings.topic(HASHBANK_TOPIC)
        state_topic = self.settings.topic(EXCHANGE_STATE_TOPIC)
        async with self._write_lock:
            try:
                await producer.begin_transaction()
                futures = [
                    await producer.send(bank_topic, key=key.encode(), value=value)
                    for key, value in bank.items()
                    if parse_bank_key(key)
                ]
                for key_, value in states.items():
                    futures.append(await producer.send(state_topic, key=key_, value=value))
                await asyncio.gather(*futures)  # every record delivered before the commit
                await producer.commit_transaction()
            except ProducerFenced:
                self.active = False
                raise SyncError("fenced: another exchange sync instance holds the lease") from None
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await producer.abort_transaction()
                raise SyncError(f"writing to Kafka failed: {exc}") from exc

    # ---- write-back: reviewers' outcomes on exchange entries, to the exchange -------------

    async def _report_outcomes(self) -> None:
        """Tail ``review.entry_outcomes`` from where the last active instance stopped."""
        for report in [r for r in self.reports.values() if r.status == "sending"]:
            # A crash between recording and sending: the exchange may have it; never resend.
            await self._record(
                settled(report, "unknown", "interrupted: not sent again", time.time())
            )
        topic = self.settings.topic(ENTRY_OUTCOMES_TOPIC)
        reader = await client.started(client.committed_reader(self.settings.kafka))
        try:
            partitions = await client.topic_partitions(reader, topic)
            reader.assign(partitions)
            for tp in partitions:
                reader.seek(tp, self._report_offsets.get(tp.partition, 0))
            while self.active:
                batches = await reader.getmany(timeout_ms=1000)
                for tp, records in batches.items():
                    for record in records:
                        await self._report(record.value)
                        self._report_offsets[tp.partition] = record.offset + 1
                if batches:  # where to resume, also past outcomes of entries of no exchange
                    offsets = orjson.dumps({str(p): o for p, o in self._report_offsets.items()})
                    await self._transaction({}, {REPORT_OFFSETS.encode(): offsets})
        except SyncError as exc:
            log.warning("exchange reports stopped", extra={"error": str(exc)})
        finally:
            await reader.stop()

    async def _report(self, value: bytes | None) -> None:
        try:
            outcome = EntryOutcome.parse(value or b"")
        except ContractError:
            return
        opinion = OPINIONS.get(outcome.outcome)
        name = next((n for n, ledger in self.ledgers.items() if outcome.key in ledger), None)
        config = self.configs.get(name or "")
        if opinion is None or name is None or config is None:
            return
        key = report_key(name, outcome.key, opinion)
        if key in self.reports:
            self.metrics.reports.labels(name, opinion, "repeated").inc()
            return
        report = Report(name, outcome.key, opinion, "sending", outcome.decision_id, time.time())
        if outcome.signal is None:  # removed from the bank before the review: nothing to name
            await self._record(
                settled(report, "failed", "entry no longer in the bank", time.time())
            )
            return
        await self._record(report)
        status, error = await asyncio.to_thread(
            send_report, config, outcome.signal_type, outcome.signal, opinion
        )
        await self._record(settled(report, status, error, time.time()))
        log.info(
            "exchange report",
            extra={
                "exchange": name,
                "entry": outcome.key,
                "opinion": opinion,
                "status": status,
                "error": error,
            },
        )

    async def _record(self, report: Report) -> None:
        await self._transaction({}, {report.key.encode(): report.to_json()})
        self.reports[report.key] = report
        if report.status != "sending":
            self.metrics.reports.labels(report.exchange, report.opinion, report.status).inc()


async def run_exchange_sync(settings: Settings, stop: asyncio.Event) -> None:
    await ExchangeSyncService(settings).run(stop)
