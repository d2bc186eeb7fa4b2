"""Faust's Kafka consumer with the one change that keeps a restarted worker from losing events.

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
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import Consumer
from mode import ServiceT


class InOrderOfArrivalConsumer(Consumer):
    """Delivers every fetched record and never acknowledges one it did not process."""

    def _flow_open(self) -> bool:
        """Flow on and Faust's producer buffer (table changelog records) under its limit."""
        buffer = self.app.producer.buffer
        return self.app.flow_control.is_active() and buffer.size <= buffer.max_messages

    def _queues_have_room(self, tp: Any) -> bool:
        return not any(channel.queue.full() for channel in self.app.topics._tp_index.get(tp, ()))

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set  # type: ignore[attr-defined]
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
