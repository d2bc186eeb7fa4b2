"""modstream's Hamming index against FAISS and python-threatexchange, side by side, one run.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/match_index.py                      # 100k, 1M, 10M; both datasets
    .venv/bin/python bench/match_index.py --sizes 100000 --datasets uniform

For each dataset (uniform random PDQ hashes; clustered: near-duplicate groups plus a few
heavily repeated 64-bit substrings, as flat or low-quality images give) and each size, every
index gets the same hashes and the same queries (half near copies of bank entries, half
unrelated), radius 31. Reported: build time, bytes per entry, batched lookups/s, single-query
p50/p99, 100k live additions and removals, snapshot save/load (modstream), and whether the
results equal brute force (``faiss.IndexBinaryFlat``, which is an exhaustive scan).
Prints a Markdown table; ``--json`` also writes the raw numbers.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import orjson

from modstream.matching.hamming import HammingIndex, warm_up

RADIUS = 31


@dataclass
class Row:
    dataset: str
    size: int
    index: str
    build_s: float = 0.0
    bytes_per_entry: float = 0.0
    batched_per_s: float = 0.0
    single_p50_ms: float = 0.0
    single_p99_ms: float = 0.0
    updates_100k_s: str = ""
    snapshot: str = ""
    exact: str = ""
    notes: list[str] = field(default_factory=list)


# -- data --------------------------------------------------------------------------------------


def flip_random_bits(codes: np.ndarray, max_flips: int, rng: np.random.Generator) -> np.ndarray:
    """Each row with up to ``max_flips`` random bits flipped (0..max_flips apart)."""
    out = codes.copy()
    flips = rng.integers(0, max_flips + 1, size=len(codes))
    for k in range(max_flips):
        rows = np.flatnonzero(flips > k)
        bits = rng.integers(0, 256, size=len(rows))
        out[rows, bits // 64] ^= np.uint64(1) << (63 - bits % 64).astype(np.uint64)
    return out


def dataset(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if name == "uniform":
        return rng.integers(0, 2**64, size=(n, 4), dtype=np.uint64)
    # clustered: 50% unrelated, 40% groups of 10 near-duplicates of a seed (0..30 bits away),
    # 10% sharing one of three 64-bit words (a slot bucket with ~n/30 entries)
    unrelated = rng.integers(0, 2**64, size=(n // 2, 4), dtype=np.uint64)
    seeds = rng.integers(0, 2**64, size=(n * 4 // 100, 4), dtype=np.uint64)
    groups = flip_random_bits(np.repeat(seeds, 10, axis=0), 30, rng)
    common = rng.integers(0, 2**64, size=(n - len(unrelated) - len(groups), 4), dtype=np.uint64)
    words = np.array([0, 2**64 - 1, 0x5555555555555555], dtype=np.uint64)
    common[:, 0] = words[rng.integers(0, 3, size=len(common))]
    codes = np.concatenate([unrelated, groups, common])
    return codes[rng.permutation(n)]


def queries_for(codes: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    near = flip_random_bits(codes[rng.integers(0, len(codes), size=count // 2)], 30, rng)
    unrelated = rng.integers(0, 2**64, size=(count - len(near), 4), dtype=np.uint64)
    both = np.concatenate([near, unrelated])
    return both[rng.permutation(len(both))]


def as_bytes(codes: np.ndarray) -> np.ndarray:
    """The same bits as FAISS wants them (distances do not depend on the byte order)."""
    return np.ascontiguousarray(codes).view(np.uint8).reshape(len(codes), 32)


def to_hex(codes: np.ndarray) -> list[str]:
    raw = codes.astype(">u8").tobytes()
    return [raw[i * 32 : i * 32 + 32].hex() for i in range(len(codes))]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- timing ------------------------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def single_latencies(search_one: Callable[[int], object], count: int) -> tuple[float, float]:
    samples = []
    for i in range(count):
        started = time.perf_counter()
        search_one(i)
        samples.append(time.perf_counter() - started)
    samples.sort()
    return 1e3 * statistics.median(samples), 1e3 * samples[int(0.99 * (len(samples) - 1))]


def batched_rate(search_all: Callable[[np.ndarray], object], queries: np.ndarray) -> float:
    """Best of three runs (the machine is shared): queries per second for one batched call."""
    best = min(timed(lambda: search_all(queries))[0] for _ in range(3))
    return len(queries) / best


def hit_set(q: np.ndarray, ids: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(q.tolist(), ids.tolist(), strict=True))


@dataclass
class Reference:
    """Brute-force hits (query number, entry id) of the first ``queries`` queries."""

    queries: int
    hits: set[tuple[int, int]]


# -- the contenders ----------------------------------------------------------------------------


def extra_codes() -> np.ndarray:
    """The 100,000 hashes every index adds (and removes, where it can) live."""
    return np.random.default_rng(5).integers(0, 2**64, size=(100_000, 4), dtype=np.uint64)


def faiss_hits(index, queries: np.ndarray) -> set[tuple[int, int]]:
    """(query number, entry id) of a FAISS binary range search at ``RADIUS``."""
    # FAISS binary range search keeps distances strictly below the radius.
    lims, _, ids = index.range_search(queries, RADIUS + 1)
    return hit_set(np.repeat(np.arange(len(lims) - 1), np.diff(lims).astype(np.int64)), ids)


def bench_modstream(layout: str, row: Row, codes, queries, reference, budget) -> None:
    n = len(codes)
    row.build_s, index = timed(lambda: _modstream(codes, layout))
    row.notes.append(f"arrays {index.nbytes() / n:.0f} B/entry")
    row.batched_per_s = batched_rate(lambda qs: index.search(qs, RADIUS), queries)
    singles = min(len(queries), budget)
    row.single_p50_ms, row.single_p99_ms = single_latencies(
        lambda i: index.search(queries[i : i + 1], RADIUS), singles
    )
    q, r, _ = index.search(queries[: reference.queries], RADIUS)
    row.exact = "yes" if hit_set(q, r) == reference.hits else "NO"
    # live updates: 100k added one at a time (the bank topic's shape), then removed
    extra_hex = to_hex(extra_codes())
    added, _ = timed(lambda: [index.add(n + i, h) for i, h in enumerate(extra_hex)])
    removed, _ = timed(lambda: [index.remove(n + i) for i in range(100_000)])
    index.wait_for_merges()
    row.updates_100k_s = f"add {added:.2f} / remove {removed:.2f}"
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        saved, _ = timed(lambda: index.save(Path(tmp) / "snap"))
        index.close()
        gc.collect()
        loaded_s, loaded = timed(lambda: HammingIndex.load(Path(tmp) / "snap", layout=layout))
        q2, r2, _ = loaded.search(queries[: reference.queries], RADIUS)
        same = hit_set(q2, r2) == reference.hits
        row.snapshot = f"save {saved:.1f} s, load {loaded_s:.1f} s" + ("" if same else " (DIFFERS)")
        loaded.close()


def bench_faiss_flat(row: Row, codes, queries, budget):
    import faiss

    row.build_s, index = timed(lambda: _faiss_flat(codes))
    qb = as_bytes(queries)
    rate_queries = qb[: max(8, budget // 4)]
    row.batched_per_s = batched_rate(lambda qs: index.range_search(qs, RADIUS + 1), rate_queries)
    row.single_p50_ms, row.single_p99_ms = single_latencies(
        lambda i: index.range_search(qb[i : i + 1], RADIUS + 1), min(budget // 8, len(qb))
    )
    checked = min(budget // 4, len(qb))
    reference = Reference(checked, faiss_hits(index, qb[:checked]))
    row.exact = "reference"
    ids_extra = np.arange(len(codes), len(codes) + 100_000)
    added, _ = timed(lambda: index.add(as_bytes(extra_codes())))
    removed, _ = timed(lambda: index.remove_ids(faiss.IDSelectorBatch(ids_extra)))
    row.updates_100k_s = f"add {added:.2f} / remove {removed:.2f} (batch)"
    return reference


def faiss_multihash(codes: np.ndarray):
    """What HMA runs: ``IndexBinaryMultiHash(256, nhash=16, b=16)``, ``nflip = 31 // 16``."""
    import faiss

    index = faiss.IndexBinaryMultiHash(256, 16, 16)
    index.nflip = RADIUS // 16
    index.add(as_bytes(codes))
    return index


