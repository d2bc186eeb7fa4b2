"""pHash (imagehash's DCT hash): 64 bits, a second opinion next to PDQ."""

from __future__ import annotations

from modstream.contracts import ComputedSignal
from modstream.hashing.content import Content
from modstream.hashing.phash import phash_of
from modstream.signals.base import HammingSignal, Thresholds


class PHashSignal(HammingSignal):
    name = "phash"
    source = "image"
    bits = 64
    thresholds = Thresholds(takedown=6, review=10)

    def compute(self, content: Content) -> ComputedSignal:
        return {"value": phash_of(content.image)}
