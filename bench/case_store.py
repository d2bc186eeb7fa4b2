"""Memory of the review-case store with a million cases (issue 24): by hand.

The store keeps cases in sqlite on disk (``stream.case_store.CaseTable``); the one before
kept every case of its partitions in a dict for the topic's 90 days. This writes ``cases``
cases of ``bytes`` bytes each into one or the other, in batches as the store's reader
writes them, then looks up random ones, and prints the process's resident memory (RSS) at
each step. Each mode runs in a process of its own, so one's memory does not hide the other's.

Usage: ``python bench/case_store.py [cases] [bytes]`` (1,000,000 and 2,000 by default).
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from modstream.stream.case_store import MAX_RECORDS_PER_READ, CaseTable

PARTITIONS = 8


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def case(n: int, size: int) -> tuple[int, str, bytes]:
    body = (b'{"decision": %d, ' % n).ljust(size, b"x")
    return n % PARTITIONS, f"d-{n:012d}", body


def run(mode: str, cases: int, size: int) -> None:
    started, before = time.perf_counter(), rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        memory: dict[int, dict[str, bytes]] = {}
        table = CaseTable(Path(tmp) / "cases.sqlite") if mode == "sqlite" else None
        for first in range(0, cases, MAX_RECORDS_PER_READ):
            rows = [case(n, size) for n in range(first, min(cases, first + MAX_RECORDS_PER_READ))]
            if table is not None:
                table.apply(rows)
            else:
                for partition, key, value in rows:
                    memory.setdefault(partition, {})[key] = value
        written = time.perf_counter() - started
        loaded = rss_mb()
        lookups, found = 20_000, 0
        started = time.perf_counter()
        for n in random.sample(range(cases), lookups):
            partition, key, _ = case(n, 0)
            value = table.get(partition, key) if table else memory[partition].get(key)
            found += value is not None
        looked_up = (time.perf_counter() - started) / lookups * 1e6
        disk = sum(f.stat().st_size for f in Path(tmp).iterdir()) / 2**20
        print(
            f"{mode:>6}: {cases:,} cases of {size:,} B: RSS {before:.0f} -> {loaded:.0f} MB "
            f"after writing ({written:.0f} s), {rss_mb():.0f} MB after {lookups:,} random "
            f"lookups ({looked_up:.0f} us each, {found:,} found); {disk:,.0f} MB on disk",
            flush=True,
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("sqlite", "memory"):
        run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
    else:
        count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
        size = int(sys.argv[2]) if len(sys.argv) > 2 else 2_000
        for each in ("sqlite", "memory"):
            subprocess.run([sys.executable, __file__, each, str(count), str(size)], check=True)
