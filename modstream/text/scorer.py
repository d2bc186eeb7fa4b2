"""The one interface the engine scores text through: ``score(text) -> TextScore``.

The default implementation is ``modstream.text.classifier.LinearTextClassifier``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class TextScore:
    score: float
    #: The phrases that moved the score, strongest first: ``{"term": ..., "weight": ...}``.
    parts: tuple[dict[str, float | str], ...]


class TextScorer(Protocol):
    def score(self, text: str, normalized: str | None = None) -> TextScore:
        """``normalized``: the text after ``normalize_text``, when the caller has it."""
        ...
