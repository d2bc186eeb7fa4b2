"""Known text: statements and posts that circulate as copies, matched after normalization,
near copies and copies inside longer posts included (``modstream.matching.shingles``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modstream.contracts import ComputedSignal
from modstream.formats.text import normalize_text
from modstream.signals.base import Assessment, SignalType, Thresholds

if TYPE_CHECKING:
    from modstream.matching.index import MatchIndex


class TextSignal(SignalType):
    name = "text"
    exchange_names = ("raw_text",)
    source = "text"
    # Distances are 100 x (1 - containment): a full copy is 0; 80% of the text is 20.
    thresholds = Thresholds(takedown=20, review=40)

    def compute(self, content: str) -> ComputedSignal | None:
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
