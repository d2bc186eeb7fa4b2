"""Replicates the compacted ``hashbank`` topic into this worker's in-memory bank.

Every worker reads every partition from the beginning without a consumer group, applies each
change to the bank's indexes in place, and keeps tailing; a change is live within one poll
(~0.2 s). ``ready`` is set once the worker has caught up with the offsets the topic had at
start, so decisions never run against a half-loaded bank. See docs/bank-replication.md for why
this replaces a Faust GlobalTable.

With a snapshot folder, the replica saves the bank (entries and indexes) with the offsets it
reflects every ``snapshot_interval_s`` when it changed; a restarting worker loads the snapshot
and reads only the records after it, instead of replaying the whole topic.

A worker with no snapshot to start from and a large topic to replay does the replay in a
child process that writes a snapshot and exits; the worker then restores that snapshot.
Replaying in place leaves the heap fragmented (millions of short-lived objects interleaved
with the long-lived ones: ~1.45x the memory of a restored bank, for good); the child takes
that with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import logging.config
import multiprocessing
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from aiokafka import TopicPartition
from mode import Service

from modstream.bank.bank import Bank, snapshot_manifest
from modstream.contracts import BankEntry, ContractError
from modstream.settings import KafkaAccess
from modstream.stages.metrics import PipelineMetrics
from modstream.stream.replica import TopicReplica

log = logging.getLogger("modstream.bank")
#: Longest a child's replay may take before the worker replays in place instead.
REPLAY_IN_CHILD_TIMEOUT_S = 3600.0


def return_free_memory() -> None:
    """Ask glibc to hand freed heap pages back to the system (``malloc_trim``): after a
    large free, RSS otherwise stays at its peak. A no-op on other C libraries."""
    path = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(path).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        return


class BankReplica(TopicReplica):
    """The ``hashbank`` topic into ``bank``, from the newest snapshot when there is one."""

    def __init__(
        self,
        bank: Bank,
        kafka: KafkaAccess,
        topic: str,
        metrics: PipelineMetrics,
        snapshot_link: Path | None = None,
        snapshot_interval_s: float = 300.0,
        replay_in_child_above: int = 0,
        log_format: str = "json",
        **kwargs,
    ) -> None:
        super().__init__(kafka, topic, **kwargs)
        self.bank = bank
        self.metrics = metrics
        self.snapshot_link = snapshot_link  # a symlink to the newest complete snapshot
        self.snapshot_interval_s = snapshot_interval_s
        self.replay_in_child_above = replay_in_child_above  # records; 0: never
        self.log_format = log_format
        self.restored = False
        self.replayed_in_child = False
        self._unsaved = 0

    async def starting_positions(self, partitions: list[TopicPartition]) -> dict[int, int]:
        positions = await self._restore(partitions)
        if positions is None and await self._worth_replaying_in_child(partitions):
            loop = asyncio.get_running_loop()
            if await loop.run_in_executor(None, self._replay_in_child):
                self.replayed_in_child = True
                positions = await self._restore(partitions)
        return positions or {}

    async def _worth_replaying_in_child(self, partitions: list[TopicPartition]) -> bool:
        """Only a replica that keeps snapshots can hand a child's replay over, and only a
        large topic is worth a process's start-up (~1 s)."""
        if self.snapshot_link is None or self.snapshot_interval_s <= 0:
            return False
        if self.replay_in_child_above <= 0:
            return False
        assert self._consumer is not None
        beginning = await self._consumer.beginning_offsets(partitions)
        end = await self._consumer.end_offsets(partitions)
        return sum(end[tp] - beginning[tp] for tp in partitions) > self.replay_in_child_above

    def _replay_in_child(self) -> bool:
        """Replay the topic into a snapshot in a child process (blocking: on a thread)."""
        assert self.snapshot_link is not None
        started_at = time.monotonic()
        child = multiprocessing.get_context("spawn").Process(
            target=replay_to_snapshot,
            args=(
                self.kafka,
                self.topic,
                self.snapshot_link,
                self.bank.index_layout,
                self.log_format,
            ),
            name="bank-replay",
        )
        child.start()
        child.join(REPLAY_IN_CHILD_TIMEOUT_S)
        if child.is_alive():
            child.kill()
            child.join()
        done = child.exitcode == 0 and self.snapshot_link.exists()
        log.info(
            "bank replayed in a child process" if done else "bank replay in a child failed",
            extra={"exitcode": child.exitcode, "seconds": round(time.monotonic() - started_at, 2)},
        )
        return done

    def after_batch(self, applied: int) -> None:
        self._unsaved += applied
        self._publish_sizes()

    def caught_up(self) -> None:
        self.metrics.bank_ready.set(1)
        self._publish_sizes()
        log.info("bank loaded", extra={"entries": len(self.bank), "applied": self.applied})

    # -- snapshots ---------------------------------------------------------------------------

    async def _restore(self, partitions: list[TopicPartition]) -> dict[int, int] | None:
        """Load the newest snapshot; returns the offsets to resume from, or None to replay."""
        if self.snapshot_link is None or not self.snapshot_link.exists():
            return None
        assert self._consumer is not None
        started = time.monotonic()
        try:
            folder = self.snapshot_link.resolve()
            replica = snapshot_manifest(folder)["replica"]
            if replica["topic"] != self.topic:
                return None
            positions = {int(p): int(off) for p, off in replica["positions"].items()}
            beginning = await self._consumer.beginning_offsets(partitions)
            if any(positions.get(tp.partition, 0) < beginning[tp] for tp in partitions):
                log.warning("bank snapshot predates the topic's retained log; replaying it")
                return None
            await asyncio.get_running_loop().run_in_executor(None, self.bank.restore, folder)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("bank snapshot unusable; replaying the topic", extra={"error": str(exc)})
            return None
        self.restored = True
        log.info(
            "bank restored from snapshot",
            extra={"entries": len(self.bank), "seconds": round(time.monotonic() - started, 2)},
        )
        return positions

    @Service.task
    async def _save_snapshots(self) -> None:
        if self.snapshot_link is None or self.snapshot_interval_s <= 0:
            return
        await self.ready.wait()
        while not self.should_stop:
            if self._unsaved:
                with self.metrics.periodic("save_bank_snapshot"):
                    await self.save_snapshot()
            await self.sleep(self.snapshot_interval_s)

    async def save_snapshot(self, adopt: bool = True) -> None:
        """Capture the bank and the offsets it reflects together, then write on a thread
        (and, with ``adopt``, take the written entries in place of their Python objects)."""
        assert self.snapshot_link is not None
        write_bank = self.bank.snapshot()  # no await since the last apply: consistent
        positions = {str(tp.partition): off for tp, off in self._positions.items()}
        unsaved, self._unsaved = self._unsaved, 0
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            folder = await loop.run_in_executor(None, self._write_snapshot, write_bank, positions)
            del write_bank  # it holds the captured live entries: let adoption free them
            if adopt:
                await loop.run_in_executor(None, self._adopt, folder)
        except OSError as exc:
            self._unsaved += unsaved
            log.warning("bank snapshot failed", extra={"error": str(exc)})
            return
        log.info(
            "bank snapshot saved",
            extra={
                "entries": len(self.bank),
                "unfrozen": self.bank.unfrozen(),
                "seconds": round(time.monotonic() - started, 2),
            },
        )

    def _adopt(self, folder: Path) -> None:
        """The snapshot's entries replace their Python objects, whose memory goes back to the
        system (a replayed bank otherwise costs ~1.4x a restored one)."""
        self.bank.adopt(folder)
        return_free_memory()

    def _write_snapshot(self, write_bank: Callable[..., None], positions: dict) -> Path:
        """Write a new folder, then point the link at it atomically; drop the old folder."""
        assert self.snapshot_link is not None
        link = self.snapshot_link
        folder = link.with_name(f"{link.name}.{uuid.uuid4().hex[:12]}")
        replica = {"topic": self.topic, "positions": positions, "saved_at": time.time()}
        write_bank(folder, replica=replica)
        old = link.resolve() if link.is_symlink() else None
        staging_link = link.with_name(f"{link.name}.link-{uuid.uuid4().hex[:8]}")
        os.symlink(folder.name, staging_link)
        os.replace(staging_link, link)
        if old is not None and old != folder:
            shutil.rmtree(old, ignore_errors=True)
        return folder

    def apply_record(self, key: bytes | None, value: bytes | None) -> None:
        try:
            if key is None:
                raise ContractError("bank record without a key")
            text_key = key.decode()
            entry = None if value is None else BankEntry.parse(value)
            if entry is not None and entry.key != text_key:
                raise ContractError(f"key {text_key!r} does not match entry {entry.key!r}")
            self.bank.apply(text_key, entry)
        except Exception as exc:  # any record's failure is its own: the bank goes on
            self.metrics.dead_letters.labels(stage="bank", reason="invalid_entry").inc()
            log.warning("bank entry ignored", extra={"key": repr(key)[:200], "error": str(exc)})
            return
        self.applied += 1
        self.metrics.bank_changed()

    def _publish_sizes(self) -> None:
        self.metrics.bank_entries.clear()
        for (bank, signal_type), size in self.bank.sizes().items():
            self.metrics.bank_entries.labels(bank=bank, signal_type=signal_type).set(size)


def replay_to_snapshot(
    kafka: KafkaAccess, topic: str, link: Path, index_layout: str, log_format: str
) -> None:
    """A child process's whole life: replay the topic, write a snapshot at ``link``, exit."""
    from modstream.logs import logging_config

    logging.config.dictConfig(logging_config(log_format, "INFO"))

    async def replay() -> None:
        metrics = PipelineMetrics()
        replica = BankReplica(
            Bank(index_layout=index_layout), kafka, topic, metrics, snapshot_link=link,
            snapshot_interval_s=0, loop=asyncio.get_running_loop(),
        )  # fmt: skip
        await replica.start()
        try:
            await replica.ready.wait()
            await replica.save_snapshot(adopt=False)
        finally:
            with contextlib.suppress(Exception):
                await replica.stop()

    asyncio.run(replay())
