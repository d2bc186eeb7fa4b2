"""What a bank costs in memory when replayed from the topic, against restored from a snapshot.

    .venv/bin/python bench/bank_memory.py [--entries 200000]

Each side runs in a fresh process and reports its RSS growth: the replay applies every entry
the way the replica does (parsed from its record bytes), then saves a snapshot the way the
replica does (write, adopt the written entries, return freed pages); the restore loads that
snapshot. Both compile their search kernels first, so neither side counts the compiler.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from modstream.bank.bank import Bank
from modstream.contracts import BankEntry, dumps
from modstream.matching.hamming import warm_up
from modstream.stream.banksync import return_free_memory


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def replay(folder: Path, n: int) -> dict[str, float]:
    warm_up()
    base = rss_mb()
    bank = Bank()
    codes = np.random.default_rng(1).integers(0, 2**64, size=(n, 4), dtype=np.uint64)
    raw = codes.astype(">u8").tobytes()
    for i in range(n):
        signal = raw[i * 32 : i * 32 + 32].hex()
        record = dumps(BankEntry("shared", f"e{i}", "pdq", signal, ("tcap", "image"), "takedown"))
        entry = BankEntry.parse(record)
        bank.apply(entry.key, entry)
    replayed = rss_mb() - base
    write = bank.snapshot()
    write(folder)
    del write
    bank.adopt(folder)
    return_free_memory()
    bank.match("pdq", "0" * 64)
    return {"replayed": replayed, "after_first_snapshot": rss_mb() - base}


def restore(folder: Path) -> dict[str, float]:
    warm_up()
    base = rss_mb()
    bank = Bank()
    bank.restore(folder)
    bank.match("pdq", "0" * 64)
    return {"restored": rss_mb() - base}


def child(side: str, folder: Path, n: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--side", side, "--folder", str(folder), "--entries", str(n)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--side", choices=["replay", "restore"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "replay":
        print(json.dumps(replay(args.folder, args.entries)))
        return
    if args.side == "restore":
        print(json.dumps(restore(args.folder)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "snapshot"
        replayed = child("replay", folder, args.entries)
        restored = child("restore", folder, args.entries)["restored"]
    print(f"{args.entries:,} PDQ entries, RSS growth of a fresh process:")
    print(f"  replayed from records        {replayed['replayed']:7.0f} MB")
    print(f"  ... after its first snapshot {replayed['after_first_snapshot']:7.0f} MB")
    print(f"  restored from the snapshot   {restored:7.0f} MB")
    ratio = replayed["after_first_snapshot"] / restored
    print(f"  replayed after snapshot / restored: {ratio:.2f}x")


if __name__ == "__main__":
    main()
