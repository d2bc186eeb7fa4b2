"""Match indexes: the one small interface the matcher uses, and the equality index.

Hamming-distance types (PDQ, pHash) use ``modstream.matching.hamming.HammingIndex``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, Self


class MatchIndex(Protocol):
    """Finds bank references whose signal is within ``max_distance`` of a query."""

    def add(self, ref: int, signal: str) -> None: ...

    def remove(self, ref: int) -> None: ...

    def query(self, signal: str, max_distance: int) -> list[tuple[int, int]]:
        """``[(ref, distance), ...]`` of every entry within ``max_distance``, nearest first."""
        ...

    def query_many(self, signals: Sequence[str], max_distance: int) -> list[list[tuple[int, int]]]:
        """``query`` for a batch of signals at once, in order."""
        ...

    def __len__(self) -> int: ...

    def snapshot(self) -> Callable[[Path], dict[str, Any]]:
        """Capture the index now (cheap); the returned function writes it to a new folder
        and returns what describes it (its part of the snapshot's one manifest)."""
        ...


#: Manifest of a snapshot written by a ``snapshot()`` writer on its own (``save``), not as a
#: part of a bank snapshot, whose one manifest describes every part.
MANIFEST = "manifest.json"


def signals_snapshot(kind: str, pairs: list[tuple[int, str]]) -> Callable[[Path], dict[str, Any]]:
    """The snapshot writer of an index that is rebuilt from its ``(ref, signal)`` pairs."""

    def write(folder: Path) -> dict[str, Any]:
        folder.mkdir(parents=True)
        (folder / "signals.json").write_text(json.dumps(pairs))
        return {"kind": kind}

    return write


def read_signals(folder: Path) -> list[tuple[int, str]]:
    return [(ref, signal) for ref, signal in json.loads((folder / "signals.json").read_text())]


def read_index(folder: Path, part: dict[str, Any], layout: str) -> MatchIndex:
    """Load an index written by a ``snapshot()`` writer, described by what it returned."""
    from modstream.matching.hamming import HammingIndex
    from modstream.matching.shingles import ShingleIndex
    from modstream.matching.video import VideoIndex

    readers: dict[str, Callable[[Path], MatchIndex]] = {
        "hamming": lambda f: HammingIndex.load(f, part, layout=layout),
        "exact": ExactIndex.load,
        "shingle": ShingleIndex.load,
        "vpdq": lambda f: VideoIndex.load(f, part, layout=layout),
    }
    return readers[part["kind"]](folder)


class PairsIndex:
    """Base of the indexes searched one query at a time and saved as their ``(ref, signal)``
    pairs, rebuilt by adding them again (exact, shingle): subclasses keep ``_signals`` and
    implement ``_add``, ``_remove`` and ``_query``. Lookups run on a thread while bank
    changes are applied on the event loop, so both hold the index's lock."""

    kind: str
    _signals: dict[int, str]

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, ref: int, signal: str) -> None:
        with self._lock:
            self._remove(ref)
            self._add(ref, signal)

    def remove(self, ref: int) -> None:
        with self._lock:
            self._remove(ref)

    def query(self, signal: str, max_distance: int) -> list[tuple[int, int]]:
        with self._lock:
            return self._query(signal, max_distance)

    def query_many(self, signals: Sequence[str], max_distance: int) -> list[list[tuple[int, int]]]:
        with self._lock:
            return [self._query(signal, max_distance) for signal in signals]

    def _add(self, ref: int, signal: str) -> None:
        raise NotImplementedError

    def _remove(self, ref: int) -> None:
        raise NotImplementedError

    def _query(self, signal: str, max_distance: int) -> list[tuple[int, int]]:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._signals)

    def snapshot(self) -> Callable[[Path], dict[str, Any]]:
        with self._lock:
            return signals_snapshot(self.kind, list(self._signals.items()))

    @classmethod
    def load(cls, folder: Path) -> Self:
        index = cls()
        for ref, signal in read_signals(folder):
            index.add(ref, signal)
        return index


class ExactIndex(PairsIndex):
    """Equality lookups: cryptographic hashes and normalized text."""

    kind = "exact"

    def __init__(self) -> None:
        super().__init__()
        self._refs_by_signal: dict[str, set[int]] = {}
        self._signals: dict[int, str] = {}

    def _add(self, ref: int, signal: str) -> None:
        self._refs_by_signal.setdefault(signal, set()).add(ref)
        self._signals[ref] = signal

    def _remove(self, ref: int) -> None:
        signal = self._signals.pop(ref, None)
        if signal is None:
            return
        refs = self._refs_by_signal[signal]
        refs.discard(ref)
        if not refs:
            del self._refs_by_signal[signal]

    def _query(self, signal: str, max_distance: int) -> list[tuple[int, int]]:
        return [(ref, 0) for ref in sorted(self._refs_by_signal.get(signal, ()))]
