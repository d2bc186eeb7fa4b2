"""Bank videos found again by their frames, as Meta's vPDQ matches them.

Every unique frame of a bank video is one entry of a PDQ Hamming index, pointing back to its
video. A query video's frames are looked up in one batch at the frame distance (31, PDQ's),
and for each bank video two shares are counted: of its unique frames, how many some query
frame matched; of the query's frames, how many matched some frame of it. The index ranks bank
videos by the first share; the second comes with the evidence (``compare``), where a bank's
``min_query_share`` is applied (0 by default: a short clip cut from a long video is still
the video).

Like known text, the distance reported is ``round(100 * (1 - bank share))``, so the per-bank
thresholds read as percentages: takedown at <= 20 is "80% of the bank video's frames found".
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modstream.formats.hexcodes import hex_to_codes
from modstream.formats.vpdq import FrameHash, parse_vpdq, unique_frames
from modstream.matching.hamming import HammingIndex

FRAME_DISTANCE = 31


@dataclass(frozen=True)
class VideoComparison:
    bank_share: float  # of the bank video's unique frames, matched by some query frame
    query_share: float  # of the query's frames, matching some frame of the bank video
    #: ``(query_from, query_to, bank_from, bank_to)`` seconds of each matching stretch.
    ranges: tuple[tuple[float, float, float, float], ...]

    @property
    def distance(self) -> int:
        return round(100 * (1 - self.bank_share))


def compare(
    query: Sequence[FrameHash],
    bank: Sequence[FrameHash],
    frame_distance: int = FRAME_DISTANCE,
    deadline: float | None = None,
) -> VideoComparison:
    """Both shares and the matching stretches of two videos: every query frame against every
    unique bank frame, in numpy, a block of query frames at a time (for evidence and tests;
    the index finds the candidates among many videos). Past ``deadline`` (``time.monotonic``)
    it raises TimeoutError between blocks: the cost is the product of the frame counts."""
    bank_frames = unique_frames(bank)
    if not query or not bank_frames:
        return VideoComparison(0.0, 0.0, ())
    bank_codes = hex_to_codes(list(bank_frames), 256)
    first_seen = np.array([min(times) for times in bank_frames.values()])
    matched_bank = np.zeros(len(bank_frames), dtype=bool)
    pairs: list[tuple[float, float]] = []
    for start in range(0, len(query), 256):
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError("video comparison over its time budget")
        block = query[start : start + 256]
        codes = hex_to_codes([f.pdq_hex for f in block], 256)
        distances = np.bitwise_count(codes[:, None, :] ^ bank_codes[None, :, :]).sum(axis=2)
        close = distances <= frame_distance
        matched_bank |= close.any(axis=0)
        for frame, row in zip(block, close, strict=True):
            if row.any():
                pairs.append((frame.timestamp, float(first_seen[row].min())))
    return VideoComparison(
        bank_share=float(matched_bank.mean()),
        query_share=len(pairs) / len(query),
        ranges=_stretches(pairs),
    )


def _stretches(pairs: list[tuple[float, float]], gap: float = 2.5) -> tuple:
    """Matched (query time, bank time) pairs joined into stretches where both advance."""
    out: list[list[float]] = []
    for query_at, bank_at in sorted(pairs):
        last = out[-1] if out else None
        if last and query_at - last[1] <= gap and 0 <= bank_at - last[3] <= gap:
            last[1], last[3] = query_at, bank_at
        else:
            out.append([query_at, query_at, bank_at, bank_at])
    return tuple(tuple(r) for r in out)


class VideoIndex:
    """Bank videos (vPDQ texts) by their unique frames, in one PDQ Hamming index: its own, or,
    once ``attach``-ed, the bank's image PDQ index, where frames sit beside images."""

    def __init__(self, layout: str = "fast") -> None:
        self._frames = HammingIndex(256, layout=layout)
        self._allocate: Callable[[int], int] = self._own_refs
        self._hosted = False
        self._texts: dict[int, str] = {}
        self._video_frames: dict[int, list[int]] = {}  # video ref -> its frame entries
        self._frame_video: dict[int, int] = {}
        self._next_frame = 0

    def attach(self, host: HammingIndex, allocate: Callable[[int], int]) -> None:
        """Keep the frames in ``host`` (the bank's PDQ index, beside the images), with refs
        from ``allocate(n)`` (the first of ``n`` new refs) so they never collide with the
        host's own entries. Call before adding videos, or right after ``load`` of a snapshot
        taken while attached (the host's own snapshot holds the frames then)."""
        if self._hosted or (self._frame_video and len(self._frames)):
            raise ValueError("attach a VideoIndex before adding videos")
        self._frames, self._allocate, self._hosted = host, allocate, True

    def _own_refs(self, count: int) -> int:
        first = self._next_frame
        self._next_frame += count
        return first

    def add(self, ref: int, signal: str) -> None:
        self.add_many([(ref, signal)])

    def add_many(self, videos: Sequence[tuple[int, str]]) -> None:
        """Add videos (``(ref, vPDQ text)``) with one bulk insert of all their frames."""
        videos = list(dict(videos).items())  # a ref given twice: the last one
        for ref, _ in videos:
            self.remove(ref)
        frame_ids: list[int] = []
        hexes: list[str] = []
        for ref, signal in videos:
            frames = list(unique_frames(parse_vpdq(signal)))
            first = self._allocate(len(frames))
            ids = self._remember(ref, signal, first, len(frames))
            frame_ids += ids
            hexes += frames
        if frame_ids:
            self._frames.add_many(frame_ids, hex_to_codes(hexes, 256))

    def _remember(self, ref: int, signal: str, first: int, count: int) -> list[int]:
        ids = list(range(first, first + count))
        self._frame_video.update(dict.fromkeys(ids, ref))
        self._video_frames[ref] = ids
        self._texts[ref] = signal
        return ids

    def remove(self, ref: int) -> None:
        ids = self._video_frames.pop(ref, None)
        if ids is None:
            return
        del self._texts[ref]
        self._frames.remove_many(ids)
        for frame_id in ids:
            del self._frame_video[frame_id]

    def query(self, signal: str, max_distance: int) -> list[tuple[int, int]]:
        return self.query_many([signal], max_distance)[0]

    def query_many(self, signals: Sequence[str], max_distance: int) -> list[list[tuple[int, int]]]:
        """``[(video ref, distance), ...]`` per query video, nearest first."""
        return [self._query(parse_vpdq(signal), max_distance) for signal in signals]

    def _query(self, frames: Sequence[FrameHash], max_distance: int) -> list[tuple[int, int]]:
        distinct = list(dict.fromkeys(f.pdq_hex for f in frames))
        frame_video = self._frame_video
        matched_frames: dict[int, set[int]] = {}
        for found in self._frames.query_many(distinct, FRAME_DISTANCE):
            for frame_id, _ in found:
                video = frame_video.get(frame_id)  # None: one of the host's images
                if video is not None:
                    matched_frames.setdefault(video, set()).add(frame_id)
        out = []
        for ref, matched in matched_frames.items():
            distance = round(100 * (1 - len(matched) / len(self._video_frames[ref])))
            if distance <= max_distance:
                out.append((distance, ref))
        return [(ref, distance) for distance, ref in sorted(out)]

    def video_of_frame(self, ref: int) -> int | None:
        """The video a frame ref of the shared index belongs to; None for anything else (an
        image of the host index)."""
        return self._frame_video.get(ref)

    def frame_times(self, video: int, frame_pdq: str) -> list[float]:
        """When a frame (its PDQ) appears in a bank video, in seconds."""
        return [f.timestamp for f in parse_vpdq(self._texts[video]) if f.pdq_hex == frame_pdq]

    def __len__(self) -> int:
        return len(self._texts)

    def snapshot(self) -> Callable[[Path], dict[str, Any]]:
        videos = [[ref, text, self._video_frames[ref][0]] for ref, text in self._texts.items()]
        hosted = self._hosted

        def write(folder: Path) -> dict[str, Any]:
            folder.mkdir(parents=True)
            (folder / "videos.json").write_text(json.dumps(videos))
            return {"kind": "vpdq", "hosted": hosted}

        return write

    @classmethod
    def load(cls, folder: Path, part: dict[str, Any], layout: str = "fast") -> VideoIndex:
        """A snapshot's videos. Frames of a hosted index are in the host's own snapshot: only
        which frame is whose is rebuilt here, and the bank attaches the host next."""
        index = cls(layout=layout)
        hosted = part["hosted"]
        videos = json.loads((folder / "videos.json").read_text())
        if not hosted:
            index.add_many([(ref, text) for ref, text, _ in videos])
            return index
        for ref, text, first in videos:
            index._remember(ref, text, first, len(unique_frames(parse_vpdq(text))))
        return index
