"""How fast a restarting worker gets its bank back from a snapshot, at 10M PDQ entries.

    .venv/bin/python bench/bank_restore.py [--entries 10000000] [--layout fast]

Builds a bank snapshot the way a worker writes one (entries serialized, the PDQ index as
arrays), then times ``Bank.restore`` (what the worker runs before it reports ready) and a
first batch of lookups on the restored bank. Building the snapshot takes minutes at 10M:
it is the replay that the snapshot saves a restarting worker from.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from modstream.bank.bank import SNAPSHOT_VERSION, Bank
from modstream.bank.entries import EntryStore
from modstream.contracts import BankEntry
from modstream.matching.hamming import HammingIndex, warm_up
from modstream.matching.index import MANIFEST

CHUNK = 1_000_000


def build_snapshot(folder: Path, n: int, layout: str) -> list[str]:
    """The snapshot a worker holding ``n`` PDQ entries would write. Entries go through the
    store a chunk at a time (a million entry objects at once, not ten)."""
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 2**64, size=(n, 4), dtype=np.uint64)
    store_folder = None
    for first in range(0, n, CHUNK):
        store = EntryStore.read(store_folder) if store_folder else EntryStore()
        raw = codes[first : first + CHUNK].astype(">u8").tobytes()
        for i in range(min(CHUNK, n - first)):
            signal = raw[i * 32 : i * 32 + 32].hex()
            ref = first + i
            store.add(ref, BankEntry("bulk", f"e{ref}", "pdq", signal, ("bench",), "takedown", ""))
        next_folder = folder.with_name(f"entries-{first}")
        EntryStore.write(store.view(), next_folder)
        if store_folder:
            shutil.rmtree(store_folder)
        store_folder = next_folder
    folder.mkdir()
    store_folder.rename(folder / "entries")
    index = HammingIndex(256, layout=layout)
    index.add_many(np.arange(n), codes)
    part = index.snapshot()(folder / "index-pdq")
    index.close()
    bank = {"next_ref": n, "sizes": [["bulk", "pdq", n]]}
    manifest = {"version": SNAPSHOT_VERSION, "bank": bank, "indexes": {"pdq": part}}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    step = max(1, n // 2000)
    return [codes[i].astype(">u8").tobytes().hex() for i in range(0, n, step)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000_000)
    parser.add_argument("--layout", default="fast", choices=["fast", "compact"])
    args = parser.parse_args()
    warm_up()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bank"
        started = time.perf_counter()
        queries = build_snapshot(folder, args.entries, args.layout)
        built = time.perf_counter() - started
        print(f"snapshot of {args.entries:,} entries written in {built:.0f} s")
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        print(f"snapshot size: {size / 2**30:.2f} GiB ({size / args.entries:.0f} bytes/entry)")
        bank = Bank(index_layout=args.layout)
        started = time.perf_counter()
        bank.restore(folder)
        restored = time.perf_counter() - started
        print(f"Bank.restore: {restored:.1f} s, {len(bank):,} entries")
        started = time.perf_counter()
        found = bank.match_many("pdq", queries)
        elapsed = time.perf_counter() - started
        assert all(len(hits) >= 1 for hits in found), "a banked hash did not match itself"
        print(f"first {len(queries)} lookups after restore: {elapsed * 1e3:.0f} ms, all matched")


if __name__ == "__main__":
    main()
