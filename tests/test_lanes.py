"""A partition lane in memory: out-of-order completion, in-order commits, retried commits and
refused records, with a committer that records what it was asked to write."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence

import orjson
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, TopicPartition
from prometheus_client import CollectorRegistry

from modstream.settings import Settings
from modstream.stages.metrics import PipelineMetrics
from modstream.stream.pipeline import (
    Committer,
    Lane,
    Outgoing,
    PipelineOutput,
    ProduceFailed,
    Route,
    WorkerTransactions,
    _Waiting,
)
from modstream.stream.progress import PartitionProgress

TP = TopicPartition("uploads", 0)


class MemoryCommitter(Committer):
    """Commits in memory; fails the first ``failures`` commits, refuses records larger than
    their topic's limit in ``max_bytes``."""

    def __init__(self, failures: int = 0, max_bytes: dict[str, int] | None = None) -> None:
        self.failures = failures
        self.max_bytes = max_bytes or {}
        self.commits: list[tuple[list[Outgoing], OffsetAndMetadata]] = []

    async def commit(self, outputs: Sequence[Outgoing], offset: OffsetAndMetadata) -> None:
        if self.failures:
            self.failures -= 1
            raise KafkaConnectionError("broker away")
        refused = {
            i: MessageSizeTooLargeError()
            for i, out in enumerate(outputs)
            if len(out.value) > self.max_bytes.get(out.topic, 1_000_000)
        }
        if refused:
            raise ProduceFailed(refused)
        self.commits.append((list(outputs), offset))


def consumed(offsets: range, slow: set[int] = frozenset()) -> list[ConsumerRecord]:
    return [
        ConsumerRecord("uploads", 0, o, 1_700_000_000_000, 0, None,
                       b"slow" if o in slow else b"fast", None, 0, 4, ())
        for o in offsets
    ]  # fmt: skip


def lane_with(committer: Committer, process, concurrency: int = 4) -> tuple[Lane, PipelineOutput]:
    metrics = PipelineMetrics(CollectorRegistry())
    output = PipelineOutput(Settings(), metrics)
    route = Route("hash", process, concurrency=concurrency, alone=lambda r: r.value == b"slow")
    return Lane(TP, route, PartitionProgress(0), committer, output, metrics), output


async def test_a_slow_record_holds_the_offset_not_the_records_behind_it():
    release = asyncio.Event()
    committer = MemoryCommitter()

    async def process(records):
        if records[0].value == b"slow":
            await release.wait()
        for record in records:
            await output.send("decisions", None, b"%d" % record.offset)
            assert record.timestamp == 1_700_000_000.0  # seconds, as the stages expect

    lane, output = lane_with(committer, process)
    lane.take(consumed(range(6), slow={1}))
    for _ in range(50):
        await asyncio.sleep(0.01)
        if committer.commits:
            break
    outputs, offset = committer.commits[-1]
    assert {o.value for o in outputs} == {b"0", b"2", b"3", b"4", b"5"}
    assert offset.offset == 1  # the slow record is not done: nothing past it is committed
    assert PartitionProgress.skipped(1, offset.metadata) == {2, 3, 4, 5}
    release.set()
    assert await lane.drained(1.0)
    assert committer.commits[-1][1] == OffsetAndMetadata(6, "")
    written = [o.value for outputs, _ in committer.commits for o in outputs]
    assert sorted(written) == [b"0", b"1", b"2", b"3", b"4", b"5"]  # each once
    await lane.close()


def lane_echoing(committer: Committer) -> Lane:
    """A lane whose stage writes each record's offset to ``decisions``."""

    async def process(records):
        for record in records:
            await output.send("decisions", None, b"%d" % record.offset)

    lane, output = lane_with(committer, process)
    return lane


async def test_a_failing_commit_is_retried_and_nothing_is_written_twice():
    committer = MemoryCommitter(failures=2)
    lane = lane_echoing(committer)
    lane.take(consumed(range(3)))
    assert await lane.drained(5.0)
    assert len(committer.commits) == 1  # after two failures, once
    outputs, offset = committer.commits[0]
    assert [o.value for o in outputs] == [b"0", b"1", b"2"] and offset.offset == 3
    assert lane.healthy
    await lane.close()


async def test_a_commit_that_landed_but_whose_answer_was_lost_is_not_repeated():
    """The broker committed, the answer never came (a timeout, the broker going away): the
    retry asks whether it landed instead of writing the batch a second time."""

    class AnswerLost(MemoryCommitter):
        async def commit(self, outputs, offset) -> None:
            await super().commit(outputs, offset)
            if len(self.commits) == 1:
                raise KafkaConnectionError("connection lost before the answer")

        async def landed(self, offset) -> bool:
            return any(done.offset >= offset.offset for _, done in self.commits)

    committer = AnswerLost()
    lane = lane_echoing(committer)
    lane.take(consumed(range(3)))
    assert await lane.drained(5.0)
    assert [[o.value for o in outputs] for outputs, _ in committer.commits] == [[b"0", b"1", b"2"]]
    assert lane.healthy
    await lane.close()


