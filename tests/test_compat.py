"""What modstream.stream.compat relies on in aiokafka, asserted: an upgrade that moves any
of it fails here, not in production."""

from __future__ import annotations

import asyncio
import inspect
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.consumer.group_coordinator import GroupCoordinator

from modstream.stream import compat


def test_the_installed_versions_are_the_ones_it_was_written_for():
    compat.check_versions()
    with pytest.raises(compat.IncompatibleVersion, match=r"aiokafka 0\.15\.0"):
        compat.check_versions({"aiokafka": "0.15.0"}.__getitem__)
    with pytest.raises(compat.IncompatibleVersion, match="aiokafka"):
        compat.check_versions({"aiokafka": "0.12.0"}.__getitem__)


async def test_the_private_attributes_it_reads_exist():
    client = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", group_id="g")
    try:
        assert callable(client._client.force_metadata_update)  # noqa: SLF001
        assert hasattr(client, "_coordinator")
    finally:
        await client.stop()
    fetch = GroupCoordinator.fetch_committed_offsets
    assert list(inspect.signature(fetch).parameters) == ["self", "partitions"]


async def test_committed_offsets_keep_their_metadata(kafka, tmp_path):
    """The metadata is where a partition's records done out of order are kept."""
    from aiokafka import TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    from modstream.settings import Settings
    from modstream.stream.client import consumer, started, topic_partitions
    from modstream.stream.topics import ensure_topics

    settings = Settings(broker=kafka, topic_prefix=f"compat{tmp_path.name[-6:]}.")
    await ensure_topics(settings)
    topic = settings.topic("uploads")
    client = await started(
        consumer(settings.kafka, group_id=f"compat-{tmp_path.name}", enable_auto_commit=False)
    )
    try:
        tp = (await topic_partitions(client, topic))[0]
        client.assign([tp])
        await client.commit({tp: OffsetAndMetadata(0, "ms1:AQ==")})
        found = await compat.committed_offsets(client, [tp, TopicPartition(topic, 1)])
        assert found == {tp: OffsetAndMetadata(0, "ms1:AQ==")}  # never-committed: absent
    finally:
        await client.stop()


def test_the_app_builds_twice_in_one_process(tmp_path):
    """Each app has its own Prometheus registry: nothing global collides."""
    from modstream.settings import Settings
    from modstream.stream.app import build_app

    first = build_app(Settings(data_dir=tmp_path, web_port=7101, hash_workers=1))
    second = build_app(Settings(data_dir=tmp_path, web_port=7102, hash_workers=1))
    assert first is not second


async def test_producers_pace_their_metadata_refreshes():
    """aiokafka's sender loops on ``force_metadata_update`` with no backoff while a leader
    is unknown; with the broker down that spun a core. Paced, calls wait out the interval."""
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
    assert callable(producer.client.force_metadata_update)
    calls = []

    def refresh():
        calls.append(asyncio.get_running_loop().time())
        done = asyncio.get_running_loop().create_future()
        done.set_result(False)
        return done

    producer.client.force_metadata_update = refresh
    compat.pace_metadata_updates(producer, 0.2)
    started = asyncio.get_running_loop().time()
    for _ in range(4):  # what the sender does: wait for the refresh, ask again at once
        await producer.client.force_metadata_update()
    assert len(calls) == 4
    assert calls[-1] - started >= 3 * 0.2 - 0.01  # not four refreshes in a tight loop
    await producer.stop()


