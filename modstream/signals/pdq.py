"""PDQ: Meta's 256-bit perceptual photo hash, the industry's shared image signal.

Matches at Hamming distance <= 31 as in python-threatexchange and HMA, in each of the eight
orientations and inside letterbox bars or padding (``variants``); hashes with quality
below the configured minimum (50) are computed and reported but never matched, because flat
or tiny images give near-random bits that collide with unrelated banked content. Computed by
``modstream.hashing.pdq``.
"""

from __future__ import annotations

import numpy as np

from modstream.contracts import ComputedSignal
from modstream.hashing.content import Content
from modstream.hashing.pdq import pdq_dihedral_of_rgb
from modstream.signals.base import HammingSignal, Thresholds


class PDQSignal(HammingSignal):
    name = "pdq"
    exchange_names = ("pdq",)
    source = "image"
    bits = 256
    thresholds = Thresholds(takedown=31, review=45)

    def compute(self, content: Content) -> ComputedSignal:
        """The hash, and as variants its seven other orientations (one pass of Meta's
        dihedral code: no dearer than one hash) and the picture inside any borders."""
        hashes, quality = pdq_dihedral_of_rgb(np.asarray(content.image), content.content_box)
        value = hashes.pop("original")
        return {"value": value, "quality": quality, "variants": hashes}

    def usable(self, computed: ComputedSignal, min_quality: int) -> bool:
        return int(computed.get("quality", 0)) >= min_quality
