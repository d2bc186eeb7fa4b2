"""Meta's vPDQ text format: a video's hash as one ``frame_number,quality,pdq_hex,timestamp``
line per kept frame, so hashes from other vPDQ tools import and ours export; and the JSON
form python-threatexchange and HMA pass around (a list of ``"pdq_hex,quality,timestamp"``),
read as the same frames."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson

from modstream.formats.hexcodes import normalize_hex


@dataclass(frozen=True)
class FrameHash:
    """One line of a vPDQ file."""

    frame_number: int
    quality: int
    pdq_hex: str
    timestamp: float


def format_vpdq(frames: Iterable[FrameHash]) -> str:
    """Meta's vPDQ text: ``frame_number,quality,pdq_hex,timestamp_seconds`` a line."""
    return "".join(f"{f.frame_number},{f.quality},{f.pdq_hex},{f.timestamp:.3f}\n" for f in frames)


def format_vpdq_json(frames: Iterable[FrameHash]) -> str:
    """python-threatexchange's (and HMA's) vPDQ signal: a JSON list of
    ``"pdq_hex,quality,timestamp"`` (frame numbers are not kept)."""
    return orjson.dumps([f"{f.pdq_hex},{f.quality},{f.timestamp:.3f}" for f in frames]).decode()


def parse_vpdq(text: str) -> tuple[FrameHash, ...]:
    """Frames of a vPDQ text, or of the JSON form (``format_vpdq_json``, frames numbered in
    order); raises ValueError naming the first bad line or item."""
    if text.lstrip().startswith("["):
        return _parse_json_form(text)
    frames = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        try:
            if len(parts) != 4:
                raise ValueError("expected 4 comma-separated fields")
            frame_number, quality, pdq_hex, timestamp = parts
            frames.append(
                FrameHash(
                    int(frame_number),
                    int(quality),
                    normalize_hex(pdq_hex, 256, "pdq"),
                    float(timestamp),
                )
            )
        except ValueError as exc:
            raise ValueError(f"vpdq line {number}: {exc}") from None
    if not frames:
        raise ValueError("vpdq: no frames")
    return tuple(frames)


def _parse_json_form(text: str) -> tuple[FrameHash, ...]:
    try:
        items = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"vpdq: not a JSON list ({exc})") from None
    if not isinstance(items, list) or not items:
        raise ValueError("vpdq: expected a non-empty JSON list of frames")
    frames = []
    for number, item in enumerate(items):
        parts = item.split(",") if isinstance(item, str) else []
        try:
            if len(parts) != 3:
                raise ValueError('expected "pdq_hex,quality,timestamp"')
            pdq_hex, quality, timestamp = (p.strip() for p in parts)
            frames.append(
                FrameHash(
                    number, int(quality), normalize_hex(pdq_hex, 256, "pdq"), float(timestamp)
                )
            )
        except ValueError as exc:
            raise ValueError(f"vpdq item {number}: {exc}") from None
    return tuple(frames)


def unique_frames(frames: Sequence[FrameHash]) -> dict[str, list[float]]:
    """Each distinct frame hash with the times it occurs: what a bank video is matched by."""
    found: dict[str, list[float]] = {}
    for frame in frames:
        found.setdefault(frame.pdq_hex, []).append(frame.timestamp)
    return found
