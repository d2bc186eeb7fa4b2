"""Exact Hamming range search over millions of hashes, updated live.

The shape is a log-structured one:

* **segments**: immutable runs of entries, each with a multi-index-hashing (MIH) table. A
  hash is cut into ``m`` slots; by the pigeonhole principle anything within distance ``r``
  of a query is within ``r // m`` (or one less) of it in at least one slot, so a search
  probes a few hundred buckets per slot and verifies what it finds with the full distance.
  Results are exact. Each segment has a deletion map: a removal is one flag, live at once.
* **delta**: the newest additions, searched by a plain scan until it fills and is frozen into
  a segment.
* **merges**: when ``merge_factor`` segments of about the same size pile up, or one holds
  mostly deleted entries, a background thread rewrites them as one. Memory therefore follows
  the live entries, however many updates pass through.

Two layouts: ``compact`` (slots of at most 20 bits: under 100 bytes per PDQ entry at 10M) and
``fast`` (slots two bits wider than log2 of the segment size, up to 24, and a copy of every
code beside its id in each slot, so a bucket is verified by one sequential read: about 5x the
memory, several times the lookups on clustered banks).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from modstream.formats.hexcodes import hex_to_codes
from modstream.matching import kernels
from modstream.matching.index import MANIFEST


@dataclass(frozen=True)
class Layout:
    """How a segment trades memory for speed."""

    widest_slot: int  # bucket tables hold 2**width offsets per slot
    extra_bits: int  # slot width = log2(entries) + extra_bits: wider, fewer candidates
    bucket_codes: bool  # a copy of each code beside its id in every slot: sequential verify


LAYOUTS = {
    "compact": Layout(widest_slot=20, extra_bits=0, bucket_codes=False),
    "fast": Layout(widest_slot=24, extra_bits=2, bucket_codes=True),
}
SNAPSHOT_VERSION = 2


@cache
def flip_masks(length: int, radius: int) -> np.ndarray:
    """Every ``length``-bit value with at most ``radius`` bits set, fewest bits first."""
    masks = [0]
    for r in range(1, radius + 1):
        for bits in itertools.combinations(range(length), r):
            masks.append(sum(1 << b for b in bits))
    return np.array(masks, dtype=np.uint64)


def slot_lengths(bits: int, entries: int, layout: str) -> list[int]:
    """Slot widths near log2(entries) (Norouzi et al.'s rule), as the layout shifts and caps."""
    shape = LAYOUTS[layout]
    width = min(shape.widest_slot, max(8, round(math.log2(max(entries, 2))) + shape.extra_bits))
    slots = math.ceil(bits / width)
    base, extra = divmod(bits, slots)
    return [base + 1] * extra + [base] * (slots - extra)


def slot_radii(slots: int, radius: int) -> list[int]:
    """Generalized pigeonhole: with ``radius = q*slots + a``, a match is within ``q`` in one of
    the first ``a+1`` slots or within ``q-1`` in one of the others (``-1``: not probed)."""
    q, a = divmod(radius, slots)
    return [q] * (a + 1) + [q - 1] * (slots - a - 1)


@dataclass
class Plan:
    """How one segment answers one radius: the probe masks per slot, or a scan."""

    radii: np.ndarray
    masks: np.ndarray
    mask_starts: np.ndarray


class Segment:
    """Immutable entries sorted by ref, with their MIH tables and a mutable deletion map."""

    def __init__(
        self,
        codes: np.ndarray,
        refs: np.ndarray,
        deleted: np.ndarray,
        lengths: np.ndarray,
        offsets: np.ndarray,
        ids: np.ndarray,
        bucket_codes: bool = False,
    ) -> None:
        self.codes, self.refs, self.deleted = codes, refs, deleted
        self.lengths = lengths
        self.starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.offsets, self.ids = offsets, ids
        self.offset_bases = np.concatenate(
            [[0], np.cumsum((1 << lengths.astype(np.int64)) + 1)[:-1]]
        ).astype(np.int64)
        self.bucket_codes = _gather_bucket_codes(codes, ids) if bucket_codes else None
        self.live = int(len(refs) - deleted.sum())
        self.first_ref, self.last_ref = int(refs[0]), int(refs[-1])
        self._plans: dict[tuple[int, bool], Plan | None] = {}

    @classmethod
    def build(cls, codes: np.ndarray, refs: np.ndarray, layout: str) -> Segment:
        order = np.argsort(refs, kind="stable")
        if not np.all(order == np.arange(len(refs))):
            codes, refs = codes[order], refs[order]
        codes = np.ascontiguousarray(codes, dtype=np.uint64)
        refs = np.ascontiguousarray(refs, dtype=np.int64)
        bits = codes.shape[1] * 64
        lengths = np.array(slot_lengths(bits, len(refs), layout), dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        offsets = np.zeros(int(((1 << lengths) + 1).sum()), dtype=np.uint32)
        ids = np.empty((len(lengths), len(refs)), dtype=np.uint32)
        bounds = np.concatenate([[0], np.cumsum((1 << lengths) + 1)])

        def one_slot(s: int) -> None:
            table = offsets[bounds[s] : bounds[s + 1]]
            kernels.build_slot(codes, int(starts[s]), int(lengths[s]), table, ids[s])

        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            list(pool.map(one_slot, range(len(lengths))))
        deleted = np.zeros(len(refs), dtype=np.uint8)
        return cls(codes, refs, deleted, lengths, offsets, ids, LAYOUTS[layout].bucket_codes)

    def find(self, refs: np.ndarray) -> np.ndarray:
        """Positions of ``refs`` that are live here, ``-1`` elsewhere."""
        pos = np.searchsorted(self.refs, refs)
        pos = np.minimum(pos, len(self.refs) - 1)
        found = (self.refs[pos] == refs) & (self.deleted[pos] == 0)
        return np.where(found, pos, -1)

    def find_one(self, ref: int) -> int:
        """The position of one live ref, or -1: the scalar path costs a microsecond."""
        if not self.first_ref <= ref <= self.last_ref:
            return -1
        pos = int(np.searchsorted(self.refs, ref))
        return pos if self.refs[pos] == ref and not self.deleted[pos] else -1

    def delete(self, positions: np.ndarray) -> None:
        positions = positions[self.deleted[positions] == 0]
        self.deleted[positions] = 1
        self.live -= len(positions)

    def search(self, queries: np.ndarray, radius: int, strategy: str) -> tuple[np.ndarray, ...]:
        plan = None if strategy == "scan" else self.plan(radius, force=strategy == "probe")
        if plan is None:
            q, pos, d = kernels.search_scan(self.codes, self.deleted, queries, radius)
        elif self.bucket_codes is not None:
            q, pos, d = kernels.search_bucket_codes(
                self.deleted, self.starts, self.lengths, self.offsets, self.offset_bases,
                self.ids, self.bucket_codes, plan.radii, plan.masks, plan.mask_starts,
                queries, radius,
            )  # fmt: skip
        else:
            q, pos, d = kernels.search_buckets(
                self.codes, self.deleted, self.starts, self.lengths, self.offsets,
                self.offset_bases, self.ids, plan.radii, plan.masks, plan.mask_starts,
                queries, radius,
            )  # fmt: skip
        return q, self.refs[pos], d

    def plan(self, radius: int, force: bool = False) -> Plan | None:
        """Probe buckets unless a plain scan is expected to be cheaper (small segments, large
        radii); ``force`` always probes."""
        if (radius, force) in self._plans:
            return self._plans[(radius, force)]
        radii = slot_radii(len(self.lengths), radius)
        balls = [
            sum(math.comb(int(length), k) for k in range(r + 1))
            for length, r in zip(self.lengths, radii, strict=True)
        ]
        n = len(self.refs)
        candidates = sum(
            b * n / (1 << int(length)) for b, length in zip(balls, self.lengths, strict=True)
        )
        plan = None
        if force or sum(balls) + 4 * candidates < n:
            masks = [
                flip_masks(int(length), r) for length, r in zip(self.lengths, radii, strict=True)
            ]
            plan = Plan(
                np.array(radii, dtype=np.int64),
                np.concatenate(masks),
                np.concatenate([[0], np.cumsum([len(m) for m in masks])]).astype(np.int64),
            )
        self._plans[(radius, force)] = plan
        return plan

    def nbytes(self) -> int:
        arrays = (self.codes, self.refs, self.deleted, self.offsets, self.ids)
        extra = 0 if self.bucket_codes is None else self.bucket_codes.nbytes
        return sum(a.nbytes for a in arrays) + extra

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "codes": self.codes,
            "refs": self.refs,
            "deleted": self.deleted,
            "lengths": self.lengths,
            "offsets": self.offsets,
            "ids": self.ids,
        }


def _gather_bucket_codes(codes: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Every slot's codes in bucket order (rebuilt on load rather than stored: it is m copies
    of ``codes``)."""
    out = np.empty((ids.shape[0], *codes.shape), dtype=np.uint64)
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(lambda s: kernels.gather_rows(codes, ids[s], out[s]), range(len(ids))))
    return out


class Delta:
    """The newest additions, in arrival order, searched by scan."""

    def __init__(self, words: int, capacity: int) -> None:
        self.codes = np.zeros((capacity, words), dtype=np.uint64)
        self.refs = np.zeros(capacity, dtype=np.int64)
        self.deleted = np.zeros(capacity, dtype=np.uint8)
        self.size = 0
        self.position: dict[int, int] = {}

    @property
    def full(self) -> bool:
        return self.size == len(self.refs)

    def add(self, ref: int, code: np.ndarray) -> None:
        self.codes[self.size] = code
        self.refs[self.size] = ref
        self.position[ref] = self.size
        self.size += 1

    def remove(self, ref: int) -> bool:
        pos = self.position.pop(ref, None)
        if pos is None:
            return False
        self.deleted[pos] = 1
        return True

    def live_entries(self) -> tuple[np.ndarray, np.ndarray]:
        keep = np.flatnonzero(self.deleted[: self.size] == 0)
        return self.codes[keep], self.refs[keep]


class HammingIndex:
    """Exact range search by Hamming distance; add, remove and search at any time.

    Searches may run on other threads while the owner adds and removes: they see the state
    as of their start, and a removal is seen by every search that starts after it returns.
    """

    def __init__(
        self,
        bits: int,
        *,
        layout: str = "compact",
        delta_capacity: int = 4096,
        merge_factor: int = 4,
        background_merges: bool = True,
        threads: int | None = None,
        strategy: str = "auto",
    ) -> None:
        if bits % 64:
            raise ValueError("bits must be a multiple of 64")
        self.bits = bits
        self.words = bits // 64
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {sorted(LAYOUTS)}")
        self.layout = layout
        if strategy not in ("auto", "probe", "scan"):
            raise ValueError("strategy must be auto, probe or scan")
        self.strategy = strategy  # probe buckets, scan segments, or choose by expected cost
        self.delta_capacity = delta_capacity
        self.merge_factor = merge_factor
        self.background_merges = background_merges
        self.threads = threads or os.cpu_count() or 1
        self._segments: list[Segment] = []
        self._delta = Delta(self.words, delta_capacity)
        self._live = 0
        self._max_ref = -1  # refs above it are new: no need to look for an old copy
        self._lock = threading.RLock()
        self._merging: Future | None = None
        self._merger = ThreadPoolExecutor(1, thread_name_prefix="index-merge")
        self._searchers = ThreadPoolExecutor(self.threads, thread_name_prefix="index-search")

    # -- updates ---------------------------------------------------------------------------

    def add(self, ref: int, signal: str) -> None:
        self.add_many([ref], hex_to_codes([signal], self.bits))

    def add_many(self, refs: Sequence[int] | np.ndarray, codes: np.ndarray) -> None:
        """Add entries (an existing ref is replaced); ``codes`` as from ``hex_to_codes``."""
        refs = np.asarray(refs, dtype=np.int64)
        if not len(refs):
            return
        with self._lock:
            if int(refs.min()) <= self._max_ref:  # some may be replacements
                self._remove_locked(refs.tolist())
            self._max_ref = max(self._max_ref, int(refs.max()))
            if len(refs) >= self.delta_capacity and len(np.unique(refs)) == len(refs):
                # A bulk load (a snapshot, a bank import): one segment, no trip via the delta.
                self._segments.append(Segment.build(codes, refs, self.layout))
                self._live += len(refs)
                self._schedule_merge()
                return
            for ref, code in zip(refs.tolist(), codes, strict=True):
                if ref in self._delta.position:  # the same ref twice in one batch
                    self._delta.remove(ref)
                    self._live -= 1
                self._delta.add(ref, code)
                self._live += 1
                if self._delta.full:
                    self._freeze_delta()

    def remove(self, ref: int) -> None:
        self.remove_many([ref])

    def remove_many(self, refs: Iterable[int]) -> None:
        with self._lock:
            self._remove_locked(list(refs))

    def _remove_locked(self, refs: list[int]) -> None:
        pending = [ref for ref in refs if not self._delta.remove(ref)]
        self._live -= len(refs) - len(pending)
        if not pending or not self._segments:
            return
        for segment in self._segments:
            if len(pending) == 1:  # the common case: one tombstone from the bank topic
                pos = segment.find_one(pending[0])
                positions = np.array([pos] if pos >= 0 else [], dtype=np.int64)
            else:
                found = segment.find(np.array(pending, dtype=np.int64))
                positions = found[found >= 0]
            if not len(positions):
                continue
            before = segment.live
            segment.delete(positions)
            self._live -= before - segment.live
            if segment.live * 2 < len(segment.refs):
                self._schedule_merge()  # mostly deleted: rewrite it
            if len(positions) == len(pending):
                return
            gone = set(segment.refs[positions].tolist())
            pending = [ref for ref in pending if ref not in gone]

    def _freeze_delta(self) -> None:
        codes, refs = self._delta.live_entries()
        self._delta = Delta(self.words, self.delta_capacity)
        if len(refs):
            self._segments.append(Segment.build(codes, refs, self.layout))
        self._schedule_merge()

    # -- merges ----------------------------------------------------------------------------

    def _merge_candidates(self) -> list[Segment]:
        """Segments to rewrite as one: a full tier of similar sizes, or a mostly deleted one."""
        for segment in self._segments:
            if segment.live * 2 < len(segment.refs):
                return [segment]
        tiers: dict[int, list[Segment]] = {}
        for segment in self._segments:
            size = max(segment.live, 1) / self.delta_capacity
            tier = int(math.log(max(size, 1), self.merge_factor))
            tiers.setdefault(tier, []).append(segment)
        for tier in sorted(tiers):
            if len(tiers[tier]) >= self.merge_factor:
                return tiers[tier]
        return []

    def _schedule_merge(self) -> None:
        if self._merging is not None and not self._merging.done():
            return
        inputs = self._merge_candidates()
        if not inputs:
            return
        seen = [s.deleted.copy() for s in inputs]
        if self.background_merges:
            self._merging = self._merger.submit(self._merge, inputs, seen)
        else:
            self._merge(inputs, seen)

    def _merge(self, inputs: list[Segment], seen: list[np.ndarray]) -> None:
        keep = [np.flatnonzero(mask == 0) for mask in seen]
        codes = np.concatenate([s.codes[k] for s, k in zip(inputs, keep, strict=True)])
        refs = np.concatenate([s.refs[k] for s, k in zip(inputs, keep, strict=True)])
        merged = Segment.build(codes, refs, self.layout) if len(refs) else None
        with self._lock:
            if merged is not None:
                # Removals that arrived while the merge ran: carry them over.
                for segment, mask in zip(inputs, seen, strict=True):
                    late = np.flatnonzero((segment.deleted != 0) & (mask == 0))
                    if len(late):
                        merged.delete(merged.find(segment.refs[late]))
            ids = {id(s) for s in inputs}
            rest = [s for s in self._segments if id(s) not in ids]
            self._segments = rest + ([merged] if merged is not None else [])
            self._merging = None
            self._schedule_merge()

    def wait_for_merges(self) -> None:
        """Block until no merge is running (tests, benchmarks, snapshots)."""
        while True:
            with self._lock:
                running = self._merging
            if running is None:
                return
            running.result()

    def compact(self) -> None:
        """Merge everything, delta included, into one segment (before a snapshot, say)."""
        self.wait_for_merges()
        with self._lock:
            only = self._segments[0] if len(self._segments) == 1 else None
            if only is not None and not self._delta.size and only.live == len(only.refs):
                return  # already one segment without deletions
            parts = [s.codes[s.deleted == 0] for s in self._segments]
            refs = [s.refs[s.deleted == 0] for s in self._segments]
            delta_codes, delta_refs = self._delta.live_entries()
            codes = np.concatenate([*parts, delta_codes]) if parts else delta_codes
            all_refs = np.concatenate([*refs, delta_refs]) if refs else delta_refs
            self._delta = Delta(self.words, self.delta_capacity)
            self._segments = [Segment.build(codes, all_refs, self.layout)] if len(all_refs) else []

    # -- search ----------------------------------------------------------------------------

    def query(self, signal: str, max_distance: int) -> list[tuple[int, int]]:
        return self.query_many([signal], max_distance)[0]

    def query_many(self, signals: Sequence[str], max_distance: int) -> list[list[tuple[int, int]]]:
        """``[(ref, distance), ...]`` per signal, nearest first, ties by ref."""
        results: list[list[tuple[int, int]]] = [[] for _ in signals]
        if not signals:
            return results
        q, refs, d = self.search(hex_to_codes(signals, self.bits), max_distance)
        for qi, ref, dist in zip(q.tolist(), refs.tolist(), d.tolist(), strict=True):
            results[qi].append((ref, dist))
        return results

    def search(self, queries: np.ndarray, radius: int) -> tuple[np.ndarray, ...]:
        """Array form: ``(query_index, ref, distance)`` of every hit, by query, distance, ref."""
        queries = np.ascontiguousarray(queries, dtype=np.uint64)
        with self._lock:
            segments = list(self._segments)
            delta = self._delta
            size = delta.size
        chunks = np.array_split(np.arange(len(queries)), min(self.threads, len(queries) // 32 or 1))

        def run(rows: np.ndarray) -> list[tuple[np.ndarray, ...]]:
            part = queries[rows[0] : rows[-1] + 1]
            found = [s.search(part, radius, self.strategy) for s in segments]
            q, pos, d = kernels.search_scan(delta.codes[:size], delta.deleted[:size], part, radius)
            found.append((q, delta.refs[pos], d))
            return [(q + rows[0], r, d) for q, r, d in found]

        if len(chunks) == 1:
            parts = run(chunks[0])
        else:
            parts = [p for ps in self._searchers.map(run, chunks) for p in ps]
        q = np.concatenate([p[0] for p in parts])
        refs = np.concatenate([p[1] for p in parts])
        d = np.concatenate([p[2] for p in parts])
        order = np.lexsort((refs, d, q))
        return q[order], refs[order], d[order]

    # -- size and snapshots ----------------------------------------------------------------

    def __len__(self) -> int:
        return self._live

    def nbytes(self) -> int:
        """Bytes held by the index's arrays (segments and delta)."""
        with self._lock:
            delta = self._delta
            arrays = delta.codes.nbytes + delta.refs.nbytes + delta.deleted.nbytes
            return arrays + sum(s.nbytes() for s in self._segments)

    def snapshot(self) -> Callable[[Path], dict[str, Any]]:
        """Capture the index now (cheap: segments are immutable, their deletion maps and the
        delta are copied); the returned function writes it to a new folder (on a thread) and
        returns its description, for the manifest."""
        with self._lock:
            segments = list(self._segments)
            deleted = [s.deleted.copy() for s in segments]
            delta_codes, delta_refs = self._delta.live_entries()
        meta = {"kind": "hamming", "version": SNAPSHOT_VERSION, "bits": self.bits,
                "segments": len(segments)}  # fmt: skip

        def write(folder: Path) -> dict[str, Any]:
            folder.mkdir(parents=True)
            # One .npy file per array: loading is a plain read into place.
            for i, (segment, mask) in enumerate(zip(segments, deleted, strict=True)):
                _save_arrays(folder / f"segment-{i}", {**segment.arrays(), "deleted": mask})
            _save_arrays(folder / "delta", {"codes": delta_codes, "refs": delta_refs})
            return meta

        return write

    def save(self, path: Path) -> None:
        """Write a snapshot a restarting worker loads in seconds (written whole, then renamed)."""
        path = Path(path)
        staging = path.with_name(path.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        meta = self.snapshot()(staging)
        (staging / MANIFEST).write_text(json.dumps(meta))
        shutil.rmtree(path, ignore_errors=True)
        staging.rename(path)

    @classmethod
    def load(cls, path: Path, meta: dict[str, Any] | None = None, **options) -> HammingIndex:
        """An index written by ``snapshot()`` (described by ``meta``, what it returned) or by
        ``save`` (described by the manifest beside it)."""
        path = Path(path)
        if meta is None:
            meta = json.loads((path / MANIFEST).read_text())
        if meta["version"] != SNAPSHOT_VERSION:
            raise ValueError(f"snapshot version {meta['version']} is not {SNAPSHOT_VERSION}")
        index = cls(meta["bits"], **options)
        for i in range(meta["segments"]):
            arrays = _load_arrays(path / f"segment-{i}")
            segment = Segment(**arrays, bucket_codes=LAYOUTS[index.layout].bucket_codes)
            index._segments.append(segment)
            index._live += segment.live
            index._max_ref = max(index._max_ref, segment.last_ref)
        delta = _load_arrays(path / "delta")
        if len(delta["refs"]):
            index.add_many(delta["refs"], delta["codes"])
        return index

    def close(self) -> None:
        self.wait_for_merges()
        self._merger.shutdown()
        self._searchers.shutdown()


def _save_arrays(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    folder.mkdir()
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)


def _load_arrays(folder: Path) -> dict[str, np.ndarray]:
    return {file.stem: np.load(file) for file in sorted(folder.glob("*.npy"))}


def warm_up() -> None:
    """Compile the kernels, or load them from numba's cache, before the first event needs
    them: a first compile takes seconds."""
    codes = np.arange(64, dtype=np.uint64).reshape(16, 4)
    for strategy in ("probe", "scan"):
        index = HammingIndex(256, delta_capacity=8, background_merges=False, strategy=strategy)
        index.add_many(np.arange(16), codes)
        index.search(codes, 31)
        index.close()
