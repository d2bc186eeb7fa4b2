"""The broker goes away for 20 s under load, on a broker of this test's own: the worker waits
quietly (bounded backoff, few log lines), and once the broker is back every event gets
exactly one decision. Its CPU time in the outage and how soon decisions come back are
figures of the report, not assertions (a shared machine makes them vary)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

from chaos import Decisions
from conftest import Workers, free_ports
from streaming import send, upload

from modstream.localkafka import LocalKafka, _default_home
from modstream.stream.topics import ensure_topics

OUTAGE_S = 20.0


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process (not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_a_broker_outage_under_load(tmp_path):
    port = free_ports(2)
    broker = LocalKafka(home=tmp_path / "broker", port=port, libs_dir=_default_home() / "libs")
    await asyncio.to_thread(broker.start)
    run = uuid.uuid4().hex[:8]
    env = {
        "MODSTREAM_BROKER": f"127.0.0.1:{port}",
        "MODSTREAM_TOPIC_PREFIX": f"o{run}.",
        "MODSTREAM_APP_ID": f"modstream-outage-{run}",
        "MODSTREAM_DATA_DIR": str(tmp_path / "data"),
        "MODSTREAM_PARTITIONS": "2",
        "MODSTREAM_HASH_WORKERS": "1",
        "MODSTREAM_SESSION_TIMEOUT_S": "6",
        "MODSTREAM_INSTANCE_ID": "w1",
    }
    workers = Workers(tmp_path, env)
    try:
        await ensure_topics(workers.settings)
        await send(workers, "hashbank", [])
        proc, web_port = await asyncio.to_thread(workers.start)
        before = [f"before-{i:04d}" for i in range(1500)]
        after = [f"after-{i:04d}" for i in range(500)]
        texts = ["a quiet day at the lake", "what a match last night"]

        def uploads(ids: list[str]) -> list[tuple[bytes, bytes]]:
            return [upload(i, text=texts[n % 2]) for n, i in enumerate(ids)]

        async with Decisions(workers) as seen:
            await send(workers, "uploads", uploads(before))
            await seen.until(lambda: len(seen.arrivals) >= 300, 60)
            await asyncio.to_thread(broker.stop)  # mid-stream: batches in flight
            lines_before = workers.log(web_port).count("\n")
            cpu_before = cpu_seconds(proc.pid)
            await asyncio.sleep(OUTAGE_S)
            cpu = cpu_seconds(proc.pid) - cpu_before
            lines = workers.log(web_port).count("\n") - lines_before
            await asyncio.to_thread(broker.start)
            back = time.monotonic()
            await send(workers, "uploads", uploads(after))
            assert await seen.all_of(before + after, 120)
            await asyncio.to_thread(workers.stop_all)
            await seen.settle()
            resumed = min(seen.arrivals[i][0] for i in after) - back
            stalled = (
                min((ts[0] for i, ts in seen.arrivals.items() if ts[0] > back - 1), default=back)
                - back
            )
        figures = seen.figures("broker stopped for 20 s under load", before + after)
        figures.extra = {
            "worker_cpu_s_during_outage": round(cpu, 2),
            "worker_log_lines_during_outage": lines,
            "first_decision_after_return_s": round(stalled, 2),
            "broker_back_to_new_events_decided_s": round(resumed, 2),
        }
        figures.report()
        assert figures.settled and figures.lost == 0
        assert figures.duplicate_records == 0 and figures.unexpected_ids == 0
        assert lines < 3 * OUTAGE_S, "a few log lines per second at most"
    finally:
        workers.stop_all()
        await asyncio.to_thread(broker.stop)
