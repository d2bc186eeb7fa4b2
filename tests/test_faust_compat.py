"""What modstream.stream.faust_compat relies on in Faust and aiokafka, asserted in
milliseconds: an upgrade that moves any of it fails here, not in production."""

from __future__ import annotations

import asyncio
import inspect

import faust
import pytest
from aiokafka import AIOKafkaConsumer
from faust.sensors.prometheus import PrometheusMonitor
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP, Message

from modstream.stream import faust_compat
from modstream.stream.faust_compat import CountingPrometheusMonitor, InOrderOfArrivalConsumer


def test_the_installed_versions_are_the_ones_it_was_written_for():
    faust_compat.check_versions()
    newer = {"faust-streaming": "0.16.0", "aiokafka": "0.14.0"}
    with pytest.raises(faust_compat.IncompatibleVersion, match=r"faust-streaming 0\.16\.0"):
        faust_compat.check_versions(newer.__getitem__)
    older = {"faust-streaming": "0.15.3", "aiokafka": "0.12.0"}
    with pytest.raises(faust_compat.IncompatibleVersion, match="aiokafka"):
        faust_compat.check_versions(older.__getitem__)


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_the_monitor_hooks_keep_faust_signatures():
    """Faust calls these hooks positionally: a renamed or added parameter would break them."""
    hooks = [
        "on_message_in",
        "on_stream_event_in",
        "on_stream_event_out",
        "on_message_out",
        "track_tp_end_offset",
        "on_table_get",
        "on_table_set",
        "on_table_del",
    ]
    for hook in hooks:
        ours = parameters(getattr(CountingPrometheusMonitor, hook))
        theirs = parameters(getattr(PrometheusMonitor, hook))
        assert ours == theirs, hook
    assert parameters(PrometheusMonitor.__init__)[:2] == ["self", "metrics"]
    for name in ("KEYS_RETRIEVED", "KEYS_UPDATED", "KEYS_DELETED", "_stream_label"):
        assert hasattr(PrometheusMonitor, name), name


def test_the_consumer_overrides_what_faust_still_calls():
    assert parameters(FaustConsumer._drain_messages) == ["self", "fetcher"]  # noqa: SLF001
    for name in ("getmany", "commit", "wait_first", "consumer_stopped_errors", "sleep"):
        assert hasattr(FaustConsumer, name), name


async def test_the_private_attributes_it_reads_exist():
    app = faust.App("compat-test", broker="kafka://127.0.0.1:1")
    app.transport.Consumer = InOrderOfArrivalConsumer
    consumer = app.transport.create_consumer(
        callback=print, on_partitions_revoked=None, on_partitions_assigned=None
    )
    private = ("_read_offset", "_commit_every", "_n_acked", "_stopped", "_acked", "_gap")
    for name in (*private, "callback", "diag", "suspend_flow"):
        assert hasattr(consumer, name), name
    assert isinstance(app.topics._tp_index, dict)  # noqa: SLF001 - what the compat reads
    assert callable(app.producer._ensure_producer)  # noqa: SLF001
    client = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
    try:
        assert callable(client._client.force_metadata_update)  # noqa: SLF001
    finally:
        await client.stop()


async def test_records_out_of_order_are_all_delivered_and_no_gap_is_acknowledged():
    """A batch fetched before a seek can arrive after it (faust-streaming #216, #221): Faust
    would acknowledge the "gap" and drop the record below it; this consumer delivers all."""
    app = faust.App("compat-test-order", broker="kafka://127.0.0.1:1")
    app.transport.Consumer = InOrderOfArrivalConsumer
    delivered: list[int] = []

    async def callback(message: Message) -> None:
        delivered.append(message.offset)

    consumer = app.transport.create_consumer(
        callback=callback, on_partitions_revoked=None, on_partitions_assigned=None
    )
    tp = TP("uploads", 0)
    arrivals = [10, 5, 12, 11]

    async def getmany(timeout: float):
        for offset in arrivals:
            yield tp, Message("uploads", 0, offset, 0.0, 0, None, None, b"k", b"v", None)
        consumer._stopped.set()  # noqa: SLF001 - one batch, then stop

    consumer.getmany = getmany
    consumer._flow_open = lambda: True  # noqa: SLF001 - no running app to ask

    class Fetcher:
        _stopped = asyncio.Event()

    await consumer._drain_messages(Fetcher())  # noqa: SLF001
    assert delivered == arrivals
    assert not any(consumer._gap.values())  # noqa: SLF001
    assert not any(consumer._acked.values())  # noqa: SLF001


def test_the_app_builds_twice_in_one_process(tmp_path):
    """Each app has its own Prometheus registry: nothing global collides."""
    from modstream.settings import Settings
    from modstream.stream.app import build_app

    first = build_app(Settings(data_dir=tmp_path, web_port=7101, hash_workers=1))
    second = build_app(Settings(data_dir=tmp_path, web_port=7102, hash_workers=1))
    assert first is not second
    assert {"hash_stage", "video_stage", "decide_stage"} <= {a.name for a in first.agents.values()}
