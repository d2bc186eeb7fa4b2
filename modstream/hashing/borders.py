"""Finding the picture inside letterbox bars, padding and blurred frames.

Reposts put banked photos inside black or white bars (a 4:3 photo in a 16:9 frame), solid
padding, or a blurred, enlarged copy of themselves; PDQ and pHash then describe the bars as
much as the picture. The content box is what is left after peeling, from each side, rows
(columns) with almost no detail: little spread of grey levels, or no edges at all (a blur).
The pipeline hashes the box as an extra query, so an ordinary photo with a plain sky costs
one more lookup, never a missed match.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: Thresholds on a 0..255 grey scale, found on letterboxed, padded and blur-framed copies of
#: the sample photos (bench/robustness.py): flat bars have a spread under 6, blurred ones
#: neighbouring pixels that differ by under 1.5 on average; photo rows have far more of both.
FLAT_SPREAD = 6.0
BLUR_EDGES = 1.5
#: Work on a copy reduced by a whole factor to no less than this (or pHash's grey copy):
#: the bounds are then scaled back to the full picture.
PROBE_SIDE = 256
#: A box must trim at least this share of a side to count, and keep at least this share.
MIN_TRIM, MIN_KEEP = 0.02, 0.3


def content_box(
    image: Image.Image, probe: Image.Image | None = None
) -> tuple[int, int, int, int] | None:
    """``(left, top, right, bottom)`` of the picture inside bars or padding, in ``image``'s
    pixels; None when there is nothing to trim (or too much: then it is not a frame).
    ``probe``: a smaller grey copy already at hand (pHash's), else one is made."""
    width, height = image.size
    if probe is None:
        factor = max(width, height) // PROBE_SIDE
        probe = image.reduce(factor) if factor > 1 else image  # box-averaging: cheap
    grey = np.asarray(probe.convert("L"), dtype=np.float32)
    rows, cols = _plain(grey), _plain(grey.T)
    top, bottom = _run(rows), _run(rows[::-1])
    left, right = _run(cols), _run(cols[::-1])
    h, w = grey.shape
    if top + bottom >= h * (1 - MIN_KEEP) or left + right >= w * (1 - MIN_KEEP):
        return None
    if max(top, bottom) < h * MIN_TRIM and max(left, right) < w * MIN_TRIM:
        return None
    fx, fy = width / w, height / h
    return (
        round(left * fx),
        round(top * fy),
        round(width - right * fx),
        round(height - bottom * fy),
    )


def _plain(grey: np.ndarray) -> np.ndarray:
    """Per row: whether it is a bar (flat, or without edges)."""
    spread = grey.std(axis=1)
    edges = np.abs(np.diff(grey, axis=1)).mean(axis=1) if grey.shape[1] > 1 else spread * 0
    return (spread < FLAT_SPREAD) | (edges < BLUR_EDGES)


def _run(plain: np.ndarray) -> int:
    """How many leading entries are True."""
    stops = np.flatnonzero(~plain)
    return int(stops[0]) if len(stops) else len(plain)
