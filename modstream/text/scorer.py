"""The one interface the engine scores text through: ``score(text) -> TextScore``.

The default implementation is ``modstream.text.classifier.LinearTextClassifier``.
"""

from __future__ import annotations

from typing import Protocol

from modstream.contracts import TextScore


class TextScorer(Protocol):
    def score(self, text: str, normalized: str | None = None) -> TextScore:
        """``normalized``: the text after ``normalize_text``, when the caller has it."""
        ...
