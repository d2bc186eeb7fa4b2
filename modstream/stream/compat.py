"""Every touch of aiokafka's private API, in one place, for the versions below.

The pipeline needs four things aiokafka does not offer publicly:

- the committed offsets of a partition *with their metadata* (``committed()`` returns the
  offset alone, and the metadata carries the records done beyond it: ``progress``), read
  *stable*: not while a transaction that commits them is still open (KIP-447, OffsetFetch
  v7's ``require_stable``; aiokafka speaks v3);
- offsets committed in a transaction *as a member of the group* (KIP-447, TxnOffsetCommit
  v3 with the generation and member id; aiokafka sends v0), so that one transactional
  producer can serve every partition a worker owns and a worker that lost a partition in a
  rebalance cannot commit for it;
- producers that pace their metadata refreshes (``pace_metadata_updates``), and a
  transactional producer that retries at once a record refused while the broker still
  writes its previous transaction's markers (``retry_marker_waits_soon``);
- a metadata refresh on demand (a topic just created is not known yet).

They are here, with a check at import of the versions they were written against (an
upgrade fails fast, at start, instead of misbehaving); ``tests/test_compat.py`` asserts the
attributes they rely on and runs both protocol versions against the broker. Ruff's SLF rule
flags private access anywhere else. Faust is used only through its public API.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import types
from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka import errors as Errors
from aiokafka.client import CoordinationType
from aiokafka.producer.sender import (
    BACKOFF_OVERRIDE,
    AddPartitionsToTxnHandler,
    SendProduceReqHandler,
    TxnOffsetCommitHandler,
)
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)
from aiokafka.structs import OffsetAndMetadata

log = logging.getLogger("modstream.stream")

#: (distribution, lowest version tested, first version not known to work)
WRITTEN_FOR = (("aiokafka", (0, 13), (0, 15)),)


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


def check_versions(installed: Callable[[str], str] = version) -> None:
    """Raise IncompatibleVersion unless every library is in its tested range."""
    for name, lowest, beyond in WRITTEN_FOR:
        found = _release(installed(name))
        if not lowest <= found < beyond:
            raise IncompatibleVersion(
                f"{name} {installed(name)} is installed; modstream.stream.compat was "
                f"written for {'.'.join(map(str, lowest))} up to (not including) "
                f"{'.'.join(map(str, beyond))}: check it against the new version first"
            )


check_versions()


def pace_metadata_updates(producer: AIOKafkaProducer, min_interval_s: float) -> None:
    """Space the metadata refreshes ``producer`` asks for at least ``min_interval_s`` apart.

    aiokafka's sender, holding records for a partition whose leader it no longer knows,
    waits on ``force_metadata_update()`` and loops as soon as that resolves, with no backoff;
    with the broker down every refresh fails at once, so the worker spun a core (14 s of CPU
    in a 20 s outage, in about one run of three of the fault suite's outage scenario). The
    client's refresh is wrapped: a call within ``min_interval_s`` of the last refresh waits
    out the rest of the interval first."""
    md_client = producer.client
    refresh = md_client.force_metadata_update
    last = [float("-inf")]

    def paced() -> asyncio.Future:
        loop = asyncio.get_running_loop()
        wait = last[0] + min_interval_s - loop.time()
        if wait <= 0:
            last[0] = loop.time()
            return refresh()

        async def later() -> bool:
            await asyncio.sleep(wait)
            last[0] = loop.time()
            return bool(await refresh())

        return asyncio.ensure_future(later())

    md_client.force_metadata_update = paced


_NOT_ENOUGH_REPLICAS = 19


def retry_marker_waits_soon(producer: AIOKafkaProducer, first_s: float) -> None:
    """Retry what the broker refuses while it still writes the previous transaction's
    commit markers after ``first_s``, doubling while it repeats, up to aiokafka's own
    backoff for it; other errors keep their pace.

    With Kafka 4 and aiokafka's protocol versions, a transaction that follows another
    without a pause is refused for a few milliseconds: its first AddPartitionsToTxn as
    CONCURRENT_TRANSACTIONS (aiokafka waits 20 ms), and now and then a produce as
    NOT_ENOUGH_REPLICAS (aiokafka waits its 100 ms retry backoff). Measured on the local
    broker, a one-record transaction took 24 ms of which 22 ms were that wait; a worker
    committing back to back through one producer (``pipeline.WorkerTransactions``) doubled
    its p50 latency. Shorter backoffs for everything spun a core while the broker was
    down: here only these refusals retry sooner."""
    sender = producer._sender  # noqa: SLF001
    retry_backoff: float = sender._retry_backoff  # noqa: SLF001
    streak = [0]

    def soon(ceiling: float) -> float:
        wait = min(ceiling, first_s * 2 ** streak[0])
        streak[0] += 1
        return wait

    class AddPartitions(AddPartitionsToTxnHandler):
        def handle_response(self, resp: Any) -> float | None:
            backoff: float | None = super().handle_response(resp)
            if backoff == BACKOFF_OVERRIDE:  # concurrent transactions, first partitions
                return soon(BACKOFF_OVERRIDE)
            streak[0] = 0
            return backoff

    class Produce(SendProduceReqHandler):
        def handle_response(self, response: Any) -> None:
            refused = {info[1] for _, partitions in response.topics for info in partitions} - {0}
            if refused == {_NOT_ENOUGH_REPLICAS}:
                self._default_backoff = soon(retry_backoff)
            elif not refused:
                streak[0] = 0
            super().handle_response(response)

    async def add_partitions_to_txn(tps: Any) -> Any:
        # aiokafka's ``Sender._do_add_partitions_to_txn`` with the handler above
        node_id = await sender._find_coordinator(  # noqa: SLF001
            CoordinationType.TRANSACTION,
            sender._txn_manager.transactional_id,  # noqa: SLF001
        )
        return await AddPartitions(sender, tps).do(node_id)

    async def send_produce_req(node_id: int, batches: Any) -> None:
        # aiokafka's ``Sender._send_produce_req`` with the handler above
        await Produce(sender, batches).do(node_id)
        sender._in_flight.remove(node_id)  # noqa: SLF001
        for tp in batches:
            sender._muted_partitions.remove(tp)  # noqa: SLF001

    sender._do_add_partitions_to_txn = add_partitions_to_txn  # noqa: SLF001
    sender._send_produce_req = send_produce_req  # noqa: SLF001


async def refresh_metadata(consumer: AIOKafkaConsumer) -> None:
    """Ask the brokers for topic metadata now (a topic just created is not known yet)."""
    await consumer._client.force_metadata_update()  # noqa: SLF001


def _flexible_topics(*partition_fields: tuple[str, Any]) -> tuple[str, CompactArray]:
    """The ``topics`` field of a flexible (v3+, tagged) offsets request or response: each
    topic's name and its partitions, each partition ``partition_fields``."""
    return (
        "topics",
        CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(*partition_fields, ("tags", TaggedFields))),
            ("tags", TaggedFields),
        ),
    )


