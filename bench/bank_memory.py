"""What a worker's bank costs in memory when replayed from the topic, against restored from a
snapshot, through the worker's own replica on the local broker.

    .venv/bin/modstream kafka start && .venv/bin/python bench/bank_memory.py [--entries 200000]

The entries go to a fresh topic once; then each side runs in a fresh process and reports its
RSS growth once its bank is loaded:

- ``in place``: the replica replays the topic itself, then saves its first snapshot (and
  adopts the written entries, returning freed pages), as a worker did before;
- ``in a child``: the replica has a child process replay the topic into a snapshot and
  restores that (what a worker does now above ``MODSTREAM_BANK_REPLAY_IN_CHILD_ABOVE``);
- ``restored``: the replica restores the snapshot a previous run left.

Each compiles its search kernels first, so no side counts the compiler.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from modstream.bank.bank import Bank
from modstream.contracts import HASHBANK_TOPIC, BankEntry, dumps
from modstream.matching.hamming import warm_up
from modstream.settings import Settings
from modstream.stages.metrics import PipelineMetrics
from modstream.stream import client
from modstream.stream.banksync import BankReplica
from modstream.stream.topics import delete_topics, ensure_topics


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def publish(settings: Settings, n: int) -> None:
    codes = np.random.default_rng(1).integers(0, 2**64, size=(n, 4), dtype=np.uint64)
    raw = codes.astype(">u8").tobytes()
    entries = (
        BankEntry("shared", f"e{i}", "pdq", raw[i * 32 : i * 32 + 32].hex(), ("tcap",), "takedown")
        for i in range(n)
    )
    asyncio.run(ensure_topics(settings))
    records = ((e.key.encode(), dumps(e)) for e in entries)
    asyncio.run(client.publish(settings.kafka, settings.topic(HASHBANK_TOPIC), records))


async def load(side: str, topic: str, link: Path) -> dict[str, float]:
    warm_up()
    base = rss_mb()
    started = time.monotonic()
    bank = Bank()
    replica = BankReplica(
        bank, Settings.from_env().kafka, topic, PipelineMetrics(), snapshot_link=link,
        snapshot_interval_s=300.0, replay_in_child_above=1 if side == "child" else 0,
        loop=asyncio.get_running_loop(),
    )  # fmt: skip
    await replica.start()
    await replica.ready.wait()
    if side == "in_place":
        await replica.save_snapshot()
    seconds = time.monotonic() - started
    bank.match("pdq", "0" * 64)
    grown = rss_mb() - base
    await replica.stop()
    return {"mb": grown, "seconds": seconds, "entries": len(bank)}


def side(name: str, topic: str, link: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--side", name, "--topic", topic, "--link", str(link)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--side", choices=["in_place", "child", "restore"], help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--link", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(asyncio.run(load(args.side, args.topic, args.link))))
        return
    run = uuid.uuid4().hex[:8]
    settings = Settings.from_env(topic_prefix=f"bm{run}.", app_id=f"bm{run}")
    topic = settings.topic(HASHBANK_TOPIC)
    publish(settings, args.entries)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            in_place = side("in_place", topic, Path(tmp) / "a" / "bank-snapshot")
            child = side("child", topic, Path(tmp) / "b" / "bank-snapshot")
            restored = side("restore", topic, Path(tmp) / "b" / "bank-snapshot")
    finally:
        asyncio.run(delete_topics(settings))
    print(f"{args.entries:,} PDQ entries on a topic; the worker's RSS growth once loaded:")
    rows = [
        ("replayed in place, after its first snapshot", in_place),
        ("replayed in a child, snapshot restored", child),
        ("restored from a snapshot", restored),
    ]
    for label, found in rows:
        assert found["entries"] == args.entries, found
        print(f"  {label:45} {found['mb']:6.0f} MB  {found['seconds']:5.1f} s")
    print(f"  in place / restored: {in_place['mb'] / restored['mb']:.2f}x")
    print(f"  in a child / restored: {child['mb'] / restored['mb']:.2f}x")


if __name__ == "__main__":
    main()