async def test_offsets_commit_in_a_transaction_as_a_group_member(kafka, tmp_path):
    """TxnOffsetCommit v3 (KIP-447): the offsets carry the consumer's generation; the group
    takes them from the current one and refuses a stale one, aborting that transaction. The
    stable fetch (OffsetFetch v7) waits while a transaction holding offsets is open."""
    import types

    from aiokafka import TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    from modstream.settings import Settings
    from modstream.stream.client import consumer, producer, started
    from modstream.stream.topics import delete_topics, ensure_topics

    settings = Settings(broker=kafka, topic_prefix=f"member-{uuid.uuid4().hex[:8]}.")
    await ensure_topics(settings)
    topic, group = settings.topic("uploads"), f"member-{tmp_path.name}"
    tp = TopicPartition(topic, 0)

    def member_of_group():
        return consumer(settings.kafka, group_id=group, enable_auto_commit=False)

    first = await started(member_of_group())
    first.subscribe([topic])
    writer = await started(producer(settings.kafka, transactional_id=f"{group}-txn"))
    try:
        while not first.assignment():
            await first.getmany(timeout_ms=200)
        compat.commit_offsets_as_member(writer, first)
        async with writer.transaction():
            await writer.send_offsets_to_transaction({tp: OffsetAndMetadata(3, "m")}, group)
        assert await compat.committed_offsets(first, [tp]) == {tp: OffsetAndMetadata(3, "m")}

        # A second member joins: the first's generation is stale once the group moves on.
        stale = types.SimpleNamespace(
            generation=first._coordinator.generation,  # noqa: SLF001
            member_id=first._coordinator.member_id,  # noqa: SLF001
            _group_instance_id=None,
        )
        second = await started(member_of_group())
        second.subscribe([topic])
        try:
            while first._coordinator.generation == stale.generation or not second.assignment():  # noqa: SLF001
                await asyncio.gather(first.getmany(timeout_ms=200), second.getmany(timeout_ms=200))
            compat._commit_offsets_as(writer, stale)  # noqa: SLF001
            await writer.begin_transaction()
            with pytest.raises(compat.NoLongerAMember):
                await writer.send_offsets_to_transaction({tp: OffsetAndMetadata(9, "")}, group)
            await writer.abort_transaction()
            assert await compat.committed_offsets(first, [tp]) == {tp: OffsetAndMetadata(3, "m")}

            # Between generations (-1), which the broker would not check: refused here.
            compat._commit_offsets_as(writer, types.SimpleNamespace(generation=-1))  # noqa: SLF001
            await writer.begin_transaction()
            with pytest.raises(compat.NoLongerAMember):
                await writer.send_offsets_to_transaction({tp: OffsetAndMetadata(9, "")}, group)
            await writer.abort_transaction()

            # An open transaction holding offsets: the stable fetch waits for its end.
            owner = first if tp in first.assignment() else second
            compat.commit_offsets_as_member(writer, owner)
            await writer.begin_transaction()
            await writer.send_offsets_to_transaction({tp: OffsetAndMetadata(5, "")}, group)
            fetch = asyncio.ensure_future(compat.committed_offsets(second, [tp]))
            await asyncio.sleep(1.0)
            assert not fetch.done(), "read while a transaction holding the offset was open"
            await writer.commit_transaction()
            assert await asyncio.wait_for(fetch, 10) == {tp: OffsetAndMetadata(5, "")}
        finally:
            await second.stop()
    finally:
        await writer.stop()
        await first.stop()
        await delete_topics(settings)


async def test_transactions_back_to_back_retry_the_marker_wait_soon(kafka, tmp_path):
    """The patched producer's sender methods are aiokafka's, with the handlers swapped: back
    to back transactions (each refused at first while the last one's markers are written)
    all commit, and every record is read once."""
    from aiokafka import TopicPartition
    from aiokafka.producer import sender as aiokafka_sender

    from modstream.settings import Settings
    from modstream.stream.client import producer, read_partition, started
    from modstream.stream.topics import delete_topics, ensure_topics

    sender_class = aiokafka_sender.Sender
    add_partitions = sender_class._do_add_partitions_to_txn  # noqa: SLF001
    send_produce = sender_class._send_produce_req  # noqa: SLF001
    assert list(inspect.signature(add_partitions).parameters) == ["self", "tps"]
    assert list(inspect.signature(send_produce).parameters) == ["self", "node_id", "batches"]
    assert aiokafka_sender.BACKOFF_OVERRIDE == 0.02

    settings = Settings(broker=kafka, topic_prefix=f"markers-{uuid.uuid4().hex[:8]}.")
    await ensure_topics(settings)
    topic = settings.topic("decisions")
    writer = producer(settings.kafka, transactional_id=f"markers-{tmp_path.name}", linger_ms=0)
    compat.retry_marker_waits_soon(writer, 0.002)
    await started(writer)
    try:
        assert writer._sender._in_flight == set()  # noqa: SLF001
        assert writer._sender._muted_partitions == set()  # noqa: SLF001
        for n in range(30):
            async with writer.transaction():
                await (await writer.send(topic, str(n).encode(), key=b"k", partition=n % 2))
        values = [
            value
            for p in range(2)
            for _, _, value in [
                r async for r in read_partition(settings.kafka, TopicPartition(topic, p))
            ]
        ]
    finally:
        await writer.stop()
        await delete_topics(settings)
    assert sorted(int(v) for v in values) == list(range(30))
