"""PDQ: Meta's 256-bit perceptual photo hash, the industry's shared image signal.

Matches at Hamming distance <= 31 as in python-threatexchange and HMA; hashes with quality
below the configured minimum (50) are computed and reported but never matched, because flat
or tiny images give near-random bits that collide with unrelated banked content.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.hashing.signals.base import Content, HammingSignal, Thresholds, register


@register
class PDQSignal(HammingSignal):
    name = "pdq"
    source = "image"
    bits = 256
    thresholds = Thresholds(takedown=31, review=45)

    def compute(self, content: Content) -> dict[str, Any]:
        import pdqhash

        vector, quality = pdqhash.compute(np.asarray(content.image))
        return {"value": pdq_hex(vector), "quality": int(quality)}

    def usable(self, computed: dict[str, Any], min_quality: int) -> bool:
        return int(computed.get("quality", 0)) >= min_quality


def pdq_hex(vector: np.ndarray) -> str:
    """The 256 bits as 64 hex digits, first bit most significant (ThreatExchange's format)."""
    return np.packbits(vector.astype(np.uint8)).tobytes().hex()
