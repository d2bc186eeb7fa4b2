"""Known texts found again: exact copies, near copies, and copies pasted into longer posts.

A text is cut into overlapping word 4-grams (shingles). A bank text matches a post by
*containment*: the share of the bank text's shingles that occur in the post. Changing one
word of a 50-word statement removes at most 4 of its 47 shingles (containment 0.91); pasting
it inside a longer post keeps every one (1.0). The distance reported is
``round(100 * (1 - containment))``, so 0 is a full copy and thresholds read as percentages.
"""

from __future__ import annotations

import itertools
from collections import Counter

from modstream.matching.index import PairsIndex

SHINGLE_WORDS = 4
#: Shingles in more bank texts than this are too common to tell texts apart; skipped.
MAX_POSTINGS = 10_000


def shingles(normalized: str) -> frozenset[int]:
    """Hashes of the text's word 4-grams (of the whole text, if shorter). Only compared within
    one process: snapshots keep the texts, not these hashes."""
    words = normalized.split()
    if len(words) <= SHINGLE_WORDS:
        return frozenset({hash(tuple(words))})
    return frozenset(map(hash, zip(*(words[i:] for i in range(SHINGLE_WORDS)), strict=False)))


def containment_distance(post: str, bank_text: str) -> int:
    """The distance the index reports between a normalized post and a normalized bank text."""
    wanted = shingles(bank_text)
    return round(100 * (1 - len(wanted & shingles(post)) / len(wanted)))


class ShingleIndex(PairsIndex):
    """Bank texts by shingle; a query counts, per bank text, the shingles the post shares."""

    kind = "shingle"

    def __init__(self) -> None:
        super().__init__()
        self._signals: dict[int, str] = {}
        self._shingles: dict[int, frozenset[int]] = {}
        self._postings: dict[int, set[int]] = {}

    def _add(self, ref: int, signal: str) -> None:
        own = shingles(signal)
        self._signals[ref] = signal
        self._shingles[ref] = own
        for shingle in own:
            self._postings.setdefault(shingle, set()).add(ref)

    def _remove(self, ref: int) -> None:
        own = self._shingles.pop(ref, None)
        if own is None:
            return
        del self._signals[ref]
        for shingle in own:
            refs = self._postings[shingle]
            refs.discard(ref)
            if not refs:
                del self._postings[shingle]

    def _query(self, signal: str, max_distance: int) -> list[tuple[int, int]]:
        postings = self._postings
        shared = Counter(
            itertools.chain.from_iterable(
                refs
                for refs in map(postings.get, shingles(signal))
                if refs is not None and len(refs) <= MAX_POSTINGS
            )
        )
        hits = []
        for ref, count in shared.items():
            distance = round(100 * (1 - count / len(self._shingles[ref])))
            if distance <= max_distance:
                hits.append((distance, ref))
        return [(ref, distance) for distance, ref in sorted(hits)]
