"""Match indexes: the one small interface the matcher uses, and its first implementations.

``HammingIndex`` is an exact brute-force scan over packed 64-bit words; it is updated in
place (slots are reused after removal, so memory follows the live entries) and is fast
enough for banks of ~10^5 hashes. A faster index for 10^7 hashes plugs in behind
``MatchIndex`` without touching the matcher.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class MatchIndex(Protocol):
    """Finds bank references whose signal is within ``max_distance`` of a query."""

    def add(self, ref: int, signal: str) -> None: ...

    def remove(self, ref: int) -> None: ...

    def query(self, signal: str, max_distance: int) -> list[tuple[int, int]]:
        """``[(ref, distance), ...]`` of every entry within ``max_distance``, nearest first."""
        ...

    def __len__(self) -> int: ...


class ExactIndex:
    """Equality lookups: cryptographic hashes and normalized text."""

    def __init__(self) -> None:
        self._refs_by_signal: dict[str, set[int]] = {}
        self._signal_by_ref: dict[int, str] = {}

    def add(self, ref: int, signal: str) -> None:
        self.remove(ref)
        self._refs_by_signal.setdefault(signal, set()).add(ref)
        self._signal_by_ref[ref] = signal

    def remove(self, ref: int) -> None:
        signal = self._signal_by_ref.pop(ref, None)
        if signal is None:
            return
        refs = self._refs_by_signal[signal]
        refs.discard(ref)
        if not refs:
            del self._refs_by_signal[signal]

    def query(self, signal: str, max_distance: int) -> list[tuple[int, int]]:
        return [(ref, 0) for ref in sorted(self._refs_by_signal.get(signal, ()))]

    def __len__(self) -> int:
        return len(self._signal_by_ref)


def hex_to_words(signal: str, words: int) -> np.ndarray:
    """A hex bit string as ``words`` big-endian uint64 values."""
    return np.frombuffer(bytes.fromhex(signal), dtype=">u8").astype(np.uint64, copy=False)[:words]


class HammingIndex:
    """Exact Hamming range search by a vectorized scan over live slots."""

    def __init__(self, bits: int, initial_capacity: int = 1024) -> None:
        if bits % 64:
            raise ValueError("bits must be a multiple of 64")
        self.words = bits // 64
        self._codes = np.zeros((initial_capacity, self.words), dtype=np.uint64)
        self._refs = np.full(initial_capacity, -1, dtype=np.int64)
        self._slot_by_ref: dict[int, int] = {}
        self._free: list[int] = []
        self._high_water = 0

    def add(self, ref: int, signal: str) -> None:
        slot = self._slot_by_ref.get(ref)
        if slot is None:
            slot = self._free.pop() if self._free else self._next_slot()
            self._slot_by_ref[ref] = slot
        self._codes[slot] = hex_to_words(signal, self.words)
        self._refs[slot] = ref

    def remove(self, ref: int) -> None:
        slot = self._slot_by_ref.pop(ref, None)
        if slot is not None:
            self._refs[slot] = -1
            self._free.append(slot)

    def query(self, signal: str, max_distance: int) -> list[tuple[int, int]]:
        return self.query_many([signal], max_distance)[0]

    def query_many(self, signals: Sequence[str], max_distance: int) -> list[list[tuple[int, int]]]:
        """Batch form of ``query``: one result list per signal, in order."""
        n = self._high_water
        codes, refs = self._codes[:n], self._refs[:n]
        results = []
        for signal in signals:
            if not self._slot_by_ref:
                results.append([])
                continue
            distances = np.bitwise_count(codes ^ hex_to_words(signal, self.words)).sum(axis=1)
            hits = np.flatnonzero((distances <= max_distance) & (refs >= 0))
            order = hits[np.argsort(distances[hits], kind="stable")]
            results.append([(int(refs[i]), int(distances[i])) for i in order])
        return results

    def __len__(self) -> int:
        return len(self._slot_by_ref)

    def _next_slot(self) -> int:
        if self._high_water == len(self._refs):
            grow = len(self._refs)
            self._codes = np.concatenate([self._codes, np.zeros_like(self._codes[:grow])])
            self._refs = np.concatenate([self._refs, np.full(grow, -1, dtype=np.int64)])
        self._high_water += 1
        return self._high_water - 1