class _TxnOffsetCommitResponseV3(Response):
    API_KEY = 28
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        _flexible_topics(("partition_index", Int32), ("error_code", Int16)),
        ("tags", TaggedFields),
    )


class _TxnOffsetCommitRequestV3(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 28
    API_VERSION = 3
    RESPONSE_TYPE = _TxnOffsetCommitResponseV3
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("group_id", CompactString("utf-8")),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("generation_id", Int32),
        ("member_id", CompactString("utf-8")),
        ("group_instance_id", CompactString("utf-8")),
        _flexible_topics(
            ("partition_index", Int32),
            ("committed_offset", Int64),
            ("committed_leader_epoch", Int32),
            ("committed_metadata", CompactString("utf-8")),
        ),
        ("tags", TaggedFields),
    )


class _TxnOffsetCommitAsMember(Request[_TxnOffsetCommitRequestV3]):
    API_KEY = 28

    def __init__(self, fields: tuple[Any, ...]) -> None:
        self.fields = fields

    def build(self, request_struct_class: type[_TxnOffsetCommitRequestV3]) -> Any:
        return request_struct_class(*self.fields)


#: Error codes that say the producer's consumer is no longer the group member it was
#: (illegal generation, unknown member, rebalance in progress, fenced instance id): the
#: partitions may belong to another worker now, and this transaction must be aborted.
_NOT_A_MEMBER = frozenset({22, 25, 27, 82})
_PRODUCER_FENCED = 90  # newer than aiokafka's table of errors