def bench_faiss_multihash(row: Row, codes, queries, reference, budget):
    row.build_s, index = timed(lambda: faiss_multihash(codes))
    qb = as_bytes(queries)
    row.batched_per_s = batched_rate(lambda qs: index.range_search(qs, RADIUS + 1), qb[:budget])
    row.single_p50_ms, row.single_p99_ms = single_latencies(
        lambda i: index.range_search(qb[i : i + 1], RADIUS + 1), min(budget, len(qb))
    )
    row.exact = "yes" if faiss_hits(index, qb[: reference.queries]) == reference.hits else "NO"
    # No removal in IndexBinaryMultiHash: HMA rebuilds the index on bank changes.
    both = np.concatenate([codes, extra_codes()])
    rebuild, _ = timed(lambda: faiss_multihash(both))
    row.updates_100k_s = f"no removal; rebuild {rebuild:.2f}"


def bench_threatexchange(row: Row, codes, queries, reference, budget):
    hexes = to_hex(codes)
    row.build_s, index = timed(lambda: _threatexchange(hexes))
    query_hex = to_hex(queries)
    inner = index.index

    def batched(qs: np.ndarray) -> object:
        return inner.search_with_distance_in_result(query_hex[: len(qs)], RADIUS)

    row.batched_per_s = batched_rate(batched, queries[:budget])
    row.single_p50_ms, row.single_p99_ms = single_latencies(
        lambda i: index.query(query_hex[i]), min(budget, len(query_hex))
    )
    found = inner.search_with_distance_in_result(query_hex[: reference.queries], RADIUS)
    pairs = {
        (qi, int(hit[0])) for qi, h in enumerate(query_hex[: reference.queries]) for hit in found[h]
    }
    row.exact = "yes" if pairs == reference.hits else "NO"
    extra = to_hex(extra_codes())
    added, _ = timed(lambda: index.add_all((h, len(hexes) + i) for i, h in enumerate(extra)))
    row.updates_100k_s = f"add {added:.2f}; no removal"