async def refusals(max_bytes: dict[str, int]) -> tuple[Lane, MemoryCommitter]:
    committer = MemoryCommitter(max_bytes=max_bytes)

    async def process(records):
        for record in records:
            size = 500 if record.offset == 1 else 10
            await output.send("takedowns", b"k", b"x" * size)

    lane, output = lane_with(committer, process)
    lane.take(consumed(range(3)))
    return lane, committer


async def test_a_refused_record_becomes_a_dead_letter_and_its_neighbours_go_out():
    lane, committer = await refusals({"takedowns": 100})
    assert await lane.drained(5.0)
    outputs, offset = committer.commits[0]
    assert offset.offset == 3
    assert [o.topic for o in outputs] == ["takedowns", "uploads.dlq", "takedowns"]
    letter = orjson.loads(outputs[1].value)
    assert letter["topic"] == "takedowns" and letter["offset"] == -1
    assert letter["error"].startswith("output refused by Kafka")
    assert len(base64.b64decode(letter["original_b64"])) == 500  # the refused record, whole
    await lane.close()


async def test_a_dead_letter_too_large_for_its_topic_keeps_only_the_reason():
    lane, committer = await refusals({"takedowns": 100, "uploads.dlq": 600})
    assert await lane.drained(5.0)
    letter = orjson.loads(committer.commits[0][0][1].value)
    assert letter["original_b64"] == "" and "not kept" in letter["error"]
    await lane.close()


async def test_a_dead_letter_topic_that_refuses_everything_stops_the_lane_unhealthy():
    """Nothing may be committed past an event that is neither written nor dead-lettered."""
    lane, committer = await refusals({"takedowns": 100, "uploads.dlq": 50})
    assert not await lane.drained(0.5)
    assert committer.commits == [] and not lane.healthy
    await lane.close()


async def test_a_stage_that_fails_midway_leaves_dead_letters_only():
    """What a failing batch produced before the failure is dropped: each of its events ends
    once, as a dead letter, not also as a decision."""
    committer = MemoryCommitter()

    async def process(records):
        await output.send("decisions", None, b"half a batch")
        raise ValueError("a bug")

    lane, output = lane_with(committer, process)
    lane.take(consumed(range(2)))
    assert await lane.drained(5.0)
    outputs, offset = committer.commits[0]
    assert [o.topic for o in outputs] == ["uploads.dlq", "uploads.dlq"] and offset.offset == 2
    await lane.close()


async def test_a_batch_that_fails_on_one_record_commits_its_neighbours_once():
    """The stage writes as it goes and raises on offset 2: what the failed attempt wrote is
    dropped, each record is tried alone, and only offset 2 becomes a dead letter."""
    committer = MemoryCommitter()

    async def process(records):
        for record in records:
            await output.send("decisions", None, b"%d" % record.offset)
            if record.offset == 2:
                raise RecursionError("maximum recursion depth exceeded")

    lane, output = lane_with(committer, process)
    lane.take(consumed(range(5)))
    assert await lane.drained(5.0)
    written = [o for outputs, _ in committer.commits for o in outputs]
    assert sorted(o.value for o in written if o.topic == "decisions") == [
        b"0", b"1", b"3", b"4"
    ]  # fmt: skip
    (letter,) = [orjson.loads(o.value) for o in written if o.topic == "uploads.dlq"]
    assert letter["offset"] == 2 and "RecursionError" in letter["error"]
    assert committer.commits[-1][1].offset == 5
    await lane.close()


async def test_revoked_partitions_wait_for_the_transaction_in_flight_and_leave_the_queue():
    """No transaction holding a revoked partition's offsets may straddle the rejoin: it
    would commit them under the next generation while another worker owns the partition."""
    transactions = WorkerTransactions(Settings(), "group", None)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    revoked, kept = TopicPartition("uploads", 0), TopicPartition("uploads", 1)
    queued = [
        _Waiting(tp, [], OffsetAndMetadata(1, ""), loop.create_future()) for tp in (revoked, kept)
    ]
    transactions._waiting.extend(queued)  # noqa: SLF001
    in_flight = transactions._busy  # noqa: SLF001 - held while a transaction runs
    await in_flight.acquire()
    withdrawing = asyncio.ensure_future(transactions.withdraw([revoked]))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not withdrawing.done()  # the transaction in flight ends first
    in_flight.release()
    await asyncio.wait_for(withdrawing, 5)
    assert transactions._waiting == [queued[1]]  # noqa: SLF001
    assert queued[0].committed.cancelled() and not queued[1].committed.done()
