"""Every touch of Faust's and aiokafka's private API, in one place, for the versions below.

The worker needs three things these libraries do not offer publicly: a consumer that never
acknowledges an event it did not process, Prometheus sensors that do not cost a third of a
worker's time, and direct access to the Kafka producer and client metadata. Each is here,
with a check at import of the versions they were written against (an upgrade fails fast, at
start, instead of misbehaving), and ``tests/test_faust_compat.py`` asserts the attributes and
hook signatures they rely on. Ruff's SLF rule flags private access anywhere else.

## The in-order consumer
Faust's Kafka consumer with the one change that keeps a restarted worker from losing events.

faust-streaming 0.15.3 drains fetched records in ``Consumer._drain_messages`` with two rules
that assume records arrive in offset order:

- a record more than one offset past the last one read marks the offsets between as a *gap*,
  and gaps are acknowledged, so the next commit moves past them;
- a record below the last one read is dropped.

After a restart or a rebalance, Faust seeks each partition back to its committed offset, but
a batch fetched before that seek can still be handed out after it (the race of
faust-streaming issues #216 and #221). Its first record then looks like a gap over every
record from the committed offset on, which get acknowledged unprocessed; and when the same
records are fetched again from the committed offset, they are dropped as "already read".
Measured here: a worker killed mid-stream and restarted lost ~100 of 3,000 events.

This consumer drains records in the order they arrive and delivers every one: nothing is
acknowledged unless it was processed, and a record fetched twice is processed twice, which
the pipeline makes harmless (a redelivered event yields the identical decision). The offsets
of the stage topics are contiguous (they are not compacted; a transaction marker leaves a
hole of one offset, which Faust's commit logic already steps over), so a gap never needs
acknowledging.

## The counting sensors
faust's own Prometheus sensors, at a fraction of their per-event cost.

``faust.sensors.prometheus`` updates labelled Prometheus metrics several times for every
message and event (received, in, out, end offset, table access), and keeps a second set of
statistics for Faust's web views: measured on a bare Faust agent here, they take it from
7,000 events/s to 4,900. This monitor keeps the same metric names and meanings but
only counts in plain dicts on the hot path, and moves the counts into the metrics when
Prometheus scrapes (a collector registered ahead of faust's metrics runs first).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from importlib.metadata import version
from time import monotonic
from typing import Any, cast

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faust.sensors.prometheus import PrometheusMonitor, setup_prometheus_sensors
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import Consumer
from faust.types import EventT
from mode import ServiceT
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

#: (distribution, lowest version tested, first version not known to work)
WRITTEN_FOR = (("faust-streaming", (0, 15, 3), (0, 16)), ("aiokafka", (0, 13), (0, 15)))


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


def check_versions(installed=version) -> None:
    """Raise IncompatibleVersion unless every library is in its tested range."""
    for name, lowest, beyond in WRITTEN_FOR:
        found = _release(installed(name))
        if not lowest <= found < beyond:
            raise IncompatibleVersion(
                f"{name} {installed(name)} is installed; modstream.stream.faust_compat was "
                f"written for {'.'.join(map(str, lowest))} up to (not including) "
                f"{'.'.join(map(str, beyond))}: check it against the new version first"
            )


check_versions()


def install(app: faust.App, registry: CollectorRegistry) -> None:
    """Make ``app`` use the in-order consumer and the counting Prometheus sensors, whose
    metrics go to ``registry`` (served on ``/metrics`` with the pipeline's own)."""
    app.transport.Consumer = InOrderOfArrivalConsumer  # type: ignore[misc]
    setup_sensors(app, registry)


def kafka_producer(app: faust.App) -> AIOKafkaProducer:
    """The aiokafka producer under Faust's, for sends without Faust's per-record machinery
    (Faust flushes this same producer before it commits offsets)."""
    return app.producer._ensure_producer()  # type: ignore[attr-defined]  # noqa: SLF001


def batches(stream: faust.StreamT, size: int, within_s: float) -> AsyncIterator[Sequence[EventT]]:
    """Faust's ``take_events``: public on ``Stream``, missing from the ``StreamT`` type."""
    return cast(faust.Stream, stream).take_events(size, within=within_s)


async def refresh_metadata(consumer: AIOKafkaConsumer) -> None:
    """Ask the brokers for topic metadata now (a topic just created is not known yet)."""
    await consumer._client.force_metadata_update()  # noqa: SLF001


class InOrderOfArrivalConsumer(Consumer):
    """Delivers every fetched record and never acknowledges one it did not process."""

    def _flow_open(self) -> bool:
        """Flow on and Faust's producer buffer (table changelog records) under its limit."""
        buffer = self.app.producer.buffer
        return self.app.flow_control.is_active() and buffer.size <= buffer.max_messages

    def _queues_have_room(self, tp: Any) -> bool:
        channels = self.app.topics._tp_index.get(tp, ())  # type: ignore[attr-defined]  # noqa: SLF001
        return not any(channel.queue.full() for channel in channels)

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set  # type: ignore[attr-defined]  # noqa: SLF001
        read_offset = self._read_offset
        commit_every = self._commit_every
        since_yield = 0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records: Any = self.getmany(timeout=1.0)
                await self.sleep(0)
                if self.should_stop:
                    continue
                # When the flow is open and a record's stream queues have room, handing it over
                # completes without suspending, and Faust's race of each callback against a
                # flow suspension (two tasks per record, a tenth of a worker's time) is not
                # needed. The flow is checked again after anything that may have waited.
                flow_open: bool | None = None
                async for tp, message in records:
                    since_yield += 1
                    if since_yield > 100:  # let heartbeats and web requests run
                        await asyncio.sleep(0)
                        since_yield, flow_open = 0, None
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                        flow_open = None
                    if flow_open is None:
                        flow_open = self._flow_open()
                    if flow_open and self._queues_have_room(tp):
                        await callback(message)
                    else:  # it may wait: let a flow suspension (a rebalance) interrupt it
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                        flow_open = None
                    read_offset[tp] = message.offset
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class CountingPrometheusMonitor(PrometheusMonitor):
    """The hot hooks count; ``publish`` moves the counts into faust's Prometheus metrics."""

    def __init__(self, metrics: Any, **kwargs: Any) -> None:
        super().__init__(metrics, **kwargs)
        self._received: Counter[str] = Counter()
        self._read_offsets: dict[Any, int] = {}
        self._end_offsets: dict[Any, int] = {}
        self._events_in: Counter[Any] = Counter()
        self._events_out = 0
        self._messages_out = 0
        self._table_ops: Counter[tuple[str, str]] = Counter()
        self._stream_labels: dict[Any, str] = {}

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        self._received[tp.topic] += 1
        self._read_offsets[tp] = offset

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> dict:
        self._events_in[stream] += 1
        now = monotonic()
        # Faust's consumer reads this to tell a stalled stream from a working one: without it
        # a healthy worker logs "stream has not started processing" after five minutes.
        self.stream_inbound_time[tp] = now
        return {"time_in": now}

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: dict | None = None
    ) -> None:
        self._events_out += 1
        if state is not None:
            self._metrics.events_runtime_latency.observe((monotonic() - state["time_in"]) * 1e3)

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        self._messages_out += 1

    def track_tp_end_offset(self, tp: Any, offset: int) -> None:
        self._end_offsets[tp] = offset

    def on_table_get(self, table: Any, key: Any) -> None:
        self._table_ops[(table.name, self.KEYS_RETRIEVED)] += 1

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        self._table_ops[(table.name, self.KEYS_UPDATED)] += 1

    def on_table_del(self, table: Any, key: Any) -> None:
        self._table_ops[(table.name, self.KEYS_DELETED)] += 1

    def publish(self) -> None:
        metrics = self._metrics
        received = sum(self._received.values())
        metrics.messages_received.inc(received)
        metrics.active_messages.inc(received - self._messages_out)
        for topic, count in self._received.items():
            metrics.messages_received_per_topics.labels(topic=topic).inc(count)
        for tp, offset in self._read_offsets.items():
            metrics.messages_received_per_topics_partition.labels(
                topic=tp.topic, partition=tp.partition
            ).set(offset)
        for tp, offset in self._end_offsets.items():
            metrics.topic_partition_end_offset.labels(topic=tp.topic, partition=tp.partition).set(
                offset
            )
        events_in = sum(self._events_in.values())
        metrics.total_events.inc(events_in)
        metrics.total_active_events.inc(events_in - self._events_out)
        for stream, count in self._events_in.items():
            label = self._stream_labels.get(stream)
            if label is None:
                label = self._stream_labels[stream] = self._stream_label(stream)
            metrics.total_events_per_stream.labels(stream=f"stream.{label}.events").inc(count)
        for (table, operation), count in self._table_ops.items():
            metrics.table_operations.labels(table=f"table.{table}", operation=operation).inc(count)
        self._received.clear()
        self._read_offsets.clear()
        self._end_offsets.clear()
        self._events_in.clear()
        self._table_ops.clear()
        self._events_out = self._messages_out = 0


class _PublishOnScrape(Collector):
    def __init__(self, app: faust.App) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        monitor = self.app.monitor
        if isinstance(monitor, CountingPrometheusMonitor):
            monitor.publish()
        return iter(())


def setup_sensors(app: faust.App, registry: CollectorRegistry, pattern: str = "/metrics") -> None:
    """faust's Prometheus metrics (prefix ``faust_``) counted by the counting monitor, and the
    ``/metrics`` page serving everything in ``registry``."""
    registry.register(_PublishOnScrape(app))  # before faust's metrics: collected first
    setup_prometheus_sensors(app, pattern=pattern, registry=registry, name_prefix="faust")
    metrics = app.monitor._metrics  # type: ignore[attr-defined]  # noqa: SLF001
    app.monitor = CountingPrometheusMonitor(metrics=metrics)