class NoLongerAMember(Errors.KafkaError):
    """The group refused a transaction's offsets: this worker's membership (its generation)
    is no longer current. The transaction is aborted; its partitions are being revoked."""


def _abort(txn_manager: Any, error: Exception) -> None:
    """Put the transaction in aiokafka's abortable-error state with ``error``: the pending
    ``send_offsets_to_transaction`` raises it. aiokafka also sets it on a future of its own
    that only ``commit_transaction`` would read; marked read, it is not logged as "never
    retrieved" when collected."""
    txn_manager.error_transaction(error)
    txn_manager._transaction_waiter.exception()  # noqa: SLF001


class _MemberTxnOffsetCommitHandler(TxnOffsetCommitHandler):
    """aiokafka's handler, sending v3 with the group membership read when the request is
    made, and treating a lost membership as an abortable error of the transaction (as the
    Java client does) instead of a crash of the producer's sender."""

    def __init__(self, sender: Any, offsets: Any, group_id: str, member: Any) -> None:
        super().__init__(sender, offsets, group_id)
        self._member = member

    def create_request(self) -> _TxnOffsetCommitAsMember:
        txn_manager = self._sender._txn_manager  # noqa: SLF001
        topics: dict[str, list[tuple[int, int, int, str, dict]]] = collections.defaultdict(list)
        for tp, offset in sorted(self._offsets.items()):
            topics[tp.topic].append((tp.partition, offset.offset, -1, offset.metadata, {}))
        return _TxnOffsetCommitAsMember(
            (
                txn_manager.transactional_id,
                self._group_id,
                txn_manager.producer_id,
                txn_manager.producer_epoch,
                self._member.generation,
                self._member.member_id,
                self._member._group_instance_id,  # noqa: SLF001
                [(topic, partitions, {}) for topic, partitions in topics.items()],
                {},
            )
        )

    def handle_response(self, resp: Any) -> float | None:
        errors = [
            (topic, [(partition, code) for partition, code, _ in partitions])
            for topic, partitions, _ in resp.topics
        ]
        for _, partitions in errors:
            for _, code in partitions:
                if code in _NOT_A_MEMBER:
                    refused = NoLongerAMember(f"error code {code} from the group coordinator")
                    _abort(self._sender._txn_manager, refused)  # noqa: SLF001
                    return None
                if code == _PRODUCER_FENCED:
                    raise Errors.ProducerFenced()
        # aiokafka's handler reads v0's shape: ``errors`` by topic, (partition, code) pairs
        result: float | None = super().handle_response(types.SimpleNamespace(errors=errors))
        return result


def commit_offsets_as_member(producer: AIOKafkaProducer, consumer: AIOKafkaConsumer) -> None:
    """Make ``producer.send_offsets_to_transaction`` commit as ``consumer``'s group member
    (KIP-447): the broker refuses the offsets of a generation that is no longer current, so
    one transactional id per worker is safe, and the transaction is aborted instead."""
    _commit_offsets_as(producer, consumer._coordinator)  # noqa: SLF001


def _commit_offsets_as(producer: AIOKafkaProducer, member: Any) -> None:
    """``member``: anything with aiokafka's coordinator's ``generation``, ``member_id`` and
    ``_group_instance_id``, read at each commit."""
    sender = producer._sender  # noqa: SLF001
    find_coordinator = sender._find_coordinator  # noqa: SLF001

    async def do_txn_offset_commit(offsets: Any, group_id: str) -> None:
        if not offsets:
            return
        txn_manager = sender._txn_manager  # noqa: SLF001
        try:
            node_id = await find_coordinator(CoordinationType.GROUP, group_id)
        except Errors.GroupAuthorizationFailedError as exc:
            _abort(txn_manager, exc)
            return
        if member.generation < 0:
            # Between generations (aiokafka resets it to -1 when the group drops the member),
            # and the broker skips its check for generation -1: refuse here instead.
            _abort(txn_manager, NoLongerAMember("not a member of the group now"))
            return
        # ``do`` makes the request before it awaits anything: the membership sent is the one
        # just checked.
        await _MemberTxnOffsetCommitHandler(sender, offsets, group_id, member).do(node_id)

    sender._do_txn_offset_commit = do_txn_offset_commit  # noqa: SLF001