def _faiss_flat(codes: np.ndarray) -> object:
    import faiss

    index = faiss.IndexBinaryFlat(256)
    index.add(as_bytes(codes))
    return index


def _modstream(codes: np.ndarray, layout: str) -> HammingIndex:
    index = HammingIndex(256, layout=layout)
    index.add_many(np.arange(len(codes)), codes)
    index.compact()
    return index


def _threatexchange(hexes: list[str]):
    from threatexchange.signal_type.pdq.pdq_index import PDQIndex

    return PDQIndex([(h, i) for i, h in enumerate(hexes)])


BUILDERS: dict[str, Callable[[np.ndarray], object]] = {
    "faiss IndexBinaryFlat (brute force)": _faiss_flat,
    "modstream fast": lambda codes: _modstream(codes, "fast"),
    "modstream compact": lambda codes: _modstream(codes, "compact"),
    "faiss IndexBinaryMultiHash (HMA)": faiss_multihash,
    "threatexchange PDQIndex": lambda codes: _threatexchange(to_hex(codes)),
}


def resident_bytes_per_entry(name: str, dataset_name: str, size: int) -> float:
    """Memory an index holds, as RSS growth while building it in a fresh process: the only
    measure that is fair to C++ hash maps and Python objects alike."""
    out = subprocess.run(
        [sys.executable, __file__, "--rss-of", name, "--datasets", dataset_name,
         "--sizes", str(size)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def rss_child(name: str, dataset_name: str, size: int) -> None:
    import ctypes

    import faiss  # noqa: F401 - loaded before the baseline, like the kernels below

    codes = dataset(dataset_name, size, np.random.default_rng(size))
    BUILDERS[name](codes[:1000])  # load kernels and libraries outside the measurement
    trim = ctypes.CDLL("libc.so.6").malloc_trim
    gc.collect()
    trim(0)
    before = rss_bytes()
    index = BUILDERS[name](codes)
    gc.collect()
    trim(0)  # what the index holds, not what building it freed
    print((rss_bytes() - before) / size)
    del index


# -- driver ------------------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--datasets", default="uniform,clustered")
    parser.add_argument("--queries", type=int, default=4000, help="queries per batched run")
    parser.add_argument("--budget", type=int, default=400, help="single queries timed")
    parser.add_argument("--skip", default="", help="comma list: faiss-flat,faiss-mih,te")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--rss-of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_of:
        rss_child(args.rss_of, args.datasets, int(args.sizes))
        return
    skip = set(filter(None, args.skip.split(",")))
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    warm_up()
    print(f"Machine: {machine()}; faiss {faiss.__version__}; radius {RADIUS}", file=sys.stderr)
    rows: list[Row] = []
    for name in args.datasets.split(","):
        for size in map(int, args.sizes.split(",")):
            rng = np.random.default_rng(size)
            codes = dataset(name, size, rng)
            queries = queries_for(codes, args.queries, rng)
            print(f"== {name} {size:,}", file=sys.stderr)
            flat = Row(name, size, "faiss IndexBinaryFlat (brute force)")
            reference = bench_faiss_flat(flat, codes, queries, args.budget)
            if "faiss-flat" not in skip:
                rows.append(flat)
            for layout in ("fast", "compact"):
                row = Row(name, size, f"modstream {layout}")
                bench_modstream(layout, row, codes, queries, reference, args.budget)
                rows.append(row)
                print(row, file=sys.stderr)
            if "faiss-mih" not in skip:
                row = Row(name, size, "faiss IndexBinaryMultiHash (HMA)")
                bench_faiss_multihash(row, codes, queries, reference, args.budget)
                rows.append(row)
                print(row, file=sys.stderr)
            if "te" not in skip:
                row = Row(name, size, "threatexchange PDQIndex")
                bench_threatexchange(row, codes, queries, reference, args.budget)
                rows.append(row)
                print(row, file=sys.stderr)
            for row in rows:
                if (row.dataset, row.size) == (name, size):
                    row.bytes_per_entry = resident_bytes_per_entry(row.index, name, size)
            gc.collect()
    print(
        "| dataset | entries | index | build s | resident bytes/entry | batched lookups/s "
        "| single p50 / p99 ms | 100k live add / remove s | snapshot | = brute force | notes |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.dataset} | {r.size:,} | {r.index} | {r.build_s:.1f} | {r.bytes_per_entry:.0f} "
            f"| {r.batched_per_s:,.0f} | {r.single_p50_ms:.2f} / {r.single_p99_ms:.2f} "
            f"| {r.updates_100k_s} | {r.snapshot or '-'} | {r.exact} | {'; '.join(r.notes)} |"
        )
    if args.json:
        args.json.write_bytes(orjson.dumps([asdict(r) for r in rows], option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
