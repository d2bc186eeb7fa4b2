"""Bank entries by ref and by key, in a shape that millions of entries can be loaded in.

Two tiers:

* **frozen**: what a snapshot holds. Entries stay serialized in one byte blob, with sorted
  arrays of refs and 64-bit key hashes to find them; an entry is decoded only when a match
  needs it. Loading is a few array reads, not millions of Python objects.
* **live**: entries added since the snapshot, as plain dicts.

Refs are never reused (the bank counts them up), so a ref names one entry for good.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modstream.contracts import BankEntry, dumps


def key_hash(key: str) -> int:
    """A stable signed 64-bit hash of a bank key (Python's ``hash`` changes per process)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


@dataclass
class Frozen:
    refs: np.ndarray  # int64, sorted
    alive: np.ndarray  # uint8 per entry
    offsets: np.ndarray  # int64, n + 1: entry i is blob[offsets[i]:offsets[i + 1]]
    blob: bytes
    hashes: np.ndarray  # int64 key hashes, sorted
    hash_positions: np.ndarray  # int64: entry position of each sorted hash

    @classmethod
    def empty(cls) -> Frozen:
        none = np.zeros(0, dtype=np.int64)
        return cls(none, np.zeros(0, dtype=np.uint8), np.zeros(1, dtype=np.int64), b"", none, none)


class EntryStore:
    def __init__(self, frozen: Frozen | None = None) -> None:
        self._frozen = frozen or Frozen.empty()
        self._live: dict[int, BankEntry] = {}
        self._live_refs: dict[str, int] = {}
        self._decoded = functools.lru_cache(maxsize=65536)(self._decode)
        self._frozen_alive = int(self._frozen.alive.sum())

    def __len__(self) -> int:
        return self._frozen_alive + len(self._live)

    @property
    def live_count(self) -> int:
        """Entries held as Python objects (the live tier): what a snapshot's adoption frees."""
        return len(self._live)

    def add(self, ref: int, entry: BankEntry) -> None:
        self._live[ref] = entry
        self._live_refs[entry.key] = ref

    def get(self, ref: int) -> BankEntry | None:
        entry = self._live.get(ref)
        if entry is not None:
            return entry
        pos = self._frozen_position(ref)
        return None if pos < 0 else self._decoded(pos)

    def ref_for(self, key: str) -> int | None:
        ref = self._live_refs.get(key)
        if ref is not None:
            return ref
        frozen = self._frozen
        target = key_hash(key)
        i = int(np.searchsorted(frozen.hashes, target))
        while i < len(frozen.hashes) and frozen.hashes[i] == target:
            pos = int(frozen.hash_positions[i])
            if frozen.alive[pos] and self._decoded(pos).key == key:
                return int(frozen.refs[pos])
            i += 1
        return None

    def remove(self, ref: int) -> BankEntry | None:
        entry = self._live.pop(ref, None)
        if entry is not None:
            del self._live_refs[entry.key]
            return entry
        pos = self._frozen_position(ref)
        if pos < 0:
            return None
        self._frozen.alive[pos] = 0
        self._frozen_alive -= 1
        return self._decoded(pos)

    def _frozen_position(self, ref: int) -> int:
        refs = self._frozen.refs
        pos = int(np.searchsorted(refs, ref))
        if pos < len(refs) and refs[pos] == ref and self._frozen.alive[pos]:
            return pos
        return -1

    def __iter__(self) -> Iterator[BankEntry]:
        """Every live entry (the frozen ones decoded one at a time)."""
        yield from list(self._live.values())
        for pos in np.flatnonzero(self._frozen.alive):
            yield self._decode(int(pos))

    def _decode(self, pos: int) -> BankEntry:
        start, end = self._frozen.offsets[pos], self._frozen.offsets[pos + 1]
        return BankEntry.parse(self._frozen.blob[start:end])

    # -- snapshots ---------------------------------------------------------------------------

    def view(self) -> tuple[Frozen, np.ndarray, dict[int, BankEntry]]:
        """The state now, cheap to take on the event loop: the frozen tier is immutable but
        for its alive flags (copied), the live tier is copied."""
        return self._frozen, self._frozen.alive.copy(), dict(self._live)

    @staticmethod
    def write(view: tuple[Frozen, np.ndarray, dict[int, BankEntry]], folder: Path) -> None:
        """Write a view as one frozen tier. Large banks take seconds: run it on a thread.

        Live entries are serialized straight into the file, one at a time: orjson returns
        each result in a 4 KiB buffer shrunk in place, and holding 200,000 of them at once
        left 800 MB of heap holes behind (a replayed bank doubled its worker's memory)."""
        frozen, alive, live = view
        keep = np.flatnonzero(alive)
        live_refs = sorted(live)
        refs = np.concatenate([frozen.refs[keep], np.array(live_refs, dtype=np.int64)])
        if np.any(np.diff(refs) <= 0):  # live refs are counted on from the snapshot's largest
            raise ValueError("bank refs out of order")
        position_hashes = np.empty(len(frozen.refs), dtype=np.int64)
        position_hashes[frozen.hash_positions] = frozen.hashes
        live_hashes = (key_hash(live[ref].key) for ref in live_refs)
        hashes = np.concatenate(
            [position_hashes[keep], np.fromiter(live_hashes, dtype=np.int64, count=len(live_refs))]
        )
        live_lengths = np.empty(len(live_refs), dtype=np.int64)
        folder.mkdir(parents=True)
        with open(folder / "blob.bin", "wb") as out:
            blob = memoryview(frozen.blob)
            if len(keep):  # copy runs of kept entries, one slice per run
                breaks = np.flatnonzero(np.diff(keep) != 1) + 1
                firsts = keep[np.concatenate([[0], breaks])]
                lasts = keep[np.concatenate([breaks - 1, [len(keep) - 1]])]
                for first, last in zip(firsts.tolist(), lasts.tolist(), strict=True):
                    out.write(blob[frozen.offsets[first] : frozen.offsets[last + 1]])
            for i, ref in enumerate(live_refs):
                live_lengths[i] = out.write(dumps(live[ref]))
        lengths = np.concatenate([frozen.offsets[keep + 1] - frozen.offsets[keep], live_lengths])
        hash_order = np.argsort(hashes, kind="stable")
        np.save(folder / "refs.npy", refs)
        np.save(folder / "offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
        np.save(folder / "hashes.npy", hashes[hash_order])
        np.save(folder / "hash_positions.npy", hash_order.astype(np.int64))

    def adopt(self, written: Frozen) -> None:
        """Take a frozen tier this store wrote (``write`` of an earlier ``view``) as its own:
        the live entries it holds leave the live tier, so a bank replayed from the topic ends
        up as compact as one restored from a snapshot. Changes since the view stay: entries
        removed since are marked dead, entries added since stay live."""
        old = self._frozen
        live_refs = np.fromiter(self._live, dtype=np.int64, count=len(self._live))
        present = np.concatenate([old.refs[old.alive != 0], live_refs])
        written.alive = np.isin(written.refs, present).astype(np.uint8)
        frozen_now = set(written.refs[written.alive != 0].tolist())
        self._live = {ref: e for ref, e in self._live.items() if ref not in frozen_now}
        self._live_refs = {entry.key: ref for ref, entry in self._live.items()}
        self._frozen = written
        self._frozen_alive = int(written.alive.sum())
        self._decoded.cache_clear()  # positions changed

    @classmethod
    def read(cls, folder: Path) -> EntryStore:
        return cls(read_frozen(folder))


def read_frozen(folder: Path) -> Frozen:
    """The frozen tier ``EntryStore.write`` wrote to ``folder``, every entry alive."""
    refs = np.load(folder / "refs.npy")
    return Frozen(
        refs=refs,
        alive=np.ones(len(refs), dtype=np.uint8),
        offsets=np.load(folder / "offsets.npy"),
        blob=(folder / "blob.bin").read_bytes(),
        hashes=np.load(folder / "hashes.npy"),
        hash_positions=np.load(folder / "hash_positions.npy"),
    )
