"""Known text: statements and posts that circulate as copies, matched after normalization,
near copies and copies inside longer posts included (``modstream.matching.shingles``)."""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING, Any

from modstream.hashing.signals.base import Assessment, SignalType, Thresholds, register

if TYPE_CHECKING:
    from modstream.matching.index import MatchIndex

_INVISIBLE = dict.fromkeys(
    map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad"), None
)
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
# Cyrillic and Greek letters that look like Latin ones, as spoofers mix them into Latin words.
_LOOKALIKES = str.maketrans("аеорсухіјѕԁԛԝкмнтвαεορτυνικμ", "aeopcyxijsdqwkmhtbaeoptuvikm")
_LATIN = re.compile(r"[a-z]")


def _unspoof(word: str) -> str:
    """Map lookalike letters to Latin in words that also contain Latin letters."""
    if word.isascii() or not _LATIN.search(word):
        return word
    return word.translate(_LOOKALIKES)


def normalize_text(text: str) -> str:
    """NFKC, case-fold, drop zero-width characters, punctuation and repeated whitespace, and
    undo lookalike letters mixed into Latin words."""
    folded = unicodedata.normalize("NFKC", text).translate(_INVISIBLE).casefold()
    words = _NON_WORD.sub(" ", folded).split()
    return " ".join(words if folded.isascii() else map(_unspoof, words))


@register
class TextSignal(SignalType):
    name = "text"
    source = "text"
    # Distances are 100 x (1 - containment): a full copy is 0; 80% of the text is 20.
    thresholds = Thresholds(takedown=20, review=40)

    def compute(self, content: str) -> dict[str, Any] | None:
        value = normalize_text(content)
        return {"value": value} if value else None

    def normalize(self, signal: str) -> str:
        value = normalize_text(signal)
        if not value:
            raise ValueError("text: nothing left after normalization")
        return value

    def distance(self, a: str, b: str) -> int:
        """How much of bank text ``b`` is missing from post ``a``, in percent."""
        from modstream.matching.shingles import containment_distance

        return containment_distance(a, b)

    def assess(self, query: str, bank_signal: str, distance: int) -> Assessment:
        return Assessment(f"{100 - distance}% of the known text is in the post")

    def new_index(self, layout: str = "fast") -> MatchIndex:
        from modstream.matching.shingles import ShingleIndex

        return ShingleIndex()