class _OffsetFetchResponseV7(Response):
    API_KEY = 9
    API_VERSION = 7
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        _flexible_topics(
            ("partition_index", Int32),
            ("committed_offset", Int64),
            ("committed_leader_epoch", Int32),
            ("metadata", CompactString("utf-8")),
            ("error_code", Int16),
        ),
        ("error_code", Int16),
        ("tags", TaggedFields),
    )


class _OffsetFetchRequestV7(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 9
    API_VERSION = 7
    RESPONSE_TYPE = _OffsetFetchResponseV7
    SCHEMA = Schema(
        ("group_id", CompactString("utf-8")),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("partition_indexes", CompactArray(Int32)),
                ("tags", TaggedFields),
            ),
        ),
        ("require_stable", Boolean),
        ("tags", TaggedFields),
    )


class _StableOffsetFetch(Request[_OffsetFetchRequestV7]):
    API_KEY = 9

    def __init__(self, group_id: str, topics: list[tuple[str, list[int], dict]]) -> None:
        self.group_id = group_id
        self.topics = topics

    def build(self, request_struct_class: type[_OffsetFetchRequestV7]) -> Any:
        return request_struct_class(self.group_id, self.topics, True, {})


#: Error codes after which the fetch is asked again (after a pause): the group's
#: coordinator is loading (14), unavailable (15) or moved (16), or a transaction holding
#: these offsets is not finished yet (88, UNSTABLE_OFFSET_COMMIT).
_FETCH_AGAIN = frozenset({14, 15, 16, 88})
_NOT_COORDINATOR = frozenset({15, 16})
_UNSTABLE = 88
_FIRST_PAUSE_S = 0.05


class FetchAgain(Errors.KafkaError):
    """An offset fetch answered with an error that passes (``_FETCH_AGAIN``)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"offset fetch: error code {code}")
        self.code = code


async def committed_offsets(
    consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition], timeout_s: float = 90.0
) -> dict[TopicPartition, OffsetAndMetadata]:
    """The group's committed offsets with their metadata, once stable: while a transaction
    that commits some of them is open (its producer crashed, or is committing) the broker
    answers UNSTABLE_OFFSET_COMMIT, and the fetch is asked again until it has finished, up
    to ``timeout_s`` (beyond any transaction's timeout). A partition never committed is
    absent."""
    if not partitions:
        return {}
    coordinator = consumer._coordinator  # noqa: SLF001
    by_topic: dict[str, list[int]] = collections.defaultdict(list)
    for tp in partitions:
        by_topic[tp.topic].append(tp.partition)
    request = _StableOffsetFetch(
        coordinator.group_id, [(topic, parts, {}) for topic, parts in by_topic.items()]
    )
    deadline = time.monotonic() + timeout_s
    pause = _FIRST_PAUSE_S
    while True:
        await coordinator.ensure_coordinator_known()
        try:
            response = await coordinator._send_req(request)  # noqa: SLF001
            return _stable_offsets(response)
        except FetchAgain as exc:
            if exc.code in _NOT_COORDINATOR:
                coordinator.coordinator_dead()
            if exc.code == _UNSTABLE and pause == _FIRST_PAUSE_S:
                log.info(
                    "committed offsets held by an open transaction: waiting for its end",
                    extra={"partitions": [f"{tp.topic}:{tp.partition}" for tp in partitions]},
                )
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(pause)
            pause = min(1.0, pause * 2)


def _raise_for(code: int) -> None:
    if code in _FETCH_AGAIN:
        raise FetchAgain(code)
    if code:
        raise Errors.for_code(code)()


def _stable_offsets(response: Any) -> dict[TopicPartition, OffsetAndMetadata]:
    _raise_for(response.error_code)
    found: dict[TopicPartition, OffsetAndMetadata] = {}
    for topic, partitions, _ in response.topics:
        for partition, offset, _, metadata, error_code, _ in partitions:
            _raise_for(error_code)
            if offset >= 0:
                found[TopicPartition(topic, partition)] = OffsetAndMetadata(offset, metadata or "")
    return found
