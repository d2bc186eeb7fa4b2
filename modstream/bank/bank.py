"""The replicated bank: every entry from the ``hashbank`` topic, indexed per signal type.

``apply`` takes one change (an entry, or None for a tombstone) and updates the right index in
place: no rebuild, so a change is live for the next lookup. ``snapshot``/``restore`` save and
load the whole bank (entries and indexes), so a restarting worker does not replay millions of
records.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modstream.bank.controls import BankControls
from modstream.bank.entries import EntryStore, read_frozen
from modstream.contracts import BankEntry, parse_bank_key
from modstream.formats.vpdq import FrameHash
from modstream.matching.index import MANIFEST, MatchIndex, read_index
from modstream.matching.video import FRAME_DISTANCE
from modstream.signals import get as get_signal_type
from modstream.signals.base import Assessment, Thresholds

#: The version of a bank snapshot as a whole: its one manifest and every part it describes.
SNAPSHOT_VERSION = 4  # 4: text normal form folds Arabic (formats/text.py): replay, not restore


@dataclass(frozen=True)
class Match:
    entry: BankEntry
    distance: int
    thresholds: Thresholds
    #: What the signal type adds for the reviewer (``Engine`` fills it in).
    assessment: Assessment = field(default_factory=Assessment)


class Bank:
    """All bank entries of all banks, with one index per signal type."""

    def __init__(
        self,
        thresholds: dict[str, dict[str, float]] | None = None,
        index_layout: str = "fast",
        controls: BankControls | None = None,
    ) -> None:
        self._overrides = thresholds or {}
        #: Per-bank thresholds set live on ``bank.config`` come before ``thresholds``.
        self.controls = controls or BankControls()
        self._index_layout = index_layout
        self._indexes: dict[str, MatchIndex] = {}
        self._entries = EntryStore()
        self._next_ref = 0
        self._sizes: Counter[tuple[str, str]] = Counter()
        # Lookups run on a thread while the event loop applies bank changes: one lock keeps
        # the entries, the sizes and every index (a video's frames too) consistent together.
        self._lock = threading.RLock()

    @property
    def index_layout(self) -> str:
        return self._index_layout

    def apply(self, key: str, entry: BankEntry | None) -> None:
        """Add, replace (same key) or, with ``entry=None``, remove one entry."""
        with self._lock:
            self._apply(key, entry)

    def keys(self, bank: str) -> list[str]:
        """The keys of every entry of ``bank`` (decodes the whole store: for rare admin
        actions such as deleting a bank)."""
        with self._lock:
            return [entry.key for entry in self._entries if entry.bank == bank]

    def entry(self, key: str) -> BankEntry | None:
        """The entry under a bank key, if the bank has it."""
        with self._lock:
            ref = self._entries.ref_for(key)
            return None if ref is None else self._entries.get(ref)

    def _apply(self, key: str, entry: BankEntry | None) -> None:
        bank, signal_type, _ = parse_bank_key(key)
        old_ref = self._entries.ref_for(key)
        if old_ref is not None:
            old = self._entries.remove(old_ref)
            assert old is not None
            self._indexes[old.signal_type].remove(old_ref)
            self._sizes[(old.bank, old.signal_type)] -= 1
        if entry is None:
            return
        if (entry.bank, entry.signal_type) != (bank, signal_type):
            raise ValueError(f"bank key {key!r} does not match the entry's bank and signal type")
        kind = get_signal_type(entry.signal_type)
        signal = kind.normalize(entry.signal)
        ref = self._allocate_refs(1)
        self._index_for(entry.signal_type).add(ref, signal)
        self._entries.add(ref, entry)
        self._sizes[(entry.bank, entry.signal_type)] += 1

    def _index_for(self, signal_type: str) -> MatchIndex:
        index = self._indexes.get(signal_type)
        if index is None:
            kind = get_signal_type(signal_type)
            index = self._indexes[signal_type] = kind.new_index(self._index_layout)
            if kind.shares_index_of:
                index.attach(self._index_for(kind.shares_index_of), self._allocate_refs)  # type: ignore[attr-defined]
        return index

    def _allocate_refs(self, count: int) -> int:
        """The first of ``count`` new refs: entries, and the frames of videos, which share
        the PDQ index with images and so need refs apart from the images' entries."""
        first = self._next_ref
        self._next_ref += count
        return first

    def thresholds(self, bank: str, signal_type: str) -> Thresholds:
        """The bank's thresholds on ``bank.config``, then the settings' per-bank override
        (``bank/type``), then any-bank (``*/type``), then the type default."""
        default = get_signal_type(signal_type).thresholds
        override = (
            self.controls.bank(bank).thresholds.get(signal_type)
            or self._overrides.get(f"{bank}/{signal_type}")
            or self._overrides.get(f"*/{signal_type}", {})
        )
        takedown = int(override.get("takedown", default.takedown))
        review = max(takedown, int(override.get("review", default.review)))
        share = float(override.get("min_query_share", default.min_query_share))
        return Thresholds(takedown=takedown, review=review, min_query_share=share)

    def widest_review(self, signal_type: str) -> int:
        """The largest review distance of any bank for this type: the query radius."""
        banks = {bank for bank, kind in self._sizes if kind == signal_type} or {"*"}
        return max(self.thresholds(bank, signal_type).review for bank in banks)

    def match(self, signal_type: str, signal: str) -> list[Match]:
        """Entries within their own bank's review distance of ``signal``."""
        return self.match_many(signal_type, [signal])[0]

    def widest_takedown(self, signal_type: str) -> int:
        banks = {bank for bank, kind in self._sizes if kind == signal_type} or {"*"}
        return max(self.thresholds(bank, signal_type).takedown for bank in banks)

    def match_many(
        self, signal_type: str, signals: Sequence[str], within: str = "review"
    ) -> list[list[Match]]:
        """``match`` for a batch in one index search: what the pipeline's batches use.
        ``within="takedown"`` finds only matches within their bank's takedown distance, at a
        smaller search radius (far cheaper): for extra queries of the same media."""
        with self._lock:
            index = self._indexes.get(signal_type)
            if index is None or not len(index) or not signals:
                return [[] for _ in signals]
            if within == "takedown":
                radius = self.widest_takedown(signal_type)
            else:
                radius = self.widest_review(signal_type)
            found = index.query_many(signals, radius)
            return [self._matches(signal_type, hits, within) for hits in found]

    def _matches(
        self, signal_type: str, hits: list[tuple[int, int]], within: str = "review"
    ) -> list[Match]:
        matches = []
        for ref, distance in hits:
            entry = self._entries.get(ref)
            if entry is None:  # a video's frame ref, not an entry
                continue
            thresholds = self.thresholds(entry.bank, signal_type)
            limit = thresholds.takedown if within == "takedown" else thresholds.review
            if distance <= limit:
                matches.append(Match(entry, distance, thresholds))
        return matches

    # -- across media: images and videos share the PDQ index -------------------------------

    def stills_of_videos(self, images: Sequence[str]) -> list[list[Match]]:
        """Per image PDQ, the bank videos with a frame within PDQ's frame distance: a still
        of a banked video. Each match is the nearest frame's distance (the thresholds are
        PDQ's); the caller decides what such a match does."""
        with self._lock:
            host, videos = self._indexes.get("pdq"), self._indexes.get("vpdq")
            if host is None or videos is None or not len(videos) or not images:
                return [[] for _ in images]
            found = host.query_many(images, FRAME_DISTANCE)
            out = []
            for hits in found:
                nearest: dict[int, int] = {}
                for ref, distance in hits:
                    video = videos.video_of_frame(ref)  # type: ignore[attr-defined]
                    if video is not None and distance < nearest.get(video, FRAME_DISTANCE + 1):
                        nearest[video] = distance
                out.append([m for _, m in self._cross_matches(nearest, "vpdq")])
            return out

    def images_in_videos(
        self, videos: Sequence[Sequence[FrameHash]]
    ) -> list[list[tuple[Match, float]]]:
        """Per query video (its frames), the banked images that some frame is within PDQ's
        frame distance of, each with when the nearest such frame is (seconds)."""
        with self._lock:
            host = self._indexes.get("pdq")
            if host is None or not len(host):
                return [[] for _ in videos]
            out = []
            for frames in videos:
                first_at: dict[str, float] = {}
                for frame in frames:
                    first_at.setdefault(frame.pdq_hex, frame.timestamp)
                distinct = list(first_at)
                nearest: dict[int, int] = {}
                when: dict[int, float] = {}
                for pdq, hits in zip(
                    distinct, host.query_many(distinct, FRAME_DISTANCE), strict=True
                ):
                    for ref, distance in hits:
                        entry = self._entries.get(ref)
                        if entry is None or entry.signal_type != "pdq":
                            continue  # a frame of a bank video: the video match's business
                        if distance < nearest.get(ref, FRAME_DISTANCE + 1):
                            nearest[ref], when[ref] = distance, first_at[pdq]
                out.append([(m, when[ref]) for ref, m in self._cross_matches(nearest, "pdq")])
            return out

    def _cross_matches(self, nearest: dict[int, int], signal_type: str) -> list[tuple[int, Match]]:
        """``(ref, match)`` of each entry ref, nearest first, with its bank's thresholds."""
        matches = []
        for ref, distance in sorted(nearest.items(), key=lambda item: item[1]):
            entry = self._entries.get(ref)
            if entry is not None:
                thresholds = self.thresholds(entry.bank, signal_type)
                matches.append((ref, Match(entry, distance, thresholds)))
        return matches

    def snapshot(self) -> Callable[..., None]:
        """Capture the bank as it is now (cheap: call it between changes, on the event loop);
        the returned function ``write(folder, **extra)`` writes that state to a new folder
        (slow: run it on a thread): every part, then the one versioned manifest that
        describes them all (and ``extra``, such as the offsets the bank reflects), last, so
        that a folder with a manifest is complete."""
        with self._lock:
            entries = self._entries.view()
            indexes = {name: index.snapshot() for name, index in self._indexes.items()}
            bank = {
                "next_ref": self._next_ref,
                "sizes": [[bank, kind, n] for (bank, kind), n in self._sizes.items() if n > 0],
            }

        def write(folder: Path, **extra: Any) -> None:
            folder.mkdir(parents=True)
            EntryStore.write(entries, folder / "entries")
            parts = {
                name: write_index(folder / f"index-{name}") for name, write_index in indexes.items()
            }
            manifest = {"version": SNAPSHOT_VERSION, "bank": bank, "indexes": parts, **extra}
            (folder / MANIFEST).write_text(json.dumps(manifest))

        return write

    def adopt(self, folder: Path) -> None:
        """Take the entries of a snapshot this bank just wrote as its frozen tier (changes
        made since stay): replayed entries then cost what restored ones do. Reads the folder
        first, then swaps under the lock in milliseconds."""
        written = read_frozen(folder / "entries")
        with self._lock:
            self._entries.adopt(written)

    def restore(self, folder: Path) -> None:
        """Replace this bank's contents with a snapshot's (before it is in use)."""
        manifest = snapshot_manifest(folder)
        entries = EntryStore.read(folder / "entries")
        indexes = {
            name: read_index(folder / f"index-{name}", part, self._index_layout)
            for name, part in manifest["indexes"].items()
        }
        for name, index in indexes.items():
            host = get_signal_type(name).shares_index_of
            if host:  # its entries are in the host's snapshot already
                index.attach(indexes[host], self._allocate_refs)  # type: ignore[attr-defined]
        # Only once everything has loaded: a broken snapshot leaves the bank as it was.
        self._entries, self._indexes = entries, indexes
        self._next_ref = manifest["bank"]["next_ref"]
        self._sizes = Counter({(bank, kind): n for bank, kind, n in manifest["bank"]["sizes"]})

    def sizes(self) -> dict[tuple[str, str], int]:
        """Live entries per (bank, signal_type)."""
        return {k: v for k, v in self._sizes.items() if v > 0}

    def unfrozen(self) -> int:
        """Entries added since the last snapshot this bank wrote or restored, held as Python
        objects (roughly 4x the memory of a frozen entry)."""
        return self._entries.live_count

    def index_entries(self, signal_type: str) -> int:
        """Entries the index of ``signal_type`` holds (the PDQ index also holds the unique
        frames of banked videos)."""
        index = self._indexes.get(signal_type)
        return len(index) if index is not None else 0

    def __len__(self) -> int:
        return len(self._entries)


def snapshot_manifest(folder: Path) -> dict[str, Any]:
    """The one manifest of a bank snapshot; raises ValueError if it is of another version."""
    manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    if manifest.get("version") != SNAPSHOT_VERSION:
        found = manifest.get("version")
        raise ValueError(f"bank snapshot version {found}, not {SNAPSHOT_VERSION}")
    return manifest
