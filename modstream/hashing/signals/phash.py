"""pHash (imagehash's DCT hash): 64 bits, a second opinion next to PDQ."""

from __future__ import annotations

from typing import Any

from modstream.hashing.signals.base import Content, HammingSignal, Thresholds, register

#: pHash looks at a 32x32 thumbnail; box-reducing large greys to >= this side first gives the
#: same bits at a fraction of the cost of a Lanczos resize from full resolution.
_REDUCE_TO = 128


@register
class PHashSignal(HammingSignal):
    name = "phash"
    source = "image"
    bits = 64
    thresholds = Thresholds(takedown=6, review=10)

    def compute(self, content: Content) -> dict[str, Any]:
        import imagehash

        grey = content.image.convert("L")
        factor = min(grey.size) // _REDUCE_TO
        if factor >= 2:
            grey = grey.reduce(factor)
        return {"value": str(imagehash.phash(grey))}
