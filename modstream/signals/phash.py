"""pHash (imagehash's DCT hash): 64 bits, a second opinion next to PDQ."""

from __future__ import annotations

from modstream.contracts import ComputedSignal
from modstream.hashing.content import Content
from modstream.hashing.phash import phash_dihedral_of, phash_of
from modstream.signals.base import HammingSignal, Thresholds


class PHashSignal(HammingSignal):
    name = "phash"
    source = "image"
    bits = 64
    thresholds = Thresholds(takedown=6, review=10)
    # 64 bits looked up eight more times per image meet more strangers within 6 bits: one
    # false takedown in 5,000 generated images (bench/robustness.py). PDQ's variants act.
    variants_act = False

    def compute(self, content: Content) -> ComputedSignal:
        """The hash, and as variants its seven other orientations (from one DCT) and the
        picture inside any borders."""
        hashes = phash_dihedral_of(content.small_grey)
        value = hashes.pop("original")
        if content.content_box is not None:
            hashes["trimmed"] = phash_of(content.image.crop(content.content_box))
        return {"value": value, "variants": hashes}
